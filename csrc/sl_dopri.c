/* See sl_dopri.h. The tableau: Dormand & Prince, "A family of embedded Runge-Kutta
   formulae", J. Comp. Appl. Math. 6 (1980); Hairer, Norsett & Wanner, Solving ODEs I,
   II.5, Table 5.2 (the initial step estimate: II.4, "Starting step size"). */
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include <arkode/arkode.h>

#include "sl_dopri.h"

enum { STAGES = 7, MAX_ERROR_FAILS = 7, MAX_RHS_RETRIES = 10 };

static const double C[STAGES] = {0.0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1.0, 1.0};
static const double A[STAGES][STAGES - 1] = {
    {0},
    {1.0 / 5},
    {3.0 / 40, 9.0 / 40},
    {44.0 / 45, -56.0 / 15, 32.0 / 9},
    {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729},
    {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656},
    /* The 5th-order solution: its f is the next step's first stage. */
    {35.0 / 384, 0.0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84},
};
/* The 5th-order weights minus the 4th-order ones. */
static const double E[STAGES] = {71.0 / 57600, 0.0, -71.0 / 16695, 71.0 / 1920,
                                 -17253.0 / 339200, 22.0 / 525, -1.0 / 40};

struct sl_dopri {
    int64_t n, max_steps;
    sl_dopri_rhs rhs;
    sl_dopri_weights weights;
    void *data;
    double tau;           /* where the integration is */
    double *k[STAGES];    /* the stages' f (k[0] and k[6] swap after each step) */
    double *block;        /* all of the arrays */
    double *stage, *error, *w; /* a stage's z; the error / h; the error weights */
};

sl_dopri *sl_dopri_create(int64_t n, int64_t max_steps, sl_dopri_rhs rhs,
                          sl_dopri_weights weights, void *data)
{
    sl_dopri *d = calloc(1, sizeof(*d));
    double *block = d ? calloc((size_t)(STAGES + 3) * (n > 0 ? n : 1), sizeof(double)) : NULL;
    int i;
    if (!block) {
        free(d);
        return NULL;
    }
    d->n = n, d->max_steps = max_steps, d->rhs = rhs, d->weights = weights, d->data = data;
    d->block = block;
    for (i = 0; i < STAGES; i++) d->k[i] = block + i * n;
    d->stage = block + STAGES * n;
    d->error = block + (STAGES + 1) * n;
    d->w = block + (STAGES + 2) * n;
    return d;
}

void sl_dopri_free(sl_dopri *d)
{
    if (!d) return;
    free(d->block);
    free(d);
}

double sl_dopri_time(const sl_dopri *d) { return d->tau; }

/* The weighted RMS norm of scale v. */
static double norm(const sl_dopri *d, double scale, const double *v)
{
    double sum = 0.0;
    for (int64_t j = 0; j < d->n; j++) sum += (scale * v[j] * d->w[j]) * (scale * v[j] * d->w[j]);
    return d->n > 0 ? sqrt(sum / (double)d->n) : 0.0;
}

/* The size of a first step from tau (HNW II.4 for order 5): h0 from |z| / |f|, then h1
   from the change of f over an Euler step of h0; k[1] is scratch. */
static int first_step(sl_dopri *d, const double *z, double span, double *h)
{
    double d0 = norm(d, 1.0, z), d1 = norm(d, 1.0, d->k[0]), h0, h1, d2, largest;
    double direction = span < 0 ? -1.0 : 1.0;
    int64_t j;
    int flag;
    h0 = d0 < 1e-5 || d1 < 1e-5 ? 1e-6 : 0.01 * d0 / d1;
    h0 = fmin(h0, fabs(span));
    for (j = 0; j < d->n; j++) d->stage[j] = z[j] + direction * h0 * d->k[0][j];
    if ((flag = d->rhs(d->data, d->tau + direction * h0, d->stage, d->k[1]))) return flag;
    for (j = 0; j < d->n; j++) d->stage[j] = (d->k[1][j] - d->k[0][j]) / h0;
    d2 = norm(d, 1.0, d->stage);
    largest = fmax(d1, d2);
    h1 = largest <= 1e-15 ? fmax(1e-6, h0 * 1e-3) : pow(0.01 / largest, 1.0 / 5);
    *h = fmin(fmin(100.0 * h0, h1), fabs(span));
    return 0;
}

