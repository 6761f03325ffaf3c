/* Small dense and band LU with partial pivoting (see sl_linalg.h). Our own rather than
   SUNDIALS' dense and band solvers: Debian's 6.4 build (-O0) takes 1.3-2.2 us for a 20 x 20
   solve and 7-14 us for its factorization (these loops 0.3 and 2.7-3.4 us, gcc -O2), which
   was 45% of the DIRK backward's time on POLLU; its band solve 28% on Fisher-KPP. */
#include <math.h>

#include "sl_linalg.h"

int sl_dense_factor(int64_t n, double *m, int64_t *pivots)
{
    int64_t i, j, k, p;
    for (k = 0; k < n; k++) {
        double *column = m + k * n, inverse;
        for (p = k, i = k + 1; i < n; i++)
            if (fabs(column[i]) > fabs(column[p])) p = i;
        pivots[k] = p;
        if (column[p] == 0.0) return 1;
        if (p != k)
            for (j = 0; j < n; j++) {
                double swap = m[k + j * n];
                m[k + j * n] = m[p + j * n];
                m[p + j * n] = swap;
            }
        inverse = 1.0 / column[k];
        for (i = k + 1; i < n; i++) column[i] *= inverse;
        for (j = k + 1; j < n; j++) {
            double *right = m + j * n, factor = right[k];
            if (factor != 0.0)
                for (i = k + 1; i < n; i++) right[i] -= factor * column[i];
        }
        column[k] = inverse; /* the solves multiply: a division's latency was 20% of them */
    }
    return 0;
}

void sl_dense_solve(int64_t n, const double *lu, const int64_t *pivots, double *x)
{
    int64_t i, k;
    for (k = 0; k < n; k++)
        if (pivots[k] != k) {
            double swap = x[k];
            x[k] = x[pivots[k]];
            x[pivots[k]] = swap;
        }
    for (k = 0; k < n; k++) {
        double xk = x[k]; /* a local: x[i] could alias x[k] for the compiler */
        for (i = k + 1; i < n; i++) x[i] -= lu[i + k * n] * xk;
    }
    for (k = n - 1; k >= 0; k--) {
        double xk = x[k] *= lu[k + k * n];
        for (i = 0; i < k; i++) x[i] -= lu[i + k * n] * xk;
    }
}

/* LAPACK's dgbtf2 order: each row exchange applied to the columns right of the pivot only. */
int sl_band_factor(int64_t n, int64_t lower, int64_t upper, double *lu, int64_t *pivots)
{
    int64_t i, j, k, p, last_column = 0;
    for (k = 0; k < n; k++) {
        int64_t end = k + lower < n - 1 ? k + lower : n - 1;
        double *column = sl_band_column(lu, lower, upper, k), inverse;
        for (p = k, i = k + 1; i <= end; i++)
            if (fabs(column[i]) > fabs(column[p])) p = i;
        pivots[k] = p;
        if (column[p] == 0.0) return 1;
        if (p + upper > last_column) last_column = p + upper < n - 1 ? p + upper : n - 1;
        inverse = 1.0 / column[p];
        for (j = k; j <= last_column; j++) {
            double *right = sl_band_column(lu, lower, upper, j), factor = right[p];
            right[p] = right[k];
            right[k] = factor;
            if (j == k) {
                for (i = k + 1; i <= end; i++) column[i] *= inverse;
            } else if (factor != 0.0) {
                for (i = k + 1; i <= end; i++) right[i] -= factor * column[i];
            }
        }
        column[k] = inverse;
    }
    return 0;
}

void sl_band_solve(int64_t n, int64_t lower, int64_t upper, const double *lu,
                   const int64_t *pivots, double *x)
{
    int64_t i, k, width = lower + upper;
    for (k = 0; k < n; k++) {
        int64_t p = pivots[k], end = k + lower < n - 1 ? k + lower : n - 1;
        const double *column = sl_band_column((double *)lu, lower, upper, k);
        double xk = x[p];
        x[p] = x[k];
        x[k] = xk;
        for (i = k + 1; i <= end; i++) x[i] -= column[i] * xk;
    }
    for (k = n - 1; k >= 0; k--) {
        const double *column = sl_band_column((double *)lu, lower, upper, k);
        double xk = x[k] *= column[k];
        for (i = k > width ? k - width : 0; i < k; i++) x[i] -= column[i] * xk;
    }
}
