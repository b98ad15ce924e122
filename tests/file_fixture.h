/* tests/file_fixture.h — files in tests, shared by the suites that check
 * what kiln wrote (run folders, logs, reports): a fresh temporary folder per
 * test, the source tree and the path of tiny.arch, and reading a whole file.
 * Header-only (static inline), for tests. */
#ifndef KILN_TESTS_FILE_FIXTURE_H
#define KILN_TESTS_FILE_FIXTURE_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The source tree: $KILN_SOURCE_DIR (set by ctest), else the working folder. */
static inline const char *source_dir(void)
{
    const char *src = getenv("KILN_SOURCE_DIR");
    return src ? src : ".";
}

/* tiny.arch of the source tree into tiny, and a new folder /tmp/kiln-NAME-XXXXXX into dir (dirlen >= 64). */
static inline void test_dirs_make(char *tiny, size_t tinylen, char *dir, size_t dirlen, const char *name)
{
    snprintf(tiny, tinylen, "%s/archs/tiny.arch", source_dir());
    snprintf(dir, dirlen, "/tmp/kiln-%s-XXXXXX", name);
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

/* Remove the folder test_dirs_make made, with all it holds. */
static inline void test_dir_remove(const char *dir)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

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
