"""Strict placeholders for the five Kubernetes binaries no reachable registry ships.

`build_placeholder` writes one executable zipapp per component and version (`#!/usr/bin/env python3`,
mode 0755) that embeds the version and the real component's flag set (`groundup.kube_flags`). It runs
on the sandbox nodes with Debian 12's python3, python3-cryptography and python3-yaml, and nothing else.
It is not Kubernetes: it checks its flags, every file and certificate it is given and the TLS paths the
real component would use, then serves or dials what docs/placeholders.md describes.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

from groundup.files import atomic_write
from groundup.kube_flags import COMPONENTS, flag_set

RUNTIME = Path(__file__).with_name("runtime")
PACKAGE = "placeholder"
SHEBANG = b"#!/usr/bin/env python3\n"
MAIN = f"from {PACKAGE}.components import main\nraise SystemExit(main())\n"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def placeholder_files(component: str, version: str) -> dict[str, bytes]:
    """Archive member name -> bytes: the runtime package, its embedded data and `__main__.py`."""
    flags = flag_set(component, version)
    data = {**flags.to_json(), "version": version.lstrip("v")}
    files = {f"{PACKAGE}/{p.name}": p.read_bytes() for p in sorted(RUNTIME.glob("*.py"))}
    files[f"{PACKAGE}/data.json"] = json.dumps(data, indent=1, sort_keys=True).encode()
    files["__main__.py"] = MAIN.encode()
    return files


def build_placeholder(component: str, version: str, dest: Path) -> Path:
    """Write the placeholder for `component` at `version` (e.g. "1.32.3") to `dest`; the same inputs give the same bytes."""
    if component not in COMPONENTS:
        raise ValueError(f"no placeholder for {component!r}; one of {', '.join(COMPONENTS)}")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, content in sorted(placeholder_files(component, version).items()):
            info = zipfile.ZipInfo(name, _FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zipped.writestr(info, content)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dest, SHEBANG + archive.getvalue(), mode=0o755, durable=False)
    os.chmod(dest, 0o755)
    return dest
