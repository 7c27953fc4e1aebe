"""The speed and scale goals side by side: read from this machine's latest results
(``bench/results/*.json``, written by the other measurements) and printed as one table,
each goal met or missed. Run last: ``make bench`` does. A figure whose measurement has
not run is shown as such."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from bench.report import RESULTS, save
from bench.shard_fairness import LIMITS, judged


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _e2e(r: dict[str, Any]) -> tuple[str, bool]:
    ratios = r["ratios"]
    bare = min(v for k, v in ratios.items() if "bare" in k)
    flower = min(v for k, v in ratios.items() if "Flower" in k)
    return f"{bare:.2f}x bare / {flower:.2f}x under Flower", bare >= 0.5 and flower >= 0.8


def _broker(r: dict[str, Any]) -> tuple[str, bool]:
    """Carousel's messages (its keys known) ÷ Celery's under Flower, broker CPU per
    event, measured in the same run; the end-to-end run's own figures beside them."""
    ms = r["ms"]
    ratio = ms["carousel"] / ms["celery under flower"]
    text = f"{ratio:.2f}x: {ms['carousel']:.2f} / {ms['celery under flower']:.2f} ms per event"
    e2e = _load("throughput")
    if e2e is not None:
        cpu = {row["system"]: row.get("broker CPU ms/event") for row in e2e["rows"]}
        if cpu.get("carousel") and cpu.get("Celery under Flower"):
            text += (
                f"; end to end {cpu['carousel'] / cpu['Celery under Flower']:.2f}x "
                f"({cpu['carousel']:.2f} / {cpu['Celery under Flower']:.2f}, new keys included)"
            )
    return text, ratio <= 2


def _ingest(r: dict[str, Any]) -> tuple[str, bool]:
    rows = r["rows"]
    best = max(row["events/s"] for row in rows)
    monotone = all(
        later["events/s"] >= earlier["events/s"]
        for p in {row["processes"] for row in rows}
        for earlier, later in zip(
            [row for row in rows if row["processes"] == p],
            [row for row in rows if row["processes"] == p][1:],
            strict=False,
        )
    )
    return f"best {best:,.0f}/s{'' if monotone else ', lower with more clients'}", (
        best >= 10_000 and monotone
    )


def _fairness(r: dict[str, Any]) -> tuple[str, bool]:
    first, known = r["vs_celery_seen_first"], r["vs_celery_known"]
    text = (
        f"seen first {first['flooded']:.2f} / {first['calm']:.1f}, "
        f"known {known['flooded']:.2f} / {known['calm']:.1f}"
    )
    return text, known["flooded"] <= 0.2 and known["calm"] <= 5


def _new_keys(r: dict[str, Any]) -> tuple[str, bool]:
    seconds = r["rows"][0]["producer: keys created s"]
    return f"{seconds:.1f} s", seconds <= 10


def _keys(r: dict[str, Any]) -> tuple[str, bool]:
    """Live queues follow the keys with work: with retirement on, the peak of live
    queues stays within two of the run's waves (a tenth of its keys), none lost. The run
    with retirement off is the yardstick (a negative loss there: events that ran twice,
    posted again after a 503 without their ids by a bench that sent none)."""
    on = next(row for row in r["rows"] if row["retirement"] != "off")
    off = next((row for row in r["rows"] if row["retirement"] == "off"), None)
    kept = "not run"
    if off:
        twice = -off["events lost"] if off["events lost"] < 0 else 0
        kept = f"{off['peak live queues']:,} live queues, {off['broker RSS peak MB']:,.0f} MB" + (
            f", {twice} ran twice (503s posted again without ids)" if twice else ""
        )
    text = (
        f"{on['keys']:,} keys: peak {on['peak live queues']:,} live queues, broker RSS peak "
        f"{on['broker RSS peak MB']:,.0f} MB, lost {on['events lost']}; kept: {kept}"
    )
    return text, on["peak live queues"] <= 0.1 * on["keys"] and on["events lost"] == 0


def _pg_e2e(r: dict[str, Any]) -> tuple[str, bool]:
    sqlite = _load("throughput")
    ours = next(row for row in r["rows"] if row["system"] == "carousel")["per second"]
    if sqlite is None:
        return f"{ours:.0f}/s (no SQLite run to compare)", False
    base = next(row for row in sqlite["rows"] if row["system"] == "carousel")["per second"]
    return f"{ours:.0f}/s, {ours / base:.2f}x SQLite's", ours / base >= 0.8


