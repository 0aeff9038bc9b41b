"""Pipeline behaviour no other test covered: periodic pruning, configuration changes while running reaching the
parts that read them, lifter weights from the refinement file, CUT3R under float16/bfloat16 autocast on the CPU,
and load_map of a map saved with another MapConfig (today's behaviour, pinned)."""
import copy

import numpy as np
import pytest
import torch

from moonseg3r_ros.core.config import PipelineConfig
from moonseg3r_ros.core.map_files import MapFileError
from moonseg3r_ros.core.pipeline import MoonSeg3RPipeline
from test_cut3r_stream import MICRO  # the micro CUT3R configuration of the stream tests
from test_pipeline import _config as pipeline_config

K = np.array([[40.0, 0, 19.5], [0, 40.0, 14.5], [0, 0, 1]])


def _config(**top):
    """test_pipeline's configuration (ground-truth masks, every frame a keyframe, CPU), pruning below 10 points."""
    config = pipeline_config(**top)
    config.map.min_instance_points = 10
    return config


def _inputs(shift: int = 0):
    """A 30x40 view of a wall at 2 m: two squares (ids 1, 2: 25 and ~40 map voxels) and a 4x4 patch (id 3: 4)."""
    image = np.full((30, 40, 3), 100, np.uint8)
    ids = np.zeros((30, 40), np.int32)
    for iid, (rows, cols, colour) in {1: ((5, 15), (5 + shift, 15 + shift), (220, 20, 20)),
                                      2: ((15, 28), (22, 36), (20, 20, 220)),
                                      3: ((20, 24), (4, 8), (20, 200, 20))}.items():
        image[rows[0]:rows[1], cols[0]:cols[1]] = colour
        ids[rows[0]:rows[1], cols[0]:cols[1]] = iid
    depth = np.full((30, 40), 2.0, np.float32)
    depth[ids > 0] = 1.8
    return dict(depth=depth, intrinsics=K, pose_c2w=np.eye(4), instance_ids=ids), image


def _step(pipe, stamp: float, shift: int = 0):
    inputs, image = _inputs(shift)
    return pipe.step(image, stamp, **inputs)


def _alive(pipe) -> dict[str, list[int]]:
    return {"map": sorted(r.id for r in pipe.instance_map.instances()),
            "bank": sorted(pipe.bank.ids().tolist()), "memory": sorted(set(pipe.memory.ids().tolist()) - {0})}


# ---------------------------------------------------------------------------------------------- pruning
def test_small_instances_are_pruned_every_prune_interval_keyframes_from_map_bank_and_memory():
    pipe = MoonSeg3RPipeline(_config(prune_interval=3))
    for i in range(2):
        _step(pipe, 0.1 * i)
    assert _alive(pipe) == {"map": [1, 2, 3], "bank": [1, 2, 3], "memory": [1, 2, 3]}  # not yet: keyframe 2 of 3
    assert pipe.stats["instances_pruned"] == 0
    _step(pipe, 0.2)  # keyframe 3: the 4-voxel patch is below map.min_instance_points = 10
    assert _alive(pipe) == {"map": [1, 2], "bank": [1, 2], "memory": [1, 2]}
    assert pipe.stats["instances_pruned"] == 1
    assert 3 not in set(pipe.instance_map.instance_ids().tolist())
    xyz, _, ids = pipe.instance_map.points()
    assert len(xyz) == len(ids) and (ids == 0).sum() >= 4  # its voxels stay, unassigned


def test_prune_interval_zero_never_prunes():
    pipe = MoonSeg3RPipeline(_config(prune_interval=0))
    for i in range(4):
        _step(pipe, 0.1 * i)
    assert _alive(pipe)["map"] == [1, 2, 3] and pipe.stats["instances_pruned"] == 0


