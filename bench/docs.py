"""The figures of ``docs/benchmarks.md``, generated from ``bench/results/*.json`` (``make
bench`` ends with it; ``make docs`` too): one table per measurement as its latest run
wrote it, with the machine and the time of that run. Nothing in the document is a
figure copied by hand: a test fails while the generated part differs from the results.

Only the part between :data:`BEGIN` and :data:`END` is generated; the rest of the file
(what each measurement does and what bounds it) is written by hand, without figures."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.report import RESULTS
from harness import generated

PATH = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
BEGIN = "<!-- generated from bench/results/*.json by `make bench` / `make docs` -->"
END = "<!-- end of the generated figures -->"
#: the order of the sections: the goals first, then as `make bench` runs them
ORDER = [
    "goals",
    "throughput",
    "throughput-postgresql",
    "ingest",
    "ingest-postgresql",
    "fairness",
    "fairness_split",
    "urgency",
    "urgency_weights",
    "budgets",
    "scale",
    "keys",
    "keys_over_time",
    "dispatcher_cost",
    "shard_fairness",
    "shards",
    "shards_cpu",
    "shards_kill",
    "elasticity",
    "monitoring_latency",
    "monitoring_relist",
    "live_page",
    "profile",
    "broker_floor",
    "queue_memory",
]


def results(folder: Path = RESULTS) -> list[dict[str, Any]]:
    """Every result file, in :data:`ORDER` (others after, by name)."""
    found = {
        p.stem: json.loads(p.read_text())
        for p in sorted(folder.glob("*.json"))
        if not p.stem.startswith("faults-")  # the fault suite's: docs/reliability.md
    }
    rank = {name: i for i, name in enumerate(ORDER)}
    return [found[n] for n in sorted(found, key=lambda n: (rank.get(n, len(ORDER)), n))]


def render(folder: Path = RESULTS) -> str:
    lines = [BEGIN]
    runs = results(folder)
    if not runs:
        lines += ["", "No results yet: `make bench` writes them."]
    for run in runs:
        m = run.get("machine", {})
        lines += [
            "",
            f"### {run['title']}",
            "",
            f"`{run['name']}`, run {m.get('at', '?')} on {m.get('cpus', '?')} CPUs, "
            f"Python {m.get('python', '?')}{_load(m)}.",
            "",
            *_table(run.get("rows", [])),
        ]
    return "\n".join([*lines, "", END])


def _load(machine: dict[str, Any]) -> str:
    load = machine.get("load")
    return "" if load is None else f", load average {load} as it ended"


def _table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["(no rows)"]
    cols = list(dict.fromkeys(c for row in rows for c in row))
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        out.append("| " + " | ".join(_cell(row.get(c)) for c in cols) + " |")
    return out


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, (dict, list)):
        v = json.dumps(v)
    return str(v).replace("|", "\\|").replace("<", "&lt;")


def current(path: Path = PATH) -> str:
    return generated.current(path, BEGIN, END)


def write(path: Path = PATH, folder: Path = RESULTS) -> None:
    generated.write(path, BEGIN, END, render(folder))


if __name__ == "__main__":
    write()
    sys.stdout.write(f"wrote the figures of {PATH}\n")
