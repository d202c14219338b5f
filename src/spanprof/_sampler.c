/*
 * spanprof._sampler: the native all-thread sampler.
 *
 * One tick samples every Python thread of the interpreter:
 *
 *   A (ticker)  a native thread that never takes the GIL reads each known
 *               thread's CPU clock (clock id derived from its native tid) at
 *               jittered times. A thread whose clock advanced is *running*:
 *               it gets a real-time signal, and the handler, on that thread,
 *               copies its own frame chain (code pointer, instruction pointer)
 *               and its live contextvars context pointer into a preallocated
 *               slot. No allocation, no refcounting, no GIL in the handler.
 *   B (ticker)  wait (bounded) for the handlers, then queue the tick.
 *   C (GIL)     the resolver (the Python thread in run()) takes queued ticks
 *               under the GIL; a thread not captured in place (parked, or its
 *               handler did not answer) is captured there, where its stack
 *               cannot move. Captured pointers are resolved: code objects are
 *               kept alive in a table (pointer -> small int id); a first-seen
 *               pointer is validated with a safe read first.
 *
 * The ticker never waits for the GIL, so when a tick happens does not depend
 * on when the GIL changes hands (a sampler that waits for it samples the
 * code that runs right after GIL hand-offs far too often).
 *
 * The result of a tick is a list of tuples
 *   (ident, native_id, cpu_ns, wall_ns, stack, value, in_place, time_ns, count)
 * where stack packs (uint32 code id, int32 byte offset) pairs, leaf first, and
 * value is the registered ContextVar's value in the thread's live context.
 *
 * Frame layouts are read with the running CPython's own internal headers; the
 * extension is compiled per version.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define Py_BUILD_CORE 1
#if PY_VERSION_HEX >= 0x030B0000
#include "internal/pycore_frame.h"
#endif
#include "internal/pycore_context.h"
#undef Py_BUILD_CORE
#if PY_VERSION_HEX < 0x030B0000
#include <frameobject.h>
#endif

#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "_hash.h"
#include "_pending.h"
#include "_window.h"

#if PY_VERSION_HEX < 0x030A0000 || PY_VERSION_HEX >= 0x030E0000
#error "spanprof supports CPython 3.10 to 3.13"
#endif

#define CODE_ID_UNKNOWN 0u
#define CODE_ID_TRUNCATED 1u
#define CODE_ID_FIRST 2u
#define MAX_CODES (1u << 16)
#define CODE_MAP_FIRST 1024u /* power of two; the map doubles at half full */

/* QUEUED: a timer capture the ticker put into a tick (DONE before). */
enum { SLOT_FREE = 0, SLOT_REQUESTED, SLOT_WRITING, SLOT_DONE, SLOT_ABANDONED, SLOT_QUEUED };

static inline int
slot_captured(int state)
{
    return state == SLOT_DONE || state == SLOT_QUEUED;
}

typedef struct {
    void *code;     /* code object pointer as seen by the capturing thread */
    void *name;     /* its co_name then: tells a reused address from the same code */
    intptr_t instr; /* 3.11+: instruction pointer; 3.10: f_lasti */
} raw_frame_t;

typedef struct {
    _Atomic int state;
    pid_t tid;
    int depth;     /* frames captured; -1 when the thread had no thread state */
    int truncated; /* more frames existed beyond max_depth */
    void *tstate;
    void *value;          /* the registered ContextVar's value in the live context */
    int known;            /* ticker: index of the thread in its known list when signalled */
    int64_t cpu_ns;       /* timer captures: the thread's CPU clock, */
    int64_t wall_ns;      /* CLOCK_MONOTONIC */
    int64_t time_ns;      /* and CLOCK_REALTIME at the capture */
    raw_frame_t frames[]; /* max_depth entries */
} slot_t;

/* The resolver's record of a thread, from its last emitted sample. */
typedef struct {
    pid_t tid;
    unsigned long ident;
    void *tstate;
    int64_t last_cpu_ns;
    int64_t last_wall_ns;
    int64_t cap_cpu;  /* CPU clock when `stack` was captured under the GIL; -1: unknown */
    uint64_t last_seq; /* tick of its last sample */
    PyObject *stack;  /* last packed stack (strong ref), reused while the thread is idle */
    PyObject *value;  /* last context value (strong ref) */
    int carried;      /* scratch for publish_threads */
} thread_rec_t;

/* What the ticker saw of one thread at one tick: a clock reading (with the
 * slot of the signal it sent), or a capture the thread's CPU timer made. */
typedef struct {
    pid_t tid;
    int slot;  /* slot index if signalled or a timer capture, else -1 */
    int used;  /* resolver: a live thread state took this entry */
    int timer; /* a timer capture: one sample */
    int exact; /* captured by the ticker at `cpu_ns` exactly (the thread stood still) */
    int64_t cpu_ns;
    int64_t wall_ns;
    int64_t time_ns; /* CLOCK_REALTIME */
} tick_entry_t;

typedef struct {
    _Atomic int ready; /* set by the ticker, cleared by the resolver */
    int64_t time_ns;   /* CLOCK_REALTIME when the tick was taken */
    uint64_t seq;      /* tick number */
    int n;
    Py_ssize_t cap;
    tick_entry_t *entries;
} tick_rec_t;

/* A resolved sample waiting in the batch (strong references). */
typedef struct {
    unsigned long ident;
    pid_t tid;
    int in_place;
    int64_t cpu_ns;  /* CPU since the thread's previous sample */
    int64_t wall_ns; /* wall time since then */
    int64_t time_ns; /* capture time, CLOCK_REALTIME */
    long long count; /* ticks it stands for */
    PyObject *stack; /* packed, interned */
    PyObject *value; /* context value, or Py_None */
} sample_t;

/* An interned packed stack. */
typedef struct {
    uint64_t hash;
    PyObject *bytes; /* NULL: empty */
} stack_ent_t;

#define MAX_STACKS (1 << 16) /* interned stacks; beyond, the table starts afresh */

static void
clear_record(thread_rec_t *rec)
{
    Py_CLEAR(rec->stack);
    Py_CLEAR(rec->value);
    rec->cap_cpu = -1;
}

/* The ticker's own view of a thread (its previous clock reading). */
typedef struct {
    pid_t tid;
    void *tstate; /* its thread state, as the resolver last saw it */
    int hot;      /* its clock advanced at its last reading */
    int timer; /* index of its CPU timer, -1: none yet, -2: none possible */
    int64_t cpu_ns;
    int64_t timer_cpu_ns; /* CPU clock at its timer's last capture (or arming) */
    int since_post;       /* its timer's captures since the resolver was last woken */
    int misses;           /* the ticker's signals it left unanswered in a row; -1: never again */
} known_t;

/* A running thread is sampled by a CPU timer of its own: a perf_event
 * task-clock event (an hrtimer on its CPU time, as precise as the ticker's
 * clock) that signals it after each jittered interval of CPU it uses. No
 * thread has to wake up to find it running (on a VM a wake-up costs ~100 µs
 * of CPU), so sampling costs what the application runs, nothing when it is
 * idle. The ticker then only reads clocks for wall time and parked threads,
 * every WALL_TICKS intervals, and collects the timers' captures. Each timer
 * has TIMER_SLOTS slots, written in turn by its handler. Where perf events
 * are not allowed (perf_event_paranoid > 2, a seccomp filter), and for
 * threads beyond MAX_TIMERS, the ticker signals running threads itself. */
#define MAX_TIMERS 256
#define TIMER_SLOTS 16
#define WALL_TICKS 4
#define FD_MAP 65536 /* timers' fds must be below this (fd -> timer map) */

typedef struct {
    _Atomic pid_t tid; /* 0: free */
    int fd;            /* the perf event */
    uint64_t id;       /* its kernel id: the fd is still ours before close() */
    uint64_t rng;      /* handler: jitter of its next period */
    uint64_t period;   /* handler: the period running since its last capture */
    int64_t prev_cpu;  /* handler: the thread's CPU clock at its last capture; 0: unknown */
    _Atomic unsigned next; /* handler: slots written so far */
    unsigned collected;    /* ticker: slots collected so far */
} timer_rec_t;

/* Parked threads whose clocks the ticker reads per tick, at most: with more
 * threads, each parked one is read every few ticks (a rotating subset), and
 * its sample carries the ticks it stands for. Threads that ran at their last
 * reading are read every tick. */
#define PARKED_PER_TICK 16
#define RUNNING_MIN_CPU_NS 100000 /* 100 µs between readings */
#define WALK_EVERY_NS 1000000000LL /* thread states are walked at least once a second */

#define RING 64                       /* queued ticks */
/* The resolver wakes every RESOLVE_BATCH ticks, at least once a second: each
 * wake-up costs it ~0.2 ms of CPU and the application a GIL hand-off (every
 * 100 ms: resolver 13-16 ms of CPU in the 3.3 s overhead workload; every
 * 500 ms: 8-10 ms), and far more when the process is idle (a thread waking
 * 4 times a second from idle used ~1.5 ms of CPU a wake-up on a shared VM).
 * With the ticker at ~100 Hz the batch comes first (~240 ms); the second
 * bounds the wait at low rates, and with CPU timers (the ticker then runs at
 * a quarter of the rate: ~1 s, unless the timers' slots fill first). Values
 * the captures saw are kept alive meanwhile (_pending.h); what it delays is
 * the capture, under the GIL, of threads that ran too little to be
 * signalled. Ended local roots stay known for 2 s (_spans.c), past that. */
#define RESOLVE_BATCH 24
#define RESOLVE_EVERY_NS 1000000000LL

typedef struct {
    PyObject_HEAD
    int max_depth;
    int nslots; /* in-place slots per queued tick */
    size_t slot_size;
    char *slots; /* (RING * nslots + 1) slots; the last one for GIL captures */
    unsigned char *touched; /* ticker: ring slots written at least once */
    sem_t done;  /* posted by handlers while the ticker waits for them */
    _Atomic int waiting; /* the ticker sleeps on `done` */
    int pending;         /* ring[head] was signalled, not yet finished (ticker) */
    int64_t pending_ns;  /* when it was signalled */
    pid_t pid;           /* for the signals' siginfo: set when sampling starts */
    uid_t uid;
    timer_rec_t *timers;    /* MAX_TIMERS */
    int16_t *fd_timer;      /* FD_MAP: fd -> timer index, -1 */
    int cpu_timers;         /* constructor: may run() use CPU timers */
    int timer_errno;        /* why perf events could not be used (0: they could) */
    int timer_user_only;    /* they may not count time in the kernel */
    int max_timer_fd;       /* leave the application most of its fd limit */
    int use_timers;         /* run(): running threads are sampled by CPU timers */
    int ntimers;            /* armed (ticker) */
    int64_t armed_interval; /* their interval (ticker) */
    int read_all;           /* the last tick reads every thread: whole wall times */
    int most_captures;      /* ticker: most captures of one timer since the last post */
    int most_used;          /* ticker: most slots one tick has used */
    int timers_used;        /* ticker: timer records used so far (from the first) */
    sem_t wake;  /* posted by stop(): wakes the ticker */
    sem_t batch; /* posted by the ticker per queued tick, and by stop() */
    _Atomic int stop_requested;
    int running;
    _Atomic int64_t interval_ns; /* set_interval() may change it while the ticker runs */
    _Atomic int ticker_tid;
    int signum; /* 0: GIL-only capture */
    int closed;
    int64_t timeout_ns;
    /* tick queue: single producer (ticker), single consumer (resolver) */
    tick_rec_t ring[RING];
    unsigned head, tail; /* head: next to write (ticker); tail: next to read */
    /* threads published by the resolver for the ticker */
    pthread_mutex_t pub_lock;
    known_t *pub;
    Py_ssize_t npub, cap_pub;
    unsigned pub_version;
    known_t *known; /* the ticker's copy */
    Py_ssize_t nknown, cap_known;
    unsigned known_version;
    /* resolver's records of threads */
    thread_rec_t *threads;
    Py_ssize_t nthreads, cap_threads;
    thread_rec_t *next_threads;
    Py_ssize_t cap_next;
    /* code table */
    void **map_keys;   /* map_cap pointers (NULL = empty) */
    uint32_t *map_ids; /* map_cap ids */
    uint32_t map_cap;
    PyObject **codes;  /* id -> strong ref (NULL for reserved ids) */
    uint32_t ncodes;
    /* packing buffer, and the stacks packed so far (interned) */
    char *pack;
    stack_ent_t *stacks;
    Py_ssize_t stacks_cap, nstacks;
    /* resolved samples not yet handed over */
    sample_t *samples;
    Py_ssize_t nsamples, cap_samples;
    uint64_t rng;
    /* statistics */
    _Atomic uint64_t ticks, dropped_ticks, timeouts, faults, timer_overruns;
    _Atomic uint64_t still_captures; /* by the ticker, of threads that stood still */
    _Atomic int64_t capture_cost_ns; /* CPU the sampled threads spent on timer captures */
    uint64_t in_place, gil_captures, reused, rejected_frames, rejected_values;
    int records_added; /* resolve(): a thread got its first record */
    PyThreadState *walk_head; /* head of the thread state list at the last walk */
    int64_t walk_ns;          /* when that walk was */
    PyTypeObject *value_type; /* expected type of context values (strong ref), or NULL */
} SamplerObject;

/* The sampler whose slots the signal handler writes into (one at a time). */
static _Atomic(SamplerObject *) g_active = NULL;
static int g_installed_signum = 0; /* signal whose handler we installed */
static int g_safe_read_mode = 0;   /* 0: process_vm_readv, 1: pipe */
static int g_pipe[2] = {-1, -1};

