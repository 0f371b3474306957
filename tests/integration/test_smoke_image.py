"""The smoke image archive. It is never run on this machine: `ctr run` on the host would put its container in
the host's cgroup v1 controller hierarchies, which belong to the machine's own process manager. containerd
importing it and runc running busybox from it are checked where the product runs them, on the sandbox's
workers (the smoke test's "containerd on every worker runs a container" row, tests/e2e)."""

from __future__ import annotations

import io
import json
import tarfile

from groundup.oci import IMAGE_NAME, find_busybox, image_archive


def test_the_archive_is_the_same_bytes_every_time():
    busybox = find_busybox().read_bytes()
    assert image_archive(busybox) == image_archive(busybox)


def test_the_archive_names_the_smoke_image_and_carries_busybox():
    archive = tarfile.open(fileobj=io.BytesIO(image_archive(find_busybox().read_bytes())))
    names = archive.getnames()
    assert "manifest.json" in names or "index.json" in names
    listed = json.dumps([json.load(archive.extractfile(n)) for n in ("manifest.json", "index.json") if n in names])
    assert IMAGE_NAME.split(":")[0] in listed
