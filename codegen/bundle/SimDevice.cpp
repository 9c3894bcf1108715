//===- SimDevice.cpp - the functional simulator behind the runtime's Device ===//
#include "codegen/bundle/SimDevice.h"

#include "codegen/Diagnostics.h"

#include "runtime/src/HalfFloat.h"
#include "codegen/nvidia/KernelSimulator.h"
#include "codegen/nvidia/NvidiaPipeline.h"
#include "dialect/AttnOps.h"

#include "Args.h"
#include "Json.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <sstream>

using namespace mlir;

namespace attune {

namespace cu = rt::cu;

//===----------------------------------------------------------------------===//
// SimDevice
//===----------------------------------------------------------------------===//

SimDevice::SimDevice(std::map<std::string, OwningOpRef<ModuleOp>> kernels)
    : kernels_(std::move(kernels)) {
  info_.ordinal = 0;
  info_.name = "attune gpu-sim";
  // Compute capability 9.0: both the sm_80 and the sm_90a (wgmma) kernels run, as on
  // an H100, whose limits these are.
  info_.major = 9;
  info_.minor = 0;
  info_.smCount = 132;
  info_.maxThreadsPerBlock = 1024;
  info_.maxSmemOptin = 227 * 1024;
  info_.l2Bytes = 0; // no cache to defeat: the tuner makes no rotating copies
  info_.maxGrid[0] = 2147483647;
  info_.maxGrid[1] = 65535;
  info_.maxGrid[2] = 65535;
  info_.totalMem = size_t(1) << 40;
  if (const char *env = std::getenv("ATTUNE_SIM_INJECT")) {
    std::stringstream ss(env);
    std::string item;
    while (std::getline(ss, item, ',')) {
      size_t eq = item.find('=');
      if (eq != std::string::npos)
        inject_[item.substr(0, eq)] = item.substr(eq + 1);
    }
  }
}

SimDevice::~SimDevice() {
  for (auto &[p, mem] : buffers_)
    std::free(mem);
}

const cu::DeviceInfo &SimDevice::open(const rt::CheckedCall &) { return info_; }

void SimDevice::prepare(const rt::Manifest &m, const std::string &, int index,
                        const cu::DeviceInfo &) {
  const rt::Variant &v = m.variants[size_t(index)];
  if (!kernels_.count(v.name))
    throw cu::CudaError("variant " + v.name + ": the simulator has no kernel IR for it");
}

void SimDevice::launch(const rt::Manifest &m, const rt::Launch &l) {
  const rt::Variant &v = m.variants[size_t(l.variant)];
  // Like a CUDA context after a fault: nothing runs any more.
  if (!pendingFault_.empty())
    return;
  auto inj = inject_.find(v.name);
  std::string mode = inj == inject_.end() ? "" : inj->second;
  if (mode == "fault")
    std::raise(SIGSEGV);
  if (mode == "error") {
    pendingFault_ = l.what + ": simulated device fault (injected by $ATTUNE_SIM_INJECT)";
    return;
  }
  std::vector<SimArg> args;
  int oParam = -1;
  for (size_t i = 0; i < l.params->size(); ++i) {
    const rt::Param &p = (*l.params)[i];
    SimArg a;
    a.name = p.name;
    uint64_t slot = l.slots[i];
    if (p.type == rt::ParamType::Ptr) {
      a.pointer = true;
      a.ptr = reinterpret_cast<void *>(uintptr_t(slot));
      a.bytes = int64_t(l.bytes[i]);
      if (p.name == "o")
        oParam = int(i);
    } else if (p.type == rt::ParamType::I32) {
      int32_t narrow;
      std::memcpy(&narrow, &slot, 4);
      a.value = narrow;
    } else {
      std::memcpy(&a.value, &slot, 8);
    }
    args.push_back(std::move(a));
  }
  const std::string &symbol = l.combine ? v.splitKv->kernel : v.kernel;
  std::string error;
  if (!simulateKernel(*kernels_.at(v.name), symbol,
                      {int64_t(l.grid[0]), int64_t(l.grid[1]), int64_t(l.grid[2])}, l.threads,
                      l.smemBytes, args, error)) {
    pendingFault_ = l.what + (l.combine ? " (combine)" : "") + ": " + error;
    return;
  }
  // Injected wrong results land in o's last element, after every kernel that writes o.
  if ((mode == "wrong" || mode == "nan") && oParam >= 0 && args[size_t(oParam)].bytes >= 2) {
    const SimArg &o = args[size_t(oParam)];
    size_t width = rt::dtypeSize(m.dtype);
    uint8_t *last = static_cast<uint8_t *>(o.ptr) + (o.bytes / width - 1) * width;
    float f;
    uint16_t h;
    if (width == 4) {
      std::memcpy(&f, last, 4);
    } else {
      std::memcpy(&h, last, 2);
      f = m.dtype == rt::DType::BF16 ? half::fromBf16(h) : half::fromF16(h);
    }
    f = mode == "nan" ? NAN : f + 1.0f;
    if (width == 4) {
      std::memcpy(last, &f, 4);
    } else {
      h = m.dtype == rt::DType::BF16 ? half::toBf16(f) : half::toF16(f);
      std::memcpy(last, &h, 2);
    }
  }
}

uint64_t SimDevice::allocScratch(size_t bytes, void *, const std::string &) {
  uint64_t p = alloc(bytes);
  // NaN-filled (f32 all-ones), so that a partial no split wrote shows in the result.
  std::memset(reinterpret_cast<void *>(uintptr_t(p)), 0xff, bytes);
  return p;
}

void SimDevice::freeScratch(uint64_t p, void *) { free(p); }

uint64_t SimDevice::alloc(size_t bytes) {
  // 128-byte aligned, as cudaMalloc's are at least 256.
  size_t rounded = (std::max<size_t>(bytes, 1) + 127) / 128 * 128;
  void *mem = std::aligned_alloc(128, rounded);
  if (!mem)
    throw cu::CudaError("gpu-sim: out of memory allocating " + std::to_string(bytes) + " bytes");
  uint64_t p = uint64_t(reinterpret_cast<uintptr_t>(mem));
  buffers_[p] = mem;
  return p;
}

void SimDevice::free(uint64_t p) {
  auto it = buffers_.find(p);
  if (it == buffers_.end())
    return;
  std::free(it->second);
  buffers_.erase(it);
}

void SimDevice::copy(uint64_t dst, uint64_t src, size_t bytes) {
  std::memcpy(reinterpret_cast<void *>(uintptr_t(dst)),
              reinterpret_cast<const void *>(uintptr_t(src)), bytes);
}

void SimDevice::download(void *dst, uint64_t src, size_t bytes) {
  std::memcpy(dst, reinterpret_cast<const void *>(uintptr_t(src)), bytes);
}

std::string SimDevice::synchronize(void *) { return pendingFault_; }

std::vector<double> SimDevice::time(void *stream, int repeats,
                                    const std::function<void(int)> &run) {
  // The simulator runs synchronously: wall-clock time of each run (it ranks variants
  // by simulation cost, which says nothing of a GPU; gpu-sim tunes to test the tuner).
  std::vector<double> ms;
  for (int rep = 0; rep < repeats; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    run(rep);
    std::string fault = synchronize(stream);
    if (!fault.empty())
      throw cu::CudaError(fault);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                     .count());
  }
  return ms;
}

