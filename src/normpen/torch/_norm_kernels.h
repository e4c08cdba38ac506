/* One-pass rescaling of the rows of a row-major matrix by a factor of each row's Euclidean norm, the
 * sums of the squares of its columns in one read, and a decay that keeps a compact record to undo it.
 *
 * Each row is read from memory once: its norm is summed in 16 independent lanes (so the compiler
 * vectorises the loop), then the row is rescaled while it is still in the L1 cache. On x86-64 with
 * glibc every exported function is compiled twice, for Haswell's instructions (AVX2, FMA) and for the
 * baseline, and the loader picks one for the CPU it runs on (GCC's and Clang's target_clones, through
 * glibc's indirect functions; elsewhere the baseline build alone). The factor of a row follows the
 * torch operations it replaces operation by operation, so a row's result is theirs given the same
 * norm; only the norm's summation order differs.
 */
#ifndef NORMPEN_NORM_KERNELS_H
#define NORMPEN_NORM_KERNELS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* (math.h has defined __GLIBC__ where the C library is glibc, the one with indirect functions) */
#if defined(__x86_64__) && defined(__GLIBC__) && (defined(__GNUC__) || defined(__clang__))
#define NORMPEN_CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define NORMPEN_CLONES
#endif

#if defined(__GNUC__) || defined(__clang__)
#define NORMPEN_INLINE static inline __attribute__((always_inline))
#else
#define NORMPEN_INLINE static inline
#endif

#define NORMPEN_LANES 16

#define NORMPEN_ROW_SCALING(real, sqrt_, suffix)                                                       \
    /* The Euclidean norm of row[0:width], its squares summed in NORMPEN_LANES lanes (always inlined:  */ \
    /* in each clone of its callers it is compiled for that clone's instructions). */                  \
    NORMPEN_INLINE real normpen_row_norm_##suffix(const real *row, size_t width)                       \
    {                                                                                                  \
        real lanes[NORMPEN_LANES] = {0};                                                               \
        real total = 0;                                                                                \
        size_t i = 0;                                                                                  \
        for (; i + NORMPEN_LANES <= width; i += NORMPEN_LANES)                                         \
            for (int k = 0; k < NORMPEN_LANES; k++)                                                    \
                lanes[k] += row[i + k] * row[i + k];                                                   \
        for (; i < width; i++)                                                                         \
            total += row[i] * row[i];                                                                  \
        for (int k = 0; k < NORMPEN_LANES; k++)                                                        \
            total += lanes[k];                                                                         \
        return sqrt_(total);                                                                           \
    }                                                                                                  \
                                                                                                       \
    /* Group soft thresholding of each row r: x_r *= max(n_r - t_r, 0) / n_r (0 for n_r = 0; NaN  */   \
    /* propagates as in torch's clamp_min). */                                                         \
    NORMPEN_CLONES static void normpen_soft_threshold_rows_##suffix(                                   \
        real *x, size_t rows, size_t width, const real *thresholds)                                    \
    {                                                                                                  \
        for (size_t r = 0; r < rows; r++) {                                                            \
            real *row = x + r * width;                                                                 \
            real norm = normpen_row_norm_##suffix(row, width);                                         \
            real excess = norm - thresholds[r];                                                        \
            real factor = (excess < 0 ? (real)0 : excess) / (norm > 0 ? norm : (real)1);               \
            if (factor != 1) /* x * 1 is x: an unpenalised row is left as it is */                      \
                for (size_t j = 0; j < width; j++)                                                     \
                    row[j] *= factor;                                                                  \
        }                                                                                              \
    }                                                                                                  \
                                                                                                       \
    /* Each row r clipped to the ball of radius c: x_r /= max(n_r, c) / c (rows inside divided by 1). */ \
    NORMPEN_CLONES static void normpen_clip_rows_##suffix(real *x, size_t rows, size_t width, real radius) \
    {                                                                                                  \
        for (size_t r = 0; r < rows; r++) {                                                            \
            real *row = x + r * width;                                                                 \
            real norm = normpen_row_norm_##suffix(row, width);                                         \
            real divisor = (norm < radius ? radius : norm) / radius;                                   \
            if (divisor != 1) /* x / 1 is x: a row inside the ball is left as it is */                 \
                for (size_t j = 0; j < width; j++)                                                     \
                    row[j] /= divisor;                                                                 \
        }                                                                                              \
    }

