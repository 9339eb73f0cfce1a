#include "sim/store.h"
#include "auth/sign.h"
#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_TXNS 200000
#define DEFAULT_MAX_CARDS 100000
#define DEFAULT_MAX_FAKED 10000
#define DEFAULT_MAX_NONCES 65536
#define MAX_INTERNED 1024
#define MAX_FAKED_KINDS 16
#define RESPOND_DAYS 7

struct pc_sim_store {
    pc_sim_limits_t lim;
    pc_sim_map_t *channels;
    pc_sim_map_t *by_ref;
    pc_sim_map_t *by_reference;
    pc_sim_map_t *interned;
    pc_sim_txn_t *oldest, *newest;
    size_t ntxns;
    pc_sim_card_t *oldest_card, *newest_card;
    size_t ncards;
    size_t nlines;
    pc_sim_faked_t *faked; /* ring */
    size_t faked_head, faked_count;
    uint64_t faked_seq;
    struct {
        const char *kind;
        uint64_t n;
    } faked_kinds[MAX_FAKED_KINDS];
    uint64_t seq;
    char run[7];
    uint8_t fp_key[32];
};

const char *pc_sim_kind_name(pc_sim_kind_t k)
{
    static const char *const names[] = {"PAY", "REFUND", "PAYOUT"};
    return (unsigned)k < 3 ? names[k] : "?";
}

const char *pc_sim_status_name(pc_sim_status_t s)
{
    static const char *const names[] = {"PROCESSING", "SUCCESS", "FAILED", "CLOSED", "RETURNED"};
    return (unsigned)s < 5 ? names[s] : "?";
}

bool pc_sim_status_final(pc_sim_status_t s)
{
    return s != PC_SIM_PROCESSING;
}

pc_sim_store_t *pc_sim_store_new(const pc_sim_limits_t *limits)
{
    pc_sim_store_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->lim = *limits;
    if (!s->lim.max_txns)
        s->lim.max_txns = DEFAULT_MAX_TXNS;
    if (!s->lim.max_cards)
        s->lim.max_cards = DEFAULT_MAX_CARDS;
    if (!s->lim.max_lines)
        s->lim.max_lines = 2 * s->lim.max_txns;
    if (!s->lim.max_faked)
        s->lim.max_faked = DEFAULT_MAX_FAKED;
    if (!s->lim.max_nonces)
        s->lim.max_nonces = DEFAULT_MAX_NONCES;
    s->channels = pc_sim_map_new();
    s->by_ref = pc_sim_map_new();
    s->by_reference = pc_sim_map_new();
    s->interned = pc_sim_map_new();
    s->faked = calloc(s->lim.max_faked, sizeof *s->faked);
    char hex[7];
    /* A random run id keeps references unique across paysim restarts, which
     * matters because paycore's database outlives a simulator process. */
    if (!s->channels || !s->by_ref || !s->by_reference || !s->interned || !s->faked ||
        pc_random_hex(hex, sizeof hex, 3) < 0 ||
        pc_random_hex((char *)s->fp_key, sizeof s->fp_key, 15) < 0) {
        pc_sim_store_free(s);
        return NULL;
    }
    memcpy(s->run, hex, sizeof s->run);
    return s;
}

static void day_free(pc_sim_day_t *d)
{
    free(d->lines);
    free(d->cbs);
    free(d);
}

static void channel_free(pc_sim_channel_t *ch)
{
    size_t pos = 0;
    pc_sim_day_t *d;
    while ((d = pc_sim_map_next(ch->days, &pos, NULL)))
        day_free(d);
    pc_sim_map_free(ch->pays);
    pc_sim_map_free(ch->refunds);
    pc_sim_map_free(ch->payouts);
    pc_sim_map_free(ch->cards);
    pc_sim_map_free(ch->card_fps);
    pc_sim_map_free(ch->days);
    pc_sim_nonces_free(ch->nonces);
    free(ch);
}

