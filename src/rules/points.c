#include "rules/points.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "rules/convert.h"

#define MAX_REASONS 32
#define MAX_REASON_LEN 200
#define MAX_SCORE 1000

/* ---- arguments ------------------------------------------------------------ */

/* Mapping the rule's answer back to the caller's list needs each element's id.
 * LuaJIT interns every string, so while the input id strings stay alive, a
 * string with the same content IS the same object: comparing pointers is an
 * exact and cheap lookup. The ids are kept alive by leaving a copy of each on
 * the Lua stack below the rule function for the whole call (stack slots are
 * GC roots), and their addresses are kept in call->ids. Small lists are
 * searched linearly; long ones through a sorted copy. */
#define LINEAR_IDS 32

typedef pc__id_entry_t id_entry_t;

static int cmp_id_entry(const void *a, const void *b)
{
    const id_entry_t *x = a, *y = b;
    return x->ptr < y->ptr ? -1 : x->ptr > y->ptr;
}

/* The number of list elements, given as JSON or as C values. */
static size_t list_len(const pc__call_t *call)
{
    return call->list ? json_array_size(call->list) : call->typed ? call->typed->n : 0;
}

/* The method fields, in method_shape's order (below). */
enum {
    MF_METHOD_ID,
    MF_TYPE,
    MF_LABEL,
    MF_AVAILABLE,
    MF_REASON,
    MF_MAX_AMOUNT,
    MF_CHANNEL_ID,
    MF_RECOMMENDED,
    MF_COUNT
};

