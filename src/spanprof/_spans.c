/*
 * spanprof._spans: spanprof's OpenTelemetry span processor, in C.
 *
 * A span processor runs on the application's span hot path: the SDK calls
 * on_start, _on_ending and on_end of every processor for every span. This
 * type is spanprof's only one (each processor costs its calls: ~0.07 µs per
 * span), and keeps what it records in C memory, not in Python objects:
 *
 * - local roots (a span with no parent, or a remote one), in a hash table by
 *   trace id: added at start with the running span (a strong reference); at
 *   end the span is let go, its final name and its trace id (as 128 bits, no
 *   int object) kept in a log. Ended roots are dropped
 *   after a grace period, as samples are resolved a little after they are
 *   taken (every 256 ended roots, those that ended before the previous purge
 *   go, purges being at least `grace_ns` apart). local_root(span) answers the
 *   linker: the root of the span's trace that started last before it.
 * - finished spans for the store, as fixed-size records in one reused
 *   buffer (ids, times, and references to the name, the trace id and the
 *   attributes' keys and values, which the SDK makes immutable at end); take_rows()
 *   builds the rows on spanprof's exporter thread.
 *
 * Rows as tuples and roots in a dict made the garbage collector and the
 * allocator walk thousands of young objects: the span path cost ~0.9 µs more
 * with rows waiting than with rows taken at once.
 *
 * Nothing raises into the application: an error on the span path is
 * cleared and counted (`errors`). Public C API, but for reading a 128-bit int
 * before 3.13 (`_PyLong_AsByteArray`, whose signature 3.10-3.12 share) and,
 * since 3.11, reading the SDK's objects' attributes where the interpreter
 * keeps them (span_attr(): the interpreter's own layout, hence this file
 * builds as core, like the sampler; any unexpected layout reads the usual way).
 */
#define PY_SSIZE_T_CLEAN
#include <patchlevel.h>
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000
/* for reading attributes where the interpreter keeps them (see span_attr) */
#define Py_BUILD_CORE 1
#endif
#include <Python.h>
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000 /* layouts known */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#include "internal/pycore_dict.h"
#pragma GCC diagnostic pop
#define FAST_ATTRS 1
#endif
#include <string.h>
#include <time.h>

/* A 128-bit trace id held in C: an ended root keeps no int object alive. */
typedef struct {
    unsigned long long lo, hi;
} TraceId;

typedef struct {
    PyObject *span; /* the running root (strong); NULL: an empty slot */
    PyObject *type; /* its trace type name (borrowed from trace_types.dict) */
    unsigned long long span_id;
    long long start;
    TraceId tid;
} Root;

/* 48 bytes: at a high rate of requests, thousands wait out the grace period,
 * and their memory is what the application's allocations then miss in cache. */
typedef struct {
    TraceId tid;
    PyObject *name; /* its final name (strong) */
    PyObject *type; /* borrowed from trace_types.dict */
    unsigned long long span_id;
    long long start;
} Ended;

typedef struct {
    Py_hash_t hash;
    Py_ssize_t seq_plus_1; /* an ended root's sequence number + 1; 0: empty */
} IndexEntry;

typedef struct {
    PyObject *trace_id; /* strong */
    PyObject *name;     /* strong */
    PyObject *kind;     /* borrowed from trace_types.dict */
    PyObject *status;   /* borrowed from status_names.dict */
    unsigned long long span_id, parent; /* parent 0: none here (none, or remote) */
    long long start, end;
    Py_ssize_t attrs_at, n_attrs; /* its attributes: key, value pairs in `attrs` */
} Row;

/* An enum's members and their names, from a dict given at init. Members are
 * found by identity in C (an Enum's hash is a Python method), others in the dict. */
#define ENUM_MAX 8
typedef struct {
    PyObject *dict; /* a copy, never changed: `member` and `name` are borrowed from it */
    int n;
    PyObject *member[ENUM_MAX], *name[ENUM_MAX];
} EnumNames;

typedef struct {
    PyObject_HEAD
    EnumNames trace_types;  /* SpanKind -> trace type name */
    EnumNames status_names; /* StatusCode -> name */
    Root *live; /* running local roots, by trace id */
    Py_ssize_t live_cap, live_used, max_roots;
    Ended *ended; /* ended roots in end order: [ended_head, ended_tail) */
    Py_ssize_t ended_cap, ended_head, ended_tail;
    Py_ssize_t ended_shift; /* sequence number of ended[i] is i + ended_shift */
    IndexEntry *index;      /* ended roots by trace id, built by local_root() */
    Py_ssize_t index_cap, index_used, indexed_to; /* sequence numbers < indexed_to are in */
    Py_ssize_t purge_mark; /* sequence number of the log's tail at the last purge */
    long long purged_at, grace_ns;
    Py_ssize_t roots_ended; /* since the last purge check */
    Row *rows;
    Py_ssize_t rows_cap, rows_used, max_rows;
    PyObject **attrs; /* the rows' attribute keys and values (strong), in pairs */
    Py_ssize_t attrs_cap, attrs_used;
    Py_ssize_t dropped; /* rows not kept: max_rows reached */
    Py_ssize_t errors;  /* spans not recorded: an unexpected span object */
    int track_roots, keep_rows, enabled;
} RecorderObject;

/* SpanContext is a tuple (trace_id, span_id, is_remote, ...): read its items
 * directly instead of calling its properties. Checked once on a real one. */
static int g_tuple_context = -1;

static int
check_tuple_context(void)
{
    if (g_tuple_context >= 0) {
        return 0;
    }
    PyObject *mod = PyImport_ImportModule("opentelemetry.trace");
    PyObject *cls = mod ? PyObject_GetAttrString(mod, "SpanContext") : NULL;
    PyObject *ctx = cls ? PyObject_CallFunction(cls, "iiO", 1, 2, Py_True) : NULL;
    Py_XDECREF(mod);
    Py_XDECREF(cls);
    if (ctx == NULL) {
        return -1;
    }
    g_tuple_context = PyTuple_Check(ctx) && PyTuple_GET_SIZE(ctx) >= 3 &&
                      PyLong_Check(PyTuple_GET_ITEM(ctx, 0)) &&
                      PyLong_AsLong(PyTuple_GET_ITEM(ctx, 0)) == 1 &&
                      PyLong_Check(PyTuple_GET_ITEM(ctx, 1)) &&
                      PyLong_AsLong(PyTuple_GET_ITEM(ctx, 1)) == 2 &&
                      PyTuple_GET_ITEM(ctx, 2) == Py_True;
    Py_DECREF(ctx);
    return 0;
}

