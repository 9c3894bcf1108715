//===- TuningDb.cpp - cache roots and the tuning database -----------------===//
#include "TuningDb.h"

#include "Sha256.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <mutex>
#include <set>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace attune::rt {

namespace {

std::string env(const char *name) {
  const char *v = std::getenv(name);
  return v ? v : "";
}

std::string errnoText() { return std::strerror(errno); }

/// An exclusive flock held for the object's lifetime.
class FileLock {
public:
  explicit FileLock(const std::string &path) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0)
      throw CacheError("cannot open the lock file " + path + ": " + errnoText());
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno == EINTR)
        continue;
      std::string why = errnoText();
      ::close(fd_);
      throw CacheError("cannot lock " + path + ": " + why);
    }
  }
  ~FileLock() {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }
  FileLock(const FileLock &) = delete;
  FileLock &operator=(const FileLock &) = delete;

private:
  int fd_ = -1;
};

std::string directoryOf(const std::string &path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos)
    return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

/// Reads a whole file; false when it does not exist.
bool readFile(const std::string &path, std::string &out) {
  FILE *f = std::fopen(path.c_str(), "rb");
  if (!f) {
    if (errno == ENOENT)
      return false;
    throw CacheError("cannot read " + path + ": " + errnoText());
  }
  out.clear();
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0)
    out.append(buf, n);
  bool failed = std::ferror(f);
  std::fclose(f);
  if (failed)
    throw CacheError("cannot read " + path);
  return true;
}

