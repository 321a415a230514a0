/* ctl_render.c — tollgatectl's readable output: aligned text tables and the
 * forms of the policy, a quota, the version list, the audit log and a key.
 * Pure (writes only to the FILE it is given), so the unit test includes it.
 * Renderers are lenient about fields: a missing one prints "-", an unknown
 * one is ignored, so an older client still reads a newer server.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tollgatectl.h"

/* ------------------------------------------------------------ tables */

void ctl_table_init(struct ctl_table *t, size_t ncols,
                    const char *const *heads, unsigned right)
{
    memset(t, 0, sizeof *t);
    t->ncols = ncols;
    t->right = right;
    for (size_t i = 0; heads != NULL && i < ncols; i++)
        ctl_table_add(t, heads[i]);
}

/* Takes s (malloc'd, or NULL after a failed allocation). */
static void table_take(struct ctl_table *t, char *s)
{
    if (s != NULL && t->ncells == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        char **cells = realloc(t->cells, cap * sizeof *cells);

        if (cells == NULL) {
            free(s);
            s = NULL;
        } else {
            t->cells = cells;
            t->cap = cap;
        }
    }
    if (s == NULL) {
        t->failed = true;
        return;
    }
    ctl_clean(s, s, strlen(s) + 1);
    t->cells[t->ncells++] = s;
}

void ctl_table_add(struct ctl_table *t, const char *s)
{
    table_take(t, strdup(s));
}

void ctl_table_addf(struct ctl_table *t, const char *fmt, ...)
{
    va_list ap;
    char *s;

    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    table_take(t, s);
}

static char *json_text(const json_t *v);

/* {"quota":"q","key":"k"} as "quota=q key=k" (an audit entry's detail);
 * an object holding objects or arrays as compact JSON. */
static char *object_text(const json_t *obj)
{
    const char *name;
    json_t *m;
    char *s = NULL, *text, *more;

    json_object_foreach((json_t *)obj, name, m)
        if (json_is_object(m) || json_is_array(m))
            return json_dumps(obj, JSON_COMPACT);
    json_object_foreach((json_t *)obj, name, m) {
        text = json_text(m);
        if (text == NULL || asprintf(&more, "%s%s%s=%s", s ? s : "",
                                     s ? " " : "", name, text) < 0)
            more = NULL;
        free(text);
        free(s);
        s = more;
        if (s == NULL)
            return NULL;
    }
    return s != NULL ? s : strdup("-");
}

/* A scalar as text; an array of strings as "a,b"; an object as
 * object_text(); null or absent "-"; anything else as compact JSON.
 * Returns malloc'd text, NULL when out of memory. */
