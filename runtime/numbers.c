/* runtime/numbers.c — strict readers of numbers and image sizes (see
 * numbers.h). */
#include "runtime/numbers.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int parse_int_arg(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < -2147483647L || v > 2147483647L) return -1;
    *out = (int)v;
    return 0;
}

int parse_float_arg(const char *s, float *out)
{
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !(fabs(v) <= FLT_MAX)) return -1;
    *out = (float)v;
    return 0;
}

/* The range is checked on the double, before the cast. */
int parse_bytes_arg(const char *s, size_t *out)
{
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !(v >= 1 && v <= (double)(SIZE_MAX / 2))) return -1;
    *out = (size_t)v;
    return 0;
}

int parse_hwc_arg(const char *s, int *h, int *w, int *c)
{
    char buf[32], *part[3] = {buf, NULL, NULL};
    if (strlen(s) >= sizeof buf) return -1;
    strcpy(buf, s);
    int n = 1;
    for (char *p = buf; *p; p++)
        if (*p == 'x') {
            if (n == 3) return -1;
            *p = 0;
            part[n++] = p + 1;
        }
    if (n == 3 && !c) return -1;
    int v[3] = {0, 0, 0};
    for (int k = 0; k < n; k++)
        if (parse_int_arg(part[k], &v[k])) return -1;
    if (n == 1) v[1] = v[0];
    if (v[0] < 1 || v[1] < 1 || v[0] > 4096 || v[1] > 4096 || (n == 3 && (v[2] < 1 || v[2] > 4))) return -1;
    *h = v[0];
    *w = v[1];
    if (c) *c = v[2];
    return 0;
}

int parse_hw_arg(const char *s, int *h, int *w)
{
    return parse_hwc_arg(s, h, w, NULL);
}
