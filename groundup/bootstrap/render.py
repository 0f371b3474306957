"""Serialising rendered configs: the same data always gives the same bytes."""

from __future__ import annotations

import json

import yaml


def to_yaml(data: dict) -> bytes:
    """Block-style YAML in the given key order."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).encode()


def to_yaml_documents(documents: list[dict]) -> bytes:
    """Several objects in one `---`-separated stream (one `kubectl apply -f -`)."""
    return yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False, explicit_start=True).encode()


def to_json(data: dict) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode()


def to_toml(data: dict) -> bytes:
    """TOML for nested tables of strings, booleans and integers (containerd's config)."""
    lines: list[str] = []
    _toml_table(data, [], lines)
    return ("\n".join(lines).strip() + "\n").encode()


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__} here: use strings, booleans, integers or lists")


def _toml_table(table: dict, path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    if path and scalars:
        lines += ["", "[" + ".".join(_toml_key(p) for p in path) + "]"]
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in scalars.items()]
    for key, value in table.items():
        if isinstance(value, dict):
            _toml_table(value, [*path, key], lines)
