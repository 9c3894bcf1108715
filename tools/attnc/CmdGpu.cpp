//===- CmdGpu.cpp - attnc run --backend gpu and attnc tune's GPU child ----===//
//
// Both go through the thin runtime exactly as an application does (the tuner in a
// child process, tools/attnc/Tune.h): the spec's bundle
// comes from the bundle cache (compiled into it on first use, for the GPU at hand) or
// from --bundle DIR; tensors are converted to the bundle's storage type here, copied
// to the device, and launched or tuned through the runtime's C API.
//
//===----------------------------------------------------------------------===//
#include "tools/attnc/Driver.h"
#include "tools/attnc/Tune.h"

#include "codegen/Arguments.h"
#include "runtime/src/HalfFloat.h"
#include "codegen/reference/Reference.h"

#include "Args.h"
#include "Cuda.h"
#include "attune/runtime.h"

#include "llvm/Support/raw_ostream.h"
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <random>

namespace attune::attnc {

namespace cu = rt::cu;

namespace {

/// What to compile for a device when the user names no --arch: sm_90a on Hopper
/// (its "a" features run nowhere else), else sm_80, whose PTX later GPUs JIT-compile.
std::string archFor(const cu::DeviceInfo &dev) {
  if (dev.major < 8)
    throw Failure{"the GPU (" + dev.name + ", compute capability " + std::to_string(dev.major) +
                  "." + std::to_string(dev.minor) + ") is older than sm_80, which the kernels need"};
  return dev.major == 9 && dev.minor == 0 ? "sm_90a" : "sm_80";
}

attn_dtype dtypeOf(const std::string &name) {
  if (name == "bf16")
    return ATTN_BF16;
  if (name == "fp16")
    return ATTN_FP16;
  if (name == "f32")
    return ATTN_F32;
  if (name == "i32")
    return ATTN_I32;
  throw Failure{"the bundle declares an unknown dtype '" + name + "'"};
}

size_t elementBytes(attn_dtype t) { return t == ATTN_BF16 || t == ATTN_FP16 ? 2 : 4; }

/// `t` in the storage type `dtype`, as the device reads it.
std::vector<uint8_t> encode(const HostTensor &t, attn_dtype dtype) {
  size_t width = elementBytes(dtype);
  std::vector<uint8_t> bytes(t.data.size() * width);
  for (size_t i = 0; i < t.data.size(); ++i) {
    uint8_t *p = bytes.data() + i * width;
    float f = float(t.data[i]);
    uint16_t h;
    int32_t n;
    switch (dtype) {
    case ATTN_BF16:
      h = half::toBf16(f);
      std::memcpy(p, &h, 2);
      break;
    case ATTN_FP16:
      h = half::toF16(f);
      std::memcpy(p, &h, 2);
      break;
    case ATTN_F32:
      std::memcpy(p, &f, 4);
      break;
    case ATTN_I32:
      n = int32_t(t.data[i]);
      std::memcpy(p, &n, 4);
      break;
    }
  }
  return bytes;
}

HostTensor decode(const std::vector<uint8_t> &bytes, attn_dtype dtype, std::vector<int64_t> shape) {
  HostTensor t = HostTensor::zeros(std::move(shape));
  size_t width = elementBytes(dtype);
  for (size_t i = 0; i < t.data.size(); ++i) {
    const uint8_t *p = bytes.data() + i * width;
    uint16_t h;
    float f;
    if (dtype == ATTN_F32) {
      std::memcpy(&f, p, 4);
    } else {
      std::memcpy(&h, p, 2);
      f = dtype == ATTN_BF16 ? half::fromBf16(h) : half::fromF16(h);
    }
    t.data[i] = f;
  }
  return t;
}

attn_tensor describe(cu::CUdeviceptr data, attn_dtype dtype, const std::vector<int64_t> &shape) {
  return rt::contiguousTensor(reinterpret_cast<void *>(data), dtype, shape);
}

size_t numel(const std::vector<int64_t> &shape) {
  size_t n = 1;
  for (int64_t d : shape)
    n *= size_t(d);
  return n;
}

void check(int rc) {
  if (rc)
    throw Failure{attn_last_error()};
}

/// A bundle on the current GPU and one call's device tensors.
class GpuCall {
public:
  /// Loads the driver (a clear error where there is none), makes a context current
  /// and loads the bundle: --bundle DIR, else the cached one for SPEC and this GPU.
  GpuCall(const Options &opts, const std::string &specPath) {
    std::optional<std::string> dir = opts.get("bundle");
    std::optional<CompileRequest> req;
    if (!dir) // --arch and --configs are checked before the driver is looked for
      req = CompileRequest::fromOptions(opts, specPath);
    cu::driver();
    device_ = &cu::deviceInfo(cu::ensureContext(nullptr));
    if (req) {
      if (!opts.get("arch"))
        req->archs = {archFor(*device_)};
      dir = cachedBundle(*req, &llvm::errs());
    }
    dir_ = *dir;
    check(attn_bundle_load(dir->c_str(), &bundle_));
    manifest_ = nlohmann::json::parse(attn_bundle_info_json(bundle_));
    dtype_ = dtypeOf(manifest_["dtype"]);
  }
  ~GpuCall() { attn_bundle_free(bundle_); }

