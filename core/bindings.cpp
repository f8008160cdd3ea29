// The one nanobind file: exposes fpnas::Distribution as fpnas_dsl._core.Distribution.
//
// Arrays cross without copies: inputs are read in place (any read-only or writable CPU array
// of the exact dtype, C-contiguous), outputs are fresh numpy arrays that own C++ buffers, and
// `logits` is a writable numpy view of the C++ buffer itself. A wrong dtype raises TypeError;
// wrong shapes and values raise ValueError (std::invalid_argument, translated by nanobind).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "distribution.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using fpnas::Mode;
using fpnas::Shape;
using AnyArray = nb::ndarray<nb::ro>;
template <class T>
using NumpyArray = nb::ndarray<nb::numpy, T>;

// The core plus a lock: sample() runs without the GIL, so calls from several Python threads
// must not interleave on the same object (to_joint replaces the buffers sample() reads).
struct PyDistribution {
  PyDistribution(fpnas::Layout layout, std::vector<Mode> modes, std::uint64_t seed)
      : core(std::move(layout), std::move(modes), seed) {}
  fpnas::Distribution core;
  std::mutex mutex;
};
using Lock = std::lock_guard<std::mutex>;

const char* dtype_name(nb::dlpack::dtype t) {
  if (t == nb::dtype<std::int64_t>()) return "int64";
  if (t == nb::dtype<std::int32_t>()) return "int32";
  if (t == nb::dtype<std::uint64_t>()) return "uint64";
  if (t == nb::dtype<double>()) return "float64";
  if (t == nb::dtype<float>()) return "float32";
  if (t == nb::dtype<bool>()) return "bool";
  return "another dtype";
}

// Checks dtype and memory layout; returns the element pointer and shape for the core.
template <class T>
std::pair<const T*, Shape> input(const AnyArray& a, const char* name, const char* want) {
  if (a.device_type() != nb::device::cpu::value) {
    throw nb::type_error((std::string(name) + " must be a CPU array").c_str());
  }
  if (a.dtype() != nb::dtype<T>()) {
    throw nb::type_error((std::string(name) + " must be an array of dtype " + want + ", got " +
                          dtype_name(a.dtype())).c_str());
  }
  // C-contiguous: strides (in elements) of a row-major array; an empty array always is.
  std::int64_t expected = 1;
  for (std::size_t i = a.ndim(); a.size() > 0 && i-- > 0;) {
    if (a.shape_ptr()[i] != 1 && a.stride_ptr() && a.stride_ptr()[i] != expected) {
      throw std::invalid_argument(std::string(name) +
                                  " must be C-contiguous (use numpy.ascontiguousarray)");
    }
    expected *= a.shape_ptr()[i];
  }
  return {static_cast<const T*>(a.data()), Shape{a.ndim(), a.shape_ptr()}};
}

// A new numpy array that owns (and will free) a C++ buffer.
template <class T>
NumpyArray<T> owned(std::unique_ptr<T[]> data, std::initializer_list<std::size_t> shape) {
  T* raw = data.release();
  nb::capsule owner(raw, [](void* p) noexcept { delete[] static_cast<T*>(p); });
  return NumpyArray<T>(raw, shape, owner);
}

// A buffer for an output the core overwrites entirely: no zeroing pass.
template <class T>
std::unique_ptr<T[]> uninitialized(std::size_t n) {
  return std::unique_ptr<T[]>(new T[n]);
}

std::vector<Mode> parse_modes(const std::vector<std::string>& names) {
  std::vector<Mode> modes;
  modes.reserve(names.size());
  for (const auto& name : names) {
    if (name == "factorized") {
      modes.push_back(Mode::kFactorized);
    } else if (name == "joint") {
      modes.push_back(Mode::kJoint);
    } else {
      throw std::invalid_argument("mode must be 'factorized' or 'joint', got '" + name + "'");
    }
  }
  return modes;
}

std::vector<std::string> mode_names(const std::vector<Mode>& modes) {
  std::vector<std::string> names;
  for (const Mode m : modes) names.emplace_back(m == Mode::kJoint ? "joint" : "factorized");
  return names;
}

