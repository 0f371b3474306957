"""Config files the components read: kubeconfig, KubeletConfiguration, KubeProxyConfiguration,
KubeSchedulerConfiguration, EncryptionConfiguration and the audit Policy."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

import yaml

from . import pki
from .pki import CheckError

KUBELET = ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration")
KUBE_PROXY = ("kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration")
KUBE_SCHEDULER = ("kubescheduler.config.k8s.io/v1", "KubeSchedulerConfiguration")
ENCRYPTION = ("apiserver.config.k8s.io/v1", "EncryptionConfiguration")
AUDIT_POLICY = ("audit.k8s.io/v1", "Policy")
AUDIT_LEVELS = {"None", "Metadata", "Request", "RequestResponse"}


def load_yaml(path: str, what: str) -> dict:
    text = pki.read(path, what)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise CheckError(f"{what} {path}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise CheckError(f"{what} {path}: expected a YAML mapping")
    return data


def expect_kind(data: dict, wanted: tuple[str, str], where: str) -> None:
    got = (data.get("apiVersion"), data.get("kind"))
    if got != wanted:
        raise CheckError(f"{where}: apiVersion/kind is {got[0]}/{got[1]}, want {wanted[0]}/{wanted[1]}")


def field(data: dict, dotted: str, where: str, kind: type = str, required: bool = True):
    """`a.b.c` from nested mappings; CheckError naming the field when it is missing or of the wrong type."""
    value = data
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        if required:
            raise CheckError(f"{where}: {dotted} is required")
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CheckError(f"{where}: {dotted} must be a {kind.__name__}, got {value!r}")
    return value


def check_cidrs(value: str, where: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    try:
        return [ipaddress.ip_network(part.strip()) for part in value.split(",") if part.strip()]
    except ValueError as error:
        raise CheckError(f"{where}: {error}") from None


def check_ip(value: str, where: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise CheckError(f"{where}: {value!r} is not an IP address") from None


def relative_to(path: str, config_path: str) -> str:
    """Relative paths in a config file are relative to the file's directory (as upstream resolves them)."""
    return path if os.path.isabs(path) else os.path.join(os.path.dirname(os.path.abspath(config_path)), path)


@dataclass
class Kubeconfig:
    """The parts of a kubeconfig a component uses to reach its API server."""

    path: str
    server: str
    host: str
    port: int
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    identity: str


def _data_or_file(entry: dict, key: str, where: str, config_path: str) -> bytes | None:
    data = entry.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise CheckError(f"{where}: {key}-data is not base64") from None
    path = entry.get(key)
    if path:
        path = relative_to(path, config_path)
        return pki.read(path, f"{where}: {key}")
    return None


def _named(items, name: str, kind: str, where: str) -> dict:
    for item in items or []:
        if isinstance(item, dict) and item.get("name") == name:
            return item.get(kind) or {}
    raise CheckError(f"{where}: no {kind} named {name!r}")


def load_kubeconfig(path: str, what: str) -> Kubeconfig:
    """A v1 Config whose current context has an https server, a CA and a client cert/key that match and chain to that CA."""
    where = f"{what} {path}"
    data = load_yaml(path, what)
    expect_kind(data, ("v1", "Config"), where)
    context_name = data.get("current-context")
    if not context_name:
        raise CheckError(f"{where}: current-context is not set")
    context = _named(data.get("contexts"), context_name, "context", where)
    cluster = _named(data.get("clusters"), context.get("cluster", ""), "cluster", where)
    user = _named(data.get("users"), context.get("user", ""), "user", where)
    server = cluster.get("server", "")
    url = urlsplit(server)
    if url.scheme != "https" or not url.hostname:
        raise CheckError(f"{where}: cluster server {server!r} must be an https:// URL")
    ca_pem = _data_or_file(cluster, "certificate-authority", where, path)
    if ca_pem is None:
        raise CheckError(f"{where}: cluster {context.get('cluster')!r} has no certificate-authority(-data)")
    cas = pki.check_ca_bundle(ca_pem, f"{where}: certificate-authority")
    cert_pem = _data_or_file(user, "client-certificate", where, path)
    key_pem = _data_or_file(user, "client-key", where, path)
    if cert_pem is None or key_pem is None:
        raise CheckError(f"{where}: user {context.get('user')!r} needs client-certificate(-data) and client-key(-data)")
    cert = pki.check_pair(cert_pem, key_pem, f"{where}: client-certificate", f"{where}: client-key", cas,
                          f"{where}: certificate-authority")
    return Kubeconfig(path, server, url.hostname, url.port or 443, ca_pem, cert_pem, key_pem, pki.subject(cert))


def check_encryption_config(path: str, what: str) -> None:
    where = f"{what} {path}"
    data = load_yaml(path, what)
    expect_kind(data, ENCRYPTION, where)
    resources = data.get("resources")
    if not isinstance(resources, list) or not resources:
        raise CheckError(f"{where}: resources must be a non-empty list")
    for i, entry in enumerate(resources):
        if not isinstance(entry, dict) or not entry.get("resources") or not entry.get("providers"):
            raise CheckError(f"{where}: resources[{i}] needs resources and providers")
        for j, provider in enumerate(entry["providers"]):
            name = next(iter(provider), None) if isinstance(provider, dict) else None
            if name in ("aescbc", "aesgcm", "secretbox"):
                keys = (provider[name] or {}).get("keys") or []
                if not keys:
                    raise CheckError(f"{where}: resources[{i}].providers[{j}].{name} has no keys")
                for key in keys:
                    _check_key(key, name, f"{where}: resources[{i}].providers[{j}].{name}")
            elif name not in ("identity", "kms"):
                raise CheckError(f"{where}: resources[{i}].providers[{j}]: unknown provider {name!r}")


def _check_key(key: dict, provider: str, where: str) -> None:
    if not key.get("name"):
        raise CheckError(f"{where}: a key has no name")
    try:
        raw = base64.b64decode(key.get("secret", ""), validate=True)
    except (binascii.Error, ValueError):
        raise CheckError(f"{where}: key {key['name']!r} is not base64") from None
    sizes = (32,) if provider == "secretbox" else (16, 24, 32)
    if len(raw) not in sizes:
        raise CheckError(f"{where}: key {key['name']!r} is {len(raw)} bytes, want {' or '.join(map(str, sizes))}")


def check_audit_policy(path: str, what: str) -> None:
    where = f"{what} {path}"
    data = load_yaml(path, what)
    expect_kind(data, AUDIT_POLICY, where)
    rules = data.get("rules")
    if not isinstance(rules, list) or not rules:
        raise CheckError(f"{where}: loaded illegal policy with 0 rules")
    for i, rule in enumerate(rules):
        level = rule.get("level") if isinstance(rule, dict) else None
        if level not in AUDIT_LEVELS:
            raise CheckError(f"{where}: rules[{i}].level {level!r} is not one of {', '.join(sorted(AUDIT_LEVELS))}")
