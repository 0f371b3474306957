"""The version policy: the supported window, defaults per Kubernetes minor, what validation refuses."""

from __future__ import annotations

import pytest

from groundup.spec import SpecError, parse_spec
from groundup.versions import (COMPONENT_FIELDS, DEFAULT_KUBERNETES_VERSION, LINES, VersionPolicyError,
                               check_component, kubernetes_line)


def spec(**fields):
    return parse_spec({"name": "versions", **fields})


def test_the_default_is_the_newest_patch_of_the_newest_supported_minor():
    assert DEFAULT_KUBERNETES_VERSION == "1.37.2"
    assert spec().kubernetes_version == "1.37.2"
    assert sorted(LINES) == ["1.35", "1.36", "1.37"]


@pytest.mark.parametrize("version", ["1.99.0", "1.20.0", "1.34.3", "1.38.0", "2.0.0"])
def test_a_release_outside_the_window_is_refused_naming_the_window(version):
    with pytest.raises(SpecError) as error:
        spec(kubernetes_version=version)
    message = str(error.value)
    assert "kubernetes_version" in message and f"Kubernetes {version} is not supported" in message
    assert "1.35, 1.36 and 1.37" in message and "1.37.2" in message


def test_empty_component_versions_take_what_that_kubernetes_release_is_tested_with():
    built = spec(kubernetes_version="1.36.3")
    assert {f: getattr(built, f) for f in COMPONENT_FIELDS} == LINES["1.36"].defaults()
    latest = spec()
    assert (latest.etcd_version, latest.containerd_version, latest.runc_version, latest.cni_plugins_version,
            latest.crictl_version, latest.coredns_version) == ("3.7.4", "2.4.2", "1.5.2", "1.9.1", "1.37.0", "1.14.6")


def test_a_component_version_not_known_to_work_with_that_kubernetes_is_refused_with_what_is():
    with pytest.raises(SpecError, match=r"etcd_version: etcd 9.9.9 is not known to work with Kubernetes 1.37: "
                                        r"use 3.6.x, 3.7.x \(default 3.7.4\)"):
        spec(etcd_version="9.9.9")
    with pytest.raises(SpecError, match="containerd 2.4.2 is not known to work with Kubernetes 1.35"):
        spec(kubernetes_version="1.35.4", containerd_version="2.4.2")


def test_a_chosen_component_version_inside_its_series_is_kept():
    assert spec(etcd_version="3.6.17").etcd_version == "3.6.17"
    assert spec(kubernetes_version="v1.36.1").kubernetes_version == "1.36.1"


def test_zero_workers_is_refused_because_nothing_could_run_a_pod():
    with pytest.raises(SpecError, match="worker_count: at least 1.*CoreDNS included"):
        spec(worker_count=0)


def test_every_line_accepts_its_own_defaults():
    for line in LINES.values():
        for field, default in line.defaults().items():
            check_component(field, default, line.latest)
        assert kubernetes_line(line.latest) is line


def test_the_policy_error_is_a_value_error_naming_the_window():
    with pytest.raises(VersionPolicyError, match="1.35, 1.36 and 1.37"):
        kubernetes_line("1.19.16")
