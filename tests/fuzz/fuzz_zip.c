/* tests/fuzz/fuzz_zip.c — fuzz target: any bytes as an ImageFolder zip
 * (dataset_zip_mem: libzip's reading of the central directory, kiln's own
 * walk of it for NUL names, the listing's name checks, the class folders,
 * the caps, the reading and decoding of every entry). Invariant checked: a
 * load either fails with a message or yields a table whose labels are
 * classes it names. */
#include "tests/fuzz/fuzz_caps.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_caps();
    Dataset ds;
    char err[512] = "";
    if (dataset_zip_mem(&ds, data, size, "fuzz.zip", NULL, err, sizeof err)) {
        if (!err[0]) abort();
        return 0;
    }
    if (ds.n < 1 || ds.num_classes < 1) abort();
    for (int k = 0; k < ds.num_classes; k++)
        if (!ds.class_names[k]) abort();
    for (int i = 0; i < ds.n; i++)
        if (ds.labels[i] < 0 || ds.labels[i] >= ds.num_classes) abort();
    dataset_free(&ds);
    return 0;
}