json_t *pc_rank_method_json(const pc_rank_method_t *m)
{
    if (m->object)
        return json_deep_copy(m->object);
    json_t *o = json_object();
    const struct {
        const char *key;
        const char *s;
    } strs[] = {{"method_id", m->method_id},
                {"type", m->type},
                {"label", m->label},
                {"reason", m->reason},
                {"channel_id", m->channel_id}};
    int bad = !o;
    for (size_t i = 0; !bad && i < sizeof strs / sizeof strs[0]; i++)
        if (strs[i].s)
            bad = json_object_set_new(o, strs[i].key, json_string(strs[i].s)) != 0;
    if (!bad && m->available >= 0)
        bad = json_object_set_new(o, "available", json_boolean(m->available)) != 0;
    if (!bad && m->recommended >= 0)
        bad = json_object_set_new(o, "recommended", json_boolean(m->recommended)) != 0;
    if (!bad && m->max_amount != PC_RANK_NO_AMOUNT)
        bad = json_object_set_new(o, "max_amount", json_integer((json_int_t)m->max_amount)) != 0;
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* A typed method read into the builder's slots as its JSON would be. */
static bool read_method(lua_State *L, pc__records_t *rec, const void *src, size_t i,
                        pc__rec_val_t *out)
{
    const pc_rank_method_t *m = (const pc_rank_method_t *)src + i;
    if (m->object)
        return pc__records_read_json(L, rec, m->object, out);
    const struct {
        size_t field;
        const char *s;
    } strs[] = {{MF_METHOD_ID, m->method_id},
                {MF_TYPE, m->type},
                {MF_LABEL, m->label},
                {MF_REASON, m->reason},
                {MF_CHANNEL_ID, m->channel_id}};
    for (size_t j = 0; j < sizeof strs / sizeof strs[0]; j++) {
        if (!strs[j].s)
            continue;
        size_t len = strlen(strs[j].s);
        if (len > UINT32_MAX)
            return false;
        pc__records_set_string(L, rec, pc__records_field(rec, out, strs[j].field), strs[j].s, len);
    }
    if (m->max_amount != PC_RANK_NO_AMOUNT) {
        if (m->max_amount > PC_RULES_MAX_SAFE_INTEGER || m->max_amount < -PC_RULES_MAX_SAFE_INTEGER)
            return false; /* refused: the JSON path says so */
        *pc__records_field(rec, out, MF_MAX_AMOUNT) =
            (pc__rec_val_t){.n = (double)m->max_amount, .kind = PC_REC_NUMBER};
    }
    if (m->available >= 0)
        pc__records_field(rec, out, MF_AVAILABLE)->kind = m->available ? PC_REC_TRUE : PC_REC_FALSE;
    if (m->recommended >= 0)
        pc__records_field(rec, out, MF_RECOMMENDED)->kind =
            m->recommended ? PC_REC_TRUE : PC_REC_FALSE;
    return true;
}

static const json_t *method_object(const void *src, size_t i)
{
    return ((const pc_rank_method_t *)src)[i].object;
}

/* Points call->list at the typed methods as JSON (made once); -1 with
 * detail filled when out of memory. */
static int need_list_json(pc__call_t *call)
{
    if (call->list || !call->typed)
        return 0;
    json_t *list = json_array();
    for (size_t i = 0; list && i < call->typed->n; i++)
        if (json_array_append_new(list, pc_rank_method_json(&call->typed->methods[i])) != 0) {
            json_decref(list);
            /* jansson refuses a text that is not UTF-8 (rules.h asks for it). */
            snprintf(call->detail, sizeof call->detail,
                     "methods[%zu]: cannot be made JSON (a text not UTF-8, or out of memory)",
                     i + 1);
            return -1;
        }
    if (!list) {
        snprintf(call->detail, sizeof call->detail, "out of memory");
        return -1;
    }
    call->typed_json = list;
    call->list = list;
    return 0;
}

void pc__typed_default(const pc__typed_list_t *typed)
{
    for (size_t i = 0; i < typed->n; i++) {
        typed->answer->order[i] = i;
        typed->answer->recommended[i] =
            typed->methods[i].object
                ? json_is_true(json_object_get(typed->methods[i].object, "recommended"))
                : typed->methods[i].recommended > 0;
    }
    typed->answer->count = typed->n;
}

static int push_ctx(lua_State *L, pc__call_t *call)
{
    if (call->ctx_records)
        return pc__records_push_one(L, call->ctx_records, call->ctx, "ctx", call->detail,
                                    sizeof call->detail);
    return pc__json_push(L, call->ctx, "ctx", call->detail, sizeof call->detail);
}

/* Returns the 0-based input position of the interned string s, or -1. */
static long id_position(const pc__call_t *call, const char *s)
{
    if (call->nids <= LINEAR_IDS) {
        for (size_t i = 0; i < call->nids; i++)
            if (call->ids[i] == s)
                return (long)i;
        return -1;
    }
    id_entry_t key = {s, 0};
    const id_entry_t *hit = bsearch(&key, call->id_index, call->nids, sizeof key, cmp_id_entry);
    return hit ? (long)hit->pos : -1;
}

/* Makes room for the ids of n elements. */
static int alloc_ids(pc__call_t *call, size_t n)
{
    call->ids = n <= LINEAR_IDS ? call->ids_small : malloc(n * sizeof *call->ids);
    if (n > LINEAR_IDS)
        call->id_index = malloc(n * sizeof *call->id_index);
    if (!call->ids || (n > LINEAR_IDS && !call->id_index)) {
        snprintf(call->detail, sizeof call->detail, "out of memory");
        return -1;
    }
    return 0;
}

/* Records the interned id s of element i (ids are recorded in order);
 * refuses a duplicate in a short list. */
static int note_id(pc__call_t *call, size_t n, size_t i, const char *s)
{
    call->ids[i] = s;
    if (n <= LINEAR_IDS && id_position(call, s) >= 0)
        return -1;
    call->nids = i + 1;
    if (n > LINEAR_IDS)
        call->id_index[i] = (id_entry_t){s, i};
    return 0;
}

/* Sorts a long list's index; refuses duplicates in it. */
static int finish_ids(pc__call_t *call, size_t n)
{
    if (n > LINEAR_IDS) {
        qsort(call->id_index, n, sizeof *call->id_index, cmp_id_entry);
        for (size_t i = 1; i < n; i++)
            if (call->id_index[i].ptr == call->id_index[i - 1].ptr)
                return -1;
    }
    return 0;
}

static int refuse_id(pc__call_t *call, const char *root, size_t i, const char *id_key)
{
    snprintf(call->detail, sizeof call->detail, "%s[%zu] must be an object with a string %s", root,
             i + 1, id_key);
    return -1;
}

static int refuse_duplicate(pc__call_t *call, const char *root, const char *id_key)
{
    snprintf(call->detail, sizeof call->detail, "%s: an element's %s appears twice", root, id_key);
    return -1;
}

/* Anchors the ids of the list's elements (id_key) on the stack and records
 * them; refuses elements without a string id and duplicate ids. */
static int anchor_ids(lua_State *L, pc__call_t *call, const char *root, const char *id_key)
{
    if (need_list_json(call) < 0)
        return -1;
    size_t n = json_array_size(call->list);
    if (!lua_checkstack(L, (int)n + 8)) {
        snprintf(call->detail, sizeof call->detail, "%s: too many elements", root);
        return -1;
    }
    if (alloc_ids(call, n) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const json_t *id = json_object_get(json_array_get(call->list, i), id_key);
        if (!json_is_string(id))
            return refuse_id(call, root, i, id_key);
        lua_pushlstring(L, json_string_value(id), json_string_length(id));
        if (note_id(call, n, i, lua_tostring(L, -1)) < 0)
            return refuse_duplicate(call, root, id_key);
    }
    return finish_ids(call, n) < 0 ? refuse_duplicate(call, root, id_key) : 0;
}

static int push_ctx_only(lua_State *L, pc__call_t *call)
{
    return push_ctx(L, call) < 0 ? -1 : 1;
}

/* With a list builder (records.h): the ids come from the converted elements
 * into a table that stays on the stack below the rule function, which keeps
 * them alive; the rule never sees that table. */
static int push_ctx_and_records(lua_State *L, pc__call_t *call, const char *root,
                                const char *id_key)
{
    size_t n = list_len(call);
    /* The plain path's limit (it anchors every id on the stack): past it the
     * plain path refuses the list, and says so. */
    if (n > INT32_MAX / 2 || !lua_checkstack(L, (int)n + 8) || alloc_ids(call, n) < 0)
        return -1;
    lua_createtable(L, (int)n, (int)n);
    int ids = lua_gettop(L);
    call->ids_table = ids;
    if (push_ctx(L, call) < 0)
        return -1;
    int rc;
    if (call->list) {
        rc = pc__records_push(L, call->records, call->list, root, ids, call->detail,
                              sizeof call->detail);
    } else {
        pc__rec_source_t typed = {n, read_method, method_object, call->typed->methods};
        rc = pc__records_push_from(L, call->records, &typed, root, ids, call->detail,
                                   sizeof call->detail);
    }
    if (rc < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const char *s = pc__records_id(call->records, i);
        if (!s) {
            lua_rawgeti(L, ids, (int)i + 1);
            s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
            lua_pop(L, 1);
        }
        if (!s)
            return refuse_id(call, root, i, id_key);
        if (note_id(call, n, i, s) < 0)
            return refuse_duplicate(call, root, id_key);
    }
    return finish_ids(call, n) < 0 ? refuse_duplicate(call, root, id_key) : 2;
}

static int push_ctx_and_list(lua_State *L, pc__call_t *call, const char *root, const char *id_key)
{
    if (call->records) {
        int top = lua_gettop(L);
        int rc = push_ctx_and_records(L, call, root, id_key);
        if (rc >= 0)
            return rc;
        /* Refused. The plain path checks every id before it converts
         * anything, and so finds what is wrong in another order: it says
         * which, so that the refusal reads the same either way. */
        lua_settop(L, top);
        pc__call_forget_ids(call);
        call->ids_table = 0;
        call->records = NULL;
        call->ctx_records = NULL;
    }
    if (anchor_ids(L, call, root, id_key) < 0)
        return -1;
    if (push_ctx(L, call) < 0)
        return -1;
    if (pc__json_push(L, call->list, root, call->detail, sizeof call->detail) < 0)
        return -1;
    return 2;
}

static int push_ctx_methods(lua_State *L, pc__call_t *call)
{
    return push_ctx_and_list(L, call, "methods", "method_id");
}

static int push_ctx_candidates(lua_State *L, pc__call_t *call)
{
    return push_ctx_and_list(L, call, "candidates", "channel_id");
}

/* ---- answer checks ---------------------------------------------------------- */

static void malformed(pc__call_t *call, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void malformed(pc__call_t *call, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(call->detail, sizeof call->detail, fmt, ap);
    va_end(ap);
}

/* Reads t[key] without metamethods (a rule could attach an __index that runs
 * code while C validates). Leaves the value on the stack. */
static void raw_field(lua_State *L, int t, const char *key)
{
    lua_pushstring(L, key);
    lua_rawget(L, t);
}

/* True when the table at idx is a proper list 1..n (no holes, no other keys). */
static int is_list(lua_State *L, int idx, size_t *len)
{
    size_t n = lua_objlen(L, idx), count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        count++;
    }
    *len = n;
    return count == n;
}

/* Validates a list answer whose elements name input elements by id_key (or
 * are the id strings themselves when strings_ok). On success *order holds the
 * 0-based input positions and *flags the recommended flags (if wanted). */
static int check_id_list(lua_State *L, pc__call_t *call, int idx, const char *id_key,
                         int strings_ok, size_t **order, unsigned char **flags, size_t *count)
{
    size_t nin = list_len(call), n;
    *order = NULL;
    if (flags)
        *flags = NULL;
    if (lua_type(L, idx) != LUA_TTABLE) {
        malformed(call, "expected a list, got %s", luaL_typename(L, idx));
        return -1;
    }
    if (!is_list(L, idx, &n)) {
        malformed(call, "expected a list (keys 1..n without holes), got a table with other keys");
        return -1;
    }
    if (n > nin) {
        malformed(call, "the answer has %zu entries but only %zu were given", n, nin);
        return -1;
    }
    unsigned char *seen = calloc(nin + 1, 1);
    size_t *ord = malloc((n + 1) * sizeof *ord);
    unsigned char *fl = flags ? calloc(n + 1, 1) : NULL;
    if (!seen || !ord || (flags && !fl)) {
        malformed(call, "out of memory");
        goto fail;
    }
    if (call->ids_table && !strings_ok &&
        pc__records_check(L, call->records, idx, n, nin, call->ids_table, ord, fl)) {
        free(seen);
        *order = ord;
        if (flags)
            *flags = fl;
        *count = n;
        return 0;
    }
    /* The keys are interned once, not once per entry. */
    lua_pushstring(L, id_key);
    int id_key_idx = lua_gettop(L);
    lua_pushliteral(L, "recommended");
    int rec_key_idx = lua_gettop(L);
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, (int)i);
        int entry = lua_gettop(L);
        if (lua_type(L, entry) == LUA_TTABLE) {
            lua_pushvalue(L, id_key_idx);
            lua_rawget(L, entry);
        } else if (strings_ok && lua_type(L, entry) == LUA_TSTRING) {
            lua_pushvalue(L, entry);
        } else {
            malformed(call, "entry %zu is %s, expected %s", i, luaL_typename(L, entry),
                      strings_ok ? "a channel id or a candidate table" : "a method table");
            goto fail;
        }
        if (lua_type(L, -1) != LUA_TSTRING) {
            malformed(call, "entry %zu has no %s", i, id_key);
            goto fail;
        }
        long pos = id_position(call, lua_tostring(L, -1));
        if (pos < 0) {
            malformed(call, "entry %zu: %s \"%.64s\" is not one of the given %s", i, id_key,
                      lua_tostring(L, -1), strings_ok ? "candidates" : "methods");
            goto fail;
        }
        if (seen[pos]) {
            malformed(call, "entry %zu: %s \"%.64s\" appears twice", i, id_key,
                      lua_tostring(L, -1));
            goto fail;
        }
        seen[pos] = 1;
        ord[i - 1] = (size_t)pos;
        if (fl) {
            lua_pushvalue(L, rec_key_idx);
            lua_rawget(L, entry);
            if (lua_isboolean(L, -1)) {
                fl[i - 1] = (unsigned char)lua_toboolean(L, -1);
            } else if (!lua_isnil(L, -1)) {
                malformed(call, "entry %zu: recommended must be true or false, got %s", i,
                          luaL_typename(L, -1));
                goto fail;
            }
            lua_pop(L, 1);
        }
        lua_settop(L, entry - 1);
    }
    free(seen);
    *order = ord;
    if (flags)
        *flags = fl;
    *count = n;
    return 0;

