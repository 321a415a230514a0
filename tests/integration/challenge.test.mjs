// challenge.test.mjs — the challenge round trip through the edge in a real
// browser: Debian's chromium (playwright-core) against the example edge in
// workerd (deploy/workerd/config.capnp, with edge-module/js/challenge.mjs),
// a real tollgated and redis-server, Turnstile's test keys, and the local
// siteverify stand-in, which also serves the stand-in widget script (the
// provider's cannot load here). A client over its limit gets the page with
// the widget; a refused answer shows it again with a message; the solved
// form posts through the edge, which answers 303 back to the page with the
// clearance cookie, and the origin answers. A spent token says so; a
// return path off the origin goes to "/".
import assert from "node:assert/strict";
import { test } from "node:test";
import { chromium } from "playwright-core";
import {
  TEST_KEYS, startExampleEdge, startRedis, startTollgated, waitFor, writeKeys,
} from "./harness.mjs";
import { TURNSTILE, startSiteverify } from "./siteverify.mjs";
import { captchaFromSync, challengePage, safeReturn } from "../../edge-module/js/challenge.mjs";

const CHROMIUM = process.env.TOLLGATE_CHROMIUM || "/usr/bin/chromium";
const HOT = "203.0.113.77";
const TTL = 600;
const POLICY = {
  version: 1, sync_interval_ms: 1000, clearance_ttl_s: TTL,
  captcha: { provider: "turnstile", site_key: TURNSTILE.siteKey },
  quotas: [{ name: "per-ip", key: "ip", limit: 3, window_s: 3600, path_prefix: "/api/", action: "challenge", floor: 1 }],
};

async function stack(t) {
  const sv = await startSiteverify();
  const redis = await startRedis();
  const co = await startTollgated({
    redisPort: redis.port, policy: POLICY,
    keys: writeKeys({ keys: { ...TEST_KEYS, captcha: { provider: "turnstile", secret: TURNSTILE.pass } } }),
    args: ["--captcha-verify-url", sv.url(TURNSTILE.path)],
  });
  const edge = await startExampleEdge(co.port, { TOLLGATE_CAPTCHA_SCRIPT_URL: sv.url(TURNSTILE.script) });
  const browser = await chromium.launch({
    executablePath: CHROMIUM, headless: true, chromiumSandbox: false,
    args: ["--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"],
  });
  t.after(async () => {
    await browser.close();
    await edge.stop();
    await co.stop();
    await redis.stop();
    await sv.close();
  });
  return { sv, co, edge, browser };
}

const get = (edge, p, headers = {}) => fetch(`${edge.url}${p}`, { headers: { "x-forwarded-for": HOT, ...headers }, redirect: "manual" });
const tokenIn = (html) => /name="tollgate-token" value="([^"]+)"/.exec(html)?.[1];

