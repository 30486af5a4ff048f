"""Property-based spec fuzzer: mutations of the shipped specs (deleted, renamed, retyped and
out-of-range keys) through `harness validate`. Every rejection is one line per problem naming
the spec file and a key path, exit 2, never a traceback; an accepted spec prints "ok".

Douban specs point at the small test fixture (same loader, same keys), the Amazon pairs at
the real data (loaded once: validation caches datasets per config and file state) and the
synthetic presets at the small "quickstart" preset, so 200 validations stay fast.
"""

from __future__ import annotations

import json
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from harness.cli import app
from harness.data.registry import get_entry

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


def _pair_fixture() -> Path:
    """A small DisenCDR-style pair alpha_beta (20 users, 12 items per domain, 4 training items
    and 1 test item per user): enough items for one negative whatever a user has seen."""
    root = Path(tempfile.mkdtemp(prefix="fuzz-pairs-"))
    for folder, shift in (("alpha_beta", 0), ("beta_alpha", 5)):
        (root / folder).mkdir()
        train = [f"{u}\t{(u + shift + j) % 12}\t1" for u in range(20) for j in range(4)]
        test = [f"{u}\t{(u + shift + 4) % 12}\t1" for u in range(20)]
        (root / folder / "train.txt").write_text("\n".join(train) + "\n")
        (root / folder / "test.txt").write_text("\n".join(test) + "\n")
    return root


def _shipped() -> dict[str, dict]:
    pairs = _pair_fixture()
    specs = {}
    for path in sorted((REPO / "specs").glob("*.toml")):
        raw = tomllib.loads(path.read_text())
        for dataset in raw.get("datasets", {}).values():
            # registered datasets become their loader over the small fixtures of that format
            registered = dataset.pop("dataset", None)
            if registered is not None:
                dataset["loader"] = get_entry(registered).loader
            if dataset.get("loader") == "douban":
                dataset["path"] = (FIXTURES / "douban3").as_posix()
                dataset["domains"] = ["books", "music"]
            elif dataset.get("loader") == "amazon_pairs":
                dataset.update(path=pairs.as_posix(), pair="alpha_beta")
            elif dataset.get("loader") == "amazon":
                dataset["path"] = (FIXTURES / "amazon_raw").as_posix()
            elif dataset.get("loader") == "synthetic":
                dataset["preset"] = "quickstart"
        for method in raw.get("methods", {}).values():
            if method.get("domains"):
                method["domains"] = None  # fixture domain names differ; set by mutations only
                del method["domains"]
        experiment = raw.get("experiment", {})
        if "results" in experiment:  # published folders, resolved against specs/
            experiment["results"] = [
                (REPO / "specs" / folder).resolve().as_posix() for folder in experiment["results"]
            ]
        if "protocol" in raw:  # the fixtures have a handful of items per domain
            raw["protocol"].update(negatives=1, ks=[1], validation_k=1)
        specs[path.name] = raw
    return specs


SHIPPED = _shipped()
NAME_MAPS = {("datasets",), ("methods",)}  # keys there are free names, not schema keys


# --- a small TOML writer (tomllib reads; the standard library has no writer) -----------------


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_\-]+", key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def to_toml(data: dict, prefix: tuple[str, ...] = ()) -> str:
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict) or _inline(prefix, k)}
    tables = {k: v for k, v in data.items() if k not in scalars}
    out = []
    if prefix and (scalars or not tables):
        out.append("[" + ".".join(_key(p) for p in prefix) + "]")
    out += [f"{_key(k)} = {_value(v)}" for k, v in scalars.items()]
    text = "\n".join(out) + ("\n\n" if out else "")
    for key, table in tables.items():
        text += to_toml(table, (*prefix, key))
    return text


def _inline(prefix: tuple[str, ...], key: str) -> bool:
    return key == "files"  # amazon's domain -> file map, written inline as in specs/amazon.toml


# --- mutations ----------------------------------------------------------------------------


