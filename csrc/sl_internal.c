#include <ctype.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nvector/nvector_serial.h>
#include <sunlinsol/sunlinsol_band.h>
#include <sunlinsol/sunlinsol_dense.h>
#if SL_HAVE_KLU
#include <sunlinsol/sunlinsol_klu.h>
#endif
#include <sunlinsol/sunlinsol_spgmr.h>
#include <sunmatrix/sunmatrix_band.h>
#include <sunmatrix/sunmatrix_dense.h>
#include <sunmatrix/sunmatrix_sparse.h>

#include "sl_internal.h"

void sl_status_set(sl_status *status, int flag, double t, const char *flag_name)
{
    status->flag = flag;
    status->t = t;
    snprintf(status->flag_name, sizeof(status->flag_name), "%s",
             flag_name ? flag_name : "UNKNOWN");
}

int sl_report(sl_status *status, int flag, double t, const char *flag_name,
              const char *format, ...)
{
    va_list args;
    sl_status_set(status, flag, t, flag_name);
    va_start(args, format);
    vsnprintf(status->message, sizeof(status->message), format, args);
    va_end(args);
    return flag;
}

int sl_call_kernel(sl_status *status, int64_t n, sl_kernel kernel, const char *name, double t,
                   const double *y, const double *params, double *out)
{
    int flag = kernel(t, y, params, out);
    if (flag) {
        snprintf(status->kernel, sizeof(status->kernel), "%s", name);
        status->kernel_t = t;
        memcpy(status->kernel_y, y, n * sizeof(double));
    }
    return flag;
}

void sl_format_time(char *out, size_t size, double t)
{
    for (int digits = 1; digits <= 17; digits++) {
        snprintf(out, size, "%.*g", digits, t);
        if (strtod(out, NULL) == t) return;
    }
}

/* out = msg with each time SUNDIALS printed in tau ("t = 9.9", also tout, tstop, tcur and
   tcur - hu) written as t0 + tau ("t = 1e+14 + 9.9"). */
static void show_times_in_t(char *out, size_t size, const char *msg, double t0)
{
    static const char *names[] = {"t = ", "tout = ", "tstop = ", "tcur = ", "tcur - hu = "};
    char origin[32];
    size_t used = 0, i;
    sl_format_time(origin, sizeof(origin), t0);
    while (*msg && used + 1 < size) {
        for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            size_t length = strlen(names[i]);
            int starts_word = used == 0 || !(isalnum((unsigned char)out[used - 1])
                                             || out[used - 1] == '_');
            if (starts_word && strncmp(msg, names[i], length) == 0) {
                int negative = msg[length] == '-';
                used += snprintf(out + used, size - used, "%s%s %c ", names[i], origin,
                                 negative ? '-' : '+');
                msg += length + negative;
                break;
            }
        }
        if (used + 1 >= size) break;
        if (i == sizeof(names) / sizeof(names[0])) out[used++] = *msg++;
    }
    out[used < size ? used : size - 1] = '\0';
}

static void record_message(sl_messages *messages, const char *function, const char *msg)
{
    char *out = messages->status->message;
    size_t size = sizeof(messages->status->message);
    int used = snprintf(out, size, "%s: ", function ? function : "?");
    if (used < 0 || (size_t)used >= size) return;
    if (*messages->t0 != 0.0)
        show_times_in_t(out + used, size - used, msg ? msg : "", *messages->t0);
    else snprintf(out + used, size - used, "%s", msg ? msg : "");
}

void sl_error_handler_6(int error_code, const char *module, const char *function,
                        char *msg, void *messages)
{
    (void)error_code;
    (void)module;
    record_message(messages, function, msg);
}

#if SL_SUNDIALS_7
/* SUNDIALS 7 reports the internal function that noticed an error where 6 named the public
   call the user made (IDACalcIC, CVode, IDASolve); messages keep naming the public one. */
