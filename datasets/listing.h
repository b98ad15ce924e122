/* datasets/listing.h — internal to datasets/: the entries of an ImageFolder
 * source (zip or tree) before they are classified and read. See listing.c. */
#ifndef KILN_LISTING_H
#define KILN_LISTING_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <zip.h>

#include "datasets/base.h"

typedef struct {
    char *name;        /* as stored: zip entry name, or path relative to the root */
    int is_dir;
    int special;       /* tree: not a regular file (fifo, device, link to a folder) */
    int64_t zindex;    /* libzip index, -1 for a tree */
    uint64_t size;     /* declared (zip) or stat (tree) size */
    int32_t comp;      /* zip compression method */
    uint16_t enc;      /* zip encryption method */
} Entry;

typedef struct {
    Entry *v;
    size_t n, cap;
} EntryVec;

/* Scan the raw central directory of the zip at path for entry names holding
 * a NUL byte (libzip shows them as spaces). 0, or 2 with err set. */
int listing_zip_raw_names(const char *path, char *err, size_t errlen);
/* The same for the len bytes of a zip at buf (name is used in messages). */
int listing_zip_raw_names_mem(const void *buf, size_t len, const char *name, char *err, size_t errlen);
/* Append every entry of the open zip z (path for messages), names checked.
 * 0, 2 on an unsafe name, 1 out of memory. */
int listing_zip(zip_t *z, const char *path, EntryVec *ev, char *err, size_t errlen);
/* Append every file and folder under root/rel (rel NULL: root), names
 * relative to root with '/', at most 32 folders deep. 0, 2, or 1. */
int listing_dir(const char *root, const char *rel, int depth, EntryVec *ev,
                char *err, size_t errlen);
void listing_free(EntryVec *ev);

/* Escaped copy of a C string into a caller's array, for messages. */
#define ESC(buf, str) dataset_escape(buf, sizeof buf, str, strlen(str))

#endif
