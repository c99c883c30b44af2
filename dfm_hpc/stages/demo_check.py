"""Demo check stage: a second job, started only after `demo` succeeded, reads its result.

Shows how stages hand data on: through files in the run dir, not through memory.
"""

from __future__ import annotations

import json

from dfm_hpc.job.rank import StageContext
from dfm_hpc.rundir import stage_dir
from dfm_hpc.schema import Config


def run(cfg: Config, ctx: StageContext) -> None:
    if cfg.demo_check.fail:
        raise RuntimeError("demo_check.fail=true: failing on purpose")
    result = json.loads((stage_dir(ctx.run_dir, "demo") / "result.json").read_text())
    ok = abs(result["sum"] - result["expected"]) < 1e-9 and len(result["hosts"]) == result["world_size"]
    ctx.log(f"demo result: sum {result['sum']} over {result['world_size']} ranks on "
            f"{sorted(set(result['hosts']))}: {'OK' if ok else 'WRONG'}")
    if ctx.is_main:
        (ctx.stage_dir / "check.json").write_text(json.dumps({"ok": ok, **result}, indent=2) + "\n")
    if not ok:
        raise RuntimeError(f"demo result is wrong: {result}")
