/*
 * spanprof._spans: the base of spanprof's OpenTelemetry span processors, in C.
 *
 * A span processor runs on the application's span hot path: the SDK calls
 * on_start, _on_ending and on_end of every processor for every span. As
 * Python methods, spanprof's two processors (local roots for the linker,
 * finished spans for the store) added ~2 µs to a child span and ~4.7 µs to a
 * local root (~10 µs bare). This type does their per-span work in C:
 *
 * - roots (a dict, trace id -> tuple of that trace's local roots): a local
 *   root (no parent, or a remote one) is added at start as the span; at end
 *   it is replaced by a record (span id, start, name, trace type), never kept
 *   as a span (the garbage collector would walk it), and (trace id, span id)
 *   goes to `ending` (take_ending()) for the subclass's `_purge`, called
 *   every 256 ends;
 * - rows (a list, taken by take_rows()): per finished span, a tuple of
 *   primitives for the store (ids, local parent, name, kind name, times,
 *   status name, attribute items).
 *
 * The lookups and the purge stay in Python (spanprof.linker,
 * spanprof.exporters.store). Public C API only.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct {
    PyObject_HEAD
    PyObject *roots;       /* dict, or NULL: no root tracking */
    PyObject *ending;      /* list of (trace id, span id) of roots ended since the purge */
    PyObject *trace_types; /* dict: SpanKind -> trace type name */
    PyObject *status_names; /* dict: StatusCode -> name (rows) */
    PyObject *rows;        /* list, or NULL: no rows */
    Py_ssize_t max_rows;
    Py_ssize_t dropped; /* rows not kept: max_rows reached */
    Py_ssize_t count;   /* roots tracked */
    Py_ssize_t max_roots; /* tracked at once; beyond, they are forgotten */
    int enabled;
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

static PyObject *s_parent, *s_context, *s_name, *s_kind, *s_start, *s_end, *s_status,
    *s_status_code, *s_attributes, *s_dict, *s_trace_id, *s_span_id, *s_is_remote, *s_purge,
    *s_forget_all;

static int
Recorder_init(RecorderObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"trace_types", "roots", "ending", "max_roots",
                             "rows", "status_names", "max_rows", NULL};
    PyObject *roots = Py_None, *ending = Py_None, *trace_types = NULL, *rows = Py_None,
             *status_names = Py_None;
    Py_ssize_t max_rows = 65536, max_roots = 200000;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$O!OOnOOn", kwlist, &PyDict_Type,
                                     &trace_types, &roots, &ending, &max_roots, &rows,
                                     &status_names, &max_rows) ||
        check_tuple_context() < 0) {
        return -1;
    }
    if (trace_types == NULL) {
        PyErr_SetString(PyExc_TypeError, "trace_types is required");
        return -1;
    }
    if (roots != Py_None && (!PyDict_CheckExact(roots) || !PyList_CheckExact(ending))) {
        PyErr_SetString(PyExc_TypeError, "roots needs a dict, ending a list");
        return -1;
    }
    if (rows != Py_None && (!PyList_CheckExact(rows) || !PyDict_Check(status_names))) {
        PyErr_SetString(PyExc_TypeError, "rows needs a list, status_names a dict");
        return -1;
    }
    Py_XSETREF(self->roots, roots == Py_None ? NULL : Py_NewRef(roots));
    Py_XSETREF(self->ending, roots == Py_None ? NULL : Py_NewRef(ending));
    Py_XSETREF(self->trace_types, Py_NewRef(trace_types));
    Py_XSETREF(self->status_names, rows == Py_None ? NULL : Py_NewRef(status_names));
    Py_XSETREF(self->rows, rows == Py_None ? NULL : Py_NewRef(rows));
    self->max_rows = max_rows;
    self->max_roots = max_roots;
    self->enabled = 1;
    return 0;
}

