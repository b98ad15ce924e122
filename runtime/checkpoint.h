/* runtime/checkpoint.h — the "last" state of a run, enough to continue it
 * exactly: parameters (BN statistics included), momentum, the best weights so
 * far, the loop and schedule state, the backend's step counter, the phase,
 * and the finished phases' results. Stored as a safetensors file (three F32
 * tensors, the rest as metadata, one number a key) written atomically.
 *
 * Trust: a CRC-32 over every metadata key and value and the tensor data is
 * stored in the metadata, so that any edit or corruption is refused. Every
 * number is parsed strictly (the whole text, no sign where none is allowed,
 * finite) and range-checked on its own when loaded, and against the run
 * that resumes it by checkpoint_fits; each refusal names the file and the
 * metadata key. */
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
    /* what the run is: "name=value" lines (CRC-32 of the arch file, the
     * starting weights and the data; the options that shape training), which
     * a resume must match (checkpoint_settings_diff) */
    char settings[2048];
    size_t param_floats, opt_floats;
    float *params, *momentum, *best;    /* owned */
    int has_best;
} Checkpoint;

/* What the resuming run is: the checkpoint's state must lie inside it. */
typedef struct {
    int phases;                 /* of the strategy */
    int max_epochs;             /* per phase */
    int steps;                  /* per epoch */
    int batch, n_train;
    int max_rollbacks;
} CheckpointRun;

/* Write: returns 0, or 1 with a message. */
int checkpoint_save(const char *path, const Checkpoint *c, char *err, size_t errlen);
/* Read and verify (structure, every value, CRC). Returns 0, 2 (corrupt or
 * not a kiln checkpoint: the message names the key) or 1 (I/O). */
int checkpoint_load(const char *path, Checkpoint *c, char *err, size_t errlen);
/* The loaded state against the run that continues it. Returns 0, or 2 with
 * a message naming path and the key that does not fit. */
int checkpoint_fits(const Checkpoint *c, const CheckpointRun *run, const char *path, char *err, size_t errlen);
/* The settings (name=value lines) that differ between a checkpoint's and a
 * resuming run's, as "name old -> new" joined by "; " into out. Returns how
 * many differ. */
int checkpoint_settings_diff(const char *saved, const char *now, char *out, size_t n);
/* The same from the len bytes at buf (name is used in messages only). */
int checkpoint_load_mem(const void *buf, size_t len, const char *name, Checkpoint *c, char *err, size_t errlen);
void checkpoint_free(Checkpoint *c);

#endif
