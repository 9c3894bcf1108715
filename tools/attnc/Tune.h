//===- Tune.h - attnc tune: candidates in a child process -------*- C++ -*-===//
//
// `attnc tune` runs the runtime's tuner (rt::Bundle::measure: the default variant
// first as the reference, each candidate compared with it) in a child process, which
// reports every step on a pipe, one line each:
//   bundle <dir>          where the manifest is (GPU; the parent reads it for the table)
//   key <tuning key>      default <variant>      device <name>
//   candidates <a,b,...>  the variants that run on the device, the default first
//   tuned <variant>       already tuned (no --force): nothing is measured
//   start <variant>       result <variant> <status> <ms> <why>
//   error <message>       end
// A child that dies (a kernel fault, a signal) leaves the candidate it had started
// without a result: the parent reports that candidate as faulted and starts a new
// child for the rest. The parent never touches the CUDA driver, so forking is safe,
// and it stores the winner in the tuning database.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_TOOLS_ATTNC_TUNE_H
#define ATTUNE_TOOLS_ATTNC_TUNE_H

#include "tools/attnc/Driver.h"

#include "Bundle.h"

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

namespace attune::attnc {

/// The shape and data of the tuning call.
struct TuneRequest {
  int64_t batch = 1, seqQ = 0, seqKv = 0;
  int repeats = 20;
  uint64_t seed = 0;
  std::optional<int64_t> qOffset, kvOffset;
  std::map<std::string, HostTensor> inputs;
  bool force = false;
};

/// The child's end of the pipe.
class TuneChannel : public rt::TuneObserver {
public:
  explicit TuneChannel(FILE *out) : out_(out) {}
  void line(const std::string &tag, const std::string &text);
  void started(const std::string &variant) override { line("start", variant); }
  void finished(const rt::TuneResult &r) override;

private:
  FILE *out_;
};

/// The child's work on a GPU: loads (compiling into the cache if needed) the bundle,
/// reports `bundle`, `key`, ..., and measures the variants of `only` (all when empty).
void tuneChildGpu(const Options &opts, const std::string &specPath, const TuneRequest &req,
                  const std::vector<std::string> &only, TuneChannel &channel);

/// The measuring common to both back ends, once the bundle and call exist: `tuned`
/// when the database has a choice and !req.force, else measure and report.
void tuneChildMeasure(rt::Bundle &bundle, const attn_call &call, const TuneRequest &req,
                      const std::vector<std::string> &only, TuneChannel &channel);

} // namespace attune::attnc

#endif
