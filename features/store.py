"""FeatureCache: the resumable, chunked store of per-exit hidden states and logits.

Shape letters: N examples, E exits, D hidden size, K classes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields
from pathlib import Path

import numpy as np

from .hdf5_store import Hdf5Store
from .schema import (
    SCHEMA_VERSION,
    CacheMeta,
    SplitFeatures,
    SplitLayout,
    check_chunk_arrays,
    check_layout_request,
    check_order,
    check_split_logits,
    check_split_name,
    check_stored_array,
    describe_meta_differences,
)
from .staging import staging_directory
from .zarr_store import ZarrStore

logger = logging.getLogger(__name__)

_STORES = {"zarr": ZarrStore, "hdf5": Hdf5Store}
_SUFFIX_FORMATS = {".zarr": "zarr", ".h5": "hdf5", ".hdf5": "hdf5"}


def shard_chunks(
    pending: list[tuple[int, int]], shard_index: int, num_shards: int, *, chunk_size: int | None = None
) -> list[tuple[int, int]]:
    """Select one shard's share of the pending chunks, round-robin.

    With `chunk_size`, chunk number `start // chunk_size` goes to shard
    `number % num_shards`, so shards agree even when each computed `pending`
    at a different time. Without it, chunks are dealt by position in
    `pending`, which is only consistent when every shard passes the same list.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index}")
    if chunk_size is None:
        return list(pending[shard_index::num_shards])
    return [(start, stop) for start, stop in pending if (start // chunk_size) % num_shards == shard_index]


def infer_format(path: Path, format: str | None) -> str:
    suffix_format = _SUFFIX_FORMATS.get(Path(path).suffix.lower())
    if format is None:
        if suffix_format is None:
            raise ValueError(
                f"cannot infer the cache format of {path}: expected a name ending in .zarr, .h5 or .hdf5, "
                f"or pass format='zarr' or format='hdf5'"
            )
        return suffix_format
    if format not in _STORES:
        raise ValueError(f"format must be one of {sorted(_STORES)}, got {format!r}")
    if suffix_format is not None and suffix_format != format:
        raise ValueError(f"format {format!r} conflicts with the suffix of {path}, which means {suffix_format!r}")
    return format


def _detect_existing_format(path: Path) -> str | None:
    if path.suffix.lower() in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[path.suffix.lower()]
    if ZarrStore.exists(path):
        return "zarr"
    if path.is_file() or staging_directory(path).is_dir():
        return "hdf5"
    return None


def _run_dir(path: Path) -> Path:
    return path.parent


def _meta_from_root(path: Path, attributes: dict) -> CacheMeta:
    """Check the schema version in a store's root attributes and parse its metadata."""
    if "schema_version" not in attributes or "meta" not in attributes:
        raise ValueError(
            f"{path} is not a feature cache: its root attributes lack schema_version and meta; "
            f"delete it or choose another --run-dir"
        )
    found = attributes["schema_version"]
    if found != SCHEMA_VERSION:
        raise ValueError(
            f"cache {path} has schema_version {found}, but this code reads schema_version {SCHEMA_VERSION}; "
            f"delete {path} and rerun `python cli.py extract --run-dir {_run_dir(path)}`"
        )
    return CacheMeta.from_json_dict(attributes["meta"])


def _check_expected(path: Path, meta: CacheMeta, expect: dict) -> None:
    known = {item.name for item in fields(CacheMeta)}
    unknown = sorted(set(expect) - known)
    if unknown:
        raise ValueError(f"expect has unknown keys {unknown}; expected CacheMeta fields {sorted(known)}")
    expected = json.loads(json.dumps(expect))
    differences = describe_meta_differences(meta, expected)
    if differences:
        raise ValueError(
            f"cache {path} does not match the request: {'; '.join(differences)}. Extract a cache for this "
            f"model and dataset with `python cli.py extract --run-dir DIR` in a new run directory, "
            f"or delete {path} and extract again"
        )


class FeatureCache:
    """One cache store (Zarr directory or HDF5 file) with one group per split.

    Use `create` to write (it resumes an existing store with equal metadata) and
    `open` to read.
    """

    def __init__(self, store, meta: CacheMeta, *, writable: bool):
        self._store = store
        self.meta = meta
        self.format = store.format
        self.path = store.path
        self.writable = writable

    # ----- opening ------------------------------------------------------------

    @classmethod
    def create(cls, path, meta: CacheMeta, *, format: str | None = None) -> FeatureCache:
        path = Path(path)
        store_class = _STORES[infer_format(path, format)]
        if store_class.exists(path):
            return cls._reopen_for_writing(path, store_class, meta)
        if path.exists():
            raise FileExistsError(f"{path} exists but is not a feature cache; delete it or choose another --run-dir")

        path.parent.mkdir(parents=True, exist_ok=True)
        store = store_class.initialise(path, meta.to_json_dict())
        logger.info("created %s cache %s", store.format, path)
        return cls(store, meta, writable=True)

    @classmethod
    def _reopen_for_writing(cls, path: Path, store_class, meta: CacheMeta) -> FeatureCache:
        store = store_class(path, writable=True)
        found = _meta_from_root(path, store.root_attributes())
        differences = describe_meta_differences(found, meta)
        if differences:
            raise ValueError(
                f"cache {path} exists with different metadata: {'; '.join(differences)}. "
                f"Use a new --run-dir, or delete {path} to extract again"
            )
        logger.info("reopened %s cache %s to resume", store.format, path)
        if store.format == "hdf5":
            # A crash after the last chunk but before assembly leaves only this step to do.
            store.finalize(strict=False)
        return cls(store, found, writable=True)

    @classmethod
    def open(cls, path, *, expect: dict | None = None) -> FeatureCache:
        path = Path(path)
        format = _detect_existing_format(path)
        if format is None or not _STORES[format].exists(path):
            raise FileNotFoundError(
                f"feature cache {path} not found; run `python cli.py extract --run-dir {_run_dir(path)}` first"
            )
        store = _STORES[format](path, writable=False)
        meta = _meta_from_root(path, store.root_attributes())
        if expect:
            _check_expected(path, meta, expect)
        return cls(store, meta, writable=False)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ----- layout and progress ------------------------------------------------

    def _require_store(self, *, writing: bool = False):
        if self._store is None:
            raise ValueError(f"feature cache {self.path} is closed; open it again with FeatureCache.open()")
        if writing and not self.writable:
            raise ValueError(f"feature cache {self.path} was opened for reading; use FeatureCache.create() to write")
        return self._store

    def _layout(self, split: str) -> SplitLayout:
        layout = self._require_store().layout(split)
        if layout is None:
            raise ValueError(
                f"split {split!r} not found in {self.path}; splits present: {self.splits()}. "
                f"Run `python cli.py extract --run-dir {_run_dir(self.path)}` to create it"
            )
        return layout

    def splits(self) -> list[str]:
        return self._require_store().split_names()

    def create_split(
        self, split: str, n_examples: int, num_classes: int, *, chunk_size: int = 256, order=None
    ) -> None:
        """Create the arrays of a split, or keep the existing ones when N, K and order are the same.

        `order` (N,) is the split's example index of each cache row, such as a
        sort by token length. None stores the identity on creation and skips the
        order check on an existing split.
        """
        store = self._require_store(writing=True)
        check_split_name(split)
        requested = check_layout_request(n_examples, num_classes, chunk_size, self.meta)
        checked_order = check_order(order, requested.n_examples)
        existing = store.layout(split)
        if existing is None:
            store.create_split(split, requested, self.meta.num_exits, self.meta.hidden_size, checked_order)
            logger.info("created split %r of %s: %d rows in %d chunks", split, self.path, n_examples, requested.n_chunks)
            return

        if (existing.n_examples, existing.num_classes) != (requested.n_examples, requested.num_classes):
            raise ValueError(
                f"split {split!r} of {self.path} already exists with n_examples={existing.n_examples}, "
                f"num_classes={existing.num_classes}, but the request has n_examples={n_examples}, "
                f"num_classes={num_classes}; the dataset changed, so use a new --run-dir or delete {self.path}"
            )
        if order is not None and not np.array_equal(store.read_array(split, "order"), checked_order):
            raise ValueError(
                f"split {split!r} of {self.path} already exists with a different row order, so the texts or "
                f"the tokenizer changed; use a new --run-dir or delete {self.path}"
            )
        if existing.chunk_size != requested.chunk_size:
            logger.info("split %r keeps its chunk size %d (requested %d)", split, existing.chunk_size, chunk_size)

    def pending_chunks(self, split: str, *, shard_index: int = 0, num_shards: int = 1) -> list[tuple[int, int]]:
        """List the [start, stop) row ranges whose done marker is not set, optionally one shard's share."""
        layout = self._layout(split)
        done = self._store.done_mask(split)
        pending = [layout.chunk_range(index) for index in np.flatnonzero(~done).tolist()]
        return shard_chunks(pending, shard_index, num_shards, chunk_size=layout.chunk_size)

    def is_complete(self, split: str) -> bool:
        self._layout(split)
        return bool(self._store.done_mask(split).all())

    def has_logits(self, split: str) -> bool:
        return self.is_complete(split) and self._store.logits_state(split).complete

    def logits_fingerprint(self, split: str) -> str | None:
        """Fingerprint of the heads behind a split's complete logits, or None when they are missing."""
        if not self.has_logits(split):
            return None
        return self._store.logits_state(split).heads_fingerprint or self.meta.model_fingerprint

    def split_size(self, split: str) -> int:
        return self._layout(split).n_examples

    def num_chunks(self, split: str) -> int:
        return self._layout(split).n_chunks

    # ----- writing ------------------------------------------------------------

    def write_chunk(self, split: str, start: int, hidden, lengths, labels, logits=None) -> None:
        """Write rows [start, start + chunk) of a split, then set the chunk's done marker.

        hidden (b, E, D), lengths (b,), labels (b,), logits (b, E, K) or None, where b
        is the chunk size, or the remaining rows for the last chunk.
        """
        store = self._require_store(writing=True)
        layout = self._layout(split)
        index = layout.chunk_index(int(start))
        start, stop = layout.chunk_range(index)
        chunk = check_chunk_arrays(self.meta, layout, stop - start, hidden, lengths, labels, logits)

        if chunk.logits is not None:
            fingerprint = store.logits_state(split).heads_fingerprint
            if fingerprint is not None:
                raise ValueError(
                    f"split {split!r} of {self.path} has logits from heads {fingerprint!r} written by "
                    f"write_logits; write this chunk without logits, or call write_logits again afterwards"
                )
        store.write_rows(split, index, layout, chunk)

    def write_logits(self, split: str, logits, heads_fingerprint: str) -> None:
        """Replace the logits of a whole split, (N, E, K), and record the heads that produced them."""
        store = self._require_store(writing=True)
        layout = self._layout(split)
        if not isinstance(heads_fingerprint, str) or not heads_fingerprint:
            raise ValueError(f"heads_fingerprint must be a non-empty string, got {heads_fingerprint!r}")
        if not self.is_complete(split):
            raise self._incomplete_error(split)
        store.write_logits(split, check_split_logits(self.meta, layout, logits), heads_fingerprint)
        logger.info("wrote logits of split %r of %s from heads %s", split, self.path, heads_fingerprint)

    def finalize(self) -> None:
        """Assemble a staged HDF5 cache now, raising if a staged split is incomplete. No-op for Zarr."""
        store = self._require_store(writing=True)
        if store.format == "hdf5":
            store.finalize(strict=True)

    # ----- reading ------------------------------------------------------------

    def _incomplete_error(self, split: str) -> ValueError:
        done = self._store.done_mask(split)
        return ValueError(
            f"split {split!r} of {self.path} is incomplete: {int(done.sum())} of {done.size} chunks written; "
            f"rerun `python cli.py extract --run-dir {_run_dir(self.path)} --resume`"
        )

    def read(self, split: str, *, with_hidden: bool = True, require_logits: bool = True) -> SplitFeatures:
        """Read a complete split, checking every array's shape and dtype against the metadata."""
        store = self._require_store()
        layout = self._layout(split)
        if not store.done_mask(split).all():
            raise self._incomplete_error(split)

        state = store.logits_state(split)
        if require_logits and not state.complete:
            raise ValueError(
                f"split {split!r} of {self.path} is missing exit logits for some rows; fill them with "
                f"`python cli.py extract --run-dir {_run_dir(self.path)} --resume`, or read with require_logits=False"
            )

        N, E, D, K = layout.n_examples, self.meta.num_exits, self.meta.hidden_size, layout.num_classes
        expected = {"labels": ((N,), np.int64), "lengths": ((N,), np.int32), "order": ((N,), np.int64)}
        if with_hidden:
            expected["hidden"] = ((N, E, D), np.float32)
        if state.complete:
            expected["logits"] = ((N, E, K), np.float32)

        arrays = {}
        for name, (shape, dtype) in expected.items():
            arrays[name] = store.read_array(split, name)
            check_stored_array(f"split {split!r} of {self.path}", name, arrays[name], shape, dtype)

        heads_fingerprint = None
        if state.complete:
            heads_fingerprint = state.heads_fingerprint or self.meta.model_fingerprint
        return SplitFeatures(
            name=split,
            hidden=arrays.get("hidden"),
            logits=arrays.get("logits"),
            labels=arrays["labels"],
            lengths=arrays["lengths"],
            heads_fingerprint=heads_fingerprint,
            order=arrays["order"],
        )
