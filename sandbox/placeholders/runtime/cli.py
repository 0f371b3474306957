"""Command-line parsing as the real components' cobra/pflag does it, against an embedded flag set."""

from __future__ import annotations

from dataclasses import dataclass, field

TRUE = {"1", "t", "T", "TRUE", "true", "True"}
FALSE = {"0", "f", "F", "FALSE", "false", "False"}


class UsageError(Exception):
    """The command line is wrong; the message is what cobra prints after `Error: `."""


@dataclass
class Args:
    """Parsed flags: every value each flag was given, in order."""

    values: dict[str, list[str]] = field(default_factory=dict)

    def get(self, name: str, default: str | None = None) -> str | None:
        found = self.values.get(name)
        return found[-1] if found else default

    def all(self, name: str) -> list[str]:
        """Every value, comma lists split (pflag's string slices)."""
        return [part for value in self.values.get(name, []) for part in value.split(",") if part]

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.get(name)
        return default if value is None else value in TRUE

    def has(self, name: str) -> bool:
        return name in self.values


def parse(argv: list[str], spec: dict) -> Args:
    """Parse `argv` against the embedded flag set; UsageError as pflag words it."""
    known = set(spec["flags"])
    bools = set(spec["bool_flags"])
    shorthands = spec.get("shorthands", {})
    optional = spec.get("optional_values", {})
    args = Args()
    positional: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token == "--":
            positional += argv[i:]
            break
        if token.startswith("--"):
            raw, has_value, value = token[2:].partition("=")
            name = raw.replace("_", "-")
            if name not in known:
                raise UsageError(f"unknown flag: --{raw}")
        elif token.startswith("-") and len(token) > 1:
            raw, has_value, value = token[1:].partition("=")
            if raw[0] not in shorthands:
                raise UsageError(f"unknown shorthand flag: {raw[0]!r} in {token}")
            name = shorthands[raw[0]]
            if len(raw) > 1 and not has_value:
                has_value, value = "=", raw[1:]
        else:
            positional.append(token)
            continue
        if name in bools:
            if has_value and value not in TRUE | FALSE:
                raise UsageError(f'invalid argument "{value}" for "--{name}" flag: strconv.ParseBool: '
                                 f'parsing "{value}": invalid syntax')
            value = value if has_value else "true"
        elif not has_value:
            if name in optional:
                value = optional[name]
            elif i < len(argv):
                value = argv[i]
                i += 1
            else:
                raise UsageError(f"flag needs an argument: --{name}")
        args.values.setdefault(name, []).append(value)
    if positional:
        raise UsageError(f'"{spec["component"]}" does not take any arguments, got {positional!r}')
    return args
