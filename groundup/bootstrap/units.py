"""systemd units from data: a description, an ExecStart with its flags, and the service settings."""

from __future__ import annotations

from collections.abc import Mapping

Flags = Mapping[str, str | bool | None]


def exec_start(binary: str, flags: Flags) -> str:
    """`binary \\\n  --flag=value ...`: one flag per line, in the order given; True is a bare flag."""
    parts = [binary]
    for name, value in flags.items():
        if value is None or value is False:
            continue
        parts.append(f"--{name}" if value is True else f"--{name}={value}")
    return " \\\n  ".join(parts)


def unit_file(description: str, exec_line: str, *, documentation: str, after: tuple[str, ...] = (),
              requires: tuple[str, ...] = (), service: Mapping[str, str] | None = None) -> bytes:
    """A `[Unit]`/`[Service]`/`[Install]` file enabled for multi-user.target."""
    lines = ["[Unit]", f"Description={description}", f"Documentation={documentation}"]
    if after:
        lines.append("After=" + " ".join(after))
    if requires:
        lines.append("Requires=" + " ".join(requires))
    lines += ["", "[Service]", f"ExecStart={exec_line}"]
    settings = {"Restart": "on-failure", "RestartSec": "5", **(service or {})}
    lines += [f"{key}={value}" for key, value in settings.items()]
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines).encode()


def exec_command(text: bytes) -> list[str]:
    """The ExecStart command line of a rendered unit, continuation lines joined, split into words."""
    lines = text.decode().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("ExecStart="))
    words: list[str] = []
    for line in lines[first:]:
        body = line.removeprefix("ExecStart=").strip()
        words += body.rstrip("\\").split()
        if not body.endswith("\\"):
            break
    return words


def unit_flags(text: bytes) -> dict[str, str | bool]:
    """The flags of a rendered unit's ExecStart: name -> value (True for a bare flag)."""
    flags: dict[str, str | bool] = {}
    for word in exec_command(text)[1:]:
        name, sep, value = word.removeprefix("--").partition("=")
        flags[name] = value if sep else True
    return flags
