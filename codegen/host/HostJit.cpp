//===- HostJit.cpp - compile a spec for the host and run it ---------------===//
#include "codegen/host/HostJit.h"
#include "codegen/host/HostProgram.h"

#include "codegen/host/HostPasses.h"
#include "dialect/AttnOps.h"
#include "passes/Passes.h"

#include "mlir/Conversion/ArithToLLVM/ArithToLLVM.h"
#include "mlir/Conversion/ControlFlowToLLVM/ControlFlowToLLVM.h"
#include "mlir/Conversion/FuncToLLVM/ConvertFuncToLLVMPass.h"
#include "mlir/Conversion/IndexToLLVM/IndexToLLVM.h"
#include "mlir/Conversion/MathToLLVM/MathToLLVM.h"
#include "mlir/Conversion/MathToLibm/MathToLibm.h"
#include "mlir/Conversion/MemRefToLLVM/MemRefToLLVM.h"
#include "mlir/Conversion/ReconcileUnrealizedCasts/ReconcileUnrealizedCasts.h"
#include "mlir/Conversion/SCFToControlFlow/SCFToControlFlow.h"
#include "mlir/Dialect/Arith/Transforms/Passes.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Math/Transforms/Passes.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <limits>
#include <mutex>

using namespace mlir;

namespace attune {

void registerHostPasses() { mlir::attn::registerAttnHostPasses(); }

struct HostKernel::Impl {
  OwningOpRef<ModuleOp> l1;                   // for binding arguments
  std::unique_ptr<ExecutionEngine> engine;
  rt::HostEntryFn entry = nullptr;
  rt::HostItemsFn items = nullptr;
  std::vector<int64_t> serialGrids;
  bool lse = false;
  bool backward = false;
  bool sequences = false;
  int threads = 0;
};

/// Gives a softmax `op` an lse result when it has none (a forward whose lse the
/// backward reads; sigmoid and relu have none).
static void addLseResult(attn::AttentionOp op) {
  if (op.getLse() || op.getNormalizer() != attn::Normalizer::softmax)
    return;
  auto oType = cast<RankedTensorType>(op.getO().getType());
  auto lseType = RankedTensorType::get(oType.getShape().take_front(3),
                                       Float32Type::get(op.getContext()));
  OpBuilder b(op);
  OperationState state(op.getLoc(), op->getName());
  state.addOperands(op->getOperands());
  state.addAttributes(op->getAttrs());
  state.addTypes({oType, lseType});
  for (Region &region : op->getRegions())
    state.addRegion()->takeBody(region);
  Operation *created = b.create(state);
  op.getO().replaceAllUsesWith(created->getResult(0));
  op.erase();
}

HostKernel::HostKernel(std::unique_ptr<Impl> i) : impl(std::move(i)) {}
HostKernel::~HostKernel() = default;

void initHostTarget() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
  });
}

/// `<name>(ptr args)` calling `callee` (a C wrapper of memref descriptors and
/// scalars): args[i] is the descriptor pointer of a memref argument, or the address
/// of a scalar one (rt::HostEntryFn / rt::HostItemsFn).
static LogicalResult addPackedEntry(ModuleOp module, StringRef calleeName, StringRef name) {
  auto callee = module.lookupSymbol<LLVM::LLVMFuncOp>(calleeName);
  if (!callee)
    return module.emitError("the host lowering produced no ") << calleeName;
  MLIRContext *ctx = module.getContext();
  OpBuilder b(ctx);
  b.setInsertionPointToEnd(module.getBody());
  Location loc = callee.getLoc();
  auto ptr = LLVM::LLVMPointerType::get(ctx);
  LLVM::LLVMFunctionType calleeType = callee.getFunctionType();
  auto type = LLVM::LLVMFunctionType::get(calleeType.getReturnType(), {ptr});
  auto fn = LLVM::LLVMFuncOp::create(b, loc, name, type);
  Block *block = fn.addEntryBlock(b);
  b.setInsertionPointToStart(block);
  SmallVector<Value> args;
  for (auto [i, t] : llvm::enumerate(calleeType.getParams())) {
    Value slot = LLVM::GEPOp::create(b, loc, ptr, ptr, block->getArgument(0),
                                     ArrayRef<LLVM::GEPArg>{int32_t(i)});
    Value p = LLVM::LoadOp::create(b, loc, ptr, slot);
    args.push_back(isa<LLVM::LLVMPointerType>(t) ? p : LLVM::LoadOp::create(b, loc, t, p).getResult());
  }
  auto call = LLVM::CallOp::create(b, loc, callee, args);
  if (isa<LLVM::LLVMVoidType>(calleeType.getReturnType()))
    LLVM::ReturnOp::create(b, loc, ValueRange{});
  else
    LLVM::ReturnOp::create(b, loc, call.getResult());
  return success();
}

