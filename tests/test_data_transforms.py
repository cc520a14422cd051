"""Transforms: shapes, normalisation parity, flip, pad-crop, erasing, jitter, blur, rotation, seeding."""
import random

import numpy as np
import pytest
import torch
from PIL import Image

from gclreid.config import ConfigError, DataConfig, TransformConfig, load_config
from gclreid.data import (IMAGENET_MEAN, IMAGENET_STD, ColorJitter, GaussianBlur, PadCrop, RandomErasing,
                          RandomHorizontalFlip, RandomRotation, Resize, ToTensorNormalize, build_test_transform,
                          build_train_transform, denormalize, tensor_to_pil)
from gclreid.data.transforms import shift_hue
from gclreid.runtime import seed_everything

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def gradient_image(w=64, h=128):
    """An image whose every pixel differs from its mirror: x in red, y in green, a blob in blue."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), ((x < w // 3) & (y < h // 2)) * 200], -1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def reference_tensor(img):
    """Straightforward per-channel loop: uint8 → [0, 1] → (x - mean) / std."""
    a = np.asarray(img, dtype=np.float64) / 255.0
    return torch.tensor(np.stack([(a[..., c] - IMAGENET_MEAN[c]) / IMAGENET_STD[c] for c in range(3)]), dtype=torch.float32)


def test_test_transform_shape_and_normalisation():
    img = gradient_image(40, 100)
    x = build_test_transform(DataConfig(height=256, width=128))(img)
    assert x.shape == (3, 256, 128) and x.dtype == torch.float32
    resized = img.resize((128, 256), Image.BICUBIC)
    assert torch.allclose(x, reference_tensor(resized), atol=1e-6)
    grey = Image.new("RGB", (128, 256), (124, 116, 104))  # ~ the ImageNet mean colour
    assert ToTensorNormalize()(grey).abs().max() < 0.01


def test_inverse_normalisation_roundtrip():
    img = gradient_image()
    x = ToTensorNormalize()(img)
    assert np.array_equal(np.asarray(tensor_to_pil(x)), np.asarray(img))
    batch = torch.stack([x, x])
    assert torch.allclose(denormalize(batch), torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255, atol=1e-6)
    unit = torch.rand(3, 5, 4)
    assert np.abs(np.asarray(tensor_to_pil(unit, normalized=False), dtype=float) / 255
                  - unit.permute(1, 2, 0).numpy()).max() <= 0.5 / 255 + 1e-6
    with pytest.raises(ValueError, match="C×H×W"):
        tensor_to_pil(batch)


def test_flip_really_flips():
    img = gradient_image()
    flipped = RandomHorizontalFlip(p=1.0)(img)
    assert np.array_equal(np.asarray(flipped), np.asarray(img)[:, ::-1])
    assert RandomHorizontalFlip(p=0.0)(img) is img


def test_pad_crop_matches_explicit_pad_then_crop():
    img = gradient_image(16, 32)
    pad = 5
    random.seed(11)
    out = np.asarray(PadCrop(pad)(img))
    random.seed(11)
    dx, dy = random.randint(0, 2 * pad), random.randint(0, 2 * pad)
    padded = np.pad(np.asarray(img), ((pad, pad), (pad, pad), (0, 0)))
    assert out.shape == (32, 16, 3)
    assert np.array_equal(out, padded[dy:dy + 32, dx:dx + 16])
    seen = set()
    for s in range(40):
        random.seed(s)
        seen.add(np.asarray(PadCrop(pad)(img)).tobytes())
    assert len(seen) > 20  # the offset is random


@pytest.mark.parametrize("fill", ["random", "mean"])
def test_random_erasing_changes_one_rectangle(fill):
    x = ToTensorNormalize()(gradient_image())
    areas = []
    for s in range(30):
        random.seed(s)
        torch.manual_seed(s)
        y = RandomErasing(p=1.0, fill=fill)(x)
        changed = (y != x).any(0)
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        assert len(rows) and len(cols)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        region = y[:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        if fill == "mean":
            assert torch.all(region == 0)
        else:  # random colours, i.e. pixels in [0, 1] before normalisation
            pixels = region * STD + MEAN
            assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6 and pixels.std() > 0.2
        # outside the rectangle nothing changed
        outside = torch.ones_like(changed)
        outside[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = False
        assert not changed[outside].any()
        areas.append(float(h * w) / (128 * 64))
        assert 0.3 * 0.8 <= float(h) / float(w) <= (1 / 0.3) * 1.25
    assert 0.015 <= min(areas) and max(areas) <= 0.42
    assert torch.equal(RandomErasing(p=0.0)(x), x)


def test_colour_jitter_blur_rotation():
    const = Image.new("RGB", (8, 16), (100, 150, 50))
    random.seed(0)
    out = np.asarray(ColorJitter(brightness=0.5, contrast=0, saturation=0, hue=0, p=1)(const), dtype=float)
    ratio = out / np.array([100, 150, 50])
    assert 0.5 - 0.02 <= ratio.min() and ratio.max() <= 1.5 + 0.02 and np.ptp(ratio) < 0.03  # one factor
    hue = ColorJitter(0, 0, 0, hue=0.5, p=1)
    shifted = {np.asarray(hue(const)).tobytes() for _ in range(10)}
    assert len(shifted) > 1
    red = Image.new("RGB", (2, 2), (255, 0, 0))
    assert np.abs(np.asarray(shift_hue(red, 1 / 3), dtype=int)[0, 0] - [0, 255, 0]).max() <= 8  # a third of a turn
    assert np.abs(np.asarray(shift_hue(red, -1 / 3), dtype=int)[0, 0] - [0, 0, 255]).max() <= 8
    checker = Image.fromarray((np.indices((32, 16)).sum(0) % 2 * 255).astype(np.uint8)).convert("RGB")
    blurred = np.asarray(GaussianBlur(p=1.0, sigma=(1.0, 2.0))(checker), dtype=float)
    assert blurred.std() < 0.3 * np.asarray(checker, dtype=float).std()
    assert GaussianBlur(p=0.0)(checker) is checker
    white = Image.new("RGB", (64, 128), (255, 255, 255))
    random.seed(1)
    rotated = np.asarray(RandomRotation(10)(white))
    assert rotated.shape == (128, 64, 3)
    assert tuple(rotated[0, 0]) == (124, 116, 104) and tuple(rotated[64, 32]) == (255, 255, 255)
    assert RandomRotation(0)(white) is white


def test_train_transform_pipeline_and_seeding():
    cfg = DataConfig(height=64, width=32, transforms=TransformConfig(
        flip_p=0.5, pad=4, erasing_p=0.5, color_jitter_p=0.8, blur_p=0.5, rotation_deg=5))
    t = build_train_transform(cfg)
    names = [type(op).__name__ for op in t.transforms]
    assert names == ["Resize", "RandomHorizontalFlip", "RandomRotation", "PadCrop", "ColorJitter", "GaussianBlur",
                     "ToTensorNormalize", "RandomErasing"]
    img = gradient_image()

    def run(seed):
        seed_everything(seed)
        return torch.stack([t(img) for _ in range(6)])

    first = run(5)
    assert first.shape == (6, 3, 64, 32)
    assert torch.equal(first, run(5))
    assert not torch.equal(first, run(6))
    default = build_train_transform(load_config().data)  # the shipped defaults
    assert [type(op).__name__ for op in default.transforms] == ["Resize", "RandomHorizontalFlip", "PadCrop",
                                                                 "ToTensorNormalize", "RandomErasing"]
    assert default(img).shape == (3, 256, 128)
    assert isinstance(build_test_transform(cfg).transforms[0], Resize)


def test_bad_transform_config():
    with pytest.raises(ConfigError, match=r"data.transforms.erasing_p=2.0; expected a probability"):
        build_train_transform(DataConfig(transforms=TransformConfig(erasing_p=2.0)))
    with pytest.raises(ConfigError, match="fill='zeros'"):
        build_train_transform(DataConfig(transforms=TransformConfig(erasing_fill="zeros")))
    with pytest.raises(ConfigError, match="hue=0.7"):
        build_train_transform(DataConfig(transforms=TransformConfig(color_jitter_p=1.0, hue=0.7)))


def test_random_resized_crop_covers_the_asked_area_and_aspect():
    from gclreid.data.transforms import RandomResizedCrop
    img = gradient_image(64, 128)  # red = x, green = y: the output's extremes say which box was cut
    random.seed(0)
    for scale, ratio in (((0.25, 0.25), (1.0, 1.0)), ((0.64, 1.0), (3 / 4, 4 / 3))):
        crop = RandomResizedCrop(scale, ratio)
        for _ in range(20):
            out = np.asarray(crop(img), dtype=np.float64)
            assert out.shape == (128, 64, 3)
            # box width/height from the red (x) and green (y) ranges, in pixels of the input
            bw = (out[..., 0].max() - out[..., 0].min()) / 255 * 63 + 1
            bh = (out[..., 1].max() - out[..., 1].min()) / 255 * 127 + 1
            area = bw * bh / (64 * 128)
            assert scale[0] - 0.06 <= area <= scale[1] + 0.04, (scale, area)
            aspect = (bw / bh) / (64 / 128)  # relative to the image's own
            assert ratio[0] - 0.12 <= aspect <= ratio[1] + 0.12, (ratio, aspect)
    # the whole image when nothing is cut: scale 1 and the image's own aspect
    assert np.array_equal(np.asarray(RandomResizedCrop((1, 1), (1, 1))(img)), np.asarray(img))
    for bad in ((0.5,), (0.0, 1.0), (0.8, 0.5), (0.5, 1.2)):
        with pytest.raises(ConfigError, match="random resized crop"):
            RandomResizedCrop(bad)