# ---------------------------------------------------------------------------------------------- runtime changes
def test_update_config_reaches_association_map_and_keyframe_selection():
    pipe = MoonSeg3RPipeline(_config(prune_interval=1))
    pipe.config.map.min_instance_points = 1
    first = _step(pipe, 0.0)
    assert sorted(first.new_instance_ids) == [1, 2, 3]
    changed = copy.deepcopy(pipe.config)
    # Recorded geometry has no state tokens: the score is cos(query) + box IoU <= 2, which must exceed this.
    changed.association.match_threshold_without_state = 2.0
    changed.map.min_instance_points = 10  # the next prune removes the 4-voxel patch
    changed.keyframe_interval = 2
    pipe.update_config(changed, ["association.match_threshold_without_state", "map.min_instance_points",
                                 "keyframe_interval"])
    second = _step(pipe, 0.1)  # frame 1: not a keyframe any more
    assert not second.is_keyframe
    third = _step(pipe, 0.2)
    assert third.is_keyframe and third.matched_instance_ids == [] and len(third.new_instance_ids) == 3
    assert 3 not in _alive(pipe)["map"] and pipe.stats["instances_pruned"] >= 1
    with pytest.raises(ValueError, match="not a pipeline configuration field"):
        pipe.update_config(changed, ["association.no_such_threshold"])


def test_without_update_config_the_same_frames_match():
    """The control of the test above: with the default threshold the third frame matches all three."""
    pipe = MoonSeg3RPipeline(_config(prune_interval=0))
    for i in range(3):
        result = _step(pipe, 0.1 * i)
    assert result.matched_instance_ids == [1, 2, 3]


# ---------------------------------------------------------------------------------------------- load_map
def test_load_map_saved_with_another_map_config_takes_its_layout_and_stays_shared(tmp_path):
    """A map saved with another MapConfig defines the layout: config.map takes the saved values in place and the
    loaded map shares it (so runtime threshold changes keep reaching it), as for a map saved with the same one."""
    other = MoonSeg3RPipeline(_config(prune_interval=0))
    other.config.map.voxel_size = 0.05
    _step(other, 0.0)
    other.instance_map.save(tmp_path / "coarse.npz")

    pipe = MoonSeg3RPipeline(_config(prune_interval=0))
    assert pipe.config.map.voxel_size == 0.02
    _step(pipe, 0.0)
    loaded = pipe.load_map(tmp_path / "coarse.npz")
    assert pipe.instance_map is loaded and loaded.config is pipe.config.map
    assert pipe.config.map.voxel_size == 0.05
    assert sorted(r.id for r in loaded.instances()) == [1, 2, 3]
    assert pipe.stats["frames"] == 0 and len(pipe.bank) == 0 and len(pipe.memory) == 0  # a new sequence
    changed = copy.deepcopy(pipe.config)
    changed.map.min_instance_points = 1000
    pipe.update_config(changed, ["map.min_instance_points"])
    assert loaded.config.min_instance_points == 1000  # runtime changes reach the loaded map
    with pytest.raises(MapFileError, match="not found"):
        pipe.load_map(tmp_path / "no_such_map.npz")
    assert pipe.instance_map is loaded and pipe.config.map.voxel_size == 0.05  # a failed load changes nothing


# ---------------------------------------------------------------------------------------------- CUT3R dtype
@pytest.fixture(scope="module")
def micro_cut3r():
    from moonseg3r_ros.core.cut3r import Cut3r, Cut3rConfig

    torch.manual_seed(0)
    return Cut3r(Cut3rConfig.from_official(MICRO)).eval()


def _cut3r_geometry(model, dtype_name: str, frames):
    from moonseg3r_ros.core import geometry as geo
    from moonseg3r_ros.core.types import Frame

    config = PipelineConfig().geometry
    config.source, config.cut3r_dtype, config.image_long_side = "cut3r", dtype_name, 64
    source = geo.Cut3rGeometry(config, torch.device("cpu"), geo._DTYPES[config.cut3r_dtype], model=copy.deepcopy(model))
    return [source.compute(Frame(image=f, stamp=0.1 * i, frame_index=i)) for i, f in enumerate(frames)]


@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16"])
def test_cut3r_dtype_runs_under_autocast_on_the_cpu(micro_cut3r, dtype_name):
    frames = np.random.default_rng(0).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    try:
        low = _cut3r_geometry(micro_cut3r, dtype_name, frames)
    except RuntimeError as err:  # an op without a CPU kernel for this dtype in this torch build
        pytest.skip(f"cut3r_dtype {dtype_name} is not supported on this CPU build of torch: {err}")
    full = _cut3r_geometry(micro_cut3r, "float32", frames)
    for a, b in zip(low, full):
        assert a.points_world.dtype == np.float32 and a.pose_c2w.dtype == np.float64
        assert np.isfinite(a.points_world).all() and np.isfinite(a.pose_c2w).all()
        scale = np.abs(b.points_world).max()
        err = np.abs(a.points_world - b.points_world).max()
        assert err < 0.1 * scale, (err, scale)  # the same result at the lower precision ...
    assert any(not np.array_equal(a.points_world, b.points_world) for a, b in zip(low, full))  # ... not float32


