"""How the subcommands that read run dirs (status, logs, cancel) meet bad input: a damaged run dir is
reported in one line, bad input exits 2 with one paragraph on stderr, never a traceback."""

from __future__ import annotations

import sys

from dfm_hpc import redact, rundir


def why(e: BaseException) -> str:
    """An exception in one line: its type and the first line of its message."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


def errors():
    """What reading a damaged run dir can raise, the parsers' errors included (imported only when needed)."""
    import yaml
    from omegaconf.errors import OmegaConfBaseException

    return rundir.UNREADABLE + (yaml.YAMLError, OmegaConfBaseException)


def fail(message: str) -> int:
    """Bad input: one paragraph on stderr, exit 2."""
    print(f"dfm_hpc: {redact.redact_text(message)}", file=sys.stderr)
    return 2
