"""SynthReID identities: persistent attributes of a person (body, gait, skin, hair, clothes, accessories).

Every identity is drawn from its own random stream (``numpy`` Generator seeded with the dataset
seed, a stream tag and the person's index), so a person does not change when other settings (the
number of identities, cameras or workers) change. Many people look different from the front and
from the back (a front print, an open jacket, a back panel, a backpack, long hair): that is what
makes cross-view matching hard and GCL's view invariance useful.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..body.skeleton import DEFAULT_SHAPE, SHAPE_FIELDS

RGB = Tuple[float, float, float]

# Clothing colours (sRGB in [0, 1]) with weights: mostly dark and neutral, some saturated, as in
# street scenes.
_PALETTE: Tuple[Tuple[str, RGB, float], ...] = (
    ("black", (0.08, 0.08, 0.09), 3.0), ("charcoal", (0.25, 0.25, 0.27), 2.0), ("grey", (0.55, 0.55, 0.56), 1.5),
    ("white", (0.92, 0.92, 0.90), 2.0), ("navy", (0.10, 0.14, 0.35), 2.0), ("blue", (0.15, 0.35, 0.75), 1.2),
    ("denim", (0.25, 0.35, 0.55), 1.5), ("sky", (0.50, 0.70, 0.90), 0.7), ("red", (0.75, 0.10, 0.10), 1.0),
    ("maroon", (0.45, 0.08, 0.12), 0.7), ("pink", (0.92, 0.55, 0.65), 0.6), ("orange", (0.92, 0.50, 0.12), 0.5),
    ("yellow", (0.92, 0.82, 0.20), 0.5), ("green", (0.15, 0.50, 0.22), 0.8), ("olive", (0.40, 0.42, 0.20), 0.7),
    ("teal", (0.10, 0.48, 0.50), 0.5), ("purple", (0.42, 0.20, 0.55), 0.5), ("beige", (0.82, 0.74, 0.58), 1.2),
    ("brown", (0.40, 0.26, 0.15), 1.0), ("khaki", (0.62, 0.58, 0.40), 0.8),
)
_SKIN: Tuple[RGB, ...] = (
    (0.96, 0.80, 0.69), (0.92, 0.74, 0.60), (0.85, 0.64, 0.50), (0.76, 0.55, 0.40),
    (0.62, 0.43, 0.30), (0.48, 0.32, 0.22), (0.36, 0.24, 0.17),
)
_HAIR: Tuple[RGB, ...] = (
    (0.05, 0.04, 0.04), (0.15, 0.10, 0.07), (0.30, 0.20, 0.12), (0.50, 0.35, 0.20),
    (0.75, 0.62, 0.40), (0.55, 0.55, 0.55), (0.45, 0.18, 0.10),
)


@dataclass
class Garment:
    """Upper garment: colour, pattern and how front and back differ."""
    kind: str                 # tshirt | shirt | jacket
    sleeves: str              # short | long
    color: RGB
    color2: RGB               # pattern / back panel colour
    pattern: str              # plain | hstripes | vstripes | checks
    stripe: float             # stripe width in metres
    front_print: Optional[str] = None   # None | circle | square | band
    print_color: RGB = (1.0, 1.0, 1.0)
    open_front: bool = False            # open jacket: inner shirt visible in a front band
    inner_color: RGB = (0.9, 0.9, 0.9)
    back_panel: bool = False            # a differently coloured panel on the back
    pattern_front_only: bool = False    # the pattern is printed on the front only (sports / graphic top)


@dataclass
class Identity:
    """All persistent attributes of one SynthReID person (JSON-serialisable via :meth:`to_dict`)."""
    pid: int
    shape: List[float]
    gait: Dict[str, float]
    skin: RGB
    hair_color: RGB
    hair_style: str           # short | long | bald | ponytail
    upper: Garment
    lower_kind: str           # trousers | shorts | skirt
    lower_color: RGB
    shoes: RGB
    backpack: Optional[RGB] = None
    bag: Optional[RGB] = None
    bag_side: str = "l"
    hat: Optional[RGB] = None
    skirt_length: float = 0.2   # skirt length below the pelvis, fraction of stature

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = dict(zip(SHAPE_FIELDS, self.shape))
        return d

    def differs_front_back(self) -> bool:
        """Whether front and back views of this person differ in clothing or accessories."""
        u = self.upper
        return bool(u.front_print or u.open_front or u.back_panel or self.backpack
                    or (u.pattern != "plain" and u.pattern_front_only) or self.hair_style in ("long", "ponytail"))


def _colour(rng: np.random.Generator, avoid: Optional[RGB] = None) -> RGB:
    weights = np.array([w for _, _, w in _PALETTE])
    for _ in range(8):
        base = np.array(_PALETTE[rng.choice(len(_PALETTE), p=weights / weights.sum())][1])
        if avoid is None or np.abs(base - np.array(avoid)).sum() > 0.35:
            break
    jitter = rng.normal(0.0, 0.04, size=3)
    return tuple(float(x) for x in np.clip(base * rng.uniform(0.85, 1.12) + jitter, 0.02, 0.98))


def _jitter(rng: np.random.Generator, rgb: RGB, sigma: float = 0.03) -> RGB:
    return tuple(float(x) for x in np.clip(np.array(rgb) + rng.normal(0.0, sigma, size=3), 0.0, 1.0))


def sample_identity(seed: int, index: int, pid: int) -> Identity:
    """The identity with dataset-wide index ``index`` (its own random stream), named ``pid``."""
    rng = np.random.default_rng([int(seed), 0x1D, int(index)])
    feminine = rng.random() < 0.45
    shape = np.array(DEFAULT_SHAPE, dtype=float)
    s = dict(zip(SHAPE_FIELDS, range(len(SHAPE_FIELDS))))
    shape[s["height"]] = rng.normal(1.63 if feminine else 1.76, 0.065)
    shape[s["leg"]] = rng.normal(1.0, 0.035)
    shape[s["arm"]] = rng.normal(1.0, 0.03)
    shape[s["torso"]] = rng.normal(1.0, 0.035)
    shape[s["shoulder"]] = rng.normal(0.93 if feminine else 1.03, 0.05)
    shape[s["hip"]] = rng.normal(1.07 if feminine else 0.98, 0.05)
    girth = float(np.clip(rng.lognormal(0.0, 0.12), 0.8, 1.45))
    shape[s["girth"]] = girth
    shape[s["limb"]] = float(np.clip(girth ** 0.7 * rng.normal(0.97 if feminine else 1.02, 0.05), 0.8, 1.35))
    shape[s["head"]] = rng.normal(1.0, 0.04)
    gait = {"stride": float(rng.uniform(16, 30)), "arm_swing": float(rng.uniform(8, 28)),
            "knee": float(rng.uniform(40, 62)), "elbow": float(rng.uniform(8, 35)),
            "arm_out": float(rng.uniform(4, 10)), "lean": float(rng.uniform(0, 6))}

    skin = _jitter(rng, _SKIN[rng.integers(len(_SKIN))], 0.02)
    hair_color = _jitter(rng, _HAIR[rng.integers(len(_HAIR))], 0.02)
    if feminine:
        hair_style = str(rng.choice(["long", "ponytail", "short"], p=[0.55, 0.25, 0.20]))
    else:
        hair_style = str(rng.choice(["short", "bald", "long"], p=[0.85, 0.08, 0.07]))

    kind = str(rng.choice(["tshirt", "shirt", "jacket"], p=[0.45, 0.25, 0.30]))
    sleeves = "long" if kind == "jacket" else str(rng.choice(["short", "long"], p=[0.6, 0.4]))
    color = _colour(rng)
    color2 = _colour(rng, avoid=color)
    pattern = str(rng.choice(["plain", "hstripes", "vstripes", "checks"], p=[0.55, 0.2, 0.1, 0.15]))
    upper = Garment(kind=kind, sleeves=sleeves, color=color, color2=color2, pattern=pattern,
                    stripe=float(rng.uniform(0.03, 0.07)), pattern_front_only=bool(rng.random() < 0.5))
    if kind != "jacket" and rng.random() < 0.55:
        upper.front_print = str(rng.choice(["circle", "square", "band"]))
        upper.print_color = _colour(rng, avoid=color)
    if kind == "jacket" and rng.random() < 0.75:
        upper.open_front = True
        upper.inner_color = _colour(rng, avoid=color)
    if rng.random() < 0.35:
        upper.back_panel = True

    lower_kind = str(rng.choice(["trousers", "shorts", "skirt"], p=[0.55, 0.15, 0.30] if feminine else [0.82, 0.18, 0.0]))
    lower_color = _colour(rng, avoid=color)
    shoes = _colour(rng)
    ident = Identity(pid=pid, shape=[float(x) for x in shape], gait=gait, skin=skin, hair_color=hair_color,
                     hair_style=hair_style, upper=upper, lower_kind=lower_kind, lower_color=lower_color, shoes=shoes,
                     skirt_length=float(rng.uniform(0.15, 0.24)))
    if rng.random() < 0.35:
        ident.backpack = _colour(rng)
    if rng.random() < 0.2:
        ident.bag = _colour(rng)
        ident.bag_side = str(rng.choice(["l", "r"]))
    if rng.random() < 0.12:
        ident.hat = _colour(rng)
    return ident


def identity_from_dict(d: dict) -> Identity:
    """Inverse of :meth:`Identity.to_dict` (for reading ``synthreid.json``; extra keys are ignored)."""
    known = {f.name for f in fields(Identity)}
    d = {k: v for k, v in d.items() if k in known}
    d["shape"] = [float(d["shape"][k]) for k in SHAPE_FIELDS]
    d["upper"] = Garment(**{k: tuple(v) if isinstance(v, list) else v for k, v in d["upper"].items()})
    for key in ("skin", "hair_color", "lower_color", "shoes", "backpack", "bag", "hat"):
        if d.get(key) is not None:
            d[key] = tuple(d[key])
    return Identity(**d)
