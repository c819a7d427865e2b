/* upscale.cu: the CUDA bicubic backend (upscale.h).
 *
 * Exactness: every value is computed with the operations of core/bicubic_simd.h in the same
 * order; the file is compiled with -fmad=false so that no multiply-add is fused (a fused
 * a*b+c rounds once where the CPU rounds twice). Positions come from global output indices,
 * so a tile gives the same pixels as the whole image.
 *
 * Kernel shape: 16x16 threads; a block makes 64x16 output pixels (each thread four pixels
 * 16 apart, so that the 16 threads of a half-warp write neighbouring pixels). The block's
 * source pixels are staged in shared memory as they are (u8 or u16); the horizontal pass
 * writes its float sums to shared memory once per source row, the vertical pass reads them.
 */
#include "upscale.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include <cuda_runtime.h>

#include "error.h"

#define BW 64 /* output pixels per block, x */
#define BH 16 /* output pixels per block, y */
#define MAX_SW (BW + 3)
#define MAX_SH (BH + 3)

struct tile_args {
    const uint8_t *src; /* packed source window, src_w x src_h */
    uint8_t *dst;       /* packed output, out_w x out_h */
    int image_w, image_h, scale, cn;
    int src_x, src_y, src_w, src_h;
    int out_x, out_y, out_w, out_h;
    long simd_end; /* output-row elements computed with OpenCV's SIMD (float) formulas */
};

__device__ __forceinline__ void
map_pos(int d, int scale, int *i, float *t)
{
    float f = (float)((d + 0.5) * (1.0 / scale) - 0.5);
    float fl = floorf(f);
    *i = (int)fl;
    *t = f - fl;
}

__device__ __forceinline__ void
coeffs(float t, float c[4])
{
    const float A = -0.75f;
    float t1 = t + 1.0f, u = 1.0f - t;
    c[0] = ((A * t1 - 5.0f * A) * t1 + 8.0f * A) * t1 - 4.0f * A;
    c[1] = ((A + 2.0f) * t - (A + 3.0f)) * t * t + 1.0f;
    c[2] = ((A + 2.0f) * u - (A + 3.0f)) * u * u + 1.0f;
    c[3] = 1.0f - c[0] - c[1] - c[2];
}

__device__ __forceinline__ int
q11(float c)
{
    int v = __float2int_rn(c * 2048.0f); /* round half even, like lrintf */
    return v < -32768 ? -32768 : v > 32767 ? 32767 : v;
}

__device__ __forceinline__ int
clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

