/* Forward solves by ARKODE's explicit and implicit one-step methods; see sl_arkode.h.

   As the CVODES backend, ARKODE integrates in tau = t - t0 (t0 of the last solve), the
   kernels get t0 + tau and everything reported is in t. With forward sensitivities the
   integrated vector is (y, S_0, ..., S_{n_sens-1}), each n_states long: one error test and
   one step size for all, as CVODES' simultaneous corrector.

   State-dependent events (sl_events.h) by ARKODE's root finding: at a root the resets act
   as a dose's and ARKODE restarts keeping its step size, but for a bounce (an event whose
   reset leaves g just past its root, the flow taking it back): there it starts afresh
   (ReInit), as CVODES does at every event. Kept, the step before a ball's impact took the
   ball over its whole next flight and below ground within one step, seen as events
   accumulating. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <arkode/arkode_arkstep.h>
#include <arkode/arkode_erkstep.h>
#include <nvector/nvector_serial.h>

#include "sl_internal.h"
#include "sl_arkode.h"
#include "sl_events.h"
#include "sl_nvector.h"
#include "sl_rk_adjoint.h"
#include "sl_schedule.h"

#if SUNDIALS_VERSION_MAJOR > 7 || (SUNDIALS_VERSION_MAJOR == 7 && SUNDIALS_VERSION_MINOR >= 4)
#define HAVE_TSITOURAS 1
#else
#define HAVE_TSITOURAS 0
#endif

/* ARKODE's table for an sl_erk_table, ARKODE_ERK_NONE where this SUNDIALS lacks it.
   Tsitouras 5(4) and Dormand-Prince 5(4) are 7-stage pairs whose last stage is the next
   step's first. SUNDIALS 7 has Verner's "most efficient" pairs (9, 10, 13 and 16 stages).
   SUNDIALS 6.4's one Verner table (ARKODE_VERNER_8_5_6) is not offered: on Lotka-Volterra
   its error shrank as steps^-2.9 (282 steps: 2.4e-6, 810: 1.1e-7; Dormand-Prince: 147
   steps, 7e-9), not as a 6th-order method's. */
static int erk_table_id(int table)
{
    switch (table) {
    case SL_ERK_DEFAULT: return erk_table_id(HAVE_TSITOURAS ? SL_TSITOURAS : SL_DORMAND_PRINCE);
    case SL_DORMAND_PRINCE: return ARKODE_DORMAND_PRINCE_7_4_5;
#if HAVE_TSITOURAS
    case SL_TSITOURAS: return ARKODE_TSITOURAS_7_4_5;
#endif
#if SL_SUNDIALS_7
    case SL_VERNER6: return ARKODE_VERNER_9_5_6;
    case SL_VERNER7: return ARKODE_VERNER_10_6_7;
    case SL_VERNER8: return ARKODE_VERNER_13_7_8;
    case SL_VERNER9: return ARKODE_VERNER_16_8_9;
#endif
    default: return ARKODE_ERK_NONE;
    }
}

int sl_arkode_has_erk_table(int table) { return erk_table_id(table) != ARKODE_ERK_NONE; }


struct sl_arkode {
    sl_problem problem;
    int implicit; /* ARKStep's DIRK (SL_DIRK), else ERKStep */
    int64_t n_sens; /* 0 without forward sensitivities */
    int sens_errcon;
    /* Sensitivities wrt the inputs of n_doses doses, the S_k from dose_sens_base on, and
       sl_schedule_sens_jump's scratch (3 n_states). */
    int64_t n_doses, dose_sens_base;
    double *dose_work;
    double rtol;
    double *atol; /* n_states entries, for y and for each S_k */
    double tstop; /* NaN: none. Armed by the output loop, as ARKODE forgets it once reached. */
    double t0; /* of the last solve: the origin of tau */
    int64_t max_steps;
    int stop_at_outputs; /* step to each output time rather than interpolate */
    int64_t step_budget; /* steps per solve at most (0: no limit), see sl_arkode_set_step_budget */
    sl_status status;
    sl_messages messages; /* SUNDIALS' messages, into status */
    SUNContext ctx;
    void *mem;
    N_Vector y; /* (y, S): n_states * (1 + n_sens) */
    N_Vector work; /* as long as y: y' while recording, interpolated states */
    double *jac_work, *dfdp_work;
    /* The implicit method's Newton systems: the matrix (NULL for GMRES) and linear solver
       of I - gamma J; with sensitivities and a matrix, `blocks` solves with it for each
       block of (y, S) through the views. jac_cache: J for GMRES' products (jac_work is the
       sensitivities' scratch). */
    SUNMatrix matrix;
    SUNLinearSolver linear_solver, blocks;
    N_Vector x_view, b_view;
    double *jac_cache;
    double *kernel_y; /* the state of the last failed kernel call (status.kernel_y) */
    /* The doses of the last solve and the problem's stop times (the knots of its inputs;
       sl_schedule.h): the forward solve stops at each, and so does the backward sweep.
       rate: the infusion rates rhs_fn adds to y' (n_states). */
    sl_schedule schedule;
    double *rate;
    long restart_steps; /* the steps taken before the last restart at a dose or a bounce */
    double free_step; /* the last step's size that did not end on ARKODE's stop time */
    /* The last stop passed and the next one ahead (-inf, inf: none), in t: the kernels
       see times in [interval_start, interval_end) only (see call). */
    double interval_start, interval_end;
    /* The events' root finding (problem.n_events > 0), the counters of the integrators
       before the last fresh start at a bounce (summed: `restarted`), and its tau. */
    sl_event_roots roots;
    sl_stats restarted;
    double reinit_tau;
    /* The adjoint: the forward solve it belongs to and the recorded trajectory. */
    sl_rk_adjoint *rk;
    long recording_evals; /* the rhs evaluations of the last solve outside ARKODE */
    int forward_valid;
    double forward_t0, forward_tlast;
    sl_stats forward_stats, backward_stats;
};

