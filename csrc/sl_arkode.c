/* Forward solves by ARKODE's explicit Runge-Kutta method; see sl_arkode.h.

   As the CVODES backend, ERKStep integrates in tau = t - t0 (t0 of the last solve), the
   kernels get t0 + tau and everything reported is in t. With forward sensitivities the
   integrated vector is (y, S_0, ..., S_{n_sens-1}), each n_states long: one error test and
   one step size for all, as CVODES' simultaneous corrector. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <arkode/arkode_erkstep.h>
#include <nvector/nvector_serial.h>

#include "sl_internal.h"
#include "sl_arkode.h"
#include "sl_rk_adjoint.h"

/* Tsitouras 5(4) where this SUNDIALS has it (7.4 on), else Dormand-Prince 5(4): both
   7-stage pairs whose last stage is the next step's first. */
#if SUNDIALS_VERSION_MAJOR > 7 || (SUNDIALS_VERSION_MAJOR == 7 && SUNDIALS_VERSION_MINOR >= 4)
#define FORWARD_TABLE ARKODE_TSITOURAS_7_4_5
#else
#define FORWARD_TABLE ARKODE_DORMAND_PRINCE_7_4_5
#endif

struct sl_arkode {
    sl_problem problem;
    int64_t n_sens; /* 0 without forward sensitivities */
    int sens_errcon;
    double rtol;
    double *atol; /* n_states entries, for y and for each S_k */
    double tstop; /* NaN: none. Set per solve, as ARKODE forgets it once reached. */
    double t0; /* of the last solve: the origin of tau */
    int64_t max_steps;
    sl_status status;
    sl_messages messages; /* SUNDIALS' messages, into status */
    SUNContext ctx;
    void *mem;
    N_Vector y; /* (y, S): n_states * (1 + n_sens) */
    N_Vector work; /* as long as y: y' while recording, interpolated states */
    double *jac_work, *dfdp_work;
    double *kernel_y; /* the state of the last failed kernel call (status.kernel_y) */
    /* The adjoint: the forward solve it belongs to and the recorded trajectory. */
    sl_rk_adjoint *rk;
    long recording_evals; /* the rhs evaluations of the last solve outside ARKODE */
    int forward_valid;
    double forward_t0, forward_tlast;
    sl_stats forward_stats, backward_stats;
};

#define N(s) ((s)->problem.n_states)
#define DATA(v) N_VGetArrayPointer(v)

static int fail(sl_arkode *s, int flag)
{
    double tau = NAN;
    char *name = SL_ERK(GetReturnFlagName)(flag);
    if (s->mem) SL_ERK(GetCurrentTime)(s->mem, &tau);
    sl_status_set(&s->status, flag, s->t0 + tau, name);
    free(name);
    return flag;
}

/* The kernel at time t0 + tau. */
static int call(sl_arkode *s, sl_kernel kernel, const char *name, double tau, const double *y,
                double *out)
{
    return sl_call_kernel(&s->status, N(s), kernel, name, s->t0 + tau, y, s->problem.params, out);
}

/* y' = f(t, y) and, with sensitivities, S_k' = J S_k + df/dp_k (the source term only for
   the derivative params, the first n_dparams of the S_k). */
static int rhs_fn(double tau, N_Vector z, N_Vector zdot, void *user_data)
{
    sl_arkode *s = user_data;
    const sl_problem *p = &s->problem;
    const double *y = DATA(z);
    double *out = DATA(zdot);
    int64_t n = N(s), k, kk;
    int flag = call(s, p->rhs, "rhs", tau, y, out);
    if (flag || s->n_sens == 0) return flag;
    if ((flag = call(s, p->jac, "jac", tau, y, s->jac_work))) return flag;
    if (p->n_dparams > 0 && (flag = call(s, p->dfdp, "dfdp", tau, y, s->dfdp_work)))
        return flag;
    for (k = 0; k < s->n_sens; k++) {
        double *sk_out = out + (k + 1) * n;
        sl_csc_matvec(n, n, p->jac_colptr, p->jac_rows, s->jac_work, y + (k + 1) * n, 1.0,
                      sk_out);
        if (k < p->n_dparams)
            for (kk = p->dfdp_colptr[k]; kk < p->dfdp_colptr[k + 1]; kk++)
                sk_out[p->dfdp_rows[kk]] += s->dfdp_work[kk];
    }
    return 0;
}

