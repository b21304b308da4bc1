/* Bad-input matrix of the Vulkan entry points (fasa_vulkan.h) and of the
 * Vulkan context creation: each bad call returns the right status, leaves a
 * message naming the bad field, and writes nothing (out pointers untouched,
 * cache lengths unchanged, nothing recorded: a poisoned output stays
 * poisoned after the command buffer runs). */
#include "vt_common.h"
#include "vt_host.h"

#include <string.h>

static int n_cases = 0;

/* The call must return `want` and the context message must contain `field`. */
static void expect(fasa_context *ctx, fasa_status got, fasa_status want, const char *field, const char *what)
{
    n_cases++;
    VT_CHECK(got == want, "%s: got %s, want %s", what, fasa_status_string(got), fasa_status_string(want));
    if (ctx && field) {
        const char *m = fasa_context_last_error(ctx);
        VT_CHECK(strstr(m, field) != NULL, "%s: message \"%s\" does not name \"%s\"", what, m, field);
    }
}

static fasa_context *embedded(host *h, fasa_vk_embed *e, fasa_status want, const char *field, const char *what)
{
    char msg[1024] = "";
    fasa_context_desc d = {0};
    d.backend = FASA_BACKEND_VULKAN;
    d.embed = e;
    d.error_message = msg;
    d.error_message_size = sizeof msg;
    fasa_context *ctx = (fasa_context *)(uintptr_t)1;
    fasa_status st = fasa_context_create(&d, &ctx);
    n_cases++;
    VT_CHECK(st == want, "%s: got %s, want %s (%s)", what, fasa_status_string(st), fasa_status_string(want), msg);
    if (want != FASA_OK) {
        VT_CHECK(ctx == NULL, "%s: *out not cleared on failure", what);
        VT_CHECK(field == NULL || strstr(msg, field), "%s: message \"%s\" does not name %s", what, msg, field);
    }
    (void)h;
    return st == FASA_OK ? ctx : NULL;
}

static void context_matrix(host *h)
{
    fasa_vk_embed e = host_embed(h);
    fasa_vk_embed b = e;
    b.instance = VK_NULL_HANDLE;
    embedded(h, &b, FASA_ERROR_INVALID_ARGUMENT, "instance", "embed.instance NULL");
    b = e, b.physical_device = VK_NULL_HANDLE;
    embedded(h, &b, FASA_ERROR_INVALID_ARGUMENT, "physical_device", "embed.physical_device NULL");
    b = e, b.device = VK_NULL_HANDLE;
    embedded(h, &b, FASA_ERROR_INVALID_ARGUMENT, "device", "embed.device NULL");
    b = e, b.queue = VK_NULL_HANDLE;
    embedded(h, &b, FASA_ERROR_INVALID_ARGUMENT, "queue", "embed.queue NULL");
    b = e, b.get_instance_proc_addr = NULL;
    embedded(h, &b, FASA_ERROR_INVALID_ARGUMENT, "get_instance_proc_addr", "embed.get_instance_proc_addr NULL");
    b = e, b.buffer_device_address_enabled = false;
    embedded(h, &b, FASA_ERROR_UNSUPPORTED, "buffer_device_address_enabled", "bufferDeviceAddress not enabled");
    b = e, b.api_version = VK_API_VERSION_1_0;
    embedded(h, &b, FASA_ERROR_UNSUPPORTED, "api_version", "api_version 1.0");
    b = e, b.queue_family_index = 99;
    embedded(h, &b, FASA_ERROR_INVALID_ARGUMENT, "queue_family_index", "queue_family_index out of range");
    char msg[256] = "";
    fasa_context_desc d = {0};
    d.backend = FASA_BACKEND_AUTO;
    d.embed = &e;
    d.error_message = msg;
    d.error_message_size = sizeof msg;
    fasa_context *ctx = NULL;
    fasa_status st = fasa_context_create(&d, &ctx);
    n_cases++;
    VT_CHECK(st == FASA_ERROR_INVALID_ARGUMENT && strstr(msg, "embed"), "embed with backend auto: %s (%s)",
             fasa_status_string(st), msg);
}

