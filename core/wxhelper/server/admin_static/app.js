// wxhelper operator console. Plain JS, no build step, no third-party code.
// Data comes from /admin/api/* with the bearer token kept in sessionStorage (this tab only).
// Every piece of user text is put in the page with textContent, never as HTML.
"use strict";

const TOKEN_KEY = "wxhelper.console.token";
const state = { session: null, events: new Map(), order: [], live: null, namespaces: [], algorithms: [],
                healthTimer: null, view: null };

// -- small helpers ----------------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const $ = (sel) => document.querySelector(sel);
function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }
function fmtTime(t) { return t ? new Date(t * 1000).toLocaleTimeString() : ""; }
function fmtMs(v) { return v === undefined || v === null ? "–" : (v >= 100 ? Math.round(v) : v.toFixed(1)); }
function pill(text, kind) { return h("span", { class: "pill " + (kind || ""), text }); }
function statusPill(status) {
  const kind = status === "ok" || status === "loaded" ? "ok" : status === "offline" || status === "degraded" ? "warn" : "bad";
  return pill(status, kind);
}

class Unauthorized extends Error {}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

async function api(path, opts = {}) {
  const headers = Object.assign({ "Accept": "application/json" }, opts.headers || {});
  if (token()) headers["Authorization"] = "Bearer " + token();
  if (opts.json !== undefined) { headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(opts.json); }
  const resp = await fetch(path, { method: opts.method || "GET", headers, body: opts.body, signal: opts.signal,
                                   cache: "no-store" });
  if (resp.status === 401) {
    showLogin(token() ? "The token was refused. Enter it again." : "");
    throw new Unauthorized();
  }
  if (opts.raw) return resp;
  const body = resp.headers.get("content-type")?.includes("json") ? await resp.json() : await resp.text();
  if (!resp.ok) {
    const detail = body && body.detail;
    const msg = Array.isArray(detail) ? detail.map((d) => d.msg).join("; ") : (detail || resp.statusText);
    const err = new Error(msg); err.status = resp.status; throw err;
  }
  return body;
}

// Server-Sent Events over fetch: EventSource cannot send the Authorization header.
async function readSSE(resp, onEvent) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
      let event = "message"; const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      if (data.length) onEvent(event, JSON.parse(data.join("\n")));
    }
  }
}

// -- sign in and routing ---------------------------------------------------------------------------------
function showLogin(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopLive();
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  $("#nav").hidden = true; $("#session").hidden = true;
  $("#view-login").hidden = false;
  $("#login-error").textContent = message || "";
  $("#token").focus();
}

async function boot() {
  try {
    state.session = await api("/admin/api/session");
  } catch (e) {
    if (!(e instanceof Unauthorized)) showLogin("The service did not answer: " + e.message);
    return;
  }
  $("#view-login").hidden = true;
  $("#nav").hidden = false; $("#session").hidden = false;
  const s = state.session;
  $("#session-info").textContent = `bot ${s.bot_id} · store ${s.store} · events ${s.events.backend} · ` +
    `${s.workers} worker(s) · auth ${s.auth}`;
  $("#logout").hidden = s.auth !== "token";
  if (!s.events.enabled) {
    setLiveState("off", "warn");
    $("#live-empty").textContent = "Recording is off on this service (WXHELPER_CONSOLE_EVENTS=0): no live messages, no prompts to inspect.";
  } else startLive();
  route();
}

function route() {
  if (!state.session) return;
  const [view, ...args] = (location.hash.slice(1) || "namespaces").split("/").map(decodeURIComponent);
  const arg = args[0];
  const known = ["namespaces", "live", "inspect", "fairness", "categories", "health"];
  const name = known.includes(view) ? view : "namespaces";
  state.view = name;
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + name;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === name);
  if (state.healthTimer) { clearInterval(state.healthTimer); state.healthTimer = null; }
  const run = { namespaces: loadNamespaces, live: renderLive, inspect: () => loadInspect(arg),
                fairness: () => loadFairness(...args), categories: loadCategories, health: loadHealth }[name];
  run().catch((e) => { if (!(e instanceof Unauthorized)) console.error(e); });
}

