"""HDF5 cache: the staging directory, assembly into the .h5 file and recovery after a crash."""

from __future__ import annotations

import h5py
import pytest

from features import SCHEMA_VERSION, FeatureCache
from features.staging import StagingArea, staging_directory
from features.schema import check_chunk_arrays
from tests.test_features_store import LABEL_NAMES, assert_split_equal, make_meta, make_split_data, write_chunks, write_split


def test_h5_appears_only_when_complete(tmp_path):
    data = make_split_data(10)
    path = tmp_path / "cache.h5"
    parts = staging_directory(path)
    cache = write_split(path, data, order=[2, 0])

    assert not path.exists()
    assert sorted(entry.name for entry in (parts / "train").iterdir()) == [
        "0.safetensors",
        "8.safetensors",
        "layout.json",
        "order.safetensors",
    ]
    with pytest.raises(ValueError, match="incomplete: 2 of 3 chunks written"):
        FeatureCache.open(path).read("train")

    write_chunks(cache, "train", data, cache.pending_chunks("train"))
    assert path.is_file()
    assert not parts.exists()
    assert_split_equal(FeatureCache.open(path).read("train"), data)


def test_torn_staged_chunk_is_pending(tmp_path):
    data = make_split_data(10)
    path = tmp_path / "cache.h5"
    write_split(path, data, order=[0]).close()

    # A process killed before the rename leaves only the temporary file.
    (staging_directory(path) / "train" / ".4.safetensors.999.deadbeef.tmp").write_bytes(b"partial")

    cache = FeatureCache.create(path, make_meta())
    assert cache.pending_chunks("train") == [(4, 8), (8, 10)]


def test_split_added_after_assembly(tmp_path):
    train, test = make_split_data(10, seed=1), make_split_data(6, seed=2)
    path = tmp_path / "cache.h5"
    write_split(path, train).close()
    assert path.is_file()

    cache = FeatureCache.create(path, make_meta())
    cache.create_split("test", 6, len(LABEL_NAMES), chunk_size=4)
    write_chunks(cache, "test", test, cache.pending_chunks("test")[:1])
    assert cache.splits() == ["test", "train"]
    assert_split_equal(cache.read("train"), train)
    with pytest.raises(ValueError, match="1 of 2 chunks"):
        cache.read("test")

    write_chunks(cache, "test", test, cache.pending_chunks("test"))
    with h5py.File(path, "r") as handle:
        assert sorted(handle.keys()) == ["test", "train"]
    reader = FeatureCache.open(path)
    assert_split_equal(reader.read("train"), train)
    assert_split_equal(reader.read("test"), test)


def test_staged_logits_survive_assembly(tmp_path):
    train, test = make_split_data(10, seed=1), make_split_data(6, seed=2)
    path = tmp_path / "cache.h5"
    cache = FeatureCache.create(path, make_meta())
    cache.create_split("test", 6, len(LABEL_NAMES), chunk_size=4)
    cache.create_split("train", 10, len(LABEL_NAMES), chunk_size=4)
    write_chunks(cache, "train", train, cache.pending_chunks("train"), with_logits=False)

    # Train stays staged while test is incomplete, so its logits go to the staging directory.
    cache.write_logits("train", train.logits, "heads-sha-ccc")
    assert not path.exists()
    assert cache.has_logits("train")
    assert cache.read("train").heads_fingerprint == "heads-sha-ccc"

    write_chunks(cache, "test", test, cache.pending_chunks("test"))
    assert path.is_file()
    features = FeatureCache.open(path).read("train")
    assert features.heads_fingerprint == "heads-sha-ccc"
    assert_split_equal(features, train)
    assert FeatureCache.open(path).read("test").heads_fingerprint == make_meta().model_fingerprint


def test_crash_before_assembly_recovers(tmp_path):
    data = make_split_data(10)
    path = tmp_path / "cache.h5"
    cache = write_split(path, data, order=[0, 1])

    # The last chunk file lands, then the process dies before assembling the .h5 file.
    layout = StagingArea(staging_directory(path)).layout("train")
    chunk = check_chunk_arrays(make_meta(), layout, 2, data.hidden[8:], data.lengths[8:], data.labels[8:], data.logits[8:])
    StagingArea(staging_directory(path)).write_chunk("train", 8, chunk)
    cache.close()
    assert not path.exists()

    FeatureCache.create(path, make_meta()).close()
    assert path.is_file()
    assert not staging_directory(path).exists()
    assert_split_equal(FeatureCache.open(path).read("train"), data)


def test_crash_after_assembly_cleans_staging(tmp_path):
    data = make_split_data(10)
    path = tmp_path / "cache.h5"
    write_split(path, data).close()

    # Staging left behind by a process killed between the rename and the removal.
    leftover = staging_directory(path) / "train"
    leftover.mkdir(parents=True)
    (leftover / "0.safetensors").write_bytes(b"stale")

    cache = FeatureCache.create(path, make_meta())
    assert not staging_directory(path).exists()
    assert cache.is_complete("train")
    assert_split_equal(cache.read("train"), data)


def test_finalize_rejects_incomplete(tmp_path):
    cache = write_split(tmp_path / "cache.h5", make_split_data(10), order=[0])
    with pytest.raises(ValueError, match="split 'train' has 1 of 3 chunks written"):
        cache.finalize()


def test_hdf5_schema_version_mismatch(tmp_path):
    path = tmp_path / "cache.h5"
    write_split(path, make_split_data(4)).close()
    with h5py.File(path, "r+") as handle:
        handle.attrs["schema_version"] = SCHEMA_VERSION + 1

    with pytest.raises(ValueError) as error:
        FeatureCache.open(path)
    assert f"schema_version {SCHEMA_VERSION + 1}" in str(error.value)
    assert f"reads schema_version {SCHEMA_VERSION}" in str(error.value)
