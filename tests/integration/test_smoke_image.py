"""The smoke image: the spec's containerd imports it and its runc runs busybox from it (the releases the
release builder made: `sandbox up` builds them)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from groundup.oci import IMAGE_NAME, find_busybox, image_archive
from groundup.spec import ClusterSpec
from sandbox.release_builder import cached_build

SPEC = ClusterSpec()
CONTAINERD = cached_build("containerd", SPEC.containerd_version)
RUNC = cached_build("runc", SPEC.runc_version)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or CONTAINERD is None or RUNC is None,
    reason=f"needs root and containerd {SPEC.containerd_version} and runc {SPEC.runc_version} built "
           "(groundup sandbox up, or python -m sandbox.release_builder build containerd ... runc ...)",
)


@pytest.fixture
def containerd(tmp_path: Path):
    """A private containerd daemon (own root, state and socket), stopped and unmounted after."""
    socket = tmp_path / "containerd.sock"
    config = tmp_path / "config.toml"
    config.write_text(f'version = 3\nroot = "{tmp_path}/root"\nstate = "{tmp_path}/state"\n'
                      f'[grpc]\n  address = "{socket}"\n')
    log = open(tmp_path / "containerd.log", "wb")
    env = {**os.environ, "PATH": f"{CONTAINERD}:{RUNC}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    daemon = subprocess.Popen([str(CONTAINERD / "containerd"), "--config", str(config)], stdout=log,
                              stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 20
    while not socket.exists():
        assert time.monotonic() < deadline, (tmp_path / "containerd.log").read_text()
        time.sleep(0.1)
    yield socket
    daemon.terminate()
    daemon.wait(timeout=20)
    log.close()
    with open("/proc/self/mountinfo") as handle:
        mounts = [line.split()[4] for line in handle if str(tmp_path) in line.split()[4]]
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


def test_containerd_imports_the_archive_and_runs_busybox(containerd: Path, tmp_path: Path):
    archive = tmp_path / "smoke.tar"
    archive.write_bytes(image_archive(find_busybox().read_bytes()))
    ctr = [str(CONTAINERD / "ctr"), "-a", str(containerd), "-n", "groundup-smoke-test"]
    subprocess.run([*ctr, "image", "import", str(archive)], check=True, capture_output=True)
    listed = subprocess.run([*ctr, "image", "ls", "-q"], check=True, capture_output=True, text=True).stdout
    assert IMAGE_NAME in listed.split()
    ran = subprocess.run([*ctr, "run", "--rm", IMAGE_NAME, "smoke-echo", "/bin/sh", "-c", "echo hello; ls /bin"],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[0] == "hello"
    assert {"ping", "ip", "sleep", "busybox"} <= set(ran.stdout.split())


def test_the_archive_is_the_same_bytes_every_time():
    busybox = find_busybox().read_bytes()
    assert image_archive(busybox) == image_archive(busybox)
