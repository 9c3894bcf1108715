//===- CmdRun.cpp - attnc run ---------------------------------------------===//
#include "tools/attnc/Driver.h"

#include "codegen/Arguments.h"
#include "codegen/Diagnostics.h"
#include "codegen/host/HostJit.h"
#include "codegen/bundle/SimDevice.h"
#include "codegen/reference/Reference.h"
#include "dialect/AttnOps.h"

#include "llvm/Support/raw_ostream.h"
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <tuple>

namespace attune::attnc {

/// [a, b, c, d] -> [a, c, b, d]: between the bshd files and the logical bhsd tensors.
static HostTensor swapAxes12(const HostTensor &t) {
  HostTensor r = t;
  int64_t a = t.shape[0], b = t.shape[1], c = t.shape[2], d = t.shape[3];
  r.shape = {a, c, b, d};
  for (int64_t i = 0; i < a; ++i)
    for (int64_t j = 0; j < b; ++j)
      for (int64_t k = 0; k < c; ++k)
        for (int64_t x = 0; x < d; ++x)
          r.data[size_t(((i * c + k) * b + j) * d + x)] = t.data[size_t(((i * b + j) * c + k) * d + x)];
  return r;
}

static HostTensor readTensor(const std::string &what, const std::string &path) {
  HostTensor t;
  std::string error;
  if (!readNpy(path, t, error))
    throw Failure{what + ": " + error};
  return t;
}

static void writeTensor(const std::string &path, const HostTensor &t) {
  std::string error;
  if (!writeNpy(path, t, error))
    throw Failure{error};
}

std::map<std::string, HostTensor> readInputs(const Options &opts) {
  std::map<std::string, HostTensor> inputs;
  for (const std::string &binding : opts.all("input")) {
    auto eq = binding.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == binding.size())
      throw Failure{"--input needs NAME=FILE.npy, got '" + binding + "'", 2};
    std::string name = binding.substr(0, eq);
    if (inputs.count(name))
      throw Failure{"--input " + name + " given twice", 2};
    inputs[name] = readTensor("--input " + name, binding.substr(eq + 1));
  }
  return inputs;
}

static void runBackend(const Options &opts, const std::string &backend, LoadedSpec &spec,
                       const AttentionArgs &args, int64_t blockM, int64_t blockN, int threads,
                       std::optional<int64_t> splits, AttentionResult &result);

/// The --dinput NAME=FILE.npy bindings: NAME must be a float input the spec declares.
static std::map<std::string, std::string> gradientOutputs(const Options &opts,
                                                          mlir::attn::AttentionOp op) {
  std::map<std::string, std::string> files;
  std::string floats;
  std::map<std::string, bool> declared; // name -> is float
  for (auto [n, attr] : llvm::enumerate(op.getInputNames())) {
    std::string name = mlir::cast<mlir::StringAttr>(attr).str();
    bool isFloat = mlir::isa<mlir::FloatType>(
        mlir::cast<mlir::ShapedType>(op.getInputs()[n].getType()).getElementType());
    declared[name] = isFloat;
    if (isFloat)
      floats += (floats.empty() ? "" : ", ") + name;
  }
  for (const std::string &binding : opts.all("dinput")) {
    auto eq = binding.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == binding.size())
      throw Failure{"--dinput needs NAME=FILE.npy, got '" + binding + "'", 2};
    std::string name = binding.substr(0, eq);
    auto it = declared.find(name);
    if (it == declared.end())
      throw Failure{"--dinput " + name + ": the spec declares no input '" + name +
                        "' (float inputs: " + (floats.empty() ? "none" : floats) + ")",
                    2};
    if (!it->second)
      throw Failure{"--dinput " + name + ": '" + name +
                        "' is an integer input and has no gradient (float inputs: " +
                        (floats.empty() ? "none" : floats) + ")",
                    2};
    if (files.count(name))
      throw Failure{"--dinput " + name + " given twice", 2};
    files[name] = binding.substr(eq + 1);
  }
  return files;
}

