"""The one atomic write: a file appears whole or not at all, even with several ranks writing it at once.

Standard library only (both worlds). Readers never see a half-written file because the data goes to a
private temporary name in the same directory and is renamed into place (rename is atomic on POSIX, also
on Lustre); a process that dies leaves only its temporary file, never a torn target.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator, Union


@contextlib.contextmanager
def atomic_open(path: Union[str, Path], mode: str = "w", encoding: str = "utf-8") -> Iterator[IO]:
    """`with atomic_open(p) as f: f.write(...)`: p is replaced only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": encoding})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Union[str, Path], data: Union[str, bytes]) -> Path:
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return Path(path)