/* Error weights sqrt(1 + n_sens) / (rtol |v| + atol) for y and each S_k (the
   sensitivities get the states' atol, as CVODES' estimated sensitivity tolerances), 0 for
   the S_k without sens_errcon. ARKODE's norm is the RMS over the whole vector (y, S): the
   factor makes it the root of the sum of the blocks' squared RMS errors, so each block's
   error, y's in particular, is kept within its tolerance (CVODES tests their maximum). A
   zero denominator (atol = 0 at v = 0) has no weight: an error. */
static int weights(N_Vector z, N_Vector ewt, void *user_data)
{
    sl_arkode *s = user_data;
    const double *v = DATA(z);
    double *w = DATA(ewt), blocks = sqrt(1.0 + (double)s->n_sens);
    int64_t n = N(s), count = s->sens_errcon ? n * (1 + s->n_sens) : n, j;
    for (j = 0; j < count; j++) {
        double scale = s->rtol * fabs(v[j]) + s->atol[j % n];
        if (!(scale > 0.0)) return -1;
        w[j] = blocks / scale;
    }
    for (; j < n * (1 + s->n_sens); j++) w[j] = 0.0;
    return 0;
}

int sl_arkode_create(const sl_problem *problem, const sl_options *options,
                     const sl_sens_options *sens, const sl_adjoint_options *adjoint,
                     sl_arkode **out)
{
    sl_arkode *s = calloc(1, sizeof(*s));
    int flag;
    int64_t n = problem->n_states, n_total;
    *out = s;
    if (!s) return ARK_MEM_FAIL;
    s->problem = *problem;
    s->messages.status = &s->status;
    s->messages.t0 = &s->t0;
    s->rtol = options->rtol;
    s->tstop = options->tstop;
    s->max_steps = options->max_steps;
    if (sens != NULL && sens->mode != SL_SENS_NONE) {
        s->n_sens = sens->n_sens;
        s->sens_errcon = sens->errcon;
    }
    n_total = n * (1 + s->n_sens);
    s->atol = malloc(n * sizeof(double));
    s->jac_work = calloc(problem->jac_colptr[n] + 1, sizeof(double));
    s->dfdp_work = calloc(problem->dfdp_colptr[problem->n_dparams] + 1, sizeof(double));
    s->kernel_y = calloc(n + 1, sizeof(double));
    s->status.kernel_y = s->kernel_y;
    if (!s->atol || !s->jac_work || !s->dfdp_work || !s->kernel_y) return fail(s, ARK_MEM_FAIL);
    memcpy(s->atol, options->atol, n * sizeof(double));
    if (sl_context_create(&s->ctx, &s->messages)) return fail(s, ARK_MEM_FAIL);
    s->y = N_VNew_Serial(n_total, s->ctx);
    s->work = N_VNew_Serial(n_total, s->ctx);
    if (!s->y || !s->work) return fail(s, ARK_MEM_FAIL);
    N_VConst(0.0, s->y);
    /* ERKStep forms each stage and solution as a linear combination of stage derivatives:
       fused, that is one pass instead of a scale and a sum per term (its vectors are clones
       of y and inherit it; measured 0.86x the time of a Lotka-Volterra solve). */
    if (N_VEnableFusedOps_Serial(s->y, 1)) return fail(s, ARK_MEM_FAIL);
    if (!(s->mem = ERKStepCreate(rhs_fn, 0.0, s->y, s->ctx))) return fail(s, ARK_MEM_FAIL);
#if !SL_SUNDIALS_7
    ERKStepSetErrHandlerFn(s->mem, sl_error_handler_6, &s->messages);
#endif
    if ((flag = ERKStepSetTableNum(s->mem, FORWARD_TABLE))) return fail(s, flag);
    if ((flag = SL_ERK(SetUserData)(s->mem, s))) return fail(s, flag);
    if ((flag = SL_ERK(WFtolerances)(s->mem, weights))) return fail(s, flag);
    if ((flag = SL_ERK(SetMaxNumSteps)(s->mem, options->max_steps))) return fail(s, flag);
    if (adjoint != NULL
        && (flag = sl_rk_adjoint_create(problem, adjoint, s->ctx, &s->status, &s->rk)))
        return flag;
    return 0;
}

