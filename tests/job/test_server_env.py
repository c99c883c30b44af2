"""The model server's environment as LUMI runs vLLM (job/server_env.py; issue #23 item 1): the GPU variables
on ROCm, the compile switch, caches under the job's stage dir, and the runtime's versions in the logs."""

from __future__ import annotations

import sys
from pathlib import Path

from dfm_hpc.job import serve, server_env

LUMI_RANK = {"HOME": "/users/alice", "ROCR_VISIBLE_DEVICES": "3", "SLURM_LOCALID": "3"}


def test_lumi_rendering_rocr_only_gives_hip_compile_off_and_caches_under_the_stage_dir(tmp_path):
    stage = tmp_path / "scratch" / "run" / "stages" / "evaluate" / "server"
    env = server_env.server_env(LUMI_RANK, stage / "cache", compile=False, rocm=True)
    # vLLM aborts with ROCR alone: HIP names the same GCD once ROCR is unset (dfm-evals' rule)
    assert env["HIP_VISIBLE_DEVICES"] == "3" and env["ROCR_VISIBLE_DEVICES"] is None
    assert env["MAP_HIP_TO_ROCR_VISIBLE_DEVICES"] == "1"
    assert env["TORCH_COMPILE_DISABLE"] == "1" and env["TORCHDYNAMO_DISABLE"] == "1"
    for name in ("VLLM_CACHE_ROOT", "VLLM_CONFIG_ROOT", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR",
                 "OUTLINES_CACHE_DIR"):
        assert Path(env[name]).is_relative_to(stage / "cache") and not env[name].startswith("/users/"), name
    applied = server_env.apply(LUMI_RANK, env)
    assert "ROCR_VISIBLE_DEVICES" not in applied and applied["HIP_VISIBLE_DEVICES"] == "3"


def test_hip_already_set_is_kept_compile_on_leaves_torch_alone_and_cuda_gets_no_gpu_variables(tmp_path):
    both = {**LUMI_RANK, "HIP_VISIBLE_DEVICES": "0"}
    env = server_env.server_env(both, tmp_path, compile=True, rocm=True)
    assert "HIP_VISIBLE_DEVICES" not in env and "ROCR_VISIBLE_DEVICES" not in env
    assert "TORCH_COMPILE_DISABLE" not in env and "TORCHDYNAMO_DISABLE" not in env
    cuda = server_env.server_env({"HOME": "/home/a", "CUDA_VISIBLE_DEVICES": "1"}, tmp_path, rocm=False)
    assert not {"HIP_VISIBLE_DEVICES", "MAP_HIP_TO_ROCR_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"} & set(cuda)


def test_a_cache_set_outside_home_is_kept_one_under_home_is_moved(tmp_path):
    environ = {"HOME": "/users/alice", "TRITON_CACHE_DIR": "/scratch/p/triton",
               "VLLM_CACHE_ROOT": "/users/alice/.cache/vllm", "TORCHINDUCTOR_CACHE_DIR": "~/inductor"}
    env = server_env.server_env(environ, tmp_path, rocm=True)
    assert "TRITON_CACHE_DIR" not in env
    assert env["VLLM_CACHE_ROOT"] == str(tmp_path / "vllm")
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")
    assert "XDG_CACHE_HOME" not in env and "HF_HOME" not in env  # the hub cache stays where the job put it


def test_versions_come_from_the_servers_own_interpreter(tmp_path):
    here = server_env.runtime_versions(sys.executable)
    assert here["torch"] and here["transformers"]  # the job's venv
    # a console script of another interpreter: its shebang is followed
    other = tmp_path / "bin" / "vllm"
    other.parent.mkdir()
    other.write_text(f"#!{sys.executable} -I\nprint('hi')\n")
    assert server_env.interpreter(str(other)) == sys.executable
    line = server_env.describe({"vllm": "0.9.2", "torch": "2.7.1", "hip_version": "6.4.1", "cuda_version": None})
    assert line == "vllm 0.9.2, torch 2.7.1, ROCm (HIP) 6.4.1"
    assert "CPU torch" in server_env.describe({"torch": "2.7.1", "hip_version": None, "cuda_version": None})


def test_the_server_starts_with_that_environment_and_logs_its_runtime(tmp_path, monkeypatch):
    """A real server process (a stub that prints its environment) started by serve.Server, as the
    evaluate job starts vLLM: ROCm detection forced on, since this machine's torch is CPU-only."""
    monkeypatch.setattr(server_env, "is_rocm", lambda: True)
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "5")
    monkeypatch.delenv("HIP_VISIBLE_DEVICES", raising=False)
    dump = tmp_path / "env.txt"
    stub = ("import http.server, os, sys; open(sys.argv[2], 'w').write(repr(dict(os.environ)))\n"
            "class H(http.server.BaseHTTPRequestHandler):\n"
            "    def do_GET(self): self.send_response(200); self.end_headers(); self.wfile.write(b'{}')\n"
            "    def log_message(self, *a): pass\n"
            "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n")
    said = []
    log = tmp_path / "stages" / "evaluate" / "server" / "server-0.log"
    with serve.Server(lambda p: [sys.executable, "-c", stub, str(p), str(dump)], 0, log, timeout_s=30,
                      say=said.append) as srv:
        assert srv.versions["torch"]
    seen = eval(dump.read_text())  # noqa: S307 - our own repr of a dict of strings
    assert seen["HIP_VISIBLE_DEVICES"] == "5" and "ROCR_VISIBLE_DEVICES" not in seen
    assert seen["TORCHDYNAMO_DISABLE"] == "1" and seen["VLLM_CACHE_ROOT"] == str(log.parent / "cache" / "vllm")
    first = log.read_text().splitlines()[0]
    assert first.startswith("dfm_hpc: model server runtime: ") and "torch " in first
    assert any(m.startswith("model server runtime: ") for m in said)
