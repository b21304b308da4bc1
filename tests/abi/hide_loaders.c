/* LD_PRELOAD shim for tests/abi/test_no_loaders.sh: dlopen() of the GPU
 * runtimes (libvulkan.so*, libOpenCL.so*, libcuda.so*) fails as if they
 * were not installed; the error text is the dynamic loader's own for a
 * missing file ("libvulkan.so.1-hidden-by-test: cannot open shared object
 * file: ...").  Everything else goes to the real dlopen. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

void *dlopen(const char *file, int mode)
{
    static void *(*real)(const char *, int);
    if (!real) real = (void *(*)(const char *, int))dlsym(RTLD_NEXT, "dlopen");
    if (file) {
        const char *base = strrchr(file, '/');
        base = base ? base + 1 : file;
        if (strncmp(base, "libvulkan.so", 12) == 0 || strncmp(base, "libOpenCL.so", 12) == 0 ||
            strncmp(base, "libcuda.so", 10) == 0) {
            char hidden[512];
            snprintf(hidden, sizeof hidden, "%s-hidden-by-test", base);
            return real(hidden, mode);
        }
    }
    return real(file, mode);
}
