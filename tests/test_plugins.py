"""Methods as installable plugins (entry point group ``cdr_harness.methods``).

Fake plugins are real installed distributions as far as Python can tell: a module plus a
``*.dist-info`` folder (METADATA, entry_points.txt) in a temporary folder on ``sys.path``, so
the registry's real discovery path (importlib.metadata) is what these tests exercise.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import shutil
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.runner.cells import code_version
from harness.runner.runner import plan_status, run_spec
from harness.runner.work import run_cell
from harness.spec.load import SpecError, load_spec
from harness.store.bundle import META_KEY
from harness.store.store import connect_read_only
from harness.testing import contract_task
from methods import registry
from methods.registry import MethodConflict, UnknownMethod, get_method, method_origin

REPO = Path(__file__).resolve().parents[1]

# A plugin method: MostPop under another kind (``KIND`` is filled in per plugin).
POPULARITY_PLUGIN = '''
"""A fake plugin's method."""
from methods.popularity import Popularity


class {name}(Popularity):
    """MostPop under another kind."""

    kind = "{kind}"
    version = "3"
    display_name = "{name}"
'''


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@dataclass
class FakeSite:
    """A folder on sys.path into which tests 'pip install' fake plugin distributions."""

    root: Path
    modules: list[str] = field(default_factory=list)

    def install(self, dist: str, version: str, module: str, source: str, entry: str) -> None:
        """Install ``module`` (``source``) as distribution ``dist`` declaring ``entry``
        (``name = value``) in the method group."""
        (self.root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8"
        )
        (info / "entry_points.txt").write_text(
            f"[{registry.ENTRY_POINT_GROUP}]\n{entry}\n", encoding="utf-8"
        )
        self.modules.append(module)
        importlib.invalidate_caches()
        registry.refresh()

    def uninstall(self, dist: str, module: str) -> None:
        """What ``pip uninstall`` leaves: neither the files nor, in a new process, the module."""
        for info in self.root.glob(f"{dist.replace('-', '_')}-*.dist-info"):
            shutil.rmtree(info)
        (self.root / f"{module}.py").unlink()
        sys.modules.pop(module, None)
        registry._DECLARED[:] = [c for c in registry._DECLARED if c.__module__ != module]
        importlib.invalidate_caches()
        registry.refresh()


@pytest.fixture
def site(tmp_path, monkeypatch) -> Iterator[FakeSite]:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    # Classes the fake plugins register must not outlive the test (built-ins are imported
    # first: a module imported during the test would not register again after it).
    registry.available()
    monkeypatch.setattr(registry, "_DECLARED", list(registry._DECLARED))
    fake = FakeSite(root)
    registry.refresh()
    yield fake
    for module in fake.modules:
        sys.modules.pop(module, None)
    registry.refresh()


def popularity_plugin(site: FakeSite, dist: str, version: str, module: str, kind: str) -> None:
    name = f"Pop{module.title().replace('_', '')}"
    source = POPULARITY_PLUGIN.format(name=name, kind=kind)
    site.install(dist, version, module, source, f"{kind} = {module}:{name}")


# --- registration ----------------------------------------------------------------------------
def test_a_plugin_method_is_registered_with_its_distribution(site):
    popularity_plugin(site, "alpha-methods", "1.4", "alpha_pop", "alpha_pop")
    cls = get_method("alpha_pop")
    assert cls.__module__ == "alpha_pop" and cls.version == "3"
    origin = method_origin("alpha_pop")
    assert (origin.source, origin.distribution, origin.version) == (
        "plugin",
        "alpha-methods",
        "1.4",
    )
    assert method_origin("bprmf").source == "built-in"
    listing = cli("methods")
    assert listing.exit_code == 0
    assert "alpha_pop PopAlphaPop (single-domain, v3; alpha-methods 1.4)" in listing.output
    assert "bprmf BPRMF (single-domain, v1; built-in)" in listing.output
    # typed parameters with their types and bounds
    assert "embedding_size: int = 128 (>= 1)" in listing.output


def test_a_module_entry_point_registers_the_classes_it_decorates(site):
    source = """
    from methods.popularity import Popularity
    from methods.registry import register


    @register
    class One(Popularity):
        kind = "module_one"


    @register
    class Two(Popularity):
        kind = "module_two"
    """
    site.install("gamma-methods", "0.2", "gamma_methods", source, "all = gamma_methods")
    assert {method_origin(k).distribution for k in ("module_one", "module_two")} == {
        "gamma-methods"
    }


@pytest.mark.parametrize("kind", ["twin", "popularity"], ids=["two-plugins", "plugin-vs-built-in"])
def test_two_methods_claiming_one_kind_is_one_error_naming_both(site, kind, tmp_path):
    popularity_plugin(site, "alpha-methods", "1.0", "alpha_twin", kind)
    if kind == "twin":
        popularity_plugin(site, "beta-methods", "2.5", "beta_twin", kind)
    with pytest.raises(MethodConflict) as caught:
        get_method(kind)
    message = str(caught.value)
    assert message.count("\n") == 0 and f"method kind {kind!r} is claimed twice" in message
    assert "distribution alpha-methods 1.0 (entry point" in message
    if kind == "twin":
        assert "distribution beta-methods 2.5 (entry point" in message
    else:
        assert "built-in (methods.popularity)" in message
    # the other kinds still work, and `harness methods` shows the conflict
    assert get_method("bprmf").kind == "bprmf"
    assert kind not in registry.available()
    listing = cli("methods")
    assert listing.exit_code == 0 and f"kind {kind!r} claimed twice" in listing.output
    # a spec using that kind gets the same message as one spec error
    spec = tmp_path / "twin.toml"
    spec.write_text(
        '[experiment]\nname = "twin"\n[datasets.syn]\nloader = "synthetic"\n'
        f'preset = "quickstart"\n[methods.m]\nkind = "{kind}"\n',
        encoding="utf-8",
    )
    with pytest.raises(SpecError, match="claimed twice"):
        load_spec(spec)


def test_a_plugin_failing_at_import_is_named_and_the_rest_still_work(site):
    site.install(
        "broken-methods",
        "0.9",
        "broken_methods",
        """
        from methods.popularity import Popularity
        from methods.registry import register


        @register
        class HalfBroken(Popularity):  # registered, then its module fails: never usable
            kind = "half_broken"


        raise ImportError("needs libfoo.so, which is not installed")
        """,
        "broken = broken_methods:Broken",
    )
    popularity_plugin(site, "alpha-methods", "1.0", "alpha_ok", "alpha_ok")
    broken = registry.broken_plugins()
    assert [(b.distribution, b.version) for b in broken] == [("broken-methods", "0.9")]
    assert "ImportError: needs libfoo.so" in broken[0].error
    assert "half_broken" not in registry.available()
    listing = cli("methods")
    assert listing.exit_code == 0, listing.output
    assert "1 plugin(s) failed to load" in listing.output
    assert "broken-methods 0.9 (entry point broken = broken_methods:Broken): ImportError" in (
        listing.output
    )
    for kind in ("bprmf", "popularity", "uclr", "alpha_ok"):  # the others are still listed
        assert f"\n{kind} " in "\n" + listing.output
    # ... and still run
    for kind in ("popularity", "alpha_ok"):
        result = run_cell(contract_task(get_method(kind)))
        assert result.status == "done", result.error
    # asking for a kind that is nowhere names the broken plugin as a possible cause
    with pytest.raises(UnknownMethod, match=r"broken-methods 0\.9 .*needs libfoo\.so"):
        get_method("broken")


def test_an_entry_point_that_is_no_method_is_named(site):
    site.install("odd-methods", "1.0", "odd_methods", "VALUE = 3\n", "odd = odd_methods:VALUE")
    assert "is not a subclass of methods.base.Method" in registry.broken_plugins()[0].error
    assert "bprmf" in registry.available()


# --- provenance and bundles ------------------------------------------------------------------
SPEC = """
[experiment]
name = "plugin_bundles"
seeds = [0]

[datasets.syn]
loader = "synthetic"
preset = "quickstart"
n_users = 150
n_items = [200, 120, 150]
n_interactions = [1500, 800, 900]

[protocol]
negatives = 49
ks = [10]

[methods.plug]
kind = "plugin_pop"
"""


def test_a_plugin_bundle_imports_where_the_plugin_is_installed_only(site, tmp_path):
    popularity_plugin(site, "cdr-harness-plugpop", "0.3.1", "plugpop", "plugin_pop")
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC, encoding="utf-8")
    summary = run_spec(load_spec(spec), tmp_path / "out", device="cpu")
    assert (summary.done, summary.failed) == (1, 0)
    # the cell row records the distribution; its identity holds the method's own version only
    con = connect_read_only(tmp_path / "out" / "results.duckdb")
    try:
        row = con.execute(
            "SELECT method_distribution, method_distribution_version, code_version FROM cells"
        ).fetchall()
    finally:
        con.close()
    assert row == [("cdr-harness-plugpop", "0.3.1", code_version("plugin_pop"))]
    assert code_version("plugin_pop").startswith("plugin_pop v3;")
    exported = cli("export", spec, "--results", tmp_path / "out", "--out", tmp_path / "bundles")
    assert exported.exit_code == 0, exported.output
    (bundle,) = (tmp_path / "bundles").glob("*.parquet")
    meta = json.loads(pq.read_schema(bundle).metadata[META_KEY])
    assert meta["cell"]["method_distribution"] == "cdr-harness-plugpop"
    assert meta["cell"]["method_distribution_version"] == "0.3.1"
    assert "0.3.1" not in json.dumps(meta["identity"])

    installed = cli("import", tmp_path / "bundles", "--spec", spec, "--out", tmp_path / "a")
    assert installed.exit_code == 0, installed.output
    assert "1 imported" in installed.output

    site.uninstall("cdr-harness-plugpop", "plugpop")
    with pytest.raises(UnknownMethod):
        get_method("plugin_pop")
    # a fresh store of the same data, through a spec without the plugin method
    builtin_spec = tmp_path / "builtin.toml"
    builtin_spec.write_text(SPEC.replace('"plugin_pop"', '"popularity"'), encoding="utf-8")
    missing = cli("import", tmp_path / "bundles", "--spec", builtin_spec, "--out", tmp_path / "b")
    assert missing.exit_code == 3, missing.output
    flat = " ".join(missing.output.split())  # the console may wrap the line
    assert (
        "method kind 'plugin_pop' is not installed: pip install cdr-harness-plugpop "
        "(the cell was computed with cdr-harness-plugpop 0.3.1)"
    ) in flat


def test_an_older_plugin_version_with_the_same_method_version_reuses_the_cells(site, tmp_path):
    """Cell ids depend on the method's ``version``, never on the distribution's."""
    popularity_plugin(site, "cdr-harness-plugpop", "0.3.1", "plugpop_a", "plugin_pop")
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC, encoding="utf-8")
    loaded = load_spec(spec)
    before = plan_status(loaded, tmp_path / "none.duckdb")["cell_id"].to_list()
    site.uninstall("cdr-harness-plugpop", "plugpop_a")
    popularity_plugin(site, "cdr-harness-plugpop", "0.4.0", "plugpop_b", "plugin_pop")
    assert plan_status(loaded, tmp_path / "none.duckdb")["cell_id"].to_list() == before


# --- joining the published Douban leaderboard ------------------------------------------------
DOUBAN_HEADER = f"""
[experiment]
name = "douban_itemknn"
seeds = [0, 1, 2]
results = ["{REPO / "leaderboard" / "douban"}"]

[datasets.douban]
dataset = "douban"
domains = ["books", "music"]
keep_users = "all_domains"

[protocol]
split = "leave_one_out"
split_seed = 0
negatives = 99
ks = [10, 20]
ties = "expected"
full_ranking = true
"""

# Quick params, so these are new cells (the shipped spec's ItemKNN cells are published).
ITEMKNN = """
[methods.itemknn_quick]
kind = "itemknn"
label = "ItemKNN (k = 20)"
[methods.itemknn_quick.params]
k = 20
"""


def test_a_plugin_joins_the_published_douban_leaderboard(tmp_path, douban_home):
    """The published methods plus the plugin plan exactly the plugin's three cells; one is
    trained, exported, and a fresh store importing published + new bundles reports its row."""
    try:
        importlib.metadata.distribution("cdr-harness-itemknn")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("the example plugin is not installed: pip install -e examples/plugin-itemknn")
    shipped = (REPO / "specs" / "douban.toml").read_text(encoding="utf-8")
    methods = shipped[shipped.index("[methods.") :]  # the published methods, as shipped
    frames, specs = {}, {}
    for name, text in {"published": methods, "plugin": methods + ITEMKNN}.items():
        specs[name] = tmp_path / f"{name}.toml"
        specs[name].write_text(DOUBAN_HEADER + text, encoding="utf-8")
        frames[name] = plan_status(load_spec(specs[name]), tmp_path / "none.duckdb", device="cpu")
    before, after = frames["published"], frames["plugin"]
    published_ids = {path.stem for path in (REPO / "leaderboard" / "douban").glob("*.parquet")}
    # the published cells are found (same data, protocol and candidates) ...
    in_bundle = set(before.filter(pl.col("status") == "in bundle")["cell_id"])
    assert len(in_bundle) >= 39 and in_bundle <= published_ids  # 13 methods x 3 seeds
    # ... and adding the plugin adds exactly its three cells, one per seed, all to train
    added = after.filter(~pl.col("cell_id").is_in(before["cell_id"].to_list()))
    assert added.height == 3 and after.height == before.height + 3
    assert set(added["method"]) == {"itemknn_quick"} and sorted(added["seed"]) == [0, 1, 2]
    assert set(added["status"]) == {"pending"} and not set(added["cell_id"]) & published_ids
    unchanged = after.filter(pl.col("method") != "itemknn_quick").select("cell_id", "status")
    assert unchanged.equals(before.select("cell_id", "status"))
    # train one of them (the published cells are imported, not retrained), export, re-import
    out = tmp_path / "out"
    ran = cli("run", specs["plugin"], "--out", out, "--only", "itemknn_quick", "--seed", "0",
              "--no-report", "--device", "cpu")  # fmt: skip
    assert ran.exit_code == 0 and "done 1 ran" in ran.output, ran.output
    new = tmp_path / "new_bundles"
    exported = cli("export", specs["plugin"], "--results", out, "--out", new,
                   "--only", "itemknn_quick")  # fmt: skip
    assert exported.exit_code == 0 and len(list(new.glob("*.parquet"))) == 1, exported.output
    fresh = tmp_path / "fresh"
    imported = cli("import", REPO / "leaderboard" / "douban", new, "--spec", specs["plugin"],
                   "--out", fresh)  # fmt: skip
    assert imported.exit_code == 0 and "0 rejected" in imported.output, imported.output
    report = cli("report", specs["plugin"], "--out", fresh, "--bootstrap", "100")
    assert report.exit_code == 0, report.output
    page = (fresh / "report" / "dataset-douban.html").read_text(encoding="utf-8")
    assert "ItemKNN (k = 20)" in page and "UCLR" in page
