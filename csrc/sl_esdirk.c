/* ESDIRK steps of our own for the Runge-Kutta adjoint's implicit backward (sl_esdirk.h).
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

#include <float.h>
#include <math.h>
#include <stdio.h> /* arkode_butcher.h needs FILE */
#include <stdlib.h>
#include <string.h>

#include <arkode/arkode_butcher_dirk.h>
#include <nvector/nvector_serial.h>

#include "sl_esdirk.h"
#include "sl_linalg.h"

/* The stepper: the system and options given; its table, the stages' derivatives, the
   stage's right-hand side and solution, the error estimate and weights; the linear solver
   of M = I + gamma J^T, set up at setup_tau (NaN: not set up) and gamma_setup; tau_now,
   where its integration is; newton_rate, the convergence rate of the last stage solve's
   Newton iterations, measured with gamma rate_gamma; solve_partial: the last GMRES solve
   stopped short of its tolerance. */
struct sl_esdirk {
    sl_esdirk_system system;
    sl_options options;
    N_Vector z;
    ARKodeButcherTable table;
    N_Vector *stages, stage_rhs, stage_z, error, ewt;
    double **stage_data, *newton_work;
    SUNLinearSolver lambda_solver;
    SUNMatrix lambda_matrix;
    /* For linear_solver dense and band, instead of the two above: M's factors (by
       sl_dense_factor, sl_band_factor), the row exchanges, the band widths of M (lower
       -1: dense). */
    double *lu;
    int64_t *pivots, lower, upper;
    N_Vector x_view, b_view, weights_view;
    double setup_tau, gamma_setup, tau_now, rate_gamma;
    int retry_flag, solve_partial;
    double newton_rate;
    /* The stage derivatives of the last step taken (all but the last, which is K[0]:
       stages - 1 rows of n_z), of size previous_h (0: none in this interval), which ended
       where the integration is; for the predictors (see predict). */
    double *previous, previous_h;
    /* Stage i's predictor: the weights predictor_weight[i] of the derivatives
       predictor_source[i], for the step sizes predictor_h and predictor_previous_h. */
    const double *predictor_source[8][3];
    double predictor_weight[8][3], predictor_h, predictor_previous_h;
};

#define N(d) ((d)->system.problem->n_states)
#define DATA(v) N_VGetArrayPointer(v)

/* A flag of a kernel or linear solver call as the implicit method returns it: 0, 1 for a
   recoverable failure (the step is tried shorter; retry_flag says what failed, should it
   keep failing) or the negative ARKODE flag fatal. */
