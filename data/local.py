"""Labelled datasets from local files: one table, or a directory of split tables."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .cleaning import (
    check_labels_present,
    count_repeated_texts,
    encode_labels,
    handle_empty_texts,
    label_names_from,
    normalize_texts,
)
from .errors import DataFileNotFoundError
from .registry import DEFAULT_VALIDATION_FRACTION
from .splits import SPLIT_NAMES, Split, carve_indices, finish_split, stratified_three_way

logger = logging.getLogger(__name__)

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zip", ".xz", ".zst")
DEFAULT_TEXT_COLUMN = "text"
DEFAULT_LABEL_COLUMN = "label"


@dataclass(frozen=True)
class LocalData:
    """Label names and the finished splits of a local dataset."""

    label_names: list[str]
    splits: dict[str, Split]


def table_format(path: Path) -> str:
    """Return the table suffix of `path` (".csv", ...), looking through a compression suffix."""
    suffixes = [s.lower() for s in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] in COMPRESSION_SUFFIXES
    if compressed:
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""

    # pandas reads compressed text tables but not compressed Parquet files.
    if suffix not in TABLE_SUFFIXES or (compressed and suffix == ".parquet"):
        raise ValueError(
            f"{path}: file type {''.join(path.suffixes) or '(none)'} is not supported; "
            f"convert it to one of {', '.join(TABLE_SUFFIXES)}"
        )
    return suffix


def read_table(path: Path, text_column: str) -> pd.DataFrame:
    """Read a table with pandas; the text column is kept as written (no type inference)."""
    if not path.is_file():
        raise DataFileNotFoundError(f"{path}: file not found; check the path")
    suffix = table_format(path)
    try:
        if suffix in (".csv", ".tsv"):
            separator = "\t" if suffix == ".tsv" else ","
            return pd.read_csv(path, sep=separator, encoding="utf-8", dtype={text_column: str})
        if suffix in (".jsonl", ".json"):
            return pd.read_json(path, lines=suffix == ".jsonl", encoding="utf-8", dtype=False)
        return pd.read_parquet(path)
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not valid UTF-8 text ({error}); re-encode the file as UTF-8, "
            f"for example with `iconv -f latin1 -t utf-8`"
        ) from error
    except pd.errors.EmptyDataError as error:
        raise ValueError(f"{path}: the file is empty; add a header and labelled rows") from error
    except (pd.errors.ParserError, ValueError) as error:
        raise ValueError(
            f"{path}: cannot be read as {suffix[1:]} ({error}); fix the file format"
        ) from error


def labelled_frame(
    table: pd.DataFrame, path: Path, text_column: str, label_column: str
) -> pd.DataFrame:
    """Return the `text` and `label` columns of `table`, indexed by data row number."""
    missing = [c for c in (text_column, label_column) if c not in table.columns]
    if missing:
        found = ", ".join(str(c) for c in table.columns)
        raise ValueError(
            f"{path}: column {missing[0]!r} not found; the file has columns [{found}]; "
            "choose them with --text-column and --label-column"
        )
    return pd.DataFrame(
        {
            "text": table[text_column].to_numpy(object),
            "label": table[label_column].to_numpy(object),
        },
        index=pd.RangeIndex(len(table)),
    )


def read_labelled(path: Path, text_column: str, label_column: str, empty: str) -> pd.DataFrame:
    """Read one table and return its cleaned `text` and `label` columns."""
    frame = labelled_frame(read_table(path, text_column), path, text_column, label_column)
    frame = normalize_texts(frame, str(path))
    frame = handle_empty_texts(frame, empty, str(path))
    check_labels_present(frame, str(path))
    return frame


def find_split_files(directory: Path) -> dict[str, Path]:
    """Return the table file of each split present in `directory`, by split name."""
    found: dict[str, Path] = {}
    for name in SPLIT_NAMES:
        candidates = sorted(
            path
            for path in directory.iterdir()
            if path.is_file() and path.name.split(".")[0] == name and _is_table(path)
        )
        if len(candidates) > 1:
            raise ValueError(
                f"{directory}: several {name} files {[p.name for p in candidates]}; "
                "keep exactly one"
            )
        if candidates:
            found[name] = candidates[0]

    for required in ("train", "test"):
        if required not in found:
            raise DataFileNotFoundError(
                f"{directory}: no {required}.* file; a dataset directory needs train.* and test.* "
                f"(validation.* optional) with a suffix from {', '.join(TABLE_SUFFIXES)}"
            )
    return found


def _is_table(path: Path) -> bool:
    try:
        table_format(path)
    except ValueError:
        return False
    return True


def _split_from(frame: pd.DataFrame, label_names: list[str], source: str) -> Split:
    return Split(frame["text"].tolist(), encode_labels(frame, label_names, source))


def load_local_file(
    path: Path,
    *,
    text_column: str,
    label_column: str,
    seed: int,
    limit: int | None,
    empty: str,
) -> LocalData:
    """Load one labelled table and cut it into stratified 80/10/10 splits."""
    frame = read_labelled(path, text_column, label_column, empty)
    label_names = label_names_from(frame, str(path))
    whole = _split_from(frame, label_names, str(path))
    _warn_repeated_texts(whole.texts, str(path))

    positions = stratified_three_way(whole.labels, seed, str(path))
    splits = {name: finish_split(whole.take(rows), seed, limit) for name, rows in positions.items()}
    return LocalData(label_names, splits)


def load_local_directory(
    directory: Path,
    *,
    text_column: str,
    label_column: str,
    seed: int,
    limit: int | None,
    empty: str,
) -> LocalData:
    """Load train.*, test.* and optional validation.* tables from `directory`.

    Label names come from train; a validation or test label that train lacks
    raises ValueError. Without validation.*, validation is carved from train.
    """
    files = find_split_files(directory)
    frames = {
        name: read_labelled(path, text_column, label_column, empty) for name, path in files.items()
    }
    label_names = label_names_from(frames["train"], str(files["train"]))
    splits = {
        name: _split_from(frame, label_names, str(files[name])) for name, frame in frames.items()
    }

    if "validation" not in splits:
        train = splits["train"]
        kept, carved = carve_indices(
            train.labels, DEFAULT_VALIDATION_FRACTION, seed, f"{files['train']} validation"
        )
        splits["train"], splits["validation"] = train.take(kept), train.take(carved)
        logger.info(
            "%s: no validation file, carved %d validation rows from train", directory, len(carved)
        )

    _warn_repeated_texts([t for s in splits.values() for t in s.texts], str(directory))
    finished = {name: finish_split(splits[name], seed, limit) for name in SPLIT_NAMES}
    return LocalData(label_names, finished)


def _warn_repeated_texts(texts: list[str], source: str) -> None:
    repeats = count_repeated_texts(texts)
    if repeats:
        # NOTE: local data is not deduplicated, so a repeated text may sit in two splits.
        logger.warning(
            "%s: %d texts repeat an earlier text exactly and may appear in more than one split",
            source,
            repeats,
        )

