"""Pinned identities of the shipped real data: stricter loaders, new options and a new split
description must not move a dataset fingerprint, a protocol fingerprint or a candidate-set id
(every stored cell and candidate list of earlier runs is keyed by them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.runner.prepare import candidate_set_id, prepare
from harness.spec.load import load_spec
from tests.conftest import require_spec_data

REPO = Path(__file__).resolve().parents[1]

# spec, dataset -> (dataset fingerprint, candidate-set id, candidate content hash), as computed
# by the code before issue 12 (commit 3d4f6e6) and unchanged since.
DATASETS = {
    ("douban.toml", "douban"): ("c7c2c7118db5e324", "df9b1aa97c6392a5", "fb20f3073ed89a09"),
    ("amazon_pairs.toml", "cloth_sport"): (
        "a77c466f9883e6fe",
        "f5c4cf45155afc14",
        "72d6fef3dfcd302c",
    ),
    ("amazon_cloth_electronic.toml", "cloth_electronic"): (
        "14d60f893ae16cc6",
        "6751f15735c7f40f",
        "ce5927d7b6add435",
    ),
}

PROTOCOLS = {
    "amazon.toml": "c3ba017603adcfba",
    "amazon_cloth_electronic.toml": "50a9d34d042684c4",
    "douban3.toml": "50a9d34d042684c4",
    "amazon_pairs.toml": "c3ba017603adcfba",
    "amazon_synthetic.toml": "c3ba017603adcfba",
    "bprmf_reg_amazon_pairs.toml": "c3ba017603adcfba",
    "bprmf_reg_douban.toml": "c3ba017603adcfba",
    "douban.toml": "50a9d34d042684c4",
    "matmul_precision.toml": "c3ba017603adcfba",
    "quickstart.toml": "50a9d34d042684c4",
    "tune_amazon_pairs.toml": "c3ba017603adcfba",
    "tune_douban.toml": "50a9d34d042684c4",
    "uclr_douban_negatives.toml": "c3ba017603adcfba",
    "uclr_stage_c.toml": "c3ba017603adcfba",
}


@pytest.mark.parametrize(("spec", "dataset"), list(DATASETS), ids=[s for s, _ in DATASETS])
def test_real_dataset_fingerprints_are_pinned(spec, dataset):
    """Fingerprints are of content, not location: the registry's data home gives the ids the
    published bundles were computed with from ../../shared/data paths."""
    require_spec_data(REPO / "specs" / spec)
    loaded = load_spec(REPO / "specs" / spec)
    prepared = prepare(loaded, dataset, None)
    fingerprint, set_id, content = DATASETS[(spec, dataset)]
    assert prepared.fingerprint == prepared.dataset.fingerprint() == fingerprint
    # the candidate-set id hashes only the two fingerprints (never the split description)
    protocol_fp = loaded.spec.protocol.fingerprint()
    assert prepared.candidate_set_id == candidate_set_id(fingerprint, protocol_fp)
    assert prepared.candidate_set_id == set_id
    assert prepared.candidate_hash == content


def test_every_shipped_protocol_fingerprint_is_pinned():
    shipped = sorted(p.name for p in (REPO / "specs").glob("*.toml"))
    assert shipped == sorted(PROTOCOLS), "a spec was added: pin its protocol fingerprint"
    for name in shipped:
        loaded = load_spec(REPO / "specs" / name, check_files=False)
        assert loaded.spec.protocol.fingerprint() == PROTOCOLS[name], name
