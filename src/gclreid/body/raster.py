"""Exact, batched ray casting of round cones under an orthographic camera (torch, CPU or GPU).

Every pixel ``(X, Y)`` shoots the ray ``(X, Y, t)``, ``t`` = depth. For one primitive, moved into
its local frame (where it is an ordinary round cone), the ray's entry point solves a quadratic in
``t`` whose coefficients are polynomials of degree <= 2 in the pixel offsets ``u = X - a_x`` and
``v = Y - a_y``. Those polynomial coefficients are computed once per primitive; per pixel only a
few multiply-adds, a square root and some comparisons remain, evaluated on small windows (the
lateral surface on the primitive's bounding box, each end sphere on its own; separable row ×
column grids) rather than the whole image.

The z-buffer holds one float per pixel, ``floor(16 * depth + offset) * 256 + slot``: the smallest
key is the front-most surface and its low bits name the primitive, so the depth test is a single
``scatter_reduce(amin)``; the deferred pass then re-derives the surface (normal, local
coordinates) only at covered pixels. All per-pixel arithmetic is IEEE-exact (+ - * / sqrt floor
min), so results do not depend on batch size, window size or thread count.

Derivation (round cone, sphere centres A=0 and B=ba, radii ra, rb; ray o + t r): the lateral
surface is the cone tangent to both spheres, ``d2 (l2 |p|^2 - y^2) = (ra l2 - rr y)^2`` with
``y = p·ba``, ``l2 = |ba|^2``, ``rr = ra - rb``, ``d2 = l2 - rr^2``; its entry root is
``t = (-k1 - sqrt(k1^2 - k0 k2)) / k2`` with ``k2 = d2 |r|^2 - m2^2``,
``k1 = d2 m3 - m1 m2 + rr ra m2``, ``k0 = d2 m5 - m1^2 + 2 ra rr m1 - ra^2 l2`` (``m1 = ba·o``,
``m2 = ba·r``, ``m3 = o·r``, ``m5 = |o|^2``), valid where ``0 < y - ra rr < d2``; elsewhere the
ray enters through one of the spheres.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from .camera import local_frame
from .model import Segments

DEPTH_STEPS = 16.0      # z-buffer depth resolution: 1/16 pixel
DEPTH_OFFSET = 32768.0  # keeps keys positive for depths down to -2048 px
SLOT_BITS = 256.0       # up to 256 primitive slots per body
EMPTY = 1e30           # z-buffer value of an empty pixel (keys of hits are < 2^24)


def _lin_mul(a: Tensor, b: Tensor) -> Tensor:
    """Product of two linear forms (c, cu, cv) → quadratic form (c, cu, cv, cuu, cuv, cvv)."""
    a0, a1, a2 = a.unbind(-1)
    b0, b1, b2 = b.unbind(-1)
    return torch.stack((a0 * b0, a0 * b1 + a1 * b0, a0 * b2 + a2 * b0, a1 * b1, a1 * b2 + a2 * b1, a2 * b2), -1)


def _lin_to_quad(a: Tensor) -> Tensor:
    zero = torch.zeros_like(a[..., :1])
    return torch.cat((a, zero, zero, zero), -1)


def _const(c: Tensor) -> Tensor:
    zero = torch.zeros_like(c)
    return torch.stack((c, zero, zero, zero, zero, zero), -1)


@dataclass
class _Prepared:
    """Per-primitive constants of the intersection, all [N, P] or [N, P, k]."""
    ax: Tensor
    ay: Tensor
    q_side: Tensor   # quadratic form of the lateral discriminant h
    q_k0: Tensor     # quadratic form of k0 (for the cancellation-free root)
    grazing: Tensor  # [N, P] bool: rays nearly parallel to the cone's surface lines (small |k2|)
    l_k1: Tensor     # linear form of k1
    l_y: Tensor      # linear form of y' - t m2 (= m1 - ra rr)
    m2: Tensor
    inv_k2: Tensor
    d2: Tensor
    q_capa: Tensor   # discriminant of the sphere at a
    q_capb: Tensor   # discriminant of the sphere at b
    l_m3: Tensor     # linear form of m3 (o·r)
    inv_qq: Tensor
    side_ok: Tensor  # [N, P] bool: the lateral surface exists (d2 > 0)
    # For the deferred pass (local frame reconstruction)
    finv: Tensor     # [N, P, 3, 3] view offset → normalised local coordinates
    ba: Tensor       # [N, P, 3] local b - a
    ra: Tensor       # normalised radii
    rb: Tensor
    rr: Tensor
    unit: Tensor     # [N, P] the length unit of the local frame (pixels)


def prepare(view: Segments) -> _Prepared:
    """Polynomial coefficients of every primitive's ray intersection (see the module docstring)."""
    frame = local_frame(view)                                   # rows: side, axis, forward
    # Work in a local unit of the primitive's own size so every quantity is O(1) in float32.
    # Offsets u, v and the ray parameter t are measured in that unit too (t * unit = depth in px).
    unit = torch.maximum(torch.maximum(view.ra, view.rb), (view.b - view.a).norm(dim=-1)).clamp_min(1e-3)
    m = frame / view.scale[..., :, None]                          # local = m @ (p - a) / unit
    finv = m / unit[..., None, None]
    g1, g2, r = m[..., 0], m[..., 1], m[..., 2]                  # columns: d local/du, d/dv, ray dir
    g0 = -(view.a[..., 2:3] / unit[..., None]) * r               # ray origins sit at depth 0
    ba = (finv @ (view.b - view.a)[..., None])[..., 0]
    ra, rb = view.ra / unit, view.rb / unit
    rr = ra - rb
    l2 = (ba * ba).sum(-1)
    d2 = l2 - rr * rr

    def dot(x: Tensor, y: Tensor) -> Tensor:
        return (x * y).sum(-1)

    # Linear forms (constant, per u, per v) of m1 = ba·o and m3 = r·o; m2 = ba·r and |r|^2 constant.
    l_m1 = torch.stack((dot(ba, g0), dot(ba, g1), dot(ba, g2)), -1)
    l_m3 = torch.stack((dot(r, g0), dot(r, g1), dot(r, g2)), -1)
    m2 = dot(ba, r)
    qq = dot(r, r)
    m5 = torch.stack((dot(g0, g0), 2 * dot(g0, g1), 2 * dot(g0, g2), dot(g1, g1), 2 * dot(g1, g2), dot(g2, g2)), -1)
    k2 = d2 * qq - m2 * m2
    l_k1 = d2[..., None] * l_m3 - m2[..., None] * l_m1
    l_k1[..., 0] += rr * ra * m2
    q_k0 = d2[..., None] * m5 - _lin_mul(l_m1, l_m1) + _lin_to_quad(2 * (ra * rr)[..., None] * l_m1) - _const(ra * ra * l2)
    q_side = _lin_mul(l_k1, l_k1) - k2[..., None] * q_k0
    # Sphere at a: |o + t r|^2 = ra^2; at b: |o - ba + t r|^2 = rb^2 (m6 = m3 - m2, m7 = m5 - 2 m1 + l2).
    q_capa = _lin_mul(l_m3, l_m3) - qq[..., None] * (m5 - _const(ra * ra))
    l_m6 = l_m3.clone()
    l_m6[..., 0] -= m2
    m7 = m5 - _lin_to_quad(2 * l_m1) + _const(l2)
    q_capb = _lin_mul(l_m6, l_m6) - qq[..., None] * (m7 - _const(rb * rb))
    l_y = l_m1.clone()
    l_y[..., 0] -= ra * rr
    # No lateral surface when one sphere swallows the other (d2 <= 0), and none worth drawing when
    # the rays run exactly along its surface lines (k2 ~ 0: the visible sliver is far below a pixel).
    side_ok = (d2 > 1e-6) & (k2.abs() > 1e-7 * d2.clamp_min(1e-12) * qq)
    # Small |k2| (rays within a few degrees of the cone's surface lines, e.g. a limb pointing at the
    # camera): (-k1 - sqrt h) / k2 cancels badly there, so those primitives use k0 / (sqrt h - k1).
    grazing = k2.abs() < 0.05 * d2.clamp_min(1e-12) * qq
    k2 = torch.where(k2.abs() < 1e-12, torch.full_like(k2, 1e-12), k2)
    return _Prepared(ax=view.a[..., 0], ay=view.a[..., 1], q_side=q_side, q_k0=q_k0, grazing=grazing,
                     l_k1=l_k1, l_y=l_y, m2=m2,
                     inv_k2=1.0 / k2, d2=d2, q_capa=q_capa, q_capb=q_capb, l_m3=l_m3, inv_qq=1.0 / qq,
                     side_ok=side_ok, finv=finv, ba=ba, ra=ra, rb=rb, rr=rr, unit=unit)


