/* Adjoint by a one-step Runge-Kutta method over a stored forward trajectory; see
   sl_rk_adjoint.h. As the forward solve, ARKODE integrates in tau = t - t0: the trajectory
   is recorded in tau, the backward solve gets t0 and tvals in t, and the kernels are
   called at t0 + tau. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <arkode/arkode_arkstep.h>
#include <arkode/arkode_erkstep.h>
#include <nvector/nvector_serial.h>

#include "sl_dopri.h"
#include "sl_esdirk.h"
#include "sl_events.h"
#include "sl_internal.h"
#include "sl_nvector.h"
#include "sl_rk_adjoint.h"
#include "sl_schedule.h"


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
    /* The forward trajectory: times tau[k], states y[k*n..], derivatives yd[k*n..]. At a
       dose a time is recorded twice (before and after it): interpolation stays within the
       records lo..hi of the interval being integrated, which never straddles a dose. */
    int64_t length, capacity, cursor, lo, hi;
    double *tau, *y, *yd;
    /* Scratch: the interpolated state and kernel values. */
    double *y_at, *jac_work, *dfdp_work;
    /* The backward state z = (lambda, q) and its error weights' absolute parts; the
       explicit method's steps (solver_backward ERK: sl_dopri.h). */
    sl_dopri *dopri;
    N_Vector z;
    double *atol;
    /* kernels_tau: the time whose J and df/dp jac_work and dfdp_work hold (NaN: none).
       The kernels see times in [interval_start, interval_end), the interval being
       integrated (see kernels_at). */
    double kernels_tau, interval_start, interval_end;
    /* The implicit stepper (solver_backward DIRK), instead of dopri. */
    sl_esdirk *esdirk;
    /* With infusions z = (lambda, q, Q) has n_extra = n_states more entries, Q' = lambda
       (Q = 0 at the last output time), for the integrals of the costate over infusions
       (see dose_stop); n_extra = 0 otherwise. ARKODE's memory is created for one length
       of z, in ctx. */
    int64_t n_extra;
    SUNContext ctx;
    /* Scratch of the dose gradients: two states and two rhs values, then per dose the
       costate mu_c and Q_c at its start and at its end. */
    double *dose_work;
    int64_t dose_capacity;
    /* Scratch of the events' jumps (problem.n_events > 0). */
    sl_event_work events;
};

#define N(a) ((a)->problem.n_states)
#define DATA(v) NV_DATA_S(v) /* as sl_arkode.c */

