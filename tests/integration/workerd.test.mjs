// The same scenario inside real workerd (`workerd test`), the edge talking to
// a real tollgated through an external service binding.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { copyFileSync } from "node:fs";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import * as jose from "jose";
import { BUILD, ROOT, TEST_KEYS, redisCommand, removeDir, startRedis, startTollgated, tempDir } from "./harness.mjs";
import { DECISIONS_POLICY } from "./decisions.mjs";
import { POLICY } from "./scenario.mjs";
import { CLIENTIP_QUOTA } from "./clientip.mjs";

// One coordinator for every suite: the quotas have disjoint path prefixes.
const WORKERD_POLICY = { ...POLICY, quotas: [...POLICY.quotas, ...DECISIONS_POLICY.quotas, CLIENTIP_QUOTA] };

const WORKERD = path.join(ROOT, "node_modules/.bin/workerd");
const JWT_ALGS = ["RS256", "PS384", "ES256", "ES384", "EdDSA"];
let redis, co, dir, jwtCases;

before(async () => {
  redis = await startRedis();
  co = await startTollgated({ redisPort: redis.port, policy: WORKERD_POLICY });
  dir = tempDir("tollgate-workerd-");
  // Public-key tokens for the jwt suite, minted here by jose.
  const jwks = { keys: [] }, tokens = [];
  for (const alg of JWT_ALGS) {
    const { publicKey, privateKey } = await jose.generateKeyPair(alg, { extractable: true, crv: alg === "EdDSA" ? "Ed25519" : undefined });
    jwks.keys.push({ ...(await jose.exportJWK(publicKey)), kid: `wd-${alg}`, alg });
    const token = await new jose.SignJWT({ sub: `wd-${alg}` }).setProtectedHeader({ alg, kid: `wd-${alg}` })
      .setExpirationTime("10m").sign(privateKey);
    tokens.push({ alg, token });
  }
  jwtCases = JSON.stringify({ jwks, tokens });
  copyFileSync(path.join(BUILD, "tollgate.wasm"), path.join(dir, "tollgate.wasm"));
  copyFileSync(path.join(ROOT, "edge-module/js/tollgate.mjs"), path.join(dir, "tollgate.mjs"));
  for (const f of ["scenario.mjs", "decisions.mjs", "clientip.mjs", "workerd/edge-suite.js"]) {
    copyFileSync(path.join(ROOT, "tests/integration", f), path.join(dir, path.basename(f)));
  }
  writeFileSync(path.join(dir, "config.capnp"), `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "main", worker = .edgeTest),
    (name = "coordinator", external = (address = "127.0.0.1:${co.port}", http = ())),
  ],
);
const edgeTest :Workerd.Worker = (
  modules = [
    (name = "edge-suite.js", esModule = embed "edge-suite.js"),
    (name = "scenario.mjs", esModule = embed "scenario.mjs"),
    (name = "decisions.mjs", esModule = embed "decisions.mjs"),
    (name = "clientip.mjs", esModule = embed "clientip.mjs"),
    (name = "tollgate.mjs", esModule = embed "tollgate.mjs"),
    (name = "tollgate.wasm", wasm = embed "tollgate.wasm"),
  ],
  compatibilityDate = "2024-09-23",
  compatibilityFlags = ["nodejs_compat"],
  bindings = [
    (name = "COORDINATOR", service = "coordinator"),
    (name = "EDGE_KEY", text = "${TEST_KEYS.edge}"),
    (name = "JWT_CASES", text = ${JSON.stringify(jwtCases)}),
  ],
);
`);
});
after(async () => {
  if (co) await co.stop();
  if (redis) await redis.stop();
  if (dir) removeDir(dir);
});

test("workerd: hot key challenged across two edges, guard(), every decision kind, client address sources, public-key JWTs", async () => {
  const proc = spawn(WORKERD, ["test", path.join(dir, "config.capnp")], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  proc.stdout.on("data", (d) => { out += d; });
  proc.stderr.on("data", (d) => { out += d; });
  const timer = setTimeout(() => proc.kill("SIGKILL"), 60000);
  const code = await new Promise((r) => proc.on("exit", r));
  clearTimeout(timer);
  process.stdout.write(out.split("\n").map((l) => `workerd: ${l}`).join("\n") + "\n");
  assert.equal(code, 0, `workerd test failed:\n${out}`);
  assert.match(out, /\[ PASS \] main:hotKey/);
  assert.match(out, /\[ PASS \] main:guard/);
  assert.match(out, /\[ PASS \] main:decisions/);
  assert.match(out, /\[ PASS \] main:clientIp/);
  assert.match(out, /\[ PASS \] main:jwt/);
  // Each public-key token was counted twice under its own sub (the
  // tampered copy has no claims to key on).
  for (const alg of JWT_ALGS) {
    assert.equal(Number(await redisCommand(redis.port, "HGET", `tg:{user|wd-${alg}}:c`, "t")), 2, `wd-${alg}`);
  }
});