static PyObject *s_trace_id, *s_span_id, *s_is_remote;

/* ---- reading the SDK's objects ------------------------------------------ */

/* The attributes read: the SDK's spans' (ReadableSpan and Span), Status's
 * and BoundedAttributes'. */
enum {
    A_PARENT,
    A_CONTEXT,
    A_NAME,
    A_KIND,
    A_START,
    A_END,
    A_STATUS,
    A_STATUS_CODE,
    A_ATTRIBUTES,
    A_DICT,
    N_ATTRS
};
static PyObject *s_attr[N_ATTRS];

#ifdef FAST_ATTRS
/* These are plain Python objects: since 3.11 their attributes are values in
 * an array laid out by their class's shared keys. PyObject_GetAttr finds one
 * in ~20 ns (the class's method cache, then the keys' hash table), ten to
 * fifteen times a span; reading the array at an index learnt once per class
 * costs ~2 ns. The guards are the interpreter's own for its LOAD_ATTR
 * specialization on instance values: when learnt, no class attribute of that
 * name and the generic __getattribute__; then the class's version tag
 * unchanged (anything done to the class changes it), the object still has
 * its values (no __dict__ made for it), the value present. Anything else, and
 * any class past the first eight, takes PyObject_GetAttr. */
typedef struct {
    PyTypeObject *type;     /* strong; NULL: a free entry */
    unsigned int version;   /* the class's version tag when learnt; 0: none */
    PyDictKeysObject *keys; /* its shared keys */
    Py_ssize_t ix[N_ATTRS]; /* the attribute's index in the values; -1: none, -2: not yet learnt */
} AttrIndex;

static AttrIndex g_attr_index[8]; /* spans, ended spans, statuses, attribute maps; others */

/* An object's values, NULL if it has a dict instead (pycore_object.h's
 * accessors, which cannot be included here, written out). */
static inline PyDictValues *
object_values(PyObject *obj)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyDictValues *values = (PyDictValues *)((char *)obj + sizeof(PyObject)); /* inline */
    return values->valid ? values : NULL;
#elif PY_VERSION_HEX >= 0x030C0000
    char *tagged = ((char **)obj)[-3]; /* values pointer + 1, or the dict */
    return ((uintptr_t)tagged & 1) ? (PyDictValues *)(tagged + 1) : NULL;
#else
    return ((PyDictValues **)obj)[-4];
#endif
}

#if PY_VERSION_HEX >= 0x030D0000
#define VALUES_FLAG Py_TPFLAGS_INLINE_VALUES
#else
#define VALUES_FLAG Py_TPFLAGS_MANAGED_DICT
#endif

/* Learns where `type` keeps attribute `a`, after a PyObject_GetAttr of it. */
static void
attr_learn(PyTypeObject *type, int a)
{
    if (!(type->tp_flags & VALUES_FLAG) || !(type->tp_flags & Py_TPFLAGS_HEAPTYPE) ||
        ((PyHeapTypeObject *)type)->ht_cached_keys == NULL) {
        return;
    }
    AttrIndex *e = NULL;
    for (size_t i = 0; i < sizeof(g_attr_index) / sizeof(g_attr_index[0]); i++) {
        if (g_attr_index[i].type == type || g_attr_index[i].type == NULL) {
            e = &g_attr_index[i];
            break;
        }
    }
    PyDictKeysObject *keys = ((PyHeapTypeObject *)type)->ht_cached_keys;
    if (e == NULL || (e->type != NULL && e->version == type->tp_version_tag && e->keys == keys &&
                      e->ix[a] != -2)) {
        return; /* learnt already; or full, and other classes read the usual way */
    }
    /* as the interpreter: only where no class attribute of that name (whose
     * class may become a descriptor) and no __getattribute__ have a say (the
     * lookup also gives the class a version tag) */
    PyObject *descr = _PyType_Lookup(type, s_attr[a]);
    if (e->type == NULL || e->version != type->tp_version_tag || e->keys != keys) {
        Py_XSETREF(e->type, (PyTypeObject *)Py_NewRef(type));
        e->version = type->tp_version_tag;
        e->keys = keys;
        for (int i = 0; i < N_ATTRS; i++) {
            e->ix[i] = -2;
        }
    }
    e->ix[a] = -1;
    if (e->version == 0 || descr != NULL || type->tp_getattro != PyObject_GenericGetAttr ||
        keys->dk_kind == DICT_KEYS_GENERAL) {
        return;
    }
    PyDictUnicodeEntry *entries = DK_UNICODE_ENTRIES(keys);
    for (Py_ssize_t i = 0; i < keys->dk_nentries; i++) {
        if (entries[i].me_key == s_attr[a]) { /* attribute names are interned */
            e->ix[a] = i;
            break;
        }
    }
}
#endif

#if defined(__GNUC__) && defined(FAST_ATTRS)
#define OUT_OF_LINE __attribute__((noinline, cold)) /* rare: learning, unusual objects */
#elif defined(__GNUC__)
#define OUT_OF_LINE __attribute__((noinline)) /* every read, without the fast path */
#else
#define OUT_OF_LINE
#endif

/* span_attr() the usual way (and learns where the class keeps it). */
static OUT_OF_LINE PyObject *
span_attr_slow(PyObject *obj, int a)
{
    PyObject *v = PyObject_GetAttr(obj, s_attr[a]);
#ifdef FAST_ATTRS
    if (v != NULL) {
        attr_learn(Py_TYPE(obj), a);
    }
#endif
    return v;
}

/* Attribute `a` of an SDK object: a new reference, NULL with an exception.
 * Inline, about ten reads; ten to fifteen per span. */
static inline PyObject *
span_attr(PyObject *obj, int a)
{
#ifdef FAST_ATTRS
    PyTypeObject *type = Py_TYPE(obj);
    for (size_t i = 0; i < sizeof(g_attr_index) / sizeof(g_attr_index[0]); i++) {
        AttrIndex *e = &g_attr_index[i];
        if (e->type != type) {
            continue;
        }
        Py_ssize_t ix = e->ix[a];
        if (ix >= 0 && e->version == type->tp_version_tag &&
            e->keys == ((PyHeapTypeObject *)type)->ht_cached_keys) {
            PyDictValues *values = object_values(obj);
#if PY_VERSION_HEX >= 0x030D0000
            if (values != NULL && ix >= values->capacity) {
                values = NULL;
            }
#endif
            PyObject *v = values != NULL ? values->values[ix] : NULL;
            if (v != NULL) {
                return Py_NewRef(v);
            }
        }
        break;
    }
#endif
    return span_attr_slow(obj, a);
}

