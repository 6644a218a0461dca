/* One decode step of a Llama-family model in a single C call: nanoseek's native decode path.

   Why it exists: at batch 1 a decode step of a small model is ~55 tiny operations, and dispatching them one
   by one (eager PyTorch, or even inductor's C++ wrapper) costs more than their arithmetic. Here the whole
   step -- embedding, every layer, final norm and output projection -- runs inside one OpenMP parallel
   region: the threads meet at a barrier between phases instead of being handed a new task per operation
   (what llama.cpp does too). nanoseek/engine/native.py compiles this file with the machine's C compiler,
   prepares the weights and calls `nanoseek_decode_step` through ctypes; the engine falls back to the
   PyTorch model whenever this path does not apply (see native.py). DeepSeek-V2/V3 models (multi-head latent
   attention, DeepSeekMoE) have a step of their own at the end of this file, `nanoseek_latent_decode_step`,
   built from the same projections, norms and barriers (native_latent.py lays out its weights).

   Numerics: fp32 throughout, as the PyTorch model in fp32. Each output row is a dot product computed the
   same way whatever the batch size or thread count, so a sequence decodes to the same tokens alone or in
   a batch. Results match the PyTorch model to float rounding (tests/engine/test_native_decode.py).

   bf16 models (on CPUs with AVX512-BF16 only): the projection weights and the KV cache (`kv_type` KV_BF16) stay in
   bf16, which halves the bytes every step reads, and each projection multiplies bf16 pairs with VDPBF16PS,
   twice the fp32 FMA rate. Its input rows are rounded to bf16 (as bf16 autocast does) but everything else --
   the residual stream, norms, rotary, softmax, sums -- stays fp32, so the step is at least as exact as the
   PyTorch model in bf16, not bit-equal to it; rows are still computed independently of the batch.

   AMX (`m->amx`, CPUs with AMX-BF16 tiles whose kernel grants the tile state, and projection inputs that are
   multiples of 32): the bf16 projections run on the tile unit instead, 16 rows by 32 columns per pass
   (`project_amx`). VDPBF16PS is no faster than fp32 FMAs on such a CPU, while the tiles multiply bf16 several
   times faster than either, which is what lets a batch of 16 rows cost about what one row costs. The AMX path
   serves every batch size, one row included, so a row's logits still do not depend on its batch.

   Quantized weights (q8_0, q4_1; `project_quantized`, formats in nanoseek/model/quantized.py): each projection
   may be stored quantized, as llama.cpp's blocks of 32 weights in a column-blocked layout. Its input rows are
   rounded to int8 per block of 32 inputs (as llama.cpp's activations), the products summed exactly in int32
   (VPDPBUSD where the CPU has AVX512-VNNI, plain loops otherwise) and scaled into fp32 sums; everything else
   stays fp32. A step reads a quarter (q8_0) to an eighth (q4_1) of the fp32 weight bytes.

   fp16 KV cache (`kv_type` KV_F16, any of these models; `--kv-cache-dtype float16`): each new key and value is
   rounded to IEEE fp16 where it is stored, as llama.cpp stores its own by default, and attention reads them back
   widened to fp32; everything else is unchanged. A quantized model then computes attention over the same
   rounded keys and values as llama.cpp's on the same file (BENCHMARKS.md, agreement with llama.cpp).

   Layouts: projection weights packed in column blocks (`project`), or with NANOSEEK_NATIVE_IN_PLACE=1 the model's
   own row-major ones (`project_rows`); the embedding is the model's own table, read in place; the q/k/v projection's output
   rows are the q heads, then the k heads, then the v heads; gate/up holds 16 gate rows, then the same 16
   up rows, block after block (SWIGLU), with `intermediate` rounded up to a multiple of 32 by zero rows (and
   the down projection's inputs by zero columns), whose activations are silu(0) * 0 = 0; the KV cache is the engine's SlotKVCache, [slot, kv_head, position, head_dim] per layer. The rotary
   tables are [position, head_dim] with the sign of rotate_half folded into sin, as in transformer.py. */

#define _DEFAULT_SOURCE /* syscall() under -std=c11 */
#include <math.h>
#include <omp.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__AVX512F__) || defined(__AVX512BF16__) || defined(__AVX512VNNI__)
#include <immintrin.h>
#endif
#if defined(__AVX512BF16__) && defined(__AMX_TILE__) && defined(__AMX_BF16__)
#define HAVE_AMX 1
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* How a projection weight is stored (`weight_types`; native.py `WEIGHT_TYPES`): fp32 or bf16 packed in column
   blocks (`project_fp32`, `project_bf16`), llama.cpp-style quantized blocks in nanoseek/model/quantized.py's
   packed layout (`project_quantized`), or the model's own fp32 or bf16 weight, row-major, read in place
   (`project_rows`). */
enum { WEIGHT_FP32 = 0, WEIGHT_BF16 = 1, WEIGHT_Q8_0 = 2, WEIGHT_Q4_1 = 3, WEIGHT_FP32_ROWS = 4, WEIGHT_BF16_ROWS = 5 };

/* How the KV cache stores its entries (`kv_type`; native.py `KV_TYPES`): fp32, bf16, or IEEE fp16 (llama.cpp's
   default cache type; `--kv-cache-dtype float16`): half the bytes of fp32, and each key and value rounded as
   llama.cpp rounds its own. Whatever the cache holds, attention computes in fp32. */
enum { KV_FP32 = 0, KV_BF16 = 1, KV_F16 = 2 };

/* Norms, biases and the rotary tables are always fp32 (native.py converts them). Each layer's four projections
   have their own storage type: weight_types[4 * layer + i] for i = q/k/v, o, gate/up, down, and
   weight_types[4 * num_layers] for the output head. The
   embedding is the model's own fp32 or bf16 table, [hidden, vocab] (`embed_type` WEIGHT_FP32, WEIGHT_BF16:
   transformer.py's column-major storage) or [vocab, hidden] (WEIGHT_FP32_ROWS, WEIGHT_BF16_ROWS), or a quantized
   [vocab, hidden] table in the packed layout (token t is its output column t; the output head's own blocks when
   they are tied).
   `intermediate` is the padded MLP width. `vnni`: quantized projections multiply with VPDPBUSD (AVX512-VNNI),
   else with the portable loops. */
typedef struct {
    int32_t hidden, num_heads, num_kv_heads, head_dim, intermediate, vocab, num_layers, slot_capacity, kv_type, amx;
    int32_t vnni, embed_type;
    float eps;
    const void *embed;
    const void *lm_head;
    const float *final_norm, *cos_table, *sin_table;
    const float *const *input_norm, *const *post_norm;
    const void *const *qkv_weight;
    const float *const *qkv_bias;
    const void *const *o_weight;
    const float *const *o_bias;
    const void *const *gate_up_weight;
    const float *const *gate_up_bias;
    const void *const *down_weight;
    const float *const *down_bias;
    void *const *keys, *const *values;
    const int32_t *weight_types;
} DecodeModel;

/* Scratch memory for a batch of up to max_batch rows, laid out by native.py. `input_pairs` holds, per thread,
   a projection's input rows rounded to bf16 (pairs of them per uint32_t), max_batch rounded up to 16 rows
   (an AMX tile's height); bf16 models only. */
typedef struct {
    float *x, *normed, *qkv, *attention, *activation, *scores;
    uint32_t *input_pairs;
    int32_t input_pairs_per_thread;
} Workspace;

/* 1 when this build can run bf16 models (the compiler targeted a CPU with AVX512-BF16). */
int nanoseek_supports_bf16(void) {
#if defined(__AVX512BF16__)
    return 1;
#else
    return 0;
#endif
}

/* 1 when this build multiplies quantized weights with VPDPBUSD (the compiler targeted a CPU with AVX512-VNNI). */
int nanoseek_supports_vnni(void) {
#if defined(__AVX512VNNI__)
    return 1;
#else
    return 0;
#endif
}

/* 1 when this process may use AMX bf16 tiles: the build targets them and Linux granted this process the
   tile state (arch_prctl ARCH_REQ_XCOMP_PERM for XTILEDATA, process-wide; refused on kernels before 5.16). */
int nanoseek_enable_amx(void) {
#if defined(HAVE_AMX)
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#else
    return 0;
#endif
}