def _component_bounds(view: Segments) -> Dict[str, Tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Image bounds (x0, x1, y0, y1) [N, P] of each primitive's parts: the whole round cone (for its
    lateral surface) and the end ellipsoids at ``a`` and ``b`` (its caps)."""
    frame = local_frame(view)
    ext = ((view.scale[..., :, None] * frame) ** 2).sum(-2).sqrt()   # [N, P, 3] extent per unit radius
    ea = view.ra[..., None] * ext
    eb = view.rb[..., None] * ext
    lo_a, hi_a = view.a - ea, view.a + ea
    lo_b, hi_b = view.b - eb, view.b + eb
    lo, hi = torch.minimum(lo_a, lo_b), torch.maximum(hi_a, hi_b)
    return {"side": (lo[..., 0], hi[..., 0], lo[..., 1], hi[..., 1]),
            "cap_a": (lo_a[..., 0], hi_a[..., 0], lo_a[..., 1], hi_a[..., 1]),
            "cap_b": (lo_b[..., 0], hi_b[..., 0], lo_b[..., 1], hi_b[..., 1])}


def _windows(bounds: Tuple[Tensor, Tensor, Tensor, Tensor], active: Tensor, height: int, width: int,
             full_frame: bool = False) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per slot window sizes (max over active bodies) and per (body, slot) window origins."""
    if full_frame:
        any_active = active.any(0).long()
        zero = torch.zeros(active.shape, dtype=torch.long, device=active.device)
        return any_active * height, any_active * width, zero, zero
    x0, x1, y0, y1 = bounds
    # Pixel j has its centre at j + 0.5; cover every centre inside the bounds.
    c0 = torch.ceil(x0 - 0.5)
    r0 = torch.ceil(y0 - 0.5)
    ww = (torch.floor(x1 - 0.5) - c0 + 1).clamp(0, width)
    wh = (torch.floor(y1 - 0.5) - r0 + 1).clamp(0, height)
    visible = active & (x1 > 0) & (x0 < width) & (y1 > 0) & (y0 < height)
    ww = torch.where(visible, ww, torch.zeros_like(ww)).amax(0)
    wh = torch.where(visible, wh, torch.zeros_like(wh)).amax(0)
    # Clamp origins so the (fixed-size) window lies inside the image: no pixel is visited twice.
    c0 = torch.minimum(c0.clamp_min(0), width - ww[None])
    r0 = torch.minimum(r0.clamp_min(0), height - wh[None])
    return wh.long(), ww.long(), r0.long(), c0.long()


