"""Kill `extract` mid-run with SIGKILL, resume it, and compare with an uninterrupted run bit for bit."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from features import FeatureCache
from tests.conftest import invoke

REPO = Path(__file__).resolve().parents[1]
# Small chunks and batches make the extraction take several seconds on the tiny model,
# so the poll below sees a partly written split before the run ends.
EXTRACT_OPTIONS = ["--chunk-size", "2", "--batch-size", "2"]
POLL_SECONDS = 0.05


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, tiny_gpt2_dir, csv_dataset) -> Path:
    """A run with frozen heads trained (train and validation states are in cache.zarr)."""
    run = tmp_path_factory.mktemp("resume-base") / "run"
    result = invoke(
        "finetune", "--run-dir", run, "--model", tiny_gpt2_dir, "--dataset", csv_dataset,
        "--text-column", "review", "--label-column", "sentiment", "--exits", "1,3,5",
        "--epochs", "2", "--limit", "40",
    )
    assert result.exit_code == 0, result.output
    return run


def copy_run(base: Path, target: Path, cache_format: str) -> Path:
    shutil.copytree(base, target)
    if cache_format == "hdf5":
        # The HDF5 cache starts empty, so all three splits are extracted into it.
        shutil.rmtree(target / "cache.zarr")
    return target


def cache_path(run: Path, cache_format: str) -> Path:
    return run / ("cache.h5" if cache_format == "hdf5" else "cache.zarr")


def partly_written(path: Path) -> bool:
    """Whether some split of the cache has at least one chunk done and at least one pending."""
    try:
        cache = FeatureCache.open(path)
        for split in cache.splits():
            total = cache.num_chunks(split)
            pending = len(cache.pending_chunks(split))
            if 0 < total - pending and pending > 0:
                return True
    except (OSError, ValueError, KeyError):
        # The writer may be between creating a store and writing its first metadata.
        return False
    return False


def start_extract(run: Path, cache_format: str, log: Path) -> subprocess.Popen:
    command = [sys.executable, "cli.py", "extract", "--run-dir", str(run), "--format", cache_format, *EXTRACT_OPTIONS]
    with open(log, "wb") as handle:
        return subprocess.Popen(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)


def kill_mid_extract(run: Path, cache_format: str, log: Path) -> None:
    """Start `extract` in a subprocess and SIGKILL it once a split is partly written."""
    process = start_extract(run, cache_format, log)
    path = cache_path(run, cache_format)
    while process.poll() is None and not partly_written(path):
        time.sleep(POLL_SECONDS)
    if process.poll() is not None:
        pytest.fail(f"extract finished (exit {process.returncode}) before it could be killed:\n{log.read_text()[-3000:]}")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def read_all(path: Path) -> dict:
    with FeatureCache.open(path) as cache:
        return {split: (cache.read(split), cache.logits_fingerprint(split)) for split in cache.splits()}


def assert_caches_equal(resumed: Path, reference: Path) -> None:
    got, expected = read_all(resumed), read_all(reference)
    assert sorted(got) == sorted(expected) == ["test", "train", "validation"]
    for split in expected:
        features, fingerprint = got[split]
        reference_features, reference_fingerprint = expected[split]
        assert fingerprint == reference_fingerprint, split
        for name in ("hidden", "logits", "labels", "lengths", "order"):
            assert np.array_equal(getattr(features, name), getattr(reference_features, name)), f"{split}/{name}"


@pytest.mark.parametrize("cache_format", ["zarr", "hdf5"])
def test_killed_extract_resumes_bit_for_bit(base_run, tmp_path, cache_format):
    reference = copy_run(base_run, tmp_path / "reference", cache_format)
    result = invoke("extract", "--run-dir", reference, "--format", cache_format, *EXTRACT_OPTIONS)
    assert result.exit_code == 0, result.output

    interrupted = copy_run(base_run, tmp_path / "interrupted", cache_format)
    kill_mid_extract(interrupted, cache_format, tmp_path / "killed.log")
    assert partly_written(cache_path(interrupted, cache_format))
    if cache_format == "hdf5":
        assert not (interrupted / "cache.h5").exists()
        assert list((interrupted / "cache.h5.parts").glob("*/*.safetensors"))

    # Without --resume, a partial cache is an error that says how to continue.
    result = invoke("extract", "--run-dir", interrupted, "--format", cache_format, *EXTRACT_OPTIONS)
    assert result.exit_code == 1
    assert "pass --resume to continue" in result.output
    assert "Traceback" not in result.output

    result = invoke("extract", "--run-dir", interrupted, "--format", cache_format, *EXTRACT_OPTIONS, "--resume")
    assert result.exit_code == 0, result.output
    assert_caches_equal(cache_path(interrupted, cache_format), cache_path(reference, cache_format))