/* fp32 -> bf16, rounding to nearest even as PyTorch's conversion does (NaNs stay quiet NaNs). */
static inline uint16_t bf16_from_float(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

static inline float float_from_bf16(uint16_t value) {
    const uint32_t bits = (uint32_t)value << 16;
    float result;
    memcpy(&result, &bits, sizeof result);
    return result;
}

/* IEEE fp16 <-> fp32: the quantized blocks' scales and an fp16 KV cache's entries. */
static inline float float_from_half(uint16_t half) {
    const uint32_t sign = (uint32_t)(half & 0x8000u) << 16, exponent = (half >> 10) & 0x1fu, mantissa = half & 0x3ffu;
    uint32_t bits;
    if (exponent == 0x1fu) {
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent != 0) {
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    } else {  /* zero or subnormal: mantissa x 2^-24, exact in fp32 */
        float value = (float)mantissa * 5.9604644775390625e-8f;
        memcpy(&bits, &value, sizeof bits);
        bits |= sign;
    }
    float result;
    memcpy(&result, &bits, sizeof result);
    return result;
}

/* fp32 -> fp16 bits, rounded to nearest even (as F16C's VCVTPS2PH and ggml's GGML_FP32_TO_FP16). */
static inline uint16_t half_from_float(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    const uint32_t sign = (bits >> 16) & 0x8000u, magnitude = bits & 0x7fffffffu;
    if (magnitude > 0x7f800000u) return (uint16_t)(sign | 0x7e00u); /* NaN */
    if (magnitude >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* 65520 and above round to infinity */
    if (magnitude < 0x38800000u) {                                     /* below 2^-14: a subnormal half or 0 */
        float small;
        memcpy(&small, &magnitude, sizeof small);
        return (uint16_t)(sign | (uint32_t)rintf(small * 16777216.0f)); /* units of 2^-24; 1024 is 2^-14 */
    }
    uint32_t half = (magnitude >> 13) - ((127u - 15u) << 10); /* rebiased exponent and the top 10 mantissa bits */
    const uint32_t rest = magnitude & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) half++; /* a carry moves into the exponent: right */
    return (uint16_t)(sign | half);
}

/* Element i of a cache tensor of `kv_type`. */
static inline float cache_load(const void *base, size_t i, int kv_type) {
    if (kv_type == KV_BF16) return float_from_bf16(((const uint16_t *)base)[i]);
    if (kv_type == KV_F16) return float_from_half(((const uint16_t *)base)[i]);
    return ((const float *)base)[i];
}

/* Elements i..i+n of a cache tensor of `kv_type` from fp32 values (rounded for a bf16 or fp16 cache). */
static inline void cache_store_row(void *base, size_t i, const float *values, int n, int kv_type) {
    if (kv_type == KV_FP32) {
        memcpy((float *)base + i, values, (size_t)n * sizeof *values);
        return;
    }
    uint16_t *dst = (uint16_t *)base + i;
    if (kv_type == KV_BF16) {
#pragma omp simd
        for (int k = 0; k < n; k++) dst[k] = bf16_from_float(values[k]);
        return;
    }
    int k = 0;
#if defined(__AVX512F__)
    for (; k + 16 <= n; k += 16) {
        const __m256i halves = _mm512_cvtps_ph(_mm512_loadu_ps(values + k), _MM_FROUND_TO_NEAREST_INT);
        _mm256_storeu_si256((__m256i *)(dst + k), halves);
    }
#endif
    for (; k < n; k++) dst[k] = half_from_float(values[k]);
}

/* e^x, written so that GCC vectorizes a loop of it (expf is a libm call it cannot): x = n ln2 + r with
   |r| <= ln2/2 (Cody-Waite, ln2 in two parts), e^r by its degree-6 Taylor polynomial, times 2^n built from
   its exponent bits. Relative error 2.3e-7 over [-87, 88] (glibc's expf: 2.0e-7); x is clamped to that range,
   so e^x never under- or overflows (a softmax weight e^-100 comes out 1.6e-38, not 3.7e-44); NaN stays NaN. */
static inline float exp_approx(float x) {
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    const float n = rintf(x * 1.44269504088896341f);
    const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
    float p = 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* The barrier between phases. Every phase's loop is `nowait` and the threads meet here instead of at
   OpenMP's implicit barrier, because libgomp stops spinning at its barriers (it sleeps on a futex) as soon
   as the process has more OpenMP threads than cores -- which happens whenever a second thread has run a
   parallel PyTorch op -- and a ~50 us wake-up at each of the step's ~60 phase ends made steps 6x slower.
   A waiting thread spins, and yields its core after a while so that an oversubscribed machine still
   makes progress. */
typedef struct {
    atomic_int arrived;
    atomic_int generation;
} PhaseBarrier;

static void phase_end(PhaseBarrier *barrier) {
    const int team = omp_get_num_threads();
    if (team == 1) return;
    const int generation = atomic_load_explicit(&barrier->generation, memory_order_acquire);
    if (atomic_fetch_add_explicit(&barrier->arrived, 1, memory_order_acq_rel) == team - 1) {
        atomic_store_explicit(&barrier->arrived, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&barrier->generation, 1, memory_order_release);
        return;
    }
    for (long spins = 0; atomic_load_explicit(&barrier->generation, memory_order_acquire) == generation; spins++) {
        if (spins > 20000) sched_yield();
#if defined(__SSE2__)
        else _mm_pause();
#endif
    }
}

static void rms_norm_rows(const float *x, const float *weight, float *out, int rows, int dim, float eps) {
#pragma omp for schedule(static) nowait
    for (int r = 0; r < rows; r++) {
        const float *row = x + (size_t)r * dim;
        float *dst = out + (size_t)r * dim;
        float squares = 0.0f;
#pragma omp simd reduction(+ : squares)
        for (int k = 0; k < dim; k++) squares += row[k] * row[k];
        const float scale = 1.0f / sqrtf(squares / dim + eps);
#pragma omp simd
        for (int k = 0; k < dim; k++) dst[k] = row[k] * scale * weight[k];
    }
}

/* 16 floats: one AVX-512 register, or two AVX2 ones where the machine has no AVX-512. aligned(4) lets a
   pointer to it read any float address (unaligned loads). */
typedef float f16 __attribute__((vector_size(64), aligned(4)));

#define COLUMN_BLOCK 32 /* two vectors of outputs per task: enough tasks for two threads even at 192 outputs */
#define ROW_BLOCK 8     /* batch rows per pass over a weight block: 16 vector sums stay in registers */

static const float NO_BIAS[COLUMN_BLOCK];

/* What a projection does with its sums (plus bias): WRITE them to its output columns, ACCUMULATE them into
   them (the residual stream), or, for the gate/up projection, SWIGLU: native.py packs each 32-column block
   as 16 gate columns then the same 16 up columns, so the block's 16 outputs silu(gate) * up go straight to
   columns j0/2.. of the activation, and the MLP needs no separate phase (and barrier) for them. */
enum { WRITE = 0, ACCUMULATE = 1, SWIGLU = 2 };

/* A block's fp32 sums [rows][sums_stride] plus the bias, into columns j0..j0+width of `out` as `epilogue`
   says. Branch-free inner loops, so that they vectorize. */
static inline void store_block(const float *sums, int sums_stride, int rows, int j0, int width, const float *bias,
                               float *out, int out_stride, int epilogue) {
    const float *b = bias ? bias + j0 : NO_BIAS;
    for (int r = 0; r < rows; r++) {
        float *dst = out + (size_t)r * out_stride + j0;
        const float *src = sums + (size_t)r * sums_stride;
        if (epilogue == ACCUMULATE) {
            for (int i = 0; i < width; i++) dst[i] += src[i] + b[i];
        } else if (epilogue == SWIGLU) {
            float *activation = out + (size_t)r * out_stride + j0 / 2;
#pragma omp simd
            for (int i = 0; i < COLUMN_BLOCK / 2; i++) {
                const float gate = src[i] + b[i], up = src[i + COLUMN_BLOCK / 2] + b[i + COLUMN_BLOCK / 2];
                activation[i] = gate / (1.0f + exp_approx(-gate)) * up;
            }
        } else {
            for (int i = 0; i < width; i++) dst[i] = src[i] + b[i];
        }
    }
}

/* out[r, j0:j0+width] (as `epilogue` says) x[r0:r0+rows, :] . block + bias, rows <= 8, width <= 32, where
   `block` is one packed column block: [in_dim, 32] contiguous (see `project`). The classic GEMM micro-kernel:
   each step over k loads two weight vectors and broadcasts one input per row, so every loaded weight is used
   `rows` times and no sum needs a horizontal reduction. */
static inline __attribute__((always_inline)) void project_block(
    const float *x, int rows, int in_dim, const float *block, int j0, int width, const float *bias, float *out,
    int out_stride, int epilogue) {
    f16 low[ROW_BLOCK], high[ROW_BLOCK];
    for (int r = 0; r < rows; r++) low[r] = high[r] = (f16){0};
    for (int k = 0; k < in_dim; k++) {
        const f16 w_low = *(const f16 *)(block + (size_t)k * COLUMN_BLOCK);
        const f16 w_high = *(const f16 *)(block + (size_t)k * COLUMN_BLOCK + 16);
        for (int r = 0; r < rows; r++) {
            const float v = x[(size_t)r * in_dim + k];
            low[r] += v * w_low;
            high[r] += v * w_high;
        }
    }
    float sums[ROW_BLOCK][COLUMN_BLOCK];
    for (int r = 0; r < rows; r++) {
        memcpy(sums[r], &low[r], sizeof low[r]);
        memcpy(sums[r] + 16, &high[r], sizeof high[r]);
    }
    store_block(&sums[0][0], COLUMN_BLOCK, rows, j0, width, bias, out, out_stride, epilogue);
}

/* out[r, j] (as `epilogue` says) x[r, :] . weight[j, :] + bias[j] for r < rows, j < out_dim. The weight
   comes packed by native.py (`packed_projection`): column blocks of 32 outputs, each block [in_dim, 32]
   contiguous, the last one zero-padded. A block is then one sequential stream: reading [in, out] rows
   out_dim floats apart instead cost a cache line and often a TLB entry per k, and at hidden 512 made
   16-row steps slower than oneDNN. Threads split the column blocks. */
static void project_fp32(const float *x, int rows, int in_dim, const float *packed, const float *bias, int out_dim,
                         float *out, int out_stride, int epilogue) {
    const int blocks = (out_dim + COLUMN_BLOCK - 1) / COLUMN_BLOCK;
#pragma omp for schedule(static) nowait
    for (int b = 0; b < blocks; b++) {
        const float *block = packed + (size_t)b * in_dim * COLUMN_BLOCK;
        const int j0 = b * COLUMN_BLOCK;
        const int width = out_dim - j0 < COLUMN_BLOCK ? out_dim - j0 : COLUMN_BLOCK;
        for (int r0 = 0; r0 < rows; r0 += ROW_BLOCK) {
            const int n = rows - r0 < ROW_BLOCK ? rows - r0 : ROW_BLOCK;
            const float *xr = x + (size_t)r0 * in_dim;
            float *dst = out + (size_t)r0 * out_stride;
            /* Constant row counts let the compiler keep every sum in a register. */
            switch (n) {
                case 8: project_block(xr, 8, in_dim, block, j0, width, bias, dst, out_stride, epilogue); break;
                case 4: project_block(xr, 4, in_dim, block, j0, width, bias, dst, out_stride, epilogue); break;
                case 3: project_block(xr, 3, in_dim, block, j0, width, bias, dst, out_stride, epilogue); break;
                case 2: project_block(xr, 2, in_dim, block, j0, width, bias, dst, out_stride, epilogue); break;
                case 1: project_block(xr, 1, in_dim, block, j0, width, bias, dst, out_stride, epilogue); break;
                default: project_block(xr, n, in_dim, block, j0, width, bias, dst, out_stride, epilogue);
            }
        }
    }
}

#if defined(__AVX512BF16__)
/* The bf16 micro-kernel: as project_block, over `pairs` = in_dim / 2 steps of two inputs each. `block` is one
   packed bf16 column block, [pairs, 32, 2]: a 64-byte load holds 16 columns' weights for inputs 2p and 2p+1,
   and VDPBF16PS adds both products to each column's fp32 sum. `x_pairs` holds each row's inputs 2p and 2p+1
   as one uint32_t, broadcast to all 16 lanes. */
static inline __attribute__((always_inline)) void project_block_bf16(
    const uint32_t *x_pairs, int rows, int pairs, const uint16_t *block, int j0, int width, const float *bias,
    float *out, int out_stride, int epilogue) {
    __m512 low[ROW_BLOCK], high[ROW_BLOCK];
    for (int r = 0; r < rows; r++) low[r] = high[r] = _mm512_setzero_ps();
    for (int p = 0; p < pairs; p++) {
        const __m512bh w_low = (__m512bh)_mm512_loadu_si512(block + (size_t)p * 2 * COLUMN_BLOCK);
        const __m512bh w_high = (__m512bh)_mm512_loadu_si512(block + (size_t)p * 2 * COLUMN_BLOCK + 32);
        for (int r = 0; r < rows; r++) {
            const __m512bh v = (__m512bh)_mm512_set1_epi32((int)x_pairs[(size_t)r * pairs + p]);
            low[r] = _mm512_dpbf16_ps(low[r], v, w_low);
            high[r] = _mm512_dpbf16_ps(high[r], v, w_high);
        }
    }
    float sums[ROW_BLOCK][COLUMN_BLOCK];
    for (int r = 0; r < rows; r++) {
        _mm512_storeu_ps(sums[r], low[r]);
        _mm512_storeu_ps(sums[r] + 16, high[r]);
    }
    store_block(&sums[0][0], COLUMN_BLOCK, rows, j0, width, bias, out, out_stride, epilogue);
}

/* project_fp32 for bf16 weights (native.py `packed_projection` with bf16 pairs). Every thread first rounds
   all input rows to bf16 into its own buffer -- a few thousand conversions, cheaper than a barrier -- and
   then takes its share of the column blocks. in_dim is even (native.py checks). */
static void round_rows_to_bf16(const float *x, int rows, int in_dim, uint16_t *halves) {
    for (int r = 0; r < rows; r++) {
        const float *row = x + (size_t)r * in_dim;
        uint16_t *dst = halves + (size_t)r * in_dim;
        int k = 0;
        for (; k + 16 <= in_dim; k += 16)
            _mm256_storeu_si256((__m256i *)(dst + k), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(row + k)));
        for (; k < in_dim; k++) dst[k] = bf16_from_float(row[k]);
    }
}

static void project_bf16(const float *x, int rows, int in_dim, const uint16_t *packed, const float *bias,
                         int out_dim, float *out, int out_stride, int epilogue, uint32_t *x_pairs) {
    const int pairs = in_dim / 2, blocks = (out_dim + COLUMN_BLOCK - 1) / COLUMN_BLOCK;
    round_rows_to_bf16(x, rows, in_dim, (uint16_t *)x_pairs);
#pragma omp for schedule(static) nowait
    for (int b = 0; b < blocks; b++) {
        const uint16_t *block = packed + (size_t)b * in_dim * COLUMN_BLOCK;
        const int j0 = b * COLUMN_BLOCK;
        const int width = out_dim - j0 < COLUMN_BLOCK ? out_dim - j0 : COLUMN_BLOCK;
        for (int r0 = 0; r0 < rows; r0 += ROW_BLOCK) {
            const int n = rows - r0 < ROW_BLOCK ? rows - r0 : ROW_BLOCK;
            const uint32_t *xr = x_pairs + (size_t)r0 * pairs;
            float *dst = out + (size_t)r0 * out_stride;
            switch (n) {
                case 8: project_block_bf16(xr, 8, pairs, block, j0, width, bias, dst, out_stride, epilogue); break;
                case 4: project_block_bf16(xr, 4, pairs, block, j0, width, bias, dst, out_stride, epilogue); break;
                case 1: project_block_bf16(xr, 1, pairs, block, j0, width, bias, dst, out_stride, epilogue); break;
                default: project_block_bf16(xr, n, pairs, block, j0, width, bias, dst, out_stride, epilogue);
            }
        }
    }
}
#endif

#if defined(HAVE_AMX)
#define TILE_ROWS 16 /* rows of a tile; 64 bytes a row: 32 bf16 inputs, or 16 fp32 sums, or 16 bf16 pairs */

/* Every tile 16 rows of 64 bytes: sums 0 and 1 (columns 0-15 and 16-31 of a block), inputs 2, weights 3
   and 4. The configuration is per thread: each thread of the step's parallel region loads it. It is a
   constant in memory, not built on the stack, because GCC 12's _tile_loadconfig tells the compiler it reads
   only 8 bytes, and the stores of the other fields were optimised away (LDTILECFG then faulted). */
static const struct {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
} TILE_CONFIG = {.palette_id = 1, .bytes_per_row = {64, 64, 64, 64, 64}, .rows = {16, 16, 16, 16, 16}};

/* project_bf16 on the tile unit, for in_dim a multiple of 32. A tile of inputs is 16 rows x 32 bf16 of the
   rounded input rows (rows past `rows` are zeros); the packed block [pairs, 32, 2] is read as two weight
   tiles, 16 pairs x 16 columns each (its left and right halves: a 128-byte stride), and TDPBF16PS adds
   inputs x weights into the two fp32 sum tiles. */
static void project_amx(const float *x, int rows, int in_dim, const uint16_t *packed, const float *bias,
                        int out_dim, float *out, int out_stride, int epilogue, uint16_t *halves) {
    const int blocks = (out_dim + COLUMN_BLOCK - 1) / COLUMN_BLOCK;
    const int padded_rows = (rows + TILE_ROWS - 1) / TILE_ROWS * TILE_ROWS;
    round_rows_to_bf16(x, rows, in_dim, halves);
    memset(halves + (size_t)rows * in_dim, 0, (size_t)(padded_rows - rows) * in_dim * sizeof *halves);
#pragma omp for schedule(static) nowait
    for (int b = 0; b < blocks; b++) {
        const uint16_t *block = packed + (size_t)b * in_dim * COLUMN_BLOCK;
        const int j0 = b * COLUMN_BLOCK;
        const int width = out_dim - j0 < COLUMN_BLOCK ? out_dim - j0 : COLUMN_BLOCK;
        for (int r0 = 0; r0 < rows; r0 += TILE_ROWS) {
            _tile_zero(0);
            _tile_zero(1);
            for (int k = 0; k < in_dim; k += 32) {
                _tile_loadd(2, halves + (size_t)r0 * in_dim + k, in_dim * 2);
                _tile_loadd(3, block + (size_t)k * COLUMN_BLOCK, 2 * COLUMN_BLOCK * 2);  /* pairs k/2.. */
                _tile_loadd(4, block + (size_t)k * COLUMN_BLOCK + 32, 2 * COLUMN_BLOCK * 2);
                _tile_dpbf16ps(0, 2, 3);
                _tile_dpbf16ps(1, 2, 4);
            }
            const int n = rows - r0 < TILE_ROWS ? rows - r0 : TILE_ROWS;
            float *dst = out + (size_t)r0 * out_stride + j0;
            if (n == TILE_ROWS && width == COLUMN_BLOCK && epilogue == WRITE && !bias) {  /* the sums are the output */
                _tile_stored(0, dst, out_stride * 4);
                _tile_stored(1, dst + 16, out_stride * 4);
                continue;
            }
            float sums[TILE_ROWS][COLUMN_BLOCK] __attribute__((aligned(64)));
            _tile_stored(0, &sums[0][0], COLUMN_BLOCK * 4);
            _tile_stored(1, &sums[0][16], COLUMN_BLOCK * 4);
            store_block(&sums[0][0], COLUMN_BLOCK, n, j0, width, bias, out + (size_t)r0 * out_stride, out_stride,
                        epilogue);
        }
    }
}
#endif

/* ---- Projections read in place: the model's own weights (WEIGHT_FP32_ROWS, WEIGHT_BF16_ROWS) -------------

   The weight as nn.Linear keeps it, [out_dim, in_dim] row-major (native.py makes it contiguous once), read where
   it lies, so the model's weights are resident once, not beside a packed copy (native.py, NANOSEEK_NATIVE_IN_PLACE=1:
   opt-in: as fast at 1 row, slower at more -- thread CPU time per step of a 4-layer SmolLM2-wide model with its
   49k-row head, one thread, on a loaded 2-core EPYC, against the packed kernels: fp32 1.0x at 1 row, 1.15-1.5x at
   2-16 rows; bf16 1.0x at 1-2 rows, 1.1-1.2x at 3-16). Output j is the dot product of
   an input row with weight row j: one sequential stream per output, as a packed column block is one per 32.
   Each (input row, output) pair sums into 16 lanes, 16 inputs at a time (fp32 FMAs) or 32 (bf16 pairs,
   VDPBF16PS), and `sum_tile_lanes` adds the lanes with one fixed tree, whichever tile the pair was computed in: a
   row's logits do not depend on its batch. A tile is 16 such sums -- 16 outputs of one input row, 8 of 2 or 4
   of 4 -- so each weight vector is loaded once for the tile's rows and each input vector once for its
   outputs. The outputs go in blocks of 32 like the packed kernels' (threads split the blocks; SWIGLU's block
   is 16 gate rows and the same 16 up rows of the [gate; up] weight). */

#if defined(__clang__) || __GNUC__ >= 12
#define SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
typedef int32_t lanes16 __attribute__((vector_size(64)));
#define SHUFFLE(a, b, ...) __builtin_shuffle(a, b, (lanes16){__VA_ARGS__})
#endif

#define TILE_SUMS 16 /* sums per tile: as many as a vector has lanes, so that `sum_tile_lanes` fills one */

/* Keeps a loaded vector in its register: GCC would otherwise load it again for each multiply it feeds (folded into
   the FMA as a memory operand), and a tile of 4 x 4 sums then made 32 loads per 16 FMAs, load-bound at half the
   speed of the packed kernels. */
#if defined(__AVX512F__)
#define IN_REGISTER(v) __asm__("" : "+v"(v))
#else
#define IN_REGISTER(v) ((void)0)
#endif

/* Lane i of the result: the sum of a[i]'s 16 lanes, p_l = a_l + a_{l+8}, q_l = p_l + p_{l+4}, s_l = q_l +
   q_{l+2}, s_0 + s_1 for every i (a transposing tree: 15 vector adds for the 16 sums). */
static inline f16 sum_tile_lanes(const f16 *a) {
    f16 p[8], q[4], s[2];
    for (int i = 0; i < 8; i++)
        p[i] = SHUFFLE(a[2 * i], a[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
               SHUFFLE(a[2 * i], a[2 * i + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    for (int i = 0; i < 4; i++)
        q[i] = SHUFFLE(p[2 * i], p[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
               SHUFFLE(p[2 * i], p[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    for (int i = 0; i < 2; i++)
        s[i] = SHUFFLE(q[2 * i], q[2 * i + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +
               SHUFFLE(q[2 * i], q[2 * i + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
    return SHUFFLE(s[0], s[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
           SHUFFLE(s[0], s[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}

/* The next block's weight rows, fetched into L2 while a block is computed: its tiles read 4 to 16 rows at a time,
   short interleaved streams that the hardware prefetchers follow poorly, and straight from DRAM 4-row tiles took
   twice the packed kernels' time. One region of rows, or SWIGLU's two (16 gate rows, 16 up rows). */
typedef struct {
    const char *region[2];
    size_t length[2]; /* bytes */
    size_t done;      /* bytes of both regions fetched so far */
} BlockAhead;

static inline BlockAhead block_ahead(const void *weight, size_t row_bytes, int b, int out_dim, int epilogue) {
    BlockAhead ahead = {{weight, weight}, {0, 0}, 0};
    const int next = b + 1, half = COLUMN_BLOCK / 2;
    if (next * COLUMN_BLOCK >= out_dim) return ahead;
    if (epilogue == SWIGLU) {
        ahead.region[0] = (const char *)weight + (size_t)half * next * row_bytes;
        ahead.region[1] = (const char *)weight + (size_t)(out_dim / 2 + half * next) * row_bytes;
        ahead.length[0] = ahead.length[1] = half * row_bytes;
    } else {
        const int rows = out_dim - next * COLUMN_BLOCK < COLUMN_BLOCK ? out_dim - next * COLUMN_BLOCK : COLUMN_BLOCK;
        ahead.region[0] = (const char *)weight + (size_t)next * COLUMN_BLOCK * row_bytes;
        ahead.length[0] = rows * row_bytes;
    }
    return ahead;
}

/* Fetch the next `lines` cache lines of the next block (a tile's step fetches as many as it reads weight rows, so
   the first pass over a block's rows fetches all of the next block's). */
static inline void fetch_ahead(BlockAhead *ahead, int lines) {
    for (int i = 0; i < lines && ahead->done < ahead->length[0] + ahead->length[1]; i++, ahead->done += 64) {
        const size_t at = ahead->done;
        __builtin_prefetch(at < ahead->length[0] ? ahead->region[0] + at : ahead->region[1] + (at - ahead->length[0]),
                           0, 2);
    }
}

/* The lanes of a tile of `rows` input rows x `columns` outputs (rows * columns = 16): sums[r * columns + c] of
   x[r, :] . w[c][:] (fp32 weight rows). */
static inline __attribute__((always_inline)) void tile_fp32(const float *x, int rows, int in_dim,
                                                            const float *const *w, int columns, f16 *sums,
                                                            BlockAhead *ahead) {
    for (int i = 0; i < TILE_SUMS; i++) sums[i] = (f16){0};
    for (int k = 0; k < in_dim; k += 16) {
        fetch_ahead(ahead, columns);
        f16 inputs[4];
#pragma GCC unroll 4
        for (int r = 0; r < rows; r++) {
            inputs[r] = *(const f16 *)(x + (size_t)r * in_dim + k);
            IN_REGISTER(inputs[r]);
        }
#pragma GCC unroll 16
        for (int c = 0; c < columns; c++) {
            f16 weights = *(const f16 *)(w[c] + k);
            IN_REGISTER(weights);
#pragma GCC unroll 4
            for (int r = 0; r < rows; r++) sums[r * columns + c] += inputs[r] * weights;
        }
    }
}

#if defined(__AVX512BF16__)
/* tile_fp32 for bf16 weight rows and the input rows rounded to bf16 (`halves`): 32 inputs a step, each lane
   adding the products of one pair. */
static inline __attribute__((always_inline)) void tile_bf16(const uint16_t *halves, int rows, int in_dim,
                                                            const uint16_t *const *w, int columns, f16 *sums,
                                                            BlockAhead *ahead) {
    for (int i = 0; i < TILE_SUMS; i++) sums[i] = (f16){0};
    for (int k = 0; k < in_dim; k += 32) {
        fetch_ahead(ahead, columns);
        __m512bh inputs[4];
#pragma GCC unroll 4
        for (int r = 0; r < rows; r++) {
            inputs[r] = (__m512bh)_mm512_loadu_si512(halves + (size_t)r * in_dim + k);
            IN_REGISTER(inputs[r]);
        }
#pragma GCC unroll 16
        for (int c = 0; c < columns; c++) {
            __m512bh weights = (__m512bh)_mm512_loadu_si512(w[c] + k);
            IN_REGISTER(weights);
#pragma GCC unroll 4
            for (int r = 0; r < rows; r++)
                sums[r * columns + c] = (f16)_mm512_dpbf16_ps((__m512)sums[r * columns + c], inputs[r], weights);
        }
    }
}
#endif

/* Weight row of output j (0..31) of block b: rows 32b.., or for SWIGLU gate rows 16b.. then up rows out_dim / 2
   + 16b..; past the weight's end (the last block's leftover outputs), its last row, whose sums go unused. */
static inline int weight_row(int b, int j, int out_dim, int epilogue) {
    const int half = COLUMN_BLOCK / 2;
    const int row = epilogue == SWIGLU ? (j < half ? half * b + j : out_dim / 2 + half * b + j - half) : 32 * b + j;
    return row < out_dim ? row : out_dim - 1;
}

/* The sums [rows][COLUMN_BLOCK] of block b for `rows` <= ROW_BLOCK input rows, in tiles of `tile_rows` x 16 /
   `tile_rows` outputs (x: fp32 rows, or bf16 halves for bf16 weights). */
static inline __attribute__((always_inline)) void block_tiles(const void *x, int tile_rows, int in_dim,
                                                              const void *weight, int bf16, int b, int out_dim,
                                                              int epilogue, float *sums, BlockAhead *ahead) {
    const int columns = TILE_SUMS / tile_rows, element = bf16 ? sizeof(uint16_t) : sizeof(float);
    for (int c0 = 0; c0 < COLUMN_BLOCK; c0 += columns) {
        const char *w[TILE_SUMS];
        for (int c = 0; c < columns; c++)
            w[c] = (const char *)weight + (size_t)weight_row(b, c0 + c, out_dim, epilogue) * in_dim * element;
        f16 lanes[TILE_SUMS];
#if defined(__AVX512BF16__)
        if (bf16)
            tile_bf16((const uint16_t *)x, tile_rows, in_dim, (const uint16_t *const *)w, columns, lanes, ahead);
        else
#endif
            tile_fp32((const float *)x, tile_rows, in_dim, (const float *const *)w, columns, lanes, ahead);
        const f16 total = sum_tile_lanes(lanes);
        for (int r = 0; r < tile_rows; r++)
            memcpy(sums + (size_t)r * COLUMN_BLOCK + c0, (const float *)&total + r * columns, columns * sizeof(float));
    }
}

/* project_fp32 for a weight read in place (`type` WEIGHT_FP32_ROWS or WEIGHT_BF16_ROWS), in_dim a multiple of
   16 (fp32) or 32 (bf16), and for SWIGLU out_dim / 2 a multiple of 16 (native.py checks). */
static void project_rows(const float *x, int rows, int in_dim, const void *weight, int type, const float *bias,
                         int out_dim, float *out, int out_stride, int epilogue, uint16_t *halves) {
    const int blocks = (out_dim + COLUMN_BLOCK - 1) / COLUMN_BLOCK, bf16 = type == WEIGHT_BF16_ROWS;
#if defined(__AVX512BF16__)
    if (bf16) round_rows_to_bf16(x, rows, in_dim, halves);
#endif
    const size_t row_bytes = (size_t)in_dim * (bf16 ? sizeof(uint16_t) : sizeof(float));
    const char *inputs = bf16 ? (const char *)halves : (const char *)x;
#pragma omp for schedule(static) nowait
    for (int b = 0; b < blocks; b++) {
        const int j0 = b * COLUMN_BLOCK;
        const int width = out_dim - j0 < COLUMN_BLOCK ? out_dim - j0 : COLUMN_BLOCK;
        BlockAhead ahead = block_ahead(weight, row_bytes, b, out_dim, epilogue);
        for (int r0 = 0; r0 < rows; r0 += ROW_BLOCK) {
            const int n = rows - r0 < ROW_BLOCK ? rows - r0 : ROW_BLOCK;
            float sums[ROW_BLOCK][COLUMN_BLOCK];
            /* Tiles of 4 rows while 4 are left, then of 2, then 1: constant shapes keep the sums in registers. */
            for (int r = 0; r < n;) {
                const char *xr = inputs + (size_t)(r0 + r) * row_bytes;
                if (n - r >= 4) {
                    block_tiles(xr, 4, in_dim, weight, bf16, b, out_dim, epilogue, sums[r], &ahead);
                    r += 4;
                } else if (n - r >= 2) {
                    block_tiles(xr, 2, in_dim, weight, bf16, b, out_dim, epilogue, sums[r], &ahead);
                    r += 2;
                } else {
                    block_tiles(xr, 1, in_dim, weight, bf16, b, out_dim, epilogue, sums[r], &ahead);
                    r += 1;
                }
            }
            store_block(&sums[0][0], COLUMN_BLOCK, n, j0, width, bias, out + (size_t)r0 * out_stride, out_stride,
                        epilogue);
        }
    }
}

/* ---- Quantized projections (nanoseek/model/quantized.py has the formats and the packed layout) ----------

   Each input row is quantized per block of 32 inputs exactly as ggml's x86 quantize_row_q8_0 / q8_1 do it, so
   that a GGUF file decodes as llama.cpp decodes it (greedy tokens part only where fp32 sums in another order
   tip a near-tie): d = max|x| / 127, xq = x * (1 / d) rounded half to even, d stored as fp16, and for q8_1
   s = d * sum xq stored as fp16 (d the fp32 value before its rounding). Checked against llama-cpp-python 0.3.36
   on this CPU: its layer-0 projections of SmolLM2's Q4_1 file equal these to 1e-6; 127 / max|x| in place of
   1 / d, or the fp32 d and d sum xq in place of their fp16 roundings, each differ by up to 1e-3. A column block of the weight
   holds, per input block, 32 columns' quants as unsigned bytes (q8_0: q + 128; q4_1: q in 0..15), 4
   consecutive inputs of a column side by side, so that VPDPBUSD adds 4 products u8 x s8 into each column's
   int32 lane, and the block's sum per column becomes
       q8_0: d_w d_x (sum (q + 128) xq - 128 sum xq)      q4_1: d_w d_x sum q xq + m_w s_x
   added into fp32 sums (llama.cpp's vec_dot_q8_0_q8_0 and vec_dot_q4_1_q8_1). Every int32 sum is exact
   (|sum| < 2^24), so the VNNI and the portable loops give the same result up to the order of fp32 additions.
   A 64-byte load covers 16 columns, as in the fp32 kernel. */

#define Q8_BLOCK_BYTES (COLUMN_BLOCK * COLUMN_BLOCK + 2 * COLUMN_BLOCK)     /* quants, then 32 fp16 d */
#define Q4_BLOCK_BYTES (COLUMN_BLOCK * COLUMN_BLOCK / 2 + 4 * COLUMN_BLOCK) /* nibbles, 32 fp16 d, 32 fp16 m */

/* The input rows quantized: xq [rows, in_dim] int8, and per row and block of 32 its scale d_x (fp16-rounded),
   its sum of quants (q8_0 weights) and s_x = d sum xq (fp16-rounded; q4_1 weights). */
typedef struct {
    int8_t *xq;
    float *scale, *sum, *scaled_sum;
} QuantizedRows;

static QuantizedRows quantize_rows(const float *x, int rows, int in_dim, void *buffer) {
    const int blocks = in_dim / 32;
    QuantizedRows q = {(int8_t *)buffer, NULL, NULL, NULL};
    q.scale = (float *)((char *)buffer + ((size_t)rows * in_dim + 63) / 64 * 64);
    q.sum = q.scale + (size_t)rows * blocks;
    q.scaled_sum = q.sum + (size_t)rows * blocks;
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < blocks; b++) {
            const float *src = x + (size_t)r * in_dim + 32 * b;
            int8_t *dst = q.xq + (size_t)r * in_dim + 32 * b;
            float largest = 0.0f;
#pragma omp simd reduction(max : largest)
            for (int k = 0; k < 32; k++) largest = fabsf(src[k]) > largest ? fabsf(src[k]) : largest;
            const float d = largest / 127.0f, inverse = d > 0.0f ? 1.0f / d : 0.0f;
            int total = 0;
#pragma omp simd reduction(+ : total)
            for (int k = 0; k < 32; k++) {
                const int value = (int)rintf(src[k] * inverse); /* the default rounding: half to even */
                dst[k] = (int8_t)value;
                total += value;
            }
            const size_t at = (size_t)r * blocks + b;
            q.scale[at] = float_from_half(half_from_float(d));
            q.sum[at] = (float)total;
            q.scaled_sum[at] = float_from_half(half_from_float(d * (float)total));
        }
    return q;
}

/* One input block of a q4_1 column block as q8_0's quant layout (8 groups x 32 columns x 4 inputs, bytes 0..15):
   pair p's low nibbles are group 2p, its high nibbles group 2p + 1. */
static inline void unpack_q4_1(const uint8_t *nibbles, uint8_t *quants) {
    for (int p = 0; p < 4; p++)
#pragma omp simd
        for (int i = 0; i < 128; i++) {
            quants[256 * p + i] = nibbles[128 * p + i] & 15;
            quants[256 * p + 128 + i] = nibbles[128 * p + i] >> 4;
        }
}

#if defined(__AVX512VNNI__)
#define QUANT_ROW_BLOCK 4 /* rows per pass: 8 int32 and 8 fp32 sums, the weights and inputs stay in registers */

/* Add one group of 4 inputs (x4: each row's 4 int8 inputs, one int32) times 16 columns' weights `w` into
   the rows' int32 sums. */
static inline __attribute__((always_inline)) void dot_group(__m512i *dot, const int8_t *xq, int in_dim, int rows,
                                                            int at, __m512i w) {
    for (int r = 0; r < rows; r++) {
        int32_t four;
        memcpy(&four, xq + (size_t)r * in_dim + at, sizeof four);
        dot[r] = _mm512_dpbusd_epi32(dot[r], w, _mm512_set1_epi32(four));
    }
}

/* A quantized column block times up to QUANT_ROW_BLOCK rows, with VPDPBUSD. As the fp32 and bf16 micro-kernels:
   every weight vector is loaded (and, for q4_1, unpacked from its nibbles) once and used for all the rows, the
   sums stay in registers. Per input block each row's int32 sums are scaled into its fp32 sums. */
static inline __attribute__((always_inline)) void project_block_quantized_vnni(
    QuantizedRows q, int r0, int rows, int in_dim, const uint8_t *block, int q4, int j0, int width,
    const float *bias, float *out, int out_stride, int epilogue) {
    const int blocks = in_dim / 32, block_bytes = q4 ? Q4_BLOCK_BYTES : Q8_BLOCK_BYTES;
    const int quant_bytes = q4 ? COLUMN_BLOCK * COLUMN_BLOCK / 2 : COLUMN_BLOCK * COLUMN_BLOCK;
    const __m512i nibble = _mm512_set1_epi8(15);
    __m512 low[QUANT_ROW_BLOCK], high[QUANT_ROW_BLOCK];
    for (int r = 0; r < rows; r++) low[r] = high[r] = _mm512_setzero_ps();
    const int8_t *xq = q.xq + (size_t)r0 * in_dim;
    for (int b = 0; b < blocks; b++) {
        const uint8_t *packed = block + (size_t)b * block_bytes;
        __m512i dot_low[QUANT_ROW_BLOCK], dot_high[QUANT_ROW_BLOCK];
        for (int r = 0; r < rows; r++) dot_low[r] = dot_high[r] = _mm512_setzero_si512();
        if (q4) {
            for (int p = 0; p < 4; p++) {  /* pair p: groups 2p (low nibbles) and 2p + 1 (high nibbles) */
                const __m512i raw_low = _mm512_loadu_si512(packed + 128 * p);
                const __m512i raw_high = _mm512_loadu_si512(packed + 128 * p + 64);
                const int at = 32 * b + 8 * p;
                dot_group(dot_low, xq, in_dim, rows, at, _mm512_and_si512(raw_low, nibble));
                dot_group(dot_high, xq, in_dim, rows, at, _mm512_and_si512(raw_high, nibble));
                dot_group(dot_low, xq, in_dim, rows, at + 4, _mm512_and_si512(_mm512_srli_epi16(raw_low, 4), nibble));
                dot_group(dot_high, xq, in_dim, rows, at + 4, _mm512_and_si512(_mm512_srli_epi16(raw_high, 4), nibble));
            }
        } else {
            for (int g = 0; g < 8; g++) {
                dot_group(dot_low, xq, in_dim, rows, 32 * b + 4 * g, _mm512_loadu_si512(packed + 128 * g));
                dot_group(dot_high, xq, in_dim, rows, 32 * b + 4 * g, _mm512_loadu_si512(packed + 128 * g + 64));
            }
        }
        const __m512 d_low = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(packed + quant_bytes)));
        const __m512 d_high = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(packed + quant_bytes + 32)));
        if (q4) {
            const __m512 m_low = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(packed + quant_bytes + 64)));
            const __m512 m_high = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(packed + quant_bytes + 96)));
            for (int r = 0; r < rows; r++) {
                const size_t at = (size_t)(r0 + r) * blocks + b;
                const __m512 scale = _mm512_set1_ps(q.scale[at]), offset = _mm512_set1_ps(q.scaled_sum[at]);
                low[r] = _mm512_fmadd_ps(m_low, offset,
                                         _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot_low[r]), _mm512_mul_ps(d_low, scale), low[r]));
                high[r] = _mm512_fmadd_ps(m_high, offset,
                                          _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot_high[r]), _mm512_mul_ps(d_high, scale), high[r]));
            }
        } else {
            for (int r = 0; r < rows; r++) {
                const size_t at = (size_t)(r0 + r) * blocks + b;
                const __m512 scale = _mm512_set1_ps(q.scale[at]), offset = _mm512_set1_ps(128.0f * q.sum[at]);
                const __m512 sums_low = _mm512_sub_ps(_mm512_cvtepi32_ps(dot_low[r]), offset);
                const __m512 sums_high = _mm512_sub_ps(_mm512_cvtepi32_ps(dot_high[r]), offset);
                low[r] = _mm512_fmadd_ps(sums_low, _mm512_mul_ps(d_low, scale), low[r]);
                high[r] = _mm512_fmadd_ps(sums_high, _mm512_mul_ps(d_high, scale), high[r]);
            }
        }
    }
    float sums[QUANT_ROW_BLOCK][COLUMN_BLOCK];
    for (int r = 0; r < rows; r++) {
        _mm512_storeu_ps(sums[r], low[r]);
        _mm512_storeu_ps(sums[r] + 16, high[r]);
    }
    store_block(&sums[0][0], COLUMN_BLOCK, rows, j0, width, bias, out + (size_t)r0 * out_stride, out_stride, epilogue);
}
#endif

/* The same with plain loops (CPUs without AVX512-VNNI, and the tests of this path): the compiler vectorizes
   what it can. */
static void project_block_quantized_portable(QuantizedRows q, int r0, int rows, int in_dim, const uint8_t *block,
                                             int q4, int j0, int width, const float *bias, float *out,
                                             int out_stride, int epilogue) {
    const int blocks = in_dim / 32, block_bytes = q4 ? Q4_BLOCK_BYTES : Q8_BLOCK_BYTES;
    const int quant_bytes = q4 ? COLUMN_BLOCK * COLUMN_BLOCK / 2 : COLUMN_BLOCK * COLUMN_BLOCK;
    float sums[ROW_BLOCK][COLUMN_BLOCK] = {{0}};
    uint8_t unpacked[COLUMN_BLOCK * COLUMN_BLOCK];
    for (int b = 0; b < blocks; b++) {
        const uint8_t *packed = block + (size_t)b * block_bytes, *quants = packed;
        float d[COLUMN_BLOCK], m[COLUMN_BLOCK];
        for (int c = 0; c < COLUMN_BLOCK; c++) {
            uint16_t half;
            memcpy(&half, packed + quant_bytes + 2 * c, sizeof half);
            d[c] = float_from_half(half);
            memcpy(&half, packed + quant_bytes + 64 + 2 * c, sizeof half);
            m[c] = q4 ? float_from_half(half) : 0.0f;
        }
        if (q4) {
            unpack_q4_1(packed, unpacked);
            quants = unpacked;
        }
        for (int r = 0; r < rows; r++) {
            const size_t at = (size_t)(r0 + r) * blocks + b;
            const int8_t *xq = q.xq + (size_t)(r0 + r) * in_dim + 32 * b;
            int32_t dot[COLUMN_BLOCK] = {0};
            for (int g = 0; g < 8; g++)
                for (int c = 0; c < COLUMN_BLOCK; c++)
                    for (int i = 0; i < 4; i++) dot[c] += (int32_t)quants[128 * g + 4 * c + i] * xq[4 * g + i];
            const float scale = q.scale[at], sum = q.sum[at], scaled_sum = q.scaled_sum[at];
            for (int c = 0; c < COLUMN_BLOCK; c++)
                sums[r][c] += q4 ? (float)dot[c] * (d[c] * scale) + m[c] * scaled_sum
                                 : ((float)dot[c] - 128.0f * sum) * (d[c] * scale);
        }
    }
    store_block(&sums[0][0], COLUMN_BLOCK, rows, j0, width, bias, out + (size_t)r0 * out_stride, out_stride, epilogue);
}

/* project_fp32 for quantized weights: every thread quantizes all input rows into its own buffer (cheaper than a
   barrier) and takes its share of the column blocks. in_dim is a multiple of 32 (quantized.py checks). */
static void project_quantized(const DecodeModel *m, const float *x, int rows, int in_dim, const uint8_t *packed,
                              int type, const float *bias, int out_dim, float *out, int out_stride, int epilogue,
                              void *buffer) {
    const int q4 = type == WEIGHT_Q4_1, blocks = (out_dim + COLUMN_BLOCK - 1) / COLUMN_BLOCK;
    const size_t column_block_bytes = (size_t)(in_dim / 32) * (q4 ? Q4_BLOCK_BYTES : Q8_BLOCK_BYTES);
    const QuantizedRows q = quantize_rows(x, rows, in_dim, buffer);
    (void)m;
#pragma omp for schedule(static) nowait
    for (int b = 0; b < blocks; b++) {
        const uint8_t *block = packed + (size_t)b * column_block_bytes;
        const int j0 = b * COLUMN_BLOCK;
        const int width = out_dim - j0 < COLUMN_BLOCK ? out_dim - j0 : COLUMN_BLOCK;
#if defined(__AVX512VNNI__)
        if (m->vnni) {
            for (int r0 = 0; r0 < rows; r0 += QUANT_ROW_BLOCK) {
                const int n = rows - r0 < QUANT_ROW_BLOCK ? rows - r0 : QUANT_ROW_BLOCK;
                /* Constant row counts let the compiler keep every sum in a register. */
                switch (n) {
                    case 4: project_block_quantized_vnni(q, r0, 4, in_dim, block, q4, j0, width, bias, out, out_stride, epilogue); break;
                    case 1: project_block_quantized_vnni(q, r0, 1, in_dim, block, q4, j0, width, bias, out, out_stride, epilogue); break;
                    case 2: project_block_quantized_vnni(q, r0, 2, in_dim, block, q4, j0, width, bias, out, out_stride, epilogue); break;
                    default: project_block_quantized_vnni(q, r0, 3, in_dim, block, q4, j0, width, bias, out, out_stride, epilogue);
                }
            }
            continue;
        }
#endif
        for (int r0 = 0; r0 < rows; r0 += ROW_BLOCK) {
            const int n = rows - r0 < ROW_BLOCK ? rows - r0 : ROW_BLOCK;
            project_block_quantized_portable(q, r0, n, in_dim, block, q4, j0, width, bias, out, out_stride, epilogue);
        }
    }
}

/* Row `token` of a quantized [vocab, hidden] table (its output column `token`) as fp32. */
static void quantized_column(const uint8_t *packed, int type, int in_dim, int64_t token, float *dst) {
    const int q4 = type == WEIGHT_Q4_1, column = (int)(token % COLUMN_BLOCK);
    const int block_bytes = q4 ? Q4_BLOCK_BYTES : Q8_BLOCK_BYTES;
    const int quant_bytes = q4 ? COLUMN_BLOCK * COLUMN_BLOCK / 2 : COLUMN_BLOCK * COLUMN_BLOCK;
    const uint8_t *base = packed + (size_t)(token / COLUMN_BLOCK) * (in_dim / 32) * block_bytes;
    for (int b = 0; b < in_dim / 32; b++) {
        const uint8_t *block = base + (size_t)b * block_bytes;
        uint16_t half;
        memcpy(&half, block + quant_bytes + 2 * column, sizeof half);
        const float d = float_from_half(half);
        memcpy(&half, block + quant_bytes + 64 + 2 * column, sizeof half);
        const float mn = q4 ? float_from_half(half) : 0.0f;
        for (int k = 0; k < 32; k++) {
            const int group = k / 4, i = k % 4;
            const int value = q4 ? block[128 * (group / 2) + 4 * column + i] >> (4 * (group % 2)) & 15
                                 : block[128 * group + 4 * column + i] - 128;
            dst[32 * b + k] = (float)value * d + mn;
        }
    }
}

/* A projection of weights stored as `type`; `w` gives the calling thread's input buffer. */
static void project(const DecodeModel *m, const Workspace *w, const float *x, int rows, int in_dim,
                    const void *packed, int type, const float *bias, int out_dim, float *out, int out_stride,
                    int epilogue) {
    uint32_t *buffer = w->input_pairs + (size_t)omp_get_thread_num() * w->input_pairs_per_thread;
    if (type == WEIGHT_FP32_ROWS || type == WEIGHT_BF16_ROWS) {
        project_rows(x, rows, in_dim, packed, type, bias, out_dim, out, out_stride, epilogue, (uint16_t *)buffer);
        return;
    }
    if (type == WEIGHT_Q8_0 || type == WEIGHT_Q4_1) {
        project_quantized(m, x, rows, in_dim, (const uint8_t *)packed, type, bias, out_dim, out, out_stride,
                          epilogue, buffer);
        return;
    }
#if defined(__AVX512BF16__)
    if (type == WEIGHT_BF16) {
#if defined(HAVE_AMX)
        if (m->amx) {
            project_amx(x, rows, in_dim, (const uint16_t *)packed, bias, out_dim, out, out_stride, epilogue,
                        (uint16_t *)buffer);
            return;
        }
#endif
        project_bf16(x, rows, in_dim, (const uint16_t *)packed, bias, out_dim, out, out_stride, epilogue, buffer);
        return;
    }
#endif
    project_fp32(x, rows, in_dim, (const float *)packed, bias, out_dim, out, out_stride, epilogue);
}

/* Rotate the q and k heads of every row at its position, and store the new k and v in the row's slot. */
static void rotate_and_store(const DecodeModel *m, int layer, int rows, const int64_t *positions,
                             const int64_t *slots, float *qkv) {
    const int heads = m->num_heads, kv_heads = m->num_kv_heads, dim = m->head_dim, half = dim / 2;
    const int row_width = (heads + 2 * kv_heads) * dim;
    const int rotated = heads + kv_heads;
#pragma omp for schedule(static) nowait
    for (int task = 0; task < rows * rotated; task++) {
        const int r = task / rotated, head = task % rotated;
        float *vec = qkv + (size_t)r * row_width + (size_t)head * dim;
        const float *cos_row = m->cos_table + (size_t)positions[r] * dim;
        const float *sin_row = m->sin_table + (size_t)positions[r] * dim;
        float rotated_vec[dim];
        for (int k = 0; k < half; k++) {  /* rotate_half: the two halves swap (sin carries the sign) */
            rotated_vec[k] = vec[k] * cos_row[k] + vec[k + half] * sin_row[k];
            rotated_vec[k + half] = vec[k + half] * cos_row[k + half] + vec[k] * sin_row[k + half];
        }
        memcpy(vec, rotated_vec, sizeof rotated_vec);
        if (head >= heads) {
            const int kv = head - heads;
            const size_t at = (((size_t)slots[r] * kv_heads + kv) * m->slot_capacity + positions[r]) * dim;
            const float *value = qkv + (size_t)r * row_width + (size_t)(rotated + kv) * dim;
            cache_store_row(m->keys[layer], at, vec, dim, m->kv_type);
            cache_store_row(m->values[layer], at, value, dim, m->kv_type);
        }
    }
}

static inline float sum_lanes(f16 v) {
    /* Four shuffle-and-add steps instead of fifteen dependent scalar additions. */
    v += __builtin_shuffle(v, (__attribute__((vector_size(64))) int){8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7});
    v += __builtin_shuffle(v, (__attribute__((vector_size(64))) int){4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11});
    v += __builtin_shuffle(v, (__attribute__((vector_size(64))) int){2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13});
    v += __builtin_shuffle(v, (__attribute__((vector_size(64))) int){1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14});
    return v[0];
}

/* Cache elements i..i+15 as one vector: fp32 read in place, bf16 widened (a bf16 is the top half of an fp32),
   fp16 converted (VCVTPH2PS where the CPU has AVX-512). */
static inline f16 cache_load16(const void *base, size_t i, int kv_type) {
    if (kv_type == KV_FP32) return *(const f16 *)((const float *)base + i);
#if defined(__AVX512F__)
    const __m256i halves = _mm256_loadu_si256((const __m256i *)((const uint16_t *)base + i));
    if (kv_type == KV_BF16) return (f16)_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(halves), 16));
    return (f16)_mm512_cvtph_ps(halves);
#else
    f16 widened;
    for (int k = 0; k < 16; k++) widened[k] = cache_load(base, i + k, kv_type);
    return widened;
#endif
}

/* scores[t] <- e^(scores[t] - best), in one vectorized pass; returns their sum. */
static inline float softmax_weights(float *scores, int length, float best) {
    float total = 0.0f;
#pragma omp simd reduction(+ : total)
    for (int t = 0; t < length; t++) {
        scores[t] = exp_approx(scores[t] - best);
        total += scores[t];
    }
    return total;
}

#define MAX_VECTOR_HEAD 16 /* head_dim up to 256 in registers; larger or odd head sizes take the scalar loop */

/* Softmax attention of one query head over `length` cached keys and values, head_dim a multiple of 16:
   the query and the output stay in vector registers, one pass computes the scores, a second exponentiates
   them and sums the values. */
static inline __attribute__((always_inline)) void attend_head_vectors(const float *q, const void *keys,
                                                                       const void *values, size_t base, int length,
                                                                       int dim, int kv_type, float scale,
                                                                       float *scores, float *dst) {
    const int vectors = dim / 16;
    f16 query[MAX_VECTOR_HEAD], out[MAX_VECTOR_HEAD];
    for (int i = 0; i < vectors; i++) {
        query[i] = *(const f16 *)(q + 16 * i) * scale;
        out[i] = (f16){0};
    }
    float best = -INFINITY;
    for (int t = 0; t < length; t++) {
        const size_t key = base + (size_t)t * dim;
        f16 products = query[0] * cache_load16(keys, key, kv_type);
        for (int i = 1; i < vectors; i++) products += query[i] * cache_load16(keys, key + 16 * i, kv_type);
        scores[t] = sum_lanes(products);
        best = scores[t] > best ? scores[t] : best;
    }
    const float total = softmax_weights(scores, length, best);
    for (int t = 0; t < length; t++) {
        const size_t value = base + (size_t)t * dim;
        for (int i = 0; i < vectors; i++) out[i] += scores[t] * cache_load16(values, value + 16 * i, kv_type);
    }
    for (int i = 0; i < vectors; i++) *(f16 *)(dst + 16 * i) = out[i] / total;
}

/* attend_head_vectors with the cache's type as a constant, so that no load branches on it. */
static void attend_head_typed(const float *q, const void *keys, const void *values, size_t base, int length, int dim,
                              int kv_type, float scale, float *scores, float *dst) {
    switch (kv_type) {
        case KV_F16: attend_head_vectors(q, keys, values, base, length, dim, KV_F16, scale, scores, dst); break;
        case KV_BF16: attend_head_vectors(q, keys, values, base, length, dim, KV_BF16, scale, scores, dst); break;
        default: attend_head_vectors(q, keys, values, base, length, dim, KV_FP32, scale, scores, dst);
    }
}

#define HEADS_PER_PASS 4 /* q heads of one kv head attended in one pass over its keys and values */

#if defined(__AVX512BF16__)
/* attend_head_vectors for a bf16 cache and head_dim a multiple of 32, for `heads` (a compile-time 1..4) q
   heads that share one kv head (GQA): each key and value is loaded once for all of them, which matters
   because these loops are bound by the bytes they read. No shuffle in the loops either: 64 bytes of keys
   hold 32 bf16 values, and one shift and one mask make the even-numbered and the odd-numbered ones fp32
   vectors (a bf16 is the top half of an fp32). The queries are split the same way once, so a dot product is
   even . even + odd . odd; the outputs are kept split and interleaved back at the end. `scores` holds one
   row of slot_capacity floats per head. */
static inline __attribute__((always_inline)) void attend_heads_bf16(
    const float *q, int heads, const uint16_t *keys, const uint16_t *values, size_t base, int length, int dim,
    float scale, float *scores, int scores_stride, float *dst) {
    const int chunks = dim / 32;
    const __m512i odd_mask = _mm512_set1_epi32((int)0xffff0000u);
    __m512 q_even[HEADS_PER_PASS][MAX_VECTOR_HEAD / 2], q_odd[HEADS_PER_PASS][MAX_VECTOR_HEAD / 2];
    __m512 out_even[HEADS_PER_PASS][MAX_VECTOR_HEAD / 2], out_odd[HEADS_PER_PASS][MAX_VECTOR_HEAD / 2];
    float best[HEADS_PER_PASS], total[HEADS_PER_PASS];
    for (int h = 0; h < heads; h++) {
        for (int c = 0; c < chunks; c++) {
            float even[16], odd[16];
            for (int i = 0; i < 16; i++) {
                even[i] = q[h * dim + 32 * c + 2 * i] * scale;
                odd[i] = q[h * dim + 32 * c + 2 * i + 1] * scale;
            }
            q_even[h][c] = _mm512_loadu_ps(even);
            q_odd[h][c] = _mm512_loadu_ps(odd);
            out_even[h][c] = out_odd[h][c] = _mm512_setzero_ps();
        }
        best[h] = -INFINITY;
    }
    for (int t = 0; t < length; t++) {
        const uint16_t *key = keys + base + (size_t)t * dim;
        __m512 products[HEADS_PER_PASS];
        for (int h = 0; h < heads; h++) products[h] = _mm512_setzero_ps();
        for (int c = 0; c < chunks; c++) {
            const __m512i raw = _mm512_loadu_si512(key + 32 * c);
            const __m512 even = _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16));
            const __m512 odd = _mm512_castsi512_ps(_mm512_and_si512(raw, odd_mask));
            for (int h = 0; h < heads; h++)
                products[h] = _mm512_fmadd_ps(q_odd[h][c], odd, _mm512_fmadd_ps(q_even[h][c], even, products[h]));
        }
        for (int h = 0; h < heads; h++) {
            const float score = _mm512_reduce_add_ps(products[h]);
            scores[h * scores_stride + t] = score;
            best[h] = score > best[h] ? score : best[h];
        }
    }
    for (int h = 0; h < heads; h++) total[h] = softmax_weights(scores + h * scores_stride, length, best[h]);
    for (int t = 0; t < length; t++) {
        const uint16_t *value = values + base + (size_t)t * dim;
        for (int c = 0; c < chunks; c++) {
            const __m512i raw = _mm512_loadu_si512(value + 32 * c);
            const __m512 even = _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16));
            const __m512 odd = _mm512_castsi512_ps(_mm512_and_si512(raw, odd_mask));
            for (int h = 0; h < heads; h++) {
                const __m512 weight = _mm512_set1_ps(scores[h * scores_stride + t]);
                out_even[h][c] = _mm512_fmadd_ps(weight, even, out_even[h][c]);
                out_odd[h][c] = _mm512_fmadd_ps(weight, odd, out_odd[h][c]);
            }
        }
    }
    for (int h = 0; h < heads; h++)
        for (int c = 0; c < chunks; c++) {
            float even[16], odd[16];
            _mm512_storeu_ps(even, out_even[h][c]);
            _mm512_storeu_ps(odd, out_odd[h][c]);
            for (int i = 0; i < 16; i++) {
                dst[h * dim + 32 * c + 2 * i] = even[i] / total[h];
                dst[h * dim + 32 * c + 2 * i + 1] = odd[i] / total[h];
            }
        }
}

