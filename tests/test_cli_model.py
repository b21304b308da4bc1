#!/usr/bin/env python3
"""The model commands (fasa run, eval, calibrate --model) on bad input: lists,
prompts, files, output paths and context lengths, on the tiny synthetic GGUF
that write_synth_model makes (2 layers, 4 heads, 2 KV heads, head dim 16,
context length 128), so it runs everywhere in seconds.  The parts that need
SmolLM2 read FASA_MODEL and are skipped (with a note) without it.

usage: test_cli_model.py FASA WRITE_SYNTH_MODEL"""
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

FASA = os.path.abspath(sys.argv[1])
WRITER = os.path.abspath(sys.argv[2])
MODEL = os.environ.get("FASA_MODEL", "")
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {what}", file=sys.stderr)


def fasa(*args, cwd=None, timeout=120, exe=FASA, env=None):
    """(rc, stdout, stderr); a hang is rc 'timeout'."""
    try:
        p = subprocess.run([exe, *args], capture_output=True, timeout=timeout, cwd=cwd, env=env)
    except subprocess.TimeoutExpired:
        return "timeout", "", "timed out"
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    return path


tmp = tempfile.mkdtemp(prefix="fasa_cli_model_")
p = lambda *names: os.path.join(tmp, *names)
tiny = p("tiny.gguf")
subprocess.run([WRITER, tiny], check=True)
text = write(p("text.txt"), "The quick brown fox jumps over the lazy dog. Hello there, the hello. " * 60)
calib = p("tiny.calib.json")
rc, out, err = fasa("calibrate", "--model", tiny, "--text", text, "--windows", "1", "--window", "128", "--tmin", "32",
                    "--stride", "8", "--ntip", "2", "--output", calib)
if rc != 0:
    sys.exit(f"cannot make the tiny calibration: {rc} {err}")
protected = {path: sha(path) for path in (tiny, text, calib)}
RUN = ["run", "--model", tiny, "--calibration", calib, "--backend", "cpu", "--nfac", "16", "--max-tokens", "2",
       "--quiet"]
EVAL = ["eval", "--model", tiny, "--text", text, "--calibration", calib, "--backend", "cpu", "--ctx", "32",
        "--steps", "4", "--nfac", "16", "--ntip", "2", "--methods", "fasa,oracle", "--json"]

# the baselines work
rc, out, err = fasa(*RUN, "--prompt", "hello the", "--raw")
check(rc == 0, f"run on the tiny model: {rc} {err}")
rc, out, err = fasa(*EVAL)
check(rc == 0 and len(json.loads(out or "[]")) == 2, f"eval on the tiny model: {rc} {out} {err}")

# --- 1. no list value means "the library's default": 0 is refused -----------------------------------
for opt, val in [("--nfac", "0"), ("--nfac", "64,0"), ("--ntip", "0"), ("--ntip", "2,0"), ("--nfac", "16,16"),
                 ("--ntip", "300")]:
    args = [a for a in EVAL]
    args[args.index(opt) + 1] = val
    rc, out, err = fasa(*args)
    check(rc == 2 and opt in err, f"eval {opt} {val}: exit {rc}, {err.strip()[:200]}")
rc, out, err = fasa(*RUN, "--prompt", "x", "--ntip", "0")
check(rc == 2 and "--ntip" in err, f"run --ntip 0: {rc} {err[:200]}")
rc, out, err = fasa(*EVAL[:-1], "--ntip", "9")  # the tiny model has 8 chunks per head
check(rc == 1 and "--ntip 9" in err and "8 chunks" in err, f"eval --ntip above d/2: {rc} {err[:300]}")

# --- 2. FIFOs, directories and devices are refused, never waited on ---------------------------------
fifo = p("fifo")
os.mkfifo(fifo)
os.mkdir(p("dir"))
cases = [
    ("run --prompt-file", [*RUN, "--prompt-file", fifo]),
    ("run --model", ["run", "--model", fifo, "--prompt", "x", "--calibration", calib]),
    ("run --calibration", [*RUN[:3], "--backend", "cpu", "--calibration", fifo, "--prompt", "x", "--raw",
                           "--max-tokens", "2"]),
    ("eval --text", ["eval", "--model", tiny, "--text", fifo, "--calibration", calib, "--ctx", "32", "--steps", "4",
                     "--ntip", "2"]),
    ("eval --model", ["eval", "--model", fifo, "--text", text, "--calibration", calib]),
    ("eval --calibration", ["eval", "--model", tiny, "--text", text, "--calibration", fifo, "--ctx", "32"]),
    ("calibrate --text", ["calibrate", "--model", tiny, "--text", fifo, "--window", "64", "--tmin", "8"]),
    ("calibrate --model", ["calibrate", "--model", fifo, "--text", text, "--window", "64", "--tmin", "8"]),
]
for what, args in cases:
    rc, out, err = fasa(*args, timeout=30)
    check(rc in (1, 2) and "FIFO" in err, f"{what} FIFO: exit {rc}, {err.strip()[:300]}")
