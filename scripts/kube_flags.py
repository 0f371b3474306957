"""Write groundup/kube_flags/<minor>.json from the real binaries' `--help`.

    python scripts/kube_flags.py 1.37.2     # builds the release first unless the cache has it
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from groundup.kube_flags import COMPONENTS, flags_in_help, kubernetes_minor  # noqa: E402
from sandbox.release_builder import ReleaseBuilder  # noqa: E402


def main(version: str) -> int:
    built = ReleaseBuilder(log=lambda line: print(line, file=sys.stderr)).build("kubernetes", version)
    components = {}
    for component in COMPONENTS:
        text = subprocess.run([str(built / component), "--help"], capture_output=True, text=True, timeout=60).stdout
        components[component] = {"flags": flags_in_help(text),
                                 "source": f"{component} v{version} --help, built from k8s.io/kubernetes@v{version}"}
    minor = kubernetes_minor(version)
    data = {"kubernetes_minor": minor, "about": "written by scripts/kube_flags.py; do not edit",
            "components": components}
    out = ROOT / "groundup" / "kube_flags" / f"{minor}.json"
    out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(out, {c: len(v["flags"]) for c, v in components.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
