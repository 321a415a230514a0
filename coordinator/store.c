/* store.c — the policy store: every policy version, its metadata and the
 * audit log in Redis, and the thread that keeps this coordinator on the
 * current version.
 *
 * The keys (one hash tag, {policy}, so one slot) are described with the
 * rest of the data model in sync.lua's header and named by redis_keys.c.
 * Every write is ONE call of policy_write.lua: it checks the version the
 * writer based its change on (If-Match), then writes version n+1, moves
 * current, adds meta and one audit entry; a stale expectation changes
 * nothing. policy_audit.lua pages the audit log.
 *
 * Every coordinator polls current every STORE_POLL_MS and installs a new
 * version; a write through this coordinator installs at once. The policy
 * an edge gets carries the store's version number, so edges notice a
 * change on their next sync.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>
#include <jansson.h>

#include "tollgated.h"

#define STORE_POLL_MS 250u
#define AUDIT_MAX     100000

static struct {
    pthread_mutex_t lock;        /* installs, and the fields below */
    uint64_t installed;          /* version installed from the store */
    bool from_store;             /* false: the --policy file, degraded */
    char *seed;                  /* canonical text still to seed, or NULL */
    unsigned timeout_ms;
    struct co_ticker poll;       /* poll_once() every STORE_POLL_MS */
} st = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .timeout_ms = 1000,
};

/* Parse doc (a stored version) and install it unless something at least
 * as new is already installed from the store (a poll and a local write
 * may race; versions only go up), or force (Redis lost versions and
 * current went back). Returns 0 or the parse error. */
static int install_text(const char *doc, size_t len, uint64_t version,
                        bool force, char *err, size_t errlen)
{
    struct co_policy *p;
    int rc = CO_OK;

    pthread_mutex_lock(&st.lock);
    if (st.from_store && st.installed >= version && !force)
        goto done;
    rc = co_policy_parse_as(doc, len, version, &p, err, errlen);
    if (rc != CO_OK) {
        /* Only a writer that skipped validation could store this. */
        CO_ERROR("msg=policy_store_invalid version=%llu",
                 (unsigned long long)version);
        goto done;
    }
    co_policy_install(p);
    CO_INFO("msg=policy_installed version=%llu quotas=%zu source=store",
            (unsigned long long)version, p->n_quotas);
    st.installed = version;
    st.from_store = true;
done:
    pthread_mutex_unlock(&st.lock);
    return rc;
}

static int reply_error(redisReply *r, const char *what, char *err,
                       size_t errlen)
{
    snprintf(err, errlen, "%s: %.200s", what,
             r != NULL && r->type == REDIS_REPLY_ERROR ? r->str
                                                       : "unexpected reply");
    return CO_EREPLY;
}

/* One call of policy_write.lua. Returns 0 (written, or for seed: found),
 * or CO_ECONFLICT (stale; *version = current), CO_ENOTFOUND (rollback
 * source), CO_EREDIS / CO_EREPLY / CO_ENOMEM with err. A written version
 * is installed here. */
static int store_write(const char *op, int64_t expect, const char *who,
                       const char *action, const char *body,
                       const char *detail, const char *const *del,
                       uint64_t *version, bool *seeded, char *err,
                       size_t errlen)
{
    const char *keys[] = {
        co_rkeys.policy_current, co_rkeys.policy_seq, co_rkeys.policy_meta,
        co_rkeys.policy_audit, co_rkeys.policy_audit_seq,
        co_rkeys.policy_version_prefix,
    };
    struct co_script_call c;
    char exp[24];
    redisReply *r = NULL;
    int rc;

    co_call_init(&c, co_script(CO_SCRIPT_POLICY_WRITE), 6 + 2 + 8);
    for (size_t i = 0; i < 6; i++)
        co_call_key(&c, keys[i], strlen(keys[i]));
    for (size_t i = 0; del != NULL && i < 2; i++)
        co_call_key(&c, del[i], strlen(del[i]));
    snprintf(exp, sizeof exp, "%lld", (long long)expect);
    co_call_arg_str(&c, op);
    co_call_arg_str(&c, exp);
    co_call_arg_u64(&c, co_wall_ms());
    co_call_arg_str(&c, who);
    co_call_arg_str(&c, action);
    co_call_arg_str(&c, body);
    co_call_arg_str(&c, detail);
    co_call_arg_u64(&c, AUDIT_MAX);
    rc = co_call_seal(&c);
    if (rc != CO_OK) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    r = co_redis_eval(st.timeout_ms, &c, err, errlen);
    if (r == NULL) {
        rc = CO_EREDIS;
        goto done;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_INTEGER ||
        r->element[1]->type != REDIS_REPLY_INTEGER ||
        r->element[2]->type != REDIS_REPLY_STRING) {
        rc = reply_error(r, "policy write", err, errlen);
        CO_ERROR("msg=policy_store_write_failed op=%s", op);
        goto done;
    }
    *version = (uint64_t)r->element[1]->integer;
    if (seeded != NULL)
        *seeded = r->element[0]->integer == 0;
    switch (r->element[0]->integer) {
    case 0:
        rc = CO_OK;
        if (r->element[2]->len > 0)
            rc = install_text(r->element[2]->str, r->element[2]->len,
                              *version, false, err, errlen);
        break;
    case 1:
        rc = CO_ECONFLICT;
        snprintf(err, errlen, "the current version is %llu",
                 (unsigned long long)*version);
        break;
    case 2:
        rc = CO_ENOTFOUND;
        snprintf(err, errlen, "no such version");
        break;
    default:
        rc = CO_OK;     /* seed found a version */
        break;
    }
done:
    if (r != NULL)
        freeReplyObject(r);
    co_call_free(&c);
    return rc;
}

