"""Zero-shot exits: project each exit's final-norm state onto verbalizer tokens (logit lens)."""

from __future__ import annotations

import logging

import torch

from .heads import ExitHeads
from .loading import Backbone

logger = logging.getLogger(__name__)


def verbalizer_token_ids(backbone: Backbone, verbalizers: dict[str, list[str]], label_names: list[str]) -> list[list[list[int]]]:
    """Tokenize every verbalizer word of every label: label -> word -> token ids."""
    missing = [name for name in label_names if not verbalizers.get(name)]
    if missing:
        raise ValueError(f"no verbalizer for labels {missing}; pass --verbalizer LABEL=\" word\" for each")
    ids = []
    for name in label_names:
        words = []
        for word in verbalizers[name]:
            tokens = backbone.tokenizer(word, add_special_tokens=False)["input_ids"]
            if not tokens:
                raise ValueError(f"verbalizer {word!r} of label {name!r} tokenizes to nothing; use a non-empty word")
            words.append(tokens)
        ids.append(words)
    return ids


def logit_lens_heads(backbone: Backbone, exits: list[int], verbalizers: dict[str, list[str]], label_names: list[str]) -> ExitHeads:
    """Build exit heads whose logits are the LM head's verbalizer logits.

    A class score is the mean, over its words and each word's tokens, of the LM
    head logit. That mean is linear in the state, so it is one `(K, D)` matrix of
    averaged LM-head rows: no full-vocabulary projection is computed. Every exit
    uses the same matrix on the final-norm state, as the last layer does.
    """
    weight = backbone.output_embeddings().detach()  # (V, D)
    bias = getattr(backbone.model.get_output_embeddings(), "bias", None)
    rows, offsets = [], []
    for words in verbalizer_token_ids(backbone, verbalizers, label_names):
        word_rows = torch.stack([weight[tokens].mean(dim=0) for tokens in words]).mean(dim=0)  # (D,)
        rows.append(word_rows)
        if bias is not None:
            offsets.append(torch.stack([bias[tokens].mean() for tokens in words]).mean())
    matrix = torch.stack(rows)  # (K, D)

    heads = ExitHeads(
        exits,
        backbone.hidden_size,
        len(label_names),
        dropout=0.0,
        meta={"kind": "logit-lens", "verbalizers": verbalizers, "label_names": label_names, "model_fingerprint": backbone.fingerprint},
    )
    with torch.no_grad():
        for head in heads.heads:
            head[1].weight.copy_(matrix)
            head[1].bias.copy_(torch.stack(offsets) if offsets else torch.zeros(len(label_names)))
    return heads.eval()
