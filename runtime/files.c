/* runtime/files.c — folder creation, atomic writes, probes and CRCs (see
 * files.h). The one place in kiln that makes folders and replaces files. */
#include "runtime/files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

int kiln_mkdirs(const char *path)
{
    char buf[1024];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) { errno = ENAMETOOLONG; return -1; }
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0777) && errno != EEXIST) return -1;
            *p = '/';
        }
    if (mkdir(buf, 0777) && errno != EEXIST) return -1;
    /* EEXIST also covers a file of that name: not a folder */
    struct stat st;
    if (stat(buf, &st)) return -1;
    if (!S_ISDIR(st.st_mode)) { errno = ENOTDIR; return -1; }
    return 0;
}

/* Sync the folder holding path, so that a rename into it is durable (best
 * effort: not every file system can). */
static void sync_folder(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, (size_t)(slash - path) + 1) : strdup(".");
    int dfd = dir ? open(dir, O_RDONLY | O_DIRECTORY) : -1;
    if (dfd >= 0) { fsync(dfd); close(dfd); }
    free(dir);
}

int kiln_write_atomic(const char *path, int (*fill)(FILE *f, void *ctx), void *ctx)
{
    char tmp[1300];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path) >= (int)sizeof tmp) { errno = ENAMETOOLONG; return -1; }
    int fd = mkstemp(tmp);
    if (fd < 0) return -1;
    FILE *f = fdopen(fd, "w");
    if (!f) {
        int e = errno;
        close(fd);
        unlink(tmp);
        errno = e;
        return -1;
    }
    /* mkstemp makes 0600; the file gets the usual 0666 & ~umask (umask can
     * only be read by setting it: restored at once) */
    mode_t um = umask(022);
    umask(um);
    errno = 0;
    int bad = fill(f, ctx) != 0 || ferror(f) || fflush(f) != 0 || fsync(fd) != 0 || fchmod(fd, 0666 & ~um) != 0;
    int e = errno;
    if (fclose(f) != 0 && !bad) bad = 1, e = errno;
    if (!bad && rename(tmp, path)) bad = 1, e = errno;
    if (bad) {
        unlink(tmp);
        errno = e ? e : EIO;
        return -1;
    }
    sync_folder(path);
    return 0;
}

typedef struct { const void *data; size_t n; } Bytes;

/* kiln_write_bytes's content. */
static int fill_bytes(FILE *f, void *ctx)
{
    const Bytes *b = ctx;
    return b->n && fwrite(b->data, 1, b->n, f) != b->n;
}

int kiln_write_bytes(const char *path, const void *data, size_t n)
{
    Bytes b = {data, n};
    return kiln_write_atomic(path, fill_bytes, &b);
}

/* kiln_write_json's content: obj and a newline. */
static int fill_json(FILE *f, void *obj)
{
    return json_dumpf(obj, f, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0 || fputc('\n', f) == EOF;
}

int kiln_write_json(const char *path, json_t *obj)
{
    return kiln_write_atomic(path, fill_json, obj);
}

int kiln_probe_write(const char *path)
{
    char tmp[1300];
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) { errno = EISDIR; return -1; }
    if (snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path) >= (int)sizeof tmp) { errno = ENAMETOOLONG; return -1; }
    int fd = mkstemp(tmp);
    if (fd < 0) return -1;
    close(fd);
    unlink(tmp);
    return 0;
}

int kiln_file_crc32(const char *path, uint32_t *crc)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    unsigned char buf[1 << 16];
    uLong c = crc32(0, NULL, 0);
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) c = crc32(c, buf, (uInt)n);
    int bad = ferror(f);
    fclose(f);
    if (bad) { errno = EIO; return -1; }
    *crc = (uint32_t)c;
    return 0;
}
