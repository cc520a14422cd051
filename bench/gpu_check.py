#!/usr/bin/env python3
"""The prepared GPU check: run it first thing on a GPU machine (about 5 minutes on one H200, at most
`--budget` seconds, 480 by default).

Parts, in order of value; each runs in its own process with a timeout, a part that fails or times out
is recorded and the check goes on:

1. ``env`` — nvidia-smi, torch / CUDA / cuDNN versions, TF32 flags, dependencies; installs the
   package (``pip install -e .`` that never replaces an installed torch; wheels from
   ``runs/gpu_check_carry/wheels`` when the machine has no registry; ``torch==2.13.0`` only when no
   torch is installed at all).
2. ``cuda_tests`` — the tests that skip without CUDA (found in ``tests/`` by their
   ``skipif(... cuda ...)`` marks).
3. ``methods`` — a few iterations of every method (TMP, cluster contrast, supervised, GCL stage 2,
   GCL stage 3, DG-Net) on a small SynthReID made on the fly, in fp32 and in bf16 (``train.amp``:
   ``Method.autocast`` = ``torch.autocast("cuda", dtype=torch.bfloat16)``) from the same weights and
   batches: no NaN, and the first-step losses of bf16 and fp32 within ``--rtol``.
4. ``gcl_iteration`` — one GCL iteration at the paper's settings (ResNet-50, 256×128, batch 16,
   official generator and D, memory of 12,936 rows), stages 2 and 3: official compute pattern vs
   ours vs ours + ``gcl.checkpoint_decoder``, each in fp32 and bf16: images/s, peak memory
   (``torch.cuda.max_memory_allocated`` above the memory before the first step), first-step losses.
5. ``cluster_contrast_step`` — the cluster-contrast train step at batch 256 (256×128) for MobileNetV2
   and ResNet-50, fp32 and bf16: images/s and peak memory; and inference images/s at batch 256.
6. ``clustering`` — k-reciprocal Jaccard + DBSCAN (``pseudo_labels`` on the GPU) at Market (12,936)
   and MSMT17 (32,621) size, 2048-d identity-structured features.
7. ``evaluation`` — distances + mAP/CMC/mINP at Market size (3,368 × 15,913, 512-d) on the GPU,
   checked against the same evaluation on the CPU.
8. ``real_market`` — a short cluster-contrast run on the real Market-1501 (ImageNet MobileNetV2,
   256×128, batch 256, 2 epochs of one pass each, limited by time) with its final mAP: a timing run,
   not a result. Needs the data ($GCLREID_MARKET1501, else ../shared/data/market1501) and the weights
   ($GCLREID_MBV2_WEIGHTS, else runs/gpu_check_carry/weights/, else the torch hub cache); skipped with
   the reason otherwise.

Output (one folder): ``summary.json``, ``summary.md`` (markdown tables for docs/benchmarks.md, with
date, GPU, torch and CUDA versions), ``gpu_check.log`` (this driver's lines) and the parts' logs
(``logs/<part>.log``; with ``--pack`` — automatic when the folder is $OUT of the device tool — one
``logs.tar.gz`` instead, because the device tool brings back at most 8 files). The summary and the
archive are rewritten after every part, so a run stopped from outside still leaves what was done.

Usage:
    bash bench/gpu_check.sh [OUTDIR]                      # GPU machine; OUTDIR default $OUT, else runs/gpu_check
    bash bench/gpu_check.sh --device cpu --quick OUTDIR   # every part at tiny sizes on the CPU (tests the script)
    python bench/gpu_check.py --prepare-carry             # here: wheels + MobileNetV2 file into runs/gpu_check_carry
Without CUDA and without ``--device cpu`` the check says that it needs a GPU, records the
environment, marks the other parts skipped and exits 0.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CARRY = REPO / "runs" / "gpu_check_carry"
MBV2_FILE = "mobilenet_v2-dsr-2f518e77.pth"
TORCH_SPEC = "torch==2.13.0"  # installed only when the machine has no torch at all
DEPENDENCIES = {"omegaconf": "omegaconf", "yaml": "PyYAML", "numpy": "numpy", "scipy": "scipy",
                "sklearn": "scikit-learn", "numba": "numba", "PIL": "Pillow", "tqdm": "tqdm",
                "tensorboard": "tensorboard", "matplotlib": "matplotlib"}
STATUSES = ("ok", "failed", "timeout", "skipped")


class Part:
    def __init__(self, name: str, title: str, gpu_timeout: int, quick_timeout: int, needs_cuda: bool = False):
        self.name, self.title, self.needs_cuda = name, title, needs_cuda
        self.gpu_timeout, self.quick_timeout = gpu_timeout, quick_timeout


PARTS = [
    Part("env", "Environment and install", 150, 120),
    Part("cuda_tests", "CUDA-only tests", 150, 60, needs_cuda=True),
    Part("methods", "Every method, a few iterations, fp32 and bf16", 180, 150),
    Part("gcl_iteration", "GCL iteration at the paper's settings", 180, 120),
    Part("cluster_contrast_step", "Cluster-contrast train step, batch 256", 120, 90),
    Part("clustering", "Jaccard + DBSCAN at MSMT17 size", 120, 60),
    Part("evaluation", "Evaluation at Market size", 60, 60),
    Part("real_market", "Real Market-1501, cluster contrast (timing run)", 240, 120),
]
PART_NAMES = [p.name for p in PARTS]


class Skip(Exception):
    """Raised by a part that cannot run here; the message is the reason."""


# ----------------------------------------------------------------------------------------------------
# The driver (no torch import: it must run before torch is installed)
# ----------------------------------------------------------------------------------------------------

def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


class Driver:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.outdir).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.pack = args.pack
        self.work = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="gpu_check_"))
        self.work.mkdir(parents=True, exist_ok=True)
        # Logs live in OUTDIR/logs, or (packed) in the work folder and OUTDIR/logs.tar.gz.
        self.logs = (self.work / "logs") if self.pack else (self.out / "logs")
        self.logs.mkdir(parents=True, exist_ok=True)
        self.console = open(self.out / "gpu_check.log", "w", buffering=1)
        self.started = time.time()
        self.deadline = self.started + args.budget
        self.python = args.python or sys.executable
        self.device = args.device
        self.results: List[Dict[str, Any]] = []
        self.environment: Dict[str, Any] = {}
        self.child_env = dict(os.environ)
        paths = [str(REPO / "src"), str(HERE)] + ([self.child_env["PYTHONPATH"]] if self.child_env.get("PYTHONPATH") else [])
        self.child_env.update(PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1")
        self.summary: Dict[str, Any] = {
            "check": "gclreid gpu_check", "started": _now(), "date": _dt.date.today().isoformat(),
            "argv": sys.argv[1:], "quick": args.quick, "budget_s": args.budget, "outdir": str(self.out),
            "workdir": str(self.work), "packed_logs": self.pack}

    def say(self, text: str) -> None:
        line = f"[{time.time() - self.started:6.1f}s] {text}"
        print(line, flush=True)
        self.console.write(line + "\n")

    # -- running things ------------------------------------------------------------------------------
    def run_logged(self, cmd: List[str], log: Path, timeout: float, env: Optional[dict] = None) -> Dict[str, Any]:
        """Run `cmd` in its own process group, its output (stdout + stderr) into `log` with the elapsed
        time on every line; kill the whole group at `timeout`. Returns rc, seconds, timed_out, tail."""
        start = time.time()
        tail: List[str] = []
        with open(log, "a", buffering=1) as fh:
            fh.write(f"$ {' '.join(cmd)}\n")
            try:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=str(REPO),
                                        env=env or self.child_env, start_new_session=True, text=True,
                                        errors="replace", bufsize=1)
            except OSError as exc:
                fh.write(f"could not start: {exc}\n")
                return {"rc": 127, "seconds": 0.0, "timed_out": False, "tail": [str(exc)]}

            def pump():
                for line in proc.stdout:
                    fh.write(f"[{time.time() - start:7.1f}s] {line}")
                    tail.append(line.rstrip("\n"))
                    del tail[:-40]
            reader = threading.Thread(target=pump, daemon=True)
            reader.start()
            timed_out = False
            try:
                proc.wait(timeout=max(1.0, timeout))
            except subprocess.TimeoutExpired:
                timed_out = True
                fh.write(f"[{time.time() - start:7.1f}s] timeout after {timeout:.0f} s: stopping the process group\n")
                for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                    try:
                        os.killpg(proc.pid, sig)
                    except ProcessLookupError:
                        break
                    try:
                        proc.wait(timeout=grace)
                        break
                    except subprocess.TimeoutExpired:
                        continue
            reader.join(timeout=5)
            seconds = time.time() - start
            fh.write(f"[{seconds:7.1f}s] exit code {proc.returncode}\n")
        return {"rc": proc.returncode, "seconds": seconds, "timed_out": timed_out, "tail": tail}

    def capture(self, cmd: List[str], timeout: float = 60, env: Optional[dict] = None) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(REPO), env=env)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return subprocess.CompletedProcess(cmd, 124 if isinstance(exc, subprocess.TimeoutExpired) else 127,
                                               "", str(exc))

    def remaining(self) -> float:
        return self.deadline - time.time()

    # -- output ----------------------------------------------------------------------------------------
    def write_summary(self) -> None:
        self.summary.update(environment=self.environment, parts=self.results, device=self.device,
                            elapsed_s=round(time.time() - self.started, 1), updated=_now())
        self.summary["targets"] = issue_targets(self.results)
        tmp = self.out / "summary.json.tmp"
        tmp.write_text(json.dumps(self.summary, indent=2, default=str))
        os.replace(tmp, self.out / "summary.json")
        tmp = self.out / "summary.md.tmp"
        tmp.write_text(render_markdown(self.summary))
        os.replace(tmp, self.out / "summary.md")
        if self.pack:
            tmp = self.out / "logs.tar.gz.tmp"
            with tarfile.open(tmp, "w:gz") as tar:
                tar.add(self.logs, arcname="logs")
            os.replace(tmp, self.out / "logs.tar.gz")

    def record(self, part: Part, status: str, reason: str = "", seconds: float = 0.0, timeout: float = 0.0,
               data: Optional[dict] = None, log: Optional[Path] = None) -> Dict[str, Any]:
        assert status in STATUSES, status
        entry = {"name": part.name, "title": part.title, "status": status, "reason": reason,
                 "seconds": round(seconds, 1), "timeout_s": round(timeout), "log": f"logs/{log.name}" if log else "",
                 "data": data or {}}
        self.results.append(entry)
        self.say(f"{part.name}: {status.upper()}" + (f" — {reason}" if reason else "") + f" ({seconds:.0f} s)")
        self.write_summary()
        return entry

    # -- the check ---------------------------------------------------------------------------------------
    def run(self) -> int:
        a = self.args
        self.say(f"gclreid GPU check: out {self.out}, budget {a.budget:.0f} s, device {a.device}"
                 f"{', quick' if a.quick else ''}, work folder {self.work}")
        skip = set(a.skip or [])
        only = set(a.only or [])
        env_ok = True
        for part in PARTS:
            timeout = (part.quick_timeout if a.quick else part.gpu_timeout) * a.timeout_factor
            if part.name in skip or (only and part.name not in only and part.name != "env"):
                self.record(part, "skipped", "not selected (--skip/--only)")
                continue
            left = self.remaining()
            if left < 15:
                self.record(part, "skipped", f"time budget of {a.budget:.0f} s used up")
                continue
            timeout = min(timeout, left)
            if part.name == "env":
                env_ok = self.part_env(part, timeout)
                if self.device == "auto":
                    self.device = "cuda" if self.environment.get("cuda_available") else "cpu"
                    if self.device == "cpu" and not a.quick:
                        self.say("no CUDA device here: this check needs one. To exercise it on the CPU: "
                                 "bash bench/gpu_check.sh --device cpu --quick OUTDIR")
                        self.summary["no_cuda"] = True
                continue
            if not env_ok:
                self.record(part, "skipped", "the environment is not usable (see the env part)")
                continue
            if self.summary.get("no_cuda"):
                self.record(part, "skipped", "no CUDA device (torch.cuda.is_available() is False)")
                continue
            if self.device == "cuda" and not self.environment.get("cuda_available"):
                self.record(part, "skipped", "--device cuda, but torch.cuda.is_available() is False")
                continue
            if part.needs_cuda and self.device != "cuda":
                self.part_cuda_tests_listing(part)
                continue
            self.run_part(part, timeout)
        self.finish()
        bad = [r["name"] for r in self.results if r["status"] in ("failed", "timeout")]
        self.say(f"done in {time.time() - self.started:.0f} s: " + ", ".join(f"{r['name']} {r['status']}" for r in self.results))
        self.say(f"wrote {self.out / 'summary.md'} and {self.out / 'summary.json'}")
        return 1 if bad else 0

    def finish(self) -> None:
        self.summary["finished"] = _now()
        self.write_summary()
        self.console.flush()
        if not self.args.keep_work and not self.args.workdir:  # (packed logs are in the archive by now)
            shutil.rmtree(self.work, ignore_errors=True)
        elif not self.args.workdir:
            self.say(f"work folder kept: {self.work}")

    def run_part(self, part: Part, timeout: float) -> None:
        log = self.logs / f"{part.name}.log"
        log.unlink(missing_ok=True)  # a rerun into the same folder starts the part's log afresh
        result_file = self.work / f"{part.name}.json"
        result_file.unlink(missing_ok=True)
        cmd = [self.python, str(Path(__file__).resolve()), "--part", part.name, "--part-out", str(result_file),
               "--device", self.device, "--workdir", str(self.work), "--part-timeout", str(int(timeout)),
               "--rtol", str(self.args.rtol), "--atol", str(self.args.atol), "--logs", str(self.logs), str(self.out)]
        if self.args.quick:
            cmd.append("--quick")
        self.say(f"{part.name}: {part.title} (timeout {timeout:.0f} s) ...")
        run = self.run_logged(cmd, log, timeout)
        data: Dict[str, Any] = {}
        if result_file.is_file():
            try:
                data = json.loads(result_file.read_text())
            except ValueError:
                data = {}
        status, reason = data.pop("_status", None), data.pop("_reason", "")
        if run["timed_out"]:
            status, reason = "timeout", f"stopped after {timeout:.0f} s" + (f"; {reason}" if reason else "")
        elif run["rc"] != 0 and status not in ("skipped",):
            status = "failed"
            reason = reason or _last_error(run["tail"]) or f"exit code {run['rc']}"
        elif status is None:
            status, reason = "failed", "the part wrote no result"
        self.record(part, status, reason, run["seconds"], timeout, data, log)

    # -- part 1: environment (in the driver, before anything imports torch) ---------------------------
    def part_env(self, part: Part, timeout: float) -> bool:
        log = self.logs / "env.log"
        log.unlink(missing_ok=True)
        start = time.time()
        env: Dict[str, Any] = {"python": sys.version.split()[0], "python_executable": self.python,
                               "platform": platform.platform(), "cpu": _cpu_name(), "cpu_count": os.cpu_count()}
        notes: List[str] = []
        smi = self.capture(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"], 30)
        if smi.returncode == 0 and smi.stdout.strip():
            fields = [s.strip() for s in smi.stdout.strip().splitlines()[0].split(",")]
            env.update(gpu_name=fields[0], gpu_driver=fields[1] if len(fields) > 1 else "",
                       gpu_memory=fields[2] if len(fields) > 2 else "", gpu_count=len(smi.stdout.strip().splitlines()))
            self.run_logged(["nvidia-smi"], log, 30)
        else:
            env["nvidia_smi"] = (smi.stderr or smi.stdout).strip()[:200] or "not found"
            with open(log, "a") as fh:
                fh.write(f"nvidia-smi: {env['nvidia_smi']}\n")
        torch_info = self._probe_torch()
        if torch_info is None:
            notes.append(f"no torch: installing {TORCH_SPEC}")
            self.run_logged([self.python, "-m", "pip", "install", TORCH_SPEC], log, max(10, timeout - (time.time() - start) - 30))
            torch_info = self._probe_torch()
        if torch_info is None:
            env["torch"] = None
            self.environment = env
            self.record(part, "failed", "torch cannot be imported, and installing it failed", time.time() - start,
                        timeout, {"notes": notes}, log)
            return False
        env.update(torch_info)
        if self.device == "cuda" and not env.get("cuda_available"):
            notes.append("--device cuda but torch sees no CUDA device")
        # Dependencies and the package itself (never touching torch).
        missing = self._missing_modules()
        wheels = _wheels_dir()
        missing_after = missing
        if not missing:
            # Nothing to install: the parts import gclreid from src/ (on their PYTHONPATH). An editable install
            # here could re-point a shared environment at this checkout.
            notes.append("dependencies present: no install (the parts import gclreid from src/)")
            env["gclreid_import"] = "ok (src/ on PYTHONPATH)"
        else:
            cmd = [self.python, "-m", "pip", "install", "--no-build-isolation"]
            if wheels:  # the GPU machine has no registry: the carried wheels, the rest from what is installed
                cmd += ["--no-index", "--find-links", str(wheels)]
            cmd += ["-e", str(REPO)]
            notes.append(f"missing modules: {', '.join(missing) or 'none'}; {' '.join(cmd[1:])}")
            result = self.run_logged(cmd, log, max(10, min(120, timeout - (time.time() - start) - 10)))
            if result["rc"] != 0:
                notes.append("pip install failed (the parts still run from src/ on PYTHONPATH): "
                             + (_last_error(result["tail"]) or f"exit code {result['rc']}"))
            missing_after = self._missing_modules()
            if missing_after and wheels:
                cmd = [self.python, "-m", "pip", "install", "--no-index", "--no-deps", *map(str, sorted(wheels.glob("*.whl")))]
                notes.append("still missing: " + ", ".join(missing_after) + "; " + " ".join(cmd[1:]))
                self.run_logged(cmd, log, 60)
                missing_after = self._missing_modules()
            env["gclreid_import"], versions = self._gclreid_import()
            env["packages"] = versions or env.get("packages")
        git = self.capture(["git", "rev-parse", "--short", "HEAD"], 10)
        if git.returncode == 0:
            env["git_commit"] = git.stdout.strip()
            dirty = self.capture(["git", "status", "--porcelain", "--untracked-files=no"], 10)
            env["git_dirty"] = bool(dirty.stdout.strip())
        self.environment = env
        with open(log, "a") as fh:
            fh.write(json.dumps(env, indent=2) + "\n" + "\n".join(notes) + "\n")
        if missing_after or not env["gclreid_import"].startswith("ok"):
            self.record(part, "failed", f"missing: {', '.join(missing_after) or '-'}; gclreid import: "
                        f"{env['gclreid_import']}", time.time() - start, timeout, {"notes": notes}, log)
            return False
        self.record(part, "ok", "; ".join(n for n in notes if "failed" in n), time.time() - start, timeout,
                    {"notes": notes}, log)
        return True

    def _probe_torch(self) -> Optional[dict]:
        code = (
            "import json, torch\n"
            "info = {'torch': torch.__version__, 'cuda_available': torch.cuda.is_available(),\n"
            "        'torch_cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version(),\n"
            "        'tf32_matmul': torch.backends.cuda.matmul.allow_tf32, 'tf32_cudnn': torch.backends.cudnn.allow_tf32,\n"
            "        'float32_matmul_precision': torch.get_float32_matmul_precision(), 'threads': torch.get_num_threads()}\n"
            "if info['cuda_available']:\n"
            "    p = torch.cuda.get_device_properties(0)\n"
            "    info.update(device_name=p.name, capability='%d.%d' % (p.major, p.minor), device_memory_gib=round(p.total_memory / 2**30, 1),\n"
            "                multiprocessors=p.multi_processor_count, bf16_supported=torch.cuda.is_bf16_supported(), device_count=torch.cuda.device_count())\n"
            "import importlib.metadata as m\nversions = info['packages'] = {}\n"
            f"for n in {sorted(set(DEPENDENCIES.values()) | {'gclreid', 'pytest'})!r}:\n"
            "    try: versions[n] = m.version(n)\n    except Exception: versions[n] = None\n"
            "print(json.dumps(info))\n")
        result = self.capture([self.python, "-c", code], 120)
        if result.returncode != 0:
            with open(self.logs / "env.log", "a") as fh:
                fh.write(f"torch probe failed:\n{result.stderr[-2000:]}\n")
            return None
        return json.loads(result.stdout.strip().splitlines()[-1])

    def _missing_modules(self) -> List[str]:
        code = ("import importlib.util, json\n"
                f"print(json.dumps([m for m in {list(DEPENDENCIES)!r} if importlib.util.find_spec(m) is None]))")
        result = self.capture([self.python, "-c", code], 60)
        return json.loads(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else ["?"]

    def _gclreid_import(self):
        """After an install: whether the parts can import gclreid (src/ is on their PYTHONPATH), and the
        packages' versions."""
        code = ("import json, importlib.metadata as m\nout = {}\n"
                f"for n in {sorted(set(DEPENDENCIES.values()) | {'gclreid', 'pytest'})!r}:\n"
                "    try: out[n] = m.version(n)\n    except Exception: out[n] = None\n"
                "import gclreid, gclreid.engine, gclreid.clustering\n"
                "print(json.dumps({'file': gclreid.__file__, 'versions': out}))")
        result = self.capture([self.python, "-c", code], 120, self.child_env)
        if result.returncode != 0:
            return _last_error(result.stderr.splitlines()) or "failed", {}
        info = json.loads(result.stdout.strip().splitlines()[-1])
        return f"ok ({info['file']})", info["versions"]

    # -- part 2 on a machine without CUDA: list what would run ----------------------------------------
    def part_cuda_tests_listing(self, part: Part) -> None:
        tests = find_cuda_tests(REPO / "tests")
        self.record(part, "skipped", "no CUDA device: the CUDA-only tests would be skipped by pytest",
                    data={"selected": tests})


