#include "infershield/analyzer.hpp"

#include <algorithm>
#include <cstring>
#include <string_view>
#include <unordered_map>

#include "infershield/utf8.hpp"

namespace infershield {
namespace {

bool is_bidi(std::uint32_t c) { return (c >= 0x202A && c <= 0x202E) || (c >= 0x2066 && c <= 0x2069); }
bool is_tag(std::uint32_t c) { return c >= 0xE0000 && c <= 0xE007F; }
bool is_zero_width(std::uint32_t c) {
  return (c >= 0x200B && c <= 0x200F) || (c >= 0x2060 && c <= 0x2064) || c == 0xFEFF ||
         c == 0x00AD || c == 0x180E || c == 0x034F || c == 0x061C || c == 0x115F || c == 0x1160 ||
         c == 0x3164 || c == 0xFFA0;
}
bool is_variation_selector(std::uint32_t c) {
  return (c >= 0xFE00 && c <= 0xFE0F) || (c >= 0xE0100 && c <= 0xE01EF);
}
bool is_space(std::uint32_t c) {
  return c == ' ' || (c >= 0x09 && c <= 0x0D) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}
// Emoji and pictographs: a ZWJ after one of these is part of an emoji sequence.
bool is_emoji_context(std::uint32_t c) {
  return c >= 0x1F000 || (c >= 0x2600 && c <= 0x27BF) || (c >= 0x2B00 && c <= 0x2BFF) ||
         c == 0xFE0F || c == 0x200D;
}
// Scripts where ZWJ/ZWNJ control glyph joining (Arabic, Syriac, Indic …).
bool is_joining_script(std::uint32_t c) { return (c >= 0x0600 && c <= 0x08FF) || (c >= 0x0900 && c <= 0x0DFF); }
// Scripts written without spaces, where U+200B marks word breaks (Thai, Lao, Tibetan,
// Myanmar, Khmer).
bool is_zwsp_script(std::uint32_t c) {
  return (c >= 0x0E00 && c <= 0x0FFF) || (c >= 0x1000 && c <= 0x109F) || (c >= 0x1780 && c <= 0x17FF);
}
// A token that carries content: it has a letter or digit (any non-ASCII byte counts), so the
// pipes and rules of a markdown table do not look like a flood of one token.
bool has_content(std::string_view tok) {
  for (const char ch : tok) {
    const auto u = static_cast<unsigned char>(ch);
    if (u >= 0x80 || (u >= '0' && u <= '9') || ((u | 0x20) >= 'a' && (u | 0x20) <= 'z')) return true;
  }
  return false;
}

bool is_ascii_alpha(std::uint32_t c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
bool is_latin_letter(std::uint32_t c) {
  return is_ascii_alpha(c) || (c >= 0xC0 && c <= 0x24F && c != 0xD7 && c != 0xF7);
}
bool is_cyrillic(std::uint32_t c) { return c >= 0x0400 && c <= 0x052F; }
bool is_greek(std::uint32_t c) { return (c >= 0x0370 && c <= 0x03FF) || (c >= 0x1F00 && c <= 0x1FFF); }

// Cyrillic and Greek letters that render like a Latin letter (lowercase target), else 0.
char homoglyph(std::uint32_t c) {
  switch (c) {
    // Cyrillic lowercase
    case 0x0430: return 'a';
    case 0x0435: return 'e';
    case 0x043E: return 'o';
    case 0x0440: return 'p';
    case 0x0441: return 'c';
    case 0x0443: return 'y';
    case 0x0445: return 'x';
    case 0x0455: return 's';
    case 0x0456: return 'i';
    case 0x0458: return 'j';
    case 0x0501: return 'd';
    case 0x051B: return 'q';
    case 0x051D: return 'w';
    case 0x04CF: return 'l';
    case 0x04BB: return 'h';
    case 0x0457: return 'i';
    case 0x043A: return 'k';
    case 0x0442: return 't';
    case 0x043C: return 'm';
    case 0x043D: return 'h';
    case 0x0432: return 'b';
    // Cyrillic uppercase
    case 0x0410: return 'a';
    case 0x0412: return 'b';
    case 0x0415: return 'e';
    case 0x041A: return 'k';
    case 0x041C: return 'm';
    case 0x041D: return 'h';
    case 0x041E: return 'o';
    case 0x0420: return 'p';
    case 0x0421: return 'c';
    case 0x0422: return 't';
    case 0x0423: return 'y';
    case 0x0425: return 'x';
    case 0x0405: return 's';
    case 0x0406: return 'i';
    case 0x0408: return 'j';
    case 0x04C0: return 'l';
    // Greek
    case 0x03B1: return 'a';
    case 0x03BF: return 'o';
    case 0x03C1: return 'p';
    case 0x03B9: return 'i';
    case 0x03BA: return 'k';
    case 0x03BD: return 'v';
    case 0x03C4: return 't';
    case 0x03C5: return 'u';
    case 0x03C7: return 'x';
    case 0x0391: return 'a';
    case 0x0392: return 'b';
    case 0x0395: return 'e';
    case 0x0396: return 'z';
    case 0x0397: return 'h';
    case 0x0399: return 'i';
    case 0x039A: return 'k';
    case 0x039C: return 'm';
    case 0x039D: return 'n';
    case 0x039F: return 'o';
    case 0x03A1: return 'p';
    case 0x03A4: return 't';
    case 0x03A5: return 'y';
    case 0x03A7: return 'x';
    default: return 0;
  }
}

// Latin-1 letters U+00C0–U+00FF without their accents ('*' = not a letter).
constexpr char kLatin1Fold[] = "aaaaaaaceeeeiiiidnooooo*ouuuuytsaaaaaaaceeeeiiiidnooooo*ouuuuyty";

// Latin Extended-A U+0100–U+017F without their accents (Turkish, Polish, Czech …).
constexpr char kLatinExtAFold[] =
    "aaaaaaccccccccddddeeeeeeeeeegggggggghhhhiiiiiiiiiiiijjkkklllllll"
    "lllnnnnnnnnnoooooooorrrrrrssssssssttttttuuuuuuuuuuuuwwyyyzzzzzzs";

// Latin Extended Additional U+1EA0–U+1EF9 (Vietnamese vowels with tone marks).
char vietnamese_fold(std::uint32_t c) {
  if (c >= 0x1EA0 && c <= 0x1EB7) return 'a';
  if (c >= 0x1EB8 && c <= 0x1EC7) return 'e';
  if (c >= 0x1EC8 && c <= 0x1ECB) return 'i';
  if (c >= 0x1ECC && c <= 0x1EE3) return 'o';
  if (c >= 0x1EE4 && c <= 0x1EF1) return 'u';
  if (c >= 0x1EF2 && c <= 0x1EF9) return 'y';
  return 0;
}

// Compatibility forms that fold to one ASCII character (fullwidth, mathematical
// alphanumerics, circled letters, accented Latin-1); 0 if `c` is not one.
char compat_fold(std::uint32_t c) {
  if (c >= 0xFF01 && c <= 0xFF5E) {
    const std::uint32_t a = c - 0xFEE0;
    return static_cast<char>(a >= 'A' && a <= 'Z' ? a + 32 : a);
  }
  if (c >= 0x1D400 && c <= 0x1D6A3) {
    const std::uint32_t k = (c - 0x1D400) % 52;
    return static_cast<char>('a' + (k % 26));
  }
  if (c >= 0x1D7CE && c <= 0x1D7FF) return static_cast<char>('0' + (c - 0x1D7CE) % 10);
  if (c >= 0x24B6 && c <= 0x24E9) return static_cast<char>('a' + (c - 0x24B6) % 26);
  if (c >= 0xC0 && c <= 0xFF) {
    const char f = kLatin1Fold[c - 0xC0];
    return f == '*' ? 0 : f;
  }
  if (c >= 0x100 && c <= 0x17F) return kLatinExtAFold[c - 0x100];
  if (c == 0x1A0 || c == 0x1A1) return 'o';  // Vietnamese ơ
  if (c == 0x1AF || c == 0x1B0) return 'u';  // Vietnamese ư
  if (c >= 0x1EA0 && c <= 0x1EF9) return vietnamese_fold(c);
  return 0;
}
bool is_confusable_form(std::uint32_t c) {
  return (c >= 0xFF01 && c <= 0xFF5E) || (c >= 0x1D400 && c <= 0x1D7FF) ||
         (c >= 0x24B6 && c <= 0x24E9);
}

std::uint32_t lower_cp(std::uint32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c >= 0x0410 && c <= 0x042F) return c + 0x20;
  if (c >= 0x0400 && c <= 0x040F) return c + 0x50;
  if (c >= 0x0391 && c <= 0x03A9 && c != 0x03A2) return c + 0x20;
  return c;
}

char leet(std::uint32_t c) {
  switch (c) {
    case '0': return 'o';
    case '1': return 'i';
    case '3': return 'e';
    case '4': return 'a';
    case '5': return 's';
    case '7': return 't';
    case '8': return 'b';
    case '9': return 'g';
    case '@': return 'a';
    case '$': return 's';
    default: return 0;
  }
}

bool is_word_cp(std::uint32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || is_ascii_alpha(c) || c == '@' || c == '$' || c == '_';
  if (c >= 0xA1 && c <= 0xBF) return false;           // Latin-1 punctuation and symbols
  if (c >= 0x2010 && c <= 0x205E) return false;       // general punctuation
  if (c >= 0x3000 && c <= 0x303F) return false;       // CJK punctuation
  if (c >= 0xFF01 && c <= 0xFF5E) {                   // fullwidth: only the alphanumerics
    const char a = compat_fold(c);
    return (a >= '0' && a <= '9') || (a >= 'a' && a <= 'z');
  }
  return true;
}

bool is_letter_cp(std::uint32_t c) {
  if (c < 0x80) return is_ascii_alpha(c);
  const char f = compat_fold(c);
  if (f) return f >= 'a' && f <= 'z';
  return is_word_cp(c);
}

const std::vector<std::string> kTemplateTokens = {
    "<|im_start|>",       "<|im_end|>",         "<|im_sep|>",      "<|endoftext|>",
    "<|eot_id|>",         "<|eom_id|>",         "<|start_header_id|>", "<|end_header_id|>",
    "<|begin_of_text|>",  "<|end_of_text|>",    "<|system|>",      "<|user|>",
    "<|assistant|>",      "<|end|>",            "<|python_tag|>",  "<|start|>",
    "<|channel|>",        "<|message|>",        "[INST]",          "[/INST]",
    "<<SYS>>",            "<</SYS>>",           "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
    "<start_of_turn>",    "<end_of_turn>",      "### Instruction:", "### Response:",
    "### System:",        "<|fim_prefix|>",     "<|fim_middle|>",  "<|fim_suffix|>",
};

// The normaliser and the word-level statistics share one word buffer.
class WordState {
 public:
  WordState(Analysis& a, const AnalyzerOptions& opt) : a_(a), opt_(opt) {}

