// measure.mjs — the accuracy simulator as a `make bench` suite: runs
// build/bench-sim --all (every scenario, both limits; it starts its own
// redis-server and build/tollgated-sim) and turns build/bench/sim.json into
// rows against the DESIGN targets. bench-sim's own table goes to
// build/bench/sim.md. Alone: node bench/sim/measure.mjs

import { existsSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import path from "node:path";
import { BUILD, OUT, ROOT, row, atMost, atLeast, progress, startProcess, isMain, runAlone } from "../lib.mjs";

const SIM = path.join(BUILD, "bench-sim");
const PREFIX = path.join(OUT, "sim");
const TIMEOUT_MS = 15 * 60 * 1000;   // bench-sim caps each run itself

export async function measure() {
  if (!existsSync(SIM) || !existsSync(path.join(BUILD, "tollgated-sim")))
    throw new Error("build/bench-sim or build/tollgated-sim missing: make build/bench-sim build/tollgated-sim");
  mkdirSync(OUT, { recursive: true });
  progress("sim: bench-sim --all (every scenario at limits 6000 and 600; about 3 min)");
  // Its progress lines go straight to our stderr; the table is kept.
  const proc = startProcess(SIM, ["--all", "--out", PREFIX], { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] });
  let table = "";
  proc.stdout.on("data", (d) => { table += d; });
  const timer = setTimeout(() => proc.kill("SIGTERM"), TIMEOUT_MS);
  const r = await proc.exited;
  clearTimeout(timer);
  writeFileSync(`${PREFIX}.md`, table);
  if (r.code !== 0) throw new Error(`bench-sim exited ${r.code ?? r.signal}`);
  const sim = JSON.parse(readFileSync(`${PREFIX}.json`, "utf8"));
  const find = (scenario, limit) => sim.runs.find((x) => x.scenario === scenario && x.limit === limit);
  const rows = [];
  const fig = (run, name) => run && !run.truncated ? [run[name].value] : [];
  const na = (run) => (!run ? "not run" : run.truncated ? `cut: ${run.truncated_why}` : null);
  const note = (run) => (run && !run.check.windows_follow_simulated_clock ? "coordinator windows follow real time" : "");

  const a = find("spray50", 6000);
  rows.push(row({
    id: "sim.overshoot.spray50", what: "global overshoot, 50 edges, 10× attack (worst window)",
    unit: "%", runs: fig(a, "worst_window_overshoot"), target: atMost(2, "≤ 2 %"), na: na(a), note: note(a), digits: 3,
  }));
  const d = find("legit20", 6000);
  rows.push(row({
    id: "sim.legit.legit20", what: "legit traffic at 90% of the limit, 20 edges: admitted",
    unit: "%", runs: fig(d, "legit_admitted"), target: atLeast(97, "≥ 97 %"), na: na(d), note: note(d), digits: 4,
  }));
  rows.push(row({
    id: "sim.redis.spray50", what: "Redis round trips per 1,000 edge decisions, 50-edge spray",
    unit: "/1000", runs: fig(a, "redis_round_trips_per_1000_decisions"), target: atMost(10, "≤ 10"), na: na(a), digits: 3,
  }));
  // The realistic figure for the target: many keys share each sync batch.
  for (const limit of [600, 6000]) {
    const g = find("fleet20", limit);
    rows.push(row({
      id: `sim.redis.fleet20.${limit}`,
      what: `Redis round trips per 1,000 edge decisions, ${g ? g.clients : "?"} clients at 50% over 20 edges, limit ${limit}`,
      unit: "/1000", runs: fig(g, "redis_round_trips_per_1000_decisions"), target: atMost(10, "≤ 10"), na: na(g), note: note(g), digits: 3,
    }));
  }
  for (const run of sim.runs) {
    rows.push(row({
      id: `sim.overshoot.${run.scenario}.${run.limit}`,
      what: `sim ${run.scenario}, limit ${run.limit}/${run.window_s}s, ${run.edges} edges, ${run.interval_ms} ms: worst-window overshoot`,
      unit: "%", runs: fig(run, "worst_window_overshoot"), na: na(run), note: note(run), digits: 3,
    }));
  }
  return rows;
}

if (isMain(import.meta.url)) runAlone(measure);
