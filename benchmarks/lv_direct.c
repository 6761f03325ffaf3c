/*
 * lv_direct.c -- reference ("peer") timing of a Lotka-Volterra forward solve
 * done by calling SUNDIALS CVODES directly from C.
 *
 * Problem (must match the Python benchmarks):
 *   d hares/dt = alpha*hares - beta*hares*lynx
 *   d lynx/dt  = delta*hares*lynx - gamma*lynx
 *   alpha=0.52, beta=0.026, gamma=0.84, delta=0.026, y0=(34.0, 5.9)
 *   t0=0, output times 0,1,...,20, BDF, dense linear solver with an analytic
 *   Jacobian, rtol=atol=1e-8, max 500000 steps.
 *
 * CVODES memory, matrix and linear solver are created once; each solve does
 * CVodeReInit and integrates over the output times with CV_NORMAL.
 *
 * Usage: lv_direct [n_reps]     (default 2000)
 * Output:
 *   direct_c_us_per_solve <median over 7 batches, microseconds per solve>
 *   final_state <hares> <lynx>  (state at t=20)
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <cvodes/cvodes.h>
#include <nvector/nvector_serial.h>
#include <sunmatrix/sunmatrix_dense.h>
#include <sunlinsol/sunlinsol_dense.h>
#include <sundials/sundials_config.h>

#define N_STATES 2
#define N_TIMES 21
#define N_BATCHES 7

typedef struct {
    sunrealtype alpha, beta, gamma, delta;
} Params;

static int rhs(sunrealtype t, N_Vector y, N_Vector ydot, void *user_data)
{
    const Params *p = (const Params *)user_data;
    const sunrealtype *u = N_VGetArrayPointer(y);
    sunrealtype *du = N_VGetArrayPointer(ydot);
    (void)t;
    du[0] = p->alpha * u[0] - p->beta * u[0] * u[1];
    du[1] = p->delta * u[0] * u[1] - p->gamma * u[1];
    return 0;
}

static int jac(sunrealtype t, N_Vector y, N_Vector fy, SUNMatrix J,
               void *user_data, N_Vector tmp1, N_Vector tmp2, N_Vector tmp3)
{
    const Params *p = (const Params *)user_data;
    const sunrealtype *u = N_VGetArrayPointer(y);
    (void)t; (void)fy; (void)tmp1; (void)tmp2; (void)tmp3;
    SM_ELEMENT_D(J, 0, 0) = p->alpha - p->beta * u[1];
    SM_ELEMENT_D(J, 0, 1) = -p->beta * u[0];
    SM_ELEMENT_D(J, 1, 0) = p->delta * u[1];
    SM_ELEMENT_D(J, 1, 1) = p->delta * u[0] - p->gamma;
    return 0;
}

static void check(int flag, const char *what)
{
    if (flag < 0) {
        fprintf(stderr, "lv_direct: %s failed with flag %d\n", what, flag);
        exit(1);
    }
}

static void *check_ptr(void *ptr, const char *what)
{
    if (ptr == NULL) {
        fprintf(stderr, "lv_direct: %s returned NULL\n", what);
        exit(1);
    }
    return ptr;
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One forward solve: reinit at t0 and fill out[N_TIMES][N_STATES]. */
static void solve(void *cvode_mem, N_Vector y, const sunrealtype *y0,
                  const sunrealtype *tvals, sunrealtype out[][N_STATES])
{
    sunrealtype *u = N_VGetArrayPointer(y);
    sunrealtype tret;
    int i, j;

    for (j = 0; j < N_STATES; j++) u[j] = y0[j];
    check(CVodeReInit(cvode_mem, tvals[0], y), "CVodeReInit");
    for (j = 0; j < N_STATES; j++) out[0][j] = y0[j];  /* tvals[0] == t0 */
    for (i = 1; i < N_TIMES; i++) {
        check(CVode(cvode_mem, tvals[i], y, &tret, CV_NORMAL), "CVode");
        for (j = 0; j < N_STATES; j++) out[i][j] = u[j];
    }
}

int main(int argc, char **argv)
{
    long n_reps = argc > 1 ? atol(argv[1]) : 2000;
    long per_batch, b, r;
    Params params = {0.52, 0.026, 0.84, 0.026};
    const sunrealtype y0[N_STATES] = {34.0, 5.9};
    sunrealtype tvals[N_TIMES];
    sunrealtype out[N_TIMES][N_STATES];
    double batch_us[N_BATCHES];
    SUNContext ctx;
    N_Vector y;
    SUNMatrix A;
    SUNLinearSolver LS;
    void *cvode_mem;
    int i;

    if (n_reps < N_BATCHES) n_reps = N_BATCHES;
    per_batch = n_reps / N_BATCHES;
    for (i = 0; i < N_TIMES; i++) tvals[i] = (sunrealtype)i;

#if SUNDIALS_VERSION_MAJOR >= 7
    check(SUNContext_Create(SUN_COMM_NULL, &ctx), "SUNContext_Create");
#else
    check(SUNContext_Create(NULL, &ctx), "SUNContext_Create");
#endif

    /* Set up everything once. */
    y = check_ptr(N_VNew_Serial(N_STATES, ctx), "N_VNew_Serial");
    for (i = 0; i < N_STATES; i++) NV_Ith_S(y, i) = y0[i];
    cvode_mem = check_ptr(CVodeCreate(CV_BDF, ctx), "CVodeCreate");
    check(CVodeInit(cvode_mem, rhs, tvals[0], y), "CVodeInit");
    check(CVodeSStolerances(cvode_mem, 1e-8, 1e-8), "CVodeSStolerances");
    check(CVodeSetUserData(cvode_mem, &params), "CVodeSetUserData");
    check(CVodeSetMaxNumSteps(cvode_mem, 500000), "CVodeSetMaxNumSteps");
    A = check_ptr(SUNDenseMatrix(N_STATES, N_STATES, ctx), "SUNDenseMatrix");
    LS = check_ptr(SUNLinSol_Dense(y, A, ctx), "SUNLinSol_Dense");
    check(CVodeSetLinearSolver(cvode_mem, LS, A), "CVodeSetLinearSolver");
    check(CVodeSetJacFn(cvode_mem, jac), "CVodeSetJacFn");

    solve(cvode_mem, y, y0, tvals, out);  /* warm-up */

    for (b = 0; b < N_BATCHES; b++) {
        double start = now_us();
        for (r = 0; r < per_batch; r++) solve(cvode_mem, y, y0, tvals, out);
        batch_us[b] = (now_us() - start) / per_batch;
    }
    qsort(batch_us, N_BATCHES, sizeof(double), cmp_double);

    printf("direct_c_us_per_solve %.6f\n", batch_us[N_BATCHES / 2]);
    printf("final_state %.12g %.12g\n",
           (double)out[N_TIMES - 1][0], (double)out[N_TIMES - 1][1]);

    CVodeFree(&cvode_mem);
    SUNLinSolFree(LS);
    SUNMatDestroy(A);
    N_VDestroy(y);
    SUNContext_Free(&ctx);
    return 0;
}
