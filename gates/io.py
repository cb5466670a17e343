"""Gate files: JSON config plus safetensors arrays, each written atomically."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
from safetensors.numpy import load_file, save_file

GATE_FORMAT = "early-exit-gate"
GATE_FORMAT_VERSION = 2  # 2: trajectory features


def split_gate_path(path: str | os.PathLike) -> tuple[Path, str]:
    """Split `<dir>/<name>.json` into the directory and the gate name."""
    path = Path(path)
    if path.suffix != ".json":
        raise ValueError(f"gate path {str(path)!r} must end with .json, e.g. runs/default/gates/mlp.json")
    return path.parent, path.stem


def companion_path(directory: Path, file_name, gate_json: Path) -> Path:
    """Return `directory / file_name` for a file named in gate JSON, which must sit next to it.

    A name with a directory part or ".." would let an edited gate JSON read files
    outside the gate directory, so it raises ValueError.
    """
    if not isinstance(file_name, str) or file_name in ("", ".", "..") or Path(file_name).name != file_name or "\\" in file_name:
        raise ValueError(
            f"gate file {str(gate_json)!r} names the companion file {file_name!r}, which is not a plain file name "
            "in the gate's directory; save the gate again"
        )
    return directory / file_name


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file next to `path`, then rename it into place.

    The temporary name keeps the final suffix because XGBoost picks its save
    format from the file extension.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to gate JSON. Convert it to int, float, str, list or dict")


def encode_float(value: float | None) -> float | str | None:
    """Encode a float for strict JSON, which has no infinity."""
    if value is None or math.isfinite(value):
        return value
    return "inf" if value > 0 else "-inf"


def decode_float(value: float | str | None) -> float | None:
    return None if value is None else float(value)


def write_json(path: Path, payload: dict) -> None:
    text = json.dumps(payload, indent=2, sort_keys=True, allow_nan=False, default=_json_default)
    write_atomic(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"gate file {str(path)!r} not found. Train one with `train-gates` or pass the .json path")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> str:
    """Write arrays as safetensors and return the file's SHA-256."""
    contiguous = {name: np.ascontiguousarray(array) for name, array in arrays.items()}
    write_atomic(path, lambda tmp: save_file(contiguous, str(tmp)))
    return file_sha256(path)


def read_arrays(path: Path, expected_sha256: str) -> dict[str, np.ndarray]:
    check_sha256(path, expected_sha256)
    return load_file(str(path))


def check_sha256(path: Path, expected_sha256: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"gate weights {str(path)!r} not found. Save the gate again so its JSON and weights match")
    found = file_sha256(path)
    if found != expected_sha256:
        raise ValueError(
            f"gate weights {str(path)!r} have SHA-256 {found}, but the gate JSON expects {expected_sha256}, so "
            "the files come from different saves. Save the gate again"
        )