// -- namespaces ------------------------------------------------------------------------------------------
async function loadNamespaces() {
  const data = await api("/admin/api/namespaces");
  state.namespaces = data.namespaces;
  const body = clear($("#ns-table tbody"));
  for (const ns of data.namespaces) {
    const button = h("button", { type: "button", "data-ns": ns.name, text: "Re-index",
                                 disabled: ns.custom || !data.reindex_allowed,
                                 title: data.reindex_allowed ? "" : "needs a Chroma server with several workers" });
    button.addEventListener("click", () => reindex(ns.name));
    const index = ns.custom ? h("span", { class: "muted", text: "no corpus" })
      : ns.indexed ? pill(`indexed · ${ns.stored ?? "?"} stored`, "ok") : pill("not indexed", "warn");
    body.append(h("tr", { "data-ns": ns.name },
      h("td", {}, h("strong", { text: ns.title }), " ", h("span", { class: "muted", text: ns.name })),
      h("td", { text: ns.custom ? `custom (bot ${ns.bot_id})` : ns.plugin }),
      h("td", { text: ns.version || "–" }),
      h("td", {}, statusPill(ns.status), ...ns.errors.map((e) => h("div", { class: "error", text: e }))),
      h("td", { text: ns.custom ? "–" : `${ns.passages} passages` }),
      h("td", {}, index),
      h("td", { text: ns.embedding || "–" }),
      h("td", {}, button, " ", h("progress", { max: 1, value: 0, hidden: true }), " ", h("span", { class: "muted note" }))));
    showReindex(ns.name);
  }
  const plugins = clear($("#plugin-table tbody"));
  for (const p of data.plugins) {
    plugins.append(h("tr", {}, h("td", { text: p.name }), h("td", { text: p.version || "–" }),
      h("td", {}, statusPill(p.status === "loaded" && p.errors.length ? "degraded" : p.status)),
      h("td", { text: p.namespaces.join(", ") || "–" }),
      h("td", {}, ...p.errors.map((e) => h("div", { class: "error", text: e })))));
  }
}

// A re-index's progress lives in state, so a view rendered again meanwhile shows it too.
state.reindex = {};
function showReindex(name) {
  const job = state.reindex[name];
  const row = document.querySelector(`#ns-table tr[data-ns="${CSS.escape(name)}"]`);
  if (!job || !row) return;
  const progress = row.querySelector("progress"), note = row.querySelector(".note"), button = row.querySelector("button");
  progress.hidden = false; progress.max = Math.max(1, job.total); progress.value = job.done;
  note.textContent = job.text; note.className = "note " + job.cls;
  button.disabled = job.running;
}

async function reindex(name) {
  const job = state.reindex[name] = { done: 0, total: 1, text: "starting…", cls: "muted", running: true };
  showReindex(name);
  const force = $("#ns-force").checked;
  try {
    const resp = await api(`/admin/api/namespaces/${encodeURIComponent(name)}/reindex?force=${force}`,
                           { method: "POST", raw: true });
    if (!resp.ok) { const b = await resp.json(); throw new Error(b.detail || resp.statusText); }
    await readSSE(resp, (event, data) => {
      if (event === "progress") Object.assign(job, { done: data.done, total: data.total, text: `${data.done} / ${data.total}` });
      else if (event === "done") Object.assign(job, { done: 1, total: 1, cls: "ok",
        text: `done: ${data.total} passages, ${data.added} added, ${data.removed} removed in ${data.seconds}s` });
      else if (event === "error") Object.assign(job, { text: data.detail, cls: "error" });
      showReindex(name);
    });
  } catch (e) {
    if (!(e instanceof Unauthorized)) Object.assign(job, { text: e.message, cls: "error" });
  } finally { job.running = false; showReindex(name); }
}

// -- live messages -------------------------------------------------------------------------------------------
function remember(ev) {
  if (!state.events.has(ev.id)) state.order.unshift(ev.id);
  state.events.set(ev.id, ev);
  while (state.order.length > 500) state.events.delete(state.order.pop());
}

function latencyCell(t) {
  t = t || {};
  const total = t.total || 0;
  const bar = h("div", { class: "lat", title: "history ∥ retrieval, render, LLM, record" });
  const assembly = t.assembly || 0, retrieval = t.retrieval || 0, history = t.history || 0;
  const parts = [["history", Math.min(history, assembly)], ["retrieval", Math.max(0, retrieval - history)],
                 ["render", Math.max(0, assembly - Math.max(history, retrieval))], ["llm", t.llm || 0], ["record", t.record || 0]];
  for (const [cls, ms] of parts) {
    if (!total || ms <= 0) continue;
    const span = h("span", { class: cls, title: `${cls} ${fmtMs(ms)} ms` });
    span.style.width = `${Math.max(1, (100 * ms) / total)}%`;
    bar.append(span);
  }
  return h("td", {},
    h("div", { class: "latnums", text: `assembly ${fmtMs(t.assembly)} · retrieval ${fmtMs(t.retrieval)} · LLM ${fmtMs(t.llm)} · total ${fmtMs(t.total)}` }),
    bar);
}

