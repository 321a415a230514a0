// jwt.test.mjs — the edge in front of real identity providers' tokens, in
// Node, against a real redis-server and tollgated: tokens minted at test
// time by jose (npm) and by PyJWT (Debian's python3-jwt) for every
// algorithm tollgate verifies, with and without kid, accepted and counted
// under their own sub at the coordinator; the RFC 7515 A.2 (RS256), A.3
// (ES256) and RFC 8037 A.4 (Ed25519) vectors; and the refusals: alg none
// in every case, algorithm confusion, a wrong curve, short RSA, tampered
// signatures, exp, nbf, iss, aud, unknown kids, each with its reason.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createPrivateKey, generateKeyPairSync, sign as nodeSign } from "node:crypto";
import path from "node:path";
import { after, before, test } from "node:test";
import * as jose from "jose";
import { createTollgate } from "../../edge-module/js/tollgate.mjs";
import { ROOT, TEST_KEYS, loadWasm, redisCommand, startRedis, startTollgated } from "./harness.mjs";

const ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];
const HMAC = { HS256: "hs256-secret-0123456789abcdef0123456789", HS384: "hs384-secret-".padEnd(48, "x"),
  HS512: "hs512-secret-".padEnd(64, "y") };
const ISS = "https://idp.example/";
const AUD = "tollgate-api";

const POLICY = {
  version: 1, sync_interval_ms: 1000, expected_edges: 1,
  quotas: [
    { name: "per-sub", key: "claim:sub", path_prefix: "/v1/", limit: 10000, window_s: 60,
      action: "deny", floor: 10000, require_token: true },
    { name: "per-iss", key: "claim:iss", path_prefix: "/rfc/", limit: 10000, window_s: 60,
      action: "deny", floor: 10000, require_token: true },
    // Claim names identity providers use: Auth0's URL-named claims,
    // Cognito's custom:, a nested object.
    { name: "per-url-claim", key: 'claim:"https://tollgate.example/tenant"+claim:org.id', path_prefix: "/names/",
      limit: 10000, window_s: 60, action: "deny", floor: 10000, require_token: true },
    { name: "per-custom", key: "claim:custom:tenant", path_prefix: "/names/", limit: 10000, window_s: 60,
      action: "deny", floor: 10000 },
  ],
};

const te = new TextEncoder();
const b64u = (x) => Buffer.from(x).toString("base64url");
const req = (token, p = "/v1/items") =>
  ({ method: "GET", path: p, host: "api.example", ip: "192.0.2.9", authorization: `Bearer ${token}` });

let redis, co;
const priv = {}; // alg -> private CryptoKey
const jwks = { keys: [] };

before(async () => {
  redis = await startRedis();
  co = await startTollgated({ redisPort: redis.port, policy: POLICY });
  for (const alg of ALGS) {
    const { publicKey, privateKey } = await jose.generateKeyPair(alg, { extractable: true, crv: alg === "EdDSA" ? "Ed25519" : undefined });
    priv[alg] = privateKey;
    // As identity providers publish them: kid, alg, use.
    jwks.keys.push({ ...(await jose.exportJWK(publicKey)), kid: `kid-${alg}`, alg, use: "sig" });
  }
});
after(async () => {
  if (co) await co.stop();
  if (redis) await redis.stop();
});

function newEdge(edgeId, jwt) {
  return createTollgate(loadWasm(), { edgeId, edgeKey: TEST_KEYS.edge, coordinator: co.url, jwt });
}

// webCrypto: check signatures with WebCrypto (as in workerd) rather than
// node:crypto (the glue's choice in Node).
const idpEdge = (edgeId, webCrypto = false) => newEdge(edgeId, {
  jwks, issuer: ISS, audience: AUD, webCrypto,
  keys: Object.entries(HMAC).map(([alg, secret]) => ({ kid: `kid-${alg}`, secret, alg })),
});