/// Writes `text` to `path` atomically: temporary file in the same directory, fsync,
/// rename, then fsync of the directory so the rename itself is durable.
void writeFileAtomic(const std::string &path, const std::string &text) {
  static std::atomic<int> counter{0};
  std::string tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    throw CacheError("cannot create " + tmp + ": " + errnoText());
  size_t done = 0;
  while (done < text.size()) {
    ssize_t w = ::write(fd, text.data() + done, text.size() - done);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      std::string why = errnoText();
      ::close(fd);
      ::unlink(tmp.c_str());
      throw CacheError("cannot write " + tmp + ": " + why);
    }
    done += size_t(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    std::string why = errnoText();
    ::unlink(tmp.c_str());
    throw CacheError("cannot flush " + tmp + ": " + why);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string why = errnoText();
    ::unlink(tmp.c_str());
    throw CacheError("cannot rename " + tmp + " to " + path + ": " + why);
  }
  int dfd = ::open(directoryOf(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

/// Why `doc` is not a tuning database, or "" when it is one.
std::string validateDb(const Json &doc) {
  if (!doc.isObject())
    return "the top level is not an object";
  const Json *format = doc.find("format");
  if (!format || !format->isString() || format->asString() != "attune-tuning/1")
    return "\"format\" is not \"attune-tuning/1\"";
  const Json *entries = doc.find("entries");
  if (!entries || !entries->isObject())
    return "\"entries\" is not an object";
  return "";
}

Json emptyDb() {
  Json doc = Json::object();
  doc.set("format", "attune-tuning/1");
  doc.set("entries", Json::object());
  return doc;
}

/// Moves a corrupt database aside (caller holds the lock) and says so once per path.
void moveAside(const std::string &path, const std::string &why) {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
  std::string aside = path + ".corrupt-" + stamp;
  for (int i = 1; ::access(aside.c_str(), F_OK) == 0; ++i)
    aside = path + ".corrupt-" + stamp + "-" + std::to_string(i);
  bool moved = ::rename(path.c_str(), aside.c_str()) == 0;
  static std::mutex mu;
  static std::set<std::string> reported;
  std::lock_guard<std::mutex> lock(mu);
  if (!reported.insert(path).second)
    return;
  if (moved)
    std::fprintf(stderr,
                 "attune: the tuning database %s is corrupt (%s); moved it aside to %s and "
                 "starting a new one\n",
                 path.c_str(), why.c_str(), aside.c_str());
  else
    std::fprintf(stderr,
                 "attune: the tuning database %s is corrupt (%s) and could not be moved aside "
                 "(%s); it will be rewritten\n",
                 path.c_str(), why.c_str(), errnoText().c_str());
}

} // namespace

std::string cacheRoot() {
  std::string dir = env("ATTUNE_CACHE_DIR");
  if (!dir.empty())
    return dir;
  dir = env("XDG_CACHE_HOME");
  if (!dir.empty())
    return dir + "/attune";
  dir = env("HOME");
  if (!dir.empty())
    return dir + "/.cache/attune";
  throw CacheError("no cache directory: set ATTUNE_CACHE_DIR (or XDG_CACHE_HOME or HOME)");
}

std::string bundleCacheRoot() { return cacheRoot() + "/bundles"; }

int64_t pow2Ceil(int64_t n) {
  if (n <= 0)
    return 0;
  int64_t p = 1;
  while (p < n && p < (int64_t(1) << 62))
    p <<= 1;
  return p;
}

std::string shapeBucket(int64_t batch, int64_t seqQ, int64_t seqKv) {
  return "b" + std::to_string(batch) + "-q" + std::to_string(pow2Ceil(seqQ)) + "-kv" +
         std::to_string(pow2Ceil(seqKv));
}

std::string tuningKey(const std::string &gpuName, int smCount, const std::string &specHash,
                      const std::string &bucket) {
  return gpuName + "|sm" + std::to_string(smCount) + "|" + specHash + "|" + bucket;
}

std::string bundleCacheKey(const std::string &specHash, const std::string &compilerVersion,
                           const std::string &archs, const std::string *configs) {
  // Mirrors tools/attnc/CmdCompile.cpp: split on ',' without trimming, drop empty items,
  // sort, no de-duplication.
  std::vector<std::string> list;
  size_t start = 0;
  while (start <= archs.size()) {
    size_t comma = archs.find(',', start);
    if (comma == std::string::npos)
      comma = archs.size();
    if (comma > start)
      list.push_back(archs.substr(start, comma - start));
    start = comma + 1;
  }
  std::sort(list.begin(), list.end());
  std::string joined;
  for (const std::string &a : list)
    joined += (joined.empty() ? "" : ",") + a;
  return sha256Hex(specHash + "\n" + compilerVersion + "\n" + joined + "\n" +
                   (configs ? *configs : std::string("default")));
}

bool tuningDisabled() {
  const char *env = std::getenv("ATTUNE_TUNE");
  if (!env)
    return false;
  std::string v(env);
  for (char &ch : v)
    ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return v == "0" || v == "false" || v == "off" || v == "no";
}

std::string isoTimeNow() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void makeDirs(const std::string &dir) {
  std::string partial;
  size_t pos = 0;
  while (pos <= dir.size()) {
    size_t slash = dir.find('/', pos);
    if (slash == std::string::npos)
      slash = dir.size();
    partial = dir.substr(0, slash);
    pos = slash + 1;
    if (partial.empty())
      continue;
    if (::mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST)
      throw CacheError("cannot create the directory " + partial + ": " + errnoText());
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw CacheError("cannot create the directory " + dir + ": not a directory");
}

Json TuningEntry::toJson() const {
  Json j = Json::object();
  j.set("variant", variant);
  j.set("time_ms", timeMs);
  Json c = Json::object();
  for (const auto &[name, ms] : candidates)
    c.set(name, ms);
  j.set("candidates", c);
  if (!rejected.empty()) {
    Json r = Json::object();
    for (const auto &[name, why] : rejected)
      r.set(name, why);
    j.set("rejected", r);
  }
  j.set("when", when);
  return j;
}

std::optional<TuningEntry> TuningEntry::fromJson(const Json &j) {
  if (!j.isObject())
    return std::nullopt;
  const Json *variant = j.find("variant");
  if (!variant || !variant->isString() || variant->asString().empty())
    return std::nullopt;
  TuningEntry e;
  e.variant = variant->asString();
  if (const Json *t = j.find("time_ms"); t && t->isNumber())
    e.timeMs = t->asDouble();
  if (const Json *c = j.find("candidates"); c && c->isObject())
    for (const JsonMember &m : c->members())
      if (m.value.isNumber())
        e.candidates.push_back({m.key, m.value.asDouble()});
  if (const Json *r = j.find("rejected"); r && r->isObject())
    for (const JsonMember &m : r->members())
      if (m.value.isString())
        e.rejected.push_back({m.key, m.value.asString()});
  if (const Json *w = j.find("when"); w && w->isString())
    e.when = w->asString();
  return e;
}

TuningDb TuningDb::atDefaultLocation() { return TuningDb(cacheRoot() + "/tuning.json"); }

Json TuningDb::read(bool locked) const {
  std::string text, why;
  struct stat st;
  // A database this large is not one this runtime wrote (an entry is ~300 bytes):
  // treated as corrupt, never read whole into memory.
  if (::stat(path_.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
      uint64_t(st.st_size) > kMaxTuningDbBytes) {
    why = std::to_string(uint64_t(st.st_size)) + " bytes, more than the " +
          std::to_string(kMaxTuningDbBytes) + " a tuning database may have";
  } else if (!readFile(path_, text)) {
    return emptyDb();
  }
  Json doc;
  if (why.empty()) {
    try {
      doc = Json::parse(text, /*rejectDuplicateKeys=*/false);
      why = validateDb(doc);
    } catch (const JsonError &e) {
      why = e.what();
    }
  }
  if (why.empty())
    return doc;
  if (!locked) {
    // Moving the file aside must not race a writer: retry under the lock, where the
    // file may also turn out to have been replaced by a good one meanwhile.
    FileLock lock(path_ + ".lock");
    return read(true);
  }
  moveAside(path_, why);
  return emptyDb();
}

std::optional<TuningEntry> TuningDb::lookup(const std::string &key) const {
  Json doc = read(false);
  const Json *entry = doc.find("entries")->find(key);
  if (!entry)
    return std::nullopt;
  return TuningEntry::fromJson(*entry);
}

void TuningDb::store(const std::string &key, const TuningEntry &entry) const {
  makeDirs(directoryOf(path_));
  FileLock lock(path_ + ".lock");
  Json doc = read(true);
  Json *entries = doc.find("entries");
  entries->set(key, entry.toJson());
  // Sorted keys keep the file stable and easy to read.
  Json sorted = Json::object();
  std::vector<const JsonMember *> order;
  for (const JsonMember &m : entries->members())
    order.push_back(&m);
  std::sort(order.begin(), order.end(),
            [](const JsonMember *a, const JsonMember *b) { return a->key < b->key; });
  for (const JsonMember *m : order)
    sorted.append(m->key, m->value);
  Json out = Json::object();
  out.set("format", "attune-tuning/1");
  out.set("entries", sorted);
  writeFileAtomic(path_, out.pretty() + "\n");
}

std::vector<std::pair<std::string, TuningEntry>> TuningDb::entries() const {
  Json doc = read(false);
  std::vector<std::pair<std::string, TuningEntry>> out;
  for (const JsonMember &m : doc.find("entries")->members())
    if (auto e = TuningEntry::fromJson(m.value))
      out.push_back({m.key, *e});
  std::sort(out.begin(), out.end(), [](const auto &a, const auto &b) { return a.first < b.first; });
  return out;
}

} // namespace attune::rt
