"""Docs that are generated must be current; documented commands must exist."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_config_reference_is_current():
    out = subprocess.run([sys.executable, str(REPO / "docs" / "gen_config.py")], capture_output=True, text=True,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout == (REPO / "docs" / "config.md").read_text(), \
        "docs/config.md is stale: python docs/gen_config.py > docs/config.md"


def test_every_schema_key_is_documented():
    from dfm_hpc.login.validate import SCHEMA_KEYS

    text = (REPO / "docs" / "config.md").read_text()
    missing = [k for k in SCHEMA_KEYS if f"`{k}`" not in text]
    assert not missing, missing


def test_readme_has_the_two_commands():
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()
