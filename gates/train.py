"""Fit and calibrate a gate on validation, with cross-fitted scores for learned kinds."""

from __future__ import annotations

import logging

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold

from gates.base import Gate, check_cache_arrays, check_label_mode
from gates.calibrate import CALIBRATION_METHODS, Calibration, calibrate, calibrate_scores, check_max_drop
from gates.ltt import check_delta
from gates.registry import make_gate

logger = logging.getLogger(__name__)

CROSS_FIT_FOLDS = 5
# Rule kinds with nothing fitted, so their scores on validation rows are not optimistic.
PARAMETER_FREE_KINDS = ("entropy", "margin", "patience")


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


def _ltt_split(labels: np.ndarray, fit_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into a fit part and a calibration part, stratified by label where possible."""
    if not 0.0 < fit_fraction < 1.0:
        raise ValueError(f"ltt_fit_fraction {fit_fraction!r} must lie in (0, 1), e.g. 0.5")
    rng = np.random.default_rng(seed)
    fit_rows = []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        fit_rows.append(rows[: int(round(fit_fraction * len(rows)))])
    fit_mask = np.zeros(len(labels), dtype=bool)
    fit_mask[np.concatenate(fit_rows)] = True
    if fit_mask.all() or not fit_mask.any():
        raise ValueError(f"{len(labels)} validation examples are too few to split with ltt_fit_fraction={fit_fraction}")
    return np.flatnonzero(fit_mask), np.flatnonzero(~fit_mask)


def _train_gate_ltt(gate, cache, *, max_drop, label_mode, seed, delta, ltt_fit_fraction) -> Calibration:
    """Fit on one part of validation and certify the threshold with Learn-then-Test on the other part.

    A gate with fitted parameters must not see the calibration rows, otherwise its
    scores on them are optimistic and the certificate does not carry over to new data.
    So the returned gate is the one fitted on the fit part, not refitted on all rows.
    Gates without fitted parameters calibrate on all of validation.
    """
    common = dict(exits=cache.exits, num_layers=cache.num_layers)
    ltt = dict(max_drop=max_drop, method="ltt", delta=delta, **common)
    if gate.kind in PARAMETER_FREE_KINDS:
        gate.fit(cache.logits, cache.hidden, cache.labels, label_mode=label_mode, seed=seed, **common)
        return calibrate(gate, cache.logits, cache.hidden, cache.labels, **ltt)

    fit_rows, calibration_rows = _ltt_split(cache.labels, ltt_fit_fraction, seed)
    hidden = cache.hidden
    gate.fit(cache.logits[fit_rows], None if hidden is None else hidden[fit_rows], cache.labels[fit_rows],
             label_mode=label_mode, seed=seed, **common)
    logger.info("ltt: %s gate fitted on %d rows, threshold certified on %d held-out rows",
                gate.kind, len(fit_rows), len(calibration_rows))
    return calibrate(gate, cache.logits[calibration_rows], None if hidden is None else hidden[calibration_rows],
                     cache.labels[calibration_rows], **ltt)


def train_gate(kind, val_logits, val_hidden, val_labels, *, exits, num_layers, max_drop=0.01,
               label_mode="agreement", seed=0, method="empirical", delta=0.1, ltt_fit_fraction=0.5,
               **params) -> tuple[Gate, Calibration]:
    """Fit a gate and calibrate its threshold, both on validation only.

    method="empirical": rule kinds (maxprob, entropy, margin, patience) are
    fitted and calibrated on all of validation. Learned kinds (mlp, xgboost,
    logistic) are cross-fitted: validation is split into 5 folds stratified by
    label, each fold is scored by a gate fitted on the other four, and the
    threshold is chosen on those out-of-fold scores. Then the final gate is
    fitted on all of validation and given that threshold.

    method="ltt": Learn-then-Test certifies that the accuracy drop against
    full depth is at most max_drop with probability 1 - delta. Kinds with
    fitted parameters are fitted on `ltt_fit_fraction` of validation and
    certified on the rest.
    """
    check_label_mode(label_mode)
    check_max_drop(max_drop)
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method {method!r} is not supported. Expected one of {CALIBRATION_METHODS}")
    cache = check_cache_arrays(val_logits, val_hidden, val_labels, exits=exits, num_layers=num_layers)
    if cache.labels is None:
        raise ValueError("train_gate needs validation labels to calibrate the threshold, got None")
    gate = make_gate(kind, **params)
    common = dict(exits=cache.exits, num_layers=cache.num_layers)

    if method == "ltt":
        calibration = _train_gate_ltt(gate, cache, max_drop=max_drop, label_mode=label_mode, seed=seed,
                                      delta=check_delta(delta), ltt_fit_fraction=ltt_fit_fraction)
        return gate, calibration

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
