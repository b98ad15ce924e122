/* tests/test_json.c — `kiln plan --json`, the graph as the Python tools read it.
 *
 *  - tiny.arch: one entry per layer in file order with the op keyword, inputs
 *    by name and output shape; every parameter of the graph (name, shape,
 *    role, learnable) in graph order; totals equal graph_learnable,
 *    graph_bn_stats and graph_flops, and the learnable count equals what
 *    `kiln plan` prints; resolved attributes (pads, kernel, eps as float32).
 *  - efficientnet_b0.arch and resnet50v2.arch: layer counts, Keras's
 *    parameter counts, explicit padding; efficientnet_lite0.arch: TF "same"
 *    padding resolved per input size (stem [0, 1, 0, 1] at 224, [1, 1, 1, 1]
 *    at 225), --num-classes and --freeze-until reflected in shapes and flags.
 *  - a bad arch: exit 2, nothing on stdout.
 * Runs the built binary ($KILN_BIN, set by ctest) on the source tree's archs
 * ($KILN_SOURCE_DIR).
 */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "codegen/graph.h"
#include "tests/suite_main.h"

/* `$KILN_BIN plan --json --arch archs/ARCH EXTRA` parsed; *rc its exit code.
 * NULL when stdout is not JSON. */
static json_t *plan_json(const char *arch, const char *extra, int *rc)
{
    const char *bin = getenv("KILN_BIN"), *src = getenv("KILN_SOURCE_DIR");
    ck_assert_msg(bin != NULL, "KILN_BIN not set");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' plan --json --arch '%s/archs/%s' %s 2>/dev/null", bin, src ? src : ".", arch,
             extra ? extra : "");
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    json_error_t e;
    json_t *doc = json_loadf(p, 0, &e);
    int st = pclose(p);
    *rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return doc;
}

static void load_graph(Graph *g, const char *arch)
{
    const char *src = getenv("KILN_SOURCE_DIR");
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/archs/%s", src ? src : ".", arch);
    ck_assert_msg(graph_load(g, path, err, sizeof err) == 0, "%s", err);
}

/* The layer named `name` in doc, or fail. */
static json_t *layer(json_t *doc, const char *name)
{
    size_t i;
    json_t *l;
    json_array_foreach(json_object_get(doc, "layers"), i, l)
        if (!strcmp(json_string_value(json_object_get(l, "name")), name)) return l;
    ck_abort_msg("no layer %s", name);
    return NULL;
}

/* The ints of a JSON array as "a,b,c". */
static const char *ints(json_t *a)
{
    static char buf[128];
    size_t i, n = 0;
    json_t *v;
    buf[0] = 0;
    json_array_foreach(a, i, v)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%lld", i ? "," : "", (long long)json_integer_value(v));
    return buf;
}

/* The shape of parameter `name` ("<layer>.<role>") as "a,b,c". */
static const char *param_shape(json_t *doc, const char *name)
{
    char lname[128];
    snprintf(lname, sizeof lname, "%s", name);
    *strrchr(lname, '.') = 0;
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(layer(doc, lname), "params"), i, p)
        if (!strcmp(json_string_value(json_object_get(p, "name")), name)) return ints(json_object_get(p, "shape"));
    ck_abort_msg("no parameter %s", name);
    return NULL;
}

static long long total(json_t *doc, const char *key)
{
    return (long long)json_integer_value(json_object_get(json_object_get(doc, "totals"), key));
}

/* The learnable-parameter count `kiln plan --quiet` prints ("learnable
 * parameters 5,880 (...") without its thousands separators. */
static long long plan_text_learnable(const char *arch)
{
    const char *bin = getenv("KILN_BIN"), *src = getenv("KILN_SOURCE_DIR");
    char cmd[2048], line[512];
    snprintf(cmd, sizeof cmd, "'%s' plan --quiet --arch '%s/archs/%s'", bin, src ? src : ".", arch);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    long long n = -1;
    while (fgets(line, sizeof line, p))
        if (!strncmp(line, "learnable parameters ", 21)) {
            n = 0;
            for (const char *c = line + 21; *c && *c != ' '; c++)
                if (*c >= '0' && *c <= '9') n = n * 10 + (*c - '0');
        }
    ck_assert_int_eq(pclose(p), 0);
    return n;
}

