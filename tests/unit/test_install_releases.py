"""The node script's no-op re-run: installed files whose stat identity is unchanged are trusted without
hashing; any change of identity is hashed, any change of bytes or mode reinstalls. A tar.gz is inflated
once, in archive order; a missing member installs nothing. The summary's digests are the files' sha256.
The script runs in process (to count its hashes and inflated bytes) against a --root in tmp_path and a
mirror served on loopback."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import tarfile
import threading
import time
import zlib
from contextlib import redirect_stderr, redirect_stdout
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from groundup.releases import node_release_manifest
from groundup.spec import ClusterSpec

SCRIPT = Path(__file__).resolve().parents[2] / "groundup" / "node_scripts" / "install_releases.py"
STATE = "var/lib/groundup/releases.json"
MASTER_ARTIFACTS = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
MASTER_FILES = ["/usr/local/bin/etcd", "/usr/local/bin/etcdctl", "/usr/local/bin/kube-apiserver",
                "/usr/local/bin/kube-controller-manager", "/usr/local/bin/kube-scheduler"]


@pytest.fixture(scope="module")
def node_script():
    spec = importlib.util.spec_from_file_location("install_releases_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Mirror:
    """A release mirror on 127.0.0.1 holding small stand-ins for a master's releases, upstream layout."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        handler = partial(_QuietHandler, self.requests.append, directory=str(root))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def local(self, url: str) -> Path:
        return self.root / url[len(self.url) + 1:]

    def publish(self, manifest: dict) -> None:
        for entry in manifest["artifacts"]:
            if entry["packing"] == "file":
                self.publish_file(entry, f"#!/bin/sh\necho {entry['artifact']} {entry['version']}\n".encode())
            else:
                self.publish_archive(entry, [(rule["member"], f"#!/bin/sh\necho {rule['member']}\n".encode(), 0o755)
                                             for rule in entry["install"] if not rule["member"].endswith("/")])

    def publish_file(self, entry: dict, data: bytes) -> None:
        artifact = self.local(entry["url"])
        artifact.parent.mkdir(parents=True, exist_ok=True)
        artifact.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        text = digest if entry["checksum_format"] == "hex" else f"{digest}  {entry['checksum_entry']}"
        self.local(entry["checksum_url"]).write_text(text + "\n")

    def publish_archive(self, entry: dict, members: list) -> None:
        """A tar.gz of (name, bytes or None for a directory, mode) in the order given."""
        packed = io.BytesIO()
        with tarfile.open(fileobj=packed, mode="w:gz") as archive:
            for name, data, mode in members:
                info = tarfile.TarInfo(name)
                info.mode = mode
                if data is None:
                    info.type = tarfile.DIRTYPE
                    archive.addfile(info)
                else:
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
        self.publish_file(entry, packed.getvalue())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def __init__(self, record, *args, **kwargs) -> None:
        self.record = record
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args) -> None:
        self.record(self.path)


class Node:
    """One node's --root, its manifest, and runs of the node script that count what it hashes."""

    def __init__(self, script, mirror: Mirror, tmp: Path, monkeypatch: pytest.MonkeyPatch, role: str = "master") -> None:
        self.script, self.mirror, self.root = script, mirror, tmp / "node"
        spec = ClusterSpec(release_mirror=mirror.url)
        self.manifest = node_release_manifest(spec, spec.masters[0] if role == "master" else spec.workers[0])
        mirror.publish(self.manifest)
        self.manifest_path = tmp / "manifest.json"
        self.manifest_path.write_text(json.dumps(self.manifest))
        self.hashed: list[str] = []
        real = script.file_sha256

        def counting_file_sha256(path: str) -> str:
            self.hashed.append("/" + os.path.relpath(path, self.root))
            return real(path)

        monkeypatch.setattr(script, "file_sha256", counting_file_sha256)

    def run(self) -> tuple[int, dict]:
        self.hashed.clear()
        self.mirror.requests.clear()
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = self.script.main([str(self.manifest_path), "--root", str(self.root)])
        self.err = err.getvalue()
        summary = json.loads(out.getvalue().strip().splitlines()[-1])
        assert set(summary) == {"downloaded", "unchanged", "installed", "failed", "digests"}
        for name, digest in summary["digests"].items():
            assert hashlib.sha256(self.path(name).read_bytes()).hexdigest() == digest, name
        return code, summary

    def entry(self, artifact: str) -> dict:
        return next(e for e in self.manifest["artifacts"] if e["artifact"] == artifact)

    def digests(self, names) -> dict:
        return {name: hashlib.sha256(self.path(name).read_bytes()).hexdigest() for name in names}

    def leftovers(self) -> list:
        """Staged or downloaded files the script left behind."""
        return [str(p) for p in self.root.rglob(".*") if p.is_file()] + \
            [str(p) for p in (self.root / "var/lib/groundup/downloads").glob("*")]

    def path(self, name: str) -> Path:
        return self.root / name.lstrip("/")

    def state(self) -> dict:
        return json.loads(self.path(STATE).read_text())

    def recorded(self, name: str) -> dict:
        return next(r["files"][name] for r in self.state().values() if name in r["files"])

    def identity(self, name: str) -> dict:
        st = os.lstat(self.path(name))
        return {"st_size": st.st_size, "st_ino": st.st_ino, "st_dev": st.st_dev,
                "st_mtime_ns": st.st_mtime_ns, "st_ctime_ns": st.st_ctime_ns}


