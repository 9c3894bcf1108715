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

/// The per-sequence arguments of a call (ragged or paged storage, right-padded
/// batches): int32 tensors, each optional. FlashAttention's varlen convention:
/// sequence b of a ragged buffer is rows [cu[b], cu[b + 1]).
struct SequenceArgs {
  std::optional<HostTensor> cuSeqlensQ, cuSeqlensKv, pageTable, kvLens, qLens;
  /// The arrays stand for a GPU call's device memory (gpu-sim, gpu): what is read and
  /// checked before running follows rt::sequenceReads (runtime/src/Sequences.h), so
  /// that the simulator's kernels meet what a GPU's would; `validate` reads all.
  bool onDevice = false, validate = false;
  /// --max-seqlen-q / --max-seqlen-kv (0: not given).
  int64_t maxSeqlenQ = 0, maxSeqlenKv = 0;
  bool any() const { return cuSeqlensQ || cuSeqlensKv || pageTable || kvLens || qLens; }
};

struct AttentionArgs {
  HostTensor q, k, v;
  std::map<std::string, HostTensor> inputs;
  std::optional<int64_t> qOffset, kvOffset;
  SequenceArgs seq;
  /// q, k, v are the logical [B, H, S, D] batch whatever the op's storage (one
  /// sequence gathered by gatherSequence): bound as a padded call.
  bool logical = false;
};

/// One sequence of a per-sequence call: its lengths, where its rows start in the
/// ragged buffers (0 otherwise), and its positions' offsets.
struct SequenceView {
  int64_t qLen = 0, kvLen = 0, qRow0 = 0, kvRow0 = 0, qOffset = 0, kvOffset = 0;
};

/// Sizes of one call, after binding.
struct BoundCall {
  int64_t batch = 0, headsQ = 0, headsKv = 0, seqQ = 0, seqKv = 0, headDim = 0,
          headDimV = 0;
  int64_t qOffset = 0, kvOffset = 0;
  /// The extra inputs in the op's operand order.
  std::vector<const HostTensor *> inputs;

  /// A per-sequence call: the spec's storage is not padded both ways, or lengths
  /// were given. seqQ and seqKv are then the longest sequence's (padded: the
  /// buffer's) lengths, which the inputs' Sq and Skv dims are.
  bool perSequence = false;
  std::string qStorage = "padded", kvStorage = "padded";
  int64_t pageSize = 0, numPages = 0, maxSeqQ = 0;
  /// q_offset_b = qOffset + kv_len_b - q_len_b (bottom_right with no offset given).
  bool qOffsetFromLengths = false;
  std::vector<SequenceView> sequences;
  /// o's and lse's shapes in q's storage: [B, Hq, Sq, Dv] and [B, Hq, Sq], or
  /// ragged [total_q, Hq, Dv] and [total_q, Hq].
  std::vector<int64_t> oShape, lseShape;
};

/// Checks q, k, v and the extra inputs against `op` (ranks, head counts, head dims,
/// declared symbolic dims bound consistently, dtypes) and resolves default offsets.
/// Errors name the argument: "k: expected [B=2, Hkv=2, Skv, D=64], got [2, 2, 17, 32]".
bool bindArguments(mlir::attn::AttentionOp op, const AttentionArgs &args,
                   BoundCall &call, std::string &error);

/// The dense arguments of sequence `b` of a bound per-sequence call: q, k, v as
/// [1, H, len, D] and every input sliced to it (dims B -> b, Sq -> its q_len rows,
/// Skv -> its kv_len columns), with its offsets given. What the reference runs.
AttentionArgs gatherSequence(mlir::attn::AttentionOp op, const AttentionArgs &args,
                             const BoundCall &call, int64_t b);
/// Writes sequence b's o [1, Hq, q_len, Dv] (and lse) into the call's outputs, laid
/// out as call.oShape / call.lseShape.
void scatterSequence(const BoundCall &call, int64_t b, const HostTensor &o,
                     const HostTensor *lse, HostTensor &outO, HostTensor *outLse);
/// Outputs of a call's shapes: o = 0 and lse = -inf (rows past a padded sequence's
/// length keep them).
void allocateOutputs(const BoundCall &call, bool lse, HostTensor &o, HostTensor &outLse);

} // namespace attune

#endif
