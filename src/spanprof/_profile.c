/*
 * spanprof._profile: the profile stage's aggregation table.
 *
 * A window counts samples by (packed stack, thread labels, link labels). The
 * sampler's resolver adds to it through a C function (the capsule of
 * _window.h), so steady-state sampling makes no Python call and allocates
 * nothing per sample: stacks are interned bytes (compared by content, hashed
 * once: bytes cache their hash), labels are tuples the pipeline reuses
 * (compared by identity; equal tuples that are not the same object make
 * separate entries, merged when the window is rotated). Bounded: past
 * `max_keys` entries, samples of new keys are counted as dropped.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

#include "_hash.h"
#include "_window.h"

typedef struct {
    Py_hash_t hash;
    PyObject *stack; /* NULL: empty entry */
    PyObject *thread;
    PyObject *link;
    int64_t count;
    int64_t cpu_ns;
    int64_t wall_ns;
} entry_t;

typedef struct {
    PyObject_HEAD
    entry_t *tab;
    Py_ssize_t cap; /* power of two, or 0 before the first sample */
    Py_ssize_t n;
    Py_ssize_t max_keys;
    long long dropped; /* ticks of samples not counted (the window was full) */
} WindowObject;

static PyTypeObject WindowType;

static inline Py_hash_t
mix(const void *p)
{
    return (Py_hash_t)spanprof_ptr_hash(p);
}

static int
same_stack(PyObject *a, PyObject *b)
{
    Py_ssize_t n = PyBytes_GET_SIZE(a);
    return a == b || (n == PyBytes_GET_SIZE(b) && memcmp(PyBytes_AS_STRING(a),
                                                           PyBytes_AS_STRING(b), n) == 0);
}

static int
grow(WindowObject *w)
{
    Py_ssize_t cap = w->cap ? w->cap * 2 : 256;
    entry_t *tab = PyMem_Malloc((size_t)cap * sizeof(entry_t));
    if (tab == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    /* Zeroed by writing (calloc would leave fresh pages to be read first: the
     * write that follows then flushes every CPU's TLB, a VM exit each). */
    memset(tab, 0, (size_t)cap * sizeof(entry_t));
    for (Py_ssize_t i = 0; i < w->cap; i++) {
        entry_t *e = &w->tab[i];
        if (e->stack != NULL) {
            Py_ssize_t j = (Py_ssize_t)((uint64_t)e->hash & (uint64_t)(cap - 1));
            while (tab[j].stack != NULL) {
                j = (j + 1) & (cap - 1);
            }
            tab[j] = *e;
        }
    }
    PyMem_Free(w->tab);
    w->tab = tab;
    w->cap = cap;
    return 0;
}

static int
window_add(PyObject *self, PyObject *stack, PyObject *thread, PyObject *link, int64_t cpu_ns,
           int64_t wall_ns, int64_t count)
{
    WindowObject *w = (WindowObject *)self;
    if (!PyBytes_Check(stack) || !PyTuple_Check(thread) || !PyTuple_Check(link)) {
        PyErr_SetString(PyExc_TypeError, "a sample is (bytes, tuple, tuple, ...)");
        return -1;
    }
    Py_hash_t h = PyObject_Hash(stack);
    if (h == -1) {
        return -1;
    }
    h ^= mix(thread) ^ (mix(link) * 31);
    if (w->cap == 0 && grow(w) != 0) {
        return -1;
    }
    for (;;) {
        Py_ssize_t i = (Py_ssize_t)((uint64_t)h & (uint64_t)(w->cap - 1));
        for (entry_t *e = &w->tab[i]; e->stack != NULL; e = &w->tab[i]) {
            if (e->hash == h && e->thread == thread && e->link == link &&
                same_stack(e->stack, stack)) {
                e->count += count;
                e->cpu_ns += cpu_ns;
                e->wall_ns += wall_ns;
                return 0;
            }
            i = (i + 1) & (w->cap - 1);
        }
        if (w->n >= w->max_keys) {
            w->dropped += count;
            return 1;
        }
        if ((w->n + 1) * 2 > w->cap) {
            if (grow(w) != 0) {
                return -1;
            }
            continue; /* probe the grown table */
        }
        entry_t *e = &w->tab[i];
        e->hash = h;
        e->stack = Py_NewRef(stack);
        e->thread = Py_NewRef(thread);
        e->link = Py_NewRef(link);
        e->count = count;
        e->cpu_ns = cpu_ns;
        e->wall_ns = wall_ns;
        w->n++;
        return 0;
    }
}

static void
window_clear(WindowObject *w)
{
    for (Py_ssize_t i = 0; i < w->cap; i++) {
        entry_t *e = &w->tab[i];
        if (e->stack != NULL) {
            Py_DECREF(e->stack);
            Py_DECREF(e->thread);
            Py_DECREF(e->link);
        }
    }
    PyMem_Free(w->tab);
    w->tab = NULL;
    w->cap = 0;
    w->n = 0;
}

static int
Window_init(WindowObject *w, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"max_keys", NULL};
    Py_ssize_t max_keys = 100000;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|n", kwlist, &max_keys)) {
        return -1;
    }
    if (max_keys < 1) {
        PyErr_SetString(PyExc_ValueError, "max_keys must be at least 1");
        return -1;
    }
    window_clear(w);
    w->max_keys = max_keys;
    w->dropped = 0;
    return 0;
}

