"""Cache metadata, split layout and the checks every write and read goes through.

Shape letters: N examples, E exits, D hidden size, K classes, L layers.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields

import numpy as np

SCHEMA_VERSION = 1
LOGITS_KINDS = ("heads", "logit-lens")

# Split names become directory and group names, so keep them to portable characters.
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass
class CacheMeta:
    """Provenance of a cache: the model, exits, labels and dataset that produced it."""

    model_id: str
    model_fingerprint: str
    num_layers: int
    hidden_size: int
    exits: list[int]
    label_names: list[str]
    dataset: str
    dataset_fingerprint: str
    logits_kind: str = "heads"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.exits = [int(layer) for layer in self.exits]
        self.label_names = [str(name) for name in self.label_names]
        _check_meta(self)

    @property
    def num_exits(self) -> int:
        return len(self.exits)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def to_json_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json_dict(cls, data: dict) -> CacheMeta:
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"cache metadata has unknown fields {unknown}; expected only {sorted(known)}")
        return cls(**data)


def _check_meta(meta: CacheMeta) -> None:
    if meta.num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {meta.num_layers}")
    if meta.hidden_size < 1:
        raise ValueError(f"hidden_size must be >= 1, got {meta.hidden_size}")
    if not meta.exits:
        raise ValueError("exits must name at least one layer, got []")
    if any(b <= a for a, b in zip(meta.exits, meta.exits[1:])):
        raise ValueError(f"exits must be strictly increasing, got {meta.exits}")
    if meta.exits[0] < 1 or meta.exits[-1] > meta.num_layers:
        raise ValueError(f"exits must be 1-based layer numbers in 1..{meta.num_layers}, got {meta.exits}")
    if len(meta.label_names) < 2:
        raise ValueError(f"label_names must name at least 2 classes, got {meta.label_names}")
    if meta.logits_kind not in LOGITS_KINDS:
        raise ValueError(f"logits_kind must be one of {list(LOGITS_KINDS)}, got {meta.logits_kind!r}")
    try:
        json.dumps(meta.extra, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"CacheMeta.extra must be JSON-serialisable: {error}") from error


def describe_meta_differences(found: CacheMeta | dict, expected: CacheMeta | dict) -> list[str]:
    """List each field where `found` (the store) and `expected` (the caller) differ."""
    found_dict = found.to_json_dict() if isinstance(found, CacheMeta) else found
    expected_dict = expected.to_json_dict() if isinstance(expected, CacheMeta) else expected
    differences = []
    for name in expected_dict:
        if found_dict.get(name) != expected_dict[name]:
            differences.append(f"{name}: store has {found_dict.get(name)!r}, requested {expected_dict[name]!r}")
    return differences


def check_split_name(split: str) -> None:
    if not isinstance(split, str) or not _SPLIT_NAME.match(split):
        raise ValueError(
            f"invalid split name {split!r}: use letters, digits, '_', '.' or '-', such as 'train' or 'test'"
        )


@dataclass(frozen=True)
class SplitLayout:
    """Row count, class count and row-chunk size of one split."""

    n_examples: int
    num_classes: int
    chunk_size: int

    @property
    def n_chunks(self) -> int:
        return -(-self.n_examples // self.chunk_size)

    def chunk_range(self, index: int) -> tuple[int, int]:
        start = index * self.chunk_size
        return start, min(start + self.chunk_size, self.n_examples)

    def chunk_index(self, start: int) -> int:
        """Map a row offset to its chunk number, raising unless it is a chunk boundary."""
        if start < 0 or start >= self.n_examples or start % self.chunk_size:
            raise ValueError(
                f"chunk start {start} is not a chunk boundary: expected a multiple of "
                f"{self.chunk_size} in [0, {self.n_examples}); use the ranges from pending_chunks()"
            )
        return start // self.chunk_size

    def to_json_dict(self) -> dict:
        return asdict(self)


def check_layout_request(n_examples: int, num_classes: int, chunk_size: int, meta: CacheMeta) -> SplitLayout:
    if n_examples < 1:
        raise ValueError(f"n_examples must be >= 1, got {n_examples}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if num_classes != meta.num_classes:
        raise ValueError(
            f"num_classes {num_classes} does not match the cache's {meta.num_classes} label_names "
            f"{meta.label_names}"
        )
    return SplitLayout(int(n_examples), int(num_classes), int(chunk_size))


@dataclass
class SplitFeatures:
    """One split read back from the cache.

    `hidden` is None when read with `with_hidden=False`. `logits` and
    `heads_fingerprint` are None when the split has no logits yet and the read
    did not require them. Row i of every array is example `order[i]` of the split.
    """

    name: str
    hidden: np.ndarray | None  # (N, E, D) float32
    logits: np.ndarray | None  # (N, E, K) float32
    labels: np.ndarray  # (N,) int64
    lengths: np.ndarray  # (N,) int32
    heads_fingerprint: str | None
    order: np.ndarray | None = None  # (N,) int64

    @property
    def num_examples(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class ChunkArrays:
    """One validated chunk of rows, already cast to the stored dtypes."""

    hidden: np.ndarray  # (b, E, D) float32
    lengths: np.ndarray  # (b,) int32
    labels: np.ndarray  # (b,) int64
    logits: np.ndarray | None  # (b, E, K) float32


def _as_float32(name: str, array, shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind != "f":
        raise ValueError(f"{name} must be a floating-point array, got dtype {array.dtype}")
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, expected {shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values; check the model outputs")
    return np.ascontiguousarray(array, dtype=np.float32)


def _as_integer(name: str, array, length: int, dtype, low: int, high: int | None) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer array, got dtype {array.dtype}")
    if array.shape != (length,):
        raise ValueError(f"{name} has shape {array.shape}, expected ({length},)")
    bad = (array < low) if high is None else (array < low) | (array >= high)
    if bad.any():
        allowed = f">= {low}" if high is None else f"in [{low}, {high})"
        raise ValueError(f"{name} must be {allowed}, got {array[bad][:5].tolist()}")
    return np.ascontiguousarray(array, dtype=dtype)


def check_chunk_arrays(meta: CacheMeta, layout: SplitLayout, rows: int, hidden, lengths, labels, logits) -> ChunkArrays:
    """Check shapes, dtypes and value ranges of one chunk and cast it to the stored dtypes."""
    E, D, K = meta.num_exits, meta.hidden_size, layout.num_classes
    return ChunkArrays(
        hidden=_as_float32("hidden", hidden, (rows, E, D)),
        lengths=_as_integer("lengths", lengths, rows, np.int32, 1, np.iinfo(np.int32).max),
        labels=_as_integer("labels", labels, rows, np.int64, 0, K),
        logits=None if logits is None else _as_float32("logits", logits, (rows, E, K)),
    )


def check_order(order, n_examples: int) -> np.ndarray:
    """Check that `order` is a permutation of range(N), the split's example index of each cache row."""
    if order is None:
        return np.arange(n_examples, dtype=np.int64)
    order = np.asarray(order)
    if order.dtype.kind not in "iu" or order.shape != (n_examples,):
        raise ValueError(f"order must be an integer array of shape ({n_examples},), got {order.dtype} {order.shape}")
    if not np.array_equal(np.sort(order), np.arange(n_examples)):
        raise ValueError(f"order must be a permutation of range({n_examples}), with each example index once")
    return np.ascontiguousarray(order, dtype=np.int64)


def check_split_logits(meta: CacheMeta, layout: SplitLayout, logits) -> np.ndarray:
    return _as_float32("logits", logits, (layout.n_examples, meta.num_exits, layout.num_classes))


def check_stored_array(where: str, name: str, array: np.ndarray, shape: tuple[int, ...], dtype) -> None:
    """Raise when an array read from the store does not match the shape and dtype the metadata implies."""
    if array.shape != shape or array.dtype != np.dtype(dtype):
        raise ValueError(
            f"{where}: array {name!r} has shape {array.shape} and dtype {array.dtype}, expected {shape} "
            f"{np.dtype(dtype)} from the cache metadata; the store is damaged or was written by other code, "
            f"so delete it and extract again"
        )
