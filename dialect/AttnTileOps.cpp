//===- AttnTileOps.cpp - L2 ops, and region and RoPE helpers ------------===//
#include "dialect/AttnOps.h"
#include "dialect/AttnSemantics.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"

using namespace mlir;
using namespace mlir::attn;

void ForKvBlocksOp::getAsmBlockArgumentNames(Region &region, OpAsmSetValueNameFn setNameFn) {
  static const char *kRangeNames[] = {"b", "h", "q_lo", "q_hi", "q_offset", "kv_offset",
                                      "seq_q", "seq_kv"};
  static const char *kClassNames[] = {"b",     "h",         "q_lo",     "q_hi",
                                      "kv_lo", "kv_hi",     "q_offset", "kv_offset",
                                      "seq_q", "seq_kv"};
  static const char *kBodyNames[] = {"kb", "cls"};
  if (region.empty())
    return;
  ArrayRef<const char *> names = &region == &getRanges()      ? ArrayRef(kRangeNames)
                                 : &region == &getTileClass() ? ArrayRef(kClassNames)
                                                              : ArrayRef(kBodyNames);
  for (auto [i, arg] : llvm::enumerate(region.front().getArguments()))
    if (i < names.size())
      setNameFn(arg, names[i]);
}

LogicalResult ForKvBlocksOp::verifyRegions() {
  MLIRContext *ctx = getContext();
  Type i64 = IntegerType::get(ctx, 64), i32 = IntegerType::get(ctx, 32);
  auto allI64 = [&](Block &block) {
    return llvm::all_of(block.getArgumentTypes(), [&](Type t) { return t == i64; });
  };
  if (getHeads().empty())
    return emitOpError("needs at least one head");
  if (static_cast<int64_t>(getBlockN()) <= 0)
    return emitOpError("block_n must be positive");
  if (bool(getSplit()) != bool(getNumSplits()))
    return emitOpError("split needs both the split index and the number of splits");
  if (getList()) {
    auto list = cast<MemRefType>(getList().getType());
    if (list.getRank() != 4 || !list.getElementType().isInteger(32))
      return emitOpError("list must be an i32 memref [B, H, R, K], got ") << list;
    if (!getListRows() || static_cast<int64_t>(*getListRows()) <= 0)
      return emitOpError("a list needs list_rows, the query rows per list row");
    if (getHeads().size() != 1)
      return emitOpError("a block list is per head: exactly one head with a list");
  }
  Block &ranges = getRanges().front();
  auto yield = dyn_cast<YieldOp>(ranges.getTerminator());
  if (ranges.getNumArguments() != 8 || !allI64(ranges))
    return emitOpError("region 'ranges' must take 8 i64 arguments");
  if (!yield || yield.getValues().size() % 2 ||
      !llvm::all_of(yield.getValues().getTypes(), [&](Type t) { return t == i64; }))
    return emitOpError("region 'ranges' must yield pairs of i64 (lo, hi)");
  Block &cls = getTileClass().front();
  auto clsYield = dyn_cast<YieldOp>(cls.getTerminator());
  if (cls.getNumArguments() != 10 || !allI64(cls))
    return emitOpError("region 'classes' must take 10 i64 arguments");
  if (!clsYield || clsYield.getValues().size() != 1 || clsYield.getValues()[0].getType() != i32)
    return emitOpError("region 'classes' must yield one i32 tile class");
  Block &body = getBody().front();
  if (body.getNumArguments() != 2 || body.getArgument(0).getType() != i64 ||
      body.getArgument(1).getType() != i32)
    return emitOpError("body must take (kb: i64, cls: i32)");
  auto bodyYield = dyn_cast<YieldOp>(body.getTerminator());
  if (!bodyYield || !bodyYield.getValues().empty())
    return emitOpError("body must end in attn.yield with no values");
  return success();
}

SmallVector<Value> mlir::attn::inlineRegion(OpBuilder &b, Region &region, ValueRange args,
                                            IRMapping mapping) {
  Block &block = region.front();
  assert(block.getNumArguments() == args.size() && "region arity mismatch");
  cloneConstantsUsedIn(region, b, mapping);
  for (auto [arg, v] : llvm::zip(block.getArguments(), args))
    mapping.map(arg, v);
  for (Operation &inner : block.without_terminator())
    b.clone(inner, mapping);
  SmallVector<Value> results;
  for (Value v : cast<YieldOp>(block.getTerminator()).getValues())
    results.push_back(mapping.lookupOrDefault(v));
  return results;
}

SmallVector<double> RopeAttr::getFrequencies() const {
  RopeFrequencyScaling scaling = RopeFrequencyScaling::none;
  switch (getScaling()) {
  case RopeScaling::none:
    break;
  case RopeScaling::linear:
    scaling = RopeFrequencyScaling::linear;
    break;
  case RopeScaling::ntk:
    scaling = RopeFrequencyScaling::ntk;
    break;
  case RopeScaling::yarn:
    scaling = RopeFrequencyScaling::yarn;
    break;
  }
  SmallVector<double> freqs;
  for (int64_t m = 0; m < getRotaryDim() / 2; ++m)
    freqs.push_back(ropeFrequency(m, getRotaryDim(), getTheta().getValueAsDouble(), scaling,
                                  getFactor().getValueAsDouble(), getOriginalMaxPosition(),
                                  getBetaFast().getValueAsDouble(),
                                  getBetaSlow().getValueAsDouble()));
  return freqs;
}
