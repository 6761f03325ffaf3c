/* Adjoint by a one-step Runge-Kutta method over a stored forward trajectory; see
   sl_rk_adjoint.h. As the forward solve, ARKODE integrates in tau = t - t0: the trajectory
   is recorded in tau, the backward solve gets t0 and tvals in t, and the kernels are
   called at t0 + tau. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <arkode/arkode_arkstep.h>
#include <arkode/arkode_butcher_dirk.h>
#include <arkode/arkode_erkstep.h>
#include <nvector/nvector_serial.h>

#include "sl_events.h"
#include "sl_internal.h"
#include "sl_linalg.h"
#include "sl_rk_adjoint.h"
#include "sl_schedule.h"

/* STEP(a, Name): the call Name of a's ARKODE stepper, ERKStep (the implicit method takes
   its own steps: see implicit_step). */
#define STEP(a, name) SL_ERK(name)

int sl_arkode_rhs_evals(void *mem, int implicit, long *count)
{
#if SL_ARKODE_GENERIC
    return ARKodeGetNumRhsEvals(mem, implicit, count);
#else
    long explicit_evals;
    return implicit ? ARKStepGetNumRhsEvals(mem, &explicit_evals, count)
                    : ERKStepGetNumRhsEvals(mem, count);
#endif
}

struct sl_rk_adjoint {
    sl_problem problem;
    sl_adjoint_options options;
    sl_status *status;
    double t0; /* of the last backward solve: the origin of tau */
    sl_messages messages; /* SUNDIALS 6's messages, into status (7 uses the context's) */
    /* The forward trajectory: times tau[k], states y[k*n..], derivatives yd[k*n..]. At a
       dose a time is recorded twice (before and after it): interpolation stays within the
       records lo..hi of the interval being integrated, which never straddles a dose. */
    int64_t length, capacity, cursor, lo, hi;
    double *tau, *y, *yd;
    /* Scratch: the interpolated state and kernel values. */
    double *y_at, *jac_work, *dfdp_work;
    /* The backward state z = (lambda, q) and its error weights' absolute parts. */
    void *mem;
    N_Vector z;
    double *atol;
    /* kernels_tau: the time whose J and df/dp jac_work and dfdp_work hold (NaN: none). */
    double kernels_tau;
    /* The implicit method (see implicit_step): its table, the stages' derivatives, the
       stage's right-hand side and solution, the error estimate and weights; the linear
       solver of M = I + gamma J^T, set up at setup_tau (NaN: not set up) and gamma_setup;
       tau_now, where its integration is; newton_rate, the convergence rate of the last
       stage solve's Newton iterations, measured with gamma rate_gamma; solve_partial: the last GMRES solve stopped short
       of its tolerance. */
    int implicit;
    ARKodeButcherTable table;
    N_Vector *stages, stage_rhs, stage_z, error, ewt;
    double **stage_data, *newton_work;
    SUNLinearSolver lambda_solver;
    SUNMatrix lambda_matrix;
    /* For linear_solver dense and band, instead of the two above: M's factors (by
       sl_dense_factor, sl_band_factor), the row exchanges, the band widths of M. */
    double *lu;
    int64_t *pivots, lower, upper;
    N_Vector x_view, b_view, weights_view;
    double setup_tau, gamma_setup, tau_now, rate_gamma;
    int retry_flag, solve_partial;
    double newton_rate;
    /* With infusions z = (lambda, q, Q) has n_extra = n_states more entries, Q' = lambda
       (Q = 0 at the last output time), for the integrals of the costate over infusions
       (see dose_stop); n_extra = 0 otherwise. ARKODE's memory is created for one length
       of z, in ctx. */
    int64_t n_extra;
    SUNContext ctx;
    /* Scratch of the dose gradients: two states and two rhs values, then per dose the
       costate mu_c and Q_c at its start and at its end. */
    double *dose_work;
    int64_t dose_capacity;
    /* Scratch of the events' jumps (problem.n_events > 0). */
    sl_event_work events;
};

#define N(a) ((a)->problem.n_states)
#define DATA(v) N_VGetArrayPointer(v)

static int fail(sl_rk_adjoint *a, int flag)
{
    double tau = NAN;
    char *name = STEP(a, GetReturnFlagName)(flag);
    if (a->implicit) tau = a->tau_now;
    else if (a->mem) STEP(a, GetCurrentTime)(a->mem, &tau);
    sl_status_set(a->status, flag, a->t0 + tau, name);
    free(name);
    return flag;
}

/* The cubic Hermite interpolant of the stored steps at tau (the same accuracy as CVODES'
   default adjoint interpolation). Backward solves query decreasing times, so the search
   starts from the interval of the previous query. */
static void interpolate(sl_rk_adjoint *a, double tau, double *out)
{
    int64_t n = N(a), k = a->cursor, j;
    const double *y0, *y1, *d0, *d1;
    double h, s, h00, h10, h01, h11;
    if (a->length == 1) {
        memcpy(out, a->y, n * sizeof(double));
        return;
    }
    if (k < a->lo) k = a->lo;
    if (k > a->hi - 1) k = a->hi - 1;
    while (k > a->lo && tau < a->tau[k]) k--;
    while (k < a->hi - 1 && tau > a->tau[k + 1]) k++;
    a->cursor = k;
    h = a->tau[k + 1] - a->tau[k];
    s = (tau - a->tau[k]) / h;
    h00 = (1.0 + 2.0 * s) * (1.0 - s) * (1.0 - s);
    h10 = s * (1.0 - s) * (1.0 - s) * h;
    h01 = s * s * (3.0 - 2.0 * s);
    h11 = s * s * (s - 1.0) * h;
    y0 = a->y + k * n; y1 = y0 + n;
    d0 = a->yd + k * n; d1 = d0 + n;
    for (j = 0; j < n; j++) out[j] = h00 * y0[j] + h10 * d0[j] + h01 * y1[j] + h11 * d1[j];
}

int sl_rk_adjoint_forward_state(sl_rk_adjoint *a, double tau, double *out)
{
    if (a->length < 1 || tau < a->tau[0] || tau > a->tau[a->length - 1]) return ARK_ILL_INPUT;
    interpolate(a, tau, out);
    return 0;
}

