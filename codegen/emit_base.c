/* codegen/emit_base.c — the bottom layer of the CUDA C emitter: the embedded
 * templates and their sections, rendering ({{KEY}} substitution), key/value
 * lists, kernel registration (naming, deduplication, the emulation
 * trampoline), launch lists and arena pointers (Refs). What an op is (its
 * activation, bias, BN) comes from the registry row (graph.h) and the plan
 * (plan.h), never from a test of the op here.
 *
 * Layering of the emitter (each file calls only the files below it):
 *   emit.c       the walk: the program, node order, loss, update, op table
 *   emit_conv.c  per-op emitters: conv, depthwise conv, BN, folding
 *   emit_ops.c   per-op emitters: every other op
 *   emit_base.c  this file; calls nothing of the emitter above it
 *
 * Invariants: the text of a kernel depends only on its template section and
 * its key/values; its name is <section>_<tag>_<low 32 bits of the FNV-1a of
 * the text>; a kernel with the same name and hash is registered once.
 */
#include "codegen/emit_internal.h"
#include "codegen/hash.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* From the build (CMake embeds every kernels/cuda/NAME.cu). */
typedef struct { const char *name; const char *text; } KilnTemplateFile;
extern const KilnTemplateFile kiln_template_files[];
extern const int kiln_n_template_files;

const char *emit_template_file(const char *name)
{
    for (int i = 0; i < kiln_n_template_files; i++)
        if (!strcmp(kiln_template_files[i].name, name)) return kiln_template_files[i].text;
    return NULL;
}

/* ---- small utilities --------------------------------------------------------------- */

static void sb_add(Emitter *e, StrBuf *b, const char *s, size_t n)
{
    if (e->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) cap *= 2;
        char *t = realloc(b->s, cap);
        if (!t) { em_fail(e, "out of memory"); return; }
        b->s = t; b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

static void sb_str(Emitter *e, StrBuf *b, const char *s) { sb_add(e, b, s, strlen(s)); }

void em_text(Emitter *e, const char *s, size_t n) { sb_add(e, &e->src, s, n); }

void em_fail(Emitter *e, const char *fmt, ...)
{
    if (e->failed) return;
    e->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->err, e->errlen, fmt, ap);
    va_end(ap);
}

/* Scratch strings for kv values, freed after each node. */
const char *em_fmt(Emitter *e, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (e->n_scratch == e->cap_scratch) {
        int cap = e->cap_scratch ? 2 * e->cap_scratch : 64;
        char **t = realloc(e->scratch, sizeof *t * (size_t)cap);
        if (!t) { em_fail(e, "out of memory"); return ""; }
        e->scratch = t; e->cap_scratch = cap;
    }
    char *s = strdup(buf);
    if (!s) { em_fail(e, "out of memory"); return ""; }
    e->scratch[e->n_scratch++] = s;
    return s;
}

void kv_str(Emitter *e, Kv *k, const char *key, const char *val)
{
    if (k->n + 2 > 2 * KV_MAX) {
        em_fail(e, "more than %d template keys", KV_MAX);
        return;
    }
    k->v[k->n++] = key;
    k->v[k->n++] = val;
    k->v[k->n] = NULL;
}

void kv_int(Emitter *e, Kv *k, const char *key, long val) { kv_str(e, k, key, em_fmt(e, "%ld", val)); }

void kv_flag(Emitter *e, Kv *k, const char *key, int val) { kv_str(e, k, key, val ? "1" : "0"); }

void kv_float(Emitter *e, Kv *k, const char *key, float val)
{
    kv_str(e, k, key, em_fmt(e, "%.9ef", (double)val));
}

Geo geo_of(const Graph *g, const Layer *l)
{
    Shape x = g->layers[l->in[0]].out;
    const ConvAttr *a = &l->a.conv;
    return (Geo){x.h, x.w, x.c, l->out.c, a->kh, a->kw, a->sh, a->sw, a->pt, a->pl,
                 l->out.h, l->out.w};
}

void kv_geo(Emitter *e, Kv *k, const Geo *s)
{
    kv_int(e, k, "H", s->H); kv_int(e, k, "W", s->W); kv_int(e, k, "C", s->C);
    kv_int(e, k, "R", s->R); kv_int(e, k, "S", s->S);
    kv_int(e, k, "SH", s->SH); kv_int(e, k, "SW", s->SW);
    kv_int(e, k, "PT", s->PT); kv_int(e, k, "PL", s->PL);
    kv_int(e, k, "P", s->P); kv_int(e, k, "Q", s->Q);
}

void em_scratch_reset(Emitter *e)
{
    for (int i = 0; i < e->n_scratch; i++) free(e->scratch[i]);
    e->n_scratch = 0;
}

