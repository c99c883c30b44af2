"""compare and the weights' hashes: one model name with two hashes is refused (or marked with
--allow-mismatch); results without a hash are shown as such and never taken to be the same weights."""

from __future__ import annotations

from dfm_hpc import results
from dfm_hpc.login import compare

from helpers import dfm
from helpers.scored_results import row, write

A, B = "a" * 64, "b" * 64


def test_the_same_name_with_other_weights_is_refused_naming_the_columns(tmp_path, capsys):
    one, two = tmp_path / "run_one", tmp_path / "run_two"
    write(one, [row("base", A, "org/base-7b"), row("sft", "c" * 64, str(one / "stages/sft/model"), one)])
    write(two, [row("base", B, "org/base-7b"), row("sft", "d" * 64, str(two / "stages/sft/model"), two)])
    assert compare.compare([str(one), str(two)]) == 2
    err = capsys.readouterr().err
    assert "org/base-7b names different weights: aaaaaaaaaaaa (run_one:base); bbbbbbbbbbbb (run_two:base)" in err
    assert "--allow-mismatch" in err and "sft" not in err  # each run's own sft is its own name
    # the CLI: exit 2, nothing on stdout; with --allow-mismatch the table marks both columns
    r = dfm("compare", str(one), str(two), cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == "" and "run_one:base" in r.stderr
    r = dfm("compare", str(one), str(two), "--allow-mismatch", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert ("| weights sha256 | **MISMATCH** aaaaaaaaaaaa | cccccccccccc | **MISMATCH** bbbbbbbbbbbb | dddddddddddd |"
            in r.stdout.splitlines())
    assert "- org/base-7b names different weights:" in r.stdout and "warning: org/base-7b names" in r.stderr


def test_same_weights_pass_and_unknown_hashes_are_said(tmp_path):
    one, two, old = tmp_path / "run_one", tmp_path / "run_two", tmp_path / "run_old"
    write(one, [row("base", A, "org/base-7b", acc=0.25)])
    write(two, [row("base", A, "org/base-7b", acc=0.25)])
    write(old, [row("base", None, "org/base-7b")])  # before hashes: no bound_to
    text = compare.render([str(one), str(two)])
    assert "| weights sha256 | aaaaaaaaaaaa | aaaaaaaaaaaa |" in text and "MISMATCH" not in text
    assert "hash unknown" not in text
    assert compare.compare([str(one), str(two), str(old)]) == 0
    text = compare.render([str(one), str(two), str(old)])
    assert "| weights sha256 | aaaaaaaaaaaa | aaaaaaaaaaaa | hash: unknown |" in text
    assert ("- org/base-7b: weights hash unknown for run_old:base (results from before hashes, or a model not on "
            "disk): whether they are the same weights as run_one:base, run_two:base cannot be told") in text
    # two rows without a hash under one name: not equal either
    cols = [("x:base", row("base", None, "/m/base")), ("y:base", row("base", None, "/m/base"))]
    assert results.mismatches(cols) == [] and len(results.unknowns(cols)) == 1
