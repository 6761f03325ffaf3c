/* The implicit stepper of the Runge-Kutta adjoint (sl_rk_adjoint.c): ESDIRK steps of our
   own over the linear backward problem z' = Jz(tau) z, z = (lambda, q, and with infusions
   Q), with a filtered error estimate and modified Newton; see sl_esdirk.c. Internal to
   the C layer. */
#ifndef SL_ESDIRK_H
#define SL_ESDIRK_H

#include <arkode/arkode.h>

#include "sl_internal.h"

/* What the stepper needs of the adjoint: the problem (J's and df/dp's patterns), the
   n_extra entries of z after lambda and q (Q' = lambda), the values of J and df/dp (CSC,
   the problem's patterns) that kernels(data, tau) puts there for tau, z's right-hand side
   and its error weights (ARKODE's signatures, with data). */
typedef struct sl_esdirk_system {
    const sl_problem *problem;
    int64_t n_extra;
    const double *jac, *dfdp;
    int (*kernels)(void *data, double tau);
    ARKRhsFn rhs;
    ARKEwtFn weights;
    void *data;
} sl_esdirk_system;

typedef struct sl_esdirk sl_esdirk;

/* A stepper for z (n_states + n_dparams + n_extra entries, the caller's, which must
   outlive it) with options' linear solver, band widths (those of J) and max_steps. On
   failure *out is set (free it) and an ARKODE flag returned. */
int sl_esdirk_create(const sl_esdirk_system *system, const sl_options *options, N_Vector z,
                     SUNContext ctx, sl_esdirk **out);
void sl_esdirk_free(sl_esdirk *dirk);

/* Integrate z from tau_start over span (< 0: backward), stopping exactly at its end;
   *h_io the first step at most (0: none), on success the step proposed for the next interval.
   Adds the steps, rhs evaluations and error test failures to stats. Returns 0 or a
   negative ARKODE flag. */
int sl_esdirk_integrate(sl_esdirk *dirk, double tau_start, double span, double *h_io,
                        sl_stats *stats);
/* Where the last integration is (or stopped). */
double sl_esdirk_time(const sl_esdirk *dirk);
/* Forget M's setup: J and df/dp belong to another solve now. */
void sl_esdirk_discard_setup(sl_esdirk *dirk);

#endif
