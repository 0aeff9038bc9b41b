import numpy as np
import pytest

from moonseg3r_ros.core.images import ImageError, to_rgb8, uint16_to_uint8


def test_rgb8_passthrough_is_a_copy():
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    out = to_rgb8(image)
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out, image)
    out[0, 0, 0] = 200
    assert image[0, 0, 0] == 0


def test_bgr_and_bgra_are_swapped():
    image = np.zeros((2, 2, 3), np.uint8)
    image[..., 0] = 10  # blue in bgr
    image[..., 2] = 30  # red in bgr
    out = to_rgb8(image, "bgr8")
    assert out[0, 0].tolist() == [30, 0, 10]
    bgra = np.concatenate([image, np.full((2, 2, 1), 255, np.uint8)], axis=2)
    assert to_rgb8(bgra, "bgra8")[1, 1].tolist() == [30, 0, 10]


def test_uint16_rule_rounds_to_nearest_of_257():
    every = np.arange(65536, dtype=np.uint16)
    expected = np.floor(every.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    assert np.array_equal(uint16_to_uint8(every), expected)
    assert uint16_to_uint8(np.array([128, 129, 65280, 65535], np.uint16)).tolist() == [0, 1, 254, 255]


def test_mono_16bit_and_float():
    mono16 = np.array([[0, 65535], [257, 32896]], np.uint16)
    out = to_rgb8(mono16, "mono16")
    assert out.shape == (2, 2, 3)
    assert out[..., 0].tolist() == [[0, 255], [1, 128]]
    assert (out[..., 0] == out[..., 2]).all()
    unit = np.full((3, 3, 1), 0.5, np.float32)
    assert to_rgb8(unit)[0, 0].tolist() == [128, 128, 128]
    rgba = np.full((2, 2, 4), 7, np.uint8)
    assert to_rgb8(rgba).shape == (2, 2, 3)


@pytest.mark.parametrize("image, message", [
    (np.zeros((0, 4, 3), np.uint8), "empty"),
    (np.zeros((4, 4, 2), np.uint8), "shape"),
    (np.zeros((4, 4, 3), np.complex64), "dtype"),
    (np.full((4, 4), np.nan, np.float32), "NaN"),
    (np.full((4, 4), 300, np.int32), "outside"),
])
def test_bad_images_raise_clear_errors(image, message):
    with pytest.raises(ImageError, match=message):
        to_rgb8(image)


def test_huge_image_and_bad_encoding():
    with pytest.raises(ImageError, match="more than the allowed 100"):
        to_rgb8(np.zeros((20, 20, 3), np.uint8), max_pixels=100)
    with pytest.raises(ImageError, match="unsupported image encoding"):
        to_rgb8(np.zeros((4, 4, 3), np.uint8), "yuv422")
    with pytest.raises(ImageError, match="needs 1 channel"):
        to_rgb8(np.zeros((4, 4, 3), np.uint8), "mono8")
    with pytest.raises(ImageError, match="numpy array"):
        to_rgb8([[1, 2]])
