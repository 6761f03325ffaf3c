/* The CVODES, ARKODE (explicit Runge-Kutta) and IDAS backends of the solver pool, over the
   public functions of sl_cvodes.h, sl_arkode.h and sl_idas.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sl_internal.h"
#include "sl_cvodes.h"
#include "sl_arkode.h"
#include "sl_auto.h"
#include "sl_idas.h"
#include "sl_pool.h"
#include "sl_dae_yp.h"
#include "sl_backend.h"

/* -- ODEs: CVODES and ARKODE's explicit Runge-Kutta method ------------------------------ */

/* The integrators take an sl_problem and have the same calls; exactly one handle is set. */
typedef struct ode_backend {
    sl_cvodes *cvodes;
    sl_arkode *arkode;
    sl_auto *automatic;
    sl_problem problem; /* its params are the pool entry's */
} ode_backend;

static ode_backend *ode_new(const void *model, double *params, void **out)
{
    ode_backend *b = calloc(1, sizeof(*b));
    *out = b;
    if (!b) return NULL;
    b->problem = *(const sl_problem *)model;
    b->problem.params = params;
    return b;
}

static int cvodes_create(const void *model, double *params, const sl_options *options,
                         const sl_sens_options *sens, const sl_adjoint_options *adjoint,
                         void **out)
{
    ode_backend *b = ode_new(model, params, out);
    return b ? sl_cvodes_create(&b->problem, options, sens, adjoint, &b->cvodes) : SL_MEM_FAIL;
}

static int arkode_create(const void *model, double *params, const sl_options *options,
                         const sl_sens_options *sens, const sl_adjoint_options *adjoint,
                         void **out)
{
    ode_backend *b = ode_new(model, params, out);
    return b ? sl_arkode_create(&b->problem, options, sens, adjoint, &b->arkode) : SL_MEM_FAIL;
}

static int auto_create(const void *model, double *params, const sl_options *options,
                       const sl_sens_options *sens, const sl_adjoint_options *adjoint, void **out)
{
    ode_backend *b = ode_new(model, params, out);
    return b ? sl_auto_create(&b->problem, options, sens, adjoint, &b->automatic) : SL_MEM_FAIL;
}

static int ode_solve(void *solver, double t0, double *y0, const double *sens0, int64_t n_t,
                     const double *tvals, const sl_doses *doses, double *y_out, double *sens_out)
{
    ode_backend *b = solver;
    if (b->arkode)
        return sl_arkode_solve_doses(b->arkode, t0, y0, sens0, n_t, tvals, doses, y_out, sens_out);
    if (b->automatic)
        return sl_auto_solve_doses(b->automatic, t0, y0, sens0, n_t, tvals, doses, y_out, sens_out);
    return sl_cvodes_solve_doses(b->cvodes, t0, y0, sens0, n_t, tvals, doses, y_out, sens_out);
}

static int ode_backward(void *solver, double t0, int64_t n_t, const double *tvals,
                        const double *grads, double *grad_out, double *lambda_out,
                        double *dose_time, double *dose_amount, double *dose_rate)
{
    ode_backend *b = solver;
    if (b->arkode)
        return sl_arkode_backward_doses(b->arkode, t0, n_t, tvals, grads, grad_out, lambda_out,
                                        dose_time, dose_amount, dose_rate);
    if (b->automatic)
        return sl_auto_backward_doses(b->automatic, t0, n_t, tvals, grads, grad_out, lambda_out,
                                      dose_time, dose_amount, dose_rate);
    return sl_cvodes_backward_doses(b->cvodes, t0, n_t, tvals, grads, grad_out, lambda_out,
                                    dose_time, dose_amount, dose_rate);
}

static int ode_time_derivative(void *solver, int64_t i, double t, const double *y, double *out)
{
    ode_backend *b = solver;
    if (b->problem.rhs(t, y, b->problem.params, out)) return SL_DERIVATIVE_FAIL;
    if (b->cvodes) sl_cvodes_add_infusions(b->cvodes, t, i < 0, out);
    if (b->arkode) sl_arkode_add_infusions(b->arkode, t, i < 0, out);
    if (b->automatic) sl_auto_add_infusions(b->automatic, t, i < 0, out);
    return 0;
}

static int64_t ode_free_initial_states(const void *model, int64_t *index)
{
    int64_t n = ((const sl_problem *)model)->n_states;
    for (int64_t j = 0; j < n; j++) index[j] = j;
    return n;
}

static const sl_status *ode_status(const void *solver)
{
    const ode_backend *b = solver;
    if (b->automatic) return sl_auto_status(b->automatic);
    return b->arkode ? sl_arkode_status(b->arkode) : sl_cvodes_status(b->cvodes);
}

