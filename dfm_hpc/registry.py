"""The one stage registry: which stages exist, in the recipe's order, and what the login node needs
to know about each (its config class, the inputs it reads, whether it trains or can resume)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from dfm_hpc import schema


@dataclass(frozen=True)
class StageSpec:
    """One stage of the recipe: what the login node plans and what a rank imports."""

    name: str
    config: type  # its config class (a field of Config of the same name)
    inputs: tuple = ()  # config keys naming sources it reads (local ones must exist at plan time)
    trained: bool = False  # writes stages/<name>/model/ (evaluate and card pick these up)
    resumable: bool = False  # a restart continues from its files (checkpoints, chunks): may be requeued

    @property
    def module(self) -> str:  # imported only in a rank (it imports torch & co.)
        return f"dfm_hpc.stages.{self.name}"


STAGES: Dict[str, StageSpec] = {s.name: s for s in (
    StageSpec("demo", schema.DemoStage),
    StageSpec("demo_check", schema.DemoCheckStage),
    StageSpec("lumi_check", schema.LumiCheckStage),
    StageSpec("translate", schema.TranslateStage, inputs=("data.oasst2",), resumable=True),
    StageSpec("merge", schema.MergeStage),
    StageSpec("pii", schema.PiiStage, inputs=("pii.input", "pii.ner"), resumable=True),
    StageSpec("tokenize", schema.TokenizeStage, inputs=("data.corpus",)),  # data.mixture: validate.check_mixture
    StageSpec("cpt", schema.CptStage, inputs=("data.corpus",), trained=True, resumable=True),
    # sft/dpo.dataset are checked with the stage (they may be run dirs)
    StageSpec("sft", schema.SftStage, trained=True, resumable=True),
    StageSpec("dpo", schema.DpoStage, trained=True, resumable=True),
    StageSpec("evaluate", schema.EvaluateStage, inputs=("data.eval_text",)),
    StageSpec("card", schema.CardStage),
)}
TRAINED_STAGES = tuple(n for n, s in STAGES.items() if s.trained)
