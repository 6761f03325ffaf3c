/* The adjoint by an explicit Runge-Kutta method (Dormand-Prince steps of our own:
   sl_dopri.h) over a forward trajectory stored step by step. A one-step method needs no
   history, so the jumps of lambda at output times cost nothing: the backward problem is
   never restarted, unlike CVODES' multistep backward problem, which starts again at order
   1 after each jump. The explicit method is for non-stiff adjoints only (it takes tiny
   steps on a stiff one); with options->backward.method == SL_DIRK an L-stable implicit method
   (ESDIRK steps of our own, with a filtered error estimate: see sl_esdirk.c) over the
   linear solver options->backward.linear_solver takes its place. */
#ifndef SL_RK_ADJOINT_H
#define SL_RK_ADJOINT_H

#include "sl_internal.h"

/* SUNDIALS 7.2 replaced the ERKStep* and ARKStep* getters and setters by ARKODE's generic
   ARKode* calls (the old names are deprecated). SL_ARKODE_GENERIC says this SUNDIALS has
   them; SL_ERK(Name) is ERKStep's call Name here, and sl_arkode_rhs_evals counts the
   evaluations of the one rhs of an ERKStep (implicit = 0) or of ARKStep's fi (implicit = 1). */
#if SUNDIALS_VERSION_MAJOR > 7 || (SUNDIALS_VERSION_MAJOR == 7 && SUNDIALS_VERSION_MINOR >= 2)
#define SL_ARKODE_GENERIC 1
#define SL_ERK(name) ARKode##name
#else
#define SL_ARKODE_GENERIC 0
#define SL_ERK(name) ERKStep##name
#endif
int sl_arkode_rhs_evals(void *mem, int implicit, long *count);
/* SL_STEP(implicit, Name): the call Name of ARKStep (implicit) or of ERKStep;
   SL_IMPLICIT(Name): a call ARKStep has only. */
#if SL_ARKODE_GENERIC
#define SL_STEP(implicit, name) ARKode##name
#define SL_IMPLICIT(name) ARKode##name
#else
#define SL_STEP(implicit, name) ((implicit) ? ARKStep##name : ERKStep##name)
#define SL_IMPLICIT(name) ARKStep##name
#endif

typedef struct sl_rk_adjoint sl_rk_adjoint;

/* Uses options->backward (rtol, atol, max_steps) and the quadrature options. Errors are
   recorded in status, which must outlive the adjoint. */
int sl_rk_adjoint_create(const sl_problem *problem, const sl_adjoint_options *options,
                         SUNContext ctx, sl_status *status, sl_rk_adjoint **out);
void sl_rk_adjoint_free(sl_rk_adjoint *a);

/* Forget the stored trajectory (a new forward solve starts). */
void sl_rk_adjoint_clear(sl_rk_adjoint *a);
/* Store the forward solution y and its time derivative yd at tau = t - t0 (the time
   since the forward solve's start, in which the integrators step), which must be later
   than the previously stored time. Returns nonzero when out of memory. */
int sl_rk_adjoint_record(sl_rk_adjoint *a, double tau, const double *y, const double *yd);

/* The number of records stored. */
int64_t sl_rk_adjoint_length(const sl_rk_adjoint *a);

/* The stored forward solution at tau = t - t0 (interpolated), into out (n_states). */
int sl_rk_adjoint_forward_state(sl_rk_adjoint *a, double tau, double *out);

/* lambda from tvals[n_t-1] back to t0 with lambda -= grads[i] at tvals[i]; writes
   grad_out (n_dparams) = q(t0) for q' = lambda^T df/dp, q(tvals[n_t-1]) = 0, and
   lambda_out (n_states) = lambda(t0). t0 and tvals are times t: t0 is the forward solve's
   start, and the stored trajectory must cover tau in [0, tvals[n_t-1] - t0]. With the
   forward solve's schedule (sl_schedule.h; NULL: none), whose recorded trajectory has the
   states before and after each dose, the backward problem stops at every stop of the
   schedule and writes the doses' gradients dL/d(time, amount, rate) into dose_time,
   dose_amount, dose_rate (n_doses each; NULL: not wanted; the rate of a bolus has none:
   NaN). Derivatives at a time shared with an output are one-sided (moving a dose later).
   Solves for grads scaled to size 1 (see sl_grads_scale) and scales the results back
   (SL_OVERFLOW if one overflows). Adds its steps, rhs evaluations and error test failures
   to those in stats. Errors are recorded in the status given at creation. */
struct sl_schedule;
int sl_rk_adjoint_scheduled_gradients(sl_rk_adjoint *a, double t0, int64_t n_t,
                                      const double *tvals, const double *grads,
                                      const struct sl_schedule *schedule, double *grad_out,
                                      double *lambda_out, double *dose_time,
                                      double *dose_amount, double *dose_rate, sl_stats *stats);

#endif
