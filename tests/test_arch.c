/* tests/test_arch.c — the architecture language: shape inference and counts
 * on archs/tiny.arch, the op registry's consistency (a row per OpKind at
 * its index, unique keywords, messages that list the table, defaults), and
 * every kind of bad file failing with file:line and,
 * through the command line, exit code 2 (a FIFO and an empty key refused,
 * never waited on or spun on). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "codegen/graph.h"
#include "tests/kiln_cli.h"
#include "tests/suite_main.h"

static char tiny_path[1024];

static void setup(void)
{
    const char *src = getenv("KILN_SOURCE_DIR");
    snprintf(tiny_path, sizeof tiny_path, "%s/archs/tiny.arch", src ? src : ".");
}

START_TEST(tiny_shapes_and_counts)
{
    Graph g;
    char err[512];
    ck_assert_msg(graph_load(&g, tiny_path, err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(g.name, "tiny");
    ck_assert_int_eq(g.n_layers, 25);
    int i = graph_find(&g, "b2_conv");
    ck_assert_int_ge(i, 0);
    /* zeropad 8x8 -> 10x10, 3x3 stride 2 valid -> 4x4 */
    ck_assert_int_eq(g.layers[i].out.h, 4);
    ck_assert_int_eq(g.layers[i].out.w, 4);
    ck_assert_int_eq(g.layers[i].out.c, 32);
    /* 3*3*16*32 = 4608 kernel, no bias */
    ck_assert_int_eq((int)g.params[g.layers[i].first_param].numel, 4608);
    ck_assert_int_eq(g.layers[i].n_params, 1);
    /* counted by hand: stem 432, 4 BN x 2C (16,16,16,32) = 160, dw 144,
     * se_reduce 64+4, se_expand 64+16, proj 256, b2 4608, head 128+4 */
    ck_assert_int_eq((int)graph_learnable(&g), 432 + 160 + 144 + 68 + 80 + 256 + 4608 + 132);
    ck_assert_int_eq((int)graph_bn_stats(&g), 160);
    /* stem: 2 * 16*16 outputs * 16 filters * 27 = 221184 FLOPs */
    ck_assert_int_eq((int)g.layers[graph_find(&g, "stem")].flops, 221184);
    /* same padding, stride 2, odd input: TensorFlow's split */
    graph_free(&g);
}
END_TEST

START_TEST(same_padding_follows_tensorflow)
{
    const char *txt = "input in size=7x7x1\nconv c filters=2 kernel=3 stride=2 padding=same\n"
                      "conv d filters=2 kernel=4 stride=1 padding=same\ngap g\ndense h units=2\nsoftmax_ce l\n";
    Graph g;
    char err[512];
    ck_assert_msg(graph_parse(&g, txt, strlen(txt), "t.arch", err, sizeof err) == 0, "%s", err);
    const Layer *c = &g.layers[1], *d = &g.layers[2];
    ck_assert_int_eq(c->out.h, 4);
    ck_assert_int_eq(c->a.conv.pt, 1);
    ck_assert_int_eq(c->a.conv.pb, 1);
    /* k=4, s=1: total 3 -> top 1, bottom 2 */
    ck_assert_int_eq(d->out.h, 4);
    ck_assert_int_eq(d->a.conv.pt, 1);
    ck_assert_int_eq(d->a.conv.pb, 2);
    graph_free(&g);
}
END_TEST

/* ---- the op registry ----------------------------------------------------------- */

/* Does msg hold word w, delimited by a non-identifier character on each side? */
static int has_word(const char *msg, const char *w)
{
    size_t n = strlen(w);
    for (const char *p = msg; (p = strstr(p, w)); p++) {
        int before = p == msg || !(p[-1] == '_' || (p[-1] >= 'a' && p[-1] <= 'z') || (p[-1] >= '0' && p[-1] <= '9'));
        char a = p[n];
        int after = !(a == '_' || (a >= 'a' && a <= 'z') || (a >= '0' && a <= '9'));
        if (before && after) return 1;
    }
    return 0;
}

/* Every OpKind has its row at its index, keywords are unique and found by
 * op_find, the input counts and keys are sane, activations and their names
 * agree, one row each is the input and the loss. */
