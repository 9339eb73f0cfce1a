/* Unit tests for the client's address behind trusted proxies
 * (http/forwarded.c): the list's parsing, matching by CIDR block (IPv4,
 * IPv6, IPv4 written as IPv6), and X-Forwarded-For read from the right. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "http/forwarded.h"

#include <string.h>

static void test_list_parses_addresses_and_blocks_and_refuses_the_rest(void **state)
{
    (void)state;
    char err[160];
    pc_proxy_list_t *l =
        pc_proxy_list_parse("10.0.0.0/8, 127.0.0.1 ::1,2001:db8::/32", err, sizeof err);
    assert_non_null(l);
    assert_int_equal(pc_proxy_list_count(l), 4);
    assert_true(pc_proxy_list_has(l, "10.200.3.4"));
    assert_false(pc_proxy_list_has(l, "11.0.0.1"));
    assert_true(pc_proxy_list_has(l, "127.0.0.1"));
    assert_false(pc_proxy_list_has(l, "127.0.0.2"));
    assert_true(pc_proxy_list_has(l, "::1"));
    assert_true(pc_proxy_list_has(l, "2001:db8:ffff::9"));
    assert_false(pc_proxy_list_has(l, "2001:db9::1"));
    assert_true(pc_proxy_list_has(l, "::ffff:10.1.2.3")); /* IPv4 written as IPv6 */
    assert_false(pc_proxy_list_has(l, "not-an-address"));
    pc_proxy_list_free(l);

    l = pc_proxy_list_parse("", err, sizeof err);
    assert_non_null(l);
    assert_int_equal(pc_proxy_list_count(l), 0);
    pc_proxy_list_free(l);
    l = pc_proxy_list_parse(NULL, err, sizeof err);
    assert_non_null(l);
    pc_proxy_list_free(l);

    const char *bad[] = {"10.0.0.0/33", "proxy.internal", "10.0.0.1/",
                         "10.0.0.1/x",  "::1/129",        "1.2.3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        assert_null(pc_proxy_list_parse(bad[i], err, sizeof err));
        assert_non_null(strstr(err, "not an IP address"));
    }
    /* A /0 block trusts everything of its family. */
    l = pc_proxy_list_parse("0.0.0.0/0", err, sizeof err);
    assert_true(pc_proxy_list_has(l, "203.0.113.9"));
    assert_false(pc_proxy_list_has(l, "2001:db8::1"));
    pc_proxy_list_free(l);
}

static void test_client_is_the_rightmost_untrusted_address(void **state)
{
    (void)state;
    char err[160], out[64];
    pc_proxy_list_t *l = pc_proxy_list_parse("127.0.0.1, 10.0.0.0/8", err, sizeof err);
    const struct {
        const char *peer, *xff, *want;
    } cases[] = {
        /* Not from a trusted proxy: the header is the client's to write. */
        {"198.51.100.1", "203.0.113.9", "198.51.100.1"},
        /* From the proxy: the address it forwarded for. */
        {"127.0.0.1", "203.0.113.9", "203.0.113.9"},
        /* A client that sends its own header cannot choose: the proxy
         * appended the real address last. */
        {"127.0.0.1", "1.2.3.4, 203.0.113.9", "203.0.113.9"},
        /* Several trusted hops are skipped. */
        {"127.0.0.1", "203.0.113.9, 10.1.1.1 ,10.2.2.2", "203.0.113.9"},
        /* All trusted: the leftmost. */
        {"127.0.0.1", "10.1.1.1, 10.2.2.2", "10.1.1.1"},
        /* No header, an empty one, or garbage: the peer (or the last trusted
         * hop before the garbage). */
        {"127.0.0.1", NULL, "127.0.0.1"},
        {"127.0.0.1", "", "127.0.0.1"},
        {"127.0.0.1", "unknown", "127.0.0.1"},
        {"127.0.0.1", "junk, 10.3.3.3", "10.3.3.3"},
        {"127.0.0.1", "2001:db8::7", "2001:db8::7"},
        {"::ffff:127.0.0.1", "203.0.113.9", "203.0.113.9"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pc_forwarded_client(l, cases[i].peer, cases[i].xff, out, sizeof out);
        if (strcmp(out, cases[i].want) != 0)
            fail_msg("case %zu: %s / %s -> %s, want %s", i, cases[i].peer,
                     cases[i].xff ? cases[i].xff : "(none)", out, cases[i].want);
    }
    /* No list: never believed. */
    pc_forwarded_client(NULL, "127.0.0.1", "203.0.113.9", out, sizeof out);
    assert_string_equal(out, "127.0.0.1");
    pc_proxy_list_free(l);
}

typedef int (*ip_text_fn)(const char *addr, char *out, size_t outlen);

/* Each {address, text} of cases gives that text through fn; no address,
 * no text. */
static void expect_texts(ip_text_fn fn, const char *const (*cases)[2], size_t n)
{
    char out[64];
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(fn(cases[i][0], out, sizeof out), 0);
        assert_string_equal(out, cases[i][1]);
    }
    assert_int_equal(fn("10.0.0.300", out, sizeof out), -1);
    assert_int_equal(fn("example.com", out, sizeof out), -1);
    assert_int_equal(fn("", out, sizeof out), -1);
    assert_int_equal(fn(NULL, out, sizeof out), -1);
}