static long long
monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- span fields --------------------------------------------------------- */

#if defined(FAST_ATTRS) && PyLong_SHIFT == 30
#define FAST_INTS 1
/* An exact int's 30-bit digits, least significant first, and how many; -1
 * if it is negative. Read directly (ids and times, several a span: ~3 ns,
 * where a conversion call costs ~15 and one through a byte array ~20). */
static inline Py_ssize_t
int_digits(PyObject *v, const digit **d)
{
#if PY_VERSION_HEX >= 0x030C0000
    *d = ((PyLongObject *)v)->long_value.ob_digit;
    uintptr_t tag = ((PyLongObject *)v)->long_value.lv_tag;
    return (tag & _PyLong_SIGN_MASK) == 2 ? -1 : (Py_ssize_t)(tag >> _PyLong_NON_SIZE_BITS);
#else
    *d = ((PyLongObject *)v)->ob_digit;
    return Py_SIZE(v) < 0 ? -1 : Py_SIZE(v);
#endif
}
#endif

/* A trace id as 128 bits: -1 with an exception if it is not a non-negative
 * int of at most 128 bits. Only 3.13 has a public call for this. */
static int
trace_id_read(PyObject *v, TraceId *out)
{
    unsigned char buf[16];
    if (!PyLong_CheckExact(v)) {
        PyErr_SetString(PyExc_TypeError, "trace id is not an int");
        return -1;
    }
#ifdef FAST_INTS
    const digit *d;
    Py_ssize_t nd = int_digits(v, &d);
    if (nd >= 0 && (nd < 5 || (nd == 5 && d[4] < 256))) { /* 0 to 128 bits */
        unsigned __int128 x = 0;
        for (Py_ssize_t i = nd - 1; i >= 0; i--) {
            x = (x << 30) | d[i];
        }
        out->lo = (unsigned long long)x;
        out->hi = (unsigned long long)(x >> 64);
        return 0;
    }
#endif
#if PY_VERSION_HEX >= 0x030D0000
    Py_ssize_t n = PyLong_AsNativeBytes(v, buf, 16,
                                        Py_ASNATIVEBYTES_LITTLE_ENDIAN |
                                            Py_ASNATIVEBYTES_UNSIGNED_BUFFER |
                                            Py_ASNATIVEBYTES_REJECT_NEGATIVE);
    if (n < 0) {
        return -1;
    }
    if (n > 16) {
        PyErr_SetString(PyExc_OverflowError, "trace id over 128 bits");
        return -1;
    }
#else
    if (_PyLong_AsByteArray((PyLongObject *)v, buf, 16, 1, 0) < 0) {
        return -1;
    }
#endif
    memcpy(&out->lo, buf, 8);
    memcpy(&out->hi, buf + 8, 8);
    return 0;
}

static Py_hash_t
tid_hash(TraceId t)
{
    unsigned long long h = (t.lo ^ (t.hi * 0x9E3779B97F4A7C15ULL)) * 0xBF58476D1CE4E5B9ULL;
    return (Py_hash_t)(h ^ (h >> 31));
}

static int
tid_equal(TraceId a, TraceId b)
{
    return a.lo == b.lo && a.hi == b.hi;
}

/* Item `i` (0 trace id, 1 span id, 2 is_remote) of a SpanContext: new reference. */
static PyObject *
ctx_item(PyObject *ctx, int i)
{
    if (g_tuple_context == 1 && PyTuple_Check(ctx) && PyTuple_GET_SIZE(ctx) > i) {
        return Py_NewRef(PyTuple_GET_ITEM(ctx, i));
    }
    return PyObject_GetAttr(ctx, i == 0 ? s_trace_id : i == 1 ? s_span_id : s_is_remote);
}

/* An int's low 64 bits (ids and ns times fit). Otherwise than by its digits,
 * the masking conversion: the checked one goes through a byte array (~20 ns).
 * -1 with an exception if not an int. */
static inline int
low64(PyObject *v, unsigned long long *out)
{
#ifdef FAST_INTS
    const digit *d;
    Py_ssize_t nd = PyLong_CheckExact(v) ? int_digits(v, &d) : -1;
    if (nd >= 0 && nd <= 3) { /* up to 90 bits, the low 64 kept */
        unsigned long long x = 0;
        for (Py_ssize_t i = nd - 1; i >= 0; i--) {
            x = (x << 30) | d[i];
        }
        *out = x;
        return 0;
    }
#endif
    if (!PyLong_Check(v)) {
        PyErr_SetString(PyExc_TypeError, "an int was expected");
        return -1;
    }
    *out = PyLong_AsUnsignedLongLongMask(v);
    return 0;
}

/* A 64-bit id item of a SpanContext (1 span id); -1 with an exception on error. */
static int
ctx_id(PyObject *ctx, int i, unsigned long long *out)
{
    PyObject *v = ctx_item(ctx, i);
    if (v == NULL) {
        return -1;
    }
    int rc = low64(v, out);
    Py_DECREF(v);
    return rc;
}

/* A span's time attribute in ns (0 if None); -1 with an exception on error. */
static int
span_time(PyObject *span, int attr, long long *out)
{
    PyObject *v = span_attr(span, attr);
    if (v == NULL) {
        return -1;
    }
    unsigned long long ns = 0;
    int rc = v == Py_None ? 0 : low64(v, &ns);
    *out = (long long)ns;
    Py_DECREF(v);
    return rc;
}

/* 1: a local root (no parent, or a remote one); 0: not; -1: error.
 * *parent_id gets the local parent's span id (0 for a local root). */
static int
local_parent(PyObject *span, unsigned long long *parent_id)
{
    PyObject *parent = span_attr(span, A_PARENT);
    if (parent == NULL) {
        return -1;
    }
    *parent_id = 0;
    int root = 1;
    if (parent != Py_None) {
        PyObject *remote = ctx_item(parent, 2);
        root = remote == NULL ? -1 : PyObject_IsTrue(remote);
        Py_XDECREF(remote);
        if (root == 0 && ctx_id(parent, 1, parent_id) < 0) {
            root = -1;
        }
    }
    Py_DECREF(parent);
    return root;
}

/* Takes a copy of `dict` (enum member -> name): 0, or -1 with an exception. */
static int
enum_names_set(EnumNames *names, PyObject *dict)
{
    PyObject *copy = PyDict_Copy(dict);
    if (copy == NULL) {
        return -1;
    }
    Py_XSETREF(names->dict, copy);
    names->n = 0;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (names->n < ENUM_MAX && PyDict_Next(copy, &pos, &key, &value)) {
        names->member[names->n] = key;
        names->name[names->n++] = value;
    }
    return 0;
}

