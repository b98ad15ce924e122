/* datasets/imagefolder_classify.c — the ImageFolder layout rules
 * (imagefolder.h): which entries of a listing are images, which folder is
 * each one's class, the wrapper folder, the class-folder rule, and the class
 * order.
 *
 * Layout: [WRAPPER/]...CLASS/FILE.jpg. The class of an image is the folder
 * directly above it. One leading wrapper folder is recognised (EuroSAT's
 * `2750/`, `EuroSAT_RGB/`): it is a wrapper when every entry lies under it
 * and some image lies two folders below it. Class names are sorted bytewise
 * (torchvision's ImageFolder order); images are ordered by (class, path).
 * Not images (counted): anything under `__MACOSX/` or with a path component
 * starting with '.', files whose extension is not .jpg or .jpeg, files not
 * inside a class folder. Every class-level folder must hold an image.
 *
 * Nothing is read here: names only.
 */
#include "datasets/imagefolder.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Split a stored name into its non-empty, non-"." components (at most max). */
static int components(const char *name, const char **comp, size_t *clen, int max)
{
    int k = 0;
    for (const char *p = name; *p;) {
        const char *q = strchr(p, '/');
        size_t l = q ? (size_t)(q - p) : strlen(p);
        if (l && !(l == 1 && p[0] == '.')) {
            if (k == max)
                return -1;
            comp[k] = p;
            clen[k++] = l;
        }
        p += l + (q != NULL);
    }
    return k;
}

/* A path that is skipped whatever it holds: a component starting with '.',
 * or one named __MACOSX. */
static int is_junk(const char *const *comp, const size_t *clen, int k)
{
    for (int i = 0; i < k; i++)
        if (comp[i][0] == '.' || (clen[i] == 8 && !memcmp(comp[i], "__MACOSX", 8)))
            return 1;
    return 0;
}

/* Does the last component end in .jpg or .jpeg, in any case? */
static int is_jpeg_name(const char *last, size_t l)
{
    const char *dot = NULL;
    for (size_t i = 0; i < l; i++)
        if (last[i] == '.')
            dot = last + i;
    if (!dot)
        return 0;
    size_t el = l - (size_t)(dot + 1 - last);
    return (el == 3 && !strncasecmp(dot + 1, "jpg", 3)) || (el == 4 && !strncasecmp(dot + 1, "jpeg", 4));
}

/* Items by class name, then by stored name. */
static int cmp_item(const void *a, const void *b)
{
    const Item *x = a, *y = b;
    int c = strcmp(x->cls, y->cls);
    return c ? c : strcmp(x->e->name, y->e->name);
}

/* One entry's class-level folder, and whether the entry is an image there. */
typedef struct {
    char *name;
    int images;
} Folder;

static int cmp_folder(const void *a, const void *b)
{
    return strcmp(((const Folder *)a)->name, ((const Folder *)b)->name);
}

#define MAXDEPTH 64

#define MAXDEPTH 64

/* The wrapper: one first component shared by every kept entry, with an
 * image two folders below it. Returns 1 (and its name in *wrap, *wlen) when
 * there is one, else 0. */
static int find_wrapper(const EntryVec *ev, const char **wrap, size_t *wlen)
{
    const char *comp[MAXDEPTH];
    size_t clen[MAXDEPTH];
    int shared = 1, deep = 0;
    *wrap = NULL;
    *wlen = 0;
    for (size_t i = 0; i < ev->n; i++) {
        int k = components(ev->v[i].name, comp, clen, MAXDEPTH);
        if (k <= 0 || is_junk(comp, clen, k))
            continue;
        if (!*wrap) {
            *wrap = comp[0];
            *wlen = clen[0];
        }
        if (clen[0] != *wlen || memcmp(comp[0], *wrap, *wlen) || (k == 1 && !ev->v[i].is_dir))
            shared = 0;
        if (k >= 3 && !ev->v[i].is_dir && is_jpeg_name(comp[k - 1], clen[k - 1]))
            deep = 1;
    }
    return (*wrap && shared && deep) ? 1 : 0;
}

/* Every entry of ev, the wrapper's skip components left out: images into
 * items[*n] (entry and class name), and for each entry inside a class-level
 * folder (or that folder itself) one row in folders[*nf] saying whether it
 * is an image; *nonimage counts the other files. Returns 0, 2 (err set) on
 * an entry nested deeper than MAXDEPTH, 1 when out of memory. */