NumpyArray<double> logits_view(PyDistribution& self) {
  // The capsule holds a reference to the buffer, so a view outlives a to_joint safely.
  using Buffer = std::shared_ptr<std::vector<double>>;
  auto* keep = new Buffer(self.core.logits_buffer());
  nb::capsule owner(keep, [](void* p) noexcept { delete static_cast<Buffer*>(p); });
  return NumpyArray<double>((*keep)->data(), {(*keep)->size()}, owner);
}

NumpyArray<std::int64_t> sample(PyDistribution& self, std::int64_t k) {
  std::unique_ptr<std::int64_t[]> out;
  std::size_t d = 0;
  std::size_t v = 0;
  {
    nb::gil_scoped_release no_gil;
    Lock lock(self.mutex);
    self.core.check_sample_count(k);
    d = static_cast<std::size_t>(self.core.num_decisions());
    v = static_cast<std::size_t>(self.core.max_variables());
    out.reset(new std::int64_t[static_cast<std::size_t>(k) * d * v]);
    self.core.sample(k, out.get());
  }
  return owned(std::move(out), {static_cast<std::size_t>(k), d, v});
}

NumpyArray<double> log_prob(PyDistribution& self, const AnyArray& samples) {
  auto [s, shape] = input<std::int64_t>(samples, "samples", "int64");
  Lock lock(self.mutex);
  const std::int64_t rows = shape.ndim > 0 ? shape.dims[0] : 0;  // checked by the core
  const auto k = static_cast<std::size_t>(std::max<std::int64_t>(rows, 0));
  auto out = uninitialized<double>(k);
  self.core.log_prob(s, shape, out.get());
  return owned(std::move(out), {k});
}

NumpyArray<double> grad(PyDistribution& self, const AnyArray& samples, const AnyArray& weights) {
  auto [s, shape] = input<std::int64_t>(samples, "samples", "int64");
  auto [w, wshape] = input<double>(weights, "weights", "float64");
  Lock lock(self.mutex);
  const auto n = static_cast<std::size_t>(self.core.num_params());
  auto out = uninitialized<double>(n);
  self.core.grad(s, shape, w, wshape, out.get());
  return owned(std::move(out), {n});
}

void adam_step(PyDistribution& self, const AnyArray& g, double lr) {
  auto [data, shape] = input<double>(g, "grad", "float64");
  Lock lock(self.mutex);
  self.core.adam_step(data, shape, lr);
}

void step(PyDistribution& self, const AnyArray& samples, const AnyArray& weights, double lr) {
  auto [s, shape] = input<std::int64_t>(samples, "samples", "int64");
  auto [w, wshape] = input<double>(weights, "weights", "float64");
  Lock lock(self.mutex);
  self.core.step(s, shape, w, wshape, lr);
}

NumpyArray<double> entropy_per_decision(PyDistribution& self) {
  Lock lock(self.mutex);
  const auto n = static_cast<std::size_t>(self.core.num_decisions());
  auto out = uninitialized<double>(n);
  self.core.entropy_per_decision(out.get());
  return owned(std::move(out), {n});
}

NumpyArray<std::int64_t> argmax(PyDistribution& self) {
  Lock lock(self.mutex);
  const auto d = static_cast<std::size_t>(self.core.num_decisions());
  const auto v = static_cast<std::size_t>(self.core.max_variables());
  auto out = uninitialized<std::int64_t>(d * v);
  self.core.argmax(out.get());
  return owned(std::move(out), {d, v});
}

template <class T>
NumpyArray<T> copy_out(const std::vector<T>& src) {
  auto out = uninitialized<T>(src.size());
  std::copy(src.begin(), src.end(), out.get());
  return owned(std::move(out), {src.size()});
}

nb::dict get_state(PyDistribution& self) {
  Lock lock(self.mutex);
  const fpnas::DistributionState st = self.core.state();
  nb::dict out;
  out["modes"] = mode_names(st.modes);
  out["logits"] = copy_out(st.logits);
  out["adam_m"] = copy_out(st.adam_m);
  out["adam_v"] = copy_out(st.adam_v);
  out["adam_step"] = copy_out(st.adam_steps);
  out["rng"] = copy_out(std::vector<std::uint64_t>(st.rng.begin(), st.rng.end()));
  return out;
}

