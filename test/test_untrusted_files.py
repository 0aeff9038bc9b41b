"""Files a user was handed never run code: crafted checkpoints (zip and legacy torch formats, direct and nested
reducers), weights, masks and maps whose payload would create a marker file; every loader must refuse them
with an error that says what was refused, and the marker must never exist. Plain-data files still load."""
import argparse
import builtins
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from moonseg3r_ros.core.untrusted_files import PickledRecord, RefusedFileError, load_npz, load_torch_file


# ------------------------------------------------------------------------------------------- payloads
class DirectSystem:
    """os.system(command) as one reducer."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class DottedName:
    """torch._utils._import_dotted_name('os.system'): what the issue's checkpoint used."""

    def __reduce__(self):
        return torch._utils._import_dotted_name, ("os.system",)

    def __call__(self, *args):  # pickle wants a callable as a reducer's function
        raise AssertionError("never called while pickling")


class NestedDotted(DirectSystem):
    """(_import_dotted_name('os.system'))(command): a reducer whose function is itself a reducer."""

    def __reduce__(self):
        return DottedName(), (self.command,)


class ImportOs:
    def __reduce__(self):
        return builtins.__import__, ("os",)

    def __call__(self, *args):
        raise AssertionError("never called while pickling")


class GetattrSystem:
    def __reduce__(self):
        return getattr, (ImportOs(), "system")

    def __call__(self, *args):
        raise AssertionError("never called while pickling")


class NestedGetattr(DirectSystem):
    """getattr(__import__('os'), 'system')(command): three reducers deep."""

    def __reduce__(self):
        return GetattrSystem(), (self.command,)


class Subprocess(DirectSystem):
    def __reduce__(self):
        return subprocess.call, (["touch", self.command.split()[-1]],)


class Exec(DirectSystem):
    def __reduce__(self):
        return builtins.exec, (f"open({self.command.split()[-1]!r}, 'w').close()",)


PAYLOADS = [DirectSystem, NestedDotted, NestedGetattr, Subprocess, Exec]


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "marker"
    yield path
    assert not path.exists(), "a payload ran"


def _crafted(tmp_path, marker, payload, legacy, layout="official"):
    """A torch.save file holding the payload; `official` puts it in the args of a real-looking checkpoint."""
    path = tmp_path / f"crafted_{payload.__name__}_{'legacy' if legacy else 'zip'}.pth"
    bomb = payload(f"touch {marker}")
    obj = {"model": {"w": torch.zeros(2)}, "args": bomb} if layout == "official" else {"w": torch.zeros(2), "x": bomb}
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def test_the_payloads_work_when_unpickled_unsafely(tmp_path, marker):
    """Control: the crafted file really runs its command under a plain unpickler (so refusals mean something)."""
    path = _crafted(tmp_path, marker, NestedDotted, legacy=False)
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()


# ------------------------------------------------------------------------------------------- torch files
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.__name__)
def test_load_torch_file_refuses_every_payload(tmp_path, marker, payload, legacy):
    path = _crafted(tmp_path, marker, payload, legacy)
    with pytest.raises(RefusedFileError, match=r"refused to read .*(calls|names) \S+.*nothing from the file was run"):
        load_torch_file(path)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("payload", [NestedDotted, NestedGetattr, DirectSystem], ids=lambda p: p.__name__)
def test_cut3r_checkpoint_refuses_payloads(tmp_path, marker, payload, legacy):
    from moonseg3r_ros.core.cut3r import CheckpointError, load_checkpoint, read_checkpoint

    path = _crafted(tmp_path, marker, payload, legacy)
    with pytest.raises(CheckpointError, match="refused to read") as info:
        read_checkpoint(path)
    assert "truncated or corrupt" not in str(info.value) and "holds no state_dict" not in str(info.value)
    with pytest.raises(CheckpointError, match="refused to read"):
        load_checkpoint(path)


def test_refused_call_is_named(tmp_path, marker):
    path = _crafted(tmp_path, marker, NestedDotted, legacy=False)
    with pytest.raises(RefusedFileError, match=r"calls torch\._utils\._import_dotted_name"):
        load_torch_file(path)
    path = _crafted(tmp_path, marker, DirectSystem, legacy=True)
    with pytest.raises(RefusedFileError, match=r"names posix\.system \(module posix is never allowed\)"):
        load_torch_file(path)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_sam_checkpoint_refuses_payloads(tmp_path, marker, legacy):
    pytest.importorskip("segment_anything")
    from moonseg3r_ros.core.masks import MaskError, build_sam

    path = _crafted(tmp_path, marker, NestedGetattr, legacy, layout="plain")
    with pytest.raises(MaskError, match="refused to read .*calls"):
        build_sam("vit_b", str(path), torch.device("cpu"))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_refinement_weights_refuse_payloads(tmp_path, marker, legacy):
    from moonseg3r_ros.core.refinement import QueryDecoder, RefinementError

    path = _crafted(tmp_path, marker, NestedDotted, legacy, layout="plain")
    with pytest.raises(RefinementError, match="refused to read .*calls torch._utils._import_dotted_name"):
        QueryDecoder(dim=16, feature_dim=8, num_layers=1, num_heads=4, weights=str(path))


