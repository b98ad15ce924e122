/* codegen/plan.h — the static plan: what runs, in which order, and where
 * every buffer lives, decided once before the first step.
 *
 * Passes (in order, one function each in plan.c, each stating its
 * contract; they ask the ops' traits, never their names):
 *  1. chains  — fold + fuse: a frozen BN whose only input is a frozen chain
 *               head (conv/dwconv) folds into the head's weights and bias
 *               (derived constants); with fusion on, head + BN + activation
 *               + residual add become one node with an epilogue; off = one
 *               node per layer, the unfused twin, numerically equal.
 *  2. nodes   — one node per chain or layer, ordered by its last layer, with
 *               its output tensor.
 *  3. backward marking — a node has a backward step iff it owns trainable
 *               parameters or one of its inputs has a trainable ancestor; a
 *               frozen prefix is forward-only. Saved inputs, gradients,
 *               workspace and derived constants follow.
 *  4. steps   — forward, loss, backward in reverse.
 *  5. flags -> parameters — the parameter arena by trainability, LR-group
 *               segments, the update step.
 *  6. lifetimes and 7. memory — tensors get step lifetimes (an activation
 *               lives until its last forward reader, or its backward reader
 *               when one exists) and offsets in the activation arena by
 *               first-fit over lifetimes; gradients of activations share
 *               that arena.
 *  8. FLOPs   — a training step's FLOPs per image as planned.
 *
 * Arenas (float32): params (all parameters: trainable first, in graph order,
 * then frozen, then BN statistics), grads and momentum (trainable only, in
 * the same order, so trainable param i is params[i], grads[i], mom[i]),
 * activations, derived (folded weights, BN scale/shift), workspace (im2col and
 * epilogue scratch, the largest single step's need). The plan's byte counts
 * are exactly what a backend allocates.
 */
#ifndef KILN_PLAN_H
#define KILN_PLAN_H

#include "codegen/graph.h"

#define KILN_NONE ((size_t)-1)

typedef enum { T_ACT = 0, T_GRAD, T_STAT, T_LABELS } TensorKind;

typedef struct {
    size_t floats;       /* whole batch */
    size_t offset;       /* in the activation arena, floats */
    int first, last;     /* step lifetime, inclusive */
    TensorKind kind;
    int node;            /* producer (for T_GRAD: the node whose output it is the gradient of) */
} Tensor;

typedef struct {
    int layer;           /* main layer (the conv of a fused node) */
    int bn, act, add;    /* absorbed layers, or -1 */
    int fold;            /* bn folded into the conv's weights */
    int n_in, in[2];     /* input tensors; for a fused add, in[1] is the residual */
    int out;             /* output tensor (-1 for the loss) */
    int z;               /* conv output before the epilogue (== out when not saved) */
    int stats;           /* BN batch statistics (mean, invstd) or -1 */
    int din[2];          /* input gradients, -1 when not needed */
    int din_acc[2];      /* 1: add into din (a later consumer already wrote it) */
    int dout;            /* gradient of out, -1 when none */
    int bwd;             /* has a backward step */
    int save_z;          /* backward reads z */
    int save_in;         /* backward reads in[0] (and in[1] for mul) */
    int train_w;         /* main layer's kernel/bias train */
    int train_bn;        /* the (absorbed or own) BN's gamma/beta train */
    size_t derived;      /* offset in the derived arena, or KILN_NONE */
    size_t ws;           /* workspace floats this node needs */
} Node;

typedef enum { STEP_FWD = 0, STEP_LOSS, STEP_BWD, STEP_UPDATE } StepKind;

typedef struct { StepKind kind; int node; } Step;

/* A run of trainable parameters sharing an LR group. */
typedef struct { size_t begin, end; int group; } PlanSegment;

typedef struct {
    int batch;
    int fuse, fold;
    int keep;            /* a layer whose output stays readable after a
                            forward pass (for tests and inspection); 0: none */
} PlanOptions;

