"""Cleaning of labelled text frames: texts, empty rows, labels and duplicate texts.

Every function here takes a pandas DataFrame with a `text` and a `label` column
whose index is the 0-based data row number in the source, so that error
messages can point at the rows to fix.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

EMPTY_CHOICES = ("skip", "error")
_MAX_ROWS_SHOWN = 5
_INTEGER_KEY = re.compile(r"-?\d+")


@dataclass(frozen=True)
class DedupReport:
    """Row counts before and after dropping exact duplicate texts."""

    rows_in: int
    duplicate_rows_dropped: int
    conflicting_texts: int
    conflicting_rows_dropped: int
    rows_out: int


def check_empty_choice(empty: str) -> None:
    """Raise ValueError unless `empty` is one of EMPTY_CHOICES."""
    if empty not in EMPTY_CHOICES:
        raise ValueError(
            f"empty={empty!r} is not supported; expected one of {', '.join(EMPTY_CHOICES)}"
        )


def describe_rows(row_numbers: Iterable[int]) -> str:
    """Format 0-based data row numbers as a short 1-based list for messages."""
    rows = [int(r) + 1 for r in row_numbers]
    shown = ", ".join(str(r) for r in rows[:_MAX_ROWS_SHOWN])
    more = f" and {len(rows) - _MAX_ROWS_SHOWN} more" if len(rows) > _MAX_ROWS_SHOWN else ""
    return f"data rows {shown}{more} (counting from 1, header not counted)"


def normalize_text(value: object, source: str) -> str:
    """Return `value` as a stripped string, with "" for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(
                f"{source}: a text is not valid UTF-8 ({error}); re-encode the file as UTF-8"
            ) from error
    return str(value).strip()


def normalize_texts(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Return a copy of `frame` whose `text` column contains stripped strings."""
    frame = frame.copy()
    frame["text"] = [normalize_text(v, source) for v in frame["text"]]
    return frame


def handle_empty_texts(frame: pd.DataFrame, empty: str, source: str) -> pd.DataFrame:
    """Drop rows with an empty text (`empty="skip"`) or raise naming them (`empty="error"`)."""
    check_empty_choice(empty)
    is_empty = frame["text"].str.len() == 0
    if not is_empty.any():
        return frame

    rows = frame.index[is_empty]
    if empty == "error":
        raise ValueError(
            f"{source}: {len(rows)} empty or whitespace-only texts at {describe_rows(rows)}; "
            "fill or remove them, or pass empty='skip' to drop them"
        )
    logger.info("%s: dropped %d empty or whitespace-only texts", source, len(rows))
    return frame[~is_empty]


def check_labels_present(frame: pd.DataFrame, source: str) -> None:
    """Raise ValueError naming the rows whose label is missing (None or NaN)."""
    missing = frame["label"].isna()
    if missing.any():
        rows = frame.index[missing]
        raise ValueError(
            f"{source}: {len(rows)} missing labels at {describe_rows(rows)}; "
            "give every row a label or remove those rows"
        )


def label_key(value: object) -> str:
    """Return the string form of one label value, without ".0" on integral numbers."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def sorted_label_names(keys: Iterable[str]) -> list[str]:
    """Sort unique label keys, numerically when every key is an integer."""
    unique = set(keys)
    if unique and all(_INTEGER_KEY.fullmatch(k) for k in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def label_names_from(frame: pd.DataFrame, source: str) -> list[str]:
    """Return the sorted label names of `frame`, raising ValueError on fewer than two classes."""
    names = sorted_label_names(label_key(v) for v in frame["label"])
    if not names:
        raise ValueError(f"{source}: no labelled rows; add rows with a text and a label")
    if len(names) < 2:
        raise ValueError(
            f"{source}: every one of the {len(frame)} rows has the label {names[0]!r}; "
            "a classifier needs at least two classes, so add examples of the other classes"
        )
    return names


def encode_labels(frame: pd.DataFrame, label_names: list[str], source: str) -> np.ndarray:
    """Map the `label` column to indices into `label_names`, `(N,)` int64.

    Raises ValueError naming a label that is not in `label_names`, for example
    a test label that never occurs in train.
    """
    index_of = {name: i for i, name in enumerate(label_names)}
    keys = [label_key(v) for v in frame["label"]]
    unknown = [(row, key) for row, key in zip(frame.index, keys) if key not in index_of]
    if unknown:
        row, key = unknown[0]
        raise ValueError(
            f"{source}: label {key!r} at {describe_rows([row])} does not occur in the "
            f"training labels {label_names} ({len(unknown)} rows affected); "
            "fix the label or add training examples of it"
        )
    return np.array([index_of[k] for k in keys], dtype=np.int64)  # (N,)


def deduplicate_texts(frame: pd.DataFrame) -> tuple[pd.DataFrame, DedupReport]:
    """Drop exact duplicate texts, keeping the first row of each text.

    A text that occurs with more than one label is dropped entirely, because
    no single label for it can be trusted.
    """
    label_count = frame.groupby("text", sort=False)["label"].transform("nunique")
    conflicting = label_count > 1
    consistent = frame[~conflicting]
    deduplicated = consistent[~consistent["text"].duplicated(keep="first")]

    report = DedupReport(
        rows_in=len(frame),
        duplicate_rows_dropped=len(consistent) - len(deduplicated),
        conflicting_texts=int(frame.loc[conflicting, "text"].nunique()),
        conflicting_rows_dropped=int(conflicting.sum()),
        rows_out=len(deduplicated),
    )
    return deduplicated, report


def count_repeated_texts(texts: Iterable[str]) -> int:
    """Return how many texts repeat an earlier text exactly."""
    seen: set[str] = set()
    repeats = 0
    for text in texts:
        if text in seen:
            repeats += 1
        seen.add(text)
    return repeats
