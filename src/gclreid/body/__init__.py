"""Parametric 3D body, orthographic camera and a fast batched renderer (structure maps, colour).

Typical use::

    from gclreid.body import Body, render_structure
    bodies = Body.walking(phase=[0.1, 0.6], yaw=[0.0, 90.0])
    maps = render_structure(bodies, height=256, width=128)   # [2, 8, 256, 128] uint8, 0°…315°
"""
from .camera import OrthoCamera, frame_camera, local_frame, segment_bounds
from .model import BODY_PARTS, BODY_SEGMENT_NAMES, PART_INDEX, PART_MIRROR, PART_NAMES, Body, Segments, body_segments
from .pose import mirror_pose, pose_from_joints, rest_pose, walking_pose
from .raster import Surface, decode_keys, prepare, rasterize, surface
from .render import (STRUCTURE_ANGLES, RenderSizeError, check_size, grey_from_surface, lambert, render_grey, render_maps,
                     render_structure)
from .skeleton import (DEFAULT_SHAPE, JOINT_INDEX, JOINTS, NUM_JOINTS, NUM_SHAPE, PARENTS, SHAPE_FIELDS, SHAPE_INDEX,
                       bone_lengths, default_shape, forward_kinematics, rest_offsets)

__all__ = [
    "Body", "Segments", "OrthoCamera", "frame_camera", "local_frame", "segment_bounds", "body_segments",
    "BODY_PARTS", "BODY_SEGMENT_NAMES", "PART_INDEX", "PART_MIRROR", "PART_NAMES",
    "rest_pose", "walking_pose", "pose_from_joints", "mirror_pose",
    "Surface", "decode_keys", "prepare", "rasterize", "surface",
    "STRUCTURE_ANGLES", "RenderSizeError", "check_size", "grey_from_surface", "lambert", "render_grey", "render_maps", "render_structure",
    "DEFAULT_SHAPE", "JOINT_INDEX", "JOINTS", "NUM_JOINTS", "NUM_SHAPE", "PARENTS", "SHAPE_FIELDS", "SHAPE_INDEX",
    "bone_lengths", "default_shape", "forward_kinematics", "rest_offsets",
]
