/* log.c — structured logging: one logfmt line per event on stderr.
 *
 * Lines look like
 *   ts=2026-11-24T05:30:00.123Z level=info msg=sync edge=e1 seq=3 keys=2
 * and are written with a single write(2), so lines from different worker
 * threads never interleave. Anything a client controls is passed through
 * co_log_value(), which quotes and escapes it.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tollgated.h"

atomic_int co_log_min_level = CO_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* Map a --log-level word to its level. Returns 0 or CO_EINVAL. */
int co_log_level_parse(const char *name, enum co_log_level *out)
{
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum co_log_level)i;
            return CO_OK;
        }
    }
    return CO_EINVAL;
}

static bool is_bare(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' ||
           c == ':' || c == '/' || c == '@' || c == '+' || c == ',';
}

/* Render len bytes of s as a logfmt value into buf and return buf. Plain
 * tokens stay bare; anything else is double-quoted with \" \\ \n escapes and
 * \xNN for other non-printable bytes, so a client cannot forge fields or
 * lines. The value is cut (ending in "...") when buf is too small. */
const char *co_log_value(char *buf, size_t buflen, const char *s, size_t len)
{
    bool bare = len > 0;
    size_t o = 0;

    if (buflen < 8) {
        if (buflen > 0)
            buf[0] = '\0';
        return buf;
    }
    for (size_t i = 0; i < len && bare; i++)
        bare = is_bare((unsigned char)s[i]);
    if (bare) {
        if (len < buflen) {
            memcpy(buf, s, len);
            buf[len] = '\0';
            return buf;
        }
        memcpy(buf, s, buflen - 4);
        memcpy(buf + buflen - 4, "...", 4);
        return buf;
    }
    buf[o++] = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char tmp[5];
        size_t n;

        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            n = 2;
        } else if (c == '\n') {
            memcpy(tmp, "\\n", 2);
            n = 2;
        } else if (c < 0x20 || c >= 0x7f) {
            snprintf(tmp, sizeof tmp, "\\x%02x", c);
            n = 4;
        } else {
            tmp[0] = (char)c;
            n = 1;
        }
        /* keep room for `..."` and the NUL */
        if (o + n + 5 > buflen) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        memcpy(buf + o, tmp, n);
        o += n;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

/* Write one line. fmt starts with "msg=<event>"; the timestamp and level
 * are prepended here. Long lines are cut rather than split, so one event is
 * always one line. */
void co_log_write(enum co_log_level level, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    size_t n;
    int r;
    va_list ap;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof line, "ts=%Y-%m-%dT%H:%M:%S", &tm);
    r = snprintf(line + n, sizeof line - n, ".%03ldZ level=%s ",
                 ts.tv_nsec / 1000000L,
                 level_names[level <= CO_LOG_ERROR ? level : CO_LOG_ERROR]);
    if (r > 0)
        n += (size_t)r;
    va_start(ap, fmt);
    r = vsnprintf(line + n, sizeof line - n, fmt, ap);
    va_end(ap);
    if (r < 0)
        r = 0;
    if ((size_t)r >= sizeof line - n) {
        n = sizeof line - 5;
        memcpy(line + n, "...", 3);
        n += 3;
    } else {
        n += (size_t)r;
    }
    line[n++] = '\n';
    /* One write per line; a short write to stderr is not worth a retry. */
    if (write(STDERR_FILENO, line, n) < 0)
        return;
}
