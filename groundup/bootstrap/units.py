"""systemd units as data: a command with its flags, the files it reads, and how systemd runs it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

UNIT_DIR = "/etc/systemd/system"
_PLAIN = re.compile(r"^[A-Za-z0-9_@%+=:,./\-\[\]*]*$")

FlagValue = str | bool


@dataclass(frozen=True)
class Unit:
    """One systemd service: `ExecStart=command --flag=value ...`, plus what else it needs to know.

    Without a command, the ExecStart lines are in `service` (a oneshot of several steps).
    """

    name: str
    description: str
    documentation: str
    command: str | None
    flags: Mapping[str, FlagValue] = field(default_factory=dict)
    reads: frozenset[str] = frozenset()
    service: tuple[tuple[str, str], ...] = (("Restart", "on-failure"), ("RestartSec", "5"))
    after: tuple[str, ...] = ()
    wants: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        return f"{UNIT_DIR}/{self.name}.service"

    @property
    def inputs(self) -> frozenset[str]:
        """Every path whose change must restart the unit: its unit file, its binary, what it reads."""
        return frozenset({self.path, *([self.command] if self.command else []), *self.reads})

    def exec_start(self) -> str:
        lines = [self.command] + [render_flag(name, value) for name, value in self.flags.items()]
        return " \\\n  ".join(lines)

    def text(self) -> str:
        unit = [("Description", self.description), ("Documentation", self.documentation)]
        unit += [("After", " ".join(self.after))] if self.after else []
        unit += [("Wants", " ".join(self.wants))] if self.wants else []
        start = [("ExecStart", self.exec_start())] if self.command else []
        sections = [("Unit", unit), ("Service", [*start, *self.service]),
                    ("Install", [("WantedBy", "multi-user.target")])]
        return render_sections(sections)


def render_flag(name: str, value: FlagValue) -> str:
    """`--name=value`; True gives the bare `--name` (a boolean switch)."""
    if value is True:
        return f"--{name}"
    if value is False:
        return f"--{name}=false"
    return f"--{name}={quote(value)}"


def quote(value: str) -> str:
    """A value as systemd's ExecStart reads it back unchanged: `%` and `$` doubled, quoted if needed."""
    escaped = value.replace("%", "%%").replace("$", "$$")
    if _PLAIN.fullmatch(value):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_sections(sections: list[tuple[str, list[tuple[str, str]]]]) -> str:
    blocks = ["\n".join([f"[{name}]", *(f"{k}={v}" for k, v in options)]) for name, options in sections]
    return "\n\n".join(blocks) + "\n"
