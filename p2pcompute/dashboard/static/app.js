// SPDX-License-Identifier: Apache-2.0 (static/LICENSE): our own code, no third-party asset
// p2pcompute dashboard: plain JavaScript, no framework, no build step.
// Pages are chosen by the URL's hash (#/network, #/jobs, #/job/ID, #/data, #/machine; filters and paging
// after a "?"). Each page opens one EventSource on /dashboard/events: a "view" event brings the page's data
// (only when it changed), a "tick" event the header's counts. Data from peers is only ever set as text.
"use strict";

const COLORS = { alive: "#2e9d58", suspect: "#e0a400", dead: "#d23c3c", left: "#8a8f98",
  running: "#2f6fde", ok: "#2e9d58", failed: "#d23c3c", lost: "#e0a400", revoked: "#8a8f98", other: "#b4b9c0" };
const app = { es: null, hello: null, page: "", key: "", data: null, timelineAt: 0, timelineKey: "", task: null, series: [] };

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "style") el.style.cssText = v;  // CSSOM: allowed by the page's CSP, unlike a style attribute
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}
const $ = (sel, el = document) => el.querySelector(sel);
const short = (id) => id ? (id.length > 16 ? id.slice(0, 8) + "…" + id.slice(-6) : id) : "-";
const fmtBytes = (n) => { if (n === null || n === undefined) return "-"; const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0; while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; } return (i ? n.toFixed(1) : n) + " " + u[i]; };
const fmtS = (s) => s === null || s === undefined ? "-" : s < 1 ? (s * 1000).toFixed(0) + " ms" : s < 120 ? s.toFixed(1) + " s" : s < 7200 ? (s / 60).toFixed(1) + " min" : (s / 3600).toFixed(1) + " h";
const stateTag = (s) => h("span", { class: "state " + (s || "") }, s || "-");

function parseHash() {
  const [path, qs] = (location.hash.replace(/^#\/?/, "") || "network").split("?");
  const parts = path.split("/").map(decodeURIComponent);
  return { page: parts[0] || "network", arg: parts[1] || "", tab: parts[2] || "", params: new URLSearchParams(qs || "") };
}
function go(page, arg, tab, params) {
  let hash = "#/" + page + (arg ? "/" + encodeURIComponent(arg) : "") + (tab ? "/" + tab : "");
  const qs = params ? params.toString() : "";
  location.hash = hash + (qs ? "?" + qs : "");
}

async function api(path, opts) {
  const r = await fetch(path, Object.assign({ credentials: "same-origin" }, opts || {}));
  if (r.status === 401) { showLogin(); throw new Error("not signed in"); }
  const text = await r.text();
  let body; try { body = JSON.parse(text); } catch (e) { body = { error: text }; }
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function showLogin() {
  if (app.es) { app.es.close(); app.es = null; }
  $("#login").hidden = false; $("#page").hidden = true; $("nav").hidden = true;
  $("#live").textContent = "signed out"; $("#live").className = "live off";
}

async function start() {
  try { app.hello = await api("/dashboard/api/hello"); } catch (e) { return; }
  window.addEventListener("hashchange", navigate);
  navigate();
}

function navigate() {
  const r = parseHash();
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === r.page || (r.page === "job" && a.dataset.page === "jobs")));
  const skeletonKey = r.page + "/" + r.arg;
  if (skeletonKey !== app.page) { app.page = skeletonKey; app.data = null; app.task = null; app.timelineKey = ""; skeleton(r); }
  const q = new URLSearchParams(r.params);
  q.set("view", r.page);
  if (r.page === "job") q.set("job", r.arg);
  if (r.page === "job" && r.tab === "verification") q.set("tab", "verification");  // its data only while open
  const key = q.toString();
  if (key !== app.key || !app.es) listen(key);
  if (app.data) render(app.data);
}

function listen(key) {
  if (app.es) app.es.close();
  app.key = key;
  const es = new EventSource("/dashboard/events?" + key);
  app.es = es;
  es.onopen = () => { $("#live").textContent = "live"; $("#live").className = "live on"; };
  es.onerror = () => {
    $("#live").textContent = "reconnecting"; $("#live").className = "live off";
    api("/dashboard/api/hello").catch(() => {});  // a 401 shows how to sign in
  };
  es.addEventListener("view", (e) => { app.data = JSON.parse(e.data); render(app.data); });
  es.addEventListener("tick", (e) => tick(JSON.parse(e.data)));
}

function tick(t) {
  const m = t.members || {};
  const jobs = Object.entries(t.jobs || {}).map(([k, v]) => v + " " + k).join(", ") || "no jobs";
  $("#tick").textContent = `${(m.alive || 0) + 1} alive (with this peer) · ${m.suspect || 0} suspect · ${m.dead || 0} dead · ${t.connected} connected · ${jobs}` +
    (t.slots ? ` · slots ${t.slots.busy}/${t.slots.total}` : "") + (t.cpu_percent !== undefined && t.cpu_percent !== null ? ` · cpu ${t.cpu_percent.toFixed(0)}%` : "");
}

// --- skeletons: the parts of a page that stay while its data changes ----------------------------

function skeleton(r) {
  const page = $("#page");
  page.replaceChildren();
  if (r.page === "jobs") page.append(submitForm());
  if (r.page === "job") page.append(h("div", { class: "pager" }, h("a", { href: "#/jobs" }, "← all jobs")));
  page.append(h("div", { id: "content" }, h("p", { class: "muted" }, "loading…")));
  if (r.page === "job") page.append(h("div", { id: "task-detail" }));  // outside #content: kept across updates
}

function submitForm() {
  const result = h("div", { id: "submit-result" });
  const text = h("textarea", { id: "job-text", spellcheck: "false", placeholder: "name: my-job\ninputs:\n  x: x/*.npy\nstages:\n  - name: s\n    map: {over: inputs.x}\n    ..." });
  const base = h("input", { type: "text", id: "job-base", value: (app.hello && app.hello.base) || "" });
  const file = h("input", { type: "file", id: "job-file", accept: ".yaml,.yml" ,
    onchange: async () => { if (file.files[0]) text.value = await file.files[0].text(); } });
  const submit = async (ev) => {
    ev.preventDefault();
    button.disabled = true; result.replaceChildren("submitting…");
    try {
      const job = await api("/v1/jobs", { method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ job: text.value, base: base.value }) });
      result.replaceChildren("submitted ", h("a", { href: "#/job/" + encodeURIComponent(job.job_id), id: "submitted-job" }, job.job_id), ` (${job.tasks} tasks)`);
    } catch (e) { result.replaceChildren(h("div", { class: "err" }, e.message)); }
    button.disabled = false;
  };
  const button = h("button", { type: "submit", id: "submit-btn" }, "Submit");
  return h("details", { class: "detail", id: "submit" }, h("summary", {}, "Submit a job.yaml"),
    h("form", { id: "submit-form", onsubmit: submit },
      h("p", {}, "job.yaml: ", file), text,
      h("p", {}, "Base directory on the daemon's machine (relative inputs are read from there):", base),
      button, result));
}

