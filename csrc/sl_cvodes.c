/* CVODES solves with the loops over output times in C: one foreign call per solve.

   CVODES integrates in tau = t - t0 (t0 of the last solve): it adds each step to its
   current time, and at t = 1e14 (float64 spacing 0.016) the rounding of those sums made
   decay 80% wrong. Kernels get t0 + tau, and everything reported is in t. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cvodes/cvodes.h>
#include <cvodes/cvodes_ls.h>
#include <nvector/nvector_serial.h>

#include "sl_internal.h"
#include "sl_cvodes.h"
#include "sl_events.h"
#include "sl_rk_adjoint.h"
#include "sl_schedule.h"

struct sl_cvodes {
    sl_core core; /* integrator memory, status, time origin, adjoint, stats: sl_internal.h */
    sl_problem problem;
    sl_sens_options sens;
    int has_sens;
    int max_order; /* of the forward method: 5 (BDF) or 12 (Adams) */
    N_Vector y;
    N_Vector *yS;
    /* Scratch for kernel values: jac_cache stays valid between a Jacobian-times-vector
       setup and its products, so it is kept apart from jac_work. */
    double *jac_work, *jac_cache, *dfdp_work;
    double *kernel_y; /* the state of the last failed kernel call (status.kernel_y) */
    /* An explicit Runge-Kutta backward problem replaces CVODES' adjoint module: the forward
       solve then records every step (into rk) instead of checkpoints. */
    sl_rk_adjoint *rk;
    N_Vector ydot;
    /* The doses and stop times of the last solve, and the infusion rates rhs_fn adds to
       f (n_states; only while `infusing`), those of the interval after the stop at
       rates_time. */
    sl_schedule schedule;
    double *rate, rates_time;
    int infusing;
    /* With sensitivities wrt doses, the first of their rows and sl_schedule_sens_jump's
       scratch (3 n_states). */
    int64_t dose_sens_base;
    double *dose_work;
    /* State-dependent events (problem.n_events > 0): CVODES' root finding over event_g
       (sl_events.h); the sensitivities across a jump (n_sens x n_states), at an event or
       a dose. */
    sl_event_roots roots;
    double *sens_minus;
};

static int record(sl_cvodes *s, double tau, int exact);

#define N(s) ((s)->problem.n_states)
#define DATA(v) N_VGetArrayPointer(v)

/* CVodeGetReturnFlagName, which (SUNDIALS 6.4) names CV_CONSTR_FAIL "NONE". */
static char *flag_name(long flag)
{
    char *name;
    if (flag != CV_CONSTR_FAIL) return CVodeGetReturnFlagName(flag);
    if ((name = malloc(sizeof("CV_CONSTR_FAIL")))) strcpy(name, "CV_CONSTR_FAIL");
    return name;
}

static const sl_calls CVODES_CALLS = {
    CV_MEM_FAIL, CV_ERR_FAILURE, CV_TSTOP_RETURN, CV_NO_FWD, CV_NORMAL,
    "CV_ERR_FAILURE", "CV_TSTOP_RETURN", "CV_NO_FWD",
    flag_name, CVodeFree, CVodeGetCurrentTime, CVodeGetCurrentStep,
    CVodeGetNumSteps, CVodeGetNumRhsEvals, CVodeGetNumJacEvals, CVodeGetNumErrTestFails,
    CVodeGetNumNonlinSolvConvFails, CVodeGetSensNumErrTestFails,
    CVodeGetSensNumNonlinSolvConvFails, CVodeSetUserData, CVodeSVtolerances, CVodeSetMaxNumSteps, CVodeSetMaxStep,
    CVodeSetConstraints, CVodeSetLinearSolver, CVodeSetInitStep, CVodeSetStopTime,
    CVodeSensEEtolerances, CVodeSetSensErrCon, CVodeGetAdjCVodeBmem, CVodeSetUserDataB,
    CVodeSVtolerancesB, CVodeSetMaxNumStepsB, CVodeSetLinearSolverB, CVodeQuadSStolerancesB,
    CVodeSetQuadErrConB, CVodeQuadReInitB, CVodeB, CVodeGetQuadB};

static int fail(sl_cvodes *s, void *mem, int flag) { return sl_fail(&s->core, mem, flag); }

/* The kernel at time t0 + tau. */
static int call(sl_cvodes *s, sl_kernel kernel, const char *name, double tau, const double *y,
                double *out)
{
    return sl_call_kernel(&s->core.status, N(s), kernel, name, s->core.t0 + tau, y,
                          s->problem.params, out);
}

static int eval_jac(sl_cvodes *s, double tau, N_Vector y, double *values)
{
    return call(s, s->problem.jac, "jac", tau, DATA(y), values);
}

