"""Time the pki phase: 3 masters + 3 and + 30 workers, RSA 2048 and ECDSA P-256.

    .venv/bin/python scripts/bench_pki.py

For each case: the pure code in one thread (CA, every leaf, kubeconfigs, encryption config, into a
local artifact store), then `pki_phase` inside a Prefect flow (one task per artifact, thread pool),
first run (issues everything) and second run (reuses everything). Uses a temporary Prefect server
and a temporary artifact directory.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

_TMP = Path(tempfile.mkdtemp(prefix="groundup-bench-pki-"))
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_HOME"] = str(_TMP / "prefect")
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ["GROUNDUP_ARTIFACTS"] = str(_TMP / "artifacts")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect import flow  # noqa: E402
from prefect.filesystems import LocalFileSystem  # noqa: E402

from blocks.artifact_store import ArtifactStore  # noqa: E402
from groundup import pki  # noqa: E402
from groundup.encryption import ensure_encryption_config  # noqa: E402
from groundup.kubeconfig import ensure_kubeconfig, kubeconfig_requests  # noqa: E402
from groundup.spec import ClusterSpec, KeyAlgorithm  # noqa: E402
from tasks.pki import pki_phase  # noqa: E402

NLB = "bench-api-0123456789.elb.us-east-2.amazonaws.com"


@flow(name="bench-pki")
def bench_flow(spec: ClusterSpec) -> dict[str, str]:
    return pki_phase(spec, NLB, {})


def pure_run(spec: ClusterSpec) -> float:
    store = ArtifactStore(LocalFileSystem(basepath=str(_TMP / "pure")), spec.name, b"bench-passphrase")
    start = time.perf_counter()
    pki.ensure_ca(spec, store)
    for request in pki.leaf_requests(spec, NLB, {}).values():
        pki.ensure_certificate(spec, request, store)
    for request in kubeconfig_requests(spec, NLB).values():
        ensure_kubeconfig(spec, request, store)
    ensure_encryption_config(store)
    return time.perf_counter() - start


def flow_run(spec: ClusterSpec) -> float:
    start = time.perf_counter()
    bench_flow(spec)
    return time.perf_counter() - start


def main() -> None:
    from prefect.testing.utilities import prefect_test_harness

    rows = []
    with prefect_test_harness(server_startup_timeout=180):
        bench_flow(ClusterSpec(name="warmup", master_count=1, worker_count=1))
        for algorithm in (KeyAlgorithm.rsa2048, KeyAlgorithm.ecdsa_p256):
            for workers in (3, 30):
                spec = ClusterSpec(name=f"bench-{algorithm.name.replace('_', '-')}-{workers}", worker_count=workers, pki={"key_algorithm": algorithm})
                certs = 1 + len(pki.leaf_requests(spec, NLB, {}))
                kubeconfigs = len(kubeconfig_requests(spec, NLB))
                rows.append(
                    (f"3+{workers}", algorithm.value, certs, kubeconfigs, pure_run(spec), flow_run(spec), flow_run(spec))
                )
    print("| nodes | keys | certs | kubeconfigs | pure, 1 thread | flow, first run | flow, re-run |")
    print("|---|---|---|---|---|---|---|")
    for nodes, keys, certs, kubeconfigs, pure, first, again in rows:
        print(f"| {nodes} | {keys} | {certs} | {kubeconfigs} | {pure:.2f} s | {first:.2f} s | {again:.2f} s |")
    print(f"\n{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