// --- rendering ----------------------------------------------------------------------------------

function render(d) {
  const r = parseHash();
  const content = $("#content");
  if (!content) return;
  if (d.error) { content.replaceChildren(h("p", { class: "err" }, d.error)); return; }
  const view = { network: renderNetwork, jobs: renderJobs, job: renderJob, data: renderData, machine: renderMachine }[r.page];
  if (view) view(d, r, content);
}

function pager(d, r) {
  const prev = Math.max(0, d.offset - d.limit), next = d.offset + d.limit;
  const at = (offset) => { const p = new URLSearchParams(r.params); p.set("offset", offset); go(r.page, r.arg, r.tab, p); };
  return h("div", { class: "pager" },
    h("button", { class: "secondary", disabled: d.offset === 0, onclick: () => at(prev) }, "‹ prev"),
    `${d.matching ? d.offset + 1 : 0}–${Math.min(d.offset + d.limit, d.matching)} of ${d.matching}`,
    h("button", { class: "secondary", disabled: next >= d.matching, onclick: () => at(next) }, "next ›"));
}
function filter(r, name, choices, current) {
  return h("select", { id: "filter-" + name, onchange: (e) => { const p = new URLSearchParams(r.params); if (e.target.value) p.set(name, e.target.value); else p.delete(name); p.delete("offset"); go(r.page, r.arg, r.tab, p); } },
    h("option", { value: "" }, "all " + name + "s"), choices.map((c) => h("option", { value: c, selected: c === current }, c)));
}
function table(id, head, ...rows) {
  return h("table", { id }, h("thead", {}, h("tr", {}, head.map((x) => h("th", {}, x)))), h("tbody", {}, rows));
}
function card(label, value, id) { return h("div", { class: "card" }, h("div", { class: "label" }, label), h("div", { class: "big", id }, value)); }

