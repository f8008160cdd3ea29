// A small portable pseudo-random generator: xoshiro256** seeded by splitmix64.
//
// Why our own: the algorithms behind std::*_distribution are implementation-defined, so the
// same seed gives different samples on different standard libraries. Everything here is
// plain 64-bit integer arithmetic and one exact int->double conversion, so a seed yields the
// same stream on every compiler and platform.
#pragma once

#include <array>
#include <cstdint>

namespace fpnas {

class Rng {
 public:
  static constexpr std::size_t kStateWords = 4;
  using State = std::array<std::uint64_t, kStateWords>;

  explicit Rng(std::uint64_t seed = 0) { set_seed(seed); }

  // Expands the seed with splitmix64, which never yields the all-zero state.
  void set_seed(std::uint64_t seed);

  std::uint64_t next_u64() {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, 1): the top 53 bits of next_u64() scaled by 2^-53 (exact in a double).
  double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

  const State& state() const { return s_; }
  // Throws std::invalid_argument for the all-zero state, a fixed point of xoshiro.
  void set_state(const State& s);

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

  State s_{};
};

}  // namespace fpnas
