"""Image transforms for ReID, written with Pillow and torch (no torchvision).

Geometric and colour operations act on PIL images; :class:`ToTensorNormalize` turns the image
into an ImageNet-normalised float tensor C×H×W, and :class:`RandomErasing` acts on that tensor.
All randomness comes from Python's ``random`` module, so ``seed_everything`` (and the per-worker
seeding of DataLoader) makes it reproducible. Pixel arithmetic is done in numpy on purpose: per
image, torch's intra-op thread pool costs more than it saves.
"""
from __future__ import annotations

import math
import random
from typing import Any, Callable, List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

from ..config import ConfigError

IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)
# The ImageNet mean as an 8-bit colour: regions filled with it normalise to ~0.
MEAN_COLOR: Tuple[int, int, int] = tuple(int(round(m * 255)) for m in IMAGENET_MEAN)


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: Any) -> Any:
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(map(repr, self.transforms)) + ")"


class Resize:
    """Resize to exactly (height, width), bicubic by default."""

    def __init__(self, height: int, width: int, resample: int = Image.BICUBIC) -> None:
        self.size = (int(height), int(width))
        self.resample = resample

    def __call__(self, img: Image.Image) -> Image.Image:
        h, w = self.size
        return img if img.size == (w, h) else img.resize((w, h), self.resample)

    def __repr__(self) -> str:
        return f"Resize{self.size}"


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.transpose(Image.FLIP_LEFT_RIGHT) if random.random() < self.p else img

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class PadCrop:
    """Zero-pad by ``pad`` pixels on every side, then crop back to the input size at a random offset."""

    def __init__(self, pad: int) -> None:
        self.pad = int(pad)

    def __call__(self, img: Image.Image) -> Image.Image:
        if self.pad <= 0:
            return img
        w, h = img.size
        dx, dy = random.randint(0, 2 * self.pad), random.randint(0, 2 * self.pad)
        # PIL fills the part of a crop box outside the image with zeros: pad and crop in one step.
        return img.crop((dx - self.pad, dy - self.pad, dx - self.pad + w, dy - self.pad + h))

    def __repr__(self) -> str:
        return f"PadCrop(pad={self.pad})"


class RandomResizedCrop:
    """Crop a random patch covering a fraction in ``scale`` of the image area with aspect ratio (w/h,
    relative to the image's own) in ``ratio`` (log-uniform), then resize it back to the image size
    (bicubic) — TMP's "random patch resized to 256×128". Falls back to the whole image after 10 tries."""

    def __init__(self, scale: Sequence[float] = (0.64, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3)) -> None:
        if len(scale) != 2 or len(ratio) != 2 or not (0 < scale[0] <= scale[1] <= 1) or not (0 < ratio[0] <= ratio[1]):
            raise ConfigError(f"random resized crop scale={list(scale)} ratio={list(ratio)}; expected "
                              "[min, max] pairs with 0 < min <= max <= 1 and 0 < ratio min <= max")
        self.scale, self.ratio = tuple(scale), tuple(ratio)

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        for _ in range(10):
            area = random.uniform(*self.scale) * w * h
            aspect = math.exp(random.uniform(math.log(self.ratio[0]), math.log(self.ratio[1]))) * w / h
            cw, ch = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                x, y = random.randint(0, w - cw), random.randint(0, h - ch)
                return img.resize((w, h), Image.BICUBIC, box=(x, y, x + cw, y + ch))
        return img

    def __repr__(self) -> str:
        return f"RandomResizedCrop(scale={self.scale}, ratio={self.ratio})"