void pc_sim_store_free(pc_sim_store_t *s)
{
    if (!s)
        return;
    for (pc_sim_txn_t *t = s->oldest, *next; t; t = next) {
        next = t->newer;
        free(t);
    }
    for (pc_sim_card_t *c = s->oldest_card, *next; c; c = next) {
        next = c->newer;
        free(c);
    }
    if (s->channels) {
        size_t pos = 0;
        pc_sim_channel_t *ch;
        while ((ch = pc_sim_map_next(s->channels, &pos, NULL)))
            channel_free(ch);
    }
    if (s->interned) {
        size_t pos = 0;
        char *str;
        while ((str = pc_sim_map_next(s->interned, &pos, NULL)))
            free(str);
    }
    pc_sim_map_free(s->channels);
    pc_sim_map_free(s->by_ref);
    pc_sim_map_free(s->by_reference);
    pc_sim_map_free(s->interned);
    free(s->faked);
    free(s);
}

/* ---- Channels -------------------------------------------------------------- */

bool pc_sim_channel_id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n >= PC_SIM_CHANNEL_LEN)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

void pc_sim_channel_seed(pc_sim_store_t *s, pc_sim_channel_t *ch, uint64_t seed)
{
    (void)s;
    pc_sim_rng_seed(&ch->rng, pc_sim_rng_derive(seed, ch->id));
}

pc_sim_channel_t *pc_sim_channel_get(pc_sim_store_t *s, const char *id, bool create)
{
    if (!pc_sim_channel_id_valid(id))
        return NULL;
    pc_sim_channel_t *ch = pc_sim_map_get(s->channels, id);
    if (ch || !create || pc_sim_map_count(s->channels) >= PC_SIM_MAX_CHANNELS)
        return ch;
    ch = calloc(1, sizeof *ch);
    if (!ch)
        return NULL;
    snprintf(ch->id, sizeof ch->id, "%s", id);
    if (pc_sim_secret(id, ch->secret, sizeof ch->secret, &ch->demo_secret) < 0)
        goto fail;
    pc_sim_faults_defaults(&ch->faults, id);
    pc_sim_channel_seed(s, ch, s->lim.seed);
    ch->pays = pc_sim_map_new();
    ch->refunds = pc_sim_map_new();
    ch->payouts = pc_sim_map_new();
    ch->cards = pc_sim_map_new();
    ch->card_fps = pc_sim_map_new();
    ch->days = pc_sim_map_new();
    ch->nonces = pc_sim_nonces_new(s->lim.max_nonces);
    if (!ch->pays || !ch->refunds || !ch->payouts || !ch->cards || !ch->card_fps || !ch->days ||
        !ch->nonces)
        goto fail;
    if (pc_sim_map_put(s->channels, ch->id, ch) < 0)
        goto fail;
    return ch;
fail:
    channel_free(ch);
    return NULL;
}

pc_sim_channel_t *pc_sim_channel_next(pc_sim_store_t *s, size_t *pos)
{
    return pc_sim_map_next(s->channels, pos, NULL);
}

/* ---- References ------------------------------------------------------------ */

void pc_sim_store_ref(pc_sim_store_t *s, const char *prefix, char out[PC_SIM_REF_LEN])
{
    snprintf(out, PC_SIM_REF_LEN, "%.4s_%s%010llu", prefix, s->run, (unsigned long long)++s->seq);
}

const char *pc_sim_store_intern(pc_sim_store_t *s, const char *str)
{
    char *have = pc_sim_map_get(s->interned, str);
    if (have)
        return have;
    if (pc_sim_map_count(s->interned) >= MAX_INTERNED)
        return NULL;
    char *copy = strdup(str);
    if (!copy || pc_sim_map_put(s->interned, copy, copy) < 0) {
        free(copy);
        return NULL;
    }
    return copy;
}

/* ---- Transactions ---------------------------------------------------------- */

static pc_sim_map_t *no_index(pc_sim_channel_t *ch, pc_sim_kind_t kind)
{
    return kind == PC_SIM_PAY ? ch->pays : kind == PC_SIM_REFUND ? ch->refunds : ch->payouts;
}

