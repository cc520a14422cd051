"""MediaPipe Pose (optional extra ``pose``) as a body estimator, run in its own process.

MediaPipe 0.10.14 ships the BlazePose detector and the *full* landmark model (``model_complexity=1``)
inside its wheel; the lite and heavy pose models are not in it (MediaPipe would download them at
run time, which an offline machine cannot), so only the full model is used (the heavy one, from the
npm package ``@mediapipe/pose``, was measured on the labelled crops: it fails on the same crops,
docs/structures.md "Fourth round"). The wheel also has the
short- and full-range face detectors; tried as a front/back cue they did not help (see
:mod:`gclreid.structures.landmarks`) and are not run. It
pins ``protobuf<5`` and pulls jax and OpenCV, so it is kept out of the core environment: this file
doubles as a small server (``python mediapipe_pose.py --serve``) that any interpreter with
``mediapipe`` (and numpy) can run — the core process talks to it over pipes with one JSON line per
batch. Point ``--pose-python`` / ``$GCLREID_POSE_PYTHON`` at that interpreter (``make pose-env``
makes one), or install the extra in the same environment.

What the server measures for every crop (:func:`_analyse`):

* **pose** on the crop pasted, at half the canvas height (:data:`SCALES`), into a black 256×256
  canvas, and on the **mirrored** crop the same way. BlazePose's detector expects some room around
  the person: a ReID crop stretched over the whole canvas (the old setting) gives off-crop,
  zoomed or upside-down skeletons on about half the Market-1501 crops; at half height the
  skeletons stay on the person. When a view finds nobody or fails the quick check of
  :func:`_usable`, the next scale is tried; the best view is kept.
* the pose model's **person mask** (64×32), for the extent check and the fallback.

The client (:class:`MediaPipeEstimator`) turns that into an
:class:`~gclreid.structures.estimate.Estimate` with :func:`gclreid.structures.landmarks.estimate_from_views`
(sanity checks, left/right consistency, facing, framing).
"""
from __future__ import annotations

import base64
import collections
import json
import os
import subprocess
import sys
import threading
from typing import List, Optional, Sequence

import numpy as np

# MediaPipe landmark indices (person's left/right).
NOSE, L_EYE, R_EYE, L_EAR, R_EAR = 0, 2, 5, 7, 8
L_SH, R_SH, L_EL, R_EL, L_WR, R_WR, L_IDX, R_IDX = 11, 12, 13, 14, 15, 16, 19, 20
L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANK, R_ANK, L_HEEL, R_HEEL, L_FOOT, R_FOOT = 23, 24, 25, 26, 27, 28, 29, 30, 31, 32
# Landmark i of a mirrored image is landmark SWAP[i] of the original (left <-> right).
SWAP = (0, 4, 5, 6, 1, 2, 3, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 18, 17, 20, 19, 22, 21, 24, 23, 26, 25, 28, 27,
        30, 29, 32, 31)
CANVAS = 256            # the square image given to MediaPipe
SCALES = (0.5, 0.65, 0.4)  # crop height as a fraction of the canvas: first choice, then retries
MASK_H, MASK_W = 64, 32  # size of the person mask sent back
# Landmarks the quick server-side check looks at (nose, shoulders, hips, knees, ankles).
CORE = (NOSE, L_SH, R_SH, L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANK, R_ANK)
FEET = (L_ANK, R_ANK, L_HEEL, R_HEEL, L_FOOT, R_FOOT)
# Nose → lowest foot landmark, as a fraction of the crop height, below which a view is "short": the
# client rejects skeletons under about half the height (landmarks.SPAN_MIN, from the head top),
# whole people in detector crops span about 0.85.
SPAN_USABLE = 0.5

POSE_HELP = ("make one with `make pose-env` (a separate venv with mediapipe==0.10.14) and point "
             "$GCLREID_POSE_PYTHON or --pose-python at its python")


def find_pose_python() -> Optional[str]:
    """The interpreter to run MediaPipe with: $GCLREID_POSE_PYTHON, else this one if it has mediapipe."""
    env = os.environ.get("GCLREID_POSE_PYTHON")
    if env:
        return env
    import importlib.util
    return sys.executable if importlib.util.find_spec("mediapipe") is not None else None


# ----------------------------------------------------------------------------------------------
# Server side (runs in the MediaPipe interpreter; numpy, mediapipe and its OpenCV only).

