//===- HostRun.cpp - a bundle's host variants: loading and running them ---===//
#include "HostRun.h"

#include "HalfFloat.h"

#include <algorithm>
#include <limits>
#include <cstring>
#include <dlfcn.h>

namespace attune::rt {

int selectHostVariant(const Manifest &m, const char *forced, const char *fn) {
  if (m.hostVariants.empty())
    throw ArgError(std::string(fn) + ": this bundle has no host variant (compile it with "
                   "`attnc compile --arch host`, alone or with GPU archs: --arch host,sm_80)");
  if (forced && *forced) {
    int i = m.findHostVariant(forced);
    if (i < 0) {
      std::string names;
      for (const HostVariant &v : m.hostVariants)
        names += (names.empty() ? "" : ", ") + v.name;
      throw ArgError(std::string(fn) + ": unknown host variant '" + forced +
                     "'; this bundle's host variants: " + names);
    }
    return i;
  }
  for (size_t i = 0; i < m.hostVariants.size(); ++i)
    if (m.hostVariants[i].isDefault)
      return int(i);
  return 0;
}

HostLibraries::~HostLibraries() {
  for (auto &[i, lib] : loaded_)
    if (lib.first)
      dlclose(lib.first);
}

namespace {

/// The first CPU feature the library was compiled for that this CPU lacks ("" if
/// none of those this runtime can test): running it anyway would end in SIGILL.
std::string missingCpuFeature(const std::string &features) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  struct Feature {
    const char *name;
    bool have;
  };
  static const Feature table[] = {
      {"sse4.2", bool(__builtin_cpu_supports("sse4.2"))},
      {"avx", bool(__builtin_cpu_supports("avx"))},
      {"avx2", bool(__builtin_cpu_supports("avx2"))},
      {"fma", bool(__builtin_cpu_supports("fma"))},
      {"bmi", bool(__builtin_cpu_supports("bmi"))},
      {"bmi2", bool(__builtin_cpu_supports("bmi2"))},
      {"avx512f", bool(__builtin_cpu_supports("avx512f"))},
      {"avx512bw", bool(__builtin_cpu_supports("avx512bw"))},
      {"avx512vl", bool(__builtin_cpu_supports("avx512vl"))},
      {"avx512dq", bool(__builtin_cpu_supports("avx512dq"))},
      {"avx512cd", bool(__builtin_cpu_supports("avx512cd"))},
      {"avx512vnni", bool(__builtin_cpu_supports("avx512vnni"))},
  };
  size_t at = 0;
  while (at < features.size()) {
    size_t comma = features.find(',', at);
    std::string f = features.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    at = comma == std::string::npos ? features.size() : comma + 1;
    if (f.size() < 2 || f[0] != '+')
      continue;
    for (const Feature &known : table)
      if (f.compare(1, std::string::npos, known.name) == 0 && !known.have)
        return known.name;
  }
#else
  (void)features;
#endif
  return "";
}

} // namespace

const HostLibraries::Entries &HostLibraries::get(const Manifest &m, const std::string &dir,
                                                 int index, const char *fn) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = loaded_.find(index);
  if (it != loaded_.end())
    return it->second.second;
  const HostVariant &v = m.hostVariants[size_t(index)];
  std::string path = dir + "/" + v.library;
  if (std::string missing = missingCpuFeature(v.features); !missing.empty())
    throw ArgError(std::string(fn) + ": host variant " + v.name + " was compiled for " + v.cpu +
                   ", whose " + missing + " instructions this CPU lacks; recompile the bundle "
                   "on this machine (attnc compile SPEC --arch host)");
  void *handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char *why = dlerror();
    throw ArgError(std::string(fn) + ": host variant " + v.name + ": cannot load " + path + ": " +
                   (why ? why : "unknown error"));
  }
  Entries e;
  auto symbol = [&](const std::string &name) {
    void *p = dlsym(handle, name.c_str());
    if (!p) {
      dlclose(handle);
      throw ArgError(std::string(fn) + ": host variant " + v.name + ": " + path + " has no symbol " +
                     name);
    }
    return p;
  };
  e.forward = reinterpret_cast<HostEntryFn>(symbol(v.forward.entry));
  e.forwardItems = reinterpret_cast<HostItemsFn>(symbol(v.forward.items));
  if (v.backward) {
    e.backward = reinterpret_cast<HostEntryFn>(symbol(v.backward->entry));
    e.backwardItems = reinterpret_cast<HostItemsFn>(symbol(v.backward->items));
  }
  return loaded_.emplace(index, std::make_pair(handle, e)).first->second.second;
}

