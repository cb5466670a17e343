"""Wall-clock timing shared by `infer`, the baselines and the benchmarks."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass
class Timing:
    """One timed pass over a set of texts."""

    seconds: float
    examples: int

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else float("inf")

    @property
    def ms_per_example(self) -> float:
        return 1000.0 * self.seconds / max(self.examples, 1)


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work, so a timer reads finished work and not launched work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def timed(device, examples: int):
    """Time the body after synchronising the device on both ends; yields the `Timing` to fill."""
    timing = Timing(0.0, examples)
    synchronize(device)
    start = time.perf_counter()
    yield timing
    synchronize(device)
    timing.seconds = time.perf_counter() - start
