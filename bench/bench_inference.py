"""Inference (issue 16): embedding throughput eager vs TorchScript vs ONNX Runtime, and search over 1M features.

Embedding: for ResNet-50 and MobileNetV2 identity encoders at 256×128 (512-d, untrained weights:
throughput does not depend on the values), a freshly built network is saved as a checkpoint would be
(`save_checkpoint` with its config, `eval.flip=false`), loaded with `Encoder.from_checkpoint`, and
exported with `gclreid.inference.export.export_encoder` to TorchScript and ONNX (parity-checked). On one
pre-made normalised batch the three backends are timed in the same rounds (interleaved, after a
warm-up): images/s of a batch of 32 and the latency of one image (ms). "eager" is `Encoder.embed` of the
batch tensor; "torchscript" `torch.jit.load` + forward under `no_grad`; "onnxruntime" an
`InferenceSession` (CPUExecutionProvider, `intra_op_num_threads = torch.get_num_threads()`) run on a
numpy batch. Reported: the median over rounds.

Search: in a child process (so its memory is the search's own), a 1,000,000 × 512 random L2-normalised
float32 gallery is made in place, then `gclreid.inference.topk_search(query, gallery, k=10)` runs for 1
and for 100 queries: time (median over repeats) and the peak RSS above the RSS before the call (the
kernel's high-water mark VmHWM, reset before each call through /proc/self/clear_refs; where that is
not possible, the growth of `ru_maxrss`).

The load average (`os.getloadavg`) before and after is recorded: the numbers are upper bounds on a
shared machine.

    python bench/bench_inference.py [--quick] [--archs resnet50 mobilenet_v2] [--gallery 1000000]
Writes bench/results/inference.json and prints a table.
"""
from __future__ import annotations

import gclreid  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads OpenMP)

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from _common import cpu_name, machine, write_results

SIZE = (256, 128)
BACKENDS = ("eager", "torchscript", "onnxruntime")


def load_average() -> list:
    return [round(x, 2) for x in os.getloadavg()]


# --------------------------------------------------------------------------------------------------
# embedding throughput


def make_checkpoint(arch: str, folder: Path) -> Path:
    """A freshly built identity encoder saved the way training saves it (config included)."""
    from gclreid.checkpoint import save_checkpoint
    from gclreid.config import load_config, to_dict
    from gclreid.models import build_identity_encoder

    cfg = load_config(None, ["model.pretrained=false", f"model.arch={arch}", f"data.height={SIZE[0]}",
                             f"data.width={SIZE[1]}", "model.embed_dim=512", "eval.flip=false"])
    torch.manual_seed(0)
    model = build_identity_encoder(cfg.model)
    return save_checkpoint(folder / f"{arch}.pt", models={"identity_encoder": model}, config=to_dict(cfg),
                           save_rng=False)


def ort_session(path: Path, threads: int):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    return session, session.get_inputs()[0].name