test("challenge: the widget, a refused answer, the solve through the edge, the cookie, the origin", async (t) => {
  const { sv, co, edge, browser } = await stack(t);

  // Over the limit: the edge learns it from the coordinator within a sync
  // or two (requests drive the background syncs).
  await waitFor(async () => {
    const r = await get(edge, "/api/warmup");
    return r.status === 429 && tokenIn(await r.text());
  }, { what: "the hot client to be challenged", stepMs: 200, timeoutMs: 20000 });

  const context = await browser.newContext({ extraHTTPHeaders: { "x-forwarded-for": HOT } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  let resp = await page.goto(`${edge.url}/api/hello?from=browser`);
  assert.equal(resp.status(), 429);
  assert.equal(resp.headers()["cache-control"], "no-store");
  // The policy's widget, its script (here the stand-in), rendered.
  await page.waitForSelector('.cf-turnstile[data-rendered] input[name="cf-turnstile-response"]', { state: "attached" });
  assert.equal(await page.getAttribute(".cf-turnstile", "data-sitekey"), TURNSTILE.siteKey);
  assert.equal(await page.getAttribute("script[src]", "src"), sv.url(TURNSTILE.script));
  assert.equal(await page.getAttribute("form", "action"), "/.well-known/tollgate/challenge");
  assert.equal(await page.inputValue('input[name="return"]'), "/api/hello?from=browser");
  const token = await page.inputValue('input[name="tollgate-token"]');
  assert.ok(token.length > 20);

  // The provider refuses this answer: the page again, a message, the same
  // (unspent) token.
  sv.faults.push("invalid-input-response");
  [resp] = await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
  assert.equal(resp.status(), 403);
  assert.match(await page.textContent("#tollgate-message"), /did not work/);
  assert.equal(await page.inputValue('input[name="tollgate-token"]'), token);

  // Solved: 303 to the page, with the cookie; the origin answers.
  await page.waitForSelector('.cf-turnstile[data-rendered] input[name="cf-turnstile-response"]', { state: "attached" });
  const posted = page.waitForResponse((r) => r.url().endsWith("/.well-known/tollgate/challenge"));
  [resp] = await Promise.all([page.waitForNavigation({ url: /\/api\/hello\?from=browser$/ }), page.click('button[type="submit"]')]);
  const post = await posted;
  assert.equal(post.status(), 303);
  assert.equal(post.headers().location, "/api/hello?from=browser");
  assert.equal(resp.status(), 200);
  assert.equal(JSON.parse(await page.textContent("body")).origin, "demo");
  const [cookie] = (await context.cookies()).filter((c) => c.name === "tollgate_clearance");
  assert.ok(cookie, "the clearance cookie is set");
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.secure, true);
  assert.equal(cookie.sameSite, "Lax");
  assert.equal(cookie.path, "/");
  const left = cookie.expires - Date.now() / 1000;
  assert.ok(left > TTL - 30 && left <= TTL + 1, `Max-Age ${left}`);
  // What the coordinator was asked to check, through the edge.
  const asked = sv.requests.at(-1).form;
  assert.equal(asked.response, TURNSTILE.dummyResponse);
  assert.equal(asked.remoteip, HOT);

  // The next request passes on the cookie.
  resp = await page.goto(`${edge.url}/api/again`);
  assert.equal(resp.status(), 200);
  assert.equal(JSON.parse(await page.textContent("body")).path, "/api/again");

  // The same token again: spent, and the page says so.
  const again = await fetch(`${edge.url}/.well-known/tollgate/challenge`, {
    method: "POST", redirect: "manual",
    headers: { "content-type": "application/x-www-form-urlencoded", "x-forwarded-for": HOT },
    body: new URLSearchParams({ "tollgate-token": token, "cf-turnstile-response": TURNSTILE.dummyResponse, return: "/api/x" }),
  });
  assert.equal(again.status, 409);
  assert.match(await again.text(), /already used/);
  assert.deepEqual(errors, []);
  assert.match(co.proc.logs, /msg=challenge_verify outcome=ok status=200 quota=per-ip/);
});

test("challenge: return must be a path on the edge's origin (safeReturn)", () => {
  const from = "https://shop.example/api/x";
  for (const [ret, want] of [
    ["/api/ok?q=1", "/api/ok?q=1"], ["/", "/"], ["/a/../b", "/b"],
    ["//evil.example/x", "/"], ["https://evil.example/", "/"], ["/\\evil.example", "/"], ["\\\\evil", "/"],
    ["javascript:alert(1)", "/"], ["", "/"], [undefined, "/"], ["api/relative", "/"],
  ]) assert.equal(safeReturn(ret, from), want, String(ret));
});

test("challenge: the page per provider (static keeps a plain form), escaped", async () => {
  const page = async (captcha) => (await challengePage({ token: "t\"<x>", ret: "/a?b=1&c=2", captcha })).text();
  const stat = await page({ provider: "static", siteKey: "" });
  assert.match(stat, /<input name="response" autocomplete="off" required>/);
  assert.doesNotMatch(stat, /<script/);
  assert.match(stat, /name="tollgate-token" value="t&#34;&#60;x&#62;"/);
  assert.match(stat, /name="return" value="\/a\?b=1&#38;c=2"/);
  assert.match(await page(null), /<input name="response"/, "no captcha in the policy: the plain form");
  const hc = await page({ provider: "hcaptcha", siteKey: "10000000-ffff-ffff-ffff-000000000001" });
  assert.match(hc, /<script src="https:\/\/js\.hcaptcha\.com\/1\/api\.js" async defer><\/script>/);
  assert.match(hc, /<div class="h-captcha" data-sitekey="10000000-ffff-ffff-ffff-000000000001"><\/div>/);
  const ts = await page({ provider: "turnstile", siteKey: TURNSTILE.siteKey });
  assert.match(ts, /<script src="https:\/\/challenges\.cloudflare\.com\/turnstile\/v0\/api\.js"/);
  assert.match(ts, /<div class="cf-turnstile" data-sitekey="1x00000000000000000000AA">/);
  const none = await (await challengePage({ token: "", ret: "/api/x", captcha: null })).text();
  assert.match(none, /reload this page in a moment/);
  assert.match(none, /<a href="\/api\/x">Back to the page<\/a>/);
  assert.doesNotMatch(none, /<form/);
  // Policy.captcha read from a SyncResponse: 6 { 5 { 1: provider, 2: key } }.
  const cap = Buffer.concat([Buffer.from([0x0a, 9]), Buffer.from("turnstile"), Buffer.from([0x12, 3]), Buffer.from("abc")]);
  const pol = Buffer.concat([Buffer.from([0x08, 7, 0x2a, cap.length]), cap]);
  const resp = Buffer.concat([Buffer.from([0x08, 1, 0x32, pol.length]), pol]);
  assert.deepEqual(captchaFromSync(resp), { provider: "turnstile", siteKey: "abc" });
  assert.equal(captchaFromSync(Buffer.from([0x08, 1])), undefined, "no policy: keep what the edge has");
  assert.equal(captchaFromSync(Buffer.from([0x32, 2, 0x08, 7])), null, "a policy without captcha");
});

test("challenge: through the edge, a return off the origin goes to /; the endpoint takes a POSTed form only", async (t) => {
  const { edge } = await stack(t);
  let token;
  await waitFor(async () => {
    const r = await get(edge, "/api/warmup");
    token = r.status === 429 && tokenIn(await r.text());
    return token;
  }, { what: "a challenge page", stepMs: 200, timeoutMs: 20000 });

  const post = await fetch(`${edge.url}/.well-known/tollgate/challenge`, {
    method: "POST", redirect: "manual",
    headers: { "content-type": "application/x-www-form-urlencoded", "x-forwarded-for": HOT },
    body: new URLSearchParams({ "tollgate-token": token, "cf-turnstile-response": TURNSTILE.dummyResponse, return: "//evil.example/x" }),
  });
  assert.equal(post.status, 303);
  assert.equal(post.headers.get("location"), "/");
  assert.match(post.headers.get("set-cookie"), /^tollgate_clearance=[\w-]+\.[\w-]+\.[\w-]+; Max-Age=600; Path=\/; HttpOnly; Secure; SameSite=Lax$/);

  const r = await fetch(`${edge.url}/.well-known/tollgate/challenge`);
  assert.equal(r.status, 405);
  assert.equal(r.headers.get("allow"), "POST");
  const bad = await fetch(`${edge.url}/.well-known/tollgate/challenge`, {
    method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "return=/",
  });
  assert.equal(bad.status, 400);
  assert.match(await bad.text(), /form was incomplete/);
});
