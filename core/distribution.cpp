#include "distribution.hpp"

#include "kernels.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace fpnas {
namespace {

constexpr double kBeta1 = 0.9;
constexpr double kBeta2 = 0.999;
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kMaxWeightSum = 1e300;

[[noreturn]] void fail(const std::string& message) { throw std::invalid_argument(message); }

std::size_t sz(std::int64_t n) { return static_cast<std::size_t>(n); }
std::int64_t i64(std::size_t n) { return static_cast<std::int64_t>(n); }

std::string num(double x) {
  std::ostringstream s;
  s.precision(17);
  s << x;
  return s.str();
}

std::string shape_str(Shape shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.ndim; ++i) {
    if (i) s += ", ";
    s += std::to_string(shape.dims[i]);
  }
  return s + "]";
}

// Names a categorical in error messages.
std::string group_name(std::size_t d, std::size_t g, Mode mode) {
  std::string s = "decision " + std::to_string(d);
  if (mode == Mode::kFactorized) s += ", variable " + std::to_string(g);
  return s;
}

std::int64_t product_of(const std::vector<std::int64_t>& cards) {
  std::int64_t p = 1;
  for (const std::int64_t c : cards) p *= c;
  return p;
}

[[noreturn]] void fail_not_finite(std::size_t d, std::size_t g, Mode mode) {
  fail("logits of " + group_name(d, g, mode) +
       " do not define a distribution: they contain NaN or +inf, or are all -inf");
}

}  // namespace

std::int64_t check_layout(const Layout& layout, const std::vector<Mode>& modes) {
  if (layout.empty()) fail("layout must have at least one decision");
  if (modes.size() != layout.size()) {
    fail("expected one mode per decision (" + std::to_string(layout.size()) + "), got " +
         std::to_string(modes.size()));
  }
  std::int64_t total = 0;
  std::size_t max_vars = 0;
  for (std::size_t d = 0; d < layout.size(); ++d) {
    const auto& cards = layout[d];
    if (cards.empty()) fail("decision " + std::to_string(d) + " has no variables");
    if (modes[d] != Mode::kFactorized && modes[d] != Mode::kJoint) {
      fail("decision " + std::to_string(d) + " has an unknown mode");
    }
    max_vars = std::max(max_vars, cards.size());
    std::int64_t product = 1;
    for (std::size_t v = 0; v < cards.size(); ++v) {
      const std::int64_t c = cards[v];
      const std::string where = "decision " + std::to_string(d) + ", variable " + std::to_string(v);
      if (c < 1) fail(where + ": cardinality must be >= 1, got " + std::to_string(c));
      if (c > kMaxCategorical) {
        fail(where + ": cardinality " + std::to_string(c) + " exceeds the limit of " +
             std::to_string(kMaxCategorical) + " choices");
      }
      if (modes[d] == Mode::kFactorized) {
        total += c;
      } else {
        product *= c;  // both factors <= 2^22: no overflow before the check below
        if (product > kMaxCategorical) {
          fail("decision " + std::to_string(d) +
               ": joint mode needs the product of its cardinalities in logits, which exceeds "
               "the limit of " + std::to_string(kMaxCategorical) +
               " per joint decision; keep it factorized");
        }
      }
      if (total > kMaxParams) {
        fail("layout needs more than the limit of " + std::to_string(kMaxParams) + " logits");
      }
    }
    if (modes[d] == Mode::kJoint) total += product;
    if (total > kMaxParams) {
      fail("layout needs more than the limit of " + std::to_string(kMaxParams) + " logits");
    }
  }
  if (i64(max_vars) > kMaxSampleElements / i64(layout.size())) {
    fail("layout has too many decisions x variables (limit " +
         std::to_string(kMaxSampleElements) + ")");
  }
  return total;
}

Distribution::Distribution(Layout layout, std::vector<Mode> modes, std::uint64_t seed)
    : layout_(std::move(layout)), modes_(std::move(modes)), rng_(seed) {
  const std::int64_t n = check_layout(layout_, modes_);
  logits_ = std::make_shared<std::vector<double>>(sz(n), 0.0);
  adam_m_.assign(sz(n), 0.0);
  adam_v_.assign(sz(n), 0.0);
  adam_steps_.assign(layout_.size(), 0);
  rebuild_index();
}

