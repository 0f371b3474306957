"""The version policy: which Kubernetes releases groundup builds, and which component versions go with each.

groundup supports the three minors upstream supports (1.35, 1.36, 1.37 as of 2026-12). For each minor
the defaults are the versions that Kubernetes release is tested with, each with where it comes from,
and the accepted series are those upstream says work with it. Nothing here imports Prefect.

Where each default comes from (read from each release's own module, 2026-12-04):
- etcd: kubeadm's `DefaultEtcdVersion` (cmd/kubeadm/app/constants) names the minor (3.7.0 for 1.37,
  3.6.8 for 1.36, 3.6.6 for 1.35); the default is that minor's newest patch (etcd's patch releases
  are fixes only). Accepted: 3.6 and 3.7, the series kubeadm 1.37's `SupportedEtcdVersion` and
  1.35/1.36's defaults name.
- CoreDNS and pause: kubeadm's `CoreDNSVersion` and `PauseVersion`.
- CNI plugins: build/dependencies.yaml's `cni`.
- containerd: the newest patch of the newest series containerd's RELEASES.md lists for that minor
  ("Kubernetes Support"); accepted: the 2.x series it lists (groundup renders config version 3).
- runc: what that containerd tests with (its script/setup/runc-version).
- crictl: what that containerd tests with (its script/setup/critools-version; for 1.35, whose containerd
  tests an older one, build/dependencies.yaml): cri-tools' minor follows Kubernetes' minor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")

COMPONENT_FIELDS = ("etcd_version", "containerd_version", "runc_version", "cni_plugins_version",
                    "crictl_version", "coredns_version")


@dataclass(frozen=True)
class Component:
    """A component's default for one Kubernetes minor and the series (major.minor) known to work with it."""

    default: str
    accepted: tuple[str, ...]

    def accepts(self, version: str) -> bool:
        return series(version) in self.accepted


@dataclass(frozen=True)
class KubernetesLine:
    """One supported Kubernetes minor: its newest patch and its components."""

    minor: str
    latest: str
    etcd: Component
    containerd: Component
    runc: Component
    cni_plugins: Component
    crictl: Component
    coredns: Component
    pause: str

    def component(self, spec_field: str) -> Component:
        return getattr(self, spec_field.removesuffix("_version"))

    def defaults(self) -> dict[str, str]:
        return {f: self.component(f).default for f in COMPONENT_FIELDS}


_ETCD = ("3.6", "3.7")
_CNI = ("1.6", "1.7", "1.8", "1.9", "1.10")
_COREDNS = ("1.12", "1.13", "1.14", "1.15")

LINES: dict[str, KubernetesLine] = {
    # kubeadm DefaultEtcdVersion 3.7.0-0; containerd RELEASES.md 1.37 -> 2.4.0+, 2.3.0+; runc and crictl from
    # containerd v2.4.2's script/setup.
    "1.37": KubernetesLine(
        minor="1.37", latest="1.37.2",
        etcd=Component("3.7.4", _ETCD), containerd=Component("2.4.2", ("2.3", "2.4")),
        runc=Component("1.5.2", ("1.4", "1.5")), cni_plugins=Component("1.9.1", _CNI),
        crictl=Component("1.37.0", ("1.36", "1.37")), coredns=Component("1.14.6", _COREDNS), pause="3.10.2",
    ),
    # kubeadm 3.6.8-0; containerd 1.36 -> 2.3.0+, 2.2.0+; runc and crictl from containerd v2.3.7's script/setup.
    "1.36": KubernetesLine(
        minor="1.36", latest="1.36.3",
        etcd=Component("3.6.17", _ETCD), containerd=Component("2.3.7", ("2.2", "2.3")),
        runc=Component("1.5.2", ("1.3", "1.4", "1.5")), cni_plugins=Component("1.9.1", _CNI),
        crictl=Component("1.35.0", ("1.35", "1.36")), coredns=Component("1.14.2", _COREDNS), pause="3.10.2",
    ),
    # kubeadm 3.6.6-0; containerd 1.35 -> 2.2.0+, 2.1.5+; runc from containerd v2.2.9's script/setup,
    # crictl from build/dependencies.yaml.
    "1.35": KubernetesLine(
        minor="1.35", latest="1.35.4",
        etcd=Component("3.6.17", _ETCD), containerd=Component("2.2.9", ("2.1", "2.2")),
        runc=Component("1.3.6", ("1.3", "1.4")), cni_plugins=Component("1.8.0", _CNI),
        crictl=Component("1.34.0", ("1.34", "1.35")), coredns=Component("1.13.1", _COREDNS), pause="3.10.1",
    ),
}


def _minor_order(minor: str) -> tuple[int, ...]:
    return tuple(map(int, minor.split(".")))


DEFAULT_KUBERNETES_VERSION = LINES[max(LINES, key=_minor_order)].latest


class VersionPolicyError(ValueError):
    """A version groundup will not build; the message names the supported window."""


def parse(version: str) -> tuple[int, int, int]:
    match = _VERSION.fullmatch(version.strip())
    if not match:
        raise VersionPolicyError(f"{version!r} is not a release version (X.Y.Z)")
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def series(version: str) -> str:
    major, minor, _ = parse(version)
    return f"{major}.{minor}"


def window() -> str:
    minors = sorted(LINES, key=_minor_order)
    newest = ", ".join(LINES[m].latest for m in minors)
    return f"{', '.join(minors[:-1])} and {minors[-1]} (newest patches {newest})"


def kubernetes_line(version: str) -> KubernetesLine:
    """The supported minor `version` belongs to, or a VersionPolicyError naming the window."""
    minor = series(version)
    line = LINES.get(minor)
    if line is None:
        raise VersionPolicyError(f"Kubernetes {version} is not supported: groundup builds the three minors "
                                 f"upstream supports, {window()}")
    return line


def check_component(spec_field: str, version: str, kubernetes_version: str) -> None:
    """Refuse a component version not known to work with that Kubernetes, naming what is."""
    line = kubernetes_line(kubernetes_version)
    component = line.component(spec_field)
    if not component.accepts(version):
        name = spec_field.removesuffix("_version").replace("_", " ")
        accepted = ", ".join(f"{s}.x" for s in component.accepted)
        raise VersionPolicyError(f"{name} {version} is not known to work with Kubernetes {line.minor}: "
                                 f"use {accepted} (default {component.default})")