static void unlink_txn(pc_sim_store_t *s, pc_sim_txn_t *t)
{
    if (pc_sim_map_get(s->by_ref, t->ref) == t)
        pc_sim_map_del(s->by_ref, t->ref);
    pc_sim_map_t *idx = no_index(t->ch, t->kind);
    if (pc_sim_map_get(idx, t->no) == t)
        pc_sim_map_del(idx, t->no);
    if (t->reference[0] && pc_sim_map_get(s->by_reference, t->reference) == t)
        pc_sim_map_del(s->by_reference, t->reference);
    if (t->older)
        t->older->newer = t->newer;
    else
        s->oldest = t->newer;
    if (t->newer)
        t->newer->older = t->older;
    else
        s->newest = t->older;
    s->ntxns--;
}

pc_sim_txn_t *pc_sim_txn_new(pc_sim_store_t *s, pc_sim_channel_t *ch, pc_sim_kind_t kind,
                             const char *no, int64_t now_ms)
{
    pc_sim_txn_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->kind = kind;
    t->status = PC_SIM_PROCESSING;
    t->ch = ch;
    pc_sim_store_ref(s, kind == PC_SIM_PAY ? "pay" : kind == PC_SIM_REFUND ? "rfd" : "pot", t->ref);
    snprintf(t->no, sizeof t->no, "%s", no);
    t->created_ms = now_ms;
    if (pc_sim_map_put(s->by_ref, t->ref, t) < 0)
        goto fail;
    if (pc_sim_map_put(no_index(ch, kind), t->no, t) < 0) {
        pc_sim_map_del(s->by_ref, t->ref);
        goto fail;
    }
    t->older = s->newest;
    if (s->newest)
        s->newest->newer = t;
    else
        s->oldest = t;
    s->newest = t;
    s->ntxns++;
    while (s->ntxns > s->lim.max_txns && s->oldest != t) {
        pc_sim_txn_t *old = s->oldest;
        unlink_txn(s, old);
        if (s->lim.on_evict)
            s->lim.on_evict(s->lim.on_evict_data, old);
        free(old);
    }
    return t;
fail:
    free(t);
    return NULL;
}

pc_sim_txn_t *pc_sim_txn_by_ref(pc_sim_store_t *s, const char *ref)
{
    return pc_sim_map_get(s->by_ref, ref);
}

pc_sim_txn_t *pc_sim_txn_by_no(pc_sim_channel_t *ch, pc_sim_kind_t kind, const char *no)
{
    return pc_sim_map_get(no_index(ch, kind), no);
}

int pc_sim_txn_set_reference(pc_sim_store_t *s, pc_sim_txn_t *t, const char *reference)
{
    if (pc_sim_map_get(s->by_reference, reference))
        return PC_ECONFLICT;
    snprintf(t->reference, sizeof t->reference, "%s", reference);
    if (pc_sim_map_put(s->by_reference, t->reference, t) < 0) {
        t->reference[0] = 0;
        return PC_ENOMEM;
    }
    return 0;
}

pc_sim_txn_t *pc_sim_txn_by_reference(pc_sim_store_t *s, const char *reference)
{
    return pc_sim_map_get(s->by_reference, reference);
}

pc_sim_txn_t *pc_sim_txn_oldest(pc_sim_store_t *s)
{
    return s->oldest;
}

size_t pc_sim_txn_count(const pc_sim_store_t *s)
{
    return s->ntxns;
}

/* ---- Cards ----------------------------------------------------------------- */

int pc_sim_store_fingerprint(pc_sim_store_t *s, const char *pan, char out[33])
{
    uint8_t mac[PC_SHA256_LEN];
    if (pc_hmac_sha256(s->fp_key, sizeof s->fp_key, pan, strlen(pan), mac) < 0)
        return PC_EIO;
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", mac[i]);
    return 0;
}

