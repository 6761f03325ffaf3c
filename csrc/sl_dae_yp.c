/* Consistent y' of a DAE: see sl_dae_yp.h. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sl_common.h"
#include "sl_idas.h"
#include "sl_pool.h"
#include "sl_dae_yp.h"
#include "sl_linalg.h"

struct sl_dae_yp {
    sl_pool_dae model;
    /* Where each state and equation sits in its block: differential states and equations
       (those with y'), or algebraic ones, numbered from 0 in each. */
    int64_t *state_block, *equation_block, n_differential;
    double *yyp, *res, *jy, *jyp, *dfdt, *matrix, *vector;
    int64_t *pivots;
};

void sl_dae_yp_free(sl_dae_yp *w)
{
    if (!w) return;
    free(w->state_block); free(w->equation_block); free(w->yyp); free(w->res); free(w->jy);
    free(w->jyp); free(w->dfdt); free(w->matrix); free(w->vector); free(w->pivots);
    free(w);
}

int sl_dae_yp_create(const sl_pool_dae *dae, sl_dae_yp **out)
{
    sl_dae_yp *w = calloc(1, sizeof(*w));
    const sl_dae_problem *p = &dae->problem;
    int64_t n = p->n_states, j, n_diff_eq = 0, n_alg_eq = 0, n_alg = 0;
    *out = w;
    if (!w) return SL_MEM_FAIL;
    w->model = *dae;
    w->state_block = malloc(n * sizeof(int64_t));
    w->equation_block = malloc(n * sizeof(int64_t));
    w->yyp = calloc(2 * n, sizeof(double));
    w->res = calloc(n, sizeof(double));
    w->jy = calloc(p->jy_colptr[n] + 1, sizeof(double));
    w->jyp = calloc(p->jyp_colptr[n] + 1, sizeof(double));
    w->dfdt = calloc(n, sizeof(double));
    w->matrix = calloc(n * n, sizeof(double));
    w->vector = calloc(n, sizeof(double));
    w->pivots = malloc(n * sizeof(int64_t));
    if (!w->state_block || !w->equation_block || !w->yyp || !w->res || !w->jy || !w->jyp
        || !w->dfdt || !w->matrix || !w->vector || !w->pivots)
        return SL_MEM_FAIL;
    for (j = 0; j < n; j++) {
        w->state_block[j] = p->id[j] != 0.0 ? w->n_differential++ : n_alg++;
        w->equation_block[j] = p->equation_id[j] != 0.0 ? n_diff_eq++ : n_alg_eq++;
    }
    return 0;
}

/* x = a^{-1} x for a block (a: m x m, column-major, factored in place; pivots: m). A
   singular or non-finite a, or a non-finite x: SL_DERIVATIVE_FAIL. */
static int block_solve(int64_t m, double *a, int64_t *pivots, double *x)
{
    int64_t k;
    for (k = 0; k < m * m; k++)
        if (!isfinite(a[k])) return SL_DERIVATIVE_FAIL;
    if (sl_dense_factor(m, a, pivots)) return SL_DERIVATIVE_FAIL;
    sl_dense_solve(m, a, pivots, x);
    for (k = 0; k < m; k++)
        if (!isfinite(x[k])) return SL_DERIVATIVE_FAIL;
    return 0;
}

/* The matrix of block (rows: equations with equation_id != 0 iff row_differential;
   columns: states with id != 0 iff column_differential) of the CSC matrix (colptr, rows,
   values), column-major with as many rows as the block has. */
static void dense_block(const sl_dae_yp *w, const int64_t *colptr, const int64_t *rows,
                        const double *values, int row_differential, int column_differential,
                        double *out)
{
    const sl_dae_problem *p = &w->model.problem;
    int64_t n = p->n_states, m = column_differential ? w->n_differential : n - w->n_differential;
    memset(out, 0, m * m * sizeof(double));
    for (int64_t j = 0; j < n; j++) {
        if ((p->id[j] != 0.0) != column_differential) continue;
        for (int64_t k = colptr[j]; k < colptr[j + 1]; k++)
            if ((p->equation_id[rows[k]] != 0.0) == row_differential)
                out[w->equation_block[rows[k]] + w->state_block[j] * m] = values[k];
    }
}

int sl_dae_yp_solve(sl_dae_yp *w, double t, const double *y, const double *yp_guess,
                    double *out)
{
    const sl_dae_problem *p = &w->model.problem;
    int64_t n = p->n_states, nd = w->n_differential, j, k, step;
    double *yp = w->yyp + n;
    memcpy(w->yyp, y, n * sizeof(double));
    memcpy(yp, yp_guess, n * sizeof(double));
    for (step = 0; step < w->model.yp_newton_steps; step++) {
        if (p->res(t, w->yyp, p->params, w->res) || p->jac_yp(t, w->yyp, p->params, w->jyp))
            return SL_DERIVATIVE_FAIL;
        dense_block(w, p->jyp_colptr, p->jyp_rows, w->jyp, 1, 1, w->matrix);
        for (j = 0; j < n; j++)
            if (p->equation_id[j] != 0.0) w->vector[w->equation_block[j]] = w->res[j];
        if (block_solve(nd, w->matrix, w->pivots, w->vector)) return SL_DERIVATIVE_FAIL;
        for (j = 0; j < n; j++)
            if (p->id[j] != 0.0) yp[j] -= w->vector[w->state_block[j]];
    }
    if (nd < n) {
        if (p->jac_y(t, w->yyp, p->params, w->jy) || w->model.dfdt(t, w->yyp, p->params, w->dfdt))
            return SL_DERIVATIVE_FAIL;
        for (j = 0; j < n; j++)
            if (p->equation_id[j] == 0.0) w->vector[w->equation_block[j]] = -w->dfdt[j];
        for (j = 0; j < n; j++) /* minus F_z,x x' */
            if (p->id[j] != 0.0)
                for (k = p->jy_colptr[j]; k < p->jy_colptr[j + 1]; k++)
                    if (p->equation_id[p->jy_rows[k]] == 0.0)
                        w->vector[w->equation_block[p->jy_rows[k]]] -= w->jy[k] * yp[j];
        dense_block(w, p->jy_colptr, p->jy_rows, w->jy, 0, 0, w->matrix);
        if (block_solve(n - nd, w->matrix, w->pivots, w->vector)) return SL_DERIVATIVE_FAIL;
        for (j = 0; j < n; j++)
            if (p->id[j] == 0.0) yp[j] = w->vector[w->state_block[j]];
    }
    memcpy(out, yp, n * sizeof(double));
    return 0;
}
