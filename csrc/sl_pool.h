/* A thread-safe pool of solvers of one model, for the PyTensor Ops (cdef-able): CVODES or
   ARKODE (options->method SL_ERK) solvers of an ODE, or IDAS solvers of a DAE.

   Several threads (nutpie's chains, a threaded PyTensor function) may call the same
   compiled Op at once, and a solver cannot be shared between them. The pool hands each
   call a free solver, creating one when all are busy, so it holds at most as many solvers
   as calls ever ran at the same time. Each solver remembers the inputs of its last forward
   solve, so a gradient call with the same inputs reuses that solve's checkpoints instead
   of solving forward again. All calls validate their inputs: a non-finite or unordered
   input returns SL_BAD_INPUT without touching SUNDIALS. No call raises or prints, except
   sl_pool_report_once.

   y'(t) below is f(t, y) for an ODE and, for a DAE, the y' consistent with F(t, y, y') = 0
   at the solution's y. The free initial states x0 are all of y0 for an ODE and its
   differential part for a DAE (IDACalcIC computes the algebraic part, for which y0 holds
   initial guesses only). */
typedef struct sl_pool sl_pool;

/* SL_BAD_INPUT: a non-finite or unordered input; SL_MEM_FAIL: out of memory. */
enum { SL_BAD_INPUT = -9001, SL_MEM_FAIL = -9003 };

/* A pool for problem (whose params pointer is ignored: each solver has its own copy of
   the n_params params), with dparam_index[k] the index in params of derivative param k.
   sens (forward sensitivities, of the derivative params then x0) or adjoint may be NULL.
   Everything passed is copied. */
int sl_pool_create(const sl_problem *problem, int64_t n_params, const int64_t *dparam_index,
                   const sl_options *options, const sl_sens_options *sens,
                   const sl_adjoint_options *adjoint, sl_pool **out);

/* A DAE for the pool: the IDAS problem, its dF/dt (n_states values) and the number of
   Newton steps that make y' consistent (1 when F is linear in y'). Constraints, if any,
   are options->constraints. */
typedef struct sl_pool_dae {
    sl_dae_problem problem;
    sl_kernel dfdt;
    int64_t yp_newton_steps;
} sl_pool_dae;
int sl_pool_create_dae(const sl_pool_dae *dae, int64_t n_params, const int64_t *dparam_index,
                       const sl_options *options, const sl_sens_options *sens,
                       const sl_adjoint_options *adjoint, sl_pool **out);
void sl_pool_free(sl_pool *pool);

/* y_out[i, :] = y(tvals[i]), y(t0) = y0, with doses (sl_common.h; NULL or n = 0: none;
   an ODE on CVODES only, and for an adjoint pool with a Runge-Kutta backward: else
   SL_BAD_INPUT). With sensitivities (any of the three may be NULL): sens_out
   (n_t, n_sens, n_states) with sens_out[i, k, :] = dy(tvals[i])/dtheta_k,
   theta = (derivative params, x0, with sensitivities wrt doses each dose's time, amount
   and rate: sl_sens_options); dydt0_out[i, :] = dy(tvals[i])/dt0 = -S_x0(tvals[i]) x'(t0);
   fy_out[i, :] = dy(tvals[i])/dtvals[i] = y'(tvals[i]) (with the infusions on just before).
   On failure, the reason is written to status (if not NULL). */
int sl_pool_solve_doses(sl_pool *pool, double t0, const double *y0, const double *params,
                        int64_t n_t, const double *tvals, const sl_doses *doses, double *y_out,
                        double *sens_out, double *dydt0_out, double *fy_out, sl_status *status);
/* sl_pool_solve_doses without doses. */
int sl_pool_solve(sl_pool *pool, double t0, const double *y0, const double *params,
                  int64_t n_t, const double *tvals, double *y_out, double *sens_out,
                  double *dydt0_out, double *fy_out, sl_status *status);

/* Vector-Jacobian product of the solve with the same inputs, for grads[i, :] = dL/dy(tvals[i]):
   dy0 = dL/dy0 (0 on a DAE's algebraic states), dparams = dL/dparams (n_params; NaN for
   params that are not derivative params), dt0 = dL/dt0 = -dy0 . y'(t0) and
   dtvals[i] = grads[i] . y'(tvals[i]) (dt0 and dtvals may both be NULL: not computed),
   and with doses dL/d(time, amount, rate) of each into dose_time, dose_amount, dose_rate
   (doses->n each, any may be NULL; see sl_cvodes_backward_doses).
   Reuses a matching forward solve (same inputs and doses) when a free solver holds one
   (needs an adjoint pool). */
int sl_pool_gradient_doses(sl_pool *pool, double t0, const double *y0, const double *params,
                           int64_t n_t, const double *tvals, const sl_doses *doses,
                           const double *grads, double *dy0, double *dparams, double *dt0,
                           double *dtvals, double *dose_time, double *dose_amount,
                           double *dose_rate, sl_status *status);
/* sl_pool_gradient_doses without doses. */
int sl_pool_gradient(sl_pool *pool, double t0, const double *y0, const double *params,
                     int64_t n_t, const double *tvals, const double *grads, double *dy0,
                     double *dparams, double *dt0, double *dtvals, sl_status *status);

/* Also count failures in *counter (NULL: no more), by atomic adds: 8 bytes that other
   processes map too, so that failures in worker processes reach the parent's count. */
void sl_pool_share_failures(sl_pool *pool, int64_t *counter);
/* *counter += n, atomically (for counts shared between processes). */
void sl_counter_add(int64_t *counter, int64_t n);
/* The number of forward solves run (gradients that reuse one run none). */
int64_t sl_pool_forward_solves(sl_pool *pool);
/* Prints the first failure to stderr once per pool (for compiled code, which cannot warn). */
void sl_pool_report_once(sl_pool *pool);

/* A process-wide table key -> pool, so compiled code finds its pool by a key that is the
   same in every process (a pointer baked into cached machine code would not be). */
int sl_registry_set(int64_t key, sl_pool *pool);
sl_pool *sl_registry_get(int64_t key);