/* f(t0 + tau, y) with the infusion rates. */
static int rhs_values(sl_cvodes *s, double tau, const double *y, double *out)
{
    int flag = call(s, s->problem.rhs, "rhs", tau, y, out);
    if (s->infusing && !flag)
        for (int64_t j = 0; j < N(s); j++) out[j] += s->rate[j];
    return flag;
}

static int rhs_fn(double tau, N_Vector y, N_Vector ydot, void *user_data)
{
    return rhs_values(user_data, tau, DATA(y), DATA(ydot));
}

static int jac_fn(double tau, N_Vector y, N_Vector fy, SUNMatrix J, void *user_data,
                  N_Vector tmp1, N_Vector tmp2, N_Vector tmp3)
{
    sl_cvodes *s = user_data;
    int flag = eval_jac(s, tau, y, s->jac_work);
    (void)fy; (void)tmp1; (void)tmp2; (void)tmp3;
    if (flag) return flag;
    return sl_matrix_fill(J, N(s), s->problem.jac_colptr, s->problem.jac_rows, NULL,
                          s->jac_work, 1.0);
}

static int jtsetup_fn(double tau, N_Vector y, N_Vector fy, void *user_data)
{
    (void)fy;
    return eval_jac(user_data, tau, y, ((sl_cvodes *)user_data)->jac_cache);
}

static int jtimes_fn(N_Vector v, N_Vector Jv, double tau, N_Vector y, N_Vector fy,
                     void *user_data, N_Vector tmp)
{
    sl_cvodes *s = user_data;
    (void)tau; (void)y; (void)fy; (void)tmp;
    sl_csc_matvec(N(s), N(s), s->problem.jac_colptr, s->problem.jac_rows, s->jac_cache,
                  DATA(v), 1.0, DATA(Jv));
    return 0;
}

/* s_k' = J s_k + df/dp_k, where the source term exists for derivative params only, and
   e_c for the rate of an infusion into c while it is on. */
static int sens_rhs_fn(int n_sens, double tau, N_Vector y, N_Vector ydot, N_Vector *yS,
                       N_Vector *ySdot, void *user_data, N_Vector tmp1, N_Vector tmp2)
{
    sl_cvodes *s = user_data;
    const sl_problem *p = &s->problem;
    int64_t k, kk;
    int flag = eval_jac(s, tau, y, s->jac_work);
    (void)ydot; (void)tmp1; (void)tmp2;
    if (flag) return flag;
    if (p->n_dparams > 0 && (flag = call(s, p->dfdp, "dfdp", tau, DATA(y), s->dfdp_work)))
        return flag;
    for (k = 0; k < n_sens; k++) {
        double *out = DATA(ySdot[k]);
        sl_csc_matvec(N(s), N(s), p->jac_colptr, p->jac_rows, s->jac_work, DATA(yS[k]),
                      1.0, out);
        if (k < p->n_dparams)
            for (kk = p->dfdp_colptr[k]; kk < p->dfdp_colptr[k + 1]; kk++)
                out[p->dfdp_rows[kk]] += s->dfdp_work[kk];
    }
    for (k = 0; k < s->sens.n_doses; k++)
        if (sl_schedule_infusing(&s->schedule, k, s->rates_time))
            DATA(ySdot[s->dose_sens_base + 3 * k + 2])[s->schedule.state[k]] += 1.0;
    return 0;
}

static int rhs_b_fn(double tau, N_Vector y, N_Vector yB, N_Vector yBdot, void *user_data)
{
    sl_cvodes *s = user_data;
    int flag = eval_jac(s, tau, y, s->jac_work);
    if (flag) return flag;
    sl_csc_rmatvec(N(s), s->problem.jac_colptr, s->problem.jac_rows, s->jac_work,
                   DATA(yB), -1.0, DATA(yBdot));
    return 0;
}

/* q' = lambda^T df/dp, integrated from the last output time back to t0. */
static int quad_b_fn(double tau, N_Vector y, N_Vector yB, N_Vector qBdot, void *user_data)
{
    sl_cvodes *s = user_data;
    const sl_problem *p = &s->problem;
    int flag = call(s, p->dfdp, "dfdp", tau, DATA(y), s->dfdp_work);
    if (flag) return flag;
    sl_csc_rmatvec(p->n_dparams, p->dfdp_colptr, p->dfdp_rows, s->dfdp_work, DATA(yB),
                   1.0, DATA(qBdot));
    return 0;
}

static int jac_b_fn(double tau, N_Vector y, N_Vector yB, N_Vector fyB, SUNMatrix JB,
                    void *user_data, N_Vector tmp1, N_Vector tmp2, N_Vector tmp3)
{
    sl_cvodes *s = user_data;
    int flag = eval_jac(s, tau, y, s->jac_work);
    (void)yB; (void)fyB; (void)tmp1; (void)tmp2; (void)tmp3;
    if (flag) return flag;
    return sl_matrix_fill(JB, N(s), s->problem.jact_colptr, s->problem.jact_rows,
                          s->problem.jact_perm, s->jac_work, -1.0);
}

