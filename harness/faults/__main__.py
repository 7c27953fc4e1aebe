"""``python -m harness.faults [--fast] [--only NAME ...] [--dir DIR] [--seed N]``

Exit status: 0 when nothing was lost, duplicated, stuck or run past a limit, the
queues drained and every fault was injected; 1 otherwise; 2 when the suite could not
run (no rabbitmq-server).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from harness import private_broker
from harness.faults.suite import FAST, FAST_FAULTS, FAULTS, FULL, FULL_FAULTS, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.faults", description=__doc__)
    parser.add_argument("--fast", action="store_true", help="the CI subset, shorter load")
    parser.add_argument(
        "--only", action="append", choices=sorted(FAULTS), help="run only these faults"
    )
    parser.add_argument("--dir", type=Path, help="where logs and the broker's data go")
    parser.add_argument("--seed", type=int, help="random seed (printed at the start)")
    args = parser.parse_args(argv)
    if not private_broker.available():
        print("faults: rabbitmq-server is not installed: no private node to run against")
        return 2
    profile = FAST if args.fast else FULL
    faults = FAST_FAULTS if args.fast else [FAULTS[n] for n in FULL_FAULTS]
    if args.only:
        faults = [FAULTS[n] for n in args.only]
    base = args.dir or Path(tempfile.mkdtemp(prefix="carousel-faults-"))
    result = run(profile, faults, base, seed=args.seed)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