fail:
    free(seen);
    free(ord);
    free(fl);
    return -1;
}

/* Input method pos's boolean field: 1 true, 0 false, -1 absent or not a
 * boolean; from what the list builder read when it took the method. */
static int method_flag(const pc__call_t *call, size_t pos, size_t field, const char *key)
{
    int v = call->records ? pc__records_bool(call->records, pos, field) : -2;
    if (v != -2)
        return v;
    const json_t *el =
        call->list ? json_array_get(call->list, pos) : call->typed->methods[pos].object;
    const json_t *b = json_object_get(el, key);
    return json_is_boolean(b) ? json_is_true(b) : -1;
}

static int check_cashier_rank(lua_State *L, pc__call_t *call, int idx)
{
    size_t *order, n;
    unsigned char *flags;
    if (check_id_list(L, call, idx, "method_id", 0, &order, &flags, &n) < 0)
        return -1;
    /* The cashier would steer the buyer to a method that cannot pay now. */
    for (size_t i = 0; i < n; i++) {
        if (flags[i] && method_flag(call, order[i], MF_AVAILABLE, "available") == 0) {
            /* The id as the rule saw it (call->ids: the same text as the
             * input's method_id). */
            malformed(call, "entry %zu: method \"%.64s\" is recommended but not available", i + 1,
                      call->ids[order[i]]);
            free(order);
            free(flags);
            return -1;
        }
    }
    if (call->typed) {
        pc_rank_answer_t *ans = call->typed->answer;
        for (size_t i = 0; i < n; i++) {
            ans->order[i] = order[i];
            ans->recommended[i] = flags[i] != 0;
        }
        ans->count = n;
        free(order);
        free(flags);
        return 0;
    }
    json_t *out = json_array();
    for (size_t i = 0; out && i < n; i++) {
        json_t *in = json_array_get(call->list, order[i]);
        int rec = method_flag(call, order[i], MF_RECOMMENDED, "recommended");
        /* Copying twelve objects per call costs more than the rule itself:
         * only objects whose flag changes are copied, the rest are shared. */
        if (rec >= 0 && rec == (flags[i] != 0)) {
            json_array_append(out, in);
            continue;
        }
        json_t *m = json_copy(in);
        if (!m) {
            json_decref(out);
            out = NULL;
            break;
        }
        json_object_set_new(m, "recommended", json_boolean(flags[i]));
        json_array_append_new(out, m);
    }
    free(order);
    free(flags);
    if (!out) {
        malformed(call, "out of memory");
        return -1;
    }
    call->answer = out;
    return 0;
}