/* z = (lambda, q): lambda' = -J^T lambda, q' = lambda^T df/dp. */
/* J and df/dp at t0 + tau into jac_work and dfdp_work. They depend on tau only (through
   the stored trajectory), and the implicit method asks for them at one stage time several
   times (residual, stage derivative, linear solve): kept for the last tau. */
static int kernels_at(sl_rk_adjoint *a, double tau)
{
    const sl_problem *p = &a->problem;
    double t = a->t0 + tau;
    int flag;
    if (tau == a->kernels_tau) return 0;
    a->kernels_tau = NAN;
    interpolate(a, tau, a->y_at);
    if ((flag = sl_call_kernel(a->status, N(a), p->jac, "jac", t, a->y_at, p->params, a->jac_work)))
        return flag;
    if (p->n_dparams > 0
        && (flag = sl_call_kernel(a->status, N(a), p->dfdp, "dfdp", t, a->y_at, p->params,
                                  a->dfdp_work)))
        return flag;
    a->kernels_tau = tau;
    return 0;
}

static int rhs(double tau, N_Vector z, N_Vector zdot, void *user_data)
{
    sl_rk_adjoint *a = user_data;
    const sl_problem *p = &a->problem;
    double *lambda = DATA(z), *out = DATA(zdot);
    int flag;
    if ((flag = kernels_at(a, tau))) return flag;
    sl_csc_rmatvec(N(a), p->jac_colptr, p->jac_rows, a->jac_work, lambda, -1.0, out);
    for (int64_t j = 0; j < a->n_extra; j++) out[N(a) + p->n_dparams + j] = lambda[j];
    if (p->n_dparams == 0) return 0;
    sl_csc_rmatvec(p->n_dparams, p->dfdp_colptr, p->dfdp_rows, a->dfdp_work, lambda, 1.0,
                   out + N(a));
    return 0;
}

/* Error weights with the backward tolerances for lambda and the quadrature ones for q
   (weight 0, i.e. no error control, for q when quad_errcon is off). */
static void lambda_weights(const sl_rk_adjoint *a, const double *v, double *w)
{
    for (int64_t j = 0; j < N(a); j++)
        w[j] = 1.0 / (a->options.backward.rtol * fabs(v[j]) + a->atol[j]);
}

static int weights(N_Vector z, N_Vector ewt, void *user_data)
{
    sl_rk_adjoint *a = user_data;
    const double *v = DATA(z);
    double *w = DATA(ewt);
    int64_t j, n = N(a);
    lambda_weights(a, v, w);
    for (j = n; j < n + a->problem.n_dparams + a->n_extra; j++)
        w[j] = a->options.quad_errcon
            ? 1.0 / (a->options.rtol_quad * fabs(v[j]) + a->options.atol_quad) : 0.0;
    return 0;
}

/* -- The implicit method: ESDIRK steps of our own ----------------------------------------
   z' = Jz(tau) z with Jz = [[-J^T, 0], [df/dp^T, 0]] (lambda, then q; with infusions a
   block I for Q' = lambda below, see q_part). The stages are
   (I - h gamma Jz(tau_i)) Z_i = r_i, block lower triangular, so only the lambda block
   M = I + h gamma J^T needs a linear solver and Z_q = r_q + h gamma df/dp^T Z_lambda.
   ARKStep took these steps before, measured slower than CVODES' BDF backward for two
   reasons (POLLU, rtol 1e-8): its error test takes the embedded solution's difference
   as it is, and on the adjoint's quasi-steady stiff components (lambda of POLLU's y16,
   consumed at a rate of 4e11) that difference is large where the L-stable solution is
   right (4347 backward steps for 452 forward; 1412 with that one component's atol
   raised); and z' being linear, it factored M at every stage (6 per step: 55% of the
   time). Here the estimate is filtered, err = (I - h gamma Jz)^{-1} (z - z_embedded)
   (Hairer & Wanner, Solving ODEs II, IV.8), a stage is solved by modified Newton on a
   factorization kept while h gamma changes less than 20%, and the linear algebra of
   dense and band M is our own (sl_linalg.c). benchmarks/README.md has the numbers. */

/* A flag of a kernel or linear solver call as the implicit method returns it: 0, 1 for a
   recoverable failure (the step is tried shorter; retry_flag says what failed, should it
   keep failing) or the negative ARKODE flag fatal. */
static int checked(sl_rk_adjoint *a, int flag, int fatal, int repeated)
{
    if (flag < 0) return fatal;
    if (flag > 0) a->retry_flag = repeated;
    return flag > 0;
}

/* ||v||, WRMS with the weights w over the first m entries. */
static double wrms(int64_t m, const double *v, const double *w)
{
    double sum = 0.0;
    for (int64_t k = 0; k < m; k++) sum += (v[k] * w[k]) * (v[k] * w[k]);
    return sqrt(sum / (double)m);
}

/* GMRES: no matrix to factor, M applied by lambda_times. */
static int iterative(const sl_rk_adjoint *a)
{
    return !a->lambda_matrix && !a->lu;
}

/* M = I + gamma J^T with the J in jac_work into lu, factored. An entry of J outside the
   band widths given is left out of M (the Newton residuals have it: they only converge
   more slowly). */
static int factor_own(sl_rk_adjoint *a, double gamma)
{
    const sl_problem *p = &a->problem;
    int64_t n = N(a), c, k, r, banded = a->lower >= 0;
    memset(a->lu, 0, (banded ? SL_BAND_LD(a->lower, a->upper) : n) * n * sizeof(double));
    for (c = 0; c < n; c++) {
        if (banded) sl_band_column(a->lu, a->lower, a->upper, c)[c] = 1.0;
        else a->lu[c + c * n] = 1.0;
        for (k = p->jac_colptr[c]; k < p->jac_colptr[c + 1]; k++) { /* M(c, r) = gamma J(r, c) */
            r = p->jac_rows[k];
            if (!banded) a->lu[c + r * n] += gamma * a->jac_work[k];
            else if (c - r <= a->lower && r - c <= a->upper)
                sl_band_column(a->lu, a->lower, a->upper, r)[c] += gamma * a->jac_work[k];
        }
    }
    return banded ? sl_band_factor(n, a->lower, a->upper, a->lu, a->pivots)
                  : sl_dense_factor(n, a->lu, a->pivots);
}

