// The architecture distribution P(A | alpha) of FP-NAS, in plain C++17 (no Python here).
//
// A layout is a list of decisions, each a list of variable cardinalities |D_m| >= 1. Per
// decision the mode is factorized (FD: one categorical per variable, sum |D_m| logits) or
// joint (JD: one categorical over the product, prod |D_m| logits, row-major: the first
// variable varies slowest). All logits live in one contiguous buffer, decision after
// decision, variable after variable.
//
// An architecture batch is an int64 array [K, decisions, max_variables] of per-variable
// choice indices, whatever the mode; slots past a decision's last variable are 0.
//
// Every invalid input throws std::invalid_argument with a message naming what was expected.
// Logits are checked where probabilities are needed: a categorical whose logits hold NaN or
// +inf, or are all -inf, is refused (single -inf entries are fine: probability 0).
// A Distribution is not safe for concurrent use; the Python bindings serialise calls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "rng.hpp"

namespace fpnas {

enum class Mode : std::uint8_t { kFactorized = 0, kJoint = 1 };

using Layout = std::vector<std::vector<std::int64_t>>;

// Outcomes of one categorical (a factorized variable or a whole joint decision): 2^22 logits
// is 32 MiB per buffer, far beyond any search space worth a joint distribution.
inline constexpr std::int64_t kMaxCategorical = std::int64_t{1} << 22;
// Logits over the whole layout: the core keeps seven buffers of this many doubles (logits, Adam
// moments, the softmax cache and scratch), 448 MiB at the limit.
inline constexpr std::int64_t kMaxParams = std::int64_t{1} << 23;
// Elements of one sample batch K * decisions * max_variables (2 GiB of int64).
inline constexpr std::int64_t kMaxSampleElements = std::int64_t{1} << 28;

// Everything needed to resume exactly: the layout is fixed at construction and not included.
struct DistributionState {
  std::vector<Mode> modes;
  std::vector<double> logits;
  std::vector<double> adam_m;
  std::vector<double> adam_v;
  std::vector<std::int64_t> adam_steps;  // one per decision (see Distribution::adam_step)
  Rng::State rng{};
};

// Shape of an array handed in from outside, checked before any element is read.
struct Shape {
  std::size_t ndim;
  const std::int64_t* dims;
};

class Distribution {
 public:
  // Logits start at zero (uniform); Adam moments at zero.
  Distribution(Layout layout, std::vector<Mode> modes, std::uint64_t seed);

  const Layout& layout() const { return layout_; }
  const std::vector<Mode>& modes() const { return modes_; }
  std::int64_t num_decisions() const { return static_cast<std::int64_t>(layout_.size()); }
  std::int64_t max_variables() const { return max_vars_; }
  std::int64_t num_params() const { return static_cast<std::int64_t>(logits_->size()); }

  // The logits buffer itself (alpha; writes are seen by every method). It is replaced by
  // to_joint and by load_state when the modes change; holders of the old pointer keep the
  // old buffer alive but it is no longer alpha.
  std::shared_ptr<std::vector<double>> logits_buffer() const { return logits_; }

  // Entropy in nats: the sum over decisions (decisions are independent).
  double entropy();
  void entropy_per_decision(double* out);  // out: [decisions]

  // K = max(1, floor(lambda * H)); lambda must be finite and >= 0.
  std::int64_t sample_size(double lambda);

  // Draws k >= 1 architectures into out [k, decisions, max_variables] by inverse CDF.
  // Uniforms are consumed sample by sample, decision by decision, one per categorical, so
  // sample(a) followed by sample(b) equals sample(a + b).
  void sample(std::int64_t k, std::int64_t* out);
  // Checks sample(k)'s arguments; lets callers allocate the output first.
  std::int64_t check_sample_count(std::int64_t k) const;

