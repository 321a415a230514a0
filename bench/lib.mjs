// lib.mjs — what every benchmark shares: summary statistics over runs, the
// row format, the one Markdown table and the JSON files, progress lines,
// bounded loops, and child processes stopped by their PID.
//
// A benchmark file exports `async function measure()` returning rows (see
// row()), and ends with `if (isMain(import.meta.url)) runAlone(measure, ...)`
// so it can run on its own. bench/run.mjs collects the rows of every file
// of a suite into one table and build/bench/<suite>.json.

import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const BUILD = path.join(ROOT, "build");
export const OUT = path.join(BUILD, "bench");

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- progress

const started = Date.now();
// When this process started (ms epoch): a build/bench file older than this
// comes from an earlier run.
export const STARTED = started;

// One line per step on stderr, so stdout stays the table.
export function progress(msg) {
  const s = ((Date.now() - started) / 1000).toFixed(1).padStart(6);
  process.stderr.write(`bench [${s}s] ${msg}\n`);
}

// ---------------------------------------------------------------- statistics

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return NaN;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

export function summary(xs) {
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs), n: xs.length };
}

// ---------------------------------------------------------------- rows

// A table row. runs: the per-run figures (the median and min–max are taken
// over them). target: { op: "<=" | ">=", value, text } or null for a row
// that explains another one. na: a reason the figure could not be taken
// (the row prints it instead of numbers and does not count as missed).
export function row({ id, what, unit, runs = [], target = null, note = "", na = null, digits = 3 }) {
  const s = runs.length ? summary(runs) : { median: null, min: null, max: null, n: 0 };
  let met = null;
  if (!na && target && s.n) met = target.op === "<=" ? s.median <= target.value : s.median >= target.value;
  return { id, what, unit, median: s.median, min: s.min, max: s.max, runs, target, met, note, na, digits };
}

// A row for a step that failed outright: shown, counted as a failure.
export function errorRow(id, what, err) {
  return { ...row({ id, what, unit: "" }), error: String(err && err.message || err) };
}

export const atMost = (value, text) => ({ op: "<=", value, text: text || `≤ ${value}` });
export const atLeast = (value, text) => ({ op: ">=", value, text: text || `≥ ${value}` });

// Significant digits, no exponent for the magnitudes we print.
function fmt(x, digits) {
  if (x === null || x === undefined || Number.isNaN(x)) return "";
  if (Number.isInteger(x) && Math.abs(x) >= 10 ** digits) return String(x);
  const p = Number(x.toPrecision(digits));
  return Math.abs(p) >= 1e6 ? p.toFixed(0) : String(p);
}

export function table(rows) {
  const lines = [
    "| what | median | min–max | unit | target | met? |",
    "|---|---:|---:|---|---|---|",
  ];
  for (const r of rows) {
    let med, range, met;
    if (r.error) { med = "error"; range = r.error.replace(/\|/g, "/").split("\n")[0]; met = "✗"; }
    else if (r.na) { med = r.na; range = ""; met = "—"; }
    else {
      med = fmt(r.median, r.digits);
      range = r.runs.length > 1 ? `${fmt(r.min, r.digits)}–${fmt(r.max, r.digits)}` : "(deterministic)";
      met = r.met === null ? "" : r.met ? "yes" : "**no**";
    }
    const what = r.note ? `${r.what} (${r.note})` : r.what;
    lines.push(`| ${what} | ${med} | ${range} | ${r.unit} | ${r.target ? r.target.text : ""} | ${met} |`);
  }
  return lines.join("\n");
}

export function host() {
  return {
    node: process.version,
    v8: process.versions.v8,
    cpus: os.cpus().length,
    cpu_model: os.cpus()[0]?.model || "",
    loadavg_1m: os.loadavg()[0],
    platform: `${os.platform()} ${os.release()}`,
  };
}

// build/bench/<suite>.json: the same figures as the table, plus the raw
// per-run values.
export function writeJson(suite, rows, extra = {}) {
  mkdirSync(OUT, { recursive: true });
  const file = path.join(OUT, `${suite}.json`);
  const out = {
    suite,
    generated_at: new Date().toISOString(),
    host: host(),
    ...extra,
    rows: rows.map(({ digits, ...r }) => r),
  };
  writeFileSync(file, JSON.stringify(out, null, 2) + "\n");
  return file;
}

// ---------------------------------------------------------------- bounds

// Runs fn(i) for i < count, stopping early (with a note) once budgetMs has
// passed. Every load loop in bench/ goes through this or a fixed count.
export async function bounded(count, budgetMs, fn) {
  const end = Date.now() + budgetMs;
  let i = 0;
  for (; i < count; i++) {
    if (i > 0 && Date.now() > end) break;
    await fn(i);
  }
  return i;
}

// ---------------------------------------------------------------- processes

// Processes are started and stopped by the integration-test harness's
// functions: it kills what it started, by PID, when Node exits.
import { startProcess, stopProcess } from "../tests/integration/harness.mjs";
export { startProcess, stopProcess };
// Ctrl-C or a kill: exit through "exit", so those children are stopped too.
for (const sig of ["SIGINT", "SIGTERM"]) process.once(sig, () => process.exit(130));

// Runs a command to completion, killed (by PID) after timeoutMs. Resolves
// to { code, signal, stdout, stderr }.
export async function runCommand(cmd, args, { timeoutMs = 60000, ...opts } = {}) {
  const proc = startProcess(cmd, args, opts);
  let out = "", err = "";
  proc.stdout.on("data", (d) => { out += d; });
  proc.stderr.on("data", (d) => { err += d; });
  const t = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
  const r = await proc.exited;
  clearTimeout(t);
  return { ...r, stdout: out, stderr: err };
}

// ---------------------------------------------------------------- running alone

export function isMain(url) {
  return process.argv[1] && url === pathToFileURL(path.resolve(process.argv[1])).href;
}

// `node bench/edge/<file>.mjs`: the file's rows as a table on stdout.
export async function runAlone(measure) {
  let rows;
  try {
    rows = await measure();
  } catch (e) {
    process.stderr.write(`${e.stack || e}\n`);
    process.exit(1);
  }
  process.stdout.write(table(rows) + "\n");
  process.exit(rows.some((r) => r.error) ? 1 : 0);
}
