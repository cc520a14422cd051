"""Helpers shared by the benchmark scripts (imported as `_common`: scripts run from bench/)."""
import json
import os
import platform
import sys
from pathlib import Path

import torch


def machine(device: torch.device) -> dict:
    """What the numbers were measured on; recorded in every results file."""
    return {"hardware": {"device": str(device), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
                         "platform": platform.platform(), "processor": platform.processor(),
                         "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
            "torch": torch.__version__, "python": sys.version.split()[0]}


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_results(path, payload: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")
