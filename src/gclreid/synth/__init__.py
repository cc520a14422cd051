"""SynthReID: a synthetic multi-camera person dataset in Market-1501 layout with 3D ground truth.

``generate(preset("demo"), "data/synthreid-demo")`` writes images, structure maps at 8 angles,
true novel views and ``synthreid.json``; ``gclreid synth`` is the command-line front end.
See docs/synthreid.md.
"""
from .cameras import CameraProfile, make_background, sample_cameras, sample_yaw
from .clothing import ACCESSORY_SLOTS, MATERIALS, Outfit, accessory_segments, albedo
from .identity import Garment, Identity, identity_from_dict, sample_identity
from .presets import MAX_CAMERAS, MAX_IDENTITIES, PRESETS, SynthConfig, preset
from .scene import Dressed, Shot, compose, dress, frame_shots, make_bodies, noise_field, render_people, render_structures
from .writer import (CONTACT_SHEET, METADATA, SPLIT_DIRS, ImageSpec, Plan, generate, make_plan, metadata, tune_malloc,
                     prepare_output, render_chunk)

__all__ = [
    "CameraProfile", "make_background", "sample_cameras", "sample_yaw",
    "ACCESSORY_SLOTS", "MATERIALS", "Outfit", "accessory_segments", "albedo",
    "Garment", "Identity", "identity_from_dict", "sample_identity",
    "MAX_CAMERAS", "MAX_IDENTITIES", "PRESETS", "SynthConfig", "preset",
    "Dressed", "Shot", "compose", "dress", "frame_shots", "noise_field", "make_bodies", "render_people", "render_structures",
    "CONTACT_SHEET", "METADATA", "SPLIT_DIRS", "ImageSpec", "Plan", "generate", "make_plan", "metadata",
    "prepare_output", "render_chunk", "tune_malloc",
]
