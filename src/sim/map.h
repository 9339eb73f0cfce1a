/* A hash map from NUL-terminated string keys to pointers, for paysim's
 * indexes (transactions by reference, cards by token, nonces, …): open
 * addressing with linear probing and backward-shift deletion, so lookups stay
 * O(1) without tombstones however many records come and go. Keys are
 * borrowed: a key must stay valid and unchanged while its entry is in the map
 * (paysim points keys into the records they index, so an index costs no copy).
 * Needs nothing; not thread-safe. */
#ifndef PC_SIM_MAP_H
#define PC_SIM_MAP_H
#include <stddef.h>
#include <stdint.h>

typedef struct pc_sim_map pc_sim_map_t;

/* Returns an empty map the caller frees with pc_sim_map_free, or NULL when
 * memory runs out. */
pc_sim_map_t *pc_sim_map_new(void);
/* Frees the map; the keys and values are the caller's. NULL is allowed. */
void pc_sim_map_free(pc_sim_map_t *m);

/* The value stored under key, or NULL. */
void *pc_sim_map_get(const pc_sim_map_t *m, const char *key);
/* Stores val (not NULL) under key, replacing any earlier value (whose key
 * pointer is replaced by this one). Returns 0 or PC_ENOMEM (map unchanged). */
int pc_sim_map_put(pc_sim_map_t *m, const char *key, void *val);
/* Removes key; returns the value it had, or NULL when absent. */
void *pc_sim_map_del(pc_sim_map_t *m, const char *key);
size_t pc_sim_map_count(const pc_sim_map_t *m);

/* Iteration: start with *pos = 0; returns the next value and sets *key (may
 * be NULL), or NULL at the end. The map must not change during iteration. */
void *pc_sim_map_next(const pc_sim_map_t *m, size_t *pos, const char **key);

/* The 64-bit string hash the map uses (FNV-1a with a final avalanche), also
 * used to derive per-channel seeds. */
uint64_t pc_sim_hash(const char *s);

#endif
