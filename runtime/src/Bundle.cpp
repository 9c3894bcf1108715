//===- Bundle.cpp - a loaded kernel bundle: selection, launch, tuning -----===//
#include "Bundle.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

namespace attune::rt {

using namespace cu;

//===----------------------------------------------------------------------===//
// Variant selection (pure)
//===----------------------------------------------------------------------===//

std::vector<int> compatibleVariants(const Manifest &m, int major, int minor) {
  std::vector<int> out;
  for (size_t i = 0; i < m.variants.size(); ++i)
    if (archRunsOn(m.variants[i], major, minor))
      out.push_back(int(i));
  return out;
}

static std::string ccText(int major, int minor) {
  return std::to_string(major) + "." + std::to_string(minor);
}

int selectVariant(const Manifest &m, int major, int minor, const std::string &forced,
                  const std::string &tuned, const char *fn) {
  auto fail = [&](const std::string &msg) -> int { throw ArgError(std::string(fn) + ": " + msg); };
  if (!forced.empty()) {
    int i = m.findVariant(forced);
    if (i < 0) {
      std::string names;
      for (const Variant &v : m.variants)
        names += (names.empty() ? "" : ", ") + v.name;
      return fail("unknown variant '" + forced + "' (the bundle has: " + names + ")");
    }
    if (!archRunsOn(m.variants[size_t(i)], major, minor))
      return fail("variant '" + forced + "' is for " + m.variants[size_t(i)].arch +
                  " and does not run on a device of compute capability " + ccText(major, minor));
    return i;
  }
  if (!tuned.empty()) {
    int i = m.findVariant(tuned);
    if (i >= 0 && archRunsOn(m.variants[size_t(i)], major, minor))
      return i;
  }
  std::vector<int> ok = compatibleVariants(m, major, minor);
  if (ok.empty()) {
    std::set<std::string> archs;
    for (const Variant &v : m.variants)
      archs.insert(v.arch);
    std::string list;
    for (const std::string &a : archs)
      list += (list.empty() ? "" : ", ") + a;
    return fail("no variant of this bundle runs on a device of compute capability " +
                ccText(major, minor) + " (the bundle has " + list +
                "); recompile it with --arch sm_" + std::to_string(major) +
                std::to_string(minor) + " or an older architecture");
  }
  // The default of the newest architecture that runs here: sm_90a's default beats
  // sm_80's on an H100; at the same capability the arch-specific one wins.
  int best = -1;
  for (int i : ok) {
    const Variant &v = m.variants[size_t(i)];
    if (!v.isDefault)
      continue;
    if (best < 0)
      best = i;
    const Variant &b = m.variants[size_t(best)];
    if (std::make_pair(v.archCapability, v.archExact) > std::make_pair(b.archCapability, b.archExact))
      best = i;
  }
  return best >= 0 ? best : ok.front();
}

std::string checkTunedVariant(const Manifest &m, const std::string &dir, const std::string &key,
                              const std::string &tuned, const std::string &dbPath) {
  if (tuned.empty() || m.findVariant(tuned) >= 0)
    return tuned;
  std::fprintf(stderr,
               "attune: warning: the tuning database %s chose variant '%s' for \"%s\", which "
               "the bundle %s does not have; ignoring it (the default variant runs; tune again "
               "to replace the entry)\n",
               dbPath.c_str(), tuned.c_str(), key.c_str(), dir.c_str());
  return "";
}

bool prefersCubin(const Variant &v, int major, int minor) {
  return v.cubin && v.archCapability == major * 10 + minor;
}

//===----------------------------------------------------------------------===//
// Bundle
//===----------------------------------------------------------------------===//

namespace {

Json infoJsonOf(const std::string &dir, const Manifest &m) {
  Json j = Json::object();
  j.set("dir", dir);
  j.set("format", m.format);
  j.set("compiler_version", m.compilerVersion);
  j.set("spec_name", m.specName);
  j.set("spec_hash", m.specHash);
  j.set("heads_q", m.headsQ);
  j.set("heads_kv", m.headsKv);
  j.set("head_dim", m.headDim);
  j.set("head_dim_v", m.headDimV);
  j.set("dtype", dtypeName(m.dtype));
  j.set("align", m.align);
  j.set("q_offset", m.qOffset ? Json(*m.qOffset) : Json());
  j.set("kv_offset", m.kvOffset ? Json(*m.kvOffset) : Json());
  Json outputs = Json::array();
  outputs.push_back("o");
  if (m.hasLse)
    outputs.push_back("lse");
  j.set("outputs", outputs);
  j.set("alignment", m.alignment);
  Json inputs = Json::array();
  for (const InputDecl &in : m.inputs) {
    Json shape = Json::array();
    for (const Dim &d : in.shape)
      shape.push_back(d.isSymbol() ? Json(d.symbol) : Json(d.size));
    Json e = Json::object();
    e.set("name", in.name);
    e.set("dtype", dtypeName(in.dtype));
    e.set("shape", shape);
    inputs.push_back(e);
  }
  j.set("inputs", inputs);
  Json variants = Json::array();
  for (const Variant &v : m.variants) {
    Json e = Json::object();
    e.set("name", v.name);
    e.set("arch", v.arch);
    e.set("config", v.config);
    e.set("default", v.isDefault);
    e.set("threads", v.threads);
    e.set("smem_bytes", v.smemBytes);
    Json grid = Json::object();
    grid.set("x", v.grid[0].text());
    grid.set("y", v.grid[1].text());
    grid.set("z", v.grid[2].text());
    e.set("grid", grid);
    e.set("kernel", v.kernel);
    e.set("ptx", v.ptx);
    e.set("cubin", v.cubin ? Json(*v.cubin) : Json());
    if (v.ptxas) {
      Json p = Json::object();
      p.set("registers", v.ptxas->registers);
      p.set("spill_stores", v.ptxas->spillStores);
      p.set("spill_loads", v.ptxas->spillLoads);
      p.set("smem_static", v.ptxas->smemStatic);
      e.set("ptxas", p);
    } else {
      e.set("ptxas", Json());
    }
    variants.push_back(e);
  }
  j.set("variants", variants);
  return j;
}

bool readWholeFile(const std::string &path, std::string &out) {
  std::ifstream f(path, std::ios::binary);
  if (!f)
    return false;
  std::stringstream ss;
  ss << f.rdbuf();
  out = ss.str();
  return bool(f) || f.eof();
}

/// Loads a module image with the JIT's error log captured into the message.
CUmodule loadModule(const std::string &image, const std::string &what) {
  const Driver &d = driver();
  char log[8192] = {0};
  int options[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *values[] = {log, reinterpret_cast<void *>(uintptr_t(sizeof log - 1))};
  CUmodule module = nullptr;
  // PTX must be NUL-terminated: std::string's c_str() is.
  CUresult r = d.cuModuleLoadDataEx(&module, image.c_str(), 2, options, values);
  if (r != CUDA_SUCCESS) {
    std::string msg = "cannot load " + what + ": " + describe(r, "cuModuleLoadDataEx");
    if (log[0])
      msg += "\n" + std::string(log);
    throw CudaError(msg, r);
  }
  return module;
}

/// Every tensor of the call must be memory of `dev` that the driver knows: a host
/// pointer would make the kernel fault and leave the context unusable for the process.
void checkDeviceMemory(const Manifest &m, const CheckedCall &c, const DeviceInfo &dev,
                       const char *fn) {
  auto one = [&](const std::string &name, const attn_tensor &t) {
    if (!t.data || spanBytes(t) == 0)
      return; // no lse wanted, or nothing of it is read
    int ordinal = -1;
    CUresult r = driver().cuPointerGetAttribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                                                reinterpret_cast<CUdeviceptr>(t.data));
    if (r != CUDA_SUCCESS)
      throw ArgError(std::string(fn) + ": " + name +
                     " is not device memory (the CUDA driver does not know the pointer; a host "
                     "tensor?)");
    if (ordinal != dev.ordinal)
      throw ArgError(std::string(fn) + ": " + name + " is on CUDA device " +
                     std::to_string(ordinal) + " but the launch runs on device " +
                     std::to_string(dev.ordinal) + " (" + dev.name + ")");
  };
  one("q", c.q);
  one("k", c.k);
  one("v", c.v);
  one("o", c.o);
  one("lse", c.lse);
  for (size_t i = 0; i < c.inputs.size(); ++i)
    one("input '" + m.inputs[i].name + "'", c.inputs[i]);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/// CUDA events destroyed on scope exit.
class Events {
public:
  explicit Events(size_t n) {
    const Driver &d = driver();
    for (size_t i = 0; i < n; ++i) {
      CUevent e = nullptr;
      cu::check(d.cuEventCreate(&e, CU_EVENT_DEFAULT), "cuEventCreate");
      events_.push_back(e);
    }
  }
  ~Events() {
    if (const Driver *d = driverIfLoaded())
      for (CUevent e : events_)
        d->cuEventDestroy(e);
  }
  CUevent operator[](size_t i) const { return events_[i]; }

private:
  std::vector<CUevent> events_;
};

std::string mib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / (1024.0 * 1024.0));
  return buf;
}

} // namespace