  // log P(A_k | alpha) for each of the K samples: out [K]. Returns K.
  std::int64_t log_prob(const std::int64_t* samples, Shape shape, double* out);
  // out[num_params] = sum_k w_k * d(-log P(A_k | alpha)) / d alpha, in closed form: for a
  // categorical with probabilities p and chosen index c, d(-log p_c)/d x_j = p_j - [j == c].
  // Weights must be finite with sum |w_k| <= 1e300, so that every entry is finite.
  void grad(const std::int64_t* samples, Shape shape, const double* weights, Shape wshape,
            double* out);
  // One Adam step (betas 0.9, 0.999, eps 1e-8, bias-corrected, as torch.optim.Adam) on the
  // logits with gradient g [num_params]. Each decision keeps its own step count, so a decision
  // converted to joint restarts Adam from fresh moments like a new parameter would.
  void adam_step(const double* g, Shape gshape, double lr);
  // grad followed by adam_step, without handing the gradient out.
  void step(const std::int64_t* samples, Shape shape, const double* weights, Shape wshape,
            double lr);

  // Converts the listed decisions (indices; joint ones are left alone) to joint mode. Each
  // joint logit is the sum of its factors' log-probabilities, so every architecture keeps
  // its probability. The converted decisions' Adam moments and step counts restart at zero.
  void to_joint(const std::vector<std::int64_t>& decisions);
  void to_joint_all();

  // The most probable architecture: out [decisions, max_variables] (ties: lowest index).
  void argmax(std::int64_t* out);

  DistributionState state() const;
  // Validates everything before changing anything (strong exception guarantee).
  void load_state(const DistributionState& state);
  void set_seed(std::uint64_t seed) { rng_.set_seed(seed); }

 private:
  // One categorical: a factorized variable, or a whole joint decision.
  struct Group {
    std::int64_t offset;  // into the logits
    std::int64_t size;
  };
  // Per decision: its categoricals are groups_[first_group, first_group + num_groups).
  struct DecisionInfo {
    std::size_t first_group;
    std::size_t num_groups;
    std::int64_t offset;  // of its first logit
    std::int64_t size;    // its number of logits
  };

  // Per categorical, from the cached softmax: max logit m, z = sum exp(x - m), and
  // s = sum exp(x - m) (x - m). Then log-normaliser = m + log z, entropy = log z - s / z.
  struct GroupStats {
    double max;
    double z;
    double s;
  };

  void rebuild_index();
  void invalidate() { softmax_ok_ = cdf_ok_ = false; }
  // Brings exp_ and stats_ up to date with the logits; throws if they are not a distribution.
  void ensure_softmax();
  void ensure_cdf();
  void compute_log_normalizers();  // fills lse_ (per group), after ensure_softmax
  std::int64_t check_samples(const std::int64_t* samples, Shape shape) const;
  void check_weights(const double* weights, Shape wshape, std::int64_t k) const;
  void grad_unchecked(const std::int64_t* samples, std::int64_t k, const double* weights,
                      double* out);
  void adam_unchecked(const double* g, double lr);
  // The group's chosen index for sample row `row` (one decision's variables).
  std::int64_t group_index(std::size_t d, std::size_t g, const std::int64_t* row) const;

  Layout layout_;
  std::vector<Mode> modes_;
  std::int64_t max_vars_ = 0;
  std::vector<Group> groups_;
  std::vector<DecisionInfo> decisions_;

  std::shared_ptr<std::vector<double>> logits_;
  std::vector<double> adam_m_;
  std::vector<double> adam_v_;
  std::vector<std::int64_t> adam_steps_;
  Rng rng_;

  // Softmax cache, computed once and shared by entropy, sampling, log-prob and gradient. The
  // logits view is writable from Python, so no flag can tell when alpha changed: the cache is
  // valid while the logits equal seen_ bit for bit (a memcmp, far cheaper than the exps).
  bool softmax_ok_ = false;
  bool cdf_ok_ = false;
  std::vector<double> seen_;   // the logits the cache was computed from
  std::vector<double> exp_;    // exp(x - m) per logit
  std::vector<double> cdf_;    // running sums of exp_ per categorical
  std::vector<GroupStats> stats_;
  std::vector<std::int64_t> limits_;  // [decisions, max_variables]: cardinality, 1 if padded
  // Scratch reused across calls so the hot path does not allocate.
  std::vector<double> lse_;    // log-normaliser per group
  std::vector<double> grad_;   // gradient for step()
};

// Validates a layout and its modes; returns the number of logits it needs.
std::int64_t check_layout(const Layout& layout, const std::vector<Mode>& modes);

}  // namespace fpnas
