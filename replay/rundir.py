"""The run directory: one place where every stage reads its inputs and writes its outputs."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

RUN_CONFIG = "run.json"


@dataclass
class RunConfig:
    """Settings shared by all stages of one run, fixed by the first stage that runs."""

    model: str = "smollm2-135m"
    dataset: str = "rt-critics"
    limit: int | None = None
    seed: int = 0
    exits: list[int] | None = None  # None: every `exit_every` layers, always including the last
    exit_every: int | None = None  # None: 3
    train_backbone: bool = False
    text_column: str | None = None
    label_column: str | None = None
    empty: str = "skip"  # empty or whitespace-only texts: "skip" (drop, with a count) or "error"
    max_length: int = 256
    prompt: str | None = None
    zero_shot: bool = False
    verbalizers: dict[str, list[str]] | None = None
    cache_format: str = "zarr"
    trust_remote_code: bool = False
    extra: dict = field(default_factory=dict)


class RunDir:
    """Paths of one run's artifacts and the checks that a stage's inputs exist."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def config_path(self) -> Path:
        return self.root / RUN_CONFIG

    @property
    def heads_dir(self) -> Path:
        return self.root / "heads"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoint"

    @property
    def gates_dir(self) -> Path:
        return self.root / "gates"

    def cache_path(self, cache_format: str) -> Path:
        return self.root / ("cache.h5" if cache_format == "hdf5" else "cache.zarr")

    def gate_path(self, name: str) -> Path:
        return self.gates_dir / f"{name}.json"

    def load_config(self) -> RunConfig:
        if not self.config_path.is_file():
            raise FileNotFoundError(
                f"{self.root} has no {RUN_CONFIG}; run `python cli.py finetune --run-dir {self.root}` "
                f"(or `extract --zero-shot`) first"
            )
        raw = json.loads(self.config_path.read_text())
        known = {f.name for f in fields(RunConfig)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{self.config_path} has unknown settings {unknown}; it was written by another version of this tool")
        config = RunConfig(**raw)
        check_config_values(self.config_path, config)
        return config

    def save_config(self, config: RunConfig) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(self.config_path, asdict(config))

    def require(self, path: Path, command: str) -> Path:
        """Return `path` if it exists, else raise naming the command that creates it."""
        if not path.exists():
            raise FileNotFoundError(f"{path} not found; run `python cli.py {command} --run-dir {self.root}` first")
        return path


def check_config_values(path: Path, config: RunConfig) -> None:
    """Reject run.json values that would pick unknown artifact names.

    Artifact paths (cache, heads, model, gates) are fixed names inside the run
    directory, so only these settings could steer them elsewhere.
    """
    if config.cache_format not in ("zarr", "hdf5"):
        raise ValueError(f"{path}: cache_format {config.cache_format!r} is not one of zarr, hdf5; fix or delete {path}")
    if config.empty not in ("skip", "error"):
        raise ValueError(f"{path}: empty {config.empty!r} is not one of skip, error; fix or delete {path}")


def write_json(path: Path, payload) -> None:
    """Write JSON to a temporary name in the same directory, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A per-process temporary name, so concurrent shards never rename each other's file.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