def backends_for(arch: str, folder: Path, threads: int):
    """{backend: callable(batch tensor) -> B×D} and what exporting took."""
    from gclreid.inference import Encoder
    from gclreid.inference.export import export_encoder

    ckpt = make_checkpoint(arch, folder)
    encoder = Encoder.from_checkpoint(ckpt, device="cpu")
    assert not encoder.flip and (encoder.height, encoder.width) == SIZE
    info = {}
    t0 = time.perf_counter()
    ts = export_encoder(ckpt, folder / f"{arch}.ts.pt", "torchscript")
    info["export_torchscript_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    onnx = export_encoder(ckpt, folder / f"{arch}.onnx", "onnx")
    info["export_onnx_s"] = round(time.perf_counter() - t0, 1)
    info["max_abs_diff"] = {"torchscript": ts.check.get("max_abs_diff"), "onnx": onnx.check.get("max_abs_diff")}
    info["onnx_opset"] = onnx.metadata.get("opset")
    info["file_mb"] = {"torchscript": round(ts.size_bytes / 2**20, 1), "onnx": round(onnx.size_bytes / 2**20, 1)}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.load(os.fspath(ts.path), map_location="cpu").eval()
    session, name = ort_session(onnx.path, threads)

    def eager(x, _numpy=None):
        return encoder.embed(x, batch_size=len(x))

    def torchscript(x, _numpy=None):
        with torch.no_grad():
            return scripted(x)

    def onnxruntime(x, numpy_x):
        return session.run(None, {name: numpy_x})[0]

    return {"eager": eager, "torchscript": torchscript, "onnxruntime": onnxruntime}, info


def bench_embedding(arch: str, rounds: int, warmup: int, latency_calls: int, batch: int, threads: int):
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        fns, info = backends_for(arch, Path(tmp), threads)
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(batch, 3, *SIZE, generator=gen)  # ImageNet-normalised images are ~N(0, 1) per channel
        xn = np.ascontiguousarray(x.numpy())
        x1, x1n = x[:1].clone(), np.ascontiguousarray(xn[:1])
        outs = {}
        for b, fn in fns.items():  # warm-up (TorchScript's profiling executor optimises on the first calls)
            for _ in range(warmup):
                outs[b] = np.asarray(fn(x, xn))
                fn(x1, x1n)
        ref = outs["eager"]
        info["warmup_max_abs_diff_vs_eager"] = {b: float(np.abs(np.asarray(o) - ref).max()) for b, o in outs.items()}
        batch_t = {b: [] for b in fns}
        one_t = {b: [] for b in fns}
        for r in range(rounds):
            order = list(fns) if r % 2 == 0 else list(fns)[::-1]
            for b in order:
                fn = fns[b]
                t0 = time.perf_counter()
                fn(x, xn)
                batch_t[b].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                for _ in range(latency_calls):
                    fn(x1, x1n)
                one_t[b].append((time.perf_counter() - t0) / latency_calls)
    rows = []
    for b in fns:
        med = statistics.median(batch_t[b])
        rows.append({"arch": arch, "backend": b, "batch": batch, "batch_s_median": round(med, 4),
                     "images_per_s": round(batch / med, 1),
                     "images_per_s_range": [round(batch / max(batch_t[b]), 1), round(batch / min(batch_t[b]), 1)],
                     "latency_ms_batch1": round(1000 * statistics.median(one_t[b]), 1),
                     "latency_ms_range": [round(1000 * min(one_t[b]), 1), round(1000 * max(one_t[b]), 1)]})
    eager = rows[0]["images_per_s"]
    for row in rows:
        row["speedup_vs_eager"] = round(row["images_per_s"] / eager, 2)
    return rows, info


# --------------------------------------------------------------------------------------------------
# search (child process)


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def search_child(n: int, dim: int, queries: list, repeats: int, k: int) -> dict:
    from gclreid.inference import topk_search

    out = {"gallery": n, "dim": dim, "k": k, "threads": torch.get_num_threads()}
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    gallery = torch.empty(n, dim)
    for s in range(0, n, 65536):  # in place, in blocks: no second 2 GB temporary
        block = gallery[s:s + 65536]
        block.normal_(generator=gen)
        block.div_(block.norm(dim=1, keepdim=True))
    out["make_gallery_s"] = round(time.perf_counter() - t0, 2)
    out["gallery_mb"] = round(gallery.numel() * 4 / 2**20, 1)
    out["rss_with_gallery_mb"] = round(_rss_kb("VmRSS") / 1024, 1)
    rows = []
    for nq in queries:
        q = torch.nn.functional.normalize(torch.randn(nq, dim, generator=gen), dim=1)
        times, extra = [], []
        for _ in range(repeats):
            exact = _reset_peak()
            before_rss = _rss_kb("VmRSS")
            before_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            t0 = time.perf_counter()
            d, i = topk_search(q, gallery, k)
            times.append(time.perf_counter() - t0)
            if exact:
                extra.append((_rss_kb("VmHWM") - before_rss) / 1024)
            else:
                extra.append((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_max) / 1024)
        assert d.shape == (nq, k) and i.shape == (nq, k)
        rows.append({"queries": nq, "seconds_median": round(statistics.median(times), 3),
                     "seconds": [round(t, 3) for t in times], "extra_peak_mb": round(max(extra), 1),
                     "peak_method": "VmHWM reset via clear_refs" if exact else "ru_maxrss delta"})
    out["rows"] = rows
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def bench_search(n: int, dim: int, queries: list, repeats: int, k: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--search-child", "--gallery", str(n), "--dim", str(dim),
           "--queries", *map(str, queries), "--search-repeats", str(repeats), "--k", str(k)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(os.path.abspath(__file__)))
    if proc.returncode:
        raise RuntimeError(f"search child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds (3 instead of 7) and the 1M search once (instead of 3 times)")
    parser.add_argument("--archs", nargs="+", default=["resnet50", "mobilenet_v2"])
    parser.add_argument("--batch", type=int, default=32, help="batch size of the throughput measurement")
    parser.add_argument("--gallery", type=int, default=1_000_000, help="gallery size of the search")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--no-search", action="store_true", help="embedding throughput only")
    parser.add_argument("--no-embed", action="store_true", help="search only")
    parser.add_argument("--search-repeats", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--search-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "inference.json"))
    args = parser.parse_args()

    if args.search_child:
        print(json.dumps(search_child(args.gallery, args.dim, args.queries, args.search_repeats or 1, args.k)))
        return 0

    started = time.perf_counter()
    threads = torch.get_num_threads()
    rounds, warmup, latency_calls = (3, 2, 3) if args.quick else (7, 2, 5)
    search_repeats = args.search_repeats or (1 if args.quick else 3)
    load_start = load_average()
    print(f"torch={torch.__version__} threads={threads} cpu={cpu_name()!r} load average {load_start}", flush=True)
    payload = {"benchmark": "inference", "date": time.strftime("%Y-%m-%d"), "quick": args.quick,
               "cpu": cpu_name(), **machine(torch.device("cpu")), "load_average_start": load_start,
               "settings": {"size": list(SIZE), "batch": args.batch, "rounds": rounds, "warmup": warmup,
                            "latency_calls_per_round": latency_calls, "embed_dim": 512, "flip": False}}
    try:
        import onnxruntime
        payload["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass

    if not args.no_embed:
        rows, infos = [], {}
        print(f"{'arch':<13} {'backend':<12} {'images/s (b' + str(args.batch) + ')':>16} {'range':>15} "
              f"{'× eager':>8} {'1 image ms':>11}", flush=True)
        for arch in args.archs:
            arch_rows, info = bench_embedding(arch, rounds, warmup, latency_calls, args.batch, threads)
            infos[arch] = info
            rows += arch_rows
            for r in arch_rows:
                lo, hi = r["images_per_s_range"]
                print(f"{arch:<13} {r['backend']:<12} {r['images_per_s']:16.1f} {f'{lo}–{hi}':>15} "
                      f"{r['speedup_vs_eager']:8.2f} {r['latency_ms_batch1']:11.1f}", flush=True)
            print(f"  export: torchscript {info['export_torchscript_s']} s, onnx {info['export_onnx_s']} s "
                  f"(opset {info['onnx_opset']}); max |diff| vs eager {info['warmup_max_abs_diff_vs_eager']}",
                  flush=True)
        payload["embedding"] = rows
        payload["export"] = infos

    if not args.no_search:
        search = bench_search(args.gallery, args.dim, args.queries, search_repeats, args.k)
        payload["search"] = search
        print(f"search: {search['gallery']:,} × {search['dim']} gallery ({search['gallery_mb']} MB, made in "
              f"{search['make_gallery_s']} s), top {search['k']}, {search_repeats} repeat(s)", flush=True)
        for r in search["rows"]:
            print(f"  {r['queries']:>4} queries: {r['seconds_median']:.3f} s, extra peak memory "
                  f"{r['extra_peak_mb']} MB ({r['peak_method']})", flush=True)

    payload["load_average_end"] = load_average()
    payload["wall_s"] = round(time.perf_counter() - started, 1)
    print(f"load average at the end {payload['load_average_end']}; wall {payload['wall_s']} s")
    write_results(args.out, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
