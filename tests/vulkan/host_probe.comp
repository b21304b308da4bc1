// The host application's own compute shader in test_vk_embed_contract: it
// logs its push constant into a storage buffer bound through a descriptor
// set, so the test sees which pipeline, push constants and set were bound
// when it ran after a libfasa record call.
#version 450
layout(local_size_x = 1) in;
layout(std430, set = 0, binding = 0) buffer Log {
    uint count;
    uint values[7];
} log_;
layout(push_constant) uniform Push {
    uint value;
} pc;

void main()
{
    uint i = atomicAdd(log_.count, 1u);
    log_.values[min(i, 6u)] = pc.value;
}