static inline uint64_t
xorshift(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

static inline int64_t
now_ns(clockid_t clk)
{
    struct timespec ts;
    if (clock_gettime(clk, &ts) != 0) {
        return -1;
    }
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* CPU clock of a thread by native tid (Linux's MAKE_THREAD_CPUCLOCK with
 * CPUCLOCK_SCHED). A thread that has exited yields EINVAL, never a crash. */
static inline int64_t
thread_cpu_ns(pid_t tid)
{
    clockid_t clk = (clockid_t)((~(unsigned int)tid) << 3) | 6;
    return now_ns(clk);
}

/* Slots: RING * nslots for the ticker's signals, TIMER_SLOTS per timer, and
 * the last one for captures under the GIL. */
static inline int
nslots_total(SamplerObject *s)
{
    return RING * s->nslots + MAX_TIMERS * TIMER_SLOTS + 1;
}

static inline int
timer_slot(SamplerObject *s, int timer, unsigned n)
{
    return RING * s->nslots + timer * TIMER_SLOTS + (int)(n % TIMER_SLOTS);
}

static inline slot_t *
slot_at(SamplerObject *s, int i)
{
    return (slot_t *)(s->slots + (size_t)i * s->slot_size);
}

/* ---- capture of the current thread's frame chain ------------------------ */

/* The HAMT behind a contextvars Context, read without the GIL (it is
 * immutable, and kept alive by the thread's current context while the handler
 * runs on that thread). Layouts of CPython's Python/hamt.c, 3.10 to 3.13. */
typedef struct {
    PyObject_VAR_HEAD
    uint32_t b_bitmap;
    PyObject *b_array[1];
} hamt_bitmap_t;

typedef struct {
    PyObject_HEAD
    PyObject *a_array[32];
    Py_ssize_t a_count;
} hamt_array_t;

typedef struct {
    PyObject_VAR_HEAD
    int32_t c_hash;
    PyObject *c_array[1];
} hamt_collision_t;

typedef struct {
    PyObject_HEAD
    PyObject *h_root;
    PyObject *h_weakreflist;
    Py_ssize_t h_count;
} hamt_t;

/* A pointer a frame chain or HAMT could hold: aligned, in user space. Catches
 * most garbage (a frame being pushed can expose uninitialised fields: CPython
 * 3.11/3.12 publish `tstate->cframe` before its `current_frame` is set). */
static inline int
plausible(const void *p)
{
    uintptr_t v = (uintptr_t)p;
    return v >= 65536 && (v & (sizeof(void *) - 1)) == 0 && v < ((uintptr_t)1 << 47);
}

/* The rest is caught: a fault while the handler walks another moment's frame
 * chain jumps back out of the capture instead of crashing the host. Faults
 * anywhere else go to the previous handler, as if we were not there. */
static __thread sigjmp_buf *volatile t_capture_guard __attribute__((tls_model("initial-exec")));

/* Arm and disarm the guard around guarded reads. The fences keep the compiler
 * from moving the reads out from between them, or from dropping the store as
 * dead when the reads are inlined (no call between the two stores). */
#define GUARD_ON(g)                                                                              \
    do {                                                                                         \
        t_capture_guard = &(g);                                                                  \
        atomic_signal_fence(memory_order_seq_cst);                                               \
    } while (0)
#define GUARD_OFF()                                                                              \
    do {                                                                                         \
        atomic_signal_fence(memory_order_seq_cst);                                               \
        t_capture_guard = NULL;                                                                  \
    } while (0)
static struct sigaction g_prev_segv, g_prev_bus;
static int g_fault_guard_installed = 0;

static void
on_fault(int sig, siginfo_t *si, void *uc)
{
    sigjmp_buf *guard = t_capture_guard;
    if (guard != NULL) {
        t_capture_guard = NULL;
        siglongjmp(*guard, 1);
    }
    struct sigaction *prev = sig == SIGSEGV ? &g_prev_segv : &g_prev_bus;
    if (prev->sa_flags & SA_SIGINFO) {
        prev->sa_sigaction(sig, si, uc);
        return;
    }
    if (prev->sa_handler == SIG_IGN) {
        return;
    }
    if (prev->sa_handler != SIG_DFL) {
        prev->sa_handler(sig);
        return;
    }
    /* default action: restore it; the faulting instruction runs again and
     * the process dies of the signal as it would have without us */
    sigaction(sig, prev, NULL);
}

static void
install_fault_guard(void)
{
    if (g_fault_guard_installed) {
        return;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &g_prev_segv) == 0 && sigaction(SIGBUS, &sa, &g_prev_bus) == 0) {
        g_fault_guard_installed = 1;
    }
}

/* ---- context values seen by captures not resolved yet ------------------ */

/* A handler records the OTel context value it captured here, with the tick
 * that will resolve it; the runtime context (_context.c) asks at detach
 * whether the value being dropped is one of them, and keeps it alive until
 * that tick is resolved. So only the few contexts a pending capture saw are
 * retained, not every recent one (each retained context keeps its span alive
 * for the application's garbage collector to walk: ~7 µs per span for a ring
 * of 2,048). A cell is one word, (pointer >> 3) << 16 | tick & 0xffff, so
 * handlers on several threads update it with a single compare-and-swap. */
#define PEND_CELLS 4096 /* power of two */
#define PEND_PROBE 8
static _Atomic uint64_t g_pend[PEND_CELLS];
static _Atomic uint32_t g_pend_resolved; /* seq of the last tick resolved */
static _Atomic int g_pend_on;            /* a sampler is capturing and resolving */
static _Atomic uint32_t g_pend_full;     /* 0x10000 | tick: a value went unrecorded */

static inline int
pend_seq_pending(int seq)
{
    uint16_t resolved = (uint16_t)atomic_load_explicit(&g_pend_resolved, memory_order_acquire);
    return atomic_load_explicit(&g_pend_on, memory_order_relaxed) &&
           (int16_t)((uint16_t)seq - resolved) > 0;
}

static inline uint32_t
ptr_hash(const void *p)
{
    return (uint32_t)spanprof_ptr_hash(p);
}

/* Async-signal-safe: atomics only. */
static void
pend_record(const void *value, uint64_t seq)
{
    uint64_t key = (uint64_t)(uintptr_t)value >> 3;
    uint64_t want = key << 16 | (seq & 0xffff);
    uint32_t h = ptr_hash(value);
    for (int i = 0; i < PEND_PROBE; i++) {
        _Atomic uint64_t *cell = &g_pend[(h + (uint32_t)i) & (PEND_CELLS - 1)];
        uint64_t w = atomic_load(cell);
        for (;;) {
            if (w >> 16 == key) {
                if ((int16_t)((uint16_t)seq - (uint16_t)w) <= 0 ||
                    atomic_compare_exchange_weak(cell, &w, want)) {
                    return; /* it is recorded with this tick or a later one */
                }
                continue;
            }
            if (w != 0 && pend_seq_pending((int)(w & 0xffff))) {
                break; /* another value's: try the next cell */
            }
            if (atomic_compare_exchange_weak(cell, &w, want)) {
                return;
            }
        }
    }
    /* No room: until this tick is resolved every detached value is kept. */
    atomic_store(&g_pend_full, 0x10000u | (uint32_t)(seq & 0xffff));
}

static int
pend_value_pending(const void *value)
{
    uint32_t full = atomic_load(&g_pend_full);
    if (full && pend_seq_pending((int)(full & 0xffff))) {
        return (int)(full & 0xffff);
    }
    uint64_t key = (uint64_t)(uintptr_t)value >> 3;
    uint32_t h = ptr_hash(value);
    int found = -1;
    for (int i = 0; i < PEND_PROBE; i++) {
        uint64_t w = atomic_load(&g_pend[(h + (uint32_t)i) & (PEND_CELLS - 1)]);
        if (w >> 16 == key && pend_seq_pending((int)(w & 0xffff)) &&
            (found < 0 || (int16_t)((uint16_t)w - (uint16_t)found) > 0)) {
            found = (int)(w & 0xffff);
        }
    }
    return found;
}

/* Resolver: every capture of ticks up to `seq` has its value referenced. */
static void
pend_resolved(uint64_t seq)
{
    atomic_store_explicit(&g_pend_resolved, (uint32_t)seq, memory_order_release);
    for (int i = 0; i < PEND_CELLS; i++) {
        uint64_t w = atomic_load_explicit(&g_pend[i], memory_order_relaxed);
        if (w != 0 && !pend_seq_pending((int)(w & 0xffff))) {
            /* free it before its tick number comes round again */
            atomic_compare_exchange_strong(&g_pend[i], &w, 0);
        }
    }
    uint32_t full = atomic_load(&g_pend_full);
    if (full && !pend_seq_pending((int)(full & 0xffff))) {
        atomic_compare_exchange_strong(&g_pend_full, &full, 0);
    }
}

static void
pend_start(void)
{
    for (int i = 0; i < PEND_CELLS; i++) {
        atomic_store_explicit(&g_pend[i], 0, memory_order_relaxed);
    }
    atomic_store(&g_pend_full, 0);
    atomic_store(&g_pend_resolved, 0);
    atomic_store(&g_pend_on, 1);
}

static const spanprof_pending_api g_pending_api = {
    SPANPROF_PENDING_VERSION,
    pend_value_pending,
    pend_seq_pending,
};

/* The registered ContextVar (and its HAMT hash), read by the handler. */
static PyObject *_Atomic g_var = NULL;
static int32_t g_var_hash = 0;

static PyObject *
hamt_find(PyObject *hamt, PyObject *key, int32_t hash)
{
    PyObject *node = plausible(hamt) ? ((hamt_t *)hamt)->h_root : NULL;
    uint32_t shift = 0;
    for (int depth = 0; plausible(node) && depth < 8; depth++, shift += 5) {
        const char *kind = Py_TYPE(node)->tp_name; /* "hamt_<kind>_node" */
        uint32_t mask = ((uint32_t)hash >> shift) & 0x1f;
        if (strcmp(kind, "hamt_bitmap_node") == 0) {
            hamt_bitmap_t *b = (hamt_bitmap_t *)node;
            uint32_t bit = 1U << mask;
            if (!(b->b_bitmap & bit)) {
                return NULL;
            }
            uint32_t idx = (uint32_t)__builtin_popcount(b->b_bitmap & (bit - 1));
            PyObject *k = b->b_array[2 * idx];
            PyObject *v = b->b_array[2 * idx + 1];
            if (k == NULL) {
                node = v; /* a sub-node */
                continue;
            }
            return k == key ? v : NULL;
        }
        if (strcmp(kind, "hamt_array_node") == 0) {
            node = ((hamt_array_t *)node)->a_array[mask];
            continue;
        }
        if (strcmp(kind, "hamt_collision_node") == 0) {
            hamt_collision_t *c = (hamt_collision_t *)node;
            for (Py_ssize_t i = 0; i + 1 < Py_SIZE(c); i += 2) {
                if (c->c_array[i] == key) {
                    return c->c_array[i + 1];
                }
            }
            return NULL;
        }
        return NULL;
    }
    return NULL;
}

static void
capture_tstate(PyThreadState *ts, slot_t *slot, int max_depth)
{
    int depth = 0;
    slot->tstate = ts;
    slot->truncated = 0;
    slot->value = NULL;
    if (ts == NULL) {
        slot->depth = -1;
        return;
    }
    PyObject *var = atomic_load_explicit(&g_var, memory_order_acquire);
    PyObject *ctx = ts->context;
    if (var != NULL && plausible(ctx)) {
        slot->value = hamt_find((PyObject *)((PyContext *)ctx)->ctx_vars, var, g_var_hash);
    }
    int guard = 2 * max_depth + 64;
#if PY_VERSION_HEX >= 0x030B0000
#if PY_VERSION_HEX >= 0x030D0000
    _PyInterpreterFrame *f = ts->current_frame;
#else
    _PyInterpreterFrame *f = ts->cframe ? ts->cframe->current_frame : NULL;
#endif
    while (f != NULL && guard-- > 0) {
        if (!plausible(f)) {
            slot->depth = -1; /* a frame being pushed: not a stack to trust */
            return;
        }
#if PY_VERSION_HEX >= 0x030C0000
        if (f->owner == FRAME_OWNED_BY_CSTACK) {
            f = f->previous;
            continue;
        }
#endif
        if (depth == max_depth) {
            slot->truncated = 1;
            break;
        }
#if PY_VERSION_HEX >= 0x030D0000
        PyObject *exe = f->f_executable;
        slot->frames[depth].code = exe;
        slot->frames[depth].name =
            plausible(exe) && Py_TYPE(exe) == &PyCode_Type ? (void *)((PyCodeObject *)exe)->co_name
                                                           : NULL;
        slot->frames[depth].instr = (intptr_t)f->instr_ptr;
#else
        slot->frames[depth].code = f->f_code;
        slot->frames[depth].name = plausible(f->f_code) ? f->f_code->co_name : NULL;
        slot->frames[depth].instr = (intptr_t)f->prev_instr;
#endif
        depth++;
        f = f->previous;
    }
#else
    PyFrameObject *f = ts->frame;
    while (f != NULL && guard-- > 0) {
        if (!plausible(f)) {
            slot->depth = -1;
            return;
        }
        if (depth == max_depth) {
            slot->truncated = 1;
            break;
        }
        slot->frames[depth].code = f->f_code;
        slot->frames[depth].name = plausible(f->f_code) ? f->f_code->co_name : NULL;
        slot->frames[depth].instr = (intptr_t)f->f_lasti;
        depth++;
        f = f->f_back;
    }
#endif
    slot->depth = depth;
}

static void
on_signal(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    int saved_errno = errno;
    SamplerObject *s = atomic_load_explicit(&g_active, memory_order_acquire);
    if (s == NULL || si == NULL) {
        goto out;
    }
    int idx = si->si_value.sival_int;
    slot_t *slot;
    timer_rec_t *timer = NULL;
    uint64_t ran = 0;
    if (si->si_code > 0) { /* POLL_IN from a timer's perf event (F_SETSIG) */
        if (si->si_fd < 0 || si->si_fd >= FD_MAP || (idx = s->fd_timer[si->si_fd]) < 0) {
            goto out;
        }
        timer = &s->timers[idx];
        pid_t tid = (pid_t)syscall(SYS_gettid);
        if (atomic_load(&timer->tid) != tid || timer->fd != si->si_fd) {
            goto out; /* a late signal of a dropped timer */
        }
        /* jitter: the next period is uniform in [0.5, 1.5] x interval */
        uint64_t period = (uint64_t)atomic_load(&s->interval_ns);
        period = period / 2 + xorshift(&timer->rng) % (period + 1);
        ioctl(timer->fd, PERF_EVENT_IOC_PERIOD, &period);
        ran = timer->period; /* the period that just ended */
        timer->period = period;
        unsigned n = atomic_load(&timer->next);
        slot = slot_at(s, timer_slot(s, idx, n));
        int expected = SLOT_FREE;
        if (!atomic_compare_exchange_strong(&slot->state, &expected, SLOT_WRITING)) {
            atomic_fetch_add(&s->timer_overruns, 1); /* not collected yet: skip this one */
            timer->prev_cpu = 0;
            goto out;
        }
        slot->tid = tid;
        slot->time_ns = now_ns(CLOCK_REALTIME);
    }
    else if (si->si_code == SI_QUEUE) {
        if (idx < 0 || idx >= RING * s->nslots) {
            goto out;
        }
        slot = slot_at(s, idx);
        if (slot->tid != (pid_t)syscall(SYS_gettid)) {
            goto out;
        }
        int expected = SLOT_REQUESTED;
        if (!atomic_compare_exchange_strong(&slot->state, &expected, SLOT_WRITING)) {
            goto out;
        }
    }
    else {
        goto out;
    }
    sigjmp_buf guard;
    if (sigsetjmp(guard, 0) == 0) { /* no mask to save: the guard's handler is SA_NODEFER */
        GUARD_ON(guard);
        capture_tstate(PyGILState_GetThisThreadState(), slot, s->max_depth);
    }
    else {
        slot->depth = -1; /* the walk faulted: no stack from here */
        atomic_fetch_add(&s->faults, 1);
    }
    GUARD_OFF();
    if (timer != NULL) {
        /* after the walk: a later reading equal to this one means the thread
         * has not run since, and this stack still holds */
        slot->cpu_ns = now_ns(CLOCK_THREAD_CPUTIME_ID);
        slot->wall_ns = now_ns(CLOCK_MONOTONIC);
        /* What sampling cost this thread: the CPU it used beyond the period
         * between two captures (the interrupt, the signal's delivery and
         * return, this handler). Only when the timer counts kernel time too. */
        int64_t extra = slot->cpu_ns - timer->prev_cpu - (int64_t)ran;
        if (timer->prev_cpu > 0 && !s->timer_user_only && extra > 0 && extra < (int64_t)ran) {
            atomic_fetch_add(&s->capture_cost_ns, extra);
        }
        timer->prev_cpu = slot->cpu_ns;
    }
    void *value = slot->depth >= 0 ? slot->value : NULL;
    atomic_store(&slot->state, SLOT_DONE);
    if (timer != NULL) {
        atomic_fetch_add(&timer->next, 1);
        if (value != NULL) {
            /* collected by a tick no later than two after the last finished */
            pend_record(value, atomic_load(&s->ticks) + 2);
        }
    }
    else {
        if (value != NULL) {
            pend_record(value, s->ring[idx / s->nslots].seq);
        }
        if (atomic_load(&s->waiting)) {
            sem_post(&s->done); /* a syscall: only when the ticker sleeps on it */
        }
    }
out:
    errno = saved_errno;
}

/* ---- safe reads of possibly stale pointers ------------------------------ */

static int
safe_read(const void *addr, void *buf, size_t n)
{
    if (g_fault_guard_installed) {
        /* a plain read, guarded: process_vm_readv pins the page (~10 µs on a
         * VM, most of what resolving a capture cost) */
        if (!plausible(addr)) {
            return -1;
        }
        sigjmp_buf guard;
        if (sigsetjmp(guard, 0) != 0) { /* SA_NODEFER: no mask to restore */
            return -1;
        }
        GUARD_ON(guard);
        memcpy(buf, addr, n);
        GUARD_OFF();
        return 0;
    }
    if (g_safe_read_mode == 0) {
        struct iovec local = {buf, n};
        struct iovec remote = {(void *)addr, n};
        ssize_t r = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
        if (r == (ssize_t)n) {
            return 0;
        }
        if (r < 0 && (errno == ENOSYS || errno == EPERM)) {
            g_safe_read_mode = 1;
        }
        else {
            return -1;
        }
    }
    if (g_pipe[0] < 0 && pipe(g_pipe) != 0) {
        return -1;
    }
    if (write(g_pipe[1], addr, n) != (ssize_t)n) {
        return -1;
    }
    return read(g_pipe[0], buf, n) == (ssize_t)n ? 0 : -1;
}

/* A pointer seen by a handler may point at freed memory by now. Trust it only
 * if a safe read shows a live object of the expected type. */
static int
looks_alive(const void *p, PyTypeObject *type)
{
    if (p == NULL || ((uintptr_t)p & (sizeof(void *) - 1)) != 0) {
        return 0;
    }
    PyObject head;
    if (safe_read(p, &head, sizeof(head)) != 0) {
        return 0;
    }
    Py_ssize_t rc = head.ob_refcnt;
    return Py_TYPE(&head) == type && rc > 0 && rc < ((Py_ssize_t)1 << 40);
}

/* ---- code table --------------------------------------------------------- */

/* The code map (pointer -> id) with `cap` entries, zeroed by writing: see
 * ring_slot() on why a first access should be a write. */
static int
code_map_alloc(SamplerObject *s, uint32_t cap)
{
    void **keys = PyMem_RawMalloc(cap * sizeof(void *));
    uint32_t *ids = PyMem_RawMalloc(cap * sizeof(uint32_t));
    if (keys == NULL || ids == NULL) {
        PyMem_RawFree(keys);
        PyMem_RawFree(ids);
        return -1;
    }
    memset(keys, 0, cap * sizeof(void *));
    memset(ids, 0, cap * sizeof(uint32_t));
    for (uint32_t i = 0; i < s->map_cap; i++) {
        if (s->map_keys[i] != NULL) {
            uint32_t h = ptr_hash(s->map_keys[i]) & (cap - 1);
            while (keys[h] != NULL) {
                h = (h + 1) & (cap - 1);
            }
            keys[h] = s->map_keys[i];
            ids[h] = s->map_ids[i];
        }
    }
    PyMem_RawFree(s->map_keys);
    PyMem_RawFree(s->map_ids);
    s->map_keys = keys;
    s->map_ids = ids;
    s->map_cap = cap;
    return 0;
}

/* Id of a code object pointer; validates and keeps alive a first-seen one.
 * Needs the GIL. */
static uint32_t
code_id(SamplerObject *s, void *p, void *name, int trusted)
{
    uint32_t mask = s->map_cap - 1;
    uint32_t h = ptr_hash(p) & mask;
    for (;;) {
        void *k = s->map_keys[h];
        if (k == p) {
            return s->map_ids[h];
        }
        if (k == NULL) {
            break;
        }
        h = (h + 1) & mask;
    }
    if (s->ncodes >= MAX_CODES) {
        return CODE_ID_UNKNOWN;
    }
    if (!trusted && (!looks_alive(p, &PyCode_Type) || ((PyCodeObject *)p)->co_name != name)) {
        /* freed since the capture, or its memory reused by another code object */
        s->rejected_frames++;
        return CODE_ID_UNKNOWN;
    }
    if (trusted && (p == NULL || !PyCode_Check((PyObject *)p))) {
        return CODE_ID_UNKNOWN;
    }
    if (2 * (s->ncodes + 1) > s->map_cap) {
        if (code_map_alloc(s, 2 * s->map_cap) != 0) {
            return CODE_ID_UNKNOWN;
        }
        h = ptr_hash(p) & (s->map_cap - 1);
        while (s->map_keys[h] != NULL) {
            h = (h + 1) & (s->map_cap - 1);
        }
    }
    uint32_t id = s->ncodes++;
    Py_INCREF((PyObject *)p);
    s->codes[id] = (PyObject *)p;
    s->map_keys[h] = p;
    s->map_ids[h] = id;
    return id;
}

/* Byte offset of the instruction a frame is at, or -1 if it is not inside
 * the code object (a frame still being set up). */
static int32_t
frame_offset(PyObject *code, intptr_t instr)
{
    PyCodeObject *co = (PyCodeObject *)code;
#if PY_VERSION_HEX >= 0x030B0000
    intptr_t base = (intptr_t)_PyCode_CODE(co);
    intptr_t units = (instr - base) / (intptr_t)sizeof(_Py_CODEUNIT);
    if (instr < base || units >= Py_SIZE(co)) {
        return -1;
    }
#if PY_VERSION_HEX >= 0x030D0000
    /* instr_ptr is the instruction executing or about to begin */
    return (int32_t)(units * sizeof(_Py_CODEUNIT));
#else
    if (units < co->_co_firsttraceable) {
        return -1;
    }
    return (int32_t)(units * sizeof(_Py_CODEUNIT));
#endif
#else
    Py_ssize_t nunits = PyBytes_GET_SIZE(co->co_code) / (Py_ssize_t)sizeof(_Py_CODEUNIT);
    if (instr < 0 || instr >= nunits) {
        return -1;
    }
    return (int32_t)(instr * sizeof(_Py_CODEUNIT));
#endif
}

/* ---- the Sampler type --------------------------------------------------- */

static int
grow(void **arr, Py_ssize_t *cap, Py_ssize_t need, size_t item)
{
    if (need <= *cap) {
        return 0;
    }
    Py_ssize_t ncap = *cap ? *cap : 64;
    while (ncap < need) {
        ncap *= 2;
    }
    void *n = PyMem_RawRealloc(*arr, (size_t)ncap * item);
    if (n == NULL) {
        return -1;
    }
    *arr = n;
    *cap = ncap;
    return 0;
}

static int
signal_is_free(int signum)
{
    struct sigaction old;
    if (sigaction(signum, NULL, &old) != 0) {
        return 0;
    }
    if (old.sa_flags & SA_SIGINFO) {
        return old.sa_sigaction == on_signal;
    }
    if (old.sa_handler == SIG_DFL) {
        return 1;
    }
    return old.sa_handler == SIG_IGN && signum == g_installed_signum;
}

static int
install_handler(int signum)
{
    install_fault_guard();
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(signum, &sa, NULL) != 0) {
        return -1;
    }
    g_installed_signum = signum;
    return 0;
}

