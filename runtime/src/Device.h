//===- Device.h - what the runtime launches kernels through -----*- C++ -*-===//
//
// The runtime computes everything about a launch from the manifest and the call
// (Args.h: argument checks, parameter slots, grids, scratch sizes) and hands the
// result to a Device, which only loads and runs kernels and moves memory. Two
// implementations:
//   - the CUDA driver (makeCudaDevice, CudaDevice.cpp): PTX/cubin modules per context,
//     cuLaunchKernel, stream-ordered scratch, CUDA events;
//   - the simulated device of the compiler (codegen/bundle/SimDevice.h): runs each
//     variant's kernel IR on the functional SIMT simulator, so that `attnc run
//     --backend gpu-sim` and `attnc tune --backend gpu-sim` exercise this runtime's
//     binding exactly as a GPU run does.
// Device addresses are uint64_t: CUdeviceptr for CUDA, host addresses for the
// simulator.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_RUNTIME_DEVICE_H
#define ATTUNE_RUNTIME_DEVICE_H

#include "Args.h"
#include "Cuda.h"
#include "Manifest.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace attune::rt {

/// One kernel launch as the runtime computed it.
struct Launch {
  int variant = 0;      // index into the manifest's variants
  bool combine = false; // the variant's split_kv combine kernel, else its main kernel
  unsigned grid[3] = {1, 1, 1};
  int64_t threads = 0, smemBytes = 0;
  void *stream = nullptr;
  const std::vector<Param> *params = nullptr;
  std::vector<uint64_t> slots; // packParams: one 8-byte slot per parameter
  std::vector<uint64_t> bytes; // per parameter: bytes a pointer may reach, 0 for scalars
  std::string what;            // "attn_launch: variant X" for messages
};

class Device {
public:
  virtual ~Device() = default;

  /// The device a call runs on. CUDA: makes a context current (the current one, else
  /// the primary context of q's device).
  virtual const cu::DeviceInfo &open(const CheckedCall &c) = 0;
  /// Refuses (ArgError, prefixed with `fn`) tensors this device cannot reach.
  virtual void checkMemory(const Manifest &m, const CheckedCall &c, const cu::DeviceInfo &dev,
                           const char *fn) = 0;
  /// Makes variant `index`'s kernels ready to launch (CUDA: loads its module into the
  /// current context once; the bundle's files live in `dir`). Throws CudaError naming
  /// the variant when it cannot.
  virtual void prepare(const Manifest &m, const std::string &dir, int index,
                       const cu::DeviceInfo &dev) = 0;
  /// Launches (asynchronously on CUDA). Throws CudaError when the launch is refused.
  virtual void launch(const Manifest &m, const Launch &l) = 0;

  /// Stream-ordered scratch memory (split-KV partials).
  virtual uint64_t allocScratch(size_t bytes, void *stream, const std::string &what) = 0;
  virtual void freeScratch(uint64_t p, void *stream) = 0;
  /// Plain device memory (the tuner's rotating input copies), and copies.
  virtual uint64_t alloc(size_t bytes) = 0;
  virtual void free(uint64_t p) = 0;
  virtual void copy(uint64_t dst, uint64_t src, size_t bytes) = 0;
  virtual void download(void *dst, uint64_t src, size_t bytes) = 0;
  virtual size_t freeMemory() = 0;
  /// Waits for `stream`; "" when all went well, else what failed.
  virtual std::string synchronize(void *stream) = 0;
  virtual void synchronizeAll() = 0;
  /// Whether the device is still usable after a kernel faulted (CUDA: no, the error is
  /// sticky for the context; the simulator: yes).
  virtual bool survivesFaults() const = 0;
  /// Whether device addresses are host addresses (the simulator): the runtime then
  /// reads a call's int32 sequence arguments in place, else it downloads them first.
  virtual bool hostAddressable() const = 0;
  /// Runs before timing a variant (caches and clocks warm up on a GPU).
  virtual int warmupRuns() const = 0;
  /// Milliseconds of each of `repeats` calls of `run(rep)`, as the device measures
  /// them (CUDA events on `stream`).
  virtual std::vector<double> time(void *stream, int repeats,
                                   const std::function<void(int)> &run) = 0;
};

/// The CUDA driver as a Device (the driver is loaded on first use).
std::unique_ptr<Device> makeCudaDevice();

} // namespace attune::rt

#endif
