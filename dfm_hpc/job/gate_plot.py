"""The gate's plot (stages/evaluate/gate.png, shown in the card): per task and group, the reference's and each
gated model's scores (left), and each model's delta with its interval against the bound (right)."""

from __future__ import annotations

from pathlib import Path


def plot(verdict: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = verdict.get("models") or {}
    labels = []  # every task/group any model compared, in order
    for m in models.values():
        labels += [r["name"] for r in m["rows"] if r["delta"] is not None and r["name"] not in labels]
    if not labels:
        return
    ref = (verdict.get("reference") or {}).get("name", "reference")
    bound = -float((verdict.get("settings") or {}).get("max_drop") or 0.0)
    height = max(2.5, 0.45 * len(labels) * max(1, len(models)) + 1.2)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, height), dpi=110, sharey=True)
    step = 0.8 / max(1, len(models))
    refs = {}
    for j, (name, m) in enumerate(models.items()):
        color = f"C{j % 10}"
        rows = {r["name"]: r for r in m["rows"] if r["delta"] is not None}
        ys = [i + (j - (len(models) - 1) / 2) * step for i, lab in enumerate(labels) if lab in rows]
        rs = [rows[lab] for lab in labels if lab in rows]
        refs.update({labels.index(r["name"]): r["reference"] for r in rs})
        left.scatter([r["score"] for r in rs], ys, marker="o", color=color, label=name, zorder=2)
        for y, r in zip(ys, rs):  # the interval, red when it lies below the bound (or a floor failed)
            right.plot([r["low"], r["high"]], [y, y], color="tab:red" if r["regressed"] else "grey", lw=2)
        right.scatter([r["delta"] for r in rs], ys, color=color, zorder=3, label=name)
    left.scatter(list(refs.values()), list(refs), marker="|", s=400, color="black", label=ref, zorder=3)
    seen = list(refs.values()) + [r["score"] for m in models.values() for r in m["rows"] if r["score"] is not None]
    left.set_xlim(min(0.0, *seen) - 0.02, max(1.0, *seen) + 0.02)  # the whole 0-1 scale: distances read true
    left.set_yticks(range(len(labels)))
    left.set_yticklabels([lab if len(lab) < 40 else lab[:37] + "..." for lab in labels], fontsize=8)
    left.invert_yaxis()
    left.set_xlabel("score (0-1)")
    left.set_title(f"scores: {ref} vs gated models", fontsize=9)
    left.legend(fontsize=7, loc="best")
    right.axvline(0, color="black", lw=0.8)
    right.axvline(bound, color="tab:red", lw=0.8, ls="--", label=f"bound {bound:+g}")
    right.set_xlabel(f"delta vs {ref}, ± k SE (red: regressed)")
    right.set_title(f"gate: {verdict.get('verdict')}", fontsize=9)
    right.legend(fontsize=7, loc="best")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
