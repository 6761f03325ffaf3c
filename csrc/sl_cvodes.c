/* CVODES solves with the loops over output times in C: one foreign call per solve.

   CVODES integrates in tau = t - t0 (t0 of the last solve): it adds each step to its
   current time, and at t = 1e14 (float64 spacing 0.016) the rounding of those sums made
   decay 80% wrong. Kernels get t0 + tau, and everything reported is in t. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cvodes/cvodes.h>
#include <cvodes/cvodes_ls.h>
#include <nvector/nvector_serial.h>

#include "sl_internal.h"
#include "sl_cvodes.h"
#include "sl_rk_adjoint.h"

struct sl_cvodes {
    sl_problem problem;
    sl_sens_options sens;
    sl_adjoint_options adjoint;
    int has_sens, has_adjoint, has_quad;
    int max_order; /* of the forward method: 5 (BDF) or 12 (Adams) */
    double tstop; /* NaN: none. CVODES disables a stop time once reached: set per solve. */
    double t0; /* of the last solve: the origin of CVODES' time tau = t - t0 */
    int64_t max_steps;
    sl_status status;
    SUNContext ctx;
    void *mem;
    N_Vector y, atol, constraints;
    N_Vector *yS;
    SUNMatrix matrix;
    SUNLinearSolver linear_solver;
    /* Scratch for kernel values: jac_cache stays valid between a Jacobian-times-vector
       setup and its products, so it is kept apart from jac_work. */
    double *jac_work, *jac_cache, *dfdp_work;
    double *kernel_y; /* the state of the last failed kernel call (status.kernel_y) */
    /* The adjoint: the forward solve it belongs to, and the backward problem. */
    int forward_valid, backward_created, which;
    double forward_t0, forward_tlast;
    N_Vector yB, qB, atolB;
    /* The forward counters as the last solve left them (a backward solve recomputes
       forward steps from checkpoints, which CVODES counts too), and the backward ones
       summed over the intervals of the last backward solve. */
    sl_stats forward_stats, backward_stats;
    SUNMatrix matrixB;
    SUNLinearSolver linear_solverB;
    /* An explicit Runge-Kutta backward problem replaces CVODES' adjoint module: the forward
       solve then records every step (into rk) instead of checkpoints. */
    sl_rk_adjoint *rk;
    N_Vector ydot;
};

#define N(s) ((s)->problem.n_states)
#define DATA(v) N_VGetArrayPointer(v)

static int fail(sl_cvodes *s, void *mem, int flag)
{
    double t = NAN;
    char *name = CVodeGetReturnFlagName(flag);
    if (mem) CVodeGetCurrentTime(mem, &t);
    sl_status_set(&s->status, flag, s->t0 + t, name);
    free(name);
    return flag;
}

/* CVODES can report success at an output time it never reached, when the step size
   has underflowed to zero (e.g. the solution ran into a singularity of f). */
static int check_reached(sl_cvodes *s, double tout)
{
    double tau = NAN;
    CVodeGetCurrentTime(s->mem, &tau);
    if (tau >= tout - s->t0) return 0;
    sl_status_set(&s->status, CV_ERR_FAILURE, s->t0 + tau, "CV_ERR_FAILURE");
    if (!s->status.message[0])
        snprintf(s->status.message, sizeof(s->status.message),
                 "the step size underflowed before reaching t = %g", tout);
    return CV_ERR_FAILURE;
}

/* The kernel at time t0 + tau. */
static int call(sl_cvodes *s, sl_kernel kernel, const char *name, double tau, const double *y,
                double *out)
{
    return sl_call_kernel(&s->status, N(s), kernel, name, s->t0 + tau, y, s->problem.params, out);
}

static int eval_jac(sl_cvodes *s, double tau, N_Vector y, double *values)
{
    return call(s, s->problem.jac, "jac", tau, DATA(y), values);
}

static int rhs_fn(double tau, N_Vector y, N_Vector ydot, void *user_data)
{
    sl_cvodes *s = user_data;
    return call(s, s->problem.rhs, "rhs", tau, DATA(y), DATA(ydot));
}

static int jac_fn(double tau, N_Vector y, N_Vector fy, SUNMatrix J, void *user_data,
                  N_Vector tmp1, N_Vector tmp2, N_Vector tmp3)
{
    sl_cvodes *s = user_data;
    int flag = eval_jac(s, tau, y, s->jac_work);
    (void)fy; (void)tmp1; (void)tmp2; (void)tmp3;
    if (flag) return flag;
    return sl_matrix_fill(J, N(s), s->problem.jac_colptr, s->problem.jac_rows, NULL,
                          s->jac_work, 1.0);
}

