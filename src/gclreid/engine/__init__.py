"""Training: one loop (loop.py) and one file per method (tmp, cluster_contrast, supervised)."""
from .loop import train
from .method import METHODS, Method, build_method, register_method

__all__ = ["train", "Method", "METHODS", "build_method", "register_method"]