class ColorJitter:
    """With probability ``p``, change brightness, contrast, saturation (factors uniform in
    [1-x, 1+x]) and hue (shift uniform in [-hue, hue] of a turn), in a random order."""

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 hue: float = 0.1, p: float = 1.0) -> None:
        if not 0 <= hue <= 0.5:
            raise ConfigError(f"colour jitter hue={hue}; expected 0..0.5")
        self.brightness, self.contrast, self.saturation, self.hue, self.p = brightness, contrast, saturation, hue, p

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return img
        ops: List[Callable[[Image.Image], Image.Image]] = []
        for amount, enhancer in ((self.brightness, ImageEnhance.Brightness), (self.contrast, ImageEnhance.Contrast),
                                 (self.saturation, ImageEnhance.Color)):
            if amount > 0:
                factor = random.uniform(max(0.0, 1 - amount), 1 + amount)
                ops.append(lambda im, e=enhancer, f=factor: e(im).enhance(f))
        if self.hue > 0:
            shift = random.uniform(-self.hue, self.hue)
            ops.append(lambda im, s=shift: shift_hue(im, s))
        random.shuffle(ops)
        for op in ops:
            img = op(img)
        return img

    def __repr__(self) -> str:
        return (f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation}, hue={self.hue}, p={self.p})")


def shift_hue(img: Image.Image, shift: float) -> Image.Image:
    """Rotate the hue of an RGB image by ``shift`` turns (-0.5..0.5)."""
    hsv = np.array(img.convert("HSV"))
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(round(shift * 256))) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


class GaussianBlur:
    """With probability ``p``, blur with a Gaussian whose sigma is uniform in ``sigma``."""

    def __init__(self, p: float = 0.5, sigma: Tuple[float, float] = (0.1, 2.0)) -> None:
        self.p, self.sigma = p, sigma

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return img
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))

    def __repr__(self) -> str:
        return f"GaussianBlur(p={self.p}, sigma={self.sigma})"


class RandomRotation:
    """Rotate by an angle uniform in [-degrees, degrees]; corners are filled with the mean colour."""

    def __init__(self, degrees: float, fill: Tuple[int, int, int] = MEAN_COLOR) -> None:
        self.degrees, self.fill = float(degrees), fill

    def __call__(self, img: Image.Image) -> Image.Image:
        if self.degrees <= 0:
            return img
        angle = random.uniform(-self.degrees, self.degrees)
        return img.rotate(angle, resample=Image.BILINEAR, fillcolor=self.fill)

    def __repr__(self) -> str:
        return f"RandomRotation(degrees={self.degrees})"