static void
sampler_release(SamplerObject *s)
{
    if (atomic_load(&g_active) == s) {
        atomic_store(&g_active, NULL);
        if (s->signum) {
            /* Ignore (and so discard) any signal still pending on a thread;
             * the default action of a real-time signal would kill it. */
            struct sigaction sa;
            memset(&sa, 0, sizeof(sa));
            sa.sa_handler = SIG_IGN;
            sigemptyset(&sa.sa_mask);
            sigaction(s->signum, &sa, NULL);
        }
    }
    /* A handler that already loaded g_active may still be writing a slot.
     * Bounded: after fork() a slot can stay WRITING for a thread that no
     * longer exists. */
    int64_t deadline = now_ns(CLOCK_MONOTONIC) + 100000000;
    for (int i = 0; s->slots && i < nslots_total(s); i++) {
        int timer = (i - RING * s->nslots) / TIMER_SLOTS;
        if (i < RING * s->nslots ? i % s->nslots >= s->most_used
                                 : i < nslots_total(s) - 1 && timer >= s->timers_used) {
            continue; /* never used: not read, so never paged in (16 MB of them) */
        }
        slot_t *slot = slot_at(s, i);
        while (atomic_load(&slot->state) == SLOT_WRITING && now_ns(CLOCK_MONOTONIC) < deadline) {
            sched_yield();
        }
    }
}

static void clear_samples(SamplerObject *s);
static void clear_stacks(SamplerObject *s);