  const cu::DeviceInfo &device() const { return *device_; }
  const std::string &dir() const { return dir_; }
  const nlohmann::json &manifest() const { return manifest_; }
  attn_bundle *bundle() { return bundle_; }
  attn_dtype dtype() const { return dtype_; }

  void setQkv(const HostTensor &q, const HostTensor &k, const HostTensor &v) {
    setQkvBytes(encode(q, dtype_), encode(k, dtype_), encode(v, dtype_), q.shape, k.shape, v.shape);
  }
  /// The sequence arguments as int32 device arrays; o (and lse) in q's storage
  /// (ragged: [total_q, Hq, Dv]). setQkv first.
  void setSequences(const SequenceArgs &seq, bool validate) {
    const std::optional<HostTensor> *given[5] = {&seq.cuSeqlensQ, &seq.cuSeqlensKv,
                                                 &seq.pageTable, &seq.kvLens, &seq.qLens};
    attn_tensor *slots[5] = {&call_.cu_seqlens_q, &call_.cu_seqlens_kv, &call_.page_table,
                             &call_.kv_lens, &call_.q_lens};
    for (int i = 0; i < 5; ++i)
      if (*given[i])
        *slots[i] = upload(**given[i], (*given[i])->isInt ? ATTN_I32 : ATTN_F32);
    call_.validate = validate ? 1 : 0;
    call_.max_seqlen_q = seq.maxSeqlenQ;
    call_.max_seqlen_kv = seq.maxSeqlenKv;
    const nlohmann::json &storage = manifest_.value("storage", nlohmann::json::object());
    if (storage.value("q", "padded") == "ragged" && call_.q.ndim == 3) {
      oShape_ = {call_.q.shape[0], int64_t(manifest_["heads_q"]), int64_t(manifest_["head_dim_v"])};
      call_.o = describe(buffers_.alloc(numel(oShape_) * elementBytes(dtype_)), dtype_, oShape_);
    }
  }
  void setQkvBytes(const std::vector<uint8_t> &q, const std::vector<uint8_t> &k,
                   const std::vector<uint8_t> &v, const std::vector<int64_t> &qShape,
                   const std::vector<int64_t> &kShape, const std::vector<int64_t> &vShape) {
    call_.q = describe(buffers_.upload(q.data(), q.size()), dtype_, qShape);
    call_.k = describe(buffers_.upload(k.data(), k.size()), dtype_, kShape);
    call_.v = describe(buffers_.upload(v.data(), v.size()), dtype_, vShape);
    oShape_ = {qShape[0], qShape[1], qShape[2], int64_t(manifest_["head_dim_v"])};
    call_.o = describe(buffers_.alloc(numel(oShape_) * elementBytes(dtype_)), dtype_, oShape_);
  }
  void requestLse() {
    std::vector<int64_t> shape(oShape_.begin(), oShape_.end() - 1);
    call_.lse = describe(buffers_.alloc(numel(shape) * 4), ATTN_F32, shape);
  }
  /// The bundle's extra inputs, in its declared dtypes; a missing one is an error
  /// naming it and its declared shape.
  void setInputs(const std::map<std::string, HostTensor> &given) {
    for (const auto &decl : manifest_["inputs"]) {
      std::string name = decl["name"];
      auto it = given.find(name);
      if (it == given.end())
        throw Failure{"the spec needs the input '" + name + "' (" + std::string(decl["dtype"]) +
                          " " + decl["shape"].dump() + "): pass --input " + name + "=FILE.npy",
                      2};
      names_.push_back(decl["name"].get_ref<const std::string &>().c_str());
      inputs_.push_back(upload(it->second, dtypeOf(decl["dtype"])));
    }
    for (const auto &[name, tensor] : given) {
      bool declared = false;
      for (const auto &decl : manifest_["inputs"])
        declared |= decl["name"] == name;
      if (!declared)
        throw Failure{"--input " + name + ": the spec declares no input of that name", 2};
    }
    call_.num_inputs = int32_t(inputs_.size());
    call_.input_names = names_.data();
    call_.inputs = inputs_.data();
  }
  void setOffsets(std::optional<int64_t> q, std::optional<int64_t> kv) {
    call_.has_q_offset = q.has_value();
    call_.q_offset = q.value_or(0);
    call_.has_kv_offset = kv.has_value();
    call_.kv_offset = kv.value_or(0);
  }
  void forceVariant(const std::optional<std::string> &name) {
    variant_ = name.value_or("");
    call_.variant = name ? variant_.c_str() : nullptr;
  }