/* M = I + gamma J^T with the J in jac_work (a direct solver factors it; GMRES applies it
   by lambda_times, its residual scaled by the error weights w of lambda). */
static int lambda_setup(sl_rk_adjoint *a, double tau, double gamma, const double *w)
{
    const sl_problem *p = &a->problem;
    int flag;
    a->setup_tau = NAN;
    a->gamma_setup = gamma;
    if (a->lu) {
        flag = factor_own(a, gamma);
    } else {
        if (a->lambda_matrix) {
            sl_matrix_fill(a->lambda_matrix, N(a), p->jact_colptr, p->jact_rows, p->jact_perm,
                           a->jac_work, gamma);
            if (SUNMatScaleAddI(1.0, a->lambda_matrix)) return ARK_LSETUP_FAIL;
        } else {
            memcpy(DATA(a->weights_view), w, N(a) * sizeof(double));
        }
        flag = SUNLinSolSetup(a->lambda_solver, a->lambda_matrix);
    }
    if ((flag = checked(a, flag, ARK_LSETUP_FAIL, ARK_CONV_FAILURE))) return flag;
    a->setup_tau = tau;
    a->newton_rate = 1.0; /* unknown for the new M */
    return 0;
}

/* out = (I + gamma J^T) v with J in jac_work (for GMRES). */
static int lambda_times(void *data, N_Vector v, N_Vector out)
{
    sl_rk_adjoint *a = data;
    sl_csc_rmatvec(N(a), a->problem.jac_colptr, a->problem.jac_rows, a->jac_work, DATA(v),
                   a->gamma_setup, DATA(out));
    N_VLinearSum(1.0, v, 1.0, out, out);
    return 0;
}

/* x = M^{-1} b for the M of the last setup (n entries; x and b distinct). GMRES solves to
   5e-3 of the error weights, below what stage_solve asks of a stage (its scaled 2-norm
   is sqrt(n) times the WRMS norm); if it only reduced the residual, x is still a
   correction and solve_partial says so. */
static int lambda_solve(sl_rk_adjoint *a, const double *b, double *x)
{
    int flag;
    if (a->lu) {
        memcpy(x, b, N(a) * sizeof(double));
        if (a->lower >= 0) sl_band_solve(N(a), a->lower, a->upper, a->lu, a->pivots, x);
        else sl_dense_solve(N(a), a->lu, a->pivots, x);
        a->solve_partial = 0;
        return 0;
    }
    N_VSetArrayPointer(x, a->x_view);
    N_VSetArrayPointer((double *)b, a->b_view);
    if (!a->lambda_matrix) N_VConst(0.0, a->x_view); /* GMRES starts from x */
    flag = SUNLinSolSolve(a->lambda_solver, a->lambda_matrix, a->x_view, a->b_view,
                          5e-3 * sqrt((double)N(a)));
    a->solve_partial = flag == SUNLS_RES_REDUCED;
    return checked(a, a->solve_partial ? 0 : flag, ARK_LSOLVE_FAIL, ARK_CONV_FAILURE);
}

/* The rest of x from its lambda part: x_q = b_q + gamma df/dp^T x_lambda with the df/dp
   in dfdp_work, and with infusions x_Q = b_Q + gamma x_lambda (Q' = lambda). */
static void q_part(sl_rk_adjoint *a, double gamma, const double *b, double *x)
{
    const sl_problem *p = &a->problem;
    int64_t n = N(a), k;
    for (k = 0; k < a->n_extra; k++) x[n + p->n_dparams + k] = b[n + p->n_dparams + k] + gamma * x[k];
    if (p->n_dparams == 0) return;
    sl_csc_rmatvec(p->n_dparams, p->dfdp_colptr, p->dfdp_rows, a->dfdp_work, x, gamma, x + n);
    for (k = n; k < n + p->n_dparams; k++) x[k] += b[k];
}

/* The stage x = (I - gamma Jz(tau))^{-1} b (x holds a predictor), w the step's error
   weights, by Newton iterations: residuals with J(tau), corrections by M as set up. With
   M set up at tau and gamma (always for GMRES) and solved to its tolerance, one
   iteration is the solution. With M factored at another tau or gamma (modified Newton)
   or GMRES' partial solves, the iterations stop when the error left (estimated from the
   convergence rate, kept from stage to stage of one gamma as CVODES does) is 1e-2 of the
   weights; when
   they converge slowly (rate > 0.3, or 4 iterations), M is set up at tau; with GMRES,
   10 iterations fail the step (it is tried shorter). */
static int stage_solve(sl_rk_adjoint *a, double tau, double gamma, const double *w,
                       const double *b, double *x)
{
    const sl_problem *p = &a->problem;
    int64_t n = N(a), j;
    double *residual = a->newton_work, *dx = a->newton_work + n, norm, previous = 0.0;
    int flag, iteration, exact;
    if ((flag = checked(a, kernels_at(a, tau), ARK_RHSFUNC_FAIL, ARK_REPTD_RHSFUNC_ERR)))
        return flag;
    if (iterative(a) || isnan(a->setup_tau) || fabs(gamma / a->gamma_setup - 1.0) > 0.2)
        if ((flag = lambda_setup(a, tau, gamma, w))) return flag;
    if (gamma != a->rate_gamma) { /* a rate measured with another gamma says nothing */
        a->newton_rate = 1.0;
        a->rate_gamma = gamma;
    }
    for (iteration = 0;; iteration++) {
        sl_csc_rmatvec(n, p->jac_colptr, p->jac_rows, a->jac_work, x, gamma, residual);
        for (j = 0; j < n; j++) residual[j] = b[j] - x[j] - residual[j];
        if ((flag = lambda_solve(a, residual, dx))) return flag;
        for (j = 0; j < n; j++) x[j] += dx[j];
        exact = a->setup_tau == tau && a->gamma_setup == gamma && !a->solve_partial;
        norm = wrms(n, dx, w);
        /* as CVODES: a rate falls by 0.3 at most per iteration (one exact iteration at a
           stage must not let a later one stop after its first: on a dosed PK model that
           left dL/dka 9e-7 wrong at rtol 1e-10) */
        if (iteration > 0) a->newton_rate = fmax(0.3 * a->newton_rate, norm / previous);
        if (exact || norm == 0.0
            || (a->newton_rate < 1.0 && norm * a->newton_rate / (1.0 - a->newton_rate) <= 1e-2))
            break;
        if (iterative(a) && iteration == 9) return checked(a, 1, 0, ARK_CONV_FAILURE);
        if (!iterative(a) && (iteration == 3 || (iteration > 0 && a->newton_rate > 0.3))
            && (flag = lambda_setup(a, tau, gamma, w)))
            return flag;
        previous = norm;
    }
    q_part(a, gamma, b, x);
    return 0;
}

