"""Feature cache: save and reload, resume, incomplete reads, metadata checks and input validation."""

from __future__ import annotations

from dataclasses import dataclass

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from features import SCHEMA_VERSION, CacheMeta, FeatureCache, shard_chunks

FORMATS = ["cache.zarr", "cache.h5"]
REPO_ROOT = Path(__file__).resolve().parent.parent

# Distinct sizes, so a transposed axis fails a shape check: L=7, E=3, D=12, K=3.
NUM_LAYERS = 7
EXITS = [2, 4, 6]
HIDDEN_SIZE = 12
LABEL_NAMES = ["negative", "neutral", "positive"]


def make_meta(**overrides) -> CacheMeta:
    values = dict(
        model_id="tiny-gpt2",
        model_fingerprint="model-sha-aaa",
        num_layers=NUM_LAYERS,
        hidden_size=HIDDEN_SIZE,
        exits=list(EXITS),
        label_names=list(LABEL_NAMES),
        dataset="toy",
        dataset_fingerprint="data-sha-bbb",
        extra={"prompt": "{text}", "max_length": 64},
    )
    values.update(overrides)
    return CacheMeta(**values)


@dataclass
class SplitData:
    hidden: np.ndarray  # (N, E, D) float32
    logits: np.ndarray  # (N, E, K) float32
    labels: np.ndarray  # (N,) int64
    lengths: np.ndarray  # (N,) int32


def make_split_data(n_examples: int, seed: int = 0) -> SplitData:
    rng = np.random.default_rng(seed)
    E, D, K = len(EXITS), HIDDEN_SIZE, len(LABEL_NAMES)
    return SplitData(
        hidden=rng.normal(size=(n_examples, E, D)).astype(np.float32),
        logits=rng.normal(size=(n_examples, E, K)).astype(np.float32),
        labels=rng.integers(0, K, size=n_examples).astype(np.int64),
        lengths=rng.integers(1, 64, size=n_examples).astype(np.int32),
    )


def write_chunks(cache: FeatureCache, split: str, data: SplitData, ranges, *, with_logits: bool = True) -> None:
    for start, stop in ranges:
        logits = data.logits[start:stop] if with_logits else None
        cache.write_chunk(split, start, data.hidden[start:stop], data.lengths[start:stop], data.labels[start:stop], logits)


def write_split(path, data: SplitData, *, split: str = "train", chunk_size: int = 4, order=None) -> FeatureCache:
    cache = FeatureCache.create(path, make_meta())
    cache.create_split(split, len(data.labels), len(LABEL_NAMES), chunk_size=chunk_size)
    ranges = cache.pending_chunks(split)
    if order is not None:
        ranges = [ranges[index] for index in order]
    write_chunks(cache, split, data, ranges)
    return cache


def assert_split_equal(features, data: SplitData) -> None:
    assert features.hidden.dtype == np.float32
    assert features.logits.dtype == np.float32
    assert features.labels.dtype == np.int64
    assert features.lengths.dtype == np.int32
    assert features.hidden.tobytes() == data.hidden.tobytes()
    assert features.logits.tobytes() == data.logits.tobytes()
    assert np.array_equal(features.labels, data.labels)
    assert np.array_equal(features.lengths, data.lengths)


# ----- save, reload, resume ---------------------------------------------------


@pytest.mark.parametrize("name", FORMATS)
def test_save_reload_compare(tmp_path, name):
    train, test = make_split_data(10, seed=1), make_split_data(7, seed=2)
    path = tmp_path / name
    with write_split(path, train) as cache:
        cache.create_split("test", 7, len(LABEL_NAMES), chunk_size=3)
        write_chunks(cache, "test", test, cache.pending_chunks("test"))

    with FeatureCache.open(path) as reader:
        assert reader.format == ("zarr" if name.endswith(".zarr") else "hdf5")
        assert reader.meta == make_meta()
        assert reader.splits() == ["test", "train"]
        assert_split_equal(reader.read("train"), train)
        assert_split_equal(reader.read("test"), test)
        assert reader.read("test").heads_fingerprint == make_meta().model_fingerprint