function renderNetwork(d, r, content) {
  const me = d.self, c = d.counts;
  const chart = h("canvas", { id: "members-chart", width: 800, height: 180 });
  const dht = h("canvas", { id: "dht-chart", width: 360, height: 180 });
  content.replaceChildren(
    h("h1", {}, "Network"),
    h("div", { class: "cards" },
      h("div", { class: "card", title: me.peer_id }, h("div", { class: "label" }, "this peer"), h("div", { class: "big mono", id: "self-id" }, short(me.peer_id))), card("uptime", fmtS(me.uptime_s)),
      card("alive members", (c.alive || 0), "count-alive"), card("suspect", c.suspect || 0, "count-suspect"),
      card("dead", c.dead || 0, "count-dead"), card("left", c.left || 0, "count-left"),
      card("free slots here", me.slots ? (me.slots.total - me.slots.busy) + " / " + me.slots.total : "-")),
    h("div", { class: "row" },
      h("div", {}, h("h2", {}, "Members by state, last hour"), chart, legend(["alive", "suspect", "dead", "left"])),
      h("div", {}, h("h2", {}, `DHT routing table: ${d.dht.size} peers`), dht, h("div", { class: "muted" }, "peers per bucket (k = " + d.dht.bucket_size + "), by common prefix length"))),
    h("h2", {}, `Members (${d.total}) and this peer`),
    h("div", { class: "pager" }, filter(r, "state", ["alive", "suspect", "dead", "left", "connected", "known"], d.state),
      h("select", { id: "sort", onchange: (e) => { const p = new URLSearchParams(r.params); p.set("sort", e.target.value); go(r.page, r.arg, r.tab, p); } },
        ["state", "peer", "load", "free_slots", "rtt", "last_heard"].map((s) => h("option", { value: s, selected: s === d.sort }, "sort by " + s)))),
    table("members", ["peer", "state", "address", "cpus", "memory", "arch / opsets", "load", "free slots", "RTT", "last heard"],
      d.offset === 0 && (!d.state || d.state === "alive") ? h("tr", { "data-peer": me.peer_id, "data-state": "alive", class: "self" },
        h("td", { class: "mono", title: me.peer_id }, short(me.peer_id) + " (this peer)"), h("td", {}, stateTag("alive")),
        h("td", { class: "mono" }, (me.addresses[0] || "-").split("/p2p/")[0]), h("td", {}, me.resources.cpus ?? "-"), h("td", {}, fmtBytes(me.resources.memory)),
        h("td", {}, ""), h("td", {}, "-"), h("td", {}, me.slots ? me.slots.total - me.slots.busy : "-"), h("td", {}, "-"), h("td", {}, "now")) : null,
      d.rows.map((p) => h("tr", { "data-peer": p.peer_id, "data-state": p.state },
        h("td", { class: "mono", title: p.peer_id }, short(p.peer_id)), h("td", {}, stateTag(p.state)),
        h("td", { class: "mono" }, p.address || "-"), h("td", {}, p.cpus ?? "-"), h("td", {}, fmtBytes(p.memory)),
        h("td", {}, (p.arch || "") + " " + (p.opsets || []).join(",") + (p.wasm ? " wasm" : "")),
        h("td", {}, p.load === null || p.load === undefined ? "-" : p.load.toFixed(2)), h("td", {}, p.free_slots ?? "-"),
        h("td", {}, p.rtt_ms === null || p.rtt_ms === undefined ? "-" : p.rtt_ms.toFixed(1) + " ms"),
        h("td", {}, p.last_heard_s === null || p.last_heard_s === undefined ? "-" : fmtS(p.last_heard_s) + " ago")))),
    pager(d, r));
  drawHistory(chart, d.history);
  drawBuckets(dht, d.dht.buckets, d.dht.bucket_size);
}

function legend(names, colors) {
  return h("div", { class: "legend" }, names.map((n) => h("span", {}, h("i", { style: "background:" + (colors || COLORS)[n] }), n)));
}
function ctx2d(canvas) {
  const ratio = window.devicePixelRatio || 1, w = canvas.clientWidth || canvas.width, hh = canvas.height;
  canvas.width = w * ratio; canvas.height = hh * ratio; canvas.style.height = hh + "px";
  const g = canvas.getContext("2d"); g.scale(ratio, ratio); g.font = "11px system-ui, sans-serif";
  return [g, w, hh];
}
function drawHistory(canvas, hist) {
  const [g, w, hh] = ctx2d(canvas);
  const pad = 30, max = Math.max(4, Math.ceil(Math.max(0, ...hist.counts.flat()) / 4) * 4);
  g.strokeStyle = "#dde1e6"; g.fillStyle = "#6b7480";
  for (let i = 0; i <= 4; i++) { const y = hh - pad + 10 - (hh - pad) * i / 4; g.beginPath(); g.moveTo(pad, y); g.lineTo(w - 5, y); g.stroke(); g.fillText(Math.round(max * i / 4), 4, y + 4); }
  const span = Math.min(3600, Math.max(120, ...hist.t));  // the hour, or as much of it as this daemon has seen
  g.fillText("-" + fmtS(span), pad, hh - 4); g.fillText("now", w - 28, hh - 4);
  const x = (ago) => pad + (w - pad - 5) * (1 - Math.min(span, ago) / span);
  const y = (v) => hh - pad + 10 - (hh - pad) * v / max;
  hist.states.forEach((s, k) => {
    g.strokeStyle = COLORS[s]; g.lineWidth = 2; g.beginPath();
    hist.t.forEach((ago, i) => { const px = x(ago), py = y(hist.counts[i][k]); if (i) g.lineTo(px, py); else g.moveTo(px, py); });
    g.stroke();
  });
  canvas.dataset.points = hist.t.length;
}
function drawBuckets(canvas, buckets, k) {
  const [g, w, hh] = ctx2d(canvas);
  const idx = Object.keys(buckets).map(Number), lo = 0, hi = Math.max(20, ...idx) + 1, bw = (w - 30) / (hi - lo);
  g.fillStyle = "#6b7480"; g.fillText(String(k), 4, 14); g.fillText("0", 4, hh - 18);
  for (const [i, n] of Object.entries(buckets)) {
    g.fillStyle = "#2f6fde"; const bh = (hh - 30) * Math.min(n, k) / k;
    g.fillRect(30 + Number(i) * bw, hh - 20 - bh, Math.max(2, bw - 2), bh);
  }
  g.fillStyle = "#6b7480"; g.fillText("bucket 0", 30, hh - 4); g.fillText(String(hi - 1), w - 20, hh - 4);
}