FailureOr<HostProgram> lowerHostProgram(ModuleOp l1, const HostCompileOptions &options,
                                        StringRef entryName) {
  MLIRContext *ctx = l1.getContext();
  ctx->loadDialect<LLVM::LLVMDialect, memref::MemRefDialect>();
  HostProgram program;
  program.module = cast<ModuleOp>(l1->clone());
  attn::AttentionOp attention;
  program.module->walk([&](attn::AttentionOp op) { attention = op; });
  if (!attention)
    return l1.emitError("the module holds no attn.attention");
  if (options.forceLse && !options.backward) {
    addLseResult(attention);
    program.module->walk([&](attn::AttentionOp op) { attention = op; });
  }
  // The forward writes lse when the op has it; the backward reads the forward's lse
  // whenever the normaliser is softmax.
  program.lse = options.backward ? attention.getNormalizer() == attn::Normalizer::softmax
                                 : static_cast<bool>(attention.getLse());
  ModuleOp module = *program.module;
  PassManager pm(ctx);
  attn::TilePipelineOptions tile;
  tile.blockM = options.blockM;
  tile.blockN = options.blockN;
  // Host forward kernels always take the per-sequence arguments (lengths may be
  // given at run time whatever the storage).
  tile.sequenceLengths = !options.backward;
  if (options.backward)
    attn::buildBackwardTilePipeline(pm, tile);
  else
    attn::buildTilePipeline(pm, tile);
  if (failed(pm.run(module)))
    return failure(); // the passes said why, at the ops
  if (options.tiledIr) {
    llvm::raw_string_ostream os(*options.tiledIr);
    module.print(os);
  }
  func::FuncOp kernel;
  module.walk([&](func::FuncOp f) {
    if (f->hasAttr("attn.kernel"))
      kernel = f;
  });
  if (!kernel)
    return l1.emitError("the tile pipeline produced no attn.kernel function");
  program.sequences = kernel->hasAttr("attn.sequences");
  // One name per kind of kernel: a library holds the forward and the backward.
  std::string kernelName = (entryName + "_kernel").str();
  if (failed(SymbolTable::replaceAllSymbolUses(kernel, StringAttr::get(ctx, kernelName), module)))
    return kernel.emitError("cannot rename the kernel");
  kernel.setName(kernelName);
  kernel->setAttr(LLVM::LLVMDialect::getEmitCWrapperAttrName(), UnitAttr::get(ctx));

  PassManager loops(ctx);
  loops.addPass(attn::createAttnLowerKvSchedule());
  attn::AttnLowerTilesToLoopsOptions loopOptions;
  loopOptions.gridRange = true;
  loops.addPass(attn::createAttnLowerTilesToLoops(loopOptions));
  if (failed(loops.run(module)))
    return failure();
  program.gridCount = 0;
  if (auto n = kernel->getAttrOfType<IntegerAttr>("attn.grid_count"))
    program.gridCount = n.getInt();
  if (auto serial = kernel->getAttrOfType<DenseI64ArrayAttr>("attn.serial_grids"))
    program.serialGrids.assign(serial.asArrayRef().begin(), serial.asArrayRef().end());

  // exp, log, tanh, ... as polynomial approximations in arith ops (a few ulp of f32)
  // rather than calls into libm: inline, so that LLVM vectorises the softmax and score
  // loops around them.
  {
    // exp2 (base-2 scores) has no approximation of its own: exp(x ln 2), whose
    // rounding of x ln 2 costs |x| ulp relative, negligible where exp2(x) matters.
    SmallVector<math::Exp2Op> exp2s;
    module.walk([&](math::Exp2Op op) {
      if (op.getType().isF32())
        exp2s.push_back(op);
    });
    for (math::Exp2Op op : exp2s) {
      OpBuilder b(op);
      Value ln2 = arith::ConstantOp::create(b, op.getLoc(), b.getF32FloatAttr(0.693147180559945309f));
      Value x = arith::MulFOp::create(b, op.getLoc(), op.getOperand(), ln2);
      op.replaceAllUsesWith(math::ExpOp::create(b, op.getLoc(), x).getResult());
      op.erase();
    }
    RewritePatternSet patterns(ctx);
    populateMathPolynomialApproximationPatterns(patterns);
    if (failed(applyPatternsGreedily(module, std::move(patterns))))
      return l1.emitError("approximating the host kernel's math failed (an internal error)");
  }
  PassManager lower(ctx);
  lower.addPass(createCanonicalizerPass());
  lower.addPass(createLoopInvariantCodeMotionPass());
  lower.addPass(createCSEPass());
  lower.addPass(arith::createArithExpandOpsPass());
  lower.addPass(memref::createExpandStridedMetadataPass());
  lower.addPass(createConvertMathToLLVMPass());
  lower.addPass(createConvertMathToLibmPass());
  lower.addPass(createSCFToControlFlowPass());
  // memref before arith/index: memref.dim with a constant index then lowers to a
  // field of the descriptor; after them its index is a cast, not a constant, and the
  // lowering indexes a stack copy of the sizes (an alloca per evaluation: inside a
  // key loop, a stack overflow at long sequences).
  lower.addPass(createFinalizeMemRefToLLVMConversionPass());
  lower.addPass(createArithToLLVMConversionPass());
  lower.addPass(createConvertIndexToLLVMPass());
  lower.addPass(createConvertFuncToLLVMPass());
  lower.addPass(createConvertControlFlowToLLVMPass());
  lower.addPass(createReconcileUnrealizedCastsPass());
  if (failed(lower.run(module)))
    return l1.emitError("lowering the tiled program to LLVM failed (an internal error)");
  program.entry = entryName.str();
  program.items = (entryName + "_items").str();
  if (failed(addPackedEntry(module, "_mlir_ciface_" + kernelName, program.entry)) ||
      failed(addPackedEntry(module, "_mlir_ciface_" + kernelName + "_grid_items", program.items)))
    return failure();
  // Only the packed entries are the library's interface: the rest may be inlined,
  // and two programs' helpers never clash when they are linked into one library.
  for (auto f : module.getOps<LLVM::LLVMFuncOp>())
    if (!f.isExternal() && f.getName() != program.entry && f.getName() != program.items)
      f.setLinkage(LLVM::Linkage::Internal);
  return program;
}

