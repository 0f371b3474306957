"""Release files each node downloads: where upstream publishes them, how their checksums are written,
and what is installed from each (docs/node-layout.md, "Binaries"). Nothing here imports Prefect.

One catalogue serves both ends: the node's manifest (`node_release_manifest`, read by
`groundup/node_scripts/install_releases.py` on the node) and the sandbox's mirror, which lays its
files out at the same upstream paths (`sandbox/mirror.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from groundup.spec import ClusterSpec, Node, Role

ARCH = "amd64"
MANIFEST_VERSION = 1
MIRROR_INDEX = "index.json"
BIN = "/usr/local/bin"

# Checksum file formats: dl.k8s.io's `.sha256` holds the bare hex digest; GitHub release assets carry
# `sha256sum` output (`<hex>  <file name>` lines, one or several files per checksum file).
HEX = "hex"
SHA256SUM = "sha256sum"

# How an artifact is packed: a single executable, or a gzip'd tar archive.
FILE = "file"
TAR_GZ = "tar.gz"

KUBERNETES_MASTER = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
KUBERNETES_WORKER = ("kubelet", "kube-proxy")


@dataclass(frozen=True)
class Install:
    """One thing installed from an artifact.

    `member` names an archive member (the artifact itself when it is a plain file, member ""); a member
    ending in "/" installs every executable regular file directly inside that archive directory into
    the directory `path`.
    """

    member: str
    path: str
    mode: int = 0o755

    @property
    def is_directory(self) -> bool:
        return self.member.endswith("/")

    def as_dict(self) -> dict:
        return {"member": self.member, "path": self.path, "mode": self.mode}


@dataclass(frozen=True)
class Release:
    """One upstream release file with its checksum file and what to install from it."""

    artifact: str
    version: str
    spec_field: str
    host: str
    path: str
    checksum_path: str
    checksum_format: str
    packing: str
    installs: tuple[Install, ...]

    @property
    def file_name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def checksum_entry(self) -> str:
        """The name the checksum file lists the artifact under (sha256sum format only)."""
        return self.file_name

    def url(self, mirror: str | None) -> str:
        return release_url(self.host, self.path, mirror)

    def checksum_url(self, mirror: str | None) -> str:
        return release_url(self.host, self.checksum_path, mirror)

    def manifest_entry(self, mirror: str | None) -> dict:
        """The JSON-able entry the node script reads."""
        return {
            "artifact": self.artifact,
            "version": self.version,
            "spec_field": self.spec_field,
            "url": self.url(mirror),
            "checksum_url": self.checksum_url(mirror),
            "checksum_format": self.checksum_format,
            "checksum_entry": self.checksum_entry,
            "packing": self.packing,
            "install": [i.as_dict() for i in self.installs],
        }


def release_url(host: str, path: str, mirror: str | None) -> str:
    """`https://<host>/<path>` upstream, `<mirror>/<host>/<path>` on a mirror."""
    if mirror:
        return f"{mirror.rstrip('/')}/{host}/{path}"
    return f"https://{host}/{path}"


def mirror_index_url(mirror: str) -> str:
    """Where a mirror lists the versions it holds of each artifact."""
    return f"{mirror.rstrip('/')}/{MIRROR_INDEX}"


def kubernetes_release(component: str, version: str) -> Release:
    """A Kubernetes binary from dl.k8s.io, `.sha256` (bare hex) beside it."""
    path = f"release/v{version}/bin/linux/{ARCH}/{component}"
    return Release(component, version, "kubernetes_version", "dl.k8s.io", path, f"{path}.sha256", HEX, FILE,
                   (Install("", f"{BIN}/{component}"),))


def kubectl_release(version: str) -> Release:
    """kubectl is published like the other Kubernetes binaries."""
    return kubernetes_release("kubectl", version)


def etcd_release(version: str) -> Release:
    """etcd's tarball; one `SHA256SUMS` for every asset of the release."""
    top = f"etcd-v{version}-linux-{ARCH}"
    base = f"etcd-io/etcd/releases/download/v{version}"
    return Release("etcd", version, "etcd_version", "github.com", f"{base}/{top}.tar.gz", f"{base}/SHA256SUMS",
                   SHA256SUM, TAR_GZ, (Install(f"{top}/etcd", f"{BIN}/etcd"), Install(f"{top}/etcdctl", f"{BIN}/etcdctl")))


