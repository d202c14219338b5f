/*
 * spanprof._context: OpenTelemetry's runtime context, in C, keeping alive the
 * contexts that a pending capture saw.
 *
 * The sampler reads OTel's current context from a thread's live contextvars
 * context in a signal handler (a pointer, no reference); the value is resolved
 * under the GIL a little later. If the application detaches that context
 * meanwhile, it may be freed and its memory reused before then. The sampler
 * records which values its unresolved captures saw (_pending.h); detach asks
 * about the value it drops and keeps it until those captures are resolved.
 * Only those few are kept: keeping every recent context (hence its span) alive
 * made the application's garbage collector walk them, ~7 µs per span.
 * OTel's own ContextVarsRuntimeContext is three Python methods around one
 * ContextVar; this type does the same (same ContextVar, same tokens) in C.
 *
 * Public C API only: built like any extension, for every CPython version.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_pending.h"

static const spanprof_pending_api *g_api = NULL;

typedef struct {
    PyObject *value;
    int seq; /* the tick whose resolution releases it */
} kept_t;

typedef struct {
    PyObject_HEAD
    PyObject *var;   /* OTel's ContextVar */
    PyObject *inner; /* the runtime context this one replaces (put back at uninstall) */
    kept_t *kept;    /* ring of contexts kept for pending captures (strong references) */
    Py_ssize_t cap, head, count;
    Py_ssize_t max_kept;
    Py_ssize_t unkept; /* values a capture saw that could not be kept (max_kept reached) */
} RetainingObject;

static int
Retaining_init(RetainingObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"var", "inner", "max_kept", NULL};
    PyObject *var, *inner;
    Py_ssize_t max_kept = 65536;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|n", kwlist, &var, &inner, &max_kept)) {
        return -1;
    }
    if (!PyContextVar_CheckExact(var)) {
        PyErr_SetString(PyExc_TypeError, "var must be a contextvars.ContextVar");
        return -1;
    }
    if (max_kept < 1 || max_kept > (1 << 24)) {
        PyErr_SetString(PyExc_ValueError, "max_kept must be within 1..16777216");
        return -1;
    }
    if (self->var != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "already initialised");
        return -1;
    }
    if (g_api == NULL) {
        const spanprof_pending_api *api = PyCapsule_Import(SPANPROF_PENDING_CAPSULE, 0);
        if (api == NULL) {
            return -1;
        }
        if (api->version != SPANPROF_PENDING_VERSION) {
            PyErr_SetString(PyExc_ImportError, "spanprof._sampler is another build than _context");
            return -1;
        }
        g_api = api;
    }
    self->max_kept = max_kept;
    Py_XSETREF(self->var, Py_NewRef(var));
    Py_XSETREF(self->inner, Py_NewRef(inner));
    return 0;
}

static int
Retaining_traverse(RetainingObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->var);
    Py_VISIT(self->inner);
    for (Py_ssize_t i = 0; i < self->count; i++) {
        Py_VISIT(self->kept[(self->head + i) % self->cap].value);
    }
    return 0;
}

/* Release the oldest kept contexts whose captures are resolved. Their
 * destructors may run Python code (even re-enter us): the ring is consistent
 * before each one runs. */
static void
release_resolved(RetainingObject *self, int all)
{
    while (self->count > 0) {
        kept_t *k = &self->kept[self->head];
        if (!all && g_api->seq_pending(k->seq)) {
            break;
        }
        PyObject *value = k->value;
        k->value = NULL;
        self->head = (self->head + 1) % self->cap;
        self->count--;
        Py_DECREF(value);
    }
}

static int
Retaining_clear(RetainingObject *self)
{
    Py_CLEAR(self->var);
    Py_CLEAR(self->inner);
    release_resolved(self, 1);
    return 0;
}

static void
Retaining_dealloc(RetainingObject *self)
{
    PyObject_GC_UnTrack(self);
    Retaining_clear(self);
    PyMem_Free(self->kept);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Take over the reference to `value`; -1 (reference not taken) if full. */
static int
keep(RetainingObject *self, PyObject *value, int seq)
{
    if (self->count == self->cap) {
        if (self->cap >= self->max_kept) {
            self->unkept++;
            return -1;
        }
        Py_ssize_t cap = self->cap ? self->cap * 2 : 64;
        if (cap > self->max_kept) {
            cap = self->max_kept;
        }
        kept_t *ring = PyMem_Malloc((size_t)cap * sizeof(kept_t));
        if (ring == NULL) {
            self->unkept++;
            return -1;
        }
        for (Py_ssize_t i = 0; i < self->count; i++) {
            ring[i] = self->kept[(self->head + i) % self->cap];
        }
        PyMem_Free(self->kept);
        self->kept = ring;
        self->cap = cap;
        self->head = 0;
    }
    kept_t *k = &self->kept[(self->head + self->count) % self->cap];
    k->value = value;
    k->seq = seq;
    self->count++;
    return 0;
}

static PyObject *
Retaining_attach(RetainingObject *self, PyObject *context)
{
    if (self->var == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "RetainingContext is not initialised");
        return NULL;
    }
    return PyContextVar_Set(self->var, context);
}

