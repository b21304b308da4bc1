#version 450
/* fac: exact softmax attention over the selected rows (see attend.glsl). */
#define GATHER 1
#extension GL_GOOGLE_include_directive : require
#include "attend.glsl"
