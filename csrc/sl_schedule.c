/* The timeline of a solve: see sl_schedule.h. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sl_internal.h"
#include "sl_schedule.h"

const char *sl_doses_check(const sl_doses *doses, int64_t n_states, double t0, double t_last,
                           int64_t n_dose_sens)
{
    int64_t k;
    if (n_dose_sens > 0 && (!doses || doses->n != n_dose_sens))
        return "the solver's sensitivities wrt doses are for another number of doses";
    if (!doses || doses->n == 0) return NULL;
    if (doses->n < 0 || !doses->time || !doses->amount || !doses->rate || !doses->state)
        return "doses: missing arrays";
    for (k = 0; k < doses->n; k++) {
        if (!isfinite(doses->time[k])) return "a dose time is not finite";
        if (!isfinite(doses->amount[k])) return "a dose amount is not finite";
        if (!isfinite(doses->rate[k])) return "a dose rate is not finite";
        if (doses->time[k] < t0) return "a dose time is before t0";
        if (doses->time[k] > t_last) return "a dose time is after tvals[-1]";
        if (k > 0 && doses->time[k] < doses->time[k - 1]) return "dose times are not sorted";
        if (doses->amount[k] < 0.0) return "a dose amount is negative";
        if (doses->rate[k] < 0.0) return "a dose rate is negative";
        if (doses->state[k] < 0 || doses->state[k] >= n_states) return "a dose state is out of range";
    }
    return NULL;
}

static int compare(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts the m values and keeps each once; returns how many remain. */
static int64_t sort_unique(double *values, int64_t m)
{
    int64_t k, kept = 0;
    qsort(values, (size_t)m, sizeof(double), compare);
    for (k = 0; k < m; k++)
        if (kept == 0 || values[k] != values[kept - 1]) values[kept++] = values[k];
    return kept;
}

/* Room for count values in *array (of capacity *capacity); 0, or -1 when out of memory. */
static int reserve(void **array, size_t size, int64_t count, int64_t *capacity)
{
    void *grown;
    if (count <= *capacity) return 0;
    if (!(grown = realloc(*array, (size_t)count * size))) return -1;
    *array = grown;
    return 0;
}

static int reserve_doses(sl_schedule *s, int64_t n)
{
    int64_t capacity = s->capacity_doses;
    if (reserve((void **)&s->time, sizeof(double), n, &capacity)
        || reserve((void **)&s->amount, sizeof(double), n, &capacity)
        || reserve((void **)&s->rate, sizeof(double), n, &capacity)
        || reserve((void **)&s->end, sizeof(double), n, &capacity)
        || reserve((void **)&s->state, sizeof(int64_t), n, &capacity))
        return -1;
    if (n > s->capacity_doses) s->capacity_doses = n;
    return 0;
}

int sl_schedule_build(sl_schedule *s, const sl_doses *doses, int64_t n_stop_times,
                      const double *stop_times, double t0, double t_last)
{
    int64_t n = doses ? doses->n : 0, k, m = 0;
    s->n_doses = s->n_stops = s->n_fired = 0;
    s->has_infusions = 0;
    if (reserve_doses(s, n)) return -1;
    if (reserve((void **)&s->stops, sizeof(double), 2 * n, &s->capacity_stops)) return -1;
    if (2 * n > s->capacity_stops) s->capacity_stops = 2 * n;
    for (k = 0; k < n; k++) {
        s->time[k] = doses->time[k];
        s->amount[k] = doses->amount[k];
        s->rate[k] = doses->rate[k];
        s->state[k] = doses->state[k];
        s->end[k] = s->rate[k] > 0.0 ? s->time[k] + s->amount[k] / s->rate[k] : s->time[k];
        s->has_infusions |= s->rate[k] > 0.0;
        s->stops[m++] = s->time[k];
        if (s->end[k] > s->time[k] && s->end[k] <= t_last) s->stops[m++] = s->end[k];
    }
    s->n_doses = n;
    s->n_stops = sort_unique(s->stops, m);
    for (k = 0; k < n_stop_times && stop_times[k] < t0; k++) {}
    s->stop_times = stop_times + k;
    for (s->n_stop_times = 0; k < n_stop_times && stop_times[k] <= t_last; k++) s->n_stop_times++;
    return 0;
}

void sl_schedule_free(sl_schedule *s)
{
    free(s->time); free(s->amount); free(s->rate); free(s->end); free(s->state); free(s->stops);
    free(s->fired_time); free(s->fired_event); free(s->fired_record);
    memset(s, 0, sizeof(*s));
}

int sl_schedule_acts_at(const sl_schedule *s, double t)
{
    for (int64_t k = 0; k < s->n_doses; k++)
        if (s->time[k] == t || (s->rate[k] > 0.0 && s->end[k] == t)) return 1;
    return 0;
}

