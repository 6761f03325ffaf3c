/* solver="auto": ERK within a step budget, else BDF; see sl_auto.h. */
#include <stdlib.h>

#include <cvodes/cvodes.h>

#include "sl_internal.h"
#include "sl_cvodes.h"
#include "sl_arkode.h"
#include "sl_auto.h"

struct sl_auto {
    sl_arkode *explicit_solver;
    sl_cvodes *bdf;
    int use_bdf; /* the last forward solve's method */
};

int sl_auto_backward_method(int forward, int linear_solver, int quad_errcon)
{
    if (forward == SL_ERK || forward == SL_DIRK) return forward;
    return linear_solver == SL_SPGMR || !quad_errcon ? forward : SL_DIRK;
}

/* options and the adjoint's with the forward method set to method, and the backward one
   to sl_auto_backward_method's unless the adjoint names a one-step method (SL_ERK,
   SL_DIRK), which both take. */
static void with_method(const sl_options *options, const sl_adjoint_options *adjoint, int method,
                        sl_options *own, sl_adjoint_options *own_adjoint)
{
    *own = *options;
    own->method = method;
    if (!adjoint) return;
    *own_adjoint = *adjoint;
    if (adjoint->backward.method == SL_AUTO)
        own_adjoint->backward.method = sl_auto_backward_method(
            method, adjoint->backward.linear_solver, adjoint->quad_errcon);
}

int sl_auto_create(const sl_problem *problem, const sl_options *options,
                   const sl_sens_options *sens, const sl_adjoint_options *adjoint,
                   sl_auto **out)
{
    sl_auto *s = calloc(1, sizeof(*s));
    sl_options own;
    sl_adjoint_options own_adjoint;
    int flag;
    *out = s;
    if (!s) return CV_MEM_FAIL;
    with_method(options, adjoint, SL_ERK, &own, &own_adjoint);
    if ((flag = sl_arkode_create(problem, &own, sens, adjoint ? &own_adjoint : NULL,
                                 &s->explicit_solver)))
        return flag;
    sl_arkode_set_step_budget(s->explicit_solver, SL_AUTO_ERK_STEPS);
    with_method(options, adjoint, SL_BDF, &own, &own_adjoint);
    return sl_cvodes_create(problem, &own, sens, adjoint ? &own_adjoint : NULL, &s->bdf);
}

void sl_auto_free(sl_auto *s)
{
    if (!s) return;
    sl_arkode_free(s->explicit_solver);
    sl_cvodes_free(s->bdf);
    free(s);
}

const sl_status *sl_auto_status(const sl_auto *s)
{
    return s->use_bdf ? sl_cvodes_status(s->bdf) : sl_arkode_status(s->explicit_solver);
}

void sl_auto_stats(const sl_auto *s, sl_stats *stats)
{
    if (s->use_bdf) sl_cvodes_stats(s->bdf, stats);
    else sl_arkode_stats(s->explicit_solver, stats);
}

int sl_auto_method(const sl_auto *s) { return s->use_bdf ? SL_BDF : SL_ERK; }

int sl_auto_solve(sl_auto *s, double t0, const double *y0, const double *sens0, int64_t n_t,
                  const double *tvals, double *y_out, double *sens_out)
{
    return sl_auto_solve_doses(s, t0, y0, sens0, n_t, tvals, NULL, y_out, sens_out);
}

int sl_auto_solve_doses(sl_auto *s, double t0, const double *y0, const double *sens0,
                        int64_t n_t, const double *tvals, const sl_doses *doses,
                        double *y_out, double *sens_out)
{
    s->use_bdf = 0;
    if (!sl_arkode_solve_doses(s->explicit_solver, t0, y0, sens0, n_t, tvals, doses, y_out,
                               sens_out))
        return 0;
    s->use_bdf = 1;
    return sl_cvodes_solve_doses(s->bdf, t0, y0, sens0, n_t, tvals, doses, y_out, sens_out);
}

void sl_auto_add_infusions(const sl_auto *s, double t, int after, double *out)
{
    if (s->use_bdf) sl_cvodes_add_infusions(s->bdf, t, after, out);
    else sl_arkode_add_infusions(s->explicit_solver, t, after, out);
}

int sl_auto_forward_state(sl_auto *s, int backward, double t, double *y_out)
{
    return s->use_bdf ? sl_cvodes_forward_state(s->bdf, backward, t, y_out)
                      : sl_arkode_forward_state(s->explicit_solver, backward, t, y_out);
}

int sl_auto_backward(sl_auto *s, double t0, int64_t n_t, const double *tvals,
                     const double *grads, double *grad_out, double *lambda_out)
{
    return sl_auto_backward_doses(s, t0, n_t, tvals, grads, grad_out, lambda_out, NULL, NULL, NULL);
}

int sl_auto_backward_doses(sl_auto *s, double t0, int64_t n_t, const double *tvals,
                           const double *grads, double *grad_out, double *lambda_out,
                           double *dose_time, double *dose_amount, double *dose_rate)
{
    return s->use_bdf
        ? sl_cvodes_backward_doses(s->bdf, t0, n_t, tvals, grads, grad_out, lambda_out,
                                   dose_time, dose_amount, dose_rate)
        : sl_arkode_backward_doses(s->explicit_solver, t0, n_t, tvals, grads, grad_out,
                                   lambda_out, dose_time, dose_amount, dose_rate);
}
