// Each binding file exposes one register_<thing>(module); module.cpp calls them all.
#pragma once

#include <pybind11/pybind11.h>

#include <string_view>

namespace infershield::bindings {

void register_matcher(pybind11::module_& m);
void register_analyzer(pybind11::module_& m);

/// A view over a bytes object's buffer. The caller keeps the object alive (bytes are
/// immutable, so the view stays valid while the GIL is released).
inline std::string_view bytes_view(const pybind11::handle& obj) {
  char* data = nullptr;
  Py_ssize_t len = 0;
  if (!PyBytes_Check(obj.ptr()) || PyBytes_AsStringAndSize(obj.ptr(), &data, &len) != 0)
    throw pybind11::type_error("expected bytes");
  return {data, static_cast<std::size_t>(len)};
}

}  // namespace infershield::bindings
