// Carousel's live page: polls the dispatcher's JSON views (/board, /board/pool,
// /board/monitor, /dead-letters) and draws them. No framework, nothing fetched from
// elsewhere. States are written in words; colour only repeats them.
"use strict";

const BOARD_EVERY = 1500; // ms between two reads of /board
const SLOW_EVERY = 5000; // ms between two reads of the pool, the monitoring, dead letters

const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("carousel-token") || "", query: "" };

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// set an element's HTML only when it changed: what the user points at stays put
const drawn = new Map();
function put(id, html) {
  if (drawn.get(id) === html) return;
  drawn.set(id, html);
  $(id).innerHTML = html;
}

function clock(at) {
  return at ? new Date(at * 1000).toLocaleTimeString() : "–";
}

function headers(token = state.token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

// GET a JSON view; a refusal or an unreachable dispatcher is an answer, not an exception
async function get(path) {
  try {
    const r = await fetch(path, { headers: headers(), cache: "no-store" });
    const body = await r.json().catch(() => null);
    return { ok: r.ok, status: r.status, body };
  } catch (err) {
    return { ok: false, status: 0, body: null };
  }
}

function refusal(answer, what) {
  if (answer.status === 401) return `${what}: needs the token (enter it above)`;
  if (answer.status === 0) return `${what}: the dispatcher does not answer`;
  const detail = answer.body && answer.body.detail;
  return `${what}: ${answer.status} ${typeof detail === "string" ? detail : ""}`;
}

// -- the board -------------------------------------------------------------------

function numbers(b) {
  const t = b.totals;
  const slots = b.limits.max_parallel;
  const rows = [
    ["in flight", `${slots.in_use} of ${slots.limit}`],
    ["dispatched", `${b.rate.dispatched_per_second}/s`],
    ["backlog", t.backlog],
    ["held heads", t.held],
    ["hosts · VMs · keys", `${t.hosts} · ${t.vms} · ${t.keys}`],
    ["updated", clock(b.at)],
  ];
  put("numbers", rows
    .map(([k, v]) => `<div><dt>${esc(k)}</dt><dd>${esc(v)}</dd></div>`)
    .join(""));
}

function bar(n, max) {
  const width = max > 0 ? Math.round((100 * n) / max) : 0;
  return `<span class="bar" aria-hidden="true"><span style="width:${width}%"></span></span>`;
}

function word(s) {
  return `<span class="state ${esc(s)}">${esc(s)}</span>`;
}

function policyLine(p) {
  let line = `<b>${esc(p.policy)}</b> ${esc(p.backlog)} queued`;
  if (p.head) line += `, head <code>${esc(p.head)}</code>`;
  if (p.class && p.class !== "normal") line += ` (${esc(p.class)})`;
  if (p.waiting) line += ` — <span class="why">${esc(p.waiting.text)}</span>`;
  return `<li data-policy="${esc(p.policy)}">${line}</li>`;
}

function vmRow(host, v) {
  const running = v.running.length ? ` <span class="running">runs ${v.running.map((id) => `<code>${esc(id)}</code>`).join(", ")}</span>` : "";
  return `<tr class="vm" data-vm="${esc(host)}/${esc(v.vm)}" data-state="${esc(v.state)}">
    <th scope="row">${esc(v.vm)}</th><td>${word(v.state)}${running}</td><td>${esc(v.backlog)}</td>
    <td>${esc(v.held)}</td><td>${esc(v.in_flight)}</td>
    <td><ul class="policies">${v.policies.map(policyLine).join("")}</ul></td></tr>`;
}

function hosts(b) {
  const max = Math.max(1, ...b.hosts.map((h) => h.backlog));
  put("host-rows", b.hosts
    .map((h) => {
      const vms = h.detail
        ? h.detail.map((v) => vmRow(h.host, v)).join("") +
          (h.vms_shown < h.vms && !b.query ? `<tr class="vm more"><td colspan="6">${h.vms - h.vms_shown} more VMs: search for this host to see them</td></tr>` : "")
        : `<tr class="vm more"><td colspan="6">${esc(h.vms)} VMs: search for this host to see them</td></tr>`;
      return `<tr class="host" data-host="${esc(h.host)}" data-state="${esc(h.state)}">
        <th scope="row">${esc(h.host)}</th><td>${word(h.state)}</td>
        <td>${bar(h.backlog, max)} ${esc(h.backlog)}</td><td>${esc(h.held)}</td>
        <td>${esc(h.in_flight)}</td><td>${esc(h.vms)} VMs, ${esc(h.keys)} keys</td></tr>${vms}`;
    })
    .join(""));
  const shown = b.hosts.length;
  let note = `${b.hosts_matching} host(s) ${b.query ? `match “${esc(b.query)}”` : "in the mapping"}`;
  if (shown < b.hosts_matching) note += `; the ${shown} with the most backlog are shown — search to narrow`;
  if (b.backlog_error) note += `. Backlog not fresh: ${esc(b.backlog_error)}`;
  put("hosts-note", note);
}

function limits(b) {
  const l = b.limits;
  const rows = [
    ["at once (MAX_PARALLEL)", `${l.max_parallel.in_use} of ${l.max_parallel.limit}`],
    ["per VM (PER_VM_LIMIT)", `${l.per_vm.limit}; ${l.per_vm.at_limit} VM(s) at it`],
    ["per host (PER_HOST_LIMIT)", l.per_host.limit ? `${l.per_host.limit}; ${l.per_host.at_limit} host(s) at it, busiest ${l.per_host.busiest ?? "none"}` : "none"],
  ];
  for (const [a, v] of Object.entries(l.per_action || {})) rows.push([`action ${a}`, `${v.in_flight} of ${v.limit}; ${v.waiting} key(s) wait on it`]);
  for (const [g, v] of Object.entries(l.per_group || {})) rows.push([`group ${g} budget`, `${v.in_action} of ${v.budget || "no budget"}; ${v.waiting} key(s) wait on it`]);
  put("limit-rows", rows.map(([k, v]) => `<tr><th scope="row">${esc(k)}</th><td>${esc(v)}</td></tr>`).join(""));
  const classes = (b.classes && b.classes.classes) || {};
  put("class-rows", Object.entries(classes)
    .map(([name, c]) => `<tr><th scope="row">${esc(name)}</th><td>${esc(c.held)}</td><td>${esc(c.keys)}</td><td>${esc(Math.round(c.min_share * 100))}%</td><td>${esc(Math.round((c.share || 0) * 100))}%</td></tr>`)
    .join(""));
}

function dispatches(b) {
  put("dispatch-list", b.dispatches
    .map((d) => `<li><code>${esc(d.event_id)}</code> ${esc(d.host)}/${esc(d.vm)} · ${esc(d.policy)} · ${esc(d.action)}${d.priority !== "normal" ? ` (${esc(d.priority)})` : ""} <time>${clock(d.at)}</time></li>`)
    .join("") || "<li>none yet</li>");
}

async function refreshBoard() {
  const q = encodeURIComponent(state.query);
  const answer = await get(`/board?q=${q}&top=25`);
  if (!answer.ok) {
    $("state").textContent = refusal(answer, "the board");
    $("state").className = "trouble";
    return;
  }
  const b = answer.body;
  $("state").textContent = `dispatcher ${b.state}`;
  $("pause-button").dataset.action = b.paused ? "resume" : "pause";
  $("pause-button").textContent = b.paused ? "Resume" : "Pause";
  $("state").className = b.paused ? "paused" : b.state === "active" ? "active" : "trouble";
  numbers(b);
  hosts(b);
  limits(b);
  dispatches(b);
  window.carouselRendered = window.carouselRendered || performance.now();
}

// -- the event, the pool, dead letters, monitoring -------------------------------

async function lookUp(id) {
  const answer = await get(`/board/events/${encodeURIComponent(id)}`);
  if (!answer.ok) return put("event-out", esc(refusal(answer, "the lookup")));
  const p = answer.body;
  if (!p.ok) return put("event-out", esc(p.status === 404 ? `no event ${id}` : `the producer: ${p.error}`));
  const e = p.body;
  const path = [["accepted", e.accepted_at], ["dispatched", e.dispatched_at], ["started", e.started_at], ["finished", e.finished_at]]
    .filter(([, at]) => at)
    .map(([what, at]) => `<li>${what} <time>${clock(at)}</time></li>`)
    .join("");
  put("event-out", `<p><code>${esc(e.id)}</code>: <b class="status">${esc(e.status)}</b> — ${esc(e.action)} of ${esc(e.host)}/${esc(e.vm)}, policy ${esc(e.policy)}; ${esc(e.attempts)} attempt(s)${e.worker ? `, worker ${esc(e.worker)}` : ""}</p>
    <ol class="path">${path}</ol>
    ${e.waiting ? `<p class="why">waits: ${esc(e.waiting.text)}</p>` : ""}
    ${e.error ? `<p class="error">error: ${esc(e.error)}</p>` : ""}`);
}

function chart(samples) {
  if (!samples.length) return "<p>no decisions yet</p>";
  const W = 480, H = 90;
  const t0 = samples[0].at, t1 = Math.max(samples[samples.length - 1].at, t0 + 1);
  const workers = (s) => Object.values(s.workers || {}).reduce((a, n) => a + n, 0);
  const maxW = Math.max(1, ...samples.map((s) => Math.max(workers(s), s.desired || 0)));
  const maxB = Math.max(1, ...samples.map((s) => s.backlog));
  const x = (s) => (((s.at - t0) / (t1 - t0)) * W).toFixed(1);
  // one sample is a level line across, not a dot
  const points = samples.length > 1 ? samples : [samples[0], { ...samples[0], at: t1 }];
  const line = (f, max) => points.map((s) => `${x(s)},${(H - (f(s) / max) * H).toFixed(1)}`).join(" ");
  const last = samples[samples.length - 1];
  return `<svg viewBox="0 0 ${W} ${H}" class="chart" role="img" aria-label="workers and backlog over time">
      <polyline class="backlog" points="${line((s) => s.backlog, maxB)}"/>
      <polyline class="workers" points="${line(workers, maxW)}"/>
    </svg>
    <p class="legend"><span class="key workers">workers</span> (now ${workers(last)}, most ${maxW}) ·
      <span class="key backlog">backlog</span> (now ${last.backlog}, most ${maxB}) · from ${clock(t0)} to ${clock(t1)}</p>`;
}

async function refreshPool() {
  const answer = await get("/board/pool");
  if (!answer.ok) return put("pool-out", esc(refusal(answer, "the pool")));
  const { status, history } = answer.body;
  if (!status.ok) return put("pool-out", esc(`the elasticity worker: ${status.error}`));
  const samples = (history.ok && history.body.profiles) || {};
  put("pool-out", Object.entries(status.body.profiles)
    .map(([name, p]) => {
      const counts = Object.entries(p.counts).filter(([, n]) => n).map(([s, n]) => `${n} ${s}`).join(", ") || "no workers";
      const decisions = p.decisions.slice(-5).reverse()
        .map((d) => `<li><time>${clock(d.at)}</time> backlog ${esc(d.backlog)} → ${esc(d.target)} worker(s): ${esc(d.reason)}</li>`)
        .join("");
      return `<article class="profile" data-profile="${esc(name)}"><h3>${esc(name)}</h3>
        <p>${esc(counts)}; backlog ${esc(p.backlog ?? "–")}, wants ${esc(p.desired ?? "–")}</p>
        ${chart((samples[name] && samples[name].samples) || [])}
        <h4>Last decisions</h4><ol class="decisions">${decisions || "<li>none yet</li>"}</ol></article>`;
    })
    .join(""));
}

async function refreshDead() {
  const answer = await get("/dead-letters?limit=50");
  if (!answer.ok) return (put("dead-rows", `<tr><td colspan="7">${esc(refusal(answer, "dead letters"))}</td></tr>`));
  put("dead-rows", answer.body
    .map((d) => `<tr data-event="${esc(d.id)}"><td><code>${esc(d.id)}</code></td><td>${esc(d.host)}/${esc(d.vm)}/${esc(d.policy)}</td>
      <td>${esc(d.action)}</td><td>${esc(d.attempts)}</td><td class="why">${esc(d.error)}</td><td><time>${clock(d.dead_at)}</time></td>
      <td><button type="button" class="redrive" data-id="${esc(d.id)}">Re-drive</button></td></tr>`)
    .join("") || `<tr><td colspan="7">none</td></tr>`);
}

// a control (POST): with the token given above, else one asked for, for this call only;
// null if the person cancelled, else what was said, in words
async function control(path, what) {
  let token = state.token;
  if (!token) {
    const given = window.prompt(`${what} needs the token (CAROUSEL_API_TOKEN); empty if the dispatcher has none`);
    if (given === null) return null;
    token = given.trim();
  }
  try {
    const r = await fetch(path, { method: "POST", headers: headers(token) });
    const body = await r.json().catch(() => ({}));
    if (r.ok) return { ok: true, words: "done" };
    if (r.status === 401) return { ok: false, words: `${what} refused: missing or wrong token` };
    return { ok: false, words: `${what} refused: ${body.detail || r.status}` };
  } catch (err) {
    return { ok: false, words: `${what}: the dispatcher does not answer` };
  }
}

async function redrive(id) {
  const r = await control(`/dead-letters/${encodeURIComponent(id)}/redrive`, `re-drive of ${id}`);
  if (r) $("dead-said").textContent = r.ok ? `${id} queued again` : r.words;
  refreshDead();
}

async function pauseOrResume() {
  const action = $("pause-button").dataset.action;
  const r = await control(`/${action}`, action);
  if (r) $("control-said").textContent = r.ok ? `${action}d` : r.words;
  refreshBoard();
}

function change(c) {
  const events = c.events
    .map((e) => `<code>${esc(e.id)}</code> ${esc(e.policy)} ${esc(e.action)}: ${esc(e.outcome)}`)
    .join(", ");
  const more = c.more_events ? ` and ${esc(c.more_events)} more` : "";
  return `<li><time>${clock(c.at)}</time> ${esc(c.what)} → ${events}${more}</li>`;
}

async function refreshMonitor() {
  const answer = await get("/board/monitor");
  if (!answer.ok) return put("monitor-out", esc(refusal(answer, "monitoring")));
  if (!answer.body.ok) return put("monitor-out", esc(`the producer: ${answer.body.error}`));
  const m = answer.body.body;
  if (!m.enabled) return put("monitor-out", esc("off: the producer watches no cloud (MONITOR_SOURCE is empty)"));
  put("monitor-out", m.sources
    .map((s) => `<article class="source" data-source="${esc(s.source)}"><h3>${esc(s.source)}: <span class="state ${esc(s.stream)}">${esc(s.stream)}</span></h3>
      <p>lag ${s.lag_seconds === null ? "unknown" : `${esc(s.lag_seconds)} s`}; ${esc(s.hosts)} hosts, ${esc(s.vms)} VMs; last list ${clock(s.last_list_at)}${s.last_list_error ? `, error ${esc(s.last_list_error)}` : ""}; ${esc(s.reconnects)} reconnects</p>
      <h4>Last changes</h4><ol class="changes">${(s.recent_changes || []).slice(0, 10).map(change).join("") || "<li>none yet</li>"}</ol></article>`)
    .join(""));
}

// -- wiring ----------------------------------------------------------------------

function every(ms, task) {
  const run = async () => {
    await task();
    setTimeout(run, ms);
  };
  run();
}

function slow() {
  return Promise.all([refreshPool(), refreshDead(), refreshMonitor()]);
}

document.addEventListener("DOMContentLoaded", () => {
  $("token").value = state.token;
  $("token-said").textContent = state.token ? "token in use" : "read-only";
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem("carousel-token", state.token);
    $("token-said").textContent = state.token ? "token in use" : "read-only";
    refreshBoard();
    slow();
  });
  $("search").addEventListener("submit", (e) => e.preventDefault());
  $("q").addEventListener("input", () => {
    state.query = $("q").value.trim();
    refreshBoard();
  });
  $("event-form").addEventListener("submit", (e) => {
    e.preventDefault();
    lookUp($("event-id").value.trim());
  });
  $("pause-button").addEventListener("click", pauseOrResume);
  $("dead-rows").addEventListener("click", (e) => {
    const button = e.target.closest("button.redrive");
    if (button) redrive(button.dataset.id);
  });
  every(BOARD_EVERY, refreshBoard);
  every(SLOW_EVERY, slow);
});