def _last_error(lines: List[str]) -> str:
    for line in reversed([ln.strip() for ln in lines if ln.strip()]):
        if re.search(r"(Error|Exception|error:|FAILED|Killed|No module)", line):
            return line[:300]
    return ""


def _cpu_name() -> str:
    # bench/_common.cpu_name, repeated: _common imports torch, which the env part may still have to install
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _wheels_dir() -> Optional[Path]:
    for candidate in (os.environ.get("GCLREID_WHEELS"), CARRY / "wheels", REPO / ".whl"):
        if candidate and Path(candidate).is_dir() and any(Path(candidate).glob("*.whl")):
            return Path(candidate)
    return None


def find_cuda_tests(tests: Path) -> List[str]:
    """Node ids of the tests that need CUDA: functions (or whole modules / classes) marked with a
    ``skipif`` whose condition mentions ``cuda``, plus tests with ``cuda`` in their name."""
    import ast
    found: List[str] = []
    for path in sorted(tests.glob("test_*.py")):
        if path.name == "test_gpu_check.py":
            continue
        source = path.read_text()
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue

        def cuda_mark(node) -> bool:
            text = ast.get_source_segment(source, node) or ""
            return "skipif" in text and "cuda" in text.lower()
        module_marked = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                            and cuda_mark(n.value) for n in tree.body)
        rel = path.relative_to(tests.parent).as_posix()
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                if module_marked or "cuda" in node.name.lower() or any(cuda_mark(d) for d in node.decorator_list):
                    found.append(f"{rel}::{node.name}")
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                if module_marked or any(cuda_mark(d) for d in node.decorator_list):
                    found.append(f"{rel}::{node.name}")
                else:
                    found += [f"{rel}::{node.name}::{f.name}" for f in node.body
                              if isinstance(f, ast.FunctionDef) and f.name.startswith("test")
                              and ("cuda" in f.name.lower() or any(cuda_mark(d) for d in f.decorator_list))]
    return found


