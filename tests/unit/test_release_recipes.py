"""The release builder's recipes and wrapper modules, from upstream go.mod files recorded at their versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import recipes

DATA = Path(__file__).parent / "data" / "gomod"
K8S = (DATA / "k8s.io_kubernetes@v1.37.2.mod").read_text()
ETCD = (DATA / "go.etcd.io_etcd_server_v3@v3.7.4.mod").read_text()
CONTAINERD = (DATA / "github.com_containerd_containerd_v2@v2.4.2.mod").read_text()


def staging_modules(gomod: str) -> set[str]:
    return {line.split()[0] for line in gomod.splitlines() if "=> ./staging/" in line}


def test_kubernetes_wrapper_replaces_every_staging_module_of_that_version_with_its_published_version():
    build = recipes.kubernetes("1.37.2", "2026-10-27T12:01:04Z").builds[0]
    wrapper = recipes.wrapper_gomod(build, K8S)
    replaced = {line.split()[0] for line in wrapper.splitlines() if " => " in line}
    assert replaced == staging_modules(K8S) and len(replaced) == 33
    assert "\tk8s.io/api => k8s.io/api v0.37.2" in wrapper.splitlines()
    assert "\tk8s.io/cri-streaming => k8s.io/cri-streaming v0.37.2" in wrapper.splitlines()
    assert "require k8s.io/kubernetes v1.37.2" in wrapper


def test_the_staging_list_comes_from_the_go_mod_not_a_kept_list():
    """A module added in a later release is replaced as soon as its go.mod names it."""
    grown = K8S.replace("\tk8s.io/streaming => ./staging/src/k8s.io/streaming",
                        "\tk8s.io/streaming => ./staging/src/k8s.io/streaming\n"
                        "\tk8s.io/brand-new => ./staging/src/k8s.io/brand-new")
    grown = grown.replace("\tk8s.io/streaming v0.0.0", "\tk8s.io/streaming v0.0.0\n\tk8s.io/brand-new v0.0.0")
    build = recipes.kubernetes("1.37.2", "x").builds[0]
    assert "\tk8s.io/brand-new => k8s.io/brand-new v0.37.2" in recipes.wrapper_gomod(build, grown).splitlines()


def test_the_wrapper_copies_upstreams_go_and_godebug_lines_and_names_each_main_package_as_a_tool():
    build = recipes.kubernetes("1.37.2", "x").builds[0]
    wrapper = recipes.wrapper_gomod(build, K8S)
    assert "go 1.26.0" in wrapper.splitlines() and "godebug default=go1.26" in wrapper.splitlines()
    tools = [ln.strip() for ln in wrapper.split("tool (")[1].split(")")[0].splitlines() if ln.strip()]
    assert tools == sorted(f"k8s.io/kubernetes/cmd/{c}" for c in recipes.KUBERNETES_COMMANDS)


def test_etcd_siblings_required_at_their_real_version_need_no_replace():
    build = recipes.etcd("3.7.4").builds[0]
    wrapper = recipes.wrapper_gomod(build, ETCD)
    assert " => " not in wrapper and "require go.etcd.io/etcd/server/v3 v3.7.4" in wrapper
    assert "go 1.26.0" in wrapper


def test_a_module_without_replaces_is_built_with_go_install_under_its_own_go_mod():
    assert recipes.has_replaces(K8S) and recipes.has_replaces(ETCD)
    assert not recipes.has_replaces(CONTAINERD)


def test_a_v0_requirement_without_a_published_version_is_refused():
    build = recipes.etcd("3.7.4").builds[0]
    with pytest.raises(ValueError, match="v0.0.0"):
        recipes.wrapper_gomod(build, K8S)


def test_kubernetes_version_ldflags_go_into_component_base_and_client_go_as_hack_lib_version_sh_writes_them():
    build = recipes.kubernetes("1.37.2", "2026-10-27T12:01:04Z").builds[0]
    flags = recipes.ldflags_argument(build)
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {package}.gitVersion=v1.37.2" in flags
        assert f"-X {package}.gitMinor=37" in flags and f"-X {package}.buildDate=2026-10-27T12:01:04Z" in flags
    assert build.tags == ("selinux", "notest", "grpcnotrace") and not build.cgo and "-trimpath" in build.flags


@pytest.mark.parametrize(("component", "version", "expect"), [
    ("kubernetes", "1.37.2", "Kubernetes v1.37.2"), ("etcd", "3.7.4", "etcd Version: 3.7.4"),
    ("containerd", "2.4.2", "v2.4.2"), ("runc", "1.5.2", "runc version 1.5.2"),
    ("cni-plugins", "1.9.1", "v1.9.1"), ("crictl", "1.37.0", "crictl version 1.37.0"),
    ("coredns", "1.14.6", "CoreDNS-1.14.6"),
])
def test_every_recipe_checks_the_version_its_binaries_print(component, version, expect):
    recipe = recipes.recipe(component, version)
    assert recipe.checks and recipe.checks[0].expect == expect


def test_runc_is_static_with_seccomp_and_cgo_as_its_release_build():
    build = recipes.runc("1.5.2").builds[0]
    assert build.cgo and "seccomp" in build.tags and "-static-pie" in build.ldflags
    assert "libpathrs" not in build.tags


def test_a_recipe_change_changes_its_cache_key():
    assert recipes.recipe("crictl", "1.37.0").key() != recipes.recipe("crictl", "1.36.0").key()
    assert recipes.recipe("crictl", "1.37.0").key() == recipes.recipe("crictl", "1.37.0").key()


def test_go_version_requirements_compare_as_numbers():
    assert recipes.go_version_ok("1.26.0", "1.26.8") and recipes.go_version_ok("1.26", "1.26.8")
    assert not recipes.go_version_ok("1.26.9", "1.26.8") and not recipes.go_version_ok("1.27", "1.26.8")
