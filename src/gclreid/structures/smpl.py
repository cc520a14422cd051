"""SMPL structure maps: per-image SMPL parameters + a user-supplied SMPL model file → grey maps.

Everything is done here, in torch, without ``smplx`` or a mesh renderer:

* :func:`load_smpl_model` reads the model (``.npz``, or the ``.pkl`` as distributed through a
  restricted unpickler that builds only numpy arrays, plain containers, scipy-sparse matrices and
  chumpy objects — the latter through a small stand-in that takes the array out of each object's
  pickled state, never chumpy itself — so no model file can run code) and checks every shape;
* :func:`load_smpl_params` reads the per-image parameters (``names``, ``pose``, ``shape``/``betas``,
  optional ``cam`` — or HMR's 85-d ``theta`` = cam, pose, shape);
* :func:`smpl_forward` — blend shapes, pose blend shapes (Rodrigues), joints, linear blend skinning;
* :func:`rasterize_mesh` / :func:`render_mesh_grey` — an orthographic z-buffered triangle
  rasteriser (per-triangle bounding boxes, barycentric tests at pixel centres, all vectorised),
  shaded with the body renderer's Lambert model on smooth vertex normals, grey on black.

Coordinates: the SMPL output is taken in HMR's camera frame (x = image right, y = image down,
z = away from the camera); ``pose[:3]`` is the global rotation into it (≈ (π, 0, 0) for a person
standing upright and facing the camera). ``cam`` = (s, tx, ty) is HMR's weak perspective:
``pixel = centre + s · (xy + t) · max(H, W) / 2`` in the original image. The structure angles turn
the posed mesh about the vertical (image-y) axis through the root joint (pelvis), and every view
uses the camera of the original one — the same framing rule as the project's own body renderer.
"""
from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..body.render import lambert
from ..body.rotation import axis_angle_to_matrix
from ..errors import DatasetError, GclreidError

NUM_JOINTS = 24
MIN_BETAS = 10
MODEL_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
# Fraction of the map height the mesh fills when the parameters carry no camera.
FIT_FILL = 0.9
# Rasteriser work is split so that at most this many (triangle, pixel) candidates exist at once.
MAX_CANDIDATES = 1 << 21


class SmplError(GclreidError, ValueError):
    """A SMPL model or parameter file that is missing, unreadable or has the wrong content."""


# ---------------------------------------------------------------------------------------------
# Model file


@dataclass
class SmplModel:
    """SMPL model arrays as float32/long tensors (V vertices, F faces, B shape components)."""
    v_template: Tensor   # [V, 3]
    shapedirs: Tensor    # [V, 3, B]
    posedirs: Tensor     # [V, 3, 207]
    J_regressor: Tensor  # [24, V]
    weights: Tensor      # [V, 24]
    parents: Tensor      # [24] long, parents[0] = -1
    faces: Tensor        # [F, 3] long

    @property
    def num_betas(self) -> int:
        return self.shapedirs.shape[2]


class _ChumpyStandIn:
    """Stands for every chumpy class while unpickling (chumpy itself is never imported or run): keeps
    the pickled state, whose ``x`` holds the array of a plain ``Ch`` (what SMPL model files contain)."""

    def __init__(self, *args, **kwargs) -> None:
        self.state = None

    def __setstate__(self, state) -> None:
        self.state = state

    def array(self) -> Optional[np.ndarray]:
        state = getattr(self, "state", None)
        state = state[0] if isinstance(state, tuple) and state else state
        if isinstance(state, dict) and isinstance(state.get("x"), np.ndarray):
            return state["x"]
        return None


class _SparseStandIn:
    """Stands for a scipy.sparse matrix while unpickling: keeps the pickled attributes; :meth:`array`
    builds the dense array from them with scipy's checked constructors."""
    format = ""

    def __init__(self, *args, **kwargs) -> None:
        self.state = None

    def __setstate__(self, state) -> None:
        self.state = state

    def array(self) -> np.ndarray:
        from scipy import sparse
        state = self.state[0] if isinstance(self.state, tuple) and self.state else self.state
        if not isinstance(state, dict):
            raise ValueError(f"a scipy.sparse {self.format} matrix without its attributes")
        shape = tuple(int(x) for x in state.get("_shape", state.get("shape", ())))
        if self.format == "coo":
            coords = state["coords"] if "coords" in state else (state["row"], state["col"])
            matrix = sparse.coo_matrix((_numeric(state["data"]), tuple(_numeric(c) for c in coords)), shape=shape)
        else:
            build = sparse.csc_matrix if self.format == "csc" else sparse.csr_matrix
            matrix = build((_numeric(state["data"]), _numeric(state["indices"]), _numeric(state["indptr"])),
                           shape=shape)
        return matrix.toarray()


