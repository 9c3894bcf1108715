//===- CudaDevice.cpp - the CUDA driver behind the runtime's Device -------===//
#include "Device.h"

#include "Bundle.h"

#include <deque>
#include <fstream>
#include <mutex>
#include <sstream>

namespace attune::rt {

using namespace cu;

namespace {

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

class CudaDevice final : public Device {
public:
  ~CudaDevice() override {
    const Driver *d = driverIfLoaded();
    if (!d)
      return;
    CUcontext current = nullptr;
    d->cuCtxGetCurrent(&current);
    for (Loaded &l : loaded_) {
      // Unload in the module's own context; errors (a context already torn down at
      // exit) are of no consequence here.
      if (d->cuCtxSetCurrent(l.ctx) == CUDA_SUCCESS)
        d->cuModuleUnload(l.module);
    }
    d->cuCtxSetCurrent(current);
  }

  const DeviceInfo &open(const CheckedCall &c) override {
    return deviceInfo(ensureContext(c.q.data));
  }

  /// Every tensor of the call must be memory of `dev` that the driver knows: a host
  /// pointer would make the kernel fault and leave the context unusable for the process.
  void checkMemory(const Manifest &m, const CheckedCall &c, const DeviceInfo &dev,
                   const char *fn) override {
    auto one = [&](const std::string &name, const attn_tensor &t) {
      if (!t.data || spanBytes(t) == 0)
        return; // no lse wanted, or nothing of it is read
      int ordinal = -1;
      CUresult r = driver().cuPointerGetAttribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                                                  reinterpret_cast<CUdeviceptr>(t.data));
      if (r != CUDA_SUCCESS)
        throw ArgError(std::string(fn) + ": " + name +
                       " is not device memory (the CUDA driver does not know the pointer; a "
                       "host tensor?)");
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
    one("cu_seqlens_q", c.cuSeqlensQ);
    one("cu_seqlens_kv", c.cuSeqlensKv);
    one("page_table", c.pageTable);
    one("kv_lens", c.kvLens);
    one("q_lens", c.qLens);
  }

  void prepare(const Manifest &m, const std::string &dir, int index,
               const DeviceInfo &dev) override {
    loaded(m, dir, index, dev);
  }

  void launch(const Manifest &m, const Launch &l) override {
    Loaded &mod = current(l.variant);
    CUfunction f = mod.fn;
    if (l.combine) {
      const Variant &v = m.variants[size_t(l.variant)];
      std::lock_guard<std::mutex> lock(mu_);
      if (!mod.combine) {
        CUresult r = driver().cuModuleGetFunction(&mod.combine, mod.module, v.splitKv->kernel.c_str());
        if (r != CUDA_SUCCESS)
          throw CudaError("variant " + v.name + ": no combine kernel '" + v.splitKv->kernel +
                              "' in " + v.ptx + ": " + describe(r, "cuModuleGetFunction"),
                          r);
      }
      f = mod.combine;
    }
    std::vector<uint64_t> slots = l.slots;
    std::vector<void *> args;
    for (uint64_t &s : slots)
      args.push_back(&s);
    CUresult r = driver().cuLaunchKernel(f, l.grid[0], l.grid[1], l.grid[2], unsigned(l.threads),
                                         1, 1, unsigned(l.smemBytes),
                                         static_cast<CUstream>(l.stream),
                                         args.empty() ? nullptr : args.data(), nullptr);
    if (r != CUDA_SUCCESS)
      throw CudaError(l.what + ": " + describe(r, "cuLaunchKernel"), r);
  }

  uint64_t allocScratch(size_t bytes, void *stream, const std::string &what) override {
    const Driver &d = driver();
    if (!d.cuMemAllocAsync || !d.cuMemFreeAsync)
      throw CudaError(what + ": split-KV needs cuMemAllocAsync (CUDA 11.2 or newer driver)");
    CUdeviceptr p = 0;
    CUresult r = d.cuMemAllocAsync(&p, bytes ? bytes : 1, static_cast<CUstream>(stream));
    if (r != CUDA_SUCCESS)
      throw CudaError(what + ": " + describe(r, "cuMemAllocAsync"), r);
    return uint64_t(p);
  }
  void freeScratch(uint64_t p, void *stream) override {
    if (const Driver *d = driverIfLoaded(); d && d->cuMemFreeAsync)
      d->cuMemFreeAsync(CUdeviceptr(p), static_cast<CUstream>(stream));
  }

