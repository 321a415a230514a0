/* tollgatectl.c — command-line client of the coordinator's quota admin API.
 *
 *   tollgatectl [--url URL] [--token TOKEN] [--timeout-ms MS] COMMAND ...
 *
 * Exit codes: 0 done; 1 the API answered an error or could not be reached
 * (stderr: "tollgatectl: <status> <title>: <detail>", or the method, URL
 * and reason); 2 usage error (bad command line, or an input file that
 * cannot be read or is not JSON). `tollgatectl --help` lists the commands.
 *
 * Global options may stand anywhere; a command's own options after its
 * words. Every command is one small function over ctl_http_call(); the
 * command table below is also the help text.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tollgatectl.h"

#define ERR_MAX 1024

struct ctl {
    struct ctl_http http;
    char err[ERR_MAX];
};

/* Options of the commands, filled by ctl_opts_parse() through the tables
 * below (a one-shot program: one set is enough). */
static struct {
    int json;
    const char *if_match, *limit, *before;
    struct ctl_quota_flags q;
} opt;

static const struct ctl_opt json_opts[] = {
    {"--json", NULL, &opt.json, 1}, {NULL, NULL, NULL, 0}};
static const struct ctl_opt apply_opts[] = {
    {"--if-match", &opt.if_match, NULL, 0}, {NULL, NULL, NULL, 0}};
static const struct ctl_opt audit_opts[] = {
    {"--json", NULL, &opt.json, 1}, {"--limit", &opt.limit, NULL, 0},
    {"--before", &opt.before, NULL, 0}, {NULL, NULL, NULL, 0}};
static const struct ctl_opt quota_set_opts[] = {
    {"--limit", &opt.q.limit, NULL, 0},
    {"--window", &opt.q.window, NULL, 0},
    {"--key", &opt.q.key, NULL, 0},
    {"--prefix", &opt.q.prefix, NULL, 0},
    {"--methods", &opt.q.methods, NULL, 0},
    {"--action", &opt.q.action, NULL, 0},
    {"--floor", &opt.q.floor, NULL, 0},
    {"--burst", &opt.q.burst, NULL, 0},
    {"--deny-after", &opt.q.deny_after, NULL, 0},
    {"--shadow", NULL, &opt.q.shadow, CTL_ON},
    {"--no-shadow", NULL, &opt.q.shadow, CTL_OFF},
    {"--fail-open", NULL, &opt.q.fail_open, CTL_ON},
    {"--fail-closed", NULL, &opt.q.fail_open, CTL_OFF},
    {"--require-token", NULL, &opt.q.require_token, CTL_ON},
    {"--no-require-token", NULL, &opt.q.require_token, CTL_OFF},
    {NULL, NULL, NULL, 0}};

/* ------------------------------------------------------------ helpers */

/* Prints the error of the last failed step; the exit code to return. */
static int fail(struct ctl *c, int code)
{
    fprintf(stderr, "tollgatectl: %s\n", c->err);
    return code;
}

/* prefix + segment(a) [+ mid + segment(b)]: names and keys percent-
 * encoded, so '/', '|', '%' in a key stay inside its segment. */
static int build_path(struct ctl *c, char *out, size_t outlen,
                      const char *prefix, const char *a, const char *mid,
                      const char *b)
{
    char ea[3 * 1024 + 1], eb[3 * 1024 + 1] = "";

    if (ctl_path_segment(a, ea, sizeof ea) < 0 ||
        (b != NULL && ctl_path_segment(b, eb, sizeof eb) < 0)) {
        snprintf(c->err, sizeof c->err, "names and keys must be 1 to 1024 "
                 "bytes");
        return -1;
    }
    snprintf(out, outlen, "%s%s%s%s", prefix, ea, b ? mid : "", eb);
    return 0;
}

/* Prints why an exchange failed; the exit code. A refused token gets a
 * hint, since that is the usual cause. */
static int report(struct ctl *c, const struct ctl_reply *r)
{
    fprintf(stderr, "tollgatectl: %s\n", c->err);
    if (r->status == 401 || r->status == 403)
        fprintf(stderr, "tollgatectl: the admin API wants a valid token "
                "with the right role (--token or TOLLGATE_TOKEN)\n");
    return CTL_EXIT_API;
}

