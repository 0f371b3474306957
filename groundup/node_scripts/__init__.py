"""Scripts the bootstrap copies to a node and runs there with the node's own python3 (stdlib only)."""

from __future__ import annotations

from importlib import resources


def script_bytes(name: str) -> bytes:
    """The bytes of one node-side script, e.g. `install_releases.py`, ready to upload."""
    script = resources.files(__name__).joinpath(name)
    if not script.is_file():
        raise FileNotFoundError(f"no node script {name!r} in {__name__}; is the package data installed?")
    return script.read_bytes()
