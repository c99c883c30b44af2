"""One saved checkpoint of a training stage, scored (docs/evaluation.md#checkpoint-evaluation).

    python -m dfm_hpc.job.checkpoint_eval RUN_DIR STAGE STEP       the job the training job's host side queued
    python -m dfm_hpc.job.checkpoint_eval RUN_DIR STAGE pending    every kept checkpoint not scored yet (cluster=local)

It scores what the evaluate stage's in-process part scores (job/scoring.py): held-out loss and perplexity on the
same text (data.eval_text, else the run's held-out split), and evaluate.lm_eval_tasks in this process on the loaded
model (job/harness.py); no server, no EuroEval, no generations (a short job on one device). The result
(checkpoint_evals/step-<N>.json, results.json's model-row format) is bound to the weights (job/scored.py's content
hash, adapter and base). Then the curve is redrawn from every scored checkpoint (curve.png, curve.md) and the
checkpoint's kept weights (step-<N>/) are removed: the hash says what was scored.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from dfm_hpc import checkpoint_scores, config_io, tiny
from dfm_hpc.files import write_atomic
from dfm_hpc.rundir import CHECKPOINT_EVALS, stage_dir

MAX_PANELS = 6  # the curve's panels: eval_loss, perplexity, then the benchmarks' metrics


def _logger(log_file: Path):
    log_file.parent.mkdir(parents=True, exist_ok=True)

    def say(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with open(log_file, "a") as f:
            f.write(line + "\n")

    return say


def score(run_dir: Path, stage: str, step: int) -> dict:
    """Score checkpoint_evals/step-<step>/ and write step-<step>.json; returns the row."""
    import torch

    from dfm_hpc.job import harness, scored, scoring

    run_dir = Path(run_dir).resolve()
    cfg = config_io.load_config(run_dir)
    sdir = stage_dir(run_dir, stage)
    snap = sdir / CHECKPOINT_EVALS / f"step-{step}"
    say = _logger(sdir / CHECKPOINT_EVALS / "logs" / f"step-{step}.log")
    if not snap.is_dir():
        raise FileNotFoundError(f"{snap}: no kept checkpoint of {stage} at step {step}")
    if not (snap / "tokenizer_config.json").exists():  # cpt's Trainer saves no tokenizer: the run's own
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(tiny.resolve(cfg.model.name_or_path, run_dir / "cache")).save_pretrained(snap)
    t0 = time.time()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    say(f"{stage} checkpoint of step {step} ({snap}) on {device}")
    ctx = SimpleNamespace(run_dir=run_dir, stage_dir=sdir, log=say)  # what the held-out text's readers use
    source, texts = scoring.eval_texts(cfg, ctx)
    model, tokenizer = scoring.load(str(snap))
    row = {"name": f"{stage} step {step}", "stage": stage, "step": step, "path": str(snap), "eval_data": source,
           **scoring.perplexity(model, tokenizer, texts), "benchmarks": {}, "notes": [], "serving": None,
           "bound_to": scored.bound_to(cfg, str(snap), str(snap), scored.parameters(model)), "device": device}
    say(f"eval_loss {row['eval_loss']:.4f} perplexity {row['perplexity']:.3f} on {source}")
    ev = cfg.evaluate
    names, include = harness.resolve_tasks(list(ev.lm_eval_tasks), run_dir / "cache", ev.lm_eval_include)
    if names:
        meta = {"dtype": str(next(model.parameters()).dtype).removeprefix("torch."), "backend": "hf (in-process)",
                "backend_version": harness.version("transformers")}
        try:
            row["benchmarks"].update(harness.run_lm_eval(
                harness.hf_lm(model, tokenizer), names, include, limit=ev.lm_eval_limit, num_fewshot=ev.num_fewshot,
                seed=cfg.seed, meta=meta, log=say))
        except Exception as e:  # the perplexity stands; the note says why the benchmark is missing
            row["notes"].append(f"lm-eval failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            say(row["notes"][-1])
    row["seconds"] = round(time.time() - t0, 2)
    scored.finish(row)
    write_atomic(checkpoint_scores.result_path(sdir, step), json.dumps(row, indent=2, ensure_ascii=False) + "\n")
    shutil.rmtree(snap, ignore_errors=True)  # scored and hashed: the weights' copy is no longer needed
    write_curve(sdir, stage)
    say(f"wrote {checkpoint_scores.result_path(sdir, step)} and the curve ({row['seconds']} s)")
    return row


def write_curve(sdir: Path, stage: str) -> None:
    """curve.md and curve.png from every scored checkpoint (each evaluate job redraws them: whole files)."""
    d = sdir / CHECKPOINT_EVALS
    rows = checkpoint_scores.rows(sdir)
    write_atomic(d / "curve.md", f"# {stage}: scores of its saved checkpoints\n\n"
                 + checkpoint_scores.markdown(stage, rows, checkpoint_scores.waiting(sdir)))
    plot(checkpoint_scores.series(rows), d / "curve.png", f"{stage}: scores of its saved checkpoints")


def plot(series: dict, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(series)[:MAX_PANELS]
    if not metrics:
        return
    fig, axes = plt.subplots(len(metrics), 1, figsize=(6, 1.2 + 1.8 * len(metrics)), dpi=120, sharex=True,
                             squeeze=False)
    for ax, metric in zip(axes[:, 0], metrics):
        steps, values = zip(*series[metric])
        ax.plot(steps, values, marker="o", lw=1)
        ax.set_ylabel(metric, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    axes[0, 0].set_title(title)
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.{time.time_ns()}.png")  # two jobs may finish together: each renames whole
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out)


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    run_dir, stage, which = Path(args[0]), args[1], args[2]
    sdir = stage_dir(run_dir, stage)
    from dfm_hpc.job.rank import quiet_libraries

    # the known library noise off, as in a rank's log (verbose=true keeps it); before torch is imported
    quiet_libraries(bool(config_io.load_config(run_dir, lenient=True).verbose), gpus=1)
    steps = checkpoint_scores.waiting(sdir) if which == "pending" else [int(which)]
    for step in steps:
        score(run_dir, stage, step)
    if which == "pending" and not steps:
        write_curve(sdir, stage)
    return 0


if __name__ == "__main__":
    sys.exit(main())
