/* codegen/graph.h — the network as a graph of named layers, read from an
 * .arch file, with shapes inferred, parameters listed and per-layer transfer
 * flags (trainable, BN mode, LR group).
 *
 * Invariants:
 *  - layers are in topological order (an input must be defined above its
 *    user), layer 0 is the `input` layer and the last is the `loss`.
 *  - shapes are per image (h, w, c); the batch dimension belongs to the plan.
 *  - every parameter is named "<layer>.<role>" and has a fixed shape; the
 *    learnable ones (kernel, bias, gamma, beta) and the BN statistics
 *    (moving_mean, moving_variance) are told apart by `learnable`.
 */
#ifndef KILN_GRAPH_H
#define KILN_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#define KILN_NAME_MAX 64
#define KILN_MAX_INPUTS 2

typedef enum {
    OP_INPUT = 0, OP_CONV, OP_DWCONV, OP_ZEROPAD, OP_BN, OP_RELU, OP_RELU6,
    OP_SWISH, OP_SIGMOID, OP_ADD, OP_MUL, OP_GAP, OP_MAXPOOL, OP_DENSE,
    OP_DROPOUT, OP_LOSS, OP_COUNT
} OpKind;

typedef enum { BN_TRAIN = 0, BN_INFER, BN_FROZEN } BnMode;

typedef enum { PAD_VALID = 0, PAD_SAME, PAD_EXPLICIT } PadMode;

typedef struct { int h, w, c; } Shape;

/* One small struct per op family; Layer holds them in a tagged union. */
typedef struct {
    int h, w, c;
    float scale, mean[4], std[4];
} InputAttr;

typedef struct {              /* conv, dwconv, maxpool */
    int filters;              /* conv only */
    int kh, kw, sh, sw;
    PadMode pad_mode;
    int pt, pb, pl, pr;       /* resolved padding */
    int bias;
} ConvAttr;

typedef struct { int pt, pb, pl, pr; } PadAttr;
typedef struct { float eps, momentum; } BnAttr;
typedef struct { int units, bias; } DenseAttr;
typedef struct { float rate; } DropoutAttr;

typedef enum { ROLE_KERNEL = 0, ROLE_DWKERNEL, ROLE_BIAS, ROLE_GAMMA, ROLE_BETA,
               ROLE_MEAN, ROLE_VAR } ParamRole;

typedef struct {
    char name[KILN_NAME_MAX + 24];
    int layer;
    ParamRole role;
    int ndim, dims[4];
    size_t numel;
    int learnable;            /* 0 for BN moving statistics */
} Param;

typedef struct {
    char name[KILN_NAME_MAX];
    OpKind op;
    int n_in, in[KILN_MAX_INPUTS];   /* layer indices */
    int line;                        /* in the .arch file */
    union {
        InputAttr input;
        ConvAttr conv;
        PadAttr pad;
        BnAttr bn;
        DenseAttr dense;
        DropoutAttr dropout;
    } a;
    Shape out;
    int first_param, n_params;       /* into Graph.params */
    int64_t flops;                   /* forward FLOPs per image (2 per MAC) */
    /* transfer flags, set by the caller (strategy presets) */
    int trainable;
    BnMode bn_mode;
    int lr_group;
} Layer;

typedef struct {
    char name[KILN_NAME_MAX];        /* `arch NAME`, or the file's base name */
    char path[256];
    Layer *layers; int n_layers, cap_layers;
    Param *params; int n_params, cap_params;
} Graph;

/* ---- the op registry (codegen/ops.c) ---------------------------------------
 * One row per op. To add an op: add its OpKind above, a row to the table in
 * ops.c (keyword, input count, keys, shape/param/FLOP function), its CPU
 * kernels in kernels/cpu/ with a gradient test, and its case in the CPU
 * executor's dispatch table. */
typedef struct {
    const char *keyword;      /* in .arch files */
    OpKind op;
    int min_in, max_in;       /* inputs (0 for `input`) */
    const char *keys;         /* allowed keys, space separated */
} OpInfo;

const OpInfo *op_info(OpKind op);
const OpInfo *op_find(const char *keyword);
/* Fill l->out, append l's params to g, compute l->flops. Returns 0, or 2 with
 * a message ("what was wrong") in err. */
int op_infer(Graph *g, Layer *l, char *err, size_t errlen);

/* ---- graph ------------------------------------------------------------------ */

/* Parse an .arch file. Returns 0, or 2 with "file:line:col: message" in err
 * (1 if the file cannot be read, message naming it). */
int graph_load(Graph *g, const char *path, char *err, size_t errlen);
/* Parse from a string; `path` is used in messages only. */
int graph_parse(Graph *g, const char *text, size_t len, const char *path,
                char *err, size_t errlen);
void graph_free(Graph *g);
int graph_find(const Graph *g, const char *name);   /* layer index or -1 */
int graph_find_param(const Graph *g, const char *name);

/* Change the input's height and width, or the head's class count (the units
 * of the dense layer that feeds softmax_ce), and infer every shape again.
 * Returns 0, or 2 with a message when a layer no longer fits. Parameters are
 * listed anew, in the same order. */
int graph_set_input_size(Graph *g, int h, int w, char *err, size_t errlen);
int graph_set_num_classes(Graph *g, int classes, char *err, size_t errlen);
/* The layer index of the head (dense before the loss), or -1. */
int graph_head(const Graph *g);

/* Counts: learnable parameters, BN statistics, forward FLOPs per image. */
size_t graph_learnable(const Graph *g);
size_t graph_bn_stats(const Graph *g);
int64_t graph_flops(const Graph *g);
/* Does layer i own learnable parameters? */
int layer_has_learnable(const Graph *g, int i);

/* ---- flags ----------------------------------------------------------------------- */

/* Everything trainable, BN in `mode`, LR group 0. */
void graph_flags_all(Graph *g, int trainable, BnMode mode);
/* Freeze every layer up to and including `name` (BN there frozen).
 * Returns 0, or 2 if there is no such layer. */
int graph_freeze_until(Graph *g, const char *name);

const char *bn_mode_name(BnMode m);

#endif
