/* IDAS: DAE solves F(t, y, y', p) = 0 with forward sensitivities and adjoints (cdef-able,
   see sl_common.h: no preprocessor directives here). */

/* A DAE as the IDAS layer sees it. Every kernel takes the concatenation [y, y'] (2 n
   values) as its `y` argument. Sparsity patterns are CSC as in sl_problem:
   - jy_*: dF/dy, values from jac_y; jyp_*: dF/dy', values from jac_yp and (when dF/dy'
     changes along the solution) from jac_yp_dot = d/dt dF/dy' (NULL: dF/dy' is constant);
   - jac_*: the union P of both patterns, with jy_map[k] / jyp_map[k] the position in P
     of entry k of dF/dy / dF/dy'; jact_* the pattern of P^T (jact_perm as in sl_problem);
   - dfdp_*: dF/d(derivative params), values from dfdp.
   id[j] is 1 for a differential state (some y'_j occurs in F), 0 for an algebraic one;
   equation_id[i] is 1 if equation i contains some y', else 0 (an algebraic equation).
   jac_yp_identity says dF/dy' is the identity on the differential states, equation i
   belonging to state i (the semi-explicit form). Arrays must outlive the solver. */
typedef struct sl_dae_problem {
    int64_t n_states;
    int64_t n_dparams;
    double *params;
    sl_kernel res;
    sl_kernel jac_y;
    sl_kernel jac_yp;
    sl_kernel jac_yp_dot;
    sl_kernel dfdp;
    const int64_t *jy_colptr;
    const int64_t *jy_rows;
    const int64_t *jyp_colptr;
    const int64_t *jyp_rows;
    const int64_t *jac_colptr;
    const int64_t *jac_rows;
    const int64_t *jy_map;
    const int64_t *jyp_map;
    const int64_t *jact_colptr;
    const int64_t *jact_rows;
    const int64_t *jact_perm;
    const int64_t *dfdp_colptr;
    const int64_t *dfdp_rows;
    const double *id;
    const double *equation_id;
    int jac_yp_identity;
} sl_dae_problem;

typedef struct sl_idas sl_idas;

/* options->method is ignored (IDAS is BDF only). constraints (n_states values in
   {-2, -1, 0, 1, 2}, SUNDIALS' meaning) may be NULL, as may sens and adjoint. */
int sl_idas_create(const sl_dae_problem *problem, const sl_options *options,
                   const double *constraints, const sl_sens_options *sens,
                   const sl_adjoint_options *adjoint, sl_idas **out);
void sl_idas_free(sl_idas *solver);
const sl_status *sl_idas_status(const sl_idas *solver);
void sl_idas_stats(const sl_idas *solver, sl_stats *stats);

/* Make (y0, yp0) consistent with IDACalcIC (algebraic part of y0 and differential part of
   yp0; both are in/out: guesses in, consistent values out), then solve and write
   y_out[i, :] = y(tvals[i]) and, if yp_out is not NULL, yp_out[i, :] = y'(tvals[i]).
   With sensitivities, sens0 (n_sens, n_states) holds the differential part of s(t0) (the
   rest is made consistent) and sens_out is (n_t, n_sens, n_states). With an adjoint, the
   solve stores checkpoints and y, y' at the output times for sl_idas_backward. */
int sl_idas_solve(sl_idas *solver, double t0, double *y0, double *yp0, const double *sens0,
                  int64_t n_t, const double *tvals, double *y_out, double *yp_out,
                  double *sens_out);

/* [y, y'] (2 n_states values) of the last solve at time t, as for sl_cvodes_forward_state. */
int sl_idas_forward_state(sl_idas *solver, int backward, double t, double *yyp_out);

/* The adjoint of the last sl_idas_solve (same t0, tvals) for L with dL/dy(tvals[i]) =
   grads[i, :] (all states). lambda solves F_y^T lambda - (F_y'^T lambda)' = 0 backward;
   at each tvals[i], grads[i] = K^T x with K = dF/dy' on differential equations and dF/dy
   on algebraic ones; lambda_i -= x_i on differential equations and x_i (algebraic
   equations) contributes -x_i dF_i/dp to dL/dp. Before each backward segment, the
   algebraic part of lambda and lambda' are made consistent with the same K (no
   IDACalcICB). Writes grad_out = dL/dp (n_dparams) and lambda_out =
   F_y'(t0)^T lambda(t0) (n_states), so that dL/dy0 = -lambda_out along any consistent
   change of y0 (its algebraic entries are 0). grads are scaled as in sl_cvodes_backward. */
int sl_idas_backward(sl_idas *solver, double t0, int64_t n_t, const double *tvals,
                     const double *grads, double *grad_out, double *lambda_out);
