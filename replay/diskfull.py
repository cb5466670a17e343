"""Turn a full disk during a resumable stage into one message with the command that continues it."""

from __future__ import annotations

import contextlib
import errno

# ENOSPC: no space left on the device. EDQUOT: the user's disk quota is used up.
# EFBIG: the file size limit (`ulimit -f`, RLIMIT_FSIZE) or the file system's maximum file size.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class DiskFullError(OSError):
    """A write failed for lack of space; str() is the message alone, without "[Errno N]"."""

    def __str__(self) -> str:
        return self.strerror


def find_disk_full_error(error: BaseException) -> OSError | None:
    """Return the OSError with a disk-full errno in `error` or its causes, or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return error
        error = error.__cause__ or error.__context__
    return None


@contextlib.contextmanager
def disk_full_errors(command: str):
    """Re-raise a disk-full OSError as one line with the file (when known) and the `--resume` command."""
    try:
        yield
    except Exception as error:
        found = find_disk_full_error(error)
        if found is None:
            raise
        where = f" writing {found.filename}" if found.filename else ""
        raise DiskFullError(
            found.errno,
            f"disk full{where} ({found.strerror or errno.errorcode.get(found.errno)}); the chunks finished before "
            f"are kept. Free disk space, then run `{command} --resume` to continue from the last complete chunk",
        ) from error
