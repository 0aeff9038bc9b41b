"""FastSAM mask source (core/masks_fastsam.py) on small randomly initialised ultralytics models (no downloads):
masks equal ultralytics' own FastSAM output for the same checkpoint and image, checkpoint errors name the
parameter in one line, and a crafted pickle checkpoint never runs code."""
import copy
import math
import os
import sys

import numpy as np
import pytest
import torch

from moonseg3r_ros.core.config import MaskConfig, PipelineConfig
from moonseg3r_ros.core.masks import MaskError, filter_masks, make_mask_source
from moonseg3r_ros.core.model_files import missing_files
from moonseg3r_ros.core.types import Frame

from mask_network_inputs import TouchMarker, two_block_image  # test/mask_network_inputs.py

IMAGE_SIZE = 160


@pytest.fixture(scope="module")
def ultralytics():
    os.environ.setdefault("YOLO_OFFLINE", "1")
    return pytest.importorskip("ultralytics", reason="optional package ultralytics (ultralytics-opencv-headless) "
                                                     "is not installed: the FastSAM source cannot be tested")


def random_fastsam(ultralytics, scale="n", seed=0, head="seg"):
    """A YOLOv8-seg one-class model (FastSAM's architecture) whose random weights give varied masks and scores
    (ultralytics' own init gives vanishing activations: every box the whole image, scores ~0.01)."""
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel

    torch.manual_seed(seed)
    if head == "seg":
        model = SegmentationModel(f"yolov8{scale}-seg.yaml", nc=1, verbose=False)
    else:
        model = DetectionModel(f"yolov8{scale}.yaml", nc=1, verbose=False)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d) and module.weight.requires_grad:
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 1.6 / math.sqrt(fan_in))
        for branch in model.model[-1].cv3:  # class logits: moderate, so scores spread instead of saturating
            branch[-1].bias.zero_()
            branch[-1].weight.mul_(0.05)
    return model.eval()


def save_ultralytics_checkpoint(model, path, **extra):
    """The layout of a released FastSAM-s.pt: the whole model object pickled in half precision plus metadata."""
    torch.save({"model": copy.deepcopy(model).half(), "train_args": {"task": "segment", "imgsz": 1024},
                "date": "2023-06-22", "version": "8.0.120", **extra}, path)
    return str(path)


@pytest.fixture(scope="module")
def checkpoint(ultralytics, tmp_path_factory):
    return save_ultralytics_checkpoint(random_fastsam(ultralytics), tmp_path_factory.mktemp("fastsam") / "fs.pt")


def config_for(checkpoint, **kwargs):
    config = PipelineConfig()
    config.device = "cpu"
    config.masks = MaskConfig(source="fastsam", fastsam_checkpoint=checkpoint, fastsam_image_size=IMAGE_SIZE,
                              fastsam_conf=0.05, fastsam_iou=0.7, min_mask_area=0, max_masks=60, **kwargs)
    return config


def test_fastsam_masks_equal_the_library_output(ultralytics, checkpoint):
    from ultralytics import FastSAM

    image = two_block_image()
    config = config_for(checkpoint)
    ours = make_mask_source(config, torch.device("cpu")).generate(Frame(image, 0.0))
    # ultralytics' own path: its loader (a pickle load: fine for the file this test wrote) and its predict()
    result = FastSAM(checkpoint).predict(np.ascontiguousarray(image[..., ::-1]), imgsz=IMAGE_SIZE, conf=0.05,
                                         iou=0.7, max_det=300, retina_masks=True, device="cpu", verbose=False)[0]
    theirs = filter_masks((result.masks.data > 0.5).numpy(), result.boxes.conf.numpy(), 0, 60)
    assert ours.masks.shape == (len(theirs), 96, 128) and ours.masks.dtype == bool
    assert len(ours) >= 20  # the random model is informative: many masks of many sizes and scores
    assert len(np.unique(ours.masks.reshape(len(ours), -1).sum(axis=1))) >= 10
    assert np.ptp(ours.scores) > 0.05
    np.testing.assert_array_equal(ours.masks, theirs.masks)
    np.testing.assert_allclose(ours.scores, theirs.scores, atol=1e-6)