static const char *public_call(const char *function)
{
    static const char *names[][2] = {
        {"IDAICFailFlag", "IDACalcIC"}, {"IDANlsIC", "IDACalcIC"}, {"IDALineSrch", "IDACalcIC"},
        {"cvHandleFailure", "CVode"}, {"cvHandleNFlag", "CVode"}, {"cvStep", "CVode"},
        {"IDAHandleFailure", "IDASolve"}, {"IDAHandleNFlag", "IDASolve"},
        {"arkHandleFailure", "ARKodeEvolve"}};
    size_t i;
    for (i = 0; function && i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(function, names[i][0]) == 0) return names[i][1];
    return function;
}

static void error_handler_7(int line, const char *function, const char *file,
                            const char *msg, SUNErrCode code, void *messages,
                            SUNContext ctx)
{
    (void)line;
    (void)file;
    (void)code;
    (void)ctx;
    record_message(messages, public_call(function), msg);
}
#endif

int sl_context_create(SUNContext *ctx, sl_messages *messages)
{
#if SL_SUNDIALS_7
    if (SUNContext_Create(SUN_COMM_NULL, ctx) != 0) return -1;
    SUNContext_ClearErrHandlers(*ctx);
    SUNContext_PushErrHandler(*ctx, error_handler_7, messages);
#else
    (void)messages;
    if (SUNContext_Create(NULL, ctx) != 0) return -1;
#endif
    return 0;
}

N_Vector sl_new_vector(SUNContext ctx, int64_t n, const double *values)
{
    N_Vector v = N_VNew_Serial(n, ctx);
    if (v && values) memcpy(N_VGetArrayPointer(v), values, n * sizeof(double));
    else if (v) N_VConst(0.0, v);
    return v;
}

N_Vector *sl_new_vectors(N_Vector template_vector, int64_t count)
{
    N_Vector *vectors = N_VCloneVectorArray((int)count, template_vector);
    for (int64_t k = 0; vectors && k < count; k++) N_VConst(0.0, vectors[k]);
    return vectors;
}

void sl_vectors_load(N_Vector *vectors, int64_t count, int64_t n, const double *values)
{
    for (int64_t k = 0; k < count; k++)
        memcpy(N_VGetArrayPointer(vectors[k]), values + k * n, n * sizeof(double));
}

void sl_vectors_store(N_Vector *vectors, int64_t count, int64_t n, double *values)
{
    for (int64_t k = 0; k < count; k++)
        memcpy(values + k * n, N_VGetArrayPointer(vectors[k]), n * sizeof(double));
}

sl_options sl_transposed(const sl_options *options)
{
    sl_options transposed = *options;
    transposed.upper_bandwidth = options->lower_bandwidth;
    transposed.lower_bandwidth = options->upper_bandwidth;
    return transposed;
}

int sl_linear_solver_create(const sl_options *options, int64_t n, const int64_t *colptr,
                            N_Vector template_vector, SUNContext ctx, SUNMatrix *matrix,
                            SUNLinearSolver *solver)
{
    *matrix = NULL;
    *solver = NULL;
    switch (options->linear_solver) {
    case SL_DENSE:
        *matrix = SUNDenseMatrix(n, n, ctx);
        if (*matrix) *solver = SUNLinSol_Dense(template_vector, *matrix, ctx);
        break;
    case SL_BAND:
        *matrix = SUNBandMatrix(n, options->upper_bandwidth, options->lower_bandwidth, ctx);
        if (*matrix) *solver = SUNLinSol_Band(template_vector, *matrix, ctx);
        break;
    case SL_SPARSE:
#if SL_HAVE_KLU
        /* At least one stored entry: KLU cannot factor an empty pattern. */
        *matrix = SUNSparseMatrix(n, n, colptr[n] > 0 ? colptr[n] : 1, CSC_MAT, ctx);
        if (*matrix) *solver = SUNLinSol_KLU(template_vector, *matrix, ctx);
#endif
        break;
    case SL_SPGMR:
        *solver = SUNLinSol_SPGMR(template_vector, SUN_PREC_NONE, 0, ctx);
        break;
    default:
        return -1;
    }
    return *solver ? 0 : -1;
}