void Distribution::rebuild_index() {
  groups_.clear();
  decisions_.clear();
  max_vars_ = 0;
  std::int64_t offset = 0;
  for (std::size_t d = 0; d < layout_.size(); ++d) {
    const auto& cards = layout_[d];
    max_vars_ = std::max(max_vars_, i64(cards.size()));
    DecisionInfo info{groups_.size(), 0, offset, 0};
    if (modes_[d] == Mode::kJoint) {
      const std::int64_t product = product_of(cards);
      groups_.push_back({offset, product});
      offset += product;
    } else {
      for (const std::int64_t c : cards) {
        groups_.push_back({offset, c});
        offset += c;
      }
    }
    info.num_groups = groups_.size() - info.first_group;
    info.size = offset - info.offset;
    decisions_.push_back(info);
  }
  limits_.assign(layout_.size() * sz(max_vars_), 1);  // padded slots admit only 0
  for (std::size_t d = 0; d < layout_.size(); ++d) {
    std::copy(layout_[d].begin(), layout_[d].end(), limits_.begin() + i64(d) * max_vars_);
  }
  stats_.assign(groups_.size(), GroupStats{0.0, 0.0, 0.0});
  lse_.assign(groups_.size(), 0.0);
  seen_.assign(sz(offset), 0.0);
  exp_.assign(sz(offset), 0.0);
  cdf_.assign(sz(offset), 0.0);
  grad_.assign(sz(offset), 0.0);
  invalidate();
}

// ---------------------------------------------------------------------------- softmax cache

void Distribution::ensure_softmax() {
  const double* x = logits_->data();
  const std::int64_t n = num_params();
  if (softmax_ok_ && kernels::same_bits(x, seen_.data(), n)) return;
  invalidate();
  for (std::size_t d = 0; d < decisions_.size(); ++d) {
    const DecisionInfo& info = decisions_[d];
    for (std::size_t g = 0; g < info.num_groups; ++g) {
      const Group& grp = groups_[info.first_group + g];
      // m finite and no NaN make z finite and >= 1: otherwise this is no distribution.
      const double m = kernels::max(x + grp.offset, grp.size);
      if (!std::isfinite(m)) fail_not_finite(d, g, modes_[d]);
      const auto sums =
          kernels::exp_shifted(x + grp.offset, grp.size, m, exp_.data() + grp.offset);
      if (!std::isfinite(sums.z)) fail_not_finite(d, g, modes_[d]);
      stats_[info.first_group + g] = {m, sums.z, sums.s};
    }
  }
  std::copy(x, x + n, seen_.begin());
  softmax_ok_ = true;
}

void Distribution::ensure_cdf() {
  ensure_softmax();
  if (cdf_ok_) return;
  for (const Group& grp : groups_) {
    kernels::prefix_sum(exp_.data() + grp.offset, grp.size, cdf_.data() + grp.offset);
  }
  cdf_ok_ = true;
}

void Distribution::compute_log_normalizers() {
  ensure_softmax();
  for (std::size_t g = 0; g < groups_.size(); ++g) {
    lse_[g] = stats_[g].max + std::log(stats_[g].z);
  }
}

// ---------------------------------------------------------------------------- entropy

void Distribution::entropy_per_decision(double* out) {
  ensure_softmax();
  for (std::size_t d = 0; d < decisions_.size(); ++d) {
    const DecisionInfo& info = decisions_[d];
    double h = 0.0;
    for (std::size_t g = info.first_group; g < info.first_group + info.num_groups; ++g) {
      h += std::log(stats_[g].z) - stats_[g].s / stats_[g].z;
    }
    out[d] = h;
  }
}

double Distribution::entropy() {
  ensure_softmax();
  double h = 0.0;
  for (const GroupStats& st : stats_) h += std::log(st.z) - st.s / st.z;
  return h;
}

