/* Run-time loading of the OpenCL ICD loader (see cl_loader.h). */
#define FASA_CL_LOADER_IMPL /* the real cl* names: no redirecting macros here */
#include "cl_loader.h"
#include "dynlib.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

fasa_cl_api fasa__cl;
int fasa__cl_loaded;

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;

static fasa_status load_locked(char *msg, size_t msg_size)
{
    static const char *const names[] = FASA_OPENCL_LOADER_NAMES;
    char why[512];
    void *lib = fasa__dynlib_open(names, why, sizeof why);
    if (!lib) {
        snprintf(msg, msg_size,
                 "opencl: %s; install an OpenCL ICD loader (Debian: ocl-icd-libopencl1) and a driver", why);
        return FASA_ERROR_BACKEND_UNAVAILABLE;
    }
    fasa_cl_api api;
    memset(&api, 0, sizeof api);
#define LOAD(name)                                                                                 \
    api.name = (__typeof__(api.name))fasa__dynlib_sym(lib, #name);                                 \
    if (!api.name) {                                                                               \
        snprintf(msg, msg_size, "opencl: the loader %s lacks %s (OpenCL 1.2 is required)", names[0], #name); \
        fasa__dynlib_close(lib);                                                                   \
        return FASA_ERROR_BACKEND_UNAVAILABLE;                                                     \
    }
    FASA_CL_FNS(LOAD)
#undef LOAD
    fasa__cl = api;
    __atomic_store_n(&fasa__cl_loaded, 1, __ATOMIC_RELEASE);
    return FASA_OK; /* lib stays open for the life of the process */
}

fasa_status fasa__cl_load(char *msg, size_t msg_size)
{
    char tmp[512];
    if (!msg || !msg_size) msg = tmp, msg_size = sizeof tmp;
    if (__atomic_load_n(&fasa__cl_loaded, __ATOMIC_ACQUIRE)) return FASA_OK;
    pthread_mutex_lock(&load_lock);
    fasa_status st = __atomic_load_n(&fasa__cl_loaded, __ATOMIC_ACQUIRE) ? FASA_OK : load_locked(msg, msg_size);
    pthread_mutex_unlock(&load_lock);
    return st;
}

const fasa_cl_api *fasa__cl_api_load(void)
{
    fasa__cl_load(NULL, 0);
    return &fasa__cl; /* all NULL when the loader is missing */
}
