/* runtime/evaluate.h — inference on a set of images with per-image results:
 * the confusion matrix behind `kiln eval`.
 *
 * Prediction rule: the first maximal logit of a row (the rule softmax_ce
 * uses to count `correct`), so trace(cm) / n equals evaluate_set's accuracy
 * on the same backend and images. A row with a NaN logit predicts the first
 * class whose logit no later one exceeds, as softmax_ce does.
 */
#ifndef KILN_EVALUATE_H
#define KILN_EVALUATE_H

#include "runtime/train.h"

/* Run images idx[0..n) of dv through be in inference mode, batch by batch
 * (be->plan->opt.batch at most), and add one count per image to cm
 * (K x K, row = true label, column = predicted class, row-major); cm is
 * zeroed first. K must be the plan's class count. Returns 0, 2 when a label
 * is outside [0, K), or 1 when out of memory. */
int confusion_matrix(Backend *be, const DataView *dv, const int *idx, int n, int K, long *cm);

/* Trace / total of a K x K matrix (0 when empty). */
double confusion_accuracy(const long *cm, int K);

/* Below this many images a split's accuracy is too coarse to compare runs by. */
#define KILN_COARSE_SPLIT 30

/* On f, a WARNING when the split named `split` has fewer than
 * KILN_COARSE_SPLIT images (n): its accuracy moves in steps of 1/n. */
void warn_coarse_split(FILE *f, const char *split, int n);

#endif
