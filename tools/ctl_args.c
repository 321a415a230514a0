/* ctl_args.c — command-line words to values for tollgatectl: options,
 * numbers, URL path segments, and the `quota set` flags applied to a quota
 * object. Pure: no I/O, so the unit test includes this file.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tollgatectl.h"

static const struct ctl_opt *opt_find(const struct ctl_opt *opts,
                                      const char *name, size_t len)
{
    for (; opts != NULL && opts->name != NULL; opts++)
        if (strlen(opts->name) == len && memcmp(opts->name, name, len) == 0)
            return opts;
    return NULL;
}

/* Contract in tollgatectl.h. Value options take the next argument as it
 * is, even when it starts with '-' ("--prefix -x" works); only a missing
 * one is an error. */
int ctl_opts_parse(int argc, char **argv, const struct ctl_opt *opts,
                   bool keep_unknown, char **pos, int *npos, char *err,
                   size_t errlen)
{
    int n = 0;

    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *eq;
        const struct ctl_opt *o;
        size_t len;

        if (strcmp(a, "--") == 0) {
            if (!keep_unknown)
                i++;
            while (i < argc)
                pos[n++] = argv[i++];
            break;
        }
        if (a[0] != '-' || a[1] == '\0') {
            pos[n++] = argv[i];
            continue;
        }
        eq = strchr(a, '=');
        len = eq != NULL ? (size_t)(eq - a) : strlen(a);
        o = opt_find(opts, a, len);
        if (o == NULL) {
            if (keep_unknown) {
                pos[n++] = argv[i];
                continue;
            }
            snprintf(err, errlen, "unknown option %.*s", (int)len, a);
            return -1;
        }
        if (o->arg == NULL) {
            if (eq != NULL) {
                snprintf(err, errlen, "option %s takes no value", o->name);
                return -1;
            }
            *o->flag = o->on;
        } else if (eq != NULL) {
            *o->arg = eq + 1;
        } else if (i + 1 < argc) {
            *o->arg = argv[++i];
        } else {
            snprintf(err, errlen, "option %s needs a value", o->name);
            return -1;
        }
    }
    *npos = n;
    return 0;
}

int ctl_parse_u64(const char *s, uint64_t min, uint64_t max,
                  const char *what, uint64_t *out, char *err, size_t errlen)
{
    uint64_t v = 0;
    size_t i;

    for (i = 0; s[i] >= '0' && s[i] <= '9'; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            goto bad;
        v = v * 10 + d;
    }
    if (i == 0 || s[i] != '\0' || (s[0] == '0' && i > 1))
        goto bad;
    if (v < min || v > max) {
        snprintf(err, errlen, "%s: must be between %llu and %llu, not %s",
                 what, (unsigned long long)min, (unsigned long long)max, s);
        return -1;
    }
    *out = v;
    return 0;
bad:
    snprintf(err, errlen, "%s: not a whole number: \"%s\"", what, s);
    return -1;
}

static bool is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
           c == '~';
}

long ctl_path_segment(const char *s, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    bool dots = strspn(s, ".") == strlen(s);
    size_t n = 0;

    if (s[0] == '\0')
        return -1;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (is_unreserved(*p) && !dots) {
            if (n + 1 >= outlen)
                return -1;
            out[n++] = (char)*p;
        } else {
            if (n + 3 >= outlen)
                return -1;
            out[n++] = '%';
            out[n++] = hex[*p >> 4];
            out[n++] = hex[*p & 15];
        }
    }
    out[n] = '\0';
    return (long)n;
}

/* ------------------------------------------------------------ quota set */

static int set_u64(json_t *q, const char *field, const char *opt,
                   const char *s, uint64_t min, char *err, size_t errlen)
{
    uint64_t v;

    if (s == NULL)
        return 0;
    /* JSON integers are signed 64-bit in jansson. */
    if (ctl_parse_u64(s, min, INT64_MAX, opt, &v, err, errlen) != 0)
        return -1;
    return json_object_set_new(q, field, json_integer((json_int_t)v));
}