_SPARSE = {fmt: type(f"_Sparse_{fmt}", (_SparseStandIn,), {"format": fmt}) for fmt in ("csc", "csr", "coo")}


def _numeric(value) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"an array of dtype {arr.dtype}, not numbers")
    return arr


def _reconstructor(cls, base, state):
    """``copyreg._reconstructor`` (protocol 0/1 objects), for the stand-ins only."""
    if not (isinstance(cls, type) and issubclass(cls, (_ChumpyStandIn, _SparseStandIn))) or base is not object \
            or state is not None:
        raise pickle.UnpicklingError(f"copyreg._reconstructor of {cls!r} on {base!r} is not allowed in a SMPL model")
    return cls()


def _latin1_bytes(text, encoding="latin1", errors="strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes (str → latin-1 bytes), and nothing else."""
    if not isinstance(text, str) or str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not allowed in a "
                                     "SMPL model")
    return text.encode("latin-1")


class _Forbidden(pickle.UnpicklingError):
    """Something in a SMPL model file that the reader does not build."""


def _smpl_globals() -> Dict[Tuple[str, str], object]:
    reconstruct = np.zeros(1).__reduce__()[0]         # numpy(._)core.multiarray._reconstruct
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]      # numpy(._)core.numeric._frombuffer (protocol 5)
    scalar = np.float64(0).__reduce__()[0]            # numpy(._)core.multiarray.scalar
    allowed: Dict[Tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):  # numpy 1 and 2 names
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    for module in ("copy_reg", "copyreg"):  # Python 2 and 3 names
        allowed[(module, "_reconstructor")] = _reconstructor
    for module in ("__builtin__", "builtins"):
        for name, value in (("object", object), ("set", set), ("frozenset", frozenset), ("complex", complex),
                            ("bytes", bytes), ("bytearray", bytearray)):
            allowed[(module, name)] = value
    allowed[("_codecs", "encode")] = _latin1_bytes
    return allowed


class _ModelUnpickler(pickle._Unpickler):
    """Builds only what a SMPL model file holds: numpy arrays, dtypes and scalars, plain containers
    (dict, list, tuple, set, str, bytes, numbers), scipy.sparse csc/csr/coo matrices (as
    :class:`_SparseStandIn`) and chumpy objects (as :class:`_ChumpyStandIn`).

    Every other global is refused before anything is called, and a pickled state is applied only to
    arrays, dtypes and the stand-ins (the pure-Python unpickler, whose BUILD step can be checked), so
    a model file cannot run code or change any object but the ones it creates."""
    _allowed = _smpl_globals()
    _buildable = (np.ndarray, np.dtype, _ChumpyStandIn, _SparseStandIn)
    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str):
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        if module == "chumpy" or module.startswith("chumpy."):
            return _ChumpyStandIn
        if module == "scipy.sparse" or module.startswith("scipy.sparse."):
            fmt = name.split("_")[0]
            if fmt in _SPARSE and name in (f"{fmt}_matrix", f"{fmt}_array"):
                return _SPARSE[fmt]
        raise _Forbidden(f"{module}.{name}")

    def load_build(self):
        inst = self.stack[-2]  # [..., object, state]
        if not isinstance(inst, self._buildable):
            raise _Forbidden(f"a pickled state for {type(inst).__name__}")
        pickle._Unpickler.load_build(self)

    dispatch[pickle.BUILD[0]] = load_build


def _plain(key: str, value, path: Path) -> np.ndarray:
    """A model value as a dense numeric numpy array (scipy sparse and chumpy stand-ins converted)."""
    if isinstance(value, _ChumpyStandIn):
        arr = value.array()
        if arr is None:
            raise SmplError(f"SMPL model {path}: {key!r} is a chumpy object this reader cannot convert (only plain Ch "
                            "arrays); convert the model to .npz (see docs/structures.md)")
        value = arr
    elif isinstance(value, _SparseStandIn):
        try:
            value = value.array()
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise SmplError(f"SMPL model {path}: {key!r} is a scipy.sparse {value.format} matrix that does not "
                            f"rebuild ({type(exc).__name__}: {exc})") from None
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise SmplError(f"SMPL model {path}: {key!r} holds {type(value).__name__} of dtype {arr.dtype}; expected an "
                        "array of numbers")
    return arr


