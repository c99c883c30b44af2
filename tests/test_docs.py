"""Docs that are generated must be current; documented commands must exist."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from helpers import REPO


def test_config_reference_is_current():
    out = subprocess.run([sys.executable, str(REPO / "docs" / "gen_config.py")], capture_output=True, text=True,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout == (REPO / "docs" / "config.md").read_text(), \
        "docs/config.md is stale: python docs/gen_config.py > docs/config.md"


def test_every_schema_key_is_documented():
    from dfm_hpc.login.checks import SCHEMA_KEYS

    text = (REPO / "docs" / "config.md").read_text()
    missing = [k for k in SCHEMA_KEYS if f"`{k}`" not in text]
    assert not missing, missing


def test_readme_has_the_two_commands():
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()


def _rows() -> dict:
    """docs/config.md's table rows: key -> {type, default, allowed, meaning} (`\\|` is a pipe in a cell)."""
    rows = {}
    for line in (REPO / "docs" / "config.md").read_text().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 5 and cells[0].startswith("`") and cells[0] != "`key`":
            rows[cells[0].strip("`")] = dict(zip(("type", "default", "allowed", "meaning"), cells[1:]))
    return rows


def test_every_key_has_a_meaning():
    """One comment per schema field feeds the meaning column; no key of the schema may go without one."""
    from dfm_hpc.login.checks import SCHEMA_KEYS

    rows = _rows()
    assert set(SCHEMA_KEYS) <= set(rows), set(SCHEMA_KEYS) - set(rows)
    assert "data.mixture[].weight" in rows and "throughput.devices.<name>.train_mfu" in rows  # entries too
    assert [k for k, row in rows.items() if not row["meaning"]] == []


def test_a_key_shows_its_range_or_its_allowed_values():
    from dfm_hpc import schema
    from dfm_hpc.login.checks.ranges import ranged_fields, words

    rows = _rows()
    assert rows["sft.lr"]["allowed"] == "positive" and rows["deepspeed.stage"]["allowed"] == "0 to 3"
    assert rows["sft.save_every_minutes"]["allowed"] == "positive, or null"
    assert rows["peft.dropout"]["allowed"] == "from 0 up to 1"
    assert rows["merge.drop"]["allowed"] == r"`empty` \| `untranslated` \| `repetition` \| `length_ratio`"
    assert rows["merge.drop"]["type"] == "List[str]" and rows["pii.types"]["allowed"].startswith(r"`cpr` \| `email`")
    for stage in ("cpt", "sft", "dpo"):  # every ranged field of a class, inherited ranges included
        for name, meta, optional in ranged_fields(schema.CptStage if stage == "cpt" else
                                                 schema.SftStage if stage == "sft" else schema.DpoStage):
            assert rows[f"{stage}.{name}"]["allowed"] == words(meta, optional), name


def test_a_field_has_one_comment(tmp_path, monkeypatch):
    """A field's comment is trailing or a block above it, never both (the generator refuses)."""
    import importlib.util

    def load(name, path):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)  # inspect.getsource finds a class's file through it
        spec.loader.exec_module(module)
        return module

    gen = load("gen_config", REPO / "docs" / "gen_config.py")
    head = "from dataclasses import dataclass\n\n\n@dataclass\nclass C:\n"
    (tmp_path / "one.py").write_text(head + "    # above\n    # and more\n    a: int = 1\n    b: int = 2  # trailing\n")
    (tmp_path / "two.py").write_text(head + "    # above\n    c: int = 3  # and trailing\n")
    assert gen._own_comments(load("one", tmp_path / "one.py").C) == {"a": "above and more", "b": "trailing"}
    with pytest.raises(ValueError, match="C.c has two comments"):
        gen._own_comments(load("two", tmp_path / "two.py").C)