# ----------------------------------------------------------------------------------------------------
# Summary: issue targets and markdown
# ----------------------------------------------------------------------------------------------------

def _part(results: List[dict], name: str) -> dict:
    return next((r for r in results if r["name"] == name), {})


def issue_targets(results: List[dict]) -> List[dict]:
    """Issue 18's GPU targets, read off the GCL part: the stage-3 iteration in bf16 (ours) ≥ 2.5×
    faster than the official compute pattern in fp32, peak memory ≤ 0.7×, equal losses (within the
    bf16 tolerance); every method runs on CUDA."""
    out = []
    gcl = _part(results, "gcl_iteration").get("data", {})
    for row in gcl.get("rows", []):
        if row.get("stage") == 3 and row.get("precision") == "bf16" and row.get("pattern") in ("ours", "ours_ckpt"):
            speed, mem = row.get("speedup_vs_official_fp32"), row.get("memory_ratio_vs_official_fp32")
            out.append({"target": f"stage 3, bf16 {row['pattern']} vs official fp32: speed-up ≥ 2.5×, memory ≤ 0.7×",
                        "speedup": speed, "memory_ratio": mem, "loss_rel_diff": row.get("loss_rel_diff_vs_official_fp32"),
                        "met": bool(speed and mem and speed >= 2.5 and mem <= 0.7)})
    methods = _part(results, "methods")
    if methods and methods.get("data", {}).get("device") == "cuda":
        out.append({"target": "every method runs on CUDA (fp32 and bf16) without error or NaN",
                    "met": methods.get("status") == "ok"})
    return out


def _fmt(value, spec: str = ".3g", none: str = "–") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return none
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)