pc_sim_card_t *pc_sim_card_put(pc_sim_store_t *s, pc_sim_channel_t *ch, const char *fp,
                               const char *brand, const char *bin, const char *last4, int exp_month,
                               int exp_year, pc_sim_card_rule_t rule)
{
    pc_sim_card_t *c = pc_sim_map_get(ch->card_fps, fp);
    if (c) {
        /* A re-issued card keeps its token; the latest expiry wins. */
        c->exp_month = exp_month;
        c->exp_year = exp_year;
        return c;
    }
    c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    char hex[25];
    if (pc_random_hex(hex, sizeof hex, 12) < 0) {
        free(c);
        return NULL;
    }
    c->ch = ch;
    snprintf(c->token, sizeof c->token, "tok_%s", hex);
    snprintf(c->fingerprint, sizeof c->fingerprint, "%s", fp);
    snprintf(c->brand, sizeof c->brand, "%s", brand);
    snprintf(c->bin, sizeof c->bin, "%s", bin);
    snprintf(c->last4, sizeof c->last4, "%s", last4);
    c->exp_month = exp_month;
    c->exp_year = exp_year;
    c->rule = rule;
    if (pc_sim_map_put(ch->cards, c->token, c) < 0) {
        free(c);
        return NULL;
    }
    if (pc_sim_map_put(ch->card_fps, c->fingerprint, c) < 0) {
        pc_sim_map_del(ch->cards, c->token);
        free(c);
        return NULL;
    }
    c->older = s->newest_card;
    if (s->newest_card)
        s->newest_card->newer = c;
    else
        s->oldest_card = c;
    s->newest_card = c;
    s->ncards++;
    while (s->ncards > s->lim.max_cards && s->oldest_card != c) {
        pc_sim_card_t *old = s->oldest_card;
        pc_sim_map_del(old->ch->cards, old->token);
        pc_sim_map_del(old->ch->card_fps, old->fingerprint);
        s->oldest_card = old->newer;
        s->oldest_card->older = NULL;
        s->ncards--;
        free(old);
    }
    return c;
}

pc_sim_card_t *pc_sim_card_get(pc_sim_channel_t *ch, const char *token)
{
    return pc_sim_map_get(ch->cards, token);
}

size_t pc_sim_card_count(const pc_sim_store_t *s)
{
    return s->ncards;
}

/* ---- Statement and chargeback lines --------------------------------------- */

/* Forgets the oldest business day of any channel, to stay under the line cap. */
static void evict_oldest_day(pc_sim_store_t *s)
{
    pc_sim_channel_t *victim_ch = NULL;
    pc_sim_day_t *victim = NULL;
    size_t cpos = 0;
    pc_sim_channel_t *ch;
    while ((ch = pc_sim_map_next(s->channels, &cpos, NULL))) {
        size_t dpos = 0;
        pc_sim_day_t *d;
        while ((d = pc_sim_map_next(ch->days, &dpos, NULL))) {
            if (!victim || strcmp(d->date, victim->date) < 0) {
                victim = d;
                victim_ch = ch;
            }
        }
    }
    if (!victim)
        return;
    pc_sim_map_del(victim_ch->days, victim->date);
    s->nlines -= victim->nlines + victim->ncbs;
    day_free(victim);
}

static pc_sim_day_t *day_get(pc_sim_store_t *s, pc_sim_channel_t *ch, int64_t time_ms)
{
    char date[PC_SIM_DATE_LEN];
    pc_sim_format_date(time_ms, date);
    pc_sim_day_t *d = pc_sim_map_get(ch->days, date);
    if (d)
        return d;
    d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    memcpy(d->date, date, sizeof d->date);
    if (pc_sim_map_put(ch->days, d->date, d) < 0) {
        free(d);
        return NULL;
    }
    (void)s;
    return d;
}

static int grow_array(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 64;
    void *n = realloc(*arr, ncap * elem);
    if (!n)
        return PC_ENOMEM;
    *arr = n;
    *cap = ncap;
    return 0;
}

static pc_sim_line_t *line_new(pc_sim_store_t *s, pc_sim_channel_t *ch, int64_t time_ms)
{
    while (s->nlines >= s->lim.max_lines && s->nlines > 0)
        evict_oldest_day(s);
    pc_sim_day_t *d = day_get(s, ch, time_ms);
    if (!d || grow_array((void **)&d->lines, &d->lines_cap, d->nlines + 1, sizeof *d->lines) < 0)
        return NULL;
    pc_sim_line_t *l = &d->lines[d->nlines++];
    memset(l, 0, sizeof *l);
    l->time_ms = time_ms;
    s->nlines++;
    return l;
}

