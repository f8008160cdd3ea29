#include "kernels.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace fpnas::kernels {
namespace {

// Independent accumulators per reduction: they break the add-latency chain and give the
// vectoriser its lanes, while fixing the summation order whatever the vector width.
constexpr int kLanes = 8;

constexpr double kLog2e = 1.4426950408889634;
constexpr double kRound = 6755399441055744.0;  // 1.5 * 2^52: x + kRound rounds x to an integer
constexpr double kLn2Hi = 6.93147180369123816490e-01;  // fdlibm's split of ln 2: n * kLn2Hi
constexpr double kLn2Lo = 1.90821492927058770002e-10;  // is exact for |n| < 2^11
constexpr double kMinExp = -708.0;  // exp(-708) ~ 3.3e-308, still a normal double

std::uint64_t bits(double d) {
  std::uint64_t u;
  std::memcpy(&u, &d, sizeof u);
  return u;
}

double from_bits(std::uint64_t u) {
  double d;
  std::memcpy(&d, &u, sizeof d);
  return d;
}

inline double exp_np(double t) {
  // t = n ln2 + r with |r| <= ln2 / 2; exp(t) = 2^n exp(r).
  const double k = t * kLog2e + kRound;
  const double n = k - kRound;
  const double r = (t - n * kLn2Hi) - n * kLn2Lo;
  // Taylor series to r^13 (truncation error below 5e-18 for |r| <= 0.35), evaluated by
  // Estrin's scheme: a shallow dependency tree instead of Horner's 13-deep chain.
  const double r2 = r * r;
  const double r4 = r2 * r2;
  const double r8 = r4 * r4;
  const double a0 = 1.0 + r;
  const double a1 = 1.0 / 2 + r * (1.0 / 6);
  const double a2 = 1.0 / 24 + r * (1.0 / 120);
  const double a3 = 1.0 / 720 + r * (1.0 / 5040);
  const double a4 = 1.0 / 40320 + r * (1.0 / 362880);
  const double a5 = 1.0 / 3628800 + r * (1.0 / 39916800);
  const double a6 = 1.0 / 479001600 + r * (1.0 / 6227020800);
  const double p = ((a0 + r2 * a1) + r4 * (a2 + r2 * a3)) + r8 * ((a4 + r2 * a5) + r4 * a6);
  // 2^n straight into the exponent field: n sits in the low bits of k (modular arithmetic).
  const double two_n = from_bits((bits(k) - bits(kRound) + 1023) << 52);
  return t < kMinExp ? 0.0 : p * two_n;
}

void exp_into(const double* x, std::int64_t n, double shift, double* e) {
  for (std::int64_t j = 0; j < n; ++j) e[j] = exp_np(x[j] - shift);
}

double sum_lanes(const double* acc) {
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

}  // namespace

double max(const double* x, std::int64_t n) {
  double acc[kLanes];
  std::fill(acc, acc + kLanes, -std::numeric_limits<double>::infinity());
  std::int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) acc[l] = x[j + l] > acc[l] ? x[j + l] : acc[l];
  }
  for (; j < n; ++j) acc[0] = x[j] > acc[0] ? x[j] : acc[0];
  return *std::max_element(acc, acc + kLanes);
}

ExpSums exp_shifted(const double* x, std::int64_t n, double shift, double* e) {
  // An elementwise loop first, which vectorises; then the sums, in independent lanes. Below
  // kMinExp e_j is 0, so clamping t there keeps 0 * -inf out of s without changing it.
  exp_into(x, n, shift, e);
  double z[kLanes] = {};
  double s[kLanes] = {};
  std::int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      z[l] += e[j + l];
      s[l] += e[j + l] * std::max(x[j + l] - shift, kMinExp);
    }
  }
  for (; j < n; ++j) {
    z[0] += e[j];
    s[0] += e[j] * std::max(x[j] - shift, kMinExp);
  }
  return {sum_lanes(z), sum_lanes(s)};
}

void prefix_sum(const double* e, std::int64_t n, double* cdf) {
  // Running sums within blocks are independent chains the CPU overlaps; each block then
  // adds the finished total before it. cdf stays non-decreasing: a block starts at its base.
  constexpr std::int64_t kBlock = 16;
  for (std::int64_t b = 0; b < n; b += kBlock) {
    const std::int64_t end = std::min(n, b + kBlock);
    double run = 0.0;
    for (std::int64_t j = b; j < end; ++j) {
      run += e[j];
      cdf[j] = run;
    }
  }
  for (std::int64_t b = kBlock; b < n; b += kBlock) {
    const std::int64_t end = std::min(n, b + kBlock);
    const double base = cdf[b - 1];
    for (std::int64_t j = b; j < end; ++j) cdf[j] += base;
  }
}

void scale(const double* e, std::int64_t n, double a, double* out) {
  for (std::int64_t j = 0; j < n; ++j) out[j] = e[j] * a;
}

bool all_finite(const double* x, std::int64_t n) {
  // x * 0 is 0 for finite x and NaN otherwise; lanes keep the loop vectorisable.
  double acc[kLanes] = {};
  std::int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) acc[l] += x[j + l] * 0.0;
  }
  for (; j < n; ++j) acc[0] += x[j] * 0.0;
  return sum_lanes(acc) == 0.0;
}

bool same_bits(const double* a, const double* b, std::int64_t n) {
  return n == 0 || std::memcmp(a, b, static_cast<std::size_t>(n) * sizeof(double)) == 0;
}

void adam(double* x, double* m, double* v, const double* g, std::int64_t n, double step_size,
          double bc2_sqrt) {
  constexpr double kBeta1 = 0.9;
  constexpr double kBeta2 = 0.999;
  constexpr double kEps = 1e-8;
  // A multiply where torch divides by bc2_sqrt: one division less per element, and a
  // difference in the last bit of the denominator only.
  const double inv_bc2_sqrt = 1.0 / bc2_sqrt;
  for (std::int64_t j = 0; j < n; ++j) {
    m[j] += (1.0 - kBeta1) * (g[j] - m[j]);  // torch's lerp for a weight below 0.5
    v[j] = v[j] * kBeta2 + (1.0 - kBeta2) * g[j] * g[j];
    x[j] += (-step_size * m[j]) / (std::sqrt(v[j]) * inv_bc2_sqrt + kEps);
  }
}

}  // namespace fpnas::kernels
