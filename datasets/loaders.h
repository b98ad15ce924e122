/* datasets/loaders.h — the loaders: each turns one kind of source into the
 * table of base.h, on the base alone (no loader calls another, nor the
 * dispatch above them in dataset.h). Each fills ds and returns 0, 2 on bad
 * input (err names the file and the entry), 1 on other failures; a failed
 * load leaves nothing allocated.
 *
 *   synthetic.c              dataset_synthetic
 *   idx.c                    dataset_fashion_mnist[_mem]
 *   imagefolder.c            dataset_zip[_mem], dataset_dir (with
 *                            imagefolder_classify.c, imagefolder_decode.c
 *                            and listing.c)
 */
#ifndef KILN_DATASETS_LOADERS_H
#define KILN_DATASETS_LOADERS_H

#include "datasets/base.h"

/* SPEC synthetic[:...]: args is what follows the colon (see synthetic.c). */
int dataset_synthetic(Dataset *ds, const char *args, const DataOptions *opt,
                      char *err, size_t errlen);

int dataset_fashion_mnist(Dataset *ds, const char *dir, const DataOptions *opt,
                          char *err, size_t errlen);   /* dir NULL: Debian's */
int dataset_zip(Dataset *ds, const char *path, const DataOptions *opt,
                char *err, size_t errlen);
/* The same two loaders from bytes in memory (names used in messages only):
 * the four IDX files (train images, train labels, t10k images, t10k labels)
 * and a zip archive. */
int dataset_fashion_mnist_mem(Dataset *ds, const void *const data[4], const size_t len[4],
                              char *err, size_t errlen);
int dataset_zip_mem(Dataset *ds, const void *buf, size_t len, const char *name,
                    const DataOptions *opt, char *err, size_t errlen);
int dataset_dir(Dataset *ds, const char *path, const DataOptions *opt,
                char *err, size_t errlen);

#endif