FailureOr<std::unique_ptr<HostKernel>> HostKernel::compile(ModuleOp l1,
                                                           const HostCompileOptions &options,
                                                           HostCompileStats *stats) {
  MLIRContext *ctx = l1.getContext();
  ctx->loadDialect<LLVM::LLVMDialect, memref::MemRefDialect>();
  auto impl = std::make_unique<Impl>();
  impl->l1 = cast<ModuleOp>(l1->clone());
  if (options.forceLse && !options.backward) {
    // Arguments bind to the op as compiled (with its lse).
    attn::AttentionOp op;
    impl->l1->walk([&](attn::AttentionOp a) { op = a; });
    if (op)
      addLseResult(op);
  }
  auto t0 = std::chrono::steady_clock::now();
  FailureOr<HostProgram> program = lowerHostProgram(
      *impl->l1, options, options.backward ? "attn_host_backward" : "attn_host_forward");
  if (failed(program))
    return failure();
  impl->lse = program->lse;
  impl->backward = options.backward;
  impl->serialGrids = program->serialGrids;
  impl->sequences = program->sequences;
  impl->threads = options.threads;
  auto t1 = std::chrono::steady_clock::now();

  initHostTarget();
  registerBuiltinDialectTranslation(*ctx);
  registerLLVMDialectTranslation(*ctx);
  ExecutionEngineOptions engineOptions;
  // `transformer` is a function_ref: the function it names must outlive create()
  // (ASan: stack-use-after-scope when it was a temporary).
  std::function<llvm::Error(llvm::Module *)> transformer =
      makeOptimizingTransformer(options.optLevel, 0, nullptr);
  engineOptions.transformer = transformer;
  auto engine = ExecutionEngine::create(*program->module, engineOptions);
  if (!engine)
    return l1.emitError("JIT compilation failed: ") << llvm::toString(engine.takeError());
  impl->engine = std::move(*engine);
  // Machine code is generated at the first lookup: do it now, so that compile time
  // is measured here and a failure is reported here.
  auto entry = impl->engine->lookup(program->entry);
  if (!entry)
    return l1.emitError("JIT compilation failed: ") << llvm::toString(entry.takeError());
  auto items = impl->engine->lookup(program->items);
  if (!items)
    return l1.emitError("JIT compilation failed: ") << llvm::toString(items.takeError());
  impl->entry = reinterpret_cast<rt::HostEntryFn>(*entry);
  impl->items = reinterpret_cast<rt::HostItemsFn>(*items);
  auto t2 = std::chrono::steady_clock::now();
  if (stats) {
    stats->pipelineSeconds = std::chrono::duration<double>(t1 - t0).count();
    stats->jitSeconds = std::chrono::duration<double>(t2 - t1).count();
  }
  return std::unique_ptr<HostKernel>(new HostKernel(std::move(impl)));
}

