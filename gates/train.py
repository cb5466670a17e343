"""Fit and calibrate a gate on validation, with cross-fitted scores for learned kinds."""

from __future__ import annotations

import logging

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold

from gates.base import Gate, check_cache_arrays, check_label_mode
from gates.calibrate import Calibration, calibrate, calibrate_scores, check_max_drop
from gates.registry import make_gate

logger = logging.getLogger(__name__)

CROSS_FIT_FOLDS = 5


def _folds(labels: np.ndarray, seed: int):
    """Yield (fit rows, held rows) of a k-fold split stratified by label.

    With fewer than k examples in some class, stratification is impossible,
    so the split falls back to plain shuffled k-fold.
    """
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    if counts.min() >= CROSS_FIT_FOLDS:
        splitter = StratifiedKFold(n_splits=CROSS_FIT_FOLDS, shuffle=True, random_state=seed)
        return splitter.split(np.zeros(len(labels)), labels)
    logger.warning("a class has %d examples, fewer than %d folds. Cross-fitting without stratification",
                   counts.min(), CROSS_FIT_FOLDS)
    return KFold(n_splits=CROSS_FIT_FOLDS, shuffle=True, random_state=seed).split(np.zeros(len(labels)))


def cross_fitted_scores(kind, logits, hidden, labels, *, exits, num_layers, label_mode, seed, **params) -> np.ndarray:
    """Scores (N, E) where each example is scored by a gate fitted on the other folds."""
    scores = np.empty(logits.shape[:2], dtype=np.float64)
    for fold, (fit_rows, held_rows) in enumerate(_folds(labels, seed)):
        gate = make_gate(kind, **params)
        fold_hidden = None if hidden is None else hidden[fit_rows]
        gate.fit(logits[fit_rows], fold_hidden, labels[fit_rows], exits=exits, num_layers=num_layers,
                 label_mode=label_mode, seed=seed + fold)
        held_hidden = None if hidden is None else hidden[held_rows]
        scores[held_rows] = gate.scores(logits[held_rows], held_hidden)
    return scores


def train_gate(kind, val_logits, val_hidden, val_labels, *, exits, num_layers, max_drop=0.01,
               label_mode="agreement", seed=0, **params) -> tuple[Gate, Calibration]:
    """Fit a gate and calibrate its threshold, both on validation only.

    Rule kinds (maxprob, entropy, margin, patience) are fitted and calibrated
    on all of validation. Learned kinds (mlp, xgboost, logistic) are
    cross-fitted: validation is split into 5 folds stratified by label, each
    fold is scored by a gate fitted on the other four, and the threshold is
    chosen on those out-of-fold scores. Then the final gate is fitted on all
    of validation and given that threshold.
    """
    check_label_mode(label_mode)
    check_max_drop(max_drop)
    cache = check_cache_arrays(val_logits, val_hidden, val_labels, exits=exits, num_layers=num_layers)
    if cache.labels is None:
        raise ValueError("train_gate needs validation labels to calibrate the threshold, got None")
    gate = make_gate(kind, **params)
    common = dict(exits=cache.exits, num_layers=cache.num_layers)

    if not gate.learned:
        gate.fit(cache.logits, cache.hidden, cache.labels, label_mode=label_mode, seed=seed, **common)
        return gate, calibrate(gate, cache.logits, cache.hidden, cache.labels, max_drop=max_drop, **common)

    # NOTE: the threshold comes from five fold models, and the final model fitted on all
    # rows may score slightly differently; the out-of-fold figures estimate, not certify.
    scores = cross_fitted_scores(kind, cache.logits, cache.hidden, cache.labels, label_mode=label_mode,
                                 seed=seed, **common, **params)
    calibration = calibrate_scores(scores, cache.logits, cache.labels, max_drop=max_drop, **common)
    gate.fit(cache.logits, cache.hidden, cache.labels, label_mode=label_mode, seed=seed, **common)
    gate.threshold_ = calibration.threshold
    return gate, calibration