static int check_route(lua_State *L, pc__call_t *call, int idx)
{
    size_t *order, n;
    if (check_id_list(L, call, idx, "channel_id", 1, &order, NULL, &n) < 0)
        return -1;
    json_t *out = json_array();
    for (size_t i = 0; out && i < n; i++) {
        const json_t *c = json_array_get(call->list, order[i]);
        json_array_append(out, json_object_get(c, "channel_id"));
    }
    free(order);
    if (!out) {
        malformed(call, "out of memory");
        return -1;
    }
    call->answer = out;
    return 0;
}

static const char *const risk_decisions[] = {"ACCEPT", "REVIEW", "CHALLENGE", "REJECT", NULL};
static const char *const refund_methods[] = {"API", "PAYOUT", "FILE", "OFFLINE", NULL};

static int in_set(const char *s, const char *const *set)
{
    for (; *set; set++)
        if (strcmp(s, *set) == 0)
            return 1;
    return 0;
}

/* The string at idx, when it is one without a NUL byte inside (a C string
 * would end there: "ACCEPT\0..." read as ACCEPT; PostgreSQL refuses it in
 * a reason, and the payment's write failed instead of the rule falling back
 * to its default); else NULL. */
static const char *plain_string(lua_State *L, int idx, size_t *len_out)
{
    size_t len;
    const char *s = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &len) : NULL;
    if (!s || memchr(s, 0, len))
        return NULL;
    if (len_out)
        *len_out = len;
    return s;
}