for what, bad in [("directory", p("dir")), ("/dev/zero", "/dev/zero"), ("missing", p("missing.txt"))]:
    rc, out, err = fasa(*RUN, "--prompt-file", bad, timeout=30)
    check(rc == 1 and "--prompt-file" in err, f"run --prompt-file {what}: {rc} {err[:200]}")
    rc, out, err = fasa("run", "--model", bad, "--prompt", "x", "--calibration", calib, timeout=30)
    check(rc == 1 and "--model" in err, f"run --model {what}: {rc} {err[:200]}")

# --- 3. outputs: never an input, replaced atomically, said so ---------------------------------------
CAL = ["calibrate", "--model", tiny, "--text", text, "--windows", "1", "--window", "64", "--tmin", "16",
       "--stride", "8", "--ntip", "2"]
os.symlink(tiny, p("model-link.gguf"))
os.link(text, p("text-hardlink.txt"))
for what, out_path in [("the text", text), ("the model", tiny), ("a symlink to the model", p("model-link.gguf")),
                       ("a hard link to the text", p("text-hardlink.txt")),
                       ("the model by another spelling", os.path.join(tmp, ".", "tiny.gguf"))]:
    rc, out, err = fasa(*CAL, "--output", out_path)
    check(rc == 2 and "same file" in err, f"calibrate --output = {what}: exit {rc}, {err.strip()[:200]}")
rc, out, err = fasa(*CAL, "--output", p("dir"))
check(rc == 2 and "directory" in err, f"calibrate --output DIR: {rc} {err[:200]}")
new_out = p("new.calib.json")
rc, out, err = fasa(*CAL, "--output", new_out)
check(rc == 0 and "replacing" not in err and os.path.exists(new_out), f"calibrate --output NEW: {rc} {err[:200]}")
rc, out, err = fasa(*CAL, "--output", new_out)
check(rc == 0 and f"replacing existing {new_out}" in err, f"calibrate --output EXISTING says so: {rc} {err[:200]}")
check(sorted(os.listdir(tmp)) == sorted(set(os.listdir(tmp))) and not [n for n in os.listdir(tmp) if ".tmp" in n],
      f"no temporary files left: {os.listdir(tmp)}")
rc, out, err = fasa("calibrate", "--synthetic", "--layers", "1", "--hq", "4", "--hkv", "2", "--d", "16", "--ntip", "2",
                    "--L", "256", "--steps", "2", "--output", new_out)
check(rc == 0 and "replacing existing" in err, f"calibrate --synthetic --output EXISTING: {rc} {err[:200]}")

dump = p("cases")
rc, out, err = fasa(*EVAL, "--dump", dump)
files = sorted(os.listdir(dump)) if os.path.isdir(dump) else []
check(rc == 0 and len(files) == 1 and files[0].endswith(".fasacase"), f"eval --dump: {rc} {files} {err[:200]}")
rc, out, err = fasa(*EVAL, "--dump", dump)
check(rc == 0 and "replacing existing" in err and sorted(os.listdir(dump)) == files,
      f"eval --dump again replaces, no temporary left: {rc} {os.listdir(dump)} {err[:300]}")
rc, out, err = fasa(*EVAL, "--dump", text)
check(rc == 2 and "--dump" in err, f"eval --dump FILE: {rc} {err[:200]}")
# a case file that is one of the inputs (here the calibration, by its name in the dump dir)
trap_dir = p("trap")
os.mkdir(trap_dir)
trap = os.path.join(trap_dir, files[0] if files else "x.fasacase")
shutil.copy(calib, trap)
trap_sha = sha(trap)
args = [a for a in EVAL]
args[args.index("--calibration") + 1] = trap
rc, out, err = fasa(*args, "--dump", trap_dir)
check(rc == 1 and "same file" in err and sha(trap) == trap_sha, f"eval --dump over its calibration: {rc} {err[:300]}")

