//===- KernelAbi.h - a kernel's bundle ABI, in the IR and back -*- C++ -*-===//
//
// convert-attn-to-nvvm records what it built as the gpu.module's `attn.abi`
// dictionary: the kernel's symbol, threads, dynamic shared memory, its parameters by
// name and kind (docs/bundle-and-abi.md section 2), the grid rule, the split-KV
// scratch buffers and the combine kernel. The bundle writer and the simulator read
// GpuKernelInfo back from it: the ABI is what the IR says.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_CODEGEN_NVIDIA_KERNELABI_H
#define ATTUNE_CODEGEN_NVIDIA_KERNELABI_H

#include "codegen/nvidia/KernelEmitter.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/Support/LogicalResult.h"

namespace mlir {
class Operation;
} // namespace mlir

namespace attune {

mlir::DictionaryAttr kernelAbiAttr(const GpuKernelInfo &info, mlir::MLIRContext *ctx);

/// The ABI recorded on `gpuModule`; an error at it when the attribute is missing or
/// malformed.
mlir::FailureOr<GpuKernelInfo> readKernelAbi(mlir::Operation *gpuModule);

} // namespace attune

#endif