static int jtsetup_b_fn(double tau, N_Vector y, N_Vector yB, N_Vector fyB, void *user_data)
{
    (void)yB; (void)fyB;
    return eval_jac(user_data, tau, y, ((sl_cvodes *)user_data)->jac_cache);
}

static int jtimes_b_fn(N_Vector vB, N_Vector JvB, double tau, N_Vector y, N_Vector yB,
                       N_Vector fyB, void *user_data, N_Vector tmpB)
{
    sl_cvodes *s = user_data;
    (void)tau; (void)y; (void)yB; (void)fyB; (void)tmpB;
    sl_csc_rmatvec(N(s), s->problem.jac_colptr, s->problem.jac_rows, s->jac_cache,
                   DATA(vB), -1.0, DATA(JvB));
    return 0;
}

static int root_fn(double tau, N_Vector y, double *gout, void *user_data)
{
    sl_cvodes *s = user_data;
    int flag = call(s, s->problem.event_g, "event_g", tau, DATA(y), gout);
    return flag ? flag : sl_event_roots_watch(&s->roots, &s->problem, tau, gout);
}

/* Root finding over the events' g in their directions, and the events' scratch. */
static int init_events(sl_cvodes *s)
{
    sl_core *c = &s->core;
    const sl_problem *p = &s->problem;
    int64_t n_sens = s->has_sens ? s->sens.n_sens : 0;
    int flag;
    if (sl_event_roots_init(&s->roots, p, n_sens)) return fail(s, NULL, CV_MEM_FAIL);
    flag = CVodeRootInit(c->mem, (int)p->n_events, root_fn);
    if (!flag) flag = CVodeSetRootDirection(c->mem, s->roots.direction);
    if (!flag) flag = CVodeSetNoInactiveRootWarn(c->mem);
    return flag ? fail(s, c->mem, flag) : 0;
}

/* The Jacobian functions (sl_configure_own). */
static int set_jacobian(void *solver)
{
    sl_core *c = &((sl_cvodes *)solver)->core;
    return c->matrix ? CVodeSetJacFn(c->mem, jac_fn)
                     : CVodeSetJacTimes(c->mem, jtsetup_fn, jtimes_fn);
}

static int set_backward_jacobian(void *solver)
{
    sl_core *c = &((sl_cvodes *)solver)->core;
    return c->matrixB ? CVodeSetJacFnB(c->mem, c->which, jac_b_fn)
                      : CVodeSetJacTimesB(c->mem, c->which, jtsetup_b_fn, jtimes_b_fn);
}

int sl_cvodes_create(const sl_problem *problem, const sl_options *options,
                     const sl_sens_options *sens, const sl_adjoint_options *adjoint,
                     sl_cvodes **out)
{
    sl_cvodes *s = calloc(1, sizeof(*s));
    sl_core *c = &s->core;
    int flag;
    int64_t n = problem->n_states, nnz = problem->jac_colptr[problem->n_states];
    *out = s;
    if (!s) return CV_MEM_FAIL;
    s->problem = *problem;
    s->max_order = options->method == SL_ADAMS ? 12 : 5;
    s->core.has_sens = s->has_sens = sens != NULL && sens->mode != SL_SENS_NONE && sens->n_sens > 0;
    if (s->has_sens) s->sens = *sens;
    if ((flag = sl_core_init(c, &CVODES_CALLS, options, adjoint, problem->n_dparams)))
        return fail(s, NULL, flag);
    s->jac_work = calloc(nnz + 1, sizeof(double));
    s->jac_cache = calloc(nnz + 1, sizeof(double));
    s->dfdp_work = calloc(problem->dfdp_colptr[problem->n_dparams] + 1, sizeof(double));
    s->kernel_y = c->status.kernel_y = calloc(n + 1, sizeof(double));
    s->rate = calloc(n + 1, sizeof(double));
    s->y = sl_new_vector(c->ctx, n, NULL);
    c->mem = CVodeCreate(options->method == SL_ADAMS ? CV_ADAMS : CV_BDF, c->ctx);
    if (!s->jac_work || !s->jac_cache || !s->dfdp_work || !s->kernel_y || !s->rate || !s->y
        || !c->mem)
        return fail(s, NULL, CV_MEM_FAIL);
#if !SL_SUNDIALS_7
    CVodeSetErrHandlerFn(c->mem, sl_error_handler_6, &c->messages);
#endif
    if ((flag = CVodeInit(c->mem, rhs_fn, 0.0, s->y))) return fail(s, c->mem, flag);
    if ((flag = sl_configure_forward(c, s, options, options->constraints, n, problem->jac_colptr,
                                     s->y, set_jacobian)))
        return flag;
    if (s->has_sens) {
        int ism = sens->mode == SL_SENS_STAGGERED ? CV_STAGGERED : CV_SIMULTANEOUS;
        s->dose_sens_base = sens->n_sens - 3 * sens->n_doses;
        s->sens_minus = calloc(sens->n_sens * n + 1, sizeof(double));
        s->dose_work = calloc(3 * n + 1, sizeof(double));
        if (!s->sens_minus || !s->dose_work || !(s->yS = sl_new_vectors(s->y, sens->n_sens)))
            return fail(s, NULL, CV_MEM_FAIL);
        if ((flag = CVodeSensInit(c->mem, sens->n_sens, ism, sens_rhs_fn, s->yS)))
            return fail(s, c->mem, flag);
        if ((flag = sl_configure_sensitivities(c, sens->errcon))) return flag;
    }
    if (problem->n_events > 0 && (flag = init_events(s))) return flag;
    if (c->has_adjoint && (adjoint->backward.method == SL_ERK || adjoint->backward.method == SL_DIRK)) {
        s->ydot = sl_new_vector(c->ctx, n, NULL);
        if (!s->ydot) return fail(s, NULL, CV_MEM_FAIL);
        if ((flag = sl_rk_adjoint_create(problem, adjoint, c->ctx, &c->status, &s->rk))) return flag;
    } else if (c->has_adjoint) {
        int interp = adjoint->interpolation == SL_POLYNOMIAL ? CV_POLYNOMIAL : CV_HERMITE;
        if ((flag = CVodeAdjInit(c->mem, adjoint->checkpoint_steps, interp)))
            return fail(s, c->mem, flag);
        if ((flag = sl_core_adjoint_vectors(c, n, problem->n_dparams))) return flag;
    }
    return 0;
}