void sl_schedule_jump(const sl_schedule *s, double t, double *y)
{
    for (int64_t k = 0; k < s->n_doses; k++)
        if (s->time[k] == t && s->rate[k] == 0.0) y[s->state[k]] += s->amount[k];
}

void sl_schedule_rates(const sl_schedule *s, double t, int after, int64_t n_states,
                       double *rate)
{
    int64_t k;
    for (k = 0; k < n_states; k++) rate[k] = 0.0;
    for (k = 0; k < s->n_doses; k++) {
        int on = after ? s->time[k] <= t && t < s->end[k] : s->time[k] < t && t <= s->end[k];
        if (s->rate[k] > 0.0 && on) rate[s->state[k]] += s->rate[k];
    }
}

void sl_schedule_add_rates(const sl_schedule *s, double t, int after, int64_t n_states,
                           double *rate, double *out)
{
    if (!s->has_infusions) return;
    sl_schedule_rates(s, t, after, n_states, rate);
    for (int64_t j = 0; j < n_states; j++) out[j] += rate[j];
}

int sl_schedule_infusing(const sl_schedule *s, int64_t d, double t)
{
    return s->rate[d] > 0.0 && s->time[d] <= t && t < s->end[d];
}

int sl_schedule_sens_jump(const sl_schedule *s, const sl_problem *p, sl_status *status,
                          double t, const double *y, int64_t base, double *sens, double *work)
{
    int64_t n = p->n_states, d, j;
    double *f_plus = work, *f_minus = work + n, *y_minus = work + 2 * n;
    int flag, f_plus_known = 0;
    for (d = 0; d < s->n_doses; d++) {
        int64_t c = s->state[d];
        double *time = sens + (base + 3 * d) * n, *amount = time + n, *rate = amount + n;
        double r = s->rate[d];
        if (r > 0.0) {
            if (s->time[d] == t) time[c] -= r;
            if (s->end[d] == t) time[c] += r, amount[c] += 1.0, rate[c] -= s->amount[d] / r;
            continue;
        }
        if (s->time[d] != t) continue;
        amount[c] += 1.0;
        if (!f_plus_known) {
            if ((flag = sl_call_kernel(status, n, p->rhs, "rhs", t, y, p->params, f_plus)))
                return flag;
            f_plus_known = 1;
        }
        memcpy(y_minus, y, n * sizeof(double));
        y_minus[c] -= s->amount[d];
        if ((flag = sl_call_kernel(status, n, p->rhs, "rhs", t, y_minus, p->params, f_minus)))
            return flag;
        for (j = 0; j < n; j++) time[j] += f_minus[j] - f_plus[j];
    }
    return 0;
}

int sl_schedule_fire(sl_schedule *s, double t, int64_t event, int64_t record)
{
    int64_t n = s->n_fired + 1, capacity = s->capacity_fired;
    if (n > capacity) capacity = 2 * n;
    if (reserve((void **)&s->fired_time, sizeof(double), capacity, &s->capacity_fired)
        || reserve((void **)&s->fired_event, sizeof(int64_t), capacity, &s->capacity_fired)
        || reserve((void **)&s->fired_record, sizeof(int64_t), capacity, &s->capacity_fired))
        return -1;
    s->capacity_fired = capacity;
    s->fired_time[s->n_fired] = t;
    s->fired_event[s->n_fired] = event;
    s->fired_record[s->n_fired++] = record;
    return 0;
}

int sl_schedule_backward_stops(sl_schedule *s)
{
    int64_t m = s->n_stops, k, count = m + s->n_fired + s->n_stop_times;
    if (count == m) return 0;
    if (reserve((void **)&s->stops, sizeof(double), count, &s->capacity_stops)) return -1;
    if (count > s->capacity_stops) s->capacity_stops = count;
    for (k = 0; k < s->n_fired; k++) s->stops[m++] = s->fired_time[k];
    for (k = 0; k < s->n_stop_times; k++) s->stops[m++] = s->stop_times[k];
    s->n_stops = sort_unique(s->stops, m);
    return 0;
}

int sl_schedule_same_doses(const sl_schedule *s, const sl_doses *doses)
{
    int64_t n = doses ? doses->n : 0;
    if (n != s->n_doses) return 0;
    return n == 0 || (!memcmp(s->time, doses->time, n * sizeof(double))
                      && !memcmp(s->amount, doses->amount, n * sizeof(double))
                      && !memcmp(s->rate, doses->rate, n * sizeof(double))
                      && !memcmp(s->state, doses->state, n * sizeof(int64_t)));
}
