"""Host keys from EC2 console output only (on AWS and in the sandbox), and their pins in the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from groundup import hostkeys
from groundup.hostkeys import (HostKeyPin, HostKeysUnavailable, load_pin, parse_console_host_keys,
                               pin_path, resolve_host_keys)
from sandbox.cloudinit import console_text

ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGrcUbw6DyjPN7lmQWFsI8sXylbXR5JtyQzc157lbAAL"
ECDSA = ("ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBFv4NKp2nHaXsRz9"
         "Kq3kS0hHTf1rLqM4CMuVWN0iV1yG0mTc4zK8m5Y0qaY3k3g6YQ9Ub9Vn1kCm0o2m9d8xk1Q=")
RSA = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDpXy0+q1"
OTHER_ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM0dEfbSxgcdZ0IF3hn4/wd8dI7ybvKU9NfO1dwsbQGz"

UBUNTU_CONSOLE = f"""[   10.512318] cloud-init[1021]: Cloud-init v. 24.4-0ubuntu1 running 'modules:config'\r
<14>Jan 15 10:00:01 ec2: \r
<14>Jan 15 10:00:01 ec2: #############################################################\r
<14>Jan 15 10:00:01 ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\r
<14>Jan 15 10:00:01 ec2: 256 SHA256:abc root@ip-10-240-0-10 (ECDSA)\r
<14>Jan 15 10:00:01 ec2: 256 SHA256:def root@ip-10-240-0-10 (ED25519)\r
<14>Jan 15 10:00:01 ec2: -----END SSH HOST KEY FINGERPRINTS-----\r
<14>Jan 15 10:00:01 ec2: #############################################################\r
-----BEGIN SSH HOST KEY KEYS-----\r
{ECDSA} root@ip-10-240-0-10\r
{ED} root@ip-10-240-0-10\r
-----END SSH HOST KEY KEYS-----\r
[   11.020100] cloud-init[1040]: Cloud-init v. 24.4 finished at Wed, 15 Jan 2025 10:00:02 +0000.\r
"""


class MemoryStore:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def read(self, relpath: str) -> bytes:
        try:
            return self.files[relpath]
        except KeyError:
            raise FileNotFoundError(relpath) from None

    def write(self, relpath: str, data: bytes, *, secret: bool = False) -> str:
        self.files[relpath] = data
        return relpath


def test_parses_the_keys_block_of_an_ubuntu_console_and_ignores_fingerprints() -> None:
    assert parse_console_host_keys(UBUNTU_CONSOLE) == [ECDSA, ED]


def test_keys_with_line_prefixes_are_found() -> None:
    output = "-----BEGIN SSH HOST KEY KEYS-----\n[  5.1] ci: " + ED + " root@x\n-----END SSH HOST KEY KEYS-----\n"
    assert parse_console_host_keys(output) == [ED]


def test_the_last_complete_block_wins_after_a_reboot() -> None:
    first = f"-----BEGIN SSH HOST KEY KEYS-----\n{OTHER_ED} root@a\n-----END SSH HOST KEY KEYS-----\n"
    second = f"-----BEGIN SSH HOST KEY KEYS-----\n{ED} root@a\n{RSA} root@a\n-----END SSH HOST KEY KEYS-----\n"
    assert parse_console_host_keys(first + "reboot\n" + second) == [ED, RSA]


def test_a_block_cut_off_before_its_end_is_not_used() -> None:
    complete = f"-----BEGIN SSH HOST KEY KEYS-----\n{OTHER_ED}\n-----END SSH HOST KEY KEYS-----\n"
    truncated = f"-----BEGIN SSH HOST KEY KEYS-----\n{ED}\n"
    assert parse_console_host_keys(truncated) == []
    assert parse_console_host_keys(complete + truncated) == [OTHER_ED]


def test_console_without_a_block_gives_no_keys() -> None:
    assert parse_console_host_keys("Linux version 2.6.16-xenU\nBIOS-provided physical RAM map:\n") == []
    assert parse_console_host_keys("") == []


def test_the_sandbox_console_is_parsed_like_a_real_one() -> None:
    assert parse_console_host_keys(console_text("ip-10-240-0-10", [ED])) == [ED]


def test_keys_read_from_the_console_are_pinned_and_then_used_without_reading_again() -> None:
    store = MemoryStore()
    calls = []

    def console(instance_id: str) -> str:
        calls.append(instance_id)
        return UBUNTU_CONSOLE

    pin = resolve_host_keys(store, "master-0", "10.240.0.10", "i-1", console, sleep=lambda s: None)
    assert pin == HostKeyPin("master-0", "i-1", (ECDSA, ED), "console-output")
    assert load_pin(store, "master-0") == pin and pin_path("master-0") in store.files
    again = resolve_host_keys(store, "master-0", "10.240.0.10", "i-1", console, sleep=lambda s: None)
    assert again == pin and calls == ["i-1"]


def test_a_pin_from_a_replaced_instance_is_read_again() -> None:
    store = MemoryStore()
    store.write(pin_path("worker-0"), HostKeyPin("worker-0", "i-old", (OTHER_ED,), "console-output").to_json())
    pin = resolve_host_keys(store, "worker-0", "10.240.0.20", "i-new", lambda i: UBUNTU_CONSOLE,
                            sleep=lambda s: None)
    assert pin.instance_id == "i-new" and pin.keys == (ECDSA, ED)


def test_console_output_is_polled_until_cloud_init_prints_the_keys() -> None:
    outputs = iter(["", "Linux version 6.8\n", UBUNTU_CONSOLE])
    sleeps = []
    pin = resolve_host_keys(MemoryStore(), "worker-1", "10.240.0.21", "i-2", lambda i: next(outputs),
                            sleep=sleeps.append)
    assert pin.keys == (ECDSA, ED) and sleeps == [1.0, 1.0]


def test_the_console_is_read_every_second_for_15_s_then_less_often() -> None:
    now = [0.0]
    sleeps = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    with pytest.raises(HostKeysUnavailable):
        resolve_host_keys(MemoryStore(), "worker-1", "10.240.0.21", "i-2", lambda i: "booting", timeout=60,
                          sleep=sleep, clock=lambda: now[0])
    assert sleeps[:15] == [1.0] * 15 and sleeps[15:18] == [2.0, 4.0, 8.0] and set(sleeps[18:]) == {10.0}


def test_a_sandbox_known_hosts_file_is_never_a_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "known_hosts").write_text(f"10.240.0.21 {ED}\n")
    monkeypatch.setenv("GROUNDUP_SANDBOX_STATE", str(tmp_path))
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(HostKeysUnavailable):
        resolve_host_keys(MemoryStore(), "worker-1", "10.240.0.21", "i-2", lambda i: "no keys here", timeout=5,
                          sleep=sleep, clock=lambda: now[0])
    assert not hasattr(hostkeys, "sandbox_host_keys")


def test_a_relaunched_instance_meets_its_new_keys_through_the_console_not_a_changed_key_error() -> None:
    store = MemoryStore()
    consoles = {"i-old": console_text("ip-10-240-0-20", [OTHER_ED]), "i-new": console_text("ip-10-240-0-20", [ED])}
    first = resolve_host_keys(store, "worker-0", "10.240.0.20", "i-old", consoles.get, sleep=lambda s: None)
    second = resolve_host_keys(store, "worker-0", "10.240.0.20", "i-new", consoles.get, sleep=lambda s: None)
    assert first.keys == (OTHER_ED,) and second.keys == (ED,)
    assert load_pin(store, "worker-0") == second and second.source == "console-output"


def test_no_keys_in_the_console_fails_with_what_to_do_after_the_timeout() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(HostKeysUnavailable, match="no host keys for worker-2.*Wait for cloud-init") as failed:
        resolve_host_keys(MemoryStore(), "worker-2", "10.240.0.22", "i-3", lambda i: "", timeout=30,
                          sleep=sleep, clock=lambda: now[0])
    assert 20 <= now[0] <= 30
    assert "the console output is empty" in str(failed.value)


def test_no_keys_in_the_console_names_the_last_lines_it_printed() -> None:
    console = ("[    0.000000] Linux version 6.8.0\n" + "\n".join(f"boot line {i}" for i in range(50))
               + "\n\x1b[0;1;31mcloud-init[812]: Failed to run module ssh\n" + "x" * 5000 + "\n\n")
    with pytest.raises(HostKeysUnavailable) as failed:
        resolve_host_keys(MemoryStore(), "worker-2", "10.240.0.22", "i-3", lambda i: console, timeout=3,
                          sleep=lambda s: None, clock=iter(range(100)).__next__)
    message = str(failed.value)
    assert "the console output ends: boot line 49 | [0;1;31mcloud-init[812]: Failed to run module ssh | xxx" in message
    assert "x" * 201 not in message and "boot line 48" not in message and "\x1b" not in message