/* attend_heads_bf16 with its head count as a constant, so that its per-head arrays live in registers. */
static void attend_group_bf16(const float *q, int heads, const uint16_t *keys, const uint16_t *values, size_t base,
                              int length, int dim, float scale, float *scores, int scores_stride, float *dst) {
    switch (heads) {
        case 1: attend_heads_bf16(q, 1, keys, values, base, length, dim, scale, scores, scores_stride, dst); break;
        case 2: attend_heads_bf16(q, 2, keys, values, base, length, dim, scale, scores, scores_stride, dst); break;
        case 3: attend_heads_bf16(q, 3, keys, values, base, length, dim, scale, scores, scores_stride, dst); break;
        default: attend_heads_bf16(q, 4, keys, values, base, length, dim, scale, scores, scores_stride, dst);
    }
}
#endif

/* The same for any even head_dim, one float at a time. */
static void attend_head_scalar(const float *q, const void *keys, const void *values, size_t base, int length,
                               int dim, int kv_type, float scale, float *scores, float *dst) {
    float best = -INFINITY;
    for (int t = 0; t < length; t++) {
        float dot = 0.0f;
        for (int k = 0; k < dim; k++) dot += q[k] * cache_load(keys, base + (size_t)t * dim + k, kv_type);
        scores[t] = dot * scale;
        best = scores[t] > best ? scores[t] : best;
    }
    const float total = softmax_weights(scores, length, best);
    for (int k = 0; k < dim; k++) dst[k] = 0.0f;
    for (int t = 0; t < length; t++)
        for (int k = 0; k < dim; k++) dst[k] += scores[t] * cache_load(values, base + (size_t)t * dim + k, kv_type);
    for (int k = 0; k < dim; k++) dst[k] /= total;
}