@pytest.mark.parametrize("name", FORMATS)
def test_resume_matches_uninterrupted(tmp_path, name):
    data = make_split_data(18, seed=3)
    write_split(tmp_path / "full" / name, data).close()

    # First run writes chunks 3 and 0, out of order, then stops.
    path = tmp_path / "resumed" / name
    cache = write_split(path, data, order=[3, 0])
    cache.close()

    resumed = FeatureCache.create(path, make_meta())
    resumed.create_split("train", 18, len(LABEL_NAMES), chunk_size=4)
    pending = resumed.pending_chunks("train")
    assert pending == [(4, 8), (8, 12), (16, 18)]
    write_chunks(resumed, "train", data, reversed(pending))
    assert resumed.is_complete("train")
    assert resumed.pending_chunks("train") == []

    full = FeatureCache.open(tmp_path / "full" / name).read("train")
    again = FeatureCache.open(path).read("train")
    assert again.hidden.tobytes() == full.hidden.tobytes()
    assert again.logits.tobytes() == full.logits.tobytes()
    assert again.labels.tobytes() == full.labels.tobytes()
    assert again.lengths.tobytes() == full.lengths.tobytes()


@pytest.mark.parametrize("name", FORMATS)
def test_create_split_keeps_written_chunks(tmp_path, name):
    data = make_split_data(10)
    cache = write_split(tmp_path / name, data, order=[0])
    cache.create_split("train", 10, len(LABEL_NAMES), chunk_size=4)
    assert cache.pending_chunks("train") == [(4, 8), (8, 10)]

    with pytest.raises(ValueError, match=r"n_examples=10.*n_examples=11"):
        cache.create_split("train", 11, len(LABEL_NAMES), chunk_size=4)


@pytest.mark.parametrize("name", FORMATS)
def test_row_order_round_trip(tmp_path, name):
    data = make_split_data(10)
    order = np.array([3, 1, 4, 0, 5, 9, 2, 6, 8, 7])
    path = tmp_path / name
    cache = FeatureCache.create(path, make_meta())
    cache.create_split("train", 10, len(LABEL_NAMES), chunk_size=4, order=order)
    write_chunks(cache, "train", data, cache.pending_chunks("train")[:1])

    cache.create_split("train", 10, len(LABEL_NAMES), chunk_size=4, order=order)
    cache.create_split("train", 10, len(LABEL_NAMES), chunk_size=4)
    with pytest.raises(ValueError, match="different row order"):
        cache.create_split("train", 10, len(LABEL_NAMES), chunk_size=4, order=order[::-1])
    with pytest.raises(ValueError, match=r"permutation of range\(10\)"):
        cache.create_split("test", 10, len(LABEL_NAMES), order=np.zeros(10, np.int64))
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        cache.create_split("test", 10, len(LABEL_NAMES), order=order[:5])

    write_chunks(cache, "train", data, cache.pending_chunks("train"))
    features = FeatureCache.open(path).read("train")
    assert features.order.dtype == np.int64
    assert np.array_equal(features.order, order)
    assert_split_equal(features, data)


def test_default_order_is_identity(tmp_path):
    write_split(tmp_path / "cache.zarr", make_split_data(6)).close()
    features = FeatureCache.open(tmp_path / "cache.zarr").read("train")
    assert np.array_equal(features.order, np.arange(6))


# ----- incomplete splits ------------------------------------------------------


@pytest.mark.parametrize("name", FORMATS)
def test_incomplete_read_raises_with_fix(tmp_path, name):
    data = make_split_data(10)
    path = tmp_path / name
    cache = write_split(path, data, order=[1])

    assert not cache.is_complete("train")
    with pytest.raises(ValueError) as error:
        cache.read("train")
    message = str(error.value)
    assert "split 'train'" in message
    assert "incomplete: 1 of 3 chunks written" in message
    assert f"python cli.py extract --run-dir {tmp_path} --resume" in message