static void ode_free(void *solver)
{
    ode_backend *b = solver;
    if (!b) return;
    sl_cvodes_free(b->cvodes);
    sl_arkode_free(b->arkode);
    sl_auto_free(b->automatic);
    free(b);
}

const sl_backend sl_cvodes_backend = {
    "an ODE", sizeof(sl_problem), cvodes_create, ode_solve, ode_backward, ode_time_derivative,
    ode_free_initial_states, ode_status, ode_free,
};

const sl_backend sl_arkode_backend = {
    "an ODE", sizeof(sl_problem), arkode_create, ode_solve, ode_backward, ode_time_derivative,
    ode_free_initial_states, ode_status, ode_free,
};

const sl_backend sl_auto_backend = {
    "an ODE", sizeof(sl_problem), auto_create, ode_solve, ode_backward, ode_time_derivative,
    ode_free_initial_states, ode_status, ode_free,
};

/* -- IDAS ------------------------------------------------------------------------------- */

typedef struct idas_backend {
    sl_idas *solver;
    sl_pool_dae model; /* its params are the pool entry's */
    /* y' of the last solve at t0 and at the output times (IDAS's interpolation): starting
       points of the Newton iteration for the consistent y'. */
    double *yp0, *yp;
    int64_t capacity;
    sl_dae_yp *consistent;
} idas_backend;

static void idas_free(void *solver)
{
    idas_backend *b = solver;
    if (!b) return;
    sl_idas_free(b->solver);
    sl_dae_yp_free(b->consistent);
    free(b->yp0);
    free(b->yp);
    free(b);
}

static int idas_create(const void *model, double *params, const sl_options *options,
                       const sl_sens_options *sens, const sl_adjoint_options *adjoint, void **out)
{
    idas_backend *b = calloc(1, sizeof(*b));
    *out = b;
    if (!b) return SL_MEM_FAIL;
    b->model = *(const sl_pool_dae *)model;
    b->model.problem.params = params;
    if (!(b->yp0 = calloc(b->model.problem.n_states, sizeof(double)))
        || sl_dae_yp_create(&b->model, &b->consistent))
        return SL_MEM_FAIL;
    /* The constraints are the pool's copy in options (IDAS takes them apart). */
    return sl_idas_create(&b->model.problem, options, options->constraints, sens, adjoint,
                          &b->solver);
}

static int idas_solve(void *solver, double t0, double *y0, const double *sens0, int64_t n_t,
                      const double *tvals, const sl_doses *doses, double *y_out, double *sens_out)
{
    idas_backend *b = solver;
    int64_t n = b->model.problem.n_states;
    if (n_t > b->capacity) {
        free(b->yp);
        b->yp = malloc(n_t * n * sizeof(double));
        b->capacity = b->yp ? n_t : 0;
        if (!b->yp) return SL_MEM_FAIL;
    }
    (void)doses; /* the pool refuses doses for a DAE */
    memset(b->yp0, 0, n * sizeof(double)); /* the guess of y'(t0), as DAESolver's default */
    return sl_idas_solve(b->solver, t0, y0, b->yp0, sens0, n_t, tvals, y_out, b->yp, sens_out);
}

static int idas_backward(void *solver, double t0, int64_t n_t, const double *tvals,
                         const double *grads, double *grad_out, double *lambda_out,
                         double *dose_time, double *dose_amount, double *dose_rate)
{
    (void)dose_time; (void)dose_amount; (void)dose_rate;
    return sl_idas_backward(((idas_backend *)solver)->solver, t0, n_t, tvals, grads, grad_out,
                            lambda_out);
}

static int idas_time_derivative(void *solver, int64_t i, double t, const double *y, double *out)
{
    idas_backend *b = solver;
    const double *guess = i < 0 ? b->yp0 : b->yp + i * b->model.problem.n_states;
    return sl_dae_yp_solve(b->consistent, t, y, guess, out);
}

static int64_t idas_free_initial_states(const void *model, int64_t *index)
{
    const sl_dae_problem *p = &((const sl_pool_dae *)model)->problem;
    int64_t count = 0;
    for (int64_t j = 0; j < p->n_states; j++)
        if (p->id[j] != 0.0) index[count++] = j;
    return count;
}

static const sl_status *idas_status(const void *solver)
{
    return sl_idas_status(((const idas_backend *)solver)->solver);
}

const sl_backend sl_idas_backend = {
    "a DAE", sizeof(sl_pool_dae), idas_create, idas_solve, idas_backward, idas_time_derivative,
    idas_free_initial_states, idas_status, idas_free,
};
