"""The serving job's entry (job/chat_server.py) as a process, as the chat's Slurm job runs it: an SFT-style LoRA
adapter on the tiny model, merged for `transformers serve` (which cannot load one), served on the job's own
port under the nonce'd name, its address written, a streamed reply through the login side's client, and
scancel's TERM ending it with the server and the address file gone. About 15 s on 2 CPU cores."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from dfm_hpc.job import serve
from dfm_hpc.login import chat_remote

from helpers import wait_for


def _adapter(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dfm_hpc.tiny.models import resolve

    base = resolve("tiny:llama", tmp_path / "cache")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=4, target_modules=["q_proj"]))
    out = tmp_path / "stages" / "sft" / "model"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


@pytest.mark.e2e
def test_the_serving_job_serves_a_merged_adapter_at_its_own_address_until_terminated(tmp_path):
    adapter = _adapter(tmp_path)
    job = 4343
    env = {**os.environ, "SLURM_JOB_ID": str(job), "SLURMD_NODENAME": "127.0.0.1"}
    proc = subprocess.Popen([sys.executable, "-m", "dfm_hpc.job.chat_server", str(adapter), "--name", "run-sft",
                             "--run-dir", str(tmp_path), "--backend", "transformers", "--timeout-s", "300"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    address = tmp_path / "chat" / f"server.{job}"
    try:
        wait_for(lambda: address.exists() or proc.poll() is not None, timeout=300, every=0.3, what="the address")
        assert address.exists(), proc.communicate()[0][-3000:]
        info = json.loads(address.read_text())
        assert re.fullmatch(r"run-sft-[0-9a-f]{8}", info["model"]) and info["host"] == "127.0.0.1"
        assert serve.PORT_LO <= info["port"] < serve.PORT_LO + serve.PORT_SPAN  # the job's own range, not 8000
        assert (tmp_path / "chat" / "merged-run-sft" / "config.json").is_file()  # merged once, for the server
        base = f"http://127.0.0.1:{info['port']}/v1"
        assert chat_remote.served_ids(base) == [info["model"]]
        body = {"model": info["model"], "messages": [{"role": "user", "content": "Hej"}], "max_tokens": 4,
                "temperature": 0.0}
        assert "".join(chat_remote.stream_chat(base, body))
        proc.send_signal(signal.SIGTERM)  # scancel
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "stopping: signal SIGTERM" in out and "model server stopped" in out, out[-3000:]
    assert not address.exists()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", info["port"])) != 0  # nobody listens there any more
    left = subprocess.run(["pgrep", "-f", f"transformers serve {info['model']}"], capture_output=True, text=True)
    assert not left.stdout.split()
