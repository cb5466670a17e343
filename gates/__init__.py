"""Exit gates trained from cached exit logits and hidden states alone.

Inputs are numpy arrays from the feature cache: logits (N, E, K), hidden
(N, E, D) or None, labels (N,), exits (1-based layer numbers) and L.
"""

from gates.base import GATE_KINDS, LABEL_MODES, Gate, select_rows
from gates.calibrate import Calibration, calibrate, calibrate_scores, exits_from_scores
from gates.featurize import GateFeaturizer
from gates.labels import gate_labels, oracle_exits
from gates.registry import load_gate, make_gate
from gates.train import train_gate

__all__ = [
    "GATE_KINDS",
    "LABEL_MODES",
    "Calibration",
    "Gate",
    "GateFeaturizer",
    "calibrate",
    "calibrate_scores",
    "exits_from_scores",
    "gate_labels",
    "load_gate",
    "make_gate",
    "oracle_exits",
    "select_rows",
    "train_gate",
]
