"""Image → body parameters and camera, for structure maps of real images.

Two estimators fill a :class:`gclreid.body.Body` and an :class:`gclreid.body.OrthoCamera`:

* the **silhouette fallback** (:func:`estimate_fallback`, no extra dependency): a foreground mask
  from a background model learnt on the image border; on a smooth background the person's box
  from the mask and a yaw/gait-phase search against pre-rendered silhouettes of a default-shape
  walking body, on the textured background of a surveillance crop (where that mask misses half
  the person) the detector-crop box and front or back from the head's skin and hair. Results are
  counted as ``fallback``.
* **MediaPipe Pose** (:mod:`gclreid.structures.mediapipe_pose`, checked and turned into a body by
  :mod:`gclreid.structures.landmarks`). Images where it finds nobody, or whose checks fail, get
  the fallback, with the reason.

Everything works in coordinates normalised to the image (fractions of height and width), so an
image of any size maps onto a 2:1 structure map the way a ReID loader resizes it. Turned views are
kept inside the map by :func:`turned_cameras`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from ..body import Body, OrthoCamera, frame_camera, render_grey, render_maps, segment_bounds
from ..body.skeleton import default_shape

# Working resolution of the mask and the silhouette templates (2:1).
WORK_H, WORK_W = 64, 32
# Candidate views of the silhouette search.
YAWS: Tuple[float, ...] = tuple(float(a) for a in range(0, 360, 30))
PHASES: Tuple[float, ...] = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875)
# Surveillance cameras look down; SynthReID draws 15–23°. Used for templates and for rendering.
DEFAULT_ELEVATION = 15.0
# Below this mask quality the image is treated as "no person found" and framed by default.
MIN_MASK_FRACTION, MAX_MASK_FRACTION = 0.02, 0.92
# Detector-crop prior for real images whose silhouette is not found (their head top and feet rows,
# fractions of the crop height). On 151 labelled Market-1501 crops the median head top is 0.02 and
# the median feet row 0.98; this box alone puts 86 % of them within 10 % of the height, the
# border-model mask 9 % (its median mask covers only 44 % of the height: legs and hair blend into
# floor and background).
PRIOR_TOP, PRIOR_BOTTOM = 0.03, 0.98


@dataclass
class Estimate:
    """What an estimator says about one image.

    ``box`` = (x0, y0, x1, y1) of the person as fractions of the image width/height; ``status`` is
    ``detected`` (a pose estimator found the person) or ``fallback``; ``confidence`` in [0, 1].
    """
    pose: torch.Tensor      # [J, 3]
    shape: torch.Tensor     # [S]
    yaw: float
    box: Tuple[float, float, float, float]
    status: str
    confidence: float
    elevation: float = DEFAULT_ELEVATION
    trans: Optional[torch.Tensor] = None
    # Optional explicit camera (scale in map heights per metre, pelvis centre x, y as fractions of
    # the map width/height); when None the body is framed on ``box``.
    camera: Optional[Tuple[float, float, float]] = None
    # Column of the pelvis (fraction of the width); when None the body's box is centred on ``box``.
    pelvis_x: Optional[float] = None
    # Checks of the estimate: quality in [0, 1] and "ok" or why it was not trusted / how it was made.
    quality: Optional[float] = None
    reason: Optional[str] = None
    # What the pose is: "standing", "walking", "cycling" (None: not classified).
    kind: Optional[str] = None

    def record(self) -> dict:
        rec = {"status": self.status, "yaw": round(self.yaw % 360.0, 2), "confidence": round(float(self.confidence), 4)}
        if self.quality is not None:
            rec["quality"] = round(float(self.quality), 4)
        if self.reason is not None:
            rec["reason"] = self.reason
        if self.kind is not None:
            rec["pose"] = self.kind
        if self.camera is None:
            rec["box"] = [round(float(v), 4) for v in self.box]
        return rec


def to_array(image) -> np.ndarray:
    """float32 [H, W, 3] in [0, 1] from a PIL image or a uint8/float array."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    return arr[..., :3].astype(np.float32)