// Decides a request, awaiting the signature check when the edge asks for one.
const decide = async (edge, token, p) => await edge.verify(req(token, p));

async function joseToken(alg, claims, { kid = `kid-${alg}`, exp = "10m", header = {} } = {}) {
  const key = HMAC[alg] ? te.encode(HMAC[alg]) : priv[alg];
  let t = new jose.SignJWT(claims).setProtectedHeader({ alg, ...(kid ? { kid } : {}), ...header })
    .setIssuer(ISS).setAudience(AUD).setIssuedAt();
  if (exp) t = t.setExpirationTime(exp);
  return t.sign(key);
}

// The global count of (quota, key), read from Redis (whose key names
// escape "%" and "|" in the key once more).
async function counted(quota, key) {
  const k = key.replace(/%/g, "%25").replace(/\|/g, "%7C");
  return Number(await redisCommand(redis.port, "HGET", `tg:{${quota}|${k}}:c`, "t"));
}

for (const webCrypto of [false, true]) {
  const how = webCrypto ? "WebCrypto" : "node:crypto";
  test(`jose: every algorithm, with and without kid, accepted and counted under its sub (${how})`, async () => {
    const edge = idpEdge(webCrypto ? "e2" : "e1", webCrypto);
    assert.equal(await edge.sync(), true, `first sync: ${edge.lastSyncError}`);
    await edge.ready();
    const expect = new Map();
    for (const alg of [...ALGS, ...Object.keys(HMAC)]) {
      for (const kid of [`kid-${alg}`, null]) {
        const sub = `jose-${how}-${alg}-${kid ? "kid" : "nokid"}`;
        const token = await joseToken(alg, { sub, tenant: "t1" }, { kid });
        const first = edge.verify(req(token));
        // HS256 is the core's own; node:crypto answers in the same turn;
        // WebCrypto's answer is a promise, the first time a token is seen.
        assert.equal(first instanceof Promise, webCrypto && alg !== "HS256", `${alg}: asynchronous only with WebCrypto`);
        const d = await first;
        assert.equal(d.kind, "allow", `${alg} ${kid}: ${d.reason}`);
        const again = edge.verify(req(token));
        assert.equal(again instanceof Promise, false, `${alg}: a repeated token is decided from the cache`);
        assert.equal(again.kind, "allow");
        expect.set(sub, 2);
      }
    }
    assert.equal(await edge.sync(), true, `sync: ${edge.lastSyncError}`);
    for (const [sub, n] of expect) assert.equal(await counted("per-sub", sub), n, `counted under ${sub}`);
  });
}

test("PyJWT: every algorithm, fractional exp, with and without kid, accepted and counted under its sub", async () => {
  const edge = idpEdge("edge-local-1");
  assert.equal(await edge.sync(), true, `first sync: ${edge.lastSyncError}`);
  await edge.ready();
  const jobs = [];
  for (const alg of [...ALGS, ...Object.keys(HMAC)]) {
    const key = HMAC[alg] ?? await jose.exportPKCS8(priv[alg]);
    for (const kid of [`kid-${alg}`, null]) {
      jobs.push({ alg, key, kid, exp_in: 600,
        claims: { sub: `py-${alg}-${kid ? "kid" : "nokid"}`, iss: ISS, aud: AUD, iat: Math.floor(Date.now() / 1000) } });
    }
  }
  const tokens = JSON.parse(execFileSync("/usr/bin/python3",
    [path.join(ROOT, "tests/integration/pyjwt_mint.py")], { input: JSON.stringify(jobs) }).toString());
  assert.equal(tokens.length, jobs.length);
  for (let i = 0; i < tokens.length; i++) {
    const payload = JSON.parse(Buffer.from(tokens[i].split(".")[1], "base64url"));
    assert.ok(!Number.isInteger(payload.exp), "PyJWT wrote a fractional exp");
    const d = await decide(edge, tokens[i]);
    assert.equal(d.kind, "allow", `${jobs[i].alg} kid=${jobs[i].kid}: ${d.reason}`);
  }
  assert.equal(await edge.sync(), true, `sync: ${edge.lastSyncError}`);
  for (const j of jobs) assert.equal(await counted("per-sub", j.claims.sub), 1, `counted under ${j.claims.sub}`);
});

