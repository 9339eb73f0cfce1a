/* Tests for rules/watch.c: changes are reported per directory, once per burst
 * of editor writes, only for rule and channel files, and closing leaves no
 * handle behind. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "files.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "core/error.h"
#include "rules/watch.h"

typedef struct {
    char root[64];
    char rules[96];
    char channels[96];
    uv_loop_t loop;
    pc_watch_t *watch;
    int callbacks;
    unsigned changed;
    uint64_t last_cb_ms;
} fixture_t;

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    snprintf(fx->root, sizeof fx->root, "/tmp/pc_watch_XXXXXX");
    assert_non_null(mkdtemp(fx->root));
    snprintf(fx->rules, sizeof fx->rules, "%s/rules", fx->root);
    snprintf(fx->channels, sizeof fx->channels, "%s/channels", fx->root);
    assert_int_equal(mkdir(fx->rules, 0755), 0);
    assert_int_equal(mkdir(fx->channels, 0755), 0);
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    /* A leaked handle would keep the loop from closing. */
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    pc_t_rm_tree(fx->root);
    free(fx);
    return 0;
}

static void on_change(pc_watch_t *w, unsigned changed, void *data)
{
    (void)w;
    fixture_t *fx = data;
    fx->callbacks++;
    fx->changed |= changed;
    fx->last_cb_ms = uv_now(&fx->loop);
}

static void start(fixture_t *fx)
{
    const char *dirs[] = {fx->rules, fx->channels};
    assert_int_equal(pc_watch_start(&fx->loop, dirs, 2, 50, on_change, fx, &fx->watch), 0);
}

/* Runs the loop for ms milliseconds. */
static void on_stop(uv_timer_t *t)
{
    uv_stop(t->loop);
}

static void run_for(fixture_t *fx, uint64_t ms)
{
    uv_timer_t t;
    uv_timer_init(&fx->loop, &t);
    uv_timer_start(&t, on_stop, ms, 0);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
}

static void finish(fixture_t *fx)
{
    pc_watch_close(fx->watch);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
}

static void test_burst_of_writes_gives_one_callback_for_that_directory(void **state)
{
    fixture_t *fx = *state;
    start(fx);
    run_for(fx, 20);
    /* An editor's save: temporary file, rename over the rule, touch again. */
    pc_t_write_file(fx->rules, "risk.lua.tmp~", "x");
    pc_t_write_file(fx->rules, "risk.lua", "return 1");
    pc_t_write_file(fx->rules, "risk.lua", "return 2");
    uint64_t wrote = uv_now(&fx->loop);
    run_for(fx, 400);
    assert_int_equal(fx->callbacks, 1);
    assert_int_equal(fx->changed, 1u << 0);
    /* The callback waited for the debounce, and not much longer. */
    assert_true(fx->last_cb_ms - wrote >= 40);
    assert_true(fx->last_cb_ms - wrote < 300);
    finish(fx);
}

static void test_changes_in_each_directory_are_reported(void **state)
{
    fixture_t *fx = *state;
    start(fx);
    run_for(fx, 20);
    pc_t_write_file(fx->channels, "sim_card.json", "{}");
    run_for(fx, 300);
    assert_int_equal(fx->callbacks, 1);
    assert_int_equal(fx->changed, 1u << 1);
    fx->changed = 0;
    pc_t_write_file(fx->rules, "route.lua", "return 1");
    pc_t_write_file(fx->channels, "sim_va.json", "{}");
    run_for(fx, 300);
    assert_int_equal(fx->callbacks, 2);
    assert_int_equal(fx->changed, 3u);
    finish(fx);
}

static void test_editor_swap_files_do_not_trigger(void **state)
{
    fixture_t *fx = *state;
    start(fx);
    run_for(fx, 20);
    pc_t_write_file(fx->rules, ".risk.lua.swp", "x");
    pc_t_write_file(fx->rules, "4913", "x");
    pc_t_write_file(fx->rules, "notes.txt", "x");
    run_for(fx, 300);
    assert_int_equal(fx->callbacks, 0);
    finish(fx);
}

static void test_no_callback_after_close(void **state)
{
    fixture_t *fx = *state;
    start(fx);
    run_for(fx, 20);
    pc_t_write_file(fx->rules, "risk.lua", "return 1");
    run_for(fx, 5);
    pc_watch_close(fx->watch);
    run_for(fx, 200);
    assert_int_equal(fx->callbacks, 0);
}

static void test_missing_directory_is_an_error_and_leaves_nothing_running(void **state)
{
    fixture_t *fx = *state;
    const char *dirs[] = {fx->rules, "/nonexistent/pc_watch_dir"};
    pc_watch_t *w = NULL;
    assert_int_equal(pc_watch_start(&fx->loop, dirs, 2, 50, on_change, fx, &w), PC_EIO);
    assert_null(w);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_burst_of_writes_gives_one_callback_for_that_directory,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes_in_each_directory_are_reported, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_editor_swap_files_do_not_trigger, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_callback_after_close, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_missing_directory_is_an_error_and_leaves_nothing_running, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
