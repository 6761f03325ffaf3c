/* IDAS solves with the loops over output times in C: one foreign call per solve.

   Forward: F(t, y, y', p) = 0 with Newton matrix dF/dy + cj dF/dy', both from CSC values.
   Sensitivities: F_y s + F_y' s' + F_p = 0.
   Adjoint (SUNDIALS' sign convention, as sl_cvodes): F_y^T lambda - (F_y'^T lambda)' = 0,
   i.e. the backward residual F_y^T lambda - F_y'^T lambda' - (d/dt F_y')^T lambda, with
   backward Newton matrix (F_y - d/dt F_y' - cjB F_y')^T, and the quadrature
   q' = -lambda^T F_p, so q(t0) = int_{t0}^{T} lambda^T F_p dt. lambda is indexed by
   equations; its algebraic part (on algebraic equations) is excluded from the backward
   error test: it follows from the differential part, and its derivative, which IDAS's
   first step after each re-initialisation would need, is not available (with it in the
   error test, tight tolerances fail with IDA_ERR_FAIL right after the jumps).
   As in sl_cvodes, IDAS integrates in tau = t - t0; kernels get t0 + tau. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <idas/idas.h>
#include <idas/idas_ls.h>
#include <nvector/nvector_serial.h>

#include "sl_idas_internal.h"

static const sl_calls IDAS_CALLS = {
    IDA_MEM_FAIL, IDA_ERR_FAIL, IDA_TSTOP_RETURN, IDA_NO_FWD, IDA_NORMAL,
    "IDA_ERR_FAIL", "IDA_TSTOP_RETURN", "IDA_NO_FWD",
    IDAGetReturnFlagName, IDAFree, IDAGetCurrentTime, IDAGetCurrentStep, IDAGetNumSteps, IDAGetNumResEvals,
    IDAGetNumJacEvals, IDAGetNumErrTestFails, IDAGetNumNonlinSolvConvFails,
    IDAGetSensNumErrTestFails, IDAGetSensNumNonlinSolvConvFails, IDASetUserData,
    IDASVtolerances, IDASetMaxNumSteps, IDASetMaxStep, IDASetConstraints, IDASetLinearSolver, IDASetInitStep,
    IDASetStopTime, IDASensEEtolerances, IDASetSensErrCon, IDAGetAdjIDABmem, IDASetUserDataB,
    IDASVtolerancesB, IDASetMaxNumStepsB, IDASetLinearSolverB, IDAQuadSStolerancesB,
    IDASetQuadErrConB, IDAQuadReInitB, IDASolveB, IDAGetQuadB};

/* -- forward callbacks ---------------------------------------------------------------- */

static int res_fn(double tau, N_Vector y, N_Vector yp, N_Vector r, void *user_data)
{
    sl_idas *s = user_data;
    return eval(s, s->problem.res, "res", tau, DATA(y), DATA(yp), DATA(r));
}

static int jac_fn(double tau, double cj, N_Vector y, N_Vector yp, N_Vector r, SUNMatrix J,
                  void *user_data, N_Vector tmp1, N_Vector tmp2, N_Vector tmp3)
{
    sl_idas *s = user_data;
    int flag = eval_jacs(s, tau, DATA(y), DATA(yp), s->jy_work, s->jyp_work, NULL);
    (void)r; (void)tmp1; (void)tmp2; (void)tmp3;
    if (flag) return flag;
    combine(s, s->jy_work, s->jyp_work, NULL, 1.0, cj, 0.0, s->jac_work);
    return sl_matrix_fill(J, N(s), s->problem.jac_colptr, s->problem.jac_rows, NULL,
                          s->jac_work, 1.0);
}

static int jtsetup_fn(double tau, N_Vector y, N_Vector yp, N_Vector r, double cj,
                      void *user_data)
{
    sl_idas *s = user_data;
    (void)r; (void)cj;
    return eval_jacs(s, tau, DATA(y), DATA(yp), s->jy_cache, s->jyp_cache, NULL);
}

