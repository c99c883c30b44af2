"""The promotion gate (job/gate.py): paired bootstrap, verdicts per task and group, floors, EuroEval's iterations,
the reported-error fallback, references from another run, and what the stage writes before it stops the chain.
The planted regression on the LUMI-like Slurm: tests/e2e/test_gate_slurm.py."""

from __future__ import annotations

import json
import math
import random

import pytest

from dfm_hpc import gate_verdict
from dfm_hpc.job import gate

from helpers import make_cfg, stage_ctx


def _gate(**over):
    return make_cfg(evaluate={"gate": {"enabled": True, **over}}).evaluate.gate


def _items(values, hashes=None, groups=(), metric="acc", unit="item"):
    ids = list(range(len(values)))
    return {"unit": unit, "ids": ids, "hashes": hashes or [f"h{i}" for i in ids], "metrics": {metric: list(values)},
            "higher_is_better": {metric: True}, "groups": list(groups)}


def _row(name, benches):
    """A results.json row whose benchmarks carry per-item scores (as harness.run_lm_eval(per_item=True) gives)."""
    out = {}
    for key, items in benches.items():
        vals = items["metrics"]["acc"]
        out[key] = {"items": items, "scores": {"acc": sum(vals) / len(vals)},
                    "meta": {"harness": "lm-eval", "task_version": "1", "split": "test", "num_fewshot": 0}}
    return {"name": name, "path": f"/m/{name}", "benchmarks": out, "notes": []}


def _stage(tmp_path, rows):
    """An evaluate stage dir as the stage leaves it: results.json written through split_items."""
    sdir = tmp_path / "run" / "stages" / "evaluate"
    sdir.mkdir(parents=True)
    stripped = gate.split_items(sdir, rows)
    (sdir / "results.json").write_text(json.dumps({"format": 2, "eval_data": "x", "models": stripped}))
    (sdir / "results.md").write_text("# Evaluation\n")
    return sdir


def test_bootstrap_se_matches_the_analytic_one():
    rnd = random.Random(1)
    diffs = [rnd.choice([-1.0, 0.0, 0.0, 1.0]) for _ in range(400)]
    mean = sum(diffs) / len(diffs)
    analytic = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs))
    se = gate.bootstrap_se(diffs, 2000, seed=0)
    assert abs(se - analytic) / analytic < 0.08
    assert gate.bootstrap_se(diffs, 2000, seed=0) == se  # seeded


def test_split_items_keeps_them_beside_results(tmp_path):
    rows = [_row("base", {"lm-eval/t": _items([1, 0, 1])})]
    sdir = _stage(tmp_path, rows)
    res = json.loads((sdir / "results.json").read_text())
    assert "items" not in res["models"][0]["benchmarks"]["lm-eval/t"]
    assert gate.load_items(sdir / gate.ITEMS, "base")["lm-eval/t"]["metrics"]["acc"] == [1, 0, 1]
    assert "items" in rows[0]["benchmarks"]["lm-eval/t"]  # the caller's rows are left whole


def test_planted_regression_fails_and_writes_everything_first(tmp_path, capsys):
    n = 60
    ref = [1.0] * 50 + [0.0] * 10
    rows = [_row("base", {"lm-eval/t": _items(ref)}), _row("sft", {"lm-eval/t": _items([0.0] * 40 + [1.0] * 20)}),
            _row("dpo", {"lm-eval/t": _items(ref)})]
    sdir = _stage(tmp_path, rows)
    cfg = make_cfg(evaluate={"gate": {"enabled": True, "max_drop": 0.05}})
    with pytest.raises(gate.Regressed, match="regressed: sft against base"):
        gate.run(cfg, stage_ctx(tmp_path / "run", "evaluate"))
    v = json.loads((sdir / "gate.json").read_text())
    assert v["verdict"] == "regressed" and v["stops"] and v["models"]["dpo"]["verdict"] == "passed"
    (row,) = v["models"]["sft"]["rows"]
    assert row["n"] == n and row["unit"] == "item" and row["regressed"]
    assert row["delta"] == pytest.approx(20 / 60 - 50 / 60) and row["high"] < -0.05
    res = json.loads((sdir / "results.json").read_text())  # the scores are kept, with the verdict
    assert [m.get("gate", {}).get("verdict") for m in res["models"]] == [None, "regressed", "passed"]
    assert res["gate"]["verdict"] == "regressed"
    assert "## Promotion gate" in (sdir / "results.md").read_text()
    assert (sdir / gate_verdict.PLOT).stat().st_size > 1000
    lines = gate_verdict.status_lines([tmp_path / "run"])
    assert lines[0].startswith("gate: regressed: sft against base") and "lm-eval/t acc" in lines[1]


