"""Two real processes writing disjoint chunks of one Zarr cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from features import FeatureCache
from tests.test_features_store import LABEL_NAMES, make_meta, make_split_data

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent

N_EXAMPLES, CHUNK_SIZE, SEED = 200, 4, 5

SHARD_SCRIPT = f"""
import json, sys
sys.path[:0] = [{str(REPO_ROOT)!r}, {str(TESTS_DIR)!r}]
from features import FeatureCache
from tests.test_features_store import make_meta, make_split_data, write_chunks

path, shard_index = sys.argv[1], int(sys.argv[2])
cache = FeatureCache.create(path, make_meta())
cache.create_split("train", {N_EXAMPLES}, 3, chunk_size={CHUNK_SIZE})
mine = cache.pending_chunks("train", shard_index=shard_index, num_shards=2)
write_chunks(cache, "train", make_split_data({N_EXAMPLES}, seed={SEED}), mine)
print(json.dumps(mine))
"""


def test_two_processes_fill_one_store(tmp_path):
    path = tmp_path / "cache.zarr"
    cache = FeatureCache.create(path, make_meta())
    cache.create_split("train", N_EXAMPLES, len(LABEL_NAMES), chunk_size=CHUNK_SIZE)
    all_chunks = cache.pending_chunks("train")

    workers = [
        subprocess.Popen(
            [sys.executable, "-c", SHARD_SCRIPT, str(path), str(shard_index)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for shard_index in range(2)
    ]
    outputs = [worker.communicate() for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr

    shards = [[tuple(chunk) for chunk in json.loads(stdout)] for stdout, _ in outputs]
    assert set(shards[0]).isdisjoint(shards[1])
    assert sorted(shards[0] + shards[1]) == all_chunks
    assert len(shards[0]) == len(shards[1]) == len(all_chunks) // 2

    assert cache.is_complete("train")
    features = FeatureCache.open(path).read("train")
    expected = make_split_data(N_EXAMPLES, seed=SEED)
    assert features.hidden.tobytes() == expected.hidden.tobytes()
    assert features.logits.tobytes() == expected.logits.tobytes()
    assert np.array_equal(features.labels, expected.labels)
    assert np.array_equal(features.lengths, expected.lengths)