static int set_flag(json_t *q, const char *field, int state)
{
    if (state == CTL_UNSET)
        return 0;
    return json_object_set_new(q, field, json_boolean(state == CTL_ON));
}

static int set_deny_after(json_t *q, const char *s, char *err, size_t errlen)
{
    char *end;
    double v;

    if (s == NULL)
        return 0;
    errno = 0;
    v = strtod(s, &end);
    if (s[0] == '\0' || *end != '\0' || errno != 0 || !isfinite(v) ||
        v < 0) {
        snprintf(err, errlen, "--deny-after: not a number >= 0: \"%s\"", s);
        return -1;
    }
    return json_object_set_new(q, "deny_after", json_real(v));
}

/* A string option; jansson refuses a string that is not UTF-8. */
static int set_str(json_t *q, const char *field, const char *opt,
                   const char *s, char *err, size_t errlen)
{
    json_t *v;

    if (s == NULL)
        return 0;
    v = json_string(s);
    if (v == NULL) {
        snprintf(err, errlen, "%s: not valid UTF-8", opt);
        return -1;
    }
    return json_object_set_new(q, field, v);
}

/* "GET,POST" -> ["GET","POST"]; "" -> [] (every method). */
static int set_methods(json_t *q, const char *s, char *err, size_t errlen)
{
    json_t *arr;

    if (s == NULL)
        return 0;
    arr = json_array();
    for (const char *p = s; arr != NULL && *s != '\0'; p++) {
        size_t len = strcspn(p, ",");
        json_t *m = len > 0 ? json_stringn(p, len) : NULL;

        if (m == NULL || json_array_append_new(arr, m) != 0) {
            snprintf(err, errlen, "--methods: \"%s\" is not a list like "
                     "GET,POST", s);
            json_decref(arr);
            return -1;
        }
        p += len;                /* at the ',' the loop steps over, or end */
        if (*p == '\0')
            break;
    }
    return arr == NULL ? -1 : json_object_set_new(q, "methods", arr);
}

int ctl_quota_edit(const json_t *current, const char *name,
                   const struct ctl_quota_flags *f, json_t **out, char *err,
                   size_t errlen)
{
    json_t *q;

    *out = NULL;
    err[0] = '\0';
    if (current == NULL && f->limit == NULL) {
        snprintf(err, errlen, "quota %s does not exist: --limit is required "
                 "to create it", name);
        return -1;
    }
    if (f->action != NULL && strcmp(f->action, "challenge") != 0 &&
        strcmp(f->action, "deny") != 0) {
        snprintf(err, errlen, "--action: challenge or deny, not \"%s\"",
                 f->action);
        return -1;
    }
    if (current != NULL)
        q = json_deep_copy(current);
    else
        q = json_pack("{s:s, s:i, s:s}", "key", "ip", "window_s", 60,
                      "action", "challenge");
    if (q == NULL || !json_is_object(q))
        goto fail;
    if (set_str(q, "name", "NAME", name, err, errlen) != 0 ||
        set_u64(q, "limit", "--limit", f->limit, 1, err, errlen) != 0 ||
        set_u64(q, "window_s", "--window", f->window, 1, err, errlen) != 0 ||
        set_u64(q, "floor", "--floor", f->floor, 0, err, errlen) != 0 ||
        set_u64(q, "burst", "--burst", f->burst, 0, err, errlen) != 0 ||
        set_str(q, "key", "--key", f->key, err, errlen) != 0 ||
        set_str(q, "path_prefix", "--prefix", f->prefix, err, errlen) != 0 ||
        set_str(q, "action", "--action", f->action, err, errlen) != 0 ||
        set_deny_after(q, f->deny_after, err, errlen) != 0 ||
        set_methods(q, f->methods, err, errlen) != 0 ||
        set_flag(q, "shadow", f->shadow) != 0 ||
        set_flag(q, "fail_open", f->fail_open) != 0 ||
        set_flag(q, "require_token", f->require_token) != 0)
        goto fail;
    *out = q;
    return 0;
fail:
    if (err[0] == '\0')
        snprintf(err, errlen, "out of memory");
    json_decref(q);
    return -1;
}
