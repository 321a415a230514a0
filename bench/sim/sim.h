/* sim.h — the accuracy simulator's hub header (build/bench-sim).
 *
 * bench-sim runs the real edge core (libtollgate.a, one tg_edge per
 * simulated edge) against a real coordinator (build/tollgated-sim, whose
 * wall clock is the simulator's, see simclock.c) and a real redis-server,
 * in simulated time, and measures how far the global count overshoots the
 * limit, how much legitimate traffic is admitted, and what it costs in
 * Redis round trips and syncs. Files:
 *   sim.c    command line, scenario table, the report (Markdown, CSV, JSON,
 *            gnuplot)
 *   world.c  one run: edges, clients, the sync network, the tallies
 *   http.c   POST /v1/sync over a keep-alive socket, signed per edge
 *   procs.c  child processes (redis-server, tollgated-sim), a RESP client,
 *            and the counting proxy between the coordinator and Redis
 */
#ifndef SIM_H
#define SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SIM_MAX_EDGES   1024
#define SIM_MAX_WINDOWS 64
#define SIM_SECRET_LEN  32      /* bytes of each generated key */

/* ------------------------------------------------------------ scenarios */
enum sim_outage {
    SIM_OUTAGE_NONE = 0,
    SIM_OUTAGE_NETWORK,         /* every sync fails (black hole) */
    SIM_OUTAGE_REDIS            /* redis-server SIGSTOPped: degraded */
};

/* What one run simulates. Rates are per window, as multiples of the limit. */
struct sim_params {
    char name[48];
    const char *what;           /* one line for the report */
    uint64_t limit;
    uint32_t window_s;
    unsigned windows;           /* measured windows after the attack starts */
    unsigned edges;
    uint32_t interval_ms;       /* policy sync_interval_ms */
    uint64_t floor;             /* 0: the coordinator's default */
    double attack_x;            /* attacker: x limit per window; 0 = none */
    double hot_share;           /* share of the attacker's requests on edge
                                   0; 0 = spread uniformly */
    double legit_x;             /* legit client: x its limit; 0 = none */
    unsigned legit_edges;       /* edges the legit client uses; 0 = all */
    unsigned clients;           /* fleet: distinct clients (keys) besides
                                   the attacker and legit client; 0 = none */
    double client_x;            /* each fleet client: x its limit */
    enum sim_outage outage;
    uint32_t outage_ms;         /* in the middle of the measured windows */
    uint32_t rtt_ms;            /* sync round trip, simulated */
    uint32_t timeout_ms;        /* a sync into the black hole fails after */
    uint32_t step_ms;
    bool poisson;               /* arrivals: Poisson, or evenly spaced */
    uint64_t seed;
    double wall_cap_s;          /* real seconds; the run stops there */
    uint64_t step_cap;          /* steps; the run stops there */
};

/* ------------------------------------------------------------ results */
struct sim_counts {
    uint64_t attempts, admitted, denied, challenged;
};

struct sim_window {
    uint64_t start_ms;          /* simulated, aligned to the window */
    struct sim_counts attacker;
    struct sim_counts legit;    /* with a fleet: every fleet client */
    uint64_t worst_admitted;    /* most any one key admitted in it */
    uint64_t acked_attacker;    /* admitted counts the coordinator acked
                                   while its clock was in this window */
    uint64_t acked_legit;
    int64_t redis_attacker;     /* Redis "a" at the window's end; -1 unread */
    int64_t redis_legit;
};

