/* The IDAS solver's state, shared by its forward part (sl_idas.c) and its adjoint
   (sl_idas_adjoint.c); not part of the Python interface. */
#ifndef SL_IDAS_INTERNAL_H
#define SL_IDAS_INTERNAL_H

#include <string.h>

#include <idas/idas.h>
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

static inline int fail(sl_idas *s, void *mem, int flag) { return sl_fail(&s->core, mem, flag); }

/* Evaluate a kernel at t0 + tau and s->yyp = [y, y'] (a failure is remembered in status). */
static inline int call(sl_idas *s, sl_kernel kernel, const char *name, double tau, double *out)
{
    return sl_call_kernel(&s->core.status, 2 * N(s), kernel, name, s->core.t0 + tau, s->yyp,
                          s->problem.params, out);
}

/* Evaluate a kernel at (t0 + tau, y, y'). */
static inline int eval(sl_idas *s, sl_kernel kernel, const char *name, double tau, const double *y,
                const double *yp, double *out)
{
    int64_t n = N(s);
    memcpy(s->yyp, y, n * sizeof(double));
    memcpy(s->yyp + n, yp, n * sizeof(double));
    return call(s, kernel, name, tau, out);
}

/* Values of F_y, F_y' and (if it changes along the solution and jypdot is not NULL) of
   d/dt F_y'. */
static inline int eval_jacs(sl_idas *s, double tau, const double *y, const double *yp, double *jy,
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
static inline void combine(const sl_idas *s, const double *jy, const double *jyp,
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

#endif
