"""Checks that a run's artifacts come from each other: model, heads, cache logits and gates.

Each artifact records the fingerprint of what produced it (heads: the model's
weights hash; cache logits: the heads' hash; gates: model, dataset, exits and
heads). A mismatch means a file was copied from another run or a stage was
rerun without the stages after it, and the error names both sides.
"""

from __future__ import annotations

from pathlib import Path

from backbone.heads import ExitHeads


def check_heads_match_model(heads: ExitHeads, heads_dir: Path, model_fingerprint: str, model_name: str, run_root: Path) -> None:
    """Reject heads trained on another model (weights hash or hidden size)."""
    found = heads.meta.get("model_fingerprint")
    if found is not None and found != model_fingerprint:
        raise ValueError(
            f"heads in {heads_dir} were trained on a model with fingerprint {found!r} "
            f"({heads.meta.get('model_id', 'unknown model')}), but the run's model {model_name} has fingerprint "
            f"{model_fingerprint!r}; retrain them with `python cli.py finetune --run-dir {run_root}`"
        )


def check_heads_match_cache(heads: ExitHeads, heads_dir: Path, cache_fingerprint: str | None, cache_path: Path, split: str, run_root: Path) -> None:
    """Reject cache logits that other heads produced (heads retrained after `extract`)."""
    expected = heads.fingerprint()
    if cache_fingerprint is not None and cache_fingerprint != expected:
        raise ValueError(
            f"logits of split {split!r} in {cache_path} come from heads {cache_fingerprint!r}, but the heads in "
            f"{heads_dir} are {expected!r}; rerun `python cli.py extract --run-dir {run_root}` to refresh the logits"
        )


def check_gate_matches_heads(gate, gate_path, heads: ExitHeads, heads_dir: Path) -> None:
    """Reject a gate trained on logits of other heads."""
    found = gate.meta_.get("heads_fingerprint")
    expected = heads.fingerprint()
    if found is not None and found != expected:
        raise ValueError(
            f"gate {gate_path} was trained on logits of heads {found!r}, but the heads in {heads_dir} are "
            f"{expected!r}; retrain the gate with `python cli.py train-gates --run-dir {Path(heads_dir).parent}`"
        )


def check_run_heads_match_cache(run, cache, features, split: str) -> None:
    """Compare the run's saved heads with the model and the logits of a cache split, when heads exist.

    `run` is a RunDir, `cache` an open FeatureCache and `features` its read split.
    """
    if not (run.heads_dir / "config.json").is_file():
        return
    heads = ExitHeads.from_pretrained(run.heads_dir)
    check_heads_match_model(heads, run.heads_dir, cache.meta.model_fingerprint, cache.meta.model_id, run.root)
    check_heads_match_cache(heads, run.heads_dir, features.heads_fingerprint, cache.path, split, run.root)