/* One exchange; the JSON answer in *out (json_decref), or the error
 * reported and -1. */
static int call(struct ctl *c, const char *method, const char *path,
                const json_t *body, const char *if_match, json_t **out)
{
    struct ctl_reply r;

    if (ctl_http_call(&c->http, method, path, body, if_match, &r, c->err,
                      sizeof c->err) != 0) {
        report(c, &r);
        return -1;
    }
    *out = r.json;
    return 0;
}

/* Prints a JSON answer as is (indented) or through a renderer. */
static int show(struct ctl *c, json_t *answer,
                int (*render)(const json_t *, FILE *))
{
    int rc = 0;

    if (opt.json || render == NULL) {
        char *s = json_dumps(answer, JSON_INDENT(2));
        rc = s != NULL && printf("%s\n", s) >= 0 ? 0 : -1;
        free(s);
    } else if (render(answer, stdout) != 0) {
        snprintf(c->err, sizeof c->err, "unexpected answer from the server "
                 "(try --json)");
        rc = -1;
    }
    json_decref(answer);
    return rc == 0 ? CTL_EXIT_OK : fail(c, CTL_EXIT_API);
}

/* The new policy version in an answer ({"version": n, ...}). */
static long long version_of(const json_t *answer)
{
    return (long long)json_integer_value(json_object_get(answer, "version"));
}

