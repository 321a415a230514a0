/* sim.c — build/bench-sim: the accuracy simulator's command line, its
 * scenarios, the processes around a run, and the report.
 *
 * One invocation starts one redis-server (spare loopback port), a counting
 * proxy in front of it (procs.c), and for every run a fresh
 * build/tollgated-sim with that run's policy and the shared simulated
 * clock; Redis is flushed between runs. Everything it writes lives under
 * the output prefix's directory (build/bench by default); the run
 * directory (logs, policy, key file, clock) is removed after a clean run
 * unless --keep. See --help for the scenarios and the outputs.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sim.h"

#define MAX_RUNS 64
#define DIR_CAP  1024             /* the run directory's path */
#define FILE_CAP (DIR_CAP + 128)  /* a file in it */
#define CMD_CAP  (FILE_CAP + 64)  /* a shell command naming one */
/* tollgated-sim's --redis-timeout-ms outside a Redis outage (see one_run) */
#define SIM_REDIS_TIMEOUT_MS "2000"

/* ---------------------------------------------------------------- scenarios
 * Rates are multiples of the limit per window. Every attack scenario also
 * carries a legitimate client (another key) at half its limit across the
 * same edges: its admitted share is the "legit" figure there. */
struct scenario {
    const char *name;
    const char *what;
    unsigned edges;
    uint32_t interval_ms;
    double attack_x, hot_share, legit_x;
    enum sim_outage outage;
    bool interval_series;       /* a point of the overshoot-vs-interval plot */
    unsigned clients;           /* fleet: distinct clients, at limit <= 600 */
    double client_x;            /* each fleet client: x its limit */
};

/* The fleet: FLEET_CLIENTS clients at limit FLEET_REF_LIMIT or below;
 * above, fewer, so the fleet's request rate (and the run's real time)
 * stays that of FLEET_REF_LIMIT, but never fewer than FLEET_MIN_CLIENTS.
 * --clients overrides. */
#define FLEET_CLIENTS     1000
#define FLEET_REF_LIMIT   600
#define FLEET_MIN_CLIENTS 200

static unsigned fleet_clients(unsigned base, uint64_t limit)
{
    uint64_t n = base;

    if (limit > FLEET_REF_LIMIT)
        n = (uint64_t)base * FLEET_REF_LIMIT / limit;
    if (n < FLEET_MIN_CLIENTS)
        n = FLEET_MIN_CLIENTS < base ? FLEET_MIN_CLIENTS : base;
    return (unsigned)n;
}

static const struct scenario SCENARIOS[] = {
    {"single", "sanity: one edge, one client at 90% of its limit",
     1, 1000, 0, 0, 0.9, SIM_OUTAGE_NONE, false, 0, 0},
    {"spray50", "A: one client at 10x its limit, uniform over 50 edges",
     50, 1000, 10, 0, 0.5, SIM_OUTAGE_NONE, true, 0, 0},
    {"spray280", "B: one client at 10x its limit, uniform over 280 edges",
     280, 1000, 10, 0, 0.5, SIM_OUTAGE_NONE, false, 0, 0},
    {"hot50", "C: one client at 10x, 90% of it on one edge of 50",
     50, 1000, 10, 0.9, 0.5, SIM_OUTAGE_NONE, false, 0, 0},
    {"legit20", "D: one client at 90% of its limit over 20 edges",
     20, 1000, 0, 0, 0.9, SIM_OUTAGE_NONE, false, 0, 0},
    {"outage50", "E: spray50 with every sync failing for 10 s mid-run",
     50, 1000, 10, 0, 0.5, SIM_OUTAGE_NETWORK, false, 0, 0},
    {"outage50-redis", "E': spray50 with redis-server SIGSTOPped for 10 s",
     50, 1000, 10, 0, 0.5, SIM_OUTAGE_REDIS, false, 0, 0},
    {"spray50-i250", "F: spray50 with sync_interval_ms 250",
     50, 250, 10, 0, 0.5, SIM_OUTAGE_NONE, true, 0, 0},
    {"spray50-i5000", "F: spray50 with sync_interval_ms 5000",
     50, 5000, 10, 0, 0.5, SIM_OUTAGE_NONE, true, 0, 0},
    {"fleet20", "G: 1000 clients (limit <= 600; 1000 x 600 / limit above, "
     "at least 200), each at 50% of its limit, over 20 edges",
     20, 1000, 0, 0, 0, SIM_OUTAGE_NONE, false, FLEET_CLIENTS, 0.5},
};
#define N_SCENARIOS (sizeof SCENARIOS / sizeof SCENARIOS[0])

static const uint64_t DEFAULT_LIMITS[] = {6000, 600};

struct options {
    const struct scenario *pick[N_SCENARIOS];
    size_t n_pick;
    uint64_t limits[8];
    size_t n_limits;
    unsigned windows, window_s, edges, step_ms, rtt_ms, timeout_ms, clients;
    uint32_t interval_ms;
    uint64_t floor, seed;
    double wall_s;
    bool poisson, keep, verbose;
    const char *out, *tollgated, *redis_server;
};

/* ---------------------------------------------------------------- output */

static double real_start;