/// `attnc run --do`: the gradients of the attention, written to --dq/--dk/--dv and
/// --dinput files.
static void runBackward(const Options &opts, const std::string &backend, LoadedSpec &spec,
                        const AttentionArgs &args, int threads, int64_t blockM,
                        int64_t blockN) {
  mlir::attn::AttentionOp op;
  spec.module->walk([&](mlir::attn::AttentionOp a) { op = a; });
  std::map<std::string, std::string> dinputs = gradientOutputs(opts, op);
  HostTensor dO = readTensor("--do", *opts.get("do"));
  std::optional<HostTensor> dlse;
  if (auto path = opts.get("dlse")) {
    if (!spec.info.lse && spec.fromJson)
      throw Failure{"--dlse given but the spec's outputs do not include \"lse\"", 2};
    dlse = readTensor("--dlse", *path);
  }
  if (backend != "reference" && backend != "cpu")
    throw Failure{"--do (gradients) runs on --backend reference and cpu so far: the " +
                      backend + " back end's backward kernels are not built yet",
                  2};
  DiagnosticCollector diags(spec.module->getContext());
  mlir::FailureOr<AttentionGradients> grads;
  if (backend == "reference") {
    grads = runReferenceBackward(*spec.module, args, dO, dlse ? &*dlse : nullptr, threads);
    if (mlir::failed(grads))
      throw Failure{diags.message("the reference backward failed")};
  } else {
    // The host kernels: the forward (with lse, which the backward reads), then the
    // backward program of attn-to-tiled-backward, with the same tiles.
    HostCompileOptions options;
    options.blockM = blockM;
    options.blockN = blockN;
    options.forceLse = true;
    auto forward = HostKernel::compile(*spec.module, options);
    if (mlir::failed(forward))
      throw Failure{diags.message("compiling for the host failed")};
    mlir::FailureOr<AttentionResult> ran = (*forward)->run(args);
    if (mlir::failed(ran))
      throw Failure{diags.message("the host kernel failed")};
    options.backward = true;
    options.forceLse = false;
    auto backwardKernel = HostKernel::compile(*spec.module, options);
    if (mlir::failed(backwardKernel))
      throw Failure{diags.message("compiling the backward for the host failed")};
    grads = (*backwardKernel)->runBackward(args, *ran, dO, dlse ? &*dlse : nullptr);
    if (mlir::failed(grads))
      throw Failure{diags.message("the host backward kernel failed")};
  }
  if (auto path = opts.get("dq"))
    writeTensor(*path, grads->dq);
  if (auto path = opts.get("dk"))
    writeTensor(*path, grads->dk);
  if (auto path = opts.get("dv"))
    writeTensor(*path, grads->dv);
  for (const auto &[name, path] : dinputs)
    writeTensor(path, grads->dinputs.at(name));
}

/// Kernels score in float32: q and k whose dot products leave float32's range (|q| near
/// 3e38, or 1e20 against 1e20) give +-inf or NaN scores, and the online softmax turns
/// them into NaN or an infinite lse. The float64 reference does not overflow. Rather
/// than write such a result without a word, the run fails and says why
/// (docs/decisions.md: "Scores beyond float32"). NaN from a NaN input is the input's.
static void checkFiniteResult(const std::string &backend, const AttentionArgs &args,
                              const AttentionResult &r) {
  if (backend == "reference")
    return;
  double maxQ = 0, maxK = 0;
  auto scan = [](const HostTensor &t, double &max) {
    for (double x : t.data) {
      if (!std::isfinite(x))
        return false;
      max = std::max(max, std::fabs(x));
    }
    return true;
  };
  double unused = 0;
  if (!scan(args.q, maxQ) || !scan(args.k, maxK) || !scan(args.v, unused))
    return;
  for (const auto &[name, t] : args.inputs)
    if (!t.isInt && !scan(t, unused))
      return;
  auto bad = [&](const HostTensor &t, bool isLse) -> int64_t {
    for (size_t i = 0; i < t.data.size(); ++i)
      if (std::isnan(t.data[i]) || (isLse && t.data[i] == HUGE_VAL) ||
          (!isLse && std::isinf(t.data[i])))
        return int64_t(i);
    return -1;
  };
  int64_t at = bad(r.o, false);
  std::string where;
  if (at >= 0 && r.o.shape.size() == 4) {
    int64_t dv = r.o.shape[3], s = r.o.shape[2], h = r.o.shape[1];
    int64_t row = at / dv;
    where = "o[" + std::to_string(row / s / h) + ", " + std::to_string(row / s % h) + ", " +
            std::to_string(row % s) + ", :]";
  } else if ((at = bad(r.lse, true)) >= 0 && r.lse.shape.size() == 3) {
    int64_t s = r.lse.shape[2], h = r.lse.shape[1];
    where = "lse[" + std::to_string(at / s / h) + ", " + std::to_string(at / s % h) + ", " +
            std::to_string(at % s) + "]";
  } else {
    return;
  }
  char sizes[96];
  std::snprintf(sizes, sizeof sizes, "max |q| = %.3g, max |k| = %.3g", maxQ, maxK);
  throw Failure{"the " + backend + " back end's result is not finite at " + where +
                " although every input is: the scores overflow float32 (" + sizes +
                "); scale q or k down, or run --backend reference (float64)"};
}