template <class T>
std::vector<T> copy_in(const AnyArray& a, const char* name, const char* want) {
  auto [data, shape] = input<T>(a, name, want);
  if (shape.ndim != 1) {
    throw std::invalid_argument(std::string("state: ") + name + " must be 1-dimensional");
  }
  return std::vector<T>(data, data + shape.dims[0]);
}

void set_state(PyDistribution& self, const std::vector<std::string>& modes,
               const AnyArray& logits, const AnyArray& adam_m, const AnyArray& adam_v,
               const AnyArray& adam_steps, const AnyArray& rng) {
  fpnas::DistributionState st;
  st.modes = parse_modes(modes);
  st.logits = copy_in<double>(logits, "logits", "float64");
  st.adam_m = copy_in<double>(adam_m, "adam_m", "float64");
  st.adam_v = copy_in<double>(adam_v, "adam_v", "float64");
  st.adam_steps = copy_in<std::int64_t>(adam_steps, "adam_step", "int64");
  const auto words = copy_in<std::uint64_t>(rng, "rng", "uint64");
  if (words.size() != st.rng.size()) {
    throw std::invalid_argument("state: rng must have " + std::to_string(st.rng.size()) +
                                " entries, got " + std::to_string(words.size()));
  }
  std::copy(words.begin(), words.end(), st.rng.begin());
  Lock lock(self.mutex);
  self.core.load_state(st);
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "C++ core of fpnas: the architecture distribution P(A | alpha).";
  m.attr("MAX_CATEGORICAL") = fpnas::kMaxCategorical;
  m.attr("MAX_PARAMS") = fpnas::kMaxParams;
  m.attr("MAX_SAMPLE_ELEMENTS") = fpnas::kMaxSampleElements;

  nb::class_<PyDistribution>(m, "Distribution")
      .def(
          "__init__",
          [](PyDistribution* self, fpnas::Layout layout, const std::vector<std::string>& modes,
             std::uint64_t seed) {
            new (self) PyDistribution(std::move(layout), parse_modes(modes), seed);
          },
          "layout"_a, "modes"_a, "seed"_a)
      .def_prop_ro("layout", [](PyDistribution& s) { Lock l(s.mutex); return s.core.layout(); })
      .def_prop_ro("modes", [](PyDistribution& s) {
        Lock l(s.mutex);
        return mode_names(s.core.modes());
      })
      .def_prop_ro("num_params", [](PyDistribution& s) {
        Lock l(s.mutex);
        return s.core.num_params();
      })
      .def_prop_ro("num_decisions", [](PyDistribution& s) { return s.core.num_decisions(); })
      .def_prop_ro("max_variables", [](PyDistribution& s) { return s.core.max_variables(); })
      .def_prop_ro(
          "logits", [](PyDistribution& s) { Lock l(s.mutex); return logits_view(s); },
          nb::rv_policy::automatic)  // the view owns a reference to the buffer
      .def("entropy", [](PyDistribution& s) { Lock l(s.mutex); return s.core.entropy(); })
      .def("entropy_per_decision", &entropy_per_decision)
      .def("sample_size", [](PyDistribution& s, double lam) {
        Lock l(s.mutex);
        return s.core.sample_size(lam);
      }, "lam"_a)
      .def("sample", &sample, "k"_a)
      .def("log_prob", &log_prob, "samples"_a)
      .def("grad", &grad, "samples"_a, "weights"_a)
      .def("adam_step", &adam_step, "grad"_a, "lr"_a)
      .def("step", &step, "samples"_a, "weights"_a, "lr"_a)
      .def("to_joint", [](PyDistribution& s, const std::vector<std::int64_t>& decisions) {
        Lock l(s.mutex);
        s.core.to_joint(decisions);
      }, "decisions"_a)
      .def("to_joint_all", [](PyDistribution& s) { Lock l(s.mutex); s.core.to_joint_all(); })
      .def("argmax", &argmax)
      .def("get_state", &get_state)
      .def("set_state", &set_state, "modes"_a, "logits"_a, "adam_m"_a, "adam_v"_a,
           "adam_step"_a, "rng"_a)
      .def("set_seed", [](PyDistribution& s, std::uint64_t seed) {
        Lock l(s.mutex);
        s.core.set_seed(seed);
      }, "seed"_a);
}
