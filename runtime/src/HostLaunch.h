//===- HostLaunch.h - running the host (CPU) kernels over threads -*- C++ -*-===//
//
// A host kernel (the tiled program lowered to loops, codegen/host) is a function of
// memref descriptors whose grids form one flat range of independent work items
// (attn-lower-tiles-to-loops grid-range). Its packed entry takes an array of
// argument addresses:
//   void entry(void **args)  args: a descriptor pointer per tensor argument, then a
//                                  pointer to each int64 scalar (q_offset, kv_offset,
//                                  begin, end of the item range)
//   int64_t items(void **args) args: the same without the range, then a pointer to
//                                  `upto`: the items of the first `upto` grids
// Both the in-process JIT (attnc run --backend cpu) and the ahead-of-time host
// variants of a bundle (a shared object the runtime dlopens) run through
// runHostItems, so that they share the threading and its determinism rule.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_RUNTIME_HOSTLAUNCH_H
#define ATTUNE_RUNTIME_HOSTLAUNCH_H

#include <cstdint>
#include <utility>
#include <vector>

namespace attune::rt {

using HostEntryFn = void (*)(void **);
using HostItemsFn = int64_t (*)(void **);

/// A memref descriptor of a row-major tensor (contiguous unless strides are given), laid out as MLIR's
/// StridedMemRefType<T, N>: {allocated, aligned, offset, sizes[N], strides[N]}.
class MemrefDescriptor {
public:
  MemrefDescriptor(void *data, const std::vector<int64_t> &shape);
  /// A strided view (strides in elements), for kernel arguments that take strides.
  MemrefDescriptor(void *data, const std::vector<int64_t> &shape,
                   const std::vector<int64_t> &strides);
  void *get() { return words_.data(); }

private:
  std::vector<int64_t> words_;
};

/// The number of threads a host launch uses: `requested` when positive, else
/// $ATTUNE_NUM_THREADS when it is a positive number, else the machine's cores.
int hostThreads(int requested);

/// Runs items [0, total) of `entry` on `threads` threads. `args` are the entry's
/// arguments without the range (this appends begin and end per thread). Items are
/// independent and claimed a few at a time, except the ranges in `serial` ([begin,
/// end) pairs: grids that accumulate into a tensor gradient), each of which one
/// thread runs whole and in order: the results are then bitwise the same for every
/// thread count.
void runHostItems(HostEntryFn entry, const std::vector<void *> &args, int64_t total, int threads,
                  const std::vector<std::pair<int64_t, int64_t>> &serial = {});

} // namespace attune::rt

#endif