void runHostProgram(rt::HostEntryFn entry, rt::HostItemsFn items,
                    const std::vector<int64_t> &serialGrids, std::vector<void *> args,
                    int threads) {
  // items(args, upto): the items of the first `upto` grids.
  auto countUpTo = [&](int64_t upto) {
    std::vector<void *> a = args;
    a.push_back(&upto);
    return items(a.data());
  };
  int64_t total = countUpTo(std::numeric_limits<int64_t>::max());
  std::vector<std::pair<int64_t, int64_t>> serial;
  for (int64_t g : serialGrids)
    serial.push_back({countUpTo(g), countUpTo(g + 1)});
  rt::runHostItems(entry, args, total, rt::hostThreads(threads), serial);
}

namespace {

/// Host storage for one tensor in the kernel's element type.
struct Buffer {
  std::vector<float> f;
  std::vector<int32_t> i;
  std::vector<int64_t> shape;
  explicit Buffer(const HostTensor &t) : shape(t.shape) {
    if (t.isInt)
      i.assign(t.data.begin(), t.data.end());
    else
      f.assign(t.data.begin(), t.data.end());
  }
  Buffer(std::vector<int64_t> s) : shape(std::move(s)) {
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    f.assign(static_cast<size_t>(n), 0.0f);
  }
  void *data() { return f.empty() ? static_cast<void *>(i.data()) : static_cast<void *>(f.data()); }
};

/// Calls the kernel on `buffers` (its memref arguments, in order) and the call's
/// offsets; a per-sequence kernel also gets `sequence` (its sequence buffers) and
/// the call's q_offset rule and longest query.
LogicalResult invoke(HostKernel::Impl &impl, std::vector<Buffer> &buffers,
                     const BoundCall &call, std::vector<Buffer> *sequence = nullptr) {
  std::vector<rt::MemrefDescriptor> descriptors, seqDescriptors;
  descriptors.reserve(buffers.size());
  for (Buffer &b : buffers)
    descriptors.emplace_back(b.data(), b.shape);
  int64_t qOffset = call.qOffset, kvOffset = call.kvOffset;
  int64_t fromLengths = call.qOffsetFromLengths, maxSeqQ = call.maxSeqQ;
  std::vector<void *> args;
  for (rt::MemrefDescriptor &d : descriptors)
    args.push_back(d.get());
  args.push_back(&qOffset);
  args.push_back(&kvOffset);
  if (sequence) {
    seqDescriptors.reserve(sequence->size());
    for (Buffer &b : *sequence)
      seqDescriptors.emplace_back(b.data(), b.shape);
    for (rt::MemrefDescriptor &d : seqDescriptors)
      args.push_back(d.get());
    args.push_back(&fromLengths);
    args.push_back(&maxSeqQ);
  }
  runHostProgram(impl.entry, impl.items, impl.serialGrids, args, impl.threads);
  return success();
}

/// The sequence buffers of a per-sequence kernel for `call`: q's (cu_seqlens_q or
/// q_lens), the page table when paged, k/v's (cu_seqlens_kv or kv_lens); an absent
/// length is an empty buffer.
std::vector<Buffer> sequenceBuffers(const AttentionArgs &args, const BoundCall &call) {
  auto orEmpty = [](const std::optional<HostTensor> &t) {
    if (t)
      return Buffer(*t);
    HostTensor empty;
    empty.shape = {0};
    empty.isInt = true;
    return Buffer(empty);
  };
  std::vector<Buffer> out;
  out.push_back(orEmpty(call.qStorage == "ragged" ? args.seq.cuSeqlensQ : args.seq.qLens));
  if (call.kvStorage == "paged")
    out.push_back(orEmpty(args.seq.pageTable));
  out.push_back(orEmpty(call.kvStorage == "ragged" ? args.seq.cuSeqlensKv : args.seq.kvLens));
  return out;
}

HostTensor toHost(const Buffer &b) {
  HostTensor t;
  t.shape = b.shape;
  t.data.assign(b.f.begin(), b.f.end());
  return t;
}

} // namespace