static char *json_text(const json_t *v)
{
    size_t i, len = 0;
    json_t *e;
    char *s;

    switch (v == NULL ? JSON_NULL : json_typeof(v)) {
    case JSON_STRING:
        return strndup(json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return asprintf(&s, "%lld", (long long)json_integer_value(v)) < 0
               ? NULL : s;
    case JSON_REAL:
        return asprintf(&s, "%g", json_real_value(v)) < 0 ? NULL : s;
    case JSON_TRUE:
        return strdup("yes");
    case JSON_FALSE:
        return strdup("no");
    case JSON_NULL:
        return strdup("-");
    case JSON_ARRAY:
        json_array_foreach(v, i, e) {
            if (!json_is_string(e))
                return json_dumps(v, JSON_COMPACT);
            len += json_string_length(e) + 1;
        }
        if (len == 0)
            return strdup("-");
        s = malloc(len);
        if (s == NULL)
            return NULL;
        len = 0;
        json_array_foreach(v, i, e) {
            memcpy(s + len, json_string_value(e), json_string_length(e));
            len += json_string_length(e);
            s[len++] = ',';
        }
        s[len - 1] = '\0';
        return s;
    case JSON_OBJECT:
        return object_text(v);
    }
    return json_dumps(v, JSON_COMPACT);
}

void ctl_table_add_json(struct ctl_table *t, const json_t *v)
{
    table_take(t, json_text(v));
}

/* Display width: UTF-8 continuation bytes take no column. */
static size_t text_width(const char *s)
{
    size_t w = 0;

    for (; *s; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

int ctl_table_print(const struct ctl_table *t, FILE *out)
{
    size_t *width;

    if (t->failed || t->ncols == 0) {
        fprintf(stderr, "tollgatectl: out of memory\n");
        return -1;
    }
    width = calloc(t->ncols, sizeof *width);
    if (width == NULL)
        return -1;
    for (size_t i = 0; i < t->ncells; i++) {
        size_t w = text_width(t->cells[i]);
        if (w > width[i % t->ncols])
            width[i % t->ncols] = w;
    }
    /* Blanks are held back until something follows them on the line. */
    for (size_t i = 0, blanks = 0; i < t->ncells; i++) {
        size_t c = i % t->ncols, pad = width[c] - text_width(t->cells[i]);
        bool right = t->right & (1u << c);

        blanks += right ? pad : 0;
        if (t->cells[i][0] != '\0') {
            fprintf(out, "%*s%s", (int)blanks, "", t->cells[i]);
            blanks = 0;
        }
        blanks += (right ? 0 : pad) + 2;
        if (c == t->ncols - 1 || i == t->ncells - 1) {
            fputc('\n', out);
            blanks = 0;
        }
    }
    free(width);
    return 0;
}

void ctl_table_free(struct ctl_table *t)
{
    for (size_t i = 0; i < t->ncells; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof *t);
}

/* ------------------------------------------------------------ text */

const char *ctl_clean(const char *s, char *out, size_t outlen)
{
    size_t n = 0;

    if (outlen == 0)
        return out;
    for (; s[n] != '\0' && n + 1 < outlen; n++) {
        unsigned char c = (unsigned char)s[n];
        out[n] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    /* Never end inside a UTF-8 sequence. */
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    out[n] = '\0';
    return out;
}

const char *ctl_format_time(long long t, char *out, size_t outlen)
{
    struct tm tm;
    time_t s;

    if (t <= 0) {
        snprintf(out, outlen, "-");
        return out;
    }
    s = (time_t)(t >= 100000000000LL ? t / 1000 : t);
    if (gmtime_r(&s, &tm) == NULL ||
        strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, outlen, "%lld", t);
    return out;
}

static void add_time(struct ctl_table *t, const json_t *v)
{
    char buf[32];

    if (json_is_integer(v))
        ctl_table_add(t, ctl_format_time(json_integer_value(v), buf,
                                         sizeof buf));
    else
        ctl_table_add_json(t, v);
}

static bool is_time_field(const char *name)
{
    size_t n = strlen(name);

    return strcmp(name, "at") == 0 ||
           (n > 3 && strcmp(name + n - 3, "_at") == 0) ||
           (n > 6 && strcmp(name + n - 6, "_until") == 0);
}

/* ------------------------------------------------------------ forms */

/* One cell per named member of obj (names end with NULL), times as
 * dates. */
static void add_fields(struct ctl_table *t, const json_t *obj,
                       const char *const *names)
{
    for (; *names != NULL; names++) {
        const json_t *v = json_object_get(obj, *names);

        if (is_time_field(*names))
            add_time(t, v);
        else
            ctl_table_add_json(t, v);
    }
}

/* label, then v as text, then end: the lines above a table. */
static void print_json(FILE *out, const char *label, const json_t *v,
                       const char *end)
{
    char *s = json_text(v);

    fputs(label, out);
    if (s != NULL)
        fputs(ctl_clean(s, s, strlen(s) + 1), out);
    fputs(end, out);
    free(s);
}

static void add_seconds(struct ctl_table *t, const json_t *v)
{
    if (json_is_integer(v))
        ctl_table_addf(t, "%llds", (long long)json_integer_value(v));
    else
        ctl_table_add_json(t, v);
}

static int print_table(struct ctl_table *t, FILE *out)
{
    int rc = ctl_table_print(t, out);

    ctl_table_free(t);
    return rc;
}

static const char *flag_names(const json_t *q, char *buf, size_t len)
{
    static const char *const flags[] = {"shadow", "fail_open",
                                        "require_token"};
    size_t n = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (json_is_true(json_object_get(q, flags[i])))
            n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "%s%s",
                                  n ? "," : "", flags[i]);
    return n ? buf : "-";
}

/* The policy: its version and settings, then one row per quota. Empty
 * methods mean every method, shown as "any". */
int ctl_render_policy(const json_t *doc, FILE *out)
{
    static const char *const heads[] = {
        "NAME", "KEY", "LIMIT", "WINDOW", "BURST", "FLOOR", "ACTION",
        "DENY_AFTER", "PATH", "METHODS", "FLAGS", "OVERRIDES"};
    const json_t *quotas = json_object_get(doc, "quotas"), *q;
    struct ctl_table t;
    char flags[64];
    size_t i;

    if (!json_is_object(doc) || !json_is_array(quotas))
        return -1;
    print_json(out, "policy version ", json_object_get(doc, "version"), "\n");
    print_json(out, "sync_interval_ms ",
               json_object_get(doc, "sync_interval_ms"), "  ");
    print_json(out, "clearance_ttl_s ",
               json_object_get(doc, "clearance_ttl_s"), "  ");
    print_json(out, "expected_edges ",
               json_object_get(doc, "expected_edges"), "\n\n");
    ctl_table_init(&t, 12, heads, 0x8BCu);
    json_array_foreach(quotas, i, q) {
        const json_t *m = json_object_get(q, "methods");
        const json_t *ov = json_object_get(q, "overrides");

        add_fields(&t, q, (const char *const[]){"name", "key", "limit",
                                                NULL});
        add_seconds(&t, json_object_get(q, "window_s"));
        add_fields(&t, q, (const char *const[]){"burst", "floor", "action",
                                                "deny_after", "path_prefix",
                                                NULL});
        if (json_is_array(m) && json_array_size(m) == 0)
            ctl_table_add(&t, "any");
        else
            ctl_table_add_json(&t, m);
        ctl_table_add(&t, flag_names(q, flags, sizeof flags));
        ctl_table_addf(&t, "%zu", json_is_object(ov) ? json_object_size(ov)
                                                     : 0);
    }
    if (json_array_size(quotas) == 0) {
        ctl_table_free(&t);
        fprintf(out, "(no quotas)\n");
        return 0;
    }
    return print_table(&t, out);
}

/* One "name  value" row per member, no heading; `skip` (or NULL) is left
 * out. Times (at, *_at, *_until) are shown as dates. */
static int render_fields(const json_t *obj, const char *skip, FILE *out)
{
    struct ctl_table t;
    const char *name;
    json_t *v;

    if (!json_is_object(obj))
        return -1;
    ctl_table_init(&t, 2, NULL, 0);
    json_object_foreach((json_t *)obj, name, v) {
        if (skip != NULL && strcmp(name, skip) == 0)
            continue;
        ctl_table_add(&t, name);
        add_fields(&t, obj, (const char *const[]){name, NULL});
    }
    return print_table(&t, out);
}

int ctl_render_fields(const json_t *obj, FILE *out)
{
    return render_fields(obj, NULL, out);
}

/* A quota's fields, then its per-key overrides as a KEY LIMIT table. */
int ctl_render_quota(const json_t *quota, FILE *out)
{
    static const char *const heads[] = {"KEY", "LIMIT"};
    const json_t *ov = json_object_get(quota, "overrides");
    struct ctl_table t;
    const char *key;
    json_t *v;

    if (render_fields(quota, "overrides", out) != 0)
        return -1;
    if (!json_is_object(ov) || json_object_size(ov) == 0)
        return 0;
    fputs("\noverrides\n", out);
    ctl_table_init(&t, 2, heads, 0x2u);
    json_object_foreach((json_t *)ov, key, v) {
        ctl_table_add(&t, key);
        ctl_table_add_json(&t, json_is_object(v) ? json_object_get(v, "limit")
                                                 : v);
    }
    return print_table(&t, out);
}

/* {"current": n, "versions": [...]}: newest first, as the server sends. */
int ctl_render_versions(const json_t *answer, FILE *out)
{
    static const char *const heads[] = {"VERSION", "CREATED", "BY",
                                        "ACTION"};
    const json_t *list = json_object_get(answer, "versions"), *e;
    struct ctl_table t;
    size_t i;

    if (!json_is_object(answer) || !json_is_array(list))
        return -1;
    print_json(out, "current version ", json_object_get(answer, "current"),
               "\n\n");
    ctl_table_init(&t, 4, heads, 0x1u);
    json_array_foreach(list, i, e) {
        add_fields(&t, e, (const char *const[]){"version", "created_at",
                                                "by", "action", NULL});
    }
    return print_table(&t, out);
}

/* {"entries": [...], "next": id|null}: a table, then how to page on. */
int ctl_render_audit(const json_t *answer, FILE *out)
{
    static const char *const heads[] = {"ID", "AT", "WHO", "ACTION", "FROM",
                                        "TO", "DETAIL"};
    const json_t *list = json_object_get(answer, "entries"), *e;
    const json_t *next = json_object_get(answer, "next");
    struct ctl_table t;
    size_t i;

    if (!json_is_object(answer) || !json_is_array(list))
        return -1;
    if (json_array_size(list) == 0) {
        fputs("(no audit entries)\n", out);
        return 0;
    }
    ctl_table_init(&t, 7, heads, 0x31u);
    json_array_foreach(list, i, e) {
        add_fields(&t, e, (const char *const[]){"id", "at", "who",
                                                "action", "from_version",
                                                "to_version", "detail",
                                                NULL});
    }
    if (print_table(&t, out) != 0)
        return -1;
    if (next != NULL && !json_is_null(next)) {
        print_json(out, "\nolder entries: tollgatectl audit --before ", next,
                   "\n");
    }
    return 0;
}
