/* runtime/files.h — the small file helpers that runs, sweeps and reports
 * share: creating folders and writing JSON atomically (temporary file,
 * fsync, rename), so a reader never sees half a file. */
#ifndef KILN_FILES_H
#define KILN_FILES_H

#include <jansson.h>

/* mkdir -p. Returns 0, or -1 with errno set. */
int kiln_mkdirs(const char *path);
/* Write obj as indented JSON to path atomically. Returns 0 or -1. */
int kiln_write_json(const char *path, json_t *obj);

#endif