static int jtsetup_fn(double tau, N_Vector y, N_Vector fy, void *user_data)
{
    (void)fy;
    return eval_jac(user_data, tau, y, ((sl_cvodes *)user_data)->jac_cache);
}

static int jtimes_fn(N_Vector v, N_Vector Jv, double tau, N_Vector y, N_Vector fy,
                     void *user_data, N_Vector tmp)
{
    sl_cvodes *s = user_data;
    (void)tau; (void)y; (void)fy; (void)tmp;
    sl_csc_matvec(N(s), N(s), s->problem.jac_colptr, s->problem.jac_rows, s->jac_cache,
                  DATA(v), 1.0, DATA(Jv));
    return 0;
}

/* s_k' = J s_k + df/dp_k, where the source term exists for derivative params only. */
static int sens_rhs_fn(int n_sens, double tau, N_Vector y, N_Vector ydot, N_Vector *yS,
                       N_Vector *ySdot, void *user_data, N_Vector tmp1, N_Vector tmp2)
{
    sl_cvodes *s = user_data;
    const sl_problem *p = &s->problem;
    int64_t k, kk;
    int flag = eval_jac(s, tau, y, s->jac_work);
    (void)ydot; (void)tmp1; (void)tmp2;
    if (flag) return flag;
    if (p->n_dparams > 0 && (flag = call(s, p->dfdp, "dfdp", tau, DATA(y), s->dfdp_work)))
        return flag;
    for (k = 0; k < n_sens; k++) {
        double *out = DATA(ySdot[k]);
        sl_csc_matvec(N(s), N(s), p->jac_colptr, p->jac_rows, s->jac_work, DATA(yS[k]),
                      1.0, out);
        if (k < p->n_dparams)
            for (kk = p->dfdp_colptr[k]; kk < p->dfdp_colptr[k + 1]; kk++)
                out[p->dfdp_rows[kk]] += s->dfdp_work[kk];
    }
    return 0;
}

static int rhs_b_fn(double tau, N_Vector y, N_Vector yB, N_Vector yBdot, void *user_data)
{
    sl_cvodes *s = user_data;
    int flag = eval_jac(s, tau, y, s->jac_work);
    if (flag) return flag;
    sl_csc_rmatvec(N(s), s->problem.jac_colptr, s->problem.jac_rows, s->jac_work,
                   DATA(yB), -1.0, DATA(yBdot));
    return 0;
}

/* q' = lambda^T df/dp, integrated from the last output time back to t0. */
static int quad_b_fn(double tau, N_Vector y, N_Vector yB, N_Vector qBdot, void *user_data)
{
    sl_cvodes *s = user_data;
    const sl_problem *p = &s->problem;
    int flag = call(s, p->dfdp, "dfdp", tau, DATA(y), s->dfdp_work);
    if (flag) return flag;
    sl_csc_rmatvec(p->n_dparams, p->dfdp_colptr, p->dfdp_rows, s->dfdp_work, DATA(yB),
                   1.0, DATA(qBdot));
    return 0;
}

static int jac_b_fn(double tau, N_Vector y, N_Vector yB, N_Vector fyB, SUNMatrix JB,
                    void *user_data, N_Vector tmp1, N_Vector tmp2, N_Vector tmp3)
{
    sl_cvodes *s = user_data;
    int flag = eval_jac(s, tau, y, s->jac_work);
    (void)yB; (void)fyB; (void)tmp1; (void)tmp2; (void)tmp3;
    if (flag) return flag;
    return sl_matrix_fill(JB, N(s), s->problem.jact_colptr, s->problem.jact_rows,
                          s->problem.jact_perm, s->jac_work, -1.0);
}

static int jtsetup_b_fn(double tau, N_Vector y, N_Vector yB, N_Vector fyB, void *user_data)
{
    (void)yB; (void)fyB;
    return eval_jac(user_data, tau, y, ((sl_cvodes *)user_data)->jac_cache);
}