def _table(header: List[str], rows: List[List[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def render_markdown(summary: dict) -> str:
    env = summary.get("environment", {})
    results = summary.get("parts", [])
    gpu = env.get("device_name") or env.get("gpu_name") or "no GPU"
    quick = " — quick mode (tiny sizes: checks the script, the numbers mean nothing)" if summary.get("quick") else ""
    md = [f"## GPU check, {summary.get('date')} — {gpu}{quick}\n",
          f"`bash bench/gpu_check.sh` ({summary.get('elapsed_s', 0):.0f} s of a {summary.get('budget_s', 0):.0f} s "
          f"budget, device {summary.get('device')}). {gpu}"
          + (f", {env.get('device_memory_gib')} GiB, compute capability {env.get('capability')}" if env.get("capability") else "")
          + (f", driver {env.get('gpu_driver')}" if env.get("gpu_driver") else "")
          + f"; torch {env.get('torch')}, CUDA {env.get('torch_cuda')}, cuDNN {env.get('cudnn')}; Python {env.get('python')}; "
          f"{env.get('cpu_count')} CPU cores ({env.get('cpu')})"
          + (f"; commit {env.get('git_commit')}{' + local changes' if env.get('git_dirty') else ''}" if env.get("git_commit") else "")
          + f". fp32 = `train.amp=false` (TF32 for convolutions: {env.get('tf32_cudnn')}, for matmuls: "
          f"{env.get('tf32_matmul')}); bf16 = `train.amp=true`, `torch.autocast('cuda', dtype=torch.bfloat16)` "
          "around the forward passes (`Method.autocast`).\n"]
    md.append(_table(["part", "status", "seconds", "note"],
                     [[r["name"], f"**{r['status']}**" if r["status"] != "ok" else "ok", _fmt(r.get("seconds"), ".0f"),
                       (r.get("reason") or "").replace("|", "/")[:200]] for r in results]))
    targets = summary.get("targets") or []
    if targets:
        md.append("\nIssue 18 targets:\n")
        md.append(_table(["target", "speed-up", "memory", "loss rel. diff", "met"],
                         [[t["target"], _fmt(t.get("speedup"), ".2f") + ("×" if t.get("speedup") else ""),
                           _fmt(t.get("memory_ratio"), ".2f"), _fmt(t.get("loss_rel_diff"), ".1e"),
                           "yes" if t["met"] else "**no**"] for t in targets]))
    for name, render in (("cuda_tests", _md_cuda_tests), ("methods", _md_methods), ("gcl_iteration", _md_gcl),
                         ("cluster_contrast_step", _md_cc), ("clustering", _md_clustering),
                         ("evaluation", _md_evaluation), ("real_market", _md_real)):
        part = _part(results, name)
        if part and part.get("data"):
            try:
                text = render(part["data"])
            except Exception as exc:  # a summary must never fail because of one table
                text = f"(could not render {name}: {exc})\n"
            if text:
                md.append(f"\n### {part['title']}\n\n{text}")
    return "\n".join(md)


def _md_cuda_tests(d: dict) -> str:
    text = "Selected: " + ", ".join(f"`{t}`" for t in d.get("selected", [])) + "\n"
    if "counts" in d:
        text += "\n" + ", ".join(f"{v} {k}" for k, v in d["counts"].items()) + "\n"
    return text


def _md_methods(d: dict) -> str:
    rows = []
    for name, m in d.get("methods", {}).items():
        if "error" in m:
            rows.append([name, "**error**", m["error"][:120].replace("|", "/"), "", "", "", ""])
            continue
        p = m.get("precisions", {})
        f32, b16 = p.get("fp32", {}), p.get("bf16", p.get("fp32_repeat", {}))
        first = ", ".join(f"{k} {_fmt(v, '.4g')}" for k, v in (f32.get("losses") or [{}])[0].items())
        rows.append([name, _fmt(f32.get("median_step_s"), ".3f"), _fmt(b16.get("median_step_s"), ".3f"),
                     first[:120], _fmt(m.get("first_step_max_rel_diff"), ".1e"),
                     "none" if not m.get("nonfinite") else "**" + ", ".join(m["nonfinite"])[:80] + "**",
                     "yes" if m.get("within_tolerance") else ("–" if m.get("within_tolerance") is None else "**no**")])
    head = (f"SynthReID {d.get('synth', {}).get('train', '?')} training images at {d.get('size', '?')}, "
            f"{d.get('steps', '?')} steps per precision from the same weights and batches; tolerance "
            f"|a−b| ≤ {d.get('atol')} + {d.get('rtol')}·max(|a|,|b|) on the first step's losses.\n\n")
    other = (d.get("compare") or "bf16 vs fp32").split()[0]
    return head + _table(["method", "fp32 s/step", f"{other} s/step", "first-step losses (fp32)", f"max rel. diff {other}/fp32",
                          "NaN/inf", "within tol."], rows)


def _md_gcl(d: dict) -> str:
    rows = [[r["stage"], r["precision"], r["pattern"], _fmt(r.get("median_s"), ".3f"), _fmt(r.get("images_per_s"), ".1f"),
             _fmt(r.get("speedup_vs_official_fp32"), ".2f") + "×", _fmt(r.get("peak_mib"), ",.0f"),
             _fmt(r.get("memory_ratio_vs_official_fp32"), ".2f"), _fmt(r.get("loss_rel_diff_vs_official_fp32"), ".1e"),
             _fmt(r.get("loss_rel_diff_vs_official_same_precision"), ".1e")]
            for r in d.get("rows", [])]
    timing = (f"median of {d.get('timed_steps')} steps after {d.get('warmup_steps')} warm-up" if d.get("timed_steps")
              else "time of the first step")
    head = (f"{d.get('setting', '')}, batch {d.get('batch')}, {timing}; peak = max_memory_allocated above the memory before the first step "
            "(models, a copy of the initial models and the memory bank excluded; optimiser state and gradients included). "
            "official = D(real) and R1 per fake, fakes one at a time, Eid gradients in stage 2, NCHW; ours = the "
            "defaults; ours_ckpt = ours + `gcl.checkpoint_decoder`.\n\n")
    return head + _table(["stage", "precision", "pattern", "s/it", "images/s", "speed-up vs official fp32", "peak MiB",
                          "memory vs official fp32", "loss rel. diff vs official fp32", "vs official same precision"], rows)


def _md_cc(d: dict) -> str:
    rows = [[r["arch"], r["precision"], r["batch"], _fmt(r.get("train_images_per_s"), ",.0f"), _fmt(r.get("peak_mib"), ",.0f"),
             _fmt(r.get("infer_images_per_s"), ",.0f"), _fmt(r.get("first_loss"), ".4g")] for r in d.get("rows", [])]
    return (f"{d.get('setting', '')}: `ClusterContrast.step` (forward, ClusterNCE over {d.get('clusters')} centroids, "
            "backward, Adam, memory update) on a fixed random batch; inference = `encoder.embed` under no_grad. "
            "No data loading.\n\n" + _table(["backbone", "precision", "batch", "train images/s", "train peak MiB",
                                              "inference images/s", "loss"], rows))


def _md_clustering(d: dict) -> str:
    rows = []
    for r in d.get("rows", []):
        st = r.get("stage_seconds", {})
        rows.append([f"{r['n']:,}", r["dim"], _fmt(r.get("knn_s"), ".2f"), _fmt(r.get("pseudo_labels_s"), ".2f"),
                     " / ".join(_fmt(st.get(k), ".2f") for k in ("knn", "encode", "jaccard", "dbscan")),
                     _fmt(r.get("gpu_peak_mib"), ",.0f"), _fmt(r.get("num_clusters"), "d"), _fmt(r.get("nmi"), ".3f")])
    return (f"`pseudo_labels(x, rho, k1=30, k2=6, min_samples=4, device={d.get('device')})` on identity-structured "
            f"features (≈17 images per identity); numba kernels compiled before timing ({_fmt(d.get('warmup_s'), '.1f')} s).\n\n"
            + _table(["N", "dim", "bare kNN s", "Jaccard + DBSCAN s", "stages: kNN / encode / overlaps / DBSCAN s",
                      "GPU peak MiB", "clusters", "NMI"], rows))


def _md_evaluation(d: dict) -> str:
    s = d.get("seconds", {})
    return (f"{d.get('num_q'):,} queries × {d.get('num_g'):,} gallery, {d.get('dim')}-d, on {d.get('device')}: "
            f"distances {_fmt(s.get('distances_best'), '.3f')} s, metrics {_fmt(s.get('metrics_best'), '.3f')} s, total "
            f"{_fmt(s.get('total_best'), '.3f')} s (best of {d.get('repeats')}); the same on the CPU: "
            f"{_fmt(s.get('cpu_total'), '.3f')} s; mAP {_fmt(d.get('mAP'), '.4f')}, |GPU − CPU| over mAP/mINP/CMC "
            f"{_fmt(d.get('max_abs_diff_vs_cpu'), '.1e')}.\n")


def _md_real(d: dict) -> str:
    if "wall_s" not in d:
        return ""
    ev = d.get("eval", {})
    rows = [[e.get("epoch"), _fmt(e.get("prepare_s"), ".1f"), _fmt(e.get("train_s"), ".1f"), e.get("iterations", ""),
             _fmt(e.get("images_per_s"), ",.0f")] for e in d.get("epochs", [])]
    text = (f"`gclreid train --config configs/cluster_contrast_market1501_mbv2_256.yaml` "
            f"{' '.join(d.get('overrides', []))}: wall {_fmt(d.get('wall_s'), '.0f')} s (of which final evaluation "
            f"and checkpoint {_fmt(d.get('after_training_s'), '.0f')} s); final mAP "
            f"{_fmt(ev.get('mAP'), '.4f')}, rank-1 {_fmt(ev.get('rank1'), '.4f')} after {d.get('epochs_done', '?')} "
            "epoch(s) — a timing run, not a result.\n\n")
    if rows:
        text += _table(["epoch", "features + clustering s", "training s", "iterations", "training images/s"], rows)
    return text


# ----------------------------------------------------------------------------------------------------
# Parts that run in a child process (they import torch and gclreid)
# ----------------------------------------------------------------------------------------------------

class Ctx:
    def __init__(self, args):
        import torch
        self.torch = torch
        self.args = args
        self.quick = args.quick
        self.device = torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        self.work = Path(args.workdir)
        self.data: Dict[str, Any] = {"device": self.device.type}
        self.deadline = time.time() + (args.part_timeout or 3600)

    def save(self, status: Optional[str] = None, reason: str = "") -> None:
        payload = dict(self.data)
        if status:
            payload.update(_status=status, _reason=reason)
        tmp = Path(self.args.part_out + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1, default=_jsonable))
        os.replace(tmp, self.args.part_out)

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def reset_peak(self) -> int:
        self.sync()
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats(self.device)
            return self.torch.cuda.memory_allocated(self.device)
        return 0

    def peak_mib(self, base: int) -> Optional[float]:
        self.sync()
        if self.cuda:
            return (self.torch.cuda.max_memory_allocated(self.device) - base) / 2**20
        return None

    def free(self) -> None:
        import gc
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()

    def seed(self, seed: int) -> None:
        from gclreid.runtime import seed_everything
        seed_everything(seed)
        if self.cuda:
            self.torch.cuda.manual_seed_all(seed)

    def left(self) -> float:
        return self.deadline - time.time()


def _jsonable(value):
    try:
        import numpy as np
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:
        pass
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _floats(losses: dict) -> Dict[str, float]:
    return {k: float(v) for k, v in losses.items()}


def loss_diff(a: Dict[str, float], b: Dict[str, float], rtol: float, atol: float):
    """Max relative difference over the shared keys, and whether every key is within atol + rtol·max."""
    worst, ok = 0.0, True
    for k in set(a) & set(b):
        x, y = a[k], b[k]
        if not (math.isfinite(x) and math.isfinite(y)):
            return float("nan"), False
        scale = max(abs(x), abs(y))
        if scale > 0:
            worst = max(worst, abs(x - y) / scale)
        ok = ok and abs(x - y) <= atol + rtol * scale
    return worst, ok


def _median(values: List[float]) -> Optional[float]:
    values = sorted(values)
    return values[len(values) // 2] if values else None


# -- part 2: CUDA-only tests ------------------------------------------------------------------------

def part_cuda_tests(ctx: Ctx) -> None:
    tests = find_cuda_tests(REPO / "tests")
    ctx.data["selected"] = tests
    if not tests:
        raise Skip("no CUDA-only tests found in tests/")
    xml = ctx.work / "cuda_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", f"--junitxml={xml}", *tests]
    print("$", " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, cwd=str(REPO), timeout=max(10, ctx.left() - 5))
    counts = {}
    if xml.is_file():
        import xml.etree.ElementTree as ET
        root = ET.parse(xml).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        if suite is not None:
            total = int(suite.get("tests", 0))
            failed, errors, skipped = (int(suite.get(k, 0)) for k in ("failures", "errors", "skipped"))
            counts = {"passed": total - failed - errors - skipped, "failed": failed, "errors": errors, "skipped": skipped}
            ctx.data["skipped_reasons"] = [s.get("message", "") for s in root.iter("skipped")]
    ctx.data["counts"], ctx.data["pytest_rc"] = counts, rc
    if rc != 0:
        ctx.save("failed", f"pytest exit code {rc}: {counts}")
    elif counts.get("skipped"):
        ctx.save("failed", f"{counts['skipped']} CUDA test(s) skipped on a CUDA machine: {ctx.data['skipped_reasons']}")
    else:
        ctx.save("ok", f"{counts.get('passed', '?')} passed")


# -- part 3: every method, fp32 and bf16 ---------------------------------------------------------------

TINY_GENERATOR = ["generator.dim=4", "generator.n_res=1", "generator.n_downsample=1", "generator.dec_n_upsample=1",
                  "generator.dec_n_res=2", "generator.id_chunks=2", "generator.dis_dim=8", "generator.dis_n_res=1",
                  "generator.dis_num_scales=2", "generator.mlp_dim=32"]


def make_synth(ctx: Ctx) -> Path:
    root = ctx.work / "synthreid"
    if (root / "synthreid.json").is_file():
        return root
    if ctx.quick:
        size = ["--train-ids", "8", "--test-ids", "4", "--cams", "2", "--images-per-id", "6", "--distractors", "0",
                "--height", "64", "--width", "32", "--workers", "1"]
    else:
        size = ["--train-ids", "32", "--test-ids", "12", "--cams", "3", "--images-per-id", "8", "--distractors", "20",
                "--height", "128", "--width", "64", "--workers", str(min(8, os.cpu_count() or 1))]
    cmd = [sys.executable, "-m", "gclreid", "synth", "--out", str(root), "--preset", "demo", "--no-views",
           "--no-progress", "--json", *size]
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO))
    print(proc.stdout[-2000:], proc.stderr[-2000:], flush=True)
    if proc.returncode != 0:
        raise RuntimeError(f"gclreid synth failed: {_last_error(proc.stderr.splitlines()) or proc.returncode}")
    ctx.data["synth"] = json.loads(proc.stdout)
    return root


def fake_teacher(path: Path, cfg, classes: int) -> Path:
    """A `supervised` checkpoint with a random teacher (DG-Net needs one; its quality does not matter here)."""
    import torch
    from gclreid.checkpoint import save_checkpoint
    from gclreid.config import to_dict
    from gclreid.models import build_identity_encoder
    model = dict(to_dict(cfg.model), pretrained=False)
    encoder = build_identity_encoder(model)
    with torch.no_grad():
        dim = encoder.eval()(torch.zeros(2, 3, cfg.data.height, cfg.data.width)).embedding.shape[1]
    classifier = torch.nn.Linear(dim, classes, bias=False)
    config = {"train": {"method": "supervised"}, "model": model, "data": {"name": cfg.data.name, "root": cfg.data.root}}
    save_checkpoint(path, models={"identity_encoder": encoder, "classifier": classifier}, config=config)
    return path


METHOD_RUNS = [("tmp", "tmp_synthreid.yaml"), ("cluster_contrast", "cluster_contrast_synthreid.yaml"),
               ("supervised", "supervised_synthreid.yaml"), ("gcl_stage2", "gcl_stage2_synthreid.yaml"),
               ("gcl_stage3", "gcl_synthreid.yaml"), ("dgnet", "dgnet_synthreid.yaml")]


def part_methods(ctx: Ctx) -> None:
    root = make_synth(ctx)
    # On the CPU bf16 cannot run (Method.autocast is CUDA-only): fp32 twice instead, from the same snapshot,
    # which checks the comparison itself (a difference there would mean state leaks between the runs).
    precisions = ["fp32", "bf16"] if ctx.cuda else ["fp32", "fp32_repeat"]
    steps = 2 if ctx.quick else 4
    ctx.data.update(methods={}, steps=steps, precisions=precisions, rtol=ctx.args.rtol, atol=ctx.args.atol,
                    size="64×32" if ctx.quick else "128×64", compare=f"{precisions[1]} vs fp32")
    if not ctx.cuda:
        ctx.data["bf16_skipped"] = "bf16 autocast is CUDA-only (Method.autocast does nothing on the CPU)"
    ctx.save()
    for name, config in METHOD_RUNS:
        print(f"== {name} ({config})", flush=True)
        start = time.time()
        try:
            result = run_method(ctx, name, config, root, precisions, steps)
        except Exception as exc:
            traceback.print_exc()
            result = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:400]}
        result["seconds"] = round(time.time() - start, 1)
        print(json.dumps(result, default=_jsonable)[:2000], flush=True)
        ctx.data["methods"][name] = result
        ctx.free()
        ctx.save()
    problems = []
    for name, r in ctx.data["methods"].items():
        if "error" in r:
            problems.append(f"{name}: {r['error'][:150]}")
        elif r.get("nonfinite"):
            problems.append(f"{name}: non-finite losses {r['nonfinite'][:3]}")
        elif r.get("within_tolerance") is False:
            problems.append(f"{name}: {precisions[1]}/fp32 first-step losses beyond the tolerance "
                            f"(max rel. diff {r['first_step_max_rel_diff']:.2e})")
    note = "" if ctx.cuda else "bf16 skipped: autocast is CUDA-only"
    ctx.save("failed" if problems else "ok", "; ".join(problems) or note)


