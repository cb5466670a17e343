"""Learn-then-Test: a threshold whose accuracy drop is certified with probability 1 - delta.

Each candidate threshold t defines a null hypothesis H_t: "the risk R(t) is
above max_drop", where R(t) is the expected per-example loss of exiting at
threshold t instead of running to full depth. Fixed-sequence testing walks
the candidates from conservative (infinity, nothing exits early) to
aggressive and rejects H_t while its p-value is at most delta. It stops at the
first threshold it cannot reject. The family-wise error rate of all
rejections is at most delta, so with probability at least 1 - delta the most
aggressive rejected threshold has R(t) <= max_drop (Angelopoulos, Bates,
Candes, Jordan and Lei, "Learn then Test", 2021, fixed-sequence procedure).

The guarantee holds for calibration data exchangeable with the data the gate
is later applied to, and only when the scores were not fitted on the calibration rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binom

# Per-example losses whose mean R(t) bounds the accuracy drop against full depth from above.
LTT_RISKS = ("lost_correct", "disagreement")


@dataclass(frozen=True)
class FixedSequenceResult:
    """Index of the chosen candidate and the p-values (C,) of the candidates that were tested."""

    index: int
    p_values: np.ndarray
    tested: np.ndarray  # (C,) bool, True where the procedure computed a p-value


def check_delta(delta: float) -> float:
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta {delta!r} must lie in (0, 1), e.g. 0.1 for a guarantee that holds with 90% probability")
    return float(delta)


def check_risk(risk: str) -> str:
    if risk not in LTT_RISKS:
        raise ValueError(f"ltt risk {risk!r} is not supported. Expected one of {LTT_RISKS}")
    return risk


def exit_losses(predictions: np.ndarray, labels: np.ndarray, risk: str) -> np.ndarray:
    """0/1 loss (N, E) of stopping at each exit instead of the last one.

    "lost_correct": full depth is right and the exit is wrong. The accuracy drop
    equals this loss's mean minus the share of examples that the exit gets right
    and full depth gets wrong, so the mean bounds the drop from above.
    "disagreement": the exit's argmax differs from the last exit's, a looser
    bound that needs no gold labels.
    """
    check_risk(risk)
    final = predictions[:, -1:]  # (N, 1)
    if risk == "disagreement":
        return predictions != final
    full_correct = final == labels[:, None]
    return full_correct & (predictions != labels[:, None])


def binomial_p_value(loss_count: np.ndarray, num_examples: int, max_risk: float) -> np.ndarray:
    """p-value of H: R > max_risk after observing loss_count losses of 0/1 type in num_examples draws.

    Under H the count is Binomial(n, R) with R > max_risk, and P(count <= k) is
    largest at R = max_risk, so binom.cdf(k, n, max_risk) is a valid p-value.
    This is the binomial part of the Hoeffding-Bentkus bound, which is exact,
    so tighter than Hoeffding-Bentkus, when the loss only takes the values 0 and 1.
    """
    if max_risk <= 0.0:
        # With max_risk = 0 no finite sample can reject H: R > 0, so every p-value is 1.
        return np.ones(np.shape(loss_count))
    return binom.cdf(np.asarray(loss_count), num_examples, max_risk)


def fixed_sequence_test(p_values_in_order: np.ndarray, delta: float) -> FixedSequenceResult:
    """Reject hypotheses in the given order while p <= delta; return the last rejected index.

    Index 0 must be a hypothesis known to be false, such as threshold infinity
    (every example runs to full depth, so the loss is zero), so that the result
    is always a certified candidate.
    """
    p_values = np.asarray(p_values_in_order, dtype=np.float64)
    failed = np.flatnonzero(p_values > delta)
    stop = int(failed[0]) if len(failed) else len(p_values)
    tested = np.zeros(len(p_values), dtype=bool)
    tested[: min(stop + 1, len(p_values))] = True
    return FixedSequenceResult(index=max(stop - 1, 0), p_values=p_values, tested=tested)