static int jtimes_b_fn(N_Vector vB, N_Vector JvB, double tau, N_Vector y, N_Vector yB,
                       N_Vector fyB, void *user_data, N_Vector tmpB)
{
    sl_cvodes *s = user_data;
    (void)tau; (void)y; (void)yB; (void)fyB; (void)tmpB;
    sl_csc_rmatvec(N(s), s->problem.jac_colptr, s->problem.jac_rows, s->jac_cache,
                   DATA(vB), -1.0, DATA(JvB));
    return 0;
}

static N_Vector new_vector(sl_cvodes *s, int64_t n, const double *values)
{
    N_Vector v = N_VNew_Serial(n, s->ctx);
    if (v && values) memcpy(DATA(v), values, n * sizeof(double));
    else if (v) N_VConst(0.0, v);
    return v;
}

static int set_linear_solver(sl_cvodes *s, const sl_options *o)
{
    int flag;
    if (sl_linear_solver_create(o, N(s), s->problem.jac_colptr, s->y, s->ctx, &s->matrix,
                                &s->linear_solver))
        return fail(s, NULL, CV_MEM_FAIL);
    if ((flag = CVodeSetLinearSolver(s->mem, s->linear_solver, s->matrix))) return fail(s, s->mem, flag);
    if (s->matrix) flag = CVodeSetJacFn(s->mem, jac_fn);
    else flag = CVodeSetJacTimes(s->mem, jtsetup_fn, jtimes_fn);
    return flag ? fail(s, s->mem, flag) : 0;
}

int sl_cvodes_create(const sl_problem *problem, const sl_options *options,
                     const sl_sens_options *sens, const sl_adjoint_options *adjoint,
                     sl_cvodes **out)
{
    sl_cvodes *s = calloc(1, sizeof(*s));
    int flag;
    int64_t n = problem->n_states, nnz = problem->jac_colptr[problem->n_states];
    *out = s;
    if (!s) return CV_MEM_FAIL;
    s->problem = *problem;
    s->tstop = options->tstop;
    s->max_steps = options->max_steps;
    s->max_order = options->method == SL_ADAMS ? 12 : 5;
    s->has_sens = sens != NULL && sens->mode != SL_SENS_NONE && sens->n_sens > 0;
    s->has_adjoint = adjoint != NULL;
    s->has_quad = s->has_adjoint && problem->n_dparams > 0;
    if (s->has_sens) s->sens = *sens;
    if (s->has_adjoint) s->adjoint = *adjoint;
    s->jac_work = calloc(nnz + 1, sizeof(double));
    s->jac_cache = calloc(nnz + 1, sizeof(double));
    s->dfdp_work = calloc(problem->dfdp_colptr[problem->n_dparams] + 1, sizeof(double));
    s->kernel_y = calloc(n + 1, sizeof(double));
    s->status.kernel_y = s->kernel_y;
    if (!s->jac_work || !s->jac_cache || !s->dfdp_work || !s->kernel_y)
        return fail(s, NULL, CV_MEM_FAIL);
    if (sl_context_create(&s->ctx, &s->status)) return fail(s, NULL, CV_MEM_FAIL);
    s->y = new_vector(s, n, NULL);
    s->atol = new_vector(s, n, options->atol);
    s->mem = CVodeCreate(options->method == SL_ADAMS ? CV_ADAMS : CV_BDF, s->ctx);
    if (!s->y || !s->atol || !s->mem) return fail(s, NULL, CV_MEM_FAIL);
#if !SL_SUNDIALS_7
    CVodeSetErrHandlerFn(s->mem, sl_error_handler_6, &s->status);
#endif
    if ((flag = CVodeInit(s->mem, rhs_fn, 0.0, s->y))) return fail(s, s->mem, flag);
    if ((flag = CVodeSetUserData(s->mem, s))) return fail(s, s->mem, flag);
    if ((flag = CVodeSVtolerances(s->mem, options->rtol, s->atol))) return fail(s, s->mem, flag);
    if ((flag = CVodeSetMaxNumSteps(s->mem, options->max_steps))) return fail(s, s->mem, flag);
    if (options->constraints) {
        if (!(s->constraints = new_vector(s, n, options->constraints))) return fail(s, NULL, CV_MEM_FAIL);
        if ((flag = CVodeSetConstraints(s->mem, s->constraints))) return fail(s, s->mem, flag);
    }
    if ((flag = set_linear_solver(s, options))) return flag;
    if (s->has_sens) {
        int ism = sens->mode == SL_SENS_STAGGERED ? CV_STAGGERED : CV_SIMULTANEOUS;
        s->yS = N_VCloneVectorArray(sens->n_sens, s->y);
        if (!s->yS) return fail(s, NULL, CV_MEM_FAIL);
        for (int k = 0; k < sens->n_sens; k++) N_VConst(0.0, s->yS[k]);
        if ((flag = CVodeSensInit(s->mem, sens->n_sens, ism, sens_rhs_fn, s->yS)))
            return fail(s, s->mem, flag);
        if ((flag = CVodeSensEEtolerances(s->mem))) return fail(s, s->mem, flag);
        if ((flag = CVodeSetSensErrCon(s->mem, sens->errcon))) return fail(s, s->mem, flag);
    }
    if (s->has_adjoint && (adjoint->backward.method == SL_ERK || adjoint->backward.method == SL_DIRK)) {
        s->ydot = new_vector(s, n, NULL);
        if (!s->ydot) return fail(s, NULL, CV_MEM_FAIL);
        if ((flag = sl_rk_adjoint_create(problem, adjoint, s->ctx, &s->status, &s->rk))) return flag;
    } else if (s->has_adjoint) {
        int interp = adjoint->interpolation == SL_POLYNOMIAL ? CV_POLYNOMIAL : CV_HERMITE;
        if ((flag = CVodeAdjInit(s->mem, adjoint->checkpoint_steps, interp)))
            return fail(s, s->mem, flag);
        s->yB = new_vector(s, n, NULL);
        s->atolB = new_vector(s, n, adjoint->backward.atol);
        s->qB = new_vector(s, problem->n_dparams > 0 ? problem->n_dparams : 1, NULL);
        if (!s->yB || !s->atolB || !s->qB) return fail(s, NULL, CV_MEM_FAIL);
    }
    return 0;
}

