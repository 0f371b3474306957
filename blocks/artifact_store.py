"""Where the build keeps what it generates: one interface over any Prefect writable filesystem block.

Layout under the block: `<cluster>/pki/...`, `<cluster>/kubeconfigs/...`,
`<cluster>/encryption-config.yaml`, `<cluster>/ssh/...`. Everything that holds key material is
encrypted at rest with a passphrase kept in a Prefect Secret block: private keys as PKCS#8
(readable by openssl with the passphrase), other secret files whole (scrypt + Fernet).

Writes are atomic: on a LocalFileSystem through a temporary file and a rename, on S3 because a
PUT creates the object whole or not at all. Point the store at S3 with `blocks/setup.py`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from prefect.filesystems import LocalFileSystem, WritableFileSystem

from groundup.files import atomic_write

STORE_BLOCK = "groundup-artifacts"
PASSPHRASE_BLOCK = "groundup-artifacts-passphrase"
FILESYSTEM_BLOCK_TYPES = ("s3-bucket", "local-file-system", "remote-file-system", "smb")
"""Block types `load_filesystem` looks for under the name `groundup-artifacts`, in this order."""
_MAGIC = b"groundup-encrypted-v1\n"
_SALT_BYTES = 16
_CLUSTER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")


class ArtifactError(RuntimeError):
    """An artifact is missing, corrupt, or cannot be decrypted."""


class ArtifactNotFound(ArtifactError, FileNotFoundError):
    """No artifact at that path."""


@lru_cache(maxsize=64)
def _fernet(passphrase: bytes, salt: bytes) -> Fernet:
    key = Scrypt(salt=salt, length=32, n=2**14, r=8, p=1).derive(passphrase)
    return Fernet(base64.urlsafe_b64encode(key))


_PROCESS_SALT = secrets.token_bytes(_SALT_BYTES)


def encrypt(data: bytes, passphrase: bytes) -> bytes:
    """Encrypt whole: magic line, salt, Fernet token (random IV, HMAC) under an scrypt-derived key.

    The salt is random per process, so scrypt runs once per process and passphrase, not per file.
    """
    return _MAGIC + _PROCESS_SALT + _fernet(passphrase, _PROCESS_SALT).encrypt(data)


def decrypt(blob: bytes, passphrase: bytes) -> bytes:
    if not blob.startswith(_MAGIC):
        raise ArtifactError("not a groundup-encrypted artifact")
    salt = blob[len(_MAGIC) : len(_MAGIC) + _SALT_BYTES]
    try:
        return _fernet(passphrase, salt).decrypt(blob[len(_MAGIC) + _SALT_BYTES :])
    except InvalidToken:
        raise ArtifactError(
            f"cannot decrypt artifact: wrong passphrase (Prefect Secret block {PASSPHRASE_BLOCK!r}) or corrupt file"
        ) from None


def is_encrypted(blob: bytes) -> bool:
    return blob.startswith(_MAGIC)


class ArtifactStore:
    """A cluster's artifacts in a Prefect filesystem block, secrets encrypted."""

    def __init__(self, filesystem: WritableFileSystem, cluster: str, passphrase: bytes) -> None:
        if not _CLUSTER.match(cluster):
            raise ValueError(f"cluster name {cluster!r}: use letters, digits, '.', '_' and '-'")
        if not passphrase:
            raise ValueError("the artifact store needs a non-empty passphrase")
        self.filesystem = filesystem
        self.cluster = cluster
        self._passphrase = passphrase

    def __repr__(self) -> str:
        return f"ArtifactStore({type(self.filesystem).__name__}, cluster={self.cluster!r})"

    def path(self, relpath: str) -> str:
        """The storage path of an artifact: `<cluster>/<relpath>`."""
        parts = relpath.lstrip("/").split("/")
        if any(p in ("", ".", "..") for p in parts) or "\\" in relpath:
            raise ValueError(f"{relpath!r}: artifact paths are relative, without '.' or '..'")
        return "/".join((self.cluster, *parts))

    def exists(self, relpath: str) -> bool:
        try:
            self._read(self.path(relpath))
        except ArtifactNotFound:
            return False
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
        return decrypt(blob, self._passphrase) if is_encrypted(blob) else blob

    def write_private_key(self, relpath: str, key: Any) -> str:
        """Store a private key as passphrase-encrypted PKCS#8 PEM."""
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._passphrase),
        )
        path = self.path(relpath)
        self._write(path, pem)
        return path

    def read_private_key(self, relpath: str) -> Any:
        """Load a stored private key (a cryptography key object)."""
        pem = self._read(self.path(relpath))
        if b"-----BEGIN ENCRYPTED PRIVATE KEY-----" not in pem:
            raise ArtifactError(f"{relpath}: not a passphrase-encrypted PKCS#8 key; refusing a plaintext key")
        try:
            # Our own keys, decrypted with our passphrase: skip OpenSSL's slow RSA consistency check
            # (callers match every key against its certificate's public key).
            return serialization.load_pem_private_key(
                pem, password=self._passphrase, unsafe_skip_rsa_key_validation=True
            )
        except (ValueError, TypeError) as exc:
            raise ArtifactError(
                f"{relpath}: cannot load private key ({type(exc).__name__}): wrong passphrase in Prefect "
                f"Secret block {PASSPHRASE_BLOCK!r}, or a damaged file (delete it to have it reissued)"
            ) from None

    def _read(self, path: str) -> bytes:
        try:
            return _call(self.filesystem.read_path, path)
        except Exception as exc:
            if _is_not_found(exc):
                raise ArtifactNotFound(f"{path}: not stored") from None
            raise

    def _write(self, path: str, blob: bytes) -> None:
        if isinstance(self.filesystem, LocalFileSystem):
            _atomic_local_write(self.filesystem, path, blob)
        else:
            _call(self.filesystem.write_path, path, blob)