void sl_arkode_free(sl_arkode *s)
{
    if (!s) return;
    if (s->mem) SL_ERK(Free)(&s->mem);
    sl_rk_adjoint_free(s->rk);
    if (s->y) N_VDestroy(s->y);
    if (s->work) N_VDestroy(s->work);
    if (s->ctx) SUNContext_Free(&s->ctx);
    free(s->atol);
    free(s->jac_work);
    free(s->dfdp_work);
    free(s->kernel_y);
    free(s);
}

const sl_status *sl_arkode_status(const sl_arkode *s) { return &s->status; }

static void record_forward_stats(sl_arkode *s)
{
    sl_stats *stats = &s->forward_stats;
    SL_ERK(GetNumSteps)(s->mem, &stats->steps);
    sl_arkode_rhs_evals(s->mem, 0, &stats->rhs_evals);
    stats->rhs_evals += s->recording_evals;
    SL_ERK(GetNumErrTestFails)(s->mem, &stats->error_test_fails);
}

void sl_arkode_stats(const sl_arkode *s, sl_stats *stats)
{
    *stats = s->forward_stats;
    stats->steps_backward = s->backward_stats.steps;
    stats->rhs_evals_backward = s->backward_stats.rhs_evals;
    stats->error_test_fails_backward = s->backward_stats.error_test_fails;
}

/* Output i: y (and the sensitivities) from the vector z = (y, S). */
static void write_output(sl_arkode *s, int64_t i, const double *z, double *y_out,
                         double *sens_out)
{
    int64_t n = N(s);
    memcpy(y_out + i * n, z, n * sizeof(double));
    if (s->n_sens) memcpy(sens_out + i * s->n_sens * n, z + n, s->n_sens * n * sizeof(double));
}

/* Integrate to each output time in ARKODE's normal mode, which steps past it and
   interpolates. */
static int solve_normal(sl_arkode *s, double t0, int64_t n_t, const double *tvals,
                        double *y_out, double *sens_out)
{
    int64_t i;
    int flag;
    double tret;
    for (i = 0; i < n_t; i++) {
        if (tvals[i] > t0) {
            flag = SL_ERK(Evolve)(s->mem, tvals[i] - t0, s->y, &tret, ARK_NORMAL);
            if (flag < 0) return fail(s, flag);
        }
        write_output(s, i, DATA(s->y), y_out, sens_out);
    }
    return 0;
}

/* The forward solve of an adjoint: one step at a time, recording y and y' = f(t, y) after
   each step (ARKODE has f there, the next step's first stage, but does not hand it out; its
   interpolant's derivative costs that evaluation and more: the solve took 1.22x a plain
   solve that way, 1.07x this way); outputs are interpolated as in normal mode, and max_steps holds per output
   interval as there. The trajectory is recorded in tau. */
static int solve_recording(sl_arkode *s, double t0, int64_t n_t, const double *tvals,
                           double *y_out)
{
    int64_t i = 0, steps = 0;
    int flag;
    double tret = 0.0;
    sl_rk_adjoint_clear(s->rk);
    s->recording_evals = 1;
    if ((flag = rhs_fn(0.0, s->y, s->work, s)))
        return fail(s, flag < 0 ? ARK_RHSFUNC_FAIL : ARK_FIRST_RHSFUNC_ERR);
    if (sl_rk_adjoint_record(s->rk, 0.0, DATA(s->y), DATA(s->work))) return fail(s, ARK_MEM_FAIL);
    for (; i < n_t && tvals[i] == t0; i++) write_output(s, i, DATA(s->y), y_out, NULL);
    while (i < n_t) {
        if (++steps > s->max_steps) {
            char text[32];
            sl_format_time(text, sizeof(text), tvals[i]);
            return sl_report(&s->status, ARK_TOO_MUCH_WORK, t0 + tret, "ARK_TOO_MUCH_WORK",
                             "more than max_steps = %lld steps before t = %s",
                             (long long)s->max_steps, text);
        }
        /* Toward the next output time: the first step's size is estimated as in normal mode. */
        flag = SL_ERK(Evolve)(s->mem, tvals[i] - t0, s->y, &tret, ARK_ONE_STEP);
        if (flag < 0) return fail(s, flag);
        if ((flag = rhs_fn(tret, s->y, s->work, s)))
            return fail(s, flag < 0 ? ARK_RHSFUNC_FAIL : ARK_UNREC_RHSFUNC_ERR);
        s->recording_evals++;
        if (sl_rk_adjoint_record(s->rk, tret, DATA(s->y), DATA(s->work)))
            return fail(s, ARK_MEM_FAIL);
        for (; i < n_t && tvals[i] - t0 <= tret; i++, steps = 0) {
            if ((flag = SL_ERK(GetDky)(s->mem, tvals[i] - t0, 0, s->work))) return fail(s, flag);
            write_output(s, i, DATA(s->work), y_out, NULL);
        }
    }
    return 0;
}

