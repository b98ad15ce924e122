/* tools/kiln/cmd_common.c — option helpers shared by the subcommands. Every
 * number goes through runtime/numbers.h (the whole string, range-checked
 * before it is converted, so no value (inf, nan, 1e30) reaches an
 * out-of-range cast). */
#include "tools/kiln/cmds.h"

#include "runtime/strategy.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void model_options_default(ModelOptions *m)
{
    memset(m, 0, sizeof *m);
    m->batch = 32;
    m->fuse = 1;
    m->fold = 1;
}

int model_option(ModelOptions *m, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    const char *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    if (!strcmp(a, "--no-fuse")) { m->fuse = 0; return 1; }
    if (!strcmp(a, "--no-fold")) { m->fold = 0; return 1; }
    if (strcmp(a, "--arch") && strcmp(a, "--freeze-until") && strcmp(a, "--batch") && strcmp(a, "--bn") &&
        strcmp(a, "--input-size"))
        return 0;
    if (!v) { fprintf(stderr, "kiln: %s needs a value\n", a); return -1; }
    (*i)++;
    if (!strcmp(a, "--arch")) m->arch = v;
    else if (!strcmp(a, "--freeze-until")) m->freeze_until = v;
    else if (!strcmp(a, "--bn")) {
        if (strcmp(v, "train") && strcmp(v, "infer") && strcmp(v, "frozen")) {
            fprintf(stderr, "kiln: --bn takes train, infer or frozen, not '%s'\n", v);
            return -1;
        }
        m->bn = v;
    } else if (!strcmp(a, "--input-size")) {
        if (parse_hw_arg(v, &m->input_h, &m->input_w)) {
            fprintf(stderr, "kiln: --input-size takes HxW (or N), 1..4096 pixels, not '%s'\n", v);
            return -1;
        }
    } else if (parse_int_arg(v, &m->batch) || m->batch < 1 || m->batch > 65536) {
        fprintf(stderr, "kiln: --batch takes an integer 1..65536, not '%s'\n", v);
        return -1;
    }
    return 1;
}

int model_load(const ModelOptions *m, Graph *g)
{
    char err[1024];
    if (!m->arch) { fprintf(stderr, "kiln: --arch FILE is required\n"); return 2; }
    int rc = graph_load(g, m->arch, err, sizeof err);
    if (rc) { fprintf(stderr, "kiln: %s\n", err); return rc; }
    if (m->input_h && (rc = graph_set_input_size(g, m->input_h, m->input_w, err, sizeof err))) {
        fprintf(stderr, "kiln: %s: --input-size %dx%d: %s\n", m->arch, m->input_h, m->input_w, err);
        graph_free(g);
        return rc;
    }
    BnMode bm = !m->bn || !strcmp(m->bn, "train") ? BN_TRAIN : !strcmp(m->bn, "infer") ? BN_INFER : BN_FROZEN;
    graph_flags_all(g, 1, bm);
    if (m->freeze_until && graph_freeze_until(g, m->freeze_until)) {
        fprintf(stderr, "kiln: %s: --freeze-until: no layer named '%s'\n", m->arch, m->freeze_until);
        graph_free(g);
        return 2;
    }
    return 0;
}

