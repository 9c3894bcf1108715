//===- HostJit.cpp - compile a spec for the host and run it ---------------===//
#include "codegen/host/HostJit.h"

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
#include <mutex>

using namespace mlir;

namespace attune {

void registerHostPasses() { mlir::attn::registerAttnHostPasses(); }

struct HostKernel::Impl {
  OwningOpRef<ModuleOp> l1;                   // for binding arguments
  std::unique_ptr<ExecutionEngine> engine;
  std::string entry;
  bool lse = false;
  bool backward = false;
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

static void initNativeTarget() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
  });
}

FailureOr<std::unique_ptr<HostKernel>> HostKernel::compile(ModuleOp l1,
                                                           const HostCompileOptions &options,
                                                           HostCompileStats *stats) {
  MLIRContext *ctx = l1.getContext();
  ctx->loadDialect<LLVM::LLVMDialect, memref::MemRefDialect>();
  auto impl = std::make_unique<Impl>();
  impl->l1 = cast<ModuleOp>(l1->clone());
  attn::AttentionOp attention;
  impl->l1->walk([&](attn::AttentionOp op) { attention = op; });
  if (!attention)
    return l1.emitError("the module holds no attn.attention");
  if (options.forceLse && !options.backward) {
    addLseResult(attention);
    impl->l1->walk([&](attn::AttentionOp op) { attention = op; });
  }
  impl->lse = static_cast<bool>(attention.getLse());
  impl->backward = options.backward;
  impl->entry = cast<func::FuncOp>(attention->getParentOp()).getName().str();

  OwningOpRef<ModuleOp> module = cast<ModuleOp>(impl->l1->clone());
  auto t0 = std::chrono::steady_clock::now();
  PassManager pm(ctx);
  attn::TilePipelineOptions tile;
  tile.blockM = options.blockM;
  tile.blockN = options.blockN;
  if (options.backward)
    attn::buildBackwardTilePipeline(pm, tile);
  else
    attn::buildTilePipeline(pm, tile);
  if (failed(pm.run(*module)))
    return failure(); // the passes said why, at the ops
  if (options.tiledIr) {
    llvm::raw_string_ostream os(*options.tiledIr);
    module->print(os);
  }
  module->walk([&](func::FuncOp f) {
    if (f->hasAttr("attn.kernel"))
      f->setAttr(LLVM::LLVMDialect::getEmitCWrapperAttrName(), UnitAttr::get(ctx));
  });
  PassManager lower(ctx);
  lower.addPass(attn::createAttnLowerKvSchedule());
  lower.addPass(attn::createAttnLowerTilesToLoops());
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
  if (failed(lower.run(*module)))
    return l1.emitError("lowering the tiled program to LLVM failed (an internal error)");
  auto t1 = std::chrono::steady_clock::now();

  initNativeTarget();
  registerBuiltinDialectTranslation(*ctx);
  registerLLVMDialectTranslation(*ctx);
  ExecutionEngineOptions engineOptions;
  // `transformer` is a function_ref: the function it names must outlive create()
  // (ASan: stack-use-after-scope when it was a temporary).
  std::function<llvm::Error(llvm::Module *)> transformer =
      makeOptimizingTransformer(options.optLevel, 0, nullptr);
  engineOptions.transformer = transformer;
  auto engine = ExecutionEngine::create(*module, engineOptions);
  if (!engine)
    return l1.emitError("JIT compilation failed: ") << llvm::toString(engine.takeError());
  impl->engine = std::move(*engine);
  // Machine code is generated at the first lookup: do it now, so that compile time
  // is measured here and a failure is reported here.
  if (auto fn = impl->engine->lookupPacked("_mlir_ciface_" + impl->entry); !fn)
    return l1.emitError("JIT compilation failed: ") << llvm::toString(fn.takeError());
  auto t2 = std::chrono::steady_clock::now();
  if (stats) {
    stats->pipelineSeconds = std::chrono::duration<double>(t1 - t0).count();
    stats->jitSeconds = std::chrono::duration<double>(t2 - t1).count();
  }
  return std::unique_ptr<HostKernel>(new HostKernel(std::move(impl)));
}

namespace {

/// A memref descriptor of any rank, laid out as StridedMemRefType<T, N>:
/// {allocated, aligned, offset, sizes[N], strides[N]}.
struct Descriptor {
  std::vector<int64_t> words;
  Descriptor(void *data, const std::vector<int64_t> &shape) {
    size_t n = shape.size();
    words.assign(3 + 2 * n, 0);
    words[0] = reinterpret_cast<intptr_t>(data);
    words[1] = reinterpret_cast<intptr_t>(data);
    int64_t stride = 1;
    for (size_t d = n; d-- > 0;) {
      words[3 + d] = shape[d];
      words[3 + n + d] = stride;
      stride *= shape[d];
    }
  }
  void *get() { return words.data(); }
};

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
/// offsets.
LogicalResult invoke(HostKernel::Impl &impl, attn::AttentionOp op, std::vector<Buffer> &buffers,
                     const BoundCall &call) {
  std::vector<Descriptor> descriptors;
  descriptors.reserve(buffers.size());
  for (Buffer &b : buffers)
    descriptors.emplace_back(b.data(), b.shape);
  std::vector<void *> pointers;
  for (Descriptor &d : descriptors)
    pointers.push_back(d.get());
  int64_t qOffset = call.qOffset, kvOffset = call.kvOffset;
  std::vector<void *> packed;
  for (void *&p : pointers)
    packed.push_back(&p);
  packed.push_back(&qOffset);
  packed.push_back(&kvOffset);
  if (llvm::Error e = impl.engine->invokePacked("_mlir_ciface_" + impl.entry, packed))
    return op.emitError("kernel invocation failed: ") << llvm::toString(std::move(e));
  return success();
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
  std::vector<Buffer> buffers;
  buffers.reserve(5 + call.inputs.size());
  buffers.emplace_back(args.q);
  buffers.emplace_back(args.k);
  buffers.emplace_back(args.v);
  for (const HostTensor *t : call.inputs)
    buffers.emplace_back(*t);
  buffers.emplace_back(std::vector<int64_t>{call.batch, call.headsQ, call.seqQ, call.headDimV});
  size_t oIndex = buffers.size() - 1;
  if (impl->lse)
    buffers.emplace_back(std::vector<int64_t>{call.batch, call.headsQ, call.seqQ});
  if (failed(invoke(*impl, op, buffers, call)))
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
  if (failed(invoke(*impl, op, buffers, call)))
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
