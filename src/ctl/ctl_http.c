#include "ctl/ctl_http.h"
#include "auth/sign.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    char *p;
    size_t n;
} buf_t;

static size_t collect(char *d, size_t s, size_t n, void *ud)
{
    buf_t *b = ud;
    char *np = realloc(b->p, b->n + s * n + 1);
    if (!np)
        return 0;
    b->p = np;
    memcpy(b->p + b->n, d, s * n);
    b->n += s * n;
    b->p[b->n] = 0;
    return s * n;
}

static const char *env(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

static long request(const char *base, const char *method, const char *path, const char *body,
                    struct curl_slist *hdrs, char **keep)
{
    char url[2048];
    snprintf(url, sizeof url, "%s%s", base, path);
    CURL *c = curl_easy_init();
    buf_t b = {0};
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    if (body || !strcmp(method, "POST")) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)(body ? strlen(body) : 0));
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    long status = 0;
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    else
        fprintf(stderr, "payctl: %s: %s\n", url, curl_easy_strerror(rc));
    if (b.p) {
        json_t *j = json_loads(b.p, 0, NULL);
        if (j) {
            char *pretty = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
            printf("%s\n", pretty);
            free(pretty);
            json_decref(j);
        } else {
            printf("%s\n", b.p);
        }
    }
    if (keep)
        *keep = b.p;
    else
        free(b.p);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    return status;
}

const char *pc_ctl_operator(void)
{
    const char *who = getenv("PAYCORE_OPERATOR");
    if (!who || !who[0])
        who = getenv("USER");
    if (!who || !who[0])
        who = getenv("LOGNAME");
    if (!who || !who[0] || strlen(who) > 64 || strpbrk(who, "\r\n"))
        return NULL;
    return who;
}

struct curl_slist *pc_ctl_add_operator(struct curl_slist *h)
{
    const char *who = pc_ctl_operator();
    if (!who)
        return h;
    char op[96];
    snprintf(op, sizeof op, "X-Operator: %s", who);
    return curl_slist_append(h, op);
}

long pc_ctl_admin(const char *method, const char *path, const char *body)
{
    return pc_ctl_admin_keep(method, path, body, NULL);
}

long pc_ctl_admin_keep(const char *method, const char *path, const char *body, char **answer)
{
    char auth[512];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s",
             env("PAYCORE_ADMIN_TOKEN", "demo-admin-token-change-me"));
    struct curl_slist *h = pc_ctl_add_operator(curl_slist_append(NULL, auth));
    return request(env("PAYCORE_ADMIN_URL", "http://127.0.0.1:8081"), method, path, body, h,
                   answer);
}

long pc_ctl_merchant(const char *method, const char *path, const char *body, const char *idem_key)
{
    const char *mid = getenv("PAYCORE_MERCHANT_ID");
    const char *secret = getenv("PAYCORE_MERCHANT_SECRET");
    if (!mid || !secret) {
        fprintf(stderr, "payctl: set PAYCORE_MERCHANT_ID and PAYCORE_MERCHANT_SECRET\n");
        return 0;
    }
    char ts[24], nonce[33], key[40];
    snprintf(ts, sizeof ts, "%lld", (long long)time(NULL));
    pc_random_hex(nonce, sizeof nonce, 16);
    size_t len;
    const char *b = body ? body : "";
    char *tosign = pc_sign_request_string(method, path, ts, nonce, b, strlen(b), &len);
    char *sig = pc_hmac_sha256_sign(secret, strlen(secret), tosign, len);
    char h[5][600];
    snprintf(h[0], sizeof h[0], "X-Merchant-Id: %s", mid);
    snprintf(h[1], sizeof h[1], "X-Timestamp: %s", ts);
    snprintf(h[2], sizeof h[2], "X-Nonce: %s", nonce);
    snprintf(h[3], sizeof h[3], "X-Signature: %s", sig);
    struct curl_slist *hl = NULL;
    for (int i = 0; i < 4; i++)
        hl = curl_slist_append(hl, h[i]);
    if (!strcmp(method, "POST")) {
        if (!idem_key) {
            /* Said, so that a request whose answer was lost can be sent
             * again as the same one (a settle retried with a new key would
             * settle twice). */
            pc_random_hex(key, sizeof key, 12);
            idem_key = key;
            fprintf(stderr,
                    "payctl: Idempotency-Key %s (to retry this request, run it again with "
                    "PAYCORE_IDEMPOTENCY_KEY=%s)\n",
                    key, key);
        }
        snprintf(h[4], sizeof h[4], "Idempotency-Key: %s", idem_key);
        hl = curl_slist_append(hl, h[4]);
    }
    long st = request(env("PAYCORE_URL", "http://127.0.0.1:8080"), method, path, body, hl, NULL);
    free(tosign);
    free(sig);
    return st;
}

