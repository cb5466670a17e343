"""Gate kinds by name: construct and load."""

from __future__ import annotations

import os

from gates import io
from gates.base import GATE_KINDS, Gate
from gates.logistic import LogisticGate
from gates.mlp import MLPGate
from gates.rules import EntropyGate, MarginGate, MaxProbGate, PatienceGate
from gates.xgb import XGBoostGate

GATE_CLASSES: dict[str, type[Gate]] = {
    cls.kind: cls
    for cls in (MLPGate, XGBoostGate, LogisticGate, MaxProbGate, EntropyGate, MarginGate, PatienceGate)
}
assert tuple(GATE_CLASSES) == GATE_KINDS


def make_gate(kind: str, **params) -> Gate:
    """Construct an unfitted gate of `kind` with its parameters."""
    if kind not in GATE_CLASSES:
        raise ValueError(f"gate kind {kind!r} is not supported. Expected one of {GATE_KINDS}")
    try:
        return GATE_CLASSES[kind](**params)
    except TypeError as error:
        raise ValueError(f"invalid parameters {sorted(params)} for the {kind} gate: {error}") from error


def load_gate(path: str | os.PathLike) -> Gate:
    """Load a gate saved with `Gate.save` from `<dir>/<name>.json`."""
    directory, name = io.split_gate_path(path)
    payload = io.read_json(directory / f"{name}.json")
    found_format = payload.get("format")
    if found_format != io.GATE_FORMAT:
        raise ValueError(f"{str(path)!r} is not a gate file: expected format {io.GATE_FORMAT!r}, found {found_format!r}")
    found_version = payload.get("format_version")
    if found_version != io.GATE_FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} has gate format version {found_version!r}, expected {io.GATE_FORMAT_VERSION}. "
            "Train the gate again with this version"
        )
    kind = payload.get("kind")
    if kind not in GATE_CLASSES:
        raise ValueError(f"{str(path)!r} has gate kind {kind!r}, expected one of {GATE_KINDS}")
    gate = make_gate(kind, **payload.get("params", {}))
    return gate.restore_from_payload(payload, directory, name)
