/* Dormand-Prince 5(4) steps of our own over plain arrays: the explicit backward problem of
   the Runge-Kutta adjoint (sl_rk_adjoint.c), z' = f(tau, z) from tau to tau + span (span
   < 0 goes backward), stopping exactly at the end.

   Why not ARKODE's ERKStep: on the adjoint's short vectors (Lotka-Volterra: 2 states and
   4 params) ERKStep's per-step machinery (step memory, controller, stop-time tests, vector
   operations through function pointers) cost more than the kernels, most of all in a
   SUNDIALS compiled without optimisation (Debian's): see benchmarks/README.md, "Where the
   time goes". The method is the same pair, FSAL (the 7th stage is the next step's first);
   the error test is ARKODE's, the weighted RMS norm of the embedded error <= 1, with the
   weights of the step's start; the step size controller is the elementary one,
   h_new = h min(5, max(0.2, 0.9 err^(-1/5))), no growth right after a rejected step. */
#ifndef SL_DOPRI_H
#define SL_DOPRI_H

#include <stdint.h>

#include "sl_internal.h"

/* f(tau, z) into zdot: 0, > 0 recoverable (the step is retried 4x shorter), < 0 fatal.
   weights: the error weights w (> 0, or 0 for entries without error control) at z. */
typedef int (*sl_dopri_rhs)(void *data, double tau, const double *z, double *zdot);
typedef void (*sl_dopri_weights)(void *data, const double *z, double *w);

typedef struct sl_dopri sl_dopri;

/* For z of n entries, at most max_steps steps per integrate; NULL if out of memory. */
sl_dopri *sl_dopri_create(int64_t n, int64_t max_steps, sl_dopri_rhs rhs,
                          sl_dopri_weights weights, void *data);
void sl_dopri_free(sl_dopri *d);

/* Integrates z (n entries, in place) from tau to tau + span. *h: the first step to try
   (its sign is ignored; 0: estimated from f at the start), on return the step proposed
   for what follows. Adds the steps, f evaluations and error test failures to stats.
   Returns 0 or an ARKODE flag: ARK_TOO_MUCH_WORK (max_steps), ARK_ERR_FAILURE (7 error
   test failures in a row, or the step underflowed), ARK_RHSFUNC_FAIL (f < 0),
   ARK_UNREC_RHSFUNC_ERR (f > 0 at the start), ARK_REPTD_RHSFUNC_ERR (f > 0 10 times in a
   row); sl_dopri_time is then where it stopped. */
int sl_dopri_integrate(sl_dopri *d, double *z, double tau, double span, double *h,
                       sl_stats *stats);
double sl_dopri_time(const sl_dopri *d);

#endif
