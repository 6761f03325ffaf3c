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

#include "sl_internal.h"
#include "sl_idas.h"

struct sl_idas {
    sl_core core; /* integrator memory, status, time origin, adjoint, stats: sl_internal.h */
    sl_dae_problem problem;
    sl_sens_options sens;
    int has_sens;
    N_Vector y, yp, id;
    N_Vector *yS, *ypS;
    /* yyp is the kernels' input [y, y']. The *_cache values stay valid between a
       Jacobian-times-vector setup and its products, so they are kept apart. */
    double *yyp, *tmp, *jy_work, *jyp_work, *jypdot_work, *jac_work, *dfdp_work;
    double *jy_cache, *jyp_cache, *jypdot_cache;
    /* The adjoint: y, y' at t0 and at the output times of the forward solve, the
       backward problem's y' and ids, and the linear system of the jumps. */
    int adjoint_initialized;
    int64_t n_algebraic, capacity;
    double *fwd_y, *fwd_yp, *y0, *yp0, *grad_direct, *grad_scaled;
    double *kernel_y; /* [y, y'] of the last failed kernel call (status.kernel_y) */
    N_Vector ypB, idB, jump_x, jump_b;
    SUNMatrix jump_matrix;
    SUNLinearSolver jump_solver;
};

#define N(s) ((s)->problem.n_states)
#define DATA(v) N_VGetArrayPointer(v)
#define NNZ(colptr) ((colptr)[N(s)])

static const sl_calls IDAS_CALLS = {
    IDA_MEM_FAIL, IDA_ERR_FAIL, IDA_TSTOP_RETURN, IDA_NO_FWD, IDA_NORMAL,
    "IDA_ERR_FAIL", "IDA_TSTOP_RETURN", "IDA_NO_FWD",
    IDAGetReturnFlagName, IDAFree, IDAGetCurrentTime, IDAGetNumSteps, IDAGetNumResEvals,
    IDAGetNumJacEvals, IDAGetNumErrTestFails, IDAGetNumNonlinSolvConvFails, IDASetUserData,
    IDASVtolerances, IDASetMaxNumSteps, IDASetConstraints, IDASetLinearSolver, IDASetInitStep,
    IDASetStopTime, IDASensEEtolerances, IDASetSensErrCon, IDAGetAdjIDABmem, IDASetUserDataB,
    IDASVtolerancesB, IDASetMaxNumStepsB, IDASetLinearSolverB, IDAQuadSStolerancesB,
    IDASetQuadErrConB, IDAQuadReInitB, IDASolveB, IDAGetQuadB};

static int fail(sl_idas *s, void *mem, int flag) { return sl_fail(&s->core, mem, flag); }

/* Evaluate a kernel at t0 + tau and s->yyp = [y, y'] (a failure is remembered in status). */
static int call(sl_idas *s, sl_kernel kernel, const char *name, double tau, double *out)
{
    return sl_call_kernel(&s->core.status, 2 * N(s), kernel, name, s->core.t0 + tau, s->yyp,
                          s->problem.params, out);
}

/* Evaluate a kernel at (t0 + tau, y, y'). */
static int eval(sl_idas *s, sl_kernel kernel, const char *name, double tau, const double *y,
                const double *yp, double *out)
{
    int64_t n = N(s);
    memcpy(s->yyp, y, n * sizeof(double));
    memcpy(s->yyp + n, yp, n * sizeof(double));
    return call(s, kernel, name, tau, out);
}

/* Values of F_y, F_y' and (if it changes along the solution and jypdot is not NULL) of
   d/dt F_y'. */
static int eval_jacs(sl_idas *s, double tau, const double *y, const double *yp, double *jy,
                     double *jyp, double *jypdot)
{
    const sl_dae_problem *p = &s->problem;
    int flag = eval(s, p->jac_y, "jac_y", tau, y, yp, jy);
    if (flag) return flag;
    if ((flag = call(s, p->jac_yp, "jac_yp", tau, jyp))) return flag;
    if (jypdot && p->jac_yp_dot) return call(s, p->jac_yp_dot, "jac_yp_dot", tau, jypdot);
    return 0;
}

