/* tools/kiln/cmd_plan_json.c — `kiln plan --json`: the graph as JSON, the one
 * description of a network that the Python tools read (tools/kilnplan.py).
 *
 * Contract: one JSON object on stdout, keys always in this order:
 *   arch, file, input {layer, size [h,w,c], scale, mean [c], std [c]},
 *   head (the dense layer before the loss, or null),
 *   layers [ {name, op (the .arch keyword), inputs [names], output [h,w,c],
 *             attributes {the op's .arch keys with resolved values},
 *             params [ {name, role, shape, numel, learnable} ],
 *             flops, trainable, bn_mode} ],
 *   totals {layers, params, learnable, bn_statistics, flops}.
 * Attributes carry defaults filled in: kernel and stride as [h, w], padding
 * as written (same, valid, explicit) plus `pads` [top, bottom, left, right]
 * as resolved for this input size, bias as a boolean. A float is written as
 * the shortest decimal that reads back as the same float32, so a tool that
 * rounds it to float32 gets kiln's value exactly. Shapes and counts follow
 * the model options (--input-size, --num-classes, --freeze-until, --bn). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/kiln/cmds.h"

/* The shortest %.Ng (N = 6..9) of f that reads back as f. */
static json_t *jfloat(float f)
{
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if ((float)strtod(buf, NULL) == f) break;
    }
    return json_real(strtod(buf, NULL));
}

static json_t *jints(int n, const int *v)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

static json_t *jfloats(int n, const float *v)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, jfloat(v[i]));
    return a;
}

static json_t *jshape(Shape s)
{
    int d[3] = {s.h, s.w, s.c};
    return jints(3, d);
}

/* The windowed ops' keys: kernel, stride, padding (as written) and pads. */
static void window_attrs(json_t *o, const ConvAttr *c)
{
    static const char *MODE[] = {"valid", "same", "explicit"};
    int k[2] = {c->kh, c->kw}, s[2] = {c->sh, c->sw}, p[4] = {c->pt, c->pb, c->pl, c->pr};
    json_object_set_new(o, "kernel", jints(2, k));
    json_object_set_new(o, "stride", jints(2, s));
    json_object_set_new(o, "padding", json_string(MODE[c->pad_mode]));
    json_object_set_new(o, "pads", jints(4, p));
}

/* Layer l's .arch keys with their resolved values. One switch over the op
 * families, because each family keeps its keys in its own union member; an
 * op without keys has an empty object. */
static json_t *layer_attrs(const Layer *l)
{
    json_t *o = json_object();
    switch (l->op) {
    case OP_INPUT: {
        const InputAttr *in = &l->a.input;
        int size[3] = {in->h, in->w, in->c};
        json_object_set_new(o, "size", jints(3, size));
        json_object_set_new(o, "scale", jfloat(in->scale));
        json_object_set_new(o, "mean", jfloats(in->c, in->mean));
        json_object_set_new(o, "std", jfloats(in->c, in->std));
        break;
    }
    case OP_CONV: case OP_DWCONV: case OP_MAXPOOL:
        if (l->op == OP_CONV) json_object_set_new(o, "filters", json_integer(l->a.conv.filters));
        window_attrs(o, &l->a.conv);
        if (l->op != OP_MAXPOOL) json_object_set_new(o, "bias", json_boolean(l->a.conv.bias));
        break;
    case OP_ZEROPAD: {
        int p[4] = {l->a.pad.pt, l->a.pad.pb, l->a.pad.pl, l->a.pad.pr};
        json_object_set_new(o, "pad", jints(4, p));
        break;
    }
    case OP_BN:
        json_object_set_new(o, "eps", jfloat(l->a.bn.eps));
        json_object_set_new(o, "momentum", jfloat(l->a.bn.momentum));
        break;
    case OP_DENSE:
        json_object_set_new(o, "units", json_integer(l->a.dense.units));
        json_object_set_new(o, "bias", json_boolean(l->a.dense.bias));
        break;
    case OP_DROPOUT:
        json_object_set_new(o, "rate", jfloat(l->a.dropout.rate));
        break;
    default:
        break;
    }
    return o;
}

