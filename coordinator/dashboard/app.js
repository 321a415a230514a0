// tollgate dashboard: polls GET /v1/stats every two seconds with the bearer
// token the operator gave, and renders it. Everything a client controls
// (keys, edge ids, versions) goes into the page through textContent, never
// as markup. The rollback button calls the admin API (POST
// /v1/policy/rollback) and is enabled only for an admin token.
"use strict";

const REFRESH_MS = 2000;
const OUTCOMES = ["allowed", "denied", "challenged", "shadow"];
const TOKEN_KEY = "tollgate-token";
const RATE_SECONDS = 60;        // the per-second figures average this many
const VERSIONS_SHOWN = 20;

let token = null;
let timer = null;
let stats = null;
let versionsFor = -1;           // policy version the versions table shows
let rolling = false;

const $ = (id) => document.getElementById(id);

// el("td", {class: "num"}, "text", childNode, ...)
function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}

function fmtAge(ms) {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.round(ms / 60000)} min`;
}

function fmtTime(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

// The last RATE_SECONDS complete seconds of a series (the newest point is
// the current, partial second and is left out): [total, per second].
function lastMinute(series) {
  const full = series.slice(0, -1).slice(-RATE_SECONDS);
  const total = full.reduce((a, b) => a + b, 0);
  return [total, total / RATE_SECONDS];
}

// ------------------------------------------------------------ API calls
class AuthError extends Error {}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${token}`, ...(options.headers || {}) };
  const res = await fetch(path, { ...options, headers, cache: "no-store" });
  if (res.status === 401) throw new AuthError("the coordinator refused this token");
  let body = null;
  const type = res.headers.get("Content-Type") || "";
  if (type.includes("json")) body = await res.json();
  if (!res.ok) {
    const detail = body && (body.detail || body.title) ? body.detail || body.title : res.statusText;
    throw new Error(`${path}: ${res.status} ${detail}`);
  }
  return body;
}

// ------------------------------------------------------------ rendering
function banner(kind, text) {
  $("banners").append(el("p", { class: `banner ${kind}` }, text));
}

function renderBanners(s, fetchError) {
  $("banners").replaceChildren();
  if (fetchError) {
    banner("bad", `Cannot refresh: ${fetchError}. Showing the last figures received.`);
  }
  if (!s) return;
  if (!s.redis.up) {
    banner("bad", "Redis is unreachable: edges get degraded answers and fall back to their local allowance; " +
      "the figures below are this coordinator's own.");
  }
  const stale = s.edges.filter((e) => e.stale);
  if (stale.length > 0) {
    const names = stale.slice(0, 5).map((e) => `${e.id} (${fmtAge(e.age_ms)} ago)`).join(", ");
    banner("warn", `${stale.length} edge${stale.length > 1 ? "s" : ""} stale, no sync for over ` +
      `${fmtAge(s.edges_stale_after_ms)} (an edge syncs only while it serves requests): ` +
      `${names}${stale.length > 5 ? ", …" : ""}`);
  }
  const degraded = s.edges.filter((e) => e.degraded && !e.stale);
  if (s.redis.up && degraded.length > 0) {
    banner("warn", `${degraded.length} edge${degraded.length > 1 ? "s" : ""} got a degraded answer at the last sync.`);
  }
}

function renderHeader(s) {
  $("policy-version").textContent = String(s.policy.version);
  $("policy-current").textContent = String(s.policy.version);
  $("edge-count").textContent = String(s.edges.length);
  $("redis-state").textContent = s.redis.up ? (s.merged ? "up" : "up (local view)") : "down";
  $("updated").textContent = fmtTime(s.now_ms);
  $("viewer").textContent = `${s.viewer.name} (${s.viewer.role})`;
}

function renderRates(d) {
  for (const o of OUTCOMES) {
    const [total, perSecond] = lastMinute(d[o]);
    const dd = $(`rate-${o}`);
    dd.textContent = perSecond.toFixed(1);
    dd.title = `${total} in the last minute`;
    dd.dataset.total = String(total);
  }
}

