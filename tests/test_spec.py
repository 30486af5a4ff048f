"""Spec validation: unknown keys, wrong types, missing files and bad cross-references all yield
one precise line naming file, line and key path."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.spec.load import DataMissing, SpecError, load_spec
from tests.conftest import real_data_home, require_spec_data

REPO = Path(__file__).resolve().parents[1]

GOOD = """
[experiment]
name = "t"
seeds = [0, 1]

[datasets.syn]
loader = "synthetic"
preset = "quickstart"

[protocol]
negatives = 99
ks = [10, 20]

[methods.bprmf]
kind = "bprmf"
[methods.bprmf.params]
embedding_size = 16
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def _issues(tmp_path: Path, text: str) -> list:
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, text))
    return info.value.issues


def test_good_spec_loads_with_typed_params(tmp_path):
    loaded = load_spec(_write(tmp_path, GOOD))
    assert loaded.method_params["bprmf"].embedding_size == 16
    assert loaded.method_params["bprmf"].batch_size == 2048  # default filled in
    assert len(loaded.spec_hash) == 16


def test_unknown_param_key_suggests_the_right_name_and_line(tmp_path):
    text = GOOD.replace("embedding_size = 16", "embeding_size = 16")
    (issue,) = _issues(tmp_path, text)
    assert issue.loc == ("methods", "bprmf", "params", "embeding_size")
    assert "did you mean 'embedding_size'" in issue.message
    assert issue.line == text.splitlines().index("embeding_size = 16") + 1
    assert str(issue).startswith(f"{tmp_path / 'spec.toml'}:{issue.line}: methods.bprmf.params")


def test_unknown_top_level_and_section_keys(tmp_path):
    issues = _issues(tmp_path, GOOD.replace("[protocol]", "[protocl]"))
    assert any("did you mean 'protocol'" in i.message for i in issues)
    issues = _issues(tmp_path, GOOD.replace("ks = [10, 20]", "ks = [10, 20]\nnegatves = 3"))
    assert any(i.loc == ("protocol", "negatves") and "negatives" in i.message for i in issues)


def test_wrong_types_are_reported_with_the_value(tmp_path):
    issues = _issues(tmp_path, GOOD.replace("embedding_size = 16", 'embedding_size = "big"'))
    assert issues[0].loc == ("methods", "bprmf", "params", "embedding_size")
    assert "'big'" in issues[0].message
    issues = _issues(tmp_path, GOOD.replace("seeds = [0, 1]", "seeds = 3"))
    assert issues[0].loc == ("experiment", "seeds")


def test_unknown_method_kind_and_loader(tmp_path):
    issues = _issues(tmp_path, GOOD.replace('kind = "bprmf"', 'kind = "bprfm"'))
    assert "did you mean 'bprmf'" in issues[0].message
    issues = _issues(tmp_path, GOOD.replace('loader = "synthetic"', 'loader = "synthetc"'))
    assert issues[0].loc == ("datasets", "syn", "loader") and "synthetic" in issues[0].message


def test_k_larger_than_the_candidate_list(tmp_path):
    issues = _issues(tmp_path, GOOD.replace("negatives = 99", "negatives = 9"))
    assert any(i.loc == ("protocol", "ks") and "K=20 exceeds" in i.message for i in issues)


def test_method_referring_to_a_missing_dataset_or_domain(tmp_path):
    text = GOOD.replace('kind = "bprmf"', 'kind = "bprmf"\ndatasets = ["syn", "dbn"]')
    issues = _issues(tmp_path, text)
    assert any(i.loc == ("methods", "bprmf", "datasets") and "'dbn'" in i.message for i in issues)
    text = GOOD.replace('preset = "quickstart"', 'preset = "quickstart"\ndomains = ["books"]')
    text = text.replace('kind = "bprmf"', 'kind = "bprmf"\ndomains = ["music"]')
    issues = _issues(tmp_path, text)
    assert any(i.loc == ("methods", "bprmf", "domains") and "'music'" in i.message for i in issues)


def test_missing_data_file_names_the_path_it_looked_at(tmp_path):
    text = GOOD.replace(
        'loader = "synthetic"\npreset = "quickstart"',
        'loader = "douban"\npath = "nowhere"\ndomains = ["books"]',
    )
    issues = _issues(tmp_path, text)
    assert issues[0].loc[:2] == ("datasets", "syn")
    assert str(tmp_path / "nowhere") in issues[0].message


def test_toml_syntax_error_has_a_line(tmp_path):
    (issue,) = _issues(tmp_path, GOOD.replace("[protocol]", "[protocol"))
    assert issue.line is not None and "invalid TOML" in issue.message


def test_cli_prints_one_line_per_problem_without_traceback(tmp_path):
    path = _write(tmp_path, GOOD.replace("embedding_size = 16", "embeding_size = 16"))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "did you mean 'embedding_size'" in lines[0]


