"""CUT3R assembled (the official `ARCroco3DStereo` with DPT, pose and RGB heads), run one frame at a time.

Per frame t (image BxCxHxW in [-1, 1], H and W multiples of 16):
  1. encoder: tokens BxNxDe and positions BxNx2; g = mean token Bx1xDe.
  2. pose token Bx1xDd: the learned `pose_token` at t = 0, else `pose_retriever.inquire(g, mem)`.
  3. paired decoders on (state BxSxDd, [pose token, decoder_embed(tokens)] Bx(1+N)xDd) -> new state, layers.
  4. mem <- pose_retriever.update(mem, g, final pose token); state <- new state.
  5. heads on [tokens, layer L/2, layer 3L/4, final] -> points, confidences, colours, pose.
The recurrent state (`state_feat`, `mem`) is all the model carries between frames: memory does not grow.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Optional, Sequence

import torch
from torch import nn

from ..config import Cut3rConfig
from .decoder import build_decoder_blocks, run_paired_decoders, state_positions
from .downstream_head import DownstreamHead
from .encoder import PatchEmbed, build_encoder_blocks, run_encoder
from .pose_head import pose_to_matrix
from .pose_retriever import PoseRetriever
from .rope import RoPE2D

OFFICIAL_OUTPUTS = ("pts3d_in_self_view", "conf_self", "pts3d_in_other_view", "conf", "camera_pose", "rgb")


class Cut3r(nn.Module):
    """CUT3R whose `state_dict()` has the official parameter names and shapes (loads with strict=True).

    Streaming use: `reset()`, then `step(img)` per frame. `state_feat` (BxSxDd) and `mem` (BxMx2Dd) hold the
    recurrent state after the last step; `frame_index` counts the frames since the last reset.
    """

    def __init__(self, config: Cut3rConfig):
        super().__init__()
        c = self.config = config
        eps, ratio = c.norm_eps, c.mlp_ratio
        encoder_rope = RoPE2D(c.rope_base, storage_dtype=torch.float16)  # CroCo encoder blocks round q/k to fp16
        rope = RoPE2D(c.rope_base)
        self.pose_token = nn.Parameter(torch.randn(1, 1, c.dec_embed_dim) * 0.02)
        self.masked_img_token = nn.Parameter(torch.randn(1, c.enc_embed_dim) * 0.02)
        self.masked_ray_map_token = nn.Parameter(torch.randn(1, c.enc_embed_dim) * 0.02)
        # image encoder (and the ray-map encoder, which image-only input never uses)
        self.patch_embed = PatchEmbed(3, c.enc_embed_dim, c.patch_size)
        self.patch_embed_ray_map = PatchEmbed(6, c.enc_embed_dim, c.patch_size)
        self.enc_blocks = build_encoder_blocks(c.enc_embed_dim, c.enc_depth, c.enc_num_heads, ratio, eps, encoder_rope)
        self.enc_norm = nn.LayerNorm(c.enc_embed_dim, eps=eps)
        # image decoder
        self.decoder_embed = nn.Linear(c.enc_embed_dim, c.dec_embed_dim)
        self.dec_blocks = build_decoder_blocks(c.dec_embed_dim, c.dec_depth, c.dec_num_heads, ratio, eps, rope)
        self.dec_norm = nn.LayerNorm(c.dec_embed_dim, eps=eps)
        self.enc_blocks_ray_map = build_encoder_blocks(c.enc_embed_dim, c.ray_enc_depth, c.ray_enc_num_heads, ratio,
                                                       eps, rope)
        self.enc_norm_ray_map = nn.LayerNorm(c.enc_embed_dim, eps=eps)
        # pose retriever memory, state tokens and state decoder
        self.pose_retriever = PoseRetriever(c.local_mem_size, c.enc_embed_dim, c.dec_embed_dim, c.dec_num_heads,
                                            ratio, eps)
        with torch.no_grad():
            self.pose_retriever.masked_token.normal_(0.0, 0.2)
            self.pose_retriever.mem.normal_(0.0, 0.2)
        self.register_tokens = nn.Embedding(c.state_size, c.enc_embed_dim)
        self.decoder_embed_state = nn.Linear(c.enc_embed_dim, c.dec_embed_dim)
        self.dec_blocks_state = build_decoder_blocks(c.dec_embed_dim, c.dec_depth, c.state_dec_num_heads, ratio,
                                                     eps, rope)
        self.dec_norm_state = nn.LayerNorm(c.dec_embed_dim, eps=eps)
        self.downstream_head = DownstreamHead(c.enc_embed_dim, c.dec_embed_dim, c.dec_num_heads, ratio, eps, rope,
                                              c.depth_mode, c.conf_mode, c.pose_mode, c.rgb_head,
                                              c.dpt_layer_dims, c.dpt_feature_dim, c.final_transform_depth)
        self.state_feat: Optional[torch.Tensor] = None
        self.state_pos: Optional[torch.Tensor] = None
        self.mem: Optional[torch.Tensor] = None
        self.frame_index = 0

    # ------------------------------------------------------------------ recurrent state
    def initial_state(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(state BxSxDd, state positions BxSx2, mem BxMx2Dd) before the first frame; independent of the images."""
        with torch.no_grad():
            state = self.decoder_embed_state(self.register_tokens.weight)[None].expand(batch, -1, -1).clone()
            mem = self.pose_retriever.initial_memory(batch)
        pos = state_positions(self.config.state_size, self.config.state_width, batch, device)
        return state, pos, mem

    def reset(self) -> None:
        """Forget the sequence: the next `step` is frame 0 and starts from the learned initial state."""
        self.state_feat = self.state_pos = self.mem = None
        self.frame_index = 0

    # ------------------------------------------------------------------ one frame
    @torch.no_grad()
    def step(self, img: torch.Tensor, *, attention_layers: Optional[Sequence[int]] = None,
             amp_dtype: Optional[torch.dtype] = None, debug: bool = False) -> dict[str, torch.Tensor]:
        """Process one frame and advance the recurrent state.

        img: Bx3xHxW float in [-1, 1] (H, W multiples of 16) on the model's device.
        attention_layers: state-decoder layers whose cross-attention weights to return (None: none; fast path).
        amp_dtype: torch.bfloat16 / torch.float16 to run encoder and decoders under autocast (heads stay fp32).
        Returns the official outputs (pts3d_in_self_view BxHxWx3, conf_self BxHxW, pts3d_in_other_view BxHxWx3,
        conf BxHxW, camera_pose Bx7 [t, qw qx qy qz] camera-to-world, rgb BxHxWx3) plus camera_pose_c2w Bx4x4,
        features_3d BxDdxhxw (final image-decoder tokens, F3d) and, when asked, state_attention
        {layer: BxHeadsxSx(1+N)} (key 0 is the pose token, then the image patches in row-major order).
        """
        if img.ndim != 4 or img.shape[1] != 3:
            raise ValueError(f"img must be Bx3xHxW, got {tuple(img.shape)}")
        batch, _, height, width = img.shape
        patch = self.config.patch_size
        if height % patch or width % patch:
            raise ValueError(f"image size {height}x{width} must be a multiple of {patch}")
        img = img.to(self.patch_embed.proj.weight.dtype)
        if self.state_feat is None:
            self.state_feat, self.state_pos, self.mem = self.initial_state(batch, img.device)
        elif self.state_feat.shape[0] != batch:
            raise ValueError(f"batch size changed from {self.state_feat.shape[0]} to {batch}; call reset() first")
        assert self.state_pos is not None and self.mem is not None  # set together with state_feat
        autocast = (torch.autocast(device_type=img.device.type, dtype=amp_dtype) if amp_dtype is not None
                    else nullcontext())
        with autocast:
            tokens, pos = run_encoder(self.patch_embed, self.enc_blocks, self.enc_norm, img)
            image_feature = tokens.mean(dim=1, keepdim=True)
            if self.frame_index == 0:
                pose_in = self.pose_token.expand(batch, -1, -1)
            else:
                pose_in = self.pose_retriever.inquire(image_feature, self.mem)
            pose_pos = torch.full((batch, 1, 2), -1, dtype=pos.dtype, device=pos.device)
            image_in = torch.cat([pose_in, self.decoder_embed(tokens)], dim=1)
            decoded = run_paired_decoders(self.dec_blocks_state, self.dec_blocks, self.dec_norm_state, self.dec_norm,
                                          self.state_feat, self.state_pos, image_in, torch.cat([pose_pos, pos], 1),
                                          attention_layers)
            layers = decoded.image_layers
            final = layers[-1]
            new_mem = self.pose_retriever.update(self.mem, image_feature, final[:, 0:1])
        depth = self.config.dec_depth
        head_tokens = [tokens, layers[depth * 2 // 4 - 1][:, 1:], layers[depth * 3 // 4 - 1][:, 1:], final]
        grid_hw = (height // patch, width // patch)
        with torch.autocast(device_type=img.device.type, enabled=False):
            out = self.downstream_head(head_tokens, pos, grid_hw, debug=debug)
        out["camera_pose_c2w"] = pose_to_matrix(out["camera_pose"])
        out["features_3d"] = final[:, 1:].float().transpose(1, 2).reshape(batch, -1, *grid_hw)
        if attention_layers:
            out["state_attention"] = decoded.state_attention
        if debug:
            out.update(encoder_tokens=tokens, decoder_input_pose_token=pose_in, decoder_input_state=self.state_feat,
                       dec_img_layers=torch.stack(layers), img_pos=pos)
        self.state_feat = decoded.state.float()
        self.mem = new_mem.float()
        self.frame_index += 1
        return out

    def forward(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        """Same as `step(img)`."""
        return self.step(img)


def build_cut3r(config: Cut3rConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Cut3r:
    """The one builder of the model: randomly initialised weights on `device` in `dtype`, in eval mode."""
    model = Cut3r(config)
    return model.to(device=device, dtype=dtype).eval()
