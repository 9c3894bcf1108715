//===- Args.h - checking a call's arguments and packing kernel parameters -*- C++ -*-===//
//
// Everything here is pure host code: a call is checked completely, and its kernel
// parameters computed, before the device is touched.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_RUNTIME_ARGS_H
#define ATTUNE_RUNTIME_ARGS_H

#include "Manifest.h"
#include "attune/runtime.h"

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace attune::rt {

/// A rejected argument; the message starts with the API function's name.
class ArgError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// A checked call: the sizes it binds and where each tensor is.
struct CheckedCall {
  int64_t batch = 0, seqQ = 0, seqKv = 0, headsQ = 0, headsKv = 0, headDim = 0, headDimV = 0;
  int64_t qOffset = 0, kvOffset = 0;
  /// batch, seq_q, ..., num_splits (1 until a launch splits) and the free symbols: the
  /// names grid expressions use.
  std::map<std::string, int64_t> names;
  attn_tensor q{}, k{}, v{}, o{}, lse{};
  /// The extra inputs in manifest order.
  std::vector<attn_tensor> inputs;
  /// Nothing to compute (B, Hq or Sq is zero): no launch.
  bool empty = false;
  /// A per-sequence call (the bundle's storage is not padded, or sequence arguments
  /// were given; Sequences.h): seqQ / seqKv are then the inputs' Sq / Skv.
  bool perSequence = false;
  std::string qStorage = "padded", kvStorage = "padded";
  int64_t maxSeqQ = 0;
  /// q_offset_b = qOffset + kv_len_b - q_len_b (bottom-right per sequence).
  bool qOffsetFromLengths = false;
  attn_tensor cuSeqlensQ{}, cuSeqlensKv{}, pageTable{}, kvLens{}, qLens{};
  /// The kernels' <t>_stride_{b,h,s} of q, k, v, o: a padded tensor's strides; ragged
  /// [total, H, D]: (0, head, row); paged [pages, page_size, H, D]: (page, head, slot).
  int64_t strides[4][3] = {};
};

/// How a call is checked besides the manifest.
struct CheckOptions {
  /// A host call (the tensors in host memory, a host variant runs): q, k, v and o may
  /// be float32 or the bundle's dtype (the host kernels compute in float32 and the
  /// runtime converts), all four the same; no alignment rule.
  bool host = false;
  /// lse may be asked for although the spec's outputs lack it (a host forward always
  /// computes it for softmax: the backward reads it).
  bool lseAvailable = false;
  /// Where the call's int32 sequence arguments are when they are not host memory (a
  /// GPU call): the checks read the host copies `sequenceCopies` holds instead (in
  /// attn_call's order: cu_seqlens_q, cu_seqlens_kv, page_table, kv_lens, q_lens),
  /// and the kernels get the device pointers.
  const attn_tensor *sequenceCopies = nullptr;
};

/// Checks `call` against the manifest (dtypes, ranks, shapes, strides, extra inputs,
/// alignment) and binds its sizes. `fn` prefixes messages ("attn_launch").
CheckedCall checkCall(const Manifest &m, const attn_call &call, const char *fn,
                      const CheckOptions &options = {});

/// The grid of variant `v` for the call; throws ArgError when an expression fails or
/// evaluates outside [1, 2^31 - 1] (x) / [1, 65535] (y, z).
void evalGrid(const Variant &v, const CheckedCall &c, const char *fn, unsigned grid[3]);
/// The same for any grid (`what` names it in messages: "variant X" or "variant X's
/// combine kernel").
void evalGrid(const Expr expr[3], const std::string &what, const CheckedCall &c, const char *fn,
              unsigned grid[3]);

/// One 8-byte slot per parameter of `v`, in order (i32/f32 values in the low bytes),
/// ready for cuLaunchKernel's kernelParams. Throws ArgError when an i32 parameter's
/// value does not fit.
std::vector<uint64_t> packParams(const Variant &v, const CheckedCall &c, const char *fn);
/// The same for any parameter list; `scratch` holds the device pointers of the
/// variant's scratch buffers (in split_kv.scratch order), or is empty when none exist
/// (scratch parameters are then null).
///
/// `extents`, when given, receives one entry per parameter: the bytes a pointer
/// parameter may reach from its address (the tensor's span, spanBytes; a scratch
/// buffer's size from `scratchBytes`), 0 for scalars and null pointers. A device that
/// checks accesses (the simulator) bounds each pointer by it.
std::vector<uint64_t> packParams(const std::vector<Param> &params, const std::string &what,
                                 const CheckedCall &c, const std::vector<uint64_t> &scratch,
                                 const char *fn, std::vector<uint64_t> *extents = nullptr,
                                 const std::vector<uint64_t> &scratchBytes = {});

/// How many splits of the keys to launch: `requested` when >= 1, else automatic: one
/// when the unsplit grid (`ctas` CTAs) already fills most of the `smCount` SMs, else
/// enough to fill them, at most one per two key blocks (`kvBlocks`) and 128.
int64_t chooseSplits(int64_t requested, int64_t ctas, int64_t smCount, int64_t kvBlocks);

/// "bf16", "fp16", "f32", "i32" for an attn_dtype code, "?" for another.
const char *dtypeCodeName(int32_t code);

/// "[2, 8, 1000, 128]"
std::string shapeText(const int64_t *shape, int ndim);

/// Bytes from the first element to one past the last one of `t` (0 if it is empty);
/// UINT64_MAX when that is not representable (checkCall refuses such tensors).
uint64_t spanBytes(const attn_tensor &t);

/// A contiguous (row-major) tensor over `data`; as PyTorch, no stride is 0 (a
/// dimension of size 0 counts as 1 for the strides outside it).
attn_tensor contiguousTensor(void *data, int32_t dtype, const std::vector<int64_t> &shape);
/// The same; false when the span overflows or exceeds 2^62 bytes.
bool checkedSpanBytes(const attn_tensor &t, uint64_t &bytes);

} // namespace attune::rt

#endif