  const attn_call &call() const { return call_; }
  void setNumSplits(int64_t n) { call_.num_splits = int32_t(n); }

  HostTensor downloadO() const { return download(call_.o, oShape_); }
  HostTensor downloadLse() const {
    return download(call_.lse, std::vector<int64_t>(oShape_.begin(), oShape_.end() - 1));
  }

private:
  attn_tensor upload(const HostTensor &t, attn_dtype dtype) {
    std::vector<uint8_t> bytes = encode(t, dtype);
    return describe(buffers_.upload(bytes.data(), bytes.size()), dtype, t.shape);
  }
  HostTensor download(const attn_tensor &t, std::vector<int64_t> shape) const {
    std::vector<uint8_t> bytes(numel(shape) * elementBytes(attn_dtype(t.dtype)));
    cu::check(cu::driver().cuMemcpyDtoH(bytes.data(), reinterpret_cast<cu::CUdeviceptr>(t.data),
                                        bytes.size()),
              "cuMemcpyDtoH");
    return decode(bytes, attn_dtype(t.dtype), std::move(shape));
  }

  const cu::DeviceInfo *device_ = nullptr;
  std::string dir_;
  attn_bundle *bundle_ = nullptr;
  nlohmann::json manifest_;
  attn_dtype dtype_ = ATTN_BF16;
  cu::DeviceBuffers buffers_;
  attn_call call_{};
  std::vector<int64_t> oShape_;
  std::vector<const char *> names_;
  std::vector<attn_tensor> inputs_;
  std::string variant_;
};

/// n normally distributed values in `dtype`'s bytes (bf16/fp16/f32).
std::vector<uint8_t> randomValues(size_t n, attn_dtype dtype, std::mt19937_64 &rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  size_t width = elementBytes(dtype);
  std::vector<uint8_t> bytes(n * width);
  for (size_t i = 0; i < n; ++i) {
    float f = normal(rng);
    uint16_t h = dtype == ATTN_BF16 ? half::toBf16(f) : half::toF16(f);
    std::memcpy(bytes.data() + i * width, dtype == ATTN_F32 ? static_cast<void *>(&f) : &h, width);
  }
  return bytes;
}

} // namespace

void runOnGpu(const Options &opts, const std::string &specPath, const AttentionArgs &args,
              bool wantLse, AttentionResult &result) {
  GpuCall gpu(opts, specPath);
  gpu.setQkv(args.q, args.k, args.v);
  gpu.setSequences(args.seq, args.seq.validate);
  if (wantLse)
    gpu.requestLse();
  gpu.setInputs(args.inputs);
  gpu.setOffsets(args.qOffset, args.kvOffset);
  gpu.forceVariant(opts.get("variant"));
  if (auto splits = opts.getInt("num-splits", 1, 1024))
    gpu.setNumSplits(*splits);
  check(attn_check(gpu.bundle(), &gpu.call()));
  check(attn_launch(gpu.bundle(), &gpu.call()));
  cu::check(cu::driver().cuCtxSynchronize(), "cuCtxSynchronize");
  result.o = gpu.downloadO();
  if (wantLse)
    result.lse = gpu.downloadLse();
}

void tuneChildGpu(const Options &opts, const std::string &specPath, const TuneRequest &req,
                  const std::vector<std::string> &only, TuneChannel &channel) {
  GpuCall gpu(opts, specPath);
  channel.line("bundle", gpu.dir());
  const nlohmann::json &m = gpu.manifest();
  int64_t hq = m["heads_q"], hkv = m["heads_kv"], d = m["head_dim"], dv = m["head_dim_v"];
  std::vector<int64_t> qShape{req.batch, hq, req.seqQ, d}, kShape{req.batch, hkv, req.seqKv, d},
      vShape{req.batch, hkv, req.seqKv, dv};
  std::mt19937_64 rng(req.seed);
  gpu.setQkvBytes(randomValues(numel(qShape), gpu.dtype(), rng),
                  randomValues(numel(kShape), gpu.dtype(), rng),
                  randomValues(numel(vShape), gpu.dtype(), rng), qShape, kShape, vShape);
  if (m["outputs"].size() > 1)
    gpu.requestLse(); // compared with the default variant's too
  gpu.setInputs(req.inputs);
  gpu.setOffsets(req.qOffset, req.kvOffset);
  check(attn_check(gpu.bundle(), &gpu.call()));
  // The runtime's tuner on its own handle of the same bundle (the C API's handle is
  // opaque): the manifest is read again, nothing else is shared.
  rt::Bundle bundle(gpu.dir());
  tuneChildMeasure(bundle, gpu.call(), req, only, channel);
}

} // namespace attune::attnc