int sl_matrix_fill(SUNMatrix A, int64_t n_cols, const int64_t *colptr, const int64_t *rows,
                   const int64_t *perm, const double *values, double scale)
{
    int64_t j, k;
    switch (SUNMatGetID(A)) {
    case SUNMATRIX_DENSE: {
        double *data = SUNDenseMatrix_Data(A);
        int64_t ld = SUNDenseMatrix_LData(A) / n_cols;
        SUNMatZero(A);
        for (j = 0; j < n_cols; j++)
            for (k = colptr[j]; k < colptr[j + 1]; k++)
                data[j * ld + rows[k]] = scale * values[perm ? perm[k] : k];
        return 0;
    }
    case SUNMATRIX_BAND:
        SUNMatZero(A);
        for (j = 0; j < n_cols; j++)
            for (k = colptr[j]; k < colptr[j + 1]; k++)
                SM_ELEMENT_B(A, rows[k], j) = scale * values[perm ? perm[k] : k];
        return 0;
    case SUNMATRIX_SPARSE: {
        sunindextype *ptrs = SUNSparseMatrix_IndexPointers(A);
        sunindextype *vals = SUNSparseMatrix_IndexValues(A);
        double *data = SUNSparseMatrix_Data(A);
        for (j = 0; j <= n_cols; j++) ptrs[j] = colptr[j];
        for (k = 0; k < colptr[n_cols]; k++) {
            vals[k] = rows[k];
            data[k] = scale * values[perm ? perm[k] : k];
        }
        return 0;
    }
    default:
        return -1;
    }
}

void sl_csc_matvec(int64_t n_rows, int64_t n_cols, const int64_t *colptr,
                   const int64_t *rows, const double *values, const double *v,
                   double scale, double *out)
{
    int64_t i, j, k;
    for (i = 0; i < n_rows; i++) out[i] = 0.0;
    for (j = 0; j < n_cols; j++) {
        double vj = scale * v[j];
        for (k = colptr[j]; k < colptr[j + 1]; k++) out[rows[k]] += values[k] * vj;
    }
}

void sl_csc_rmatvec(int64_t n_cols, const int64_t *colptr, const int64_t *rows,
                    const double *values, const double *v, double scale, double *out)
{
    int64_t j, k;
    for (j = 0; j < n_cols; j++) {
        double acc = 0.0;
        for (k = colptr[j]; k < colptr[j + 1]; k++) acc += values[k] * v[rows[k]];
        out[j] = scale * acc;
    }
}

double sl_grads_scale(int64_t count, const double *grads)
{
    double largest = 0.0;
    int exponent;
    for (int64_t k = 0; k < count; k++)
        if (fabs(grads[k]) > largest) largest = fabs(grads[k]);
    if (largest == 0.0 || !isfinite(largest)) return 1.0;
    frexp(largest, &exponent); /* largest in [2^(exponent-1), 2^exponent) */
    return ldexp(1.0, exponent < 1023 ? exponent : 1023); /* 2^1024 is inf */
}

int sl_scale_gradient(sl_status *status, double t, double scale, int64_t count, double *out)
{
    for (int64_t k = 0; k < count; k++) {
        out[k] *= scale;
        if (!isfinite(out[k]))
            return sl_report(status, SL_OVERFLOW, t, "SL_OVERFLOW",
                             "the gradient overflows float64 (max |grads| is about %g): scale "
                             "the loss down", scale);
    }
    return 0;
}

int sl_adjoint_sweep(void *solver, sl_backward_interval integrate, int64_t n, double *lambda,
                     double t0, int64_t n_t, const double *tvals, const double *grads,
                     double scale)
{
    return sl_scheduled_sweep(solver, integrate, NULL, 0, NULL, n, lambda, t0, n_t, tvals,
                              grads, scale);
}

