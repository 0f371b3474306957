"""What the PKI phase would change, without changing anything (for `groundup plan`). Pure."""

from __future__ import annotations

import datetime as dt
from typing import Mapping

from groundup import pki
from groundup.artifacts import ENCRYPTION_CONFIG, Store, read_optional
from groundup.encryption import encryption_key, render_encryption_config
from groundup.kubeconfig import kubeconfig_change, kubeconfig_requests, wanted_kubeconfig
from groundup.spec import ClusterSpec

UNKNOWN_ENDPOINT = "nlb-dns-name.invalid"


def pki_plan(
    spec: ClusterSpec,
    api_endpoint: str,
    external_ips: Mapping[str, str | None],
    store: Store,
    now: dt.datetime | None = None,
) -> list[str]:
    """One line per certificate, kubeconfig or config file the PKI phase would write, with why.

    An empty list means a run would reuse everything. With no `api_endpoint` yet (the NLB does not
    exist), the apiserver certificate and the kubeconfigs that point at the NLB are left undecided.
    """
    lines: list[str] = []
    undecided: set[str] = set()
    if not api_endpoint:
        api_endpoint = UNKNOWN_ENDPOINT
        undecided.add(pki.APISERVER)
    ca = pki.ca_request(spec)
    ca_pair = pki.read_pair(store, ca)
    ca_reason = pki.reissue_reason(ca, spec.pki, ca_pair.cert, ca_pair.key, None, now)
    if ca_reason:
        lines.append(f"{ca.cert_path}: issue ({ca_reason})")

    reissued: set[str] = set()
    for request in pki.leaf_requests(spec, api_endpoint, external_ips).values():
        if request.name in undecided and not ca_reason:
            lines.append(f"{request.cert_path}: decided once the NLB DNS name is known")
            continue
        if ca_reason:
            reason: str | None = "new CA"
        else:
            pair = pki.read_pair(store, request)
            reason = pki.reissue_reason(request, spec.pki, pair.cert, pair.key, ca_pair.cert, now)
        if reason:
            reissued.add(request.name)
            lines.append(f"{request.cert_path}: issue ({reason})")

    for request in kubeconfig_requests(spec, api_endpoint).values():
        if ca_reason or request.certificate in reissued:
            reason = f"embeds the new {'CA' if ca_reason else request.certificate + '.pem'}"
        elif UNKNOWN_ENDPOINT in request.server:
            reason = None
        else:
            stored = read_optional(store, request.path)
            wanted = wanted_kubeconfig(spec, request, store)
            reason = kubeconfig_change(stored.decode() if stored is not None else None, wanted)
        if reason:
            lines.append(f"{request.path}: write ({reason})")

    stored_config = read_optional(store, ENCRYPTION_CONFIG)
    if stored_config is None:
        lines.append(f"{ENCRYPTION_CONFIG}: write (new aescbc key)")
    else:
        try:
            key = encryption_key(stored_config.decode())
        except ValueError as exc:
            lines.append(f"{ENCRYPTION_CONFIG}: cannot be reused ({exc}); the PKI phase will stop")
        else:
            if stored_config.decode() != render_encryption_config(key):
                lines.append(f"{ENCRYPTION_CONFIG}: write (layout updated, same key)")
    return lines


def pki_paths(spec: ClusterSpec, api_endpoint: str, external_ips: Mapping[str, str | None]) -> list[str]:
    """Every artifact the PKI phase keeps, relative to the cluster's store: the CA, each leaf's certificate
    and key, each kubeconfig and the encryption config."""
    requests = [pki.ca_request(spec), *pki.leaf_requests(spec, api_endpoint, external_ips).values()]
    return ([p for r in requests for p in (r.cert_path, r.key_path)]
            + [k.path for k in kubeconfig_requests(spec, api_endpoint).values()] + [ENCRYPTION_CONFIG])
