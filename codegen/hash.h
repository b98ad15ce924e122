/* codegen/hash.h — the one byte hash of the project: 64-bit FNV-1a (Fowler,
 * Noll, Vo; offset basis 14695981039346656037, prime 1099511628211), used to
 * key generated sources, compiled-module caches and emulated kernels. Not a
 * cryptographic hash: it names content, it does not authenticate it.
 * Header-only so that codegen (the bottom library), runtime and tests share
 * it without a link dependency. */
#ifndef KILN_HASH_H
#define KILN_HASH_H

#include <stddef.h>
#include <stdint.h>

#define KILN_HASH_INIT 0xcbf29ce484222325ull

/* Continue the hash h over n bytes at p. */
static inline uint64_t kiln_hash(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) { h ^= s[i]; h *= 0x100000001b3ull; }
    return h;
}

#endif