function progressBar(p) {
  if (!p || !p.total) return h("div", { class: "bar" });
  const seg = (n, color) => h("i", { style: `width:${100 * n / p.total}%;background:${color}` });
  return h("div", { class: "bar", title: `${p.done} done, ${p.running} running, ${p.failed} failed of ${p.total}` },
    seg(p.done + (p.skipped || 0), COLORS.ok), seg(p.running, COLORS.running), seg(p.failed, COLORS.failed));
}

function renderJobs(d, r, content) {
  content.replaceChildren(
    h("h1", {}, `Jobs coordinated here (${d.total})`),
    h("div", { class: "pager" }, filter(r, "state", ["submitted", "running", "done", "failed", "cancelled"], d.state),
      Object.entries(d.counts).map(([k, v]) => h("span", {}, stateTag(k), " " + v))),
    table("jobs", ["job", "name", "state", "progress", "tasks", "results", "reason"],
      d.rows.map((j) => h("tr", { class: "click", "data-job": j.job_id, "data-state": j.state, onclick: () => go("job", j.job_id) },
        h("td", { class: "mono" }, j.job_id), h("td", {}, j.name), h("td", {}, stateTag(j.state)), h("td", {}, progressBar(j.progress)),
        h("td", {}, j.progress ? `${j.progress.done}/${j.progress.total}` : "-"), h("td", {}, j.outputs), h("td", { title: j.reason }, j.reason)))),
    pager(d, r));
}

function renderJob(d, r, content) {
  const job = d.job, tab = r.tab || "tasks";
  const cancel = h("button", { class: "danger", id: "cancel-btn", disabled: !["running", "submitted"].includes(job.state),
    onclick: async () => {
      if (!confirm("Cancel job " + job.job_id + "?")) return;
      try { await api("/v1/jobs/cancel/" + encodeURIComponent(job.job_id), { method: "POST", headers: { "content-type": "application/json" }, body: "{}" }); }
      catch (e) { alert(e.message); }
    } }, "Cancel job");
  const tabs = h("div", { class: "tabs" }, ["tasks", "timeline", "dag", "verification", "results"].map((t) =>
    h("a", { href: "#/job/" + encodeURIComponent(job.job_id) + "/" + t, class: t === tab ? "active" : "", id: "tab-" + t },
      { tasks: "Tasks", timeline: "Timeline", dag: "Stages (DAG)", verification: "Verification", results: "Results" }[t])));
  const body = h("div", { id: "tab-body" });
  content.replaceChildren(
    h("div", { class: "pager" }, h("h1", {}, "Job ", h("span", { class: "mono" }, job.job_id), " ", h("span", { id: "job-state", "data-state": job.state }, stateTag(job.state))), cancel),
    h("div", { class: "cards" }, card("name", job.name || "-"), card("tasks", d.total),
      card("done", (d.counts.done || 0) + (d.counts.skipped ? " (+" + d.counts.skipped + " skipped)" : ""), "count-done"),
      card("running", (d.counts.running || 0) + (d.counts.fetching || 0) + (d.counts.offered || 0)), card("failed", d.counts.failed || 0),
      card("elapsed", fmtS(d.elapsed)), h("div", { class: "card", title: job.coordinator }, h("div", { class: "label" }, "coordinator"), h("div", { class: "big mono" }, short(job.coordinator)))),
    job.reason ? h("p", { class: "err" }, job.reason) : "",
    progressBar(job.progress), tabs, body);
  const detail = $("#task-detail");
  if (detail) detail.hidden = tab !== "tasks";
  if (tab === "tasks") renderTasks(d, r, body);
  else if (tab === "timeline") renderTimeline(d, r, body);
  else if (tab === "dag") body.append(dagSvg(d.stages));
  else if (tab === "verification") renderVerification(d, r, body);
  else body.append(table("results", ["task", "output", "CID", ""], d.results.map((x) => h("tr", {},
    h("td", { class: "mono" }, x.task), h("td", { class: "mono" }, x.output), h("td", { class: "mono" }, x.cid),
    h("td", {}, h("a", { href: "/v1/cat?cid=" + encodeURIComponent(x.cid), download: x.output.replaceAll("/", "-") }, "download"))))),
    d.results_total > d.results.length ? h("p", { class: "muted" }, `${d.results.length} of ${d.results_total} shown`) : "");
}

