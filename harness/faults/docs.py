"""The fault table of ``docs/reliability.md``, generated from the last complete
``make faults`` run: each run of the suite over all of its faults writes
``bench/results/faults-<profile>.json`` (:func:`record`), and ``make faults`` / ``make
docs`` render every such file between :data:`BEGIN` and :data:`END` (:func:`write`).
A test fails while the document differs from the files, so no figure is copied by hand.
Runs of a few faults (``--only``) or of the CI subset (``--fast``) record nothing."""

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


def record(profile: str, ledger: str, rows: list[dict[str, Any]], final: str) -> Path:
    """Write one complete run's table: ``rows`` as :func:`render` shows them."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{PREFIX}{profile}.json"
    body = {"profile": profile, "ledger": ledger, "machine": machine(), "rows": rows}
    path.write_text(json.dumps({**body, "final": final}, indent=2) + "\n")
    return path


def runs(folder: Path = RESULTS) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob(f"{PREFIX}*.json"))]


def render(folder: Path = RESULTS) -> str:
    lines = [BEGIN]
    found = runs(folder)
    if not found:
        lines += ["", "No complete run recorded yet: `make faults` records one."]
    for run in found:
        m = run["machine"]
        lines += [
            "",
            f"#### `{run['profile']}` run, {run['ledger']} ledger",
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