/* Jv = F_y v + cj F_y' v, with the cj of this call (it may differ from the setup's). */
static int jtimes_fn(double tau, N_Vector y, N_Vector yp, N_Vector r, N_Vector v, N_Vector Jv,
                     double cj, void *user_data, N_Vector tmp1, N_Vector tmp2)
{
    sl_idas *s = user_data;
    const sl_dae_problem *p = &s->problem;
    (void)tau; (void)y; (void)yp; (void)r; (void)tmp2;
    sl_csc_matvec(N(s), N(s), p->jy_colptr, p->jy_rows, s->jy_cache, DATA(v), 1.0, DATA(Jv));
    sl_csc_matvec(N(s), N(s), p->jyp_colptr, p->jyp_rows, s->jyp_cache, DATA(v), cj, DATA(tmp1));
    N_VLinearSum(1.0, Jv, 1.0, tmp1, Jv);
    return 0;
}

/* F_y s_k + F_y' s_k' + dF/dp_k, the last term for derivative params only. */
static int sens_res_fn(int n_sens, double tau, N_Vector y, N_Vector yp, N_Vector r,
                       N_Vector *yS, N_Vector *ypS, N_Vector *rS, void *user_data,
                       N_Vector tmp1, N_Vector tmp2, N_Vector tmp3)
{
    sl_idas *s = user_data;
    const sl_dae_problem *p = &s->problem;
    int64_t k, kk, n = N(s);
    int flag = eval_jacs(s, tau, DATA(y), DATA(yp), s->jy_work, s->jyp_work, NULL);
    (void)r; (void)tmp2; (void)tmp3;
    if (flag) return flag;
    if (p->n_dparams > 0 && (flag = call(s, p->dfdp, "dfdp", tau, s->dfdp_work))) return flag;
    for (k = 0; k < n_sens; k++) {
        double *out = DATA(rS[k]);
        sl_csc_matvec(n, n, p->jy_colptr, p->jy_rows, s->jy_work, DATA(yS[k]), 1.0, out);
        sl_csc_matvec(n, n, p->jyp_colptr, p->jyp_rows, s->jyp_work, DATA(ypS[k]), 1.0,
                      DATA(tmp1));
        N_VLinearSum(1.0, rS[k], 1.0, tmp1, rS[k]);
        if (k < p->n_dparams)
            for (kk = p->dfdp_colptr[k]; kk < p->dfdp_colptr[k + 1]; kk++)
                out[p->dfdp_rows[kk]] += s->dfdp_work[kk];
    }
    return 0;
}

/* IDAS's corrector for the sensitivities. Its simultaneous corrector leaves them out of
   the local error test whatever IDASetSensErrCon says (IDAStep calls IDASensTestError for
   the staggered corrector only, in SUNDIALS 6 and 7; the sensitivities then steer only
   the first step and order increases): on y' = -k y + sin(t) as a DAE, dy/da at a = 0
   came out 1e-5 wrong at rtol 1e-10. Error-controlled sensitivities therefore always use
   the staggered corrector, whose error test includes them. */
static int sens_corrector(const sl_sens_options *sens)
{
    return sens->mode == SL_SENS_STAGGERED || sens->errcon ? IDA_STAGGERED : IDA_SIMULTANEOUS;
}

/* -- creation ------------------------------------------------------------------------- */

/* sl_configure_own: the differential/algebraic ids and the Jacobian functions. The
   backward problem's algebraic part is left out of its error test (see the top). */
static int configure_forward(void *solver)
{
    sl_idas *s = solver;
    void *mem = s->core.mem;
    int flag = IDASetId(mem, s->id);
    if (flag) return flag;
    return s->core.matrix ? IDASetJacFn(mem, jac_fn) : IDASetJacTimes(mem, jtsetup_fn, jtimes_fn);
}

