"""Compressed images are size-checked from their header before decoding: a small PNG/JPEG declaring
20000x20000 is refused without cv2 ever decoding it; real images report their true size and still decode."""
import struct
import zlib
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from moonseg3r_ros.core.images import ImageError, check_compressed_size, compressed_image_size


def _png(height, width):
    rgb = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return cv2.imencode(".png", rgb)[1].tobytes()


def _jpeg(height, width, progressive=False):
    rgb = np.random.default_rng(1).integers(0, 255, (height, width, 3), dtype=np.uint8)
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if progressive else []
    return cv2.imencode(".jpg", rgb, params)[1].tobytes()


def _png_declaring(height, width):
    """A valid small PNG whose IHDR (with a correct CRC) declares height x width."""
    data = bytearray(_png(4, 4))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _jpeg_declaring(height, width):
    data = bytearray(_jpeg(8, 8))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize("make", [_png, _jpeg, lambda h, w: _jpeg(h, w, progressive=True)],
                         ids=["png", "jpeg", "progressive-jpeg"])
@pytest.mark.parametrize("size", [(1, 1), (30, 41), (480, 640)])
def test_header_size_of_real_images(make, size):
    data = make(*size)
    assert compressed_image_size(data) == size
    assert compressed_image_size(np.frombuffer(data, np.uint8)) == size
    assert compressed_image_size(memoryview(data)) == size


def test_jpeg_with_a_large_app_segment_before_the_frame_header():
    data = _jpeg(12, 20)
    app = b"\xff\xe1" + struct.pack(">H", 60002) + bytes(60000)  # an EXIF-sized APP1 segment
    assert compressed_image_size(data[:2] + app + app + data[2:]) == (12, 20)


@pytest.mark.parametrize("declaring", [_png_declaring, _jpeg_declaring], ids=["png", "jpeg"])
def test_a_bomb_is_refused_from_its_header(declaring):
    data = declaring(20000, 20000)
    assert len(data) < 2000 and compressed_image_size(data) == (20000, 20000)
    with pytest.raises(ImageError, match="declares 20000x20000 = 400000000 pixels, more than the allowed 50000000; "
                                         "refused before decoding"):
        check_compressed_size(data)
    assert check_compressed_size(data, max_pixels=400_000_000) == (20000, 20000)


@pytest.mark.parametrize("data, reason", [
    (b"GIF89a" + bytes(20), "neither PNG nor JPEG"),
    (b"BM" + bytes(40), "neither PNG nor JPEG"),
    (b"\x89PNG\r\n\x1a\n" + bytes(4), "no IHDR"),
    (b"\xff\xd8\xff\xda\x00\x08" + bytes(10), "no frame header"),
    (b"\xff\xd8\x00\x00\x00\x00", "corrupt"),
])
def test_unknown_or_broken_headers_are_refused(data, reason):
    with pytest.raises(ImageError, match=reason):
        compressed_image_size(data)


def test_empty_declared_size_is_refused():
    with pytest.raises(ImageError, match="does not declare its size"):
        check_compressed_size(_jpeg_declaring(0, 64))
    with pytest.raises(ImageError, match="declares an empty size"):
        check_compressed_size(_png_declaring(0, 64))


def test_compressed_message_bomb_is_never_decoded(monkeypatch):
    from moonseg3r_ros.ros.conversions.common import ConversionError
    from moonseg3r_ros.ros.conversions.images import compressed_msg_to_rgb

    decoded = []
    real_imdecode = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decoded.append(1) or real_imdecode(*a))
    for fmt, data in (("png", _png_declaring(20000, 20000)), ("jpeg", _jpeg_declaring(20000, 20000))):
        with pytest.raises(ConversionError, match="refused before decoding"):
            compressed_msg_to_rgb(SimpleNamespace(format=fmt, data=data))
    with pytest.raises(ConversionError, match="more than the allowed 100"):
        compressed_msg_to_rgb(SimpleNamespace(format="png", data=_png(20, 30)), max_pixels=100)
    assert decoded == []
    rgb = compressed_msg_to_rgb(SimpleNamespace(format="png", data=_png(20, 30)), max_pixels=600)
    assert rgb.shape == (20, 30, 3) and decoded == [1]