#define N(s) ((s)->problem.n_states)
/* The data of a serial vector without SUNDIALS' calls (uncompiled in some builds). */
#define DATA(v) NV_DATA_S(v)
#define STEP(s, name) SL_STEP((s)->implicit, name)

/* ARKODE's failure flag as the solve's, or SL_EVENTS_ACCUMULATE where the root function
   failed on accumulating events. */
static int fail(sl_arkode *s, int flag)
{
    double tau = NAN;
    char *name = STEP(s, GetReturnFlagName)(flag);
    if (s->mem) STEP(s, GetCurrentTime)(s->mem, &tau);
    if (s->problem.n_events > 0
        && sl_event_roots_report_accumulating(&s->roots, &s->status, s->t0 + tau)) {
        free(name);
        return SL_EVENTS_ACCUMULATE;
    }
    sl_status_set(&s->status, flag, s->t0 + tau, name);
    free(name);
    return flag;
}

/* The kernel at time t0 + tau, kept within the interval between the stops around it: at
   the stop ahead (a step, or the record of its state, ending there) an ulp before it,
   where a piecewise-constant input still has the interval's value, and not before the
   stop passed (t0 + tau rounds either way). */
static int call(sl_arkode *s, sl_kernel kernel, const char *name, double tau, const double *y,
                double *out)
{
    double t = s->t0 + tau;
    if (t >= s->interval_end) t = nextafter(s->interval_end, -INFINITY);
    if (t < s->interval_start) t = s->interval_start;
    return sl_call_kernel(&s->status, N(s), kernel, name, t, y, s->problem.params, out);
}

/* f(t0 + tau, y) + the infusion rates (n_states values). */
static int state_rhs(void *solver, double tau, const double *y, double *out)
{
    sl_arkode *s = solver;
    int flag = call(s, s->problem.rhs, "rhs", tau, y, out);
    if (!flag && s->schedule.has_infusions)
        for (int64_t k = 0; k < N(s); k++) out[k] += s->rate[k];
    return flag;
}

/* y' = f(t, y) + the infusion rates and, with sensitivities, S_k' = J S_k + df/dp_k (the
   source term only for the derivative params, the first n_dparams of the S_k; the doses do
   not depend on them), + e_c for the rate of an infusion into c while it is on. */
static int rhs_fn(double tau, N_Vector z, N_Vector zdot, void *user_data)
{
    sl_arkode *s = user_data;
    const sl_problem *p = &s->problem;
    const double *y = DATA(z);
    double *out = DATA(zdot);
    int64_t n = N(s), k, kk;
    int flag = state_rhs(s, tau, y, out);
    if (flag) return flag;
    if (s->n_sens == 0) return 0;
    if ((flag = call(s, p->jac, "jac", tau, y, s->jac_work))) return flag;
    if (p->n_dparams > 0 && (flag = call(s, p->dfdp, "dfdp", tau, y, s->dfdp_work)))
        return flag;
    for (k = 0; k < s->n_sens; k++) {
        double *sk_out = out + (k + 1) * n;
        sl_csc_matvec(n, n, p->jac_colptr, p->jac_rows, s->jac_work, y + (k + 1) * n, 1.0,
                      sk_out);
        if (k < p->n_dparams)
            for (kk = p->dfdp_colptr[k]; kk < p->dfdp_colptr[k + 1]; kk++)
                sk_out[p->dfdp_rows[kk]] += s->dfdp_work[kk];
    }
    for (k = 0; k < s->n_doses; k++)
        if (sl_schedule_infusing(&s->schedule, k, s->interval_start))
            out[(1 + s->dose_sens_base + 3 * k + 2) * n + s->schedule.state[k]] += 1.0;
    return 0;
}

/* Error weights sqrt(1 + n_sens) / (rtol |v| + atol) for y and each S_k (the
   sensitivities get the states' atol, as CVODES' estimated sensitivity tolerances), 0 for
   the S_k without sens_errcon. ARKODE's norm is the RMS over the whole vector (y, S): the
   factor makes it the root of the sum of the blocks' squared RMS errors, so each block's
   error, y's in particular, is kept within its tolerance (CVODES tests their maximum). A
   zero denominator (atol = 0 at v = 0) has no weight: an error. */
