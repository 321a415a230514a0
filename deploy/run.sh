#!/usr/bin/env bash
# `make run`: the whole stack on loopback, in the foreground.
#   redis-server  127.0.0.1:6390  private, data under run/redis
#   tollgated     127.0.0.1:8080  deploy/example-policy.json
#   workerd       127.0.0.1:8787  the example edge in front of a demo origin
# Ctrl-C stops all three (only the processes this script started, by PID).
# Ports: TOLLGATE_REDIS_PORT, TOLLGATE_RUN_PORT; the edge and tollgated ports
# are fixed in deploy/workerd/config.capnp.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

redis_port=${TOLLGATE_REDIS_PORT:-6390}
co_port=8080
edge_port=8787
mkdir -p run/redis run/log

# Secrets: generated once into run/keys (mode 600), the coordinator's key
# file; the edge gets its own key and the clearance key through workerd's
# fromEnvironment bindings (deploy/workerd/config.capnp).
keys=run/keys
if [ ! -s "$keys" ]; then
  secret() { od -An -vtx1 -N32 /dev/urandom | tr -d ' \n'; }
  (umask 077; {
    echo "# tollgate key file written by make run (format: coordinator/tollgated.h)"
    echo "challenge ch1 $(secret)"
    echo "clearance c1 $(secret)"
    echo "captcha static $(secret)"
    echo "edge edge-local-1 $(secret)"
  } >"$keys")
fi
# The admin API's token: generated once into run/admin-token; tollgated only
# ever sees its SHA-256 (run/admin-tokens).
if [ ! -s run/admin-token ]; then
  (umask 077; od -An -vtx1 -N24 /dev/urandom | tr -d ' \n' >run/admin-token)
fi
(umask 077; echo "local-admin admin $(tr -d '\n' <run/admin-token | sha256sum | cut -d' ' -f1)" >run/admin-tokens)
# The captcha verifier: static by default (the plain form; its answer is
# the HMAC the README computes), or TOLLGATE_CAPTCHA=turnstile for
# Cloudflare Turnstile's published test keys: the real widget, which always
# passes, and real siteverify calls (the browser and tollgated need the
# internet). The key file gets the provider's test secret; the policy's
# "captcha" member is set to match once tollgated is up.
captcha=${TOLLGATE_CAPTCHA:-static}
case $captcha in
  static) run_keys=$keys ;;
  turnstile)
    run_keys=run/keys.turnstile
    (umask 077; sed 's/^captcha .*/captcha turnstile 1x0000000000000000000000000000000AA/' "$keys" >"$run_keys") ;;
  *) echo "make run: TOLLGATE_CAPTCHA must be static or turnstile" >&2; exit 2 ;;
esac
key_of() { awk -v k="$1" -v i="$2" '$1 == k && $2 == i { print $3; exit }' "$keys"; }
export TOLLGATE_EDGE_KEY=$(key_of edge edge-local-1)
export TOLLGATE_CLEARANCE_KEY=$(key_of clearance c1)

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$redis_port" "$co_port" "$edge_port"; do
  if port_busy "$p"; then
    echo "make run: 127.0.0.1:$p is already in use; stop what listens there (or set TOLLGATE_REDIS_PORT)" >&2
    exit 1
  fi
done

pids=()
stop_all() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "make run: stopped"
}
trap 'stop_all; exit 0' INT TERM
trap stop_all EXIT

redis-server deploy/redis.conf --port "$redis_port" --dir "$top/run/redis" \
  >run/log/redis.log 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis-cli -p "$redis_port" ping >/dev/null || { echo "make run: redis-server did not start; see run/log/redis.log" >&2; exit 1; }

build/tollgated --listen "127.0.0.1:$co_port" --redis "redis://127.0.0.1:$redis_port" \
  --policy deploy/example-policy.json --keys "$run_keys" --admin-tokens run/admin-tokens \
  2> >(tee run/log/tollgated.log >&2) &
pids+=($!)
for _ in $(seq 50); do
  curl -fsS "http://127.0.0.1:$co_port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

# The policy names the widget edges render (a new version when it changes).
TOLLGATE_URL="http://127.0.0.1:$co_port" TOLLGATE_TOKEN=$(cat run/admin-token) CAPTCHA=$captcha node --input-type=module -e '
const url = process.env.TOLLGATE_URL + "/v1/policy", auth = { authorization: "Bearer " + process.env.TOLLGATE_TOKEN };
const want = process.env.CAPTCHA === "turnstile" ? { provider: "turnstile", site_key: "1x00000000000000000000AA" } : undefined;
const r = await fetch(url, { headers: auth });
const doc = await r.json();
if (JSON.stringify(doc.captcha) !== JSON.stringify(want)) {
  const version = doc.version;
  delete doc.version;
  if (want) doc.captcha = want; else delete doc.captcha;
  const put = await fetch(url, { method: "PUT", headers: { ...auth, "content-type": "application/json", "if-match": `"${version}"` }, body: JSON.stringify(doc) });
  if (put.status !== 200) { console.error("make run: cannot set the policy captcha:", await put.text()); process.exit(1); }
}' || exit 1

node_modules/.bin/workerd serve deploy/workerd/config.capnp >run/log/workerd.log 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -fsS -o /dev/null "http://127.0.0.1:$edge_port/" 2>/dev/null && break
  sleep 0.1
done

cat <<MSG

tollgate is running (logs under run/log/; Ctrl-C stops everything):
  edge (workerd)     http://127.0.0.1:$edge_port/        try: curl -i -H 'X-Forwarded-For: 203.0.113.7' http://127.0.0.1:$edge_port/api/hello
  coordinator        http://127.0.0.1:$co_port/healthz   http://127.0.0.1:$co_port/readyz   http://127.0.0.1:$co_port/metrics
  dashboard          http://127.0.0.1:$co_port/dashboard#token=$(cat run/admin-token)
                     (signed in as local-admin; the token after # never leaves the browser)
  redis              redis://127.0.0.1:$redis_port        (data in run/redis)
  captcha            $captcha (TOLLGATE_CAPTCHA=turnstile make run: Turnstile's test keys; docs/challenges.md)
  policy             deploy/example-policy.json seeds version 1; change it live:
                     export TOLLGATE_URL=http://127.0.0.1:$co_port TOLLGATE_TOKEN=\$(cat run/admin-token)
                     build/tollgatectl get; build/tollgatectl quota set per-ip --limit 10

MSG
wait -n "${pids[@]}" || true
echo "make run: stopping (Ctrl-C, or one of the processes exited: see run/log/)" >&2
