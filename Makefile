# tollgate — one Makefile for the whole tree.
#
#   make            build/tollgated, build/tollgatectl, build/tollgate.wasm,
#                   build/libtollgate.a
#   make test       install missing deps, then unit tests (plain and with
#                   ASan+UBSan), the wasm import check, a short fuzz run,
#                   integration tests
#   make fuzz       each libFuzzer target for FUZZ_SECONDS (300)
#   make soak       SOAK_S (600) seconds of mixed traffic: RSS/fd growth
#   make run        install missing deps, then redis + tollgated + workerd edge
#   make bench      benchmarks against the targets: one Markdown table,
#                   figures in build/bench/*.json (needs wrk and valgrind)
#   make sim        the accuracy simulator alone (bench/sim/README.md)
#   make clean      remove build/ and run/
#
# Knobs: SANITIZE=address,undefined  BUILD=dir  CC=clang  V=1
# Every dependency comes from the system through pkg-config; run
# deploy/install-deps.sh (make deps) on a fresh Debian machine.

BUILD    ?= build
SANITIZE ?=
CC       ?= cc
WASM_CC  ?= clang
WASM_OPT ?= wasm-opt
PKGS     := libmicrohttpd hiredis libprotobuf-c openssl jansson libcurl gnutls

# Lazily expanded: `make test` installs packages before anything reads these.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS)) -lpthread

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE $(WARN) -MMD -MP
ifneq ($(SANITIZE),)
CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
endif

ifeq ($(V),1)
Q :=
else
Q := @
endif

