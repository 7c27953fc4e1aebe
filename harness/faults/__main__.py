"""``python -m harness.faults [--fast] [--run RUN ...] [--only NAME ...] [--dir DIR] [--seed N]``

Runs the full suite on a SQLite ledger, then the machines suite on PostgreSQL, then the
shards suite (dispatcher shards, PostgreSQL) (``--fast``: the CI subset alone; ``--run``:
only those runs, with their own faults; ``--only``: those faults, each in the run it
needs, or with ``--run`` those of the runs named), prints each run's report and, last,
each run's final line. Only a complete run (none of the three options) is recorded in
``docs/reliability.md``.

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
from harness.faults.suite import FAULTS, RUN_NAMES, SuiteResult, plan, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.faults", description=__doc__)
    parser.add_argument("--fast", action="store_true", help="the CI subset, shorter load")
    parser.add_argument(
        "--only", action="append", choices=sorted(FAULTS), help="run only these faults"
    )
    parser.add_argument(
        "--run",
        action="append",
        choices=sorted(set(RUN_NAMES)),
        help="run only these runs of the suite (each with its own faults)",
    )
    parser.add_argument("--dir", type=Path, help="where logs and the broker's data go")
    parser.add_argument("--seed", type=int, help="random seed (printed at the start)")
    args = parser.parse_args(argv)
    if not private_broker.available():
        print("faults: rabbitmq-server is not installed: no private node to run against")
        return 2
    runs = plan(args.fast, args.only or (), args.run or ())
    if not runs:
        print("faults: no run has those faults")
        return 2
    pg_runs = [p.name for p, _ in runs if p.ledger == POSTGRESQL]
    if pg_runs and not ledgers.pg_answers():
        print(f"faults: no PostgreSQL at {ledgers.PG} for the {' and '.join(pg_runs)} run")
        return 2
    base = args.dir or Path(tempfile.mkdtemp(prefix="carousel-faults-"))
    results: list[SuiteResult] = []
    for profile, faults in runs:
        results.append(run(profile, faults, base / profile.name, seed=args.seed))
    print()
    for r in results:
        print(f"{r.profile.name} ({r.profile.ledger}): {r.final_line}{'' if r.ok else ' — FAILED'}")
    if not (args.fast or args.only or args.run):  # complete: docs/reliability.md shows it
        for r in results:
            p = r.profile
            fault_docs.record(p.name, p.ledger, r.rows(), r.final_line, p.shards, p.partitions)
        fault_docs.write()
        print(f"recorded in {fault_docs.PATH}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
