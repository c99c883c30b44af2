"""Card and datasheet templates as Markdown files beside this module, filled with `render(name, values)`.

`string.Template` placeholders (`$name`): the text of a card is read and edited as Markdown, and config
values are only ever substituted as text, never evaluated.
"""

from __future__ import annotations

from pathlib import Path
from string import Template
from typing import Dict

HERE = Path(__file__).resolve().parent


def render(name: str, values: Dict[str, object]) -> str:
    """Template NAME (e.g. model_card.md) with every $placeholder filled; a missing value is a KeyError."""
    return Template((HERE / name).read_text(encoding="utf-8")).substitute({k: str(v) for k, v in values.items()})
