//===- LowerKvSchedule.cpp - attn.for_kv_blocks -> scf.while --------------===//
#include "passes/KvSchedule.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNLOWERKVSCHEDULE
#include "passes/Passes.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;

namespace {
struct LowerKvSchedulePass
    : public mlir::attn::impl::AttnLowerKvScheduleBase<LowerKvSchedulePass> {
  void runOnOperation() override {
    SmallVector<ForKvBlocksOp> ops;
    // Post-order: a schedule nested in another's body (none today) goes first.
    getOperation().walk([&](ForKvBlocksOp op) { ops.push_back(op); });
    for (ForKvBlocksOp op : ops)
      KvSchedule::lowerToLoop(op);
  }
};
} // namespace
