"""Training of the refiner: data, gradients, memory plan, exact resume, weights file, cache, config, CLI."""
import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from moonseg3r_ros.core.config import PipelineConfig
from moonseg3r_ros.core.cut3r import Cut3r, Cut3rConfig
from moonseg3r_ros.core.features import ColorFeatures
from moonseg3r_ros.core.geometry import Cut3rGeometry, RecordedGeometry
from moonseg3r_ros.core.masks import GroundTruthMasks
from moonseg3r_ros.core.refiner_weights import (RefinerWeightsError, build_refiner_modules, feature_signature,
                                                load_refiner)
from moonseg3r_ros.data.synthetic import SceneSpec, generate_scene
from moonseg3r_ros.training.config import from_dict, load_config
from moonseg3r_ros.training.data import attach_lifter_inputs, build_records, load_cache, save_cache
from moonseg3r_ros.training.model import ModelConfig, Refiner, assignment_targets, plan_clip
from moonseg3r_ros.training.trainer import Trainer, lr_at

WIDTH, HEIGHT = 96, 72


def tiny_pipeline(**extra) -> dict:
    values = {"device": "cpu", "geometry.recorded_features": True, "geometry.feature_patch": 8,
              "masks.source": "ground_truth", "masks.min_mask_area": 20, "features.dim": 16,
              "features.color_patch": 4, "refinement.num_heads": 2, "refinement.num_layers": 2}
    values.update(extra)
    return values


@pytest.fixture(scope="module")
def scene():
    return generate_scene(SceneSpec(seed=3, num_frames=12, width=WIDTH, height=HEIGHT, num_objects=4,
                                    orbit_degrees=30))


@pytest.fixture(scope="module")
def records(scene):
    config = from_dict({"pipeline": tiny_pipeline()}).pipeline_config()
    sources = (RecordedGeometry(patch=8, with_features=True), GroundTruthMasks(min_area=20),
               ColorFeatures(4))
    return build_records(scene.frames, config, frame_stride=2, sources=sources)


def tiny_config(tmp_path, **optim) -> object:
    values = {"pipeline": tiny_pipeline(), "data": {"clip_length": 3, "clip_stride": 1},
              "model": {"pixel_hidden": 16}, "loss": {"points": 256},
              "optim": {"steps": 4, "lr": 1e-3, "warmup_steps": 1, **optim},
              "run": {"out_dir": str(tmp_path), "checkpoint_every": 2, "eval_ap": False, "progress": False,
                      "keep_checkpoints": 0}}
    return from_dict(values)


def fresh(records):
    """Copies of the records without the lifter inputs (each trainer attaches its own)."""
    import copy
    out = [copy.copy(r) for r in records]
    for r in out:
        r.pooled_2d = r.pooled_3d = r.centroids = r.positions = None
    return out