static int
Recorder_traverse(RecorderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->roots);
    Py_VISIT(self->ending);
    Py_VISIT(self->trace_types);
    Py_VISIT(self->status_names);
    Py_VISIT(self->rows);
    return 0;
}

static int
Recorder_clear(RecorderObject *self)
{
    Py_CLEAR(self->roots);
    Py_CLEAR(self->ending);
    Py_CLEAR(self->trace_types);
    Py_CLEAR(self->status_names);
    Py_CLEAR(self->rows);
    return 0;
}

static void
Recorder_dealloc(RecorderObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Recorder_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

/* Item `i` (0 trace id, 1 span id, 2 is_remote) of a SpanContext: new reference. */
static PyObject *
ctx_item(RecorderObject *self, PyObject *ctx, int i)
{
    if (g_tuple_context == 1 && PyTuple_Check(ctx) && PyTuple_GET_SIZE(ctx) > i) {
        return Py_NewRef(PyTuple_GET_ITEM(ctx, i));
    }
    return PyObject_GetAttr(ctx, i == 0 ? s_trace_id : i == 1 ? s_span_id : s_is_remote);
}

/* 1: a local root (no parent, or a remote one); 0: not; -1: error.
 * *parent_out gets the parent (new reference, maybe None). */
static int
is_local_root(RecorderObject *self, PyObject *span, PyObject **parent_out)
{
    PyObject *parent = PyObject_GetAttr(span, s_parent);
    if (parent == NULL) {
        return -1;
    }
    int root = 1;
    if (parent != Py_None) {
        PyObject *remote = ctx_item(self, parent, 2);
        root = remote == NULL ? -1 : PyObject_IsTrue(remote);
        Py_XDECREF(remote);
    }
    if (parent_out != NULL) {
        *parent_out = parent;
    }
    else {
        Py_DECREF(parent);
    }
    return root;
}

static PyObject *
Recorder_on_start(RecorderObject *self, PyObject *const *args, Py_ssize_t nargs,
                  PyObject *kwnames)
{
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "on_start(span, parent_context=None)");
        return NULL;
    }
    if (self->roots == NULL || !self->enabled) {
        Py_RETURN_NONE;
    }
    PyObject *span = args[0];
    int root = is_local_root(self, span, NULL);
    if (root <= 0) {
        return root < 0 ? NULL : Py_NewRef(Py_None);
    }
    if (self->count >= self->max_roots) { /* bounded memory beats complete local roots */
        PyObject *r = PyObject_CallMethodNoArgs((PyObject *)self, s_forget_all);
        if (r == NULL) {
            return NULL;
        }
        Py_DECREF(r);
    }
    PyObject *ctx = PyObject_GetAttr(span, s_context);
    PyObject *trace_id = ctx ? ctx_item(self, ctx, 0) : NULL;
    Py_XDECREF(ctx);
    if (trace_id == NULL) {
        return NULL;
    }
    PyObject *old = PyDict_GetItemWithError(self->roots, trace_id); /* borrowed */
    PyObject *now = NULL;
    if (old == NULL && !PyErr_Occurred()) {
        now = PyTuple_Pack(1, span);
    }
    else if (old != NULL && PyTuple_CheckExact(old)) {
        Py_ssize_t n = PyTuple_GET_SIZE(old);
        now = PyTuple_New(n + 1);
        for (Py_ssize_t i = 0; now != NULL && i < n; i++) {
            PyTuple_SET_ITEM(now, i, Py_NewRef(PyTuple_GET_ITEM(old, i)));
        }
        if (now != NULL) {
            PyTuple_SET_ITEM(now, n, Py_NewRef(span));
        }
    }
    int rc = now != NULL ? PyDict_SetItem(self->roots, trace_id, now) : -1;
    Py_XDECREF(now);
    Py_DECREF(trace_id);
    if (rc < 0) {
        return NULL;
    }
    self->count++;
    Py_RETURN_NONE;
}

static PyObject *
Recorder_on_ending(RecorderObject *self, PyObject *span)
{
    Py_RETURN_NONE;
}

