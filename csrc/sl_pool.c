/* A thread-safe pool of solvers (of any backend, see sl_backend.h) with memory of their
   last forward solve; the one home of the Ops' input checks and time-derivative math. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sl_internal.h"
#include "sl_auto.h"
#include "sl_idas.h"
#include "sl_pool.h"
#include "sl_dae_yp.h"
#include "sl_backend.h"
#include "sl_schedule.h"

typedef struct entry {
    void *solver;
    double *params;
    int in_use, has_owner, valid;
    pthread_t owner;
    /* The inputs and output of the last successful forward solve. */
    double t0;
    int64_t n_t, capacity;
    double *y0, *key_params, *tvals, *y;
    double *x0; /* the consistent initial state of that solve */
    sl_schedule doses; /* its doses (a copy; no stop times) */
    double *grad_work, *lambda, *work;
} entry;

struct sl_pool {
    sl_pool *next_pool, *previous_pool; /* the list of all pools, for fork() */
    const sl_backend *backend;
    void *model; /* the backend's model description (an sl_problem or sl_pool_dae) */
    int64_t n_states, n_dparams, n_params;
    int64_t *dparam_index;
    sl_options options;
    double *atol;
    int has_sens, has_adjoint;
    sl_sens_options sens;
    int64_t n_x0, *x0_index; /* the free initial states (sens0's last rows) */
    double *sens0;
    sl_adjoint_options adjoint;
    double *atol_b, *constraints;
    pthread_mutex_t lock;
    entry **entries;
    int64_t n_entries, capacity;
    int64_t n_failures, n_forward;
    int64_t *shared_failures;
    int reported;
    sl_status first_failure;
};

#define N(p) ((p)->n_states)

/* fork() while another thread holds a pool's lock would leave it locked forever in the
   child (which has only the forking thread). So a fork waits until no thread is inside a
   critical section: before it, the forking thread takes every lock (always in this order:
   the list of pools, each pool, the registry), and afterwards releases them in both
   processes. */
static pthread_mutex_t pools_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static sl_pool *pools;
static pthread_once_t fork_handlers_once = PTHREAD_ONCE_INIT;

static void lock_all(void)
{
    pthread_mutex_lock(&pools_lock);
    for (sl_pool *p = pools; p; p = p->next_pool) pthread_mutex_lock(&p->lock);
    pthread_mutex_lock(&registry_lock);
}

static void unlock_all(void)
{
    pthread_mutex_unlock(&registry_lock);
    for (sl_pool *p = pools; p; p = p->next_pool) pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&pools_lock);
}

static void install_fork_handlers(void) { pthread_atfork(lock_all, unlock_all, unlock_all); }

static void list_add(sl_pool *p)
{
    pthread_once(&fork_handlers_once, install_fork_handlers);
    pthread_mutex_lock(&pools_lock);
    p->next_pool = pools;
    if (pools) pools->previous_pool = p;
    pools = p;
    pthread_mutex_unlock(&pools_lock);
}

static void list_remove(sl_pool *p)
{
    pthread_mutex_lock(&pools_lock);
    if (p->previous_pool) p->previous_pool->next_pool = p->next_pool;
    else if (pools == p) pools = p->next_pool;
    if (p->next_pool) p->next_pool->previous_pool = p->previous_pool;
    pthread_mutex_unlock(&pools_lock);
}

static void *copy(const void *src, size_t bytes)
{
    void *dst = malloc(bytes ? bytes : 1);
    if (dst && src && bytes) memcpy(dst, src, bytes);
    return dst;
}