static int check_risk(lua_State *L, pc__call_t *call, int idx)
{
    if (lua_type(L, idx) != LUA_TTABLE) {
        malformed(call, "expected {decision = ..., score = ..., reasons = {...}}, got %s",
                  luaL_typename(L, idx));
        return -1;
    }
    raw_field(L, idx, "decision");
    const char *decision = plain_string(L, -1, NULL);
    if (!decision || !in_set(decision, risk_decisions)) {
        malformed(
            call,
            "decision must be \"ACCEPT\", \"REVIEW\", \"CHALLENGE\" or \"REJECT\", got %s%.32s%s",
            decision ? "\"" : "", decision ? decision : luaL_typename(L, -1), decision ? "\"" : "");
        return -1;
    }
    raw_field(L, idx, "score");
    int64_t score;
    if (pc__lua_to_int(L, -1, &score) < 0 || score < 0 || score > MAX_SCORE) {
        malformed(call, "score must be an integer from 0 to %d", MAX_SCORE);
        return -1;
    }
    json_t *reasons = json_array();
    raw_field(L, idx, "reasons");
    int r = lua_gettop(L);
    if (!lua_isnil(L, r)) {
        size_t n;
        if (lua_type(L, r) != LUA_TTABLE || !is_list(L, r, &n) || n > MAX_REASONS) {
            malformed(call, "reasons must be a list of at most %d strings", MAX_REASONS);
            goto fail;
        }
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, r, (int)i);
            size_t len = 0;
            const char *s = plain_string(L, -1, &len);
            json_t *js = s && len <= MAX_REASON_LEN ? json_stringn(s, len) : NULL;
            if (!js) {
                malformed(call, "reasons[%zu] must be a text of at most %d bytes", i,
                          MAX_REASON_LEN);
                goto fail;
            }
            json_array_append_new(reasons, js);
            lua_pop(L, 1);
        }
    }
    /* Built directly: json_pack parses its format on every call. */
    json_t *answer = json_object();
    if (!answer || json_object_set_new(answer, "decision", json_string(decision)) ||
        json_object_set_new(answer, "score", json_integer((json_int_t)score))) {
        json_decref(answer);
        malformed(call, "out of memory");
        goto fail;
    }
    if (json_object_set_new(answer, "reasons", reasons)) { /* steals reasons */
        json_decref(answer);
        malformed(call, "out of memory");
        return -1;
    }
    call->answer = answer;
    return 0;

fail:
    json_decref(reasons);
    return -1;
}

/* A refund method is only acceptable if it can actually run for this payment:
 * API and FILE must be capabilities of the paying channel, PAYOUT needs payee
 * details for the buyer and a channel that pays out to them (the paying
 * channel lists PAYOUT, or the payee is the card it holds); OFFLINE always
 * works. */
