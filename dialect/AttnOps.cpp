//===- AttnOps.cpp - verifiers and helpers of the attn ops ----------------===//
#include "dialect/AttnOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringSet.h"

#include <cmath>

using namespace mlir;
using namespace mlir::attn;

void mlir::attn::cloneConstantsUsedIn(Region &region, OpBuilder &b, IRMapping &mapping) {
  region.walk([&](Operation *inner) {
    for (Value operand : inner->getOperands()) {
      Operation *def = operand.getDefiningOp();
      if (!def || region.isAncestor(def->getParentRegion()) || mapping.contains(operand) ||
          !def->hasTrait<OpTrait::ConstantLike>())
        continue;
      mapping.map(operand, b.clone(*def)->getResult(0));
    }
  });
}

//===----------------------------------------------------------------------===//
// attn.attention
//===----------------------------------------------------------------------===//

static RankedTensorType tensorType(Value v) {
  return cast<RankedTensorType>(v.getType());
}

int64_t AttentionOp::getHeadsQ() { return tensorType(getQ()).getDimSize(1); }
int64_t AttentionOp::getHeadsKv() { return tensorType(getK()).getDimSize(1); }
int64_t AttentionOp::getHeadDim() { return tensorType(getQ()).getDimSize(3); }
int64_t AttentionOp::getHeadDimV() { return tensorType(getV()).getDimSize(3); }

int AttentionOp::getInputIndex(Value value) {
  for (auto [i, input] : llvm::enumerate(getInputs()))
    if (input == value)
      return static_cast<int>(i);
  return -1;
}

bool AttentionOp::hasIdentityScore() {
  Block &block = getScore().front();
  auto yield = dyn_cast<YieldOp>(block.getTerminator());
  return yield && yield.getValues().size() == 1 &&
         yield.getValues()[0] == block.getArgument(0);
}

bool AttentionOp::hasTrivialMask() {
  Block &block = getMask().front();
  auto yield = dyn_cast<YieldOp>(block.getTerminator());
  if (!yield || yield.getValues().size() != 1)
    return false;
  auto cst = yield.getValues()[0].getDefiningOp<arith::ConstantIntOp>();
  return cst && cst.value() != 0;
}

void AttentionOp::getAsmBlockArgumentNames(Region &region,
                                           OpAsmSetValueNameFn setNameFn) {
  if (region.empty())
    return;
  static const char *kMaskNames[] = {"b", "h", "q_idx", "kv_idx",
                                     "q", "kv", "seq_q", "seq_kv"};
  static const char *kRangeNames[] = {"b",        "h",         "q_lo",  "q_hi",
                                      "q_offset", "kv_offset", "seq_q", "seq_kv"};
  static const char *kClassNames[] = {"b",     "h",        "q_lo",      "q_hi",
                                      "kv_lo", "kv_hi",    "q_offset",  "kv_offset",
                                      "seq_q", "seq_kv"};
  Block &block = region.front();
  auto name = [&](ArrayRef<const char *> names, unsigned first) {
    for (auto [i, n] : llvm::enumerate(names))
      if (first + i < block.getNumArguments())
        setNameFn(block.getArgument(first + i), n);
  };
  if (&region == &getMask()) {
    name(kMaskNames, 0);
  } else if (&region == &getScore()) {
    if (block.getNumArguments() > 0)
      setNameFn(block.getArgument(0), "s");
    name(kMaskNames, 1);
  } else if (&region == &getKvRanges()) {
    name(kRangeNames, 0);
  } else if (&region == &getTileClass()) {
    name(kClassNames, 0);
  } else if (&region == &getScoreGrad()) {
    if (block.getNumArguments() > 1) {
      setNameFn(block.getArgument(0), "g");
      setNameFn(block.getArgument(1), "s");
    }
    name(kMaskNames, 2);
  }
}

/// Checks that `type` is [?|batch, heads, ?, dim] with static heads and dim.
static LogicalResult verifyQkvType(Operation *op, StringRef name,
                                   RankedTensorType type) {
  if (type.getRank() != 4)
    return op->emitOpError() << name << " must be a rank-4 tensor [B, H, S, D], got "
                             << type;
  if (!isa<FloatType>(type.getElementType()) ||
      !(type.getElementType().isBF16() || type.getElementType().isF16() ||
        type.getElementType().isF32()))
    return op->emitOpError() << name << " must hold bf16, f16 or f32, got "
                             << type.getElementType();
  if (type.isDynamicDim(1) || type.getDimSize(1) <= 0)
    return op->emitOpError() << name
                             << " must have a static, positive head count (dim 1)";
  if (type.isDynamicDim(3) || type.getDimSize(3) <= 0 || type.getDimSize(3) > 512)
    return op->emitOpError() << name
                             << " must have a static head_dim (dim 3) in [1, 512]";
  return success();
}

static bool compatibleDim(int64_t a, int64_t b) {
  return ShapedType::isDynamic(a) || ShapedType::isDynamic(b) || a == b;
}

