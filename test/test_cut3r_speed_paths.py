"""The fast paths of our CUT3R (issue 14) compute what the plain formulas compute: RoPE2D against a per-pair
rotation written out, with its table cache following new positions; the DPT fusion block's 1x1 conv moved
before the upsampling; channels-last conv weights leave values and names unchanged; the side-by-side bench."""
import math
import re
import subprocess

import pytest
import torch
import torch.nn.functional as F

from moonseg3r_ros.core.cut3r.modeling.dpt_head import DPTAdapter, FusionBlock
from moonseg3r_ros.core.cut3r.modeling.rope import RoPE2D
from moonseg3r_ros.tools import bench_cut3r


def _rope_by_pairs(x, positions, base=100.0):
    """...xBxHxNxD -> rotated, one (c, c + D/4) pair of each half at a time (float64)."""
    x = x.double()
    out = x.clone()
    d = x.shape[-1]
    quarter = d // 4
    for half, axis in ((0, 0), (1, 1)):
        pos = positions[..., axis].double()[:, None, :]  # Bx1xN
        for j in range(quarter):
            angle = pos / base ** (j / quarter)
            a, b = half * d // 2 + j, half * d // 2 + j + quarter
            u, v = x[..., a], x[..., b]
            out[..., a] = u * torch.cos(angle) - v * torch.sin(angle)
            out[..., b] = v * torch.cos(angle) + u * torch.sin(angle)
    return out


def _positions(rows, cols, offset=0):
    grid = torch.cartesian_prod(torch.arange(rows), torch.arange(cols)) + offset
    return torch.cat([torch.full((1, 2), -1), grid])[None]  # 1x(1+N)x2, a pose token at (-1, -1)


def test_rope_matches_the_pairwise_rotation_and_follows_new_positions():
    rope = RoPE2D(100.0)
    generator = torch.Generator().manual_seed(0)
    pos = _positions(3, 4)
    qk = torch.randn(2, 1, 2, pos.shape[1], 16, generator=generator)  # q and k stacked, 2 heads, width 16
    out = rope(qk, pos)
    assert out.shape == qk.shape and out.dtype == torch.float32
    assert torch.allclose(out.double(), _rope_by_pairs(qk, pos), atol=1e-6)
    assert torch.equal(rope(qk[1], pos), out[1])  # one tensor or q/k stacked: the same numbers
    moved = _positions(3, 4, offset=5)  # same shape, other values: the cached tables must not be reused
    assert torch.allclose(rope(qk, moved).double(), _rope_by_pairs(qk, moved), atol=1e-5)
    pos[0, 3] = torch.tensor([7, 2])  # the same tensor changed in place
    assert torch.allclose(rope(qk, pos).double(), _rope_by_pairs(qk, pos), atol=1e-5)
    assert not torch.allclose(rope(qk, pos), out)


def test_rope_fp16_storage_rounds_input_and_output():
    rope = RoPE2D(100.0, storage_dtype=torch.float16)
    pos = _positions(2, 3)
    x = torch.randn(1, 2, pos.shape[1], 8, generator=torch.Generator().manual_seed(1)) * 3
    expected = _rope_by_pairs(x.half().float(), pos).half().float()
    assert torch.allclose(rope(x, pos), expected, atol=2e-3, rtol=0)
    assert torch.equal(rope(x, pos), rope(x, pos).half().float())  # stored in fp16


def test_fusion_block_conv_before_upsampling_equals_the_official_order():
    torch.manual_seed(0)
    block = FusionBlock(8).eval()
    x, skip = torch.randn(1, 8, 5, 7), torch.randn(1, 8, 5, 7)
    with torch.no_grad():
        official = block.out_conv(F.interpolate(block.resConfUnit2(x + block.resConfUnit1(skip)), scale_factor=2,
                                                mode="bilinear", align_corners=True))
        ours = block(x, skip)
    assert ours.shape == (1, 8, 10, 14)
    assert torch.allclose(ours, official, atol=1e-5, rtol=1e-5)


def test_dpt_channels_last_weights_keep_values_and_outputs():
    torch.manual_seed(0)
    adapter = DPTAdapter((16, 8, 8, 8), 4, layer_dims=(4, 8, 12, 16), feature_dim=8, last_dim=4).eval()
    before = {name: t.clone() for name, t in adapter.state_dict().items()}
    tokens = [torch.randn(1, 6, c) for c in (16, 8, 8, 8)]
    with torch.no_grad():
        first = adapter(tokens, (2, 3))
    weight = adapter.scratch.refinenet1.resConfUnit1.conv1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    after = adapter.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    adapter.load_state_dict(before, assign=True)  # e.g. a checkpoint: contiguous (NCHW) weights again
    assert adapter.scratch.refinenet1.resConfUnit1.conv1.weight.is_contiguous()
    with torch.no_grad():
        again = adapter(tokens, (2, 3))
    assert adapter.scratch.refinenet1.resConfUnit1.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert first.shape == (1, 4, 32, 48) and torch.allclose(first, again, atol=1e-6)
    assert math.isfinite(first.abs().sum().item())


def test_bench_side_by_side_with_a_git_revision(capsys):
    if subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("not a git work tree")
    assert bench_cut3r.main(["--config", "small", "--device", "cpu", "--frames", "2", "--warmup", "1",
                             "--height", "32", "--width", "32", "--threads", "1", "--before", "HEAD"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^current: wall ms/frame median [\d.]+ .*CPU ms/frame median [\d.]+", out, re.M)
    assert re.search(r"^before: wall ms/frame median [\d.]+", out, re.M)
    ratio = re.search(r"current / before \(median wall\): ([\d.]+); max \|output difference\| (\S+);", out)
    assert ratio and float(ratio.group(1)) > 0 and float(ratio.group(2).rstrip(";")) < 1e-4
    assert out.count("  frame ") == 3


def test_bench_side_by_side_of_two_dtypes(capsys):
    assert bench_cut3r.main(["--config", "small", "--device", "cpu", "--frames", "2", "--warmup", "0",
                             "--height", "32", "--width", "32", "--threads", "1", "--against-dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "current code, dtype float32 vs bfloat16" in out
    assert re.search(r"^float32: wall ms/frame median [\d.]+", out, re.M)
    assert re.search(r"^bfloat16: wall ms/frame median [\d.]+", out, re.M)
    assert re.search(r"float32 / bfloat16 \(median wall\): [\d.]+; max \|output difference\| \S+", out)
    with pytest.raises(SystemExit):
        bench_cut3r.main(["--against-dtype", "float32"])  # the same dtype twice


def test_bench_before_rejects_an_unknown_revision(capsys):
    assert bench_cut3r.main(["--config", "small", "--device", "cpu", "--frames", "1", "--height", "32",
                             "--width", "32", "--before", "no-such-revision-xyz"]) == 2
    assert "error:" in capsys.readouterr().err