def test_noise_within_the_bound_passes_and_warn_only_warns(tmp_path, capsys):
    rnd = random.Random(3)
    ref = [float(rnd.random() < 0.5) for _ in range(80)]
    noisy = [v if rnd.random() < 0.9 else 1 - v for v in ref]  # 10 % of the answers flipped
    rows = [_row("base", {"lm-eval/t": _items(ref)}), _row("sft", {"lm-eval/t": _items(noisy)})]
    _stage(tmp_path, rows)
    cfg = make_cfg(evaluate={"gate": {"enabled": True}})
    assert gate.run(cfg, stage_ctx(tmp_path / "run", "evaluate")) == "; gate passed: sft against base (no drop " \
        "beyond the bound) (gate.json)"  # no raise: the stage's last line carries it
    v = gate_verdict.read(tmp_path / "run")
    assert v["verdict"] == "passed" and not v["stops"] and gate_verdict.status_lines([tmp_path / "run"]) == []
    (row,) = v["models"]["sft"]["rows"]
    assert row["low"] < 0 < row["high"] or row["delta"] >= 0
    # the same stage with a planted drop under warn_only: loud, not stopped
    worse = [0.0] * 80
    sdir2 = _stage(tmp_path / "w", [rows[0], _row("sft", {"lm-eval/t": _items(worse)})])
    cfg = make_cfg(evaluate={"gate": {"enabled": True, "warn_only": True}})
    gate.run(cfg, stage_ctx(tmp_path / "w" / "run", "evaluate"))
    out = capsys.readouterr().out
    assert "gate: WARNING: REGRESSED" in out and "warn_only=true" in out
    v = json.loads((sdir2 / "gate.json").read_text())
    assert v["verdict"] == "regressed" and v["warn_only"] and not v["stops"]
    assert "WARNING (warn_only" in gate_verdict.status_lines([tmp_path / "w" / "run"])[0]
    assert "WARNING" in gate_verdict.card_section(tmp_path / "w" / "run")


def test_groups_floors_and_lm_eval_groups():
    g = _gate(groups={"knowledge": ["a*"]}, floors={"knowledge": 0.9, "lm-eval/b": 0.1})
    ref = _row("base", {"lm-eval/arc": _items([1.0] * 30), "lm-eval/arc2": _items([1.0] * 30),
                        "lm-eval/b": _items([0.0, 1.0] * 15, groups=["bgroup"])})
    m = _row("sft", {"lm-eval/arc": _items([1.0] * 27 + [0.0] * 3), "lm-eval/arc2": _items([1.0] * 30),
                     "lm-eval/b": _items([0.0, 1.0] * 15, groups=["bgroup"])})
    got = gate.compare_model(g, m, ref, {k: b["items"] for k, b in m["benchmarks"].items()},
                             {k: b["items"] for k, b in ref["benchmarks"].items()})
    rows = {r["name"]: r for r in got["rows"]}
    assert rows["knowledge"]["kind"] == "group" and rows["knowledge"]["delta"] == pytest.approx(-0.05)
    assert rows["knowledge"]["score"] == pytest.approx(0.95)
    ses = [rows["lm-eval/arc"]["se"], rows["lm-eval/arc2"]["se"]]
    assert rows["knowledge"]["se"] == pytest.approx(math.sqrt(sum(s * s for s in ses)) / 2)
    assert not rows["knowledge"]["regressed"]  # 0.95 is above its floor, the drop within 2 SE of 0 ... with k=2
    assert rows["lm-eval/bgroup"]["delta"] == 0  # lm-eval's own group
    g2 = _gate(groups={"knowledge": ["a*"]}, floors={"knowledge": 0.99})
    got = gate.compare_model(g2, m, ref, {k: b["items"] for k, b in m["benchmarks"].items()},
                             {k: b["items"] for k, b in ref["benchmarks"].items()})
    bad = [r for r in got["rows"] if r["regressed"]]
    assert [r["name"] for r in bad] == ["knowledge"] and "floor 0.99" in bad[0]["why"]
    assert got["verdict"] == "regressed"


