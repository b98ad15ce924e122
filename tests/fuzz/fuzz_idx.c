/* tests/fuzz/fuzz_idx.c — fuzz target: the Fashion-MNIST loader
 * (dataset_fashion_mnist_mem) on four IDX files, gzipped or not. The input is
 * the train images, train labels, t10k images and t10k labels files joined by
 * the 8-byte separator "KILNIDX|" (missing pieces are empty). Invariant
 * checked: a load either fails with a message or yields a table whose labels
 * are in 0..9 and whose test split is the t10k count. */
#include "tests/fuzz/fuzz_caps.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* First occurrence of the n bytes of needle in the len bytes at p, or NULL. */
static const uint8_t *find(const uint8_t *p, size_t len, const char *needle, size_t n)
{
    for (size_t i = 0; i + n <= len; i++)
        if (!memcmp(p + i, needle, n)) return p + i;
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char sep[] = "KILNIDX|";
    const size_t sl = sizeof sep - 1;
    fuzz_caps();
    const void *part[4] = {data, data, data, data};
    size_t len[4] = {0, 0, 0, 0};
    size_t at = 0;
    for (int k = 0; k < 4; k++) {
        part[k] = data + at;
        const uint8_t *end = k < 3 ? find(data + at, size - at, sep, sl) : NULL;
        len[k] = end ? (size_t)(end - (data + at)) : size - at;
        at += len[k];
        if (!end) break;
        at += sl;
    }
    Dataset ds;
    char err[512] = "";
    if (dataset_fashion_mnist_mem(&ds, part, len, err, sizeof err)) {
        if (!err[0]) abort();
        return 0;
    }
    if (ds.c != 1 || ds.num_classes != 10 || ds.n_fixed_test < 1 || ds.n_fixed_test >= ds.n) abort();
    for (int i = 0; i < ds.n; i++)
        if (ds.labels[i] < 0 || ds.labels[i] > 9) abort();
    dataset_free(&ds);
    return 0;
}