def _quiet() -> None:
    """Silence what MediaPipe, TF Lite, absl and protobuf print (the client also drains stderr)."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import warnings
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        from absl import logging as absl_logging
        absl_logging.set_verbosity(absl_logging.ERROR)
    except Exception:  # absl is a mediapipe dependency, but be lenient
        pass


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    import cv2
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)


def _canvas(img: np.ndarray, frac: float):
    """The crop resized to ``frac`` of the canvas height, centred on a black square canvas."""
    h, w = img.shape[:2]
    nh = max(1, int(round(CANVAS * frac)))
    nw = max(1, min(CANVAS, int(round(w * nh / h))))
    pad = np.zeros((CANVAS, CANVAS, 3), dtype=np.uint8)
    top, left = (CANVAS - nh) // 2, (CANVAS - nw) // 2
    pad[top:top + nh, left:left + nw] = _resize(img, nw, nh)
    return pad, left, top, nw, nh


def _pose_view(pose, img: np.ndarray, frac: float) -> Optional[dict]:
    pad, left, top, nw, nh = _canvas(img, frac)
    res = pose.process(pad)
    if res.pose_world_landmarks is None or res.pose_landmarks is None:
        return None
    world = [[p.x, p.y, p.z, p.visibility] for p in res.pose_world_landmarks.landmark]
    # Image landmarks as fractions of the crop (x of its width, y of its height), + visibility, presence.
    image = [[(p.x * CANVAS - left) / nw, (p.y * CANVAS - top) / nh, p.visibility, p.presence]
             for p in res.pose_landmarks.landmark]
    mask = None
    if res.segmentation_mask is not None:
        seg = np.asarray(res.segmentation_mask, dtype=np.float32)[top:top + nh, left:left + nw]
        small = _resize(np.clip(seg * 255.0 + 0.5, 0, 255).astype(np.uint8), MASK_W, MASK_H)
        mask = base64.b64encode(np.ascontiguousarray(small).tobytes()).decode("ascii")
    return {"scale": frac, "world": world, "image": image, "mask": mask}


def _usable(view: dict) -> float:
    """Quick plausibility in [0, 1]: core landmarks on the crop × shoulder/hip visibility × upright ×
    tall enough (nose to lowest foot landmark at least :data:`SPAN_USABLE` of the crop height: a
    skeleton squashed into the upper half — legs folded onto the torso — is retried at the other
    scales like an upside-down one)."""
    im = np.asarray(view["image"], dtype=np.float64)
    core = im[list(CORE)]
    inside = float(((core[:, 0] > -0.1) & (core[:, 0] < 1.1) & (core[:, 1] > -0.05) & (core[:, 1] < 1.1)).mean())
    vis = float(np.asarray(view["world"])[[L_SH, R_SH, L_HIP, R_HIP], 3].mean())
    upright = float(im[[L_HIP, R_HIP], 1].mean() > im[[L_SH, R_SH], 1].mean() > im[NOSE, 1] - 0.05)
    span = float(im[list(FEET), 1].max() - im[NOSE, 1])
    tall = float(np.clip((span - 0.25) / (SPAN_USABLE - 0.25), 0.0, 1.0))
    return inside * min(1.0, vis / 0.7) * (0.3 + 0.7 * upright) * (0.3 + 0.7 * tall)


def _best_view(pose, img: np.ndarray, scales: Sequence[float]) -> Optional[dict]:
    best, best_q = None, -1.0
    for frac in scales:
        view = _pose_view(pose, img, frac)
        if view is None:
            continue
        q = _usable(view)
        view["usable"] = q
        if q > best_q:
            best, best_q = view, q
        if q >= 0.9:
            break
    return best


def _analyse(pose, img: np.ndarray, scales: Sequence[float]) -> dict:
    views = []
    for flip in (0, 1):
        view = _best_view(pose, np.ascontiguousarray(img[:, ::-1]) if flip else img, scales)
        if view is not None:
            view["flip"] = flip
            views.append(view)
    return {"shape": list(img.shape[:2]), "views": views}


def _serve(min_detection_confidence: float, scales: Sequence[float] = SCALES) -> None:
    # The protocol gets its own copy of stdout; whatever a library prints there goes to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _quiet()
    import mediapipe as mp
    pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=True,
                                  min_detection_confidence=min_detection_confidence)
    proto.write(json.dumps({"ready": True, "mediapipe": getattr(mp, "__version__", "?")}) + "\n")
    proto.flush()
    for line in sys.stdin:
        batch = json.loads(line)
        results = []
        for item in batch:
            h, w = item["shape"]
            img = np.frombuffer(base64.b64decode(item["data"]), dtype=np.uint8).reshape(h, w, 3)
            results.append(_analyse(pose, img, scales))
        proto.write(json.dumps(results) + "\n")
        proto.flush()


# ----------------------------------------------------------------------------------------------
# Client side (core process).

class MediaPipeEstimator:
    """Runs the server in a subprocess of ``python``; :meth:`estimate` returns an Estimate or None
    (nobody detected, or every check failed — see the estimate's ``reason``) per image.

    The server's stderr (TF Lite / absl / protobuf chatter) is drained into a small buffer that is
    shown only if the server dies, so it never breaks into the progress bar.
    """

    def __init__(self, python: str, min_detection_confidence: float = 0.1) -> None:
        self.python = python
        env = dict(os.environ, GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
        self.proc = subprocess.Popen([python, os.path.abspath(__file__), "--serve", str(min_detection_confidence)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1, env=env)
        self._stderr = collections.deque(maxlen=40)
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()
        hello = self.proc.stdout.readline()
        try:
            self.version = json.loads(hello).get("mediapipe", "?")
        except json.JSONDecodeError:
            self._died()

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self._stderr.append(line.rstrip())

    def _died(self):
        from ..errors import GclreidError
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._drain.join(timeout=2)
        lines = [line.strip() for line in self._stderr if line.strip()]
        why = lines[-1] if lines else f"exit code {self.proc.poll()}"
        exc = GclreidError(f"structures: the MediaPipe process ({self.python}) stopped: {why}; run "
                           f"`{self.python} -c 'import mediapipe'` to see more, or use --estimator fallback")
        exc.short = why
        raise exc

    def detect(self, images: Sequence) -> List[dict]:
        """The server's raw evidence per image: ``{"shape": [h, w], "views": [...]}``, each view
    ``{"flip", "scale", "usable", "world", "image", "mask"}``."""
        payload = []
        for im in images:
            arr = np.ascontiguousarray(np.asarray(im.convert("RGB") if hasattr(im, "convert") else im, dtype=np.uint8))
            payload.append({"shape": arr.shape[:2], "data": base64.b64encode(arr.tobytes()).decode("ascii")})
        try:
            self.proc.stdin.write(json.dumps(payload) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._died()
        line = self.proc.stdout.readline()
        if not line:
            self._died()
        return json.loads(line)

    def estimate(self, images: Sequence) -> list:
        from .landmarks import estimate_from_evidence
        return [estimate_from_evidence(d) for d in self.detect(images)]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def decode_mask(data: Optional[str]) -> Optional[np.ndarray]:
    """A person mask sent by the server → float32 [MASK_H, MASK_W] in [0, 1] (None stays None)."""
    if not data:
        return None
    return np.frombuffer(base64.b64decode(data), dtype=np.uint8).reshape(MASK_H, MASK_W).astype(np.float32) / 255.0


def landmarks_to_estimate(world: np.ndarray, image: np.ndarray, elevation: float = 0.0):
    """An :class:`~gclreid.structures.estimate.Estimate` from one set of MediaPipe landmarks, with no
    checks (kept for callers of the old API; the estimator uses :mod:`gclreid.structures.landmarks`).

    ``world`` [33, 4]: metric x (image right), y (down), z (away from the camera), visibility;
    ``image`` [33, ≥2]: x, y as fractions of the crop's width and height.
    """
    from .landmarks import body_from_world
    pose, shape, yaw = body_from_world(np.asarray(world, dtype=np.float64), elevation)
    from .estimate import Estimate
    image = np.asarray(image, dtype=np.float64)
    confidence = float(np.clip(np.asarray(world)[[L_SH, R_SH, L_HIP, R_HIP], 3].mean(), 0, 1))
    return Estimate(pose, shape, yaw, (0.0, 0.0, 1.0, 1.0), "detected", confidence, elevation)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--serve":
        _serve(float(sys.argv[2]) if len(sys.argv) > 2 else 0.1)
    else:
        print("usage: python mediapipe_pose.py --serve [MIN_DETECTION_CONFIDENCE]", file=sys.stderr)
        sys.exit(2)
