//===- Bundle.h - a loaded kernel bundle: selection, launch, tuning -*- C++ -*-===//
#ifndef ATTUNE_RUNTIME_BUNDLE_H
#define ATTUNE_RUNTIME_BUNDLE_H

#include "Args.h"
#include "Cuda.h"
#include "Device.h"
#include "HostRun.h"
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

/// Untuned decoding: when `chosen` (an untuned choice) does not pack GQA and every
/// query of the call's longest sequence times the group (Hq / Hkv > 1) fits one of its
/// CTAs, a variant of the same arch that packs the group's query heads into one CTA
/// (same tile, else the first that holds them): it reads each kv head's K/V once
/// instead of once per query head. Else `chosen`.
int decodeVariant(const Manifest &m, int chosen, const CheckedCall &c);

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

/// The tuner's tolerance for a candidate's output against the default variant's.
/// 16-bit outputs (o): |got - ref| <= kTuneTolerance * (|ref| + max |ref| of the
/// tensor), about four bf16 ulps of the value plus four of the output's scale.
/// float32 outputs (lse, computed in f32 by every variant): |got - ref| <=
/// kTuneToleranceF32 * (|ref| + 1). Variants differ only in accumulation order and
/// in where P is rounded to 16 bits; a wrong kernel is far off.
constexpr double kTuneTolerance = 1.0 / 64;
constexpr double kTuneToleranceF32 = 1.0 / 1024;

/// "" when `got` agrees with `ref` (both the bytes of tensor `t`'s span: bf16, fp16 or
/// f32 per t.dtype) within the tolerance above at every element; else the first
/// element that does not, with both values: "o[0, 1, 16, 3] = 1.53 where the default
/// variant gives 0.53 (tolerance 0.0313)". NaN never agrees, not even with NaN;
/// infinities agree only with the same infinity (an all-masked row's lse is -inf).
std::string compareOutput(const char *name, const attn_tensor &t, const uint8_t *ref,
                          const uint8_t *got);

/// How the tuner judged one candidate.
struct TuneResult {
  enum Status {
    Timed,     // agrees with the default variant; `ms` is its median time
    Rejected,  // could not load or launch on this device (resources, launch config)
    Disagrees, // ran, but its output differs from the default variant's
    Faulted,   // failed while running (on CUDA the context is then unusable)
  } status = Timed;
  std::string variant;
  double ms = 0;
  std::string why;
};
const char *tuneStatusName(TuneResult::Status s);

/// What a tuning run measured.
struct TuneReport {
  std::string key;            // the tuning database key
  std::string defaultVariant; // the reference every candidate is compared with
  std::string deviceName;
  std::vector<TuneResult> results; // in the order run: the default first
  /// The fastest Timed result, or -1.
  int best() const;
  /// The database entry: Timed ones as candidates, the others as rejected with why.
  TuningEntry entry() const;
};

/// Progress of Bundle::measure, e.g. for a parent process that must know which
/// candidate was running when its child died.
struct TuneObserver {
  virtual ~TuneObserver() = default;
  virtual void started(const std::string &variant) { (void)variant; }
  virtual void finished(const TuneResult &result) { (void)result; }
};

/// The tuning table (what `attnc tune` and attn_tune's verbose mode print): each
/// candidate's time, or why it was dropped.
std::string tuneTable(const TuneReport &report, const Manifest &m);

class Bundle {
public:
  /// Loads and validates the manifest of `dir` (throws ManifestError); kernels run on
  /// the CUDA driver.
  explicit Bundle(const std::string &dir);
  /// A manifest already in memory, on any device (the simulator's). `dir` is where the
  /// device finds the variants' files, if it reads any.
  Bundle(Manifest m, std::string dir, std::unique_ptr<Device> device);
  ~Bundle();
  Bundle(const Bundle &) = delete;
  Bundle &operator=(const Bundle &) = delete;

  const Manifest &manifest() const { return m_; }
  const std::string &dir() const { return dir_; }
  Device &device() { return *device_; }

  /// Argument checks only (no device). A host call (call.device) is checked as a
  /// host variant takes it.
  CheckedCall check(const attn_call &call, const char *fn) const;

  /// Runs the call: on a GPU variant (asynchronously), or for a host call on a host
  /// variant (synchronously).
  void launch(const attn_call &call);
  /// The backward of a call (host variants only, today).
  void backward(const attn_backward_call &call);
  /// The tuner's rule: the device's default variant runs first and its output is the
  /// reference; then each candidate runs on the same inputs and is kept only when its
  /// o (and lse) agree with the reference (compareOutput). Candidates that cannot run
  /// are Rejected, those that disagree Disagrees, and those that fail while running
  /// Faulted (on CUDA that ends the run with an error: the context is unusable). Only
  /// the variants named in `only` are candidates when it is not empty (the default
  /// still runs as the reference). Throws when the default variant cannot run.
  TuneReport measure(const attn_call &call, int repeats, bool verbose,
                     const std::vector<std::string> &only = {}, TuneObserver *observer = nullptr);
  /// measure(), then the fastest agreeing variant is stored in the tuning database and
  /// run on the caller's arguments (o and lse hold its result).
  void tune(const attn_call &call, int repeats, bool verbose);
  /// Makes `name` the choice for `call`'s key in this process and stores `entry` in the
  /// tuning database (a warning on stderr when that fails).
  void storeTuned(const std::string &key, const TuningEntry &entry, bool verbose);

  /// The variant attn_launch would run for `call` on the current device.
  std::string selected(const attn_call &call);
  /// The tuning database's choice for `call` on the current device, if any.
  std::optional<std::string> tunedChoice(const attn_call &call);
  /// The tuning key of `call` on the current device.
  std::string tuningKeyOf(const attn_call &call);

  /// attn_bundle_info_json's text (computed once).
  const std::string &infoJson() const { return info_; }

private:
  /// The tuned variant name for this call's key ("" if none), read from the database
  /// once per key and process.
  std::string tunedName(const cu::DeviceInfo &dev, const CheckedCall &c);
  std::string key(const cu::DeviceInfo &dev, const CheckedCall &c) const;
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

  void launchHost(const attn_call &call);

  std::string dir_;
  Manifest m_;
  std::unique_ptr<Device> device_;
  HostLibraries host_;
  std::string info_;
  std::mutex mu_;
  std::map<std::string, std::string> tuned_;  // tuning key -> variant ("" = none)
};

} // namespace attune::rt

#endif
