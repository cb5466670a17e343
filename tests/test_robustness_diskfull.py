"""A disk that fills during `extract`: one error line, and `--resume` finishes the cache afterwards.

The test cannot mount a small file system without root, so it caps the file
size of the `extract` subprocess with RLIMIT_FSIZE (SIGXFSZ ignored): writes
past the cap fail with EFBIG, which takes the same path as ENOSPC and EDQUOT.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from features import FeatureCache
from replay.diskfull import DiskFullError, disk_full_errors
from tests.conftest import invoke

REPO = Path(__file__).resolve().parents[1]
# Larger than run.json and the Zarr metadata, smaller than one chunk of hidden states
# (16 rows x 3 exits x 48 floats x 4 bytes, about 9 KB before compression).
FILE_SIZE_LIMIT = 6000


def limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_disk_full_errno_becomes_one_message(code):
    with pytest.raises(DiskFullError) as caught:
        with disk_full_errors("python cli.py extract --run-dir runs/x"):
            raise OSError(code, os.strerror(code), "runs/x/cache.zarr/train/hidden/c/0/0/0")
    message = str(caught.value)
    assert message.startswith("disk full writing runs/x/cache.zarr/train/hidden/c/0/0/0")
    assert "`python cli.py extract --run-dir runs/x --resume`" in message


def test_other_os_errors_pass_through():
    with pytest.raises(PermissionError):
        with disk_full_errors("python cli.py extract"):
            raise PermissionError(errno.EACCES, "Permission denied")


def test_extract_on_full_disk_resumes(trained_run, tmp_path):
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    shutil.rmtree(run / "cache.zarr")
    command = [sys.executable, "cli.py", "extract", "--run-dir", str(run), "--chunk-size", "16", "--batch-size", "8"]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    process = subprocess.run(command, cwd=REPO, capture_output=True, text=True, preexec_fn=limit_file_size, env=env)

    assert process.returncode == 1, process.stderr[-3000:]
    assert "Traceback" not in process.stderr
    errors = [line for line in process.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, process.stderr[-3000:]
    assert errors[0].startswith("Error: disk full (File too large)")
    assert f"run `python cli.py extract --run-dir {run} --resume`" in errors[0]
    print(f"MESSAGE| {errors[0]}")

    result = invoke("extract", "--run-dir", run, "--chunk-size", "16", "--batch-size", "8", "--resume")
    assert result.exit_code == 0, result.output
    with FeatureCache.open(run / "cache.zarr") as cache:
        for split in ("train", "validation", "test"):
            assert cache.has_logits(split), split
