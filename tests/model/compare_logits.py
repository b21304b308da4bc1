#!/usr/bin/env python3
"""Compares the C engine's logits with the numpy reference (ref_numpy.py).

Usage: compare_logits.py SMOLLM_CLI [MODEL]
       compare_logits.py SMOLLM_CLI --synthetic TEST_MODEL_ENGINE
MODEL defaults to $FASA_MODEL.  With --synthetic the tiny random model
written by `test_model_engine --write-synthetic` is used instead.  Exits 77 (skip) when the model file or the
test-only Python packages (numpy, gguf) are missing.

For each fixed prompt the C engine runs twice, as one dense prefill and as
one decode step per token (the fm_attn_ops path), both with logits for every
position.  Every row must match the float64 reference:
  - the same arg-max token, unless the reference's top two are within 1e-3;
  - max |C - ref| <= ABS_TOL (both dequantise the same weights to f32/f64,
    so the only differences are f32 rounding over 30 layers).
"""
import os
import subprocess
import sys
import tempfile

SKIP = 77
ABS_TOL = 2e-3        # logits are O(30); measured max |diff| is ~5e-5 (2026-11-28)
PROMPTS = [
    "The capital of France is",
    "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy disposition,",
    "In 1815, 3 + 4 = 7; she said: \"I'm sure it's 12:30.\"",
]


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr}")
    return r.stdout


def c_logits(cli, model, ids, extra, vocab, tmp):
    out = os.path.join(tmp, "c.f32")
    run([cli, "logits", model, "--ids", ",".join(map(str, ids)), "--out", out, "--all"] + extra)
    return np.fromfile(out, dtype="<f4").reshape(len(ids), vocab).astype(np.float64)


def check(name, c, ref):
    diff = np.abs(c - ref).max()
    top2 = np.sort(ref, axis=1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) > 1e-3
    agree = (c.argmax(1) == ref.argmax(1)) | ~decisive
    print(f"  {name}: max|diff| = {diff:.2e}, max|ref| = {np.abs(ref).max():.1f}, "
          f"top-1 agreement {int(agree.sum())}/{len(agree)}")
    return diff <= ABS_TOL and bool(agree.all())


def main(argv):
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    cli = argv[1]
    synthetic = len(argv) > 3 and argv[2] == "--synthetic"
    model = argv[2] if len(argv) > 2 else os.environ.get("FASA_MODEL", "")
    with tempfile.TemporaryDirectory() as tmp:
        if synthetic:
            model = os.path.join(tmp, "synthetic.gguf")
            run([argv[3], "--write-synthetic", model])
        return compare(cli, model, tmp)


def compare(cli, model, tmp):
    if not model or not os.path.isfile(model):
        print(f"SKIP: model file not found (set FASA_MODEL; got {model!r}); run tools/get-model.sh")
        return SKIP
    try:
        global np
        import numpy as np
        from ref_numpy import Reference
    except ImportError as e:
        print(f"SKIP: test-only Python packages missing ({e}); pip install numpy gguf")
        return SKIP
    ref = Reference(model)
    vocab = ref.emb.shape[0]
    ok = True
    for text in PROMPTS:
        ids = [int(x) for x in run([cli, "tokenize", model, "--text", text]).split()]
        print(f"prompt {text!r}: {len(ids)} tokens")
        want = ref.logits(ids)
        ok &= check("prefill", c_logits(cli, model, ids, [], vocab, tmp), want)
        ok &= check("decode ", c_logits(cli, model, ids, ["--decode-each"], vocab, tmp), want)
    print("PASS" if ok else f"FAIL (tolerance {ABS_TOL})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main(sys.argv))