def _shared_caps(view: Segments) -> Tensor:
    """[P] bool: slot's cap at ``a`` is exactly another active slot's cap at ``b`` (a shared joint
    sphere such as the elbow or the knee), for every body where the slot is active: draw it once."""
    n, p = view.active.shape
    round_ = (view.scale == 1.0).all(-1)                                # [N, P] circular cross-section
    same = (view.a[:, :, None] == view.b[:, None, :]).all(-1)           # [N, P(a), P(b)]
    same &= view.ra[:, :, None] == view.rb[:, None, :]
    same &= round_[:, :, None] & round_[:, None, :] & view.active[:, None, :]
    same |= ~view.active[:, :, None]                                    # inactive bodies do not care
    same &= ~torch.eye(p, dtype=torch.bool, device=view.a.device)[None]
    return same.all(0).any(1)


# Performance notes (CPU): sqrt of zero or negative numbers, torch.where and fmin are 10-40x slower
# than plain arithmetic in current torch CPU kernels, so misses are expressed arithmetically: the
# discriminant is clamped to a tiny positive value before sqrt and a miss adds MISS to the depth
# via sign(): every operation below is a fast vectorised +, *, min, sign, floor or sqrt.
_TINY = 1e-30
MISS = 1e30


def _part_table(prep: _Prepared, origin: Tuple[Tensor, Tensor], rows: Tuple[Tensor, ...]) -> Tensor:
    """Per-part constants as one contiguous [P, K, N] table: window offsets, the local unit, the
    depth-key scale and the part's polynomial coefficients. Slicing one slot gives every
    per-body constant at once, which keeps Python overhead per part small."""
    r0, c0 = origin
    head = [r0.float() + 0.5, c0.float() + 0.5, prep.ay, prep.ax, 1.0 / prep.unit, prep.unit * DEPTH_STEPS]
    cols = head + [c for r in rows for c in (r.unbind(-1) if r.dim() == 3 else (r,))]
    return torch.stack(cols).permute(2, 0, 1).contiguous()             # [P, K, N]