/* One step of size h from (tau, z), K[0] = Jz(tau) z given: the stages' derivatives into
   K, the solution (the last stage: the table is stiffly accurate) into stage_z, and the
   filtered error estimate's WRMS norm into err. */
static int implicit_step(sl_rk_adjoint *a, double tau, double h, int improve, double *err)
{
    ARKodeButcherTable table = a->table;
    int s = table->stages, i, j;
    int64_t n_z = N(a) + a->problem.n_dparams + a->n_extra, k;
    double gamma = h * table->A[1][1], *const *K = a->stage_data;
    double *r = DATA(a->stage_rhs), *x = DATA(a->stage_z), *e = DATA(a->error);
    const double *w = DATA(a->ewt), *z = DATA(a->z);
    int flag;
    /* Plain loops: SUNDIALS 6.4's fused N_VLinearCombination took 15% of POLLU's time. */
    for (i = 1; i < s; i++) {
        memcpy(r, z, n_z * sizeof(double)); /* r = z + h sum_j A[i][j] K_j */
        for (j = 0; j < i; j++) {
            double c = h * table->A[i][j];
            for (k = 0; k < n_z; k++) r[k] += c * K[j][k];
        }
        /* predictor: the previous stage's derivative */
        for (k = 0; k < n_z; k++) x[k] = r[k] + gamma * K[i - 1][k];
        if ((flag = stage_solve(a, tau + table->c[i] * h, gamma, w, r, x))) return flag;
        for (k = 0; k < n_z; k++) K[i][k] = (x[k] - r[k]) / gamma;
    }
    memset(e, 0, n_z * sizeof(double));
    for (j = 0; j < s; j++) {
        double c = h * (table->b[j] - table->d[j]);
        for (k = 0; k < n_z; k++) e[k] += c * K[j][k];
    }
    /* The filter, solved as a stage at the step's end (GMRES' unfiltered stiff components
       would hold the step to the fastest mode's scale: POLLU 314610 steps); into
       stage_rhs. */
    memset(r, 0, n_z * sizeof(double));
    if ((flag = stage_solve(a, tau + h, gamma, w, e, r))) return flag;
    *err = wrms(n_z, r, w);
    /* Hairer & Wanner's improved estimate for the first step and after a rejection, where
       a jump's fast transient is killed by the step, not resolved: filtered again (for a
       linear problem what their extra evaluation of f amounts to). */
    if (improve && *err > 1.0) {
        memset(e, 0, n_z * sizeof(double));
        if ((flag = stage_solve(a, tau + h, gamma, w, r, e))) return flag;
        *err = wrms(n_z, e, w);
    }
    return 0;
}

/* The ESDIRK 4(3) in 7 stages of Kennedy & Carpenter's ARK4(3)7L[2]SA: L-stable, stiffly
   accurate, a first explicit stage and one diagonal gamma (what implicit_step assumes,
   checked). Measured against ARKODE's other such tables (benchmarks/stiff_adjoint.py at
   the default tolerances, and dL/dka of test_doses.py's dosed PK model at rtol 1e-10):
   the 3rd-order ones take 3-10x the steps; ESDIRK437L2SA 15% fewer on POLLU and 30% on
   Fisher-KPP, but left that dL/dka 1.6e-8 wrong (this table 4.8e-9, ERK 2.3e-9);
   ESDIRK436L2SA 1.3-1.5x the steps; ARK548L2SA (8 stages, order 5) 2.6e-8. */
