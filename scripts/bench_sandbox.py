"""Measure the sandbox: `up` cold and cached, boot time and memory per node, distribution time.

    .venv/bin/python scripts/bench_sandbox.py --workers 3 [--cold] [--demo] [--keep]

Each run writes a spec like clusters/sandbox.yaml with the given worker count, brings the sandbox
up for it, optionally runs build-cluster through distribution (`--demo`), prints one JSON line and
takes the sandbox down again (unless `--keep`). Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sandbox import lifecycle, rootfs  # noqa: E402
from sandbox.state import state_dir  # noqa: E402


def available_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


def spec_with_workers(workers: int, directory: Path) -> Path:
    text = (REPO / "clusters" / "sandbox.yaml").read_text()
    text = re.sub(r"^worker_count: \d+$", f"worker_count: {workers}", text, flags=re.M)
    path = directory / f"sandbox-{workers}.yaml"
    path.write_text(text)
    return path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="delete the cached rootfs first")
    parser.add_argument("--demo", action="store_true", help="also run build-cluster through distribution")
    parser.add_argument("--no-prefect", action="store_true")
    parser.add_argument("--keep", action="store_true", help="leave the sandbox up")
    args = parser.parse_args()
    state = state_dir()
    if args.cold:
        shutil.rmtree(rootfs.base_dir(state), ignore_errors=True)
    lifecycle.down(state)
    spec = spec_with_workers(args.workers, Path(tempfile.mkdtemp(prefix="groundup-bench-")))
    memory_before = available_mib()
    report = lifecycle.up(state, with_prefect=not args.no_prefect or args.demo, out=lambda s: None)
    time.sleep(2)
    nodes = len(lifecycle.status(state)["nodes"])
    result = {
        "nodes": nodes,
        "cold": args.cold,
        "up_seconds": round(report.timings["total"], 1),
        "timings": {k: round(v, 2) for k, v in report.timings.items()},
        "memory_mib_per_node": round((memory_before - available_mib()) / max(nodes, 1), 1),
    }
    if args.demo:
        env = {**os.environ, **lifecycle.read_env_file(state)}
        for phases in ("network,compute,pki", "distribute", "distribute"):
            key = "distribute_rerun" if phases in result.get("phases_seconds", {}) else phases
            demo = subprocess.run([sys.executable, "-m", "sandbox.cli", "demo", "--in-process", str(spec),
                                   "--phases", phases], cwd=REPO, env=env, capture_output=True, text=True)
            done = re.search(r"\): (\w+) in ([\d.]+) s", demo.stdout)
            result.setdefault("phases_seconds", {})[key] = float(done.group(2)) if done else None
            failed = not done or done.group(1) != "Completed"
            result.setdefault("phases_state", {})[key] = (demo.stdout + demo.stderr)[-1500:] if failed else "Completed"
    if not args.keep:
        started = time.monotonic()
        left = lifecycle.down(state)
        result["down_seconds"] = round(time.monotonic() - started, 1)
        result["left_behind"] = {k: v for k, v in left.items() if v}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
