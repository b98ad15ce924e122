/* tests/kiln_cli.h — running the kiln program under test ($KILN_BIN, which
 * ctest sets to the built binary) from a suite: its exit code, its output
 * in files or in memory. ARGS are printf-style and the caller shell-quotes
 * what needs it. Header-only (static inline), for tests. */
#ifndef KILN_TESTS_KILN_CLI_H
#define KILN_TESTS_KILN_CLI_H

#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

/* The kiln binary under test (the test fails when KILN_BIN is unset). */
static inline const char *kiln_bin(void)
{
    const char *bin = getenv("KILN_BIN");
    ck_assert_msg(bin != NULL, "KILN_BIN is not set (ctest sets it to the built kiln)");
    return bin;
}

/* Run `$KILN_BIN ARGS`, under `timeout secs` when secs > 0, with stdout
 * into the file out and stderr into err (NULL: /dev/null; err equal to out:
 * both into out). Returns the exit status, -1 when kiln did not exit. */
static inline int kiln_vcmd(int secs, const char *out, const char *err, const char *fmt, va_list ap)
{
    char args[4096], lim[32] = "", o[1100], e[1100], cmd[8192];
    vsnprintf(args, sizeof args, fmt, ap);
    if (secs > 0) snprintf(lim, sizeof lim, "timeout %d ", secs);
    snprintf(o, sizeof o, "'%s'", out ? out : "/dev/null");
    if (err && out && err == out) snprintf(e, sizeof e, "&1");
    else snprintf(e, sizeof e, "'%s'", err ? err : "/dev/null");
    snprintf(cmd, sizeof cmd, "%s'%s' %s >%s 2>%s", lim, kiln_bin(), args, o, e);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* kiln_vcmd with the arguments inline. */
static inline int kiln_cmd(int secs, const char *out, const char *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static inline int kiln_cmd(int secs, const char *out, const char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = kiln_vcmd(secs, out, err, fmt, ap);
    va_end(ap);
    return rc;
}

/* Run `$KILN_BIN ARGS` with stdout and stderr together; returns what it
 * wrote (malloc'd, NUL-terminated) and its exit status in *rc (-1 when it
 * did not exit). */
static inline char *kiln_output(int *rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline char *kiln_output(int *rc, const char *fmt, ...)
{
    char args[4096], cmd[5120];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", kiln_bin(), args);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = 0, cap = 1 << 16;
    char *out = malloc(cap);
    ck_assert_ptr_nonnull(out);
    for (size_t k; (k = fread(out + n, 1, cap - 1 - n, p)) > 0;) {
        n += k;
        if (n + 1 == cap) {
            out = realloc(out, cap *= 2);
            ck_assert_ptr_nonnull(out);
        }
    }
    out[n] = 0;
    int st = pclose(p);
    *rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}

#endif