def _read_model_file(path: Path) -> Dict[str, object]:
    if not path.is_file():
        raise SmplError(f"SMPL model file {path} does not exist; expected a SMPL .pkl or .npz "
                        "(it is not distributed with gclreid: register at smpl.is.tue.mpg.de)")
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError) as exc:
            raise SmplError(f"SMPL model {path} does not read as .npz: {exc}") from None
    try:
        with open(path, "rb") as fh:
            data = _ModelUnpickler(fh, encoding="latin1").load()
    except _Forbidden as exc:
        raise SmplError(
            f"SMPL model {path} holds {exc}, which the SMPL reader does not build: .pkl model files are read with a "
            "restricted unpickler (numpy arrays, scipy.sparse matrices, chumpy arrays, plain containers), so that "
            "loading one can never run code from it; if (and only if) you trust the file, convert it to .npz once "
            "in a separate Python session (see docs/structures.md and docs/safety.md)") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, KeyError, TypeError,
            ValueError) as exc:
        raise SmplError(f"SMPL model {path} does not unpickle ({type(exc).__name__}: {exc}); expected the SMPL "
                        ".pkl as distributed or an .npz of its arrays") from None
    if not isinstance(data, dict):
        raise SmplError(f"SMPL model {path} holds a {type(data).__name__}; expected a dict of arrays")
    return data


def _check(key: str, arr: np.ndarray, expected: str, ok: bool, path: Path) -> None:
    if not ok:
        raise SmplError(f"SMPL model {path}: {key!r} has shape {tuple(arr.shape)}; expected {expected}")


def load_smpl_model(path: os.PathLike) -> SmplModel:
    """Read and validate a SMPL model file (``.pkl`` as distributed, or ``.npz`` with the same keys).

    Raises :class:`SmplError` naming the key and the expected shape when something does not fit.
    """
    path = Path(path)
    raw = _read_model_file(path)
    missing = [k for k in MODEL_KEYS if k not in raw]
    if missing:
        raise SmplError(f"SMPL model {path} lacks {', '.join(missing)}; expected the keys {', '.join(MODEL_KEYS)}")
    a = {k: _plain(k, raw[k], path) for k in MODEL_KEYS}
    v = a["v_template"]
    _check("v_template", v, "(V, 3)", v.ndim == 2 and v.shape[1] == 3 and v.shape[0] > 0, path)
    n = v.shape[0]
    s = a["shapedirs"]
    _check("shapedirs", s, f"({n}, 3, B) with B >= {MIN_BETAS}",
           s.ndim == 3 and s.shape[:2] == (n, 3) and s.shape[2] >= MIN_BETAS, path)
    p = a["posedirs"]
    _check("posedirs", p, f"({n}, 3, {9 * (NUM_JOINTS - 1)})", p.shape == (n, 3, 9 * (NUM_JOINTS - 1)), path)
    j = a["J_regressor"]
    _check("J_regressor", j, f"({NUM_JOINTS}, {n})", j.shape == (NUM_JOINTS, n), path)
    w = a["weights"]
    _check("weights", w, f"({n}, {NUM_JOINTS})", w.shape == (n, NUM_JOINTS), path)
    k = a["kintree_table"]
    _check("kintree_table", k, f"(2, {NUM_JOINTS})", k.shape == (2, NUM_JOINTS), path)
    f = a["f"]
    _check("f", f, "(F, 3)", f.ndim == 2 and f.shape[1] == 3 and f.shape[0] > 0, path)
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        if not np.isfinite(a[key]).all():
            raise SmplError(f"SMPL model {path}: {key!r} has non-finite values")
    if f.min() < 0 or f.max() >= n:
        raise SmplError(f"SMPL model {path}: 'f' has vertex indices outside 0…{n - 1}")
    # Parents: the root's entry is -1 or, in the distributed files, 2**32 - 1.
    parents = k[0].astype(np.int64)
    parents[0] = -1
    if any(not 0 <= parents[i] < i for i in range(1, NUM_JOINTS)):
        raise SmplError(f"SMPL model {path}: 'kintree_table' row 0 must give each joint a parent with a smaller "
                        f"index (root first); got {k[0].tolist()}")
    t = lambda x: torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)  # noqa: E731
    return SmplModel(t(v), t(s), t(p), t(j), t(w), torch.as_tensor(parents), torch.as_tensor(f.astype(np.int64)))


# ---------------------------------------------------------------------------------------------
# Per-image parameters