static int weights(N_Vector z, N_Vector ewt, void *user_data)
{
    sl_arkode *s = user_data;
    const double *v = DATA(z);
    double *w = DATA(ewt), blocks = sqrt(1.0 + (double)s->n_sens);
    int64_t n = N(s), count = s->sens_errcon ? n * (1 + s->n_sens) : n, j;
    for (j = 0; j < count; j++) {
        double scale = s->rtol * fabs(v[j]) + s->atol[j % n];
        if (!(scale > 0.0)) return -1;
        w[j] = blocks / scale;
    }
    for (; j < n * (1 + s->n_sens); j++) w[j] = 0.0;
    return 0;
}

/* The events' g at (t0 + tau, y), y the first n_states entries of z. Not kept within the
   interval between stops as the other kernels (g sees no inputs): at a stop, an ulp before
   it, a time event's g = t - t_stop was never zero, and at the restart ARKODE deactivates
   the g that is zero there: an event at a dose's time was lost. */
static int root_fn(double tau, N_Vector z, double *gout, void *user_data)
{
    sl_arkode *s = user_data;
    int flag = sl_call_kernel(&s->status, N(s), s->problem.event_g, "event_g", s->t0 + tau,
                              DATA(z), s->problem.params, gout);
    return flag ? flag : sl_event_roots_watch(&s->roots, &s->problem, tau, gout);
}

static int init_events(sl_arkode *s)
{
    const sl_problem *p = &s->problem;
    int flag;
    if (sl_event_roots_init(&s->roots, p, s->n_sens)) return ARK_MEM_FAIL;
    if ((flag = STEP(s, RootInit)(s->mem, (int)p->n_events, root_fn))) return flag;
    if ((flag = STEP(s, SetRootDirection)(s->mem, s->roots.direction))) return flag;
    return STEP(s, SetNoInactiveRootWarn)(s->mem);
}

/* -- The implicit method's Newton systems: (I - gamma J_z) x = b ------------------------ */

/* J at (t0 + tau, y), y the first n_states entries of z, into the matrix. */
static int jac_fn(double tau, N_Vector z, N_Vector fz, SUNMatrix J, void *user_data,
                  N_Vector tmp1, N_Vector tmp2, N_Vector tmp3)
{
    sl_arkode *s = user_data;
    int flag = call(s, s->problem.jac, "jac", tau, DATA(z), s->jac_work);
    (void)fz; (void)tmp1; (void)tmp2; (void)tmp3;
    if (flag) return flag;
    return sl_matrix_fill(J, N(s), s->problem.jac_colptr, s->problem.jac_rows, NULL,
                          s->jac_work, 1.0);
}

static int jtsetup_fn(double tau, N_Vector z, N_Vector fz, void *user_data)
{
    sl_arkode *s = user_data;
    (void)fz;
    return call(s, s->problem.jac, "jac", tau, DATA(z), s->jac_cache);
}

/* Jv = J_z v, with J_z = blockdiag(J, ..., J) for z = (y, S): CVODES' simultaneous
   corrector leaves out the terms d(J S_k)/dy of the exact J_z too. Newton then converges
   linearly rather than quadratically in the S_k, to the same solution of the same stage
   equations. */
static int jtimes_fn(N_Vector v, N_Vector Jv, double tau, N_Vector z, N_Vector fz,
                     void *user_data, N_Vector tmp)
{
    sl_arkode *s = user_data;
    int64_t n = N(s), k;
    (void)tau; (void)z; (void)fz; (void)tmp;
    for (k = 0; k <= s->n_sens; k++)
        sl_csc_matvec(n, n, s->problem.jac_colptr, s->problem.jac_rows, s->jac_cache,
                      DATA(v) + k * n, 1.0, DATA(Jv) + k * n);
    return 0;
}

/* With sensitivities, ARKODE's matrix is n_states x n_states: I - gamma J, the block of
   J_z (see jtimes_fn) of each of y and the S_k. This linear solver factors it once and
   solves each block with it. */
static SUNLinearSolver_Type blocks_type(SUNLinearSolver S)
{
    (void)S;
    return SUNLINEARSOLVER_DIRECT;
}

static int blocks_initialize(SUNLinearSolver S)
{
    return SUNLinSolInitialize(((sl_arkode *)S->content)->linear_solver);
}

static int blocks_setup(SUNLinearSolver S, SUNMatrix A)
{
    return SUNLinSolSetup(((sl_arkode *)S->content)->linear_solver, A);
}

static int blocks_solve(SUNLinearSolver S, SUNMatrix A, N_Vector x, N_Vector b, double tol)
{
    sl_arkode *s = S->content;
    int64_t n = N(s), k;
    int flag;
    for (k = 0; k <= s->n_sens; k++) {
        N_VSetArrayPointer(DATA(x) + k * n, s->x_view);
        N_VSetArrayPointer(DATA(b) + k * n, s->b_view);
        if ((flag = SUNLinSolSolve(s->linear_solver, A, s->x_view, s->b_view, tol))) return flag;
    }
    return 0;
}

/* ARKStep with the L-stable, stiffly accurate ESDIRK 4(3) in 6 stages of Kennedy &
   Carpenter (ESDIRK4(3)6L[2]SA; of ARKODE's 4th- and 5th-order tables in both SUNDIALS 6.4
   and 7.5 the most accurate for its work on ROBER, HIRES and POLLU at rtol = 1e-6 .. 1e-10:
   ARK4(3)7L[2]SA took fewer steps but missed HIRES by 70x rtol, ARK5(4)8L[2]SAb failed on
   ROBER), and Newton's method over options->linear_solver: dense, band or KLU for J's
   pattern with the jac kernel, or GMRES over the whole (y, S) with products by the jac
   kernel's J. */
