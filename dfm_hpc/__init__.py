"""dfm_hpc: the Danish Foundation Models job framework for LUMI."""

__version__ = "0.1.0"
