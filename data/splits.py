"""Labelled splits, their fingerprint, and deterministic stratified splitting."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "validation", "test")


@dataclass(frozen=True, eq=False)
class Split:
    """Texts with integer labels. `labels` is `(N,)` int64 and read-only."""

    texts: list[str]
    labels: np.ndarray

    def __post_init__(self) -> None:
        labels = np.array(self.labels, dtype=np.int64).reshape(-1)  # (N,)
        labels.setflags(write=False)
        object.__setattr__(self, "texts", list(self.texts))
        object.__setattr__(self, "labels", labels)
        if len(self.texts) != len(labels):
            raise ValueError(
                f"Split has {len(self.texts)} texts but {len(labels)} labels; "
                "pass one label per text"
            )

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, indices: np.ndarray) -> Split:
        """Return the examples at `indices`, in that order."""
        return Split([self.texts[i] for i in indices], self.labels[indices])

    def head(self, limit: int | None) -> Split:
        """Return the first `limit` examples, or the whole split when `limit` is None."""
        if limit is None or limit >= len(self):
            return self
        return Split(self.texts[:limit], self.labels[:limit])


@dataclass(frozen=True, eq=False)
class DatasetSplits:
    """A labelled dataset cut into train, validation and test splits."""

    name: str
    label_names: list[str]
    train: Split
    validation: Split
    test: Split

    def __post_init__(self) -> None:
        object.__setattr__(self, "label_names", [str(n) for n in self.label_names])
        num_classes = len(self.label_names)
        for split_name in SPLIT_NAMES:
            labels = self.split(split_name).labels
            bad = (labels < 0) | (labels >= num_classes)
            if bad.any():
                raise ValueError(
                    f"{self.name}: split {split_name!r} has label {labels[bad][0]} outside "
                    f"range({num_classes}) for label names {self.label_names}"
                )

    def split(self, name: str) -> Split:
        """Return the split called `name` ("train", "validation" or "test")."""
        if name not in SPLIT_NAMES:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLIT_NAMES)}")
        return getattr(self, name)

    def fingerprint(self) -> str:
        """Return the SHA-256 hex digest of the label names, texts and labels of every split."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.label_names).encode("utf-8"))
        for split_name in SPLIT_NAMES:
            split = self.split(split_name)
            digest.update(f"\x00{split_name}\x00{len(split)}\x00".encode("utf-8"))

            # Length-prefix every text so that no two different lists hash alike.
            for text in split.texts:
                encoded = text.encode("utf-8")
                digest.update(len(encoded).to_bytes(8, "little"))
                digest.update(encoded)
            digest.update(split.labels.astype("<i8").tobytes())
        return digest.hexdigest()

    def sizes(self) -> dict[str, int]:
        """Return the number of examples in each split, by split name."""
        return {name: len(self.split(name)) for name in SPLIT_NAMES}


def permuted(positions: np.ndarray, seed: int) -> np.ndarray:
    """Return `positions` in a random order that depends only on `seed` and their count."""
    return np.asarray(positions)[np.random.default_rng(seed).permutation(len(positions))]


def shuffled(split: Split, seed: int) -> Split:
    """Return `split` in a random order that depends only on `seed` and the split size."""
    return split.take(permuted(np.arange(len(split)), seed))


def carve_indices(
    labels: np.ndarray, size: int | float, seed: int, description: str
) -> tuple[np.ndarray, np.ndarray]:
    """Split positions `0..N-1` into (kept, carved), stratified by `labels`.

    `size` is a row count (int) or a fraction of N (float) for the carved part.
    `description` names the data in error messages, for example "rt-critics validation".
    """
    positions = np.arange(len(labels))
    try:
        kept, carved = train_test_split(
            positions, test_size=size, random_state=seed, shuffle=True, stratify=labels
        )
    except ValueError as error:
        counts = dict(zip(*np.unique(labels, return_counts=True)))
        raise ValueError(
            f"cannot carve a stratified {description} split of size {size} from {len(labels)} "
            f"examples with class counts {_plain_counts(counts)}: {error}. "
            "Add examples to the rare classes or drop them"
        ) from error
    return np.sort(kept), np.sort(carved)


def stratified_three_way(labels: np.ndarray, seed: int, description: str) -> dict[str, np.ndarray]:
    """Return train/validation/test positions for an 80/10/10 split stratified by `labels`."""
    train, held_out = carve_indices(labels, 0.2, seed, f"{description} held-out")
    validation_local, test_local = carve_indices(labels[held_out], 0.5, seed, f"{description} test")
    return {
        "train": train,
        "validation": held_out[validation_local],
        "test": held_out[test_local],
    }


def _plain_counts(counts: dict) -> dict[int, int]:
    return {int(label): int(count) for label, count in counts.items()}


def finish_split(split: Split, seed: int, limit: int | None) -> Split:
    """Shuffle `split` with `seed` and keep its first `limit` examples."""
    return shuffled(split, seed).head(limit)


def label_counts(split: Split, label_names: list[str]) -> dict[str, int]:
    """Return the number of examples of each label in `split`, by label name."""
    counts = np.bincount(split.labels, minlength=len(label_names))  # (K,)
    return {name: int(count) for name, count in zip(label_names, counts)}