void sl_cvodes_free(sl_cvodes *s)
{
    if (!s) return;
    if (s->mem) CVodeFree(&s->mem);
    if (s->yS) N_VDestroyVectorArray(s->yS, s->sens.n_sens);
    if (s->linear_solver) SUNLinSolFree(s->linear_solver);
    if (s->matrix) SUNMatDestroy(s->matrix);
    if (s->linear_solverB) SUNLinSolFree(s->linear_solverB);
    if (s->matrixB) SUNMatDestroy(s->matrixB);
    if (s->y) N_VDestroy(s->y);
    if (s->atol) N_VDestroy(s->atol);
    if (s->constraints) N_VDestroy(s->constraints);
    if (s->yB) N_VDestroy(s->yB);
    if (s->qB) N_VDestroy(s->qB);
    if (s->atolB) N_VDestroy(s->atolB);
    if (s->ydot) N_VDestroy(s->ydot);
    sl_rk_adjoint_free(s->rk);
    if (s->ctx) SUNContext_Free(&s->ctx);
    free(s->jac_work);
    free(s->jac_cache);
    free(s->dfdp_work);
    free(s->kernel_y);
    free(s);
}

const sl_status *sl_cvodes_status(const sl_cvodes *s) { return &s->status; }

static void record_forward_stats(sl_cvodes *s)
{
    sl_stats *stats = &s->forward_stats;
    CVodeGetNumSteps(s->mem, &stats->steps);
    CVodeGetNumRhsEvals(s->mem, &stats->rhs_evals);
    CVodeGetNumJacEvals(s->mem, &stats->jac_evals);
    CVodeGetNumErrTestFails(s->mem, &stats->error_test_fails);
    CVodeGetNumNonlinSolvConvFails(s->mem, &stats->nonlinear_conv_fails);
}

void sl_cvodes_stats(const sl_cvodes *s, sl_stats *stats)
{
    *stats = s->forward_stats;
    stats->steps_backward = s->backward_stats.steps;
    stats->rhs_evals_backward = s->backward_stats.rhs_evals;
    stats->error_test_fails_backward = s->backward_stats.error_test_fails;
}

/* Integrate to each output time in CVode's normal mode (with checkpoints for CVODES'
   adjoint) and copy out y and the sensitivities. */
