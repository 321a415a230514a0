// captcha.test.mjs — the Turnstile and hCaptcha verifiers of a real
// tollgated (coordinator/captcha.c, libcurl) against a local siteverify
// stand-in (siteverify.mjs) that honours the providers' published test
// keys: solved, refused, spent, a retried internal-error, a provider too
// slow, garbage, a 500, unreachable, and a response too long to send.
// Whatever the provider does, a challenge token is burnt only by a solve:
// after a 403 or 503 the same token still buys a clearance.
import assert from "node:assert/strict";
import http from "node:http";
import { test } from "node:test";
import {
  TEST_KEYS, encodeSync, freePort, postSync, protoFields, startRedis, startTollgated, syncStates, waitFor, writeKeys,
} from "./harness.mjs";
import { HCAPTCHA, TURNSTILE, startSiteverify } from "./siteverify.mjs";

const policy = (captcha) => ({
  version: 1, sync_interval_ms: 1000, clearance_ttl_s: 600, captcha,
  quotas: [{ name: "per-ip", key: "ip", limit: 2, window_s: 3600, action: "challenge", floor: 1 }],
});
const TS_POLICY = policy({ provider: "turnstile", site_key: TURNSTILE.siteKey });
const HC_POLICY = policy({ provider: "hcaptcha", site_key: HCAPTCHA.siteKey });

function keysWith(provider, secret) {
  return { ...TEST_KEYS, captcha: { provider, secret } };
}

let seq = 0;
// A fresh challenge token: a sync reporting key over its limit.
async function challengeToken(co, key) {
  seq++;
  const r = await postSync(co.url, encodeSync({ edgeId: "e1/captcha", seq, policyVersion: 1,
    counts: [{ quota: "per-ip", key, admitted: 5 }] }), {}, { edgeId: "e1/captcha" });
  assert.equal(r.status, 200);
  const [s] = syncStates(r.bytes);
  assert.equal(s.action, 1, "challenged");
  return s.token;
}

async function verify(co, token, response, remoteIp = "198.51.100.7", dispatcher = fetch) {
  const r = await dispatcher(`${co.url}/v1/challenge/verify`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ token, response, ...(remoteIp ? { remote_ip: remoteIp } : {}) }),
  });
  return { status: r.status, body: await r.json() };
}