static void
Sampler_dealloc(SamplerObject *s)
{
    if (!s->closed) {
        sampler_release(s);
    }
    if (s->codes) {
        for (uint32_t i = 0; i < s->ncodes; i++) {
            Py_XDECREF(s->codes[i]);
        }
    }
    for (Py_ssize_t i = 0; s->threads && i < s->nthreads; i++) {
        clear_record(&s->threads[i]);
    }
    clear_samples(s);
    clear_stacks(s);
    PyMem_RawFree(s->samples);
    PyMem_RawFree(s->stacks);
    PyMem_RawFree(s->codes);
    PyMem_RawFree(s->map_keys);
    PyMem_RawFree(s->map_ids);
    PyMem_RawFree(s->slots);
    PyMem_RawFree(s->touched);
    PyMem_RawFree(s->threads);
    PyMem_RawFree(s->next_threads);
    PyMem_RawFree(s->pub);
    PyMem_RawFree(s->known);
    PyMem_RawFree(s->pack);
    PyMem_RawFree(s->timers);
    PyMem_RawFree(s->fd_timer);
    for (int i = 0; i < RING; i++) {
        PyMem_RawFree(s->ring[i].entries);
    }
    if (s->rng) { /* set once the semaphores and lock exist */
        sem_destroy(&s->done);
        sem_destroy(&s->wake);
        sem_destroy(&s->batch);
        pthread_mutex_destroy(&s->pub_lock);
    }
    Py_XDECREF(s->value_type);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static int
Sampler_init(SamplerObject *s, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"max_depth", "signum", "slots", "timeout", "cpu_timers", NULL};
    int max_depth = 128, signum = 0, nslots = 16, cpu_timers = 0;
    double timeout = 0.02;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|iiidp", kwlist, &max_depth, &signum,
                                     &nslots, &timeout, &cpu_timers)) {
        return -1;
    }
    if (s->slots != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Sampler already initialised");
        return -1;
    }
    if (max_depth < 1 || max_depth > 4096) {
        PyErr_SetString(PyExc_ValueError, "max_depth must be within 1..4096");
        return -1;
    }
    if (nslots < 1 || nslots > 4096) {
        PyErr_SetString(PyExc_ValueError, "slots must be within 1..4096");
        return -1;
    }
    if (timeout <= 0 || timeout > 1) {
        PyErr_SetString(PyExc_ValueError, "timeout must be within (0, 1] seconds");
        return -1;
    }
    if (signum != 0 && (signum < SIGRTMIN || signum > SIGRTMAX)) {
        PyErr_Format(PyExc_ValueError, "signal %d is not a real-time signal (%d..%d)", signum,
                     SIGRTMIN, SIGRTMAX);
        return -1;
    }
    s->max_depth = max_depth;
    s->nslots = nslots;
    s->cpu_timers = cpu_timers;
    s->timeout_ns = (int64_t)(timeout * 1e9);
    s->slot_size = sizeof(slot_t) + (size_t)max_depth * sizeof(raw_frame_t);
    s->slot_size = (s->slot_size + 63) & ~(size_t)63;
    s->slots = PyMem_RawCalloc((size_t)nslots_total(s), s->slot_size);
    s->touched = PyMem_RawCalloc((size_t)(RING * nslots), 1);
    s->map_cap = 0;
    if (code_map_alloc(s, CODE_MAP_FIRST) != 0) {
        s->map_keys = NULL;
    }
    s->codes = PyMem_RawCalloc(MAX_CODES, sizeof(PyObject *));
    s->pack = PyMem_RawMalloc((size_t)(max_depth + 1) * 8);
    s->timers = PyMem_RawCalloc(MAX_TIMERS, sizeof(timer_rec_t));
    s->fd_timer = PyMem_RawMalloc(FD_MAP * sizeof(int16_t));
    if (!s->slots || !s->touched || !s->map_keys || !s->map_ids || !s->codes || !s->pack || !s->timers ||
        !s->fd_timer) {
        PyErr_NoMemory();
        return -1;
    }
    if (sem_init(&s->done, 0, 0) != 0 || sem_init(&s->wake, 0, 0) != 0 ||
        sem_init(&s->batch, 0, 0) != 0 || pthread_mutex_init(&s->pub_lock, NULL) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    s->rng = (uint64_t)now_ns(CLOCK_MONOTONIC) ^ ((uint64_t)getpid() << 32) ^
             0x9E3779B97F4A7C15ULL;
    for (int i = 0; i < FD_MAP; i++) {
        s->fd_timer[i] = -1;
    }
    struct rlimit nofile;
    s->max_timer_fd = FD_MAP;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY &&
        nofile.rlim_cur / 2 < FD_MAP) {
        s->max_timer_fd = (int)(nofile.rlim_cur / 2);
    }
    s->ncodes = CODE_ID_FIRST;
    if (signum != 0) {
        if (atomic_load(&g_active) != NULL) {
            PyErr_SetString(PyExc_RuntimeError, "another spanprof sampler is active");
            return -1;
        }
        if (!signal_is_free(signum)) {
            PyErr_Format(PyExc_OSError, "signal %d is already in use by the application",
                         signum);
            return -1;
        }
        if (install_handler(signum) != 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        s->signum = signum;
        atomic_store(&g_active, s);
    }
    return 0;
}

/* ---- phases A and B: the ticker, no GIL, no Python API ------------------- */

/* ---- CPU timers (ticker) --------------------------------------------------- */

static void
timer_drop(SamplerObject *s, known_t *k)
{
    if (k->timer >= 0) {
        timer_rec_t *t = &s->timers[k->timer];
        s->fd_timer[t->fd] = -1;
        atomic_store(&t->tid, 0);
        uint64_t id = 0;
        /* the application may have closed it (and reused its number) */
        if (ioctl(t->fd, PERF_EVENT_IOC_ID, &id) == 0 && id == t->id) {
            close(t->fd);
        }
        t->fd = -1;
        s->ntimers--;
        /* Its slots still queued are freed by the resolver; those not
         * collected yet are dropped here (a late handler finds tid 0). */
        for (unsigned n = t->collected; n != atomic_load(&t->next); n++) {
            slot_t *slot = slot_at(s, timer_slot(s, k->timer, n));
            int expected = SLOT_DONE;
            atomic_compare_exchange_strong(&slot->state, &expected, SLOT_FREE);
        }
    }
    k->timer = -1;
}

static void
timer_set(timer_rec_t *t, int64_t interval)
{
    uint64_t period = (uint64_t)interval;
    ioctl(t->fd, PERF_EVENT_IOC_PERIOD, &period);
    t->prev_cpu = 0; /* (its handler may race with this: at worst one estimate is off) */
}

/* Does thread `tid` block signal `signum` (its SigBlk in /proc)? -1: unknown.
 * No Python API, no allocation: the ticker calls it. */
static int
blocks_signal(pid_t tid, int signum)
{
    char path[64], buf[4096];
    snprintf(path, sizeof(path), "/proc/self/task/%d/status", (int)tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) {
        return -1;
    }
    buf[n] = '\0';
    char *line = strstr(buf, "\nSigBlk:");
    if (line == NULL) {
        return -1;
    }
    unsigned long long mask = strtoull(line + 8, NULL, 16);
    return (int)((mask >> (signum - 1)) & 1);
}

/* Give thread `k` a perf event on its CPU time that signals it every interval. */
static void
timer_arm(SamplerObject *s, known_t *k)
{
    if (blocks_signal(k->tid, s->signum) != 0) {
        k->timer = -2; /* (or unknown) its signals would pile up: the ticker's, bounded */
        return;
    }
    int r = -1, busy = 0;
    for (int i = 0; i < MAX_TIMERS && r < 0; i++) {
        if (atomic_load(&s->timers[i].tid) != 0) {
            continue;
        }
        /* A free record's slots: captures a late handler finished after the
         * timer was dropped are stale; queued ones are the resolver's to free. */
        int ready = 1;
        for (int j = 0; j < TIMER_SLOTS; j++) {
            slot_t *slot = slot_at(s, timer_slot(s, i, (unsigned)j));
            int expected = SLOT_DONE;
            atomic_compare_exchange_strong(&slot->state, &expected, SLOT_FREE);
            ready &= atomic_load(&slot->state) == SLOT_FREE;
        }
        if (ready) {
            r = i;
        }
        else {
            busy = 1;
        }
    }
    if (r < 0) {
        k->timer = busy ? -1 : -2; /* -1: try again at the next tick; -2: out of timers */
        return;
    }
    if (r >= s->timers_used) {
        s->timers_used = r + 1;
    }
    timer_rec_t *t = &s->timers[r];
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.size = sizeof(attr);
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_TASK_CLOCK;
    attr.sample_period = (uint64_t)s->armed_interval;
    attr.disabled = 1;
    /* Counting its time in the kernel too (in a system call the thread's
     * Python stack is where it called from) needs CAP_PERFMON or
     * perf_event_paranoid <= 1; otherwise a period that ends in the kernel
     * is skipped (the ticker signals a thread its timer missed). */
    attr.exclude_kernel = s->timer_user_only;
    attr.exclude_hv = 1;
    int fd = (int)syscall(SYS_perf_event_open, &attr, k->tid, -1, -1, PERF_FLAG_FD_CLOEXEC);
    if (fd < 0 && !s->timer_user_only && (errno == EACCES || errno == EPERM)) {
        s->timer_user_only = 1;
        attr.exclude_kernel = 1;
        fd = (int)syscall(SYS_perf_event_open, &attr, k->tid, -1, -1, PERF_FLAG_FD_CLOEXEC);
    }
    if (fd < 0) {
        if (errno == ESRCH) {
            k->timer = -2; /* the thread has exited */
            return;
        }
        s->timer_errno = errno; /* not allowed here: the ticker signals running threads */
        s->use_timers = 0;
        k->timer = -2;
        return;
    }
    struct f_owner_ex owner = {F_OWNER_TID, k->tid};
    if (fd >= s->max_timer_fd || fcntl(fd, F_SETSIG, s->signum) != 0 ||
        fcntl(fd, F_SETOWN_EX, &owner) != 0 || ioctl(fd, PERF_EVENT_IOC_ID, &t->id) != 0) {
        close(fd);
        k->timer = -2;
        return;
    }
    t->fd = fd;
    t->rng = s->rng ^ ((uint64_t)k->tid << 17) ^ 0x2545F4914F6CDD1DULL;
    t->period = (uint64_t)s->armed_interval;
    t->prev_cpu = 0;
    t->collected = atomic_load(&t->next);
    atomic_store(&t->tid, k->tid); /* before the first signal can arrive */
    s->fd_timer[fd] = (int16_t)r;
    if (fcntl(fd, F_SETFL, O_ASYNC) != 0 || ioctl(fd, PERF_EVENT_IOC_ENABLE, 0) != 0) {
        s->fd_timer[fd] = -1;
        atomic_store(&t->tid, 0);
        close(fd);
        k->timer = -2;
        return;
    }
    k->timer = r;
    k->timer_cpu_ns = k->cpu_ns;
    s->ntimers++;
}

static void
timers_drop_all(SamplerObject *s)
{
    for (Py_ssize_t i = 0; i < s->nknown; i++) {
        timer_drop(s, &s->known[i]);
    }
}

/* Refresh the ticker's thread list from the one the resolver published. */
static void
refresh_known(SamplerObject *s)
{
    pthread_mutex_lock(&s->pub_lock);
    if (s->pub_version != s->known_version &&
        grow((void **)&s->known, &s->cap_known, s->npub, sizeof(known_t)) == 0) {
        /* Keep the ticker's own last reading (and timer) for threads it
         * already knew; drop the timers of threads no longer listed. */
        Py_ssize_t hint = 0;
        for (Py_ssize_t i = 0; i < s->npub; i++) {
            known_t k = s->pub[i];
            k.hot = 1; /* read it at the next tick */
            k.timer = -1;
            k.timer_cpu_ns = k.cpu_ns;
            k.since_post = 0;
            k.misses = 0;
            /* both lists are in thread state order: walk from the last match */
            for (Py_ssize_t step = 0; step < s->nknown; step++) {
                Py_ssize_t j = hint + step < s->nknown ? hint + step : hint + step - s->nknown;
                if (s->known[j].tid == k.tid) {
                    if (s->known[j].cpu_ns > k.cpu_ns) {
                        k.cpu_ns = s->known[j].cpu_ns;
                    }
                    k.hot = s->known[j].hot;
                    k.timer = s->known[j].timer;
                    k.timer_cpu_ns = s->known[j].timer_cpu_ns;
                    k.misses = s->known[j].misses;
                    s->known[j].timer = -1; /* carried over */
                    hint = j + 1;
                    break;
                }
            }
            s->pub[i] = k;
        }
        timers_drop_all(s); /* those not carried over */
        memcpy(s->known, s->pub, (size_t)s->npub * sizeof(known_t));
        s->nknown = s->npub;
        s->known_version = s->pub_version;
    }
    pthread_mutex_unlock(&s->pub_lock);
}

/* Capture a thread that is not running (it waits for the GIL, a lock, I/O)
 * from the ticker, with no signal: its CPU clock reads `cpu` before and after
 * the walk, so it did not run meanwhile, its frame chain held still, and the
 * context value recorded as pending could not be detached before it was.
 * Waking it for a handler costs a thread wake-up (~100 µs of CPU on a VM) and
 * may preempt the thread that holds the GIL. Returns 1 if captured. */
static int
capture_still(SamplerObject *s, known_t *k, int64_t cpu, slot_t *slot, uint64_t seq)
{
    if (k->tstate == NULL || !g_fault_guard_installed || thread_cpu_ns(k->tid) != cpu) {
        return 0; /* running now: the caller may signal it */
    }
    slot->tid = k->tid;
    atomic_store(&slot->state, SLOT_WRITING);
    sigjmp_buf guard;
    if (sigsetjmp(guard, 0) == 0) { /* no mask to save: the guard's handler is SA_NODEFER */
        GUARD_ON(guard);
        capture_tstate((PyThreadState *)k->tstate, slot, s->max_depth);
    }
    else {
        slot->depth = -1;
        atomic_fetch_add(&s->faults, 1);
    }
    GUARD_OFF();
    if (slot->depth >= 0 && slot->value != NULL) {
        pend_record(slot->value, seq); /* before the clock is read again */
    }
    if (slot->depth < 0 || thread_cpu_ns(k->tid) != cpu) {
        atomic_store(&slot->state, SLOT_FREE);
        return 0;
    }
    atomic_store(&slot->state, SLOT_DONE);
    s->still_captures++;
    return 1;
}

/* The ring slot `idx` for the ticker to use. Its memory is touched by a write
 * first: a never-touched page read first is mapped to the shared zero page,
 * and the write after it then replaces that mapping, which flushes the TLB of
 * every CPU running the process (an inter-processor interrupt: a VM exit on
 * the CPU running the application). ~750 such faults per 3 s run at start,
 * before this. */
static slot_t *
ring_slot(SamplerObject *s, int idx)
{
    slot_t *slot = slot_at(s, idx);
    if (!s->touched[idx]) {
        atomic_store(&slot->state, SLOT_FREE); /* never used: nothing to overwrite */
        s->touched[idx] = 1;
    }
    return slot;
}

/* One tick: read clocks, capture threads that stand still, signal running
 * ones. Returns 0 if the tick was queued (no thread to signal), 1 if it waits
 * for its handlers (finish_tick()),
 * -1 if the queue was full. Call finish_tick() first. */
