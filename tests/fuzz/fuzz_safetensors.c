/* tests/fuzz/fuzz_safetensors.c — fuzz target: any bytes as a safetensors
 * file (st_load_mem). Invariant checked: a load either fails with a message
 * or yields tensors whose shapes multiply to their sizes, each of them found
 * again by name and every value finite. */
#include "runtime/safetensors.h"

#include <math.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    StFile f;
    char err[512] = "";
    int rc = st_load_mem(data, size, "fuzz.safetensors", &f, err, sizeof err);
    if (rc) {
        if (!err[0]) abort();
        return 0;
    }
    for (int i = 0; i < f.n; i++) {
        const StTensor *t = &f.tensors[i];
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= (size_t)t->shape[d];
        if (numel != t->numel || st_find(&f, t->name) != t) abort();
        for (size_t k = 0; k < t->numel; k++)
            if (!isfinite(t->data[k])) abort();
    }
    for (int i = 0; i < f.n_meta; i++)
        if (!st_meta(&f, f.meta_keys[i])) abort();
    st_free(&f);
    return 0;
}