namespace {

std::vector<int64_t> shapeOf(const attn_tensor &t) {
  return std::vector<int64_t>(t.shape, t.shape + t.ndim);
}

int64_t elements(const attn_tensor &t) {
  int64_t n = 1;
  for (int d = 0; d < t.ndim; ++d)
    n *= t.shape[d];
  return n;
}

bool isContiguous(const attn_tensor &t) {
  int64_t expect = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    if (t.shape[d] == 0)
      return true;
    if (t.shape[d] != 1 && t.strides[d] != expect)
      return false;
    expect *= t.shape[d];
  }
  return true;
}

/// Calls `f(k, offset)` for every element in row-major order: k counts elements,
/// offset is the element's offset in `t` by its strides.
template <typename F> void forEach(const attn_tensor &t, F f) {
  int64_t n = elements(t);
  if (n <= 0)
    return;
  int64_t idx[8] = {0};
  int64_t offset = 0;
  for (int64_t k = 0; k < n; ++k) {
    f(k, offset);
    for (int d = t.ndim - 1; d >= 0; --d) {
      if (++idx[d] < t.shape[d]) {
        offset += t.strides[d];
        break;
      }
      offset -= (t.shape[d] - 1) * t.strides[d];
      idx[d] = 0;
    }
  }
}

float readElement(const attn_tensor &t, int64_t offset) {
  switch (t.dtype) {
  case ATTN_F32:
    return static_cast<const float *>(t.data)[offset];
  case ATTN_BF16:
    return half::fromBf16(static_cast<const uint16_t *>(t.data)[offset]);
  case ATTN_FP16:
    return half::fromF16(static_cast<const uint16_t *>(t.data)[offset]);
  default:
    return 0;
  }
}

void writeElement(const attn_tensor &t, int64_t offset, float v) {
  switch (t.dtype) {
  case ATTN_F32:
    static_cast<float *>(t.data)[offset] = v;
    break;
  case ATTN_BF16:
    static_cast<uint16_t *>(t.data)[offset] = half::toBf16(v);
    break;
  case ATTN_FP16:
    static_cast<uint16_t *>(t.data)[offset] = half::toF16(v);
    break;
  default:
    break;
  }
}

/// A tensor as the host kernels take it: contiguous float32 (or int32), either the
/// caller's memory (already so) or a converted copy.
class Staged {
public:
  /// An input: copied (and converted) unless it is contiguous f32 / i32 already.
  static Staged input(const attn_tensor &t) {
    Staged s(t, shapeOf(t));
    if (t.dtype == ATTN_I32 || (t.dtype == ATTN_F32 && isContiguous(t))) {
      s.data_ = t.data;
      return s;
    }
    s.copy_.resize(size_t(std::max<int64_t>(elements(t), 1)));
    forEach(t, [&](int64_t k, int64_t off) { s.copy_[size_t(k)] = readElement(t, off); });
    s.data_ = s.copy_.data();
    return s;
  }
  /// An output, zeroed: written in place when it is contiguous f32, else through a
  /// copy that finish() converts back. `t.data == NULL`: a scratch of `shape`.
  static Staged output(const attn_tensor &t, const std::vector<int64_t> &shape) {
    Staged s(t, shape);
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    if (t.data && t.dtype == ATTN_F32 && isContiguous(t)) {
      s.data_ = t.data;
      if (n > 0)
        std::memset(t.data, 0, size_t(n) * 4);
      return s;
    }
    s.copy_.assign(size_t(std::max<int64_t>(n, 1)), 0.0f);
    s.data_ = s.copy_.data();
    s.writeBack_ = t.data != nullptr;
    return s;
  }
  void finish() const {
    if (!writeBack_)
      return;
    forEach(t_, [&](int64_t k, int64_t off) { writeElement(t_, off, copy_[size_t(k)]); });
  }
  /// q, k, v and o of a forward: the kernels take them strided (the last stride 1), so
  /// a float32 tensor of any such strides is used in place, a bshd view included;
  /// others are converted as input()/output() do.
  static Staged stridedInput(const attn_tensor &t) {
    if (t.dtype != ATTN_F32 || !lastContiguous(t))
      return input(t);
    Staged s(t, shapeOf(t));
    s.data_ = t.data;
    s.strides_.assign(t.strides, t.strides + t.ndim);
    return s;
  }
  static Staged stridedOutput(const attn_tensor &t) {
    if (!t.data || t.dtype != ATTN_F32 || !lastContiguous(t) || isContiguous(t))
      return output(t, shapeOf(t));
    Staged s(t, shapeOf(t));
    s.data_ = t.data;
    s.strides_.assign(t.strides, t.strides + t.ndim);
    forEach(t, [&](int64_t, int64_t off) { static_cast<float *>(t.data)[off] = 0.0f; });
    return s;
  }
  void *data() const { return data_; }
  const std::vector<int64_t> &shape() const { return shape_; }
  MemrefDescriptor descriptor() const {
    return strides_.empty() ? MemrefDescriptor(data_, shape_)
                            : MemrefDescriptor(data_, shape_, strides_);
  }

private:
  Staged(const attn_tensor &t, std::vector<int64_t> shape) : t_(t), shape_(std::move(shape)) {}
  static bool lastContiguous(const attn_tensor &t) {
    return t.ndim > 0 && (t.shape[t.ndim - 1] <= 1 || t.strides[t.ndim - 1] == 1);
  }
  attn_tensor t_;
  std::vector<int64_t> shape_;
  std::vector<int64_t> strides_; // empty: contiguous
  std::vector<float> copy_;
  void *data_ = nullptr;
  bool writeBack_ = false;
};