int sl_idas_create(const sl_dae_problem *problem, const sl_options *options,
                   const double *constraints, const sl_sens_options *sens,
                   const sl_adjoint_options *adjoint, sl_idas **out)
{
    sl_idas *s = calloc(1, sizeof(*s));
    sl_core *c = &s->core;
    const sl_dae_problem *p = problem;
    int flag;
    int64_t n = problem->n_states;
    *out = s;
    if (!s) return IDA_MEM_FAIL;
    s->problem = *problem;
    s->core.has_sens = s->has_sens = sens != NULL && sens->mode != SL_SENS_NONE && sens->n_sens > 0;
    for (int64_t i = 0; i < n; i++) s->n_algebraic += problem->equation_id[i] == 0.0;
    if (s->has_sens) s->sens = *sens;
    int64_t nnz_y = NNZ(p->jy_colptr), nnz_yp = NNZ(p->jyp_colptr);
    /* Scratch arrays, each one entry longer than needed so that none is empty. */
    struct { double **array; int64_t size; } arrays[] = {
        {&s->yyp, 2 * n}, {&s->tmp, n}, {&s->jy_work, nnz_y}, {&s->jy_cache, nnz_y},
        {&s->jyp_work, nnz_yp}, {&s->jyp_cache, nnz_yp}, {&s->jypdot_work, nnz_yp},
        {&s->jypdot_cache, nnz_yp}, {&s->jac_work, NNZ(p->jac_colptr)},
        {&s->dfdp_work, p->dfdp_colptr[p->n_dparams]}, {&s->y0, n}, {&s->yp0, n},
        {&s->grad_direct, p->n_dparams}, {&s->grad_scaled, n}, {&s->kernel_y, 2 * n}};
    if ((flag = sl_core_init(c, &IDAS_CALLS, options, adjoint, p->n_dparams)))
        return fail(s, NULL, flag);
    for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++)
        if (!(*arrays[i].array = calloc(arrays[i].size + 1, sizeof(double))))
            return fail(s, NULL, IDA_MEM_FAIL);
    c->status.kernel_y = s->kernel_y;
    s->y = sl_new_vector(c->ctx, n, NULL);
    s->yp = sl_new_vector(c->ctx, n, NULL);
    s->id = sl_new_vector(c->ctx, n, problem->id);
    c->mem = IDACreate(c->ctx);
    if (!s->y || !s->yp || !s->id || !c->mem) return fail(s, NULL, IDA_MEM_FAIL);
#if !SL_SUNDIALS_7
    IDASetErrHandlerFn(c->mem, sl_error_handler_6, &c->messages);
#endif
    if ((flag = IDAInit(c->mem, res_fn, 0.0, s->y, s->yp))) return fail(s, c->mem, flag);
    if ((flag = sl_configure_forward(c, s, options, constraints, n, p->jac_colptr, s->y,
                                     configure_forward)))
        return flag;
    if (s->has_sens) {
        s->yS = sl_new_vectors(s->y, sens->n_sens);
        s->ypS = sl_new_vectors(s->y, sens->n_sens);
        if (!s->yS || !s->ypS) return fail(s, NULL, IDA_MEM_FAIL);
        if ((flag = IDASensInit(c->mem, sens->n_sens, sens_corrector(sens), sens_res_fn, s->yS,
                                s->ypS)))
            return fail(s, c->mem, flag);
        if ((flag = sl_configure_sensitivities(c, sens->errcon))) return flag;
    }
    if (c->has_adjoint) {
        /* The jump system K^T x = grad has the pattern of P^T; a Krylov backward solver
           still gets a direct solver here (K is only factored once per output time). */
        sl_options jump = sl_transposed(&adjoint->backward);
        if (jump.linear_solver == SL_SPGMR) jump.linear_solver = SL_DENSE;
        s->ypB = sl_new_vector(c->ctx, n, NULL);
        s->jump_x = sl_new_vector(c->ctx, n, NULL);
        s->idB = sl_new_vector(c->ctx, n, problem->equation_id);
        s->jump_b = sl_new_vector(c->ctx, n, NULL);
        if ((flag = sl_core_adjoint_vectors(c, n, p->n_dparams))) return flag;
        if (!s->ypB || !s->idB || !s->jump_x || !s->jump_b
            || sl_linear_solver_create(&jump, n, p->jact_colptr, s->jump_x, c->ctx,
                                       &s->jump_matrix, &s->jump_solver)
            || SUNLinSolInitialize(s->jump_solver))
            return fail(s, NULL, IDA_MEM_FAIL);
    }
    return 0;
}