# --- 4. empty prompts and prompts of no tokens ------------------------------------------------------
rc, out, err = fasa(*RUN, "--prompt", "", "--raw")
check(rc == 2 and "--prompt is empty" in err, f"run --prompt '': {rc} {err[:200]}")
rc, out, err = fasa(*RUN, "--prompt", "x", "--question", "")
check(rc == 2 and "--question is empty" in err, f"run --question '': {rc} {err[:200]}")
empty = write(p("empty.txt"), b"")
rc, out, err = fasa(*RUN, "--prompt-file", empty, "--raw")
check(rc == 1 and "empty" in err, f"run --prompt-file EMPTY --raw: {rc} {err[:200]}")
no_c0 = p("no-c0.gguf")
subprocess.run([WRITER, no_c0, "--no-c0-tokens"], check=True)
rc, out, err = fasa("run", "--model", no_c0, "--calibration", calib, "--backend", "cpu", "--raw", "--prompt",
                    "\x01\x02\x03", "--max-tokens", "2")
check(rc == 1 and "no tokens" in err and "3 bytes without a token" in err, f"run prompt of no tokens: {rc} {err[:300]}")
rc, out, err = fasa("run", "--model", no_c0, "--calibration", calib, "--backend", "cpu", "--raw", "--prompt",
                    "ab\x05c", "--max-tokens", "1", "--quiet")
check(rc == 0 and "1 byte without a token" in err and "0x05, at byte 2" in err, f"run warns about a dropped byte: {rc} {err[:300]}")

# --- 5. NUL bytes and invalid UTF-8: refused with the byte offset -----------------------------------
bad_texts = [(b"hello\x00world", 5, "NUL"), (b"caf\xc3 ok", 3, "invalid UTF-8"), (b"ab\xff", 2, "invalid UTF-8"),
             (b"overlong \xc0\xaf", 9, "invalid UTF-8"), (b"x\xe0\x80\x80", 1, "invalid UTF-8"),
             (b"surrogate \xed\xa0\x80", 10, "invalid UTF-8"), (b"big \xf4\x90\x80\x80", 4, "invalid UTF-8"),
             (b"cut \xe2\x82", 4, "invalid UTF-8")]
for i, (data, at, kind) in enumerate(bad_texts):
    path = write(p(f"bad{i}.txt"), data + b" " + b"the end. " * 40)
    rc, out, err = fasa(*RUN, "--prompt-file", path)
    check(rc == 1 and f"byte {at}" in err and kind in err, f"run --prompt-file {data!r}: {rc} {err[:300]}")
    rc, out, err = fasa(*EVAL[:4], path, *EVAL[5:])
    check(rc == 1 and f"byte {at}" in err and kind in err and "--text" in err, f"eval --text {data!r}: {rc} {err[:300]}")
    rc, out, err = fasa(*CAL[:4], path, *CAL[5:])
    check(rc == 1 and f"byte {at}" in err and kind in err, f"calibrate --text {data!r}: {rc} {err[:300]}")
# raw bytes in argv: pass bytes
p_ = subprocess.run([FASA, *RUN, "--prompt", b"caf\xc3"], capture_output=True)
check(p_.returncode == 2 and b"--prompt: byte 3" in p_.stderr, f"run --prompt invalid UTF-8: {p_.returncode} {p_.stderr[:200]}")
good = write(p("good.txt"), "Café, naïve — “quoted” € 😀 ok. ".encode())
rc, out, err = fasa(*RUN, "--prompt-file", good, "--raw")
check(rc == 0, f"valid multi-byte UTF-8 is accepted: {rc} {err[:200]}")

# --- 6. a prompt longer than the context fails before any cache is allocated ------------------------
huge = write(p("huge.txt"), b"word " * (2 * 1024 * 1024))  # 10 MiB
t0 = time.time()
rc, out, err = fasa(*RUN, "--prompt-file", huge, "--raw", timeout=120)
secs = time.time() - t0
check(rc == 1 and "more than the model's context length 128" in err and "prompt tokens" in err,
      f"10 MB prompt: {rc} {err[:300]}")
check(secs < 60, f"10 MB prompt took {secs:.1f} s")

