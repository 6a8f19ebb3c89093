/* T3's decode step on the CPU: the two products MLX's CPU backend does slowly for one new
 * position per row. Built by setup.py as the optional extension chatterbox_mlx.cpu._decode
 * and called through ctypes (cpu/linear.py, cpu/attention.py); the module object exists
 * only so that the file is a valid extension. x86-64 gets an AVX2+FMA version of each
 * chosen at run time. Sums run in another order than BLAS's, so results agree with MLX's
 * to float rounding, not bit for bit.
 *
 * 1. A few rows times a row-major weight, the weight read from memory once for all rows:
 *
 *      y[r][o] = bias[o] + sum_i x[r][i] * w[o][i]     r < rows, o < outputs
 *
 *    BLAS has no such call: sgemv takes one row (so R rows read the weight R times) and
 *    sgemm first copies the weight into packed panels, which at a handful of rows costs
 *    more than the product. Here a tile of weight rows (TILE_BYTES, within one core's L2)
 *    is read from memory by the first group of up to GROUP_ROWS rows and from L2 by the
 *    others; inside a group every weight vector loaded serves all of the group's rows.
 *    Tiles are split over OpenMP threads.
 *
 * 2. One query's attention per (row, head) over the cached keys, in one pass over them:
 *    MLX's CPU attention for a single query costs about 1.4 ms a layer and row over 560
 *    keys (a BLAS call per head and product, a scalar exp), 6 of every 7 milliseconds of
 *    a Turbo step at 8 rows. (row, head) pairs are split over OpenMP threads.
 */
#include <Python.h>
#include <stdlib.h>
#include <string.h>

#pragma GCC diagnostic ignored "-Wpsabi" /* vectors pass only into inlined functions */

#define LANES 8
#define GROUP_ROWS 8
#define TILE_BYTES (256 * 1024)

typedef float vec __attribute__((vector_size(LANES * sizeof(float))));

static inline __attribute__((always_inline)) vec load(const float *p) {
    vec v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline __attribute__((always_inline)) float lanes_sum(const vec *v) {
    float s = 0.0f;
    for (int k = 0; k < LANES; k++) s += (*v)[k];
    return s;
}

/* OUTS weight rows against ROWS input rows, added to y.
 * OUTS and ROWS are constants, so the OUTS x ROWS accumulators stay in registers; every
 * weight vector loaded serves ROWS rows and every input vector OUTS weight rows. */
#define DEFINE_KERNEL(OUTS, ROWS)                                                         \
    static inline __attribute__((always_inline)) void kernel_##OUTS##x##ROWS(           \
        const float *w, long in, const float *x, float *y, long ldy) {                   \
        vec acc[OUTS][ROWS] = {{{0}}};                                                   \
        long i = 0;                                                                      \
        for (; i + LANES <= in; i += LANES) {                                            \
            vec wv[OUTS];                                                                \
            for (int o = 0; o < OUTS; o++) wv[o] = load(w + o * in + i);                 \
            for (int r = 0; r < ROWS; r++) {                                             \
                vec xv = load(x + r * in + i);                                           \
                for (int o = 0; o < OUTS; o++) acc[o][r] += wv[o] * xv;                  \
            }                                                                            \
        }                                                                                \
        for (int o = 0; o < OUTS; o++)                                                   \
            for (int r = 0; r < ROWS; r++) {                                             \
                float s = lanes_sum(&acc[o][r]);                                         \
                for (long j = i; j < in; j++) s += w[o * in + j] * x[r * in + j];        \
                y[r * ldy + o] += s;                                                     \
            }                                                                            \
    }
DEFINE_KERNEL(4, 1)
DEFINE_KERNEL(4, 2)
DEFINE_KERNEL(2, 3)
DEFINE_KERNEL(2, 4)
DEFINE_KERNEL(1, 1)
DEFINE_KERNEL(1, 2)
DEFINE_KERNEL(1, 3)
DEFINE_KERNEL(1, 4)
DEFINE_KERNEL(1, 5)
DEFINE_KERNEL(1, 6)
DEFINE_KERNEL(1, 7)
DEFINE_KERNEL(1, 8)