static int
ticker_step(SamplerObject *s)
{
    refresh_known(s);
    unsigned head = s->head;
    tick_rec_t *rec = &s->ring[head % RING];
    if (atomic_load_explicit(&rec->ready, memory_order_acquire)) {
        atomic_fetch_add(&s->dropped_ticks, 1);
        return -1; /* the resolver is behind (it cannot get the GIL) */
    }
    if (grow((void **)&rec->entries, (Py_ssize_t *)&rec->cap, s->nknown * (TIMER_SLOTS + 1),
             sizeof(tick_entry_t)) != 0) {
        atomic_fetch_add(&s->dropped_ticks, 1);
        return -1;
    }
    pid_t pid = s->pid;
    int base = (int)(head % RING) * s->nslots;
    int used = 0, signalled = 0;
    rec->n = 0;
    rec->time_ns = now_ns(CLOCK_REALTIME);
    Py_ssize_t stride = (s->nknown + PARKED_PER_TICK - 1) / PARKED_PER_TICK;
    uint64_t seq = atomic_load(&s->ticks) + 1;
    rec->seq = seq;
    for (Py_ssize_t i = 0; i < s->nknown; i++) {
        known_t *k = &s->known[i];
        if (stride > 1 && !k->hot && !s->read_all &&
            (uint64_t)i % (uint64_t)stride != seq % (uint64_t)stride) {
            continue; /* parked: read at its turn */
        }
        int64_t cpu = thread_cpu_ns(k->tid);
        int captures = 0;
        if (k->timer >= 0) {
            /* the timer's captures since the last tick, oldest first */
            timer_rec_t *t = &s->timers[k->timer];
            unsigned next = atomic_load(&t->next);
            for (; t->collected != next; t->collected++) {
                int idx = timer_slot(s, k->timer, t->collected);
                slot_t *slot = slot_at(s, idx);
                int expected = SLOT_DONE;
                if (!atomic_compare_exchange_strong(&slot->state, &expected, SLOT_QUEUED)) {
                    continue;
                }
                tick_entry_t *e = &rec->entries[rec->n++];
                e->tid = k->tid;
                e->slot = idx;
                e->used = 0;
                e->timer = 1;
                e->exact = 0;
                e->cpu_ns = slot->cpu_ns;
                e->wall_ns = slot->wall_ns;
                e->time_ns = slot->time_ns;
                k->timer_cpu_ns = slot->cpu_ns;
                captures++;
            }
            k->since_post += captures;
            if (k->since_post > s->most_captures) {
                s->most_captures = k->since_post;
            }
            if (cpu >= 0 && captures == 0 &&
                cpu - k->timer_cpu_ns > 8 * atomic_load(&s->interval_ns) &&
                atomic_load(&slot_at(s, timer_slot(s, k->timer, next))->state) == SLOT_FREE) {
                /* Ran well past its interval unseen: the app closed our event,
                 * or the thread blocks our signal. Never again a timer for it:
                 * signals queued to a thread that blocks them pile up, and with
                 * F_SETSIG a full queue falls back to SIGIO, which kills. */
                timer_drop(s, k);
                k->timer = -2;
            }
        }
        if (cpu < 0) {
            /* exited (its captures above still count) */
            timer_drop(s, k);
            k->timer = -2;
            continue;
        }
        /* Running: it used more than a trace of CPU since the last reading. A
         * parked thread woken by a signal (ours or not) uses a few µs. */
        int advanced = cpu - k->cpu_ns > RUNNING_MIN_CPU_NS;
        int moved = cpu != k->cpu_ns;
        k->cpu_ns = cpu;
        k->hot = advanced;
        if (s->use_timers && k->timer == -1) {
            timer_arm(s, k);
        }
        if (captures > 0 && !s->read_all) {
            continue; /* what it ran since its last capture goes with its next sample */
        }
        tick_entry_t *e = &rec->entries[rec->n++];
        e->tid = k->tid;
        e->slot = -1;
        e->used = 0;
        e->timer = 0;
        e->exact = 0;
        e->cpu_ns = cpu;
        e->wall_ns = now_ns(CLOCK_MONOTONIC);
        e->time_ns = rec->time_ns;
        if (moved && s->signum != 0 && used < s->nslots && k->timer < 0) {
            slot_t *slot = ring_slot(s, base + used);
            if (atomic_load(&slot->state) != SLOT_WRITING) {
                slot->known = (int)i;
                if (capture_still(s, k, cpu, slot, seq)) {
                    e->slot = base + used;
                    e->exact = 1;
                    used++;
                    continue;
                }
            }
        }
        if (!advanced || s->signum == 0 || used >= s->nslots || k->misses < 0) {
            continue; /* parked (or it blocks our signal: captured under the GIL) */
        }
        if (k->timer >= 0) {
            if (cpu - k->timer_cpu_ns <= atomic_load(&s->interval_ns)) {
                continue; /* its timer samples it */
            }
            k->timer_cpu_ns = cpu; /* its timer missed it (time in the kernel): signal it */
        }
        int idx = base + used;
        slot_t *slot = ring_slot(s, idx);
        if (atomic_load(&slot->state) == SLOT_WRITING) {
            continue; /* a late handler from an earlier round; leave it */
        }
        slot->tid = k->tid;
        slot->depth = 0;
        slot->known = (int)i;
        atomic_store(&slot->state, SLOT_REQUESTED);
        siginfo_t si;
        memset(&si, 0, sizeof(si));
        si.si_signo = s->signum;
        si.si_code = SI_QUEUE;
        si.si_pid = pid;
        si.si_uid = s->uid;
        si.si_value.sival_int = idx;
        if (syscall(SYS_rt_tgsigqueueinfo, pid, k->tid, s->signum, &si) != 0) {
            atomic_store(&slot->state, SLOT_FREE);
            continue;
        }
        e->slot = idx;
        used++;
        signalled++;
    }
    if (used > s->most_used) {
        s->most_used = used;
    }
    if (signalled == 0) {
        atomic_fetch_add(&s->ticks, 1);
        atomic_store_explicit(&rec->ready, 1, memory_order_release);
        s->head = head + 1;
        return 0;
    }
    s->pending = 1;
    s->pending_ns = now_ns(CLOCK_MONOTONIC);
    return 1;
}

/* Queue the tick signalled last (finish_tick() with it). Its handlers ran
 * long ago in the usual case: the ticker does not sleep on them (on a VM a
 * sleep and wake-up costs as much as the rest of a tick). Those that have not
 * answered within the timeout are abandoned; the resolver captures their
 * threads under the GIL. Returns 1 if a tick was queued. */
static int
finish_tick(SamplerObject *s)
{
    if (!s->pending) {
        return 0;
    }
    tick_rec_t *rec = &s->ring[s->head % RING];
    int64_t deadline = s->pending_ns + s->timeout_ns;
    struct timespec ts = {deadline / 1000000000, deadline % 1000000000};
    atomic_store(&s->waiting, 1);
    for (;;) {
        int left = 0;
        for (int i = 0; i < rec->n; i++) {
            if (rec->entries[i].slot >= 0 &&
                atomic_load(&slot_at(s, rec->entries[i].slot)->state) == SLOT_REQUESTED) {
                left++;
            }
        }
        if (left == 0 || (sem_clockwait(&s->done, CLOCK_MONOTONIC, &ts) != 0 && errno != EINTR)) {
            break;
        }
    }
    atomic_store(&s->waiting, 0);
    while (sem_trywait(&s->done) == 0) {
    }
    for (int i = 0; i < rec->n; i++) {
        tick_entry_t *e = &rec->entries[i];
        if (e->slot < 0) {
            continue;
        }
        slot_t *slot = slot_at(s, e->slot);
        known_t *k = slot->known < s->nknown && s->known[slot->known].tid == e->tid
                         ? &s->known[slot->known]
                         : NULL;
        int expected = SLOT_REQUESTED;
        if (atomic_compare_exchange_strong(&slot->state, &expected, SLOT_ABANDONED)) {
            atomic_fetch_add(&s->timeouts, 1);
            e->slot = -1;
            /* A thread that leaves three in a row unanswered may block our
             * signal: then its signals would only pile up in the queue. */
            if (k != NULL && k->misses >= 0 && ++k->misses >= 3) {
                k->misses = blocks_signal(e->tid, s->signum) == 0 ? 0 : -1;
            }
            continue;
        }
        while (atomic_load_explicit(&slot->state, memory_order_acquire) == SLOT_WRITING) {
            sched_yield();
        }
        if (k != NULL && k->misses > 0) {
            k->misses = 0;
        }
    }
    s->pending = 0;
    atomic_fetch_add(&s->ticks, 1);
    atomic_store_explicit(&rec->ready, 1, memory_order_release);
    s->head++;
    return 1;
}

static void *
ticker_main(void *arg)
{
    SamplerObject *s = (SamplerObject *)arg;
    atomic_store(&s->ticker_tid, (int)syscall(SYS_gettid));
    prctl(PR_SET_NAME, "spanprof-ticker", 0, 0, 0); /* for top -H, perf, /proc */
    /* Never preempt the application when waking up: a woken SCHED_BATCH thread
     * waits for an idle CPU or the end of the running thread's slice (it keeps
     * its fair share). A tick that preempts the thread holding the GIL puts its
     * whole run (~80 µs on a VM) on the application's path. Only from the
     * normal policy: a real-time or idle process keeps what it chose. */
    int policy;
    struct sched_param param;
    if (pthread_getschedparam(pthread_self(), &policy, &param) == 0 && policy == SCHED_OTHER) {
        pthread_setschedparam(pthread_self(), SCHED_BATCH, &param);
    }
    /* The ticker must never run a handler of ours (or the app's). */
    sigset_t all;
    sigfillset(&all);
    sigdelset(&all, SIGSEGV); /* a fault in capture_still() goes to the guard */
    sigdelset(&all, SIGBUS);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    int64_t next = now_ns(CLOCK_MONOTONIC);
    int64_t last_post = next;
    int queued = 0;
    while (!atomic_load(&s->stop_requested)) {
        int64_t interval = atomic_load(&s->interval_ns);
        if (s->use_timers) {
            if (interval != s->armed_interval) { /* set_interval() */
                s->armed_interval = interval;
                for (Py_ssize_t i = 0; i < s->nknown; i++) {
                    if (s->known[i].timer >= 0) {
                        timer_set(&s->timers[s->known[i].timer], interval);
                    }
                }
            }
            interval *= WALL_TICKS; /* the timers sample running threads */
        }
        /* jitter: each gap is uniform in [0.5, 1.5] x interval */
        next += interval / 2 + (int64_t)(xorshift(&s->rng) % (uint64_t)(interval + 1));
        int64_t now = now_ns(CLOCK_MONOTONIC);
        while (next < now) {
            next += interval / 2 + (int64_t)(xorshift(&s->rng) % (uint64_t)(interval + 1));
        }
        struct timespec ts = {next / 1000000000, next % 1000000000};
        int r;
        while ((r = sem_clockwait(&s->wake, CLOCK_MONOTONIC, &ts)) != 0 && errno == EINTR) {
        }
        if (r == 0 || atomic_load(&s->stop_requested)) {
            break;
        }
        queued += finish_tick(s);
        if (ticker_step(s) == 0) {
            queued++;
        }
        /* Wake the resolver in batches: on a VM a thread wake-up can cost
         * ~90 us of CPU, as much as everything else a tick does. */
        int64_t t = now_ns(CLOCK_MONOTONIC);
        if (queued > 0 && (queued >= RESOLVE_BATCH || t - last_post >= RESOLVE_EVERY_NS ||
                           s->most_captures >= TIMER_SLOTS / 2)) {
            sem_post(&s->batch); /* before a timer runs out of free slots */
            queued = 0;
            last_post = t;
            s->most_captures = 0;
            for (Py_ssize_t i = 0; i < s->nknown; i++) {
                s->known[i].since_post = 0;
            }
        }
    }
    finish_tick(s);
    atomic_store(&s->ticker_tid, 0);
    return NULL;
}

/* ---- phase C: the resolver, with the GIL -------------------------------- */

static thread_rec_t *
find_thread(thread_rec_t *arr, Py_ssize_t n, pid_t tid, PyThreadState *ts, Py_ssize_t *hint)
{
    /* From the hint on, then from the start: records are kept in thread
     * state order, so a resolution walks them once. */
    Py_ssize_t start = *hint < n ? *hint : 0;
    for (int pass = 0; pass < 2; pass++) {
        Py_ssize_t lo = pass ? 0 : start, hi = pass ? start : n;
        for (Py_ssize_t i = lo; i < hi; i++) {
            if (arr[i].tid == tid && arr[i].tstate == (void *)ts &&
                arr[i].ident == ts->thread_id) {
                *hint = i + 1;
                return &arr[i];
            }
        }
    }
    return NULL;
}

/* A record by native id alone, for samples that need no thread state. */
static thread_rec_t *
find_record(thread_rec_t *arr, Py_ssize_t n, pid_t tid, Py_ssize_t *hint)
{
    Py_ssize_t start = *hint < n ? *hint : 0;
    for (int pass = 0; pass < 2; pass++) {
        Py_ssize_t lo = pass ? 0 : start, hi = pass ? start : n;
        for (Py_ssize_t i = lo; i < hi; i++) {
            if (arr[i].tid == tid) {
                *hint = i + 1;
                return &arr[i];
            }
        }
    }
    return NULL;
}

static tick_entry_t *
find_entry(tick_rec_t *rec, pid_t tid, Py_ssize_t *hint)
{
    Py_ssize_t n = rec->n, start = *hint < n ? *hint : 0;
    for (int pass = 0; pass < 2; pass++) {
        Py_ssize_t lo = pass ? 0 : start, hi = pass ? start : n;
        for (Py_ssize_t i = lo; i < hi; i++) {
            if (rec->entries[i].tid == tid) {
                *hint = i + 1;
                return &rec->entries[i];
            }
        }
    }
    return NULL;
}

/* The context value a capture found, as a new reference, or None. Needs the
 * GIL. Under the GIL the value is alive (the thread's context holds it); one
 * seen by a handler may have been freed since, so it must pass a safe read. */
static PyObject *
context_value(SamplerObject *s, void *value, int in_place)
{
    if (value == NULL) {
        Py_RETURN_NONE;
    }
    if (in_place) {
        PyObject head;
        PyObject type_head;
        int ok = s->value_type != NULL
                     ? looks_alive(value, s->value_type)
                     : (safe_read(value, &head, sizeof(head)) == 0 &&
                        safe_read(Py_TYPE(&head), &type_head, sizeof(type_head)) == 0 &&
                        Py_TYPE(&type_head) == &PyType_Type && head.ob_refcnt > 0);
        if (!ok) {
            s->rejected_values++;
            Py_RETURN_NONE;
        }
    }
    return Py_NewRef((PyObject *)value);
}

static void
clear_stacks(SamplerObject *s)
{
    for (Py_ssize_t i = 0; i < s->stacks_cap; i++) {
        Py_CLEAR(s->stacks[i].bytes);
    }
    s->nstacks = 0;
}

/* Double the interned stacks' table (from 1,024 entries). The new table is
 * zeroed by writing it (not calloc): see ring_slot() on why a first access
 * should be a write. */
