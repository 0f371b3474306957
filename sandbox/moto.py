"""The sandbox's AWS: a moto server on loopback with current Ubuntu AMIs under Canonical's owner id."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from groundup.spec import CANONICAL_OWNER_ID, UBUNTU_LTS

AMI_DATE = "20250115"


def ubuntu_images() -> list[dict]:
    """Canonical-owned images in the shape moto's MOTO_AMIS_PATH expects: every LTS plus xenial."""
    images = []
    releases = {**UBUNTU_LTS, "xenial": "16.04"}
    for codename, version in sorted(releases.items()):
        for date in (AMI_DATE, "20241201"):
            images.append(
                {
                    "ami_id": "ami-" + hashlib.sha256(f"{codename}-{date}".encode()).hexdigest()[:17],
                    "state": "available",
                    "public": True,
                    "owner_id": CANONICAL_OWNER_ID,
                    "image_location": f"amazon/ubuntu/images/hvm-ssd-gp3/ubuntu-{codename}-{version}-amd64-server-{date}",
                    "sriov": "simple",
                    "root_device_type": "ebs",
                    "root_device_name": "/dev/sda1",
                    "description": f"Canonical, Ubuntu, {version} LTS, amd64 {codename} image build on {date}",
                    "image_type": "machine",
                    "platform": "Linux/UNIX",
                    "architecture": "x86_64",
                    "name": f"ubuntu/images/hvm-ssd-gp3/ubuntu-{codename}-{version}-amd64-server-{date}",
                    "virtualization_type": "hvm",
                    "hypervisor": "xen",
                }
            )
    return images


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class MotoServer:
    """A running moto server process."""

    host: str
    port: int
    process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        """Forget every resource (the AMIs are loaded again)."""
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=10).read()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def moto_environment(state_dir: Path) -> dict[str, str]:
    """Environment for the server: our AMIs, AMI and key-pair validation on."""
    state_dir.mkdir(parents=True, exist_ok=True)
    amis = state_dir / "amis.json"
    amis.write_text(json.dumps(ubuntu_images(), indent=1))
    return {
        **os.environ,
        "MOTO_AMIS_PATH": str(amis),
        "MOTO_ENABLE_AMI_VALIDATION": "true",
        "MOTO_ENABLE_KEYPAIR_VALIDATION": "true",
    }


def start_moto_server(state_dir: Path, host: str = "127.0.0.1", port: int | None = None,
                      log: Path | None = None, timeout: float = 30.0,
                      console_dir: Path | None = None, forget_terminated_after: float | None = None) -> MotoServer:
    """Start `moto_server` on loopback and wait until it answers. With `console_dir`, the sandbox's moto
    (sandbox.moto_console): EC2 console output comes from the files the sandbox's cloud-init writes
    there, and an instance terminated `forget_terminated_after` seconds ago (default: an hour, as EC2)
    is forgotten."""
    if not host.startswith("127."):
        raise ValueError("the moto server listens on loopback only")
    port = port or free_port(host)
    if console_dir is None:
        command = [str(Path(sys.executable).with_name("moto_server"))]
    else:
        console_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "sandbox.moto_console", "--console-dir", str(console_dir)]
        if forget_terminated_after is not None:
            command += ["--forget-terminated-after", str(forget_terminated_after)]
    out = open(log, "ab") if log else subprocess.DEVNULL
    process = subprocess.Popen(
        [*command, "-H", host, "-p", str(port)],
        env=moto_environment(state_dir),
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = MotoServer(host, port, process)
    wait_for_moto(server.endpoint, timeout, process)
    return server


def wait_for_moto(endpoint: str, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).read()
            return
        except OSError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {process.returncode}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"moto server at {endpoint} did not answer in {timeout:.0f} s") from None
            time.sleep(0.2)
