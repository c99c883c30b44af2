"""cluster=node's GPU discovery (dfm_hpc/gpus.py): the tools' published outputs (tests/data/gpus/README.md says
whose), what the visible-devices variables do to them, and the names -> throughput entries."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from dfm_hpc import gpus

from helpers import DATA

SAMPLES = DATA / "gpus"
H100 = (SAMPLES / "nvidia-smi-8xh100.csv").read_text()
RX7900 = (SAMPLES / "rocm-smi-rx7900xt.json").read_text()
MI250 = (SAMPLES / "rocm-smi-mi250.json").read_text()


def tools(nvidia=None, rocm=None, proc=None):
    """What each tool prints here (None: not installed, or it failed); proc: the driver's information files."""
    return lambda cmd: {"nvidia-smi": nvidia, "rocm-smi": rocm,
                        str(gpus.NVIDIA_PROC): proc and json.dumps(proc)}[cmd[0]]


# /proc/driver/nvidia/gpus/<bus>/information, its fields as the driver writes them (key, colon, tabs, value)
PROC_H100 = "Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t 0\nGPU UUID: \t GPU-5f2c\nDevice Minor: \t 0\n"


def test_nvidia_smi_rows():
    found = gpus.parse_nvidia_smi(H100)
    assert [g.id for g in found] == [str(i) for i in range(8)]
    assert {(g.name, g.memory_mib) for g in found} == {("NVIDIA H100 80GB HBM3", 81559)}
    assert found[0].describe() == "0: NVIDIA H100 80GB HBM3, 80 GiB"
    # with the UUID column dfm_hpc asks for; memory [N/A] (unified-memory parts) stays unknown; banners skipped
    row = gpus.parse_nvidia_smi("No devices were found\n3, NVIDIA GH200 480GB, [N/A], GPU-5f2c\n")
    assert row == [gpus.Gpu("3", "NVIDIA GH200 480GB", None, "GPU-5f2c")]


def test_rocm_smi_json_in_both_spellings():
    (rx,) = gpus.parse_rocm_smi(RX7900)
    assert (rx.id, rx.name, rx.memory_mib) == ("0", "Radeon RX 7900 XT", 21458059264 // 2**20)
    (mi,) = gpus.parse_rocm_smi(MI250)  # `-a` has no memory keys; "system" is not a card
    assert (mi.name, mi.memory_mib) == ("AMD INSTINCT MI250 (MCM) OAM AC MBA", None)
    old = '{"card1": {"Card series": "Vega 20"}, "card0": {"Card series": "Vega 10"}}'  # ROCm 5 spelling, unsorted
    assert [(g.id, g.name) for g in gpus.parse_rocm_smi("WARNING: ...\n" + old)] == [("0", "Vega 10"), ("1", "Vega 20")]
    assert gpus.parse_rocm_smi("ERROR: no GPUs") == []


def test_discovery_order_and_the_variables():
    found = gpus.discover({}, tools(nvidia=H100, rocm=RX7900))
    assert (len(found.gpus), found.var, found.source) == (8, "CUDA_VISIBLE_DEVICES", "nvidia-smi")
    amd = gpus.discover({}, tools(rocm=RX7900))
    assert (amd.var, amd.source, amd.gpus[0].name) == ("HIP_VISIBLE_DEVICES", "rocm-smi", "Radeon RX 7900 XT")
    # a visible-devices variable narrows the list, in its order, by index or UUID prefix; the ranks get the same one
    two = gpus.discover({"CUDA_VISIBLE_DEVICES": "6,2"}, tools(nvidia=H100))
    assert [(g.id, g.name) for g in two.gpus] == [("6", "NVIDIA H100 80GB HBM3"), ("2", "NVIDIA H100 80GB HBM3")]
    by_uuid = gpus.discover({"CUDA_VISIBLE_DEVICES": "GPU-5f"}, tools(nvidia="3, NVIDIA H200, 143771, GPU-5f2c\n"))
    assert [(g.id, g.name) for g in by_uuid.gpus] == [("GPU-5f", "NVIDIA H200")]
    # hidden on purpose: none, even where the tools list some
    for hidden in ("", "-1"):
        assert gpus.discover({"CUDA_VISIBLE_DEVICES": hidden}, tools(nvidia=H100)).gpus == ()
    # no nvidia-smi (a container without it): the driver's /proc files still give the count and the model
    proc = gpus.discover({}, tools(proc=[PROC_H100, PROC_H100.replace("Minor: \t 0", "Minor: \t 1")]))
    assert [g.describe() for g in proc.gpus] == ["0: NVIDIA H100 80GB HBM3", "1: NVIDIA H100 80GB HBM3"]
    assert proc.var == "CUDA_VISIBLE_DEVICES" and gpus.throughput_key(proc.gpus[0].name) == "h100"
    # no tool answers: the variable alone (the test cluster's fake GPUs), names unknown
    fake = gpus.discover({"CUDA_VISIBLE_DEVICES": "0,1"}, tools())
    assert [g.describe() for g in fake.gpus] == ["0: unknown GPU", "1: unknown GPU"] and fake.source == fake.var
    assert gpus.discover({}, tools()) == gpus.Found((), "CUDA_VISIBLE_DEVICES", "none")


@pytest.mark.parametrize("name, key", [
    ("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H100 PCIe", "h100"), ("NVIDIA H200", "h200"),
    ("NVIDIA B200", "b200"), ("NVIDIA A100-SXM4-80GB", "a100"), ("AMD Instinct MI300X OAM", "mi300x"),
    ("AMD INSTINCT MI250 (MCM) OAM AC MBA", "mi250x_gcd"), ("Radeon RX 7900 XT", None), ("NVIDIA L40S", None),
])
def test_names_map_to_throughput_entries(name, key):
    assert gpus.throughput_key(name) == key
    if key:
        assert key in OmegaConf.load("conf/throughput/default.yaml").devices


def test_the_resolver(monkeypatch):
    monkeypatch.setattr(gpus, "here", lambda: gpus.discover({}, tools(nvidia=H100)))
    assert [gpus.resolve(w) for w in ("count", "device", "memory_gb", "visible")] == \
        [8, "h100", 85.5, "CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7"]
    assert (gpus.resolve("ranks", 8), gpus.resolve("ranks", 3), gpus.resolve("ranks", 0)) == (8, 3, gpus.CPU_RANKS)
    assert (gpus.resolve("one", 8), gpus.resolve("one", 0)) == (1, 0)
    with pytest.raises(ValueError, match="node.yaml"):
        gpus.resolve("colour")