# ---------------------------------------------------------------- sources
EDGE_SRC  := $(filter-out edge-module/src/wasm.c,$(wildcard edge-module/src/*.c))
EDGE_OBJ  := $(EDGE_SRC:edge-module/src/%.c=$(BUILD)/edge/%.o)
WASM_OBJ  := $(EDGE_SRC:edge-module/src/%.c=$(BUILD)/wasm/%.o) $(BUILD)/wasm/wasm.o
CO_SRC    := $(filter-out coordinator/main.c,$(wildcard coordinator/*.c))
CO_OBJ    := $(CO_SRC:coordinator/%.c=$(BUILD)/co/%.o)
LUA_SRC   := $(wildcard coordinator/*.lua)
DASH_SRC  := $(wildcard coordinator/dashboard/*)
GEN_OBJ   := $(BUILD)/gen/tollgate.pb-c.o \
	$(LUA_SRC:coordinator/%.lua=$(BUILD)/gen/%_lua.o) \
	$(DASH_SRC:coordinator/dashboard/%=$(BUILD)/gen/dashboard_%.o)
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

EDGE_CFLAGS := -Iedge-module/include -Iedge-module/src
CO_CFLAGS    = -Icoordinator -I$(BUILD)/gen $(PKG_CFLAGS)

# The edge core is freestanding: no libc, no imports. -mbulk-memory turns
# __builtin_memcpy/memset into memory.copy/fill instead of imported calls;
# sign-extension and saturating float-to-int opcodes (in every V8 since
# 2019: workerd, Node) are shorter than their emulation.
# -flto lets the link inline and drop code across files (the 24 KB budget).
WASM_FEATURES := -mbulk-memory -msign-ext -mnontrapping-fptoint
WASM_CFLAGS := --target=wasm32 -ffreestanding -nostdlib $(WASM_FEATURES) -Oz -flto \
               -std=c11 $(WARN) -fvisibility=hidden -MMD -MP $(EDGE_CFLAGS)
# The link-time inliner keeps to functions marked inline (the -Oz default
# copies small static helpers into their callers, a few dozen bytes).
WASM_LDFLAGS := --target=wasm32 -nostdlib -flto -Wl,--no-entry -Wl,--gc-sections \
                -Wl,--strip-all -Wl,-z,stack-size=65536 -Wl,-mllvm,-inline-threshold=0

.PHONY: all deps test check unit unit-asan integration wasm-check fuzz fuzz-smoke run clean
all: $(BUILD)/tollgated $(BUILD)/tollgate.wasm $(BUILD)/libtollgate.a

deps:
	deploy/install-deps.sh

# ---------------------------------------------------------------- edge
$(BUILD)/edge/%.o: edge-module/src/%.c
	@mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $(EDGE_CFLAGS) -c $< -o $@

$(BUILD)/libtollgate.a: $(EDGE_OBJ)
	$(Q)$(AR) rcs $@ $^

$(BUILD)/wasm/%.o: edge-module/src/%.c
	@mkdir -p $(@D)
	$(Q)$(WASM_CC) $(WASM_CFLAGS) -c $< -o $@

# Link without -O, then let binaryen shrink it; refuse a module with imports.
# --low-memory-unused: the linker puts data at 1024 and the stack above
# it, so nothing lives below 1024 and binaryen may fold constant addresses
# into load/store offsets. --ignore-implicit-traps: the core never divides
# by zero or reads outside memory (C leaves both undefined anyway; the
# sanitizer and fuzz builds check), so binaryen may move such operations.
$(BUILD)/tollgate.wasm: $(WASM_OBJ)
	$(Q)$(WASM_CC) $(WASM_LDFLAGS) $^ -o $(BUILD)/tollgate.raw.wasm
	$(Q)$(WASM_OPT) -Oz --converge --low-memory-unused --ignore-implicit-traps \
	  --enable-bulk-memory \
	  --enable-sign-ext --enable-nontrapping-float-to-int \
	  $(BUILD)/tollgate.raw.wasm -o $@
	$(Q)if wasm-objdump -x -j Import $@ 2>/dev/null | grep -q ' <- '; then \
	  echo "tollgate.wasm has imports; the edge core must have none:" >&2; \
	  wasm-objdump -x -j Import $@ >&2; rm -f $@; exit 1; fi
	@echo "built $@ ($$(stat -c %s $@) bytes)"

# ---------------------------------------------------------------- generated
$(BUILD)/gen/tollgate.pb-c.c $(BUILD)/gen/tollgate.pb-c.h: proto/tollgate.proto
	@mkdir -p $(@D)
	$(Q)protoc-c --proto_path=proto --c_out=$(BUILD)/gen tollgate.proto

# Lua scripts and the dashboard's files are compiled into the binary so a
# deploy is one file. EMBED writes a C file defining `const char SYM[]`
# (the file's bytes plus a NUL) and `const size_t SYM_len` (without it).
define EMBED
	@mkdir -p $(@D)
	$(Q){ echo '/* generated from $< */'; \
	  echo '#include <stddef.h>'; \
	  echo 'const char $(1)[] = {'; \
	  od -An -v -tx1 $< | sed 's/\([0-9a-f][0-9a-f]\)/0x\1,/g'; \
	  echo '0x00 };'; \
	  echo 'const size_t $(1)_len = sizeof $(1) - 1;'; } > $@
endef

$(BUILD)/gen/%_lua.c: coordinator/%.lua
	$(call EMBED,co_$*_lua)

# coordinator/dashboard/NAME.EXT -> co_dashboard_NAME_EXT (dashboard.c)
$(BUILD)/gen/dashboard_%.c: coordinator/dashboard/%
	$(call EMBED,co_dashboard_$(subst .,_,$*))

$(BUILD)/gen/%.o: $(BUILD)/gen/%.c
	$(Q)$(CC) $(filter-out $(WARN),$(CFLAGS)) $(CO_CFLAGS) -c $< -o $@

# ---------------------------------------------------------------- coordinator
$(CO_OBJ) $(BUILD)/co/main.o: $(BUILD)/gen/tollgate.pb-c.h
$(BUILD)/co/%.o: coordinator/%.c
	@mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $(CO_CFLAGS) -c $< -o $@

# Rebuilt whole: `ar r` would keep the object of a renamed source.
$(BUILD)/libco.a: $(CO_OBJ) $(GEN_OBJ)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(BUILD)/tollgated: $(BUILD)/co/main.o $(BUILD)/libco.a
	$(Q)$(CC) $(LDFLAGS) $^ $(PKG_LIBS) -o $@

# ---------------------------------------------------------------- tollgatectl
# build/tollgatectl, the admin API's command-line client (tools/, hub header
# tools/tollgatectl.h). tollgated links libcurl too (captcha siteverify,
# coordinator/siteverify.c). The version is tollgated's CO_VERSION, so the
# two never differ.
CTL_SRC     := $(wildcard tools/*.c)
CTL_OBJ     := $(CTL_SRC:tools/%.c=$(BUILD)/ctl/%.o)
CTL_PKGS    := jansson libcurl
CTL_VERSION  = $(shell sed -n 's/^.define CO_VERSION "\(.*\)"$$/\1/p' coordinator/tollgated.h)

all: $(BUILD)/tollgatectl

$(BUILD)/ctl/%.o: tools/%.c
	@mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) -DCTL_VERSION='"$(CTL_VERSION)"' \
	  $(shell pkg-config --cflags $(CTL_PKGS)) -c $< -o $@

$(BUILD)/tollgatectl: $(CTL_OBJ)
	$(Q)$(CC) $(LDFLAGS) $^ $(shell pkg-config --libs $(CTL_PKGS)) -o $@
# ---------------------------------------------------------------- end tollgatectl

# ---------------------------------------------------------------- tests
# A test may ask for extra link flags (e.g. -Wl,--wrap=co_redis_command)
# with a line `// test-ldflags: ...` in its source.
$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libco.a $(BUILD)/libtollgate.a
	@mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $(EDGE_CFLAGS) $(CO_CFLAGS) $< \
	  $(shell sed -n 's|^// test-ldflags: ||p' $<) \
	  $(BUILD)/libco.a $(BUILD)/libtollgate.a $(LDFLAGS) $(PKG_LIBS) -lcmocka -o $@

unit: $(UNIT_BIN)
	$(Q)set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

unit-asan:
	$(Q)$(MAKE) --no-print-directory BUILD=build/asan SANITIZE=address,undefined unit

wasm-check: $(BUILD)/tollgate.wasm
	$(Q)n=$$(wasm-objdump -x -j Import $< 2>/dev/null | grep -c ' <- ' || true); \
	  echo "tollgate.wasm: $$(stat -c %s $<) bytes, $$n imports"; test "$$n" = 0

# An edge built to hold 8 quotas: the integration tests' older, smaller edge
# that must refuse a policy its coordinator accepts (not size-checked).
$(BUILD)/wasm-caps8/%.o: edge-module/src/%.c
	@mkdir -p $(@D)
	$(Q)$(WASM_CC) $(WASM_CFLAGS) -DTG_CAP_QUOTAS=8 -c $< -o $@

$(BUILD)/tests/tollgate-caps8.wasm: $(WASM_OBJ:$(BUILD)/wasm/%=$(BUILD)/wasm-caps8/%)
	@mkdir -p $(@D)
	$(Q)$(WASM_CC) $(WASM_LDFLAGS) $^ -o $@

integration: all $(BUILD)/bench-sim $(BUILD)/tollgated-sim $(BUILD)/tests/tollgate-caps8.wasm
	$(Q)node --test tests/integration/*.test.mjs

# make soak: tests/soak/soak.mjs, SOAK_S seconds (default 600) of mixed
# traffic through two workerd edges, with a coordinator restart and a Redis
# pause; fails when the coordinator's RSS or fds grow over 10 % (report in
# $(BUILD)/soak/report.json).
SOAK_S ?= 600
.PHONY: soak
soak: all
	$(Q)SOAK_S=$(SOAK_S) node tests/soak/soak.mjs

# ---------------------------------------------------------------- fuzz
# libFuzzer targets tests/fuzz/fuzz_<name>.c, built with clang and ASan+UBSan
# straight from the edge sources (not the wasm). Seeds are committed in
# tests/fuzz/corpus/<name>/ (tests/fuzz/make_corpus.py writes them); what a
# run discovers goes to $(BUILD)/fuzz/corpus/<name>/, a crash to
# $(BUILD)/fuzz/<name>-crash-*. fuzz-smoke (part of check) runs each target
# FUZZ_RUNS times; fuzz runs each for FUZZ_SECONDS.
FUZZ_CC      ?= clang
FUZZ_RUNS    ?= 20000
FUZZ_SECONDS ?= 300
FUZZ_NAMES   := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN     := $(FUZZ_NAMES:%=$(BUILD)/fuzz/fuzz_%)
FUZZ_CFLAGS  := -g -O1 -std=c11 -D_GNU_SOURCE $(WARN) $(EDGE_CFLAGS) \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_RUN = set -e; for n in $(FUZZ_NAMES); do \
	  mkdir -p $(BUILD)/fuzz/corpus/$$n; \
	  if $(BUILD)/fuzz/fuzz_$$n $(1) -artifact_prefix=$(BUILD)/fuzz/$$n- \
	       $(BUILD)/fuzz/corpus/$$n tests/fuzz/corpus/$$n >$(BUILD)/fuzz/$$n.log 2>&1; \
	  then echo "fuzz_$$n: $$(grep -o 'Done [0-9]* runs in [0-9]* second(s)' $(BUILD)/fuzz/$$n.log)"; \
	  else tail -n 40 $(BUILD)/fuzz/$$n.log; echo "fuzz_$$n FAILED (log: $(BUILD)/fuzz/$$n.log)"; exit 1; fi; \
	done

$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(EDGE_SRC) $(wildcard edge-module/src/*.h edge-module/include/*.h)
	@mkdir -p $(@D)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) $< $(EDGE_SRC) -o $@

# fuzz_policy: the coordinator's policy JSON parser, built from policy.c and
# what it links (log, encodings, the generated protobuf-c code, jansson),
# not from the edge sources.
FUZZ_POLICY_SRC := coordinator/policy.c coordinator/log.c coordinator/encode.c coordinator/file.c
$(BUILD)/fuzz/tollgate.pb-c.o: $(BUILD)/gen/tollgate.pb-c.c
	@mkdir -p $(@D)
	$(Q)$(FUZZ_CC) -g -O1 -fsanitize=address,undefined $(CO_CFLAGS) -c $< -o $@

$(BUILD)/fuzz/fuzz_policy: tests/fuzz/fuzz_policy.c $(FUZZ_POLICY_SRC) coordinator/tollgated.h $(BUILD)/fuzz/tollgate.pb-c.o
	@mkdir -p $(@D)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) $(CO_CFLAGS) $< $(FUZZ_POLICY_SRC) $(BUILD)/fuzz/tollgate.pb-c.o \
	  $(shell pkg-config --libs jansson libprotobuf-c) -lpthread -lm -o $@

# The coordinator's targets for what comes off the network: fuzz_sync (POST
# /v1/sync after the signature: unpack, validation, the answer),
# fuzz_admin (the admin API's JSON routes), fuzz_challenge (challenge
# tokens and POST /v1/challenge/verify). They link every coordinator file
# built with the fuzzer's instrumentation ($(BUILD)/fuzz/libco.a) and stand
# in for Redis and the captcha provider with -Wl,--wrap, asked for by a
# line `// fuzz-ldflags: ...` in the target's source.
FUZZ_CO_NAMES := sync admin challenge
FUZZ_CO_OBJ   := $(CO_SRC:coordinator/%.c=$(BUILD)/fuzz/co/%.o)
$(BUILD)/fuzz/co/%.o: coordinator/%.c $(BUILD)/gen/tollgate.pb-c.h
	@mkdir -p $(@D)
	$(Q)$(FUZZ_CC) -g -O1 -std=c11 -D_GNU_SOURCE $(WARN) -MMD -MP \
	  -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all \
	  $(CO_CFLAGS) -c $< -o $@

$(BUILD)/fuzz/libco.a: $(FUZZ_CO_OBJ) $(GEN_OBJ)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(FUZZ_CO_NAMES:%=$(BUILD)/fuzz/fuzz_%): $(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(BUILD)/fuzz/libco.a
	@mkdir -p $(@D)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) $(CO_CFLAGS) $< \
	  $(shell sed -n 's|^// fuzz-ldflags: ||p' tests/fuzz/fuzz_$*.c) \
	  $(BUILD)/fuzz/libco.a $(PKG_LIBS) -lm -o $@

fuzz-smoke: $(FUZZ_BIN)
	$(Q)$(call FUZZ_RUN,-runs=$(FUZZ_RUNS) -seed=1)

fuzz: $(FUZZ_BIN)
	$(Q)$(call FUZZ_RUN,-max_total_time=$(FUZZ_SECONDS))

check: all unit unit-asan wasm-check fuzz-smoke integration

test: deps
	$(Q)$(MAKE) --no-print-directory check

run: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)deploy/run.sh

# ---------------------------------------------------------------- bench
# bench/run.mjs runs every benchmark and prints one table; each file under
# bench/ also runs alone. What it needs, built first: the binaries, the
# callgrind driver (bench/edge/callgrind.mjs), the simulator (bench/sim),
# the coordinator's load generator (bench/coordinator) and the peer's npm
# packages (bench/peer).
.PHONY: bench
bench: all $(BUILD)/bench/verify_driver $(BUILD)/bench-sim $(BUILD)/tollgated-sim \
       $(BUILD)/bench-loadgen node_modules/.package-lock.json
	$(Q)node bench/run.mjs

$(BUILD)/bench/verify_driver: bench/verify_driver.c $(BUILD)/libtollgate.a $(BUILD)/gen/tollgate.pb-c.o
	@mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) -Iedge-module/include -I$(BUILD)/gen \
	  $(shell pkg-config --cflags libprotobuf-c openssl) bench/verify_driver.c \
	  $(BUILD)/gen/tollgate.pb-c.o $(BUILD)/libtollgate.a $(LDFLAGS) \
	  $(shell pkg-config --libs libprotobuf-c openssl) -o $@

# ---------------------------------------------------------------- bench/peer
# bench/peer measures rate-limiter-flexible (with ioredis), npm
# devDependencies pinned in package-lock.json: installed with `npm install`
# when the lockfile is newer than node_modules, as deploy/install-deps.sh
# does (TOLLGATE_SKIP_DEPS=1 skips it).
node_modules/.package-lock.json: package.json package-lock.json
	$(Q)if [ "$${TOLLGATE_SKIP_DEPS:-0}" != 1 ]; then \
	  echo "bench: npm install (versions pinned by package-lock.json)" >&2; \
	  npm install --no-audit --no-fund --loglevel=error && touch $@; fi
# ---------------------------------------------------------------- end bench/peer

# ---------------------------------------------------------------- bench/sim
# The accuracy simulator (owner: bench/sim/). build/bench-sim runs the real
# edge core against build/tollgated-sim (tollgated whose co_wall_ms() reads
# the simulator's clock, bench/sim/simclock.c, via --wrap) and a private
# redis-server, in simulated time. `make sim` runs every scenario (about 2.7
# minutes on 2 cores) and writes build/bench/sim.{csv,json} and
# sim-overshoot.png; bench/sim/README.md, `build/bench-sim --help`.
SIM_SRC     := $(wildcard bench/sim/*.c)
SIM_OBJ     := $(patsubst bench/sim/%.c,$(BUILD)/sim/%.o,$(filter-out bench/sim/simclock.c,$(SIM_SRC)))
SIM_CFLAGS   = -Iedge-module/include -I$(BUILD)/gen $(shell pkg-config --cflags libprotobuf-c openssl)
SIM_LIBS     = $(shell pkg-config --libs libprotobuf-c openssl) -lpthread -lm

$(BUILD)/sim/simclock.o: bench/sim/simclock.c $(BUILD)/gen/tollgate.pb-c.h
	@mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $(CO_CFLAGS) -c $< -o $@

$(SIM_OBJ): $(BUILD)/sim/%.o: bench/sim/%.c $(BUILD)/gen/tollgate.pb-c.h
	@mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $(SIM_CFLAGS) -c $< -o $@

$(BUILD)/tollgated-sim: $(BUILD)/co/main.o $(BUILD)/libco.a $(BUILD)/sim/simclock.o
	$(Q)$(CC) $(LDFLAGS) -Wl,--wrap=co_wall_ms $^ $(PKG_LIBS) -o $@

$(BUILD)/bench-sim: $(SIM_OBJ) $(BUILD)/gen/tollgate.pb-c.o $(BUILD)/libtollgate.a
	$(Q)$(CC) $(LDFLAGS) $^ $(SIM_LIBS) -o $@

.PHONY: sim
sim: $(BUILD)/bench-sim $(BUILD)/tollgated-sim
	$(Q)$(BUILD)/bench-sim --all --out $(BUILD)/bench/sim

# make bench runs the simulator as its "sim" suite (bench/sim/measure.mjs).

# ---------------------------------------------------------------- bench/coordinator
# The coordinator benchmark (owner: bench/coordinator/). build/bench-loadgen
# posts signed /v1/sync batches from N keep-alive connections, closed or
# open loop (bench/coordinator/loadgen.c; the HTTP client and signature are
# bench/sim/http.c's object, linked as is). bench/coordinator/measure.mjs
# runs it against build/tollgated and a private redis-server, and
# redis-benchmark against the same Lua script: `node
# bench/coordinator/measure.mjs` alone (about 1.5 minutes on 2 cores;
# the redis-benchmark rows are na without redis-benchmark).
LOADGEN_CFLAGS = -Ibench/sim -I$(BUILD)/gen $(shell pkg-config --cflags libprotobuf-c openssl)
LOADGEN_LIBS   = $(shell pkg-config --libs libprotobuf-c openssl) -lpthread -lm

$(BUILD)/bench/coordinator/loadgen.o: bench/coordinator/loadgen.c $(BUILD)/gen/tollgate.pb-c.h
	@mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $(LOADGEN_CFLAGS) -c $< -o $@

$(BUILD)/bench-loadgen: $(BUILD)/bench/coordinator/loadgen.o $(BUILD)/sim/http.o $(BUILD)/gen/tollgate.pb-c.o
	$(Q)$(CC) $(LDFLAGS) $^ $(LOADGEN_LIBS) -o $@
# ---------------------------------------------------------------- end bench/coordinator

clean:
	rm -rf build run

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
