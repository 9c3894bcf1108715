//===- HostPasses.h - the host (CPU) back end's passes ----------*- C++ -*-===//
#ifndef ATTUNE_CODEGEN_HOST_HOSTPASSES_H
#define ATTUNE_CODEGEN_HOST_HOSTPASSES_H

#include "mlir/Pass/Pass.h"

namespace mlir::attn {
#define GEN_PASS_DECL
#include "codegen/host/HostPasses.h.inc"

#define GEN_PASS_REGISTRATION
#include "codegen/host/HostPasses.h.inc"
} // namespace mlir::attn

#endif
