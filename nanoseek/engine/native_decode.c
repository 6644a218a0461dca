/* One decode step of a Llama-family model in a single C call: nanoseek's native decode path.

   Why it exists: at batch 1 a decode step of a small model is ~55 tiny operations, and dispatching them one
   by one (eager PyTorch, or even inductor's C++ wrapper) costs more than their arithmetic. Here the whole
   step -- embedding, every layer, final norm and output projection -- runs inside one OpenMP parallel
   region: the threads meet at a barrier between phases instead of being handed a new task per operation
   (what llama.cpp does too). nanoseek/engine/native.py compiles this file with the machine's C compiler,
   prepares the weights and calls `nanoseek_decode_step` through ctypes; the engine falls back to the
   PyTorch model whenever this path does not apply (see native.py).

   Numerics: fp32 throughout, as the PyTorch model in fp32. Each output row is a dot product computed the
   same way whatever the batch size or thread count, so a sequence decodes to the same tokens alone or in
   a batch. Results match the PyTorch model to float rounding (tests/engine/test_native_decode.py).

   Layouts: projection weights packed in column blocks (`project`); the embedding [hidden, vocab] (transformer.py's
   column-major storage, read in place); the q/k/v projection's output
   rows are the q heads, then the k heads, then the v heads; gate/up holds the gate rows, then the up rows;
   the KV cache is the engine's SlotKVCache, [slot, kv_head, position, head_dim] per layer. The rotary
   tables are [position, head_dim] with the sign of rotate_half folded into sin, as in transformer.py. */

#include <math.h>
#include <omp.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int32_t hidden, num_heads, num_kv_heads, head_dim, intermediate, vocab, num_layers, slot_capacity;
    float eps;
    const float *embed_t, *lm_head, *final_norm, *cos_table, *sin_table;
    const float *const *input_norm, *const *post_norm;
    const float *const *qkv_weight, *const *qkv_bias;
    const float *const *o_weight, *const *o_bias;
    const float *const *gate_up_weight, *const *gate_up_bias;
    const float *const *down_weight, *const *down_bias;
    float *const *keys, *const *values;
} DecodeModel;

/* Scratch memory for a batch of up to max_batch rows, laid out by native.py (`workspace_floats`). */
typedef struct {
    float *x, *normed, *qkv, *attention, *gate_up, *activation, *scores;
} Workspace;

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

/* out[r, j0:j0+width] (=, or += with accumulate) x[r0:r0+rows, :] . block + bias, rows <= 8, width <= 32, where
   `block` is one packed column block: [in_dim, 32] contiguous (see `project`). The classic GEMM micro-kernel:
   each step over k loads two weight vectors and broadcasts one input per row, so every loaded weight is used
   `rows` times and no sum needs a horizontal reduction. */
static inline __attribute__((always_inline)) void project_block(
    const float *x, int rows, int in_dim, const float *block, int j0, int width, const float *bias, float *out,
    int out_stride, int accumulate) {
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
    for (int r = 0; r < rows; r++) {
        float *dst = out + (size_t)r * out_stride + j0;
        for (int i = 0; i < width; i++) {
            const float value = (i < 16 ? low[r][i] : high[r][i - 16]) + (bias ? bias[j0 + i] : 0.0f);
            dst[i] = accumulate ? dst[i] + value : value;
        }
    }
}

/* out[r, j] (=, or += with accumulate) x[r, :] . weight[j, :] + bias[j] for r < rows, j < out_dim. The weight
   comes packed by native.py (`packed_projection`): column blocks of 32 outputs, each block [in_dim, 32]
   contiguous, the last one zero-padded. A block is then one sequential stream: reading [in, out] rows
   out_dim floats apart instead cost a cache line and often a TLB entry per k, and at hidden 512 made
   16-row steps slower than oneDNN. Threads split the column blocks. */
