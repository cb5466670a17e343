"""Zarr (format 3) storage for the feature cache.

Every chunk of every array is its own file, and zarr's LocalStore (checked in
zarr 3.1.6) writes each file to a temporary name and renames it into place. A
chunk of rows therefore lands in separate files per array, and the chunk's
`done` marker, a one-element chunk of its own, is written last. Processes that
write disjoint row chunks never write the same file.

NOTE: setup.cfg allows zarr>=3.0, but the temporary-name write was only
checked in zarr 3.1.6. An older LocalStore may leave a torn chunk file after a crash.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from .schema import SCHEMA_VERSION, ChunkArrays, SplitLayout

logger = logging.getLogger(__name__)

ZARR_FORMAT = 3
STORE_KIND = "early-exit feature cache"


@dataclass
class LogitsState:
    """Completeness of a split's logits and the fingerprint of the heads that produced them.

    `heads_fingerprint` is None when the logits were written with the hidden
    chunks. The model named by the cache's model_fingerprint produced those.
    """

    complete: bool
    heads_fingerprint: str | None


class ZarrStore:
    format = "zarr"

    def __init__(self, path: Path, *, writable: bool):
        self.path = Path(path)
        self.writable = writable
        self._root = zarr.open_group(str(self.path), mode="r+" if writable else "r", zarr_format=ZARR_FORMAT)

    @staticmethod
    def exists(path: Path) -> bool:
        return (Path(path) / "zarr.json").is_file()

    @classmethod
    def initialise(cls, path: Path, meta_json: dict) -> ZarrStore:
        # The attributes go into the same zarr.json write that creates the group,
        # so a store either has its metadata or does not exist.
        attributes = {"kind": STORE_KIND, "schema_version": SCHEMA_VERSION, "meta": meta_json}
        zarr.create_group(str(path), zarr_format=ZARR_FORMAT, attributes=attributes)
        return cls(path, writable=True)

    def root_attributes(self) -> dict:
        return dict(self._root.attrs)

    def split_names(self) -> list[str]:
        return sorted(name for name in self._root.group_keys() if self.layout(name) is not None)

    def layout(self, split: str) -> SplitLayout | None:
        if split not in self._root:
            return None
        attrs = self._root[split].attrs
        # The layout attributes are written after all arrays, so they mark a fully created split.
        if "n_examples" not in attrs:
            return None
        return SplitLayout(int(attrs["n_examples"]), int(attrs["num_classes"]), int(attrs["chunk_size"]))

    def create_split(self, split: str, layout: SplitLayout, num_exits: int, hidden_size: int, order: np.ndarray) -> None:
        group = self._root.create_group(split, overwrite=True)
        N, E, D, K, chunk = layout.n_examples, num_exits, hidden_size, layout.num_classes, layout.chunk_size
        group.create_array("hidden", shape=(N, E, D), chunks=(chunk, E, D), dtype="float32", fill_value=np.nan)
        group.create_array("logits", shape=(N, E, K), chunks=(chunk, E, K), dtype="float32", fill_value=np.nan)
        group.create_array("labels", shape=(N,), chunks=(chunk,), dtype="int64", fill_value=-1)
        group.create_array("lengths", shape=(N,), chunks=(chunk,), dtype="int32", fill_value=0)
        group.create_array("order", shape=(N,), chunks=(chunk,), dtype="int64", fill_value=-1)[:] = order
        for marker in ("done", "logits_chunk_done"):
            group.create_array(marker, shape=(layout.n_chunks,), chunks=(1,), dtype="bool", fill_value=False, compressors=None)
        group.attrs.put({**layout.to_json_dict(), "logits_done": False, "heads_fingerprint": None})

    def done_mask(self, split: str) -> np.ndarray:
        return self._root[split]["done"][:]

    def write_rows(self, split: str, index: int, layout: SplitLayout, chunk: ChunkArrays) -> None:
        group = self._root[split]
        start, stop = layout.chunk_range(index)

        # Clear the markers first, so a crash while rewriting a finished chunk leaves it pending.
        if group["done"][index]:
            group["done"][index] = False
        if chunk.logits is not None and group["logits_chunk_done"][index]:
            group["logits_chunk_done"][index] = False

        group["hidden"][start:stop] = chunk.hidden
        group["labels"][start:stop] = chunk.labels
        group["lengths"][start:stop] = chunk.lengths
        if chunk.logits is not None:
            group["logits"][start:stop] = chunk.logits
            group["logits_chunk_done"][index] = True
        group["done"][index] = True

    def logits_state(self, split: str) -> LogitsState:
        group = self._root[split]
        if group.attrs.get("logits_done"):
            return LogitsState(True, group.attrs["heads_fingerprint"])
        return LogitsState(bool(group["logits_chunk_done"][:].all()), None)

    def write_logits(self, split: str, logits: np.ndarray, heads_fingerprint: str) -> None:
        group = self._root[split]

        # Invalidate first: the flag off, then the per-chunk markers off, then the data.
        group.attrs.update({"logits_done": False, "heads_fingerprint": None})
        group["logits_chunk_done"][:] = False
        group["logits"][:] = logits
        group.attrs.update({"logits_done": True, "heads_fingerprint": heads_fingerprint})

    def read_array(self, split: str, name: str) -> np.ndarray:
        return self._root[split][name][:]

    def close(self) -> None:
        self._root = None
