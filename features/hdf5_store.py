"""HDF5 storage for the feature cache, written through a staging directory.

Chunks go to `<path>.parts/` (see features/staging.py). When every staged
split is complete, or on an explicit finalize(), the `.h5` file is assembled
under a temporary name, together with the splits of the existing `.h5` file,
and renamed into place. Only then is the staging directory removed. A reader
therefore only ever opens a `.h5` file that was fully written. Changing a
finished `.h5` file (whole-split logits) copies it, edits the copy and renames
the copy into place.

NOTE: one process at a time may write an HDF5 cache. Sharded writers need the
Zarr format, because two processes could assemble the `.h5` file at once.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from .atomic import fsync_directory, temporary_sibling
from .schema import SCHEMA_VERSION, ChunkArrays, SplitLayout
from .staging import StagingArea, staging_directory
from .zarr_store import STORE_KIND, LogitsState

logger = logging.getLogger(__name__)

_ROW_ARRAYS = ("hidden", "lengths", "labels")


class Hdf5Store:
    format = "hdf5"

    def __init__(self, path: Path, *, writable: bool):
        self.path = Path(path)
        self.writable = writable
        self.staging = StagingArea(staging_directory(self.path))
        if writable:
            self._discard_assembled_staging()

    @staticmethod
    def exists(path: Path) -> bool:
        path = Path(path)
        return path.is_file() or StagingArea(staging_directory(path)).exists()

    @classmethod
    def initialise(cls, path: Path, meta_json: dict) -> Hdf5Store:
        attributes = {"kind": STORE_KIND, "schema_version": SCHEMA_VERSION, "meta": meta_json}
        StagingArea(staging_directory(Path(path))).write_root_attributes(attributes)
        return cls(path, writable=True)

    # ----- reading the layout -------------------------------------------------

    def root_attributes(self) -> dict:
        if self.path.is_file():
            with h5py.File(self.path, "r") as handle:
                attrs = handle.attrs
                return {
                    "kind": str(attrs.get("kind", "")),
                    "schema_version": int(attrs["schema_version"]),
                    "meta": json.loads(attrs["meta"]),
                }
        return self.staging.read_root_attributes()

    def _assembled_splits(self) -> list[str]:
        if not self.path.is_file():
            return []
        with h5py.File(self.path, "r") as handle:
            return sorted(handle.keys())

    def split_names(self) -> list[str]:
        return sorted(set(self._assembled_splits()) | set(self.staging.split_names()))

    def layout(self, split: str) -> SplitLayout | None:
        if split in self._assembled_splits():
            with h5py.File(self.path, "r") as handle:
                attrs = handle[split].attrs
                return SplitLayout(int(attrs["n_examples"]), int(attrs["num_classes"]), int(attrs["chunk_size"]))
        return self.staging.layout(split)

    def done_mask(self, split: str) -> np.ndarray:
        if split in self._assembled_splits():
            return np.ones(self.layout(split).n_chunks, dtype=bool)
        return self.staging.done_mask(split, self.staging.layout(split))

    def logits_state(self, split: str) -> LogitsState:
        if split in self._assembled_splits():
            with h5py.File(self.path, "r") as handle:
                attrs = handle[split].attrs
                fingerprint = attrs.get("heads_fingerprint")
                return LogitsState(bool(attrs["logits_done"]), None if fingerprint is None else str(fingerprint))
        fingerprint = self.staging.split_logits_fingerprint(split)
        if fingerprint is not None:
            return LogitsState(True, fingerprint)
        layout = self.staging.layout(split)
        starts = [layout.chunk_range(index)[0] for index in range(layout.n_chunks)]
        return LogitsState(all(self.staging.chunk_has_logits(split, start) for start in starts), None)

    # ----- writing ------------------------------------------------------------

    def create_split(self, split: str, layout: SplitLayout, num_exits: int, hidden_size: int, order: np.ndarray) -> None:
        if not self.staging.exists():
            self.staging.write_root_attributes(self.root_attributes())
        self.staging.create_split(split, layout, order)

    def write_rows(self, split: str, index: int, layout: SplitLayout, chunk: ChunkArrays) -> None:
        if split in self._assembled_splits():
            raise ValueError(
                f"split {split!r} of {self.path} is already complete and assembled; "
                f"no chunk of it is pending, so there is nothing to write"
            )
        start, _ = layout.chunk_range(index)
        self.staging.write_chunk(split, start, chunk)
        self.finalize(strict=False)

    def write_logits(self, split: str, logits: np.ndarray, heads_fingerprint: str) -> None:
        if split not in self._assembled_splits():
            self.staging.write_split_logits(split, logits, heads_fingerprint)
            return

        def edit(handle: h5py.File) -> None:
            handle[split]["logits"][:] = logits
            handle[split].attrs["logits_done"] = True
            handle[split].attrs["heads_fingerprint"] = heads_fingerprint

        self._replace_h5(edit, copy_existing=True)

    def finalize(self, *, strict: bool = True) -> bool:
        """Assemble the staged splits into the `.h5` file once all are complete.

        Returns whether a `.h5` file was written. With `strict`, an incomplete
        staged split raises ValueError, and without it the call does nothing.
        """
        assembled = set(self._assembled_splits())
        staged = [split for split in self.staging.split_names() if split not in assembled]
        incomplete = {split: self.done_mask(split) for split in staged}
        incomplete = {split: mask for split, mask in incomplete.items() if not mask.all()}
        if incomplete and strict:
            split, mask = next(iter(incomplete.items()))
            raise ValueError(
                f"cannot assemble {self.path}: split {split!r} has {int(mask.sum())} of {mask.size} chunks "
                f"written; write the pending chunks first"
            )
        if incomplete:
            return False
        if not staged and self.path.is_file():
            self.staging.remove()
            return False

        def add_staged(handle: h5py.File) -> None:
            _write_root_attributes(handle, self.staging.read_root_attributes())
            for split in staged:
                self._write_assembled_split(handle, split)

        self._replace_h5(add_staged, copy_existing=self.path.is_file())
        logger.info("assembled %s with splits %s; removing %s", self.path, staged, self.staging.root)
        self.staging.remove()
        return True

    def _replace_h5(self, edit, *, copy_existing: bool) -> None:
        temporary = temporary_sibling(self.path)
        try:
            if copy_existing:
                shutil.copyfile(self.path, temporary)
            with h5py.File(temporary, "a") as handle:
                edit(handle)
            with open(temporary, "rb") as stream:
                os.fsync(stream.fileno())
            os.replace(temporary, self.path)
        finally:
            temporary.unlink(missing_ok=True)
        fsync_directory(self.path.parent)

    def _write_assembled_split(self, handle: h5py.File, split: str) -> None:
        layout = self.staging.layout(split)
        first = self.staging.read_chunk(split, 0)
        _, E, D = first["hidden"].shape
        N, K, chunk = layout.n_examples, layout.num_classes, layout.chunk_size
        group = handle.create_group(split)
        group.create_dataset("hidden", shape=(N, E, D), dtype="float32", chunks=(chunk, E, D), fillvalue=np.nan)
        group.create_dataset("logits", shape=(N, E, K), dtype="float32", chunks=(chunk, E, K), fillvalue=np.nan)
        group.create_dataset("labels", shape=(N,), dtype="int64", fillvalue=-1)
        group.create_dataset("lengths", shape=(N,), dtype="int32", fillvalue=0)
        group.create_dataset("order", data=self.staging.read_order(split))
        group.create_dataset("done", data=np.ones(layout.n_chunks, dtype=bool))

        state = self.logits_state(split)
        for index in tqdm(range(layout.n_chunks), desc=f"assemble {split}", unit="chunk", disable=None):
            start, stop = layout.chunk_range(index)
            arrays = self.staging.read_chunk(split, start)
            for name in _ROW_ARRAYS:
                group[name][start:stop] = arrays[name]
            if state.complete and state.heads_fingerprint is None:
                group["logits"][start:stop] = arrays["logits"]
        if state.heads_fingerprint is not None:
            group["logits"][:] = self.staging.read_split_logits(split)
            group.attrs["heads_fingerprint"] = state.heads_fingerprint

        for key, value in layout.to_json_dict().items():
            group.attrs[key] = value
        group.attrs["logits_done"] = state.complete

    def _discard_assembled_staging(self) -> None:
        """Remove what a crash between assembling the `.h5` file and removing the staging left behind."""
        assembled = set(self._assembled_splits())
        for directory in self.staging.split_directories():
            if directory.name in assembled:
                self.staging.remove_split(directory.name)
        if self.path.is_file() and self.staging.root.exists() and not self.staging.split_directories():
            self.staging.remove()

    # ----- reading arrays -----------------------------------------------------

    def read_array(self, split: str, name: str) -> np.ndarray:
        if split in self._assembled_splits():
            with h5py.File(self.path, "r") as handle:
                return handle[split][name][:]
        if name == "done":
            return self.done_mask(split)
        if name == "order":
            return self.staging.read_order(split)
        if name == "logits" and self.staging.split_logits_fingerprint(split) is not None:
            return self.staging.read_split_logits(split)
        layout = self.staging.layout(split)
        parts = [self.staging.read_chunk(split, layout.chunk_range(index)[0])[name] for index in range(layout.n_chunks)]
        return np.concatenate(parts, axis=0)

    def close(self) -> None:
        pass


def _write_root_attributes(handle: h5py.File, attributes: dict) -> None:
    handle.attrs["kind"] = attributes["kind"]
    handle.attrs["schema_version"] = int(attributes["schema_version"])
    handle.attrs["meta"] = json.dumps(attributes["meta"], sort_keys=True)