LogicalResult AttentionOp::verify() {
  Operation *op = getOperation();
  auto qt = tensorType(getQ()), kt = tensorType(getK()), vt = tensorType(getV());
  if (failed(verifyQkvType(op, "q", qt)) || failed(verifyQkvType(op, "k", kt)) ||
      failed(verifyQkvType(op, "v", vt)))
    return failure();
  if (qt.getElementType() != kt.getElementType() ||
      qt.getElementType() != vt.getElementType())
    return emitOpError("q, k and v must share one element type, got ")
           << qt.getElementType() << ", " << kt.getElementType() << ", "
           << vt.getElementType();
  int64_t hq = qt.getDimSize(1), hkv = kt.getDimSize(1);
  if (vt.getDimSize(1) != hkv)
    return emitOpError("k and v must have the same head count, got ")
           << hkv << " and " << vt.getDimSize(1);
  if (hq % hkv != 0)
    return emitOpError("heads_q (") << hq << ") must be a multiple of heads_kv ("
                                    << hkv << ")";
  if (qt.getDimSize(3) != kt.getDimSize(3))
    return emitOpError("q and k must have the same head_dim, got ")
           << qt.getDimSize(3) << " and " << kt.getDimSize(3);
  if (!compatibleDim(qt.getDimSize(0), kt.getDimSize(0)) ||
      !compatibleDim(kt.getDimSize(0), vt.getDimSize(0)))
    return emitOpError("q, k and v must have the same batch size");
  if (!compatibleDim(kt.getDimSize(2), vt.getDimSize(2)))
    return emitOpError("k and v must have the same sequence length");

  // Results: o [B, Hq, Sq, Dv] and, for softmax on request, lse [B, Hq, Sq] f32.
  auto ot = dyn_cast<RankedTensorType>(getO().getType());
  if (!ot || ot.getRank() != 4 || ot.getDimSize(1) != hq ||
      ot.getDimSize(3) != vt.getDimSize(3) ||
      !compatibleDim(ot.getDimSize(0), qt.getDimSize(0)) ||
      !compatibleDim(ot.getDimSize(2), qt.getDimSize(2)))
    return emitOpError("result o must be [B, ") << hq << ", Sq, " << vt.getDimSize(3)
                                                << "], got " << getO().getType();
  if (ot.getElementType() != vt.getElementType() && !ot.getElementType().isF32())
    return emitOpError("result o must have v's element type or f32, got ")
           << ot.getElementType();
  if (Value lse = getLse()) {
    auto lt = dyn_cast<RankedTensorType>(lse.getType());
    if (!lt || lt.getRank() != 3 || lt.getDimSize(1) != hq ||
        !lt.getElementType().isF32())
      return emitOpError("result lse must be an f32 tensor [B, ")
             << hq << ", Sq], got " << lse.getType();
    if (getNormalizer() != Normalizer::softmax)
      return emitOpError("lse is only defined for the softmax normalizer, not ")
             << stringifyNormalizer(getNormalizer());
  }
  if (getSigmoidBeta() && getNormalizer() != Normalizer::sigmoid)
    return emitOpError("sigmoid_beta is only meaningful with the sigmoid normalizer");
  if (!std::isfinite(getScale().convertToDouble()))
    return emitOpError("scale must be finite");

  // Extra inputs: names and declared dims.
  size_t n = getInputs().size();
  if (getInputNames().size() != n)
    return emitOpError("input_names has ")
           << getInputNames().size() << " names for " << n << " inputs";
  llvm::StringSet<> seen;
  for (Attribute a : getInputNames()) {
    StringRef name = cast<StringAttr>(a).getValue();
    if (name.empty() || !seen.insert(name).second)
      return emitOpError("input names must be unique and non-empty, got '")
             << name << "'";
  }
  if (!getInputDims().empty()) {
    if (getInputDims().size() != n)
      return emitOpError("input_dims has ")
             << getInputDims().size() << " entries for " << n << " inputs";
    for (auto [i, entry] : llvm::enumerate(getInputDims())) {
      auto dims = dyn_cast<ArrayAttr>(entry);
      auto type = tensorType(getInputs()[i]);
      if (!dims || static_cast<int64_t>(dims.size()) != type.getRank())
        return emitOpError("input_dims[") << i << "] must list one dim per dimension of "
                                          << type;
      for (auto [d, dim] : llvm::enumerate(dims)) {
        if (auto ia = dyn_cast<IntegerAttr>(dim)) {
          if (ia.getInt() <= 0 || type.getDimSize(d) != ia.getInt())
            return emitOpError("input_dims[")
                   << i << "][" << d << "] = " << ia.getInt()
                   << " does not match the type " << type;
        } else if (!isa<StringAttr>(dim)) {
          return emitOpError("input_dims[") << i << "][" << d
                                            << "] must be an integer or a symbol";
        }
      }
    }
  }
  if (auto sorted = getSortedDims()) {
    // Per input, the dimension it is non-decreasing along, or -1.
    if (sorted->size() != n)
      return emitOpError("sorted_dims has ") << sorted->size() << " entries for " << n
                                             << " inputs";
    for (auto [i, d] : llvm::enumerate(*sorted)) {
      auto type = tensorType(getInputs()[i]);
      if (d == -1)
        continue;
      if (d < 0 || d >= type.getRank())
        return emitOpError("sorted_dims[") << i << "] = " << d << " is outside the rank of "
                                           << type;
      if (!type.getElementType().isInteger(32) && !type.getElementType().isInteger(64))
        return emitOpError("sorted_dims[") << i << "]: only integer inputs can be sorted, got "
                                           << type;
    }
  }
  return success();
}