static int refund_method_possible(const json_t *ctx, const char *m)
{
    if (strcmp(m, "OFFLINE") == 0)
        return 1;
    const json_t *channel = json_object_get(ctx, "channel");
    const json_t *caps = json_object_get(channel, "refund_methods");
    int listed = 0;
    size_t i;
    const json_t *v;
    json_array_foreach(caps, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), m) == 0)
            listed = 1;
    }
    if (strcmp(m, "PAYOUT") == 0) {
        const char *type = json_string_value(json_object_get(ctx, "payee_type"));
        return json_is_true(json_object_get(ctx, "payee_available")) &&
               (listed || (type && strcmp(type, "CARD") == 0));
    }
    return listed;
}

static int check_refund_method(lua_State *L, pc__call_t *call, int idx)
{
    const char *m = plain_string(L, idx, NULL);
    if (!m || !in_set(m, refund_methods)) {
        malformed(call, "expected \"API\", \"PAYOUT\", \"FILE\" or \"OFFLINE\", got %s%.32s%s",
                  m ? "\"" : "", m ? m : luaL_typename(L, idx), m ? "\"" : "");
        return -1;
    }
    if (!refund_method_possible(call->ctx, m)) {
        malformed(
            call, "\"%s\" is not possible for this payment (not in ctx.channel.refund_methods%s)",
            m, strcmp(m, "PAYOUT") == 0 ? ", or no payee, or a payee not a card it holds" : "");
        return -1;
    }
    call->answer = json_string(m);
    return 0;
}

/* ---- safe defaults ------------------------------------------------------------ */

static json_t *default_cashier_rank(const json_t *ctx, const json_t *list, pc_rule_outcome_t why)
{
    (void)ctx;
    (void)why;
    return json_is_array(list) ? json_copy((json_t *)list) : json_array();
}

