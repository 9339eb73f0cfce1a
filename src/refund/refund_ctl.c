#include "refund/refund_ctl.h"
#include "ctl/ctl_http.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *p;
    size_t len;
} body_t;

static size_t collect(char *ptr, size_t size, size_t n, void *data)
{
    body_t *b = data;
    size_t add = size * n;
    char *p = realloc(b->p, b->len + add + 1);
    if (!p)
        return 0;
    memcpy(p + b->len, ptr, add);
    b->p = p;
    b->len += add;
    b->p[b->len] = 0;
    return add;
}

/* POSTs (body non-NULL) or GETs path on the admin API; prints the answer
 * unless quiet; returns the HTTP status (0 when there was no answer) and
 * hands the body to *out when out is not NULL (caller frees). */
static long admin_call(const char *path, const char *body, int quiet, char **out)
{
    const char *base = getenv("PAYCORE_ADMIN_URL");
    const char *token = getenv("PAYCORE_ADMIN_TOKEN");
    if (!base || !base[0])
        base = "http://127.0.0.1:8081";
    if (!token || !token[0]) {
        fprintf(stderr, "payctl: set PAYCORE_ADMIN_TOKEN to the admin API's bearer token\n");
        return 0;
    }
    char url[1024], auth[600];
    snprintf(url, sizeof url, "%s%s", base, path);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    CURL *c = curl_easy_init();
    if (!c)
        return 0;
    struct curl_slist *h = pc_ctl_add_operator(curl_slist_append(NULL, auth));
    h = curl_slist_append(h, "Content-Type: application/json");
    body_t resp = {NULL, 0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    long status = 0;
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK)
        fprintf(stderr, "payctl: %s: %s\n", url, curl_easy_strerror(rc));
    else
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (!quiet && resp.p) {
        json_t *j = json_loads(resp.p, 0, NULL);
        if (j) {
            json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
            fputc('\n', stdout);
            json_decref(j);
        } else {
            fprintf(stdout, "%s\n", resp.p);
        }
    }
    if (out)
        *out = resp.p;
    else
        free(resp.p);
    return status;
}

static int exit_of(long status)
{
    return status >= 200 && status < 300 ? 0 : 1;
}

/* Finds "--name value" in argv; NULL when absent. *bad is set for a flag
 * without a value. */
static const char *flag(int argc, char **argv, const char *name, int *bad)
{
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], name) != 0)
            continue;
        if (i + 1 >= argc) {
            *bad = 1;
            return NULL;
        }
        return argv[i + 1];
    }
    return NULL;
}

/* Positional arguments: those that are neither flags nor flag values. */
static int positional(int argc, char **argv, char **out, int max)
{
    int n = 0;
    for (int i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "--", 2)) {
            i++;
            continue;
        }
        if (n < max)
            out[n] = argv[i];
        n++;
    }
    return n;
}

static int refund_action(const char *verb, int argc, char **argv)
{
    int bad = 0;
    const char *why = flag(argc, argv, "--why", &bad);
    const char *outcome = flag(argc, argv, "--outcome", &bad);
    const char *code = flag(argc, argv, "--failure-code", &bad);
    char *pos[1];
    if (bad || !why || positional(argc, argv, pos, 1) != 1) {
        fprintf(stderr, "usage: payctl refunds %s <refund_no> --why TEXT%s\n", verb,
                !strcmp(verb, "confirm") ? " [--outcome SUCCESS|FAILED] [--failure-code CODE]"
                                         : "");
        return 2;
    }
    json_t *b = json_pack("{s:s}", "why", why);
    if (outcome)
        json_object_set_new(b, "outcome", json_string(outcome));
    if (code)
        json_object_set_new(b, "failure_code", json_string(code));
    char *body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    char path[256];
    snprintf(path, sizeof path, "/admin/refunds/%s/%s", pos[0], verb);
    long st = admin_call(path, body, 0, NULL);
    free(body);
    return exit_of(st);
}

int pc_refund_ctl_suspend(int argc, char **argv)
{
    return refund_action("suspend", argc, argv);
}

int pc_refund_ctl_resume(int argc, char **argv)
{
    return refund_action("resume", argc, argv);
}

int pc_refund_ctl_terminate(int argc, char **argv)
{
    return refund_action("terminate", argc, argv);
}

int pc_refund_ctl_force_fail(int argc, char **argv)
{
    return refund_action("force-fail", argc, argv);
}

