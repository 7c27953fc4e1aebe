"""The fault table of ``docs/reliability.md``, generated from the last complete
``make faults`` run: each run of the suite over all of its faults writes
``bench/results/faults-<profile>.json`` (:func:`record`), and ``make faults`` / ``make
docs`` render every such file between :data:`BEGIN` and :data:`END` (:func:`write`).
A test fails while the document differs from the files, so no figure is copied by hand.
Runs of a few faults (``--only``), of some runs (``--run``) or of the CI subset
(``--fast``) record nothing. The runs are shown in the suite's order (:data:`ORDER`:
full, machines, shards), a run with dispatcher shards saying how many."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.report import RESULTS, machine
from harness import generated

PATH = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
BEGIN = "<!-- generated from bench/results/faults-*.json by `make faults` / `make docs` -->"
END = "<!-- end of the generated fault table -->"
PREFIX = "faults-"
#: the runs of ``make faults`` in their order (:func:`harness.faults.suite.plan`); a file
#: of another profile comes after them
ORDER = ("full", "machines", "shards")


def record(
    profile: str,
    ledger: str,
    rows: list[dict[str, Any]],
    final: str,
    shards: int = 0,
    partitions: int = 0,
    folder: Path = RESULTS,
) -> Path:
    """Write one complete run's table: ``rows`` as :func:`render` shows them; ``shards``:
    the dispatcher shards it ran, over ``partitions`` (0: one dispatcher)."""
    folder.mkdir(exist_ok=True)
    path = folder / f"{PREFIX}{profile}.json"
    body: dict[str, Any] = {"profile": profile, "ledger": ledger, "machine": machine()}
    if shards:
        body |= {"shards": shards, "partitions": partitions}
    path.write_text(json.dumps({**body, "rows": rows, "final": final}, indent=2) + "\n")
    return path


def runs(folder: Path = RESULTS) -> list[dict[str, Any]]:
    """The recorded runs, in :data:`ORDER`."""
    found = [json.loads(p.read_text()) for p in sorted(folder.glob(f"{PREFIX}*.json"))]
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(found, key=lambda run: rank.get(run["profile"], len(ORDER)))


def render(folder: Path = RESULTS) -> str:
    lines = [BEGIN]
    found = runs(folder)
    if not found:
        lines += ["", "No complete run recorded yet: `make faults` records one."]
    for run in found:
        m = run["machine"]
        shards = (
            f", {run['shards']} dispatcher shards over {run['partitions']} partitions"
            if run.get("shards")
            else ""
        )
        lines += [
            "",
            f"#### `{run['profile']}` run, {run['ledger']} ledger{shards}",
            "",
            f"Run {m.get('at', '?')} on {m.get('cpus', '?')} CPUs, load average "
            f"{m.get('load', '?')} as it ended.",
            "",
            "| fault | injected | recovery s | lost | dup | viol | stuck |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in run["rows"]:
            cells = [row["what"], row["injected"], row["recovery"], *row["counts"]]
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
        lines += ["", "```", run["final"], "```"]
    return "\n".join([*lines, "", END])


def current(path: Path = PATH) -> str:
    return generated.current(path, BEGIN, END)


def write(path: Path = PATH, folder: Path = RESULTS) -> None:
    generated.write(path, BEGIN, END, render(folder))


if __name__ == "__main__":
    write()
    sys.stdout.write(f"wrote the fault table of {PATH}\n")
