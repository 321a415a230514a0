#!/usr/bin/env python3
"""make_corpus.py — writes the seed corpora of the libFuzzer targets:
tests/fuzz/corpus/verify/ (fuzz_verify.c's input format) and
tests/fuzz/corpus/sync_response/ (fuzz_sync_response.c's), and the
coordinator's: tests/fuzz/corpus/sync/, admin/ and challenge/ (fuzz_sync.c,
fuzz_admin.c, fuzz_challenge.c). Standard library
only; run from the repository root: python3 tests/fuzz/make_corpus.py"""
import base64
import hashlib
import hmac
import json
import os
import struct

JWT_SECRET = b"fuzz-jwt-secret"
CLR_SECRET = b"fuzz-clearance-secret"
NOW_S = 1700000000
HERE = os.path.dirname(os.path.abspath(__file__))


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jws(header, payload, secret):
    h = header if isinstance(header, str) else json.dumps(header, separators=(",", ":"))
    p = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    signing = b64(h.encode()) + "." + b64(p.encode())
    return signing + "." + b64(hmac.new(secret, signing.encode(), hashlib.sha256).digest())


def jwt(payload, kid="k1"):
    hdr = {"alg": "HS256", "typ": "JWT"}
    if kid is not None:
        hdr["kid"] = kid
    return jws(hdr, payload, JWT_SECRET)


def clearance(quota, key, exp):
    kh = b64(hashlib.sha256(quota.encode() + b"\n" + key.encode()).digest()[:16])
    return jws({"alg": "HS256", "kid": "c1"}, {"q": quota, "kh": kh, "exp": exp, "iat": NOW_S},
               CLR_SECRET)


def request(dt=1, method="GET", path="/", host="example.com", ip="192.0.2.1", auth="",
            cookie="", ua="", apikey=""):
    out = bytes([dt])
    for f in (method, path, host, ip, auth, cookie, ua, apikey):
        b = f.encode("latin-1") if isinstance(f, str) else f
        out += struct.pack("<H", len(b)) + b
    return out


GOOD = {"iss": "https://issuer.example", "aud": "api", "sub": "alice", "tenant": "acme",
        "exp": NOW_S + 10**6, "iat": NOW_S}

