"""The configuration reference, docs/configuration.md, generated from the dataclasses in raygr/config.py.

    python -m raygr.config_reference > docs/configuration.md          # regenerate
    python -m raygr.config_reference --check docs/configuration.md    # exit 1 if it is out of date

Every key is listed with its type, its default and its meaning, and the meaning is the comment beside
the field in raygr/config.py (or the comment block just above it), read from the source with
``tokenize`` and ``ast``: the reference cannot say something the code's comments do not. A field
without a comment gets an empty meaning, which ``tests/test_config_reference.py`` refuses. No Ray,
no torch.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import json
import sys
import tokenize
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from raygr import config as config_module
from raygr.config import PRESETS, Config, config_from_dict

REGENERATE = "python -m raygr.config_reference > docs/configuration.md"

# A config file as the reference shows it; render() loads it, so the example cannot go stale.
EXAMPLE_YAML = """\
data:
  path: data/mine
model:
  preset: joint
  levels: 4
  schedule:
    strategy: sdud
train:
  epochs: 30
  num_workers: 2
"""


@dataclass(frozen=True)
class Key:
    """One leaf key of the configuration."""

    name: str  # dotted, e.g. "model.schedule.strategy"
    type: str  # for people, e.g. "int", "one of: fixed, scheduled, adaptive"
    default: str  # as it would be written in YAML
    meaning: str  # the field's comment in raygr/config.py


@dataclass(frozen=True)
class Section:
    """A dataclass of the configuration, at its dotted place (``model.schedule``)."""

    name: str
    cls: type
    meaning: str  # the class docstring, else the comment of the field that holds it
    keys: tuple[Key, ...]


# -- comments from the source ---------------------------------------------------------------------------


@functools.cache
def _source() -> tuple[ast.Module, dict[int, tuple[str, bool]]]:
    """raygr/config.py's syntax tree and its comments: line -> (text, whether the comment is the whole line)."""
    source = inspect.getsource(config_module)
    comments: dict[int, tuple[str, bool]] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            comments[row] = (tok.string.lstrip("#").strip(), not tok.line[:col].strip())
    return ast.parse(source), comments


def comment_of(first_line: int, last_line: int) -> str:
    """The comment block right above a statement (no blank line between) plus its trailing comment."""
    _, comments = _source()
    above: list[str] = []
    line = first_line - 1
    while line in comments and comments[line][1]:
        above.insert(0, comments[line][0])
        line -= 1
    trailing = [comments[n][0] for n in range(first_line, last_line + 1) if n in comments and not comments[n][1]]
    return " ".join(part for part in [*above, *trailing] if part)


def _class_def(cls: type) -> ast.ClassDef:
    tree, _ = _source()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            return node
    raise LookupError(f"class {cls.__name__} is not defined in {config_module.__file__}")


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> its comment in raygr/config.py ('' when it has none)."""
    out = {}
    for node in _class_def(cls).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = comment_of(node.lineno, node.end_lineno or node.lineno)
    return {f.name: out.get(f.name, "") for f in dataclasses.fields(cls)}


def class_doc(cls: type) -> str:
    """The first paragraph of a class's own docstring ('' without one; dataclasses invent a __doc__)."""
    doc = ast.get_docstring(_class_def(cls)) or ""
    return " ".join(doc.split("\n\n")[0].split())