static int
grow_stacks(SamplerObject *s)
{
    Py_ssize_t cap = s->stacks_cap ? 2 * s->stacks_cap : 1024;
    stack_ent_t *tab = PyMem_RawMalloc((size_t)cap * sizeof(stack_ent_t));
    if (tab == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(tab, 0, (size_t)cap * sizeof(stack_ent_t));
    for (Py_ssize_t i = 0; i < s->stacks_cap; i++) {
        stack_ent_t *e = &s->stacks[i];
        if (e->bytes != NULL) {
            Py_ssize_t j = (Py_ssize_t)(e->hash & (uint64_t)(cap - 1));
            while (tab[j].bytes != NULL) {
                j = (j + 1) & (cap - 1);
            }
            tab[j] = *e;
        }
    }
    PyMem_RawFree(s->stacks);
    s->stacks = tab;
    s->stacks_cap = cap;
    return 0;
}

/* The packed stack `buf` as bytes (a new reference): the same object each
 * time while it stays interned, so steady-state sampling allocates nothing. */
static PyObject *
intern_stack(SamplerObject *s, const char *buf, Py_ssize_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)n;
    for (Py_ssize_t i = 0; i + 8 <= n; i += 8) { /* packed frames are 8 bytes each */
        uint64_t w;
        memcpy(&w, buf + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 29;
    }
    if (s->nstacks >= MAX_STACKS) {
        clear_stacks(s); /* bounded; what is in use elsewhere stays alive there */
    }
    if (2 * (s->nstacks + 1) > s->stacks_cap && grow_stacks(s) != 0) {
        return NULL;
    }
    Py_ssize_t mask = s->stacks_cap - 1;
    Py_ssize_t i = (Py_ssize_t)(h & (uint64_t)mask);
    for (; s->stacks[i].bytes != NULL; i = (i + 1) & mask) {
        PyObject *b = s->stacks[i].bytes;
        if (s->stacks[i].hash == h && PyBytes_GET_SIZE(b) == n &&
            memcmp(PyBytes_AS_STRING(b), buf, (size_t)n) == 0) {
            return Py_NewRef(b);
        }
    }
    PyObject *b = PyBytes_FromStringAndSize(buf, n);
    if (b != NULL) {
        s->stacks[i].hash = h;
        s->stacks[i].bytes = Py_NewRef(b);
        s->nstacks++;
    }
    return b;
}

static PyObject *
pack_stack(SamplerObject *s, slot_t *slot, int trusted)
{
    char *p = s->pack;
    for (int i = 0; i < slot->depth; i++) {
        void *code = slot->frames[i].code;
        uint32_t id = code_id(s, code, slot->frames[i].name, trusted);
        int32_t off = -1;
        if (id >= CODE_ID_FIRST) {
            off = frame_offset(s->codes[id], slot->frames[i].instr);
        }
        memcpy(p, &id, 4);
        memcpy(p + 4, &off, 4);
        p += 8;
    }
    if (slot->truncated) {
        uint32_t id = CODE_ID_TRUNCATED;
        int32_t off = -1;
        memcpy(p, &id, 4);
        memcpy(p + 4, &off, 4);
        p += 8;
    }
    return intern_stack(s, s->pack, p - s->pack);
}

static pid_t
tstate_tid(PyThreadState *ts, PyObject *native_ids)
{
#if PY_VERSION_HEX >= 0x030B0000
    (void)native_ids;
    return (pid_t)ts->native_thread_id;
#else
    /* 3.10's thread states do not record the native id: the caller passes
     * {ident: native_id} from the threading module. */
    pid_t tid = 0;
    if (!PyDict_Check(native_ids)) {
        return 0;
    }
    PyObject *key = PyLong_FromUnsignedLong(ts->thread_id);
    PyObject *nid = key ? PyDict_GetItemWithError(native_ids, key) : NULL;
    Py_XDECREF(key);
    if (nid != NULL) {
        tid = (pid_t)PyLong_AsLong(nid);
    }
    if (PyErr_Occurred()) {
        PyErr_Clear();
        tid = 0;
    }
    return tid;
#endif
}

/* Turn one capture into a sample tuple appended to `out`, and update (or
 * create) the thread's record. `slot` is the capture, or NULL to reuse the
 * record's last stack. Returns 0 (also when there is nothing to charge), -1
 * on error. */
static int
add_sample(SamplerObject *s, thread_rec_t *prev, unsigned long ident, pid_t tid,
           void *tstate, int64_t cpu_now, int64_t wall_now, int64_t time_ns, uint64_t seq,
           slot_t *slot, int in_place, int64_t cap_cpu)
{
    /* the ticks this sample stands for (parked threads are read every few); a
     * timer's capture is one sample */
    long long count = prev && seq > prev->last_seq && in_place != 2
                          ? (long long)(seq - prev->last_seq)
                          : 1;
    int64_t cpu_delta = prev ? cpu_now - prev->last_cpu_ns : cpu_now;
    int64_t wall_delta = prev ? wall_now - prev->last_wall_ns : s->interval_ns;
    if (cpu_delta < 0) {
        cpu_delta = 0;
    }
    if (wall_delta < 0) {
        wall_delta = 0;
    }
    PyObject *stack, *value;
    if (slot == NULL) {
        if (prev == NULL || prev->stack == NULL) {
            return 0;
        }
        stack = Py_NewRef(prev->stack);
        value = Py_NewRef(prev->value);
    }
    else {
        if (slot->depth <= 0) {
            /* No Python frame to charge: a thread state not yet running (3.10
             * and 3.11 preallocate new threads' states under the creator's
             * ids) or one that is finishing. Its time goes to its next sample. */
            return 0;
        }
        stack = pack_stack(s, slot, !in_place);
        if (stack == NULL) {
            value = NULL;
        }
        else if (prev != NULL && slot->value != NULL && slot->value == prev->value) {
            value = Py_NewRef(prev->value); /* alive: the thread's record holds it */
        }
        else {
            value = context_value(s, slot->value, in_place);
        }
        if (stack == NULL || value == NULL) {
            Py_XDECREF(stack);
            return -1;
        }
    }
    if (grow((void **)&s->samples, &s->cap_samples, s->nsamples + 1, sizeof(sample_t)) != 0) {
        Py_DECREF(stack);
        Py_DECREF(value);
        PyErr_NoMemory();
        return -1;
    }
    sample_t *out = &s->samples[s->nsamples++];
    out->ident = ident;
    out->tid = tid;
    out->in_place = in_place != 0;
    out->cpu_ns = cpu_delta;
    out->wall_ns = wall_delta;
    out->time_ns = time_ns;
    out->count = count;
    out->stack = Py_NewRef(stack);
    out->value = Py_NewRef(value);
    thread_rec_t *rec = prev;
    if (rec == NULL) {
        if (grow((void **)&s->threads, &s->cap_threads, s->nthreads + 1, sizeof(thread_rec_t)) !=
            0) {
            Py_DECREF(stack);
            Py_DECREF(value);
            PyErr_NoMemory();
            return -1;
        }
        rec = &s->threads[s->nthreads++];
        memset(rec, 0, sizeof(*rec));
        rec->tid = tid;
        rec->ident = ident;
        rec->tstate = tstate;
        s->records_added = 1;
    }
    rec->last_cpu_ns = cpu_now;
    rec->last_wall_ns = wall_now;
    rec->last_seq = seq;
    Py_XSETREF(rec->stack, stack);
    Py_XSETREF(rec->value, value);
    rec->cap_cpu = cap_cpu;
    return 0;
}

/* The sample of live thread `ts` at tick entry `e` (NULL: not seen by the
 * ticker; its clock is read now). */
static int
emit(SamplerObject *s, PyThreadState *ts, pid_t tid, tick_rec_t *rec,
     tick_entry_t *e, Py_ssize_t *hint)
{
    thread_rec_t *prev = find_thread(s->threads, s->nthreads, tid, ts, hint);
    int64_t cpu_now, wall_now, time_ns;
    if (e != NULL) {
        e->used = 1;
        cpu_now = e->cpu_ns;
        wall_now = e->wall_ns;
        time_ns = e->time_ns;
    }
    else {
        cpu_now = thread_cpu_ns(tid);
        if (cpu_now < 0) {
            return 0; /* the thread has exited */
        }
        wall_now = now_ns(CLOCK_MONOTONIC);
        time_ns = now_ns(CLOCK_REALTIME);
    }
    if (e != NULL && e->slot >= 0) {
        slot_t *cand = slot_at(s, e->slot);
        if (slot_captured(atomic_load_explicit(&cand->state, memory_order_acquire)) &&
            cand->tstate == (void *)ts && cand->depth >= 0) {
            s->in_place++;
            return add_sample(s, prev, ts->thread_id, tid, ts, cpu_now, wall_now, time_ns,
                              rec->seq, cand, e->timer ? 2 : 1, e->timer || e->exact ? e->cpu_ns : -1);
        }
    }
    s->gil_captures++;
    /* A thread that had not run since its last capture (at this tick's clock
     * reading) had the same stack and context: reuse them. A walk of a cold
     * frame chain is most of what a parked thread costs. */
    if (prev != NULL && prev->stack != NULL && prev->cap_cpu >= 0 && cpu_now == prev->cap_cpu) {
        s->reused++;
        return add_sample(s, prev, ts->thread_id, tid, ts, cpu_now, wall_now, time_ns,
                          rec->seq, NULL, 0, prev->cap_cpu);
    }
    int64_t cap_cpu = thread_cpu_ns(tid);
    slot_t *slot = slot_at(s, nslots_total(s) - 1); /* reserved for GIL captures */
    capture_tstate(ts, slot, s->max_depth);
    return add_sample(s, prev, ts->thread_id, tid, ts, cpu_now, wall_now, time_ns, rec->seq,
                      slot, 0, cap_cpu);
}

/* A thread the ticker saw that exited before this resolution: its in-place
 * capture (or, if it was parked, its last stack) still gets its CPU. */
static int
emit_exited(SamplerObject *s, tick_rec_t *rec, tick_entry_t *e)
{
    thread_rec_t *prev = NULL;
    for (Py_ssize_t i = 0; i < s->nthreads; i++) {
        if (s->threads[i].tid == e->tid) {
            prev = &s->threads[i];
            break;
        }
    }
    if (prev == NULL) {
        return 0;
    }
    if (e->slot >= 0) {
        slot_t *slot = slot_at(s, e->slot);
        if (slot_captured(atomic_load_explicit(&slot->state, memory_order_acquire)) &&
            slot->tstate == prev->tstate && slot->depth >= 0) {
            s->in_place++;
            return add_sample(s, prev, prev->ident, e->tid, prev->tstate, e->cpu_ns,
                              e->wall_ns, e->time_ns, rec->seq, slot, e->timer ? 2 : 1,
                              e->timer || e->exact ? e->cpu_ns : -1);
        }
    }
    return add_sample(s, prev, prev->ident, e->tid, prev->tstate, e->cpu_ns, e->wall_ns,
                      e->time_ns, rec->seq, NULL, 0, prev->cap_cpu);
}

/* Forget records of threads that are gone; publish the live list. */
static int
publish_threads(SamplerObject *s, PyThreadState *self_ts, PyObject *native_ids)
{
    Py_ssize_t n = 0, hint = 0;
    for (Py_ssize_t i = 0; i < s->nthreads; i++) {
        s->threads[i].carried = 0;
    }
    pthread_mutex_lock(&s->pub_lock);
    s->npub = 0;
    for (PyThreadState *ts = PyInterpreterState_ThreadHead(self_ts->interp); ts != NULL;
         ts = PyThreadState_Next(ts)) {
        pid_t tid = tstate_tid(ts, native_ids);
        if (ts == self_ts || tid <= 0) {
            continue;
        }
        thread_rec_t *rec = find_thread(s->threads, s->nthreads, tid, ts, &hint);
        if (rec == NULL || rec->carried) {
            continue; /* not sampled yet: it is, at the next resolution */
        }
        if (grow((void **)&s->next_threads, &s->cap_next, n + 1, sizeof(thread_rec_t)) != 0 ||
            grow((void **)&s->pub, &s->cap_pub, s->npub + 1, sizeof(known_t)) != 0) {
            pthread_mutex_unlock(&s->pub_lock);
            PyErr_NoMemory();
            return -1;
        }
        rec->carried = 1;
        s->next_threads[n++] = *rec; /* moves its references */
        s->pub[s->npub].tid = tid;
        s->pub[s->npub].tstate = ts;
        s->pub[s->npub].cpu_ns = rec->last_cpu_ns;
        s->npub++;
    }
    s->pub_version++;
    pthread_mutex_unlock(&s->pub_lock);
    for (Py_ssize_t i = 0; i < s->nthreads; i++) {
        if (!s->threads[i].carried) {
            clear_record(&s->threads[i]); /* the thread is gone */
        }
    }
    thread_rec_t *tmp = s->threads;
    Py_ssize_t tmpcap = s->cap_threads;
    s->threads = s->next_threads;
    s->cap_threads = s->cap_next;
    s->nthreads = n;
    s->next_threads = tmp;
    s->cap_next = tmpcap;
    return 0;
}

/* Resolve every queued tick into samples appended to s->samples. Needs the
 * GIL. Returns 0, or -1 with an exception set. */
static int
resolve(SamplerObject *s, PyThreadState *self_ts, PyObject *native_ids)
{
    int any = 0, walked = 0;
    uint64_t resolved_seq = 0;
    Py_ssize_t live = 0; /* thread states seen by the newest tick's walk */
    s->records_added = 0;
    for (;;) {
        tick_rec_t *rec = &s->ring[s->tail % RING];
        if (!atomic_load_explicit(&rec->ready, memory_order_acquire)) {
            break;
        }
        any = 1;
        Py_ssize_t hint_e = 0, hint_t = 0;
        int last = !atomic_load_explicit(&s->ring[(s->tail + 1) % RING].ready,
                                         memory_order_acquire);
        /* First, what needs no thread state: in-place captures and parked
         * threads whose last stack still holds. Walking the thread states (a
         * cache miss each) is left for when it is needed: a capture under the
         * GIL, a thread that came or went, and once a second. */
        PyThreadState *head = PyInterpreterState_ThreadHead(self_ts->interp);
        int64_t now = now_ns(CLOCK_MONOTONIC);
        int need_walk = last && (head != s->walk_head || now - s->walk_ns > WALK_EVERY_NS);
        for (int i = 0; i < rec->n; i++) {
            tick_entry_t *e = &rec->entries[i];
            thread_rec_t *prev = find_record(s->threads, s->nthreads, e->tid, &hint_t);
            if (prev == NULL) {
                need_walk = 1;
                continue;
            }
            slot_t *cand = e->slot >= 0 ? slot_at(s, e->slot) : NULL;
            int rc;
            if (cand != NULL &&
                slot_captured(atomic_load_explicit(&cand->state, memory_order_acquire)) &&
                cand->tstate == prev->tstate && cand->depth >= 0) {
                s->in_place++;
                rc = add_sample(s, prev, prev->ident, e->tid, prev->tstate, e->cpu_ns,
                                e->wall_ns, e->time_ns, rec->seq, cand, e->timer ? 2 : 1,
                                e->timer || e->exact ? e->cpu_ns : -1);
            }
            else if (prev->stack != NULL && prev->cap_cpu >= 0 && e->cpu_ns == prev->cap_cpu) {
                s->gil_captures++;
                s->reused++;
                rc = add_sample(s, prev, prev->ident, e->tid, prev->tstate, e->cpu_ns,
                                e->wall_ns, e->time_ns, rec->seq, NULL, 0, prev->cap_cpu);
            }
            else {
                need_walk = 1; /* a capture under the GIL: needs a live thread state */
                continue;
            }
            e->used = 1;
            if (rc != 0) {
                return -1;
            }
        }
        if (!need_walk) {
            goto done_tick;
        }
        if (last) {
            s->walk_head = head;
            s->walk_ns = now;
            walked = 1;
        }
        hint_t = 0;
        live = 0;
        for (PyThreadState *ts = PyInterpreterState_ThreadHead(self_ts->interp); ts != NULL;
             ts = PyThreadState_Next(ts)) {
            pid_t tid = tstate_tid(ts, native_ids);
            if (ts == self_ts || tid <= 0) {
                continue;
            }
            live++;
            tick_entry_t *e = find_entry(rec, tid, &hint_e);
            if (e != NULL && e->used) {
                continue; /* done in the first pass */
            }
            if (e == NULL && (!last || find_thread(s->threads, s->nthreads, tid, ts, &hint_t))) {
                /* not read at this tick (parked, at its turn later), or new: a new
                 * thread is sampled with the newest tick */
                continue;
            }
            if (emit(s, ts, tid, rec, e, &hint_t) != 0) {
                return -1;
            }
        }
        for (int i = 0; i < rec->n; i++) {
            if (!rec->entries[i].used && emit_exited(s, rec, &rec->entries[i]) != 0) {
                return -1;
            }
        }
    done_tick:
        for (int i = 0; i < rec->n; i++) {
            if (rec->entries[i].slot >= 0) {
                atomic_store(&slot_at(s, rec->entries[i].slot)->state, SLOT_FREE);
            }
        }
        resolved_seq = rec->seq;
        atomic_store_explicit(&rec->ready, 0, memory_order_release);
        s->tail++;
    }
    if (any) {
        pend_resolved(resolved_seq); /* the values those captures saw are referenced now */
    }
    /* Publish (a second walk) only if threads came or went. */
    int changed = s->records_added || (walked && live != s->nthreads);
    if (any && changed && publish_threads(s, self_ts, native_ids) != 0) {
        return -1;
    }
    return 0;
}

static void
clear_samples(SamplerObject *s)
{
    for (Py_ssize_t i = 0; i < s->nsamples; i++) {
        Py_DECREF(s->samples[i].stack);
        Py_DECREF(s->samples[i].value);
    }
    s->nsamples = 0;
}

/* The batch as a list of sample tuples (tick(), and run() without a window). */
static PyObject *
samples_as_list(SamplerObject *s)
{
    PyObject *out = PyList_New(s->nsamples);
    for (Py_ssize_t i = 0; out != NULL && i < s->nsamples; i++) {
        sample_t *x = &s->samples[i];
        PyObject *item = Py_BuildValue("(kiLLOOOLL)", x->ident, (int)x->tid,
                                       (long long)x->cpu_ns, (long long)x->wall_ns, x->stack,
                                       x->value, x->in_place ? Py_True : Py_False,
                                       (long long)x->time_ns, x->count);
        if (item == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, item);
    }
    clear_samples(s);
    return out;
}

static const spanprof_window_api *g_window_api = NULL;

/* Count the batch into `window` with no Python call per sample: one call of
 * callback(values, threads) gets the labels of the batch's distinct context
 * values and threads, as (infos, thread_labels). An info is None (no link)
 * or (labels, start_ns, end_ns or None): the labels apply to captures taken
 * in [start, end). A thread's labels are a tuple, or None to leave its
 * samples out. The callback may return None to drop the batch. Returns 0,
 * or -1 with an exception set. The batch is emptied either way. */
static int
aggregate(SamplerObject *s, PyObject *callback, PyObject *window)
{
    Py_ssize_t n = s->nsamples;
    if (n == 0) {
        return 0;
    }
    size_t cap = 16;
    while (cap < 2 * (size_t)n) {
        cap <<= 1;
    }
    int rc = -1;
    PyObject *values = PyList_New(0), *threads = PyList_New(0), *r = NULL;
    PyObject *none_link = PyTuple_New(0);
    Py_ssize_t *ix = PyMem_Malloc(2 * (size_t)n * sizeof(Py_ssize_t)); /* value, thread */
    Py_ssize_t *tab = PyMem_Malloc(2 * cap * sizeof(Py_ssize_t));      /* two hash tables */
    int64_t *span = NULL;                                               /* start, end */
    PyObject **labels = NULL;
    if (values == NULL || threads == NULL || none_link == NULL || ix == NULL || tab == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_NoMemory();
        }
        goto done;
    }
    memset(tab, 0xff, 2 * cap * sizeof(Py_ssize_t)); /* -1: empty */
    Py_ssize_t *vtab = tab, *ttab = tab + cap;
    for (Py_ssize_t k = 0; k < n; k++) {
        sample_t *x = &s->samples[k];
        ix[2 * k] = -1;
        if (x->value != Py_None) {
            size_t h = ptr_hash(x->value) & (cap - 1);
            while (vtab[h] >= 0 && PyList_GET_ITEM(values, vtab[h]) != x->value) {
                h = (h + 1) & (cap - 1);
            }
            if (vtab[h] < 0) {
                vtab[h] = PyList_GET_SIZE(values);
                if (PyList_Append(values, x->value) != 0) {
                    goto done;
                }
            }
            ix[2 * k] = vtab[h];
        }
        size_t h = ptr_hash((void *)(uintptr_t)(x->ident ^ ((uint64_t)x->tid << 40))) & (cap - 1);
        while (ttab[h] >= 0 && (s->samples[ttab[h]].ident != x->ident ||
                                s->samples[ttab[h]].tid != x->tid)) {
            h = (h + 1) & (cap - 1);
        }
        if (ttab[h] < 0) {
            ttab[h] = k;
            ix[2 * k + 1] = PyList_GET_SIZE(threads);
            PyObject *key = Py_BuildValue("(ki)", x->ident, (int)x->tid);
            if (key == NULL || PyList_Append(threads, key) != 0) {
                Py_XDECREF(key);
                goto done;
            }
            Py_DECREF(key);
        }
        else {
            ix[2 * k + 1] = ix[2 * ttab[h] + 1];
        }
    }
    r = PyObject_CallFunctionObjArgs(callback, values, threads, NULL);
    if (r == NULL) {
        goto done;
    }
    if (r == Py_None) {
        rc = 0;
        goto done;
    }
    Py_ssize_t nv = PyList_GET_SIZE(values);
    PyObject *infos = PyTuple_Check(r) && PyTuple_GET_SIZE(r) == 2 ? PyTuple_GET_ITEM(r, 0) : NULL;
    PyObject *tlabels = infos ? PyTuple_GET_ITEM(r, 1) : NULL;
    if (infos == NULL || !PyList_Check(infos) || PyList_GET_SIZE(infos) != nv ||
        !PyList_Check(tlabels) || PyList_GET_SIZE(tlabels) != PyList_GET_SIZE(threads)) {
        PyErr_SetString(PyExc_TypeError,
                        "the sampler's callback must return (infos, thread labels), one each");
        goto done;
    }
    span = PyMem_Malloc((size_t)(nv + 1) * 2 * sizeof(int64_t));
    labels = PyMem_Malloc((size_t)(nv + 1) * sizeof(PyObject *));
    if (span == NULL || labels == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < nv; i++) {
        PyObject *info = PyList_GET_ITEM(infos, i);
        labels[i] = NULL;
        if (info == Py_None) {
            continue;
        }
        if (!PyTuple_Check(info) || PyTuple_GET_SIZE(info) != 3) {
            PyErr_SetString(PyExc_TypeError, "a link is (labels, start_ns, end_ns or None)");
            goto done;
        }
        PyObject *end = PyTuple_GET_ITEM(info, 2);
        span[2 * i] = PyLong_AsLongLong(PyTuple_GET_ITEM(info, 1));
        span[2 * i + 1] = end == Py_None ? INT64_MAX : PyLong_AsLongLong(end);
        if (PyErr_Occurred()) {
            goto done;
        }
        labels[i] = PyTuple_GET_ITEM(info, 0);
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        sample_t *x = &s->samples[k];
        PyObject *thread = PyList_GET_ITEM(tlabels, ix[2 * k + 1]);
        if (thread == Py_None) {
            continue;
        }
        PyObject *link = none_link;
        Py_ssize_t v = ix[2 * k];
        if (v >= 0 && labels[v] != NULL && span[2 * v] <= x->time_ns &&
            x->time_ns < span[2 * v + 1]) {
            link = labels[v];
        }
        if (g_window_api->add(window, x->stack, thread, link, x->cpu_ns, x->wall_ns, x->count) <
            0) {
            goto done;
        }
    }
    rc = 0;
done:
    clear_samples(s);
    PyMem_Free(labels);
    PyMem_Free(span);
    PyMem_Free(tab);
    PyMem_Free(ix);
    Py_XDECREF(r);
    Py_XDECREF(none_link);
    Py_XDECREF(values);
    Py_XDECREF(threads);
    return rc;
}