  void push(std::uint32_t c) {
    orig_.push_back(c);
    if (is_latin_letter(c) || is_confusable_form(c)) has_latin_ = true;
    if (is_cyrillic(c) || is_greek(c)) {
      if (homoglyph(c)) {
        ++homoglyphs_;
      } else {
        has_foreign_other_ = true;
      }
    }
    if (is_letter_cp(c)) has_letter_ = true;
  }

  void flush() {
    if (orig_.empty()) return;
    const bool mixed = has_latin_ && homoglyphs_ > 0;
    // A word made only of look-alikes ("рор") is folded too; real Cyrillic/Greek words
    // almost always contain a letter with no Latin twin and are left alone.
    const bool fold_foreign = mixed || (homoglyphs_ > 0 && !has_foreign_other_);
    if (mixed) {
      ++a_.mixed_script_count;
      a_.confusables += homoglyphs_;
      if (a_.mixed_script_words.size() < opt_.max_words_kept) {
        std::string w;
        for (std::uint32_t c : orig_) utf8_append(w, c);
        a_.mixed_script_words.push_back(std::move(w));
      }
    }
    std::string& out = a_.normalized;
    for (std::uint32_t c : orig_) {
      if (const char f = compat_fold(c)) {
        if (has_letter_ && leet(static_cast<unsigned char>(f))) {
          out.push_back(leet(static_cast<unsigned char>(f)));
        } else {
          out.push_back(f);
        }
        continue;
      }
      if (fold_foreign) {
        if (const char h = homoglyph(c)) {
          out.push_back(h);
          continue;
        }
      }
      if (c < 0x80) {
        const char l = has_letter_ ? leet(c) : 0;
        out.push_back(l ? l : static_cast<char>(lower_cp(c)));
        continue;
      }
      utf8_append(out, lower_cp(c));
    }
    orig_.clear();
    has_latin_ = has_letter_ = has_foreign_other_ = false;
    homoglyphs_ = 0;
  }