static void
enum_names_clear(EnumNames *names)
{
    names->n = 0;
    Py_CLEAR(names->dict);
}

/* The name of an enum member (borrowed), NULL with an exception. */
static PyObject *
enum_name(const EnumNames *names, PyObject *member)
{
    for (int i = 0; i < names->n; i++) {
        if (names->member[i] == member) {
            return names->name[i];
        }
    }
    PyObject *value = PyDict_GetItemWithError(names->dict, member);
    if (value == NULL && !PyErr_Occurred()) {
        PyErr_Format(PyExc_KeyError, "%R", member);
    }
    return value;
}

/* The span's trace type name (borrowed), from its kind. */
static PyObject *
trace_type(RecorderObject *self, PyObject *span)
{
    PyObject *kind = span_attr(span, A_KIND);
    if (kind == NULL) {
        return NULL;
    }
    PyObject *type = enum_name(&self->trace_types, kind);
    Py_DECREF(kind);
    return type;
}

/* An error on the span path is counted, never raised into the application. */
static PyObject *
swallow(RecorderObject *self)
{
    if (PyErr_Occurred()) {
        PyErr_Clear();
        self->errors++;
    }
    Py_RETURN_NONE;
}

/* ---- local roots ----------------------------------------------------------- */
/*
 * Running roots are few (one per request in flight): a small hash table by
 * trace id, entries deleted in place (backward shift), so it stays in cache.
 * An ended root is appended to a log in the order roots end, purged from its
 * front: no hashing and no rebuild on the application's path. Only the
 * linker's lookups (local_root, on spanprof's thread) need ended roots by
 * trace id: they index the log lazily.
 */

static void
live_release(Root *r)
{
    Py_CLEAR(r->span);
}

static void
ended_release(Ended *e)
{
    Py_CLEAR(e->name);
}

static void
roots_forget_all(RecorderObject *self)
{
    Root *live = self->live;
    Ended *ended = self->ended;
    Py_ssize_t live_cap = self->live_cap, head = self->ended_head, tail = self->ended_tail;
    PyMem_Free(self->index);
    self->live = NULL;
    self->ended = NULL;
    self->index = NULL;
    self->live_cap = self->live_used = 0;
    self->ended_cap = self->ended_head = self->ended_tail = 0;
    self->index_cap = self->index_used = 0;
    self->indexed_to = self->ended_shift = self->purge_mark = 0;
    for (Py_ssize_t i = 0; i < live_cap; i++) { /* releasing may run code: detached first */
        live_release(&live[i]);
    }
    for (Py_ssize_t i = head; i < tail; i++) {
        ended_release(&ended[i]);
    }
    PyMem_Free(live);
    PyMem_Free(ended);
}

/* A table of `n` entries of `size` bytes, zeroed by writing: a fresh page read
 * first maps the zero page, and the write after it flushes every CPU's TLB
 * (see docs/sampler.md). */
static void *
zeroed(Py_ssize_t n, size_t size)
{
    void *p = PyMem_Malloc((size_t)n * size);
    if (p != NULL) {
        memset(p, 0, (size_t)n * size);
    }
    return p;
}

static int
live_grow(RecorderObject *self)
{
    Py_ssize_t cap = self->live_cap ? self->live_cap * 2 : 64;
    Root *fresh = zeroed(cap, sizeof(Root));
    if (fresh == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < self->live_cap; i++) {
        Root *r = &self->live[i];
        if (r->span != NULL) {
            size_t j = (size_t)tid_hash(r->tid) & (size_t)(cap - 1);
            while (fresh[j].span != NULL) {
                j = (j + 1) & (size_t)(cap - 1);
            }
            fresh[j] = *r;
        }
    }
    PyMem_Free(self->live);
    self->live = fresh;
    self->live_cap = cap;
    return 0;
}

/* Empty slot `i` of the running roots, moving later entries of its probe run
 * back (linear probing's deletion without tombstones). */
static void
live_delete(RecorderObject *self, size_t i)
{
    size_t mask = (size_t)(self->live_cap - 1);
    for (size_t j = (i + 1) & mask; self->live[j].span != NULL; j = (j + 1) & mask) {
        size_t home = (size_t)tid_hash(self->live[j].tid) & mask;
        /* entry j may move to i only if its home is not in (i, j] cyclically */
        int stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            self->live[i] = self->live[j];
            i = j;
        }
    }
    memset(&self->live[i], 0, sizeof(Root));
    self->live_used--;
}

/* Reading a span may run Python code (which may start or end spans): every
 * read comes before the tables are touched, and no pointer into them is held
 * across one. */
static int
root_add(RecorderObject *self, PyObject *span)
{
    Root r = {0};
    PyObject *ctx = span_attr(span, A_CONTEXT);
    if (ctx == NULL) {
        return -1;
    }
    PyObject *trace_id = ctx_item(ctx, 0);
    int rc = trace_id != NULL && trace_id_read(trace_id, &r.tid) == 0 &&
                     ctx_id(ctx, 1, &r.span_id) == 0 &&
                     span_time(span, A_START, &r.start) == 0 &&
                     (r.type = trace_type(self, span)) != NULL
                 ? 0
                 : -1;
    Py_XDECREF(trace_id);
    Py_DECREF(ctx);
    if (rc < 0) {
        return -1;
    }
    if (self->live_used + self->ended_tail - self->ended_head >= self->max_roots) {
        roots_forget_all(self); /* bounded memory beats complete roots */
    }
    if ((self->live_used + 1) * 2 > self->live_cap && live_grow(self) < 0) {
        return -1;
    }
    r.span = Py_NewRef(span);
    size_t mask = (size_t)(self->live_cap - 1), j = (size_t)tid_hash(r.tid) & mask;
    while (self->live[j].span != NULL) {
        j = (j + 1) & mask;
    }
    self->live[j] = r;
    self->live_used++;
    return 0;
}

/* Room for one more ended root at the log's tail. */
static int
ended_reserve(RecorderObject *self)
{
    if (self->ended_tail < self->ended_cap) {
        return 0;
    }
    Py_ssize_t n = self->ended_tail - self->ended_head;
    if (self->ended_head > 0 && n <= self->ended_cap / 2) { /* slide down: no growth */
        memmove(self->ended, self->ended + self->ended_head, (size_t)n * sizeof(Ended));
        self->ended_shift += self->ended_head;
        self->ended_head = 0;
        self->ended_tail = n;
        return 0;
    }
    Py_ssize_t cap = self->ended_cap ? self->ended_cap * 2 : 256;
    Ended *grown = PyMem_Realloc(self->ended, (size_t)cap * sizeof(Ended));
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->ended = grown;
    self->ended_cap = cap;
    return 0;
}

