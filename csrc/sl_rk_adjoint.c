/* Adjoint by a one-step Runge-Kutta method over a stored forward trajectory; see
   sl_rk_adjoint.h. As the forward solve, ARKODE integrates in tau = t - t0: the trajectory
   is recorded in tau, sl_rk_adjoint_backward gets t0 and tvals in t, and the kernels are
   called at t0 + tau. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <arkode/arkode_arkstep.h>
#include <arkode/arkode_erkstep.h>
#include <nvector/nvector_serial.h>

#include "sl_internal.h"
#include "sl_rk_adjoint.h"

/* STEP(a, Name) is the call Name for the stepper of a (ERKStep, or ARKStep for the
   implicit method), IMPLICIT(Name) a call of the implicit method only (see SL_ERK). */
#if SL_ARKODE_GENERIC
#define STEP(a, name) ARKode##name
#define IMPLICIT(name) ARKode##name
#else
#define STEP(a, name) ((a)->implicit ? ARKStep##name : ERKStep##name)
#define IMPLICIT(name) ARKStep##name
#endif

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
    /* The forward trajectory: times tau[k], states y[k*n..], derivatives yd[k*n..]. */
    int64_t length, capacity, cursor;
    double *tau, *y, *yd;
    /* Scratch: the interpolated state and kernel values. */
    double *y_at, *jac_work, *dfdp_work;
    /* The backward state z = (lambda, q) and its error weights' absolute parts. */
    void *mem;
    N_Vector z;
    double *atol;
    /* kernels_tau: the time whose J and df/dp jac_work and dfdp_work hold (NaN: none).
       The implicit method (ARKStep with z' = fi(tau, z)) and its Newton linear solver, set
       up for setup_tau and gamma_setup: see newton_solve. */
    double kernels_tau;
    int implicit;
    SUNLinearSolver newton;
    SUNLinearSolver lambda_solver;
    SUNMatrix lambda_matrix;
    N_Vector x_view, b_view, weights_view;
    double *q_work;
    double setup_tau, gamma_setup;
};

#define N(a) ((a)->problem.n_states)
#define DATA(v) N_VGetArrayPointer(v)

static int fail(sl_rk_adjoint *a, int flag)
{
    double tau = NAN;
    char *name = STEP(a, GetReturnFlagName)(flag);
    if (a->mem) STEP(a, GetCurrentTime)(a->mem, &tau);
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
    while (k > 0 && tau < a->tau[k]) k--;
    while (k < a->length - 2 && tau > a->tau[k + 1]) k++;
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
    for (j = n; j < n + a->problem.n_dparams; j++)
        w[j] = a->options.quad_errcon
            ? 1.0 / (a->options.rtol_quad * fabs(v[j]) + a->options.atol_quad) : 0.0;
    return 0;
}

/* The Newton systems of the implicit method. z' = Jz z with Jz = [[-J^T, 0], [df/dp^T, 0]]
   (lambda, then q), so I - gamma Jz is block lower triangular and only its lambda block
   (I + gamma J^T) needs a linear solver; the q part of the solution follows directly:
   x_q = b_q + gamma df/dp^T x_lambda. ARKODE sees one matrix-embedded linear solver over
   z. z' is linear in z, so with Jz exact at the stage time one Newton iteration solves a
   stage (ARKStepSetLinear): the solver sets itself up for each new stage time and gamma
   (ARKODE would not call the setup of a solver without a matrix or preconditioner). */
static SUNLinearSolver_Type newton_type(SUNLinearSolver S)
{
    (void)S;
    return SUNLINEARSOLVER_MATRIX_EMBEDDED;
}

/* I + gamma J^T with the J in jac_work, with the error weights of zpred scaling GMRES'
   residual as the Newton iteration measures it. */