static void fake_line(pc_sim_store_t *s, pc_sim_channel_t *ch, const char *kind,
                      const pc_sim_line_t *l, bool has_values, int64_t expected, int64_t actual,
                      const char *expected_status)
{
    pc_sim_faked_t f = {0};
    f.kind = kind;
    f.op = "STATEMENT";
    snprintf(f.channel_id, sizeof f.channel_id, "%s", ch->id);
    snprintf(f.channel_ref, sizeof f.channel_ref, "%s", l->channel_ref);
    snprintf(f.paycore_ref, sizeof f.paycore_ref, "%s", l->paycore_ref);
    pc_sim_format_date(l->time_ms, f.date);
    f.has_values = has_values;
    f.expected = expected;
    f.actual = actual;
    f.expected_status = expected_status;
    f.actual_status = expected_status ? l->status : NULL;
    f.time_ms = l->time_ms;
    pc_sim_faked_add(s, &f);
}

int pc_sim_line_add(pc_sim_store_t *s, const pc_sim_txn_t *t, const char *type, const char *status,
                    int64_t amount, int64_t fee, int64_t time_ms)
{
    pc_sim_channel_t *ch = t->ch;
    pc_sim_line_t *l = line_new(s, ch, time_ms);
    if (!l)
        return PC_ENOMEM;
    snprintf(l->channel_ref, sizeof l->channel_ref, "%s", t->ref);
    snprintf(l->paycore_ref, sizeof l->paycore_ref, "%s", t->no);
    memcpy(l->currency, t->currency, sizeof l->currency);
    l->type = type;
    l->status = status;
    l->amount = amount;
    l->fee = fee;

    /* Discrepancies are decided when the line is written, never when the file
     * is read, so every download of a statement shows the same lines. */
    pc_sim_discrepancy_t *p = &ch->faults.pending;
    if (strcmp(status, "SUCCESS") != 0)
        return 0;
    if (p->missing > 0) {
        p->missing--;
        l->hidden = true;
        fake_line(s, ch, "STATEMENT_MISSING_LINE", l, true, amount, 0, NULL);
    } else if (p->amount_mismatch > 0) {
        p->amount_mismatch--;
        l->amount = amount > 1 ? amount - 1 : amount + 1;
        fake_line(s, ch, "STATEMENT_AMOUNT_MISMATCH", l, true, amount, l->amount, NULL);
    } else if (p->fee_mismatch > 0) {
        p->fee_mismatch--;
        l->fee = fee + 1;
        fake_line(s, ch, "STATEMENT_FEE_MISMATCH", l, true, fee, l->fee, NULL);
    } else if (p->status_mismatch > 0) {
        p->status_mismatch--;
        l->status = "FAILED";
        l->fee = 0;
        fake_line(s, ch, "STATEMENT_STATUS_MISMATCH", l, false, 0, 0, "SUCCESS");
    }
    return 0;
}

int pc_sim_line_add_extra(pc_sim_store_t *s, pc_sim_channel_t *ch, int n, const char *currency,
                          int64_t now_ms)
{
    for (int i = 0; i < n; i++) {
        pc_sim_line_t *l = line_new(s, ch, now_ms);
        if (!l)
            return PC_ENOMEM;
        pc_sim_store_ref(s, "pay", l->channel_ref);
        /* A payment number paycore never issued: money the channel holds that
         * paycore does not know about. */
        snprintf(l->paycore_ref, sizeof l->paycore_ref, "SIMEXTRA%s", l->channel_ref + 4);
        memcpy(l->currency, currency, 4);
        l->type = "PAY";
        l->status = "SUCCESS";
        l->amount = 100 + (int64_t)pc_sim_rng_below(&ch->rng, 99900);
        l->fee = pc_sim_fee(l->amount, ch->faults.fee_bps, ch->faults.fee_fixed);
        fake_line(s, ch, "STATEMENT_EXTRA_LINE", l, true, 0, l->amount, NULL);
    }
    return 0;
}