/* Whether the integrators (stepping in tau = t - t0) refuse to go from tau_a to tau_b as
   too close to start (CVODES' and ARKODE's test, with room): an interval between an
   output and a dose one ulp apart. lambda and q change by O(ulp |z'|) over it, so it is
   skipped. */
static int within_ulps(double tau_a, double tau_b)
{
    return fabs(tau_a - tau_b) <= 4.0 * DBL_EPSILON * fmax(fabs(tau_a), fabs(tau_b));
}

static int has_jump(int64_t n, const double *row)
{
    for (int64_t j = 0; j < n; j++)
        if (row[j] != 0.0) return 1;
    return 0;
}

int sl_scheduled_sweep(void *solver, sl_backward_interval integrate, sl_at_stop at_stop,
                       int64_t n_stops, const double *stops, int64_t n, double *lambda,
                       double t0, int64_t n_t, const double *tvals, const double *grads,
                       double scale)
{
    double t = tvals[n_t - 1];
    int64_t i = n_t - 1, k = n_stops - 1, j;
    int flag;
    for (;;) {
        double next;
        while (i >= 0 && !has_jump(n, grads + i * n)) i--;
        if (i < 0 && k < 0) break;
        next = i < 0 ? stops[k] : k < 0 ? tvals[i] : fmax(tvals[i], stops[k]);
        if (next < t) {
            if (!within_ulps(t - t0, next - t0) && (flag = integrate(solver, t, next))) return flag;
            t = next;
        }
        if (k >= 0 && stops[k] == next && (flag = at_stop(solver, k--))) return flag;
        if (i >= 0 && tvals[i] == next) {
            for (j = 0; j < n; j++) lambda[j] -= grads[i * n + j] / scale;
            i--;
        }
    }
    return t0 < t && !within_ulps(t - t0, 0.0) ? integrate(solver, t, t0) : 0;
}

/* -- What the CVODES and IDAS layers share ------------------------------------------------ */

int sl_core_init(sl_core *c, const sl_calls *calls, const sl_options *options,
                 const sl_adjoint_options *adjoint, int64_t n_dparams)
{
    c->calls = calls;
    c->tstop = c->tstop_given = options->tstop;
    c->max_steps = options->max_steps;
    c->has_adjoint = adjoint != NULL;
    c->has_quad = c->has_adjoint && n_dparams > 0;
    if (c->has_adjoint) c->adjoint = *adjoint;
    c->messages.status = &c->status;
    c->messages.t0 = &c->t0;
    return sl_context_create(&c->ctx, &c->messages) ? calls->mem_fail : 0;
}

int sl_core_adjoint_vectors(sl_core *c, int64_t n, int64_t n_dparams)
{
    c->yB = sl_new_vector(c->ctx, n, NULL);
    c->atolB = sl_new_vector(c->ctx, n, c->adjoint.backward.atol);
    c->qB = sl_new_vector(c->ctx, n_dparams > 0 ? n_dparams : 1, NULL);
    return c->yB && c->atolB && c->qB ? 0 : sl_fail(c, NULL, c->calls->mem_fail);
}

void sl_core_free(sl_core *c)
{
    N_Vector vectors[] = {c->atol, c->constraints, c->yB, c->qB, c->atolB};
    size_t i;
    if (c->mem) c->calls->free(&c->mem);
    if (c->linear_solver) SUNLinSolFree(c->linear_solver);
    if (c->matrix) SUNMatDestroy(c->matrix);
    if (c->linear_solverB) SUNLinSolFree(c->linear_solverB);
    if (c->matrixB) SUNMatDestroy(c->matrixB);
    for (i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++)
        if (vectors[i]) N_VDestroy(vectors[i]);
    if (c->ctx) SUNContext_Free(&c->ctx);
}