 private:
  Analysis& a_;
  const AnalyzerOptions& opt_;
  std::vector<std::uint32_t> orig_;
  bool has_latin_ = false;
  bool has_letter_ = false;
  bool has_foreign_other_ = false;
  std::uint32_t homoglyphs_ = 0;
};

bool is_hex(unsigned char c) { return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); }
int hex_val(unsigned char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; }
bool is_b64(unsigned char c) {
  return (c >= '0' && c <= '9') || is_ascii_alpha(c) || c == '+' || c == '/' || c == '-' || c == '_';
}
int b64_val(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  return 63;  // '/' or '_'
}
bool is_url_unreserved(unsigned char c) {
  return (c >= '0' && c <= '9') || is_ascii_alpha(c) || c == '.' || c == '_' || c == '~' ||
         c == '-' || c == '+';
}

// Keeps `s` only if it is valid UTF-8 and mostly printable; otherwise clears it.
void keep_if_printable(std::string& s, double min_printable) {
  if (s.empty() || utf8_first_invalid(s) != std::string_view::npos) {
    s.clear();
    return;
  }
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  std::size_t total = 0, printable = 0;
  for (std::size_t i = 0; i < s.size();) {
    std::uint32_t c = 0;
    const std::size_t len = utf8_decode(p + i, s.size() - i, &c);
    if (len == 0) break;  // unreachable: validated above
    i += len;
    ++total;
    if ((c >= 0x20 && c != 0x7F && !(c >= 0x80 && c < 0xA0) && c != 0xFFFD) || c == '\t' ||
        c == '\n' || c == '\r')
      ++printable;
  }
  if (static_cast<double>(printable) < min_printable * static_cast<double>(total)) s.clear();
}

class BlobFinder {
 public:
  BlobFinder(std::string_view s, const AnalyzerOptions& opt, Analysis& a)
      : p_(reinterpret_cast<const unsigned char*>(s.data())), n_(s.size()), opt_(opt), a_(a) {}

