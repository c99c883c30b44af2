"""Readable rank logs: the known library warnings are filtered by category and module, anything else
still shows; verbose brings everything back; a real training run's console has dfm_hpc's lines
(ETA, checkpoints) and no library noise, and a planted unknown warning is seen."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import dfm, run_dirs

# the messages as the libraries print them (dfm_hpc's locked versions), and the modules they come from
SEEN = [
    (FutureWarning, "torch.distributed.c10d_logger", "`torch.distributed.reduce_scatter_tensor` is deprecated. "
     "Please use `torch.distributed.reduce_scatter_single` instead."),
    (FutureWarning, "torch.distributed.c10d_logger", "`torch.distributed.all_gather_into_tensor` is deprecated. "
     "Please use `torch.distributed.all_gather_single` instead."),
    (FutureWarning, "transformers.modeling_utils", "`is_gradient_checkpointing` is deprecated and will be removed "
     "in v6. Use `is_activation_checkpointing` instead."),
    (UserWarning, "torch.utils.data.dataloader", "'pin_memory' argument is set as true but no accelerator is "
     "found, then device pinned memory won't be used."),
]

EMIT = """
import sys, warnings
from dfm_hpc.job.rank import quiet_libraries
quiet_libraries(verbose=sys.argv[1] == "1", gpus=0)
for i, (cat, module, msg) in enumerate(SEEN):
    warnings.warn_explicit(msg, cat, module.replace(".", "/") + ".py", 10 + i, module=module)
# unknown: a new message, the same message from another module, another category from a known module
warnings.warn_explicit("planted: something is really wrong", UserWarning, "dfm_hpc/stages/sft.py", 1,
                       module="dfm_hpc.stages.sft")
warnings.warn_explicit(SEEN[3][2], UserWarning, "mylib/loader.py", 2, module="mylib.loader")
warnings.warn_explicit("`torch.distributed.reduce_scatter_tensor` is deprecated.", RuntimeWarning,
                       "torch/distributed/c10d_logger.py", 3, module="torch.distributed.c10d_logger")
"""


def _emit(verbose: bool) -> str:
    code = "SEEN = " + repr([(c.__name__, m, t) for c, m, t in SEEN]).replace("'FutureWarning'", "FutureWarning") \
        .replace("'UserWarning'", "UserWarning") + "\n" + EMIT
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS",)}
    p = subprocess.run([sys.executable, "-c", code, "1" if verbose else "0"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stderr


def test_known_warnings_are_silenced_and_unknown_ones_still_show():
    err = _emit(verbose=False)
    for i, (_, module, _) in enumerate(SEEN):
        assert f"{module.replace('.', '/')}.py:{10 + i}:" not in err, err
    assert "planted: something is really wrong" in err
    assert "mylib/loader.py" in err  # the same words from another module are not the known warning
    assert "RuntimeWarning" in err  # nor is another category from a known module
    assert err.count("Warning:") == 3


def test_verbose_shows_the_libraries_full_output():
    err = _emit(verbose=True)
    for i, (_, module, _) in enumerate(SEEN):
        assert f"{module.replace('.', '/')}.py:{10 + i}:" in err
    assert "planted: something is really wrong" in err


@pytest.mark.e2e
def test_a_training_run_logs_dfm_hpc_lines_and_a_planted_warning_but_no_library_noise(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    # every process of the run plants one unknown warning when it exits (after the filters are set)
    (site / "sitecustomize.py").write_text(
        "import atexit, warnings\n"
        "atexit.register(lambda: warnings.warn('planted by test_logs: unknown', UserWarning))\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    p = dfm("+experiment=sft_tiny", "stages=[sft]", "sft.max_steps=4", "sft.save_every_steps=2",
            "sft.log_every_steps=2", cwd=tmp_path, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    logs = run / "stages" / "sft" / "logs"
    rank0, rank1 = (logs / "rank-0.log").read_text(), (logs / "rank-1.log").read_text()
    for text in (p.stdout, rank0, rank1):
        assert "FutureWarning" not in text and "{'loss'" not in text and "it/s]" not in text
        assert "Setting accelerator to CPU" not in text
    assert "planted by test_logs: unknown" in rank0 and "planted by test_logs: unknown" in rank1
    assert "planted by test_logs: unknown" in p.stdout  # rank 0's log is what the console shows
    assert "ETA 00:" in rank0 and "checkpoint at step 2" in rank0 and "data: " in rank0
    assert "predicted" in rank0 and "SFT, LoRA r=4" in rank0  # the stage's start line: what, where, how long
    assert "rank 1/2" not in p.stdout  # only rank 0 on the console
    assert p.stdout.rstrip().splitlines()[-1].startswith("└")  # ends with the summary table


def test_progress_prints_the_first_chunk_then_once_a_minute_and_the_last():
    """A 20-hour translation must not print every chunk; a person still sees the first rate and the end."""
    from dfm_hpc.job.progress import Progress

    now = [0.0]
    p = Progress(total=100, every_s=60, clock=lambda: now[0])
    p.resumed(40)  # an earlier start's work: done, but not this process's rate
    printed = []
    for _ in range(6):  # 10 units every 20 s
        now[0] += 20
        p.add(10)
        printed.append(p.due())
    assert printed == [True, False, False, True, False, True]  # first; 60 s after it; the last
    assert p.done == 100 and p.rate == 60 / 120 and p.eta == "00:00:00"
    q = Progress(total=30, every_s=60, clock=lambda: now[0])
    now[0] += 10
    q.add(10)
    assert q.rate == 1.0 and q.eta == "00:00:20"


def test_benchmark_scores_read_as_value_and_stderr():
    from dfm_hpc.job.harness import scores_line

    line = scores_line({"acc": 0.2, "acc_stderr": 0.0917, "acc_norm": None, "n": 3})
    assert line == "acc 0.200 ± 0.092, acc_norm None, n 3"


def test_durations_read_as_slurm_shows_them_past_a_day():
    """A 48 h CPT job's elapsed time and a multi-day ETA must not wrap at 24 h (strftime's %H does)."""
    from dfm_hpc.predict import duration

    assert duration(0) == "00:00:00" and duration(59.6) == "00:01:00" and duration(3 * 3600 + 62) == "03:01:02"
    assert duration(86400 + 3661) == "1-01:01:01" and duration(158.4 * 3600) == "6-14:24:00"
    assert duration(-5) == "00:00:00"
