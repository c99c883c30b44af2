"""login/checks/ reads what each stage reads from the registry: every local source a run's stages read must
exist, a data file have its stage's columns, each key once; a source a set key replaces is not read."""

from __future__ import annotations

import json
from pathlib import Path

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


# ---------------------------------------------------------------- sequence parallelism and Liger (checks/parallel.py)

def _problems(*overrides):
    from dfm_hpc.login.checks import check_config

    return check_config(make_cfg(*overrides))


def test_sequence_parallel_against_the_model_the_sequence_and_the_ranks():
    """sft.sequence_parallel=N: heads and KV heads (read from the model's config.json), seq_len and the world size
    divisible, ZeRO-3, an attention Ulysses wraps; a model with linear-attention layers is refused."""
    lumi = ("+experiment=munin_sft", "cluster=lumi", "cluster.account=project_465000670")
    assert not [p for p in _problems(*lumi, "sft.sequence_parallel=4") if "sequence_parallel" in p]
    bad = [p for p in _problems(*lumi, "sft.sequence_parallel=3", "sft.global_batch_size=48") if "sequence_par" in p]
    assert any("world size 8" in p for p in bad) and any("seq_len=4096 is not divisible by 3" in p for p in bad)
    assert any("32 attention heads are not divisible by 3" in p for p in bad)
    assert any("8 key/value heads and 3" in p for p in bad)
    zero2 = _problems(*lumi, "sft.sequence_parallel=2", "deepspeed=zero2")
    assert any("use deepspeed=zero3" in p for p in zero2)
    eager = _problems(*lumi, "sft.sequence_parallel=2", "sft.attn_implementation=eager")
    assert any("attn_implementation=eager" in p for p in eager)
    # a batch counts data-parallel ranks: 8 ranks / SP 4 = 2, x micro 4 = 8 sequences per step
    batch = _problems(*lumi, "sft.sequence_parallel=4", "sft.global_batch_size=12")
    assert any("2 data-parallel ranks (world size 8 / sequence_parallel 4)" in p for p in batch)


def test_sequence_parallel_refuses_linear_attention_layers(tmp_path):
    import transformers as T

    model = tmp_path / "qwen35"
    model.mkdir()
    T.Qwen3_5TextConfig(num_hidden_layers=4, max_position_embeddings=8192).save_pretrained(model)
    problems = _problems("+experiment=munin_sft", "cluster=lumi", "cluster.account=project_465000670",
                         f"model.name_or_path={model}", "sft.sequence_parallel=2")
    assert any("3 linear-attention layers" in p and "sequence_parallel=1" in p for p in problems), problems


