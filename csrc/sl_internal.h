/* Helpers shared by the CVODES and IDAS layers; not part of the Python interface.
   Everything that differs between SUNDIALS 6 and 7 is hidden here. */
#ifndef SL_INTERNAL_H
#define SL_INTERNAL_H

#include <stdint.h>
#include <sundials/sundials_config.h>
#include <sundials/sundials_context.h>
#include <sundials/sundials_linearsolver.h>
#include <sundials/sundials_matrix.h>
#include <sundials/sundials_nvector.h>

#include "sl_common.h"

#if SUNDIALS_VERSION_MAJOR >= 7
#define SL_SUNDIALS_7 1
#else
#define SL_SUNDIALS_7 0
#endif

/* Where SUNDIALS' error messages go: into status->message instead of being printed. The
   integrators step in tau = t - t0 (see sl_cvodes.c), so the times SUNDIALS prints are
   shown as t0 + tau, with t0 read from *t0 when the message comes. */
typedef struct sl_messages {
    sl_status *status;
    const double *t0;
} sl_messages;

/* A SUNContext whose error messages go to messages. */
int sl_context_create(SUNContext *ctx, sl_messages *messages);
/* SUNDIALS 6 reports errors per integrator memory; this routes them to the sl_messages
   given as user data. */
void sl_error_handler_6(int error_code, const char *module, const char *function,
                        char *msg, void *messages);
void sl_status_set(sl_status *status, int flag, double t, const char *flag_name);
/* t as text with the fewest digits that read back as t (so t0 + 20 at t0 = 1e14 does not
   print as 1e+14). */
void sl_format_time(char *out, size_t size, double t);
/* out = kernel(t, y, params); on failure remembers in status the kernel's name, t and y
   (n values, into status->kernel_y), so that the error can name the kernel and Python can
   find the failing equations by evaluating it again. */
int sl_call_kernel(sl_status *status, int64_t n, sl_kernel kernel, const char *name, double t,
                   const double *y, const double *params, double *out);

/* A matrix and linear solver of the chosen kind for the pattern (colptr, rows). */
int sl_linear_solver_create(const sl_options *options, int64_t n, const int64_t *colptr,
                            N_Vector template_vector, SUNContext ctx, SUNMatrix *matrix,
                            SUNLinearSolver *solver);

/* A = scale * M where M has the CSC pattern (colptr, rows) and entry k of M is
   values[perm[k]] (perm may be NULL: identity). Works for dense, band and sparse A. */
int sl_matrix_fill(SUNMatrix A, int64_t n_cols, const int64_t *colptr, const int64_t *rows,
                   const int64_t *perm, const double *values, double scale);

/* out = scale * M v and out = scale * M^T v for M in CSC form (n_cols columns). */
void sl_csc_matvec(int64_t n_rows, int64_t n_cols, const int64_t *colptr,
                   const int64_t *rows, const double *values, const double *v,
                   double scale, double *out);
void sl_csc_rmatvec(int64_t n_cols, const int64_t *colptr, const int64_t *rows,
                    const double *values, const double *v, double scale, double *out);

/* Integrates an adjoint's backward problem from t_start to t_end < t_start. */
typedef int (*sl_backward_interval)(void *solver, double t_start, double t_end);

/* The backward sweep of an adjoint: from tvals[n_t-1] back to t0, with lambda (n entries)
   -= grads[i] / scale at tvals[i]. Stops only at output times whose grads row is nonzero,
   since integrating through the others is exact. Returns the first nonzero flag of
   integrate. */
int sl_adjoint_sweep(void *solver, sl_backward_interval integrate, int64_t n, double *lambda,
                     double t0, int64_t n_t, const double *tvals, const double *grads,
                     double scale);

/* The power of two 2^e with max |grads| in [2^(e-1), 2^e) (1 if all are 0; 2^1023 at
   most, so it is finite). The adjoint is linear in grads, so a backward solve for
   grads / scale, whose results are multiplied by scale, is the same solve with absolute
   tolerances relative to the size of grads: the gradient's relative accuracy does not
   depend on the scale of the loss. Dividing and multiplying by a power of two is exact. */
double sl_grads_scale(int64_t count, const double *grads);

/* out[k] *= scale for k < count; if a product overflows, sets status (flag SL_OVERFLOW)
   and returns SL_OVERFLOW instead of leaving an infinite gradient. */
enum { SL_OVERFLOW = -9004 };
int sl_scale_gradient(sl_status *status, double t, double scale, int64_t count, double *out);

/* CVODES' and IDAS' polynomial interpolation of the forward solution at a time in a
   checkpoint interval uses order + 1 stored steps of that interval. In a last interval
   with fewer steps it takes the missing ones from whatever an earlier interval or an
   earlier solve left in its storage, and the gradient is silently wrong (4e-3 relative on
   Lotka-Volterra). So the forward solve goes on past the last output time while this says
   its last interval (after n_steps steps, checkpoint_steps per interval) is too short for
   max_order, at most max_order more steps. */
int sl_last_interval_too_short(long n_steps, int64_t checkpoint_steps, int max_order);
/* The status when tstop stops those extra steps. */
int sl_status_tstop_blocks_polynomial(sl_status *status, int flag, const char *flag_name,
                                      double t, double tstop);

#endif
