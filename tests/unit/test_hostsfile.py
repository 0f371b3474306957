"""The sandbox's marked block in hosts files: read, replace, remove; atomic, idempotent writes."""

from __future__ import annotations

import os

import pytest

from sandbox import hostsfile
from sandbox.hostsfile import BEGIN, END, HostsBlockError

HOSTS = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n10.240.0.10 master-0\n"
NLB = "k8s-1.us-east-2.elb.amazonaws.com"


def test_block_is_appended_and_other_lines_are_kept():
    text = hostsfile.replace_block(HOSTS, {NLB: "10.240.0.250"})
    assert text.startswith(HOSTS)
    assert text[len(HOSTS):].splitlines() == [BEGIN, f"10.240.0.250 {NLB}", END]
    assert hostsfile.read_block(text) == {NLB: "10.240.0.250"}


def test_replacing_twice_with_the_same_entries_changes_nothing():
    once = hostsfile.replace_block(HOSTS, {NLB: "10.240.0.250", "other-2.elb.amazonaws.com": "10.240.0.249"})
    assert hostsfile.replace_block(once, {"other-2.elb.amazonaws.com": "10.240.0.249", NLB: "10.240.0.250"}) == once


def test_replacing_keeps_the_block_where_it_was_and_lines_after_it():
    text = BEGIN + "\n10.240.0.250 old.elb.amazonaws.com\n" + END + "\n" + HOSTS
    new = hostsfile.replace_block(text, {NLB: "10.240.0.249"})
    assert new == BEGIN + f"\n10.240.0.249 {NLB}\n" + END + "\n" + HOSTS


def test_remove_restores_the_original_text():
    assert hostsfile.remove_block(hostsfile.replace_block(HOSTS, {NLB: "10.240.0.250"})) == HOSTS
    assert hostsfile.remove_block(HOSTS) == HOSTS


def test_no_entries_means_no_block():
    with_block = hostsfile.replace_block(HOSTS, {NLB: "10.240.0.250"})
    assert hostsfile.replace_block(with_block, {}) == HOSTS
    assert hostsfile.replace_block(HOSTS, {}) == HOSTS


def test_a_file_without_final_newline_gets_one_before_the_block():
    text = hostsfile.replace_block("127.0.0.1 localhost", {NLB: "10.240.0.250"})
    assert text.splitlines()[:2] == ["127.0.0.1 localhost", BEGIN]


def test_duplicate_blocks_collapse_into_one():
    block = hostsfile.render_block({NLB: "10.240.0.250"})
    text = HOSTS + block + "10.0.0.1 kept\n" + block
    new = hostsfile.replace_block(text, {NLB: "10.240.0.251"})
    assert new.count(BEGIN) == 1
    assert "10.0.0.1 kept\n" in new
    assert hostsfile.read_block(new) == {NLB: "10.240.0.251"}


@pytest.mark.parametrize("broken", [HOSTS + BEGIN + "\n10.240.0.250 a\n", HOSTS + END + "\n",
                                    BEGIN + "\n" + BEGIN + "\n" + END + "\n"])
def test_a_broken_block_is_refused_with_the_line_to_fix(broken):
    with pytest.raises(HostsBlockError, match="line [0-9]+"):
        hostsfile.replace_block(broken, {NLB: "10.240.0.250"})


@pytest.mark.parametrize("name, address", [("bad name", "10.0.0.1"), ("a#b", "10.0.0.1"), ("", "10.0.0.1"),
                                           (NLB, "10.240.0.300"), (NLB, "not-an-ip")])
def test_entries_that_would_corrupt_the_file_are_refused(name, address):
    with pytest.raises(ValueError):
        hostsfile.render_block({name: address})


def test_write_block_is_atomic_keeps_mode_and_reports_changes(tmp_path):
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    path.chmod(0o644)
    inode = path.stat().st_ino
    assert hostsfile.write_block(path, {NLB: "10.240.0.250"}) is True
    assert path.stat().st_ino != inode
    assert path.stat().st_mode & 0o777 == 0o644
    assert hostsfile.has_block(path)
    mtime = path.stat().st_mtime_ns
    assert hostsfile.write_block(path, {NLB: "10.240.0.250"}) is False
    assert path.stat().st_mtime_ns == mtime
    assert hostsfile.remove_from(path) is True
    assert path.read_text() == HOSTS
    assert hostsfile.remove_from(path) is False
    assert not hostsfile.has_block(path)
    assert [p.name for p in tmp_path.iterdir()] == ["hosts"]


def test_a_missing_file_is_created_only_when_its_directory_exists(tmp_path):
    created = tmp_path / "hosts"
    assert hostsfile.write_block(created, {NLB: "10.240.0.250"}) is True
    assert hostsfile.read_block(created.read_text()) == {NLB: "10.240.0.250"}
    assert os.stat(created).st_mode & 0o777 == 0o644
    assert hostsfile.remove_from(tmp_path / "absent") is False
    with pytest.raises(FileNotFoundError):
        hostsfile.write_block(tmp_path / "no-dir" / "hosts", {NLB: "10.240.0.250"})
