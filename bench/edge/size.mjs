// size.mjs — bytes of build/tollgate.wasm as shipped (after wasm-opt -Oz),
// and, to explain it, the code section and the pre-wasm-opt link. One
// build gives one figure: the size is deterministic, so there is one run.

import { readFileSync, statSync } from "node:fs";
import path from "node:path";
import { BUILD, atMost, isMain, progress, row, runAlone } from "../lib.mjs";
import { WASM_PATH } from "./fixtures.mjs";

// Sizes of the module's sections by id (10 = code, 11 = data, 0 = custom).
function sections(bytes) {
  const out = {};
  let i = 8;
  const uleb = () => {
    let v = 0, s = 0, b;
    do { b = bytes[i++]; v += (b & 0x7f) * 2 ** s; s += 7; } while (b & 0x80);
    return v;
  };
  while (i < bytes.length) {
    const id = bytes[i++];
    const n = uleb();
    out[id] = (out[id] || 0) + n;
    i += n;
  }
  return out;
}

export async function measure() {
  progress("edge: module size");
  const bytes = readFileSync(WASM_PATH);
  const sec = sections(bytes);
  let raw = null;
  try { raw = statSync(path.join(BUILD, "tollgate.raw.wasm")).size; } catch { /* not built */ }
  return [
    row({ id: "edge.wasm_bytes", what: "tollgate.wasm size (after wasm-opt -Oz)", unit: "bytes",
      runs: [bytes.length], target: atMost(24 * 1024, "≤ 24 KB (24,576 B)"), digits: 6 }),
    row({ id: "edge.wasm_code_bytes", what: "… of which code section", unit: "bytes", runs: [sec[10] || 0], digits: 6,
      note: raw ? `data ${sec[11] || 0} B; ${raw} B before wasm-opt` : `data ${sec[11] || 0} B` }),
  ];
}

if (isMain(import.meta.url)) runAlone(measure);
