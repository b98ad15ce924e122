/* runtime/resume.h — what `kiln train --resume` checks and records around a
 * run (run_folder.c and run_phase.c call these): the settings a checkpoint
 * must match (CRC-32 of the arch file, the starting weights and the data;
 * the options that shape training, as name=value lines that
 * checkpoint_settings_diff compares), the
 * entry a resume appends to DIR/resumes.json (config.json stays as the run
 * began), and the finished run that a resume leaves as it is. */
#ifndef KILN_RESUME_H
#define KILN_RESUME_H

#include "runtime/checkpoint.h"
#include "runtime/run.h"

/* CRC-32 of a data set's content: pixels, labels, class names. */
uint32_t resume_data_crc(const Dataset *ds);
/* The run's settings into buf (Checkpoint.settings). Returns 0, or 2 when
 * the arch or weights file cannot be read. */
int resume_settings(char *buf, size_t n, const RunConfig *c, const TrainSpec *t, const InputAttr *in,
                    const Dataset *ds, uint32_t data_crc, char *err, size_t errlen);
/* Append this resume (where it continues, the options it may change) to
 * dir/resumes.json. Returns 0, 2 when that file is not a JSON array, 1 when
 * it cannot be written. */
int resume_record(const char *dir, const RunConfig *c, const TrainSpec *t, const Checkpoint *k,
                  const char *device, char *err, size_t errlen);
/* 1 when checkpoint k is of a finished run whose summary is in dir: says so
 * on log, fills r from the summary; the caller then changes nothing. */
int resume_finished(const char *dir, const Checkpoint *k, int phases, int max_epochs, const char *save,
                    FILE *log, RunResult *r);

#endif
