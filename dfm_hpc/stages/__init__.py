"""The stages: leaves, one module per stage with `run(cfg, ctx)` executed on every rank.

A stage imports dfm_hpc.job, dfm_hpc.text, dfm_hpc.tiny and the shared modules, never another stage
(the import contract in pyproject.toml checks it). The registry of names, order, inputs and which
stages train lives in dfm_hpc.registry.STAGES, so the login node never imports this package.
"""
