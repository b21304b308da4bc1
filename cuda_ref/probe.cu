// Configure-time probe (cuda_ref/meson.build): nvcc, its host compiler and
// the -gencode list work together.
__global__ void fasa_probe(int *p) { *p = 1; }
