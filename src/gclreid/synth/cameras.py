"""SynthReID cameras: each has its own character (viewpoints, elevation, scale, background, lighting,
colour cast, blur, noise, JPEG quality, occluders), drawn once per camera from the dataset seed."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import List, Tuple

import numpy as np
from scipy import ndimage

# What a camera mostly sees: fronts, backs, sides (people crossing), a walkway seen along one
# direction (both ways), or anything.
VIEW_KINDS = ("front", "back", "side", "path", "mixed")
BACKGROUNDS = ("street", "indoor", "park", "plaza")
# Muted scene colours per background kind: (walls / upper part, floor, accents such as windows).
_SCENE_PALETTES = {
    "street": ([(0.55, 0.52, 0.48), (0.60, 0.44, 0.37), (0.70, 0.68, 0.62), (0.42, 0.43, 0.46), (0.76, 0.72, 0.62)],
               [(0.38, 0.38, 0.40), (0.52, 0.50, 0.47), (0.60, 0.58, 0.55)],
               [(0.25, 0.30, 0.36), (0.35, 0.33, 0.30), (0.55, 0.60, 0.65)]),
    "indoor": ([(0.84, 0.82, 0.76), (0.80, 0.80, 0.80), (0.86, 0.80, 0.64), (0.70, 0.74, 0.76)],
               [(0.62, 0.60, 0.56), (0.55, 0.40, 0.26), (0.70, 0.68, 0.62), (0.45, 0.45, 0.47)],
               [(0.45, 0.35, 0.25), (0.35, 0.40, 0.45), (0.60, 0.55, 0.50)]),
    "park": ([(0.22, 0.34, 0.16), (0.30, 0.42, 0.22), (0.26, 0.30, 0.18)],
             [(0.56, 0.52, 0.44), (0.48, 0.46, 0.40), (0.34, 0.46, 0.22)],
             [(0.45, 0.35, 0.25), (0.30, 0.30, 0.30)]),
    "plaza": ([(0.66, 0.64, 0.60), (0.58, 0.55, 0.50), (0.50, 0.48, 0.48)],
              [(0.62, 0.60, 0.56), (0.55, 0.52, 0.48), (0.70, 0.66, 0.58)],
              [(0.30, 0.33, 0.38), (0.45, 0.40, 0.35)]),
}


def _scene_colors(kind: str, rng: np.random.Generator) -> List[List[float]]:
    out = []
    for options in _SCENE_PALETTES[kind]:
        base = np.array(options[int(rng.integers(len(options)))])
        out.append([float(x) for x in np.clip(base * rng.uniform(0.9, 1.1) + rng.normal(0, 0.02, 3), 0.05, 0.95)])
    return out


@dataclass
class CameraProfile:
    """One camera of a SynthReID dataset (angles in degrees; blur in pixels at 128 px image height)."""
    cam: int                      # 1-based camera id, as in the file names
    view: str                     # one of VIEW_KINDS
    yaw_modes: List[Tuple[float, float]]  # (mean yaw, weight)
    yaw_spread: float             # std of the yaw around a mode
    yaw_uniform: float            # probability of a uniformly random yaw
    elevation: Tuple[float, float]
    fill: float                   # mean person height / image height
    background: str
    bg_colors: List[List[float]]  # a few base colours of the scene
    gains: List[float]            # colour cast (per-channel gain)
    brightness: float
    contrast: float
    saturation: float
    light: List[float]            # key light direction in view space (towards the light)
    ambient: float
    blur: float
    noise: float                  # std of additive noise, in [0, 1] units
    jpeg: int
    occlusion: float              # probability that an image has an occluder

    def to_dict(self) -> dict:
        return asdict(self)


def _view_modes(kind: str, rng: np.random.Generator) -> Tuple[List[Tuple[float, float]], float, float]:
    if kind == "front":
        return [(float(rng.normal(0, 10)), 1.0)], 30.0, 0.1
    if kind == "back":
        return [(float(180 + rng.normal(0, 10)), 1.0)], 30.0, 0.1
    if kind == "side":
        return [(90.0, 0.5), (270.0, 0.5)], 22.0, 0.1
    if kind == "path":
        psi = float(rng.uniform(0, 360))
        w = float(rng.uniform(0.5, 0.7))
        return [(psi, w), ((psi + 180.0) % 360.0, 1.0 - w)], 28.0, 0.1
    return [(0.0, 1.0)], 0.0, 1.0


def sample_cameras(seed: int, count: int) -> List[CameraProfile]:
    """``count`` camera profiles; the first cameras cycle through the view kinds so that a dataset
    with 3+ cameras has a mostly-front, a mostly-back and a mostly-side camera."""
    order = np.random.default_rng([int(seed), 0xCA]).permutation(len(VIEW_KINDS) - 1)
    kinds = [VIEW_KINDS[i] for i in order] + ["mixed"]
    # Put front, back and side first when present, so that even 3 cameras differ in viewpoint.
    kinds.sort(key=lambda k: ("front", "back", "side").index(k) if k in ("front", "back", "side") else 3)
    profiles = []
    for c in range(count):
        rng = np.random.default_rng([int(seed), 0xCB, c])
        kind = kinds[c % len(kinds)] if c < len(kinds) else str(rng.choice(VIEW_KINDS))
        modes, spread, uniform = _view_modes(kind, rng)
        el0 = float(rng.uniform(3, 22))
        az = float(rng.uniform(-0.7, 0.7))
        light = [az, float(rng.uniform(-0.7, -0.15)), -1.0]
        bg = str(BACKGROUNDS[(c + int(rng.integers(len(BACKGROUNDS)))) % len(BACKGROUNDS)])
        profiles.append(CameraProfile(
            cam=c + 1, view=kind, yaw_modes=modes, yaw_spread=spread, yaw_uniform=uniform,
            elevation=(el0, el0 + float(rng.uniform(2, 8))), fill=float(rng.uniform(0.8, 0.9)),
            background=bg, bg_colors=_scene_colors(bg, rng),
            gains=[float(x) for x in np.clip(rng.normal(1.0, 0.09, size=3), 0.78, 1.22)],
            brightness=float(rng.uniform(-0.06, 0.06)), contrast=float(rng.uniform(0.8, 1.1)),
            saturation=float(rng.uniform(0.65, 1.1)), light=light, ambient=float(rng.uniform(0.35, 0.55)),
            blur=float(rng.uniform(0.0, 0.9)), noise=float(rng.uniform(0.004, 0.025)),
            jpeg=int(rng.integers(72, 96)), occlusion=float(rng.uniform(0.0, 0.25)),
        ))
    return profiles


def sample_yaw(profile: CameraProfile, rng: np.random.Generator) -> float:
    """A person's yaw (degrees in [0, 360)) as seen by this camera."""
    if rng.random() < profile.yaw_uniform:
        return float(rng.uniform(0.0, 360.0))
    weights = np.array([w for _, w in profile.yaw_modes])
    mean = profile.yaw_modes[int(rng.choice(len(weights), p=weights / weights.sum()))][0]
    return float((mean + rng.normal(0.0, profile.yaw_spread)) % 360.0)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 3) -> np.ndarray:
    """Value noise in about [-1, 1]: random grids upsampled (cubic) and summed over octaves."""
    out = np.zeros((h, w))
    amp, total = 1.0, 0.0
    for o in range(octaves):
        c = max(cell / (2 ** o), 1.0)
        gh, gw = int(math.ceil(h / c)) + 3, int(math.ceil(w / c)) + 3
        grid = rng.uniform(-1, 1, size=(gh, gw))
        up = ndimage.zoom(grid, (c, c), order=3)[:h, :w]
        out[: up.shape[0], : up.shape[1]] += amp * up
        total += amp
        amp *= 0.5
    return out / total


