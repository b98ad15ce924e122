/* codegen/emit_internal.h — shared by the emitter's files only. The emitter
 * is three layers, each calling only the ones below it:
 *
 *   emit.c       the walk: the program (preamble, node order, loss, update)
 *                and the op table EMIT_OPS that finds an op's emitters
 *   emit_conv.c  per-op emitters: conv, depthwise conv (with their fused
 *   emit_ops.c   epilogue), BN, folding; every other op
 *   emit_base.c  templates, rendering, key/values, kernel registration,
 *                launch lists, pointers
 *
 * How an op is emitted: render a template section of kernels/cuda/<file>.cu
 * with em_kernel() (placeholders {{KEY}} replaced by the given values;
 * {{NAME}} is supplied), then append launches with em_launch()/em_gemm() to
 * the node's list, pointers as Refs from the helpers below. The executor
 * mirrors runtime/cpu.c: the same kernels/cpu contract (overwrite vs acc,
 * NULL = not needed) holds for every template. An op reaches the walk
 * through its row of EMIT_OPS in emit.c (a forward and a backward emitter
 * with the signatures EmitFwd / EmitBwd below). What a layer is comes from
 * its registry row (graph.h: op_act/act_name, layer_has_bias,
 * layer_workspace) and the plan (plan_node_bn, node_has_epilogue); no
 * emitter tests an op by name.
 */
#ifndef KILN_EMIT_INTERNAL_H
#define KILN_EMIT_INTERNAL_H

#include "codegen/emit.h"

typedef struct { char *s; size_t len, cap; } StrBuf;

typedef struct {
    const Plan *p;
    const Graph *g;
    Program *pr;
    EmitOptions o;
    StrBuf src;
    uint64_t *khash;     /* per kernel: hash of its text, for dedupe */
    int kcap;
    char **scratch;      /* em_fmt strings of the current node */
    int n_scratch, cap_scratch;
    int failed;
    char *err; size_t errlen;
} Emitter;

/* Threads per block of kernels that cooperate through shared memory
 * (kiln_block_sum): fixed, a power of two. */
#define EMIT_SYNC_BLOCK 256

/* Render section `section` of template file `file` with the key/value pairs
 * kv ("KEY", "value", ..., NULL) and add it to the translation unit, named
 * <section>_<tag>_<hash>. Returns the kernel index (an identical kernel
 * emitted before is reused). n_args: pointer arguments after n. */
int em_kernel(Emitter *e, const char *file, const char *section, const char *tag,
              int n_args, int uses_sync, const char *const *kv);

/* Append a kernel launch: grid.x = ceil(gx / gx_div), grid.y = gy. */
void em_launch(Emitter *e, LaunchList *l, int kernel, Dim gx, long gx_div, int gy, int block,
               int n_args, const Ref *args);
/* Convenience: one thread per element of a batch-sized range (per_n * n +
 * fixed elements), blocks of the default size. */
void em_launch_elems(Emitter *e, LaunchList *l, int kernel, Dim elems, int n_args, const Ref *args);
/* Append a row-major GEMM (see Launch). */
void em_gemm(Emitter *e, LaunchList *l, int ta, int tb, Dim m, Dim n, Dim k,
             float alpha, Ref A, int lda, Ref B, int ldb, float beta, Ref C, int ldc);

void em_fail(Emitter *e, const char *fmt, ...);

/* The text of section `section` of template file `file` (from the line after
 * "//@ section" to the next "//@ " line), *len bytes, or NULL. */
const char *em_section(const char *file, const char *section, size_t *len);
/* Append n bytes of raw text to the translation unit. */
void em_text(Emitter *e, const char *s, size_t n);
/* Free what the emitter holds besides the program (dedupe hashes, scratch). */
void em_release(Emitter *e);

/* printf into a fresh string held by the emitter until the node is done:
 * convenient for kv values. The returned pointer lives until the next
 * em_scratch_reset (the walk calls it after each step). */
const char *em_fmt(Emitter *e, const char *fmt, ...);
void em_scratch_reset(Emitter *e);

/* A key/value list for em_kernel, built a pair at a time (values through
 * em_fmt). Zero-initialize; always NULL-terminated; at most KV_MAX pairs
 * (more fail the emission). */
