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
/* sl_status_set with a message of ours (printf's format); returns flag. */
int sl_report(sl_status *status, int flag, double t, const char *flag_name,
              const char *format, ...);
/* t as text with the fewest digits that read back as t (so t0 + 20 at t0 = 1e14 does not
   print as 1e+14). */
void sl_format_time(char *out, size_t size, double t);
/* out = kernel(t, y, params); on failure remembers in status the kernel's name, t and y
   (n values, into status->kernel_y), so that the error can name the kernel and Python can
   find the failing equations by evaluating it again. */
int sl_call_kernel(sl_status *status, int64_t n, sl_kernel kernel, const char *name, double t,
                   const double *y, const double *params, double *out);

/* A serial vector of n values (copied from values, or zeros if it is NULL); NULL when out
   of memory. */
N_Vector sl_new_vector(SUNContext ctx, int64_t n, const double *values);

/* count vectors like template_vector, all zeros; NULL when out of memory. */
N_Vector *sl_new_vectors(N_Vector template_vector, int64_t count);
/* vectors[k] = values[k * n ..] for k < count, and back. */
void sl_vectors_load(N_Vector *vectors, int64_t count, int64_t n, const double *values);
void sl_vectors_store(N_Vector *vectors, int64_t count, int64_t n, double *values);

/* The options with the band widths swapped: those of a transposed matrix. */
sl_options sl_transposed(const sl_options *options);

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

/* Called by sl_scheduled_sweep at stop k of its stops, before the jump of lambda at an
   output at the same time. */
typedef int (*sl_at_stop)(void *solver, int64_t k);

/* sl_adjoint_sweep that also stops at n_stops increasing times stops[k] in [t0,
   tvals[n_t-1]], calling at_stop there. */