static int configure_implicit(sl_arkode *s, const sl_options *options)
{
    const sl_problem *p = &s->problem;
    int64_t n = N(s);
    int flag;
    s->jac_cache = calloc(p->jac_colptr[n] + 1, sizeof(double));
    s->x_view = N_VNewEmpty_Serial(n, s->ctx);
    s->b_view = N_VNewEmpty_Serial(n, s->ctx);
    if (!s->jac_cache || !s->x_view || !s->b_view) return ARK_MEM_FAIL;
    if ((flag = ARKStepSetTableNum(s->mem, ARKODE_ESDIRK436L2SA_6_3_4, ARKODE_ERK_NONE)))
        return flag;
    /* The stage derivatives from the stage equations rather than f at the stage values:
       from f, a stiff component's f amplifies what Newton leaves of its stage error by its
       stiffness, the error estimate sums those, and the step size collapsed (Robertson at
       rtol = 1e-6: 26519 steps and a wrong y; deduced: 396 steps, 7e-5 relative). */
    if ((flag = SL_IMPLICIT(SetDeduceImplicitRhs)(s->mem, 1))) return flag;
    /* Each stage's Newton iteration starts from the previous step's dense output (the
       trivial predictor failed to converge within 3 iterations about once in 2 steps on
       HIRES, each failure costing a Jacobian: 876 for 1671 steps, then 37 for 916). */
    if ((flag = SL_IMPLICIT(SetPredictorMethod)(s->mem, 1))) return flag;
    if (sl_linear_solver_create(options, n, p->jac_colptr,
                                options->linear_solver == SL_SPGMR ? s->y : s->x_view, s->ctx,
                                &s->matrix, &s->linear_solver))
        return ARK_MEM_FAIL;
    if (s->matrix && s->n_sens) {
        if (!(s->blocks = SUNLinSolNewEmpty(s->ctx))) return ARK_MEM_FAIL;
        s->blocks->content = s;
        s->blocks->ops->gettype = blocks_type;
        s->blocks->ops->initialize = blocks_initialize;
        s->blocks->ops->setup = blocks_setup;
        s->blocks->ops->solve = blocks_solve;
    }
    if ((flag = SL_IMPLICIT(SetLinearSolver)(s->mem, s->blocks ? s->blocks : s->linear_solver,
                                             s->matrix)))
        return flag;
    return s->matrix ? SL_IMPLICIT(SetJacFn)(s->mem, jac_fn)
                     : SL_IMPLICIT(SetJacTimes)(s->mem, jtsetup_fn, jtimes_fn);
}

int sl_arkode_create(const sl_problem *problem, const sl_options *options,
                     const sl_sens_options *sens, const sl_adjoint_options *adjoint,
                     sl_arkode **out)
{
    sl_arkode *s = calloc(1, sizeof(*s));
    int flag;
    int64_t n = problem->n_states, n_total;
    *out = s;
    if (!s) return ARK_MEM_FAIL;
    s->problem = *problem;
    s->messages.status = &s->status;
    s->messages.t0 = &s->t0;
    s->rtol = options->rtol;
    s->tstop = options->tstop;
    s->max_steps = options->max_steps;
    if (sens != NULL && sens->mode != SL_SENS_NONE) {
        s->n_sens = sens->n_sens;
        s->sens_errcon = sens->errcon;
        s->n_doses = sens->n_doses;
        s->dose_sens_base = sens->n_sens - 3 * sens->n_doses;
    }
    n_total = n * (1 + s->n_sens);
    s->atol = malloc(n * sizeof(double));
    s->jac_work = calloc(problem->jac_colptr[n] + 1, sizeof(double));
    s->dfdp_work = calloc(problem->dfdp_colptr[problem->n_dparams] + 1, sizeof(double));
    s->kernel_y = calloc(n + 1, sizeof(double));
    s->rate = calloc(n + 1, sizeof(double));
    s->dose_work = calloc(3 * n + 1, sizeof(double));
    s->status.kernel_y = s->kernel_y;
    if (!s->atol || !s->jac_work || !s->dfdp_work || !s->kernel_y || !s->rate || !s->dose_work)
        return fail(s, ARK_MEM_FAIL);
    memcpy(s->atol, options->atol, n * sizeof(double));
    if (sl_context_create(&s->ctx, &s->messages)) return fail(s, ARK_MEM_FAIL);
    s->y = N_VNew_Serial(n_total, s->ctx);
    s->work = N_VNew_Serial(n_total, s->ctx);
    if (!s->y || !s->work) return fail(s, ARK_MEM_FAIL);
    N_VConst(0.0, s->y);
    /* ARKODE forms each stage and solution as a linear combination of stage derivatives:
       fused, that is one pass instead of a scale and a sum per term (its vectors are clones
       of y and inherit it; measured with ERK: 0.86x the time of a Lotka-Volterra solve),
       and by our compiled operations (sl_nvector.h; work gets the dense output). */
    if (sl_nvector_fast_ops(s->y) || sl_nvector_fast_ops(s->work)) return fail(s, ARK_MEM_FAIL);
    s->implicit = options->method == SL_DIRK;
    s->mem = s->implicit ? ARKStepCreate(NULL, rhs_fn, 0.0, s->y, s->ctx)
                         : ERKStepCreate(rhs_fn, 0.0, s->y, s->ctx);
    if (!s->mem) return fail(s, ARK_MEM_FAIL);
#if !SL_SUNDIALS_7
    STEP(s, SetErrHandlerFn)(s->mem, sl_error_handler_6, &s->messages);
#endif
    /* The user data before the linear solver: set after it, the Jacobian function got
       other data than s, and J was wrong (exponential decay 1e-3 off at rtol = 1e-8,
       SUNDIALS 6.4). */
    if ((flag = STEP(s, SetUserData)(s->mem, s))) return fail(s, flag);
    if ((flag = STEP(s, WFtolerances)(s->mem, weights))) return fail(s, flag);
    if ((flag = STEP(s, SetMaxNumSteps)(s->mem, options->max_steps))) return fail(s, flag);
    if (options->max_step > 0.0 && (flag = STEP(s, SetMaxStep)(s->mem, options->max_step)))
        return fail(s, flag);
    if (s->implicit) {
        if ((flag = configure_implicit(s, options))) return fail(s, flag);
    } else {
        /* ARKODE's dense output is of degree 5 at most: between the long steps of Verner's
           pairs it missed by far what the steps kept (Lotka-Volterra at rtol = atol = 1e-8,
           SUNDIALS 7.5: Verner 8(7) 6e-5 relative at the interpolated outputs, 2e-8 at a
           step's end; Verner 6(5) 3e-7 and 4e-10), so they step to each output time. */
        s->stop_at_outputs = options->erk_table >= SL_VERNER6;
        if ((flag = ERKStepSetTableNum(s->mem, erk_table_id(options->erk_table))))
            return fail(s, flag);
    }
    if (problem->n_events > 0 && (flag = init_events(s))) return fail(s, flag);
    if (adjoint != NULL
        && (flag = sl_rk_adjoint_create(problem, adjoint, s->ctx, &s->status, &s->rk)))
        return flag;
    return 0;
}