/* Softmax attention of each row's q heads over its slot's keys 0..position (one query per sequence). */
static void attend(const DecodeModel *m, int layer, int rows, const int64_t *positions, const int64_t *slots,
                   const float *qkv, float *out, float *scores) {
    const int heads = m->num_heads, kv_heads = m->num_kv_heads, dim = m->head_dim;
    const int row_width = (heads + 2 * kv_heads) * dim, group = heads / kv_heads;
    const int vectorized = dim % 16 == 0 && dim / 16 <= MAX_VECTOR_HEAD;
    const float scale = 1.0f / sqrtf((float)dim);
    /* Per thread: HEADS_PER_PASS rows of slot_capacity scores (native.py sizes the buffer). */
    float *my_scores = scores + (size_t)omp_get_thread_num() * HEADS_PER_PASS * m->slot_capacity;
#if defined(__AVX512BF16__)
    if (m->kv_type == KV_BF16 && vectorized && dim % 32 == 0) {
        /* One task per row, kv head and pass of up to HEADS_PER_PASS of its q heads. */
        const int passes = (group + HEADS_PER_PASS - 1) / HEADS_PER_PASS;
#pragma omp for schedule(dynamic, 1) nowait
        for (int task = 0; task < rows * kv_heads * passes; task++) {
            const int r = task / (kv_heads * passes), kv = task / passes % kv_heads, pass = task % passes;
            const int head = kv * group + pass * HEADS_PER_PASS;
            const int count = group - pass * HEADS_PER_PASS < HEADS_PER_PASS ? group - pass * HEADS_PER_PASS
                                                                              : HEADS_PER_PASS;
            const size_t base = ((size_t)slots[r] * kv_heads + kv) * m->slot_capacity * dim;
            attend_group_bf16(qkv + (size_t)r * row_width + (size_t)head * dim, count, m->keys[layer],
                              m->values[layer], base, (int)positions[r] + 1, dim, scale, my_scores, m->slot_capacity,
                              out + (size_t)r * heads * dim + (size_t)head * dim);
        }
        return;
    }
#endif
#pragma omp for schedule(dynamic, 1) nowait
    for (int task = 0; task < rows * heads; task++) {
        const int r = task / heads, head = task % heads, kv = head / group;
        const size_t base = ((size_t)slots[r] * kv_heads + kv) * m->slot_capacity * dim;
        const float *q = qkv + (size_t)r * row_width + (size_t)head * dim;
        float *dst = out + (size_t)r * heads * dim + (size_t)head * dim;
        (vectorized ? attend_head_typed : attend_head_scalar)(
            q, m->keys[layer], m->values[layer], base, (int)positions[r] + 1, dim, m->kv_type, scale, my_scores, dst);
    }
}

