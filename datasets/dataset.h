/* datasets/dataset.h — the data interface: a SPEC string to the image
 * table (base.h) through the loader it names (loaders.h), then the subset
 * and resize the options ask for. Includes both, so that a user of the data
 * sets needs only this header.
 *
 * Layering: base (base.h) <- loaders (loaders.h) <- dispatch (this header,
 * dataset.c); the dispatch is the only caller of more than one loader.
 */
#ifndef KILN_DATASET_H
#define KILN_DATASET_H

#include "datasets/loaders.h"

/* Parse SPEC and load it. Forms (documented in README.md):
 *   synthetic[:key=value,...]    generated, learnable (see synthetic.c)
 *   fashion-mnist[:DIR]          gzipped IDX files
 *   zip:PATH                     ImageFolder zip
 *   dir:PATH                     ImageFolder directory tree
 * Then, whatever the source: per_class (dataset_take_per_class) and the
 * size (dataset_resize_all) the options ask for. Same return convention. */
int dataset_open(Dataset *ds, const char *spec, const DataOptions *opt,
                 char *err, size_t errlen);

#endif
