/* runtime/weights.h — a network's parameters to and from safetensors files,
 * by name, with the checks that keep transfer learning honest.
 *
 * Names are the graph's parameter names ("<layer>.<role>"), layouts kiln's
 * (conv HWIO, depthwise HWC, dense IO). Metadata written and checked:
 *   kiln.arch   the architecture name (Graph.name)
 *   kiln.input  "HxWxC" of the input layer
 *   kiln.scale, kiln.mean, kiln.std   the preprocessing ("%.9g" numbers,
 *               mean/std comma-separated per channel)
 *   kiln.classes  the class names in label order, a JSON array (written
 *               when the caller has names; see runtime/classes.h)
 * Loading weights whose preprocessing differs from the arch's is an error at
 * plan time; a different input H x W is allowed (fine-tuning at another
 * resolution is ordinary), a different channel count is not.
 */
#ifndef KILN_WEIGHTS_H
#define KILN_WEIGHTS_H

#include <stdio.h>

#include "codegen/plan.h"

typedef struct {
    int loaded;          /* tensors copied */
    int head_replaced;   /* 1: the head's shape differed (or the file has no head)
                            and it keeps the caller's fresh values */
    int extra;           /* tensors in the file that the arch does not have (warned) */
    int head_from;       /* when replaced: the file head's class count, 0 if it had none */
} WeightsReport;

/* Load PATH into the plan's param arena (`arena`, plan->param_off layout).
 * Every parameter of the graph must be in the file with its exact shape,
 * except the head (graph_head): when its shape differs in the class count
 * only, or the file has none of its tensors (a "notop" export), it keeps the
 * values already in the arena (the caller initialized them) and head_replaced
 * is set. Extra tensors are listed on `warn` (may be NULL), as is a file
 * without kiln metadata (accepted; its preprocessing cannot be checked).
 * Nothing is written to the arena unless the whole load succeeds.
 * Returns 0, or 2 with a message naming the file and the tensor (missing
 * tensor, shape mismatch with both shapes, other preprocessing, a file that
 * is not safetensors: a .pth or .h5 file is named as such with the importer
 * to use), or 1 on I/O failure. */
int weights_load(const Plan *p, float *arena, const char *path, WeightsReport *rep,
                 FILE *warn, char *err, size_t errlen);

/* Write every parameter of the plan's graph from `arena` to PATH, with the
 * metadata above, atomically. class_names (n_classes of them, one per output
 * of the head; NULL: none) go to kiln.classes. Returns 0, or 1 with a
 * message (also when a value is NaN or Inf: such a file could not be loaded
 * back), or 2 when n_classes is not the head's output count. */
int weights_save(const Plan *p, const float *arena, const char *path, char *const *class_names,
                 int n_classes, char *err, size_t errlen);

#endif
