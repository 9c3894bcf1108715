//===- Arguments.h - host tensors, .npy files, binding to an op -*- C++ -*-===//
//
// What every host-side back end (reference, cpu) and attnc share: a plain host
// tensor, .npy reading and writing, and the binding of q, k, v and the extra inputs to
// an attn.attention with every shape checked against the declared symbols.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_CODEGEN_ARGUMENTS_H
#define ATTUNE_CODEGEN_ARGUMENTS_H

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace mlir::attn {
class AttentionOp;
}

namespace attune {

/// A dense row-major host tensor. Values are held as doubles whatever the element
/// type (every i32 fits exactly); `isInt` records the element type it stands for.
struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<double> data;
  bool isInt = false;

  int64_t numel() const;
  static HostTensor zeros(std::vector<int64_t> shape, bool isInt = false);
  std::string shapeString() const;
};

/// Reads a .npy file (float32/float64/int32/int64, C order). Float files become
/// float tensors, integer files integer tensors.
bool readNpy(const std::string &path, HostTensor &out, std::string &error);
/// Writes float32 (or int32 for integer tensors) .npy.
bool writeNpy(const std::string &path, const HostTensor &t, std::string &error);

struct AttentionArgs {
  HostTensor q, k, v;
  std::map<std::string, HostTensor> inputs;
  std::optional<int64_t> qOffset, kvOffset;
};

/// Sizes of one call, after binding.
struct BoundCall {
  int64_t batch = 0, headsQ = 0, headsKv = 0, seqQ = 0, seqKv = 0, headDim = 0,
          headDimV = 0;
  int64_t qOffset = 0, kvOffset = 0;
  /// The extra inputs in the op's operand order.
  std::vector<const HostTensor *> inputs;
};

/// Checks q, k, v and the extra inputs against `op` (ranks, head counts, head dims,
/// declared symbolic dims bound consistently, dtypes) and resolves default offsets.
/// Errors name the argument: "k: expected [B=2, Hkv=2, Skv, D=64], got [2, 2, 17, 32]".
bool bindArguments(mlir::attn::AttentionOp op, const AttentionArgs &args,
                   BoundCall &call, std::string &error);

} // namespace attune

#endif
