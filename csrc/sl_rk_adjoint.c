/* Adjoint by explicit Runge-Kutta over a stored forward trajectory; see sl_rk_adjoint.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <arkode/arkode_erkstep.h>
#include <nvector/nvector_serial.h>

#include "sl_internal.h"
#include "sl_rk_adjoint.h"

/* SUNDIALS 7.2 replaced the ERKStep* getters and setters by ARKODE's generic ARKode* calls
   (the old names are deprecated); ERK(Name) picks the one this SUNDIALS has. */
#if SUNDIALS_VERSION_MAJOR > 7 || (SUNDIALS_VERSION_MAJOR == 7 && SUNDIALS_VERSION_MINOR >= 2)
#define ERK(name) ARKode##name
#define ERK_RHS_EVALS(mem, count) ARKodeGetNumRhsEvals(mem, 0, count)
#else
#define ERK(name) ERKStep##name
#define ERK_RHS_EVALS(mem, count) ERKStepGetNumRhsEvals(mem, count)
#endif

struct sl_rk_adjoint {
    sl_problem problem;
    sl_adjoint_options options;
    sl_status *status;
    /* The forward trajectory: times t[k], states y[k*n..], derivatives yd[k*n..]. */
    int64_t length, capacity, cursor;
    double *t, *y, *yd;
    /* Scratch: the interpolated state and kernel values. */
    double *y_at, *jac_work, *dfdp_work;
    /* The backward state z = (lambda, q) and its error weights' absolute parts. */
    void *mem;
    N_Vector z;
    double *atol;
};

#define N(a) ((a)->problem.n_states)
#define DATA(v) N_VGetArrayPointer(v)

static int fail(sl_rk_adjoint *a, int flag)
{
    double t = NAN;
    char *name = ERK(GetReturnFlagName)(flag);
    if (a->mem) ERK(GetCurrentTime)(a->mem, &t);
    sl_status_set(a->status, flag, t, name);
    free(name);
    return flag;
}

/* The cubic Hermite interpolant of the stored steps at t (the same accuracy as CVODES'
   default adjoint interpolation). Backward solves query decreasing times, so the search
   starts from the interval of the previous query. */
static void interpolate(sl_rk_adjoint *a, double t, double *out)
{
    int64_t n = N(a), k = a->cursor, j;
    const double *y0, *y1, *d0, *d1;
    double h, s, h00, h10, h01, h11;
    if (a->length == 1) {
        memcpy(out, a->y, n * sizeof(double));
        return;
    }
    while (k > 0 && t < a->t[k]) k--;
    while (k < a->length - 2 && t > a->t[k + 1]) k++;
    a->cursor = k;
    h = a->t[k + 1] - a->t[k];
    s = (t - a->t[k]) / h;
    h00 = (1.0 + 2.0 * s) * (1.0 - s) * (1.0 - s);
    h10 = s * (1.0 - s) * (1.0 - s) * h;
    h01 = s * s * (3.0 - 2.0 * s);
    h11 = s * s * (s - 1.0) * h;
    y0 = a->y + k * n; y1 = y0 + n;
    d0 = a->yd + k * n; d1 = d0 + n;
    for (j = 0; j < n; j++) out[j] = h00 * y0[j] + h10 * d0[j] + h01 * y1[j] + h11 * d1[j];
}

int sl_rk_adjoint_forward_state(sl_rk_adjoint *a, double t, double *out)
{
    if (a->length < 1 || t < a->t[0] || t > a->t[a->length - 1]) return ARK_ILL_INPUT;
    interpolate(a, t, out);
    return 0;
}

/* z = (lambda, q): lambda' = -J^T lambda, q' = lambda^T df/dp. */
static int rhs(double t, N_Vector z, N_Vector zdot, void *user_data)
{
    sl_rk_adjoint *a = user_data;
    const sl_problem *p = &a->problem;
    double *lambda = DATA(z), *out = DATA(zdot);
    int flag;
    interpolate(a, t, a->y_at);
    if ((flag = sl_call_kernel(a->status, N(a), p->jac, "jac", t, a->y_at, p->params, a->jac_work)))
        return flag;
    sl_csc_rmatvec(N(a), p->jac_colptr, p->jac_rows, a->jac_work, lambda, -1.0, out);
    if (p->n_dparams == 0) return 0;
    if ((flag = sl_call_kernel(a->status, N(a), p->dfdp, "dfdp", t, a->y_at, p->params,
                               a->dfdp_work)))
        return flag;
    sl_csc_rmatvec(p->n_dparams, p->dfdp_colptr, p->dfdp_rows, a->dfdp_work, lambda, 1.0,
                   out + N(a));
    return 0;
}

/* Error weights with the backward tolerances for lambda and the quadrature ones for q
   (weight 0, i.e. no error control, for q when quad_errcon is off). */
