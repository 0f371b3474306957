"""The pki phase as Prefect tasks: seed steps 4 (certificates), 6 (kubeconfigs) and 7 (encryption config).

One task per certificate and per kubeconfig, so they run concurrently. Each task opens the store
itself (`cluster_store`: one lookup per flow run) and returns storage paths and public facts only:
Prefect persists results in the clear. The default cache policy scopes cached results to the flow run, so a retried run skips
what finished and a new run checks everything again.
"""

from __future__ import annotations

from typing import Any, Mapping

from prefect import get_run_logger, task
from prefect.futures import PrefectFuture

from blocks.artifact_store import ArtifactStore, load_passphrase
from groundup import pki
from groundup.encryption import ensure_encryption_config
from groundup.kubeconfig import KubeconfigRequest, ensure_kubeconfig, kubeconfig_requests
from groundup.pki_plan import pki_paths, pki_plan
from groundup.spec import ClusterSpec
from tasks.nodes import nothing_to_change
from tasks.store import cluster_store

Result = dict[str, Any]
def _store(spec: ClusterSpec) -> ArtifactStore:
    return cluster_store(spec)


def _log(result: Result) -> Result:
    get_run_logger().info("%s: %s (%s)", result["name"], result["action"], result["reason"])
    return result


@task(name="certificate-authority", persist_result=True)
def certificate_authority(spec: ClusterSpec) -> Result:
    """The cluster CA: reused while it matches the spec, otherwise created (seed `cfssl gencert -initca`)."""
    return _log(pki.ensure_ca(spec, _store(spec)).as_result())


@task(name="certificate", task_run_name="certificate-{request.name}", persist_result=True)
def certificate(spec: ClusterSpec, request: pki.CertRequest, ca: Result) -> Result:
    """One leaf certificate and key, signed by the CA whose fingerprint is in `ca`."""
    store = _store(spec)
    current_ca = pki.fingerprint(pki.stored_ca_certificate(store))
    if current_ca != ca["fingerprint"]:
        raise RuntimeError(f"the stored CA changed during the run ({ca['fingerprint'][:12]} -> {current_ca[:12]})")
    return _log(pki.ensure_certificate(spec, request, store).as_result())


@task(name="kubeconfig", task_run_name="kubeconfig-{request.name}", persist_result=True)
def kubeconfig(spec: ClusterSpec, request: KubeconfigRequest, ca: Result, client_certificate: Result) -> Result:
    """One kubeconfig with the CA and the client certificate and key embedded (seed step 6)."""
    return _log(ensure_kubeconfig(spec, request, _store(spec)).as_result())


@task(name="encryption-config", persist_result=True)
def encryption_config(spec: ClusterSpec) -> Result:
    """The EncryptionConfiguration; its key is made once and kept (seed step 7)."""
    return _log(ensure_encryption_config(_store(spec)).as_result())


@task(name="check-pki", persist_result=True)
def check_pki(spec: ClusterSpec, api_endpoint: str, external_ips: dict[str, str | None]) -> Result:
    """What the tasks below would issue or write (`groundup plan`'s check), in one task; with nothing to do,
    the storage path of every artifact, as the phase returns them."""
    store = _store(spec)
    changes = pki_plan(spec, api_endpoint, external_ips, store)
    paths = {} if changes else {p: store.path(p) for p in pki_paths(spec, api_endpoint, external_ips)}
    return {"changes": changes, "paths": paths}


def pki_phase(spec: ClusterSpec, api_endpoint: str, external_ips: Mapping[str, str | None]) -> dict[str, str]:
    """Run the pki phase from inside a flow; returns `{relative path: storage path}` of every artifact.

    `api_endpoint` is the NLB DNS name; `external_ips` maps node names (or short names) to public IPs.
    """
    load_passphrase()  # create the Secret block once, before the tasks race for it
    checked = nothing_to_change("pki", check_pki.submit(spec, api_endpoint, dict(external_ips)))
    if checked is not None:
        return checked["paths"]
    ca = certificate_authority.submit(spec)
    encryption = encryption_config.submit(spec)
    leaves: dict[str, PrefectFuture] = {
        name: certificate.submit(spec, request, ca)
        for name, request in pki.leaf_requests(spec, api_endpoint, dict(external_ips)).items()
    }
    kubeconfigs = [
        kubeconfig.submit(spec, request, ca, leaves[request.certificate])
        for request in kubeconfig_requests(spec, api_endpoint).values()
    ]
    results = [ca.result(), encryption.result(), *(f.result() for f in leaves.values()), *(f.result() for f in kubeconfigs)]
    changed = [r["name"] for r in results if r["action"] != "reused"]
    get_run_logger().info(
        "pki: %d checked, %d written%s", len(results), len(changed), f" ({', '.join(changed)})" if changed else ""
    )
    prefix = f"{spec.name}/"
    return {path.removeprefix(prefix): path for r in results for path in r["paths"]}