START_TEST(registry_rows_consistent)
{
    int n_input = 0, n_loss = 0;
    for (int k = 0; k < OP_COUNT; k++) {
        const OpInfo *r = op_info((OpKind)k);
        ck_assert_int_eq(r->op, k);
        ck_assert_msg(r->keyword && r->keyword[0], "op %d has no keyword", k);
        ck_assert_ptr_eq(op_find(r->keyword), r);
        for (int j = 0; j < k; j++)
            ck_assert_msg(strcmp(op_info((OpKind)j)->keyword, r->keyword), "keyword '%s' twice", r->keyword);
        ck_assert_int_le(r->min_in, r->max_in);
        ck_assert_int_le(r->max_in, KILN_MAX_INPUTS);
        for (int a = 0; a < KILN_MAX_KEYS && r->keys[a].name; a++) {
            ck_assert_ptr_eq(op_key((OpKind)k, r->keys[a].name), &r->keys[a]);
            ck_assert_msg(strcmp(r->keys[a].name, "from"), "%s lists from= as a key", r->keyword);
            ck_assert_msg(r->keys[a].off + sizeof(int) <= sizeof(Layer), "%s.%s outside Layer",
                          r->keyword, r->keys[a].name);
        }
        int is_act = (r->traits & TRAIT_ACTIVATION) != 0;
        ck_assert_msg(is_act == (r->act != ACTK_NONE), "%s: activation trait and act disagree", r->keyword);
        if (is_act) ck_assert_str_eq(act_name(r->act), r->keyword);
        n_input += (r->traits & TRAIT_INPUT) != 0;
        n_loss += (r->traits & TRAIT_LOSS) != 0;
        if (r->traits & TRAIT_INPUT) ck_assert_int_eq(r->max_in, 0);
        else ck_assert_int_ge(r->min_in, 1);
    }
    ck_assert_int_eq(n_input, 1);
    ck_assert_int_eq(n_loss, 1);
    ck_assert_str_eq(act_name(ACTK_NONE), "none");
}
END_TEST

/* The unknown-op message names every keyword of the table; an unknown key's
 * message names every key of its op's row. */
START_TEST(registry_messages_list_the_table)
{
    const char *txt = "input in size=8x8x3\nconvolution c filters=4 kernel=3\n";
    Graph g;
    char err[1024];
    ck_assert_int_eq(graph_parse(&g, txt, strlen(txt), "t.arch", err, sizeof err), 2);
    for (int k = 0; k < OP_COUNT; k++)
        ck_assert_msg(has_word(err, op_info((OpKind)k)->keyword), "'%s' lacks '%s'", err,
                      op_info((OpKind)k)->keyword);
    for (int k = 1; k < OP_COUNT; k++) {
        const OpInfo *r = op_info((OpKind)k);
        char line[256];
        snprintf(line, sizeof line, "input in size=8x8x3\n%s x nokey=1\n", r->keyword);
        ck_assert_int_eq(graph_parse(&g, line, strlen(line), "t.arch", err, sizeof err), 2);
        ck_assert_msg(strstr(err, "unknown key 'nokey'") && has_word(err, "from"), "%s", err);
        for (int a = 0; a < KILN_MAX_KEYS && r->keys[a].name; a++)
            ck_assert_msg(has_word(err, r->keys[a].name), "'%s' lacks key '%s'", err, r->keys[a].name);
    }
}
END_TEST

/* The rows' defaults reach the layers (Keras's values), required keys are
 * refused when missing, and layer_has_bias reads each op's own bias key. */
START_TEST(registry_defaults_and_bias)
{
    const char *txt = "input in size=8x8x3\nconv c filters=4 kernel=3\nbn b\nmaxpool m\n"
                      "dwconv d kernel=1 bias=false\ndense h units=2\nsoftmax_ce l\n";
    Graph g;
    char err[512];
    ck_assert_msg(graph_parse(&g, txt, strlen(txt), "t.arch", err, sizeof err) == 0, "%s", err);
    const Layer *c = &g.layers[1], *b = &g.layers[2], *m = &g.layers[3], *d = &g.layers[4];
    ck_assert_int_eq(c->a.conv.sh, 1);
    ck_assert_int_eq(c->a.conv.sw, 1);
    ck_assert_int_eq(c->a.conv.pad_mode, PAD_VALID);
    ck_assert(layer_has_bias(c));
    ck_assert_float_eq(b->a.bn.eps, 1e-3f);
    ck_assert_float_eq(b->a.bn.momentum, 0.99f);
    ck_assert_int_eq(m->a.conv.kh, 2);
    ck_assert_int_eq(m->a.conv.sw, 2);
    ck_assert(!layer_has_bias(m));
    ck_assert_int_eq(m->n_params, 0);
    ck_assert(!layer_has_bias(d));
    ck_assert_int_eq(d->n_params, 1);
    ck_assert(layer_has_bias(&g.layers[5]));
    ck_assert_int_eq(g.layers[5].n_params, 2);
    ck_assert_float_eq(g.layers[0].a.input.scale, 1.0f);
    ck_assert_float_eq(g.layers[0].a.input.std[3], 1.0f);
    graph_free(&g);
    const char *missing = "input in size=8x8x3\nconv c kernel=3\n";
    ck_assert_int_eq(graph_parse(&g, missing, strlen(missing), "t.arch", err, sizeof err), 2);
    ck_assert_msg(strstr(err, "conv needs filters=N"), "%s", err);
}
END_TEST