static int weights(N_Vector z, N_Vector ewt, void *user_data)
{
    sl_rk_adjoint *a = user_data;
    const double *v = DATA(z);
    double *w = DATA(ewt);
    int64_t j, n = N(a);
    for (j = 0; j < n; j++) w[j] = 1.0 / (a->options.backward.rtol * fabs(v[j]) + a->atol[j]);
    for (j = n; j < n + a->problem.n_dparams; j++)
        w[j] = a->options.quad_errcon
            ? 1.0 / (a->options.rtol_quad * fabs(v[j]) + a->options.atol_quad) : 0.0;
    return 0;
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
    a->y_at = calloc(n, sizeof(double));
    a->atol = malloc(n * sizeof(double));
    a->jac_work = calloc(problem->jac_colptr[n] + 1, sizeof(double));
    a->dfdp_work = calloc(problem->dfdp_colptr[problem->n_dparams] + 1, sizeof(double));
    a->z = N_VNew_Serial(n_z, ctx);
    if (!a->y_at || !a->atol || !a->jac_work || !a->dfdp_work || !a->z) return fail(a, ARK_MEM_FAIL);
    memcpy(a->atol, options->backward.atol, n * sizeof(double));
    N_VConst(0.0, a->z);
    a->mem = ERKStepCreate(rhs, 0.0, a->z, ctx);
    if (!a->mem) return fail(a, ARK_MEM_FAIL);
#if !SL_SUNDIALS_7
    ERKStepSetErrHandlerFn(a->mem, sl_error_handler_6, status);
#endif
    if ((flag = ERK(SetUserData)(a->mem, a))) return fail(a, flag);
    /* Dormand-Prince 5(4): the usual choice at moderate to tight tolerances; higher-order
       tables (Verner 6(5), Fehlberg 8(7)) measured slower and less accurate here, as the
       cubic interpolation of the forward solution limits what a higher order can gain. */
    if ((flag = ERKStepSetTableNum(a->mem, ARKODE_DORMAND_PRINCE_7_4_5))) return fail(a, flag);
    if ((flag = ERK(WFtolerances)(a->mem, weights))) return fail(a, flag);
    if ((flag = ERK(SetMaxNumSteps)(a->mem, options->backward.max_steps))) return fail(a, flag);
    return 0;
}

void sl_rk_adjoint_free(sl_rk_adjoint *a)
{
    if (!a) return;
    if (a->mem) ERK(Free)(&a->mem);
    if (a->z) N_VDestroy(a->z);
    free(a->t);
    free(a->y);
    free(a->yd);
    free(a->y_at);
    free(a->atol);
    free(a->jac_work);
    free(a->dfdp_work);
    free(a);
}

void sl_rk_adjoint_clear(sl_rk_adjoint *a)
{
    a->length = 0;
    a->cursor = 0;
}

int sl_rk_adjoint_record(sl_rk_adjoint *a, double t, const double *y, const double *yd)
{
    int64_t n = N(a);
    if (a->length == a->capacity) {
        int64_t capacity = a->capacity ? 2 * a->capacity : 256;
        double *tt = realloc(a->t, capacity * sizeof(double));
        double *yy = tt ? realloc(a->y, capacity * n * sizeof(double)) : NULL;
        double *dd = yy ? realloc(a->yd, capacity * n * sizeof(double)) : NULL;
        if (tt) a->t = tt;
        if (yy) a->y = yy;
        if (dd) a->yd = dd;
        if (!dd) return ARK_MEM_FAIL;
        a->capacity = capacity;
    }
    a->t[a->length] = t;
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
    double tret;
    long steps[2], evals[2], fails[2];
    int flag;
    if ((flag = ERK(SetInitStep)(a->mem, w->h))) return fail(a, flag);
    if ((flag = ERK(Reset)(a->mem, t_start, a->z))) return fail(a, flag);
    if ((flag = ERK(SetStopTime)(a->mem, t_end))) return fail(a, flag);
    ERK(GetNumSteps)(a->mem, &steps[0]);
    ERK_RHS_EVALS(a->mem, &evals[0]);
    ERK(GetNumErrTestFails)(a->mem, &fails[0]);
    flag = ERK(Evolve)(a->mem, t_end, a->z, &tret, ARK_NORMAL);
    ERK(GetNumSteps)(a->mem, &steps[1]);
    ERK_RHS_EVALS(a->mem, &evals[1]);
    ERK(GetNumErrTestFails)(a->mem, &fails[1]);
    w->stats->steps += steps[1] - steps[0];
    w->stats->rhs_evals += evals[1] - evals[0];
    w->stats->error_test_fails += fails[1] - fails[0];
    if (flag < 0) return fail(a, flag);
    ERK(GetCurrentStep)(a->mem, &w->h);
    return 0;
}

int sl_rk_adjoint_backward(sl_rk_adjoint *a, double t0, int64_t n_t, const double *tvals,
                           const double *grads, double scale, double *grad_out,
                           double *lambda_out, sl_stats *stats)
{
    int64_t n = N(a);
    sweep w = {a, stats, 0.0};
    int flag;
    if (a->length < 1 || a->t[0] > t0 || a->t[a->length - 1] < tvals[n_t - 1]) {
        sl_status_set(a->status, ARK_ILL_INPUT, t0, "ARK_ILL_INPUT");
        return ARK_ILL_INPUT;
    }
    a->cursor = a->length - 1;
    N_VConst(0.0, a->z);
    if ((flag = sl_adjoint_sweep(&w, integrate, n, DATA(a->z), t0, n_t, tvals, grads, scale)))
        return flag;
    memcpy(lambda_out, DATA(a->z), n * sizeof(double));
    memcpy(grad_out, DATA(a->z) + n, a->problem.n_dparams * sizeof(double));
    return 0;
}