//===----------------------------------------------------------------------===//
// Bundles of simulated kernels
//===----------------------------------------------------------------------===//

std::unique_ptr<rt::Bundle> buildSimBundle(ModuleOp l1, const nlohmann::json *spec, SpecInfo info,
                                           const std::vector<GpuConfig> &configs,
                                           const std::map<std::string, HostTensor> &inputs,
                                           std::string &error) {
  attn::AttentionOp op;
  l1.walk([&](attn::AttentionOp a) { op = a; });
  if (!op) {
    error = "the module holds no attn.attention";
    return nullptr;
  }
  rt::Json specJson;
  if (spec) {
    specJson = toRuntimeJson(*spec);
  } else {
    // attn IR input: no spec to record. The manifest's facts come from the op.
    specJson = rt::Json::object();
    specJson.set("attn_ir", info.name);
    Type elt = cast<RankedTensorType>(op.getQ().getType()).getElementType();
    info.dtype = elt.isF16() ? "fp16" : elt.isBF16() ? "bf16" : "f32";
    info.qOffset = op.getDefaultQOffset() ? std::optional<int64_t>(*op.getDefaultQOffset())
                                          : std::nullopt;
    info.kvOffset = op.getDefaultKvOffset() ? std::optional<int64_t>(*op.getDefaultKvOffset())
                                            : std::nullopt;
    info.inputs.clear();
    for (Attribute a : op.getInputNames()) {
      std::string name = cast<StringAttr>(a).getValue().str();
      auto it = inputs.find(name);
      InputDecl decl;
      decl.name = name;
      decl.dtype = it != inputs.end() && !it->second.isInt ? "f32" : "i32";
      if (it != inputs.end())
        for (int64_t d : it->second.shape)
          decl.shape.push_back(d);
      info.inputs.push_back(decl);
    }
  }
  std::vector<BundleVariant> variants;
  std::map<std::string, OwningOpRef<ModuleOp>> kernels;
  std::map<std::string, bool> archHasDefault;
  for (const GpuConfig &config : configs) {
    BundleVariant v;
    v.config = config;
    DiagnosticCollector diags(l1.getContext());
    FailureOr<KernelModule> built = buildKernelModule(l1, config);
    if (failed(built)) {
      error = diags.message("building the kernel failed");
      return nullptr;
    }
    OwningOpRef<ModuleOp> kernel = std::move(built->module);
    v.kernel.info = built->info;
    v.isDefault = !archHasDefault[config.arch];
    archHasDefault[config.arch] = true;
    std::string name = config.name();
    if (kernels.count(name)) {
      error = "the configuration " + name + " is listed twice";
      return nullptr;
    }
    kernels[name] = std::move(kernel);
    variants.push_back(std::move(v));
  }
  try {
    rt::Manifest manifest = bundleManifest(specJson, info, variants);
    return std::make_unique<rt::Bundle>(std::move(manifest), "<gpu-sim>",
                                        std::make_unique<SimDevice>(std::move(kernels)));
  } catch (const std::exception &e) {
    error = std::string("gpu-sim: the kernels' manifest does not validate: ") + e.what();
    return nullptr;
  }
}