/* Every 256 ended roots, if `grace_ns` passed since the last purge: those
 * that ended before it go (from the log's front: it is in end order). */
static void
ended_purge(RecorderObject *self)
{
    if (++self->roots_ended < 256) {
        return;
    }
    self->roots_ended = 0;
    long long now = monotonic_ns();
    if (now - self->purged_at < self->grace_ns) {
        return;
    }
    /* the log is in end order: those that ended before the last purge lead it */
    while (self->ended_head < self->ended_tail &&
           self->ended_head + self->ended_shift < self->purge_mark) {
        Ended gone = self->ended[self->ended_head++]; /* out of the log, then released */
        ended_release(&gone);
    }
    self->purge_mark = self->ended_tail + self->ended_shift;
    self->purged_at = now;
}

/* The running root ends: from the table to the log. *found gets a copy of
 * its entry (its start and type, for the row), or stays zeroed. */
static int
root_end(RecorderObject *self, PyObject *name, PyObject *trace_id, unsigned long long span_id,
         Ended *found)
{
    TraceId tid;
    if (self->live_used == 0 || trace_id_read(trace_id, &tid) < 0) {
        PyErr_Clear(); /* not a trace id root_add() took: never recorded */
        ended_purge(self);
        return 0;
    }
    size_t mask = (size_t)(self->live_cap - 1);
    for (size_t j = (size_t)tid_hash(tid) & mask; self->live[j].span != NULL;
         j = (j + 1) & mask) {
        Root *r = &self->live[j];
        if (r->span_id != span_id || !tid_equal(r->tid, tid)) {
            continue;
        }
        if (ended_reserve(self) < 0) {
            return -1;
        }
        Ended *e = &self->ended[self->ended_tail++];
        *e = (Ended){.tid = r->tid,
                     .name = Py_NewRef(name),
                     .type = r->type,
                     .span_id = r->span_id,
                     .start = r->start};
        /* never kept ended: the garbage collector would walk the span */
        PyObject *span = r->span;
        r->span = NULL;
        live_delete(self, j);
        *found = *e; /* a copy (start and type only are used): the decref may run code */
        Py_DECREF(span);
        break;
    }
    ended_purge(self);
    return 0;
}

/* The log's entries not yet in the index go in (rebuilt when purged entries
 * would make up most of it). On spanprof's thread, from local_root(). */
static int
index_update(RecorderObject *self)
{
    Py_ssize_t first = self->ended_head + self->ended_shift, end = self->ended_tail + self->ended_shift;
    Py_ssize_t live = end - first;
    if (self->index_cap == 0 || (self->index_used + (end - self->indexed_to)) * 2 > self->index_cap) {
        Py_ssize_t cap = 256;
        while (cap < 4 * live) {
            cap *= 2;
        }
        IndexEntry *fresh = zeroed(cap, sizeof(IndexEntry));
        if (fresh == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        PyMem_Free(self->index);
        self->index = fresh;
        self->index_cap = cap;
        self->index_used = 0;
        self->indexed_to = first;
    }
    if (self->indexed_to < first) {
        self->indexed_to = first;
    }
    size_t mask = (size_t)(self->index_cap - 1);
    for (Py_ssize_t seq = self->indexed_to; seq < end; seq++) {
        Ended *e = &self->ended[seq - self->ended_shift];
        Py_hash_t hash = tid_hash(e->tid);
        size_t j = (size_t)hash & mask;
        while (self->index[j].seq_plus_1 != 0) {
            j = (j + 1) & mask;
        }
        self->index[j] = (IndexEntry){.hash = hash, .seq_plus_1 = seq + 1};
        self->index_used++;
    }
    self->indexed_to = end;
    return 0;
}

/* ---- rows for the store --------------------------------------------------- */

/* Let go of the attribute references from `at` on. */
static void
attrs_truncate(RecorderObject *self, Py_ssize_t at)
{
    while (self->attrs_used > at) {
        Py_DECREF(self->attrs[--self->attrs_used]);
    }
}

static void
row_release(Row *w)
{
    Py_CLEAR(w->trace_id);
    Py_CLEAR(w->name);
}

static void
rows_clear(RecorderObject *self)
{
    for (Py_ssize_t i = 0; i < self->rows_used; i++) {
        row_release(&self->rows[i]);
    }
    self->rows_used = 0;
    attrs_truncate(self, 0);
}

/* The finished span's attributes, appended to `attrs` as references to their
 * keys and values (immutable: strings, numbers, tuples of them). Keeping the
 * span's dict instead (one reference) cost the application ~0.4 µs per span:
 * dicts kept alive are dicts the SDK cannot reuse. -1 with an exception. */
static int
attrs_add(RecorderObject *self, PyObject *span, Row *w)
{
    PyObject *attrs = span_attr(span, A_ATTRIBUTES);
    if (attrs == NULL || attrs == Py_None) {
        w->attrs_at = self->attrs_used;
        w->n_attrs = 0;
        Py_XDECREF(attrs);
        return attrs == NULL ? -1 : 0;
    }
    /* BoundedAttributes keeps a dict; anything else mapping-like is read as one */
    PyObject *dict = span_attr(attrs, A_DICT);
    if (dict == NULL && !PyErr_ExceptionMatches(PyExc_AttributeError)) {
        Py_DECREF(attrs);
        return -1;
    }
    if (dict == NULL || !PyDict_Check(dict)) {
        PyErr_Clear();
        Py_XSETREF(dict, PyDict_New());
        if (dict != NULL && PyDict_Merge(dict, attrs, 1) < 0) {
            Py_CLEAR(dict);
        }
    }
    Py_DECREF(attrs);
    if (dict == NULL) {
        return -1;
    }
    Py_ssize_t n = PyDict_GET_SIZE(dict), need = self->attrs_used + 2 * n;
    if (need > self->attrs_cap) {
        Py_ssize_t cap = self->attrs_cap ? self->attrs_cap : 512;
        while (cap < need) {
            cap *= 2;
        }
        PyObject **grown = PyMem_Realloc(self->attrs, (size_t)cap * sizeof(PyObject *));
        if (grown == NULL) {
            Py_DECREF(dict);
            PyErr_NoMemory();
            return -1;
        }
        self->attrs = grown;
        self->attrs_cap = cap;
    }
    w->attrs_at = self->attrs_used;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(dict, &pos, &key, &value) && self->attrs_used < need) {
        self->attrs[self->attrs_used++] = Py_NewRef(key);
        self->attrs[self->attrs_used++] = Py_NewRef(value);
    }
    w->n_attrs = (self->attrs_used - w->attrs_at) / 2;
    Py_DECREF(dict);
    return 0;
}

