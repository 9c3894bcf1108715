//===- KernelPlan.cpp - what the NVIDIA lowering reads off the L2 program -===//
#include "codegen/nvidia/KernelPlan.h"

#include "mlir/IR/BuiltinTypes.h"

using namespace mlir;
using namespace mlir::attn;

namespace attune {

static int64_t dim(Value v, unsigned d) { return cast<MemRefType>(v.getType()).getDimSize(d); }

SmallVector<func::FuncOp> KernelPlan::kernelsIn(ModuleOp module) {
  SmallVector<func::FuncOp> kernels;
  module.walk([&](func::FuncOp f) {
    if (f->hasAttr("attn.kernel"))
      kernels.push_back(f);
  });
  return kernels;
}

FailureOr<KernelPlan> KernelPlan::of(func::FuncOp kernel) {
  KernelPlan p;
  p.kernel = kernel;
  if (!kernel->hasAttr("attn.kernel"))
    return kernel.emitError("not an attn kernel function (run attn-tile first)");
  auto grids = kernel.getOps<GridOp>();
  if (std::distance(grids.begin(), grids.end()) != 1)
    return kernel.emitError("an attn kernel function must hold exactly one attn.grid");
  p.grid = *grids.begin();
  p.blockM = static_cast<int64_t>(p.grid.getBlockM());
  p.blockN = static_cast<int64_t>(p.grid.getBlockN());

  // Arguments: q, k, v, inputs..., o, [lse], q_offset, kv_offset.
  auto names = kernel->getAttrOfType<ArrayAttr>("attn.input_names");
  if (!names)
    return kernel.emitError("an attn kernel function needs attn.input_names");
  unsigned nArgs = kernel.getNumArguments();
  unsigned nInputs = names.size();
  if (nArgs != 6 + nInputs && nArgs != 7 + nInputs)
    return kernel.emitError("expected (q, k, v, ") << nInputs << " inputs, o, [lse], q_offset, "
                                                    "kv_offset), got " << nArgs << " arguments";
  p.lse = nArgs == 7 + nInputs;
  Value q = kernel.getArgument(0), k = kernel.getArgument(1), v = kernel.getArgument(2);
  for (unsigned i = 0; i < nInputs; ++i) {
    p.inputs.push_back(kernel.getArgument(3 + i));
    p.inputNames.push_back(cast<StringAttr>(names[i]).getValue().str());
  }
  p.headsQ = dim(q, 1);
  p.headsKv = dim(k, 1);
  p.headDim = dim(q, 3);
  p.headDimV = dim(v, 3);
  p.elementType = cast<MemRefType>(q.getType()).getElementType();
  if (ShapedType::isDynamic(p.headsQ) || ShapedType::isDynamic(p.headsKv) ||
      ShapedType::isDynamic(p.headDim) || ShapedType::isDynamic(p.headDimV))
    return kernel.emitError("head counts and head dims must be static");

  // The tile ops.
  WalkResult walk = p.grid.walk([&](Operation *inner) -> WalkResult {
    if (auto load = dyn_cast<LoadTileOp>(inner)) {
      if (load.getSource() == q) {
        p.qLoad = load;
        p.qRope = load.getRopeAttr();
      } else if (load.getSource() == k) {
        p.kLoad = load;
        p.kRope = load.getRopeAttr();
      } else if (load.getSource() == v) {
        p.vLoad = load;
      }
    } else if (auto store = dyn_cast<StoreTileOp>(inner)) {
      p.oStore = store;
    } else if (auto qk = dyn_cast<QkTileOp>(inner)) {
      p.scale = qk.getScale().convertToDouble();
    } else if (auto score = dyn_cast<ScoreTileOp>(inner)) {
      if (score.getMasked())
        p.scoreTile = score;
    } else if (auto softmax = dyn_cast<SoftmaxTileOp>(inner)) {
      p.normalizer = Normalizer::softmax;
      p.softmaxBase2 = softmax.getBase2();
    } else if (auto weights = dyn_cast<WeightsTileOp>(inner)) {
      p.normalizer = weights.getNormalizer();
      if (auto beta = weights.getBeta())
        p.sigmoidBeta = beta->convertToDouble();
    } else if (auto schedule = dyn_cast<ForKvBlocksOp>(inner)) {
      if (p.schedule)
        return schedule.emitError("the NVIDIA lowering takes one key loop per kernel");
      p.schedule = schedule;
    }
    return WalkResult::advance();
  });
  if (walk.wasInterrupted())
    return failure();
  if (!p.schedule)
    return p.grid.emitError("the grid has no key loop (attn.for_kv_blocks)");
  if (!p.scoreTile)
    return p.grid.emitError("the key loop has no masked attn.score_tile (PARTIAL tiles)");
  if (static_cast<int64_t>(p.schedule.getBlockN()) != p.blockN)
    return p.schedule.emitError("block_n differs from the grid's (")
           << p.blockN << ")";
  Block &scoreBlock = p.score().front();
  auto yield = cast<YieldOp>(scoreBlock.getTerminator());
  p.identityScore = yield.getValues().size() == 1 && yield.getValues()[0] == scoreBlock.getArgument(0);
  if (!p.qLoad || !p.kLoad || !p.vLoad || !p.oStore)
    return p.grid.emitError("the grid must load q, k and v tiles and store o");

  // The GPU passes' decisions, when they have run.
  p.target = p.grid->getAttrOfType<GpuTargetAttr>("gpu");
  auto place = [](Operation *op) { return op->getAttrOfType<SharedEncodingAttr>("smem"); };
  if (place(p.qLoad) && place(p.kLoad) && place(p.vLoad) && place(p.oStore)) {
    SharedMemoryPlan smem;
    smem.q = SmemBuffer::fromAttr(place(p.qLoad));
    smem.k = SmemBuffer::fromAttr(place(p.kLoad));
    smem.v = SmemBuffer::fromAttr(place(p.vLoad));
    smem.o = SmemBuffer::fromAttr(place(p.oStore));
    if (auto s = place(p.scoreTile))
      smem.s = SmemBuffer::fromAttr(s);
    auto bytes = p.grid->getAttrOfType<IntegerAttr>("smem_bytes");
    if (!bytes)
      return p.grid.emitError("tiles have shared-memory places but the grid has no smem_bytes");
    smem.bytes = bytes.getInt();
    p.smem = smem;
  }
  if (Value list = p.schedule.getList()) {
    auto it = llvm::find(p.inputs, list);
    if (it == p.inputs.end())
      return p.schedule.emitError("the block list must be one of the kernel's inputs");
    p.listInput = unsigned(it - p.inputs.begin());
    p.listRows = static_cast<int64_t>(*p.schedule.getListRows());
  }
  return p;
}

} // namespace attune
