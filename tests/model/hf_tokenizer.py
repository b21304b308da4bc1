"""Builds an HF `tokenizers` oracle from a GGUF's tokenizer.ggml.* keys.

Shared by gen_tok_fixtures.py and check_tokenizer_texts.py (test-only; needs
PyPI `gguf` and `tokenizers`).  The pipeline mirrors SmolLM2's tokenizer.json:
BPE over the GGUF vocab and merges, pre-tokenizer Digits(individual) followed
by ByteLevel(add_prefix_space=False) with the GPT-2 regex, ByteLevel decoder,
and token types 3/4 registered as special tokens.
"""
from gguf import GGUFReader
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers


def load_oracle(gguf_path):
    r = GGUFReader(gguf_path)
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    types = r.fields["tokenizer.ggml.token_type"].contents()
    merges = r.fields["tokenizer.ggml.merges"].contents()
    pre = r.fields["tokenizer.ggml.pre"].contents()
    if pre not in ("smollm", "starcoder"):
        raise SystemExit(f"oracle only built for the smollm pre-tokenizer, got {pre!r}")
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges])
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    specials = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types)
                if ty in (3, 4)]
    tok.add_special_tokens(specials)
    return tok
