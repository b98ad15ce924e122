/* runtime/files.h — the small file helpers that runs, sweeps, reports,
 * weights files and the kernel cache share: creating folders (the one
 * mkdir -p), writing files atomically (a temporary file beside it, fsync,
 * rename, the rename's result checked), so a reader never sees half a file
 * and a failed write leaves the old one and no temporary, and a file's
 * CRC-32. Temporary names are unique (mkstemp), so processes writing the
 * same path at once (parallel runs, two kilns filling one kernel cache)
 * never write into each other's temporary: the last rename wins, whole. */
#ifndef KILN_FILES_H
#define KILN_FILES_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

/* mkdir -p. Returns 0 when path is (now) a folder, or -1 with errno set
 * (ENOTDIR when it is a file). */
int kiln_mkdirs(const char *path);
/* Write path atomically: fill(f, ctx) writes the content to a fresh
 * PATH.tmp.XXXXXX (returning non-zero when it failed), which is flushed,
 * synced, given mode 0666 & ~umask and renamed over path; the folder is then
 * synced (best effort). Returns 0, or -1 with errno set and the temporary
 * removed. */
int kiln_write_atomic(const char *path, int (*fill)(FILE *f, void *ctx), void *ctx);
/* Write the n bytes at data to path atomically. Returns 0, or -1 with errno
 * set. */
int kiln_write_bytes(const char *path, const void *data, size_t n);
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