function liveRow(ev, fresh) {
  const row = h("tr", { class: (ev.inspectable ? "clickable" : "") + (fresh ? " fresh" : ""), "data-id": ev.id,
                        "data-message-id": ev.message_id, title: ev.inspectable ? "see its prompt" : "no prompt: not sent to the LLM" },
    h("td", { text: fmtTime(ev.time) }),
    h("td", { text: ev.group_id ? `群 ${ev.source_id}` : `私聊 ${ev.source_id}` }),
    h("td", { text: ev.user_id }),
    h("td", { text: ev.namespace }),
    h("td", { class: "msg", title: ev.content, text: ev.command ? `/${ev.command}` : ev.content }),
    h("td", {}, ...(ev.recorded.length ? ev.recorded.map((k) => pill(k)) : [h("span", { class: "muted", text: "nothing" })]),
      ev.offline && ev.answered ? pill("offline", "warn") : null, ...ev.degraded.map((d) => pill(d, "bad")),
      ev.failed ? h("div", { class: "error", text: `failed: ${ev.failed}` }) : null),
    latencyCell(ev.timings),
    h("td", { class: "muted", text: ev.worker }));
  if (ev.inspectable) row.addEventListener("click", () => { location.hash = "#inspect/" + encodeURIComponent(ev.id); });
  return row;
}

function liveMatches(ev) {
  const ns = $("#live-ns").value, text = $("#live-filter").value.trim().toLowerCase();
  if (ns && ev.namespace !== ns) return false;
  if ($("#live-problems").checked && !(ev.failed || ev.degraded.length || (ev.offline && ev.answered))) return false;
  if (!text) return true;
  return [ev.source_id, ev.user_id, ev.content, ev.reply, ev.worker].some((v) => (v || "").toLowerCase().includes(text));
}

function liveNamespaces() {
  const select = $("#live-ns");
  const have = new Set(Array.from(select.options).map((o) => o.value));
  for (const id of state.order) {
    const ns = state.events.get(id).namespace;
    if (!have.has(ns)) { have.add(ns); select.append(h("option", { value: ns, text: ns })); }
  }
}

function renderLive() {
  liveNamespaces();
  const body = clear($("#live-table tbody"));
  let shown = 0;
  for (const id of state.order) {
    const ev = state.events.get(id);
    if (!liveMatches(ev)) continue;
    body.append(liveRow(ev, false));
    shown += 1;
  }
  $("#live-empty").hidden = shown > 0;
  if (state.session.events.enabled)
    $("#live-empty").textContent = state.order.length ? "No message matches the filter." : "No message handled yet.";
  return Promise.resolve();
}

function setLiveState(text, kind) { const el = $("#live-state"); el.textContent = text; el.className = "pill " + (kind || ""); }

function stopLive() { if (state.live) { state.live.abort(); state.live = null; } }

async function startLive() {
  stopLive();
  const controller = new AbortController();
  state.live = controller;
  let after = null;
  try {
    const recent = await api("/admin/api/events?limit=100");
    for (const ev of recent.events.slice().reverse()) remember(ev);
    if (recent.events.length) after = recent.events[0].id;
    if (state.view === "live") renderLive();
  } catch (e) { if (e instanceof Unauthorized) return; }
  while (!controller.signal.aborted) {
    try {
      const q = after ? `?after=${encodeURIComponent(after)}` : "";
      const resp = await api("/admin/api/events/stream" + q, { raw: true, signal: controller.signal,
                                                                headers: { "Accept": "text/event-stream" } });
      if (!resp.ok) throw new Error(resp.statusText);
      setLiveState("live", "ok");
      await readSSE(resp, (event, data) => {
        if (event === "hello" && !after) after = data.after;
        if (event === "problem") setLiveState("store problem", "bad");
        if (event !== "message") return;
        after = data.id;
        remember(data);
        if (state.view === "live") {
          liveNamespaces();
          if (liveMatches(data)) {
            $("#live-empty").hidden = true;
            $("#live-table tbody").prepend(liveRow(data, true));
          }
        }
        if (state.view === "inspect") fillPicker();
      });
    } catch (e) {
      if (e instanceof Unauthorized || controller.signal.aborted) return;
    }
    setLiveState("reconnecting", "warn");
    await new Promise((r) => setTimeout(r, 2000));
  }
}