void sl_idas_free(sl_idas *s)
{
    if (!s) return;
    if (s->yS) N_VDestroyVectorArray(s->yS, s->sens.n_sens);
    if (s->ypS) N_VDestroyVectorArray(s->ypS, s->sens.n_sens);
    if (s->jump_solver) SUNLinSolFree(s->jump_solver);
    if (s->jump_matrix) SUNMatDestroy(s->jump_matrix);
    N_Vector vectors[] = {s->y, s->yp, s->id, s->ypB, s->idB, s->jump_x, s->jump_b};
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++)
        if (vectors[i]) N_VDestroy(vectors[i]);
    sl_core_free(&s->core);
    double *arrays[] = {s->yyp, s->tmp, s->jy_work, s->jyp_work, s->jypdot_work, s->jac_work,
                        s->dfdp_work, s->jy_cache, s->jyp_cache, s->jypdot_cache, s->fwd_y,
                        s->fwd_yp, s->y0, s->yp0, s->grad_direct, s->grad_scaled,
                        s->kernel_y};
    for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++) free(arrays[i]);
    free(s);
}

const sl_status *sl_idas_status(const sl_idas *s) { return &s->core.status; }

void sl_idas_stats(const sl_idas *s, sl_stats *stats) { sl_core_stats(&s->core, stats); }

/* -- forward solve -------------------------------------------------------------------- */

/* IDAAdjInit right before the first IDASolveF: IDAS 6 crashes in IDAFree when the adjoint
   memory exists but IDASolveF never ran (its interpolation data are allocated there). */
static int init_adjoint(sl_idas *s)
{
    int flag, interp = s->core.adjoint.interpolation == SL_POLYNOMIAL ? IDA_POLYNOMIAL : IDA_HERMITE;
    if (s->adjoint_initialized) return 0;
    if ((flag = IDAAdjInit(s->core.mem, s->core.adjoint.checkpoint_steps, interp))) return fail(s, s->core.mem, flag);
    s->adjoint_initialized = 1;
    return 0;
}

static int one_step(void *solver, double tout, double *tret)
{
    sl_idas *s = solver;
    int n_check;
    return IDASolveF(s->core.mem, tout, tret, s->y, s->yp, IDA_ONE_STEP, &n_check);
}

