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
    OP_DROPOUT, OP_LOSS, OP_LAYERNORM, OP_GELU, OP_LAYERSCALE, OP_COUNT
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
typedef struct { float eps; } NormAttr;   /* layernorm */

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
        NormAttr norm;
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
 * One row per op; the row is everything codegen knows about the op. To add
 * an op (archs/README.md, "Adding an op", lists every file it touches):
 *  1. its OpKind above (before OP_COUNT) and its row in ops.c's table:
 *     keyword, input count, keys (with defaults or `need`), traits, FLOPs
 *     per element and, unless its output is its input's shape with no
 *     parameters, an infer hook (output shape, parameters, FLOPs);
 *  2. its CPU kernel pair in kernels/cpu/ and its row in runtime/cpu.c's
 *     CPU_OPS; its CUDA template in kernels/cuda/ and its row in the
 *     emitter's EMIT_OPS (codegen/emit.c);
 *  3. its gradient test in tests/test_grad.c.
 * The passes, the parser and `kiln plan` read only the row: a new op that
 * needs a `switch` on OpKind elsewhere is missing a trait here. */

/* Traits the passes and the executors ask about an op (OpInfo.traits). */
enum {
    TRAIT_INPUT       = 1u << 0,  /* the network's input (layer 0 and only there) */
    TRAIT_LOSS        = 1u << 1,  /* the loss (the last layer); its gradient is
                                     written by the loss step, it has no backward */
    TRAIT_ELEMENTWISE = 1u << 2,  /* output has the first input's shape and element
                                     i reads only element i of each input */
    TRAIT_ACTIVATION  = 1u << 3,  /* a pointwise activation, OpInfo.act says which;
                                     can join a fused chain after conv(+BN) */
    TRAIT_WINDOWED    = 1u << 4,  /* has a window (ConvAttr: kernel, stride, padding) */
    TRAIT_BN          = 1u << 5,  /* batch normalization: BnAttr, params gamma, beta,
                                     moving_mean, moving_variance; Layer.bn_mode
                                     applies; can fold into / join a chain head;
                                     its backward reads x when its statistics or
                                     gamma/beta train */
    TRAIT_CHAIN_HEAD  = 1u << 6,  /* heads a fused chain: conv + BN + activation +
                                     residual add (conv, dwconv); folds a frozen BN */
    TRAIT_CHAIN_ADD   = 1u << 7,  /* can end a fused chain as its residual add */
    TRAIT_CLASSIFIER  = 1u << 8,  /* can be the head before the loss (dense):
                                     units= is resized to the class count */
    TRAIT_HEAD_PASS   = 1u << 9,  /* passes between the head and the loss (gap, dropout) */
    TRAIT_WEIGHTS     = 1u << 10, /* param 0 is a weight kernel, param 1 the bias when
                                     layer_has_bias; its backward costs its forward
                                     once for dx and once for the weight gradients */
    TRAIT_BWD_X       = 1u << 11, /* its backward reads its input x */
    TRAIT_BWD_X_FOR_W = 1u << 12, /* its backward reads x only for weight gradients */
    TRAIT_BWD_X2      = 1u << 13, /* when it reads x, it reads its second input too */
    TRAIT_RANDOM      = 1u << 14, /* not deterministic in training (dropout): a
                                     cached-feature prefix cannot include it */
};

/* Activations, in the order of kernels/cpu/kernels.h's Act (the executors
 * convert by value; runtime/cpu.c asserts the order). */
typedef enum { ACTK_NONE = 0, ACTK_RELU, ACTK_RELU6, ACTK_SWISH, ACTK_SIGMOID,
               ACTK_GELU, ACTK_COUNT } ActKind;

/* The kinds of value a key takes; graph.c parses each kind (and says what
 * was wrong). A new op with only these kinds of keys needs no parser change. */
typedef enum {
    KEY_SIZE = 0,      /* HxWxC (3 ints; 1..4096 pixels, 1..4 channels) */
    KEY_COUNT,         /* a positive integer (an int) */
    KEY_PAIR,          /* N or NxM, positive (two consecutive ints) */
    KEY_PADDING,       /* same, valid, P, PV,PH or T,B,L,R (a ConvAttr) */
    KEY_PAD,           /* P, PV,PH or T,B,L,R (a PadAttr) */
    KEY_BOOL,          /* true or false (an int) */
    KEY_NUMBER,        /* a number or A/B (a float) */
    KEY_POSITIVE,      /* a number > 0 (a float) */
    KEY_FRACTION,      /* a number in [0, 1) (a float) */
    KEY_CHANNELS,      /* 1 value for all channels or 1 per channel (float[4]) */
    KEY_CHANNELS_POSITIVE,
} KeyKind;

typedef struct {
    const char *name;         /* in .arch files; NULL ends the list */
    KeyKind kind;
    size_t off;               /* where the value goes: offsetof(Layer, a.x.field) */
    double def;               /* default of a number, count, bool or pair (each
                                 part; each channel); 0 when not given */
    const char *need;         /* non-NULL: required, "OP needs <need>" */
} KeyDef;

#define KILN_MAX_KEYS 6

/* Output shape (l->out), parameters (appended to g), FLOPs (l->flops, preset
 * to flops_per_elem x input elements). Returns 0, 2 with "what was wrong" in
 * err, or 1 when out of memory. */
typedef int (*OpInferFn)(Graph *g, Layer *l, char *err, size_t errlen);

typedef struct {
    const char *keyword;      /* in .arch files */
    OpKind op;                /* == its index in the table */
    int min_in, max_in;       /* inputs (0 for `input`) */
    KeyDef keys[KILN_MAX_KEYS];  /* besides from=, in the order messages list them */
    unsigned traits;          /* TRAIT_* */
    ActKind act;              /* for TRAIT_ACTIVATION, else ACTK_NONE */
    int flops_per_elem;       /* forward FLOPs per input element */
    OpInferFn infer;          /* NULL: output = first input's shape, no params */
    /* Workspace floats for a batch of n (im2col columns); NULL: none. */
    size_t (*workspace)(const Graph *g, const Layer *l, int n);
} OpInfo;

const OpInfo *op_info(OpKind op);
const OpInfo *op_find(const char *keyword);
/* The first row with the trait (TRAIT_INPUT, TRAIT_LOSS: the only one). */
const OpInfo *op_with(unsigned trait);
/* The keywords, in table order, as "input, conv, ..., softmax_ce". */
void op_keywords(char *buf, size_t len);
unsigned op_traits(OpKind op);
static inline int op_is(OpKind op, unsigned trait) { return (op_traits(op) & trait) != 0; }
ActKind op_act(OpKind op);
/* "relu", "relu6", "swish", "sigmoid", "gelu"; "none" for ACTK_NONE. */
const char *act_name(ActKind a);
/* The key of op named `name`, or NULL. */
const KeyDef *op_key(OpKind op, const char *name);
/* A parameter role's name, the suffix of its parameters' names
 * ("kernel", "depthwise_kernel", "bias", "gamma", ...). */
const char *param_role_name(ParamRole r);
/* Does the layer have a bias parameter (its bias= key, true by default)? */
int layer_has_bias(const Layer *l);
/* Workspace floats layer l needs for a batch of n (0 for most ops). */
size_t layer_workspace(const Graph *g, const Layer *l, int n);
/* Fill l->out, append l's params to g, compute l->flops. Returns 0, or 2 with
 * a message ("what was wrong") in err, or 1 when out of memory. */
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
