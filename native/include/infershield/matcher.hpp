// Multi-pattern matcher over one Hyperscan block-mode database.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace infershield {

/// Per-rule compile flags (our own bits; mapped onto Hyperscan's in matcher.cpp).
enum RuleFlag : std::uint32_t {
  kCaseless = 1u << 0,
  kDotAll = 1u << 1,
  kMultiline = 1u << 2,
  kUtf8 = 1u << 3,
  kUcp = 1u << 4,
  /// The rule needs start offsets (HS_FLAG_SOM_LEFTMOST); costs scan speed, so opt-in.
  kSom = 1u << 5,
};

/// One rule of a rule set: its id (for error messages), expression and RuleFlag bits.
struct Rule {
  std::string id;
  std::string expression;
  std::uint32_t flags = kCaseless | kDotAll | kUtf8;
};

/// One match: the rule's index in the rule set, its start (-1 unless the rule has kSom)
/// and its end, both byte offsets into the scanned buffer.
struct MatchResult {
  std::uint32_t index = 0;
  std::int64_t start = -1;
  std::uint64_t end = 0;

  bool operator==(const MatchResult& o) const {
    return index == o.index && start == o.start && end == o.end;
  }
};

/// A rule failed to compile. `rule_id` names it (empty when Hyperscan could not say which).
class CompileError : public std::runtime_error {
 public:
  CompileError(std::string rule_id, long index, const std::string& message);
  const std::string& rule_id() const noexcept { return rule_id_; }
  long index() const noexcept { return index_; }

 private:
  std::string rule_id_;
  long index_;
};

/// Any other Hyperscan failure (scratch allocation, scan error).
class MatcherError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Where a database came from when built through the cache.
enum class CacheStatus { kDisabled, kHit, kMissCompiled, kStaleRebuilt };

/// Compiles a rule set once into one Hyperscan database; scans are const and thread-safe.
///
/// Scratch spaces are never shared: each scan takes one from an internal pool (cloned from
/// the prototype when the pool is empty) and returns it afterwards, so N concurrent callers
/// use N scratches and a scratch's lifetime is bound to the Matcher.
class Matcher {
 public:
  /// Compile `rules`. Throws CompileError naming the first bad rule.
  explicit Matcher(std::vector<Rule> rules);
  /// Like the plain constructor, but loads the database from `cache_dir` when a valid cache
  /// file for this exact rule set and Hyperscan version exists; otherwise compiles and writes
  /// one (atomically). A stale or corrupt file is detected and rebuilt, never trusted.
  Matcher(std::vector<Rule> rules, const std::string& cache_dir);
  ~Matcher();
  Matcher(const Matcher&) = delete;
  Matcher& operator=(const Matcher&) = delete;
  Matcher(Matcher&&) = delete;
  Matcher& operator=(Matcher&&) = delete;

  /// scan() refuses to report more matches than this for one buffer (a pathological input
  /// such as megabytes of digits against `\d+` would otherwise need gigabytes).
  static constexpr std::size_t kMaxMatchesPerScan = std::size_t{1} << 20;

  /// Every match, in Hyperscan's report order (by end offset). Throws MatcherError when one
  /// buffer has more than kMaxMatchesPerScan matches.
  std::vector<MatchResult> scan(std::string_view data) const;
  /// The distinct rule indices that matched, sorted ascending.
  std::vector<std::uint32_t> matched(std::string_view data) const;
  /// scan() over many buffers, reusing one scratch.
  std::vector<std::vector<MatchResult>> scan_batch(const std::vector<std::string_view>& data) const;
  /// matched() over many buffers, reusing one scratch.
  std::vector<std::vector<std::uint32_t>> matched_batch(
      const std::vector<std::string_view>& data) const;

  const std::vector<Rule>& rules() const noexcept;
  std::size_t size() const noexcept;
  /// Hex digest of the rule set (ids, expressions, flags) and the Hyperscan version.
  std::string rule_set_hash() const;
  /// The compiled database in Hyperscan's serialised form (empty for an empty rule set).
  std::string serialize() const;
  /// How the database was obtained (kDisabled without a cache directory).
  CacheStatus cache_status() const noexcept;
  /// Path of the cache file used (empty without a cache directory).
  const std::string& cache_path() const noexcept;

  /// The Hyperscan library version string.
  static std::string hyperscan_version();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace infershield
