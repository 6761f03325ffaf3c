/* The IDAS adjoint: the backward DAE, its quadrature and the jump conditions at output
   times (the math is at the top of sl_idas.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <idas/idas.h>
#include <idas/idas_ls.h>
#include <nvector/nvector_serial.h>

#include "sl_idas_internal.h"

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
