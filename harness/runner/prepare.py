"""Dataset -> protocol: load each dataset once, split it, and materialise its candidate lists.

Candidate lists are looked up in the store by (dataset fingerprint, protocol fingerprint) and
built only when absent, so every method and every training seed, in this run or any later one,
ranks exactly the same lists.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import polars as pl

from harness.data.cache import cached_load
from harness.data.dataset import Dataset
from harness.data.loaders import get_loader
from harness.protocol.candidates import CandidateSet, NotEnoughItems, build_candidates
from harness.protocol.split import Split, leave_one_out
from harness.spec.load import DataMissing, LoadedSpec, SpecError
from harness.store.datacard import DataCard, card_declaration, find_card, load_card
from harness.store.store import Store

__all__ = [
    "PlannedData",
    "PreparedData",
    "PublishedData",
    "candidate_set_id",
    "check_readable",
    "data_present",
    "load_dataset",
    "prepare",
    "prepare_for_reading",
]


@dataclass(frozen=True)
class PreparedData:
    name: str
    dataset: Dataset
    fingerprint: str
    split: Split
    candidates: CandidateSet
    candidate_set_id: str
    candidate_hash: str
    train_counts: dict[str, np.ndarray]  # per domain: training interactions per user

    checked = True  # prepared from the data itself (PublishedData: from a data card only)

    @property
    def total_train_counts(self) -> np.ndarray:
        return np.sum(list(self.train_counts.values()), axis=0)

    @property
    def domain_names(self) -> list[str]:
        return self.dataset.domain_names


@dataclass(frozen=True)
class PublishedData:
    """A dataset known only from a published data card (:mod:`harness.store.datacard`): its
    fingerprint, candidate set and domains, enough to plan cells, import and report their
    bundles, and nothing to train on. ``checked`` is False: its bundles are not yet checked
    against the data."""

    name: str
    fingerprint: str
    candidate_set_id: str
    candidate_hash: str
    domain_names: list[str]
    card: DataCard
    checked = False


PlannedData = PreparedData | PublishedData


def candidate_set_id(fingerprint: str, protocol_fingerprint: str) -> str:
    payload = f"{fingerprint}:{protocol_fingerprint}".encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def load_dataset(loaded: LoadedSpec, name: str) -> Dataset:
    """Run the dataset's loader through the prepared-dataset cache (:mod:`harness.data.cache`,
    keyed by the raw files and the loader options); data errors become spec errors that name
    the dataset."""
    config = loaded.loader_configs[name]
    loader_name = loaded.spec.datasets[name].loader
    loader = get_loader(loader_name)
    files = [path for path, _hint in config.required_files(loaded.base_dir)]
    try:
        dataset, _status = cached_load(
            loader_name, config, files, lambda: loader.load(config, loaded.base_dir)
        )
    except (FileNotFoundError, ValueError) as exc:
        raise SpecError([loaded.issue(("datasets", name), str(exc))]) from None
    dataset.validate()
    return dataset


def domain_table(dataset: Dataset) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "domain": dataset.domain_names,
            "n_users": [len(d.all_users()) for d in dataset.domains.values()],
            "n_items": [d.n_items for d in dataset.domains.values()],
            "n_interactions": [d.n_interactions for d in dataset.domains.values()],
        }
    )


def prepare(loaded: LoadedSpec, name: str, store: Store | None) -> PreparedData:
    """Load, split and attach candidates (from the store when already materialised)."""
    protocol = loaded.spec.protocol
    dataset = load_dataset(loaded, name)
    fingerprint = dataset.fingerprint()
    split = leave_one_out(dataset, protocol.split_seed)
    set_id = candidate_set_id(fingerprint, protocol.fingerprint())
    counts = {
        d: np.bincount(split.domains[d].train_users, minlength=dataset.n_users)
        for d in dataset.domain_names
    }
    cands = None
    if store is not None:
        store.save_dataset(
            fingerprint,
            name,
            loaded.spec.datasets[name].loader,
            dataset.source,
            dataset.user_ids,
            domain_table(dataset),
        )
        cands = store.load_candidates(set_id, dataset.domain_names)
    if cands is None:
        try:
            cands = build_candidates(dataset, split, protocol.negatives, protocol.split_seed)
        except NotEnoughItems as exc:  # `harness validate` catches this before a run
            issue = loaded.issue(("protocol", "negatives"), f"dataset {name!r}: {exc}")
            raise SpecError([issue]) from None
        if store is not None:
            store.save_candidates(
                set_id,
                cands,
                {
                    "dataset_fingerprint": fingerprint,
                    "protocol_fingerprint": protocol.fingerprint(),
                    "protocol": protocol.model_dump(),
                    "split_rule": split.rule,
                },
                train_counts=counts,
            )
    _check_against_split(cands, split, set_id)
    return PreparedData(
        name, dataset, fingerprint, split, cands, set_id, cands.content_hash(), counts
    )


def _check_against_split(cands: CandidateSet, split: Split, set_id: str) -> None:
    """Stored candidates must hold exactly the split's held-out items (guards stale caches)."""
    for split_name, part in (("valid", cands.valid), ("test", cands.test)):
        for domain, c in part.items():
            s = split.domains[domain]
            users = s.valid_users if split_name == "valid" else s.test_users
            items = s.valid_items if split_name == "valid" else s.test_items
            if not (np.array_equal(users, c.users) and np.array_equal(items, c.positives)):
                raise RuntimeError(
                    f"candidate set {set_id} ({split_name}/{domain}) does not match "
                    f"the split; the store is stale or corrupted"
                )


def data_present(loaded: LoadedSpec, name: str) -> bool:
    """Whether every file the dataset's loader reads exists."""
    config = loaded.loader_configs[name]
    return all(path.is_file() for path, _hint in config.required_files(loaded.base_dir))


def published_card(loaded: LoadedSpec, name: str) -> DataCard | None:
    """The data card of dataset ``name`` in the spec's results folders, if one matches."""
    folders = [loaded.base_dir / folder for folder in loaded.spec.experiment.results]
    declaration = card_declaration(loaded.loader_configs[name])
    return find_card(folders, declaration, loaded.spec.protocol.fingerprint())


def prepare_for_reading(loaded: LoadedSpec, name: str, store: Store | None) -> PlannedData:
    """:func:`prepare` when the data is here; else the published data card (loaded into
    ``store``, unchecked) so published results can be planned, imported and reported; else
    :class:`DataMissing` naming the files and the fetch command."""
    if data_present(loaded, name):
        return prepare(loaded, name, store)
    card = published_card(loaded, name)
    if card is None:
        _raise_missing(loaded, name)
    if store is not None:
        load_card(store, card)
    cset = card.candidate_set
    return PublishedData(
        name,
        card.fingerprint,
        cset["candidate_set_id"],
        cset["content_hash"],
        card.domain_names,
        card,
    )


def check_readable(loaded: LoadedSpec) -> None:
    """Raise :class:`DataMissing` (the fetch command in it) unless every dataset has its files
    or a published data card; cheap: nothing is loaded."""
    for name in loaded.spec.datasets:
        if not data_present(loaded, name) and published_card(loaded, name) is None:
            _raise_missing(loaded, name)


def _raise_missing(loaded: LoadedSpec, name: str) -> None:
    from harness.spec.load import load_spec

    load_spec(loaded.path)  # raises DataMissing with the one-line fetch hint
    raise DataMissing([loaded.issue(("datasets", name), "data files are missing")])