@pytest.fixture
def mirror(tmp_path):
    served = Mirror(tmp_path / "mirror")
    yield served
    served.close()


@pytest.fixture
def node(node_script, mirror, tmp_path, monkeypatch) -> Node:
    node = Node(node_script, mirror, tmp_path, monkeypatch)
    code, summary = node.run()
    assert code == 0 and summary["downloaded"] == MASTER_ARTIFACTS and summary["failed"] == []
    assert sorted(summary["installed"]) == MASTER_FILES
    assert node.hashed == []
    return node


def rewrite_in_place(path: Path, data: bytes, recorded_ctime_ns: int) -> None:
    """Write `data` over the file's bytes (same inode) until its ctime differs from the recorded one."""
    for _ in range(1000):
        with open(path, "r+b") as handle:
            handle.write(data)
        if os.lstat(path).st_ctime_ns != recorded_ctime_ns:
            return
        time.sleep(0.001)
    raise AssertionError(f"the ctime of {path} never moved")


def test_install_records_each_files_stat_identity_older_than_the_state_file(node):
    state_mtime_ns = node.path(STATE).stat().st_mtime_ns
    for name in MASTER_FILES:
        recorded = node.recorded(name)
        assert recorded["stat"] == node.identity(name)
        assert recorded["sha256"] == hashlib.sha256(node.path(name).read_bytes()).hexdigest()
        assert recorded["mode"] == 0o755
        assert recorded["stat"]["st_ctime_ns"] < state_mtime_ns


def test_a_second_run_hashes_nothing_downloads_nothing_and_leaves_the_state_alone(node):
    state = node.path(STATE)
    before = (state.read_bytes(), state.stat().st_mtime_ns, state.stat().st_ino)
    code, summary = node.run()
    assert code == 0
    assert summary == {"downloaded": [], "unchanged": MASTER_ARTIFACTS, "installed": [], "failed": [],
                       "digests": node.digests(MASTER_FILES)}
    assert node.hashed == [] and node.mirror.requests == []
    assert (state.read_bytes(), state.stat().st_mtime_ns, state.stat().st_ino) == before


def test_a_file_rewritten_with_its_own_bytes_is_hashed_once_kept_and_its_new_identity_recorded(node):
    name = "/usr/local/bin/kube-scheduler"
    target = node.path(name)
    rewrite_in_place(target, target.read_bytes(), node.recorded(name)["stat"]["st_ctime_ns"])
    code, summary = node.run()
    assert code == 0 and summary["downloaded"] == [] and summary["unchanged"] == MASTER_ARTIFACTS
    assert node.hashed == [name] and node.mirror.requests == []
    assert node.recorded(name)["stat"] == node.identity(name)
    code, summary = node.run()
    assert code == 0 and node.hashed == []


def test_a_chmod_back_and_forth_is_hashed_and_kept(node):
    name = "/usr/local/bin/etcdctl"
    recorded_ctime_ns = node.recorded(name)["stat"]["st_ctime_ns"]
    for _ in range(1000):
        node.path(name).chmod(0o700)
        node.path(name).chmod(0o755)
        if node.identity(name)["st_ctime_ns"] != recorded_ctime_ns:
            break
        time.sleep(0.001)
    code, summary = node.run()
    assert code == 0 and summary["downloaded"] == [] and node.hashed == [name]