  void run() {
    find_b64_hex();
    find_url();
    std::sort(a_.blobs.begin(), a_.blobs.end(),
              [](const Blob& x, const Blob& y) { return x.start < y.start; });
  }

 private:
  bool full() const { return a_.blobs.size() >= opt_.max_blobs; }

  void add(const char* kind, std::size_t start, std::size_t end, std::string decoded) {
    if (full()) return;
    if (decoded_total_ + decoded.size() > opt_.max_decoded_bytes) decoded.clear();
    keep_if_printable(decoded, opt_.min_printable);
    decoded_total_ += decoded.size();
    a_.blobs.push_back({kind, start, end, std::move(decoded)});
  }

  void find_b64_hex() {
    std::size_t i = 0;
    while (i < n_ && !full()) {
      if (!is_b64(p_[i])) {
        ++i;
        continue;
      }
      const std::size_t start = i;
      bool all_hex = true, hex_letter = false, digit = false, upper = false, lower = false;
      bool std_sym = false, url_sym = false;
      while (i < n_ && is_b64(p_[i])) {
        const unsigned char c = p_[i];
        if (!is_hex(c)) all_hex = false;
        if (is_ascii_alpha(c) && is_hex(c)) hex_letter = true;
        if (c >= '0' && c <= '9') digit = true;
        if (c >= 'A' && c <= 'Z') upper = true;
        if (c >= 'a' && c <= 'z') lower = true;
        if (c == '+' || c == '/') std_sym = true;
        if (c == '-' || c == '_') url_sym = true;
        ++i;
      }
      const std::size_t core_end = i;
      std::size_t pad = 0;
      while (i < n_ && p_[i] == '=' && pad < 2) {
        ++i;
        ++pad;
      }
      const std::size_t len = core_end - start;
      if (len < opt_.min_blob_len) continue;
      if (all_hex && hex_letter && digit) {
        std::string out;
        out.reserve(len / 2);
        for (std::size_t k = start; k + 1 < core_end; k += 2)
          out.push_back(static_cast<char>(hex_val(p_[k]) * 16 + hex_val(p_[k + 1])));
        add("hex", start, core_end, std::move(out));
        continue;
      }
      // Prose never forms one 24+ character run with digits or '+/' and both cases;
      // plain long words (no digits, no symbols, no padding) are not reported.
      if (std_sym && url_sym) continue;
      if (!(digit || std_sym || pad > 0) || !(upper || lower)) continue;
      if (len % 4 == 1) continue;  // impossible base64 length
      std::string out;
      out.reserve(len * 3 / 4);
      std::uint32_t acc = 0;
      int bits = 0;
      for (std::size_t k = start; k < core_end; ++k) {
        acc = (acc << 6) | static_cast<std::uint32_t>(b64_val(p_[k]));
        bits += 6;
        if (bits >= 8) {
          bits -= 8;
          out.push_back(static_cast<char>((acc >> bits) & 0xFF));
        }
      }
      static constexpr std::string_view kDataUri = "base64,";
      const bool data_uri =
          start >= kDataUri.size() &&
          std::memcmp(p_ + start - kDataUri.size(), kDataUri.data(), kDataUri.size()) == 0;
      add(data_uri ? "base64_data_uri" : "base64", start, i, std::move(out));
    }
  }

  void find_url() {
    std::size_t i = 0;
    while (i < n_ && !full()) {
      const auto is_escape = [&](std::size_t k) {
        return p_[k] == '%' && k + 2 < n_ && is_hex(p_[k + 1]) && is_hex(p_[k + 2]);
      };
      if (!(is_url_unreserved(p_[i]) || (i + 2 < n_ && is_escape(i)))) {
        ++i;
        continue;
      }
      const std::size_t start = i;
      std::size_t escapes = 0;
      std::string out;
      while (i < n_) {
        if (i + 2 < n_ && is_escape(i)) {
          out.push_back(static_cast<char>(hex_val(p_[i + 1]) * 16 + hex_val(p_[i + 2])));
          ++escapes;
          i += 3;
        } else if (is_url_unreserved(p_[i])) {
          out.push_back(p_[i] == '+' ? ' ' : static_cast<char>(p_[i]));
          ++i;
        } else {
          break;
        }
      }
      // quote() escapes only spaces and punctuation: one escape per ~6 letters of prose.
      if (i - start >= opt_.min_blob_len && escapes >= 3 && escapes * 16 >= i - start)
        add("url", start, i, std::move(out));
    }
  }

