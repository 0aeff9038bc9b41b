"""Query refinement (paper's Figure 2 (b), second half): q_t -> q'_t with a transformer decoder.

Each of the `num_layers` layers (paper: 3) is, with pre-norm residuals:
    q <- q + CrossAttn(q, frame tokens)           frame tokens: F2d patches projected to D (h*w x D)
    q <- q + CrossAttn(q, contextual queries)     historical queries retrieved from the query index memory
    q <- q + SelfAttn(q)
    q <- q + FFN(q)
followed by a LayerNorm. Per-mask predictions are mask logits = q' . E where E (D x h x w) are per-pixel
embeddings of F2d: logits N x h x w.

Modes (`QueryDecoder.mode`)
- 'trained': weights loaded with `load_weights(path)`.
- 'identity': no weights given: q' = q and no mask logits. This is the documented untrained mode; it is
  logged once as "untrained refinement: identity".
- 'untrained': randomly initialised layers run anyway (`run_untrained=True`), to measure their cost.

Weights file (`load_weights`): a torch file holding either the decoder's plain state_dict or a dict
{'decoder': state_dict, 'lifter': state_dict (optional), 'meta': {...} (optional)}; the extra entries are
returned to the caller (the pipeline loads 'lifter' into its QueryLifter).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from moonseg3r_ros.core.untrusted_files import load_torch_file

LOGGER = logging.getLogger("moonseg3r")


class RefinementError(RuntimeError):
    """Decoder weights missing, unreadable or of the wrong shape."""


@dataclass
class RefinedQueries:
    queries: torch.Tensor  # NxD refined queries q'_t
    mask_logits: Optional[torch.Tensor]  # N x h x w, None in identity mode


class DecoderLayer(nn.Module):
    """Cross-attention to frame tokens, cross-attention to context, self-attention, FFN (pre-norm)."""

    def __init__(self, dim: int, num_heads: int, ffn_ratio: int = 4):
        super().__init__()
        self.norm_frame, self.norm_context = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.norm_self, self.norm_ffn = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.frame_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.context_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_ratio * dim), nn.GELU(), nn.Linear(ffn_ratio * dim, dim))

    def forward(self, queries: torch.Tensor, frame_tokens: torch.Tensor,
                context: Optional[torch.Tensor]) -> torch.Tensor:
        """queries 1xNxD, frame_tokens 1xTxD, context 1xVxD or None -> 1xNxD."""
        x = self.norm_frame(queries)
        queries = queries + self.frame_attn(x, frame_tokens, frame_tokens, need_weights=False)[0]
        if context is not None and context.shape[1] > 0:
            x = self.norm_context(queries)
            queries = queries + self.context_attn(x, context, context, need_weights=False)[0]
        x = self.norm_self(queries)
        queries = queries + self.self_attn(x, x, x, need_weights=False)[0]
        return queries + self.ffn(self.norm_ffn(queries))


class QueryDecoder(nn.Module):
    """Transformer decoder refining queries with frame features and contextual queries (module docstring)."""

    def __init__(self, dim: int, feature_dim: int, num_layers: int = 3, num_heads: int = 4,
                 weights: str = "", run_untrained: bool = False, seed: int = 0):
        super().__init__()
        if dim % num_heads:
            raise RefinementError(f"query dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.feature_dim = dim, feature_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.frame_proj = nn.Linear(feature_dim, dim)
            self.pixel_proj = nn.Linear(feature_dim, dim)
            self.layers = nn.ModuleList([DecoderLayer(dim, num_heads) for _ in range(num_layers)])
            self.norm_out = nn.LayerNorm(dim)
        self.extras: dict = {}
        if weights:
            self.extras = self.load_weights(weights)
        elif run_untrained:
            self.mode = "untrained"
            LOGGER.warning("untrained refinement: random decoder weights (benchmark mode, outputs meaningless)")
        else:
            self.mode = "identity"
            LOGGER.warning("untrained refinement: identity (no refinement.weights given; q' = q)")

    def load_weights(self, path: str) -> dict:
        """Load decoder weights (format in the module docstring); returns the file's extra entries."""
        if not Path(path).is_file():
            raise RefinementError(f"refinement weights '{path}' do not exist")
        try:
            state = load_torch_file(path)  # weights_only: runs nothing from the file
        except Exception as err:
            raise RefinementError(f"refinement weights '{path}' cannot be read: {err}") from err
        if not isinstance(state, dict):
            raise RefinementError(f"refinement weights '{path}' hold a {type(state).__name__}, not a state dict")
        decoder_state = state.get("decoder", state)
        extras = {k: v for k, v in state.items() if k != "decoder"} if "decoder" in state else {}
        try:
            self.load_state_dict(decoder_state, strict=True)
        except Exception as err:
            raise RefinementError(f"refinement weights '{path}' do not fit this decoder (dim {self.dim}, "
                                  f"feature dim {self.feature_dim}, {len(self.layers)} layers): {err}") from err
        self.mode = "trained"
        LOGGER.info("refinement weights loaded from %s", path)
        return extras

    def forward(self, queries: torch.Tensor, features_2d: torch.Tensor,
                context: Optional[torch.Tensor] = None) -> RefinedQueries:
        """queries NxD, F2d C2 x h x w, context VxD or None -> RefinedQueries (q'_t NxD, logits N x h x w)."""
        if self.mode == "identity" or queries.shape[0] == 0:
            return RefinedQueries(queries, None)
        channels, height, width = features_2d.shape
        tokens = features_2d.reshape(channels, -1).T.to(queries.dtype)  # (h*w) x C2
        frame_tokens = self.frame_proj(tokens)[None]
        ctx = context[None].to(queries.dtype) if context is not None else None
        x = queries[None]
        for layer in self.layers:
            x = layer(x, frame_tokens, ctx)
        refined = self.norm_out(x)[0]
        pixels = self.pixel_proj(tokens)  # (h*w) x D
        logits = (refined @ pixels.T).reshape(-1, height, width)
        return RefinedQueries(refined, logits)