/* `known`: the root's entry (type NULL: none), whose start and type need not
 * be read again. */
static int
row_add(RecorderObject *self, PyObject *span, PyObject *name, PyObject *trace_id,
        unsigned long long span_id, unsigned long long parent, const Ended *known)
{
    if (self->rows_used >= self->max_rows) {
        self->dropped++;
        return 0;
    }
    Row w = {.span_id = span_id, .parent = parent};
    PyObject *status = NULL, *code = NULL;
    int have = known->type != NULL;
    if (have) {
        w.start = known->start;
        w.kind = known->type;
    }
    int rc = (have || span_time(span, A_START, &w.start) == 0) &&
                     span_time(span, A_END, &w.end) == 0 &&
                     (have || (w.kind = trace_type(self, span)) != NULL) &&
                     (status = span_attr(span, A_STATUS)) != NULL &&
                     (code = span_attr(status, A_STATUS_CODE)) != NULL &&
                     (w.status = enum_name(&self->status_names, code)) != NULL
                 ? 0
                 : -1;
    Py_XDECREF(status);
    Py_XDECREF(code);
    if (rc < 0 || attrs_add(self, span, &w) < 0) {
        return -1;
    }
    /* room only now: reading the span may have run code that added rows */
    if (self->rows_used >= self->max_rows) {
        attrs_truncate(self, w.attrs_at);
        self->dropped++;
        return 0;
    }
    if (self->rows_used == self->rows_cap) {
        Py_ssize_t cap = self->rows_cap ? self->rows_cap * 2 : 256;
        Row *grown = PyMem_Realloc(self->rows, (size_t)cap * sizeof(Row));
        if (grown == NULL) {
            attrs_truncate(self, w.attrs_at);
            PyErr_NoMemory();
            return -1;
        }
        self->rows = grown;
        self->rows_cap = cap;
    }
    w.name = Py_NewRef(name);
    w.trace_id = Py_NewRef(trace_id);
    self->rows[self->rows_used++] = w;
    return 0;
}

/* ---- the type ---------------------------------------------------------------- */

static int
Recorder_init(RecorderObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"trace_types", "status_names", "roots", "rows",
                             "max_roots", "max_rows", "grace_ns", NULL};
    PyObject *trace_types = NULL, *status_names = NULL;
    int roots = 1, rows = 1;
    Py_ssize_t max_roots = 200000, max_rows = 65536;
    long long grace_ns = 2000000000LL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$O!O!ppnnL", kwlist, &PyDict_Type,
                                     &trace_types, &PyDict_Type, &status_names, &roots, &rows,
                                     &max_roots, &max_rows, &grace_ns) ||
        check_tuple_context() < 0) {
        return -1;
    }
    if (trace_types == NULL || status_names == NULL) {
        PyErr_SetString(PyExc_TypeError, "trace_types and status_names are required");
        return -1;
    }
    /* nothing recorded refers to the old names once forgotten */
    roots_forget_all(self);
    rows_clear(self);
    if (enum_names_set(&self->trace_types, trace_types) < 0 ||
        enum_names_set(&self->status_names, status_names) < 0) {
        enum_names_clear(&self->trace_types); /* not ready: records nothing */
        enum_names_clear(&self->status_names);
        return -1;
    }
    self->track_roots = roots;
    self->keep_rows = rows;
    self->max_roots = max_roots;
    self->max_rows = max_rows;
    self->grace_ns = grace_ns;
    self->purged_at = monotonic_ns();
    self->enabled = 1;
    return 0;
}

static int
Recorder_traverse(RecorderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->trace_types.dict);
    Py_VISIT(self->status_names.dict);
    for (Py_ssize_t i = 0; i < self->live_cap; i++) {
        Py_VISIT(self->live[i].span); /* a running span refers back to its processors */
    }
    /* rows hold names, ids and attribute keys and values: immutable, no cycles */
    return 0;
}

static int
Recorder_clear(RecorderObject *self)
{
    enum_names_clear(&self->trace_types);
    enum_names_clear(&self->status_names);
    roots_forget_all(self);
    rows_clear(self);
    return 0;
}

static void
Recorder_dealloc(RecorderObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Recorder_clear(self);
    PyMem_Free(self->rows);
    PyMem_Free(self->attrs);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyObject *
Recorder_on_start(RecorderObject *self, PyObject *const *args, Py_ssize_t nargs,
                  PyObject *kwnames)
{
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "on_start(span, parent_context=None)");
        return NULL;
    }
    if (!self->track_roots || !self->enabled || self->trace_types.dict == NULL) {
        Py_RETURN_NONE;
    }
    unsigned long long parent;
    int root = local_parent(args[0], &parent);
    if (root > 0) {
        root_add(self, args[0]);
    }
    return swallow(self);
}

static PyObject *
Recorder_on_ending(RecorderObject *self, PyObject *span)
{
    Py_RETURN_NONE;
}

static PyObject *
Recorder_on_end(RecorderObject *self, PyObject *span)
{
    if (!self->enabled || self->trace_types.dict == NULL) {
        Py_RETURN_NONE;
    }
    unsigned long long parent, span_id;
    int root = local_parent(span, &parent);
    if (root < 0 || (!root && !self->keep_rows)) {
        return swallow(self);
    }
    PyObject *ctx = span_attr(span, A_CONTEXT);
    PyObject *trace_id = ctx ? ctx_item(ctx, 0) : NULL;
    PyObject *name = trace_id ? span_attr(span, A_NAME) : NULL;
    Ended known = {0};
    if (name != NULL && ctx_id(ctx, 1, &span_id) == 0 &&
        (!root || !self->track_roots || root_end(self, name, trace_id, span_id, &known) == 0) &&
        self->keep_rows) {
        row_add(self, span, name, trace_id, span_id, parent, &known);
    }
    Py_XDECREF(ctx);
    Py_XDECREF(trace_id);
    Py_XDECREF(name);
    return swallow(self);
}