def test_zarr_torn_chunk_is_pending(tmp_path):
    data = make_split_data(10)
    path = tmp_path / "cache.zarr"
    cache = write_split(path, data, order=[0, 2])

    # A crash after the data of chunk 1 and before its done marker.
    group = zarr.open_group(str(path), mode="r+")["train"]
    group["hidden"][4:8] = data.hidden[4:8]
    group["labels"][4:8] = data.labels[4:8]

    assert cache.pending_chunks("train") == [(4, 8)]
    assert not cache.is_complete("train")
    with pytest.raises(ValueError, match="2 of 3 chunks written"):
        cache.read("train")


def test_zarr_rewrite_finished_chunk(tmp_path):
    data = make_split_data(10)
    path = tmp_path / "cache.zarr"
    cache = write_split(path, data)
    done_file = path / "train" / "done" / "c" / "1"
    assert done_file.is_file()

    # An invalid chunk fails validation before any marker changes.
    with pytest.raises(ValueError, match="hidden has shape"):
        cache.write_chunk("train", 4, data.hidden[:3], data.lengths[4:8], data.labels[4:8])
    assert cache.is_complete("train")

    write_chunks(cache, "train", data, [(4, 8)])
    assert cache.is_complete("train")
    assert_split_equal(cache.read("train"), data)


# ----- metadata and fingerprints ----------------------------------------------


@pytest.mark.parametrize("name", FORMATS)
def test_create_with_other_meta_raises(tmp_path, name):
    write_split(tmp_path / name, make_split_data(4)).close()

    with pytest.raises(ValueError) as error:
        FeatureCache.create(tmp_path / name, make_meta(model_fingerprint="model-sha-zzz", exits=[2, 4]))
    message = str(error.value)
    assert "model_fingerprint: store has 'model-sha-aaa', requested 'model-sha-zzz'" in message
    assert "exits: store has [2, 4, 6], requested [2, 4]" in message
    assert "dataset_fingerprint" not in message


@pytest.mark.parametrize("name", FORMATS)
def test_open_expect_mismatch_names_both(tmp_path, name):
    write_split(tmp_path / name, make_split_data(4)).close()

    expect = {"model_fingerprint": "model-sha-aaa", "dataset_fingerprint": "data-sha-bbb", "exits": [2, 4, 6]}
    assert FeatureCache.open(tmp_path / name, expect=expect).meta.exits == EXITS
    for key, value in [("model_fingerprint", "other"), ("dataset_fingerprint", "other"), ("exits", [2, 6])]:
        with pytest.raises(ValueError) as error:
            FeatureCache.open(tmp_path / name, expect={**expect, key: value})
        assert f"{key}: store has" in str(error.value)
        assert f"requested {value!r}" in str(error.value)

    with pytest.raises(ValueError, match="unknown keys"):
        FeatureCache.open(tmp_path / name, expect={"model_hash": "x"})


def test_zarr_schema_version_mismatch(tmp_path):
    path = tmp_path / "cache.zarr"
    write_split(path, make_split_data(4)).close()
    root = zarr.open_group(str(path), mode="r+")
    root.attrs["schema_version"] = SCHEMA_VERSION + 1

    for action in (lambda: FeatureCache.open(path), lambda: FeatureCache.create(path, make_meta())):
        with pytest.raises(ValueError) as error:
            action()
        assert f"schema_version {SCHEMA_VERSION + 1}" in str(error.value)
        assert f"reads schema_version {SCHEMA_VERSION}" in str(error.value)


def test_open_missing_cache(tmp_path):
    with pytest.raises(FileNotFoundError, match="cli.py extract"):
        FeatureCache.open(tmp_path / "cache.zarr")
    with pytest.raises(FileNotFoundError, match="not found"):
        FeatureCache.open(tmp_path / "cache.h5")


