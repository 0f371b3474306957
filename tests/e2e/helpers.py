"""Run with the sandbox's environment: export what an independent check needs from the store.

`python -m tests.e2e.helpers SPEC OUTDIR` writes OUTDIR/id_rsa (the cluster's SSH key, mode 0600)
and OUTDIR/expected.json: per node, remote path -> [mode, sha256] of exactly its role's files.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization


def main(spec_path: str, outdir: str) -> None:
    from blocks.artifact_store import get_store
    from groundup.aws.compute import ssh_key_path
    from groundup.distribution import node_files
    from groundup.spec import load_spec

    spec = load_spec(spec_path)
    store = get_store(spec.name)
    out = Path(outdir)
    key = store.read_private_key(ssh_key_path(spec))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    fd = os.open(out / "id_rsa", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    expected = {
        node.short_name: {f.path: [f.mode, hashlib.sha256(f.data).hexdigest()] for f in node_files(store, node)}
        for node in spec.nodes
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