void sl_cvodes_free(sl_cvodes *s)
{
    if (!s) return;
    if (s->yS) N_VDestroyVectorArray(s->yS, s->sens.n_sens);
    if (s->y) N_VDestroy(s->y);
    if (s->ydot) N_VDestroy(s->ydot);
    sl_rk_adjoint_free(s->rk);
    sl_core_free(&s->core);
    free(s->jac_work);
    free(s->jac_cache);
    free(s->dfdp_work);
    free(s->kernel_y);
    free(s->rate);
    free(s->sens_minus);
    free(s->dose_work);
    sl_event_roots_free(&s->roots);
    sl_schedule_free(&s->schedule);
    free(s);
}

const sl_status *sl_cvodes_status(const sl_cvodes *s) { return &s->core.status; }

void sl_cvodes_stats(const sl_cvodes *s, sl_stats *stats) { sl_core_stats(&s->core, stats); }

/* The forward problem at t, the stop k of the schedule: the doses there act, and CVODES
   starts again from the new state (with the sensitivities, continuous across doses but for
   those wrt the doses' inputs: sl_schedule_sens_jump), its stop time the next stop's, else
   the user's tstop. A stop where no dose acts only stops the integrator. */
static int pass_stop(sl_cvodes *s, int64_t k)
{
    sl_core *c = &s->core;
    const sl_schedule *schedule = &s->schedule;
    double t = schedule->stops[k], tret;
    int flag;
    if (sl_schedule_acts_at(schedule, t)) {
        sl_schedule_jump(schedule, t, DATA(s->y));
        sl_schedule_rates(schedule, t, 1, N(s), s->rate);
        s->rates_time = t;
        sl_count_restart(c);
        if ((flag = CVodeReInit(c->mem, t - c->t0, s->y))) return fail(s, c->mem, flag);
        if (s->has_sens) {
            /* At t0, yS still holds sens0 (CVodeGetSens before a step reads stale data). */
            int ism = s->sens.mode == SL_SENS_STAGGERED ? CV_STAGGERED : CV_SIMULTANEOUS;
            if (t > c->t0 && (flag = CVodeGetSens(c->mem, &tret, s->yS))) return fail(s, c->mem, flag);
            if (s->sens.n_doses > 0) {
                sl_vectors_store(s->yS, s->sens.n_sens, N(s), s->sens_minus);
                if (sl_schedule_sens_jump(schedule, &s->problem, &c->status, t, DATA(s->y),
                                          s->dose_sens_base, s->sens_minus, s->dose_work))
                    return fail(s, c->mem, CV_RHSFUNC_FAIL);
                sl_vectors_load(s->yS, s->sens.n_sens, N(s), s->sens_minus);
            }
            if ((flag = CVodeSensReInit(c->mem, ism, s->yS))) return fail(s, c->mem, flag);
        }
    }
    /* SUNDIALS 6 cannot clear a stop time, which stays set when reached as an output
       time: after the last stop, the user's tstop or one at infinity replaces it. */
    if (k + 1 == schedule->n_stops && !isnan(c->tstop)) return sl_rearm_tstop(c);
    flag = CVodeSetStopTime(c->mem, k + 1 < schedule->n_stops ? schedule->stops[k + 1] - c->t0
                                                              : INFINITY);
    return flag ? fail(s, c->mem, flag) : 0;
}