test("claim names of any characters and nested claims key the counts", async () => {
  const edge = idpEdge("edge-b");
  assert.equal(await edge.sync(), true, `first sync: ${edge.lastSyncError}`);
  const token = await joseToken("HS256", { "https://tollgate.example/tenant": "acme|east", org: { id: 42, name: "x" },
    "custom:tenant": "t-7" });
  assert.equal((await decide(edge, token, "/names/a")).kind, "allow");
  assert.equal((await decide(edge, token, "/names/b")).kind, "allow");
  // Without the nested claim the first quota has no key: not counted.
  const partial = await joseToken("HS256", { "https://tollgate.example/tenant": "acme|east", "custom:tenant": "t-7" });
  assert.equal((await decide(edge, partial, "/names/c")).kind, "allow");
  assert.equal(await edge.sync(), true, `sync: ${edge.lastSyncError}`);
  // Part values joined by "|", a "|" inside one escaped as %7C.
  assert.equal(await counted("per-url-claim", "acme%7Ceast|42"), 2);
  assert.equal(await counted("per-custom", "t-7"), 3);
});

// RFC 7515 A.1's claims (iss "joe", exp 1300819380, in 2011): the edge
// for the vectors allows that much leeway, and keys on iss.
const RFC_PAYLOAD = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
// RFC 7515 A.2: RS256 with the RFC 7517 A.1 key.
const A2_TOKEN = `eyJhbGciOiJSUzI1NiJ9.${RFC_PAYLOAD}.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw`;
const A2_JWK = { kty: "RSA", alg: "RS256", kid: "2011-04-29", e: "AQAB",
  n: "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ" };
// RFC 7515 A.3: ES256 on P-256.
const A3_TOKEN = `eyJhbGciOiJFUzI1NiJ9.${RFC_PAYLOAD}.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q`;
const A3_JWK = { kty: "EC", crv: "P-256", x: "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", y: "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" };
// RFC 8037 A.1-A.4: Ed25519 signing "Example of Ed25519 signing".
const A4_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const A4_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const A4_TOKEN = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

test("RFC 7515 A.2 (RS256), A.3 (ES256), RFC 8037 A.4 (Ed25519)", async () => {
  const leeway = Math.ceil(Date.now() / 1000) - 1300819380 + 3600;
  const edge = newEdge("edge", { jwks: { keys: [A2_JWK, A3_JWK, { kty: "OKP", crv: "Ed25519", x: A4_X }] }, leewaySeconds: leeway });
  assert.equal(await edge.sync(), true, `first sync: ${edge.lastSyncError}`);
  await edge.ready();
  // A.2: the JWK carries a kid the token does not name: tried by alg.
  const a2 = await decide(edge, A2_TOKEN, "/rfc/a2");
  assert.equal(a2.kind, "allow", a2.reason);
  const a3 = await decide(edge, A3_TOKEN, "/rfc/a3");
  assert.equal(a3.kind, "allow", a3.reason);
  // One signature bit off, and neither passes.
  const flip = (t) => t.slice(0, -5) + (t.at(-5) === "A" ? "B" : "A") + t.slice(-4);
  assert.equal((await decide(edge, flip(A2_TOKEN), "/rfc/a2")).reason, "invalid_token");
  assert.equal((await decide(edge, flip(A3_TOKEN), "/rfc/a3")).reason, "invalid_token");

  // A.4 signs a sentence, not a claims set: the signature is the RFC's
  // (Ed25519 is deterministic: the RFC key signs its input to exactly
  // this), and the edge refuses the token for its payload.
  const key = createPrivateKey({ key: { kty: "OKP", crv: "Ed25519", d: A4_D, x: A4_X }, format: "jwk" });
  const [h, p, s] = A4_TOKEN.split(".");
  assert.equal(b64u(nodeSign(null, Buffer.from(`${h}.${p}`), key)), s);
  assert.equal((await decide(edge, A4_TOKEN, "/rfc/a4")).reason, "invalid_token");
  // The same key signing a claims set: accepted.
  const claims = b64u(JSON.stringify({ iss: "ed25519-rfc8037" }));
  const t = `${h}.${claims}.${b64u(nodeSign(null, Buffer.from(`${h}.${claims}`), key))}`;
  assert.equal((await decide(edge, t, "/rfc/a4")).kind, "allow");

  assert.equal(await edge.sync(), true, `sync: ${edge.lastSyncError}`);
  assert.equal(await counted("per-iss", "joe"), 2, "A.2 and A.3 counted under iss joe (a forgery has no claims to key on)");
  assert.equal(await counted("per-iss", "ed25519-rfc8037"), 1);
});

