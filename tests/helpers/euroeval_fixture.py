"""What EuroEval reads offline, written by the tests (no Hub): a small angry-tweets dataset and the
two metrics its sentiment task scores with.

- the dataset: the layout `datasets.load_dataset("EuroEval/angry-tweets-mini", cache_dir=C)` finds
  offline (datasets 5 never reads hub snapshot files in offline mode; it falls back to the prepared
  cache C/EuroEval___angry-tweets-mini/default/0.0.0/<commit>/): made by datasets' own Parquet
  builder from parquet files in a hub-style snapshot dir, under the repo's cache name;
- the metrics: `evaluate.load("matthews_correlation")` / `("f1")` offline load the newest cached module
  under $HF_MODULES_CACHE/evaluate_modules/metrics/evaluate-metric--NAME/<64-hex hash>/NAME.py. The
  scripts written there are this project's stand-ins (scikit-learn, like the Hub's), not the Hub's.

Run with EuroEval's own python (the .venv-euroeval): `python tests/helpers/euroeval_fixture.py CACHE MODULES`.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

COMMIT = "0" * 32 + "d0e0e0e0"  # a fake commit id: the snapshot dir's name
ROWS = [("Sikke en dejlig dag det er i dag", "positive"), ("Jeg er så træt af al den regn", "negative"),
        ("Toget kører klokken otte fra Odense", "neutral"), ("Tak for en fantastisk koncert", "positive"),
        ("Det var en elendig kamp", "negative"), ("Mødet er flyttet til tirsdag", "neutral")]
SPLITS = {"train": 12, "val": 8, "test": 8}

METRIC = '''"""dfm_hpc test stand-in for the Hub's evaluate-metric/{name} (scikit-learn)."""
import datasets
import evaluate
from sklearn.metrics import {fn}


class {cls}(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="{name}", citation="", inputs_description="",
                                   features=datasets.Features({{"predictions": datasets.Value("int32"),
                                                               "references": datasets.Value("int32")}}))

    def _compute(self, predictions, references, **kwargs):
        kwargs = {{k: v for k, v in kwargs.items() if k in {keys}}}
        return {{"{name}": float({fn}(references, predictions, **kwargs))}}
'''


def write_dataset(cache: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.packaged_modules.parquet.parquet import Parquet

    snap = cache / "_snapshot" / "datasets--EuroEval--angry-tweets-mini" / "snapshots" / COMMIT / "data"
    snap.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, n in SPLITS.items():
        rows = [ROWS[i % len(ROWS)] for i in range(n)]
        files[split] = [str(snap / f"{split}-00000-of-00001.parquet")]
        pq.write_table(pa.table({"text": [t for t, _ in rows], "label": [lab for _, lab in rows]}), files[split][0])
    builder = Parquet(cache_dir=str(cache), dataset_name="angry-tweets-mini", config_name="default", hash=COMMIT,
                      data_files=files)
    builder.download_and_prepare()
    # the prepared copy under the name and config a Hub load gives it
    built = Path(builder.cache_dir)  # cache/angry-tweets-mini/default-<id>/0.0.0/<commit>
    target = cache / "EuroEval___angry-tweets-mini" / "default" / "0.0.0" / COMMIT
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(built), str(target))
    shutil.rmtree(cache / "angry-tweets-mini")
    shutil.rmtree(cache / "_snapshot")
    return target


def write_metrics(modules: Path) -> None:
    specs = {"matthews_correlation": ("matthews_corrcoef", "MatthewsCorrelation", "('sample_weight',)"),
             "f1": ("f1_score", "F1", "('labels', 'pos_label', 'average', 'sample_weight')")}
    root = modules / "evaluate_modules"
    for d in (root, root / "metrics"):
        d.mkdir(parents=True, exist_ok=True)
        (d / "__init__.py").touch()
    for name, (fn, cls, keys) in specs.items():
        code = METRIC.format(name=name, fn=fn, cls=cls, keys=keys)
        d = root / "metrics" / f"evaluate-metric--{name}"
        h = d / hashlib.sha256(code.encode()).hexdigest()
        h.mkdir(parents=True, exist_ok=True)
        (d / "__init__.py").touch()
        (h / "__init__.py").touch()
        (h / f"{name}.py").write_text(code)


if __name__ == "__main__":
    write_dataset(Path(sys.argv[1]))
    write_metrics(Path(sys.argv[2]))
