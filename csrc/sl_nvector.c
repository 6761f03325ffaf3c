/* See sl_nvector.h. Each operation keeps SUNDIALS' serial arithmetic per entry: where it
   rounds differently (a x + a y against a (x + y)), it does what N_VLinearSum_Serial
   does. */
#include <math.h>

#include "sl_nvector.h"

#define LENGTH(v) NV_LENGTH_S(v)
#define DATA(v) NV_DATA_S(v)

/* z = a x + b y; a (x + y) when a = b and a (x - y) when a = -b, as SUNDIALS. */
static void linear_sum(sunrealtype a, N_Vector x, sunrealtype b, N_Vector y, N_Vector z)
{
    const sunrealtype *xd = DATA(x), *yd = DATA(y);
    sunrealtype *zd = DATA(z);
    sunindextype n = LENGTH(z), j;
    if (a == b)
        for (j = 0; j < n; j++) zd[j] = a * (xd[j] + yd[j]);
    else if (a == -b)
        for (j = 0; j < n; j++) zd[j] = a * (xd[j] - yd[j]);
    else
        for (j = 0; j < n; j++) zd[j] = a * xd[j] + b * yd[j];
}

static void scale(sunrealtype c, N_Vector x, N_Vector z)
{
    const sunrealtype *xd = DATA(x);
    sunrealtype *zd = DATA(z);
    for (sunindextype j = 0; j < LENGTH(z); j++) zd[j] = c * xd[j];
}

static void constant(sunrealtype c, N_Vector z)
{
    sunrealtype *zd = DATA(z);
    for (sunindextype j = 0; j < LENGTH(z); j++) zd[j] = c;
}

/* z = sum_i c_i X_i, accumulated from i = 0 up for each entry (z may be X_0). Two terms
   are a linear sum, as in SUNDIALS. */
static int linear_combination(int count, sunrealtype *c, N_Vector *X, N_Vector z)
{
    sunrealtype *zd = DATA(z);
    sunindextype n = LENGTH(z), j;
    int i;
    if (count == 1) {
        scale(c[0], X[0], z);
        return 0;
    }
    if (count == 2) {
        linear_sum(c[0], X[0], c[1], X[1], z);
        return 0;
    }
    for (j = 0; j < n; j++) {
        sunrealtype sum = c[0] * DATA(X[0])[j];
        for (i = 1; i < count; i++) sum += c[i] * DATA(X[i])[j];
        zd[j] = sum;
    }
    return 0;
}

static sunrealtype weighted_square_sum(N_Vector x, N_Vector w)
{
    const sunrealtype *xd = DATA(x), *wd = DATA(w);
    sunrealtype sum = 0.0;
    for (sunindextype j = 0; j < LENGTH(x); j++) sum += (xd[j] * wd[j]) * (xd[j] * wd[j]);
    return sum;
}

static sunrealtype weighted_rms_norm(N_Vector x, N_Vector w)
{
    return sqrt(weighted_square_sum(x, w) / (sunrealtype)LENGTH(x));
}

int sl_nvector_fast_ops(N_Vector v)
{
    if (N_VEnableFusedOps_Serial(v, 1)) return -1;
    v->ops->nvlinearsum = linear_sum;
    v->ops->nvscale = scale;
    v->ops->nvconst = constant;
    v->ops->nvlinearcombination = linear_combination;
    v->ops->nvwsqrsumlocal = weighted_square_sum;
    v->ops->nvwrmsnorm = weighted_rms_norm;
    return 0;
}