/* Make sure every current thread is known to the ticker (first tick). */
static int
seed_threads(SamplerObject *s, PyThreadState *self_ts, PyObject *native_ids)
{
    Py_ssize_t hint = 0;
    for (PyThreadState *ts = PyInterpreterState_ThreadHead(self_ts->interp); ts != NULL;
         ts = PyThreadState_Next(ts)) {
        pid_t tid = tstate_tid(ts, native_ids);
        if (ts == self_ts || tid <= 0) {
            continue;
        }
        thread_rec_t *rec = find_thread(s->threads, s->nthreads, tid, ts, &hint);
        if (rec != NULL) {
            continue;
        }
        int64_t cpu = thread_cpu_ns(tid);
        if (cpu < 0) {
            continue;
        }
        if (grow((void **)&s->threads, &s->cap_threads, s->nthreads + 1, sizeof(thread_rec_t)) !=
            0) {
            PyErr_NoMemory();
            return -1;
        }
        rec = &s->threads[s->nthreads++];
        memset(rec, 0, sizeof(*rec));
        rec->cap_cpu = -1;
        rec->tid = tid;
        rec->ident = ts->thread_id;
        rec->tstate = ts;
        rec->last_cpu_ns = cpu;
        rec->last_wall_ns = now_ns(CLOCK_MONOTONIC);
    }
    return publish_threads(s, self_ts, native_ids);
}

/* Make `var` the ContextVar captures read (None: none), values expected to be
 * of `value_type` (None: any). */
static int
register_var(SamplerObject *s, PyObject *var, PyObject *value_type)
{
    if (value_type != Py_None && !PyType_Check(value_type)) {
        PyErr_SetString(PyExc_TypeError, "value_type must be a type or None");
        return -1;
    }
    if (var == Py_None) {
        atomic_store_explicit(&g_var, NULL, memory_order_release);
    }
    else {
        if (!PyContextVar_CheckExact(var)) {
            PyErr_SetString(PyExc_TypeError, "var must be a contextvars.ContextVar or None");
            return -1;
        }
        Py_hash_t h = PyObject_Hash(var);
        if (h == -1) {
            return -1;
        }
        /* CPython's hamt_hash(): the 64-bit hash folded to 32 bits */
        g_var_hash = (int32_t)(h & 0xffffffffL) ^ (int32_t)(h >> 32);
        atomic_store_explicit(&g_var, var, memory_order_release);
    }
    Py_XSETREF(s->value_type,
               value_type == Py_None ? NULL : (PyTypeObject *)Py_NewRef(value_type));
    return 0;
}

static int
check_open(SamplerObject *s)
{
    if (s->closed || s->slots == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "sampler is closed");
        return -1;
    }
    if (s->running) {
        PyErr_SetString(PyExc_RuntimeError, "sampler is running");
        return -1;
    }
    return 0;
}

/* One synchronous tick on the calling thread (tests, benchmarks). */
static PyObject *
Sampler_tick(SamplerObject *s, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_open(s) != 0) {
        return NULL;
    }
    PyObject *var = nargs > 0 ? args[0] : Py_None;
    PyObject *native_ids = nargs > 1 ? args[1] : Py_None;
    PyObject *value_type = nargs > 2 ? args[2] : Py_None;
    PyThreadState *self_ts = PyThreadState_Get();
    if (s->interval_ns == 0) {
        s->interval_ns = 10000000;
    }
    if (register_var(s, var, value_type) != 0 || seed_threads(s, self_ts, native_ids) != 0) {
        return NULL;
    }
    s->pid = getpid();
    s->uid = getuid();
    pend_start();
    Py_BEGIN_ALLOW_THREADS
    ticker_step(s);
    finish_tick(s);
    Py_END_ALLOW_THREADS
    int rc = resolve(s, self_ts, native_ids);
    atomic_store(&g_pend_on, 0);
    atomic_store(&g_var, NULL);
    if (rc != 0) {
        clear_samples(s);
        return NULL;
    }
    return samples_as_list(s);
}