/* The name of an enum member (borrowed) in `names`, by identity: an Enum's
 * hash is a Python method. Rows and records hold names, not enum members:
 * a tuple of strings and numbers is left alone by the garbage collector, one
 * holding an enum member (an object with a __dict__) is walked as long as
 * it lives. */
static PyObject *
enum_name(PyObject *names, PyObject *member)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(names, &pos, &key, &value)) {
        if (key == member) {
            return value;
        }
    }
    value = PyDict_GetItemWithError(names, member);
    if (value == NULL && !PyErr_Occurred()) {
        PyErr_Format(PyExc_KeyError, "%R", member);
    }
    return value;
}

/* A finished span as a row of primitives for the store. */
static int
add_row(RecorderObject *self, PyObject *span, PyObject *trace_id, PyObject *span_id,
        PyObject *parent)
{
    if (PyList_GET_SIZE(self->rows) >= self->max_rows) {
        self->dropped++;
        return 0;
    }
    PyObject *local_parent = NULL, *name = NULL, *kind = NULL, *start = NULL, *end = NULL,
             *status = NULL, *code = NULL, *attrs = NULL, *items = NULL, *row = NULL;
    int rc = -1;
    if (parent == Py_None) {
        local_parent = PyLong_FromLong(0);
    }
    else {
        PyObject *remote = ctx_item(self, parent, 2);
        int is_remote = remote == NULL ? -1 : PyObject_IsTrue(remote);
        Py_XDECREF(remote);
        if (is_remote < 0) {
            goto done;
        }
        local_parent = is_remote ? PyLong_FromLong(0) : ctx_item(self, parent, 1);
    }
    if (local_parent == NULL || (name = PyObject_GetAttr(span, s_name)) == NULL ||
        (kind = PyObject_GetAttr(span, s_kind)) == NULL ||
        (start = PyObject_GetAttr(span, s_start)) == NULL ||
        (end = PyObject_GetAttr(span, s_end)) == NULL ||
        (status = PyObject_GetAttr(span, s_status)) == NULL ||
        (code = PyObject_GetAttr(status, s_status_code)) == NULL ||
        (attrs = PyObject_GetAttr(span, s_attributes)) == NULL) {
        goto done;
    }
    if (attrs == Py_None) {
        items = PyTuple_New(0);
    }
    else {
        /* BoundedAttributes keeps a dict: its items without Python-level iteration */
        PyObject *inner = PyObject_GetAttr(attrs, s_dict);
        if (inner == NULL) {
            PyErr_Clear();
            inner = Py_NewRef(attrs);
        }
        PyObject *list = PyDict_Check(inner) ? PyDict_Items(inner) : PyMapping_Items(inner);
        Py_DECREF(inner);
        items = list ? PyList_AsTuple(list) : NULL;
        Py_XDECREF(list);
    }
    if (items == NULL) {
        goto done;
    }
    PyObject *kind_name = enum_name(self->trace_types, kind); /* borrowed */
    PyObject *code_name = kind_name ? enum_name(self->status_names, code) : NULL;
    if (code_name == NULL) {
        goto done;
    }
    row = PyTuple_Pack(9, trace_id, span_id, local_parent, name, kind_name, start, end,
                       code_name, items);
    rc = row != NULL ? PyList_Append(self->rows, row) : -1;
done:
    Py_XDECREF(local_parent);
    Py_XDECREF(name);
    Py_XDECREF(kind);
    Py_XDECREF(start);
    Py_XDECREF(end);
    Py_XDECREF(status);
    Py_XDECREF(code);
    Py_XDECREF(attrs);
    Py_XDECREF(items);
    Py_XDECREF(row);
    return rc;
}