@dataclass
class SmplParams:
    """Per-image SMPL parameters. ``cam`` is None when the file has none (maps are then framed to
    fill 90% of the height, centred)."""
    names: List[str]
    pose: Tensor            # [N, 24, 3] axis-angle
    betas: Tensor           # [N, B]
    cam: Optional[Tensor]   # [N, 3] (s, tx, ty)
    path: Path

    def __post_init__(self) -> None:
        self.index: Dict[str, int] = {}
        by_base: Dict[str, List[int]] = {}
        for i, name in enumerate(self.names):
            key = name.replace("\\", "/")
            key = key[2:] if key.startswith("./") else key
            if key in self.index:
                raise SmplError(f"SMPL parameters {self.path}: image {name!r} appears twice in 'names'")
            self.index[key] = i
            by_base.setdefault(key.rsplit("/", 1)[-1], []).append(i)
        # File names alone are accepted where they are unique in the file.
        self.by_base = {b: ids[0] for b, ids in by_base.items() if len(ids) == 1}

    def find(self, record) -> Optional[int]:
        """Row of ``record``: ``names`` entry equal to ``<split>/<relpath>``, ``<relpath>``, or a file
        name that is unique in the file; None when the image is not there."""
        for key in (f"{record.split}/{record.relpath}", record.relpath):
            if key in self.index:
                return self.index[key]
        return self.by_base.get(record.relpath.rsplit("/", 1)[-1])


def _param_array(data, key: str, path: Path) -> np.ndarray:
    arr = np.asarray(data[key])
    if arr.dtype.kind not in "fiu" or not np.isfinite(arr).all():
        raise SmplError(f"SMPL parameters {path}: {key!r} must hold finite numbers (dtype {arr.dtype})")
    return arr.astype(np.float32)


def load_smpl_params(path: os.PathLike) -> SmplParams:
    """Read the per-image parameter ``.npz``: ``names`` [N] (image paths relative to their split
    folder), ``pose`` [N, 72] (or [N, 24, 3] axis-angle, or [N, 24, 3, 3] rotation matrices),
    ``shape`` or ``betas`` [N, ≤B], optional ``cam`` [N, 3]; or ``theta`` [N, 85] as HMR outputs it
    (cam, pose, shape) instead of the three."""
    path = Path(path)
    if not path.is_file():
        raise SmplError(f"SMPL parameter file {path} does not exist; expected an .npz with names, pose, shape, cam")
    try:
        data = np.load(path, allow_pickle=False)
        data = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise SmplError(f"SMPL parameters {path} do not read as .npz without pickles ({exc}); save 'names' as a "
                        "string array, e.g. np.array(names, dtype=str)") from None
    if "names" not in data:
        raise SmplError(f"SMPL parameters {path} lack 'names' (image paths relative to their split folder)")
    names = [str(n) for n in np.asarray(data["names"]).reshape(-1)]
    n = len(names)
    if "theta" in data:
        theta = _param_array(data, "theta", path)
        if theta.shape != (n, 85):
            raise SmplError(f"SMPL parameters {path}: 'theta' has shape {theta.shape}; expected ({n}, 85) "
                            "(HMR: cam 3, pose 72, shape 10)")
        data = {**data, "cam": theta[:, :3], "pose": theta[:, 3:75], "shape": theta[:, 75:]}
    shape_key = "shape" if "shape" in data else "betas"
    for key in ("pose", shape_key):
        if key not in data:
            what = "'shape' (or 'betas')" if key == shape_key else repr(key)
            raise SmplError(f"SMPL parameters {path} lack {what}; expected names, pose (N, 72), shape or betas "
                            "(N, 10), optional cam (N, 3) — or theta (N, 85)")
    pose = _param_array(data, "pose", path)
    if pose.shape == (n, NUM_JOINTS, 3, 3):
        from ..body.rotation import matrix_to_axis_angle
        pose_t = matrix_to_axis_angle(torch.as_tensor(pose))
    elif pose.shape in ((n, 3 * NUM_JOINTS), (n, NUM_JOINTS, 3)):
        pose_t = torch.as_tensor(pose).reshape(n, NUM_JOINTS, 3)
    else:
        raise SmplError(f"SMPL parameters {path}: 'pose' has shape {pose.shape}; expected ({n}, 72) axis-angle "
                        f"(or ({n}, 24, 3), or ({n}, 24, 3, 3) rotation matrices)")
    betas = _param_array(data, shape_key, path)
    if betas.ndim != 2 or betas.shape[0] != n:
        raise SmplError(f"SMPL parameters {path}: {shape_key!r} has shape {betas.shape}; expected ({n}, 10)")
    cam = None
    if "cam" in data:
        cam = _param_array(data, "cam", path)
        if cam.shape != (n, 3):
            raise SmplError(f"SMPL parameters {path}: 'cam' has shape {cam.shape}; expected ({n}, 3) = (s, tx, ty)")
        if (cam[:, 0] <= 0).any():
            raise SmplError(f"SMPL parameters {path}: 'cam' scale s must be positive (row "
                            f"{int(np.argmax(cam[:, 0] <= 0))} is {cam[cam[:, 0] <= 0][0, 0]})")
        cam = torch.as_tensor(cam)
    return SmplParams(names, pose_t, torch.as_tensor(betas), cam, path)


