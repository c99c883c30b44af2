"""The login node: compose, validate, plan, snapshot, submit; status, logs, cancel, rerun, compare, prefetch.

Light by contract: nothing here imports torch & co., a stage, dfm_hpc.text, dfm_hpc.tiny or a rank's code
(pyproject.toml's import contract, checked by `lint-imports` in `make test`).
"""
