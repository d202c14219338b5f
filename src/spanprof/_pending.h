/*
 * Which OTel context values a capture has seen that the resolver has not
 * resolved yet: shared by spanprof._sampler (which records them) and
 * spanprof._context (which keeps such a value alive when the application
 * detaches it). Exported by _sampler as the capsule
 * "spanprof._sampler._pending_api".
 */
#ifndef SPANPROF_PENDING_H
#define SPANPROF_PENDING_H

#define SPANPROF_PENDING_CAPSULE "spanprof._sampler._pending_api"
#define SPANPROF_PENDING_VERSION 1

typedef struct {
    int version;
    /* The tick (low 16 bits) of the latest unresolved capture that saw
     * `value`, or -1 if none did. Any thread; lock-free. */
    int (*value_pending)(const void *value);
    /* Whether captures of tick `seq` (as returned above) are still unresolved. */
    int (*seq_pending)(int seq);
} spanprof_pending_api;

#endif
