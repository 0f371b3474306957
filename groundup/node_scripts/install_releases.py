#!/usr/bin/env python3
"""Download, verify and install a node's release files, as listed in a manifest written by groundup
(`groundup.releases.node_release_manifest`). Runs on the node as root with the system python3 (3.8+),
standard library only.

    install_releases.py MANIFEST.json [--root DIR]

For each artifact: when every file a previous run installed from the same URL is still in place
(same sha256 and mode, recorded in /var/lib/groundup/releases.json), nothing is downloaded. Otherwise
the artifact and its checksum file are downloaded, the sha256 is checked, and the files are installed
atomically (written beside their destination, then renamed over it). A tar.gz is read in one streaming
pass, its wanted members staged as they go by; a single-file artifact is moved into place (its download
digest is the file's). An artifact whose checksum does not match, or that lacks a member, installs nothing.

Beside each file's sha256 and mode the state records its stat identity (size, inode, device, mtime and
ctime in ns) as of its install or its last verified hash. A file whose identity is unchanged is trusted
without hashing it again: any write, chmod, rename or replacement moves its ctime, which user space
cannot set back (the check git's index and rsync rely on). As in git, an identity whose ctime is not
older than the state file itself could share its clock tick with a later write, so such a file is
hashed. Any other difference, or a state without identities, means hashing as before; a file that
still matches gets its identity recorded. The last line on stdout is a JSON summary:
{"downloaded": [...], "unchanged": [...], "installed": [...], "failed": [...], "digests": {path: sha256}}
where `digests` holds every file this run vouches for (unchanged and verified, or just installed), so the
caller need not hash them again; errors go to stderr and make the exit status 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import socket
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request

STATE_FILE = "var/lib/groundup/releases.json"
DOWNLOAD_DIR = "var/lib/groundup/downloads"
TIMEOUT_S = 30
ATTEMPTS = 4
USER_AGENT = "groundup-install-releases/1"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
_GZ_READ = 1 << 18
"""Compressed bytes a tar.gz is read in: fewer, larger inflate calls than tarfile's 10 KiB default."""
STAT_FIELDS = ("st_size", "st_ino", "st_dev", "st_mtime_ns", "st_ctime_ns")
RACY_WAIT_S = 2.0


class Failure(Exception):
    """An artifact that could not be installed; the message says which and what to do."""


class NotFound(Exception):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


def log(message: str) -> None:
    print(f"install_releases: {message}", file=sys.stderr, flush=True)


