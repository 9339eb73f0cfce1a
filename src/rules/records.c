#include "rules/records.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "rules/convert.h"

/* The builder's source. Each table is made from a constant template that
 * holds every field of its shape (false as a placeholder, so that the keys
 * are in the template), then one store per field; an object field's table is
 * made the same way inside; an any field is left for C. Elements marked
 * PC_REC_OTHER are left out for C to convert. */
static void append(luaL_Buffer *b, const char *s)
{
    luaL_addstring(b, s);
}

static void appendf(luaL_Buffer *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void appendf(luaL_Buffer *b, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    luaL_addstring(b, line);
}

static const pc__shape_info_t *info_of(const pc__records_t *rec, const pc__record_shape_t *shape)
{
    for (size_t i = 0; i < rec->ninfo; i++)
        if (rec->info[i].shape == shape)
            return &rec->info[i];
    return NULL;
}

/* Emits the code that makes table t<depth> of shape in from the slots at
 * b + base. */
static void gen_table(luaL_Buffer *b, const pc__records_t *rec, const pc__shape_info_t *in,
                      size_t base, int depth)
{
    const pc__record_shape_t *shape = in->shape;
    appendf(b, "%st%d = {", depth ? "local " : "", depth);
    for (size_t j = 0; j < shape->nfields; j++)
        appendf(b, "%s%s = false", j ? ", " : "", shape->fields[j].name);
    append(b, "}\n");
    for (size_t j = 0; j < shape->nfields; j++) {
        const char *f = shape->fields[j].name;
        size_t slot = base + in->off[j];
        /* v lives for one field only: a value the JIT keeps out of memory
         * must be made for real where a trace exits with it alive. */
        if (shape->fields[j].kind != PC_FIELD_ANY)
            appendf(b, "do local v = io.vals[b + %zu]\n", slot);
        switch (shape->fields[j].kind) {
        case PC_FIELD_STRING:
            appendf(b,
                    "if v.kind == %d then\n"
                    "  if v.slot > 0 then t%d.%s = strs[v.slot] else t%d.%s = str(v.s, v.len) end\n"
                    "else t%d.%s = nil end\n",
                    PC_REC_STRING, depth, f, depth, f, depth, f);
            break;
        case PC_FIELD_NUMBER:
            appendf(b, "if v.kind == %d then t%d.%s = v.n else t%d.%s = nil end\n", PC_REC_NUMBER,
                    depth, f, depth, f);
            break;
        case PC_FIELD_BOOL:
            appendf(b,
                    "if v.kind == %d then t%d.%s = true elseif v.kind == %d then t%d.%s = false"
                    " else t%d.%s = nil end\n",
                    PC_REC_TRUE, depth, f, PC_REC_FALSE, depth, f, depth, f);
            break;
        case PC_FIELD_OBJECT:
            appendf(b, "if v.kind == %d then\n", PC_REC_OBJECT);
            gen_table(b, rec, info_of(rec, shape->fields[j].sub), slot + 1, depth + 1);
            appendf(b, "t%d.%s = t%d\nelse t%d.%s = nil end\n", depth, f, depth + 1, depth, f);
            break;
        case PC_FIELD_ANY:
            appendf(b, "t%d.%s = nil\n", depth, f);
            break;
        }
        if (shape->fields[j].kind != PC_FIELD_ANY)
            append(b, "end\n");
    }
}

static void push_builder_source(lua_State *L, const pc__records_t *rec)
{
    const pc__record_shape_t *shape = rec->shape;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    append(&b, "local ffi, strs = ...\n"
               "local str = ffi.string\n"
               "local cast, ccp = ffi.cast, ffi.typeof('const char *')\n"
               "local rawget, type = rawget, type\n"
               "local io = ffi.new('pc_rec_io')\n");
    if (shape->id_field == PC_NO_FIELD) {
        /* One object (a ctx): straight-line code, which the JIT compiles
         * from the function's entry (a loop run once per call never gets
         * hot, and a trace from the entry cannot take an inner loop). */
        append(&b, "local function build_one()\n"
                   "  local b = 0\n"
                   "  local t0\n");
        gen_table(&b, rec, &rec->info[0], 0, 0);
        append(&b, "  return t0\n"
                   "end\n"
                   "return io, build_one, build_one\n");
        luaL_pushresult(&b);
        return;
    }
    append(&b, "local function build(list, count, ids)\n"
               "  local t0\n"
               "  for i = 0, count - 1 do\n");
    appendf(&b, "    local b = i * %zu\n    if io.vals[b].kind ~= %d then\n", rec->info[0].slots,
            PC_REC_OTHER);
    gen_table(&b, rec, &rec->info[0], 0, 0);
    if (shape->id_field != PC_NO_FIELD)
        /* ids[i] = id for the caller, ids[id] = i for the checker. */
        appendf(&b,
                "local id = t0.%s\n"
                "if id then ids[i + 1] = id; ids[id] = i + 1; io.ids[i] = cast(ccp, id) end\n",
                shape->fields[shape->id_field].name);
    append(&b, "      if list then list[i + 1] = t0 end\n"
               "    end\n"
               "  end\n"
               "  return t0\n"
               "end\n");
    /* The checker takes an answer of n entries (a list, checked by C) and
     * returns true with the input position and the flag of each, or false
     * for C to look at it entry by entry (and word what is wrong). Only raw
     * reads: the answer is the rule's and may carry metamethods. */
    appendf(&b,
            "local function check(ans, n, ids)\n"
            "  for i = 1, n do\n"
            "    local e = rawget(ans, i)\n"
            "    if type(e) ~= 'table' then return false end\n"
            "    local id = rawget(e, '%s')\n"
            "    if type(id) ~= 'string' then return false end\n"
            "    local p = rawget(ids, id)\n"
            "    if type(p) ~= 'number' or io.seen[p - 1] ~= 0 then return false end\n"
            "    io.seen[p - 1] = 1\n"
            "    io.order[i - 1] = p - 1\n",
            shape->fields[shape->id_field].name);
    if (shape->flag_field != PC_NO_FIELD)
        appendf(&b,
                "    local r = rawget(e, '%s')\n"
                "    if r == true then io.flags[i - 1] = 1\n"
                "    elseif r == nil or r == false then io.flags[i - 1] = 0\n"
                "    else return false end\n",
                shape->fields[shape->flag_field].name);
    append(&b, "  end\n"
               "  return true\n"
               "end\n"
               "return io, build, check\n");
    luaL_pushresult(&b);
}

static void check_names(lua_State *L, const pc__record_shape_t *shape)
{
    if (shape->nfields == 0 || shape->nfields > PC_RECORD_MAX_FIELDS)
        luaL_error(L, "a record shape has 1 to %d fields", PC_RECORD_MAX_FIELDS);
    for (size_t j = 0; j < shape->nfields; j++) {
        const char *f = shape->fields[j].name;
        size_t len = strlen(f);
        if (len == 0 || len > 16 || strspn(f, "abcdefghijklmnopqrstuvwxyz_0123456789") != len ||
            (f[0] >= '0' && f[0] <= '9'))
            luaL_error(L, "record field name \"%s\" is not a plain Lua name", f);
        if ((shape->fields[j].kind == PC_FIELD_OBJECT) != (shape->fields[j].sub != NULL))
            luaL_error(L, "record field \"%s\": an object field, and only one, has a shape", f);
    }
}

static void check_shape(lua_State *L, const pc__record_shape_t *shape)
{
    if (shape->id_field != PC_NO_FIELD && (shape->id_field >= shape->nfields ||
                                           shape->fields[shape->id_field].kind != PC_FIELD_STRING))
        luaL_error(L, "a record shape's id field must be one of its string fields");
    if (shape->flag_field != PC_NO_FIELD &&
        (shape->id_field == PC_NO_FIELD || shape->flag_field >= shape->nfields ||
         shape->fields[shape->flag_field].kind != PC_FIELD_BOOL))
        luaL_error(L, "a record shape's flag field must be one of its boolean fields, with an id");
}

/* A string of at most 32 bytes as four words: its first and last eight
 * bytes, and for more than 16 bytes the eight after the first and before the
 * last. The words overlap for most lengths, but together with the length
 * they determine every byte. Shorter than 8: the bytes, zero-padded. */
static inline void as_words(const char *s, size_t len, uint64_t w[4])
{
    w[0] = w[1] = w[2] = w[3] = 0;
    if (len >= 8) {
        memcpy(&w[0], s, 8);
        memcpy(&w[1], s + len - 8, 8);
        if (len > 16) {
            memcpy(&w[2], s + 8, 8);
            memcpy(&w[3], s + len - 16, 8);
        }
    } else {
        for (size_t i = 0; i < len; i++)
            w[0] |= (uint64_t)(unsigned char)s[i] << (8 * i);
    }
}

/* The cache slot (1-based) holding s, filled now if it held something else;
 * 0 for a string too long to cache. */
static int32_t cached_slot(lua_State *L, pc__records_t *rec, const char *s, size_t len)
{
    if (len == 0 || len > PC_REC_CACHE_MAXLEN)
        return 0;
    uint64_t w[4];
    as_words(s, len, w);
    uint64_t h =
        (w[0] ^ (w[1] * 0x9E3779B97F4A7C15ull) ^ (w[2] * 0xC2B2AE3D27D4EB4Full) ^ w[3] ^ len) *
        0xFF51AFD7ED558CCDull;
    size_t i = (size_t)(h >> 40) % PC_REC_CACHE_SLOTS;
    uint32_t tag = (uint32_t)(h & 0xFFFFFF00u) | (uint32_t)len;
    pc__rec_cached_t *c = &rec->cache[i];
    if (rec->cache_tag[i] == tag && c->w[0] == w[0] && c->w[1] == w[1] && c->w[2] == w[2] &&
        c->w[3] == w[3]) {
        c->used = rec->pushes;
        return (int32_t)i + 1;
    }
    /* A slot another string of this same list already took keeps it. */
    if (rec->cache_tag[i] && c->used == rec->pushes)
        return 0;
    if (!rec->strs_idx) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, rec->strs_ref);
        rec->strs_idx = lua_gettop(L);
    }
    /* Forget the slot first: if interning fails (out of memory) it stays
     * empty rather than naming a string it does not hold. */
    rec->cache_tag[i] = 0;
    lua_pushlstring(L, s, len);
    lua_rawseti(L, rec->strs_idx, (int)i + 1);
    memcpy(c->w, w, sizeof w);
    rec->cache_tag[i] = tag;
    c->used = rec->pushes;
    return (int32_t)i + 1;
}