def test_other_bytes_of_the_same_size_and_mtime_are_reinstalled(node):
    name = "/usr/local/bin/kube-apiserver"
    target = node.path(name)
    good = target.read_bytes()
    recorded = node.recorded(name)["stat"]
    rewrite_in_place(target, bytes(reversed(good)), recorded["st_ctime_ns"])
    os.utime(target, ns=(recorded["st_mtime_ns"], recorded["st_mtime_ns"]))
    assert node.identity(name)["st_size"] == recorded["st_size"]
    assert node.identity(name)["st_mtime_ns"] == recorded["st_mtime_ns"]
    code, summary = node.run()
    assert code == 0 and summary["downloaded"] == ["kube-apiserver"] and summary["installed"] == [name]
    assert node.hashed == [name]
    assert target.read_bytes() == good and node.recorded(name)["stat"] == node.identity(name)


def test_a_file_replaced_by_another_is_reinstalled(node):
    name = "/usr/local/bin/etcdctl"
    target = node.path(name)
    good = target.read_bytes()
    other = target.with_name("etcdctl.other")
    other.write_bytes(b"x" * len(good))
    other.chmod(0o755)
    os.replace(other, target)
    code, summary = node.run()
    assert code == 0 and summary["downloaded"] == ["etcd"]
    assert sorted(summary["installed"]) == ["/usr/local/bin/etcd", "/usr/local/bin/etcdctl"]
    assert target.read_bytes() == good


def test_a_chmodded_file_is_reinstalled_with_its_mode(node):
    name = "/usr/local/bin/kube-controller-manager"
    node.path(name).chmod(0o700)
    code, summary = node.run()
    assert code == 0 and summary["downloaded"] == ["kube-controller-manager"] and summary["installed"] == [name]
    assert node.path(name).stat().st_mode & 0o7777 == 0o755
    code, summary = node.run()
    assert code == 0 and summary["downloaded"] == [] and node.hashed == []


def test_a_missing_file_is_reinstalled(node):
    node.path("/usr/local/bin/etcd").unlink()
    code, summary = node.run()
    assert code == 0 and summary["downloaded"] == ["etcd"] and node.path("/usr/local/bin/etcd").is_file()


def test_a_state_without_stat_identities_is_hashed_once_and_upgraded(node):
    state = node.state()
    for record in state.values():
        for recorded in record["files"].values():
            del recorded["stat"]
    node.path(STATE).write_text(json.dumps(state))
    code, summary = node.run()
    assert code == 0
    assert summary == {"downloaded": [], "unchanged": MASTER_ARTIFACTS, "installed": [], "failed": [],
                       "digests": node.digests(MASTER_FILES)}
    assert sorted(node.hashed) == MASTER_FILES and node.mirror.requests == []
    assert all(node.recorded(name)["stat"] == node.identity(name) for name in MASTER_FILES)
    code, summary = node.run()
    assert code == 0 and node.hashed == [] and summary["unchanged"] == MASTER_ARTIFACTS


def test_an_old_state_with_a_changed_file_still_reinstalls_it(node):
    state = node.state()
    for record in state.values():
        for recorded in record["files"].values():
            del recorded["stat"]
    node.path(STATE).write_text(json.dumps(state))
    node.path("/usr/local/bin/kube-scheduler").write_bytes(b"#!/bin/sh\nexit 0\n")
    code, summary = node.run()
    assert code == 0 and summary["downloaded"] == ["kube-scheduler"]
    assert node.recorded("/usr/local/bin/kube-scheduler")["stat"] == node.identity("/usr/local/bin/kube-scheduler")


def test_an_identity_not_older_than_the_state_file_is_racy_and_hashed(node):
    name = "/usr/local/bin/kube-scheduler"
    racy = node.recorded(name)["stat"]["st_ctime_ns"]
    older = [n for n in MASTER_FILES if node.recorded(n)["stat"]["st_ctime_ns"] < racy]
    os.utime(node.path(STATE), ns=(racy, racy))
    code, summary = node.run()
    assert code == 0 and summary["downloaded"] == [] and summary["unchanged"] == MASTER_ARTIFACTS
    assert name in node.hashed and not set(older) & set(node.hashed)
    assert node.path(STATE).stat().st_mtime_ns > racy
    code, summary = node.run()
    assert code == 0 and node.hashed == []


