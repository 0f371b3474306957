"""Phase timings of build-cluster on a moto server, and how they scale with the node count.

Usage: .venv/bin/python scripts/benchmark.py [--workers 3,30] [--masters 3]
Runs the real flows (Prefect temporary server, moto server on loopback): network, compute, a
second build that must change nothing, plan, and teardown, for each worker count.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORK = Path(tempfile.mkdtemp(prefix="groundup-bench-"))
os.environ.update(
    DO_NOT_TRACK="1",
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    PREFECT_HOME=str(WORK / "prefect"),
    PREFECT_LOGGING_LEVEL="WARNING",
    GROUNDUP_ARTIFACTS=str(WORK / "artifacts"),
    AWS_ACCESS_KEY_ID="bench",
    AWS_SECRET_ACCESS_KEY="bench",
)


def timed(fn, *args, **kwargs) -> float:
    started = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masters", type=int, default=3)
    parser.add_argument("--workers", default="3,30", help="comma-separated worker counts")
    args = parser.parse_args()

    from sandbox.moto import start_moto_server

    server = start_moto_server(WORK / "moto", log=WORK / "moto.log")
    os.environ["AWS_ENDPOINT_URL"] = server.endpoint
    from prefect.testing.utilities import prefect_test_harness

    from flows.build_cluster import build_cluster
    from flows.teardown_cluster import teardown_cluster
    from groundup.plan import plan
    from groundup.spec import load_spec, parse_spec

    seed = load_spec(ROOT / "clusters/seed.yaml").model_dump(mode="json")
    rows = []
    try:
        with prefect_test_harness(server_startup_timeout=180):
            plan(load_spec(ROOT / "clusters/seed.yaml"))  # warm-up: moto's first EC2 call takes ~2 s
            for workers in (int(w) for w in args.workers.split(",")):
                spec_data = {**seed, "master_count": args.masters, "worker_count": workers,
                             "master_ips": None, "worker_ips": None, "worker_pod_cidrs": None}
                spec = parse_spec(spec_data)
                server.reset()
                row = {"nodes": f"{args.masters}+{workers}"}
                row["network"] = timed(build_cluster, spec=spec, phases=["network"])
                row["compute"] = timed(build_cluster, spec=spec, phases=["compute"])
                row["rebuild (no change)"] = timed(build_cluster, spec=spec, phases=["network", "compute"])
                row["plan"] = timed(plan, spec)
                row["teardown"] = timed(teardown_cluster, spec=spec)
                rows.append(row)
                print(" ".join(f"{k}={v:.2f}s" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                      flush=True)
    finally:
        server.stop()
    columns = list(rows[0])
    print("\n| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(f"{row[c]:.2f} s" if isinstance(row[c], float) else row[c] for c in columns) + " |")


if __name__ == "__main__":
    main()
