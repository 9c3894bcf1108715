//===- SimDevice.h - the functional simulator behind the runtime's Device -*- C++ -*-===//
//
// `gpu-sim` launches kernels exactly as a GPU run does: the variants' manifest is
// written by the bundle writer (bundleManifest) and read back by the runtime, and the
// runtime's own argument checks, parameter packing, grid expressions, split-KV
// scratch sizes and tuner run on top of this device. The device only holds each
// variant's kernel IR (buildKernelModule) and runs it with simulateKernel; device
// memory is host memory, and every pointer parameter carries the bytes the runtime
// computed for it (SimArg::bytes).
//
// Fault injection for tests of the tuner ($ATTUNE_SIM_INJECT, "VARIANT=MODE[,...]"):
//   wrong  the last element of o is off by one after the variant's kernels ran;
//   nan    the last element of o is NaN;
//   fault  the process dies of SIGSEGV while launching (a kernel that kills its host);
//   error  the launch reports a device fault at the next synchronisation (sticky, as
//          on CUDA: the device runs nothing afterwards).
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_CODEGEN_BUNDLE_SIMDEVICE_H
#define ATTUNE_CODEGEN_BUNDLE_SIMDEVICE_H

#include "codegen/bundle/BundleWriter.h"
#include "codegen/reference/Reference.h"

#include "Bundle.h"
#include "Device.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include <array>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace attune {

class SimDevice final : public rt::Device {
public:
  /// `kernels`: variant name -> its kernel module (buildKernelModule), owned.
  explicit SimDevice(std::map<std::string, mlir::OwningOpRef<mlir::ModuleOp>> kernels);
  ~SimDevice() override;

  const rt::cu::DeviceInfo &open(const rt::CheckedCall &c) override;
  void checkMemory(const rt::Manifest &, const rt::CheckedCall &, const rt::cu::DeviceInfo &,
                   const char *) override {}
  void prepare(const rt::Manifest &m, const std::string &dir, int index,
               const rt::cu::DeviceInfo &dev) override;
  void launch(const rt::Manifest &m, const rt::Launch &l) override;
  uint64_t allocScratch(size_t bytes, void *stream, const std::string &what) override;
  void freeScratch(uint64_t p, void *stream) override;
  uint64_t alloc(size_t bytes) override;
  void free(uint64_t p) override;
  void copy(uint64_t dst, uint64_t src, size_t bytes) override;
  void download(void *dst, uint64_t src, size_t bytes) override;
  size_t freeMemory() override { return size_t(1) << 40; }
  std::string synchronize(void *stream) override;
  void synchronizeAll() override {}
  /// As CUDA: a fault is sticky (every later synchronisation reports it) and the
  /// device is unusable afterwards, so callers must isolate candidates as on a GPU.
  bool survivesFaults() const override { return false; }
  bool hostAddressable() const override { return true; }
  int warmupRuns() const override { return 1; }
  std::vector<double> time(void *stream, int repeats,
                           const std::function<void(int)> &run) override;

private:
  std::map<std::string, mlir::OwningOpRef<mlir::ModuleOp>> kernels_;
  std::map<std::string, std::string> inject_; // variant -> mode
  std::map<uint64_t, void *> buffers_;
  std::string pendingFault_;
  rt::cu::DeviceInfo info_;
};

/// A bundle of the simulator's kernels for `configs` (the first of each arch is its
/// default), launched through the runtime on a SimDevice. `spec` is the JSON spec,
/// or null for attn IR input (the manifest then records the IR's name, and its input
/// declarations and offsets come from the op and `inputs`).
std::unique_ptr<rt::Bundle> buildSimBundle(mlir::ModuleOp l1, const nlohmann::json *spec,
                                           SpecInfo info, const std::vector<GpuConfig> &configs,
                                           const std::map<std::string, HostTensor> &inputs,
                                           std::string &error);

/// How gpu-sim lays q, k, v and o out in device memory (attnc run --layout, --pad):
/// `bshd` puts the sequence outside the heads (the strides of a [B, S, H, D] tensor
/// seen as [B, H, S, D], as torch's q.transpose(1, 2) is); `pad` adds that many
/// elements after every row, head and batch, so that no stride follows from the
/// shape. The gaps are filled with a sentinel, and a kernel that writes o's gaps fails.
struct SimLayout {
  bool bshd = false;
  int64_t pad = 0;
  /// The call's `validate`, `max_seqlen_q` and `max_seqlen_kv` (attnc run --validate,
  /// --max-seqlen-q, --max-seqlen-kv): what the runtime reads of the sequence arrays.
  bool validate = false;
  int64_t maxSeqlenQ = 0, maxSeqlenKv = 0;
};

/// The NVIDIA back end end to end on the simulator: the kernel for `config`, launched
/// through the runtime's binding on a SimDevice with q/k/v rounded to the GPU dtype and
/// laid out as `layout` says; returns o (as floats) and lse. numSplits is the call's
/// num_splits (split-KV).
bool runGpuSimulation(mlir::ModuleOp l1, const nlohmann::json *spec, const SpecInfo &info,
                      const GpuConfig &config, const AttentionArgs &args,
                      AttentionResult &result, std::string &error, int64_t numSplits = 1,
                      const SimLayout &layout = {});

/// Host tensors in the bundle's storage types behind one attn_call (what an
/// application's device tensors are on a GPU).
class SimCall {
public:
  /// q, k, v and inputs converted (16-bit q/k/v, i32/f32 inputs) and laid out as
  /// `layout` says, o NaN-filled and, with `wantLse`, lse too, so that an element no
  /// kernel wrote shows.
  SimCall(const rt::Manifest &m, const AttentionArgs &args, bool wantLse,
          const SimLayout &layout = {});
  attn_call &call() { return call_; }
  /// o as floats; throws when a kernel wrote into the gaps between o's rows.
  HostTensor o() const;
  HostTensor lse() const;

private:
  const rt::Manifest &m_;
  std::vector<uint16_t> q_, k_, v_, o_;
  std::vector<float> lse_;
  std::vector<std::vector<uint32_t>> inputs_;
  std::vector<std::string> names_;
  std::vector<const char *> namePtrs_;
  std::vector<attn_tensor> inputTensors_;
  std::vector<int64_t> oShape_, oStrides_;
  std::array<std::vector<int32_t>, 5> seqArrays_; // cu_seqlens_q, cu_seqlens_kv, page_table, kv_lens, q_lens
  attn_call call_{};
};

} // namespace attune

#endif