# ---------------------------------------------------------------------------------------------- lifter weights
def test_lifter_weights_come_from_the_refinement_file(tmp_path):
    """A refiner file (refinement.mode trained) holds eta, phi and psi: the lifter, built at the first keyframe,
    takes the file's "lifter.*" tensors (QueryDecoder.extras["lifter"]), not its seeded initialisation."""
    from moonseg3r_ros.core.pixel_head import PixelHead
    from moonseg3r_ros.core.refinement import QueryDecoder
    from moonseg3r_ros.core.refiner_weights import feature_signature, save_refiner

    def tiny(mode: str = "identity", weights: str = ""):
        config = _config(prune_interval=0)
        config.geometry.recorded_features, config.geometry.feature_patch = True, 8
        config.features.dim = 16
        config.refinement.num_heads, config.refinement.num_layers = 2, 2
        config.refinement.mode, config.refinement.weights = mode, weights
        return config

    plain = MoonSeg3RPipeline(tiny())
    _step(plain, 0.0)
    seeded = {k: v.clone() for k, v in plain.lifter.state_dict().items()}
    trained_lifter = copy.deepcopy(plain.lifter)
    with torch.no_grad():
        for p in trained_lifter.parameters():
            p.add_(0.25)
    dim, semantic, geometric = 16, plain.backbone.out_channels, plain.lifter.geometric_dim
    modules = {"lifter": trained_lifter, "decoder": QueryDecoder(dim, dim, 2, 2, run_untrained=True, seed=3),
               "pixel_head": PixelHead(semantic, geometric, dim, 8)}
    dims = {"dim": dim, "semantic_dim": semantic, "geometric_dim": geometric, "pixel_hidden": 8,
            "num_layers": 2, "num_heads": 2, "cosine_logits": True}
    path = save_refiner(tmp_path / "refiner.safetensors", modules, dims, feature_signature(tiny()))

    pipe = MoonSeg3RPipeline(tiny("trained", str(path)))
    assert pipe.refinement_mode == "trained"
    _step(pipe, 0.0)  # the lifter is built at the first keyframe, from the file's lifter tensors
    state = pipe.lifter.state_dict()
    assert set(state) == set(seeded)
    for name, value in trained_lifter.state_dict().items():
        assert torch.equal(state[name], value), name
    assert any(not torch.equal(state[name], seeded[name]) for name in seeded)  # not the seeded initialisation


def test_a_torch_refinement_file_gives_the_decoder_and_the_lifter_their_weights(tmp_path):
    """refinement.weights = torch file {"decoder": state_dict, "lifter": state_dict} (not a refiner file): the
    decoder loads its part (QueryDecoder.load_weights) and the lifter the other."""
    from moonseg3r_ros.core.refinement import QueryDecoder

    def tiny(weights: str = ""):
        config = _config(prune_interval=0)
        config.features.dim = 16
        config.refinement.num_heads, config.refinement.num_layers = 2, 2
        config.refinement.mode, config.refinement.weights = "trained", weights
        return config

    plain = MoonSeg3RPipeline(tiny())
    _step(plain, 0.0)
    trained_lifter = copy.deepcopy(plain.lifter)
    with torch.no_grad():
        for p in trained_lifter.parameters():
            p.add_(0.25)
    decoder = QueryDecoder(16, plain.backbone.out_channels, 2, 2, run_untrained=True, seed=3)
    path = tmp_path / "refinement.pt"
    torch.save({"decoder": decoder.state_dict(), "lifter": trained_lifter.state_dict()}, path)

    pipe = MoonSeg3RPipeline(tiny(str(path)))
    assert pipe.refinement_mode == "trained"
    for name, value in decoder.state_dict().items():
        assert torch.equal(pipe.decoder.state_dict()[name], value), name
    _step(pipe, 0.0)
    for name, value in trained_lifter.state_dict().items():
        assert torch.equal(pipe.lifter.state_dict()[name], value), name
