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
 * Attributes are the keys of the op's registry row, in its order, with
 * defaults filled in: pairs (kernel, stride) as [h, w], padding as written
 * (same, valid, explicit) plus `pads` [top, bottom, left, right] as resolved
 * for this input size, pad as [top, bottom, left, right], booleans (bias) as
 * true/false, per-channel values (mean, std) one per channel. A float is written as
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

/* The value of key k of layer l, resolved (defaults filled in by the
 * parser); padding also sets "pads" on o. Read through the row's KeyDef
 * (kind and offset), so an op's keys appear here without a case of their
 * own. */
static void key_json(json_t *o, const Layer *l, const KeyDef *k)
{
    static const char *MODE[] = {"valid", "same", "explicit"};
    const char *at = (const char *)l + k->off;
    const int *iv = (const int *)(const void *)at;
    const float *fv = (const float *)(const void *)at;
    json_t *v = NULL;
    switch (k->kind) {
    case KEY_SIZE: v = jints(3, iv); break;
    case KEY_COUNT: v = json_integer(iv[0]); break;
    case KEY_PAIR: v = jints(2, iv); break;
    case KEY_PADDING: {
        const ConvAttr *c = (const ConvAttr *)(const void *)at;
        int p[4] = {c->pt, c->pb, c->pl, c->pr};
        v = json_string(MODE[c->pad_mode]);
        json_object_set_new(o, k->name, v);
        json_object_set_new(o, "pads", jints(4, p));
        return;
    }
    case KEY_PAD: {
        const PadAttr *pa = (const PadAttr *)(const void *)at;
        int p[4] = {pa->pt, pa->pb, pa->pl, pa->pr};
        v = jints(4, p);
        break;
    }
    case KEY_BOOL: v = json_boolean(iv[0]); break;
    case KEY_NUMBER: case KEY_POSITIVE: case KEY_FRACTION: v = jfloat(fv[0]); break;
    case KEY_CHANNELS: case KEY_CHANNELS_POSITIVE: v = jfloats(l->out.c < 4 ? l->out.c : 4, fv); break;
    }
    json_object_set_new(o, k->name, v);
}

/* Layer l's .arch keys with their resolved values, in the row's order. */
static json_t *layer_attrs(const Layer *l)
{
    json_t *o = json_object();
    const OpInfo *row = op_info(l->op);
    for (int i = 0; i < KILN_MAX_KEYS && row->keys[i].name; i++) key_json(o, l, &row->keys[i]);
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