/// Checks a region's entry block arguments and its yield.
static LogicalResult verifyRegionSignature(AttentionOp op, Region &region,
                                           StringRef name, ArrayRef<Type> args,
                                           std::optional<Type> yieldType,
                                           bool yieldEvenI64 = false) {
  Block &block = region.front();
  if (block.getNumArguments() != args.size())
    return op.emitOpError() << "region '" << name << "' must take " << args.size()
                            << " arguments, got " << block.getNumArguments();
  for (auto [i, t] : llvm::enumerate(args))
    if (block.getArgument(i).getType() != t)
      return op.emitOpError() << "region '" << name << "' argument #" << i
                              << " must be " << t << ", got "
                              << block.getArgument(i).getType();
  auto yield = dyn_cast<YieldOp>(block.getTerminator());
  if (!yield)
    return op.emitOpError() << "region '" << name << "' must end in attn.yield";
  if (yieldType) {
    if (yield.getValues().size() != 1 || yield.getValues()[0].getType() != *yieldType)
      return yield.emitOpError() << "in region '" << name << "' must yield one "
                                 << *yieldType;
  }
  if (yieldEvenI64) {
    if (yield.getValues().empty() || yield.getValues().size() % 2 != 0 ||
        !llvm::all_of(yield.getValues().getTypes(),
                      [](Type t) { return t.isInteger(64); }))
      return yield.emitOpError()
             << "in region '" << name << "' must yield (lo, hi) pairs of i64";
  }
  return success();
}

/// Tensors read inside the regions must be extra inputs of the op: back ends map
/// them to kernel parameters.
static LogicalResult verifyTensorUses(AttentionOp op, Region &region) {
  WalkResult r = region.walk([&](Operation *inner) -> WalkResult {
    for (Value operand : inner->getOperands()) {
      Operation *def = operand.getDefiningOp();
      bool fromAbove = def ? !region.isAncestor(def->getParentRegion())
                           : !region.isAncestor(operand.getParentRegion());
      if (fromAbove && !isa<RankedTensorType>(operand.getType()) &&
          !(def && def->hasTrait<OpTrait::ConstantLike>())) {
        inner->emitOpError("uses a value defined outside the region that is neither "
                           "an extra input nor a constant");
        return WalkResult::interrupt();
      }
      if (!isa<RankedTensorType>(operand.getType()))
        continue;
      if (op.getInputIndex(operand) < 0) {
        inner->emitOpError("reads a tensor that is not an extra input of the "
                           "enclosing attn.attention");
        return WalkResult::interrupt();
      }
    }
    auto checkPerHead = [&](StringRef what, size_t size) -> WalkResult {
      if (static_cast<int64_t>(size) != op.getHeadsQ()) {
        inner->emitOpError() << what << " must have one value per query head ("
                             << op.getHeadsQ() << "), got " << size;
        return WalkResult::interrupt();
      }
      return WalkResult::advance();
    };
    if (auto alibi = dyn_cast<AlibiOp>(inner))
      return checkPerHead("slopes", alibi.getSlopes().size());
    if (auto kerple = dyn_cast<KerpleLogOp>(inner)) {
      if (checkPerHead("r1", kerple.getR1().size()).wasInterrupted())
        return WalkResult::interrupt();
      return checkPerHead("r2", kerple.getR2().size());
    }
    if (auto shifted = dyn_cast<ShiftedGroupsOp>(inner)) {
      for (int64_t h : shifted.getShiftedHeads())
        if (h < 0 || h >= op.getHeadsQ()) {
          inner->emitOpError() << "shifted head " << h << " is outside [0, "
                               << op.getHeadsQ() << ")";
          return WalkResult::interrupt();
        }
    }
    return WalkResult::advance();
  });
  return failure(r.wasInterrupted());
}