  const unsigned char* p_;
  std::size_t n_;
  const AnalyzerOptions& opt_;
  Analysis& a_;
  std::size_t decoded_total_ = 0;
};

void find_template_tokens(Analysis& a) {
  // The normalised text is lowercase and has invisibles/fullwidth folded, so searching it
  // also catches "<|im_\u200bstart|>" and "＜|im_start|＞".
  static const std::vector<std::string> lowered = [] {
    std::vector<std::string> v;
    for (const std::string& t : kTemplateTokens) {
      std::string l = t;
      for (char& c : l) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
      v.push_back(l);
    }
    return v;
  }();
  const std::string_view hay(a.normalized);
  if (hay.find_first_of("<[#") == std::string_view::npos) return;
  std::vector<std::pair<std::size_t, std::size_t>> found;  // (position, token index)
  for (std::size_t t = 0; t < lowered.size(); ++t) {
    const std::size_t pos = hay.find(lowered[t]);
    if (pos != std::string_view::npos) found.emplace_back(pos, t);
  }
  std::sort(found.begin(), found.end());
  for (const auto& f : found) a.template_tokens.push_back(kTemplateTokens[f.second]);
}

void token_stats(Analysis& a) {
  std::unordered_map<std::string_view, std::uint32_t> counts;
  const std::string_view s(a.normalized);
  std::uint32_t best = 0;
  std::string_view best_tok;
  std::size_t i = 0;
  while (i < s.size()) {
    const std::size_t j = std::min(s.find(' ', i), s.size());
    if (j > i && has_content(s.substr(i, j - i))) {
      const std::string_view tok = s.substr(i, j - i);
      const std::uint32_t c = ++counts[tok];
      ++a.token_count;
      if (c > best) {
        best = c;
        best_tok = tok;
      }
    }
    i = j + 1;
  }
  a.unique_tokens = static_cast<std::uint32_t>(counts.size());
  a.top_token = std::string(best_tok.substr(0, 64));
  // A 64-byte cut may split a code point; trim back to a boundary.
  while (!a.top_token.empty() && utf8_first_invalid(a.top_token) != std::string_view::npos)
    a.top_token.pop_back();
  a.top_token_ratio = a.token_count ? static_cast<double>(best) / a.token_count : 0.0;
}


bool is_spacing_sep(std::uint32_t c) {
  return c == ' ' || c == '.' || c == '-' || c == '_' || c == '*' || c == '|' || c == '/' ||
         c == '~' || c == 0xB7 || c == 0x2022 || c == 0x2219;
}
// A character that can stand for one letter of a spelled-out word (letters, leet digits).
bool is_spell_cp(std::uint32_t c) { return c != '_' && !is_space(c) && is_word_cp(c); }

struct Cp {
  std::uint32_t c;
  std::size_t at;   // byte offset
  std::size_t len;  // bytes
};

std::vector<Cp> code_points(std::string_view s) {
  std::vector<Cp> v;
  v.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (std::size_t i = 0; i < s.size();) {
    std::uint32_t c = 0;
    std::size_t len = utf8_decode(p + i, s.size() - i, &c);
    if (len == 0) {
      c = 0xFFFD;
      len = 1;
    }
    v.push_back({c, i, len});
    i += len;
  }
  return v;
}

// Joins letters spelled out one by one ("i g n o r e  a l l", "D.i.s.r.e.g.a.r.d a.l.l"):
// a run is single letters separated by one repeated separator; runs separated by a
// different gap (two spaces, or a space between dotted runs) become words. A chain is joined
// only with four letters or more and one run of at least three, so "U.S.A." and "e.g." stay.
bool join_spaced(std::string_view s, std::string& out) {
  // Cheap exit: spelled-out text has three equal separators two code points apart
  // ("i g n", "a.l.l.", "ｉ ｇ ｎ"), found without allocating.
  bool candidate = false;
  {
    std::uint32_t last[5] = {0, 0, 0, 0, 0};  // the last five code points, newest first
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    for (std::size_t i = 0; i < s.size() && !candidate;) {
      std::uint32_t c = 0;
      std::size_t len = utf8_decode(p + i, s.size() - i, &c);
      if (len == 0) {
        c = 0xFFFD;
        len = 1;
      }
      i += len;
      for (int k = 4; k > 0; --k) last[k] = last[k - 1];
      last[0] = c;
      const std::uint32_t sep = last[4];
      candidate = is_spacing_sep(sep) && last[2] == sep && last[0] == sep && last[1] != sep &&
                  last[3] != sep && !is_space(last[1]) && !is_space(last[3]);
    }
  }
  if (!candidate) return false;
  const std::vector<Cp> cp = code_points(s);
  const std::size_t n = cp.size();
  const auto spell = [&](std::size_t k) { return k < n && is_spell_cp(cp[k].c); };
  // An element of a run: one visible character (a letter, a digit or punctuation such as
  // the ':' and '/' of a spelled-out URL) with the separator or a space on both sides.
  // A letter only needs no letter next to it (`"i g n` starts after a quote).
  const auto element = [&](std::size_t k, std::uint32_t sep) {
    if (k >= n || is_space(cp[k].c)) return false;
    const bool letter = spell(k);
    const bool left = k == 0 || is_space(cp[k - 1].c) || cp[k - 1].c == sep ||
                      (letter && !spell(k - 1));
    const bool right = k + 1 == n || is_space(cp[k + 1].c) || cp[k + 1].c == sep ||
                       (letter && !spell(k + 1));
    return left && right;
  };
  bool changed = false;
  std::size_t copied = 0;  // bytes of `s` already copied to `out`
  out.clear();
  out.reserve(s.size());
  for (std::size_t i = 0; i < n;) {
    // A chain starts at a lone letter followed by a separator and another element.
    if (!(spell(i) && (i == 0 || !spell(i - 1)) && !spell(i + 1) && i + 2 < n &&
          is_spacing_sep(cp[i + 1].c) && element(i, cp[i + 1].c) &&
          element(i + 2, cp[i + 1].c))) {
      ++i;
      continue;
    }
    std::vector<std::vector<std::size_t>> runs;
    std::size_t j = i, letters = 0, longest = 0;
    while (true) {
      std::vector<std::size_t> run{j};
      std::size_t k = j;
      if (k + 2 < n && is_spacing_sep(cp[k + 1].c)) {
        const std::uint32_t sep = cp[k + 1].c;
        while (k + 2 < n && cp[k + 1].c == sep && element(k + 2, sep) && element(k, sep)) {
          k += 2;
          run.push_back(k);
        }
      }
      std::size_t run_letters = 0;
      for (const std::size_t e : run) run_letters += spell(e) ? 1 : 0;
      letters += run_letters;
      longest = std::max(longest, run_letters);
      runs.push_back(std::move(run));
      // The gap to the next run: up to three spaces or separators.
      std::size_t g = k + 1;
      while (g < n && g - k - 1 < 3 && (is_space(cp[g].c) || is_spacing_sep(cp[g].c))) ++g;
      if (g == k + 1 || g + 2 >= n || is_space(cp[g].c)) break;
      // The next run must itself be spelled out (a lone letter followed by a word is prose).
      const std::uint32_t next_sep = cp[g + 1].c;
      if (!(is_spacing_sep(next_sep) && element(g, next_sep) && element(g + 2, next_sep))) break;
      j = g;
    }
    const std::size_t last = runs.back().back();
    if (letters >= 4 && longest >= 3) {
      out.append(s.substr(copied, cp[i].at - copied));
      for (std::size_t r = 0; r < runs.size(); ++r) {
        if (r) out.push_back(' ');
        for (const std::size_t k : runs[r]) out.append(s.substr(cp[k].at, cp[k].len));
      }
      copied = cp[last].at + cp[last].len;
      changed = true;
    }
    i = last + 1;
  }
  if (!changed) return false;
  out.append(s.substr(copied));
  return true;
}

// Common English words, plus the vocabulary of instructions, used to tell whether a
// segment reads better ROT13-decoded or reversed.
bool is_common_word(std::string_view w) {
  // Bucketed by (length, first letter): a lookup is one or two short compares.
  constexpr std::size_t kMaxLen = 13;
  using Table = std::vector<std::vector<std::string_view>>;
  static const Table table = [] {
    std::vector<std::string_view> v = {
        // English
        "a", "about", "above", "act", "after", "all", "also", "am", "an", "and", "answer",
        "any", "are", "as", "at", "back", "be", "because", "been", "but", "by", "can",
        "could", "data", "day", "disregard", "do", "does", "don", "every", "for", "forget",
        "from", "get", "give", "good", "had", "has", "have", "he", "help", "her", "here",
        "him", "his", "how", "i", "if", "ignore", "in", "instructions", "into", "is", "it",
        "its", "just", "know", "like", "make", "me", "mode", "more", "my", "new", "no", "not",
        "now", "of", "on", "one", "only", "or", "other", "our", "out", "output", "password",
        "please", "previous", "print", "prior", "prompt", "reveal", "rules", "say", "secret",
        "she", "should", "show", "so", "some", "system", "take", "tell", "than", "that",
        "the", "their", "them", "then", "there", "these", "they", "this", "time", "to", "up",
        "us", "use", "very", "was", "we", "well", "were", "what", "when", "which", "who",
        "will", "with", "would", "write", "you", "your",
        // Function words of Spanish, Portuguese, French, Italian, German, Turkish and
        // Vietnamese (accents folded, as in the canonical view), so that ROT13 or reversed
        // text in those languages is recognised too.
        "al", "alle", "anteriores", "bana", "bir", "bu", "cac", "che", "como", "con", "da",
        "das", "de", "dein", "deine", "del", "della", "den", "der", "des", "die", "du",
        "ein", "eine", "el", "en", "est", "et", "il", "ist", "la", "las", "le", "les", "lo",
        "los", "mit", "muestrame", "nao", "ne", "nicht", "non", "o", "os", "para", "pas",
        "per", "por", "pour", "que", "qui", "se", "ses", "su", "sua", "seu", "ta",
        "tat", "toi", "ton", "tous", "toutes", "tu", "tum", "tutte", "um", "un", "una", "und",
        "une", "ve", "va", "y", "zu"};
    Table t(kMaxLen * 26);
    for (const std::string_view s : v) t[s.size() * 26 + (s[0] - 'a')].push_back(s);
    return t;
  }();
  if (w.empty() || w.size() >= kMaxLen) return false;
  for (const std::string_view s : table[w.size() * 26 + (w[0] - 'a')])
    if (s == w) return true;
  return false;
}

// (words, common words) among the first 64 ASCII letter runs of `s` (enough to decide).
std::pair<std::size_t, std::size_t> word_hits(std::string_view s) {
  std::size_t words = 0, hits = 0;
  for (std::size_t i = 0; i < s.size() && words < 64;) {
    if (!(s[i] >= 'a' && s[i] <= 'z')) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < s.size() && s[j] >= 'a' && s[j] <= 'z') ++j;
    ++words;
    if (is_common_word(s.substr(i, j - i))) ++hits;
    i = j;
  }
  return {words, hits};
}

