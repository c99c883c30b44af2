"""login/checks/ reads what each stage reads from the registry: every local source a run's stages read must
exist, a data file have its stage's columns, each key once; a source a set key replaces is not read."""

from __future__ import annotations

import json

from helpers import make_cfg


def _cfg(tmp_path, stages, **values):
    return make_cfg(stages=stages, runs_root=str(tmp_path / "runs"), **values)


def test_the_inputs_of_a_run_come_from_the_registry_once_each(tmp_path):
    from dfm_hpc import registry

    cfg = _cfg(tmp_path, ["tokenize", "cpt", "evaluate"], model={"name_or_path": "org/base"},
               data={"corpus": "org/corpus", "eval_text": "org/held-out"})
    assert [(i.stage, i.key, i.value) for i in registry.inputs(cfg)] == [
        ("tokenize", "model.name_or_path", "org/base"), ("tokenize", "data.corpus", "org/corpus"),
        ("evaluate", "data.eval_text", "org/held-out")]
    mix = [{"source": "org/a", "weight": 1.0, "subset": "da", "revision": "abc"},
           {"source": "./b.jsonl", "weight": 1.0}]
    cfg = _cfg(tmp_path, ["cpt"], data={"corpus": "org/corpus", "mixture": mix})  # the mixture replaces the corpus
    assert [(i.key, i.value, i.revision, i.subset, i.entry) for i in registry.inputs(cfg)][1:] == [
        ("data.mixture[0].source", "org/a", "abc", "da", "data.mixture[0]"),
        ("data.mixture[1].source", "./b.jsonl", None, None, "data.mixture[1]")]
    assert registry.TRAINED_STAGES == ("cpt", "sft", "dpo")  # the stages that write model/


def test_every_local_source_a_stage_reads_must_exist(tmp_path):
    from dfm_hpc.login import checks

    gone = str(tmp_path / "nope")
    cfg = _cfg(tmp_path, ["cpt"], model={"name_or_path": gone}, data={"corpus": gone + ".jsonl"})
    assert [p for p in checks.check_config(cfg) if "does not exist" in p] == [
        f"model.name_or_path={gone!r} does not exist (an input of stage 'cpt': give a local path or a hub id org/name)",
        f"data.corpus={gone + '.jsonl'!r} does not exist (an input of stage 'cpt': give a local path or a hub id "
        "org/name)"]
    cfg = _cfg(tmp_path, ["tokenize", "cpt"], data={"corpus": gone + ".jsonl"})  # read by both: said once
    assert sum("does not exist" in p for p in checks.check_config(cfg)) == 1
    mix = [{"source": "tiny:corpus", "weight": 1.0}]
    cfg = _cfg(tmp_path, ["cpt"], data={"corpus": gone + ".jsonl", "mixture": mix})  # not read: the mixture is
    assert not [p for p in checks.check_config(cfg) if "does not exist" in p]


def test_a_data_file_must_have_the_columns_its_stage_reads(tmp_path):
    from dfm_hpc.login import checks

    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"messages": []}) + "\n")
    cfg = _cfg(tmp_path, ["tokenize"], data={"corpus": str(chats)})
    assert f"data.corpus={str(chats)!r} has no text in its first record (it has messages)" in checks.check_config(cfg)
    mix = [{"source": "tiny:corpus", "weight": 1.0}, {"source": str(chats), "weight": 1.0}]
    cfg = _cfg(tmp_path, ["cpt"], data={"mixture": mix})
    assert (f"data.mixture[1].source={str(chats)!r} has no text in its first record (it has messages)"
            in checks.check_config(cfg))
    cfg = _cfg(tmp_path, ["sft"], sft={"dataset": str(chats)})
    assert not [p for p in checks.check_config(cfg) if "sft.dataset" in p]
