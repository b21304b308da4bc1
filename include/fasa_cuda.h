/* libfasa cuda embedding API (see docs/API.md). */
#ifndef FASA_CUDA_H
#define FASA_CUDA_H
#include "fasa.h"
#endif
