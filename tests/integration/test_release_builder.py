"""The release builder for real: crictl built from its Go module with the pinned Go, into the shared cache."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from sandbox.release_builder import GO_PIN, BuildError, ReleaseBuilder

pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def builder():
    return ReleaseBuilder(log=lambda _: None)


def test_crictl_is_built_from_its_module_and_prints_its_version(builder):
    out = builder.build("crictl", "1.37.0")
    printed = subprocess.run([str(out / "crictl"), "--version"], capture_output=True, text=True, timeout=30).stdout
    assert printed.strip() == "crictl version 1.37.0"
    stamp = json.loads((out / "build.json").read_text())
    assert stamp["files"]["crictl"] == hashlib.sha256((out / "crictl").read_bytes()).hexdigest()
    assert stamp["go"] == GO_PIN and stamp["modules"] == ["sigs.k8s.io/cri-tools@v1.37.0"]
    built_with = subprocess.run(["go", "version", "-m", str(out / "crictl")], capture_output=True, text=True).stdout
    assert f"go{GO_PIN}" in built_with and "-trimpath=true" in built_with and "CGO_ENABLED=0" in built_with


def test_a_second_build_is_the_cached_one(builder):
    first = builder.build("crictl", "1.37.0")
    assert builder.build("crictl", "1.37.0") == first
    assert not list(first.parent.glob(".*partial*")), "no half-written build is left beside it"


def test_a_version_the_module_proxy_lacks_names_what_it_serves(builder):
    with pytest.raises(BuildError) as error:
        builder.build("crictl", "1.35.99")
    message = str(error.value)
    assert "sigs.k8s.io/cri-tools v1.35.99 is not available from the Go module proxy" in message
    assert "v1.37.0" in message