static void wrap_matrix(host *h, fasa_context *vk, fasa_context *cpu, hbuf *qb)
{
    fasa_buffer *sentinel = (fasa_buffer *)(uintptr_t)0x1234, *out = sentinel;
    expect(NULL, fasa_vk_buffer_wrap(NULL, qb->buf, 0, 64, &out), FASA_ERROR_INVALID_ARGUMENT, NULL, "wrap: ctx NULL");
    expect(cpu, fasa_vk_buffer_wrap(cpu, qb->buf, 0, 64, &out), FASA_ERROR_INVALID_ARGUMENT, "not vulkan",
           "wrap: cpu context");
    expect(vk, fasa_vk_buffer_wrap(vk, qb->buf, 0, 64, NULL), FASA_ERROR_INVALID_ARGUMENT, "out", "wrap: out NULL");
    expect(vk, fasa_vk_buffer_wrap(vk, VK_NULL_HANDLE, 0, 64, &out), FASA_ERROR_INVALID_ARGUMENT, "buffer",
           "wrap: VK_NULL_HANDLE");
    expect(vk, fasa_vk_buffer_wrap(vk, qb->buf, 0, 0, &out), FASA_ERROR_INVALID_ARGUMENT, "size", "wrap: size 0");
    expect(vk, fasa_vk_buffer_wrap(vk, qb->buf, 2, 64, &out), FASA_ERROR_INVALID_ARGUMENT, "offset", "wrap: offset 2");
    expect(vk, fasa_vk_buffer_wrap(vk, qb->buf, 0, 62, &out), FASA_ERROR_INVALID_ARGUMENT, "size", "wrap: size 62");
    expect(vk, fasa_vk_buffer_wrap(vk, qb->buf, ~(VkDeviceSize)3, 8, &out), FASA_ERROR_INVALID_ARGUMENT, "overflow",
           "wrap: offset + size overflows");
    expect(vk, fasa_vk_buffer_wrap(vk, qb->buf, qb->size - 4, 8, &out), FASA_ERROR_INVALID_ARGUMENT, "exceeds",
           "wrap: range past the end");
    expect(vk, fasa_vk_buffer_wrap(vk, qb->buf, 0, qb->size + (1u << 20), &out), FASA_ERROR_INVALID_ARGUMENT,
           "exceeds", "wrap: size past the end");
    VT_CHECK(out == sentinel, "a failing wrap wrote *out");

    VkBuffer handle = (VkBuffer)(uintptr_t)0x77;
    VkDeviceSize off = 77;
    fasa_buffer *cb = NULL;
    VT_OK(cpu, fasa_buffer_create(cpu, 64, &cb));
    expect(NULL, fasa_vk_buffer_handle(NULL, &handle, &off), FASA_ERROR_INVALID_ARGUMENT, NULL, "handle: buf NULL");
    expect(cpu, fasa_vk_buffer_handle(cb, &handle, &off), FASA_ERROR_INVALID_ARGUMENT, "not vulkan",
           "handle: cpu buffer");
    fasa_buffer *vb = NULL;
    VT_OK(vk, fasa_vk_buffer_wrap(vk, qb->buf, 0, 64, &vb));
    expect(vk, fasa_vk_buffer_handle(vb, NULL, &off), FASA_ERROR_INVALID_ARGUMENT, "buffer", "handle: buffer NULL");
    expect(vk, fasa_vk_buffer_handle(vb, &handle, NULL), FASA_ERROR_INVALID_ARGUMENT, "offset", "handle: offset NULL");
    VT_CHECK(handle == (VkBuffer)(uintptr_t)0x77 && off == 77, "a failing fasa_vk_buffer_handle wrote its outputs");
    fasa_buffer_destroy(vb);
    fasa_buffer_destroy(cb);
    (void)h;
}

typedef struct fixture {
    host *h;
    fasa_context *vk, *vk2, *cpu, *standalone;
    fasa_kv_cache *cache, *cpu_cache, *sa_cache;
    fasa_buffer *q, *o, *k, *v, *q2;
    hbuf qb, ob, kb;
} fixture;