double sim_real_now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void sim_progress(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "sim [%6.1fs] ", sim_real_now_s() - real_start);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void usage(FILE *f)
{
    fprintf(f,
"usage: bench-sim [--all | --scenario NAME ...] [options]\n"
"\n"
"Runs the real edge core (one tg_edge per simulated edge) against\n"
"build/tollgated-sim and a private redis-server in simulated time, and\n"
"reports per window how many requests of a key the edges admitted against\n"
"its global limit.\n"
"\n"
"  --all                every scenario at every --limit (default 6000, 600)\n"
"  --scenario NAME      one scenario (repeatable); --list names them\n"
"  --limit N            quota limit per window (repeatable; default 6000 and\n"
"                       600 with --all, 6000 otherwise)\n"
"  --windows N          measured windows after the attack starts (3)\n"
"  --window-s N         quota window (60)\n"
"  --edges N            override the scenario's edge count\n"
"  --clients N          fleet scenarios: distinct clients (default 1000 at\n"
"                       limit <= 600, 1000 x 600 / limit above, at least 200)\n"
"  --interval-ms N      override the scenario's sync_interval_ms\n"
"  --floor N            quota floor (default: the coordinator's, limit/edges)\n"
"  --rtt-ms N           simulated sync round trip (20)\n"
"  --timeout-ms N       a sync lost in an outage fails after this (1000)\n"
"  --step-ms N          simulated time step (1)\n"
"  --arrivals KIND      poisson (default) or uniform\n"
"  --seed N             PRNG seed (1); same seed, same figures\n"
"  --wall-s N           real-time cap per run (120); the run is then cut\n"
"  --out PREFIX         write PREFIX.csv, PREFIX.json, PREFIX-overshoot.png\n"
"                       (default build/bench/sim; build/bench/sim-run without\n"
"                       --all)\n"
"  --tollgated PATH     coordinator built with simclock.c (build/tollgated-sim)\n"
"  --redis-server PATH  (redis-server)\n"
"  --keep               keep the run directory (logs, policy, keys, clock)\n"
"  --list               list the scenarios\n"
"  -v                   more progress\n"
"\n"
"stdout: a Markdown table. Exit 0 when every run completed (whatever the\n"
"figures), 1 when the harness failed, 2 on bad usage.\n");
}

static void list_scenarios(void)
{
    for (size_t i = 0; i < N_SCENARIOS; i++)
        printf("%-15s %3u edges, interval %5u ms  %s\n", SCENARIOS[i].name,
               SCENARIOS[i].edges, SCENARIOS[i].interval_ms, SCENARIOS[i].what);
}

static unsigned long long parse_num(const char *opt, const char *s,
                                    unsigned long long lo,
                                    unsigned long long hi)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "bench-sim: %s: expected a number from %llu to %llu, "
                "got \"%s\"\n", opt, lo, hi, s);
        exit(2);
    }
    return v;
}