/* The sampling loop: starts the ticker and resolves its ticks until stop(). */
static PyObject *
Sampler_run(SamplerObject *s, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"callback", "interval", "var", "native_ids", "value_type", "window",
                             NULL};
    PyObject *callback, *var = Py_None, *native_ids_fn = Py_None, *value_type = Py_None;
    PyObject *window = Py_None;
    double interval;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Od|OOOO", kwlist, &callback, &interval, &var,
                                     &native_ids_fn, &value_type, &window)) {
        return NULL;
    }
    if (window != Py_None) {
        if (g_window_api == NULL) {
            g_window_api = PyCapsule_Import(SPANPROF_WINDOW_CAPSULE, 0);
            if (g_window_api == NULL) {
                return NULL;
            }
            if (g_window_api->version != SPANPROF_WINDOW_VERSION) {
                g_window_api = NULL;
                PyErr_SetString(PyExc_ImportError, "spanprof._profile is of another version");
                return NULL;
            }
        }
        if (!PyObject_TypeCheck(window, g_window_api->type)) {
            PyErr_SetString(PyExc_TypeError, "window must be a spanprof._profile.Window");
            return NULL;
        }
    }
    if (interval < 0.0005 || interval > 10.0) {
        PyErr_SetString(PyExc_ValueError, "interval must be within 0.0005..10 seconds");
        return NULL;
    }
    if (check_open(s) != 0) {
        return NULL;
    }
    PyThreadState *self_ts = PyThreadState_Get();
    s->interval_ns = (int64_t)(interval * 1e9);
    s->pid = getpid();
    s->uid = getuid();
    s->use_timers = s->signum != 0 && s->cpu_timers && s->timer_errno == 0;
    s->armed_interval = s->interval_ns;
    if (register_var(s, var, value_type) != 0) {
        return NULL;
    }
    PyObject *native_ids = Py_None;
    if (native_ids_fn != Py_None && (native_ids = PyObject_CallNoArgs(native_ids_fn)) == NULL) {
        atomic_store(&g_var, NULL);
        return NULL;
    }
    int seeded = seed_threads(s, self_ts, native_ids);
    if (native_ids_fn != Py_None) {
        Py_DECREF(native_ids);
    }
    if (seeded != 0) {
        atomic_store(&g_var, NULL);
        return NULL;
    }
    pthread_t ticker;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    atomic_store(&s->stop_requested, 0);
    pend_start();
    int err = pthread_create(&ticker, &attr, ticker_main, s);
    pthread_attr_destroy(&attr);
    if (err != 0) {
        atomic_store(&g_pend_on, 0);
        errno = err;
        atomic_store(&g_var, NULL);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    s->running = 1;
    int failed = 0;
    for (;;) {
        int stop;
        Py_BEGIN_ALLOW_THREADS
        while (sem_wait(&s->batch) != 0 && errno == EINTR) {
        }
        stop = atomic_load(&s->stop_requested);
        if (stop) {
            pthread_join(ticker, NULL);
            /* A last tick, so the CPU used since the previous one is not
             * lost and even a very short run leaves samples. */
            s->read_all = 1;
            ticker_step(s);
            finish_tick(s);
            s->read_all = 0;
        }
        Py_END_ALLOW_THREADS
        native_ids = Py_None;
        if (native_ids_fn != Py_None) {
            native_ids = PyObject_CallNoArgs(native_ids_fn);
            if (native_ids == NULL) {
                PyErr_WriteUnraisable(native_ids_fn);
                native_ids = Py_None;
                Py_INCREF(native_ids);
            }
        }
        else {
            Py_INCREF(native_ids);
        }
        int resolved = resolve(s, self_ts, native_ids);
        Py_DECREF(native_ids);
        if (resolved != 0) {
            clear_samples(s);
            PyErr_WriteUnraisable(callback);
        }
        else {
            PyObject *r; /* a new reference, or NULL with an exception set */
            if (s->nsamples > 0 && window != Py_None) {
                r = aggregate(s, callback, window) == 0 ? Py_NewRef(Py_None) : NULL;
            }
            else if (s->nsamples > 0) {
                PyObject *samples = samples_as_list(s);
                r = samples ? PyObject_CallOneArg(callback, samples) : NULL;
                Py_XDECREF(samples);
            }
            else {
                r = Py_NewRef(Py_None);
            }
            if (r == NULL) {
                if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
                    PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
                    failed = 1;
                    if (!stop) {
                        atomic_store(&s->stop_requested, 1);
                        sem_post(&s->wake);
                        Py_BEGIN_ALLOW_THREADS
                        pthread_join(ticker, NULL);
                        Py_END_ALLOW_THREADS
                    }
                    break;
                }
                PyErr_WriteUnraisable(callback);
            }
            Py_XDECREF(r);
        }
        if (stop) {
            break;
        }
    }
    s->running = 0;
    atomic_store(&g_pend_on, 0); /* every capture is resolved: nothing is kept for it */
    timers_drop_all(s);
    s->use_timers = 0;
    atomic_store(&g_var, NULL);
    atomic_store(&s->stop_requested, 0);
    while (sem_trywait(&s->wake) == 0) {
    }
    while (sem_trywait(&s->batch) == 0) {
    }
    if (failed) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Make run() return after resolving what is queued; any thread, no blocking. */
static PyObject *
Sampler_stop(SamplerObject *s, PyObject *Py_UNUSED(ignored))
{
    if (s->slots != NULL) {
        atomic_store(&s->stop_requested, 1);
        sem_post(&s->wake);
        sem_post(&s->batch);
    }
    Py_RETURN_NONE;
}

static PyObject *
Sampler_set_interval(SamplerObject *s, PyObject *arg)
{
    double interval = PyFloat_AsDouble(arg);
    if (interval == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (!(interval >= 0.0005 && interval <= 10.0)) {
        PyErr_SetString(PyExc_ValueError, "interval must be within 0.0005..10 seconds");
        return NULL;
    }
    atomic_store(&s->interval_ns, (int64_t)(interval * 1e9));
    Py_RETURN_NONE;
}

static PyObject *
Sampler_ticker_native_id(SamplerObject *s, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(atomic_load(&s->ticker_tid));
}

static PyObject *
Sampler_code(SamplerObject *s, PyObject *arg)
{
    unsigned long id = PyLong_AsUnsignedLong(arg);
    if (id == (unsigned long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    if (id < CODE_ID_FIRST || id >= s->ncodes || s->codes[id] == NULL) {
        Py_RETURN_NONE;
    }
    return Py_NewRef(s->codes[id]);
}

static PyObject *
Sampler_reset_codes(SamplerObject *s, PyObject *Py_UNUSED(ignored))
{
    for (uint32_t i = 0; i < s->ncodes; i++) {
        Py_CLEAR(s->codes[i]);
    }
    memset(s->map_keys, 0, s->map_cap * sizeof(void *));
    s->ncodes = CODE_ID_FIRST;
    for (Py_ssize_t i = 0; i < s->nthreads; i++) {
        clear_record(&s->threads[i]); /* cached stacks hold the old ids */
    }
    clear_stacks(s);
    Py_RETURN_NONE;
}

static PyObject *
Sampler_close(SamplerObject *s, PyObject *Py_UNUSED(ignored))
{
    if (!s->closed) {
        Py_BEGIN_ALLOW_THREADS
        timers_drop_all(s); /* after fork(), the child's copies of the events */
        sampler_release(s);
        Py_END_ALLOW_THREADS
        s->closed = 1;
    }
    Py_RETURN_NONE;
}

static PyObject *
Sampler_stats(SamplerObject *s, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("{sKsKsKsKsKsKsKsKsKsKsIsisisKsisisisL}", "ticks",
                         (unsigned long long)s->ticks, "dropped_ticks",
                         (unsigned long long)s->dropped_ticks, "in_place",
                         (unsigned long long)s->in_place, "still_captures",
                         (unsigned long long)atomic_load(&s->still_captures), "gil_captures",
                         (unsigned long long)s->gil_captures, "reused",
                         (unsigned long long)s->reused, "timeouts",
                         (unsigned long long)s->timeouts, "faults",
                         (unsigned long long)s->faults, "rejected_frames",
                         (unsigned long long)s->rejected_frames, "rejected_values",
                         (unsigned long long)s->rejected_values, "codes",
                         (unsigned int)(s->ncodes - CODE_ID_FIRST), "signal", s->signum,
                         "max_depth", s->max_depth, "timer_overruns",
                         (unsigned long long)s->timer_overruns, "timers", s->ntimers,
                         "timer_errno", s->timer_errno, "timer_user_only", s->timer_user_only,
                         "capture_cost_ns", (long long)atomic_load(&s->capture_cost_ns));
}

static PyMethodDef Sampler_methods[] = {
    {"tick", (PyCFunction)(void (*)(void))Sampler_tick, METH_FASTCALL,
     "tick(var=None, native_ids=None, value_type=None) -> list of (ident, native_id, cpu_ns, "
     "wall_ns, stack, value, in_place, time_ns, count)"},
    {"run", (PyCFunction)(void (*)(void))Sampler_run, METH_VARARGS | METH_KEYWORDS,
     "run(callback, interval, var=None, native_ids=None, value_type=None): sample until stop(); "
     "callback(samples) is called with the GIL after each tick."},
    {"stop", (PyCFunction)Sampler_stop, METH_NOARGS, "Make run() return; any thread."},
    {"set_interval", (PyCFunction)Sampler_set_interval, METH_O,
     "Change the mean interval of a running sampler (seconds)."},
    {"ticker_native_id", (PyCFunction)Sampler_ticker_native_id, METH_NOARGS,
     "Native id of the ticker thread while run() runs, else 0."},
    {"code", (PyCFunction)Sampler_code, METH_O, "code(id) -> code object or None"},
    {"reset_codes", (PyCFunction)Sampler_reset_codes, METH_NOARGS,
     "Release every code object; ids restart."},
    {"close", (PyCFunction)Sampler_close, METH_NOARGS, "Stop in-place capture; idempotent."},
    {"stats", (PyCFunction)Sampler_stats, METH_NOARGS, "Counters since creation."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SamplerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "spanprof._sampler.Sampler",
    .tp_basicsize = sizeof(SamplerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Sampler_init,
    .tp_dealloc = (destructor)Sampler_dealloc,
    .tp_methods = Sampler_methods,
    .tp_doc = "Sampler(max_depth=128, signum=0, slots=16, timeout=0.02)",
};

/* ---- module functions --------------------------------------------------- */

static PyObject *
mod_free_signal(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    for (int sig = SIGRTMAX; sig >= SIGRTMIN; sig--) {
        if (signal_is_free(sig)) {
            return PyLong_FromLong(sig);
        }
    }
    return PyLong_FromLong(0);
}

static PyObject *
mod_signal_is_free(PyObject *m, PyObject *arg)
{
    long sig = PyLong_AsLong(arg);
    if (sig == -1 && PyErr_Occurred()) {
        return NULL;
    }
    return PyBool_FromLong(sig >= SIGRTMIN && sig <= SIGRTMAX && signal_is_free((int)sig));
}

static PyObject *
mod_thread_cpu_ns(PyObject *m, PyObject *arg)
{
    long tid = PyLong_AsLong(arg);
    if (tid == -1 && PyErr_Occurred()) {
        return NULL;
    }
    int64_t v = thread_cpu_ns((pid_t)tid);
    if (v < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLongLong(v);
}

/* For tests: whether safe_read() reads at `address` (without crashing). */
static PyObject *
mod_readable(PyObject *m, PyObject *arg)
{
    uintptr_t address = (uintptr_t)PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred()) {
        return NULL;
    }
    char buf[sizeof(PyObject)];
    return PyBool_FromLong(safe_read((const void *)address, buf, sizeof(buf)) == 0);
}

static PyObject *
mod_name_this_thread(PyObject *m, PyObject *arg)
{
    const char *name = PyUnicode_AsUTF8(arg);
    if (name == NULL) {
        return NULL;
    }
    (void)prctl(PR_SET_NAME, name, 0, 0, 0); /* 15 bytes kept; a name only helps tools */
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"free_signal", mod_free_signal, METH_NOARGS,
     "A real-time signal with no handler installed, or 0 if there is none."},
    {"signal_is_free", mod_signal_is_free, METH_O, "Whether a signal can be used."},
    {"_readable", mod_readable, METH_O, "For tests: can a possibly stale pointer be read."},
    {"name_this_thread", mod_name_this_thread, METH_O,
     "Name the calling OS thread (top -H, perf, /proc/*/task/*/comm); never the main thread."},
    {"thread_cpu_ns", mod_thread_cpu_ns, METH_O,
     "CPU time of a thread by native id; OSError if it has exited."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef sampler_module = {
    PyModuleDef_HEAD_INIT, "spanprof._sampler", "spanprof's native all-thread sampler.", -1,
    module_methods,
};

PyMODINIT_FUNC
PyInit__sampler(void)
{
    if (PyType_Ready(&SamplerType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&sampler_module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&SamplerType);
    if (PyModule_AddObject(m, "Sampler", (PyObject *)&SamplerType) < 0 ||
        PyModule_AddIntConstant(m, "CODE_ID_UNKNOWN", CODE_ID_UNKNOWN) < 0 ||
        PyModule_AddIntConstant(m, "CODE_ID_TRUNCATED", CODE_ID_TRUNCATED) < 0 ||
        PyModule_AddIntConstant(m, "WALL_TICKS", WALL_TICKS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyObject *api = PyCapsule_New((void *)&g_pending_api, SPANPROF_PENDING_CAPSULE, NULL);
    if (api == NULL || PyModule_AddObject(m, "_pending_api", api) < 0) {
        Py_XDECREF(api);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