static void decode_matrix(fixture *f)
{
    fasa_context *vk = f->vk;
    VkCommandBuffer cmd = f->h->cmd;
    fasa_decode_desc d = {.mode = FASA_MODE_FASA, .n_fac = 64, .n_sink = 0, .n_recent = 0, .gqa_select = FASA_GQA_PER_HEAD};
    const char *fn = "fasa_vk_record_decode";
    expect(NULL, fasa_vk_record_decode(NULL, 0, &d, cmd, f->q, 0, f->o, 0), FASA_ERROR_INVALID_ARGUMENT, NULL,
           "decode: cache NULL");
    expect(vk, fasa_vk_record_decode(f->cache, 0, &d, VK_NULL_HANDLE, f->q, 0, f->o, 0), FASA_ERROR_INVALID_ARGUMENT,
           "cmd", "decode: cmd NULL");
    expect(f->cpu, fasa_vk_record_decode(f->cpu_cache, 0, &d, cmd, f->q, 0, f->o, 0), FASA_ERROR_INVALID_ARGUMENT,
           "not vulkan", "decode: cpu cache");
    expect(f->standalone, fasa_vk_record_decode(f->sa_cache, 0, &d, cmd, f->q, 0, f->o, 0),
           FASA_ERROR_INVALID_ARGUMENT, "fasa_vk_embed", "decode: standalone context");
    expect(vk, fasa_vk_record_decode(f->cache, 5, &d, cmd, f->q, 0, f->o, 0), FASA_ERROR_INVALID_ARGUMENT, "layer",
           "decode: layer out of range");
    expect(vk, fasa_vk_record_decode(f->cache, 0, &d, cmd, NULL, 0, f->o, 0), FASA_ERROR_INVALID_ARGUMENT, "q",
           "decode: q NULL");
    expect(vk, fasa_vk_record_decode(f->cache, 0, &d, cmd, f->q, 0, NULL, 0), FASA_ERROR_INVALID_ARGUMENT, "o",
           "decode: o NULL");
    expect(vk, fasa_vk_record_decode(f->cache, 0, &d, cmd, f->q2, 0, f->o, 0), FASA_ERROR_INVALID_ARGUMENT,
           "another context", "decode: q from another context");
    expect(vk, fasa_vk_record_decode(f->cache, 0, &d, cmd, f->q, 2, f->o, 0), FASA_ERROR_INVALID_ARGUMENT, "q_offset",
           "decode: q_offset not a multiple of 4");
    expect(vk, fasa_vk_record_decode(f->cache, 0, &d, cmd, f->q, 1 << 20, f->o, 0), FASA_ERROR_INVALID_ARGUMENT,
           "q needs", "decode: q range past its buffer");
    expect(vk, fasa_vk_record_decode(f->cache, 0, &d, cmd, f->q, 0, f->q, 0), FASA_ERROR_INVALID_ARGUMENT, "overlap",
           "decode: q and o overlap");
    fasa_decode_desc big = d;
    big.n_fac = 9000;
    expect(vk, fasa_vk_record_decode(f->cache, 0, &big, cmd, f->q, 0, f->o, 0), FASA_ERROR_INVALID_ARGUMENT, "n_fac",
           "decode: n_fac above max_n_fac");
    fasa_decode_desc forced = d;
    forced.n_sink = 40, forced.n_recent = 40;
    expect(vk, fasa_vk_record_decode(f->cache, 0, &forced, cmd, f->q, 0, f->o, 0), FASA_ERROR_INVALID_ARGUMENT,
           "n_sink", "decode: forced tokens above n_fac");
    fasa_decode_desc mode = d;
    mode.mode = (fasa_mode)7;
    expect(vk, fasa_vk_record_decode(f->cache, 0, &mode, cmd, f->q, 0, f->o, 0), FASA_ERROR_INVALID_ARGUMENT, "mode",
           "decode: unknown mode");
    expect(vk, fasa_vk_record_decode(f->cache, 1, &d, cmd, f->q, 0, f->o, 0), FASA_ERROR_INVALID_ARGUMENT,
           "no tokens", "decode: empty layer");
    (void)fn;
}

