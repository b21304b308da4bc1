/* Embedding test: the host owns the Vulkan instance, device, queue, command
 * pool and buffers (validation layer on, with its own debug messenger);
 * libfasa only records appends and decode steps into the host's command
 * buffer, the host submits.  Outputs are compared with the CPU backend. */
#include "vt_common.h"

#include "vt_host.h"
#include "internal.h" /* fasa__float_to_half: the fp16 rounding of the q/o check */

#include <math.h>
#include <string.h>

static fasa_kv_cache *make_cache(fasa_context *ctx, const fasa_model_shape *s, fasa_calibration *cal, uint32_t cap)
{
    fasa_kv_cache_desc cd = {0};
    cd.shape = *s;
    cd.capacity = cap;
    cd.dtype = FASA_DTYPE_F16;
    cd.calibration = cal;
    cd.flags = FASA_CACHE_NO_DENSE_LAYERS;
    fasa_kv_cache *c = NULL;
    VT_OK(ctx, fasa_kv_cache_create(ctx, &cd, &c));
    if (!c) exit(1);
    return c;
}

/* An external cache over the host's own buffers: K and V token-major fp32
 * at offset 64 of buffers with SHADER_DEVICE_ADDRESS usage, written by the
 * host through its mapping; syncs and a decode recorded into the host's
 * command buffer must match a CPU cache of the same values. */
static void external_step(host *h, fasa_context *vk, fasa_context *cpu, const fasa_model_shape *s,
                          fasa_calibration *cal_v, fasa_calibration *cal_c, const float *kf, const float *vf,
                          const float *q, fasa_buffer *qw, fasa_buffer *ow, const float *o)
{
    const uint32_t n = 2000, first = 700;
    size_t row = (size_t)s->n_kv_heads * s->head_dim, n_q = (size_t)s->n_q_heads * s->head_dim;
    VkBufferUsageFlags use = VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT;
    hbuf kx = make_buffer(h, 64 + n * row * 4, use), vx = make_buffer(h, 64 + n * row * 4, use);
    memcpy((char *)kx.map + 64, kf, n * row * 4);
    memcpy((char *)vx.map + 64, vf, n * row * 4);
    fasa_buffer *kw = NULL, *vw = NULL;
    VT_OK(vk, fasa_vk_buffer_wrap(vk, kx.buf, 64, n * row * 4, &kw));
    VT_OK(vk, fasa_vk_buffer_wrap(vk, vx.buf, 64, n * row * 4, &vw));
    fasa_buffer *ks[2] = {kw, kw}, *vs[2] = {vw, vw};
    fasa_kv_external x = {.token_stride = row, .head_stride = s->head_dim, .k = ks, .v = vs};
    fasa_kv_cache_desc kd = {.shape = *s, .capacity = n, .dtype = FASA_DTYPE_F32, .calibration = cal_c,
                             .flags = FASA_CACHE_NO_DENSE_LAYERS};
    fasa_kv_cache *xc = NULL, *cc = NULL;
    VT_OK(cpu, fasa_kv_cache_create(cpu, &kd, &cc));
    kd.calibration = cal_v;
    kd.external = &x;
    VT_OK(vk, fasa_kv_cache_create(vk, &kd, &xc));
    if (!xc || !cc) exit(1);
    fasa_memory_report mem;
    fasa_kv_cache_memory(xc, &mem);
    printf("external cache: %llu device bytes of its own for %llu bytes of K+V\n",
           (unsigned long long)mem.device_bytes, (unsigned long long)mem.dense_equivalent);
    VT_CHECK(fasa_vk_record_kv_cache_sync(xc, 1, 0, 1, VK_NULL_HANDLE) == FASA_ERROR_INVALID_ARGUMENT &&
                 strstr(fasa_context_last_error(vk), "cmd is NULL"),
             "record sync without a command buffer: %s", fasa_context_last_error(vk));
    fasa_decode_desc d = {.n_fac = 256, .n_sink = 2, .n_recent = 2};
    begin(h);
    VT_OK(vk, fasa_vk_record_kv_cache_sync(xc, 1, 0, first, h->cmd));
    VT_OK(vk, fasa_vk_record_kv_cache_sync(xc, 1, first, n - first, h->cmd));
    VT_OK(vk, fasa_vk_record_decode(xc, 1, &d, h->cmd, qw, 128, ow, 0));
    end_and_submit(h);
    VT_OK(cpu, fasa_kv_cache_append(cc, 1, n, kf, vf, FASA_DTYPE_F32));
    float *ref = malloc(n_q * 4), *back = malloc(n * row * 4);
    VT_OK(cpu, fasa_decode_host(cc, 1, &d, q, ref, NULL));
    double e = vt_nmse(ref, o, n_q);
    printf("external K/V (recorded syncs + FASA decode): NMSE vs CPU %.3g\n", e);
    VT_CHECK(e <= 1e-7, "external step NMSE %.3g", e);
    VT_OK(vk, fasa_kv_cache_read(xc, 1, 0, n, back, NULL));
    VT_CHECK(memcmp(back, kf, n * row * 4) == 0, "fasa_kv_cache_read of the host's K differs");
    fasa_kv_cache_destroy(xc);
    fasa_kv_cache_destroy(cc);
    fasa_buffer_destroy(kw);
    fasa_buffer_destroy(vw);
    free_buffer(h, &kx);
    free_buffer(h, &vx);
    free(ref);
    free(back);
}

