// Bindings for infershield::analyze: read-only result objects, GIL released while analysing.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "infershield/analyzer.hpp"
#include "register.hpp"

namespace py = pybind11;

namespace infershield::bindings {

void register_analyzer(py::module_& m) {
  py::class_<Blob>(m, "Blob")
      .def_readonly("kind", &Blob::kind)
      .def_readonly("start", &Blob::start)
      .def_readonly("end", &Blob::end)
      .def_readonly("decoded", &Blob::decoded)
      .def("__eq__",
           [](const Blob& a, const Blob& b) {
             return a.kind == b.kind && a.start == b.start && a.end == b.end &&
                    a.decoded == b.decoded;
           })
      .def("__repr__", [](const Blob& b) {
        return "Blob(kind=" + py::repr(py::str(b.kind)).cast<std::string>() +
               ", start=" + std::to_string(b.start) + ", end=" + std::to_string(b.end) +
               ", decoded=" + py::repr(py::str(b.decoded)).cast<std::string>() + ")";
      });

  py::class_<Analysis>(m, "Analysis")
      .def_readonly("invalid_utf8", &Analysis::invalid_utf8)
      .def_property_readonly("invalid_offset",
                             [](const Analysis& a) -> py::object {
                               if (a.invalid_offset < 0) return py::none();
                               return py::int_(a.invalid_offset);
                             })
      .def_readonly("invalid_bytes", &Analysis::invalid_bytes)
      .def_readonly("zero_width", &Analysis::zero_width)
      .def_readonly("tag_chars", &Analysis::tag_chars)
      .def_readonly("tag_text", &Analysis::tag_text)
      .def_readonly("bidi", &Analysis::bidi)
      .def_readonly("invisible", &Analysis::invisible)
      .def_readonly("mixed_script_words", &Analysis::mixed_script_words)
      .def_readonly("mixed_script_count", &Analysis::mixed_script_count)
      .def_readonly("confusables", &Analysis::confusables)
      .def_readonly("blobs", &Analysis::blobs)
      .def_readonly("max_char_run", &Analysis::max_char_run)
      .def_readonly("max_space_run", &Analysis::max_space_run)
      .def_readonly("token_count", &Analysis::token_count)
      .def_readonly("unique_tokens", &Analysis::unique_tokens)
      .def_readonly("top_token", &Analysis::top_token)
      .def_readonly("top_token_ratio", &Analysis::top_token_ratio)
      .def_readonly("normalized", &Analysis::normalized)
      .def_readonly("transforms", &Analysis::transforms)
      .def_readonly("template_tokens", &Analysis::template_tokens)
      .def_readonly("code_points", &Analysis::code_points);

  m.def(
      "analyze",
      [](const py::bytes& data, std::size_t min_blob_len, bool canonical) {
        const std::string_view v = bytes_view(data);
        AnalyzerOptions opt;
        opt.min_blob_len = min_blob_len;
        opt.canonical = canonical;
        py::gil_scoped_release release;
        return analyze(v, opt);
      },
      py::arg("data"), py::arg("min_blob_len") = 24, py::arg("canonical") = true,
      "Analyse UTF-8 bytes (invalid UTF-8 is reported).");
  m.def(
      "analyze_batch",
      [](const py::sequence& seq, std::size_t min_blob_len) {
        std::vector<py::object> keep;
        std::vector<std::string_view> views;
        for (py::handle item : seq) {
          views.push_back(bytes_view(item));
          keep.push_back(py::reinterpret_borrow<py::object>(item));
        }
        AnalyzerOptions opt;
        opt.min_blob_len = min_blob_len;
        std::vector<Analysis> out;
        {
          py::gil_scoped_release release;
          out.reserve(views.size());
          for (std::string_view v : views) out.push_back(analyze(v, opt));
        }
        return out;
      },
      py::arg("data"), py::arg("min_blob_len") = 24);
  m.def(
      "normalize",
      [](const py::bytes& data) {
        const std::string_view v = bytes_view(data);
        std::string out;
        {
          py::gil_scoped_release release;
          out = normalize(v);
        }
        return out;
      },
      py::arg("data"));
  m.def("template_token_list", &template_token_list);
}

}  // namespace infershield::bindings