template <typename T, int CN>
__global__ void __launch_bounds__(256) bicubic_kernel(tile_args a)
{
    /* source pixels of the block, as they are (u8 or u16) */
    __shared__ T s_src[MAX_SH * MAX_SW * CN];
    /* horizontal sums: per staged source row, per output element of the block */
    __shared__ __align__(16) float s_h[MAX_SH * BW * CN];
    __shared__ int s_xtap[BW][4]; /* sample offsets (already * CN) in a staged row */
    __shared__ int s_xa[BW][4];   /* Q11 weights (8 bit) */
    __shared__ float s_xf[BW][4]; /* float weights (16 bit) */
    __shared__ int s_ytap[BH][4]; /* staged row indices */
    __shared__ float s_yb[BH][4]; /* vertical float weights of the SIMD formula */
    __shared__ int s_yib[BH][4];  /* Q11 vertical weights (8-bit integer tail) */

    const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * 16 + tx;
    const int ox0 = a.out_x + blockIdx.x * BW; /* global output x of the block's column 0 */
    const int oy0 = a.out_y + blockIdx.y * BH;
    const int bw = min(BW, a.out_x + a.out_w - ox0);
    const int bh = min(BH, a.out_y + a.out_h - oy0);
    const bool u8 = sizeof(T) == 1;

    /* Source columns / rows the block needs: taps of its first and last output. */
    int i0, i1;
    float tt;
    map_pos(ox0, a.scale, &i0, &tt);
    map_pos(ox0 + bw - 1, a.scale, &i1, &tt);
    const int cx0 = clampi(i0 - 1, 0, a.image_w - 1), cx1 = clampi(i1 + 2, 0, a.image_w - 1);
    map_pos(oy0, a.scale, &i0, &tt);
    map_pos(oy0 + bh - 1, a.scale, &i1, &tt);
    const int ry0 = clampi(i0 - 1, 0, a.image_h - 1), ry1 = clampi(i1 + 2, 0, a.image_h - 1);
    const int sw = cx1 - cx0 + 1, sh = ry1 - ry0 + 1;
    const int srowe = sw * CN;

    if (tid < bw) {
        int ix;
        float t, c[4];
        map_pos(ox0 + tid, a.scale, &ix, &t);
        coeffs(t, c);
        for (int k = 0; k < 4; k++) {
            s_xtap[tid][k] = (clampi(ix - 1 + k, 0, a.image_w - 1) - cx0) * CN;
            s_xa[tid][k] = q11(c[k]);
            s_xf[tid][k] = c[k];
        }
    } else if (tid >= 128 && tid < 128 + bh) {
        int r = tid - 128, iy;
        float t, c[4];
        map_pos(oy0 + r, a.scale, &iy, &t);
        coeffs(t, c);
        for (int k = 0; k < 4; k++) {
            s_ytap[r][k] = clampi(iy - 1 + k, 0, a.image_h - 1) - ry0;
            int ib = q11(c[k]);
            s_yib[r][k] = ib;
            s_yb[r][k] = u8 ? (float)ib * (1.0f / (2048.0f * 2048.0f)) : c[k];
        }
    }

    /* Stage the source: rows ry0..ry1, columns cx0..cx1, all channels. */
    {
        const size_t src_stride = (size_t)a.src_w * CN;
        const T *g0 = (const T *)a.src + (size_t)(ry0 - a.src_y) * src_stride +
                      (size_t)(cx0 - a.src_x) * CN;
        for (int r = ty; r < sh; r += 16) {
            const T *g = g0 + (size_t)r * src_stride;
            T *d = s_src + r * srowe;
            for (int e = tx; e < srowe; e += 16)
                d[e] = g[e];
        }
    }
    __syncthreads();

    /* Horizontal pass: each thread four neighbouring outputs of a staged row. */
    for (int r = ty; r < sh; r += 16) {
        const T *row = s_src + r * srowe;
        float *hrow = s_h + r * BW * CN;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int x = tx * 4 + j;
            if (x < bw) {
                const int t0 = s_xtap[x][0], t1 = s_xtap[x][1], t2 = s_xtap[x][2],
                          t3 = s_xtap[x][3];
                if (u8) {
                    const int a0 = s_xa[x][0], a1 = s_xa[x][1], a2 = s_xa[x][2],
                              a3 = s_xa[x][3];
#pragma unroll
                    for (int c = 0; c < CN; c++)
                        hrow[x * CN + c] = (float)(a0 * (int)row[t0 + c] + a1 * (int)row[t1 + c] +
                                                   a2 * (int)row[t2 + c] + a3 * (int)row[t3 + c]);
                } else {
                    const float w0 = s_xf[x][0], w1 = s_xf[x][1], w2 = s_xf[x][2],
                                w3 = s_xf[x][3];
#pragma unroll
                    for (int c = 0; c < CN; c++) {
                        float v = (float)row[t0 + c] * w0;
                        v = v + (float)row[t1 + c] * w1;
                        v = v + (float)row[t2 + c] * w2;
                        v = v + (float)row[t3 + c] * w3;
                        hrow[x * CN + c] = v;
                    }
                }
            }
        }
    }
    __syncthreads();

    /* Vertical pass: each thread four neighbouring output pixels of one row. */
    const int x0 = tx * 4;
    if (ty >= bh || x0 >= bw)
        return;
    float hv[4][4 * CN];
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const float4 *p = (const float4 *)(s_h + s_ytap[ty][k] * BW * CN + x0 * CN);
#pragma unroll
        for (int q = 0; q < CN; q++) {
            float4 v = p[q];
            hv[k][4 * q] = v.x;
            hv[k][4 * q + 1] = v.y;
            hv[k][4 * q + 2] = v.z;
            hv[k][4 * q + 3] = v.w;
        }
    }
    const float b0 = s_yb[ty][0], b1 = s_yb[ty][1], b2 = s_yb[ty][2], b3 = s_yb[ty][3];
    const int ib0 = s_yib[ty][0], ib1 = s_yib[ty][1], ib2 = s_yib[ty][2], ib3 = s_yib[ty][3];
    const long ge0 = (long)(ox0 + x0) * CN;
    unsigned o[4 * CN];
