"""login/sweep_files.py gives what rundir.snapshot's own redaction and YAML give, for points that share mappings."""

from __future__ import annotations

import yaml

from dfm_hpc import redact, rundir
from dfm_hpc.login.sweep_family import with_values

from helpers import LUMI


def test_the_shared_work_gives_snapshots_own_text(monkeypatch):
    from dfm_hpc.login import compose
    from dfm_hpc.login.sweep_files import Files

    monkeypatch.setenv("WANDB_API_KEY", "wandb-secret-from-the-environment")
    base = compose.compose_config(["+experiment=munin_sft", *LUMI, "+cluster.env.HF_TOKEN=hf_abcdefghijklmnopqrstuvwx"])
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(base, resolve=True, enum_to_str=True)
    plain["cluster"]["env"]["NOTE"] = "token=hf_abcdefghijklmnopqrstuvwx"
    plain["api_key"] = "top-level-secret"  # a secret-named key at the top, and a list of mappings with one
    plain["cluster"]["setup"] = [*plain["cluster"]["setup"], "echo wandb-secret-from-the-environment"]
    points = [with_values(plain, {"sft.lr": lr, "name": f"run{i}"}) for i, lr in enumerate((1e-5, 2e-5, 3e-5))]
    files = Files()
    for config in points:
        values = redact.secret_values(config)
        assert files.secret_values(config) == values and "hf_abcdefghijklmnopqrstuvwx" in values
        text = files.config_text(config, values)
        assert text == yaml.dump(redact.redact_all(config, values), Dumper=rundir._DUMPER, sort_keys=False,
                                 allow_unicode=True)
        assert "hf_abcdefghijklmnopqrstuvwx" not in text and "top-level-secret" not in text
        assert "wandb-secret" not in text and yaml.safe_load(text)["sft"]["lr"] == config["sft"]["lr"]
