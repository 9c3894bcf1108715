//===- Bundle.h - a loaded kernel bundle: selection, launch, tuning -*- C++ -*-===//
#ifndef ATTUNE_RUNTIME_BUNDLE_H
#define ATTUNE_RUNTIME_BUNDLE_H

#include "Args.h"
#include "Cuda.h"
#include "Manifest.h"
#include "TuningDb.h"

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace attune::rt {

/// Picks the variant to run on a device of compute capability major.minor:
///   - `forced` (non-empty): that variant, which must exist and run on the device;
///   - else `tuned` (non-empty) when it exists and runs on the device;
///   - else the default variant of the newest architecture that runs on the device,
///     else the first variant that runs on it.
/// Throws ArgError (prefixed with `fn`) when nothing fits.
int selectVariant(const Manifest &m, int major, int minor, const std::string &forced,
                  const std::string &tuned, const char *fn);

/// Indices of the variants that run on major.minor, in manifest order.
std::vector<int> compatibleVariants(const Manifest &m, int major, int minor);

/// `tuned` (a tuning database's choice for `key`) when the bundle in `dir` has that
/// variant or it is empty; else "" after a warning on stderr naming the database
/// `dbPath`, the key and the variant, so that a stale or foreign entry is never run.
std::string checkTunedVariant(const Manifest &m, const std::string &dir, const std::string &key,
                              const std::string &tuned, const std::string &dbPath);

/// Which file of `v` to load on a device: the cubin when its arch is exactly the
/// device's capability (and it exists), else the PTX.
bool prefersCubin(const Variant &v, int major, int minor);

class Bundle {
public:
  /// Loads and validates the manifest of `dir` (throws ManifestError).
  explicit Bundle(const std::string &dir);
  ~Bundle();
  Bundle(const Bundle &) = delete;
  Bundle &operator=(const Bundle &) = delete;

  const Manifest &manifest() const { return m_; }
  const std::string &dir() const { return dir_; }

  /// Argument checks only (no device).
  CheckedCall check(const attn_call &call, const char *fn) const {
    return checkCall(m_, call, fn);
  }

  void launch(const attn_call &call);
  void tune(const attn_call &call, int repeats, bool verbose);

  /// The variant attn_launch would run for `call` on the current device.
  std::string selected(const attn_call &call);
  /// The tuning database's choice for `call` on the current device, if any.
  std::optional<std::string> tunedChoice(const attn_call &call);

  /// attn_bundle_info_json's text (computed once).
  const std::string &infoJson() const { return info_; }

private:
  struct Loaded {
    cu::CUcontext ctx = nullptr;
    cu::CUmodule module = nullptr;
    cu::CUfunction fn = nullptr;
    cu::CUfunction combine = nullptr; // split_kv's, looked up on first use
  };

  /// The device context for the call (made current) and its properties.
  const cu::DeviceInfo &device(const CheckedCall &c);
  /// The tuned variant name for this call's key ("" if none), read from the database
  /// once per key and process.
  std::string tunedName(const cu::DeviceInfo &dev, const CheckedCall &c);
  std::string key(const cu::DeviceInfo &dev, const CheckedCall &c) const;
  /// Loads variant `i` into the current context (once per context) and returns its
  /// function, with the dynamic shared-memory limit raised as needed.
  cu::CUfunction function(int i, const cu::DeviceInfo &dev);
  /// The variant's split_kv combine kernel, from the same module.
  cu::CUfunction combineFunction(int i, const cu::DeviceInfo &dev);
  /// Checks `v` against the device's limits; "" if it fits, else why not.
  std::string resourceProblem(const Variant &v, const cu::DeviceInfo &dev,
                              const unsigned grid[3]) const;
  /// How many splits variant `v` launches for the call (1 without split_kv).
  int64_t splitsFor(const Variant &v, const cu::DeviceInfo &dev, const CheckedCall &c,
                    int64_t requestedSplits, const char *fn) const;
  /// Launches variant `i`: with split_kv, num_splits from `requestedSplits` (0: the
  /// runtime's choice) and, when above one, the scratch buffers (stream-ordered) and
  /// the combine kernel after the main one.
  void launchVariant(int i, const cu::DeviceInfo &dev, const CheckedCall &c, void *stream,
                     const char *fn, int64_t requestedSplits);
  int choose(const attn_call &call, const CheckedCall &c, const cu::DeviceInfo &dev,
             const char *fn);

  std::string dir_;
  Manifest m_;
  std::string info_;
  std::mutex mu_;
  std::vector<std::vector<Loaded>> loaded_;    // per variant, per context
  std::map<std::string, std::string> tuned_;  // tuning key -> variant ("" = none)
};

} // namespace attune::rt

#endif