static void
Window_dealloc(WindowObject *w)
{
    window_clear(w);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static Py_ssize_t
Window_len(WindowObject *w)
{
    return w->n;
}

static PyObject *
Window_add(WindowObject *w, PyObject *args)
{
    PyObject *stack, *thread, *link;
    long long cpu_ns, wall_ns, count = 1;
    if (!PyArg_ParseTuple(args, "OOOLL|L", &stack, &thread, &link, &cpu_ns, &wall_ns, &count)) {
        return NULL;
    }
    int r = window_add((PyObject *)w, stack, thread, link, cpu_ns, wall_ns, count);
    if (r < 0) {
        return NULL;
    }
    return PyBool_FromLong(r);
}

static PyObject *
Window_take(WindowObject *w, PyObject *Py_UNUSED(ignored))
{
    PyObject *rows = PyList_New(w->n);
    if (rows == NULL) {
        return NULL;
    }
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < w->cap; i++) {
        entry_t *e = &w->tab[i];
        if (e->stack == NULL) {
            continue;
        }
        PyObject *row = Py_BuildValue("(OOOLLL)", e->stack, e->thread, e->link,
                                      (long long)e->count, (long long)e->cpu_ns,
                                      (long long)e->wall_ns);
        if (row == NULL) {
            Py_DECREF(rows);
            return NULL;
        }
        PyList_SET_ITEM(rows, k++, row);
    }
    PyObject *out = Py_BuildValue("(NL)", rows, w->dropped);
    if (out != NULL) {
        window_clear(w);
        w->dropped = 0;
    }
    return out;
}

static PyMethodDef Window_methods[] = {
    {"add", (PyCFunction)Window_add, METH_VARARGS,
     "add(stack, thread_labels, link_labels, cpu_ns, wall_ns, count=1): count a sample; "
     "True if it was dropped (the window is full)."},
    {"take", (PyCFunction)Window_take, METH_NOARGS,
     "Empty the window: ([(stack, thread_labels, link_labels, count, cpu_ns, wall_ns)], "
     "ticks dropped)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Window_members[] = {
    {"max_keys", T_PYSSIZET, offsetof(WindowObject, max_keys), 0,
     "entries beyond which new keys are dropped"},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods Window_as_sequence = {
    .sq_length = (lenfunc)Window_len,
};

static PyTypeObject WindowType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "spanprof._profile.Window",
    .tp_basicsize = sizeof(WindowObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Window_init,
    .tp_dealloc = (destructor)Window_dealloc,
    .tp_methods = Window_methods,
    .tp_members = Window_members,
    .tp_as_sequence = &Window_as_sequence,
    .tp_doc = "Window(max_keys=100000): samples counted by (stack, thread labels, link labels).",
};

static spanprof_window_api g_window_api = {
    SPANPROF_WINDOW_VERSION,
    &WindowType,
    window_add,
};

static struct PyModuleDef profile_module = {
    PyModuleDef_HEAD_INIT, "spanprof._profile", "spanprof's native aggregation table.", -1, NULL,
};

PyMODINIT_FUNC
PyInit__profile(void)
{
    if (PyType_Ready(&WindowType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&profile_module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&WindowType);
    if (PyModule_AddObject(m, "Window", (PyObject *)&WindowType) < 0) {
        Py_DECREF(&WindowType);
        Py_DECREF(m);
        return NULL;
    }
    PyObject *api = PyCapsule_New((void *)&g_window_api, SPANPROF_WINDOW_CAPSULE, NULL);
    if (api == NULL || PyModule_AddObject(m, "_window_api", api) < 0) {
        Py_XDECREF(api);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
