/* Public structs no libfasa function signature reaches (they travel as
 * `const void *`: fasa_context_desc.embed, the `next` chains), so abidw
 * cannot see them in libfasa.so.  This probe takes a pointer to each; its
 * DWARF gives tests/abi/check.sh their layout, compared with the baseline
 * tests/abi/probe.abi like the library's own.  Built as a module, never
 * installed, only with the Vulkan and OpenCL headers. */
#include "fasa.h"
#include "fasa_cuda.h"
#include "fasa_opencl.h"
#include "fasa_vulkan.h"

__attribute__((visibility("default"))) void fasa_abi_probe(const fasa_vk_embed *vk, const fasa_cl_embed *cl,
                                                           const fasa_cuda_embed *cuda,
                                                           const fasa_struct_header *ext);

void fasa_abi_probe(const fasa_vk_embed *vk, const fasa_cl_embed *cl, const fasa_cuda_embed *cuda,
                    const fasa_struct_header *ext)
{
    (void)vk, (void)cl, (void)cuda, (void)ext;
}
