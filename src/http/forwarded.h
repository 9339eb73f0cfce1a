/* The client's address behind trusted reverse proxies (X-Forwarded-For).
 *
 * A proxy in front of paycore (TLS termination, a load balancer) is the TCP
 * peer of every request: the buyer's own address is the one the proxies
 * append to X-Forwarded-For. The header is believed only from a peer in the
 * trusted list, and read from the right: each trusted hop is skipped, and
 * the first address that is not a trusted proxy is the client (anything to
 * its left was written by the client and can be anything). */
#ifndef PC_HTTP_FORWARDED_H
#define PC_HTTP_FORWARDED_H

#include <stddef.h>

typedef struct pc_proxy_list pc_proxy_list_t;

/* Parses "10.0.0.0/8, 127.0.0.1, ::1, 2001:db8::/32" (addresses or CIDR
 * blocks, comma- or space-separated; NULL or "" for none). Returns NULL with
 * a sentence in err on a bad entry. */
pc_proxy_list_t *pc_proxy_list_parse(const char *spec, char *err, size_t errlen);
void pc_proxy_list_free(pc_proxy_list_t *l);
int pc_proxy_list_count(const pc_proxy_list_t *l);
/* Whether addr (text, IPv4, IPv6, or IPv4 written as IPv6) is in the list. */
int pc_proxy_list_has(const pc_proxy_list_t *l, const char *addr);

/* The client's address: peer itself unless peer is a trusted proxy and xff
 * (the X-Forwarded-For header, may be NULL) names an address beyond it; then
 * the rightmost address in xff that is not a trusted proxy (or the leftmost
 * one, when all are). Written to out, which is returned. */
const char *pc_forwarded_client(const pc_proxy_list_t *l, const char *peer, const char *xff,
                                char *out, size_t outlen);

/* Writes addr (IPv4, IPv6, or IPv4 written as IPv6) in its canonical text
 * ("2001:DB8:0::1" is "2001:db8::1", "::ffff:10.0.0.1" is "10.0.0.1") to out
 * (INET6_ADDRSTRLEN bytes will do). Returns 0, or -1 when addr is no
 * address or out is short. */
int pc_ip_canonical(const char *addr, char *out, size_t outlen);

/* What an address's attempts are counted under (risk's IP velocity): an
 * IPv4 address itself; an IPv6 address by its /64 ("2001:db8:1:2::/64"),
 * the block one subscriber line is given, whose other 2^64 addresses are
 * one request away. Same returns as pc_ip_canonical. */
int pc_ip_velocity_key(const char *addr, char *out, size_t outlen);

/* A block-list IP entry in the text pay compares: an IPv4 or IPv6 address
 * (pc_ip_canonical), or an IPv6 /64 written ADDR/64 (any address of it; as
 * pc_ip_velocity_key writes it). Returns 0, or -1 for anything else (other
 * prefix lengths, IPv4 blocks, not an address, out short). */
int pc_ip_block_value(const char *value, char *out, size_t outlen);

#endif