Bundle::Bundle(const std::string &dir) : dir_(dir), m_(loadManifest(dir)) {
  // Strip trailing slashes so messages and the info JSON show a clean path.
  while (dir_.size() > 1 && dir_.back() == '/')
    dir_.pop_back();
  info_ = infoJsonOf(dir_, m_).dump();
  loaded_.resize(m_.variants.size());
}

Bundle::~Bundle() {
  const Driver *d = driverIfLoaded();
  if (!d)
    return;
  CUcontext current = nullptr;
  d->cuCtxGetCurrent(&current);
  for (auto &perVariant : loaded_)
    for (Loaded &l : perVariant) {
      // Unload in the module's own context; errors (a context already torn down at
      // exit) are of no consequence here.
      if (d->cuCtxSetCurrent(l.ctx) == CUDA_SUCCESS)
        d->cuModuleUnload(l.module);
    }
  d->cuCtxSetCurrent(current);
}

const DeviceInfo &Bundle::device(const CheckedCall &c) {
  return deviceInfo(ensureContext(c.q.data));
}

std::string Bundle::key(const DeviceInfo &dev, const CheckedCall &c) const {
  return tuningKey(dev.name, dev.smCount, m_.specHash, shapeBucket(c.batch, c.seqQ, c.seqKv));
}

