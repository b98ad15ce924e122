/* tests/fuzz/fuzz_arch.c — fuzz target: any bytes as an .arch file
 * (graph_parse, with the whole shape inference behind it). The text is
 * handed over without a terminating NUL, so that a read past its end is
 * caught. Invariant checked: a parse either fails with a message or yields a
 * graph whose layers can be looked up by name. */
#include "codegen/graph.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Graph g;
    char err[512] = "";
    int rc = graph_parse(&g, (const char *)data, size, "fuzz.arch", err, sizeof err);
    if (rc) {
        if (!err[0]) abort();
    } else {
        for (int i = 0; i < g.n_layers; i++)
            if (graph_find(&g, g.layers[i].name) < 0) abort();
        (void)graph_learnable(&g);
        (void)graph_flops(&g);
    }
    graph_free(&g);
    return 0;
}