void sl_arkode_free(sl_arkode *s)
{
    if (!s) return;
    if (s->mem) STEP(s, Free)(&s->mem);
    if (s->blocks) SUNLinSolFreeEmpty(s->blocks);
    if (s->linear_solver) SUNLinSolFree(s->linear_solver);
    if (s->matrix) SUNMatDestroy(s->matrix);
    if (s->x_view) N_VDestroy(s->x_view);
    if (s->b_view) N_VDestroy(s->b_view);
    free(s->jac_cache);
    sl_rk_adjoint_free(s->rk);
    sl_schedule_free(&s->schedule);
    sl_event_roots_free(&s->roots);
    free(s->rate);
    free(s->dose_work);
    if (s->y) N_VDestroy(s->y);
    if (s->work) N_VDestroy(s->work);
    if (s->ctx) SUNContext_Free(&s->ctx);
    free(s->atol);
    free(s->jac_work);
    free(s->dfdp_work);
    free(s->kernel_y);
    free(s);
}

const sl_status *sl_arkode_status(const sl_arkode *s) { return &s->status; }

void sl_arkode_set_step_budget(sl_arkode *s, int64_t steps) { s->step_budget = steps; }

/* stats += the integrator's counters since its last (re)start. */
static void add_counters(const sl_arkode *s, sl_stats *stats)
{
    long steps = 0, rhs_evals = 0, error_test_fails = 0, jac_evals = 0, conv_fails = 0;
    STEP(s, GetNumSteps)(s->mem, &steps);
    sl_arkode_rhs_evals(s->mem, s->implicit, &rhs_evals);
    STEP(s, GetNumErrTestFails)(s->mem, &error_test_fails);
    if (s->implicit) {
        SL_IMPLICIT(GetNumJacEvals)(s->mem, &jac_evals);
        SL_IMPLICIT(GetNumNonlinSolvConvFails)(s->mem, &conv_fails);
    }
    stats->steps += steps;
    stats->rhs_evals += rhs_evals;
    stats->error_test_fails += error_test_fails;
    stats->jac_evals += jac_evals;
    stats->nonlinear_conv_fails += conv_fails;
}

/* The steps of the solve so far. */
static long steps_taken(const sl_arkode *s)
{
    long steps = 0;
    STEP(s, GetNumSteps)(s->mem, &steps);
    return steps + s->restarted.steps;
}

static void record_forward_stats(sl_arkode *s)
{
    s->forward_stats = s->restarted;
    add_counters(s, &s->forward_stats);
    s->forward_stats.rhs_evals += s->recording_evals;
}

void sl_arkode_stats(const sl_arkode *s, sl_stats *stats)
{
    *stats = s->forward_stats;
    stats->steps_backward = s->backward_stats.steps;
    stats->rhs_evals_backward = s->backward_stats.rhs_evals;
    stats->error_test_fails_backward = s->backward_stats.error_test_fails;
}