/* Weight rows [start, stop) against `rows` (at most GROUP_ROWS) input rows. */
static inline __attribute__((always_inline)) void group_kernel(
    const float *w, long in, const float *x, float *y, long ldy, long rows, long start,
    long stop) {
    long o = start;
#define RUN(OUTS, ROWS)                                                                  \
    for (; o + OUTS <= stop; o += OUTS)                                                  \
        kernel_##OUTS##x##ROWS(w + o * in, in, x, y + o, ldy);                             \
    for (; o < stop; o++) kernel_1x##ROWS(w + o * in, in, x, y + o, ldy);                  \
    break;
    switch (rows) {
        case 1: RUN(4, 1)
        case 2: RUN(4, 2)
        case 3: RUN(2, 3)
        case 4: RUN(2, 4)
        case 5: RUN(1, 5)
        case 6: RUN(1, 6)
        case 7: RUN(1, 7)
        default: RUN(1, 8)
    }
#undef RUN
}

/* Weight rows [start, stop) against every input row, GROUP_ROWS rows at a time: the
 * first group reads the tile from memory, the others from L2. */
static inline __attribute__((always_inline)) void tile_body(
    const float *w, const float *x, float *y, long rows, long outputs, long in, long start,
    long stop) {
    for (long g = 0; g < rows; g += GROUP_ROWS) {
        long group = rows - g < GROUP_ROWS ? rows - g : GROUP_ROWS;
        group_kernel(w, in, x + g * in, y + g * outputs, outputs, group, start, stop);
    }
}

typedef void (*tile_fn)(const float *, const float *, float *, long, long, long, long, long);

static void tile_generic(const float *w, const float *x, float *y, long rows, long outputs,
                         long in, long start, long stop) {
    tile_body(w, x, y, rows, outputs, in, start, stop);
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) static void tile_avx2(
    const float *w, const float *x, float *y, long rows, long outputs, long in, long start,
    long stop) {
    tile_body(w, x, y, rows, outputs, in, start, stop);
}

static int has_avx2(void) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
static int has_avx2(void) { return 0; }
#endif

static tile_fn pick_tile(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (has_avx2()) return tile_avx2;
#endif
    return tile_generic;
}

/* The entry point (ctypes): y += x @ w^T, with x [rows, in], w [outputs, in], y [rows,
 * outputs], all float32 and C-contiguous. The OpenMP loop stays outside the
 * target-specific code (an outlined parallel region would not inherit its target). */
void chatterbox_rows_matmul(const float *w, const float *x, float *y, long rows,
                            long outputs, long in) {
    tile_fn tile_kernel = pick_tile();
    long tile = TILE_BYTES / (long)(sizeof(float) * in);
    if (tile < 1) tile = 1;
    long tiles = (outputs + tile - 1) / tile;
#pragma omp parallel for schedule(static)
    for (long t = 0; t < tiles; t++) {
        long start = t * tile, stop = start + tile < outputs ? start + tile : outputs;
        tile_kernel(w, x, y, rows, outputs, in, start, stop);
    }
}

/* ------------------------------------------------------------------ attention */

typedef int ivec __attribute__((vector_size(LANES * sizeof(int))));

/* exp(x) for scores minus their max (x <= 0), 8 lanes, about 2e-7 relative: x = n ln2 + r
 * with |r| <= ln2 / 2, exp(r) by Cephes' degree-6 polynomial, 2^n into the exponent bits.
 * Below -87 the result is 0; a NaN stays NaN. */
static inline __attribute__((always_inline)) vec exp_nonpositive(const vec *in) {
    vec x = *in;
    ivec underflow = x < -87.0f;
    vec clamped = (vec)(((ivec)x & ~underflow) | ((ivec)((vec){0} - 87.0f) & underflow));
    ivec n = __builtin_convertvector(clamped * 1.44269504088896341f - 0.5f, ivec);
    vec nf = __builtin_convertvector(n, vec);
    vec r = clamped - nf * 0.693359375f + nf * 2.12194440e-4f;
    vec p = (vec){0} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    vec scale = (vec)((n + 127) << 23);
    return (vec)((ivec)(p * scale) & ~underflow);
}