static void append_matrix(fixture *f)
{
    fasa_context *vk = f->vk;
    VkCommandBuffer cmd = f->h->cmd;
    uint32_t before = 0, after = 0;
    fasa_kv_cache_length(f->cache, 0, &before);
    expect(NULL, fasa_vk_record_append(NULL, 0, 1, cmd, f->k, 0, f->v, 0, FASA_DTYPE_F32), FASA_ERROR_INVALID_ARGUMENT,
           NULL, "append: cache NULL");
    expect(vk, fasa_vk_record_append(f->cache, 0, 1, VK_NULL_HANDLE, f->k, 0, f->v, 0, FASA_DTYPE_F32),
           FASA_ERROR_INVALID_ARGUMENT, "cmd", "append: cmd NULL");
    expect(f->cpu, fasa_vk_record_append(f->cpu_cache, 0, 1, cmd, f->k, 0, f->v, 0, FASA_DTYPE_F32),
           FASA_ERROR_INVALID_ARGUMENT, "not vulkan", "append: cpu cache");
    expect(f->standalone, fasa_vk_record_append(f->sa_cache, 0, 1, cmd, f->k, 0, f->v, 0, FASA_DTYPE_F32),
           FASA_ERROR_INVALID_ARGUMENT, "fasa_vk_embed", "append: standalone context");
    expect(vk, fasa_vk_record_append(f->cache, 9, 1, cmd, f->k, 0, f->v, 0, FASA_DTYPE_F32), FASA_ERROR_INVALID_ARGUMENT,
           "layer", "append: layer out of range");
    expect(vk, fasa_vk_record_append(f->cache, 0, 0, cmd, f->k, 0, f->v, 0, FASA_DTYPE_F32), FASA_ERROR_INVALID_ARGUMENT,
           "n is 0", "append: n 0");
    expect(vk, fasa_vk_record_append(f->cache, 0, 1, cmd, NULL, 0, f->v, 0, FASA_DTYPE_F32), FASA_ERROR_INVALID_ARGUMENT,
           "k is NULL", "append: k NULL");
    expect(vk, fasa_vk_record_append(f->cache, 0, 1, cmd, f->k, 0, NULL, 0, FASA_DTYPE_F32), FASA_ERROR_INVALID_ARGUMENT,
           "v is NULL", "append: v NULL");
    expect(vk, fasa_vk_record_append(f->cache, 0, 1, cmd, f->k, 0, f->v, 0, (fasa_dtype)9), FASA_ERROR_INVALID_ARGUMENT,
           "src_dtype", "append: unknown src dtype");
    expect(vk, fasa_vk_record_append(f->cache, 0, 1, cmd, f->q2, 0, f->v, 0, FASA_DTYPE_F32),
           FASA_ERROR_INVALID_ARGUMENT, "another context", "append: k from another context");
    expect(vk, fasa_vk_record_append(f->cache, 0, 1, cmd, f->k, 6, f->v, 0, FASA_DTYPE_F32), FASA_ERROR_INVALID_ARGUMENT,
           "k_offset", "append: k_offset not a multiple of 4");
    expect(vk, fasa_vk_record_append(f->cache, 0, 64, cmd, f->k, 0, f->v, 0, FASA_DTYPE_F32),
           FASA_ERROR_INVALID_ARGUMENT, "exceeds", "append: k range past its buffer");
    expect(vk, fasa_vk_record_append(f->cache, 0, 5000, cmd, f->k, 0, f->v, 0, FASA_DTYPE_F32), FASA_ERROR_CAPACITY,
           "do not fit", "append: past the capacity");
    fasa_kv_cache_length(f->cache, 0, &after);
    VT_CHECK(before == after, "a failing record_append changed the length (%u -> %u)", before, after);
}

static fasa_kv_cache *cache_on(fasa_context *ctx, const fasa_model_shape *s, fasa_calibration **cal)
{
    *cal = vt_calibration(ctx, s, 4, false, 5);
    fasa_kv_cache_desc cd = {0};
    cd.shape = *s;
    cd.capacity = 1024;
    cd.calibration = *cal;
    cd.flags = FASA_CACHE_NO_DENSE_LAYERS;
    fasa_kv_cache *c = NULL;
    VT_OK(ctx, fasa_kv_cache_create(ctx, &cd, &c));
    if (!c) exit(1);
    return c;
}