std::string Bundle::tunedName(const DeviceInfo &dev, const CheckedCall &c) {
  std::string k = key(dev, c);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tuned_.find(k);
    if (it != tuned_.end())
      return it->second;
  }
  std::string name;
  try {
    TuningDb db = TuningDb::atDefaultLocation();
    if (auto entry = db.lookup(k))
      name = checkTunedVariant(m_, dir_, k, entry->variant, db.path());
  } catch (const CacheError &) {
    // No cache directory or an unreadable one: nothing is tuned.
  }
  std::lock_guard<std::mutex> lock(mu_);
  tuned_[k] = name;
  return name;
}

std::string Bundle::resourceProblem(const Variant &v, const DeviceInfo &dev,
                                    const unsigned grid[3]) const {
  int64_t smem = v.smemBytes + (v.ptxas ? v.ptxas->smemStatic : 0);
  if (smem > dev.maxSmemOptin)
    return "needs " + std::to_string(smem) + " bytes of shared memory per block; " + dev.name +
           " allows " + std::to_string(dev.maxSmemOptin);
  if (v.threads > dev.maxThreadsPerBlock)
    return "needs " + std::to_string(v.threads) + " threads per block; " + dev.name + " allows " +
           std::to_string(dev.maxThreadsPerBlock);
  const char *axes[] = {"x", "y", "z"};
  for (int a = 0; a < 3; ++a)
    if (int64_t(grid[a]) > dev.maxGrid[a])
      return std::string("grid.") + axes[a] + " = " + std::to_string(grid[a]) + " exceeds " +
             dev.name + "'s limit of " + std::to_string(dev.maxGrid[a]);
  return "";
}

