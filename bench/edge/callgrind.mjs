// callgrind.mjs — instructions per tg_verify() on the native core, the
// figure that does not depend on how busy the machine is: build/bench/
// verify_driver runs under `valgrind --tool=callgrind` with N1 and N2 calls,
// and (Ir(N2) − Ir(N1)) / (N2 − N1) cancels setup, policy install and token
// minting. Five pairs of different sizes per case; they agree when the cost
// per call is constant.

import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { BUILD, OUT, ROOT, isMain, progress, row, runAlone, runCommand } from "../lib.mjs";

const DRIVER = path.join(BUILD, "bench/verify_driver");
const PAIRS = 5;
const CASES = [
  { mode: "none", what: "instructions per verify(), native, no token", n1: 1000, step: 500, span: 10000 },
  { mode: "jwt-fresh", what: "instructions per verify(), native, fresh HS256 token", n1: 500, step: 100, span: 3000 },
  { mode: "jwt-repeat", what: "instructions per verify(), native, repeated HS256 token", n1: 500, step: 100, span: 3000 },
];
// The driver is a Makefile target; build it if this file runs alone.
async function ensureDriver() {
  const r = await runCommand("make", ["--no-print-directory", "-s", path.relative(ROOT, DRIVER)],
    { cwd: ROOT, timeoutMs: 120000 });
  if (r.code !== 0 || !existsSync(DRIVER)) throw new Error(`make ${DRIVER} failed:\n${r.stderr}${r.stdout}`);
}

// Ir of one driver run, and where a profile was written (if asked).
async function instructions(mode, n, pool, outFile = "/dev/null") {
  const r = await runCommand("valgrind", ["--tool=callgrind", `--callgrind-out-file=${outFile}`,
    DRIVER, mode, String(n), String(pool)], { timeoutMs: 120000 });
  if (r.code !== 0) throw new Error(`verify_driver ${mode} ${n} under callgrind exited ${r.code ?? r.signal}:\n${r.stderr}`);
  const m = /Collected : (\d+)/.exec(r.stderr);
  if (!m) throw new Error(`no "Collected" line from callgrind:\n${r.stderr}`);
  return Number(m[1]);
}

// Self instructions per function in a profile: { "file:function": Ir }.
async function profile(file) {
  const r = await runCommand("callgrind_annotate", ["--threshold=100", "--auto=no", file], { timeoutMs: 60000 });
  if (r.code !== 0) return {};
  const out = {};
  for (const line of r.stdout.split("\n")) {
    const m = /^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.+?)(?: \[.*\])?$/.exec(line);
    if (m && m[2] !== "PROGRAM TOTALS") out[m[2]] = (out[m[2]] || 0) + Number(m[1].replace(/,/g, ""));
  }
  return out;
}

// The functions that cost the most per verify(): the difference of the
// two profiles of a pair, so setup and token minting drop out. "name Ir".
async function topPerCall(f1, f2, n, k = 3) {
  const [a, b] = await Promise.all([profile(f1), profile(f2)]);
  return Object.entries(b)
    .map(([fn, ir]) => [fn.replace(/^.*:/, ""), (ir - (a[fn] || 0)) / n])
    .filter(([, ir]) => ir > 0)
    .sort((x, y) => y[1] - x[1])
    .slice(0, k)
    .map(([fn, ir]) => `${fn} ${Math.round(ir)}`);
}

export async function measure() {
  await ensureDriver();
  mkdirSync(OUT, { recursive: true });
  const rows = [];
  for (const c of CASES) {
    progress(`edge: callgrind, ${c.mode}, ${PAIRS} pairs of runs`);
    const per = [];
    let top = [];
    for (let p = 0; p < PAIRS; p++) {
      const n1 = c.n1 + p * c.step, n2 = n1 + c.span;
      const pool = c.mode === "jwt-fresh" ? n2 : 1;
      // The last pair keeps its profiles, to say where the instructions go.
      const keep = p === PAIRS - 1;
      const f1 = keep ? path.join(OUT, `callgrind.${c.mode}.${n1}.out`) : "/dev/null";
      const f2 = keep ? path.join(OUT, `callgrind.${c.mode}.${n2}.out`) : "/dev/null";
      // The two runs of a pair are independent: run them side by side.
      const [a, b] = await Promise.all([instructions(c.mode, n1, pool, f1), instructions(c.mode, n2, pool, f2)]);
      per.push((b - a) / (n2 - n1));
      if (keep) top = await topPerCall(f1, f2, n2 - n1);
    }
    rows.push(row({
      id: `edge.verify_ir_${c.mode.replace("-", "_")}`, what: c.what, unit: "instructions/call",
      runs: per, digits: 5,
      note: top.length ? `most per call: ${top.join(", ")}` : "",
    }));
  }
  return rows;
}

if (isMain(import.meta.url)) runAlone(measure);
