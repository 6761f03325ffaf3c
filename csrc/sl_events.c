/* Event resets and jump conditions: see sl_events.h. */
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
    return w->g_jac && w->h && w->h_jac && w->c && w->sens ? 0 : -1;
}

void sl_event_work_free(sl_event_work *w)
{
    free(w->g_jac); free(w->h); free(w->h_jac); free(w->c); free(w->sens);
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

/* The derivatives of g and h at (t, y-) into w, D = dg_i/dt + dg_i/dy f- (into *D) and
   c = dh_i/dy f- + dh_i/dt - f+ (into w->c; f- - f+ for the states event i keeps);
   SL_GRAZING where D is zero against its terms. Row k of h_jac belongs to the state
   event_reset_state[k]. */
static int jump_terms(sl_event_work *w, const sl_problem *p, sl_status *status, int64_t i,
                      double t, const double *y_minus, const double *f_minus,
                      const double *f_plus, double *D)
{
    int64_t n = p->n_states, m = w->m, k, j;
    const double *g = w->g_jac + i * m;
    double size;
    int flag;
    if ((flag = sl_call_kernel(status, n, p->event_g_jac, "event_g_jac", t, y_minus, p->params,
                               w->g_jac))
        || (flag = sl_call_kernel(status, n, p->event_h_jac, "event_h_jac", t, y_minus, p->params,
                                  w->h_jac)))
        return flag;
    *D = g[0];
    size = fabs(g[0]);
    for (j = 0; j < n; j++) {
        *D += g[1 + j] * f_minus[j];
        size += fabs(g[1 + j] * f_minus[j]);
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
                       double t, const double *y_minus, const double *f_minus,
                       const double *f_plus, int64_t n_sens, double *sens)
{
    int64_t n = p->n_states, m = w->m, k, kk, j;
    const double *g = w->g_jac + i * m;
    double D;
    int flag = jump_terms(w, p, status, i, t, y_minus, f_minus, f_plus, &D);
    if (flag) return flag;
    for (k = 0; k < n_sens; k++) {
        const double *s = sens + k * n;
        double *out = w->sens + k * n, dtau = k < p->n_dparams ? g[1 + n + k] : 0.0;
        for (j = 0; j < n; j++) dtau += g[1 + j] * s[j];
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

int sl_event_adjoint_jump(sl_event_work *w, const sl_problem *p, sl_status *status,
                          int64_t i, double t, const double *y_minus, const double *f_minus,
                          const double *f_plus, double *lambda, double *q)
{
    int64_t n = p->n_states, m = w->m, k, kk, j;
    const int64_t *first = p->event_reset_ptr + i;
    const double *g = w->g_jac + i * m;
    double D, lambda_c = 0.0, *out = w->sens; /* lambda- (w->sens holds >= n values) */
    int flag = jump_terms(w, p, status, i, t, y_minus, f_minus, f_plus, &D);
    if (flag) return flag;
    for (j = 0; j < n; j++) lambda_c += lambda[j] * w->c[j];
    /* M = dh/dy - c dg/dy / D, with the rows of the states event i keeps those of I. */
    for (j = 0; j < n; j++) out[j] = lambda[j] - lambda_c * g[1 + j] / D;
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
