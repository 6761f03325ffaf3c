/* Serial vectors whose hot operations are compiled with this extension.

   ARKODE's one-step methods spend most of their time outside the right-hand side in a few
   vector operations on short vectors (a stage is a linear combination of the previous
   stages' derivatives; each step takes a weighted RMS norm). A distribution's SUNDIALS may
   be compiled without optimisation (Debian's is at -O0): there those operations were 42% of
   a Lotka-Volterra ERK forward solve. sl_nvector_fast_ops replaces them in a serial
   vector's operations table (clones inherit it) by ours, which do the same arithmetic in
   the same order per entry as SUNDIALS' serial ones (the results are bit for bit the
   same), so only the compiler's optimisation differs. */
#ifndef SL_NVECTOR_H
#define SL_NVECTOR_H

#include <nvector/nvector_serial.h>

/* Fused operations on (N_VEnableFusedOps_Serial) and ours in place of the hot ones;
   0, or -1 if SUNDIALS could not enable the fused operations. */
int sl_nvector_fast_ops(N_Vector v);

#endif
