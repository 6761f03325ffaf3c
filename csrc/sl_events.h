/* State-dependent events: the reset y+ = h_i(t, y-) at a root of g_i, and the jumps of the
   forward sensitivities and of the adjoint there, from the implicit function theorem
   (sunode_like/_events.py states the formulas). Not part of the Python interface. */
#ifndef SL_EVENTS_H
#define SL_EVENTS_H

#include <stdint.h>

#include "sl_internal.h"
#include "sl_rk_adjoint.h"
#include "sl_schedule.h"

/* SL_GRAZING: a root where dg/dt + dg/dy f = 0 (no derivative of its time);
   SL_TOO_MANY_EVENTS: more than max_events events in one solve; SL_EVENTS_ACCUMULATE: a
   step went over an event's return and next crossing (events accumulating). */
enum { SL_GRAZING = -9005, SL_TOO_MANY_EVENTS = -9006, SL_EVENTS_ACCUMULATE = -9007 };

/* The kernels' values at one event (m = 1 + n_states + n_dparams values per row), and the
   adjoint's term of the root's time (lambda_root, see sl_event_adjoint_jump). */
typedef struct sl_event_work {
    int64_t m;
    double *g_jac, *h, *h_jac, *c, *sens, *lambda_root;
} sl_event_work;

/* The state at a root, before any of its events: y, the rhs there, and the forward
   sensitivities (NULL without). The time of the root, so its derivative, is that of this
   state's crossing: several events at one root all move with it. */
typedef struct sl_event_root {
    const double *y, *f, *sens;
} sl_event_root;

/* Scratch for problem's events and n_sens sensitivities; 0, or -1 when out of memory. */
int sl_event_work_init(sl_event_work *w, const sl_problem *problem, int64_t n_sens);
void sl_event_work_free(sl_event_work *w);

/* y = h_i(t, y). Returns the kernel's status (recorded in status). */
int sl_event_reset(sl_event_work *w, const sl_problem *problem, sl_status *status, int64_t i,
                   double t, double *y);

/* The forward sensitivities sens (n_sens x n_states, the first n_dparams those of the
   derivative params) across event i at t, a root of its g at `root`: from s- (given) to
   s+ (written), with y- the state before the event (after the root's earlier events) and
   f_minus, f_plus the rhs before and after it. */
int sl_event_sens_jump(sl_event_work *w, const sl_problem *problem, sl_status *status,
                       int64_t i, double t, const sl_event_root *root, const double *y_minus,
                       const double *f_minus, const double *f_plus, int64_t n_sens,
                       double *sens);

/* The adjoint across event i at t (arguments as for sl_event_sens_jump), backward: lambda
   (n_states) from lambda+ to lambda- but for the term of the root's time, which goes into
   w->lambda_root (it acts on the root's state): the events of one root, the last first,
   between sl_event_adjoint_root_start and sl_event_adjoint_root_end. q (n_dparams, dL/dp
   accumulated from the end) gets the event's term. */
void sl_event_adjoint_root_start(sl_event_work *w, int64_t n_states);
int sl_event_adjoint_jump(sl_event_work *w, const sl_problem *problem, sl_status *status,
                          int64_t i, double t, const sl_event_root *root,
                          const double *y_minus, const double *f_minus, const double *f_plus,
                          double *lambda, double *q);
/* lambda += the root's time term: lambda at the root's state. */
void sl_event_adjoint_root_end(const sl_event_work *w, int64_t n_states, double *lambda);

/* -- Root finding during a forward solve (CVODES' and ARKODE's alike) ------------------ */

/* The events' state in one forward solve: the directions of their roots (for the
   integrator's root finding), which roots it found (found[i]: the crossing's direction,
   +-1, or 0), the jumps' scratch, and the state and rhs before a jump (y_minus, f_minus;
   f_plus after it).
   Events whose reset left g just past its root with the flow taking it back (a bounce):
   until the root function sees g on the side it comes back to (watch_sign[i]; 0: not
   watching), a g past the root after watch_until[i] (in tau) means a step went over the
   whole return trip, and the next crossing with it: events accumulate (a bouncing ball
   coming to rest). Then the root function fails, with the event in `accumulating` (-1:
   none). */
typedef struct sl_event_roots {
    int *direction, *found, *watch_sign;
    double *watch_until, *g_plus;
    double *y_minus, *f_minus, *f_plus, *y_root, *f_root, *sens_root;
    int64_t accumulating;
    sl_event_work work;
} sl_event_roots;

/* What the forward solve lends the events: its rhs (f(t0 + tau, y) with the infusion
   rates), and with a recorded trajectory (rk) the call that records the state after a
   reset, both returning 0 or a failure already reported; the integrator's flag and name
   for a failed event kernel, and its out-of-memory flag. */
typedef struct sl_event_hooks {
    void *solver;
    int (*rhs)(void *solver, double tau, const double *y, double *f);
    int (*record)(void *solver, double tau);
    sl_rk_adjoint *rk;
    int rtfunc_fail, mem_fail;
    const char *rtfunc_fail_name, *mem_fail_name;
} sl_event_hooks;

/* Scratch for problem's events and n_sens sensitivities; 0, or -1 when out of memory. */
int sl_event_roots_init(sl_event_roots *r, const sl_problem *problem, int64_t n_sens);
void sl_event_roots_free(sl_event_roots *r);
/* Forgets the last solve's watches (at the start of a solve). */
void sl_event_roots_start(sl_event_roots *r, const sl_problem *problem);

/* The root function's check of the watches on g (n_events values at tau): 0, or -1 (the
   integrator's root function fails) where events accumulate. */
int sl_event_roots_watch(sl_event_roots *r, const sl_problem *problem, double tau,
                         const double *g);

/* Whether an output at tau_out belongs to the root troot the integrator just returned: it
   is within the root's location tolerance (CVODES' and ARKODE's: 100 uround (|t| + |h|),
   h the last step) after it. */
int sl_event_at_root(double tau_out, double troot, double h);

/* At a root tau (t = t0 + tau) of the events in r->found (the integrator returned there,
   y = y(tau), h its last step): each event found applies its reset to y, in declaration
   order, with the jump of the sensitivities (n_sens x n_states, s- in, s+ out), and joins
   the schedule's fired events (and the recorded trajectory, the state after it). The
   integrator then starts again from (tau, y+). 0, or the failure (reported in status). */
int sl_event_roots_fire(sl_event_roots *r, const sl_problem *problem, sl_status *status,
                        const sl_event_hooks *hooks, double t0, double tau, double h,
                        double *y, int64_t n_sens, double *sens, sl_schedule *schedule);

/* Whether an event that fired at the last sl_event_roots_fire is watched. */
int sl_event_roots_watching(const sl_event_roots *r, const sl_problem *problem);

/* A failed integrator call at t: SL_EVENTS_ACCUMULATE (reported in status) if the root
   function found events accumulating, else 0 (the integrator's own failure). */
int sl_event_roots_report_accumulating(const sl_event_roots *r, sl_status *status, double t);

#endif