/* Prints what a change did, then the policy version it made. */
static int done(json_t *answer, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int done(json_t *answer, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    printf("%s (policy version %lld)\n", ctl_clean(msg, msg, sizeof msg),
           version_of(answer));
    json_decref(answer);
    return CTL_EXIT_OK;
}

static int parse_version(struct ctl *c, const char *s, char *out,
                         size_t outlen)
{
    uint64_t v;

    if (ctl_parse_u64(s, 1, INT64_MAX, "version", &v, c->err,
                      sizeof c->err) != 0)
        return -1;
    snprintf(out, outlen, "%llu", (unsigned long long)v);
    return 0;
}

/* GET path and show the answer: the read-only commands. */
static int fetch(struct ctl *c, const char *path,
                 int (*render)(const json_t *, FILE *))
{
    json_t *answer;

    if (call(c, "GET", path, NULL, NULL, &answer) != 0)
        return CTL_EXIT_API;
    return show(c, answer, render);
}

/* ------------------------------------------------------------ commands */

static int cmd_get(struct ctl *c, char **args)
{
    (void)args;
    return fetch(c, "/v1/policy", ctl_render_policy);
}

/* PUT the document with If-Match: the given version, else the ETag of
 * the policy the server has now (so a concurrent change is a 412, not
 * silently overwritten... unless it happened between our GET and PUT,
 * which is what --if-match N from an earlier `get` guards against). */
static int cmd_apply(struct ctl *c, char **args)
{
    const char *file = args[0];
    json_error_t jerr;
    json_t *doc, *answer = NULL;
    struct ctl_reply r;
    char etag[64], v[32];
    int rc = CTL_EXIT_API;

    doc = strcmp(file, "-") == 0
          ? json_loadf(stdin, JSON_REJECT_DUPLICATES, &jerr)
          : json_load_file(file, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(doc)) {
        if (doc == NULL)
            snprintf(c->err, sizeof c->err, "%s: line %d column %d: %s",
                     file, jerr.line, jerr.column, jerr.text);
        else
            snprintf(c->err, sizeof c->err, "%s: a policy is a JSON object",
                     file);
        json_decref(doc);
        return fail(c, CTL_EXIT_USAGE);
    }
    if (opt.if_match != NULL) {
        if (parse_version(c, opt.if_match, v, sizeof v) != 0) {
            rc = fail(c, CTL_EXIT_USAGE);
            goto cleanup;
        }
        snprintf(etag, sizeof etag, "\"%s\"", v);
    } else {
        if (ctl_http_call(&c->http, "GET", "/v1/policy", NULL, NULL, &r,
                          c->err, sizeof c->err) != 0) {
            report(c, &r);
            goto cleanup;
        }
        if (r.etag[0] != '\0')
            snprintf(etag, sizeof etag, "%s", r.etag);
        else
            snprintf(etag, sizeof etag, "\"%lld\"", version_of(r.json));
        json_decref(r.json);
    }
    if (call(c, "PUT", "/v1/policy", doc, etag, &answer) != 0)
        goto cleanup;
    printf("policy version %lld applied\n", version_of(answer));
    rc = CTL_EXIT_OK;
cleanup:
    json_decref(answer);
    json_decref(doc);
    return rc;
}

static int cmd_versions(struct ctl *c, char **args)
{
    (void)args;
    return fetch(c, "/v1/policy/versions", ctl_render_versions);
}

static int cmd_show(struct ctl *c, char **args)
{
    char v[32], path[64];

    if (parse_version(c, args[0], v, sizeof v) != 0)
        return fail(c, CTL_EXIT_USAGE);
    snprintf(path, sizeof path, "/v1/policy/versions/%s", v);
    return fetch(c, path, ctl_render_policy);
}

static int cmd_rollback(struct ctl *c, char **args)
{
    json_t *body, *answer;
    char v[32];
    int rc;

    if (parse_version(c, args[0], v, sizeof v) != 0)
        return fail(c, CTL_EXIT_USAGE);
    body = json_pack("{s:I}", "to", (json_int_t)strtoll(v, NULL, 10));
    rc = call(c, "POST", "/v1/policy/rollback", body, NULL, &answer);
    json_decref(body);
    if (rc != 0)
        return CTL_EXIT_API;
    printf("policy version %lld applied (rollback to version %s)\n",
           version_of(answer), v);
    json_decref(answer);
    return CTL_EXIT_OK;
}

/* GET /v1/quotas/NAME answers the quota, possibly wrapped as
 * {"version", "quota"} like the PUT: accept both. */
static const json_t *unwrap_quota(const json_t *answer)
{
    const json_t *q = json_object_get(answer, "quota");

    return json_is_object(q) ? q : answer;
}

static int cmd_quota_get(struct ctl *c, char **args)
{
    char path[4096];
    json_t *answer, *q;

    if (build_path(c, path, sizeof path, "/v1/quotas/", args[0], NULL,
                   NULL) != 0)
        return fail(c, CTL_EXIT_USAGE);
    if (call(c, "GET", path, NULL, NULL, &answer) != 0)
        return CTL_EXIT_API;
    q = json_incref((json_t *)unwrap_quota(answer));
    json_decref(answer);
    return show(c, q, ctl_render_quota);
}

/* Read-modify-write: fields not given keep the server's value. Another
 * admin's change to the same quota between the GET and the PUT is lost
 * (the quota routes take no If-Match); `apply` is the careful path. */
static int cmd_quota_set(struct ctl *c, char **args)
{
    char path[4096];
    json_t *answer = NULL, *q = NULL;
    struct ctl_reply r;
    int rc = CTL_EXIT_API;

    if (build_path(c, path, sizeof path, "/v1/quotas/", args[0], NULL,
                   NULL) != 0)
        return fail(c, CTL_EXIT_USAGE);
    if (ctl_http_call(&c->http, "GET", path, NULL, NULL, &r, c->err,
                      sizeof c->err) != 0 && r.status != 404)
        return report(c, &r);
    if (ctl_quota_edit(r.json ? unwrap_quota(r.json) : NULL, args[0],
                       &opt.q, &q, c->err, sizeof c->err) != 0) {
        rc = fail(c, CTL_EXIT_USAGE);
        goto cleanup;
    }
    if (call(c, "PUT", path, q, NULL, &answer) != 0)
        goto cleanup;
    rc = done(answer, "quota %s %s", args[0], r.json ? "changed"
                                                         : "created");
    answer = NULL;
cleanup:
    json_decref(r.json);
    json_decref(q);
    json_decref(answer);
    return rc;
}

static int cmd_quota_delete(struct ctl *c, char **args)
{
    char path[4096];
    json_t *answer;

    if (build_path(c, path, sizeof path, "/v1/quotas/", args[0], NULL,
                   NULL) != 0)
        return fail(c, CTL_EXIT_USAGE);
    if (call(c, "DELETE", path, NULL, NULL, &answer) != 0)
        return CTL_EXIT_API;
    return done(answer, "quota %s deleted", args[0]);
}

static int cmd_override_set(struct ctl *c, char **args)
{
    char path[8192];
    uint64_t limit;
    json_t *body, *answer;
    int rc;

    if (ctl_parse_u64(args[2], 1, INT64_MAX, "LIMIT", &limit, c->err,
                      sizeof c->err) != 0 ||
        build_path(c, path, sizeof path, "/v1/quotas/", args[0],
                   "/overrides/", args[1]) != 0)
        return fail(c, CTL_EXIT_USAGE);
    body = json_pack("{s:I}", "limit", (json_int_t)limit);
    rc = call(c, "PUT", path, body, NULL, &answer);
    json_decref(body);
    if (rc != 0)
        return CTL_EXIT_API;
    return done(answer, "key %s of quota %s: limit %s", args[1], args[0],
                args[2]);
}

static int cmd_override_delete(struct ctl *c, char **args)
{
    char path[8192];
    json_t *answer;

    if (build_path(c, path, sizeof path, "/v1/quotas/", args[0],
                   "/overrides/", args[1]) != 0)
        return fail(c, CTL_EXIT_USAGE);
    if (call(c, "DELETE", path, NULL, NULL, &answer) != 0)
        return CTL_EXIT_API;
    return done(answer, "key %s of quota %s: back to the quota's limit",
                args[1], args[0]);
}

static int cmd_key_inspect(struct ctl *c, char **args)
{
    char path[8192];

    if (build_path(c, path, sizeof path, "/v1/keys/", args[0], "/",
                   args[1]) != 0)
        return fail(c, CTL_EXIT_USAGE);
    return fetch(c, path, ctl_render_fields);
}

static int cmd_key_reset(struct ctl *c, char **args)
{
    char path[8192], ca[512], cb[512];
    json_t *answer;

    if (build_path(c, path, sizeof path, "/v1/keys/", args[0], "/",
                   args[1]) != 0)
        return fail(c, CTL_EXIT_USAGE);
    if (call(c, "DELETE", path, NULL, NULL, &answer) != 0)
        return CTL_EXIT_API;
    printf("key %s of quota %s reset\n", ctl_clean(args[1], cb, sizeof cb),
           ctl_clean(args[0], ca, sizeof ca));
    json_decref(answer);
    return CTL_EXIT_OK;
}

static int cmd_audit(struct ctl *c, char **args)
{
    char path[256], before[3 * 64 + 1] = "";
    uint64_t limit = 50;

    (void)args;
    if (opt.limit != NULL && ctl_parse_u64(opt.limit, 1, 10000, "--limit",
                                           &limit, c->err, sizeof c->err))
        return fail(c, CTL_EXIT_USAGE);
    if (opt.before != NULL &&
        ctl_path_segment(opt.before, before, sizeof before) < 0) {
        snprintf(c->err, sizeof c->err, "--before: 1 to 64 bytes");
        return fail(c, CTL_EXIT_USAGE);
    }
    snprintf(path, sizeof path, "/v1/audit?limit=%llu%s%s",
             (unsigned long long)limit,
             before[0] ? "&before=" : "", before);
    return fetch(c, path, ctl_render_audit);
}

/* ------------------------------------------------------------ the table */

struct command {
    const char *words;           /* "quota set" */
    const char *synopsis;        /* what follows the words, for --help */
    const char *summary;
    int nargs;                   /* words after the command's */
    const struct ctl_opt *opts;
    int (*run)(struct ctl *c, char **args);
};

static const struct command commands[] = {
    {"get", "[--json]", "the current policy: its version, then its quotas",
     0, json_opts, cmd_get},
    {"apply", "FILE|- [--if-match N]", "replace the policy with a JSON "
     "document (- reads stdin); If-Match:\n              the server's "
     "current version unless --if-match N",
     1, apply_opts, cmd_apply},
    {"versions", "[--json]", "the policy's versions, newest first", 0,
     json_opts, cmd_versions},
    {"show", "N [--json]", "the policy as it was at version N", 1,
     json_opts, cmd_show},
    {"rollback", "N", "make a new version equal to version N", 1, NULL,
     cmd_rollback},
    {"quota get", "NAME [--json]", "one quota and its per-key overrides", 1,
     json_opts, cmd_quota_get},
    {"quota set", "NAME [--limit N] [--window S] [--key T] [--prefix P]\n"
     "              [--methods GET,POST] [--action challenge|deny] "
     "[--floor N] [--burst N]\n"
     "              [--deny-after X] [--shadow|--no-shadow]\n"
     "              [--fail-open|--fail-closed] "
     "[--require-token|--no-require-token]",
     "change the given fields of a quota, or create it (--limit required;\n"
     "              defaults: key ip, window 60, action challenge)", 1,
     quota_set_opts, cmd_quota_set},
    {"quota delete", "NAME", "remove a quota", 1, NULL, cmd_quota_delete},
    {"override set", "QUOTA KEY LIMIT", "give one key its own limit", 3,
     NULL, cmd_override_set},
    {"override delete", "QUOTA KEY", "back to the quota's limit", 2, NULL,
     cmd_override_delete},
    {"key inspect", "QUOTA KEY [--json]", "a key's live counts, leases and "
     "state", 2, json_opts, cmd_key_inspect},
    {"key reset", "QUOTA KEY", "forget a key's counts and state", 2, NULL,
     cmd_key_reset},
    {"audit", "[--limit N] [--before ID] [--json]", "who changed what, "
     "newest first (50 entries unless --limit)", 0, audit_opts, cmd_audit},
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *out)
{
    fprintf(out,
        "usage: tollgatectl [--url URL] [--token TOKEN] [--timeout-ms MS] "
        "COMMAND ...\n\n"
        "Client of the tollgate coordinator's quota admin API.\n\n"
        "Commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %s %s\n              %s\n", commands[i].words,
                commands[i].synopsis, commands[i].summary);
    fprintf(out,
        "\nOptions (anywhere on the line):\n"
        "  --url URL         the coordinator (env TOLLGATE_URL; default "
        "http://127.0.0.1:8080)\n"
        "  --token TOKEN     bearer token (env TOLLGATE_TOKEN, which `ps` "
        "does not show); never printed\n"
        "  --timeout-ms MS   per request, 1..600000 (default 5000)\n"
        "  --help, -h        this text\n"
        "  --version         tollgatectl's version\n"
        "  --                what follows is not an option (a key that "
        "starts with '-')\n\n"
        "--json (get, versions, show, quota get, key inspect, audit) prints "
        "the server's\nJSON instead of a table.\n\n"
        "Names and keys are percent-encoded into the URL; give them as "
        "they are.\n\n"
        "Exit codes:\n"
        "  0  done\n"
        "  1  the API answered an error (\"<status> <title>: <detail>\"), "
        "or no answer\n"
        "     (the method, URL and reason)\n"
        "  2  usage error: bad command line, or an input file that cannot "
        "be read or\n"
        "     is not JSON\n");
}

/* The command whose words start pos[0..npos); sets *nwords. */
static const struct command *command_find(char **pos, int npos, int *nwords)
{
    for (size_t i = 0; i < N_COMMANDS; i++) {
        const char *w = commands[i].words, *sp = strchr(w, ' ');
        size_t len = sp ? (size_t)(sp - w) : strlen(w);

        if (npos < 1 || strlen(pos[0]) != len || strncmp(pos[0], w, len))
            continue;
        if (sp == NULL) {
            *nwords = 1;
            return &commands[i];
        }
        if (npos >= 2 && strcmp(pos[1], sp + 1) == 0) {
            *nwords = 2;
            return &commands[i];
        }
    }
    return NULL;
}

/* Why pos names no command: nothing, an unknown word, or a group word
 * ("quota") without one of its subcommands, which are listed. */
static void command_unknown(char **pos, int npos, char *err, size_t errlen)
{
    size_t n = 0, len;

    if (npos == 0) {
        snprintf(err, errlen, "no command given");
        return;
    }
    len = strlen(pos[0]);
    for (size_t i = 0; i < N_COMMANDS; i++) {
        const char *w = commands[i].words;

        if (strncmp(w, pos[0], len) == 0 && w[len] == ' ' && n < errlen)
            n += (size_t)snprintf(err + n, errlen - n, "%s%s",
                                  n ? ", " : "", w);
    }
    if (n == 0)
        snprintf(err, errlen, "unknown command \"%.100s\"", pos[0]);
    else if (n < errlen)
        snprintf(err + n, errlen - n, ": which one?");
}

static int usage_error(const char *msg, const struct command *cmd)
{
    fprintf(stderr, "tollgatectl: %s\n", msg);
    if (cmd != NULL)
        fprintf(stderr, "usage: tollgatectl %s %s\n", cmd->words,
                cmd->synopsis);
    fprintf(stderr, "Try 'tollgatectl --help'.\n");
    return CTL_EXIT_USAGE;
}

static const char *env(const char *name, const char *dflt)
{
    const char *v = getenv(name);

    return v != NULL && v[0] != '\0' ? v : dflt;
}

/* Checks the global settings; trims the URL's trailing slashes. */
static int check_globals(char *url, const char *token, const char *tmo,
                         long *timeout_ms, char *err, size_t errlen)
{
    uint64_t ms;
    size_t n = strlen(url);

    if ((strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8))
        || strpbrk(url, " \t\r\n?#") != NULL) {
        snprintf(err, errlen, "--url: an http:// or https:// URL without "
                 "query, not \"%.200s\"", url);
        return -1;
    }
    while (n > 0 && url[n - 1] == '/')
        url[--n] = '\0';
    for (const char *p = token; p != NULL && *p; p++)
        if ((unsigned char)*p < 0x21 || (unsigned char)*p == 0x7f) {
            snprintf(err, errlen, "--token: blanks or control characters "
                     "in the token");
            return -1;
        }
    if (ctl_parse_u64(tmo, 1, 600000, "--timeout-ms", &ms, err, errlen))
        return -1;
    *timeout_ms = (long)ms;
    return 0;
}

