/* Fused CPU kernels for one decode step of the cpu engine (see _native.py).
 *
 * Eager PyTorch spends a decode step's time outside the matrix products on
 * some forty small operations per layer (norms, rotary embedding, cache writes,
 * attention, activation), each a separate dispatch over a few kilobytes. These
 * kernels do the same arithmetic in three calls per layer, rounding to the
 * storage dtype exactly where the eager operations do, so bfloat16 results
 * agree with eager PyTorch up to the order of float32 sums.
 *
 * Every kernel exists for float (suffix f32) and bfloat16 stored as uint16
 * (suffix bf16). Tensors are row-major; a "stride" is the distance in elements
 * between consecutive rows, so views into a fused projection's output need no
 * copy. Loops over rows and over (row, kv head) pairs run on OpenMP threads
 * where the library was built with OpenMP.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef uint16_t bf16;

static inline float bf16_to_float(bf16 x) {
    uint32_t u = (uint32_t)x << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Round to nearest even, as torch does; NaN stays a quiet NaN. */
static inline bf16 float_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16)(u >> 16);
}

/* exp(x) to about one float ulp, written so that loops over it vectorise
 * (Cody-Waite reduction by ln 2, then the Cephes polynomial). */
static inline float exp_approx(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = fmaf(n, 2.12194440e-4f, fmaf(n, -0.693359375f, x));
    float p = 1.9875691500e-4f; /* Horner steps as fused multiply-adds: half the latency chain */
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p * r, r, r + 1.0f);
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* Explicit vectors for the attention inner loops, where the compiler's own code spends
 * most of its time on one horizontal sum per score: AVX-512 (16 lanes) or AVX2 with FMA
 * (8 lanes). Elsewhere the plain loops below are used. */
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#if defined(__AVX512F__)
#define PS_LANES 16
typedef __m512 vec;
#define VEC_LOADF(p) _mm512_loadu_ps(p)
#define VEC_LOADH(p) \
    _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p))), 16))
#define VEC_FMA _mm512_fmadd_ps
#define VEC_SET1 _mm512_set1_ps
#define VEC_ZERO _mm512_setzero_ps
#define VEC_STORE _mm512_storeu_ps
static inline __m256 fold256(__m512 a) {
    return _mm256_add_ps(_mm512_castps512_ps256(a), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
}
#else
#define PS_LANES 8
typedef __m256 vec;
#define VEC_LOADF(p) _mm256_loadu_ps(p)
#define VEC_LOADH(p) \
    _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p))), 16))
#define VEC_FMA _mm256_fmadd_ps
#define VEC_SET1 _mm256_set1_ps
#define VEC_ZERO _mm256_setzero_ps
#define VEC_STORE _mm256_storeu_ps
static inline __m256 fold256(__m256 a) { return a; }
#endif

