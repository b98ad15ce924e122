/* runtime/device.h — which backend runs a plan: `--device cpu|cuda|auto`.
 *
 *   cpu   the CPU executor (runtime/cpu.c), always there;
 *   cuda  the CUDA backend (runtime/cuda/cuda.h); an error when this kiln
 *         has no CUDA or the machine no usable device;
 *   auto  cuda when a device can be used, else cpu, saying why.
 *
 * A command resolves the name once (device_resolve, which prints the choice)
 * and then creates every backend with the resolved name (backend_create), so
 * the message comes once however many plans a run builds. The default of a
 * command's --device is $KILN_DEVICE when set, else auto (device_default).
 */
#ifndef KILN_DEVICE_H
#define KILN_DEVICE_H

#include <stddef.h>
#include <stdio.h>

#include "codegen/plan.h"
#include "runtime/backend.h"
#include "runtime/cuda/cuda.h"

/* $KILN_DEVICE, or "auto". */
const char *device_default(void);

/* 1 when name is cpu, cuda or auto. */
int device_valid(const char *name);

/* Resolve name (NULL: cpu) to "cpu" or "cuda" in *resolved. Prints to log
 * (when not NULL) "device: cuda (<card>)" when cuda is chosen and
 * "device: cpu (auto: <reason>)" when auto falls back. Returns 0, or 2 with
 * a message in err: an unknown name, or "--device cuda: no CUDA device
 * (<reason>)". */
int device_resolve(const char *name, FILE *log, const char **resolved, char *err, size_t errlen);

/* The backend of plan p on device (cpu, cuda, or auto resolved silently;
 * NULL: cpu). o: CUDA options (NULL: defaults). Returns NULL with a message
 * in err. */
Backend *backend_create(const char *device, const Plan *p, const CudaOptions *o, char *err, size_t errlen);

#endif
