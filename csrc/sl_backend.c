/* The CVODES, ARKODE (explicit Runge-Kutta) and IDAS backends of the solver pool, over the
   public functions of sl_cvodes.h, sl_arkode.h and sl_idas.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sl_internal.h"
#include "sl_linalg.h"
#include "sl_cvodes.h"
#include "sl_arkode.h"
#include "sl_auto.h"
#include "sl_idas.h"
#include "sl_pool.h"
#include "sl_backend.h"

/* -- ODEs: CVODES and ARKODE's explicit Runge-Kutta method ------------------------------ */

/* The integrators take an sl_problem and have the same calls; exactly one handle is set. */
typedef struct ode_backend {
    sl_cvodes *cvodes;
    sl_arkode *arkode;
    sl_auto *automatic;
    sl_problem problem; /* its params are the pool entry's */
} ode_backend;

static ode_backend *ode_new(const void *model, double *params, void **out)
{
    ode_backend *b = calloc(1, sizeof(*b));
    *out = b;
    if (!b) return NULL;
    b->problem = *(const sl_problem *)model;
    b->problem.params = params;
    return b;
}

static int cvodes_create(const void *model, double *params, const sl_options *options,
                         const sl_sens_options *sens, const sl_adjoint_options *adjoint,
                         void **out)
{
    ode_backend *b = ode_new(model, params, out);
    return b ? sl_cvodes_create(&b->problem, options, sens, adjoint, &b->cvodes) : SL_MEM_FAIL;
}

static int arkode_create(const void *model, double *params, const sl_options *options,
                         const sl_sens_options *sens, const sl_adjoint_options *adjoint,
                         void **out)
{
    ode_backend *b = ode_new(model, params, out);
    return b ? sl_arkode_create(&b->problem, options, sens, adjoint, &b->arkode) : SL_MEM_FAIL;
}

/* ARKODE's forward solve has no doses yet: the pool refuses them (sl_pool.c); solver="auto"
   solves them by BDF. */
static int auto_create(const void *model, double *params, const sl_options *options,
                       const sl_sens_options *sens, const sl_adjoint_options *adjoint, void **out)
{
    ode_backend *b = ode_new(model, params, out);
    return b ? sl_auto_create(&b->problem, options, sens, adjoint, &b->automatic) : SL_MEM_FAIL;
}

static int ode_solve(void *solver, double t0, double *y0, const double *sens0, int64_t n_t,
                     const double *tvals, const sl_doses *doses, double *y_out, double *sens_out)
{
    ode_backend *b = solver;
    if (b->arkode) return sl_arkode_solve(b->arkode, t0, y0, sens0, n_t, tvals, y_out, sens_out);
    if (b->automatic)
        return sl_auto_solve_doses(b->automatic, t0, y0, sens0, n_t, tvals, doses, y_out, sens_out);
    return sl_cvodes_solve_doses(b->cvodes, t0, y0, sens0, n_t, tvals, doses, y_out, sens_out);
}

static int ode_backward(void *solver, double t0, int64_t n_t, const double *tvals,
                        const double *grads, double *grad_out, double *lambda_out,
                        double *dose_time, double *dose_amount, double *dose_rate)
{
    ode_backend *b = solver;
    if (b->arkode)
        return sl_arkode_backward(b->arkode, t0, n_t, tvals, grads, grad_out, lambda_out);
    if (b->automatic)
        return sl_auto_backward_doses(b->automatic, t0, n_t, tvals, grads, grad_out, lambda_out,
                                      dose_time, dose_amount, dose_rate);
    return sl_cvodes_backward_doses(b->cvodes, t0, n_t, tvals, grads, grad_out, lambda_out,
                                    dose_time, dose_amount, dose_rate);
}

static int ode_time_derivative(void *solver, int64_t i, double t, const double *y, double *out)
{
    ode_backend *b = solver;
    if (b->problem.rhs(t, y, b->problem.params, out)) return SL_DERIVATIVE_FAIL;
    if (b->cvodes) sl_cvodes_add_infusions(b->cvodes, t, i < 0, out);
    if (b->automatic) sl_auto_add_infusions(b->automatic, t, i < 0, out);
    return 0;
}

static int64_t ode_free_initial_states(const void *model, int64_t *index)
{
    int64_t n = ((const sl_problem *)model)->n_states;
    for (int64_t j = 0; j < n; j++) index[j] = j;
    return n;
}

static const sl_status *ode_status(const void *solver)
{
    const ode_backend *b = solver;
    if (b->automatic) return sl_auto_status(b->automatic);
    return b->arkode ? sl_arkode_status(b->arkode) : sl_cvodes_status(b->cvodes);
}

static void ode_free(void *solver)
{
    ode_backend *b = solver;
    if (!b) return;
    sl_cvodes_free(b->cvodes);
    sl_arkode_free(b->arkode);
    sl_auto_free(b->automatic);
    free(b);
}

