#!/usr/bin/env python3
"""Independent numpy reference for the Llama/SmolLM2 forward pass.

Reads the GGUF with PyPI `gguf` (its own dequantiser, not ours) and computes
logits in float64.  To be independent of the engine's layout choices it also
*undoes* llama.cpp's Q/K row permutation (MODEL_NOTES section 5):
    GGUF row (head, 2i + c) = HF row (head, 32c + i)
and then applies HF's rotate-half RoPE, whereas the C engine keeps the GGUF
rows and rotates interleaved pairs.  Both must give the same logits.

Usage as a module: Reference(path).logits(ids) -> [n][vocab] float64.
Usage as a script: ref_numpy.py MODEL ID,ID,... OUT.f32 [--all]
"""
import sys

import numpy as np
from gguf import GGUFReader
from gguf import quants


def _field(reader, key):
    if key not in reader.fields:
        raise KeyError(f"GGUF key {key!r} is missing")
    return reader.fields[key].contents()


class Reference:
    def __init__(self, path):
        r = GGUFReader(path)
        if _field(r, "general.architecture") != "llama":
            raise ValueError("reference supports general.architecture = llama only")
        self.n_layer = int(_field(r, "llama.block_count"))
        self.n_head = int(_field(r, "llama.attention.head_count"))
        self.n_kv = int(_field(r, "llama.attention.head_count_kv"))
        self.n_embd = int(_field(r, "llama.embedding_length"))
        self.rope_base = float(_field(r, "llama.rope.freq_base"))
        self.eps = float(_field(r, "llama.attention.layer_norm_rms_epsilon"))
        self.d = self.n_embd // self.n_head
        self.t = {}
        for t in r.tensors:
            w = quants.dequantize(t.data, t.tensor_type).astype(np.float64)
            self.t[t.name] = w.reshape([int(x) for x in reversed(t.shape)])
        self.emb = self.t["token_embd.weight"]
        self.out = self.t.get("output.weight", self.emb)
        for layer in range(self.n_layer):
            for name, heads in (("attn_q", self.n_head), ("attn_k", self.n_kv)):
                key = f"blk.{layer}.{name}.weight"
                self.t[key] = self._unpermute(self.t[key], heads)

    def _unpermute(self, w, heads):
        """Rows of each head from GGUF interleaved order back to HF order."""
        d = self.d
        w = w.reshape(heads, d // 2, 2, -1)      # [head][i][c][in] = GGUF row 2i + c
        return w.transpose(0, 2, 1, 3).reshape(heads * d, -1)  # HF row 32c + i

    def _rms(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def _rope_neox(self, x, pos):
        """HF rotate-half RoPE on [n][heads][d] at positions pos[n]."""
        half = self.d // 2
        inv = self.rope_base ** (-np.arange(half) * 2.0 / self.d)
        ang = pos[:, None] * inv[None, :]
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        a, b = x[..., :half], x[..., half:]
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)

    def _attention(self, q, k, v):
        n, group = q.shape[0], self.n_head // self.n_kv
        k = np.repeat(k, group, axis=1)
        v = np.repeat(v, group, axis=1)
        s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(self.d)
        s = s + np.triu(np.full((n, n), -np.inf), 1)[None]
        p = np.exp(s - s.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        return np.einsum("hqk,khd->qhd", p, v).reshape(n, -1)

    def logits(self, ids):
        ids = np.asarray(ids)
        n, pos = len(ids), np.arange(len(ids), dtype=np.float64)
        x = self.emb[ids]
        for layer in range(self.n_layer):
            w = lambda name: self.t[f"blk.{layer}.{name}.weight"]  # noqa: E731
            h = self._rms(x, w("attn_norm"))
            q = self._rope_neox((h @ w("attn_q").T).reshape(n, self.n_head, self.d), pos)
            k = self._rope_neox((h @ w("attn_k").T).reshape(n, self.n_kv, self.d), pos)
            v = (h @ w("attn_v").T).reshape(n, self.n_kv, self.d)
            x = x + self._attention(q, k, v) @ w("attn_output").T
            h = self._rms(x, w("ffn_norm"))
            g = h @ w("ffn_gate").T
            x = x + ((g / (1.0 + np.exp(-g))) * (h @ w("ffn_up").T)) @ w("ffn_down").T
        return self._rms(x, self.t["output_norm.weight"]) @ self.out.T


def main(argv):
    if len(argv) < 4:
        sys.stderr.write(__doc__)
        return 2
    ids = [int(x) for x in argv[2].split(",")]
    out = Reference(argv[1]).logits(ids)
    if "--all" not in argv:
        out = out[-1:]
    out.astype("<f4").tofile(argv[3])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