def _pg_ingest(r: dict[str, Any]) -> tuple[str, bool]:
    sqlite = _load("ingest")
    best = max(row["events/s"] for row in r["rows"] if row["processes"] == 4)
    if sqlite is None:
        return f"{best:,.0f}/s with 4 processes (no SQLite run)", False
    base = max(row["events/s"] for row in sqlite["rows"])
    return f"{best:,.0f}/s with 4 processes, SQLite's best {base:,.0f}/s", best > base


def _heals(r: dict[str, Any]) -> tuple[str, bool]:
    """Every MAX_PARALLEL run within the ratio, and the upgrade at its minimum share
    meanwhile (less one dispatch of the window: a share of a short window is coarse)."""
    flooded = [row for row in r["rows"] if row["upgrade running"]]
    ratios = " / ".join(f"{row['÷ no upgrade']:.2f}x" for row in flooded)
    shares = " / ".join(f"{row['upgrade share meanwhile']:.2f}" for row in flooded)
    at = " / ".join(str(row["MAX_PARALLEL"]) for row in flooded)
    floor = r["background_min_share"]
    met = all(
        row["÷ no upgrade"] <= 1.5
        and row["upgrade share meanwhile"] >= floor - 1 / max(1, row["dispatches meanwhile"])
        for row in flooded
    )
    return f"{ratios} at MAX_PARALLEL {at}; upgrade's share {shares}", met


def _weights(r: dict[str, Any]) -> tuple[str, bool]:
    worst = [row["worst deviation %"] for row in r["rows"]]
    text = " / ".join(f"{w:.1f} %" for w in worst)
    return f"worst {text} (heaviest host over 20 / 100 VMs)", max(worst) <= 5


def _pick_cost(r: dict[str, Any]) -> tuple[str, bool]:
    """The per-decision cost at the largest size ÷ at the smallest, with classes and
    weights on (the worse of its two layouts); the plain configuration's beside it."""
    ratios = r.get("ratios", {})
    weighted = {name: v for name, v in ratios.items() if name.startswith("classes")}
    if not weighted:
        return "not measured with classes and weights", False
    text = " / ".join(f"{v:.2f}x" for v in weighted.values())
    worst = max(weighted.values())
    return f"{text} (ready keys spread / on 10 hosts; plain {ratios['plain']:.2f}x)", worst <= 2


def _budget(r: dict[str, Any]) -> tuple[str, bool]:
    row = r["rows"][0]
    most = row["most replicas in action at once"]
    done = row["upgrades finished"]
    took = row["until the group's upgrade ended s"]
    text = (
        f"at most {most} in action, {done} of {row['replicas']} upgrades finished in "
        f"{took:.1f} s, "
        f"{row['other calls started meanwhile']} other calls meanwhile"
    )
    return text, most == 1 and done == row["replicas"]


def _detection(r: dict[str, Any]) -> tuple[str, bool]:
    """At the largest size measured: the stream's p99 judged; polling's beside it (a
    poll interval and a list bound it, not Carousel)."""
    largest = max(row["vms"] for row in r["rows"])
    rows = [row for row in r["rows"] if row["vms"] == largest]
    stream = next(row for row in rows if row["mode"] == "stream")
    polled = [f"{row['mode']} p99 {row['p99 s']:.2f} s" for row in rows if row is not stream]
    text = f"p99 {stream['p99 s']:.2f} s at {largest:,} VMs ({'; '.join(polled)})"
    return text, stream["p99 s"] <= 1.0


def _quiet_relist(r: dict[str, Any]) -> tuple[str, bool]:
    row = max(r["rows"], key=lambda row: row["vms"])
    written = row["rows written/relist"]
    text = (
        f"{written:g} rows, {row['events']} events per relist at {row['vms']:,} VMs "
        f"({row['producer cpu s/relist']:.2f} producer CPU s, "
        f"producer peak {row['producer peak MB']:.0f} MB)"
    )
    return text, written == 0 and row["events"] == 0


def _page(r: dict[str, Any]) -> tuple[str, bool]:
    row = r["rows"][0]
    worst = row["first render ms (worst)"]
    text = (
        f"first render {row['first render ms (median)']:.0f} ms median, {worst:.0f} ms worst "
        f"of {len(r['renders_ms'])} at {row['keys']:,} keys (GET /board "
        f"{row['GET /board ms (median)']:.0f} ms, {row['board KB']:.0f} KB)"
    )
    return text, worst <= 1000