function renderTasks(d, r, body) {
  const stages = d.stages.map((s) => s.stage);
  body.append(h("div", { class: "pager" }, filter(r, "state", ["waiting", "ready", "placing", "offered", "running", "fetching", "done", "skipped", "failed", "cancelled"], d.state),
      filter(r, "stage", stages, d.stage)),
    table("tasks", ["task", "stage", "state", "peer", "attempts", "started", "duration", "reason"],
      d.rows.map((t) => h("tr", { class: "click", "data-task": t.task, "data-state": t.state, onclick: () => openTask(d.job.job_id, t.task) },
        h("td", { class: "mono" }, t.task), h("td", {}, t.stage), h("td", {}, stateTag(t.state)), h("td", { class: "mono", title: t.peer || "" }, short(t.peer)),
        h("td", {}, t.attempts), h("td", {}, t.start === null ? "-" : "+" + fmtS(t.start)), h("td", {}, fmtS(t.duration)), h("td", { title: t.reason }, t.reason)))),
    pager(d, r));
  if (app.task && d.job.state === "running") openTask(d.job.job_id, app.task, true);
}

async function openTask(jobId, task, quiet) {
  app.task = task;
  const box = $("#task-detail");
  if (!box) return;
  try {
    const t = await api(`/dashboard/api/task/${encodeURIComponent(jobId)}?task=${encodeURIComponent(task)}`);
    const logs = h("div", {}, h("button", { class: "secondary", id: "logs-btn", onclick: async () => {
      logs.replaceChildren("fetching logs…");
      try {
        const l = await api(`/v1/jobs/logs/${encodeURIComponent(jobId)}?task=${encodeURIComponent(task)}`);
        logs.replaceChildren(...l.tasks[0].attempts.map((a) => h("div", {}, h("h2", {}, `attempt ${a.attempt} on ${short(a.peer)}: ${a.outcome || "running"}`),
          h("pre", {}, a.stderr === null ? a.log_error : (a.stderr || "(no output on stderr)")))));
      } catch (e) { logs.replaceChildren(h("p", { class: "err" }, e.message)); }
    } }, "Show stderr logs"));
    box.replaceChildren(h("div", { class: "detail" }, h("h2", {}, "Task ", h("span", { class: "mono" }, t.task), " ", stateTag(t.state)),
      t.reason ? h("p", { class: "err" }, t.reason) : "",
      table("attempts", ["#", "peer", "outcome", "start", "end", "duration", "message"], t.attempts.map((a) => h("tr", {},
        h("td", {}, a.attempt), h("td", { class: "mono" }, a.peer), h("td", {}, stateTag(a.outcome || "running")), h("td", {}, "+" + fmtS(a.start)),
        h("td", {}, a.end === null ? "-" : "+" + fmtS(a.end)), h("td", {}, fmtS(a.duration)), h("td", { title: a.message }, a.message)))),
      h("h2", {}, "Outputs"), table("outputs", ["name", "CID"], Object.entries(t.outputs).map(([k, v]) => h("tr", {}, h("td", { class: "mono" }, k),
        h("td", { class: "mono" }, h("a", { href: "/v1/cat?cid=" + encodeURIComponent(v), download: k.replaceAll("/", "-") }, v))))),
      h("h2", {}, "Story"), h("pre", {}, t.story.map((s) => `+${s[0].toFixed(3)} s  ${s[2]} → ${s[3]}  (${s[1]})`).join("\n")), logs));
    if (!quiet) box.scrollIntoView({ block: "start" });
  } catch (e) { if (!quiet) box.replaceChildren(h("p", { class: "err" }, e.message)); }
}

