"""PNG plots of the run report, each written to a temporary name and renamed into place."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

RELIABILITY_BINS = 10


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> None:
    plt = _pyplot()
    tmp = path.with_name(path.stem + ".tmp.png")
    figure.tight_layout()
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    os.replace(tmp, path)


def plot_per_exit_accuracy(path: Path, exits: list[int], validation: list[float], test: list[float] | None) -> None:
    """Accuracy of each exit head against its layer, on validation and (when simulated) test."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 3.8))
    axes.plot(exits, validation, marker="o", label="validation")
    if test is not None:
        axes.plot(exits, test, marker="s", label="test")
    axes.set_xlabel("exit layer")
    axes.set_ylabel("head accuracy")
    axes.set_title("Accuracy of each exit head")
    axes.grid(alpha=0.3)
    axes.legend()
    _save(figure, path)


def plot_exit_histograms(path: Path, histograms: dict[str, dict], exits: list[int]) -> None:
    """Draw one bar chart per policy of the examples that exit at each exit layer."""
    plt = _pyplot()
    names = list(histograms) or ["(no policies)"]
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.6 * rows), squeeze=False, sharex=True)
    for index, name in enumerate(names):
        axis = axes[index // columns][index % columns]
        # JSON object keys are strings, so layer numbers come back as "3", "6", ...
        counts = {int(layer): int(count) for layer, count in histograms.get(name, {}).items()}
        layers = exits or sorted(counts)
        axis.bar([str(layer) for layer in layers], [counts.get(layer, 0) for layer in layers])
        axis.set_title(name, fontsize=9)
        axis.tick_params(labelsize=7)
    for index in range(len(names), rows * columns):
        axes[index // columns][index % columns].axis("off")
    figure.supxlabel("exit layer")
    figure.supylabel("examples")
    _save(figure, path)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = RELIABILITY_BINS):
    """Mean confidence, accuracy and count per equal-width bin over [0, 1], and the expected calibration error."""
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)  # (N,) bin of each example
    counts = np.bincount(index, minlength=bins)
    safe = np.maximum(counts, 1)
    mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / safe
    accuracy = np.bincount(index, weights=correct.astype(np.float64), minlength=bins) / safe
    error = float((counts * np.abs(accuracy - mean_confidence)).sum() / max(len(confidence), 1))
    return mean_confidence, accuracy, counts, error


def plot_reliability(path: Path, logits: np.ndarray, labels: np.ndarray, exits: list[int]) -> list[float]:
    """Reliability diagram of each exit's max softmax probability; return the expected calibration error per exit."""
    plt = _pyplot()
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)  # (N, E, K)
    confidence = probs.max(axis=-1)  # (N, E)
    correct = probs.argmax(axis=-1) == labels[:, None]  # (N, E)

    figure, axes = plt.subplots(figsize=(5.5, 5))
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    colours = plt.cm.viridis(np.linspace(0, 1, len(exits)))
    errors = []
    for e, layer in enumerate(exits):
        mean_confidence, accuracy, counts, error = reliability_bins(confidence[:, e], correct[:, e])
        errors.append(error)
        filled = counts > 0
        axes.plot(mean_confidence[filled], accuracy[filled], marker="o", markersize=3, color=colours[e],
                  label=f"layer {layer} (ECE {error:.3f})")
    axes.set_xlabel("max softmax probability (bin mean)")
    axes.set_ylabel("accuracy in bin")
    axes.set_title("Reliability of each exit on the test split")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=6, loc="upper left")
    _save(figure, path)
    return errors