def run_method(ctx: Ctx, name: str, config: str, root: Path, precisions: List[str], steps: int) -> dict:
    import copy
    import torch
    from gclreid.config import PACKAGE_CONFIGS, load_config
    from gclreid.data import dataset_from_config
    from gclreid.engine import build_method

    out = ctx.work / "methods" / name
    overrides = [f"data.root={root}", f"run.out={out}", f"run.device={ctx.device.type}", "train.log_every=1000",
                 "train.eval_every=0"]
    if ctx.quick:
        overrides += ["data.height=64", "data.width=32", "data.workers=0", "model.arch=resnet18", "model.embed_dim=32",
                      "eval.batch_size=64", "cluster.k1=6", "cluster.k2=2", *TINY_GENERATOR]
        overrides += ["train.batch_size=4" if name.startswith("gcl") or name == "dgnet" else "train.batch_size=8"]
        overrides += ["train.num_instances=2"] if name in ("tmp", "cluster_contrast", "supervised") else []
        overrides += ["gcl.num_negatives=16"] if name.startswith("gcl") else []
    else:
        overrides += [f"data.workers={min(4, os.cpu_count() or 1)}", "train.batch_size=16" if name.startswith("gcl") or name == "dgnet" else "train.batch_size=32"]
    if name == "dgnet":
        overrides += ["dgnet.num_classes=0"] + (["dgnet.bottleneck=32"] if ctx.quick else [])
    cfg = load_config(PACKAGE_CONFIGS / config, overrides)
    ctx.seed(cfg.run.seed)
    dataset = dataset_from_config(cfg.data, for_training=True)
    if name == "dgnet":
        classes = len({r.pid for r in dataset.train})
        teacher = fake_teacher(ctx.work / "methods" / "teacher.pt", cfg, classes)
        cfg = load_config(PACKAGE_CONFIGS / config, overrides + [f"dgnet.teacher={teacher}"])
    result: Dict[str, Any] = {"config": config, "overrides": overrides[4:]}
    method = build_method(cfg, dataset, ctx.device)
    ctx.seed(cfg.run.seed)
    for m in method.models.values():
        m.eval()
    t0 = time.time()
    try:
        stats = method.start_epoch(0)
    except Exception as exc:
        if "clusters" not in str(exc):
            raise
        # A from-scratch encoder on a tiny set may find < 2 clusters: instance labels for this epoch.
        print(f"start_epoch: {exc}; retrying with cluster.instance_epochs=1", flush=True)
        cfg.cluster.instance_epochs = 1
        stats = method.start_epoch(0)
        result["note"] = "clustering found < 2 clusters: instance labels (cluster.instance_epochs=1)"
    ctx.sync()
    result["start_epoch_s"] = round(time.time() - t0, 2)
    result["start_epoch"] = {k: v for k, v in (stats or {}).items() if isinstance(v, (int, float, str))}
    try:
        loader = method.loader(0)
    except Exception as exc:
        # P×K batches need P clusters; a from-scratch encoder on a small set may find fewer: smaller batches.
        found = re.search(r"(\d+) identities with a label >= 0, fewer than", str(exc))
        if not found or int(found.group(1)) < 2:
            raise
        k = max(1, int(cfg.train.num_instances))
        cfg.train.batch_size = int(found.group(1)) * k
        result["note"] = (result.get("note", "") + f" {exc}; batch_size {cfg.train.batch_size} instead").strip()
        print(f"loader: {exc}; retrying with train.batch_size={cfg.train.batch_size}", flush=True)
        loader = method.loader(0)
    batches = []
    while len(batches) < steps:
        got = False
        for batch in loader:
            batches.append(batch)
            got = True
            if len(batches) == steps:
                break
        if not got:
            raise RuntimeError("the loader yields no batch")
    method.train_mode()
    initial = copy.deepcopy(method) if len(precisions) > 1 else method
    result["precisions"], result["nonfinite"] = {}, []
    for i, precision in enumerate(precisions):
        m = copy.deepcopy(initial) if i < len(precisions) - 1 else initial
        m.cfg.train.amp = precision == "bf16"
        cast = m.autocast()
        result["precisions"][precision] = entry = {
            "autocast": f"{type(cast).__name__}" + (f"({getattr(cast, 'fast_dtype', '')})" if isinstance(cast, torch.autocast) else "")}
        if precision == "bf16" and not (isinstance(cast, torch.autocast) and cast.fast_dtype == torch.bfloat16):
            raise RuntimeError(f"train.amp=true did not give a bf16 autocast on {ctx.device}: {entry['autocast']}")
        ctx.seed(cfg.run.seed + 1)
        losses, times = [], []
        for batch in (batches[:1] if precision == "fp32_repeat" else batches):  # the repeat: the compared step only
            start = time.perf_counter()
            values = _floats(m.step(batch))
            ctx.sync()
            times.append(time.perf_counter() - start)
            losses.append(values)
            result["nonfinite"] += [f"{precision} step {len(losses)} {k}" for k, v in values.items() if not math.isfinite(v)]
        entry.update(losses=losses, step_s=[round(t, 4) for t in times], median_step_s=_median(times[1:] or times))
        del m
        ctx.free()
    if len(precisions) > 1:
        a, b = (result["precisions"][p]["losses"] for p in precisions[:2])
        result["first_step_max_rel_diff"], result["within_tolerance"] = loss_diff(a[0], b[0], ctx.args.rtol, ctx.args.atol)
        result["all_steps_max_rel_diff"] = max(loss_diff(x, y, ctx.args.rtol, ctx.args.atol)[0] for x, y in zip(a, b))
    else:
        result["first_step_max_rel_diff"], result["within_tolerance"] = None, None
    return result