LogicalResult AttentionOp::verifyRegions() {
  MLIRContext *ctx = getContext();
  Type i64 = IntegerType::get(ctx, 64), i1 = IntegerType::get(ctx, 1),
       i32 = IntegerType::get(ctx, 32), f32 = Float32Type::get(ctx);
  SmallVector<Type> maskArgs(kNumMaskArgs, i64);
  SmallVector<Type> scoreArgs{f32};
  scoreArgs.append(kNumMaskArgs, i64);
  if (failed(verifyRegionSignature(*this, getMask(), "mask", maskArgs, i1)) ||
      failed(verifyRegionSignature(*this, getScore(), "score", scoreArgs, f32)) ||
      failed(verifyTensorUses(*this, getMask())) ||
      failed(verifyTensorUses(*this, getScore())))
    return failure();
  if (getKvRanges().empty() != getTileClass().empty())
    return emitOpError("kv_ranges and tile_class are filled together (by "
                       "attn-analyze-blocks) or not at all");
  if (!getKvRanges().empty()) {
    SmallVector<Type> rangeArgs(kNumRangeArgs, i64), classArgs(kNumClassArgs, i64);
    if (failed(verifyRegionSignature(*this, getKvRanges(), "kv_ranges", rangeArgs,
                                     std::nullopt, /*yieldEvenI64=*/true)) ||
        failed(verifyRegionSignature(*this, getTileClass(), "tile_class", classArgs,
                                     i32)) ||
        failed(verifyTensorUses(*this, getKvRanges())) ||
        failed(verifyTensorUses(*this, getTileClass())))
      return failure();
  }
  if (!getScoreGrad().empty()) {
    SmallVector<Type> gradArgs{f32, f32};
    gradArgs.append(kNumMaskArgs, i64);
    if (failed(verifyRegionSignature(*this, getScoreGrad(), "score_grad", gradArgs, f32)) ||
        failed(verifyTensorUses(*this, getScoreGrad())))
      return failure();
  }
  return success();
}

//===----------------------------------------------------------------------===//
// attn.rope
//===----------------------------------------------------------------------===//

LogicalResult RopeOp::verify() {
  auto type = tensorType(getInput());
  if (type.getRank() != 4 || type.isDynamicDim(3))
    return emitOpError("input must be [B, H, S, D] with a static D, got ") << type;
  int64_t d = type.getDimSize(3), r = static_cast<int64_t>(getRotaryDim());
  if (r <= 0 || r > d || r % 2 != 0)
    return emitOpError("rotary_dim must be even and in [2, head_dim = ")
           << d << "], got " << r;
  double theta = getTheta().convertToDouble();
  if (!(theta > 1.0) || !std::isfinite(theta))
    return emitOpError("theta must be a finite number > 1, got ") << theta;
  double factor = getFactor().convertToDouble();
  if (!(factor > 0.0) || !std::isfinite(factor))
    return emitOpError("factor must be a finite positive number, got ") << factor;
  if (getScaling() == RopeScaling::ntk && r <= 2)
    return emitOpError("ntk scaling needs rotary_dim > 2");
  if (getScaling() == RopeScaling::yarn) {
    if (static_cast<int64_t>(getOriginalMaxPosition()) <= 0)
      return emitOpError("yarn scaling needs original_max_position > 0");
    if (!(getBetaFast().convertToDouble() > getBetaSlow().convertToDouble()))
      return emitOpError("yarn scaling needs beta_fast > beta_slow");
  }
  return success();
}

//===----------------------------------------------------------------------===//
// Pattern ops
//===----------------------------------------------------------------------===//

static LogicalResult checkBound(Operation *op, StringRef name, int64_t v) {
  if (v < -1)
    return op->emitOpError() << name << " must be >= -1 (-1 = unbounded), got " << v;
  return success();
}

static LogicalResult checkPositive(Operation *op, StringRef name, int64_t v) {
  if (v <= 0)
    return op->emitOpError() << name << " must be > 0, got " << v;
  return success();
}

LogicalResult SlidingWindowOp::verify() {
  return success(succeeded(checkBound(*this, "left", getLeft())) &&
                 succeeded(checkBound(*this, "right", getRight())));
}

LogicalResult DilatedWindowOp::verify() {
  return success(succeeded(checkBound(*this, "left", getLeft())) &&
                 succeeded(checkBound(*this, "right", getRight())) &&
                 succeeded(checkPositive(*this, "dilation",
                                         static_cast<int64_t>(getDilation()))));
}

LogicalResult SinksOp::verify() {
  int64_t count = static_cast<int64_t>(getCount()); // I64Attr reads as unsigned
  if (count < 0)
    return emitOpError("count must be >= 0, got ") << count;
  return success();
}

LogicalResult GlobalTokensOp::verify() {
  if (getCount().has_value() == getTokens().has_value())
    return emitOpError("needs exactly one of 'count' and 'tokens'");
  if (getCount() && static_cast<int64_t>(*getCount()) < 0)
    return emitOpError("count must be >= 0, got ") << static_cast<int64_t>(*getCount());
  return success();
}

LogicalResult StridedOp::verify() {
  return checkPositive(*this, "stride", static_cast<int64_t>(getStride()));
}

LogicalResult FixedOp::verify() {
  if (failed(checkPositive(*this, "stride", static_cast<int64_t>(getStride()))))
    return failure();
  int64_t summary = static_cast<int64_t>(getSummary());
  if (summary < 0 || summary > static_cast<int64_t>(getStride()))
    return emitOpError("summary must be in [0, stride = ")
           << getStride() << "], got " << summary;
  return success();
}

LogicalResult DilatedSegmentsOp::verify() {
  if (failed(checkPositive(*this, "segment", static_cast<int64_t>(getSegment()))) ||
      failed(checkPositive(*this, "dilation", static_cast<int64_t>(getDilation()))))
    return failure();
  if (auto offset = getHeadOffset()) {
    int64_t o = static_cast<int64_t>(*offset);
    if (o < 0 || o >= static_cast<int64_t>(getDilation()))
      return emitOpError("head_offset must be in [0, dilation = ")
             << getDilation() << "), got " << o;
  }
  return success();
}