def test_a_failed_artifact_keeps_the_summary_and_exit_status(node, mirror):
    entry = next(e for e in node.manifest["artifacts"] if e["artifact"] == "kube-scheduler")
    mirror.local(entry["url"]).write_bytes(b"tampered")
    node.path("/usr/local/bin/kube-scheduler").unlink()
    code, summary = node.run()
    assert code == 1
    assert summary == {"downloaded": [], "unchanged": ["etcd", "kube-apiserver", "kube-controller-manager"],
                       "installed": [], "failed": ["kube-scheduler"],
                       "digests": node.digests([n for n in MASTER_FILES if n != "/usr/local/bin/kube-scheduler"])}


class Inflated:
    """Counts the bytes zlib inflates: tarfile's gzip stream and gzip.GzipFile both inflate through
    zlib.decompressobj."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bytes = 0
        real, counter = zlib.decompressobj, self

        class Counting:
            def __init__(self, *args, **kwargs) -> None:
                self.inner = real(*args, **kwargs)

            def decompress(self, data, *args):
                out = self.inner.decompress(data, *args)
                counter.bytes += len(out)
                return out

            def __getattr__(self, name):
                return getattr(self.inner, name)

        monkeypatch.setattr(zlib, "decompressobj", Counting)


@pytest.fixture
def fresh(node_script, mirror, tmp_path, monkeypatch) -> Node:
    """A master's node that has nothing installed yet."""
    return Node(node_script, mirror, tmp_path, monkeypatch)


def _etcd_members(entry: dict) -> tuple:
    etcd, etcdctl = (rule["member"] for rule in entry["install"])
    return etcd, etcdctl, os.path.dirname(etcd)


def test_a_tar_gz_is_inflated_once_in_archive_order_even_when_its_members_are_wanted_out_of_order(
        fresh, mirror, monkeypatch):
    entry = fresh.entry("etcd")
    etcd, etcdctl, top = _etcd_members(entry)
    noise = __import__("random").Random(0)
    blobs = {name: noise.randbytes(1 << 20) for name in (etcdctl, f"{top}/README.md", etcd)}
    mirror.publish_archive(entry, [(f"./{top}/", None, 0o755), (f"./{etcdctl}", blobs[etcdctl], 0o755),
                                   (f"{top}/README.md", blobs[f"{top}/README.md"], 0o644), (etcd, blobs[etcd], 0o755)])
    tar_size = len(__import__("gzip").decompress(mirror.local(entry["url"]).read_bytes()))
    inflated = Inflated(monkeypatch)
    modes = []
    real_open = tarfile.open

    def recording_open(*args, **kwargs):
        modes.append(kwargs.get("mode", args[1] if len(args) > 1 else "r"))
        return real_open(*args, **kwargs)

    monkeypatch.setattr(tarfile, "open", recording_open)
    code, summary = fresh.run()
    assert code == 0 and summary["downloaded"] == MASTER_ARTIFACTS
    assert modes == ["r|gz"]
    assert sum(len(b) for b in blobs.values()) < inflated.bytes <= tar_size
    assert fresh.path("/usr/local/bin/etcd").read_bytes() == blobs[etcd]
    assert fresh.path("/usr/local/bin/etcdctl").read_bytes() == blobs[etcdctl]
    assert summary["digests"]["/usr/local/bin/etcd"] == hashlib.sha256(blobs[etcd]).hexdigest()
    assert fresh.leftovers() == []


@pytest.mark.parametrize("etcdctl_as", ["absent", "a directory"])
def test_an_archive_lacking_a_member_installs_nothing_of_it_and_names_the_member(fresh, mirror, etcdctl_as):
    entry = fresh.entry("etcd")
    etcd, etcdctl, _ = _etcd_members(entry)
    members = [(etcd, b"#!/bin/sh\n", 0o755)]
    if etcdctl_as == "a directory":
        members.append((etcdctl, None, 0o755))
    mirror.publish_archive(entry, members)
    code, summary = fresh.run()
    assert code == 1 and summary["failed"] == ["etcd"]
    assert summary["downloaded"] == MASTER_ARTIFACTS[1:]
    assert f"etcd {entry['version']}: the archive has no file {etcdctl!r}" in fresh.err
    assert not fresh.path("/usr/local/bin/etcd").exists() and not fresh.path("/usr/local/bin/etcdctl").exists()
    assert set(summary["digests"]) == set(MASTER_FILES) - {"/usr/local/bin/etcd", "/usr/local/bin/etcdctl"}
    assert fresh.leftovers() == []