@pytest.mark.parametrize(
    "spec",
    sorted(
        p.name
        for p in (REPO / "specs").glob("*.toml")
        if p.name not in ("amazon.toml", "douban3.toml")  # their data is not mirrored here
    ),
)
def test_shipped_specs_validate(spec):
    require_spec_data(REPO / "specs" / spec)
    load_spec(REPO / "specs" / spec)


def test_shipped_amazon_spec_fails_only_for_the_missing_raw_dumps(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path))  # an empty data home
    with pytest.raises(DataMissing) as info:
        load_spec(REPO / "specs" / "amazon.toml")
    (issue,) = info.value.issues
    assert "ratings_Books.csv" in issue.message
    assert "harness data fetch amazon-2014" in issue.message
    assert "specs/amazon_synthetic.toml" in issue.message


def test_shipped_douban3_spec_needs_only_the_movies_file(monkeypatch):
    load_spec(REPO / "specs" / "douban3.toml", check_files=False)  # keys, methods, params
    home = real_data_home("douban")  # books + music present: only movies.tsv can be missing
    if (home / "douban" / "movies.tsv").is_file():
        pytest.skip("the data home holds the Douban movies: nothing is missing")
    with pytest.raises(DataMissing) as info:
        load_spec(REPO / "specs" / "douban3.toml")
    (issue,) = info.value.issues
    assert "movies.tsv" in issue.message and "harness data fetch douban-movies" in issue.message


# --- strict types, K messages and checks that need the data (issue 12) ----------------------


@pytest.mark.parametrize(
    ("old", "new", "loc"),
    [
        ("negatives = 99", 'negatives = "99"', ("protocol", "negatives")),
        ("ks = [10, 20]", 'ks = [10, 20]\nfull_ranking = "yes"', ("protocol", "full_ranking")),
        ("seeds = [0, 1]", 'seeds = ["0", 1]', ("experiment", "seeds", 0)),
        ("negatives = 99", "negatives = 99.0", ("protocol", "negatives")),
        ("ks = [10, 20]", "ks = [10, 20]\nsplit_seed = true", ("protocol", "split_seed")),
    ],
)
def test_strings_and_floats_are_not_coerced(tmp_path, old, new, loc):
    issues = _issues(tmp_path, GOOD.replace(old, new))
    assert [i.loc for i in issues] == [loc]
    assert issues[0].line == GOOD.replace(old, new).splitlines().index(new.splitlines()[-1]) + 1


def test_zero_and_negative_k_get_the_same_message(tmp_path):
    (zero,) = _issues(tmp_path, GOOD.replace("ks = [10, 20]", "ks = [0]"))
    (negative,) = _issues(tmp_path, GOOD.replace("ks = [10, 20]", "ks = [-3]"))
    assert zero.loc == negative.loc == ("protocol", "ks")
    assert zero.message.replace("[0]", "X") == negative.message.replace("[-3]", "X")
    assert "cut-offs must be >= 1" in zero.message


def _validate(tmp_path: Path, text: str):
    path = _write(tmp_path, text)
    return CliRunner().invoke(app, ["validate", str(path)])


DOUBAN_FIXTURE = (REPO / "tests" / "fixtures" / "douban3").as_posix()


def test_validate_rejects_more_negatives_than_a_domain_has_items(tmp_path):
    text = (
        GOOD.replace(
            'loader = "synthetic"\npreset = "quickstart"',
            f'loader = "douban"\npath = "{DOUBAN_FIXTURE}"',
        )
        .replace("negatives = 99", "negatives = 3\nvalidation_k = 1")
        .replace("ks = [10, 20]", "ks = [1]")
    )
    result = _validate(tmp_path, text)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    line = text.splitlines().index("negatives = 3") + 1
    assert all(f"spec.toml:{line}: protocol.negatives: 3 negatives" in x for x in lines), lines
    assert len(lines) == 2 and "domain 'movies'" in lines[0] and "domain 'music'" in lines[1]
    ok = _validate(tmp_path, text.replace("negatives = 3", "negatives = 1"))
    assert ok.exit_code == 0, ok.output


def test_validate_rejects_negatives_on_synthetic_data(tmp_path):
    result = _validate(tmp_path, GOOD.replace("negatives = 99", "negatives = 5000"))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "protocol.negatives: 5000 negatives cannot be drawn" in result.output


def test_validate_rejects_a_method_domain_the_loaded_dataset_lacks(tmp_path):
    text = (
        GOOD.replace(
            'loader = "synthetic"\npreset = "quickstart"',
            f'loader = "douban"\npath = "{DOUBAN_FIXTURE}"',
        )
        .replace("negatives = 99", "negatives = 1\nvalidation_k = 1")
        .replace("ks = [10, 20]", "ks = [1]")
    )
    text = text.replace('kind = "bprmf"', 'kind = "bprmf"\ndomains = ["movie"]')
    result = _validate(tmp_path, text)
    assert result.exit_code == 2, result.output
    line = text.splitlines().index('domains = ["movie"]') + 1
    assert f"spec.toml:{line}: methods.bprmf.domains" in result.output
    assert "did you mean 'movies'" in result.output
    # a pair's domains are known without loading: load_spec reports it already
    pairs = GOOD.replace(
        'loader = "synthetic"\npreset = "quickstart"',
        'loader = "amazon_pairs"\npath = "nowhere"\npair = "cloth_sport"',
    ).replace('kind = "bprmf"', 'kind = "bprmf"\ndomains = ["clothes"]')
    issues = _issues(tmp_path, pairs)
    assert any(i.loc == ("methods", "bprmf", "domains") and "'cloth'" in i.message for i in issues)


