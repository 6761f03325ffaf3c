#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    if (*messages->t0 != 0.0) show_times_in_t(out + used, size - used, msg ? msg : "", *messages->t0);
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
        if (!isfinite(out[k])) {
            sl_status_set(status, SL_OVERFLOW, t, "SL_OVERFLOW");
            snprintf(status->message, sizeof(status->message),
                     "the gradient overflows float64 (max |grads| is about %g): scale the loss "
                     "down", scale);
            return SL_OVERFLOW;
        }
    }
    return 0;
}

int sl_last_interval_too_short(long n_steps, int64_t checkpoint_steps, int max_order)
{
    long remainder = n_steps % (long)checkpoint_steps;
    return n_steps > checkpoint_steps && remainder != 0 && remainder < max_order;
}

int sl_status_tstop_blocks_polynomial(sl_status *status, int flag, const char *flag_name,
                                      double t, double tstop)
{
    char text[32];
    sl_format_time(text, sizeof(text), tstop);
    sl_status_set(status, flag, t, flag_name);
    snprintf(status->message, sizeof(status->message),
             "interpolation=\"polynomial\" needs up to 12 forward steps past the last output "
             "time, and tstop = %s does not allow them; use interpolation=\"hermite\"", text);
    return flag;
}

int sl_adjoint_sweep(void *solver, sl_backward_interval integrate, int64_t n, double *lambda,
                     double t0, int64_t n_t, const double *tvals, const double *grads,
                     double scale)
{
    double t = tvals[n_t - 1];
    int64_t i, j;
    int flag;
    for (i = n_t - 1; i >= 0; i--) {
        int jumps = 0;
        for (j = 0; j < n; j++) jumps |= grads[i * n + j] != 0.0;
        if (!jumps) continue;
        if (tvals[i] < t) {
            if ((flag = integrate(solver, t, tvals[i]))) return flag;
            t = tvals[i];
        }
        for (j = 0; j < n; j++) lambda[j] -= grads[i * n + j] / scale;
    }
    return t0 < t ? integrate(solver, t, t0) : 0;
}
