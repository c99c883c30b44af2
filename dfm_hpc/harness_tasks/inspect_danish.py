"""dfm_danish_qa, an inspect_ai task: 20 short Danish questions that dfm_hpc writes (danish_qa.json beside this
file, MIT like the project). The model answers freely; an answer counts when it contains one of the item's
accepted forms (inspect's `includes`, case-insensitive), so a chat model needs no answer format.

Run by the evaluate stage (`evaluate.inspect_tasks: [dfm:danish_qa]`) from the harness environment against the
job's server; by hand: `inspect eval dfm_hpc/harness_tasks/inspect_danish.py@dfm_danish_qa --model ...`.
Imports inspect_ai: only the harness environment loads this file.
"""

from __future__ import annotations

import json
from pathlib import Path

from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import GenerateConfig
from inspect_ai.scorer import includes
from inspect_ai.solver import generate

DATA = Path(__file__).resolve().with_name("danish_qa.json")
# in the user turn, not a system message: not every chat template has a system role
PROMPT = "Svar kort på dansk, med et eller få ord.\n\nSpørgsmål: {question}"


@task
def dfm_danish_qa() -> Task:
    data = json.loads(DATA.read_text(encoding="utf-8"))
    samples = [Sample(id=it["id"], input=PROMPT.format(question=it["question"]), target=it["answers"])
               for it in data["items"]]
    return Task(dataset=MemoryDataset(samples, name="dfm_danish_qa", location=str(DATA)), solver=generate(),
                scorer=includes(), config=GenerateConfig(temperature=0.0, max_tokens=32), version=data["version"])
