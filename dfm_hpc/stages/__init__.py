"""One module per stage, each with `run(cfg, ctx)` executed on every rank.

This file only names them: it is imported on the login node, so it must not import the stage
modules (they import torch & co.).
"""

from __future__ import annotations

import importlib.util

# stage -> (module, issue that builds it). Order: the recipe's.
STAGES = {
    "demo": ("dfm_hpc.stages.demo", 2),
    "demo_check": ("dfm_hpc.stages.demo_check", 2),
    "translate": ("dfm_hpc.stages.translate", 3),
    "merge": ("dfm_hpc.stages.merge", 3),
    "pii": ("dfm_hpc.stages.pii", 5),
    "cpt": ("dfm_hpc.stages.cpt", 4),
    "sft": ("dfm_hpc.stages.sft", 4),
    "dpo": ("dfm_hpc.stages.dpo", 4),
    "evaluate": ("dfm_hpc.stages.evaluate", 5),
    "card": ("dfm_hpc.stages.card", 5),
}

# Config keys naming inputs a stage reads (local paths among them must exist at plan time).
STAGE_INPUTS = {
    "translate": ["data.oasst2"],
    "pii": ["pii.input"],
    "cpt": ["data.corpus"],
    "evaluate": ["data.eval_text"],
}


def is_implemented(stage: str) -> bool:
    return importlib.util.find_spec(STAGES[stage][0]) is not None
