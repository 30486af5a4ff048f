"""The dataset registry: every dataset a shipped spec can name with ``dataset = "NAME"``.

Each entry pins its files to an upstream commit (URL, size and SHA-256, or a git blob id where
only that is known), says which loader reads them with which options, and carries the licence
and the citation its authors ask for. ``harness data list`` shows the entries and what the data
home holds; ``harness data fetch NAME`` downloads them (:mod:`harness.data.fetch`).

Files land in the data home (:func:`harness.data.home.data_home`) under ``<folder>/<path>``,
the layout of the project's own mirror (``douban/books.tsv``,
``amazon-pairs/cloth_sport/train.txt``), so such a folder is a valid data home and a valid
mirror. Several entries may share a folder (``douban-movies`` adds ``movies.tsv`` beside
``douban``'s files, so a spec can read the three Douban domains from one folder).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

__all__ = [
    "DATASETS",
    "DatasetEntry",
    "RemoteFile",
    "UnknownDataset",
    "entry_for_file",
    "get_entry",
]


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: where it lives in the data home and where it comes from.

    ``sha256`` and ``size`` pin the content; ``git_blob`` (the SHA-1 git stores for a file)
    pins it where only that is known. A file with none of the three is *unpinned*: its first
    download records its size and SHA-256 in the data home and prints them to pin here.
    ``url`` is None where no public upstream is known (the file comes from a mirror or by hand).
    """

    path: str  # relative to the entry's folder, POSIX separators
    url: str | None
    sha256: str | None = None
    size: int | None = None
    git_blob: str | None = None
    part: str | None = None  # a subset that can be fetched alone (e.g. one Amazon pair)

    def __post_init__(self) -> None:
        pure = PurePosixPath(self.path)
        if pure.is_absolute() or ".." in pure.parts or not pure.parts:
            raise ValueError(f"registry path {self.path!r} must stay inside its folder")
        if self.url is not None and not self.url.startswith("https://"):
            raise ValueError(f"registry URL {self.url!r}: upstream downloads are https only")

    @property
    def pinned(self) -> bool:
        return self.sha256 is not None or self.git_blob is not None


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: files, loader and its options, licence, citation."""

    name: str
    title: str
    folder: str  # inside the data home
    loader: str
    loader_options: dict[str, Any]
    files: tuple[RemoteFile, ...]
    licence: str
    citation: str
    homepage: str
    notes: str = ""
    parts: tuple[str, ...] = field(default=())
    alternative: str = ""  # what to run without the files (named in the missing-data error)

    def file(self, path: str) -> RemoteFile:
        for remote in self.files:
            if remote.path == path:
                return remote
        raise KeyError(f"dataset {self.name!r} has no file {path!r}")

    def select(self, parts: list[str] | None = None) -> list[RemoteFile]:
        """The entry's files, or those of the named parts (every file when ``parts`` is empty)."""
        if not parts:
            return list(self.files)
        unknown = sorted(set(parts) - set(self.parts))
        if unknown:
            known = ", ".join(self.parts) or "none"
            raise UnknownDataset(f"dataset {self.name!r} has no part {unknown} (parts: {known})")
        return [f for f in self.files if f.part in parts]


class UnknownDataset(KeyError):
    """KeyError whose message prints plainly."""

    def __str__(self) -> str:
        return str(self.args[0])


