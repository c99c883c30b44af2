"""The `tiny:` scheme in one home: tiny models (`models.py`) and tiny data (`data.py`) for tests and the demo.

`resolve("tiny:llama")` builds a model (`tiny:<family>`: today's architectures, families.py);
`resolve_data("tiny:oasst2", cache)` writes a data file. Real sources
(hub ids, local paths) pass through unchanged, so the real loading code runs on both.
"""

from dfm_hpc.tiny.data import resolve_data  # noqa: F401
from dfm_hpc.tiny.families import FAMILIES, build_tiny_family  # noqa: F401
from dfm_hpc.tiny.models import BUILDERS, LANG_TOKENS, build_tiny_llama, build_tiny_t5, resolve  # noqa: F401
