/* Prometheus metrics registry for one process: counters, gauges and histograms
 * identified by name plus a label string such as `route="GET /healthz",code="200"`
 * (already escaped, without braces; "" for none). Series are created on first use
 * and live until pc_metrics_reset(). Not thread-safe (one loop per process). */
#ifndef PC_CORE_METRICS_H
#define PC_CORE_METRICS_H
#include <stdint.h>
#include <stddef.h>

typedef enum { PC_METRIC_COUNTER, PC_METRIC_GAUGE, PC_METRIC_HISTOGRAM } pc_metric_type_t;

/* Declares a metric family's type and help text. Calling it again for the same
 * name is harmless. Using a name that was never declared makes it untyped. */
void pc_metrics_describe(const char *name, pc_metric_type_t type, const char *help);

void pc_metrics_add(const char *name, const char *labels, int64_t delta);
void pc_metrics_set(const char *name, const char *labels, int64_t value);
/* Takes every counter or gauge series of name out of the rendering until it
 * is set or added to again (its value reads 0). A check that sets a gauge
 * per thing it finds calls it first, so that the series of a thing that no
 * longer exists go, rather than show their last value as current. */
void pc_metrics_unset_all(const char *name);
/* Observes a duration in seconds into a histogram with fixed latency buckets
 * (0.5 ms … 10 s). */
void pc_metrics_observe(const char *name, const char *labels, double seconds);

/* Reads back a counter or gauge (0 if absent); for tests and alerts. */
int64_t pc_metrics_get(const char *name, const char *labels);

/* Marks a described family as for ops only (e.g. one series per merchant
 * with a business figure): shown on the admin listener's /metrics, left out
 * of the public one. */
void pc_metrics_private(const char *name);

/* Renders every series in the Prometheus text format (the private families
 * too when with_private). Returns a malloc'd, NUL-terminated string the
 * caller frees; *len receives its length. */
char *pc_metrics_render(size_t *len, int with_private);

/* Drops every series and description. */
void pc_metrics_reset(void);

#endif