def _shards(r: dict[str, Any]) -> tuple[str, bool]:
    """The worst host's share under the demand split, steady workloads, against one
    dispatcher's; beside it the arriving workload's (shares moving, same limit) and the
    static split's worst."""
    rows = r["rows"]
    worst = max(row["worst ÷ single %"] for row in rows if judged(row))
    moving = max(
        row["worst ÷ single %"]
        for row in rows
        if row["split"] == "demand"
        and row["workload"] == "skewed, arriving"
        and row["L"] == max(LIMITS)
    )
    text = (
        f"worst {worst:.1f} % (shares moving: {moving:.1f} %; "
        f"a static split: {r['static_worst_pct']:.0f} %)"
    )
    return text, worst <= 5


def _shard_kill(r: dict[str, Any]) -> tuple[str, bool]:
    """Every run: the killed shard's hosts dispatched again within two leases, every event
    finished, none lost, none twice, no limit passed."""
    rows = r["rows"]
    lease = r["lease_s"]
    resumed = [row["dispatching resumed for the killed shard's hosts s"] for row in rows]
    worst = max(float("inf") if x is None else x for x in resumed)
    lost = sum(row["lost"] for row in rows)
    twice = sum(row["duplicates"] for row in rows)
    over = sum(row["violations"] for row in rows)
    text = (
        f"{worst:.1f} s worst of {len(rows)} (lease {lease:g} s; takeover "
        f"{max(row['takeover s'] or float('inf') for row in rows):.1f} s); "
        f"lost {lost}, duplicates {twice}, violations {over}"
    )
    met = all(row["all finished"] for row in rows) and worst <= 2 * lease
    return text, met and lost == twice == over == 0


def _shards_real(r: dict[str, Any]) -> tuple[str, bool]:
    """With the slots the limit (split by demand across the shards), each host's share of
    the dispatches in the saturated window against 1/H, worst over the shard runs."""
    rows = [row for row in r["rows"] if row["phase"] == "slots" and "shard" in row["dispatchers"]]
    worst = {row["dispatchers"]: row["worst ÷ 1/H %"] for row in rows}
    text = " / ".join(f"{k}: {v:.1f} %" for k, v in worst.items())
    return text, bool(worst) and max(worst.values()) <= 5.0


# -- what bounds a figure, from the measurements that isolate it ------------------------


def _e2e_bound(r: dict[str, Any]) -> str:
    """The broker's CPU per event for Carousel's messages alone against the machine's
    CPU per event at the goals' rates (every process shares the cores)."""
    floor = _load("broker_floor")
    if floor is None:
        return "run broker_floor"
    ms = floor["ms"]
    rates = {row["system"]: row["per second"] for row in r["rows"]}
    cores = r["machine"]["cpus"]
    budgets = [
        cores * 1000 / (share * rates[system])
        for share, system in ((0.5, "bare Celery"), (0.8, "Celery under Flower"))
        if system in rates
    ]
    return (
        f"the broker alone {ms['carousel']:.2f} ms/event for Carousel's messages "
        f"(Celery's {ms['celery bare']:.2f} / {ms['celery under flower']:.2f}); "
        f"the goals leave {' / '.join(f'{b:.1f}' for b in budgets)} ms of CPU per event "
        f"for everything on {cores} cores"
    )


def _broker_bound(r: dict[str, Any]) -> str:
    """The kinds of message that cost the most, from the breakdown."""
    kinds = [
        (row["this kind ms/event"], row["pattern"].split("+ ", 1)[1])
        for row in r["rows"]
        if row["pattern"].startswith("carousel: + ")
    ]
    top = sorted(kinds, reverse=True)[:3]
    return "largest: " + ", ".join(f"{kind} {ms:.2f}" for ms, kind in top) + " ms/event"


def _ingest_bound(r: dict[str, Any]) -> str:
    best = max(r["rows"], key=lambda row: row["events/s"])
    if "broker cores" not in best:
        return ""
    return (
        f"the broker used {best['broker cores']:.2f} of {r['machine']['cpus']} cores "
        f"at the best rate ({best['broker cores'] * 1000 / best['events/s'] * 1000:.0f} µs "
        f"per event): 10,000/s needs {best['broker cores'] / best['events/s'] * 10_000:.1f}"
    )


def _new_keys_bound(r: dict[str, Any]) -> str:
    alone = r["rows"][0].get("broker alone: as many queues declared s")
    return "" if alone is None else f"the broker alone declares as many queues in {alone:.1f} s"