static json_t *param_json(const Param *p)
{
    static const char *ROLE[] = {"kernel", "depthwise_kernel", "bias", "gamma", "beta",
                                 "moving_mean", "moving_variance"};
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(p->name));
    json_object_set_new(o, "role", json_string(ROLE[p->role]));
    json_object_set_new(o, "shape", jints(p->ndim, p->dims));
    json_object_set_new(o, "numel", json_integer((json_int_t)p->numel));
    json_object_set_new(o, "learnable", json_boolean(p->learnable));
    return o;
}

static json_t *layer_json(const Graph *g, const Layer *l)
{
    json_t *o = json_object(), *ins = json_array(), *ps = json_array();
    json_object_set_new(o, "name", json_string(l->name));
    json_object_set_new(o, "op", json_string(op_info(l->op)->keyword));
    for (int k = 0; k < l->n_in; k++) json_array_append_new(ins, json_string(g->layers[l->in[k]].name));
    json_object_set_new(o, "inputs", ins);
    json_object_set_new(o, "output", jshape(l->out));
    json_object_set_new(o, "attributes", layer_attrs(l));
    for (int k = 0; k < l->n_params; k++) json_array_append_new(ps, param_json(&g->params[l->first_param + k]));
    json_object_set_new(o, "params", ps);
    json_object_set_new(o, "flops", json_integer((json_int_t)l->flops));
    json_object_set_new(o, "trainable", json_boolean(l->trainable));
    json_object_set_new(o, "bn_mode", json_string(bn_mode_name(l->bn_mode)));
    return o;
}

/* The whole document for g (see the contract above). */
static json_t *graph_json(const Graph *g)
{
    json_t *root = json_object(), *layers = json_array(), *tot = json_object();
    const InputAttr *in = &g->layers[0].a.input;
    json_t *input = json_object();
    json_object_set_new(input, "layer", json_string(g->layers[0].name));
    json_object_set_new(input, "size", jshape(g->layers[0].out));
    json_object_set_new(input, "scale", jfloat(in->scale));
    json_object_set_new(input, "mean", jfloats(in->c, in->mean));
    json_object_set_new(input, "std", jfloats(in->c, in->std));
    json_object_set_new(root, "arch", json_string(g->name));
    json_object_set_new(root, "file", json_string(g->path));
    json_object_set_new(root, "input", input);
    int h = graph_head(g);
    json_object_set_new(root, "head", h >= 0 ? json_string(g->layers[h].name) : json_null());
    for (int i = 0; i < g->n_layers; i++) json_array_append_new(layers, layer_json(g, &g->layers[i]));
    json_object_set_new(root, "layers", layers);
    json_object_set_new(tot, "layers", json_integer(g->n_layers));
    json_object_set_new(tot, "params", json_integer(g->n_params));
    json_object_set_new(tot, "learnable", json_integer((json_int_t)graph_learnable(g)));
    json_object_set_new(tot, "bn_statistics", json_integer((json_int_t)graph_bn_stats(g)));
    json_object_set_new(tot, "flops", json_integer((json_int_t)graph_flops(g)));
    json_object_set_new(root, "totals", tot);
    return root;
}

/* Write v compactly (one line, ", " and ": " separators); 0 or -1. */
static int dump_line(FILE *f, const json_t *v)
{
    return json_dumpf(v, f, JSON_PRESERVE_ORDER | JSON_ENCODE_ANY | JSON_REAL_PRECISION(9));
}

/* The document with one top-level key a line and one layer a line: valid
 * JSON that a person can also read and grep. */
int plan_json_print(FILE *f, const Graph *g)
{
    json_t *root = graph_json(g);
    int bad = fputs("{", f) == EOF;
    const char *key;
    json_t *v;
    const char *sep = "\n";
    json_object_foreach(root, key, v) {
        bad |= fprintf(f, "%s\"%s\": ", sep, key) < 0;
        if (json_is_array(v) && !strcmp(key, "layers")) {
            size_t i;
            json_t *l;
            bad |= fputs("[", f) == EOF;
            json_array_foreach(v, i, l) {
                bad |= fputs(i ? ",\n  " : "\n  ", f) == EOF;
                bad |= dump_line(f, l) != 0;
            }
            bad |= fputs("\n ]", f) == EOF;
        } else {
            bad |= dump_line(f, v) != 0;
        }
        sep = ",\n";
    }
    bad |= fputs("\n}\n", f) == EOF || fflush(f) != 0;
    json_decref(root);
    if (bad) fprintf(stderr, "kiln plan: cannot write the JSON to stdout\n");
    return bad ? 1 : 0;
}