def rooted(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _retrying(url: str, action):
    """Run `action(response)` on a GET of `url`, retrying network errors and 5xx with backoff."""
    last = None
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(min(2 ** (attempt - 1), 8))
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                return action(response)
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                raise NotFound(url) from None
            if exc.code < 500 and exc.code not in (408, 429):
                raise Failure(f"{url} answered HTTP {exc.code} {exc.reason}") from None
            last = f"HTTP {exc.code} {exc.reason}"
        except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
    raise Failure(f"{url}: no answer after {ATTEMPTS} attempts ({last}); check the node can reach it")


def fetch_text(url: str) -> str:
    return _retrying(url, lambda response: response.read(1 << 20).decode("utf-8", "replace"))


def download(url: str, dest: str) -> str:
    """Stream `url` into `dest`; returns the sha256 of what was written."""
    def save(response) -> str:
        digest = hashlib.sha256()
        with open(dest, "wb") as handle:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                digest.update(chunk)
                handle.write(chunk)
        return digest.hexdigest()

    return _retrying(url, save)


def expected_digest(text: str, entry: dict) -> str:
    """The artifact's sha256 as its checksum file states it (bare hex, or sha256sum lines)."""
    if entry["checksum_format"] == "hex":
        words = text.split()
        found = words[0].lower() if words else ""
    else:
        wanted = entry["checksum_entry"]
        found = ""
        for line in text.splitlines():
            parts = line.strip().split(None, 1)
            if len(parts) == 2 and _strip_dot(parts[1].lstrip("*")) == wanted:
                found = parts[0].lower()
                break
        if not found:
            raise Failure(f"{entry['artifact']} {entry['version']}: {entry['checksum_url']} lists no "
                          f"checksum for {wanted}")
    if not _HEX64.match(found):
        raise Failure(f"{entry['artifact']} {entry['version']}: {entry['checksum_url']} holds no sha256 digest")
    return found


def _strip_dot(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def mirror_versions(manifest: dict, artifact: str) -> str:
    """The versions of `artifact` the mirror's index lists, as text for an error message."""
    index_url = manifest.get("mirror_index")
    try:
        index = json.loads(fetch_text(index_url))
    except (Failure, NotFound, ValueError) as exc:
        return f"its index {index_url} could not be read ({exc})"
    versions = (index.get("artifacts", index) or {}).get(artifact) or []
    if not versions:
        return f"it has no version of {artifact}"
    return f"it has {artifact} {', '.join(versions)}"


def not_found(manifest: dict, entry: dict, url: str) -> Failure:
    name = f"{entry['artifact']} {entry['version']}"
    field = entry.get("spec_field", "the version")
    if manifest.get("mirror"):
        return Failure(f"{name}: the release mirror {manifest['mirror']} has no {url} (404); "
                       f"{mirror_versions(manifest, entry['artifact'])}. Set {field} in the cluster spec to a "
                       "version the mirror has, or add this release to the mirror")
    return Failure(f"{name}: {url} answered 404 Not Found; check that {field} in the cluster spec names a "
                   "published release")


def stat_identity(st: os.stat_result) -> dict:
    """What of a file's stat changes whenever its bytes, mode or inode do."""
    return {name: getattr(st, name) for name in STAT_FIELDS}


def verified_files(record: dict | None, entry: dict, root: str, state_mtime_ns: int) -> tuple:
    """(the record's files with their current stat identity, whether any was hashed) when every file a
    previous run installed from this URL is still there with its digest and mode; (None, ...) when the
    artifact must be installed. A file is hashed only when its recorded identity is missing, differs or
    is racy (its ctime not older than the state file)."""
    if not record or record.get("url") != entry["url"] or record.get("install") != entry["install"]:
        return None, False
    files = record.get("files") or {}
    if not files:
        return None, False
    checked = {}
    hashed = False
    for path, want in files.items():
        target = rooted(root, path)
        try:
            before = os.lstat(target)
        except OSError:
            return None, hashed
        if not os.path.isfile(target) or os.path.islink(target) or (before.st_mode & 0o7777) != want["mode"]:
            return None, hashed
        identity = stat_identity(before)
        known = want.get("stat")
        if known != identity or known["st_ctime_ns"] >= state_mtime_ns:
            hashed = True
            if file_sha256(target) != want["sha256"]:
                return None, hashed
            try:
                after = os.lstat(target)
            except OSError:
                return None, hashed
            if stat_identity(after) != identity:
                return None, hashed
        checked[path] = {"sha256": want["sha256"], "mode": want["mode"], "stat": identity}
    return checked, hashed


class Staging:
    """Files written beside their destinations under hidden temporary names, then renamed into place all
    together by `commit`; leaving the block without a commit removes every staged file, so nothing is
    installed when anything fails."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.staged = {}

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc_info) -> None:
        for tmp, *_ in self.staged.values():
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.staged.clear()

    def _placeholder(self, path: str) -> tuple:
        self.discard(path)
        target = rooted(self.root, path)
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix="." + os.path.basename(target) + ".")
        self.staged[path] = (tmp, target, "", 0)
        return fd, tmp, target

    def write(self, path: str, mode: int, source) -> None:
        """Stage what `source` reads as `path`, hashing it on the way."""
        fd, tmp, target = self._placeholder(path)
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for chunk in iter(lambda: source.read(_CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        self.staged[path] = (tmp, target, digest.hexdigest(), mode)

    def adopt(self, path: str, mode: int, source_path: str, digest: str, move: bool) -> None:
        """Stage the verified file `source_path` (whose sha256 is `digest`) as `path`: moved when `move`
        and it is on the destination's file system, else copied."""
        fd, tmp, target = self._placeholder(path)
        moved = False
        if move:
            try:
                os.rename(source_path, tmp)
                moved = True
            except OSError:
                pass
        if moved:
            os.close(fd)
            with open(tmp, "rb") as staged:
                os.fsync(staged.fileno())
        else:
            with os.fdopen(fd, "wb") as out, open(source_path, "rb") as src:
                for chunk in iter(lambda: src.read(_CHUNK), b""):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        os.chmod(tmp, mode)
        self.staged[path] = (tmp, target, digest, mode)

    def discard(self, path: str) -> None:
        tmp, *_ = self.staged.pop(path, ("",))
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)

    def commit(self) -> dict:
        """Rename every staged file into place; {path: {sha256, mode, stat identity}}."""
        for tmp, target, _, _ in self.staged.values():
            os.replace(tmp, target)
        files = {path: {"sha256": digest, "mode": mode, "stat": stat_identity(os.lstat(target))}
                 for path, (_, target, digest, mode) in self.staged.items()}
        self.staged.clear()
        return files


def install_file(entry: dict, artifact_path: str, digest: str, root: str) -> dict:
    """Install a verified single-file artifact at each of its paths (the download itself moved to the last)."""
    rules = entry["install"]
    with Staging(root) as staging:
        for i, rule in enumerate(rules):
            staging.adopt(rule["path"], rule["mode"], artifact_path, digest, move=i == len(rules) - 1)
        return staging.commit()


def _destination(rule: dict, name: str) -> str | None:
    """Where `rule` installs the archive member called `name` (./ stripped), None when it does not."""
    if rule["member"].endswith("/"):
        folder = _strip_dot(rule["member"]).rstrip("/")
        if name and os.path.dirname(name) == folder:
            return rule["path"].rstrip("/") + "/" + os.path.basename(name)
        return None
    return rule["path"] if name == _strip_dot(rule["member"]).rstrip("/") else None


def install_archive(entry: dict, artifact_path: str, root: str) -> dict:
    """Install what the entry picks from a verified tar.gz in one streaming pass over it: each wanted
    member is staged as it goes by (a later member of the same name replaces an earlier one), and every
    rule is checked against what was staged once the archive ends."""
    rules = entry["install"]
    picked = [set() for _ in rules]
    with Staging(root) as staging:
        with tarfile.open(artifact_path, "r|gz", bufsize=_GZ_READ) as archive:
            for member in archive:
                name = _strip_dot(member.name).rstrip("/")
                for i, rule in enumerate(rules):
                    dest = _destination(rule, name)
                    if dest is None:
                        continue
                    wanted = member.isreg() and (not rule["member"].endswith("/") or member.mode & 0o111)
                    if wanted:
                        staging.write(dest, rule["mode"], archive.extractfile(member))
                        picked[i].add(dest)
                    else:
                        staging.discard(dest)
                        picked[i].discard(dest)
        for rule, dests in zip(rules, picked):
            if dests & staging.staged.keys():
                continue
            if rule["member"].endswith("/"):
                raise Failure(f"{entry['artifact']} {entry['version']}: the archive has no executables in "
                              f"{rule['member']!r}")
            raise Failure(f"{entry['artifact']} {entry['version']}: the archive has no file {rule['member']!r}")
        return staging.commit()


def install_artifact(manifest: dict, entry: dict, root: str) -> dict:
    """Download, verify and install one artifact; returns its state record."""
    name = f"{entry['artifact']} {entry['version']}"
    downloads = rooted(root, DOWNLOAD_DIR)
    os.makedirs(downloads, mode=0o700, exist_ok=True)
    fd, artifact_path = tempfile.mkstemp(dir=downloads, prefix=entry["artifact"] + ".")
    os.close(fd)
    try:
        try:
            checksum_text = fetch_text(entry["checksum_url"])
            log(f"downloading {entry['url']}")
            actual = download(entry["url"], artifact_path)
        except NotFound as exc:
            raise not_found(manifest, entry, exc.url) from None
        except Failure as exc:
            raise Failure(f"{name}: {exc}") from None
        expected = expected_digest(checksum_text, entry)
        if actual != expected:
            raise Failure(f"{name}: checksum mismatch for {entry['url']}: expected sha256 {expected}, got {actual} "
                          f"(checked against {entry['checksum_url']}); nothing of {entry['artifact']} was installed")
        try:
            if entry["packing"] == "file":
                files = install_file(entry, artifact_path, actual, root)
            else:
                files = install_archive(entry, artifact_path, root)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise Failure(f"{name}: could not install from {entry['url']}: {exc}") from None
    finally:
        if os.path.exists(artifact_path):
            os.unlink(artifact_path)
    return {"url": entry["url"], "sha256": actual, "install": entry["install"], "files": files}


def load_state(path: str) -> tuple:
    """The state and its file's mtime in ns (0 when there is none)."""
    try:
        with open(path) as handle:
            state = json.load(handle)
            mtime_ns = os.fstat(handle.fileno()).st_mtime_ns
    except (OSError, ValueError):
        return {}, 0
    return (state, mtime_ns) if isinstance(state, dict) else ({}, 0)


def newest_ctime_ns(state: dict) -> int:
    return max((f["stat"]["st_ctime_ns"] for record in state.values() if isinstance(record, dict)
                for f in (record.get("files") or {}).values() if isinstance(f.get("stat"), dict)), default=0)


def save_state(path: str, state: dict) -> None:
    """Write the state atomically, its mtime past every recorded ctime (waiting a clock tick at most), so
    that the next run can trust the identities it holds."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".releases.")
    with os.fdopen(fd, "w") as handle:
        json.dump(state, handle, indent=1, sort_keys=True)
        handle.flush()
        newest = newest_ctime_ns(state)
        deadline = time.monotonic() + RACY_WAIT_S
        while os.fstat(handle.fileno()).st_mtime_ns <= newest and time.monotonic() < deadline:
            time.sleep(0.001)
            os.utime(handle.fileno())
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def run(manifest: dict, root: str) -> tuple:
    """Install every artifact of the manifest; returns (summary, errors)."""
    state_path = rooted(root, STATE_FILE)
    state, state_mtime_ns = load_state(state_path)
    summary = {"downloaded": [], "unchanged": [], "installed": [], "failed": [], "digests": {}}
    errors = []
    refreshed = False
    for entry in manifest["artifacts"]:
        key = entry["artifact"]
        files, hashed = verified_files(state.get(key), entry, root, state_mtime_ns)
        if files is not None:
            summary["unchanged"].append(key)
            summary["digests"].update((path, f["sha256"]) for path, f in files.items())
            if hashed:
                state[key] = {**state[key], "files": files}
                refreshed = True
            continue
        try:
            record = install_artifact(manifest, entry, root)
        except Failure as exc:
            errors.append(str(exc))
            summary["failed"].append(key)
            continue
        state[key] = record
        save_state(state_path, state)
        refreshed = False
        summary["downloaded"].append(key)
        summary["installed"].extend(sorted(record["files"]))
        summary["digests"].update((path, f["sha256"]) for path, f in record["files"].items())
    if refreshed:
        save_state(state_path, state)
    return summary, errors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Download, verify and install a node's release files.")
    parser.add_argument("manifest", help="JSON manifest written by groundup")
    parser.add_argument("--root", default="/", help="install under this directory instead of / (tests)")
    args = parser.parse_args(argv)
    try:
        with open(args.manifest) as handle:
            manifest = json.load(handle)
    except (OSError, ValueError) as exc:
        log(f"cannot read the manifest {args.manifest}: {exc}")
        return 2
    summary, errors = run(manifest, os.path.abspath(args.root))
    for error in errors:
        log(error)
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