def _paths(data: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for key, value in data.items():
        out.append((*prefix, key))
        if isinstance(value, dict):
            out += _paths(value, (*prefix, key))
    return out


def _get_parent(data: dict, path: tuple) -> dict:
    for part in path[:-1]:
        data = data[part]
    return data


OTHER_TYPES = ["text", 7, -1, 2.5, True, [1, "a"], {"x": 1}]
OUT_OF_RANGE = [0, -3, -1, 10**12, -(10**12), 1.5, -0.5, 1e9, "", [], [0], [-3], [5, 1]]


@st.composite
def mutated(draw) -> tuple[str, dict, str, tuple, str]:
    name = draw(st.sampled_from(sorted(SHIPPED)))
    spec = json.loads(json.dumps(SHIPPED[name]))  # deep copy
    kind = draw(st.sampled_from(["delete", "rename", "retype", "range"]))
    path = draw(st.sampled_from(_paths(spec)))
    parent = _get_parent(spec, path)
    key = old = path[-1]
    if kind == "delete":
        del parent[key]
    elif kind == "rename":
        new = draw(
            st.sampled_from([key + "x", key[:-1], key.upper(), "_" + key, key.replace("_", "")])
        )
        if new == key or new in parent or not new:
            new = key + "_typo"
        parent[new] = parent.pop(key)
        path = (*path[:-1], new)
    elif kind == "retype":
        current = parent[key]
        choices = [v for v in OTHER_TYPES if type(v) is not type(current)]
        parent[key] = draw(st.sampled_from(choices))
    else:
        parent[key] = draw(st.sampled_from(OUT_OF_RANGE))
    return name, spec, kind, path, old


LINE = re.compile(r"^error (?P<file>\S+?)(?::(?P<line>\d+))?: (?P<key>[^:]+): \S")


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=mutated())
def test_mutated_shipped_specs_fail_in_one_line_per_problem(tmp_path_factory, case):
    name, spec, kind, path, old = case
    target = tmp_path_factory.mktemp("fuzz") / name
    text = to_toml(spec)
    target.write_text(text)
    result = CliRunner().invoke(app, ["validate", str(target)])
    output = result.output
    event(f"{kind}: exit {result.exit_code}")
    assert "Traceback" not in output, output
    assert result.exit_code in (0, 2), (result.exit_code, output, text)
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in output.splitlines() if line.strip()]
    if result.exit_code == 0:
        assert len(lines) == 1 and lines[0].startswith("ok "), output
        return
    assert lines, output
    for line in lines:
        match = LINE.match(line)
        assert match, f"not a one-line issue with file and key: {line!r}\n{text}"
        assert match["file"] == str(target), line
        assert match["key"] != "<top level>" or "invalid TOML" in line, line
    in_search = "search" in path[:-1]  # a space's own keys: the error names the space
    if kind == "rename" and path[:-1] not in NAME_MAPS and "files" not in path[:-1]:
        # a renamed schema key is an unknown key at its own path, or (a required key) missing
        dotted = ".".join(path)
        missing = ".".join((*path[:-1], old)) + ": required key is missing"
        unknown = (f": {dotted}: unknown key", f": {dotted}: unknown parameter")  # search tables
        space = ".".join(path[: path.index("search") + 2]) if in_search else None
        assert (
            any(u in x for u in unknown for x in lines)
            or any(missing in x for x in lines)
            or (space is not None and any(f": {space}" in x for x in lines))
        ), output


def test_the_runnable_base_spec_validates(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(to_toml(RUNNABLE))
    assert CliRunner().invoke(app, ["validate", str(path)]).exit_code == 0


def test_writer_round_trips_every_shipped_spec():
    for name, spec in SHIPPED.items():
        assert tomllib.loads(to_toml(spec)) == spec, name


def test_unmutated_fixture_specs_validate(tmp_path):
    runner = CliRunner()
    for name, spec in SHIPPED.items():
        path = tmp_path / name
        path.write_text(to_toml(spec))
        result = runner.invoke(app, ["validate", str(path)])
        assert result.exit_code == 0, (name, result.output)


# --- accepted specs run: every mutation `validate` accepts trains its first cell or stores why
# it failed. A small synthetic spec keeps each run to seconds; the schema is the same.

RUNNABLE = {
    "experiment": {"name": "fuzzrun", "seeds": [0, 1]},
    "datasets": {
        "syn": {
            "loader": "synthetic",
            "preset": "quickstart",
            "n_users": 120,
            "n_items": [150, 90, 100],
            "n_interactions": [700, 400, 450],
        }
    },
    "protocol": {"negatives": 20, "ks": [5, 10], "validation_k": 5, "full_ranking": True},
    "methods": {
        "bprmf": {
            "kind": "bprmf",
            "params": {"embedding_size": 8, "batch_size": 128, "max_epochs": 2, "patience": 1},
        },
        "pop": {"kind": "popularity"},
    },
}


@st.composite
def mutated_runnable(draw) -> tuple[dict, str]:
    spec = json.loads(json.dumps(RUNNABLE))
    kind = draw(st.sampled_from(["delete", "delete", "rename", "retype", "range", "range"]))
    path = draw(st.sampled_from(_paths(spec)))
    parent = _get_parent(spec, path)
    key = path[-1]
    if kind == "delete":
        del parent[key]
    elif kind == "rename":
        parent[key + "x"] = parent.pop(key)
    elif kind == "retype":
        others = [v for v in OTHER_TYPES if type(v) is not type(parent[key])]
        parent[key] = draw(st.sampled_from(others))
    else:
        parent[key] = draw(st.sampled_from(OUT_OF_RANGE))
    return spec, f"{kind} {'.'.join(path)}"


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=mutated_runnable())
def test_accepted_mutations_run_their_first_cell_or_store_the_failure(tmp_path_factory, case):
    import duckdb

    spec, what = case
    folder = tmp_path_factory.mktemp("fuzzrun")
    target = folder / "spec.toml"
    target.write_text(to_toml(spec))
    runner = CliRunner()
    checked = runner.invoke(app, ["validate", str(target)])
    assert checked.exit_code in (0, 2) and "Traceback" not in checked.output, checked.output
    if checked.exit_code != 0:
        event("rejected by validate")
        return
    method = next(iter(spec["methods"]))
    seed = spec["experiment"].get("seeds", [0, 1, 2])[0]
    out = folder / "out"
    args = ["run", str(target), "--out", str(out), "--only", method, "--seed", str(seed)]
    result = runner.invoke(app, [*args, "--no-report", "--device", "cpu", "--threads", "1"])
    assert "Traceback" not in result.output, (what, result.output)
    assert result.exit_code in (0, 1), (what, result.exit_code, result.output)
    con = duckdb.connect(str(out / "results.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT status, error FROM plan WHERE method = ? AND seed = ?", [method, seed]
        ).fetchall()
    finally:
        con.close()
    assert len(rows) == 1, (what, rows)
    status, error = rows[0]
    event(f"accepted: {status}")
    if result.exit_code == 0:
        assert status == "done", (what, rows)
    else:
        assert status == "failed" and error, (what, rows)  # the reason is stored
