"""ItemKNN against a hand-computed example and a dense numpy reference, the harness's method
contract, and its registration through the installed entry point."""

from __future__ import annotations

import importlib.metadata
import math

import numpy as np
import pytest
import torch
from cdr_itemknn import ItemKNN, ItemKNNParams
from cdr_itemknn.itemknn import interaction_matrix, item_neighbourhood

from harness.testing import check_method_contract
from methods.base import FitContext, TrainingData


def _fitted(matrix: np.ndarray, params: ItemKNNParams, block_entries: int = 1 << 23):
    """ItemKNN fitted on a one-domain binary user x item matrix (validation is a stub)."""
    users, items = np.nonzero(matrix)
    data = TrainingData(
        n_users=matrix.shape[0],
        domains=["d"],
        n_items={"d": matrix.shape[1]},
        users={"d": torch.as_tensor(users)},
        items={"d": torch.as_tensor(items)},
    )
    method = ItemKNN(params, data.n_users, data.n_items)
    method.block_entries = block_entries
    context = FitContext(seed=0, device=torch.device("cpu"), validate=lambda score: {})
    method.fit(data, context)
    return method


def _all_scores(method: ItemKNN, n_users: int) -> np.ndarray:
    return method.score_all(torch.arange(n_users), "d").numpy()


def test_a_hand_computed_example():
    # items:      i0 i1 i2
    matrix = np.array(
        [
            [1, 1, 0],  # u0
            [1, 1, 1],  # u1
            [0, 1, 1],  # u2
            [1, 0, 0],  # u3
        ]
    )
    # |x_0| = |x_1| = sqrt 3, |x_2| = sqrt 2; co-occurrences (0,1) = 2, (0,2) = 1, (1,2) = 2.
    # Shrinkage 1: sim(0,1) = 2 / (3 + 1) = 0.5, sim(0,2) = 1 / (sqrt 6 + 1) ~ 0.290,
    # sim(1,2) = 2 / (sqrt 6 + 1) ~ 0.580. With k = 1: N(0) = {1}, N(1) = {2}, N(2) = {1}.
    s12 = 2 / (math.sqrt(6) + 1)
    method = _fitted(matrix, ItemKNNParams(k=1, shrinkage=1.0))
    expected = np.array(
        [
            [0.5, 0.0, s12],  # u0 holds i1: the neighbour of i0 and of i2
            [0.5, s12, s12],
            [0.5, s12, s12],  # u2 holds i1 and i2
            [0.0, 0.0, 0.0],  # u3 holds i0 only, nobody's nearest neighbour
        ]
    )
    np.testing.assert_allclose(_all_scores(method, 4), expected, rtol=1e-6)
    # score() on candidate lists gives the same numbers
    items = torch.tensor([[2, 0], [1, 2], [0, 1], [2, 1]])
    got = method.score(torch.arange(4), "d", items).numpy()
    np.testing.assert_allclose(got, np.take_along_axis(expected, items.numpy(), 1), rtol=1e-6)


def _reference_scores(matrix: np.ndarray, k: int, shrinkage: float, normalize: bool):
    """The definition, densely and with loops over items (clear, not fast)."""
    x = matrix.astype(np.float64)
    similarity = x.T @ x
    if normalize:
        norms = np.sqrt(x.sum(0))
        denominator = np.outer(norms, norms) + shrinkage
        positive = denominator > 0  # 0 / 0 for an item without interactions: no similarity
        similarity = np.divide(similarity, denominator, out=np.zeros_like(x.T @ x), where=positive)
    np.fill_diagonal(similarity, 0.0)
    n_items = x.shape[1]
    weights = np.zeros_like(similarity)
    for j in range(n_items):
        ranked = sorted(range(n_items), key=lambda i: (-similarity[i, j], i))
        for i in ranked[:k]:
            if similarity[i, j] > 0:
                weights[i, j] = similarity[i, j]
    return x @ weights


@pytest.mark.parametrize(
    "params",
    [
        ItemKNNParams(k=5, shrinkage=2.0),
        ItemKNNParams(k=3, shrinkage=0.0),
        ItemKNNParams(k=4, normalize=False),  # integer counts: many ties, lower index first
        ItemKNNParams(k=100),  # more neighbours than items
    ],
    ids=["k5-shrink2", "k3-shrink0", "counts", "k-over-items"],
)
@pytest.mark.parametrize("block_entries", [1, 300, 1 << 23])  # 1, some, all items a block
def test_matches_a_dense_reference(params, block_entries):
    rng = np.random.default_rng(3)
    matrix = (rng.random((30, 25)) < 0.2).astype(np.int64)
    matrix[0] = 0  # a user without any interaction
    matrix[:, 4] = 0  # an item nobody interacted with
    method = _fitted(matrix, params, block_entries)
    expected = _reference_scores(matrix, params.k, params.shrinkage, params.normalize)
    np.testing.assert_allclose(_all_scores(method, 30), expected, rtol=1e-5, atol=1e-6)
    assert not _all_scores(method, 30)[0].any()


def test_equal_similarities_keep_the_lower_item_index():
    # i2 is as similar to i0 as to i1; with k = 1 it keeps i0 on every device.
    matrix = np.array([[1, 0, 1], [0, 1, 1]])
    history = interaction_matrix(*map(torch.as_tensor, np.nonzero(matrix)), 2, 3)
    weights = item_neighbourhood(history, k=1, shrinkage=0.0).to_dense()
    assert weights[0, 2] > 0 and weights[1, 2] == 0


def test_honours_the_harness_method_contract():
    check_method_contract(ItemKNN)
    check_method_contract(ItemKNN, ItemKNNParams(k=5, shrinkage=0.0, normalize=False))


def test_the_installed_entry_point_registers_it():
    from methods.registry import get_method, method_origin

    entries = importlib.metadata.entry_points(group="cdr_harness.methods")
    assert "cdr_itemknn:ItemKNN" in {e.value for e in entries}, "pip install -e this folder"
    assert get_method("itemknn") is ItemKNN
    origin = method_origin("itemknn")
    assert (origin.distribution, origin.version) == (
        "cdr-harness-itemknn",
        importlib.metadata.version("cdr-harness-itemknn"),
    )