static int lambda_setup(sl_rk_adjoint *a, double tau, double gamma, N_Vector zpred)
{
    const sl_problem *p = &a->problem;
    int flag;
    a->setup_tau = tau;
    a->gamma_setup = gamma;
    if (a->lambda_matrix) {
        sl_matrix_fill(a->lambda_matrix, N(a), p->jact_colptr, p->jact_rows, p->jact_perm,
                       a->jac_work, gamma);
        if ((flag = SUNMatScaleAddI(1.0, a->lambda_matrix))) return flag;
    } else {
        lambda_weights(a, DATA(zpred), DATA(a->weights_view));
    }
    return SUNLinSolSetup(a->lambda_solver, a->lambda_matrix);
}

/* out = (I + gamma J^T) v with J in jac_work (for GMRES, within newton_solve). */
static int lambda_times(void *data, N_Vector v, N_Vector out)
{
    sl_rk_adjoint *a = data;
    sl_csc_rmatvec(N(a), a->problem.jac_colptr, a->problem.jac_rows, a->jac_work, DATA(v),
                   a->gamma_setup, DATA(out));
    N_VLinearSum(1.0, v, 1.0, out, out);
    return 0;
}

static int newton_solve(SUNLinearSolver S, SUNMatrix unused, N_Vector x, N_Vector b,
                        double tol)
{
    sl_rk_adjoint *a = S->content;
    const sl_problem *p = &a->problem;
    double tau, gamma, *xq = DATA(x) + N(a), *bq = DATA(b) + N(a);
    N_Vector zpred, zcur, fi, sdata;
    void *user_data;
    int64_t k;
    int flag;
    (void)unused;
    if ((flag = IMPLICIT(GetNonlinearSystemData)(a->mem, &tau, &zpred, &zcur, &fi, &gamma,
                                                 &sdata, &user_data)))
        return flag;
    if ((flag = kernels_at(a, tau))) return flag;
    if ((tau != a->setup_tau || gamma != a->gamma_setup)
        && (flag = lambda_setup(a, tau, gamma, zpred)))
        return flag;
    N_VSetArrayPointer(DATA(x), a->x_view);
    N_VSetArrayPointer(DATA(b), a->b_view);
    /* One Newton iteration is the whole stage solve, so GMRES solves to 1e-4 of the error
       tolerance (its scaled 2-norm is sqrt(n) times the WRMS norm), whatever ARKODE's
       Newton would ask for (SUNDIALS 6 and 7 scale that tol differently). */
    (void)tol;
    if ((flag = SUNLinSolSolve(a->lambda_solver, a->lambda_matrix, a->x_view, a->b_view,
                               1e-4 * sqrt((double)N(a)))))
        return flag;
    if (p->n_dparams == 0) return 0;
    sl_csc_rmatvec(p->n_dparams, p->dfdp_colptr, p->dfdp_rows, a->dfdp_work, DATA(x), gamma,
                   a->q_work);
    for (k = 0; k < p->n_dparams; k++) xq[k] = bq[k] + a->q_work[k];
    return 0;
}

/* ARKStep with the L-stable, stiffly accurate ESDIRK 4(3) in 7 stages of Kennedy &
   Carpenter's ARK4(3)7L[2]SA, and Newton over the linear solver of the transposed
   Jacobian. On very stiff adjoints the embedded (error-estimating) method of these tables,
   not L-stable, sees the quasi-steady stiff components of lambda and holds the step small;
   this table suffered least of ARKODE's measured on POLLU at rtol=1e-8 (4347 backward steps
   for 447 forward; ESDIRK547L2SA2: 79148, ESDIRK436L2SA: 6024) and is close to the best on
   Robertson and Lotka-Volterra. */