/* One attempt of a step h from (tau, z), k[0] = f(tau, z): the 5th-order z into stage,
   its f into k[6]; returns f's flag and the embedded error's norm (weighted at the step's
   start, as ARKODE) in *error. */
static int attempt(sl_dopri *d, const double *z, double h, double *error)
{
    int64_t n = d->n, j;
    int i, m, flag;
    for (i = 1; i < STAGES; i++) {
        for (j = 0; j < n; j++) {
            double sum = 0.0;
            for (m = 0; m < i; m++) sum += A[i][m] * d->k[m][j];
            d->stage[j] = z[j] + h * sum;
        }
        if ((flag = d->rhs(d->data, d->tau + C[i] * h, d->stage, d->k[i]))) return flag;
    }
    for (j = 0; j < n; j++) {
        double sum = 0.0;
        for (m = 0; m < STAGES; m++) sum += E[m] * d->k[m][j];
        d->error[j] = sum;
    }
    *error = norm(d, h, d->error);
    return 0;
}

int sl_dopri_integrate(sl_dopri *d, double *z, double tau, double span, double *h,
                       sl_stats *stats)
{
    double end = tau + span, direction = span < 0 ? -1.0 : 1.0, size = fabs(*h);
    int64_t steps = 0, j;
    int flag, error_fails = 0, rhs_retries = 0, rejected = 0;
    d->tau = tau;
    if (span == 0.0) return 0;
    flag = d->rhs(d->data, tau, z, d->k[0]);
    stats->rhs_evals++;
    if (flag) return flag < 0 ? ARK_RHSFUNC_FAIL : ARK_UNREC_RHSFUNC_ERR;
    if (size == 0.0) {
        d->weights(d->data, z, d->w);
        flag = first_step(d, z, span, &size);
        stats->rhs_evals++;
        if (flag) return flag < 0 ? ARK_RHSFUNC_FAIL : ARK_UNREC_RHSFUNC_ERR;
    }
    while (d->tau != end) {
        double remaining = fabs(end - d->tau), step, error, factor;
        int last = size >= remaining;
        /* Within an ulp of the end: there (the sweep skips shorter intervals). */
        if (remaining <= 4.0 * DBL_EPSILON * fmax(fabs(d->tau), fabs(end))) break;
        if (steps >= d->max_steps) return ARK_TOO_MUCH_WORK;
        step = direction * (last ? remaining : size);
        if (d->tau + step == d->tau) return ARK_ERR_FAILURE;
        d->weights(d->data, z, d->w);
        flag = attempt(d, z, step, &error);
        stats->rhs_evals += STAGES - 1;
        if (flag < 0) return ARK_RHSFUNC_FAIL;
        if (flag > 0) {
            if (++rhs_retries >= MAX_RHS_RETRIES) return ARK_REPTD_RHSFUNC_ERR;
            size = fabs(step) / 4.0;
            continue;
        }
        rhs_retries = 0;
        /* NaN fails the test too. */
        factor = error > 0.0 ? 0.9 * pow(error, -1.0 / 5) : 5.0;
        if (!(error <= 1.0)) {
            stats->error_test_fails++;
            if (++error_fails >= MAX_ERROR_FAILS) return ARK_ERR_FAILURE;
            size = fabs(step) * (factor > 0.2 ? fmin(factor, 0.9) : 0.2);
            rejected = 1;
            continue;
        }
        steps++;
        stats->steps++;
        error_fails = 0;
        for (j = 0; j < d->n; j++) z[j] = d->stage[j];
        { double *first = d->k[0]; d->k[0] = d->k[STAGES - 1]; d->k[STAGES - 1] = first; }
        d->tau = last ? end : d->tau + step;
        /* A step cut short to end here says little against the step before it. */
        factor = fmin(fmax(factor, 0.2), rejected ? 1.0 : 5.0);
        size = last && fabs(step) < size ? fmax(size, fabs(step) * factor)
                                         : fabs(step) * factor;
        rejected = 0;
    }
    d->tau = end;
    *h = size;
    return 0;
}
