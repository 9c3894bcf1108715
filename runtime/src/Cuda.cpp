//===- Cuda.cpp - the CUDA driver, loaded at run time ---------------------===//
#include "Cuda.h"

#include <dlfcn.h>

#include <cstdlib>
#include <map>
#include <mutex>

namespace attune::rt::cu {

namespace {

/// Looks up the first of `names` the library exports.
template <typename Fn>
bool bind(void *handle, Fn &slot, std::initializer_list<const char *> names) {
  for (const char *n : names)
    if (void *sym = dlsym(handle, n)) {
      slot = reinterpret_cast<Fn>(sym);
      return true;
    }
  return false;
}

} // namespace

Driver loadDriver(const std::string &path) {
  Driver d;
  dlerror();
  d.handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!d.handle) {
    const char *why = dlerror();
    d.error = "no CUDA driver: " + path + " could not be loaded: " + (why ? why : "unknown error");
    return d;
  }
  std::string missing;
  auto need = [&](bool ok, const char *name) {
    if (!ok)
      missing += (missing.empty() ? "" : ", ") + std::string(name);
  };
  void *h = d.handle;
  need(bind(h, d.cuInit, {"cuInit"}), "cuInit");
  need(bind(h, d.cuDriverGetVersion, {"cuDriverGetVersion"}), "cuDriverGetVersion");
  need(bind(h, d.cuDeviceGet, {"cuDeviceGet"}), "cuDeviceGet");
  need(bind(h, d.cuDeviceGetCount, {"cuDeviceGetCount"}), "cuDeviceGetCount");
  need(bind(h, d.cuDeviceGetAttribute, {"cuDeviceGetAttribute"}), "cuDeviceGetAttribute");
  need(bind(h, d.cuDeviceGetName, {"cuDeviceGetName"}), "cuDeviceGetName");
  need(bind(h, d.cuDeviceTotalMem, {"cuDeviceTotalMem_v2", "cuDeviceTotalMem"}), "cuDeviceTotalMem");
  need(bind(h, d.cuCtxGetCurrent, {"cuCtxGetCurrent"}), "cuCtxGetCurrent");
  need(bind(h, d.cuCtxSetCurrent, {"cuCtxSetCurrent"}), "cuCtxSetCurrent");
  need(bind(h, d.cuCtxGetDevice, {"cuCtxGetDevice"}), "cuCtxGetDevice");
  need(bind(h, d.cuCtxSynchronize, {"cuCtxSynchronize"}), "cuCtxSynchronize");
  need(bind(h, d.cuDevicePrimaryCtxRetain, {"cuDevicePrimaryCtxRetain"}), "cuDevicePrimaryCtxRetain");
  need(bind(h, d.cuModuleLoadData, {"cuModuleLoadData"}), "cuModuleLoadData");
  need(bind(h, d.cuModuleLoadDataEx, {"cuModuleLoadDataEx"}), "cuModuleLoadDataEx");
  need(bind(h, d.cuModuleGetFunction, {"cuModuleGetFunction"}), "cuModuleGetFunction");
  need(bind(h, d.cuModuleUnload, {"cuModuleUnload"}), "cuModuleUnload");
  need(bind(h, d.cuFuncSetAttribute, {"cuFuncSetAttribute"}), "cuFuncSetAttribute");
  need(bind(h, d.cuFuncGetAttribute, {"cuFuncGetAttribute"}), "cuFuncGetAttribute");
  need(bind(h, d.cuLaunchKernel, {"cuLaunchKernel"}), "cuLaunchKernel");
  need(bind(h, d.cuEventCreate, {"cuEventCreate"}), "cuEventCreate");
  need(bind(h, d.cuEventRecord, {"cuEventRecord"}), "cuEventRecord");
  need(bind(h, d.cuEventSynchronize, {"cuEventSynchronize"}), "cuEventSynchronize");
  need(bind(h, d.cuEventElapsedTime, {"cuEventElapsedTime_v2", "cuEventElapsedTime"}),
       "cuEventElapsedTime");
  need(bind(h, d.cuEventDestroy, {"cuEventDestroy_v2", "cuEventDestroy"}), "cuEventDestroy");
  need(bind(h, d.cuStreamSynchronize, {"cuStreamSynchronize"}), "cuStreamSynchronize");
  need(bind(h, d.cuMemAlloc, {"cuMemAlloc_v2"}), "cuMemAlloc_v2");
  need(bind(h, d.cuMemFree, {"cuMemFree_v2"}), "cuMemFree_v2");
  bind(h, d.cuMemAllocAsync, {"cuMemAllocAsync"});
  bind(h, d.cuMemFreeAsync, {"cuMemFreeAsync"});
  need(bind(h, d.cuMemGetInfo, {"cuMemGetInfo_v2"}), "cuMemGetInfo_v2");
  need(bind(h, d.cuMemcpyDtoD, {"cuMemcpyDtoD_v2"}), "cuMemcpyDtoD_v2");
  need(bind(h, d.cuMemcpyHtoD, {"cuMemcpyHtoD_v2"}), "cuMemcpyHtoD_v2");
  need(bind(h, d.cuMemcpyDtoH, {"cuMemcpyDtoH_v2"}), "cuMemcpyDtoH_v2");
  need(bind(h, d.cuMemsetD8, {"cuMemsetD8_v2"}), "cuMemsetD8_v2");
  need(bind(h, d.cuPointerGetAttribute, {"cuPointerGetAttribute"}), "cuPointerGetAttribute");
  need(bind(h, d.cuGetErrorString, {"cuGetErrorString"}), "cuGetErrorString");
  need(bind(h, d.cuGetErrorName, {"cuGetErrorName"}), "cuGetErrorName");
  if (!missing.empty()) {
    d.error = "no usable CUDA driver: " + path + " lacks " + missing + " (driver too old?)";
    dlclose(d.handle);
    d.handle = nullptr;
    return d;
  }
  d.loaded = true;
  return d;
}