static int forward_solve(sl_arkode *s, double t0, const double *y0, const double *sens0,
                         int64_t n_t, const double *tvals, double *y_out, double *sens_out)
{
    int64_t n = N(s);
    int flag;
    s->forward_valid = 0;
    s->recording_evals = 0;
    s->t0 = t0;
    s->status.message[0] = s->status.kernel[0] = '\0';
    memcpy(DATA(s->y), y0, n * sizeof(double));
    if (s->n_sens) memcpy(DATA(s->y) + n, sens0, s->n_sens * n * sizeof(double));
    /* ReInit, not Reset: a fresh start (step size estimate, controller history, counters)
       makes a reused solver's results those of a new one. */
    if ((flag = ERKStepReInit(s->mem, rhs_fn, 0.0, s->y))) return fail(s, flag);
    if (!isnan(s->tstop) && (flag = SL_ERK(SetStopTime)(s->mem, s->tstop - t0)))
        return fail(s, flag);
    if (s->rk) return solve_recording(s, t0, n_t, tvals, y_out);
    return solve_normal(s, t0, n_t, tvals, y_out, sens_out);
}

int sl_arkode_solve(sl_arkode *s, double t0, const double *y0, const double *sens0,
                    int64_t n_t, const double *tvals, double *y_out, double *sens_out)
{
    int flag = forward_solve(s, t0, y0, sens0, n_t, tvals, y_out, sens_out);
    record_forward_stats(s);
    if (flag) return flag;
    s->forward_valid = s->rk != NULL;
    s->forward_t0 = t0;
    s->forward_tlast = n_t > 0 ? tvals[n_t - 1] : t0;
    return 0;
}

int sl_arkode_forward_state(sl_arkode *s, int backward, double t, double *y_out)
{
    int flag;
    long steps;
    sl_status failure = s->status; /* ARKODE would report a failure here as the last message */
    double tau = t - s->t0;
    if (backward && s->rk) return sl_rk_adjoint_forward_state(s->rk, tau, y_out);
    if (!isfinite(t)) return ARK_ILL_INPUT;
    /* Before the first step ARKODE's interpolant is not set up (GetDky would read it): the
       state is y0, which y still holds (ARKODE returns y as it was on a failed first step). */
    if (SL_ERK(GetNumSteps)(s->mem, &steps) || steps == 0) {
        if (tau != 0.0) return ARK_ILL_INPUT;
        memcpy(y_out, DATA(s->y), N(s) * sizeof(double));
        return 0;
    }
    flag = SL_ERK(GetDky)(s->mem, tau, 0, s->work);
    s->status = failure;
    if (!flag) memcpy(y_out, DATA(s->work), N(s) * sizeof(double));
    return flag;
}

int sl_arkode_backward(sl_arkode *s, double t0, int64_t n_t, const double *tvals,
                       const double *grads, double *grad_out, double *lambda_out)
{
    s->status.message[0] = s->status.kernel[0] = '\0';
    if (!s->forward_valid || n_t < 1 || t0 != s->forward_t0
        || tvals[n_t - 1] != s->forward_tlast) {
        char start[32], end[32];
        sl_format_time(start, sizeof(start), t0);
        sl_format_time(end, sizeof(end), n_t > 0 ? tvals[n_t - 1] : t0);
        return sl_report(&s->status, ARK_ILL_INPUT, t0, "ARK_ILL_INPUT",
                         "no successful forward solve with an adjoint from t0 = %s to %s",
                         start, end);
    }
    memset(&s->backward_stats, 0, sizeof(s->backward_stats));
    return sl_rk_adjoint_gradients(s->rk, t0, n_t, tvals, grads, grad_out, lambda_out,
                                   &s->backward_stats);
}
