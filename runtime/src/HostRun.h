//===- HostRun.h - a bundle's host variants: loading and running them -*- C++ -*-===//
//
// The host variant of a bundle (manifest "host", docs/bundle-and-abi.md) is a shared
// object of packed entries (HostLaunch.h): a forward kernel that writes o and, for
// softmax, lse; and usually a backward kernel. They take contiguous float32 tensors
// (integer inputs int32); the runtime converts the caller's tensors (bf16, fp16,
// strided) into such buffers and back, runs the kernel over threads and returns when
// it is done.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_RUNTIME_HOSTRUN_H
#define ATTUNE_RUNTIME_HOSTRUN_H

#include "Args.h"
#include "HostLaunch.h"
#include "Manifest.h"

#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace attune::rt {

/// The variant to run: `forced` (a host variant's name) or the default. Throws
/// ArgError (prefixed with `fn`) when the bundle has no host variant or no such one.
int selectHostVariant(const Manifest &m, const char *forced, const char *fn);

/// The host libraries of one bundle, each dlopened on first use and closed with it.
class HostLibraries {
public:
  struct Entries {
    HostEntryFn forward = nullptr, backward = nullptr;
    HostItemsFn forwardItems = nullptr, backwardItems = nullptr;
  };
  ~HostLibraries();
  /// Throws ArgError naming the file and dlerror() when the library cannot be loaded.
  const Entries &get(const Manifest &m, const std::string &dir, int index, const char *fn);

private:
  std::mutex mu_;
  std::map<int, std::pair<void *, Entries>> loaded_;
};

/// A checked backward call.
struct CheckedBackward {
  CheckedCall fwd;
  attn_tensor dout{}, dlse{}, dq{}, dk{}, dv{};
  /// Per manifest input: the gradient asked for (data NULL when not asked).
  std::vector<attn_tensor> grads;
};

/// The checks of attn_backward (after those of the forward call with lse available):
/// dO has o's shape and dtype, dlse lse's, dq/dk/dv q's/k's/v's shapes in q's dtype,
/// gradients only of declared float inputs (f32, contiguous, the input's shape).
CheckedBackward checkBackward(const Manifest &m, const attn_backward_call &call, const char *fn);

/// Runs host variant `v`'s forward on the checked call (o, and lse when asked).
void runHostForward(const HostVariant &v, const HostLibraries::Entries &e, const CheckedCall &c,
                    int threads);
/// Runs its backward. Throws ArgError when the variant has none.
void runHostBackward(const HostVariant &v, const HostLibraries::Entries &e,
                     const CheckedBackward &c, int threads, const char *fn);

} // namespace attune::rt

#endif