LogicalResult ShiftedGroupsOp::verify() {
  return checkPositive(*this, "group", static_cast<int64_t>(getGroup()));
}

LogicalResult SoftcapOp::verify() {
  double cap = getCap().convertToDouble();
  if (!(cap > 0.0) || !std::isfinite(cap))
    return emitOpError("cap must be a finite number > 0, got ") << cap;
  return success();
}

/// Checks that `v` is an f32 tensor of the given rank.
static LogicalResult checkFloatTensor(Operation *op, StringRef name, Value v,
                                      int64_t rank) {
  auto t = tensorType(v);
  if (t.getRank() != rank || !t.getElementType().isF32())
    return op->emitOpError() << name << " must be an f32 tensor of rank " << rank
                             << ", got " << t;
  return success();
}

LogicalResult T5BiasOp::verify() {
  if (failed(checkFloatTensor(*this, "table", getTable(), 2)))
    return failure();
  int64_t buckets = static_cast<int64_t>(getNumBuckets());
  if (buckets < 2 || (getBidirectional() && buckets < 4))
    return emitOpError("num_buckets must be >= 2 (>= 4 when bidirectional), got ")
           << buckets;
  if (static_cast<int64_t>(getMaxDistance()) <= 0)
    return emitOpError("max_distance must be > 0, got ")
           << static_cast<int64_t>(getMaxDistance());
  auto t = tensorType(getTable());
  if (!t.isDynamicDim(0) && t.getDimSize(0) != buckets)
    return emitOpError("table must have num_buckets (")
           << getNumBuckets() << ") rows, got " << t.getDimSize(0);
  return success();
}

LogicalResult FireOp::verify() {
  if (failed(checkFloatTensor(*this, "w1", getW1(), 1)) ||
      failed(checkFloatTensor(*this, "b1", getB1(), 1)) ||
      failed(checkFloatTensor(*this, "w2", getW2(), 2)) ||
      failed(checkFloatTensor(*this, "b2", getB2(), 1)))
    return failure();
  double c = getC().convertToDouble(), l = getL().convertToDouble();
  if (!(c > 0.0) || !std::isfinite(c))
    return emitOpError("c must be a finite number > 0, got ") << c;
  if (!(l > 0.0) || !std::isfinite(l))
    return emitOpError("L must be a finite number > 0, got ") << l;
  return success();
}

LogicalResult KerpleLogOp::verify() {
  if (getR1().size() != getR2().size())
    return emitOpError("r1 and r2 must have the same length");
  for (double x : getR1())
    if (!(x > 0.0) || !std::isfinite(x))
      return emitOpError("r1 values must be finite and > 0, got ") << x;
  for (double x : getR2())
    if (!(x > 0.0) || !std::isfinite(x))
      return emitOpError("r2 values must be finite and > 0, got ") << x;
  return success();
}

LogicalResult LogLengthScaleOp::verify() {
  double base = getBase().convertToDouble();
  if (!(base > 1.0) || !std::isfinite(base))
    return emitOpError("base must be a finite number > 1, got ") << base;
  return success();
}

//===----------------------------------------------------------------------===//
// attn.lookup, attn.contains
//===----------------------------------------------------------------------===//

LogicalResult LookupOp::verify() {
  auto t = tensorType(getTensor());
  if (static_cast<int64_t>(getIndices().size()) != t.getRank())
    return emitOpError("needs ") << t.getRank() << " indices for " << t << ", got "
                                 << getIndices().size();
  Type elt = t.getElementType();
  if (elt.isInteger(32) || elt.isInteger(64)) {
    if (!getValue().getType().isInteger(64))
      return emitOpError("an integer tensor yields i64");
  } else if (elt.isF32()) {
    if (!getValue().getType().isF32())
      return emitOpError("an f32 tensor yields f32");
  } else {
    return emitOpError("tensor elements must be i32, i64 or f32, got ") << elt;
  }
  return success();
}

LogicalResult AccumulateGradOp::verify() {
  auto t = cast<ShapedType>(getTarget().getType());
  if (static_cast<int64_t>(getIndices().size()) != t.getRank())
    return emitOpError("needs ") << t.getRank() << " indices for " << t << ", got "
                                 << getIndices().size();
  if (!t.getElementType().isF32())
    return emitOpError("accumulates into f32 tensors only, got ") << t.getElementType();
  return success();
}

LogicalResult ContainsOp::verify() {
  auto t = tensorType(getTensor());
  if (t.getRank() < 1 || static_cast<int64_t>(getIndices().size()) != t.getRank() - 1)
    return emitOpError("needs one index per dimension but the last of ") << t;
  if (!t.getElementType().isInteger(32) && !t.getElementType().isInteger(64))
    return emitOpError("tensor elements must be integers, got ") << t.getElementType();
  return success();
}

LogicalResult SizeOp::verify() {
  auto t = cast<ShapedType>(getTensor().getType());
  if (static_cast<int64_t>(getDim()) < 0 || static_cast<int64_t>(getDim()) >= t.getRank())
    return emitOpError("dim ") << static_cast<int64_t>(getDim()) << " is outside the rank of "
                               << t;
  return success();
}

