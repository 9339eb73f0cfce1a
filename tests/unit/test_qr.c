/* Unit tests for web/qr: the SVG of a QR code has the size the QR standard
 * gives for the text (version 1 is 21 modules, plus a four-module quiet zone
 * on each side), its three finder patterns where they belong, and refuses
 * what it cannot encode. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "web/qr.h"

static void test_short_text_is_a_version_1_symbol_with_quiet_zone(void **state)
{
    (void)state;
    size_t len = 0;
    char *svg = pc_qr_svg("QR-123", &len);
    assert_non_null(svg);
    assert_int_equal(len, strlen(svg));
    assert_non_null(strstr(svg, "viewBox=\"0 0 29 29\""));
    assert_true(strncmp(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\"", 39) == 0);
    /* The corners of the three finder patterns are dark, the quiet zone is not drawn. */
    assert_non_null(strstr(svg, "M4 4h1v1h-1z"));
    assert_non_null(strstr(svg, "M24 4h1v1h-1z"));
    assert_non_null(strstr(svg, "M4 24h1v1h-1z"));
    assert_null(strstr(svg, "M3 "));
    assert_null(strstr(svg, "M25 "));
    free(svg);
}

static void test_longer_text_gives_a_larger_symbol(void **state)
{
    (void)state;
    char text[200];
    memset(text, 'x', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    char *svg = pc_qr_svg(text, NULL);
    assert_non_null(svg);
    int w = 0;
    assert_int_equal(sscanf(strstr(svg, "viewBox=\"0 0 "), "viewBox=\"0 0 %d", &w), 1);
    assert_true(w > 29 && (w - 8 - 17) % 4 == 0); /* 17 + 4 × version modules */
    free(svg);
}

static void test_empty_or_oversized_text_is_refused(void **state)
{
    (void)state;
    assert_null(pc_qr_svg("", NULL));
    assert_null(pc_qr_svg(NULL, NULL));
    char *big = malloc(1100);
    memset(big, 'a', 1099);
    big[1099] = '\0';
    assert_null(pc_qr_svg(big, NULL));
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_short_text_is_a_version_1_symbol_with_quiet_zone),
        cmocka_unit_test(test_longer_text_gives_a_larger_symbol),
        cmocka_unit_test(test_empty_or_oversized_text_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
