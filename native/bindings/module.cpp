// The infershield._native extension: thin bindings over the pure C++ core.
#include <pybind11/pybind11.h>

#include "register.hpp"

PYBIND11_MODULE(_native, m) {
  m.doc() = "InferShield native core: Hyperscan matcher and UTF-8 token analysis.";
  infershield::bindings::register_matcher(m);
  infershield::bindings::register_analyzer(m);
}