/// A box over all dimensions (or all but the last) of an integer tensor.
static LogicalResult verifyBox(Operation *op, Type tensorType, size_t lo, size_t hi,
                               bool allButLast) {
  auto t = cast<ShapedType>(tensorType);
  int64_t want = allButLast ? t.getRank() - 1 : t.getRank();
  if (static_cast<int64_t>(lo) != want || static_cast<int64_t>(hi) != want)
    return op->emitOpError() << "needs " << want << " lo and hi bounds for " << t;
  if (!t.getElementType().isInteger(32) && !t.getElementType().isInteger(64))
    return op->emitOpError() << "tensor elements must be integers, got "
                             << t.getElementType();
  return success();
}

LogicalResult BoxSummaryOp::verify() {
  if (failed(verifyBox(*this, getTensor().getType(), getLo().size(), getHi().size(), false)))
    return failure();
  auto t = cast<ShapedType>(getTensor().getType());
  if (auto d = getSortedDim()) {
    int64_t dim = static_cast<int64_t>(*d);
    if (dim < 0 || dim >= t.getRank())
      return emitOpError("sorted_dim ") << dim << " is outside the rank of " << t;
  }
  return success();
}

LogicalResult SearchSortedOp::verify() {
  auto t = cast<ShapedType>(getTensor().getType());
  if (static_cast<int64_t>(getIndices().size()) != t.getRank())
    return emitOpError("needs ") << t.getRank() << " indices for " << t;
  if (static_cast<int64_t>(getDim()) < 0 || static_cast<int64_t>(getDim()) >= t.getRank())
    return emitOpError("dim ") << static_cast<int64_t>(getDim()) << " is outside the rank of "
                               << t;
  if (!t.getElementType().isInteger(32) && !t.getElementType().isInteger(64))
    return emitOpError("tensor elements must be integers, got ") << t.getElementType();
  return success();
}

LogicalResult BoxContainsOp::verify() {
  return verifyBox(*this, getTensor().getType(), getLo().size(), getHi().size(), true);
}

//===----------------------------------------------------------------------===//
// L2 tile ops
//===----------------------------------------------------------------------===//

void GridOp::getAsmBlockArgumentNames(Region &region, OpAsmSetValueNameFn setNameFn) {
  static const char *kNames[] = {"b", "h", "qb"};
  for (auto [i, arg] : llvm::enumerate(region.front().getArguments()))
    if (i < 3)
      setNameFn(arg, kNames[i]);
}

LogicalResult GridOp::verifyRegions() {
  Block &body = getBody().front();
  if (body.getNumArguments() != 3 ||
      !llvm::all_of(body.getArgumentTypes(), [](Type t) { return t.isIndex(); }))
    return emitOpError("body must take three index arguments (b, h, qb)");
  if (!isa<YieldOp>(body.getTerminator()))
    return emitOpError("body must end in attn.yield");
  if (static_cast<int64_t>(getBlockM()) <= 0 || static_cast<int64_t>(getBlockN()) <= 0)
    return emitOpError("block_m and block_n must be positive");
  return success();
}

static int64_t dimOf(Value v, unsigned d) { return cast<MemRefType>(v.getType()).getDimSize(d); }

LogicalResult LoadTileOp::verify() {
  auto src = cast<MemRefType>(getSource().getType());
  if (src.getRank() != 4)
    return emitOpError("source must be a rank-4 memref [B, H, S, D], got ") << src;
  if (src.isDynamicDim(3) || src.getDimSize(3) != dimOf(getTile(), 1))
    return emitOpError("tile width must equal the source's last dimension");
  if (getRope() && !getPositionOffset())
    return emitOpError("rope needs a position offset");
  if (!getPageTable() != !getPageSize() || !getPageTable() != !getPageRow())
    return emitOpError("pages needs the page table, its row and the page size");
  if (Value table = getPageTable()) {
    auto t = cast<MemRefType>(table.getType());
    if (t.getRank() != 2 || !t.getElementType().isInteger(32))
      return emitOpError("page table must be a rank-2 i32 memref [B, max_pages], got ") << t;
  }
  return success();
}

LogicalResult QkTileOp::verify() {
  if (dimOf(getQ(), 0) != dimOf(getS(), 0) || dimOf(getK(), 0) != dimOf(getS(), 1) ||
      dimOf(getQ(), 1) != dimOf(getK(), 1))
    return emitOpError("shapes do not form s[BM, BN] = q[BM, D] k[BN, D]^T");
  return success();
}

LogicalResult WeightsTileOp::verify() {
  if (getNormalizer() == Normalizer::softmax)
    return emitOpError("softmax weights come from attn.softmax_tile");
  return success();
}

LogicalResult PvTileOp::verify() {
  if (dimOf(getP(), 0) != dimOf(getAcc(), 0) || dimOf(getP(), 1) != dimOf(getV(), 0) ||
      dimOf(getV(), 1) != dimOf(getAcc(), 1))
    return emitOpError("shapes do not form acc[BM, Dv] += p[BM, BN] v[BN, Dv]");
  if (getAlpha() && dimOf(getAlpha(), 0) != dimOf(getAcc(), 0))
    return emitOpError("rescale factors must have one value per row");
  return success();
}