// -- prompt inspector ------------------------------------------------------------------------------------------
function fillPicker(selected) {
  const pick = $("#inspect-pick");
  const current = selected || pick.value;
  clear(pick);
  pick.append(h("option", { value: "", text: state.order.length ? "— pick a handled message —" : "— no message yet —" }));
  for (const id of state.order) {
    const ev = state.events.get(id);
    if (!ev.inspectable) continue;
    pick.append(h("option", { value: id, text: `${fmtTime(ev.time)} · ${ev.namespace} · ${ev.user_id}: ${ev.content.slice(0, 40)}` }));
  }
  pick.value = current || "";
}

async function loadInspect(id) {
  fillPicker(id);
  const out = clear($("#inspect-body"));
  if (!id) { out.append(h("p", { class: "muted", text: "Pick a message above, or click one in Live messages." })); return; }
  let ev;
  try { ev = await api(`/admin/api/events/${encodeURIComponent(id)}`); }
  catch (e) { if (!(e instanceof Unauthorized)) out.append(h("p", { class: "error", text: e.message })); return; }
  const t = ev.timings || {};
  out.append(h("dl", { class: "meta", id: "inspect-meta" },
    h("dt", { text: "message" }), h("dd", { text: ev.content }),
    h("dt", { text: "source" }), h("dd", { text: `${ev.source_id} (${ev.group_id ? "group" : "private chat"}), user ${ev.user_id}, bot ${ev.bot_id}` }),
    h("dt", { text: "namespace" }), h("dd", { text: `${ev.namespace} (plugin ${ev.plugin || "–"})` }),
    h("dt", { text: "recorded in" }), h("dd", { text: ev.recorded.join(", ") || "nothing" }),
    h("dt", { text: "latency (ms)" }), h("dd", { text: `history ${fmtMs(t.history)} ∥ retrieval ${fmtMs(t.retrieval)} → assembly ${fmtMs(t.assembly)}; LLM ${fmtMs(t.llm)}; record ${fmtMs(t.record)}; total ${fmtMs(t.total)}` }),
    h("dt", { text: "answer" }), h("dd", { text: `${ev.offline ? "offline" : "LLM"}${ev.degraded.length ? " · degraded: " + ev.degraded.join(", ") : ""}` }),
    h("dt", { text: "template" }), h("dd", { text: ev.template ? `${ev.template.name} from ${ev.template.origin}: ${ev.template.path}${ev.template.error ? " — " + ev.template.error : ""}` : "–" }),
    h("dt", { text: "fair algorithm" }), h("dd", {}, `${ev.algorithm} — fairness of `,
      h("a", { id: "to-fair-board", href: `#fairness/${encodeURIComponent(ev.namespace)}/namespace`, text: "the board" }), ", ",
      h("a", { id: "to-fair-chat", href: `#fairness/${encodeURIComponent(ev.namespace)}/chat/${encodeURIComponent(ev.source_id)}`,
               text: "this chat" }), " now"),
    h("dt", { text: "worker" }), h("dd", { text: ev.worker })));

  if (ev.template && ev.template.source) {
    out.append(h("details", { id: "inspect-template" },
      h("summary", { text: `Template source: ${ev.template.path} (as it is on disk now)` }),
      h("pre", { text: ev.template.source })));
  }
  out.append(h("h3", { text: "The prompt sent to the LLM" }));
  const prompt = h("div", { id: "inspect-prompt" });
  for (const m of ev.prompt || []) {
    prompt.append(h("div", { class: "prompt-msg" }, h("span", { class: "role", text: `${m.role} · ${m.content.length} chars` }),
                    h("pre", { text: m.content })));
  }
  out.append(prompt);

  out.append(h("h3", { text: `Retrieved passages (${(ev.retrieved || []).length})` }));
  const passages = h("table", { id: "inspect-passages" },
    h("thead", {}, h("tr", {}, h("th", { text: "source" }), h("th", { text: "heading" }), h("th", { text: "score" }), h("th", { text: "text" }))));
  const pbody = h("tbody");
  for (const p of ev.retrieved || []) {
    pbody.append(h("tr", {}, h("td", { text: p.source }), h("td", { text: p.heading }), h("td", { text: p.score }),
                   h("td", { class: "msg", title: p.text, text: p.text.length < p.chars ? p.text + "…" : p.text })));
  }
  if (!(ev.retrieved || []).length) pbody.append(h("tr", {}, h("td", { colspan: 4, class: "muted", text: "none" })));
  passages.append(pbody); out.append(passages);

  out.append(h("h3", { text: "History sections" }));
  const names = { chat: "chat (this source)", namespace: "namespace board", friend_circle: "friend circle" };
  for (const [kind, sec] of Object.entries(ev.sections || {})) {
    const box = h("div", { class: "section", "data-section": kind },
      h("strong", { text: names[kind] || kind }),
      h("span", { class: "muted", text: ` — ${sec.records} of ${sec.max_records} records, ${sec.chars} of ${sec.max_chars} characters` }));
    const users = h("table", { class: "section-users" }, h("thead", {}, h("tr", {},
      h("th", { text: "user" }), h("th", { text: "records" }), h("th", { text: "characters" }))));
    const ubody = h("tbody");
    for (const u of sec.users) ubody.append(h("tr", {}, h("td", { text: u.user_id }), h("td", { text: u.records }), h("td", { text: u.chars })));
    if (!sec.users.length) ubody.append(h("tr", {}, h("td", { colspan: 3, class: "muted", text: "empty" })));
    users.append(ubody); box.append(users);
    out.append(box);
  }
  out.append(h("h3", { text: "Reply" }), h("pre", { id: "inspect-reply", text: ev.reply }));
}

