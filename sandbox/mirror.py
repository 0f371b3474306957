"""The sandbox's release mirror: upstream's release files at upstream's paths, served over HTTP on the bridge.

On AWS the nodes download from dl.k8s.io and github.com; in the sandbox they run the same
download-and-verify step against `<mirror>/<upstream host>/<upstream path>` (the spec's `release_mirror`).
Every file is the real upstream release at its exact version: built from the project's own Go module by
the release builder (`sandbox.release_builder`, offline from upstream's hosts, the default), or, with
`GROUNDUP_RELEASES=fetch` where upstream's hosts are reachable, fetched from upstream and verified against
upstream's checksum files by the same code the nodes run (`groundup/node_scripts/install_releases.py`).
Built releases are packed in upstream's archive layout with a checksum file in upstream's format beside
each; `index.json` at the root lists the versions of each artifact and where each came from.

    python -m sandbox.mirror build --root DIR [--kubernetes 1.37.2 ...]
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
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Protocol

from groundup.files import atomic_write
from groundup.node_scripts import install_releases
from groundup.releases import (
    HEX,
    KUBERNETES_MASTER,
    KUBERNETES_WORKER,
    MIRROR_INDEX,
    TAR_GZ,
    Release,
    cni_plugins_release,
    containerd_release,
    coredns_release,
    crictl_release,
    etcd_release,
    kubectl_release,
    kubernetes_release,
    runc_release,
    sha256sum_line,
)
from groundup.versions import DEFAULT_KUBERNETES_VERSION, kubernetes_line

Log = Callable[[str], None]

STAMP = ".groundup-mirror.json"
# Bump when the packing changes, so a cached mirror is repacked.
PACKER_REVISION = 2
SOURCE_ENV = "GROUNDUP_RELEASES"
UPSTREAM_ENV = "GROUNDUP_RELEASE_UPSTREAM"
BUILD, FETCH = "build", "fetch"


class MirrorError(RuntimeError):
    """The mirror cannot be built; the message says what is missing and how to get it."""


class Builder(Protocol):
    def build(self, component: str, version: str) -> Path: ...


def component_releases(component: str, version: str) -> list[Release]:
    """The upstream release files of one component at one version."""
    if component == "kubernetes":
        return [*(kubernetes_release(c, version) for c in KUBERNETES_MASTER + KUBERNETES_WORKER),
                kubectl_release(version)]
    makers = {"etcd": etcd_release, "containerd": containerd_release, "runc": runc_release,
              "cni-plugins": cni_plugins_release, "crictl": crictl_release, "coredns": coredns_release}
    return [makers[component](version)]


def line_components(kubernetes_version: str) -> list[tuple[str, str]]:
    """(component, version) of everything a cluster at this Kubernetes release downloads, at its defaults."""
    line = kubernetes_line(kubernetes_version)
    return [("kubernetes", kubernetes_version), ("etcd", line.etcd.default),
            ("containerd", line.containerd.default), ("runc", line.runc.default),
            ("cni-plugins", line.cni_plugins.default), ("crictl", line.crictl.default),
            ("coredns", line.coredns.default)]


def sha256_file(path: Path) -> str:
    return install_releases.file_sha256(str(path))


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
                info.mtime = 0
                if data is None:
                    info.size, info.mode = source.stat().st_size, 0o755
                    with open(source, "rb") as handle:
                        tar.addfile(info, handle)
                else:
                    info.size, info.mode = len(data), 0o644
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
                raise MirrorError(f"{release.artifact} {release.version}: the build has no {name} for {rule.member}")
            top = rule.member.rsplit("/", 1)[0] + "/" if "/" in rule.member else ""
            if top and top not in directories:
                directories.append(top)
            members.append((rule.member, binaries[name]))
    placed = {path for _, path in members}
    extra = sorted(name for name, path in binaries.items() if path not in placed)
    if extra and directories and not any(r.is_directory for r in release.installs):
        members += [(f"{directories[0]}{name}", binaries[name]) for name in extra]  # etcdutl beside etcd, as upstream
    return members, directories


def _place(source: Path, target: Path) -> None:
    """`target` becomes `source`'s bytes, atomically: a hard link where it can (same file system), else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
        os.chmod(tmp, 0o644)
    os.replace(tmp, target)


def _write_release(root: Path, release: Release, artifact: bytes | Path) -> None:
    """The artifact and its checksum file at upstream's paths under root (checksum written last)."""
    target = root / release.host / release.path
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(artifact, bytes):
        digest = hashlib.sha256(artifact).hexdigest()
        atomic_write(target, artifact, mode=0o644, durable=False)
    else:
        digest = sha256_file(artifact)
        _place(artifact, target)
    checksum = digest + "\n" if release.checksum_format == HEX else sha256sum_line(digest, release.checksum_entry)
    atomic_write(root / release.host / release.checksum_path, checksum.encode(), mode=0o644, durable=False)


def _pack(root: Path, release: Release, built: Path) -> None:
    """One release from the builder's output directory, in upstream's layout."""
    binaries = {p.name: p for p in sorted(built.iterdir()) if p.is_file() and p.name != "build.json"}
    if release.packing == TAR_GZ:
        members, directories = _archive_members(release, binaries)
        _write_release(root, release, _tar_gz(members, directories))
    else:
        name = release.installs[0].path.rsplit("/", 1)[-1]
        if name not in binaries:
            raise MirrorError(f"{release.artifact} {release.version}: the build has no {name}")
        _write_release(root, release, binaries[name])