class ToTensorNormalize:
    """RGB PIL image → float tensor C×H×W, scaled to [0, 1] then normalised with ``mean``/``std``."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        mean64, std64 = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
        # (x/255 - mean)/std as one multiply-subtract per pixel.
        self.scale = (1.0 / (255.0 * std64)).astype(np.float32)[:, None, None]
        self.offset = (mean64 / std64).astype(np.float32)[:, None, None]

    def __call__(self, img: Image.Image) -> torch.Tensor:
        # numpy, not torch: on one small image torch's intra-op threads cost more than they save
        # (several times slower on a busy machine), and DataLoader workers are single-threaded anyway.
        x = np.asarray(img.convert("RGB")).transpose(2, 0, 1).astype(np.float32)
        x *= self.scale
        x -= self.offset
        return torch.from_numpy(x)

    def __repr__(self) -> str:
        return "ToTensorNormalize()"


class RandomErasing:
    """Random erasing (Zhong et al., AAAI 2020) on a normalised tensor C×H×W.

    With probability ``p``, a rectangle of area uniform in ``area`` (fraction of the image) and
    aspect ratio uniform in [aspect, 1/aspect] is filled with uniformly random colours per pixel
    (``fill="random"``, the paper's best variant) or with the ImageNet mean (``fill="mean"``,
    i.e. zeros after normalisation). Up to 100 attempts to fit the rectangle, as in the paper.
    """

    def __init__(self, p: float = 0.5, area: Tuple[float, float] = (0.02, 0.4), aspect: float = 0.3,
                 fill: str = "random", mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        if fill not in ("random", "mean"):
            raise ConfigError(f"random erasing fill={fill!r}; expected 'random' or 'mean'")
        self.p, self.area, self.aspect, self.fill = p, area, aspect, fill
        self.mean = np.asarray(mean, dtype=np.float32)[:, None, None]
        self.std = np.asarray(std, dtype=np.float32)[:, None, None]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if random.random() >= self.p:
            return x
        c, h, w = x.shape
        for _ in range(100):
            target = random.uniform(*self.area) * h * w
            ratio = random.uniform(self.aspect, 1 / self.aspect)
            eh, ew = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
            if 0 < eh < h and 0 < ew < w:
                top, left = random.randint(0, h - eh), random.randint(0, w - ew)
                # Work on a numpy copy: single-threaded, where torch would wake its thread pool
                # for every image. The fill colours come from a generator seeded by `random`.
                y = x.detach().cpu().numpy().copy()
                if self.fill == "random":
                    noise = np.random.default_rng(random.getrandbits(64)).random((c, eh, ew), dtype=np.float32)
                    y[:, top:top + eh, left:left + ew] = (noise - self.mean) / self.std
                else:
                    y[:, top:top + eh, left:left + ew] = 0.0
                return torch.from_numpy(y)
        return x

    def __repr__(self) -> str:
        return f"RandomErasing(p={self.p}, area={self.area}, aspect={self.aspect}, fill={self.fill!r})"


def denormalize(x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """Undo the normalisation of a C×H×W or B×C×H×W tensor; result clamped to [0, 1]."""
    shape = (-1, 1, 1)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return (x * s + m).clamp_(0, 1)


def tensor_to_pil(x: torch.Tensor, normalized: bool = True) -> Image.Image:
    """A C×H×W tensor (ImageNet-normalised unless ``normalized=False``, then in [0, 1]) → RGB PIL image."""
    if x.dim() != 3:
        raise ValueError(f"tensor_to_pil expects C×H×W, got shape {tuple(x.shape)}")
    x = denormalize(x.detach().float().cpu()) if normalized else x.detach().float().cpu().clamp(0, 1)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    array = (x.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    return Image.fromarray(array, "RGB")


def _probability(value: float, field: str) -> float:
    if not 0 <= value <= 1:
        raise ConfigError(f"data.transforms.{field}={value}; expected a probability in [0, 1]")
    return value


def build_train_transform(data_cfg: Any) -> Compose:
    """Training transform from a :class:`gclreid.config.DataConfig` (or anything with the same fields).

    Order: resize → flip → rotation → pad-and-crop → random resized crop → colour jitter → blur → tensor+normalise → erasing.
    Steps whose probability (or size) is 0 are left out."""
    t = data_cfg.transforms
    ops: List[Callable[[Any], Any]] = [Resize(data_cfg.height, data_cfg.width)]
    if _probability(t.flip_p, "flip_p") > 0:
        ops.append(RandomHorizontalFlip(t.flip_p))
    if t.rotation_deg > 0:
        ops.append(RandomRotation(t.rotation_deg))
    if t.pad > 0:
        ops.append(PadCrop(t.pad))
    if tuple(t.crop_scale) != (1.0, 1.0):
        ops.append(RandomResizedCrop(t.crop_scale))
    if _probability(t.color_jitter_p, "color_jitter_p") > 0:
        ops.append(ColorJitter(t.brightness, t.contrast, t.saturation, t.hue, p=t.color_jitter_p))
    if _probability(t.blur_p, "blur_p") > 0:
        ops.append(GaussianBlur(t.blur_p))
    ops.append(ToTensorNormalize())
    if _probability(t.erasing_p, "erasing_p") > 0:
        ops.append(RandomErasing(t.erasing_p, fill=getattr(t, "erasing_fill", "random")))
    return Compose(ops)


def build_test_transform(data_cfg: Any) -> Compose:
    """Test transform: resize to (height, width), bicubic, then tensor + ImageNet normalisation."""
    return Compose([Resize(data_cfg.height, data_cfg.width), ToTensorNormalize()])