def test_meta_json_round_trip():
    meta = make_meta()
    assert CacheMeta.from_json_dict(meta.to_json_dict()) == meta
    with pytest.raises(ValueError, match="unknown fields"):
        CacheMeta.from_json_dict({**meta.to_json_dict(), "revision": "main"})


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        ({"exits": [4, 2]}, "strictly increasing"),
        ({"exits": [2, 8]}, "in 1..7"),
        ({"exits": []}, "at least one"),
        ({"label_names": ["only"]}, "at least 2"),
        ({"logits_kind": "lens"}, "logits_kind"),
        ({"extra": {"bad": object()}}, "JSON-serialisable"),
    ],
)
def test_meta_rejects_invalid(overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_meta(**overrides)


# ----- logits -----------------------------------------------------------------


@pytest.mark.parametrize("name", FORMATS)
def test_write_logits_then_has_logits(tmp_path, name):
    data = make_split_data(10)
    path = tmp_path / name
    cache = FeatureCache.create(path, make_meta())
    cache.create_split("train", 10, len(LABEL_NAMES), chunk_size=4)
    write_chunks(cache, "train", data, cache.pending_chunks("train"), with_logits=False)

    assert cache.is_complete("train")
    assert not cache.has_logits("train")
    with pytest.raises(ValueError, match="missing exit logits"):
        cache.read("train")
    partial = cache.read("train", require_logits=False)
    assert partial.logits is None
    assert partial.heads_fingerprint is None

    cache.write_logits("train", data.logits, "heads-sha-ccc")
    assert cache.has_logits("train")
    cache.close()

    features = FeatureCache.open(path).read("train", with_hidden=False)
    assert features.hidden is None
    assert features.heads_fingerprint == "heads-sha-ccc"
    assert features.logits.tobytes() == data.logits.tobytes()

    # Chunk logits would mix two sources with the whole-split logits.
    with pytest.raises(ValueError, match="heads-sha-ccc"):
        write_chunks(FeatureCache.create(path, make_meta()), "train", data, [(0, 4)])


@pytest.mark.parametrize("name", FORMATS)
def test_write_logits_checks_input(tmp_path, name):
    data = make_split_data(10)
    cache = write_split(tmp_path / name, data, order=[0])
    with pytest.raises(ValueError, match="incomplete"):
        cache.write_logits("train", data.logits, "heads")

    write_chunks(cache, "train", data, cache.pending_chunks("train"))
    with pytest.raises(ValueError, match=r"logits has shape \(10, 3, 2\), expected \(10, 3, 3\)"):
        cache.write_logits("train", data.logits[:, :, :2], "heads")
    with pytest.raises(ValueError, match="heads_fingerprint"):
        cache.write_logits("train", data.logits, "")


# ----- validation -------------------------------------------------------------


def _chunk_args(data: SplitData) -> dict:
    return dict(
        hidden=data.hidden[:4], lengths=data.lengths[:4], labels=data.labels[:4], logits=data.logits[:4]
    )


@pytest.mark.parametrize(
    "start, change, pattern",
    [
        (1, {}, "not a chunk boundary"),
        (12, {}, "not a chunk boundary"),
        (0, {"hidden": np.zeros((3, 3, 12), np.float32)}, r"hidden has shape \(3, 3, 12\), expected \(4, 3, 12\)"),
        (0, {"hidden": np.zeros((4, 12, 3), np.float32)}, r"expected \(4, 3, 12\)"),
        (0, {"hidden": np.zeros((4, 3, 12), np.int64)}, "hidden must be a floating-point array"),
        (0, {"hidden": np.full((4, 3, 12), np.nan, np.float32)}, "NaN"),
        (0, {"logits": np.zeros((4, 3, 2), np.float32)}, r"logits has shape \(4, 3, 2\)"),
        (0, {"labels": np.array([0, 1, 3, 0])}, r"labels must be in \[0, 3\)"),
        (0, {"labels": np.zeros(4, np.float32)}, "labels must be an integer array"),
        (0, {"lengths": np.array([1, 0, 2, 3])}, "lengths must be"),
        (8, {}, r"hidden has shape \(4, 3, 12\), expected \(2, 3, 12\)"),
    ],
)
def test_write_chunk_rejects_invalid(tmp_path, start, change, pattern):
    data = make_split_data(10)
    cache = FeatureCache.create(tmp_path / "cache.zarr", make_meta())
    cache.create_split("train", 10, len(LABEL_NAMES), chunk_size=4)
    with pytest.raises(ValueError, match=pattern):
        cache.write_chunk("train", start, **{**_chunk_args(data), **change})
    assert cache.pending_chunks("train") == [(0, 4), (4, 8), (8, 10)]


def test_create_split_rejects_invalid(tmp_path):
    cache = FeatureCache.create(tmp_path / "cache.zarr", make_meta())
    with pytest.raises(ValueError, match="num_classes 2 does not match"):
        cache.create_split("train", 10, 2)
    with pytest.raises(ValueError, match="n_examples must be >= 1"):
        cache.create_split("train", 0, 3)
    with pytest.raises(ValueError, match="invalid split name"):
        cache.create_split("../train", 10, 3)
    with pytest.raises(ValueError, match="split 'test' not found"):
        cache.pending_chunks("test")


def test_read_checks_stored_dtype(tmp_path):
    path = tmp_path / "cache.zarr"
    write_split(path, make_split_data(10)).close()
    group = zarr.open_group(str(path), mode="r+")["train"]
    group.create_array("lengths", shape=(10,), dtype="int64", overwrite=True)[:] = 1

    with pytest.raises(ValueError, match=r"'lengths' has shape \(10,\) and dtype int64, expected \(10,\) int32"):
        FeatureCache.open(path).read("train")


def test_format_inference_and_modes(tmp_path):
    with pytest.raises(ValueError, match=r"\.zarr, \.h5 or \.hdf5"):
        FeatureCache.create(tmp_path / "cache.bin", make_meta())
    with pytest.raises(ValueError, match="conflicts"):
        FeatureCache.create(tmp_path / "cache.zarr", make_meta(), format="hdf5")

    cache = FeatureCache.create(tmp_path / "store", make_meta(), format="zarr")
    assert cache.format == "zarr"
    cache.create_split("train", 4, len(LABEL_NAMES))
    reader = FeatureCache.open(tmp_path / "store")
    assert reader.format == "zarr"
    with pytest.raises(ValueError, match="opened for reading"):
        reader.create_split("test", 4, len(LABEL_NAMES))
    reader.close()
    with pytest.raises(ValueError, match="closed"):
        reader.splits()


def test_import_needs_no_torch():
    script = "import sys, features; print(sorted(m for m in ('torch', 'transformers', 'backbone') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert result.stdout.strip() == "[]"


def test_shard_chunks_round_robin():
    pending = [(0, 4), (4, 8), (8, 12), (12, 16), (16, 18)]
    assert shard_chunks(pending, 0, 2) == [(0, 4), (8, 12), (16, 18)]
    assert shard_chunks(pending, 1, 2) == [(4, 8), (12, 16)]

    # Keyed by chunk number, a shard keeps its chunks whatever else is pending.
    assert shard_chunks(pending[1:], 1, 2, chunk_size=4) == [(4, 8), (12, 16)]
    assert shard_chunks(pending[1:], 0, 2, chunk_size=4) == [(8, 12), (16, 18)]
    with pytest.raises(ValueError, match="shard_index"):
        shard_chunks(pending, 2, 2)
    with pytest.raises(ValueError, match="num_shards"):
        shard_chunks(pending, 0, 0)
