"""Labelled datasets from the Hugging Face hub through `datasets.load_dataset`.

Splits are chosen on label arrays and row positions first. Texts are fetched
only for the rows that each split keeps after `limit`, so a large dataset with
a small limit does not build millions of Python strings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from .cleaning import handle_empty_texts, label_key, normalize_text, sorted_label_names
from .registry import DEFAULT_VALIDATION_FRACTION, DatasetSpec
from .splits import Split, carve_indices, permuted

logger = logging.getLogger(__name__)

HUB_PREFIX = "hf:"
FIELD_SEPARATOR = "\n"  # joins the text fields of one row, e.g. title and content


@dataclass(frozen=True)
class HubData:
    """Label names and the finished splits of a hub dataset."""

    label_names: list[str]
    splits: dict[str, Split]


@dataclass(frozen=True)
class _Part:
    """Rows of one hub split that make up one of our splits."""

    hub_split: str
    positions: np.ndarray  # (N,) row positions in the hub split


def parse_hub_name(name: str, text_column: str | None, label_column: str | None) -> DatasetSpec:
    """Build a spec for "hf:<hub id>[:<config>]" whose splits are chosen after loading."""
    hub_id, _, config = name[len(HUB_PREFIX) :].partition(":")
    if not hub_id:
        raise ValueError(f"dataset {name!r} has no hub id; write hf:<owner>/<name>[:<config>]")
    return DatasetSpec(
        name=name,
        source="hub",
        hub_id=hub_id,
        hub_config=config or None,
        text_fields=(text_column or "text",),
        label_field=label_column or "label",
        label_names=(),
        test_split="test",
        validation_split="validation",
    )


def load_hub(
    spec: DatasetSpec,
    *,
    seed: int,
    limit: int | None,
    empty: str,
    text_column: str | None = None,
    label_column: str | None = None,
) -> HubData:
    """Load a hub dataset and return its train, validation and test splits.

    `text_column` and `label_column` replace the spec's fields when given.
    """
    import datasets  # imported here because it takes a second and most runs do not need it

    if text_column is not None:
        spec = replace(spec, text_fields=(text_column,))
    if label_column is not None:
        spec = replace(spec, label_field=label_column)

    logger.info("loading %s (config %s) with datasets.load_dataset", spec.hub_id, spec.hub_config)
    dataset_dict = datasets.load_dataset(spec.hub_id, spec.hub_config)
    _check_columns(dataset_dict, spec)

    label_names = _label_names(dataset_dict, spec, datasets.ClassLabel)
    codes = {
        name: _label_codes(dataset_dict[name], spec, label_names, datasets.ClassLabel)
        for name in dataset_dict
    }
    parts = _choose_parts(codes, spec, seed)

    splits = {}
    for split_name, part in parts.items():
        # NOTE: empty texts are dropped after `limit` is applied, so a split of a
        # hub dataset with empty texts can end up shorter than `limit`.
        positions = permuted(part.positions, seed)[:limit]
        source = f"{spec.hub_id} split {part.hub_split!r}"
        texts, kept = _fetch_texts(dataset_dict[part.hub_split], positions, spec, empty, source)
        splits[split_name] = Split(texts, codes[part.hub_split][kept])
    return HubData(label_names, splits)


def _check_columns(dataset_dict, spec: DatasetSpec) -> None:
    if "train" not in dataset_dict:
        raise ValueError(
            f"{spec.hub_id}: no train split (found {', '.join(dataset_dict)}); "
            "use a dataset with a train split"
        )
    for split_name, dataset in dataset_dict.items():
        for column in (*spec.text_fields, spec.label_field):
            if column not in dataset.column_names:
                raise ValueError(
                    f"{spec.hub_id} split {split_name!r}: column {column!r} not found; "
                    f"the columns are [{', '.join(dataset.column_names)}]; "
                    "choose them with --text-column and --label-column"
                )


def _label_names(dataset_dict, spec: DatasetSpec, class_label_type) -> list[str]:
    """Return the ClassLabel names of the label column, else the sorted train labels."""
    feature = dataset_dict["train"].features[spec.label_field]
    if isinstance(feature, class_label_type):
        names = [str(n) for n in feature.names]
        if spec.label_names and tuple(names) != spec.label_names:
            logger.warning(
                "%s: ClassLabel names %s differ from the registry's %s; using the dataset's names",
                spec.hub_id,
                names,
                list(spec.label_names),
            )
        return names

    names = sorted_label_names(label_key(v) for v in dataset_dict["train"][spec.label_field])
    if len(names) < 2:
        raise ValueError(
            f"{spec.hub_id}: train column {spec.label_field!r} has labels {names}; "
            "a classifier needs at least two classes, so choose another --label-column"
        )
    return names


def _label_codes(
    dataset, spec: DatasetSpec, label_names: list[str], class_label_type
) -> np.ndarray:
    """Return the label indices `(N,)` int64 of one hub split.

    -1 marks a missing label (ClassLabel stores -1 for unlabelled rows) and -2 a
    label that train does not have.
    """
    values = dataset[spec.label_field]
    if isinstance(dataset.features[spec.label_field], class_label_type):
        return np.asarray(values, dtype=np.int64)

    index_of = {name: i for i, name in enumerate(label_names)}
    codes = [-1 if v is None else index_of.get(label_key(v), -2) for v in values]
    return np.array(codes, dtype=np.int64)


def _choose_parts(codes: dict[str, np.ndarray], spec: DatasetSpec, seed: int) -> dict[str, _Part]:
    """Pick the hub split and rows behind each of train, validation and test."""
    labelled = {name for name, c in codes.items() if len(c) and (c >= 0).any()}
    test_split = _first_labelled([spec.test_split, "validation"], labelled)
    validation_split = spec.validation_split if spec.validation_split in labelled else None
    if validation_split == test_split:
        validation_split = None

    train_codes = codes["train"]
    _check_codes(train_codes, "train", spec)
    train_rows = np.arange(len(train_codes))
    parts: dict[str, _Part] = {}

    if test_split is None:
        train_rows, test_rows = carve_indices(
            train_codes, DEFAULT_VALIDATION_FRACTION, seed, f"{spec.name} test"
        )
        parts["test"] = _Part("train", test_rows)
        logger.info(
            "%s: no labelled test split, carved %d test rows from train", spec.name, len(test_rows)
        )
    else:
        _check_codes(codes[test_split], test_split, spec)
        parts["test"] = _Part(test_split, np.arange(len(codes[test_split])))
        if test_split != "test":
            logger.info("%s: using the labelled %r split as test", spec.name, test_split)

    if validation_split is None:
        size = _validation_size(spec.validation_size, len(codes["train"]))
        kept, carved = carve_indices(train_codes[train_rows], size, seed, f"{spec.name} validation")
        parts["validation"] = _Part("train", train_rows[carved])
        train_rows = train_rows[kept]
        logger.info("%s: carved %d validation rows from train", spec.name, len(carved))
    else:
        _check_codes(codes[validation_split], validation_split, spec)
        parts["validation"] = _Part(validation_split, np.arange(len(codes[validation_split])))

    parts["train"] = _Part("train", train_rows)
    return {name: parts[name] for name in ("train", "validation", "test")}


def _first_labelled(candidates: list[str | None], labelled: set[str]) -> str | None:
    for name in candidates:
        if name is not None and name in labelled and name != "train":
            return name
    return None


def _validation_size(size: int | float, train_rows: int) -> int | float:
    # A fraction is a share of the whole train split even after a test split was carved from it.
    return size if isinstance(size, int) else max(1, round(size * train_rows))


def _check_codes(codes: np.ndarray, hub_split: str, spec: DatasetSpec) -> None:
    missing = np.flatnonzero(codes == -1)
    unknown = np.flatnonzero(codes == -2)
    if len(missing):
        raise ValueError(
            f"{spec.hub_id} split {hub_split!r}: {len(missing)} rows have no label "
            f"(first rows {missing[:5].tolist()}); choose a labelled split or dataset"
        )
    if len(unknown):
        raise ValueError(
            f"{spec.hub_id} split {hub_split!r}: {len(unknown)} labels do not occur in train "
            f"(first rows {unknown[:5].tolist()}); choose another --label-column"
        )


def _fetch_texts(
    dataset, positions: np.ndarray, spec: DatasetSpec, empty: str, source: str
) -> tuple[list[str], np.ndarray]:
    """Return the joined texts at `positions` and the positions kept after the empty rule."""
    rows = dataset.select(positions)
    fields = [list(rows[field]) for field in spec.text_fields]
    texts = []
    for values in zip(*fields):
        parts = [normalize_text(value, source) for value in values]
        texts.append(FIELD_SEPARATOR.join(part for part in parts if part))

    frame = pd.DataFrame({"text": texts}, index=pd.Index(positions))
    frame = handle_empty_texts(frame, empty, source)
    return frame["text"].tolist(), frame.index.to_numpy(np.int64)