const SVG = "http://www.w3.org/2000/svg";

function renderChart(d) {
  const svg = $("chart");
  const w = 900, h = 220, top = 14, bottom = 4;
  let max = 1;
  for (const o of OUTCOMES) for (const v of d[o]) if (v > max) max = v;
  const n = d.points;
  const kids = [];
  // Grid lines at half and full scale; their labels are HTML over the SVG,
  // which is stretched to the panel's width.
  for (const f of [0.5, 1]) {
    const y = h - bottom - f * (h - top - bottom);
    const line = document.createElementNS(SVG, "line");
    line.setAttribute("class", "grid");
    line.setAttribute("x1", "0"); line.setAttribute("x2", String(w));
    line.setAttribute("y1", String(y)); line.setAttribute("y2", String(y));
    kids.push(line);
  }
  $("chart-max").textContent = `${max}/s`;
  $("chart-mid").textContent = `${Math.round(max / 2)}/s`;
  for (const o of OUTCOMES) {
    const pts = d[o].map((v, i) =>
      `${((i * w) / Math.max(1, n - 1)).toFixed(1)},${(h - bottom - (v / max) * (h - top - bottom)).toFixed(1)}`);
    const p = document.createElementNS(SVG, "polyline");
    p.setAttribute("class", o);
    p.setAttribute("points", pts.join(" "));
    kids.push(p);
  }
  svg.replaceChildren(...kids);
}

function renderEdges(s) {
  const rows = s.edges.map((e) => {
    const state = e.stale ? "stale" : e.degraded ? "degraded" : "ok";
    return el("tr", { "data-edge": e.id },
      el("td", { class: "edge", title: e.id }, e.id),
      el("td", { class: `state-${state}` }, state),
      el("td", { class: "num age" }, fmtAge(e.age_ms)),
      el("td", { class: "num lag" }, `${e.lag_ms} ms`),
      el("td", { class: "module" }, e.module_version || "–"),
      el("td", { class: "num policy" }, String(e.policy_version)));
  });
  $("edges").tBodies[0].replaceChildren(...rows);
  $("edges-empty").hidden = rows.length > 0;
}

function renderTopKeys(s) {
  const blocks = s.top_keys.map((q) => {
    const head = el("h3", {}, q.quota, el("small", {}, ` · ${q.window_s} s window${q.shadow ? " · shadow" : ""}`));
    const rows = q.keys.map((k) => {
      const ratio = k.limit > 0 ? k.count / k.limit : 0;
      const fill = el("span", { class: ratio >= 1 ? "over" : ratio >= 0.8 ? "near" : "" });
      fill.style.width = `${Math.min(100, ratio * 100).toFixed(1)}%`;
      return el("div", { class: "bar-row", "data-key": k.key },
        el("span", { class: "key", title: k.key }, k.key),
        el("span", { class: "bar", role: "img", "aria-label": `${k.count} of ${k.limit}` }, fill),
        el("span", { class: "count" }, `${k.count} / ${k.limit}`));
    });
    if (rows.length === 0) rows.push(el("p", { class: "note" }, "No key reported in this window or the last."));
    return el("div", { class: "quota", "data-quota": q.quota }, head, ...rows);
  });
  $("top-keys").replaceChildren(...blocks);
}

function renderChallenges(s) {
  const rows = s.challenges.map((c) => el("tr", {},
    el("td", {}, c.quota),
    el("td", { class: "key", title: c.key }, c.key),
    el("td", { class: "num issued" }, String(c.issued)),
    el("td", { class: "num solved" }, String(c.solved)),
    el("td", {}, `${fmtAge(s.now_ms - c.last_ms)} ago`),
    el("td", { class: "edge", title: c.last_edge }, c.last_edge)));
  $("challenges").tBodies[0].replaceChildren(...rows);
  $("challenges-empty").hidden = rows.length > 0;
}