/* Drops what opening a library put where a Lua state keeps its modules. */
static void forget_module(lua_State *L, const char *name)
{
    lua_pushnil(L);
    lua_setfield(L, LUA_GLOBALSINDEX, name);
    lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        lua_setfield(L, -2, name);
    }
    lua_pop(L, 1);
}

#define FFI_KEY "paycore.records.ffi"

/* Pushes the state's ffi module, opening the JIT and the FFI the first time
 * (luaopen_jit starts the JIT: a state made by luaL_newstate has it off until
 * then; neither module stays where code could find it). */
static void push_ffi(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, FFI_KEY);
    if (!lua_isnil(L, -1))
        return;
    lua_pop(L, 1);
    lua_pushcfunction(L, luaopen_jit);
    lua_pushstring(L, LUA_JITLIBNAME);
    lua_call(L, 1, 0);
    forget_module(L, LUA_JITLIBNAME);
    forget_module(L, "jit.opt");
    lua_pushcfunction(L, luaopen_ffi);
    lua_call(L, 0, 1);
    forget_module(L, "ffi");
    static const char cdef[] =
        "local ffi = ...\n"
        "ffi.cdef[[typedef struct { const char *s; double n; uint32_t len; uint32_t kind;"
        " int32_t slot; int32_t pad; } pc_rec_val;\n"
        "typedef struct { const pc_rec_val *vals; const char **ids; int32_t *order;"
        " uint8_t *flags; uint8_t *seen; } pc_rec_io;]]\n";
    if (luaL_loadbuffer(L, cdef, sizeof cdef - 1, "=paycore records types") != 0)
        lua_error(L);
    lua_pushvalue(L, -2);
    lua_call(L, 1, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, FFI_KEY);
}

