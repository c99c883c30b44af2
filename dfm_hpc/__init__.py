"""dfm_hpc: the Danish Foundation Models job framework for LUMI."""

import os
from pathlib import Path

__version__ = "0.1.0"

# the Hydra config groups (a checkout's conf/; DFM_HPC_CONF points elsewhere). In the package root so that
# `--help` reads conf/ without importing Hydra (schema and config_io do).
CONF_DIR = Path(os.environ.get("DFM_HPC_CONF", Path(__file__).resolve().parent.parent / "conf"))
