/*
 * spanprof._context: OpenTelemetry's runtime context, in C, keeping recently
 * attached contexts alive.
 *
 * The sampler reads OTel's current context from a thread's live contextvars
 * context in a signal handler (a pointer, no reference); the value is resolved
 * under the GIL a little later, when it may have been freed. Keeping the last
 * N attached contexts alive makes that rare. OTel's own ContextVarsRuntimeContext
 * is three Python methods around one ContextVar; wrapping them in Python to
 * retain contexts cost every span another two Python calls. This type does the
 * same as OTel's (same ContextVar, same tokens) plus the retention, in C.
 *
 * Public C API only: built like any extension, for every CPython version.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct {
    PyObject_HEAD
    PyObject *var;   /* OTel's ContextVar */
    PyObject *inner; /* the runtime context this one replaces (put back at uninstall) */
    PyObject **ring; /* the last `size` attached contexts (strong references) */
    Py_ssize_t size;
    Py_ssize_t next; /* where the next one goes */
} RetainingObject;

static int
Retaining_init(RetainingObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"var", "inner", "retained", NULL};
    PyObject *var, *inner;
    Py_ssize_t size;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOn", kwlist, &var, &inner, &size)) {
        return -1;
    }
    if (!PyContextVar_CheckExact(var)) {
        PyErr_SetString(PyExc_TypeError, "var must be a contextvars.ContextVar");
        return -1;
    }
    if (size < 1 || size > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "retained must be within 1..1048576");
        return -1;
    }
    if (self->ring != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "already initialised");
        return -1;
    }
    self->ring = PyMem_Calloc((size_t)size, sizeof(PyObject *));
    if (self->ring == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->size = size;
    Py_XSETREF(self->var, Py_NewRef(var));
    Py_XSETREF(self->inner, Py_NewRef(inner));
    return 0;
}

static int
Retaining_traverse(RetainingObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->var);
    Py_VISIT(self->inner);
    for (Py_ssize_t i = 0; self->ring != NULL && i < self->size; i++) {
        Py_VISIT(self->ring[i]);
    }
    return 0;
}

static int
Retaining_clear(RetainingObject *self)
{
    Py_CLEAR(self->var);
    Py_CLEAR(self->inner);
    for (Py_ssize_t i = 0; self->ring != NULL && i < self->size; i++) {
        Py_CLEAR(self->ring[i]);
    }
    return 0;
}

static void
Retaining_dealloc(RetainingObject *self)
{
    PyObject_GC_UnTrack(self);
    Retaining_clear(self);
    PyMem_Free(self->ring);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Retaining_attach(RetainingObject *self, PyObject *context)
{
    if (self->ring == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "RetainingContext is not initialised");
        return NULL;
    }
    PyObject *token = PyContextVar_Set(self->var, context);
    if (token == NULL) {
        return NULL;
    }
    PyObject *old = self->ring[self->next];
    self->ring[self->next] = Py_NewRef(context);
    self->next = (self->next + 1) % self->size;
    Py_XDECREF(old); /* last: its destructor may run Python code */
    return token;
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
    if (PyContextVar_Reset(self->var, token) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Retaining_recent(RetainingObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyList_New(0);
    for (Py_ssize_t i = 0; out != NULL && i < self->size; i++) {
        PyObject *item = self->ring[(self->next + i) % self->size];
        if (item != NULL && PyList_Append(out, item) < 0) {
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
Retaining_get_retained(RetainingObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->size);
}

static PyMethodDef Retaining_methods[] = {
    {"attach", (PyCFunction)Retaining_attach, METH_O,
     "attach(context) -> token: make it current, keep it alive"},
    {"get_current", (PyCFunction)Retaining_get_current, METH_NOARGS, "the current context"},
    {"detach", (PyCFunction)Retaining_detach, METH_O, "detach(token): back to the previous one"},
    {"recent", (PyCFunction)Retaining_recent, METH_NOARGS,
     "the contexts kept alive, oldest first"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Retaining_getset[] = {
    {"inner", (getter)Retaining_get_inner, NULL, "the runtime context replaced", NULL},
    {"var", (getter)Retaining_get_var, NULL, "OTel's ContextVar", NULL},
    {"retained", (getter)Retaining_get_retained, NULL, "how many contexts are kept", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject RetainingType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "spanprof._context.RetainingContext",
    .tp_basicsize = sizeof(RetainingObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "RetainingContext(var, inner, retained): OTel's runtime context, retaining",
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
    .m_doc = "OpenTelemetry's runtime context in C, retaining recent contexts.",
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
