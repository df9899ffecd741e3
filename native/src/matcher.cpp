#include "infershield/matcher.hpp"

#include <hs/hs.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <mutex>
#include <sstream>
#include <utility>

#include "infershield/utf8.hpp"

namespace infershield {

CompileError::CompileError(std::string rule_id, long index, const std::string& message)
    : std::runtime_error(rule_id.empty() ? "rule set failed to compile: " + message
                                         : "rule '" + rule_id + "' failed to compile: " + message),
      rule_id_(std::move(rule_id)),
      index_(index) {}

namespace {

constexpr char kCacheMagic[8] = {'I', 'S', 'H', 'S', 'D', 'B', '0', '1'};

unsigned to_hs_flags(std::uint32_t f) {
  unsigned out = 0;
  if (f & kCaseless) out |= HS_FLAG_CASELESS;
  if (f & kDotAll) out |= HS_FLAG_DOTALL;
  if (f & kMultiline) out |= HS_FLAG_MULTILINE;
  if (f & kUtf8) out |= HS_FLAG_UTF8;
  if (f & kUcp) out |= HS_FLAG_UCP;
  if (f & kSom) out |= HS_FLAG_SOM_LEFTMOST;
  return out;
}

// Two independent FNV-1a streams give a 128-bit digest: plenty to key a cache file, and the
// file also carries a payload checksum, so a collision alone cannot load a wrong database.
struct Digest {
  std::uint64_t a = 0xcbf29ce484222325ULL;
  std::uint64_t b = 0x84222325cbf29ce4ULL;
  void add(const void* data, std::size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < n; ++i) {
      a = (a ^ p[i]) * 0x100000001b3ULL;
      b = (b ^ (p[i] ^ 0x5cu)) * 0x100000001b3ULL;
      b ^= b >> 29;
    }
  }
  void add_field(std::string_view s) {
    const std::uint64_t n = s.size();
    add(&n, sizeof n);  // length prefix: ("ab","c") never hashes like ("a","bc")
    add(s.data(), s.size());
  }
  std::string hex() const {
    char buf[33];
    std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(a),
                  static_cast<unsigned long long>(b));
    return buf;
  }
};

std::uint64_t checksum(std::string_view s) {
  Digest d;
  d.add(s.data(), s.size());
  return d.a ^ (d.b * 31);
}

struct DbDeleter {
  void operator()(hs_database_t* db) const { hs_free_database(db); }
};
using DbPtr = std::unique_ptr<hs_database_t, DbDeleter>;

DbPtr compile_rules(const std::vector<Rule>& rules) {
  std::vector<const char*> exprs;
  std::vector<unsigned> flags;
  std::vector<unsigned> ids;
  exprs.reserve(rules.size());
  for (std::size_t i = 0; i < rules.size(); ++i) {
    if (rules[i].expression.find('\0') != std::string::npos)
      throw CompileError(rules[i].id, static_cast<long>(i), "expression contains a NUL byte");
    exprs.push_back(rules[i].expression.c_str());
    flags.push_back(to_hs_flags(rules[i].flags));
    ids.push_back(static_cast<unsigned>(i));
  }
  hs_database_t* db = nullptr;
  hs_compile_error_t* err = nullptr;
  const hs_error_t rc = hs_compile_multi(exprs.data(), flags.data(), ids.data(),
                                         static_cast<unsigned>(exprs.size()), HS_MODE_BLOCK,
                                         nullptr, &db, &err);
  if (rc != HS_SUCCESS) {
    std::string msg = err && err->message ? err->message : "unknown Hyperscan error";
    const long idx = err ? err->expression : -1;
    hs_free_compile_error(err);
    std::string rule_id;
    if (idx >= 0 && static_cast<std::size_t>(idx) < rules.size()) rule_id = rules[idx].id;
    throw CompileError(rule_id, idx, msg);
  }
  return DbPtr(db);
}

std::string serialize_db(const hs_database_t* db) {
  if (!db) return {};
  char* bytes = nullptr;
  std::size_t len = 0;
  if (hs_serialize_database(db, &bytes, &len) != HS_SUCCESS)
    throw MatcherError("hs_serialize_database failed");
  std::string out(bytes, len);
  std::free(bytes);
  return out;
}

template <typename T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

template <typename T>
bool get(std::string_view& in, T* v) {
  if (in.size() < sizeof(T)) return false;
  std::memcpy(v, in.data(), sizeof(T));
  in.remove_prefix(sizeof(T));
  return true;
}