static PyObject *
Retaining_get_current(RetainingObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->var == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "RetainingContext is not initialised");
        return NULL;
    }
    PyObject *value;
    if (PyContextVar_Get(self->var, NULL, &value) < 0) {
        return NULL;
    }
    if (value == NULL) { /* OTel's variable has a default; be safe anyway */
        PyErr_SetString(PyExc_LookupError, "no current context");
    }
    return value;
}

static PyObject *
Retaining_detach(RetainingObject *self, PyObject *token)
{
    if (self->var == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "RetainingContext is not initialised");
        return NULL;
    }
    PyObject *dropped = NULL; /* the value this context stops referring to */
    if (PyContextVar_Get(self->var, NULL, &dropped) < 0) {
        return NULL;
    }
    if (PyContextVar_Reset(self->var, token) < 0) {
        Py_XDECREF(dropped);
        return NULL;
    }
    /* Asked after the reset: a capture on this thread from now on sees the
     * restored value, and one before it is recorded by now. */
    if (dropped != NULL) {
        int seq = g_api->value_pending(dropped);
        if (seq >= 0 && keep(self, dropped, seq) == 0) {
            dropped = NULL; /* kept */
        }
    }
    release_resolved(self, 0);
    Py_XDECREF(dropped);
    Py_RETURN_NONE;
}

static PyObject *
Retaining_kept(RetainingObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyList_New(0);
    for (Py_ssize_t i = 0; out != NULL && i < self->count; i++) {
        if (PyList_Append(out, self->kept[(self->head + i) % self->cap].value) < 0) {
            Py_CLEAR(out);
        }
    }
    return out;
}

static PyObject *
Retaining_get_inner(RetainingObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->inner ? self->inner : Py_None);
}

static PyObject *
Retaining_get_var(RetainingObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->var ? self->var : Py_None);
}

static PyObject *
Retaining_get_max_kept(RetainingObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->max_kept);
}

static PyObject *
Retaining_get_unkept(RetainingObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->unkept);
}

static PyMethodDef Retaining_methods[] = {
    {"attach", (PyCFunction)Retaining_attach, METH_O,
     "attach(context) -> token: make it current, keep it alive"},
    {"get_current", (PyCFunction)Retaining_get_current, METH_NOARGS, "the current context"},
    {"detach", (PyCFunction)Retaining_detach, METH_O, "detach(token): back to the previous one"},
    {"kept", (PyCFunction)Retaining_kept, METH_NOARGS,
     "the contexts kept alive for unresolved captures, oldest first"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Retaining_getset[] = {
    {"inner", (getter)Retaining_get_inner, NULL, "the runtime context replaced", NULL},
    {"var", (getter)Retaining_get_var, NULL, "OTel's ContextVar", NULL},
    {"max_kept", (getter)Retaining_get_max_kept, NULL, "most contexts kept at once", NULL},
    {"unkept", (getter)Retaining_get_unkept, NULL,
     "contexts a pending capture saw that could not be kept (max_kept reached)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject RetainingType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "spanprof._context.RetainingContext",
    .tp_basicsize = sizeof(RetainingObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "RetainingContext(var, inner, max_kept=65536): OTel's runtime context, keeping "
              "contexts alive for captures not resolved yet",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Retaining_init,
    .tp_dealloc = (destructor)Retaining_dealloc,
    .tp_traverse = (traverseproc)Retaining_traverse,
    .tp_clear = (inquiry)Retaining_clear,
    .tp_methods = Retaining_methods,
    .tp_getset = Retaining_getset,
};

static struct PyModuleDef context_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "spanprof._context",
    .m_doc = "OpenTelemetry's runtime context in C, keeping contexts pending captures saw.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__context(void)
{
    if (PyType_Ready(&RetainingType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&context_module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&RetainingType);
    if (PyModule_AddObject(m, "RetainingContext", (PyObject *)&RetainingType) < 0) {
        Py_DECREF(&RetainingType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
