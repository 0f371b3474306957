"""`make chaos`: the fault-injection suite on the running sandbox.

Each case builds clusters/sandbox.yaml (3+3) with ONE fault, records how it ended (recovered, or
failed with a message naming the cause), tears the cluster down and checks that nothing of it is
left (moto and this machine, `sandbox.leaks`). Prints the table; exit 1 when a case did not end as
the product owes or leaked anything.

    .venv/bin/python scripts/chaos.py                         # every case, in order
    .venv/bin/python scripts/chaos.py throttling slow-etcd    # some
    .venv/bin/python scripts/chaos.py --list

Each case takes the shared sandbox lock (`sandbox.lock`) for itself, so other users of the sandbox
get their turn in between; under `flock /tmp/groundup-sandbox.lock` the cases run back to back.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox import chaos  # noqa: E402
from sandbox.lifecycle import status  # noqa: E402
from sandbox.lock import sandbox_lock  # noqa: E402
from sandbox.state import state_dir  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help=f"cases to run (default: all): {', '.join(chaos.CASES)}")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--no-lock", action="store_true", help="the caller already holds the sandbox lock")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.list:
        for name, case in chaos.CASES.items():
            print(f"{name:<24} {(case.__doc__ or '').strip().splitlines()[0] if case.__doc__ else ''}")
        return 0
    unknown = [c for c in args.cases if c not in chaos.CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(chaos.CASES)}")
    up = status(state_dir())
    if not (up.get("up") and up["moto"]["running"] and up["controller"]["running"] and up["prefect"]["running"]):
        print("chaos: the sandbox is not up: run `groundup sandbox up` (or `make demo`) first", file=sys.stderr)
        return 2
    names = args.cases or list(chaos.CASES)
    started = datetime.datetime.now(datetime.timezone.utc)
    results = []
    for name in names:
        with (nullcontext(0.0) if args.no_lock else sandbox_lock()) as waited:
            print(f"chaos: {name} (waited {waited:.0f} s for the sandbox lock)", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            result = chaos.run_case(name)
        results.append(result)
        print(f"chaos: {name}: {result.ending} in {time.monotonic() - t0:.0f} s, leaked {chaos.leaks.count(result.leaked)}"
              + ("" if result.ok else f"; NOT AS OWED: {result.problems} {result.leaked}"), file=sys.stderr, flush=True)
        for note in result.notes:
            print(f"   {note}", file=sys.stderr)
    print(f"\nchaos run {started:%Y-%m-%d %H:%M} UTC, {len(results)} cases\n")
    print(chaos.table(results))
    if args.json:
        chaos.dump(results, args.json)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
