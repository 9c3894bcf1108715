//===- RegionInterpreter.h - run attn regions on the host -------*- C++ -*-===//
//
// Executes the ops of an attn region (mask, score, kv_ranges, tile_class) on scalar
// values: integers as int64 with wrap-around, floats in double precision whatever
// their IR type (the reference is a float64 oracle). The region is compiled once into
// a flat list of instructions over numbered slots, then run per element.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_CODEGEN_REFERENCE_REGIONINTERPRETER_H
#define ATTUNE_CODEGEN_REFERENCE_REGIONINTERPRETER_H

#include "mlir/Support/LLVM.h"
#include "llvm/Support/LogicalResult.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mlir {
class Region;
namespace attn {
class AttentionOp;
}
} // namespace mlir

namespace attune {

struct HostTensor;

union Slot {
  int64_t i;
  double f;
};

class RegionProgram {
public:
  /// Compiles `region` of `op`. Tensors the region reads must be extra inputs of
  /// `op`; they are passed to run() in the op's input order. Fails with an error at
  /// the op the interpreter does not know (or at `op` for a malformed region).
  static mlir::FailureOr<std::unique_ptr<RegionProgram>> compile(mlir::Region &region,
                                                                 mlir::attn::AttentionOp op);
  ~RegionProgram();

  unsigned numArgs() const;
  unsigned numResults() const;
  /// Slots needed by run()'s scratch vector.
  unsigned numSlots() const;

  /// Runs the region. `scratch` must have numSlots() entries; results are copied
  /// to `results` (numResults() entries).
  void run(const Slot *args, const std::vector<const HostTensor *> &tensors,
           std::vector<Slot> &scratch, Slot *results) const;

  /// Runs the region, then reverse mode from `seed` = dL/d(result 0): returns
  /// dL/d(argument `wrt`) (a float argument: the score region's s) and adds dL/dt[idx]
  /// into grads[n] for every element of float input n read (attn.lookup and the T5 and
  /// FIRE tables; grads[n] null or absent: not wanted). `adjoint` is scratch.
  double runGrad(const Slot *args, const std::vector<const HostTensor *> &tensors,
                 std::vector<Slot> &scratch, std::vector<double> &adjoint, double seed,
                 unsigned wrt, const std::vector<HostTensor *> &grads) const;

  struct Impl;

private:
  explicit RegionProgram(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl;
};

/// The T5 relative-position bucket of d = q - kv (mesh-tensorflow's
/// _relative_position_bucket with relative_position = kv - q).
int64_t t5Bucket(int64_t d, bool bidirectional, int64_t numBuckets, int64_t maxDistance);

} // namespace attune

#endif