/* Output i: y (and the sensitivities) from the vector z = (y, S). */
static void write_output(sl_arkode *s, int64_t i, const double *z, double *y_out,
                         double *sens_out)
{
    int64_t n = N(s);
    memcpy(y_out + i * n, z, n * sizeof(double));
    if (s->n_sens) memcpy(sens_out + i * s->n_sens * n, z + n, s->n_sens * n * sizeof(double));
}

/* Records y and y' = f(t, y) at tau for the adjoint (ARKODE has f there after a step, the
   next step's first stage, but does not hand it out; its interpolant's derivative costs
   that evaluation and more: the solve took 1.22x a plain solve that way, 1.07x this way).
   A failing f is reported as ARKODE would: before the first step, or unrecoverable. */
static int record(sl_arkode *s, double tau)
{
    int flag = rhs_fn(tau, s->y, s->work, s);
    if (flag)
        return fail(s, flag < 0 ? ARK_RHSFUNC_FAIL
                                : tau == 0.0 ? ARK_FIRST_RHSFUNC_ERR : ARK_UNREC_RHSFUNC_ERR);
    s->recording_evals++;
    if (sl_rk_adjoint_record(s->rk, tau, DATA(s->y), DATA(s->work))) return fail(s, ARK_MEM_FAIL);
    return 0;
}

/* With a step budget: ARK_TOO_MUCH_WORK at t, with `remaining` of the span ahead, once
   the solve has taken the budget's steps, or, from BUDGET_PROBE_STEPS steps on (after the
   start or the last dose, whose first steps are short), once the step size it has settled
   on would need more steps than the budget has left (an explicit method's steps on a stiff
   problem are held at its stability limit: Robertson's at 1e-3 with 1e11 to go). That size
   is the larger of the next step's and the last one not shortened to land on a stop time
   (a solve with sensitivities gave up 0.001 before a dose on the next step's, one with a
   linear input after a knot on the last one's). */
enum { BUDGET_PROBE_STEPS = 50 };

static int check_budget(sl_arkode *s, double t, double remaining)
{
    long taken = steps_taken(s);
    double h = 0.0;
    if (taken >= s->step_budget)
        return sl_report(&s->status, ARK_TOO_MUCH_WORK, t, "ARK_TOO_MUCH_WORK",
                         "more than the step budget of %lld steps", (long long)s->step_budget);
    if (taken - s->restart_steps < BUDGET_PROBE_STEPS || STEP(s, GetCurrentStep)(s->mem, &h))
        return 0;
    h = fmax(h, s->free_step);
    if (remaining > h * (double)(s->step_budget - taken))
        return sl_report(&s->status, ARK_TOO_MUCH_WORK, t, "ARK_TOO_MUCH_WORK",
                         "at the step size h = %g after %ld steps the step budget of %lld "
                         "would not reach the last output time", h, taken,
                         (long long)s->step_budget);
    return 0;
}

/* At stop k of the schedule, tau (the integrator is there, y = y(tau)): the doses there
   act, and ARKODE restarts from the new state, keeping its step size and counters (the
   sensitivities are continuous across doses but for those wrt the doses' inputs:
   sl_schedule_sens_jump), with f of the new interval (at an input's
   knot, its next piece); with an adjoint the state after the stop is recorded too, at the
   same tau. */
static int pass_stop(sl_arkode *s, int64_t k, double tau)
{
    const sl_schedule *schedule = &s->schedule;
    double t = schedule->stops[k];
    int flag;
    if (sl_schedule_acts_at(schedule, t)) {
        sl_schedule_jump(schedule, t, DATA(s->y));
        sl_schedule_rates(schedule, t, 1, N(s), s->rate);
        s->restart_steps = steps_taken(s);
        if (s->n_doses > 0
            && sl_schedule_sens_jump(schedule, &s->problem, &s->status, t, DATA(s->y),
                                     s->dose_sens_base, DATA(s->y) + N(s), s->dose_work))
            return fail(s, ARK_RHSFUNC_FAIL);
    }
    s->interval_start = t;
    s->interval_end = k + 1 < schedule->n_stops ? schedule->stops[k + 1] : INFINITY;
    if ((flag = STEP(s, Reset)(s->mem, tau, s->y))) return fail(s, flag);
    return s->rk ? record(s, tau) : 0;
}

static int record_hook(void *solver, double tau) { return record(solver, tau); }

/* ARKODE from (tau, y) as new: step size estimate, controller history, counters. */
static int start_afresh(sl_arkode *s, double tau)
{
    return s->implicit ? ARKStepReInit(s->mem, NULL, rhs_fn, tau, s->y)
                       : ERKStepReInit(s->mem, rhs_fn, tau, s->y);
}

/* At a root tau of the events (ARKODE returned there, y = y(tau)): the resets and jumps
   (sl_event_roots_fire, on the y and S_k of the integrated vector), then ARKODE restarts
   from (tau, y+): afresh after a bounce (see the top of this file), else keeping its step
   size and counters. */