static int rhs_hook(void *solver, double tau, const double *y, double *f)
{
    return rhs_values(solver, tau, y, f);
}

static int record_hook(void *solver, double tau) { return record(solver, tau, 1); }

/* At a root tau of the events (CVODES returned there, s->y = y(tau)): the events' resets
   and jumps (sl_event_roots_fire), then CVODES starts again from (tau, y+). */
static int fire_events(sl_cvodes *s, double tau)
{
    sl_core *c = &s->core;
    int64_t n = N(s), n_sens = s->has_sens ? s->sens.n_sens : 0;
    double tret, h = 0.0;
    int flag;
    const sl_event_hooks hooks = {s, rhs_hook, record_hook, s->rk, CV_RTFUNC_FAIL, CV_MEM_FAIL,
                                  "CV_RTFUNC_FAIL", "CV_MEM_FAIL"};
    if ((flag = CVodeGetRootInfo(c->mem, s->roots.found))) return fail(s, c->mem, flag);
    if (n_sens) {
        if ((flag = CVodeGetSens(c->mem, &tret, s->yS))) return fail(s, c->mem, flag);
        sl_vectors_store(s->yS, n_sens, n, s->sens_minus);
    }
    CVodeGetLastStep(c->mem, &h);
    if ((flag = sl_event_roots_fire(&s->roots, &s->problem, &c->status, &hooks, c->t0, tau, h,
                                    DATA(s->y), n_sens, s->sens_minus, &s->schedule)))
        return flag;
    sl_count_restart(c);
    if ((flag = CVodeReInit(c->mem, tau, s->y))) return fail(s, c->mem, flag);
    if (n_sens) {
        int ism = s->sens.mode == SL_SENS_STAGGERED ? CV_STAGGERED : CV_SIMULTANEOUS;
        sl_vectors_load(s->yS, n_sens, n, s->sens_minus);
        if ((flag = CVodeSensReInit(c->mem, ism, s->yS))) return fail(s, c->mem, flag);
    }
    return 0;
}

/* A failed CVode call: events accumulating (root_fn found it), or CVODES' flag. */
static int forward_failure(sl_cvodes *s, int flag)
{
    double tau = NAN;
    CVodeGetCurrentTime(s->core.mem, &tau);
    if (s->problem.n_events > 0
        && sl_event_roots_report_accumulating(&s->roots, &s->core.status, s->core.t0 + tau))
        return SL_EVENTS_ACCUMULATE;
    return fail(s, s->core.mem, flag);
}

/* Whether an output at tau_out belongs to the root troot CVODES just returned. */
static int at_root(sl_cvodes *s, double tau_out, double troot)
{
    double h = 0.0;
    CVodeGetLastStep(s->core.mem, &h);
    return sl_event_at_root(tau_out, troot, h);
}

/* The current state (and sensitivities, if sens_row) as an output. */
static int store_output(sl_cvodes *s, double *y_row, double *sens_row)
{
    double tret;
    int flag;
    memcpy(y_row, DATA(s->y), N(s) * sizeof(double));
    if (!sens_row) return 0;
    if ((flag = CVodeGetSens(s->core.mem, &tret, s->yS))) return fail(s, s->core.mem, flag);
    sl_vectors_store(s->yS, s->sens.n_sens, N(s), sens_row);
    return 0;
}

/* CVODES refuses (CV_TOO_CLOSE) to step from a (re)start to a t within a few ulps of it,
   as an output one ulp after a dose time asks: y(t) there is the state it restarted from,
   to rounding (|t - t_restart| |f| < 4 ulps of t |f|). y and yS hold that state (and the
   sensitivities) since the restart. */
static int restart_output(sl_cvodes *s, double *y_row, double *sens_row)
{
    if (y_row) memcpy(y_row, DATA(s->y), N(s) * sizeof(double));
    if (sens_row) sl_vectors_store(s->yS, s->sens.n_sens, N(s), sens_row);
    return 0;
}

/* CVode in normal mode to t (with checkpoints for CVODES' adjoint), through the events on
   the way. With y_row (t is an output time), writes the output there (the sensitivities
   into sens_row, if not NULL): at an event at t, the state before it. An event at t (an
   output or a dose's time) ends the advance: CVODES, started again there, would refuse to
   step to t (its stop time, "behind current t"). */
