"""Rendering SynthReID images: posed, dressed people in colour, composited into a camera's scene.

One :class:`Shot` holds everything random about one image (yaw, walking phase, framing jitter,
background crop, occluder, blur, noise seed), so the 7 true novel views of an image are the same
shot with the person turned: same scene, camera, pose, light and noise.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..body.camera import OrthoCamera, frame_camera
from ..body.model import Body, Segments, body_segments
from ..body.pose import walking_pose
from ..body.raster import prepare, rasterize, surface
from ..body.render import grey_from_surface
from .cameras import CameraProfile
from .clothing import Outfit, accessory_segments, albedo, garment_bulk
from .identity import Identity


@dataclass
class Shot:
    """Per-image randomness (plain numbers, stored in the metadata)."""
    yaw: float                # degrees
    phase: float              # walking phase in [0, 1)
    elevation: float          # camera elevation, degrees
    fill: float               # person height / image height
    shift_x: float            # box jitter, fraction of the image width
    shift_y: float            # box jitter, fraction of the image height
    bg_offset: float          # horizontal position of the crop in the camera's scene, [0, 1)
    blur: float               # Gaussian sigma in pixels at 128 px image height
    noise_seed: int
    stride_scale: float = 1.0  # per-image gait variation
    occluder: Optional[Dict[str, object]] = None

    def to_dict(self) -> dict:
        return asdict(self)


def make_bodies(people: Sequence[Identity], shots: Sequence[Shot], extra_yaw: Optional[Sequence[float]] = None) -> Body:
    """Bodies of ``people`` walking as in ``shots`` (yaw plus ``extra_yaw`` per body, degrees)."""
    phase = torch.tensor([s.phase for s in shots], dtype=torch.float32)
    gait = {k: torch.tensor([p.gait[k] for p in people], dtype=torch.float32)
            for k in ("stride", "arm_swing", "knee", "elbow", "arm_out", "lean")}
    scale = torch.tensor([s.stride_scale for s in shots], dtype=torch.float32)
    gait["stride"] = gait["stride"] * scale
    gait["arm_swing"] = gait["arm_swing"] * scale
    pose, trans = walking_pose(phase, **gait)
    shape = torch.tensor([p.shape for p in people], dtype=torch.float32)
    yaw = torch.tensor([s.yaw for s in shots], dtype=torch.float32)
    if extra_yaw is not None:
        yaw = yaw + torch.tensor(list(extra_yaw), dtype=torch.float32)
    return Body(pose, shape, yaw, trans)


def frame_shots(body_seg: Segments, yaw: Tensor, shots: Sequence[Shot], height: int, width: int) -> OrthoCamera:
    """The camera of each shot: framed on the body (``fill``), then jittered like a detector box."""
    el = torch.tensor([s.elevation for s in shots], dtype=torch.float32)
    fill = torch.tensor([s.fill for s in shots], dtype=torch.float32)
    cam = frame_camera(body_seg, yaw, height, width, elevation=el, fill=1.0)
    # frame_camera with fill=1 gives the scale that makes the body exactly fill the height;
    # rescale about the image centre for the shot's fill, then shift.
    cx0, cy0 = width / 2.0, height / 2.0
    scale = cam.scale * fill
    cx = cx0 + (cam.cx - cx0) * fill + torch.tensor([s.shift_x for s in shots]) * width
    cy = cy0 + (cam.cy - cy0) * fill + torch.tensor([s.shift_y for s in shots]) * height
    return OrthoCamera(scale, cx, cy, el)


def _scaled(camera: OrthoCamera, factor: int) -> OrthoCamera:
    return OrthoCamera(camera.scale * factor, camera.cx * factor, camera.cy * factor, camera.elevation)


def _downsample(x: Tensor, factor: int) -> Tensor:
    """Box filter by ``factor`` on the last two dims of a contiguous tensor (columns, then rows)."""
    if factor == 1:
        return x
    *lead, h, w = x.shape
    y = x.reshape(*lead, h, w // factor, factor)
    acc = y[..., 0].clone()
    for i in range(1, factor):
        acc += y[..., i]
    y = acc.reshape(*lead, h // factor, factor, w // factor)
    acc = y[..., 0, :].clone()
    for i in range(1, factor):
        acc += y[..., i, :]
    return acc.mul_(1.0 / (factor * factor))


@dataclass
class Dressed:
    """Primitives of dressed bodies in the body frame (yaw is applied later by the camera)."""
    segments: Segments   # clothed body slots followed by accessory slots (colour renders)
    body: Segments       # the bare body (structure maps)
    torso_len: Tensor    # [N, 2] pelvis and chest lengths, metres (texture coordinates)


def dress(bodies: Body, outfit: Outfit) -> Dressed:
    """Body and accessory primitives of ``bodies`` wearing ``outfit`` (pose and shape only)."""
    joints, rots = bodies.joints()
    body = body_segments(joints, rots, bodies.shape)
    fa, fb = garment_bulk(outfit)
    clothed = replace(body, ra=body.ra * fa.to(body.ra.device), rb=body.rb * fb.to(body.rb.device))
    seg = clothed.cat(accessory_segments(joints, rots, bodies.shape, outfit))
    torso_len = torch.stack(((body.b[:, 0] - body.a[:, 0]).norm(dim=-1), (body.b[:, 1] - body.a[:, 1]).norm(dim=-1)), -1)
    return Dressed(seg, body, torso_len)


def render_people(dressed: Dressed, yaw: Tensor, outfit: Outfit, camera: OrthoCamera, height: int, width: int,
                  ssaa: int, light: Tensor, ambient: Tensor) -> Tuple[Tensor, Tensor]:
    """Colour renders of dressed bodies turned to ``yaw``: premultiplied RGB [N, 3, H, W], coverage [N, H, W].

    ``light`` [N, 3] (view space, towards the light) and ``ambient`` [N] come from each camera.
    Rendering happens at ``ssaa`` times the size and is box-filtered down (anti-aliasing).
    """
    hs, ws = height * ssaa, width * ssaa
    view = _scaled(camera, ssaa).project(dressed.segments, yaw)
    prep = prepare(view)
    keys = rasterize(view, hs, ws, prep)
    surf = surface(view, keys, prep, full=True)
    base = albedo(surf, outfit, dressed.torso_len)
    l = light / light.norm(dim=-1, keepdim=True)
    lb = l.index_select(0, surf.body).t()
    cos = (surf.normal * lb).sum(0).clamp_(0.0, 1.0)
    amb = ambient.index_select(0, surf.body)
    shade = amb + (1.0 - amb) * cos
    n = len(yaw)
    # One channel-major buffer [RGB + alpha, N, H, W]: scatter, then one box filter.
    buf = torch.zeros(4, n * hs * ws)
    buf.index_copy_(1, surf.index, torch.cat((base.mul_(shade), torch.ones(1, base.shape[1]))))
    buf = _downsample(buf.view(4, n, hs, ws), ssaa)
    return buf[:3].permute(1, 0, 2, 3), buf[3]


def render_structures(body_segments_: Segments, yaw: Tensor, camera: OrthoCamera, height: int, width: int) -> Tensor:
    """Grey structure maps (body only, no clothes or accessories) [N, H, W] uint8.

    Bodies are rendered in batches of about 4 million pixels (512 maps at 128x64): large enough
    to amortise per-primitive overhead, small enough to stay in cache."""
    step = max(1, (1 << 22) // (height * width))
    out = []
    for i in range(0, len(yaw), step):
        sl = slice(i, i + step)
        view = camera.select(sl).project(body_segments_.select(sl), yaw[sl])
        prep = prepare(view)
        keys = rasterize(view, height, width, prep)
        out.append(grey_from_surface(surface(view, keys, prep, full=False), keys.shape))
    return torch.cat(out)


def _gaussian_taps(sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def _blur(img: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of [3, H, W] with edge replication (shifted sums: deterministic)."""
    if sigma < 0.3:
        return img
    taps = _gaussian_taps(sigma)
    r = len(taps) // 2
    for dim in (1, 2):
        size = img.shape[dim]
        idx = torch.arange(-r, size + r).clamp(0, size - 1)
        padded = img.index_select(dim, idx)
        out = torch.zeros_like(img)
        for i, w in enumerate(taps):
            out.add_(padded.narrow(dim, i, size), alpha=float(w))
        img = out
    return img