for (const webCrypto of [false, true]) test(`refused: alg none, confusion, wrong curve, short RSA, tampering, exp, nbf, iss, aud, unknown kid (${webCrypto ? "WebCrypto" : "node:crypto"})`, async () => {
  const edge = idpEdge(webCrypto ? "wd-edge-a" : "edge-a", webCrypto);
  assert.equal(await edge.sync(), true, `first sync: ${edge.lastSyncError}`);
  await edge.ready();
  const refused = async (token, reason, what) => {
    const d = await decide(edge, token);
    assert.deepEqual([d.kind, d.reason, d.status], ["deny", reason, 401], what);
  };
  const good = await joseToken("RS256", { sub: "mallory" });
  const [, payload] = good.split(".");
  const hdr = (h) => b64u(JSON.stringify(h));

  for (const alg of ["none", "None", "NONE", "nOnE"]) {
    await refused(`${hdr({ alg, kid: "kid-RS256" })}.${payload}.`, "unsupported_alg", `alg ${alg}, no signature`);
    await refused(`${hdr({ alg })}.${payload}.${good.split(".")[2]}`, "unsupported_alg", `alg ${alg}`);
  }
  const hs256 = async (header, secret) => {
    const input = `${hdr(header)}.${payload}`;
    const key = await crypto.subtle.importKey("raw", te.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    return `${input}.${b64u(await crypto.subtle.sign("HMAC", key, te.encode(input)))}`;
  };
  await refused(await hs256({ alg: "hs256", kid: "kid-HS256" }, HMAC.HS256), "unsupported_alg", "hs256");
  assert.equal((await decide(edge, await hs256({ alg: "HS256", kid: "kid-HS256" }, HMAC.HS256))).kind, "allow",
    "the same token spelled HS256 passes");

  // Confusion: the RSA public key as an HMAC secret, under its kid or none.
  const rsaPub = jwks.keys.find((k) => k.kid === "kid-RS256");
  for (const secret of [JSON.stringify(rsaPub), rsaPub.n]) {
    await refused(await hs256({ alg: "HS256", kid: "kid-RS256" }, secret), "invalid_token", "HS256 under an RSA kid");
    await refused(await hs256({ alg: "HS256" }, secret), "invalid_token", "HS256 signed with an RSA public key, no kid");
  }
  // An ES256 token under the RSA kid, and an ES256 signature made on P-384.
  await refused(await joseToken("ES256", { sub: "x" }, { kid: "kid-RS256" }), "invalid_token", "ES256 under an RSA kid");
  const p384 = (await jose.generateKeyPair("ES384")).privateKey;
  const wrongCurve = await new jose.SignJWT({ sub: "x", iss: ISS, aud: AUD }).setProtectedHeader({ alg: "ES384", kid: "kid-ES256" }).sign(p384);
  await refused(wrongCurve, "invalid_token", "ES384 under the P-256 key's kid");
  const forged384 = wrongCurve.split(".");
  await refused(`${hdr({ alg: "ES256", kid: "kid-ES256" })}.${forged384[1]}.${forged384[2]}`, "invalid_token", "a P-384 signature as ES256");

  // Tampering: a signature bit, the payload, the header's kid.
  const [h, p, s] = good.split(".");
  await refused(`${h}.${p}.${s.slice(0, 10)}${s[10] === "A" ? "B" : "A"}${s.slice(11)}`, "invalid_token", "signature");
  await refused(`${h}.${b64u(JSON.stringify({ sub: "admin", iss: ISS, aud: AUD }))}.${s}`, "invalid_token", "payload");
  await refused(`${hdr({ alg: "RS256", kid: "kid-RS384" })}.${p}.${s}`, "invalid_token", "another RSA kid");

  // Claims.
  await refused(await joseToken("ES256", { sub: "x" }, { exp: Math.floor(Date.now() / 1000) - 3600 }), "token_expired", "exp");
  const early = await new jose.SignJWT({ sub: "x" }).setProtectedHeader({ alg: "EdDSA", kid: "kid-EdDSA" })
    .setIssuer(ISS).setAudience(AUD).setNotBefore("1h").sign(priv.EdDSA);
  await refused(early, "token_expired", "nbf");
  const wrong = (iss, aud) => new jose.SignJWT({ sub: "x" }).setProtectedHeader({ alg: "PS256", kid: "kid-PS256" })
    .setIssuer(iss).setAudience(aud).setExpirationTime("5m").sign(priv.PS256);
  await refused(await wrong("https://evil.example/", AUD), "invalid_token", "iss");
  await refused(await wrong(ISS, "someone-else"), "invalid_token", "aud");

  // Rotation a key has not reached yet, and algorithms nobody configured.
  await refused(await joseToken("RS256", { sub: "x" }, { kid: "kid-next" }), "unknown_kid", "unknown kid");
  // The host can tell them apart in its own metrics.
  const stats = edge.reasonStats();
  assert.equal(stats.unsupported_alg, 9, "4 none spellings twice, and hs256");
  assert.equal(stats.unknown_kid, 1);
  assert.equal(stats.token_expired, 2);
  assert.ok(stats.invalid_token >= 10 && stats.none >= 1, JSON.stringify(stats));
  const edgeRsOnly = newEdge(webCrypto ? "wd-edge-b" : "e1", { jwks: { keys: [rsaPub] }, webCrypto });
  assert.equal(await edgeRsOnly.sync(), true);
  const d = await edgeRsOnly.verify(req(await joseToken("ES256", { sub: "x" }, { kid: null })));
  assert.deepEqual([d.kind, d.reason], ["deny", "unknown_kid"], "no key of the token's alg");

  // Keys the glue refuses at load.
  // (jose will not make one; Node's crypto will.)
  const short = generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey.export({ format: "jwk" });
  const load = (keys) => () => newEdge("edge", { jwks: { keys }, webCrypto });
  assert.throws(load([{ ...short, alg: "RS256", kid: "short" }]), /1024 bits is too short/);
  assert.throws(load([{ ...rsaPub, alg: undefined }]), /RSA key needs "alg"/);
  const es256 = jwks.keys.find((k) => k.kid === "kid-ES256");
  assert.throws(load([{ ...es256, alg: "ES384" }]), /ES384 needs kty "EC" on curve P-384/);
  assert.throws(load([{ ...jwks.keys.find((k) => k.kid === "kid-EdDSA"), crv: "Ed448" }]), /Ed25519 only/);
  assert.throws(load([{ ...es256, alg: "ES512" }]), /not one tollgate verifies/);
  assert.throws(load([{ ...es256, alg: "none" }]), /not one tollgate verifies/);
  // Encryption keys are skipped, not refused.
  assert.doesNotThrow(load([{ ...rsaPub, use: "enc", alg: "RSA-OAEP" }]));
});
