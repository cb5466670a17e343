"""The offline default model: GGUF loading, saving as a plain checkpoint, and the layer runner."""

import torch

from backbone.loading import load_backbone
from backbone.runner import LayerRunner, encode


def test_offline_model_round_trip(tmp_path):
    backbone = load_backbone("smollm2-135m")
    assert backbone.family == "llama"
    assert backbone.num_layers == 30
    assert backbone.model.hf_quantizer is None, "the dequantized model must save like any float checkpoint"

    backbone.model.save_pretrained(tmp_path)
    backbone.tokenizer.save_pretrained(tmp_path)
    reloaded = load_backbone(str(tmp_path))
    assert reloaded.fingerprint == backbone.fingerprint

    texts = ["A sharp, funny film.", "Dull and far too long, with a plot that goes nowhere."]
    encoded = encode(backbone, texts)
    with torch.no_grad():
        reference = backbone.model(input_ids=encoded.input_ids, attention_mask=encoded.attention_mask, output_hidden_states=True).hidden_states
    runner = LayerRunner(reloaded)
    state = runner.advance(runner.start(encoded), 30)
    rows = torch.arange(len(texts))
    assert torch.allclose(runner.pooled(state), reference[-1][rows, encoded.lengths - 1], atol=1e-4)