CUfunction Bundle::function(int i, const DeviceInfo &dev) {
  const Driver &d = driver();
  const Variant &v = m_.variants[size_t(i)];
  CUcontext ctx = nullptr;
  cu::check(d.cuCtxGetCurrent(&ctx), "cuCtxGetCurrent");
  std::lock_guard<std::mutex> lock(mu_);
  for (const Loaded &l : loaded_[size_t(i)])
    if (l.ctx == ctx)
      return l.fn;

  CUmodule module = nullptr;
  std::string cubinProblem;
  if (prefersCubin(v, dev.major, dev.minor)) {
    std::string image;
    if (!readWholeFile(dir_ + "/" + *v.cubin, image)) {
      cubinProblem = "cannot read " + *v.cubin;
    } else {
      try {
        module = loadModule(image, *v.cubin);
      } catch (const CudaError &e) {
        cubinProblem = e.what(); // fall back to the PTX below
      }
    }
  }
  if (!module) {
    std::string ptx;
    if (!readWholeFile(dir_ + "/" + v.ptx, ptx))
      throw CudaError("variant " + v.name + ": cannot read " + dir_ + "/" + v.ptx);
    try {
      module = loadModule(ptx, v.ptx);
    } catch (const CudaError &e) {
      throw CudaError("variant " + v.name + ": " + e.what() +
                          (cubinProblem.empty() ? "" : "\n(the cubin was not usable either: " +
                                                           cubinProblem + ")"),
                      e.code);
    }
  }
  CUfunction fn = nullptr;
  CUresult r = d.cuModuleGetFunction(&fn, module, v.kernel.c_str());
  if (r != CUDA_SUCCESS) {
    d.cuModuleUnload(module);
    throw CudaError("variant " + v.name + ": no kernel '" + v.kernel + "' in " + v.ptx + ": " +
                        describe(r, "cuModuleGetFunction"),
                    r);
  }
  // Above 48 KiB of dynamic shared memory a kernel must opt in.
  if (v.smemBytes > 48 * 1024) {
    r = d.cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, int(v.smemBytes));
    if (r != CUDA_SUCCESS) {
      d.cuModuleUnload(module);
      throw CudaError("variant " + v.name + ": cannot allow " + std::to_string(v.smemBytes) +
                          " bytes of dynamic shared memory: " +
                          describe(r, "cuFuncSetAttribute"),
                      r);
    }
  }
  // Registers may limit the block size below what the variant launches with.
  int maxThreads = 0;
  if (d.cuFuncGetAttribute(&maxThreads, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, fn) ==
          CUDA_SUCCESS &&
      maxThreads < v.threads) {
    int regs = 0;
    d.cuFuncGetAttribute(&regs, CU_FUNC_ATTRIBUTE_NUM_REGS, fn);
    d.cuModuleUnload(module);
    throw CudaError("variant " + v.name + ": the kernel uses " + std::to_string(regs) +
                    " registers per thread, which allows at most " + std::to_string(maxThreads) +
                    " threads per block; it launches " + std::to_string(v.threads));
  }
  loaded_[size_t(i)].push_back({ctx, module, fn});
  return fn;
}