struct sim_result {
    struct sim_params p;
    unsigned n_windows;         /* completed (less than asked: truncated) */
    struct sim_window w[SIM_MAX_WINDOWS];
    bool truncated;
    char truncated_why[96];
    double worst_overshoot_pct; /* max over windows and keys */
    double steady_overshoot_pct;/* the same from the second window on (the
                                   first starts cold: no previous window,
                                   every edge at its floor); -1: 1 window */
    double legit_admitted_pct;  /* -1: no legit client */
    uint64_t decisions;         /* tg_verify calls in the measured windows */
    uint64_t keys_in_batch;     /* sum over the syncs in the windows of the
                                   keys each batch carried */
    uint64_t decisions_total;   /* including the drain */
    uint64_t syncs;             /* sync requests sent in the windows */
    uint64_t syncs_failed;      /* network failure, non-200 (whole run) */
    uint64_t syncs_degraded;    /* answered degraded (whole run) */
    uint64_t sync_rejected;     /* tg_sync_response refused the answer */
    double syncs_per_edge_s;
    uint64_t redis_roundtrips;  /* client writes after a reply (proxy) */
    uint64_t redis_commands;    /* top-level commands sent (proxy) */
    uint64_t redis_executed;    /* INFO total_commands_processed, incl.
                                   the commands run inside scripts */
    uint64_t redis_evalsha;     /* INFO commandstats evalsha + eval */
    double real_s;
    /* Consistency: what the edges decided against what they reported and
     * the coordinator acknowledged, and that against Redis. */
    bool check_edges_ok;        /* decided == acked, per key, after drain */
    int check_redis;            /* 1 match, 0 mismatch, -1 not comparable */
    char check_detail[512];
    bool clock_followed;        /* Redis windows follow the simulated clock */
};

/* ------------------------------------------------------------ environment */
struct sim_env {
    const char *run_dir;        /* build/bench/sim-run-<pid> */
    const char *tollgated;      /* path of tollgated-sim */
    const char *redis_server;
    uint64_t *clock;            /* the shared simulated wall clock */
    int redis_port;
    pid_t redis_pid;
    int proxy_port;
    int coord_port;             /* tollgated-sim of the current run */
    bool keys_supported;        /* tollgated-sim --help lists --keys */
    bool verbose;
};

/* world.c */
int sim_run(const struct sim_env *env, const struct sim_params *p,
            struct sim_result *out);

/* http.c: one keep-alive connection to the coordinator. */
struct sim_http;
struct sim_http *sim_http_open(int port);
void sim_http_close(struct sim_http *h);
/* POSTs body to /v1/sync signed for edge_id with secret at ts_ms; on 200
 * copies the answer to resp (cap bytes) and sets *resp_len. Returns the
 * HTTP status, or -1 on a network error or timeout (the connection is
 * reopened next time). */
int sim_http_sync(struct sim_http *h, const char *edge_id,
                  const uint8_t *secret, size_t secret_len, uint64_t ts_ms,
                  const uint8_t *body, size_t len, uint8_t *resp, size_t cap,
                  size_t *resp_len, int timeout_ms);
void sim_edge_secret(uint64_t seed, unsigned edge, uint8_t out[SIM_SECRET_LEN]);

/* procs.c */
int sim_free_port(void);
int sim_send_all(int fd, const void *buf, size_t len);  /* 0 or -1 */
pid_t sim_spawn(char *const argv[], char *const envp_extra[],
                const char *log_path);
int sim_stop(pid_t pid, int grace_ms);  /* SIGTERM, then SIGKILL */
bool sim_alive(pid_t pid);
void sim_children_kill(void);           /* every child still running */
int sim_wait_port(int port, pid_t pid, int timeout_ms);
/* One Redis command (args NULL-terminated) on a fresh connection; the raw
 * RESP reply (bulk payloads inline) goes to out. Returns 0 or -1. */
int sim_redis_cmd(int port, char *out, size_t cap, const char *const args[]);
uint64_t sim_info_field(const char *info, const char *field);
uint64_t sim_info_cmdstat_calls(const char *info, const char *cmd);
int sim_proxy_start(int redis_port);    /* returns its port, or -1 */
void sim_proxy_counts(uint64_t *commands, uint64_t *roundtrips);

/* sim.c */
double sim_real_now_s(void);
void sim_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