/* ---- templates ----------------------------------------------------------------------- */

/* The text of section `section` in file `file`: from the line after
 * "//@ section" to the next "//@ " line or the end. */
const char *em_section(const char *file, const char *section, size_t *len)
{
    const char *t = emit_template_file(file);
    if (!t) return NULL;
    size_t sl = strlen(section);
    for (const char *q = t; (q = strstr(q, "//@ ")) != NULL; q += 4) {
        if ((q == t || q[-1] == '\n') && !strncmp(q + 4, section, sl) &&
            (q[4 + sl] == '\n' || q[4 + sl] == '\r')) {
            const char *b = strchr(q, '\n');
            if (!b) return NULL;
            b++;
            const char *end = b;
            for (;;) {
                const char *nx = strstr(end, "//@ ");
                if (!nx) { end = b + strlen(b); break; }
                if (nx[-1] == '\n') { end = nx; break; }
                end = nx + 4;
            }
            *len = (size_t)(end - b);
            return b;
        }
    }
    return NULL;
}

/* Replace {{KEY}} by kv values; {{NAME}} stays. */
static void render(Emitter *e, StrBuf *out, const char *t, size_t n, const char *const *kv,
                   const char *where)
{
    size_t i = 0;
    while (i < n) {
        const char *o = strstr(t + i, "{{");
        size_t stop = o && (size_t)(o - t) < n ? (size_t)(o - t) : n;
        sb_add(e, out, t + i, stop - i);
        if (stop == n) break;
        const char *c = strstr(o + 2, "}}");
        if (!c) { em_fail(e, "%s: unclosed {{", where); return; }
        size_t kl = (size_t)(c - (o + 2));
        if (kl == 4 && !strncmp(o + 2, "NAME", 4)) {
            sb_str(e, out, "{{NAME}}");
        } else {
            const char *val = NULL;
            for (int k = 0; kv && kv[k]; k += 2)
                if (strlen(kv[k]) == kl && !strncmp(kv[k], o + 2, kl)) { val = kv[k + 1]; break; }
            if (!val) { em_fail(e, "%s: no value for {{%.*s}}", where, (int)kl, o + 2); return; }
            sb_str(e, out, val);
        }
        i = (size_t)(c + 2 - t);
    }
}

int em_kernel(Emitter *e, const char *file, const char *section, const char *tag,
              int n_args, int uses_sync, const char *const *kv)
{
    if (e->failed) return -1;
    size_t len;
    const char *t = em_section(file, section, &len);
    char where[160];
    snprintf(where, sizeof where, "kernels/cuda/%s.cu: %s", file, section);
    if (!t) { em_fail(e, "%s: no such template", where); return -1; }
    StrBuf body = {0};
    render(e, &body, t, len, kv, where);
    if (e->failed) { free(body.s); return -1; }
    uint64_t h = kiln_hash(KILN_HASH_INIT, body.s, body.len);
    char name[256];
    snprintf(name, sizeof name, "%s_%s_%08x", section, tag, (unsigned)(h & 0xffffffffu));
    for (char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9'))) *c = '_';
    Program *pr = e->pr;
    for (int k = 0; k < pr->n_kernels; k++)
        if (e->khash[k] == h && !strcmp(pr->kernels[k].name, name)) { free(body.s); return k; }
    if (pr->n_kernels == e->kcap) {
        int cap = e->kcap ? 2 * e->kcap : 64;
        EmitKernel *nk = realloc(pr->kernels, sizeof *nk * (size_t)cap);
        if (nk) pr->kernels = nk;
        uint64_t *nh = realloc(e->khash, sizeof *nh * (size_t)cap);
        if (nh) e->khash = nh;
        if (!nk || !nh) { free(body.s); em_fail(e, "out of memory"); return -1; }
        e->kcap = cap;
    }
    /* the text with its name */
    sb_str(e, &e->src, "\n");
    for (size_t i = 0; i < body.len;) {
        const char *o = strstr(body.s + i, "{{NAME}}");
        size_t stop = o ? (size_t)(o - body.s) : body.len;
        sb_add(e, &e->src, body.s + i, stop - i);
        if (!o) break;
        sb_str(e, &e->src, name);
        i = stop + 8;
    }
    free(body.s);
    /* the host trampoline of the emulation (tests/cuda_emu.h) */
    char tr[512];
    int w = snprintf(tr, sizeof tr, "#ifdef KILN_EMULATE\nKILN_EMU_EXPORT void %s__emu(void **a) { %s(*(int *)a[0]",
                     name, name);
    sb_add(e, &e->src, tr, (size_t)w);
    for (int a = 1; a <= n_args; a++) {
        w = snprintf(tr, sizeof tr, ", *(float **)a[%d]", a);
        sb_add(e, &e->src, tr, (size_t)w);
    }
    sb_str(e, &e->src, "); }\n#endif\n");
    EmitKernel *k = &pr->kernels[pr->n_kernels];
    k->name = strdup(name);
    k->n_args = n_args;
    k->uses_sync = uses_sync;
    if (!k->name) { em_fail(e, "out of memory"); return -1; }
    e->khash[pr->n_kernels] = h;
    return pr->n_kernels++;
}

/* ---- launch lists --------------------------------------------------------------------- */

static Launch *push(Emitter *e, LaunchList *l)
{
    if (e->failed) return NULL;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 4;
        Launch *v = realloc(l->v, sizeof *v * (size_t)cap);
        if (!v) { em_fail(e, "out of memory"); return NULL; }
        l->v = v; l->cap = cap;
    }
    Launch *L = &l->v[l->n++];
    memset(L, 0, sizeof *L);
    return L;
}

