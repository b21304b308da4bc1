#!/usr/bin/env python3
"""The hostile CLI test: the whole `fasa` tool, not only its option parser,
run over generated bad arguments, bad files (FIFO, directory, /dev/zero,
truncated and bit-flipped GGUFs, huge sparse files, NUL bytes, invalid
UTF-8), bad prompts and bad output paths.

Every run has a timeout.  A run is a finding when it
  - dies from a signal or exits with a code other than 0, 1, 2 or 77 (crash),
  - does not finish within the timeout (hang),
  - prints a sanitizer report (ASan, UBSan, LeakSanitizer),
  - fails (exit != 0) without a message on stderr,
  - changes one of the input files (model, text, calibration) it was given.

usage: hostile.py FASA WRITE_SYNTH_MODEL [--seed S] [--random N] [--timeout T]
                  [--jobs J] [--json FILE] [--backends cpu[,opencl]]
Exit 0 when there is no finding, 1 otherwise.  The counts go to stdout (and
to --json), the findings with their command lines to stderr.
"""
import argparse
import concurrent.futures as cf
import hashlib
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
import time

SAN_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
               "UndefinedBehaviorSanitizer", "SUMMARY: AddressSanitizer")
OK_CODES = {0, 1, 2, 77}

BAD_NUMBERS = ["", "0", "-1", " 1", "1 ", "+1", "1.5", "abc", "0x10", "1e3", "4294967295", "4294967296",
               "18446744073709551615", "18446744073709551616", "18014398509481985k", "4194304m", "999999999999k",
               "nan", "inf", "-0", "1,2", ",", "1,,2", "\t7", "9" * 400]