NORMPEN_ROW_SCALING(float, sqrtf, f32)
NORMPEN_ROW_SCALING(double, sqrt, f64)

/* The sums of the squares of the columns of a row-major rows x width matrix, accumulated in float64
 * in `sums` (width entries) four rows at a time, so that each pass over `sums` (which stays in cache)
 * takes four rows of x, each read from memory once. */
#define NORMPEN_COLUMN_SQUARES(real, suffix)                                                           \
    NORMPEN_CLONES static void normpen_column_squares_##suffix(                                        \
        const real *x, size_t rows, size_t width, double *sums)                                        \
    {                                                                                                  \
        for (size_t j = 0; j < width; j++)                                                             \
            sums[j] = 0;                                                                               \
        size_t r = 0;                                                                                  \
        for (; r + 4 <= rows; r += 4) {                                                                \
            const real *a = x + r * width, *b = a + width, *c = b + width, *d = c + width;             \
            for (size_t j = 0; j < width; j++) {                                                       \
                double four = (double)a[j] * a[j];                                                     \
                four += (double)b[j] * b[j];                                                           \
                four += (double)c[j] * c[j];                                                           \
                four += (double)d[j] * d[j];                                                           \
                sums[j] += four;                                                                       \
            }                                                                                          \
        }                                                                                              \
        for (; r < rows; r++) {                                                                        \
            const real *row = x + r * width;                                                           \
            for (size_t j = 0; j < width; j++)                                                         \
                sums[j] += (double)row[j] * row[j];                                                    \
        }                                                                                              \
    }

NORMPEN_COLUMN_SQUARES(float, f32)
NORMPEN_COLUMN_SQUARES(double, f64)

/* A float32 decay x *= factor (one product, as torch's multiply by a scalar) that keeps what undoes it:
 * the difference of the bit patterns of x before and after, a count of float32 steps, in `record`
 * (int8 or int16). Adding it back to the bit pattern of the decayed x gives x again, bit for bit.
 * Returns 1 if some difference did not fit its type (it cannot for a finite or infinite x when
 * 1 - factor is within the bound the caller checks; a signalling NaN comes back quiet), else 0. */
#define NORMPEN_SCALE_RECORDING(record_t, suffix)                                                      \
    NORMPEN_CLONES static int normpen_scale_recording_##suffix(                                         \
        float *x, size_t n, float factor, record_t *record)                                            \
    {                                                                                                  \
        int overflow = 0;                                                                              \
        for (size_t i = 0; i < n; i++) {                                                               \
            float before = x[i], after = before * factor;                                              \
            int32_t bits_before, bits_after;                                                           \
            memcpy(&bits_before, &before, sizeof before);                                              \
            memcpy(&bits_after, &after, sizeof after);                                                 \
            int32_t steps = bits_before - bits_after;                                                  \
            overflow |= steps != (record_t)steps;                                                      \
            record[i] = (record_t)steps;                                                               \
            x[i] = after;                                                                              \
        }                                                                                              \
        return overflow;                                                                               \
    }                                                                                                  \
                                                                                                       \
    /* x back to its value before normpen_scale_recording: its bit pattern plus the record. */         \
    NORMPEN_CLONES static void normpen_restore_##suffix(float *x, size_t n, const record_t *record)     \
    {                                                                                                  \
        for (size_t i = 0; i < n; i++) {                                                               \
            int32_t bits;                                                                              \
            memcpy(&bits, x + i, sizeof bits);                                                         \
            bits += record[i];                                                                         \
            memcpy(x + i, &bits, sizeof bits);                                                         \
        }                                                                                              \
    }

NORMPEN_SCALE_RECORDING(int8_t, i8)
NORMPEN_SCALE_RECORDING(int16_t, i16)

#endif
