/* The integrators behind the solver pool (sl_pool.c): CVODES or ARKODE for ODEs, IDAS for
   DAEs, each behind one small interface, so that the pool's bookkeeping, input checks and
   gradient math are written once. Not part of the Python interface. Include it after sl_common.h,
   sl_idas.h, sl_pool.h and sl_dae_yp.h (cdef-able headers, which have no include guards;
   the last defines SL_DERIVATIVE_FAIL). */
#ifndef SL_BACKEND_H
#define SL_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef struct sl_backend {
    const char *kind;   /* "an ODE" or "a DAE", for messages */
    size_t model_bytes; /* the model: an sl_problem or an sl_pool_dae */
    /* A solver of the model whose kernels read params (n_params values, caller-owned). */
    int (*create)(const void *model, double *params, const sl_options *options,
                  const sl_sens_options *sens, const sl_adjoint_options *adjoint, void **out);
    /* Forward solve as sl_cvodes_solve_doses (doses: NULL, or checked and supported by the
       backend, see sl_pool.c); y0 is in/out: the consistent initial state on return (a
       DAE's algebraic entries are only guesses on entry). */
    int (*solve)(void *solver, double t0, double *y0, const double *sens0, int64_t n_t,
                 const double *tvals, const sl_doses *doses, double *y_out, double *sens_out);
    /* The adjoint of the last solve, as sl_cvodes_backward_doses (dL/dy0 = -lambda_out;
       the dose gradients may be NULL, and are after a solve without doses). */
    int (*backward)(void *solver, double t0, int64_t n_t, const double *tvals,
                    const double *grads, double *grad_out, double *lambda_out,
                    double *dose_time, double *dose_amount, double *dose_rate);
    /* out = y'(t) at the state y of output i of the last solve (i = -1: its initial state):
       f(t, y) for an ODE (with the infusions on just before the output, or just after t0),
       the y' consistent with F(t, y, y') = 0 for a DAE. */
    int (*time_derivative)(void *solver, int64_t i, double t, const double *y, double *out);
    /* The states whose initial values are free (the others follow from them): their
       indices in index (n_states entries of room); returns their number. */
    int64_t (*free_initial_states)(const void *model, int64_t *index);
    const sl_status *(*status)(const void *solver);
    void (*free)(void *solver);
} sl_backend;

/* ODEs on CVODES (options->method SL_BDF or SL_ADAMS), on ARKODE's Runge-Kutta methods
   (SL_ERK, SL_DIRK) or on either (SL_AUTO, sl_auto.h); DAEs on IDAS. */
extern const sl_backend sl_cvodes_backend, sl_arkode_backend, sl_auto_backend, sl_idas_backend;

#endif