int main(void)
{
    host h;
    memset(&h, 0, sizeof h);
    create_instance(&h);
    create_device(&h);
    context_matrix(&h);

    fixture f;
    memset(&f, 0, sizeof f);
    f.h = &h;
    fasa_vk_embed e = host_embed(&h);
    fasa_context_desc cd = {0};
    cd.backend = FASA_BACKEND_VULKAN;
    cd.embed = &e;
    VT_OK(NULL, fasa_context_create(&cd, &f.vk));
    VT_OK(NULL, fasa_context_create(&cd, &f.vk2));
    f.cpu = vt_context(FASA_BACKEND_CPU, 0);
    f.standalone = vt_context_validated();
    if (!f.vk || !f.vk2) return 1;
    fasa_model_shape s = {2, 4, 2, 32, FASA_ROPE_NORM};
    fasa_calibration *c1, *c2, *c3;
    f.cache = cache_on(f.vk, &s, &c1);
    f.cpu_cache = cache_on(f.cpu, &s, &c2);
    f.sa_cache = cache_on(f.standalone, &s, &c3);
    size_t nq = (size_t)s.n_q_heads * s.head_dim * 4, row = (size_t)s.n_kv_heads * s.head_dim * 4;
    f.qb = make_buffer(&h, nq, VK_BUFFER_USAGE_TRANSFER_SRC_BIT);
    f.ob = make_buffer(&h, nq, VK_BUFFER_USAGE_TRANSFER_DST_BIT);
    f.kb = make_buffer(&h, 8 * row, VK_BUFFER_USAGE_TRANSFER_SRC_BIT);
    memset(f.qb.map, 0, nq);
    memset(f.kb.map, 0, 8 * row);
    VT_OK(f.vk, fasa_vk_buffer_wrap(f.vk, f.qb.buf, 0, nq, &f.q));
    VT_OK(f.vk, fasa_vk_buffer_wrap(f.vk, f.ob.buf, 0, nq, &f.o));
    VT_OK(f.vk, fasa_vk_buffer_wrap(f.vk, f.kb.buf, 0, 8 * row, &f.k));
    VT_OK(f.vk, fasa_vk_buffer_wrap(f.vk, f.kb.buf, 0, 8 * row, &f.v));
    VT_OK(f.vk2, fasa_vk_buffer_wrap(f.vk2, f.qb.buf, 0, nq, &f.q2));
    wrap_matrix(&h, f.vk, f.cpu, &f.qb);

    /* one valid token in layer 0, then every bad record call into one command
     * buffer: after it runs, the poisoned output must be untouched */
    begin(&h);
    VT_OK(f.vk, fasa_vk_record_append(f.cache, 0, 8, h.cmd, f.k, 0, f.v, 0, FASA_DTYPE_F32));
    end_and_submit(&h);
    memset(f.ob.map, 0xee, nq);
    begin(&h);
    decode_matrix(&f);
    append_matrix(&f);
    end_and_submit(&h);
    bool untouched = true;
    for (size_t i = 0; i < nq; i++) untouched = untouched && ((uint8_t *)f.ob.map)[i] == 0xee;
    VT_CHECK(untouched, "failing record calls recorded work that wrote o");
    printf("%d bad-input cases checked\n", n_cases);

    fasa_buffer *bufs[] = {f.q, f.o, f.k, f.v, f.q2};
    for (int i = 0; i < 5; i++) fasa_buffer_destroy(bufs[i]);
    fasa_kv_cache_destroy(f.cache);
    fasa_kv_cache_destroy(f.cpu_cache);
    fasa_kv_cache_destroy(f.sa_cache);
    fasa_calibration_destroy(c1);
    fasa_calibration_destroy(c2);
    fasa_calibration_destroy(c3);
    fasa_context_destroy(f.vk);
    fasa_context_destroy(f.vk2);
    fasa_context_destroy(f.cpu);
    fasa_context_destroy(f.standalone);
    free_buffer(&h, &f.qb);
    free_buffer(&h, &f.ob);
    free_buffer(&h, &f.kb);
    destroy_host(&h);
    VT_CHECK(h.n_messages == 0, "%u validation message(s) on the host's instance", h.n_messages);
    return vt_finish("test_vk_badinput");
}
