/* runtime/safetensors.h — the safetensors format, read and written in C.
 *
 * Layout: 8-byte little-endian header length N, N bytes of a JSON object
 * {"NAME": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
 *  ..., "__metadata__": {"key": "value", ...}}, then the data section.
 * Validation follows the reference implementation: header size limit
 * (100 MB), a JSON object, no duplicate names, a known dtype, shape x dtype
 * size checked for overflow and equal to end - begin, offsets sorted,
 * contiguous, in bounds and covering the whole data section.
 *
 * Loaded tensors are float32 in memory, in the file's data order: F32 as is,
 * F16 and BF16 converted; other known dtypes are refused for weights. NaN or
 * Inf is an error. Trailing spaces after the JSON (padding) are accepted. The
 * host must be little-endian (checked).
 * Writing goes to PATH.tmp.XXXXXX, fsync, rename: an existing file is either
 * the old or the new one, never half of each.
 */
#ifndef KILN_SAFETENSORS_H
#define KILN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8

typedef struct {
    char *name;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t numel;
    float *data;            /* numel floats */
} StTensor;

typedef struct {
    StTensor *tensors;
    int n;
    char **meta_keys, **meta_values;   /* __metadata__, n_meta pairs */
    int n_meta;
} StFile;

/* Read and validate PATH. Returns 0, 2 on bad input (err names the file and,
 * where there is one, the tensor), 1 on an I/O or memory failure. */
int st_load(const char *path, StFile *out, char *err, size_t errlen);
/* The same from the len bytes at buf (name is used in messages only). */
int st_load_mem(const void *buf, size_t len, const char *name, StFile *out, char *err, size_t errlen);
void st_free(StFile *f);
const StTensor *st_find(const StFile *f, const char *name);
const char *st_meta(const StFile *f, const char *key);   /* NULL if absent */

/* Write n F32 tensors (in the given order) and metadata pairs atomically.
 * The header is padded with spaces to a multiple of 8 bytes (as the
 * reference writer does). Returns 0, 2 on bad arguments (duplicate name, bad
 * shape, shape not matching numel, a NaN or Inf value), 1 on I/O (then PATH
 * is untouched and no temporary file is left). */
int st_save(const char *path, const StTensor *tensors, int n,
            const char *const *meta_keys, const char *const *meta_values, int n_meta,
            char *err, size_t errlen);

#endif