static int advance(sl_cvodes *s, double t, double *y_row, double *sens_row)
{
    int flag, n_check, at_target;
    double tret;
    for (;;) {
        if (s->core.has_adjoint) flag = CVodeF(s->core.mem, t - s->core.t0, s->y, &tret, CV_NORMAL, &n_check);
        else flag = CVode(s->core.mem, t - s->core.t0, s->y, &tret, CV_NORMAL);
        if (flag == CV_TOO_CLOSE && !s->core.has_adjoint) return restart_output(s, y_row, sens_row);
        if (flag < 0) return forward_failure(s, flag);
        if (flag != CV_ROOT_RETURN) break;
        at_target = at_root(s, t - s->core.t0, tret);
        if (at_target && y_row && (flag = store_output(s, y_row, sens_row))) return flag;
        if ((flag = fire_events(s, tret))) return flag;
        if (at_target) return 0;
    }
    if ((flag = sl_check_reached(&s->core, t))) return flag;
    return y_row ? store_output(s, y_row, sens_row) : 0;
}

/* Integrate to each output time and schedule stop in CVode's normal mode and copy out y
   and the sensitivities at the output times (before the doses at the same time). */
static int solve_normal(sl_cvodes *s, double t0, const double *y0, const double *sens0,
                        int64_t n_t, const double *tvals, double *y_out, double *sens_out)
{
    int64_t n = N(s), n_sens = s->has_sens ? s->sens.n_sens : 0, i, k = 0;
    const sl_schedule *schedule = &s->schedule;
    int flag;
    for (i = 0; i < n_t; i++) {
        for (; k < schedule->n_stops && schedule->stops[k] < tvals[i]; k++) {
            if (schedule->stops[k] > t0 && (flag = advance(s, schedule->stops[k], NULL, NULL)))
                return flag;
            if ((flag = pass_stop(s, k))) return flag;
        }
        if (tvals[i] == t0) {
            memcpy(y_out + i * n, y0, n * sizeof(double));
            if (s->has_sens) memcpy(sens_out + i * n_sens * n, sens0, n_sens * n * sizeof(double));
        } else if ((flag = advance(s, tvals[i], y_out + i * n,
                                   s->has_sens ? sens_out + i * n_sens * n : NULL))) {
            return flag;
        }
        if (k < schedule->n_stops && schedule->stops[k] == tvals[i] && i + 1 < n_t
            && (flag = pass_stop(s, k++)))
            return flag;
    }
    return 0;
}

static int one_step(void *solver, double tout, double *tret)
{
    sl_cvodes *s = solver;
    int n_check;
    return CVodeF(s->core.mem, tout, s->y, tret, CV_ONE_STEP, &n_check);
}

/* Record y and y' of the forward problem at tau (y' of CVODES' interpolant, or
   f(t0 + tau, y) if exact). */
static int record(sl_cvodes *s, double tau, int exact)
{
    int flag = exact ? rhs_fn(tau, s->y, s->ydot, s) : CVodeGetDky(s->core.mem, tau, 1, s->ydot);
    if (flag && exact) return fail(s, s->core.mem, flag < 0 ? CV_RHSFUNC_FAIL : CV_FIRST_RHSFUNC_ERR);
    if (flag) return fail(s, s->core.mem, flag);
    return sl_rk_adjoint_record(s->rk, tau, DATA(s->y), DATA(s->ydot)) ? fail(s, NULL, CV_MEM_FAIL) : 0;
}

/* The forward solve of an explicit Runge-Kutta adjoint: one step at a time, recording y
   and y' after each step; outputs are interpolated as in CVode's normal mode, and
   max_steps holds per output interval as there. The trajectory is recorded in tau; at a
   stop where doses act it is recorded twice at the same tau, before and after them. */
static int solve_recording(sl_cvodes *s, double t0, int64_t n_t, const double *tvals,
                           double *y_out)
{
    int64_t n = N(s), i = 0, steps = 0, k = 0;
    const sl_schedule *schedule = &s->schedule;
    int flag, root;
    double tret = 0.0;
    sl_rk_adjoint_clear(s->rk);
    if ((flag = record(s, 0.0, 1))) return flag;
    for (; i < n_t && tvals[i] == t0; i++) memcpy(y_out + i * n, DATA(s->y), n * sizeof(double));
    while (i < n_t) {
        if (k < schedule->n_stops && schedule->stops[k] - t0 == tret) {
            int acts = sl_schedule_acts_at(schedule, schedule->stops[k]);
            if ((flag = pass_stop(s, k++))) return flag;
            if (acts && (flag = record(s, tret, 1))) return flag;
            continue;
        }
        if (++steps > s->core.max_steps) {
            char text[32];
            sl_format_time(text, sizeof(text), tvals[i]);
            return sl_report(&s->core.status, CV_TOO_MUCH_WORK, t0 + tret, "CV_TOO_MUCH_WORK",
                             "more than max_steps = %lld steps before t = %s",
                             (long long)s->core.max_steps, text);
        }
        flag = CVode(s->core.mem, tvals[n_t - 1] - t0, s->y, &tret, CV_ONE_STEP);
        if (flag == CV_TOO_CLOSE) { /* the last outputs within ulps of a restart: see restart_output */
            for (; i < n_t; i++) memcpy(y_out + i * n, DATA(s->y), n * sizeof(double));
            return record(s, tvals[n_t - 1] - t0, 1);
        }
        if (flag < 0) return forward_failure(s, flag);
        root = flag == CV_ROOT_RETURN; /* recorded with f exact: the state before the events */
        if ((flag = record(s, tret, root))) return flag;
        for (; i < n_t && tvals[i] - t0 <= tret; i++, steps = 0) {
            if ((flag = CVodeGetDky(s->core.mem, tvals[i] - t0, 0, s->ydot))) return fail(s, s->core.mem, flag);
            memcpy(y_out + i * n, DATA(s->ydot), n * sizeof(double));
        }
        if (root) {
            for (; i < n_t && at_root(s, tvals[i] - t0, tret); i++, steps = 0)
                memcpy(y_out + i * n, DATA(s->y), n * sizeof(double));
            if ((flag = fire_events(s, tret))) return flag;
        }
    }
    return 0;
}

