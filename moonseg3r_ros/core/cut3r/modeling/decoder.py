"""The paired decoders: state tokens and image(+pose) tokens updated in lockstep.

Layer l: state <- dec_blocks_state[l](state, image)  (self-attention over the state, cross-attention to the
image and pose tokens; this cross-attention is the state attention A_t), and image <- dec_blocks[l](image,
state), both from the outputs of layer l-1. The state decoder has its own head count (16 in the released
model) while the image decoder has `dec_num_heads`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import nn

from .blocks import DecoderBlock
from .rope import RoPE2D


def build_decoder_blocks(dim: int, depth: int, num_heads: int, mlp_ratio: float, eps: float,
                         rope: RoPE2D) -> nn.ModuleList:
    """`depth` decoder blocks sharing one RoPE."""
    return nn.ModuleList([DecoderBlock(dim, num_heads, mlp_ratio, eps, rope) for _ in range(depth)])


def state_positions(state_size: int, width: int, batch: int, device: torch.device) -> torch.Tensor:
    """BxSx2 int64 (row, col) positions of the state tokens on a grid `width` wide."""
    index = torch.arange(state_size, device=device)
    return torch.stack([index // width, index % width], dim=-1)[None].expand(batch, -1, -1).contiguous()


@dataclass
class DecoderOutput:
    """What one decoder pass produces.

    image_layers: outputs of image blocks 1..L, each Bx(1+N)xDd (token 0 is the pose token); the last one
    has had `dec_norm` applied. state: BxSxDd after `dec_norm_state` (the new state).
    state_attention: {layer index: BxHxSx(1+N) softmax weights of the state decoder's cross attention}.
    """

    image_layers: list[torch.Tensor]
    state: torch.Tensor
    state_attention: dict[int, torch.Tensor] = field(default_factory=dict)


def run_paired_decoders(state_blocks: nn.ModuleList, image_blocks: nn.ModuleList, state_norm: nn.LayerNorm,
                        image_norm: nn.LayerNorm, state: torch.Tensor, state_pos: torch.Tensor,
                        image: torch.Tensor, image_pos: torch.Tensor,
                        attention_layers: Optional[Sequence[int]] = None) -> DecoderOutput:
    """state: BxSxDd, image: Bx(1+N)xDd (pose token first), positions Bx.x2 -> DecoderOutput.

    `attention_layers`: 0-based layer indices (negative counts from the end) whose state cross-attention
    weights are recomputed and returned; None or empty keeps the fast SDPA-only path.
    """
    depth = len(state_blocks)
    wanted = {layer % depth for layer in attention_layers} if attention_layers else set()
    layers, attention = [], {}
    for index, (state_block, image_block) in enumerate(zip(state_blocks, image_blocks)):
        new_state, weights = state_block(state, image, state_pos, image_pos, return_weights=index in wanted)
        new_image, _ = image_block(image, state, image_pos, state_pos)
        state, image = new_state, new_image
        layers.append(image)
        if weights is not None:
            attention[index] = weights
    layers[-1] = image_norm(layers[-1])
    return DecoderOutput(image_layers=layers, state=state_norm(state), state_attention=attention)
