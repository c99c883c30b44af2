"""Every check of a launch on the login node, one module per concern; each checker returns its problems, and
the CLI prints them all and exits 2 before anything is created.

    keys.py       the command line, before Hydra composes: unknown keys and group options, sweep syntax
    stages.py     the stage list and walltimes (the plan needs them), the rules between a stage's keys
    ranges.py     every key's own number range (the schema's `ranged` metadata)
    resources.py  what each job asks the scheduler for: partition and per-user job limits, batch layout
    memory.py     a training stage's memory per GCD/GPU (estimates.py), the changes that fit
    parallel.py   sequence parallelism against the model, the sequence and the ranks; packing against
                  linear-attention layers; Liger needs GPUs
    paths.py      what the stages read (registry.STAGES): local inputs exist and are readable, the offline cache
    safety.py     text that reaches scripts, names, secrets
    lumi_rules.py LUMI's rules on the predictions (dev-g: one start), on runs_root (/scratch or /flash) and on
                  the translator's device (ctranslate2 has no gfx90a wheel)
    restarts.py   cluster.max_restarts against each stage's predicted requeues (the plan's starts)
    gate.py       evaluate.gate: the reference and the gated models are scored (or stored), a benchmark to gate on
    harness.py    EuroEval and inspect score a served model; on LUMI from the harness overlay, not a plain venv

The entry points: `check_overrides` (a command line), `check_config` (a composed config) and, once the
stages are predicted, `check_predictions` (problems) and `storage_warnings` (printed with the plan).
"""

from __future__ import annotations

from typing import List

from dfm_hpc.login.checks import gate, harness, lumi_rules, parallel, paths, ranges, resources, restarts, safety, stages
from dfm_hpc.login.checks.keys import SCHEMA_KEYS, check_overrides, explain_hydra_error, groups, invalid_choice
from dfm_hpc.login.checks.lumi_rules import storage_warnings
from dfm_hpc.login.checks.paths import should_check_paths
from dfm_hpc.login.checks.resources import check_sweep_job_limits
from dfm_hpc.login.checks.stages import check_stages
from dfm_hpc.plan import plan

__all__ = ["SCHEMA_KEYS", "check_config", "check_overrides", "check_predictions", "check_stages",
           "check_sweep_job_limits", "explain_hydra_error", "groups", "invalid_choice", "should_check_paths",
           "storage_warnings"]

# The checkers of a composed config, `(cfg, jobs) -> problems`, in the order their problems are printed.
CHECKS = [resources.check_cluster, ranges.check_ranges, resources.check_jobs, stages.check_translate,
          lumi_rules.check_translator,
          stages.check_pii, stages.check_evaluate, stages.check_finetune, stages.check_context, paths.check_inputs,
          safety.check_names, safety.check_text, resources.check_times, stages.check_walltimes,
          stages.check_relations, resources.check_relations, paths.check_data_files, stages.check_mixture,
          stages.check_chats, parallel.check_sequence_parallel, parallel.check_packing, parallel.check_liger]

CHECKS += [gate.check_gate]  # evaluate.gate: its reference and gated models, a benchmark to gate on

CHECKS += [stages.check_eval_checkpoints]  # <stage>.eval_checkpoints: the evaluate jobs' walltimes, the saves

CHECKS += [harness.check_harness]  # EuroEval/inspect: a served model; on LUMI the harness overlay, no plain venv

# The checkers of the plan's predictions, `(cfg, records) -> problems`.
PREDICTION_CHECKS = [lumi_rules.check_predictions, restarts.check_restarts]


def check_predictions(cfg, records) -> List[str]:
    return [p for check in PREDICTION_CHECKS for p in check(cfg, records)]


def check_config(cfg, jobs=None) -> List[str]:
    """Every problem of a composed config. The stage list and walltimes first (the plan needs them), then
    each checker. `jobs`: plan(cfg), if made."""
    problems = check_stages(cfg)
    if problems:
        return problems
    jobs = plan(cfg) if jobs is None else jobs
    return [p for check in CHECKS for p in check(cfg, jobs)]