static int fire_events(sl_arkode *s, double tau)
{
    const sl_event_hooks hooks = {s, state_rhs, record_hook, s->rk, ARK_RTFUNC_FAIL,
                                  ARK_MEM_FAIL, "ARK_RTFUNC_FAIL", "ARK_MEM_FAIL"};
    double h = 0.0;
    int flag;
    if ((flag = STEP(s, GetRootInfo)(s->mem, s->roots.found))) return fail(s, flag);
    STEP(s, GetLastStep)(s->mem, &h);
    if ((flag = sl_event_roots_fire(&s->roots, &s->problem, &s->status, &hooks, s->t0, tau, h,
                                    DATA(s->y), s->n_sens, DATA(s->y) + N(s), &s->schedule)))
        return flag;
    if (!sl_event_roots_watching(&s->roots, &s->problem))
        return (flag = STEP(s, Reset)(s->mem, tau, s->y)) ? fail(s, flag) : 0;
    add_counters(s, &s->restarted);
    if ((flag = start_afresh(s, tau))) return fail(s, flag);
    s->restart_steps = steps_taken(s);
    s->reinit_tau = tau;
    return 0;
}

/* The output loop of every forward solve: one step at a time toward the next output time,
   and each output time the step has passed interpolated by ARKODE's dense output (before
   the doses at the same time). The integrator stops exactly at each stop of the schedule
   (doses, infusion ends, the inputs' knots: the nearest ahead is ARKODE's stop time) and,
   with stop_at_outputs, at output times; with events, at the last output time (a root
   beyond it is not the solve's). At an event's root, the outputs there get the state
   before it (as at a dose), then the events act (fire_events).
   With an adjoint every step is recorded (in tau). max_steps holds per output interval, as
   in ARKODE's normal mode. */
static int integrate_outputs(sl_arkode *s, double t0, int64_t n_t, const double *tvals,
                             double *y_out, double *sens_out)
{
    const sl_schedule *schedule = &s->schedule;
    int64_t i = 0, k = 0, steps = 0;
    int flag, root;
    double tret = 0.0, armed = NAN; /* ARKODE's stop time (NaN: none; forgotten once reached) */
    if (s->rk) {
        sl_rk_adjoint_clear(s->rk);
        if ((flag = record(s, 0.0))) return flag;
    }
    for (; i < n_t && tvals[i] == t0; i++) write_output(s, i, DATA(s->y), y_out, sens_out);
    while (i < n_t) {
        double next_stop = k < schedule->n_stops ? schedule->stops[k] - t0 : INFINITY;
        double stop = isnan(s->tstop) ? INFINITY : s->tstop - t0, tout = tvals[i] - t0;
        if (next_stop == tret) {
            if ((flag = pass_stop(s, k++, tret))) return flag;
            continue;
        }
        if (s->step_budget && (flag = check_budget(s, t0 + tret, tvals[n_t - 1] - t0 - tret)))
            return flag;
        if (++steps > s->max_steps) {
            char text[32];
            sl_format_time(text, sizeof(text), tvals[i]);
            return sl_report(&s->status, ARK_TOO_MUCH_WORK, t0 + tret, "ARK_TOO_MUCH_WORK",
                             "more than max_steps = %lld steps before t = %s",
                             (long long)s->max_steps, text);
        }
        if (next_stop < stop) stop = next_stop;
        if (s->stop_at_outputs && tout < stop) stop = tout;
        if (s->problem.n_events > 0 && tvals[n_t - 1] - t0 < stop) stop = tvals[n_t - 1] - t0;
        if (stop != armed && isfinite(stop)) {
            if ((flag = STEP(s, SetStopTime)(s->mem, stop))) return fail(s, flag);
            armed = stop;
        }
        /* Toward the next output time (the first step's size is estimated as in normal
           mode), or the stop beyond it: ARKODE returns at its stop time only if tout is not
           before it. */
        flag = STEP(s, Evolve)(s->mem, isfinite(next_stop) ? fmax(tout, next_stop) : tout, s->y,
                               &tret, ARK_ONE_STEP);
        if (flag < 0) return fail(s, flag);
        root = flag == ARK_ROOT_RETURN;
        if (tret == armed) armed = NAN;
        else if ((flag = STEP(s, GetLastStep)(s->mem, &s->free_step))) return fail(s, flag);
        if (s->rk && (flag = record(s, tret))) return flag;
        for (; i < n_t && tvals[i] - t0 <= tret; i++, steps = 0) {
            if ((flag = STEP(s, GetDky)(s->mem, tvals[i] - t0, 0, s->work))) return fail(s, flag);
            write_output(s, i, DATA(s->work), y_out, sens_out);
        }
        if (root) {
            double h = 0.0;
            STEP(s, GetLastStep)(s->mem, &h);
            for (; i < n_t && sl_event_at_root(tvals[i] - t0, tret, h); i++, steps = 0)
                write_output(s, i, DATA(s->y), y_out, sens_out);
            if ((flag = fire_events(s, tret))) return flag;
            armed = NAN; /* re-armed after the restart */
        }
    }
    return 0;
}