static int checked(sl_esdirk *dirk, int flag, int fatal, int repeated)
{
    if (flag < 0) return fatal;
    if (flag > 0) dirk->retry_flag = repeated;
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
static int iterative(const sl_esdirk *dirk)
{
    return !dirk->lambda_matrix && !dirk->lu;
}

/* M = I + gamma J^T with the J in system.jac into lu, factored. An entry of J outside the
   band widths given is left out of M (the Newton residuals have it: they only converge
   more slowly). */
static int factor_own(sl_esdirk *dirk, double gamma)
{
    const sl_problem *p = dirk->system.problem;
    int64_t n = N(dirk), c, k, r, banded = dirk->lower >= 0;
    memset(dirk->lu, 0, (banded ? SL_BAND_LD(dirk->lower, dirk->upper) : n) * n * sizeof(double));
    for (c = 0; c < n; c++) {
        if (banded) sl_band_column(dirk->lu, dirk->lower, dirk->upper, c)[c] = 1.0;
        else dirk->lu[c + c * n] = 1.0;
        for (k = p->jac_colptr[c]; k < p->jac_colptr[c + 1]; k++) { /* M(c, r) = gamma J(r, c) */
            r = p->jac_rows[k];
            if (!banded) dirk->lu[c + r * n] += gamma * dirk->system.jac[k];
            else if (c - r <= dirk->lower && r - c <= dirk->upper)
                sl_band_column(dirk->lu, dirk->lower, dirk->upper, r)[c]
                    += gamma * dirk->system.jac[k];
        }
    }
    return banded ? sl_band_factor(n, dirk->lower, dirk->upper, dirk->lu, dirk->pivots)
                  : sl_dense_factor(n, dirk->lu, dirk->pivots);
}

/* M = I + gamma J^T with the J in system.jac (a direct solver factors it; GMRES applies it
   by lambda_times, its residual scaled by the error weights w of lambda). */
static int lambda_setup(sl_esdirk *dirk, double tau, double gamma, const double *w)
{
    const sl_problem *p = dirk->system.problem;
    int flag;
    dirk->setup_tau = NAN;
    dirk->gamma_setup = gamma;
    if (dirk->lu) {
        flag = factor_own(dirk, gamma);
    } else {
        if (dirk->lambda_matrix) {
            sl_matrix_fill(dirk->lambda_matrix, N(dirk), p->jact_colptr, p->jact_rows, p->jact_perm,
                           dirk->system.jac, gamma);
            if (SUNMatScaleAddI(1.0, dirk->lambda_matrix)) return ARK_LSETUP_FAIL;
        } else {
            memcpy(DATA(dirk->weights_view), w, N(dirk) * sizeof(double));
        }
        flag = SUNLinSolSetup(dirk->lambda_solver, dirk->lambda_matrix);
    }
    if ((flag = checked(dirk, flag, ARK_LSETUP_FAIL, ARK_CONV_FAILURE))) return flag;
    dirk->setup_tau = tau;
    dirk->newton_rate = 1.0; /* unknown for the new M */
    return 0;
}

/* out = (I + gamma J^T) v with J in system.jac (for GMRES). */
static int lambda_times(void *data, N_Vector v, N_Vector out)
{
    sl_esdirk *dirk = data;
    const sl_problem *p = dirk->system.problem;
    sl_csc_rmatvec(N(dirk), p->jac_colptr, p->jac_rows, dirk->system.jac, DATA(v),
                   dirk->gamma_setup, DATA(out));
    N_VLinearSum(1.0, v, 1.0, out, out);
    return 0;
}

/* x = M^{-1} b for the M of the last setup (n entries; x and b distinct). GMRES solves to
   5e-3 of the error weights, below what stage_solve asks of a stage (its scaled 2-norm
   is sqrt(n) times the WRMS norm); if it only reduced the residual, x is still a
   correction and solve_partial says so. */
static int lambda_solve(sl_esdirk *dirk, const double *b, double *x)
{
    int flag;
    if (dirk->lu) {
        memcpy(x, b, N(dirk) * sizeof(double));
        if (dirk->lower >= 0)
            sl_band_solve(N(dirk), dirk->lower, dirk->upper, dirk->lu, dirk->pivots, x);
        else sl_dense_solve(N(dirk), dirk->lu, dirk->pivots, x);
        dirk->solve_partial = 0;
        return 0;
    }
    N_VSetArrayPointer(x, dirk->x_view);
    N_VSetArrayPointer((double *)b, dirk->b_view);
    if (!dirk->lambda_matrix) N_VConst(0.0, dirk->x_view); /* GMRES starts from x */
    flag = SUNLinSolSolve(dirk->lambda_solver, dirk->lambda_matrix, dirk->x_view, dirk->b_view,
                          5e-3 * sqrt((double)N(dirk)));
    dirk->solve_partial = flag == SUNLS_RES_REDUCED;
    return checked(dirk, dirk->solve_partial ? 0 : flag, ARK_LSOLVE_FAIL, ARK_CONV_FAILURE);
}

/* The rest of x from its lambda part: x_q = b_q + gamma df/dp^T x_lambda with the df/dp
   in system.dfdp, and with infusions x_Q = b_Q + gamma x_lambda (Q' = lambda). */
static void q_part(sl_esdirk *dirk, double gamma, const double *b, double *x)
{
    const sl_problem *p = dirk->system.problem;
    int64_t n = N(dirk), k;
    for (k = 0; k < dirk->system.n_extra; k++)
        x[n + p->n_dparams + k] = b[n + p->n_dparams + k] + gamma * x[k];
    if (p->n_dparams == 0) return;
    sl_csc_rmatvec(p->n_dparams, p->dfdp_colptr, p->dfdp_rows, dirk->system.dfdp, x, gamma, x + n);
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
static int stage_solve(sl_esdirk *dirk, double tau, double gamma, const double *w,
                       const double *b, double *x)
{
    const sl_problem *p = dirk->system.problem;
    int64_t n = N(dirk), j;
    double *residual = dirk->newton_work, *dx = dirk->newton_work + n, norm, previous = 0.0;
    int flag, iteration, exact;
    if ((flag = checked(dirk, dirk->system.kernels(dirk->system.data, tau), ARK_RHSFUNC_FAIL,
                        ARK_REPTD_RHSFUNC_ERR)))
        return flag;
    if (iterative(dirk) || isnan(dirk->setup_tau) || fabs(gamma / dirk->gamma_setup - 1.0) > 0.2)
        if ((flag = lambda_setup(dirk, tau, gamma, w))) return flag;
    if (gamma != dirk->rate_gamma) { /* a rate measured with another gamma says nothing */
        dirk->newton_rate = 1.0;
        dirk->rate_gamma = gamma;
    }
    for (iteration = 0;; iteration++) {
        sl_csc_rmatvec(n, p->jac_colptr, p->jac_rows, dirk->system.jac, x, gamma, residual);
        for (j = 0; j < n; j++) residual[j] = b[j] - x[j] - residual[j];
        if ((flag = lambda_solve(dirk, residual, dx))) return flag;
        for (j = 0; j < n; j++) x[j] += dx[j];
        exact = dirk->setup_tau == tau && dirk->gamma_setup == gamma && !dirk->solve_partial;
        norm = wrms(n, dx, w);
        /* as CVODES: a rate falls by 0.3 at most per iteration (one exact iteration at a
           stage must not let a later one stop after its first: on a dosed PK model that
           left dL/dka 9e-7 wrong at rtol 1e-10) */
        if (iteration > 0) dirk->newton_rate = fmax(0.3 * dirk->newton_rate, norm / previous);
        if (exact || norm == 0.0
            || (dirk->newton_rate < 1.0
                && norm * dirk->newton_rate / (1.0 - dirk->newton_rate) <= 1e-2))
            break;
        if (iterative(dirk) && iteration == 9) return checked(dirk, 1, 0, ARK_CONV_FAILURE);
        if (!iterative(dirk) && (iteration == 3 || (iteration > 0 && dirk->newton_rate > 0.3))
            && (flag = lambda_setup(dirk, tau, gamma, w)))
            return flag;
        previous = norm;
    }
    q_part(dirk, gamma, b, x);
    return 0;
}

/* Stage i's predicted derivative into out: the quadratic through the 3 known derivatives
   nearest it in time, of this step's earlier stages and the last step's (smooth in time
   once the jump's transient has passed). The Newton iterations stop at 1e-2 of the
   error weights, so the predictor decides whether one iteration is enough: Newton
   iterations per stage solve (filters included) on POLLU at rtol 1e-8 (Fisher-KPP):
   with the previous stage's derivative 1.70 (1.77), from this step's stages only 1.53
   (1.43), this 1.43 (1.24); through 2, 4 or 5 derivatives 1.53, 1.48, 1.53. Not for
   GMRES (which solves each stage to its own tolerance): there it left POLLU's dL/dy0
   4e-6 wrong (the previous stage's derivative: 1e-7), a cause not found yet. */
static void predict(sl_esdirk *dirk, int i, double h, double *out)
{
    const double *c = dirk->table->c, *const *source = dirk->predictor_source[i];
    const double *weight = dirk->predictor_weight[i];
    int s = dirk->table->stages, j, q;
    int64_t n_z = N(dirk) + dirk->system.problem->n_dparams + dirk->system.n_extra, k;
    if (h != dirk->predictor_h || dirk->previous_h != dirk->predictor_previous_h) {
        /* The sources and weights of every stage for these step sizes (kept: the step
           size often stays, and choosing them took 5% of POLLU's time at each stage) */
        dirk->predictor_h = h;
        dirk->predictor_previous_h = dirk->previous_h;
        for (int stage = 1; stage < s; stage++) {
            double times[16], target = c[stage] * h, *w = dirk->predictor_weight[stage];
            const double *values[16], **chosen = dirk->predictor_source[stage];
            int count = 0, nearest[3], m;
            for (j = 0; j < stage; j++) times[count] = c[j] * h, values[count++] = dirk->stage_data[j];
            if (dirk->previous_h != 0.0)
                for (j = 0; j < s - 1; j++)
                    times[count] = (c[j] - 1.0) * dirk->previous_h,
                    values[count++] = dirk->previous + j * n_z;
            m = count < 3 ? count : 3;
            for (q = 0; q < m; q++) { /* the m nearest, by selection */
                int best = -1;
                for (j = 0; j < count; j++) {
                    int taken = 0;
                    for (int o = 0; o < q; o++) taken |= nearest[o] == j;
                    if (!taken && (best < 0 || fabs(times[j] - target) < fabs(times[best] - target)))
                        best = j;
                }
                nearest[q] = best;
            }
            for (q = 0; q < 3; q++) { /* Lagrange's weights; 0 for what m < 3 leaves */
                w[q] = q < m;
                chosen[q] = values[nearest[q < m ? q : 0]];
                for (j = 0; j < m && q < m; j++)
                    if (j != q) w[q] *= (target - times[nearest[j]]) / (times[nearest[q]] - times[nearest[j]]);
            }
        }
    }
    {
        /* locals: out could alias dirk's fields for the compiler */
        const double *a = source[0], *b = source[1], *d = source[2];
        double wa = weight[0], wb = weight[1], wd = weight[2];
        for (k = 0; k < n_z; k++) out[k] = wa * a[k] + wb * b[k] + wd * d[k];
    }
}

/* One step of size h from (tau, z), K[0] = Jz(tau) z given: the stages' derivatives into
   K, the solution (the last stage: the table is stiffly accurate) into stage_z, and the
   filtered error estimate's WRMS norm into err. */
static int implicit_step(sl_esdirk *dirk, double tau, double h, int improve, double *err)
{
    ARKodeButcherTable table = dirk->table;
    int s = table->stages, i, j;
    int64_t n_z = N(dirk) + dirk->system.problem->n_dparams + dirk->system.n_extra, k;
    double gamma = h * table->A[1][1], *const *K = dirk->stage_data;
    double *r = DATA(dirk->stage_rhs), *x = DATA(dirk->stage_z), *e = DATA(dirk->error);
    const double *w = DATA(dirk->ewt), *z = DATA(dirk->z);
    int flag;
    /* Plain loops: SUNDIALS 6.4's fused N_VLinearCombination took 15% of POLLU's time. */
    for (i = 1; i < s; i++) {
        memcpy(r, z, n_z * sizeof(double)); /* r = z + h sum_j A[i][j] K_j */
        for (j = 0; j < i; j++) {
            double c = h * table->A[i][j];
            for (k = 0; k < n_z; k++) r[k] += c * K[j][k];
        }
        if (iterative(dirk)) memcpy(x, K[i - 1], n_z * sizeof(double));
        else predict(dirk, i, h, x);
        for (k = 0; k < n_z; k++) x[k] = r[k] + gamma * x[k];
        if ((flag = stage_solve(dirk, tau + table->c[i] * h, gamma, w, r, x))) return flag;
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
    if ((flag = stage_solve(dirk, tau + h, gamma, w, e, r))) return flag;
    *err = wrms(n_z, r, w);
    /* Hairer & Wanner's improved estimate for the first step and after a rejection, where
       a jump's fast transient is killed by the step, not resolved: filtered again (for a
       linear problem what their extra evaluation of f amounts to). */
    if (improve && *err > 1.0) {
        memset(e, 0, n_z * sizeof(double));
        if ((flag = stage_solve(dirk, tau + h, gamma, w, r, e))) return flag;
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
int sl_esdirk_create(const sl_esdirk_system *system, const sl_options *options, N_Vector z,
                     SUNContext ctx, sl_esdirk **out)
{
    sl_esdirk *dirk = calloc(1, sizeof(*dirk));
    const sl_problem *p = system->problem;
    int64_t n = p->n_states;
    sl_options transposed = *options;
    ARKodeButcherTable table;
    int flag, s, i, j;
    *out = dirk;
    if (!dirk) return ARK_MEM_FAIL;
    dirk->system = *system;
    dirk->options = *options;
    dirk->z = z;
    dirk->setup_tau = NAN;
    dirk->table = table = ARKodeButcherTable_LoadDIRK(ARKODE_ARK437L2SA_DIRK_7_3_4);
    if (!table) return ARK_MEM_FAIL;
    s = table->stages;
    if (s > 8 || table->A[0][0] != 0.0 || !table->d) return ARK_ILL_INPUT; /* 8: predict's */
    for (i = 1; i < s; i++)
        if (table->A[i][i] != table->A[1][1]) return ARK_ILL_INPUT;
    for (j = 0; j < s; j++)
        if (table->b[j] != table->A[s - 1][j]) return ARK_ILL_INPUT;
    dirk->stages = N_VCloneVectorArray(s, dirk->z);
    dirk->stage_rhs = N_VClone(dirk->z);
    dirk->stage_z = N_VClone(dirk->z);
    dirk->error = N_VClone(dirk->z);
    dirk->ewt = N_VClone(dirk->z);
    dirk->stage_data = malloc(s * sizeof(double *));
    dirk->newton_work = malloc(2 * n * sizeof(double));
    dirk->previous = malloc((s - 1) * N_VGetLength(z) * sizeof(double));
    dirk->x_view = N_VNewEmpty_Serial(n, ctx);
    dirk->b_view = N_VNewEmpty_Serial(n, ctx);
    dirk->weights_view = N_VNew_Serial(n, ctx);
    if (!dirk->stages || !dirk->stage_rhs || !dirk->stage_z || !dirk->error || !dirk->ewt
        || !dirk->stage_data || !dirk->newton_work || !dirk->previous || !dirk->x_view || !dirk->b_view
        || !dirk->weights_view)
        return ARK_MEM_FAIL;
    for (i = 0; i < s; i++) dirk->stage_data[i] = DATA(dirk->stages[i]);
    /* The Jacobian of lambda' = -J^T lambda is -J^T: J's band widths swapped. */
    transposed.upper_bandwidth = dirk->options.lower_bandwidth;
    transposed.lower_bandwidth = dirk->options.upper_bandwidth;
    if (transposed.linear_solver == SL_DENSE || transposed.linear_solver == SL_BAND) {
        dirk->lower = transposed.linear_solver == SL_BAND ? transposed.lower_bandwidth : -1;
        dirk->upper = transposed.upper_bandwidth;
        dirk->lu = malloc((dirk->lower >= 0 ? SL_BAND_LD(dirk->lower, dirk->upper) : n) * n
                          * sizeof(double));
        dirk->pivots = malloc(n * sizeof(int64_t));
        return dirk->lu && dirk->pivots ? 0 : ARK_MEM_FAIL;
    }
    if (sl_linear_solver_create(&transposed, n, p->jact_colptr, dirk->weights_view, ctx,
                                &dirk->lambda_matrix, &dirk->lambda_solver))
        return ARK_MEM_FAIL;
    if (!dirk->lambda_matrix) {
        if ((flag = SUNLinSolSetATimes(dirk->lambda_solver, dirk, lambda_times)))
            return ARK_LSETUP_FAIL;
        if ((flag = SUNLinSolSetScalingVectors(dirk->lambda_solver, dirk->weights_view,
                                               dirk->weights_view)))
            return ARK_LSETUP_FAIL;
    }
    if ((flag = SUNLinSolInitialize(dirk->lambda_solver))) return ARK_LINIT_FAIL;
    return 0;
}

/* A first step for an interval: 1% of the time scale ||z|| / ||z'|| (the whole interval
   if z or z' is 0), but at least 1e-8 of the interval: that scale is the fastest mode's,
   which the L-stable method need not resolve. */
static double first_step(sl_esdirk *dirk, double span)
{
    int64_t n_z = N(dirk) + dirk->system.problem->n_dparams + dirk->system.n_extra;
    const double *w = DATA(dirk->ewt);
    double size = wrms(n_z, DATA(dirk->z), w), rate = wrms(n_z, DATA(dirk->stages[0]), w);
    double h = size > 0.0 && rate > 0.0 ? 0.01 * size / rate : fabs(span);
    return copysign(fmin(fmax(h, 1e-8 * fabs(span)), fabs(span)), span);
}

/* The step size follows the error estimate (safety 0.9, between 0.1x and 10x per step,
   unchanged for growths below 1.5x so that M stays factored). The steps are counted in s,
   the time since tau_start, which resolves steps far shorter than tau's spacing at
   tau_start: a jump can excite a mode too fast for that (POLLU at rtol 1e-12: 4e11, at
   tau = 60). */
int sl_esdirk_integrate(sl_esdirk *dirk, double tau_start, double span, double *h_io,
                        sl_stats *stats)
{
    const sl_esdirk_system *sys = &dirk->system;
    double s = 0.0, h = *h_io, step, err, factor;
    int stages = dirk->table->stages, fails = 0, last, flag, j;
    int64_t n_z = N_VGetLength(dirk->z);
    long steps = 0;
    dirk->tau_now = tau_start;
    dirk->previous_h = 0.0; /* the last step's derivatives are from before the jump */
    if (sys->rhs(tau_start, dirk->z, dirk->stages[0], sys->data)) return ARK_RHSFUNC_FAIL;
    stats->rhs_evals++;
    sys->weights(dirk->z, dirk->ewt, sys->data);
    /* The step the previous interval proposed, unless the jump at tau_start (an output's
       dL/dy, an event's) excites a mode faster than it: starting with it, POLLU's first
       step after each output failed ~10 times, the error estimate growing as the step
       shrank to the jump's transient (80 of 808 steps tried; 22 of 781 with this). */
    h = h == 0.0 ? first_step(dirk, span)
                 : copysign(fmin(fabs(h), fabs(first_step(dirk, span))), span);
    while (s != span) {
        if (steps >= dirk->options.max_steps) return ARK_TOO_MUCH_WORK;
        last = fabs(h) >= fabs(span - s);
        step = last ? span - s : h;
        flag = implicit_step(dirk, tau_start + s, step, steps == 0 || fails > 0, &err);
        if (flag < 0) return flag;
        stats->rhs_evals += stages - 1;
        if (flag > 0) err = INFINITY; /* a recoverable failure: a shorter step */
        if (err <= 1.0) {
            s = last ? span : s + step;
            dirk->tau_now = tau_start + s;
            N_VScale(1.0, dirk->stage_z, dirk->z);
            for (j = 0; j < stages - 1; j++)
                memcpy(dirk->previous + j * n_z, dirk->stage_data[j], n_z * sizeof(double));
            dirk->previous_h = step;
            N_VScale(1.0, dirk->stages[stages - 1], dirk->stages[0]); /* first same as last */
            sys->weights(dirk->z, dirk->ewt, sys->data);
            stats->steps++;
            steps++;
            fails = 0;
        } else if (++fails == 30) {
            return flag > 0 ? dirk->retry_flag : ARK_ERR_FAILURE;
        } else {
            stats->error_test_fails++;
        }
        factor = err == 0.0 ? 10.0
                            : fmin(10.0, fmax(0.1, 0.9 * pow(err, -1.0 / (dirk->table->p + 1))));
        if (factor >= 1.0 && factor <= 1.5) factor = 1.0;
        /* after a step cut short by the interval's end, keep the longer step for the next */
        h = last && err <= 1.0 && factor >= 1.0 && fabs(h) > fabs(step * factor) ? h
                                                                               : step * factor;
        if (fabs(h) <= 4.0 * DBL_EPSILON * fabs(s)) return ARK_ERR_FAILURE;
    }
    *h_io = h;
    return 0;
}

double sl_esdirk_time(const sl_esdirk *dirk) { return dirk->tau_now; }

void sl_esdirk_discard_setup(sl_esdirk *dirk) { dirk->setup_tau = NAN; }

void sl_esdirk_free(sl_esdirk *dirk)
{
    if (!dirk) return;
    N_Vector vectors[] = {dirk->stage_rhs, dirk->stage_z, dirk->error, dirk->ewt, dirk->x_view,
                          dirk->b_view, dirk->weights_view};
    if (dirk->stages) N_VDestroyVectorArray(dirk->stages, dirk->table->stages);
    if (dirk->table) ARKodeButcherTable_Free(dirk->table);
    for (size_t k = 0; k < sizeof(vectors) / sizeof(vectors[0]); k++)
        if (vectors[k]) N_VDestroy(vectors[k]);
    free(dirk->stage_data);
    free(dirk->newton_work);
    free(dirk->previous);
    free(dirk->lu);
    free(dirk->pivots);
    if (dirk->lambda_solver) SUNLinSolFree(dirk->lambda_solver);
    if (dirk->lambda_matrix) SUNMatDestroy(dirk->lambda_matrix);
    free(dirk);
}
