/* A few rows times a row-major weight, reading the weight from memory once for all rows.
 *
 *   y[r][o] = bias[o] + sum_i x[r][i] * w[o][i]     r < rows, o < outputs
 *
 * BLAS has no such call: sgemv takes one row (so R rows read the weight R times) and sgemm
 * first copies the weight into packed panels, which at a handful of rows costs more than
 * the product. Here a tile of weight rows (TILE_BYTES, within one core's
 * L2) is read from memory by the first group of up to GROUP_ROWS rows and from L2 by the
 * others; inside a group every weight vector loaded serves all of the group's rows.
 * Tiles are split over OpenMP threads. The sums run in another order than BLAS's, so
 * results agree with it to float rounding, not bit for bit.
 *
 * Built by setup.py as the optional extension chatterbox_mlx.cpu._rows and called through
 * ctypes (chatterbox_mlx/cpu/linear.py); the module object exists only so that the file
 * is a valid extension. x86-64 gets an AVX2+FMA version chosen at run time.
 */
#include <Python.h>
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

/* Which version the CPU runs, for status lines: "avx2" or "generic". */
const char *chatterbox_rows_version(void) { return has_avx2() ? "avx2" : "generic"; }

static struct PyModuleDef rows_module = {
    PyModuleDef_HEAD_INIT, .m_name = "_rows", .m_size = -1};

PyMODINIT_FUNC PyInit__rows(void) { return PyModule_Create(&rows_module); }
