"""How each upstream release is built from its own Go module: packages, build tags, cgo, version ldflags.

Each recipe copies the settings of the project's own release build (its Makefile or hack/ scripts, read
from the module at that version) so the binaries report their version the way upstream's do. A module
whose go.mod has no replace directive is built with `go install pkg@version`, under upstream's own
go.mod; one that has replaces (k8s.io/kubernetes, etcd's server and tools) is built through a wrapper
module generated from that version's own go.mod. One wrapper per upstream module: two projects'
dependency sets never mix. Pure logic: nothing here runs Go.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

BUILDER_REVISION = 1
"""Bump when a recipe or the wrapper generation changes, so cached builds are redone."""

KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy",
                       "kubectl")
COMPONENTS = ("kubernetes", "etcd", "containerd", "runc", "cni-plugins", "crictl", "coredns")

_REQUIRE_LINE = re.compile(r"^\s*(\S+)\s+(v\S+)")
_LOCAL_REPLACE = re.compile(r"^\s*(\S+)(?:\s+v\S+)?\s*=>\s*(\.\.?/\S*)\s*$")


@dataclass(frozen=True)
class Target:
    """One binary: the package to build and the file name it gets."""

    package: str
    output: str


@dataclass(frozen=True)
class ModuleBuild:
    """Everything built from one upstream module at one version, with one set of go flags."""

    module: str
    version: str
    targets: tuple[Target, ...] = ()
    package_globs: tuple[str, ...] = ()
    """Directories (relative to the module root) whose main packages are all built, e.g. plugins/main/*."""
    exclude: tuple[str, ...] = ()
    cgo: bool = False
    tags: tuple[str, ...] = ()
    ldflags: tuple[str, ...] = ()
    flags: tuple[str, ...] = ("-trimpath",)
    staging_version: str | None = None
    """k8s.io/kubernetes only: the published version of its staging modules (v0.37.2 for v1.37.2)."""

    def key(self) -> list:
        return [self.module, self.version, [(t.package, t.output) for t in self.targets], list(self.package_globs),
                list(self.exclude), self.cgo, list(self.tags), list(self.ldflags), list(self.flags),
                self.staging_version]


@dataclass(frozen=True)
class VersionCheck:
    """A built binary run with `args` must print `expect` (its upstream version string)."""

    binary: str
    args: tuple[str, ...]
    expect: str


@dataclass(frozen=True)
class Recipe:
    """One component at one version: the module builds and how to check the result."""

    component: str
    version: str
    builds: tuple[ModuleBuild, ...]
    checks: tuple[VersionCheck, ...]
    system_packages: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)

    def key(self) -> list:
        return [BUILDER_REVISION, self.component, self.version, [b.key() for b in self.builds]]


def _x(package: str, values: dict[str, str]) -> tuple[str, ...]:
    return tuple(f"-X {package}.{name}={value}" for name, value in values.items())


def kubernetes(version: str, build_date: str, commit: str | None = None) -> Recipe:
    """The five Kubernetes binaries and kubectl, as hack/lib/golang.sh builds KUBE_STATIC_BINARIES.

    Version ldflags as hack/lib/version.sh writes them, into both component-base and client-go;
    `build_date` is the module's publication time (a reproducible stand-in for the build clock).
    """
    major, minor, patch = version.split(".")
    values = {"buildDate": build_date, "gitMajor": major, "gitMinor": minor, "gitVersion": f"v{version}"}
    if commit:
        values.update(gitCommit=commit, gitTreeState="clean")
    ldflags = (*_x("k8s.io/component-base/version", values), *_x("k8s.io/client-go/pkg/version", values), "-s", "-w")
    build = ModuleBuild(
        module="k8s.io/kubernetes", version=f"v{version}",
        targets=tuple(Target(f"k8s.io/kubernetes/cmd/{c}", c) for c in KUBERNETES_COMMANDS),
        tags=("selinux", "notest", "grpcnotrace"), ldflags=ldflags, flags=("-trimpath", "-installsuffix=static"),
        staging_version=f"v0.{minor}.{patch}",
    )
    checks = tuple(VersionCheck(c, ("--version",), f"Kubernetes v{version}") for c in KUBERNETES_COMMANDS
                   if c != "kubectl")
    return Recipe("kubernetes", version, (build,),
                  (*checks, VersionCheck("kubectl", ("version", "--client"), f"Client Version: v{version}")),
                  notes=("CGO_ENABLED=0 for all six, kubelet included (upstream builds it without cgo since 1.36)",))


def etcd(version: str) -> Recipe:
    """etcd, etcdctl and etcdutl as scripts/build_lib.sh builds them: static, -trimpath -installsuffix=cgo."""
    ldflags = ("-X go.etcd.io/etcd/api/v3/version.GitSHA=v" + version,)
    builds = tuple(
        ModuleBuild(module=f"go.etcd.io/etcd/{path}/v3", version=f"v{version}",
                    targets=(Target(f"go.etcd.io/etcd/{path}/v3", name),), ldflags=ldflags,
                    flags=("-trimpath", "-installsuffix=cgo"))
        for path, name in (("server", "etcd"), ("etcdctl", "etcdctl"), ("etcdutl", "etcdutl")))
    return Recipe("etcd", version, builds, (
        VersionCheck("etcd", ("--version",), f"etcd Version: {version}"),
        VersionCheck("etcdctl", ("version",), f"etcdctl version: {version}"),
        VersionCheck("etcdutl", ("version",), f"etcdutl version: {version}"),
    ), notes=("Git SHA is the tag: the module zip carries no commit",))


def containerd(version: str) -> Recipe:
    """containerd, ctr, containerd-stress and the runc shim, with the Makefile's version ldflags."""
    package = "github.com/containerd/containerd/v2"
    version_x = _x(f"{package}/version", {"Version": f"v{version}", "Package": package})
    tags = ("urfave_cli_no_docs", "no_btrfs", "no_devmapper", "no_zfs")
    daemon = ModuleBuild(
        module=package, version=f"v{version}",
        targets=tuple(Target(f"{package}/cmd/{c}", c) for c in ("containerd", "ctr", "containerd-stress")),
        tags=tags, ldflags=(*version_x, "-s", "-w"))
    shim = ModuleBuild(
        module=package, version=f"v{version}",
        targets=(Target(f"{package}/cmd/containerd-shim-runc-v2", "containerd-shim-runc-v2"),),
        tags=(*tags, "no_grpc"), ldflags=(*version_x, "-s", "-w", "-extldflags", "-static"))
    return Recipe("containerd", version, (daemon, shim), (
        VersionCheck("containerd", ("--version",), f"v{version}"),
        VersionCheck("ctr", ("--version",), f"v{version}"),
        VersionCheck("containerd-shim-runc-v2", ("-v",), f"v{version}"),
    ), notes=("static (CGO_ENABLED=0), so btrfs is left out, as in upstream's static release",))


def runc(version: str) -> Recipe:
    """runc's static release build (`make static`): cgo, seccomp, static-pie.

    libpathrs (a Rust library runc 1.5 may link) has no Debian package; runc's pure-Go fallback is used.
    """
    build = ModuleBuild(
        module="github.com/opencontainers/runc", version=f"v{version}",
        targets=(Target("github.com/opencontainers/runc", "runc"),), cgo=True,
        tags=("seccomp", "urfave_cli_no_docs", "netgo", "osusergo"),
        ldflags=(f"-X main.gitCommit=v{version}", "-linkmode", "external", "-extldflags", "-static-pie"),
        flags=("-trimpath", "-buildmode=pie"))
    return Recipe("runc", version, (build,), (VersionCheck("runc", ("--version",), f"runc version {version}"),),
                  system_packages=("libseccomp-dev", "gcc", "pkg-config"),
                  notes=("built without the libpathrs tag (no Debian package for it)",))


def cni_plugins(version: str) -> Recipe:
    """Every Linux plugin, as build_linux.sh builds them, with the release's static ldflags."""
    build = ModuleBuild(
        module="github.com/containernetworking/plugins", version=f"v{version}",
        package_globs=("plugins/meta/*", "plugins/main/*", "plugins/ipam/*"), exclude=("windows",),
        ldflags=("-extldflags", "-static",
                 f"-X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=v{version}"))
    return Recipe("cni-plugins", version, (build,), (VersionCheck("bridge", (), f"v{version}"),))


def crictl(version: str) -> Recipe:
    build = ModuleBuild(
        module="sigs.k8s.io/cri-tools", version=f"v{version}",
        targets=(Target("sigs.k8s.io/cri-tools/cmd/crictl", "crictl"),),
        ldflags=(f"-X sigs.k8s.io/cri-tools/pkg/version.Version={version}",))
    return Recipe("crictl", version, (build,), (VersionCheck("crictl", ("--version",), f"crictl version {version}"),))


def coredns(version: str) -> Recipe:
    build = ModuleBuild(
        module="github.com/coredns/coredns", version=f"v{version}",
        targets=(Target("github.com/coredns/coredns", "coredns"),), tags=("grpcnotrace",),
        ldflags=("-s", "-w", f"-X github.com/coredns/coredns/coremain.GitCommit=v{version}"))
    return Recipe("coredns", version, (build,), (VersionCheck("coredns", ("-version",), f"CoreDNS-{version}"),))


def recipe(component: str, version: str, *, build_date: str = "1970-01-01T00:00:00Z") -> Recipe:
    """The recipe for `component` at `version` (Kubernetes also needs its module's publication time)."""
    if component == "kubernetes":
        return kubernetes(version, build_date)
    makers = {"etcd": etcd, "containerd": containerd, "runc": runc, "cni-plugins": cni_plugins,
              "crictl": crictl, "coredns": coredns}
    if component not in makers:
        raise ValueError(f"no recipe for {component!r}; one of {', '.join(COMPONENTS)}")
    return makers[component](version)


def has_replaces(gomod: str) -> bool:
    """Whether `go install pkg@version` refuses this go.mod (it has replace or exclude directives)."""
    return any(re.match(r"^\s*(replace|exclude)\b", line) for line in gomod.splitlines())


def _directives(gomod: str, keyword: str) -> list[str]:
    """The bodies of `keyword ...` lines and `keyword ( ... )` blocks, comments stripped."""
    bodies, inside = [], False
    for raw in gomod.splitlines():
        line = raw.split("//", 1)[0].rstrip()
        if inside:
            if line.strip() == ")":
                inside = False
            elif line.strip():
                bodies.append(line.strip())
        elif re.match(rf"^{keyword}\s*\($", line.strip()):
            inside = True
        elif re.match(rf"^{keyword}\s+", line):
            bodies.append(line.split(None, 1)[1].strip())
    return bodies


def wrapper_gomod(build: ModuleBuild, upstream_gomod: str) -> str:
    """A main module that builds `build`'s packages from the published module at its exact version.

    It copies upstream's `go` and `godebug` lines (they apply only in the main module), requires the
    module, and turns each local-path replace into what the published module means by it: a staging
    module (k8s.io/kubernetes: required at v0.0.0, or only replaced) is replaced by its published
    version (`staging_version`); a sibling required at a real version (etcd's api, client, pkg) needs nothing.
    `tool` lines keep `go mod tidy` from dropping the main packages' dependencies.
    """
    go_line = next((ln.split()[1] for ln in upstream_gomod.splitlines() if re.match(r"^go\s+\S+", ln)), None)
    if go_line is None:
        raise ValueError(f"{build.module} {build.version}: its go.mod has no go line")
    required = {m.group(1): m.group(2) for body in _directives(upstream_gomod, "require")
                if (m := _REQUIRE_LINE.match(body))}
    replaces = []
    for body in _directives(upstream_gomod, "replace"):
        match = _LOCAL_REPLACE.match(body)
        if not match:
            continue
        module = match.group(1)
        if required.get(module, "v0.0.0") != "v0.0.0":
            continue  # a sibling published at the version required: the requirement says it all
        if build.staging_version is not None:
            replaces.append(f"\t{module} => {module} {build.staging_version}")
        elif module in required:
            raise ValueError(f"{build.module} {build.version} requires {module} v0.0.0 through a local replace "
                             "and the recipe names no published version for it")
    lines = [f"module groundup.local/build/{build.module.replace('/', '-')}", "", f"go {go_line}", ""]
    godebug = _directives(upstream_gomod, "godebug")
    if godebug:
        lines += [f"godebug {g}" for g in godebug] + [""]
    lines += [f"require {build.module} {build.version}", ""]
    if replaces:
        lines += ["replace (", *sorted(replaces), ")", ""]
    tools = sorted({t.package for t in build.targets})
    if tools:
        lines += ["tool (", *(f"\t{t}" for t in tools), ")", ""]
    return "\n".join(lines)


def ldflags_argument(build: ModuleBuild) -> str:
    """The -ldflags value (it applies to the main package built, the only one linked)."""
    return " ".join(build.ldflags)


def go_build_env(build: ModuleBuild) -> dict[str, str]:
    return {"CGO_ENABLED": "1" if build.cgo else "0"}


def go_version_ok(required: str, toolchain: str) -> bool:
    """Whether a toolchain `1.26.8` satisfies a go.mod's `go 1.26.0` (or `1.26`)."""
    def parts(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", v)[:3])
    return parts(required) <= parts(toolchain)
