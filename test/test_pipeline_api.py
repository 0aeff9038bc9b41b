"""The pipeline's API used by the node: load_map, update_config, required_files / missing_files, close."""
import dataclasses

import numpy as np
import pytest

from moonseg3r_ros.core.config import PipelineConfig, from_flat
from moonseg3r_ros.core.instance_map import InstanceMap
from moonseg3r_ros.core.pipeline import MoonSeg3RPipeline

K = np.array([[40.0, 0, 19.5], [0, 40.0, 14.5], [0, 0, 1]])


def _config() -> PipelineConfig:
    return from_flat({"masks.source": "ground_truth", "masks.min_mask_area": 10, "masks.min_valid_points": 5,
                      "map.min_instance_points": 1, "keyframe_interval": 1, "device": "cpu"})


def _step(pipeline: MoonSeg3RPipeline, stamp: float) -> None:
    """One 30x40 view of a wall at 2 m with two squares (ids 1, 2)."""
    image = np.full((30, 40, 3), 100, np.uint8)
    ids = np.zeros((30, 40), np.int32)
    image[5:15, 5:15], ids[5:15, 5:15] = (220, 20, 20), 1
    image[15:28, 22:36], ids[15:28, 22:36] = (20, 20, 220), 2
    depth = np.where(ids > 0, 1.8, 2.0).astype(np.float32)
    result = pipeline.step(image, stamp, depth=depth, intrinsics=K, pose_c2w=np.eye(4), instance_ids=ids)
    assert not result.skipped, result.skipped_reason


@pytest.fixture(scope="module")
def saved_map(tmp_path_factory):
    """(path, the map as saved) after two keyframes."""
    pipeline = MoonSeg3RPipeline(_config())
    _step(pipeline, 1.0)
    _step(pipeline, 2.0)
    path = tmp_path_factory.mktemp("map") / "map.npz"
    pipeline.instance_map.save(path)
    assert len(pipeline.instance_map.instances()) == 2
    return path, pipeline.instance_map


def test_load_map_continues_a_new_sequence_from_the_saved_map(saved_map):
    path, saved = saved_map
    pipeline = MoonSeg3RPipeline(_config())
    _step(pipeline, 5.0)
    loaded = pipeline.load_map(path)
    assert pipeline.instance_map is loaded
    assert loaded.instances() == saved.instances() and len(loaded) == len(saved)
    assert pipeline.stats["frames"] == 0 and pipeline.stats["keyframes"] == 0
    assert loaded.config is pipeline.config.map  # same MapConfig: runtime changes keep applying
    _step(pipeline, 0.5)  # counters and stamps start over: an earlier stamp is a new sequence's first frame
    assert pipeline.stats["keyframes"] == 1


def test_load_map_saved_with_another_map_config_adopts_its_config(saved_map):
    path, saved = saved_map
    config = _config()
    config.map.voxel_size, config.map.max_point_weight = 0.05, 7
    pipeline = MoonSeg3RPipeline(config)
    loaded = pipeline.load_map(path)
    assert loaded.config is pipeline.config.map  # one MapConfig: what the pipeline reports is what the map runs
    assert pipeline.config.map.voxel_size == saved.config.voxel_size == 0.02
    assert pipeline.config.map.max_point_weight == saved.config.max_point_weight == 100
    assert loaded.instances() == saved.instances()


def test_load_map_of_a_missing_file_raises_and_keeps_the_map(tmp_path):
    pipeline = MoonSeg3RPipeline(_config())
    _step(pipeline, 1.0)
    before = pipeline.instance_map
    with pytest.raises(Exception, match="missing.npz"):
        pipeline.load_map(tmp_path / "missing.npz")
    assert pipeline.instance_map is before and pipeline.stats["keyframes"] == 1


def test_update_config_sets_the_changed_fields_where_the_parts_read_them():
    pipeline = MoonSeg3RPipeline(_config())
    changed = dataclasses.replace(pipeline.config)
    changed.map = dataclasses.replace(pipeline.config.map, min_instance_points=77, stale_after_s=3.0)
    changed.association = dataclasses.replace(pipeline.config.association, match_threshold=0.25)
    pipeline.update_config(changed, ["map.min_instance_points", "association.match_threshold"])
    assert pipeline.instance_map.config.min_instance_points == 77  # the map shares the section object
    assert pipeline.config.association.match_threshold == 0.25
    assert pipeline.config.map.stale_after_s == 0.0  # not named: unchanged
    with pytest.raises(ValueError, match="map.no_such_field"):
        pipeline.update_config(changed, ["map.no_such_field"])


def test_required_and_missing_files(tmp_path):
    config = _config()
    assert MoonSeg3RPipeline.required_files(config) == [] and MoonSeg3RPipeline.missing_files(config) == ""
    config.geometry.source = "cut3r"
    config.features.backbone = "dino"
    config.features.weights = str(tmp_path / "dino")
    config.refinement.weights = str(tmp_path / "decoder.pt")
    (tmp_path / "decoder.pt").write_bytes(b"x")
    assert MoonSeg3RPipeline.required_files(config) == [
        ("geometry.cut3r_checkpoint", ""), ("features.weights", str(tmp_path / "dino")),
        ("refinement.weights", str(tmp_path / "decoder.pt"))]
    message = MoonSeg3RPipeline.missing_files(config)
    assert message == (f"'geometry.cut3r_checkpoint' is empty but required by this configuration; "
                       f"'features.weights' = '{tmp_path / 'dino'}' does not exist")
    config.masks.source = "precomputed"
    assert "'masks.precomputed_dir' is empty" in MoonSeg3RPipeline.missing_files(config)


def test_close_frees_the_models_and_keeps_the_map_readable():
    pipeline = MoonSeg3RPipeline(_config())
    _step(pipeline, 1.0)
    pipeline.close()
    assert pipeline.decoder is None and pipeline.lifter is None
    assert isinstance(pipeline.instance_map, InstanceMap) and len(pipeline.instance_map.instances()) == 2


def test_keyframe_networks_run_on_one_torch_thread_on_cpu_and_the_setting_is_restored():
    """Lifter/decoder run single-threaded (no OpenMP hand-off stalls on a loaded machine); the torch thread count
    outside the keyframe stage, where CUT3R runs, is left as it was."""
    import torch

    pipeline = MoonSeg3RPipeline(_config())
    seen = []
    decoder_forward = pipeline.decoder.forward
    pipeline.decoder.forward = lambda *a, **k: (seen.append(torch.get_num_threads()), decoder_forward(*a, **k))[1]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _step(pipeline, 1.0)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
