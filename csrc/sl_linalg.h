/* Small dense and band LU factorizations with partial pivoting, and their solves; see
   sl_linalg.c for why they are ours. Column-major; 0 or 1 (a zero pivot: singular). */
#ifndef SL_LINALG_H
#define SL_LINALG_H

#include <stdint.h>

/* The n x n m (column-major), factored in place as P m = L U: the row exchanges in
   pivots (n), U's diagonal stored as its reciprocals. Returns 1 if m is singular. */
int sl_dense_factor(int64_t n, double *m, int64_t *pivots);
/* x = m^{-1} x for the factors of sl_dense_factor. */
void sl_dense_solve(int64_t n, const double *lu, const int64_t *pivots, double *x);

/* Band storage of an n x n matrix with `lower` sub- and `upper` superdiagonals: column j
   holds rows j - lower - upper to j + lower (room for the row exchanges' fill-in), in
   SL_BAND_LD(lower, upper) doubles; M(i, j) is sl_band_column(lu, lower, upper, j)[i]. */
#define SL_BAND_LD(lower, upper) (2 * (lower) + (upper) + 1)
static inline double *sl_band_column(double *lu, int64_t lower, int64_t upper, int64_t j)
{
    return lu + j * SL_BAND_LD(lower, upper) + lower + upper - j;
}

/* The band matrix in lu (SL_BAND_LD * n doubles), factored in place as sl_dense_factor
   does. Returns 1 if it is singular. */
int sl_band_factor(int64_t n, int64_t lower, int64_t upper, double *lu, int64_t *pivots);
/* x = M^{-1} x for the factors of sl_band_factor. */
void sl_band_solve(int64_t n, int64_t lower, int64_t upper, const double *lu,
                   const int64_t *pivots, double *x);

#endif