// Returns a database only if every header field, the size and the checksum agree and
// Hyperscan accepts the bytes; anything else means "rebuild".
DbPtr load_cache(const std::string& path, const std::string& hash, bool* existed) {
  std::ifstream f(path, std::ios::binary);
  *existed = static_cast<bool>(f);
  if (!f) return nullptr;
  const std::string file((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::string_view in(file);
  if (in.size() < sizeof kCacheMagic || std::memcmp(in.data(), kCacheMagic, sizeof kCacheMagic))
    return nullptr;
  in.remove_prefix(sizeof kCacheMagic);
  if (in.size() < hash.size() || in.substr(0, hash.size()) != hash) return nullptr;
  in.remove_prefix(hash.size());
  std::uint64_t size = 0, sum = 0;
  if (!get(in, &size) || !get(in, &sum) || size != in.size() || checksum(in) != sum)
    return nullptr;
  std::size_t hs_size = 0;
  if (hs_serialized_database_size(in.data(), in.size(), &hs_size) != HS_SUCCESS) return nullptr;
  hs_database_t* db = nullptr;
  if (hs_deserialize_database(in.data(), in.size(), &db) != HS_SUCCESS) return nullptr;
  return DbPtr(db);
}

void write_cache(const std::string& path, const std::string& hash, const std::string& payload) {
  std::string out(kCacheMagic, sizeof kCacheMagic);
  out += hash;
  put<std::uint64_t>(out, payload.size());
  put<std::uint64_t>(out, checksum(payload));
  out += payload;
  // Write then rename, so a concurrent reader never sees a half-written file.
  static std::atomic<unsigned> counter{0};
  const std::string tmp =
      path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return;  // an unwritable cache only costs a recompile next time
    f.write(out.data(), static_cast<std::streamsize>(out.size()));
    if (!f) {
      std::remove(tmp.c_str());
      return;
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) std::remove(tmp.c_str());
}

struct CollectCtx {
  std::vector<MatchResult>* out;
  const std::vector<unsigned char>* som;
  bool overflow = false;
};

int on_match(unsigned int id, unsigned long long from, unsigned long long to, unsigned int,
             void* ctx) {
  auto* c = static_cast<CollectCtx*>(ctx);
  if (c->out->size() >= Matcher::kMaxMatchesPerScan) {
    c->overflow = true;
    return 1;  // stop scanning
  }
  const bool has_som = (*c->som)[id] != 0;
  c->out->push_back({id, has_som ? static_cast<std::int64_t>(from) : -1, to});
  return 0;
}

struct DistinctCtx {
  std::vector<unsigned char>* seen;
  std::vector<std::uint32_t>* out;
};

int on_distinct(unsigned int id, unsigned long long, unsigned long long, unsigned int, void* ctx) {
  auto* c = static_cast<DistinctCtx*>(ctx);
  if (!(*c->seen)[id]) {
    (*c->seen)[id] = 1;
    c->out->push_back(id);
  }
  return 0;
}

}  // namespace

struct Matcher::Impl {
  std::vector<Rule> rules;
  std::vector<unsigned char> som;  // per rule: report start offsets
  bool any_utf8 = false;
  std::string hash;
  DbPtr db;
  hs_scratch_t* proto = nullptr;  // never scanned with; only cloned
  mutable std::mutex pool_mu;
  mutable std::vector<hs_scratch_t*> pool;
  CacheStatus cache_status = CacheStatus::kDisabled;
  std::string cache_path;

  ~Impl() {
    for (hs_scratch_t* s : pool) hs_free_scratch(s);
    if (proto) hs_free_scratch(proto);
  }

  void init_meta() {
    Digest d;
    d.add_field(hs_version());
    const std::uint64_t n = rules.size();
    d.add(&n, sizeof n);
    for (const Rule& r : rules) {
      d.add_field(r.id);
      d.add_field(r.expression);
      d.add(&r.flags, sizeof r.flags);
      som.push_back((r.flags & kSom) ? 1 : 0);
      any_utf8 = any_utf8 || (r.flags & kUtf8);
    }
    hash = d.hex();
  }

  void init_scratch() {
    if (!db) return;
    if (hs_alloc_scratch(db.get(), &proto) != HS_SUCCESS)
      throw MatcherError("hs_alloc_scratch failed");
  }

  // RAII lease of one scratch: taken from the pool or cloned; returned on destruction.
  class Lease {
   public:
    explicit Lease(const Impl& impl) : impl_(impl) {
      {
        std::lock_guard<std::mutex> lock(impl_.pool_mu);
        if (!impl_.pool.empty()) {
          s_ = impl_.pool.back();
          impl_.pool.pop_back();
          return;
        }
      }
      if (hs_clone_scratch(impl_.proto, &s_) != HS_SUCCESS)
        throw MatcherError("hs_clone_scratch failed");
    }
    ~Lease() {
      std::lock_guard<std::mutex> lock(impl_.pool_mu);
      impl_.pool.push_back(s_);
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    hs_scratch_t* get() const { return s_; }

   private:
    const Impl& impl_;
    hs_scratch_t* s_ = nullptr;
  };

  // Hyperscan's results on invalid UTF-8 are undefined for UTF-8 patterns, so invalid bytes
  // are replaced one-for-one by '?' (offsets stay valid) before such a database sees them.
  std::string_view prepare(std::string_view data, std::string* buf) const {
    if (data.size() > UINT_MAX) throw MatcherError("input larger than 4 GiB");
    if (!any_utf8) return data;
    std::size_t bad = utf8_first_invalid(data);
    if (bad == std::string_view::npos) return data;
    buf->assign(data.data(), data.size());
    auto* p = reinterpret_cast<unsigned char*>(buf->data());
    const std::size_t n = buf->size();
    std::size_t i = bad;
    while (i < n) {
      std::uint32_t cp;
      const std::size_t len = utf8_decode(p + i, n - i, &cp);
      if (len == 0) {
        p[i] = '?';
        ++i;
      } else {
        i += len;
      }
    }
    return *buf;
  }

  void run(std::string_view data, hs_scratch_t* s, match_event_handler cb, void* ctx) const {
    std::string buf;
    const std::string_view d = prepare(data, &buf);
    static const char kEmpty[1] = {0};
    const char* ptr = d.empty() ? kEmpty : d.data();
    const hs_error_t rc = hs_scan(db.get(), ptr, static_cast<unsigned>(d.size()), 0, s, cb, ctx);
    if (rc != HS_SUCCESS && rc != HS_SCAN_TERMINATED)
      throw MatcherError("hs_scan failed with code " + std::to_string(rc));
  }

  void scan_one(std::string_view data, hs_scratch_t* s, std::vector<MatchResult>* out) const {
    CollectCtx ctx{out, &som};
    run(data, s, on_match, &ctx);
    if (ctx.overflow)
      throw MatcherError("more than " + std::to_string(Matcher::kMaxMatchesPerScan) +
                         " matches in one input; refusing to report them all");
  }

  void matched_one(std::string_view data, hs_scratch_t* s, std::vector<std::uint32_t>* out,
                   std::vector<unsigned char>* seen) const {
    std::fill(seen->begin(), seen->end(), 0);
    DistinctCtx ctx{seen, out};
    run(data, s, on_distinct, &ctx);
    std::sort(out->begin(), out->end());
  }
};

Matcher::Matcher(std::vector<Rule> rules) : impl_(std::make_unique<Impl>()) {
  impl_->rules = std::move(rules);
  impl_->init_meta();
  if (!impl_->rules.empty()) impl_->db = compile_rules(impl_->rules);
  impl_->init_scratch();
}

Matcher::Matcher(std::vector<Rule> rules, const std::string& cache_dir)
    : impl_(std::make_unique<Impl>()) {
  impl_->rules = std::move(rules);
  impl_->init_meta();
  if (!impl_->rules.empty()) {
    std::string dir = cache_dir;
    if (!dir.empty() && dir.back() != '/') dir.push_back('/');
    impl_->cache_path = dir + "matcher-" + impl_->hash + ".hsdb";
    bool existed = false;
    impl_->db = load_cache(impl_->cache_path, impl_->hash, &existed);
    if (impl_->db) {
      impl_->cache_status = CacheStatus::kHit;
    } else {
      impl_->db = compile_rules(impl_->rules);
      impl_->cache_status = existed ? CacheStatus::kStaleRebuilt : CacheStatus::kMissCompiled;
      write_cache(impl_->cache_path, impl_->hash, serialize_db(impl_->db.get()));
    }
  }
  impl_->init_scratch();
}

Matcher::~Matcher() = default;

std::vector<MatchResult> Matcher::scan(std::string_view data) const {
  std::vector<MatchResult> out;
  if (!impl_->db) return out;
  Impl::Lease lease(*impl_);
  impl_->scan_one(data, lease.get(), &out);
  return out;
}

std::vector<std::uint32_t> Matcher::matched(std::string_view data) const {
  std::vector<std::uint32_t> out;
  if (!impl_->db) return out;
  std::vector<unsigned char> seen(impl_->rules.size());
  Impl::Lease lease(*impl_);
  impl_->matched_one(data, lease.get(), &out, &seen);
  return out;
}

std::vector<std::vector<MatchResult>> Matcher::scan_batch(
    const std::vector<std::string_view>& data) const {
  std::vector<std::vector<MatchResult>> out(data.size());
  if (!impl_->db) return out;
  Impl::Lease lease(*impl_);
  for (std::size_t i = 0; i < data.size(); ++i) impl_->scan_one(data[i], lease.get(), &out[i]);
  return out;
}

std::vector<std::vector<std::uint32_t>> Matcher::matched_batch(
    const std::vector<std::string_view>& data) const {
  std::vector<std::vector<std::uint32_t>> out(data.size());
  if (!impl_->db) return out;
  std::vector<unsigned char> seen(impl_->rules.size());
  Impl::Lease lease(*impl_);
  for (std::size_t i = 0; i < data.size(); ++i)
    impl_->matched_one(data[i], lease.get(), &out[i], &seen);
  return out;
}

const std::vector<Rule>& Matcher::rules() const noexcept { return impl_->rules; }
std::size_t Matcher::size() const noexcept { return impl_->rules.size(); }
std::string Matcher::rule_set_hash() const { return impl_->hash; }
std::string Matcher::serialize() const { return serialize_db(impl_->db.get()); }
CacheStatus Matcher::cache_status() const noexcept { return impl_->cache_status; }
const std::string& Matcher::cache_path() const noexcept { return impl_->cache_path; }
std::string Matcher::hyperscan_version() { return hs_version(); }

}  // namespace infershield