static PyObject *
Recorder_local_root(RecorderObject *self, PyObject *span)
{
    if (self->trace_types.dict == NULL) {
        Py_RETURN_NONE;
    }
    unsigned long long parent;
    int root = local_parent(span, &parent);
    if (root < 0) {
        return NULL;
    }
    PyObject *ctx = span_attr(span, A_CONTEXT);
    if (ctx == NULL) {
        return NULL;
    }
    unsigned long long span_id;
    if (root) { /* a local root is its own */
        PyObject *name = ctx_id(ctx, 1, &span_id) == 0 ? span_attr(span, A_NAME) : NULL;
        PyObject *type = name ? trace_type(self, span) : NULL;
        PyObject *result = type ? Py_BuildValue("(KOOO)", span_id, name, type, span) : NULL;
        Py_XDECREF(name);
        Py_DECREF(ctx);
        return result;
    }
    PyObject *trace_id = ctx_item(ctx, 0);
    Py_DECREF(ctx);
    if (trace_id == NULL) {
        return NULL;
    }
    TraceId tid;
    int rc = trace_id_read(trace_id, &tid);
    Py_DECREF(trace_id);
    if (rc < 0) {
        PyErr_Clear(); /* not an SDK span: no root recorded for it */
        Py_RETURN_NONE;
    }
    long long start;
    if (span_time(span, A_START, &start) < 0) {
        return NULL;
    }
    /* the latest root of the trace that started no later than the span */
    Root *best = NULL;
    Ended *best_ended = NULL;
    long long best_start = -1;
    Py_hash_t hash = tid_hash(tid);
    size_t mask = (size_t)(self->live_cap - 1);
    for (size_t j = (size_t)hash & mask; self->live_cap && self->live[j].span != NULL;
         j = (j + 1) & mask) {
        Root *r = &self->live[j];
        if (r->start <= start && r->start > best_start && tid_equal(r->tid, tid)) {
            best = r;
            best_start = r->start;
        }
    }
    if (self->ended_tail > self->ended_head && index_update(self) < 0) {
        return NULL;
    }
    Py_ssize_t first = self->ended_head + self->ended_shift;
    mask = (size_t)(self->index_cap - 1);
    for (size_t j = (size_t)hash & mask;
         self->index_cap && self->index[j].seq_plus_1 != 0; j = (j + 1) & mask) {
        Py_ssize_t seq = self->index[j].seq_plus_1 - 1;
        if (self->index[j].hash != hash || seq < first) {
            continue; /* another trace, or purged */
        }
        Ended *e = &self->ended[seq - self->ended_shift];
        if (e->start > start || e->start <= best_start) {
            continue;
        }
        if (tid_equal(e->tid, tid)) {
            best_ended = e;
            best_start = e->start;
        }
    }
    /* references taken before anything allocates (a collection may run code
     * that ends spans and moves the tables) */
    if (best_ended != NULL && best_ended->start == best_start) {
        return Py_BuildValue("(KNNO)", best_ended->span_id, Py_NewRef(best_ended->name),
                             Py_NewRef(best_ended->type), Py_None);
    }
    if (best == NULL) {
        Py_RETURN_NONE;
    }
    unsigned long long id = best->span_id;
    PyObject *type = Py_NewRef(best->type), *live = Py_NewRef(best->span);
    PyObject *name = span_attr(live, A_NAME); /* running: may be renamed */
    if (name == NULL) {
        Py_DECREF(type);
        Py_DECREF(live);
        return NULL;
    }
    return Py_BuildValue("(KNNN)", id, name, type, live);
}

/* (trace_id, span_id, parent, name, kind, start, end, status, attributes) for
 * the store; steals `attrs`. Built item by item (Py_BuildValue parses its
 * format every row), and left out of the garbage collector's lists: nothing
 * in it can refer back to it, so it is never part of a cycle, and the
 * collector need not walk thousands of them under the GIL. */
static PyObject *
row_tuple(const Row *w, PyObject *attrs)
{
    PyObject *row = PyTuple_New(9);
    if (row == NULL) {
        Py_DECREF(attrs);
        return NULL;
    }
    PyObject *items[9] = {
        Py_NewRef(w->trace_id),
        PyLong_FromUnsignedLongLong(w->span_id),
        PyLong_FromUnsignedLongLong(w->parent),
        Py_NewRef(w->name),
        Py_NewRef(w->kind),
        PyLong_FromLongLong(w->start),
        PyLong_FromLongLong(w->end ? w->end : w->start),
        Py_NewRef(w->status),
        attrs,
    };
    int ok = 1;
    for (int i = 0; i < 9; i++) {
        ok &= items[i] != NULL;
        PyTuple_SET_ITEM(row, i, items[i]); /* a NULL item is fine for the decref below */
    }
    if (!ok) {
        Py_DECREF(row);
        return NULL;
    }
    PyObject_GC_UnTrack(row);
    return row;
}

static PyObject *
Recorder_take_rows(RecorderObject *self, PyObject *Py_UNUSED(ignored))
{
    /* Detached first: building the tuples may run the garbage collector, whose
     * finalizers may end spans; those go to fresh buffers. */
    Row *rows = self->rows;
    PyObject **attrs = self->attrs;
    Py_ssize_t n = self->rows_used, rows_cap = self->rows_cap, n_attrs = self->attrs_used,
               attrs_cap = self->attrs_cap;
    self->rows = NULL;
    self->attrs = NULL;
    self->rows_used = self->rows_cap = self->attrs_used = self->attrs_cap = 0;
    PyObject *list = PyList_New(n);
    if (list == NULL) {
        self->dropped += n; /* no memory: these rows are lost, and counted */
    }
    for (Py_ssize_t i = 0; list != NULL && i < n; i++) {
        Row *w = &rows[i];
        PyObject *d = w->n_attrs ? PyDict_New() : Py_NewRef(Py_None);
        for (Py_ssize_t k = 0; d != NULL && k < w->n_attrs; k++) {
            PyObject **pair = &attrs[w->attrs_at + 2 * k];
            if (PyDict_SetItem(d, pair[0], pair[1]) < 0) {
                Py_CLEAR(d);
            }
        }
        PyObject *row = d == NULL ? NULL : row_tuple(w, d);
        if (row == NULL) {
            Py_CLEAR(list);
            self->dropped += n; /* no memory: these rows are lost, and counted */
            break;
        }
        PyList_SET_ITEM(list, i, row);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        row_release(&rows[i]);
    }
    for (Py_ssize_t i = 0; i < n_attrs; i++) {
        Py_DECREF(attrs[i]);
    }
    if (self->rows == NULL && self->attrs == NULL) { /* reused: their memory is warm */
        self->rows = rows;
        self->rows_cap = rows_cap;
        self->attrs = attrs;
        self->attrs_cap = attrs_cap;
    }
    else {
        PyMem_Free(rows);
        PyMem_Free(attrs);
    }
    return list;
}

