#!/usr/bin/env python3
"""Plots `fasa eval --json` rows as an SVG (no dependencies): KL(dense || method)
against the token budget N_fac, one line per method (FASA per N_tip), log scale.
Usage: tools/plot_quality.py eval.json [more.json ...] > docs/quality.svg"""
import json
import math
import sys

rows = [r for path in sys.argv[1:] for r in json.load(open(path))]
series = {}
for r in rows:
    name = f"fasa N_tip={r['ntip']}" if r["method"] == "fasa" else (
        f"{r['method']} N_tip={r['ntip']}" if r["ntip"] else r["method"])
    if r.get("n_sink") or r.get("n_recent"):
        name += f" +{r.get('n_sink', 0)}s/{r.get('n_recent', 0)}r"
    series.setdefault(name, []).append((r["nfac"], max(r["kl"], 1e-4)))
W, H, L, R, T, B = 720, 420, 70, 190, 30, 50
xs = sorted({x for pts in series.values() for x, _ in pts})
ys = [y for pts in series.values() for _, y in pts]
lo, hi = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))


def px(x):
    i = xs.index(x)
    return L + (W - L - R) * (i / max(1, len(xs) - 1))


def py(y):
    return T + (H - T - B) * (hi - math.log10(y)) / max(1, hi - lo)


colors = ["#1f77b4", "#2ca02c", "#17becf", "#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#7f7f7f", "#bcbd22"]
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>']
for e in range(lo, hi + 1):
    y = py(10 ** e)
    out.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#ddd"/>')
    out.append(f'<text x="{L - 8}" y="{y + 4:.1f}" text-anchor="end">1e{e}</text>')
for x in xs:
    out.append(f'<text x="{px(x):.1f}" y="{H - B + 18}" text-anchor="middle">{x}</text>')
out.append(f'<text x="{(L + W - R) / 2}" y="{H - 10}" text-anchor="middle">token budget N_fac</text>')
out.append(f'<text x="16" y="{(T + H - B) / 2}" transform="rotate(-90 16 {(T + H - B) / 2})" '
           f'text-anchor="middle">mean KL(dense || method), nats</text>')
for i, (name, pts) in enumerate(sorted(series.items())):
    pts.sort()
    c = colors[i % len(colors)]
    path = " ".join(f"{'M' if j == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for j, (x, y) in enumerate(pts))
    out.append(f'<path d="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
    for x, y in pts:
        out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{c}"/>')
    out.append(f'<text x="{W - R + 12}" y="{T + 16 * i + 10}" fill="{c}">{name}</text>')
out.append("</svg>")
print("\n".join(out))
