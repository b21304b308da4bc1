/* Run-time loading of shared libraries (see dynlib.h). */
#include "dynlib.h"

#include <stdint.h>
#include <stdio.h>

#if defined(_WIN32)
#include <windows.h>

void *fasa__dynlib_open(const char *const *names, char *msg, size_t msg_size)
{
    DWORD first_err = 0;
    for (size_t i = 0; names[i]; i++) {
        HMODULE h = LoadLibraryA(names[i]);
        if (h) return (void *)h;
        if (i == 0) first_err = GetLastError();
    }
    if (msg && msg_size)
        snprintf(msg, msg_size, "cannot load %s (LoadLibrary error %lu)", names[0], (unsigned long)first_err);
    return NULL;
}

void *fasa__dynlib_sym(void *lib, const char *name)
{
    return lib ? (void *)(uintptr_t)GetProcAddress((HMODULE)lib, name) : NULL;
}

void fasa__dynlib_close(void *lib)
{
    if (lib) FreeLibrary((HMODULE)lib);
}

#else
#include <dlfcn.h>

void *fasa__dynlib_open(const char *const *names, char *msg, size_t msg_size)
{
    char first[512] = "";
    for (size_t i = 0; names[i]; i++) {
        /* RTLD_LOCAL: the loader's symbols stay out of the global namespace,
         * so they never interpose on an application's own copy */
        void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (h) return h;
        if (i == 0) {
            const char *e = dlerror();
            snprintf(first, sizeof first, "%s", e ? e : "unknown dlopen error");
        }
    }
    if (msg && msg_size) snprintf(msg, msg_size, "cannot load %s (%s)", names[0], first);
    return NULL;
}

void *fasa__dynlib_sym(void *lib, const char *name)
{
    return lib ? dlsym(lib, name) : NULL;
}

void fasa__dynlib_close(void *lib)
{
    if (lib) dlclose(lib);
}
#endif