# ---------------------------------------------------------------------------------------------
# Forward model


def smpl_forward(model: SmplModel, pose: Tensor, betas: Tensor) -> Tuple[Tensor, Tensor]:
    """Posed vertices [N, V, 3] and joints [N, 24, 3] for axis-angle ``pose`` [N, 24, 3] (or
    [N, 72]) and ``betas`` [N, b] (b ≤ the model's B; missing components are zero)."""
    n = pose.shape[0]
    pose = pose.reshape(n, NUM_JOINTS, 3).float()
    betas = betas.float()
    if betas.shape[1] > model.num_betas:
        raise SmplError(f"{betas.shape[1]} shape parameters given; the model has {model.num_betas}")
    v_shaped = model.v_template + torch.einsum("vck,nk->nvc", model.shapedirs[:, :, :betas.shape[1]], betas)
    joints = torch.einsum("jv,nvc->njc", model.J_regressor, v_shaped)
    rot = axis_angle_to_matrix(pose)  # [N, 24, 3, 3]
    eye = torch.eye(3)
    feature = (rot[:, 1:] - eye).reshape(n, -1)  # [N, 207]
    v_posed = v_shaped + torch.einsum("vcp,np->nvc", model.posedirs, feature)
    # Kinematic chain: world transform of each joint (parents come before children).
    parents = model.parents.tolist()
    g_rot: List[Tensor] = []
    g_pos: List[Tensor] = []
    for i in range(NUM_JOINTS):
        if i == 0:
            g_rot.append(rot[:, 0])
            g_pos.append(joints[:, 0])
        else:
            p = parents[i]
            g_rot.append(g_rot[p] @ rot[:, i])
            g_pos.append(g_pos[p] + (g_rot[p] @ (joints[:, i] - joints[:, p])[..., None])[..., 0])
    world_rot = torch.stack(g_rot, 1)   # [N, 24, 3, 3]
    world_pos = torch.stack(g_pos, 1)   # [N, 24, 3] posed joints
    # Skinning transforms relative to the rest pose: x ↦ R x + (p - R j).
    offset = world_pos - (world_rot @ joints[..., None])[..., 0]
    blend_rot = torch.einsum("vj,njab->nvab", model.weights, world_rot)
    blend_off = torch.einsum("vj,nja->nva", model.weights, offset)
    verts = (blend_rot @ v_posed[..., None])[..., 0] + blend_off
    return verts, world_pos


def turn_about_root(verts: Tensor, root: Tensor, angle_deg: Tensor) -> Tensor:
    """Turn camera-frame vertices [N, V, 3] about the vertical (image-y) axis through ``root`` [N, 3]
    by ``angle_deg`` [N]; +90° turns a body that faces the camera to face image right, as
    :func:`gclreid.body.render_structure` does."""
    a = torch.as_tensor(angle_deg, dtype=verts.dtype).reshape(-1, 1) * (math.pi / 180.0)
    c, s = torch.cos(a), torch.sin(a)
    rel = verts - root[:, None]
    x, y, z = rel.unbind(-1)
    return torch.stack((c * x - s * z, y, s * x + c * z), -1) + root[:, None]


def facing_yaw(pose: Tensor) -> Tensor:
    """Yaw in degrees of the body's facing (SMPL +z) in the camera frame: 0 = facing the camera,
    90 = facing image right (the convention of the structure records)."""
    forward = axis_angle_to_matrix(pose.reshape(-1, NUM_JOINTS, 3)[:, 0])[..., :, 2]
    return torch.rad2deg(torch.atan2(forward[:, 0], -forward[:, 2])) % 360.0


# ---------------------------------------------------------------------------------------------
# Rasteriser


def _sortable(z: Tensor) -> Tensor:
    """int64 keys that order like the float32 values ``z``."""
    bits = z.contiguous().view(torch.int32)
    return (bits ^ ((bits >> 31) & 0x7FFFFFFF)).to(torch.int64)


