"""SynthReID generator settings and the named presets."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Dict, Tuple

from ..errors import GclreidError

MAX_CAMERAS = 9          # Market-1501 names have a single camera digit (c1..c9)
MAX_IDENTITIES = 9999    # 4-digit identity numbers; 0000 marks distractors


@dataclass
class SynthConfig:
    """Everything that determines a SynthReID dataset (together with the code version)."""
    train_ids: int = 60
    test_ids: int = 40
    cams: int = 4
    height: int = 128
    width: int = 64
    train_images_per_id: float = 10.0   # mean images per training identity
    test_images_per_id: float = 10.0    # mean images per test identity (query + gallery)
    min_cams_per_id: int = 2            # every identity is seen by at least this many cameras
    distractors: int = 40               # gallery images of people outside train and test (pid 0000)
    seed: int = 0
    ssaa: int = 2                        # supersampling of colour renders (anti-aliasing)
    angles: Tuple[int, ...] = (45, 90, 135, 180, 225, 270, 315)  # rotations with structure maps and views
    views: bool = True                   # write the true novel views
    chunk: int = 32                      # images rendered together; fixed, so output is byte-identical
                                         # whatever the number of workers

    def validate(self) -> "SynthConfig":
        """Raise :class:`GclreidError` naming the bad value; returns self."""
        def bad(name: str, value, expected: str) -> GclreidError:
            return GclreidError(f"synth: {name}={value!r} is invalid: expected {expected}")

        for name in ("train_ids", "test_ids", "distractors"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise bad(name, v, "a non-negative integer")
        if self.train_ids + self.test_ids == 0:
            raise bad("train_ids", self.train_ids, "at least one training or test identity")
        if self.train_ids + self.test_ids > MAX_IDENTITIES:
            raise bad("train_ids + test_ids", self.train_ids + self.test_ids,
                      f"at most {MAX_IDENTITIES} (Market-1501 names have 4-digit identities)")
        if not isinstance(self.cams, int) or not 1 <= self.cams <= MAX_CAMERAS:
            raise bad("cams", self.cams, f"an integer in 1..{MAX_CAMERAS} (Market-1501 names have one camera digit)")
        if self.test_ids > 0 and self.cams < 2:
            raise bad("cams", self.cams, "at least 2 when there are test identities (query and gallery "
                      "must come from different cameras)")
        if not isinstance(self.min_cams_per_id, int) or not 1 <= self.min_cams_per_id <= self.cams:
            raise bad("min_cams_per_id", self.min_cams_per_id, f"an integer in 1..cams={self.cams}")
        for name in ("height", "width"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 16:
                raise bad(name, v, "an integer >= 16")
        if self.height != 2 * self.width:
            raise GclreidError(f"synth: image size {self.height}x{self.width} is not 2:1; expected height = 2 x width "
                               f"(e.g. 128x64 as Market-1501, or 256x128)")
        for name in ("train_images_per_id", "test_images_per_id"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v < 1:
                raise bad(name, v, "a number >= 1")
        if not isinstance(self.ssaa, int) or not 1 <= self.ssaa <= 4:
            raise bad("ssaa", self.ssaa, "an integer in 1..4")
        if not isinstance(self.chunk, int) or self.chunk < 1:
            raise bad("chunk", self.chunk, "a positive integer")
        if any((not isinstance(a, int)) or not 0 < a < 360 for a in self.angles) or len(set(self.angles)) != len(self.angles):
            raise bad("angles", self.angles, "distinct integer degrees in 1..359")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["angles"] = list(self.angles)
        return d


PRESETS: Dict[str, SynthConfig] = {
    # Small and quick on a laptop CPU: 616 training images (60 identities), 118 queries and 298
    # gallery images (40 identities + 40 distractors), 4 cameras, 128x64; ~10-20 s on 2 cores.
    "demo": SynthConfig(),
    # Market-1501 scale: 751 / 750 identities, 6 cameras, 12,811 training images, 3,363 queries,
    # 15,877 gallery images with 2,798 distractors (Market: 12,936 / 3,368 / 15,913), 128x64 like
    # Market's crops.
    "market": SynthConfig(train_ids=751, test_ids=750, cams=6, min_cams_per_id=3, train_images_per_id=17.2,
                          test_images_per_id=22.0, distractors=2798),
}


def preset(name: str, **overrides) -> SynthConfig:
    """A named preset with some fields replaced (``None`` values are ignored)."""
    if name not in PRESETS:
        raise GclreidError(f"synth: unknown preset {name!r}; expected one of {', '.join(sorted(PRESETS))}")
    known = {f.name for f in fields(SynthConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise GclreidError(f"synth: unknown setting(s) {', '.join(sorted(unknown))}")
    cfg = replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
    return cfg.validate()