def test_packing_with_linear_attention_layers_exits_2_with_the_reason(tmp_path):
    """sft.packing over Qwen3.5's Gated DeltaNet layers (their torch path ignores the packed chats' boundaries):
    refused at plan time, exit 2, nothing written; sft.packing=false plans."""
    from helpers import dfm

    args = ("+experiment=families_tiny", "model=tiny_qwen3_5", "stages=[sft]", f"runs_root={tmp_path / 'runs'}")
    p = dfm(*args, "dry_run=true", cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert all(x in p.stderr for x in ("sft.packing=true: ", "linear-attention layers", "set sft.packing=false"))
    assert "nothing was created" in p.stderr and not (tmp_path / "runs").exists()
    assert not [x for x in _problems(*args[:3], "sft.packing=false") if "packing" in x]


def test_liger_needs_gpus():
    """Liger's kernels: refused for a stage without GPUs (a local CPU run), fine on LUMI's GCDs."""
    local = _problems("+experiment=sft_tiny", "sft.liger_kernel=true")
    assert any("sft.liger_kernel=true: Liger's kernels run on GPUs only" in p for p in local), local
    lumi = _problems("+experiment=munin_sft", "cluster=lumi", "cluster.account=project_465000670",
                     "sft.liger_kernel=true")
    assert not [p for p in lumi if "liger" in p]


def test_a_bad_degree_or_liger_on_cpu_exits_2_and_writes_nothing(tmp_path):
    from helpers import dfm

    for args in (("+experiment=munin_sft", "cluster=lumi", "cluster.account=project_465000670", "dry_run=true",
                  "sft.sequence_parallel=3"),
                 ("+experiment=sft_tiny", "sft.liger_kernel=true")):
        p = dfm(*args, f"runs_root={tmp_path / 'runs'}", cwd=tmp_path)
        assert p.returncode == 2, p.stdout + p.stderr
        assert "nothing was created" in p.stderr and not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- the 2026 recipes (conf/experiment/*_sft.yaml)

def _hub_with(tmp_path, repo_id: str, config) -> Path:
    """A jobs' HF cache holding `repo_id`'s config.json, as prefetch leaves it (snapshots/<commit>, refs/main)."""
    snap = tmp_path / "hf" / "hub" / f"models--{repo_id.replace('/', '--')}" / "snapshots" / ("0" * 40)
    config.save_pretrained(snap)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("0" * 40)
    return tmp_path / "hf"


def test_the_2026_recipes_dry_run_on_lumi_with_hours_cost_and_sp(tmp_path):
    """qwen35_sft and apertus_sft dry-run on LUMI (exit 0) and plan predicted hours, cost and the sequence-parallel
    degree, from the shape files shipped for their bases (dfm_hpc/model_configs/README.md) and from a prefetched
    config.json, which wins. The cache here holds configs made with transformers' classes (another shape than the
    shipped one for Apertus: 21,504 MLP, 8 KV heads), so the prefetched file is what the plan reads."""
    import transformers as T

    from helpers import dfm

    qwen = T.Qwen3_5Config(text_config=dict(max_position_embeddings=262144))
    apertus = T.ApertusConfig(intermediate_size=21504, num_key_value_heads=8)
    for name, repo, config, sp in (("qwen35_sft", "Qwen/Qwen3.5-9B-Base", qwen, "sequence_parallel 1"),
                                   ("apertus_sft", "swiss-ai/Apertus-8B-2509", apertus, "sequence_parallel 2")):
        home = _hub_with(tmp_path / name, repo, config)
        shipped = dfm(f"+experiment={name}", "cluster=lumi", "cluster.account=project_465000670", "dry_run=true",
                      f"runs_root={tmp_path / 'runs'}", cwd=tmp_path)
        assert shipped.returncode == 0 and "cost predicted:" in shipped.stdout, shipped.stdout[-3000:]
        assert "?" not in next(line for line in shipped.stdout.splitlines() if line.startswith("sft "))
        p = dfm(f"+experiment={name}", "cluster=lumi", "cluster.account=project_465000670", "dry_run=true",
                f"runs_root={tmp_path / 'runs'}", f"cluster.env.HF_HOME={home}", cwd=tmp_path)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        sft = next(line for line in p.stdout.splitlines() if line.startswith("sft "))
        assert ":" in sft.split()[6] and "?" not in sft, sft  # predicted hours, GCD-hours and billing units
        assert "cost predicted:" in p.stdout and "LUMI billing units" in p.stdout
        memory = next(line for line in p.stdout.splitlines() if "memory:" in line)
        assert f"({sp})" in memory and "fits" in memory, memory
        assert name != "qwen35_sft" or "only 1 for this model: linear-attention layers" in memory


# ---------------------------------------------------------------- tokenize.chats (checks/stages.py: check_chats)

def test_tokenize_chats_needs_a_stage_that_reads_them_and_the_right_order(tmp_path):
    """chats=true with no sft/dpo, or tokenize after the stage that reads its store, exits 2 through the CLI and
    writes nothing; sft/dpo with chats and no tokenize stage is fine (another run's store, or on the fly)."""
    from dfm_hpc.login.checks import check_config

    from helpers import dfm

    def chats(*stages, **values):
        cfg = make_cfg(stages=list(stages), tokenize={"chats": True}, **values)
        return [p for p in check_config(cfg) if "tokenize" in p]

    assert not chats("tokenize", "sft", "dpo", sft={"dataset": "tiny:chats"}, dpo={"dataset": "tiny:chats"})
    assert not chats("sft", sft={"dataset": "tiny:chats"})  # no tokenize stage: reads a store or renders
    assert chats("merge", "sft", "tokenize") == ["stages: tokenize must come before sft (with tokenize.chats they "
                                                 "read its chat stores)"]
    assert any("tokenize must come after merge (sft.dataset is unset" in p for p in chats("tokenize", "merge", "sft"))
    assert not chats("tokenize", "merge", "sft", sft={"dataset": "tiny:chats"})
    for stages in ("[tokenize]", "[tokenize,cpt]"):
        p = dfm("+experiment=sft_tiny", f"stages={stages}", "tokenize.chats=true", f"runs_root={tmp_path / 'runs'}",
                cwd=tmp_path)
        assert p.returncode == 2, p.stdout + p.stderr
        assert "tokenize.chats=true pretokenizes the sft and dpo chats, but stages=['tokenize'" in p.stderr
        assert "nothing was created" in p.stderr and not (tmp_path / "runs").exists()