std::int64_t Distribution::sample_size(double lambda) {
  if (!std::isfinite(lambda) || lambda < 0.0) {
    fail("lambda must be a finite number >= 0, got " + num(lambda));
  }
  const double k = std::floor(lambda * entropy());
  if (k >= static_cast<double>(kMaxSampleElements)) {
    fail("sample size floor(lambda * H) = " + num(k) + " is too large");
  }
  return std::max<std::int64_t>(1, static_cast<std::int64_t>(k));
}

// ---------------------------------------------------------------------------- sampling

std::int64_t Distribution::check_sample_count(std::int64_t k) const {
  if (k < 1) fail("K (the number of samples) must be >= 1, got " + std::to_string(k));
  if (k > kMaxSampleElements / (num_decisions() * max_vars_)) {
    fail("K = " + std::to_string(k) + " samples would exceed the limit of " +
         std::to_string(kMaxSampleElements) + " elements per batch");
  }
  return k;
}

void Distribution::sample(std::int64_t k, std::int64_t* out) {
  check_sample_count(k);
  ensure_cdf();
  const std::size_t vmax = sz(max_vars_);
  for (std::int64_t s = 0; s < k; ++s) {
    for (std::size_t d = 0; d < decisions_.size(); ++d) {
      const DecisionInfo& info = decisions_[d];
      const auto& cards = layout_[d];
      std::int64_t* row = out + (sz(s) * decisions_.size() + d) * vmax;
      for (std::size_t g = 0; g < info.num_groups; ++g) {
        const Group& grp = groups_[info.first_group + g];
        const double* cdf = cdf_.data() + grp.offset;
        // u < total (uniform() < 1), and the first cdf entry above u has probability > 0.
        const double u = rng_.uniform() * cdf[grp.size - 1];
        const std::int64_t idx = kernels::search(cdf, grp.size, u);
        if (modes_[d] == Mode::kFactorized) {
          row[g] = idx;
          continue;
        }
        // Row-major: the last variable varies fastest. Flat indices are below 2^22, so
        // 32-bit division (several times faster than 64-bit) is exact.
        auto flat = static_cast<std::uint32_t>(idx);
        for (std::size_t v = cards.size(); v-- > 0;) {
          const auto c = static_cast<std::uint32_t>(cards[v]);
          row[v] = flat % c;
          flat /= c;
        }
      }
      std::fill(row + cards.size(), row + vmax, std::int64_t{0});
    }
  }
}

// ------------------------------------------------------------------- validation of inputs

std::int64_t Distribution::check_samples(const std::int64_t* samples, Shape shape) const {
  const std::int64_t nd = num_decisions();
  if (shape.ndim != 3 || shape.dims[0] < 0 || shape.dims[1] != nd || shape.dims[2] != max_vars_) {
    fail("samples must have shape [K, " + std::to_string(nd) + ", " + std::to_string(max_vars_) +
         "] (samples, decisions, max variables), got " + shape_str(shape));
  }
  const std::int64_t k = shape.dims[0];
  // One unsigned comparison per element (negative values wrap to huge): no branches.
  const std::size_t width = limits_.size();
  bool ok = true;
  for (std::size_t s = 0; s < sz(k); ++s) {
    for (std::size_t i = 0; i < width; ++i) {
      ok &= static_cast<std::uint64_t>(samples[s * width + i]) <
            static_cast<std::uint64_t>(limits_[i]);
    }
  }
  if (ok) return k;
  for (std::size_t i = 0; i < sz(k) * width; ++i) {  // find the first offender for the message
    const std::int64_t value = samples[i];
    const std::int64_t limit = limits_[i % width];
    if (value >= 0 && value < limit) continue;
    const std::size_t s = i / width;
    const std::size_t d = i % width / sz(max_vars_);
    const std::size_t v = i % sz(max_vars_);
    const std::string where = "samples[" + std::to_string(s) + ", " + std::to_string(d) + ", " +
                              std::to_string(v) + "] = " + std::to_string(value);
    const std::size_t nvars = layout_[d].size();
    if (v < nvars) {
      fail(where + " is out of range: variable " + std::to_string(v) + " of decision " +
           std::to_string(d) + " takes values in [0, " + std::to_string(limit) + ")");
    }
    fail(where + " must be 0: decision " + std::to_string(d) + " has " + std::to_string(nvars) +
         " variables and padded slots are 0");
  }
  return k;
}