static int solve_normal(sl_cvodes *s, double t0, const double *y0, const double *sens0,
                        int64_t n_t, const double *tvals, double *y_out, double *sens_out)
{
    int64_t n = N(s), n_sens = s->has_sens ? s->sens.n_sens : 0, i, k;
    int flag, n_check;
    double tret;
    for (i = 0; i < n_t; i++) {
        double tout = tvals[i] - t0;
        if (tvals[i] == t0) {
            memcpy(y_out + i * n, y0, n * sizeof(double));
            if (s->has_sens) memcpy(sens_out + i * n_sens * n, sens0, n_sens * n * sizeof(double));
            continue;
        }
        if (s->has_adjoint) flag = CVodeF(s->mem, tout, s->y, &tret, CV_NORMAL, &n_check);
        else flag = CVode(s->mem, tout, s->y, &tret, CV_NORMAL);
        if (flag < 0) return fail(s, s->mem, flag);
        if ((flag = check_reached(s, tvals[i]))) return flag;
        memcpy(y_out + i * n, DATA(s->y), n * sizeof(double));
        if (s->has_sens) {
            if ((flag = CVodeGetSens(s->mem, &tret, s->yS))) return fail(s, s->mem, flag);
            for (k = 0; k < n_sens; k++)
                memcpy(sens_out + (i * n_sens + k) * n, DATA(s->yS[k]), n * sizeof(double));
        }
    }
    return 0;
}

/* Polynomial interpolation needs a long enough last checkpoint interval: see
   sl_last_interval_too_short. (The first one-step call after a normal-mode return only
   returns the step already taken past the output time: count steps, not calls.) */
static int complete_last_interval(sl_cvodes *s, double t0, double t_last)
{
    long nst;
    int n_check, flag;
    double tret, tout = 2.0 * (t_last - t0) + 1.0; /* tau ahead: only the direction counts */
    while (!CVodeGetNumSteps(s->mem, &nst)
           && sl_last_interval_too_short(nst, s->adjoint.checkpoint_steps, s->max_order)) {
        flag = CVodeF(s->mem, tout, s->y, &tret, CV_ONE_STEP, &n_check);
        if (flag < 0) return fail(s, s->mem, flag);
        if (flag == CV_TSTOP_RETURN)
            return sl_status_tstop_blocks_polynomial(&s->status, flag, "CV_TSTOP_RETURN",
                                                     t0 + tret, s->tstop);
    }
    return 0;
}

/* The forward solve of an explicit Runge-Kutta adjoint: one step at a time, recording y
   and y' after each step; outputs are interpolated as in CVode's normal mode, and
   max_steps holds per output interval as there. The trajectory is recorded in tau. */
static int solve_recording(sl_cvodes *s, double t0, int64_t n_t, const double *tvals,
                           double *y_out)
{
    int64_t n = N(s), i = 0, steps = 0;
    int flag;
    double tret = 0.0;
    sl_rk_adjoint_clear(s->rk);
    if ((flag = rhs_fn(0.0, s->y, s->ydot, s)))
        return fail(s, s->mem, flag < 0 ? CV_RHSFUNC_FAIL : CV_FIRST_RHSFUNC_ERR);
    if (sl_rk_adjoint_record(s->rk, 0.0, DATA(s->y), DATA(s->ydot))) return fail(s, NULL, CV_MEM_FAIL);
    for (; i < n_t && tvals[i] == t0; i++) memcpy(y_out + i * n, DATA(s->y), n * sizeof(double));
    while (i < n_t) {
        if (++steps > s->max_steps) {
            sl_status_set(&s->status, CV_TOO_MUCH_WORK, t0 + tret, "CV_TOO_MUCH_WORK");
            snprintf(s->status.message, sizeof(s->status.message),
                     "more than max_steps = %lld steps before t = %g", (long long)s->max_steps,
                     tvals[i]);
            return CV_TOO_MUCH_WORK;
        }
        flag = CVode(s->mem, tvals[n_t - 1] - t0, s->y, &tret, CV_ONE_STEP);
        if (flag < 0) return fail(s, s->mem, flag);
        if ((flag = CVodeGetDky(s->mem, tret, 1, s->ydot))) return fail(s, s->mem, flag);
        if (sl_rk_adjoint_record(s->rk, tret, DATA(s->y), DATA(s->ydot))) return fail(s, NULL, CV_MEM_FAIL);
        for (; i < n_t && tvals[i] - t0 <= tret; i++, steps = 0) {
            if ((flag = CVodeGetDky(s->mem, tvals[i] - t0, 0, s->ydot))) return fail(s, s->mem, flag);
            memcpy(y_out + i * n, DATA(s->ydot), n * sizeof(double));
        }
    }
    return 0;
}

