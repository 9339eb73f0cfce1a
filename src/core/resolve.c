#include "core/resolve.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct pc_resolve {
    uv_getaddrinfo_t req;
    pc_resolve_cb cb;
    void *data;
    int cancelled;
};

int pc_resolve_needed(const char *host)
{
    if (!host || !host[0] || host[0] == '/' || host[0] == '@' || host[0] == '[' ||
        strchr(host, ','))
        return 0;
    unsigned char buf[16];
    return inet_pton(AF_INET, host, buf) != 1 && inet_pton(AF_INET6, host, buf) != 1;
}

static void resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    pc_resolve_t *r = req->data;
    char text[PC_RESOLVE_MAX][64];
    const char *addrs[PC_RESOLVE_MAX];
    int n = 0;
    for (struct addrinfo *a = status == 0 ? res : NULL; a && n < PC_RESOLVE_MAX; a = a->ai_next) {
        text[n][0] = 0;
        if (a->ai_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)a->ai_addr, text[n], sizeof text[n]);
        else if (a->ai_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)a->ai_addr, text[n], sizeof text[n]);
        int seen = !text[n][0];
        for (int i = 0; i < n && !seen; i++)
            seen = !strcmp(addrs[i], text[n]);
        if (!seen) {
            addrs[n] = text[n];
            n++;
        }
    }
    if (status == 0 && n == 0)
        status = UV_EAI_NONAME;
    if (r->cancelled)
        status = UV_ECANCELED;
    uv_freeaddrinfo(res);
    pc_resolve_cb cb = r->cb;
    void *data = r->data;
    free(r);
    cb(data, status, addrs, status == 0 ? n : 0);
}

pc_resolve_t *pc_resolve_start(uv_loop_t *loop, const char *host, pc_resolve_cb cb, void *data)
{
    pc_resolve_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->cb = cb;
    r->data = data;
    r->req.data = r;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (uv_getaddrinfo(loop, &r->req, resolved, host, NULL, &hints) < 0) {
        free(r);
        return NULL;
    }
    return r;
}

void pc_resolve_cancel(pc_resolve_t *r)
{
    if (!r)
        return;
    r->cancelled = 1;
    uv_cancel((uv_req_t *)&r->req);
}
