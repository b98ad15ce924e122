/* runtime/numbers.h — strict readers of numbers and image sizes in text,
 * shared by the command line's options (tools/kiln) and the files kiln reads
 * back (a report's results.csv). Every number is read as the whole string
 * and range-checked before it is converted, so no value (inf, nan, 1e30,
 * "12junk") reaches an out-of-range cast. Each returns 0, or -1 with its
 * outputs untouched. */
#ifndef KILN_NUMBERS_H
#define KILN_NUMBERS_H

#include <stddef.h>

/* A whole-string int. */
int parse_int_arg(const char *s, int *out);
/* A whole-string number that is finite and fits a float. */
int parse_float_arg(const char *s, float *out);
/* A byte count: a whole-string number (8e9 allowed) from 1 to SIZE_MAX/2. */
int parse_bytes_arg(const char *s, size_t *out);
/* An image size "HxW", or "N" for NxN, each 1..4096. */
int parse_hw_arg(const char *s, int *h, int *w);
/* An image size "HxW", "N" for NxN, or "HxWxC" with C 1..4 (*c is 0 when
 * no C is given); H and W 1..4096. */
int parse_hwc_arg(const char *s, int *h, int *w, int *c);

#endif