int sl_scheduled_sweep(void *solver, sl_backward_interval integrate, sl_at_stop at_stop,
                       int64_t n_stops, const double *stops, int64_t n, double *lambda,
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

/* -- What the CVODES and IDAS layers share ----------------------------------------------
   Both solvers hold an sl_core, and the functions below reach CVODES or IDAS through the
   solver's sl_calls: the calls whose C signatures the two have in common. */

typedef struct sl_calls {
    int mem_fail, err_failure, tstop_return, no_forward, normal; /* CV_* or IDA_* */
    const char *err_failure_name, *tstop_return_name, *no_forward_name;
    char *(*flag_name)(long flag);
    void (*free)(void **mem);
    int (*current_time)(void *mem, double *t);
    int (*current_step)(void *mem, double *h);
    int (*num_steps)(void *mem, long *count);
    int (*num_rhs_evals)(void *mem, long *count); /* IDAS: residual evaluations */
    int (*num_jac_evals)(void *mem, long *count);
    int (*num_error_test_fails)(void *mem, long *count);
    int (*num_nonlinear_conv_fails)(void *mem, long *count);
    int (*num_sens_error_test_fails)(void *mem, long *count);
    int (*num_sens_nonlinear_conv_fails)(void *mem, long *count);
    int (*set_user_data)(void *mem, void *data);
    int (*sv_tolerances)(void *mem, double rtol, N_Vector atol);
    int (*set_max_num_steps)(void *mem, long count);
    int (*set_max_step)(void *mem, double step);
    int (*set_constraints)(void *mem, N_Vector constraints);
    int (*set_linear_solver)(void *mem, SUNLinearSolver solver, SUNMatrix matrix);
    int (*set_init_step)(void *mem, double h);
    int (*set_stop_time)(void *mem, double tstop);
    int (*sens_ee_tolerances)(void *mem);
    int (*set_sens_err_con)(void *mem, int errcon);
    void *(*backward_mem)(void *mem, int which);
    int (*set_user_data_b)(void *mem, int which, void *data);
    int (*sv_tolerances_b)(void *mem, int which, double rtol, N_Vector atol);
    int (*set_max_num_steps_b)(void *mem, int which, long count);
    int (*set_linear_solver_b)(void *mem, int which, SUNLinearSolver solver, SUNMatrix matrix);
    int (*quad_ss_tolerances_b)(void *mem, int which, double rtol, double atol);
    int (*set_quad_err_con_b)(void *mem, int which, int errcon);
    int (*quad_reinit_b)(void *mem, int which, N_Vector q);
    int (*solve_b)(void *mem, double tout, int task);
    int (*get_quad_b)(void *mem, int which, double *t, N_Vector q);
} sl_calls;

/* What a CVODES or IDAS solver holds that the shared code uses. The integrator steps in
   tau = t - t0 (t0 of the last solve; see sl_cvodes.c); everything in status is in t. */
typedef struct sl_core {
    const sl_calls *calls;
    void *mem;
    SUNContext ctx;
    sl_status status;
    sl_messages messages; /* SUNDIALS' messages, into status */
    double t0;
    /* NaN: none. SUNDIALS disables a stop time once reached: set per solve. tstop is the
       current solve's (see sl_begin_forward), tstop_given the option's. */
    double tstop, tstop_given;
    int64_t max_steps;
    N_Vector atol, constraints;
    SUNMatrix matrix;
    SUNLinearSolver linear_solver;
    /* The adjoint's backward problem (which: its index), lambda in yB, the quadrature
       (dL/dp) in qB. */
    sl_adjoint_options adjoint;
    int has_adjoint, has_quad, backward_created, which;
    int has_sens; /* forward sensitivities: the solver's has_sens */
    N_Vector yB, qB, atolB;
    SUNMatrix matrixB;
    SUNLinearSolver linear_solverB;
    /* The forward solve an adjoint belongs to; its counters as it left them (a backward
       solve recomputes forward steps from checkpoints, which SUNDIALS counts too), and
       the backward ones summed over the intervals of the last backward solve (a backward
       re-initialisation resets SUNDIALS'). */
    int forward_valid;
    double forward_t0, forward_tlast;
    int64_t forward_nt;
    sl_stats forward_stats, backward_stats;
    /* The forward counters summed over the restarts (re-initialisations at doses) of
       the current solve, which reset SUNDIALS' counters. */
    sl_stats restarted_stats;
} sl_core;

/* Sets up c for options and adjoint (may be NULL) with a new SUNContext; the solver then
   creates c->mem. Returns 0 or calls->mem_fail. */
int sl_core_init(sl_core *c, const sl_calls *calls, const sl_options *options,
                 const sl_adjoint_options *adjoint, int64_t n_dparams);
/* The backward problem's vectors: lambda (n), its atol (from c->adjoint) and the
   quadrature (n_dparams, at least 1). */
int sl_core_adjoint_vectors(sl_core *c, int64_t n, int64_t n_dparams);
/* Frees what c holds, the context last: free the solver's own SUNDIALS objects first. */
void sl_core_free(sl_core *c);
/* Records flag (and the time the integrator memory mem has reached, if mem is not NULL)
   in status; returns flag. */
int sl_fail(sl_core *c, void *mem, int flag);
/* SUNDIALS can report success at an output time it never reached, when the step size has
   underflowed to zero (e.g. the solution ran into a singularity of f): an error here. */
int sl_check_reached(sl_core *c, double tout);

/* The settings of the forward or the backward problem that are the solver's own, once its
   linear solver is attached: its Jacobian functions (those that fill the matrix if there
   is one, c->matrix or c->matrixB, else the Jacobian-times-vector ones) and whatever only
   that integrator has. Returns the SUNDIALS flag. */
typedef int (*sl_configure_own)(void *solver);

/* The forward problem's user data (the solver), tolerances (atol: n values), max_steps,
   constraints (n values or NULL) and linear solver for the Jacobian pattern jac_colptr. */
int sl_configure_forward(sl_core *c, void *solver, const sl_options *options,
                         const double *constraints, int64_t n, const int64_t *jac_colptr,
                         N_Vector template_vector, sl_configure_own configure_own);
/* The sensitivities' tolerances (estimated from the states') and error control. */
int sl_configure_sensitivities(sl_core *c, int errcon);
/* The backward problem c->which, once created and initialised (with its quadrature if
   c->has_quad): user data, tolerances, max_steps, the linear solver of the backward options
   for the transposed pattern jact_colptr, and the quadrature's tolerances. */
int sl_configure_backward(sl_core *c, void *solver, int64_t n, const int64_t *jact_colptr,
                          sl_configure_own configure_own);

/* Starts a forward solve from t0, before the solver re-initialises SUNDIALS: the previous
   solve's results are invalid, the messages cleared and the initial step size estimated
   again (a backward solve recomputing from the first checkpoint leaves the previous first
   step as a fixed initial step). With constraints, the solve stops at its last output
   time t_last (see sl_internal.c). */
int sl_begin_forward(sl_core *c, double t0, double t_last);
/* Before re-initialising the forward problem within a solve: keeps its counters. */
void sl_count_restart(sl_core *c);
/* After the re-initialisation: sets tstop again (in tau). */
int sl_rearm_tstop(sl_core *c);
/* Ends a forward solve over tvals that returned flag: reads the forward counters into
   c->forward_stats and, if flag is 0, lets an adjoint use the solve. Returns flag. */
int sl_end_forward(sl_core *c, int flag, int64_t n_t, const double *tvals);
/* The forward counters and the backward ones, as sl_cvodes_stats describes. */
void sl_core_stats(const sl_core *c, sl_stats *stats);

/* One step of the forward problem (with checkpoints) towards tout, in tau; returns its flag. */
typedef int (*sl_one_step)(void *solver, double tout, double *tret);
/* CVODES' and IDAS' polynomial interpolation of the forward solution at a time in a
   checkpoint interval uses order + 1 stored steps of that interval. In a last interval
   with fewer steps it takes the missing ones from whatever an earlier interval or an
   earlier solve left in its storage, and the gradient is silently wrong (4e-3 relative on
   Lotka-Volterra). So the forward solve goes on past the last output time t_last, at most
   max_order steps, until its last interval is long enough; a tstop in the way is an error.
   (The first one-step call after a normal-mode return only returns the step already
   taken past the output time: this counts steps, not calls.) */
int sl_complete_last_interval(sl_core *c, double t_last, int max_order, sl_one_step step,
                              void *solver);

/* Starts a backward solve: it needs the preceding forward solve with this t0 and tvals
   (returns calls->no_forward otherwise). Clears messages and the backward counters. */
int sl_begin_backward(sl_core *c, double t0, int64_t n_t, const double *tvals);
/* After the backward problem is re-initialised at its start: restarts the quadrature
   from c->qB. */
int sl_restart_quadrature(sl_core *c);
/* Integrates the backward problem to t_end, adding its counters to c->backward_stats. */
int sl_solve_backward(sl_core *c, double t_end);
/* After sl_solve_backward: the quadrature at t_end into c->qB. */
int sl_read_quadrature(sl_core *c);

#endif