/* Write a new version whose content is doc (a canonical document without
 * "version", co_policy_dump(p, 0)) when the current version is expect (-1:
 * whatever it is). who is the admin token's name; action and detail (JSON
 * text) go to meta and the audit entry. Returns 0 with *version the new
 * version (already installed here), CO_ECONFLICT with *version the current
 * one, CO_EREDIS / CO_EREPLY with err. */
int co_store_put(const char *doc, int64_t expect, const char *who,
                 const char *action, const char *detail, uint64_t *version,
                 char *err, size_t errlen)
{
    return store_write("put", expect, who, action, doc, detail, NULL,
                       version, NULL, err, errlen);
}

/* A new version equal to version to. As co_store_put(), plus CO_ENOTFOUND
 * when version to does not exist. */
int co_store_rollback(uint64_t to, int64_t expect, const char *who,
                      uint64_t *version, char *err, size_t errlen)
{
    char num[24], detail[48];

    snprintf(num, sizeof num, "%llu", (unsigned long long)to);
    snprintf(detail, sizeof detail, "{\"to\":%llu}", (unsigned long long)to);
    return store_write("rollback", expect, who, "policy.rollback", num,
                       detail, NULL, version, NULL, err, errlen);
}

/* One audit entry that makes no version (a key reset). */
int co_store_audit_add(const char *who, const char *action,
                       const char *detail, char *err, size_t errlen)
{
    uint64_t v;

    return store_write("audit", -1, who, action, "", detail, NULL, &v, NULL,
                       err, errlen);
}

/* Delete a key's counters c and e with its "key.reset" audit entry, in
 * one atomic call: both or neither. */
int co_store_key_reset(const char *who, const char *detail, const char *c,
                       const char *e, char *err, size_t errlen)
{
    const char *del[2] = {c, e};
    uint64_t v;

    return store_write("reset", -1, who, "key.reset", "", detail, del, &v,
                       NULL, err, errlen);
}

/* The version current names, or 0 when none. */
static int current_version(uint64_t *v, char *err, size_t errlen)
{
    const char *argv[2] = {"GET", co_rkeys.policy_current};
    redisReply *r = co_redis_command(st.timeout_ms, 2, argv, NULL, err,
                                     errlen);
    int rc = CO_OK;

    if (r == NULL)
        return CO_EREDIS;
    if (r->type == REDIS_REPLY_STRING)
        *v = strtoull(r->str, NULL, 10);
    else if (r->type == REDIS_REPLY_NIL)
        *v = 0;
    else
        rc = reply_error(r, "GET current", err, errlen);
    freeReplyObject(r);
    return rc;
}

/* The document of version (0: the current one), as stored. On success
 * *doc is malloc'd text (free()) of *len bytes and *found_version its
 * version. CO_ENOTFOUND when there is no such version (or none at all). */
int co_store_get(uint64_t version, char **doc, size_t *len,
                 uint64_t *found_version, char *err, size_t errlen)
{
    char key[64];
    const char *argv[2] = {"GET", key};
    redisReply *r;
    int rc = CO_OK;

    *doc = NULL;
    if (version == 0) {
        rc = current_version(&version, err, errlen);
        if (rc != CO_OK)
            return rc;
        if (version == 0) {
            snprintf(err, errlen, "no policy stored");
            return CO_ENOTFOUND;
        }
    }
    /* Versions are immutable: current may move on meanwhile, v:<n> stays. */
    co_rkey_policy_version(version, key, sizeof key);
    r = co_redis_command(st.timeout_ms, 2, argv, NULL, err, errlen);
    if (r == NULL)
        return CO_EREDIS;
    if (r->type == REDIS_REPLY_NIL) {
        snprintf(err, errlen, "no version %llu", (unsigned long long)version);
        rc = CO_ENOTFOUND;
    } else if (r->type != REDIS_REPLY_STRING) {
        rc = reply_error(r, "GET version", err, errlen);
    } else if ((*doc = malloc(r->len + 1)) == NULL) {
        snprintf(err, errlen, "out of memory");
        rc = CO_ENOMEM;
    } else {
        memcpy(*doc, r->str, r->len + 1);
        *len = r->len;
        *found_version = version;
    }
    freeReplyObject(r);
    return rc;
}