/* out (values on the union pattern P) = a F_y + b F_y' + c d/dt F_y'. */
static void combine(const sl_idas *s, const double *jy, const double *jyp,
                    const double *jypdot, double a, double b, double c, double *out)
{
    const sl_dae_problem *p = &s->problem;
    int64_t k;
    for (k = 0; k < NNZ(p->jac_colptr); k++) out[k] = 0.0;
    for (k = 0; k < NNZ(p->jy_colptr); k++) out[p->jy_map[k]] += a * jy[k];
    for (k = 0; k < NNZ(p->jyp_colptr); k++) out[p->jyp_map[k]] += b * jyp[k];
    if (p->jac_yp_dot && jypdot)
        for (k = 0; k < NNZ(p->jyp_colptr); k++) out[p->jyp_map[k]] += c * jypdot[k];
}

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

/* -- backward callbacks --------------------------------------------------------------- */

/* out = F_y^T lb - cj F_y'^T lb - (d/dt F_y')^T lb, from the given values. */
static void adjoint_product(sl_idas *s, const double *jy, const double *jyp,
                            const double *jypdot, const double *lb, double cj, double *out,
                            double *tmp)
{
    const sl_dae_problem *p = &s->problem;
    int64_t j, n = N(s);
    sl_csc_rmatvec(n, p->jy_colptr, p->jy_rows, jy, lb, 1.0, out);
    if (cj != 0.0) {
        sl_csc_rmatvec(n, p->jyp_colptr, p->jyp_rows, jyp, lb, -cj, tmp);
        for (j = 0; j < n; j++) out[j] += tmp[j];
    }
    if (p->jac_yp_dot) {
        sl_csc_rmatvec(n, p->jyp_colptr, p->jyp_rows, jypdot, lb, -1.0, tmp);
        for (j = 0; j < n; j++) out[j] += tmp[j];
    }
}

static int res_b_fn(double tau, N_Vector y, N_Vector yp, N_Vector yB, N_Vector ypB,
                    N_Vector rB, void *user_data)
{
    sl_idas *s = user_data;
    const sl_dae_problem *p = &s->problem;
    int64_t j, n = N(s);
    double *tmp = s->tmp;
    int flag = eval_jacs(s, tau, DATA(y), DATA(yp), s->jy_work, s->jyp_work, s->jypdot_work);
    if (flag) return flag;
    adjoint_product(s, s->jy_work, s->jyp_work, s->jypdot_work, DATA(yB), 0.0, DATA(rB), tmp);
    sl_csc_rmatvec(n, p->jyp_colptr, p->jyp_rows, s->jyp_work, DATA(ypB), -1.0, tmp);
    for (j = 0; j < n; j++) DATA(rB)[j] += tmp[j];
    return 0;
}

static int jac_b_fn(double tau, double cjB, N_Vector y, N_Vector yp, N_Vector yB,
                    N_Vector ypB, N_Vector rB, SUNMatrix JB, void *user_data, N_Vector tmp1,
                    N_Vector tmp2, N_Vector tmp3)
{
    sl_idas *s = user_data;
    int flag = eval_jacs(s, tau, DATA(y), DATA(yp), s->jy_work, s->jyp_work, s->jypdot_work);
    (void)yB; (void)ypB; (void)rB; (void)tmp1; (void)tmp2; (void)tmp3;
    if (flag) return flag;
    combine(s, s->jy_work, s->jyp_work, s->jypdot_work, 1.0, -cjB, -1.0, s->jac_work);
    return sl_matrix_fill(JB, N(s), s->problem.jact_colptr, s->problem.jact_rows,
                          s->problem.jact_perm, s->jac_work, 1.0);
}