static int forward_solve(sl_idas *s, double t0, double *y0, double *yp0, const double *sens0,
                         int64_t n_t, const double *tvals, double *y_out, double *yp_out,
                         double *sens_out)
{
    sl_core *c = &s->core;
    int64_t n = N(s), n_sens = s->has_sens ? s->sens.n_sens : 0, i, k;
    int flag, n_check;
    double tret, tout1 = 1.0;
    if ((flag = sl_begin_forward(c, t0, tvals[n_t - 1]))) return flag;
    memcpy(DATA(s->y), y0, n * sizeof(double));
    memcpy(DATA(s->yp), yp0, n * sizeof(double));
    if ((flag = IDAReInit(c->mem, 0.0, s->y, s->yp))) return fail(s, c->mem, flag);
    if ((flag = sl_rearm_tstop(c))) return flag;
    if (s->has_sens) {
        sl_vectors_load(s->yS, n_sens, n, sens0);
        for (k = 0; k < n_sens; k++) N_VConst(0.0, s->ypS[k]);
        if ((flag = IDASensReInit(c->mem, sens_corrector(&s->sens), s->yS, s->ypS)))
            return fail(s, c->mem, flag);
    }
    if (s->core.has_adjoint) {
        if (s->adjoint_initialized && (flag = IDAAdjReInit(s->core.mem))) return fail(s, s->core.mem, flag);
        if (n_t > s->capacity) {
            free(s->fwd_y);
            free(s->fwd_yp);
            s->fwd_y = malloc(n_t * n * sizeof(double));
            s->fwd_yp = malloc(n_t * n * sizeof(double));
            s->capacity = s->fwd_y && s->fwd_yp ? n_t : 0;
            if (!s->capacity) return fail(s, NULL, IDA_MEM_FAIL);
        }
    }
    /* tout1 only sets the direction and time scale of the initial-condition search. */
    for (i = 0; i < n_t; i++)
        if (tvals[i] > t0) {
            tout1 = tvals[i] - t0;
            break;
        }
    if ((flag = IDACalcIC(s->core.mem, IDA_YA_YDP_INIT, tout1))) return fail(s, s->core.mem, flag);
    if ((flag = IDAGetConsistentIC(s->core.mem, s->y, s->yp))) return fail(s, s->core.mem, flag);
    memcpy(y0, DATA(s->y), n * sizeof(double));
    memcpy(yp0, DATA(s->yp), n * sizeof(double));
    memcpy(s->y0, y0, n * sizeof(double));
    memcpy(s->yp0, yp0, n * sizeof(double));
    if (s->has_sens && (flag = IDAGetSensConsistentIC(s->core.mem, s->yS, s->ypS)))
        return fail(s, s->core.mem, flag);
    for (i = 0; i < n_t; i++) {
        if (tvals[i] != t0) {
            if (s->core.has_adjoint && (flag = init_adjoint(s))) return flag;
            if (s->core.has_adjoint)
                flag = IDASolveF(s->core.mem, tvals[i] - t0, &tret, s->y, s->yp, IDA_NORMAL, &n_check);
            else
                flag = IDASolve(s->core.mem, tvals[i] - t0, &tret, s->y, s->yp, IDA_NORMAL);
            if (flag < 0) return fail(s, s->core.mem, flag);
            if ((flag = sl_check_reached(c, tvals[i]))) return flag;
            if (s->has_sens && (flag = IDAGetSens(s->core.mem, &tret, s->yS)))
                return fail(s, s->core.mem, flag);
        }
        memcpy(y_out + i * n, DATA(s->y), n * sizeof(double));
        if (yp_out) memcpy(yp_out + i * n, DATA(s->yp), n * sizeof(double));
        if (s->core.has_adjoint) {
            memcpy(s->fwd_y + i * n, DATA(s->y), n * sizeof(double));
            memcpy(s->fwd_yp + i * n, DATA(s->yp), n * sizeof(double));
        }
        if (s->has_sens) sl_vectors_store(s->yS, n_sens, n, sens_out + i * n_sens * n);
    }
    /* 5: IDAS' maximum order. */
    if (s->adjoint_initialized && c->adjoint.interpolation == SL_POLYNOMIAL)
        return sl_complete_last_interval(c, tvals[n_t - 1], 5, one_step, s);
    return 0;
}

int sl_idas_solve(sl_idas *s, double t0, double *y0, double *yp0, const double *sens0,
                  int64_t n_t, const double *tvals, double *y_out, double *yp_out,
                  double *sens_out)
{
    int flag = forward_solve(s, t0, y0, yp0, sens0, n_t, tvals, y_out, yp_out, sens_out);
    return sl_end_forward(&s->core, flag, n_t, tvals);
}

int sl_idas_forward_state(sl_idas *s, int backward, double t, double *yyp_out)
{
    int flag;
    sl_status failure = s->core.status; /* IDAS would report a failure here as the last message */
    double tau = t - s->core.t0;
    if (!isfinite(t)) return IDA_BAD_T;
    if (backward) flag = IDAGetAdjY(s->core.mem, tau, s->y, s->yp);
    else if (!(flag = IDAGetDky(s->core.mem, tau, 0, s->y))) flag = IDAGetDky(s->core.mem, tau, 1, s->yp);
    s->core.status = failure;
    if (flag) return flag;
    memcpy(yyp_out, DATA(s->y), N(s) * sizeof(double));
    memcpy(yyp_out + N(s), DATA(s->yp), N(s) * sizeof(double));
    return 0;
}