def test_fastsam_filters_by_area_and_count(ultralytics, checkpoint):
    image = two_block_image()
    every = make_mask_source(config_for(checkpoint), torch.device("cpu")).generate(Frame(image, 0.0))
    config = config_for(checkpoint)
    config.masks.min_mask_area, config.masks.max_masks = 500, 5
    few = make_mask_source(config, torch.device("cpu")).generate(Frame(image, 0.0))
    expected = filter_masks(every.masks, every.scores, 500, 5)
    assert 1 <= len(few) <= 5 and (few.masks.reshape(len(few), -1).sum(axis=1) >= 500).all()
    np.testing.assert_array_equal(few.masks, expected.masks)


def _error(config) -> str:
    with pytest.raises(MaskError) as info:
        make_mask_source(config, torch.device("cpu"))
    message = str(info.value)
    assert "\n" not in message and "masks.fastsam_checkpoint" in message
    return message


def test_fastsam_checkpoint_errors(ultralytics, checkpoint, tmp_path):
    assert "empty" in _error(config_for(""))
    assert "'masks.fastsam_checkpoint' is empty" in missing_files(config_for(""))
    assert "does not exist" in _error(config_for(str(tmp_path / "FastSAM-s.pt")))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    message = _error(config_for(str(garbage)))
    assert "refused" in message or "not a torch checkpoint" in message
    state_dict = tmp_path / "state_dict.pt"
    torch.save(random_fastsam(ultralytics).state_dict(), state_dict)
    assert "no ultralytics model" in _error(config_for(str(state_dict)))
    detector = save_ultralytics_checkpoint(random_fastsam(ultralytics, head="detect"), tmp_path / "yolov8n.pt")
    assert "not a FastSAM" in _error(config_for(detector))
    wrong = random_fastsam(ultralytics)
    wrong.yaml = {**wrong.yaml, "scale": "s"}  # weights of the n model, architecture of the s model
    wrong_path = save_ultralytics_checkpoint(wrong, tmp_path / "wrong.pt")
    assert "does not load into the FastSAM architecture" in _error(config_for(wrong_path))


@pytest.mark.parametrize("where", ["model", "train_args"])
def test_fastsam_crafted_pickle_checkpoint_never_runs_code(ultralytics, tmp_path, where):
    marker = tmp_path / "marker"
    evil = tmp_path / "FastSAM-s.pt"
    if where == "model":
        torch.save({"model": TouchMarker(marker)}, evil)
    else:
        save_ultralytics_checkpoint(random_fastsam(ultralytics), evil)
        checkpoint = torch.load(evil, weights_only=False)
        checkpoint["train_args"] = {"task": "segment", "payload": TouchMarker(marker)}
        torch.save(checkpoint, evil)
    message = _error(config_for(str(evil)))
    assert "refused" in message and "nothing from the file was run" in message
    assert not marker.exists()


def test_fastsam_checkpoint_of_ultralytics_8_0_loads(ultralytics, tmp_path):
    """ultralytics 8.0 (the era of the released FastSAM-s/-x.pt) set `Segment.detect = Detect.forward`: a method
    reference, pickled as builtins.getattr(Detect, 'forward'). It is read as a record, never looked up."""
    from ultralytics.nn.modules.head import Detect

    from moonseg3r_ros.core.masks_fastsam import load_fastsam

    model = random_fastsam(ultralytics)
    model.model[-1].detect = Detect.forward
    path = save_ultralytics_checkpoint(model, tmp_path / "FastSAM-s.pt")
    loaded = load_fastsam(path, torch.device("cpu"))
    expected = {k: v.half().float() for k, v in model.state_dict().items()}
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(loaded.state_dict()[k].float(), v) for k, v in expected.items())


class _GetattrOnARealClass:
    def __reduce__(self):
        import collections

        return getattr, (collections.OrderedDict, "fromkeys")


def test_getattr_outside_records_is_refused(ultralytics, tmp_path):
    path = tmp_path / "FastSAM-s.pt"
    torch.save({"model": _GetattrOnARealClass()}, path)
    message = _error(config_for(str(path)))
    assert "refused" in message and "getattr on something that is not a record" in message


def test_fastsam_without_ultralytics_says_how_to_install(monkeypatch, tmp_path):
    from moonseg3r_ros.core.masks_fastsam import import_ultralytics

    monkeypatch.setitem(sys.modules, "ultralytics", None)  # import fails as if the package were not installed
    with pytest.raises(MaskError, match="optional package ultralytics.*make setup"):
        import_ultralytics()
    config = config_for("")
    config.masks.source = "rgbd"  # the other sources never import it
    make_mask_source(config, torch.device("cpu"))