VERIFY = {
    "plain": (0, [request(), request(path="/api/x", ip="2001:db8::1")]),
    "jwt": (1, [request(path="/api/v1", auth="Bearer " + jwt(GOOD), ua="curl/8", apikey="k-1"),
                request(path="/api/v1", auth="Bearer " + jwt(GOOD), ua="curl/8", apikey="k-1")]),
    "jwt_nokid": (1, [request(path="/api/v1", auth="Bearer " + jwt(dict(GOOD, tenant=42), kid=None))]),
    "jwt_aud_array": (1, [request(path="/api/", auth="Bearer " + jwt(dict(GOOD, aud=["web", "api"])))]),
    "jwt_escapes": (1, [request(path="/api/", auth="Bearer " + jws(
        '{"alg":"HS\\u0032\\u00356","kid":"k1"}',
        '{"iss":"https:\\/\\/issuer.example","aud":"api","sub":"\\u00e9\\ud83d\\ude00|%","nbf":1}',
        JWT_SECRET))]),
    "jwt_expired": (1, [request(path="/api/", auth="Bearer " + jwt(dict(GOOD, exp=NOW_S - 3600)))]),
    "jwt_none": (0, [request(path="/api/", auth="Bearer " + b64(b'{"alg":"none"}') + "." +
                             b64(json.dumps(GOOD).encode()) + ".")]),
    "jwt_dup_alg": (1, [request(path="/api/", auth="Bearer " + jws(
        '{"alg":"HS256","alg":"HS256"}', json.dumps(GOOD), JWT_SECRET))]),
    "jwt_crit": (1, [request(path="/api/", auth="Bearer " + jws(
        '{"alg":"HS256","crit":["exp"]}', json.dumps(GOOD), JWT_SECRET))]),
    "jwt_nested": (1, [request(path="/api/", auth="Bearer " + jwt(dict(
        GOOD, extra={"a": [1, 2.5e3, True, None, {"b": "c"}]}, n=-0.5)))]),
    # Host keys (fuzz_verify.c: r1 RS256, e1 ES256): the core asks for the
    # signature; flags bits 2..4 give the verdict.
    "jwt_rs256": (4 * 3, [request(path="/api/v1", auth="Bearer " + b64(b'{"alg":"RS256","kid":"r1"}') + "." +
                                      b64(json.dumps(dict(GOOD, org={"id": 7})).encode()) + "." + b64(bytes(range(256))))]),
    "jwt_es256_nokid": (4 * 4, [request(path="/api/v1", auth="Bearer " + b64(b'{"alg":"ES256"}') + "." +
                                            b64(json.dumps(GOOD).encode()) + "." + b64(bytes(64)))]),
    "missing_token": (0, [request(path="/api/x"), request(path="/api/x", auth="Basic eDp5")]),
    "clearance": (2, [request(ip="1.2.3.4"),
                      request(ip="1.2.3.4", cookie="a=b; tollgate_clearance=" +
                              clearance("ip", "1.2.3.4", NOW_S + 600) + "; c=d")]),
    "clearance_expired": (2, [request(ip="1.2.3.4", cookie="tollgate_clearance=" +
                                      clearance("ip", "1.2.3.4", NOW_S - 600))]),
    "headers": (0, [request(method="POST", ua="Mozilla/5.0 " + "x" * 200, apikey="a|b%c"),
                    request(dt=200, ua="", apikey="k")]),
    "bad_features": (0, [request(ip=""), request(ip="~overflow"), request(ip="1.2\x00.3"),
                         request(host="", path="")]),
}


def varint(v):
    out = b""
    while v >= 0x80:
        out += bytes([(v & 0x7F) | 0x80])
        v >>= 7
    return out + bytes([v])


def field(num, v):
    if isinstance(v, bool):
        v = int(v)
    if isinstance(v, int):
        return varint(num << 3) + varint(v)
    if isinstance(v, float):
        return varint(num << 3 | 1) + struct.pack("<d", v)
    if isinstance(v, str):
        v = v.encode()
    return varint(num << 3 | 2) + varint(len(v)) + v


def message(*fields):
    return b"".join(field(n, v) for n, v in fields if v not in (None, 0, "", b"", False))


def quota(name, key, prefix="", floor=1, methods=(), action=1, shadow=False, fail_open=False,
          deny_after=0.0, require_token=False, limit=100, window=60):
    return message((1, name), (2, limit), (3, window), (4, key), (5, prefix)) + \
        b"".join(field(6, m) for m in methods) + \
        message((7, action), (8, floor), (9, shadow), (10, fail_open)) + \
        (field(11, deny_after) if deny_after else b"") + message((12, require_token))


def policy(version, quotas, interval=0, ttl=0):
    return message((1, version), (3, interval), (4, ttl)) + b"".join(field(2, q) for q in quotas)


def state(quota_name, key, action=0, lease=0, reset=0, token="", count=0):
    return message((1, quota_name), (2, key), (3, action), (4, lease), (5, reset), (6, token),
                   (7, count))


def response(acked=0, next_ms=0, states=(), degraded=False, version=0, pol=None, server=0):
    out = message((1, acked), (2, next_ms))
    out += b"".join(field(3, s) for s in states)
    out += message((4, degraded), (5, version))
    if pol is not None:
        out += field(6, pol)
    return out + message((7, server))