CUfunction Bundle::combineFunction(int i, const DeviceInfo &dev) {
  const Variant &v = m_.variants[size_t(i)];
  function(i, dev); // the module, loaded into this context
  CUcontext ctx = nullptr;
  cu::check(driver().cuCtxGetCurrent(&ctx), "cuCtxGetCurrent");
  std::lock_guard<std::mutex> lock(mu_);
  for (Loaded &l : loaded_[size_t(i)]) {
    if (l.ctx != ctx)
      continue;
    if (!l.combine) {
      CUresult r = driver().cuModuleGetFunction(&l.combine, l.module, v.splitKv->kernel.c_str());
      if (r != CUDA_SUCCESS)
        throw CudaError("variant " + v.name + ": no combine kernel '" + v.splitKv->kernel +
                            "' in " + v.ptx + ": " + describe(r, "cuModuleGetFunction"),
                        r);
    }
    return l.combine;
  }
  throw CudaError("variant " + v.name + ": internal error: module not loaded");
}

namespace {
void launchOne(CUfunction f, const unsigned grid[3], int64_t threads, int64_t smem, void *stream,
               std::vector<uint64_t> &slots, const std::string &what) {
  std::vector<void *> args;
  for (uint64_t &s : slots)
    args.push_back(&s);
  CUresult r = driver().cuLaunchKernel(f, grid[0], grid[1], grid[2], unsigned(threads), 1, 1,
                                       unsigned(smem), static_cast<CUstream>(stream),
                                       args.empty() ? nullptr : args.data(), nullptr);
  if (r != CUDA_SUCCESS)
    throw CudaError(what + ": " + describe(r, "cuLaunchKernel"), r);
}

/// Key blocks of the call for variant `v` (its config's block_n), for the split heuristic.
int64_t kvBlocksOf(const Variant &v, const CheckedCall &c) {
  const Json *bn = v.config.find("block_n");
  int64_t n = bn && bn->isInteger() ? bn->asInt() : 0;
  return n > 0 ? (c.seqKv + n - 1) / n : 0;
}
} // namespace

int64_t Bundle::splitsFor(const Variant &v, const DeviceInfo &dev, const CheckedCall &c,
                          int64_t requestedSplits, const char *fn) const {
  if (!v.splitKv)
    return 1;
  unsigned grid[3];
  evalGrid(v, c, fn, grid); // c binds num_splits = 1: the unsplit grid
  return chooseSplits(requestedSplits, int64_t(grid[0]) * grid[1] * grid[2], dev.smCount,
                      kvBlocksOf(v, c));
}