def make_background(profile: CameraProfile, seed: int, height: int, width: int) -> np.ndarray:
    """The camera's scene, float32 [height, width, 3] in [0, 1] (a wide canvas; images crop it)."""
    rng = np.random.default_rng([int(seed), 0xB6, profile.cam])
    c = [np.array(x) for x in profile.bg_colors]
    y = (np.arange(height) / height)[:, None, None]
    horizon = float(rng.uniform(0.45, 0.7))          # wall / floor boundary (fraction of height)
    soft = 1.0 / (1.0 + np.exp(-(y - horizon) * 60.0))
    n1 = _smooth_noise(rng, height, width, height / 6)[..., None]
    n2 = _smooth_noise(rng, height, width, height / 30)[..., None]
    kind = profile.background
    if kind == "park":
        top = c[0] * (1.0 + 0.35 * n1 + 0.25 * n2)                  # foliage
        floor = c[1] * (0.92 + 0.12 * n2)
    elif kind == "indoor":
        top = c[0] * (1.0 + 0.04 * n1)
        floor = c[1] * (0.92 + 0.08 * n2)
    else:
        top = c[0] * (1.0 + 0.12 * n1 + 0.06 * n2)
        floor = c[1] * (0.94 + 0.08 * n2)
    img = top * (1.0 - soft) + floor * soft
    cols = np.arange(width)[None, :, None]
    rows = np.arange(height)[:, None, None]
    if kind in ("street", "plaza"):
        # Paving lines on the floor, windows/panels on the wall.
        tile = max(4, height // 10)
        lines = ((cols % (2 * tile) == 0) | (rows % tile == 0)) & (y > horizon)
        img = np.where(lines, img * 0.75, img)
        panel = max(6, height // 5)
        window = ((cols // panel) % 3 == 1) & ((rows // panel) % 2 == 0) & (y < horizon - 0.08)
        img = np.where(window, img * 0.3 + c[2] * 0.7, img)
    elif kind == "indoor":
        door = ((cols // max(8, height // 3)) % 5 == 2) & (y < horizon) & (y > 0.12)
        img = np.where(door, c[2] * 0.8, img)
        skirting = (y > horizon - 0.03) & (y < horizon)
        img = np.where(skirting, img * 0.5, img)
    return np.clip(img, 0.0, 1.0).astype(np.float32)