def test_records_hold_frozen_outputs_of_every_stride_frame(records):
    assert len(records) == 6  # frames 0, 2, ..., 10
    first = records[0]
    assert first.features_2d.shape == (4, HEIGHT // 4, WIDTH // 4)
    assert first.features_3d.shape == (4, HEIGHT // 8, WIDTH // 8)
    assert first.points_world.shape == (HEIGHT, WIDTH, 3) and first.valid.dtype == bool
    assert all(isinstance(r.features_2d, np.ndarray) for r in records)  # no tensors, no graph
    assert 3 <= len(first.masks) <= 8


def test_lift_from_cached_inputs_equals_the_pipeline_lifter(records):
    config = from_dict({"pipeline": tiny_pipeline()}).pipeline_config()
    model = Refiner(config, 4, 4, ModelConfig(pixel_hidden=16))
    record = attach_lifter_inputs(fresh(records)[1], model.lifter)
    expected = model.lifter(record.masks, torch.from_numpy(record.features_2d), torch.from_numpy(record.features_3d),
                            record.points_world, record.valid).queries
    torch.testing.assert_close(model.lift(record), expected)


def test_gradients_reach_only_eta_phi_psi_never_cut3r_or_the_backbone(scene):
    micro = dict(enc_embed_dim=32, enc_depth=1, enc_num_heads=2, dec_embed_dim=32, dec_depth=2, dec_num_heads=2,
                 state_size=16, state_dec_num_heads=2, local_mem_size=8, ray_enc_num_heads=2, dpt_feature_dim=16,
                 dpt_layer_dims=(8, 8, 8, 8), rgb_head=True, img_size=(64, 64))
    torch.manual_seed(0)
    cut3r = Cut3r(Cut3rConfig.from_official(micro)).eval()
    config = from_dict({"pipeline": tiny_pipeline(**{"geometry.source": "cut3r", "geometry.image_long_side": 64,
                                                     "geometry.min_confidence": 0.0,
                                                     "geometry.max_depth": 1e4})}).pipeline_config()

    class ConvBackbone(torch.nn.Module):  # a frozen 2D backbone with parameters
        out_channels = 6

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 6, 8, stride=8)

        def extract(self, image):
            return self.conv(torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255)[0]

    backbone = ConvBackbone()
    geometry = Cut3rGeometry(config.geometry, torch.device("cpu"), model=cut3r)
    frames = [scene.frames[i] for i in range(4)]
    records = build_records(frames, config, 1, sources=(geometry, GroundTruthMasks(min_area=20), backbone))
    assert len(records) >= 2 and records[0].state_attention is not None
    model = Refiner(config, 6, int(records[0].features_3d.shape[0]), ModelConfig(pixel_hidden=16))
    for record in records:
        attach_lifter_inputs(record, model.lifter)
    plans = plan_clip(records, config, 0.5)
    config_loss = from_dict({}).loss
    losses = model.clip_losses(records, plans, config_loss, torch.Generator().manual_seed(0))
    losses["total"].backward()
    assert all(p.grad is None for p in cut3r.parameters())
    assert all(p.grad is None for p in backbone.parameters())
    for part in (model.lifter, model.decoder, model.pixel_head):
        trained = [n for n, p in part.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
        assert trained, f"no gradient reached {type(part).__name__}"
    lifter_grads = {n for n, p in model.lifter.named_parameters() if p.grad is not None}
    assert {"semantic_proj.weight", "geometric_proj.weight", "position_proj.weight"} <= lifter_grads


def test_plan_assigns_masks_to_the_ids_of_earlier_frames_of_the_same_object(scene, records):
    config = from_dict({"pipeline": tiny_pipeline()}).pipeline_config()
    plans = plan_clip(records[:4], config, 0.5)
    assert plans[0].visible == [] and plans[0].targets == {}
    first_object = {}  # id -> GT object of the mask that created it
    frames = [scene.frames[2 * i] for i in range(4)]
    same, total = 0, 0
    for frame, record, plan in zip(frames, records[:4], plans):
        objects = [int(np.bincount(frame.instance_ids[m]).argmax()) for m in record.masks.masks]
        for m, instance_id in enumerate(plan.mask_ids.tolist()):
            if instance_id in first_object:
                total += 1
                same += first_object[instance_id] == objects[m]
            else:
                first_object[instance_id] = objects[m]
        for instance_id, members in plan.targets.items():
            assert instance_id in plan.visible
            assert all(plan.mask_ids[int(m)] == instance_id for m in members)
    assert total >= 6 and same == total  # ground-truth masks: every inherited id continues its own object


def test_association_targets_are_the_assigned_columns_and_the_loss_reaches_the_decoder(records):
    config = from_dict({"pipeline": tiny_pipeline()}).pipeline_config()
    plans = plan_clip(records[:4], config, 0.5)
    later = next(p for p in plans[1:] if p.targets)
    context_ids = list(later.visible)
    targets = assignment_targets(later, context_ids)
    for m, instance_id in enumerate(later.mask_ids.tolist()):
        expected = context_ids.index(instance_id) if instance_id in context_ids else -1
        assert int(targets[m]) == expected
    assert (targets >= 0).any()
    model = Refiner(config, 4, 4, ModelConfig(pixel_hidden=16))
    clip = [attach_lifter_inputs(r, model.lifter) for r in fresh(records)[:4]]
    off = model.clip_losses(clip, plans, from_dict({}).loss, torch.Generator().manual_seed(0))
    assert off["assoc"].item() == 0.0  # weight 0: not computed
    on = model.clip_losses(clip, plans, from_dict({"loss": {"assoc_weight": 1.0}}).loss,
                           torch.Generator().manual_seed(0))
    assert on["assoc"].item() > 0
    on["assoc"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters())


def test_association_loss_averages_only_frames_with_samples(records):
    """With `assoc_new_targets: false` a frame whose masks no retrieved id claims has no L_assoc sample; it must
    not count as a zero in the clip's mean."""
    config = from_dict({"pipeline": tiny_pipeline()}).pipeline_config()
    plans = plan_clip(records[:4], config, 0.5)
    last = max(k for k, p in enumerate(plans) if p.targets)
    assert any(p.targets for p in plans[:last])
    unclaimed = dataclasses.replace(plans[last], mask_ids=plans[last].mask_ids + 10**6, targets={})
    loss = from_dict({"loss": {"assoc_weight": 1.0, "assoc_new_targets": False}}).loss
    model = Refiner(config, 4, 4, ModelConfig(pixel_hidden=16))
    clip = [attach_lifter_inputs(r, model.lifter) for r in fresh(records)[:4]]
    with torch.no_grad():
        without = model.clip_losses(clip[:last + 1], plans[:last] + [unclaimed], loss, torch.Generator())
        before = model.clip_losses(clip[:last], plans[:last], loss, torch.Generator())
    assert without["assoc"].item() == pytest.approx(before["assoc"].item(), rel=1e-6)
    assert before["assoc"].item() > 0


def test_resume_gives_the_same_losses_and_weights(tmp_path, records):
    straight = Trainer(tiny_config(tmp_path / "a"), [fresh(records)], [])
    straight_result = straight.run(resume=False)
    first = Trainer(tiny_config(tmp_path / "b", steps=4), [fresh(records)], [])
    first.total_steps = 2  # stop halfway; the schedule still spans 4 steps
    first_result = first.run(resume=False)
    second = Trainer(tiny_config(tmp_path / "b"), [fresh(records)], [])
    assert second.resume() and second.step == 2
    second_result = second.run(resume=False)
    losses = [step["total"] for step in first_result.losses + second_result.losses]
    assert losses == [step["total"] for step in straight_result.losses]
    assert len(set(losses)) == 4  # the losses change from step to step
    for (name, a), b in zip(straight.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    rows = (tmp_path / "b" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("step")


def test_a_second_training_on_the_same_output_folder_is_refused(tmp_path, records):
    """It would resume from and overwrite the first one's checkpoints."""
    from moonseg3r_ros.training.checkpoint import OutputFolderBusy, exclusive_output_folder

    trainer = Trainer(tiny_config(tmp_path / "out", steps=1), [fresh(records)], [])
    with exclusive_output_folder(tmp_path / "out"):  # what a running training holds
        with pytest.raises(OutputFolderBusy, match=f"another training is writing .*out \\(process {os.getpid()}"):
            trainer.run(resume=False)
        assert not (tmp_path / "out" / "refiner.safetensors").exists()
    trainer.run(resume=False)  # released: the folder is free again
    assert (tmp_path / "out" / "refiner.safetensors").is_file()
    Trainer(tiny_config(tmp_path / "out", steps=1), [fresh(records)], []).run(resume=False)  # and after a run


def test_train_cli_refuses_a_busy_output_folder_before_preparing_data(tmp_path, capsys):
    from moonseg3r_ros.training.checkpoint import exclusive_output_folder
    from moonseg3r_ros.training.main import main

    config = tmp_path / "train.yaml"
    config.write_text("data: {train: ['%s/no_such_sequences/*']}\n" % tmp_path)
    with exclusive_output_folder(tmp_path / "out"):
        assert main(["--config", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    assert "another training is writing" in capsys.readouterr().err
    assert main(["--config", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 1  # free: the data error
    assert "another training" not in capsys.readouterr().err


def test_resume_without_rng_and_sampler_state_differs(tmp_path, records):
    """The exact-resume test above can fail: restoring the model and optimiser alone is not enough."""
    straight = Trainer(tiny_config(tmp_path / "a"), [fresh(records)], [])
    straight.run(resume=False)
    first = Trainer(tiny_config(tmp_path / "b"), [fresh(records)], [])
    first.total_steps = 2
    first.run(resume=False)
    second = Trainer(tiny_config(tmp_path / "b"), [fresh(records)], [])
    second.resume()
    second.generator.manual_seed(99)  # what forgetting the sampling generator's state would do
    second.run(resume=False)
    assert any(not torch.equal(a, b) for a, b in zip(straight.model.state_dict().values(),
                                                     second.model.state_dict().values()))


def test_learning_rate_is_cosine_from_lr_to_lr_min():
    optim = from_dict({"optim": {"steps": 11, "lr": 1e-3, "lr_min": 1e-4, "warmup_steps": 0}}).optim
    assert lr_at(0, optim) == pytest.approx(1e-3)
    assert lr_at(5, optim) == pytest.approx(0.5 * (1e-3 + 1e-4))
    assert lr_at(10, optim) == pytest.approx(1e-4)
    warm = from_dict({"optim": {"steps": 11, "lr": 1e-3, "warmup_steps": 2}}).optim
    assert lr_at(0, warm) == pytest.approx(0.5e-3) and lr_at(1, warm) == pytest.approx(1e-3)


def test_weights_file_loads_into_the_pipeline_modules_and_refuses_other_features(tmp_path, records):
    trainer = Trainer(tiny_config(tmp_path, steps=1), [fresh(records)], [])
    trainer.run(resume=False)
    path = tmp_path / "refiner.safetensors"
    weights = load_refiner(path)
    config = trainer.pipeline_config
    assert weights.meta["features"] == feature_signature(config)
    decoder, head, lifter_state = build_refiner_modules(weights, config, 4, torch.device("cpu"), str(path))
    assert decoder.mode == "trained"
    record = trainer.train_records[0][0]
    f2d, f3d, pos = trainer.model.frame_tensors(record)
    with torch.no_grad():
        torch.testing.assert_close(head(f2d, f3d, pos), trainer.model.pixel_head(f2d, f3d, pos))
        q = trainer.model.lift(record)
        torch.testing.assert_close(decoder(q, head(f2d, f3d, pos)).queries,
                                   trainer.model.decoder(q, trainer.model.pixel_head(f2d, f3d, pos)).queries)
    for name, value in trainer.model.lifter.state_dict().items():
        assert torch.equal(lifter_state[name], value)
    other = from_dict({"pipeline": tiny_pipeline(**{"features.color_patch": 8,
                                                    "geometry.recorded_features": False})}).pipeline_config()
    with pytest.raises(RefinerWeightsError, match="another feature configuration.*color_patch.*f3d"):
        build_refiner_modules(weights, other, 4, torch.device("cpu"), str(path))
    (tmp_path / "junk.safetensors").write_bytes(b"\x80\x04junk")
    with pytest.raises(RefinerWeightsError, match="cannot be read"):
        load_refiner(tmp_path / "junk.safetensors")
    with pytest.raises(RefinerWeightsError, match="do not exist"):
        load_refiner(tmp_path / "missing.safetensors")


def test_cache_round_trip_and_pickle_refused(tmp_path, records):
    path = tmp_path / "cache.npz"
    save_cache(path, records[:2])
    loaded = load_cache(path)
    assert len(loaded) == 2
    for a, b in zip(records[:2], loaded):
        for name in ("pose_c2w", "intrinsics", "points_world", "depth", "valid", "features_2d", "features_3d"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        np.testing.assert_array_equal(a.masks.masks, b.masks.masks)
    bad = tmp_path / "bad.npz"
    np.savez(bad, count=np.array(1), **{"0/pose_c2w": np.array([{"x": 1}], dtype=object)})
    with pytest.raises(ValueError, match="pickle"):
        load_cache(bad)


def test_two_writers_of_one_cache_file_both_succeed(tmp_path, records, monkeypatch):
    """Two trainings sharing a cache_dir: a second writer finishing while the first writes must not break it."""
    path = tmp_path / "cache.npz"
    real_savez = np.savez
    nested = []

    def savez_with_a_second_writer(target, **arrays):
        real_savez(target, **arrays)
        if not nested:  # the second writer saves and renames between the first one's write and rename
            nested.append(True)
            save_cache(path, records[:1])

    monkeypatch.setattr(np, "savez", savez_with_a_second_writer)
    save_cache(path, records[:2])
    assert len(load_cache(path)) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npz"]


def test_config_rejects_unknown_and_mistyped_keys(tmp_path):
    with pytest.raises(ValueError, match="unknown key.*lr_max"):
        from_dict({"optim": {"lr_max": 1.0}})
    with pytest.raises(ValueError, match="unknown section"):
        from_dict({"optimiser": {}})
    with pytest.raises(ValueError, match="integer"):
        from_dict({"optim": {"steps": "ten"}})
    with pytest.raises(KeyError, match="features.nope"):
        from_dict({"pipeline": {"features.nope": 1}})
    path = tmp_path / "train.yaml"
    path.write_text("loss:\n  dist_weight: 0.2\noptim:\n  steps: 7\n")
    config = load_config(path)
    assert config.loss.dist_weight == 0.2 and config.optim.steps == 7 and config.loss.seg_weight == 1.0


def test_overrides_replace_yaml_values_and_are_validated(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("loss:\n  dist_weight: 0.2\npipeline:\n  masks.source: rgbd\n")
    config = load_config(path, ["loss.dist_weight=0", "model.use_context=false", "pipeline.masks.source=ground_truth"])
    assert config.loss.dist_weight == 0.0 and config.model.use_context is False
    assert config.pipeline_config().masks.source == "ground_truth"
    assert load_config(path).loss.dist_weight == 0.2  # the file itself is unchanged
    with pytest.raises(ValueError, match="section.key=value"):
        load_config(path, ["dist_weight=0"])
    with pytest.raises(ValueError, match="unknown key"):
        load_config(path, ["loss.dist=0"])


def test_cli_trains_from_a_yaml_file(tmp_path, scene):
    from moonseg3r_ros.cli import main

    folder = scene.save(tmp_path / "scenes" / "tiny", image_format="png", progress=False)
    config = {"pipeline": tiny_pipeline(), "data": {"train": [str(folder)], "frame_stride": 3, "clip_length": 2,
                                                    "cache_dir": str(tmp_path / "cache")},
              "model": {"pixel_hidden": 16}, "optim": {"steps": 2},
              "run": {"out_dir": str(tmp_path / "out"), "eval_ap": False}}
    (tmp_path / "train.yaml").write_text(json.dumps(config))  # JSON is YAML
    assert main(["train", "--config", str(tmp_path / "train.yaml"), "--quiet"]) == 0
    assert load_refiner(tmp_path / "out" / "refiner.safetensors").meta["training"]["steps"] == 2
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    rows = (tmp_path / "out" / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[:5] == ["total", "seg", "dist", "xseg", "lr"] or "total" in rows[0]
    assert len(rows) == 3


def trained_pipeline(weights, scene, **settings):
    from moonseg3r_ros.core.config import from_flat
    from moonseg3r_ros.core.pipeline import MoonSeg3RPipeline

    flat = {**tiny_pipeline(), "refinement.weights": str(weights), "keyframe_interval": 2, **settings}
    pipeline = MoonSeg3RPipeline(from_flat(flat))
    seen = []
    associate = pipeline._associate

    def capture(masks, queries, *args):
        seen.append(queries.copy())
        return associate(masks, queries, *args)

    pipeline._associate = capture
    for frame in list(scene.frames)[:5]:
        pipeline.step(frame.image, frame.stamp, depth=frame.depth, intrinsics=frame.intrinsics,
                      pose_c2w=frame.pose_c2w, instance_ids=frame.instance_ids)
    return pipeline, seen


@pytest.fixture(scope="module")
def trained(tmp_path_factory, records):
    out = tmp_path_factory.mktemp("trained")
    trainer = Trainer(tiny_config(out, steps=2), [fresh(records)], [])
    trainer.run(resume=False)
    return trainer, out / "refiner.safetensors"


def test_pipeline_trained_mode_runs_eta_psi_phi_with_the_retrieved_context(scene, trained):
    trainer, weights = trained
    pipeline, seen = trained_pipeline(weights, scene)
    assert pipeline.refinement_mode == "trained" and pipeline.pixel_head is not None
    assert len(seen) == 3  # keyframes 0, 2, 4
    model, record = trainer.model.eval(), trainer.train_records[0][0]  # frame 0 = the first keyframe
    with torch.no_grad():
        f2d, f3d, positions = model.frame_tensors(record)
        expected = model.decoder(model.lift(record), model.pixel_head(f2d, f3d, positions)).queries
    np.testing.assert_allclose(seen[0], expected.numpy(), atol=1e-5)
    _, without_context = trained_pipeline(weights, scene, **{"memory.max_contextual_queries": 0})
    np.testing.assert_allclose(without_context[0], seen[0], atol=1e-6)  # no memory yet at the first keyframe
    assert not np.allclose(without_context[1], seen[1], atol=1e-4)  # later: the retrieved context changes q'


def test_pipeline_identity_mode_ignores_the_weights_and_other_features_are_refused(scene, trained):
    from moonseg3r_ros.core.config import from_flat
    from moonseg3r_ros.core.pipeline import MoonSeg3RPipeline

    _, weights = trained
    identity, seen_identity = trained_pipeline(weights, scene, **{"refinement.mode": "identity"})
    assert identity.refinement_mode == "identity" and identity.pixel_head is None
    _, seen_trained = trained_pipeline(weights, scene)
    assert seen_identity[0].shape == seen_trained[0].shape and not np.allclose(seen_identity[0], seen_trained[0])
    other = from_flat({**tiny_pipeline(), "geometry.recorded_features": False, "refinement.weights": str(weights)})
    with pytest.raises(RefinerWeightsError, match="f3d: trained 'recorded-normals-logdepth', configured 'none'"):
        MoonSeg3RPipeline(other)


def test_validation_losses_are_logged_before_and_after_training(tmp_path, records):
    trainer = Trainer(tiny_config(tmp_path, steps=6), [fresh(records[:4])], [fresh(records[2:])])
    result = trainer.run(resume=False)
    first, last = result.evaluations[0], result.evaluations[-1]
    assert first["step"] == 0 and last["step"] == 6
    for name in ("val_total", "val_seg", "val_dist", "val_xseg"):
        assert np.isfinite(first[name]) and np.isfinite(last[name])
    assert last["val_total"] < first["val_total"]
    rows = (tmp_path / "eval.csv").read_text().splitlines()
    assert rows[0].startswith("step,val_total") and rows[0].endswith("ap,ap50,ap25") and len(rows) == 3


def test_shipped_weights_are_found_only_for_the_features_they_were_trained_for():
    from moonseg3r_ros.core.refiner_weights import SHIPPED_DIR, shipped_weights_for

    shipped = sorted(SHIPPED_DIR.glob("*.safetensors"))
    assert shipped and all(p.stat().st_size < 10_000_000 for p in shipped)
    with_f3d = PipelineConfig()
    with_f3d.geometry.recorded_features = True
    path = shipped_weights_for(with_f3d)
    assert path.endswith("nodownload_f3d.safetensors")
    load_refiner(path)  # a valid refiner file
    assert shipped_weights_for(PipelineConfig()) == ""  # the default features (no F3d): none shipped
    other = PipelineConfig()
    other.geometry.recorded_features, other.features.dim = True, 32
    assert shipped_weights_for(other) == ""


def test_shipped_weights_were_trained_with_the_committed_yaml():
    """The reproduction command (docs/training.md) trains what ships: the file's recorded training config equals the
    YAML next to it, apart from output/cache paths and the progress bar."""
    from safetensors import safe_open

    from moonseg3r_ros.core.refiner_weights import META_KEY, SHIPPED_DIR
    from moonseg3r_ros.training.config import to_dict

    with safe_open(str(SHIPPED_DIR / "nodownload_f3d.safetensors"), "pt") as handle:
        recorded = json.loads(handle.metadata()[META_KEY])["training"]["config"]
    committed = to_dict(load_config(SHIPPED_DIR / "nodownload_f3d.yaml"))
    for config in (recorded, committed):
        config["data"].pop("cache_dir"), config["run"].pop("out_dir"), config["run"].pop("progress")
    assert json.loads(json.dumps(committed)) == recorded
    assert committed["pipeline"]["masks.source"] == "rgbd" and committed["data"]["train"] == ["data/tabletop_train/*"]


def test_cache_key_follows_the_code_of_the_frozen_outputs(tmp_path):
    """A changed mask or geometry source file changes the digest in the cache key; code the frozen outputs do not
    come from (the pipeline, the trainer) does not."""
    from moonseg3r_ros.training.data import frozen_code_digest

    for name in ("core/masks_rgbd.py", "core/geometry.py", "core/cut3r/model.py", "core/pipeline.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(f"# {name}\n")
    first = frozen_code_digest(tmp_path)
    (tmp_path / "core/pipeline.py").write_text("# changed\n")
    assert frozen_code_digest(tmp_path) == first
    (tmp_path / "core/masks_rgbd.py").write_text("# a new mask rule\n")
    second = frozen_code_digest(tmp_path)
    assert second != first
    (tmp_path / "core/cut3r/model.py").write_text("# changed\n")
    assert frozen_code_digest(tmp_path) != second
    assert len(frozen_code_digest()) == 64  # the package's own sources
