"""Clothes and accessories: extra primitives (long hair, skirt, backpack, bag, hat) and per-pixel albedo.

The albedo of a covered pixel is picked from a per-person material table by rules on the part id
and the hit point's primitive coordinates (``Surface.local``: side / along-axis / forward offsets
in units of the local radius; ``Surface.axial``: 0..1 along the segment). ``forward > 0`` is the
front of the person, which is how front prints, open jackets and back panels differ by view.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..body.model import BODY_SEGMENT_NAMES, PART_INDEX, Segments
from ..body.raster import Surface
from ..body.skeleton import JOINT_INDEX, SHAPE_INDEX
from .identity import Identity

MATERIALS = ("skin", "hair", "upper", "upper2", "print", "inner", "lower", "shoes", "backpack", "bag", "hat",
             "strap", "eyes")
M = {name: i for i, name in enumerate(MATERIALS)}
_PATTERNS = {"plain": 0, "hstripes": 1, "vstripes": 2, "checks": 3}
_PRINTS = {None: 0, "circle": 1, "square": 2, "band": 3}
_LOWER = {"trousers": 0, "shorts": 1, "skirt": 2}
_HAIR = {"short": 0, "long": 1, "bald": 2, "ponytail": 3}

# Accessory slots, in order; each is active only for the people who have the item.
ACCESSORY_SLOTS = ("hair_back", "ponytail", "skirt", "backpack", "pack_strap_l", "pack_strap_r", "bag",
                   "bag_strap_front_1", "bag_strap_front_2", "bag_strap_back_1", "bag_strap_back_2",
                   "hat_crown", "hat_brim")
_SLOT_PART = {"hair_back": "hair", "ponytail": "hair", "skirt": "skirt", "backpack": "backpack",
              "pack_strap_l": "strap", "pack_strap_r": "strap", "bag": "bag", "bag_strap_front_1": "strap",
              "bag_strap_front_2": "strap", "bag_strap_back_1": "strap", "bag_strap_back_2": "strap",
              "hat_crown": "hat", "hat_brim": "hat"}


@dataclass
class Outfit:
    """Per-person clothing as tensors for N bodies (one row per rendered body)."""
    colors: Tensor      # [N, len(MATERIALS), 3]
    pattern: Tensor     # [N] 0 plain, 1 hstripes, 2 vstripes, 3 checks
    stripe: Tensor      # [N] stripe width, metres
    front_print: Tensor  # [N] 0 none, 1 circle, 2 square, 3 band
    open_front: Tensor  # [N] bool
    back_panel: Tensor  # [N] bool
    long_sleeves: Tensor  # [N] bool
    lower: Tensor       # [N] 0 trousers, 1 shorts, 2 skirt
    hair: Tensor        # [N] 0 short, 1 long, 2 bald, 3 ponytail
    backpack: Tensor    # [N] bool
    bag: Tensor         # [N] bool
    bag_side: Tensor    # [N] +1 left, -1 right
    hat: Tensor         # [N] bool
    skirt_len: Tensor   # [N] fraction of stature
    jacket: Tensor      # [N] bool
    pattern_front: Tensor  # [N] bool: pattern on the front only
    rules: Optional[Tensor] = None  # cache of the per-(body, part) material rules (see albedo)

    @staticmethod
    def from_identities(people: Sequence[Identity]) -> "Outfit":
        def col(rgb):
            return list(rgb) if rgb is not None else [0.5, 0.5, 0.5]

        rows = []
        for p in people:
            u = p.upper
            table = {"skin": p.skin, "hair": p.hair_color, "upper": u.color, "upper2": u.color2,
                     "print": u.print_color, "inner": u.inner_color, "lower": p.lower_color, "shoes": p.shoes,
                     "backpack": p.backpack, "bag": p.bag, "hat": p.hat, "strap": (0.12, 0.11, 0.10),
                     "eyes": (0.10, 0.07, 0.05)}
            rows.append([col(table[m]) for m in MATERIALS])

        def t(values, dtype=torch.float32):
            return torch.tensor(values, dtype=dtype)

        return Outfit(
            colors=t(rows),
            pattern=t([_PATTERNS[p.upper.pattern] for p in people], torch.long),
            stripe=t([p.upper.stripe for p in people]),
            front_print=t([_PRINTS[p.upper.front_print] for p in people], torch.long),
            open_front=t([p.upper.open_front for p in people], torch.bool),
            back_panel=t([p.upper.back_panel for p in people], torch.bool),
            long_sleeves=t([p.upper.sleeves == "long" for p in people], torch.bool),
            lower=t([_LOWER[p.lower_kind] for p in people], torch.long),
            hair=t([_HAIR[p.hair_style] for p in people], torch.long),
            backpack=t([p.backpack is not None for p in people], torch.bool),
            bag=t([p.bag is not None for p in people], torch.bool),
            bag_side=t([1.0 if p.bag_side == "l" else -1.0 for p in people]),
            hat=t([p.hat is not None for p in people], torch.bool),
            skirt_len=t([p.skirt_length for p in people]),
            jacket=t([p.upper.kind == "jacket" for p in people], torch.bool),
            pattern_front=t([p.upper.pattern_front_only for p in people], torch.bool),
        )


def garment_bulk(outfit: Outfit) -> Tuple[Tensor, Tensor]:
    """Radius factors (at a, at b) [N, body slots] that clothes add to the bare body in colour renders.

    Sleeves and trouser legs are wider than the limbs inside them and hang straight (a trouser leg
    is almost as wide at the ankle as at the knee); jackets add bulk to the torso and arms. The
    structure maps keep the bare body, as an SMPL fit would.
    """
    n = outfit.pattern.shape[0]
    fa = torch.ones(n, len(BODY_SEGMENT_NAMES))
    fb = torch.ones(n, len(BODY_SEGMENT_NAMES))
    idx = {name: i for i, name in enumerate(BODY_SEGMENT_NAMES)}
    jacket = outfit.jacket.float()
    long_sl = outfit.long_sleeves.float()
    trousers = (outfit.lower == 0).float()
    for name in ("chest", "shoulders"):
        fa[:, idx[name]] = fb[:, idx[name]] = 1.03 + 0.06 * jacket
    fa[:, idx["pelvis"]] = fb[:, idx["pelvis"]] = 1.03
    for side in ("l", "r"):
        fa[:, idx[f"{side}_upper_arm"]] = 1.08 + 0.08 * jacket
        fb[:, idx[f"{side}_upper_arm"]] = 1.0 + 0.2 * long_sl + 0.1 * jacket
        fa[:, idx[f"{side}_forearm"]] = 1.0 + 0.2 * long_sl + 0.1 * jacket
        fb[:, idx[f"{side}_forearm"]] = 1.0 + 0.3 * long_sl + 0.1 * jacket
        fa[:, idx[f"{side}_thigh"]] = 1.04
        fb[:, idx[f"{side}_thigh"]] = 1.0 + 0.12 * trousers
        fa[:, idx[f"{side}_shin"]] = 1.0 + 0.12 * trousers
        fb[:, idx[f"{side}_shin"]] = 1.0 + 0.45 * trousers
        fa[:, idx[f"{side}_foot"]] = fb[:, idx[f"{side}_foot"]] = 1.12
    return fa, fb


def accessory_segments(joints: Tensor, rots: Tensor, shape: Tensor, outfit: Outfit) -> Segments:
    """The accessory primitives (see ``ACCESSORY_SLOTS``) in the body frame, inactive where absent."""
    n = joints.shape[0]
    h = shape[:, SHAPE_INDEX["height"]]
    girth = shape[:, SHAPE_INDEX["girth"]]
    hip = shape[:, SHAPE_INDEX["hip"]]
    head = shape[:, SHAPE_INDEX["head"]]
    dev, dt = joints.device, joints.dtype

    def pt(joint: str, x, y, z) -> Tensor:
        """Point in a joint's frame; offsets are fractions of stature, scalars or [N] tensors."""
        off = torch.stack([torch.as_tensor(c, dtype=dt, device=dev).expand(n) for c in (x, y, z)], -1)
        return joints[:, JOINT_INDEX[joint]] + (rots[:, JOINT_INDEX[joint]] @ (off * h[:, None])[..., None])[..., 0]

    def axis(joint: str, v) -> Tensor:
        return rots[:, JOINT_INDEX[joint]] @ torch.tensor(v, dtype=dt, device=dev)

    side = outfit.bag_side.to(dev)
    depth = 0.057 * girth            # chest half-depth (matches the chest segment)
    slots = {
        # name: (a, b, ra, rb, fwd, scale (side, axis, forward), active)
        "hair_back": (pt("head", 0, 0.078, -0.028), pt("head", 0, -0.015, -0.042), 0.047 * head, 0.038 * head,
                      axis("head", (0, 0, 1)), (1.0, 1.0, 0.55), outfit.hair == 1),
        "ponytail": (pt("head", 0, 0.06, -0.05), pt("head", 0, -0.035, -0.07), 0.017 * head, 0.011 * head,
                     axis("head", (0, 0, 1)), (1.0, 1.0, 1.0), outfit.hair == 3),
        "skirt": (pt("pelvis", 0, 0.005, 0), pt("pelvis", 0, -outfit.skirt_len.to(dev), 0.0),
                  0.094 * (0.6 * hip + 0.4 * girth), 0.125 * (0.6 * hip + 0.4 * girth),
                  axis("pelvis", (0, 0, 1)), (1.0, 0.15, 0.72), outfit.lower == 2),
        "backpack": (pt("chest", 0, 0.035, -(depth + 0.028)), pt("chest", 0, -0.095, -(depth + 0.028)),
                     0.074 * girth ** 0.5, 0.07 * girth ** 0.5, axis("chest", (0, 0, 1)), (0.95, 0.6, 0.42),
                     outfit.backpack),
        "pack_strap_l": (pt("chest", 0.068, 0.078, 0.0), pt("chest", 0.072, -0.06, depth * 0.95),
                         0.0075 + 0 * h, 0.0075 + 0 * h, axis("chest", (0, 0, 1)), (1.0, 1.0, 1.0), outfit.backpack),
        "pack_strap_r": (pt("chest", -0.068, 0.078, 0.0), pt("chest", -0.072, -0.06, depth * 0.95),
                         0.0075 + 0 * h, 0.0075 + 0 * h, axis("chest", (0, 0, 1)), (1.0, 1.0, 1.0), outfit.backpack),
        "bag": (pt("pelvis", side * 0.128 * hip, 0.005, 0.01), pt("pelvis", side * 0.128 * hip, -0.085, 0.01),
                0.05 + 0 * h, 0.052 + 0 * h, axis("pelvis", (0, 0, 1)), (0.45, 0.5, 1.0), outfit.bag),
        "bag_strap_front_1": (pt("chest", -side * 0.085, 0.078, 0.0), pt("chest", 0, -0.01, depth * 0.98),
                              0.006 + 0 * h, 0.006 + 0 * h, axis("chest", (0, 0, 1)), (1.0, 1.0, 1.0), outfit.bag),
        "bag_strap_front_2": (pt("chest", 0, -0.01, depth * 0.98), pt("pelvis", side * 0.12 * hip, 0.04, 0.02),
                              0.006 + 0 * h, 0.006 + 0 * h, axis("chest", (0, 0, 1)), (1.0, 1.0, 1.0), outfit.bag),
        "bag_strap_back_1": (pt("chest", -side * 0.085, 0.078, 0.0), pt("chest", 0, -0.01, -depth * 0.98),
                             0.006 + 0 * h, 0.006 + 0 * h, axis("chest", (0, 0, 1)), (1.0, 1.0, 1.0), outfit.bag),
        "bag_strap_back_2": (pt("chest", 0, -0.01, -depth * 0.98), pt("pelvis", side * 0.12 * hip, 0.04, -0.01),
                             0.006 + 0 * h, 0.006 + 0 * h, axis("chest", (0, 0, 1)), (1.0, 1.0, 1.0), outfit.bag),
        "hat_crown": (pt("head", 0, 0.088, 0.006), pt("head", 0, 0.1, 0.006), 0.054 * head, 0.053 * head,
                      axis("head", (0, 0, 1)), (0.92, 0.55, 1.06), outfit.hat),
        "hat_brim": (pt("head", 0, 0.083, 0.035), pt("head", 0, 0.083, 0.088), 0.036 * head, 0.03 * head,
                     axis("head", (0, 1, 0)), (1.3, 1.0, 0.12), outfit.hat),
    }
    a, b, ra, rb, fwd, scale, active = [], [], [], [], [], [], []
    for name in ACCESSORY_SLOTS:
        pa, pb, r0, r1, f, sc, act = slots[name]
        a.append(pa)
        b.append(pb)
        ra.append(torch.as_tensor(r0, dtype=dt, device=dev).expand(n) * h)
        rb.append(torch.as_tensor(r1, dtype=dt, device=dev).expand(n) * h)
        fwd.append(f)
        scale.append(torch.tensor(sc, dtype=dt, device=dev).expand(n, 3))
        active.append(act.to(dev))
    part = torch.tensor([PART_INDEX[_SLOT_PART[s]] for s in ACCESSORY_SLOTS], dtype=torch.long, device=dev)
    return Segments(a=torch.stack(a, 1), b=torch.stack(b, 1), ra=torch.stack(ra, 1), rb=torch.stack(rb, 1),
                    fwd=torch.stack(fwd, 1), scale=torch.stack(scale, 1), part=part, active=torch.stack(active, 1))