def preset_comments() -> dict[str, str]:
    """Preset name -> the comment block above its entry in ``PRESETS``."""
    tree, _ = _source()
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(target, ast.Name) and target.id == "PRESETS" and isinstance(node.value, ast.Dict):
            return {k.value: comment_of(k.lineno, k.lineno) for k in node.value.keys
                    if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    raise LookupError(f"PRESETS is not a literal dict in {config_module.__file__}")


# -- types, defaults and the walk over the dataclasses --------------------------------------------------


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of: " + ", ".join(map(str, typing.get_args(tp)))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        rest = " or ".join(type_name(a) for a in args)
        return f"{rest} or null" if len(args) < len(typing.get_args(tp)) else rest
    if origin is dict or tp is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def yaml_value(value: Any) -> str:
    """A value as it is written in a YAML config file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return json.dumps(dict(value)) if value else "{}"
    return repr(value)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise ValueError(f"config field {f.name} has no default")


def sections(cls: type = Config, prefix: str = "", meaning: str = "") -> list[Section]:
    """Every dataclass under ``cls`` as a Section, depth first in field order (``model`` before ``model.loss``)."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    keys, nested = [], []
    for f in dataclasses.fields(cls):
        tp, name = hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            nested.append((tp, name, comments[f.name]))
        else:
            keys.append(Key(name, type_name(tp), yaml_value(_default(f)), comments[f.name]))
    out = []
    if prefix:
        out.append(Section(prefix.rstrip("."), cls, class_doc(cls) or meaning, tuple(keys)))
    for tp, name, comment in nested:
        out += sections(tp, f"{name}.", comment)
    return out


def all_keys() -> list[Key]:
    return [k for s in sections() for k in s.keys]


def _flatten(values: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in values.items():
        if isinstance(v, Mapping) and k != "space":
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


# -- Markdown -------------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _intro() -> list[str]:
    config_from_dict(yaml.safe_load(EXAMPLE_YAML))  # the example must be a valid config
    return [
        "# Configuration reference",
        "",
        f"<!-- Generated from raygr/config.py by `{REGENERATE}`. Do not edit by hand: -->",
        "<!-- change the field comments in raygr/config.py and regenerate. -->",
        "",
        "Generated from the frozen dataclasses in `raygr/config.py`, whose field comments are the meanings",
        f"below. Regenerate with `{REGENERATE}`; `tests/test_config_reference.py` fails while this",
        "file and the code disagree.",
        "",
        "A config is a YAML file with the sections `data`, `model`, `train`, `tune` and `serve`; it lists only",
        "what it changes. `raygr train`, `raygr tune` and `raygr demo` take it with `--config FILE`, and",
        "dotted overrides with `--set key=value` (repeatable; the value is parsed as YAML). They apply in",
        "this order: the defaults below, then the preset named by `model.preset` (see [Presets](#presets)),",
        "then the file, then `--set`. An unknown key or an out-of-range value stops the command before any",
        "work starts, naming the key. Every run writes its resolved config as `config.yaml` in the run",
        "directory and in each checkpoint. A file can start from another with a top-level",
        "`extends: other.yaml` (a path relative to the file), then list only what it changes.",
        "",
        "```yaml",
        *EXAMPLE_YAML.rstrip("\n").split("\n"),
        "```",
        "",
        "```bash",
        "raygr train --config mine.yaml --output runs/mine --set model.schedule.strategy=frqud --set train.lr=1e-3",
        "```",
        "",
        "`raygr serve` reads only `serve.*` (from `--config` and `--set serve.KEY=VALUE`): the model's",
        "settings come from the checkpoint. `raygr evaluate --set` changes evaluation-time keys such as",
        "`train.beam_size`.",
        "",
    ]


def _section(s: Section) -> list[str]:
    depth = "#" * (2 + s.name.count("."))
    rows = [[_code(k.name), k.type, _code(k.default), _sentence(k.meaning)] for k in s.keys]
    table = _table(["key", "type", "default", "meaning"], rows)
    return [f"{depth} `{s.name}`", "", _sentence(s.meaning), "", *table, ""]


def _presets() -> list[str]:
    defaults = {k.name: k.default for k in all_keys()}
    comments = preset_comments()
    changes = {p: dict(_flatten(v)) for p, v in PRESETS.items()}
    lines = ["## Presets", "",
             "`model.preset` picks the model and its training recipe and first applies the preset's values below",
             "(a config file and `--set` still override them).", ""]
    for p in PRESETS:
        none = "" if changes[p] else " It changes no key: these are the defaults above."
        lines.append(f"- `{p}`: {_sentence(comments.get(p, ''))}{none}")
    changing = [p for p in PRESETS if changes[p]]
    keys = list(dict.fromkeys(k for p in changing for k in changes[p]))
    rows = [[_code(k), _code(defaults[k]), *[_code(yaml_value(changes[p][k])) if k in changes[p] else ""
                                             for p in changing]] for k in keys]
    lines += ["", *_table(["key", "default", *[f"`{p}`" for p in changing]], rows), ""]
    return lines


def _notes() -> list[str]:
    from raygr.training.checkpoint import MODEL_SHAPE_KEYS
    from raygr.tuning.space import FIXED_KEYS, FIXED_SECTIONS

    fixed = [[_code(k), why] for k, why in FIXED_KEYS.items()]
    return [
        "## Keys with rules of their own", "",
        "A checkpoint loads (`raygr evaluate`, `raygr serve`, resuming `raygr train`) only with the values it was",
        "trained with for the keys that shape the model: "
        + ", ".join(_code(k) for k in MODEL_SHAPE_KEYS) + ".",
        "",
        "`tune.space` may search any `data.*`, `model.*` or `train.*` key except these (the "
        + " and ".join(_code(s) for s in FIXED_SECTIONS) + " sections are never searched):",
        "",
        *_table(["key", "why not"], fixed),
        "",
    ]


def render() -> str:
    """docs/configuration.md."""
    lines = _intro()
    for s in sections():
        lines += _section(s)
    lines += _presets()
    lines += _notes()
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raygr.config_reference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", metavar="PATH", help="exit 1 if PATH differs from what this module generates")
    args = parser.parse_args(argv)
    text = render()
    if args.check is None:
        sys.stdout.write(text)
        return 0
    path = Path(args.check)
    if not path.is_file() or path.read_text() != text:
        state = "is missing" if not path.is_file() else "is out of date with raygr/config.py"
        print(f"{path} {state}; regenerate it: python -m raygr.config_reference > {path}", file=sys.stderr)
        return 1
    print(f"{path} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
