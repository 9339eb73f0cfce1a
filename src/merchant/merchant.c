#include "merchant/merchant.h"
#include "core/error.h"
#include "core/log.h"

#include <openssl/crypto.h>

#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define NBUCKETS 1024
#define INVALIDATE_CHANNEL "merchant-changed"

typedef struct entry {
    struct entry *next;
    pc_merchant_t *m;
    uint64_t loaded_ms;
} entry_t;

struct pc_merchants {
    pc_db_t *db;
    pc_kv_t *kv;
    uint64_t ttl_ms;
    entry_t *buckets[NBUCKETS];
    /* Changes heard so far (any merchant): a load that heard one while it
     * was out may hold the row from before it, and is not cached. */
    uint64_t changes;
};

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

static unsigned hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % NBUCKETS;
}

pc_merchant_t *pc_merchant_ref(pc_merchant_t *m)
{
    m->refs++;
    return m;
}

void pc_merchant_unref(pc_merchant_t *m)
{
    if (!m || --m->refs > 0)
        return;
    free(m->name);
    if (m->secret) {
        /* Do not leave the secret in freed memory. */
        OPENSSL_cleanse(m->secret, strlen(m->secret));
        free(m->secret);
    }
    if (m->pub)
        pc_rsa_key_free(m->pub);
    if (m->secret_prev2) {
        OPENSSL_cleanse(m->secret_prev2, strlen(m->secret_prev2));
        free(m->secret_prev2);
    }
    if (m->secret_prev) {
        OPENSSL_cleanse(m->secret_prev, strlen(m->secret_prev));
        free(m->secret_prev);
    }
    if (m->pub_prev)
        pc_rsa_key_free(m->pub_prev);
    free(m->notify_url);
    free(m);
}

unsigned pc_product_bit(const char *name)
{
    if (!strcmp(name, "INSTANT"))
        return PC_PRODUCT_INSTANT;
    if (!strcmp(name, "GUARANTEE"))
        return PC_PRODUCT_GUARANTEE;
    if (!strcmp(name, "RECHARGE"))
        return PC_PRODUCT_RECHARGE;
    return 0;
}

static void drop_entry(pc_merchants_t *ms, const char *id)
{
    ms->changes++;
    entry_t **pp = &ms->buckets[hash(id)];
    while (*pp) {
        entry_t *e = *pp;
        if (!strcmp(e->m->id, id)) {
            *pp = e->next;
            pc_merchant_unref(e->m);
            free(e);
            return;
        }
        pp = &e->next;
    }
}

static void on_invalidate(void *data, const char *channel, const char *msg, size_t len)
{
    (void)channel;
    char id[65];
    if (len >= sizeof id)
        return;
    memcpy(id, msg, len);
    id[len] = 0;
    drop_entry(data, id);
}

pc_merchants_t *pc_merchants_new(pc_db_t *db, pc_kv_t *kv, uint64_t ttl_ms)
{
    pc_merchants_t *ms = calloc(1, sizeof *ms);
    if (!ms)
        return NULL;
    ms->db = db;
    ms->kv = kv;
    ms->ttl_ms = ttl_ms;
    pc_kv_subscribe(kv, INVALIDATE_CHANNEL, on_invalidate, ms);
    return ms;
}

void pc_merchants_free(pc_merchants_t *ms)
{
    if (!ms)
        return;
    for (int i = 0; i < NBUCKETS; i++) {
        while (ms->buckets[i]) {
            entry_t *e = ms->buckets[i];
            ms->buckets[i] = e->next;
            pc_merchant_unref(e->m);
            free(e);
        }
    }
    free(ms);
}

void pc_merchants_changed(pc_merchants_t *ms, const char *merchant_id)
{
    drop_entry(ms, merchant_id);
    char ch[128];
    pc_kv_key(ms->kv, ch, sizeof ch, INVALIDATE_CHANNEL);
    /* Best effort: other nodes also expire the entry after the TTL. */
    pc_kv_cmd(ms->kv, NULL, NULL, "PUBLISH", ch, merchant_id, NULL);
}

typedef struct {
    pc_merchants_t *ms;
    pc_merchant_cb cb;
    void *data;
    uint64_t changes; /* ms->changes when the load was sent */
} load_t;

