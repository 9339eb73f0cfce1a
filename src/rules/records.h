/* Arguments of a known shape passed to a rule through a builder the JIT
 * compiles (internal to rules/): cashier_rank's list of methods and its ctx.
 *
 * Converting a cashier's twelve methods into Lua tables through the C API
 * (convert.h) costs more than the rule that ranks them: every field is a key
 * interned, a value pushed and a new key inserted into a fresh table. When a
 * decision point's argument has a known shape (field names and kinds, objects
 * of shapes of their own, fields of any value), C reads each object into a
 * flat array of values, and a small Lua function of paycore's own, generated
 * from the shape, builds the tables from that array through the FFI: each
 * table is copied from a constant template that already holds the keys, and
 * the JIT compiles that loop to a few instructions per field. Fields of any
 * value are converted by convert.h into the built tables afterwards.
 *
 * The rule sees exactly what convert.h would give it: the same keys and
 * values, JSON null and missing fields alike absent (a template key whose
 * field is absent holds nil, which pairs and next skip). Only the order in
 * which pairs visits a table's keys may differ, and Lua never promised one.
 * An element the builder cannot take as it is (not an object, a field not in
 * the shape, a value of another kind, an integer beyond 2^53) is converted by
 * convert.h instead, which also words any refusal exactly as before.
 *
 * The same Lua chunk holds a checker for the rule's answer (a list of the
 * input elements, named by their id field, each with a flag), which accepts
 * only answers the C check in points.c accepts and reads the same positions
 * and flags from them; anything else goes to that C check, which says what
 * is wrong. tests/unit/test_rules_records.c and the fuzz target fuzz_rules
 * hold both paths to giving the same results.
 *
 * The JIT is on in a state that has a builder, so that the builder is
 * compiled; rule code loaded into it must be marked not to be compiled
 * (pc__sandbox_load does, and refuses the rule if LuaJIT will not), since
 * count hooks, which enforce the rule's budget, do not run inside compiled
 * code. Nothing reaches the builder, the ffi module or the jit module from a
 * rule: they are held in the registry and removed from the globals.
 *
 * Needs LuaJIT (with its FFI) and jansson. */
#ifndef PC_RULES_RECORDS_H
#define PC_RULES_RECORDS_H
#include <jansson.h>
#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A field holds a string, a number, a boolean, an object of a shape of its
 * own (sub), or anything (converted by convert.h after the builder ran). */
typedef enum {
    PC_FIELD_STRING,
    PC_FIELD_NUMBER,
    PC_FIELD_BOOL,
    PC_FIELD_OBJECT,
    PC_FIELD_ANY
} pc__field_kind_t;

struct pc__record_shape;

typedef struct {
    const char *name; /* a Lua identifier of at most 16 bytes */
    pc__field_kind_t kind;
    const struct pc__record_shape *sub; /* PC_FIELD_OBJECT */
} pc__field_t;

#define PC_RECORD_MAX_FIELDS 16
#define PC_RECORD_MAX_SHAPES 4 /* a shape and those of its objects, all levels */
#define PC_NO_FIELD ((size_t)-1)

typedef struct pc__record_shape {
    const pc__field_t *fields;
    size_t nfields;    /* at most PC_RECORD_MAX_FIELDS */
    size_t id_field;   /* the string field that names a list element, or PC_NO_FIELD */
    size_t flag_field; /* a boolean field answers carry back, or PC_NO_FIELD */
} pc__record_shape_t;

/* One field of one element as C hands it to the builder. */
typedef struct {
    const char *s; /* PC_REC_STRING: the bytes */
    double n;      /* PC_REC_NUMBER */
    uint32_t len;  /* PC_REC_STRING: the length */
    uint32_t kind; /* pc__rec_kind_t */
    int32_t slot;  /* PC_REC_STRING: the string's place in the cache, 0 for none */
    int32_t pad;
} pc__rec_val_t;

/* Short strings the builder found before, kept as Lua strings in a table of
 * the registry (so that the same text is not hashed and looked up in
 * LuaJIT's string table again on every call) and here by their bytes: a
 * string of at most 32 bytes is four 64-bit words (see records.c), so a
 * lookup is one hash and four comparisons. Strings are values: what this
 * holds is nothing a rule can observe. */
#define PC_REC_CACHE_SLOTS 512
#define PC_REC_CACHE_MAXLEN 32

typedef struct {
    uint64_t w[4];
    uint32_t used; /* the push that last handed this slot out (pc__records_t.pushes) */
} pc__rec_cached_t;

typedef enum {
    PC_REC_ABSENT = 0,
    PC_REC_STRING = 1,
    PC_REC_NUMBER = 2,
    PC_REC_TRUE = 3,
    PC_REC_FALSE = 4,
    PC_REC_OTHER = 5,  /* in an element's first slot: convert it with convert.h */
    PC_REC_OBJECT = 6, /* an object field present: its fields' slots follow */
    PC_REC_ANY = 7     /* an any field present: s holds its json_t */
} pc__rec_kind_t;

/* Where C and the builder's Lua code meet (one FFI struct per state). */
typedef struct {
    const pc__rec_val_t *vals; /* the elements' values, for the builder */
    const char **ids;          /* out: each element's id string */
    int32_t *order;            /* out, checker: input position of each answer entry */
    uint8_t *flags;            /* out, checker: each entry's flag field */
    uint8_t *seen;             /* checker's scratch, one byte per input element */
} pc__rec_io_t;

/* A shape as extraction walks it: where each field's slot is among the
 * shape's slots (an object field's own fields follow its slot), and the
 * names as words for matching keys. */
