/* tests/fuzz/fuzz_caps.h — the data caps every data set fuzz target loads
 * under: small enough that a header claiming a large image or archive is
 * refused (or allocated) within the fuzzer's memory limit, large enough for
 * every seed. Set once, before the first input. */
#ifndef KILN_FUZZ_CAPS_H
#define KILN_FUZZ_CAPS_H

#include "datasets/dataset.h"

static void fuzz_caps(void)
{
    static int done;
    if (done) return;
    const DataLimits lim = {1u << 20, 16u << 20, 1u << 20};
    dataset_set_limits(&lim);
    done = 1;
}

#endif