/* Adds shape (and, first, the shapes of its objects) to rec->info; returns
 * its entry. */
static const pc__shape_info_t *add_info(lua_State *L, pc__records_t *rec,
                                        const pc__record_shape_t *shape, int depth)
{
    const pc__shape_info_t *known = info_of(rec, shape);
    if (known)
        return known;
    if (depth > 3)
        luaL_error(L, "record shapes nest at most 3 deep");
    check_names(L, shape);
    pc__shape_info_t in = {.shape = shape};
    size_t slot = 0;
    for (size_t j = 0; j < shape->nfields; j++) {
        uint64_t w[4];
        in.name_len[j] = strlen(shape->fields[j].name);
        as_words(shape->fields[j].name, in.name_len[j], w);
        in.name_w[j][0] = w[0];
        in.name_w[j][1] = w[1];
        in.off[j] = slot++;
        if (shape->fields[j].kind == PC_FIELD_OBJECT) {
            const pc__shape_info_t *sub = add_info(L, rec, shape->fields[j].sub, depth + 1);
            slot += sub->slots;
            in.has_any |= sub->has_any;
        }
        in.has_any |= shape->fields[j].kind == PC_FIELD_ANY;
    }
    in.slots = slot;
    if (rec->ninfo == PC_RECORD_MAX_SHAPES)
        luaL_error(L, "a record shape may hold at most %d shapes", PC_RECORD_MAX_SHAPES);
    rec->info[rec->ninfo] = in;
    return &rec->info[rec->ninfo++];
}

