"""End-of-epoch checkpoints of joint fine-tuning, in safetensors and JSON only (no pickle).

    <dir>/state.json               epoch done, best epoch, history, RNG state of batch shuffling, settings
    <dir>/last/                    model (save_pretrained) and heads after the last finished epoch
    <dir>/last/optimizer.safetensors + optimizer.json   AdamW state, flattened to tensors plus JSON
    <dir>/last/rng.safetensors     torch CPU RNG state (dropout)
    <dir>/best/                    model and heads of the best epoch so far

Each part is written under a temporary directory and renamed into place, and
state.json is written last, so a crash mid-save leaves the previous checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .heads import ExitHeads

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
CHECKPOINT_FORMAT = "early-exit-joint-checkpoint/1"
MODEL_WEIGHTS = "model.safetensors"


@dataclass
class CheckpointState:
    """Progress of joint training after `epochs_done` epochs."""

    epochs_done: int
    best_epoch: int  # 0-based
    best_mean: float
    history: list[list[float]]
    shuffle_rng: dict  # numpy bit_generator.state of the batch shuffler
    settings: dict = field(default_factory=dict)  # what must match to resume: model, exits, optimiser settings
    format: str = CHECKPOINT_FORMAT


def has_checkpoint(directory: Path) -> bool:
    return (Path(directory) / STATE_FILE).is_file()


def read_state(directory: Path) -> CheckpointState:
    path = Path(directory) / STATE_FILE
    raw = json.loads(path.read_text())
    if raw.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: expecting format {CHECKPOINT_FORMAT!r}, got {raw.get('format')!r}; delete {directory} to train from the start")
    return CheckpointState(**raw)


def check_settings(directory: Path, state: CheckpointState, settings: dict) -> None:
    """Raise when the checkpoint was written by training with other settings."""
    differences = [f"{key}: checkpoint {state.settings.get(key)!r}, now {value!r}" for key, value in settings.items() if state.settings.get(key) != value]
    if differences:
        raise ValueError(
            f"checkpoint {directory} was written with other settings ({'; '.join(differences)}); "
            f"resume with the same settings, or delete {directory} to train from the start"
        )


def flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's state_dict into named tensors and a JSON-safe rest."""
    state_dict = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state_dict["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in [*tensors.items(), *rest["scalars"].items()]:
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def replace_directory(tmp: Path, directory: Path) -> None:
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def save_weights(directory: Path, model: torch.nn.Module, heads: ExitHeads, extra=None) -> None:
    """Write model and heads (and `extra(tmp)` files) to a temporary directory, then swap it in."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    heads.save_pretrained(tmp / "heads")
    if extra is not None:
        extra(tmp)
    replace_directory(tmp, directory)


def save_checkpoint(directory: Path, model, heads: ExitHeads, optimizer, state: CheckpointState, *, improved: bool) -> None:
    """Save the state after an epoch; `improved` also replaces best/ with this epoch's weights."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    def optimizer_files(tmp: Path) -> None:
        tensors, rest = flatten_optimizer(optimizer)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(rest))
        save_file({"torch_cpu": torch.get_rng_state()}, str(tmp / "rng.safetensors"))

    save_weights(directory / "last", model, heads, optimizer_files)
    if improved:
        save_weights(directory / "best", model, heads)
    tmp = directory / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    os.replace(tmp, directory / STATE_FILE)
    logger.info("saved checkpoint of epoch %d to %s", state.epochs_done, directory)


def load_model_weights(model: torch.nn.Module, directory: Path) -> None:
    """Load save_pretrained weights into `model` in place; tied weights may be absent from the file."""
    weights = load_file(str(Path(directory) / MODEL_WEIGHTS))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    untied_missing = [key for key in missing if key not in tied]
    if unexpected or untied_missing:
        raise ValueError(
            f"{directory} does not hold this model's weights (missing {untied_missing[:3]}, unexpected {unexpected[:3]}); "
            f"delete {Path(directory).parent} to train from the start"
        )


def load_weights(directory: Path, model, heads: ExitHeads) -> None:
    load_model_weights(model, directory)
    heads.load_state_dict(ExitHeads.from_pretrained(Path(directory) / "heads").state_dict())


def load_checkpoint(directory: Path, model, heads: ExitHeads, optimizer) -> CheckpointState:
    """Restore model, heads, optimizer and RNG from last/; return the saved progress."""
    directory = Path(directory)
    state = read_state(directory)
    last = directory / "last"
    load_weights(last, model, heads)
    rest = json.loads((last / "optimizer.json").read_text())
    optimizer.load_state_dict(unflatten_optimizer(load_file(str(last / "optimizer.safetensors")), rest))
    torch.set_rng_state(load_file(str(last / "rng.safetensors"))["torch_cpu"])
    return state
