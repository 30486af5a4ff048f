"""Hand-computed metric cases, including ties and K cut-offs (methods.md §10.3-10.4)."""

import math

import pytest
import torch

from harness.evaluation.metrics import compare_to_positive, expected_rank, metrics_from_ranks


def _one(g: int, t: int, k: int, policy: str = "expected"):
    (m,) = metrics_from_ranks(torch.tensor([g]), torch.tensor([t]), [k], policy)
    return float(m.hr[0]), float(m.mrr[0]), float(m.ndcg[0])


def test_top_rank_scores_one():
    assert _one(0, 0, 10) == (1.0, 1.0, 1.0)


def test_rank_exactly_k_counts_and_k_plus_one_does_not():
    hr, mrr, ndcg = _one(9, 0, 10)
    assert hr == 1.0 and mrr == pytest.approx(0.1) and ndcg == pytest.approx(1 / math.log2(11))
    assert _one(10, 0, 10) == (0.0, 0.0, 0.0)
    hr20, mrr20, ndcg20 = _one(10, 0, 20)
    assert (
        hr20 == 1.0
        and mrr20 == pytest.approx(1 / 11)
        and ndcg20 == pytest.approx(1 / math.log2(12))
    )


def test_mrr_is_truncated_at_k():
    # rank 15: counted at K=20, zero at K=10 (the paper's MRR@10 != MRR@20)
    assert _one(14, 0, 10)[1] == 0.0
    assert _one(14, 0, 20)[1] == pytest.approx(1 / 15)


def test_ties_straddling_the_cutoff_use_expected_position():
    # g=8, t=3: positions 9..12 equally likely; two of the four are inside the top 10
    hr, mrr, ndcg = _one(8, 3, 10)
    assert hr == pytest.approx(0.5)
    assert mrr == pytest.approx((1 / 9 + 1 / 10) / 4)
    assert ndcg == pytest.approx((1 / math.log2(10) + 1 / math.log2(11)) / 4)


def test_constant_scorer_gets_k_over_list_length():
    scores = torch.zeros(5, 100)
    g, t = compare_to_positive(scores[:, 1:], scores[:, 0])
    assert g.tolist() == [0] * 5 and t.tolist() == [99] * 5
    for policy, expected in (("expected", 0.1), ("optimistic", 1.0), ("pessimistic", 0.0)):
        (m,) = metrics_from_ranks(g, t, [10], policy)
        assert m.hr.tolist() == pytest.approx([expected] * 5), policy
    assert expected_rank(g, t).tolist() == [50.5] * 5


def test_expected_policy_averages_optimistic_and_pessimistic_positions():
    g, t = torch.tensor([3, 0, 25]), torch.tensor([0, 4, 2])
    (m,) = metrics_from_ranks(g, t, [20])
    for i in range(3):
        positions = range(int(g[i]) + 1, int(g[i] + t[i]) + 2)
        hr = sum(p <= 20 for p in positions) / len(positions)
        mrr = sum(1 / p for p in positions if p <= 20) / len(positions)
        assert float(m.hr[i]) == pytest.approx(hr) and float(m.mrr[i]) == pytest.approx(mrr)


def test_nan_scores_are_rejected():
    with pytest.raises(FloatingPointError):
        compare_to_positive(torch.tensor([[0.1, float("nan")]]), torch.tensor([0.2]))


def test_counts_from_real_scores():
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.1, 0.7]])  # positive 0.5: above 0.9, 0.7; tie 0.5
    g, t = compare_to_positive(scores[:, 1:], scores[:, 0])
    assert (int(g), int(t)) == (2, 1)


def test_sampled_and_gathered_dot_products_agree():
    from methods.scoring import DotScorer, gathered_dot

    gen = torch.Generator().manual_seed(0)
    users = torch.randn(50, 16, generator=gen)
    table = torch.randn(300, 16, generator=gen)
    items = torch.stack([torch.randperm(300, generator=gen)[:20] for _ in range(50)])
    expected = gathered_dot(users, table, items)
    assert torch.allclose(DotScorer()(users, table, items), expected, atol=1e-5)
    items[:, 1] = items[:, 0]  # repeated candidates fall back to the gather path
    assert torch.allclose(DotScorer()(users, table, items), gathered_dot(users, table, items))
