"""`python -m dfm_hpc chat RUN` with a real tiny model here (cluster=local): the model's own chat template,
a system prompt, /reset, the transcript, and no process left behind, on end of input and on Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from helpers import dfm, run_dirs


def _children(run) -> list:
    out = subprocess.run(["pgrep", "-f", f"dfm_hpc.job.chat .*{run}"], capture_output=True, text=True).stdout
    return out.split()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("chat")
    p = dfm("+experiment=pipeline_tiny", "dry_run=true", cwd=cwd)
    assert p.returncode == 0, p.stderr
    (r,) = run_dirs(cwd)
    return r


def test_a_scripted_chat_in_the_models_own_template(run):
    questions = "Hvad hedder du?\n/reset\nHvor ligger Aarhus?\n"
    p = subprocess.run([sys.executable, "-m", "dfm_hpc", "chat", str(run), "--stage", "base", "--system",
                        "Svar kort.", "--temperature", "0", "--max-new-tokens", "4", "--show-prompt", "--save"],
                       input=questions, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    prompts = p.stdout.split("[prompt]\n")[1:]
    assert len(prompts) == 2
    # the tiny model's tokenizer renders ChatML: the system prompt, then only this conversation's turns
    assert "<|im_start|>system\nSvar kort.<|im_end|>\n<|im_start|>user\nHvad hedder du?" in prompts[0], prompts[0]
    assert "Hvad hedder du?" not in prompts[1] and "<|im_start|>user\nHvor ligger Aarhus?<|im_end|>" in prompts[1]
    assert "(new conversation)" in p.stdout and p.stdout.count("model> ") == 2
    (transcript,) = (run / "chat").glob("*_base.jsonl")
    turns = [json.loads(x) for x in transcript.read_text().splitlines()]
    assert [t["user"] for t in turns] == ["Hvad hedder du?", "Hvor ligger Aarhus?"]
    assert not _children(run)


def test_ctrl_c_ends_the_chat_and_its_model_process(run):
    p = subprocess.Popen([sys.executable, "-m", "dfm_hpc", "chat", str(run), "--stage", "base"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.time() + 120
        while not _children(run) and time.time() < end:
            time.sleep(0.2)
        assert _children(run), "the model process did not start"
        first = p.stdout.readline()  # the model is loaded when it says so
        assert "loaded in" in first, first
        p.send_signal(signal.SIGINT)  # as Ctrl-C does (the terminal's group: here the parent alone)
        assert p.wait(timeout=30) in (0, 130)
    finally:
        if p.poll() is None:
            p.kill()
    time.sleep(0.5)
    assert not _children(run)
