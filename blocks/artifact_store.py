"""Where the build keeps what it generates: one interface over any Prefect writable filesystem block.

Layout under the block: `<cluster>/pki/...`, `<cluster>/kubeconfigs/...`,
`<cluster>/encryption-config.yaml`, `<cluster>/ssh/...`. Everything that holds key material is
encrypted at rest with a passphrase kept in a Prefect Secret block: private keys as PKCS#8
(readable by openssl with the passphrase), other secret files whole (scrypt + Fernet).
"""

from __future__ import annotations

import base64
import os
import secrets
import tempfile
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from prefect.filesystems import LocalFileSystem, WritableFileSystem

STORE_BLOCK = "groundup-artifacts"
PASSPHRASE_BLOCK = "groundup-artifacts-passphrase"
_MAGIC = b"groundup-encrypted-v1\n"
_SALT_BYTES = 16


class ArtifactError(RuntimeError):
    """An artifact is missing, corrupt, or cannot be decrypted."""


@lru_cache(maxsize=64)
def _fernet(passphrase: bytes, salt: bytes) -> Fernet:
    key = Scrypt(salt=salt, length=32, n=2**14, r=8, p=1).derive(passphrase)
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt(data: bytes, passphrase: bytes) -> bytes:
    salt = secrets.token_bytes(_SALT_BYTES)
    return _MAGIC + salt + _fernet(passphrase, salt).encrypt(data)


def decrypt(blob: bytes, passphrase: bytes) -> bytes:
    if not blob.startswith(_MAGIC):
        raise ArtifactError("not a groundup-encrypted artifact")
    salt = blob[len(_MAGIC) : len(_MAGIC) + _SALT_BYTES]
    try:
        return _fernet(passphrase, salt).decrypt(blob[len(_MAGIC) + _SALT_BYTES :])
    except InvalidToken:
        raise ArtifactError("cannot decrypt artifact: wrong passphrase or corrupt file") from None


class ArtifactStore:
    """A cluster's artifacts in a Prefect filesystem block, secrets encrypted."""

    def __init__(self, filesystem: WritableFileSystem, cluster: str, passphrase: bytes) -> None:
        self.filesystem = filesystem
        self.cluster = cluster
        self._passphrase = passphrase

    def path(self, relpath: str) -> str:
        """The storage path of an artifact: `<cluster>/<relpath>`."""
        return f"{self.cluster}/{relpath.lstrip('/')}"

    def exists(self, relpath: str) -> bool:
        try:
            self._read(self.path(relpath))
        except (FileNotFoundError, ValueError, ArtifactError):
            return False
        except Exception as exc:  # object stores raise their own not-found types
            if "NoSuchKey" in repr(exc) or "Not Found" in str(exc) or "404" in str(exc):
                return False
            raise
        return True

    def write(self, relpath: str, data: bytes, *, secret: bool = False) -> str:
        """Store bytes atomically (encrypted whole when `secret`); returns the storage path."""
        blob = encrypt(data, self._passphrase) if secret else data
        path = self.path(relpath)
        self._write(path, blob)
        return path

    def read(self, relpath: str) -> bytes:
        """The bytes of an artifact, decrypted if it was stored as a secret."""
        blob = self._read(self.path(relpath))
        return decrypt(blob, self._passphrase) if blob.startswith(_MAGIC) else blob

    def write_private_key(self, relpath: str, key) -> str:
        """Store a private key as passphrase-encrypted PKCS#8 PEM."""
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._passphrase),
        )
        path = self.path(relpath)
        self._write(path, pem)
        return path

    def read_private_key(self, relpath: str):
        """Load a stored private key (a cryptography key object)."""
        pem = self._read(self.path(relpath))
        try:
            return serialization.load_pem_private_key(pem, password=self._passphrase)
        except (ValueError, TypeError) as exc:
            raise ArtifactError(f"{relpath}: cannot load private key ({type(exc).__name__})") from None

    def _read(self, path: str) -> bytes:
        return _run(self.filesystem.read_path(path))

    def _write(self, path: str, blob: bytes) -> None:
        if isinstance(self.filesystem, LocalFileSystem):
            _atomic_local_write(Path(self.filesystem._resolve_path(path)), blob)
        else:
            _run(self.filesystem.write_path(path, blob))


def _atomic_local_write(target: Path, blob: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _run(result):
    """Prefect filesystem methods are sync-compatible: awaitable in async context, plain otherwise."""
    if hasattr(result, "__await__"):
        import asyncio

        return asyncio.run(_await(result))
    return result


async def _await(awaitable):
    return await awaitable


def default_basepath() -> Path:
    return Path(os.environ.get("GROUNDUP_ARTIFACTS", Path.home() / ".groundup" / "artifacts"))


def load_passphrase() -> bytes:
    """The store passphrase from its Prefect Secret block, created with 32 random bytes on first use."""
    from prefect.blocks.system import Secret

    try:
        return Secret.load(PASSPHRASE_BLOCK).get().encode()
    except ValueError:
        value = secrets.token_urlsafe(32)
        Secret(value=value).save(PASSPHRASE_BLOCK, overwrite=False)
        return Secret.load(PASSPHRASE_BLOCK).get().encode()


def load_filesystem() -> WritableFileSystem:
    """The filesystem block named `groundup-artifacts`, or a LocalFileSystem under ~/.groundup."""
    from prefect.blocks.core import Block

    try:
        return Block.load(STORE_BLOCK)
    except ValueError:
        return LocalFileSystem(basepath=str(default_basepath()))


def get_store(cluster: str) -> ArtifactStore:
    """The artifact store of a cluster, as configured in Prefect."""
    return ArtifactStore(load_filesystem(), cluster, load_passphrase())
