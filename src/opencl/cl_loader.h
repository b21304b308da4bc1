/* The OpenCL entry points libfasa uses, loaded at run time.
 *
 * libfasa does not link libOpenCL: the first use of the OpenCL backend
 * (fasa_list_devices, a context, or a test calling cl* through this header)
 * opens the ICD loader (libOpenCL.so.1; OpenCL.dll on Windows) with dlopen /
 * LoadLibrary and fills one process-wide table of function pointers, under
 * a mutex.  The handle and the table are the only process-wide state of the
 * library; they are kept until the process exits (the ICD loader never
 * unloads its vendor drivers either, so closing it would gain nothing).
 *
 * Every file that includes this header (through cl_internal.h) calls the
 * usual clFoo(...) names: after the table is declared, each name below is a
 * macro for the table's entry, so the call sites are plain OpenCL code.  A
 * cl* function the backend starts to use must be added to FASA_CL_FNS;
 * otherwise libfasa.so fails to link with an undefined clFoo (meson links
 * shared libraries with --no-undefined). */
#ifndef FASA_CL_LOADER_H
#define FASA_CL_LOADER_H

#include "fasa.h"

#ifdef __APPLE__
#include <OpenCL/cl.h>
#else
#include <CL/cl.h>
#endif

#include <stddef.h>

/* OpenCL 1.2 core entry points (images and samplers left out).  All of
 * them must be present in the loader. */
#define FASA_CL_FNS(X)                                                                             \
    X(clGetPlatformIDs)                                                                            \
    X(clGetPlatformInfo)                                                                           \
    X(clGetDeviceIDs)                                                                              \
    X(clGetDeviceInfo)                                                                             \
    X(clCreateSubDevices)                                                                          \
    X(clRetainDevice)                                                                              \
    X(clReleaseDevice)                                                                             \
    X(clCreateContext)                                                                             \
    X(clCreateContextFromType)                                                                     \
    X(clRetainContext)                                                                             \
    X(clReleaseContext)                                                                            \
    X(clGetContextInfo)                                                                            \
    X(clCreateCommandQueue)                                                                        \
    X(clRetainCommandQueue)                                                                        \
    X(clReleaseCommandQueue)                                                                       \
    X(clGetCommandQueueInfo)                                                                       \
    X(clCreateBuffer)                                                                              \
    X(clCreateSubBuffer)                                                                           \
    X(clRetainMemObject)                                                                           \
    X(clReleaseMemObject)                                                                          \
    X(clGetMemObjectInfo)                                                                          \
    X(clSetMemObjectDestructorCallback)                                                            \
    X(clCreateProgramWithSource)                                                                   \
    X(clCreateProgramWithBinary)                                                                   \
    X(clRetainProgram)                                                                             \
    X(clReleaseProgram)                                                                            \
    X(clBuildProgram)                                                                              \
    X(clCompileProgram)                                                                            \
    X(clLinkProgram)                                                                               \
    X(clGetProgramInfo)                                                                            \
    X(clGetProgramBuildInfo)                                                                       \
    X(clCreateKernel)                                                                              \
    X(clCreateKernelsInProgram)                                                                    \
    X(clRetainKernel)                                                                              \
    X(clReleaseKernel)                                                                             \
    X(clSetKernelArg)                                                                              \
    X(clGetKernelInfo)                                                                             \
    X(clGetKernelArgInfo)                                                                          \
    X(clGetKernelWorkGroupInfo)                                                                    \
    X(clWaitForEvents)                                                                             \
    X(clGetEventInfo)                                                                              \
    X(clCreateUserEvent)                                                                           \
    X(clRetainEvent)                                                                               \
    X(clReleaseEvent)                                                                              \
    X(clSetUserEventStatus)                                                                        \
    X(clSetEventCallback)                                                                          \
    X(clGetEventProfilingInfo)                                                                     \
    X(clFlush)                                                                                     \
    X(clFinish)                                                                                    \
    X(clEnqueueReadBuffer)                                                                         \
    X(clEnqueueReadBufferRect)                                                                     \
    X(clEnqueueWriteBuffer)                                                                        \
    X(clEnqueueWriteBufferRect)                                                                    \
    X(clEnqueueFillBuffer)                                                                         \
    X(clEnqueueCopyBuffer)                                                                         \
    X(clEnqueueCopyBufferRect)                                                                     \
    X(clEnqueueMapBuffer)                                                                          \
    X(clEnqueueUnmapMemObject)                                                                     \
    X(clEnqueueMigrateMemObjects)                                                                  \
    X(clEnqueueNDRangeKernel)                                                                      \
    X(clEnqueueMarkerWithWaitList)                                                                 \
    X(clEnqueueBarrierWithWaitList)                                                                \
    X(clGetExtensionFunctionAddressForPlatform)