static int create_implicit(sl_rk_adjoint *a, SUNContext ctx)
{
    const sl_problem *p = &a->problem;
    int64_t n = N(a);
    sl_options transposed = a->options.backward;
    ARKodeButcherTable table;
    int flag, s, i, j;
    a->implicit = 1;
    a->table = table = ARKodeButcherTable_LoadDIRK(ARKODE_ARK437L2SA_DIRK_7_3_4);
    if (!table) return ARK_MEM_FAIL;
    s = table->stages;
    if (table->A[0][0] != 0.0 || !table->d) return ARK_ILL_INPUT;
    for (i = 1; i < s; i++)
        if (table->A[i][i] != table->A[1][1]) return ARK_ILL_INPUT;
    for (j = 0; j < s; j++)
        if (table->b[j] != table->A[s - 1][j]) return ARK_ILL_INPUT;
    a->stages = N_VCloneVectorArray(s, a->z);
    a->stage_rhs = N_VClone(a->z);
    a->stage_z = N_VClone(a->z);
    a->error = N_VClone(a->z);
    a->ewt = N_VClone(a->z);
    a->stage_data = malloc(s * sizeof(double *));
    a->newton_work = malloc(2 * n * sizeof(double));
    a->x_view = N_VNewEmpty_Serial(n, ctx);
    a->b_view = N_VNewEmpty_Serial(n, ctx);
    a->weights_view = N_VNew_Serial(n, ctx);
    if (!a->stages || !a->stage_rhs || !a->stage_z || !a->error || !a->ewt || !a->stage_data
        || !a->newton_work || !a->x_view || !a->b_view || !a->weights_view)
        return ARK_MEM_FAIL;
    for (i = 0; i < s; i++) a->stage_data[i] = DATA(a->stages[i]);
    /* The Jacobian of lambda' = -J^T lambda is -J^T: J's band widths swapped. */
    transposed.upper_bandwidth = a->options.backward.lower_bandwidth;
    transposed.lower_bandwidth = a->options.backward.upper_bandwidth;
    if (transposed.linear_solver == SL_DENSE || transposed.linear_solver == SL_BAND) {
        a->lower = transposed.linear_solver == SL_BAND ? transposed.lower_bandwidth : -1;
        a->upper = transposed.upper_bandwidth;
        a->lu = malloc((a->lower >= 0 ? SL_BAND_LD(a->lower, a->upper) : n) * n * sizeof(double));
        a->pivots = malloc(n * sizeof(int64_t));
        return a->lu && a->pivots ? 0 : ARK_MEM_FAIL;
    }
    if (sl_linear_solver_create(&transposed, n, p->jact_colptr, a->weights_view, ctx,
                                &a->lambda_matrix, &a->lambda_solver))
        return ARK_MEM_FAIL;
    if (!a->lambda_matrix) {
        if ((flag = SUNLinSolSetATimes(a->lambda_solver, a, lambda_times))) return ARK_LSETUP_FAIL;
        if ((flag = SUNLinSolSetScalingVectors(a->lambda_solver, a->weights_view, a->weights_view)))
            return ARK_LSETUP_FAIL;
    }
    if ((flag = SUNLinSolInitialize(a->lambda_solver))) return ARK_LINIT_FAIL;
    return 0;
}

/* The backward stepper over z = (lambda, q) and n_extra more entries (a->n_extra). */
static int create_stepper(sl_rk_adjoint *a)
{
    const sl_adjoint_options *options = &a->options;
    int flag;
    a->z = N_VNew_Serial(N(a) + a->problem.n_dparams + a->n_extra, a->ctx);
    if (!a->z) return fail(a, ARK_MEM_FAIL);
    N_VConst(0.0, a->z);
    /* Fused vector operations: a stage's linear combination in one pass (see sl_arkode.c;
       ERK forward + ERK backward on Lotka-Volterra: 0.91x the time, DIRK unchanged). */
    if (N_VEnableFusedOps_Serial(a->z, 1)) return fail(a, ARK_MEM_FAIL);
    if (options->backward.method == SL_DIRK) return (flag = create_implicit(a, a->ctx)) ? fail(a, flag) : 0;
    a->mem = ERKStepCreate(rhs, 0.0, a->z, a->ctx);
    if (!a->mem) return fail(a, ARK_MEM_FAIL);
#if !SL_SUNDIALS_7
    ERKStepSetErrHandlerFn(a->mem, sl_error_handler_6, &a->messages);
#endif
    /* Dormand-Prince 5(4): the usual choice at moderate to tight tolerances; higher-order
       tables (Verner 6(5), Fehlberg 8(7)) measured slower and less accurate here, as the
       cubic interpolation of the forward solution limits what a higher order can gain. */
    if ((flag = ERKStepSetTableNum(a->mem, ARKODE_DORMAND_PRINCE_7_4_5))) return fail(a, flag);
    if ((flag = STEP(a, SetUserData)(a->mem, a))) return fail(a, flag);
    if ((flag = STEP(a, WFtolerances)(a->mem, weights))) return fail(a, flag);
    if ((flag = STEP(a, SetMaxNumSteps)(a->mem, options->backward.max_steps))) return fail(a, flag);
    return 0;
}

static void free_stepper(sl_rk_adjoint *a)
{
    N_Vector vectors[] = {a->stage_rhs, a->stage_z, a->error, a->ewt, a->x_view, a->b_view,
                          a->weights_view, a->z};
    if (a->mem) STEP(a, Free)(&a->mem);
    if (a->stages) N_VDestroyVectorArray(a->stages, a->table->stages);
    if (a->table) ARKodeButcherTable_Free(a->table);
    for (size_t k = 0; k < sizeof(vectors) / sizeof(vectors[0]); k++)
        if (vectors[k]) N_VDestroy(vectors[k]);
    free(a->stage_data);
    free(a->newton_work);
    free(a->lu);
    free(a->pivots);
    if (a->lambda_solver) SUNLinSolFree(a->lambda_solver);
    if (a->lambda_matrix) SUNMatDestroy(a->lambda_matrix);
    a->mem = NULL;
    a->table = NULL;
    a->stages = NULL;
    a->stage_rhs = a->stage_z = a->error = a->ewt = NULL;
    a->x_view = a->b_view = a->weights_view = a->z = NULL;
    a->stage_data = NULL;
    a->newton_work = a->lu = NULL;
    a->pivots = NULL;
    a->lambda_solver = NULL;
    a->lambda_matrix = NULL;
    a->implicit = 0;
}

/* A stepper for z with n_extra more entries than lambda and q, created again if the
   current one has another length. */
static int use_extra_entries(sl_rk_adjoint *a, int64_t n_extra)
{
    if (n_extra == a->n_extra) return 0;
    free_stepper(a);
    a->n_extra = n_extra;
    return create_stepper(a);
}

int sl_rk_adjoint_create(const sl_problem *problem, const sl_adjoint_options *options,
                         SUNContext ctx, sl_status *status, sl_rk_adjoint **out)
{
    sl_rk_adjoint *a = calloc(1, sizeof(*a));
    int64_t n = problem->n_states;
    *out = a;
    if (!a) return ARK_MEM_FAIL;
    a->problem = *problem;
    a->options = *options;
    a->status = status;
    a->ctx = ctx;
    a->messages.status = status;
    a->messages.t0 = &a->t0;
    a->y_at = calloc(n, sizeof(double));
    a->atol = malloc(n * sizeof(double));
    a->jac_work = calloc(problem->jac_colptr[n] + 1, sizeof(double));
    a->dfdp_work = calloc(problem->dfdp_colptr[problem->n_dparams] + 1, sizeof(double));
    if (!a->y_at || !a->atol || !a->jac_work || !a->dfdp_work
        || (problem->n_events > 0 && sl_event_work_init(&a->events, problem, 0)))
        return fail(a, ARK_MEM_FAIL);
    memcpy(a->atol, options->backward.atol, n * sizeof(double));
    return create_stepper(a);
}

