/* datasets/imagefolder.h — internal to the ImageFolder loader: the items
 * that its three parts hand each other, in the order a load runs:
 *
 *   listing.c               the source's entries (listing.h)
 *   imagefolder_classify.c  entries -> images with class labels, sorted
 *   imagefolder_decode.c    images -> bytes read -> pixels (in parallel)
 *   imagefolder.c           the loaders: the steps above, the per-class pick,
 *                           the skip-and-count rules, the final table
 *
 * Each part calls only the ones above it in this list and the base.
 */
#ifndef KILN_IMAGEFOLDER_H
#define KILN_IMAGEFOLDER_H

#include "datasets/listing.h"

/* An item's state: read and decoded fine, or why not. */
enum { ST_PENDING, ST_OK, ST_CORRUPT, ST_OVERCAP, ST_READERR, ST_NOMEM };

/* One image of the source, from classification to the table. */
typedef struct {
    const Entry *e;    /* the listing entry (name for messages, size, zip index) */
    char *cls;         /* class name: the folder directly above the file */
    int label;
    uint8_t *data;     /* compressed bytes while in flight */
    size_t len;
    int in_table;      /* decoded into its slot of the table */
    uint8_t *px;       /* else: decoded pixels (h, w, c), placed when assembling */
    int h, w, c;
    int src_h, src_w;  /* the size the image has in the source */
    int status;
    char *why;         /* reason for a non-OK status */
} Item;

/* Where the bytes come from. */
typedef struct {
    const char *path;  /* archive or root, for messages */
    zip_t *z;          /* NULL for a tree */
    DataLimits lim;
} Source;

/* The table being filled: n slots of th*tw*tc bytes, slot i for item i. Made
 * from the first readable JPEG header (or the size asked for), so that
 * images of that size decode straight into their slot. */
typedef struct {
    uint8_t *px;
    int th, tw, tc;
} Table;

/* What the decoders share. */
typedef struct {
    int fix_hw, fix_c;     /* the options fixed the size / the channels */
    uint64_t max_pixels;
    int stop;              /* set (atomically) on a fatal error: the rest is skipped */
} DecodeCfg;

/* The listing ev of source src (a name for messages) as images: *items_out
 * (n_out of them, each with its class name and label, ordered by class then
 * path) and *classes_out (ncls_out names, sorted bytewise; label k is
 * classes[k]); *nonimage counts the files that are not images. Both arrays
 * are the caller's to free, with their strings. Returns 0; 2 (err set) when
 * an entry is nested too deep, a class-level folder holds no images, or
 * there are no images at all; 1 when out of memory. */
int imagefolder_classify(const EntryVec *ev, const char *src, Item **items_out, int *n_out, char ***classes_out,
                         int *ncls_out, long *nonimage, char *err, size_t errlen);

/* Checks on what will be read, before any of it is: caps, encryption,
 * compression. 0, or 2 with err naming the entry. */
int imagefolder_check_items(const Source *s, const Item *it, int n, char *err, size_t errlen);

/* Read every item serially and decode in parallel; make the table (through
 * dataset_alloc, n slots, ncls classes) at the first readable header. want
 * is the size the options ask for (0s: none). Items' statuses tell the rest;
 * returns 1 if the table could not be allocated. */
int imagefolder_read_and_decode(const Source *s, Item *it, int n, int ncls, const int want[3], Dataset *ds,
                                Table *table, DecodeCfg *cfg);

#endif
