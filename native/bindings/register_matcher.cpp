// Bindings for infershield::Matcher: convert buffers, release the GIL, nothing else.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "infershield/matcher.hpp"
#include "register.hpp"

namespace py = pybind11;

namespace infershield::bindings {
namespace {

py::list to_py(const std::vector<MatchResult>& matches) {
  py::list out(matches.size());
  for (std::size_t i = 0; i < matches.size(); ++i) {
    const MatchResult& r = matches[i];
    py::object start = r.start < 0 ? py::none() : py::object(py::int_(r.start));
    out[i] = py::make_tuple(r.index, std::move(start), r.end);
  }
  return out;
}

py::list to_py(const std::vector<std::uint32_t>& ids) {
  py::list out(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) out[i] = py::int_(ids[i]);
  return out;
}

// Holds references to every bytes object for as long as the views are used without the GIL,
// so a caller mutating its list meanwhile cannot free a buffer under us.
struct BatchViews {
  std::vector<py::object> keep;
  std::vector<std::string_view> views;
  explicit BatchViews(const py::sequence& seq) {
    const std::size_t n = py::len(seq);
    keep.reserve(n);
    views.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      py::object item = seq[i];
      views.push_back(bytes_view(item));
      keep.push_back(std::move(item));
    }
  }
};

const char* cache_status_name(CacheStatus s) {
  switch (s) {
    case CacheStatus::kHit:
      return "hit";
    case CacheStatus::kMissCompiled:
      return "compiled";
    case CacheStatus::kStaleRebuilt:
      return "rebuilt";
    case CacheStatus::kDisabled:
      break;
  }
  return "disabled";
}

}  // namespace

void register_matcher(py::module_& m) {
  // CompileError carries the offending rule's id and index as attributes.
  py::object compile_error = py::reinterpret_steal<py::object>(
      PyErr_NewException("infershield._native.CompileError", PyExc_ValueError, nullptr));
  m.attr("CompileError") = compile_error;
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const CompileError& e) {
      py::object type = py::module_::import("infershield._native").attr("CompileError");
      py::object exc = type(e.what());
      exc.attr("rule_id") = e.rule_id();
      exc.attr("index") = e.index();
      PyErr_SetObject(type.ptr(), exc.ptr());
    } catch (const MatcherError& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });

  m.attr("CASELESS") = static_cast<std::uint32_t>(kCaseless);
  m.attr("DOTALL") = static_cast<std::uint32_t>(kDotAll);
  m.attr("MULTILINE") = static_cast<std::uint32_t>(kMultiline);
  m.attr("UTF8") = static_cast<std::uint32_t>(kUtf8);
  m.attr("UCP") = static_cast<std::uint32_t>(kUcp);
  m.attr("SOM") = static_cast<std::uint32_t>(kSom);

  py::class_<Matcher>(m, "Matcher")
      .def(py::init([](const std::vector<std::tuple<std::string, std::string, std::uint32_t>>& spec,
                       std::optional<std::string> cache_dir) {
             std::vector<Rule> rules;
             rules.reserve(spec.size());
             for (const auto& [id, expr, flags] : spec) rules.push_back({id, expr, flags});
             py::gil_scoped_release release;
             if (cache_dir) return std::make_unique<Matcher>(std::move(rules), *cache_dir);
             return std::make_unique<Matcher>(std::move(rules));
           }),
           py::arg("rules"), py::arg("cache_dir") = py::none(),
           "Compile (id, expression, flags) rules into one Hyperscan database.")
      .def(
          "scan",
          [](const Matcher& self, const py::bytes& data) {
            const std::string_view v = bytes_view(data);
            std::vector<MatchResult> r;
            {
              py::gil_scoped_release release;
              r = self.scan(v);
            }
            return to_py(r);
          },
          py::arg("data"), "All matches as (index, start or None, end) byte offsets.")
      .def(
          "matched",
          [](const Matcher& self, const py::bytes& data) {
            const std::string_view v = bytes_view(data);
            std::vector<std::uint32_t> r;
            {
              py::gil_scoped_release release;
              r = self.matched(v);
            }
            return to_py(r);
          },
          py::arg("data"), "Distinct matching rule indices, ascending.")
      .def(
          "scan_batch",
          [](const Matcher& self, const py::sequence& data) {
            BatchViews b(data);
            std::vector<std::vector<MatchResult>> r;
            {
              py::gil_scoped_release release;
              r = self.scan_batch(b.views);
            }
            py::list out(r.size());
            for (std::size_t i = 0; i < r.size(); ++i) out[i] = to_py(r[i]);
            return out;
          },
          py::arg("data"))
      .def(
          "matched_batch",
          [](const Matcher& self, const py::sequence& data) {
            BatchViews b(data);
            std::vector<std::vector<std::uint32_t>> r;
            {
              py::gil_scoped_release release;
              r = self.matched_batch(b.views);
            }
            py::list out(r.size());
            for (std::size_t i = 0; i < r.size(); ++i) out[i] = to_py(r[i]);
            return out;
          },
          py::arg("data"))
      .def("serialize",
           [](const Matcher& self) {
             std::string s;
             {
               py::gil_scoped_release release;
               s = self.serialize();
             }
             return py::bytes(s);
           })
      .def("__len__", &Matcher::size)
      .def_property_readonly("rule_set_hash", &Matcher::rule_set_hash)
      .def_property_readonly("cache_status",
                             [](const Matcher& self) { return cache_status_name(self.cache_status()); })
      .def_property_readonly("cache_path", &Matcher::cache_path)
      .def_static("hyperscan_version", &Matcher::hyperscan_version);
}

}  // namespace infershield::bindings
