"""Issue #22, the acceptance line: with a foreign HTTP server on 127.0.0.1:8000 (vLLM's default, the
address the evaluate job used to take) answering /health and /v1/models with the generic names, a tiny
served evaluate (`evaluate.server=transformers`, `cluster=local`, and as a job on the 2-node Slurm, whose
nodes share this host's network as small-g jobs share a node) still scores its own model, and no request
reaches the foreign server. About 40 s each on 2 CPU cores."""

from __future__ import annotations

import json
import math
import re

import pytest

from helpers import REPO, dfm, run_dirs, wait_for
from helpers.foreign_server import Foreign


@pytest.mark.e2e
@pytest.mark.parametrize("cluster", ["local", pytest.param("slurm", marks=pytest.mark.slurm)])
def test_a_squatter_on_the_old_evaluate_address_is_never_asked(tmp_path, cluster, request):
    if cluster == "slurm":
        request.getfixturevalue("slurm_cluster")
    try:
        squatter = Foreign(8000)
    except OSError:
        pytest.skip("127.0.0.1:8000 is in use on this machine")
    with squatter:
        r = dfm("+experiment=sft_tiny", "stages=[evaluate]", "evaluate.models=[base]", "evaluate.euroeval=false",
                "evaluate.server=transformers", "evaluate.lm_eval_tasks=[tiny:danish_mc_gen]",
                "evaluate.lm_eval_limit=4", "evaluate.generation_prompts=1", "evaluate.max_new_tokens=4",
                "evaluate.max_eval_texts=5", f"cluster={cluster}", f"runs_root={tmp_path / 'runs'}", cwd=REPO,
                timeout=600)
        if cluster == "slurm":  # the job's own output: its rank log, once the stage has ended
            (run,) = run_dirs(tmp_path)
            ev = run / "stages" / "evaluate"
            wait_for(lambda: (ev / "DONE").exists() or (ev / "FAILED").exists(), timeout=600, every=0.5,
                     what="the evaluate job")
            r.stdout += (ev / "logs" / "rank-0.log").read_text()
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert squatter.hits == [], f"the foreign server was asked {squatter.hits}"
    (run,) = run_dirs(tmp_path)
    (m,) = json.loads((run / "stages" / "evaluate" / "results.json").read_text())["models"]
    assert m["name"] == "base" and m["notes"] == [], m["notes"]
    assert m["serving"]["backend"] == "transformers" and m["serving"]["completion_tokens"] > 0
    assert 0 <= m["benchmarks"]["lm-eval/dfm_danish_mc_gen"]["scores"]["exact_match (letter)"] <= 1
    assert math.isfinite(m["eval_loss"])
    log = (run / "stages" / "evaluate" / "server" / "server-0.log").read_text()
    served = re.search(r"model server healthy on port (\d+) after [\d.]+ s, serving (base-[0-9a-f]{8})", out)
    assert served and served.group(1) != "8000", out[-3000:]  # the job's own port and its nonce'd name
    assert "8000" not in re.findall(r"--port (\d+)", out) and log
