"""The PII filter's optional second pass: names and street addresses found by a Danish token-
classification (NER) model, e.g. one with PER/LOC/ORG/MISC labels from the Hub, loaded the way
every job loads a model (offline from the prefetched cache, `pii.ner` names it).

PER entities become `name` spans (adjacent PER pieces joined); a LOC entity followed by a house
number ("Nørrebrogade 12", "Vestergade 4B, 2. th.") becomes an `address` span, from the street to
the end of the number and floor. Other LOC, ORG and MISC entities stay: a town or a company is no
personal information. The spans go to `pii.find(..., extra=...)`, where the pattern types win every
overlap. transformers is imported only when a pass is built (the login node never builds one).
"""

from __future__ import annotations

import re
from typing import Iterable, List, Sequence, Tuple

Span = Tuple[int, int, str]

# house number, letter, floor and side after a street: "12", "4B", "4 B, 2. th.", "17, st. tv."
_HOUSE = re.compile(r"[ \t]+\d{1,4}(?:[ \t]?[A-Za-z](?![\w]))?"
                    r"(?:,?[ \t]*(?:st|kl|\d{1,2})\.?[ \t]*(?:th|tv|mf)?\.?)?(?!\d)")
_CHUNK = 1000  # characters per model input: far below 512 tokens, so nothing is truncated


def entity_spans(text: str, entities: Iterable[dict]) -> List[Span]:
    """name and address spans from a token-classification pipeline's aggregated entities."""
    out: List[Span] = []
    for ent in sorted(entities, key=lambda x: x["start"]):
        group = str(ent.get("entity_group") or ent.get("entity", "")).upper().split("-")[-1]
        s, e = int(ent["start"]), int(ent["end"])
        while s < e and text[s].isspace():
            s += 1
        if s >= e:
            continue
        if group.startswith("PER"):
            if out and out[-1][2] == "name" and text[out[-1][1]:s].strip() == "":
                out[-1] = (out[-1][0], e, "name")  # "Jens" + "Hansen": one name
            else:
                out.append((s, e, "name"))
        elif group.startswith("LOC"):
            m = _HOUSE.match(text, e)
            if m:
                out.append((s, m.end(), "address"))
    return out


def chunks(text: str, size: int = _CHUNK) -> List[Tuple[int, str]]:
    """(offset, piece) cuts at whitespace, each at most about `size` characters."""
    out, pos = [], 0
    while pos < len(text):
        end = min(len(text), pos + size)
        if end < len(text):
            cut = text.rfind(" ", pos + size // 2, end)
            end = cut + 1 if cut > pos else end
        out.append((pos, text[pos:end]))
        pos = end
    return out


class NerPass:
    """One model, loaded once per worker; `spans(texts)` runs it in batches."""

    def __init__(self, name_or_path: str, revision: str | None = None, batch_size: int = 32):
        from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

        from dfm_hpc.job.device import torch_device

        tok = AutoTokenizer.from_pretrained(name_or_path, revision=revision)
        model = AutoModelForTokenClassification.from_pretrained(name_or_path, revision=revision)
        device = torch_device()  # this rank's GPU: every task of a LUMI node sees all 8 GCDs ("0" is GCD 0)
        self.pipe = pipeline("token-classification", model=model, tokenizer=tok, aggregation_strategy="simple",
                             device=device)
        self.batch_size = batch_size
        self.labels = sorted(set(model.config.id2label.values()))

    def spans(self, texts: Sequence[str]) -> List[List[Span]]:
        pieces = [(k, off, piece) for k, t in enumerate(texts) for off, piece in chunks(t) if piece.strip()]
        results = self.pipe([p for _, _, p in pieces], batch_size=self.batch_size) if pieces else []
        ents: List[List[dict]] = [[] for _ in texts]
        for (k, off, _), found in zip(pieces, results):
            ents[k] += [{**x, "start": x["start"] + off, "end": x["end"] + off} for x in found]
        return [entity_spans(t, e) for t, e in zip(texts, ents)]
