/* kernels/cpu/loss.c — softmax cross-entropy, mean over the batch.
 *
 * Contract: logits (N,K), labels (N) in [0, K). Returns the mean loss computed
 * in double; dlogits (N,K) = (softmax - onehot)/N when non-NULL; *correct
 * counts rows whose first maximal logit is the label.
 *
 * Invariants: each row subtracts its maximum before exponentiating, so large
 * logits neither overflow nor lose the loss; -log p = log(sum e^(l-max)) -
 * (l_y - max) never forms p itself.
 */
#include "kernels/cpu/internal.h"

/* Mean softmax cross-entropy and its gradient; serial (N*K is small). */
double softmax_ce(real *dlogits, int *correct, const real *logits,
                  const int32_t *labels, int N, int K)
{
    double loss = 0;
    int hits = 0;
    for (int n = 0; n < N; n++) {
        const real *l = logits + (size_t)n * K;
        int y = labels[n];
        KILN_KCHECK(y >= 0 && y < K, "softmax_ce: label out of range");
        int arg = 0;
        for (int k = 1; k < K; k++)
            if (l[k] > l[arg]) arg = k;
        hits += arg == y;
        double mx = l[arg], sum = 0;
        for (int k = 0; k < K; k++) sum += exp((double)l[k] - mx);
        loss += log(sum) - ((double)l[y] - mx);
        if (dlogits) {
            real *d = dlogits + (size_t)n * K;
            for (int k = 0; k < K; k++) {
                double p = exp((double)l[k] - mx) / sum;
                d[k] = (real)((p - (k == y)) / N);
            }
        }
    }
    if (correct) *correct = hits;
    return N > 0 ? loss / N : 0;
}