static int collect(const EntryVec *ev, int skip, const char *src, Item *items, int *n, Folder *folders, int *nf,
                   long *nonimage, char *err, size_t errlen)
{
    const char *comp[MAXDEPTH];
    size_t clen[MAXDEPTH];
    char esc[256];
    for (size_t i = 0; i < ev->n; i++) {
        const Entry *e = &ev->v[i];
        int k = components(e->name, comp, clen, MAXDEPTH);
        if (k < 0) {
            snprintf(err, errlen, "%s: entry '%s': nested more than %d deep", src, ESC(esc, e->name),
                     MAXDEPTH);
            return 2;
        }
        if (k == 0 || is_junk(comp, clen, k)) {
            *nonimage += !e->is_dir;
            continue;
        }
        const int d = k - skip; /* depth below the wrapper */
        if (d <= 0)
            continue; /* the wrapper folder itself */
        const int image = !e->is_dir && !e->special && d >= 2 && is_jpeg_name(comp[k - 1], clen[k - 1]);
        if (!e->is_dir && !image)
            (*nonimage)++;
        /* The class-level folder this entry lies in (or is). */
        if (d >= 2 || e->is_dir) {
            folders[*nf].name = strndup(comp[skip], clen[skip]);
            folders[*nf].images = image;
            if (!folders[(*nf)++].name)
                return 1;
        }
        if (image) {
            items[*n].e = e;
            items[*n].cls = strndup(comp[k - 2], clen[k - 2]);
            if (!items[(*n)++].cls)
                return 1;
        }
    }
    return 0;
}

/* Every class-level folder must hold images: sorts folders[0..nf) by name
 * and returns 2 (err naming the folder, under its wrapper when skip) for the
 * first that holds none, else 0. */
static int check_folders(Folder *folders, int nf, int skip, const char *wrap, size_t wlen, const char *src,
                         char *err, size_t errlen)
{
    char esc[256];
    qsort(folders, (size_t)nf, sizeof *folders, cmp_folder);
    for (int i = 0; i < nf;) {
        int j = i, images = 0;
        for (; j < nf && !strcmp(folders[j].name, folders[i].name); j++)
            images += folders[j].images;
        if (!images) {
            char ew[128];
            snprintf(err, errlen, "%s: class folder '%s%s%s/' has no images", src,
                     skip ? dataset_escape(ew, sizeof ew, wrap, wlen) : "", skip ? "/" : "",
                     ESC(esc, folders[i].name));
            return 2;
        }
        i = j;
    }
    return 0;
}

/* Sorts items[0..n) by (class, path) and names the classes in that order:
 * *classes (allocated, *ncls names), each item's label its class's index.
 * Returns 0, or 1 when out of memory (what was made stays in *classes). */
static int name_classes(Item *items, int n, char ***classes, int *ncls)
{
    qsort(items, (size_t)n, sizeof *items, cmp_item);
    *classes = calloc((size_t)n, sizeof **classes);
    if (!*classes)
        return 1;
    for (int i = 0; i < n; i++) {
        if (i == 0 || strcmp(items[i].cls, items[i - 1].cls)) {
            (*classes)[*ncls] = strdup(items[i].cls);
            if (!(*classes)[(*ncls)++])
                return 1;
        }
        items[i].label = *ncls - 1;
    }
    return 0;
}

int imagefolder_classify(const EntryVec *ev, const char *src, Item **items_out, int *n_out, char ***classes_out,
                         int *ncls_out, long *nonimage, char *err, size_t errlen)
{
    *nonimage = 0;
    if (ev->n >= (size_t)INT_MAX / 2) {
        snprintf(err, errlen, "%s: %zu entries: more than kiln handles", src, ev->n);
        return 2;
    }
    const char *wrap;
    size_t wlen;
    const int skip = find_wrapper(ev, &wrap, &wlen);
    Item *items = calloc(ev->n + 1, sizeof *items);
    Folder *folders = calloc(ev->n + 1, sizeof *folders);
    int n = 0, nf = 0, rc = 1;
    char **classes = NULL;
    int ncls = 0;
    if (items && folders)
        rc = collect(ev, skip, src, items, &n, folders, &nf, nonimage, err, errlen);
    if (!rc)
        rc = check_folders(folders, nf, skip, wrap, wlen, src, err, errlen);
    if (!rc && n == 0) {
        snprintf(err, errlen, "%s: no .jpg/.jpeg images inside class folders (%ld other entries)",
                 src, *nonimage);
        rc = 2;
    }
    if (!rc)
        rc = name_classes(items, n, &classes, &ncls);
    if (rc == 1)
        snprintf(err, errlen, "%s: out of memory", src);
    for (int i = 0; i < nf; i++)
        free(folders[i].name);
    free(folders);
    if (!rc) {
        *items_out = items;
        *n_out = n;
        *classes_out = classes;
        *ncls_out = ncls;
        return 0;
    }
    for (int i = 0; i < n; i++)
        free(items[i].cls);
    free(items);
    for (int i = 0; i < ncls; i++)
        free(classes[i]);
    free(classes);
    return rc;
}
