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
   amounts and rates finite and >= 0, states in range. */
const char *sl_doses_check(const sl_doses *doses, int64_t n_states, double t0, double t_last);

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