const VERDICTS = { agreed: "ok", rejected: "lost", "proven wrong": "failed", running: "running" };
function renderVerification(d, r, body) {
  if (!d.verification) { body.append(h("p", { class: "muted" }, "loading…")); return; }
  const v = d.verification, s = v.summary, peers = (list) => list.length ? list.map(([p, x]) => h("div", { class: "mono", title: p }, short(p) + ": " + x)) : "none";
  if (s.strategy === "none") body.append(h("p", { class: "muted", id: "not-verified" }, "This job's results are not verified (verification: none): each task ran once and its result was taken."));
  body.append(h("div", { class: "cards", id: "verification-summary" },
      card("strategy", s.strategy, "v-strategy"), card("tasks accepted", `${s.accepted} / ${s.tasks}`, "v-accepted"),
      card("verified", s.verified, "v-verified"), card("executions", s.executions, "v-executions"),
      card("rejected (proven wrong)", `${s.stats.verify_rejected + s.stats.verify_rejected_proven} (${s.stats.verify_rejected_proven})`, "v-rejected"),
      card("results retracted", s.stats.results_retracted, "v-retracted")),
    h("div", { class: "row row3" },
      h("div", {}, h("h2", {}, "Peers proven wrong in this job (banned)"), h("div", { id: "v-banned" }, peers(s.proven_wrong))),
      h("div", {}, h("h2", {}, "Peers whose results were rejected"), h("div", { id: "v-rejected-peers" }, peers(s.rejected.map(([p, n]) => [p, n + " tasks"])))),
      h("div", {}, h("h2", {}, "Banned / suspected at this daemon"), h("div", { id: "v-bans" }, peers(s.banned_here.concat(s.suspected_here.map(([p, x]) => [p, "suspected: " + x])))))),
    h("div", { class: "pager" }, filter(r, "state", ["waiting", "ready", "placing", "offered", "running", "fetching", "done", "skipped", "failed", "cancelled"], v.state),
      filter(r, "stage", d.stages.map((x) => x.stage), v.stage)),
    table("evidence", ["task", "status", "executions: peer · outcome · output digest · verdict", "accepted result", "signers"],
      v.rows.map((t) => h("tr", { "data-task": t.task, "data-status": t.status },
        h("td", { class: "mono" }, t.task, h("div", {}, stateTag(t.state))),
        h("td", {}, t.status, t.status === "verifying" ? h("div", { class: "muted" }, `${t.results} results, ${t.pending} pending`) : ""),
        h("td", {}, h("table", { class: "execs" }, h("tbody", {}, t.executions.map((x) => h("tr", { "data-peer": x.peer, "data-verdict": x.verdict },
          h("td", { class: "mono", title: x.peer + (x.lease ? " lease " + x.lease : "") }, short(x.peer) + (x.trusted ? " (trusted)" : "")),
          h("td", {}, stateTag(x.outcome)), h("td", { class: "mono", title: x.signed ? "digest of the outputs this peer signed" : "" }, x.outputs || "-"),
          h("td", { title: x.why }, h("span", { class: "state " + (VERDICTS[x.verdict] || "other") }, x.verdict), x.why && x.verdict !== "agreed" ? " " + x.why : "")))))),
        h("td", {}, t.accepted ? [h("div", {}, t.accepted.how + (t.accepted.verified ? "" : " (not verified)")),
          h("div", { class: "mono", title: "SHA-256 of the accepted outputs" }, t.accepted.digest || ""),
          Object.entries(t.accepted.outputs).map(([k, c]) => h("div", { class: "mono" }, h("a", { href: "/v1/cat?cid=" + encodeURIComponent(c), download: k.replaceAll("/", "-"), title: c }, k)))] : "-"),
        h("td", {}, t.accepted ? [t.accepted.signers.map((p) => h("div", { class: "mono signer", title: p }, short(p))),
          h("div", { class: "muted" }, t.accepted.problem ? t.accepted.problem : t.accepted.coordinator ? `evidence (${t.accepted.evidence_bytes} B) signed by ${short(t.accepted.coordinator)}` + (t.accepted.signature_ok ? ", signatures valid" : ", NOT by its coordinator") : "no signed evidence"),
          t.rejected.map((x) => h("div", { class: "err", title: x.reason }, `${short(x.peer)} ${x.proven ? "proven wrong, banned" : "rejected"}: ${x.reason}`))] : ""))),
    pager(v, r)));
}

function renderTimeline(d, r, body) {
  const canvas = h("canvas", { id: "timeline", height: 120 });
  const info = h("div", { class: "muted", id: "timeline-info" }, "loading…");
  body.append(legend(["running", "ok", "failed", "lost", "revoked"]), canvas, info);
  const key = d.job.job_id + ":" + JSON.stringify(d.counts);
  const now = Date.now();
  if (app.timeline && app.timelineKey === key) { drawTimeline(canvas, info, app.timeline); return; }
  if (app.timeline && now - app.timelineAt < 3000 && app.timeline.job === d.job.job_id) { drawTimeline(canvas, info, app.timeline); return; }
  app.timelineKey = key; app.timelineAt = now;
  api("/dashboard/api/timeline/" + encodeURIComponent(d.job.job_id)).then((t) => {
    t.job = d.job.job_id; app.timeline = t;
    const c = $("#timeline"); if (c) drawTimeline(c, $("#timeline-info"), t);
  }).catch((e) => { info.textContent = e.message; });
}

