// run.mjs — `make bench`: runs every benchmark, prints one Markdown table
// on stdout (progress on stderr) and writes build/bench/<suite>.json.
//
//   node bench/run.mjs                 every suite
//   node bench/run.mjs verify workerd  only the steps named (any suite)
//
// A suite is a list of files under bench/, each exporting measure() (see
// lib.mjs). A step that throws becomes an error row; the exit status is
// then 1. The peer suite reads edge.json and sim.json, so edge and accuracy
// run before it. After the table: one line per PNG (bench/plot.mjs).

import { table, errorRow, progress, writeJson } from "./lib.mjs";
import { plot, plotLines } from "./plot.mjs";

const startedAt = Date.now();

const SUITES = {
  edge: [
    ["size", () => import("./edge/size.mjs")],
    ["coldstart", () => import("./edge/coldstart.mjs")],
    ["verify", () => import("./edge/verify.mjs")],
    ["verify-pk", () => import("./edge/verify_pk.mjs")],
    ["callgrind", () => import("./edge/callgrind.mjs")],
    ["workerd", () => import("./edge/workerd.mjs")],
  ],
  // The accuracy simulator: overshoot, legit admission, Redis cost
  // (build/bench/sim.json is bench-sim's own summary, hence the name).
  accuracy: [
    ["sim", () => import("./sim/measure.mjs")],
  ],
  // Coordinator throughput against redis-benchmark (owner: bench/coordinator/).
  coordinator: [["throughput", () => import("./coordinator/measure.mjs")]],
  // rate-limiter-flexible beside tollgate's figures above (bench/peer/).
  peer: [["peer", () => import("./peer/measure.mjs")]],
};

const only = new Set(process.argv.slice(2));
const known = new Set(Object.values(SUITES).flat().map(([name]) => name));
for (const name of only) {
  if (!known.has(name)) {
    process.stderr.write(`bench: no step "${name}"; steps: ${[...known].join(", ")}\n`);
    process.exit(2);
  }
}

const all = [];
for (const [suite, steps] of Object.entries(SUITES)) {
  const rows = [];
  for (const [name, load] of steps) {
    if (only.size && !only.has(name)) continue;
    try {
      rows.push(...await (await load()).measure());
    } catch (e) {
      progress(`${suite}: ${name} failed: ${e.stack || e}`);
      rows.push(errorRow(`${suite}.${name}`, `${suite}: ${name}`, e));
    }
  }
  if (!rows.length) continue;
  const file = writeJson(suite, rows, { steps: steps.map(([n]) => n).filter((n) => !only.size || only.has(n)) });
  progress(`${suite}: wrote ${file}`);
  all.push(...rows);
}

let plotOut = [];
try {
  plotOut = plotLines(plot({ since: startedAt }));
} catch (e) {
  progress(`plots failed: ${e.stack || e}`);
}
for (const line of plotOut) progress(line);
process.stdout.write(table(all) + "\n" + (plotOut.length ? "\n" + plotOut.join("\n") + "\n" : ""));
process.exit(all.some((r) => r.error) ? 1 : 0);
