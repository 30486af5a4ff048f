"""Spec validation: unknown keys, wrong types, missing files and bad cross-references all yield
one precise line naming file, line and key path."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.spec.load import SpecError, load_spec

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
    sorted(p.name for p in (REPO / "specs").glob("*.toml") if p.name != "amazon.toml"),
)
def test_shipped_specs_validate(spec, shared_data):
    load_spec(REPO / "specs" / spec)


def test_shipped_amazon_spec_fails_only_for_the_missing_raw_dumps():
    with pytest.raises(SpecError) as info:
        load_spec(REPO / "specs" / "amazon.toml")
    assert all("missing data file" in i.message for i in info.value.issues)
    assert any("ratings_Books.csv" in i.message for i in info.value.issues)