/* ---- bad files ---------------------------------------------------------------- */

typedef struct {
    const char *what;
    const char *text;
    int line;             /* expected line in the message */
    const char *needle;   /* expected words in the message */
} BadCase;

static const BadCase BAD[] = {
    {"unknown op", "input in size=8x8x3\nconvolution c filters=4 kernel=3\n", 2, "unknown op 'convolution'"},
    {"missing input", "input in size=8x8x3\nconv c filters=4 kernel=3\nadd a from=c,nothere\n", 3, "unknown input 'nothere'"},
    {"shape mismatch at add", "input in size=8x8x3\nconv c filters=4 kernel=3 padding=same\n"
     "conv d filters=5 kernel=3 padding=same from=in\nadd a from=c,d\n", 4, "add of mismatched shapes"},
    {"negative channels", "input in size=8x8x3\nconv c filters=-4 kernel=3\n", 2, "filters must be positive"},
    {"kernel larger than input", "input in size=4x4x3\nconv c filters=4 kernel=5\n", 2, "larger than its input"},
    {"non-number", "input in size=8x8x3\nconv c filters=four kernel=3\n", 2, "expected an integer for filters"},
    {"CRLF", "input in size=8x8x3\r\nconv c filters=4 kernel=3\r\n", 1, "CRLF"},
    {"unknown key", "input in size=8x8x3\nconv c filters=4 kernel=3 dilation=2\n", 2, "unknown key 'dilation'"},
    {"duplicate name", "input in size=8x8x3\nconv c filters=4 kernel=3\nrelu c\n", 3, "defined twice"},
    {"bad size", "input in size=8x8\n", 1, "expected size=HxWxC"},
    {"loss not last", "input in size=8x8x3\ngap g\nsoftmax_ce l\nrelu r\n", 4, "softmax_ce must be the last"},
    {"no loss", "input in size=8x8x3\ngap g\n", 2, "last layer must be softmax_ce"},
    {"mul needs 1x1xC", "input in size=8x8x3\nconv c filters=4 kernel=1\nmul m from=c,c\n", 3, "must be 1x1x4"},
    {"empty key", "input in size=8x8x3\nconv c filters=4 kernel=1 =1\n", 2, "empty key in '=1'"},
    {"empty key, key-less op", "input in size=8x8x3\nrelu r =x\n", 2, "empty key in '=x'"},
    {"duplicate key", "input in size=8x8x3\nconv c filters=4 kernel=1 filters=8\n", 2,
     "key 'filters' given twice"},
    {"duplicate from", "input in size=8x8x3\nrelu r from=in from=in\n", 2, "key 'from' given twice"},
    {"filters beyond the range", "input in size=8x8x3\nconv c filters=1073741823 kernel=1\n", 2,
     "filters out of range (1..1000000000), got '1073741823'"},
    {"scale beyond a float", "input in size=8x8x3 scale=1e300\n", 1, "expected a number for scale"},
    {"UTF-8 byte order mark", "\xef\xbb\xbfinput in size=8x8x3\n", 1, "UTF-8 byte order mark"},
};