void Bundle::launchVariant(int i, const DeviceInfo &dev, const CheckedCall &c, void *stream,
                           const char *fn, int64_t requestedSplits) {
  const Variant &v = m_.variants[size_t(i)];
  std::string what = std::string(fn) + ": variant " + v.name;
  if (requestedSplits < 0)
    throw ArgError(std::string(fn) + ": num_splits = " + std::to_string(requestedSplits) +
                   ": expected 0 (the runtime's choice), 1 (no split) or more");
  if (!v.splitKv && requestedSplits > 1)
    throw ArgError(what + " cannot split the keys (num_splits = " +
                   std::to_string(requestedSplits) + "): its bundle has no split_kv");
  int64_t splits = splitsFor(v, dev, c, requestedSplits, fn);
  // c binds num_splits = 1; only a split launch pays for a copy that rebinds it.
  CheckedCall rebound;
  if (splits > 1) {
    rebound = c;
    rebound.names["num_splits"] = splits;
  }
  const CheckedCall &call = splits > 1 ? rebound : c;
  unsigned grid[3];
  evalGrid(v, call, fn, grid);
  std::string problem = resourceProblem(v, dev, grid);
  if (!problem.empty())
    throw CudaError(what + ": " + problem);
  CUfunction f = function(i, dev);
  if (splits == 1) {
    std::vector<uint64_t> slots = packParams(v.params, "variant " + v.name, call, {}, fn);
    launchOne(f, grid, v.threads, v.smemBytes, stream, slots, what);
    return;
  }
  // Split-KV: scratch from the stream-ordered pool, freed in stream order after the
  // combine, so concurrent streams never share it.
  const SplitKv &split = *v.splitKv;
  unsigned combineGrid[3];
  evalGrid(split.grid, "variant " + v.name + "'s combine kernel", call, fn, combineGrid);
  CUfunction combine = combineFunction(i, dev);
  const Driver &d = driver();
  if (!d.cuMemAllocAsync || !d.cuMemFreeAsync)
    throw CudaError(what + ": split-KV needs cuMemAllocAsync (CUDA 11.2 or newer driver)");
  std::vector<uint64_t> scratch;
  auto release = [&] {
    for (uint64_t p : scratch)
      d.cuMemFreeAsync(CUdeviceptr(p), static_cast<CUstream>(stream));
  };
  try {
    for (size_t k = 0; k < split.scratchBytes.size(); ++k) {
      int64_t bytes = split.scratchBytes[k].eval(call.names);
      CUdeviceptr p = 0;
      CUresult r = d.cuMemAllocAsync(&p, size_t(std::max<int64_t>(bytes, 1)), static_cast<CUstream>(stream));
      if (r != CUDA_SUCCESS)
        throw CudaError(what + ": scratch '" + split.scratchNames[k] + "' (" + std::to_string(bytes) +
                            " bytes for " + std::to_string(splits) + " splits): " +
                            describe(r, "cuMemAllocAsync"),
                        r);
      scratch.push_back(uint64_t(p));
    }
    std::vector<uint64_t> slots = packParams(v.params, "variant " + v.name, call, scratch, fn);
    launchOne(f, grid, v.threads, v.smemBytes, stream, slots, what);
    std::vector<uint64_t> combineSlots =
        packParams(split.params, "variant " + v.name + "'s combine kernel", call, scratch, fn);
    launchOne(combine, combineGrid, split.threads, 0, stream, combineSlots, what + " (combine)");
  } catch (...) {
    release();
    throw;
  }
  release();
}

int Bundle::choose(const attn_call &call, const CheckedCall &c, const DeviceInfo &dev,
                   const char *fn) {
  std::string forced = call.variant ? call.variant : "";
  std::string tuned = forced.empty() ? tunedName(dev, c) : "";
  return selectVariant(m_, dev.major, dev.minor, forced, tuned, fn);
}

void Bundle::launch(const attn_call &call) {
  const char *fn = "attn_launch";
  CheckedCall c = check(call, fn);
  if (c.empty)
    return;
  const DeviceInfo &dev = device(c);
  checkDeviceMemory(m_, c, dev, fn);
  launchVariant(choose(call, c, dev, fn), dev, c, call.stream, fn, call.num_splits);
}

std::string Bundle::selected(const attn_call &call) {
  const char *fn = "attn_select_variant";
  CheckedCall c = check(call, fn);
  const DeviceInfo &dev = device(c);
  return m_.variants[size_t(choose(call, c, dev, fn))].name;
}

std::optional<std::string> Bundle::tunedChoice(const attn_call &call) {
  CheckedCall c = check(call, "attn_tuned_variant");
  const DeviceInfo &dev = device(c);
  std::string name = tunedName(dev, c);
  if (name.empty())
    return std::nullopt;
  return name;
}

//===----------------------------------------------------------------------===//
// Tuning
//===----------------------------------------------------------------------===//