int sl_fail(sl_core *c, void *mem, int flag)
{
    double tau = NAN, h = 0.0;
    char *name = c->calls->flag_name(flag), text[32];
    if (mem) c->calls->current_time(mem, &tau);
    /* CVODES (6.4 and 7.5) recovers from a step whose predicted state violates the
       constraints by h *= 0.9 min(predicted / correction), without a bound: when the
       corrector hardly moves the prediction (exactly so for a polynomial solution), h
       becomes infinite and the step fails with NaN as a convergence failure. By then the
       solution itself violates the constraints within the solve (sl_begin_forward). */
    if (mem == c->mem && c->constraints && !c->calls->current_step(mem, &h) && !isfinite(h)) {
        sl_format_time(text, sizeof(text), c->t0 + tau);
        sl_report(&c->status, flag, c->t0 + tau, name, "the solution leaves the region the "
                  "`constraints` allow after t = %s (the integrator's recovery from the "
                  "violation failed with an infinite step size)", text);
    } else {
        sl_status_set(&c->status, flag, c->t0 + tau, name);
    }
    free(name);
    return flag;
}

int sl_check_reached(sl_core *c, double tout)
{
    double tau = NAN;
    char text[32];
    c->calls->current_time(c->mem, &tau);
    if (tau >= tout - c->t0) return 0;
    sl_status_set(&c->status, c->calls->err_failure, c->t0 + tau, c->calls->err_failure_name);
    if (!c->status.message[0]) {
        sl_format_time(text, sizeof(text), tout);
        snprintf(c->status.message, sizeof(c->status.message),
                 "the step size underflowed before reaching t = %s", text);
    }
    return c->calls->err_failure;
}

int sl_configure_forward(sl_core *c, void *solver, const sl_options *options,
                         const double *constraints, int64_t n, const int64_t *jac_colptr,
                         N_Vector template_vector, sl_configure_own configure_own)
{
    const sl_calls *k = c->calls;
    int flag;
    if (!(c->atol = sl_new_vector(c->ctx, n, options->atol))) return sl_fail(c, NULL, k->mem_fail);
    if ((flag = k->set_user_data(c->mem, solver))) return sl_fail(c, c->mem, flag);
    if ((flag = k->sv_tolerances(c->mem, options->rtol, c->atol))) return sl_fail(c, c->mem, flag);
    if ((flag = k->set_max_num_steps(c->mem, options->max_steps))) return sl_fail(c, c->mem, flag);
    if (options->max_step > 0.0 && (flag = k->set_max_step(c->mem, options->max_step)))
        return sl_fail(c, c->mem, flag);
    if (constraints) {
        if (!(c->constraints = sl_new_vector(c->ctx, n, constraints)))
            return sl_fail(c, NULL, k->mem_fail);
        if ((flag = k->set_constraints(c->mem, c->constraints))) return sl_fail(c, c->mem, flag);
    }
    if (sl_linear_solver_create(options, n, jac_colptr, template_vector, c->ctx, &c->matrix,
                                &c->linear_solver))
        return sl_fail(c, NULL, k->mem_fail);
    if ((flag = k->set_linear_solver(c->mem, c->linear_solver, c->matrix)))
        return sl_fail(c, c->mem, flag);
    flag = configure_own(solver);
    return flag ? sl_fail(c, c->mem, flag) : 0;
}

int sl_configure_sensitivities(sl_core *c, int errcon)
{
    int flag;
    if ((flag = c->calls->sens_ee_tolerances(c->mem))) return sl_fail(c, c->mem, flag);
    flag = c->calls->set_sens_err_con(c->mem, errcon);
    return flag ? sl_fail(c, c->mem, flag) : 0;
}

