//===- Cuda.h - the CUDA driver, loaded at run time -------------*- C++ -*-===//
//
// The runtime has no link-time CUDA dependency: libcuda.so.1 is dlopen'ed on first use
// and the few entry points it needs are declared here (cuda.h is not included, so the
// runtime builds where no CUDA toolkit exists). Where the driver exports versioned
// symbols (cuMemAlloc_v2, ...) those are used, as cuda.h's macros would.
//
// $ATTUNE_LIBCUDA overrides the library path (tests use it to exercise the no-driver
// path on a machine that has one).
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_RUNTIME_CUDA_H
#define ATTUNE_RUNTIME_CUDA_H

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace attune::rt::cu {

// The driver API's types, as the ABI defines them.
using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;

constexpr CUresult CUDA_SUCCESS = 0;

// CUdevice_attribute values.
constexpr int CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 1;
constexpr int CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X = 5;
constexpr int CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y = 6;
constexpr int CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z = 7;
constexpr int CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
constexpr int CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE = 38;
constexpr int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
constexpr int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
constexpr int CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97;
// CUfunction_attribute values.
constexpr int CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 0;
constexpr int CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES = 1;
constexpr int CU_FUNC_ATTRIBUTE_NUM_REGS = 4;
constexpr int CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
// CUjit_option values.
constexpr int CU_JIT_INFO_LOG_BUFFER = 3;
constexpr int CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES = 4;
constexpr int CU_JIT_ERROR_LOG_BUFFER = 5;
constexpr int CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6;
// CUpointer_attribute values.
constexpr int CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL = 9;
// CUevent_flags.
constexpr unsigned CU_EVENT_DEFAULT = 0;

/// The entry points the runtime uses. Null members mean "not loaded".
struct Driver {
  bool loaded = false;
  std::string error; // why not loaded: "no CUDA driver: libcuda.so.1 could not be loaded: ..."
  void *handle = nullptr;

  CUresult (*cuInit)(unsigned) = nullptr;
  CUresult (*cuDriverGetVersion)(int *) = nullptr;
  CUresult (*cuDeviceGet)(CUdevice *, int) = nullptr;
  CUresult (*cuDeviceGetCount)(int *) = nullptr;
  CUresult (*cuDeviceGetAttribute)(int *, int, CUdevice) = nullptr;
  CUresult (*cuDeviceGetName)(char *, int, CUdevice) = nullptr;
  CUresult (*cuDeviceTotalMem)(size_t *, CUdevice) = nullptr;
  CUresult (*cuCtxGetCurrent)(CUcontext *) = nullptr;
  CUresult (*cuCtxSetCurrent)(CUcontext) = nullptr;
  CUresult (*cuCtxGetDevice)(CUdevice *) = nullptr;
  CUresult (*cuCtxSynchronize)() = nullptr;
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice) = nullptr;
  CUresult (*cuModuleLoadData)(CUmodule *, const void *) = nullptr;
  CUresult (*cuModuleLoadDataEx)(CUmodule *, const void *, unsigned, int *, void **) = nullptr;
  CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *) = nullptr;
  CUresult (*cuModuleUnload)(CUmodule) = nullptr;
  CUresult (*cuFuncSetAttribute)(CUfunction, int, int) = nullptr;
  CUresult (*cuFuncGetAttribute)(int *, int, CUfunction) = nullptr;
  CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                             unsigned, unsigned, CUstream, void **, void **) = nullptr;
  CUresult (*cuEventCreate)(CUevent *, unsigned) = nullptr;
  CUresult (*cuEventRecord)(CUevent, CUstream) = nullptr;
  CUresult (*cuEventSynchronize)(CUevent) = nullptr;
  CUresult (*cuEventElapsedTime)(float *, CUevent, CUevent) = nullptr;
  CUresult (*cuEventDestroy)(CUevent) = nullptr;
  CUresult (*cuStreamSynchronize)(CUstream) = nullptr;
  CUresult (*cuMemAlloc)(CUdeviceptr *, size_t) = nullptr;
  CUresult (*cuMemFree)(CUdeviceptr) = nullptr;
  // Stream-ordered allocation (CUDA 11.2+) for split-KV scratch; optional.
  CUresult (*cuMemAllocAsync)(CUdeviceptr *, size_t, CUstream) = nullptr;
  CUresult (*cuMemFreeAsync)(CUdeviceptr, CUstream) = nullptr;
  CUresult (*cuMemGetInfo)(size_t *, size_t *) = nullptr;
  CUresult (*cuMemcpyDtoD)(CUdeviceptr, CUdeviceptr, size_t) = nullptr;
  CUresult (*cuMemcpyHtoD)(CUdeviceptr, const void *, size_t) = nullptr;
  CUresult (*cuMemcpyDtoH)(void *, CUdeviceptr, size_t) = nullptr;
  CUresult (*cuMemsetD8)(CUdeviceptr, unsigned char, size_t) = nullptr;
  CUresult (*cuPointerGetAttribute)(void *, int, CUdeviceptr) = nullptr;
  CUresult (*cuGetErrorString)(CUresult, const char **) = nullptr;
  CUresult (*cuGetErrorName)(CUresult, const char **) = nullptr;
};

/// A driver call failed, or there is no driver.
class CudaError : public std::runtime_error {
public:
  CudaError(const std::string &message, CUresult code = -1)
      : std::runtime_error(message), code(code) {}
  CUresult code;
};

/// Loads the driver from `path` (not cached: tests use it with bogus paths). On failure
/// `loaded` is false and `error` says why.
Driver loadDriver(const std::string &path);

/// The process's driver: loaded once from $ATTUNE_LIBCUDA or "libcuda.so.1", and
/// cuInit(0) called. Throws CudaError with the no-driver message when it cannot.
const Driver &driver();

/// The driver if it loaded, else nullptr (never throws; for clean-up paths).
const Driver *driverIfLoaded();

/// "cuLaunchKernel: CUDA_ERROR_INVALID_VALUE (invalid argument)".
std::string describe(CUresult r, const char *call);

/// Throws CudaError(describe(r, call)) unless r is CUDA_SUCCESS.
void check(CUresult r, const char *call);

struct DeviceInfo {
  int ordinal = 0;
  std::string name;
  int major = 0, minor = 0, smCount = 0;
  int maxThreadsPerBlock = 0, maxSmemOptin = 0, l2Bytes = 0;
  int maxGrid[3] = {0, 0, 0};
  size_t totalMem = 0;
};

/// Makes sure a context is current: the current one if any, else the primary context
/// of the device `hint` (a device pointer, may be null) lives on, else device 0.
/// Returns the device of the context now current.
CUdevice ensureContext(const void *hint);

/// Properties of `dev` (cached).
const DeviceInfo &deviceInfo(CUdevice dev);

/// Allocations in the current context, freed on scope exit.
class DeviceBuffers {
public:
  DeviceBuffers() = default;
  DeviceBuffers(const DeviceBuffers &) = delete;
  DeviceBuffers &operator=(const DeviceBuffers &) = delete;
  ~DeviceBuffers();
  CUdeviceptr alloc(size_t bytes);
  /// alloc() filled with `bytes` bytes of `data`.
  CUdeviceptr upload(const void *data, size_t bytes);

private:
  std::vector<CUdeviceptr> ptrs_;
};

} // namespace attune::rt::cu

#endif
