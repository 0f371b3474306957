"""A one-layer OCI image archive around a static busybox, for the smoke test's containers.

The smoke test imports it on every worker with `ctr image import` (no registry needed, on AWS or in
the sandbox) and runs `sleep`, `ip` and `ping` from it. Pure: bytes in, bytes out.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

IMAGE_NAME = "docker.io/groundup/smoke:1"
APPLETS = ("sh", "sleep", "ip", "ping", "wget", "httpd", "cat", "hostname")
BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")


class NoStaticBusybox(FileNotFoundError):
    """The runner has no static busybox to build the smoke image from."""


def find_busybox() -> Path:
    """A static busybox on the machine running the flows (Debian/Ubuntu package busybox-static)."""
    for candidate in BUSYBOX_PATHS:
        path = Path(candidate)
        if path.is_file() and _is_static(path):
            return path
    raise NoStaticBusybox(
        "the smoke test needs a static busybox on this machine to build its container image: "
        "install the Debian/Ubuntu package busybox-static (`make deps` does)"
    )


def _is_static(path: Path) -> bool:
    """An ELF without a PT_INTERP program header (no dynamic loader)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    phoff = int.from_bytes(data[32:40], "little")
    phentsize = int.from_bytes(data[54:56], "little")
    phnum = int.from_bytes(data[56:58], "little")
    for i in range(phnum):
        if int.from_bytes(data[phoff + i * phentsize: phoff + i * phentsize + 4], "little") == 3:
            return False
    return True


def _tar_bytes(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _info(name: str, *, kind: bytes = tarfile.REGTYPE, size: int = 0, mode: int = 0o755,
          link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.linkname, info.mtime = kind, size, mode, link, 0
    return info


def layer_tar(busybox: bytes) -> bytes:
    """The image's only layer: /bin/busybox and its applets as symlinks, /tmp."""
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = [
        (_info("bin", kind=tarfile.DIRTYPE), None),
        (_info("tmp", kind=tarfile.DIRTYPE, mode=0o1777), None),
        (_info("bin/busybox", size=len(busybox)), busybox),
    ]
    entries += [(_info(f"bin/{applet}", kind=tarfile.SYMTYPE, mode=0o777, link="busybox"), None)
                for applet in APPLETS]
    return _tar_bytes(entries)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image_archive(busybox: bytes, name: str = IMAGE_NAME) -> bytes:
    """An OCI image layout archive (oci-layout, index.json, blobs) that `ctr image import` accepts."""
    layer = layer_tar(busybox)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _digest(layer),
                    "size": len(layer)}],
    }, sort_keys=True).encode()
    index = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _digest(manifest),
                       "size": len(manifest), "platform": {"architecture": "amd64", "os": "linux"},
                       "annotations": {"io.containerd.image.name": name,
                                       "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}}],
    }, sort_keys=True).encode()
    blobs = [(blob, _digest(blob).split(":")[1]) for blob in (layer, config, manifest)]
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = [
        (_info("blobs", kind=tarfile.DIRTYPE), None), (_info("blobs/sha256", kind=tarfile.DIRTYPE), None)]
    entries += [(_info(f"blobs/sha256/{hexdigest}", size=len(blob), mode=0o644), blob) for blob, hexdigest in blobs]
    layout = b'{"imageLayoutVersion":"1.0.0"}'
    entries += [(_info("oci-layout", size=len(layout), mode=0o644), layout),
                (_info("index.json", size=len(index), mode=0o644), index)]
    return _tar_bytes(entries)