static int forward_solve(sl_arkode *s, double t0, const double *y0, const double *sens0,
                         int64_t n_t, const double *tvals, const sl_doses *doses,
                         double *y_out, double *sens_out)
{
    int64_t n = N(s);
    int flag;
    const char *bad = sl_doses_check(doses, n, t0, tvals[n_t - 1], s->n_doses);
    s->forward_valid = 0;
    s->recording_evals = 0;
    s->restart_steps = 0;
    s->free_step = 0.0;
    s->reinit_tau = 0.0;
    memset(&s->restarted, 0, sizeof(s->restarted));
    if (s->problem.n_events > 0) sl_event_roots_start(&s->roots, &s->problem);
    s->t0 = t0;
    s->status.message[0] = s->status.kernel[0] = '\0';
    if (bad) return sl_report(&s->status, ARK_ILL_INPUT, t0, "ARK_ILL_INPUT", "%s", bad);
    if (sl_schedule_build(&s->schedule, doses, s->problem.n_stop_times, s->problem.stop_times,
                          t0, tvals[n_t - 1])
        || sl_schedule_backward_stops(&s->schedule))
        return fail(s, ARK_MEM_FAIL);
    s->interval_start = -INFINITY;
    s->interval_end = s->schedule.n_stops > 0 ? s->schedule.stops[0] : INFINITY;
    memset(s->rate, 0, n * sizeof(double));
    memcpy(DATA(s->y), y0, n * sizeof(double));
    if (s->n_sens) memcpy(DATA(s->y) + n, sens0, s->n_sens * n * sizeof(double));
    /* ReInit, not Reset: a fresh start makes a reused solver's results those of a new one. */
    if ((flag = start_afresh(s, 0.0))) return fail(s, flag);
    if ((flag = integrate_outputs(s, t0, n_t, tvals, y_out, sens_out))) return flag;
    /* The backward restarts at the events too. */
    return s->schedule.n_fired > 0 && sl_schedule_backward_stops(&s->schedule)
               ? fail(s, ARK_MEM_FAIL) : 0;
}

int sl_arkode_solve(sl_arkode *s, double t0, const double *y0, const double *sens0,
                    int64_t n_t, const double *tvals, double *y_out, double *sens_out)
{
    return sl_arkode_solve_doses(s, t0, y0, sens0, n_t, tvals, NULL, y_out, sens_out);
}

int sl_arkode_solve_doses(sl_arkode *s, double t0, const double *y0, const double *sens0,
                          int64_t n_t, const double *tvals, const sl_doses *doses,
                          double *y_out, double *sens_out)
{
    int flag = forward_solve(s, t0, y0, sens0, n_t, tvals, doses, y_out, sens_out);
    record_forward_stats(s);
    if (flag) return flag;
    s->forward_valid = s->rk != NULL;
    s->forward_t0 = t0;
    s->forward_tlast = n_t > 0 ? tvals[n_t - 1] : t0;
    return 0;
}

int sl_arkode_forward_state(sl_arkode *s, int backward, double t, double *y_out)
{
    int flag;
    long steps;
    sl_status failure = s->status; /* ARKODE would report a failure here as the last message */
    double tau = t - s->t0;
    if (backward && s->rk) return sl_rk_adjoint_forward_state(s->rk, tau, y_out);
    if (!isfinite(t)) return ARK_ILL_INPUT;
    /* Before the first step after a (re)start ARKODE's interpolant is not set up (GetDky
       would read it): the state is the start's, which y still holds (ARKODE returns y as
       it was on a failed first step). */
    if (STEP(s, GetNumSteps)(s->mem, &steps) || steps == 0) {
        if (tau != s->reinit_tau) return ARK_ILL_INPUT;
        memcpy(y_out, DATA(s->y), N(s) * sizeof(double));
        return 0;
    }
    flag = STEP(s, GetDky)(s->mem, tau, 0, s->work);
    s->status = failure;
    if (!flag) memcpy(y_out, DATA(s->work), N(s) * sizeof(double));
    return flag;
}

void sl_arkode_add_infusions(const sl_arkode *s, double t, int after, double *out)
{
    sl_schedule_add_rates(&s->schedule, t, after, N(s), s->rate, out);
}

int sl_arkode_backward(sl_arkode *s, double t0, int64_t n_t, const double *tvals,
                       const double *grads, double *grad_out, double *lambda_out)
{
    return sl_arkode_backward_doses(s, t0, n_t, tvals, grads, grad_out, lambda_out, NULL, NULL,
                                    NULL);
}

int sl_arkode_backward_doses(sl_arkode *s, double t0, int64_t n_t, const double *tvals,
                             const double *grads, double *grad_out, double *lambda_out,
                             double *dose_time, double *dose_amount, double *dose_rate)
{
    s->status.message[0] = s->status.kernel[0] = '\0';
    if (!s->forward_valid || n_t < 1 || t0 != s->forward_t0
        || tvals[n_t - 1] != s->forward_tlast) {
        char start[32], end[32];
        sl_format_time(start, sizeof(start), t0);
        sl_format_time(end, sizeof(end), n_t > 0 ? tvals[n_t - 1] : t0);
        return sl_report(&s->status, ARK_ILL_INPUT, t0, "ARK_ILL_INPUT",
                         "no successful forward solve with an adjoint from t0 = %s to %s",
                         start, end);
    }
    memset(&s->backward_stats, 0, sizeof(s->backward_stats));
    return sl_rk_adjoint_scheduled_gradients(s->rk, t0, n_t, tvals, grads, &s->schedule,
                                             grad_out, lambda_out, dose_time, dose_amount,
                                             dose_rate, &s->backward_stats);
}
