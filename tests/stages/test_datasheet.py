"""The merge stage's datasheet, rendered from a report as the stage writes it: compared with the text
captured before it moved from an f-string in stages/merge.py to templates/datasheet.md (tests/golden/)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from dfm_hpc.schema import Config
from dfm_hpc.stages import merge

from helpers import GOLDEN

# report.json of a merge of OASST2 translated by MADLAD-400 (the keys merge.run writes)
REPORT = {
    "messages": 1145, "usable": 1096, "flags": {"untranslated": 31, "repetition": 7, "empty": 2, "length_ratio": 12},
    "trees": 95, "sft_conversations": 95, "dpo_pairs": 207, "sft_path": "best", "sft_top_k": None,
    "source_messages": 1167, "source_trees": 100, "source_layout": "trees", "duplicates_dropped": 3,
    "filters": {"drop_synthetic": True, "drop_deleted": True, "lang": "en"},
    "filter_counts": {"input": 1167, "kept": 1145, "tree_state": 0, "synthetic": 22},
    "translator": "google/madlad400-3b-mt", "translator_revision": "a1b2c3d", "backend": "ctranslate2",
    "source": "OpenAssistant/oasst2", "source_revision": "e5f6a7b",
}
CASES = {
    # the defaults: the best path of each tree, every flag dropped
    "best": (REPORT, {}),
    # every path (at most 3), nothing dropped, no flag raised, no filter settings, an older plan.json
    # without the source summary, a larger dataset
    "all": ({**REPORT, "messages": 12_000, "flags": {}, "sft_path": "all", "sft_top_k": 3, "filters": {},
             "source_messages": None, "source_trees": None, "source_layout": None, "duplicates_dropped": 0},
            {"sft_path": "all", "sft_top_k": 3, "drop": [], "min_length_ratio": 0.5, "max_length_ratio": 2.0}),
    # every path, no limit; a small dataset; some flags dropped
    "all_paths": ({**REPORT, "messages": 500, "sft_path": "all", "sft_top_k": None},
                  {"sft_path": "all", "drop": ["empty", "repetition"]}),
}


def _cfg(merge_cfg: dict):
    return OmegaConf.merge(OmegaConf.structured(Config), {"merge": merge_cfg})


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_datasheet_reads_as_it_always_has(case):
    report, merge_cfg = CASES[case]
    assert merge.dataset_card(report, _cfg(merge_cfg)) == (GOLDEN / f"datasheet_{case}.md").read_text(encoding="utf-8")