static int forward_solve(sl_cvodes *s, double t0, const double *y0, const double *sens0,
                         int64_t n_t, const double *tvals, const sl_doses *doses,
                         double *y_out, double *sens_out)
{
    sl_core *c = &s->core;
    int64_t n = N(s);
    int flag;
    const char *bad = sl_doses_check(doses, n, t0, tvals[n_t - 1], s->has_sens ? s->sens.n_doses : 0);
    if ((flag = sl_begin_forward(c, t0, tvals[n_t - 1]))) return flag;
    if (bad) return sl_report(&c->status, CV_ILL_INPUT, t0, "CV_ILL_INPUT", "%s", bad);
    if (doses && doses->n > 0 && c->has_adjoint && !s->rk)
        return sl_report(&c->status, CV_ILL_INPUT, t0, "CV_ILL_INPUT", "doses need the "
                         "Runge-Kutta adjoint (solver_backward \"ERK\" or \"DIRK\"): CVODES' "
                         "adjoint cannot restart at a dose");
    if (s->problem.n_events > 0 && c->has_adjoint && !s->rk)
        return sl_report(&c->status, CV_ILL_INPUT, t0, "CV_ILL_INPUT", "events need the "
                         "Runge-Kutta adjoint (solver_backward \"ERK\" or \"DIRK\"): CVODES' "
                         "adjoint cannot restart at an event");
    if (sl_schedule_build(&s->schedule, doses, s->problem.n_stop_times, s->problem.stop_times,
                          t0, tvals[n_t - 1]))
        return fail(s, NULL, CV_MEM_FAIL);
    s->infusing = s->schedule.has_infusions;
    memset(s->rate, 0, n * sizeof(double));
    s->rates_time = -INFINITY;
    if (s->problem.n_events > 0) sl_event_roots_start(&s->roots, &s->problem);
    memcpy(DATA(s->y), y0, n * sizeof(double));
    if ((flag = CVodeReInit(c->mem, 0.0, s->y))) return fail(s, c->mem, flag);
    if (s->has_sens) {
        int ism = s->sens.mode == SL_SENS_STAGGERED ? CV_STAGGERED : CV_SIMULTANEOUS;
        sl_vectors_load(s->yS, s->sens.n_sens, n, sens0);
        if ((flag = CVodeSensReInit(c->mem, ism, s->yS))) return fail(s, c->mem, flag);
    }
    if (c->has_adjoint && !s->rk && (flag = CVodeAdjReInit(c->mem))) return fail(s, c->mem, flag);
    if (s->schedule.n_stops > 0) {
        flag = CVodeSetStopTime(c->mem, s->schedule.stops[0] - t0);
        if (flag) return fail(s, c->mem, flag);
    } else if ((flag = sl_rearm_tstop(c))) {
        return flag;
    }
    if (s->rk) {
        if ((flag = solve_recording(s, t0, n_t, tvals, y_out))) return flag;
        return sl_schedule_backward_stops(&s->schedule) ? fail(s, NULL, CV_MEM_FAIL) : 0;
    }
    flag = solve_normal(s, t0, y0, sens0, n_t, tvals, y_out, sens_out);
    if (!flag && c->has_adjoint && c->adjoint.interpolation == SL_POLYNOMIAL)
        flag = sl_complete_last_interval(c, tvals[n_t - 1], s->max_order, one_step, s);
    return flag;
}

int sl_cvodes_solve(sl_cvodes *s, double t0, const double *y0, const double *sens0,
                    int64_t n_t, const double *tvals, double *y_out, double *sens_out)
{
    return sl_cvodes_solve_doses(s, t0, y0, sens0, n_t, tvals, NULL, y_out, sens_out);
}

