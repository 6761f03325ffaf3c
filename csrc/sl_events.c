/* Event resets and jump conditions: see sl_events.h. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sl_events.h"

/* Below sqrt(uround) times its terms, D has no correct digits (y- is located to the
   tolerances only): a grazing root. */
#define SQRT_EPSILON 1.4901161193847656e-08

int sl_event_work_init(sl_event_work *w, const sl_problem *p, int64_t n_sens)
{
    int64_t n = p->n_states, m = 1 + n + p->n_dparams, e = p->n_events;
    int64_t n_set = p->event_reset_ptr[e];
    w->m = m;
    w->g_jac = calloc(e * m, sizeof(double));
    w->h = calloc(n_set + 1, sizeof(double));
    w->h_jac = calloc(n_set * m + 1, sizeof(double));
    w->c = calloc(n, sizeof(double));
    w->sens = calloc((n_sens > 0 ? n_sens : 1) * n, sizeof(double)); /* or lambda- */
    w->lambda_root = calloc(n + 1, sizeof(double));
    return w->g_jac && w->h && w->h_jac && w->c && w->sens && w->lambda_root ? 0 : -1;
}

void sl_event_work_free(sl_event_work *w)
{
    free(w->g_jac); free(w->h); free(w->h_jac); free(w->c); free(w->sens); free(w->lambda_root);
    memset(w, 0, sizeof(*w));
}

int sl_event_reset(sl_event_work *w, const sl_problem *p, sl_status *status, int64_t i,
                   double t, double *y)
{
    int64_t k;
    int flag = sl_call_kernel(status, p->n_states, p->event_h, "event_h", t, y, p->params, w->h);
    if (flag) return flag;
    for (k = p->event_reset_ptr[i]; k < p->event_reset_ptr[i + 1]; k++)
        y[p->event_reset_state[k]] = w->h[k];
    return 0;
}

/* The derivatives of g_i at the root's state into w and D = dg_i/dt + dg_i/dy f (into *D),
   at (t, root->y, root->f); those of h_i at the state before event i (y_minus: after the
   events before it at this root) and c = dh_i/dy f- + dh_i/dt - f+ (into w->c; f- - f+ for
   the states event i keeps). SL_GRAZING where D is zero against its terms. Row k of h_jac
   belongs to the state event_reset_state[k]. */
static int jump_terms(sl_event_work *w, const sl_problem *p, sl_status *status, int64_t i,
                      double t, const sl_event_root *root, const double *y_minus,
                      const double *f_minus, const double *f_plus, double *D)
{
    int64_t n = p->n_states, m = w->m, k, j;
    const double *g = w->g_jac + i * m;
    double size;
    int flag;
    if ((flag = sl_call_kernel(status, n, p->event_g_jac, "event_g_jac", t, root->y, p->params,
                               w->g_jac))
        || (flag = sl_call_kernel(status, n, p->event_h_jac, "event_h_jac", t, y_minus, p->params,
                                  w->h_jac)))
        return flag;
    *D = g[0];
    size = fabs(g[0]);
    for (j = 0; j < n; j++) {
        *D += g[1 + j] * root->f[j];
        size += fabs(g[1 + j] * root->f[j]);
    }
    if (!(fabs(*D) > SQRT_EPSILON * size)) {
        char text[32];
        sl_format_time(text, sizeof(text), t);
        return sl_report(status, SL_GRAZING, t, "SL_GRAZING",
                         "event %lld grazes its root at t = %s (dg/dt + dg/dy f = %g): the event "
                         "time has no derivative there", (long long)i, text, *D);
    }
    for (j = 0; j < n; j++) w->c[j] = f_minus[j] - f_plus[j];
    for (k = p->event_reset_ptr[i]; k < p->event_reset_ptr[i + 1]; k++) {
        const double *h = w->h_jac + k * m;
        int64_t r = p->event_reset_state[k];
        w->c[r] = h[0] - f_plus[r];
        for (j = 0; j < n; j++) w->c[r] += h[1 + j] * f_minus[j];
    }
    return 0;
}