def test_euroeval_iterations_pair_and_reported_errors_fall_back():
    g = _gate()
    it = lambda vals: {"unit": "iteration", "ids": list(range(len(vals))), "metrics": {"mcc": vals}}  # noqa: E731
    ref = {"scores": {"mcc": 50.0, "mcc_se": 4.0}, "meta": {"harness": "euroeval"}}
    mod = {"scores": {"mcc": 30.0, "mcc_se": 4.0}, "meta": {"harness": "euroeval"}}
    row = gate.compare_task("euroeval/sent/angry", g, mod, ref, it([0.30, 0.28, 0.33, 0.29]),
                            it([0.50, 0.49, 0.52, 0.50]), 0)
    assert row["unit"] == "iteration" and row["n"] == 4 and row["delta"] == pytest.approx(-0.2025)
    assert row["se"] < 0.02 and row["regressed"]  # paired: the iterations move together
    row = gate.compare_task("euroeval/sent/angry", g, mod, ref, {}, {}, 0)  # EuroEval >= 17: no iterations
    assert row["unit"] == "reported (unpaired)" and row["delta"] == pytest.approx(-0.2)
    assert row["se"] == pytest.approx(math.sqrt(2) * 4.0 / 1.96 / 100) and row["regressed"]


def test_items_that_differ_are_not_compared_and_nothing_compared_stops(tmp_path):
    g = _gate()
    ref = _row("base", {"lm-eval/t": _items([1.0] * 10, hashes=[f"x{i}" for i in range(10)])})
    m = _row("sft", {"lm-eval/t": _items([1.0] * 10)})
    del ref["benchmarks"]["lm-eval/t"]["scores"]["acc"]
    got = gate.compare_model(g, m, ref, {"lm-eval/t": m["benchmarks"]["lm-eval/t"]["items"]},
                             {"lm-eval/t": ref["benchmarks"]["lm-eval/t"]["items"]})
    assert got["verdict"] == "incomparable" and "hashes" in got["rows"][0]["why"]
    other = dict(ref["benchmarks"]["lm-eval/t"], meta={"task_version": "2"})
    row = gate.compare_task("lm-eval/t", g, m["benchmarks"]["lm-eval/t"], other, {}, {}, 0)
    assert row["delta"] is None and "task_version 2 vs 1" in row["why"]


def test_reference_from_another_run(tmp_path):
    old = tmp_path / "old"
    _stage(old, [_row("base", {"lm-eval/t": _items([1.0] * 40)}), _row("sft", {"lm-eval/t": _items([1.0] * 40)})])
    sdir = _stage(tmp_path / "new", [_row("sft", {"lm-eval/t": _items([0.0] * 40)})])
    g = _gate(reference=str(old / "run"), reference_model="sft")
    v = gate.verdict(g, sdir, json.loads((sdir / "results.json").read_text())["models"])
    assert v["reference"]["name"] == "sft (run)" and v["verdict"] == "regressed"
    assert v["models"]["sft"]["rows"][0]["unit"] == "item"  # the old run's items were found
    with pytest.raises(FileNotFoundError, match="reference_model=dpo"):
        gate.verdict(_gate(reference=str(old / "run"), reference_model="dpo"), sdir, [])


def test_euroeval_records_give_their_iterations():
    from dfm_hpc.job import harness

    rec = {"dataset": "angry-tweets", "task": "sentiment-classification", "euroeval_version": "16.11.0",
           "results": {"raw": [{"test_mcc": 0.1, "test_macro_f1": 0.3}, {"test_mcc": 0.2, "test_macro_f1": 0.4}],
                       "total": {"test_mcc": 15.0, "test_mcc_se": 9.8}}}
    (got,) = harness.parse_euroeval([rec]).values()
    assert got["items"] == {"unit": "iteration", "ids": [0, 1], "metrics": {"mcc": [0.1, 0.2], "macro_f1": [0.3, 0.4]}}
    assert "items" not in harness.parse_euroeval([{**rec, "results": {"raw": [], "total": {}}}])[
        "euroeval/sentiment-classification/angry-tweets"]