void sl_rk_adjoint_free(sl_rk_adjoint *a)
{
    if (!a) return;
    free_stepper(a);
    free(a->tau);
    free(a->y);
    free(a->yd);
    free(a->y_at);
    free(a->atol);
    free(a->jac_work);
    free(a->dfdp_work);
    free(a->dose_work);
    sl_event_work_free(&a->events);
    free(a);
}

int64_t sl_rk_adjoint_length(const sl_rk_adjoint *a) { return a->length; }

void sl_rk_adjoint_clear(sl_rk_adjoint *a)
{
    a->length = 0;
    a->cursor = 0;
}

int sl_rk_adjoint_record(sl_rk_adjoint *a, double tau, const double *y, const double *yd)
{
    int64_t n = N(a);
    if (a->length == a->capacity) {
        int64_t capacity = a->capacity ? 2 * a->capacity : 256;
        double *tt = realloc(a->tau, capacity * sizeof(double));
        double *yy = tt ? realloc(a->y, capacity * n * sizeof(double)) : NULL;
        double *dd = yy ? realloc(a->yd, capacity * n * sizeof(double)) : NULL;
        if (tt) a->tau = tt;
        if (yy) a->y = yy;
        if (dd) a->yd = dd;
        if (!dd) return ARK_MEM_FAIL;
        a->capacity = capacity;
    }
    a->tau[a->length] = tau;
    memcpy(a->y + a->length * n, y, n * sizeof(double));
    memcpy(a->yd + a->length * n, yd, n * sizeof(double));
    a->length++;
    a->lo = 0;
    a->hi = a->length - 1;
    return 0;
}