  uint64_t alloc(size_t bytes) override {
    CUdeviceptr p = 0;
    cu::check(driver().cuMemAlloc(&p, bytes ? bytes : 1), "cuMemAlloc");
    return uint64_t(p);
  }
  void free(uint64_t p) override {
    if (const Driver *d = driverIfLoaded())
      d->cuMemFree(CUdeviceptr(p));
  }
  void copy(uint64_t dst, uint64_t src, size_t bytes) override {
    cu::check(driver().cuMemcpyDtoD(CUdeviceptr(dst), CUdeviceptr(src), bytes), "cuMemcpyDtoD");
  }
  void download(void *dst, uint64_t src, size_t bytes) override {
    cu::check(driver().cuMemcpyDtoH(dst, CUdeviceptr(src), bytes), "cuMemcpyDtoH");
  }
  size_t freeMemory() override {
    size_t freeMem = 0, totalMem = 0;
    cu::check(driver().cuMemGetInfo(&freeMem, &totalMem), "cuMemGetInfo");
    return freeMem;
  }
  std::string synchronize(void *stream) override {
    CUresult r = driver().cuStreamSynchronize(static_cast<CUstream>(stream));
    return r == CUDA_SUCCESS ? "" : describe(r, "cuStreamSynchronize");
  }
  void synchronizeAll() override { cu::check(driver().cuCtxSynchronize(), "cuCtxSynchronize"); }
  bool survivesFaults() const override { return false; }
  bool hostAddressable() const override { return false; }
  int warmupRuns() const override { return 3; }

  std::vector<double> time(void *stream, int repeats,
                           const std::function<void(int)> &run) override {
    const Driver &d = driver();
    CUstream s = static_cast<CUstream>(stream);
    Events events(size_t(repeats) + 1);
    cu::check(d.cuEventRecord(events[0], s), "cuEventRecord");
    for (int rep = 0; rep < repeats; ++rep) {
      run(rep);
      cu::check(d.cuEventRecord(events[size_t(rep) + 1], s), "cuEventRecord");
    }
    CUresult r = d.cuEventSynchronize(events[size_t(repeats)]);
    if (r != CUDA_SUCCESS)
      throw CudaError("failed while running: " + describe(r, "cuEventSynchronize") +
                          " (the CUDA context is no longer usable)",
                      r);
    std::vector<double> ms;
    for (int rep = 0; rep < repeats; ++rep) {
      float t = 0;
      cu::check(d.cuEventElapsedTime(&t, events[size_t(rep)], events[size_t(rep) + 1]),
                "cuEventElapsedTime");
      ms.push_back(double(t));
    }
    return ms;
  }

private:
  struct Loaded {
    int variant = 0;
    CUcontext ctx = nullptr;
    CUmodule module = nullptr;
    CUfunction fn = nullptr;
    CUfunction combine = nullptr; // split_kv's, looked up on first use
  };

  /// Variant `index`'s module in the current context (prepare loaded it).
  Loaded &current(int index) {
    CUcontext ctx = nullptr;
    cu::check(driver().cuCtxGetCurrent(&ctx), "cuCtxGetCurrent");
    std::lock_guard<std::mutex> lock(mu_);
    for (Loaded &l : loaded_)
      if (l.variant == index && l.ctx == ctx)
        return l;
    throw CudaError("internal error: variant " + std::to_string(index) +
                    " launched before it was loaded into this context");
  }

  /// Loads variant `index` into the current context (once per context), with the
  /// dynamic shared-memory limit raised as needed.
  void loaded(const Manifest &m, const std::string &dir, int index, const DeviceInfo &dev) {
    const Driver &d = driver();
    const Variant &v = m.variants[size_t(index)];
    CUcontext ctx = nullptr;
    cu::check(d.cuCtxGetCurrent(&ctx), "cuCtxGetCurrent");
    std::lock_guard<std::mutex> lock(mu_);
    for (const Loaded &l : loaded_)
      if (l.variant == index && l.ctx == ctx)
        return;

    CUmodule module = nullptr;
    std::string cubinProblem;
    if (prefersCubin(v, dev.major, dev.minor)) {
      std::string image;
      if (!readWholeFile(dir + "/" + *v.cubin, image)) {
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
      if (!readWholeFile(dir + "/" + v.ptx, ptx))
        throw CudaError("variant " + v.name + ": cannot read " + dir + "/" + v.ptx);
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
    loaded_.push_back({index, ctx, module, fn, nullptr});
  }

  std::mutex mu_;
  std::deque<Loaded> loaded_; // references stay valid as entries are added
};

} // namespace

std::unique_ptr<Device> makeCudaDevice() { return std::make_unique<CudaDevice>(); }

} // namespace attune::rt
