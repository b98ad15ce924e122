/* runtime/checkpoint.h — the "last" state of a run, enough to continue it
 * exactly: parameters (BN statistics included), momentum, the best weights so
 * far, the loop and schedule state, the backend's step counter, the phase,
 * and the finished phases' results. Stored as a safetensors file (three F32
 * tensors, the rest as metadata) written atomically, with a CRC-32 of the
 * tensor data in the metadata so that a corrupted file is refused. */
#ifndef KILN_CHECKPOINT_H
#define KILN_CHECKPOINT_H

#include "runtime/train.h"

typedef struct {
    int phase;
    LoopState ls;
    uint64_t backend_step;
    /* results of phase 0 when the checkpoint is in phase 1 */
    int prev_epochs, prev_best_epoch;
    double prev_seconds, prev_best_val;
    char arch[64];
    size_t param_floats, opt_floats;
    float *params, *momentum, *best;    /* owned */
    int has_best;
} Checkpoint;

/* Write: returns 0, or 1 with a message. */
int checkpoint_save(const char *path, const Checkpoint *c, char *err, size_t errlen);
/* Read and verify (CRC, structure). Returns 0, 2 (corrupt or not a kiln
 * checkpoint: the message says which) or 1 (I/O). */
int checkpoint_load(const char *path, Checkpoint *c, char *err, size_t errlen);
/* The same from the len bytes at buf (name is used in messages only). */
int checkpoint_load_mem(const void *buf, size_t len, const char *name, Checkpoint *c, char *err, size_t errlen);
void checkpoint_free(Checkpoint *c);

#endif