static json_t *default_risk(const json_t *ctx, const json_t *list, pc_rule_outcome_t why)
{
    (void)ctx;
    (void)list;
    char reason[40];
    snprintf(reason, sizeof reason, "RULE_%s", pc_rule_outcome_name(why));
    for (char *p = reason; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    /* A review without a score would be stored as score 0, the least risky
     * there is: a failed rule knows nothing, so it scores the most. */
    return json_pack("{s:s, s:i, s:[s]}", "decision", "REVIEW", "score", MAX_SCORE, "reasons",
                     reason);
}

typedef struct {
    size_t pos;
    int healthy;
    json_int_t success_rate_bp;
} route_key_t;

static int cmp_route(const void *a, const void *b)
{
    const route_key_t *x = a, *y = b;
    if (x->healthy != y->healthy)
        return y->healthy - x->healthy;
    if (x->success_rate_bp != y->success_rate_bp)
        return x->success_rate_bp > y->success_rate_bp ? -1 : 1;
    return x->pos < y->pos ? -1 : (x->pos > y->pos);
}

static json_t *default_route(const json_t *ctx, const json_t *list, pc_rule_outcome_t why)
{
    (void)ctx;
    (void)why;
    json_t *out = json_array();
    size_t n = json_array_size(list);
    route_key_t *keys = n ? calloc(n, sizeof *keys) : NULL;
    if (!out || (n && !keys)) {
        free(keys);
        return out;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *c = json_array_get(list, i);
        if (!json_is_string(json_object_get(c, "channel_id")))
            continue;
        keys[k].pos = i;
        /* Unknown health counts as healthy: only an explicit false demotes. */
        keys[k].healthy = !json_is_false(json_object_get(c, "healthy"));
        keys[k].success_rate_bp = json_integer_value(json_object_get(c, "success_rate_bp"));
        k++;
    }
    if (k > 1)
        qsort(keys, k, sizeof *keys, cmp_route);
    for (size_t i = 0; i < k; i++)
        json_array_append(out, json_object_get(json_array_get(list, keys[i].pos), "channel_id"));
    free(keys);
    return out;
}

static json_t *default_refund_method(const json_t *ctx, const json_t *list, pc_rule_outcome_t why)
{
    (void)ctx;
    (void)list;
    (void)why;
    return json_string("OFFLINE");
}

/* ---- examples ------------------------------------------------------------------ */

static int why_fail(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int why_fail(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
    return 0;
}

static int is_string_list(const json_t *v)
{
    size_t i;
    const json_t *x;
    if (!json_is_array(v))
        return 0;
    json_array_foreach(v, i, x)
    {
        if (!json_is_string(x))
            return 0;
    }
    return 1;
}

static json_t *summarize_cashier_rank(const json_t *answer)
{
    json_t *order = json_array(), *rec = json_array();
    size_t i;
    const json_t *m;
    json_array_foreach(answer, i, m)
    {
        json_array_append(order, json_object_get(m, "method_id"));
        if (json_is_true(json_object_get(m, "recommended")))
            json_array_append(rec, json_object_get(m, "method_id"));
    }
    return json_pack("{s:o, s:o}", "order", order, "recommended", rec);
}

static json_t *summarize_as_is(const json_t *answer)
{
    return json_incref((json_t *)answer);
}

/* cashier_rank expects either ["id", ...] (the order) or
 * {"order": ["id", ...], "recommended": ["id", ...]}. */
static int matches_cashier_rank(const json_t *answer, const json_t *expect, char *why,
                                size_t whylen)
{
    const json_t *order = expect, *rec = NULL;
    if (json_is_object(expect)) {
        const char *k;
        const json_t *v;
        json_object_foreach((json_t *)expect, k, v)
        {
            if (strcmp(k, "order") != 0 && strcmp(k, "recommended") != 0) {
                snprintf(why, whylen, "unknown key \"%s\" in expect (use order, recommended)", k);
                return -1;
            }
        }
        order = json_object_get(expect, "order");
        rec = json_object_get(expect, "recommended");
    }
    if ((order && !is_string_list(order)) || (rec && !is_string_list(rec))) {
        snprintf(why, whylen, "expect must be a list of method ids or {order, recommended}");
        return -1;
    }
    json_t *got = summarize_cashier_rank(answer);
    int ok = 1;
    if (order && !json_equal((json_t *)order, json_object_get(got, "order")))
        ok = why_fail(why, whylen, "the order differs");
    if (ok && rec) {
        const json_t *gr = json_object_get(got, "recommended");
        size_t i;
        const json_t *x;
        if (json_array_size(gr) != json_array_size(rec))
            ok = why_fail(why, whylen, "the recommended methods differ");
        json_array_foreach(rec, i, x)
        {
            int found = 0;
            size_t j;
            const json_t *y;
            json_array_foreach(gr, j, y)
            {
                if (json_equal((json_t *)x, (json_t *)y))
                    found = 1;
            }
            if (ok && !found)
                ok = why_fail(why, whylen, "the recommended methods differ");
        }
    }
    json_decref(got);
    return ok;
}

/* risk expects an object with any of decision, score, reasons (exact list)
 * and reasons_include (each listed reason present). */
static int matches_risk(const json_t *answer, const json_t *expect, char *why, size_t whylen)
{
    if (!json_is_object(expect)) {
        snprintf(why, whylen, "expect must be an object like {\"decision\": \"ACCEPT\"}");
        return -1;
    }
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)expect, k, v)
    {
        if (strcmp(k, "decision") && strcmp(k, "score") && strcmp(k, "reasons") &&
            strcmp(k, "reasons_include")) {
            snprintf(why, whylen,
                     "unknown key \"%s\" in expect (use decision, score, reasons, reasons_include)",
                     k);
            return -1;
        }
    }
    const json_t *e;
    if ((e = json_object_get(expect, "decision")) &&
        !json_equal((json_t *)e, json_object_get(answer, "decision")))
        return why_fail(why, whylen, "the decision differs");
    if ((e = json_object_get(expect, "score")) &&
        !json_equal((json_t *)e, json_object_get(answer, "score")))
        return why_fail(why, whylen, "the score differs");
    if ((e = json_object_get(expect, "reasons")) &&
        !json_equal((json_t *)e, json_object_get(answer, "reasons")))
        return why_fail(why, whylen, "the reasons differ");
    if ((e = json_object_get(expect, "reasons_include"))) {
        if (!is_string_list(e)) {
            snprintf(why, whylen, "reasons_include must be a list of strings");
            return -1;
        }
        size_t i;
        const json_t *x;
        json_array_foreach(e, i, x)
        {
            int found = 0;
            size_t j;
            const json_t *y;
            json_array_foreach(json_object_get(answer, "reasons"), j, y)
            {
                if (json_equal((json_t *)x, (json_t *)y))
                    found = 1;
            }
            if (!found)
                return why_fail(why, whylen, "reason \"%s\" is missing", json_string_value(x));
        }
    }
    return 1;
}

static int matches_route(const json_t *answer, const json_t *expect, char *why, size_t whylen)
{
    if (!is_string_list(expect)) {
        snprintf(why, whylen, "expect must be a list of channel ids");
        return -1;
    }
    if (!json_equal((json_t *)answer, (json_t *)expect))
        return why_fail(why, whylen, "the channel order differs");
    return 1;
}

static int matches_refund_method(const json_t *answer, const json_t *expect, char *why,
                                 size_t whylen)
{
    if (!json_is_string(expect) || !in_set(json_string_value(expect), refund_methods)) {
        snprintf(why, whylen, "expect must be one of \"API\", \"PAYOUT\", \"FILE\", \"OFFLINE\"");
        return -1;
    }
    if (!json_equal((json_t *)answer, (json_t *)expect))
        return why_fail(why, whylen, "the refund method differs");
    return 1;
}

/* ---- table ------------------------------------------------------------------------ */

/* A cashier method as consult.c makes it. Methods with a card or a coupon
 * (objects) go through convert.h. */