BIG = policy(9, [
    quota("ip", "ip", floor=2),
    quota("hdr", "header:x-k+route", floor=1),
    quota("user", "claim:sub+ip", "/api/", 5, ("GET", "post"), 2, require_token=True),
    quota("tenant", "claim:tenant+header:x-api-key+host", shadow=True, deny_after=2.5),
    quota("bad", "ip+geo:country"),
    quota("ro", "route", "/a", fail_open=True, limit=0),
], interval=500, ttl=300)

SYNC = {
    "ack": (1, b""),
    "policy_states": (3, response(next_ms=700, version=9, pol=BIG, server=NOW_S * 1000, states=[
        state("ip", "10.70", 1, 0, 30000, "captcha-token"),
        state("ip", "10.41", 2, 0, 60000),
        state("ip", "10.0", 0, 50),
        state("hdr", "v|/a", 0, 10, 0, "", 99),
    ])),
    "degraded": (1, response(degraded=True, states=[state("ip", "10.70", 0, 0)])),
    "drop_quota": (3, response(version=4, pol=policy(4, [quota("hdr", "header:x-k+route")]))),
    "same_policy_new_template": (1, response(version=5, pol=policy(5, [
        quota("ip", "ip+host"), quota("hdr", "header:x-k+route")]))),
    "too_many_quotas": (1, response(version=6, pol=policy(6, [
        quota("q%d" % i, "ip") for i in range(33)]))),
    "unknown_fields": (1, field(15, 7) + field(16, b"xyz") + response(next_ms=5) +
                       varint(17 << 3 | 5) + b"\x01\x02\x03\x04"),
    # Policy.captcha (5): the glue reads it, the edge core skips it.
    "policy_captcha": (1, response(version=7, pol=policy(7, [quota("ip", "ip")]) +
                                   field(5, message((1, "turnstile"), (2, "1x00000000000000000000AA"))))),
    "wrong_seq": (0, response(acked=99)),
    "truncated": (0, response(version=9, pol=BIG)[:40]),
}


def key_count(quota, key, admitted=0, denied=0, challenged=0):
    return message((1, quota), (2, key), (3, admitted), (4, denied), (5, challenged))


def sync_request(edge="e1", seq=1, sent=0, version=0, module="", counts=()):
    return message((1, edge), (2, seq), (3, sent), (4, version), (5, module)) + \
        b"".join(field(6, c) for c in counts)


# fuzz_sync.c: flags byte (bits 0-1: applied, replayed, conflict, Redis down)
# then the SyncRequest the target signs as edge e1.
CO_SYNC = {
    "empty_batch": (0, sync_request(seq=1)),
    "counts": (0, sync_request(seq=7, sent=NOW_S * 1000, version=3, module="0.1", counts=[
        key_count("ip", "10.0.0.1", 5, 1, 0), key_count("ip", "10.0.0.9", 9, 0, 2),
        key_count("login", "10.0.0.1", 1), key_count("nope", "x", 1)])),
    "duplicates": (4, sync_request(seq=8, counts=[key_count("ip", "k", 1)] * 3)),
    "replayed": (1, sync_request(seq=2, counts=[key_count("ip", "k", 1)])),
    "conflict": (2, sync_request(seq=3, counts=[key_count("ip", "k", 1)])),
    "redis_down": (3, sync_request(seq=4, counts=[key_count("ip", "k", 1)])),
    "nul_in_key": (0, sync_request(seq=5, counts=[key_count("ip", "k\0x", 1)])),
    "other_edge": (0, sync_request(edge="e2", seq=5)),
    "huge_counts": (0, sync_request(seq=2**64 - 1, counts=[
        key_count("ip", "k", 10**12, 10**12, 10**12)])),
    "truncated": (0, sync_request(seq=9, counts=[key_count("ip", "k", 1)])[:-3]),
}

