"""Safe file writing shared by everything the pack writes.

One rule: a file is written to a temporary name in the target folder, flushed, and only then
moved into place, so a crash or a cancelled run never leaves a half-written file and an existing
file is never replaced unless the caller asked for it. The new file gets the usual permissions
(umask), not the private 0600 of a temporary file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import ConfigError, OutputExistsError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *, overwrite: bool = False) -> Path:
    """Returns ``path`` after ``write(temporary_path)`` produced its content and it was moved into place.

    Args:
        write: writes the whole file at the path it is given (e.g. ``safetensors.torch.save_file``).
        overwrite: replace an existing file; without it an existing file raises OutputExistsError,
            also when one appears while writing.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        ConfigError: the folder cannot be written to.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: already exists; pass force=True (--force) to overwrite")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise ConfigError(f"{path}: cannot write here ({error.strerror or error}); pick another folder") from None
    os.close(handle)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if the path appeared meanwhile: never replaces a file
            except FileExistsError:
                raise OutputExistsError(f"{path}: already exists; pass force=True (--force) to overwrite") from None
            except OSError:
                os.replace(tmp, path)  # filesystems without hard links
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