static const pc__field_t method_fields[MF_COUNT] = {
    [MF_METHOD_ID] = {"method_id", PC_FIELD_STRING, NULL},
    [MF_TYPE] = {"type", PC_FIELD_STRING, NULL},
    [MF_LABEL] = {"label", PC_FIELD_STRING, NULL},
    [MF_AVAILABLE] = {"available", PC_FIELD_BOOL, NULL},
    [MF_REASON] = {"reason", PC_FIELD_STRING, NULL},
    [MF_MAX_AMOUNT] = {"max_amount", PC_FIELD_NUMBER, NULL},
    [MF_CHANNEL_ID] = {"channel_id", PC_FIELD_STRING, NULL},
    [MF_RECOMMENDED] = {"recommended", PC_FIELD_BOOL, NULL},
};
static const pc__record_shape_t method_shape = {method_fields, MF_COUNT, MF_METHOD_ID,
                                                MF_RECOMMENDED};

/* cashier_rank's ctx as consult.c makes it (the contract at the top of
 * rules/cashier_rank.lua); type_counts is a map, converted by convert.h. */
static const pc__field_t merchant_fields[] = {{"id", PC_FIELD_STRING, NULL}};
static const pc__record_shape_t merchant_shape = {merchant_fields, 1, PC_NO_FIELD, PC_NO_FIELD};
static const pc__field_t buyer_fields[] = {
    {"id", PC_FIELD_STRING, NULL},
    {"balance", PC_FIELD_NUMBER, NULL},
    {"last_method_id", PC_FIELD_STRING, NULL},
    {"type_counts", PC_FIELD_ANY, NULL},
};
static const pc__record_shape_t buyer_shape = {buyer_fields, 4, PC_NO_FIELD, PC_NO_FIELD};
static const pc__field_t policy_fields[] = {{"hide_unavailable", PC_FIELD_BOOL, NULL}};
static const pc__record_shape_t policy_shape = {policy_fields, 1, PC_NO_FIELD, PC_NO_FIELD};
static const pc__field_t cashier_ctx_fields[] = {
    {"amount", PC_FIELD_NUMBER, NULL},        {"currency", PC_FIELD_STRING, NULL},
    {"product", PC_FIELD_STRING, NULL},       {"platform", PC_FIELD_STRING, NULL},
    {"now", PC_FIELD_NUMBER, NULL},           {"merchant", PC_FIELD_OBJECT, &merchant_shape},
    {"buyer", PC_FIELD_OBJECT, &buyer_shape}, {"policy", PC_FIELD_OBJECT, &policy_shape},
};
static const pc__record_shape_t cashier_ctx_shape = {cashier_ctx_fields, 8, PC_NO_FIELD,
                                                     PC_NO_FIELD};

static const pc__point_t points[PC_RULE_COUNT] = {
    [PC_RULE_CASHIER_RANK] = {.id = PC_RULE_CASHIER_RANK,
                              .name = "cashier_rank",
                              .list_key = "methods",
                              .list_shape = &method_shape,
                              .ctx_shape = &cashier_ctx_shape,
                              .push_args = push_ctx_methods,
                              .check = check_cashier_rank,
                              .safe_default = default_cashier_rank,
                              .matches = matches_cashier_rank,
                              .summarize = summarize_cashier_rank},
    [PC_RULE_RISK] = {.id = PC_RULE_RISK,
                      .name = "risk",
                      .push_args = push_ctx_only,
                      .check = check_risk,
                      .safe_default = default_risk,
                      .matches = matches_risk,
                      .summarize = summarize_as_is},
    [PC_RULE_ROUTE] = {.id = PC_RULE_ROUTE,
                       .name = "route",
                       .list_key = "candidates",
                       .push_args = push_ctx_candidates,
                       .check = check_route,
                       .safe_default = default_route,
                       .matches = matches_route,
                       .summarize = summarize_as_is},
    [PC_RULE_REFUND_METHOD] = {.id = PC_RULE_REFUND_METHOD,
                               .name = "refund_method",
                               .push_args = push_ctx_only,
                               .check = check_refund_method,
                               .safe_default = default_refund_method,
                               .matches = matches_refund_method,
                               .summarize = summarize_as_is},
};

const pc__point_t *pc__point(pc_rule_id_t id)
{
    return &points[id];
}

int pc__point_check_input(const pc__point_t *pt, const json_t *ctx, const json_t *list, bool typed,
                          char *why, size_t whylen)
{
    /* Only the shapes here; each element is checked while it is converted. */
    if (!json_is_object(ctx)) {
        snprintf(why, whylen, "ctx must be a JSON object");
        return -1;
    }
    if (pt->list_key && !typed && !json_is_array(list)) {
        snprintf(why, whylen, "%s must be a JSON array", pt->list_key);
        return -1;
    }
    return 0;
}