/// The kernel's arguments: a descriptor per staged tensor, then q_offset, kv_offset;
/// a per-sequence kernel (HostKernelDecl::sequences) then takes its sequence
/// buffers, q_offset_from_lengths and max_seq_q.
struct KernelArgs {
  std::vector<MemrefDescriptor> descriptors;
  int64_t qOffset = 0, kvOffset = 0;
  bool sequences = false;
  std::vector<MemrefDescriptor> sequenceDescriptors;
  int64_t offsetFromLengths = 0, maxSeqQ = 0;
  std::vector<void *> pointers() {
    std::vector<void *> out;
    for (MemrefDescriptor &d : descriptors)
      out.push_back(d.get());
    out.push_back(&qOffset);
    out.push_back(&kvOffset);
    if (sequences) {
      for (MemrefDescriptor &d : sequenceDescriptors)
        out.push_back(d.get());
      out.push_back(&offsetFromLengths);
      out.push_back(&maxSeqQ);
    }
    return out;
  }
  /// A padded call: every sequence has the buffers' lengths (empty length buffers).
  void paddedSequences(int64_t seqQ) {
    sequences = true;
    sequenceDescriptors.emplace_back(nullptr, std::vector<int64_t>{0});
    sequenceDescriptors.emplace_back(nullptr, std::vector<int64_t>{0});
    maxSeqQ = seqQ;
  }
};

void run(HostEntryFn entry, HostItemsFn items, const std::vector<int64_t> &serialGrids,
         KernelArgs &args, int threads) {
  std::vector<void *> a = args.pointers();
  auto upTo = [&](int64_t n) {
    std::vector<void *> withCount = a;
    withCount.push_back(&n);
    return items(withCount.data());
  };
  int64_t total = upTo(INT64_MAX);
  std::vector<std::pair<int64_t, int64_t>> serial;
  for (int64_t g : serialGrids)
    serial.push_back({upTo(g), upTo(g + 1)});
  runHostItems(entry, a, total, hostThreads(threads), serial);
}

std::vector<int64_t> lseShape(const CheckedCall &c) {
  if (c.qStorage == "ragged")
    return {c.q.shape[0], c.headsQ};
  return {c.batch, c.headsQ, c.perSequence ? c.q.shape[2] : c.seqQ};
}

int64_t elementsOf(const std::vector<int64_t> &shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

} // namespace