def _fairness_bound(r: dict[str, Any]) -> str:
    return "the dispatch rate: the end-to-end figure's bound"


def _heals_bound(r: dict[str, Any]) -> str:
    """Nothing is pre-empted: under the flood every heal waits for an upgrade's action to
    end, and the heals take a (1 - background share) part of the slots that free up."""
    row = next(row for row in r["rows"] if row["upgrade running"])
    heals = row["heals"]
    share = r["background_min_share"]
    return (
        f"no pre-emption: under the flood the {heals} heals need about "
        f"{heals / (1 - share):.0f} slots freed by upgrades ending, MAX_PARALLEL per "
        f"action time; alone, ceil({heals} / MAX_PARALLEL) - 1 action times"
    )


GOALS: list[tuple[str, str, str, Callable[[dict[str, Any]], tuple[str, bool]]]] = [
    ("e2e ÷ raw Celery, same broker, pool, workers", "throughput", "≥ 0.5 / ≥ 0.8", _e2e),
    (
        "broker CPU per event ÷ Celery under Flower's, the messages alone",
        "broker_floor",
        "≤ 2x",
        _broker,
    ),
    ("ingest, batches of 100, best of 1/4/8/16 clients", "ingest", "≥ 10,000/s", _ingest),
    ("quiet p99 ÷ plain Celery's, flood / none", "fairness", "≤ 0.2 / ≤ 5", _fairness),
    ("urgent heals under a background flood ÷ alone", "urgency", "≤ 1.5x", _heals),
    ("host shares ÷ weights 1 : 2 : 4", "urgency_weights", "within 5 %", _weights),
    (
        "pick cost with classes and weights, 100k ÷ 1k keys",
        "dispatcher_cost",
        "≤ 2x",
        _pick_cost,
    ),
    ("disruption budget 1, 5 replicas beside other work", "budgets", "1 at once, all 5", _budget),
    ("20,000 new keys through the producer", "scale", "≤ 10 s", _new_keys),
    (
        "100,000 keys in waves: live queues retired ÷ kept, lost",
        "keys",
        "≤ 1/10 of the keys, 0 lost",
        _keys,
    ),
    ("e2e on PostgreSQL", "throughput-postgresql", "within 20 % of SQLite", _pg_e2e),
    ("ingest on PostgreSQL, 4 processes", "ingest-postgresql", "ahead of SQLite", _pg_ingest),
    (
        "detection, vm_down -> heal queued, stream, largest cloud",
        "monitoring_latency",
        "p99 ≤ 1 s",
        _detection,
    ),
    ("a relist with no change, largest cloud", "monitoring_relist", "0 rows", _quiet_relist),
    ("the live page, 20,000 keys: to the board drawn", "live_page", "≤ 1 s", _page),
    (
        "a host's share under 2 and 4 shards ÷ one dispatcher's, simulated",
        "shard_fairness",
        "within 5 %",
        _shards,
    ),
    (
        "a host's share under shards on a real stack, the slots the limit, ÷ 1/H",
        "shards",
        "within 5 %",
        _shards_real,
    ),
    (
        "a shard killed -9 under load: its hosts dispatched again; lost / twice / over a limit",
        "shards_kill",
        "≤ 2 leases; 0 / 0 / 0",
        _shard_kill,
    ),
]


BOUNDS: dict[str, Callable[[dict[str, Any]], str]] = {
    "throughput": _e2e_bound,
    "broker_floor": _broker_bound,
    "ingest": _ingest_bound,
    "fairness": _fairness_bound,
    "urgency": _heals_bound,
    "scale": _new_keys_bound,
}


def run() -> None:
    rows = []
    for figure, source, goal, judge in GOALS:
        result = _load(source)
        if result is None:
            rows.append(
                {
                    "figure": figure,
                    "now": f"not run ({source})",
                    "goal": goal,
                    "": "",
                    "what bounds it": "",
                }
            )
            continue
        now, met = judge(result)
        when = result["machine"]["at"]
        bound = BOUNDS.get(source)
        rows.append(
            {
                "figure": figure,
                "now": f"{now} ({when})",
                "goal": goal,
                "": "met" if met else "missed",
                "what bounds it": "" if met or bound is None else bound(result),
            }
        )
    save("goals", "Speed and scale goals, from the latest results on this machine", rows)


if __name__ == "__main__":
    run()
