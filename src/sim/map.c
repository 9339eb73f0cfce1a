#include "sim/map.h"
#include "core/error.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t hash; /* 0 marks an empty slot; real hashes are forced non-zero */
    const char *key;
    void *val;
} slot_t;

struct pc_sim_map {
    slot_t *slots;
    size_t cap; /* a power of two */
    size_t count;
};

#define MIN_CAP 16

uint64_t pc_sim_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    /* FNV's low bits mix poorly for short keys that differ only at the end;
     * the finaliser spreads every input bit over the slot index. */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h ? h : 1;
}

pc_sim_map_t *pc_sim_map_new(void)
{
    pc_sim_map_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->slots = calloc(MIN_CAP, sizeof *m->slots);
    if (!m->slots) {
        free(m);
        return NULL;
    }
    m->cap = MIN_CAP;
    return m;
}

void pc_sim_map_free(pc_sim_map_t *m)
{
    if (!m)
        return;
    free(m->slots);
    free(m);
}

static size_t find(const pc_sim_map_t *m, const char *key, uint64_t h)
{
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        const slot_t *s = &m->slots[i];
        if (!s->hash || (s->hash == h && strcmp(s->key, key) == 0))
            return i;
    }
}

void *pc_sim_map_get(const pc_sim_map_t *m, const char *key)
{
    uint64_t h = pc_sim_hash(key);
    const slot_t *s = &m->slots[find(m, key, h)];
    return s->hash ? s->val : NULL;
}

static int grow(pc_sim_map_t *m)
{
    size_t ncap = m->cap * 2;
    slot_t *ns = calloc(ncap, sizeof *ns);
    if (!ns)
        return PC_ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        slot_t *s = &m->slots[i];
        if (!s->hash)
            continue;
        size_t j = (size_t)s->hash & (ncap - 1);
        while (ns[j].hash)
            j = (j + 1) & (ncap - 1);
        ns[j] = *s;
    }
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    return 0;
}

int pc_sim_map_put(pc_sim_map_t *m, const char *key, void *val)
{
    /* At most half full, so probe sequences stay short. */
    if ((m->count + 1) * 2 > m->cap && grow(m) < 0)
        return PC_ENOMEM;
    uint64_t h = pc_sim_hash(key);
    slot_t *s = &m->slots[find(m, key, h)];
    if (!s->hash)
        m->count++;
    s->hash = h;
    s->key = key;
    s->val = val;
    return 0;
}

void *pc_sim_map_del(pc_sim_map_t *m, const char *key)
{
    uint64_t h = pc_sim_hash(key);
    size_t mask = m->cap - 1;
    size_t i = find(m, key, h);
    if (!m->slots[i].hash)
        return NULL;
    void *val = m->slots[i].val;
    /* Backward-shift: move later members of the probe run into the hole when
     * their home slot is at or before it, so no lookup ever stops early. */
    size_t hole = i;
    for (size_t j = (i + 1) & mask; m->slots[j].hash; j = (j + 1) & mask) {
        size_t home = (size_t)m->slots[j].hash & mask;
        size_t dist_j = (j - home) & mask;
        size_t dist_hole = (j - hole) & mask;
        if (dist_j >= dist_hole) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    memset(&m->slots[hole], 0, sizeof m->slots[hole]);
    m->count--;
    return val;
}

size_t pc_sim_map_count(const pc_sim_map_t *m)
{
    return m->count;
}

void *pc_sim_map_next(const pc_sim_map_t *m, size_t *pos, const char **key)
{
    for (size_t i = *pos; i < m->cap; i++) {
        if (m->slots[i].hash) {
            *pos = i + 1;
            if (key)
                *key = m->slots[i].key;
            return m->slots[i].val;
        }
    }
    *pos = m->cap;
    return NULL;
}