void em_launch(Emitter *e, LaunchList *l, int kernel, Dim gx, long gx_div, int gy, int block,
               int n_args, const Ref *args)
{
    if (e->failed || kernel < 0) return;
    if (n_args != e->pr->kernels[kernel].n_args || n_args > EMIT_MAX_ARGS) {
        em_fail(e, "kernel %s takes %d pointers, launched with %d",
                e->pr->kernels[kernel].name, e->pr->kernels[kernel].n_args, n_args);
        return;
    }
    Launch *L = push(e, l);
    if (!L) return;
    L->kind = L_KERNEL;
    L->kernel = kernel;
    L->gx = gx; L->gx_div = gx_div > 0 ? gx_div : 1;
    L->gy = gy > 0 ? gy : 1;
    L->block = block;
    L->n_args = n_args;
    memcpy(L->args, args, sizeof *args * (size_t)n_args);
}

void em_launch_elems(Emitter *e, LaunchList *l, int kernel, Dim elems, int n_args, const Ref *args)
{
    int b = e->o.block;
    em_launch(e, l, kernel, elems, b, 1, b, n_args, args);
}

void em_gemm(Emitter *e, LaunchList *l, int ta, int tb, Dim m, Dim n, Dim k,
             float alpha, Ref A, int lda, Ref B, int ldb, float beta, Ref C, int ldc)
{
    Launch *L = push(e, l);
    if (!L) return;
    L->kind = L_GEMM;
    L->kernel = -1;
    L->ta = ta; L->tb = tb;
    L->m = m; L->n = n; L->k = k;
    L->alpha = alpha; L->beta = beta;
    L->n_args = 3;
    L->args[0] = A; L->args[1] = B; L->args[2] = C;
    L->lda = lda; L->ldb = ldb; L->ldc = ldc;
}

/* ---- pointers --------------------------------------------------------------------------- */

Ref R_NULL(void) { return (Ref){BUF_NULL, 0}; }
Ref R_ACT(const Emitter *e, int t)
{
    return t < 0 ? R_NULL() : (Ref){BUF_ACT, e->p->tensors[t].offset};
}
Ref R_PARAM(const Emitter *e, int layer, int k)
{
    return (Ref){BUF_PARAM, e->p->param_off[e->g->layers[layer].first_param + k]};
}
Ref R_GRAD(const Emitter *e, int layer, int k)
{
    size_t o = e->p->grad_off[e->g->layers[layer].first_param + k];
    return o == KILN_NONE ? R_NULL() : (Ref){BUF_GRAD, o};
}
Ref R_DERIVED(const Emitter *e, size_t off) { return (Ref){BUF_DERIVED, off}; }
Ref R_WS(size_t off) { return (Ref){BUF_WS, off}; }
Ref R_CTRL(void) { return (Ref){BUF_CTRL, 0}; }
Ref R_GRADS(size_t off) { return (Ref){BUF_GRAD, off}; }
Ref R_PARAMS(size_t off) { return (Ref){BUF_PARAM, off}; }
Ref R_MOM(size_t off) { return (Ref){BUF_MOM, off}; }
Ref R_OFF(Ref r, size_t words)
{
    if (r.buf != BUF_NULL) r.off += words;
    return r;
}

/* ---- the emitter's own state ------------------------------------------------------------ */

void em_release(Emitter *e)
{
    em_scratch_reset(e);
    free(e->scratch);
    free(e->khash);
    e->scratch = NULL;
    e->khash = NULL;
    e->n_scratch = e->cap_scratch = e->kcap = 0;
}
