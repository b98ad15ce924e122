/* runtime/files.c — folder creation, atomic writes, probes and CRCs (see
 * files.h). */
#include "runtime/files.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
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
    return mkdir(buf, 0777) && errno != EEXIST ? -1 : 0;
}

int kiln_write_atomic(const char *path, int (*fill)(FILE *f, void *ctx), void *ctx)
{
    char tmp[1300];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) { errno = ENAMETOOLONG; return -1; }
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    errno = 0;
    int bad = fill(f, ctx) != 0 || ferror(f) || fflush(f) != 0 || fsync(fileno(f)) != 0, e = errno;
    if (fclose(f) != 0 && !bad) bad = 1, e = errno;
    if (!bad && rename(tmp, path)) bad = 1, e = errno;
    if (bad) {
        unlink(tmp);
        errno = e ? e : EIO;
        return -1;
    }
    return 0;
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
