/* tools/cmd_train.c — `kiln train`: load an arch and a data set, plan, train
 * on the CPU backend, print per-epoch loss and accuracy, then test accuracy
 * and the train time (loading and planning reported apart). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/dataset.h"
#include "runtime/params.h"
#include "runtime/train.h"
#include "tools/cmds.h"

static void train_usage(FILE *f)
{
    fprintf(f, "usage: kiln train --arch FILE --data SPEC [--epochs N] [--batch N] [--lr X]\n"
               "                  [--momentum X] [--wd X] [--seed N] [--per-class N]\n"
               "                  [--freeze-until LAYER] [--bn train|infer|frozen] [--no-fuse] [--no-fold]\n");
}

int cmd_train(int argc, char **argv)
{
    ModelOptions m;
    model_options_default(&m);
    const char *data = NULL;
    TrainConfig tc = {10, 0.01f, 0.9f, 0.0f, NULL, 0, 1};
    int per_class = 0, seed = 1;
    for (int i = 1; i < argc; i++) {
        int r = model_option(&m, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help")) { train_usage(stdout); return 0; }
        int bad = 0;
        if (!strcmp(a, "--data") && v) data = v;
        else if (!strcmp(a, "--epochs") && v) bad = parse_int_arg(v, &tc.epochs) || tc.epochs < 1;
        else if (!strcmp(a, "--lr") && v) bad = parse_float_arg(v, &tc.lr) || !(tc.lr > 0);
        else if (!strcmp(a, "--momentum") && v) bad = parse_float_arg(v, &tc.momentum) || !(tc.momentum >= 0 && tc.momentum < 1);
        else if (!strcmp(a, "--wd") && v) bad = parse_float_arg(v, &tc.weight_decay) || !(tc.weight_decay >= 0);
        else if (!strcmp(a, "--seed") && v) bad = parse_int_arg(v, &seed) || seed < 0;
        else if (!strcmp(a, "--per-class") && v) bad = parse_int_arg(v, &per_class) || per_class < 1;
        else {
            fprintf(stderr, "kiln train: unknown option or missing value '%s'\n", a);
            train_usage(stderr);
            return 2;
        }
        if (bad) { fprintf(stderr, "kiln train: bad value '%s' for %s\n", v, a); return 2; }
        i++;
    }
    if (!data) { fprintf(stderr, "kiln train: --data SPEC is required\n"); train_usage(stderr); return 2; }
    tc.seed = (uint64_t)seed;

    double t0 = kiln_now();
    Graph g;
    int rc = model_load(&m, &g);
    if (rc) return rc;
    const InputAttr *in = &g.layers[0].a.input;
    Dataset ds;
    DataOptions dopt = {in->h, in->w, in->c, per_class, (uint64_t)seed};
    char err[1024];
    if ((rc = dataset_open(&ds, data, &dopt, err, sizeof err))) {
        fprintf(stderr, "kiln train: %s\n", err);
        graph_free(&g);
        return rc;
    }
    int K = g.layers[g.n_layers - 1].out.c;
    if (ds.num_classes > K) {
        fprintf(stderr, "kiln train: %s has %d classes but %s's head has %d outputs\n", data,
                ds.num_classes, m.arch, K);
        dataset_free(&ds); graph_free(&g);
        return 2;
    }
    Split sp;
    Plan p;
    PlanOptions po = {.batch = m.batch, .fuse = m.fuse, .fold = m.fold};
    Backend *be = NULL;
    float *params = NULL;
    rc = 1;
    if (dataset_split(&ds, (uint64_t)seed, &sp)) { fprintf(stderr, "kiln train: out of memory\n"); goto out_ds; }
    if (plan_build(&p, &g, &po, err, sizeof err)) { fprintf(stderr, "kiln train: %s\n", err); goto out_split; }
    if (!(be = cpu_backend_create(&p, err, sizeof err))) { fprintf(stderr, "kiln train: %s\n", err); goto out_plan; }
    if (!(params = malloc(sizeof(float) * (p.param_floats + 1)))) { fprintf(stderr, "kiln train: out of memory\n"); goto out_be; }
    params_init(&p, params, (uint64_t)seed, 0, g.n_layers - 1);
    be->write_params(be, params);
    Preproc pp = {in->scale, {in->mean[0], in->mean[1], in->mean[2], in->mean[3]},
                  {in->std[0], in->std[1], in->std[2], in->std[3]}};
    printf("data %s: %d images %dx%dx%d, %d classes; split train %d / val %d / test %d\n", ds.source,
           ds.n, ds.h, ds.w, ds.c, ds.num_classes, sp.n_train, sp.n_val, sp.n_test);
    printf("model %s: %zu learnable parameters (%zu trainable), plan %zu bytes, fusion %s, backend %s\n",
           g.name, graph_learnable(&g), p.trainable_floats, plan_bytes(&p), m.fuse ? "on" : "off", be->name);
    printf("setup %.2fs (loading, planning)\n", kiln_now() - t0);
    fflush(stdout);
    TrainResult res;
    if (train_run(be, &ds, &sp, &pp, &tc, &res, stdout)) { fprintf(stderr, "kiln train: out of memory\n"); goto out_params; }
    if (res.diverged)
        printf("result: DIVERGED at epoch %d step %d (lr %g); test_acc %.4f of the last good weights, train time %.2fs\n",
               res.diverged_epoch, res.diverged_step, tc.lr, res.test_acc, res.seconds);
    else
        printf("result: test_acc %.4f  val_acc %.4f  train_acc %.4f  epochs %d  train time %.2fs\n",
               res.test_acc, res.val_acc, res.train_acc, res.epochs, res.seconds);
    rc = res.diverged ? 1 : 0;
out_params:
    free(params);
out_be:
    be->destroy(be);
out_plan:
    plan_free(&p);
out_split:
    split_free(&sp);
out_ds:
    dataset_free(&ds);
    graph_free(&g);
    return rc;
}
