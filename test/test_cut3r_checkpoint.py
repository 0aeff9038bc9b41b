"""CUT3R checkpoint loading: the official layout (dict with `model` and pickled `args`), plain state_dicts,
`module.` prefixes, safetensors, and the error paths (missing file, wrong architecture, truncated file)."""
import argparse

import pytest
import torch

from moonseg3r_ros.core.cut3r import CheckpointError, Cut3r, Cut3rConfig, load_checkpoint, read_checkpoint

MICRO_KWARGS = dict(enc_embed_dim=32, enc_depth=1, enc_num_heads=2, dec_embed_dim=32, dec_depth=4, dec_num_heads=2,
                    state_size=4, state_dec_num_heads=2, local_mem_size=8, ray_enc_num_heads=2, dpt_feature_dim=16,
                    dpt_layer_dims=(8, 8, 8, 8), rgb_head=True, img_size=(64, 64))
MODEL_STRING = ("ARCroco3DStereo(ARCroco3DStereoConfig(state_size=4, state_pe='2d', pos_embed='RoPE100', "
                "rgb_head=True, pose_head=True, head_type='dpt', output_mode='pts3d+pose', "
                "depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), pose_mode=('exp', -inf, inf), "
                "enc_embed_dim=32, enc_depth=1, enc_num_heads=2, dec_embed_dim=32, dec_depth=4, dec_num_heads=2, "
                "state_dec_num_heads=2, local_mem_size=8, ray_enc_num_heads=2, dpt_feature_dim=16, "
                "dpt_layer_dims=(8, 8, 8, 8), img_size=(64, 64), landscape_only=False))")


class ConfigNode:
    """A value node of a structured training config (as OmegaConf keeps them)."""

    def __init__(self, value):
        self._val, self._parent = value, None


class HydraLikeConfig:
    """A training-args object of a class the loader cannot (and must not) import, laid out as OmegaConf's
    DictConfig pickles: attributes holding nested node objects and type references, no calls."""

    def __init__(self, **values):
        self._metadata = {"ref_type": object, "key_type": str}
        self._content = {key: ConfigNode(value) for key, value in values.items()}


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    config = Cut3rConfig.from_official(MICRO_KWARGS)
    return config, Cut3r(config).eval()


@pytest.fixture(scope="module")
def frames():
    return torch.rand(2, 1, 3, 32, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1


def _poses(model, frames):
    model.reset()
    return torch.cat([model.step(f)["camera_pose"] for f in frames])


def test_model_string_parses_to_micro_config(micro):
    assert Cut3rConfig.from_model_string(MODEL_STRING) == micro[0]


@pytest.mark.parametrize("args", [argparse.Namespace(model=MODEL_STRING, lr=1e-4),
                                  HydraLikeConfig(model=MODEL_STRING, seed=0)])
def test_official_layout_loads_with_config_from_args(tmp_path, micro, frames, args):
    config, model = micro
    path = tmp_path / "cut3r_official.pth"
    torch.save({"model": model.state_dict(), "args": args, "epoch": 3}, path)
    state, model_string = read_checkpoint(path)
    assert model_string == MODEL_STRING and len(state) == len(model.state_dict())
    loaded = load_checkpoint(path)  # config from args.model
    assert loaded.config == config
    torch.testing.assert_close(_poses(loaded, frames), _poses(model, frames), rtol=1e-5, atol=1e-6)


def test_plain_state_dict_with_module_prefix_and_without_state_decoder(tmp_path, micro, frames):
    config, model = micro
    # official convention: a checkpoint without dec_blocks_state.* gets copies of dec_blocks.*
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("dec_blocks_state.")}
    path = tmp_path / "plain.pt"
    torch.save({"module." + k: v for k, v in state.items()}, path)
    loaded = load_checkpoint(path, config)
    for key, value in loaded.state_dict().items():
        if key.startswith("dec_blocks_state."):
            assert torch.equal(value, model.state_dict()["dec_blocks." + key[len("dec_blocks_state."):]])


def test_safetensors_without_alias_keys(tmp_path, micro, frames):
    from safetensors.torch import save_file
    config, model = micro
    state = {k: v.contiguous() for k, v in model.state_dict().items() if ".scratch.layer_rn." not in k}
    path = tmp_path / "cut3r.safetensors"
    save_file(state, str(path))
    loaded = load_checkpoint(path, config, device="cpu", dtype=torch.float32)
    torch.testing.assert_close(_poses(loaded, frames), _poses(model, frames), rtol=1e-5, atol=1e-6)
    head = loaded.downstream_head.dpt_self.scratch
    assert head.layer_rn[0].weight is head.layer1_rn.weight


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="CUT3R checkpoint not found"):
        load_checkpoint(tmp_path / "cut3r_512_dpt_4_64.pth")


def test_wrong_architecture_names_first_mismatched_keys(tmp_path, micro):
    config, model = micro
    path = tmp_path / "micro.pth"
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(model=MODEL_STRING)}, path)
    with pytest.raises(CheckpointError, match=r"shape mismatches, first: pose_token: checkpoint \(1, 1, 32\) vs "
                                              r"model \(1, 1, 768\)"):
        load_checkpoint(path, Cut3rConfig.full_512())  # built on the meta device: no 3 GB allocated
    state = dict(model.state_dict())
    state.pop("enc_norm.weight")
    state["extra.head.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="missing keys, first: enc_norm.weight") as info:
        load_checkpoint(path, config)
    assert "unexpected keys, first: extra.head.weight" in str(info.value)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file_is_a_clear_error(tmp_path, micro, suffix):
    config, model = micro
    path = tmp_path / f"cut3r{suffix}"
    if suffix == ".pth":
        torch.save({"model": model.state_dict(), "args": argparse.Namespace(model=MODEL_STRING)}, path)
    else:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in model.state_dict().items() if "layer_rn." not in k}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path, config)


def test_not_a_state_dict_is_a_clear_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"weights": [1, 2, 3]}, path)
    with pytest.raises(CheckpointError, match="holds no state_dict"):
        load_checkpoint(path)