def _resize(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    img = Image.fromarray((np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8))
    return np.asarray(img.resize((width, height), Image.BILINEAR), dtype=np.float32) / 255.0


def _otsu(values: np.ndarray, bins: int = 64) -> float:
    hist, edges = np.histogram(values, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centers[int(np.argmax(between))])


def person_mask(image, height: int = WORK_H, width: int = WORK_W) -> Tuple[np.ndarray, float]:
    """A foreground mask [height, width] bool and its quality in [0, 1].

    The background is modelled by the pixels of the left, right and top borders (the bottom often
    holds the feet); a pixel's foreground score is its colour distance to the nearest border
    sample, damped away from the centre column (ReID crops are centred on the person). Otsu's
    threshold, a small closing, the largest connected component and hole filling give the mask.
    """
    arr = _resize(to_array(image), height, width)
    border = np.concatenate([arr[:, :2].reshape(-1, 3), arr[:, -2:].reshape(-1, 3), arr[:2].reshape(-1, 3)])
    # Limbs may touch the border: drop the 20% of border pixels farthest from the border median.
    far = np.linalg.norm(border - np.median(border, 0), axis=1)
    border = border[far <= np.quantile(far, 0.8)]
    step = max(1, len(border) // 96)
    samples = border[::step]
    dist = np.sqrt(((arr[:, :, None, :] - samples[None, None]) ** 2).sum(-1)).min(-1)
    xs = (np.arange(width) + 0.5) / width - 0.5
    dist = dist * np.exp(-(xs / 0.42) ** 4)[None, :]
    if float(dist.max()) < 1e-3:
        return np.zeros((height, width), dtype=bool), 0.0
    thr = max(_otsu(dist.ravel()), 0.06)
    mask = dist > thr
    mask = ndimage.binary_closing(mask, structure=np.ones((3, 3)), iterations=1)
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask, 0.0
    sizes = ndimage.sum(mask, labels, index=np.arange(1, count + 1))
    mask = labels == (1 + int(np.argmax(sizes)))
    mask = ndimage.binary_fill_holes(mask)
    frac = float(mask.mean())
    # Quality: contrast between the two classes, zero for degenerate masks.
    if not MIN_MASK_FRACTION <= frac <= MAX_MASK_FRACTION:
        return mask, 0.0
    contrast = float(dist[mask].mean() - dist[~mask].mean()) / max(float(dist[mask].mean()), 1e-6)
    return mask, float(np.clip(contrast, 0.0, 1.0))


def mask_box(mask: np.ndarray) -> Tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of a mask as fractions of its width and height (rows with ≥ 2 pixels)."""
    h, w = mask.shape
    rows = np.nonzero(mask.sum(1) >= 2)[0]
    cols = np.nonzero(mask.sum(0) >= 1)[0]
    if len(rows) == 0 or len(cols) == 0:
        return default_box()
    return (cols[0] / w, rows[0] / h, (cols[-1] + 1) / w, (rows[-1] + 1) / h)


def person_box(mask: np.ndarray, min_height: float = 0.8) -> Tuple[float, float, float, float]:
    """The person's box from a mask, with the detector-crop prior of ReID images.

    Heads contrast well with the background, feet and legs often do not (floor, shadows), so the
    top is taken from the mask and the box is extended down to at least ``min_height`` of the
    image; the horizontal centre is kept within the middle 30% of the crop.
    """
    x0, y0, x1, y1 = mask_box(mask)
    y1 = min(1.0, max(y1, y0 + min_height))
    y0 = min(y0, y1 - min_height)
    cx = min(0.65, max(0.35, (x0 + x1) / 2))
    half = (x1 - x0) / 2
    return (cx - half, y0, cx + half, y1)


def default_box() -> Tuple[float, float, float, float]:
    """The box used when no person is found: centred, from :data:`PRIOR_TOP` to :data:`PRIOR_BOTTOM`
    (where a detector crop has the head top and the feet)."""
    return (0.25, PRIOR_TOP, 0.75, PRIOR_BOTTOM)


def _normalise(mask: np.ndarray, box: Tuple[float, float, float, float]) -> np.ndarray:
    """The mask re-framed so the box fills the height, centred: the templates' frame."""
    h, w = mask.shape
    x0, y0, x1, y1 = box
    bh = max(y1 - y0, 1e-3) * h                  # box height in mask pixels
    cx, cy = (x0 + x1) / 2 * w, (y0 + y1) / 2 * h
    # Output pixel (r, c) ← input (cy + (r + .5 - H/2) * bh / H, cx + (c + .5 - W/2) * bh / H).
    r = (np.arange(WORK_H) + 0.5 - WORK_H / 2) * bh / WORK_H + cy
    c = (np.arange(WORK_W) + 0.5 - WORK_W / 2) * bh / WORK_H + cx
    out = ndimage.map_coordinates(mask.astype(np.float32), np.meshgrid(r - 0.5, c - 0.5, indexing="ij"),
                                  order=1, mode="constant", cval=0.0)
    return out > 0.5


@lru_cache(maxsize=4)
def _templates(elevation: float) -> Tuple[np.ndarray, List[Tuple[float, float]]]:
    """Silhouettes [K, WORK_H*WORK_W] of the default walking body for every (yaw, phase), framed
    to fill the height and centred on their box."""
    combos = [(yaw, phase) for yaw in YAWS for phase in PHASES]
    bodies = Body.walking([p for _, p in combos], yaw=torch.tensor([y for y, _ in combos]))
    cam = frame_camera(bodies.segments(), bodies.yaw, WORK_H, WORK_W, elevation=elevation, fill=1.0)
    _, part = render_maps(bodies, cam, WORK_H, WORK_W)
    return (part > 0).reshape(len(combos), -1).numpy(), combos


def _skin_fraction(arr: np.ndarray, mask: np.ndarray, box: Tuple[float, float, float, float]) -> float:
    """Fraction of skin-coloured pixels in the head region (top 12% of the box) of the mask."""
    h, w = mask.shape
    x0, y0, x1, y1 = box
    top, bottom = int(y0 * h), int(math.ceil((y0 + 0.12 * (y1 - y0)) * h))
    region = mask[top:bottom]
    if region.sum() == 0:
        return 0.0
    rgb = arr[top:bottom][region]
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    skin = (r > g) & (g > b) & (r - b > 0.08) & (r > 0.25) & ((r - g) < 0.5 * (r - b) + 0.08) & (g - b > 0.02)
    return float(skin.mean())


# Head region of a detector crop (rows, columns as fractions) and the front/back cue threshold.
HEAD_REGION = (0.03, 0.16, 0.3, 0.7)
FRONT_THRESHOLD = 0.05


# The border colour model finds the person on smooth backgrounds (synthetic or studio images) but
# not on the textured floors and walls of surveillance crops. Texture = mean absolute vertical step
# between neighbouring pixels in the 4 leftmost and rightmost columns (64×32 working size, RGB in
# [0, 1]): 0.013–0.021 on SynthReID (10th–90th percentile), 0.031–0.059 on Market-1501.
SMOOTH_BACKGROUND = 0.03


def background_texture(arr: np.ndarray) -> float:
    """How textured the left and right borders of an image are (see :data:`SMOOTH_BACKGROUND`)."""
    a = _resize(arr, WORK_H, WORK_W)
    return float((np.abs(np.diff(a[:, :4], axis=0)).mean() + np.abs(np.diff(a[:, -4:], axis=0)).mean()) / 2)


# Blurred or dark Market-1501 crops can have borders that pass as smooth (texture 0.021–0.028) and
# then got side views (90°, 270°) from the silhouette search for people walking away: their masks
# match no body (best template IoU × mask contrast 0.13). Where the texture is borderline — above
# SMOOTH_CLEAR, which 95 % of SynthReID crops stay under — the silhouette search is used only if the
# mask matches a body at least SILHOUETTE_MIN_MATCH (2 of 1032 SynthReID demo crops fall below both).
SMOOTH_CLEAR = 0.022
SILHOUETTE_MIN_MATCH = 0.2


def _is_silhouette(arr: np.ndarray) -> bool:
    """Whether the border-model mask is trusted as the person's silhouette: a smooth background."""
    return background_texture(arr) < SMOOTH_BACKGROUND


def _skin(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (r > g) & (g > b) & (r - b > 0.08) & (r > 0.25) & ((r - g) < 0.5 * (r - b) + 0.08) & (g - b > 0.02)


def head_front_score(arr: np.ndarray, region: Tuple[float, float, float, float] = HEAD_REGION) -> float:
    """Face-vs-hair evidence in the head region of a detector crop: the fraction of skin-coloured
    pixels minus 0.4 × the fraction of dark (hair) ones. On the labelled Market-1501 crops the
    median is 0.11 for people facing the camera and −0.21 for people facing away."""
    h, w = arr.shape[:2]
    r0, r1, c0, c1 = region
    head = arr[int(r0 * h):max(int(r0 * h) + 1, int(r1 * h)), int(c0 * w):max(int(c0 * w) + 1, int(c1 * w))]
    return float(_skin(head).mean() - 0.4 * (head.max(-1) < 0.25).mean())


def estimate_fallback(image, elevation: float = DEFAULT_ELEVATION, skin_threshold: float = 0.35,
                      hints=None) -> Estimate:
    """The dependency-free estimate: mask → box → best (yaw, phase) silhouette → default-shape body.

    On a smooth background (:func:`background_texture`: synthetic or studio images), where the
    border colour model finds the silhouette: the box comes from the mask, the yaw and gait phase
    from the best-matching silhouette; front vs back (θ and its twin 180° − θ fit almost equally)
    from the skin fraction of the mask's head (face visible → facing the camera); reason
    ``silhouette``. On a textured background (surveillance crops, where the mask covers about half
    the person): the detector-crop box (:data:`PRIOR_TOP`, :data:`PRIOR_BOTTOM`) centred on the
    mask's columns, facing the camera or away from it by :func:`head_front_score`; reason ``prior``.

    ``hints`` (optional, a :class:`gclreid.structures.landmarks.Rejected` from MediaPipe): its
    person mask, when it spans a plausible height, gives the head top and feet rows.
    """
    arr = to_array(image)
    work = _resize(arr, WORK_H, WORK_W)
    mask, quality = person_mask(arr)
    hint_extent = None
    hint_mask = getattr(hints, "mask", None)
    if hint_mask is not None:
        from .landmarks import mask_extent
        found = mask_extent(hint_mask)
        if found is not None and found[1] - found[0] >= 0.6:
            hint_extent = found
    if quality <= 0.0:
        box = default_box()
        if hint_extent is not None:
            box = (box[0], hint_extent[0], box[2], hint_extent[1])
        yaw = 0.0 if head_front_score(arr) > FRONT_THRESHOLD else 180.0
        walking = Body.walking([0.0], yaw=yaw)
        return Estimate(walking.pose[0], default_shape(1)[0], yaw, box, "fallback", 0.0, elevation, walking.trans[0],
                        quality=0.0, reason="no_mask", kind="walking")
    x0, y0, x1, y1 = mask_box(mask)
    templates, combos = _templates(float(elevation))
    box = person_box(mask)
    target = _normalise(mask, box).reshape(-1)
    inter = templates @ target.astype(np.float32)
    union = templates.sum(1) + target.sum() - inter
    iou = inter / np.maximum(union, 1)
    per_yaw = iou.reshape(len(YAWS), len(PHASES))
    texture = background_texture(arr)
    matched = float(per_yaw.max()) * quality >= SILHOUETTE_MIN_MATCH
    if texture < SMOOTH_BACKGROUND and (texture < SMOOTH_CLEAR or matched):
        # Best IoU per yaw (over phases), then resolve front/back within the best yaw pair.
        best_yaw_idx = int(np.argmax(per_yaw.max(1)))
        yaw = YAWS[best_yaw_idx]
        twin = (180.0 - yaw) % 360.0
        facing_front = _skin_fraction(work, mask, box) >= skin_threshold
        if twin in YAWS:
            yaw_is_front = math.cos(math.radians(yaw)) > 0
            if yaw_is_front != facing_front and abs(math.cos(math.radians(yaw))) > 1e-6:
                yaw = twin
        k = YAWS.index(yaw)
        phase = PHASES[int(np.argmax(per_yaw[k]))]
        confidence = float(per_yaw[k].max()) * quality
        reason = "silhouette"
    else:
        cx = float(np.clip((x0 + x1) / 2, 0.4, 0.6))
        box = (cx - 0.25, PRIOR_TOP, cx + 0.25, PRIOR_BOTTOM)
        yaw = 0.0 if head_front_score(arr) > FRONT_THRESHOLD else 180.0
        phase = 0.0
        confidence = 0.25 * quality
        reason = "prior"
    if hint_extent is not None:
        box = (box[0], hint_extent[0], box[2], hint_extent[1])
    walking = Body.walking([phase], yaw=yaw)
    return Estimate(walking.pose[0], default_shape(1)[0], float(yaw), box, "fallback", confidence, elevation,
                    walking.trans[0], quality=confidence, reason=reason, kind="walking")


def bodies_and_cameras(estimates: Sequence[Estimate], height: int, width: int) -> Tuple[Body, OrthoCamera]:
    """A batch of bodies and the cameras that put each body on its box in a ``height``×``width`` map."""
    pose = torch.stack([e.pose for e in estimates])
    shape = torch.stack([e.shape for e in estimates])
    trans = torch.stack([e.trans if e.trans is not None else torch.zeros(3) for e in estimates])
    yaw = torch.tensor([e.yaw for e in estimates], dtype=torch.float32)
    bodies = Body(pose, shape, yaw, trans)
    el = torch.tensor([e.elevation for e in estimates], dtype=torch.float32)
    cam = frame_camera(bodies.segments(), yaw, height, width, elevation=el, fill=1.0)
    box = torch.tensor([e.box for e in estimates], dtype=torch.float32)
    fill = (box[:, 3] - box[:, 1]).clamp_min(1e-3)
    # Scale about the image centre to the box height, then move the centre onto the box centre.
    cx = (box[:, 0] + box[:, 2]) / 2 * width + (cam.cx - width / 2) * fill
    cy = (box[:, 1] + box[:, 3]) / 2 * height + (cam.cy - height / 2) * fill
    scale = cam.scale * fill
    for i, e in enumerate(estimates):
        if e.pelvis_x is not None:
            cx[i] = e.pelvis_x * width
        if e.camera is not None:
            scale[i] = e.camera[0] * height
            cx[i] = e.camera[1] * width
            cy[i] = e.camera[2] * height
    return bodies, OrthoCamera(scale, cx, cy, el)


# Rotated maps keep the body this many pixels inside the frame.
FRAME_MARGIN = 1.0


def _view_bounds(camera: OrthoCamera, segments, yaw: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """(x0, x1, y0, y1) [N] pixel bounds of the active primitives of each body seen by ``camera``."""
    x0, x1, y0, y1 = segment_bounds(camera.project(segments, yaw))
    big = torch.finfo(x0.dtype).max
    act = segments.active
    return (torch.where(act, x0, big).amin(1), torch.where(act, x1, -big).amax(1),
            torch.where(act, y0, big).amin(1), torch.where(act, y1, -big).amax(1))


def turned_cameras(bodies: Body, camera: OrthoCamera, angles: Sequence[float], height: int, width: int,
                   margin: float = FRAME_MARGIN) -> Tuple[Body, OrthoCamera]:
    """Bodies turned by each angle (about the vertical axis through the pelvis) and, for each, the
    camera of the original view moved so that the turned body stays inside the map.

    A turned view keeps the original view's scale and, as long as it fits, its vertical placement;
    it is shifted sideways (and up or down) by the least amount that keeps every part of the body
    within ``margin`` pixels of the left and right borders, and of the top and bottom ones unless
    the original view reaches further (a person cut by the crop stays cut the same way), and it is
    scaled down about the pelvis only if it is too wide or too tall to fit at all. The original
    (0°) view keeps its camera: it shows the body where the person is in the image.
    Returns (bodies, cameras), ``len(bodies) * len(angles)`` of each, angle-minor.
    """
    n, k = len(bodies), len(angles)
    ang = torch.as_tensor(list(angles), dtype=torch.float32)
    rep = torch.arange(n).repeat_interleave(k)
    yaw = (bodies.yaw[:, None] + ang[None]).reshape(-1)
    turned = Body(bodies.pose[rep], bodies.shape[rep], yaw, bodies.trans[rep])
    cam = camera.repeat_interleave(k)
    segments = bodies.segments()
    x0, x1, y0, y1 = _view_bounds(cam, segments.select(rep), yaw)
    _, _, by0, by1 = (t.repeat_interleave(k) for t in _view_bounds(camera, segments, bodies.yaw))
    lo_x, hi_x = torch.full_like(x0, margin), torch.full_like(x1, width - margin)
    lo_y = torch.minimum(torch.full_like(by0, margin), by0)
    hi_y = torch.maximum(torch.full_like(by1, height - margin), by1)
    cx, cy = cam.cx, cam.cy
    # Too wide or too tall to fit: scale about the pelvis.
    shrink = torch.minimum((hi_x - lo_x) / (x1 - x0).clamp_min(1e-6),
                           (hi_y - lo_y) / (y1 - y0).clamp_min(1e-6)).clamp(max=1.0)
    sx0, sx1 = cx + (x0 - cx) * shrink, cx + (x1 - cx) * shrink
    sy0, sy1 = cy + (y0 - cy) * shrink, cy + (y1 - cy) * shrink
    dx = torch.where(sx0 < lo_x, lo_x - sx0, torch.where(sx1 > hi_x, hi_x - sx1, torch.zeros_like(sx0)))
    dy = torch.where(sy0 < lo_y, lo_y - sy0, torch.where(sy1 > hi_y, hi_y - sy1, torch.zeros_like(sy0)))
    scale = cam.scale * shrink
    zero = (ang.repeat(n) % 360.0) == 0.0
    dx = torch.where(zero, torch.zeros_like(dx), dx)
    dy = torch.where(zero, torch.zeros_like(dy), dy)
    scale = torch.where(zero, cam.scale, scale)
    return turned, OrthoCamera(scale, cx + dx, cy + dy, cam.elevation)


def render_turned(bodies: Body, camera: OrthoCamera, angles: Sequence[float], height: int, width: int) -> torch.Tensor:
    """uint8 [N, len(angles), H, W]: each body turned by each angle, kept inside the frame
    (:func:`turned_cameras`)."""
    turned, cams = turned_cameras(bodies, camera, angles, height, width)
    n, k = len(bodies), len(angles)
    seg = bodies.segments().select(torch.arange(n).repeat_interleave(k))
    grey = render_grey(turned, cams, height, width, segments=seg)
    return grey.view(n, k, height, width)