int sl_cvodes_solve_doses(sl_cvodes *s, double t0, const double *y0, const double *sens0,
                          int64_t n_t, const double *tvals, const sl_doses *doses,
                          double *y_out, double *sens_out)
{
    int flag = forward_solve(s, t0, y0, sens0, n_t, tvals, doses, y_out, sens_out);
    return sl_end_forward(&s->core, flag, n_t, tvals);
}

static int create_backward(sl_cvodes *s, double tau_start)
{
    sl_core *c = &s->core;
    void *mem_b;
    int flag, lmm = c->adjoint.backward.method == SL_ADAMS ? CV_ADAMS : CV_BDF;
    if ((flag = CVodeCreateB(c->mem, lmm, &c->which))) return fail(s, c->mem, flag);
    mem_b = CVodeGetAdjCVodeBmem(c->mem, c->which);
#if !SL_SUNDIALS_7
    CVodeSetErrHandlerFn(mem_b, sl_error_handler_6, &c->messages);
#endif
    if ((flag = CVodeInitB(c->mem, c->which, rhs_b_fn, tau_start, c->yB))
        || (c->has_quad && (flag = CVodeQuadInitB(c->mem, c->which, quad_b_fn, c->qB))))
        return fail(s, mem_b, flag);
    /* The backward Jacobian is -J^T. */
    return sl_configure_backward(c, s, N(s), s->problem.jact_colptr, set_backward_jacobian);
}

/* Integrate lambda (in core.yB) and the quadrature (in core.qB) from t_start to t_end. */
static int integrate_backward(void *solver, double t_start, double t_end)
{
    sl_cvodes *s = solver;
    sl_core *c = &s->core;
    int flag;
    double tret, tau_start = t_start - c->t0;
    if (!c->backward_created) {
        if ((flag = create_backward(s, tau_start))) return flag;
    } else {
        if ((flag = CVodeReInitB(c->mem, c->which, tau_start, c->yB))) return fail(s, c->mem, flag);
        if ((flag = sl_restart_quadrature(c))) return flag;
    }
    if ((flag = sl_solve_backward(c, t_end))) return flag;
    if ((flag = CVodeGetB(c->mem, c->which, &tret, c->yB))) return fail(s, c->mem, flag);
    return sl_read_quadrature(c);
}

void sl_cvodes_add_infusions(const sl_cvodes *s, double t, int after, double *out)
{
    sl_schedule_add_rates(&s->schedule, t, after, N(s), s->rate, out);
}

int sl_cvodes_forward_state(sl_cvodes *s, int backward, double t, double *y_out)
{
    int flag;
    sl_status failure = s->core.status; /* CVODES would report a failure here as the last message */
    double tau = t - s->core.t0;
    if (backward && s->rk) return sl_rk_adjoint_forward_state(s->rk, tau, y_out);
    if (!isfinite(t)) return CV_BAD_T;
    flag = backward ? CVodeGetAdjY(s->core.mem, tau, s->y) : CVodeGetDky(s->core.mem, tau, 0, s->y);
    s->core.status = failure;
    if (!flag) memcpy(y_out, DATA(s->y), N(s) * sizeof(double));
    return flag;
}

int sl_cvodes_backward(sl_cvodes *s, double t0, int64_t n_t, const double *tvals,
                       const double *grads, double *grad_out, double *lambda_out)
{
    return sl_cvodes_backward_doses(s, t0, n_t, tvals, grads, grad_out, lambda_out, NULL, NULL,
                                    NULL);
}

int sl_cvodes_backward_doses(sl_cvodes *s, double t0, int64_t n_t, const double *tvals,
                             const double *grads, double *grad_out, double *lambda_out,
                             double *dose_time, double *dose_amount, double *dose_rate)
{
    int64_t n = N(s);
    double scale;
    int flag = sl_begin_backward(&s->core, t0, n_t, tvals);
    if (flag) return flag;
    if (s->rk)
        return sl_rk_adjoint_scheduled_gradients(s->rk, t0, n_t, tvals, grads, &s->schedule,
                                                 grad_out, lambda_out, dose_time, dose_amount,
                                                 dose_rate, &s->core.backward_stats);
    scale = sl_grads_scale(n_t * n, grads);
    N_VConst(0.0, s->core.yB);
    N_VConst(0.0, s->core.qB);
    flag = sl_adjoint_sweep(s, integrate_backward, n, DATA(s->core.yB), t0, n_t, tvals, grads,
                            scale);
    memcpy(lambda_out, DATA(s->core.yB), n * sizeof(double));
    memcpy(grad_out, DATA(s->core.qB), s->problem.n_dparams * sizeof(double));
    if (flag) return flag;
    if ((flag = sl_scale_gradient(&s->core.status, t0, scale, n, lambda_out))) return flag;
    return sl_scale_gradient(&s->core.status, t0, scale, s->problem.n_dparams, grad_out);
}