int cmdRun(int argc, char **argv) {
  Options opts(argc, argv, 2,
               {"backend", "q", "k", "v", "out", "lse", "q-offset", "kv-offset", "threads",
                "block-m", "block-n", "bundle", "arch", "configs", "variant", "num-splits",
                "layout", "pad", "do", "dq", "dk", "dv", "dlse", "cu-seqlens-q",
                "cu-seqlens-kv", "page-table", "kv-lens", "q-lens", "max-seqlen-q", "max-seqlen-kv"},
               {"timing", "pack-gqa", "wgmma", "validate"}, {"input", "dinput"});
  if (opts.positional.size() != 1)
    throw Failure{"run takes one SPEC", 2};
  std::string backend = opts.require("backend");
  if (backend != "reference" && backend != "cpu" && backend != "gpu-sim" && backend != "gpu")
    throw Failure{"unknown backend '" + backend + "' (available: reference, cpu, gpu-sim, gpu)", 2};
  int64_t blockM = opts.getInt("block-m", 1, 1024).value_or(64);
  int64_t blockN = opts.getInt("block-n", 1, 1024).value_or(64);
  std::optional<int64_t> splits = opts.getInt("num-splits", 1, 1024);
  if (splits && backend != "gpu" && backend != "gpu-sim")
    throw Failure{"--num-splits is for the gpu and gpu-sim backends (split-KV)", 2};
  std::string layout = opts.get("layout").value_or("bhsd");
  if (layout != "bhsd" && layout != "bshd")
    throw Failure{"--layout must be bhsd or bshd, got '" + layout + "'", 2};
  std::optional<int64_t> pad = opts.getInt("pad", 0, 1 << 20);
  if (pad && backend != "gpu-sim")
    throw Failure{"--pad is for the gpu-sim backend (the tensors' layout in simulated device "
                  "memory)", 2};
  bool bshd = layout == "bshd";

  AttentionArgs args;
  const int64_t kLimit = int64_t(1) << 40;
  args.qOffset = opts.getInt("q-offset", -kLimit, kLimit);
  args.kvOffset = opts.getInt("kv-offset", -kLimit, kLimit);
  int threads = static_cast<int>(opts.getInt("threads", 1, 256).value_or(0));
  args.q = readTensor("--q", opts.require("q"));
  args.k = readTensor("--k", opts.require("k"));
  args.v = readTensor("--v", opts.require("v"));
  for (auto [flag, slot] : {std::pair{"cu-seqlens-q", &args.seq.cuSeqlensQ},
                            std::pair{"cu-seqlens-kv", &args.seq.cuSeqlensKv},
                            std::pair{"page-table", &args.seq.pageTable},
                            std::pair{"kv-lens", &args.seq.kvLens},
                            std::pair{"q-lens", &args.seq.qLens}})
    if (auto path = opts.get(flag))
      *slot = readTensor(std::string("--") + flag, *path);
  // The host back ends check every sequence argument. On gpu-sim and gpu they stand
  // for device memory: the lengths are read only when the grid needs them (no
  // --max-seqlen-q/--max-seqlen-kv bound), the page table only with --validate (a
  // page outside the cache otherwise masks its keys in the kernel, as on a GPU).
  args.seq.validate = opts.flag("validate");
  if (args.seq.validate && !args.seq.any())
    throw Failure{"--validate checks the per-sequence arguments; this call has none", 2};
  args.seq.onDevice = backend == "gpu-sim" || backend == "gpu";
  args.seq.maxSeqlenQ = opts.getInt("max-seqlen-q", 1, kLimit).value_or(0);
  args.seq.maxSeqlenKv = opts.getInt("max-seqlen-kv", 1, kLimit).value_or(0);
  if ((args.seq.maxSeqlenQ || args.seq.maxSeqlenKv) && !args.seq.any())
    throw Failure{"--max-seqlen-q/--max-seqlen-kv bound per-sequence lengths; this call has "
                  "no sequence arguments", 2};
  bool backward = opts.get("do").has_value();
  if (backward && args.seq.any())
    throw Failure{"--do with per-sequence arguments: the backward over ragged or paged "
                  "storage or per-sequence lengths is not built yet", 2};
  for (const char *flag : {"dq", "dk", "dv", "dlse"})
    if (!backward && opts.get(flag))
      throw Failure{std::string("--") + flag + " needs --do (the gradient of the output)", 2};
  if (!backward && !opts.all("dinput").empty())
    throw Failure{"--dinput needs --do (the gradient of the output)", 2};
  std::optional<std::string> out = opts.get("out");
  bool oBshd = false; // o is written [B, S, H, Dv]
  if (!out && !backward)
    throw Failure{"missing --out", 2};
  args.inputs = readInputs(opts);

  mlir::MLIRContext context;
  // The host back end runs the program in fp32 whatever the GPU storage type.
  LoadedSpec spec = loadSpec(context, opts.positional[0],
                             backend == "cpu" ? std::optional<std::string>("f32") : std::nullopt);
  if (bshd) {
    // The files are [B, S, H, D]; the back ends take the logical [B, H, S, D] tensors.
    // gpu-sim lays them out bshd again in simulated memory, and its kernels read
    // them through their strides; the cpu JIT is handed a contiguous copy here.
    // Ragged [total, H, D] and paged [pages, page_size, H, D] buffers are token-major
    // already: the layout is about padded tensors only.
    mlir::attn::AttentionOp op;
    spec.module->walk([&](mlir::attn::AttentionOp a) { op = a; });
    auto padded = [](std::optional<mlir::attn::Storage> s) {
      return !s || *s == mlir::attn::Storage::padded;
    };
    bool qPadded = !op || padded(op.getQStorage());
    bool kvPadded = !op || padded(op.getKvStorage());
    if (!qPadded && !kvPadded)
      throw Failure{"--layout bshd is for padded q/k/v (this spec's q is ragged and its kv " +
                    std::string(mlir::attn::stringifyStorage(*op.getKvStorage())) +
                    ": those buffers are [tokens, H, D] already)", 2};
    for (auto [name, t, isPadded] :
         {std::tuple{"--q", &args.q, qPadded}, std::tuple{"--k", &args.k, kvPadded},
          std::tuple{"--v", &args.v, kvPadded}}) {
      if (!isPadded)
        continue;
      if (t->shape.size() != 4)
        throw Failure{std::string(name) + ": --layout bshd needs a rank-4 [B, S, H, D] "
                      "tensor, got " + t->shapeString(), 2};
      *t = swapAxes12(*t);
    }
    oBshd = qPadded;
  }
  if (opts.get("lse") && !spec.info.lse)
    throw Failure{"--lse given but the spec's outputs do not include \"lse\"", 2};
  if (backward) {
    runBackward(opts, backend, spec, args, threads, blockM, blockN);
    if (!out && !opts.get("lse"))
      return 0;
  }

  AttentionResult result;
  std::string error;
  // The arguments are checked (sizes bounded) before any back end allocates; what can
  // still run out of memory is reported as such, never as std::bad_alloc or a crash.
  try {
    runBackend(opts, backend, spec, args, blockM, blockN, threads, splits, result);
  } catch (const std::bad_alloc &) {
    throw Failure{"out of memory running the " + backend + " back end on q " +
                  args.q.shapeString() + ", k " + args.k.shapeString() + ", v " +
                  args.v.shapeString()};
  } catch (const std::length_error &) {
    throw Failure{"out of memory running the " + backend + " back end on q " +
                  args.q.shapeString() + ", k " + args.k.shapeString() + ", v " +
                  args.v.shapeString() + " (a buffer would exceed the address space)"};
  }
  checkFiniteResult(backend, args, result);
  if (oBshd && result.o.shape.size() == 4)
    result.o = swapAxes12(result.o);
  if (out)
    writeTensor(*out, result.o);
  if (auto lse = opts.get("lse"))
    writeTensor(*lse, result.lse);
  return 0;
}