int sl_configure_backward(sl_core *c, void *solver, int64_t n, const int64_t *jact_colptr,
                          sl_configure_own configure_own)
{
    const sl_calls *k = c->calls;
    const sl_options *o = &c->adjoint.backward;
    sl_options transposed = sl_transposed(o); /* the backward matrix is a transpose */
    void *mem_b = k->backward_mem(c->mem, c->which);
    int flag;
    if ((flag = k->set_user_data_b(c->mem, c->which, solver))) return sl_fail(c, mem_b, flag);
    if ((flag = k->sv_tolerances_b(c->mem, c->which, o->rtol, c->atolB))
        || (flag = k->set_max_num_steps_b(c->mem, c->which, o->max_steps)))
        return sl_fail(c, mem_b, flag);
    if (sl_linear_solver_create(&transposed, n, jact_colptr, c->yB, c->ctx, &c->matrixB,
                                &c->linear_solverB))
        return sl_fail(c, NULL, k->mem_fail);
    if ((flag = k->set_linear_solver_b(c->mem, c->which, c->linear_solverB, c->matrixB))
        || (flag = configure_own(solver)))
        return sl_fail(c, mem_b, flag);
    if (c->has_quad
        && ((flag = k->quad_ss_tolerances_b(c->mem, c->which, c->adjoint.rtol_quad,
                                            c->adjoint.atol_quad))
            || (flag = k->set_quad_err_con_b(c->mem, c->which, c->adjoint.quad_errcon))))
        return sl_fail(c, mem_b, flag);
    c->backward_created = 1;
    return 0;
}

int sl_begin_forward(sl_core *c, double t0, double t_last)
{
    int flag;
    c->forward_valid = 0;
    c->t0 = t0;
    /* Stepping past t_last where the solution leaves the constraints would fail a solve
       that is right up to t_last (see sl_fail). fmin: a NaN tstop_given is none. */
    c->tstop = c->constraints ? fmin(c->tstop_given, t_last) : c->tstop_given;
    memset(&c->restarted_stats, 0, sizeof(c->restarted_stats));
    c->status.message[0] = c->status.kernel[0] = '\0';
    flag = c->calls->set_init_step(c->mem, 0.0);
    return flag ? sl_fail(c, c->mem, flag) : 0;
}

/* The forward counters SUNDIALS holds now (since the last re-initialisation). */
static sl_stats forward_counters(const sl_core *c)
{
    const sl_calls *k = c->calls;
    sl_stats out = {0};
    k->num_steps(c->mem, &out.steps);
    k->num_rhs_evals(c->mem, &out.rhs_evals);
    k->num_jac_evals(c->mem, &out.jac_evals);
    k->num_error_test_fails(c->mem, &out.error_test_fails);
    k->num_nonlinear_conv_fails(c->mem, &out.nonlinear_conv_fails);
    if (c->has_sens) { /* else SUNDIALS reports an error (into the status' message) */
        k->num_sens_error_test_fails(c->mem, &out.sens_error_test_fails);
        k->num_sens_nonlinear_conv_fails(c->mem, &out.sens_nonlinear_conv_fails);
    }
    return out;
}

/* sum += the forward counters of add. */
static void add_forward_counters(sl_stats *sum, const sl_stats *add)
{
    sum->steps += add->steps;
    sum->rhs_evals += add->rhs_evals;
    sum->jac_evals += add->jac_evals;
    sum->error_test_fails += add->error_test_fails;
    sum->nonlinear_conv_fails += add->nonlinear_conv_fails;
    sum->sens_error_test_fails += add->sens_error_test_fails;
    sum->sens_nonlinear_conv_fails += add->sens_nonlinear_conv_fails;
}

void sl_count_restart(sl_core *c)
{
    sl_stats now = forward_counters(c);
    add_forward_counters(&c->restarted_stats, &now);
}

int sl_rearm_tstop(sl_core *c)
{
    int flag = isnan(c->tstop) ? 0 : c->calls->set_stop_time(c->mem, c->tstop - c->t0);
    return flag ? sl_fail(c, c->mem, flag) : 0;
}