#pragma unroll
    for (int i = 0; i < 4 * CN; i++) {
        const float v0 = hv[0][i], v1 = hv[1][i], v2 = hv[2][i], v3 = hv[3][i];
        int r;
        if (ge0 + i < a.simd_end) {
            float acc = v3 * b3;
            acc = v2 * b2 + acc;
            acc = v1 * b1 + acc;
            acc = v0 * b0 + acc;
            r = __float2int_rn(acc);
        } else if (u8) {
            int s = (int)v0 * ib0 + (int)v1 * ib1 + (int)v2 * ib2 + (int)v3 * ib3;
            r = (s + (1 << 21)) >> 22;
        } else {
            float acc = v0 * b0;
            acc = acc + v1 * b1;
            acc = acc + v2 * b2;
            acc = acc + v3 * b3;
            r = __float2int_rn(acc);
        }
        o[i] = (unsigned)clampi(r, 0, u8 ? 255 : 65535);
    }
    T *d = (T *)a.dst + (size_t)(oy0 + ty - a.out_y) * a.out_w * CN +
           (size_t)(ox0 + x0 - a.out_x) * CN;
    if (bw - x0 >= 4 && ((uintptr_t)d & 3) == 0) {
        /* 4*CN samples are a whole number of 32-bit words: write words, not bytes */
        unsigned *w = (unsigned *)d;
        if (u8) {
#pragma unroll
            for (int q = 0; q < CN; q++)
                w[q] = o[4 * q] | o[4 * q + 1] << 8 | o[4 * q + 2] << 16 | o[4 * q + 3] << 24;
        } else {
#pragma unroll
            for (int q = 0; q < 2 * CN; q++)
                w[q] = o[2 * q] | o[2 * q + 1] << 16;
        }
    } else {
        const int n = min(4, bw - x0) * CN;
#pragma unroll
        for (int i = 0; i < 4 * CN; i++)
            if (i < n)
                d[i] = (T)o[i];
    }
}

/* ---- host side ---------------------------------------------------------------------- */

#define CK(call)                                                                             \
    do {                                                                                     \
        cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess) {                                                             \
            rc = hc_error(-EIO, "cuda", "%s: %s", #call, cudaGetErrorString(e_));            \
            goto out;                                                                        \
        }                                                                                    \
    } while (0)

struct slot {
    int dev;
    int busy;
    cudaStream_t stream;
    uint8_t *h_in, *h_out, *d_in, *d_out;
    size_t in_cap, out_cap;
};

struct hc_cuda {
    int ndev;
    char (*names)[256];
    int *dev_busy; /* slots in use per device */
    struct slot *slots;
    int nslots;
    pthread_mutex_t lock;
    pthread_cond_t freed;
};

