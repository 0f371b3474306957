"""Default output paths: created with every missing parent, owner-only."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from blocks.artifact_store import private_dir
from groundup.admin_kubeconfig import write_private_file


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_kubeconfig_parents_are_created_owner_only(tmp_path):
    target = tmp_path / "home" / ".kube" / "dev.kubeconfig"
    write_private_file(target, b"apiVersion: v1\n")
    assert target.read_bytes() == b"apiVersion: v1\n" and mode(target) == 0o600
    assert mode(tmp_path / "home") == 0o700 and mode(tmp_path / "home" / ".kube") == 0o700


def test_store_directory_is_created_with_its_parents_and_existing_ones_are_left_alone(tmp_path):
    tmp_path.chmod(0o755)
    base = private_dir(tmp_path / ".groundup" / "artifacts")
    assert base.is_dir() and mode(base) == 0o700 and mode(base.parent) == 0o700
    assert mode(tmp_path) == 0o755


def test_store_path_that_is_a_file_is_refused(tmp_path):
    blocker = tmp_path / "artifacts"
    blocker.write_text("")
    with pytest.raises(NotADirectoryError):
        private_dir(blocker)
