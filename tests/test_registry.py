"""The registry is the truth about the stages: what a stage's code reads from other stages is in its `uses`."""

from __future__ import annotations

import ast

from dfm_hpc.registry import STAGES

from helpers import REPO


def stage_dirs_read(source: str) -> set:
    """The stage names a module passes as literals to stage_dir(run_dir, "<stage>")."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "stage_dir" \
                and len(node.args) == 2 and isinstance(node.args[1], ast.Constant):
            out.add(node.args[1].value)
    return out


def test_what_a_stage_reads_of_other_stages_is_in_its_uses():
    found = {}
    for name, spec in STAGES.items():
        source = (REPO / "dfm_hpc" / "stages" / f"{name}.py").read_text()
        found[name] = stage_dirs_read(source) - {name}
        assert found[name] <= set(spec.uses), (name, found[name] - set(spec.uses))
    assert found["merge"] == {"translate"} and found["pii"] == {"merge"}  # the check sees real reads


def test_the_check_sees_an_undeclared_read():
    assert stage_dirs_read('x = stage_dir(ctx.run_dir, "tokenize") / "stores.json"') == {"tokenize"}
    assert not {"tokenize"} <= set(STAGES["merge"].uses)