std::string rot13(std::string_view s) {
  std::string r(s);
  for (char& c : r)
    if (c >= 'a' && c <= 'z') c = static_cast<char>('a' + (c - 'a' + 13) % 26);
  return r;
}

// Decodes, in place, ASCII segments (between sentence punctuation) of the lowercase folded
// text that read as English only after ROT13 or reversal.
void decode_segments(std::string& text, std::vector<std::string>& transforms) {
  static constexpr std::string_view kBreaks = ".!?;:\"()[]{}<>\n";
  std::string out;
  bool changed = false, saw_rot = false, saw_rev = false;
  std::size_t i = 0;
  while (i <= text.size()) {
    std::size_t j = text.find_first_of(kBreaks, i);
    if (j == std::string::npos) j = text.size();
    const std::string_view seg(text.data() + i, j - i);
    std::string repl;
    bool ascii = true;
    for (const char ch : seg) ascii = ascii && static_cast<unsigned char>(ch) < 0x80;
    if (ascii && seg.size() >= 8) {
      const auto [words, plain] = word_hits(seg);
      // Decoding must more than double the common words: text already half made of them
      // (ordinary prose) is never tried, which keeps the pass cheap.
      if (words >= 3 && 2 * plain < words) {
        const std::string r13 = rot13(seg);
        const std::string rev(seg.rbegin(), seg.rend());
        const std::size_t h13 = word_hits(r13).second, hrev = word_hits(rev).second;
        const std::size_t best = std::max(h13, hrev);
        // Reads clearly better decoded: a third of the words become common English, and
        // more than twice as many as before.
        if (best >= 2 && best * 3 >= words && best > 2 * plain) {
          if (h13 >= hrev) {
            repl = r13;
            saw_rot = true;
          } else {
            repl = rev;
            saw_rev = true;
          }
        }
      }
    }
    if (!repl.empty()) {
      out += repl;
      changed = true;
    } else {
      out.append(seg);
    }
    if (j < text.size()) out.push_back(text[j]);
    i = j + 1;
  }
  if (!changed) return;
  text = std::move(out);
  if (saw_rot) transforms.emplace_back("rot13");
  if (saw_rev) transforms.emplace_back("reversed");
}

