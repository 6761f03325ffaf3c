/* The timeline of one solve: the times where the integrators stop (dose times and infusion
   ends within [t0, t_last]) and what the doses do there. Forward loops stop at each, apply
   sl_schedule_jump and switch the infusion rates; the Runge-Kutta backward stops there
   too, for the doses' gradients, and also at the events that fired and at the problem's
   stop times (sl_schedule_backward_stops), where ARKODE's forward solves stop as well. Not
   part of the Python interface. Include it after sl_common.h (which has no include guard). */
#ifndef SL_SCHEDULE_H
#define SL_SCHEDULE_H

#include <stdint.h>

typedef struct sl_schedule {
    /* A copy of the doses, and each one's end: time + amount / rate for an infusion, its
       time for a bolus. */
    int64_t n_doses;
    double *time, *amount, *rate, *end;
    int64_t *state;
    int has_infusions;
    /* The distinct stop times, increasing. */
    int64_t n_stops;
    double *stops;
    /* The problem's stop times within [t0, t_last] (the caller's array), for the backward. */
    int64_t n_stop_times;
    const double *stop_times;
    int64_t capacity_doses, capacity_stops;
    /* The state-dependent events that fired (sl_events.h), in order: time, event index and
       the index of the record of the state after it in a recorded trajectory (-1: none). */
    int64_t n_fired, capacity_fired;
    double *fired_time;
    int64_t *fired_event, *fired_record;
} sl_schedule;

/* What is wrong with doses (NULL: none) for a solve over [t0, t_last] of n_states
   states, as text, or NULL if they are valid: times non-decreasing within [t0, t_last],
   amounts and rates finite and >= 0, states in range, and n_dose_sens doses if the
   sensitivities are for the inputs of n_dose_sens > 0 (sl_sens_options.n_doses). */
const char *sl_doses_check(const sl_doses *doses, int64_t n_states, double t0, double t_last,
                           int64_t n_dose_sens);

/* The schedule of a solve over [t0, t_last] with (checked) doses (NULL: none) and the
   problem's stop times (kept for sl_schedule_backward_stops). Returns 0, or -1 when out of memory. */
int sl_schedule_build(sl_schedule *s, const sl_doses *doses, int64_t n_stop_times,
                      const double *stop_times, double t0, double t_last);
void sl_schedule_free(sl_schedule *s);

/* Whether a dose starts or an infusion ends at t (the integrator restarts there). */
int sl_schedule_acts_at(const sl_schedule *s, double t);
/* y[state] += amount for each bolus at t. */
void sl_schedule_jump(const sl_schedule *s, double t, double *y);
/* rate[j] = the sum of the rates of the infusions into state j that are on just after t
   (after != 0: time <= t < end) or just before it (time < t <= end). */
void sl_schedule_rates(const sl_schedule *s, double t, int after, int64_t n_states,
                       double *rate);
/* out += the rates of sl_schedule_rates (rate: its scratch, n_states); nothing without
   infusions. */
void sl_schedule_add_rates(const sl_schedule *s, double t, int after, int64_t n_states,
                           double *rate, double *out);
/* Whether dose d is an infusion that is on over the interval from stop t to the next. */
int sl_schedule_infusing(const sl_schedule *s, int64_t d, double t);
/* The jumps at stop t of the sensitivities wrt the doses' own inputs (rows base + 3 d
   + 0, 1, 2 of sens, n_states each: dose d's time, amount and rate), y the state after the
   doses at t (sensitivity rows n_states apart). A bolus of a into c: its amount's row gets
   e_c, its time's f(t, y - a e_c) - f(t, y) (moving one bolus later keeps the state without
   it on [t, t + dt], as the adjoint's convention); an infusion at rate r into c: its time's
   row -r e_c at its start, and at its end e = time + a / r (de/dtime = 1, de/da = 1 / r,
   de/dr = -a / r^2, where rate r switches off) time +r e_c, amount +e_c, rate -(a / r) e_c.
   Between, the rate's row has the source e_c (sl_schedule_infusing). f is the problem's rhs
   without the rates (they cancel); work: 3 n_states. Returns 0, or the rhs kernel's flag. */
int sl_schedule_sens_jump(const sl_schedule *s, const sl_problem *p, sl_status *status,
                          double t, const double *y, int64_t base, double *sens, double *work);
/* Appends an event that fired at t (a time not before the last one's). 0, or -1 when out
   of memory. */
int sl_schedule_fire(sl_schedule *s, double t, int64_t event, int64_t record);
/* The times of the fired events and the problem's stop times join the stops, where a
   Runge-Kutta backward solve restarts (after the forward solve), and ARKODE's forward
   solves stop (before it, with no events). A one-step method's error estimate misses a jump
   of the integrand inside a step (a piecewise-constant input's gradients came out 4e-4
   wrong at rtol 1e-8), and it keeps its step size across the stop. CVODES' forward solves
   do not stop at the stop times: the step ending on one would see a right-continuous
   input's next value. 0, or -1 when out of memory. */
int sl_schedule_backward_stops(sl_schedule *s);
/* Whether doses equal the schedule's (NULL: none), entry by entry. */
int sl_schedule_same_doses(const sl_schedule *s, const sl_doses *doses);

#endif
