// Token-level analysis of UTF-8 text: invisible characters, confusables, encoded blobs,
// repetition, chat-template tokens and a normalised form for the matcher.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace infershield {

/// An encoded run (base64, base64_data_uri, hex, url). `decoded` is the decoded text when
/// it is valid, mostly printable UTF-8, else empty ("opaque"). Offsets are raw byte offsets.
struct Blob {
  std::string kind;
  std::size_t start = 0;
  std::size_t end = 0;
  std::string decoded;
};

struct AnalyzerOptions {
  /// Shortest encoded run reported as a blob, in bytes.
  std::size_t min_blob_len = 24;
  /// Share of printable code points a decoded blob needs to keep its text.
  double min_printable = 0.85;
  /// Caps so a hostile input cannot make the analysis itself large.
  std::size_t max_blobs = 256;
  std::size_t max_decoded_bytes = 1 << 20;
  std::size_t max_words_kept = 64;
  /// Build the canonical view in `normalized` (blobs decoded in place, spaced letters
  /// joined, ROT13/reversed segments decoded); false keeps the plain fold.
  bool canonical = true;
  /// How many layers of nested encodings the canonical view decodes.
  std::size_t decode_depth = 2;
};

struct Analysis {
  bool invalid_utf8 = false;
  /// Byte offset of the first invalid UTF-8 sequence, -1 if none.
  std::int64_t invalid_offset = -1;
  std::uint32_t invalid_bytes = 0;
  /// Zero-width / format characters (ZWSP, ZWNJ, ZWJ, LRM/RLM, word joiner, BOM, soft
  /// hyphen …); ZWJ/ZWNJ inside emoji sequences or joining scripts are legitimate, not counted.
  std::uint32_t zero_width = 0;
  /// Unicode tag characters outside emoji flag sequences ("ASCII smuggling").
  std::uint32_t tag_chars = 0;
  /// The printable ASCII the tag characters spell out.
  std::string tag_text;
  /// Bidi embeddings/overrides/isolates (U+202A–202E, U+2066–2069).
  std::uint32_t bidi = 0;
  std::uint32_t invisible = 0;
  /// Words mixing Latin letters with Cyrillic/Greek homoglyphs (first max_words_kept).
  std::vector<std::string> mixed_script_words;
  std::uint32_t mixed_script_count = 0;
  /// Homoglyphs inside mixed words plus fullwidth/mathematical letter forms.
  std::uint32_t confusables = 0;
  std::vector<Blob> blobs;
  /// Longest run of one code point other than the ASCII space.
  std::uint32_t max_char_run = 0;
  /// Longest run of ASCII spaces.
  std::uint32_t max_space_run = 0;
  std::uint32_t token_count = 0;
  std::uint32_t unique_tokens = 0;
  std::string top_token;
  /// Occurrences of the most frequent (case-folded) token over token_count. Tokens are
  /// space-separated and must hold a letter or digit (table pipes and rules do not count).
  double top_token_ratio = 0.0;
  /// The canonical view: confusables, full-width, diacritics and leetspeak (inside tokens
  /// that mix letters and digits) folded; invisible and tag characters removed; spaced or
  /// dotted letters joined ("i g n o r e", "D.i.s.r.e.g.a.r.d"); readable base64/hex/url
  /// blobs replaced by their text; ROT13 and reversed segments decoded; lowercase with
  /// whitespace collapsed. Every detector scores it next to the original.
  std::string normalized;
  /// What the canonical view decoded or joined: "blob", "spaced", "rot13", "reversed".
  std::vector<std::string> transforms;
  /// Chat-template control tokens found (canonical spelling, first occurrence order).
  std::vector<std::string> template_tokens;
  std::uint32_t code_points = 0;
};

/// Analyse `text` in one pass over its code points (plus a byte pass for blobs). Invalid
/// UTF-8 is reported and skipped, never fatal.
Analysis analyze(std::string_view text, const AnalyzerOptions& options = {});

/// The canonical view alone (`Analysis::normalized`).
std::string normalize(std::string_view text);

/// The canonical chat-template tokens the analyzer looks for.
const std::vector<std::string>& template_token_list();

}  // namespace infershield