START_TEST(bad_file_parse)
{
    const BadCase *bc = &BAD[_i];
    Graph g;
    char err[1024], want[64];
    int rc = graph_parse(&g, bc->text, strlen(bc->text), "bad.arch", err, sizeof err);
    ck_assert_msg(rc == 2, "%s: expected rc 2, got %d", bc->what, rc);
    snprintf(want, sizeof want, "bad.arch:%d:", bc->line);
    ck_assert_msg(strstr(err, want) == err, "%s: message '%s' does not start with '%s'", bc->what, err, want);
    ck_assert_msg(strstr(err, bc->needle) != NULL, "%s: message '%s' lacks '%s'", bc->what, err, bc->needle);
}
END_TEST

START_TEST(overlong_line)
{
    char *txt = malloc(3000);
    strcpy(txt, "input in size=8x8x3 ");
    size_t n = strlen(txt);
    memset(txt + n, 'x', 2000);
    strcpy(txt + n + 2000, "\n");
    Graph g;
    char err[1024];
    ck_assert_int_eq(graph_parse(&g, txt, strlen(txt), "long.arch", err, sizeof err), 2);
    ck_assert_msg(strstr(err, "long.arch:1:") && strstr(err, "longer than"), "%s", err);
    free(txt);
}
END_TEST

/* A FIFO with no writer is refused at once, not waited on (the tcase's
 * timeout bounds the wait if it is not). */
START_TEST(fifo_refused)
{
    char dir[] = "/tmp/kiln-fifo-XXXXXX", path[64], err[1024];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/pipe.arch", dir);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    Graph g;
    int rc = graph_load(&g, path, err, sizeof err);
    unlink(path);
    rmdir(dir);
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(err, path) && strstr(err, "not a regular file"), "%s", err);
}
END_TEST

/* Run `kiln plan --arch FILE` and return its exit code; stderr into err. */
static int run_plan(const char *file, char *err, size_t errlen)
{
    char errfile[] = "/tmp/kiln-test-err-XXXXXX";
    int fd = mkstemp(errfile);
    ck_assert_int_ge(fd, 0);
    close(fd);
    /* timeout: a kiln that hangs must not outlive the test */
    int rc = kiln_cmd(30, NULL, errfile, "plan --arch '%s'", file);
    FILE *f = fopen(errfile, "r");
    size_t r = f ? fread(err, 1, errlen - 1, f) : 0;
    err[r] = 0;
    if (f) fclose(f);
    unlink(errfile);
    return rc;
}

START_TEST(bad_file_cli_exit_2)
{
    const BadCase *bc = &BAD[_i];
    char path[] = "/tmp/kiln-bad-XXXXXX", err[2048], want[128];
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq((int)write(fd, bc->text, strlen(bc->text)), (int)strlen(bc->text));
    close(fd);
    int rc = run_plan(path, err, sizeof err);
    snprintf(want, sizeof want, "%s:%d:", path, bc->line);
    unlink(path);
    ck_assert_msg(rc == 2, "%s: exit %d, stderr '%s'", bc->what, rc, err);
    ck_assert_msg(strstr(err, want) != NULL, "%s: stderr '%s' lacks '%s'", bc->what, err, want);
}
END_TEST

START_TEST(missing_file_cli_exit_2)
{
    char err[1024];
    ck_assert_int_eq(run_plan("/nonexistent/x.arch", err, sizeof err), 2);
    ck_assert_msg(strstr(err, "/nonexistent/x.arch") != NULL, "%s", err);
}
END_TEST

START_TEST(good_file_cli_exit_0)
{
    char err[1024];
    ck_assert_msg(run_plan(tiny_path, err, sizeof err) == 0, "%s", err);
}
END_TEST

Suite *test_suite(void)
{
    Suite *s = suite_create("arch");
    TCase *tc = tcase_create("arch");
    tcase_add_unchecked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, tiny_shapes_and_counts);
    tcase_add_test(tc, same_padding_follows_tensorflow);
    tcase_add_test(tc, registry_rows_consistent);
    tcase_add_test(tc, registry_messages_list_the_table);
    tcase_add_test(tc, registry_defaults_and_bias);
    int nbad = (int)(sizeof BAD / sizeof BAD[0]);
    tcase_add_loop_test(tc, bad_file_parse, 0, nbad);
    tcase_add_test(tc, overlong_line);
    tcase_add_test(tc, fifo_refused);
    tcase_add_loop_test(tc, bad_file_cli_exit_2, 0, nbad);
    tcase_add_test(tc, missing_file_cli_exit_2);
    tcase_add_test(tc, good_file_cli_exit_0);
    suite_add_tcase(s, tc);
    return s;
}