typedef struct {
    const pc__record_shape_t *shape;
    size_t off[PC_RECORD_MAX_FIELDS];
    size_t name_len[PC_RECORD_MAX_FIELDS];
    uint64_t name_w[PC_RECORD_MAX_FIELDS][2];
    size_t slots; /* this shape's, its objects' included */
    int has_any;  /* an any field here or in an object below */
} pc__shape_info_t;

/* Lives in its state's memory (a userdata anchored in the registry). */
typedef struct pc__records {
    const pc__record_shape_t *shape;
    pc__shape_info_t info[PC_RECORD_MAX_SHAPES]; /* info[0]: shape itself */
    size_t ninfo;
    /* Registry references: builder, checker (lists with an id field only),
     * the io struct, the strings, the cache, this struct, the buffers. */
    int fn_ref, check_ref, box_ref, strs_ref, cache_ref, self_ref, buf_ref;
    pc__rec_io_t *io;
    const char **id_ptr; /* element i's id string (its Lua string's bytes) */
    int32_t *order;      /* the checker's answer */
    uint8_t *bytes;      /* the checker's flags and scratch (2 * cap) */
    /* Per slot the length (low byte, 0: empty) and hash bits of its string,
     * looked at first: 2 KiB that stay in the CPU's nearest cache; then the
     * strings' words. Both live in a userdata of the state (anchored in the
     * registry), so they go with it, not through malloc. */
    uint32_t *cache_tag;
    pc__rec_cached_t *cache;
    uint32_t pushes;    /* pushes so far: a slot handed out in this one is not refilled */
    pc__rec_val_t *buf; /* info[0].slots values per element */
    size_t cap;         /* elements buf holds */
    int strs_idx;       /* while reading: stack index of the cache's strings, or 0 */
} pc__records_t;

/* Loads the FFI and the JIT into L (once per state) and compiles a builder
 * for shape; returns it, kept in L's memory until lua_close (nothing to
 * free). Raises a Lua error on failure (call in protected
 * mode). The JIT is switched on for the whole state: the caller keeps rule
 * code out of it. */
pc__records_t *pc__records_open(lua_State *L, const pc__record_shape_t *shape);

/* Pushes one object converted as pc__json_push would (path names it in
 * refusals). Returns 0, or -1 with err filled and nothing pushed. May raise
 * a Lua error (out of memory). */
int pc__records_push_one(lua_State *L, pc__records_t *rec, const json_t *obj, const char *path,
                         char *err, size_t errlen);

/* Pushes the list converted to a Lua list of tables, as pc__json_push would
 * (path names the argument in refusals), and stores each element's id field
 * as converted (a string, or whatever else it holds, or nil) at the same
 * position in the table at stack index ids. Returns 0, or -1 after writing
 * "<path>[i].field: reason" into err with nothing pushed. May raise a Lua
 * error (out of memory; a shape without an id field). */
int pc__records_push(lua_State *L, pc__records_t *rec, const json_t *list, const char *path,
                     int ids, char *err, size_t errlen);

/* A list's n elements as pc__records_push_from reads them. read fills
 * element i's slots (zeroed; pc__records_field and pc__records_set_string
 * below) and returns true, or false when the builder cannot take it as it
 * is; json returns element i as JSON, which convert.h converts for those
 * (NULL: refused, the caller words why). Both read from src. */
typedef struct {
    size_t n;
    bool (*read)(lua_State *L, pc__records_t *rec, const void *src, size_t i, pc__rec_val_t *out);
    const json_t *(*json)(const void *src, size_t i);
    const void *src;
} pc__rec_source_t;

/* pc__records_push over elements that src reads (the same contract; a
 * JSON list is one such source). */
int pc__records_push_from(lua_State *L, pc__records_t *rec, const pc__rec_source_t *src,
                          const char *path, int ids, char *err, size_t errlen);

/* For a source's read: the JSON object obj read as pc__records_push reads a
 * list element (false when the builder cannot take it); the slot of the top
 * shape's field in element el; a string value (s stays alive until the push
 * returns). */
bool pc__records_read_json(lua_State *L, pc__records_t *rec, const json_t *obj, pc__rec_val_t *out);
pc__rec_val_t *pc__records_field(const pc__records_t *rec, pc__rec_val_t *el, size_t field);
void pc__records_set_string(lua_State *L, pc__records_t *rec, pc__rec_val_t *v, const char *s,
                            size_t len);

/* Checks a rule's answer of n entries (the table at stack index answer, a
 * list of n <= nin entries: C checked that) against the nin elements pushed,
 * whose ids table (filled by pc__records_push) is at stack index ids: each
 * entry a table whose id field names an input element, no element twice, the
 * flag field true, false or nil. Returns 1 with order[i] (0-based input
 * position) and flags[i] (when flags is not NULL) filled, or 0 when the
 * answer breaks one of those or cannot be checked here: the caller checks it
 * itself then (and says what is wrong). May raise a Lua error (memory). */
int pc__records_check(lua_State *L, pc__records_t *rec, int answer, size_t n, size_t nin, int ids,
                      size_t *order, unsigned char *flags);

/* After pc__records_push: element i's id as the Lua string the builder made
 * (the pointer lua_tostring would give, kept alive by the ids table), or
 * NULL when the builder did not take the element or it has no id; then read
 * the ids table. */
const char *pc__records_id(const pc__records_t *rec, size_t i);

/* After pc__records_push: the boolean field of element i as the builder took
 * it, 1 true, 0 false, -1 absent; -2 when the element went through
 * convert.h instead (read the JSON). */
int pc__records_bool(const pc__records_t *rec, size_t i, size_t field);

#endif