# -- part 4a: GCL iteration at the paper's settings -------------------------------------------------

GCL_PATTERNS = ("official", "ours", "ours_ckpt")


def build_gcl(ctx: Ctx, stage: int, batch: int, out: str):
    """The GCL method of configs/gcl_market1501.yaml (paper sizes) on a stand-in dataset of Market-1501's
    training-set size with a filled memory bank (bench_gcl_iteration.standin_method), and one batch."""
    from bench_gcl_iteration import standin_method
    from gclreid.config import PACKAGE_CONFIGS, load_config
    overrides = [f"gcl.stage={stage}", "model.pretrained=false", f"train.batch_size={batch}", "train.amp=false",
                 f"run.out={out}", "data.workers=0"]
    rows, clusters = 12936, 700
    if ctx.quick:
        overrides += ["model.arch=resnet18", "data.height=64", "data.width=32", "model.embed_dim=32",
                      "gcl.num_negatives=64", *TINY_GENERATOR]
        rows, clusters = 256, 16
    cfg = load_config(PACKAGE_CONFIGS / "gcl_market1501.yaml", overrides)
    method, inputs = standin_method(cfg, ctx.device, stage, batch, rows, clusters)
    return method, inputs, cfg


def part_gcl_iteration(ctx: Ctx) -> None:
    import copy
    from bench_gcl_iteration import set_pattern
    batch = 2 if ctx.quick else 16
    warmup, timed = (1, 0) if ctx.quick else (2, 6)  # quick: the first step is the timed one
    precisions = ["fp32", "bf16"] if ctx.cuda else ["fp32"]
    ctx.data.update(batch=batch, warmup_steps=warmup, timed_steps=timed, rows=[],
                    setting="ResNet-18 64×32, tiny generator (quick)" if ctx.quick else
                    "ResNet-50 (random init, last stride 1) 256×128, official generator and 3-scale D, memory 12,936 rows, K 8,192")
    if not ctx.cuda:
        ctx.data["bf16_skipped"] = "bf16 autocast is CUDA-only"
    ctx.save()
    for stage in (2, 3):
        with tempfile.TemporaryDirectory() as out:
            initial, inputs, _ = build_gcl(ctx, stage, batch, out)
            for precision in precisions:
                for pattern in GCL_PATTERNS:
                    m = copy.deepcopy(initial)
                    set_pattern(m, pattern)
                    m.cfg.train.amp = precision == "bf16"
                    base = ctx.reset_peak()
                    ctx.seed(2)  # the negatives drawn by the view-contrast loss
                    start = time.perf_counter()
                    first = _floats(m.step(inputs))
                    ctx.sync()
                    first_s = time.perf_counter() - start
                    for _ in range(warmup - 1):
                        m.step(inputs)
                    times = []
                    for _ in range(timed):
                        start = time.perf_counter()
                        m.step(inputs)
                        ctx.sync()
                        times.append(time.perf_counter() - start)
                    peak = ctx.peak_mib(base)
                    med = _median(times or [first_s])
                    row = {"stage": stage, "precision": precision, "pattern": pattern, "median_s": med,
                           "times": [round(t, 4) for t in times], "images_per_s": batch / med, "peak_mib": peak,
                           "losses": first, "nonfinite": [k for k, v in first.items() if not math.isfinite(v)]}
                    ctx.data["rows"].append(row)
                    print(f"stage {stage} {precision} {pattern}: {med:.4f} s/it, {batch / med:.1f} images/s, "
                          f"peak {_fmt(peak, ',.0f')} MiB, losses {first}", flush=True)
                    del m
                    ctx.free()
                    _gcl_ratios(ctx)
                    ctx.save()
            del initial
            ctx.free()
    bad = [f"stage {r['stage']} {r['precision']} {r['pattern']}: {r['nonfinite']}" for r in ctx.data["rows"] if r["nonfinite"]]
    ctx.save("failed" if bad else "ok", "non-finite losses: " + "; ".join(bad) if bad else
             ("" if ctx.cuda else "bf16 skipped: autocast is CUDA-only"))


def _gcl_ratios(ctx: Ctx) -> None:
    rows = ctx.data["rows"]
    for r in rows:
        ref = next((o for o in rows if o["stage"] == r["stage"] and o["precision"] == "fp32" and o["pattern"] == "official"), None)
        same = next((o for o in rows if o["stage"] == r["stage"] and o["precision"] == r["precision"]
                     and o["pattern"] == "official"), None)
        if ref:
            r["speedup_vs_official_fp32"] = ref["median_s"] / r["median_s"]
            r["memory_ratio_vs_official_fp32"] = (r["peak_mib"] / ref["peak_mib"]) if r["peak_mib"] and ref["peak_mib"] else None
            r["loss_rel_diff_vs_official_fp32"] = loss_diff(ref["losses"], r["losses"], ctx.args.rtol, ctx.args.atol)[0]
        if same:
            r["loss_rel_diff_vs_official_same_precision"] = loss_diff(same["losses"], r["losses"], ctx.args.rtol, ctx.args.atol)[0]


# -- part 4b: cluster contrast train step at batch 256 -------------------------------------------------