static int
launch(const struct hc_wire_tile *t, const uint8_t *d_src, uint8_t *d_dst, cudaStream_t st)
{
    tile_args a;
    int rc = 0;

    a.src = d_src;
    a.dst = d_dst;
    a.image_w = (int)t->image_w;
    a.image_h = (int)t->image_h;
    a.scale = t->scale;
    a.cn = t->channels;
    a.src_x = t->src.x;
    a.src_y = t->src.y;
    a.src_w = t->src.w;
    a.src_h = t->src.h;
    a.out_x = t->out.x;
    a.out_y = t->out.y;
    a.out_w = t->out.w;
    a.out_h = t->out.h;
    a.simd_end = (long)t->image_w * t->scale * t->channels / 8 * 8;
    dim3 block(16, 16), grid((unsigned)((t->out.w + BW - 1) / BW),
                             (unsigned)((t->out.h + BH - 1) / BH));
#define LAUNCH(T, C) bicubic_kernel<T, C><<<grid, block, 0, st>>>(a)
    switch (t->channels * 100 + t->depth) {
    case 108: LAUNCH(uint8_t, 1); break;
    case 208: LAUNCH(uint8_t, 2); break;
    case 308: LAUNCH(uint8_t, 3); break;
    case 408: LAUNCH(uint8_t, 4); break;
    case 116: LAUNCH(uint16_t, 1); break;
    case 216: LAUNCH(uint16_t, 2); break;
    case 316: LAUNCH(uint16_t, 3); break;
    case 416: LAUNCH(uint16_t, 4); break;
    default: return hc_error(-EINVAL, "cuda", "layout %u x %u bit", t->channels, t->depth);
    }
#undef LAUNCH
    CK(cudaGetLastError());
out:
    return rc;
}

/* Grows a slot's buffers (pinned host, device) to hold in / out bytes. */
static int
slot_reserve(struct slot *s, size_t in, size_t out_bytes)
{
    int rc = 0;

    if (in > s->in_cap) {
        size_t cap = std::max(in, s->in_cap * 2);
        cudaFreeHost(s->h_in);
        cudaFree(s->d_in);
        s->h_in = s->d_in = NULL;
        s->in_cap = 0;
        CK(cudaHostAlloc((void **)&s->h_in, cap, cudaHostAllocDefault));
        CK(cudaMalloc((void **)&s->d_in, cap));
        s->in_cap = cap;
    }
    if (out_bytes > s->out_cap) {
        size_t cap = std::max(out_bytes, s->out_cap * 2);
        cudaFreeHost(s->h_out);
        cudaFree(s->d_out);
        s->h_out = s->d_out = NULL;
        s->out_cap = 0;
        CK(cudaHostAlloc((void **)&s->h_out, cap, cudaHostAllocDefault));
        CK(cudaMalloc((void **)&s->d_out, cap));
        s->out_cap = cap;
    }
out:
    return rc;
}