# -- the entries --------------------------------------------------------------------------------
_DISENCDR_COMMIT = "4e6d60bad4d5185c99ab60423b48f87f88aa03a3"
_DISENCDR_RAW = f"https://raw.githubusercontent.com/cjx96/DisenCDR/{_DISENCDR_COMMIT}/dataset"
# (folder, file) -> (SHA-256, bytes), checked against the DisenCDR commit above.
_DISENCDR_FILES: dict[tuple[str, str], tuple[str, int]] = {
    ("cloth_sport", "train.txt"): (
        "3e039ec9baff975cb47722c4704f7d2103c2bbf2a3c30ed2d264e17b69d4fd0a", 1097669),
    ("cloth_sport", "test.txt"): (
        "0d034810261027b080d506399426d3eb4f26b4b90a121fe79ebaef246a82b1bd", 93917),
    ("cloth_sport", "test_original.txt"): (
        "1e35975cd187d2d69a52cd6ae14f1ce8845ad0cba897ca65481e74c3ca487ff2", 124110),
    ("sport_cloth", "train.txt"): (
        "45c517a6fc7721f168411b69eb3f6e6ef896bbe06f599f6f7b4a5844ff925629", 1150235),
    ("sport_cloth", "test.txt"): (
        "7b43d370047f23cbc6862188aba53b3a3241948255584a1f3f5c189118f16490", 103831),
    ("sport_cloth", "test_original.txt"): (
        "79c4f4ca9e6a694652df32c8eabc73f6b6e62719f9579e89a44210ccb0c2d460", 124070),
    ("cloth_electronic", "train.txt"): (
        "678124e0dbf8d162041f8b656bd5e89ee2a678df2c85812f94fd7c0bd2062f6f", 1569278),
    ("cloth_electronic", "test.txt"): (
        "0b604b69d3eb531bf99a11e2322f247694f7a593905e0c0c04c54e2a58fb0f78", 161965),
    ("cloth_electronic", "test_original.txt"): (
        "ab4c404114d7d641edfa1f5759ec1aae9b0cc5eb55c4d5ea61437c43c96b1800", 204562),
    ("electronic_cloth", "train.txt"): (
        "fbccec759f2acfec35927c07a1a4bd911f75106de34d6b21e7d7a8a7ffc68e81", 2711201),
    ("electronic_cloth", "test.txt"): (
        "1a1a5ce75f986052afc05337ea5d1e5ac44c7017f06f1ecc5ccadb523aadf08d", 181464),
    ("electronic_cloth", "test_original.txt"): (
        "1db273571bb0e59f7d595c682d4074e9f976bcaf2fe21e15c4623bc16bc14686", 206892),
    ("phone_sport", "train.txt"): (
        "d38cd0da5379bbec03a19cc3eb95a8b52caeeb179dfb515ba2d894b1e193572d", 510647),
    ("phone_sport", "test.txt"): (
        "1665b2846c5011ca870ff79bcfb3cc632aa3eeaa6ea9853ee45549ac0858b444", 48067),
    ("phone_sport", "test_original.txt"): (
        "17894bfdd8daecda579ca2f454b4a1282187efc52705b731dd16893c44a0abdb", 60073),
    ("sport_phone", "train.txt"): (
        "c55f3f576465795163f45cdb6df9484626dfbb12799393a7d06e4401cfcb6f3a", 612708),
    ("sport_phone", "test.txt"): (
        "5ff3bc25da94612e7a35672edba277c4acc497cc8d87d268bca891e64dc98640", 45250),
    ("sport_phone", "test_original.txt"): (
        "78cd3e7fa755fc0c7ffe10ab61a20f3626ed81b099dfc633b08e59cf83dcc535", 61239),
    ("phone_electronic", "train.txt"): (
        "a439eb3fdf4d08e58da1d86e1f711cf0acf59f28944d347ad4b3fb9454df54f9", 609415),
    ("phone_electronic", "test.txt"): (
        "a3d0d2fb03c25994c3509af3acc6eeca5009b00751f9b12e28fdf52843a027c6", 31077),
    ("phone_electronic", "test_original.txt"): (
        "9e7f12e47f649c721bbe4e45e49d59e3b4cf4aecea0f2f45ac007fa188077b65", 40318),
    ("electronic_phone", "train.txt"): (
        "cb09610ab143478097937c235c4932fe39b5c664d434dd5abba3c5eb5d75f028", 1424620),
    ("electronic_phone", "test.txt"): (
        "322a8e4c7b5d10e2a3d91dbb2d7833eaf2ba684f4c5109dc1ea4e6ee08119c46", 31982),
    ("electronic_phone", "test_original.txt"): (
        "b513255035eb30808e9cc396b180f48df7e6bbd6726ed7415c00f0aab78ba565", 41498),
}  # fmt: skip
# Each pair X_Y keeps domain X in X_Y/ and domain Y in Y_X/: a part is one pair, both folders.
_PAIRS = ("cloth_sport", "cloth_electronic", "phone_sport", "phone_electronic")


def _pair_of(folder: str) -> str:
    x, y = folder.split("_")
    return folder if folder in _PAIRS else f"{y}_{x}"


_GA_DTCDR_COMMIT = "11a1dc6fda5148c8b1ce412ed4e2f0c4f124e2d0"
_GA_DTCDR_RAW = f"https://raw.githubusercontent.com/fengzhu1/GA-DTCDR/{_GA_DTCDR_COMMIT}/Data"
_GA_DTCDR_CITATION = (
    "Feng Zhu, Yan Wang, Chaochao Chen, Guanfeng Liu, Xiaolin Zheng. A Graphical and "
    "Attentional Framework for Dual-Target Cross-Domain Recommendation. IJCAI 2020; and "
    "Feng Zhu, Chaochao Chen, Yan Wang, Guanfeng Liu, Xiaolin Zheng. DTCDR: A Framework for "
    "Dual-Target Cross-Domain Recommendation. CIKM 2019."
)
# books.tsv is GA-DTCDR's Data/douban_book/ratings_200000.dat (not the README's ratings.dat),
# found at this commit of the same repository (length and sampled content equal; the SHA-256
# pin below settles it on download).
_GA_DTCDR_BOOKS_RAW = "https://raw.githubusercontent.com/fengzhu1/GA-DTCDR/b9f22b3cbdc78efa3d41e1f3ea60a2c14c9be13f/Data"
_AMAZON_2014 = "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles"

