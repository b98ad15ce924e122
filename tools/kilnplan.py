"""tools/kilnplan.py — how the Python tools read a network: through
`kiln plan --json`, never by parsing .arch text themselves.

  import kilnplan                      # from a script in tools/ (sys.path[0])
  net = kilnplan.load('archs/efficientnet_lite0.arch', '--input-size', '64')
  net.params          # [(name, shape tuple, layer name, role)] in graph order
  net.metadata()      # the kiln.* safetensors metadata runtime/weights.h checks

Contract:
  - The kiln binary is $KILN, else $KILN_BIN (what ctest sets), else
    build/kiln under the repository root, else `kiln` on PATH; none of them:
    KilnPlanError saying how to build it.
  - load() runs `kiln plan --json --arch ARCH [OPTIONS]` and returns a Net;
    a refused arch or option raises KilnPlanError with kiln's own message
    (which names the file and line) and code 2; no kiln, or one that fails,
    code 1. A tool exits with e.code. The JSON's layout is described in
    tools/kiln/cmd_plan_json.c.
  - Needs only the standard library.
"""

import json
import os
import shutil
import struct
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class KilnPlanError(Exception):
    """No kiln binary (code 1), or kiln refused the arch or an option (code
    2, kiln's own exit code): the message says which."""

    def __init__(self, msg, code=2):
        super().__init__(msg)
        self.code = code


def kiln_binary():
    """The kiln program to run (see the contract above)."""
    for var in ('KILN', 'KILN_BIN'):
        v = os.environ.get(var)
        if v:
            if not os.access(v, os.X_OK):
                raise KilnPlanError('$%s is %s, which is not an executable file' % (var, v), 1)
            return v
    built = os.path.join(ROOT, 'build', 'kiln')
    if os.access(built, os.X_OK):
        return built
    found = shutil.which('kiln')
    if found:
        return found
    raise KilnPlanError('no kiln program: set $KILN, or build it (cmake -B build && cmake --build build '
                        '--target kiln in %s), or put kiln on PATH' % ROOT, 1)


def f32(v):
    """v rounded to float32 (what kiln holds)."""
    return struct.unpack('<f', struct.pack('<f', v))[0]


class Net:
    """One network as `kiln plan --json` describes it."""

    def __init__(self, doc):
        self.doc = doc
        self.name = doc['arch']
        self.path = doc['file']
        self.input = doc['input']
        self.head = doc['head']
        self.layers = doc['layers']
        self.totals = doc['totals']
        self.by_name = {l['name']: l for l in self.layers}
        self.op_of = {l['name']: l['op'] for l in self.layers}
        self.params = [(p['name'], tuple(p['shape']), l['name'], p['role'])
                       for l in self.layers for p in l['params']]

    def layer(self, name):
        return self.by_name[name]

    def metadata(self):
        """kiln.arch, kiln.input, kiln.scale, kiln.mean, kiln.std as kiln
        writes and checks them (float32 values, %.9g)."""
        g9 = lambda v: '%.9g' % f32(v)
        h, w, c = self.input['size']
        return {'kiln.arch': self.name, 'kiln.input': '%dx%dx%d' % (h, w, c),
                'kiln.scale': g9(self.input['scale']),
                'kiln.mean': ','.join(g9(v) for v in self.input['mean']),
                'kiln.std': ','.join(g9(v) for v in self.input['std'])}


def load(arch, *options):
    """The Net of `arch` under kiln plan's model options (--input-size HxW,
    --num-classes N, --freeze-until LAYER, --bn MODE)."""
    cmd = [kiln_binary(), 'plan', '--json', '--arch', arch] + [str(o) for o in options]
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        raise KilnPlanError('cannot run %s: %s' % (cmd[0], e.strerror or e), 1)
    if r.returncode != 0:
        msg = r.stderr.decode('utf-8', 'replace').strip()
        raise KilnPlanError(msg.replace('kiln plan: ', '').replace('kiln: ', '') or
                            '%s exited with %d' % (' '.join(cmd), r.returncode), 2 if r.returncode == 2 else 1)
    try:
        return Net(json.loads(r.stdout.decode('utf-8')))
    except (ValueError, KeyError) as e:
        raise KilnPlanError('%s printed no valid plan JSON (%s)' % (' '.join(cmd), e), 1)
