// clientip.mjs — where the edge takes the client address from, shared by
// the Node test and the workerd suite, against a real coordinator: with no
// clientIp named, a request outside Cloudflare (no request.cf) is refused
// with a clear error and one with request.cf is keyed on CF-Connecting-IP;
// "x-forwarded-for" keys on the last entry (what the proxy in front saw),
// so a client rotating CF-Connecting-IP and X-Forwarded-For first hops
// stays under its limit and cannot spend a victim's budget; a function
// source is called. Uses only Fetch API objects, so it runs in Node and in
// workerd alike.

export const CLIENTIP_QUOTA = {
  name: "per-client", key: "ip", limit: 30, window_s: 60, path_prefix: "/who/",
  methods: [], action: "deny", floor: 5, fail_open: true,
};

const URL_ = "http://shop.example/who/am-i";

// A Request as Cloudflare delivers it: the runtime's cf object attached.
function onCloudflare(headers) {
  const r = new Request(URL_, { headers });
  Object.defineProperty(r, "cf", { value: { colo: "FRA", country: "DE" } });
  return r;
}

// edge(extra): a Tollgate with extra options, its coordinator reachable;
// guard(extra): guard() around an origin with the same options.
export async function clientIpScenario({ edge, guard, assert }) {
  // Nothing named, not on Cloudflare: refused with the reason, every time.
  const plain = edge({});
  assert.equal(await plain.sync(), true, `first sync: ${plain.lastSyncError}`);
  const spoofed = new Request(URL_, { headers: { "cf-connecting-ip": "198.51.100.1" } });
  assert.throws(() => plain.verifyRequest(spoofed), /no clientIp source/);
  assert.throws(() => plain.verifyRequest(spoofed), /no clientIp source/);
  const g = guard({});
  await assert.rejects(g(new Request(URL_), {}, { waitUntil() {} }), /no clientIp source/);

  // Nothing named, on Cloudflare: CF-Connecting-IP, which Cloudflare sets.
  let d = await plain.verifyRequest(onCloudflare({ "cf-connecting-ip": "203.0.113.5" }));
  assert.equal(d.kind, "allow");
  assert.match(d.headers.find(([k]) => k === "RateLimit")[1], /^"per-client";r=29;/);

  // Behind a proxy that appends the address it saw: the last entry. The
  // client rotates everything it controls and still spends one budget.
  const xff = edge({ clientIp: "x-forwarded-for" });
  assert.equal(await xff.sync(), true);
  const attacker = "192.0.2.66", victim = "192.0.2.77";
  let admitted = 0;
  for (let i = 0; i < 60; i++) {
    const spoof = `198.51.${i}.${i + 1}`;
    const r = new Request(URL_, { headers: {
      "cf-connecting-ip": spoof, "x-forwarded-for": `${victim}, ${spoof}, ${attacker}` } });
    if ((await xff.verifyRequest(r)).kind === "allow") admitted++;
    if (i % 10 === 9) assert.equal(await xff.sync(), true, `sync: ${xff.lastSyncError}`);
  }
  assert.ok(admitted >= CLIENTIP_QUOTA.floor && admitted <= CLIENTIP_QUOTA.limit,
    `admitted ${admitted} of 60 under a limit of ${CLIENTIP_QUOTA.limit}`);
  // The victim, named in every spoofed header, still has its whole budget.
  d = await xff.verifyRequest(new Request(URL_, { headers: { "x-forwarded-for": victim } }));
  assert.equal(d.kind, "allow");
  assert.match(d.headers.find(([k]) => k === "RateLimit")[1], /^"per-client";r=29;/);

  // A function names the source itself.
  const seen = [];
  const fn = edge({ clientIp: (r) => { seen.push(r.url); return r.headers.get("x-real-ip"); } });
  assert.equal(await fn.sync(), true);
  d = await fn.verifyRequest(new Request(URL_, { headers: { "x-real-ip": "192.0.2.88", "cf-connecting-ip": attacker } }));
  assert.equal(d.kind, "allow");
  assert.deepEqual(seen, [URL_]);
  // No address at all is a request the edge cannot key: 400.
  d = await fn.verifyRequest(new Request(URL_));
  assert.deepEqual([d.kind, d.reason, d.status], ["deny", "bad_request", 400]);

  assert.throws(() => edge({ clientIp: "true-client-ip" }), /clientIp must be/);
  return { admitted };
}