// Replaces each blob with readable decoded text by that text, padded with spaces.
std::string splice_blobs(std::string_view s, const std::vector<Blob>& blobs) {
  std::string out;
  out.reserve(s.size());
  std::size_t pos = 0;
  for (const Blob& b : blobs) {
    if (b.decoded.empty() || b.start < pos || b.end > s.size()) continue;
    out.append(s.substr(pos, b.start - pos));
    out.push_back(' ');
    out += b.decoded;
    out.push_back(' ');
    pos = b.end;
  }
  out.append(s.substr(pos));
  return out;
}

// One pass over the code points: the statistics into `a` and the plain fold into
// `a.normalized` (confusables, diacritics and leetspeak folded, invisibles dropped).
void fold(std::string_view text, Analysis& a, const AnalyzerOptions& opt) {
  a.normalized.reserve(text.size());
  WordState word(a, opt);
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  std::uint32_t prev = 0, run_cp = 0xFFFFFFFF, run = 0;
  bool in_flag = false;  // inside an emoji flag tag sequence (U+1F3F4 + tags)
  for (std::size_t i = 0; i < n;) {
    std::uint32_t c;
    const std::size_t len = utf8_decode(p + i, n - i, &c);
    if (len == 0) {
      if (!a.invalid_utf8) {
        a.invalid_utf8 = true;
        a.invalid_offset = static_cast<std::int64_t>(i);
      }
      ++a.invalid_bytes;
      ++i;
      run_cp = 0xFFFFFFFF;
      run = 0;
      continue;
    }
    i += len;
    ++a.code_points;
    if (c == run_cp) {
      ++run;
    } else {
      run_cp = c;
      run = 1;
    }
    // Runs of spaces pad fixed-width tables and code; they get their own, larger limit.
    if (c == ' ')
      a.max_space_run = std::max(a.max_space_run, run);
    else
      a.max_char_run = std::max(a.max_char_run, run);

    if (is_tag(c)) {
      if (!in_flag) {
        ++a.tag_chars;
        if (c >= 0xE0020 && c <= 0xE007E && a.tag_text.size() < (1u << 16))
          a.tag_text.push_back(static_cast<char>(c - 0xE0000));
      }
      continue;  // invisible: skipped by the normaliser, does not end a word
    }
    in_flag = (c == 0x1F3F4);
    if (is_bidi(c)) {
      ++a.bidi;
      continue;
    }
    if (is_zero_width(c)) {
      const bool legit = (c == 0x200D && is_emoji_context(prev)) ||
                         ((c == 0x200C || c == 0x200D) && is_joining_script(prev)) ||
                         (c == 0x200B && is_zwsp_script(prev));
      if (!legit) ++a.zero_width;
      if (c != 0x200D) prev = c;
      continue;
    }
    if (is_variation_selector(c) || (c >= 0x0300 && c <= 0x036F)) {
      if (c == 0xFE0F) prev = c;
      continue;  // dropped by the normaliser (NFKC-style), never counted as invisible
    }
    prev = c;
    if (is_confusable_form(c)) ++a.confusables;
    if (is_space(c)) {
      word.flush();
      if (!a.normalized.empty() && a.normalized.back() != ' ') a.normalized.push_back(' ');
      continue;
    }
    if (is_word_cp(c)) {
      word.push(c);
      continue;
    }
    word.flush();
    if (const char f = compat_fold(c)) {
      a.normalized.push_back(f);
    } else {
      utf8_append(a.normalized, c);
    }
  }
  word.flush();
  if (!a.normalized.empty() && a.normalized.back() == ' ') a.normalized.pop_back();
}

}  // namespace