/* The residual stream's first value: each row's token embedding. */
static void embed_rows(const DecodeModel *m, const Workspace *w, int rows, const int64_t *tokens) {
    const int hidden = m->hidden;
#pragma omp for schedule(static) nowait
    for (int r = 0; r < rows; r++) {
        float *dst = w->x + (size_t)r * hidden;
        if (m->embed_type == WEIGHT_FP32_ROWS) { /* the model's own [vocab, hidden] table: token t is row t */
            memcpy(dst, (const float *)m->embed + (size_t)tokens[r] * hidden, (size_t)hidden * sizeof *dst);
            continue;
        }
        if (m->embed_type == WEIGHT_BF16_ROWS) {
            const uint16_t *row = (const uint16_t *)m->embed + (size_t)tokens[r] * hidden;
            for (int k = 0; k < hidden; k++) dst[k] = float_from_bf16(row[k]);
            continue;
        }
        /* transformer.py's column-major table, read in place as [hidden, vocab]: token t's vector is column t. */
        if (m->embed_type == WEIGHT_BF16) {
            const uint16_t *embed = (const uint16_t *)m->embed;
            for (int k = 0; k < hidden; k++) dst[k] = float_from_bf16(embed[(size_t)k * m->vocab + tokens[r]]);
            continue;
        }
        if (m->embed_type != WEIGHT_FP32) {
            quantized_column((const uint8_t *)m->embed, m->embed_type, hidden, tokens[r], dst);
            continue;
        }
        const float *embed = (const float *)m->embed;
        for (int k = 0; k < hidden; k++) dst[k] = embed[(size_t)k * m->vocab + tokens[r]];
    }
}