def part_cluster_contrast_step(ctx: Ctx) -> None:
    import torch
    from types import SimpleNamespace
    from gclreid.config import PACKAGE_CONFIGS, load_config
    from gclreid.engine import build_method
    from gclreid.losses import ClusterMemory
    batch = 8 if ctx.quick else 256
    h, w = (64, 32) if ctx.quick else (256, 128)
    warmup, timed = (1, 1) if ctx.quick else (2, 5)
    rows, clusters = (256, 16) if ctx.quick else (12936, 700)
    precisions = ["fp32", "bf16"] if ctx.cuda else ["fp32"]
    ctx.data.update(batch=batch, clusters=clusters, rows=[], setting=f"{h}×{w}, last stride 1, random init, batch {batch}")
    ctx.save()
    configs = {"mobilenet_v2": "cluster_contrast_market1501_mbv2_256.yaml",
               "resnet18" if ctx.quick else "resnet50": "cluster_contrast_market1501.yaml"}
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, h, w, generator=g)
    labels = torch.randint(0, clusters, (batch,), generator=g)
    for arch, config in configs.items():
        cfg = load_config(PACKAGE_CONFIGS / config, [
            f"model.arch={arch}", "model.pretrained=false", f"train.batch_size={batch}", f"data.height={h}",
            f"data.width={w}", "data.workers=0", f"run.out={ctx.work / 'cc'}"])
        records = [SimpleNamespace(pid=i % 751, camid=i % 6, path="", relpath="", split="train") for i in range(rows)]
        dataset = SimpleNamespace(name="standin", root="", train=records, query=[], gallery=[])
        torch.manual_seed(0)
        method = build_method(cfg, dataset, ctx.device)
        with torch.no_grad():
            dim = method.encoder.eval()(images[:2].to(ctx.device)).embedding.shape[1]
        method.train_mode()
        method.memory = ClusterMemory(dim, clusters, cfg.train.temperature, cfg.train.memory_momentum).to(ctx.device)
        method.memory.initialise(torch.randn(rows, dim, generator=g).to(ctx.device),
                                 torch.randint(0, clusters, (rows,), generator=g).to(ctx.device))
        step_batch = {"image": images.to(ctx.device), "label": labels.to(ctx.device)}  # no copy in the timed steps
        for precision in precisions:
            method.cfg.train.amp = precision == "bf16"
            ctx.seed(0)
            first = float(method.step(step_batch)["loss"])
            for _ in range(warmup - 1):
                method.step(step_batch)
            base = ctx.reset_peak()
            times = []
            for _ in range(timed):
                start = time.perf_counter()
                method.step(step_batch)
                ctx.sync()
                times.append(time.perf_counter() - start)
            peak = ctx.peak_mib(base)
            encoder = method.encoder.eval()
            x = images.to(ctx.device)
            infer = []
            with torch.no_grad(), method.autocast():
                encoder.embed(x)
                for _ in range(timed):
                    ctx.sync()
                    start = time.perf_counter()
                    encoder.embed(x)
                    ctx.sync()
                    infer.append(time.perf_counter() - start)
            method.train_mode()
            med, imed = _median(times), _median(infer)
            row = {"arch": arch, "precision": precision, "batch": batch, "median_s": med, "train_images_per_s": batch / med,
                   "peak_mib": peak, "infer_median_s": imed, "infer_images_per_s": batch / imed, "first_loss": first,
                   "embed_dim": dim}
            print(json.dumps(row), flush=True)
            ctx.data["rows"].append(row)
            ctx.save()
        del method
        ctx.free()
    bad = [f"{r['arch']} {r['precision']}" for r in ctx.data["rows"] if not math.isfinite(r["first_loss"])]
    ctx.save("failed" if bad else "ok", f"non-finite loss: {bad}" if bad else "")


# -- part 4c: Jaccard + DBSCAN at MSMT17 size --------------------------------------------------------

def part_clustering(ctx: Ctx) -> None:
    import torch
    from bench_clustering import make_features
    from gclreid.clustering import knn, pseudo_labels
    sizes = [(800, 0.002)] if ctx.quick else [(12936, 0.002), (32621, 0.0012)]
    dim = 32 if ctx.quick else 2048
    ctx.data.update(rows=[], dim=dim, device=ctx.device.type)
    warm, _ = make_features(200 if ctx.quick else 600, dim=dim, seed=1)
    start = time.time()
    pseudo_labels(torch.from_numpy(warm).to(ctx.device), eps=0.6, k1=30, k2=6, device=ctx.device)
    knn(torch.from_numpy(warm).to(ctx.device), 30, device=ctx.device)
    ctx.sync()
    ctx.data["warmup_s"] = time.time() - start
    ctx.save()
    for n, rho in sizes:
        x, ids = make_features(n, dim=dim)
        xt = torch.from_numpy(x).to(ctx.device)
        ctx.sync()
        start = time.perf_counter()
        knn(xt, 30, device=ctx.device)
        ctx.sync()
        knn_s = time.perf_counter() - start
        base = ctx.reset_peak()
        start = time.perf_counter()
        result = pseudo_labels(xt, rho=rho, k1=30, k2=6, min_samples=4, true_ids=ids, device=ctx.device)
        ctx.sync()
        total = time.perf_counter() - start
        d = result.as_dict()
        row = {"n": n, "dim": dim, "rho": rho, "knn_s": knn_s, "pseudo_labels_s": total, "stage_seconds": result.timings,
               "gpu_peak_mib": ctx.peak_mib(base), "eps": d.get("eps"), "num_clusters": d.get("num_clusters"),
               "num_outliers": d.get("num_outliers"), "nmi": d.get("cluster_nmi")}
        print(json.dumps(row, default=_jsonable), flush=True)
        ctx.data["rows"].append(row)
        ctx.save()
        del xt
        ctx.free()
    ctx.save("ok")


# -- part 4d: evaluation at Market size -----------------------------------------------------------------

