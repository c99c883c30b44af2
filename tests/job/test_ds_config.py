"""Every DeepSpeed config dfm_hpc renders is accepted by DeepSpeed's own parser."""

from __future__ import annotations

import itertools

import pytest
from omegaconf import OmegaConf

from dfm_hpc import schema
from dfm_hpc.job import ds_config

deepspeed_config = pytest.importorskip("deepspeed.runtime.config")


@pytest.mark.parametrize("stage,offload_opt,offload_params,precision",
                         [(s, o, p, pr) for s, o, p, pr in itertools.product([0, 1, 2, 3], [False, True], [False, True],
                                                                            ["bf16", "fp32"])
                          if not (p and s != 3) and not (o and s == 0)])
def test_deepspeed_accepts_the_rendered_config(stage, offload_opt, offload_params, precision):
    ds = OmegaConf.structured(schema.DeepSpeedConfig(stage=stage, offload_optimizer=offload_opt,
                                                     offload_params=offload_params))
    st = OmegaConf.structured(schema.SftStage(global_batch_size=8, micro_batch_size=2, precision=precision))
    rendered = ds_config.render(ds, st, world_size=1)
    parsed = deepspeed_config.DeepSpeedConfig(rendered)
    assert parsed.zero_optimization_stage == stage
    assert parsed.train_batch_size == 8 and parsed.gradient_accumulation_steps == 4
    assert parsed.bfloat16_config.enabled == (precision == "bf16")
    if offload_opt:
        assert parsed.zero_config.offload_optimizer is not None
    if stage == 3:
        assert parsed.zero_config.gather_16bit_weights_on_model_save


def test_accumulation_follows_the_world_size():
    ds = OmegaConf.structured(schema.DeepSpeedConfig(stage=2))
    st = OmegaConf.structured(schema.CptStage(global_batch_size=512, micro_batch_size=2))
    assert ds_config.render(ds, st, world_size=64)["gradient_accumulation_steps"] == 4
