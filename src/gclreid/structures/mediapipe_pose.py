"""MediaPipe Pose (optional extra ``pose``) as a body estimator, run in its own process.

MediaPipe 0.10.14 ships the BlazePose detector and landmark models inside its wheel (nothing is
downloaded at run time), but pins ``protobuf<5`` and pulls jax and OpenCV, so it is kept out of the
core environment: this file doubles as a tiny server (``python mediapipe_pose.py --serve``) that any
interpreter with ``mediapipe`` (and numpy) can run — the core process talks to it over pipes with
one JSON line per batch. Point ``--pose-python`` / ``$GCLREID_POSE_PYTHON`` at that interpreter,
or install the extra in the same environment.

Landmarks → body (:func:`landmarks_to_estimate`): yaw from the left→right shoulder and hip vectors
of the 3D world landmarks; the landmarks turned into the body frame give joint positions, which
:func:`gclreid.body.pose_from_joints` turns into a pose; limb lengths relative to the body model's
proportions give the shape factors; the camera (scale and centre) is the least-squares fit of the
projected joints onto the 2D image landmarks.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from typing import List, Optional, Sequence

import numpy as np

# MediaPipe landmark indices (person's left/right).
NOSE, L_EAR, R_EAR = 0, 7, 8
L_SH, R_SH, L_EL, R_EL, L_WR, R_WR, L_IDX, R_IDX = 11, 12, 13, 14, 15, 16, 19, 20
L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANK, R_ANK, L_FOOT, R_FOOT = 23, 24, 25, 26, 27, 28, 31, 32
INPUT_SIZE = 256  # crops are upscaled to this height and padded square (much better detection rate)


def find_pose_python() -> Optional[str]:
    """The interpreter to run MediaPipe with: $GCLREID_POSE_PYTHON, else this one if it has mediapipe."""
    env = os.environ.get("GCLREID_POSE_PYTHON")
    if env:
        return env
    import importlib.util
    return sys.executable if importlib.util.find_spec("mediapipe") is not None else None


# ----------------------------------------------------------------------------------------------
# Server side (runs in the MediaPipe interpreter; numpy and mediapipe only).

def _serve(min_detection_confidence: float) -> None:
    import mediapipe as mp
    pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=False,
                                  min_detection_confidence=min_detection_confidence)
    for line in sys.stdin:
        batch = json.loads(line)
        results = []
        for item in batch:
            h, w = item["shape"]
            img = np.frombuffer(base64.b64decode(item["data"]), dtype=np.uint8).reshape(h, w, 3)
            results.append(_detect(pose, img))
        sys.stdout.write(json.dumps(results) + "\n")
        sys.stdout.flush()


def _detect(pose, img: np.ndarray) -> Optional[dict]:
    from PIL import Image
    h, w = img.shape[:2]
    scale = INPUT_SIZE / h
    nw = max(1, min(INPUT_SIZE, int(round(w * scale))))
    big = np.asarray(Image.fromarray(img).resize((nw, INPUT_SIZE), Image.BILINEAR))
    pad = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    left = (INPUT_SIZE - nw) // 2
    pad[:, left:left + nw] = big
    res = pose.process(pad)
    if res.pose_world_landmarks is None or res.pose_landmarks is None:
        return None
    world = [[p.x, p.y, p.z, p.visibility] for p in res.pose_world_landmarks.landmark]
    # Image landmarks back to fractions of the original crop.
    image = [[(p.x * INPUT_SIZE - left) / nw, p.y] for p in res.pose_landmarks.landmark]
    return {"world": world, "image": image}


# ----------------------------------------------------------------------------------------------
# Client side (core process).

class MediaPipeEstimator:
    """Runs the server in a subprocess of ``python``; :meth:`estimate` returns an Estimate or None
    (nobody detected) per image."""

    def __init__(self, python: str, min_detection_confidence: float = 0.1) -> None:
        self.python = python
        self.proc = subprocess.Popen([python, os.path.abspath(__file__), "--serve", str(min_detection_confidence)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def detect(self, images: Sequence) -> List[Optional[dict]]:
        payload = []
        for im in images:
            arr = np.ascontiguousarray(np.asarray(im.convert("RGB") if hasattr(im, "convert") else im, dtype=np.uint8))
            payload.append({"shape": arr.shape[:2], "data": base64.b64encode(arr.tobytes()).decode("ascii")})
        self.proc.stdin.write(json.dumps(payload) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            from ..errors import GclreidError
            raise GclreidError(f"structures: the MediaPipe process ({self.python}) stopped; run "
                               f"`{self.python} -c 'import mediapipe'` to see why, or use --estimator fallback")
        return json.loads(line)

    def estimate(self, images: Sequence) -> list:
        return [None if d is None else landmarks_to_estimate(np.asarray(d["world"], dtype=np.float32),
                                                             np.asarray(d["image"], dtype=np.float32))
                for d in self.detect(images)]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def landmarks_to_estimate(world: np.ndarray, image: np.ndarray, elevation: float = 0.0):
    """An :class:`~gclreid.structures.estimate.Estimate` from MediaPipe landmarks.

    ``world`` [33, 4]: metric x (image right), y (down), z (away from the camera), visibility;
    ``image`` [33, 2]: x, y as fractions of the crop's width and height.
    """
    import torch
    from ..body import OrthoCamera, pose_from_joints
    from ..body.skeleton import DEFAULT_SHAPE, JOINT_INDEX, NUM_JOINTS, SHAPE_INDEX
    from .estimate import Estimate

    pts, vis = world[:, :3].astype(np.float64), world[:, 3]
    across = (pts[L_SH] - pts[R_SH]) + (pts[L_HIP] - pts[R_HIP])
    yaw = float(np.degrees(np.arctan2(across[2], across[0])))
    view = OrthoCamera(1.0, 0.0, 0.0, elevation).view_rotation(torch.tensor([yaw]))[0].double().numpy()
    body = pts @ view  # rows: view = R @ body  →  body = R^T @ view
    h = DEFAULT_SHAPE[0]
    hip_mid = (body[L_HIP] + body[R_HIP]) / 2
    sh_mid = (body[L_SH] + body[R_SH]) / 2
    up = sh_mid - hip_mid
    pelvis = hip_mid + np.array([0.0, 0.03 * h, 0.0])
    trunk = sh_mid - pelvis
    j = np.zeros((NUM_JOINTS, 3))
    name = JOINT_INDEX
    j[name["pelvis"]] = pelvis
    j[name["spine"]] = pelvis + trunk * (0.09 / 0.275)
    j[name["chest"]] = pelvis + trunk * (0.19 / 0.275)
    j[name["neck"]] = sh_mid + up / max(np.linalg.norm(up), 1e-6) * 0.01 * h
    ear_mid = (body[L_EAR] + body[R_EAR]) / 2
    head_dir = ear_mid - j[name["neck"]]
    j[name["head"]] = j[name["neck"]] + head_dir * 0.6
    j[name["head_top"]] = j[name["head"]] + head_dir / max(np.linalg.norm(head_dir), 1e-6) * 0.12 * h
    for side, (sh, el, wr, idx, hip, kn, an, ft) in (("l", (L_SH, L_EL, L_WR, L_IDX, L_HIP, L_KNEE, L_ANK, L_FOOT)),
                                                       ("r", (R_SH, R_EL, R_WR, R_IDX, R_HIP, R_KNEE, R_ANK, R_FOOT))):
        for joint, k in (("shoulder", sh), ("elbow", el), ("wrist", wr), ("hand", idx), ("hip", hip),
                         ("knee", kn), ("ankle", an), ("toe", ft)):
            j[name[f"{side}_{joint}"]] = body[k]
    # Shape factors from limb lengths relative to the model's proportions (stature fixed: the
    # orthographic render is framed on the image, so absolute size does not matter).
    dist = lambda a, b: float(np.linalg.norm(body[a] - body[b]))  # noqa: E731
    leg = (dist(L_HIP, L_KNEE) + dist(L_KNEE, L_ANK) + dist(R_HIP, R_KNEE) + dist(R_KNEE, R_ANK)) / 2
    arm = (dist(L_SH, L_EL) + dist(L_EL, L_WR) + dist(R_SH, R_EL) + dist(R_EL, R_WR)) / 2
    torso = float(np.linalg.norm(trunk))
    shape = torch.tensor(DEFAULT_SHAPE, dtype=torch.float32)
    refs = {"leg": leg / ((0.215 + 0.24) * h), "arm": arm / ((0.185 + 0.15) * h),
            "shoulder": dist(L_SH, R_SH) / (0.23 * h), "hip": dist(L_HIP, R_HIP) / (0.11 * h)}
    # MediaPipe's metric scale is approximate: normalise the factors by the torso's.
    torso_f = torso / (0.275 * h)
    for key, value in refs.items():
        shape[SHAPE_INDEX[key]] = float(np.clip(value / max(torso_f, 1e-3), 0.8, 1.25))
    joints = torch.tensor(j, dtype=torch.float32)[None]
    pose = pose_from_joints(joints, shape[None])[0]
    # Camera: least-squares scale and offset of the projected landmarks onto the image landmarks
    # (in units of the map height; a 2:1 map is half as wide as high).
    q = pts[:, :2]                       # orthographic projection of the camera-frame landmarks
    p = np.stack([image[:, 0] * 0.5, image[:, 1]], 1)
    wgt = np.clip(vis, 0.05, 1.0)[:, None]
    qm, pm = (q * wgt).sum(0) / wgt.sum(), (p * wgt).sum(0) / wgt.sum()
    s = float(((q - qm) * (p - pm) * wgt).sum() / max(((q - qm) ** 2 * wgt).sum(), 1e-9))
    # The pelvis (body origin) sits at the projection of `pelvis` in the camera frame.
    pelvis_cam = view @ pelvis
    centre = pm + s * (pelvis_cam[:2] - qm)
    confidence = float(np.clip(vis[[L_SH, R_SH, L_HIP, R_HIP]].mean(), 0, 1))
    # Camera: scale in map heights per metre, pelvis centre as fractions of the map width/height.
    return Estimate(pose, shape, yaw, (0.0, 0.0, 1.0, 1.0), "detected", confidence, elevation,
                    camera=(s, float(centre[0] * 2.0), float(centre[1])))


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--serve":
        _serve(float(sys.argv[2]) if len(sys.argv) > 2 else 0.1)
    else:
        print("usage: python mediapipe_pose.py --serve [MIN_DETECTION_CONFIDENCE]", file=sys.stderr)
        sys.exit(2)
