/* runtime/classes.h — class names that travel with the weights, and the
 * matching of a data source's classes to them.
 *
 * Every weights file a run writes carries its class names in label order
 * (output k of the head is class names[k]) as one metadata value, a JSON
 * array of strings under KILN_CLASSES_KEY; config.json and summary.json hold
 * the same array under "classes". A name that is not valid UTF-8 is stored
 * in its escaped form (dataset_escape), and data names are compared in that
 * same form, so such a name still matches the source it came from.
 *
 * Matching (classes_map): names are equal when they are equal ignoring ASCII
 * case and the separators space, '_', '-' and '/' ("T-shirt/top" matches
 * "t_shirt_top" and "T-shirt top"); an exact match wins over a loose one, and
 * a name that matches two of the other side's loosely matches neither. A
 * class map file covers what the names cannot.
 */
#ifndef KILN_CLASSES_H
#define KILN_CLASSES_H

#include <jansson.h>
#include <stddef.h>

#define KILN_CLASSES_KEY "kiln.classes"

/* The names as a JSON array of their stored forms, or NULL when there are no
 * names (names NULL, n < 1 or a NULL name) or memory ran out. */
json_t *classes_json(char *const *names, int n);

/* The same array as compact JSON text (malloc'ed), for the metadata; NULL
 * as above. */
char *classes_meta_value(char *const *names, int n);

/* Parse a KILN_CLASSES_KEY value read from `path` into *names (n malloc'ed
 * strings, free with classes_free). Returns 0, or 2 with a message naming
 * the file and the key when it is not a non-empty array of strings, 1 when
 * out of memory. */
int classes_parse(const char *path, const char *value, char ***names, int *n, char *err, size_t errlen);
void classes_free(char **names, int n);

/* 1 when a and b are equal up to ASCII case and the separators above. */
int class_name_match(const char *a, const char *b);

/* Map each data class to a weights class by name: map[d] is the output of
 * the weights that data class d is. The map file (NULL: none) holds lines
 * `data name = weights name` (blank lines and lines starting with '#'
 * skipped; names trimmed, each matched like a class name) that decide
 * first; the other data classes are matched by name. Without a map file the
 * two sets must be equal; with one, every data class must reach a distinct
 * weights class (weights classes without data are allowed).
 * data_what and weights_what name the two sides in messages ("data X").
 * Returns 0, or 2 with a message: a bad map line (file:line and why), or
 * sets that differ (the first difference and both lists), or 1 when out of
 * memory. */
int classes_map(char *const *data, int nd, const char *data_what, char *const *weights, int nw,
                const char *weights_what, const char *map_path, int *map, char *err, size_t errlen);

#endif