# --- 7. no wrap in prompt + --max-tokens; the limit is exact ----------------------------------------
rc, out, err = fasa(*RUN, "--prompt", "hello the", "--raw", "--max-tokens", "4294967295")
check(rc == 1 and "4294967298 tokens" in err and "context length 128" in err, f"--max-tokens 2^32-1: {rc} {err[:300]}")
# (this prompt makes the tiny model generate without an end token, so the whole context is used)
rc, out, err = fasa(*RUN[:-3], "--prompt", "xyz", "--raw", "--max-tokens", "1", "--json")
n_prompt = json.loads(out)["prompt_tokens"] if rc == 0 else 0
rc, out, err = fasa(*RUN[:-3], "--prompt", "xyz", "--raw", "--max-tokens", str(128 - n_prompt), "--json")
gen = json.loads(out)["generated_tokens"] if rc == 0 else -1
check(rc == 0 and gen == 128 - n_prompt, f"prompt + --max-tokens = the context length is fine: {rc} {gen} {err[:300]}")
rc, out, err = fasa(*RUN[:-3], "--prompt", "xyz", "--raw", "--max-tokens", str(129 - n_prompt), "--quiet")
check(rc == 1 and "= 129 tokens" in err, f"one more token is refused: {rc} {err[:300]}")
args = [a for a in EVAL]
args[args.index("--ctx") + 1] = "4294967295"
rc, out, err = fasa(*args)
check(rc == 1 and "--ctx 4294967295 + --steps 4 = 4294967299 tokens" in err, f"eval --ctx 2^32-1: {rc} {err[:300]}")
rc, out, err = fasa(*CAL[:-8], "--windows", "1", "--window", "4096", "--tmin", "16", "--output", p("c.json"))
check(rc == 1 and "--window 4096 tokens, more than the model's context length 128" in err,
      f"calibrate --window above the context: {rc} {err[:300]}")

# counts beyond what the text holds would repeat work for ever (found by tests/hostile): refused
short = write(p("short.txt"), "abcdefghij" * 13)  # 130 tokens: the window leaves less than the 5% skipped
rc, out, err = fasa(*EVAL[:4], short, *EVAL[5:10], "120", *EVAL[11:])
check(rc == 0 and len(json.loads(out or "[]")) == 2, f"eval window just fitting a short text: {rc} {err[:300]}")
rc, out, err = fasa(*EVAL[:4], short, *EVAL[5:10], "120", *EVAL[11:], "--windows", "2")
check(rc == 1 and "--windows 2" in err and "1 distinct window " in err, f"eval --windows beyond the text: {rc} {err[:300]}")
rc, out, err = fasa(*CAL[:6], "4294967295", *CAL[7:], "--output", p("c.json"), timeout=60)
check(rc == 1 and "--windows 4294967295" in err and "distinct windows" in err, f"calibrate --windows 2^32-1: {rc} {err[:300]}")
rc, out, err = fasa("calibrate", "--synthetic", "--layers", "1", "--hq", "2", "--hkv", "1", "--d", "16", "--ntip", "2",
                    "--L", "256", "--steps", "4294967295", timeout=60)
check(rc == 2 and "--steps 4294967295" in err, f"calibrate --synthetic --steps 2^32-1: {rc} {err[:300]}")

# --- 8. the whole documented --nfac range works (the cache is sized for it) -------------------------
from_nfac = [a for a in RUN]
for nfac, want in [("2049", 0), ("8192", 0), ("8193", 2)]:
    from_nfac[from_nfac.index("--nfac") + 1] = nfac
    rc, out, err = fasa(*from_nfac, "--prompt", "hello the", "--raw")
    check(rc == want, f"run --nfac {nfac}: exit {rc} (want {want}) {err[:300]}")
for nfac, want in [("3000", 0), ("16,8192", 0), ("9000", 2)]:
    args = [a for a in EVAL]
    args[args.index("--nfac") + 1] = nfac
    rc, out, err = fasa(*args)
    check(rc == want, f"eval --nfac {nfac}: exit {rc} (want {want}) {err[:300]}")

# --- 9. absurd hyper-parameters fail at load, naming key and value ----------------------------------
for key, typ, val, needle in [("llama.rope.freq_base", "f32", "1e-30", "1e-30"),
                              ("llama.attention.layer_norm_rms_epsilon", "f32", "3e38", "3e+38"),
                              ("llama.rope.freq_base", "f32", "nan", "finite")]:
    bad = p("bad-hparam.gguf")
    subprocess.run([WRITER, bad, "--set", key, typ, val], check=True)
    rc, out, err = fasa("run", "--model", bad, "--prompt", "x", "--calibration", calib, "--backend", "cpu")
    check(rc == 1 and key in err and needle in err, f"run --model with {key} = {val}: {rc} {err[:300]}")
subprocess.run([WRITER, p("bad-type.gguf"), "--token-type", "5", "99"], check=True)
rc, out, err = fasa("eval", "--model", p("bad-type.gguf"), "--text", text, "--calibration", calib)
check(rc == 1 and "token_type[5] = 99" in err, f"eval --model with token type 99: {rc} {err[:300]}")

