"""The real Kubernetes components' command-line flags, per minor version, as data.

`<minor>.json` beside this module lists, per component, every flag the real binary of that minor
prints in its `--help`, written by `scripts/kube_flags.py` from the binaries the release builder made.
The bootstrap renderer's tests check rendered units against it, so a flag a newer minor removed is
caught before any node runs it. Pure: no Prefect, stdlib only.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources

COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
_MINOR = re.compile(r"^v?(\d+)\.(\d+)(?:\.\d+.*)?$")
_HELP_FLAG = re.compile(r"^\s+(?:-[A-Za-z], )?--([A-Za-z0-9][A-Za-z0-9_-]*)")


class UnknownKubernetesVersion(ValueError):
    """No flag data for this Kubernetes minor version."""


def normalize_flag(name: str) -> str:
    """A flag name as the components see it: `--log_dir` and `log-dir` are both `log-dir`."""
    return name.lstrip("-").replace("_", "-")


def kubernetes_minor(version: str) -> str:
    """`1.37.2`, `v1.37.2` or `1.37` -> `1.37`."""
    match = _MINOR.match(version.strip())
    if not match:
        raise UnknownKubernetesVersion(f"{version!r} is not a Kubernetes version like 1.37.2")
    return f"{match.group(1)}.{match.group(2)}"


def flags_in_help(text: str) -> list[str]:
    """Every flag a cobra/pflag `--help` lists (`  -v, --v Level ...`, `      --config string ...`)."""
    return sorted({normalize_flag(m.group(1)) for line in text.splitlines() if (m := _HELP_FLAG.match(line))})


def available_minors() -> list[str]:
    """The minors there is flag data for, oldest first."""
    names = [p.name for p in resources.files(__package__).iterdir() if p.name.endswith(".json")]
    return sorted((n[: -len(".json")] for n in names), key=lambda m: tuple(int(x) for x in m.split(".")))


@lru_cache(maxsize=None)
def _load(minor: str) -> dict:
    path = resources.files(__package__) / f"{minor}.json"
    if not path.is_file():
        raise UnknownKubernetesVersion(
            f"no flag data for Kubernetes {minor} (have: {', '.join(available_minors())}); "
            f"run scripts/kube_flags.py with that release's binaries")
    return json.loads(path.read_text())


def known_flags(component: str, version: str) -> frozenset[str]:
    """Every flag name (dashes, no `--`) the real component of that minor accepts."""
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}; one of {', '.join(COMPONENTS)}")
    return frozenset(_load(kubernetes_minor(version))["components"][component]["flags"])


def source(component: str, version: str) -> str:
    return _load(kubernetes_minor(version))["components"][component]["source"]