void Bundle::tune(const attn_call &call, int repeats, bool verbose) {
  const char *fn = "attn_tune";
  if (repeats <= 0)
    repeats = 20;
  const int warmup = 3;
  CheckedCall c = check(call, fn);
  if (c.empty)
    return;
  const DeviceInfo &dev = device(c);
  checkDeviceMemory(m_, c, dev, fn);
  const Driver &d = driver();
  CUstream stream = static_cast<CUstream>(call.stream);
  std::vector<int> candidates = compatibleVariants(m_, dev.major, dev.minor);
  if (candidates.empty())
    selectVariant(m_, dev.major, dev.minor, "", "", fn); // throws the explanation
  std::string k = key(dev, c);
  std::string bucket = shapeBucket(c.batch, c.seqQ, c.seqKv);

  // Rotating copies of q, k and v, so that each timed run reads inputs that the
  // previous runs did not leave in L2: enough copies to cycle through ~3x the L2 size,
  // at most 8 sets, and at most min(1 GiB, a quarter of free memory) extra.
  uint64_t setBytes = spanBytes(c.q) + spanBytes(c.k) + spanBytes(c.v);
  size_t freeMem = 0, totalMem = 0;
  cu::check(d.cuMemGetInfo(&freeMem, &totalMem), "cuMemGetInfo");
  uint64_t target = 3 * uint64_t(dev.l2Bytes);
  int sets = setBytes == 0 ? 1 : int(std::min<uint64_t>(8, (target + setBytes - 1) / setBytes));
  uint64_t cap = std::min<uint64_t>(uint64_t(1) << 30, freeMem / 4);
  while (sets > 1 && uint64_t(sets - 1) * setBytes > cap)
    --sets;
  DeviceBuffers buffers;
  std::vector<CheckedCall> rotation(1, c);
  for (int s = 1; s < sets; ++s) {
    CheckedCall copy = c;
    for (attn_tensor *t : {&copy.q, &copy.k, &copy.v}) {
      uint64_t bytes = spanBytes(*t);
      if (!bytes)
        continue;
      CUdeviceptr p = buffers.alloc(bytes);
      cu::check(d.cuMemcpyDtoD(p, reinterpret_cast<CUdeviceptr>(t->data), bytes), "cuMemcpyDtoD");
      t->data = reinterpret_cast<void *>(p);
    }
    rotation.push_back(copy);
  }
  cu::check(d.cuCtxSynchronize(), "cuCtxSynchronize");

  double flops = 2.0 * double(c.batch) * double(c.headsQ) * double(c.seqQ) * double(c.seqKv) *
                 double(c.headDim + c.headDimV);
  if (verbose) {
    std::fprintf(stderr,
                 "attune: tuning %s (spec %.12s) on %s (compute capability %d.%d, %d SMs), "
                 "bucket %s\n",
                 m_.specName.c_str(), m_.specHash.c_str(), dev.name.c_str(), dev.major, dev.minor,
                 dev.smCount, bucket.c_str());
    std::fprintf(stderr,
                 "attune:   %zu candidate variants, %d warm-up + %d timed runs each, %d rotating "
                 "set(s) of q/k/v (%s extra)\n",
                 candidates.size(), warmup, repeats, sets,
                 mib(double(sets - 1) * double(setBytes)).c_str());
  }

  TuningEntry entry;
  std::vector<std::pair<int, double>> timed;
  Events events(size_t(repeats) + 1);
  for (size_t n = 0; n < candidates.size(); ++n) {
    int i = candidates[n];
    const Variant &v = m_.variants[size_t(i)];
    if (verbose)
      std::fprintf(stderr, "attune:   [%zu/%zu] %-28s ", n + 1, candidates.size(), v.name.c_str());
    std::string why;
    try {
      for (int r = 0; r < warmup; ++r)
        launchVariant(i, dev, rotation[size_t(r) % rotation.size()], stream, fn, call.num_splits);
    } catch (const std::exception &e) {
      why = e.what();
    }
    if (!why.empty()) {
      // Loading, resource and launch-configuration failures leave the context usable.
      if (why.compare(0, 11, "attn_tune: ") == 0)
        why = why.substr(11);
      if (why.compare(0, 8 + v.name.size() + 2, "variant " + v.name + ": ") == 0)
        why = why.substr(8 + v.name.size() + 2);
      entry.rejected.push_back({v.name, why});
      if (verbose)
        std::fprintf(stderr, "rejected: %s\n", why.c_str());
      continue;
    }
    // A fault while running is sticky: the context is unusable, stop here.
    CUresult r = d.cuStreamSynchronize(stream);
    if (r != CUDA_SUCCESS) {
      if (verbose)
        std::fprintf(stderr, "failed\n");
      throw CudaError(std::string(fn) + ": variant " + v.name + " failed while running: " +
                          describe(r, "cuStreamSynchronize") +
                          " (the CUDA context is no longer usable)",
                      r);
    }
    cu::check(d.cuEventRecord(events[0], stream), "cuEventRecord");
    for (int rep = 0; rep < repeats; ++rep) {
      launchVariant(i, dev, rotation[size_t(rep + warmup) % rotation.size()], stream, fn,
                    call.num_splits);
      cu::check(d.cuEventRecord(events[size_t(rep) + 1], stream), "cuEventRecord");
    }
    r = d.cuEventSynchronize(events[size_t(repeats)]);
    if (r != CUDA_SUCCESS)
      throw CudaError(std::string(fn) + ": variant " + v.name + " failed while running: " +
                          describe(r, "cuEventSynchronize") +
                          " (the CUDA context is no longer usable)",
                      r);
    std::vector<double> ms;
    for (int rep = 0; rep < repeats; ++rep) {
      float t = 0;
      cu::check(d.cuEventElapsedTime(&t, events[size_t(rep)], events[size_t(rep) + 1]),
            "cuEventElapsedTime");
      ms.push_back(double(t));
    }
    double med = median(ms);
    timed.push_back({i, med});
    entry.candidates.push_back({v.name, med});
    if (verbose)
      std::fprintf(stderr, "%.4f ms\n", med);
  }

  if (timed.empty()) {
    std::string why;
    for (const auto &[name, reason] : entry.rejected)
      why += "\n  " + name + ": " + reason;
    throw CudaError(std::string(fn) + ": no variant of " + m_.specName + " could run on " +
                    dev.name + ":" + why);
  }
  auto best = *std::min_element(timed.begin(), timed.end(),
                                [](const auto &a, const auto &b) { return a.second < b.second; });
  const Variant &winner = m_.variants[size_t(best.first)];
  entry.variant = winner.name;
  entry.timeMs = best.second;
  entry.when = isoTimeNow();

  if (verbose) {
    std::fprintf(stderr, "attune: %-30s %-7s %-40s %6s %10s %12s\n", "variant", "arch", "config",
                 "splits", "median ms", "TFLOP/s*");
    for (const auto &[i, ms] : timed) {
      const Variant &v = m_.variants[size_t(i)];
      int64_t splits = splitsFor(v, dev, c, call.num_splits, fn);
      std::fprintf(stderr, "attune: %-30s %-7s %-40s %6lld %10.4f %12.1f%s\n", v.name.c_str(),
                   v.arch.c_str(), v.configSummary().c_str(), static_cast<long long>(splits), ms,
                   flops / (ms * 1e-3) / 1e12,
                   i == best.first ? "  <- fastest" : "");
    }
    for (const auto &[name, why] : entry.rejected)
      std::fprintf(stderr, "attune: %-30s rejected: %s\n", name.c_str(), why.c_str());
    std::fprintf(stderr,
                 "attune: (* dense-equivalent: 2*B*Hq*Sq*Skv*(D+Dv) flops, whatever the mask "
                 "skips)\n");
  }

  {
    std::lock_guard<std::mutex> lock(mu_);
    tuned_[k] = winner.name;
  }
  try {
    TuningDb db = TuningDb::atDefaultLocation();
    db.store(k, entry);
    if (verbose)
      std::fprintf(stderr, "attune: stored %s for \"%s\" in %s\n", winner.name.c_str(), k.c_str(),
                   db.path().c_str());
  } catch (const CacheError &e) {
    // The choice is still used by this process; only persistence failed.
    std::fprintf(stderr, "attune: warning: could not store the tuning result: %s\n", e.what());
  }

  // Leave the winner's result in the caller's outputs.
  launchVariant(best.first, dev, c, stream, fn, call.num_splits);
}

} // namespace attune::rt