int sl_end_forward(sl_core *c, int flag, int64_t n_t, const double *tvals)
{
    c->forward_stats = forward_counters(c);
    add_forward_counters(&c->forward_stats, &c->restarted_stats);
    if (flag) return flag;
    c->forward_valid = c->has_adjoint;
    c->forward_t0 = c->t0;
    c->forward_nt = n_t;
    c->forward_tlast = n_t > 0 ? tvals[n_t - 1] : c->t0;
    return 0;
}

void sl_core_stats(const sl_core *c, sl_stats *stats)
{
    *stats = c->forward_stats;
    stats->steps_backward = c->backward_stats.steps;
    stats->rhs_evals_backward = c->backward_stats.rhs_evals;
    stats->error_test_fails_backward = c->backward_stats.error_test_fails;
}

static int last_interval_too_short(long n_steps, int64_t checkpoint_steps, int max_order)
{
    long remainder = n_steps % (long)checkpoint_steps;
    return n_steps > checkpoint_steps && remainder != 0 && remainder < max_order;
}

int sl_complete_last_interval(sl_core *c, double t_last, int max_order, sl_one_step step,
                              void *solver)
{
    long nst;
    int flag;
    char text[32];
    double tret, tout = 2.0 * (t_last - c->t0) + 1.0; /* tau ahead: only the direction counts */
    if (c->tstop != c->tstop_given) { /* the stop at t_last that constraints set */
        c->tstop = c->tstop_given;
        flag = c->calls->set_stop_time(c->mem, isnan(c->tstop) ? INFINITY : c->tstop - c->t0);
        if (flag) return sl_fail(c, c->mem, flag);
    }
    while (!c->calls->num_steps(c->mem, &nst)
           && last_interval_too_short(nst, c->adjoint.checkpoint_steps, max_order)) {
        flag = step(solver, tout, &tret);
        if (flag < 0) return sl_fail(c, c->mem, flag);
        if (flag == c->calls->tstop_return) {
            sl_format_time(text, sizeof(text), c->tstop);
            return sl_report(&c->status, flag, c->t0 + tret, c->calls->tstop_return_name,
                             "interpolation=\"polynomial\" needs up to 12 forward steps past "
                             "the last output time, and tstop = %s does not allow them; use "
                             "interpolation=\"hermite\"", text);
        }
    }
    return 0;
}

int sl_begin_backward(sl_core *c, double t0, int64_t n_t, const double *tvals)
{
    c->status.message[0] = c->status.kernel[0] = '\0';
    if (!c->forward_valid || n_t < 1 || n_t != c->forward_nt || t0 != c->forward_t0
        || tvals[n_t - 1] != c->forward_tlast) {
        sl_status_set(&c->status, c->calls->no_forward, t0, c->calls->no_forward_name);
        return c->calls->no_forward;
    }
    memset(&c->backward_stats, 0, sizeof(c->backward_stats));
    return 0;
}

int sl_restart_quadrature(sl_core *c)
{
    int flag = c->has_quad ? c->calls->quad_reinit_b(c->mem, c->which, c->qB) : 0;
    return flag ? sl_fail(c, c->mem, flag) : 0;
}

int sl_solve_backward(sl_core *c, double t_end)
{
    const sl_calls *k = c->calls;
    int flag = k->solve_b(c->mem, t_end - c->t0, k->normal);
    void *mem_b = k->backward_mem(c->mem, c->which);
    long count;
    k->num_steps(mem_b, &count);
    c->backward_stats.steps += count;
    k->num_rhs_evals(mem_b, &count);
    c->backward_stats.rhs_evals += count;
    k->num_error_test_fails(mem_b, &count);
    c->backward_stats.error_test_fails += count;
    return flag < 0 ? sl_fail(c, mem_b, flag) : 0;
}

int sl_read_quadrature(sl_core *c)
{
    double tret;
    int flag = c->has_quad ? c->calls->get_quad_b(c->mem, c->which, &tret, c->qB) : 0;
    return flag ? sl_fail(c, c->mem, flag) : 0;
}