/* Logits [rows, vocab] for one new token per row: tokens[r] at positions[r], cached in slot slots[r]. */
void nanoseek_decode_step(const DecodeModel *m, const Workspace *w, int rows, const int64_t *tokens,
                          const int64_t *positions, const int64_t *slots, float *logits, int threads) {
    const int hidden = m->hidden, qkv_width = (m->num_heads + 2 * m->num_kv_heads) * m->head_dim;
    const int attention_width = m->num_heads * m->head_dim;
    PhaseBarrier barrier = {0, 0};
#pragma omp parallel num_threads(threads)
    {
#if defined(HAVE_AMX)
        if (m->amx) _tile_loadconfig(&TILE_CONFIG);
#endif
        embed_rows(m, w, rows, tokens);
        phase_end(&barrier);
        for (int layer = 0; layer < m->num_layers; layer++) {
            const int32_t *types = m->weight_types + 4 * layer;
            rms_norm_rows(w->x, m->input_norm[layer], w->normed, rows, hidden, m->eps);
            phase_end(&barrier);
            project(m, w, w->normed, rows, hidden, m->qkv_weight[layer], types[0], m->qkv_bias[layer], qkv_width, w->qkv,
                    qkv_width, WRITE);
            phase_end(&barrier);
            rotate_and_store(m, layer, rows, positions, slots, w->qkv);
            phase_end(&barrier);
            attend(m, layer, rows, positions, slots, w->qkv, w->attention, w->scores);
            phase_end(&barrier);
            project(m, w, w->attention, rows, attention_width, m->o_weight[layer], types[1], m->o_bias[layer], hidden, w->x,
                    hidden, ACCUMULATE);
            phase_end(&barrier);
            rms_norm_rows(w->x, m->post_norm[layer], w->normed, rows, hidden, m->eps);
            phase_end(&barrier);
            project(m, w, w->normed, rows, hidden, m->gate_up_weight[layer], types[2], m->gate_up_bias[layer],
                    2 * m->intermediate, w->activation, m->intermediate, SWIGLU);
            phase_end(&barrier);
            project(m, w, w->activation, rows, m->intermediate, m->down_weight[layer], types[3], m->down_bias[layer], hidden,
                    w->x, hidden, ACCUMULATE);
            phase_end(&barrier);
        }
        rms_norm_rows(w->x, m->final_norm, w->normed, rows, hidden, m->eps);
        phase_end(&barrier);
        project(m, w, w->normed, rows, hidden, m->lm_head, m->weight_types[4 * m->num_layers], NULL, m->vocab, logits, m->vocab, WRITE);
#if defined(HAVE_AMX)
        if (m->amx) _tile_release();
#endif
    }
}

