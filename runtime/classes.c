/* runtime/classes.c — class names stored with the weights and matched
 * across data sources (see classes.h).
 *
 * Every name that reaches a message goes through dataset_escape: names come
 * from folders, archives and weights files and are never trusted.
 */
#include "runtime/classes.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/dataset.h"

#define CLASSES_MAX 100000      /* more names than any head kiln plans */
#define MAP_LINE_MAX 4096
#define NAME_ESC 160            /* bytes of one escaped name in a message */

/* ---- stored form and JSON ------------------------------------------------------------ */

/* The form a name is stored and compared in: itself when it is valid UTF-8
 * (what JSON can carry), else its escaped text. malloc'ed; NULL when out of
 * memory. */
static char *stored_form(const char *name)
{
    json_t *s = json_string(name);
    if (s) {
        json_decref(s);
        return strdup(name);
    }
    size_t len = strlen(name), cap = 4 * len + 8;
    char *e = malloc(cap);
    if (e) dataset_escape(e, cap, name, len);
    return e;
}

json_t *classes_json(char *const *names, int n)
{
    if (!names || n < 1) return NULL;
    json_t *a = json_array();
    for (int k = 0; a && k < n; k++) {
        char *s = names[k] ? stored_form(names[k]) : NULL;
        if (!s || json_array_append_new(a, json_string(s))) {
            free(s);
            json_decref(a);
            return NULL;
        }
        free(s);
    }
    return a;
}

char *classes_meta_value(char *const *names, int n)
{
    json_t *a = classes_json(names, n);
    if (!a) return NULL;
    char *s = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return s;
}

void classes_free(char **names, int n)
{
    if (!names) return;
    for (int k = 0; k < n; k++) free(names[k]);
    free(names);
}

int classes_parse(const char *path, const char *value, char ***names, int *n, char *err, size_t errlen)
{
    *names = NULL;
    *n = 0;
    json_error_t je;
    json_t *a = json_loads(value, JSON_REJECT_DUPLICATES, &je);
    size_t len = json_is_array(a) ? json_array_size(a) : 0;
    int ok = len >= 1 && len <= CLASSES_MAX;
    for (size_t k = 0; ok && k < len; k++) ok = json_is_string(json_array_get(a, k));
    if (!ok) {
        snprintf(err, errlen, "%s: metadata %s is not a JSON array of 1 to %d class names", path,
                 KILN_CLASSES_KEY, CLASSES_MAX);
        json_decref(a);
        return 2;
    }
    char **out = calloc(len + 1, sizeof *out);
    for (size_t k = 0; out && k < len; k++)
        if (!(out[k] = strdup(json_string_value(json_array_get(a, k))))) {
            classes_free(out, (int)k);
            out = NULL;
        }
    json_decref(a);
    if (!out) {
        snprintf(err, errlen, "%s: out of memory", path);
        return 1;
    }
    *names = out;
    *n = (int)len;
    return 0;
}

/* ---- matching -------------------------------------------------------------------------- */

/* A separator that names may differ in. */
static int is_sep(unsigned char c)
{
    return c == ' ' || c == '_' || c == '-' || c == '/';
}

/* ASCII lower case; other bytes as they are. */
static unsigned char lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c - 'A' + 'a') : c;
}

int class_name_match(const char *a, const char *b)
{
    const unsigned char *p = (const unsigned char *)a, *q = (const unsigned char *)b;
    for (;;) {
        while (*p && is_sep(*p)) p++;
        while (*q && is_sep(*q)) q++;
        if (!*p || !*q) return !*p && !*q;
        if (lower(*p++) != lower(*q++)) return 0;
    }
}

/* The index of `name` in list: the exact match, else the only loose one.
 * -1: none, -2: more than one loose match. */
static int find_name(char *const *list, int n, const char *name)
{
    int hit = -1, loose = 0;
    for (int k = 0; k < n; k++) {
        if (!strcmp(list[k], name)) return k;
        if (class_name_match(list[k], name)) {
            hit = k;
            loose++;
        }
    }
    return loose > 1 ? -2 : hit;
}

/* ---- messages ---------------------------------------------------------------------------- */

/* Append to err at *o (kept within errlen). */
static void put(char *err, size_t errlen, size_t *o, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void put(char *err, size_t errlen, size_t *o, const char *fmt, ...)
{
    if (*o >= errlen) return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(err + *o, errlen - *o, fmt, ap);
    va_end(ap);
    *o = w < 0 ? errlen : *o + (size_t)w;
}

/* A name escaped for a message, into buf (NAME_ESC bytes). */
static const char *esc_name(char *buf, const char *s)
{
    return dataset_escape(buf, NAME_ESC, s, strlen(s));
}

/* "what, N classes: a, b, c" with names escaped, as many as fit. */
static void put_list(char *err, size_t errlen, size_t *o, const char *what, char *const *names, int n)
{
    char esc[NAME_ESC];
    put(err, errlen, o, "%s, %d classes:", what, n);
    for (int k = 0; k < n; k++) {
        esc_name(esc, names[k]);
        if (*o + strlen(esc) + 40 >= errlen) {
            put(err, errlen, o, " and %d more", n - k);
            return;
        }
        put(err, errlen, o, "%s '%s'", k ? "," : "", esc);
    }
}

/* ---- the class map file ---------------------------------------------------------------------- */

/* Trim spaces and tabs at both ends of s, in place. */
static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = 0;
    return s;
}

