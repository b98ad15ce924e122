/* tools/kiln/main.c — the kiln command line: a table of subcommands. To add one,
 * write tools/kiln/cmd_<name>.c with int cmd_<name>(int, char **), declare it in
 * tools/kiln/cmds.h and add a row below. */
#include <stdio.h>
#include <string.h>

#include "tools/kiln/cmds.h"

static const struct {
    const char *name;
    int (*run)(int, char **);
    const char *help;
} CMDS[] = {
    {"plan",  cmd_plan,  "print the static plan: layers, steps, bytes per arena"},
    {"train", cmd_train, "train a network on a data set"},
    {"bench", cmd_bench, "time the training step, fused against unfused"},
    {"data",  cmd_data,  "load a data set and describe it"},
    {"eval",  cmd_eval,  "accuracy, per-class accuracy and confusion matrix of weights on a split"},
    {"compare", cmd_compare, "compare transfer strategies: trials over an LR x batch grid, then a report"},
    {"report", cmd_report, "results.csv, report.md and scatter.svg of a compare folder"},
    {"emit",  cmd_emit,  "print the CUDA C translation unit generated for a plan"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: kiln COMMAND [options]   (kiln COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof CMDS / sizeof CMDS[0]; i++)
        fprintf(f, "  %-8s %s\n", CMDS[i].name, CMDS[i].help);
}

int main(int argc, char **argv)
{
    /* Line-buffered stdout: a log read through a pipe or a file gets every
     * line when it is written (not when a 4 KiB buffer fills), in order with
     * the messages on unbuffered stderr. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) { usage(stderr); return 2; }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof CMDS / sizeof CMDS[0]; i++)
        if (!strcmp(argv[1], CMDS[i].name)) return CMDS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "kiln: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