#define FASA_CL_DECLARE(name) __typeof__(name) *name;
typedef struct fasa_cl_api {
    FASA_CL_FNS(FASA_CL_DECLARE)
} fasa_cl_api;
#undef FASA_CL_DECLARE

/* Opens the loader once per process (later calls return at once).  On
 * failure: BACKEND_UNAVAILABLE, msg names the library and the dlerror()
 * text (or the missing entry point); a later call tries again. */
fasa_status fasa__cl_load(char *msg, size_t msg_size);

extern fasa_cl_api fasa__cl;       /* filled by fasa__cl_load */
extern int fasa__cl_loaded;        /* set (release) once fasa__cl is complete */
const fasa_cl_api *fasa__cl_api_load(void);

/* The table; loads it on first use (tests may call cl* before any context
 * exists).  Library code reaches a cl* call only after fasa__cl_load
 * succeeded, so this never returns an unloaded table there. */
static inline const fasa_cl_api *fasa__cl_api(void)
{
    return __atomic_load_n(&fasa__cl_loaded, __ATOMIC_ACQUIRE) ? &fasa__cl : fasa__cl_api_load();
}

/* From here on, clFoo(...) calls the loaded entry point. */
#ifndef FASA_CL_LOADER_IMPL
#define clGetPlatformIDs (fasa__cl_api()->clGetPlatformIDs)
#define clGetPlatformInfo (fasa__cl_api()->clGetPlatformInfo)
#define clGetDeviceIDs (fasa__cl_api()->clGetDeviceIDs)
#define clGetDeviceInfo (fasa__cl_api()->clGetDeviceInfo)
#define clCreateSubDevices (fasa__cl_api()->clCreateSubDevices)
#define clRetainDevice (fasa__cl_api()->clRetainDevice)
#define clReleaseDevice (fasa__cl_api()->clReleaseDevice)
#define clCreateContext (fasa__cl_api()->clCreateContext)
#define clCreateContextFromType (fasa__cl_api()->clCreateContextFromType)
#define clRetainContext (fasa__cl_api()->clRetainContext)
#define clReleaseContext (fasa__cl_api()->clReleaseContext)
#define clGetContextInfo (fasa__cl_api()->clGetContextInfo)
#define clCreateCommandQueue (fasa__cl_api()->clCreateCommandQueue)
#define clRetainCommandQueue (fasa__cl_api()->clRetainCommandQueue)
#define clReleaseCommandQueue (fasa__cl_api()->clReleaseCommandQueue)
#define clGetCommandQueueInfo (fasa__cl_api()->clGetCommandQueueInfo)
#define clCreateBuffer (fasa__cl_api()->clCreateBuffer)
#define clCreateSubBuffer (fasa__cl_api()->clCreateSubBuffer)
#define clRetainMemObject (fasa__cl_api()->clRetainMemObject)
#define clReleaseMemObject (fasa__cl_api()->clReleaseMemObject)
#define clGetMemObjectInfo (fasa__cl_api()->clGetMemObjectInfo)
#define clSetMemObjectDestructorCallback (fasa__cl_api()->clSetMemObjectDestructorCallback)
#define clCreateProgramWithSource (fasa__cl_api()->clCreateProgramWithSource)
#define clCreateProgramWithBinary (fasa__cl_api()->clCreateProgramWithBinary)
#define clRetainProgram (fasa__cl_api()->clRetainProgram)
#define clReleaseProgram (fasa__cl_api()->clReleaseProgram)
#define clBuildProgram (fasa__cl_api()->clBuildProgram)
#define clCompileProgram (fasa__cl_api()->clCompileProgram)
#define clLinkProgram (fasa__cl_api()->clLinkProgram)
#define clGetProgramInfo (fasa__cl_api()->clGetProgramInfo)
#define clGetProgramBuildInfo (fasa__cl_api()->clGetProgramBuildInfo)
#define clCreateKernel (fasa__cl_api()->clCreateKernel)
#define clCreateKernelsInProgram (fasa__cl_api()->clCreateKernelsInProgram)
#define clRetainKernel (fasa__cl_api()->clRetainKernel)
#define clReleaseKernel (fasa__cl_api()->clReleaseKernel)
#define clSetKernelArg (fasa__cl_api()->clSetKernelArg)
#define clGetKernelInfo (fasa__cl_api()->clGetKernelInfo)
#define clGetKernelArgInfo (fasa__cl_api()->clGetKernelArgInfo)
#define clGetKernelWorkGroupInfo (fasa__cl_api()->clGetKernelWorkGroupInfo)
#define clWaitForEvents (fasa__cl_api()->clWaitForEvents)
#define clGetEventInfo (fasa__cl_api()->clGetEventInfo)
#define clCreateUserEvent (fasa__cl_api()->clCreateUserEvent)
#define clRetainEvent (fasa__cl_api()->clRetainEvent)
#define clReleaseEvent (fasa__cl_api()->clReleaseEvent)
#define clSetUserEventStatus (fasa__cl_api()->clSetUserEventStatus)
#define clSetEventCallback (fasa__cl_api()->clSetEventCallback)
#define clGetEventProfilingInfo (fasa__cl_api()->clGetEventProfilingInfo)
#define clFlush (fasa__cl_api()->clFlush)
#define clFinish (fasa__cl_api()->clFinish)
#define clEnqueueReadBuffer (fasa__cl_api()->clEnqueueReadBuffer)
#define clEnqueueReadBufferRect (fasa__cl_api()->clEnqueueReadBufferRect)
#define clEnqueueWriteBuffer (fasa__cl_api()->clEnqueueWriteBuffer)
#define clEnqueueWriteBufferRect (fasa__cl_api()->clEnqueueWriteBufferRect)
#define clEnqueueFillBuffer (fasa__cl_api()->clEnqueueFillBuffer)
#define clEnqueueCopyBuffer (fasa__cl_api()->clEnqueueCopyBuffer)
#define clEnqueueCopyBufferRect (fasa__cl_api()->clEnqueueCopyBufferRect)
#define clEnqueueMapBuffer (fasa__cl_api()->clEnqueueMapBuffer)
#define clEnqueueUnmapMemObject (fasa__cl_api()->clEnqueueUnmapMemObject)
#define clEnqueueMigrateMemObjects (fasa__cl_api()->clEnqueueMigrateMemObjects)
#define clEnqueueNDRangeKernel (fasa__cl_api()->clEnqueueNDRangeKernel)
#define clEnqueueMarkerWithWaitList (fasa__cl_api()->clEnqueueMarkerWithWaitList)
#define clEnqueueBarrierWithWaitList (fasa__cl_api()->clEnqueueBarrierWithWaitList)
#define clGetExtensionFunctionAddressForPlatform (fasa__cl_api()->clGetExtensionFunctionAddressForPlatform)
#endif

#endif