typedef struct {
    const Graph *g;
    PlanOptions opt;
    Node *nodes; int n_nodes;
    Tensor *tensors; int n_tensors;
    Step *steps; int n_steps;
    int *layer_node;     /* layer -> node that computes its output (or absorbs it) */
    int *layer_tensor;   /* layer -> tensor holding its output, -1 if internal */
    size_t *param_off;   /* graph param -> offset in the param arena */
    size_t *grad_off;    /* graph param -> offset in grads/momentum, or KILN_NONE */
    PlanSegment *segs; int n_segs;
    int input_tensor, logits_tensor, labels_tensor, loss_node;
    /* arena sizes in floats */
    size_t param_floats, grad_floats, opt_floats, act_floats, derived_floats, ws_floats;
    size_t trainable_floats;
    int64_t train_flops;  /* per image, forward + backward as planned */
} Plan;

/* Build the plan. Returns 0, or 1 when out of memory (err says so). */
int plan_build(Plan *p, const Graph *g, const PlanOptions *opt, char *err, size_t errlen);
void plan_free(Plan *p);

/* The BN layer node nd normalizes with: its own (a BN node) or the absorbed
 * one when not folded; -1 when none. */
int plan_node_bn(const Plan *p, const Node *nd);
/* Does the node run an epilogue after its main op (an unfolded BN, an
 * activation or a residual add absorbed by fusion)? */
int node_has_epilogue(const Node *nd);

/* Is graph parameter i trained under the graph's flags? */
int param_trainable(const Graph *g, int i);

/* The best layer at which cached features can enter the plan: the frozen,
 * forward-only, deterministic prefix ends there (no backward step, no BN on
 * batch statistics, no dropout up to it) and nothing after it reads any
 * earlier tensor but its output. Among such layers whose output has at most
 * max_floats per image, the latest (so epochs run the fewest layers).
 * Returns the layer, or -1 when there is none. */
int plan_find_cut(const Plan *p, size_t max_floats);
/* Floats per image of layer l's output. */
size_t plan_layer_floats(const Plan *p, int layer);

/* Bytes the backend allocates: all arenas (labels included). */
size_t plan_bytes(const Plan *p);
/* A lower bound on the DRAM bytes one training step over a full batch must
 * move (the memory-bandwidth floor of a step), by this definition:
 *  - every activation-arena tensor (activations, gradients of activations,
 *    BN statistics, the labels): written once and read once, floats x 4 x 2;
 *  - every parameter of a node read once in the forward (a folded conv+BN
 *    reads its derived copy, kernel plus per-channel bias, instead of the
 *    conv's and the BN's parameters), and once more in the backward when the
 *    node has a backward step;
 *  - the update: per trainable float, the read of param, grad and momentum
 *    and the write of param and momentum (5 x 4 bytes) plus the gradient's
 *    write by the backward (4 bytes): 24 bytes.
 * It is a floor: no tensor is re-read, and a fused kernel reuses everything it
 * touches perfectly. Left out: workspace traffic (im2col columns, epilogue
 * scratch), the derived BN scale/shift of unfolded BNs, and the host-to-device
 * upload itself. Time at a bandwidth B: plan_traffic_bytes / B. */
size_t plan_traffic_bytes(const Plan *p);
/* Bytes of each arena: params, grads, optimizer, activations, derived, workspace. */
void plan_arena_bytes(const Plan *p, size_t out[6]);
extern const char *const PLAN_ARENA_NAMES[6];

/* The plan as text (codegen/plan_print.c): header, counts and arenas always;
 * the per-layer table and the step list when asked. */
#include <stdio.h>
void plan_print(FILE *f, const Plan *p, int layers, int steps);

/* "conv stem_conv+stem_bn+stem_act" style label of a node. */
void plan_node_label(const Plan *p, int node, char *buf, size_t len);

#endif