static void runBackend(const Options &opts, const std::string &backend, LoadedSpec &spec,
                       const AttentionArgs &args, int64_t blockM, int64_t blockN, int threads,
                       std::optional<int64_t> splits, AttentionResult &result) {
  std::string error;
  if (backend == "reference") {
    DiagnosticCollector diags(spec.module->getContext());
    mlir::FailureOr<AttentionResult> ref = runReference(*spec.module, args, threads);
    if (mlir::failed(ref))
      throw Failure{diags.message("the reference failed")};
    result = std::move(*ref);
  } else if (backend == "gpu") {
    // The same argument checks as the other back ends before the GPU is looked for.
    mlir::attn::AttentionOp op;
    spec.module->walk([&](mlir::attn::AttentionOp a) { op = a; });
    BoundCall bound;
    if (!bindArguments(op, args, bound, error))
      throw Failure{error};
    runOnGpu(opts, opts.positional[0], args, opts.get("lse").has_value(), result);
  } else if (backend == "gpu-sim") {
    GpuConfig config;
    config.blockM = blockM;
    config.blockN = blockN;
    config.packGqa = opts.flag("pack-gqa");
    // The simulator models sm_90a's wgmma as well as mma.sync.
    config.wgmma = opts.flag("wgmma");
    if (config.wgmma)
      config.arch = "sm_90a";
    // Through the runtime's binding, on the simulated device: the manifest records the
    // spec, as a bundle does.
    nlohmann::json json;
    if (spec.fromJson) {
      SpecError err;
      if (!loadSpecFile(opts.positional[0], json, err))
        throw Failure{err.message};
    }
    SimLayout layout;
    layout.bshd = opts.get("layout").value_or("bhsd") == "bshd";
    layout.pad = opts.getInt("pad", 0, 1 << 20).value_or(0);
    layout.validate = args.seq.validate;
    layout.maxSeqlenQ = args.seq.maxSeqlenQ;
    layout.maxSeqlenKv = args.seq.maxSeqlenKv;
    if (!runGpuSimulation(*spec.module, spec.fromJson ? &json : nullptr, spec.info, config, args,
                          result, error, splits.value_or(1), layout))
      throw Failure{error};
  } else {
    HostCompileOptions options;
    options.blockM = blockM;
    options.blockN = blockN;
    HostCompileStats stats;
    DiagnosticCollector diags(spec.module->getContext());
    auto kernel = HostKernel::compile(*spec.module, options, &stats);
    if (mlir::failed(kernel))
      throw Failure{diags.message("compiling for the host failed")};
    if (opts.flag("timing"))
      llvm::errs() << "attnc run: compile " << stats.pipelineSeconds << " s (passes) + "
                   << stats.jitSeconds << " s (LLVM JIT)\n";
    mlir::FailureOr<AttentionResult> ran = (*kernel)->run(args);
    if (mlir::failed(ran))
      throw Failure{diags.message("the host kernel failed")};
    result = std::move(*ran);
  }
}


} // namespace attune::attnc