/* The last record at or before tau, and the first at or after it (binary searches). */
static int64_t last_record_at_or_before(const sl_rk_adjoint *a, double tau)
{
    int64_t lo = 0, hi = a->length - 1;
    while (lo < hi) {
        int64_t mid = hi - (hi - lo) / 2;
        if (a->tau[mid] <= tau) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

static int64_t first_record_at_or_after(const sl_rk_adjoint *a, double tau)
{
    int64_t lo = 0, hi = a->length - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (a->tau[mid] >= tau) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

/* One backward solve: the adjoint, where its counts go, and the step size the previous
   interval ended with (0: let ARKODE estimate the first); the schedule of the forward
   solve (NULL: none), its last output time, and where dose_stop puts the doses'
   gradients (see sl_rk_adjoint_scheduled_gradients). */
typedef struct sweep {
    sl_rk_adjoint *a;
    sl_stats *stats;
    double h;
    const sl_schedule *schedule;
    double t_last;
    double *dose_time, *dose_amount;
    double *mu_start, *mu_end, *q_start, *q_end;
} sweep;

/* The records an interval from t_start back to t_end interpolates: after a dose at t_end,
   before one at t_start. */
static void interval_records(sl_rk_adjoint *a, double t_start, double t_end)
{
    a->lo = last_record_at_or_before(a, t_end - a->t0);
    a->hi = first_record_at_or_after(a, t_start - a->t0);
    if (a->hi <= a->lo) a->hi = a->lo + 1 < a->length ? a->lo + 1 : a->lo;
    a->kernels_tau = NAN; /* at a dose time, J and df/dp of the other side's records */
}

/* Integrate z from t_start (where it was just set) to t_end, stopping exactly there and
   starting with the step size the previous interval proposed. */
static int integrate(void *data, double t_start, double t_end)
{
    sweep *w = data;
    sl_rk_adjoint *a = w->a;
    double tret, tau_end = t_end - a->t0;
    long steps[2], evals[2], fails[2];
    int flag;
    interval_records(a, t_start, t_end);
    if ((flag = STEP(a, SetInitStep)(a->mem, w->h))) return fail(a, flag);
    if ((flag = STEP(a, Reset)(a->mem, t_start - a->t0, a->z))) return fail(a, flag);
    if ((flag = STEP(a, SetStopTime)(a->mem, tau_end))) return fail(a, flag);
    STEP(a, GetNumSteps)(a->mem, &steps[0]);
    sl_arkode_rhs_evals(a->mem, a->implicit, &evals[0]);
    STEP(a, GetNumErrTestFails)(a->mem, &fails[0]);
    flag = STEP(a, Evolve)(a->mem, tau_end, a->z, &tret, ARK_NORMAL);
    STEP(a, GetNumSteps)(a->mem, &steps[1]);
    sl_arkode_rhs_evals(a->mem, a->implicit, &evals[1]);
    STEP(a, GetNumErrTestFails)(a->mem, &fails[1]);
    w->stats->steps += steps[1] - steps[0];
    w->stats->rhs_evals += evals[1] - evals[0];
    w->stats->error_test_fails += fails[1] - fails[0];
    if (flag < 0) return fail(a, flag);
    STEP(a, GetCurrentStep)(a->mem, &w->h);
    return 0;
}

/* A first step for an interval: 1% of the time scale ||z|| / ||z'|| (the whole interval
   if z or z' is 0), but at least 1e-8 of the interval: that scale is the fastest mode's,
   which the L-stable method need not resolve. */
static double first_step(sl_rk_adjoint *a, double span)
{
    int64_t n_z = N(a) + a->problem.n_dparams + a->n_extra;
    const double *w = DATA(a->ewt);
    double size = wrms(n_z, DATA(a->z), w), rate = wrms(n_z, DATA(a->stages[0]), w);
    double h = size > 0.0 && rate > 0.0 ? 0.01 * size / rate : fabs(span);
    return copysign(fmin(fmax(h, 1e-8 * fabs(span)), fabs(span)), span);
}

/* The backward problem from t_start to t_end < t_start by implicit steps, stopping
   exactly at t_end, starting with the step the previous interval proposed. The step size
   follows the error estimate (safety 0.9, between 0.1x and 10x per step, unchanged for
   growths below 1.5x so that M stays factored). The steps are counted in s, the time since
   t_start, which resolves steps far shorter than tau's spacing at t_start: a jump can
   excite a mode too fast for that (POLLU at rtol 1e-12: 4e11, at tau = 60). */
static int implicit_integrate(void *data, double t_start, double t_end)
{
    sweep *sw = data;
    sl_rk_adjoint *a = sw->a;
    double tau_start = t_start - a->t0, span = t_end - t_start, s = 0.0, h = sw->h;
    double step, err, factor;
    int stages = a->table->stages, fails = 0, last, flag;
    long steps = 0;
    interval_records(a, t_start, t_end);
    a->tau_now = tau_start;
    if (rhs(tau_start, a->z, a->stages[0], a)) return fail(a, ARK_RHSFUNC_FAIL);
    sw->stats->rhs_evals++;
    weights(a->z, a->ewt, a);
    if (h == 0.0) h = first_step(a, span);
    while (s != span) {
        if (steps >= a->options.backward.max_steps) return fail(a, ARK_TOO_MUCH_WORK);
        last = fabs(h) >= fabs(span - s);
        step = last ? span - s : h;
        flag = implicit_step(a, tau_start + s, step, steps == 0 || fails > 0, &err);
        if (flag < 0) return fail(a, flag);
        sw->stats->rhs_evals += stages - 1;
        if (flag > 0) err = INFINITY; /* a recoverable failure: a shorter step */
        if (err <= 1.0) {
            s = last ? span : s + step;
            a->tau_now = tau_start + s;
            N_VScale(1.0, a->stage_z, a->z);
            N_VScale(1.0, a->stages[stages - 1], a->stages[0]); /* first same as last */
            weights(a->z, a->ewt, a);
            sw->stats->steps++;
            steps++;
            fails = 0;
        } else if (++fails == 30) {
            return fail(a, flag > 0 ? a->retry_flag : ARK_ERR_FAILURE);
        } else {
            sw->stats->error_test_fails++;
        }
        factor = err == 0.0 ? 10.0 : fmin(10.0, fmax(0.1, 0.9 * pow(err, -1.0 / (a->table->p + 1))));
        if (factor >= 1.0 && factor <= 1.5) factor = 1.0;
        /* after a step cut short by t_end, keep the longer step for the next interval */
        h = last && err <= 1.0 && factor >= 1.0 && fabs(h) > fabs(step * factor) ? h : step * factor;
        if (fabs(h) <= 4.0 * DBL_EPSILON * fabs(s)) return fail(a, ARK_ERR_FAILURE);
    }
    sw->h = h;
    return 0;
}

/* At stop k of the schedule, with lambda = -mu just after it (before the jump of an
   output there): a bolus k' into c gets dL/da = mu_c and
   dL/dtau = mu^T (f(tau, y+ - a e_c) - f(tau, y+)), y+ the state after all doses at tau
   (moving one bolus later keeps the state without it on [tau, tau + dtau]; the infusion
   rates cancel); an infusion records mu_c and Q_c at its start and its end. After
   tvals[-1], mu = 0. */
static int dose_stop(void *data, int64_t k)
{
    sweep *w = data;
    sl_rk_adjoint *a = w->a;
    const sl_schedule *sc = w->schedule;
    const sl_problem *p = &a->problem;
    int64_t n = N(a), d, j;
    double t = sc->stops[k], *lambda = DATA(a->z), *q = lambda + n + p->n_dparams;
    double *y_minus = a->dose_work, *f_minus = y_minus + n, *f_plus = f_minus + n;
    const double *y_plus = a->y + last_record_at_or_before(a, t - a->t0) * n;
    int flag, f_plus_known = 0;
    for (d = 0; d < sc->n_doses; d++) {
        int64_t c = sc->state[d];
        if (sc->rate[d] > 0.0) {
            if (sc->time[d] == t) w->mu_start[d] = -lambda[c], w->q_start[d] = q[c];
            if (sc->end[d] == t) w->mu_end[d] = -lambda[c], w->q_end[d] = q[c];
            continue;
        }
        if (sc->time[d] != t || t >= w->t_last) continue; /* mu = 0 from the last output on */
        w->dose_amount[d] = -lambda[c];
        if (!f_plus_known) {
            if ((flag = sl_call_kernel(a->status, n, p->rhs, "rhs", t, y_plus, p->params, f_plus)))
                return flag;
            f_plus_known = 1;
        }
        memcpy(y_minus, y_plus, n * sizeof(double));
        y_minus[c] -= sc->amount[d];
        if ((flag = sl_call_kernel(a->status, n, p->rhs, "rhs", t, y_minus, p->params, f_minus)))
            return flag;
        w->dose_time[d] = 0.0;
        for (j = 0; j < n; j++) w->dose_time[d] -= lambda[j] * (f_minus[j] - f_plus[j]);
    }
    return 0;
}

/* At stop k of the schedule, the events that fired there, the last first: lambda and q
   jump from after each to before it (sl_event_adjoint_jump), with the states and rhs
   values recorded before (record - 1) and after it (record). */
static int event_stop(sweep *w, int64_t k)
{
    sl_rk_adjoint *a = w->a;
    const sl_schedule *sc = w->schedule;
    int64_t n = N(a), m;
    double t = sc->stops[k], *lambda = DATA(a->z);
    for (m = sc->n_fired - 1; m >= 0; m--) {
        int64_t r = sc->fired_record[m];
        int flag;
        if (sc->fired_time[m] != t) continue;
        flag = sl_event_adjoint_jump(&a->events, &a->problem, a->status, sc->fired_event[m], t,
                                     a->y + (r - 1) * n, a->yd + (r - 1) * n, a->yd + r * n,
                                     lambda, lambda + n);
        if (flag == SL_GRAZING) return flag;
        if (flag) return sl_report(a->status, ARK_RHSFUNC_FAIL, t, "ARK_RHSFUNC_FAIL", "the model's "
                                   "%s failed (a non-finite value, or undefined) at an event",
                                   a->status->kernel);
    }
    return 0;
}

/* The jumps at stop k of the schedule: the doses' gradients, then the events' jumps. */
static int jump_stop(void *data, int64_t k)
{
    int flag = dose_stop(data, k);
    return flag ? flag : event_stop(data, k);
}

static int sweep_backward(sl_rk_adjoint *a, sweep *w, double t0, int64_t n_t,
                          const double *tvals, const double *grads, double scale,
                          double *grad_out, double *lambda_out)
{
    int64_t n = N(a);
    const sl_schedule *sc = w->schedule;
    sl_backward_interval interval = a->implicit ? implicit_integrate : integrate;
    int flag;
    if (a->length < 1 || a->tau[0] > 0.0 || a->tau[a->length - 1] < tvals[n_t - 1] - t0) {
        sl_status_set(a->status, ARK_ILL_INPUT, t0, "ARK_ILL_INPUT");
        return ARK_ILL_INPUT;
    }
    if ((flag = use_extra_entries(a, sc && sc->has_infusions ? n : 0))) return flag;
    a->t0 = t0;
    a->cursor = a->length - 1;
    a->kernels_tau = a->setup_tau = NAN; /* the kernels' values belong to an earlier solve */
    N_VConst(0.0, a->z);
    if (sc && sc->n_stops > 0)
        flag = sl_scheduled_sweep(w, interval, jump_stop, sc->n_stops, sc->stops, n, DATA(a->z),
                                  t0, n_t, tvals, grads, scale);
    else
        flag = sl_adjoint_sweep(w, interval, n, DATA(a->z), t0, n_t, tvals, grads, scale);
    if (flag) return flag; /* lo..hi stay those of the interval that failed */
    a->lo = 0;
    a->hi = a->length - 1;
    memcpy(lambda_out, DATA(a->z), n * sizeof(double));
    memcpy(grad_out, DATA(a->z) + n, a->problem.n_dparams * sizeof(double));
    return 0;
}

int sl_rk_adjoint_gradients(sl_rk_adjoint *a, double t0, int64_t n_t, const double *tvals,
                            const double *grads, double *grad_out, double *lambda_out,
                            sl_stats *stats)
{
    return sl_rk_adjoint_scheduled_gradients(a, t0, n_t, tvals, grads, NULL, grad_out,
                                             lambda_out, NULL, NULL, NULL, stats);
}

/* Per dose d (n_doses), the scratch of dose_stop: 3 n_states values, then 6 per dose. */
static int reserve_dose_work(sl_rk_adjoint *a, int64_t n_doses)
{
    int64_t size = 3 * N(a) + 6 * n_doses;
    double *grown;
    if (size <= a->dose_capacity) return 0;
    if (!(grown = realloc(a->dose_work, size * sizeof(double)))) return ARK_MEM_FAIL;
    a->dose_work = grown;
    a->dose_capacity = size;
    return 0;
}

int sl_rk_adjoint_scheduled_gradients(sl_rk_adjoint *a, double t0, int64_t n_t,
                                      const double *tvals, const double *grads,
                                      const sl_schedule *schedule, double *grad_out,
                                      double *lambda_out, double *dose_time,
                                      double *dose_amount, double *dose_rate, sl_stats *stats)
{
    int64_t n_doses = schedule ? schedule->n_doses : 0, d;
    double scale = sl_grads_scale(n_t * N(a), grads), *work;
    sweep w = {a, stats, 0.0, schedule, tvals[n_t - 1], NULL, NULL, NULL, NULL, NULL, NULL};
    int flag;
    if (reserve_dose_work(a, n_doses)) {
        sl_status_set(a->status, ARK_MEM_FAIL, t0, "ARK_MEM_FAIL");
        return ARK_MEM_FAIL;
    }
    work = a->dose_work + 3 * N(a);
    w.dose_time = work, w.dose_amount = work + n_doses, w.mu_start = work + 2 * n_doses;
    w.mu_end = work + 3 * n_doses, w.q_start = work + 4 * n_doses, w.q_end = work + 5 * n_doses;
    for (d = 0; d < 6 * n_doses; d++) work[d] = 0.0;
    flag = sweep_backward(a, &w, t0, n_t, tvals, grads, scale, grad_out, lambda_out);
    if (flag) return flag;
    if ((flag = sl_scale_gradient(a->status, t0, scale, N(a), lambda_out))
        || (flag = sl_scale_gradient(a->status, t0, scale, a->problem.n_dparams, grad_out)))
        return flag;
    /* An infusion of a at rate r into c over [tau, e), e = tau + a / r, adds
       integral_tau^e r mu_c dt to L's change, so dL/dtau = r (mu_c(e) - mu_c(tau)),
       dL/da = mu_c(e), dL/dr = integral_tau^e mu_c dt - (a / r) mu_c(e), with
       integral_tau^e mu_c dt = Q_c(tau) - Q_c(e). A bolus's rate has no derivative. */
    for (d = 0; d < n_doses; d++) {
        double r = schedule->rate[d], rate_gradient = NAN;
        if (r > 0.0) {
            w.dose_time[d] = r * (w.mu_end[d] - w.mu_start[d]);
            w.dose_amount[d] = w.mu_end[d];
            rate_gradient = scale * ((w.q_start[d] - w.q_end[d])
                                     - schedule->amount[d] / r * w.mu_end[d]);
            if (!isfinite(rate_gradient))
                return sl_report(a->status, SL_OVERFLOW, t0, "SL_OVERFLOW",
                                 "a dose rate's gradient overflows float64: scale the loss down");
        }
        if (dose_rate) dose_rate[d] = rate_gradient;
    }
    if ((flag = sl_scale_gradient(a->status, t0, scale, n_doses, w.dose_time))
        || (flag = sl_scale_gradient(a->status, t0, scale, n_doses, w.dose_amount)))
        return flag;
    if (dose_time) memcpy(dose_time, w.dose_time, n_doses * sizeof(double));
    if (dose_amount) memcpy(dose_amount, w.dose_amount, n_doses * sizeof(double));
    return 0;
}