BAD_LISTS = BAD_NUMBERS + ["0,0", "64," * 70 + "64", "8192", "2049", "1,0"]
BAD_WORDS = ["", "nosuch", "dense,nosuch", ",", "DENSE", "fasa,fasa", "x" * 5000, "\x01", "é", "auto,cpu"]
BAD_TEXT = ["", " ", "\x01\x02", "é" * 10, "a" * 200000, "\ufffd", "%s%s%n", "-- --"]


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Fixtures:
    """Good and bad files in one temporary directory."""

    def __init__(self, root, fasa, make_model):
        self.root = root
        p = lambda name: os.path.join(root, name)
        self.model, self.text, self.calib = p("tiny.gguf"), p("text.txt"), p("tiny.calib.json")
        self.prompt = p("prompt.txt")   # fits the tiny model's 128-token context
        subprocess.run([make_model, self.model], check=True)
        with open(self.prompt, "w") as f:
            f.write("Hello there, the quick fox.")
        with open(self.text, "w") as f:
            f.write(("The quick brown fox jumps over the lazy dog. Hello there, the hello. " * 60))
        rc = subprocess.run([fasa, "calibrate", "--model", self.model, "--text", self.text, "--windows", "1",
                             "--window", "128", "--tmin", "32", "--stride", "8", "--ntip", "2",
                             "--output", self.calib], capture_output=True, text=True, timeout=600)
        if rc.returncode != 0:
            raise SystemExit(f"hostile: cannot make the tiny calibration: {rc.stderr}")
        self.protected = [self.model, self.text, self.calib, self.prompt]
        self.bad_inputs = self._bad_inputs(p)
        self.outdir = p("out")
        os.mkdir(self.outdir)

    def _bad_inputs(self, p):
        os.mkfifo(p("fifo"))
        os.mkdir(p("dir"))
        open(p("empty"), "wb").close()
        with open(p("nul.txt"), "wb") as f:
            f.write(b"hello\x00world " * 10)
        with open(p("badutf8.txt"), "wb") as f:
            f.write(b"caf\xc3 \xff\xfe overlong \xc0\xaf surrogate \xed\xa0\x80 end")
        with open(p("huge.txt"), "wb") as f:   # a 10 MB prompt: longer than any context
            f.write(b"word " * (2 * 1024 * 1024))
        with open(p("sparse"), "wb") as f:     # 1 TiB of holes
            f.truncate(1 << 40)
        os.symlink("loop", p("loop"))
        model = open(self.model, "rb").read()
        files = ["/dev/zero", "/dev/null", p("fifo"), p("dir"), p("empty"), p("nul.txt"), p("badutf8.txt"),
                 p("huge.txt"), p("sparse"), p("loop"), p("missing"), p("dir") + "/", "", "x" * 5000,
                 p("new\nline")]
        rng = random.Random(11)
        for n in (4, 24, 100, len(model) // 3, len(model) - 1):
            files.append(p(f"trunc{n}.gguf"))
            with open(files[-1], "wb") as f:
                f.write(model[:n])
        for i in range(6):
            data = bytearray(model)
            for _ in range(1 + i * 3):
                data[rng.randrange(0, min(len(data), 4096))] ^= 1 << rng.randrange(8)
            files.append(p(f"flip{i}.gguf"))
            with open(files[-1], "wb") as f:
                f.write(data)
        calib = open(self.calib, "rb").read()
        for name, data in [("calib_trunc.json", calib[: len(calib) // 2]), ("calib_twice.json", calib + calib),
                           ("calib_garbage.json", calib + b"garbage")]:
            files.append(p(name))
            with open(files[-1], "wb") as f:
                f.write(data)
        return files


def bases(fx, backends):
    """Valid, fast invocations of every subcommand: (name, argv)."""
    out = fx.outdir
    b = [("info", ["info"]), ("info", ["info", "--json"])]
    for be in backends:
        b += [("bench", ["bench", "--backend", be, "--L", "512", "--hq", "4", "--hkv", "2", "--d", "64",
                         "--ntip", "4", "--nfac", "64", "--iters", "1", "--warmup", "0"]),
              ("conform", ["conform", "--backend", be, "--quick", "--filter", "L63/nfac64/ntip8"]),
              ("run", ["run", "--model", fx.model, "--prompt", "hello the", "--raw", "--backend", be,
                       "--calibration", fx.calib, "--nfac", "16", "--ntip", "2", "--max-tokens", "2", "--quiet"])]
    b += [("run", ["run", "--model", fx.model, "--prompt-file", fx.prompt, "--variant", "dense", "--max-tokens", "2"]),
          ("eval", ["eval", "--model", fx.model, "--text", fx.text, "--ctx", "96", "--steps", "4", "--nfac", "16",
                    "--ntip", "2", "--methods", "fasa,window", "--calibration", fx.calib]),
          ("calibrate", ["calibrate", "--synthetic", "--layers", "1", "--hq", "2", "--hkv", "1", "--d", "16",
                         "--ntip", "2", "--L", "256", "--steps", "2", "--output", os.path.join(out, "syn.json")]),
          ("calibrate", ["calibrate", "--model", fx.model, "--text", fx.text, "--windows", "1", "--window", "96",
                         "--tmin", "32", "--stride", "16", "--ntip", "2", "--output", os.path.join(out, "m.json")])]
    return b


FILE_OPTS = {"model", "text", "prompt-file", "calibration", "replay"}
OUT_OPTS = {"output", "dump"}
WORD_OPTS = {"backend", "variant", "methods", "fetch", "prefetch", "dtype", "gqa-select", "against", "layout",
             "filter"}
TEXT_OPTS = {"prompt", "question"}


def bad_values(opt, fx):
    if opt in FILE_OPTS:
        return fx.bad_inputs
    if opt in OUT_OPTS:
        return ["/dev/null", "/dev/full", os.path.join(fx.root, "fifo"), os.path.join(fx.root, "dir"),
                fx.model, fx.text, fx.calib, os.path.join(fx.root, "missing-dir", "x.json"), "", "x" * 5000,
                "/proc/self/mem", os.path.join(fx.root, "loop")]
    if opt in WORD_OPTS:
        return BAD_WORDS
    if opt in TEXT_OPTS:
        return BAD_TEXT
    if opt in {"L", "nfac", "ntip"}:
        return BAD_LISTS
    return BAD_NUMBERS


def mutations(name, argv, fx):
    """Each option's value replaced by every bad value, plus structural damage."""
    cases = []
    for i, a in enumerate(argv):
        if not a.startswith("--") or i + 1 >= len(argv) or argv[i + 1].startswith("--"):
            continue
        for v in bad_values(a[2:], fx):
            cases.append((name, argv[: i + 1] + [v] + argv[i + 2:]))
        cases.append((name, argv[:i] + argv[i + 2:] + [a]))               # value missing at the end
        cases.append((name, argv + [a, argv[i + 1]]))                     # option given twice
        cases.append((name, argv[:i] + [a + "=" + argv[i + 1]] + argv[i + 2:]))
    cases += [(name, argv + ["--nosuch"]), (name, argv + ["positional"]), (name, argv + ["-"]),
              (name, argv + ["--"]), (name, argv + ["--help"])]
    return cases


def random_cases(base_list, fx, n, rng):
    """n invocations with 2-4 options damaged at once."""
    out = []
    for _ in range(n):
        name, argv = rng.choice(base_list)
        argv = list(argv)
        slots = [i for i, a in enumerate(argv) if a.startswith("--") and i + 1 < len(argv)
                 and not argv[i + 1].startswith("--")]
        for i in rng.sample(slots, min(len(slots), rng.randint(2, 4))):
            argv[i + 1] = rng.choice(bad_values(argv[i][2:], fx))
        out.append((name, argv))
    return out


def option_values(argv, names):
    return {argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--") and a[2:] in names}


def named_inputs(argv):
    return option_values(argv, FILE_OPTS)


def named_outputs(argv):
    return option_values(argv, OUT_OPTS)


def classify(rc, err, timed_out):
    if timed_out:
        return "hang"
    if any(m in err for m in SAN_MARKERS):
        return "sanitizer"
    if rc < 0 or rc not in OK_CODES:
        return "crash"
    if rc != 0 and not err.strip():
        return "silent-failure"
    return None


def run_case(fasa, case, timeout, fx, env):
    name, argv = case
    before = {p: sha(p) for p in fx.protected}
    t0 = time.monotonic()
    try:
        p = subprocess.run([fasa, *argv], stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                           env=env, cwd=fx.root)
        rc, err, timed_out = p.returncode, p.stderr.decode("utf-8", "replace"), False
    except subprocess.TimeoutExpired as e:
        rc, err, timed_out = -9, (e.stderr or b"").decode("utf-8", "replace"), True
    except (ValueError, OSError) as e:   # argv the OS cannot pass (embedded NUL)
        return name, argv, "skipped-os", str(e), 0.0
    finding = classify(rc, err, timed_out)
    outputs = named_outputs(argv)
    for path, digest in before.items():
        if os.path.exists(path) and sha(path) == digest:
            continue
        # a file the run was told to write may be replaced, with a notice;
        # one it read, or one it was never given, must stay as it was
        if path in outputs and path not in named_inputs(argv) and "replac" in err:
            continue
        finding = finding or "input-file-changed"
    return name, argv, finding, err[-2000:] if finding else rc, time.monotonic() - t0


def restore(fx, pristine):
    for path in fx.protected:
        if not os.path.exists(path) or sha(path) != pristine[path][0]:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            with open(path, "wb") as f:
                f.write(pristine[path][1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fasa")
    ap.add_argument("write_synth_model")
    ap.add_argument("--seed", type=int, default=20261207)
    ap.add_argument("--random", type=int, default=1000, help="random multi-option cases (default 1000)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per run (default 60)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--backends", default="cpu")
    ap.add_argument("--json")
    a = ap.parse_args()
    fasa = os.path.abspath(a.fasa)
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    env["ASAN_OPTIONS"] += ":exitcode=99:abort_on_error=0"
    env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1:exitcode=98"
    env.pop("FASA_MODEL", None)
    rng = random.Random(a.seed)
    with tempfile.TemporaryDirectory(prefix="fasa-hostile-") as root:
        fx = Fixtures(root, fasa, os.path.abspath(a.write_synth_model))
        pristine = {p: (sha(p), open(p, "rb").read()) for p in fx.protected}
        base_list = bases(fx, a.backends.split(","))
        cases = list(base_list)
        for name, argv in base_list:
            cases += mutations(name, argv, fx)
        cases += random_cases(base_list, fx, a.random, rng)
        results, t0 = [], time.monotonic()
        # Runs told to write over a fixture run one at a time, each followed by
        # a restore; the rest run in parallel batches (they never write the
        # fixtures unless broken, and a broken run is reported and repaired).
        # The valid invocations first, one at a time and with a long timeout:
        # they fill the kernel caches (a cold PoCL build takes minutes under
        # ASan), so the timeout of the damaged runs measures the tool alone.
        for c in base_list:
            r = run_case(fasa, c, max(a.timeout, 1200), fx, env)
            if not r[2] and r[3] != 0:   # the valid runs must work, or the rest tests nothing
                r = (r[0], r[1], "valid-run-failed", f"exit {r[3]}", r[4])
            results.append(r)
        cases = cases[len(base_list):]
        serial = [c for c in cases if named_outputs(c[1]) & set(fx.protected)]
        parallel = [c for c in cases if c not in serial]
        with cf.ThreadPoolExecutor(a.jobs) as pool:
            for batch in range(0, len(parallel), 64):
                futs = [pool.submit(run_case, fasa, c, a.timeout, fx, env) for c in parallel[batch:batch + 64]]
                results += [f.result() for f in futs]
                restore(fx, pristine)
                print(f"hostile: {len(results)}/{len(cases)} runs", file=sys.stderr, flush=True)
        for c in serial:
            results.append(run_case(fasa, c, a.timeout, fx, env))
            restore(fx, pristine)
        elapsed = time.monotonic() - t0
    findings = [r for r in results if r[2] and r[2] != "skipped-os"]
    counts = {"runs": sum(1 for r in results if r[2] != "skipped-os"), "seconds": round(elapsed, 1),
              "per_command": {}, "exit_codes": {}, "findings": {}}
    for name, _, finding, rc, _ in results:
        if finding == "skipped-os":
            continue
        counts["per_command"][name] = counts["per_command"].get(name, 0) + 1
        if finding:
            counts["findings"][finding] = counts["findings"].get(finding, 0) + 1
        else:
            counts["exit_codes"][str(rc)] = counts["exit_codes"].get(str(rc), 0) + 1
    slowest = max(results, key=lambda r: r[4])
    counts["slowest_run_s"] = round(slowest[4], 2)
    for name, argv, finding, detail, _ in findings[:40]:
        print(f"FINDING {finding}: fasa {' '.join(repr(x) if ' ' in x or not x else x for x in argv)[:400]}\n"
              f"  {str(detail)[-600:]}", file=sys.stderr)
    print(json.dumps(counts, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(counts, f, indent=1)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