/* A stored JSON entry (meta, audit) parsed, or NULL after logging: the
 * script writes them, so a bad one is our bug, skipped rather than
 * failing the whole listing. */
static json_t *reply_json(const redisReply *r, const char *what)
{
    json_t *j = r->type == REDIS_REPLY_STRING
        ? json_loadb(r->str, r->len, 0, NULL) : NULL;

    if (j == NULL)
        CO_ERROR("msg=policy_store_bad_entry kind=%s", what);
    return j;
}

static int cmp_version_desc(const void *a, const void *b)
{
    json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a,
                                                      "version"));
    json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b,
                                                      "version"));

    return x < y ? 1 : x > y ? -1 : 0;
}

/* {"current": n, "versions": [meta..., newest first]} as a new reference
 * (*out, json_decref). Returns 0 or CO_EREDIS / CO_EREPLY / CO_ENOMEM. */
int co_store_versions(struct json_t **out, char *err, size_t errlen)
{
    const char *cur[2] = {"GET", co_rkeys.policy_current};
    const char *all[2] = {"HGETALL", co_rkeys.policy_meta};
    redisReply *rc_ = NULL, *rm = NULL;
    json_t **items = NULL, *arr = NULL;
    size_t n = 0;
    int rc = CO_EREDIS;

    *out = NULL;
    rc_ = co_redis_command(st.timeout_ms, 2, cur, NULL, err, errlen);
    if (rc_ == NULL)
        goto done;
    rm = co_redis_command(st.timeout_ms, 2, all, NULL, err, errlen);
    if (rm == NULL)
        goto done;
    rc = CO_EREPLY;
    if ((rc_->type != REDIS_REPLY_STRING && rc_->type != REDIS_REPLY_NIL) ||
        rm->type != REDIS_REPLY_ARRAY) {
        reply_error(rm, "versions", err, errlen);
        goto done;
    }
    rc = CO_ENOMEM;
    items = calloc(rm->elements / 2 + 1, sizeof *items);
    arr = json_array();
    if (items == NULL || arr == NULL)
        goto done;
    for (size_t i = 1; i < rm->elements; i += 2) {
        json_t *m = reply_json(rm->element[i], "meta");

        if (m == NULL)
            continue;
        json_object_del(m, "from");
        items[n++] = m;
    }
    qsort(items, n, sizeof *items, cmp_version_desc);
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(arr, items[i]);
        items[i] = NULL;
    }
    *out = json_pack("{s:I, s:O}", "current", (json_int_t)(
                         rc_->type == REDIS_REPLY_STRING
                         ? strtoull(rc_->str, NULL, 10) : 0),
                     "versions", arr);
    rc = *out != NULL ? CO_OK : CO_ENOMEM;
done:
    for (size_t i = 0; items != NULL && i < n; i++)
        json_decref(items[i]);
    free(items);
    json_decref(arr);
    if (rc_ != NULL)
        freeReplyObject(rc_);
    if (rm != NULL)
        freeReplyObject(rm);
    if (rc == CO_ENOMEM)
        snprintf(err, errlen, "out of memory");
    return rc;
}

/* Up to limit audit entries older than id before (0: the newest), newest
 * first: *out = {"entries": [...], "next": id or null} (json_decref).
 * "next" is null once the oldest entry has been given. */
int co_store_audit(unsigned limit, uint64_t before, struct json_t **out,
                   char *err, size_t errlen)
{
    struct co_script_call c;
    redisReply *r;
    json_t *entries = json_array();
    json_int_t last = 0;
    int rc = CO_OK;

    *out = NULL;
    if (entries == NULL)
        return CO_ENOMEM;
    co_call_init(&c, co_script(CO_SCRIPT_POLICY_AUDIT), 3);
    co_call_key(&c, co_rkeys.policy_audit, strlen(co_rkeys.policy_audit));
    co_call_arg_u64(&c, before);
    co_call_arg_u64(&c, limit);
    if (co_call_seal(&c) != CO_OK) {
        co_call_free(&c);
        json_decref(entries);
        snprintf(err, errlen, "out of memory");
        return CO_ENOMEM;
    }
    r = co_redis_eval(st.timeout_ms, &c, err, errlen);
    co_call_free(&c);
    if (r == NULL) {
        json_decref(entries);
        return CO_EREDIS;
    }
    if (r->type != REDIS_REPLY_ARRAY) {
        rc = reply_error(r, "audit", err, errlen);
        goto done;
    }
    for (size_t i = 0; i < r->elements; i++) {
        json_t *e = reply_json(r->element[i], "audit");

        if (e == NULL)
            continue;
        last = json_integer_value(json_object_get(e, "id"));
        json_array_append_new(entries, e);
    }
    *out = json_pack("{s:O, s:o}", "entries", entries, "next",
                     r->elements == limit && last > 1
                     ? json_integer(last) : json_null());
    if (*out == NULL)
        rc = CO_ENOMEM;
done:
    json_decref(entries);
    freeReplyObject(r);
    return rc;
}