namespace {

attn_tensor describe(const void *data, int32_t dtype, const std::vector<int64_t> &shape) {
  return rt::contiguousTensor(const_cast<void *>(data), dtype, shape);
}

int32_t apiDtype(rt::DType t) {
  switch (t) {
  case rt::DType::BF16:
    return ATTN_BF16;
  case rt::DType::FP16:
    return ATTN_FP16;
  case rt::DType::F32:
    return ATTN_F32;
  case rt::DType::I32:
    return ATTN_I32;
  }
  return ATTN_F32;
}

} // namespace

namespace {
/// A tensor in device memory as SimLayout says: element strides (the last 1) and the
/// size in elements, gaps included (no stride is 0, as in PyTorch). `bshd` puts a
/// [B, H, S, D] tensor's S outside its H; `pad` elements follow every row and every
/// outer index of any rank (ragged [total, H, D] and paged [pages, page_size, H, D]
/// buffers too), so that no stride follows from the shape.
struct Strided {
  std::vector<int64_t> strides;
  int64_t elements = 0;
  Strided(const SimLayout &l, const std::vector<int64_t> &shape, bool bshd) {
    size_t rank = shape.size();
    std::vector<size_t> order(rank); // memory order, outermost first
    for (size_t i = 0; i < rank; ++i)
      order[i] = i;
    if (bshd && rank == 4)
      std::swap(order[1], order[2]);
    strides.assign(rank, 1);
    for (size_t k = rank - 1; k-- > 0;) {
      size_t inner = order[k + 1];
      strides[order[k]] = std::max<int64_t>(shape[inner], 1) * strides[inner] + l.pad;
    }
    elements = rank ? shape[order[0]] * strides[order[0]] : 1;
  }
};
constexpr uint16_t kGap = 0x7fbf; // a NaN bf16 and fp16 no kernel computes

/// Calls f(flat index, element offset) for every element of `shape` laid out as `l`.
template <typename F>
void forEachElement(const std::vector<int64_t> &shape, const std::vector<int64_t> &strides, F f) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  for (int64_t i = 0; i < n; ++i) {
    int64_t rest = i, at = 0;
    for (size_t d = shape.size(); d-- > 0;) {
      at += rest % shape[d] * strides[d];
      rest /= shape[d];
    }
    f(size_t(i), size_t(at));
  }
}

/// `t` (contiguous) into a buffer laid out as `l`, gaps kGap.
std::vector<uint16_t> layOut(const std::vector<uint16_t> &t, const std::vector<int64_t> &shape,
                             const Strided &l) {
  std::vector<uint16_t> out(size_t(l.elements), kGap);
  forEachElement(shape, l.strides, [&](size_t i, size_t at) { out[at] = t[i]; });
  return out;
}