function drawTimeline(canvas, info, t) {
  const lane = Math.max(4, Math.min(22, Math.floor(6000 / Math.max(1, t.lanes.length)))), left = 130, top = 18;
  canvas.height = Math.max(60, top + lane * t.lanes.length + 10);
  const [g, w, hh] = ctx2d(canvas);
  const span = Math.max(t.span, 0.001), x = (s) => left + (w - left - 10) * s / span;
  g.fillStyle = "#6b7480";
  for (let i = 0; i <= 5; i++) { const s = span * i / 5; g.fillText("+" + fmtS(s), Math.min(x(s) - 10, w - 50), 12); g.fillStyle = "#eef0f3"; g.fillRect(x(s), top, 1, hh - top); g.fillStyle = "#6b7480"; }
  t.lanes.forEach(([p, row], i) => {
    if (row === 0) { g.fillStyle = "#dde1e6"; g.fillRect(0, top + lane * i, w, 1); if (lane >= 10) { g.fillStyle = "#1d232b"; g.fillText(short(t.peers[p]), 4, top + lane * i + Math.min(15, lane - 3)); } }
  });
  for (const [l, s, e, o] of t.bars) {
    g.fillStyle = COLORS[t.outcomes[o]] || COLORS.other;
    g.fillRect(x(s), top + lane * l + 2, Math.max(1.5, x(e) - x(s) - 1), Math.max(2, lane - 4));
  }
  canvas.dataset.bars = t.bars.length; canvas.dataset.peers = t.peers.length;
  info.textContent = `${t.bars.length} attempts on ${t.peers.length} peers (a row per task slot in use) over ${fmtS(span)}` + (t.bars_dropped ? ` (${t.bars_dropped} oldest not drawn)` : "") + ". Hover for a task.";
  canvas.onmousemove = (ev) => {
    const rect = canvas.getBoundingClientRect(), mx = ev.clientX - rect.left, my = ev.clientY - rect.top;
    const l = Math.floor((my - top) / lane);
    const hit = t.bars.find((b) => b[0] === l && x(b[1]) <= mx && mx <= Math.max(x(b[2]), x(b[1]) + 2));
    canvas.title = hit ? `${t.tasks[hit[4]]} on ${t.peers[t.lanes[l][0]]}: ${t.outcomes[hit[3]]}, +${fmtS(hit[1])} to +${fmtS(hit[2])}` : "";
  };
}

function dagSvg(stages) {
  const ns = "http://www.w3.org/2000/svg", depth = {}, byName = Object.fromEntries(stages.map((s) => [s.stage, s]));
  const level = (s, seen = new Set()) => { if (depth[s.stage] !== undefined) return depth[s.stage]; if (seen.has(s.stage)) return 0; seen.add(s.stage);
    return (depth[s.stage] = s.deps.length ? 1 + Math.max(...s.deps.map((d) => byName[d] ? level(byName[d], seen) : 0)) : 0); };
  stages.forEach((s) => level(s));
  const cols = {}; stages.forEach((s) => (cols[depth[s.stage]] = cols[depth[s.stage]] || []).push(s));
  const bw = 180, bh = 54, gx = 70, gy = 20, pos = {};
  Object.entries(cols).forEach(([c, list]) => list.forEach((s, i) => (pos[s.stage] = [20 + Number(c) * (bw + gx), 20 + i * (bh + gy)])));
  const W = 40 + (Math.max(...Object.keys(cols).map(Number)) + 1) * (bw + gx), H = 40 + Math.max(...Object.values(cols).map((l) => l.length)) * (bh + gy);
  const svg = document.createElementNS(ns, "svg"); svg.setAttribute("width", W); svg.setAttribute("height", H); svg.id = "dag";
  const el = (tag, attrs, text) => { const e = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); if (text !== undefined) e.textContent = text; svg.append(e); return e; };
  stages.forEach((s) => s.deps.forEach((d) => { if (!pos[d]) return; const [x1, y1] = pos[d], [x2, y2] = pos[s.stage];
    el("path", { d: `M${x1 + bw},${y1 + bh / 2} C${x1 + bw + gx / 2},${y1 + bh / 2} ${x2 - gx / 2},${y2 + bh / 2} ${x2},${y2 + bh / 2}`, fill: "none", stroke: "#8a8f98", "stroke-width": 1.5 }); }));
  const fill = { done: "#2e9d58", running: "#2f6fde", failed: "#d23c3c", cancelled: "#8a8f98", waiting: "#b4b9c0" };
  stages.forEach((s) => { const [x, y] = pos[s.stage];
    const g = el("rect", { x, y, width: bw, height: bh, rx: 6, fill: fill[s.state] || "#b4b9c0", "data-stage": s.stage, "data-state": s.state });
    el("text", { x: x + 10, y: y + 20, fill: "#fff", "font-weight": "600" }, s.stage);
    el("text", { x: x + 10, y: y + 40, fill: "#fff" }, `${s.counts.done || 0}/${s.total} done` + (s.counts.failed ? `, ${s.counts.failed} failed` : "") + (s.counts.running ? `, ${s.counts.running} running` : ""));
    return g; });
  return h("div", { class: "detail" }, svg);
}

