"""Run a decoder layer by layer, so a batch can stop or shrink between layers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .loading import Backbone


@dataclass
class Encoded:
    """Right-padded token ids of a batch of texts."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T), 1 for real tokens
    lengths: torch.Tensor  # (B,) real tokens per text
    truncated: int  # texts cut at the backbone's max_length


@dataclass
class RunState:
    """Hidden states of the rows still running, after `layer` decoder layers."""

    hidden: torch.Tensor  # (B, T, D)
    mask: torch.Tensor | None  # the model's own 4-D attention mask, or None when no row is padded
    position_ids: torch.Tensor  # (1, T): right padding puts every text at positions 0..T-1
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None  # Llama rotary (cos, sin), each (1, T, d)
    lengths: torch.Tensor  # (B,)
    layer: int


def encode(backbone: Backbone, texts: list[str]) -> Encoded:
    """Tokenize texts with right padding, truncating at the backbone's max_length."""
    tokenizer = backbone.tokenizer
    full = tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
    truncated = sum(len(ids) > backbone.max_length for ids in full)
    ids = [seq[: backbone.max_length] or [tokenizer.pad_token_id] for seq in full]

    lengths = torch.tensor([len(seq) for seq in ids], dtype=torch.long)
    width = int(lengths.max())
    input_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
    return Encoded(input_ids, attention_mask, lengths, truncated)


def token_lengths(backbone: Backbone, texts: list[str]) -> list[int]:
    """Return each text's token count after truncation, for length bucketing."""
    ids = backbone.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
    return [max(1, min(len(seq), backbone.max_length)) for seq in ids]


class LayerRunner:
    """Runs a backbone's decoder layers one at a time on a batch whose rows can leave.

    The per-layer states equal the model's own `output_hidden_states` forward: the
    same embeddings, the same causal mask (built by transformers for the model's
    attention implementation) and the same block calls.
    """

    def __init__(self, backbone: Backbone):
        self.backbone = backbone

    @torch.no_grad()
    def start(self, encoded: Encoded) -> RunState:
        return self.start_with_grad(encoded)

    def start_with_grad(self, encoded: Encoded) -> RunState:
        backbone = self.backbone
        base = backbone.base
        device = backbone.device
        input_ids = encoded.input_ids.to(device)
        attention_mask = encoded.attention_mask.to(device)
        B, T = input_ids.shape
        position_ids = torch.arange(T, device=device).unsqueeze(0)  # (1, T)

        if backbone.family == "gpt2":
            hidden = base.wte(input_ids) + base.wpe(position_ids)
            hidden = base.drop(hidden)
            rotary = None
        else:
            hidden = base.embed_tokens(input_ids)
            rotary = base.rotary_emb(hidden, position_ids=position_ids)
        return RunState(hidden, self.causal_mask(hidden, attention_mask, position_ids), position_ids, rotary, encoded.lengths.to(device), layer=0)

    def causal_mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor):
        """Build the model's own 4-D mask for its attention implementation, as its forward does."""
        from transformers.masking_utils import create_causal_mask

        return create_causal_mask(
            config=self.backbone.model.config,
            inputs_embeds=hidden,
            attention_mask=attention_mask,
            cache=None,
            position_ids=position_ids,
        )

    @torch.no_grad()
    def state_from_rows(self, rows: list[torch.Tensor], layer: int) -> RunState:
        """Pad unpadded `(T_i, D)` states of examples paused after `layer` layers into one batch."""
        device = self.backbone.device
        lengths = torch.tensor([r.shape[0] for r in rows], dtype=torch.long, device=device)
        B, T, D = len(rows), int(lengths.max()), rows[0].shape[1]
        hidden = rows[0].new_zeros((B, T, D))
        attention_mask = torch.zeros((B, T), dtype=torch.long, device=device)
        for i, row in enumerate(rows):
            hidden[i, : row.shape[0]] = row
            attention_mask[i, : row.shape[0]] = 1
        position_ids = torch.arange(T, device=device).unsqueeze(0)  # (1, T)
        rotary = None if self.backbone.family == "gpt2" else self.backbone.base.rotary_emb(hidden, position_ids=position_ids)
        return RunState(hidden, self.causal_mask(hidden, attention_mask, position_ids), position_ids, rotary, lengths, layer=layer)

    def run_layer(self, state: RunState) -> None:
        """Apply the next decoder layer in place."""
        block = self.backbone.layers[state.layer]
        if self.backbone.family == "gpt2":
            state.hidden = block(state.hidden, attention_mask=state.mask, use_cache=False, position_ids=state.position_ids)
        else:
            state.hidden = block(
                state.hidden,
                attention_mask=state.mask,
                position_ids=state.position_ids,
                position_embeddings=state.position_embeddings,
                use_cache=False,
            )
        state.layer += 1

    @torch.no_grad()
    def advance(self, state: RunState, to_layer: int) -> RunState:
        """Run layers until `to_layer` (1-based count of layers done)."""
        return self.advance_with_grad(state, to_layer)

    def advance_with_grad(self, state: RunState, to_layer: int) -> RunState:
        if not state.layer <= to_layer <= self.backbone.num_layers:
            raise ValueError(f"cannot advance from layer {state.layer} to {to_layer}; the model has {self.backbone.num_layers} layers")
        while state.layer < to_layer:
            self.run_layer(state)
        return state

    def pooled(self, state: RunState) -> torch.Tensor:
        """Return the final-norm state of each row's last real token, `(B, D)`."""
        rows = torch.arange(state.hidden.shape[0], device=state.hidden.device)

        # Gather position length-1 of each row: (B, T, D) -> (B, D).
        last = state.hidden[rows, state.lengths - 1]
        return self.backbone.final_norm(last)

    @staticmethod
    def keep(state: RunState, rows: torch.Tensor) -> RunState:
        """Keep only `rows` (indices or a boolean mask) and trim trailing padding."""
        state.hidden = state.hidden[rows]
        state.lengths = state.lengths[rows]
        if state.mask is not None:
            state.mask = state.mask[rows]

        # Right padding: columns past the longest remaining row are padding for every row,
        # and causal attention never lets earlier positions see them, so they can go.
        width = int(state.lengths.max()) if state.lengths.numel() else 0
        if width < state.hidden.shape[1]:
            state.hidden = state.hidden[:, :width]
            state.position_ids = state.position_ids[:, :width]
            if state.mask is not None:
                state.mask = state.mask[:, :, :width, :width]
            if state.position_embeddings is not None:
                cos, sin = state.position_embeddings
                state.position_embeddings = (cos[:, :width], sin[:, :width])
        return state
