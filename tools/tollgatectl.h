/* tollgatectl.h — the hub header of tollgatectl, the command-line client of
 * the coordinator's quota admin API (/v1/policy, /v1/quotas, /v1/keys,
 * /v1/audit).
 *
 *   tollgatectl.c  main: global options, the command table, --help
 *   ctl_args.c     command-line words to values: options, numbers, URL path
 *                  segments, `quota set` flags onto a quota object (pure)
 *   ctl_render.c   API answers to aligned text tables (pure)
 *   ctl_http.c     one HTTP exchange with the coordinator (libcurl)
 *
 * The pure files do no I/O but writing to the FILE they are given, so
 * tests/unit/test_tollgatectl.c includes them as they are.
 */
#ifndef TOLLGATECTL_H
#define TOLLGATECTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

/* ------------------------------------------------------------ exit codes */
#define CTL_EXIT_OK     0
#define CTL_EXIT_API    1   /* the API answered an error, or no answer */
#define CTL_EXIT_USAGE  2   /* bad command line or unreadable input file */

/* ------------------------------------------------------------ options
 * (ctl_args.c) An option is "--name VALUE", "--name=VALUE" or a flag
 * "--name". A value option stores its argument in *arg (borrowed from
 * argv); a flag stores `on` in *flag (so --shadow / --no-shadow can share
 * one int, the last one given winning). A table ends with name == NULL. */
struct ctl_opt {
    const char *name;
    const char **arg;
    int *flag;
    int on;
};

/* Splits argv[0..argc) into options (stored through opts) and the other
 * words, copied in order to pos (room for argc) with their count in *npos.
 * "-" is a word (stdin); "--" makes every later argument a word. With
 * keep_unknown, options not in opts and "--" with what follows are kept
 * as words, untouched, for a second pass; without, an unknown option is
 * an error. Returns 0, or -1 with err set. */
int ctl_opts_parse(int argc, char **argv, const struct ctl_opt *opts,
                   bool keep_unknown, char **pos, int *npos, char *err,
                   size_t errlen);

/* Decimal without sign, spaces or leading zeros beyond "0", in
 * [min, max]. Returns 0, or -1 with err naming `what`. */
int ctl_parse_u64(const char *s, uint64_t min, uint64_t max,
                  const char *what, uint64_t *out, char *err, size_t errlen);

/* Percent-encodes s as one URL path segment: every byte outside RFC 3986
 * "unreserved" becomes %XX, and a segment of only dots ("." or "..") is
 * encoded whole so no one removes it as a dot-segment. Returns the length
 * written (NUL excluded), or -1 when s is empty or out too small. */
long ctl_path_segment(const char *s, char *out, size_t outlen);

/* `quota set` options; the tri-state flags are CTL_UNSET unless given. */
enum { CTL_UNSET = 0, CTL_ON, CTL_OFF };

struct ctl_quota_flags {
    const char *limit, *window, *key, *prefix, *action, *floor, *burst,
               *deny_after, *methods;
    int shadow, fail_open, require_token;
};

/* The quota object to PUT for `quota set NAME`: a copy of `current` (the
 * quota as the server has it, NULL when it does not exist) with only the
 * given fields changed, or a new quota with the defaults key "ip",
 * window_s 60, action "challenge" (then --limit is required). Values are
 * checked for syntax only; the server validates the policy. Returns a new
 * reference (json_decref) in *out and 0, or -1 with err set. */
int ctl_quota_edit(const json_t *current, const char *name,
                   const struct ctl_quota_flags *f, json_t **out, char *err,
                   size_t errlen);

/* ------------------------------------------------------------ rendering
 * (ctl_render.c) Text that ends up on a terminal goes through a table or
 * ctl_clean(): control bytes from the server become '?', so a key or an
 * audit detail cannot move the cursor or change colours. */
struct ctl_table {
    size_t ncols;
    unsigned right;              /* bit i: right-align column i */
    char **cells;                /* row-major, heading row first; owned */
    size_t ncells, cap;
    bool failed;                 /* an allocation failed; print says so */
};

/* heads: ncols column names, or NULL for a table without a heading row.
 * ctl_table_free() releases what the adds made. */
void ctl_table_init(struct ctl_table *t, size_t ncols,
                    const char *const *heads, unsigned right);
void ctl_table_add(struct ctl_table *t, const char *s);
void ctl_table_addf(struct ctl_table *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void ctl_table_add_json(struct ctl_table *t, const json_t *v);
/* Columns two spaces apart, widths in UTF-8 characters, no trailing
 * blanks. Returns 0, or -1 (nothing printed) when an add failed. */
int ctl_table_print(const struct ctl_table *t, FILE *out);
void ctl_table_free(struct ctl_table *t);

/* Copies s to out (truncating at a character boundary), control bytes
 * replaced by '?'. Returns out. */
const char *ctl_clean(const char *s, char *out, size_t outlen);
/* A time in unix ms (or s, below 1e11: older fields count seconds) as
 * "2024-05-01T12:00:03Z"; 0 or less is "-". Returns out. */
const char *ctl_format_time(long long t, char *out, size_t outlen);

/* Readable forms of API answers. Each returns 0, or -1 when the value is
 * not the expected shape (the caller then says so). */
int ctl_render_policy(const json_t *doc, FILE *out);
int ctl_render_quota(const json_t *quota, FILE *out);
int ctl_render_versions(const json_t *answer, FILE *out);
int ctl_render_audit(const json_t *answer, FILE *out);
int ctl_render_fields(const json_t *obj, FILE *out);

/* ------------------------------------------------------------ http
 * (ctl_http.c) libcurl rather than a small socket client: the admin API
 * will be reached over TLS (and through proxies) in later issues, and
 * libcurl brings both, plus timeouts, keep-alive and IPv6, in one
 * dependency the package manager already ships. */
struct ctl_http {
    void *curl;                  /* CURL *, reused: keep-alive */
    const char *base;            /* "http://host:port", no trailing '/' */
    const char *token;           /* bearer token; NULL: none. Never shown */
    long timeout_ms;
};

struct ctl_reply {
    long status;                 /* HTTP status; 0: no answer */
    json_t *json;                /* the 2xx body (json_decref); else NULL */
    char etag[64];               /* ETag header as sent, "" when none */
};

/* base must outlive h. Returns 0, or -1 with err set. */
int ctl_http_open(struct ctl_http *h, const char *base, const char *token,
                  long timeout_ms, char *err, size_t errlen);
void ctl_http_close(struct ctl_http *h);

/* method base+path, sending body (NULL: none) as JSON and If-Match when
 * if_match is not NULL. Returns 0 when the server answered 2xx with a
 * JSON object (r->json); else -1 with err set to "<status> <title>:
 * <detail>" for an error answer (a problem+json body, or what there is)
 * or "<METHOD> <url>: <reason>" when there was no usable answer.
 * r->status tells which. */
int ctl_http_call(struct ctl_http *h, const char *method, const char *path,
                  const json_t *body, const char *if_match,
                  struct ctl_reply *r, char *err, size_t errlen);

#endif
