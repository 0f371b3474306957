"""The real Kubernetes components' command-line flags, per minor version, as data.

`<minor>.json` beside this module lists, per component, every flag upstream's reference docs give
for that minor (and which of them take no value). The bootstrap renderer's tests check rendered
units against it; the sandbox's placeholders embed it and reject any other flag, as cobra does.
Pure: no Prefect, stdlib only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
_MINOR = re.compile(r"^v?(\d+)\.(\d+)(?:\.\d+.*)?$")


class UnknownKubernetesVersion(ValueError):
    """No flag data for this Kubernetes minor version."""


@dataclass(frozen=True)
class FlagSet:
    """One component's flags for one minor: names normalised to dashes, without the leading `--`."""

    component: str
    minor: str
    flags: frozenset[str]
    bool_flags: frozenset[str]
    shorthands: tuple[tuple[str, str], ...]
    optional_values: tuple[tuple[str, str], ...]
    source: str

    def to_json(self) -> dict:
        """The form the placeholders embed."""
        return {
            "component": self.component,
            "minor": self.minor,
            "flags": sorted(self.flags),
            "bool_flags": sorted(self.bool_flags),
            "shorthands": dict(self.shorthands),
            "optional_values": dict(self.optional_values),
            "source": self.source,
        }


def normalize_flag(name: str) -> str:
    """A flag name as the components see it: `--log_dir` and `log-dir` are both `log-dir`."""
    return name.lstrip("-").replace("_", "-")


def kubernetes_minor(version: str) -> str:
    """`1.32.3`, `v1.32.3` or `1.32` -> `1.32`."""
    match = _MINOR.match(version.strip())
    if not match:
        raise UnknownKubernetesVersion(f"{version!r} is not a Kubernetes version like 1.32.3")
    return f"{match.group(1)}.{match.group(2)}"


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
            f"add groundup/kube_flags/{minor}.json from that release's reference docs"
        )
    return json.loads(path.read_text())


def flag_set(component: str, version: str) -> FlagSet:
    """The component's flags for the minor of `version`; raises for an unknown component or minor."""
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}; one of {', '.join(COMPONENTS)}")
    minor = kubernetes_minor(version)
    entry = _load(minor)["components"][component]
    return FlagSet(
        component=component,
        minor=minor,
        flags=frozenset(normalize_flag(f) for f in entry["flags"]),
        bool_flags=frozenset(normalize_flag(f) for f in entry["bool_flags"]),
        shorthands=tuple(sorted(entry.get("shorthands", {}).items())),
        optional_values=tuple(sorted(entry.get("optional_value_flags", {}).items())),
        source=entry["source"],
    )


def known_flags(component: str, version: str) -> frozenset[str]:
    """Every flag name (dashes, no `--`) the real component of that minor accepts."""
    return flag_set(component, version).flags