def fetch_release(root: Path, release: Release, upstream: str | None) -> None:
    """Download one release from upstream (or a stand-in base URL) and verify it as the nodes do.

    Nothing lands in the mirror unless the artifact matches upstream's own checksum file.
    """
    entry = release.manifest_entry(upstream)
    with tempfile.TemporaryDirectory(prefix="mirror-fetch-") as tmp:
        artifact = Path(tmp) / release.file_name
        try:
            checksum_text = install_releases.fetch_text(entry["checksum_url"])
            expected = install_releases.expected_digest(checksum_text, entry)
            digest = install_releases.download(entry["url"], str(artifact))
        except (install_releases.Failure, install_releases.NotFound, OSError) as exc:
            raise MirrorError(f"{release.artifact} {release.version}: cannot fetch {entry['url']}: {exc}") from exc
        if digest != expected:
            raise MirrorError(f"{release.artifact} {release.version}: {entry['url']} has sha256 {digest}, "
                              f"its checksum file says {expected}")
        _place(artifact, root / release.host / release.path)
        atomic_write(root / release.host / release.checksum_path, checksum_text.encode(), mode=0o644, durable=False)


def _inputs_key(*parts: object) -> str:
    text = json.dumps([PACKER_REVISION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _default_builder(log: Log) -> Builder:
    from sandbox.release_builder import ReleaseBuilder
    return ReleaseBuilder(log=log)


def build_mirror(root: Path, log: Log = print, *, kubernetes_versions: tuple[str, ...] = (DEFAULT_KUBERNETES_VERSION,),
                 components: list[tuple[str, str]] | None = None, builder: Builder | None = None,
                 source: str | None = None, upstream: str | None = None) -> dict:
    """Fill (idempotently) the mirror under `root` with every release of the given Kubernetes lines.

    `source` is "build" (the default) or "fetch" (`$GROUNDUP_RELEASES`); fetching falls back to
    building when upstream (`upstream`, else `$GROUNDUP_RELEASE_UPSTREAM`, else upstream's hosts) fails.
    """
    started = time.monotonic()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    source = source or os.environ.get(SOURCE_ENV) or BUILD
    if source not in (BUILD, FETCH):
        raise MirrorError(f"{SOURCE_ENV}={source!r}: use {BUILD} or {FETCH}")
    upstream = upstream or os.environ.get(UPSTREAM_ENV) or None
    wanted = components or [c for v in kubernetes_versions for c in line_components(v)]
    stamps = _read_json(root / STAMP)
    index: dict[str, dict] = {}
    built, unchanged = [], []
    for component, version in dict.fromkeys(wanted):
        name = f"{component} {version}"
        releases = component_releases(component, version)
        files = [f for r in releases for f in (f"{r.host}/{r.path}", f"{r.host}/{r.checksum_path}")]
        entry = stamps.get(name) or {}
        if entry.get("packer") == PACKER_REVISION and all((root / f).is_file() for f in files):
            unchanged.append(name)
            note = entry.get("source", "")
        else:
            note = None
            if source == FETCH:
                try:
                    for release in releases:
                        fetch_release(root, release, upstream)
                    note = f"upstream's release, sha256 verified against its checksum file ({upstream or 'upstream'})"
                except MirrorError as exc:
                    log(f"mirror: {name}: {exc}; building it instead")
            if note is None:
                builder = builder or _default_builder(log)
                out = builder.build(component, version)
                for release in releases:
                    _pack(root, release, out)
                note = _build_note(out)
            stamps[name] = {"packer": PACKER_REVISION, "source": note}
            atomic_write(root / STAMP, json.dumps(stamps, indent=1, sort_keys=True).encode(), mode=0o644,
                         durable=False)
            built.append(name)
            log(f"mirror: {name}: {note}")
        for release in releases:
            index.setdefault(release.artifact, {})[release.version] = {
                "files": [f"{release.host}/{release.path}", f"{release.host}/{release.checksum_path}"],
                "source": note}
    index = _merge_index(root, index)
    atomic_write(root / MIRROR_INDEX, _index_bytes(index), mode=0o644, durable=False)
    return {**contents(root), "built": built, "unchanged": unchanged, "seconds": round(time.monotonic() - started, 2)}


def _build_note(out: Path) -> str:
    try:
        stamp = json.loads((out / "build.json").read_text())
    except (OSError, ValueError):
        return f"built by groundup's release builder ({out})"
    return f"built from {', '.join(dict.fromkeys(stamp.get('modules', [])))} with go{stamp.get('go')} by groundup's release builder"


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
    build.add_argument("--kubernetes", action="append", help="a Kubernetes release to hold with its components "
                       f"(repeatable; default {DEFAULT_KUBERNETES_VERSION})")
    run = sub.add_parser("serve", help="serve the mirror over HTTP (read-only)")
    run.add_argument("--root", type=Path, required=True)
    run.add_argument("--bind", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8080)
    show = sub.add_parser("contents", help="print what the mirror holds (JSON)")
    show.add_argument("--root", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            versions = tuple(args.kubernetes or (DEFAULT_KUBERNETES_VERSION,))
            print(json.dumps(build_mirror(args.root, log=_log_stderr, kubernetes_versions=versions), indent=1))
        elif args.command == "serve":
            serve(args.root, args.bind, args.port, log=_log_stderr)
        else:
            print(json.dumps(contents(args.root), indent=1))
    except (MirrorError, RuntimeError, ValueError) as exc:
        _log_stderr(f"mirror: {exc}")
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
