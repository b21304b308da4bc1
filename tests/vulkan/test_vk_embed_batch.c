/* Recorded batches in the host's command buffer: two
 * fasa_vk_record_decode_batch calls (the second larger, so the cache's
 * batch buffers grow and the outgrown ones must stay alive for the first
 * batch's commands), items alternating between two caches of different
 * lengths, fp32 q/o in the first batch and f16 q / bf16 o in the second,
 * o written in reverse item order.  After one submit every item's o must
 * equal a standalone fasa_decode of that item bit for bit, with no
 * validation message (synchronization validation on). */
#include "vt_common.h"

#include "vt_host.h"

#include <string.h>

static fasa_kv_cache *make_cache(fasa_context *ctx, const fasa_model_shape *s, fasa_calibration *cal, uint32_t L,
                                 vt_rng *r)
{
    fasa_kv_cache_desc cd = {.shape = *s, .capacity = 2048, .dtype = FASA_DTYPE_F16, .calibration = cal,
                             .flags = FASA_CACHE_NO_DENSE_LAYERS};
    fasa_kv_cache *c = NULL;
    VT_OK(ctx, fasa_kv_cache_create(ctx, &cd, &c));
    if (!c) exit(1);
    size_t n = (size_t)L * s->n_kv_heads * s->head_dim;
    float *k = malloc(n * 4), *v = malloc(n * 4);
    for (size_t j = 0; j < n; j++) k[j] = vt_normal(r), v[j] = vt_normal(r);
    VT_OK(ctx, fasa_kv_cache_append(c, 0, L, k, v, FASA_DTYPE_F32));
    free(k);
    free(v);
    return c;
}

enum { B1 = 3, B2 = 9, NB = B1 + B2 };

int main(void)
{
    host h;
    memset(&h, 0, sizeof h);
    h.sync_validation = true;
    create_instance(&h);
    create_device(&h);
    fasa_vk_embed e = host_embed(&h);
    fasa_context_desc cd = {.backend = FASA_BACKEND_VULKAN, .embed = &e};
    fasa_context *vk = NULL;
    if (fasa_context_create(&cd, &vk) != FASA_OK) {
        fprintf(stderr, "FAIL: embedded context\n");
        return 1;
    }
    fasa_model_shape s = {1, 8, 2, 64, FASA_ROPE_NORM};
    fasa_calibration *cal = vt_calibration(vk, &s, 8, false, 7);
    vt_rng r = {5};
    fasa_kv_cache *c[2] = {make_cache(vk, &s, cal, 1500, &r), make_cache(vk, &s, cal, 700, &r)};
    size_t nq = (size_t)s.n_q_heads * s.head_dim;
    VkBufferUsageFlags use = VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
    hbuf qb = make_buffer(&h, NB * nq * 4, use), ob = make_buffer(&h, NB * nq * 4, use);
    float *q = qb.map;
    for (size_t j = 0; j < NB * nq; j++) q[j] = vt_normal(&r);
    fasa_buffer *qw = NULL, *ow = NULL, *o1 = NULL;
    VT_OK(vk, fasa_vk_buffer_wrap(vk, qb.buf, 0, qb.size, &qw));
    VT_OK(vk, fasa_vk_buffer_wrap(vk, ob.buf, 0, ob.size, &ow));
    VT_OK(vk, fasa_buffer_create(vk, nq * 4, &o1));
    fasa_decode_item it[NB];
    for (int i = 0; i < NB; i++)
        it[i] = (fasa_decode_item){c[i % 2], NULL, qw, (uint64_t)i * nq * 4, ow, (uint64_t)(NB - 1 - i) * nq * 4};
    fasa_decode_desc d1 = {.n_fac = 128, .n_sink = 1, .n_recent = 3};
    fasa_decode_desc d2 = {.n_fac = 64, .q_type = FASA_IO_F16, .o_type = FASA_IO_BF16};
    memset(ob.map, 0x7f, ob.size);
    begin(&h);
    VT_OK(vk, fasa_vk_record_decode_batch(vk, 0, &d1, B1, it, h.cmd));
    VT_OK(vk, fasa_vk_record_decode_batch(vk, 0, &d2, B2, it + B1, h.cmd));
    end_and_submit(&h);
    uint8_t *got = malloc(ob.size), one[4096];
    memcpy(got, ob.map, ob.size);
    for (int i = 0; i < NB; i++) {
        fasa_decode_desc *d = i < B1 ? &d1 : &d2;
        size_t bytes = nq * (i < B1 ? 4 : 2);
        VT_OK(vk, fasa_decode(c[i % 2], 0, d, qw, (uint64_t)i * nq * 4, o1, 0));
        VT_OK(vk, fasa_buffer_read(o1, 0, one, bytes));
        VT_CHECK(memcmp(one, got + (size_t)(NB - 1 - i) * nq * 4, bytes) == 0,
                 "item %d: the recorded batch's o differs from a single fasa_decode", i);
    }
    VT_CHECK(h.n_messages == 0, "%u validation messages", h.n_messages);
    printf("recorded batches of %d and %d items, %u validation messages\n", B1, B2, h.n_messages);
    free(got);
    fasa_kv_cache_destroy(c[0]);
    fasa_kv_cache_destroy(c[1]);
    fasa_buffer_destroy(qw);
    fasa_buffer_destroy(ow);
    fasa_buffer_destroy(o1);
    fasa_calibration_destroy(cal);
    fasa_context_destroy(vk);
    free_buffer(&h, &qb);
    free_buffer(&h, &ob);
    return vt_finish("test_vk_embed_batch");
}
