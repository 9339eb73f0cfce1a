/* Tests for core/jsonw.c: what it writes must be what jansson's
 * json_dumps(JSON_COMPACT) writes for the same values, byte for byte, on
 * random documents (strings of every kind of byte, nesting, integers at
 * their limits), and always JSON that jansson reads back, even from bytes
 * that are not UTF-8. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/jsonw.h"
#include "rng.h"

static uint64_t rng = 0x2545F4914F6CDD1Dull;

static uint32_t rnd(uint32_t n)
{
    return pc_t_rnd(&rng, n);
}

/* A valid UTF-8 text: ASCII (control characters, quotes, backslashes,
 * slashes, DEL included) and characters of two, three and four bytes. */
static void random_text(char *buf, size_t size)
{
    static const char *const pieces[] = {"a",
                                         "Z",
                                         "0",
                                         " ",
                                         "\"",
                                         "\\",
                                         "/",
                                         "\b",
                                         "\f",
                                         "\n",
                                         "\r",
                                         "\t",
                                         "\x01",
                                         "\x1f",
                                         "\x7f",
                                         "é",
                                         "\xe2\x80\xa2",
                                         "\xe2\x80\xa8",
                                         "€",
                                         "\xf0\x9f\x98\x80",
                                         "Balance 9.00",
                                         "QUICK_PAY:"};
    size_t len = 0, want = rnd(4) == 0 ? 0 : rnd(40);
    buf[0] = '\0';
    for (size_t i = 0; i < want; i++) {
        const char *p = pieces[rnd(sizeof pieces / sizeof pieces[0])];
        size_t n = strlen(p);
        if (len + n + 1 > size)
            break;
        memcpy(buf + len, p, n + 1);
        len += n;
    }
}

/* Writes a random value both ways: into w, and as the jansson value it
 * returns. */
static json_t *random_value(pc_jw_t *w, int depth)
{
    uint32_t kind = depth >= 4 ? rnd(5) : rnd(7);
    switch (kind) {
    case 0: {
        char s[256];
        random_text(s, sizeof s);
        pc_jw_str(w, s);
        return json_string(s);
    }
    case 1: {
        static const int64_t edges[] = {0, 1, -1, INT64_MAX, INT64_MIN, 9007199254740993LL};
        int64_t v = rnd(3) == 0 ? edges[rnd(6)] : (int64_t)rnd(2000000) - 1000000;
        pc_jw_int(w, v);
        return json_integer((json_int_t)v);
    }
    case 2: {
        int b = (int)rnd(2);
        pc_jw_bool(w, b);
        return json_boolean(b);
    }
    case 3:
        if (rnd(2)) {
            pc_jw_null(w);
        } else {
            pc_jw_str(w, NULL);
        }
        return json_null();
    case 4: { /* a jansson value passed through */
        json_t *v = json_pack("{s:[i,s,b],s:n}", "x", 1, "y\n", 1, "z");
        pc_jw_json(w, v);
        return v;
    }
    case 5: {
        json_t *o = json_object();
        pc_jw_object(w);
        uint32_t n = rnd(5);
        for (uint32_t i = 0; i < n; i++) {
            char key[64];
            random_text(key, sizeof key);
            if (json_object_get(o, key))
                continue; /* jansson keeps one value per key */
            pc_jw_key(w, key);
            json_object_set_new(o, key, random_value(w, depth + 1));
        }
        pc_jw_end_object(w);
        return o;
    }
    default: {
        json_t *a = json_array();
        pc_jw_array(w);
        uint32_t n = rnd(5);
        for (uint32_t i = 0; i < n; i++)
            json_array_append_new(a, random_value(w, depth + 1));
        pc_jw_end_array(w);
        return a;
    }
    }
}

static void test_writes_what_jansson_dumps(void **state)
{
    (void)state;
    for (int round = 0; round < 20000; round++) {
        pc_jw_t w;
        pc_jw_init(&w, rnd(2) ? 0 : 64);
        json_t *v = random_value(&w, 0);
        size_t len;
        char *mine = pc_jw_done(&w, &len);
        char *theirs = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        assert_non_null(mine);
        assert_non_null(theirs);
        if (strcmp(mine, theirs) != 0)
            fail_msg("round %d:\nmine   %s\njansson %s", round, mine, theirs);
        assert_int_equal(len, strlen(mine));
        free(mine);
        free(theirs);
        json_decref(v);
    }
}

