"""The train-gates stage: fit and calibrate a gate on the cache's validation split."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

from features import FeatureCache
from gates import GATE_KINDS, LABEL_MODES, train_gate

from .checks import check_run_heads_match_cache
from .rundir import RunDir

logger = logging.getLogger(__name__)


def run_train_gates(run: RunDir, kinds: list[str], *, max_drop: float = 0.01, label_mode: str = "agreement", seed: int = 0, params: dict | None = None, method: str = "empirical", delta: float = 0.1) -> list[dict]:
    """Train each gate kind on validation and save it as `gates/<kind>.json` in the run directory."""
    unknown = [k for k in kinds if k not in GATE_KINDS]
    if unknown:
        raise ValueError(f"unknown gate kind {', '.join(unknown)}; choose from {', '.join(GATE_KINDS)}, or all")
    if label_mode not in LABEL_MODES:
        raise ValueError(f"--label {label_mode!r} is not one of {', '.join(LABEL_MODES)}")
    if not 0.0 <= max_drop < 1.0:
        raise ValueError(f"--max-drop {max_drop} is outside [0, 1); it is a fraction, e.g. 0.01 for one point")

    config = run.load_config()
    cache = FeatureCache.open(run.require(run.cache_path(config.cache_format), "extract"))
    validation = cache.read("validation")
    check_run_heads_match_cache(run, cache, validation, "validation")
    meta = cache.meta
    summaries = []
    for kind in kinds:
        started = time.perf_counter()
        gate, calibration = train_gate(
            kind,
            validation.logits,
            validation.hidden,
            validation.labels,
            exits=meta.exits,
            num_layers=meta.num_layers,
            max_drop=max_drop,
            label_mode=label_mode,
            seed=seed,
            method=method,
            delta=delta,
            **(params or {}),
        )
        gate.meta_ = {
            "model_fingerprint": meta.model_fingerprint,
            "dataset_fingerprint": meta.dataset_fingerprint,
            "heads_fingerprint": validation.heads_fingerprint,
            "exits": meta.exits,
            "num_layers": meta.num_layers,
            "label_mode": label_mode,
            "calibration": asdict(calibration),
        }
        run.gates_dir.mkdir(parents=True, exist_ok=True)
        gate.save(run.gate_path(kind))
        seconds = time.perf_counter() - started
        logger.info("trained %s gate in %.1f s", kind, seconds)
        summaries.append({"kind": kind, "seconds": seconds, **asdict(calibration)})
    return summaries
