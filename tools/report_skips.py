#!/usr/bin/env python3
"""Lists the tests a meson run skipped, each with its reason, so a suite that
did not run (no device, no model, no numpy) cannot pass unnoticed.

usage: report_skips.py build/meson-logs/testlog.json
"""
import json
import sys


def reason_of(rec):
    """The last line the test printed, stderr first: skips say why there."""
    for stream in ("stderr", "stdout"):
        lines = [l.strip() for l in (rec.get(stream) or "").splitlines() if l.strip()]
        if lines:
            return lines[-1][:160]
    return "(no reason printed)"


def main(path):
    skipped = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("result") == "SKIP":
                skipped[rec["name"].replace("libfasa:", "")] = reason_of(rec)
    if not skipped:
        print("test: no test was skipped")
        return 0
    bar = "=" * 78
    print(f"\n{bar}\ntest: {len(skipped)} test(s) SKIPPED - they did not run:", file=sys.stderr)
    for name, why in sorted(skipped.items()):
        print(f"  SKIPPED {name}: {why}", file=sys.stderr)
    print(bar, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
