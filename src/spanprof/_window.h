/*
 * The profile stage's aggregation table, as the sampler's resolver adds to
 * it without a Python call per sample. Exported by spanprof._profile as the
 * capsule "spanprof._profile._window_api".
 */
#ifndef SPANPROF_WINDOW_H
#define SPANPROF_WINDOW_H

#include <stdint.h>

#define SPANPROF_WINDOW_CAPSULE "spanprof._profile._window_api"
#define SPANPROF_WINDOW_VERSION 1

typedef struct {
    int version;
    PyTypeObject *type; /* spanprof._profile.Window */
    /* Count `count` ticks of `stack` (packed bytes) under `thread_labels` and
     * `link_labels` (tuples, compared by identity). Needs the GIL. Returns 0
     * when counted, 1 when dropped (the window is full), -1 on error. */
    int (*add)(PyObject *window, PyObject *stack, PyObject *thread_labels, PyObject *link_labels,
               int64_t cpu_ns, int64_t wall_ns, int64_t count);
} spanprof_window_api;

#endif