static int create_implicit(sl_rk_adjoint *a, SUNContext ctx)
{
    const sl_problem *p = &a->problem;
    int64_t n = N(a);
    sl_options transposed = a->options.backward;
    int flag;
    a->implicit = 1;
    a->q_work = calloc(p->n_dparams + 1, sizeof(double));
    a->x_view = N_VNewEmpty_Serial(n, ctx);
    a->b_view = N_VNewEmpty_Serial(n, ctx);
    a->weights_view = N_VNew_Serial(n, ctx);
    a->mem = ARKStepCreate(NULL, rhs, 0.0, a->z, ctx);
    a->newton = SUNLinSolNewEmpty(ctx);
    if (!a->q_work || !a->x_view || !a->b_view || !a->weights_view || !a->mem
        || !a->newton)
        return ARK_MEM_FAIL;
#if !SL_SUNDIALS_7
    ARKStepSetErrHandlerFn(a->mem, sl_error_handler_6, &a->messages);
#endif
    /* The Jacobian of lambda' = -J^T lambda is -J^T: J's band widths swapped. */
    transposed.upper_bandwidth = a->options.backward.lower_bandwidth;
    transposed.lower_bandwidth = a->options.backward.upper_bandwidth;
    if (sl_linear_solver_create(&transposed, n, p->jact_colptr, a->weights_view, ctx,
                                &a->lambda_matrix, &a->lambda_solver))
        return ARK_MEM_FAIL;
    if (!a->lambda_matrix) {
        if ((flag = SUNLinSolSetATimes(a->lambda_solver, a, lambda_times))) return ARK_LSETUP_FAIL;
        if ((flag = SUNLinSolSetScalingVectors(a->lambda_solver, a->weights_view, a->weights_view)))
            return ARK_LSETUP_FAIL;
    }
    if ((flag = SUNLinSolInitialize(a->lambda_solver))) return ARK_LINIT_FAIL;
    a->newton->content = a;
    a->newton->ops->gettype = newton_type;
    a->newton->ops->solve = newton_solve;
    if ((flag = ARKStepSetTableNum(a->mem, ARKODE_ARK437L2SA_DIRK_7_3_4, ARKODE_ERK_NONE)))
        return flag;
    if ((flag = IMPLICIT(SetLinearSolver)(a->mem, a->newton, NULL))) return flag;
    /* A jump at an output time excites the adjoint's fast modes, and the step kept from
       the previous interval can be 1e7 times too long for that layer (Robertson): allow
       the error test enough failures to shrink it (7 by default, at most 10x each). */
    if ((flag = IMPLICIT(SetMaxErrTestFails)(a->mem, 30))) return flag;
    return IMPLICIT(SetLinear)(a->mem, 1);
}

int sl_rk_adjoint_create(const sl_problem *problem, const sl_adjoint_options *options,
                         SUNContext ctx, sl_status *status, sl_rk_adjoint **out)
{
    sl_rk_adjoint *a = calloc(1, sizeof(*a));
    int64_t n = problem->n_states, n_z = n + problem->n_dparams;
    int flag;
    *out = a;
    if (!a) return ARK_MEM_FAIL;
    a->problem = *problem;
    a->options = *options;
    a->status = status;
    a->messages.status = status;
    a->messages.t0 = &a->t0;
    a->y_at = calloc(n, sizeof(double));
    a->atol = malloc(n * sizeof(double));
    a->jac_work = calloc(problem->jac_colptr[n] + 1, sizeof(double));
    a->dfdp_work = calloc(problem->dfdp_colptr[problem->n_dparams] + 1, sizeof(double));
    a->z = N_VNew_Serial(n_z, ctx);
    if (!a->y_at || !a->atol || !a->jac_work || !a->dfdp_work || !a->z) return fail(a, ARK_MEM_FAIL);
    memcpy(a->atol, options->backward.atol, n * sizeof(double));
    N_VConst(0.0, a->z);
    /* Fused vector operations: a stage's linear combination in one pass (see sl_arkode.c;
       ERK forward + ERK backward on Lotka-Volterra: 0.91x the time, DIRK unchanged). */
    if (N_VEnableFusedOps_Serial(a->z, 1)) return fail(a, ARK_MEM_FAIL);
    if (options->backward.method == SL_DIRK) {
        if ((flag = create_implicit(a, ctx))) return fail(a, flag);
    } else {
        a->mem = ERKStepCreate(rhs, 0.0, a->z, ctx);
        if (!a->mem) return fail(a, ARK_MEM_FAIL);
#if !SL_SUNDIALS_7
        ERKStepSetErrHandlerFn(a->mem, sl_error_handler_6, &a->messages);
#endif
        /* Dormand-Prince 5(4): the usual choice at moderate to tight tolerances; higher-order
           tables (Verner 6(5), Fehlberg 8(7)) measured slower and less accurate here, as the
           cubic interpolation of the forward solution limits what a higher order can gain. */
        if ((flag = ERKStepSetTableNum(a->mem, ARKODE_DORMAND_PRINCE_7_4_5))) return fail(a, flag);
    }
    if ((flag = STEP(a, SetUserData)(a->mem, a))) return fail(a, flag);
    if ((flag = STEP(a, WFtolerances)(a->mem, weights))) return fail(a, flag);
    if ((flag = STEP(a, SetMaxNumSteps)(a->mem, options->backward.max_steps))) return fail(a, flag);
    return 0;
}

