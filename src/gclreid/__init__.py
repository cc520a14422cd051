"""gclreid: person re-identification without identity labels (GCL, TMP, cluster contrast, DG-Net)."""
__version__ = "0.1.0"