static int pool_create(const sl_backend *backend, const void *model, int64_t n_states,
                       int64_t n_dparams, int64_t n_params, const int64_t *dparam_index,
                       const sl_options *options, const sl_sens_options *sens,
                       const sl_adjoint_options *adjoint, sl_pool **out)
{
    sl_pool *p = calloc(1, sizeof(*p));
    int64_t n = n_states, k;
    *out = p;
    if (!p) return SL_MEM_FAIL;
    p->backend = backend;
    p->model = copy(model, backend->model_bytes);
    p->n_states = n;
    p->n_dparams = n_dparams;
    p->n_params = n_params;
    p->dparam_index = copy(dparam_index, n_dparams * sizeof(int64_t));
    p->options = *options;
    p->atol = copy(options->atol, n * sizeof(double));
    p->options.atol = p->atol;
    if (options->constraints) p->constraints = copy(options->constraints, n * sizeof(double));
    p->options.constraints = p->constraints;
    p->x0_index = calloc(n + 1, sizeof(int64_t));
    if (p->x0_index) p->n_x0 = backend->free_initial_states(model, p->x0_index);
    p->has_sens = sens != NULL && sens->mode != SL_SENS_NONE && sens->n_sens > 0;
    if (p->has_sens) {
        p->sens = *sens;
        /* theta = (derivative params, x0, the doses' inputs): s(t0) = (0, unit vectors at
           x0's states, 0). */
        p->sens0 = calloc(sens->n_sens * n + 1, sizeof(double));
        if (p->sens0 && sens->n_sens == n_dparams + p->n_x0 + 3 * sens->n_doses)
            for (k = 0; k < p->n_x0; k++) p->sens0[(n_dparams + k) * n + p->x0_index[k]] = 1.0;
    }
    p->has_adjoint = adjoint != NULL;
    if (p->has_adjoint) {
        p->adjoint = *adjoint;
        p->atol_b = copy(adjoint->backward.atol, n * sizeof(double));
        p->adjoint.backward.atol = p->atol_b;
    }
    pthread_mutex_init(&p->lock, NULL);
    list_add(p);
    if (!p->model || !p->dparam_index || !p->atol || !p->x0_index || (p->has_sens && !p->sens0)
        || (p->has_adjoint && !p->atol_b) || (options->constraints && !p->constraints))
        return SL_MEM_FAIL;
    return p->has_sens && sens->n_sens != n_dparams + p->n_x0 + 3 * sens->n_doses ? SL_BAD_INPUT : 0;
}

int sl_pool_create(const sl_problem *problem, int64_t n_params, const int64_t *dparam_index,
                   const sl_options *options, const sl_sens_options *sens,
                   const sl_adjoint_options *adjoint, sl_pool **out)
{
    const sl_backend *backend = options->method == SL_AUTO ? &sl_auto_backend
                                : options->method == SL_ERK || options->method == SL_DIRK
                                    ? &sl_arkode_backend : &sl_cvodes_backend;
    return pool_create(backend, problem, problem->n_states, problem->n_dparams,
                       n_params, dparam_index, options, sens, adjoint, out);
}

int sl_pool_create_dae(const sl_pool_dae *dae, int64_t n_params, const int64_t *dparam_index,
                       const sl_options *options, const sl_sens_options *sens,
                       const sl_adjoint_options *adjoint, sl_pool **out)
{
    return pool_create(&sl_idas_backend, dae, dae->problem.n_states, dae->problem.n_dparams,
                       n_params, dparam_index, options, sens, adjoint, out);
}

static void entry_free(const sl_pool *p, entry *e)
{
    if (!e) return;
    p->backend->free(e->solver);
    free(e->params); free(e->y0); free(e->key_params); free(e->tvals); free(e->y); free(e->x0);
    free(e->grad_work); free(e->lambda); free(e->work);
    sl_schedule_free(&e->doses);
    free(e);
}

