//===- NvidiaPasses.td - the NVIDIA back end's passes -------*- tablegen -*-===//
//
// L2 -> the kernel, in three steps (the pipeline `attn-to-nvvm` runs them after
// attn-tile): assign layouts (which CTA, warps and tensor cores; register layouts on
// the tile buffers), plan shared memory (where the staged tiles lie), convert to a
// gpu.module of nvvm/llvm ops (what the simulator runs and NVPTX turns into PTX).
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_NVIDIA_PASSES_TD
#define ATTN_NVIDIA_PASSES_TD

include "mlir/Pass/PassBase.td"

def AttnGpuAssignLayouts : Pass<"attn-gpu-assign-layouts", "::mlir::ModuleOp"> {
  let summary = "Map the L2 grid onto CTAs, warps and tensor cores; give tiles layouts";
  let description = [{
    For every attn.kernel function: checks that the configuration can run it (errors
    at the attn.grid, whose location is the attention's), puts #attn.gpu_target on
    the grid (arch, warps = block_m / 16, mma.sync or wgmma, GQA packing, pipelining)
    and a register layout on every tile buffer, as its memref memory space: the score
    tile and the O accumulator #attn.mma, q (A of Q K^T), k and v (B operands)
    #attn.dot_operand, the per-row m, l and alpha #attn.rows. With GQA packing, a CTA
    holds the rows of every head of a kv group: the key schedule drops its per-head
    block list and walks the ranges (the same non-EMPTY blocks).
  }];
  let options = [
    Option<"arch", "arch", "std::string", "\"sm_80\"",
           "target: sm_80, sm_86, sm_89, sm_90 or sm_90a">,
    Option<"wgmma", "wgmma", "bool", "false",
           "both matmuls on wgmma (sm_90a; block_m 64 or 128)">,
    Option<"packGqa", "pack-gqa", "bool", "false",
           "a CTA per (query block, kv head): the rows of every query head of the group">,
    Option<"pipeline", "pipeline", "bool", "true",
           "wgmma with block_n <= 64: S of the next tile under this tile's softmax">,
  ];
}

def AttnGpuPlanSharedMemory : Pass<"attn-gpu-plan-shared-memory", "::mlir::ModuleOp"> {
  let summary = "Place the tiles staged through shared memory";
  let description = [{
    After attn-gpu-assign-layouts: gives the q, k and v loads and the o store an
    #attn.shared place (`smem`) in the CTA's dynamic shared memory (Q once, K and V
    double-buffered for the cp.async copies of the next visited tile; padded rows for
    ldmatrix, or the 128- or 64-byte swizzle wgmma descriptors read; O staged over the
    Q area at the end), the masked score epilogue a staged score tile when its regions
    are evaluated over one, the grid `smem_bytes`, and the key schedule `lookahead`
    (how many tiles ahead K is copied: 2 in the pipelined wgmma loop, else 1). Refuses
    a plan over the target's per-CTA limit (sm_90a: 232448 bytes with the 1 KiB the
    swizzled tiles need to align).
  }];
}

def ConvertAttnToNVVM : Pass<"convert-attn-to-nvvm", "::mlir::ModuleOp"> {
  let summary = "Lower the planned L2 kernel to a gpu.module of nvvm, llvm and scf ops";
  let description = [{
    Replaces every planned attn.kernel function by `gpu.module @attn_kernels` holding
    the kernel `attn_kernel` and `attn_combine` (split-KV), built from the tile ops,
    their layouts and places: cp.async staging, ldmatrix + mma.sync or wgmma with
    matrix descriptors and proxy fences, the key loop over attn.for_kv_blocks
    (passes/KvSchedule.h, one tile ahead), mask and score regions cloned per
    accumulator element, online softmax by quad shuffles, split-KV partials,
    per-sequence storage (every kernel reads its sequence's lengths, clamped to the
    buffers; ragged rows from the sequence's row base; paged K/V rows through the page
    table, a page outside the cache masked and never read; right-padded rows past
    q_len written 0 / -inf); f32
    exp/exp2/log/log2/tanh/sin/cos as PTX's ex2/lg2/sin/cos.approx.ftz (PtxMath.h). The
    module's `attn.abi` attribute is the bundle ABI of the kernel (parameter names and
    kinds, grid, threads, shared memory, scratch buffers, the combine kernel):
    docs/bundle-and-abi.md.
  }];
  let dependentDialects = ["::mlir::gpu::GPUDialect", "::mlir::NVVM::NVVMDialect",
                           "::mlir::LLVM::LLVMDialect", "::mlir::memref::MemRefDialect",
                           "::mlir::scf::SCFDialect", "::mlir::math::MathDialect",
                           "::mlir::arith::ArithDialect"];
}

#endif // ATTN_NVIDIA_PASSES_TD