/* ---- DeepSeek-V2/V3: multi-head latent attention and DeepSeekMoE (`nanoseek_latent_decode_step`) -------------

   The same one-call step for nanoseek/model/deepseek.py's layers, over the engine's LatentKVCache (one tensor
   per layer, [slot, 1, position, L + R]: each token's RMS-normed kv latent c (L = kv_lora_rank) and its rotated
   rotary key k_pe (R = qk_rope_head_dim), nanoseek/engine/latent_cache.py). Decoding never expands keys or
   values: as DeepSeek-V2's paper describes, the key up-projection W_UK is absorbed into the query and the value
   up-projection W_UV applied after attention, so every head attends over the shared latents (multi-query
   attention with keys of width L + R whose first L columns are the values):

       q_latent_h = [W_UK_h^T q_nope_h, rope(q_pe_h)]      mixed_h = softmax(q_latent_h . latents * scale) latents[:, :L]
       out_h = W_UV_h mixed_h                               x += o_proj([out_1 .. out_H])

   Per layer: the "A" projection of the normed input (q_proj, or q_a_proj, then kv_a_proj_with_mqa: one packed
   weight); the latent's RMSNorm, k_pe's rotation and the cache store (with a q LoRA, q_a's RMSNorm, then
   q_b_proj); one task per row and head for the absorbed W_UK_h (packed [L, nope]), the attention and W_UV_h
   (packed [v, L]); then o_proj into the residual stream. A decode step of a small model is mostly phases and
   the barriers between them (each one a wait for the slowest thread, and on a loaded machine for a descheduled
   one), so each phase does as much as its inputs allow, and every thread RMS-norms all the rows itself where a
   projection reads them, and in a decode step (every row in a slot of its own) each attention task computes its
   row's new latent itself: a layer costs 5 barriers, dense or MoE (6 for a prompt's chunk, 7 with a q LoRA; the
   Llama step's layer 8).
   DeepSeek lays the rotary dimensions out as interleaved pairs: with `interleaved` they are read as the even
   then the odd ones (deepseek.py `_rotary_layout`), so the cache holds k_pe in the half-split layout that the
   PyTorch model stores too.

   The feed-forward of the first dense layers is the Llama step's SwiGLU MLP. A DeepSeekMoE layer: every thread
   norms every row, computes its router logits (fp32, as the model routes in fp32) and routes it by deepseek.py's
   rule -- softmax (V2) or sigmoid (V3) scores, V3's aux-loss-free bias added for the choice only, the best
   topk_group groups, the top-k experts among them, V3's renormalised weights, routed scaling -- and sorts the
   (row, expert) pairs by expert, gathering each expert's rows into consecutive rows; each expert then runs once
   over all the rows routed to it, gate/up and down, beside the shared experts, and each row adds its experts'
   outputs, weighted, to the residual stream, in its own fixed order: a row's result does not depend on which
   other rows share its batch. Projections are fp32, or bf16 on
   CPUs with AVX512-BF16 (on the tile unit where AMX applies), as `project` dispatches them; a layer's feed-forward
   weights (its dense MLP, or its shared and routed experts) may instead be quantized blocks (quantized.py's
   feed-forward quantization), each layer's gate/up and down in their `weight_types`. */

typedef struct {
    DecodeModel base; /* hidden, num_heads, vocab, num_layers, slot_capacity, kv_type, amx, vnni, embedding, output
                         head, final norm, rotary tables [position, R], norms; the dense layers' gate_up/down
                         (NULL in MoE layers); keys: the latent cache per layer; weight_types: each layer's
                         feed-forward gate/up at [4 * layer + 2] and down at [4 * layer + 3] (the dense MLP's or the
                         shared and routed experts'), the output head's at [4 * num_layers] */
    int32_t q_lora_rank, kv_lora_rank, nope_dim, rope_dim, v_dim, interleaved, projection_type;
    int32_t num_experts, top_k, num_groups, topk_group, sigmoid, normalise, expert_intermediate, shared_intermediate;
    float latent_eps, scale, routed_scaling;
    const void *const *a_weight; /* [q (or q_a) rows, kv_a rows] packed */
    const float *const *a_bias;
    const float *const *q_a_norm;
    const void *const *q_b_weight;
    const float *const *kv_a_norm;
    const void *const *key_up;   /* H packed [L, nope] weights, one after the other */
    const void *const *value_up; /* H packed [v, L] weights */
    const void *const *o_weight;
    const float *const *o_bias;
    const float *const *router;      /* fp32 packed [E, hidden]; NULL in dense layers */
    const float *const *router_bias; /* V3's e_score_correction_bias, or NULL */
    const void *const *expert_gate_up, *const *expert_down; /* E packed weights each, one after the other */
    const void *const *shared_gate_up, *const *shared_down; /* NULL without shared experts */
} LatentModel;

/* Scratch for the latent step, beside the Llama step's (base.x, normed, attention = the heads' outputs, activation
   = a dense MLP's, scores, input_pairs). */
typedef struct {
    Workspace base;
    float *a_out, *q, *q_a_normed, *router_logits, *expert_in, *expert_act, *expert_out, *shared_act;
} LatentWorkspace;

/* Bytes of a packed [out_dim, in_dim] weight of `type` (fp32, bf16, or quantized blocks, in_dim then a multiple of
   32): whole blocks of 32 outputs. */
static inline size_t packed_bytes(int out_dim, int in_dim, int type) {
    const size_t column_blocks = (size_t)(out_dim + COLUMN_BLOCK - 1) / COLUMN_BLOCK;
    if (type == WEIGHT_Q8_0 || type == WEIGHT_Q4_1)
        return column_blocks * (size_t)(in_dim / 32) * (type == WEIGHT_Q8_0 ? Q8_BLOCK_BYTES : Q4_BLOCK_BYTES);
    return column_blocks * COLUMN_BLOCK * in_dim * (type == WEIGHT_BF16 ? 2 : 4);
}

/* A rotary vector of `dim` values rotated at a position (tables as rotate_and_store's) into dst, read as the
   even then the odd values when `interleaved`. */
static inline void rotate_rope(const float *src, float *dst, int dim, int interleaved, const float *cos_row,
                               const float *sin_row) {
    const int half = dim / 2;
    float split[dim];
    for (int k = 0; k < half; k++) {
        split[k] = interleaved ? src[2 * k] : src[k];
        split[k + half] = interleaved ? src[2 * k + 1] : src[k + half];
    }
    for (int k = 0; k < half; k++) {
        dst[k] = split[k] * cos_row[k] + split[k + half] * sin_row[k];
        dst[k + half] = split[k + half] * cos_row[k + half] + split[k] * sin_row[k + half];
    }
}

static inline void rms_norm_vector(const float *x, const float *weight, float *out, int dim, float eps) {
    float squares = 0.0f;
#pragma omp simd reduction(+ : squares)
    for (int k = 0; k < dim; k++) squares += x[k] * x[k];
    const float scale = 1.0f / sqrtf(squares / dim + eps);
#pragma omp simd
    for (int k = 0; k < dim; k++) out[k] = x[k] * scale * weight[k];
}

/* Row r's latent as the cache holds it (width L + R): the kv latent's RMSNorm and k_pe's rotation at its position. */
static void latent_of_row(const LatentModel *m, const LatentWorkspace *w, int layer, int r, int64_t position,
                          float *latent) {
    const int L = m->kv_lora_rank, R = m->rope_dim;
    const int q_width = m->q_lora_rank ? m->q_lora_rank : m->base.num_heads * (m->nope_dim + R);
    const float *a = w->a_out + (size_t)r * (q_width + L + R);
    rms_norm_vector(a + q_width, m->kv_a_norm[layer], latent, L, m->latent_eps);
    rotate_rope(a + q_width + L, latent + L, R, m->interleaved, m->base.cos_table + (size_t)position * R,
                m->base.sin_table + (size_t)position * R);
}

/* Per row: its latent stored at its position in its slot; with a q LoRA, q_a's RMSNorm into q_a_normed. */
static void store_latents(const LatentModel *m, const LatentWorkspace *w, int layer, int rows,
                          const int64_t *positions, const int64_t *slots) {
    const int L = m->kv_lora_rank, R = m->rope_dim, width = L + R;
    const int q_width = m->q_lora_rank ? m->q_lora_rank : m->base.num_heads * (m->nope_dim + R);
#pragma omp for schedule(static) nowait
    for (int r = 0; r < rows; r++) {
        float latent[width];
        latent_of_row(m, w, layer, r, positions[r], latent);
        cache_store_row(m->base.keys[layer], ((size_t)slots[r] * m->base.slot_capacity + positions[r]) * width, latent,
                        width, m->base.kv_type);
        if (m->q_lora_rank)
            rms_norm_vector(w->a_out + (size_t)r * (q_width + width), m->q_a_norm[layer],
                            w->q_a_normed + (size_t)r * q_width, q_width, m->latent_eps);
    }
}

/* Softmax attention of one latent query (width L + R) over a slot's `length` latents; the weighted sum of their
   first L values into dst. With `current` (one latent in the cache's format), the last position is read from it
   instead of the cache. */
static void attend_latent_head(const float *q, const void *latents, size_t base, const void *current, int length,
                               int width, int value_dim, int kv_type, float scale, float *scores, float *dst) {
    const int cached = current ? length - 1 : length;
    float best = -INFINITY;
    for (int t = 0; t < length; t++) {
        const void *source = t < cached ? latents : current;
        const size_t at = t < cached ? base + (size_t)t * width : 0;
        float dot = 0.0f;
        if (width % 16 == 0) {
            f16 products = (f16){0};
            for (int k = 0; k < width; k += 16) products += *(const f16 *)(q + k) * cache_load16(source, at + k, kv_type);
            dot = sum_lanes(products);
        } else {
            for (int k = 0; k < width; k++) dot += q[k] * cache_load(source, at + k, kv_type);
        }
        scores[t] = dot * scale;
        best = scores[t] > best ? scores[t] : best;
    }
    const float total = softmax_weights(scores, length, best);
    for (int k = 0; k < value_dim; k++) dst[k] = 0.0f;
    for (int t = 0; t < length; t++) {
        const void *source = t < cached ? latents : current;
        const size_t at = t < cached ? base + (size_t)t * width : 0;
        const float weight = scores[t];
        if (value_dim % 16 == 0) {
            for (int k = 0; k < value_dim; k += 16) *(f16 *)(dst + k) += weight * cache_load16(source, at + k, kv_type);
        } else {
            for (int k = 0; k < value_dim; k++) dst[k] += weight * cache_load(source, at + k, kv_type);
        }
    }
    const float inverse = 1.0f / total;
    for (int k = 0; k < value_dim; k++) dst[k] *= inverse;
}

/* dst = W x for one row x of `in_dim` inputs, W a packed [out_dim, in_dim] weight (fp32 or bf16), computed by the
   calling thread alone: the micro-kernels of `project`, for the per-head projections inside an attention task.
   `pairs` holds the row rounded to bf16 (in_dim / 2 values). */
static void project_row(const float *x, int in_dim, const void *packed, int type, int out_dim, float *dst,
                        uint32_t *pairs) {
    const int blocks = (out_dim + COLUMN_BLOCK - 1) / COLUMN_BLOCK;
#if defined(__AVX512BF16__)
    if (type == WEIGHT_BF16) {
        round_rows_to_bf16(x, 1, in_dim, (uint16_t *)pairs);
        for (int b = 0; b < blocks; b++) {
            const int width = out_dim - b * COLUMN_BLOCK < COLUMN_BLOCK ? out_dim - b * COLUMN_BLOCK : COLUMN_BLOCK;
            project_block_bf16(pairs, 1, in_dim / 2, (const uint16_t *)packed + (size_t)b * in_dim * COLUMN_BLOCK,
                               b * COLUMN_BLOCK, width, NULL, dst, out_dim, WRITE);
        }
        return;
    }
#endif
    (void)type, (void)pairs;
    for (int b = 0; b < blocks; b++) {
        const int width = out_dim - b * COLUMN_BLOCK < COLUMN_BLOCK ? out_dim - b * COLUMN_BLOCK : COLUMN_BLOCK;
        project_block(x, 1, in_dim, (const float *)packed + (size_t)b * in_dim * COLUMN_BLOCK, b * COLUMN_BLOCK,
                      width, NULL, dst, out_dim, WRITE);
    }
}

/* Multi-head latent attention of every row and head, one task each, all in one phase: the absorbed key
   projection (q_nope -> the head's latent query, q_pe rotated beside it), softmax attention over the slot's
   latents 0..position, and the head's value projection of the result into its columns of the heads' output.
   The per-head weights (W_UK_h^T: [L, nope], W_UV_h: [v, L]) are small enough to be read once per row from the
   cache, and two phases (and their barriers) fewer matter more at decode sizes. With `own_latents` (every row in
   a slot of its own: no row attends to another's new latent), each task computes its row's new latent itself and
   attends to it from its own copy, rounded as the cache stores it, and the row's first head stores it: the
   step needs no phase of its own (and no barrier) for the stores. */
static void attend_latents(const LatentModel *m, const LatentWorkspace *w, int layer, int rows,
                           const int64_t *positions, const int64_t *slots, int own_latents) {
    const int heads = m->base.num_heads, L = m->kv_lora_rank, R = m->rope_dim, nope = m->nope_dim, v = m->v_dim;
    const int type = m->projection_type, width = L + R;
    const size_t key_up_bytes = packed_bytes(L, nope, type), value_up_bytes = packed_bytes(v, L, type);
    const float *q = m->q_lora_rank ? w->q : w->a_out;
    const size_t q_stride = m->q_lora_rank ? (size_t)heads * (nope + R) : (size_t)heads * (nope + R) + L + R;
    float *scores = w->base.scores + (size_t)omp_get_thread_num() * HEADS_PER_PASS * m->base.slot_capacity;
    uint32_t *pairs = w->base.input_pairs + (size_t)omp_get_thread_num() * w->base.input_pairs_per_thread;
#pragma omp for schedule(dynamic, 1) nowait
    for (int task = 0; task < rows * heads; task++) {
        const int r = task / heads, h = task % heads;
        const float *head = q + (size_t)r * q_stride + (size_t)h * (nope + R);
        float query[width], mixed[L], latent[width];
        uint32_t current[width]; /* the row's new latent in the cache's format: width fp32 or bf16 values */
        if (own_latents) {
            latent_of_row(m, w, layer, r, positions[r], latent);
            cache_store_row(current, 0, latent, width, m->base.kv_type);
            if (h == 0)
                cache_store_row(m->base.keys[layer], ((size_t)slots[r] * m->base.slot_capacity + positions[r]) * width,
                                latent, width, m->base.kv_type);
        }
        project_row(head, nope, (const char *)m->key_up[layer] + h * key_up_bytes, type, L, query, pairs);
        rotate_rope(head + nope, query + L, R, m->interleaved, m->base.cos_table + (size_t)positions[r] * R,
                    m->base.sin_table + (size_t)positions[r] * R);
        attend_latent_head(query, m->base.keys[layer], (size_t)slots[r] * m->base.slot_capacity * width,
                           own_latents ? current : NULL, (int)positions[r] + 1, width, L, m->base.kv_type, m->scale,
                           scores, mixed);
        project_row(mixed, L, (const char *)m->value_up[layer] + h * value_up_bytes, type, v,
                    w->base.attention + ((size_t)r * heads + h) * v, pairs);
    }
}