int main(void)
{
    host h;
    memset(&h, 0, sizeof h);
    h.sync_validation = true;
    create_instance(&h);
    create_device(&h);

    fasa_vk_embed e = host_embed(&h);
    char msg[1024] = "";
    fasa_context_desc cd = {0};
    cd.backend = FASA_BACKEND_VULKAN;
    cd.embed = &e;
    cd.error_message = msg;
    cd.error_message_size = sizeof msg;
    fasa_context *vk = NULL;
    fasa_status st = fasa_context_create(&cd, &vk);
    if (st != FASA_OK) {
        fprintf(stderr, "FAIL: embedded context: %s\n", msg);
        return 1;
    }
    fasa_device_info dev;
    fasa_context_device(vk, &dev);
    printf("libfasa on the host's device: %s (%s)\n", dev.name, dev.driver);
    fasa_context *cpu = vt_context(FASA_BACKEND_CPU, 0);

    fasa_model_shape s = {2, 8, 2, 64, FASA_ROPE_NORM};
    fasa_calibration *cal_v = vt_calibration(vk, &s, 8, false, 99), *cal_c = vt_calibration(cpu, &s, 8, false, 99);
    const uint32_t n0 = 3000, cap = 4096;
    fasa_kv_cache *vc = make_cache(vk, &s, cal_v, cap), *cc = make_cache(cpu, &s, cal_c, cap);
    /* the host did not enable VK_EXT_external_memory_host: no imports */
    fasa_kv_cache_desc md = {.shape = s, .capacity = cap, .placement = FASA_PLACEMENT_OFFLOAD};
    uint64_t msize = 0, malign = 0;
    VT_CHECK(fasa_kv_cache_host_memory_requirements(vk, &md, &msize, &malign) == FASA_ERROR_UNSUPPORTED &&
                 strstr(fasa_context_last_error(vk), "external_memory_host_enabled"),
             "host memory import without the extension: %s", fasa_context_last_error(vk));

    size_t row = (size_t)s.n_kv_heads * s.head_dim, n_q = (size_t)s.n_q_heads * s.head_dim;
    VkBufferUsageFlags src = VK_BUFFER_USAGE_TRANSFER_SRC_BIT, dst = VK_BUFFER_USAGE_TRANSFER_DST_BIT;
    hbuf kb = make_buffer(&h, (n0 + 1) * row * 4, src), vb = make_buffer(&h, (n0 + 1) * row * 4, src);
    hbuf qb = make_buffer(&h, n_q * 4 + 256, src), ob = make_buffer(&h, n_q * 4 + 512, dst);
    vt_rng r = {2024};
    printf("seed 2024\n");
    float *kf = kb.map, *vf = vb.map, *q = (float *)((char *)qb.map + 128);
    for (size_t i = 0; i < (n0 + 1) * row; i++) kf[i] = vt_normal(&r), vf[i] = vt_normal(&r);
    for (size_t i = 0; i < n_q; i++) q[i] = vt_normal(&r);
    fasa_buffer *k = NULL, *v = NULL, *qw = NULL, *ow = NULL;
    VT_OK(vk, fasa_vk_buffer_wrap(vk, kb.buf, 0, kb.size, &k));
    VT_OK(vk, fasa_vk_buffer_wrap(vk, vb.buf, 0, vb.size, &v));
    VT_OK(vk, fasa_vk_buffer_wrap(vk, qb.buf, 0, qb.size, &qw));
    VT_OK(vk, fasa_vk_buffer_wrap(vk, ob.buf, 256, n_q * 4, &ow));
    VkBuffer handle = VK_NULL_HANDLE;
    VkDeviceSize off = 1;
    VT_OK(vk, fasa_vk_buffer_handle(ow, &handle, &off));
    VT_CHECK(handle == ob.buf && off == 256, "fasa_vk_buffer_handle gave another buffer or offset");

    /* step 1: append 3000 tokens to both layers and decode layer 1 (FASA), one command buffer */
    fasa_decode_desc d = {.mode = FASA_MODE_FASA, .n_fac = 256, .n_sink = 2, .n_recent = 2, .gqa_select = FASA_GQA_PER_HEAD};
    memset(ob.map, 0xa5, ob.size);
    begin(&h);
    for (uint32_t l = 0; l < 2; l++) VT_OK(vk, fasa_vk_record_append(vc, l, n0, h.cmd, k, 0, v, 0, FASA_DTYPE_F32));
    uint32_t len = 0;
    fasa_kv_cache_length(vc, 1, &len);
    VT_CHECK(len == n0, "recorded append did not advance the length at record time (%u)", len);
    VT_OK(vk, fasa_vk_record_decode(vc, 1, &d, h.cmd, qw, 128, ow, 0));
    end_and_submit(&h);
    for (uint32_t l = 0; l < 2; l++) VT_OK(cpu, fasa_kv_cache_append(cc, l, n0, kf, vf, FASA_DTYPE_F32));
    float *ref = malloc(n_q * 4);
    VT_OK(cpu, fasa_decode_host(cc, 1, &d, q, ref, NULL));
    const float *o = (const float *)((char *)ob.map + 256);
    double e1 = vt_nmse(ref, o, n_q);
    printf("step 1 (append 3000 + FASA decode, recorded): NMSE vs CPU %.3g\n", e1);
    VT_CHECK(e1 <= 1e-7, "step 1 NMSE %.3g", e1);
    bool guards = true;
    for (size_t i = 0; i < 256; i++)
        guards = guards && ((uint8_t *)ob.map)[i] == 0xa5 && ((uint8_t *)ob.map)[256 + n_q * 4 + i] == 0xa5;
    VT_CHECK(guards, "bytes around the wrapped output range were written");

    /* step 2: one more token, then a dense decode of layer 0, in a second submission */
    fasa_decode_desc dd = {.mode = FASA_MODE_DENSE, .n_fac = 0, .n_sink = 0, .n_recent = 0, .gqa_select = FASA_GQA_PER_HEAD};
    begin(&h);
    VT_OK(vk, fasa_vk_record_append(vc, 0, 1, h.cmd, k, n0 * row * 4, v, n0 * row * 4, FASA_DTYPE_F32));
    VT_OK(vk, fasa_vk_record_decode(vc, 0, &dd, h.cmd, qw, 128, ow, 0));
    end_and_submit(&h);
    VT_OK(cpu, fasa_kv_cache_append(cc, 0, 1, kf + n0 * row, vf + n0 * row, FASA_DTYPE_F32));
    VT_OK(cpu, fasa_decode_host(cc, 0, &dd, q, ref, NULL));
    double e2 = vt_nmse(ref, o, n_q);
    printf("step 2 (append 1 + dense decode, recorded): NMSE vs CPU %.3g\n", e2);
    VT_CHECK(e2 <= 1e-7, "step 2 NMSE %.3g", e2);

    external_step(&h, vk, cpu, &s, cal_v, cal_c, kf, vf, q, qw, ow, o);

    /* standalone calls on the embedded context use the host's queue */
    float *o2 = malloc(n_q * 4);
    VT_OK(vk, fasa_decode_host(vc, 1, &d, q, o2, NULL));
    VT_OK(cpu, fasa_decode_host(cc, 1, &d, q, ref, NULL));
    double e3 = vt_nmse(ref, o2, n_q);
    printf("standalone decode on the embedded context: NMSE vs CPU %.3g\n", e3);
    VT_CHECK(e3 <= 1e-7, "standalone decode NMSE %.3g", e3);

    /* a recorded decode with q and o in fp16 (desc q_type / o_type): o is the
     * fp32 step's o of the same (fp16-valued) q, rounded, bit for bit */
    {
        float *qr = malloc(n_q * 4);
        for (size_t i = 0; i < n_q; i++) qr[i] = fasa__half_to_float(fasa__float_to_half(q[i]));
        VT_OK(vk, fasa_decode_host(vc, 1, &d, qr, o2, NULL));
        uint16_t *qh = (uint16_t *)((char *)qb.map + 128); /* over q, which is no longer needed */
        for (size_t i = 0; i < n_q; i++) qh[i] = fasa__float_to_half(qr[i]);
        fasa_decode_desc dh = d;
        dh.q_type = dh.o_type = FASA_IO_F16;
        memset(ob.map, 0xa5, ob.size);
        begin(&h);
        VT_OK(vk, fasa_vk_record_decode(vc, 1, &dh, h.cmd, qw, 128, ow, 0));
        end_and_submit(&h);
        const uint16_t *oh = (const uint16_t *)((char *)ob.map + 256);
        size_t bad = 0;
        for (size_t i = 0; i < n_q; i++) bad += oh[i] != fasa__float_to_half(o2[i]);
        for (size_t i = 0; i < 256; i++) bad += ((uint8_t *)ob.map)[256 + n_q * 2 + i] != 0xa5;
        VT_CHECK(bad == 0, "recorded fp16 q/o decode: %zu elements differ from the fp32 o rounded (or guards)", bad);
        free(qr);
    }

    fasa_buffer_destroy(k);
    fasa_buffer_destroy(v);
    fasa_buffer_destroy(qw);
    fasa_buffer_destroy(ow);
    fasa_kv_cache_destroy(vc);
    fasa_kv_cache_destroy(cc);
    fasa_calibration_destroy(cal_v);
    fasa_calibration_destroy(cal_c);
    fasa_context_destroy(vk);
    fasa_context_destroy(cpu);
    free(ref);
    free(o2);
    free_buffer(&h, &kb);
    free_buffer(&h, &vb);
    free_buffer(&h, &qb);
    free_buffer(&h, &ob);
    destroy_host(&h);
    VT_CHECK(h.n_messages == 0, "%u validation message(s) on the host's instance", h.n_messages);
    return vt_finish("test_vk_embed");
}
