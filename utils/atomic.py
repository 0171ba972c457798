"""The one atomic writer of the project: every file is written to a hidden temporary sibling, then
renamed onto its name, so a crash, a signal or a full disk leaves the previous file or none, never a
half-written one. Checkpoints are also flushed to disk (``durable=True``) before the rename.
"""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from utils.signals import deferred_stop


def default_file_mode() -> int:
    """The mode a plain ``open(path, 'w')`` would give (mkstemp files are 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomic(path: str | Path, write: Callable[[Path], None], *, durable: bool = False) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then ``os.replace`` it onto ``path``.

    ``write`` receives the temporary file's path (it may open it, or hand it to a library that writes
    to a path). With ``durable``, the data is fsync'ed before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with deferred_stop():  # Ctrl-C / SIGTERM take effect once the file is complete (utils/signals.py)
            write(Path(tmp))
            if durable:
                with open(tmp, "rb+") as handle:
                    os.fsync(handle.fileno())
            os.chmod(tmp, default_file_mode())
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    write_atomic(path, lambda tmp: tmp.write_bytes(data))