def _is_not_found(exc: Exception) -> bool:
    if isinstance(exc, FileNotFoundError):
        return True
    if isinstance(exc, ValueError) and "does not exist" in str(exc):
        return True
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        return code in ("404", "NoSuchKey", "NotFound")
    return False


def _atomic_local_write(filesystem: LocalFileSystem, path: str, blob: bytes) -> None:
    target = Path(filesystem._resolve_path(path))
    base = Path(filesystem._resolve_path(None))
    _private_dirs(base, target.parent)
    atomic_write(target, blob, mode=0o600)


def _private_dirs(base: Path, leaf: Path) -> None:
    """Create `base` with its missing parents, then `leaf` below it, every new directory owner-only (0700)."""
    private_dir(base)
    missing = [d for d in [leaf, *leaf.parents] if base in d.parents]
    for directory in reversed(missing):
        if not directory.exists():
            directory.mkdir(mode=0o700, exist_ok=True)


def private_dir(path: Path) -> Path:
    """`path` as a directory, created with every missing parent owner-only (0700); existing ones untouched."""
    missing = [d for d in [path, *path.parents] if not d.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
    if not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a directory")
    return path


def default_basepath() -> Path:
    return Path(os.environ.get("GROUNDUP_ARTIFACTS", Path.home() / ".groundup" / "artifacts"))


def existing_passphrase() -> bytes | None:
    """The store passphrase if its Prefect Secret block exists; never creates it."""
    from prefect.blocks.system import Secret

    try:
        return _secret_value(Secret.load(PASSPHRASE_BLOCK, _sync=True))
    except ValueError:
        return None


def load_passphrase() -> bytes:
    """The store passphrase from its Prefect Secret block, created with 32 random bytes on first use."""
    from prefect.blocks.system import Secret

    passphrase = existing_passphrase()
    if passphrase is not None:
        return passphrase
    try:
        Secret(value=secrets.token_urlsafe(32)).save(PASSPHRASE_BLOCK, overwrite=False, _sync=True)
    except ValueError:
        pass  # another task created it first: use theirs
    return _secret_value(Secret.load(PASSPHRASE_BLOCK, _sync=True))


def _secret_value(secret: Any) -> bytes:
    # Secret.get() would JSON-decode a passphrase that looks like a number.
    value = secret.value.get_secret_value()
    if not isinstance(value, str) or not value:
        raise ArtifactError(f"Prefect Secret block {PASSPHRASE_BLOCK!r} must hold a non-empty string")
    return value.encode()


def load_filesystem() -> WritableFileSystem:
    """The filesystem block named `groundup-artifacts`, or a LocalFileSystem at $GROUNDUP_ARTIFACTS
    (default ~/.groundup/artifacts)."""
    from prefect.blocks.core import Block

    # Prefect imports the installed collections (prefect-aws's s3-bucket) itself once a document is found;
    # importing them up front cost every build ~0.9 s of CPU when no such block exists.
    for block_type in FILESYSTEM_BLOCK_TYPES:
        try:
            block = Block.load(f"{block_type}/{STORE_BLOCK}", _sync=True)
        except ValueError:
            continue
        if not isinstance(block, WritableFileSystem) and not hasattr(block, "write_path"):
            raise ArtifactError(f"block {block_type}/{STORE_BLOCK} is not a writable filesystem")
        return block
    return LocalFileSystem(basepath=str(default_basepath()))


class StoreUnavailable(ArtifactError):
    """The configured store cannot be reached or written."""


def describe_filesystem(fs: WritableFileSystem) -> str:
    """Where a store block keeps artifacts, in a few words."""
    if isinstance(fs, LocalFileSystem):
        return f"local directory {fs.basepath}"
    bucket = getattr(fs, "bucket_name", None)
    if bucket:
        return f"s3://{bucket}/{getattr(fs, 'bucket_folder', '')}".rstrip("/")
    return type(fs).__name__


def check_store(cluster: str, key_paths: tuple[str, ...] = ()) -> ArtifactStore:
    """The cluster's store, once it is known to work: reachable, writable (a local directory is
    created owner-only with its parents), and able to decrypt the stored keys in `key_paths`.

    Run before a build touches AWS, so a bad store stops it before any resource is created.
    """
    filesystem = load_filesystem()
    where = describe_filesystem(filesystem)
    if isinstance(filesystem, LocalFileSystem):
        _check_local_base(Path(filesystem._resolve_path(None)))
    store = ArtifactStore(filesystem, cluster, load_passphrase())
    try:
        present = [p for p in key_paths if store.exists(p)]
    except Exception as exc:
        raise StoreUnavailable(f"artifact store {where} cannot be read: {type(exc).__name__}: {exc}") from None
    for relpath in present:
        store.read_private_key(relpath)
    return store


def _check_local_base(base: Path) -> None:
    try:
        private_dir(base)
        probe = base / f".groundup-write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StoreUnavailable(
            f"artifact store directory {base} cannot be created or written ({reason}): set GROUNDUP_ARTIFACTS "
            f"to a writable directory, or point the store elsewhere with `python -m blocks.setup local --path DIR`"
        ) from None


def get_store(cluster: str) -> ArtifactStore:
    """The artifact store of a cluster, as configured in Prefect."""
    return ArtifactStore(load_filesystem(), cluster, load_passphrase())


def _call(method: Any, *args: Any) -> Any:
    """Call a filesystem method synchronously, whether it is Prefect's sync/async dispatch or async only."""
    if hasattr(method, "aio"):
        return method(*args, _sync=True)
    result = method(*args)
    if hasattr(result, "__await__"):
        return _await_in_thread(result)
    return result


def _await_in_thread(awaitable: Any) -> Any:
    from concurrent.futures import ThreadPoolExecutor

    async def wait() -> Any:
        return await awaitable

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, wait()).result()