/* The ended root's live entry becomes a record (span id, start, name, type). */
static int
end_root(RecorderObject *self, PyObject *span, PyObject *trace_id, PyObject *span_id)
{
    PyObject *roots = PyDict_GetItemWithError(self->roots, trace_id); /* borrowed */
    int rc = 0;
    if (roots != NULL && PyTuple_CheckExact(roots)) {
        Py_INCREF(roots);
        PyObject *start = PyObject_GetAttr(span, s_start);
        PyObject *name = start ? PyObject_GetAttr(span, s_name) : NULL;
        PyObject *kind = name ? PyObject_GetAttr(span, s_kind) : NULL;
        PyObject *type = kind ? enum_name(self->trace_types, kind) : NULL;
        PyObject *record =
            type ? PyTuple_Pack(4, span_id, start, name, type) : NULL; /* type borrowed */
        PyObject *now = record ? PyTuple_New(PyTuple_GET_SIZE(roots)) : NULL;
        for (Py_ssize_t i = 0; now != NULL && i < PyTuple_GET_SIZE(roots); i++) {
            PyObject *r = PyTuple_GET_ITEM(roots, i);
            PyObject *item = r;
            if (!PyTuple_CheckExact(r)) { /* a live root: is it this one? */
                PyObject *ctx = PyObject_GetAttr(r, s_context);
                PyObject *id = ctx ? ctx_item(self, ctx, 1) : NULL;
                int same = id ? PyObject_RichCompareBool(id, span_id, Py_EQ) : -1;
                Py_XDECREF(ctx);
                Py_XDECREF(id);
                if (same < 0) {
                    Py_CLEAR(now);
                    break;
                }
                if (same) {
                    item = record;
                }
            }
            PyTuple_SET_ITEM(now, i, Py_NewRef(item));
        }
        rc = now != NULL ? PyDict_SetItem(self->roots, trace_id, now) : -1;
        Py_XDECREF(now);
        Py_XDECREF(record);
        Py_XDECREF(kind);
        Py_XDECREF(name);
        Py_XDECREF(start);
        Py_DECREF(roots);
        if (rc < 0) {
            return -1;
        }
    }
    else if (PyErr_Occurred()) {
        return -1;
    }
    PyObject *pair = PyTuple_Pack(2, trace_id, span_id);
    if (pair == NULL || PyList_Append(self->ending, pair) < 0) {
        Py_XDECREF(pair);
        return -1;
    }
    Py_DECREF(pair);
    if ((PyList_GET_SIZE(self->ending) & 255) == 0) {
        PyObject *r = PyObject_CallMethodNoArgs((PyObject *)self, s_purge);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    return 0;
}

static PyObject *
Recorder_on_end(RecorderObject *self, PyObject *span)
{
    int want_row = self->rows != NULL && self->enabled;
    if (self->roots == NULL && !want_row) {
        Py_RETURN_NONE;
    }
    PyObject *parent = NULL;
    int root = is_local_root(self, span, &parent);
    if (root < 0) {
        return NULL;
    }
    if (!want_row && !root) {
        Py_DECREF(parent);
        Py_RETURN_NONE;
    }
    PyObject *ctx = PyObject_GetAttr(span, s_context);
    PyObject *trace_id = ctx ? ctx_item(self, ctx, 0) : NULL;
    PyObject *span_id = trace_id ? ctx_item(self, ctx, 1) : NULL;
    Py_XDECREF(ctx);
    int rc = span_id != NULL ? 0 : -1;
    if (rc == 0 && want_row) {
        rc = add_row(self, span, trace_id, span_id, parent);
    }
    if (rc == 0 && root && self->roots != NULL) {
        rc = end_root(self, span, trace_id, span_id);
    }
    Py_DECREF(parent);
    Py_XDECREF(trace_id);
    Py_XDECREF(span_id);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Hand the list in `*slot` to the caller and put a fresh one there: one
 * step, so no span ending on another thread lands in between. */
static PyObject *
take_list(PyObject **slot)
{
    PyObject *fresh = PyList_New(0);
    if (fresh == NULL || *slot == NULL) {
        return fresh;
    }
    PyObject *taken = *slot;
    *slot = fresh;
    return taken;
}

static PyObject *
Recorder_take_rows(RecorderObject *self, PyObject *Py_UNUSED(ignored))
{
    return take_list(&self->rows);
}

static PyObject *
Recorder_take_ending(RecorderObject *self, PyObject *Py_UNUSED(ignored))
{
    return take_list(&self->ending);
}

static PyObject *
Recorder_shutdown(RecorderObject *self, PyObject *Py_UNUSED(ignored))
{
    self->enabled = 0;
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
    {"take_rows", (PyCFunction)Recorder_take_rows, METH_NOARGS,
     "the rows of spans ended since the last call"},
    {"take_ending", (PyCFunction)Recorder_take_ending, METH_NOARGS,
     "(trace id, span id) of the local roots ended since the last call"},
    {"shutdown", (PyCFunction)Recorder_shutdown, METH_NOARGS, "stop recording"},
    {"force_flush", (PyCFunction)(void (*)(void))Recorder_force_flush,
     METH_VARARGS | METH_KEYWORDS, "force_flush(timeout_millis=30000) -> True"},
    {NULL, NULL, 0, NULL},
};

static PyObject *
Recorder_get_int(RecorderObject *self, void *which)
{
    Py_ssize_t v = which == (void *)0   ? self->count
                   : which == (void *)1 ? self->dropped
                   : which == (void *)3 ? self->max_roots
                   : which == (void *)4 ? (self->rows ? PyList_GET_SIZE(self->rows) : 0)
                                        : (Py_ssize_t)self->enabled;
    return which == (void *)2 ? PyBool_FromLong((long)v) : PyLong_FromSsize_t(v);
}

static int
Recorder_set_int(RecorderObject *self, PyObject *value, void *which)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete");
        return -1;
    }
    if (which == (void *)2) {
        int v = PyObject_IsTrue(value);
        if (v < 0) {
            return -1;
        }
        self->enabled = v;
        return 0;
    }
    Py_ssize_t v = PyLong_AsSsize_t(value);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (which == (void *)0) {
        self->count = v;
    }
    else if (which == (void *)3) {
        self->max_roots = v;
    }
    else {
        self->dropped = v;
    }
    return 0;
}

