"""Tests for hub datasets, with `datasets.load_dataset` replaced by in-memory DatasetDicts."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

import data


def labelled(rows: int, names: list[str], prefix: str, text_fields=("text",), label_field="label", unlabelled=False):
    """Build a Dataset whose first text field names its split, row and label name."""
    labels = [-1 if unlabelled else i % len(names) for i in range(rows)]
    columns = {}
    for field in text_fields:
        columns[field] = [f"{prefix} {field} {i} {names[label]}" for i, label in enumerate(labels)]
    columns[label_field] = labels
    features = Features({**{f: Value("string") for f in text_fields}, label_field: ClassLabel(names=names)})
    return Dataset.from_dict(columns, features=features)


@pytest.fixture
def hub(monkeypatch):
    """Replace datasets.load_dataset; set `hub.data` to the DatasetDict it returns."""

    class FakeHub:
        data: DatasetDict | None = None
        calls: list[tuple] = []

        def load_dataset(self, path, name=None, **kwargs):
            self.calls.append((path, name))
            return self.data

    fake = FakeHub()
    monkeypatch.setattr(datasets, "load_dataset", fake.load_dataset)
    return fake


def split_row_ids(split: data.Split, prefix: str) -> set[int]:
    return {int(t.split()[2]) for t in split.texts if t.startswith(prefix)}


def assert_text_matches_label(dataset: data.DatasetSplits) -> None:
    for name in data.SPLIT_NAMES:
        split = dataset.split(name)
        for text, label in zip(split.texts, split.labels):
            assert text.split("\n")[0].endswith(" " + dataset.label_names[label])


def test_sst2_validation_becomes_test(hub):
    names = ["negative", "positive"]
    hub.data = DatasetDict(
        train=labelled(3000, names, "train", ("sentence",)),
        validation=labelled(872, names, "val", ("sentence",)),
        test=labelled(50, names, "test", ("sentence",), unlabelled=True),
    )

    dataset = data.load_splits("sst2")

    assert hub.calls == [("nyu-mll/glue", "sst2")]
    assert dataset.label_names == names
    assert dataset.sizes() == {"train": 2128, "validation": 872, "test": 872}
    assert split_row_ids(dataset.test, "val") == set(range(872))
    train_ids = split_row_ids(dataset.train, "train")
    validation_ids = split_row_ids(dataset.validation, "train")
    assert not train_ids & validation_ids
    assert train_ids | validation_ids == set(range(3000))
    assert np.bincount(dataset.validation.labels).tolist() == [436, 436]
    assert_text_matches_label(dataset)


def test_rotten_tomatoes_uses_given_splits(hub):
    names = ["neg", "pos"]
    hub.data = DatasetDict(
        train=labelled(80, names, "train"),
        validation=labelled(10, names, "val"),
        test=labelled(12, names, "test"),
    )

    dataset = data.load_splits("rotten_tomatoes")

    assert hub.calls == [("cornell-movie-review-data/rotten_tomatoes", None)]
    assert dataset.label_names == names
    assert dataset.sizes() == {"train": 80, "validation": 10, "test": 12}
    assert all(t.startswith("val ") for t in dataset.validation.texts)
    assert all(t.startswith("test ") for t in dataset.test.texts)
    assert_text_matches_label(dataset)


def test_imdb_carves_tenth_of_train(hub):
    names = ["neg", "pos"]
    hub.data = DatasetDict(train=labelled(200, names, "train"), test=labelled(40, names, "test"))

    dataset = data.load_splits("imdb")

    assert hub.calls == [("stanfordnlp/imdb", None)]
    assert dataset.sizes() == {"train": 180, "validation": 20, "test": 40}
    assert not set(dataset.train.texts) & set(dataset.validation.texts)
    assert_text_matches_label(dataset)


def test_hub_split_order_is_shuffled(hub):
    # IMDB's test split is sorted by label, so an unshuffled limit would see one class.
    sorted_test = Dataset.from_dict(
        {"text": [f"test text {i}" for i in range(40)], "label": [0] * 20 + [1] * 20},
        features=Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])}),
    )
    hub.data = DatasetDict(train=labelled(200, ["neg", "pos"], "train"), test=sorted_test)

    dataset = data.load_splits("imdb", limit=10)

    assert len(dataset.test) == 10
    assert set(dataset.test.labels.tolist()) == {0, 1}


def test_ag_news_four_classes(hub):
    names = ["World", "Sports", "Business", "Sci/Tech"]
    hub.data = DatasetDict(train=labelled(400, names, "train"), test=labelled(40, names, "test"))

    dataset = data.load_splits("ag_news")

    assert hub.calls == [("fancyzhx/ag_news", None)]
    assert dataset.label_names == names
    assert np.bincount(dataset.validation.labels).tolist() == [10, 10, 10, 10]
    assert_text_matches_label(dataset)
    verbalizers = data.default_verbalizers("ag_news", dataset.label_names)
    assert verbalizers["Sci/Tech"] == [" science"]


def test_amazon_polarity_labels_not_inverted(hub):
    features = Features(
        {
            "label": ClassLabel(names=["negative", "positive"]),
            "title": Value("string"),
            "content": Value("string"),
        }
    )
    rows = {
        "label": [0, 1] * 50,
        "title": ["Broke in a day", "Love it"] * 50,
        "content": ["Terrible product.", "Works great."] * 50,
    }
    rows["content"] = [f"{c} #{i}" for i, c in enumerate(rows["content"])]
    hub.data = DatasetDict(
        train=Dataset.from_dict(rows, features=features), test=Dataset.from_dict(rows, features=features)
    )

    dataset = data.load_splits("amazon_polarity")

    assert hub.calls == [("fancyzhx/amazon_polarity", None)]
    assert dataset.label_names == ["negative", "positive"]
    for name in data.SPLIT_NAMES:
        split = dataset.split(name)
        for text, label in zip(split.texts, split.labels):
            title, content = text.split("\n")
            expected = "negative" if title == "Broke in a day" else "positive"
            assert dataset.label_names[label] == expected
            assert content.startswith("Terrible" if expected == "negative" else "Works")


def test_dbpedia_joins_title_and_content(hub):
    names = data.DATASETS["dbpedia_14"].label_names
    fields = ("title", "content")
    hub.data = DatasetDict(
        train=labelled(280, list(names), "train", fields), test=labelled(28, list(names), "test", fields)
    )

    dataset = data.load_splits("dbpedia_14")

    assert dataset.label_names == list(names)
    assert len(dataset.label_names) == 14
    first = dataset.test.texts[0].split("\n")
    assert len(first) == 2
    assert first[0].startswith("test title ")
    assert first[1].startswith("test content ")
    assert_text_matches_label(dataset)


def test_yahoo_joins_three_fields_with_topic_label(hub):
    names = list(data.DATASETS["yahoo_answers_topics"].label_names)
    fields = ("question_title", "question_content", "best_answer")
    train = labelled(200, names, "train", fields, label_field="topic")
    test = labelled(20, names, "test", fields, label_field="topic")
    # An empty question body must not leave a blank line between title and answer.
    columns = test.to_dict()
    columns["question_content"][0] = ""
    test = Dataset.from_dict(columns, features=test.features)
    hub.data = DatasetDict(train=train, test=test)

    dataset = data.load_splits("yahoo_answers_topics")

    assert hub.calls == [("community-datasets/yahoo_answers_topics", None)]
    assert dataset.label_names == names
    parts = [t.split("\n") for t in dataset.test.texts]
    assert sorted(len(p) for p in parts) == [2] + [3] * 19
    assert_text_matches_label(dataset)


def test_class_label_names_win_over_registry(hub, caplog):
    hub.data = DatasetDict(
        train=labelled(100, ["bad", "good"], "train"), test=labelled(20, ["bad", "good"], "test")
    )

    dataset = data.load_splits("imdb")

    assert dataset.label_names == ["bad", "good"]
    assert "differ from the registry" in caplog.text


def test_generic_hub_name_with_columns(hub):
    features = Features({"review": Value("string"), "stars": Value("string")})
    rows = {"review": [f"review {i}" for i in range(100)], "stars": ["low", "high"] * 50}
    hub.data = DatasetDict(train=Dataset.from_dict(rows, features=features))

    dataset = data.load_splits("hf:someone/reviews:en", text_column="review", label_column="stars")

    assert hub.calls == [("someone/reviews", "en")]
    assert dataset.name == "hf:someone/reviews:en"
    assert dataset.label_names == ["high", "low"]
    assert dataset.sizes() == {"train": 80, "validation": 10, "test": 10}
    for name in data.SPLIT_NAMES:
        split = dataset.split(name)
        for text, label in zip(split.texts, split.labels):
            row = int(text.split()[1])
            assert dataset.label_names[label] == ("low" if row % 2 == 0 else "high")


def test_hub_limit_caps_each_split(hub):
    names = ["neg", "pos"]
    hub.data = DatasetDict(
        train=labelled(80, names, "train"), validation=labelled(10, names, "val"), test=labelled(12, names, "test")
    )
    full = data.load_splits("rotten_tomatoes", seed=1)

    limited = data.load_splits("rotten_tomatoes", seed=1, limit=5)

    assert limited.sizes() == {"train": 5, "validation": 5, "test": 5}
    for name in data.SPLIT_NAMES:
        assert limited.split(name).texts == full.split(name).texts[:5]


def test_hub_missing_column(hub):
    hub.data = DatasetDict(train=labelled(20, ["a", "b"], "train"), test=labelled(20, ["a", "b"], "test"))
    with pytest.raises(ValueError, match=r"column 'sentence' not found.*\[text, label\]"):
        data.load_splits("hf:someone/x", text_column="sentence")


def test_hub_unlabelled_rows_rejected(hub):
    train = labelled(20, ["a", "b"], "train")
    columns = train.to_dict()
    columns["label"][3] = -1
    train = Dataset.from_dict(columns, features=train.features)
    hub.data = DatasetDict(train=train, test=labelled(20, ["a", "b"], "test"))
    with pytest.raises(ValueError, match=r"split 'train': 1 rows have no label \(first rows \[3\]\)"):
        data.load_splits("hf:someone/x")