void ScoreTileOp::getAsmBlockArgumentNames(Region &region, OpAsmSetValueNameFn setNameFn) {
  static const char *kNames[] = {"b", "h", "q_idx", "kv_idx", "q", "kv", "seq_q", "seq_kv"};
  Block &block = region.front();
  unsigned first = &region == &getScore() ? 1 : 0;
  if (first && block.getNumArguments() > 0)
    setNameFn(block.getArgument(0), "s");
  for (unsigned i = 0; i < 8 && first + i < block.getNumArguments(); ++i)
    setNameFn(block.getArgument(first + i), kNames[i]);
}

LogicalResult ScoreTileOp::verifyRegions() {
  Type i64 = IntegerType::get(getContext(), 64), f32 = Float32Type::get(getContext());
  auto check = [&](Region &r, StringRef name, unsigned lead, Type yieldType) -> LogicalResult {
    Block &block = r.front();
    if (block.getNumArguments() != lead + 8)
      return emitOpError() << "region '" << name << "' must take " << lead + 8
                           << " arguments";
    auto yield = dyn_cast<YieldOp>(block.getTerminator());
    if (!yield || yield.getValues().size() != 1 ||
        yield.getValues()[0].getType() != yieldType)
      return emitOpError() << "region '" << name << "' must yield one " << yieldType;
    for (unsigned i = lead; i < lead + 8; ++i)
      if (block.getArgument(i).getType() != i64)
        return emitOpError() << "region '" << name << "' coordinates must be i64";
    return success();
  };
  if (failed(check(getMask(), "mask", 0, IntegerType::get(getContext(), 1))) ||
      failed(check(getScore(), "score", 1, f32)))
    return failure();
  // Buffers read by the regions must be operands of the op.
  WalkResult r = getOperation()->walk([&](Operation *inner) {
    if (inner == getOperation())
      return WalkResult::advance();
    for (Value v : inner->getOperands())
      if (isa<MemRefType>(v.getType()) && !llvm::is_contained(getInputs(), v)) {
        inner->emitOpError("reads a buffer that is not an input of attn.score_tile");
        return WalkResult::interrupt();
      }
    return WalkResult::advance();
  });
  return failure(r.wasInterrupted());
}

//===----------------------------------------------------------------------===//
// Region parsing
//===----------------------------------------------------------------------===//
//
// The regions of attn.attention, attn.score_tile and attn.grid are parsed here rather
// than by the declarative format's `$region`, to keep bad input from corrupting memory.
// Two properties of MLIR 22's parser combine into a use-after-free (found by fuzzing,
// ../shared/repro/hardening/abort.mlir; the same happens with upstream ops, e.g.
// omp.declare_reduction under mlir-opt):
//   - a use of an undefined name (`%q` in a mask region without a `^bb0(...)` header)
//     becomes a placeholder that MLIR later replaces by the next definition of that
//     name anywhere in the same isolated scope: also by an argument of a *sibling*
//     region parsed after it (the score region's `^bb0(..., %q: i64, ...)`);
//   - the ODS-generated parse() keeps the regions in locals that, when a later region
//     fails to parse, are destroyed in reverse order: the score region's arguments are
//     freed while mask ops still use them, and destroying those ops then writes into
//     freed memory (glibc: "malloc_consolidate(): unaligned fastbin chunk").
// So after each region this checks that no operand in it is still a placeholder (which
// would be bound across regions) and that nothing outside uses its values; and when a
// later part fails, it drops every use of the values the parsed regions define before
// the regions are destroyed (what MLIR's generic-form parser does for its regions).

namespace {
class RegionListParser {
public:
  RegionListParser(OpAsmParser &parser, StringRef opName) : parser(parser), opName(opName) {}
  RegionListParser(const RegionListParser &) = delete;
  RegionListParser &operator=(const RegionListParser &) = delete;

  ~RegionListParser() {
    if (succeeded)
      return;
    for (Region *region : parsed)
      for (Block &block : *region)
        block.dropAllDefinedValueUses();
  }

  /// Parses `{ ... }` into `region`, named `name` in diagnostics.
  ParseResult parse(Region &region, StringRef name) {
    parsed.push_back(&region);
    if (parser.parseRegion(region, /*arguments=*/{}, /*enableNameShadowing=*/false))
      return failure();
    return check(region, name);
  }

  /// Parses `keyword { ... }` when the keyword is next; leaves `region` empty if not.
  ParseResult parseOptional(Region &region, StringRef keyword) {
    if (parser.parseOptionalKeyword(keyword))
      return success();
    return parse(region, keyword);
  }

  ParseResult finish() {
    succeeded = true;
    return success();
  }

private:
  /// Whether `op` is nested in `region`. Region::isAncestor cannot be used: the regions
  /// and blocks being parsed are not attached to an op yet (it asserts or crashes).
  static bool isInside(Operation *op, Region &region) {
    for (Region *r = op->getParentRegion(); r;) {
      if (r == &region)
        return true;
      Operation *parent = r->getParentOp();
      if (!parent)
        return false;
      r = parent->getParentRegion();
    }
    return false;
  }

