/* CVODES: forward solves, forward sensitivities and adjoints (cdef-able, see sl_common.h). */
typedef struct sl_cvodes sl_cvodes;

/* sens may be NULL (no forward sensitivities); adjoint may be NULL (no adjoint). */
int sl_cvodes_create(const sl_problem *problem, const sl_options *options,
                     const sl_sens_options *sens, const sl_adjoint_options *adjoint,
                     sl_cvodes **out);
void sl_cvodes_free(sl_cvodes *solver);
const sl_status *sl_cvodes_status(const sl_cvodes *solver);
void sl_cvodes_stats(const sl_cvodes *solver, sl_stats *stats);

/* Solve from (t0, y0) and write y_out[i, :] = y(tvals[i]) (tvals increasing, >= t0).
   With sensitivities, sens0 is (n_sens, n_states) and sens_out (n_t, n_sens, n_states).
   With an adjoint, the forward solve stores checkpoints for sl_cvodes_backward. */
int sl_cvodes_solve(sl_cvodes *solver, double t0, const double *y0, const double *sens0,
                    int64_t n_t, const double *tvals, double *y_out, double *sens_out);

/* sl_cvodes_solve with doses (sl_common.h; NULL: none), whose checks fail with
   CV_ILL_INPUT. The integrator stops at every dose time and infusion end, and starts
   again after doses (so forward sensitivities, continuous across
   them, stay exact). An adjoint with doses must be solver_backward SL_ERK or SL_DIRK. */
int sl_cvodes_solve_doses(sl_cvodes *solver, double t0, const double *y0, const double *sens0,
                          int64_t n_t, const double *tvals, const sl_doses *doses,
                          double *y_out, double *sens_out);

/* out += the rates of the last solve's infusions that are on just after t (after != 0) or
   just before it: what dy/dt adds to f(t, y) there. */
void sl_cvodes_add_infusions(const sl_cvodes *solver, double t, int after, double *out);

/* The forward solution at time t of the last solve (after a failure: the state the
   forward problem had reached, or the forward state the backward problem used at t).
   Writes n_states values; returns nonzero if it is not available. */
int sl_cvodes_forward_state(sl_cvodes *solver, int backward, double t, double *y_out);

/* Integrate the adjoint lambda' = -J^T lambda from tvals[n_t-1] back to t0, subtracting
   grads[i, :] = dL/dy(tvals[i]) at each tvals[i]. Writes grad_out = dL/dp (n_dparams)
   and lambda_out = lambda(t0) (n_states), so dL/dy0 = -lambda_out. Needs a preceding
   sl_cvodes_solve with the same t0 and tvals. Solves for grads scaled to size 1 (see
   sl_grads_scale), so the backward tolerances are relative to the size of grads; a result
   that overflows is an error (SL_OVERFLOW). */
int sl_cvodes_backward(sl_cvodes *solver, double t0, int64_t n_t, const double *tvals,
                       const double *grads, double *grad_out, double *lambda_out);

/* sl_cvodes_backward after sl_cvodes_solve_doses, also writing dL/d(time, amount, rate) of
   each dose (NULL: not wanted): for a bolus into c at tau, dL/damount = mu_c(tau+) and
   dL/dtime = mu(tau+)^T (f(tau, y-) - f(tau, y+)), dL/drate = NaN (none); for an infusion
   ending at e = tau + amount / rate, dL/dtime = rate (mu_c(e) - mu_c(tau)),
   dL/damount = mu_c(e), dL/drate = integral_tau^e mu_c dt - (amount / rate) mu_c(e), with
   mu = dL/dy(t) = -lambda the costate (0 after tvals[-1]). At a time shared with an output
   these are the derivatives of moving the dose later. */
int sl_cvodes_backward_doses(sl_cvodes *solver, double t0, int64_t n_t, const double *tvals,
                             const double *grads, double *grad_out, double *lambda_out,
                             double *dose_time, double *dose_amount, double *dose_rate);