def test_loader_options_are_strict_too(tmp_path):
    text = GOOD.replace('preset = "quickstart"', 'preset = "quickstart"\nseed = "1"')
    (issue,) = _issues(tmp_path, text)
    assert issue.loc == ("datasets", "syn", "seed") and "'1'" in issue.message
    assert issue.line == text.splitlines().index('seed = "1"') + 1
    douban = GOOD.replace(
        'loader = "synthetic"\npreset = "quickstart"',
        f'loader = "douban"\npath = "{DOUBAN_FIXTURE}"\nmin_rating = "3"\non_bad_rows = "ignore"',
    )
    issues = _issues(tmp_path, douban)
    assert {i.loc for i in issues} == {
        ("datasets", "syn", "min_rating"),
        ("datasets", "syn", "on_bad_rows"),
    }


def test_run_time_domain_check_has_a_line_too(tmp_path):
    """Domains known only after loading (interactions loader): `plan`/`run` name the line."""
    data = tmp_path / "x.csv"
    data.write_text("user,item,domain\nu1,i1,books\nu1,i2,books\nu2,i1,books\nu2,i3,books\n")
    text = (
        GOOD.replace(
            'loader = "synthetic"\npreset = "quickstart"',
            f'loader = "interactions"\npath = "{data.as_posix()}"',
        )
        .replace("negatives = 99", "negatives = 1\nvalidation_k = 1")
        .replace("ks = [10, 20]", "ks = [1]")
        .replace('kind = "bprmf"', 'kind = "bprmf"\ndomains = ["music"]')
    )
    path = _write(tmp_path, text)
    line = text.splitlines().index('domains = ["music"]') + 1
    result = CliRunner().invoke(app, ["plan", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert f"spec.toml:{line}: methods.bprmf.domains" in result.output


def test_validate_reports_a_loader_value_error_as_one_line(tmp_path):
    data = tmp_path / "x.csv"
    data.write_text("user,item,domain\nu1,i1,books\nu2,i1,books\n")
    text = (
        GOOD.replace(
            'loader = "synthetic"\npreset = "quickstart"',
            f'loader = "interactions"\npath = "{data.as_posix()}"\ndomains = ["music"]',
        )
        .replace('kind = "bprmf"', 'kind = "popularity"')
        .replace("[methods.bprmf.params]\nembedding_size = 16\n", "")
    )
    result = _validate(tmp_path, text)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert ": datasets.syn: x.csv: domains ['music'] have no rows" in lines[0]


def test_run_time_negatives_check_is_one_line_with_a_line(tmp_path):
    data = tmp_path / "x.csv"
    data.write_text("user,item,domain\nu1,i1,books\nu1,i2,books\nu2,i1,books\nu2,i3,books\n")
    text = (
        GOOD.replace(
            'loader = "synthetic"\npreset = "quickstart"',
            f'loader = "interactions"\npath = "{data.as_posix()}"',
        )
        .replace("negatives = 99", "negatives = 2\nvalidation_k = 1")
        .replace("ks = [10, 20]", "ks = [1]")
    )
    path = _write(tmp_path, text)
    line = text.splitlines().index("negatives = 2") + 1
    result = CliRunner().invoke(app, ["plan", str(path), "--out", str(tmp_path / "out")])
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert f"spec.toml:{line}: protocol.negatives: dataset 'syn': domain 'books'" in lines[0]


def test_method_params_are_strict_but_arrays_fill_tuples(tmp_path):
    text = GOOD.replace("embedding_size = 16", 'embedding_size = 16\nmax_epochs = "200"')
    (issue,) = _issues(tmp_path, text)
    assert issue.loc == ("methods", "bprmf", "params", "max_epochs") and "'200'" in issue.message
    assert issue.line == text.splitlines().index('max_epochs = "200"') + 1
    neumf = GOOD.replace('kind = "bprmf"', 'kind = "neumf"').replace(
        "embedding_size = 16", "mlp_layers = [64, 32]"
    )
    loaded = load_spec(_write(tmp_path, neumf))  # a TOML array for a tuple field is fine
    assert tuple(loaded.method_params["bprmf"].mlp_layers) == (64, 32)
    issues = _issues(tmp_path, neumf.replace("[64, 32]", '["64", 32]'))
    assert [i.loc for i in issues] == [("methods", "bprmf", "params", "mlp_layers", 0)]