START_TEST(tiny_every_layer_and_parameter)
{
    int rc;
    json_t *doc = plan_json("tiny.arch", NULL, &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_nonnull(doc);
    Graph g;
    load_graph(&g, "tiny.arch");
    ck_assert_str_eq(json_string_value(json_object_get(doc, "arch")), "tiny");
    ck_assert_str_eq(json_string_value(json_object_get(doc, "head")), "head");
    json_t *layers = json_object_get(doc, "layers");
    ck_assert_int_eq((int)json_array_size(layers), 25);
    ck_assert_int_eq((int)json_array_size(layers), g.n_layers);
    int k = 0;
    for (int i = 0; i < g.n_layers; i++) {
        const Layer *L = &g.layers[i];
        json_t *l = json_array_get(layers, (size_t)i);
        ck_assert_str_eq(json_string_value(json_object_get(l, "name")), L->name);
        ck_assert_str_eq(json_string_value(json_object_get(l, "op")), op_info(L->op)->keyword);
        json_t *ins = json_object_get(l, "inputs");
        ck_assert_int_eq((int)json_array_size(ins), L->n_in);
        for (int j = 0; j < L->n_in; j++)
            ck_assert_str_eq(json_string_value(json_array_get(ins, (size_t)j)), g.layers[L->in[j]].name);
        char want[64];
        snprintf(want, sizeof want, "%d,%d,%d", L->out.h, L->out.w, L->out.c);
        ck_assert_str_eq(ints(json_object_get(l, "output")), want);
        ck_assert_int_eq(json_integer_value(json_object_get(l, "flops")), L->flops);
        size_t j;
        json_t *p;
        json_array_foreach(json_object_get(l, "params"), j, p) {
            const Param *P = &g.params[k++];
            ck_assert_str_eq(json_string_value(json_object_get(p, "name")), P->name);
            ck_assert_int_eq(json_is_true(json_object_get(p, "learnable")), P->learnable);
            ck_assert_int_eq(json_integer_value(json_object_get(p, "numel")), (long long)P->numel);
        }
    }
    ck_assert_int_eq(k, g.n_params);
    ck_assert_int_eq(total(doc, "learnable"), 5880);
    ck_assert_int_eq(total(doc, "learnable"), (long long)graph_learnable(&g));
    ck_assert_int_eq(total(doc, "learnable"), plan_text_learnable("tiny.arch"));
    ck_assert_int_eq(total(doc, "bn_statistics"), 160);
    ck_assert_int_eq(total(doc, "flops"), graph_flops(&g));
    ck_assert_str_eq(param_shape(doc, "stem.kernel"), "3,3,3,16");
    ck_assert_str_eq(param_shape(doc, "b1_dw.depthwise_kernel"), "3,3,16");
    ck_assert_str_eq(param_shape(doc, "head.kernel"), "32,4");
    ck_assert_str_eq(param_shape(doc, "stem_bn.moving_variance"), "16");
    json_t *stem = json_object_get(layer(doc, "stem"), "attributes");
    ck_assert_str_eq(ints(json_object_get(stem, "pads")), "1,1,1,1");
    ck_assert_str_eq(json_string_value(json_object_get(stem, "padding")), "same");
    ck_assert(json_is_false(json_object_get(stem, "bias")));
    json_t *pad = json_object_get(layer(doc, "b2_pad"), "attributes");
    ck_assert_str_eq(ints(json_object_get(pad, "pad")), "1,1,1,1");
    json_t *in = json_object_get(doc, "input");
    ck_assert_str_eq(ints(json_object_get(in, "size")), "16,16,3");
    ck_assert((float)json_real_value(json_object_get(in, "scale")) == g.layers[0].a.input.scale);
    ck_assert((float)json_real_value(json_object_get(json_object_get(layer(doc, "stem_bn"), "attributes"), "eps")) ==
              g.layers[graph_find(&g, "stem_bn")].a.bn.eps);
    ck_assert((float)json_real_value(json_object_get(json_object_get(layer(doc, "drop"), "attributes"), "rate")) ==
              0.1f);
    graph_free(&g);
    json_decref(doc);
}
END_TEST

START_TEST(real_archs_counts_and_padding)
{
    int rc;
    json_t *b0 = plan_json("efficientnet_b0.arch", NULL, &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq((int)json_array_size(json_object_get(b0, "layers")), 255);
    ck_assert_int_eq(total(b0, "learnable"), 5288548);
    ck_assert_int_eq(total(b0, "learnable"), plan_text_learnable("efficientnet_b0.arch"));
    ck_assert_int_eq(total(b0, "bn_statistics"), 42016);
    /* Keras's explicit padding for a stride-2 3x3 conv: zeropad, then valid */
    ck_assert_str_eq(ints(json_object_get(json_object_get(layer(b0, "stem_conv_pad"), "attributes"), "pad")), "0,1,0,1");
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(layer(b0, "stem_conv"), "attributes"), "padding")), "valid");
    ck_assert_str_eq(ints(json_object_get(json_object_get(layer(b0, "stem_conv"), "attributes"), "pads")), "0,0,0,0");
    ck_assert_str_eq(param_shape(b0, "block2a_dwconv.depthwise_kernel"), "3,3,96");
    ck_assert_str_eq(param_shape(b0, "predictions.kernel"), "1280,1000");
    json_decref(b0);

    /* Lite0's TF "same" padding, resolved per input size */
    json_t *l0 = plan_json("efficientnet_lite0.arch", NULL, &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_str_eq(ints(json_object_get(json_object_get(layer(l0, "stem"), "attributes"), "pads")), "0,1,0,1");
    ck_assert_int_eq(total(l0, "learnable"), plan_text_learnable("efficientnet_lite0.arch"));
    json_decref(l0);
    json_t *odd = plan_json("efficientnet_lite0.arch", "--input-size 225 --num-classes 10 --freeze-until b1_1_proj_bn", &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_str_eq(ints(json_object_get(json_object_get(layer(odd, "stem"), "attributes"), "pads")), "1,1,1,1");
    ck_assert_str_eq(ints(json_object_get(layer(odd, "stem"), "output")), "113,113,32");
    ck_assert_str_eq(ints(json_object_get(json_object_get(odd, "input"), "size")), "225,225,3");
    ck_assert_str_eq(param_shape(odd, "fc.kernel"), "1280,10");
    ck_assert(json_is_false(json_object_get(layer(odd, "b1_1_proj_bn"), "trainable")));
    ck_assert_str_eq(json_string_value(json_object_get(layer(odd, "b1_1_proj_bn"), "bn_mode")), "frozen");
    ck_assert(json_is_true(json_object_get(layer(odd, "b2_1_expand"), "trainable")));
    json_decref(odd);

    json_t *r = plan_json("resnet50v2.arch", NULL, &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq((int)json_array_size(json_object_get(r, "layers")), 193);
    ck_assert_int_eq(total(r, "learnable") + total(r, "bn_statistics"), 25613800);
    json_t *a = json_object_get(layer(r, "conv2_block1_preact_bn"), "attributes");
    ck_assert((float)json_real_value(json_object_get(a, "eps")) == 1.001e-5f);
    ck_assert_str_eq(ints(json_object_get(json_object_get(layer(r, "conv1_pad"), "attributes"), "pad")), "3,3,3,3");
    json_t *ins = json_object_get(layer(r, "conv2_block1_out"), "inputs");
    ck_assert_int_eq((int)json_array_size(ins), 2);
    json_decref(r);
}
END_TEST

START_TEST(bad_arch_exit_2)
{
    int rc;
    json_t *doc = plan_json("no-such.arch", NULL, &rc);
    ck_assert_int_eq(rc, 2);
    ck_assert_ptr_null(doc);
    doc = plan_json("tiny.arch", "--num-classes 0", &rc);
    ck_assert_int_eq(rc, 2);
    ck_assert_ptr_null(doc);
}
END_TEST

Suite *test_suite(void)
{
    Suite *s = suite_create("json");
    TCase *t = tcase_create("plan_json");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, tiny_every_layer_and_parameter);
    tcase_add_test(t, real_archs_counts_and_padding);
    tcase_add_test(t, bad_arch_exit_2);
    suite_add_tcase(s, t);
    return s;
}