function renderRollbackControls(s, list) {
  const admin = s.viewer.role === "admin";
  const select = $("rollback-to");
  const keep = select.value;
  const options = list.versions
    .filter((v) => v.version !== s.policy.version)
    .slice(0, 50)
    .map((v) => el("option", { value: v.version }, `version ${v.version}`));
  select.replaceChildren(...options);
  if (keep && options.some((o) => o.value === keep)) select.value = keep;
  select.disabled = !admin || options.length === 0;
  $("rollback").disabled = !admin || options.length === 0 || rolling;
  $("rollback-why").textContent = admin
    ? (options.length === 0 ? "There is no other version to roll back to." : "")
    : `Rolling back needs an admin token; ${s.viewer.name} is read-only.`;
}

function renderVersions(list) {
  const rows = list.versions.slice(0, VERSIONS_SHOWN).map((v) => el("tr", { "data-version": v.version },
    el("td", { class: "num" }, String(v.version)),
    el("td", {}, v.created_at ? new Date(v.created_at).toLocaleString([], { hour12: false }) : "–"),
    el("td", {}, v.by || "–"),
    el("td", {}, v.action || "–")));
  $("versions").tBodies[0].replaceChildren(...rows);
}

async function refreshVersions(s) {
  if (versionsFor === s.policy.version) return;
  const list = await api("/v1/policy/versions");
  versionsFor = s.policy.version;
  renderVersions(list);
  renderRollbackControls(s, list);
}

function render(s) {
  renderHeader(s);
  renderBanners(s, null);
  renderRates(s.decisions);
  renderChart(s.decisions);
  renderEdges(s);
  renderTopKeys(s);
  renderChallenges(s);
  // For tests and scripts: the /v1/stats answer now on screen.
  document.body.dataset.statsNowMs = String(s.now_ms);
}

// ------------------------------------------------------------ the loop
async function refresh() {
  clearTimeout(timer);
  try {
    const s = await api("/v1/stats");
    stats = s;
    render(s);
    await refreshVersions(s);
  } catch (e) {
    if (e instanceof AuthError) {
      signOut(e.message);
      return;
    }
    renderBanners(stats, e.message || String(e));
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

async function rollback() {
  const to = Number($("rollback-to").value);
  if (!Number.isInteger(to) || to <= 0 || rolling) return;
  if (!window.confirm(`Roll the policy back to version ${to}? This writes a new version with version ${to}'s content; every edge picks it up within a sync interval.`)) return;
  rolling = true;
  $("rollback").disabled = true;
  try {
    const doc = await api("/v1/policy/rollback", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ to }),
    });
    $("rollback-result").textContent = `Version ${doc.version} now enforces version ${to}'s content.`;
  } catch (e) {
    $("rollback-result").textContent = `Rollback failed: ${e.message}`;
  } finally {
    rolling = false;
    versionsFor = -1;
    await refresh();
  }
}

function showLogin(message) {
  $("main").hidden = true;
  $("signout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").focus();
}

function signOut(message) {
  clearTimeout(timer);
  token = null;
  stats = null;
  versionsFor = -1;
  sessionStorage.removeItem(TOKEN_KEY);
  $("banners").replaceChildren();
  showLogin(message);
}

function start() {
  $("login").hidden = true;
  $("main").hidden = false;
  $("signout").hidden = false;
  refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  // A link may carry the token in the fragment (#token=...), which browsers
  // never send to a server; it is moved to session storage at once.
  const m = /^#token=(.+)$/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  token = sessionStorage.getItem(TOKEN_KEY);
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("token").value.trim();
    $("token").value = "";
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    start();
  });
  $("signout").addEventListener("click", () => signOut(""));
  $("rollback").addEventListener("click", rollback);
  if (token) start(); else showLogin("");
});
