// plot.mjs — the PNGs of `make bench`, drawn with gnuplot (gnuplot-nox)
// from the suites' JSON files under build/bench/ (skipped, with a warning,
// without gnuplot):
//
//   throughput.png     throughput ratios, median with min–max over runs,
//                      each with its target where the DESIGN has one:
//                      coordinator ÷ redis-benchmark, the same Lua and
//                      pipelined INCRBY (coordinator.json), workerd with
//                      tollgate ÷ without (edge.json), tollgate edge
//                      decisions/s ÷ rate-limiter-flexible decisions/s
//                      (peer.json)
//   sim-overshoot.png  overshoot against sync interval: bench-sim writes it
//                      itself (accuracy suite); only reported here
//
// bench/run.mjs calls plot() after every suite; alone: node bench/plot.mjs

import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, statSync, writeFileSync, mkdirSync } from "node:fs";
import path from "node:path";
import { OUT, ROOT, isMain } from "./lib.mjs";

const rel = (f) => path.relative(ROOT, f);

function rowsOf(name) {
  const file = path.join(OUT, name);
  if (!existsSync(file)) return [];
  try {
    return JSON.parse(readFileSync(file, "utf8")).rows || [];
  } catch {
    return [];
  }
}

const usable = (r) => r && !r.na && !r.error && r.runs?.length && Number.isFinite(r.median);

// The bars: { label, median, min, max, target (value or null), from }.
export function throughputBars() {
  const bars = [];
  const bar = (label, r, from) => bars.push({
    label, median: r.median, min: r.min, max: r.max, from,
    target: r.target && Number.isFinite(r.target.value) ? r.target.value : null,
    targetText: r.target?.text || "",
  });
  // The coordinator suite's throughput ratios against redis-benchmark.
  const co = rowsOf("coordinator.json");
  for (const [id, label] of [
    ["coordinator.efficiency", "coordinator ÷\nredis-benchmark\n(same Lua)"],
    ["coordinator.vs_incrby", "coordinator ÷\nredis-benchmark\n(pipelined INCRBY)"],
  ]) {
    const r = co.find((x) => x.id === id);
    if (usable(r)) bar(label, r, "coordinator.json");
  }
  const edge = rowsOf("edge.json").find((r) => r.id === "edge.workerd_ratio");
  if (usable(edge)) bar("workerd with tollgate\n÷ without", edge, "edge.json");
  const peer = rowsOf("peer.json").find((r) => r.id === "peer.ratio_edge_vs_rlf");
  if (usable(peer)) bar("tollgate edge ÷\nrate-limiter-flexible\n(decisions/s)", peer, "peer.json");
  return bars;
}

function haveGnuplot() {
  const r = spawnSync("gnuplot", ["--version"], { encoding: "utf8", timeout: 10000 });
  return r.status === 0;
}

const q = (s) => `"${s.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`;

