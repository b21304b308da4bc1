/* Run-time loading of the GPU runtimes (the Vulkan and OpenCL loaders):
 * dlopen on POSIX, LoadLibrary on Windows.  libfasa.so has no link-time
 * dependency on them, so an application that only uses the CPU backend runs
 * where they are not installed (docs/API.md, "Loading and ABI"). */
#ifndef FASA_DYNLIB_H
#define FASA_DYNLIB_H

#include <stddef.h>

/* Opens the first library of `names` (NULL-terminated) that loads.  On
 * failure returns NULL and writes "cannot load NAME (REASON)" for the first
 * name, REASON being dlerror()'s text, into msg. */
void *fasa__dynlib_open(const char *const *names, char *msg, size_t msg_size);
/* Address of a symbol of an opened library, or NULL. */
void *fasa__dynlib_sym(void *lib, const char *name);
/* Drops one reference (the system refcounts: the library is unloaded when
 * nothing else holds it).  NULL is a no-op. */
void fasa__dynlib_close(void *lib);

/* Library names each loader is looked up by, per platform. */
#if defined(_WIN32)
#define FASA_VULKAN_LOADER_NAMES {"vulkan-1.dll", NULL}
#define FASA_OPENCL_LOADER_NAMES {"OpenCL.dll", NULL}
#elif defined(__APPLE__)
#define FASA_VULKAN_LOADER_NAMES {"libvulkan.1.dylib", "libMoltenVK.dylib", NULL}
#define FASA_OPENCL_LOADER_NAMES {"/System/Library/Frameworks/OpenCL.framework/OpenCL", NULL}
#else
#define FASA_VULKAN_LOADER_NAMES {"libvulkan.so.1", NULL}
#define FASA_OPENCL_LOADER_NAMES {"libOpenCL.so.1", NULL}
#endif

#endif
