"""``python -m harness.faults [--fast] [--only NAME ...] [--dir DIR] [--seed N]``

Runs the full suite on a SQLite ledger, then the machines suite on PostgreSQL (``--fast``:
the CI subset alone; ``--only``: those faults, each in the run of the ledger it needs),
prints each run's report and, last, each run's final line.

Exit status: 0 when every run is clean — nothing lost, duplicated, stuck or run past a
limit or out of order, the queues drained, every fault injected; 1 otherwise; 2 when the
suite could not run (no rabbitmq-server, or no PostgreSQL for a run that needs it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from harness import ledgers, private_broker
from harness.faults import docs as fault_docs
from harness.faults.ledgerdb import POSTGRESQL
from harness.faults.suite import FAULTS, SuiteResult, plan, run


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
    runs = plan(args.fast, args.only or ())
    if any(p.ledger == POSTGRESQL for p, _ in runs) and not ledgers.pg_answers():
        print(f"faults: no PostgreSQL at {ledgers.PG} for the machines run")
        return 2
    base = args.dir or Path(tempfile.mkdtemp(prefix="carousel-faults-"))
    results: list[SuiteResult] = []
    for profile, faults in runs:
        results.append(run(profile, faults, base / profile.name, seed=args.seed))
    print()
    for r in results:
        print(f"{r.profile.name} ({r.profile.ledger}): {r.final_line}{'' if r.ok else ' — FAILED'}")
    if not args.fast and not args.only:  # a complete run: docs/reliability.md shows it
        for r in results:
            fault_docs.record(r.profile.name, r.profile.ledger, r.rows(), r.final_line)
        fault_docs.write()
        print(f"recorded in {fault_docs.PATH}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