static pc_merchant_t *merchant_from_row(pc_db_res_t *res)
{
    pc_merchant_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->refs = 1;
    snprintf(m->id, sizeof m->id, "%s", pc_db_val(res, 0, "merchant_id"));
    m->name = strdup(pc_db_val(res, 0, "name"));
    m->active = !strcmp(pc_db_val(res, 0, "status"), "ACTIVE");
    m->sign_type =
        strcmp(pc_db_val(res, 0, "sign_type"), "RSA2") == 0 ? PC_SIGN_RSA2 : PC_SIGN_HMAC;
    if (m->sign_type == PC_SIGN_HMAC) {
        m->secret = strdup(pc_db_val(res, 0, "secret"));
    } else {
        const char *pem = pc_db_val(res, 0, "public_key");
        m->pub = pc_rsa_key_new_public_pem(pem, strlen(pem));
        if (!m->pub)
            pc_log_warn("merchant.bad_key", "merchant %s has an unusable public key", m->id);
    }
    int sp = pc_db_col(res, "secret_prev"), kp = pc_db_col(res, "public_key_prev");
    if (sp >= 0 && !pc_db_isnull(res, 0, sp))
        m->secret_prev = strdup(pc_db_get(res, 0, sp));
    if (kp >= 0 && !pc_db_isnull(res, 0, kp)) {
        const char *pem = pc_db_get(res, 0, kp);
        m->pub_prev = pc_rsa_key_new_public_pem(pem, strlen(pem));
    }
    m->prev_until_s = pc_db_val_i64(res, 0, "prev_until_s");
    int sp2 = pc_db_col(res, "secret_prev2");
    if (sp2 >= 0 && !pc_db_isnull(res, 0, sp2))
        m->secret_prev2 = strdup(pc_db_get(res, 0, sp2));
    m->prev2_until_s = pc_db_val_i64(res, 0, "prev2_until_s");
    /* allowed_products arrives as a text array literal such as {INSTANT,RECHARGE}. */
    char *prods = strdup(pc_db_val(res, 0, "allowed_products"));
    char *save = NULL;
    for (char *t = strtok_r(prods, "{},", &save); t; t = strtok_r(NULL, "{},", &save))
        m->products |= pc_product_bit(t);
    free(prods);
    m->fee_rate_bp = (int)pc_db_val_i64(res, 0, "fee_rate_bp");
    m->settle_cycle_days = (int)pc_db_val_i64(res, 0, "settle_cycle_days");
    int c = pc_db_col(res, "notify_url");
    m->notify_url = pc_db_isnull(res, 0, c) ? NULL : strdup(pc_db_get(res, 0, c));
    m->advance_funding = pc_db_val(res, 0, "advance_funding")[0] == 't';
    return m;
}

static void load_cb(void *data, int status, pc_db_res_t *res)
{
    load_t *l = data;
    pc_merchants_t *ms = l->ms;
    if (status) {
        l->cb(l->data, PC_EUNAVAIL, NULL);
    } else if (pc_db_rows(res) == 0) {
        l->cb(l->data, PC_ENOTFOUND, NULL);
    } else {
        pc_merchant_t *m = merchant_from_row(res);
        if (!m) {
            l->cb(l->data, PC_ENOMEM, NULL);
        } else if (ms->changes != l->changes) {
            /* A change was heard while the row was on its way (a key
             * rotated without grace, a merchant disabled): the row may be
             * from before it. It answers this request, whose signature came
             * before the change was known, but is not kept: before, it was
             * cached over the change, and a leaked secret signed on this
             * node for up to the TTL after its rotation. */
            l->cb(l->data, 0, m);
            pc_merchant_unref(m);
        } else {
            uint64_t heard = ms->changes;
            drop_entry(ms, m->id);
            ms->changes = heard; /* not a change: the entry is replaced */
            entry_t *e = calloc(1, sizeof *e);
            e->m = m;
            e->loaded_ms = now_ms();
            unsigned h = hash(m->id);
            e->next = ms->buckets[h];
            ms->buckets[h] = e;
            l->cb(l->data, 0, m);
        }
    }
    free(l);
}

int pc_merchants_get(pc_merchants_t *ms, const char *merchant_id, pc_merchant_cb cb, void *data)
{
    for (entry_t *e = ms->buckets[hash(merchant_id)]; e; e = e->next) {
        if (!strcmp(e->m->id, merchant_id)) {
            if (now_ms() - e->loaded_ms <= ms->ttl_ms) {
                cb(data, 0, e->m);
                return 0;
            }
            break;
        }
    }
    load_t *l = calloc(1, sizeof *l);
    if (!l)
        return PC_ENOMEM;
    l->ms = ms;
    l->cb = cb;
    l->data = data;
    l->changes = ms->changes;
    const char *params[1] = {merchant_id};
    int rc = pc_db_query(ms->db,
                         "SELECT merchant_id, name, status, sign_type, secret, public_key, "
                         "allowed_products, fee_rate_bp, settle_cycle_days, notify_url, "
                         "advance_funding, CASE WHEN prev_until > now() THEN secret_prev END "
                         "AS secret_prev, CASE WHEN prev_until > now() THEN public_key_prev END "
                         "AS public_key_prev, coalesce(floor(extract(epoch FROM prev_until)), "
                         "0)::bigint AS prev_until_s, CASE WHEN prev2_until > now() THEN "
                         "secret_prev2 END AS secret_prev2, coalesce(floor(extract(epoch FROM "
                         "prev2_until)), 0)::bigint AS prev2_until_s FROM merchants WHERE "
                         "merchant_id = $1",
                         1, params, load_cb, l);
    if (rc < 0)
        free(l);
    return rc;
}
