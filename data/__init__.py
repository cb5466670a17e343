"""Labelled text datasets: registry, loading, deterministic splits, verbalizers and prompts."""

from .cleaning import DedupReport, deduplicate_texts
from .errors import DataFileNotFoundError
from .loading import load_splits
from .prompts import format_prompt
from .registry import DATASETS, DatasetSpec
from .splits import SPLIT_NAMES, DatasetSplits, Split
from .verbalizers import default_verbalizers, parse_verbalizer_option

__all__ = [
    "DATASETS",
    "SPLIT_NAMES",
    "DataFileNotFoundError",
    "DatasetSpec",
    "DatasetSplits",
    "DedupReport",
    "Split",
    "deduplicate_texts",
    "default_verbalizers",
    "format_prompt",
    "load_splits",
    "parse_verbalizer_option",
]