namespace {

std::string describeWith(const Driver &d, CUresult r, const char *call) {
  const char *name = nullptr, *text = nullptr;
  if (d.cuGetErrorName)
    d.cuGetErrorName(r, &name);
  if (d.cuGetErrorString)
    d.cuGetErrorString(r, &text);
  std::string out = std::string(call) + ": " + (name ? name : "CUDA error " + std::to_string(r));
  if (text)
    out += std::string(" (") + text + ")";
  return out;
}

Driver &processDriver() {
  static Driver d = [] {
    const char *env = std::getenv("ATTUNE_LIBCUDA");
    Driver loaded = loadDriver(env && *env ? env : "libcuda.so.1");
    if (loaded.loaded) {
      CUresult r = loaded.cuInit(0);
      if (r != CUDA_SUCCESS) {
        // Typically CUDA_ERROR_NO_DEVICE (100) on a machine with a driver but no GPU.
        loaded.error = "CUDA driver present but unusable: " + describeWith(loaded, r, "cuInit");
        loaded.loaded = false;
      }
    }
    return loaded;
  }();
  return d;
}

} // namespace

const Driver &driver() {
  const Driver &d = processDriver();
  if (!d.loaded)
    throw CudaError(d.error);
  return d;
}

const Driver *driverIfLoaded() {
  const Driver &d = processDriver();
  return d.loaded ? &d : nullptr;
}

std::string describe(CUresult r, const char *call) {
  return describeWith(processDriver(), r, call);
}

void check(CUresult r, const char *call) {
  if (r != CUDA_SUCCESS)
    throw CudaError(describe(r, call), r);
}

CUdevice ensureContext(const void *hint) {
  const Driver &d = driver();
  CUcontext ctx = nullptr;
  check(d.cuCtxGetCurrent(&ctx), "cuCtxGetCurrent");
  CUdevice dev = 0;
  if (ctx) {
    // PyTorch (or the host application) already made one current: use it, so that
    // kernels run in the context that owns the tensors.
    check(d.cuCtxGetDevice(&dev), "cuCtxGetDevice");
    return dev;
  }
  int ordinal = 0;
  if (hint && d.cuPointerGetAttribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                                      reinterpret_cast<CUdeviceptr>(hint)) != CUDA_SUCCESS)
    ordinal = 0; // not a device pointer the driver knows: fall back to device 0
  check(d.cuDeviceGet(&dev, ordinal), "cuDeviceGet");
  check(d.cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain");
  check(d.cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
  return dev;
}

const DeviceInfo &deviceInfo(CUdevice dev) {
  static std::mutex mu;
  static std::map<CUdevice, DeviceInfo> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(dev);
  if (it != cache.end())
    return it->second;
  const Driver &d = driver();
  DeviceInfo info;
  info.ordinal = dev;
  char name[256] = {0};
  check(d.cuDeviceGetName(name, sizeof name - 1, dev), "cuDeviceGetName");
  info.name = name;
  auto attr = [&](int a) {
    int v = 0;
    check(d.cuDeviceGetAttribute(&v, a, dev), "cuDeviceGetAttribute");
    return v;
  };
  info.major = attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
  info.minor = attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
  info.smCount = attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
  info.maxThreadsPerBlock = attr(CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK);
  info.maxSmemOptin = attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
  info.l2Bytes = attr(CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE);
  info.maxGrid[0] = attr(CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X);
  info.maxGrid[1] = attr(CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y);
  info.maxGrid[2] = attr(CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z);
  check(d.cuDeviceTotalMem(&info.totalMem, dev), "cuDeviceTotalMem");
  return cache.emplace(dev, info).first->second;
}

DeviceBuffers::~DeviceBuffers() {
  if (const Driver *d = driverIfLoaded())
    for (CUdeviceptr p : ptrs_)
      d->cuMemFree(p);
}

CUdeviceptr DeviceBuffers::alloc(size_t bytes) {
  CUdeviceptr p = 0;
  check(driver().cuMemAlloc(&p, bytes ? bytes : 1), "cuMemAlloc");
  ptrs_.push_back(p);
  return p;
}

CUdeviceptr DeviceBuffers::upload(const void *data, size_t bytes) {
  CUdeviceptr p = alloc(bytes);
  if (bytes)
    check(driver().cuMemcpyHtoD(p, data, bytes), "cuMemcpyHtoD");
  return p;
}

} // namespace attune::rt::cu
