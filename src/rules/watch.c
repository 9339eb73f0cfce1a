#include "rules/watch.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"

#define MAX_DIRS 16
#define DEFAULT_DEBOUNCE_MS 50
/* Under a continuous stream of events, report anyway after this many
 * debounce intervals so a busy directory cannot starve reloads. */
#define MAX_WAIT_FACTOR 10

struct pc_watch {
    uv_loop_t *loop;
    uv_fs_event_t events[MAX_DIRS];
    uv_timer_t timer;
    size_t ndirs;
    uint64_t debounce_ms;
    pc_watch_cb cb;
    void *data;
    unsigned changed;
    uint64_t first_event_ms; /* loop time of the first unreported event */
    int open_handles;
    int closing;
};

static int interesting(const char *name)
{
    if (!name)
        return 1; /* some platforms do not say which file: assume it matters */
    size_t n = strlen(name);
    return (n > 4 && strcmp(name + n - 4, ".lua") == 0) ||
           (n > 5 && strcmp(name + n - 5, ".json") == 0);
}

static void on_settled(uv_timer_t *timer)
{
    pc_watch_t *w = timer->data;
    unsigned changed = w->changed;
    w->changed = 0;
    w->first_event_ms = 0;
    if (changed && !w->closing)
        w->cb(w, changed, w->data);
}

static void on_fs_event(uv_fs_event_t *handle, const char *filename, int events, int status)
{
    (void)events;
    pc_watch_t *w = handle->data;
    if (w->closing)
        return;
    if (status < 0) {
        pc_log_warn("watch.error", "file watch error: %s", uv_strerror(status));
        return;
    }
    if (!interesting(filename))
        return;
    size_t i = (size_t)(handle - w->events);
    w->changed |= 1u << i;
    uint64_t now = uv_now(w->loop);
    if (!w->first_event_ms)
        w->first_event_ms = now;
    uint64_t waited = now - w->first_event_ms;
    uint64_t limit = w->debounce_ms * MAX_WAIT_FACTOR;
    /* Restarting the timer on each event is the debounce. */
    uint64_t delay = waited >= limit ? 0 : w->debounce_ms;
    if (waited < limit && waited + delay > limit)
        delay = limit - waited;
    uv_timer_start(&w->timer, on_settled, delay, 0);
}

static void on_close(uv_handle_t *handle)
{
    pc_watch_t *w = handle->data;
    if (--w->open_handles == 0)
        free(w);
}

void pc_watch_close(pc_watch_t *w)
{
    if (!w || w->closing)
        return;
    w->closing = 1;
    for (size_t i = 0; i < w->ndirs; i++) {
        uv_fs_event_stop(&w->events[i]);
        uv_close((uv_handle_t *)&w->events[i], on_close);
    }
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, on_close);
}

int pc_watch_start(uv_loop_t *loop, const char *const *dirs, size_t ndirs, uint64_t debounce_ms,
                   pc_watch_cb cb, void *data, pc_watch_t **out)
{
    if (!loop || !dirs || ndirs == 0 || ndirs > MAX_DIRS || !cb || !out)
        return PC_EINVAL;
    pc_watch_t *w = calloc(1, sizeof *w);
    if (!w)
        return PC_ENOMEM;
    w->loop = loop;
    w->debounce_ms = debounce_ms ? debounce_ms : DEFAULT_DEBOUNCE_MS;
    w->cb = cb;
    w->data = data;
    uv_timer_init(loop, &w->timer);
    w->timer.data = w;
    w->open_handles = 1;
    int rc = 0;
    for (size_t i = 0; i < ndirs; i++) {
        uv_fs_event_init(loop, &w->events[i]);
        w->events[i].data = w;
        w->open_handles++;
        w->ndirs = i + 1;
        rc = uv_fs_event_start(&w->events[i], on_fs_event, dirs[i], 0);
        if (rc < 0) {
            pc_log_error("watch.error", "cannot watch %s: %s", dirs[i], uv_strerror(rc));
            goto fail;
        }
    }
    *out = w;
    return 0;

fail:
    /* Handles were initialised: they must be closed through the loop. */
    pc_watch_close(w);
    return PC_EIO;
}
