"""The closed sets of values config keys take (schema.py types its fields with them) and number ranges.

A Choice is an Enum: OmegaConf rejects any other value at merge time, naming the allowed ones; `ranged` puts a
number field's range in its metadata (login/checks/ranges.py checks it, docs/config.md shows it).
"""

from __future__ import annotations

from dataclasses import field
from enum import Enum
from typing import List


class Choice(str, Enum):
    """A closed set of values. OmegaConf rejects anything else at merge time, naming the allowed values.
    Members compare, hash, format and serialise as their plain string."""

    __str__ = str.__str__
    __format__ = str.__format__

    @classmethod
    def values(cls) -> List[str]:
        return [m.value for m in cls]


def _choice(name: str, values: str):
    return Choice(name, [(v, v) for v in values.split()])


def ranged(default, *, gt=None, ge=None, lt=None, le=None, hint: str = "{rule}"):
    """A number field and its range (login/checks/ranges.py checks it, docs/config.md shows it); `hint` is what a user
    reads when a value is outside, {rule} the range in words. A subclass changing the default keeps the range."""
    bounds = {k: v for k, v in dict(gt=gt, ge=ge, lt=lt, le=le).items() if v is not None}
    return field(default=default, metadata={**bounds, "hint": hint})


System = _choice("System", "generic lumi")
Scheduler = _choice("Scheduler", "local slurm")
Launcher = _choice("Launcher", "srun torchrun")
Backend = _choice("Backend", "hf ctranslate2")
PeftMethod = _choice("PeftMethod", "none lora qlora")
Precision = _choice("Precision", "bf16 fp32")
Attention = _choice("Attention", "sdpa flash_attention_2 eager flex_attention")  # transformers' values
ReportTo = _choice("ReportTo", "tensorboard wandb")
WandbMode = _choice("WandbMode", "offline online disabled")
Replacement = _choice("Replacement", "tags fake")
IpPolicy = _choice("IpPolicy", "all public off")
ServerBackend = _choice("ServerBackend", "none vllm transformers")
OasstLayout = _choice("OasstLayout", "auto trees nested messages parquet arrow")
Review = _choice("Review", "any not_failed passed")
SftPath = _choice("SftPath", "best all")
PiiType = _choice("PiiType", "cpr email phone ip iban")  # what the filter finds (dfm_hpc/text/pii.py)
QualityFlag = _choice("QualityFlag", "empty untranslated repetition length_ratio")  # merge.quality_flags sets them
Runtime = _choice("Runtime", "singularity bwrap")
ContainerVerb = _choice("ContainerVerb", "exec run")
TranslatorDtype = _choice("TranslatorDtype", "bfloat16 float16 float32")  # a torch dtype and a ctranslate2 compute_type
MailType = _choice("MailType", "NONE BEGIN END FAIL REQUEUE ALL INVALID_DEPEND TIME_LIMIT TIME_LIMIT_90 TIME_LIMIT_80 "
                   "TIME_LIMIT_50 ARRAY_TASKS")  # sbatch --mail-type values
DpoLoss = _choice("DpoLoss", "sigmoid hinge ipo exo_pair nca_pair robust bco_pair sppo_hard aot aot_unpaired apo_zero "
                  "apo_down discopop sft sigmoid_norm")  # TRL's DPOConfig.loss_type values (trl 1.16)