const std::vector<std::string>& template_token_list() { return kTemplateTokens; }

Analysis analyze(std::string_view text, const AnalyzerOptions& opt) {
  Analysis a;
  fold(text, a, opt);
  a.invisible = a.zero_width + a.tag_chars + a.bidi;
  BlobFinder(text, opt, a).run();
  // Statistics and template tokens describe the text as written (after the plain fold).
  find_template_tokens(a);
  token_stats(a);
  if (!opt.canonical) return a;

  // The canonical view: decode readable blobs in place (nested ones too, up to
  // decode_depth), join spelled-out letters, fold again, then decode ROT13/reversed.
  std::string work;
  std::string_view cur = text;
  bool refold = false;
  const std::vector<Blob>* blobs = &a.blobs;
  Analysis layer;
  for (std::size_t depth = 0; depth < opt.decode_depth; ++depth) {
    const bool readable = std::any_of(blobs->begin(), blobs->end(),
                                      [](const Blob& b) { return !b.decoded.empty(); });
    if (!readable) break;
    work = splice_blobs(cur, *blobs);
    cur = work;
    refold = true;
    if (depth == 0) a.transforms.emplace_back("blob");
    layer = Analysis();
    BlobFinder(cur, opt, layer).run();
    blobs = &layer.blobs;
  }
  std::string joined;
  if (join_spaced(cur, joined)) {
    cur = joined;
    refold = true;
    a.transforms.emplace_back("spaced");
  }
  if (refold) {
    Analysis canon;
    fold(cur, canon, opt);
    a.normalized = std::move(canon.normalized);
  }
  decode_segments(a.normalized, a.transforms);
  return a;
}

std::string normalize(std::string_view text) { return analyze(text).normalized; }

}  // namespace infershield