static int forward_solve(sl_cvodes *s, double t0, const double *y0, const double *sens0,
                         int64_t n_t, const double *tvals, double *y_out, double *sens_out)
{
    int64_t n = N(s), k;
    int flag;
    s->forward_valid = 0;
    s->t0 = t0;
    s->status.message[0] = s->status.kernel[0] = '\0';
    memcpy(DATA(s->y), y0, n * sizeof(double));
    /* A backward solve recomputing from the first checkpoint leaves the forward memory
       with the first step size of the previous solve as a fixed initial step: estimate
       it again, as a fresh solver does. */
    if ((flag = CVodeSetInitStep(s->mem, 0.0))) return fail(s, s->mem, flag);
    if ((flag = CVodeReInit(s->mem, 0.0, s->y))) return fail(s, s->mem, flag);
    if (s->has_sens) {
        int ism = s->sens.mode == SL_SENS_STAGGERED ? CV_STAGGERED : CV_SIMULTANEOUS;
        for (k = 0; k < s->sens.n_sens; k++)
            memcpy(DATA(s->yS[k]), sens0 + k * n, n * sizeof(double));
        if ((flag = CVodeSensReInit(s->mem, ism, s->yS))) return fail(s, s->mem, flag);
    }
    if (s->has_adjoint && !s->rk && (flag = CVodeAdjReInit(s->mem))) return fail(s, s->mem, flag);
    if (!isnan(s->tstop) && (flag = CVodeSetStopTime(s->mem, s->tstop - t0)))
        return fail(s, s->mem, flag);
    if (s->rk) return solve_recording(s, t0, n_t, tvals, y_out);
    flag = solve_normal(s, t0, y0, sens0, n_t, tvals, y_out, sens_out);
    if (!flag && s->has_adjoint && s->adjoint.interpolation == SL_POLYNOMIAL)
        flag = complete_last_interval(s, t0, tvals[n_t - 1]);
    return flag;
}

int sl_cvodes_solve(sl_cvodes *s, double t0, const double *y0, const double *sens0,
                    int64_t n_t, const double *tvals, double *y_out, double *sens_out)
{
    int flag = forward_solve(s, t0, y0, sens0, n_t, tvals, y_out, sens_out);
    record_forward_stats(s);
    if (flag) return flag;
    s->forward_valid = s->has_adjoint;
    s->forward_t0 = t0;
    s->forward_tlast = n_t > 0 ? tvals[n_t - 1] : t0;
    return 0;
}

static int create_backward(sl_cvodes *s, double tau_start)
{
    const sl_options *o = &s->adjoint.backward;
    sl_options transposed = *o;
    void *mem_b;
    int flag, lmm = o->method == SL_ADAMS ? CV_ADAMS : CV_BDF;
    if ((flag = CVodeCreateB(s->mem, lmm, &s->which))) return fail(s, s->mem, flag);
    mem_b = CVodeGetAdjCVodeBmem(s->mem, s->which);
#if !SL_SUNDIALS_7
    CVodeSetErrHandlerFn(mem_b, sl_error_handler_6, &s->status);
#endif
    if ((flag = CVodeInitB(s->mem, s->which, rhs_b_fn, tau_start, s->yB))) return fail(s, mem_b, flag);
    if ((flag = CVodeSetUserDataB(s->mem, s->which, s))) return fail(s, mem_b, flag);
    if ((flag = CVodeSVtolerancesB(s->mem, s->which, o->rtol, s->atolB))) return fail(s, mem_b, flag);
    if ((flag = CVodeSetMaxNumStepsB(s->mem, s->which, o->max_steps))) return fail(s, mem_b, flag);
    /* The backward Jacobian is -J^T: its band widths are those of J swapped. */
    transposed.upper_bandwidth = o->lower_bandwidth;
    transposed.lower_bandwidth = o->upper_bandwidth;
    if (sl_linear_solver_create(&transposed, N(s), s->problem.jact_colptr, s->yB, s->ctx,
                                &s->matrixB, &s->linear_solverB))
        return fail(s, NULL, CV_MEM_FAIL);
    if ((flag = CVodeSetLinearSolverB(s->mem, s->which, s->linear_solverB, s->matrixB)))
        return fail(s, mem_b, flag);
    if (s->matrixB) flag = CVodeSetJacFnB(s->mem, s->which, jac_b_fn);
    else flag = CVodeSetJacTimesB(s->mem, s->which, jtsetup_b_fn, jtimes_b_fn);
    if (flag) return fail(s, mem_b, flag);
    if (s->has_quad) {
        if ((flag = CVodeQuadInitB(s->mem, s->which, quad_b_fn, s->qB))) return fail(s, mem_b, flag);
        if ((flag = CVodeQuadSStolerancesB(s->mem, s->which, s->adjoint.rtol_quad,
                                           s->adjoint.atol_quad)))
            return fail(s, mem_b, flag);
        if ((flag = CVodeSetQuadErrConB(s->mem, s->which, s->adjoint.quad_errcon)))
            return fail(s, mem_b, flag);
    }
    s->backward_created = 1;
    return 0;
}

