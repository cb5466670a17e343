"""Shared fixtures: tiny random GPT-2 and Llama models saved as local directories."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

import pytest

WORDS = (
    "good bad great awful fine movie film plot actor scene boring brilliant dull "
    "fresh rotten funny sad slow fast loved hated story music ending long short"
).split()

# Distinct sizes, so a transposed shape fails loudly: D=48, heads=4, L=5 (GPT-2), L=4 (Llama).
TINY_GPT2 = dict(n_embd=48, n_layer=5, n_head=4, n_positions=128, n_inner=80)
TINY_LLAMA = dict(hidden_size=40, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, intermediate_size=72, max_position_embeddings=128)


def sentiment_corpus(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """Short synthetic reviews whose label follows the count of positive words."""
    rng = random.Random(seed)
    positive = {"good", "great", "fine", "brilliant", "fresh", "funny", "loved"}
    texts, labels = [], []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 14))]
        score = sum(w in positive for w in words) - sum(w in {"bad", "awful", "boring", "dull", "rotten", "hated"} for w in words)
        texts.append(" ".join(words))
        labels.append(int(score >= 0))
    return texts, labels


def build_tokenizer(directory: Path, eos: str):
    """Train a real byte-level BPE tokenizer on the synthetic words and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts, _ = sentiment_corpus(300, seed=1)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[eos], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts + [" " + w for w in WORDS], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=eos, bos_token=eos, unk_token=eos)
    fast.save_pretrained(directory)
    return fast


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    directory = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = build_tokenizer(directory, "<|endoftext|>")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, **TINY_GPT2)
    GPT2LMHeadModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = build_tokenizer(directory, "</s>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, **TINY_LLAMA)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


@pytest.fixture(params=["gpt2", "llama"])
def tiny_model_dir(request, tiny_gpt2_dir, tiny_llama_dir) -> Path:
    return tiny_gpt2_dir if request.param == "gpt2" else tiny_llama_dir


def invoke(*args, input=None):
    """Run the CLI in-process with string arguments; exceptions other than usage errors propagate."""
    from click.testing import CliRunner

    from cli import main

    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


@pytest.fixture(scope="session")
def csv_dataset(tmp_path_factory):
    texts, labels = sentiment_corpus(360, seed=3)
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    pd.DataFrame({"review": texts, "sentiment": ["pos" if y else "neg" for y in labels]}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_gpt2_dir, csv_dataset):
    run = tmp_path_factory.mktemp("run")
    common = ["--run-dir", run]
    result = invoke(
        "finetune", *common, "--model", tiny_gpt2_dir, "--dataset", csv_dataset, "--text-column", "review",
        "--label-column", "sentiment", "--exits", "1,3,5", "--epochs", "5",
    )
    assert result.exit_code == 0, result.output
    result = invoke("extract", *common, "--chunk-size", "16", "--batch-size", "8")
    assert result.exit_code == 0, result.output
    result = invoke("train-gates", *common, "--kind", "all")
    assert result.exit_code == 0, result.output
    return run


