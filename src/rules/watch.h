/* Watches configuration directories (rules/, rules/tests/, channels/) for
 * changes and reports them once they settle.
 *
 * Editors save in several steps (write a temporary file, rename it over the
 * old one, touch a backup); each step is a file-system event. The watcher
 * waits until no event has arrived for the debounce interval (default 50 ms)
 * before calling back, so one save gives one callback; a steady stream of
 * events still calls back at least every 10 debounce intervals. Only names
 * ending in ".lua" or ".json" count (editor swap and backup files do not).
 * Watching is not recursive: pass each directory to watch.
 *
 * The callback receives a bit mask of the directories that changed (bit i for
 * dirs[i]); it typically starts pc_rules_reload_async and/or the channel set
 * reload. Runs on the loop thread. Needs libuv. */
#ifndef PC_RULES_WATCH_H
#define PC_RULES_WATCH_H
#include <stdint.h>
#include <stddef.h>

#include <uv.h>

typedef struct pc_watch pc_watch_t;

/* changed: bit i set when dirs[i] saw a change since the last callback. */
typedef void (*pc_watch_cb)(pc_watch_t *watch, unsigned changed, void *data);

/* Starts watching up to 16 directories on loop. debounce_ms 0 means 50.
 * Returns 0 and sets *out, or a negative PC_E code (a directory that cannot
 * be watched: PC_EIO; nothing is left running then). The watcher is owned by
 * the caller and must be closed with pc_watch_close. */
int pc_watch_start(uv_loop_t *loop, const char *const *dirs, size_t ndirs, uint64_t debounce_ms,
                   pc_watch_cb cb, void *data, pc_watch_t **out);

/* Stops watching; no callback is made after this returns. The memory is
 * released once libuv has closed the handles (the loop must run). */
void pc_watch_close(pc_watch_t *watch);

#endif
