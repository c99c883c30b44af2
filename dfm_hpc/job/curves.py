"""A training stage's loss curve: stages/<stage>/metrics.jsonl (written by train.py) -> loss.png."""

from __future__ import annotations

import json
from pathlib import Path


def history(stage_dir: Path) -> list:
    """The metrics log, one row per logged step (a resumed run's repeats replaced by the later ones;
    an eval_every_steps evaluation joins its step's row as eval_loss)."""
    path = stage_dir / "metrics.jsonl"
    rows = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        r = json.loads(line)
        rows.setdefault(r["step"], {}).update(r)
    return [rows[k] for k in sorted(rows)]


def plot_loss(stage_dir: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = history(stage_dir)
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    train = [r for r in rows if "loss" in r]
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], marker=".", lw=1, label="training loss")
    evals = [r for r in rows if r.get("eval_loss") is not None]
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], marker="o", lw=1, label="held-out loss")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(stage_dir / "loss.png")
    plt.close(fig)