function drawThroughput(file) {
  const bars = throughputBars();
  if (!bars.length) return { file, why: "no ratio rows in build/bench/{coordinator,edge,peer}.json" };
  const values = bars.flatMap((b) => [b.min, b.max, b.median, ...(b.target === null ? [] : [b.target])]).filter((x) => x > 0);
  const lo = Math.min(...values), hi = Math.max(...values);
  const log = hi / lo > 20;
  const ymin = log ? 10 ** Math.floor(Math.log10(lo * 0.8)) : 0;
  const ymax = log ? 10 ** Math.ceil(Math.log10(hi * 1.5)) : hi * 1.25;
  const dat = file.replace(/\.png$/, ".dat");
  const gp = file.replace(/\.png$/, ".gp");
  // index 0: x median min max; index 1: target segments x0 y dx dy.
  const lines = ["# x median min max (throughput ratios)"];
  bars.forEach((b, i) => lines.push(`${i} ${b.median} ${b.min} ${b.max}`));
  lines.push("", "", "# x0 target dx 0 \"text\"");
  const targets = bars.map((b, i) => [b, i]).filter(([b]) => b.target !== null);
  targets.forEach(([b, i]) => lines.push(`${i - 0.4} ${b.target} 0.8 0 ${q(`target ${b.targetText}`)}`));
  writeFileSync(dat, lines.join("\n") + "\n");
  const plots = [
    `'${dat}' index 0 using 1:2:($1-0.3):($1+0.3):(${ymin || 0}):2 with boxxyerror fs solid 0.5 lc rgb '#4a7ebb' title 'median'`,
    `'${dat}' index 0 using 1:2:3:4 with yerrorbars pt 0 lw 1.5 lc rgb 'black' title 'min–max over runs'`,
    `'${dat}' index 0 using ($1+0.32):2:(sprintf('%.3g', $2)) with labels left notitle`,
  ];
  if (targets.length) {
    plots.push(`'${dat}' index 1 using 1:2:3:4 with vectors nohead dt 2 lw 2 lc rgb 'red' title 'target'`);
    plots.push(`'${dat}' index 1 using 1:2:5 with labels left offset 0,0.8 boxed tc rgb 'red' notitle`);
  }
  plots.push(`1 with lines lw 1.5 lc rgb '#555555' dt 3 title 'ratio 1'`);
  const script = [
    "set terminal pngcairo size 900,600 noenhanced",
    "set bmargin 6",
    `set output '${file}'`,
    "set title 'tollgate: throughput ratios (median, min–max over runs; make bench)'",
    `set ylabel ${q(log ? "ratio (log scale)" : "ratio")}`,
    log ? "set logscale y" : "unset logscale y",
    `set yrange [${ymin}:${ymax}]`,
    `set xrange [-0.6:${bars.length - 0.4}]`,
    `set xtics (${bars.map((b, i) => `${q(b.label)} ${i}`).join(", ")})`,
    "set grid ytics",
    "set style textbox opaque noborder",
    "set key top left",
    `plot ${plots.join(", \\\n  ")}`,
  ].join("\n") + "\n";
  writeFileSync(gp, script);
  const r = spawnSync("gnuplot", [gp], { cwd: ROOT, encoding: "utf8", timeout: 30000 });
  if (r.status !== 0) return { file, why: `gnuplot failed: ${(r.stderr || r.error?.message || "").trim().split("\n").slice(-2).join(" ")}` };
  return { file, written: true, what: `throughput ratios: ${bars.map((b) => b.label.replace(/\n/g, " ")).join("; ")}` };
}

// Draws what is ours and reports every PNG: [{ file, written, what, why }].
// since: ms epoch; a PNG older than that is reported as left from before.
export function plot({ since = 0 } = {}) {
  mkdirSync(OUT, { recursive: true });
  const out = [];
  const throughput = path.join(OUT, "throughput.png");
  out.push(haveGnuplot() ? drawThroughput(throughput) : { file: throughput, why: "gnuplot not installed (apt-get install gnuplot-nox)" });
  const sim = path.join(OUT, "sim-overshoot.png");
  const what = "overshoot against sync interval (bench-sim)";
  if (!existsSync(sim)) out.push({ file: sim, what, why: "not written (accuracy suite not run, or no gnuplot)" });
  else if (statSync(sim).mtimeMs < since) out.push({ file: sim, what, why: `not rewritten by this run (from ${new Date(statSync(sim).mtimeMs).toISOString().slice(0, 16)}Z)` });
  else out.push({ file: sim, what, written: true });
  return out.map((p) => ({ ...p, file: rel(p.file) }));
}

// One line per PNG, for the end of `make bench`'s output.
export function plotLines(plots) {
  return plots.map((p) => (p.written ? `PNG: ${p.file} — ${p.what}` : `PNG: ${p.file} not written: ${p.why}`));
}

if (isMain(import.meta.url)) {
  const plots = plot();
  process.stdout.write(plotLines(plots).join("\n") + "\n");
}
