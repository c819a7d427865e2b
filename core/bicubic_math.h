/* bicubic_math.h (private): the position mapping and the weights of OpenCV's INTER_CUBIC,
 * written once for the CPU (core/bicubic*.c) and the GPU (gpu_service/upscale.cu), so the
 * two cannot drift apart. Plain C that nvcc also compiles for the device.
 */
#ifndef HC_BICUBIC_MATH_H
#define HC_BICUBIC_MATH_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define HC_HOSTDEV __host__ __device__ __forceinline__
#else
#define HC_HOSTDEV static inline
#endif

/* Source position of global output index d at 1/scale = inv_scale (1.0 / scale, an IEEE
 * double computed once by the caller: the same value everywhere): tap base i (taps
 * i-1..i+2) and fraction t. */
HC_HOSTDEV void
hc_bicubic_map_inv(int d, double inv_scale, int *i, float *t)
{
    float f = (float)((d + 0.5) * inv_scale - 0.5);
    float fl = floorf(f);
    *i = (int)fl;
    *t = f - fl;
}

/* The four float weights of fraction t (OpenCV's interpolateCubic, same operation order). */
HC_HOSTDEV void
hc_bicubic_coeffs(float t, float c[4])
{
    const float A = -0.75f;
    float t1 = t + 1.0f, u = 1.0f - t;
    c[0] = ((A * t1 - 5.0f * A) * t1 + 8.0f * A) * t1 - 4.0f * A;
    c[1] = ((A + 2.0f) * t - (A + 3.0f)) * t * t + 1.0f;
    c[2] = ((A + 2.0f) * u - (A + 3.0f)) * u * u + 1.0f;
    c[3] = 1.0f - c[0] - c[1] - c[2];
}

/* Q11 weight: round half to even (OpenCV's saturate_cast<short>(c * 2048), i.e. cvRound),
 * saturated to int16. rintf rounds half to even in the default rounding mode, on both sides. */
HC_HOSTDEV int
hc_bicubic_q11(float c)
{
    float v = rintf(c * 2048.0f);
    return v < -32768.0f ? -32768 : v > 32767.0f ? 32767 : (int)v;
}

#endif
