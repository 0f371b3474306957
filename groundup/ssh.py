"""SSH to the nodes: pinned host keys, waiting out the boot, atomic idempotent file uploads.

One paramiko connection per node per task (a shared SFTPClient across threads deadlocks). Host
keys are verified against pinned keys and never added: an unknown or changed key fails with a
message that says what happened. Nothing here imports Prefect.
"""

from __future__ import annotations

import base64
import hashlib
import io
import posixpath
import secrets
import shlex
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import paramiko

RETRYABLE_CONNECT = (
    ConnectionRefusedError,
    ConnectionResetError,
    ConnectionAbortedError,
    socket.timeout,
    TimeoutError,
    EOFError,
    paramiko.ssh_exception.NoValidConnectionsError,
    paramiko.AuthenticationException,
    paramiko.SSHException,
    OSError,
)
"""While a node boots: sshd not listening, banner not sent, cloud-init not yet installed the key."""
TEMP_MARK = ".groundup-tmp-"


class HostKeyError(paramiko.SSHException):
    """The node's host key is not the pinned one (or nothing is pinned): never retried."""


class UnknownHostKey(HostKeyError):
    pass


class HostKeyChanged(HostKeyError):
    pass


def fingerprint(key: paramiko.PKey | str) -> str:
    """OpenSSH-style SHA256 fingerprint of a key object or a `type base64` line."""
    blob = key.asbytes() if isinstance(key, paramiko.PKey) else base64.b64decode(key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def parse_public_key(line: str) -> paramiko.PKey:
    """A paramiko key from an OpenSSH public key line (`ssh-ed25519 AAAA... [comment]`)."""
    kind, data = line.split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(data))


class PinnedHostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Reject every key paramiko does not already know: nothing is ever auto-added."""

    def __init__(self, node: str) -> None:
        self.node = node

    def missing_host_key(self, client, hostname, key) -> None:
        raise UnknownHostKey(
            f"{self.node} ({hostname}) presented a {key.get_name()} host key "
            f"{fingerprint(key)} and no key of that type is pinned for it. Host keys come from the "
            "instance's console output (AWS) or the sandbox's record; refusing to connect."
        )


@dataclass(frozen=True)
class Target:
    """Where and how to reach one node. Plain data, safe to log."""

    name: str
    address: str
    user: str = "root"
    port: int = 22
    host_keys: tuple[str, ...] = ()

    @property
    def known_hosts_name(self) -> str:
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"


def load_private_key(pem: bytes | str, password: bytes | None = None) -> paramiko.PKey:
    """A paramiko key from PEM (PKCS#8, traditional or OpenSSH; RSA, ECDSA or Ed25519)."""
    text = pem.decode() if isinstance(pem, bytes) else pem
    for cls in (paramiko.RSAKey, paramiko.ECDSAKey, paramiko.Ed25519Key):
        try:
            return cls.from_private_key(io.StringIO(text), password=password)
        except (paramiko.SSHException, ValueError, TypeError):
            continue
    raise ValueError("not a private key paramiko can use (RSA, ECDSA or Ed25519 PEM)")


def pkey_from_cryptography(key) -> paramiko.PKey:
    """A paramiko key from a cryptography private key object (RSA and ECDSA wrapped as they are: going
    through PEM had paramiko check the RSA key again, ~35 ms of CPU)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, rsa.RSAPrivateKey):
        return paramiko.RSAKey(key=key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return paramiko.ECDSAKey(vals=(key, key.public_key()))
    try:
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    except ValueError:  # Ed25519 has no traditional format
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    return load_private_key(pem)


def low_latency_socket(address: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection with Nagle's algorithm off, as OpenSSH's client has it. With it on, each command's
    small channel request waits for the node's delayed ACK: ~45 ms per command instead of ~3 ms."""
    sock = socket.create_connection((address, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def connect(target: Target, pkey: paramiko.PKey, *, boot_timeout: float = 120.0,
            connect_timeout: float = 10.0, sleep: Callable[[float], None] = time.sleep,
            clock: Callable[[], float] = time.monotonic) -> paramiko.SSHClient:
    """Connect with the pinned host keys, retrying with bounded backoff while the node boots.

    Refused, reset, timed-out, banner and authentication errors are retried until `boot_timeout`
    has passed; host-key errors fail at once.
    """
    if not target.host_keys:
        raise UnknownHostKey(f"no host key is pinned for {target.name} ({target.address}); refusing to connect")
    deadline = clock() + boot_timeout
    delay = 0.25
    attempt = 0
    while True:
        attempt += 1
        client = paramiko.SSHClient()
        keys = client.get_host_keys()
        for line in target.host_keys:
            key = parse_public_key(line)
            keys.add(target.known_hosts_name, key.get_name(), key)
        client.set_missing_host_key_policy(PinnedHostKeyPolicy(target.name))
        sock = None
        try:
            sock = low_latency_socket(target.address, target.port, connect_timeout)
            client.connect(
                target.address, port=target.port, username=target.user, pkey=pkey, sock=sock,
                timeout=connect_timeout, banner_timeout=connect_timeout, auth_timeout=connect_timeout,
                allow_agent=False, look_for_keys=False,
            )
            return client
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyChanged(
                f"host key of {target.name} ({target.address}) changed: pinned "
                f"{', '.join(fingerprint(k) for k in target.host_keys)}, presented {exc.key.get_name()} "
                f"{fingerprint(exc.key)}. Refusing to connect. If the instance was replaced, "
                f"delete its pin (ssh/host-keys/{target.name} in the artifact store) so it is read again "
                "from the console output; otherwise treat this as an attack."
            ) from None
        except HostKeyError:
            client.close()
            raise
        except RETRYABLE_CONNECT as exc:
            client.close()
            if sock is not None:
                sock.close()
            if clock() + delay > deadline:
                raise ConnectionError(
                    f"cannot reach {target.name} at {target.address}:{target.port} as {target.user} after "
                    f"{attempt} attempts in {boot_timeout:.0f} s: {type(exc).__name__}: {exc}"
                ) from None
            sleep(delay)
            delay = min(delay * 2, 5.0)


@dataclass(frozen=True)
class RemoteFile:
    """One file to place on a node."""

    path: str
    data: bytes = field(repr=False)
    mode: int = 0o644
    uid: int = 0
    gid: int = 0

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class SyncReport:
    """What a sync did per file: uploaded, mode/owner fixed, or skipped (already identical)."""

    uploaded: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    reconnects: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.uploaded or self.fixed)


class NodeSession:
    """One connection to one node: commands and SFTP, with `sudo` when the login is not root."""

    def __init__(self, client: paramiko.SSHClient, target: Target) -> None:
        self.client = client
        self.target = target
        self._sftp: paramiko.SFTPClient | None = None

    @property
    def sudo(self) -> str:
        return "" if self.target.user == "root" else "sudo -n "

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
        return self._sftp

    def run(self, command: str, timeout: float = 60.0, check: bool = True) -> tuple[int, str, str]:
        """Run a shell command; raise with its stderr when it fails and `check`."""
        _, stdout, stderr = self.client.exec_command(command, timeout=timeout)
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        code = stdout.channel.recv_exit_status()
        if check and code != 0:
            raise RuntimeError(f"{self.target.name}: `{command.split()[0]} ...` exited {code}: {err.strip()[:500]}")
        return code, out, err

    def remote_state(self, paths: Iterable[str]) -> dict[str, tuple[int, int, int, str]]:
        """Mode, uid, gid and sha256 of every path that exists as a regular file."""
        quoted = " ".join(shlex.quote(p) for p in paths)
        script = (f'for f in {quoted}; do [ -f "$f" ] || continue; '
                  'printf "%s %s\\n" "$(stat -c %a:%u:%g "$f")" "$(sha256sum "$f")"; done')
        _, out, _ = self.run(f"{self.sudo}sh -c {shlex.quote(script)}")
        state = {}
        for line in out.splitlines():
            meta, digest, path = line.split(None, 2)
            mode, uid, gid = meta.split(":")
            state[path.strip()] = (int(mode, 8), int(uid), int(gid), digest)
        return state

    def sync(self, files: list[RemoteFile]) -> SyncReport:
        """Place every file atomically; skip those whose checksum, mode and owner already match."""
        report = SyncReport()
        dirs = sorted({posixpath.dirname(f.path) for f in files})
        stale = " ".join(shlex.quote(d) + f"/{TEMP_MARK}*" for d in dirs)
        self.run(f"{self.sudo}sh -c {shlex.quote(f'mkdir -p {_q(dirs)} && rm -f {stale}')}")
        current = self.remote_state(f.path for f in files)
        for f in files:
            have = current.get(f.path)
            if have is not None and have[3] == f.sha256:
                if have[:3] == (f.mode, f.uid, f.gid):
                    report.skipped.append(f.path)
                else:
                    self.run(f"{self.sudo}chown {f.uid}:{f.gid} {shlex.quote(f.path)} && "
                             f"{self.sudo}chmod {f.mode:o} {shlex.quote(f.path)}")
                    report.fixed.append(f.path)
                continue
            self.put(f)
            report.uploaded.append(f.path)
        return report

    def put(self, f: RemoteFile) -> None:
        """Upload to a temporary file beside the target, check it, then rename over the target."""
        directory, name = posixpath.split(f.path)
        tmp = posixpath.join(directory, f"{TEMP_MARK}{name}.{secrets.token_hex(4)}")
        if self.sudo:
            staged = f"/tmp/{TEMP_MARK}{name}.{secrets.token_hex(4)}"
            self._write(staged, f.data, 0o600)
            self.run(f"sudo -n install -m {f.mode:o} -o {f.uid} -g {f.gid} {shlex.quote(staged)} {shlex.quote(tmp)}"
                     f" && rm -f {shlex.quote(staged)} && sudo -n mv -f {shlex.quote(tmp)} {shlex.quote(f.path)}")
            return
        try:
            self._write(tmp, f.data, f.mode)
            self.sftp.chown(tmp, f.uid, f.gid)
            self.sftp.posix_rename(tmp, f.path)
        except BaseException:
            try:
                self.sftp.remove(tmp)
            except Exception:
                pass  # the connection is gone: the next sync removes the temporary file
            raise

    def _write(self, path: str, data: bytes, mode: int) -> None:
        with self.sftp.open(path, "wb") as handle:
            handle.chmod(mode)
            handle.set_pipelined(True)
            handle.write(data)
        size = self.sftp.stat(path).st_size
        if size != len(data):
            raise OSError(f"{self.target.name}: {path} has {size} bytes after upload, expected {len(data)}")

    def close(self) -> None:
        """Close the connection; closing one that already dropped is not an error."""
        try:
            if self._sftp is not None:
                self._sftp.close()
        except (EOFError, OSError, paramiko.SSHException):
            pass
        finally:
            self.client.close()


def _q(items: Iterable[str]) -> str:
    return " ".join(shlex.quote(i) for i in items)


def sync_files(target: Target, pkey: paramiko.PKey, files: list[RemoteFile], *, attempts: int = 3,
               boot_timeout: float = 120.0, sleep: Callable[[float], None] = time.sleep) -> SyncReport:
    """Connect and sync, reconnecting when the connection drops mid-way (bounded attempts).

    Files already placed by an earlier attempt are skipped by their checksum; a temporary file
    left by a dropped transfer is removed by the next attempt.
    """
    merged = SyncReport()
    for attempt in range(1, attempts + 1):
        session = NodeSession(connect(target, pkey, boot_timeout=boot_timeout, sleep=sleep), target)
        try:
            report = session.sync(files)
            merged.uploaded += [p for p in report.uploaded if p not in merged.uploaded]
            merged.fixed += [p for p in report.fixed if p not in merged.fixed]
            merged.skipped = [p for p in report.skipped if p not in merged.uploaded + merged.fixed]
            return merged
        except HostKeyError:
            raise
        except (EOFError, OSError, paramiko.SSHException) as exc:
            if attempt == attempts:
                raise ConnectionError(
                    f"{target.name}: connection lost during upload {attempts} times; last: {type(exc).__name__}: {exc}"
                ) from None
            merged.reconnects.append(f"connection lost during upload (attempt {attempt} of {attempts}): "
                                     f"{type(exc).__name__}: {exc}"[:300])
            sleep(min(0.5 * 2 ** attempt, 5.0))
        finally:
            session.close()
    raise AssertionError("unreachable")