int spec_option(TrainSpec *t, int argc, char **argv, int *i)
{
    static const char *const KEYS[] = {"--epochs", "--batch", "--lr", "--momentum", "--wd", "--patience",
        "--plateau-patience", "--plateau-factor", "--min-lr", "--warmup-epochs", "--warmup-start",
        "--finetune-factor", "--bn", "--lr-groups", "--layer-decay", "--depth-groups", "--on-diverge",
        "--max-rollbacks", "--seed", NULL};
    const char *a = argv[*i];
    int k = 0;
    while (KEYS[k] && strcmp(KEYS[k], a)) k++;
    if (!KEYS[k]) return 0;
    const char *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    if (!v) { fprintf(stderr, "kiln: %s needs a value\n", a); return -1; }
    (*i)++;
    int bad = 0;
    if (!strcmp(a, "--epochs")) bad = parse_int_arg(v, &t->max_epochs) || t->max_epochs < 1;
    else if (!strcmp(a, "--batch")) bad = parse_int_arg(v, &t->batch) || t->batch < 1 || t->batch > 65536;
    else if (!strcmp(a, "--lr")) bad = parse_float_arg(v, &t->lr) || !(t->lr > 0);
    else if (!strcmp(a, "--momentum")) bad = parse_float_arg(v, &t->momentum) || !(t->momentum >= 0 && t->momentum < 1);
    else if (!strcmp(a, "--wd")) bad = parse_float_arg(v, &t->weight_decay) || !(t->weight_decay >= 0);
    else if (!strcmp(a, "--patience")) bad = parse_int_arg(v, &t->patience) || t->patience < 0;
    else if (!strcmp(a, "--plateau-patience")) bad = parse_int_arg(v, &t->plateau_patience) || t->plateau_patience < 0;
    else if (!strcmp(a, "--plateau-factor")) bad = parse_float_arg(v, &t->plateau_factor) || !(t->plateau_factor > 0 && t->plateau_factor < 1);
    else if (!strcmp(a, "--min-lr")) bad = parse_float_arg(v, &t->min_lr) || !(t->min_lr >= 0);
    else if (!strcmp(a, "--warmup-epochs")) bad = parse_int_arg(v, &t->warmup_epochs) || t->warmup_epochs < 0;
    else if (!strcmp(a, "--warmup-start")) bad = parse_float_arg(v, &t->warmup_start) || !(t->warmup_start > 0);
    else if (!strcmp(a, "--finetune-factor")) bad = parse_float_arg(v, &t->finetune_factor) || !(t->finetune_factor > 0);
    else if (!strcmp(a, "--bn")) {
        t->bn_override = !strcmp(v, "train") ? BN_TRAIN : !strcmp(v, "infer") ? BN_INFER : !strcmp(v, "frozen") ? BN_FROZEN : -1;
        bad = t->bn_override < 0;
    } else if (!strcmp(a, "--lr-groups")) {
        bad = strlen(v) >= sizeof t->lr_groups;
        if (!bad) strcpy(t->lr_groups, v);
    } else if (!strcmp(a, "--layer-decay")) bad = parse_float_arg(v, &t->layer_decay) || !(t->layer_decay > 0 && t->layer_decay <= 1);
    else if (!strcmp(a, "--depth-groups")) bad = parse_int_arg(v, &t->n_depth_groups) || t->n_depth_groups < 1 || t->n_depth_groups > KILN_MAX_GROUPS;
    else if (!strcmp(a, "--on-diverge")) {
        bad = strcmp(v, "stop") && strcmp(v, "rollback");
        t->on_diverge = !strcmp(v, "rollback") ? DIVERGE_ROLLBACK : DIVERGE_STOP;
    } else if (!strcmp(a, "--max-rollbacks")) bad = parse_int_arg(v, &t->max_rollbacks) || t->max_rollbacks < 0;
    else if (!strcmp(a, "--seed")) {
        int sd;
        bad = parse_int_arg(v, &sd) || sd < 0;
        if (!bad) t->seed = (uint64_t)sd;
    }
    if (bad) { fprintf(stderr, "kiln: bad value '%s' for %s\n", v, a); return -1; }
    return 1;
}

void arch_base_name(char *buf, size_t n, const char *arch)
{
    const char *b = strrchr(arch, '/');
    b = b ? b + 1 : arch;
    snprintf(buf, n, "%.*s", (int)strcspn(b, "."), b);
}

int default_weights(char *buf, size_t n, const char *arch)
{
    char base[256];
    struct stat st;
    arch_base_name(base, sizeof base, arch);
    snprintf(buf, n, "weights/%s.safetensors", base);
    return stat(buf, &st) == 0;
}