def _parity(x: Tensor) -> Tensor:
    """1.0 where floor(x) is odd, else 0.0 (exact arithmetic, no transcendental functions)."""
    f = torch.floor(x)
    return f - 2.0 * torch.floor(f * 0.5)


def _part_rules(outfit: Outfit) -> Tensor:
    """Per (body, part) material rule [3, N * num_parts]: (threshold, material below, material above).

    A pixel of part p on body n gets ``below`` where its axial coordinate < threshold, else
    ``above`` (threshold 2 = always ``below``): sleeves, shorts, the shirt hem, shoes at the ankle.
    """
    from ..body.model import PART_NAMES
    n = outfit.pattern.shape[0]
    num = len(PART_NAMES)
    thr = torch.full((n, num), 2.0)
    below = torch.full((n, num), M["skin"], dtype=torch.float32)
    above = torch.full((n, num), M["skin"], dtype=torch.float32)

    def setp(name: str, t, b, a=None) -> None:
        i = PART_INDEX[name]
        thr[:, i] = torch.as_tensor(t, dtype=torch.float32)
        below[:, i] = torch.as_tensor(b, dtype=torch.float32)
        above[:, i] = torch.as_tensor(b if a is None else a, dtype=torch.float32)

    long_sl = outfit.long_sleeves.float()
    lower = outfit.lower
    up, sk, lo, sh = float(M["upper"]), float(M["skin"]), float(M["lower"]), float(M["shoes"])
    for name in ("chest", "shoulders"):
        setp(name, 2.0, up)
    setp("pelvis", 0.55, lo, up)                       # shirt over the top of the pelvis
    for side in ("l", "r"):
        setp(f"{side}_upper_arm", 0.5 + 1.5 * long_sl, up, sk)      # short sleeves end mid upper arm
        setp(f"{side}_forearm", 0.92 * long_sl, up, sk)             # long sleeves to the wrist
        trousers = (lower == 0).float()
        shorts = (lower == 1).float()
        setp(f"{side}_thigh", 2.0 * trousers + 0.55 * shorts, lo, sk)
        setp(f"{side}_shin", 0.95, lo * trousers + sk * (1 - trousers), sh)
        setp(f"{side}_foot", 2.0, sh)
    for name, mat in (("hair", "hair"), ("skirt", "lower"), ("backpack", "backpack"), ("bag", "bag"),
                      ("strap", "strap"), ("hat", "hat")):
        setp(name, 2.0, float(M[mat]))
    return torch.stack((thr, below, above)).reshape(3, -1)