int pc_ctl_exit(long status)
{
    return status >= 200 && status < 300 ? 0 : 1;
}

int pc_ctl_admin_cmd(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: payctl admin METHOD PATH [BODY]\n");
        return 2;
    }
    return pc_ctl_exit(pc_ctl_admin(argv[0], argv[1], argc > 2 ? argv[2] : NULL));
}

int pc_ctl_call_cmd(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr,
                "usage: payctl call METHOD PATH [BODY]   (signed as PAYCORE_MERCHANT_ID)\n");
        return 2;
    }
    const char *key = getenv("PAYCORE_IDEMPOTENCY_KEY");
    return pc_ctl_exit(
        pc_ctl_merchant(argv[0], argv[1], argc > 2 ? argv[2] : NULL, key && key[0] ? key : NULL));
}

/* A JSON string's text, "" for anything else. */
static const char *text_of(const json_t *v)
{
    const char *t = json_string_value(v);
    return t ? t : "";
}

/* The reload's answer: 1 (said on stderr) when any part of it was refused
 * (a rule that does not compile or fails its examples, a channel file, the
 * configuration file): the node serves the old one. 0 when all loaded. */
static int reload_refused(const char *answer)
{
    json_t *j = answer ? json_loads(answer, 0, NULL) : NULL;
    if (!j)
        return 1;
    int refused = 0;
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(j, "rules"), i, r)
    {
        if (!strcmp(text_of(json_object_get(r, "status")), "refused")) {
            fprintf(stderr, "payctl: rule %s refused: %s\n", text_of(json_object_get(r, "name")),
                    text_of(json_object_get(json_object_get(r, "last_error"), "message")));
            refused = 1;
        }
    }
    json_t *ch = json_object_get(j, "channels");
    if (!strcmp(text_of(json_object_get(ch, "status")), "refused")) {
        fprintf(stderr, "payctl: channel files refused (see \"channels\" above)\n");
        refused = 1;
    }
    json_t *cfg = json_object_get(j, "config");
    if (json_is_false(json_object_get(cfg, "ok"))) {
        fprintf(stderr, "payctl: configuration refused: %s\n",
                text_of(json_object_get(cfg, "error")));
        refused = 1;
    }
    json_decref(j);
    return refused;
}

int pc_ctl_reload_cmd(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    /* A refused part is an answer of 200 (the node serves on, with the old
     * one): the exit status says it, for scripts (before, 0). */
    char *answer = NULL;
    long st = pc_ctl_admin_keep("POST", "/admin/reload", NULL, &answer);
    int rc = pc_ctl_exit(st) || reload_refused(answer);
    free(answer);
    return rc;
}

static int channel_switch(int argc, char **argv, const char *verb)
{
    if (argc < 1) {
        fprintf(stderr, "usage: payctl channel %s ID [REASON]\n", verb);
        return 2;
    }
    char path[256], body[1024] = "";
    snprintf(path, sizeof path, "/admin/channels/%s/%s", argv[0], verb);
    if (argc > 1) {
        json_t *b = json_pack("{s:s}", "reason", argv[1]);
        char *t = json_dumps(b, JSON_COMPACT);
        snprintf(body, sizeof body, "%s", t);
        free(t);
        json_decref(b);
    }
    return pc_ctl_exit(pc_ctl_admin("POST", path, body[0] ? body : NULL));
}

int pc_ctl_channel_enable(int argc, char **argv)
{
    return channel_switch(argc, argv, "enable");
}

int pc_ctl_channel_disable(int argc, char **argv)
{
    return channel_switch(argc, argv, "disable");
}
