//===- PtxLint.h - wgmma register discipline checked in the PTX -*- C++ -*-===//
//
// The simulator runs the kernel IR before LLVM, so it cannot see LLVM move a read or a
// write of a wgmma accumulator or A register across wgmma.fence / commit_group /
// wait_group (the operand fences of KernelEmitter forbid it; this checks that they
// did). On the PTX text, per function, over its control-flow graph (a forward
// dataflow, every path considered):
//   - from a wgmma.mma_async to the wgmma.wait_group that retires its group, no other
//     instruction reads or writes its destination or A registers (a later wgmma may
//     chain the same accumulators; nothing may use an in-flight A register as an
//     accumulator or the reverse);
//   - between the last wgmma.fence and a wgmma.mma_async, no other instruction
//     touches its destination or A registers, and some wgmma.fence precedes every
//     wgmma.mma_async on every path;
//   - no function returns with a wgmma in flight.
// Registers are PTX's virtual registers as LLVM wrote them; ptxas allocates the
// physical ones and serializes wgmma where it cannot prove them safe (its warning is
// recorded in the bundle manifest).
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_CODEGEN_NVIDIA_PTXLINT_H
#define ATTUNE_CODEGEN_NVIDIA_PTXLINT_H

#include <string>
#include <vector>

namespace attune {

/// The violations in `ptx`, each "function 'f', line N: what (instruction)"; empty when
/// the module is clean (a module without wgmma is always clean). At most `limit`.
std::vector<std::string> lintWgmmaRegisters(const std::string &ptx, size_t limit = 20);

} // namespace attune

#endif