def _occluder(img: Tensor, occ: Dict[str, object], height: int, width: int) -> None:
    """Draw an occluder in place over [3, H, W]: a pole, an object at the bottom, or one at a side."""
    color = torch.tensor(occ["color"], dtype=img.dtype)[:, None, None]
    rng = np.random.default_rng(int(occ["seed"]))
    kind = occ["kind"]
    if kind == "pole":
        x0 = int(occ["x"] * width)
        w = max(2, int(occ["size"] * width))
        shade = torch.linspace(0.75, 1.15, w)[None, None, :]
        img[:, :, x0:x0 + w] = (color * shade)[:, :, : img[:, :, x0:x0 + w].shape[2]]
        return
    if kind == "bottom":
        h = max(3, int(occ["size"] * height))
        y0 = height - h
        tex = torch.from_numpy(rng.uniform(0.75, 1.15, size=(1, h, width)).astype(np.float32))
        # A bumpy top edge (bush, bench, bag) instead of a straight line.
        top = torch.from_numpy((rng.uniform(0, 0.35, size=width // 4 + 2) * h).astype(np.float32))
        top = top.repeat_interleave(4)[:width]
        rows = torch.arange(h, dtype=torch.float32)[:, None]
        mask = (rows >= top[None, :]).float()[None]
        region = img[:, y0:, :]
        img[:, y0:, :] = region * (1 - mask) + color * tex * mask
        return
    w = max(3, int(occ["size"] * width))
    xs = slice(0, w) if occ["x"] < 0.5 else slice(width - w, width)
    y0 = int(occ.get("top", 0.3) * height)
    tex = torch.from_numpy(rng.uniform(0.85, 1.1, size=(1, height - y0, w)).astype(np.float32))
    img[:, y0:, xs] = color * tex


def compose(rgb: Tensor, alpha: Tensor, shots: Sequence[Shot], profiles: Sequence[CameraProfile],
            backgrounds: Sequence[np.ndarray], height: int, width: int,
            noise: Optional[Sequence[Tensor]] = None) -> np.ndarray:
    """Final images uint8 [N, H, W, 3]: scene crop + shadow + person + occluder, then the camera's
    colour cast, saturation, contrast, blur and noise. ``noise`` (one [3, H, W] standard normal field
    per image) may be passed to reuse it (the views of an image share its noise)."""
    n = len(shots)
    bg = torch.empty(n, 3, height, width)
    for i, (shot, canvas) in enumerate(zip(shots, backgrounds)):
        x0 = int(shot.bg_offset * (canvas.shape[1] - width))
        bg[i] = torch.from_numpy(np.ascontiguousarray(canvas[:, x0:x0 + width].transpose(2, 0, 1)))
    # Soft contact shadow under the feet: at the lowest covered row, centred on the feet.
    rows_any = alpha.sum(2) > 0.05                                       # [N, H]
    has = rows_any.any(1)
    foot = (height - 1 - torch.flip(rows_any, [1]).float().argmax(1)).float() + 0.5
    band = (torch.arange(height)[None, :] >= (foot[:, None] - height / 12)) & (torch.arange(height)[None, :] < foot[:, None])
    colw = (alpha * band[:, :, None]).sum(1)                             # [N, W]
    cx = (colw * (torch.arange(width) + 0.5)).sum(1) / colw.sum(1).clamp_min(1e-6)
    yy = (torch.arange(height, dtype=torch.float32)[None, :, None] + 0.5 - foot[:, None, None]) / (0.035 * height)
    xx = (torch.arange(width, dtype=torch.float32)[None, None, :] + 0.5 - cx[:, None, None]) / (0.2 * height)
    shadow = 1.0 - 0.45 * torch.exp(-(xx * xx + yy * yy)) * has[:, None, None]
    img = rgb + bg * (shadow * (1.0 - alpha))[:, None]
    for i, shot in enumerate(shots):
        if shot.occluder is not None:
            _occluder(img[i], shot.occluder, height, width)
    gains = torch.tensor([p.gains for p in profiles], dtype=torch.float32)[:, :, None, None]
    sat = torch.tensor([p.saturation for p in profiles], dtype=torch.float32)[:, None, None, None]
    con = torch.tensor([p.contrast for p in profiles], dtype=torch.float32)[:, None, None, None]
    bri = torch.tensor([p.brightness for p in profiles], dtype=torch.float32)[:, None, None, None]
    img = img * gains
    grey = img.mean(1, keepdim=True)
    img = (grey + (img - grey) * sat - 0.5) * con + (0.5 + bri)
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    for i, (shot, prof) in enumerate(zip(shots, profiles)):
        one = _blur(img[i], shot.blur * height / 128.0)
        field = noise_field(shot, height, width) if noise is None else noise[i]
        one = one + field * prof.noise
        out[i] = one.clamp_(0.0, 1.0).mul_(255.0).add_(0.5).floor_().to(torch.uint8).permute(1, 2, 0).numpy()
    return out


def noise_field(shot: Shot, height: int, width: int) -> Tensor:
    """The shot's standard normal noise field [3, H, W] (seeded: identical for its views)."""
    g = torch.Generator().manual_seed(int(shot.noise_seed))
    return torch.randn((3, height, width), generator=g)