int sl_event_sens_jump(sl_event_work *w, const sl_problem *p, sl_status *status, int64_t i,
                       double t, const sl_event_root *root, const double *y_minus,
                       const double *f_minus, const double *f_plus, int64_t n_sens,
                       double *sens)
{
    int64_t n = p->n_states, m = w->m, k, kk, j;
    const double *g = w->g_jac + i * m;
    double D;
    int flag = jump_terms(w, p, status, i, t, root, y_minus, f_minus, f_plus, &D);
    if (flag) return flag;
    for (k = 0; k < n_sens; k++) {
        const double *s = sens + k * n;
        double *out = w->sens + k * n, dtau = k < p->n_dparams ? g[1 + n + k] : 0.0;
        for (j = 0; j < n; j++) dtau += g[1 + j] * root->sens[k * n + j];
        dtau = -dtau / D;
        for (j = 0; j < n; j++) out[j] = s[j] + w->c[j] * dtau;
        for (kk = p->event_reset_ptr[i]; kk < p->event_reset_ptr[i + 1]; kk++) {
            const double *h = w->h_jac + kk * m;
            int64_t r = p->event_reset_state[kk];
            out[r] = (k < p->n_dparams ? h[1 + n + k] : 0.0) + w->c[r] * dtau;
            for (j = 0; j < n; j++) out[r] += h[1 + j] * s[j];
        }
    }
    memcpy(sens, w->sens, n_sens * n * sizeof(double));
    return 0;
}

void sl_event_adjoint_root_start(sl_event_work *w, int64_t n)
{
    memset(w->lambda_root, 0, n * sizeof(double));
}

void sl_event_adjoint_root_end(const sl_event_work *w, int64_t n, double *lambda)
{
    for (int64_t j = 0; j < n; j++) lambda[j] += w->lambda_root[j];
}

int sl_event_adjoint_jump(sl_event_work *w, const sl_problem *p, sl_status *status,
                          int64_t i, double t, const sl_event_root *root,
                          const double *y_minus, const double *f_minus, const double *f_plus,
                          double *lambda, double *q)
{
    int64_t n = p->n_states, m = w->m, k, kk, j;
    const int64_t *first = p->event_reset_ptr + i;
    const double *g = w->g_jac + i * m;
    double D, lambda_c = 0.0, *out = w->sens; /* lambda- (w->sens holds >= n values) */
    int flag = jump_terms(w, p, status, i, t, root, y_minus, f_minus, f_plus, &D);
    if (flag) return flag;
    for (j = 0; j < n; j++) lambda_c += lambda[j] * w->c[j];
    /* lambda- = dh/dy^T lambda+, with the rows of the states event i keeps those of I; the
       root's time term -c dg/dy / D acts on the state at the root (lambda_root). */
    for (j = 0; j < n; j++) {
        out[j] = lambda[j];
        w->lambda_root[j] -= lambda_c * g[1 + j] / D;
    }
    for (kk = first[0]; kk < first[1]; kk++) out[p->event_reset_state[kk]] -= lambda[p->event_reset_state[kk]];
    for (kk = first[0]; kk < first[1]; kk++) {
        const double *h = w->h_jac + kk * m;
        double lambda_r = lambda[p->event_reset_state[kk]];
        for (j = 0; j < n; j++) out[j] += lambda_r * h[1 + j];
    }
    for (k = 0; k < p->n_dparams; k++) {
        double term = -lambda_c * g[1 + n + k] / D;
        for (kk = first[0]; kk < first[1]; kk++)
            term += lambda[p->event_reset_state[kk]] * w->h_jac[kk * m + 1 + n + k];
        q[k] -= term;
    }
    memcpy(lambda, out, n * sizeof(double));
    return 0;
}

/* -- Root finding during a forward solve ------------------------------------------------ */

int sl_event_roots_init(sl_event_roots *r, const sl_problem *p, int64_t n_sens)
{
    int64_t n = p->n_states, e = p->n_events, i;
    memset(r, 0, sizeof(*r));
    r->accumulating = -1;
    r->direction = calloc(3 * e, sizeof(int));
    r->watch_until = calloc(2 * e, sizeof(double));
    r->y_minus = calloc(5 * n + n_sens * n, sizeof(double));
    if (!r->direction || !r->watch_until || !r->y_minus || sl_event_work_init(&r->work, p, n_sens))
        return -1;
    r->found = r->direction + e;
    r->watch_sign = r->found + e;
    r->g_plus = r->watch_until + e;
    r->f_minus = r->y_minus + n;
    r->f_plus = r->f_minus + n;
    r->y_root = r->f_plus + n;
    r->f_root = r->y_root + n;
    r->sens_root = r->f_root + n;
    for (i = 0; i < e; i++) r->direction[i] = (int)p->event_direction[i];
    return 0;
}

