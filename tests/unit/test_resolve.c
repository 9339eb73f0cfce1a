/* Unit tests for which hosts are resolved off the loop (core/resolve.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/resolve.h"

static void test_names_are_resolved_addresses_and_sockets_are_not(void **state)
{
    (void)state;
    assert_true(pc_resolve_needed("localhost"));
    assert_true(pc_resolve_needed("db.internal"));
    assert_false(pc_resolve_needed("127.0.0.1"));
    assert_false(pc_resolve_needed("::1"));
    assert_false(pc_resolve_needed("2001:db8::5"));
    assert_false(pc_resolve_needed("[::1]"));
    assert_false(pc_resolve_needed("/var/run/postgresql")); /* a socket directory */
    assert_false(pc_resolve_needed("db1,db2"));             /* libpq's host list */
    assert_false(pc_resolve_needed(""));
    assert_false(pc_resolve_needed(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_are_resolved_addresses_and_sockets_are_not),
    };
    return cmocka_run_group_tests_name("resolve", tests, NULL, NULL);
}
