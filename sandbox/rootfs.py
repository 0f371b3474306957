"""The nodes' shared Debian rootfs: built once with mmdebstrap, cached under the state directory.

Every node boots an overlay whose lower layer is this tree; the tree itself is never booted, so
nothing a running node writes leaks into the others.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from pathlib import Path

SUITE = "bookworm"
BASE_PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "iproute2",
    "sudo",
    "python3",
    "ca-certificates",
    "procps",
    "kmod",
    "iptables",
    "libseccomp2",
)
"""What every node has (an Ubuntu cloud image has each of these). Packages later phases need on the nodes
are added here, in one place: iptables for the CNI bridge's ipMasq and kube-proxy, libseccomp2 for runc,
kmod for the bootstrap's `modprobe` (which may fail: the host's kernel decides)."""

SSHD_DROP_IN = """\
# groundup sandbox: one ed25519 host key per node, written by `sandbox up`; keys only.
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
"""
_CUSTOMIZE_VERSION = "2"


def base_dir(state: Path) -> Path:
    return state / "rootfs" / "base"


def stamp(packages: tuple[str, ...] = BASE_PACKAGES, suite: str = SUITE) -> str:
    """What the cached rootfs was built from; a different stamp means rebuild."""
    text = "\n".join([suite, _CUSTOMIZE_VERSION, *sorted(packages)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_cached(state: Path) -> bool:
    marker = base_dir(state) / ".groundup-rootfs"
    return marker.exists() and marker.read_text().strip() == stamp()


def host_apt_sources(suite: str = SUITE, root: Path = Path("/")) -> list[str]:
    """One-line `deb` entries for `suite` (and its -updates/-security) from the host's apt config.

    The mirror is whatever the host uses, so no registry host is written into the project.
    """
    entries: list[str] = []
    etc = root / "etc" / "apt"
    files = [etc / "sources.list"] + sorted((etc / "sources.list.d").glob("*.list"))
    for path in files:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            parts = line.split("#", 1)[0].split()
            if len(parts) >= 3 and parts[0] == "deb":
                if parts[1].startswith("["):
                    while parts and not parts[1].endswith("]"):
                        parts.pop(1)
                    parts.pop(1)
                uri, dist, comps = parts[1], parts[2], parts[3:] or ["main"]
                if dist.split("/")[0].split("-")[0] == suite:
                    entries.append(f"deb {uri} {dist} {' '.join(comps)}")
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = _deb822(stanza)
            if "deb" not in fields.get("Types", "").split() or fields.get("Enabled", "yes") == "no":
                continue
            comps = fields.get("Components", "main")
            for uri in fields.get("URIs", "").split():
                for dist in fields.get("Suites", "").split():
                    if dist.split("/")[0].split("-")[0] == suite:
                        entries.append(f"deb {uri} {dist} {comps}")
    return list(dict.fromkeys(entries))


def _deb822(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in stanza.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0] in " \t" and key:
            fields[key] += " " + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            key = key.strip()
            fields[key] = value.strip()
    return fields


def build_base(state: Path, log: Path | None = None) -> float:
    """Build the base rootfs unless a matching one is cached; returns the seconds spent."""
    if is_cached(state):
        return 0.0
    sources = host_apt_sources()
    if not sources:
        raise RuntimeError(
            f"no '{SUITE}' entry in the host's /etc/apt/sources.list*: the sandbox builds its "
            "rootfs from the host's own Debian mirror"
        )
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("mmdebstrap is missing: run scripts/install-sandbox-deps.sh")
    started = time.monotonic()
    target = base_dir(state)
    building = target.with_name("base.building")
    shutil.rmtree(building, ignore_errors=True)
    building.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        subprocess.run(
            ["mmdebstrap", "--variant=minbase", "--mode=root", "--include=" + ",".join(BASE_PACKAGES),
             SUITE, str(building), "-"],
            input="\n".join(sources).encode() + b"\n",
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
        )
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"mmdebstrap failed with {exc.returncode}; see {log}") from None
    finally:
        if log:
            out.close()
    customize(building)
    shutil.rmtree(target, ignore_errors=True)
    building.rename(target)
    (target / ".groundup-rootfs").write_text(stamp() + "\n")
    return time.monotonic() - started


def customize(root: Path) -> None:
    """Make the tree a node image: resolvable localhost, no host keys, sshd keys-only."""
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost\n")
    resolv = root / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.write_text("nameserver 127.0.0.1\n")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    drop_in = root / "etc/ssh/sshd_config.d/groundup.conf"
    drop_in.parent.mkdir(parents=True, exist_ok=True)
    drop_in.write_text(SSHD_DROP_IN)
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (root / "etc/hostname").unlink(missing_ok=True)