static int jtsetup_b_fn(double tau, N_Vector y, N_Vector yp, N_Vector yB, N_Vector ypB,
                        N_Vector rB, double cjB, void *user_data)
{
    sl_idas *s = user_data;
    (void)yB; (void)ypB; (void)rB; (void)cjB;
    return eval_jacs(s, tau, DATA(y), DATA(yp), s->jy_cache, s->jyp_cache, s->jypdot_cache);
}

static int jtimes_b_fn(double tau, N_Vector y, N_Vector yp, N_Vector yB, N_Vector ypB,
                       N_Vector rB, N_Vector vB, N_Vector JvB, double cjB, void *user_data,
                       N_Vector tmp1, N_Vector tmp2)
{
    sl_idas *s = user_data;
    (void)tau; (void)y; (void)yp; (void)yB; (void)ypB; (void)rB; (void)tmp2;
    adjoint_product(s, s->jy_cache, s->jyp_cache, s->jypdot_cache, DATA(vB), cjB, DATA(JvB),
                    DATA(tmp1));
    return 0;
}

static int quad_b_fn(double tau, N_Vector y, N_Vector yp, N_Vector yB, N_Vector ypB,
                     N_Vector qBdot, void *user_data)
{
    sl_idas *s = user_data;
    const sl_dae_problem *p = &s->problem;
    int flag = eval(s, p->dfdp, "dfdp", tau, DATA(y), DATA(yp), s->dfdp_work);
    (void)ypB;
    if (flag) return flag;
    sl_csc_rmatvec(p->n_dparams, p->dfdp_colptr, p->dfdp_rows, s->dfdp_work, DATA(yB), -1.0,
                   DATA(qBdot));
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

static int configure_backward(void *solver)
{
    sl_idas *s = solver;
    sl_core *c = &s->core;
    int flag = 0;
    if (s->n_algebraic > 0
        && ((flag = IDASetIdB(c->mem, c->which, s->idB))
            || (flag = IDASetSuppressAlgB(c->mem, c->which, 1))))
        return flag;
    if (c->matrixB) return IDASetJacFnB(c->mem, c->which, jac_b_fn);
    return IDASetJacTimesB(c->mem, c->which, jtsetup_b_fn, jtimes_b_fn);
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
    s->has_sens = sens != NULL && sens->mode != SL_SENS_NONE && sens->n_sens > 0;
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
    if ((flag = sl_begin_forward(c, t0))) return flag;
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

/* -- backward solve ------------------------------------------------------------------- */

static int create_backward(sl_idas *s, double tau_start)
{
    sl_core *c = &s->core;
    void *mem_b;
    int flag;
    if ((flag = IDACreateB(c->mem, &c->which))) return fail(s, c->mem, flag);
    mem_b = IDAGetAdjIDABmem(c->mem, c->which);
#if !SL_SUNDIALS_7
    IDASetErrHandlerFn(mem_b, sl_error_handler_6, &c->messages);
#endif
    if ((flag = IDAInitB(c->mem, c->which, res_b_fn, tau_start, c->yB, s->ypB))
        || (c->has_quad && (flag = IDAQuadInitB(c->mem, c->which, quad_b_fn, c->qB))))
        return fail(s, mem_b, flag);
    return sl_configure_backward(c, s, N(s), s->problem.jact_colptr, configure_backward);
}

/* Integrate lambda (core.yB, ypB, consistent) and the quadrature (core.qB) from tvals[i]
   to t_end. */
static int integrate_backward(sl_idas *s, const double *tvals, int64_t i, double t_end)
{
    sl_core *c = &s->core;
    double tret, tau_start = tvals[i] - c->t0;
    int flag;
    if (!c->backward_created) {
        if ((flag = create_backward(s, tau_start))) return flag;
    } else {
        if ((flag = IDAReInitB(c->mem, c->which, tau_start, c->yB, s->ypB)))
            return fail(s, c->mem, flag);
        if ((flag = sl_restart_quadrature(c))) return flag;
    }
    if ((flag = sl_solve_backward(c, t_end))) return flag;
    if ((flag = IDAGetB(c->mem, c->which, &tret, c->yB, s->ypB))) return fail(s, c->mem, flag);
    return sl_read_quadrature(c);
}

static int jump_fail(sl_idas *s, double t, int flag, const char *name, const char *message)
{
    return sl_report(&s->core.status, flag, t, name, "%s", message);
}

/* x = K^-T b with the factored jump matrix. */
static int jump_solve(sl_idas *s, double t, const double *b)
{
    memcpy(DATA(s->jump_b), b, N(s) * sizeof(double));
    if (SUNLinSolSolve(s->jump_solver, s->jump_matrix, s->jump_x, s->jump_b, 0.0))
        return jump_fail(s, t, IDA_LSOLVE_FAIL, "IDA_LSOLVE_FAIL", "solving with the jump matrix failed");
    return 0;
}

/* At output time tvals[i], with K = [F_y' on differential equations; F_y on algebraic
   ones] (index 1 means K is nonsingular):
   1. Add the loss gradient grad to the adjoint: solve K^T x = grad, then lambda -= x on
      differential equations and dL/dp -= x_i dF_i/dp on algebraic ones. Why: for every
      consistent change (dy, dp) at tvals[i], grad.dy = x_D^T F_y' dy - x_A^T F_A,p dp,
      since the algebraic equations stay satisfied (F_A,y dy = -F_A,p dp); the first term
      is what lambda's jump carries back to t0.
   2. If the backward integration goes on, make (lambda, lambda') consistent with the
      adjoint DAE: with l0 = lambda zeroed on algebraic equations and
      r = (F_y - d/dt F_y')^T l0, solve K^T v = r; then lambda' = v and lambda = -v on
      algebraic equations, lambda' = v on differential ones (lambda' = 0 on algebraic ones,
      which IDAS does not use). Semi-explicit form: lambda_z = g_z^-T f_z^T lambda_x and
      lambda_x' = -f_x^T lambda_x + g_x^T lambda_z. */
static int at_output_time(sl_idas *s, const double *tvals, int64_t i, const double *grad,
                          int consistent)
{
    const sl_dae_problem *p = &s->problem;
    int64_t j, k, n = N(s);
    const double *y = s->fwd_y + i * n, *yp = s->fwd_yp + i * n;
    double t = tvals[i], *lambda = DATA(s->core.yB), *lambda_p = DATA(s->ypB), *x = DATA(s->jump_x);
    int flag, any = 0, any_algebraic = 0, use_k = !(p->jac_yp_identity && s->n_algebraic == 0);
    for (j = 0; j < n; j++)
        if (grad[j] != 0.0) {
            any = 1;
            if (p->id[j] == 0.0) any_algebraic = 1;
        }
    if (!any && !consistent) return 0;
    if (eval_jacs(s, t - s->core.t0, y, yp, s->jy_work, s->jyp_work, s->jypdot_work))
        return jump_fail(s, t, IDA_RES_FAIL, "IDA_RES_FAIL", "a Jacobian kernel failed at an output time");
    if (use_k) {
        for (k = 0; k < NNZ(p->jac_colptr); k++) s->jac_work[k] = 0.0;
        for (j = 0; j < n; j++) {
            for (k = p->jy_colptr[j]; k < p->jy_colptr[j + 1]; k++)
                if (p->equation_id[p->jy_rows[k]] == 0.0) s->jac_work[p->jy_map[k]] = s->jy_work[k];
            for (k = p->jyp_colptr[j]; k < p->jyp_colptr[j + 1]; k++)
                if (p->equation_id[p->jyp_rows[k]] != 0.0) s->jac_work[p->jyp_map[k]] = s->jyp_work[k];
        }
        sl_matrix_fill(s->jump_matrix, n, p->jact_colptr, p->jact_rows, p->jact_perm, s->jac_work, 1.0);
        if (SUNLinSolSetup(s->jump_solver, s->jump_matrix))
            return jump_fail(s, t, IDA_LSETUP_FAIL, "IDA_LSETUP_FAIL",
                             "the matrix of dF/dy' (differential equations) and dF/dy (algebraic "
                             "equations) is singular at this output time: the DAE is not index 1 there");
    }
    if (any && !use_k) {
        for (j = 0; j < n; j++) lambda[j] -= grad[j];
    } else if (any && p->jac_yp_identity && !any_algebraic) {
        for (j = 0; j < n; j++)
            if (p->id[j] != 0.0) lambda[j] -= grad[j];
    } else if (any) {
        if ((flag = jump_solve(s, t, grad))) return flag;
        for (j = 0; j < n; j++)
            if (p->equation_id[j] != 0.0) lambda[j] -= x[j];
        if (any_algebraic && p->n_dparams > 0) {
            if (call(s, p->dfdp, "dfdp", t - s->core.t0, s->dfdp_work))
                return jump_fail(s, t, IDA_RES_FAIL, "IDA_RES_FAIL", "the dF/dp kernel failed at an output time");
            for (j = 0; j < p->n_dparams; j++)
                for (k = p->dfdp_colptr[j]; k < p->dfdp_colptr[j + 1]; k++)
                    if (p->equation_id[p->dfdp_rows[k]] == 0.0)
                        s->grad_direct[j] -= x[p->dfdp_rows[k]] * s->dfdp_work[k];
        }
    }
    if (!consistent) return 0;
    for (j = 0; j < n; j++)
        if (p->equation_id[j] == 0.0) lambda[j] = 0.0;
    adjoint_product(s, s->jy_work, s->jyp_work, s->jypdot_work, lambda, 0.0, lambda_p, s->tmp);
    if (!use_k) return 0;
    if ((flag = jump_solve(s, t, lambda_p))) return flag;
    for (j = 0; j < n; j++) {
        if (p->equation_id[j] != 0.0) {
            lambda_p[j] = x[j];
        } else {
            lambda[j] = -x[j];
            lambda_p[j] = 0.0;
        }
    }
    return 0;
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

int sl_idas_backward(sl_idas *s, double t0, int64_t n_t, const double *tvals,
                     const double *grads, double *grad_out, double *lambda_out)
{
    const sl_dae_problem *p = &s->problem;
    int64_t n = N(s), i, j;
    double scale = sl_grads_scale(n_t * n, grads); /* see sl_internal.h */
    int flag = sl_begin_backward(&s->core, t0, n_t, tvals);
    if (flag) return flag;
    N_VConst(0.0, s->core.yB);
    N_VConst(0.0, s->ypB);
    N_VConst(0.0, s->core.qB);
    for (j = 0; j < p->n_dparams; j++) s->grad_direct[j] = 0.0;
    for (i = n_t - 1; i >= 0; i--) {
        double t_end = i > 0 ? tvals[i - 1] : t0;
        for (j = 0; j < n; j++) s->grad_scaled[j] = grads[i * n + j] / scale;
        if ((flag = at_output_time(s, tvals, i, s->grad_scaled, t_end < tvals[i]))) return flag;
        if (t_end < tvals[i] && (flag = integrate_backward(s, tvals, i, t_end))) return flag;
    }
    /* lambda_out = F_y'(t0)^T lambda(t0): only its differential part carries information. */
    if (eval_jacs(s, 0.0, s->y0, s->yp0, s->jy_work, s->jyp_work, NULL))
        return jump_fail(s, t0, IDA_RES_FAIL, "IDA_RES_FAIL", "a Jacobian kernel failed at t0");
    sl_csc_rmatvec(n, p->jyp_colptr, p->jyp_rows, s->jyp_work, DATA(s->core.yB), 1.0, lambda_out);
    for (j = 0; j < p->n_dparams; j++) grad_out[j] = DATA(s->core.qB)[j] + s->grad_direct[j];
    if ((flag = sl_scale_gradient(&s->core.status, t0, scale, n, lambda_out))) return flag;
    return sl_scale_gradient(&s->core.status, t0, scale, p->n_dparams, grad_out);
}
