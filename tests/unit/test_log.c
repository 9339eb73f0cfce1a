/* Unit tests for src/core/log.c: lines reach stderr whole and in order, a
 * reader of stderr that stops reading never holds up the caller, and a
 * process that crashes still writes out the lines it had queued. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "core/log.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int g_stderr = -1;

/* After each test: stderr back (cmocka writes there too). */
static int restore_stderr(void **state)
{
    (void)state;
    dup2(g_stderr, STDERR_FILENO);
    return 0;
}

/* A new pipe as stderr; its read end, non-blocking. */
static int pipe_as_stderr(void)
{
    if (g_stderr < 0)
        g_stderr = dup(STDERR_FILENO);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_true(dup2(fds[1], STDERR_FILENO) >= 0);
    close(fds[1]);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    return fds[0];
}

/* Reads what is in fd now, appending to *buf (grown). */
static void take(int fd, char **buf, size_t *len, size_t *cap)
{
    for (;;) {
        if (*cap - *len < 65536) {
            *cap = *cap * 2 + 65536;
            *buf = realloc(*buf, *cap);
            assert_non_null(*buf);
        }
        ssize_t n = read(fd, *buf + *len, *cap - *len - 1);
        if (n <= 0)
            break;
        *len += (size_t)n;
    }
    (*buf)[*len] = 0;
}

/* Reads fd until every line logged so far is out (20 s at most). */
static char *drain(int fd)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (int i = 0; i < 2000; i++) {
        take(fd, &buf, &len, &cap);
        if (pc_log_flush(10) == 0)
            break;
    }
    take(fd, &buf, &len, &cap);
    assert_int_equal(pc_log_flush(0), 0);
    return buf;
}

static void test_lines_come_out_whole_and_in_order(void **state)
{
    (void)state;
    int fd = pipe_as_stderr();
    for (int i = 0; i < 300; i++)
        pc_log_info("test.line", "line %d", i);
    char *out = drain(fd);
    const char *p = out;
    for (int i = 0; i < 300; i++) {
        char want[64];
        snprintf(want, sizeof want, "\"event\":\"test.line\",\"msg\":\"line %d\"}\n", i);
        const char *at = strstr(p, want);
        if (!at)
            fail_msg("line %d missing or out of order", i);
        p = at + strlen(want);
    }
    assert_null(strstr(out, "log.dropped"));
    free(out);
    close(fd);
}

/* Nobody reads stderr (a stuck log shipper): logging goes on at once, the
 * lines that do not fit are dropped and counted, and the count is told
 * when the reader is back. Before, the 700th line or so stopped the caller
 * in fprintf for as long as nobody read (this test: until its alarm). */
static void test_a_stuck_reader_does_not_hold_up_the_caller(void **state)
{
    (void)state;
    int fd = pipe_as_stderr();
    alarm(60);
    enum { N = 50000 };
    for (int i = 0; i < N; i++)
        pc_log_info("test.stuck", "line %d of a reader that does not read", i);
    alarm(0);
    assert_int_equal(pc_log_flush(50), PC_ETIMEDOUT);
    char *out = drain(fd);
    /* The lines that came out are the first ones, in order; the rest were
     * counted. */
    int got = 0;
    const char *p = out;
    for (;;) {
        char want[96];
        snprintf(want, sizeof want, "\"msg\":\"line %d of a reader", got);
        const char *at = strstr(p, want);
        if (!at)
            break;
        p = at + strlen(want);
        got++;
    }
    const char *d = strstr(out, "\"event\":\"log.dropped\"");
    assert_non_null(d);
    const char *n = strstr(d, "\"dropped\":");
    assert_non_null(n);
    long dropped = strtol(n + strlen("\"dropped\":"), NULL, 10);
    assert_true(got > 0);
    assert_true(dropped > 0);
    assert_int_equal(got + dropped, N);
    free(out);
    close(fd);
}

#define CRASH_LINES 4000

/* Run as "test_log --crash": queues more lines than a pipe holds, then
 * crashes before the writer thread can have written them all. */
static int crash_child(void)
{
    pc_log_flush_on_crash();
    for (int i = 0; i < CRASH_LINES; i++)
        pc_log_info("test.crash_line",
                    "line %d of %d, padded to make the pipe overflow: "
                    "................................................",
                    i, CRASH_LINES);
    raise(SIGSEGV);
    return 0;
}

static void test_a_crash_still_writes_the_queued_lines(void **state)
{
    (void)state;
#if defined(__SANITIZE_ADDRESS__)
    skip(); /* ASan reports the fault instead */
#endif
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        execl("/proc/self/exe", "test_log", "--crash", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    /* Read nothing for a while: the pipe fills, the writer blocks, the
     * ring holds the rest when the child crashes. */
    usleep(300000);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 65536) {
            cap = cap * 2 + 65536;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        ssize_t n = read(fds[0], buf + len, cap - len - 1);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = 0;
    close(fds[0]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGSEGV);
    int lines = 0;
    for (char *p = buf; (p = strstr(p, "\"test.crash_line\"")); p++)
        lines++;
    free(buf);
    if (lines != CRASH_LINES)
        fail_msg("%d of %d lines came out of the crashed process", lines, CRASH_LINES);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--crash") == 0)
        return crash_child();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_crash_still_writes_the_queued_lines),
        cmocka_unit_test_teardown(test_lines_come_out_whole_and_in_order, restore_stderr),
        cmocka_unit_test_teardown(test_a_stuck_reader_does_not_hold_up_the_caller, restore_stderr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