# --- 10. name and file lists: empty, unknown, repeated entries are errors ---------------------------
for val, needle in [("", "empty"), ("fasa,nosuch", "unknown name 'nosuch' in 'fasa,nosuch' (valid: fasa, oracle, window, random, highfreq)"),
                    ("fasa,,oracle", "empty name"), (",fasa", "empty name"), ("fasa,", "empty name"),
                    ("fasa,fasa", "twice"), ("FASA", "unknown name")]:
    args = [a for a in EVAL]
    args[args.index("--methods") + 1] = val
    rc, out, err = fasa(*args)
    check(rc == 2 and "--methods" in err and needle in err, f"eval --methods '{val}': {rc} {err.strip()[:300]}")
for val in ["", ",", f"{text},", f"{text},,{text}"]:
    rc, out, err = fasa(*EVAL[:4], val, *EVAL[5:])
    check(rc == 2 and "--text" in err, f"eval --text '{val}': {rc} {err.strip()[:200]}")
args = [a for a in EVAL]
args[args.index("--nfac") + 1] = ",".join(str(16 + i) for i in range(60))
args[args.index("--ntip") + 1] = "1,2,3,4,5,6,7,8"
args[args.index("--methods") + 1] = "fasa,random,highfreq"
rc, out, err = fasa(*args)
check(rc == 2 and "configurations" in err, f"eval with more configurations than it holds: {rc} {err[:200]}")

# --- 11. the default calibration is found from any directory ----------------------------------------
rc, out, err = fasa("run", "--model", tiny, "--prompt", "x", "--raw", "--max-tokens", "2", "--backend", "cpu", cwd="/")
check(rc == 1 and "smollm2-135m-instruct.calib.json" in err and "(default)" in err and os.sep + "data" + os.sep in err,
      f"run from / finds the source tree's default calibration (a SmolLM2 one: shape mismatch): {rc} {err[:400]}")
# an installed layout: <prefix>/bin/fasa finds <prefix>/share/libfasa/*.calib.json
prefix = p("prefix")
os.makedirs(os.path.join(prefix, "bin"))
os.makedirs(os.path.join(prefix, "share", "libfasa"))
shutil.copy(FASA, os.path.join(prefix, "bin", "fasa"))
shutil.copy(calib, os.path.join(prefix, "share", "libfasa", "smollm2-135m-instruct.calib.json"))
env = dict(os.environ)
build_root = os.path.dirname(os.path.dirname(FASA))  # the build dir holds libfasa.so
env["LD_LIBRARY_PATH"] = build_root + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
rc, out, err = fasa("run", "--model", tiny, "--prompt", "hello the", "--raw", "--backend", "cpu", "--nfac", "16",
                    "--max-tokens", "2", "--quiet", cwd="/", exe=os.path.join(prefix, "bin", "fasa"), env=env)
check(rc == 0, f"installed fasa finds <prefix>/share/libfasa: {rc} {err[:400]}")
rc, out, err = fasa("run", "--help")
check(rc == 0 and "share/libfasa" in out and "UTF-8" in out, "run --help documents the default lookup and the text policy")

# --- the real model (FASA_MODEL) --------------------------------------------------------------------
if MODEL and os.path.exists(MODEL):
    rc, out, err = fasa("run", "--model", os.path.abspath(MODEL), "--prompt", "Hi", "--max-tokens", "1",
                        "--backend", "cpu", "--quiet", cwd="/tmp", timeout=300)
    check(rc == 0, f"SmolLM2 run from /tmp with the default calibration: {rc} {err[-400:]}")
    t0 = time.time()
    rc, out, err = fasa("run", "--model", os.path.abspath(MODEL), "--prompt-file", huge, "--raw", "--backend", "cpu",
                        timeout=300)
    check(rc == 1 and "more than the model's context length 8192" in err, f"SmolLM2 10 MB prompt: {rc} {err[-300:]}")
    check(time.time() - t0 < 60, f"SmolLM2 10 MB prompt took {time.time() - t0:.1f} s")
    rc, out, err = fasa("run", "--model", os.path.abspath(MODEL), "--prompt", "Hello there", "--raw", "--nfac", "4096",
                        "--max-tokens", "2", "--backend", "cpu", "--quiet", timeout=300)
    check(rc == 0, f"SmolLM2 --nfac 4096: {rc} {err[-300:]}")
else:
    print("note: FASA_MODEL not set, the SmolLM2 checks are skipped")

for path, digest in protected.items():
    check(sha(path) == digest, f"{path} unchanged")
shutil.rmtree(tmp, ignore_errors=True)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