const sl_backend sl_cvodes_backend = {
    "an ODE", sizeof(sl_problem), cvodes_create, ode_solve, ode_backward, ode_time_derivative,
    ode_free_initial_states, ode_status, ode_free,
};

const sl_backend sl_arkode_backend = {
    "an ODE", sizeof(sl_problem), arkode_create, ode_solve, ode_backward, ode_time_derivative,
    ode_free_initial_states, ode_status, ode_free,
};

const sl_backend sl_auto_backend = {
    "an ODE", sizeof(sl_problem), auto_create, ode_solve, ode_backward, ode_time_derivative,
    ode_free_initial_states, ode_status, ode_free,
};

/* -- IDAS ------------------------------------------------------------------------------- */

/* x = a^{-1} x for a block of the DAE's consistent y' (a: m x m, column-major, factored in
   place; pivots: m). A singular or non-finite a, or a non-finite x: SL_DERIVATIVE_FAIL. */
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

typedef struct idas_backend {
    sl_idas *solver;
    sl_pool_dae model; /* its params are the pool entry's */
    /* y' of the last solve at t0 and at the output times (IDAS's interpolation): starting
       points of the Newton iteration for the consistent y'. */
    double *yp0, *yp;
    int64_t capacity;
    /* Where each state and equation sits in its block: differential states and equations
       (those with y'), or algebraic ones, numbered from 0 in each. */
    int64_t *state_block, *equation_block, n_differential;
    double *yyp, *res, *jy, *jyp, *dfdt, *matrix, *vector;
    int64_t *pivots;
} idas_backend;

static void idas_free(void *solver)
{
    idas_backend *b = solver;
    if (!b) return;
    sl_idas_free(b->solver);
    free(b->yp0); free(b->yp); free(b->state_block); free(b->equation_block);
    free(b->yyp); free(b->res); free(b->jy); free(b->jyp); free(b->dfdt); free(b->matrix);
    free(b->vector); free(b->pivots);
    free(b);
}

static int idas_create(const void *model, double *params, const sl_options *options,
                       const sl_sens_options *sens, const sl_adjoint_options *adjoint, void **out)
{
    idas_backend *b = calloc(1, sizeof(*b));
    const sl_dae_problem *p;
    int64_t n, j, n_diff_eq = 0, n_alg_eq = 0, n_alg = 0;
    *out = b;
    if (!b) return SL_MEM_FAIL;
    b->model = *(const sl_pool_dae *)model;
    b->model.problem.params = params;
    p = &b->model.problem;
    n = p->n_states;
    b->yp0 = calloc(n, sizeof(double));
    b->state_block = malloc(n * sizeof(int64_t));
    b->equation_block = malloc(n * sizeof(int64_t));
    b->yyp = calloc(2 * n, sizeof(double));
    b->res = calloc(n, sizeof(double));
    b->jy = calloc(p->jy_colptr[n] + 1, sizeof(double));
    b->jyp = calloc(p->jyp_colptr[n] + 1, sizeof(double));
    b->dfdt = calloc(n, sizeof(double));
    b->matrix = calloc(n * n, sizeof(double));
    b->vector = calloc(n, sizeof(double));
    b->pivots = malloc(n * sizeof(int64_t));
    if (!b->yp0 || !b->state_block || !b->equation_block || !b->yyp || !b->res || !b->jy
        || !b->jyp || !b->dfdt || !b->matrix || !b->vector || !b->pivots)
        return SL_MEM_FAIL;
    for (j = 0; j < n; j++) {
        b->state_block[j] = p->id[j] != 0.0 ? b->n_differential++ : n_alg++;
        b->equation_block[j] = p->equation_id[j] != 0.0 ? n_diff_eq++ : n_alg_eq++;
    }
    /* The constraints are the pool's copy in options (IDAS takes them apart). */
    return sl_idas_create(p, options, options->constraints, sens, adjoint, &b->solver);
}

static int idas_solve(void *solver, double t0, double *y0, const double *sens0, int64_t n_t,
                      const double *tvals, const sl_doses *doses, double *y_out, double *sens_out)
{
    idas_backend *b = solver;
    int64_t n = b->model.problem.n_states;
    if (n_t > b->capacity) {
        free(b->yp);
        b->yp = malloc(n_t * n * sizeof(double));
        b->capacity = b->yp ? n_t : 0;
        if (!b->yp) return SL_MEM_FAIL;
    }
    (void)doses; /* the pool refuses doses for a DAE */
    memset(b->yp0, 0, n * sizeof(double)); /* the guess of y'(t0), as DAESolver's default */
    return sl_idas_solve(b->solver, t0, y0, b->yp0, sens0, n_t, tvals, y_out, b->yp, sens_out);
}

