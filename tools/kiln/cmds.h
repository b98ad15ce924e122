/* tools/kiln/cmds.h — the kiln subcommands, one tools/kiln/cmd_<name>.c each, and the
 * option helpers they share. Every command returns the process exit code:
 * 0 success, 1 failure while running, 2 bad usage or bad input. */
#ifndef KILN_CMDS_H
#define KILN_CMDS_H

#include "codegen/graph.h"
#include "codegen/plan.h"
#include "runtime/numbers.h"   /* parse_int_arg, parse_hw_arg, ...: the option readers */

int cmd_plan(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_emit(int argc, char **argv);
/* `kiln plan --json`: g as JSON on f (tools/kiln/cmd_plan_json.c); an exit code. */
int plan_json_print(FILE *f, const Graph *g);

/* Options every command that builds a plan understands. */
typedef struct {
    const char *arch;
    const char *freeze_until;   /* layer name, or NULL */
    const char *bn;             /* train | infer | frozen, or NULL (train) */
    int batch;
    int fuse, fold;
    int input_h, input_w;       /* --input-size HxW; 0: the arch's own */
} ModelOptions;

void model_options_default(ModelOptions *m);
/* If argv[*i] is a model option, consume it (and its value) and return 1;
 * return 0 if it is not one; return -1 (message printed) on a bad value. */
int model_option(ModelOptions *m, int argc, char **argv, int *i);
/* Load the arch and set its flags. Returns 0, or the exit code after
 * printing the error. */
int model_load(const ModelOptions *m, Graph *g);

/* The training knobs (--lr, --epochs, --warmup-epochs, ...: the TrainSpec
 * fields) shared by train, plan --schedule and compare: consume argv[*i]
 * like model_option. */
#include "runtime/strategy.h"
int spec_option(TrainSpec *t, int argc, char **argv, int *i);

/* The arch file's base name without extension ("archs/tiny.arch" -> "tiny"). */
void arch_base_name(char *buf, size_t n, const char *arch);
/* weights/<arch base>.safetensors (what tools/bootstrap imports) into buf;
 * returns 1 if that file exists. */
int default_weights(char *buf, size_t n, const char *arch);

#endif