// -- fairness ----------------------------------------------------------------------------------------------------
// #fairness/<namespace>/<kind>/<source>: the inspector links here for a message's board and chat.
async function loadFairness(ns, kind, source) {
  if (!state.namespaces.length) state.namespaces = (await api("/admin/api/namespaces")).namespaces;
  const select = $("#fair-ns");
  if (!select.options.length) {
    for (const n of state.namespaces) select.append(h("option", { value: n.name, text: `${n.title} (${n.name})` }));
    const cmp = $("#fair-compare");
    for (const a of state.session.algorithms) cmp.append(h("option", { value: a, text: a }));
    cmp.value = "seed";
  }
  if (ns && Array.from(select.options).some((o) => o.value === ns)) select.value = ns;
  if (kind) $("#fair-kind").value = kind;
  if (source !== undefined) $("#fair-source").value = source;
  await drawFairness();
}

async function drawFairness() {
  const kind = $("#fair-kind").value;
  $("#fair-source-label").hidden = kind !== "chat";
  const params = new URLSearchParams({ kind, compare: $("#fair-compare").value });
  if (kind === "chat") params.set("source_id", $("#fair-source").value);
  const chart = clear($("#fair-chart"));
  const tbody = clear($("#fair-table tbody"));
  let data;
  try { data = await api(`/admin/api/fairness/${encodeURIComponent($("#fair-ns").value)}?${params}`); }
  catch (e) { if (!(e instanceof Unauthorized)) $("#fair-summary").textContent = e.message; return; }
  $("#fair-summary").textContent = `${data.title}: ${data.users.length} users with records; budget ${data.max_records} records, ` +
    `${data.max_chars} characters. ${data.algorithm} takes ${data.totals.current.records} records / ${data.totals.current.chars} chars, ` +
    `${data.compare} takes ${data.totals.compare.records} / ${data.totals.compare.chars}.`;
  for (const u of data.users) {
    tbody.append(h("tr", {}, h("td", { text: u.user_id }),
      h("td", { text: `${u.available.records} rec · ${u.available.chars} chars` }),
      h("td", { text: `${u.current.records} rec · ${u.current.chars} chars` }),
      h("td", { text: `${u.compare.records} rec · ${u.compare.chars} chars` })));
  }
  if (!data.users.length) { chart.append(h("p", { class: "muted", text: "This history is empty." })); return; }
  chart.append(barChart(data, "records", "Records per user"), barChart(data, "chars", "Characters per user"),
    h("div", { class: "legend" }, h("span", {}, h("i", { class: "cur" }), `current: ${data.algorithm}`),
      h("span", {}, h("i", { class: "cmp" }), `compared: ${data.compare}`), h("span", {}, h("i", { class: "avail" }), "available")));
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

// Horizontal grouped bars: per user, what is available (grey), the current selection and the compared one.
function barChart(data, metric, title) {
  const users = data.users.slice(0, 30);
  const rowH = 34, labelW = 150, width = 860, plotW = width - labelW - 170, top = 28;
  const height = top + users.length * rowH + 10;
  const max = Math.max(1, ...users.map((u) => Math.max(u.available[metric], u.current[metric], u.compare[metric])));
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title,
                         "data-metric": metric, class: "fair-svg" });
  svg.append(s("text", { x: 8, y: 18, "font-weight": 600 }, title));
  users.forEach((u, i) => {
    const y = top + i * rowH;
    svg.append(s("text", { x: labelW - 8, y: y + 17, "text-anchor": "end" }, u.user_id.length > 18 ? u.user_id.slice(0, 17) + "…" : u.user_id));
    const bar = (value, dy, hgt, color, cls) => {
      const w = (plotW * value) / max;
      svg.append(s("rect", { x: labelW, y: y + dy, width: Math.max(value ? 1 : 0, w), height: hgt, fill: color, class: cls,
                             "data-user": u.user_id, "data-value": value }));
      return w;
    };
    bar(u.available[metric], 2, 26, "#e5e7eb", "avail");
    const w1 = bar(u.current[metric], 5, 9, "#2563eb", "cur");
    const w2 = bar(u.compare[metric], 16, 9, "#f59e0b", "cmp");
    svg.append(s("text", { x: labelW + Math.max(w1, w2, (plotW * u.available[metric]) / max) + 6, y: y + 17 },
                 `${u.current[metric]} / ${u.compare[metric]} of ${u.available[metric]}`));
  });
  return svg;
}

