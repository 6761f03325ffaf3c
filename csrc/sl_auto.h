/* solver="auto" (options->method == SL_AUTO): each solve first by ARKODE's explicit method
   (sl_arkode.h) within a budget of SL_AUTO_ERK_STEPS steps, and, if that fails (a stiff
   problem holds an explicit method's steps small, or anything else), again from t0 by
   CVODES' BDF (sl_cvodes.h), both with the doses. Nothing of one solve decides the next:
   every solve tries the explicit method first, so results depend on the inputs only. An
   adjoint's backward problem (backward.method SL_AUTO) is integrated by
   sl_auto_backward_method of the method that ran, or by the one-step method
   backward.method names (SL_ERK, SL_DIRK) after either.
   The calls are those of sl_cvodes.h (cdef-able, see sl_common.h). */
typedef struct sl_auto sl_auto;

/* The backward method that SL_AUTO means after a forward solve by `forward` (an sl_method):
   the one-step method of a one-step forward solve (ERK, DIRK, over its recorded steps);
   after BDF or ADAMS, DIRK over the recorded steps (on POLLU, Fisher-KPP, HIRES and
   Robertson 0.2-0.4x the time of CVODES' BDF backward, README "Which gradient method
   when"), except through unpreconditioned GMRES (linear_solver SL_SPGMR: 2-3x slower than
   BDF on POLLU) or without the quadrature in the error test (quad_errcon 0, which DIRK
   needs), where it is `forward` itself (CVODES' adjoint with checkpoints). */
int sl_auto_backward_method(int forward, int linear_solver, int quad_errcon);

/* The explicit attempt's budget. A stiff problem is caught early, as its projection
   (sl_arkode_set_step_budget) fails after 50 steps: Robertson, HIRES and POLLU at rtol
   1e-8 took 1.03-1.06x the BDF solve's time. Non-stiff ones fit: Lotka-Volterra takes 147
   steps at rtol = 1e-8, 941 at 1e-12. */
enum { SL_AUTO_ERK_STEPS = 5000 };

int sl_auto_create(const sl_problem *problem, const sl_options *options,
                   const sl_sens_options *sens, const sl_adjoint_options *adjoint,
                   sl_auto **out);
void sl_auto_free(sl_auto *solver);
const sl_status *sl_auto_status(const sl_auto *solver);
/* The counters of the method that produced the last solve's result (ERK's wasted attempt
   before BDF is not counted). */
void sl_auto_stats(const sl_auto *solver, sl_stats *stats);
/* SL_ERK or SL_BDF: the method of the last forward solve (SL_ERK before any). */
int sl_auto_method(const sl_auto *solver);
int sl_auto_solve(sl_auto *solver, double t0, const double *y0, const double *sens0,
                  int64_t n_t, const double *tvals, double *y_out, double *sens_out);
/* sl_auto_solve with doses (NULL or none: sl_auto_solve), as sl_cvodes_solve_doses. */
int sl_auto_solve_doses(sl_auto *solver, double t0, const double *y0, const double *sens0,
                        int64_t n_t, const double *tvals, const sl_doses *doses,
                        double *y_out, double *sens_out);
/* sl_cvodes_add_infusions of the last solve. */
void sl_auto_add_infusions(const sl_auto *solver, double t, int after, double *out);
int sl_auto_forward_state(sl_auto *solver, int backward, double t, double *y_out);
int sl_auto_backward(sl_auto *solver, double t0, int64_t n_t, const double *tvals,
                     const double *grads, double *grad_out, double *lambda_out);
/* sl_auto_backward, with the doses' derivatives of sl_cvodes_backward_doses after
   sl_auto_solve_doses (NULL: not wanted; none without doses). */
int sl_auto_backward_doses(sl_auto *solver, double t0, int64_t n_t, const double *tvals,
                           const double *grads, double *grad_out, double *lambda_out,
                           double *dose_time, double *dose_amount, double *dose_rate);
