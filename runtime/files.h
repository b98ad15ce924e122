/* runtime/files.h — the small file helpers that runs, sweeps and reports
 * share: creating folders, writing files atomically (temporary file beside
 * it, fsync, rename), so a reader never sees half a file and a failed write
 * leaves the old one and no temporary, and a file's CRC-32. */
#ifndef KILN_FILES_H
#define KILN_FILES_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

/* mkdir -p. Returns 0, or -1 with errno set. */
int kiln_mkdirs(const char *path);
/* Write path atomically: fill(f, ctx) writes the content to PATH.tmp
 * (returning non-zero when it failed), which is flushed, synced and renamed
 * over path. Returns 0, or -1 with errno set and PATH.tmp removed. */
int kiln_write_atomic(const char *path, int (*fill)(FILE *f, void *ctx), void *ctx);
/* Write obj as indented JSON to path atomically. Returns 0, or -1 with
 * errno set. */
int kiln_write_json(const char *path, json_t *obj);
/* Whether a file can be written at path: not a folder, and a temporary
 * file beside it can be created (it is removed). Returns 0, or -1 with errno
 * set. */
int kiln_probe_write(const char *path);
/* CRC-32 (zlib's) of the whole content of path. Returns 0, or -1 with errno
 * set. */
int kiln_file_crc32(const char *path, uint32_t *crc);

#endif