// -- categories ----------------------------------------------------------------------------------------------------
async function loadCategories() {
  const data = await api("/admin/api/categories");
  $("#cat-bot").placeholder = data.bot_id;
  const body = clear($("#cat-table tbody"));
  for (const c of data.custom) {
    const del = h("button", { type: "button", class: "danger", text: "Delete", "data-name": c.name });
    del.addEventListener("click", () => deleteCategory(c));
    body.append(h("tr", { "data-name": c.name }, h("td", { text: c.name }), h("td", { text: c.title }), h("td", { text: c.bot_id }), h("td", {}, del)));
  }
  if (!data.custom.length) body.append(h("tr", {}, h("td", { colspan: 4, class: "muted", text: "No custom category." })));
  const preset = clear($("#preset-list"));
  for (const p of data.preset) preset.append(h("li", { text: `${p.title} (${p.name}) · ${p.plugin}` }));
  const binds = clear($("#bind-table tbody"));
  for (const b of data.bindings) {
    const un = h("button", { type: "button", class: "danger", text: "Unbind" });
    un.addEventListener("click", async () => {
      if (!confirm(`Unbind ${b.source_id} from ${b.namespace}?`)) return;
      await api("/admin/api/bindings", { method: "PUT", json: { source_id: b.source_id, bot_id: b.bot_id, namespace: null } });
      loadCategories();
    });
    binds.append(h("tr", { "data-source": b.source_id }, h("td", { text: b.source_id }), h("td", { text: b.bot_id }),
      h("td", {}, b.namespace, b.stale ? " " : null, b.stale ? pill("deleted: ignored by routing", "warn") : null), h("td", {}, un)));
  }
  if (!data.bindings.length) binds.append(h("tr", {}, h("td", { colspan: 4, class: "muted", text: "No binding: messages are routed by keywords." })));
  const nsSel = clear($("#bind-ns"));
  for (const p of data.preset) nsSel.append(h("option", { value: p.name, text: p.title }));
  for (const c of data.custom) if (c.bot_id === data.bot_id) nsSel.append(h("option", { value: c.name, text: `${c.title} (custom)` }));
}