void sl_rk_adjoint_free(sl_rk_adjoint *a)
{
    if (!a) return;
    if (a->mem) STEP(a, Free)(&a->mem);
    if (a->newton) SUNLinSolFreeEmpty(a->newton);
    if (a->lambda_solver) SUNLinSolFree(a->lambda_solver);
    if (a->lambda_matrix) SUNMatDestroy(a->lambda_matrix);
    if (a->x_view) N_VDestroy(a->x_view);
    if (a->b_view) N_VDestroy(a->b_view);
    if (a->weights_view) N_VDestroy(a->weights_view);
    if (a->z) N_VDestroy(a->z);
    free(a->tau);
    free(a->y);
    free(a->yd);
    free(a->y_at);
    free(a->atol);
    free(a->jac_work);
    free(a->dfdp_work);
    free(a->q_work);
    free(a);
}

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
    return 0;
}

/* One backward solve: the adjoint, where its counts go, and the step size the previous
   interval ended with (0: let ARKODE estimate the first). */
typedef struct sweep {
    sl_rk_adjoint *a;
    sl_stats *stats;
    double h;
} sweep;

/* Integrate z from t_start (where it was just set) to t_end, stopping exactly there and
   starting with the step size the previous interval proposed. */
static int integrate(void *data, double t_start, double t_end)
{
    sweep *w = data;
    sl_rk_adjoint *a = w->a;
    double tret, tau_end = t_end - a->t0;
    long steps[2], evals[2], fails[2];
    int flag;
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

int sl_rk_adjoint_backward(sl_rk_adjoint *a, double t0, int64_t n_t, const double *tvals,
                           const double *grads, double scale, double *grad_out,
                           double *lambda_out, sl_stats *stats)
{
    int64_t n = N(a);
    sweep w = {a, stats, 0.0};
    int flag;
    if (a->length < 1 || a->tau[0] > 0.0 || a->tau[a->length - 1] < tvals[n_t - 1] - t0) {
        sl_status_set(a->status, ARK_ILL_INPUT, t0, "ARK_ILL_INPUT");
        return ARK_ILL_INPUT;
    }
    a->t0 = t0;
    a->cursor = a->length - 1;
    a->kernels_tau = a->setup_tau = NAN; /* the kernels' values belong to an earlier solve */
    N_VConst(0.0, a->z);
    if ((flag = sl_adjoint_sweep(&w, integrate, n, DATA(a->z), t0, n_t, tvals, grads, scale)))
        return flag;
    memcpy(lambda_out, DATA(a->z), n * sizeof(double));
    memcpy(grad_out, DATA(a->z) + n, a->problem.n_dparams * sizeof(double));
    return 0;
}

int sl_rk_adjoint_gradients(sl_rk_adjoint *a, double t0, int64_t n_t, const double *tvals,
                            const double *grads, double *grad_out, double *lambda_out,
                            sl_stats *stats)
{
    double scale = sl_grads_scale(n_t * N(a), grads);
    int flag = sl_rk_adjoint_backward(a, t0, n_t, tvals, grads, scale, grad_out, lambda_out,
                                      stats);
    if (flag) return flag;
    if ((flag = sl_scale_gradient(a->status, t0, scale, N(a), lambda_out))) return flag;
    return sl_scale_gradient(a->status, t0, scale, a->problem.n_dparams, grad_out);
}