FailureOr<AttentionResult> HostKernel::run(const AttentionArgs &args) {
  attn::AttentionOp op;
  impl->l1->walk([&](attn::AttentionOp a) { op = a; });
  BoundCall call;
  std::string error;
  // Errors about the caller's arrays, not the IR: reported without a location.
  if (!bindArguments(op, args, call, error))
    return emitError(UnknownLoc::get(op.getContext()), error);
  if (call.perSequence && !impl->sequences)
    return emitError(UnknownLoc::get(op.getContext()),
                     "this host kernel takes no per-sequence arguments (compiled without "
                     "sequence lengths)");
  std::vector<Buffer> buffers;
  buffers.reserve(5 + call.inputs.size());
  buffers.emplace_back(args.q);
  buffers.emplace_back(args.k);
  buffers.emplace_back(args.v);
  for (const HostTensor *t : call.inputs)
    buffers.emplace_back(*t);
  buffers.emplace_back(call.oShape);
  size_t oIndex = buffers.size() - 1;
  if (impl->lse) {
    // Rows no sequence covers (past a padded sequence's q_len) keep lse = -inf.
    buffers.emplace_back(call.lseShape);
    std::fill(buffers.back().f.begin(), buffers.back().f.end(),
              -std::numeric_limits<float>::infinity());
  }
  std::vector<Buffer> sequence;
  if (impl->sequences)
    sequence = sequenceBuffers(args, call);
  if (failed(invoke(*impl, buffers, call, impl->sequences ? &sequence : nullptr)))
    return failure();
  AttentionResult result;
  result.o = toHost(buffers[oIndex]);
  result.lse = impl->lse ? toHost(buffers[oIndex + 1]) : HostTensor();
  return result;
}

