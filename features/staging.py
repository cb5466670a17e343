"""The staging directory that an HDF5 cache is written through.

HDF5 files can be left unreadable by a process killed mid-write, so chunks
never go into the `.h5` file directly. Each chunk of rows becomes one
safetensors file, written to a temporary name and renamed, and its existence
is the chunk's done marker:

    <path>.parts/meta.json                      schema_version and metadata
    <path>.parts/<split>/order.safetensors      example index of each cache row
    <path>.parts/<split>/layout.json            written last when the split is created
    <path>.parts/<split>/<start>.safetensors    hidden, lengths, labels[, logits]
    <path>.parts/<split>/logits.safetensors     whole-split logits, heads_fingerprint in its metadata
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file
from safetensors.numpy import save as save_safetensors

from .atomic import read_json, write_bytes_atomic, write_json_atomic
from .schema import ChunkArrays, SplitLayout

META_FILE = "meta.json"
LAYOUT_FILE = "layout.json"
LOGITS_FILE = "logits.safetensors"
ORDER_FILE = "order.safetensors"


def staging_directory(path: Path) -> Path:
    return path.with_name(path.name + ".parts")


class StagingArea:
    """Reads and writes the staged splits of one HDF5 cache."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def exists(self) -> bool:
        return (self.root / META_FILE).is_file()

    def read_root_attributes(self) -> dict:
        return read_json(self.root / META_FILE)

    def write_root_attributes(self, attributes: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.root / META_FILE, attributes)

    def split_directories(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(entry for entry in self.root.iterdir() if entry.is_dir())

    def split_names(self) -> list[str]:
        return [entry.name for entry in self.split_directories() if (entry / LAYOUT_FILE).is_file()]

    def layout(self, split: str) -> SplitLayout | None:
        layout_path = self.root / split / LAYOUT_FILE
        if not layout_path.is_file():
            return None
        return SplitLayout(**read_json(layout_path))

    def create_split(self, split: str, layout: SplitLayout, order: np.ndarray) -> None:
        directory = self.root / split

        # A directory without layout.json is left from a create that did not finish.
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        write_bytes_atomic(directory / ORDER_FILE, save_safetensors({"order": order}))
        write_json_atomic(directory / LAYOUT_FILE, layout.to_json_dict())

    def remove_split(self, split: str) -> None:
        shutil.rmtree(self.root / split, ignore_errors=True)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def chunk_path(self, split: str, start: int) -> Path:
        return self.root / split / f"{start}.safetensors"

    def done_mask(self, split: str, layout: SplitLayout) -> np.ndarray:
        starts = [layout.chunk_range(index)[0] for index in range(layout.n_chunks)]
        return np.array([self.chunk_path(split, start).is_file() for start in starts], dtype=bool)

    def write_chunk(self, split: str, start: int, chunk: ChunkArrays) -> None:
        tensors = {"hidden": chunk.hidden, "lengths": chunk.lengths, "labels": chunk.labels}
        if chunk.logits is not None:
            tensors["logits"] = chunk.logits
        write_bytes_atomic(self.chunk_path(split, start), save_safetensors(tensors))

    def chunk_has_logits(self, split: str, start: int) -> bool:
        path = self.chunk_path(split, start)
        if not path.is_file():
            return False
        with safe_open(str(path), framework="numpy") as handle:
            return "logits" in handle.keys()

    def split_logits_fingerprint(self, split: str) -> str | None:
        path = self.root / split / LOGITS_FILE
        if not path.is_file():
            return None
        with safe_open(str(path), framework="numpy") as handle:
            return handle.metadata()["heads_fingerprint"]

    def write_split_logits(self, split: str, logits: np.ndarray, heads_fingerprint: str) -> None:
        payload = save_safetensors({"logits": logits}, metadata={"heads_fingerprint": heads_fingerprint})
        write_bytes_atomic(self.root / split / LOGITS_FILE, payload)

    def read_split_logits(self, split: str) -> np.ndarray:
        return load_file(str(self.root / split / LOGITS_FILE))["logits"]

    def read_order(self, split: str) -> np.ndarray:
        return load_file(str(self.root / split / ORDER_FILE))["order"]

    def read_chunk(self, split: str, start: int) -> dict[str, np.ndarray]:
        return load_file(str(self.chunk_path(split, start)))