static PyObject *
Recorder_shutdown(RecorderObject *self, PyObject *Py_UNUSED(ignored))
{
    self->enabled = 0;
    roots_forget_all(self); /* rows stay, for a last take_rows() */
    Py_RETURN_NONE;
}

static PyObject *
Recorder_force_flush(RecorderObject *self, PyObject *args, PyObject *kwds)
{
    Py_RETURN_TRUE;
}

static PyMethodDef Recorder_methods[] = {
    {"on_start", (PyCFunction)(void (*)(void))Recorder_on_start,
     METH_FASTCALL | METH_KEYWORDS, "on_start(span, parent_context=None)"},
    {"_on_ending", (PyCFunction)Recorder_on_ending, METH_O, "_on_ending(span): nothing"},
    {"on_end", (PyCFunction)Recorder_on_end, METH_O, "on_end(span)"},
    {"local_root", (PyCFunction)Recorder_local_root, METH_O,
     "local_root(span) -> (span id, name, trace type, the root span while it runs) or None"},
    {"take_rows", (PyCFunction)Recorder_take_rows, METH_NOARGS,
     "the spans ended since the last call: (trace id, span id, local parent id or 0, name, "
     "kind, start, end, status, attribute dict or None)"},
    {"shutdown", (PyCFunction)Recorder_shutdown, METH_NOARGS, "stop recording"},
    {"force_flush", (PyCFunction)(void (*)(void))Recorder_force_flush,
     METH_VARARGS | METH_KEYWORDS, "force_flush(timeout_millis=30000) -> True"},
    {NULL, NULL, 0, NULL},
};

enum { F_ROOTS, F_DROPPED, F_ENABLED, F_MAX_ROOTS, F_PENDING, F_ERRORS, F_GRACE };

static PyObject *
Recorder_get(RecorderObject *self, void *which)
{
    switch ((int)(Py_intptr_t)which) {
    case F_ROOTS:
        return PyLong_FromSsize_t(self->live_used + self->ended_tail - self->ended_head);
    case F_DROPPED:
        return PyLong_FromSsize_t(self->dropped);
    case F_ENABLED:
        return PyBool_FromLong(self->enabled);
    case F_MAX_ROOTS:
        return PyLong_FromSsize_t(self->max_roots);
    case F_PENDING:
        return PyLong_FromSsize_t(self->rows_used);
    case F_ERRORS:
        return PyLong_FromSsize_t(self->errors);
    default:
        return PyLong_FromLongLong(self->grace_ns);
    }
}

static int
Recorder_set(RecorderObject *self, PyObject *value, void *which)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete");
        return -1;
    }
    long long v = PyLong_AsLongLong(value);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    switch ((int)(Py_intptr_t)which) {
    case F_ENABLED:
        self->enabled = v != 0;
        break;
    case F_MAX_ROOTS:
        self->max_roots = (Py_ssize_t)v;
        break;
    default:
        self->grace_ns = v;
    }
    return 0;
}

#define FIELD(name, set, doc, which) \
    {name, (getter)Recorder_get, set, doc, (void *)(Py_intptr_t)(which)}

static PyGetSetDef Recorder_getset[] = {
    FIELD("roots", NULL, "local roots tracked (running, or ended in their grace period)",
          F_ROOTS),
    FIELD("dropped", NULL, "rows not kept (max_rows reached)", F_DROPPED),
    FIELD("enabled", (setter)Recorder_set, "recording", F_ENABLED),
    FIELD("max_roots", (setter)Recorder_set,
          "local roots tracked at once; beyond, they are all forgotten", F_MAX_ROOTS),
    FIELD("pending", NULL, "rows waiting to be taken", F_PENDING),
    FIELD("errors", NULL, "spans not recorded: an error reading them", F_ERRORS),
    FIELD("grace_ns", (setter)Recorder_set, "how long an ended root stays known, at least",
          F_GRACE),
    {NULL, NULL, NULL, NULL, NULL},
};

/* No Py_tp_new: object's own, unlike PyType_GenericNew, sets up the inline
 * attribute values of a Python subclass (SpanprofProcessor has a __dict__
 * through SpanProcessor). Without them 3.12 never specializes the SDK's
 * `sp.on_start` / `sp.on_end` method loads on our instances: three generic
 * attribute lookups per span. */
static PyType_Slot Recorder_slots[] = {
    {Py_tp_doc, "SpanRecorder(*, trace_types, status_names, roots=True, rows=True, "
                "max_roots=200000, max_rows=65536, grace_ns=2000000000): spanprof's span "
                "processor work in C"},
    {Py_tp_init, Recorder_init},
    {Py_tp_dealloc, Recorder_dealloc},
    {Py_tp_traverse, Recorder_traverse},
    {Py_tp_clear, Recorder_clear},
    {Py_tp_methods, Recorder_methods},
    {Py_tp_getset, Recorder_getset},
    {0, NULL},
};

static PyType_Spec Recorder_spec = {
    .name = "spanprof._spans.SpanRecorder",
    .basicsize = sizeof(RecorderObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Recorder_slots,
};

static struct PyModuleDef spans_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "spanprof._spans",
    .m_doc = "spanprof's OpenTelemetry span processor work, in C.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__spans(void)
{
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&s_attr[A_PARENT], "_parent"},
        {&s_attr[A_CONTEXT], "_context"},
        {&s_attr[A_NAME], "_name"},
        {&s_attr[A_KIND], "_kind"},
        {&s_attr[A_START], "_start_time"},
        {&s_attr[A_END], "_end_time"},
        {&s_attr[A_STATUS], "_status"},
        {&s_attr[A_STATUS_CODE], "_status_code"},
        {&s_attr[A_ATTRIBUTES], "_attributes"},
        {&s_attr[A_DICT], "_dict"},
        {&s_trace_id, "trace_id"},
        {&s_span_id, "span_id"},
        {&s_is_remote, "is_remote"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*names[i].slot == NULL &&
            (*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL) {
            return NULL;
        }
    }
    PyObject *m = PyModule_Create(&spans_module);
    if (m == NULL) {
        return NULL;
    }
    PyObject *type = PyType_FromSpec(&Recorder_spec);
    if (type == NULL || PyModule_AddObject(m, "SpanRecorder", type) < 0) {
        Py_XDECREF(type);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
