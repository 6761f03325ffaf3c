/* State-dependent events: the reset y+ = h_i(t, y-) at a root of g_i, and the jumps of the
   forward sensitivities and of the adjoint there, from the implicit function theorem
   (sunode_like/_events.py states the formulas). Not part of the Python interface. */
#ifndef SL_EVENTS_H
#define SL_EVENTS_H

#include <stdint.h>

#include "sl_internal.h"

/* SL_GRAZING: a root where dg/dt + dg/dy f = 0 (no derivative of its time);
   SL_TOO_MANY_EVENTS: more than max_events events in one solve; SL_EVENTS_ACCUMULATE: a
   step went over an event's return and next crossing (events accumulating). */
enum { SL_GRAZING = -9005, SL_TOO_MANY_EVENTS = -9006, SL_EVENTS_ACCUMULATE = -9007 };

/* The kernels' values at one event (m = 1 + n_states + n_dparams values per row). */
typedef struct sl_event_work {
    int64_t m;
    double *g_jac, *h, *h_jac, *c, *sens;
} sl_event_work;

/* Scratch for problem's events and n_sens sensitivities; 0, or -1 when out of memory. */
int sl_event_work_init(sl_event_work *w, const sl_problem *problem, int64_t n_sens);
void sl_event_work_free(sl_event_work *w);

/* y = h_i(t, y). Returns the kernel's status (recorded in status). */
int sl_event_reset(sl_event_work *w, const sl_problem *problem, sl_status *status, int64_t i,
                   double t, double *y);

/* The forward sensitivities sens (n_sens x n_states, the first n_dparams those of the
   derivative params) across event i at t: from s- (given) to s+ (written), with y- the state
   before it and f_minus, f_plus the rhs before and after. */
int sl_event_sens_jump(sl_event_work *w, const sl_problem *problem, sl_status *status,
                       int64_t i, double t, const double *y_minus, const double *f_minus,
                       const double *f_plus, int64_t n_sens, double *sens);

/* The adjoint across event i at t, backward: lambda (n_states) from lambda+ to lambda-, and
   q (n_dparams, dL/dp accumulated from the end) gets the event's term. */
int sl_event_adjoint_jump(sl_event_work *w, const sl_problem *problem, sl_status *status,
                          int64_t i, double t, const double *y_minus, const double *f_minus,
                          const double *f_plus, double *lambda, double *q);

#endif
