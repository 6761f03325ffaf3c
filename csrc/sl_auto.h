/* solver="auto" (options->method == SL_AUTO): each solve first by ARKODE's explicit method
   (sl_arkode.h) within a budget of SL_AUTO_ERK_STEPS steps, and, if that fails (a stiff
   problem holds an explicit method's steps small, or anything else), again from t0 by
   CVODES' BDF (sl_cvodes.h). Nothing of one solve decides the next: every solve tries the
   explicit method first, so results depend on the inputs only. An adjoint's backward
   problem is integrated by the method of its forward solve (backward.method SL_AUTO): ERK
   after ERK (over the recorded steps), BDF after BDF (CVODES' checkpoints); or by the
   one-step method backward.method names (SL_ERK, SL_DIRK) after either. The calls are those of
   sl_cvodes.h (cdef-able, see sl_common.h). */
typedef struct sl_auto sl_auto;

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
int sl_auto_forward_state(sl_auto *solver, int backward, double t, double *y_out);
int sl_auto_backward(sl_auto *solver, double t0, int64_t n_t, const double *tvals,
                     const double *grads, double *grad_out, double *lambda_out);
