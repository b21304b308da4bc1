/* libfasa vulkan embedding API (see docs/API.md). */
#ifndef FASA_VULKAN_H
#define FASA_VULKAN_H
#include "fasa.h"
#endif