void Distribution::check_weights(const double* weights, Shape wshape, std::int64_t k) const {
  if (wshape.ndim != 1 || wshape.dims[0] != k) {
    fail("weights must have shape [" + std::to_string(k) + "] (one per sample), got " +
         shape_str(wshape));
  }
  double abs_sum = 0.0;
  for (std::int64_t s = 0; s < k; ++s) {
    if (!std::isfinite(weights[s])) {
      fail("weights[" + std::to_string(s) + "] must be finite, got " + num(weights[s]));
    }
    abs_sum += std::abs(weights[s]);
  }
  // Every gradient entry is at most 2 * sum |w_k| in magnitude: keep it finite.
  if (!(abs_sum <= kMaxWeightSum)) {
    fail("weights are too large: sum |w_k| must be at most " + num(kMaxWeightSum));
  }
}

std::int64_t Distribution::group_index(std::size_t d, std::size_t g,
                                       const std::int64_t* row) const {
  if (modes_[d] == Mode::kFactorized) return row[g];
  const auto& cards = layout_[d];
  std::int64_t flat = 0;
  for (std::size_t v = 0; v < cards.size(); ++v) flat = flat * cards[v] + row[v];
  return flat;
}

// ------------------------------------------------------------------- log-prob and gradient

std::int64_t Distribution::log_prob(const std::int64_t* samples, Shape shape, double* out) {
  const std::int64_t k = check_samples(samples, shape);
  compute_log_normalizers();
  const double* x = logits_->data();
  const std::size_t vmax = sz(max_vars_);
  for (std::int64_t s = 0; s < k; ++s) {
    double lp = 0.0;
    for (std::size_t d = 0; d < decisions_.size(); ++d) {
      const DecisionInfo& info = decisions_[d];
      const std::int64_t* row = samples + (sz(s) * decisions_.size() + d) * vmax;
      for (std::size_t g = 0; g < info.num_groups; ++g) {
        const std::size_t gi = info.first_group + g;
        lp += x[groups_[gi].offset + group_index(d, g, row)] - lse_[gi];
      }
    }
    out[s] = lp;
  }
  return k;
}

void Distribution::grad(const std::int64_t* samples, Shape shape, const double* weights,
                        Shape wshape, double* out) {
  const std::int64_t k = check_samples(samples, shape);
  check_weights(weights, wshape, k);
  grad_unchecked(samples, k, weights, out);
}

void Distribution::grad_unchecked(const std::int64_t* samples, std::int64_t k,
                                  const double* weights, double* out) {
  // sum_k w_k (p - onehot(c_k)) = W p - sum_k w_k onehot(c_k), with W = sum_k w_k.
  ensure_softmax();
  double total_weight = 0.0;
  for (std::int64_t s = 0; s < k; ++s) total_weight += weights[s];
  for (std::size_t g = 0; g < groups_.size(); ++g) {
    const Group& grp = groups_[g];
    kernels::scale(exp_.data() + grp.offset, grp.size, total_weight / stats_[g].z,
                   out + grp.offset);
  }
  const std::size_t vmax = sz(max_vars_);
  for (std::int64_t s = 0; s < k; ++s) {
    for (std::size_t d = 0; d < decisions_.size(); ++d) {
      const DecisionInfo& info = decisions_[d];
      const std::int64_t* row = samples + (sz(s) * decisions_.size() + d) * vmax;
      for (std::size_t g = 0; g < info.num_groups; ++g) {
        out[groups_[info.first_group + g].offset + group_index(d, g, row)] -= weights[s];
      }
    }
  }
}

// ---------------------------------------------------------------------------- Adam