// fetch's shape on a connection of its own (node:http, no agent).
function fresh(url, { method, headers, body }) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d) => { text += d; });
      res.on("end", () => resolve({ status: res.statusCode, json: async () => JSON.parse(text) }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

async function metric(co, line) {
  const text = await (await fetch(`${co.url}/metrics`)).text();
  const m = new RegExp(`^${line.replace(/[{}"=]/g, (c) => `\\${c}`)} (\\S+)$`, "m").exec(text);
  assert.ok(m, `${line} in /metrics`);
  return Number(m[1]);
}

// Coordinators sharing one Redis (so one's token is another's), each with
// its own Turnstile secret, all pointed at the stand-in.
async function turnstileStack(t, secrets, extraArgs = []) {
  const sv = await startSiteverify();
  const redis = await startRedis();
  const cos = {};
  for (const [name, secret] of Object.entries(secrets)) {
    cos[name] = await startTollgated({
      redisPort: redis.port, policy: TS_POLICY, keys: writeKeys({ keys: keysWith("turnstile", secret) }),
      args: ["--captcha-verify-url", sv.url(TURNSTILE.path), "--captcha-timeout-ms", "1000", ...extraArgs],
    });
  }
  t.after(async () => {
    for (const co of Object.values(cos)) await co.stop();
    await redis.stop();
    await sv.close();
  });
  return { sv, redis, cos };
}

test("turnstile: the test keys pass, fail and say spent; only a pass burns the token", async (t) => {
  const { sv, cos } = await turnstileStack(t, { pass: TURNSTILE.pass, fail: TURNSTILE.fail, spent: TURNSTILE.spent });
  const token = await challengeToken(cos.pass, "10.2.0.1");

  let r = await verify(cos.fail, token, TURNSTILE.dummyResponse);
  assert.equal(r.status, 403);
  assert.equal(r.body.detail, "captcha not solved");
  r = await verify(cos.spent, token, TURNSTILE.dummyResponse);
  assert.equal(r.status, 403);
  r = await verify(cos.pass, token, TURNSTILE.dummyResponse);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.quota, "per-ip");
  assert.match(r.body.cookie, /^tollgate_clearance=[\w-]+\.[\w-]+\.[\w-]+; Max-Age=600; /);
  r = await verify(cos.pass, token, TURNSTILE.dummyResponse);
  assert.equal(r.status, 409, "a solved token is spent");

  // What went over the wire: the documented form fields, nothing else.
  // The provider is asked before the nonce is burnt (a wrong answer must
  // not burn it), so the reuse was a call too (the stand-in's 1x secret
  // passes everything; the real one would say timeout-or-duplicate).
  assert.equal(sv.requests.length, 4);
  const last = sv.requests[2];
  assert.equal(last.path, TURNSTILE.path);
  assert.equal(last.contentType, "application/x-www-form-urlencoded");
  assert.deepEqual(Object.keys(last.form).sort(), ["idempotency_key", "remoteip", "response", "secret"]);
  assert.equal(last.form.secret, TURNSTILE.pass);
  assert.equal(last.form.response, TURNSTILE.dummyResponse);
  assert.equal(last.form.remoteip, "198.51.100.7");
  assert.equal(await metric(cos.pass, 'tollgate_captcha_verifications_total{result="solved"}'), 2);
  assert.equal(await metric(cos.fail, 'tollgate_captcha_verifications_total{result="refused"}'), 1);
  assert.equal(await metric(cos.fail, "tollgate_captcha_provider_up"), 1, "a refusal is an answer");
  for (const co of Object.values(cos)) {
    assert.ok(!co.proc.logs.includes(TURNSTILE.pass) && !co.proc.logs.includes(TURNSTILE.dummyResponse),
      "neither the secret nor the response is logged");
  }
});

test("turnstile: internal-error is retried once with the same idempotency_key", async (t) => {
  const { sv, cos } = await turnstileStack(t, { pass: TURNSTILE.pass });
  const token = await challengeToken(cos.pass, "10.2.0.2");
  sv.faults.push("internal-error");
  let r = await verify(cos.pass, token, TURNSTILE.dummyResponse);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(sv.requests.length, 2);
  const [a, b] = sv.requests;
  assert.match(a.form.idempotency_key, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(b.form.idempotency_key, a.form.idempotency_key);
  assert.equal(await metric(cos.pass, "tollgate_captcha_retries_total"), 1);
  assert.equal(a.form.remoteip, "198.51.100.7");

  // An address that is not one (a client-set header passed on) is left
  // out rather than sent for the provider to refuse as ours.
  const token3 = await challengeToken(cos.pass, "10.2.0.10");
  r = await verify(cos.pass, token3, TURNSTILE.dummyResponse, "203.0.113.1, 10.0.0.1");
  assert.equal(r.status, 200);
  assert.equal(sv.requests.at(-1).form.remoteip, undefined);
  r = await verify(cos.pass, await challengeToken(cos.pass, "10.2.0.11"), TURNSTILE.dummyResponse, "2001:db8::7");
  assert.equal(sv.requests.at(-1).form.remoteip, "2001:db8::7");

  // Twice in a row: 503, and the token is still good afterwards.
  const token2 = await challengeToken(cos.pass, "10.2.0.3");
  sv.faults.push("internal-error", "internal-error");
  r = await verify(cos.pass, token2, TURNSTILE.dummyResponse);
  assert.equal(r.status, 503);
  assert.equal(r.body.detail, "captcha verifier unavailable");
  const keys = sv.requests.slice(4).map((x) => x.form.idempotency_key);
  assert.equal(keys.length, 2);
  assert.notEqual(keys[0], a.form.idempotency_key, "a new key per verification");
  assert.equal(keys[0], keys[1]);
  r = await verify(cos.pass, token2, TURNSTILE.dummyResponse);
  assert.equal(r.status, 200, "the token was not burnt by the outage");
});

// Every error code the providers document, and what it must become.
const CODES = {
  403: ["missing-input-response", "invalid-input-response", "expired-input-response", "already-seen-response",
    "invalid-or-already-seen-response", "timeout-or-duplicate", "some-code-from-the-future"],
  503: ["missing-input-secret", "invalid-input-secret", "invalid-parsed-secret", "invalid-widget-id",
    "sitekey-secret-mismatch", "invalid-sitekey", "not-using-dummy-passcode", "missing-remoteip", "invalid-remoteip",
    "bad-request"],
};

test("every documented error code: the client's (403) or ours (503); neither spends the token", async (t) => {
  const { sv, cos } = await turnstileStack(t, { pass: TURNSTILE.pass });
  const token = await challengeToken(cos.pass, "10.2.0.9");
  for (const [status, codes] of Object.entries(CODES)) {
    for (const code of codes) {
      sv.faults.push(`codes:${code}`);
      const r = await verify(cos.pass, token, TURNSTILE.dummyResponse);
      assert.equal(r.status, Number(status), code);
    }
  }
  // Several codes at once: one of ours makes it ours.
  sv.faults.push("codes:invalid-input-response,invalid-input-secret");
  assert.equal((await verify(cos.pass, token, TURNSTILE.dummyResponse)).status, 503);
  assert.equal(await metric(cos.pass, 'tollgate_captcha_verifications_total{result="refused"}'), CODES[403].length);
  assert.equal(await metric(cos.pass, 'tollgate_captcha_verifications_total{result="misconfigured"}'), CODES[503].length + 1);
  assert.match(cos.pass.proc.logs, /msg=captcha_unknown_code code=some-code-from-the-future/);
  assert.equal((await verify(cos.pass, token, TURNSTILE.dummyResponse)).status, 200, "the token survived them all");
});

test("turnstile: slow, garbage, 500 and unreachable fail closed with 503; the token stays usable", async (t) => {
  const { sv, cos } = await turnstileStack(t, { pass: TURNSTILE.pass });
  const token = await challengeToken(cos.pass, "10.2.0.4");
  for (const fault of ["slow", "garbage", "http-500"]) {
    sv.faults.push(fault);
    const r = await verify(cos.pass, token, TURNSTILE.dummyResponse);
    assert.equal(r.status, 503, `${fault}: ${JSON.stringify(r.body)}`);
  }
  assert.equal(await metric(cos.pass, "tollgate_captcha_provider_up"), 0);
  assert.equal(await metric(cos.pass, 'tollgate_captcha_verifications_total{result="unreachable"}'), 3);
  assert.equal(await metric(cos.pass, 'tollgate_challenge_failures_total{reason="unavailable"}'), 3);
  await waitFor(() => /msg=captcha_provider_down provider=turnstile detail="?siteverify: Operation timed out/.test(cos.pass.proc.logs),
    { what: "the provider-down log line" });
  assert.equal(cos.pass.proc.logs.match(/msg=captcha_provider_down/g).length, 1, "one line per change of state");

  const r = await verify(cos.pass, token, TURNSTILE.dummyResponse);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(await metric(cos.pass, "tollgate_captcha_provider_up"), 1);
  await waitFor(() => /msg=captcha_provider_up provider=turnstile/.test(cos.pass.proc.logs), { what: "the provider-up log line" });

  // Over 2,048 characters: refused without asking the provider.
  const before = sv.requests.length;
  const token2 = await challengeToken(cos.pass, "10.2.0.5");
  const long = await verify(cos.pass, token2, "x".repeat(2049));
  assert.equal(long.status, 403);
  assert.equal(sv.requests.length, before);
  assert.equal((await verify(cos.pass, token2, "y".repeat(2048))).status, 200, "2,048 is allowed");
});

test("a slow provider holds at most half the HTTP workers; the rest answer 503 at once and syncs go on", async (t) => {
  // --threads 2: one verification may wait on the provider at a time.
  const { sv, cos } = await turnstileStack(t, { pass: TURNSTILE.pass }, ["--threads", "2"]);
  assert.match(cos.pass.proc.logs, /msg=captcha_verifier provider=turnstile .* max_inflight=1/);
  const token = await challengeToken(cos.pass, "10.2.0.7");
  sv.faults.push("slow");
  // Each on a new connection: a kept-alive one might belong to the waiting
  // worker, and would wait with it (docs/challenges.md).
  const waiting = verify(cos.pass, token, TURNSTILE.dummyResponse, undefined, fresh);
  await waitFor(() => sv.requests.length === 1, { what: "the first verification to reach the provider" });
  const second = await verify(cos.pass, token, TURNSTILE.dummyResponse, undefined, fresh);
  assert.equal(second.status, 503, "no worker left to wait: refused at once");
  const sync = await postSync(cos.pass.url, encodeSync({ edgeId: "e1/fresh", seq: 1, policyVersion: 1 }),
    { connection: "close" }, { edgeId: "e1/fresh" });
  assert.equal(sync.status, 200, "a sync still gets through");
  assert.equal((await waiting).status, 503, "the slow one timed out");
  assert.equal(sv.requests.length, 1, "the refused one never called the provider");
  await waitFor(() => /msg=challenge_verify outcome=unavailable .*detail="?1 captcha verifications already waiting on turnstile/.test(cos.pass.proc.logs),
    { what: "the refusal's log line" });
  assert.equal((await verify(cos.pass, token, TURNSTILE.dummyResponse)).status, 200);
});

test("turnstile: a provider nobody answers at is a 503, and the start says where it points", async (t) => {
  const redis = await startRedis();
  const dead = await freePort();
  const co = await startTollgated({
    redisPort: redis.port, policy: TS_POLICY,
    keys: writeKeys({ keys: keysWith("turnstile", TURNSTILE.pass) }),
    args: ["--captcha-verify-url", `http://127.0.0.1:${dead}/turnstile/v0/siteverify`],
  });
  t.after(async () => { await co.stop(); await redis.stop(); });
  assert.match(co.proc.logs, /msg=captcha_verifier provider=turnstile url=http:\/\/127\.0\.0\.1:\d+\/turnstile\/v0\/siteverify timeout_ms=1500/);
  const token = await challengeToken(co, "10.2.0.6");
  const r = await verify(co, token, TURNSTILE.dummyResponse);
  assert.equal(r.status, 503);
  await waitFor(() => /msg=captcha_provider_down provider=turnstile detail="?siteverify: .*(refused|connect)/i.test(co.proc.logs),
    { what: "the provider-down log line" });
});

test("hcaptcha: the test secret, site key and response pass; others are refused or misconfigured", async (t) => {
  const sv = await startSiteverify();
  const redis = await startRedis();
  const co = await startTollgated({
    redisPort: redis.port, policy: HC_POLICY,
    keys: writeKeys({ keys: keysWith("hcaptcha", HCAPTCHA.secret) }),
    args: ["--captcha-verify-url", sv.url(HCAPTCHA.path)],
  });
  t.after(async () => { await co.stop(); await redis.stop(); await sv.close(); });

  const token = await challengeToken(co, "10.3.0.1");
  let r = await verify(co, token, "20000000-aaaa-bbbb-cccc-000000000002");
  assert.equal(r.status, 403);
  r = await verify(co, token, HCAPTCHA.response, null);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const sent = sv.requests.at(-1).form;
  assert.deepEqual(Object.keys(sent).sort(), ["response", "secret", "sitekey"], "no remoteip when the edge sent none");
  assert.equal(sent.sitekey, HCAPTCHA.siteKey);
  assert.equal(sent.secret, HCAPTCHA.secret);

  // The site key in the policy is not the secret's: our configuration is
  // wrong, not the client's answer, so 503 and the provider marked down.
  const put = await fetch(`${co.url}/v1/policy`, {
    method: "PUT",
    headers: { "content-type": "application/json", authorization: "Bearer tg-test-admin-token-0123456789", "if-match": "\"1\"" },
    body: JSON.stringify({ ...HC_POLICY, version: undefined, captcha: { provider: "hcaptcha", site_key: "20000000-ffff-ffff-ffff-000000000002" } }),
  });
  assert.equal(put.status, 200, await put.text());
  const token2 = await challengeToken(co, "10.3.0.2");
  r = await verify(co, token2, HCAPTCHA.response);
  assert.equal(r.status, 503);
  assert.equal(sv.requests.at(-1).form.sitekey, "20000000-ffff-ffff-ffff-000000000002");
  assert.equal(await metric(co, 'tollgate_captcha_verifications_total{result="misconfigured"}'), 1);
  await waitFor(() => /msg=captcha_provider_down provider=hcaptcha detail="?sitekey-secret-mismatch/.test(co.proc.logs),
    { what: "the provider-down log line" });
});

test("policy: the captcha member is validated and reaches the edges' policy", async (t) => {
  const redis = await startRedis();
  const co = await startTollgated({ redisPort: redis.port, policy: TS_POLICY });
  t.after(async () => { await co.stop(); await redis.stop(); });
  const doc = await (await fetch(`${co.url}/v1/policy`, { headers: { authorization: "Bearer tg-test-read-token-0123456789" } })).json();
  assert.deepEqual(doc.captcha, { provider: "turnstile", site_key: TURNSTILE.siteKey });
  // An edge on another version gets the policy (SyncResponse field 6) with
  // its Captcha (Policy field 5): provider, site key; never the secret.
  const r = await postSync(co.url, encodeSync({ edgeId: "e1/p", seq: 1, policyVersion: 0 }), {}, { edgeId: "e1/p" });
  assert.equal(r.status, 200);
  const pol = protoFields(protoFields(r.bytes)[6][0]);
  const cap = protoFields(pol[5][0]);
  const td = new TextDecoder();
  assert.equal(td.decode(cap[1][0]), "turnstile");
  assert.equal(td.decode(cap[2][0]), TURNSTILE.siteKey);
  const bad = [
    [{ provider: "recaptcha", site_key: "x" }, "captcha.provider: must be turnstile, hcaptcha or static"],
    [{ provider: "turnstile" }, "captcha.site_key: required for turnstile"],
    [{ provider: "static", site_key: "k" }, "captcha.site_key: static has no widget"],
    [{ provider: "hcaptcha", site_key: "<script>" }, "captcha.site_key: only [A-Za-z0-9._-]"],
    [{ provider: "hcaptcha", site_key: "k", colour: 1 }, "captcha.colour: unknown field"],
  ];
  for (const [captcha, detail] of bad) {
    const r = await fetch(`${co.url}/v1/policy`, {
      method: "PUT",
      headers: { "content-type": "application/json", authorization: "Bearer tg-test-admin-token-0123456789", "if-match": "\"1\"" },
      body: JSON.stringify({ ...TS_POLICY, version: undefined, captcha }),
    });
    assert.equal(r.status, 400);
    const body = await r.json();
    assert.ok(JSON.stringify(body).includes(detail), `${JSON.stringify(captcha)}: ${JSON.stringify(body)}`);
  }
});
