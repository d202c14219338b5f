/*
 * The pointer hash of spanprof's native parts (the high bits of a murmur3
 * finaliser; callers mask it).
 */
#ifndef SPANPROF_HASH_H
#define SPANPROF_HASH_H

#include <stdint.h>

static inline uint64_t
spanprof_ptr_hash(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

#endif
