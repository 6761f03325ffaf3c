/* The y' consistent with F(t, y, y') = 0 at a consistent y of an index-1 DAE, for the time
   derivatives in dL/dt0 and dL/dtvals (the pool's, and DAEAdjointSolver.gradients through
   cffi). cdef-able: include after sl_common.h, sl_idas.h and sl_pool.h.

   Newton steps on the differential equations (those with equation_id != 0) for the
   differential y' (id != 0), from a guess; then the algebraic y' from the time derivative
   of the algebraic equations, F_z,y y' + F_z,t = 0 (index 1: F_z,z is nonsingular on the
   algebraic states). */

/* SL_DERIVATIVE_FAIL: the time derivative y'(t) could not be computed (a kernel gave
   non-finite values, or the matrix that determines y' is singular). */
enum { SL_DERIVATIVE_FAIL = -9004 };

typedef struct sl_dae_yp sl_dae_yp;

/* Work space for dae (copied; the kernels read its problem's params pointer at each
   call). Returns 0 or SL_MEM_FAIL (then *out may be non-NULL: free it). */
int sl_dae_yp_create(const sl_pool_dae *dae, sl_dae_yp **out);
/* out = y'(t) at y from the guess yp_guess (n_states values each; out may be yp_guess).
   Returns 0 or SL_DERIVATIVE_FAIL. */
int sl_dae_yp_solve(sl_dae_yp *w, double t, const double *y, const double *yp_guess,
                    double *out);
void sl_dae_yp_free(sl_dae_yp *w);
