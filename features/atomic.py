"""Atomic file writes: write to a temporary name in the same directory, fsync, then os.replace."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path


def temporary_sibling(path: Path) -> Path:
    """Return a unique temporary name next to `path`, so os.replace stays on one file system."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    path = Path(path)
    temporary = temporary_sibling(path)
    try:
        with open(temporary, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_directory(path.parent)


def write_json_atomic(path: Path, data: dict) -> None:
    write_bytes_atomic(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False).encode("utf-8"))


def read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