/* Seed from the pending --policy text (version 1 when Redis holds none)
 * and install whatever is current. Returns 0 or a CO_E* code with err. */
static int seed_and_load(bool force, char *err, size_t errlen)
{
    uint64_t version = 0;
    bool seeded = false;
    char *doc = NULL, *seed;
    size_t len = 0;
    int rc;

    pthread_mutex_lock(&st.lock);
    seed = st.seed;
    pthread_mutex_unlock(&st.lock);
    if (seed != NULL) {
        rc = store_write("seed", -1, "tollgated", "seed", seed,
                         "{\"source\":\"--policy\"}", NULL, &version, &seeded,
                         err, errlen);
        if (rc != CO_OK)
            return rc;
        CO_INFO("msg=policy_store_ready version=%llu seeded=%s",
                (unsigned long long)version, seeded ? "yes" : "no (Redis "
                "holds versions; the --policy file is not used)");
        pthread_mutex_lock(&st.lock);
        free(st.seed);
        st.seed = NULL;
        pthread_mutex_unlock(&st.lock);
        if (seeded)
            return CO_OK;
    }
    rc = co_store_get(0, &doc, &len, &version, err, errlen);
    if (rc == CO_OK)
        rc = install_text(doc, len, version, force, err, errlen);
    free(doc);
    return rc;
}

/* One poll: seed if still owed, else install a version that changed. */
static void poll_once(void)
{
    uint64_t v = 0, have;
    bool owed, from_store;
    char err[256], ev[300];
    int rc;

    pthread_mutex_lock(&st.lock);
    owed = st.seed != NULL;
    have = st.installed;
    from_store = st.from_store;
    pthread_mutex_unlock(&st.lock);
    if (!owed) {
        rc = current_version(&v, err, sizeof err);
        if (rc != CO_OK || (from_store && v == have) || v == 0)
            goto out;
    }
    rc = seed_and_load(from_store && v < have, err, sizeof err);
out:
    if (rc != CO_OK && rc != CO_EREDIS)
        CO_WARN("msg=policy_poll_failed detail=%s",
                co_log_value(ev, sizeof ev, err, strlen(err)));
}

/* Start the store: seed version 1 from file (the --policy document) when
 * Redis holds no version, install the current version, and start the
 * poll thread. When Redis cannot be reached, file's policy is installed
 * as version 1 (degraded) and the poll thread seeds once Redis answers.
 * timeout_ms bounds each Redis exchange of the store. Returns 0, or
 * CO_ENOMEM / CO_EIO (thread) with err; Redis being down is not an error.
 * The caller keeps file. */
int co_store_start(const struct co_policy *file, unsigned timeout_ms,
                   char *err, size_t errlen)
{
    char why[256], v[300];
    int rc;

    st.timeout_ms = timeout_ms;
    st.installed = 0;
    st.from_store = false;
    st.seed = co_policy_dump(file, 0);
    if (st.seed == NULL) {
        snprintf(err, errlen, "out of memory");
        return CO_ENOMEM;
    }
    rc = seed_and_load(false, why, sizeof why);
    if (rc != CO_OK) {
        struct co_policy *p;

        CO_WARN("msg=policy_store_unavailable detail=%s note=\"serving the "
                "--policy file as version 1 until Redis answers\"",
                co_log_value(v, sizeof v, why, strlen(why)));
        if (co_policy_parse_as(st.seed, strlen(st.seed), 1, &p, err,
                               errlen) != CO_OK)
            return CO_EINVAL;
        co_policy_install(p);
    }
    st.poll.tick = poll_once;
    st.poll.period_ms = STORE_POLL_MS;
    return co_ticker_start(&st.poll, err, errlen);
}

/* Stop the poll thread (it finishes a Redis wait in progress, bounded by
 * the store's timeout) and forget the store's state. */
void co_store_stop(void)
{
    co_ticker_stop(&st.poll);
    free(st.seed);
    st.seed = NULL;
}
