"""The node refuses crafted model files at configure (a real node process): a CUT3R checkpoint (zip and legacy
formats) or a SAM checkpoint whose pickle would create a marker file fails configure with the refusal in the
log, the marker never appears, and the node stays up and unconfigured."""
import pytest
import torch

from moonseg3r_ros.ros.testing import CONFIGURE, NodeProcess, TestClient


class _DottedName:
    def __reduce__(self):
        return torch._utils._import_dotted_name, ("os.system",)

    def __call__(self, *args):
        raise AssertionError("never called while pickling")


class _Payload:
    """(torch._utils._import_dotted_name('os.system'))(command), as in the issue's crafted checkpoint."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return _DottedName(), (self.command,)


@pytest.mark.parametrize("kind, legacy", [("cut3r", False), ("cut3r", True), ("sam", False)],
                         ids=["cut3r-zip", "cut3r-legacy", "sam"])
def test_configure_refuses_a_crafted_checkpoint(ros_context, tmp_path, kind, legacy):
    marker = tmp_path / "marker"
    checkpoint = tmp_path / f"{kind}.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "args": _Payload(f"touch {marker}")}, checkpoint,
               _use_new_zipfile_serialization=not legacy)
    params = ({"geometry.source": "cut3r", "geometry.cut3r_checkpoint": str(checkpoint)} if kind == "cut3r" else
              {"geometry.source": "recorded", "masks.source": "sam", "masks.sam_checkpoint": str(checkpoint)})
    proc = NodeProcess("moonseg3r", {**params, "device": "cpu"}, {}, tmp_path).start()
    client = TestClient(ros_context, f"untrusted_{kind}_{int(legacy)}")
    try:
        assert not client.change_state(CONFIGURE)
        assert client.spin_until(lambda: "configure failed" in proc.log(), 30), proc.log()
        log = proc.log()
        assert "refused to read" in log and "calls torch._utils._import_dotted_name" in log, log
        assert client.get_state() == "unconfigured" and proc.alive()
    finally:
        client.close()
        proc.stop()
    assert not marker.exists(), "the payload ran inside the node"