void sl_pool_free(sl_pool *p)
{
    if (!p) return;
    list_remove(p);
    for (int64_t i = 0; i < p->n_entries; i++) entry_free(p, p->entries[i]);
    free(p->entries);
    free(p->model); free(p->dparam_index); free(p->atol); free(p->x0_index); free(p->sens0);
    free(p->atol_b); free(p->constraints);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

static entry *entry_new(sl_pool *p, int *flag)
{
    entry *e = calloc(1, sizeof(*e));
    int64_t n = N(p);
    if (!e) return NULL;
    e->params = calloc(p->n_params + 1, sizeof(double));
    e->y0 = calloc(n, sizeof(double));
    e->key_params = calloc(p->n_params + 1, sizeof(double));
    e->x0 = calloc(n, sizeof(double));
    e->grad_work = calloc(p->n_dparams + 1, sizeof(double));
    e->lambda = calloc(n, sizeof(double));
    e->work = calloc(n, sizeof(double));
    if (!e->params || !e->y0 || !e->key_params || !e->x0 || !e->grad_work || !e->lambda
        || !e->work) {
        entry_free(p, e);
        return NULL;
    }
    *flag = p->backend->create(p->model, e->params, &p->options, p->has_sens ? &p->sens : NULL,
                               p->has_adjoint ? &p->adjoint : NULL, &e->solver);
    if (*flag) {
        entry_free(p, e);
        return NULL;
    }
    return e;
}

static int key_matches(const sl_pool *p, const entry *e, double t0, const double *y0,
                       const double *params, int64_t n_t, const double *tvals,
                       const sl_doses *doses)
{
    return e->valid && e->t0 == t0 && e->n_t == n_t
        && !memcmp(e->y0, y0, N(p) * sizeof(double))
        && !memcmp(e->key_params, params, p->n_params * sizeof(double))
        && !memcmp(e->tvals, tvals, n_t * sizeof(double))
        && sl_schedule_same_doses(&e->doses, doses);
}

/* A free solver: one whose last forward solve matches the inputs (if given), else the one
   this thread used last (so other threads' remembered solves survive), else any, else a
   new one. *matched tells whether the first case applied. */
static entry *acquire(sl_pool *p, double t0, const double *y0, const double *params,
                      int64_t n_t, const double *tvals, const sl_doses *doses, int want_match,
                      int *matched, int *flag)
{
    pthread_t self = pthread_self();
    entry *found = NULL, *e;
    int64_t i;
    *matched = 0;
    *flag = 0;
    pthread_mutex_lock(&p->lock);
    for (i = 0; want_match && !found && i < p->n_entries; i++) {
        e = p->entries[i];
        if (!e->in_use && key_matches(p, e, t0, y0, params, n_t, tvals, doses)) {
            found = e;
            *matched = 1;
        }
    }
    for (i = 0; !found && i < p->n_entries; i++) {
        e = p->entries[i];
        if (!e->in_use && e->has_owner && pthread_equal(e->owner, self)) found = e;
    }
    for (i = 0; !found && i < p->n_entries; i++)
        if (!p->entries[i]->in_use) found = p->entries[i];
    if (found) {
        found->in_use = 1;
        found->owner = self;
        found->has_owner = 1;
    }
    pthread_mutex_unlock(&p->lock);
    if (found) return found;

    /* Creating a solver takes a while: do it outside the lock. */
    e = entry_new(p, flag);
    if (!e) {
        if (!*flag) *flag = SL_MEM_FAIL;
        return NULL;
    }
    e->in_use = 1;
    e->owner = self;
    e->has_owner = 1;
    pthread_mutex_lock(&p->lock);
    if (p->n_entries == p->capacity) {
        int64_t capacity = p->capacity ? 2 * p->capacity : 4;
        entry **entries = realloc(p->entries, capacity * sizeof(entry *));
        if (!entries) {
            pthread_mutex_unlock(&p->lock);
            entry_free(p, e);
            *flag = SL_MEM_FAIL;
            return NULL;
        }
        p->entries = entries;
        p->capacity = capacity;
    }
    p->entries[p->n_entries++] = e;
    pthread_mutex_unlock(&p->lock);
    return e;
}

static void release(sl_pool *p, entry *e)
{
    pthread_mutex_lock(&p->lock);
    e->in_use = 0;
    pthread_mutex_unlock(&p->lock);
}

static void record_failure(sl_pool *p, const sl_status *solver_status, int flag,
                           const char *why, sl_status *status_out)
{
    sl_status s;
    if (solver_status) s = *solver_status;
    else {
        memset(&s, 0, sizeof(s));
        s.flag = flag;
        s.t = NAN;
        snprintf(s.flag_name, sizeof(s.flag_name), "%s",
                 flag == SL_BAD_INPUT ? "SL_BAD_INPUT"
                 : flag == SL_DERIVATIVE_FAIL ? "SL_DERIVATIVE_FAIL" : "SL_MEM_FAIL");
        snprintf(s.message, sizeof(s.message), "%s", why);
    }
    if (status_out) *status_out = s;
    pthread_mutex_lock(&p->lock);
    if (p->n_failures++ == 0) p->first_failure = s;
    pthread_mutex_unlock(&p->lock);
    if (p->shared_failures) sl_counter_add(p->shared_failures, 1);
}

void sl_counter_add(int64_t *counter, int64_t n)
{
    __atomic_fetch_add(counter, n, __ATOMIC_SEQ_CST);
}

void sl_pool_share_failures(sl_pool *p, int64_t *counter) { p->shared_failures = counter; }

static int all_finite(const double *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* Bad dynamic inputs: a description of what is wrong, or NULL. */
static const char *check_inputs(const sl_pool *p, double t0, const double *y0,
                                const double *params, int64_t n_t, const double *tvals)
{
    int64_t i;
    if (!isfinite(t0)) return "t0 is not finite";
    if (!all_finite(y0, N(p))) return "y0 is not finite";
    if (!all_finite(params, p->n_params)) return "params are not finite";
    if (n_t < 1) return "tvals is empty";
    if (!all_finite(tvals, n_t)) return "tvals is not finite";
    if (tvals[0] < t0) return "tvals[0] < t0";
    for (i = 1; i < n_t; i++)
        if (!(tvals[i] > tvals[i - 1])) return "tvals is not strictly increasing";
    if (!isnan(p->options.tstop) && tvals[n_t - 1] > p->options.tstop) return "tvals[-1] > tstop";
    return NULL;
}

/* Doses this pool cannot solve with, or bad ones: a description, or NULL. */
static const char *check_doses(const sl_pool *p, const sl_doses *doses, double t0,
                               const double *tvals, int64_t n_t)
{
    int64_t n_dose_sens = p->has_sens ? p->sens.n_doses : 0;
    int backward = p->adjoint.backward.method;
    if (!doses || doses->n == 0) return sl_doses_check(doses, N(p), t0, tvals[n_t - 1], n_dose_sens);
    if (p->backend == &sl_idas_backend) return "doses are not supported for a DAE";
    if (backward == SL_AUTO) /* solver auto: its backward after BDF must take them too */
        backward = sl_auto_backward_method(SL_BDF, p->adjoint.backward.linear_solver,
                                           p->adjoint.quad_errcon);
    if (p->has_adjoint && backward != SL_ERK && backward != SL_DIRK)
        return "doses need solver_backward ERK or DIRK";
    return sl_doses_check(doses, N(p), t0, tvals[n_t - 1], n_dose_sens);
}

static int forward(sl_pool *p, entry *e, double t0, const double *y0, const double *params,
                   int64_t n_t, const double *tvals, const sl_doses *doses, double *sens_out)
{
    int64_t n = N(p);
    int flag;
    e->valid = 0;
    memcpy(e->params, params, p->n_params * sizeof(double));
    if (n_t > e->capacity) {
        free(e->tvals);
        free(e->y);
        e->tvals = malloc(n_t * sizeof(double));
        e->y = malloc(n_t * n * sizeof(double));
        e->capacity = (e->tvals && e->y) ? n_t : 0;
        if (!e->capacity) return SL_MEM_FAIL;
    }
    pthread_mutex_lock(&p->lock);
    p->n_forward++;
    pthread_mutex_unlock(&p->lock);
    memcpy(e->x0, y0, n * sizeof(double));
    flag = p->backend->solve(e->solver, t0, e->x0, p->has_sens ? p->sens0 : NULL, n_t, tvals,
                             doses, e->y, sens_out);
    if (flag) return flag;
    if (sl_schedule_build(&e->doses, doses, 0, NULL, t0, tvals[n_t - 1])) return SL_MEM_FAIL;
    e->t0 = t0;
    e->n_t = n_t;
    memcpy(e->y0, y0, n * sizeof(double));
    memcpy(e->key_params, params, p->n_params * sizeof(double));
    memcpy(e->tvals, tvals, n_t * sizeof(double));
    e->valid = 1;
    return 0;
}

static const char DERIVATIVE_FAILED[] = "the time derivative y'(t) could not be computed (a "
    "kernel gave non-finite values, or the matrix that determines y' is singular)";

/* out = y' at output i of e's last forward solve (i = -1: at t0). */
static int time_derivative(sl_pool *p, entry *e, int64_t i, double *out)
{
    if (i < 0) return p->backend->time_derivative(e->solver, -1, e->t0, e->x0, out);
    return p->backend->time_derivative(e->solver, i, e->tvals[i], e->y + i * N(p), out);
}

static int fail(sl_pool *p, entry *e, int flag, const char *why, sl_status *status)
{
    /* not the solver's failure: */
    int own = flag == SL_BAD_INPUT || flag == SL_MEM_FAIL || flag == SL_DERIVATIVE_FAIL;
    record_failure(p, e && !own ? p->backend->status(e->solver) : NULL, flag, why, status);
    if (e) release(p, e);
    return flag;
}

int sl_pool_solve(sl_pool *p, double t0, const double *y0, const double *params,
                  int64_t n_t, const double *tvals, double *y_out, double *sens_out,
                  double *dydt0_out, double *fy_out, sl_status *status)
{
    return sl_pool_solve_doses(p, t0, y0, params, n_t, tvals, NULL, y_out, sens_out, dydt0_out,
                               fy_out, status);
}

int sl_pool_solve_doses(sl_pool *p, double t0, const double *y0, const double *params,
                        int64_t n_t, const double *tvals, const sl_doses *doses, double *y_out,
                        double *sens_out, double *dydt0_out, double *fy_out, sl_status *status)
{
    int64_t n = N(p), n_sens = p->has_sens ? p->sens.n_sens : 0, nd = p->n_dparams;
    int64_t i, j, m;
    int flag, matched;
    const char *bad = check_inputs(p, t0, y0, params, n_t, tvals);
    if (!bad) bad = check_doses(p, doses, t0, tvals, n_t);
    double *sens = NULL, *xp0;
    entry *e;
    if (bad) return fail(p, NULL, SL_BAD_INPUT, bad, status);
    if (!p->has_sens && (sens_out || dydt0_out))
        return fail(p, NULL, SL_BAD_INPUT, "sensitivities requested from a pool without them", status);
    e = acquire(p, t0, y0, params, n_t, tvals, doses, 0, &matched, &flag);
    if (!e) return fail(p, NULL, flag, "could not create a solver", status);
    if (p->has_sens) {
        /* The integrators need a buffer for all sensitivities, even if the caller wants none. */
        sens = sens_out ? sens_out : malloc(n_t * n_sens * n * sizeof(double) + 1);
        if (!sens) return fail(p, e, SL_MEM_FAIL, "out of memory", status);
    }
    flag = forward(p, e, t0, y0, params, n_t, tvals, doses, sens);
    if (!flag && dydt0_out) {
        xp0 = e->work;
        flag = time_derivative(p, e, -1, xp0);
        for (i = 0; !flag && i < n_t; i++)
            for (j = 0; j < n; j++) {
                double acc = 0.0;
                for (m = 0; m < p->n_x0; m++)
                    acc += sens[(i * n_sens + nd + m) * n + j] * xp0[p->x0_index[m]];
                dydt0_out[i * n + j] = -acc;
            }
    }
    if (sens != sens_out) free(sens);
    for (i = 0; !flag && fy_out && i < n_t; i++) flag = time_derivative(p, e, i, fy_out + i * n);
    if (flag)
        return fail(p, e, flag, flag == SL_DERIVATIVE_FAIL ? DERIVATIVE_FAILED : "forward solve failed",
                    status);
    memcpy(y_out, e->y, n_t * n * sizeof(double));
    release(p, e);
    return 0;
}

int sl_pool_gradient(sl_pool *p, double t0, const double *y0, const double *params,
                     int64_t n_t, const double *tvals, const double *grads, double *dy0,
                     double *dparams, double *dt0, double *dtvals, sl_status *status)
{
    return sl_pool_gradient_doses(p, t0, y0, params, n_t, tvals, NULL, grads, dy0, dparams, dt0,
                                  dtvals, NULL, NULL, NULL, status);
}

int sl_pool_gradient_doses(sl_pool *p, double t0, const double *y0, const double *params,
                           int64_t n_t, const double *tvals, const sl_doses *doses,
                           const double *grads, double *dy0, double *dparams, double *dt0,
                           double *dtvals, double *dose_time, double *dose_amount,
                           double *dose_rate, sl_status *status)
{
    int64_t n = N(p), i, j;
    int flag, matched;
    const char *bad = check_inputs(p, t0, y0, params, n_t, tvals);
    if (!bad) bad = check_doses(p, doses, t0, tvals, n_t);
    entry *e;
    if (bad) return fail(p, NULL, SL_BAD_INPUT, bad, status);
    if (!all_finite(grads, n_t * n)) return fail(p, NULL, SL_BAD_INPUT, "output gradient is not finite", status);
    if (!p->has_adjoint) return fail(p, NULL, SL_BAD_INPUT, "gradient requested from a pool without adjoint", status);
    e = acquire(p, t0, y0, params, n_t, tvals, doses, 1, &matched, &flag);
    if (!e) return fail(p, NULL, flag, "could not create a solver", status);
    if (!matched && (flag = forward(p, e, t0, y0, params, n_t, tvals, doses, NULL)))
        return fail(p, e, flag, "forward solve failed", status);
    flag = p->backend->backward(e->solver, t0, n_t, tvals, grads, e->grad_work, e->lambda,
                                dose_time, dose_amount, dose_rate);
    /* The backward solve re-runs parts of the forward one: its checkpoints stay valid. */
    if (flag) return fail(p, e, flag, "backward solve failed", status);
    for (i = 0; i < p->n_params; i++) dparams[i] = NAN;
    for (i = 0; i < p->n_dparams; i++) dparams[p->dparam_index[i]] = e->grad_work[i];
    for (j = 0; j < n; j++) dy0[j] = -e->lambda[j];
    if (dt0 && dtvals) {
        if ((flag = time_derivative(p, e, -1, e->work)))
            return fail(p, e, flag, DERIVATIVE_FAILED, status);
        *dt0 = 0.0;
        for (j = 0; j < n; j++) *dt0 += e->lambda[j] * e->work[j];
        for (i = 0; i < n_t; i++) {
            double acc = 0.0;
            if ((flag = time_derivative(p, e, i, e->work)))
                return fail(p, e, flag, DERIVATIVE_FAILED, status);
            for (j = 0; j < n; j++) acc += grads[i * n + j] * e->work[j];
            dtvals[i] = acc;
        }
    }
    release(p, e);
    return 0;
}

static int64_t locked_read(sl_pool *p, const int64_t *field)
{
    int64_t value;
    pthread_mutex_lock(&p->lock);
    value = *field;
    pthread_mutex_unlock(&p->lock);
    return value;
}

int64_t sl_pool_forward_solves(sl_pool *p) { return locked_read(p, &p->n_forward); }

void sl_pool_report_once(sl_pool *p)
{
    int first;
    sl_status s;
    pthread_mutex_lock(&p->lock);
    first = !p->reported && p->n_failures > 0;
    p->reported |= first;
    s = p->first_failure;
    pthread_mutex_unlock(&p->lock);
    if (first) {
        char t[32];
        sl_format_time(t, sizeof(t), s.t);
        fprintf(stderr, "sunode_like: %s solve failed with %s (%d) at t = %s%s%s\n"
                "sunode_like: (the point gets NaN, logp = -inf; later failures are only "
                "counted)\n", p->backend->kind, s.flag_name, s.flag, t,
                s.message[0] ? ": " : "", s.message);
    }
}

/* The registry: a small table, searched linearly (a process holds few models). */
static int64_t *registry_keys;
static sl_pool **registry_pools;
static int64_t registry_size, registry_capacity;

int sl_registry_set(int64_t key, sl_pool *pool)
{
    int64_t i;
    int flag = 0;
    pthread_mutex_lock(&registry_lock);
    for (i = 0; i < registry_size && registry_keys[i] != key; i++) {}
    if (i == registry_size) {
        if (registry_size == registry_capacity) {
            int64_t capacity = registry_capacity ? 2 * registry_capacity : 16;
            int64_t *keys = realloc(registry_keys, capacity * sizeof(int64_t));
            sl_pool **pools = keys ? realloc(registry_pools, capacity * sizeof(sl_pool *)) : NULL;
            if (keys) registry_keys = keys;
            if (pools) registry_pools = pools;
            if (!keys || !pools) flag = SL_MEM_FAIL;
            else registry_capacity = capacity;
        }
        if (!flag) registry_keys[registry_size++] = key;
    }
    if (!flag) registry_pools[i] = pool;
    pthread_mutex_unlock(&registry_lock);
    return flag;
}

sl_pool *sl_registry_get(int64_t key)
{
    sl_pool *pool = NULL;
    pthread_mutex_lock(&registry_lock);
    for (int64_t i = 0; i < registry_size; i++)
        if (registry_keys[i] == key) pool = registry_pools[i];
    pthread_mutex_unlock(&registry_lock);
    return pool;
}
