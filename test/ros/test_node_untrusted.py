"""The node refuses crafted model files at configure (a real node process): a CUT3R checkpoint (zip and legacy
formats) or a SAM checkpoint whose pickle would create a marker file fails configure with the refusal in the
log, the marker never appears, and the node stays up and unconfigured. A compressed image declaring a huge
size is dropped before decoding."""
import struct
import zlib

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


def _peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def _png_bomb(size: int) -> bytes:
    """A valid 8-bit grey PNG of size x size zeros: about size**2 / 1000 bytes, size**2 bytes decoded."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer = zlib.compressobj(9)
    row = bytes(size + 1)  # filter byte 0 + the row's pixels
    data = b"".join(packer.compress(row) for _ in range(size)) + packer.flush()
    header = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def test_compressed_bombs_are_dropped_before_decoding(ros_context, tmp_path):
    """Three real PNGs of ~0.4 MB that decode to 20000x20000 (400 MB each): counted as bad input, refused
    from the header, and the node's peak memory does not move."""
    from sensor_msgs.msg import CompressedImage

    from moonseg3r_ros.ros import conversions as conv
    from moonseg3r_ros.ros.testing import ACTIVATE

    bomb = _png_bomb(20000)
    assert len(bomb) < 1_000_000
    params = {"masks.source": "ground_truth", "image_transport": "compressed", "input_reliability": "reliable"}
    proc = NodeProcess("moonseg3r", params, {}, tmp_path).start()
    client = TestClient(ros_context, "compressed_bombs")
    try:
        client.subscribe_outputs()  # diagnostics
        assert client.change_state(CONFIGURE) and client.change_state(ACTIVATE), proc.log()
        publisher = client.publisher("compressed", CompressedImage, "/image/compressed")
        assert client.wait_for_subscribers("compressed"), proc.log()
        client.spin_for(1.0)
        before = _peak_rss_mib(proc.proc.pid)
        for i in range(3):
            msg = CompressedImage(format="png", data=bomb)
            msg.header.stamp = conv.seconds_to_stamp(10.0 + i)
            publisher.publish(msg)
            client.spin_for(0.2)
        assert client.spin_until(lambda: client.counter("bad_input.image") >= 3, 60), (client.diagnostics(),
                                                                                       proc.log())
        assert "declares 20000x20000 = 400000000 pixels" in proc.log()
        assert _peak_rss_mib(proc.proc.pid) - before < 100, (before, _peak_rss_mib(proc.proc.pid))
        assert proc.alive()
    finally:
        client.close()
        proc.stop()
