// Runs inside workerd under `workerd test` (see ../workerd.test.mjs): the
// shared scenario through the real runtime, then the guard() wrapper the way
// a worker uses it, with syncs in ctx.waitUntil.
import assert from "node:assert";
import wasm from "./tollgate.wasm";
import { createTollgate, guard as guardHandler } from "./tollgate.mjs";
import { hammerUntilChallenged } from "./scenario.mjs";
import { CLEARANCE_KEY, JWT_KEY, decisionsScenario } from "./decisions.mjs";
import { clientIpScenario } from "./clientip.mjs";

export const hotKey = {
  async test(ctrl, env) {
    const viaBinding = (url, init) => env.COORDINATOR.fetch(url, init);
    const edges = ["wd-edge-a", "wd-edge-b"].map((edgeId) =>
      createTollgate(wasm, { edgeId, edgeKey: env.EDGE_KEY, coordinator: "http://coordinator", fetch: viaBinding }));
    const tally = await hammerUntilChallenged(edges, assert);
    console.log(`hotKey: ${JSON.stringify(tally)}`);
  },
};

export const guard = {
  async test(ctrl, env) {
    const pending = [];
    const ctx = { waitUntil: (p) => pending.push(p) };
    const drain = async () => { while (pending.length) await pending.shift(); };
    const origin = async () => new Response("hello from origin");
    // These requests play Cloudflare's: the address is CF-Connecting-IP.
    const fetch = guardHandler(origin, { module: wasm, edgeId: "wd-guard", edgeKey: env.EDGE_KEY,
      coordinatorBinding: "COORDINATOR", clientIp: "cf-connecting-ip" });
    const get = (ip) => fetch(new Request("http://shop.example/api/items", {
      headers: { "cf-connecting-ip": ip } }), env, ctx);

    // Before its first sync the edge has no policy: it admits, and syncs in
    // the background.
    let r = await get("192.0.2.10");
    assert.equal(r.status, 200);
    assert.equal(await r.text(), "hello from origin");
    await drain();

    // Now the policy is in force: allowed answers carry the RateLimit
    // headers, and a hammered client ends up challenged with a page.
    r = await get("192.0.2.10");
    assert.equal(r.status, 200);
    assert.match(r.headers.get("ratelimit-policy") || "", /^"per-ip";q=20;w=60$/);
    assert.match(r.headers.get("ratelimit") || "", /^"per-ip";r=\d+;t=\d+$/);
    await r.text();

    let seen = { 200: 0, 429: 0 }, challenge = null;
    for (let i = 0; i < 300 && !challenge; i++) {
      r = await get("192.0.2.99");
      const body = await r.text();
      seen[r.status] = (seen[r.status] || 0) + 1;
      if (r.status === 429 && r.headers.get("content-type").startsWith("text/html")) challenge = body;
      // workerd's clock moves only across I/O: let time pass so the edge's
      // lease-renewal spacing elapses, then let the background sync land.
      if (i % 5 === 4) { await new Promise((res) => setTimeout(res, 60)); await drain(); }
    }
    assert.ok(challenge, `never challenged: ${JSON.stringify(seen)}`);
    assert.match(challenge, /data-token="[A-Za-z0-9_\-.]{20,}"/);
    assert.ok(seen[200] >= 20, `admitted ${seen[200]} of a limit of 20`);
    r = await get("192.0.2.10");
    assert.equal(r.status, 200, "another client stays allowed");
    await r.text();

    // 100 KiB request headers get a decision, not a 500: a long Cookie
    // (only the clearance cookie matters) is admitted, a 100 KiB token is
    // an invalid one.
    const big = "x".repeat(100 * 1024);
    r = await fetch(new Request("http://shop.example/api/items", {
      headers: { "cf-connecting-ip": "192.0.2.11", cookie: `junk=${big}`, "x-big": big } }), env, ctx);
    assert.equal(r.status, 200, "a 100 KiB Cookie is decided");
    assert.match(r.headers.get("ratelimit") || "", /^"per-ip";r=\d+;t=\d+$/);
    await r.text();
    r = await fetch(new Request("http://shop.example/api/items", {
      headers: { "cf-connecting-ip": "192.0.2.11", authorization: `Bearer ${big}` } }), env, ctx);
    assert.equal(r.status, 401, "a 100 KiB bearer token is an invalid token");
    await r.text();
    await drain();
    console.log(`guard: ${JSON.stringify(seen)}`);
  },
};

// Self-hosted workerd gives requests no cf object: the client address
// must be named (clientip.mjs).
export const clientIp = {
  async test(ctrl, env) {
    const base = { module: wasm, edgeId: "edge-b", edgeKey: env.EDGE_KEY, coordinator: "http://coordinator",
      fetch: (url, init) => env.COORDINATOR.fetch(url, init) };
    const { admitted } = await clientIpScenario({
      edge: (extra) => createTollgate(wasm, { ...base, ...extra }),
      guard: (extra) => guardHandler(() => new Response("origin"), { ...base, ...extra }),
      assert,
    });
    console.log(`clientIp: spoofing client admitted ${admitted} of 60`);
  },
};

// Tokens an identity provider signs (minted by jose in workerd.test.mjs,
// passed in JWT_CASES with the JWK Set): WebCrypto in workerd checks each
// once; each is then allowed from the cache; a tampered one is refused.
export const jwt = {
  async test(ctrl, env) {
    const { jwks, tokens } = JSON.parse(env.JWT_CASES);
    const edge = createTollgate(wasm, {
      edgeId: "wd-decisions", edgeKey: env.EDGE_KEY, coordinator: "http://coordinator",
      fetch: (url, init) => env.COORDINATOR.fetch(url, init), jwt: { jwks },
    });
    await edge.ready();
    assert.equal(await edge.sync(), true, `first sync: ${edge.lastSyncError}`);
    const req = (t) => ({ method: "GET", path: "/v1/items", host: "api.example", ip: "192.0.2.5", authorization: `Bearer ${t}` });
    for (const { alg, token } of tokens) {
      const first = edge.verify(req(token));
      assert.ok(first instanceof Promise, `${alg}: WebCrypto checks a new token asynchronously`);
      assert.equal((await first).kind, "allow", `${alg}: ${(await first).reason}`);
      const again = edge.verify(req(token));
      assert.ok(!(again instanceof Promise), `${alg}: the second time from the cache`);
      assert.equal(again.kind, "allow");
      const bad = token.slice(0, -6) + (token.at(-6) === "A" ? "B" : "A") + token.slice(-5);
      assert.equal((await edge.verify(req(bad))).reason, "invalid_token", `${alg}: tampered`);
    }
    assert.equal(await edge.sync(), true, `sync: ${edge.lastSyncError}`);
    console.log(`jwt: ${tokens.map((t) => t.alg).join(" ")} verified by WebCrypto in workerd`);
  },
};

export const decisions = {
  async test(ctrl, env) {
    const edge = createTollgate(wasm, {
      edgeId: "wd-decisions", edgeKey: env.EDGE_KEY, coordinator: "http://coordinator",
      fetch: (url, init) => env.COORDINATOR.fetch(url, init),
      jwt: { keys: [JWT_KEY] }, clearanceKeys: [CLEARANCE_KEY],
    });
    await decisionsScenario(edge, assert);
  },
};
