"""The one base class for problems a user can fix; the CLI prints them on one line, exit code 2."""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class UserError(ValueError):
    """A user-fixable problem; the message names what is wrong and what to change."""


#: the errors of a file system that is full, or of a user over their quota on it
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
#: how safetensors' Rust writer (used by save_pretrained too) reports an OS error: in its message only,
#: e.g. "Error while serializing: I/O error: No space left on device (os error 28)"
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def _os_errno(err: Exception) -> int | None:
    if isinstance(err, OSError):
        return err.errno
    found = _RUST_OS_ERROR.search(str(err))
    return int(found.group(1)) if found else None


@contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Writes to `path` in the block; a full disk there is the user's to fix (free space), so it
    ends the run in one line. Every writer leaves a file whole or absent, so the re-run resumes."""
    try:
        yield
    except Exception as err:
        if _os_errno(err) not in DISK_FULL:
            raise
        raise UserError(
            f"no space left on device while writing {path}; free space and re-run: the run resumes"
        ) from None