int main(int argc, char **argv)
{
    const char *url_s = env("TOLLGATE_URL", "http://127.0.0.1:8080");
    const char *token = env("TOLLGATE_TOKEN", NULL), *tmo = "5000";
    int help = 0, version = 0, npos, nwords, nargs, rc;
    const struct ctl_opt globals[] = {
        {"--url", &url_s, NULL, 0}, {"--token", &token, NULL, 0},
        {"--timeout-ms", &tmo, NULL, 0}, {"--help", NULL, &help, 1},
        {"-h", NULL, &help, 1}, {"--version", NULL, &version, 1},
        {NULL, NULL, NULL, 0}};
    const struct command *cmd;
    char **pos = calloc((size_t)argc + 1, sizeof *pos), **args;
    static struct ctl c;
    char *url = NULL;
    long timeout_ms;

    if (pos == NULL)
        return CTL_EXIT_API;
    if (ctl_opts_parse(argc - 1, argv + 1, globals, true, pos, &npos, c.err,
                       sizeof c.err) != 0) {
        rc = usage_error(c.err, NULL);
        goto out;
    }
    if (help || version) {
        if (help)
            usage(stdout);
        else
            printf("tollgatectl %s\n", CTL_VERSION);
        rc = CTL_EXIT_OK;
        goto out;
    }
    cmd = command_find(pos, npos, &nwords);
    if (cmd == NULL) {
        command_unknown(pos, npos, c.err, sizeof c.err);
        rc = usage_error(c.err, NULL);
        goto out;
    }
    args = pos + nwords;
    if (ctl_opts_parse(npos - nwords, args, cmd->opts, false, args, &nargs,
                       c.err, sizeof c.err) != 0) {
        rc = usage_error(c.err, cmd);
        goto out;
    }
    if (nargs != cmd->nargs) {
        snprintf(c.err, sizeof c.err, "%s: %s arguments", cmd->words,
                 nargs < cmd->nargs ? "missing" : "too many");
        rc = usage_error(c.err, cmd);
        goto out;
    }
    url = strdup(url_s);
    if (url == NULL ||
        check_globals(url, token, tmo, &timeout_ms, c.err, sizeof c.err)) {
        rc = usage_error(url ? c.err : "out of memory", NULL);
        goto out;
    }
    if (ctl_http_open(&c.http, url, token, timeout_ms, c.err, sizeof c.err)) {
        rc = fail(&c, CTL_EXIT_API);
        goto out;
    }
    rc = cmd->run(&c, args);
    ctl_http_close(&c.http);
out:
    free(url);
    free(pos);
    return rc;
}
