#include "web/assets.h"

#include <string.h>

extern const pc_embedded_file_t pc_web_cashier[];
extern const pc_embedded_file_t pc_web_console[];

/* 'self' only; images may also be data: URLs (the empty favicon). */
static const char csp[] = "default-src 'none'; script-src 'self'; style-src 'self'; "
                          "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                          "base-uri 'none'; frame-ancestors 'none'";

const pc_embedded_file_t *pc_web_asset(pc_web_site_t site, const char *name)
{
    const pc_embedded_file_t *t = site == PC_WEB_CASHIER ? pc_web_cashier : pc_web_console;
    for (; name && t->name; t++)
        if (!strcmp(t->name, name))
            return t;
    return NULL;
}

static const char *content_type(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot)
        return "application/octet-stream";
    if (!strcmp(dot, ".html"))
        return "text/html; charset=utf-8";
    if (!strcmp(dot, ".js"))
        return "text/javascript; charset=utf-8";
    if (!strcmp(dot, ".css"))
        return "text/css; charset=utf-8";
    if (!strcmp(dot, ".svg"))
        return "image/svg+xml";
    return "application/octet-stream";
}

void pc_web_headers(pc_http_req_t *req)
{
    pc_http_add_header(req, "Content-Security-Policy", csp);
    pc_http_add_header(req, "X-Content-Type-Options", "nosniff");
    pc_http_add_header(req, "X-Frame-Options", "DENY");
    pc_http_add_header(req, "Referrer-Policy", "no-referrer");
    pc_http_add_header(req, "Cache-Control", "no-store");
    /* The cashier link is a credential in the URL: once a browser has seen
     * the page over HTTPS (TLS ends in front of paycore), it never asks for
     * it over plain HTTP again. Browsers ignore it on plain HTTP answers. */
    pc_http_add_header(req, "Strict-Transport-Security", "max-age=31536000");
}

void pc_web_send(pc_http_req_t *req, int status, const pc_embedded_file_t *f)
{
    if (!f) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no such file");
        return;
    }
    pc_web_headers(req);
    pc_http_respond(req, status, content_type(f->name), f->data, f->len);
}