def _planes(tri: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-triangle linear functions of the pixel position (px, py): rows = barycentric weight of
    each vertex and depth, columns = (coef x, coef y, constant) → [T, 4, 3]; and the signed doubled
    area [T] (negative = counter-clockwise seen from the camera = front-facing in these axes)."""
    x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]  # [T, 3] each
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    inv = 1.0 / torch.where(area.abs() > 1e-9, area, torch.ones_like(area))
    rows = []
    for i in range(3):
        j, k = (i + 1) % 3, (i + 2) % 3
        # Edge function of the opposite edge (j → k), normalised by the full signed area.
        rows.append(torch.stack(((y[:, j] - y[:, k]) * inv, (x[:, k] - x[:, j]) * inv,
                                 (x[:, j] * y[:, k] - x[:, k] * y[:, j]) * inv), -1))
    bary = torch.stack(rows, 1)  # [T, 3, 3]
    depth = (bary * z[:, :, None]).sum(1, keepdim=True)  # [T, 1, 3]
    return torch.cat((bary, depth), 1), area


def _scatter(zbuf: Tensor, t: Tensor, px: Tensor, py: Tensor, val: Tensor, nf: int, height: int, width: int) -> None:
    """Depth-test candidates (triangle ``t`` at pixel (``py``, ``px``), ``val`` [M, 4] = weights, depth)."""
    inside = (val[:, :3] >= -1e-6).all(1)
    t, px, py, z = t[inside], px[inside], py[inside], val[inside, 3]
    pix = (t // nf) * (height * width) + py * width + px
    # Depth in the high 32 bits, triangle in the low ones: one amin = depth test + tie-break.
    zbuf.scatter_reduce_(0, pix, (_sortable(z) << 32) | t, reduce="amin")


def rasterize_mesh(verts: Tensor, faces: Tensor, height: int, width: int, cull: bool = True,
                   max_candidates: int = MAX_CANDIDATES, window: int = 3) -> Tuple[Tensor, Tensor]:
    """Z-buffer triangles. ``verts`` [N, V, 3] in pixels (x = column, y = row, z = depth away from
    the camera; pixel (r, c) is sampled at its centre (c + 0.5, r + 0.5)), ``faces`` [F, 3].

    ``cull`` drops back faces (clockwise seen from the camera), which cannot be seen on a closed,
    consistently oriented mesh such as SMPL; it halves the work. Triangles whose pixel-centre box
    fits in ``window``×``window`` (nearly all of a body mesh at ReID sizes) are tested on that fixed
    window; larger ones enumerate their box. Returns ``keys`` [N, H, W] int64 (``-1`` = background)
    holding the flat index ``n * F + f`` of the nearest triangle at each pixel, and the plane table
    [N * F, 4, 3] (barycentric weights and depth as linear functions of the pixel centre).
    """
    n, nf = verts.shape[0], faces.shape[0]
    tri = verts[:, faces].reshape(n * nf, 3, 3)
    planes, area = _planes(tri)
    ok = area < -1e-9 if cull else area.abs() > 1e-9
    lo = tri[..., :2].amin(1)
    hi = tri[..., :2].amax(1)
    # Pixel centres inside the box: c + 0.5 in [lo, hi].
    x0 = torch.ceil(lo[:, 0] - 0.5).clamp(0, width).long()
    x1 = torch.floor(hi[:, 0] - 0.5).clamp(-1, width - 1).long()
    y0 = torch.ceil(lo[:, 1] - 0.5).clamp(0, height).long()
    y1 = torch.floor(hi[:, 1] - 0.5).clamp(-1, height - 1).long()
    bw = (x1 - x0 + 1).clamp_min(0)
    bh = (y1 - y0 + 1).clamp_min(0)
    ok &= (bw > 0) & (bh > 0)
    small = ok & (bw <= window) & (bh <= window)
    empty = torch.iinfo(torch.int64).max
    zbuf = torch.full((n * height * width,), empty, dtype=torch.int64)
    # Small triangles: a fixed window per triangle, no per-candidate gathers.
    dy, dx = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    dx, dy = dx.reshape(1, -1), dy.reshape(1, -1)
    ids_small = torch.nonzero(small).squeeze(1)
    step = max(1, max_candidates // (window * window))
    for start in range(0, len(ids_small), step):
        ids = ids_small[start:start + step]
        valid = (dx < bw[ids, None]) & (dy < bh[ids, None])  # [T, K]
        px = (x0[ids, None] + dx).clamp_max(width - 1)
        py = (y0[ids, None] + dy).clamp_max(height - 1)
        pl = planes[ids]  # [T, 4, 3]
        val = pl[:, :, None, 0] * (px[:, None] + 0.5) + pl[:, :, None, 1] * (py[:, None] + 0.5) + pl[:, :, None, 2]
        val = val.masked_fill(~valid[:, None], -1.0)  # outside the box: never inside
        t = ids[:, None].expand_as(px)
        _scatter(zbuf, t.reshape(-1), px.reshape(-1), py.reshape(-1), val.permute(0, 2, 1).reshape(-1, 4),
                 nf, height, width)
    # Large triangles: enumerate each box, in chunks of at most ``max_candidates`` candidates.
    ids_big = torch.nonzero(ok & ~small).squeeze(1)
    counts = (bw * bh)[ids_big]
    ends = torch.cumsum(counts, 0)
    start = 0
    while start < len(ids_big):
        base = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(torch.searchsorted(ends, base + max_candidates, right=True)))
        ids, cnt = ids_big[start:stop], counts[start:stop]
        t = torch.repeat_interleave(ids, cnt)
        first = torch.cumsum(cnt, 0) - cnt
        k = torch.arange(int(cnt.sum())) - torch.repeat_interleave(first, cnt)
        w = bw[t]
        px = x0[t] + k % w
        py = y0[t] + k // w
        pl = planes[t]  # [M, 4, 3]
        val = pl[..., 0] * (px[:, None] + 0.5) + pl[..., 1] * (py[:, None] + 0.5) + pl[..., 2]
        _scatter(zbuf, t, px, py, val, nf, height, width)
        start = stop
    covered = zbuf != empty
    keys = torch.where(covered, zbuf & 0xFFFFFFFF, torch.full_like(zbuf, -1))
    return keys.view(n, height, width), planes


def vertex_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """Unit smooth normals [N, V, 3] (area-weighted face normals; outward for counter-clockwise faces)."""
    a, b, c = verts[:, faces[:, 0]], verts[:, faces[:, 1]], verts[:, faces[:, 2]]
    face_n = torch.cross(b - a, c - a, dim=-1)
    normals = torch.zeros_like(verts)
    for i in range(3):
        normals.index_add_(1, faces[:, i], face_n)
    return normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def render_mesh_grey(verts: Tensor, faces: Tensor, height: int, width: int, cull: bool = True) -> Tensor:
    """uint8 [N, H, W]: the meshes (pixel-space ``verts`` [N, V, 3], view axes x right, y down,
    z away) shaded grey with :func:`gclreid.body.lambert` on interpolated vertex normals, on black.
    ``cull``: see :func:`rasterize_mesh`."""
    n, nf = verts.shape[0], faces.shape[0]
    keys, planes = rasterize_mesh(verts, faces, height, width, cull=cull)
    out = torch.zeros(n * height * width, dtype=torch.uint8)
    flat = keys.view(-1)
    pix = torch.nonzero(flat >= 0).squeeze(1)
    if len(pix) == 0:
        return out.view(n, height, width)
    t = flat[pix]
    img, f = t // nf, t % nf
    px = (pix % width).float() + 0.5
    py = ((pix // width) % height).float() + 0.5
    pl = planes[t, :3]  # [M, 3, 3]
    w = pl[..., 0] * px[:, None] + pl[..., 1] * py[:, None] + pl[..., 2]  # [M, 3]
    vn = vertex_normals(verts, faces)
    tri_n = vn[img[:, None], faces[f]]  # [M, 3 vertices, 3]
    normal = (w[..., None] * tri_n).sum(1)
    normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    out[pix] = lambert(normal.T.contiguous()).mul_(255.0).add_(0.5).floor_().to(torch.uint8)
    return out.view(n, height, width)


# ---------------------------------------------------------------------------------------------
# Cameras and the source


def hmr_pixels(cam: Tensor, image_sizes: Tensor, height: int, width: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Affine map camera frame → map pixels from HMR's ``cam`` [N, 3] = (s, tx, ty) for original
    images of ``image_sizes`` [N, 2] = (w, h): returns (ax, bx, ay, by) with X = ax·x + bx, Y = ay·y + by.

    HMR normalises a crop to the square of side max(w, h) centred on the image; the map is the
    image stretched to ``height``×``width`` (as the training loader resizes it).
    """
    s, tx, ty = cam.unbind(-1)
    w, h = image_sizes.float().unbind(-1)
    half = s * torch.maximum(w, h) / 2
    ax, ay = half * (width / w), half * (height / h)
    return ax, width / 2 + ax * tx, ay, height / 2 + ay * ty


def fit_pixels(verts: Tensor, height: int, width: int, fill: float = FIT_FILL) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Affine map that frames each mesh [N, V, 3] to ``fill`` of the map height, box-centred."""
    lo, hi = verts[..., :2].amin(1), verts[..., :2].amax(1)
    scale = fill * height / (hi[:, 1] - lo[:, 1]).clamp_min(1e-6)
    return scale, width / 2 - scale * (lo[:, 0] + hi[:, 0]) / 2, scale, height / 2 - scale * (lo[:, 1] + hi[:, 1]) / 2


def view_vertices(verts: Tensor, root: Tensor, angles: Sequence[float], pixels) -> Tensor:
    """Pixel-space vertices [N * len(angles), V, 3] (image-major): each posed camera-frame mesh turned
    about its root by each angle, all views through the image's affine camera ``pixels`` =
    (ax, bx, ay, by) (each [N]); depth is scaled by the mean of ax and ay."""
    n, k = verts.shape[0], len(angles)
    ax, bx, ay, by = (p.float().reshape(n) for p in pixels)
    az = (ax + ay) / 2
    rep = torch.arange(n).repeat_interleave(k)
    ang = torch.tensor([float(a) for a in angles]).repeat(n)
    turned = turn_about_root(verts[rep], root[rep], ang)
    view = torch.stack((turned[..., 0] * ax[rep, None] + bx[rep, None], turned[..., 1] * ay[rep, None] + by[rep, None],
                        turned[..., 2] * az[rep, None]), -1)
    return view


def _image_size(record) -> Tuple[int, int]:
    from PIL import Image
    try:
        with Image.open(record.path) as im:
            return im.size
    except FileNotFoundError:
        raise DatasetError(f"image file {record.path} does not exist") from None
    except OSError as exc:
        raise DatasetError(f"image {record.path} does not decode: {exc}") from None


class SmplSource:
    """Structure maps from per-image SMPL parameters and a SMPL model file.

    ``missing``: what to do with an image that has no row in the parameter file — ``error`` (the
    default; :meth:`check_records` names them before anything is written) or ``fallback`` (the
    silhouette estimator of ``--source estimate``, counted as ``fallback``).
    """

    name = "smpl"

    def __init__(self, model_path: os.PathLike, params_path: os.PathLike, missing: str = "error",
                 chunk: int = 8) -> None:
        if missing not in ("error", "fallback"):
            raise GclreidError(f"structures --smpl-missing {missing!r} is unknown; expected error or fallback")
        self.model = load_smpl_model(model_path)
        self.params = load_smpl_params(params_path)
        if self.params.betas.shape[1] > self.model.num_betas:
            raise SmplError(f"SMPL parameters {self.params.path}: {self.params.betas.shape[1]} shape parameters per "
                            f"image, but the model {model_path} has {self.model.num_betas}")
        self.missing = missing
        self.chunk = chunk

    def check_records(self, records: Sequence) -> None:
        """With ``missing="error"``: raise a :class:`DatasetError` naming images without parameters."""
        if self.missing != "error":
            return
        absent = [r for r in records if self.params.find(r) is None]
        if absent:
            first = ", ".join(f"{r.split}/{r.relpath}" for r in absent[:3])
            raise DatasetError(f"structures --source smpl: {len(absent)} of {len(records)} images have no row in "
                               f"{self.params.path} 'names' (e.g. {first}); add them, or pass --smpl-missing fallback")

    def render(self, records: Sequence, angles: Sequence[int], height: int, width: int) -> Tuple[np.ndarray, List[dict]]:
        all_angles = (0, *angles)
        maps = np.zeros((len(records), len(all_angles), height, width), dtype=np.uint8)
        infos: List[Optional[dict]] = [None] * len(records)
        rows = [self.params.find(r) for r in records]
        absent = [i for i, row in enumerate(rows) if row is None]
        if absent and self.missing == "error":
            r = records[absent[0]]
            raise DatasetError(f"structures --source smpl: image {r.path} ({r.split}/{r.relpath}) has no row in "
                               f"{self.params.path}")
        if absent:
            from ..data.images import load_image
            from .estimate import estimate_fallback
            from .sources import render_estimates
            estimates = [estimate_fallback(load_image(records[i].path)) for i in absent]
            maps[absent] = render_estimates(estimates, angles, height, width)
            for i, e in zip(absent, estimates):
                infos[i] = e.record()
        present = [i for i, row in enumerate(rows) if row is not None]
        for start in range(0, len(present), self.chunk):
            part = present[start:start + self.chunk]
            idx = torch.tensor([rows[i] for i in part])
            pose, betas = self.params.pose[idx], self.params.betas[idx]
            verts, joints = smpl_forward(self.model, pose, betas)
            if self.params.cam is not None:
                sizes = torch.tensor([_image_size(records[i]) for i in part])
                pixels = hmr_pixels(self.params.cam[idx], sizes, height, width)
            else:
                pixels = fit_pixels(verts, height, width)
            view = view_vertices(verts, joints[:, 0], all_angles, pixels)
            grey = render_mesh_grey(view, self.model.faces, height, width)
            maps[part] = grey.view(len(part), len(all_angles), height, width).numpy()
            for i, yaw in zip(part, facing_yaw(pose).tolist()):
                infos[i] = {"status": "smpl", "yaw": round(yaw % 360.0, 2), "confidence": 1.0}
        return maps, infos  # type: ignore[return-value]

    def close(self) -> None:
        pass