/* One (row, head): out[d] = sum_j softmax_j(scale * q.k_j + bias_j) v_j[d], over `keys`
 * keys of `dim` (a multiple of LANES) floats, `scores` room for keys rounded up. */
static inline __attribute__((always_inline)) void attend_body(
    const float *q, const float *k, const float *v, const float *bias, float *out,
    float *scores, long keys, long dim, float scale) {
    float top = -__builtin_inff();
    for (long j = 0; j < keys; j++) {
        vec acc = {0};
        for (long c = 0; c < dim; c += LANES) acc += load(q + c) * load(k + j * dim + c);
        float s = lanes_sum(&acc) * scale + (bias ? bias[j] : 0.0f);
        scores[j] = s;
        if (s > top || s != s) top = s;
    }
    long padded = (keys + LANES - 1) / LANES * LANES;
    for (long j = keys; j < padded; j++) scores[j] = -__builtin_inff();
    vec total = {0};
    for (long j = 0; j < padded; j += LANES) {
        vec shifted = load(scores + j) - top;
        vec e = exp_nonpositive(&shifted);
        memcpy(scores + j, &e, sizeof e);
        total += e;
    }
    float inverse = 1.0f / lanes_sum(&total);
    for (long c = 0; c < dim; c += LANES) {
        vec acc = {0};
        for (long j = 0; j < keys; j++) acc += scores[j] * load(v + j * dim + c);
        acc *= inverse;
        memcpy(out + c, &acc, sizeof acc);
    }
}

typedef void (*attend_fn)(const float *, const float *, const float *, const float *, float *,
                          float *, long, long, float);

static void attend_generic(const float *q, const float *k, const float *v, const float *bias,
                           float *out, float *scores, long keys, long dim, float scale) {
    attend_body(q, k, v, bias, out, scores, keys, dim, scale);
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) static void attend_avx2(
    const float *q, const float *k, const float *v, const float *bias, float *out,
    float *scores, long keys, long dim, float scale) {
    attend_body(q, k, v, bias, out, scores, keys, dim, scale);
}
#endif

/* The entry point (ctypes): one query per (row, head).
 *   q, out     [rows, heads, dim], contiguous
 *   k, v       row r, kv head g, key j at  k + r * row_stride + g * head_stride + j * dim
 *              (a view of the first `keys` positions of a longer cache; key rows contiguous)
 *   bias       [rows, keys] added to the scores (the padding mask), or NULL
 * Query head h reads kv head h / (heads / kv_heads). Returns 0, or -1 where `dim` is not a
 * multiple of 8 or memory ran out (the caller then takes MLX's attention). */
int chatterbox_decode_attention(const float *q, const float *k, const float *v,
                                const float *bias, float *out, long rows, long heads,
                                long kv_heads, long keys, long dim, long row_stride,
                                long head_stride, float scale) {
    if (dim % LANES || heads % kv_heads || keys < 1) return -1;
#if defined(__x86_64__) && defined(__GNUC__)
    attend_fn attend = has_avx2() ? attend_avx2 : attend_generic;
#else
    attend_fn attend = attend_generic;
#endif
    long group = heads / kv_heads, pairs = rows * heads, padded = keys + LANES;
    int failed = 0;
#pragma omp parallel
    {
        float *scores = malloc(sizeof(float) * padded);
        if (!scores) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (long p = 0; p < pairs; p++) {
            if (!scores) continue;
            long r = p / heads, h = p % heads;
            long offset = r * row_stride + (h / group) * head_stride;
            attend(q + p * dim, k + offset, v + offset, bias ? bias + r * keys : NULL,
                   out + p * dim, scores, keys, dim, scale);
        }
        free(scores);
    }
    return failed ? -1 : 0;
}

/* Which version the CPU runs, for status lines: "avx2" or "generic". */
const char *chatterbox_decode_version(void) { return has_avx2() ? "avx2" : "generic"; }

static struct PyModuleDef decode_module = {
    PyModuleDef_HEAD_INIT, .m_name = "_decode", .m_size = -1};

PyMODINIT_FUNC PyInit__decode(void) { return PyModule_Create(&decode_module); }
