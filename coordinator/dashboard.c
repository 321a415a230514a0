/* dashboard.c — GET /dashboard: the ops page, its script and its style.
 *
 * The three files live in coordinator/dashboard/ and are compiled into the
 * binary by the Makefile (EMBED), so a deploy stays one file and the page
 * never loads anything from elsewhere: the Content-Security-Policy allows
 * this origin only. The page itself holds no data and needs no token; it
 * asks the operator for an admin API token (read or admin) and sends it
 * with every call it makes (/v1/stats, /v1/policy/versions, and for an
 * admin token /v1/policy/rollback), so the data stays behind the same
 * auth as the admin API.
 */
#include <string.h>

#include "tollgated.h"

/* Generated from coordinator/dashboard/ by the Makefile. */
extern const char co_dashboard_index_html[];
extern const size_t co_dashboard_index_html_len;
extern const char co_dashboard_app_js[];
extern const size_t co_dashboard_app_js_len;
extern const char co_dashboard_style_css[];
extern const size_t co_dashboard_style_css_len;

static const char *const page_headers[] = {
    "Content-Security-Policy",
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options", "nosniff",
    "Referrer-Policy", "no-referrer",
    "Cache-Control", "no-cache",
    NULL,
};

static const struct {
    const char *name;           /* NULL: the page itself (/dashboard) */
    const char *type;
    const char *body;
    const size_t *len;
} files[] = {
    {NULL, "text/html; charset=utf-8", co_dashboard_index_html,
     &co_dashboard_index_html_len},
    {"app.js", "text/javascript; charset=utf-8", co_dashboard_app_js,
     &co_dashboard_app_js_len},
    {"style.css", "text/css; charset=utf-8", co_dashboard_style_css,
     &co_dashboard_style_css_len},
};

void co_dashboard_handle(const struct co_request *req,
                         struct co_response *resp)
{
    const char *name = req->params != NULL && req->params->n > 0
                           ? req->params->v[0] : NULL;

    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        if (name == NULL ? files[i].name != NULL
                         : files[i].name == NULL ||
                               strcmp(name, files[i].name) != 0)
            continue;
        if (co_response_set(resp, 200, files[i].type, files[i].body,
                            *files[i].len) == CO_OK)
            resp->headers = page_headers;
        return;
    }
    co_response_problem(resp, 404, "no such dashboard file");
}
