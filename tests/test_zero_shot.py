"""Zero-shot early exit through the main pipeline: logit lens on verbalizer tokens."""

import json

import numpy as np
import pytest
import torch

from backbone.heads import ExitHeads
from backbone.loading import load_backbone
from backbone.runner import LayerRunner, encode
from features import FeatureCache
from tests.conftest import invoke


def extract_zero_shot(run, model_dir, dataset, *options):
    """Run `extract --zero-shot` on the tiny model and the CSV fixture with extra options."""
    return invoke(
        "extract", "--run-dir", run, "--zero-shot", "--model", model_dir, "--dataset", dataset,
        "--text-column", "review", "--label-column", "sentiment", *options,
    )


def test_zero_shot_pipeline(tmp_path, tiny_gpt2_dir, csv_dataset):
    run = tmp_path / "zero-shot"
    result = extract_zero_shot(
        run, tiny_gpt2_dir, csv_dataset, "--exits", "2,4,5",
        "--prompt", "Review: {text}\\nSentiment:", "--verbalizer", 'neg=" bad"', "--verbalizer", 'pos=" good, great"',
    )
    assert result.exit_code == 0, result.output
    config = json.loads((run / "run.json").read_text())
    assert config["zero_shot"] is True
    assert config["prompt"] == "Review: {text}\nSentiment:"
    assert config["verbalizers"] == {"neg": [" bad"], "pos": [" good", " great"]}

    result = invoke("train-gates", "--run-dir", run, "--kind", "maxprob")
    assert result.exit_code == 0, result.output
    result = invoke("simulate", "--run-dir", run)
    assert result.exit_code == 0, result.output
    assert "maxprob" in result.output


@pytest.fixture(scope="module")
def prompted_run(tmp_path_factory, tiny_gpt2_dir, csv_dataset):
    """A zero-shot run with a prompt and one verbalizer word per label."""
    run = tmp_path_factory.mktemp("prompted")
    result = extract_zero_shot(
        run, tiny_gpt2_dir, csv_dataset, "--exits", "3,5", "--prompt", "Text: {text} Verdict:",
        "--verbalizer", 'neg=" bad"', "--verbalizer", 'pos=" good"',
    )
    assert result.exit_code == 0, result.output
    return run


def test_zero_shot_logits_are_prompted_lm_logits(prompted_run, tiny_gpt2_dir):
    run = prompted_run
    cache = FeatureCache.open(run / "cache.zarr")
    assert cache.meta.logits_kind == "logit-lens"
    test = cache.read("test")

    # Recompute one example by hand: prompt, full forward, final norm at layer 3, LM-head rows of the verbalizers.
    from replay.prepare import load_data
    from replay.rundir import RunDir

    texts = load_data(RunDir(run).load_config()).test.texts
    row = 0
    text = texts[test.order[row]]
    assert text.startswith("Text: ")
    assert text.endswith(" Verdict:")
    backbone = load_backbone(str(tiny_gpt2_dir))
    encoded = encode(backbone, [text])
    with torch.no_grad():
        states = backbone.model(input_ids=encoded.input_ids, output_hidden_states=True).hidden_states
        layer3 = backbone.final_norm(states[3][0, -1])
        vocab = backbone.model.lm_head(layer3)
    bad = backbone.tokenizer(" bad", add_special_tokens=False)["input_ids"]
    good = backbone.tokenizer(" good", add_special_tokens=False)["input_ids"]
    expected = np.array([vocab[bad].mean().item(), vocab[good].mean().item()])
    assert np.allclose(test.logits[row, 0], expected, atol=1e-4)

    heads = ExitHeads.from_pretrained(run / "heads")
    assert heads.meta["kind"] == "logit-lens"


def test_unknown_verbalizer_label_rejected(tmp_path, tiny_gpt2_dir, csv_dataset):
    result = extract_zero_shot(tmp_path / "bad", tiny_gpt2_dir, csv_dataset, "--verbalizer", 'happy=" good"')
    assert result.exit_code == 1
    assert "happy" in result.output
    assert "Traceback" not in result.output


def test_infer_applies_run_prompt(prompted_run):
    from replay.infer import InferOptions, run_early_exit
    from replay.predict import load_inference, run_infer
    from replay.rundir import RunDir

    run = prompted_run
    assert invoke("train-gates", "--run-dir", run, "--kind", "maxprob").exit_code == 0

    _, predictions, _ = run_infer(RunDir(run), texts=["good fun", "awful plot"], gate_name="maxprob")
    _, backbone, heads, gate = load_inference(RunDir(run), "maxprob", "cpu")
    prompted, _ = run_early_exit(backbone, heads, gate, ["Text: good fun Verdict:", "Text: awful plot Verdict:"], InferOptions())
    assert np.allclose(predictions.probabilities, prompted.probabilities, atol=1e-6)
    assert np.array_equal(predictions.exit_index, prompted.exit_index)