extern "C" int
hc_cuda_open(int slots, struct hc_cuda **out)
{
    struct hc_cuda *cu = NULL;
    int n = 0, rc = 0;
    cudaError_t e = cudaGetDeviceCount(&n);

    if (e != cudaSuccess || n < 1)
        return hc_error(-ENODEV, "cuda", "no CUDA device: %s",
                        e != cudaSuccess ? cudaGetErrorString(e) : "none visible");
    if (slots < 1)
        slots = 1;
    cu = (struct hc_cuda *)calloc(1, sizeof *cu);
    if (!cu)
        return hc_error(-ENOMEM, "cuda", "out of memory");
    pthread_mutex_init(&cu->lock, NULL);
    pthread_cond_init(&cu->freed, NULL);
    cu->ndev = n;
    cu->names = (char(*)[256])calloc((size_t)n, 256);
    cu->dev_busy = (int *)calloc((size_t)n, sizeof(int));
    cu->slots = (struct slot *)calloc((size_t)n * (size_t)slots, sizeof(struct slot));
    if (!cu->names || !cu->dev_busy || !cu->slots) {
        rc = hc_error(-ENOMEM, "cuda", "out of memory");
        goto out;
    }
    for (int d = 0; d < n; d++) {
        cudaDeviceProp p;
        CK(cudaSetDevice(d));
        CK(cudaGetDeviceProperties(&p, d));
        snprintf(cu->names[d], 256, "%s", p.name);
        for (int k = 0; k < slots; k++) {
            struct slot *s = &cu->slots[cu->nslots];
            s->dev = d;
            CK(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
            cu->nslots++;
        }
    }
    *out = cu;
    return 0;
out:
    hc_cuda_close(cu);
    return rc;
}

extern "C" void
hc_cuda_close(struct hc_cuda *cu)
{
    if (!cu)
        return;
    for (int i = 0; i < cu->nslots; i++) {
        struct slot *s = &cu->slots[i];
        cudaSetDevice(s->dev);
        cudaStreamDestroy(s->stream);
        cudaFreeHost(s->h_in);
        cudaFreeHost(s->h_out);
        cudaFree(s->d_in);
        cudaFree(s->d_out);
    }
    free(cu->slots);
    free(cu->names);
    free(cu->dev_busy);
    pthread_cond_destroy(&cu->freed);
    pthread_mutex_destroy(&cu->lock);
    free(cu);
}

extern "C" int
hc_cuda_device_count(const struct hc_cuda *cu)
{
    return cu->ndev;
}

extern "C" const char *
hc_cuda_device_name(const struct hc_cuda *cu, int i)
{
    return i >= 0 && i < cu->ndev ? cu->names[i] : "?";
}

/* Takes the free slot of the least busy device, waiting while every slot is taken. */
static struct slot *
slot_get(struct hc_cuda *cu)
{
    struct slot *best = NULL;

    pthread_mutex_lock(&cu->lock);
    for (;;) {
        for (int i = 0; i < cu->nslots; i++) {
            struct slot *s = &cu->slots[i];
            if (!s->busy && (!best || cu->dev_busy[s->dev] < cu->dev_busy[best->dev]))
                best = s;
        }
        if (best)
            break;
        pthread_cond_wait(&cu->freed, &cu->lock);
    }
    best->busy = 1;
    cu->dev_busy[best->dev]++;
    pthread_mutex_unlock(&cu->lock);
    return best;
}

static void
slot_put(struct hc_cuda *cu, struct slot *s)
{
    pthread_mutex_lock(&cu->lock);
    s->busy = 0;
    cu->dev_busy[s->dev]--;
    pthread_cond_signal(&cu->freed);
    pthread_mutex_unlock(&cu->lock);
}

/* Offsets of tiles in the slot's buffers are rounded up to this, so that 16-bit tiles after
 * an odd-sized 8-bit tile stay aligned (and copies start on whole cache lines). */
#define TILE_ALIGN 256

static size_t
align_up(size_t v)
{
    return (v + TILE_ALIGN - 1) & ~(size_t)(TILE_ALIGN - 1);
}

extern "C" int
hc_cuda_run(struct hc_cuda *cu, const struct hc_wire_tile *tiles, const uint8_t *const *src,
            uint8_t *const *dst, size_t n, int *device)
{
    struct slot *s = slot_get(cu);
    size_t in = 0, outb = 0, io = 0, oo = 0;
    int rc = 0;

    *device = s->dev;
    for (size_t i = 0; i < n; i++) {
        in += align_up(hc_wire_src_bytes(&tiles[i]));
        outb += align_up(hc_wire_out_bytes(&tiles[i]));
    }
    CK(cudaSetDevice(s->dev));
    rc = slot_reserve(s, in, outb);
    if (rc)
        goto out;
    /* Copies and kernels are queued per tile on this request's stream, so a batch's first
     * tiles compute while later ones are still being staged. */
    for (size_t i = 0; i < n; i++) {
        size_t bi = hc_wire_src_bytes(&tiles[i]), bo = hc_wire_out_bytes(&tiles[i]);
        memcpy(s->h_in + io, src[i], bi);
        CK(cudaMemcpyAsync(s->d_in + io, s->h_in + io, bi, cudaMemcpyHostToDevice, s->stream));
        rc = launch(&tiles[i], s->d_in + io, s->d_out + oo, s->stream);
        if (rc)
            goto out;
        CK(cudaMemcpyAsync(s->h_out + oo, s->d_out + oo, bo, cudaMemcpyDeviceToHost,
                           s->stream));
        io += align_up(bi);
        oo += align_up(bo);
    }
    CK(cudaStreamSynchronize(s->stream));
    oo = 0;
    for (size_t i = 0; i < n; i++) {
        size_t b = hc_wire_out_bytes(&tiles[i]);
        memcpy(dst[i], s->h_out + oo, b);
        oo += align_up(b);
    }
out:
    if (rc) /* leave the stream clean for the slot's next user */
        cudaStreamSynchronize(s->stream);
    slot_put(cu, s);
    return rc;
}

extern "C" int
hc_cuda_ping(struct hc_cuda *cu)
{
    int rc = 0;

    for (int d = 0; d < cu->ndev; d++) {
        size_t fr, tot;
        CK(cudaSetDevice(d));
        CK(cudaMemGetInfo(&fr, &tot));
    }
out:
    return rc;
}

static double
median(std::vector<float> &v)
{
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

extern "C" int
hc_cuda_bench(int w, int h, int channels, int depth, int scale, int iters, double *kernel_ms,
              double *copy_ms)
{
    struct hc_wire_tile t;
    uint8_t *d_in = NULL, *d_out = NULL, *d_copy = NULL, *hbuf = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    std::vector<float> tk, tc;
    size_t in, outb;
    int rc = 0;

    memset(&t, 0, sizeof t);
    t.image_w = (uint32_t)w;
    t.image_h = (uint32_t)h;
    t.out = {0, 0, w * scale, h * scale};
    t.src = {0, 0, w, h};
    t.channels = (uint8_t)channels;
    t.depth = (uint8_t)depth;
    t.scale = (uint8_t)scale;
    t.filter = 1;
    in = hc_wire_src_bytes(&t);
    outb = hc_wire_out_bytes(&t);
    CK(cudaSetDevice(0));
    CK(cudaMalloc((void **)&d_in, in));
    CK(cudaMalloc((void **)&d_out, outb));
    CK(cudaMalloc((void **)&d_copy, outb));
    hbuf = (uint8_t *)malloc(in);
    if (!hbuf) {
        rc = hc_error(-ENOMEM, "cuda", "out of memory");
        goto out;
    }
    srand(1);
    for (size_t i = 0; i < in; i++)
        hbuf[i] = (uint8_t)(rand() >> 7);
    CK(cudaMemcpy(d_in, hbuf, in, cudaMemcpyHostToDevice));
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int i = 0; i < 3; i++) { /* warm-up */
        rc = launch(&t, d_in, d_out, 0);
        if (rc)
            goto out;
        CK(cudaMemcpyAsync(d_copy, d_out, outb, cudaMemcpyDeviceToDevice, 0));
    }
    CK(cudaDeviceSynchronize());
    for (int i = 0; i < iters; i++) {
        float ms;
        CK(cudaEventRecord(e0, 0));
        rc = launch(&t, d_in, d_out, 0);
        if (rc)
            goto out;
        CK(cudaEventRecord(e1, 0));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&ms, e0, e1));
        tk.push_back(ms);
        CK(cudaEventRecord(e0, 0));
        CK(cudaMemcpyAsync(d_copy, d_out, outb, cudaMemcpyDeviceToDevice, 0));
        CK(cudaEventRecord(e1, 0));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&ms, e0, e1));
        tc.push_back(ms);
    }
    *kernel_ms = median(tk);
    *copy_ms = median(tc);
out:
    free(hbuf);
    if (e0)
        cudaEventDestroy(e0);
    if (e1)
        cudaEventDestroy(e1);
    cudaFree(d_in);
    cudaFree(d_out);
    cudaFree(d_copy);
    return rc;
}