#define KV_MAX 48
typedef struct { const char *v[2 * KV_MAX + 1]; int n; } Kv;

void kv_str(Emitter *e, Kv *k, const char *key, const char *val);
void kv_int(Emitter *e, Kv *k, const char *key, long val);
/* "1" or "0" */
void kv_flag(Emitter *e, Kv *k, const char *key, int val);
/* A float constant that reads back as the same float (C and CUDA literal). */
void kv_float(Emitter *e, Kv *k, const char *key, float val);

/* The window geometry of a conv-like layer (conv, depthwise conv, max
 * pool), per image: input H, W, C; K output channels; window R x S, strides,
 * top/left padding; output P x Q. */
typedef struct { int H, W, C, K, R, S, SH, SW, PT, PL, P, Q; } Geo;

Geo geo_of(const Graph *g, const Layer *l);
/* Keys H, W, C, R, S, SH, SW, PT, PL, P, Q. */
void kv_geo(Emitter *e, Kv *k, const Geo *s);

/* ---- pointers -------------------------------------------------------------------- */
Ref R_NULL(void);
Ref R_ACT(const Emitter *e, int tensor);          /* tensor < 0: NULL */
Ref R_PARAM(const Emitter *e, int layer, int k);  /* parameter k of layer */
Ref R_GRAD(const Emitter *e, int layer, int k);   /* its gradient, NULL when frozen */
Ref R_DERIVED(const Emitter *e, size_t off);
Ref R_WS(size_t off);
Ref R_CTRL(void);
Ref R_GRADS(size_t off);    /* into the gradient arena directly */
Ref R_PARAMS(size_t off);
Ref R_MOM(size_t off);
Ref R_OFF(Ref r, size_t words);   /* r + words (NULL stays NULL) */

/* ---- per-op emitters ---------------------------------------------------------------
 * Forward: append to `l` the launches of node ni's forward step in training
 * (training = 1) or inference mode, including the per-forward derived
 * constants (BN scale/shift of a non-folded BN in inference mode).
 * Backward: the node's backward step. */
typedef void (*EmitFwd)(Emitter *e, int ni, int training, LaunchList *l);
typedef void (*EmitBwd)(Emitter *e, int ni, LaunchList *l);

/* emit_conv.c */
void em_conv_fwd(Emitter *e, int ni, int training, LaunchList *l);
void em_conv_bwd(Emitter *e, int ni, LaunchList *l);
void em_dwconv_fwd(Emitter *e, int ni, int training, LaunchList *l);
void em_dwconv_bwd(Emitter *e, int ni, LaunchList *l);
void em_bn_fwd(Emitter *e, int ni, int training, LaunchList *l);
void em_bn_bwd(Emitter *e, int ni, LaunchList *l);
/* The folded constants of node ni (conv weights and bias with its BN). */
void em_fold(Emitter *e, int ni, LaunchList *l);

/* emit_ops.c */
void em_act_fwd(Emitter *e, int ni, int training, LaunchList *l);   /* standalone activation */
void em_act_bwd(Emitter *e, int ni, LaunchList *l);
void em_add_fwd(Emitter *e, int ni, int training, LaunchList *l);
void em_add_bwd(Emitter *e, int ni, LaunchList *l);
void em_mul_fwd(Emitter *e, int ni, int training, LaunchList *l);   /* channel multiply */
void em_mul_bwd(Emitter *e, int ni, LaunchList *l);
void em_gap_fwd(Emitter *e, int ni, int training, LaunchList *l);
void em_gap_bwd(Emitter *e, int ni, LaunchList *l);
void em_maxpool_fwd(Emitter *e, int ni, int training, LaunchList *l);
void em_maxpool_bwd(Emitter *e, int ni, LaunchList *l);
void em_zeropad_fwd(Emitter *e, int ni, int training, LaunchList *l);
void em_zeropad_bwd(Emitter *e, int ni, LaunchList *l);
void em_dense_fwd(Emitter *e, int ni, int training, LaunchList *l);
void em_dense_bwd(Emitter *e, int ni, LaunchList *l);
void em_dropout_fwd(Emitter *e, int ni, int training, LaunchList *l);
void em_dropout_bwd(Emitter *e, int ni, LaunchList *l);

#endif
