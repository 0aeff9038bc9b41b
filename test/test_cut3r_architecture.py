"""CUT3R architecture: parameter names and shapes equal the released checkpoint's manifest (full size, on the
meta device), the config parser accepts the official kwargs, and the small config matches its reference."""
import json
import math
from pathlib import Path

import pytest
import torch

from moonseg3r_ros.core.cut3r import Cut3r, Cut3rConfig

REFERENCE = Path(__file__).resolve().parent / "data" / "cut3r_reference"  # a copy of ../shared's, in the repo
MANIFEST = REFERENCE / "state_dict_manifest_512_dpt.json"


@pytest.fixture(scope="module")
def manifest():
    if not MANIFEST.exists():
        pytest.skip(f"reference data not found at {MANIFEST}")
    return json.loads(MANIFEST.read_text())


def _meta_model(config):
    with torch.device("meta"):
        return Cut3r(config)


def test_full_size_state_dict_equals_manifest(manifest):
    model = _meta_model(Cut3rConfig.from_official(manifest["config"]))
    state = model.state_dict()
    ours = [(name, list(t.shape), str(t.dtype).replace("torch.", "")) for name, t in state.items()]
    theirs = [tuple(entry) for entry in manifest["params"]]
    assert len(ours) == manifest["num_tensors"] == 1248
    assert [o[0] for o in ours] == [t[0] for t in theirs]  # same names, same order
    assert [tuple(o) for o in ours] == [(t[0], list(t[1]), t[2]) for t in theirs]
    assert sum(p.numel() for p in model.parameters()) == manifest["num_params"] == 793_307_858
    assert sum(t.numel() for t in state.values()) == manifest["num_state_dict_numel_incl_aliases"]
    assert list(model.buffers()) == []


def test_full_size_aliases_share_storage(manifest):
    model = _meta_model(Cut3rConfig.full_512())
    params = dict(model.named_parameters(remove_duplicate=False))
    for alias, canonical in manifest["state_dict_aliases"].items():
        assert params[alias] is params[canonical]


def test_full_size_loads_strict_from_manifest_shapes(manifest):
    model = _meta_model(Cut3rConfig.full_512())
    fake = {name: torch.empty(shape, device="meta") for name, shape, _ in manifest["params"]}
    result = model.load_state_dict(fake, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_parameter_count_by_module(manifest):
    model = _meta_model(Cut3rConfig.full_512())
    counts = {}  # the manifest counts the alias keys too
    for name, param in model.named_parameters(remove_duplicate=False):
        parts = name.split(".")
        key = ".".join(parts[:2]) if parts[0] == "downstream_head" else parts[0]
        counts[key] = counts.get(key, 0) + param.numel()
    assert counts == manifest["param_count_by_top_level_module"]


def test_config_from_official_kwargs(manifest):
    config = Cut3rConfig.from_official(manifest["config"])
    assert config == Cut3rConfig.full_512()
    assert config.state_dec_num_heads == 16 and config.dec_num_heads == 12
    assert config.depth_mode == ("exp", -math.inf, math.inf) and config.conf_mode == ("exp", 1.0, math.inf)
    assert config.state_width == 28
    assert Cut3rConfig.from_official(manifest["config_with_defaults"]) == config
    assert Cut3rConfig.small_test().state_width == 4


def test_config_from_checkpoint_model_string(manifest):
    text = manifest["source"]["yaml_model_string"]
    assert Cut3rConfig.from_model_string(text) == Cut3rConfig.full_512()
    assert Cut3rConfig.from_model_string(manifest["source"]["string_as_evaluated_by_load_model"]) == \
        Cut3rConfig.full_512()


@pytest.mark.parametrize("bad", [{"head_type": "linear"}, {"pose_head": False}, {"pos_embed": "cosine"},
                                 {"state_pe": "1d"}, {"output_mode": "pts3d"}])
def test_config_rejects_unsupported_options(manifest, bad):
    kwargs = dict(manifest["config"], **bad)
    with pytest.raises(ValueError, match="unsupported"):
        Cut3rConfig.from_official(kwargs)


def test_small_config_matches_reference():
    meta_path = REFERENCE / "small_config.json"
    if not meta_path.exists():
        pytest.skip("reference data not found")
    meta = json.loads(meta_path.read_text())
    config = Cut3rConfig.from_official(meta["config"])
    assert config == Cut3rConfig.small_test()
    model = _meta_model(config)
    state = model.state_dict()
    assert len(state) == meta["num_state_dict_entries"]
    assert sum(p.numel() for p in model.parameters()) == meta["num_params"]
    for name, info in meta["tensor_checksums"].items():
        assert list(state[name].shape) == info["shape"], name