const pc_sim_chargeback_t *pc_sim_chargeback_add(pc_sim_store_t *s, const pc_sim_txn_t *t,
                                                 int64_t amount, const char *reason_code,
                                                 int64_t now_ms)
{
    while (s->nlines >= s->lim.max_lines && s->nlines > 0)
        evict_oldest_day(s);
    pc_sim_day_t *d = day_get(s, t->ch, now_ms);
    if (!d || grow_array((void **)&d->cbs, &d->cbs_cap, d->ncbs + 1, sizeof *d->cbs) < 0)
        return NULL;
    pc_sim_chargeback_t *c = &d->cbs[d->ncbs++];
    memset(c, 0, sizeof *c);
    pc_sim_store_ref(s, "cbk", c->ref);
    snprintf(c->channel_ref, sizeof c->channel_ref, "%s", t->ref);
    snprintf(c->paycore_ref, sizeof c->paycore_ref, "%s", t->no);
    memcpy(c->currency, t->currency, sizeof c->currency);
    snprintf(c->reason_code, sizeof c->reason_code, "%s", reason_code);
    c->amount = amount;
    c->time_ms = now_ms;
    c->respond_by_ms = now_ms + (int64_t)RESPOND_DAYS * 86400 * 1000;
    s->nlines++;
    return c;
}

void pc_sim_statement_csv(pc_sim_channel_t *ch, const char *date, pc_buf_t *out)
{
    pc_sim_stmt_header(out);
    pc_sim_day_t *d = pc_sim_map_get(ch->days, date);
    for (size_t i = 0; d && i < d->nlines; i++) {
        const pc_sim_line_t *l = &d->lines[i];
        if (l->hidden)
            continue;
        pc_sim_stmt_row_t row = {l->channel_ref, l->paycore_ref, l->type,   l->amount,
                                 l->currency,    l->fee,         l->status, l->time_ms};
        pc_sim_stmt_row(out, &row);
    }
}

void pc_sim_chargebacks_csv(pc_sim_channel_t *ch, const char *date, pc_buf_t *out)
{
    pc_sim_cb_header(out);
    pc_sim_day_t *d = pc_sim_map_get(ch->days, date);
    for (size_t i = 0; d && i < d->ncbs; i++) {
        const pc_sim_chargeback_t *c = &d->cbs[i];
        pc_sim_cb_row_t row = {c->ref,      c->channel_ref, c->paycore_ref, c->amount,
                               c->currency, c->reason_code, c->time_ms,     c->respond_by_ms};
        pc_sim_cb_row(out, &row);
    }
}

size_t pc_sim_line_count(const pc_sim_store_t *s)
{
    return s->nlines;
}

/* ---- Faked faults ---------------------------------------------------------- */

void pc_sim_faked_add(pc_sim_store_t *s, pc_sim_faked_t *f)
{
    f->seq = ++s->faked_seq;
    size_t slot;
    if (s->faked_count < s->lim.max_faked) {
        slot = (s->faked_head + s->faked_count) % s->lim.max_faked;
        s->faked_count++;
    } else {
        slot = s->faked_head;
        s->faked_head = (s->faked_head + 1) % s->lim.max_faked;
    }
    s->faked[slot] = *f;
    for (int i = 0; i < MAX_FAKED_KINDS; i++) {
        if (!s->faked_kinds[i].kind || strcmp(s->faked_kinds[i].kind, f->kind) == 0) {
            s->faked_kinds[i].kind = f->kind;
            s->faked_kinds[i].n++;
            break;
        }
    }
}

const pc_sim_faked_t *pc_sim_faked_next(const pc_sim_store_t *s, size_t *pos)
{
    if (*pos >= s->faked_count)
        return NULL;
    return &s->faked[(s->faked_head + (*pos)++) % s->lim.max_faked];
}

uint64_t pc_sim_faked_total(const pc_sim_store_t *s, const char *kind)
{
    uint64_t n = 0;
    for (int i = 0; i < MAX_FAKED_KINDS && s->faked_kinds[i].kind; i++)
        if (!kind || strcmp(kind, s->faked_kinds[i].kind) == 0)
            n += s->faked_kinds[i].n;
    return n;
}
