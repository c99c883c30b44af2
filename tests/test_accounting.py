"""The one sacct reader (dfm_hpc.accounting): status parses sacct's output with it on the login
node; the card reads what each job's batch script recorded host side (LUMI's containers have no
sacct). The real-cluster side is in test_pipeline.py (the card's compute table on Slurm)."""

from __future__ import annotations

import subprocess

from dfm_hpc import accounting

SACCT = "123|COMPLETED|2|3600\n124_0|REQUEUED|1|100\n124_0|COMPLETED|1|50\n124_1|CANCELLED by 0|1|7\n\n"


def test_parse_and_latest():
    rows = accounting.parse(SACCT)
    assert rows[0] == accounting.Row("123", "COMPLETED", 2, 3600)
    assert rows[3].state == "CANCELLED"
    assert accounting.latest(rows)["124_0"].state == "COMPLETED"  # a requeued job: its last run
    assert accounting.command(["1", "2"]) == ["sacct", "-X", "-P", "-n", "-j", "1,2",
                                              "--format=JobID,State,NNodes,ElapsedRaw"]


def test_recorded_rows_of_a_job_and_of_an_array(tmp_path):
    d = tmp_path / "submitit" / accounting.RECORD_DIR
    d.mkdir(parents=True)
    (d / "123.psv").write_text("123|RUNNING|2|3600\n")
    (d / "200.psv").write_text("124_0|REQUEUED|1|100\n124_0|RUNNING|1|50\n")
    (d / "201.psv").write_text("124_1|RUNNING|1|10\n")
    folders = [tmp_path / "submitit", tmp_path / "missing"]
    assert accounting.node_hours(accounting.recorded(folders, "123")) == 2.0
    assert accounting.node_hours(accounting.recorded(folders, "124")) == 160 / 3600  # every run of every task
    assert accounting.node_hours(accounting.recorded(folders, "124_1")) == 10 / 3600
    assert accounting.recorded(folders, "12") == [] and accounting.node_hours([]) is None


def test_record_line_writes_what_parse_reads(tmp_path):
    """The batch script's line, run by bash with a stand-in sacct that prints what sacct would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sacct").write_text(f'#!/bin/sh\necho "$*" >{tmp_path}/args\necho "77|RUNNING|1|42"\n')
    (bin_dir / "sacct").chmod(0o755)
    folder = tmp_path / "job folder"
    line = accounting.record_line(folder)
    out = subprocess.run(["bash", "-c", line], env={"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_JOB_ID": "77"},
                         capture_output=True, text=True)
    assert out.returncode == 0
    assert (tmp_path / "args").read_text() == "-X -D -P -n -j 77 --format=JobID,State,NNodes,ElapsedRaw\n"
    assert accounting.recorded([folder], "77") == [accounting.Row("77", "RUNNING", 1, 42)]
    # without sacct the job goes on (|| true)
    assert subprocess.run(["/bin/bash", "-c", line], env={"PATH": "/nonexistent", "SLURM_JOB_ID": "78"}).returncode == 0
