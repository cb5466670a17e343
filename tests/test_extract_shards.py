"""Two extract processes fill disjoint chunks of one Zarr cache; a last run adds the logits."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from features import FeatureCache
from tests.conftest import invoke

ROOT = Path(__file__).resolve().parents[1]


def test_two_shards_equal_single_process(tmp_path, trained_run):
    # Reuse the trained heads of the tiny run; only the cache is rebuilt.
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    for name in ("run.json", "heads"):
        subprocess.run(["cp", "-r", str(trained_run / name), str(sharded / name)], check=True)

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    shards = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), "extract", "--run-dir", str(sharded), "--chunk-size", "16", "--num-shards", "2", "--shard-index", str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in (0, 1)
    ]
    for process in shards:
        output = process.communicate(timeout=600)[0].decode()
        assert process.returncode == 0, output

    result = invoke("extract", "--run-dir", sharded, "--chunk-size", "16")
    assert result.exit_code == 0, result.output

    reference = FeatureCache.open(trained_run / "cache.zarr")
    cache = FeatureCache.open(sharded / "cache.zarr")
    for split in ("train", "validation", "test"):
        expected, actual = reference.read(split), cache.read(split)
        assert np.array_equal(expected.order, actual.order), split
        assert np.allclose(expected.hidden, actual.hidden, atol=1e-5), split
        assert np.allclose(expected.logits, actual.logits, atol=1e-5), split
        assert np.array_equal(expected.labels, actual.labels), split
