#!/usr/bin/env bash
# Installs what tollgate needs to build, test and run, and nothing else.
# Idempotent: packages already present are left alone, so `make test` and
# `make run` can call it every time at the cost of one dpkg query.
#   deploy/install-deps.sh          apt packages (chromium for the browser
#                                   tests, systemd and prometheus for
#                                   systemd-analyze and promtool, haproxy for
#                                   the load balancer test, python3-jwt to
#                                   mint tokens with PyJWT) + npm packages
#                                   (workerd, playwright-core, jose)
#   TOLLGATE_SKIP_DEPS=1            skip everything (offline, packaged builds)
set -euo pipefail

[ "${TOLLGATE_SKIP_DEPS:-0}" = 1 ] && exit 0
top=$(cd "$(dirname "$0")/.." && pwd)

apt_pkgs=(
  build-essential pkg-config make
  libmicrohttpd-dev libhiredis-dev libprotobuf-c-dev protobuf-c-compiler
  libssl-dev libcmocka-dev libjansson-dev libcurl4-openssl-dev
  redis-server redis-tools
  clang lld binaryen wabt libclang-rt-14-dev
  valgrind wrk
  haproxy
  gnuplot-nox
  python3 python3-jwt python3-cryptography
  chromium
  systemd prometheus
  nodejs npm curl
)

missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
# Node and npm may come from outside Debian (a newer node on PATH): accept them.
if command -v node >/dev/null && command -v npm >/dev/null; then
  keep=(); for p in "${missing[@]}"; do case $p in nodejs|npm) ;; *) keep+=("$p");; esac; done
  missing=("${keep[@]}")
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}" >&2
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A Debian redis-server package starts a system instance on :6379, and the
# haproxy package one with /etc/haproxy/haproxy.cfg; tollgate never uses
# them (tests and `make run` start private ones), so leave them be.
# prometheus is installed for promtool (the alert rules' tests) and systemd
# for systemd-analyze (the unit's check).

if [ ! -x "$top/node_modules/.bin/workerd" ] || [ ! -d "$top/node_modules/playwright-core" ] ||
   [ "$top/package-lock.json" -nt "$top/node_modules/.package-lock.json" ]; then
  # `npm ci`: exactly the lockfile (versions and integrity), refused when
  # it disagrees with package.json. The lockfile lists every platform's
  # optional workerd binary (npm ci requires them listed) and npm fetches
  # only this platform's.
  echo "install-deps: npm ci (versions pinned by package-lock.json)" >&2
  (cd "$top" && npm ci --no-audit --no-fund --loglevel=error)
fi
