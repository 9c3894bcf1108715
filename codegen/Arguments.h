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

/// The most elements a host tensor (an argument or an output) may have: 2^31, 16 GiB
/// as doubles. Larger shapes are refused with a message, not left to the allocator.
constexpr int64_t kMaxHostElements = int64_t(1) << 31;

/// n = the product of `shape`; false when a size is negative, the product overflows
/// int64 or exceeds `limit`.
bool checkedNumel(const std::vector<int64_t> &shape, int64_t limit, int64_t &n);

/// A dense row-major host tensor. Values are held as doubles whatever the element
/// type (every i32 fits exactly); `isInt` records the element type it stands for.
struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<double> data;
  bool isInt = false;
  /// The dtype of the .npy file it was read from ("float32", "int64", ...), for
  /// messages; empty for tensors made in memory.
  std::string npyDtype;

  /// The product of the sizes (INT64_MAX when it overflows).
  int64_t numel() const;
  static HostTensor zeros(std::vector<int64_t> shape, bool isInt = false);
  std::string shapeString() const;
};

/// Reads a .npy file (float32/float64/int32/int64, little-endian, C order). Float
/// files become float tensors, integer files integer tensors. Everything is checked
/// before anything is allocated or indexed: the header's length and syntax (a strict
/// Python dict literal with exactly 'descr', 'fortran_order', 'shape'), the dtype,
/// the order, every size (non-negative; the product overflow-checked and at most
/// kMaxHostElements) and the data bytes against the file's actual size (neither
/// shorter nor longer). Errors start with the path and say what is wrong.
bool readNpy(const std::string &path, HostTensor &out, std::string &error);
/// Writes float32 (or int32 for integer tensors) .npy; any shape, empty ones included
/// (numpy loads them back with that shape). Fails when data and shape disagree.
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