static void project(const float *x, int rows, int in_dim, const float *packed, const float *bias, int out_dim,
                    float *out, int out_stride, int accumulate) {
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
                case 8: project_block(xr, 8, in_dim, block, j0, width, bias, dst, out_stride, accumulate); break;
                case 4: project_block(xr, 4, in_dim, block, j0, width, bias, dst, out_stride, accumulate); break;
                case 1: project_block(xr, 1, in_dim, block, j0, width, bias, dst, out_stride, accumulate); break;
                default: project_block(xr, n, in_dim, block, j0, width, bias, dst, out_stride, accumulate);
            }
        }
    }
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
        float rolled[dim];
        for (int k = 0; k < dim; k++) rolled[k] = vec[(k + half) % dim];
        for (int k = 0; k < dim; k++) vec[k] = vec[k] * cos_row[k] + rolled[k] * sin_row[k];
        if (head >= heads) {
            const int kv = head - heads;
            const size_t at = (((size_t)slots[r] * kv_heads + kv) * m->slot_capacity + positions[r]) * dim;
            const float *value = qkv + (size_t)r * row_width + (size_t)(rotated + kv) * dim;
            for (int k = 0; k < dim; k++) {
                m->keys[layer][at + k] = vec[k];
                m->values[layer][at + k] = value[k];
            }
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

#define MAX_VECTOR_HEAD 16 /* head_dim up to 256 in registers; larger or odd head sizes take the scalar loop */

/* Softmax attention of one query head over `length` cached keys and values, head_dim a multiple of 16:
   the query and the output stay in vector registers, one pass computes the scores, a second exponentiates
   them and sums the values. */
static void attend_head_vectors(const float *q, const float *keys, const float *values, int length, int dim,
                                float scale, float *scores, float *dst) {
    const int vectors = dim / 16;
    f16 query[MAX_VECTOR_HEAD], out[MAX_VECTOR_HEAD];
    for (int i = 0; i < vectors; i++) {
        query[i] = *(const f16 *)(q + 16 * i) * scale;
        out[i] = (f16){0};
    }
    float best = -INFINITY;
    for (int t = 0; t < length; t++) {
        const float *key = keys + (size_t)t * dim;
        f16 products = query[0] * *(const f16 *)key;
        for (int i = 1; i < vectors; i++) products += query[i] * *(const f16 *)(key + 16 * i);
        scores[t] = sum_lanes(products);
        best = scores[t] > best ? scores[t] : best;
    }
    float total = 0.0f;
    for (int t = 0; t < length; t++) {
        const float weight = expf(scores[t] - best);
        total += weight;
        const float *value = values + (size_t)t * dim;
        for (int i = 0; i < vectors; i++) out[i] += weight * *(const f16 *)(value + 16 * i);
    }
    for (int i = 0; i < vectors; i++) *(f16 *)(dst + 16 * i) = out[i] / total;
}

/* The same for any even head_dim, one float at a time. */
static void attend_head_scalar(const float *q, const float *keys, const float *values, int length, int dim,
                               float scale, float *scores, float *dst) {
    float best = -INFINITY;
    for (int t = 0; t < length; t++) {
        float dot = 0.0f;
        for (int k = 0; k < dim; k++) dot += q[k] * keys[(size_t)t * dim + k];
        scores[t] = dot * scale;
        best = scores[t] > best ? scores[t] : best;
    }
    float total = 0.0f;
    for (int k = 0; k < dim; k++) dst[k] = 0.0f;
    for (int t = 0; t < length; t++) {
        const float weight = expf(scores[t] - best);
        total += weight;
        for (int k = 0; k < dim; k++) dst[k] += weight * values[(size_t)t * dim + k];
    }
    for (int k = 0; k < dim; k++) dst[k] /= total;
}

/* Softmax attention of each row's q heads over its slot's keys 0..position (one query per sequence). */
static void attend(const DecodeModel *m, int layer, int rows, const int64_t *positions, const int64_t *slots,
                   const float *qkv, float *out, float *scores) {
    const int heads = m->num_heads, kv_heads = m->num_kv_heads, dim = m->head_dim;
    const int row_width = (heads + 2 * kv_heads) * dim, group = heads / kv_heads;
    const int vectorized = dim % 16 == 0 && dim / 16 <= MAX_VECTOR_HEAD;
    const float scale = 1.0f / sqrtf((float)dim);
    float *my_scores = scores + (size_t)omp_get_thread_num() * m->slot_capacity;
#pragma omp for schedule(dynamic, 1) nowait
    for (int task = 0; task < rows * heads; task++) {
        const int r = task / heads, head = task % heads, kv = head / group;
        const size_t base = ((size_t)slots[r] * kv_heads + kv) * m->slot_capacity * dim;
        const float *q = qkv + (size_t)r * row_width + (size_t)head * dim;
        float *dst = out + (size_t)r * heads * dim + (size_t)head * dim;
        (vectorized ? attend_head_vectors : attend_head_scalar)(
            q, m->keys[layer] + base, m->values[layer] + base, (int)positions[r] + 1, dim, scale, my_scores, dst);
    }
}

static void swiglu(const float *gate_up, float *out, int rows, int intermediate) {
#pragma omp for schedule(static) nowait
    for (int r = 0; r < rows; r++) {
        const float *gate = gate_up + (size_t)r * 2 * intermediate, *up = gate + intermediate;
        float *dst = out + (size_t)r * intermediate;
        for (int i = 0; i < intermediate; i++) dst[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
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
#pragma omp for schedule(static) nowait
        for (int r = 0; r < rows; r++) {
            /* The embedding is read in place, [hidden, vocab]: token t's vector is column t. */
            for (int k = 0; k < hidden; k++) w->x[(size_t)r * hidden + k] = m->embed_t[(size_t)k * m->vocab + tokens[r]];
        }
        phase_end(&barrier);
        for (int layer = 0; layer < m->num_layers; layer++) {
            rms_norm_rows(w->x, m->input_norm[layer], w->normed, rows, hidden, m->eps);
            phase_end(&barrier);
            project(w->normed, rows, hidden, m->qkv_weight[layer], m->qkv_bias[layer], qkv_width, w->qkv,
                    qkv_width, 0);
            phase_end(&barrier);
            rotate_and_store(m, layer, rows, positions, slots, w->qkv);
            phase_end(&barrier);
            attend(m, layer, rows, positions, slots, w->qkv, w->attention, w->scores);
            phase_end(&barrier);
            project(w->attention, rows, attention_width, m->o_weight[layer], m->o_bias[layer], hidden, w->x,
                    hidden, 1);
            phase_end(&barrier);
            rms_norm_rows(w->x, m->post_norm[layer], w->normed, rows, hidden, m->eps);
            phase_end(&barrier);
            project(w->normed, rows, hidden, m->gate_up_weight[layer], m->gate_up_bias[layer],
                    2 * m->intermediate, w->gate_up, 2 * m->intermediate, 0);
            phase_end(&barrier);
            swiglu(w->gate_up, w->activation, rows, m->intermediate);
            phase_end(&barrier);
            project(w->activation, rows, m->intermediate, m->down_weight[layer], m->down_bias[layer], hidden,
                    w->x, hidden, 1);
            phase_end(&barrier);
        }
        rms_norm_rows(w->x, m->final_norm, w->normed, rows, hidden, m->eps);
        phase_end(&barrier);
        project(w->normed, rows, hidden, m->lm_head, NULL, m->vocab, logits, m->vocab, 0);
    }
}