void runHostForward(const HostVariant &v, const HostLibraries::Entries &e, const CheckedCall &c,
                    int threads) {
  std::vector<Staged> in;
  in.reserve(3 + c.inputs.size());
  in.push_back(Staged::stridedInput(c.q));
  in.push_back(Staged::stridedInput(c.k));
  in.push_back(Staged::stridedInput(c.v));
  for (const attn_tensor &t : c.inputs)
    in.push_back(Staged::input(t));
  Staged o = Staged::stridedOutput(c.o);
  // The forward writes lse for softmax whether or not the caller wants it.
  attn_tensor noLse{};
  Staged lse = Staged::output(v.forward.lse ? c.lse : noLse, lseShape(c));
  KernelArgs args;
  for (const Staged &s : in)
    args.descriptors.push_back(s.descriptor());
  args.descriptors.push_back(o.descriptor());
  if (v.forward.lse)
    args.descriptors.emplace_back(lse.data(), lse.shape());
  args.qOffset = c.qOffset, args.kvOffset = c.kvOffset;
  std::vector<std::vector<int32_t>> sequence;
  if (c.perSequence) {
    if (!v.forward.sequences)
      throw ArgError("attn_launch: host variant " + v.name + " takes no per-sequence "
                     "arguments (compiled by an older attnc): recompile the bundle");
    // Rows no sequence covers (past q_lens[b]) keep o = 0 and lse = -inf.
    if (v.forward.lse) {
      float *l = static_cast<float *>(lse.data());
      std::fill(l, l + elementsOf(lse.shape()), -std::numeric_limits<float>::infinity());
    }
    // The sequence buffers, contiguous int32: q's, the page table, k/v's.
    auto stage = [&](const attn_tensor &t) {
      std::vector<int32_t> copy;
      std::vector<int64_t> shape{0};
      if (t.data) {
        shape = shapeOf(t);
        forEach(t, [&](int64_t, int64_t off) { copy.push_back(static_cast<const int32_t *>(t.data)[off]); });
      }
      sequence.push_back(std::move(copy));
      args.sequenceDescriptors.emplace_back(sequence.back().data(), shape);
    };
    sequence.reserve(3);
    args.sequences = true;
    stage(c.qStorage == "ragged" ? c.cuSeqlensQ : c.qLens);
    if (c.kvStorage == "paged")
      stage(c.pageTable);
    stage(c.kvStorage == "ragged" ? c.cuSeqlensKv : c.kvLens);
    args.offsetFromLengths = c.qOffsetFromLengths;
    args.maxSeqQ = c.maxSeqQ;
  } else if (v.forward.sequences) {
    args.paddedSequences(c.seqQ);
  }
  run(e.forward, e.forwardItems, v.forward.serialGrids, args, threads);
  o.finish();
  lse.finish();
}

void runHostBackward(const HostVariant &v, const HostLibraries::Entries &e,
                     const CheckedBackward &b, int threads, const char *fn) {
  if (!v.backward || !e.backward)
    throw ArgError(std::string(fn) + ": host variant " + v.name + " has no backward kernel" +
                   (v.backwardError.empty() ? "" : ": " + v.backwardError));
  const CheckedCall &c = b.fwd;
  std::vector<Staged> in;
  in.push_back(Staged::input(c.q));
  in.push_back(Staged::input(c.k));
  in.push_back(Staged::input(c.v));
  for (const attn_tensor &t : c.inputs)
    in.push_back(Staged::input(t));
  in.push_back(Staged::input(c.o));
  attn_tensor none{};
  // lse and dlse: the kernel's arguments exist for every normaliser; zeros where the
  // call has none (sigmoid and relu read neither; dlse = 0 is no gradient into lse).
  Staged lse = c.lse.data ? Staged::input(c.lse) : Staged::output(none, lseShape(c));
  Staged dout = Staged::input(b.dout);
  Staged dlse = b.dlse.data ? Staged::input(b.dlse) : Staged::output(none, lseShape(c));
  std::vector<Staged> out;
  out.push_back(Staged::output(b.dq, shapeOf(c.q)));
  out.push_back(Staged::output(b.dk, shapeOf(c.k)));
  out.push_back(Staged::output(b.dv, shapeOf(c.v)));
  for (size_t n = 0; n < c.inputs.size(); ++n)
    if (c.inputs[n].dtype != ATTN_I32)
      out.push_back(Staged::output(b.grads[n], shapeOf(c.inputs[n])));
  KernelArgs args;
  for (const Staged &s : in)
    args.descriptors.emplace_back(s.data(), s.shape());
  for (const Staged *s : {&lse, &dout, &dlse})
    args.descriptors.emplace_back(s->data(), s->shape());
  for (const Staged &s : out)
    args.descriptors.emplace_back(s.data(), s.shape());
  args.qOffset = c.qOffset, args.kvOffset = c.kvOffset;
  run(e.backward, e.backwardItems, v.backward->serialGrids, args, threads);
  for (const Staged &s : out)
    s.finish();
}

