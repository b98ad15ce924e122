/* datasets/dataset.c — the dispatch (dataset.h): a SPEC to the loader that
 * reads it (loaders.h), then the per-class subset and the resize the options
 * ask for, from the base (base.h). The top of datasets/: nothing in the
 * folder calls it.
 */
#include "datasets/dataset.h"

#include <stdio.h>
#include <string.h>

/* Does spec start with prefix? Returns what follows it, or NULL. */
static const char *after(const char *spec, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncmp(spec, prefix, n) == 0 ? spec + n : NULL;
}

int dataset_open(Dataset *ds, const char *spec, const DataOptions *opt,
                 char *err, size_t errlen)
{
    memset(ds, 0, sizeof *ds);
    const char *rest;
    int rc;
    if (strcmp(spec, "synthetic") == 0)
        rc = dataset_synthetic(ds, "", opt, err, errlen);
    else if ((rest = after(spec, "synthetic:")))
        rc = dataset_synthetic(ds, rest, opt, err, errlen);
    else if (strcmp(spec, "fashion-mnist") == 0)
        rc = dataset_fashion_mnist(ds, NULL, opt, err, errlen);
    else if ((rest = after(spec, "fashion-mnist:")))
        rc = dataset_fashion_mnist(ds, rest, opt, err, errlen);
    else if ((rest = after(spec, "zip:")))
        rc = dataset_zip(ds, rest, opt, err, errlen);
    else if ((rest = after(spec, "dir:")))
        rc = dataset_dir(ds, rest, opt, err, errlen);
    else {
        snprintf(err, errlen, "%s: unknown data source (expected synthetic[:...], "
                 "fashion-mnist[:DIR], zip:PATH or dir:PATH)", spec);
        return 2;
    }
    if (rc) return rc;
    if (opt && opt->per_class > 0 && (rc = dataset_take_per_class(ds, opt->per_class, opt->seed))) {
        snprintf(err, errlen, "%s: out of memory taking a per-class subset", spec);
        return rc;
    }
    if (!ds->src_h) {
        ds->src_h = ds->h;
        ds->src_w = ds->w;
    }
    if (opt && opt->h > 0 && (ds->h != opt->h || ds->w != opt->w || ds->c != opt->c) &&
        (rc = dataset_resize_all(ds, opt->h, opt->w, opt->c))) {
        snprintf(err, errlen, rc == 2 ? "%s: %dx%dx%d images exceed the size cap" : "%s: out of memory resizing to %dx%dx%d",
                 spec, opt->h, opt->w, opt->c);
        return rc;
    }
    return 0;
}
