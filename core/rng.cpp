#include "rng.hpp"

#include <stdexcept>

namespace fpnas {
namespace {

std::uint64_t splitmix64(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

void Rng::set_seed(std::uint64_t seed) {
  for (auto& word : s_) word = splitmix64(seed);
}

void Rng::set_state(const State& s) {
  if (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0) {
    throw std::invalid_argument("generator state (rng) must not be all zeros");
  }
  s_ = s;
}

}  // namespace fpnas