DATASETS: dict[str, DatasetEntry] = {
    entry.name: entry
    for entry in (
        DatasetEntry(
            name="amazon-pairs",
            title="DisenCDR Amazon two-domain pairs (pre-split, implicit)",
            folder="amazon-pairs",
            loader="amazon_pairs",
            loader_options={},
            files=tuple(
                RemoteFile(
                    f"{folder}/{name}",
                    f"{_DISENCDR_RAW}/{folder}/{name}",
                    sha256=sha,
                    size=size,
                    part=_pair_of(folder),
                )
                for (folder, name), (sha, size) in _DISENCDR_FILES.items()
            ),
            licence="MIT (DisenCDR repository); the interactions derive from the Amazon review "
            "data of McAuley et al., which its authors release for research use",
            citation="Jiangxia Cao, Xixun Lin, Xin Cong, Jing Ya, Tingwen Liu, Bin Wang. "
            "DisenCDR: Learning Disentangled Representations for Cross-Domain Recommendation. "
            "SIGIR 2022.",
            homepage=f"https://github.com/cjx96/DisenCDR/tree/{_DISENCDR_COMMIT}/dataset",
            notes="Each pair X_Y: domain X in X_Y/, domain Y in Y_X/; the spec picks one with "
            '`pair = "cloth_sport"`. Fetch one pair with `--part`.',
            parts=_PAIRS,
        ),
        DatasetEntry(
            name="douban",
            title="Douban books + music (shared users; ratings as implicit interactions)",
            folder="douban",
            loader="douban",
            loader_options={"domains": ["books", "music"]},
            files=(
                RemoteFile(
                    "books.tsv",
                    f"{_GA_DTCDR_BOOKS_RAW}/douban_book/ratings_200000.dat",
                    sha256="dffcd642cb2ea09bde19f28ea54f8fb711913b2b04caa62c87f6ea7fd6f26a31",
                    size=2878999,
                ),
                RemoteFile(
                    "music.tsv",
                    f"{_GA_DTCDR_RAW}/douban_music/ratings.dat",
                    sha256="40944be25f79e6cf80ab9acf0dca8f4b9b9fe2724a068702294608883ad46775",
                    size=811063,
                ),
            ),
            licence="GPL-3.0 (GA-DTCDR repository); cite GA-DTCDR and DTCDR",
            citation=_GA_DTCDR_CITATION,
            homepage=f"https://github.com/fengzhu1/GA-DTCDR/tree/{_GA_DTCDR_COMMIT}/Data",
            notes="music.tsv is GA-DTCDR's Data/douban_music/ratings.dat byte for byte. "
            "books.tsv (227,251 ratings, 95,872 items) is not GA-DTCDR's "
            "Data/douban_book/ratings.dat (96,040 ratings, 6,777 items, re-indexed items) but "
            "the unlisted Data/douban_book/ratings_200000.dat beside it, unfiltered.",
        ),
        DatasetEntry(
            name="douban-movies",
            title="Douban movies, the paper's third Douban domain",
            folder="douban",
            loader="douban",
            loader_options={"domains": ["books", "music", "movies"]},
            files=(
                RemoteFile(
                    "movies.tsv",
                    f"{_GA_DTCDR_RAW}/douban_movie/ratings.dat",
                    git_blob="0a944e57dc2107fb4ded66f9740f242c666e6949",
                ),
            ),
            licence="GPL-3.0 (GA-DTCDR repository); cite GA-DTCDR and DTCDR",
            citation=_GA_DTCDR_CITATION,
            homepage=f"https://github.com/fengzhu1/GA-DTCDR/tree/{_GA_DTCDR_COMMIT}/Data",
            notes="Pinned by its git blob id (its SHA-256 is not known here); it lands beside "
            "douban's files, so specs/douban3.toml reads books, music and movies from one "
            "folder.",
        ),
        DatasetEntry(
            name="amazon-2014",
            title="Amazon 2014 ratings-only dumps: Books, Movies and TV, Electronics",
            folder="amazon-2014",
            loader="amazon",
            loader_options={},
            files=tuple(
                RemoteFile(f"ratings_{name}.csv", f"{_AMAZON_2014}/ratings_{name}.csv")
                for name in ("Books", "Movies_and_TV", "Electronics")
            ),
            licence="released by the authors for research use; cite both papers below",
            citation="Julian McAuley, Christopher Targett, Qinfeng Shi, Anton van den Hengel. "
            "Image-based Recommendations on Styles and Substitutes. SIGIR 2015; and Ruining He, "
            "Julian McAuley. Ups and Downs: Modeling the Visual Evolution of Fashion Trends "
            "with One-Class Collaborative Filtering. WWW 2016.",
            homepage="https://jmcauley.ucsd.edu/data/amazon/links.html",
            notes="Unpinned: no checksum can be known here; the first download records each "
            "file's size and SHA-256 in the data home and prints them to pin in this registry.",
            alternative="without them, specs/amazon_synthetic.toml runs the same matrix on "
            "synthetic data of the same shape",
        ),
    )
}


def get_entry(name: str) -> DatasetEntry:
    """The registered dataset ``name``; the error suggests close names."""
    try:
        return DATASETS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(DATASETS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UnknownDataset(
            f"unknown dataset {name!r}; {hint}registered: {', '.join(DATASETS)}"
        ) from None


def entry_for_file(folder: str, path: str) -> DatasetEntry | None:
    """The entry that provides ``<folder>/<path>`` of the data home (None: no entry does)."""
    for entry in DATASETS.values():
        if entry.folder == folder and any(f.path == path for f in entry.files):
            return entry
    return None
