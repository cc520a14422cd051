"""Run every benchmark in bench/ one after the other (each in its own process) and list the JSON
files they wrote. Usage: python bench/run_all.py [name ...]   (names like `evaluation`, `clustering`)"""
import subprocess
import sys
from pathlib import Path

here = Path(__file__).parent
wanted = set(sys.argv[1:])
scripts = sorted(p for p in here.glob("bench_*.py") if not wanted or p.stem[len("bench_"):] in wanted)
failed = []
for script in scripts:
    print(f"== {script.name}", flush=True)
    if subprocess.run([sys.executable, str(script)]).returncode:
        failed.append(script.name)
print("results:", ", ".join(sorted(str(p) for p in (here / "results").glob("*.json"))))
sys.exit(1 if failed else 0)
