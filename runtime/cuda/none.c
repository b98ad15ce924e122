/* runtime/cuda/none.c — the CUDA entry points of a kiln built without the
 * CUDA toolkit (KILN_HAVE_CUDA off): every one says so, so --device auto
 * falls back to the CPU and --device cuda explains itself. */
#include <stdio.h>

#include "runtime/cuda/cuda.h"

#define NO_CUDA "this kiln was built without CUDA; the CUDA toolkit and -DKILN_CUDA=ON build it in"

void cuda_options_default(CudaOptions *o)
{
    o->tf32 = 0;
    o->graphs = 1;
    o->quiet = 0;
}

int cuda_available(char *why, size_t len)
{
    snprintf(why, len, "%s", NO_CUDA);
    return 0;
}

int cuda_device_name(char *buf, size_t len)
{
    snprintf(buf, len, "none");
    return 1;
}

int cuda_memory_info(size_t *free_b, size_t *total_b)
{
    *free_b = *total_b = 0;
    return 1;
}

Backend *cuda_backend_create(const Plan *p, const CudaOptions *o, char *err, size_t errlen)
{
    (void)p; (void)o;
    snprintf(err, errlen, "%s", NO_CUDA);
    return NULL;
}