# fuzz_admin.c: byte 0 = route (bits 0-2: /v1/policy, /v1/quotas/ip,
# /v1/quotas/new-q, overrides of ip/10.0.0.9, of login/k%2F1, rollback, ...)
# + If-Match (bits 3-4: none, "3", "2", *), then the body.
QUOTA = {"key": "ip", "limit": 50, "window_s": 60, "action": "deny"}
CO_ADMIN = {
    "policy_put": (0 | 1 << 3, {"version": 1, "quotas": [dict(QUOTA, name="a")]}),
    "policy_put_stale": (0 | 2 << 3, {"version": 1, "quotas": []}),
    "quota_put": (1, QUOTA),
    "quota_new": (2 | 1 << 3, dict(QUOTA, burst=10, floor=2, methods=["GET"],
                                   path_prefix="/api/", fail_open=True)),
    "quota_bad": (2, dict(QUOTA, limit=-1, extra=1)),
    "override_put": (3, {"limit": 9}),
    "override_escaped": (4, {"limit": 1}),
    "rollback": (5 | 1 << 3, {"to": 2}),
    "rollback_bad": (5, {"to": "x"}),
    "nul_in_json": (1, b'{"key": "ip\\u0000", "limit": 5, "window_s": 60}'),
    "not_json": (1, b"{"),
    # regression: a 400 whose detail quoted the body's bytes cut inside a
    # UTF-8 sequence went out with no body (fuzz_admin, 10M run)
    "detail_cut_utf8": (1, b'{"key":"claim:dove-aa.aode-adv.a.aroiveeendav\xd2\x9e\xd2\xa7'
                           b'a.droivec_eseiovl+"}'),
}


def challenge_payload(quota="ip", kid="c1", issued=NOW_S, expires=NOW_S + 10**9,
                      kh=b"\x11" * 16, nonce=b"\x22" * 16, version=2):
    return bytes([version, len(kid)]) + kid.encode() + bytes([len(quota)]) + \
        quota.encode() + kh + struct.pack(">QQ", issued, expires) + nonce


# fuzz_challenge.c: flags (bit 0: the rest is a payload to sign, else a
# body; bit 1: captcha solved; bit 2: nonce already burnt), then bytes.
CO_CHALLENGE = {
    "solved": (1 | 2, challenge_payload()),
    "reused": (1 | 2 | 4, challenge_payload()),
    "unsolved": (1, challenge_payload(quota="q" * 64)),
    "expired": (1 | 2, challenge_payload(expires=NOW_S - 1)),
    "other_kid": (1 | 2, challenge_payload(kid="c2")),
    "version1": (1 | 2, challenge_payload(version=1)),
    # regression: a signed token whose quota is not a quota name (a NUL and
    # a non-UTF-8 byte) made verify answer 500 instead of 403
    "quota_not_a_name": (1 | 2, challenge_payload(quota="i\0\x8d")),
    "body_forged": (2, json.dumps({"token": b64(challenge_payload()) + "." + b64(b"\0" * 32),
                                   "response": "x"}).encode()),
    "body_extra": (0, b'{"token": "a.b", "response": "r", "x": 1}'),
    "body_types": (0, b'{"token": 1, "response": null}'),
    # regression: jansson's error text quoting bytes that are not UTF-8
    # made the 400 bodiless (fuzz_challenge, 10M run)
    "body_bad_utf8": (2, b'{"tok\\\xd3\xb8\xcb\xfd\x7f\x00\x00en": trueA__", "response":""}'),
}


def write(dirname, name, data):
    d = os.path.join(HERE, "corpus", dirname)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    for name, (flags, reqs) in VERIFY.items():
        write("verify", name, bytes([flags]) + b"".join(reqs))
    for name, (flags, body) in SYNC.items():
        write("sync_response", name, bytes([flags]) + body)
    for name, (flags, body) in CO_SYNC.items():
        write("sync", name, bytes([flags]) + body)
    for name, (sel, body) in CO_ADMIN.items():
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        write("admin", name, bytes([sel]) + body)
    for name, (flags, body) in CO_CHALLENGE.items():
        write("challenge", name, bytes([flags]) + body)


if __name__ == "__main__":
    main()