void sl_event_roots_free(sl_event_roots *r)
{
    free(r->direction); free(r->watch_until); free(r->y_minus);
    sl_event_work_free(&r->work);
    memset(r, 0, sizeof(*r));
}

void sl_event_roots_start(sl_event_roots *r, const sl_problem *p)
{
    r->accumulating = -1;
    memset(r->watch_sign, 0, p->n_events * sizeof(int));
}

int sl_event_roots_watch(sl_event_roots *r, const sl_problem *p, double tau, const double *g)
{
    for (int64_t i = 0; i < p->n_events; i++) {
        if (!r->watch_sign[i]) continue;
        if (g[i] * r->watch_sign[i] > 0.0) r->watch_sign[i] = 0;
        else if (tau > r->watch_until[i] && g[i] * r->watch_sign[i] < 0.0) {
            r->accumulating = i;
            return -1;
        }
    }
    return 0;
}

int sl_event_at_root(double tau_out, double troot, double h)
{
    return tau_out - troot <= 100.0 * DBL_EPSILON * (fabs(troot) + fabs(h));
}

static int sign(double x) { return (x > 0.0) - (x < 0.0); }

/* dg_i/dt + dg_i/dy f at (t, y) with f given (the flow's rate of change of g_i). */
static int crossing_rate(sl_event_roots *r, const sl_problem *p, sl_status *status, int64_t i,
                         double t, const double *y, const double *f, double *rate)
{
    const double *g = r->work.g_jac + i * r->work.m;
    int flag = sl_call_kernel(status, p->n_states, p->event_g_jac, "event_g_jac", t, y,
                              p->params, r->work.g_jac);
    if (flag) return flag;
    *rate = g[0];
    for (int64_t j = 0; j < p->n_states; j++) *rate += g[1 + j] * f[j];
    return 0;
}

/* A failed event kernel (its name and state are in status) as the solve's failure. */
static int event_failure(const sl_event_hooks *hooks, sl_status *status, double t)
{
    return sl_report(status, hooks->rtfunc_fail, t, hooks->rtfunc_fail_name,
                     "the model's %s failed (a non-finite value, or undefined) at an event",
                     status->kernel);
}

/* A root of event i located where the flow moves g the other way than the crossing
   (direction +-1) the integrator found: g is at the resolution of the root finding
   (events accumulating, as a bouncing ball's coming to rest, or a grazing root), and a
   reset there would go wrong unseen. */
static int check_crossing(sl_event_roots *r, const sl_problem *p, sl_status *status,
                          const sl_event_hooks *hooks, int64_t i, double t, int direction)
{
    double rate;
    char text[32];
    if (crossing_rate(r, p, status, i, t, r->y_root, r->f_root, &rate))
        return event_failure(hooks, status, t);
    if (sign(rate) != -direction) return 0;
    sl_format_time(text, sizeof(text), t);
    return sl_report(status, SL_EVENTS_ACCUMULATE, t, "SL_EVENTS_ACCUMULATE",
                     "event %lld at t = %s: a crossing where the flow moves g the other way "
                     "(dg/dt + dg/dy f = %g): the root is at the resolution of the root "
                     "finding, as where events accumulate (a bouncing ball coming to rest) or "
                     "graze. Solve up to that time, or change the model", (long long)i, text, rate);
}

/* After the resets at tau: whether to watch event i, which crossed in direction (+-1; see
   sl_event_roots), from g and dg/dt + dg/dy f at (tau, y+) (g in g_plus, f+ in f_plus). */