pc__records_t *pc__records_open(lua_State *L, const pc__record_shape_t *shape)
{
    int top = lua_gettop(L);
    check_shape(L, shape);
    pc__records_t *rec = lua_newuserdata(L, sizeof *rec);
    memset(rec, 0, sizeof *rec);
    rec->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    rec->shape = shape;
    add_info(L, rec, shape, 0);
    /* The top shape first: the builder and extraction start there. */
    for (size_t i = rec->ninfo - 1; i > 0; i--) {
        pc__shape_info_t t = rec->info[i];
        rec->info[i] = rec->info[i - 1];
        rec->info[i - 1] = t;
    }
    push_ffi(L);
    int ffi = lua_gettop(L);
    push_builder_source(L, rec);
    size_t len;
    const char *src = lua_tolstring(L, -1, &len);
    if (luaL_loadbuffer(L, src, len, "=paycore records builder") != 0)
        lua_error(L);
    lua_pushvalue(L, ffi);
    lua_createtable(L, PC_REC_CACHE_SLOTS, 0);
    lua_pushvalue(L, -1);
    rec->strs_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_call(L, 2, 3);
    if (!lua_isfunction(L, -1) || !lua_isfunction(L, -2) || lua_type(L, -3) != 10 /* cdata */)
        luaL_error(L, "the records builder did not load");
    rec->check_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    rec->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    rec->io = (pc__rec_io_t *)lua_topointer(L, -1);
    rec->box_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    size_t tags = PC_REC_CACHE_SLOTS * sizeof *rec->cache_tag;
    unsigned char *block =
        lua_newuserdata(L, tags + PC_REC_CACHE_SLOTS * sizeof *rec->cache); /* 8-aligned */
    memset(block, 0, tags + PC_REC_CACHE_SLOTS * sizeof *rec->cache);
    rec->cache_tag = (uint32_t *)block;
    rec->cache = (pc__rec_cached_t *)(block + tags);
    rec->cache_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, top);
    return rec;
}

/* Reads the object el of shape in into its slots (zeroed by the caller);
 * false when the builder cannot take it as it is. */