/* Block-list IP entries and pay's client.ip meet in canonical text. */
static void test_addresses_have_one_canonical_text(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"10.0.0.1", "10.0.0.1"},
        {"2001:DB8:0:0::77", "2001:db8::77"},
        {"2001:db8::0:77", "2001:db8::77"},
        {"::ffff:10.0.0.1", "10.0.0.1"},
        {"::1", "::1"},
    };
    expect_texts(pc_ip_canonical, cases, sizeof cases / sizeof cases[0]);
    char out[4];
    assert_int_equal(pc_ip_canonical("2001:db8::77", out, sizeof out), -1);
}

/* Risk counts an IPv4 address's attempts under the address, an IPv6
 * address's under its /64: the addresses of one line count together. */
static void test_ipv6_attempts_count_by_their_64(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"10.0.0.1", "10.0.0.1"},
        {"::ffff:10.0.0.1", "10.0.0.1"},
        {"2001:db8:1:2::77", "2001:db8:1:2::/64"},
        {"2001:DB8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"},
        {"2001:db8:1:3::77", "2001:db8:1:3::/64"},
        {"::1", "::/64"},
        {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff::/64"},
    };
    expect_texts(pc_ip_velocity_key, cases, sizeof cases / sizeof cases[0]);
    char out[64];
    assert_int_equal(pc_ip_velocity_key("2001:db8:1:2::77", out, 17), -1); /* one short */
    assert_int_equal(pc_ip_velocity_key("2001:db8:1:2::77", out, 18), 0);
}

/* Block-list IP entries: an address, or an IPv6 /64 by any address of it;
 * other blocks refused. */
static void test_block_entries_are_addresses_or_ipv6_64s(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"10.0.0.1", "10.0.0.1"},
        {"2001:DB8::77", "2001:db8::77"},
        {"2001:db8:1:2::/64", "2001:db8:1:2::/64"},
        {"2001:DB8:1:2:a:b:c:d/64", "2001:db8:1:2::/64"},
    };
    expect_texts(pc_ip_block_value, cases, sizeof cases / sizeof cases[0]);
    char out[64];
    assert_int_equal(pc_ip_block_value("10.0.0.0/24", out, sizeof out), -1);
    assert_int_equal(pc_ip_block_value("::ffff:10.0.0.1/64", out, sizeof out), -1);
    assert_int_equal(pc_ip_block_value("2001:db8::/48", out, sizeof out), -1);
    assert_int_equal(pc_ip_block_value("2001:db8::/64x", out, sizeof out), -1);
    assert_int_equal(pc_ip_block_value("/64", out, sizeof out), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addresses_have_one_canonical_text),
        cmocka_unit_test(test_ipv6_attempts_count_by_their_64),
        cmocka_unit_test(test_block_entries_are_addresses_or_ipv6_64s),
        cmocka_unit_test(test_list_parses_addresses_and_blocks_and_refuses_the_rest),
        cmocka_unit_test(test_client_is_the_rightmost_untrusted_address),
    };
    return cmocka_run_group_tests_name("forwarded", tests, NULL, NULL);
}