static void test_bytes_that_are_not_utf8_stay_json(void **state)
{
    (void)state;
    const char *bad[] = {"\xff",     "a\xc3",   "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                         "ok\x80ok", "\xe2\x82"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pc_jw_t w;
        pc_jw_init(&w, 0);
        pc_jw_array(&w);
        pc_jw_str(&w, bad[i]);
        pc_jw_end_array(&w);
        char *text = pc_jw_done(&w, NULL);
        json_error_t err;
        json_t *back = json_loads(text, 0, &err);
        if (!back)
            fail_msg("case %zu: %s is not JSON: %s", i, text, err.text);
        assert_non_null(strstr(text, "\xEF\xBF\xBD"));
        json_decref(back);
        free(text);
    }
    /* Valid text passes untouched. */
    pc_jw_t w;
    pc_jw_init(&w, 0);
    pc_jw_str(&w, "Visa \xe2\x80\xa2\xe2\x80\xa2"
                  "4242 \xf0\x9f\x98\x80");
    char *text = pc_jw_done(&w, NULL);
    assert_string_equal(text, "\"Visa \xe2\x80\xa2\xe2\x80\xa2"
                              "4242 \xf0\x9f\x98\x80\"");
    free(text);
}

static void test_unbalanced_text_is_refused(void **state)
{
    (void)state;
    pc_jw_t w;
    pc_jw_init(&w, 0);
    pc_jw_object(&w);
    pc_jw_key(&w, "a");
    pc_jw_int(&w, 1);
    assert_null(pc_jw_done(&w, NULL)); /* the object was never closed */
    pc_jw_init(&w, 0);
    pc_jw_object(&w);
    pc_jw_key(&w, "a");
    pc_jw_array(&w);
    pc_jw_end_array(&w);
    pc_jw_key(&w, "b");
    pc_jw_str(&w, "x");
    pc_jw_end_object(&w);
    char *text = pc_jw_done(&w, NULL);
    assert_string_equal(text, "{\"a\":[],\"b\":\"x\"}");
    free(text);
    /* Deeper than the writer tracks: refused rather than written wrong. */
    pc_jw_init(&w, 0);
    for (int i = 0; i < PC_JW_MAX_DEPTH + 1; i++)
        pc_jw_array(&w);
    pc_jw_int(&w, 1);
    pc_jw_int(&w, 2);
    for (int i = 0; i < PC_JW_MAX_DEPTH + 1; i++)
        pc_jw_end_array(&w);
    assert_null(pc_jw_done(&w, NULL));
    pc_jw_init(&w, 0);
    for (int i = 0; i < PC_JW_MAX_DEPTH; i++)
        pc_jw_array(&w);
    pc_jw_int(&w, 1);
    pc_jw_int(&w, 2);
    for (int i = 0; i < PC_JW_MAX_DEPTH; i++)
        pc_jw_end_array(&w);
    text = pc_jw_done(&w, NULL);
    assert_non_null(strstr(text, "[1,2]"));
    free(text);
}

/* A message cut in the middle of a character (a Chinese rule message at a
 * byte limit) still becomes a JSON string: the bytes of the cut character
 * as U+FFFD, the rest as it was. Before, json_string refused it and the log
 * line or the rule's error report went without its text. */
static void test_a_string_cut_mid_character_keeps_its_text(void **state)
{
    (void)state;
    json_t *j = pc_json_string_lossy("risk \xE9\xA3\x8E\xE6\x8E"); /* 风 and half of 控 */
    assert_non_null(j);
    assert_string_equal(json_string_value(j), "risk \xE9\xA3\x8E\xEF\xBF\xBD\xEF\xBF\xBD");
    json_decref(j);
    j = pc_json_string_lossy("plain \xE9\xA3\x8E");
    assert_string_equal(json_string_value(j), "plain \xE9\xA3\x8E");
    json_decref(j);
    assert_null(pc_json_string_lossy(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writes_what_jansson_dumps),
        cmocka_unit_test(test_bytes_that_are_not_utf8_stay_json),
        cmocka_unit_test(test_unbalanced_text_is_refused),
        cmocka_unit_test(test_a_string_cut_mid_character_keeps_its_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
