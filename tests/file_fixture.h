/* tests/file_fixture.h — reading a whole file in tests, shared by the suites
 * that check what kiln wrote (run folders, logs, reports).
 * Header-only (static inline), for tests. */
#ifndef KILN_TESTS_FILE_FIXTURE_H
#define KILN_TESTS_FILE_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>

/* The whole file at path, NUL-terminated (malloc'd), its length in *n when
 * n is not NULL; NULL when it cannot be opened or read whole. */
static inline char *slurp(const char *path, size_t *n)
{
    if (n) *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    long len = fseek(f, 0, SEEK_END) ? -1 : ftell(f);
    char *b = len >= 0 && !fseek(f, 0, SEEK_SET) ? malloc((size_t)len + 1) : NULL;
    if (b && fread(b, 1, (size_t)len, f) != (size_t)len) { free(b); b = NULL; }
    fclose(f);
    if (!b) return NULL;
    b[len] = 0;
    if (n) *n = (size_t)len;
    return b;
}

#endif
