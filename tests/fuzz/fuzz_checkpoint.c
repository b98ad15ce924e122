/* tests/fuzz/fuzz_checkpoint.c — fuzz target: any bytes as a run's last.ckpt
 * (checkpoint_load_mem: the safetensors container, the state metadata, the
 * CRC). Invariant checked: a load either fails with a message (2 for bad
 * bytes: memory is never short here) or yields buffers of the sizes it
 * reports, every value finite (as the container guarantees). */
#include "runtime/checkpoint.h"

#include <math.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Checkpoint c;
    char err[512] = "";
    int rc = checkpoint_load_mem(data, size, "fuzz.ckpt", &c, err, sizeof err);
    if (rc) {
        if (rc != 2 || !err[0]) abort();
        return 0;
    }
    for (size_t i = 0; i < c.param_floats; i++)
        if (!isfinite(c.params[i]) || (c.has_best && !isfinite(c.best[i]))) abort();
    for (size_t i = 0; i < c.opt_floats; i++)
        if (!isfinite(c.momentum[i])) abort();
    checkpoint_free(&c);
    return 0;
}