static bool extract(lua_State *L, pc__records_t *rec, const pc__shape_info_t *in, const json_t *el,
                    pc__rec_val_t *out)
{
    const pc__record_shape_t *shape = in->shape;
    if (!json_is_object(el))
        return false;
    size_t next = 0;
    for (void *it = json_object_iter((json_t *)el); it;
         it = json_object_iter_next((json_t *)el, it)) {
        json_t *v = json_object_iter_value(it);
        if (json_is_null(v))
            continue; /* absent, as convert.h has it */
        const char *k = json_object_iter_key(it);
        size_t klen = json_object_iter_key_len(it);
        if (klen > 16)
            return false; /* no field has so long a name */
        uint64_t w[4];
        as_words(k, klen, w);
        /* Objects made by one piece of code list their keys in one order:
         * the field after the last one found is tried first. */
        size_t j = next < shape->nfields ? next : 0, tried = 0;
        while (tried < shape->nfields &&
               !(in->name_len[j] == klen && in->name_w[j][0] == w[0] && in->name_w[j][1] == w[1])) {
            j = j + 1 < shape->nfields ? j + 1 : 0;
            tried++;
        }
        pc__rec_val_t *x = out + in->off[j];
        if (tried == shape->nfields || x->kind != PC_REC_ABSENT)
            return false;
        next = j + 1;
        switch (shape->fields[j].kind) {
        case PC_FIELD_STRING:
            if (!json_is_string(v) || json_string_length(v) > UINT32_MAX)
                return false;
            *x = (pc__rec_val_t){.s = json_string_value(v),
                                 .len = (uint32_t)json_string_length(v),
                                 .kind = PC_REC_STRING};
            x->slot = cached_slot(L, rec, x->s, x->len);
            break;
        case PC_FIELD_NUMBER:
            if (json_is_integer(v)) {
                json_int_t i = json_integer_value(v);
                if (i > PC_RULES_MAX_SAFE_INTEGER || i < -PC_RULES_MAX_SAFE_INTEGER)
                    return false;
                *x = (pc__rec_val_t){.n = (double)i, .kind = PC_REC_NUMBER};
            } else if (json_is_real(v)) {
                *x = (pc__rec_val_t){.n = json_real_value(v), .kind = PC_REC_NUMBER};
            } else {
                return false;
            }
            break;
        case PC_FIELD_BOOL:
            if (!json_is_boolean(v))
                return false;
            x->kind = json_is_true(v) ? PC_REC_TRUE : PC_REC_FALSE;
            break;
        case PC_FIELD_OBJECT:
            x->kind = PC_REC_OBJECT;
            if (!extract(L, rec, info_of(rec, shape->fields[j].sub), v, x + 1))
                return false;
            break;
        case PC_FIELD_ANY:
            x->kind = PC_REC_ANY;
            x->s = (const char *)(const void *)v;
            break;
        }
    }
    return true;
}

/* Converts the any fields of the table at stack index t (of shape in, at
 * nesting level `level` of its argument) and stores them into it; -1 with
 * err filled when one cannot be converted. */
static int fill_any(lua_State *L, const pc__records_t *rec, const pc__shape_info_t *in,
                    const pc__rec_val_t *v, int t, int level, char *err, size_t errlen)
{
    const pc__record_shape_t *shape = in->shape;
    for (size_t j = 0; j < shape->nfields; j++) {
        const pc__rec_val_t *x = v + in->off[j];
        const pc__field_t *f = &shape->fields[j];
        if (f->kind == PC_FIELD_OBJECT && x->kind == PC_REC_OBJECT) {
            const pc__shape_info_t *sub = info_of(rec, f->sub);
            if (!sub->has_any)
                continue;
            lua_pushstring(L, f->name);
            lua_rawget(L, t);
            int rc = fill_any(L, rec, sub, x + 1, lua_gettop(L), level + 1, err, errlen);
            lua_pop(L, 1);
            if (rc < 0)
                return -1;
        } else if (f->kind == PC_FIELD_ANY && x->kind == PC_REC_ANY) {
            lua_pushstring(L, f->name);
            if (pc__json_push_nested(L, (const json_t *)(const void *)x->s, f->name, level + 1, err,
                                     errlen) < 0) {
                lua_pop(L, 1);
                return -1;
            }
            lua_rawset(L, t);
        }
    }
    return 0;
}

/* Makes room for n elements. The buffers are one userdata of the state
 * (anchored in the registry), like the rest of rec: nothing here is malloc'd,
 * and the state's memory cap counts them. */
static void reserve(lua_State *L, pc__records_t *rec, size_t n)
{
    size_t slots = rec->info[0].slots;
    if (n > (size_t)INT32_MAX / slots)
        luaL_error(L, "too many elements");
    /* Room for the largest list lately, not the largest ever: it counts
     * against the state's memory cap. */
    if (n <= rec->cap && !(rec->cap > 64 && n < rec->cap / 4))
        return;
    size_t vals = n * slots * sizeof *rec->buf, ptrs = n * sizeof *rec->id_ptr,
           order = n * sizeof *rec->order;
    unsigned char *block = lua_newuserdata(L, vals + ptrs + order + 2 * n); /* 8-aligned */
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (rec->buf_ref)
        luaL_unref(L, LUA_REGISTRYINDEX, rec->buf_ref);
    rec->buf_ref = ref;
    rec->buf = (pc__rec_val_t *)block;
    rec->id_ptr = (const char **)(block + vals);
    rec->order = (int32_t *)(block + vals + ptrs);
    rec->bytes = block + vals + ptrs + order;
    rec->cap = n;
}