static int parse_args(int argc, char **argv, struct options *o)
{
    enum { O_ALL = 256, O_SCEN, O_LIMIT, O_WINDOWS, O_WINDOW_S, O_EDGES,
           O_CLIENTS,
           O_INTERVAL, O_FLOOR, O_RTT, O_TIMEOUT, O_STEP, O_ARRIVALS, O_SEED,
           O_WALL, O_OUT, O_TOLLGATED, O_REDIS, O_KEEP, O_LIST, O_HELP };
    static const struct option longs[] = {
        {"all", no_argument, 0, O_ALL},
        {"scenario", required_argument, 0, O_SCEN},
        {"limit", required_argument, 0, O_LIMIT},
        {"windows", required_argument, 0, O_WINDOWS},
        {"window-s", required_argument, 0, O_WINDOW_S},
        {"edges", required_argument, 0, O_EDGES},
        {"clients", required_argument, 0, O_CLIENTS},
        {"interval-ms", required_argument, 0, O_INTERVAL},
        {"floor", required_argument, 0, O_FLOOR},
        {"rtt-ms", required_argument, 0, O_RTT},
        {"timeout-ms", required_argument, 0, O_TIMEOUT},
        {"step-ms", required_argument, 0, O_STEP},
        {"arrivals", required_argument, 0, O_ARRIVALS},
        {"seed", required_argument, 0, O_SEED},
        {"wall-s", required_argument, 0, O_WALL},
        {"out", required_argument, 0, O_OUT},
        {"tollgated", required_argument, 0, O_TOLLGATED},
        {"redis-server", required_argument, 0, O_REDIS},
        {"keep", no_argument, 0, O_KEEP},
        {"list", no_argument, 0, O_LIST},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    bool all = false;
    int c;

    *o = (struct options){
        .windows = 3, .window_s = 60, .step_ms = 1, .rtt_ms = 20,
        .timeout_ms = 1000, .seed = 1, .wall_s = 120, .poisson = true,
        .tollgated = "build/tollgated-sim", .redis_server = "redis-server",
    };
    while ((c = getopt_long(argc, argv, "hv", longs, NULL)) != -1) {
        switch (c) {
        case O_ALL:
            all = true;
            break;
        case O_SCEN: {
            size_t i = 0;

            while (i < N_SCENARIOS && strcmp(SCENARIOS[i].name, optarg) != 0)
                i++;
            if (i == N_SCENARIOS) {
                fprintf(stderr, "bench-sim: no scenario \"%s\"; --list\n",
                        optarg);
                return 2;
            }
            if (o->n_pick < N_SCENARIOS)
                o->pick[o->n_pick++] = &SCENARIOS[i];
            break;
        }
        case O_LIMIT:
            if (o->n_limits < 8)
                o->limits[o->n_limits++] =
                    parse_num("--limit", optarg, 1, 1000000000ULL);
            break;
        case O_WINDOWS:
            o->windows = (unsigned)parse_num("--windows", optarg, 1,
                                             SIM_MAX_WINDOWS);
            break;
        case O_WINDOW_S:
            o->window_s = (unsigned)parse_num("--window-s", optarg, 1, 3600);
            break;
        case O_EDGES:
            o->edges = (unsigned)parse_num("--edges", optarg, 1,
                                           SIM_MAX_EDGES);
            break;
        case O_CLIENTS:
            o->clients = (unsigned)parse_num("--clients", optarg, 1, 100000);
            break;
        case O_INTERVAL:
            o->interval_ms = (uint32_t)parse_num("--interval-ms", optarg,
                                                 100, 60000);
            break;
        case O_FLOOR:
            o->floor = parse_num("--floor", optarg, 1, 1000000000ULL);
            break;
        case O_RTT:
            o->rtt_ms = (unsigned)parse_num("--rtt-ms", optarg, 0, 10000);
            break;
        case O_TIMEOUT:
            o->timeout_ms = (unsigned)parse_num("--timeout-ms", optarg, 1,
                                                60000);
            break;
        case O_STEP:
            o->step_ms = (unsigned)parse_num("--step-ms", optarg, 1, 1000);
            break;
        case O_ARRIVALS:
            if (strcmp(optarg, "poisson") == 0 || strcmp(optarg, "uniform") == 0)
                o->poisson = optarg[0] == 'p';
            else {
                fprintf(stderr, "bench-sim: --arrivals: poisson or uniform\n");
                return 2;
            }
            break;
        case O_SEED:
            o->seed = parse_num("--seed", optarg, 0, UINT64_MAX);
            break;
        case O_WALL:
            o->wall_s = (double)parse_num("--wall-s", optarg, 1, 86400);
            break;
        case O_OUT:
            o->out = optarg;
            break;
        case O_TOLLGATED:
            o->tollgated = optarg;
            break;
        case O_REDIS:
            o->redis_server = optarg;
            break;
        case O_KEEP:
            o->keep = true;
            break;
        case O_LIST:
            list_scenarios();
            exit(0);
        case 'v':
            o->verbose = true;
            break;
        case 'h':
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "bench-sim: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    if (all)
        for (size_t i = 0; i < N_SCENARIOS; i++)
            o->pick[i] = &SCENARIOS[i];
    if (all)
        o->n_pick = N_SCENARIOS;
    if (o->n_pick == 0) {
        fprintf(stderr, "bench-sim: say --all or --scenario NAME (--help)\n");
        return 2;
    }
    if (o->n_limits == 0) {
        o->limits[o->n_limits++] = DEFAULT_LIMITS[0];
        if (all)
            o->limits[o->n_limits++] = DEFAULT_LIMITS[1];
    }
    if (o->out == NULL)
        o->out = all ? "build/bench/sim" : "build/bench/sim-run";
    return 0;
}

/* ---------------------------------------------------------------- files */

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    int rc;

    if (f == NULL) {
        sim_progress("%s: %s", path, strerror(errno));
        return -1;
    }
    fputs(text, f);
    rc = fclose(f);
    return rc == 0 ? 0 : -1;
}

static void hexstr(const uint8_t *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", in[i]);
}

/* The key file (format: coordinator/tollgated.h, "keys"): generated,
 * deterministic, never secret. One edge line per simulated edge name. */
static int write_keys(const char *path, uint64_t seed, unsigned edges)
{
    FILE *f = fopen(path, "w");
    uint8_t k[SIM_SECRET_LEN];
    char hex[2 * SIM_SECRET_LEN + 1];

    if (f == NULL)
        return -1;
    fprintf(f, "# generated by bench-sim (seed %llu); not secret\n",
            (unsigned long long)seed);
    sim_edge_secret(seed ^ 0x636861ULL, 100000, k);
    hexstr(k, sizeof k, hex);
    fprintf(f, "challenge sim %s\n", hex);
    sim_edge_secret(seed ^ 0x636c72ULL, 100001, k);
    hexstr(k, sizeof k, hex);
    fprintf(f, "clearance sim %s\n", hex);
    for (unsigned i = 0; i < edges; i++) {
        sim_edge_secret(seed, i, k);
        hexstr(k, sizeof k, hex);
        fprintf(f, "edge sim-%u %s\n", i, hex);
    }
    return fclose(f) == 0 ? 0 : -1;
}

static int write_policy(const char *path, const struct sim_params *p)
{
    char text[1024], floor[48] = "";

    if (p->floor)
        snprintf(floor, sizeof floor, "\"floor\": %llu, ",
                 (unsigned long long)p->floor);
    snprintf(text, sizeof text,
             "{\"version\": 1, \"sync_interval_ms\": %u, "
             "\"clearance_ttl_s\": 300, \"expected_edges\": %u,\n"
             " \"quotas\": [{\"name\": \"sim\", \"key\": \"ip\", "
             "\"limit\": %llu, \"window_s\": %u, \"path_prefix\": \"/\", "
             "\"methods\": [], \"action\": \"challenge\", %s"
             "\"shadow\": false, \"fail_open\": true, \"deny_after\": 0}]}\n",
             p->interval_ms, p->edges, (unsigned long long)p->limit,
             p->window_s, floor);
    return write_file(path, text);
}

/* First line of a command's output ("" if none). */
static void command_line(const char *cmd, char *out, size_t cap)
{
    FILE *f = popen(cmd, "r");

    out[0] = '\0';
    if (f == NULL)
        return;
    if (fgets(out, (int)cap, f) == NULL)
        out[0] = '\0';
    out[strcspn(out, "\n")] = '\0';
    pclose(f);
}

static bool tollgated_has_keys(const char *tollgated)
{
    char cmd[CMD_CAP], line[16];

    snprintf(cmd, sizeof cmd, "'%s' --help 2>&1 | grep -c -- '--keys'",
             tollgated);
    command_line(cmd, line, sizeof line);
    return atoi(line) > 0;
}

/* ---------------------------------------------------------------- runs */

struct session {
    struct sim_env env;
    char run_dir[DIR_CAP];
    char clock_path[FILE_CAP], keys_path[FILE_CAP], log_path[FILE_CAP];
    unsigned key_edges;         /* edge lines in the key file */
};

static void on_signal(int sig)
{
    sim_children_kill();
    signal(sig, SIG_DFL);
    raise(sig);
}

static int session_start(struct session *s, const struct options *o,
                         unsigned max_edges)
{
    char out_copy[DIR_CAP - 32], cmd[CMD_CAP], port[16], *argv[16];
    const char *args_ping[] = {"PING", NULL};
    char reply[64];
    int fd, n = 0;

    snprintf(out_copy, sizeof out_copy, "%s", o->out);
    snprintf(s->run_dir, sizeof s->run_dir, "%s/sim-run-%d", dirname(out_copy),
             (int)getpid());
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", s->run_dir);
    if (system(cmd) != 0) {
        sim_progress("cannot create %s", s->run_dir);
        return -1;
    }
    snprintf(s->clock_path, sizeof s->clock_path, "%s/clock", s->run_dir);
    snprintf(s->keys_path, sizeof s->keys_path, "%s/keys", s->run_dir);
    fd = open(s->clock_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ftruncate(fd, 4096) < 0) {
        sim_progress("%s: %s", s->clock_path, strerror(errno));
        return -1;
    }
    s->env.clock = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (s->env.clock == MAP_FAILED) {
        sim_progress("mmap %s: %s", s->clock_path, strerror(errno));
        return -1;
    }
    s->key_edges = max_edges;
    if (write_keys(s->keys_path, o->seed, max_edges) < 0) {
        sim_progress("cannot write %s", s->keys_path);
        return -1;
    }
    s->env.run_dir = s->run_dir;
    s->env.tollgated = o->tollgated;
    s->env.redis_server = o->redis_server;
    s->env.verbose = o->verbose;
    if (access(o->tollgated, X_OK) != 0) {
        sim_progress("%s: not built (make %s)", o->tollgated, o->tollgated);
        return -1;
    }
    s->env.keys_supported = tollgated_has_keys(o->tollgated);

    s->env.redis_port = sim_free_port();
    snprintf(port, sizeof port, "%d", s->env.redis_port);
    snprintf(s->log_path, sizeof s->log_path, "%s/redis.log", s->run_dir);
    argv[n++] = (char *)o->redis_server;
    argv[n++] = "--port";
    argv[n++] = port;
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--save";
    argv[n++] = "";
    argv[n++] = "--appendonly";
    argv[n++] = "no";
    argv[n++] = "--dir";
    argv[n++] = s->run_dir;
    argv[n] = NULL;
    s->env.redis_pid = sim_spawn(argv, NULL, s->log_path);
    if (s->env.redis_pid < 0 ||
        sim_wait_port(s->env.redis_port, s->env.redis_pid, 10000) < 0 ||
        sim_redis_cmd(s->env.redis_port, reply, sizeof reply, args_ping) < 0) {
        sim_progress("redis-server did not start (log: %s)", s->log_path);
        return -1;
    }
    s->env.proxy_port = sim_proxy_start(s->env.redis_port);
    if (s->env.proxy_port < 0) {
        sim_progress("cannot start the Redis proxy");
        return -1;
    }
    sim_progress("redis-server pid %d on 127.0.0.1:%d, proxy :%d; "
                 "tollgated-sim %s --keys", (int)s->env.redis_pid,
                 s->env.redis_port, s->env.proxy_port,
                 s->env.keys_supported ? "takes" : "does not take (yet)");
    return 0;
}

/* One run: flush Redis, start tollgated-sim with the run's policy, simulate,
 * stop it. Returns 0, or -1 when the harness failed. */
static int one_run(struct session *s, const struct sim_params *p,
                   struct sim_result *r)
{
    char policy[FILE_CAP], log[FILE_CAP], listen[32], redis[64];
    char clock_env[FILE_CAP + 32];
    char *argv[18], *envp[2] = {clock_env, NULL};
    const char *flush[] = {"FLUSHALL", NULL};
    char reply[64];
    pid_t pid;
    int n = 0, rc, st;

    if (sim_redis_cmd(s->env.redis_port, reply, sizeof reply, flush) < 0) {
        sim_progress("%s: FLUSHALL failed", p->name);
        return -1;
    }
    snprintf(policy, sizeof policy, "%s/policy-%s-%llu.json", s->run_dir,
             p->name, (unsigned long long)p->limit);
    snprintf(log, sizeof log, "%s/tollgated-%s-%llu.log", s->run_dir,
             p->name, (unsigned long long)p->limit);
    if (write_policy(policy, p) < 0)
        return -1;
    s->env.coord_port = sim_free_port();
    snprintf(listen, sizeof listen, "127.0.0.1:%d", s->env.coord_port);
    snprintf(redis, sizeof redis, "redis://127.0.0.1:%d", s->env.proxy_port);
    snprintf(clock_env, sizeof clock_env, "TOLLGATE_SIM_CLOCK=%s",
             s->clock_path);
    /* The clock must be sane before the coordinator starts. */
    __atomic_store_n(s->env.clock, 1800000000000ULL - 10000, __ATOMIC_RELEASE);
    argv[n++] = (char *)s->env.tollgated;
    argv[n++] = "--listen";
    argv[n++] = listen;
    argv[n++] = "--redis";
    argv[n++] = redis;
    argv[n++] = "--policy";
    argv[n++] = policy;
    argv[n++] = "--log-level";
    argv[n++] = "warn";
    /* every simulated edge connects from 127.0.0.1: no per-address cap */
    argv[n++] = "--max-conns-per-ip";
    argv[n++] = "0";
    if (s->env.keys_supported) {
        argv[n++] = "--keys";
        argv[n++] = s->keys_path;
    }
    /* The Redis deadline is real time. Its default (50 ms) is what
     * outage50-redis needs to see the stopped Redis quickly; elsewhere a
     * loaded machine would trip it and turn syncs degraded, so the
     * figures would depend on the machine's load instead of the rule
     * being measured (check_word flags a run where that still happens). */
    if (p->outage != SIM_OUTAGE_REDIS) {
        argv[n++] = "--redis-timeout-ms";
        argv[n++] = SIM_REDIS_TIMEOUT_MS;
    }
    argv[n] = NULL;
    pid = sim_spawn(argv, envp, log);
    if (pid < 0 || sim_wait_port(s->env.coord_port, pid, 10000) < 0) {
        sim_progress("%s: tollgated-sim did not start (log: %s)", p->name, log);
        if (pid > 0)
            sim_stop(pid, 1000);
        return -1;
    }
    sim_progress("%s limit %llu: %u edges, interval %u ms, tollgated-sim "
                 "pid %d", p->name, (unsigned long long)p->limit, p->edges,
                 p->interval_ms, (int)pid);
    rc = sim_run(&s->env, p, r);
    if (!sim_alive(pid)) {
        sim_progress("%s: tollgated-sim died during the run (log: %s)",
                     p->name, log);
        rc = -1;
    }
    st = sim_stop(pid, 5000);
    if (st != 0 && rc == 0) {
        sim_progress("%s: tollgated-sim exited %d (log: %s)", p->name, st, log);
        rc = -1;
    }
    return rc;
}

/* ---------------------------------------------------------------- report */

static const char *fmt_pct(double v, char *buf, size_t n)
{
    if (v < 0)
        return "—";
    snprintf(buf, n, "%.2f", v);
    return buf;
}

static double per_1000(uint64_t x, uint64_t decisions)
{
    return decisions ? 1000.0 * (double)x / (double)decisions : 0;
}

static const char *check_word(const struct sim_result *r)
{
    if (r->truncated)
        return "cut";
    if (!r->check_edges_ok)
        return "**edges≠acked**";
    if (r->check_redis == 0)
        return "**redis≠acked**";
    if (!r->clock_followed)
        return "**real-time windows**";
    if (r->syncs_degraded > 0 && r->p.outage != SIM_OUTAGE_REDIS)
        return "**degraded**";
    return r->check_redis == 1 ? "ok" : "edges ok";
}

static void print_table(const struct sim_result *rs, size_t n)
{
    printf("| scenario | limit | edges | clients | interval | worst-window overshoot %% "
           "| worst after window 0 %% | legit admitted %% | Redis round trips / 1000 decisions "
           "| EVALSHA / 1000 | Redis cmds executed / 1000 (incl. in Lua) "
           "| keys / sync | syncs / edge / s | decisions | real s | check |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for (size_t i = 0; i < n; i++) {
        const struct sim_result *r = &rs[i];
        char a[32], b[32], c[32];
        unsigned clients = (r->p.attack_x > 0) + (r->p.legit_x > 0) +
                           r->p.clients;

        printf("| %s%s | %llu | %u | %u | %u ms | %s | %s | %s | %.2f | %.2f "
               "| %.2f | %.1f | %.2f | %llu | %.1f | %s |\n",
               r->p.name, r->truncated ? " (cut)" : "",
               (unsigned long long)r->p.limit, r->p.edges, clients,
               r->p.interval_ms,
               fmt_pct(r->worst_overshoot_pct, a, sizeof a),
               fmt_pct(r->steady_overshoot_pct, c, sizeof c),
               fmt_pct(r->legit_admitted_pct, b, sizeof b),
               per_1000(r->redis_roundtrips, r->decisions),
               per_1000(r->redis_evalsha, r->decisions),
               per_1000(r->redis_executed, r->decisions),
               r->syncs ? (double)r->keys_in_batch / (double)r->syncs : 0.0,
               r->syncs_per_edge_s,
               (unsigned long long)r->decisions, r->real_s, check_word(r));
    }
}

static int write_csv(const char *prefix, const struct sim_result *rs, size_t n)
{
    char path[FILE_CAP];
    FILE *f;

    snprintf(path, sizeof path, "%s.csv", prefix);
    f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "scenario,limit,edges,interval_ms,window,window_start_ms,"
               "attacker_attempts,attacker_admitted,attacker_challenged,"
               "attacker_denied,attacker_admitted_over_limit,overshoot_pct,"
               "legit_attempts,legit_admitted,legit_admitted_pct,"
               "acked_attacker,acked_legit,redis_attacker,redis_legit,"
               "clients,worst_key_admitted\n");
    for (size_t i = 0; i < n; i++) {
        const struct sim_result *r = &rs[i];

        for (unsigned k = 0; k < r->n_windows; k++) {
            const struct sim_window *w = &r->w[k];
            double ratio = (double)w->worst_admitted / (double)r->p.limit;

            fprintf(f, "%s,%llu,%u,%u,%u,%llu,%llu,%llu,%llu,%llu,%.5f,%.3f,"
                       "%llu,%llu,%.3f,%llu,%llu,%lld,%lld,%u,%llu\n",
                    r->p.name, (unsigned long long)r->p.limit, r->p.edges,
                    r->p.interval_ms, k, (unsigned long long)w->start_ms,
                    (unsigned long long)w->attacker.attempts,
                    (unsigned long long)w->attacker.admitted,
                    (unsigned long long)w->attacker.challenged,
                    (unsigned long long)w->attacker.denied,
                    (double)w->attacker.admitted / (double)r->p.limit,
                    ratio > 1 ? (ratio - 1) * 100 : 0.0,
                    (unsigned long long)w->legit.attempts,
                    (unsigned long long)w->legit.admitted,
                    w->legit.attempts ? 100.0 * (double)w->legit.admitted /
                                            (double)w->legit.attempts : 0.0,
                    (unsigned long long)w->acked_attacker,
                    (unsigned long long)w->acked_legit,
                    (long long)w->redis_attacker, (long long)w->redis_legit,
                    r->p.clients, (unsigned long long)w->worst_admitted);
        }
    }
    return fclose(f) == 0 ? 0 : -1;
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", *s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

static void json_fig(FILE *f, const char *name, double v, const char *unit,
                     bool last)
{
    fprintf(f, "      \"%s\": {\"value\": ", name);
    if (isfinite(v) && v >= 0)
        fprintf(f, "%.4f", v);
    else
        fputs("null", f);
    fprintf(f, ", \"unit\": \"%s\"}%s\n", unit, last ? "" : ",");
}

static int write_json(const char *prefix, const struct options *o,
                      const struct session *s, const struct sim_result *rs,
                      size_t n, const char *commit, double total_s)
{
    char path[FILE_CAP];
    time_t now = time(NULL);
    char when[32];
    FILE *f;

    snprintf(path, sizeof path, "%s.json", prefix);
    f = fopen(path, "w");
    if (f == NULL)
        return -1;
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    fprintf(f, "{\n  \"suite\": \"sim\",\n  \"generated_at\": \"%s\",\n", when);
    fprintf(f, "  \"coordinator\": ");
    json_str(f, commit);
    fprintf(f, ",\n  \"coordinator_checks_signatures\": %s,\n",
            s->env.keys_supported ? "true" : "false");
    fprintf(f, "  \"settings\": {\"windows\": %u, \"window_s\": %u, "
               "\"step_ms\": %u, \"rtt_ms\": %u, \"outage_timeout_ms\": %u, "
               "\"arrivals\": \"%s\", \"seed\": %llu, \"wall_cap_s\": %.0f},\n",
            o->windows, o->window_s, o->step_ms, o->rtt_ms, o->timeout_ms,
            o->poisson ? "poisson" : "uniform", (unsigned long long)o->seed,
            o->wall_s);
    fprintf(f, "  \"counted\": {\n"
               "    \"redis_round_trips\": \"client writes to Redis that "
               "follow a reply, counted by a proxy on the coordinator's Redis "
               "socket (a pipeline is one trip), during the measured windows\",\n"
               "    \"redis_commands_sent\": \"top-level RESP commands the "
               "coordinator sent, same proxy\",\n"
               "    \"redis_commands_executed\": \"INFO "
               "total_commands_processed delta, which also counts every "
               "command a Lua script runs; the simulator's own INFO excluded\",\n"
               "    \"evalsha\": \"INFO commandstats evalsha + eval calls "
               "delta\",\n"
               "    \"decisions\": \"tg_verify calls in the measured windows, "
               "every key\",\n"
               "    \"worst_window_overshoot\": \"per window, the key that "
               "admitted most (attacker, legit client or busiest fleet "
               "client) against the limit\",\n"
               "    \"keys_per_sync\": \"(quota, key) items per sync "
               "request sent in the measured windows\"\n  },\n");
    fprintf(f, "  \"total_real_s\": %.1f,\n  \"runs\": [\n", total_s);
    for (size_t i = 0; i < n; i++) {
        const struct sim_result *r = &rs[i];

        fprintf(f, "    {\n      \"scenario\": \"%s\",\n      \"what\": ",
                r->p.name);
        json_str(f, r->p.what);
        fprintf(f, ",\n      \"limit\": %llu, \"window_s\": %u, \"edges\": %u, "
                   "\"interval_ms\": %u, \"floor\": %llu, \"attack_x\": %.2f, "
                   "\"hot_share\": %.2f, \"legit_x\": %.2f, \"clients\": %u, "
                   "\"client_x\": %.2f, \"outage\": \"%s\", "
                   "\"outage_ms\": %u,\n",
                (unsigned long long)r->p.limit, r->p.window_s, r->p.edges,
                r->p.interval_ms, (unsigned long long)r->p.floor,
                r->p.attack_x, r->p.hot_share, r->p.legit_x, r->p.clients,
                r->p.client_x,
                r->p.outage == SIM_OUTAGE_NETWORK ? "network"
                : r->p.outage == SIM_OUTAGE_REDIS ? "redis-sigstop" : "none",
                r->p.outage_ms);
        fprintf(f, "      \"windows_completed\": %u, \"truncated\": %s, ",
                r->n_windows, r->truncated ? "true" : "false");
        fprintf(f, "\"truncated_why\": ");
        json_str(f, r->truncated_why);
        fprintf(f, ",\n      \"check\": {\"edges_decided_equals_acked\": %s, "
                   "\"redis_equals_acked\": %s, "
                   "\"windows_follow_simulated_clock\": %s, \"detail\": ",
                r->check_edges_ok ? "true" : "false",
                r->check_redis == 1 ? "true" : r->check_redis == 0 ? "false"
                                                                   : "null",
                r->clock_followed ? "true" : "false");
        json_str(f, r->check_detail);
        fprintf(f, "},\n      \"per_window_admitted_over_limit\": [");
        for (unsigned k = 0; k < r->n_windows; k++)
            fprintf(f, "%s%.5f", k ? ", " : "",
                    (double)r->w[k].worst_admitted / (double)r->p.limit);
        fprintf(f, "],\n");
        json_fig(f, "worst_window_overshoot", r->worst_overshoot_pct, "%",
                 false);
        json_fig(f, "worst_overshoot_after_first_window",
                 r->steady_overshoot_pct, "%", false);
        json_fig(f, "legit_admitted", r->legit_admitted_pct, "%", false);
        json_fig(f, "redis_round_trips_per_1000_decisions",
                 per_1000(r->redis_roundtrips, r->decisions),
                 "round trips / 1000 decisions", false);
        json_fig(f, "redis_commands_sent_per_1000_decisions",
                 per_1000(r->redis_commands, r->decisions),
                 "commands / 1000 decisions", false);
        json_fig(f, "redis_commands_executed_per_1000_decisions",
                 per_1000(r->redis_executed, r->decisions),
                 "commands / 1000 decisions", false);
        json_fig(f, "evalsha_per_1000_decisions",
                 per_1000(r->redis_evalsha, r->decisions),
                 "EVALSHA / 1000 decisions", false);
        json_fig(f, "syncs_per_edge_per_s", r->syncs_per_edge_s,
                 "syncs / edge / simulated s", false);
        json_fig(f, "keys_per_sync",
                 r->syncs ? (double)r->keys_in_batch / (double)r->syncs : 0,
                 "keys / sync request", false);
        json_fig(f, "decisions", (double)r->decisions, "decisions", false);
        json_fig(f, "syncs", (double)r->syncs, "sync requests", false);
        json_fig(f, "syncs_failed", (double)r->syncs_failed, "sync requests",
                 false);
        json_fig(f, "syncs_degraded", (double)r->syncs_degraded,
                 "sync requests", false);
        json_fig(f, "sync_answers_refused", (double)r->sync_rejected,
                 "sync answers", false);
        json_fig(f, "real_time", r->real_s, "s", true);
        fprintf(f, "    }%s\n", i + 1 < n ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    return fclose(f) == 0 ? 0 : -1;
}

/* Overshoot against sync interval, one line per limit, from the runs that
 * form the interval series. Skipped (with a warning) without gnuplot. */
static void write_plot(const char *prefix, const struct sim_result *rs,
                       size_t n, const struct options *o)
{
    char dat[FILE_CAP], gp[FILE_CAP], png[FILE_CAP], cmd[CMD_CAP];
    size_t points = 0;
    double ymax = 3;            /* the 2 % target line stays in view */
    FILE *f;

    snprintf(dat, sizeof dat, "%s-overshoot.dat", prefix);
    snprintf(gp, sizeof gp, "%s-overshoot.gp", prefix);
    snprintf(png, sizeof png, "%s-overshoot.png", prefix);
    f = fopen(dat, "w");
    if (f == NULL)
        return;
    for (size_t li = 0; li < o->n_limits; li++) {
        const struct sim_result *pts[N_SCENARIOS];
        size_t np = 0;

        fprintf(f, "# limit %llu\n# interval_ms overshoot_pct\n",
                (unsigned long long)o->limits[li]);
        for (size_t i = 0; i < n && np < N_SCENARIOS; i++) {
            bool series = false;

            for (size_t s = 0; s < N_SCENARIOS; s++)
                if (strcmp(SCENARIOS[s].name, rs[i].p.name) == 0)
                    series = SCENARIOS[s].interval_series;
            if (series && rs[i].p.limit == o->limits[li] && !rs[i].truncated)
                pts[np++] = &rs[i];
        }
        for (size_t i = 1; i < np; i++)   /* by interval: a few points */
            for (size_t j = i; j > 0 &&
                 pts[j]->p.interval_ms < pts[j - 1]->p.interval_ms; j--) {
                const struct sim_result *tmp = pts[j];

                pts[j] = pts[j - 1];
                pts[j - 1] = tmp;
            }
        for (size_t i = 0; i < np; i++) {
            fprintf(f, "%u %.4f\n", pts[i]->p.interval_ms,
                    pts[i]->worst_overshoot_pct);
            if (pts[i]->worst_overshoot_pct * 1.15 > ymax)
                ymax = pts[i]->worst_overshoot_pct * 1.15;
        }
        points += np;
        fprintf(f, "\n\n");
    }
    fclose(f);
    if (points < 2)
        return;
    f = fopen(gp, "w");
    if (f == NULL)
        return;
    fprintf(f, "set terminal pngcairo size 800,500 noenhanced\n"
               "set output '%s'\n"
               "set title 'tollgate: worst-window overshoot, one client at "
               "10x over 50 edges'\n"
               "set xlabel 'sync interval (ms)'\nset ylabel 'overshoot (%%)'\n"
               "set logscale x\nset grid\nset key top left\n"
               "set yrange [0:%.2f]\n"
               "set xtics (250, 500, 1000, 2000, 5000)\n"
               "plot 2 with lines dt 2 lc rgb 'gray' title 'target 2 %%', ",
            png, ymax);
    for (size_t li = 0; li < o->n_limits; li++)
        fprintf(f, "%s'%s' index %zu using 1:2 with linespoints lw 2 "
                   "title 'limit %llu / %u s'", li ? ", " : "", dat, li,
                (unsigned long long)o->limits[li], o->window_s);
    fprintf(f, "\n");
    fclose(f);
    if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
        sim_progress("warning: gnuplot not found (deploy/install-deps.sh "
                     "installs gnuplot-nox): no %s; data in %s", png, dat);
        return;
    }
    snprintf(cmd, sizeof cmd, "gnuplot '%s'", gp);
    if (system(cmd) != 0)
        sim_progress("warning: gnuplot failed; no %s", png);
    else
        sim_progress("wrote %s", png);
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    static struct sim_result results[MAX_RUNS];
    struct options o;
    struct session s = {0};
    char commit[256] = "", dirty[8] = "";
    size_t n_runs = 0;
    unsigned max_edges = 0;
    int rc, failed = 0;

    real_start = sim_real_now_s();
    rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < o.n_pick; i++) {
        unsigned e = o.edges ? o.edges : o.pick[i]->edges;

        if (e > max_edges)
            max_edges = e;
    }
    command_line("git log -1 --format='%h %cI' -- coordinator 2>/dev/null",
                 commit, sizeof commit);
    command_line("git status --porcelain -- coordinator 2>/dev/null | head -1",
                 dirty, sizeof dirty);
    if (dirty[0] != '\0' && strlen(commit) + 40 < sizeof commit)
        strcat(commit, " + uncommitted changes in coordinator/");
    if (session_start(&s, &o, max_edges) < 0) {
        sim_children_kill();
        return 1;
    }
    for (size_t li = 0; li < o.n_limits && !failed; li++) {
        for (size_t i = 0; i < o.n_pick && !failed; i++) {
            const struct scenario *sc = o.pick[i];
            struct sim_params p = {0};

            if (n_runs == MAX_RUNS)
                break;
            snprintf(p.name, sizeof p.name, "%s", sc->name);
            p.what = sc->what;
            p.limit = o.limits[li];
            p.window_s = o.window_s;
            p.windows = o.windows;
            p.edges = o.edges ? o.edges : sc->edges;
            p.interval_ms = o.interval_ms ? o.interval_ms : sc->interval_ms;
            p.floor = o.floor;
            p.attack_x = sc->attack_x;
            p.hot_share = sc->hot_share;
            p.legit_x = sc->legit_x;
            if (sc->clients > 0) {
                p.clients = o.clients ? o.clients
                                      : fleet_clients(sc->clients, p.limit);
                p.client_x = sc->client_x;
            }
            p.outage = sc->outage;
            p.outage_ms = sc->outage != SIM_OUTAGE_NONE ? 10000 : 0;
            p.rtt_ms = o.rtt_ms;
            p.timeout_ms = o.timeout_ms;
            p.step_ms = o.step_ms;
            p.poisson = o.poisson;
            p.seed = o.seed;
            p.wall_cap_s = o.wall_s;
            /* Warm-up, windows and the longest drain, in steps. */
            p.step_cap = ((uint64_t)p.interval_ms + 2000 +
                          (uint64_t)p.windows * p.window_s * 1000 + 60000) /
                         p.step_ms + 10;
            if (one_run(&s, &p, &results[n_runs]) < 0)
                failed = 1;
            else {
                const struct sim_result *r = &results[n_runs];

                sim_progress("%s limit %llu: overshoot %.2f%%, legit %.2f%%, "
                             "%.1fs real; %s", r->p.name,
                             (unsigned long long)r->p.limit,
                             r->worst_overshoot_pct, r->legit_admitted_pct,
                             r->real_s, r->check_detail);
                n_runs++;
            }
        }
    }
    sim_stop(s.env.redis_pid, 5000);
    print_table(results, n_runs);
    if (write_csv(o.out, results, n_runs) < 0 ||
        write_json(o.out, &o, &s, results, n_runs, commit,
                   sim_real_now_s() - real_start) < 0) {
        sim_progress("cannot write %s.csv / %s.json", o.out, o.out);
        failed = 1;
    }
    write_plot(o.out, results, n_runs, &o);
    sim_progress("wrote %s.csv and %s.json (%zu runs, %.1fs)", o.out, o.out,
                 n_runs, sim_real_now_s() - real_start);
    if (!failed && !o.keep) {
        char cmd[CMD_CAP];

        snprintf(cmd, sizeof cmd, "rm -rf '%s'", s.run_dir);
        if (system(cmd) != 0)
            sim_progress("warning: could not remove %s", s.run_dir);
    } else {
        sim_progress("run directory kept: %s", s.run_dir);
    }
    return failed;
}
