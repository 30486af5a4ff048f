"""Reference pages of the documentation site, generated from the code.

Three pages under ``docs/reference/`` are never written by hand:

* ``spec.md``: every key of an experiment spec, read from the pydantic models of
  :mod:`harness.spec.schema` (type, default, bounds, description), with each dataset loader's
  option model and the search options;
* ``methods.md``: every registered method (:mod:`methods.registry`) with its family, version,
  paper and typed ``Params``;
* ``sql.md``: every table and view of a results store with its columns and types, read from a
  real store created by :class:`harness.store.store.Store`, and the purpose of each written as
  the SQL comment right above its ``CREATE`` statement in ``harness/store/*.sql``.

The CLI reference (``docs/reference/cli.md``) is rendered by mkdocs-click at build time from
:data:`cli` (typer's click command), so it needs no generated file.

Regenerate after changing a spec key, a method parameter, a view or a table::

    .venv/bin/python -m harness.docgen            # rewrite the pages
    .venv/bin/python -m harness.docgen --check    # exit 1 and name the stale pages

``tests/test_docs.py`` fails while a committed page differs from what this module renders.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import re
import sys
import tempfile
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

__all__ = [
    "PAGES",
    "REGENERATE",
    "FieldDoc",
    "SqlObject",
    "built_in_methods",
    "click_command",
    "main",
    "method_field_docs",
    "render",
    "render_methods",
    "render_spec",
    "render_sql",
    "spec_field_docs",
    "sql_objects",
    "stale_pages",
    "write",
]

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = ".venv/bin/python -m harness.docgen"
_STORE_SQL = ("schema.sql", "views.sql", "search_views.sql")


def __getattr__(name: str) -> Any:
    """``cli``: the ``harness`` command tree as click objects, built on first use so that
    importing this module stays cheap; mkdocs-click renders the CLI page from it."""
    if name == "cli":
        return click_command()
    raise AttributeError(name)


def click_command() -> Any:
    """typer's command for the ``harness`` app (``typer.main.get_command(app)``) as plain
    ``click`` objects, for mkdocs-click.

    Recent typer builds its commands on a vendored copy of click's core whose parameters are
    not ``click.Option`` instances and carry no click type, so mkdocs-click would list no
    option at all. Names, flags, defaults, bounds, help texts and the tree of subcommands are
    copied one to one; argument help, which click has no place for, is added to the command's
    description as a table.
    """
    import typer

    from harness.cli import app

    return _to_click(typer.main.get_command(app), "harness")


def _click_type(param: Any) -> Any:
    import click

    own = getattr(param, "type", None)
    if isinstance(own, click.ParamType):
        return own
    descriptor = getattr(param, "type_descriptor", None)
    annotation = getattr(descriptor, "annotation", str)
    if typing.get_origin(annotation) in (list, tuple, set):
        annotation = (typing.get_args(annotation) or (str,))[0]
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if typing.get_origin(annotation) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(annotation)])
    if annotation is bool:
        return click.BOOL
    if annotation is int:
        return click.IntRange(low, high) if low is not None or high is not None else click.INT
    if annotation is float:
        ranged = low is not None or high is not None
        return click.FloatRange(low, high) if ranged else click.FLOAT
    if annotation is Path:
        return click.Path()
    return click.STRING


def _prose(text: str) -> str:
    """Help text as Markdown prose: ``<`` outside code spans escaped, so that ``<name>`` is
    shown rather than read as an HTML tag."""
    parts = text.split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;") for i, p in enumerate(parts))


def _help_cell(text: str | None) -> str | None:
    return _prose(_cell(text)) if text else text


def _to_click(command: Any, name: str) -> Any:
    import click

    params: list[Any] = []
    arguments: list[tuple[str, str]] = []
    for param in command.params:
        multiple = bool(getattr(param, "multiple", False))
        if getattr(param, "param_type_name", "") == "argument" or not param.opts[0].startswith("-"):
            nargs = -1 if multiple or getattr(param, "nargs", 1) == -1 else 1
            params.append(
                click.Argument(
                    [param.name], required=param.required, nargs=nargs, type=_click_type(param)
                )
            )
            arguments.append((param.name.upper(), getattr(param, "help", "") or ""))
            continue
        flag = bool(getattr(param, "is_flag", False))
        decls = [param.name, *param.opts]
        if flag and param.secondary_opts:
            decls = [param.name, f"{param.opts[0]}/{param.secondary_opts[0]}"]
        params.append(
            click.Option(
                decls,
                type=None if flag else _click_type(param),
                is_flag=flag,
                multiple=multiple,
                default=param.default,
                required=param.required,
                hidden=bool(getattr(param, "hidden", False)),
                help=_help_cell(getattr(param, "help", None)),
            )
        )
    text = _prose(inspect.cleandoc(command.help or ""))
    if arguments:
        rows = [f"| `{arg}` | {_cell(doc)} |" for arg, doc in arguments]
        text += "\n\n**Arguments:**\n\n| Name | Description |\n| ---- | ----------- |\n"
        text += "\n".join(rows)
    common = {
        "help": text,
        "hidden": bool(getattr(command, "hidden", False)),
        "add_help_option": False,  # every command takes --help; the page says so once
    }
    subcommands = getattr(command, "commands", None)
    if subcommands:
        group = click.Group(name, params=params, **common)
        for sub_name, sub in subcommands.items():
            group.add_command(_to_click(sub, sub_name), sub_name)
        return group
    return click.Command(name, params=params, **common)


# ---------------------------------------------------------------------------------------------
# Rendering of types, defaults and bounds


def type_text(annotation: Any) -> str:
    """A field's type as a reader of TOML and Python both understand it."""
    if annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin is typing.Literal:
        return " | ".join(value_text(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin in (list, tuple, set, frozenset, dict):
        if not args:
            return origin.__name__
        inner = ", ".join("..." if a is Ellipsis else type_text(a) for a in args)
        return f"{origin.__name__}[{inner}]"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "table"
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def value_text(value: Any) -> str:
    """A default value written the way a TOML spec would write it."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if math.isnan(value):
            return "nan"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple | set | frozenset):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{k} = {value_text(v)}" for k, v in value.items()) + " }"
    if isinstance(value, BaseModel):
        return "(table)"
    return repr(value)


_BOUNDS: tuple[tuple[type, str, str], ...] = (
    (annotated_types.Gt, "gt", "> {}"),
    (annotated_types.Ge, "ge", "≥ {}"),
    (annotated_types.Lt, "lt", "< {}"),
    (annotated_types.Le, "le", "≤ {}"),
    (annotated_types.MultipleOf, "multiple_of", "multiple of {}"),
    (annotated_types.MinLen, "min_length", "at least {} entries"),
    (annotated_types.MaxLen, "max_length", "at most {} entries"),
)


def bounds_text(info: FieldInfo) -> str:
    """The field's numeric and length bounds (``ge``, ``lt``, ``min_length``, ...)."""
    parts = []
    for item in info.metadata:
        for kind, attr, template in _BOUNDS:
            if isinstance(item, kind):
                text = template.format(value_text(getattr(item, attr)))
                parts.append(text.replace("at least 1 entries", "not empty"))
    return ", ".join(parts)


def default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    return value_text(info.get_default(call_default_factory=True))


def _cell(text: str) -> str:
    """Text safe inside one Markdown table cell: one line, pipes escaped outside code spans
    (inside backticks Python-Markdown's tables already ignore them)."""
    parts = " ".join(text.split()).split("`")
    return "`".join(p if i % 2 else p.replace("|", "\\|") for i, p in enumerate(parts))


def _code(text: str) -> str:
    """A value as inline code; the words "required" and "unset" and nested tables stay prose."""
    if text in ("required", "unset", ""):
        return text
    if text == "(table)":
        return "see below"
    return f"`{' '.join(text.split())}`"


# ---------------------------------------------------------------------------------------------
# Field documentation shared by the spec and the methods pages


@dataclass(frozen=True)
class FieldDoc:
    """One documented key: where it lives (``owner``), its name, type, default, bounds and
    description."""

    owner: str
    name: str
    type: str
    default: str
    bounds: str
    description: str


def field_docs(model: type[BaseModel], owner: str, skip: tuple[str, ...] = ()) -> list[FieldDoc]:
    return [
        FieldDoc(
            owner=owner,
            name=name,
            type=type_text(info.annotation),
            default=default_text(info),
            bounds=bounds_text(info),
            description=" ".join((info.description or "").split()),
        )
        for name, info in model.model_fields.items()
        if name not in skip
    ]


def _field_table(docs: list[FieldDoc], links: dict[str, str] | None = None) -> list[str]:
    links = links or {}
    lines = [
        "| key | type | default | bounds | description |",
        "|---|---|---|---|---|",
    ]
    for doc in docs:
        description = doc.description
        if doc.name in links:
            description = f"{description} {links[doc.name]}".strip()
        lines.append(
            f"| `{doc.name}` | {_code(doc.type)} | {_code(doc.default)} | "
            f"{_cell(doc.bounds)} | {_cell(description)} |"
        )
    return lines


def _doc(obj: Any) -> str:
    """An object's own docstring (not inherited), cleaned; empty when it has none."""
    text = obj.__dict__.get("__doc__") if isinstance(obj, type) else obj.__doc__
    return inspect.cleandoc(text) if text else ""


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def _join_lines(paragraph: str) -> str:
    return " ".join(line.strip() for line in paragraph.splitlines())


def _header(sources: str) -> list[str]:
    return [
        f"<!-- Generated by `{REGENERATE}` from {sources}. Do not edit by hand: -->",
        "<!-- change the code and regenerate (tests/test_docs.py checks this page). -->",
        "",
    ]


# ---------------------------------------------------------------------------------------------
# Spec reference


@dataclass(frozen=True)
class _Section:
    path: str  # TOML table path, e.g. "methods.NAME.search"
    model: type[BaseModel]


def _nested_model(annotation: Any) -> tuple[type[BaseModel], bool] | None:
    """The model a field holds (directly, optionally, or as the values of a dict) and whether
    it is keyed by a name (a dict of tables)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            found = _nested_model(arg)
            if found is not None:
                return found
    if origin is dict and len(args) == 2:
        inner = _nested_model(args[1])
        if inner is not None:
            return inner[0], True
    return None


def _spec_sections() -> list[_Section]:
    """Every table of a spec, depth first from ``Spec``."""
    from harness.spec.schema import Spec

    sections: list[_Section] = []

    def walk(model: type[BaseModel], path: str) -> None:
        for name, info in model.model_fields.items():
            nested = _nested_model(info.annotation)
            if nested is None:
                continue
            child, keyed = nested
            child_path = f"{path}.{name}" if path else name
            if keyed:
                child_path += ".NAME"
            sections.append(_Section(child_path, child))
            walk(child, child_path)

    walk(Spec, "")
    return sections


def _loaders() -> list[tuple[str, type[BaseModel], str]]:
    from harness.data.loaders import LOADERS

    return [(name, spec.config_model, spec.description) for name, spec in LOADERS.items()]


def spec_field_docs() -> list[FieldDoc]:
    """Every key of a spec: the tables of ``Spec`` and the options of every dataset loader
    (their ``loader`` key is the dataset table's own)."""
    from harness.spec.schema import Spec

    docs = field_docs(Spec, "(top level)")
    for section in _spec_sections():
        docs += field_docs(section.model, f"[{section.path}]")
    for name, model, _ in _loaders():
        docs += field_docs(model, f"loader {name}", skip=("loader",))
    return docs


_SPEC_INTRO = """\
# Spec reference

An experiment is one TOML file. Every table below is checked by `harness validate` with the
models this page is generated from: unknown keys are errors (with a "did you mean"), and
values are strict, so a quoted number or boolean (`negatives = "99"`) is an error, not 99.
Types are written as in Python: `str` is a TOML string, `list[...]` an array, `dict[...]` and
`table` a TOML table; `A | B` accepts either; a default of `unset` means the key may be left
out. Relative paths resolve against the folder of the spec file.

See [Writing a spec](../specs.md) for a worked example, [Methods](methods.md) for every
method's `params`, and [Hyperparameter search](../search.md) for the `search` table.
"""


def render_spec() -> str:
    from harness.spec.schema import Spec

    lines = _header("the pydantic models of harness/spec/schema.py and harness/data/loaders")
    lines += [*_SPEC_INTRO.splitlines(), ""]
    lines += ["## Top level", ""]
    lines += [*_field_table(field_docs(Spec, "(top level)")), ""]
    for section in _spec_sections():
        lines += [f"## `[{section.path}]`", ""]
        doc = _doc(section.model)
        if doc:
            lines += [_join_lines(p) + "\n" for p in _paragraphs(doc)]
        links = {}
        if section.path == "methods.NAME":
            links["params"] = "See the [methods reference](methods.md) for each kind's keys."
        lines += [*_field_table(field_docs(section.model, section.path), links), ""]
        if section.path == "datasets.NAME":
            lines += _loader_sections()
    return "\n".join(lines).rstrip() + "\n"


def _loader_sections() -> list[str]:
    lines = [
        "### Loader options",
        "",
        "The other keys of a `[datasets.NAME]` table are the options of its loader, validated by",
        "the loader's own model (unknown keys are errors here too). Getting the files:",
        "[Getting the data](../data.md).",
        "",
    ]
    for name, model, description in _loaders():
        lines += [f'#### `loader = "{name}"`', "", description, ""]
        doc = _doc(model)
        if doc:
            lines += [_join_lines(p) + "\n" for p in _paragraphs(doc)]
        lines += [*_field_table(field_docs(model, name, skip=("loader",))), ""]
    return lines


# ---------------------------------------------------------------------------------------------
# Methods reference


_BUILT_IN = ("methods.", "uclr.")


def built_in_methods() -> dict[str, type]:
    """The registered methods that ship with the project (``methods/`` and ``uclr/``), by kind.

    Plugins installed into the environment, and methods a test registers in-process, are left
    out so that the page does not depend on what else is installed (docs/plugins.md)."""
    from methods.registry import available

    return {k: c for k, c in available().items() if c.__module__.startswith(_BUILT_IN)}


def method_field_docs() -> list[FieldDoc]:
    """Every typed parameter of every built-in method."""
    docs: list[FieldDoc] = []
    for kind, cls in built_in_methods().items():
        docs += field_docs(cls.Params, kind)
    return docs


_METHODS_INTRO = """\
# Methods reference

Every method that ships with the harness, with its typed parameters (methods installed as
plugins are listed by `harness methods`; see [Plugins](../plugins.md)). A spec selects one with
`kind = "..."` in a `[methods.NAME]` table and sets parameters in `[methods.NAME.params]`;
unknown parameters and values outside a bound are errors of `harness validate`. The defaults
are the paper's settings (embedding size 128, batch 2048, Adam 1e-3 unless a method says
otherwise). `harness methods` prints the same list in a terminal.

**version** is part of every cell's identity: a method whose results change bumps it, and its
old cells show as stale until recomputed ([Reproducibility](../reproducibility.md)).
**family** groups the rows of the report's tables (single-domain, cross-domain, ours).
Adding one: [Your method on the leaderboard](../add-a-method.md). The implementation notes cite
the project's method specifications as "methods.md §N" (the team's design notes, not shipped
with the repository) and tag reconstructed choices [RECON]: each of those is a parameter.
"""


def render_methods() -> str:
    registered = built_in_methods()
    lines = _header("the method registry (methods/registry.py) and each method's Params")
    lines += [*_METHODS_INTRO.splitlines(), ""]
    lines += ["| kind | name | family | version | paper |", "|---|---|---|---|---|"]
    for kind, cls in registered.items():
        lines.append(
            f"| [`{kind}`](#{kind}) | {_cell(cls.display_name or kind)} | {cls.family} | "
            f"{cls.version} | {_cell(getattr(cls, 'paper', '') or '–')} |"
        )
    lines.append("")
    for kind, cls in registered.items():
        doc = _doc(cls)
        paragraphs = _paragraphs(doc)
        lines += [f"## `{kind}` {{#{kind}}}", ""]
        lines += [
            f"**{_cell(cls.display_name or kind)}** · family {cls.family} · version "
            f"{cls.version} · `{cls.__module__}.{cls.__qualname__}`",
            "",
        ]
        paper = getattr(cls, "paper", "") or ""
        if paper:
            lines += [f"Paper: {paper}", ""]
        if getattr(cls, "stage_group", ""):
            lines += [
                f"Shares trained stages with the other methods of stage group "
                f"`{cls.stage_group}` (same dataset and seed): they run on one worker.",
                "",
            ]
        if paragraphs:
            lines += [_join_lines(paragraphs[0]), ""]
        params = field_docs(cls.Params, kind)
        lines += (_field_table(params) if params else ["No parameters."]) + [""]
        if len(paragraphs) > 1:
            lines += ['??? note "Implementation notes (from the class docstring)"', ""]
            lines += ["    ```text"]
            lines += [f"    {line}".rstrip() for line in "\n\n".join(paragraphs[1:]).splitlines()]
            lines += ["    ```", ""]
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# SQL reference


@dataclass(frozen=True)
class SqlObject:
    """A table or view of the results store: its columns (name, DuckDB type, comment), the
    purpose written above its CREATE statement, the file and the statement itself."""

    name: str
    kind: str  # table | view
    purpose: str
    columns: tuple[tuple[str, str, str], ...]
    source: str
    sql: str


_CREATE = re.compile(
    r"^CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP\s+)?(TABLE|VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)",
    re.IGNORECASE,
)
_COLUMN = re.compile(r"^\s+(\w+)\s+[A-Z][A-Z0-9_\[\]]*.*?(?:--\s*(.*))?$")
_ALTER = re.compile(
    r"^ALTER\s+TABLE\s+(\w+)\s+ADD\s+COLUMN\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)\s+[^;]*;\s*(?:--\s*(.*))?$",
    re.IGNORECASE,
)


@dataclass
class _Parsed:
    purpose: str
    source: str
    sql: str
    comments: dict[str, str]


def _comment_block(lines: list[str], index: int) -> str:
    """The comment lines directly above line ``index`` (no blank line between), joined."""
    block: list[str] = []
    i = index - 1
    while i >= 0 and lines[i].lstrip().startswith("--"):
        text = lines[i].strip()[2:].strip()
        if text and set(text) != {"-"}:
            block.append(text)
        i -= 1
    return " ".join(reversed(block))


def parse_store_sql() -> dict[str, _Parsed]:
    """Purpose and column comments of every CREATE in ``harness/store/*.sql``."""
    parsed: dict[str, _Parsed] = {}
    folder = Path(__file__).resolve().parent / "store"
    for filename in _STORE_SQL:
        lines = (folder / filename).read_text().splitlines()
        for index, line in enumerate(lines):
            alter = _ALTER.match(line)
            if alter and alter.group(1) in parsed and alter.group(3):
                parsed[alter.group(1)].comments.setdefault(alter.group(2), alter.group(3).strip())
            match = _CREATE.match(line)
            if not match:
                continue
            kind, name = match.group(1).lower(), match.group(2)
            end = index
            while end < len(lines) and not lines[end].rstrip().endswith(";"):
                end += 1
            body = lines[index : end + 1]
            comments: dict[str, str] = {}
            if kind == "table":
                last = None
                for row in body[1:]:
                    column = _COLUMN.match(row)
                    if column and column.group(1).upper() not in ("PRIMARY", "UNIQUE"):
                        last = column.group(1)
                        if column.group(2):
                            comments[last] = column.group(2).strip()
                    elif row.strip().startswith("--") and last in comments:
                        comments[last] += " " + row.strip()[2:].strip()
            parsed[name] = _Parsed(
                purpose=_comment_block(lines, index),
                source=f"harness/store/{filename}",
                sql="\n".join(body),
                comments=comments,
            )
    return parsed


def sql_objects() -> list[SqlObject]:
    """Every table and view of a fresh results store, as the store code creates it."""
    from harness.store.store import Store

    parsed = parse_store_sql()
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "results.duckdb") as store:
        kinds = dict(
            store.con.execute(
                "SELECT table_name, table_type FROM information_schema.tables "
                "WHERE table_schema = 'main'"
            ).fetchall()
        )
        columns: dict[str, list[tuple[str, str]]] = {}
        for table, column, dtype in store.con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
        ).fetchall():
            columns.setdefault(table, []).append((column, dtype))
    order = {name: i for i, name in enumerate(parsed)}
    objects = []
    for name in sorted(kinds, key=lambda n: (order.get(n, len(order)), n)):
        info = parsed.get(name)
        comments = info.comments if info else {}
        objects.append(
            SqlObject(
                name=name,
                kind="view" if kinds[name] == "VIEW" else "table",
                purpose=info.purpose if info else "",
                columns=tuple((c, t, comments.get(c, "")) for c, t in columns.get(name, [])),
                source=info.source if info else "",
                sql=info.sql if info else "",
            )
        )
    return objects


_SQL_INTRO = """\
# SQL reference

Every number of a run is in its DuckDB store (`results/<experiment>/results.duckdb`), one
row per user, and every table of the report is a query over the **views** below.
`harness sql "QUERY" --spec SPEC` runs a read-only query in a sandbox
([Querying results](../querying.md)). Metric values are fractions in [0, 1]; the report shows
them ×100. Prefer the views: their columns only ever grow, while the base tables may change
with the store's layout. The purpose of each object is the comment above its `CREATE`
statement in `harness/store/*.sql`.
"""


def render_sql() -> str:
    objects = sql_objects()
    lines = _header("a results store created by harness.store.store.Store and harness/store/*.sql")
    lines += [*_SQL_INTRO.splitlines(), ""]
    for kind, title in (("view", "Views"), ("table", "Base tables")):
        chosen = [o for o in objects if o.kind == kind]
        lines += [f"## {title}", "", "| name | purpose |", "|---|---|"]
        for obj in chosen:
            lines.append(f"| [`{obj.name}`](#{obj.name}) | {_cell(obj.purpose)} |")
        lines.append("")
        for obj in chosen:
            lines += [f"### `{obj.name}` {{#{obj.name}}}", ""]
            lines += [f"{obj.purpose} ({kind}, `{obj.source}`)" if obj.source else obj.purpose]
            lines += [""]
            with_comments = any(comment for _, _, comment in obj.columns)
            if with_comments:
                lines += ["| column | type | meaning |", "|---|---|---|"]
                lines += [f"| `{c}` | `{t}` | {_cell(m)} |" for c, t, m in obj.columns]
            else:
                lines += ["| column | type |", "|---|---|"]
                lines += [f"| `{c}` | `{t}` |" for c, t, _ in obj.columns]
            lines.append("")
            if kind == "view" and obj.sql:
                lines += ['??? note "SQL"', "", "    ```sql"]
                lines += [f"    {row}".rstrip() for row in obj.sql.splitlines()]
                lines += ["    ```", ""]
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# Writing and checking

PAGES: dict[str, Callable[[], str]] = {
    "docs/reference/spec.md": render_spec,
    "docs/reference/methods.md": render_methods,
    "docs/reference/sql.md": render_sql,
}


def render() -> Iterator[tuple[Path, str]]:
    """Each generated page's path and its content as the code is now."""
    for relative, renderer in PAGES.items():
        yield ROOT / relative, renderer()


def stale_pages() -> list[Path]:
    """Generated pages whose committed content differs from what the code renders now."""
    return [
        path
        for path, text in render()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]


def write() -> list[Path]:
    """Rewrite every generated page; return those whose content changed."""
    changed = []
    for path, text in render():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.docgen",
        description="Regenerate the reference pages of the docs site from the code.",
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a page is stale"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_pages()
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)} (regenerate: {REGENERATE})")
        return 1 if stale else 0
    for path in write():
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
