/* Types shared by the C layer and Python (this file is also given to cffi's cdef,
   so it holds no preprocessor directives). */

/* A compiled model kernel: writes out = k(t, y, p). Returns 0 on success, >0 for a
   recoverable failure (a non-finite value), <0 for a fatal one. */
typedef int (*sl_kernel)(double t, const double *y, const double *p, double *out);

/* The model as the solvers see it. Sparsity patterns are CSC: column j holds the entries
   colptr[j] .. colptr[j+1]-1, whose rows are rows[k]. The kernel `jac` writes the values
   of df/dy in that order; `dfdp` those of df/dp (columns: derivative params).
   `jact_*` is the pattern of J^T, with jact_perm[k] the index in J's values of the k-th
   entry of J^T. stop_times: n_stop_times sorted times where f may be
   discontinuous (an input's knots; nothing jumps), where the one-step adjoints' backward
   sweeps restart (sl_schedule_backward_stops), NULL/0 for none. All arrays are owned by the
   caller and must outlive the solver. */
typedef struct sl_problem {
    int64_t n_states;
    int64_t n_dparams;
    double *params;
    sl_kernel rhs;
    sl_kernel jac;
    sl_kernel dfdp;
    const int64_t *jac_colptr;
    const int64_t *jac_rows;
    const int64_t *jact_colptr;
    const int64_t *jact_rows;
    const int64_t *jact_perm;
    const int64_t *dfdp_colptr;
    const int64_t *dfdp_rows;
    int64_t n_stop_times;
    const double *stop_times;
    /* State-dependent events (csrc/sl_events.h; 0/NULL: none): event_g writes the
       n_events root functions g_i(t, y); event i's reset sets the states
       event_reset_state[k] to h_k(t, y) for k in event_reset_ptr[i] .. event_reset_ptr[i+1]-1
       (the others keep their values), event_h writing every h_k; event_g_jac and
       event_h_jac write the derivatives of each of those values as [d/dt, d/dy (n_states),
       d/d(derivative params) (n_dparams)], row-major (event_h_jac may be NULL without
       sensitivities or an adjoint). event_direction[i]: 1 a rising crossing, -1 a falling
       one, 0 both. A solve fails after max_events events. */
    int64_t n_events;
    const int64_t *event_direction;
    const int64_t *event_reset_ptr;
    const int64_t *event_reset_state;
    sl_kernel event_g;
    sl_kernel event_g_jac;
    sl_kernel event_h;
    sl_kernel event_h_jac;
    int64_t max_events;
} sl_problem;

/* Scheduled doses of one solve (NONMEM's records): dose k at time[k] (non-decreasing) into
   the flat state index state[k]: with rate[k] == 0 a bolus, y[state] += amount[k] at
   time[k]; with rate[k] > 0 a zero-order infusion, rate[k] added to dy[state]/dt on
   [time[k], time[k] + amount[k] / rate[k]). An output at a dose time is the state just
   before that dose. The arrays are the caller's. */
typedef struct sl_doses {
    int64_t n;
    const double *time;
    const double *amount;
    const double *rate;
    const int64_t *state;
} sl_doses;

/* SL_BDF, SL_ADAMS: CVODES' multistep methods; SL_ERK, SL_DIRK: ARKODE's explicit and
   diagonally implicit Runge-Kutta methods; SL_AUTO: ERK, or BDF where ERK fails (sl_auto.h). */
enum sl_method { SL_BDF = 0, SL_ADAMS = 1, SL_ERK = 2, SL_DIRK = 3, SL_AUTO = 4 };
/* The Butcher table of SL_ERK: SL_ERK_DEFAULT is Tsitouras 5(4) where SUNDIALS has it (7.4
   on), else Dormand-Prince 5(4); SL_VERNER6 .. SL_VERNER9 are Verner's pairs of orders
   6(5) .. 9(8) (see sl_arkode_has_erk_table). */
enum sl_erk_table { SL_ERK_DEFAULT = 0, SL_DORMAND_PRINCE = 1, SL_TSITOURAS = 2,
                    SL_VERNER6 = 3, SL_VERNER7 = 4, SL_VERNER8 = 5, SL_VERNER9 = 6 };
enum sl_linear_solver { SL_DENSE = 0, SL_BAND = 1, SL_SPARSE = 2, SL_SPGMR = 3 };
enum sl_sens_mode { SL_SENS_NONE = 0, SL_SENS_SIMULTANEOUS = 1, SL_SENS_STAGGERED = 2 };
enum sl_interpolation { SL_HERMITE = 0, SL_POLYNOMIAL = 1 };

/* Options of one integration direction. atol has n_states entries (n_dparams for the
   quadrature). A tstop that is NaN means none. constraints: NULL, or n_states values in
   SUNDIALS' convention (0 none, 1 y >= 0, 2 y > 0, -1 y <= 0, -2 y < 0), forward CVODES
   only. erk_table: an sl_erk_table, for SL_ERK. */
typedef struct sl_options {
    int method;
    int linear_solver;
    int64_t upper_bandwidth;
    int64_t lower_bandwidth;
    double rtol;
    const double *atol;
    int64_t max_steps;
    double max_step; /* the largest step size the forward method may take (0: no bound) */
    double tstop;
    const double *constraints;
    int erk_table;
} sl_options;

/* Options of the forward sensitivities: n_sens sensitivities, the first n_dparams of
   which belong to the derivative params (they get the df/dp source term). With n_doses > 0
   the last 3 n_doses are those wrt the inputs of the solve's n_doses doses (it must have
   that many): dose d's time, amount and rate, rows n_sens - 3 (n_doses - d) + 0, 1, 2. */
typedef struct sl_sens_options {
    int mode;
    int64_t n_sens;
    int errcon;
    int64_t n_doses;
} sl_sens_options;

/* Options of the adjoint: checkpoints, and the backward and quadrature problems. */
typedef struct sl_adjoint_options {
    int64_t checkpoint_steps;
    int interpolation;
    sl_options backward;
    double rtol_quad;
    double atol_quad;
    int quad_errcon;
} sl_adjoint_options;

/* Why the last call failed: the SUNDIALS flag, its name, the time reached and the last
   message SUNDIALS reported; and the last kernel that failed (returned nonzero, e.g. for
   a non-finite value) during the call ("" if none), with the time and the state it got
   (kernel_y: n_states values owned by the solver). */
typedef struct sl_status {
    int flag;
    double t;
    char flag_name[64];
    char message[512];
    char kernel[16];
    double kernel_t;
    double *kernel_y;
} sl_status;

/* Work counters of the last forward solve (without the forward steps a backward solve
   recomputes from checkpoints) and of the last backward solve (summed over its output
   intervals). The sens_ failures are the sensitivities' own, which SUNDIALS counts apart
   when it corrects them apart: sens_mode="staggered", and on IDAS also with sensitivity
   error control (simultaneous ones are among the states'). */
typedef struct sl_stats {
    long steps;
    long rhs_evals;
    long jac_evals;
    long error_test_fails;
    long nonlinear_conv_fails;
    long sens_error_test_fails;
    long sens_nonlinear_conv_fails;
    long steps_backward;
    long rhs_evals_backward;
    long error_test_fails_backward;
} sl_stats;