def part_evaluation(ctx: Ctx) -> None:
    import numpy as np
    from bench_evaluation import make_features
    from gclreid.evaluation import evaluate_ranking, pairwise_distance
    scale = 10 if ctx.quick else 1
    # 512-d as bench/bench_evaluation.py (its features are tuned for that size: mAP ≈ 0.7)
    sizes = dict(num_q=3368 // scale, num_g=15913 // scale, num_ids=750 // scale, num_cams=6,
                 num_distractors=2798 // scale, dim=64 if ctx.quick else 512)
    repeats = 3
    qf, gf, qp, gp, qc, gc = make_features(**sizes)
    ctx.data.update(sizes, device=ctx.device.type, repeats=repeats)
    qd, gd = qf.to(ctx.device), gf.to(ctx.device)
    dist_t, metric_t, total_t = [], [], []
    for _ in range(repeats):
        ctx.sync()
        t0 = time.perf_counter()
        dist = pairwise_distance(qd, gd)
        ctx.sync()
        t1 = time.perf_counter()
        result = evaluate_ranking(dist, qp, gp, qc, gc, max_rank=50)
        t2 = time.perf_counter()
        dist_t.append(t1 - t0)
        metric_t.append(t2 - t1)
        total_t.append(t2 - t0)
        del dist
    t0 = time.perf_counter()
    cpu = evaluate_ranking(pairwise_distance(qf, gf), qp, gp, qc, gc, max_rank=50)
    cpu_s = time.perf_counter() - t0
    diff = max(abs(result["mAP"] - cpu["mAP"]), abs(result["mINP"] - cpu["mINP"]),
               float(np.abs(np.asarray(result["cmc"]) - np.asarray(cpu["cmc"])).max()))
    ctx.data.update(seconds={"distances_best": min(dist_t), "metrics_best": min(metric_t), "total_best": min(total_t),
                             "total_all": total_t, "cpu_total": cpu_s},
                    mAP=result["mAP"], rank1=float(result["cmc"][0]), mINP=result["mINP"], max_abs_diff_vs_cpu=diff)
    print(json.dumps(ctx.data, default=_jsonable), flush=True)
    ctx.save("ok" if diff <= 1e-4 else "failed", "" if diff <= 1e-4 else f"GPU and CPU metrics differ by {diff:.2e}")


# -- part 5: real Market-1501 -------------------------------------------------------------------------------

def find_market() -> Optional[Path]:
    env = os.environ.get("GCLREID_MARKET1501")
    candidates = [Path(env)] if env else [REPO.parent / "shared" / "data" / "market1501", REPO / "data" / "market1501"]
    for root in candidates:
        release = root / "Market-1501-v15.09.15" if (root / "Market-1501-v15.09.15").is_dir() else root
        if (release / "bounding_box_train").is_dir() and (release / "query").is_dir():
            return root
    return None


def find_mbv2_weights() -> Optional[Path]:
    env = os.environ.get("GCLREID_MBV2_WEIGHTS")
    if env:
        return Path(env) if Path(env).is_file() else None
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    for path in (CARRY / "weights" / MBV2_FILE, torch_home / "hub" / "checkpoints" / MBV2_FILE):
        if path.is_file():
            return path
    return None


def market_subset(release: Path, dest: Path, ids: int = 20) -> Path:
    """A Market-layout folder of symbolic links to the first `ids` training and test identities (the
    images stay where they are: nothing is copied)."""
    dest.mkdir(parents=True, exist_ok=True)
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        (dest / folder).mkdir(exist_ok=True)
        files = sorted(p for p in (release / folder).glob("*.jpg") if not p.name.startswith(("-1", "0000")))
        keep = sorted({p.name.split("_")[0] for p in files})[:ids]
        if folder == "bounding_box_test":
            keep = sorted({p.name.split("_")[0] for p in sorted((release / "query").glob("*.jpg"))})[:ids]
        for p in files:
            if p.name.split("_")[0] in keep and not (dest / folder / p.name).exists():
                (dest / folder / p.name).symlink_to(p)
    return dest


def part_real_market(ctx: Ctx) -> None:
    root = find_market()
    if root is None:
        where = os.environ.get("GCLREID_MARKET1501") or "../shared/data/market1501 or data/market1501"
        raise Skip(f"Market-1501 not found at {where} (set GCLREID_MARKET1501)")
    weights = find_mbv2_weights()
    if weights is None:
        raise Skip(f"ImageNet MobileNetV2 ({MBV2_FILE}) not found: set GCLREID_MBV2_WEIGHTS, or run "
                   "`python bench/gpu_check.py --prepare-carry` here and carry runs/gpu_check_carry")
    release = root / "Market-1501-v15.09.15" if (root / "Market-1501-v15.09.15").is_dir() else root
    out = ctx.work / "real_market"
    if ctx.quick:
        root = market_subset(release, ctx.work / "market_subset")
        overrides = ["data.height=128", "data.width=64", "train.batch_size=32", "train.num_instances=4", "train.epochs=1",
                     "train.iters_per_epoch=2", "data.workers=0", "eval.batch_size=128"]
    else:
        overrides = ["train.batch_size=256", "train.num_instances=16", "train.epochs=2", "train.iters_per_epoch=0",
                     f"data.workers={min(12, max(2, (os.cpu_count() or 4) - 2))}", "eval.batch_size=512"]
    overrides += [f"data.root={root}", f"model.weights={weights}", f"run.out={out}", "train.eval_every=0",
                  "train.log_every=10", f"run.device={ctx.device.type}"]
    batch = 32 if ctx.quick else 256
    shown = [o for o in overrides if not o.startswith(("run.", "data.root=", "model.weights="))]
    ctx.data.update(overrides=shown + ["data.root=MARKET", f"model.weights=…/{weights.name}"], market_root=str(root),
                    weights=str(weights), batch=batch)
    cmd = [sys.executable, "-m", "gclreid", "train", "--config", str(REPO / "configs" / "cluster_contrast_market1501_mbv2_256.yaml"),
           "--overwrite", *overrides]
    print("$", " ".join(cmd), flush=True)
    start = time.time()
    events: List[tuple] = []
    proc = subprocess.Popen(cmd, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace")
    stopped = threading.Event()

    def stop():  # leave time to record what was done before the driver's timeout
        stopped.set()
        proc.kill()
    timer = threading.Timer(max(10.0, ctx.left() - 20), stop)
    timer.start()
    tail: List[str] = []
    for line in proc.stdout:
        print(line, end="", flush=True)
        events.append((time.time() - start, line.strip()))
        tail = (tail + [line.strip()])[-20:]
    rc = proc.wait()
    timer.cancel()
    wall = time.time() - start
    epochs = _epoch_timings(events)
    for e in epochs:
        if e.get("iterations") and e.get("train_s"):
            e["images_per_s"] = e["iterations"] * batch / e["train_s"]
    last_iteration = max((t for t, line in events if re.search(r"epoch \d+/\d+\s+it \d+/", line)), default=None)
    ctx.data.update(wall_s=wall, rc=rc, epochs=epochs,
                    after_training_s=(wall - last_iteration) if last_iteration is not None else None)
    results = out / "results.json"
    if results.is_file():
        record = json.loads(results.read_text())
        ctx.data.update(eval=record.get("eval", {}), clusters=record.get("clusters", {}), epochs_done=record.get("epoch"))
    if ctx.args.logs:
        for name in ("results.json", "metrics.jsonl", "config.yaml"):
            if (out / name).is_file():
                shutil.copy(out / name, Path(ctx.args.logs) / f"real_market_{name}")
    if stopped.is_set():
        ctx.save("timeout", f"gclreid train stopped after {time.time() - start:.0f} s (time limit of the part)")
    elif rc != 0:
        ctx.save("failed", f"gclreid train exit code {rc}: {_last_error(tail) or (tail[-1] if tail else '')}")
    else:
        ctx.save("ok", "a timing run: the mAP is not a result")


def _epoch_timings(events: List[tuple]) -> List[dict]:
    """Per epoch, from the training log: time from the epoch's start to its 'clusters' line (features +
    clustering) and from there to its last iteration line."""
    epochs: Dict[int, dict] = {}
    last_end = 0.0
    for t, line in events:
        m = re.search(r"epoch (\d+)/\d+ clusters", line)
        if m:
            e = epochs.setdefault(int(m.group(1)), {"epoch": int(m.group(1))})
            e["prepare_s"], e["_cluster_t"] = t - last_end, t
            continue
        m = re.search(r"epoch (\d+)/\d+\s+it (\d+)/(\d+)", line)
        if m:
            e = epochs.setdefault(int(m.group(1)), {"epoch": int(m.group(1))})
            e["iterations"] = int(m.group(2))
            e["train_s"] = t - e.get("_cluster_t", t)
            last_end = t
    return [{k: v for k, v in e.items() if not k.startswith("_")} for _, e in sorted(epochs.items())]


CHILD_PARTS: Dict[str, Callable[[Ctx], None]] = {
    "cuda_tests": part_cuda_tests, "methods": part_methods, "gcl_iteration": part_gcl_iteration,
    "cluster_contrast_step": part_cluster_contrast_step, "clustering": part_clustering,
    "evaluation": part_evaluation, "real_market": part_real_market}


def child_main(args) -> int:
    import gclreid  # noqa: F401  (first: OMP_WAIT_POLICY before torch loads OpenMP)
    ctx = Ctx(args)
    print(f"part {args.part} on {ctx.device}{' (quick)' if ctx.quick else ''}", flush=True)
    try:
        CHILD_PARTS[args.part](ctx)
    except Skip as exc:
        ctx.save("skipped", str(exc))
        print(f"skipped: {exc}", flush=True)
        return 0
    except Exception as exc:
        traceback.print_exc()
        ctx.save("failed", f"{type(exc).__name__}: {exc}".splitlines()[0][:400])
        return 1
    return 0


# ----------------------------------------------------------------------------------------------------
# --prepare-carry: what the device machine needs from here
# ----------------------------------------------------------------------------------------------------

def prepare_carry() -> int:
    """Fill runs/gpu_check_carry (ignored by git) with what the GPU machine cannot fetch: the omegaconf
    wheel (the machine has no registry; everything else the package needs is on its image) and the
    ImageNet MobileNetV2 file from the weights cache here."""
    wheels, weights = CARRY / "wheels", CARRY / "weights"
    wheels.mkdir(parents=True, exist_ok=True)
    weights.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
           "-d", str(wheels), "omegaconf==2.4.0"]
    rc = subprocess.call(cmd)
    print(f"pip download omegaconf: exit code {rc}")
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    source = Path(os.environ.get("GCLREID_MBV2_WEIGHTS") or torch_home / "hub" / "checkpoints" / MBV2_FILE)
    if source.is_file():
        shutil.copy2(source, weights / MBV2_FILE)
        print(f"copied {source} -> {weights / MBV2_FILE}")
    else:
        print(f"no {source}: `gclreid weights fetch mobilenet_v2` first (the real-data part is skipped without it)")
    size = sum(p.stat().st_size for p in CARRY.rglob("*") if p.is_file())
    print(f"{CARRY}: {size / 2**20:.1f} MiB; carry it with the device tool: carry=[\"runs/gpu_check_carry\"]")
    return rc


def _part_list(text: str) -> List[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in PART_NAMES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown part(s) {', '.join(bad)}; parts: {', '.join(PART_NAMES)}")
    return names


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("outdir", nargs="?", default=os.environ.get("OUT") or str(REPO / "runs" / "gpu_check"),
                   help="output folder (default $OUT, else runs/gpu_check)")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--quick", action="store_true", help="every part at tiny sizes (to test the script, e.g. on the CPU)")
    p.add_argument("--budget", type=float, default=0, help="seconds for the whole check (default 480; 600 with --quick)")
    p.add_argument("--skip", action="append", type=_part_list, default=[], metavar="PART[,PART]",
                   help="parts to leave out (recorded as skipped); parts: " + ", ".join(PART_NAMES))
    p.add_argument("--only", action="append", type=_part_list, default=[], metavar="PART[,PART]",
                   help="run only these parts (env always runs)")
    p.add_argument("--pack", action="store_true", default=None,
                   help="logs as one logs.tar.gz (default: on when OUTDIR is $OUT, the device tool's folder)")
    p.add_argument("--workdir", default="", help="scratch folder (default: a temporary folder, removed at the end)")
    p.add_argument("--keep-work", action="store_true", help="keep the temporary scratch folder")
    p.add_argument("--python", default="", help="interpreter for the parts (default: this one)")
    p.add_argument("--timeout-factor", type=float, default=1.0, help="multiply every part's timeout (slower machines)")
    p.add_argument("--rtol", type=float, default=0.05, help="bf16 vs fp32 loss tolerance, relative")
    p.add_argument("--atol", type=float, default=1e-3, help="bf16 vs fp32 loss tolerance, absolute")
    p.add_argument("--prepare-carry", action="store_true", help="fill runs/gpu_check_carry for the device tool, then exit")
    p.add_argument("--part", default="", help=argparse.SUPPRESS)
    p.add_argument("--part-out", default="", help=argparse.SUPPRESS)
    p.add_argument("--part-timeout", type=float, default=0, help=argparse.SUPPRESS)
    p.add_argument("--logs", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.skip, args.only = [n for group in args.skip for n in group], [n for group in args.only for n in group]
    if args.prepare_carry:
        return prepare_carry()
    if args.part:
        return child_main(args)
    if not args.budget:
        args.budget = 600 if args.quick else 480
    if args.pack is None:
        out_env = os.environ.get("OUT")
        args.pack = bool(out_env) and Path(out_env).resolve() == Path(args.outdir).resolve()
    return Driver(args).run()


if __name__ == "__main__":
    code = main()
    if "--part" in sys.argv:  # a part's process: its result is written; skip the slow interpreter teardown
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