int pc_refund_ctl_confirm(int argc, char **argv)
{
    return refund_action("confirm", argc, argv);
}

int pc_refund_ctl_batch_export(int argc, char **argv)
{
    int bad = 0;
    const char *channel = flag(argc, argv, "--channel", &bad);
    const char *method = flag(argc, argv, "--method", &bad);
    const char *out = flag(argc, argv, "--out", &bad);
    const char *why = flag(argc, argv, "--why", &bad);
    char *pos[1];
    if (bad || positional(argc, argv, pos, 1) != 0 ||
        (!channel && (!method || strcmp(method, "OFFLINE") != 0))) {
        fprintf(stderr, "usage: payctl refund-batch export --channel ID [--method FILE|OFFLINE] "
                        "[--out FILE] [--why TEXT]\n");
        return 2;
    }
    json_t *b = json_pack("{s:s}", "method", method ? method : "FILE");
    if (channel)
        json_object_set_new(b, "channel_id", json_string(channel));
    if (why)
        json_object_set_new(b, "why", json_string(why));
    char *body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    char *answer = NULL;
    long st = admin_call("/admin/refund-batches", body, out != NULL, &answer);
    free(body);
    int rc = exit_of(st);
    if (out && answer) {
        json_t *j = json_loads(answer, 0, NULL);
        const char *csv = json_string_value(json_object_get(j, "csv"));
        if (rc == 0 && csv) {
            FILE *f = fopen(out, "w");
            if (!f || fputs(csv, f) < 0) {
                fprintf(stderr, "payctl: cannot write %s\n", out);
                rc = 1;
            }
            if (f && fclose(f) != 0)
                rc = 1;
            if (rc == 0)
                printf("batch %s: %lld refunds written to %s\n",
                       json_string_value(json_object_get(j, "batch_id"))
                           ? json_string_value(json_object_get(j, "batch_id"))
                           : "(none)",
                       (long long)json_integer_value(json_object_get(j, "count")), out);
        } else {
            fprintf(stdout, "%s\n", answer);
        }
        json_decref(j);
    }
    free(answer);
    return rc;
}

/* 1 (said on stderr) when the import left lines for ops: skipped for any
 * reason but being applied already (a file imported again), such as
 * another batch's file, a refund paycore does not know, a database that
 * failed, or a line the refund contradicts. The answer is 200 either way:
 * before, the exit status said success, and those refunds stayed
 * PROCESSING. */
static int import_left_lines(const char *answer)
{
    json_t *j = answer ? json_loads(answer, 0, NULL) : NULL;
    if (!j)
        return 1;
    int left = 0;
    size_t i;
    json_t *l;
    json_array_foreach(json_object_get(j, "skipped"), i, l)
    {
        const char *why = json_string_value(json_object_get(l, "reason"));
        if (why && !strncmp(why, "the refund is ", 14))
            continue; /* applied before */
        left++;
    }
    if (left)
        fprintf(stderr, "payctl: %d line(s) of the file were not applied (see \"skipped\")\n",
                left);
    json_decref(j);
    return left > 0;
}

int pc_refund_ctl_batch_import(int argc, char **argv)
{
    int bad = 0;
    const char *why = flag(argc, argv, "--why", &bad);
    char *pos[2];
    if (bad || positional(argc, argv, pos, 2) != 2) {
        fprintf(stderr, "usage: payctl refund-batch import <batch_id> <result.csv> [--why TEXT]\n");
        return 2;
    }
    FILE *f = fopen(pos[1], "rb");
    if (!f) {
        fprintf(stderr, "payctl: cannot read %s\n", pos[1]);
        return 1;
    }
    body_t csv = {NULL, 0};
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        if (collect(buf, 1, n, &csv) != n)
            break;
    fclose(f);
    json_t *b = json_pack("{s:s#}", "csv", csv.p ? csv.p : "", csv.len);
    free(csv.p);
    if (!b) {
        fprintf(stderr, "payctl: %s is not UTF-8 text\n", pos[1]);
        return 1;
    }
    if (why)
        json_object_set_new(b, "why", json_string(why));
    char *body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    char path[256], *answer = NULL;
    snprintf(path, sizeof path, "/admin/refund-batches/%s/results", pos[0]);
    long st = admin_call(path, body, 0, &answer);
    free(body);
    int rc = exit_of(st) || import_left_lines(answer);
    free(answer);
    return rc;
}
