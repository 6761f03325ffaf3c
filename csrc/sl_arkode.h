/* ARKODE's one-step methods: the explicit Runge-Kutta method (ERKStep, options->method ==
   SL_ERK, options->erk_table) and an L-stable ESDIRK with Newton's method (ARKStep, SL_DIRK,
   options->linear_solver): forward solves, forward sensitivities and adjoints, with the
   calls of sl_cvodes.h (cdef-able, see sl_common.h). Outputs come from ARKODE's dense
   output: the integrator does not stop at output times (except with Verner's tables).
   Forward sensitivities are integrated with the states as one system (y, S); an adjoint
   records every forward step and integrates its backward problem by the one-step method
   options->backward.method (SL_ERK or SL_DIRK, sl_rk_adjoint.h). */
typedef struct sl_arkode sl_arkode;

/* Whether this SUNDIALS has the explicit method's table (an sl_erk_table). */
int sl_arkode_has_erk_table(int table);

/* sens may be NULL (no forward sensitivities); adjoint may be NULL (no adjoint). */
int sl_arkode_create(const sl_problem *problem, const sl_options *options,
                     const sl_sens_options *sens, const sl_adjoint_options *adjoint,
                     sl_arkode **out);
void sl_arkode_free(sl_arkode *solver);
const sl_status *sl_arkode_status(const sl_arkode *solver);
/* At most steps steps per solve (0, the default: no limit), else ARK_TOO_MUCH_WORK; also
   as soon as, after 50 steps, the current step size would need more steps than are left
   to reach the last output time. */
void sl_arkode_set_step_budget(sl_arkode *solver, int64_t steps);
void sl_arkode_stats(const sl_arkode *solver, sl_stats *stats);

/* As sl_cvodes_solve: y_out[i, :] = y(tvals[i]); with sensitivities sens0 is
   (n_sens, n_states) and sens_out (n_t, n_sens, n_states); with an adjoint the forward
   steps are recorded for sl_arkode_backward. */
int sl_arkode_solve(sl_arkode *solver, double t0, const double *y0, const double *sens0,
                    int64_t n_t, const double *tvals, double *y_out, double *sens_out);

/* As sl_cvodes_solve_doses: the solve stops exactly at each dose time and infusion end
   and restarts there with the state after the doses (keeping its step size); an output at
   a dose time is the state before it. doses: NULL or none, as sl_arkode_solve. */
int sl_arkode_solve_doses(sl_arkode *solver, double t0, const double *y0, const double *sens0,
                          int64_t n_t, const double *tvals, const sl_doses *doses,
                          double *y_out, double *sens_out);
/* As sl_cvodes_add_infusions. */
void sl_arkode_add_infusions(const sl_arkode *solver, double t, int after, double *out);

/* As sl_cvodes_forward_state. */
int sl_arkode_forward_state(sl_arkode *solver, int backward, double t, double *y_out);

/* As sl_cvodes_backward. */
int sl_arkode_backward(sl_arkode *solver, double t0, int64_t n_t, const double *tvals,
                       const double *grads, double *grad_out, double *lambda_out);
/* As sl_cvodes_backward_doses. */
int sl_arkode_backward_doses(sl_arkode *solver, double t0, int64_t n_t, const double *tvals,
                             const double *grads, double *grad_out, double *lambda_out,
                             double *dose_time, double *dose_amount, double *dose_rate);
