// coldstart.mjs — cold start of tollgate.wasm in Node's V8: a fresh
// `new WebAssembly.Module(bytes)` + `new WebAssembly.Instance(module, {})`,
// and the same followed by the glue's init (createTollgate: instance, memory
// grow, key table) and by the first decision.
//
// V8 caches compiled modules by their bytes, so every sample compiles
// different bytes: the module with an appended custom section "bench"
// holding a counter (custom sections do not change what the module does).
// V8 compiles function bodies lazily on first call, which is why the row
// "to first decision" is worth reading next to the bare compile.

import { createTollgate } from "../../edge-module/js/tollgate.mjs";
import { atMost, isMain, median, progress, row, runAlone } from "../lib.mjs";
import { wasmBytes } from "./fixtures.mjs";

const RUNS = 7;         // runs reported (median of each run's samples)
const PER_RUN = 40;     // fresh compiles per run and per variant
const BUDGET_MS = 20000;

// bytes + custom section { name "bench", payload: 8-byte counter }.
function variant(base, n) {
  const name = Buffer.from("bench");
  const payload = Buffer.alloc(8);
  payload.writeBigUInt64LE(BigInt(n));
  const body = Buffer.concat([Buffer.from([name.length]), name, payload]);
  return Buffer.concat([base, Buffer.from([0, body.length]), body]);
}

const features = { method: "GET", path: "/", host: "bench.example", ip: "192.0.2.1", authorization: "", cookie: "" };

// Nanoseconds of one fresh compile and of its instantiation.
function sample(bytes) {
  const t0 = process.hrtime.bigint();
  const m = new WebAssembly.Module(bytes);
  const t1 = process.hrtime.bigint();
  new WebAssembly.Instance(m, {});
  const t2 = process.hrtime.bigint();
  return [Number(t1 - t0), Number(t2 - t1)];
}

// Nanoseconds of WebAssembly.validate: V8 validates every function body
// while compiling (lazy compilation defers code generation, not
// validation), so this is the part of the compile that scales with code size.
function sampleValidate(bytes) {
  const t0 = process.hrtime.bigint();
  if (!WebAssembly.validate(bytes)) throw new Error("tollgate.wasm does not validate");
  return Number(process.hrtime.bigint() - t0);
}

function sampleInit(bytes, firstDecision) {
  const t0 = process.hrtime.bigint();
  const tg = createTollgate(new WebAssembly.Module(bytes), { edgeId: "bench-edge" });
  if (firstDecision && tg.verify(features).kind !== "allow") throw new Error("first decision was not allow");
  const t1 = process.hrtime.bigint();
  return Number(t1 - t0);
}

export async function measure() {
  progress(`edge: cold start, ${RUNS} runs × ${PER_RUN} fresh compiles per variant`);
  const base = wasmBytes();
  let n = 0;
  // Warm the engine itself (the very first compile in a process also sets
  // up V8's wasm machinery, which a worker host has done long before).
  for (let i = 0; i < 5; i++) sampleInit(variant(base, n++), true);

  const bare = [], comp = [], inst = [], valid = [], init = [], first = [];
  const end = Date.now() + BUDGET_MS;
  for (let r = 0; r < RUNS && Date.now() < end; r++) {
    const a = [], ac = [], ai = [], av = [], b = [], c = [];
    for (let i = 0; i < PER_RUN; i++) {
      const v = [variant(base, n++), variant(base, n++), variant(base, n++), variant(base, n++)];
      const [tc, ti] = sample(v[0]);
      a.push(tc + ti);
      ac.push(tc);
      ai.push(ti);
      av.push(sampleValidate(v[3]));
      b.push(sampleInit(v[1], false));
      c.push(sampleInit(v[2], true));
    }
    bare.push(median(a) / 1e6);
    comp.push(median(ac) / 1e6);
    inst.push(median(ai) / 1e6);
    valid.push(median(av) / 1e6);
    init.push(median(b) / 1e6);
    first.push(median(c) / 1e6);
  }
  return [
    row({ id: "edge.cold_start_ms", what: "cold start: compile + instantiate (Node V8)", unit: "ms",
      runs: bare, target: atMost(0.25, "≤ 0.25 ms") }),
    row({ id: "edge.cold_compile_ms", what: "… of which compile (new WebAssembly.Module)", unit: "ms", runs: comp }),
    row({ id: "edge.cold_instantiate_ms", what: "… of which instantiate (new WebAssembly.Instance)", unit: "ms", runs: inst }),
    row({ id: "edge.cold_start_init_ms", what: "compile + instantiate + glue init (createTollgate, 4096 keys)", unit: "ms", runs: init }),
    row({ id: "edge.cold_start_first_ms", what: "compile + instantiate + glue init + first verify()", unit: "ms", runs: first }),
    row({ id: "edge.validate_ms", what: "WebAssembly.validate alone (V8 validates every body at compile)", unit: "ms", runs: valid }),
  ];
}

if (isMain(import.meta.url)) runAlone(measure);
