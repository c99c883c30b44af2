"""What a score is bound to (job/scored.py): the weights' content hash, the run's snapshot, the image, the
versions. Tiny files on disk, no model: fast."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from dfm_hpc.job import eval_progress, scored


def _model(d: Path, weights: bytes = b"\x00\x01" * 100, extra: bytes = b"") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "model-00001-of-00002.safetensors").write_bytes(weights)
    (d / "model-00002-of-00002.safetensors").write_bytes(b"second shard" + extra)
    (d / "config.json").write_text('{"model_type": "llama"}')
    return d


def _adapter(d: Path, base: Path, weights: bytes = b"lora") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "adapter_model.safetensors").write_bytes(weights)
    (d / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    return d


def test_same_files_same_hash_and_one_byte_changes_it(tmp_path):
    a, b = _model(tmp_path / "a"), _model(tmp_path / "b")
    os.utime(b / "model-00001-of-00002.safetensors", (1, 1))  # another mtime: the cheap identity differs
    ha, hb = scored.content_hash(str(a)), scored.content_hash(str(b))
    assert ha["sha256"] == hb["sha256"] and len(ha["sha256"]) == 64
    assert ha["files"] == 2 and ha["bytes"] == 200 + len(b"second shard") and ha["base"] is None
    assert eval_progress.weights_id(str(a)) != eval_progress.weights_id(str(b))
    c = _model(tmp_path / "c", weights=b"\x00\x01" * 99 + b"\x00\x02")  # one byte
    assert scored.content_hash(str(c))["sha256"] != ha["sha256"]
    # what is not weights does not count: the config, the trainer's settings
    (a / "config.json").write_text('{"model_type": "other"}')
    (a / "training_args.bin").write_bytes(b"settings")
    assert scored.content_hash(str(a))["sha256"] == ha["sha256"]
    # a renamed shard is other weights (names are hashed with the bytes)
    (b / "model-00002-of-00002.safetensors").rename(b / "model-00003-of-00003.safetensors")
    assert scored.content_hash(str(b))["sha256"] != ha["sha256"]


def test_adapter_hash_covers_its_base(tmp_path):
    base = _model(tmp_path / "base")
    ad = _adapter(tmp_path / "sft", base)
    first = scored.content_hash(str(ad))
    assert first["base"]["sha256"] == scored.content_hash(str(base))["sha256"]
    assert first["base"]["path"] == str(base) and first["files"] == 1
    _model(base, extra=b"!")  # the same adapter on changed base weights: another model
    second = scored.content_hash(str(ad))
    assert second["sha256"] != first["sha256"] and second["base"]["sha256"] != first["base"]["sha256"]
    # a base that is nowhere here: the adapter's hash is unknown, and says why
    gone = _adapter(tmp_path / "dpo", tmp_path / "missing")
    h = scored.content_hash(str(gone))
    assert h["sha256"] is None and "missing" in h["why"]
    assert scored.content_hash(str(tmp_path / "nothing"))["sha256"] is None


def test_hub_id_resolves_to_its_cached_snapshot_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--org--tiny"
    snap = _model(repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert scored.content_hash("org/tiny")["sha256"] == scored.content_hash(str(snap))["sha256"]
    assert scored.content_hash("org/not-cached")["sha256"] is None


def test_run_snapshot_image_and_versions(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "x" / "2026-12-06_10-00-00_abcdef"
    model = _model(run / "stages" / "sft" / "model")
    (run / "config.yaml").write_text("name: x\n")
    (run / "provenance.json").write_text(json.dumps({"created": "2026-12-06T10:00:00+0000", "git_commit": "c0ffee",
                                                     "git_dirty": False}))
    assert scored.run_of(str(model)) == run.resolve()
    snap = scored.run_snapshot(scored.run_of(str(model)))
    assert snap["snapshot"] == run.name and snap["git_commit"] == "c0ffee"
    assert snap["config_sha256"] == hashlib.sha256(b"name: x\n").hexdigest()
    assert scored.run_of(str(_model(tmp_path / "elsewhere"))) is None
    # the image: size+mtime, or the sidecar's sha256; the container's own variable wins over the config
    image = tmp_path / "img.sif"
    image.write_bytes(b"squash")
    for k in scored.IMAGE_ENV:
        monkeypatch.delenv(k, raising=False)
    fp = scored.image_fingerprint(str(image))
    assert fp["size"] == 6 and fp["source"] == "size+mtime" and "sha256" not in fp
    (tmp_path / "img.sif.sha256").write_text("deadbeef  img.sif\n")
    assert scored.image_fingerprint(str(image))["sha256"] == "deadbeef"
    assert scored.image_fingerprint(None) is None
    monkeypatch.setenv("APPTAINER_CONTAINER", str(tmp_path / "other.sif"))
    assert scored.image_fingerprint(str(image)) == {"path": str(tmp_path / "other.sif"), "exists": False}
    # finish: the harnesses' versions from the benchmarks, the server's from its serving record
    row = {"benchmarks": {"lm-eval/x": {"meta": {"harness": "lm-eval", "harness_version": "0.4.13"}},
                          "euroeval/a/b": {"meta": {"harness": "euroeval", "harness_version": "16.11.0"}}},
           "serving": {"runtime": {"vllm": "0.10.1", "torch": "2.7.1"}}, "bound_to": {"harnesses": {}}}
    b = scored.finish(row)["bound_to"]
    assert b["harnesses"] == {"lm-eval": "0.4.13", "euroeval": "16.11.0"} and b["server"]["vllm"] == "0.10.1"
    assert scored.model_ref("org/model") == "org/model" and scored.model_ref(str(model)) == str(model.resolve())
