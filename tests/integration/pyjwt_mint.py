#!/usr/bin/python3
"""pyjwt_mint.py — mints JWTs with PyJWT (Debian's python3-jwt) for
jwt.test.mjs, so the edge is tested against a second, independent JOSE
implementation. Reads a JSON list on stdin, one entry per token:
{"alg": "RS256", "key": "<PEM private key, or the HMAC secret>",
 "kid": "k1" or null, "claims": {...}, "exp_in": 600}
and writes the tokens, a JSON list of strings, on stdout. exp is
time.time() + exp_in: a fractional NumericDate, as PyJWT users write it."""
import json
import sys
import time

import jwt


def main():
    out = []
    for t in json.load(sys.stdin):
        claims = dict(t["claims"])
        if t.get("exp_in") is not None:
            claims["exp"] = time.time() + t["exp_in"]
        headers = {"kid": t["kid"]} if t.get("kid") else None
        out.append(jwt.encode(claims, t["key"], algorithm=t["alg"], headers=headers))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
