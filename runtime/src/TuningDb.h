//===- TuningDb.h - cache roots and the tuning database ---------*- C++ -*-===//
//
// docs/bundle-and-abi.md section 4. The database is one pretty-printed JSON file,
// <root>/tuning.json:
//   {"format": "attune-tuning/1",
//    "entries": {"<gpu name>|sm<count>|<spec_hash>|<shape bucket>":
//                  {"variant": ..., "time_ms": ..., "candidates": {...},
//                   "rejected": {"<variant>": "why"}, "when": "ISO-8601"}}}
// ("rejected" is this runtime's addition: the variants that could not run, and why.)
//
// Writers serialise on an exclusive flock of <root>/tuning.json.lock, re-read and merge,
// then write a temporary file in the same directory, fsync it and rename it over the
// old one, so a reader never sees half a file and concurrent writers keep each other's
// entries. A file that does not parse is reported once on stderr, moved aside to
// tuning.json.corrupt-<time>, and the database starts again from empty (so does one
// larger than kMaxTuningDbBytes). An entry naming a variant the bundle does not have
// is ignored with a warning when a bundle looks it up (Bundle.cpp, checkTunedVariant).
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_RUNTIME_TUNINGDB_H
#define ATTUNE_RUNTIME_TUNINGDB_H

#include "Json.h"

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace attune::rt {

class CacheError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// $ATTUNE_CACHE_DIR, else $XDG_CACHE_HOME/attune, else $HOME/.cache/attune (empty
/// variables count as unset). Throws CacheError when none is set.
std::string cacheRoot();

/// <cacheRoot()>/bundles
std::string bundleCacheRoot();

/// Smallest power of two >= n (n <= 0 gives 0, 1 gives 1).
int64_t pow2Ceil(int64_t n);

/// "b<batch>-q<pow2Ceil(seq_q)>-kv<pow2Ceil(seq_kv)>".
std::string shapeBucket(int64_t batch, int64_t seqQ, int64_t seqKv);

/// "<gpu name>|sm<sm count>|<spec hash>|<bucket>".
std::string tuningKey(const std::string &gpuName, int smCount, const std::string &specHash,
                      const std::string &bucket);

/// The bundle-cache key, as `attnc compile --cache` computes it: sha256 (hex) of
///   <spec hash> "\n" <compiler version> "\n" <archs> "\n" <configs>
/// where <archs> is the comma-separated `archs` split on ',' (empty items dropped),
/// sorted by bytes and joined with ',', and <configs> is the --configs text exactly as
/// passed to the compiler, or "default" when there is none (`configs` null). No
/// trailing newline.
std::string bundleCacheKey(const std::string &specHash, const std::string &compilerVersion,
                           const std::string &archs, const std::string *configs);

/// Current UTC time as "2025-01-31T12:34:56Z".
std::string isoTimeNow();

/// $ATTUNE_TUNE is "0" (or false/off/no): tuning is off, and launches ignore the tuning
/// database (the default variant runs unless one is forced). Explicit attn_tune calls
/// still tune.
bool tuningDisabled();

/// mkdir -p; throws CacheError naming the directory on failure.
void makeDirs(const std::string &dir);

struct TuningEntry {
  std::string variant;
  double timeMs = 0;
  std::vector<std::pair<std::string, double>> candidates;   // variant -> median ms
  std::vector<std::pair<std::string, std::string>> rejected; // variant -> why
  std::string when;

  Json toJson() const;
  /// nullopt when `j` is not an entry (no "variant" string).
  static std::optional<TuningEntry> fromJson(const Json &j);
};

/// A tuning database larger than this (64 MiB) counts as corrupt.
constexpr uint64_t kMaxTuningDbBytes = uint64_t(64) << 20;

class TuningDb {
public:
  /// The database file `path` (its directory is created on the first write).
  explicit TuningDb(std::string path) : path_(std::move(path)) {}
  /// <cacheRoot()>/tuning.json
  static TuningDb atDefaultLocation();

  const std::string &path() const { return path_; }

  /// The entry under `key`, if any. A corrupt file is moved aside (see above).
  std::optional<TuningEntry> lookup(const std::string &key) const;

  /// Stores `entry` under `key` atomically, keeping everyone else's entries.
  void store(const std::string &key, const TuningEntry &entry) const;

  /// Every well-formed entry, sorted by key.
  std::vector<std::pair<std::string, TuningEntry>> entries() const;

private:
  /// The document, or an empty database after moving a corrupt file aside. `locked`:
  /// whether the caller holds the lock (moving aside needs it).
  Json read(bool locked) const;

  std::string path_;
};

} // namespace attune::rt

#endif
