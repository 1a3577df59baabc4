"""docs/configuration.md is generated from raygr/config.py and cannot drift from it (no Ray, milliseconds)."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from raygr.config import PRESETS, Config
from raygr.config_reference import REGENERATE, all_keys, field_comments, main, render, sections

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def _dataclasses(cls: type = Config) -> list[type]:
    hints = typing.get_type_hints(cls)
    out = [cls]
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += _dataclasses(hints[f.name])
    return out


def _leaf_keys(cls: type = Config, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        out += _leaf_keys(tp, f"{prefix}{f.name}.") if dataclasses.is_dataclass(tp) else [f"{prefix}{f.name}"]
    return out


def test_docs_configuration_md_is_the_generated_reference():
    assert DOC.is_file(), f"docs/configuration.md is missing: {REGENERATE}"
    assert DOC.read_text() == render(), f"docs/configuration.md is out of date with raygr/config.py: {REGENERATE}"


def test_every_key_appears_with_its_default():
    text = render()
    keys = {k.name: k for k in all_keys()}
    assert sorted(keys) == sorted(_leaf_keys())
    for name in _leaf_keys():
        assert f"| `{name}` |" in text, name
    for section in ("data", "model", "model.schedule", "model.loss", "train", "tune", "serve"):
        assert f"`{section}`\n" in text, section
    assert keys["model.schedule.strategy"].default == "exponential" and "sdud" in keys["model.schedule.strategy"].type
    assert keys["train.lr"].default == "0.002" and keys["data.path"].default == "null"
    assert keys["tune.space"].default == "{}" and keys["serve.use_gpu"].default == "false"


def test_every_field_and_section_has_a_meaning_from_the_source():
    for cls in _dataclasses():
        missing = [name for name, text in field_comments(cls).items() if not text]
        assert not missing, f"fields of {cls.__name__} without a comment in raygr/config.py: {missing}"
    for s in sections():
        assert s.meaning, s.name
        assert all(k.meaning for k in s.keys)
    # A trailing comment and a comment block above a field are both read.
    keys = {k.name: k for k in all_keys()}
    assert keys["model.dim"].meaning == "model width D"
    assert keys["model.target_assign_grad"].meaning.startswith("How much of the generator CE's gradient")


def test_every_preset_and_what_it_changes_is_listed():
    text = render()
    presets = text[text.index("## Presets"):]
    for name in PRESETS:
        assert f"- `{name}`: " in presets, name
    assert "| `model.loss.ranker` | `1.0` | `0.0` |  |" in presets  # tiger switches the ranker off
    assert "| `train.lr` | `0.002` |  | `0.001` |" in presets  # sasrec's learning rate


def test_check_mode_names_the_command_that_regenerates(tmp_path, capsys):
    good = tmp_path / "configuration.md"
    good.write_text(render())
    assert main(["--check", str(good)]) == 0
    stale = tmp_path / "stale.md"
    stale.write_text(render().replace("| `model.dim` | int | `64` |", "| `model.dim` | int | `32` |"))
    assert main(["--check", str(stale)]) == 1
    err = capsys.readouterr().err
    assert "out of date" in err and f"python -m raygr.config_reference > {stale}" in err
    assert main(["--check", str(tmp_path / "missing.md")]) == 1
    assert "is missing" in capsys.readouterr().err