# Row layout of the part tables (6 header rows: first row and column centres of the window, a_y,
# a_x, 1/unit, depth-key scale).
_R0, _C0, _AY, _AX, _IU, _KS = 0, 1, 2, 3, 4, 5


def _grid(c: Tensor, h: int, w: int, dev) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Window pixel offsets from ``a`` in local units: v, v^2 [n, h, 1] and u, u^2 [n, 1, w].

    Pixel centres are exact (integer + 0.5) before the offset, so a pixel's value does not depend
    on where its window starts: renders are identical whatever the batch and window sizes."""
    rows = c[_R0] + torch.arange(h, device=dev, dtype=torch.float32)[None, :, None]
    cols = c[_C0] + torch.arange(w, device=dev, dtype=torch.float32)[None, None, :]
    v = (rows - c[_AY]) * c[_IU]
    u = (cols - c[_AX]) * c[_IU]
    return v, v * v, u, u * u


def _quad(c: Tensor, k: int, v: Tensor, vv: Tensor, u: Tensor, uu: Tensor) -> Tensor:
    """Quadratic form with coefficients c[k:k+6] = (1, u, v, uu, uv, vv) on the window grid."""
    rows = torch.addcmul(torch.addcmul(c[k], c[k + 2], v), c[k + 5], vv)
    cols = torch.addcmul(c[k + 1] * u, c[k + 3], uu)
    return torch.addcmul(rows + cols, c[k + 4] * v, u)


def _lin(c: Tensor, k: int, v: Tensor, u: Tensor) -> Tensor:
    """Linear form with coefficients c[k:k+3] = (1, u, v) on the window grid."""
    return torch.addcmul(c[k], c[k + 2], v) + c[k + 1] * u


# Lateral table rows after the header: disc (6), k1 (3), y' (3), m2, -1/k2, d2; grazing: k0 (6).
_S_DISC, _S_K1, _S_Y, _S_M2, _S_NIK2, _S_D2 = 6, 12, 15, 18, 19, 20
# Cap table rows after the header: disc (6), m (3), -1/|r|^2.
_C_DISC, _C_M, _C_NIQ = 6, 12, 15


def _lateral_depth(c: Tensor, k0: Optional[Tensor], v: Tensor, vv: Tensor, u: Tensor, uu: Tensor) -> Tensor:
    """Entry depth (local units) into the lateral surface; + MISS where the ray misses it."""
    disc = _quad(c, _S_DISC, v, vv, u, uu)
    sq = disc.clamp_min(_TINY).sqrt_()
    k1 = _lin(c, _S_K1, v, u)
    if k0 is not None:
        # Same root without cancellation: (-k1 - sq) / k2 == k0 / (sq - k1) (rare: limb along the view).
        alt = _quad(k0, 0, v, vv, u, uu) / (sq - k1)
        t = torch.where(k1 >= 0, (k1 + sq).mul_(c[_S_NIK2]), alt)
    else:
        t = k1.add_(sq).mul_(c[_S_NIK2])
    # Valid where disc >= 0 and 0 < y' < d2 (the patch between the two tangent circles).
    y = torch.addcmul(_lin(c, _S_Y, v, u), t, c[_S_M2])
    valid = torch.minimum(disc, (c[_S_D2] - y).mul_(y))
    return t.sub_(valid.sign_().clamp_max_(0.0), alpha=MISS)


def _cap_depth(c: Tensor, v: Tensor, vv: Tensor, u: Tensor, uu: Tensor) -> Tensor:
    """Entry depth (local units) into an end sphere; + MISS where missed."""
    disc = _quad(c, _C_DISC, v, vv, u, uu)
    t = disc.clamp_min(_TINY).sqrt_().add_(_lin(c, _C_M, v, u)).mul_(c[_C_NIQ])
    return t.sub_(disc.sign_().clamp_max_(0.0), alpha=MISS)


def rasterize(view: Segments, height: int, width: int, prep: Optional[_Prepared] = None,
              full_frame: bool = False) -> Tensor:
    """Z-buffer keys [N, H, W] float32 (``>= EMPTY`` where nothing is hit). See :func:`decode_keys`.

    Each primitive is drawn as up to three parts, each on its own window: the lateral surface (on
    the primitive's bounding box) and the two end spheres (on theirs); the z-buffer's minimum over
    the parts is the entry into the round cone. A cap shared with the neighbouring segment (same
    centre and radius, e.g. the knee) is drawn once. ``full_frame=True`` evaluates every part on
    every pixel instead: the same result, many times slower (a reference for tests and benchmarks).
    """
    prep = prepare(view) if prep is None else prep
    n, p = view.num_bodies, view.num_slots
    if p > SLOT_BITS:
        raise ValueError(f"at most {int(SLOT_BITS)} primitive slots per body, got {p}")
    dev = view.a.device
    zbuf = torch.full((n * height * width,), EMPTY, dtype=torch.float32, device=dev)
    bounds = _component_bounds(view)
    l_m6 = prep.l_m3.clone()
    l_m6[..., 0] -= prep.m2                          # the sphere at b: m6 = m3 - m2
    parts = {
        "side": (view.active & prep.side_ok,
                 (prep.q_side, prep.l_k1, prep.l_y, prep.m2, -prep.inv_k2, prep.d2)),
        "cap_a": (view.active & ~_shared_caps(view)[None], (prep.q_capa, prep.l_m3, -prep.inv_qq)),
        "cap_b": (view.active, (prep.q_capb, l_m6, -prep.inv_qq)),
    }
    plans = {}
    for name, (act, rows) in parts.items():
        wh, ww, r0, c0 = _windows(bounds[name], act, height, width, full_frame)
        plans[name] = (act, act.all(0).tolist(), wh.tolist(), ww.tolist(), r0, c0,
                       _part_table(prep, (r0, c0), rows))
    grazing = prep.grazing.any(0).tolist()
    k0_table = prep.q_k0.permute(1, 2, 0).contiguous() if any(grazing) else None   # [P, 6, N]
    base = torch.arange(n, device=dev) * (height * width)
    for s in range(p):
        for name, (act, everyone, wh, ww, r0, c0, table) in plans.items():
            h, w = wh[s], ww[s]
            if h == 0 or w == 0:
                continue
            c = table[s]
            k0 = k0_table[s] if name == "side" and grazing[s] else None
            org = base + r0[:, s] * width + c0[:, s]
            if not everyone[s]:
                # Parts that only some bodies have (accessories, absent lateral surfaces): those only.
                sel = torch.nonzero(act[:, s]).squeeze(1)
                c, org = c[:, sel], org[sel]
                k0 = None if k0 is None else k0[:, sel]
            c = c[:, :, None, None]
            k0 = None if k0 is None else k0[:, :, None, None]
            v, vv, u, uu = _grid(c, h, w, dev)
            t = _lateral_depth(c, k0, v, vv, u, uu) if name == "side" else _cap_depth(c, v, vv, u, uu)
            # Depth in pixels (t is in the local unit) → packed key with the slot in the low bits.
            key = t.mul_(c[_KS]).add_(DEPTH_OFFSET).floor_().mul_(SLOT_BITS).add_(float(s))
            # Depth test: min into the z-buffer at the window's pixels (order-independent, exact).
            idx = (org[:, None, None] + torch.arange(h, device=dev)[None, :, None] * width
                   + torch.arange(w, device=dev)[None, None, :])
            zbuf.scatter_reduce_(0, idx.reshape(-1), key.reshape(-1), "amin")
    return zbuf.view(n, height, width)


def decode_keys(keys: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(covered mask, slot index (long, -1 where empty), depth in pixels (inf where empty))."""
    covered = keys < EMPTY
    safe = torch.where(covered, keys, torch.zeros_like(keys))
    q = torch.floor(safe / SLOT_BITS)
    slot = torch.where(covered, safe - q * SLOT_BITS, torch.full_like(keys, -1)).long()
    depth = torch.where(covered, (q - DEPTH_OFFSET) / DEPTH_STEPS, torch.full_like(keys, float("inf")))
    return covered, slot, depth


@dataclass
class Surface:
    """Surface attributes at the M covered pixels of a render. Vectors are component-major ([3, M]).

    ``local`` is the offset of the hit point from the centre of the inscribed sphere that touches
    it, in the primitive frame (side, axis, forward) and in units of that sphere's radius (a unit
    vector up to the 1/16 px depth quantisation); ``axial`` is that centre's position along the segment (0 at a,
    1 at b). Both are only filled by ``surface(..., full=True)``.
    """
    index: Tensor                  # [M] flat index into [N, H, W]
    body: Tensor                   # [M] body index
    slot: Tensor                   # [M] primitive slot
    part: Tensor                   # [M] part id
    depth: Tensor                  # [M] depth in pixels
    normal: Tensor                 # [3, M] unit outward normal in view space
    local: Optional[Tensor] = None  # [3, M]
    axial: Optional[Tensor] = None  # [M]


def _normals_only(view: Segments, prep: _Prepared, prim: Tensor, col: Tensor, row: Tensor,
                  t: Tensor) -> Tuple[Tensor, Tensor]:
    """Unit view-space normals [3, M] and the touching sphere's axial position ``s*`` [M], with the
    local frame folded into per-primitive constants.

    With ``F`` the view → local map and ``d`` the view offset from ``a``: ``y = d·(F^T ba)``,
    ``rho^2 = d^T (F^T F) d - y^2 / L^2`` and the normal is ``(F^T F) d - s* F^T ba``: 14 numbers
    per primitive, and no local coordinates.
    """
    f = prep.finv
    g = f.transpose(-1, -2) @ f                                          # [N, P, 3, 3] symmetric
    qv = (f.transpose(-1, -2) @ prep.ba[..., None])[..., 0]              # F^T ba
    l2 = (prep.ba * prep.ba).sum(-1).clamp_min(1e-18)
    c = prep.rr * l2.sqrt() / torch.sqrt((l2 - prep.rr * prep.rr).clamp_min(1e-12))
    cols = [view.a, g[..., 0, 0:1], g[..., 1, 1:2], g[..., 2, 2:3], g[..., 0, 1:2], g[..., 0, 2:3], g[..., 1, 2:3],
            qv, (1.0 / l2)[..., None], c[..., None]]
    table = torch.cat(cols, -1)
    tab = table.reshape(-1, table.shape[-1]).t().contiguous().index_select(1, prim)
    gxx, gyy, gzz, gxy, gxz, gyz = (tab[3 + i] for i in range(6))
    qx, qy, qz, inv_l2, cc = tab[9], tab[10], tab[11], tab[12], tab[13]
    dx = col.float().add_(0.5).sub_(tab[0])
    dy = row.float().add_(0.5).sub_(tab[1])
    dz = t - tab[2]
    hx = gxx * dx + gxy * dy + gxz * dz                                   # (F^T F) d
    hy = gxy * dx + gyy * dy + gyz * dz
    hz = gxz * dx + gyz * dy + gzz * dz
    y = dx * qx + dy * qy + dz * qz
    rho = (dx * hx + dy * hy + dz * hz - y * y * inv_l2).clamp_min_(1e-12).sqrt_()
    s = (y - cc * rho).mul_(inv_l2).clamp_(0.0, 1.0)
    hx.sub_(s * qx)
    hy.sub_(s * qy)
    hz.sub_(s * qz)
    inv = (hx * hx + hy * hy + hz * hz).clamp_min_(1e-24).rsqrt_()
    return torch.stack((hx.mul_(inv), hy.mul_(inv), hz.mul_(inv))), s


def _surface_table(view: Segments, prep: _Prepared) -> Tensor:
    """Per-primitive constants of the full deferred pass, one column per (body, slot): [19, N*P]."""
    ba = prep.ba
    l2 = (ba * ba).sum(-1).clamp_min(1e-18)
    # Centre of the touching sphere along the axis for a point with axial projection y = l·ba and
    # radial distance rho: s* = (y - c rho) / l2 with c = rr L / sqrt(L^2 - rr^2).
    c = prep.rr * l2.sqrt() / torch.sqrt((l2 - prep.rr * prep.rr).clamp_min(1e-12))
    cols = [view.a, prep.finv.reshape(*ba.shape[:2], 9), ba, (1.0 / l2)[..., None], c[..., None],
            prep.ra[..., None], prep.rb[..., None]]
    table = torch.cat(cols, -1)
    return table.reshape(-1, table.shape[-1]).t().contiguous()


def surface(view: Segments, keys: Tensor, prep: Optional[_Prepared] = None, full: bool = True) -> Surface:
    """Deferred pass: the front-most surface at every covered pixel of ``keys`` (from :func:`rasterize`).

    The normal of a round cone at a surface point is the direction from the centre of the
    inscribed sphere that touches it; that centre sits on the axis at ``s* = (y - c rho) / L^2``
    (clamped to the segment; ``y`` = offset · (b - a), ``rho`` = distance from the axis,
    ``c = rr L / sqrt(L^2 - rr^2)``): one formula for the lateral surface and both caps.
    ``full=False`` computes only what shading needs (normals), as for grey structure maps.
    """
    prep = prepare(view) if prep is None else prep
    n, height, width = keys.shape
    nz = torch.nonzero(keys < EMPTY).t()                   # [3, M]: body, row, column
    body, row, colm = nz[0], nz[1], nz[2]
    index = (body * height + row) * width + colm
    k = keys.reshape(-1)[index]
    q = torch.floor(k / SLOT_BITS)
    slot = (k - q * SLOT_BITS).long()
    t = (q - DEPTH_OFFSET) / DEPTH_STEPS                   # within 1/16 px of the exact hit
    prim = body * view.num_slots + slot
    if not full:
        normal, _ = _normals_only(view, prep, prim, colm, row, t)
        return Surface(index=index, body=body, slot=slot, part=view.part[slot], depth=t, normal=normal)
    # Column-major gather: each per-pixel parameter is a contiguous row (fast elementwise ops).
    tab = _surface_table(view, prep).index_select(1, prim)
    f = tab[3:12]
    bx, by, bz, inv_l2, c, ra, rb = tab[12], tab[13], tab[14], tab[15], tab[16], tab[17], tab[18]
    dx = colm.float().add_(0.5).sub_(tab[0])
    dy = row.float().add_(0.5).sub_(tab[1])
    dz = t - tab[2]
    lx = f[0] * dx + f[1] * dy + f[2] * dz                  # local coordinates (units of `unit`)
    ly = f[3] * dx + f[4] * dy + f[5] * dz
    lz = f[6] * dx + f[7] * dy + f[8] * dz
    y = lx * bx + ly * by + lz * bz
    rho = (lx * lx + ly * ly + lz * lz - y * y * inv_l2).clamp_min_(1e-12).sqrt_()
    s = (y - c * rho).mul_(inv_l2).clamp_(0.0, 1.0)
    nx, ny, nz_ = lx.sub_(s * bx), ly.sub_(s * by), lz.sub_(s * bz)   # from the touching sphere's centre
    # Gradients map back to view space with the transpose of the view → local matrix.
    gx = f[0] * nx + f[3] * ny + f[6] * nz_
    gy = f[1] * nx + f[4] * ny + f[7] * nz_
    gz = f[2] * nx + f[5] * ny + f[8] * nz_
    inv = (gx * gx + gy * gy + gz * gz).clamp_min_(1e-24).rsqrt_()
    normal = torch.stack((gx.mul_(inv), gy.mul_(inv), gz.mul_(inv)))
    inv_r = (ra + s * (rb - ra)).clamp_min_(1e-6).reciprocal_()
    local = torch.stack((nx.mul_(inv_r), ny.mul_(inv_r), nz_.mul_(inv_r)))
    return Surface(index=index, body=body, slot=slot, part=view.part[slot], depth=t, normal=normal,
                   local=local, axial=s)
