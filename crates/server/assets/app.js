// adsync dashboard: a single page over the public API (/api/v1) and its WebSocket of run
// events. Written for this project, no library: every value from the server goes into the page
// as text (never as HTML), charts are SVG drawn here.
"use strict";

const state = { me: null, page: null, gen: 0, socket: null, socketTries: 0, listeners: new Set() };
const RUNNING = new Set(["queued", "running"]);
const OUTCOME_COLOURS = {
  succeeded: "#1a7f37", partial: "#9a6700", failed: "#c0262d", running: "#0b57d0",
  queued: "#0b57d0", interrupted: "#6e7781", cancelled: "#6e7781",
};

// ---- DOM and formatting helpers -------------------------------------------------------------

function h(tag, attrs, ...children) {
  // SVG elements by name; "svg:a" is a link inside a chart.
  const svg = tag.startsWith("svg:") || ["svg", "rect", "line", "polyline", "text", "title", "g", "circle", "path"].includes(tag);
  const name = tag.replace(/^svg:/, "");
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", name) : document.createElement(name);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    // Through the CSSOM: the page's CSP allows no inline style attribute.
    else if (k === "style") el.style.cssText = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const main = () => document.getElementById("main");
function show(...nodes) { const m = main(); m.replaceChildren(...nodes); }
function fmtTime(t) { return t ? new Date(t).toLocaleString() : "—"; }
function fmtSecs(s) {
  if (s === null || s === undefined) return "—";
  if (s < 60) return s.toFixed(1) + " s";
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${Math.round(s % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}
function fmtRatio(r) { return r === null || r === undefined ? "—" : r.toFixed(2) + "×"; }
function badge(status) { return h("span", { class: `badge s-${status}` }, status); }
function field(label, input) {
  const id = input.id || "f-" + Math.random().toString(36).slice(2);
  input.id = id;
  return h("div", {}, h("label", { for: id }, label), input);
}
function errorBox(e) { return h("p", { class: "error", role: "alert" }, e.message || String(e)); }

// ---- API ------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) { super(body && body.message ? body.message : `HTTP ${status}`); this.status = status; this.body = body; }
}

async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (method !== "GET") init.headers["X-Adsync-Csrf"] = "1";
  if (body !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  const res = await fetch(path, init);
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (res.status === 401 && path !== "/api/v1/session") {
    if (state.me) signOut(false, "Your session ended (signed out, expired, or its key was revoked). Sign in again.");
    throw new ApiError(401, data);
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

// ---- Live events (WebSocket, reconnecting) ----------------------------------------------------

function connect() {
  if (!state.me || state.socket) return;
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/api/v1/events`);
  state.socket = ws;
  const live = document.getElementById("live");
  ws.onopen = () => { state.socketTries = 0; live.textContent = "live"; live.classList.add("on"); };
  ws.onmessage = (m) => {
    let ev; try { ev = JSON.parse(m.data); } catch { return; }
    // After a gap (hello after a reconnect, or lagged), pages refetch what they show.
    if (ev.type === "hello" || ev.type === "lagged") ev = { type: "resync" };
    for (const f of state.listeners) f(ev);
  };
  ws.onclose = (e) => {
    if (state.socket !== ws) return; // a socket of an ended session
    state.socket = null; live.textContent = "reconnecting"; live.classList.remove("on");
    if (!state.me) { live.textContent = "offline"; return; }
    // 1008: the key or session is no longer valid; asking the API ends the session here too.
    if (e.code === 1008) { api("GET", "/api/v1/session").catch(() => {}); return; }
    const delay = Math.min(10000, 500 * 2 ** state.socketTries++);
    setTimeout(connect, delay);
  };
}
function onEvent(f) { state.listeners.add(f); return () => state.listeners.delete(f); }

// ---- Sign-in ----------------------------------------------------------------------------------

function signIn(message) {
  document.getElementById("nav").hidden = true;
  const shown = document.getElementById("signin");
  if (shown) {
    const e = document.getElementById("signin-error");
    if (message) { e.hidden = false; e.textContent = message; }
    return;
  }
  const key = h("input", { id: "key", name: "key", type: "password", autocomplete: "current-password", required: true });
  const err = h("p", { id: "signin-error", class: "error", role: "alert", hidden: !message }, message || "");
  const form = h("form", { id: "signin", class: "form signin" },
    h("h1", {}, "Sign in to adsync"),
    field("API key", key),
    h("p", { class: "note" }, "The admin key, or a tenant's key (it sees only its tenant). It is kept in an HttpOnly cookie."),
    err,
    h("div", { class: "actions" }, h("button", { class: "primary", type: "submit" }, "Sign in")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      state.me = await api("POST", "/api/v1/session", { key: key.value });
      started();
    } catch (ex) {
      err.hidden = false;
      err.textContent = ex.status === 401 ? "That key is not valid." : ex.message;
    }
  });
  show(form);
  key.focus();
}

function started() {
  document.getElementById("nav").hidden = false;
  document.getElementById("who").textContent = state.me.admin ? "admin" : `tenant ${state.me.tenant_id}`;
  connect();
  route();
}

// Ends the session here (page, listeners, socket) and, when asked, on the server.
async function signOut(onServer, message) {
  leavePage();
  state.me = null;
  const ws = state.socket;
  state.socket = null;
  if (ws) ws.close();
  const live = document.getElementById("live");
  live.textContent = "offline"; live.classList.remove("on");
  if (onServer) await api("DELETE", "/api/v1/session").catch(() => {});
  signIn(message);
}

document.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("signout").addEventListener("click", () => signOut(true));
  window.addEventListener("hashchange", route);
  try { state.me = await api("GET", "/api/v1/session"); started(); } catch { signIn(); }
});

// ---- Router -----------------------------------------------------------------------------------

// Each page gets a handle: `alive()` is false once another page replaced it (a page still
// loading must then neither draw nor keep listeners), `onLeave` registers its cleanups, and
// `show` draws only while it is the current page.
function leavePage() {
  const p = state.page;
  state.page = null;
  state.gen++;
  if (p) for (const f of p.cleanups.splice(0)) f();
}
function newPage() {
  leavePage();
  const gen = state.gen;
  const pg = {
    cleanups: [],
    alive: () => gen === state.gen,
    onLeave(f) { if (pg.alive()) pg.cleanups.push(f); else f(); },
    show(...nodes) { if (pg.alive()) show(...nodes); return pg.alive(); },
  };
  state.page = pg;
  return pg;
}

function route() {
  if (!state.me) return signIn();
  const pg = newPage();
  const path = location.hash.replace(/^#/, "") || "/";
  let m;
  if (path === "/") overviewPage(pg);
  else if ((m = path.match(/^\/tenants\/([^/]+)$/))) tenantPage(pg, decodeURIComponent(m[1]));
  else if ((m = path.match(/^\/runs\/(\d+)$/))) runPage(pg, Number(m[1]));
  else if (path === "/audit") auditPage(pg);
  else if (path === "/workers") workersPage(pg);
  else notFound(pg, "page");
  main().focus();
}

function notFound(pg, what) {
  pg.show(h("div", { id: "not-found" }, h("h1", {}, "Not found"), h("p", {}, `No such ${what}, or not one this key may see.`), h("a", { href: "#/" }, "Back to the overview")));
}

// A page refetches its data when a relevant event arrives, at most once a second. Pages
// subscribe before their first fetch, so that nothing that happens meanwhile is missed.
function livePage(pg, refresh, relevant, every = () => 1000) {
  let timer = null;
  const off = onEvent((ev) => {
    if (ev.type !== "resync" && !relevant(ev)) return;
    if (timer) return;
    timer = setTimeout(() => { timer = null; if (pg.alive()) refresh(); }, every());
  });
  pg.onLeave(() => { off(); if (timer) clearTimeout(timer); });
}

// ---- Charts -------------------------------------------------------------------------------------

// Runs as bars: height = duration, a tick at the floor, colour = outcome. Oldest on the left.
function runsChart(runs, attrs) {
  const W = 640, H = 160, pad = 28;
  const list = runs.slice().reverse();
  const max = Math.max(1, ...list.map((r) => Math.max(r.duration_seconds || 0, r.floor_seconds || 0)));
  const bw = list.length ? Math.min(40, (W - pad - 8) / list.length) : 0;
  const y = (v) => H - 18 - (v / max) * (H - 30);
  const svg = h("svg", Object.assign({ class: "chart", viewBox: `0 0 ${W} ${H}`, role: "group", "aria-label": "Run durations against the rate-limit floor (each bar links to its run)" }, attrs),
    h("text", { x: 2, y: 12 }, fmtSecs(max)), h("text", { x: 2, y: H - 20 }, "0"),
    h("line", { x1: pad, y1: H - 18, x2: W, y2: H - 18, stroke: "#d4d9df" }));
  list.forEach((r, i) => {
    const x = pad + i * bw + 2, d = r.duration_seconds || 0;
    const g = h("g", { "data-run-id": r.id },
      h("title", {}, `run ${r.id}: ${r.status}, ${fmtSecs(r.duration_seconds)}, floor ${fmtSecs(r.floor_seconds)}, ${fmtRatio(r.floor_ratio)}`),
      h("rect", { x, y: y(d), width: Math.max(2, bw - 4), height: Math.max(1, H - 18 - y(d)), fill: OUTCOME_COLOURS[r.status] || "#6e7781" }));
    if (r.floor_seconds) g.append(h("line", { x1: x - 1, x2: x + bw - 3, y1: y(r.floor_seconds), y2: y(r.floor_seconds), stroke: "#1b1f24", "stroke-width": 2 }));
    svg.append(h("svg:a", { href: `#/runs/${r.id}`, "aria-label": `run ${r.id}` }, g));
  });
  if (!list.length) svg.append(h("text", { x: W / 2 - 30, y: H / 2 }, "no runs yet"));
  return svg;
}

function legend() {
  return h("div", { class: "legend" }, ...["succeeded", "partial", "failed", "running", "interrupted"].map((s) => h("span", {}, h("i", { style: `background:${OUTCOME_COLOURS[s]}` }), s)),
    h("span", {}, h("i", { style: "background:#1b1f24;height:3px" }), "floor (rate limit)"));
}

// Sparkline of recent runs for the overview: one bar per run, height = duration / floor.
function sparkline(runs) {
  const list = runs.slice(0, 12).reverse();
  const svg = h("svg", { class: "spark", width: 84, height: 20, viewBox: "0 0 84 20", role: "img", "aria-label": `${list.length} recent runs` });
  list.forEach((r, i) => {
    // Height: the run's time over its floor (1x: half height, 2x and more: full).
    const v = Math.min(2, r.floor_ratio || (RUNNING.has(r.status) ? 1 : 0.3));
    const hgt = Math.max(2, (v / 2) * 18);
    svg.append(h("rect", { x: i * 7, y: 20 - hgt, width: 5, height: hgt, fill: OUTCOME_COLOURS[r.status] || "#6e7781" }, h("title", {}, `${r.status} ${fmtRatio(r.floor_ratio)}`)));
  });
  return svg;
}

// Lines over a shared x axis; series: [{name, colour, values: [number|null]}].
function lineChart(labels, series, attrs) {
  const W = 640, H = 170, pad = 34;
  const svg = h("svg", Object.assign({ class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img" }, attrs));
  const n = labels.length;
  const x = (i) => pad + (n <= 1 ? 0 : (i * (W - pad - 10)) / (n - 1));
  for (const s of series) {
    const max = Math.max(1e-9, ...s.values.filter((v) => v !== null));
    const pts = s.values.map((v, i) => (v === null ? null : `${x(i)},${H - 16 - (v / max) * (H - 30)}`)).filter(Boolean);
    svg.append(h("polyline", { points: pts.join(" "), fill: "none", stroke: s.colour, "stroke-width": 2 }, h("title", {}, `${s.name} (max ${max.toLocaleString()})`)));
    s.values.forEach((v, i) => { if (v !== null) svg.append(h("circle", { cx: x(i), cy: H - 16 - (v / max) * (H - 30), r: 2.5, fill: s.colour })); });
  }
  if (n) { svg.append(h("text", { x: pad, y: H - 2 }, labels[0])); svg.append(h("text", { x: W - 120, y: H - 2 }, labels[n - 1])); }
  return svg;
}

// ---- Overview -----------------------------------------------------------------------------------

async function overviewPage(pg) {
  pg.show(h("h1", {}, "Overview"), h("p", { class: "note" }, "Loading…"));
  const search = h("input", { id: "tenant-search", type: "search", placeholder: "name or id" });
  const filter = h("select", { id: "tenant-filter" }, ...[["all", "All tenants"], ["active", "Active"], ["paused", "Paused"], ["failing", "Last run not succeeded"], ["running", "Running now"]].map(([v, t]) => h("option", { value: v }, t)));
  const body = h("tbody");
  const cards = h("div", { class: "cards" });
  let data = null;

  const render = () => {
    if (!data) return;
    const q = search.value.trim().toLowerCase(), f = filter.value;
    const rows = data.tenants.filter((t) => {
      const last = t.recent_runs[0];
      if (q && !t.name.toLowerCase().includes(q) && !t.id.toLowerCase().includes(q)) return false;
      if (f === "paused") return t.paused;
      if (f === "active") return !t.paused;
      if (f === "failing") return last && !RUNNING.has(last.status) && last.status !== "succeeded";
      if (f === "running") return last && RUNNING.has(last.status);
      return true;
    });
    body.replaceChildren(...rows.map((t) => {
      const last = t.recent_runs.find((r) => !RUNNING.has(r.status));
      const active = t.recent_runs.find((r) => RUNNING.has(r.status));
      return h("tr", { "data-tenant-id": t.id },
        h("td", {}, h("a", { href: `#/tenants/${encodeURIComponent(t.id)}` }, t.name)),
        h("td", {}, t.paused ? badge("paused") : active ? h("a", { href: `#/runs/${active.id}` }, badge(active.status)) : "active"),
        h("td", {}, last ? [badge(last.status), " ", fmtSecs(last.duration_seconds), " · ", fmtRatio(last.floor_ratio)] : "never"),
        h("td", { class: "hide-narrow" }, t.paused ? "—" : fmtTime(t.next_run_at)),
        h("td", { class: "hide-narrow" }, t.rate_limit, " ",
          t.budget_use === null || t.budget_use === undefined ? "" : h("meter", { min: 0, max: 1, value: t.budget_use, title: `${Math.round(t.budget_use * 100)}% of the window used now; ${t.budget_rate_limited} 429s ever`, "aria-label": "Rate budget used now" }),
          t.budget_use === null || t.budget_use === undefined ? "" : ` ${Math.round(t.budget_use * 100)}%`),
        h("td", { class: "num" }, t.campaigns.toLocaleString()),
        h("td", { class: "num" }, String(t.open_dead_letters)),
        h("td", { class: "hide-narrow" }, sparkline(t.recent_runs)));
    }));
    const tot = data.totals, today = tot.runs_today || {};
    const card = (n, l) => h("div", { class: "card" }, h("div", { class: "n" }, String(n)), h("div", { class: "l" }, l));
    cards.replaceChildren(card(tot.tenants, `tenants (${tot.paused} paused)`), card(today.succeeded || 0, "runs succeeded today"),
      card((today.failed || 0) + (today.partial || 0), "failed or partial today"), card(data.tenants.filter((t) => t.recent_runs.some((r) => r.status === "running")).length, "running now"),
      card(tot.campaigns.toLocaleString(), "campaigns"), card(tot.rate_limited_today, "429s today"), card(tot.open_dead_letters, "open dead letters"));
  };
  const refresh = async () => {
    try { const d = await api("GET", "/api/v1/overview"); if (pg.alive()) { data = d; render(); } } catch (e) { if (e.status !== 401 && pg.alive()) main().prepend(errorBox(e)); }
  };
  search.addEventListener("input", render);
  filter.addEventListener("change", render);

  const newBtn = state.me.admin ? h("button", { id: "new-tenant", type: "button", class: "primary" }, "New tenant") : null;
  const formSlot = h("div");
  if (newBtn) newBtn.addEventListener("click", () => { formSlot.replaceChildren(tenantForm()); formSlot.querySelector("input").focus(); });
  // Every run's end changes the overview; with many tenants, read it at most every 5 s.
  livePage(pg, refresh, (ev) => ev.type === "run" && ev.status !== "running",
    () => (data && data.tenants.length > 200 ? 5000 : 1000));
  pg.show(h("div", { class: "row" }, h("h1", {}, "Overview"), newBtn), formSlot, cards,
    h("div", { class: "toolbar" }, field("Search", search), field("Show", filter)),
    h("div", { class: "scroll" }, h("table", { id: "tenants" },
      h("caption", { class: "visually-hidden" }, "Tenants"),
      h("thead", {}, h("tr", {}, h("th", {}, "Tenant"), h("th", {}, "Status"), h("th", {}, "Last run"), h("th", { class: "hide-narrow" }, "Next run"),
        h("th", { class: "hide-narrow" }, "Rate limit · budget used"), h("th", { class: "num" }, "Campaigns"), h("th", { class: "num" }, "Dead letters"), h("th", { class: "hide-narrow" }, "Recent runs"))),
      body)));
  await refresh();
}

function tenantForm() {
  const inputs = {
    name: h("input", { name: "name", required: true }),
    api_url: h("input", { name: "api_url", type: "url", required: true, placeholder: "https://ads.example.com" }),
    client_id: h("input", { name: "client_id", placeholder: "default: unique per tenant" }),
    rate_limit: h("input", { name: "rate_limit", value: "10/60s" }),
    schedule: h("input", { name: "schedule", placeholder: "0 * * * * (empty: none)" }),
    email: h("input", { name: "email", type: "email", required: true, autocomplete: "off" }),
    password: h("input", { name: "password", type: "password", required: true, autocomplete: "new-password" }),
  };
  const err = h("p", { class: "error", role: "alert", hidden: true });
  const form = h("form", { id: "tenant-form", class: "form" },
    field("Name", inputs.name), field("Platform URL", inputs.api_url), field("Client id", inputs.client_id),
    field("Rate limit (N/W)", inputs.rate_limit), field("Schedule (cron)", inputs.schedule),
    field("Platform e-mail", inputs.email), field("Platform password (write-only)", inputs.password), err,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Create tenant"),
      h("button", { type: "button", onclick: () => form.remove() }, "Cancel")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const v = (k) => inputs[k].value.trim();
    const body = { name: v("name"), api_url: v("api_url"), credentials: { email: v("email"), password: inputs.password.value } };
    if (v("client_id")) body.client_id = v("client_id");
    if (v("rate_limit")) body.rate_limit = v("rate_limit");
    if (v("schedule")) body.schedule = v("schedule");
    try {
      const t = await api("POST", "/api/v1/tenants", body);
      location.hash = `#/tenants/${encodeURIComponent(t.id)}`;
    } catch (ex) { err.hidden = false; err.textContent = ex.message; }
  });
  return form;
}

// ---- Tenant page --------------------------------------------------------------------------------

async function tenantPage(pg, id) {
  const base = `/api/v1/tenants/${encodeURIComponent(id)}`;
  let tenant;
  try { tenant = await api("GET", base); } catch (e) { return e.status === 404 ? notFound(pg, "tenant") : pg.show(errorBox(e)); }
  if (!pg.alive()) return;
  const msg = h("p", { class: "note", role: "status", "aria-live": "polite" });
  const syncNow = h("button", { id: "sync-now", type: "button", class: "primary" }, "Sync now");
  syncNow.addEventListener("click", async () => {
    try { const r = await api("POST", `${base}/runs`); location.hash = `#/runs/${r.id}`; } catch (e) {
      if (e.body && e.body.run_id) location.hash = `#/runs/${e.body.run_id}`; else msg.textContent = e.message;
    }
  });
  const pauseBtn = h("button", { id: tenant.paused ? "resume" : "pause", type: "button" }, tenant.paused ? "Resume schedule" : "Pause schedule");
  pauseBtn.addEventListener("click", async () => {
    try { await api("POST", `${base}/${tenant.paused ? "resume" : "pause"}`); if (pg.alive()) route(); } catch (e) { msg.textContent = e.message; }
  });
  const chartSlot = h("div"), runsBody = h("tbody"), lettersBody = h("tbody"), metricSlot = h("div");

  const refreshRuns = async () => {
    const runs = (await api("GET", `${base}/runs?limit=30`)).data;
    chartSlot.replaceChildren(runsChart(runs, { id: "runs-chart" }), legend());
    runsBody.replaceChildren(...runs.map((r) => h("tr", { "data-run-id": r.id },
      h("td", {}, h("a", { href: `#/runs/${r.id}` }, `#${r.id}`)), h("td", {}, badge(r.status)),
      h("td", {}, fmtTime(r.started_at || r.queued_at)), h("td", { class: "num" }, fmtSecs(r.duration_seconds)),
      h("td", { class: "num" }, fmtRatio(r.floor_ratio)), h("td", { class: "num" }, String(r.counters.campaigns_synced)),
      h("td", { class: "num" }, String(r.counters.rate_limited)), h("td", { class: "hide-narrow" }, r.requested_by || ""))));
  };
  const refreshLetters = async () => {
    const letters = (await api("GET", `${base}/dead-letters`)).data;
    lettersBody.replaceChildren(...(letters.length ? letters.map((d) => h("tr", { "data-dead-letter-id": d.id },
      h("td", {}, d.campaign_id), h("td", {}, d.stage), h("td", { class: "wrap" }, d.reason), h("td", { class: "num" }, String(d.attempts)),
      h("td", {}, fmtTime(d.last_failed_at)),
      h("td", {}, h("button", { type: "button", class: "retry", title: "Queues a run that lists and syncs again: every open dead letter of this tenant is retried", "aria-label": `Retry (all open dead letters, from ${d.campaign_id})`, onclick: async () => {
        try { const r = await api("POST", `${base}/dead-letters/retry`); location.hash = `#/runs/${r.id}`; } catch (e) {
          if (e.body && e.body.run_id) location.hash = `#/runs/${e.body.run_id}`; else msg.textContent = e.message;
        }
      } }, "Retry all"), " ", h("button", { type: "button", class: "dismiss", "aria-label": `Dismiss ${d.campaign_id}`, onclick: async () => {
        try { await api("POST", `${base}/dead-letters/dismiss`, { ids: [d.id] }); refreshLetters(); } catch (e) { msg.textContent = e.message; }
      } }, "Dismiss")))) : [h("tr", {}, h("td", { colspan: 6, class: "note" }, "No open dead letters."))]));
  };

  // Campaigns: search, status filter, sort, removed ones on request; a row opens its metric trend.
  const cSearch = h("input", { id: "campaign-search", type: "search", placeholder: "name" });
  const cStatus = h("select", { id: "campaign-status" }, ...["", "active", "paused", "completed"].map((s) => h("option", { value: s }, s || "any")));
  const cSort = h("select", { id: "campaign-sort" }, ...[["id", "id"], ["name", "name"], ["-impressions", "impressions ↓"], ["-clicks", "clicks ↓"], ["-conversions", "conversions ↓"], ["-updated_at", "updated ↓"]].map(([v, t]) => h("option", { value: v }, t)));
  const cRemoved = h("input", { id: "campaign-removed", type: "checkbox" });
  const cBody = h("tbody"), more = h("button", { type: "button", hidden: true }, "More");
  let cursor = null;
  const loadCampaigns = async (append) => {
    const p = new URLSearchParams({ sort: cSort.value, limit: "50" });
    if (cSearch.value.trim()) p.set("q", cSearch.value.trim());
    if (cStatus.value) p.set("status", cStatus.value);
    if (cRemoved.checked) p.set("include_removed", "true");
    if (append && cursor) p.set("cursor", cursor);
    const page = await api("GET", `${base}/campaigns?${p}`);
    cursor = page.next_cursor; more.hidden = !cursor;
    const rows = page.data.map((c) => h("tr", { "data-campaign-id": c.id, class: c.removed_at ? "removed" : null },
      h("td", {}, h("button", { type: "button", class: "link", onclick: () => showMetrics(c) }, c.name)), h("td", {}, c.status + (c.removed_at ? " (removed)" : "")),
      h("td", { class: "num" }, c.budget), h("td", { class: "num" }, c.impressions.toLocaleString()), h("td", { class: "num" }, c.clicks.toLocaleString()),
      h("td", { class: "num" }, c.conversions.toLocaleString()), h("td", { class: "hide-narrow" }, fmtTime(c.synced_at))));
    if (append) cBody.append(...rows); else cBody.replaceChildren(...rows);
  };
  let debounce = null;
  cSearch.addEventListener("input", () => { clearTimeout(debounce); debounce = setTimeout(() => loadCampaigns(false), 250); });
  for (const el of [cStatus, cSort, cRemoved]) el.addEventListener("change", () => loadCampaigns(false));
  more.addEventListener("click", () => loadCampaigns(true));

  const showMetrics = async (c) => {
    const hist = (await api("GET", `${base}/campaigns/${encodeURIComponent(c.id)}/metrics`)).data;
    const labels = hist.map((p) => new Date(p.observed_at).toLocaleTimeString());
    const pick = (f) => hist.map(f);
    metricSlot.replaceChildren(h("h3", {}, `Metric trends: ${c.name}`),
      lineChart(labels, [
        { name: "impressions", colour: "#0b57d0", values: pick((p) => p.impressions) },
        { name: "clicks", colour: "#1a7f37", values: pick((p) => p.clicks) },
        { name: "conversions", colour: "#9a6700", values: pick((p) => p.conversions) },
      ], { id: "metric-chart", "aria-label": "Impressions, clicks and conversions over runs (each scaled to its own maximum)" }),
      lineChart(labels, [
        { name: "CTR", colour: "#8250df", values: pick((p) => (p.impressions ? p.clicks / p.impressions : null)) },
        { name: "conversion rate", colour: "#c0262d", values: pick((p) => (p.clicks ? p.conversions / p.clicks : null)) },
      ], { id: "rate-chart", "aria-label": "CTR and conversion rate over runs" }),
      h("div", { class: "legend" }, ...[["#0b57d0", "impressions"], ["#1a7f37", "clicks"], ["#9a6700", "conversions"], ["#8250df", "CTR"], ["#c0262d", "conversion rate"]].map(([col, n]) => h("span", {}, h("i", { style: `background:${col}` }), n))),
      h("p", { class: "note" }, `${hist.length} observations (each series scaled to its own maximum); the latest ones:`),
      h("div", { class: "scroll" }, h("table", { id: "metric-table" },
        h("thead", {}, h("tr", {}, ...["Observed", "Impressions", "Clicks", "Conversions", "CTR", "Conversion rate"].map((t) => h("th", {}, t)))),
        h("tbody", {}, ...hist.slice(-10).reverse().map((p) => h("tr", {},
          h("td", {}, fmtTime(p.observed_at)), h("td", { class: "num" }, p.impressions.toLocaleString()),
          h("td", { class: "num" }, p.clicks.toLocaleString()), h("td", { class: "num" }, p.conversions.toLocaleString()),
          h("td", { class: "num" }, p.impressions ? ((100 * p.clicks) / p.impressions).toFixed(2) + "%" : "—"),
          h("td", { class: "num" }, p.clicks ? ((100 * p.conversions) / p.clicks).toFixed(2) + "%" : "—")))))));
    metricSlot.scrollIntoView({ block: "nearest" });
  };

  livePage(pg, () => Promise.all([refreshRuns(), refreshLetters(), loadCampaigns(false)]).catch(() => {}), (ev) => ev.tenant_id === id && ev.status !== "running");
  pg.show(h("h1", {}, tenant.name),
    h("p", { class: "note" }, `${tenant.id} · ${tenant.api_url} · client id ${tenant.client_id} · ${tenant.rate_limit} · `,
      tenant.schedule ? `schedule ${tenant.schedule} (${tenant.time_zone}), next ${fmtTime(tenant.next_run_at)}` : "no schedule", tenant.paused ? " · paused" : ""),
    h("div", { class: "row" }, syncNow, pauseBtn), msg,
    h("h2", {}, "Runs"), chartSlot,
    h("div", { class: "scroll" }, h("table", { id: "runs" }, h("thead", {}, h("tr", {}, ...["Run", "Outcome", "Started", "Duration", "÷ floor", "Synced", "429s", "Requested by"].map((t) => h("th", {}, t)))), runsBody)),
    h("h2", {}, "Campaigns"),
    h("div", { class: "toolbar" }, field("Search", cSearch), field("Status", cStatus), field("Sort", cSort), h("div", {}, h("label", { for: "campaign-removed" }, "Show removed"), cRemoved)),
    h("div", { class: "scroll" }, h("table", { id: "campaigns" }, h("thead", {}, h("tr", {}, ...["Campaign", "Status", "Budget", "Impressions", "Clicks", "Conversions", "Synced"].map((t) => h("th", {}, t)))), cBody)), more, metricSlot,
    h("h2", {}, "Dead letters"),
    h("div", { class: "scroll" }, h("table", { id: "dead-letters" }, h("thead", {}, h("tr", {}, ...["Campaign", "Stage", "Reason", "Attempts", "Last failed", ""].map((t) => h("th", {}, t)))), lettersBody)),
    settingsForm(tenant, base));
  await Promise.all([refreshRuns(), refreshLetters(), loadCampaigns(false)]).catch((e) => { msg.textContent = e.message; });
}

function settingsForm(tenant, base) {
  const i = {
    name: h("input", { name: "name", value: tenant.name }),
    api_url: h("input", { name: "api_url", type: "url", value: tenant.api_url }),
    rate_limit: h("input", { name: "rate_limit", value: tenant.rate_limit }),
    page_size: h("input", { name: "page_size", type: "number", min: 1, value: tenant.page_size }),
    schedule: h("input", { name: "schedule", value: tenant.schedule || "" }),
    time_zone: h("input", { name: "time_zone", value: tenant.time_zone }),
    email: h("input", { name: "email", type: "email", autocomplete: "off", placeholder: "unchanged" }),
    password: h("input", { name: "password", type: "password", autocomplete: "new-password", placeholder: "unchanged (never shown)" }),
  };
  const note = h("p", { class: "note", role: "status" });
  const form = h("form", { id: "settings", class: "form" },
    field("Name", i.name), field("Platform URL", i.api_url), field("Rate limit", i.rate_limit), field("Page size", i.page_size),
    field("Schedule (cron, empty: none)", i.schedule), field("Time zone", i.time_zone),
    field("New platform e-mail", i.email), field("New platform password", i.password), note,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Save settings")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { name: i.name.value.trim(), api_url: i.api_url.value.trim(), rate_limit: i.rate_limit.value.trim(),
      page_size: Number(i.page_size.value), schedule: i.schedule.value.trim() || null, time_zone: i.time_zone.value.trim() };
    if (i.email.value || i.password.value) body.credentials = { email: i.email.value.trim(), password: i.password.value };
    try { await api("PATCH", base, body); note.textContent = "Saved."; i.password.value = ""; } catch (ex) { note.textContent = ex.message; }
  });
  return h("section", {}, h("h2", {}, "Settings"), form);
}

// ---- Run page (live) ----------------------------------------------------------------------------

async function runPage(pg, id) {
  let run, tenant = null;
  // Events are taken from before the first read (see below); until then they are kept.
  const early = [];
  const offEarly = onEvent((ev) => early.push(ev));
  pg.onLeave(offEarly);
  try { run = await api("GET", `/api/v1/runs/${id}`); } catch (e) { return e.status === 404 ? notFound(pg, "run") : pg.show(errorBox(e)); }
  try { tenant = await api("GET", `/api/v1/tenants/${encodeURIComponent(run.tenant_id)}`); } catch { /* the run alone is enough */ }
  const status = h("span", { id: "run-status", role: "status", "aria-live": "polite" });
  const bar = h("progress", { id: "run-progress", max: 1, value: 0, "aria-label": "Campaigns done" });
  const barText = h("span", { class: "note" });
  const counters = h("dl", { id: "run-counters", class: "counters" });
  const warnings = h("ul", { id: "run-warnings" });
  const cancel = h("button", { id: "cancel-run", type: "button", class: "danger" }, "Cancel run");
  cancel.addEventListener("click", async () => { try { await api("POST", `/api/v1/runs/${id}/cancel`); refresh(); } catch (e) { barText.textContent = e.message; } });
  // The request timeline: requests by outcome per interval, from the live counters.
  const samples = [];
  const timelineSlot = h("div");
  const live = { requests: 0, retries: 0, rate_limited: 0 };

  const perWindow = (() => {
    const m = tenant && /^(\d+)\/(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(tenant.rate_limit);
    if (!m) return null;
    const unit = { ms: 0.001, s: 1, m: 60, h: 3600 }[m[3] || "s"];
    return Number(m[1]) / (Number(m[2]) * unit);
  })();

  const draw = (r) => {
    status.replaceChildren(badge(r.status));
    const c = r.counters;
    const total = Math.max(r.listing.reported_total || 0, c.campaigns_stored || 0, 1);
    const done = (c.campaigns_synced || 0) + (c.dead_lettered || 0);
    const finished = !RUNNING.has(r.status);
    bar.max = total;
    bar.value = finished && r.status === "succeeded" ? total : Math.min(done, total);
    const left = Math.max(0, total - done);
    const eta = perWindow && !finished ? left / perWindow : null;
    barText.textContent = r.status === "queued" ? "Queued: waiting for a worker."
      : !r.listing.reported_total && !c.campaigns_stored ? "Listing campaigns…"
      : `${done} of ${total} campaigns done` + (eta !== null ? ` · about ${fmtSecs(eta)} left at the rate limit` : "");
    const item = (k, v) => h("div", {}, h("dt", {}, k), h("dd", {}, String(v)));
    counters.replaceChildren(item("pages listed", c.pages), item("stored", c.campaigns_stored), item("synced", c.campaigns_synced),
      item("dead-lettered", c.dead_lettered), item("requests", c.requests), item("retries", c.retries), item("429s", c.rate_limited),
      item("token refreshes", c.token_refreshes), item("limiter wait (all calls)", fmtSecs(c.limiter_wait_seconds)),
      item("duration", fmtSecs(r.duration_seconds)), item("÷ floor", fmtRatio(r.floor_ratio)), item("worker", r.worker || "—"), item("attempts", r.attempts));
    cancel.hidden = finished;
    const w = r.warnings || [];
    warnings.replaceChildren(...(w.length ? w.map((x) => h("li", {}, h("strong", {}, x.kind), `: ${x.message} (×${x.occurrences})`)) : [h("li", { class: "note" }, "No warnings.")]));
    if (!samples.length) drawTimeline();
  };
  // Deltas of the counters go into one-second buckets (the last two minutes). The first
  // reading only primes them: the stored counters may lag the live ones by a whole run.
  let primed = false;
  const sample = (requests, retries, limited) => {
    if (!primed) { primed = true; Object.assign(live, { requests, retries, rate_limited: limited }); return drawTimeline(); }
    const dRetried = Math.max(0, retries - live.retries), dLimited = Math.max(0, limited - live.rate_limited);
    const dOk = Math.max(0, requests - live.requests - dRetried - dLimited);
    Object.assign(live, { requests, retries, rate_limited: limited });
    const sec = Math.floor(Date.now() / 1000);
    let last = samples[samples.length - 1];
    while (last && last.sec < sec - 1 && samples.length < 400) { last = { sec: last.sec + 1, ok: 0, retried: 0, limited: 0 }; samples.push(last); }
    if (!last || last.sec !== sec) { last = { sec, ok: 0, retried: 0, limited: 0 }; samples.push(last); }
    last.ok += dOk; last.retried += dRetried; last.limited += dLimited;
    while (samples.length > 120) samples.shift();
    drawTimeline();
  };
  const drawTimeline = () => {
    const W = 640, H = 120, n = Math.max(samples.length, 1), bw = (W - 10) / Math.max(n, 30);
    const max = Math.max(1, ...samples.map((s) => s.ok + s.retried + s.limited));
    const svg = h("svg", { id: "timeline", class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Requests by outcome over time" });
    samples.forEach((s, i) => {
      let y = H - 14;
      for (const [k, col] of [["ok", "#1a7f37"], ["retried", "#9a6700"], ["limited", "#c0262d"]]) {
        const hh = (s[k] / max) * (H - 24);
        if (hh > 0) { y -= hh; svg.append(h("rect", { x: 5 + i * bw, y, width: Math.max(1, bw - 1), height: hh, fill: col }, h("title", {}, `${s[k]} ${k}`))); }
      }
    });
    svg.append(h("text", { x: 5, y: H - 2 }, samples.length ? `requests per second, last ${samples.length} s (max ${max})` : "no requests seen since this page opened"));
    timelineSlot.replaceChildren(svg, h("div", { class: "legend" }, h("span", {}, h("i", { style: "background:#1a7f37" }), "answered"), h("span", {}, h("i", { style: "background:#9a6700" }), "retried"), h("span", {}, h("i", { style: "background:#c0262d" }), "429")));
  };
  const refresh = async () => { try { const r = await api("GET", `/api/v1/runs/${id}`); if (pg.alive()) { run = r; draw(run); } } catch { /* the next event retries */ } };

  if (!pg.alive()) return;
  pg.show(h("p", {}, h("a", { href: `#/tenants/${encodeURIComponent(run.tenant_id)}` }, `← ${tenant ? tenant.name : run.tenant_id}`)),
    h("h1", {}, `Run #${id} `, status), h("div", { class: "row" }, cancel),
    h("div", {}, bar, barText), counters, h("h2", {}, "Request timeline"), timelineSlot, h("h2", {}, "Warnings"), warnings);
  draw(run);

  // Live: each event of this run updates the counters in place; a status change (or a gap in the
  // stream) refetches the run. Without a socket, a slow poll keeps the page moving.
  const handle = (ev) => {
    if (ev.type === "resync") { primed = false; return refresh(); }
    if (ev.type !== "run" || ev.run_id !== id) return;
    const c = run.counters;
    if (ev.status === "running" && run.status === "running") {
      for (const [k, f] of [["pages", "pages"], ["stored", "campaigns_stored"], ["synced", "campaigns_synced"], ["dead_lettered", "dead_lettered"], ["requests", "requests"], ["retries", "retries"], ["rate_limited", "rate_limited"], ["token_refreshes", "token_refreshes"]]) {
        if (typeof ev[k] === "number") c[f] = ev[k];
      }
      if (typeof ev.limiter_wait_ms === "number") c.limiter_wait_seconds = ev.limiter_wait_ms / 1000;
      if (typeof ev.total_hint === "number" && ev.total_hint > 0) run.listing.reported_total = ev.total_hint;
      draw(run);
      // Only the live counters feed the timeline (the stored ones may lag a whole run).
      if (typeof ev.requests === "number") sample(ev.requests, ev.retries || 0, ev.rate_limited || 0);
    } else refresh();
  };
  offEarly();
  pg.onLeave(onEvent(handle));
  // A status change seen while the page loaded: read the run again.
  if (early.some((ev) => ev.type === "resync" || (ev.run_id === id && ev.status !== run.status))) refresh();
  const poll = setInterval(() => { if (!state.socket || state.socket.readyState !== 1) { if (RUNNING.has(run.status)) refresh(); } }, 2000);
  pg.onLeave(() => clearInterval(poll));
}

// ---- Audit log and workers ------------------------------------------------------------------------

async function auditPage(pg) {
  pg.show(h("h1", {}, "Audit log"), h("p", { class: "note" }, "Loading…"));
  const body = h("tbody"), more = h("button", { type: "button", hidden: true }, "Older");
  let before = null;
  const load = async (append) => {
    const p = new URLSearchParams({ limit: "100" });
    if (append && before) p.set("before", String(before));
    const page = await api("GET", `/api/v1/audit-log?${p}`);
    const rows = page.data.map((e) => h("tr", {}, h("td", {}, fmtTime(e.at)), h("td", {}, e.actor), h("td", {}, e.action),
      h("td", {}, `${e.target_type} ${e.target_id}`), h("td", {}, e.tenant_id || ""), h("td", { class: "hide-narrow" }, e.remote_addr || "")));
    if (append) body.append(...rows); else body.replaceChildren(...rows);
    before = page.data.length ? page.data[page.data.length - 1].id : null;
    more.hidden = page.data.length < 100;
  };
  more.addEventListener("click", () => load(true));
  try { await load(false); } catch (e) { return pg.show(h("h1", {}, "Audit log"), e.status === 404 ? h("p", { id: "not-found" }, "The audit log is for admin keys.") : errorBox(e)); }
  pg.show(h("h1", {}, "Audit log"), h("div", { class: "scroll" }, h("table", { id: "audit" }, h("thead", {}, h("tr", {}, ...["When", "Who (key)", "What", "Target", "Tenant", "From"].map((t) => h("th", {}, t)))), body)), more);
}

async function workersPage(pg) {
  pg.show(h("h1", {}, "Workers"), h("p", { class: "note" }, "Loading…"));
  const body = h("tbody");
  const refresh = async () => {
    const page = await api("GET", "/api/v1/workers");
    body.replaceChildren(...(page.data.length ? page.data.map((w) => h("tr", { "data-worker": w.worker },
      h("td", {}, w.worker), h("td", {}, w.alive ? badge("alive") : h("span", { class: "badge s-failed" }, "silent")),
      h("td", { class: "num" }, w.slots === null ? String(w.runs_held) : `${w.runs_held} of ${w.slots}`),
      h("td", {}, w.heartbeat_age_seconds === null ? "—" : `${fmtSecs(w.heartbeat_age_seconds)} ago`),
      h("td", {}, w.oldest_run_seconds === null ? "—" : fmtSecs(w.oldest_run_seconds)),
      h("td", { class: "hide-narrow" }, fmtTime(w.started_at)),
      h("td", {}, ...w.runs.map((r) => [h("a", { href: `#/runs/${r}` }, `#${r}`), " "])))) : [h("tr", {}, h("td", { colspan: 7, class: "note" }, "No worker is registered or holds a run."))]));
  };
  livePage(pg, () => refresh().catch(() => {}), (ev) => ev.type === "run");
  try { await refresh(); } catch (e) { return pg.show(h("h1", {}, "Workers"), e.status === 404 ? h("p", { id: "not-found" }, "The workers page is for admin keys.") : errorBox(e)); }
  pg.show(h("h1", {}, "Workers"), h("p", { class: "note" }, "Every worker process: alive while it checks in (about every half lease) and renews the leases of its runs; silent once it stops doing so (a worker that stops cleanly leaves the list)."),
    h("div", { class: "scroll" }, h("table", { id: "workers" }, h("thead", {}, h("tr", {}, ...["Worker", "State", "Runs held", "Last heartbeat", "Oldest run (lease age)", "Started", "Runs"].map((t) => h("th", {}, t)))), body)));
  const tick = setInterval(() => refresh().catch(() => {}), 5000);
  pg.onLeave(() => clearInterval(tick));
}