static int idas_backward(void *solver, double t0, int64_t n_t, const double *tvals,
                         const double *grads, double *grad_out, double *lambda_out,
                         double *dose_time, double *dose_amount, double *dose_rate)
{
    (void)dose_time; (void)dose_amount; (void)dose_rate;
    return sl_idas_backward(((idas_backend *)solver)->solver, t0, n_t, tvals, grads, grad_out,
                            lambda_out);
}

/* The matrix of block (rows: equations with equation_id != 0 iff row_differential;
   columns: states with id != 0 iff column_differential) of the CSC matrix (colptr, rows,
   values), column-major with as many rows as the block has. */
static void dense_block(const idas_backend *b, const int64_t *colptr, const int64_t *rows,
                        const double *values, int row_differential, int column_differential,
                        double *out)
{
    const sl_dae_problem *p = &b->model.problem;
    int64_t n = p->n_states, m = column_differential ? b->n_differential : n - b->n_differential;
    memset(out, 0, m * m * sizeof(double));
    for (int64_t j = 0; j < n; j++) {
        if ((p->id[j] != 0.0) != column_differential) continue;
        for (int64_t k = colptr[j]; k < colptr[j + 1]; k++)
            if ((p->equation_id[rows[k]] != 0.0) == row_differential)
                out[b->equation_block[rows[k]] + b->state_block[j] * m] = values[k];
    }
}

/* y' consistent with F(t, y, y') = 0 at a consistent y: Newton steps on the differential
   equations for the differential y' (from IDAS's y' there), then the algebraic y' from the
   time derivative of the algebraic equations, F_z,y y' + F_z,t = 0 (index 1: F_z,z is
   nonsingular on the algebraic states). */
static int idas_time_derivative(void *solver, int64_t i, double t, const double *y, double *out)
{
    idas_backend *b = solver;
    const sl_pool_dae *d = &b->model;
    const sl_dae_problem *p = &d->problem;
    int64_t n = p->n_states, nd = b->n_differential, j, k, step;
    double *yp = b->yyp + n;
    memcpy(b->yyp, y, n * sizeof(double));
    memcpy(yp, i < 0 ? b->yp0 : b->yp + i * n, n * sizeof(double));
    for (step = 0; step < d->yp_newton_steps; step++) {
        if (p->res(t, b->yyp, p->params, b->res) || p->jac_yp(t, b->yyp, p->params, b->jyp))
            return SL_DERIVATIVE_FAIL;
        dense_block(b, p->jyp_colptr, p->jyp_rows, b->jyp, 1, 1, b->matrix);
        for (j = 0; j < n; j++)
            if (p->equation_id[j] != 0.0) b->vector[b->equation_block[j]] = b->res[j];
        if (block_solve(nd, b->matrix, b->pivots, b->vector)) return SL_DERIVATIVE_FAIL;
        for (j = 0; j < n; j++)
            if (p->id[j] != 0.0) yp[j] -= b->vector[b->state_block[j]];
    }
    if (nd < n) {
        if (p->jac_y(t, b->yyp, p->params, b->jy) || d->dfdt(t, b->yyp, p->params, b->dfdt))
            return SL_DERIVATIVE_FAIL;
        for (j = 0; j < n; j++)
            if (p->equation_id[j] == 0.0) b->vector[b->equation_block[j]] = -b->dfdt[j];
        for (j = 0; j < n; j++) /* minus F_z,x x' */
            if (p->id[j] != 0.0)
                for (k = p->jy_colptr[j]; k < p->jy_colptr[j + 1]; k++)
                    if (p->equation_id[p->jy_rows[k]] == 0.0)
                        b->vector[b->equation_block[p->jy_rows[k]]] -= b->jy[k] * yp[j];
        dense_block(b, p->jy_colptr, p->jy_rows, b->jy, 0, 0, b->matrix);
        if (block_solve(n - nd, b->matrix, b->pivots, b->vector)) return SL_DERIVATIVE_FAIL;
        for (j = 0; j < n; j++)
            if (p->id[j] == 0.0) yp[j] = b->vector[b->state_block[j]];
    }
    memcpy(out, yp, n * sizeof(double));
    return 0;
}

static int64_t idas_free_initial_states(const void *model, int64_t *index)
{
    const sl_dae_problem *p = &((const sl_pool_dae *)model)->problem;
    int64_t count = 0;
    for (int64_t j = 0; j < p->n_states; j++)
        if (p->id[j] != 0.0) index[count++] = j;
    return count;
}

static const sl_status *idas_status(const void *solver)
{
    return sl_idas_status(((const idas_backend *)solver)->solver);
}

const sl_backend sl_idas_backend = {
    "a DAE", sizeof(sl_pool_dae), idas_create, idas_solve, idas_backward, idas_time_derivative,
    idas_free_initial_states, idas_status, idas_free,
};
