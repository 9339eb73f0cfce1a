#include "http/forwarded.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int family; /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    int prefix; /* bits */
} block_t;

struct pc_proxy_list {
    block_t *blocks;
    int n;
};

/* Parses an address; an IPv4 address written as IPv6 (::ffff:a.b.c.d) is
 * read as the IPv4 one it is. Returns 0 or -1. */
static int parse_addr(const char *s, int *family, unsigned char out[16])
{
    if (inet_pton(AF_INET, s, out) == 1) {
        *family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, s, out) != 1)
        return -1;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(out, mapped, 12) == 0) {
        memmove(out, out + 12, 4);
        *family = AF_INET;
    } else {
        *family = AF_INET6;
    }
    return 0;
}

static int addr_text(int family, const unsigned char a[16], char *out, size_t outlen)
{
    return inet_ntop(family, a, out, (socklen_t)outlen) ? 0 : -1;
}

/* What attempts from a are counted under: an IPv4 address itself, an IPv6
 * one its /64 (a is changed). */
static int velocity_text(int family, unsigned char a[16], char *out, size_t outlen)
{
    if (family == AF_INET)
        return addr_text(family, a, out, outlen);
    memset(a + 8, 0, 8);
    char net[INET6_ADDRSTRLEN];
    if (addr_text(family, a, net, sizeof net) < 0)
        return -1;
    int n = snprintf(out, outlen, "%s/64", net);
    return n > 0 && (size_t)n < outlen ? 0 : -1;
}

/* addr parsed, then written as the address (velocity 0) or as what its
 * attempts are counted under (1). */
static int ip_text(const char *addr, int velocity, char *out, size_t outlen)
{
    int family;
    unsigned char a[16];
    if (!addr || parse_addr(addr, &family, a) < 0)
        return -1;
    return velocity ? velocity_text(family, a, out, outlen) : addr_text(family, a, out, outlen);
}

int pc_ip_canonical(const char *addr, char *out, size_t outlen)
{
    return ip_text(addr, 0, out, outlen);
}

int pc_ip_velocity_key(const char *addr, char *out, size_t outlen)
{
    return ip_text(addr, 1, out, outlen);
}

int pc_ip_block_value(const char *value, char *out, size_t outlen)
{
    const char *slash = value ? strchr(value, '/') : NULL;
    if (!slash)
        return pc_ip_canonical(value, out, outlen);
    char addr[INET6_ADDRSTRLEN];
    size_t n = (size_t)(slash - value);
    int family;
    unsigned char a[16];
    if (strcmp(slash + 1, "64") != 0 || n >= sizeof addr)
        return -1;
    memcpy(addr, value, n);
    addr[n] = '\0';
    if (parse_addr(addr, &family, a) < 0 || family != AF_INET6)
        return -1;
    return velocity_text(family, a, out, outlen);
}

static int block_has(const block_t *b, int family, const unsigned char *a)
{
    if (b->family != family)
        return 0;
    int full = b->prefix / 8, rest = b->prefix % 8;
    if (memcmp(b->addr, a, (size_t)full) != 0)
        return 0;
    if (!rest)
        return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (b->addr[full] & mask) == (a[full] & mask);
}

pc_proxy_list_t *pc_proxy_list_parse(const char *spec, char *err, size_t errlen)
{
    pc_proxy_list_t *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    const char *p = spec ? spec : "";
    while (*p) {
        p += strspn(p, ", \t");
        size_t n = strcspn(p, ", \t");
        if (!n)
            break;
        char tok[80];
        if (n >= sizeof tok) {
            snprintf(err, errlen, "trusted proxy entry too long: %.40s…", p);
            pc_proxy_list_free(l);
            return NULL;
        }
        memcpy(tok, p, n);
        tok[n] = 0;
        p += n;
        block_t b = {0};
        char *slash = strchr(tok, '/');
        long prefix = -1;
        if (slash) {
            *slash = 0;
            char *end;
            prefix = strtol(slash + 1, &end, 10);
            if (!slash[1] || *end)
                prefix = -2;
        }
        if (parse_addr(tok, &b.family, b.addr) < 0 || prefix == -2 ||
            prefix > (b.family == AF_INET ? 32 : 128)) {
            snprintf(err, errlen,
                     "trusted proxy entry \"%s%s%s\" is not an IP address or CIDR block", tok,
                     slash ? "/" : "", slash ? slash + 1 : "");
            pc_proxy_list_free(l);
            return NULL;
        }
        b.prefix = prefix >= 0 ? (int)prefix : (b.family == AF_INET ? 32 : 128);
        block_t *grown = realloc(l->blocks, (size_t)(l->n + 1) * sizeof *grown);
        if (!grown) {
            pc_proxy_list_free(l);
            return NULL;
        }
        l->blocks = grown;
        l->blocks[l->n++] = b;
    }
    return l;
}

void pc_proxy_list_free(pc_proxy_list_t *l)
{
    if (!l)
        return;
    free(l->blocks);
    free(l);
}

int pc_proxy_list_count(const pc_proxy_list_t *l)
{
    return l ? l->n : 0;
}

int pc_proxy_list_has(const pc_proxy_list_t *l, const char *addr)
{
    int family;
    unsigned char a[16];
    if (!l || !addr || parse_addr(addr, &family, a) < 0)
        return 0;
    for (int i = 0; i < l->n; i++)
        if (block_has(&l->blocks[i], family, a))
            return 1;
    return 0;
}

const char *pc_forwarded_client(const pc_proxy_list_t *l, const char *peer, const char *xff,
                                char *out, size_t outlen)
{
    snprintf(out, outlen, "%s", peer ? peer : "");
    if (!xff || !pc_proxy_list_has(l, peer))
        return out;
    /* From the right: the nearest hop first. */
    size_t end = strlen(xff);
    while (end > 0) {
        size_t start = end;
        while (start > 0 && xff[start - 1] != ',')
            start--;
        size_t a = start, b = end;
        while (a < b && (xff[a] == ' ' || xff[a] == '\t'))
            a++;
        while (b > a && (xff[b - 1] == ' ' || xff[b - 1] == '\t'))
            b--;
        char tok[64];
        int family;
        unsigned char bin[16];
        if (b - a == 0 || b - a >= sizeof tok)
            return out; /* not an address: believe nothing further left */
        memcpy(tok, xff + a, b - a);
        tok[b - a] = 0;
        if (parse_addr(tok, &family, bin) < 0)
            return out;
        snprintf(out, outlen, "%s", tok);
        if (!pc_proxy_list_has(l, tok))
            return out;
        end = start > 0 ? start - 1 : 0;
    }
    return out;
}