/* Integrate lambda (in s->yB) and the quadrature (in s->qB) from t_start to t_end. */
static int integrate_backward(void *solver, double t_start, double t_end)
{
    sl_cvodes *s = solver;
    int flag;
    long count;
    double tret, tau_start = t_start - s->t0;
    void *mem_b;
    if (!s->backward_created) {
        if ((flag = create_backward(s, tau_start))) return flag;
    } else {
        if ((flag = CVodeReInitB(s->mem, s->which, tau_start, s->yB))) return fail(s, s->mem, flag);
        if (s->has_quad && (flag = CVodeQuadReInitB(s->mem, s->which, s->qB)))
            return fail(s, s->mem, flag);
    }
    flag = CVodeB(s->mem, t_end - s->t0, CV_NORMAL);
    mem_b = CVodeGetAdjCVodeBmem(s->mem, s->which);
    CVodeGetNumSteps(mem_b, &count);
    s->backward_stats.steps += count;
    CVodeGetNumRhsEvals(mem_b, &count);
    s->backward_stats.rhs_evals += count;
    CVodeGetNumErrTestFails(mem_b, &count);
    s->backward_stats.error_test_fails += count;
    if (flag < 0) return fail(s, mem_b, flag);
    if ((flag = CVodeGetB(s->mem, s->which, &tret, s->yB))) return fail(s, s->mem, flag);
    if (s->has_quad && (flag = CVodeGetQuadB(s->mem, s->which, &tret, s->qB)))
        return fail(s, s->mem, flag);
    return 0;
}

int sl_cvodes_forward_state(sl_cvodes *s, int backward, double t, double *y_out)
{
    int flag;
    sl_status failure = s->status; /* CVODES would report a failure here as the last message */
    double tau = t - s->t0;
    if (backward && s->rk) return sl_rk_adjoint_forward_state(s->rk, tau, y_out);
    if (!isfinite(t)) return CV_BAD_T;
    flag = backward ? CVodeGetAdjY(s->mem, tau, s->y) : CVodeGetDky(s->mem, tau, 0, s->y);
    s->status = failure;
    if (!flag) memcpy(y_out, DATA(s->y), N(s) * sizeof(double));
    return flag;
}

int sl_cvodes_backward(sl_cvodes *s, double t0, int64_t n_t, const double *tvals,
                       const double *grads, double *grad_out, double *lambda_out)
{
    int64_t n = N(s);
    int flag;
    double scale = sl_grads_scale(n_t * n, grads);
    s->status.message[0] = s->status.kernel[0] = '\0';
    if (!s->forward_valid || n_t < 1 || t0 != s->forward_t0
        || tvals[n_t - 1] != s->forward_tlast) {
        sl_status_set(&s->status, CV_NO_FWD, t0, "CV_NO_FWD");
        return CV_NO_FWD;
    }
    memset(&s->backward_stats, 0, sizeof(s->backward_stats));
    if (s->rk) {
        flag = sl_rk_adjoint_backward(s->rk, t0, n_t, tvals, grads, scale, grad_out,
                                      lambda_out, &s->backward_stats);
    } else {
        N_VConst(0.0, s->yB);
        N_VConst(0.0, s->qB);
        flag = sl_adjoint_sweep(s, integrate_backward, n, DATA(s->yB), t0, n_t, tvals, grads,
                                scale);
        memcpy(lambda_out, DATA(s->yB), n * sizeof(double));
        memcpy(grad_out, DATA(s->qB), s->problem.n_dparams * sizeof(double));
    }
    if (flag) return flag;
    if ((flag = sl_scale_gradient(&s->status, t0, scale, n, lambda_out))) return flag;
    return sl_scale_gradient(&s->status, t0, scale, s->problem.n_dparams, grad_out);
}