static int fail(sl_rk_adjoint *a, int flag)
{
    double tau = NAN;
    char *name = SL_ERK(GetReturnFlagName)(flag);
    if (a->esdirk) tau = sl_esdirk_time(a->esdirk);
    else if (a->dopri) tau = sl_dopri_time(a->dopri);
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
    if (k < a->lo) k = a->lo;
    if (k > a->hi - 1) k = a->hi - 1;
    while (k > a->lo && tau < a->tau[k]) k--;
    while (k < a->hi - 1 && tau > a->tau[k + 1]) k++;
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
/* J and df/dp at t0 + tau into jac_work and dfdp_work, the time kept within the interval
   being integrated: at its upper end an ulp below it, where a piecewise-constant input
   still has the interval's value (the explicit backward failed its error test there with
   the next one), and not below its lower end (t0 + tau rounds either way). They depend on
   tau only (through the stored trajectory), and the implicit method asks for them at one
   stage time several times (residual, stage derivative, linear solve): kept for the last
   tau. */
static int kernels_at(void *data, double tau)
{
    sl_rk_adjoint *a = data;
    const sl_problem *p = &a->problem;
    double t = a->t0 + tau;
    int flag;
    if (tau == a->kernels_tau) return 0;
    a->kernels_tau = NAN;
    if (t >= a->interval_end) t = nextafter(a->interval_end, -INFINITY);
    if (t < a->interval_start) t = a->interval_start;
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

static int rhs_values(void *data, double tau, const double *lambda, double *out)
{
    sl_rk_adjoint *a = data;
    const sl_problem *p = &a->problem;
    int flag;
    if ((flag = kernels_at(a, tau))) return flag;
    sl_csc_rmatvec(N(a), p->jac_colptr, p->jac_rows, a->jac_work, lambda, -1.0, out);
    for (int64_t j = 0; j < a->n_extra; j++) out[N(a) + p->n_dparams + j] = lambda[j];
    if (p->n_dparams == 0) return 0;
    sl_csc_rmatvec(p->n_dparams, p->dfdp_colptr, p->dfdp_rows, a->dfdp_work, lambda, 1.0,
                   out + N(a));
    return 0;
}

static int rhs(double tau, N_Vector z, N_Vector zdot, void *user_data)
{
    return rhs_values(user_data, tau, DATA(z), DATA(zdot));
}

/* Error weights with the backward tolerances for lambda and the quadrature ones for q
   (weight 0, i.e. no error control, for q when quad_errcon is off). */
static void lambda_weights(const sl_rk_adjoint *a, const double *v, double *w)
{
    for (int64_t j = 0; j < N(a); j++)
        w[j] = 1.0 / (a->options.backward.rtol * fabs(v[j]) + a->atol[j]);
}

static void weight_values(void *data, const double *v, double *w)
{
    sl_rk_adjoint *a = data;
    int64_t j, n = N(a);
    lambda_weights(a, v, w);
    for (j = n; j < n + a->problem.n_dparams + a->n_extra; j++)
        w[j] = a->options.quad_errcon
            ? 1.0 / (a->options.rtol_quad * fabs(v[j]) + a->options.atol_quad) : 0.0;
}

static int weights(N_Vector z, N_Vector ewt, void *user_data)
{
    weight_values(user_data, DATA(z), DATA(ewt));
    return 0;
}

/* The backward stepper over z = (lambda, q) and n_extra more entries (a->n_extra). */
static int create_stepper(sl_rk_adjoint *a)
{
    const sl_adjoint_options *options = &a->options;
    int flag;
    a->z = N_VNew_Serial(N(a) + a->problem.n_dparams + a->n_extra, a->ctx);
    if (!a->z) return fail(a, ARK_MEM_FAIL);
    N_VConst(0.0, a->z);
    /* Fused vector operations: a stage's linear combination in one pass (see sl_arkode.c;
       ERK forward + ERK backward on Lotka-Volterra: 0.91x the time, DIRK unchanged), by
       our compiled operations (sl_nvector.h). */
    if (sl_nvector_fast_ops(a->z)) return fail(a, ARK_MEM_FAIL);
    if (options->backward.method == SL_DIRK) {
        sl_esdirk_system system = {&a->problem, a->n_extra, a->jac_work, a->dfdp_work,
                                   kernels_at, rhs, weights, a};
        flag = sl_esdirk_create(&system, &options->backward, a->z, a->ctx, &a->esdirk);
        return flag ? fail(a, flag) : 0;
    }
    /* Dormand-Prince 5(4): the usual choice at moderate to tight tolerances; higher-order
       tables (Verner 6(5), Fehlberg 8(7), by ARKODE) measured slower and less accurate
       here, as the cubic interpolation of the forward solution limits what a higher order
       can gain. */
    a->dopri = sl_dopri_create(N_VGetLength(a->z), options->backward.max_steps, rhs_values,
                               weight_values, a);
    return a->dopri ? 0 : fail(a, ARK_MEM_FAIL);
}

static void free_stepper(sl_rk_adjoint *a)
{
    sl_dopri_free(a->dopri);
    sl_esdirk_free(a->esdirk);
    if (a->z) N_VDestroy(a->z);
    a->dopri = NULL;
    a->esdirk = NULL;
    a->z = NULL;
}

/* A stepper for z with n_extra more entries than lambda and q, created again if the
   current one has another length. */
static int use_extra_entries(sl_rk_adjoint *a, int64_t n_extra)
{
    if (n_extra == a->n_extra) return 0;
    free_stepper(a);
    a->n_extra = n_extra;
    return create_stepper(a);
}

int sl_rk_adjoint_create(const sl_problem *problem, const sl_adjoint_options *options,
                         SUNContext ctx, sl_status *status, sl_rk_adjoint **out)
{
    sl_rk_adjoint *a = calloc(1, sizeof(*a));
    int64_t n = problem->n_states;
    *out = a;
    if (!a) return ARK_MEM_FAIL;
    a->problem = *problem;
    a->options = *options;
    a->status = status;
    a->ctx = ctx;
    a->y_at = calloc(n, sizeof(double));
    a->atol = malloc(n * sizeof(double));
    a->jac_work = calloc(problem->jac_colptr[n] + 1, sizeof(double));
    a->dfdp_work = calloc(problem->dfdp_colptr[problem->n_dparams] + 1, sizeof(double));
    if (!a->y_at || !a->atol || !a->jac_work || !a->dfdp_work
        || (problem->n_events > 0 && sl_event_work_init(&a->events, problem, 0)))
        return fail(a, ARK_MEM_FAIL);
    memcpy(a->atol, options->backward.atol, n * sizeof(double));
    return create_stepper(a);
}

void sl_rk_adjoint_free(sl_rk_adjoint *a)
{
    if (!a) return;
    free_stepper(a);
    free(a->tau);
    free(a->y);
    free(a->yd);
    free(a->y_at);
    free(a->atol);
    free(a->jac_work);
    free(a->dfdp_work);
    free(a->dose_work);
    sl_event_work_free(&a->events);
    free(a);
}

int64_t sl_rk_adjoint_length(const sl_rk_adjoint *a) { return a->length; }

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
    a->lo = 0;
    a->hi = a->length - 1;
    return 0;
}

/* The last record at or before tau, and the first at or after it (binary searches). */
static int64_t last_record_at_or_before(const sl_rk_adjoint *a, double tau)
{
    int64_t lo = 0, hi = a->length - 1;
    while (lo < hi) {
        int64_t mid = hi - (hi - lo) / 2;
        if (a->tau[mid] <= tau) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

static int64_t first_record_at_or_after(const sl_rk_adjoint *a, double tau)
{
    int64_t lo = 0, hi = a->length - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (a->tau[mid] >= tau) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

/* One backward solve: the adjoint, where its counts go, and the step size the previous
   interval ended with (0: let ARKODE estimate the first); the schedule of the forward
   solve (NULL: none), its last output time, and where dose_stop puts the doses'
   gradients (see sl_rk_adjoint_scheduled_gradients). */
typedef struct sweep {
    sl_rk_adjoint *a;
    sl_stats *stats;
    double h;
    const sl_schedule *schedule;
    double t_last;
    double *dose_time, *dose_amount;
    double *mu_start, *mu_end, *q_start, *q_end;
} sweep;

/* The records an interval from t_start back to t_end interpolates: after a dose or event
   at t_end, before one at t_start. An event's stop time is t0 + tau of its root, rounded,
   so t - t0 can miss the records at tau by an ulp either way (the interval then took in the
   jump, and the ERK backward failed there whenever t0 != 0): the search allows for that. */
static void interval_records(sl_rk_adjoint *a, double t_start, double t_end)
{
    double slack = 2.0 * DBL_EPSILON * (fabs(a->t0) + fmax(fabs(t_start), fabs(t_end)));
    a->lo = last_record_at_or_before(a, t_end - a->t0 + slack);
    a->hi = first_record_at_or_after(a, t_start - a->t0 - slack);
    if (a->hi <= a->lo) a->hi = a->lo + 1 < a->length ? a->lo + 1 : a->lo;
    a->kernels_tau = NAN; /* at a dose time, J and df/dp of the other side's records */
    a->interval_start = t_end;
    a->interval_end = t_start;
}

/* Integrate z from t_start (where it was just set) to t_end by Dormand-Prince steps,
   stopping exactly there and starting with the step size the previous interval proposed. */
static int integrate(void *data, double t_start, double t_end)
{
    sweep *w = data;
    sl_rk_adjoint *a = w->a;
    int flag;
    interval_records(a, t_start, t_end);
    flag = sl_dopri_integrate(a->dopri, DATA(a->z), t_start - a->t0, t_end - t_start, &w->h,
                              w->stats);
    if (flag == ARK_TOO_MUCH_WORK) {
        /* In t0 + tau, as the messages of SUNDIALS (sl_internal.c). */
        char origin[32];
        double tau = sl_dopri_time(a->dopri);
        sl_format_time(origin, sizeof(origin), a->t0);
        return sl_report(a->status, flag, a->t0 + tau, "ARK_TOO_MUCH_WORK",
                         "At t = %s + %g, more than max_steps_backward = %lld steps in an "
                         "interval between output times", origin, tau,
                         (long long)a->options.backward.max_steps);
    }
    return flag ? fail(a, flag) : 0;
}

/* The backward problem from t_start to t_end < t_start by implicit steps (sl_esdirk.c),
   stopping exactly at t_end, starting with the step the previous interval proposed. */
static int implicit_integrate(void *data, double t_start, double t_end)
{
    sweep *w = data;
    sl_rk_adjoint *a = w->a;
    int flag;
    interval_records(a, t_start, t_end);
    flag = sl_esdirk_integrate(a->esdirk, t_start - a->t0, t_end - t_start, &w->h, w->stats);
    return flag ? fail(a, flag) : 0;
}

/* At stop k of the schedule, with lambda = -mu just after it (before the jump of an
   output there): a bolus k' into c gets dL/da = mu_c and
   dL/dtau = mu^T (f(tau, y+ - a e_c) - f(tau, y+)), y+ the state after all doses at tau
   (moving one bolus later keeps the state without it on [tau, tau + dtau]; the infusion
   rates cancel); an infusion records mu_c and Q_c at its start and its end. After
   tvals[-1], mu = 0. */
static int dose_stop(void *data, int64_t k)
{
    sweep *w = data;
    sl_rk_adjoint *a = w->a;
    const sl_schedule *sc = w->schedule;
    const sl_problem *p = &a->problem;
    int64_t n = N(a), d, j;
    double t = sc->stops[k], *lambda = DATA(a->z), *q = lambda + n + p->n_dparams;
    double *y_minus = a->dose_work, *f_minus = y_minus + n, *f_plus = f_minus + n;
    const double *y_plus = a->y + last_record_at_or_before(a, t - a->t0) * n;
    int flag, f_plus_known = 0;
    for (d = 0; d < sc->n_doses; d++) {
        int64_t c = sc->state[d];
        if (sc->rate[d] > 0.0) {
            if (sc->time[d] == t) w->mu_start[d] = -lambda[c], w->q_start[d] = q[c];
            if (sc->end[d] == t) w->mu_end[d] = -lambda[c], w->q_end[d] = q[c];
            continue;
        }
        if (sc->time[d] != t || t >= w->t_last) continue; /* mu = 0 from the last output on */
        w->dose_amount[d] = -lambda[c];
        if (!f_plus_known) {
            if ((flag = sl_call_kernel(a->status, n, p->rhs, "rhs", t, y_plus, p->params, f_plus)))
                return flag;
            f_plus_known = 1;
        }
        memcpy(y_minus, y_plus, n * sizeof(double));
        y_minus[c] -= sc->amount[d];
        if ((flag = sl_call_kernel(a->status, n, p->rhs, "rhs", t, y_minus, p->params, f_minus)))
            return flag;
        w->dose_time[d] = 0.0;
        for (j = 0; j < n; j++) w->dose_time[d] -= lambda[j] * (f_minus[j] - f_plus[j]);
    }
    return 0;
}

/* At stop k of the schedule, the events that fired there, the last first: lambda and q
   jump from after each to before it (sl_event_adjoint_jump), with the states and rhs
   values recorded before (record - 1) and after it (record); the root's state is the one
   recorded before its first event. */
static int event_stop(sweep *w, int64_t k)
{
    sl_rk_adjoint *a = w->a;
    const sl_schedule *sc = w->schedule;
    int64_t n = N(a), m, first = 0, end = sc->n_fired;
    double t = sc->stops[k], *lambda = DATA(a->z);
    sl_event_root root = {NULL, NULL, NULL};
    /* The fired times do not decrease: the events at t are fired[first:end]. */
    while (first < end) {
        int64_t mid = first + (end - first) / 2;
        if (sc->fired_time[mid] < t) first = mid + 1;
        else end = mid;
    }
    for (end = first; end < sc->n_fired && sc->fired_time[end] == t; end++) {}
    if (first == end) return 0;
    root.y = a->y + (sc->fired_record[first] - 1) * n;
    root.f = a->yd + (sc->fired_record[first] - 1) * n;
    sl_event_adjoint_root_start(&a->events, n);
    for (m = end - 1; m >= first; m--) {
        int64_t r = sc->fired_record[m];
        int flag;
        flag = sl_event_adjoint_jump(&a->events, &a->problem, a->status, sc->fired_event[m], t,
                                     &root, a->y + (r - 1) * n, a->yd + (r - 1) * n,
                                     a->yd + r * n, lambda, lambda + n);
        if (flag == SL_GRAZING) return flag;
        if (flag) return sl_report(a->status, ARK_RHSFUNC_FAIL, t, "ARK_RHSFUNC_FAIL", "the model's "
                                   "%s failed (a non-finite value, or undefined) at an event",
                                   a->status->kernel);
    }
    sl_event_adjoint_root_end(&a->events, n, lambda);
    return 0;
}

/* The jumps at stop k of the schedule: the doses' gradients, then the events' jumps. */
static int jump_stop(void *data, int64_t k)
{
    int flag = dose_stop(data, k);
    return flag ? flag : event_stop(data, k);
}

static int sweep_backward(sl_rk_adjoint *a, sweep *w, double t0, int64_t n_t,
                          const double *tvals, const double *grads, double scale,
                          double *grad_out, double *lambda_out)
{
    int64_t n = N(a);
    const sl_schedule *sc = w->schedule;
    sl_backward_interval interval = a->esdirk ? implicit_integrate : integrate;
    int flag;
    if (a->length < 1 || a->tau[0] > 0.0 || a->tau[a->length - 1] < tvals[n_t - 1] - t0) {
        sl_status_set(a->status, ARK_ILL_INPUT, t0, "ARK_ILL_INPUT");
        return ARK_ILL_INPUT;
    }
    if ((flag = use_extra_entries(a, sc && sc->has_infusions ? n : 0))) return flag;
    a->t0 = t0;
    a->cursor = a->length - 1;
    a->kernels_tau = NAN; /* the kernels' values belong to an earlier solve */
    if (a->esdirk) sl_esdirk_discard_setup(a->esdirk);
    N_VConst(0.0, a->z);
    if (sc && sc->n_stops > 0)
        flag = sl_scheduled_sweep(w, interval, jump_stop, sc->n_stops, sc->stops, n, DATA(a->z),
                                  t0, n_t, tvals, grads, scale);
    else
        flag = sl_adjoint_sweep(w, interval, n, DATA(a->z), t0, n_t, tvals, grads, scale);
    if (flag) return flag; /* lo..hi stay those of the interval that failed */
    a->lo = 0;
    a->hi = a->length - 1;
    memcpy(lambda_out, DATA(a->z), n * sizeof(double));
    memcpy(grad_out, DATA(a->z) + n, a->problem.n_dparams * sizeof(double));
    return 0;
}

/* Per dose d (n_doses), the scratch of dose_stop: 3 n_states values, then 6 per dose. */
static int reserve_dose_work(sl_rk_adjoint *a, int64_t n_doses)
{
    int64_t size = 3 * N(a) + 6 * n_doses;
    double *grown;
    if (size <= a->dose_capacity) return 0;
    if (!(grown = realloc(a->dose_work, size * sizeof(double)))) return ARK_MEM_FAIL;
    a->dose_work = grown;
    a->dose_capacity = size;
    return 0;
}

int sl_rk_adjoint_scheduled_gradients(sl_rk_adjoint *a, double t0, int64_t n_t,
                                      const double *tvals, const double *grads,
                                      const sl_schedule *schedule, double *grad_out,
                                      double *lambda_out, double *dose_time,
                                      double *dose_amount, double *dose_rate, sl_stats *stats)
{
    int64_t n_doses = schedule ? schedule->n_doses : 0, d;
    double scale = sl_grads_scale(n_t * N(a), grads), *work;
    sweep w = {a, stats, 0.0, schedule, tvals[n_t - 1], NULL, NULL, NULL, NULL, NULL, NULL};
    int flag;
    if (reserve_dose_work(a, n_doses)) {
        sl_status_set(a->status, ARK_MEM_FAIL, t0, "ARK_MEM_FAIL");
        return ARK_MEM_FAIL;
    }
    work = a->dose_work + 3 * N(a);
    w.dose_time = work, w.dose_amount = work + n_doses, w.mu_start = work + 2 * n_doses;
    w.mu_end = work + 3 * n_doses, w.q_start = work + 4 * n_doses, w.q_end = work + 5 * n_doses;
    for (d = 0; d < 6 * n_doses; d++) work[d] = 0.0;
    flag = sweep_backward(a, &w, t0, n_t, tvals, grads, scale, grad_out, lambda_out);
    if (flag) return flag;
    if ((flag = sl_scale_gradient(a->status, t0, scale, N(a), lambda_out))
        || (flag = sl_scale_gradient(a->status, t0, scale, a->problem.n_dparams, grad_out)))
        return flag;
    /* An infusion of a at rate r into c over [tau, e), e = tau + a / r, adds
       integral_tau^e r mu_c dt to L's change, so dL/dtau = r (mu_c(e) - mu_c(tau)),
       dL/da = mu_c(e), dL/dr = integral_tau^e mu_c dt - (a / r) mu_c(e), with
       integral_tau^e mu_c dt = Q_c(tau) - Q_c(e). A bolus's rate has no derivative. */
    for (d = 0; d < n_doses; d++) {
        double r = schedule->rate[d], rate_gradient = NAN;
        if (r > 0.0) {
            w.dose_time[d] = r * (w.mu_end[d] - w.mu_start[d]);
            w.dose_amount[d] = w.mu_end[d];
            rate_gradient = scale * ((w.q_start[d] - w.q_end[d])
                                     - schedule->amount[d] / r * w.mu_end[d]);
            if (!isfinite(rate_gradient))
                return sl_report(a->status, SL_OVERFLOW, t0, "SL_OVERFLOW",
                                 "a dose rate's gradient overflows float64: scale the loss down");
        }
        if (dose_rate) dose_rate[d] = rate_gradient;
    }
    if ((flag = sl_scale_gradient(a->status, t0, scale, n_doses, w.dose_time))
        || (flag = sl_scale_gradient(a->status, t0, scale, n_doses, w.dose_amount)))
        return flag;
    if (dose_time) memcpy(dose_time, w.dose_time, n_doses * sizeof(double));
    if (dose_amount) memcpy(dose_amount, w.dose_amount, n_doses * sizeof(double));
    return 0;
}
