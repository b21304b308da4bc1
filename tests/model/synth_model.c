#include "synth_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { N_LAYER = SYNTH_N_LAYER, N_EMBD = SYNTH_N_EMBD, N_HEAD = SYNTH_N_HEAD, N_KV = SYNTH_N_HEAD_KV, N_FF = 96,
       N_CTX = SYNTH_N_CTX };

/* GPT-2 byte alphabet: the UTF-8 of the code point standing for byte b. */
static void byte_char(unsigned b, char out[3])
{
    unsigned cp = b, next = 256;
    bool direct = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    if (!direct) {
        for (unsigned x = 0; x < b; x++)
            next += !((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174);
        cp = next;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        out[2] = 0;
    }
}

void synth_add_tokenizer_opt(gguf_writer *w, const synth_options *o)
{
    static char bytes[256][3];
    static const char *const merges[] = { "h e", "\xc4\xa0 t", "\xc4\xa0t he", "l l", "ll o", "a a" };
    static const char *const merged[] = { "he", "\xc4\xa0t", "\xc4\xa0the", "ll", "llo", "aa" };
    static const synth_options defaults = { 0 };
    const char *tokens[SYNTH_N_VOCAB + 1];
    int32_t types[SYNTH_N_VOCAB + 1];
    o = o ? o : &defaults;
    size_t n = SYNTH_N_VOCAB + (o->extra_vocab_token ? 1 : 0);
    tokens[0] = "<|endoftext|>";
    tokens[1] = "<|im_start|>";
    tokens[2] = "<|im_end|>";
    static char unused[8][16];
    for (unsigned b = 0; b < 256; b++) {
        byte_char(b, bytes[b]);
        tokens[3 + b] = bytes[b];
    }
    for (unsigned b = 1; o->no_c0_tokens && b <= 8; b++) {
        snprintf(unused[b - 1], sizeof unused[0], "<unused%u>", b);
        tokens[3 + b] = unused[b - 1];
    }
    for (int i = 0; i < 6; i++)
        tokens[259 + i] = merged[i];
    tokens[SYNTH_N_VOCAB] = "extra";
    for (size_t i = 0; i < n; i++)
        types[i] = i < 3 ? 3 : 1;
    if (o->set_token_type && o->token_type_at < n)
        types[o->token_type_at] = o->token_type;
    gw_str(w, "tokenizer.ggml.model", "gpt2");
    gw_str(w, "tokenizer.ggml.pre", o->pre ? o->pre : "smollm");
    gw_str_array(w, "tokenizer.ggml.tokens", tokens, n);
    gw_i32_array(w, "tokenizer.ggml.token_type", types, n);
    gw_str_array(w, "tokenizer.ggml.merges", merges, 6);
    gw_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gw_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gw_bool(w, "tokenizer.ggml.add_bos_token", 0);
}

void synth_add_tokenizer(gguf_writer *w, const char *pre)
{
    synth_options o = { .pre = pre };
    synth_add_tokenizer_opt(w, &o);
}

static float rnd(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return ((float)(*s >> 8) / 16777216.0f - 0.5f);
}

/* Writes key = v, or the override of o when it names this key. */
static void put_number(gguf_writer *w, const synth_options *o, const char *key, uint32_t type, double v)
{
    if (o->set_key && !strcmp(o->set_key, key)) {
        type = o->set_type;
        v = o->set_value;
    }
    if (type == 4) {
        gw_u32(w, key, (uint32_t)v);
    } else if (type == 5) {
        int32_t i = (int32_t)v;
        gw_raw(w, key, 5, &i, 4);
    } else if (type == 6) {
        gw_f32(w, key, (float)v);
    } else {
        gw_raw(w, key, 12, &v, 8);
    }
}

static void add_hparams(gguf_writer *w, const synth_options *o)
{
    struct { const char *key; uint32_t v; } u[] = {
        { "llama.block_count", N_LAYER },          { "llama.context_length", N_CTX },
        { "llama.embedding_length", N_EMBD },      { "llama.feed_forward_length", N_FF },
        { "llama.attention.head_count", N_HEAD },  { "llama.attention.head_count_kv", N_KV },
        { "llama.rope.dimension_count", N_EMBD / N_HEAD },
    };
    bool set_is_standard = false;
    gw_str(w, "general.architecture", "llama");
    for (size_t i = 0; i < sizeof u / sizeof u[0]; i++) {
        set_is_standard |= o->set_key && !strcmp(o->set_key, u[i].key);
        if (!o->skip_key || strcmp(o->skip_key, u[i].key))
            put_number(w, o, u[i].key, 4, u[i].v);
    }
    set_is_standard |= o->set_key && (!strcmp(o->set_key, "llama.rope.freq_base") ||
                                      !strcmp(o->set_key, "llama.attention.layer_norm_rms_epsilon"));
    if (!o->skip_key || strcmp(o->skip_key, "llama.rope.freq_base"))
        put_number(w, o, "llama.rope.freq_base", 6, 10000.0);
    if (!o->skip_key || strcmp(o->skip_key, "llama.attention.layer_norm_rms_epsilon"))
        put_number(w, o, "llama.attention.layer_norm_rms_epsilon", 6, 1e-5);
    if (o->set_key && !set_is_standard)
        put_number(w, o, o->set_key, o->set_type, o->set_value);
}

/* One tensor of random values; norms hover around 1, matrices ~U(-0.25, 0.25). */
static void add_tensor(gguf_writer *w, const synth_options *o, const char *name, uint32_t type,
                       uint64_t ne0, uint64_t ne1)
{
    if (o->skip_tensor && !strcmp(o->skip_tensor, name))
        return;
    uint32_t seed = o->seed * 7919u + (uint32_t)strlen(name) * 31u + (uint32_t)name[0];
    for (const char *p = name; *p; p++)
        seed = seed * 131u + (uint8_t)*p;
    uint64_t n = ne0 * (ne1 ? ne1 : 1);
    float *v = malloc(n * sizeof *v);
    for (uint64_t i = 0; i < n; i++)
        v[i] = ne1 ? rnd(&seed) * 0.5f : 1.0f + rnd(&seed) * 0.2f;
    uint64_t ne[2] = { ne0, ne1 };
    if (o->bad_shape && !strcmp(o->bad_shape, name)) {
        ne[0] = ne1;
        ne[1] = ne0;
    }
    gw_tensor_f32(w, name, type, ne1 ? 2 : 1, ne, v);
    free(v);
}

uint8_t *synth_model(const synth_options *o, size_t *size)
{
    static const synth_options defaults = { 0 };
    gguf_writer w;
    char name[64];
    o = o ? o : &defaults;
    gw_init(&w, 32);
    add_hparams(&w, o);
    synth_add_tokenizer_opt(&w, o);
    add_tensor(&w, o, "token_embd.weight", 8, N_EMBD, SYNTH_N_VOCAB);
    add_tensor(&w, o, "output_norm.weight", 0, N_EMBD, 0);
    /* Each layer mixes the five supported types. */
    static const uint32_t mat_types[2][7] = { { 3, 3, 2, 8, 1, 0, 3 }, { 2, 8, 3, 3, 0, 1, 2 } };
    static const char *const mats[7] = { "attn_q", "attn_k", "attn_v", "attn_output",
                                         "ffn_gate", "ffn_up", "ffn_down" };
    const uint64_t in[7] = { N_EMBD, N_EMBD, N_EMBD, N_EMBD, N_EMBD, N_EMBD, N_FF };
    const uint64_t out[7] = { N_EMBD, N_KV * N_EMBD / N_HEAD, N_KV * N_EMBD / N_HEAD, N_EMBD,
                              N_FF, N_FF, N_EMBD };
    for (int l = 0; l < N_LAYER; l++) {
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        add_tensor(&w, o, name, 0, N_EMBD, 0);
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);
        add_tensor(&w, o, name, 0, N_EMBD, 0);
        for (int m = 0; m < 7; m++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, mats[m]);
            add_tensor(&w, o, name, mat_types[l][m], in[m], out[m]);
        }
    }
    if (o->extra_tensor)
        add_tensor(&w, o, o->extra_tensor, 0, N_EMBD, 0);
    uint8_t *buf = gw_finish(&w, size);
    gw_free(&w);
    return buf;
}