def test_dino_folder_with_a_pickle_payload_is_refused(tmp_path, marker):
    transformers = pytest.importorskip("transformers")
    from moonseg3r_ros.core.features import FeatureError, load_dino

    config = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64, patch_size=8, image_size=32)
    folder = tmp_path / "dino"
    transformers.Dinov2Model(config).save_pretrained(folder, safe_serialization=False)
    torch.save({"embeddings.cls_token": NestedDotted(f"touch {marker}")}, folder / "pytorch_model.bin")
    with pytest.raises(FeatureError, match="could not be loaded"):
        load_dino(str(folder))


def test_dino_folder_with_remote_code_is_refused(tmp_path, marker):
    """A model folder whose config points AutoModel at Python code in the folder: that code never runs."""
    pytest.importorskip("transformers")
    from moonseg3r_ros.core.features import FeatureError, load_dino

    folder = tmp_path / "dino"
    folder.mkdir()
    (folder / "config.json").write_text(
        '{"model_type": "evil_vit", "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}}')
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(FeatureError, match="could not be loaded"):
        load_dino(str(folder))


def test_torchscript_archive_is_refused(tmp_path):
    path = tmp_path / "script.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(RefusedFileError, match="TorchScript"):
        load_torch_file(path)


# ------------------------------------------------------------------------------------------- data is still read
def test_unknown_classes_are_records_and_never_imported(tmp_path, marker, monkeypatch):
    """An args object of a class from a module whose *import* would create the marker: read as a record."""
    module_dir = tmp_path / "pkg"
    module_dir.mkdir()
    (module_dir / "evil_config.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "class TrainConfig:\n    pass\n")
    monkeypatch.syspath_prepend(str(module_dir))
    import evil_config

    marker.unlink()  # importing it here (to pickle) ran it once; the loader must not import it again
    args = evil_config.TrainConfig()
    args.model, args.lr, args.kind = "ARCroco3DStereo(...)", 1e-4, int
    path = tmp_path / "official.pth"
    torch.save({"model": {"w": torch.ones(3)}, "args": args, "ns": argparse.Namespace(seed=3)}, path)
    del sys.modules["evil_config"]
    monkeypatch.syspath_prepend(str(tmp_path))  # keep it importable: only the loader's restraint stops it
    loaded = load_torch_file(path)
    assert "evil_config" not in sys.modules
    record = loaded["args"]
    assert isinstance(record, PickledRecord) and record.pickle_name == "evil_config.TrainConfig"
    assert (record.model, record.lr) == ("ARCroco3DStereo(...)", 1e-4)
    assert loaded["ns"] == argparse.Namespace(seed=3)
    torch.testing.assert_close(loaded["model"]["w"], torch.ones(3))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_plain_state_dicts_load(tmp_path, legacy):
    path = tmp_path / "plain.pth"
    state = torch.nn.Linear(3, 2).state_dict()
    torch.save({"model": state, "args": argparse.Namespace(model="x", lr=0.1), "epoch": 3}, path,
               _use_new_zipfile_serialization=not legacy)
    loaded = load_torch_file(path)
    assert loaded["epoch"] == 3 and loaded["args"].lr == 0.1
    for key, value in state.items():
        torch.testing.assert_close(loaded["model"][key], value)


# ------------------------------------------------------------------------------------------- npz files
def _pickled_npz(tmp_path, marker, key):
    path = tmp_path / "crafted.npz"
    np.savez(path, **{key: np.array([NestedGetattr(f"touch {marker}")], dtype=object)})
    return path


def test_load_npz_refuses_object_arrays(tmp_path, marker):
    path = _pickled_npz(tmp_path, marker, "masks")
    with pytest.raises(RefusedFileError, match="array 'masks' holds Python objects"):
        load_npz(path)
    np.savez(tmp_path / "ok.npz", masks=np.ones((2, 3, 4), bool))
    assert load_npz(tmp_path / "ok.npz")["masks"].shape == (2, 3, 4)


def test_precomputed_masks_refuse_a_pickle(tmp_path, marker):
    from moonseg3r_ros.core.masks import MaskError, PrecomputedMasks
    from moonseg3r_ros.core.types import Frame

    folder = tmp_path / "masks"
    folder.mkdir()
    (folder / "000000.npz").write_bytes(_pickled_npz(tmp_path, marker, "masks").read_bytes())
    source = PrecomputedMasks(str(folder), 1, 10)
    frame = Frame(image=np.zeros((4, 5, 3), np.uint8), stamp=0.0, frame_index=0)
    with pytest.raises(MaskError, match="pickle"):
        source.generate(frame)


def test_map_file_refuses_a_pickle(tmp_path, marker):
    from moonseg3r_ros.core.map_files import MapFileError, load_map

    path = _pickled_npz(tmp_path, marker, "config")
    with pytest.raises(MapFileError, match="pickle|Object arrays"):
        load_map(path)