static PyGetSetDef Recorder_getset[] = {
    {"_count", (getter)Recorder_get_int, (setter)Recorder_set_int, "local roots tracked",
     (void *)0},
    {"dropped", (getter)Recorder_get_int, (setter)Recorder_set_int,
     "rows not kept (max_rows reached)", (void *)1},
    {"enabled", (getter)Recorder_get_int, (setter)Recorder_set_int, "recording", (void *)2},
    {"max_roots", (getter)Recorder_get_int, (setter)Recorder_set_int,
     "local roots tracked at once; beyond, they are all forgotten", (void *)3},
    {"pending", (getter)Recorder_get_int, NULL, "rows waiting to be taken", (void *)4},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Recorder_slots[] = {
    {Py_tp_doc, "SpanRecorder(*, trace_types, roots=None, ending=None, max_roots=200000, "
                "rows=None, status_names=None, max_rows=65536): span processor work in C"},
    {Py_tp_new, PyType_GenericNew},
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
    .m_doc = "The per-span work of spanprof's OpenTelemetry span processors, in C.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__spans(void)
{
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&s_parent, "_parent"},       {&s_context, "_context"},
        {&s_name, "_name"},           {&s_kind, "_kind"},
        {&s_start, "_start_time"},    {&s_end, "_end_time"},
        {&s_status, "_status"},       {&s_status_code, "_status_code"},
        {&s_attributes, "_attributes"}, {&s_dict, "_dict"},
        {&s_trace_id, "trace_id"},    {&s_span_id, "span_id"},
        {&s_is_remote, "is_remote"},  {&s_purge, "_purge"},
        {&s_forget_all, "_forget_all"},
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
