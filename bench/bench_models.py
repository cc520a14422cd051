"""Benchmark the identity encoder Eid and ImageNet weight loading.

Measures, in one run and on the current device:
  * Eid inference throughput (eval, no grad) at the paper configuration (ResNet-50, last stride 1,
    256×128) and the CPU setting (ResNet-18, 128×64), contiguous vs channels-last memory format;
  * the cost of last stride 1 relative to last stride 2 (4× larger layer4 map);
  * one training step (forward + backward of the embedding) per batch, in float32 and under bf16
    autocast (what train.amp does on CUDA and train.amp_cpu on the CPU);
  * MobileNetV2 (always channels-last inside) against its contiguous variant, eval and train step,
    at 128×64 (the CPU Market-1501 runs) and 256×128;
  * loading a ResNet-50 ImageNet file in torchvision format (generated here, random values) relative
    to building the model.

Usage: python bench/bench_models.py [--quick] [--device auto|cpu|cuda]
Writes bench/results/models.json and prints a table.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from _common import machine, write_results

from gclreid.models import IdentityEncoder, build_resnet, load_imagenet_weights
from gclreid.runtime import resolve_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def bench_inference(arch, last_stride, size, batch, device, channels_last, repeats):
    model = IdentityEncoder(arch, last_stride=last_stride).to(device).eval()
    x = torch.randn(batch, 3, *size, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def run():
        with torch.no_grad():
            model.embed(x)
    return time_call(run, device, repeats)


def bench_train_step(arch, size, batch, device, repeats, bf16=False):
    """Forward + backward of the embedding and part features; `bf16`: under bf16 autocast (train.amp /
    train.amp_cpu)."""
    model = IdentityEncoder(arch, last_stride=1).to(device).train()
    x = torch.randn(batch, 3, *size, device=device)

    def run():
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
            loss = out.embedding.float().pow(2).mean() + out.flat_parts().float().pow(2).mean()
        loss.backward()
    return time_call(run, device, repeats)


class _contiguous_mobilenet:
    """Within the block, MobileNetV2 is built and run contiguous (NCHW) instead of channels-last."""

    def __init__(self, active: bool):
        self.active = active

    def __enter__(self):
        from gclreid.models import mobilenet
        self.module, self.forward, self.init = mobilenet, mobilenet.MobileNetV2.forward, mobilenet.MobileNetV2.__init__
        if self.active:
            init = self.init

            def contiguous_init(model, *args, **kwargs):
                init(model, *args, **kwargs)
                model.to(memory_format=torch.contiguous_format)
            mobilenet.MobileNetV2.__init__ = contiguous_init
            mobilenet.MobileNetV2.forward = lambda model, x: model.features(x.contiguous())

    def __exit__(self, *exc):
        self.module.MobileNetV2.forward, self.module.MobileNetV2.__init__ = self.forward, self.init


def bench_weight_loading(repeats):
    with tempfile.TemporaryDirectory() as tmp:
        source = build_resnet("resnet50", with_fc=True)
        file = Path(tmp) / "resnet50-0676ba61.pth"
        torch.save(source.state_dict(), file)
        build = time_call(lambda: build_resnet("resnet50"), torch.device("cpu"), repeats)
        target = build_resnet("resnet50")
        load = time_call(lambda: load_imagenet_weights(target, "resnet50", str(file)), torch.device("cpu"), repeats)
    return build, load


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller batches")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "models.json"))
    args = parser.parse_args()
    device = resolve_device(args.device)
    repeats = 3 if args.quick else 5
    big_batch = 64 if device.type == "cuda" else (4 if args.quick else 8)
    rows = []

    def add(name, seconds, images=None, **extra):
        row = {"case": name, "seconds": round(seconds, 4), **extra}
        if images:
            row["images_per_s"] = round(images / seconds, 1)
        rows.append(row)
        print(f"{name:<52} {seconds * 1000:9.1f} ms" + (f"  {images / seconds:8.1f} img/s" if images else ""),
              flush=True)
        return seconds

    torch.manual_seed(0)
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")
    results = {}
    for arch, size in (("resnet50", (256, 128)), ("resnet18", (128, 64))):
        tag = f"{arch} {size[0]}x{size[1]}"
        cont = add(f"eval {tag} s1 batch {big_batch} contiguous",
                   bench_inference(arch, 1, size, big_batch, device, False, repeats), big_batch)
        last = add(f"eval {tag} s1 batch {big_batch} channels_last",
                   bench_inference(arch, 1, size, big_batch, device, True, repeats), big_batch)
        s2 = add(f"eval {tag} s2 batch {big_batch} contiguous",
                 bench_inference(arch, 2, size, big_batch, device, False, repeats), big_batch)
        results[f"{arch}_channels_last_speedup"] = round(cont / last, 3)
        results[f"{arch}_last_stride1_over_2_time"] = round(cont / s2, 3)
    train_batch = 16 if device.type == "cuda" else 4
    fp32 = add(f"train step resnet50 256x128 s1 batch {train_batch}",
               bench_train_step("resnet50", (256, 128), train_batch, device, repeats), train_batch)
    bf16 = add(f"train step resnet50 256x128 s1 batch {train_batch} bf16 autocast",
               bench_train_step("resnet50", (256, 128), train_batch, device, repeats, bf16=True), train_batch)
    results["resnet50_bf16_train_speedup"] = round(fp32 / bf16, 3)
    mb_batch = 64 if device.type == "cuda" else (16 if args.quick else 32)
    for size in ((128, 64), (256, 128)):
        tag = f"mobilenet_v2 {size[0]}x{size[1]} s1 batch {mb_batch}"
        times = {}
        for layout in ("channels_last", "contiguous"):
            with _contiguous_mobilenet(layout == "contiguous"):
                times[layout] = (
                    add(f"eval {tag} {layout}", bench_inference("mobilenet_v2", 1, size, mb_batch, device, False,
                                                                  repeats), mb_batch),
                    add(f"train step {tag} {layout}", bench_train_step("mobilenet_v2", size, mb_batch, device,
                                                                        repeats), mb_batch))
        results[f"mobilenet_v2_{size[0]}x{size[1]}_channels_last_train_speedup"] = round(
            times["contiguous"][1] / times["channels_last"][1], 3)
        bf16 = add(f"train step {tag} bf16 autocast", bench_train_step("mobilenet_v2", size, mb_batch, device,
                                                                      repeats, bf16=True), mb_batch)
        results[f"mobilenet_v2_{size[0]}x{size[1]}_bf16_train_speedup"] = round(times["channels_last"][1] / bf16, 3)
    build, load = bench_weight_loading(repeats)
    add("build resnet50 (random init)", build)
    add("load resnet50 ImageNet file (torchvision format)", load)
    results["load_over_build_time"] = round(load / build, 3)

    print()
    for key, value in results.items():
        print(f"{key:<40} {value:.3f}")
    write_results(args.out, {**machine(device), "quick": args.quick, "rows": rows, "ratios": results,})
    return 0


if __name__ == "__main__":
    sys.exit(main())