def albedo(surf: Surface, outfit: Outfit, torso_len: Tensor) -> Tensor:
    """Base colour [3, M] of every covered pixel.

    ``torso_len`` [N, 2] holds the pelvis and chest segment lengths in metres (for horizontal
    stripes that run continuously over both torso primitives). Rules per part come from a small
    per-body table; patterns, prints, hair and eyes are evaluated on the torso and head pixels only.
    """
    from ..body.model import PART_NAMES
    dev = surf.part.device
    body, part, ax = surf.body, surf.part, surf.axial
    if outfit.rules is None:              # the same for every view of a chunk: build it once
        outfit.rules = _part_rules(outfit)
    rules = outfit.rules.to(dev).index_select(1, body * len(PART_NAMES) + part)
    mat = torch.where(ax < rules[0], rules[1], rules[2]).long()
    P = PART_INDEX

    # Torso garment: stripes / checks, an open front, a front print, a back panel.
    torso = ((part == P["chest"]) | (part == P["shoulders"]) | (part == P["pelvis"])) & (mat == M["upper"])
    ti = torch.nonzero(torso).squeeze(1)
    if len(ti):
        tb, tax, tpart = body[ti], ax[ti], part[ti]
        side, fwd = surf.local[0, ti], surf.local[2, ti]
        lens = torso_len.to(dev)[tb]
        pelvis, chest = tpart == P["pelvis"], tpart == P["chest"]
        height = torch.where(pelvis, tax * lens[:, 0], lens[:, 0] + tax * lens[:, 1])
        stripe = outfit.stripe.to(dev)[tb]
        pattern = outfit.pattern.to(dev)[tb]
        h_bit = _parity(height / stripe) > 0.5
        v_bit = _parity((side * 0.16 + 1.0) / stripe) > 0.5
        bit = ((pattern == 1) & h_bit) | ((pattern == 2) & v_bit) | ((pattern == 3) & (h_bit ^ v_bit))
        front = fwd > 0.0
        bit &= front | ~outfit.pattern_front.to(dev)[tb]
        tm = torch.where(bit, M["upper2"], M["upper"])
        tm = torch.where(outfit.open_front.to(dev)[tb] & front & (side.abs() < 0.45), M["inner"], tm)
        pk = outfit.front_print.to(dev)[tb]
        circle = (side / 0.55) ** 2 + ((tax - 0.55) / 0.33) ** 2 < 1.0
        square = (side.abs() < 0.55) & ((tax - 0.55).abs() < 0.28)
        band = (tax > 0.4) & (tax < 0.68)
        printed = chest & (fwd > 0.25) & (((pk == 1) & circle) | ((pk == 2) & square) | ((pk == 3) & band))
        tm = torch.where(printed, M["print"], tm)
        panel = chest & outfit.back_panel.to(dev)[tb] & (fwd < -0.25) & (side.abs() < 0.75) & (tax > 0.1) & (tax < 0.92)
        mat[ti] = torch.where(panel, M["upper2"], tm)

    # Head: hair on top and at the back (more for long hair), eyes on the face.
    hi = torch.nonzero(part == P["head"]).squeeze(1)
    if len(hi):
        side, along, fwd = surf.local[0, hi], surf.local[1, hi], surf.local[2, hi]
        up = along + (ax[hi] - 0.5) * 0.6
        style = outfit.hair.to(dev)[body[hi]]
        short_hair = (up > 0.42) | ((fwd < -0.25) & (up > -0.5))
        long_hair = (up > 0.38) | ((fwd < 0.0) & (up > -1.3)) | ((side.abs() > 0.75) & (up > -0.6))
        hair = (style != 2) & torch.where((style == 1) | (style == 3), long_hair, short_hair)
        eyes = (fwd > 0.8) & (up > 0.0) & (up < 0.22) & (side.abs() > 0.18) & (side.abs() < 0.45)
        hm = torch.where(hair, M["hair"], torch.where(eyes, M["eyes"], M["skin"]))
        mat[hi] = hm
    colours = outfit.colors.to(dev).reshape(-1, 3)
    return colours.index_select(0, body * len(MATERIALS) + mat).t()