/* The sums of four vectors' lanes, in one 4-lane vector. */
static inline __m128 sum4(vec a, vec b, vec c, vec d) {
    __m256 ab = _mm256_hadd_ps(fold256(a), fold256(b)), cd = _mm256_hadd_ps(fold256(c), fold256(d));
    __m256 abcd = _mm256_hadd_ps(ab, cd);
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

static inline float sum1(vec a) {
    __m128 s = sum4(a, VEC_ZERO(), VEC_ZERO(), VEC_ZERO());
    return _mm_cvtss_f32(s);
}

/* Four floats rounded to bfloat16 and widened back, as float_to_bf16 does one. */
static inline __m128 round4_bf16(__m128 x) {
    __m128i u = _mm_castps_si128(x), high = _mm_set1_epi32((int)0xffff0000u);
    __m128i lsb = _mm_and_si128(_mm_srli_epi32(u, 16), _mm_set1_epi32(1));
    __m128i even = _mm_and_si128(_mm_add_epi32(_mm_add_epi32(u, _mm_set1_epi32(0x7fff)), lsb), high);
    __m128i quiet = _mm_and_si128(_mm_or_si128(u, _mm_set1_epi32(0x400000)), high);
    return _mm_blendv_ps(_mm_castsi128_ps(even), _mm_castsi128_ps(quiet), _mm_cmpunord_ps(x, x));
}
/* Cache lines of [p, p + bytes) requested ahead of use, into the outer caches (locality 2: the
 * nearest level measured slower, as the lines evict what the running loop still needs). Each
 * (row, kv head) pair reads a few kilobytes of cache from its own place in memory, too little
 * for the hardware prefetchers to ramp up, so the kernel asks for the lines it needs next: its
 * values while it scores, keys PS_AHEAD positions ahead, the next pair's keys while it sums
 * values. Twice as fast on a 30-layer cache that does not fit in the last-level cache. */
#define PS_AHEAD 16
static inline void prefetch_rows(const void *p, int64_t bytes) {
    for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch((const char *)p + off, 0, 2);
}
#define ROUND4_f32(x) (x)
#define ROUND4_bf16(x) round4_bf16(x)
#define VEC_LOAD_f32 VEC_LOADF
#define VEC_LOAD_bf16 VEC_LOADH
/* attend_fast_S: attend_S with explicit vectors, for head sizes a multiple of PS_LANES. Scores
 * come four positions at a time (four independent FMA chains, one shuffle tree for their four
 * sums); values are added four positions at a time into float accumulators. Each cached row is
 * widened to float once and used by every query head of the group. */
#define DEFINE_ATTEND_FAST(T, S, LOAD, STORE)                                                        \
    static inline __attribute__((always_inline)) void attend_fast_##S(const float *queries, const T *kb, \
            const T *vb, int64_t span, int64_t groups, int64_t nv, float scale, float *scores,      \
            float *acc, T *o, const T *next_k, int64_t next_span) {                                 \
        const int64_t hd = nv * PS_LANES;                                                           \
        const __m128 scale4 = _mm_set1_ps(scale);                                                   \
        int64_t t = 0;                                                                              \
        for (; t + 4 <= span; t += 4) {                                                             \
            vec rows[4][nv];                                                                        \
            prefetch_rows(vb + t * hd, 4 * hd * (int64_t)sizeof(T));                                \
            if (t + PS_AHEAD + 4 <= span) prefetch_rows(kb + (t + PS_AHEAD) * hd, 4 * hd * (int64_t)sizeof(T)); \
            for (int64_t r = 0; r < 4; r++)                                                         \
                for (int64_t v = 0; v < nv; v++) rows[r][v] = VEC_LOAD_##S(kb + (t + r) * hd + v * PS_LANES); \
            for (int64_t j = 0; j < groups; j++) {                                                  \
                const float *qj = queries + j * hd;                                                 \
                vec a = VEC_ZERO(), b = VEC_ZERO(), c = VEC_ZERO(), d = VEC_ZERO();                 \
                for (int64_t v = 0; v < nv; v++) {                                                  \
                    vec qv = VEC_LOADF(qj + v * PS_LANES);                                          \
                    a = VEC_FMA(qv, rows[0][v], a);                                                 \
                    b = VEC_FMA(qv, rows[1][v], b);                                                 \
                    c = VEC_FMA(qv, rows[2][v], c);                                                 \
                    d = VEC_FMA(qv, rows[3][v], d);                                                 \
                }                                                                                   \
                _mm_storeu_ps(scores + j * span + t, _mm_mul_ps(ROUND4_##S(sum4(a, b, c, d)), scale4)); \
            }                                                                                       \
        }                                                                                           \
        for (; t < span; t++) {                                                                     \
            for (int64_t j = 0; j < groups; j++) {                                                  \
                vec a = VEC_ZERO();                                                                 \
                for (int64_t v = 0; v < nv; v++)                                                    \
                    a = VEC_FMA(VEC_LOADF(queries + j * hd + v * PS_LANES), VEC_LOAD_##S(kb + t * hd + v * PS_LANES), a); \
                scores[j * span + t] = LOAD(STORE(sum1(a))) * scale;                                \
            }                                                                                       \
        }                                                                                           \
        softmax_rows_##S(scores, span, groups);                                                     \
        for (int64_t i = 0; i < groups * hd; i++) acc[i] = 0.0f;                                    \
        for (t = 0; t + 4 <= span; t += 4) {                                                        \
            vec rows[4][nv];                                                                        \
            if (t < next_span) prefetch_rows(next_k + t * hd, 4 * hd * (int64_t)sizeof(T));         \
            for (int64_t r = 0; r < 4; r++)                                                         \
                for (int64_t v = 0; v < nv; v++) rows[r][v] = VEC_LOAD_##S(vb + (t + r) * hd + v * PS_LANES); \
            for (int64_t j = 0; j < groups; j++) {                                                  \
                const float *w = scores + j * span + t;                                             \
                vec w0 = VEC_SET1(w[0]), w1 = VEC_SET1(w[1]), w2 = VEC_SET1(w[2]), w3 = VEC_SET1(w[3]); \
                for (int64_t v = 0; v < nv; v++) {                                                  \
                    float *av = acc + j * hd + v * PS_LANES;                                        \
                    vec sum = VEC_FMA(w0, rows[0][v], VEC_LOADF(av));                               \
                    sum = VEC_FMA(w1, rows[1][v], sum);                                             \
                    sum = VEC_FMA(w2, rows[2][v], sum);                                             \
                    VEC_STORE(av, VEC_FMA(w3, rows[3][v], sum));                                    \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
        for (; t < span; t++)                                                                       \
            for (int64_t j = 0; j < groups; j++) {                                                  \
                vec w = VEC_SET1(scores[j * span + t]);                                             \
                for (int64_t v = 0; v < nv; v++) {                                                  \
                    float *av = acc + j * hd + v * PS_LANES;                                        \
                    VEC_STORE(av, VEC_FMA(w, VEC_LOAD_##S(vb + t * hd + v * PS_LANES), VEC_LOADF(av))); \
                }                                                                                   \
            }                                                                                       \
        if (t < next_span) /* the next pair's first keys still missing, a few rows at most */     \
            prefetch_rows(next_k + t * hd, (next_span - t < PS_AHEAD ? next_span - t : PS_AHEAD) * hd * (int64_t)sizeof(T)); \
        for (int64_t i = 0; i < groups * hd; i++) o[i] = STORE(acc[i]);                             \
    }
#define PS_FAST 1
#else
#define PS_LANES 1
#define PS_FAST 0
#define DEFINE_ATTEND_FAST(T, S, LOAD, STORE)                                                        \
    static inline void attend_fast_##S(const float *queries, const T *kb, const T *vb, int64_t span, \
            int64_t groups, int64_t nv, float scale, float *scores, float *acc, T *o, const T *next_k, \
            int64_t next_span) {                                                                    \
        (void)next_k;                                                                               \
        (void)next_span;                                                                            \
        attend_##S(queries, kb, vb, span, groups, nv, scale, scores, acc, o);                       \
    }
#endif

#define AS_IS(x) (x)

/* T: storage type; S: name suffix; LOAD: T -> float; STORE: float -> T (rounding). */
#define DEFINE_KERNELS(T, S, LOAD, STORE)                                                           \
    /* RMS norm as transformers computes it: float32 statistics, the normalised value rounded to  \
     * T, then multiplied by the weight in T. */                                                   \
    static inline void rms_norm_row_##S(const T *x, const T *w, T *out, int64_t dim, float eps) {  \
        float squares = 0.0f;                                                                      \
        _Pragma("omp simd reduction(+ : squares)") for (int64_t i = 0; i < dim; i++) {             \
            float v = LOAD(x[i]);                                                                  \
            squares = fmaf(v, v, squares);                                                         \
        }                                                                                          \
        float inv = 1.0f / sqrtf(squares / (float)dim + eps);                                      \
        for (int64_t i = 0; i < dim; i++) out[i] = STORE(LOAD(w[i]) * LOAD(STORE(LOAD(x[i]) * inv))); \
    }                                                                                              \
                                                                                                   \
    /* hidden += delta (when delta is given, rounded to T), then out = rms_norm(hidden) * w. */    \
    void ps_add_rms_norm_##S(T *hidden, const T *delta, const T *w, T *out, int64_t rows, int64_t dim, \
                             float eps) {                                                          \
        _Pragma("omp parallel for if (rows * dim >= 32768)") for (int64_t r = 0; r < rows; r++) {  \
            T *h = hidden + r * dim;                                                               \
            if (delta) {                                                                           \
                const T *d = delta + r * dim;                                                      \
                for (int64_t i = 0; i < dim; i++) h[i] = STORE(LOAD(h[i]) + LOAD(d[i]));           \
            }                                                                                      \
            rms_norm_row_##S(h, w, out + r * dim, dim, eps);                                       \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    /* out = silu(gate) * up, each rounded to T as the two eager operations do. */                 \
    void ps_silu_mul_##S(const T *gate, int64_t gate_stride, const T *up, int64_t up_stride, T *out, \
                         int64_t rows, int64_t n) {                                                \
        _Pragma("omp parallel for if (rows * n >= 32768)") for (int64_t r = 0; r < rows; r++) {    \
            const T *g = gate + r * gate_stride;                                                   \
            const T *u = up + r * up_stride;                                                       \
            T *o = out + r * n;                                                                    \
            for (int64_t i = 0; i < n; i++) {                                                      \
                float a = LOAD(g[i]);                                                              \
                float s = LOAD(STORE(a / (1.0f + exp_approx(-a))));                                \
                o[i] = STORE(s * LOAD(u[i]));                                                      \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    /* One head vector: optional per-head RMS norm, then the rotary embedding                      \
     * x * cos + rotate_half(x) * sin, rounded to T after each eager operation. */                 \
    static inline void rotate_##S(const T *src, const T *norm_w, float eps, const T *cs, const T *sn, \
                                   T *scratch, float *dst, int64_t hd) {                           \
        if (norm_w) {                                                                              \
            rms_norm_row_##S(src, norm_w, scratch, hd, eps);                                       \
            src = scratch;                                                                         \
        }                                                                                          \
        int64_t half = hd / 2;                                                                     \
        for (int64_t i = 0; i < hd; i++) {                                                         \
            float turned = i < half ? LOAD(STORE(-LOAD(src[i + half]))) : LOAD(src[i - half]);     \
            float a = LOAD(STORE(LOAD(src[i]) * LOAD(cs[i])));                                     \
            float b = LOAD(STORE(turned * LOAD(sn[i])));                                           \
            dst[i] = LOAD(STORE(a + b));                                                           \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    /* Softmax of each of `groups` score rows in float32, probabilities rounded to T. */          \
    static inline void softmax_rows_##S(float *scores, int64_t span, int64_t groups) {            \
        for (int64_t j = 0; j < groups; j++) {                                                     \
            float *sj = scores + j * span, top = -INFINITY, total = 0.0f;                          \
            for (int64_t t = 0; t < span; t++) top = sj[t] > top ? sj[t] : top;                    \
            _Pragma("omp simd reduction(+ : total)") for (int64_t t = 0; t < span; t++) {          \
                sj[t] = exp_approx(sj[t] - top);                                                   \
                total += sj[t];                                                                    \
            }                                                                                      \
            for (int64_t t = 0; t < span; t++) sj[t] = LOAD(STORE(sj[t] / total));                 \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    /* Attention of one row's query heads sharing one cached head, over positions 0..span-1.     \
     * Each cached key and value row is widened to float once and used by every query head of    \
     * the group. Always inlined, so calls with a constant hd compile to fixed-length loops. */   \
    static inline __attribute__((always_inline)) void attend_##S(const float *queries, const T *kb, \
            const T *vb, int64_t span, int64_t groups, int64_t hd, float scale, float *scores,    \
            float *acc, T *o) {                                                                    \
        float row[hd];                                                                             \
        for (int64_t t = 0; t < span; t++) {                                                       \
            for (int64_t i = 0; i < hd; i++) row[i] = LOAD(kb[t * hd + i]);                        \
            for (int64_t j = 0; j < groups; j++) {                                                 \
                float dot = 0.0f;                                                                  \
                _Pragma("omp simd reduction(+ : dot)") for (int64_t i = 0; i < hd; i++)            \
                    dot = fmaf(queries[j * hd + i], row[i], dot);                                  \
                scores[j * span + t] = LOAD(STORE(dot)) * scale;                                   \
            }                                                                                      \
        }                                                                                          \
        softmax_rows_##S(scores, span, groups);                                                    \
        memset(acc, 0, sizeof(float) * (size_t)(groups * hd));                                    \
        for (int64_t t = 0; t < span; t++) {                                                       \
            for (int64_t i = 0; i < hd; i++) row[i] = LOAD(vb[t * hd + i]);                        \
            for (int64_t j = 0; j < groups; j++) {                                                 \
                float w = scores[j * span + t];                                                    \
                _Pragma("omp simd") for (int64_t i = 0; i < hd; i++)                               \
                    acc[j * hd + i] = fmaf(w, row[i], acc[j * hd + i]);                             \
            }                                                                                      \
        }                                                                                          \
        for (int64_t j = 0; j < groups; j++)                                                       \
            for (int64_t i = 0; i < hd; i++) o[j * hd + i] = STORE(acc[j * hd + i]);               \
    }                                                                                              \
                                                                                                   \
    DEFINE_ATTEND_FAST(T, S, LOAD, STORE)                                                          \
                                                                                                   \
    /* Attention for one new token per row, written to the cache first. Row b's query heads, key  \
     * and value are at q + b*q_stride, k + b*k_stride, v + b*v_stride; its rotary cos/sin at       \
     * cs/sn + b*hd. Every row's rotated key and value are written to position pos[b] of slot       \
     * slot[b] of the caches ([slots, kv_heads, cap, hd]; slot NULL: slot b) before any row        \
     * attends, so rows of one prompt (a prefill) see each other's earlier tokens. Row b then      \
     * attends over positions 0..pos[b] of its slot (grouped-query: heads/kv_heads query heads per \
     * cached head). Scores are rounded to T as the eager matmul output is, softmax runs in float32 \
     * and its probabilities are rounded to T before the weighted sum of values. A row's result    \
     * depends on its own query and its slot's positions 0..pos[b] only, computed in one fixed     \
     * order: not on the other rows, their number or their order. out: [rows, heads*hd]. */        \
    void ps_decode_attention_##S(const T *q, int64_t q_stride, const T *k, int64_t k_stride, const T *v, \
                                 int64_t v_stride, const T *cs, const T *sn, const T *q_norm,       \
                                 const T *k_norm, float norm_eps, T *k_cache, T *v_cache,           \
                                 const int64_t *pos, const int64_t *slot, T *out, int64_t rows,    \
                                 int64_t heads, int64_t kv_heads, int64_t hd, int64_t cap, float scale) { \
        int64_t groups = heads / kv_heads;                                                         \
        _Pragma("omp parallel for schedule(static)") for (int64_t item = 0; item < rows * kv_heads; item++) { \
            int64_t b = item / kv_heads, g = item % kv_heads, p = pos[b], sb = slot ? slot[b] : b; \
            T *kb = k_cache + (sb * kv_heads + g) * cap * hd;                                      \
            T *vb = v_cache + (sb * kv_heads + g) * cap * hd;                                      \
            float key[hd];                                                                         \
            T scratch[hd];                                                                         \
            rotate_##S(k + b * k_stride + g * hd, k_norm, norm_eps, cs + b * hd, sn + b * hd, scratch, key, hd); \
            for (int64_t i = 0; i < hd; i++) {                                                     \
                kb[p * hd + i] = STORE(key[i]);                                                    \
                vb[p * hd + i] = v[b * v_stride + g * hd + i];                                     \
            }                                                                                      \
        }                                                                                          \
        _Pragma("omp parallel for schedule(static)") for (int64_t item = 0; item < rows * kv_heads; item++) { \
            int64_t b = item / kv_heads, g = item % kv_heads, span = pos[b] + 1, sb = slot ? slot[b] : b; \
            const T *c = cs + b * hd, *s = sn + b * hd;                                            \
            const T *kb = k_cache + (sb * kv_heads + g) * cap * hd;                                \
            const T *vb = v_cache + (sb * kv_heads + g) * cap * hd;                                \
            float *work = malloc(sizeof(float) * (size_t)(groups * (hd + span) + groups * hd) + sizeof(T) * (size_t)hd); \
            float *queries = work, *scores = queries + groups * hd;                                \
            float *acc = scores + groups * span;                                                   \
            T *scratch = (T *)(acc + groups * hd);                                                 \
            for (int64_t j = 0; j < groups; j++)                                                   \
                rotate_##S(q + b * q_stride + (g * groups + j) * hd, q_norm, norm_eps, c, s, scratch, \
                           queries + j * hd, hd);                                                  \
            T *o = out + b * heads * hd + g * groups * hd;                                         \
            int64_t next = item + 1 < rows * kv_heads ? item + 1 : item, nb = next / kv_heads;     \
            const T *next_k = k_cache + ((slot ? slot[nb] : nb) * kv_heads + next % kv_heads) * cap * hd; \
            int64_t next_span = pos[nb] + 1;                                                       \
            if (PS_FAST && hd == 64)                                                               \
                attend_fast_##S(queries, kb, vb, span, groups, 64 / PS_LANES, scale, scores, acc, o, next_k, next_span); \
            else if (PS_FAST && hd == 128)                                                         \
                attend_fast_##S(queries, kb, vb, span, groups, 128 / PS_LANES, scale, scores, acc, o, next_k, next_span); \
            else if (PS_FAST && hd % PS_LANES == 0)                                                \
                attend_fast_##S(queries, kb, vb, span, groups, hd / PS_LANES, scale, scores, acc, o, next_k, next_span); \
            else if (hd == 64)                                                                     \
                attend_##S(queries, kb, vb, span, groups, 64, scale, scores, acc, o);              \
            else if (hd == 128)                                                                    \
                attend_##S(queries, kb, vb, span, groups, 128, scale, scores, acc, o);             \
            else                                                                                   \
                attend_##S(queries, kb, vb, span, groups, hd, scale, scores, acc, o);              \
            free(work);                                                                            \
        }                                                                                          \
    }

DEFINE_KERNELS(float, f32, AS_IS, AS_IS)
DEFINE_KERNELS(bf16, bf16, bf16_to_float, float_to_bf16)

/* The layout version the Python side checks, so a stale build is never called. */
int ps_kernels_version(void) { return 2; }
