//===- KernelPlan.cpp - what the NVIDIA lowering reads off the L2 program -===//
#include "codegen/nvidia/KernelPlan.h"

#include "mlir/Dialect/MemRef/IR/MemRef.h"
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

  // Arguments: q, k, v, inputs..., o, [lse], q_offset, kv_offset, and for a
  // per-sequence kernel (q seq buffer, [page_table], kv seq buffer,
  // q_offset_from_lengths, max_seq_q).
  auto names = kernel->getAttrOfType<ArrayAttr>("attn.input_names");
  if (!names)
    return kernel.emitError("an attn kernel function needs attn.input_names");
  p.sequences = kernel->hasAttr("attn.sequences");
  if (p.sequences) {
    auto qs = kernel->getAttrOfType<StorageAttr>("attn.q_storage");
    auto kvs = kernel->getAttrOfType<StorageAttr>("attn.kv_storage");
    if (!qs || !kvs)
      return kernel.emitError("a per-sequence kernel needs attn.q_storage and attn.kv_storage");
    p.qStorage = qs.getValue();
    p.kvStorage = kvs.getValue();
  }
  unsigned nArgs = kernel.getNumArguments();
  unsigned nInputs = names.size();
  unsigned extra = p.sequences ? 4 + (p.kvStorage == Storage::paged ? 1 : 0) : 0;
  if (nArgs != 6 + nInputs + extra && nArgs != 7 + nInputs + extra)
    return kernel.emitError("expected (q, k, v, ")
           << nInputs << " inputs, o, [lse], q_offset, kv_offset"
           << (p.sequences ? ", the sequence arguments" : "") << "), got " << nArgs
           << " arguments";
  p.lse = nArgs == 7 + nInputs + extra;
  Value q = kernel.getArgument(0), k = kernel.getArgument(1), v = kernel.getArgument(2);
  auto dimsDecl = kernel->getAttrOfType<ArrayAttr>("attn.input_dims");
  for (unsigned i = 0; i < nInputs; ++i) {
    Value in = kernel.getArgument(3 + i);
    p.inputs.push_back(in);
    p.inputViews.push_back(in);
    p.inputNames.push_back(cast<StringAttr>(names[i]).getValue().str());
    SmallVector<KernelPlan::SeqDim> seqDims(cast<MemRefType>(in.getType()).getRank(),
                                            KernelPlan::SeqDim::none);
    if (p.sequences && dimsDecl && i < dimsDecl.size())
      if (auto decl = dyn_cast<ArrayAttr>(dimsDecl[i]))
        for (auto [r, sym] : llvm::enumerate(decl))
          if (auto name = dyn_cast<StringAttr>(sym); name && r < seqDims.size())
            seqDims[r] = name.getValue() == "Sq"    ? KernelPlan::SeqDim::q
                         : name.getValue() == "Skv" ? KernelPlan::SeqDim::kv
                                                    : KernelPlan::SeqDim::none;
    p.inputSeqDims.push_back(seqDims);
  }
  // [B, H, S, D], ragged [total, H, D], paged [pages, page_size, H, D]: the heads are
  // the third dim from the end, the head dim the last.
  auto rank = [](Value t) { return cast<MemRefType>(t.getType()).getRank(); };
  auto headDimOf = [&](Value t) { return dim(t, rank(t) - 1); };
  p.headsQ = dim(q, 1);
  p.headsKv = dim(k, p.kvStorage == Storage::paged ? 2 : 1);
  p.headDim = headDimOf(q);
  p.headDimV = headDimOf(v);
  p.elementType = cast<MemRefType>(q.getType()).getElementType();
  if (ShapedType::isDynamic(p.headsQ) || ShapedType::isDynamic(p.headsKv) ||
      ShapedType::isDynamic(p.headDim) || ShapedType::isDynamic(p.headDimV))
    return kernel.emitError("head counts and head dims must be static");

  // attn-tile views ragged and paged buffers (memref.reinterpret_cast of their
  // base): a load's tensor is the argument under the views.
  auto root = [](Value t) {
    while (Operation *def = t.getDefiningOp()) {
      if (auto cast = dyn_cast<memref::ReinterpretCastOp>(def))
        t = cast.getSource();
      else if (auto meta = dyn_cast<memref::ExtractStridedMetadataOp>(def))
        t = meta.getSource();
      else
        break;
    }
    return t;
  };
  if (p.sequences)
    p.grid.walk([&](memref::ReinterpretCastOp view) {
      for (unsigned i = 0; i < nInputs; ++i)
        if (root(view.getResult()) == p.inputs[i])
          p.inputViews[i] = view.getResult();
    });

  // The tile ops.
  WalkResult walk = p.grid.walk([&](Operation *inner) -> WalkResult {
    if (auto load = dyn_cast<LoadTileOp>(inner)) {
      Value source = root(load.getSource());
      if (source == q) {
        p.qLoad = load;
        p.qRope = load.getRopeAttr();
      } else if (source == k) {
        p.kLoad = load;
        p.kRope = load.getRopeAttr();
      } else if (source == v) {
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