def containerd_release(version: str) -> Release:
    """containerd's tarball (`bin/*`), `.sha256sum` beside it."""
    path = f"containerd/containerd/releases/download/v{version}/containerd-{version}-linux-{ARCH}.tar.gz"
    return Release("containerd", version, "containerd_version", "github.com", path, f"{path}.sha256sum",
                   SHA256SUM, TAR_GZ, (Install("bin/", BIN),))


def runc_release(version: str) -> Release:
    """runc's static binary; one `runc.sha256sum` for every asset of the release."""
    base = f"opencontainers/runc/releases/download/v{version}"
    return Release("runc", version, "runc_version", "github.com", f"{base}/runc.{ARCH}", f"{base}/runc.sha256sum",
                   SHA256SUM, FILE, (Install("", "/usr/local/sbin/runc"),))


def cni_plugins_release(version: str) -> Release:
    """The CNI plugins tarball (plugins at its top, `./bridge`, ...), `.sha256` (sha256sum format) beside it."""
    path = (f"containernetworking/plugins/releases/download/v{version}/"
            f"cni-plugins-linux-{ARCH}-v{version}.tgz")
    return Release("cni-plugins", version, "cni_plugins_version", "github.com", path, f"{path}.sha256",
                   SHA256SUM, TAR_GZ, (Install("./", "/opt/cni/bin"),))


def crictl_release(version: str) -> Release:
    """cri-tools' crictl tarball (`crictl` at its top), `.sha256` (bare hex) beside it."""
    path = f"kubernetes-sigs/cri-tools/releases/download/v{version}/crictl-v{version}-linux-{ARCH}.tar.gz"
    return Release("crictl", version, "crictl_version", "github.com", path, f"{path}.sha256", HEX, TAR_GZ,
                   (Install("crictl", f"{BIN}/crictl"),))


def coredns_release(version: str) -> Release:
    """CoreDNS's tarball (`coredns` at its top), `.sha256` (sha256sum format) beside it."""
    path = f"coredns/coredns/releases/download/v{version}/coredns_{version}_linux_{ARCH}.tgz"
    return Release("coredns", version, "coredns_version", "github.com", path, f"{path}.sha256", SHA256SUM, TAR_GZ,
                   (Install("coredns", f"{BIN}/coredns"),))


def role_releases(spec: ClusterSpec, role: Role) -> list[Release]:
    """What a master or a worker downloads, at the spec's versions."""
    if role is Role.master:
        return [etcd_release(spec.etcd_version),
                *(kubernetes_release(c, spec.kubernetes_version) for c in KUBERNETES_MASTER)]
    return [containerd_release(spec.containerd_version), runc_release(spec.runc_version),
            cni_plugins_release(spec.cni_plugins_version), crictl_release(spec.crictl_version),
            *(kubernetes_release(c, spec.kubernetes_version) for c in KUBERNETES_WORKER)]


def node_release_manifest(spec: ClusterSpec, node: Node) -> dict:
    """The node's download-verify-install manifest, as `install_releases.py` reads it."""
    mirror = spec.release_mirror
    return {
        "manifest_version": MANIFEST_VERSION,
        "node": node.short_name,
        "role": node.role.value,
        "mirror": mirror,
        "mirror_index": mirror_index_url(mirror) if mirror else None,
        "artifacts": [r.manifest_entry(mirror) for r in role_releases(spec, node.role)],
    }


def sha256sum_line(digest: str, file_name: str) -> str:
    """One line as `sha256sum` writes it (two spaces: text mode)."""
    return f"{digest}  {file_name}\n"