static int watch_return(sl_event_roots *r, const sl_problem *p, sl_status *status, int64_t i,
                        double t, double tau, double h, const double *y, int direction)
{
    double rate;
    int flag = crossing_rate(r, p, status, i, t, y, r->f_plus, &rate);
    if (flag || sign(r->g_plus[i]) == -direction || sign(rate) != -direction) return flag;
    r->watch_sign[i] = -direction;
    r->watch_until[i] = tau + 10.0 * fabs(r->g_plus[i] / rate)
                        + 100.0 * DBL_EPSILON * (fabs(tau) + fabs(h));
    return 0;
}

int sl_event_roots_fire(sl_event_roots *r, const sl_problem *p, sl_status *status,
                        const sl_event_hooks *hooks, double t0, double tau, double h,
                        double *y, int64_t n_sens, double *sens, sl_schedule *schedule)
{
    int64_t n = p->n_states, i;
    double t = t0 + tau;
    const sl_event_root root = {r->y_root, r->f_root, r->sens_root};
    int flag;
    memcpy(r->y_root, y, n * sizeof(double));
    if (hooks->rhs(hooks->solver, tau, r->y_root, r->f_root)) return event_failure(hooks, status, t);
    if (n_sens) memcpy(r->sens_root, sens, n_sens * n * sizeof(double));
    memcpy(r->f_minus, r->f_root, n * sizeof(double)); /* the rhs before the next event */
    for (i = 0; i < p->n_events; i++) {
        if (!r->found[i]) continue;
        if (schedule->n_fired >= p->max_events) {
            char text[32];
            sl_format_time(text, sizeof(text), t);
            return sl_report(status, SL_TOO_MANY_EVENTS, t, "SL_TOO_MANY_EVENTS",
                             "more than max_events = %lld events by t = %s (a reset that "
                             "triggers its event again, or events accumulating, as a bouncing "
                             "ball's): raise the problem's max_events or change the model",
                             (long long)p->max_events, text);
        }
        memcpy(r->y_minus, y, n * sizeof(double));
        if ((flag = check_crossing(r, p, status, hooks, i, t, r->found[i]))) return flag;
        if (sl_event_reset(&r->work, p, status, i, t, y)) return event_failure(hooks, status, t);
        if (n_sens) {
            if (hooks->rhs(hooks->solver, tau, y, r->f_plus)) return event_failure(hooks, status, t);
            flag = sl_event_sens_jump(&r->work, p, status, i, t, &root, r->y_minus,
                                      r->f_minus, r->f_plus, n_sens, sens);
            if (flag == SL_GRAZING) return flag;
            if (flag) return event_failure(hooks, status, t);
            memcpy(r->f_minus, r->f_plus, n * sizeof(double));
        }
        if (hooks->rk && (flag = hooks->record(hooks->solver, tau))) return flag;
        if (sl_schedule_fire(schedule, t, i, hooks->rk ? sl_rk_adjoint_length(hooks->rk) - 1 : -1))
            return sl_report(status, hooks->mem_fail, t, hooks->mem_fail_name, "out of memory");
    }
    /* With sensitivities f_plus holds the rhs at y+ already. */
    if (sl_call_kernel(status, n, p->event_g, "event_g", t, y, p->params, r->g_plus)
        || (!n_sens && hooks->rhs(hooks->solver, tau, y, r->f_plus)))
        return event_failure(hooks, status, t);
    for (i = 0; i < p->n_events; i++)
        if (r->found[i] && watch_return(r, p, status, i, t, tau, h, y, r->found[i]))
            return event_failure(hooks, status, t);
    return 0;
}

int sl_event_roots_watching(const sl_event_roots *r, const sl_problem *p)
{
    for (int64_t i = 0; i < p->n_events; i++)
        if (r->found[i] && r->watch_sign[i]) return 1;
    return 0;
}

int sl_event_roots_report_accumulating(const sl_event_roots *r, sl_status *status, double t)
{
    char text[32];
    if (r->accumulating < 0) return 0;
    sl_format_time(text, sizeof(text), t);
    return sl_report(status, SL_EVENTS_ACCUMULATE, t, "SL_EVENTS_ACCUMULATE",
                     "event %lld: after its reset the state went back across g = 0 and over it "
                     "again within one step, by t = %s: the events accumulate (as a bouncing "
                     "ball's coming to rest), and the next would be missed. Solve up to that "
                     "time, or change the model", (long long)r->accumulating, text);
}
