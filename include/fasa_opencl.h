/* libfasa opencl embedding API (see docs/API.md). */
#ifndef FASA_OPENCL_H
#define FASA_OPENCL_H
#include "fasa.h"
#endif
