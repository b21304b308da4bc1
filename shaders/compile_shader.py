#!/usr/bin/env python3
"""Compiles one GLSL compute shader to SPIR-V and validates it.

usage: compile_shader.py GLSLANG SPIRV_VAL INPUT OUTPUT DEPFILE [-DNAME=VALUE ...]
       compile_shader.py --probe GLSLANG SPIRV_VAL WORKDIR

Runs glslangValidator (target Vulkan 1.1, SPIR-V 1.3) with a depfile so that an
edited #include rebuilds only the shaders using it, then spirv-val.  A shader
that fails either step leaves no output behind.  --probe checks at configure
time that this glslang knows the extensions the shaders need.
"""
import os
import subprocess
import sys

TARGET = 'vulkan1.1'

PROBE = """#version 450
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_buffer_reference_uvec2 : require
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint N = 8;
layout(buffer_reference, std430, buffer_reference_align = 4) buffer Words { uint w[]; };
layout(push_constant) uniform Push { uvec2 a; } pc;
shared uint s[N];
void main() { s[0] = 1u; Words(pc.a).w[gl_LocalInvocationID.x] = s[0]; }
"""


def run(cmd):
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return res.returncode, res.stdout


def compile_one(glslang, spirv_val, src, out, dep, defines):
    rc, log = run([glslang, '-V', '--target-env', TARGET, *defines, '--depfile', dep, src, '-o', out])
    if rc != 0:
        sys.stderr.write(log)
        for p in (out, dep):
            if os.path.exists(p):
                os.remove(p)
        return 1
    rc, log = run([spirv_val, '--target-env', TARGET, out])
    if rc != 0:
        sys.stderr.write('spirv-val rejected %s (%s):\n%s' % (out, ' '.join(defines), log))
        os.remove(out)
        return 1
    return 0


def probe(glslang, spirv_val, workdir):
    os.makedirs(workdir, exist_ok=True)
    src = os.path.join(workdir, 'probe.comp')
    with open(src, 'w') as f:
        f.write(PROBE)
    out = os.path.join(workdir, 'probe.spv')
    rc = compile_one(glslang, spirv_val, src, out, out + '.d', [])
    print('ok' if rc == 0 else 'fail')
    return 0


def main(argv):
    if len(argv) >= 2 and argv[1] == '--probe':
        return probe(argv[2], argv[3], argv[4])
    if len(argv) < 6:
        sys.stderr.write(__doc__)
        return 2
    return compile_one(argv[1], argv[2], argv[3], argv[4], argv[5], argv[6:])


if __name__ == '__main__':
    sys.exit(main(sys.argv))
