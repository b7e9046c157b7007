"""service/core/preprocess.py against the training transforms (torchvision) and the hostile-file cases.

The service builds preprocessing from the spec alone, without torch; these tests check it produces
the tensors training's eval transforms produce from the same pixels (MNIST: the real test split).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from fixtures_data import mnist_data_dir
from PIL import Image

from service.core.preprocess import preprocess, preprocess_many
from service.errors import TooLarge, UnsupportedImage
from training.data import cifar10_transform, mnist_tensors, transfer_transform
from training.specs import cifar10_spec, mnist_spec, transfer_spec

CAP = 4096 * 4096


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def random_rgb(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def test_mnist_png_equals_the_training_tensor():
    import torchvision

    raw = torchvision.datasets.MNIST(str(mnist_data_dir()), train=False)
    x, _ = mnist_tensors(str(mnist_data_dir()), train=False, limit=16).tensors  # (16, 784)
    files = [(f"{i}.png", encode(Image.fromarray(raw.data[i].numpy(), "L"))) for i in range(16)]
    out = preprocess_many(files, mnist_spec().image, CAP)
    assert out.shape == (16, 784) and out.dtype == np.float32
    np.testing.assert_allclose(out, x.numpy(), atol=1e-6)


@pytest.mark.parametrize("size", [(300, 200), (200, 300), (256, 256), (500, 181)])
def test_transfer_resize_and_center_crop_equal_torchvision(size):
    img = random_rgb(*size)
    spec = transfer_spec(["a", "b"]).image
    ours = preprocess(encode(img), spec, CAP)
    theirs = transfer_transform(False)(img).numpy()  # Resize(256) + CenterCrop(224) + Normalize
    assert ours.shape == theirs.shape == (3, 224, 224)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_cifar10_equals_training_transform():
    img = random_rgb(32, 32, seed=3)
    ours = preprocess(encode(img), cifar10_spec([str(i) for i in range(10)]).image, CAP)
    np.testing.assert_allclose(ours, cifar10_transform(False)(img).numpy(), atol=1e-6)


def test_other_sizes_are_resized_straight_to_the_input_size():
    img = random_rgb(64, 40)
    out = preprocess(encode(img), cifar10_spec([str(i) for i in range(10)]).image, CAP)
    expected = cifar10_transform(False)(img.resize((32, 32), Image.BILINEAR)).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-6)


def _digit() -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), "L")


@pytest.mark.parametrize("variant", ["P", "RGB", "CMYK", "I;16", "I", "LA-opaque", "1"])
def test_colour_modes_convert_to_the_same_pixels(variant):
    digit = _digit()
    reference = preprocess(encode(digit), mnist_spec().image, CAP)
    if variant == "I;16":
        data = encode(Image.fromarray(np.asarray(digit).astype(np.uint16) * 257))  # 16-bit PNG, full range
    elif variant == "I":
        data = encode(Image.fromarray(np.asarray(digit).astype(np.int32) * 257, "I"), "TIFF")
    elif variant == "CMYK":
        data = encode(digit.convert("RGB").convert("CMYK"), "TIFF")  # lossless, unlike JPEG
    elif variant == "LA-opaque":
        data = encode(digit.convert("LA"))
    elif variant == "1":
        digit = digit.point(lambda v: 255 if v > 127 else 0)
        reference = preprocess(encode(digit), mnist_spec().image, CAP)
        data = encode(digit.convert("1"))
    else:
        data = encode(digit.convert(variant))
    np.testing.assert_allclose(preprocess(data, mnist_spec().image, CAP), reference, atol=1e-5)


def test_transparency_is_flattened_onto_black():
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:14, :, 3] = 255  # top half opaque grey, bottom half fully transparent
    out = preprocess(encode(Image.fromarray(rgba, "RGBA")), mnist_spec().image, CAP).reshape(28, 28)
    mean, std = mnist_spec().image.mean[0], mnist_spec().image.std[0]
    np.testing.assert_allclose(out[20], (0 - mean) / std, atol=1e-6)
    np.testing.assert_allclose(out[5], (200 / 255 - mean) / std, atol=1e-6)


def test_exif_orientation_is_applied():
    img = random_rgb(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    rotated = preprocess(encode(img, "JPEG", exif=exif, quality=100), transfer_spec(["a"]).image, CAP)
    upright = preprocess(encode(img.transpose(Image.Transpose.ROTATE_270), "JPEG", quality=100), transfer_spec(["a"]).image, CAP)
    assert np.abs(rotated - upright).mean() < 0.1  # same picture up to JPEG noise; unrotated differs
    unrotated = preprocess(encode(img, "JPEG", quality=100), transfer_spec(["a"]).image, CAP)
    assert np.abs(rotated - unrotated).mean() > 0.3


@pytest.mark.parametrize("data,error,fragment", [
    (b"", UnsupportedImage, "empty file"),
    (b"hello", UnsupportedImage, "not a recognised image"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", UnsupportedImage, "not a recognised image"),  # no Ghostscript
    (None, UnsupportedImage, "corrupt or truncated"),
    ("bomb", TooLarge, "decompression bomb"),
    ("cap", TooLarge, "over the cap of 4194304 pixels"),
])
def test_hostile_files_raise_named_errors(data, error, fragment):
    if data is None:
        full = encode(random_rgb(64, 64))
        data = full[: len(full) - 200]
    elif data == "bomb":
        data = encode(Image.new("1", (20000, 20000)))
    elif data == "cap":
        data = encode(Image.new("L", (4096, 1025)))
    with pytest.raises(error, match=fragment) as info:
        preprocess(data, mnist_spec().image, 2048 * 2048, label="images[3] ('x.png')")
    assert str(info.value).startswith("images[3] ('x.png'): ")