attn_tensor describeStrided(const void *data, int32_t dtype, const std::vector<int64_t> &shape,
                            const Strided &l) {
  attn_tensor t = describe(data, dtype, shape);
  for (size_t i = 0; i < shape.size(); ++i)
    t.strides[i] = l.strides[i];
  return t;
}
} // namespace

SimCall::SimCall(const rt::Manifest &m, const AttentionArgs &args, bool wantLse,
                 const SimLayout &layout)
    : m_(m) {
  if (layout.pad < 0)
    throw cu::CudaError("gpu-sim: the layout's padding must not be negative (got " +
                        std::to_string(layout.pad) + ")");
  bool f16 = m.dtype == rt::DType::FP16;
  if (m.dtype == rt::DType::F32)
    throw cu::CudaError("gpu-sim: the kernels take bf16 or fp16 (the spec's dtype is f32)");
  auto toHalf = [&](const HostTensor &t) {
    std::vector<uint16_t> out(t.data.size());
    for (size_t i = 0; i < t.data.size(); ++i)
      out[i] = f16 ? half::toF16(float(t.data[i])) : half::toBf16(float(t.data[i]));
    return out;
  };
  int32_t dt = apiDtype(m.dtype);
  bool qRagged = m.qStorage == "ragged";
  // The rank each buffer has in its storage; other ranks stay contiguous (the
  // runtime refuses them, naming the argument).
  auto rankOf = [](const std::string &storage) { return storage == "ragged" ? 3u : 4u; };
  auto place = [&](const HostTensor &t, std::vector<uint16_t> &buf, const std::string &storage) {
    buf = toHalf(t);
    if (t.shape.size() != rankOf(storage))
      return describe(buf.data(), dt, t.shape);
    Strided l(layout, t.shape, layout.bshd && storage == "padded");
    buf = layOut(buf, t.shape, l);
    return describeStrided(buf.data(), dt, t.shape, l);
  };
  call_.q = place(args.q, q_, m.qStorage);
  call_.k = place(args.k, k_, m.kvStorage);
  call_.v = place(args.v, v_, m.kvStorage);
  // o in q's storage: [B, Hq, Sq, Dv] or ragged [total_q, Hq, Dv]; lse without Dv.
  bool qFits = args.q.shape.size() == rankOf(m.qStorage);
  if (qRagged)
    oShape_ = {qFits ? args.q.shape[0] : 0, m.headsQ, m.headDimV};
  else
    oShape_ = {qFits ? args.q.shape[0] : 0, m.headsQ, qFits ? args.q.shape[2] : 0, m.headDimV};
  size_t rows = 1;
  for (size_t d = 0; d + 1 < oShape_.size(); ++d)
    rows *= size_t(oShape_[d]);
  // NaN-filled, so that an element no kernel wrote shows; gaps kGap.
  std::vector<uint16_t> nan(rows * size_t(m.headDimV), f16 ? 0x7e00 : 0x7fc0);
  Strided ol(layout, oShape_, layout.bshd && !qRagged);
  o_ = layOut(nan, oShape_, ol);
  oStrides_ = ol.strides;
  call_.o = describeStrided(o_.data(), dt, oShape_, ol);
  if (wantLse) {
    lse_.assign(rows, NAN);
    call_.lse = describe(lse_.data(), ATTN_F32,
                         std::vector<int64_t>(oShape_.begin(), oShape_.end() - 1));
  }
  // The sequence arguments, int32 as an application's are (the runtime reads them
  // on the host: the simulated device's memory is the host's).
  const std::optional<HostTensor> *seq[5] = {&args.seq.cuSeqlensQ, &args.seq.cuSeqlensKv,
                                             &args.seq.pageTable, &args.seq.kvLens,
                                             &args.seq.qLens};
  attn_tensor *slots[5] = {&call_.cu_seqlens_q, &call_.cu_seqlens_kv, &call_.page_table,
                           &call_.kv_lens, &call_.q_lens};
  for (int i = 0; i < 5; ++i) {
    if (!*seq[i])
      continue;
    const HostTensor &t = **seq[i];
    seqArrays_[i].resize(t.data.size());
    for (size_t n = 0; n < t.data.size(); ++n)
      seqArrays_[i][n] = int32_t(t.data[n]);
    *slots[i] = describe(seqArrays_[i].data(), t.isInt ? ATTN_I32 : ATTN_F32, t.shape);
  }
  for (const rt::InputDecl &decl : m.inputs) {
    auto it = args.inputs.find(decl.name);
    if (it == args.inputs.end())
      continue; // bindArguments reported it; the runtime would too
    const HostTensor &t = it->second;
    std::vector<uint32_t> words(t.data.size());
    for (size_t i = 0; i < t.data.size(); ++i) {
      if (decl.dtype == rt::DType::I32) {
        int32_t n = int32_t(t.data[i]);
        std::memcpy(&words[i], &n, 4);
      } else {
        float f = float(t.data[i]);
        std::memcpy(&words[i], &f, 4);
      }
    }
    inputs_.push_back(std::move(words));
    names_.push_back(decl.name);
  }
  for (size_t i = 0; i < inputs_.size(); ++i) {
    const rt::InputDecl &decl = m.inputs[size_t(m.findInput(names_[i]))];
    namePtrs_.push_back(names_[i].c_str());
    inputTensors_.push_back(
        describe(inputs_[i].data(), apiDtype(decl.dtype), args.inputs.at(names_[i]).shape));
  }
  call_.num_inputs = int32_t(inputTensors_.size());
  call_.input_names = namePtrs_.data();
  call_.inputs = inputTensors_.data();
  call_.has_q_offset = args.qOffset.has_value();
  call_.q_offset = args.qOffset.value_or(0);
  call_.has_kv_offset = args.kvOffset.has_value();
  call_.kv_offset = args.kvOffset.value_or(0);
  call_.validate = layout.validate ? 1 : 0;
  call_.max_seqlen_q = layout.maxSeqlenQ;
  call_.max_seqlen_kv = layout.maxSeqlenKv;
}