void Distribution::adam_step(const double* g, Shape gshape, double lr) {
  if (gshape.ndim != 1 || gshape.dims[0] != num_params()) {
    fail("grad must have shape [" + std::to_string(num_params()) + "] (num_params), got " +
         shape_str(gshape));
  }
  if (!std::isfinite(lr) || lr < 0.0) fail("lr must be a finite number >= 0, got " + num(lr));
  if (!kernels::all_finite(g, num_params())) {
    const std::int64_t j = std::find_if_not(g, g + num_params(), [](double a) {
                             return std::isfinite(a);
                           }) - g;
    fail("grad[" + std::to_string(j) + "] must be finite, got " + num(g[j]));
  }
  adam_unchecked(g, lr);
}

void Distribution::step(const std::int64_t* samples, Shape shape, const double* weights,
                        Shape wshape, double lr) {
  const std::int64_t k = check_samples(samples, shape);
  check_weights(weights, wshape, k);
  if (!std::isfinite(lr) || lr < 0.0) fail("lr must be a finite number >= 0, got " + num(lr));
  grad_unchecked(samples, k, weights, grad_.data());
  adam_unchecked(grad_.data(), lr);
}

void Distribution::adam_unchecked(const double* g, double lr) {
  // torch.optim.Adam's single-tensor arithmetic, with one step count per decision.
  std::int64_t last_t = 0;  // decisions usually share a step count: reuse the corrections
  double step_size = 0.0;
  double bc2_sqrt = 0.0;
  for (std::size_t d = 0; d < decisions_.size(); ++d) {
    const std::int64_t t = ++adam_steps_[d];
    if (t != last_t) {
      step_size = lr / (1.0 - std::pow(kBeta1, static_cast<double>(t)));
      bc2_sqrt = std::sqrt(1.0 - std::pow(kBeta2, static_cast<double>(t)));
      last_t = t;
    }
    const auto off = static_cast<std::size_t>(decisions_[d].offset);
    kernels::adam(logits_->data() + off, adam_m_.data() + off, adam_v_.data() + off, g + off,
                  decisions_[d].size, step_size, bc2_sqrt);
  }
  invalidate();
}

// ---------------------------------------------------------------------------- FD -> JD

void Distribution::to_joint_all() {
  std::vector<std::int64_t> all(layout_.size());
  for (std::size_t d = 0; d < all.size(); ++d) all[d] = i64(d);
  to_joint(all);
}

void Distribution::to_joint(const std::vector<std::int64_t>& decisions) {
  std::vector<Mode> modes = modes_;
  for (const std::int64_t d : decisions) {
    if (d < 0 || d >= num_decisions()) {
      fail("decision index " + std::to_string(d) + " is out of range [0, " +
           std::to_string(num_decisions()) + ")");
    }
    modes[sz(d)] = Mode::kJoint;
  }
  if (modes == modes_) return;  // nothing to convert: keep the buffer (and views of it)
  const std::int64_t n = check_layout(layout_, modes);  // may reject a too-large product
  compute_log_normalizers();  // also rejects logits that are not a distribution

  auto logits = std::make_shared<std::vector<double>>();
  logits->reserve(sz(n));
  std::vector<double> adam_m;
  std::vector<double> adam_v;
  adam_m.reserve(sz(n));
  adam_v.reserve(sz(n));
  const double* x = logits_->data();
  for (std::size_t d = 0; d < layout_.size(); ++d) {
    const DecisionInfo& info = decisions_[d];
    const auto first = static_cast<std::ptrdiff_t>(info.offset);
    const auto last = static_cast<std::ptrdiff_t>(info.offset + info.size);
    if (modes[d] == modes_[d]) {  // unchanged: copy logits and moments
      logits->insert(logits->end(), x + first, x + last);
      adam_m.insert(adam_m.end(), adam_m_.begin() + first, adam_m_.begin() + last);
      adam_v.insert(adam_v.end(), adam_v_.begin() + first, adam_v_.begin() + last);
      continue;
    }
    // Row-major expansion, one variable at a time and in place (back to front):
    // joint[i * |D_v| + j] = joint_so_far[i] + log p_v[j].
    const std::size_t start = logits->size();
    logits->resize(start + sz(product_of(layout_[d])));
    double* joint = logits->data() + start;
    joint[0] = 0.0;
    std::size_t filled = 1;
    for (std::size_t g = 0; g < info.num_groups; ++g) {
      const Group& grp = groups_[info.first_group + g];
      const double lse = lse_[info.first_group + g];
      const auto c = sz(grp.size);
      for (std::size_t i = filled; i-- > 0;) {
        const double base = joint[i];
        for (std::size_t j = c; j-- > 0;) joint[i * c + j] = base + (x[grp.offset + i64(j)] - lse);
      }
      filled *= c;
    }
    adam_m.resize(logits->size(), 0.0);
    adam_v.resize(logits->size(), 0.0);
    adam_steps_[d] = 0;
  }
  modes_ = std::move(modes);
  logits_ = std::move(logits);
  adam_m_ = std::move(adam_m);
  adam_v_ = std::move(adam_v);
  rebuild_index();
}