/* deepseek.py's Router.route_rows for one row: the top_k experts and their weights from the router's logits. */
static void route_row(const LatentModel *m, const float *logits, const float *bias, int *chosen, float *weights) {
    const int experts = m->num_experts, groups = m->num_groups ? m->num_groups : 1, size = experts / groups;
    float scores[experts], choice[experts];
    unsigned char allowed[experts];
    if (m->sigmoid) {
        for (int e = 0; e < experts; e++) scores[e] = 1.0f / (1.0f + expf(-logits[e]));
    } else {
        float best = -INFINITY, total = 0.0f;
        for (int e = 0; e < experts; e++) best = logits[e] > best ? logits[e] : best;
        for (int e = 0; e < experts; e++) total += scores[e] = expf(logits[e] - best);
        for (int e = 0; e < experts; e++) scores[e] /= total;
    }
    for (int e = 0; e < experts; e++) {
        choice[e] = scores[e] + (bias ? bias[e] : 0.0f);
        allowed[e] = m->num_groups == 0;
    }
    if (m->num_groups) {
        /* A group scores its best expert (V2) or its two best (V3); the topk_group best groups stay allowed. */
        float group_score[groups];
        unsigned char kept[groups];
        for (int g = 0; g < groups; g++) {
            float first = -INFINITY, second = -INFINITY;
            for (int e = g * size; e < (g + 1) * size; e++) {
                if (choice[e] > first) {
                    second = first;
                    first = choice[e];
                } else if (choice[e] > second) {
                    second = choice[e];
                }
            }
            group_score[g] = m->sigmoid ? first + second : first;
            kept[g] = 0;
        }
        for (int n = 0; n < m->topk_group; n++) {
            int best = -1;
            for (int g = 0; g < groups; g++)
                if (!kept[g] && (best < 0 || group_score[g] > group_score[best])) best = g;
            kept[best] = 1;
            for (int e = best * size; e < (best + 1) * size; e++) allowed[e] = 1;
        }
    }
    float total = 0.0f;
    for (int k = 0; k < m->top_k; k++) {
        int best = -1;
        for (int e = 0; e < experts; e++)
            if (allowed[e] && (best < 0 || choice[e] > choice[best])) best = e;
        allowed[best] = 0;
        chosen[k] = best;
        weights[k] = scores[best];
        total += scores[best];
    }
    for (int k = 0; k < m->top_k; k++)
        weights[k] = (m->normalise ? weights[k] / (total + 1e-20f) : weights[k]) * m->routed_scaling;
}

/* The step's rows RMS-normed into the calling thread's own rows of base.normed (native_latent.py sizes it for
   every thread). Every thread norms every row (rows x hidden multiply-adds, nothing next to the projection that
   reads them) in place of its share of the rows and a barrier: the projection that follows starts at once. */
static float *norm_rows_for_this_thread(const LatentModel *m, const LatentWorkspace *w, const float *weight,
                                        int rows) {
    const int hidden = m->base.hidden;
    float *normed = w->base.normed + (size_t)omp_get_thread_num() * rows * hidden;
    for (int r = 0; r < rows; r++)
        rms_norm_vector(w->base.x + (size_t)r * hidden, weight, normed + (size_t)r * hidden, hidden, m->base.eps);
    return normed;
}

/* A DeepSeekMoE feed-forward of the rows' residual stream, added to it, in two phases. `chosen`, `weights`, `order`
   and `place` are the calling thread's own (rows * top_k each), `start` has num_experts + 1 entries.
   First phase: every thread norms every row, scores it with the router and routes it itself (see above: a few
   hundred floats per row, cheaper than a barrier), sorts the (row, expert) pairs by expert and gathers each
   expert's rows into consecutive rows of its own expert_in; then the threads share the column blocks of the
   shared experts' gate/up and of each expert's gate/up over its rows. Every thread computes the same routing, so
   all meet the same sequence of work-shared loops.
   Second phase: each expert's down projection over its rows, the shared experts' down added to the residual
   stream, and each row's experts' outputs added, weighted, in its own fixed order (shared experts first, then its
   top-k in order): a row's result does not depend on which other rows share its batch. The sums need no barrier
   before them: every down projection has `hidden` outputs, and a static schedule over the same number of column
   blocks gives each thread the same blocks in every loop (as `project`'s kernels split them), so a thread adds
   only the columns it wrote itself. */
static void mixture_of_experts(const LatentModel *m, const LatentWorkspace *w, PhaseBarrier *barrier, int layer,
                               int rows, int *chosen, float *weights, int *order, int *place, int *start) {
    const int hidden = m->base.hidden, experts = m->num_experts, top_k = m->top_k;
    const int gate_up_type = m->base.weight_types[4 * layer + 2], down_type = m->base.weight_types[4 * layer + 3];
    const int inner = m->expert_intermediate, shared = m->shared_intermediate, pairs = rows * top_k;
    const int thread = omp_get_thread_num();
    const DecodeModel *base = &m->base;
    const float *normed = norm_rows_for_this_thread(m, w, base->post_norm[layer], rows);
    float *logits = w->router_logits + (size_t)thread * rows * experts;
    float *expert_in = w->expert_in + (size_t)thread * pairs * hidden;
    for (int r = 0; r < rows; r++) {
        project_row(normed + (size_t)r * hidden, hidden, m->router[layer], WEIGHT_FP32, experts,
                    logits + (size_t)r * experts, NULL);
        route_row(m, logits + (size_t)r * experts, m->router_bias[layer], chosen + r * top_k, weights + r * top_k);
    }
    /* The (row, expert) pairs sorted by expert (a counting sort, rows in order within an expert): order[i] is the
       pair at sorted place i, place[p] where pair p went. */
    for (int e = 0; e <= experts; e++) start[e] = 0;
    for (int p = 0; p < pairs; p++) start[chosen[p] + 1]++;
    for (int e = 0; e < experts; e++) start[e + 1] += start[e];
    for (int e = 0; e < experts; e++) {
        int next = start[e];
        for (int p = 0; p < pairs; p++)
            if (chosen[p] == e) {
                order[next] = p;
                place[p] = next++;
            }
    }
    for (int i = 0; i < pairs; i++)
        memcpy(expert_in + (size_t)i * hidden, normed + (size_t)(order[i] / top_k) * hidden,
               (size_t)hidden * sizeof(float));
    if (shared)
        project(base, &w->base, normed, rows, hidden, m->shared_gate_up[layer], gate_up_type, NULL, 2 * shared,
                w->shared_act, shared, SWIGLU);
    const size_t gate_up_bytes = packed_bytes(2 * inner, hidden, gate_up_type);
    const size_t down_bytes = packed_bytes(hidden, inner, down_type);
    for (int e = 0; e < experts; e++) {
        const int count = start[e + 1] - start[e];
        if (count)
            project(base, &w->base, expert_in + (size_t)start[e] * hidden, count, hidden,
                    (const char *)m->expert_gate_up[layer] + e * gate_up_bytes, gate_up_type, NULL, 2 * inner,
                    w->expert_act + (size_t)start[e] * inner, inner, SWIGLU);
    }
    phase_end(barrier);
    for (int e = 0; e < experts; e++) {
        const int count = start[e + 1] - start[e];
        if (count)
            project(base, &w->base, w->expert_act + (size_t)start[e] * inner, count, inner,
                    (const char *)m->expert_down[layer] + e * down_bytes, down_type, NULL, hidden,
                    w->expert_out + (size_t)start[e] * hidden, hidden, WRITE);
    }
    if (shared)
        project(base, &w->base, w->shared_act, rows, shared, m->shared_down[layer], down_type, NULL, hidden,
                w->base.x, hidden, ACCUMULATE);
    const int blocks = (hidden + COLUMN_BLOCK - 1) / COLUMN_BLOCK;
#pragma omp for schedule(static) nowait
    for (int b = 0; b < blocks; b++) {
        const int j0 = b * COLUMN_BLOCK, width = hidden - j0 < COLUMN_BLOCK ? hidden - j0 : COLUMN_BLOCK;
        for (int r = 0; r < rows; r++) {
            float *x = w->base.x + (size_t)r * hidden + j0;
            for (int k = 0; k < top_k; k++) {
                const float weight = weights[r * top_k + k];
                const float *out = w->expert_out + (size_t)place[r * top_k + k] * hidden + j0;
#pragma omp simd
                for (int i = 0; i < width; i++) x[i] += weight * out[i];
            }
        }
    }
}

/* Logits [rows, vocab] for one new token per row of a DeepSeek-V2/V3 model: tokens[r] at positions[r], its
   latent cached in slot slots[r]. */
void nanoseek_latent_decode_step(const LatentModel *m, const LatentWorkspace *w, int rows, const int64_t *tokens,
                                 const int64_t *positions, const int64_t *slots, float *logits, int threads) {
    const DecodeModel *base = &m->base;
    const int hidden = base->hidden, heads = base->num_heads, type = m->projection_type;
    const int L = m->kv_lora_rank, R = m->rope_dim, nope = m->nope_dim, v = m->v_dim;
    const int q_width = m->q_lora_rank ? m->q_lora_rank : heads * (nope + R), a_width = q_width + L + R;
    PhaseBarrier barrier = {0, 0};
    /* Decode steps have every row in its own slot; a prompt's chunk does not (its rows attend to each other). */
    int own_latents = !m->q_lora_rank;
    for (int r = 0; r < rows && own_latents; r++)
        for (int other = 0; other < r; other++) own_latents &= slots[other] != slots[r];
#pragma omp parallel num_threads(threads)
    {
#if defined(HAVE_AMX)
        if (base->amx) _tile_loadconfig(&TILE_CONFIG);
#endif
        /* Each thread's routing of the step's rows (mixture_of_experts). */
        int chosen[rows * m->top_k + 1], order[rows * m->top_k + 1], place[rows * m->top_k + 1];
        int start[m->num_experts + 1];
        float weights[rows * m->top_k + 1];
        embed_rows(base, &w->base, rows, tokens);
        phase_end(&barrier);
        for (int layer = 0; layer < base->num_layers; layer++) {
            const float *normed = norm_rows_for_this_thread(m, w, base->input_norm[layer], rows);
            project(base, &w->base, normed, rows, hidden, m->a_weight[layer], type, m->a_bias[layer], a_width,
                    w->a_out, a_width, WRITE);
            phase_end(&barrier);
            if (!own_latents) {
                store_latents(m, w, layer, rows, positions, slots);
                phase_end(&barrier);
            }
            if (m->q_lora_rank) {
                project(base, &w->base, w->q_a_normed, rows, q_width, m->q_b_weight[layer], type, NULL,
                        heads * (nope + R), w->q, heads * (nope + R), WRITE);
                phase_end(&barrier);
            }
            attend_latents(m, w, layer, rows, positions, slots, own_latents);
            phase_end(&barrier);
            project(base, &w->base, w->base.attention, rows, heads * v, m->o_weight[layer], type, m->o_bias[layer],
                    hidden, w->base.x, hidden, ACCUMULATE);
            phase_end(&barrier);
            if (m->router[layer]) {
                mixture_of_experts(m, w, &barrier, layer, rows, chosen, weights, order, place, start);
            } else {
                normed = norm_rows_for_this_thread(m, w, base->post_norm[layer], rows);
                project(base, &w->base, normed, rows, hidden, base->gate_up_weight[layer],
                        base->weight_types[4 * layer + 2], NULL, 2 * base->intermediate, w->base.activation,
                        base->intermediate, SWIGLU);
                phase_end(&barrier);
                project(base, &w->base, w->base.activation, rows, base->intermediate, base->down_weight[layer],
                        base->weight_types[4 * layer + 3], NULL, hidden, w->base.x, hidden, ACCUMULATE);
            }
            phase_end(&barrier);
        }
        const float *normed = norm_rows_for_this_thread(m, w, base->final_norm, rows);
        project(base, &w->base, normed, rows, hidden, base->lm_head, base->weight_types[4 * base->num_layers], NULL,
                base->vocab, logits, base->vocab, WRITE);
#if defined(HAVE_AMX)
        if (base->amx) _tile_release();
#endif
    }
}
