"""Typed configuration of the CUT3R model (the official `ARCroco3DStereoConfig` kwargs, parsed and checked).

`Cut3rConfig.from_official(kwargs)` accepts the constructor kwargs exactly as the official code takes them
(as stored in the released checkpoint's `args.model` string or in the reference manifest's `config`), with
"inf"/"-inf" strings accepted for the infinite bounds of the output modes. Options that the released
checkpoint does not use (linear head, no pose head, 1d state positions, ...) are rejected with a clear error.
"""
from __future__ import annotations

import ast
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping


def _as_float(value: Any) -> float:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("inf", "+inf", "infinity"):
            return math.inf
        if text in ("-inf", "-infinity"):
            return -math.inf
        return float(text)
    return float(value)


def _mode(value: Any, name: str) -> tuple[str, float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ValueError(f"{name} must be (mode, vmin, vmax), got {value!r}")
    return (str(value[0]), _as_float(value[1]), _as_float(value[2]))


@dataclass(frozen=True)
class Cut3rConfig:
    """Architecture of a CUT3R model (ARCroco3DStereo with DPT heads, pose head and RGB head)."""

    enc_embed_dim: int = 1024
    enc_depth: int = 24
    enc_num_heads: int = 16
    dec_embed_dim: int = 768
    dec_depth: int = 12
    dec_num_heads: int = 12
    state_size: int = 768
    state_dec_num_heads: int = 16
    local_mem_size: int = 256
    ray_enc_depth: int = 2
    ray_enc_num_heads: int = 16  # fixed in the official code
    patch_size: int = 16
    mlp_ratio: float = 4.0
    rope_base: float = 100.0
    img_size: tuple[int, int] = (512, 512)
    depth_mode: tuple[str, float, float] = ("exp", -math.inf, math.inf)
    conf_mode: tuple[str, float, float] = ("exp", 1.0, math.inf)
    pose_mode: tuple[str, float, float] = ("exp", -math.inf, math.inf)
    rgb_head: bool = True
    norm_eps: float = 1e-6
    dpt_feature_dim: int = 256
    dpt_layer_dims: tuple[int, int, int, int] = (96, 192, 384, 768)
    final_transform_depth: int = 2
    extra: dict = field(default_factory=dict, compare=False)  # official kwargs that change nothing here

    # ------------------------------------------------------------------ presets
    @staticmethod
    def full_512() -> "Cut3rConfig":
        """The configuration of the released checkpoint `cut3r_512_dpt_4_64.pth`."""
        return Cut3rConfig()

    @staticmethod
    def small_test() -> "Cut3rConfig":
        """The small configuration of the reference vectors (../shared/cut3r_reference/small_config.json)."""
        return Cut3rConfig(enc_embed_dim=64, enc_depth=2, enc_num_heads=4, dec_embed_dim=64, dec_depth=4,
                           dec_num_heads=2, state_size=12, img_size=(64, 64))

    # ------------------------------------------------------------------ official kwargs
    @classmethod
    def from_official(cls, kwargs: Mapping[str, Any]) -> "Cut3rConfig":
        """Build from the official `ARCroco3DStereoConfig(**kwargs)` keyword arguments."""
        kw = dict(kwargs)
        if "croco_kwargs" in kw:  # the 'config_with_defaults' layout nests the CroCo kwargs
            kw.update(kw.pop("croco_kwargs"))
        checks = {"head_type": "dpt", "state_pe": "2d"}
        for key, expected in checks.items():
            if key in kw and kw[key] != expected:
                raise ValueError(f"unsupported CUT3R option {key}={kw[key]!r} (only {expected!r} is implemented)")
        if kw.get("output_mode", "pts3d+pose") != "pts3d+pose":
            raise ValueError(f"unsupported output_mode={kw['output_mode']!r} (only 'pts3d+pose')")
        if not kw.get("pose_head", True):
            raise ValueError("unsupported CUT3R option pose_head=False (the pose head is required)")
        for key in ("depth_head", "pose_conf_head"):
            if kw.get(key, False):
                raise ValueError(f"unsupported CUT3R option {key}=True")
        pos_embed = str(kw.get("pos_embed", "RoPE100"))
        match = re.fullmatch(r"RoPE(\d+(?:\.\d+)?)", pos_embed)
        if match is None:
            raise ValueError(f"unsupported pos_embed={pos_embed!r} (only 'RoPE<base>')")
        img_size = kw.get("img_size", (512, 512))
        if isinstance(img_size, int):
            img_size = (img_size, img_size)
        used = {"head_type", "state_pe", "output_mode", "pose_head", "depth_head", "pose_conf_head",
                "pos_embed", "img_size", "depth_mode", "conf_mode", "pose_mode", "rgb_head", "norm_layer"}
        names = {"enc_embed_dim", "enc_depth", "enc_num_heads", "dec_embed_dim", "dec_depth", "dec_num_heads",
                 "state_size", "state_dec_num_heads", "local_mem_size", "ray_enc_depth", "patch_size", "mlp_ratio"}
        names |= {"ray_enc_num_heads", "dpt_feature_dim", "final_transform_depth", "norm_eps"}  # ours (fixed
        # in the official code) so that small test models can be described too
        values = {name: kw[name] for name in names if name in kw}
        if "dpt_layer_dims" in kw:
            values["dpt_layer_dims"] = tuple(int(d) for d in kw["dpt_layer_dims"])
            used.add("dpt_layer_dims")
        for name in ("mlp_ratio", "norm_eps"):
            if name in values:
                values[name] = float(values[name])
        extra = {k: v for k, v in kw.items() if k not in used | names}
        return cls(rope_base=float(match.group(1)), img_size=(int(img_size[0]), int(img_size[1])),
                   depth_mode=_mode(kw.get("depth_mode", ("exp", "-inf", "inf")), "depth_mode"),
                   conf_mode=_mode(kw.get("conf_mode", ("exp", 1, "inf")), "conf_mode"),
                   pose_mode=_mode(kw.get("pose_mode", ("exp", "-inf", "inf")), "pose_mode"),
                   rgb_head=bool(kw.get("rgb_head", False)), extra=extra, **values)

    @classmethod
    def from_model_string(cls, text: str) -> "Cut3rConfig":
        """Parse the checkpoint's `args.model` string, e.g. "ARCroco3DStereo(ARCroco3DStereoConfig(k=v, ...))".

        The string is parsed (never evaluated); `inf` names become floats.
        """
        match = re.search(r"ARCroco3DStereoConfig\((.*)\)\s*\)\s*$", text.strip(), re.S)
        if match is None:
            raise ValueError(f"not an ARCroco3DStereo model string: {text[:120]!r}")
        call = ast.parse(f"f({match.group(1)})", mode="eval").body
        assert isinstance(call, ast.Call)
        kwargs: dict[str, Any] = {}
        for keyword in call.keywords:
            if keyword.arg is None:
                raise ValueError("**kwargs in an ARCroco3DStereo model string are not supported")
            kwargs[keyword.arg] = _literal(keyword.value)
        return cls.from_official(kwargs)

    # ------------------------------------------------------------------ derived sizes
    @property
    def state_width(self) -> int:
        """Width of the 2D grid of state-token positions (odd widths are bumped to the next even one)."""
        width = int(self.state_size ** 0.5)
        return width + 1 if width % 2 == 1 else width

    def to_dict(self) -> dict:
        return asdict(self)


def _literal(node: ast.AST) -> Any:
    """Literal value of an AST node; the names inf/True/False/None and unary minus are allowed."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id == "inf":
            return math.inf
        return node.id
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_literal(node.operand)
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_literal(e) for e in node.elts)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):  # e.g. np.inf
        if node.attr == "inf":
            return math.inf
    if isinstance(node, ast.Call):  # e.g. float('inf')
        if isinstance(node.func, ast.Name) and node.func.id == "float" and len(node.args) == 1:
            return _as_float(_literal(node.args[0]))
    raise ValueError(f"unsupported expression in model string: {ast.dump(node)[:80]}")