HostTensor SimCall::o() const {
  HostTensor t = HostTensor::zeros(oShape_);
  bool f16 = m_.dtype == rt::DType::FP16;
  std::vector<char> isElement(o_.size(), 0);
  forEachElement(oShape_, oStrides_, [&](size_t i, size_t at) {
    isElement[at] = 1;
    t.data[i] = f16 ? half::fromF16(o_[at]) : half::fromBf16(o_[at]);
  });
  for (size_t at = 0; at < o_.size(); ++at)
    if (!isElement[at] && o_[at] != kGap) {
      std::string strides;
      for (size_t d = 0; d + 1 < oStrides_.size(); ++d)
        strides += (d ? ", " : "") + std::to_string(oStrides_[d]);
      throw cu::CudaError("gpu-sim: the kernel wrote element " + std::to_string(at) +
                          " of o's buffer, a gap between its rows (strides " + strides + ")");
    }
  return t;
}

HostTensor SimCall::lse() const {
  HostTensor t = HostTensor::zeros(std::vector<int64_t>(oShape_.begin(), oShape_.end() - 1));
  t.data.assign(lse_.begin(), lse_.end());
  return t;
}

bool runGpuSimulation(ModuleOp l1, const nlohmann::json *spec, const SpecInfo &info,
                      const GpuConfig &config, const AttentionArgs &args,
                      AttentionResult &result, std::string &error, int64_t numSplits,
                      const SimLayout &layout) {
  if (numSplits < 1) {
    error = "num_splits must be at least 1 (got " + std::to_string(numSplits) + ")";
    return false;
  }
  attn::AttentionOp op;
  l1.walk([&](attn::AttentionOp a) { op = a; });
  if (!op) {
    error = "the module holds no attn.attention";
    return false;
  }
  // The compiler's own checks first: their messages name the spec's symbols.
  BoundCall bound;
  if (!bindArguments(op, args, bound, error))
    return false;
  std::unique_ptr<rt::Bundle> bundle = buildSimBundle(l1, spec, info, {config}, args.inputs, error);
  if (!bundle)
    return false;
  try {
    SimCall sim(bundle->manifest(), args, bundle->manifest().hasLse, layout);
    attn_call &call = sim.call();
    std::string variant = config.name();
    call.variant = variant.c_str();
    call.num_splits = int32_t(numSplits);
    bundle->launch(call);
    std::string fault = bundle->device().synchronize(nullptr);
    if (!fault.empty()) {
      error = fault;
      return false;
    }
    result.o = sim.o();
    // By the spec, not by the buffer: with B = 0 or Sq = 0 lse is empty but still an
    // output, of shape [B, Hq, Sq].
    if (bundle->manifest().hasLse)
      result.lse = sim.lse();
  } catch (const std::exception &e) {
    error = e.what();
    return false;
  }
  return true;
}

} // namespace attune