// ---------------------------------------------------------------------------- argmax, state

void Distribution::argmax(std::int64_t* out) {
  ensure_softmax();  // rejects logits that are not a distribution, like every other method
  const double* x = logits_->data();
  const std::size_t vmax = sz(max_vars_);
  for (std::size_t d = 0; d < decisions_.size(); ++d) {
    const DecisionInfo& info = decisions_[d];
    const auto& cards = layout_[d];
    std::int64_t* row = out + d * vmax;
    std::fill(row, row + vmax, std::int64_t{0});
    for (std::size_t g = 0; g < info.num_groups; ++g) {
      const Group& grp = groups_[info.first_group + g];
      const double* xg = x + grp.offset;
      std::int64_t idx = std::max_element(xg, xg + grp.size) - xg;  // first maximum
      if (modes_[d] == Mode::kFactorized) {
        row[g] = idx;
        continue;
      }
      for (std::size_t v = cards.size(); v-- > 0;) {
        row[v] = idx % cards[v];
        idx /= cards[v];
      }
    }
  }
}

DistributionState Distribution::state() const {
  return {modes_, *logits_, adam_m_, adam_v_, adam_steps_, rng_.state()};
}

void Distribution::load_state(const DistributionState& st) {
  const std::int64_t n = check_layout(layout_, st.modes);
  const auto check_len = [n](const std::vector<double>& a, const char* name) {
    if (i64(a.size()) != n) {
      fail(std::string("state: ") + name + " must have " + std::to_string(n) +
           " entries for these modes, got " + std::to_string(a.size()));
    }
  };
  check_len(st.logits, "logits");
  check_len(st.adam_m, "adam_m");
  check_len(st.adam_v, "adam_v");
  for (std::size_t j = 0; j < sz(n); ++j) {
    if (std::isnan(st.logits[j]) || st.logits[j] == kInf) {
      fail("state: logits[" + std::to_string(j) + "] must not be NaN or +inf");
    }
    // Moments may overflow to inf in training (huge gradients) but are never NaN.
    if (std::isnan(st.adam_m[j])) {
      fail("state: adam_m[" + std::to_string(j) + "] must not be NaN");
    }
    if (!(st.adam_v[j] >= 0.0)) {
      fail("state: adam_v[" + std::to_string(j) + "] must be >= 0, got " + num(st.adam_v[j]));
    }
  }
  if (st.adam_steps.size() != layout_.size()) {
    fail("state: adam_step must have one entry per decision (" + std::to_string(layout_.size()) +
         "), got " + std::to_string(st.adam_steps.size()));
  }
  for (const std::int64_t t : st.adam_steps) {
    if (t < 0) fail("state: adam_step entries must be >= 0, got " + std::to_string(t));
  }
  Rng rng;
  rng.set_state(st.rng);  // rejects the all-zero state

  const bool same_modes = st.modes == modes_;
  modes_ = st.modes;
  if (same_modes) {  // keep the buffer so existing views of alpha stay attached
    std::copy(st.logits.begin(), st.logits.end(), logits_->begin());
  } else {
    logits_ = std::make_shared<std::vector<double>>(st.logits);
  }
  adam_m_ = st.adam_m;
  adam_v_ = st.adam_v;
  adam_steps_ = st.adam_steps;
  rng_ = rng;
  if (!same_modes) rebuild_index();
  invalidate();
}

}  // namespace fpnas
