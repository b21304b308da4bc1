/* SPIR-V of the compute shaders, embedded at build time by
 * shaders/embed_spirv.py (one entry per shader variant). */
#ifndef FASA_VK_SPIRV_H
#define FASA_VK_SPIRV_H

#include <stddef.h>
#include <stdint.h>

typedef struct fasa_vk_spirv {
    const char *name;      /* e.g. "tip_f16" */
    const uint32_t *code;
    size_t size;           /* bytes */
} fasa_vk_spirv;

extern const fasa_vk_spirv fasa__vk_spirv[];
extern const uint32_t fasa__vk_spirv_count;

#endif