/* Begins reading n elements: their slots zeroed, a new push for the string
 * cache. */
static void begin_read(lua_State *L, pc__records_t *rec, size_t n)
{
    reserve(L, rec, n);
    memset(rec->buf, 0, n * rec->info[0].slots * sizeof *rec->buf);
    /* Starts at 1: a slot never handed out has used == 0. */
    rec->pushes = rec->pushes + 1 ? rec->pushes + 1 : 1;
    rec->strs_idx = 0;
}

/* Ends reading: the cache's strings table, if reading pushed it, goes. */
static void end_read(lua_State *L, pc__records_t *rec)
{
    if (rec->strs_idx)
        lua_remove(L, rec->strs_idx);
    rec->strs_idx = 0;
}

bool pc__records_read_json(lua_State *L, pc__records_t *rec, const json_t *obj, pc__rec_val_t *out)
{
    return extract(L, rec, &rec->info[0], obj, out);
}

pc__rec_val_t *pc__records_field(const pc__records_t *rec, pc__rec_val_t *el, size_t field)
{
    return el + rec->info[0].off[field];
}

void pc__records_set_string(lua_State *L, pc__records_t *rec, pc__rec_val_t *v, const char *s,
                            size_t len)
{
    *v = (pc__rec_val_t){.s = s, .len = (uint32_t)len, .kind = PC_REC_STRING};
    v->slot = cached_slot(L, rec, s, len);
}

/* Reads the n elements of src into rec->buf, marking those the builder
 * cannot take; returns how many. Leaves the stack as it found it. */
static size_t read_all(lua_State *L, pc__records_t *rec, const pc__rec_source_t *src)
{
    size_t slots = rec->info[0].slots, others = 0;
    begin_read(L, rec, src->n);
    for (size_t i = 0; i < src->n; i++) {
        pc__rec_val_t *out = rec->buf + i * slots;
        if (!src->read(L, rec, src->src, i, out)) {
            memset(out, 0, slots * sizeof *out);
            out[0].kind = PC_REC_OTHER;
            others++;
        }
    }
    end_read(L, rec);
    return others;
}

int pc__records_push_one(lua_State *L, pc__records_t *rec, const json_t *obj, const char *path,
                         char *err, size_t errlen)
{
    if (rec->shape->id_field != PC_NO_FIELD)
        luaL_error(L, "pc__records_push_one: a shape with an id field is for lists");
    begin_read(L, rec, 1);
    bool took = extract(L, rec, &rec->info[0], obj, rec->buf);
    end_read(L, rec);
    if (took) {
        rec->io->vals = rec->buf;
        lua_rawgeti(L, LUA_REGISTRYINDEX, rec->fn_ref);
        lua_pushnil(L);
        lua_pushnumber(L, 1);
        lua_pushnil(L);
        lua_call(L, 3, 1);
        rec->io->vals = NULL;
        if (!rec->info[0].has_any ||
            fill_any(L, rec, &rec->info[0], rec->buf, lua_gettop(L), 0, err, errlen) == 0)
            return 0;
        lua_pop(L, 1);
    }
    /* Not for the builder, or an any field refused: convert.h says why. */
    return pc__json_push_nested(L, obj, path, 0, err, errlen);
}

static bool read_json_element(lua_State *L, pc__records_t *rec, const void *list, size_t i,
                              pc__rec_val_t *out)
{
    return extract(L, rec, &rec->info[0], json_array_get(list, i), out);
}

static const json_t *json_element(const void *list, size_t i)
{
    return json_array_get(list, i);
}

int pc__records_push(lua_State *L, pc__records_t *rec, const json_t *list, const char *path,
                     int ids, char *err, size_t errlen)
{
    pc__rec_source_t src = {json_array_size(list), read_json_element, json_element, list};
    return pc__records_push_from(L, rec, &src, path, ids, err, errlen);
}