FailureOr<AttentionGradients> HostKernel::runBackward(const AttentionArgs &args,
                                                      const AttentionResult &forward,
                                                      const HostTensor &dO,
                                                      const HostTensor *dlse) {
  attn::AttentionOp op;
  impl->l1->walk([&](attn::AttentionOp a) { op = a; });
  Location unknown = UnknownLoc::get(op.getContext());
  if (!impl->backward)
    return emitError(unknown, "this host kernel is a forward kernel");
  BoundCall call;
  std::string error;
  if (!bindArguments(op, args, call, error))
    return emitError(unknown, error);
  std::vector<int64_t> oShape{call.batch, call.headsQ, call.seqQ, call.headDimV};
  std::vector<int64_t> lseShape{call.batch, call.headsQ, call.seqQ};
  bool softmax = op.getNormalizer() == attn::Normalizer::softmax;
  auto shapeOf = [](const std::vector<int64_t> &sh) {
    HostTensor t;
    t.shape = sh;
    return t.shapeString();
  };
  if (dO.isInt || dO.shape != oShape)
    return emitError(unknown, "dO: expected a float tensor of o's shape ")
           << shapeOf(oShape) << ", got " << dO.shapeString();
  if (dlse && (!softmax || dlse->isInt || dlse->shape != lseShape))
    return emitError(unknown, softmax ? "dlse: expected a float tensor of lse's shape "
                                      : "dlse: the spec's normaliser has no lse (only "
                                        "softmax does); shape ")
           << shapeOf(lseShape) << ", got " << dlse->shapeString();
  if (forward.o.shape != oShape || (softmax && forward.lse.shape != lseShape))
    return emitError(unknown, "the forward's o and lse do not fit the arguments");
  std::vector<Buffer> buffers;
  buffers.reserve(12 + 2 * call.inputs.size());
  buffers.emplace_back(args.q);
  buffers.emplace_back(args.k);
  buffers.emplace_back(args.v);
  std::vector<size_t> floatInputs;
  for (size_t n = 0; n < call.inputs.size(); ++n) {
    buffers.emplace_back(*call.inputs[n]);
    if (!call.inputs[n]->isInt)
      floatInputs.push_back(n);
  }
  buffers.emplace_back(forward.o);
  if (softmax)
    buffers.emplace_back(forward.lse);
  else
    buffers.emplace_back(lseShape);
  buffers.emplace_back(dO);
  if (dlse)
    buffers.emplace_back(*dlse);
  else
    buffers.emplace_back(lseShape);
  size_t dqIndex = buffers.size();
  buffers.emplace_back(args.q.shape);
  buffers.emplace_back(args.k.shape);
  buffers.emplace_back(args.v.shape);
  for (size_t n : floatInputs)
    buffers.emplace_back(call.inputs[n]->shape);
  if (call.perSequence)
    return emitError(unknown, "the backward over ragged or paged storage or per-sequence "
                              "lengths is not built yet (padded batches only)");
  if (failed(invoke(*impl, buffers, call)))
    return failure();
  AttentionGradients grads;
  grads.dq = toHost(buffers[dqIndex]);
  grads.dk = toHost(buffers[dqIndex + 1]);
  grads.dv = toHost(buffers[dqIndex + 2]);
  auto names = op.getInputNames();
  for (auto [i, n] : llvm::enumerate(floatInputs))
    grads.dinputs[cast<StringAttr>(names[n]).str()] = toHost(buffers[dqIndex + 3 + i]);
  return grads;
}

} // namespace attune
