// Numeric kernels over contiguous double arrays, for the distribution's hot loops.
//
// Two goals. Speed: straight-line loops with fixed lanes of accumulators, which the compiler
// vectorises (no libm calls inside loops, no serial dependency chains). Portability: the
// results are bitwise identical on every IEEE-754 platform -- our own exp (no libm, whose last
// bit varies by vendor), a fixed summation order, and no contraction into FMAs (the core is
// built with -ffp-contract=off) -- so the CDFs that turn uniforms into samples, and with them
// the samples for a seed, do not depend on the compiler, libm or vector width.
#pragma once

#include <cstdint>

namespace fpnas::kernels {

// The largest element, ignoring NaNs (-inf if all are NaN or n == 0).
double max(const double* x, std::int64_t n);

struct ExpSums {
  double z;  // sum_j e_j
  double s;  // sum_j e_j * (x_j - shift), with 0 * -inf counted as 0
};
// e_j = exp(x_j - shift) for x_j <= shift, by our own exp (within 2 ulp of the true value;
// 0 below -708, where exp is no longer a normal double; exactly 1 at 0); returns the sums an
// entropy needs.
ExpSums exp_shifted(const double* x, std::int64_t n, double shift, double* e);

// cdf_j = e_0 + ... + e_j, non-decreasing, cdf_{n-1} the total.
void prefix_sum(const double* e, std::int64_t n, double* cdf);

// The first j with cdf_j > u, for u < cdf_{n-1}: a branchless binary search (inline: it runs
// once per draw).
inline std::int64_t search(const double* cdf, std::int64_t n, double u) {
  std::int64_t lo = 0;  // invariant: the answer lies in [lo, lo + n)
  while (n > 1) {
    const std::int64_t half = n / 2;
    lo += cdf[lo + half - 1] <= u ? half : 0;
    n -= half;
  }
  return lo;
}

// out_j = e_j * a.
void scale(const double* e, std::int64_t n, double a, double* out);

// Whether no element is NaN or infinite.
bool all_finite(const double* x, std::int64_t n);

// Bitwise equality of two buffers.
bool same_bits(const double* a, const double* b, std::int64_t n);

// One Adam update of x with moments m, v and gradient g, as torch.optim.Adam computes it:
// m += (1 - b1)(g - m); v = b2 v + (1 - b2) g g; x -= step_size m / (sqrt(v) / bc2_sqrt + eps),
// except that sqrt(v) is multiplied by 1 / bc2_sqrt (one division less; last-bit differences).
void adam(double* x, double* m, double* v, const double* g, std::int64_t n, double step_size,
          double bc2_sqrt);

}  // namespace fpnas::kernels
