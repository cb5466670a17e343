import numpy as np
import pytest
import torch

from backbone.heads import ExitHeads, exits_every, validate_exits
from backbone.loading import load_backbone
from backbone.logit_lens import logit_lens_heads
from backbone.runner import LayerRunner, encode
from tests.conftest import TINY_GPT2, TINY_LLAMA, sentiment_corpus

TEXTS = ["good movie", "a long and boring film with a dull plot and bad actors", "great", "loved the music but hated the ending"]


def test_fixtures_are_tiny(tiny_gpt2_dir, tiny_llama_dir):
    for directory, layers in ((tiny_gpt2_dir, TINY_GPT2["n_layer"]), (tiny_llama_dir, TINY_LLAMA["num_hidden_layers"])):
        backbone = load_backbone(str(directory))
        assert backbone.num_layers == layers
        assert sum(p.numel() for p in backbone.model.parameters()) < 200_000


def test_runner_matches_hidden_states(tiny_model_dir):
    backbone = load_backbone(str(tiny_model_dir))
    encoded = encode(backbone, TEXTS)
    assert len(set(encoded.lengths.tolist())) > 1, "the batch must mix lengths"
    with torch.no_grad():
        reference = backbone.model(input_ids=encoded.input_ids, attention_mask=encoded.attention_mask, output_hidden_states=True).hidden_states

    runner = LayerRunner(backbone)
    state = runner.start(encoded)
    rows = torch.arange(len(TEXTS))
    for layer in range(1, backbone.num_layers):
        runner.advance(state, layer)
        expected = reference[layer][rows, encoded.lengths - 1]
        actual = state.hidden[rows, encoded.lengths - 1]
        assert torch.allclose(actual, expected, atol=1e-4), f"layer {layer}"

    # The last hidden_states entry already has the final norm applied.
    runner.advance(state, backbone.num_layers)
    assert torch.allclose(runner.pooled(state), reference[-1][rows, encoded.lengths - 1], atol=1e-4)


def test_pooled_state_independent_of_batch(tiny_model_dir):
    backbone = load_backbone(str(tiny_model_dir))
    runner = LayerRunner(backbone)

    def pooled(texts):
        state = runner.advance(runner.start(encode(backbone, texts)), backbone.num_layers)
        return runner.pooled(state)

    together = pooled(TEXTS)
    for i, text in enumerate(TEXTS):
        assert torch.allclose(pooled([text])[0], together[i], atol=1e-5)


def test_keep_rows_matches_full_batch(tiny_model_dir):
    backbone = load_backbone(str(tiny_model_dir))
    runner = LayerRunner(backbone)
    encoded = encode(backbone, TEXTS)
    full = runner.advance(runner.start(encoded), backbone.num_layers)
    expected = runner.pooled(full)[torch.tensor([0, 2])]

    state = runner.advance(runner.start(encoded), 2)
    state = runner.keep(state, torch.tensor([True, False, True, False]))
    assert state.hidden.shape[1] == int(encoded.lengths[[0, 2]].max()), "trailing padding is trimmed"
    runner.advance(state, backbone.num_layers)
    assert torch.allclose(runner.pooled(state), expected, atol=1e-5)


def test_truncation_counts_long_texts(tiny_gpt2_dir):
    backbone = load_backbone(str(tiny_gpt2_dir), max_length=8)
    encoded = encode(backbone, ["good", " ".join(["boring"] * 30)])
    assert encoded.truncated == 1
    assert encoded.input_ids.shape[1] == 8


def test_heads_save_reload(tmp_path):
    heads = ExitHeads([1, 3, 5], hidden_size=48, num_classes=3, meta={"model": "x"})
    heads.save_pretrained(tmp_path / "heads")
    loaded = ExitHeads.from_pretrained(tmp_path / "heads")
    x = torch.randn(7, 3, 48)
    assert torch.equal(heads.eval()(x), loaded(x))
    assert loaded.fingerprint() == heads.fingerprint()
    assert loaded.meta == {"model": "x"}


def test_heads_reject_tampered_weights(tmp_path):
    heads = ExitHeads([1, 2], hidden_size=8, num_classes=2)
    heads.save_pretrained(tmp_path)
    other = ExitHeads([1, 2], hidden_size=8, num_classes=2)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="do not match"):
        ExitHeads.from_pretrained(tmp_path)


@pytest.mark.parametrize("exits, message", [([0, 2], "outside"), ([3, 2], "increasing"), ([2, 2], "increasing"), ([9], "outside"), ([], "empty")])
def test_validate_exits_rejects(exits, message):
    with pytest.raises(ValueError, match=message):
        validate_exits(exits, num_layers=5)


def test_exits_every_includes_last_layer():
    assert exits_every(2, 5) == [2, 4, 5]
    assert exits_every(3, 6) == [3, 6]


def test_logit_lens_equals_lm_head(tiny_gpt2_dir):
    backbone = load_backbone(str(tiny_gpt2_dir))
    verbalizers = {"neg": [" bad"], "pos": [" good", " great"]}
    heads = logit_lens_heads(backbone, [2, 5], verbalizers, ["neg", "pos"])
    runner = LayerRunner(backbone)
    encoded = encode(backbone, TEXTS)
    state = runner.advance(runner.start(encoded), 5)
    pooled = runner.pooled(state)
    with torch.no_grad():
        vocab_logits = backbone.model.lm_head(pooled)  # (B, V)
        tok = backbone.tokenizer
        expected_neg = torch.stack([vocab_logits[:, tok(" bad", add_special_tokens=False)["input_ids"]].mean(-1)], 0).mean(0)
        good = vocab_logits[:, tok(" good", add_special_tokens=False)["input_ids"]].mean(-1)
        great = vocab_logits[:, tok(" great", add_special_tokens=False)["input_ids"]].mean(-1)
        lens = heads.forward_exit(1, pooled)
    assert torch.allclose(lens[:, 0], expected_neg, atol=1e-5)
    assert torch.allclose(lens[:, 1], (good + great) / 2, atol=1e-5)


def test_corpus_is_balanced_enough():
    _, labels = sentiment_corpus(400)
    assert 0.2 < np.mean(labels) < 0.8