def test_a_directory_rule_installs_the_executables_directly_inside_the_last_of_each_name_winning(
        node_script, mirror, tmp_path, monkeypatch):
    worker = Node(node_script, mirror, tmp_path, monkeypatch, role="worker")
    containerd, cni = worker.entry("containerd"), worker.entry("cni-plugins")
    mirror.publish_archive(containerd, [
        ("bin/", None, 0o755), ("bin/ctr", b"old ctr", 0o755), ("bin/containerd", b"containerd", 0o755),
        ("bin/README", b"not executable", 0o644), ("bin/sub/", None, 0o755), ("bin/sub/deep", b"deep", 0o755),
        ("LICENSE", b"text", 0o755), ("bin/ctr", b"new ctr", 0o755)])
    mirror.publish_archive(cni, [("./", None, 0o755), ("./loopback", b"loopback", 0o755),
                                 ("./bridge", b"bridge", 0o755), ("./LICENSE", b"text", 0o644)])
    code, summary = worker.run()
    assert code == 0, worker.err
    assert sorted(summary["installed"]) == sorted([
        "/usr/local/bin/containerd", "/usr/local/bin/ctr", "/opt/cni/bin/bridge", "/opt/cni/bin/loopback",
        "/usr/local/sbin/runc", "/usr/local/bin/crictl", "/usr/local/bin/kubelet", "/usr/local/bin/kube-proxy"])
    assert worker.path("/usr/local/bin/ctr").read_bytes() == b"new ctr"
    assert worker.path("/opt/cni/bin/bridge").stat().st_mode & 0o7777 == 0o755
    assert set(summary["digests"]) == set(summary["installed"])
    assert worker.leftovers() == []


def test_a_directory_rule_without_executables_installs_nothing_and_names_the_directory(
        node_script, mirror, tmp_path, monkeypatch):
    worker = Node(node_script, mirror, tmp_path, monkeypatch, role="worker")
    containerd, cni = worker.entry("containerd"), worker.entry("cni-plugins")
    mirror.publish_archive(containerd, [("bin/", None, 0o755), ("bin/README", b"not executable", 0o644)])
    mirror.publish_archive(cni, [("./bridge", b"bridge", 0o755)])
    code, summary = worker.run()
    assert code == 1 and summary["failed"] == ["containerd"]
    assert f"containerd {containerd['version']}: the archive has no executables in 'bin/'" in worker.err
    assert not worker.path("/usr/local/bin/README").exists()
    assert worker.path("/opt/cni/bin/bridge").read_bytes() == b"bridge"


def test_the_summary_vouches_for_every_installed_file_and_again_on_a_no_op_run(fresh):
    code, summary = fresh.run()
    assert code == 0 and summary["digests"] == fresh.digests(MASTER_FILES)
    assert summary["digests"] == {name: fresh.recorded(name)["sha256"] for name in MASTER_FILES}
    code, summary = fresh.run()
    assert code == 0 and summary["downloaded"] == [] and summary["digests"] == fresh.digests(MASTER_FILES)
    assert fresh.hashed == []


def test_a_single_file_artifact_is_moved_into_place_not_hashed_again(fresh, monkeypatch):
    hashed_bytes = []
    real_sha256 = hashlib.sha256

    class CountingSha256:
        def __init__(self, data: bytes = b"") -> None:
            self.inner = real_sha256(data)
            hashed_bytes.append(len(data))

        def update(self, data) -> None:
            hashed_bytes.append(len(data))
            self.inner.update(data)

        def hexdigest(self) -> str:
            return self.inner.hexdigest()

    monkeypatch.setattr(fresh.script.hashlib, "sha256", CountingSha256)
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        code = fresh.script.main([str(fresh.manifest_path), "--root", str(fresh.root)])
    monkeypatch.undo()
    assert code == 0
    downloads = sum(fresh.mirror.local(e["url"]).stat().st_size for e in fresh.manifest["artifacts"])
    members = sum(fresh.path(name).stat().st_size for name in ("/usr/local/bin/etcd", "/usr/local/bin/etcdctl"))
    assert sum(hashed_bytes) == downloads + members
