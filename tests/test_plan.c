/* tests/test_plan.c — the static plan of archs/tiny.arch: exact gradient and
 * optimizer bytes with nothing, the first half, and all but the head frozen;
 * forward-only frozen prefixes; the traffic floor by hand; and that no two
 * tensors that are alive at the same step share memory, in every
 * configuration. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/plan.h"
#include "tests/suite_main.h"

static Graph g;

static void load(void)
{
    const char *src = getenv("KILN_SOURCE_DIR");
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/archs/tiny.arch", src ? src : ".");
    ck_assert_msg(graph_load(&g, path, err, sizeof err) == 0, "%s", err);
}

static void plan_with(Plan *p, const char *freeze, int fuse, int batch)
{
    char err[256];
    graph_flags_all(&g, 1, BN_TRAIN);
    if (freeze) ck_assert_int_eq(graph_freeze_until(&g, freeze), 0);
    PlanOptions po = {.batch = batch, .fuse = fuse, .fold = 1};
    ck_assert_msg(plan_build(p, &g, &po, err, sizeof err) == 0, "%s", err);
}

/* Learnable parameters of tiny.arch up to and including b1_add, by hand:
 * stem 432, stem_bn 32, b1_dw 144, b1_dw_bn 32, b1_se_reduce 68,
 * b1_se_expand 80, b1_proj 256, b1_proj_bn 32. */
#define TINY_ALL 5880
#define TINY_FIRST_HALF 1076
#define TINY_HEAD 132

START_TEST(gradient_and_optimizer_bytes)
{
    load();
    Plan all, half, head;
    plan_with(&all, NULL, 1, 32);
    plan_with(&half, "b1_add", 1, 32);
    plan_with(&head, "drop", 1, 32);
    size_t a[6], h[6], d[6];
    plan_arena_bytes(&all, a);
    plan_arena_bytes(&half, h);
    plan_arena_bytes(&head, d);
    ck_assert_int_eq((int)a[1], TINY_ALL * 4);
    ck_assert_int_eq((int)a[2], TINY_ALL * 4);
    ck_assert_int_eq((int)h[1], (TINY_ALL - TINY_FIRST_HALF) * 4);
    ck_assert_int_eq((int)h[2], (TINY_ALL - TINY_FIRST_HALF) * 4);
    ck_assert_int_eq((int)d[1], TINY_HEAD * 4);
    ck_assert_int_eq((int)d[2], TINY_HEAD * 4);
    /* smaller by exactly the frozen parameters' share */
    ck_assert_int_eq((int)(a[1] - h[1]), TINY_FIRST_HALF * 4);
    ck_assert_int_eq((int)(a[1] - d[1]), (TINY_ALL - TINY_HEAD) * 4);
    /* the parameter arena is the same whatever is frozen */
    ck_assert_int_eq((int)a[0], (int)h[0]);
    ck_assert_int_eq((int)a[0], (TINY_ALL + 160) * 4);
    /* frozen layers keep fewer activations (the forward peak can bound
     * both frozen plans alike) */
    ck_assert_int_lt((int)h[3], (int)a[3]);
    ck_assert_int_le((int)d[3], (int)h[3]);
    plan_free(&all); plan_free(&half); plan_free(&head);
    graph_free(&g);
}
END_TEST

START_TEST(frozen_prefix_is_forward_only)
{
    load();
    Plan p;
    plan_with(&p, "drop", 1, 8);
    int bwd = 0, upd = 0;
    for (int s = 0; s < p.n_steps; s++) {
        if (p.steps[s].kind == STEP_BWD) {
            bwd++;
            ck_assert_str_eq(g.layers[p.nodes[p.steps[s].node].layer].name, "head");
        }
        upd += p.steps[s].kind == STEP_UPDATE;
    }
    ck_assert_int_eq(bwd, 1);
    ck_assert_int_eq(upd, 1);
    /* every frozen BN after a frozen conv is folded */
    int folds = 0;
    for (int i = 0; i < p.n_nodes; i++) folds += p.nodes[i].fold;
    ck_assert_int_eq(folds, 4);
    /* no gradient tensor other than the head's input gradient... none at all:
     * the head's input has no trainable ancestor, so only dlogits exists */
    int grads = 0;
    for (int t = 0; t < p.n_tensors; t++) grads += p.tensors[t].kind == T_GRAD;
    ck_assert_int_eq(grads, 1);
    plan_free(&p);
    graph_free(&g);
}
END_TEST

/* Twice the floats of every activation-arena tensor (written once, read once). */
static size_t tensor_traffic_floats(const Plan *p)
{
    size_t f = 0;
    for (int t = 0; t < p->n_tensors; t++) f += p->tensors[t].floats;
    return 2 * f;
}

/* The traffic floor of tiny.arch by hand, per its definition in plan.h.
 * Parameter floats per layer: stem 432, stem_bn 64 (gamma, beta, mean, var),
 * b1_dw 144, b1_dw_bn 64, b1_se_reduce 68, b1_se_expand 80, b1_proj 256,
 * b1_proj_bn 64, b2_conv 4608, b2_bn 128, head 132: 6040 = 5880 learnable
 * plus 160 statistics.
 *  - all trainable, BN on batch statistics (no fold): every node has a
 *    backward step, so 6040 floats read twice, and 5880 trainable x 6.
 *  - all but the head frozen (BNs frozen, four folds): the forward reads the
 *    folded copies, kernel + bias, stem 432+16, b1_dw 144+16, b1_proj 256+16,
 *    b2_conv 4608+32, and the unfolded SE convs 68 + 80 and head 132: 5800;
 *    only the head has a backward step (132 again); 132 trainable x 6. */