/* Apply the map file's lines to map (line[d]: the line that set map[d]).
 * sd: the data names in stored form. Returns 0, 2 with file:line, 1. */
static int read_map(const char *path, char *const *sd, int nd, char *const *weights, int nw, int *map,
                    int *line, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot read the class map: %s", path, strerror(errno));
        return 2;
    }
    char *buf = NULL, *l = NULL, *r = NULL, e1[NAME_ESC];
    size_t cap = 0;
    ssize_t got;
    int rc = 0, ln = 0;
    while (!rc && (got = getline(&buf, &cap, f)) >= 0) {
        ln++;
        while (got && (buf[got - 1] == '\n' || buf[got - 1] == '\r')) buf[--got] = 0;
        if ((size_t)got != strlen(buf) || got > MAP_LINE_MAX) {
            snprintf(err, errlen, "%s:%d: %s", path, ln, got > MAP_LINE_MAX ? "line too long" : "a NUL byte in the line");
            rc = 2;
            break;
        }
        char *s = trim(buf), *eq = strchr(s, '=');
        if (!*s || *s == '#') continue;
        if (eq) *eq = 0;
        free(l);
        free(r);
        l = r = NULL;
        if (!eq || !*trim(s) || !*trim(eq + 1)) {
            snprintf(err, errlen, "%s:%d: expected 'data name = weights name'", path, ln);
            rc = 2;
            break;
        }
        if (!(l = stored_form(trim(s))) || !(r = stored_form(trim(eq + 1)))) {
            snprintf(err, errlen, "%s: out of memory", path);
            rc = 1;
            break;
        }
        int d = find_name(sd, nd, l), w = find_name(weights, nw, r);
        size_t o = 0;
        if (d < 0 || w < 0) {
            put(err, errlen, &o, "%s:%d: ", path, ln);
            if (d < 0)
                put(err, errlen, &o, "'%s' %s of the data's classes; ", esc_name(e1, l), d == -1 ? "is none" : "matches more than one");
            if (w < 0)
                put(err, errlen, &o, "'%s' %s of the weights' classes; ", esc_name(e1, r), w == -1 ? "is none" : "matches more than one");
            put_list(err, errlen, &o, d < 0 ? "the data" : "the weights", d < 0 ? sd : weights, d < 0 ? nd : nw);
            rc = 2;
        } else if (map[d] >= 0) {
            snprintf(err, errlen, "%s:%d: data class '%s' is already mapped on line %d", path, ln, esc_name(e1, sd[d]),
                     line[d]);
            rc = 2;
        } else {
            map[d] = w;
            line[d] = ln;
        }
    }
    if (!rc && ferror(f)) {
        snprintf(err, errlen, "%s: cannot read the class map: %s", path, strerror(errno));
        rc = 1;
    }
    free(l);
    free(r);
    free(buf);
    fclose(f);
    return rc;
}

/* ---- the mapping ------------------------------------------------------------------------------- */

int classes_map(char *const *data, int nd, const char *data_what, char *const *weights, int nw,
                const char *weights_what, const char *map_path, int *map, char *err, size_t errlen)
{
    char **sd = calloc((size_t)nd + 1, sizeof *sd);
    int *line = calloc((size_t)nd + 1, sizeof *line), *user = calloc((size_t)nw + 1, sizeof *user);
    int rc = 1;
    if (!sd || !line || !user) goto oom;
    for (int d = 0; d < nd; d++)
        if (!(sd[d] = stored_form(data[d]))) goto oom;
    for (int d = 0; d < nd; d++) map[d] = -1;
    if (map_path && (rc = read_map(map_path, sd, nd, weights, nw, map, line, err, errlen))) goto out;

    /* by name, then one data class per weights class */
    char why[600] = "", e1[NAME_ESC], e2[NAME_ESC], e3[NAME_ESC];
    for (int d = 0; d < nd && !why[0]; d++) {
        if (map[d] < 0) map[d] = find_name(weights, nw, sd[d]);
        if (map[d] < 0)
            snprintf(why, sizeof why, "data class '%s' %s", esc_name(e1, sd[d]),
                     map[d] == -1 ? "matches no class of the weights" : "matches more than one class of the weights");
        else if (user[map[d]])
            snprintf(why, sizeof why, "data classes '%s' and '%s' both match the weights' '%s'",
                     esc_name(e1, sd[user[map[d]] - 1]), esc_name(e2, sd[d]), esc_name(e3, weights[map[d]]));
        else
            user[map[d]] = d + 1;
    }
    for (int w = 0; w < nw && !why[0] && !map_path; w++)
        if (!user[w]) snprintf(why, sizeof why, "the weights' class '%s' is in no data class", esc_name(e1, weights[w]));
    rc = 0;
    if (why[0]) {
        size_t o = 0;
        put(err, errlen, &o, "the classes of the data and of the weights differ (%s): ", why);
        put_list(err, errlen, &o, data_what, sd, nd);
        put(err, errlen, &o, "; ");
        put_list(err, errlen, &o, weights_what, weights, nw);
        put(err, errlen, &o, "; --class-map FILE with 'data name = weights name' lines pairs names that differ");
        rc = 2;
    }
    goto out;
oom:
    snprintf(err, errlen, "out of memory");
    rc = 1;
out:
    if (sd)
        for (int d = 0; d < nd; d++) free(sd[d]);
    free(sd);
    free(line);
    free(user);
    return rc;
}