async function deleteCategory(c) {
  if (!confirm(`Delete the category "${c.title}" of bot ${c.bot_id}? Its histories (every chat, the board and the friend circle) are dropped.`)) return;
  const msg = $("#cat-msg");
  try {
    const r = await api(`/admin/api/categories/${encodeURIComponent(c.name)}?bot_id=${encodeURIComponent(c.bot_id)}&confirm=${encodeURIComponent(c.name)}`,
                        { method: "DELETE" });
    msg.textContent = `Deleted "${r.title}", ${r.dropped} records dropped.`; msg.className = "ok";
  } catch (e) { if (!(e instanceof Unauthorized)) { msg.textContent = e.message; msg.className = "error"; } }
  state.namespaces = [];
  await loadCategories();
}

// -- health --------------------------------------------------------------------------------------------------------
async function loadHealth() {
  await drawHealth();
  state.healthTimer = setInterval(() => { if (state.view === "health") drawHealth().catch(() => {}); }, 5000);
}

async function drawHealth() {
  const d = await api("/admin/api/health");
  $("#health-time").textContent = `checked ${fmtTime(d.time)} by ${d.worker}`;
  const cards = clear($("#health-cards"));
  const card = (id, title, status, big, detail) => cards.append(h("div", { class: "card", "data-check": id },
    h("h3", {}, h("span", { text: title }), statusPill(status)), big !== null ? h("div", { class: "big", text: big }) : null,
    h("div", { class: "detail", text: detail })));
  card("store", "History store", d.store.status, d.store.backend, d.store.error || `ping ${fmtMs(d.store.ms)} ms`);
  card("chroma", "Chroma", d.chroma.status, d.chroma.where, d.chroma.error || `heartbeat ${fmtMs(d.chroma.ms)} ms`);
  card("llm", "LLM", d.llm.status, d.llm.model || null, d.llm.error || d.llm.detail || `${d.llm.endpoint} answered HTTP ${d.llm.http} in ${fmtMs(d.llm.ms)} ms`);
  card("inbox", "Inbox depth", d.inbox.status, d.inbox.depth ?? "?", d.inbox.error || "messages received and not yet completed");
  card("spool", "Spooled writes", d.spool.status, d.spool.spooled, d.spool.outage ? "Redis is down or the journal is replaying" : "writes waiting for Redis in the local journal");
  card("events", "Console events", d.events.enabled ? "ok" : "offline", `${d.events.recorded}`,
       `${d.events.backend}, keeps ${d.events.max_events}; dropped ${d.events.dropped}, failed ${d.events.failed} (this worker)`);
  const plugins = clear($("#health-plugins"));
  for (const [name, p] of Object.entries(d.plugins)) plugins.append(h("li", {}, `${name} `, statusPill(p.errors.length && p.status === "loaded" ? "degraded" : p.status)));
}

// -- wiring -------------------------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
    $("#token").value = "";
    await boot();
  });
  $("#logout").addEventListener("click", () => { showLogin("Signed out."); state.session = null; });
  for (const id of ["#live-ns", "#live-problems"]) $(id).addEventListener("change", renderLive);
  $("#live-filter").addEventListener("input", renderLive);
  $("#inspect-pick").addEventListener("change", (e) => { location.hash = "#inspect/" + encodeURIComponent(e.target.value); });
  $("#fair-form").addEventListener("submit", (e) => { e.preventDefault(); drawFairness().catch(() => {}); });
  $("#fair-kind").addEventListener("change", () => { $("#fair-source-label").hidden = $("#fair-kind").value !== "chat"; });
  $("#cat-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const msg = $("#cat-msg");
    try {
      const r = await api("/admin/api/categories", { method: "POST", json: {
        name: $("#cat-name").value.trim(), title: $("#cat-title").value.trim() || null, bot_id: $("#cat-bot").value.trim() || null } });
      msg.textContent = `Added "${r.title}" for bot ${r.bot_id}.`; msg.className = "ok";
      $("#cat-name").value = ""; $("#cat-title").value = "";
    } catch (err) { if (!(err instanceof Unauthorized)) { msg.textContent = err.message; msg.className = "error"; } }
    state.namespaces = [];
    await loadCategories();
  });
  $("#bind-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const msg = $("#bind-msg");
    try {
      const r = await api("/admin/api/bindings", { method: "PUT", json: { source_id: $("#bind-source").value.trim(), namespace: $("#bind-ns").value } });
      msg.textContent = `${r.source_id} is bound to ${r.namespace}.`; msg.className = "ok";
    } catch (err) { if (!(err instanceof Unauthorized)) { msg.textContent = err.message; msg.className = "error"; } }
    await loadCategories();
  });
  window.addEventListener("hashchange", route);
  boot();
});