#define TINY_PARAMS_ALL 6040
#define TINY_FOLDED_FWD 5800

START_TEST(traffic_floor_by_hand)
{
    load();
    Plan all, head, unf;
    plan_with(&all, NULL, 1, 32);
    plan_with(&head, "drop", 1, 32);
    plan_with(&unf, NULL, 0, 32);
    size_t ta = tensor_traffic_floats(&all), th = tensor_traffic_floats(&head);
    ck_assert_uint_eq(plan_traffic_bytes(&all), 4 * (ta + 2 * TINY_PARAMS_ALL + 6 * TINY_ALL));
    ck_assert_uint_eq(plan_traffic_bytes(&head), 4 * (th + TINY_FOLDED_FWD + TINY_HEAD + 6 * TINY_HEAD));
    /* unfused: the same parameter traffic, more tensors */
    ck_assert_uint_eq(plan_traffic_bytes(&unf),
                      4 * (tensor_traffic_floats(&unf) + 2 * TINY_PARAMS_ALL + 6 * TINY_ALL));
    ck_assert_uint_gt(plan_traffic_bytes(&unf), plan_traffic_bytes(&all));
    /* freezing all but the head saves 24 bytes per frozen trainable float,
     * the backward's parameter reads, the folds' difference and the tensors
     * it no longer keeps */
    ck_assert_uint_eq(plan_traffic_bytes(&all) - plan_traffic_bytes(&head),
                      24 * (TINY_ALL - TINY_HEAD) + 4 * (TINY_PARAMS_ALL - TINY_HEAD) +
                          4 * (TINY_PARAMS_ALL - TINY_FOLDED_FWD) + 4 * (ta - th));
    /* the batch scales only the tensors */
    Plan small;
    plan_with(&small, NULL, 1, 1);
    ck_assert_uint_eq(plan_traffic_bytes(&small),
                      4 * (tensor_traffic_floats(&small) + 2 * TINY_PARAMS_ALL + 6 * TINY_ALL));
    plan_free(&all); plan_free(&head); plan_free(&unf); plan_free(&small);
    graph_free(&g);
}
END_TEST

/* No two tensors alive at one step overlap in the arena; all fit in it. */
static void check_disjoint(const Plan *p)
{
    for (int i = 0; i < p->n_tensors; i++) {
        const Tensor *a = &p->tensors[i];
        ck_assert_msg(a->offset + a->floats <= p->act_floats, "tensor %d outside the arena", i);
        for (int j = i + 1; j < p->n_tensors; j++) {
            const Tensor *b = &p->tensors[j];
            if (a->last < b->first || b->last < a->first) continue;
            int apart = a->offset + a->floats <= b->offset || b->offset + b->floats <= a->offset;
            ck_assert_msg(apart, "tensors %d [%d,%d] and %d [%d,%d] overlap in memory", i,
                          a->first, a->last, j, b->first, b->last);
        }
    }
}

START_TEST(live_tensors_never_share_memory)
{
    load();
    const char *freeze[] = {NULL, "b1_add", "drop", "stem_act"};
    for (int f = 0; f < 4; f++)
        for (int fuse = 0; fuse < 2; fuse++) {
            Plan p;
            plan_with(&p, freeze[f], fuse, 5);
            check_disjoint(&p);
            plan_free(&p);
        }
    graph_free(&g);
}
END_TEST

START_TEST(fusion_makes_fewer_steps_and_bytes)
{
    load();
    Plan f, u;
    plan_with(&f, NULL, 1, 32);
    plan_with(&u, NULL, 0, 32);
    ck_assert_int_lt(f.n_steps, u.n_steps);
    ck_assert_int_lt((int)f.act_floats, (int)u.act_floats);
    /* the fused stem absorbs its BN and activation */
    ck_assert_int_eq(f.nodes[f.layer_node[graph_find(&g, "stem_act")]].layer, graph_find(&g, "stem"));
    ck_assert_int_ne(u.nodes[u.layer_node[graph_find(&g, "stem_act")]].layer, graph_find(&g, "stem"));
    /* the projection absorbs the residual add */
    ck_assert_int_eq(f.nodes[f.layer_node[graph_find(&g, "b1_add")]].layer, graph_find(&g, "b1_proj"));
    plan_free(&f); plan_free(&u);
    graph_free(&g);
}
END_TEST

Suite *test_suite(void)
{
    Suite *s = suite_create("plan");
    TCase *tc = tcase_create("plan");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, gradient_and_optimizer_bytes);
    tcase_add_test(tc, frozen_prefix_is_forward_only);
    tcase_add_test(tc, live_tensors_never_share_memory);
    tcase_add_test(tc, fusion_makes_fewer_steps_and_bytes);
    tcase_add_test(tc, traffic_floor_by_hand);
    suite_add_tcase(s, tc);
    return s;
}