CheckedBackward checkBackward(const Manifest &m, const attn_backward_call &call, const char *fn) {
  CheckOptions options;
  options.host = call.fwd.device == ATTN_DEVICE_HOST;
  options.lseAvailable = true;
  CheckedBackward b;
  b.fwd = checkCall(m, call.fwd, fn, options);
  const CheckedCall &c = b.fwd;
  auto fail = [&](const std::string &message) { throw ArgError(std::string(fn) + ": " + message); };
  auto like = [&](const char *name, const attn_tensor &t, const attn_tensor &model, int32_t dtype) {
    if (t.ndim != model.ndim)
      fail(std::string(name) + ": expected " + std::to_string(model.ndim) + " dimensions " +
           shapeText(model.shape, model.ndim) + ", got " + std::to_string(t.ndim) +
           (t.ndim == 0 && !t.data ? " (missing)" : ""));
    for (int d = 0; d < t.ndim; ++d)
      if (t.shape[d] != model.shape[d])
        fail(std::string(name) + ": expected shape " + shapeText(model.shape, model.ndim) +
             ", got " + shapeText(t.shape, t.ndim));
    if (t.dtype != dtype)
      fail(std::string(name) + ": expected dtype " + dtypeCodeName(dtype) +
           (dtype == c.q.dtype && dtype != ATTN_F32 ? " (q's)" : "") + ", got " +
           dtypeCodeName(t.dtype));
    for (int d = 0; d < t.ndim; ++d)
      if (t.strides[d] < 0 || (t.shape[d] > 1 && t.strides[d] == 0))
        fail(std::string(name) + ": strides must be positive, got " + shapeText(t.strides, t.ndim));
    uint64_t bytes;
    if (!checkedSpanBytes(t, bytes))
      fail(std::string(name) + ": spans more than 2^62 bytes");
    if (!t.data && elements(t) > 0)
      fail(std::string(name) + ": data pointer is NULL");
  };
  b.dout = call.dout, b.dq = call.dq, b.dk = call.dk, b.dv = call.dv, b.dlse = call.dlse;
  like("dout", b.dout, c.o, c.o.dtype);
  like("dq", b.dq, c.q, c.q.dtype);
  like("dk", b.dk, c.k, c.q.dtype);
  like("dv", b.dv, c.v, c.q.dtype);
  if (b.dlse.data) {
    attn_tensor model = contiguousTensor(nullptr, ATTN_F32, lseShape(c));
    like("dlse", b.dlse, model, ATTN_F32);
  }
  if (b.dlse.data && !c.lse.data)
    fail("dlse: given without the forward's lse (pass fwd.lse)");
  b.grads.assign(m.inputs.size(), attn_tensor{});
  if (call.num_grads < 0 || (call.num_grads > 0 && (!call.grad_names || !call.grads)))
    fail("num_grads is " + std::to_string(call.num_grads) + " but grad_names or grads is NULL");
  for (int i = 0; i < call.num_grads; ++i) {
    const char *n = call.grad_names[i];
    if (!n)
      fail("grad_names[" + std::to_string(i) + "] is NULL");
    int index = m.findInput(n);
    if (index < 0)
      fail(std::string("grad ") + n + ": the bundle has no input of that name");
    const InputDecl &decl = m.inputs[size_t(index)];
    if (decl.dtype == DType::I32)
      fail(std::string("grad ") + n + ": input " + n + " is an integer tensor (i32): it has no "
           "gradient");
    if (b.grads[size_t(index)].data || b.grads[size_t(index)].ndim)
      fail(std::string("grad ") + n + ": given twice");
    attn_tensor model = c.inputs[size_t(index)];
    model.dtype = ATTN_F32;
    like((std::string("grad ") + n).c_str(), call.grads[i], model, ATTN_F32);
    b.grads[size_t(index)] = call.grads[i];
  }
  return b;
}

} // namespace attune::rt