int pc__records_push_from(lua_State *L, pc__records_t *rec, const pc__rec_source_t *src,
                          const char *path, int ids, char *err, size_t errlen)
{
    if (rec->shape->id_field == PC_NO_FIELD)
        luaL_error(L, "pc__records_push: a list's shape needs an id field");
    size_t n = src->n, slots = rec->info[0].slots;
    size_t others = read_all(L, rec, src);
    lua_createtable(L, (int)n, 0);
    int list_idx = lua_gettop(L);
    if (n > others) {
        rec->io->vals = rec->buf;
        rec->io->ids = rec->id_ptr;
        lua_rawgeti(L, LUA_REGISTRYINDEX, rec->fn_ref);
        lua_pushvalue(L, list_idx);
        lua_pushnumber(L, (lua_Number)n);
        lua_pushvalue(L, ids);
        lua_call(L, 3, 0);
        rec->io->vals = NULL;
        rec->io->ids = NULL;
    }
    if (!others && !rec->info[0].has_any)
        return 0;
    for (size_t i = 0; i < n; i++) {
        const pc__rec_val_t *v = rec->buf + i * slots;
        if (v[0].kind != PC_REC_OTHER) {
            if (!rec->info[0].has_any)
                continue;
            lua_rawgeti(L, list_idx, (int)i + 1);
            int rc = fill_any(L, rec, &rec->info[0], v, lua_gettop(L), 1, err, errlen);
            lua_pop(L, 1);
            if (rc == 0)
                continue;
            /* An any field refused: convert.h says why (below). */
        }
        const json_t *el = src->json(src->src, i);
        char at[128];
        snprintf(at, sizeof at, "%s[%zu]", path, i + 1);
        if (!el) {
            snprintf(err, errlen, "%s: cannot be passed to a rule", at);
            lua_settop(L, list_idx - 1);
            return -1;
        }
        if (json_is_null(el)) {
            snprintf(err, errlen, "%s: null inside a list cannot be passed to a rule", at);
            lua_settop(L, list_idx - 1);
            return -1;
        }
        if (pc__json_push_nested(L, el, at, 1, err, errlen) < 0) {
            lua_settop(L, list_idx - 1);
            return -1;
        }
        if (lua_istable(L, -1) && rec->shape->id_field != PC_NO_FIELD) {
            lua_pushstring(L, rec->shape->fields[rec->shape->id_field].name);
            lua_rawget(L, -2);
            if (lua_type(L, -1) == LUA_TSTRING) {
                lua_pushvalue(L, -1);
                lua_rawseti(L, ids, (int)i + 1);
                lua_pushnumber(L, (lua_Number)i + 1);
                lua_rawset(L, ids);
            } else {
                lua_rawseti(L, ids, (int)i + 1);
            }
        }
        lua_rawseti(L, list_idx, (int)i + 1);
    }
    return 0;
}

int pc__records_check(lua_State *L, pc__records_t *rec, int answer, size_t n, size_t nin, int ids,
                      size_t *order, unsigned char *flags)
{
    if (n > rec->cap || nin > rec->cap)
        return 0;
    memset(rec->bytes, 0, 2 * nin);
    rec->io->order = rec->order;
    rec->io->flags = rec->bytes;
    rec->io->seen = rec->bytes + nin;
    lua_rawgeti(L, LUA_REGISTRYINDEX, rec->check_ref);
    lua_pushvalue(L, answer);
    lua_pushnumber(L, (lua_Number)n);
    lua_pushvalue(L, ids);
    lua_call(L, 3, 1);
    int ok = lua_toboolean(L, -1);
    lua_pop(L, 1);
    rec->io->order = NULL;
    rec->io->flags = rec->io->seen = NULL;
    if (!ok)
        return 0;
    for (size_t i = 0; i < n; i++) {
        order[i] = (size_t)rec->order[i];
        if (flags)
            flags[i] = rec->bytes[i];
    }
    return 1;
}

const char *pc__records_id(const pc__records_t *rec, size_t i)
{
    const pc__rec_val_t *v = rec->buf + i * rec->info[0].slots;
    if (v[0].kind == PC_REC_OTHER ||
        v[rec->info[0].off[rec->shape->id_field]].kind != PC_REC_STRING)
        return NULL;
    return rec->id_ptr[i];
}

int pc__records_bool(const pc__records_t *rec, size_t i, size_t field)
{
    const pc__rec_val_t *v = rec->buf + i * rec->info[0].slots;
    if (v[0].kind == PC_REC_OTHER)
        return -2;
    const pc__rec_val_t *x = v + rec->info[0].off[field];
    return x->kind == PC_REC_TRUE ? 1 : x->kind == PC_REC_FALSE ? 0 : -1;
}