  ParseResult check(Region &region, StringRef name) {
    // A placeholder is an operation MLIR's parser creates outside any block.
    Operation *undefined = nullptr;
    region.walk([&](Operation *op) {
      for (Value v : op->getOperands())
        if (Operation *def = v.getDefiningOp(); def && !def->getBlock()) {
          undefined = def;
          return WalkResult::interrupt();
        }
      return WalkResult::advance();
    });
    if (undefined)
      return emitError(undefined->getLoc())
             << "use of a value not defined before it in the '" << name << "' region of "
             << opName << " (a region may use its own block arguments, its own values "
             << "and values defined above the op)";

    // A definition in the region that resolved an earlier forward reference outside it.
    for (Block &block : region) {
      auto escapes = [&](Value v) -> Operation * {
        for (OpOperand &use : v.getUses())
          if (!isInside(use.getOwner(), region))
            return use.getOwner();
        return nullptr;
      };
      Operation *user = nullptr;
      for (BlockArgument arg : block.getArguments())
        if (!user)
          user = escapes(arg);
      block.walk([&](Operation *op) {
        for (Value v : op->getResults())
          if (!user)
            user = escapes(v);
      });
      if (user)
        return emitError(user->getLoc())
               << "uses a value defined inside the '" << name << "' region of a later "
               << opName;
    }
    return success();
  }

  OpAsmParser &parser;
  StringRef opName;
  SmallVector<Region *, 4> parsed;
  bool succeeded = false;
};
} // namespace

/// `mask {...} score {...} [kv_ranges {...}] [tile_class {...}] [score_grad {...}]`
static ParseResult parseAttentionRegions(OpAsmParser &parser, Region &mask, Region &score,
                                         Region &kvRanges, Region &tileClass,
                                         Region &scoreGrad) {
  RegionListParser regions(parser, "attn.attention");
  if (parser.parseKeyword("mask") || regions.parse(mask, "mask") ||
      parser.parseKeyword("score") || regions.parse(score, "score") ||
      regions.parseOptional(kvRanges, "kv_ranges") ||
      regions.parseOptional(tileClass, "tile_class") ||
      regions.parseOptional(scoreGrad, "score_grad"))
    return failure();
  return regions.finish();
}

static void printAttentionRegions(OpAsmPrinter &printer, Operation *, Region &mask,
                                  Region &score, Region &kvRanges, Region &tileClass,
                                  Region &scoreGrad) {
  printer << "mask ";
  printer.printRegion(mask);
  printer << " score ";
  printer.printRegion(score);
  if (!kvRanges.empty()) {
    printer << " kv_ranges ";
    printer.printRegion(kvRanges);
  }
  if (!tileClass.empty()) {
    printer << " tile_class ";
    printer.printRegion(tileClass);
  }
  if (!scoreGrad.empty()) {
    printer << " score_grad ";
    printer.printRegion(scoreGrad);
  }
}

/// `mask {...} score {...}`
static ParseResult parseScoreTileRegions(OpAsmParser &parser, Region &mask, Region &score) {
  RegionListParser regions(parser, "attn.score_tile");
  if (parser.parseKeyword("mask") || regions.parse(mask, "mask") ||
      parser.parseKeyword("score") || regions.parse(score, "score"))
    return failure();
  return regions.finish();
}

static void printScoreTileRegions(OpAsmPrinter &printer, Operation *, Region &mask,
                                  Region &score) {
  printer << "mask ";
  printer.printRegion(mask);
  printer << " score ";
  printer.printRegion(score);
}

/// `{...}`: one region, but its arguments may still resolve a forward reference above.
static ParseResult parseGridBody(OpAsmParser &parser, Region &body) {
  RegionListParser regions(parser, "attn.grid");
  if (regions.parse(body, "body"))
    return failure();
  return regions.finish();
}

static void printGridBody(OpAsmPrinter &printer, Operation *, Region &body) {
  printer.printRegion(body);
}

/// `ranges {...} classes {...} do {...}` (attn.for_kv_blocks)
static ParseResult parseKvScheduleRegions(OpAsmParser &parser, Region &ranges,
                                          Region &tileClass, Region &body) {
  RegionListParser regions(parser, "attn.for_kv_blocks");
  if (parser.parseKeyword("ranges") || regions.parse(ranges, "ranges") ||
      parser.parseKeyword("classes") || regions.parse(tileClass, "classes") ||
      parser.parseKeyword("do") || regions.parse(body, "do"))
    return failure();
  return regions.finish();
}

static void printKvScheduleRegions(OpAsmPrinter &printer, Operation *, Region &ranges,
                                   Region &tileClass, Region &body) {
  printer << "ranges ";
  printer.printRegion(ranges);
  printer << " classes ";
  printer.printRegion(tileClass);
  printer << " do ";
  printer.printRegion(body);
}

#define GET_OP_CLASSES
#include "dialect/AttnOps.cpp.inc"