function renderData(d, r, content) {
  content.replaceChildren(
    h("h1", {}, "Data"),
    h("div", { class: "cards" }, card("pinned roots", d.pins_total, "pins-total"), card("block store", fmtBytes(d.store_bytes)),
      card("announced", d.announced), card("blocks sent", d.bitswap.blocks_sent ?? 0), card("blocks received", d.bitswap.blocks_received ?? 0),
      card("bitswap sent", fmtBytes(d.bitswap.bytes_sent)), card("bitswap received", fmtBytes(d.bitswap.bytes_received))),
    h("h2", {}, `Transfers in flight (${d.transfers.length})`),
    table("transfers", ["root", "blocks", "bytes", "wanted", "peers", "done"], d.transfers.map((s) => h("tr", {},
      h("td", { class: "mono" }, s.root), h("td", {}, s.blocks), h("td", {}, fmtBytes(s.bytes)), h("td", {}, s.wanted), h("td", {}, s.peers), h("td", {}, String(s.done))))),
    h("h2", { style: "margin-top:12px" }, `Bitswap peers served (${d.peers_total})`),
    table("bitswap-peers", ["peer", "wants received", "blocks sent", "bytes sent", "waiting"], d.peers.map((p) => h("tr", {},
      h("td", { class: "mono" }, p.peer), h("td", {}, p.wants_received), h("td", {}, p.blocks_sent), h("td", {}, fmtBytes(p.bytes_sent)), h("td", {}, p.waiting)))),
    h("h2", { style: "margin-top:12px" }, `Pinned roots (${d.pins_total})`),
    table("pins", ["CID", ""], d.pins.map((c) => h("tr", {}, h("td", { class: "mono" }, c),
      h("td", {}, h("a", { href: "/v1/cat?cid=" + encodeURIComponent(c), download: c }, "download"))))),
    pager({ offset: d.offset, limit: d.limit, matching: d.pins_total }, r));
}

const PALETTE = ["#2f6fde", "#2e9d58", "#e0a400", "#d23c3c", "#8e44ad", "#16a2b8", "#8a8f98"];
function renderMachine(d, r, content) {
  const p = d.proc, w = d.workers || {};
  const perProto = Object.fromEntries(Object.entries(d.protocols).map(([k, v]) => [k, (v.bytes_sent || 0) + (v.bytes_received || 0)]));
  app.series.push([Date.now(), d.bytes_per_s.sent, d.bytes_per_s.received, perProto]);
  if (app.series.length > 300) app.series.shift();
  const names = [...new Set(app.series.flatMap((x) => Object.keys(x[3])))].sort();
  const colors = Object.fromEntries(names.map((n, i) => [n, PALETTE[i % PALETTE.length]]));
  const spark = h("canvas", { id: "bytes-chart", height: 140 });
  const rate = (x) => x === undefined ? "" : fmtBytes(Math.round(x)) + "/s";
  content.replaceChildren(
    h("h1", {}, "This machine"),
    h("div", { class: "cards" },
      card("daemon CPU", p.cpu_percent === undefined ? "-" : p.cpu_percent.toFixed(1) + " %", "proc-cpu"),
      card("machine CPU", p.system_cpu_percent === undefined ? "-" : p.system_cpu_percent.toFixed(0) + " % of " + p.cpus),
      card("daemon memory (RSS)", fmtBytes(p.rss)),
      card("machine memory free", fmtBytes(p.memory_available) + " / " + fmtBytes(p.memory_total)),
      card("executor workers", `${w.busy ?? 0} busy / ${w.workers ?? 0}`, "workers"),
      card("task slots", d.slots ? `${d.slots.busy} busy / ${d.slots.total}` : "-"),
      card("tasks run", `${(d.tasks || {}).ok ?? 0} ok, ${(d.tasks || {}).failed ?? 0} failed`)),
    h("h2", {}, "Executor workers"), table("workers-table", Object.keys(w), [h("tr", {}, Object.values(w).map((v) => h("td", {}, v)))]),
    h("h2", { style: "margin-top:12px" }, "Messages and bytes per second by protocol"),
    table("protocols", ["protocol", "messages sent /s", "messages received /s", "bytes sent /s", "bytes received /s"], Object.entries(d.protocols).map(([k, v]) => h("tr", { "data-protocol": k },
      h("td", {}, k), h("td", {}, v.sent), h("td", {}, v.received), h("td", { class: "bytes-sent" }, rate(v.bytes_sent)), h("td", { class: "bytes-received" }, rate(v.bytes_received))))),
    h("p", { class: "muted" }, `All protocols on the libp2p transport: ${fmtBytes(d.bytes_per_s.sent)}/s sent, ${fmtBytes(d.bytes_per_s.received)}/s received; ${d.messages_total.sent} messages sent, ${d.messages_total.received} received since start. Bitswap moves blocks on streams of its own (its row is its own counters).`),
    h("h2", {}, "Bytes per second by protocol, sent and received (since this page opened)"), spark, legend(names, colors));
  const [g, W, H] = ctx2d(spark), max = Math.max(1, ...app.series.flatMap((s) => Object.values(s[3]))), n = app.series.length;
  names.forEach((name) => { g.strokeStyle = colors[name]; g.lineWidth = 2; g.beginPath();
    app.series.forEach((s, i) => { const x = 40 + (W - 50) * (n > 1 ? i / (n - 1) : 1), y = H - 10 - (H - 20) * Math.log10(1 + (s[3][name] || 0)) / Math.log10(1 + max); if (i) g.lineTo(x, y); else g.moveTo(x, y); }); g.stroke(); });
  g.fillStyle = "#6b7480"; g.fillText(fmtBytes(Math.round(max)) + "/s (log scale)", 2, 12);
  spark.dataset.protocols = names.join(",");
}

start();
