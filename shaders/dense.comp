#version 450
/* dense: exact softmax attention over all L tokens (see attend.glsl). */
#define GATHER 0
#extension GL_GOOGLE_include_directive : require
#include "attend.glsl"
