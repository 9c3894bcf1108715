//===- KernelEmitter.cpp - analysed attention -> an sm_80+ kernel ---------===//
#include "codegen/nvidia/KernelEmitter.h"

#include "codegen/nvidia/KernelPlan.h"
#include "codegen/nvidia/SharedMemoryPlan.h"
#include "dialect/AttnOps.h"
#include "passes/KvSchedule.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/IRMapping.h"

#include <cmath>
#include <limits>
#include <memory>

using namespace mlir;
using namespace mlir::attn;
using P = arith::CmpIPredicate;

namespace attune {

std::string GpuConfig::name() const {
  std::string a = arch;
  a.erase(std::remove(a.begin(), a.end(), '_'), a.end());
  return a + "_bm" + std::to_string(blockM) + "_bn" + std::to_string(blockN) + "_w" +
         std::to_string(warps()) + (packGqa ? "_g" : "") + (wgmma ? "_wgmma" : "");
}

LogicalResult checkGpuConfig(const KernelPlan &plan, const GpuConfig &c,
                             function_ref<InFlightDiagnostic()> emitError) {
  Type elt = plan.elementType;
  if (!elt.isBF16() && !elt.isF16()) {
    std::string dtype; // streamed as text: a diagnostic quotes types
    llvm::raw_string_ostream(dtype) << elt;
    return emitError() << "the NVIDIA back end needs bf16 or fp16 q/k/v (the spec's dtype is "
                       << dtype << ")";
  }
  if (plan.headDim % 16 || plan.headDimV % 16)
    return emitError() << "the NVIDIA back end needs head_dim and head_dim_v multiples of 16";
  if (plan.headDim > 256 || plan.headDimV > 256)
    return emitError() << "the NVIDIA back end supports head dims up to 256";
  if (c.blockM % 16 || c.blockM < 16 || c.blockM > 128)
    return emitError() << "block_m must be 16, 32, ..., 128 (16 query rows per warp)";
  if (c.blockN % 16 || c.blockN < 16 || c.blockN > 128)
    return emitError() << "block_n must be a multiple of 16 in [16, 128]";
  int64_t group = plan.headsQ / plan.headsKv;
  if (c.packGqa && (group < 2 || c.blockM % group))
    return emitError() << "pack_gqa needs query heads grouped on kv heads (heads_q / heads_kv = "
                       << group << ") in a number that divides block_m (" << c.blockM << ")";
  if (c.arch != "sm_80" && c.arch != "sm_86" && c.arch != "sm_89" && c.arch != "sm_90" &&
      c.arch != "sm_90a")
    return emitError() << "unsupported arch '" << c.arch
                       << "' (sm_80, sm_86, sm_89, sm_90, sm_90a)";
  if (!c.wgmma)
    return success();
  if (c.arch != "sm_90a")
    return emitError() << "wgmma configurations need --arch sm_90a (got " << c.arch << ")";
  if (c.blockM != 64 && c.blockM != 128)
    return emitError() << "wgmma configurations need block_m 64 or 128 (a warpgroup per 64 rows)";
  // Tiles are slabs of 64 (or 32) columns in the 128- (or 64-) byte swizzle.
  if (plan.headDim % 32 || plan.headDimV % 32)
    return emitError() << "wgmma configurations need head dims that are multiples of 32 (head_dim "
                       << plan.headDim << ", head_dim_v " << plan.headDimV << ")";
  return success();
}

namespace {

constexpr double kTwoPi = 6.283185307179586476925286766559;

/// Four f32 accumulator values of one m16n8 tile, per thread: (g, 2t), (g, 2t+1),
/// (g+8, 2t), (g+8, 2t+1) where g = lane / 4, t = lane % 4. wgmma's m64nN
/// accumulators have the same layout per warp (warp w of a warpgroup holds its rows
/// 16w..16w+15), so the softmax code serves both.
using Acc = std::array<Value, 4>;

/// How a tile lies in shared memory. Padded: rows of `stride` elements (the padding
/// keeps ldmatrix conflict-free). Swizzled (wgmma): slabs of rowBytes / 2 columns,
/// each `rows` x rowBytes, row r at rowBytes r with its 16-byte chunks permuted by
/// XOR with the address bits 7 and up (r mod 8 for 128-byte rows, r / 2 mod 4 for
/// 64-byte rows): the 128- or 64-byte swizzle a wgmma descriptor names, conflict-free
/// for the row-wise cp.async writes too.
struct SmemTile {
  int64_t stride = 0;
  int64_t rows = 0;
  bool swizzled = false;
  int64_t rowBytes = 128;
};

class KernelEmitter {
public:
  KernelEmitter(KernelPlan &plan, const GpuConfig &cfg, OpBuilder &b)
      : plan(plan), cfg(cfg), b(b), loc(plan.loc()) {
    bm = cfg.blockM;
    bn = cfg.blockN;
    d = plan.headDim;
    dv = plan.headDimV;
    warps = cfg.warps();
    threads = 32 * warps;
    group = plan.headsQ / plan.headsKv;
    packed = cfg.packGqa;
    qPerCta = packed ? bm / group : bm;
    Type elt = plan.elementType;
    fp16 = elt.isF16();
    eltType = elt;
    wg = cfg.wgmma;
    // Where the staged tiles lie: attn-gpu-plan-shared-memory's decision, read off
    // the IR (KernelPlan::smem; emitNvidiaKernel makes sure it is there).
    const SharedMemoryPlan &smem = *plan.smem;
    qStride = smem.o.rowStride;
    kStride = smem.k.rowStride;
    vStride = smem.v.rowStride;
    if (wg) {
      rowBytes = smem.k.swizzle;
      qTile = {0, bm, true, rowBytes};
      kTile = {0, bn, true, rowBytes};
      vTile = {0, bn, true, rowBytes};
    } else {
      qTile = {smem.q.rowStride, bm, false};
      kTile = {kStride, bn, false};
      vTile = {vStride, bn, false};
    }
    qBytes = smem.q.stageBytes;
    kStageBytes = smem.k.stageBytes;
    vStageBytes = smem.v.stageBytes;
    offK = smem.k.offset;
    offV = smem.v.offset;
    smemBytes = smem.bytes;
    // Regions with loops or index-list scans are evaluated once per element in a
    // loop over a staged copy of the score tile, not cloned per accumulator element.
    staged = smem.s.has_value();
    offS = staged ? smem.s->offset : 0;
    // With an identity score and softmax, scores stay unscaled until the exp2
    // argument, where scale joins the subtraction in one fma.
    rawScores = plan.normalizer == Normalizer::softmax && plan.identityScore &&
                plan.scale > 0;
    perSequence = plan.sequences;
  }

  void emit(gpu::GPUModuleOp module, GpuKernelInfo &info);
  /// attn_combine: the splits' partial outputs into o and lse.
  void emitCombine(gpu::GPUModuleOp module, GpuKernelInfo &info);
  /// Dynamic shared memory the kernel asks for at launch.
  int64_t sharedBytes() const { return smemBytes + (wg ? 1024 : 0); }

private:
  // Constants and arithmetic.
  Value c32(int64_t v) { return arith::ConstantIntOp::create(b, loc, v, 32); }
  Value c64(int64_t v) { return arith::ConstantIntOp::create(b, loc, v, 64); }
  Value cf(double v) {
    return arith::ConstantFloatOp::create(b, loc, b.getF32Type(), APFloat(float(v)));
  }
  Value cbool(bool v) { return arith::ConstantIntOp::create(b, loc, v ? 1 : 0, 1); }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, loc, x, y); }
  Value sub(Value x, Value y) { return arith::SubIOp::create(b, loc, x, y); }
  Value mul(Value x, Value y) { return arith::MulIOp::create(b, loc, x, y); }
  Value divu(Value x, Value y) { return arith::DivUIOp::create(b, loc, x, y); }
  Value remu(Value x, Value y) { return arith::RemUIOp::create(b, loc, x, y); }
  Value mins(Value x, Value y) { return arith::MinSIOp::create(b, loc, x, y); }
  Value maxs(Value x, Value y) { return arith::MaxSIOp::create(b, loc, x, y); }
  Value cmp(P p, Value x, Value y) { return arith::CmpIOp::create(b, loc, p, x, y); }
  Value andi(Value x, Value y) { return arith::AndIOp::create(b, loc, x, y); }
  Value ori(Value x, Value y) { return arith::OrIOp::create(b, loc, x, y); }
  Value noti(Value x) { return arith::XOrIOp::create(b, loc, x, cbool(true)); }
  Value sel(Value c, Value x, Value y) { return arith::SelectOp::create(b, loc, c, x, y); }
  Value ext64(Value v) { return arith::ExtSIOp::create(b, loc, b.getI64Type(), v); }
  Value trunc32(Value v) { return arith::TruncIOp::create(b, loc, b.getI32Type(), v); }
  Value addf(Value x, Value y) { return arith::AddFOp::create(b, loc, x, y); }
  Value subf(Value x, Value y) { return arith::SubFOp::create(b, loc, x, y); }
  Value mulf(Value x, Value y) { return arith::MulFOp::create(b, loc, x, y); }
  /// NaN-propagating max (relu must not hide a NaN).
  Value maxf(Value x, Value y) { return arith::MaximumFOp::create(b, loc, x, y); }
  /// max.f32: for softmax maxima, where a NaN score still reaches the output through
  /// exp2(NaN - m) and one instruction beats a compare-and-select chain.
  Value maxnum(Value x, Value y) { return arith::MaxNumFOp::create(b, loc, x, y); }
  Value exp2(Value x) { return math::Exp2Op::create(b, loc, x); }

  // Pointers.
  Type ptrType(unsigned space = 0) { return LLVM::LLVMPointerType::get(b.getContext(), space); }
  Value smemAt(Value byteOffset32) {
    return LLVM::GEPOp::create(b, loc, ptrType(3), b.getI8Type(), smemBase, ValueRange{byteOffset32});
  }
  /// Address of element `index` (i64) of a tensor of element type `elt`.
  Value elementPtr(Value base, Type elt, Value index) {
    return LLVM::GEPOp::create(b, loc, ptrType(), elt, base, ValueRange{index});
  }

  // Warp-level building blocks.
  std::array<Value, 4> ldmatrixX4(Value ptr, bool trans);
  Acc mma(std::array<Value, 4> a, Value b0, Value b1, Acc c);
  Value shflXor(Value v, int mask);
  /// Max over the 4 lanes of a quad (the threads sharing rows g and g+8).
  Value quadMax(Value v) {
    Value pair = maxnum(v, shflXor(v, 1));
    return maxnum(pair, shflXor(pair, 2));
  }
  Value quadSum(Value v) {
    Value s = addf(v, shflXor(v, 1));
    return addf(s, shflXor(s, 2));
  }
  Value pack(Value lo, Value hi);

  // Warpgroup-level building blocks (sm_90a).
  Value descriptor(Value byteOffset, int64_t leadingBytes, int64_t strideBytes);
  SmallVector<Acc> wgmma(SmallVector<Acc> acc, Value aDesc, ArrayRef<Value> aRegs, Value bDesc,
                         bool accumulate, bool transposeB);
  /// Issue and commit; with `wait` also wait for the group (else the caller does, by
  /// wgmmaWait with the same accumulators and P fragments).
  SmallVector<Acc> wgmmaScores(Value stage, bool wait = true);
  /// `pFrag` is replaced by its fenced registers (what the wgmmas read).
  void wgmmaPv(SmallVector<Acc> &o, SmallVector<std::array<Value, 4>> &pFrag, Value stage,
               bool wait = true);
  /// CUTLASS's warpgroup_fence_operand: an empty asm that reads and rewrites the
  /// register ("+f" / "+r" as a tied "=f,0" / "=r,0") with side effects. LLVM keeps
  /// side-effecting asm and the wgmma intrinsics in order, so an access of an
  /// accumulator or A register cannot move across the wgmma.fence, commit or wait it
  /// is fenced next to: producers stay before the fence, consumers after the wait, and
  /// A registers stay live (not reused) until the wait.
  Value fenceOperand(Value v);
  /// Accumulator tiles and A fragments alike (both are arrays of 4 registers).
  void fenceOperands(SmallVector<Acc> &regs) {
    for (Acc &r : regs)
      for (Value &x : r)
        x = fenceOperand(x);
  }
  /// wgmma.wait_group 0, then the operand fences of what it retires: the accumulators
  /// (whose fenced values the caller uses from here on) and the A registers.
  void wgmmaWait(ArrayRef<SmallVector<Acc> *> accs, SmallVector<std::array<Value, 4>> *aRegs) {
    NVVM::WgmmaWaitGroupSyncOp::create(b, loc, 0);
    for (SmallVector<Acc> *a : accs)
      fenceOperands(*a);
    if (aRegs)
      fenceOperands(*aRegs);
  }
  void mmaPv(SmallVector<Acc> &o, ArrayRef<std::array<Value, 4>> pFrag, Value stage);
  /// Whether the tile at kvLo of class `cls` runs the masked epilogue (the test
  /// scoreTile branches on): the tiles where some P is 0 by the mask.
  Value tileIsMasked(Value kvLo, Value cls) {
    // A paged tile may hold a page id outside the cache (device-resident, unchecked):
    // its keys are masked, so every paged tile evaluates the bounds.
    if (paged())
      return cbool(true);
    Value whole = cmp(P::sle, add(kvLo, c64(bn)), seqKv);
    return noti(andi(whole, cmp(P::eq, cls, c32(kFull))));
  }
  bool paged() const { return perSequence && plan.kvStorage == Storage::paged; }
  bool raggedQ() const { return perSequence && plan.qStorage == Storage::ragged; }
  /// Page id of key j (i64, < seqKv) of this CTA's sequence, and whether it is a page
  /// of the cache.
  std::pair<Value, Value> pageOf(Value j) {
    Value index = add(mul(bIdx, pageTableStride), divu(j, pageSize));
    Value page = ext64(LLVM::LoadOp::create(b, loc, b.getI32Type(),
                                            elementPtr(pageTablePtr, b.getI32Type(), index))
                           .getResult());
    Value ok = andi(cmp(P::sge, page, c64(0)), cmp(P::slt, page, numPages));
    return {page, ok};
  }
  /// Whether key j (i64) exists: below the sequence's length and, paged, on a page of
  /// the cache (the table is read only for keys below the length).
  Value keyExists(Value j) {
    Value inside = cmp(P::slt, j, seqKv);
    if (!paged())
      return inside;
    auto ifInside = scf::IfOp::create(b, loc, b.getI1Type(), inside, true);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(ifInside.thenBlock());
    scf::YieldOp::create(b, loc, pageOf(j).second);
    b.setInsertionPointToStart(ifInside.elseBlock());
    scf::YieldOp::create(b, loc, cbool(false));
    return ifInside.getResult(0);
  }
  /// lse's element of tile row `row` (i32): [B, Hq, Sq] padded, [total_q, Hq] ragged.
  Value lseIndex(Value row) {
    if (raggedQ())
      return add(mul(add(qRow0, rowQuery(row)), c64(plan.headsQ)), rowHead(row));
    return add(mul(add(mul(bIdx, c64(plan.headsQ)), rowHead(row)), seqQParam), rowQuery(row));
  }
  /// This CTA's sequence (per-sequence kernels): lengths, row bases, q_offset_b.
  void readSequence();
  /// Right-padded batches (padded q with q_lens): the buffer's rows past the
  /// sequence's length get o = 0 and lse = -inf, as on the host.
  void zeroPaddingRows();
  /// A length read from an int32 buffer, at least 0; `full` when `ptr` is null, and
  /// at most `full`.
  Value lengthAt(Value ptr, Value index, Value full, bool optional);
  /// A masked pair contributes nothing, NaN and Inf in v included; tensor cores compute
  /// 0 * NaN = NaN. Before P V of a masked tile, the CTA looks for non-finite values in
  /// the V tile; when there are some, each row's non-finite contributions from pairs
  /// with P != 0 are added to O exactly and those V elements zeroed for the matmul.
  void guardNonFiniteValues(SmallVector<Acc> &o, ArrayRef<Acc> p, Value stage, Value masked);
  /// For each 16-byte chunk of the V tile this thread covers: `f(address, chunk)`.
  void forEachValueChunk(Value stage, function_ref<void(Value, Value)> f);
  /// Per 32-bit word of two 16-bit values: bits set over each non-finite half.
  Value nonFiniteHalves(Value word);
  /// Makes this thread's shared-memory writes (st.shared, cp.async) visible to the
  /// async proxy that wgmma reads through; a barrier must follow.
  void asyncProxyFence() {
    if (wg)
      NVVM::FenceProxyOp::create(b, loc, NVVM::ProxyKind::async_shared,
                                NVVM::SharedSpaceAttr::get(b.getContext(), NVVM::SharedSpace::shared_cta));
  }

  // Pieces of the kernel.
  void readParams(Block *entry);
  /// A row-major memref over `ptr` with strides from `dims` and extents `sizes`.
  Value memrefFromPointer(Value ptr, ShapedType type, ArrayRef<Value> dims, ArrayRef<Value> sizes);
  /// Where tile row `row` (i64) is read from: its byte offset from the tile's base
  /// pointer, and whether it exists (rows that do not are zero-filled).
  using RowSource = function_ref<std::pair<Value, Value>(Value row)>;
  void loadTileAsync(Value base, RowSource source, int64_t rows, int64_t width,
                     Value smemOffset, const SmemTile &tile);
  /// Rows [row0, row0 + validRows) of a tensor with row stride `rowStride` (elements).
  void loadRowsAsync(Value base, Value rowStride, Value row0, Value validRows, int64_t rows,
                     int64_t width, Value smemOffset, const SmemTile &tile);
  /// Byte offset (i32) of element (row, col) (i32) of a tile at `base` (i32).
  Value tileOffset(Value base, const SmemTile &tile, Value row, Value col);
  void loadQTile();
  /// The query index and the head of tile row `row` (i32), both i64.
  Value rowQuery(Value row) {
    return add(qLo, ext64(packed ? divu(row, c32(group)) : row));
  }
  Value rowHead(Value row) {
    return packed ? add(mul(hkIdx, c64(group)), ext64(remu(row, c32(group)))) : hIdx;
  }
  /// The heads of the CTA's rows: its one head, or every head of the group.
  SmallVector<Value> ctaHeads() {
    if (!packed)
      return {hIdx};
    SmallVector<Value> heads;
    for (int64_t g = 0; g < group; ++g)
      heads.push_back(add(mul(hkIdx, c64(group)), c64(g)));
    return heads;
  }
  void rotateInShared(Value smemOffset, const SmemTile &tile, int64_t rows, RopeAttr rope,
                      function_ref<Value(Value)> position, StringRef tableName);
  SmallVector<std::array<Value, 4>> loadQFragments();
  using Visit = KvSchedule::Visit;
  void prefetch(Value valid, Value kb, Value stage);
  /// The K (or V) tile of key block kb into buffer `stage`: one commit group, empty
  /// when there is nothing to load, so that group counting stays uniform.
  void prefetchTile(Value valid, Value kb, Value stage, bool values);
  /// RoPE on the K tile of key block kb in buffer `stage`, then fence and barrier.
  void rotateKeys(Value kb, Value stage);
  SmallVector<Acc> computeScores(SmallVector<std::array<Value, 4>> &qFrag, Value stage);
  SmallVector<Acc> epilogue(SmallVector<Acc> s, Value kvLo, bool masked);
  SmallVector<Acc> unrolledEpilogue(SmallVector<Acc> s, Value kvLo, bool masked);
  SmallVector<Acc> stagedEpilogue(SmallVector<Acc> s, Value kvLo, bool masked);
  void emitMainLoop(SmallVector<std::array<Value, 4>> &qFrag);
  /// wgmma: S of the next tile on the tensor cores while this tile's softmax runs.
  void emitPipelinedLoop();
  scf::WhileOp whileValid(ArrayRef<Value> init, Block *&body);
  /// The score epilogue of tile kvLo (class cls): FULL tiles that are whole skip the
  /// mask, others evaluate it.
  SmallVector<Acc> scoreTile(SmallVector<Acc> s, Value kvLo, Value cls);
  /// The normaliser's weights of a scored tile, in place: softmax updates the running
  /// max m and sum l per row half and says by what O must be rescaled.
  struct Weights {
    Value m[2], l[2], alpha[2];
  };
  Weights weigh(SmallVector<Acc> &s, Value m[2], Value l[2]);
  void rescale(SmallVector<Acc> &o, const Weights &w);
  /// P as the A operand of P V: k-step kk is accumulator tiles 2 kk and 2 kk + 1.
  SmallVector<std::array<Value, 4>> pFragments(SmallVector<Acc> &p);
  /// The end of the key loop: drain the copies, write o and lse (or partials).
  void finish(SmallVector<Acc> &o, Value m0, Value m1, Value l0, Value l1);
  void storeOutputs(SmallVector<Acc> &o, Value m0, Value m1, Value l0, Value l1);
  /// With several splits: O / l and lse of this split in f32 into the scratch buffers,
  /// for attn_combine.
  void storePartials(SmallVector<Acc> &o, Value m0, Value m1, Value l0, Value l1);
  /// The key schedule of this CTA's rows (passes/KvSchedule.h, shared with every
  /// back end): the ranges of its heads (or its block list), tile classes, its split.
  void buildSchedule();
  /// Factor c with p = exp2(c (s - m)) for the scores the loop keeps: log2(e) unless
  /// attn-fuse moved them to base 2, times scale when they are kept unscaled.
  double exp2Factor() {
    double toLog2 = plan.softmaxBase2 ? 1.0 : 1.4426950408889634;
    return (rawScores ? plan.scale : 1.0) * toLog2;
  }
  void declareRopeTables(gpu::GPUModuleOp module);

  KernelPlan &plan;
  GpuConfig cfg;
  OpBuilder &b;
  Location loc;
  int64_t bm, bn, d, dv, warps, threads, group;
  bool packed;     // pack_gqa: the rows of all heads of a kv head
  int64_t qPerCta; // queries per CTA: bm, or bm / group when packed
  bool fp16;
  Type eltType;
  bool wg = false;       // wgmma (sm_90a)
  int64_t rowBytes = 128; // wgmma: the swizzle's row width (slabs of rowBytes / 2 columns)
  int64_t qStride, kStride, vStride, offK, offV, smemBytes;
  SmemTile qTile, kTile, vTile;
  int64_t qBytes = 0, kStageBytes = 0, vStageBytes = 0;
  bool staged = false;
  bool rawScores = false;
  int64_t offS = 0;

  // Per-thread and per-CTA values.
  Value tid, lane, warp, gq, tq;            // i32
  Value bIdx, hIdx, hkIdx;                  // i64 (no hIdx when packed)
  Value qLo, qRows, qHi;                    // i64
  Value smemBase;
  Value smemAddress; // i32: smemBase in the shared window (wgmma descriptors)
  Value qPtr, kPtr, vPtr, oPtr, lsePtr;
  Value batch, seqQ, seqKv, qOffset, kvOffset;
  Value qStrides[3], kStrides[3], vStrides[3], oStrides[3];
  // The seq_q parameter: the padded q buffer's length, or the batch's longest ragged
  // sequence (lse and the split-KV partials are laid out over it). seqQ is this CTA's
  // sequence's length in a per-sequence kernel.
  Value seqQParam;
  // Per-sequence kernels (plan.sequences): the sequence buffers (a null q_lens or
  // kv_lens means the buffer's length), the buffers' rows, the page geometry.
  bool perSequence = false;
  Value qSeqPtr, pageTablePtr, kvSeqPtr;
  Value qRowsTotal, kvRowsTotal, pageSize, numPages, pagesPerSeq, pageTableStride,
      offsetFromLengths;
  // Where this CTA's sequence lies: element offsets of its first row in q/o and k/v
  // (b * stride_b padded, row0 * stride_s ragged; 0 for paged k/v), its row base.
  Value qBatchBase, oBatchBase, kBatchBase, vBatchBase, qRow0;
  SmallVector<Value> inputPtrs;
  SmallVector<SmallVector<Value>> inputDims;
  IRMapping tensors; // L1 tensors -> memrefs over kernel pointers
  std::unique_ptr<KvSchedule> schedule;
  // Split-KV: this CTA visits split `split` of numSplits of the key schedule.
  Value numSplits, split, oPartial, lsePartial;
};

//===----------------------------------------------------------------------===//
// Warp-level building blocks
//===----------------------------------------------------------------------===//

std::array<Value, 4> KernelEmitter::ldmatrixX4(Value ptr, bool trans) {
  MLIRContext *ctx = b.getContext();
  Type i32 = b.getI32Type();
  Type resType = LLVM::LLVMStructType::getLiteral(ctx, {i32, i32, i32, i32});
  auto ld = NVVM::LdMatrixOp::create(
      b, loc, resType, ptr, b.getI32IntegerAttr(4),
      NVVM::MMALayoutAttr::get(ctx, trans ? NVVM::MMALayout::col : NVVM::MMALayout::row),
      NVVM::LdStMatrixShapeAttr::get(ctx, 8, 8),
      NVVM::LdStMatrixEltTypeAttr::get(ctx, NVVM::LdStMatrixEltType::B16));
  std::array<Value, 4> r;
  for (int i = 0; i < 4; ++i)
    r[i] = LLVM::ExtractValueOp::create(b, loc, ld, ArrayRef<int64_t>{i});
  return r;
}

Acc KernelEmitter::mma(std::array<Value, 4> a, Value b0, Value b1, Acc c) {
  MLIRContext *ctx = b.getContext();
  Type f32 = b.getF32Type();
  Type resType = LLVM::LLVMStructType::getLiteral(ctx, {f32, f32, f32, f32});
  SmallVector<Value> A(a.begin(), a.end()), B{b0, b1};
  if (fp16) {
    // The f16 form takes vector<2xf16> operands; bf16 takes packed i32.
    auto v2 = VectorType::get({2}, b.getF16Type());
    for (Value &x : A)
      x = LLVM::BitcastOp::create(b, loc, v2, x);
    for (Value &x : B)
      x = LLVM::BitcastOp::create(b, loc, v2, x);
  }
  NVVM::MMATypes t = fp16 ? NVVM::MMATypes::f16 : NVVM::MMATypes::bf16;
  auto m = NVVM::MmaOp::create(b, loc, resType, A, B, ValueRange(c), ArrayRef<int64_t>{16, 8, 16},
                               std::nullopt, std::nullopt,
                               std::array<NVVM::MMATypes, 2>{t, t},
                               std::array<NVVM::MMALayout, 2>{NVVM::MMALayout::row,
                                                              NVVM::MMALayout::col});
  Acc r;
  for (int i = 0; i < 4; ++i)
    r[i] = LLVM::ExtractValueOp::create(b, loc, m, ArrayRef<int64_t>{i});
  (void)ctx;
  return r;
}

Value KernelEmitter::shflXor(Value v, int mask) {
  return NVVM::ShflOp::create(b, loc, b.getF32Type(), c32(-1), v, c32(mask), c32(31),
                              NVVM::ShflKindAttr::get(b.getContext(), NVVM::ShflKind::bfly),
                              UnitAttr());
}

/// Two f32 as one i32 of two 16-bit values, the lower column in the low half.
Value KernelEmitter::pack(Value lo, Value hi) {
  auto v2 = VectorType::get({2}, eltType);
  Value vec = LLVM::UndefOp::create(b, loc, v2);
  Value l = arith::TruncFOp::create(b, loc, eltType, lo);
  Value h = arith::TruncFOp::create(b, loc, eltType, hi);
  vec = LLVM::InsertElementOp::create(b, loc, vec, l, c32(0));
  vec = LLVM::InsertElementOp::create(b, loc, vec, h, c32(1));
  return LLVM::BitcastOp::create(b, loc, b.getI32Type(), vec);
}

/// A wgmma shared-memory matrix descriptor of the swizzled tile at `byteOffset` from
/// the aligned base: start address >> 4 in bits 0-13, leading and stride byte offsets
/// >> 4 in bits 16-29 and 32-45, swizzle mode in bits 62-63 (1: 128 B, 2: 64 B), base
/// offset 0 (every start lies in the first row of an 8-row atom).
Value KernelEmitter::descriptor(Value byteOffset, int64_t leadingBytes, int64_t strideBytes) {
  Value addr = add(smemAddress, byteOffset);
  Value start = andi(arith::ShRUIOp::create(b, loc, addr, c32(4)), c32(0x3fff));
  uint64_t mode = rowBytes == 128 ? 1 : 2;
  uint64_t fixed = (uint64_t(leadingBytes >> 4) << 16) | (uint64_t(strideBytes >> 4) << 32) |
                   (mode << 62);
  return ori(arith::ExtUIOp::create(b, loc, b.getI64Type(), start), c64(int64_t(fixed)));
}

/// D = A B (+ D when `accumulate`) for the warpgroup's 64 rows: one
/// wgmma.mma_async m64nNk16 with f32 accumulators (N = 8 acc.size()). A comes from a
/// K-major descriptor or, as 4 registers per thread, in mma.sync's A layout per warp;
/// B from a descriptor, K-major or (transposeB) MN-major. Inline PTX: MLIR's wgmma op
/// has no register-A form. The caller fences, commits and waits.
SmallVector<Acc> KernelEmitter::wgmma(SmallVector<Acc> acc, Value aDesc, ArrayRef<Value> aRegs,
                                      Value bDesc, bool accumulate, bool transposeB) {
  int64_t regs = int64_t(acc.size()) * 4;
  std::string t = fp16 ? "f16" : "bf16";
  auto ref = [](int64_t i) { return "$" + std::to_string(i); };
  SmallVector<Value> operands;
  std::string constraints, dList, aText;
  for (int64_t i = 0; i < regs; ++i) {
    constraints += (i ? ",=f" : "=f");
    dList += (i ? ", " : "") + ref(i);
  }
  int64_t next = regs;
  if (aRegs.empty()) {
    operands.push_back(aDesc);
    constraints += ",l";
    aText = ref(next++);
  } else {
    aText = "{";
    for (size_t i = 0; i < aRegs.size(); ++i) {
      operands.push_back(aRegs[i]);
      constraints += ",r";
      aText += (i ? ", " : "") + ref(next++);
    }
    aText += "}";
  }
  operands.push_back(bDesc);
  constraints += ",l";
  std::string bText = ref(next++);
  operands.push_back(c32(accumulate ? 1 : 0));
  constraints += ",r";
  std::string scaleText = ref(next++);
  // The accumulators are read and written: inputs tied to the outputs.
  Value undef = LLVM::UndefOp::create(b, loc, b.getF32Type());
  for (int64_t i = 0; i < regs; ++i) {
    operands.push_back(accumulate ? acc[size_t(i / 4)][size_t(i % 4)] : undef);
    constraints += "," + std::to_string(i);
  }
  std::string text = "{\n.reg .pred p;\nsetp.ne.b32 p, " + scaleText + ", 0;\n" +
                     "wgmma.mma_async.sync.aligned.m64n" + std::to_string(regs * 2) + "k16.f32." +
                     t + "." + t + " {" + dList + "}, " + aText + ", " + bText + ", p, 1, 1, " +
                     (aRegs.empty() ? "0, " : "") + (transposeB ? "1" : "0") + ";\n}";
  SmallVector<Type> fields(size_t(regs), b.getF32Type());
  Type resType = LLVM::LLVMStructType::getLiteral(b.getContext(), fields);
  auto call = LLVM::InlineAsmOp::create(b, loc, resType, operands, text, constraints,
                                        /*has_side_effects=*/true, /*is_align_stack=*/false,
                                        LLVM::tailcallkind::TailCallKind::None,
                                        /*asm_dialect=*/LLVM::AsmDialectAttr(),
                                        /*operand_attrs=*/ArrayAttr());
  SmallVector<Acc> out(acc.size());
  for (int64_t i = 0; i < regs; ++i)
    out[size_t(i / 4)][size_t(i % 4)] =
        LLVM::ExtractValueOp::create(b, loc, call.getRes(), ArrayRef<int64_t>{i});
  return out;
}

/// S = Q K^T for the warpgroup's 64 rows over the whole head dim: one wgmma per 16
/// columns of d, both operands K-major. A 16-column step is 32 bytes into the
/// slab's rows; the hardware applies the swizzle to the computed address.
SmallVector<Acc> KernelEmitter::wgmmaScores(Value stage, bool wait) {
  SmallVector<Acc> s(size_t(bn / 8));
  int64_t steps = rowBytes / 32, atom = 8 * rowBytes; // 16-column steps per slab
  Value qRowsOff = mul(divu(warp, c32(4)), c32(64 * rowBytes));
  Value kOff = add(c32(offK), mul(stage, c32(kStageBytes)));
  NVVM::WgmmaFenceAlignedOp::create(b, loc);
  for (int64_t kk = 0; kk < d / 16; ++kk) {
    int64_t slab = kk / steps, within = (kk % steps) * 32;
    Value aDesc = descriptor(add(qRowsOff, c32(slab * bm * rowBytes + within)), 16, atom);
    Value bDesc = descriptor(add(kOff, c32(slab * bn * rowBytes + within)), 16, atom);
    s = wgmma(s, aDesc, {}, bDesc, /*accumulate=*/kk > 0, /*transposeB=*/false);
  }
  NVVM::WgmmaGroupSyncAlignedOp::create(b, loc);
  if (wait)
    wgmmaWait({&s}, nullptr);
  return s;
}

Value KernelEmitter::fenceOperand(Value v) {
  auto call = LLVM::InlineAsmOp::create(b, loc, v.getType(), ValueRange{v}, "",
                                        v.getType().isF32() ? "=f,0" : "=r,0",
                                        /*has_side_effects=*/true, /*is_align_stack=*/false,
                                        LLVM::tailcallkind::TailCallKind::None,
                                        /*asm_dialect=*/LLVM::AsmDialectAttr(),
                                        /*operand_attrs=*/ArrayAttr());
  return call.getRes();
}

/// O += P V: P from registers, V (keys by dv, dv contiguous) as an MN-major B:
/// 8-key groups one atom (8 rows) apart (stride offset), slabs bn rows apart
/// (leading offset); a 16-key step is two groups.
void KernelEmitter::wgmmaPv(SmallVector<Acc> &o, SmallVector<std::array<Value, 4>> &pFrag,
                            Value stage, bool wait) {
  Value vOff = add(c32(offV), mul(stage, c32(vStageBytes)));
  // O (rescaled) and P are written before the wgmma.fence, never after it.
  fenceOperands(o);
  fenceOperands(pFrag);
  NVVM::WgmmaFenceAlignedOp::create(b, loc);
  for (int64_t kk = 0; kk < bn / 16; ++kk) {
    Value bDesc = descriptor(add(vOff, c32(kk * 16 * rowBytes)), bn * rowBytes, 8 * rowBytes);
    o = wgmma(o, Value(), pFrag[size_t(kk)], bDesc, /*accumulate=*/true, /*transposeB=*/true);
  }
  NVVM::WgmmaGroupSyncAlignedOp::create(b, loc);
  if (wait)
    wgmmaWait({&o}, &pFrag);
}

//===----------------------------------------------------------------------===//
// Parameters
//===----------------------------------------------------------------------===//

Value KernelEmitter::memrefFromPointer(Value ptr, ShapedType type, ArrayRef<Value> dims,
                                       ArrayRef<Value> sizes) {
  // A row-major descriptor {ptr, ptr, 0, sizes, strides} seen as a memref, so that
  // the shared lowering of tensor reads applies unchanged.
  MLIRContext *ctx = b.getContext();
  int64_t rank = type.getRank();
  Type i64 = b.getI64Type();
  auto arr = LLVM::LLVMArrayType::get(i64, rank);
  auto descType = LLVM::LLVMStructType::getLiteral(ctx, {ptrType(), ptrType(), i64, arr, arr});
  Value desc = LLVM::UndefOp::create(b, loc, descType);
  desc = LLVM::InsertValueOp::create(b, loc, desc, ptr, ArrayRef<int64_t>{0});
  desc = LLVM::InsertValueOp::create(b, loc, desc, ptr, ArrayRef<int64_t>{1});
  desc = LLVM::InsertValueOp::create(b, loc, desc, c64(0), ArrayRef<int64_t>{2});
  Value stride = c64(1);
  for (int64_t i = rank - 1; i >= 0; --i) {
    desc = LLVM::InsertValueOp::create(b, loc, desc, sizes[i], ArrayRef<int64_t>{3, i});
    desc = LLVM::InsertValueOp::create(b, loc, desc, stride, ArrayRef<int64_t>{4, i});
    stride = mul(stride, dims[i]);
  }
  auto memrefType = MemRefType::get(SmallVector<int64_t>(rank, ShapedType::kDynamic),
                                    type.getElementType());
  return UnrealizedConversionCastOp::create(b, loc, memrefType, desc).getResult(0);
}

void KernelEmitter::readParams(Block *entry) {
  unsigned a = 0;
  qPtr = entry->getArgument(a++);
  kPtr = entry->getArgument(a++);
  vPtr = entry->getArgument(a++);
  oPtr = entry->getArgument(a++);
  lsePtr = entry->getArgument(a++);
  for (size_t i = 0; i < plan.inputs.size(); ++i)
    inputPtrs.push_back(entry->getArgument(a++));
  batch = entry->getArgument(a++);
  seqQ = entry->getArgument(a++);
  seqKv = entry->getArgument(a++);
  qOffset = entry->getArgument(a++);
  kvOffset = entry->getArgument(a++);
  for (Value *s : {qStrides, kStrides, vStrides, oStrides})
    for (int i = 0; i < 3; ++i)
      s[i] = entry->getArgument(a++);
  for (Value in : plan.inputs) {
    auto type = cast<ShapedType>(in.getType());
    SmallVector<Value> dims;
    for (int64_t i = 0; i < type.getRank(); ++i)
      dims.push_back(entry->getArgument(a++));
    inputDims.push_back(dims);
  }
  numSplits = entry->getArgument(a++);
  oPartial = entry->getArgument(a++);
  lsePartial = entry->getArgument(a++);
  seqQParam = seqQ;
  if (!perSequence)
    return;
  qSeqPtr = entry->getArgument(a++);
  if (paged())
    pageTablePtr = entry->getArgument(a++);
  kvSeqPtr = entry->getArgument(a++);
  qRowsTotal = entry->getArgument(a++);
  kvRowsTotal = entry->getArgument(a++);
  if (paged()) {
    pageSize = entry->getArgument(a++);
    numPages = entry->getArgument(a++);
    pagesPerSeq = entry->getArgument(a++);
    pageTableStride = entry->getArgument(a++);
  }
  offsetFromLengths = entry->getArgument(a++);
}

Value KernelEmitter::lengthAt(Value ptr, Value index, Value full, bool optional) {
  auto read = [&]() -> Value {
    Value x = ext64(LLVM::LoadOp::create(b, loc, b.getI32Type(),
                                         elementPtr(ptr, b.getI32Type(), index))
                        .getResult());
    return mins(maxs(x, c64(0)), full);
  };
  if (!optional)
    return read();
  Value nullPtr = LLVM::ZeroOp::create(b, loc, ptrType());
  Value given = LLVM::ICmpOp::create(b, loc, LLVM::ICmpPredicate::ne, ptr, nullPtr);
  auto ifGiven = scf::IfOp::create(b, loc, b.getI64Type(), given, true);
  OpBuilder::InsertionGuard g(b);
  b.setInsertionPointToStart(ifGiven.thenBlock());
  scf::YieldOp::create(b, loc, read());
  b.setInsertionPointToStart(ifGiven.elseBlock());
  scf::YieldOp::create(b, loc, full);
  return ifGiven.getResult(0);
}

/// Lengths are clamped to what the buffers hold: the host checks the sequence
/// arguments it can see, and a kernel never reads outside its buffers whatever they
/// hold (cu_seqlens past the buffer end give shorter or empty sequences).
void KernelEmitter::readSequence() {
  Value next = add(bIdx, c64(1));
  if (raggedQ()) {
    qRow0 = lengthAt(qSeqPtr, bIdx, qRowsTotal, false);
    Value end = lengthAt(qSeqPtr, next, qRowsTotal, false);
    seqQ = maxs(sub(end, qRow0), c64(0));
    qBatchBase = mul(qRow0, qStrides[2]);
    oBatchBase = mul(qRow0, oStrides[2]);
  } else {
    qRow0 = c64(0);
    seqQ = lengthAt(qSeqPtr, bIdx, qRowsTotal, true);
    qBatchBase = mul(bIdx, qStrides[0]);
    oBatchBase = mul(bIdx, oStrides[0]);
  }
  switch (plan.kvStorage) {
  case Storage::ragged: {
    Value row0 = lengthAt(kvSeqPtr, bIdx, kvRowsTotal, false);
    Value end = lengthAt(kvSeqPtr, next, kvRowsTotal, false);
    seqKv = maxs(sub(end, row0), c64(0));
    kBatchBase = mul(row0, kStrides[2]);
    vBatchBase = mul(row0, vStrides[2]);
    break;
  }
  case Storage::paged:
    seqKv = lengthAt(kvSeqPtr, bIdx, mul(pagesPerSeq, pageSize), false);
    kBatchBase = vBatchBase = c64(0);
    break;
  case Storage::padded:
    seqKv = lengthAt(kvSeqPtr, bIdx, kvRowsTotal, true);
    kBatchBase = mul(bIdx, kStrides[0]);
    vBatchBase = mul(bIdx, vStrides[0]);
    break;
  }
  Value fromLengths = cmp(P::ne, offsetFromLengths, c64(0));
  qOffset = sel(fromLengths, add(qOffset, sub(seqKv, seqQ)), qOffset);
}

/// Split 0's CTA of query block qb writes the padding rows [max(qLo, len), min(qLo +
/// queries per CTA, Sq)) of each of its heads: 16-byte zero stores to o, -inf to lse.
/// Nothing else writes those rows (the combine kernel skips them), so no order matters.
void KernelEmitter::zeroPaddingRows() {
  auto mine = scf::IfOp::create(b, loc, cmp(P::eq, split, c64(0)), false);
  OpBuilder::InsertionGuard g(b);
  b.setInsertionPointToStart(mine.thenBlock());
  int64_t heads = packed ? group : 1, rows = qPerCta * heads, chunksPerRow = dv / 8;
  Value first = maxs(qLo, seqQ), end = mins(add(qLo, c64(qPerCta)), qRowsTotal);
  // Row r of the CTA: query qLo + r % qPerCta of its (r / qPerCta)-th head.
  auto rowAt = [&](Value r) -> std::pair<Value, Value> {
    Value query = add(qLo, ext64(remu(r, c32(qPerCta))));
    Value head = packed ? add(mul(hkIdx, c64(group)), ext64(divu(r, c32(qPerCta)))) : hIdx;
    return {query, head};
  };
  auto padding = [&](Value query) {
    return andi(cmp(P::sge, query, first), cmp(P::slt, query, end));
  };
  Value oBase = elementPtr(oPtr, eltType, oBatchBase);
  auto v4 = VectorType::get({4}, b.getI32Type());
  for (int64_t i = 0; i * threads < rows * chunksPerRow; ++i) {
    Value c = add(tid, c32(i * threads));
    auto [query, head] = rowAt(divu(c, c32(chunksPerRow)));
    Value col = ext64(mul(remu(c, c32(chunksPerRow)), c32(8)));
    Value inside = andi(cmp(P::ult, c, c32(rows * chunksPerRow)), padding(query));
    auto guard = scf::IfOp::create(b, loc, inside, false);
    OpBuilder::InsertionGuard g2(b);
    b.setInsertionPointToStart(guard.thenBlock());
    Value at = add(add(mul(head, oStrides[1]), mul(query, oStrides[2])), col);
    LLVM::StoreOp::create(b, loc, LLVM::ZeroOp::create(b, loc, v4), elementPtr(oBase, eltType, at), 16);
  }
  if (plan.normalizer != Normalizer::softmax || !plan.lse)
    return;
  Value nullPtr = LLVM::ZeroOp::create(b, loc, ptrType());
  Value hasLse = LLVM::ICmpOp::create(b, loc, LLVM::ICmpPredicate::ne, lsePtr, nullPtr);
  for (int64_t i = 0; i * threads < rows; ++i) {
    Value r = add(tid, c32(i * threads));
    auto [query, head] = rowAt(r);
    Value inside = andi(hasLse, andi(cmp(P::ult, r, c32(rows)), padding(query)));
    auto guard = scf::IfOp::create(b, loc, inside, false);
    OpBuilder::InsertionGuard g2(b);
    b.setInsertionPointToStart(guard.thenBlock());
    Value index = add(mul(add(mul(bIdx, c64(plan.headsQ)), head), seqQParam), query);
    LLVM::StoreOp::create(b, loc, cf(-std::numeric_limits<double>::infinity()),
                          elementPtr(lsePtr, b.getF32Type(), index));
  }
}

//===----------------------------------------------------------------------===//
// Shared-memory tiles
//===----------------------------------------------------------------------===//

/// rows x width elements into shared memory, 16-byte cp.async chunks spread over the
/// CTA; rows that `source` says do not exist are zero-filled.
Value KernelEmitter::tileOffset(Value base, const SmemTile &tile, Value row, Value col) {
  if (!tile.swizzled)
    return add(base, mul(add(mul(row, c32(tile.stride)), col), c32(2)));
  int64_t cols = tile.rowBytes / 2;
  Value slab = divu(col, c32(cols)), inSlab = remu(col, c32(cols));
  // The chunk index XOR address bits 7 and up of the row's start.
  Value rowBits = tile.rowBytes == 128 ? remu(row, c32(8)) : remu(divu(row, c32(2)), c32(4));
  Value chunk = arith::XOrIOp::create(b, loc, divu(inSlab, c32(8)), rowBits);
  Value off = add(mul(slab, c32(tile.rows * tile.rowBytes)), mul(row, c32(tile.rowBytes)));
  return add(base, add(off, add(mul(chunk, c32(16)), mul(remu(inSlab, c32(8)), c32(2)))));
}

void KernelEmitter::loadTileAsync(Value base, RowSource source, int64_t rows, int64_t width,
                                  Value smemOffset, const SmemTile &tile) {
  int64_t chunksPerRow = width / 8, chunks = rows * chunksPerRow;
  // When the CTA covers whole rows per step, every thread keeps one column and its
  // rows advance by a constant: addresses are linear in the (unrolled) step.
  bool wholeRows = threads % chunksPerRow == 0;
  Value rowBase = wholeRows ? divu(tid, c32(chunksPerRow)) : Value();
  Value colBase = wholeRows ? mul(remu(tid, c32(chunksPerRow)), c32(8)) : Value();
  for (int64_t i = 0; i * threads < chunks; ++i) {
    Value c = add(tid, c32(i * threads));
    auto body = [&] {
      Value row = wholeRows ? add(rowBase, c32(i * (threads / chunksPerRow)))
                            : divu(c, c32(chunksPerRow));
      Value col = wholeRows ? colBase : mul(remu(c, c32(chunksPerRow)), c32(8));
      auto [rowOffset, valid] = source(ext64(row));
      // Rows that do not exist copy 0 bytes (zero fill) from the tile's base.
      Value offset = add(rowOffset, mul(ext64(col), c64(2)));
      Value srcOffset = sel(valid, offset, c64(0));
      Value src = LLVM::GEPOp::create(b, loc, ptrType(), b.getI8Type(), base, ValueRange{srcOffset});
      Value srcGlobal = LLVM::AddrSpaceCastOp::create(b, loc, ptrType(1), src);
      Value dstOff = tileOffset(smemOffset, tile, row, col);
      Value bytes = sel(valid, c32(16), c32(0));
      NVVM::CpAsyncOp::create(b, loc, smemAt(dstOff), srcGlobal, 16,
                              NVVM::LoadCacheModifierKind::CG, bytes);
    };
    if ((i + 1) * threads <= chunks) {
      body();
    } else {
      auto guard = scf::IfOp::create(b, loc, cmp(P::ult, c, c32(chunks)), false);
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(guard.thenBlock());
      body();
    }
  }
}

void KernelEmitter::loadRowsAsync(Value base, Value rowStride, Value row0, Value validRows,
                                  int64_t rows, int64_t width, Value smemOffset,
                                  const SmemTile &tile) {
  Value rowStrideBytes = mul(rowStride, c64(2));
  Value tileBase = elementPtr(base, eltType, mul(row0, rowStride));
  loadTileAsync(
      tileBase,
      [&](Value row) -> std::pair<Value, Value> {
        return {mul(row, rowStrideBytes), cmp(P::slt, row, validRows)};
      },
      rows, width, smemOffset, tile);
}

/// The CTA's Q rows into shared memory at offset 0: one head's consecutive queries, or
/// with pack_gqa the queries of every head of the group, interleaved.
void KernelEmitter::loadQTile() {
  if (!packed) {
    Value qBase = elementPtr(qPtr, eltType, add(qBatchBase, mul(hIdx, qStrides[1])));
    loadRowsAsync(qBase, qStrides[2], qLo, qRows, bm, d, c32(0), qTile);
    return;
  }
  Value base = elementPtr(qPtr, eltType, qBatchBase);
  loadTileAsync(
      base,
      [&](Value row) -> std::pair<Value, Value> {
        Value row32 = trunc32(row);
        Value query = rowQuery(row32), head = rowHead(row32);
        Value elems = add(mul(head, qStrides[1]), mul(query, qStrides[2]));
        return {mul(elems, c64(2)), cmp(P::slt, query, seqQ)};
      },
      bm, d, c32(0), qTile);
}

void KernelEmitter::declareRopeTables(gpu::GPUModuleOp module) {
  auto declare = [&](RopeAttr rope, StringRef name) {
    if (!rope)
      return;
    // Per-pair frequencies after scaling, in double (attn.rope's definition).
    SmallVector<double> freqs = rope.getFrequencies();
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(module.getBody());
    auto type = LLVM::LLVMArrayType::get(b.getF64Type(), freqs.size());
    auto tensorType = RankedTensorType::get({int64_t(freqs.size())}, b.getF64Type());
    LLVM::GlobalOp::create(b, loc, type, /*isConstant=*/true, LLVM::Linkage::Internal, name,
                           DenseElementsAttr::get(tensorType, ArrayRef<double>(freqs)));
  };
  declare(plan.qRope, "attn_rope_q");
  declare(plan.kRope, "attn_rope_k");
}

/// Rotates `rows` rows of a tile in shared memory, row r (i32) at position(r) (i64).
/// The angle is reduced modulo 2 pi in double: positions can be large.
void KernelEmitter::rotateInShared(Value smemOffset, const SmemTile &tile, int64_t rows,
                                   RopeAttr rope, function_ref<Value(Value)> position,
                                   StringRef tableName) {
  int64_t half = rope.getRotaryDim() / 2, work = rows * half;
  bool interleaved = rope.getStyle() == RopeStyle::interleaved;
  double mscale = rope.getScaling() == RopeScaling::yarn ? rope.getMscale().getValueAsDouble() : 1.0;
  auto table = LLVM::AddressOfOp::create(b, loc, ptrType(), tableName);
  for (int64_t i = 0; i * threads < work; ++i) {
    Value p = add(tid, c32(i * threads));
    auto body = [&] {
      Value row = divu(p, c32(half)), m = remu(p, c32(half));
      Value i0 = interleaved ? mul(m, c32(2)) : m;
      Value i1 = interleaved ? add(i0, c32(1)) : add(m, c32(half));
      Value p0 = smemAt(tileOffset(smemOffset, tile, row, i0));
      Value p1 = smemAt(tileOffset(smemOffset, tile, row, i1));
      Value x0 = arith::ExtFOp::create(b, loc, b.getF32Type(), LLVM::LoadOp::create(b, loc, eltType, p0).getResult());
      Value x1 = arith::ExtFOp::create(b, loc, b.getF32Type(), LLVM::LoadOp::create(b, loc, eltType, p1).getResult());
      Value freqPtr = LLVM::GEPOp::create(b, loc, ptrType(), b.getF64Type(), table, ValueRange{ext64(m)});
      Value freq = LLVM::LoadOp::create(b, loc, b.getF64Type(), freqPtr);
      Value pos = arith::SIToFPOp::create(b, loc, b.getF64Type(), position(row));
      Value angle = arith::MulFOp::create(b, loc, pos, freq);
      // Nearest whole number of turns (no floor: it would need libdevice on f64).
      Value perTurn = arith::MulFOp::create(b, loc, angle,
          arith::ConstantFloatOp::create(b, loc, b.getF64Type(), APFloat(1.0 / kTwoPi)));
      Value rounded = arith::AddFOp::create(b, loc, perTurn,
          arith::ConstantFloatOp::create(b, loc, b.getF64Type(), APFloat(0.5)));
      Value turns = arith::SIToFPOp::create(b, loc, b.getF64Type(),
          arith::FPToSIOp::create(b, loc, b.getI64Type(), rounded));
      // fptosi truncates toward zero: one turn too many for negative angles.
      Value negative = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OLT, rounded,
          arith::ConstantFloatOp::create(b, loc, b.getF64Type(), APFloat(0.0)));
      turns = arith::SelectOp::create(b, loc, negative, arith::SubFOp::create(b, loc, turns,
          arith::ConstantFloatOp::create(b, loc, b.getF64Type(), APFloat(1.0))), turns);
      Value reduced = arith::SubFOp::create(b, loc, angle, arith::MulFOp::create(b, loc, turns,
          arith::ConstantFloatOp::create(b, loc, b.getF64Type(), APFloat(kTwoPi))));
      Value a32 = arith::TruncFOp::create(b, loc, b.getF32Type(), reduced);
      Value cs = math::CosOp::create(b, loc, a32), sn = math::SinOp::create(b, loc, a32);
      Value y0 = subf(mulf(x0, cs), mulf(x1, sn)), y1 = addf(mulf(x0, sn), mulf(x1, cs));
      if (mscale != 1.0) {
        y0 = mulf(y0, cf(mscale));
        y1 = mulf(y1, cf(mscale));
      }
      LLVM::StoreOp::create(b, loc, arith::TruncFOp::create(b, loc, eltType, y0), p0);
      LLVM::StoreOp::create(b, loc, arith::TruncFOp::create(b, loc, eltType, y1), p1);
    };
    if ((i + 1) * threads <= work) {
      body();
    } else {
      auto guard = scf::IfOp::create(b, loc, cmp(P::ult, p, c32(work)), false);
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(guard.thenBlock());
      body();
    }
  }
}

/// A fragments of this warp's 16 query rows, one per 16 columns of d.
SmallVector<std::array<Value, 4>> KernelEmitter::loadQFragments() {
  // Lane l gives the address of row (l % 8) of matrix l / 8: matrices are
  // (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15).
  Value mat = divu(lane, c32(8));
  Value row = add(add(mul(warp, c32(16)), mul(remu(mat, c32(2)), c32(8))), remu(lane, c32(8)));
  Value colBase = mul(divu(mat, c32(2)), c32(8));
  SmallVector<std::array<Value, 4>> frags;
  for (int64_t kk = 0; kk < d / 16; ++kk) {
    Value col = add(colBase, c32(kk * 16));
    Value off = mul(add(mul(row, c32(qStride)), col), c32(2));
    frags.push_back(ldmatrixX4(smemAt(off), /*trans=*/false));
  }
  return frags;
}

//===----------------------------------------------------------------------===//
// The key schedule: ranges (or a block list), tile classes
//===----------------------------------------------------------------------===//

/// cp.async of the K and V tiles of key block kb into buffer `stage`: two commit
/// groups, empty when there is nothing to load, so that group counting stays uniform.
void KernelEmitter::prefetch(Value valid, Value kb, Value stage) {
  prefetchTile(valid, kb, stage, /*values=*/false);
  prefetchTile(valid, kb, stage, /*values=*/true);
}

void KernelEmitter::prefetchTile(Value valid, Value kb, Value stage, bool values) {
  Value kvLo = mul(kb, c64(bn));
  Value rows = sel(valid, mins(c64(bn), sub(seqKv, kvLo)), c64(0));
  Value *strides = values ? vStrides : kStrides;
  Value base = elementPtr(values ? vPtr : kPtr, eltType,
                          add(values ? vBatchBase : kBatchBase, mul(hkIdx, strides[1])));
  Value off = values ? add(c32(offV), mul(stage, c32(vStageBytes)))
                     : add(c32(offK), mul(stage, c32(kStageBytes)));
  auto guard = scf::IfOp::create(b, loc, valid, false);
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(guard.thenBlock());
    if (!paged()) {
      loadRowsAsync(base, strides[2], kvLo, rows, bn, values ? dv : d, off,
                    values ? vTile : kTile);
    } else {
      // Key j is slot j mod page_size of page page_table[b, j / page_size]; a page id
      // outside the cache reads nothing (zeros; the epilogue masks its keys).
      loadTileAsync(
          base,
          [&](Value row) -> std::pair<Value, Value> {
            Value exists = cmp(P::slt, row, rows);
            Value j = add(kvLo, sel(exists, row, c64(0)));
            auto [page, ok] = pageOf(j);
            Value elems = add(mul(page, strides[0]), mul(remu(j, pageSize), strides[2]));
            return {mul(elems, c64(2)), andi(exists, ok)};
          },
          bn, values ? dv : d, off, values ? vTile : kTile);
    }
  }
  NVVM::CpAsyncCommitGroupOp::create(b, loc);
}

//===----------------------------------------------------------------------===//
// S = Q K^T, the score epilogue
//===----------------------------------------------------------------------===//

SmallVector<Acc> KernelEmitter::computeScores(SmallVector<std::array<Value, 4>> &qFrag, Value stage) {
  SmallVector<Acc> s(bn / 8);
  for (Acc &a : s)
    a = {cf(0), cf(0), cf(0), cf(0)};
  // B fragments from K rows (n) by d columns (k): ldmatrix x4 (no transpose) gives the
  // fragments of key tiles j and j+1 for one 16-column step of d. Matrices:
  // (keys 8j.., d 0-7), (keys 8j.., d 8-15), (keys 8j+8.., d 0-7), (keys 8j+8.., d 8-15).
  Value mat = divu(lane, c32(8));
  Value keyInPair = add(mul(divu(mat, c32(2)), c32(8)), remu(lane, c32(8)));
  Value colInStep = mul(remu(mat, c32(2)), c32(8));
  Value kOff = add(c32(offK), mul(stage, c32(kStageBytes)));
  for (int64_t j = 0; j < bn / 8; j += 2)
    for (int64_t kk = 0; kk < d / 16; ++kk) {
      Value row = add(keyInPair, c32(8 * j));
      Value col = add(colInStep, c32(16 * kk));
      auto frag = ldmatrixX4(smemAt(add(kOff, mul(add(mul(row, c32(kStride)), col), c32(2)))), false);
      s[j] = mma(qFrag[kk], frag[0], frag[1], s[j]);
      s[j + 1] = mma(qFrag[kk], frag[2], frag[3], s[j + 1]);
    }
  return s;
}

SmallVector<Acc> KernelEmitter::epilogue(SmallVector<Acc> s, Value kvLo, bool masked) {
  return staged ? stagedEpilogue(std::move(s), kvLo, masked)
                : unrolledEpilogue(std::move(s), kvLo, masked);
}

namespace {
/// What an op of a mask or score region depends on: nothing per element (uniform),
/// the query row, the key column, or the element (both, or the score itself).
enum Dep : unsigned { kUniform = 0, kRow = 1, kCol = 2, kScore = 4 };

DenseMap<Operation *, unsigned> dependences(Region &region, ArrayRef<unsigned> argDeps) {
  DenseMap<Operation *, unsigned> deps;
  Block &block = region.front();
  auto depOf = [&](Value v) -> unsigned {
    if (auto arg = dyn_cast<BlockArgument>(v))
      return arg.getOwner() == &block ? argDeps[arg.getArgNumber()] : unsigned(kUniform);
    auto it = deps.find(v.getDefiningOp());
    return it == deps.end() ? unsigned(kUniform) : it->second;
  };
  for (Operation &op : block.without_terminator()) {
    unsigned d = kUniform;
    for (Value operand : op.getOperands())
      d |= depOf(operand);
    deps[&op] = d;
  }
  return deps;
}
} // namespace

/// scale, then the score region, and on masked tiles the mask (and the sequence
/// ends), cloned per accumulator element; what depends only on the row (2 per
/// thread) or only on the column (BN/4 per thread) is computed once for it.
SmallVector<Acc> KernelEmitter::unrolledEpilogue(SmallVector<Acc> s, Value kvLo, bool masked) {
  double scale = plan.scale;
  Value negInf = cf(-std::numeric_limits<double>::infinity());
  Value rowBase = add(mul(warp, c32(16)), gq);
  int64_t cols = bn / 4;

  // Row and column coordinates of this thread's elements (only where a region or
  // the bounds need them: a FULL tile with an identity score computes none).
  Value rowI[2], rowH[2], rowPos[2], rowInside[2];
  SmallVector<Value> colJ(cols), colPos(cols), colInside(cols);
  if (masked || !plan.identityScore) {
    for (int r = 0; r < 2; ++r) {
      Value row = r ? add(rowBase, c32(8)) : rowBase;
      rowI[r] = rowQuery(row);
      rowH[r] = rowHead(row);
      rowPos[r] = add(rowI[r], qOffset);
    }
    for (int64_t c = 0; c < cols; ++c) {
      // Column index c covers n-tile c / 2, element parity c % 2.
      colJ[c] = add(kvLo, ext64(add(c32(8 * (c / 2) + (c % 2)), mul(tq, c32(2)))));
      colPos[c] = add(colJ[c], kvOffset);
    }
  }
  if (masked) {
    for (int r = 0; r < 2; ++r)
      rowInside[r] = cmp(P::slt, rowI[r], seqQ);
    for (int64_t c = 0; c < cols; ++c)
      colInside[c] = keyExists(colJ[c]);
  }

  // Evaluates `region` for every element; `lead` are its leading per-element args.
  auto evaluate = [&](Region &region, bool withScore,
                      function_ref<Value(int64_t, int)> score) -> SmallVector<Value> {
    SmallVector<unsigned> argDeps;
    if (withScore)
      argDeps.push_back(kScore);
    // With pack_gqa the head is a property of the row.
    unsigned headDep = packed ? unsigned(kRow) : unsigned(kUniform);
    argDeps.append({kUniform, headDep, kRow, kCol, kRow, kCol, kUniform, kUniform});
    DenseMap<Operation *, unsigned> deps = dependences(region, argDeps);
    Block &block = region.front();
    unsigned first = withScore ? 1 : 0;
    IRMapping base = tensors;
    cloneConstantsUsedIn(region, b, base);
    base.map(block.getArgument(first + 0), bIdx);
    if (!packed)
      base.map(block.getArgument(first + 1), hIdx);
    base.map(block.getArgument(first + 6), seqQ);
    base.map(block.getArgument(first + 7), seqKv);
    for (Operation &inner : block.without_terminator())
      if (deps[&inner] == kUniform)
        b.clone(inner, base);
    auto cloneInto = [&](IRMapping &m, unsigned dep) {
      for (Operation &inner : block.without_terminator())
        if (deps[&inner] == dep)
          b.clone(inner, m);
    };
    SmallVector<IRMapping> rows(2, base), colMaps(cols, base);
    for (int r = 0; r < 2; ++r) {
      rows[r].map(block.getArgument(first + 2), rowI[r]);
      rows[r].map(block.getArgument(first + 4), rowPos[r]);
      if (packed)
        rows[r].map(block.getArgument(first + 1), rowH[r]);
      cloneInto(rows[r], kRow);
    }
    for (int64_t c = 0; c < cols; ++c) {
      colMaps[c].map(block.getArgument(first + 3), colJ[c]);
      colMaps[c].map(block.getArgument(first + 5), colPos[c]);
      cloneInto(colMaps[c], kCol);
    }
    Value yielded = cast<YieldOp>(block.getTerminator()).getValues()[0];
    SmallVector<Value> out;
    for (int64_t j = 0; j < bn / 8; ++j)
      for (int e = 0; e < 4; ++e) {
        int r = e / 2;
        int64_t c = 2 * j + (e % 2);
        IRMapping m = rows[r];
        for (auto [from, to] : colMaps[c].getValueMap())
          m.map(from, to);
        if (withScore)
          m.map(block.getArgument(0), score(j, e));
        for (Operation &inner : block.without_terminator()) {
          unsigned d = deps[&inner];
          if ((d & kScore) || d == (kRow | kCol))
            b.clone(inner, m);
        }
        out.push_back(m.lookupOrDefault(yielded));
      }
    return out;
  };

  SmallVector<Value> scored;
  auto scaled = [&](int64_t j, int e) {
    return rawScores ? s[j][e] : mulf(s[j][e], cf(scale));
  };
  if (plan.identityScore) {
    for (int64_t j = 0; j < bn / 8; ++j)
      for (int e = 0; e < 4; ++e)
        scored.push_back(scaled(j, e));
  } else {
    scored = evaluate(plan.score(), /*withScore=*/true, scaled);
  }
  SmallVector<Value> allowed;
  if (masked)
    allowed = evaluate(plan.mask(), /*withScore=*/false, {});
  for (int64_t j = 0; j < bn / 8; ++j)
    for (int e = 0; e < 4; ++e) {
      Value v = scored[4 * j + e];
      if (masked) {
        Value inside = andi(rowInside[e / 2], colInside[2 * j + (e % 2)]);
        v = sel(andi(inside, allowed[4 * j + e]), v, negInf);
      }
      s[j][e] = v;
    }
  return s;
}

/// The same through shared memory: the tile is written out, every thread evaluates
/// the regions for BM * BN / threads elements in a loop (one clone of each region),
/// and the results are read back. For regions with loops or list scans.
SmallVector<Acc> KernelEmitter::stagedEpilogue(SmallVector<Acc> s, Value kvLo, bool masked) {
  double scale = plan.scale;
  Value negInf = cf(-std::numeric_limits<double>::infinity());
  Value rowBase = add(mul(warp, c32(16)), gq);
  int64_t stride = bn + 1;
  auto slot = [&](Value r, Value c) {
    return smemAt(add(c32(offS), mul(add(mul(r, c32(stride)), c), c32(4))));
  };
  for (int64_t j = 0; j < bn / 8; ++j)
    for (int e = 0; e < 4; ++e) {
      Value r = e < 2 ? rowBase : add(rowBase, c32(8));
      Value c = add(c32(8 * j + (e % 2)), mul(tq, c32(2)));
      LLVM::StoreOp::create(b, loc, s[j][e], slot(r, c));
    }
  NVVM::Barrier0Op::create(b, loc);
  auto loop = scf::ForOp::create(b, loc, arith::ConstantIndexOp::create(b, loc, 0),
                                 arith::ConstantIndexOp::create(b, loc, bm * bn / threads),
                                 arith::ConstantIndexOp::create(b, loc, 1));
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(loop.getBody());
    Value it = arith::IndexCastOp::create(b, loc, b.getI32Type(), loop.getInductionVar());
    Value idx = add(tid, mul(it, c32(threads)));
    Value r = divu(idx, c32(bn)), c = remu(idx, c32(bn));
    Value i = rowQuery(r), h = rowHead(r), jj = add(kvLo, ext64(c));
    Value qPos = add(i, qOffset), kvPos = add(jj, kvOffset);
    Value ptr = slot(r, c);
    Value v = LLVM::LoadOp::create(b, loc, b.getF32Type(), ptr);
    if (!rawScores)
      v = mulf(v, cf(scale));
    if (!plan.identityScore)
      v = inlineRegion(b, plan.score(), {v, bIdx, h, i, jj, qPos, kvPos, seqQ, seqKv}, tensors)[0];
    if (masked) {
      Value inside = andi(cmp(P::slt, i, seqQ), keyExists(jj));
      Value allowed = inlineRegion(b, plan.mask(), {bIdx, h, i, jj, qPos, kvPos, seqQ, seqKv},
                                   tensors)[0];
      v = sel(andi(inside, allowed), v, negInf);
    }
    LLVM::StoreOp::create(b, loc, v, ptr);
  }
  NVVM::Barrier0Op::create(b, loc);
  for (int64_t j = 0; j < bn / 8; ++j)
    for (int e = 0; e < 4; ++e) {
      Value r = e < 2 ? rowBase : add(rowBase, c32(8));
      Value c = add(c32(8 * j + (e % 2)), mul(tq, c32(2)));
      s[j][e] = LLVM::LoadOp::create(b, loc, b.getF32Type(), slot(r, c));
    }
  // The staging area is rewritten by the next tile only after the next barrier.
  return s;
}

//===----------------------------------------------------------------------===//
// The main loop
//===----------------------------------------------------------------------===//

SmallVector<Acc> KernelEmitter::scoreTile(SmallVector<Acc> s, Value kvLo, Value cls) {
  SmallVector<Type> sTypes(size_t(bn / 2), b.getF32Type());
  auto branch = scf::IfOp::create(b, loc, sTypes, noti(tileIsMasked(kvLo, cls)), true);
  for (int masked = 0; masked < 2; ++masked) {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(masked ? branch.elseBlock() : branch.thenBlock());
    SmallVector<Acc> r = epilogue(s, kvLo, masked);
    SmallVector<Value> flat;
    for (Acc &x : r)
      flat.append(x.begin(), x.end());
    scf::YieldOp::create(b, loc, flat);
  }
  for (int64_t j = 0; j < bn / 8; ++j)
    for (int e = 0; e < 4; ++e)
      s[size_t(j)][size_t(e)] = branch.getResult(unsigned(4 * j + e));
  return s;
}

KernelEmitter::Weights KernelEmitter::weigh(SmallVector<Acc> &s, Value m[2], Value l[2]) {
  Type f32 = b.getF32Type();
  Value negInf = cf(-std::numeric_limits<double>::infinity());
  Weights w{{m[0], m[1]}, {l[0], l[1]}, {Value(), Value()}};
  if (plan.normalizer == Normalizer::softmax) {
    // Per row (g and g + 8) the quad holds the whole row.
    Value c = cf(exp2Factor());
    for (int half = 0; half < 2; ++half) {
      Value rowMax = negInf;
      for (int64_t j = 0; j < bn / 8; ++j)
        for (int e = 2 * half; e < 2 * half + 2; ++e)
          rowMax = maxnum(rowMax, s[size_t(j)][size_t(e)]);
      rowMax = quadMax(rowMax);
      Value mNew = maxnum(m[half], rowMax);
      Value dead = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, mNew, negInf);
      Value base = sel(dead, cf(0), mNew);
      Value alpha = sel(dead, cf(1), exp2(mulf(subf(m[half], base), c)));
      // p = exp2(c s - c m): one fma per element.
      Value offset = arith::NegFOp::create(b, loc, mulf(base, c));
      Value sum = cf(0);
      for (int64_t j = 0; j < bn / 8; ++j)
        for (int e = 2 * half; e < 2 * half + 2; ++e) {
          Value &x = s[size_t(j)][size_t(e)];
          x = exp2(math::FmaOp::create(b, loc, x, c, offset));
          sum = addf(sum, x);
        }
      // l stays a per-thread partial sum: alpha is uniform over the quad.
      w.l[half] = addf(mulf(l[half], alpha), sum);
      w.m[half] = mNew;
      w.alpha[half] = alpha;
    }
    return w;
  }
  bool sigmoid = plan.normalizer == Normalizer::sigmoid;
  Value beta = plan.sigmoidBeta ? cf(*plan.sigmoidBeta)
                                   : Value(arith::NegFOp::create(b, loc, math::LogOp::create(
                                         b, loc, arith::SIToFPOp::create(b, loc, f32, seqKv))));
  Value n = arith::SIToFPOp::create(b, loc, f32, seqKv);
  for (Acc &tile : s)
    for (Value &x : tile)
      x = sigmoid ? Value(arith::DivFOp::create(b, loc, cf(1), addf(cf(1), math::ExpOp::create(
                        b, loc, arith::NegFOp::create(b, loc, addf(x, beta))))))
                  : Value(arith::DivFOp::create(b, loc, maxf(x, cf(0)), n));
  return w;
}

void KernelEmitter::rescale(SmallVector<Acc> &o, const Weights &w) {
  if (!w.alpha[0])
    return;
  for (Acc &tile : o)
    for (int e = 0; e < 4; ++e)
      tile[size_t(e)] = mulf(tile[size_t(e)], w.alpha[e / 2]);
}

SmallVector<std::array<Value, 4>> KernelEmitter::pFragments(SmallVector<Acc> &p) {
  SmallVector<std::array<Value, 4>> frags;
  for (int64_t kk = 0; kk < bn / 16; ++kk) {
    Acc &lo = p[size_t(2 * kk)], &hi = p[size_t(2 * kk + 1)];
    frags.push_back({pack(lo[0], lo[1]), pack(lo[2], lo[3]), pack(hi[0], hi[1]), pack(hi[2], hi[3])});
  }
  return frags;
}

void KernelEmitter::rotateKeys(Value kb, Value stage) {
  RopeAttr rope = plan.kRope;
  if (!rope)
    return;
  Value first = add(mul(kb, c64(bn)), kvOffset);
  rotateInShared(add(c32(offK), mul(stage, c32(kStageBytes))), kTile, bn, rope,
                 [&](Value row) { return add(first, ext64(row)); }, "attn_rope_k");
  asyncProxyFence();
  NVVM::Barrier0Op::create(b, loc);
}

/// Loop state holds accumulator tiles as runs of 4 values.
static void appendTiles(SmallVector<Value> &state, ArrayRef<Acc> tiles) {
  for (const Acc &x : tiles)
    state.append(x.begin(), x.end());
}
template <typename Range>
static SmallVector<Acc> tilesAt(Range values, unsigned first, int64_t n) {
  SmallVector<Acc> tiles(n);
  for (int64_t j = 0; j < n; ++j)
    for (int e = 0; e < 4; ++e)
      tiles[size_t(j)][size_t(e)] = values[first + unsigned(4 * j + e)];
  return tiles;
}

/// An scf.while over the state `init` that runs while its first value (the visit's
/// validity) holds; `body` is set to the after-block, whose arguments are the state.
scf::WhileOp KernelEmitter::whileValid(ArrayRef<Value> init, Block *&body) {
  SmallVector<Type> types;
  for (Value v : init)
    types.push_back(v.getType());
  SmallVector<Location> locs(types.size(), loc);
  auto loop = scf::WhileOp::create(b, loc, types, init);
  Block *before = b.createBlock(&loop.getBefore(), {}, types, locs);
  scf::ConditionOp::create(b, loc, before->getArgument(0), before->getArguments());
  body = b.createBlock(&loop.getAfter(), {}, types, locs);
  return loop;
}

/// The wgmma key loop, pipelined one tile deep: at tile j the tensor cores compute
/// S(j+1) = Q K(j+1)^T while the warps mask, score and exponentiate S(j), then
/// O += P(j) V(j); both groups are waited for before the loop goes on, so no
/// accumulator is in flight across iterations. K runs two tiles ahead of P V and V one:
/// at tile j the copies of K(j+2) (into K(j)'s buffer, read last by S(j) one tile
/// before) and V(j+1) (into V(j-1)'s) are issued, then K(j+1) and V(j) are waited for.
void KernelEmitter::emitPipelinedLoop() {
  Type f32 = b.getF32Type();
  Value negInf = cf(-std::numeric_limits<double>::infinity());
  auto after = [&](const Visit &v) { return schedule->next(v); };
  Visit first = schedule->first(), second = after(first);
  prefetchTile(first.valid, first.kb, c32(0), false);
  prefetchTile(first.valid, first.kb, c32(0), true);
  prefetchTile(second.valid, second.kb, c32(1), false);
  // K(0) has landed when at most V(0) and K(1) are pending.
  NVVM::CpAsyncWaitGroupOp::create(b, loc, 2);
  asyncProxyFence();
  NVVM::Barrier0Op::create(b, loc);
  int64_t nS = bn / 8, nO = dv / 8;
  SmallVector<Type> sTypes(size_t(4 * nS), f32);
  auto s0 = scf::IfOp::create(b, loc, sTypes, first.valid, true);
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(s0.thenBlock());
    rotateKeys(first.kb, c32(0));
    SmallVector<Value> flat;
    for (Acc &x : wgmmaScores(c32(0)))
      flat.append(x.begin(), x.end());
    scf::YieldOp::create(b, loc, flat);
    b.setInsertionPointToStart(s0.elseBlock());
    scf::YieldOp::create(b, loc, SmallVector<Value>(size_t(4 * nS), cf(0)));
  }
  // Every warpgroup has read K(0) before K(2) may overwrite it.
  NVVM::Barrier0Op::create(b, loc);

  // Loop state: (valid, kb, cls) of tiles j and j+1, the schedule (a, b) at j+1,
  // j's buffer parity, m0, m1, l0, l1, S(j)..., O...
  SmallVector<Value> init{first.valid, first.kb, first.cls, second.valid, second.kb, second.cls,
                          second.a, second.b, c32(0), negInf, negInf, cf(0), cf(0)};
  constexpr unsigned kS = 13;
  init.append(s0.getResults().begin(), s0.getResults().end());
  for (int64_t i = 0; i < nO * 4; ++i)
    init.push_back(cf(0));
  unsigned kO = kS + unsigned(4 * nS);
  Block *body;
  scf::WhileOp loop = whileValid(init, body);
  {
    auto arg = [&](unsigned i) { return body->getArgument(i); };
    Value kb = arg(1), cls = arg(2), valid1 = arg(3), kb1 = arg(4), cls1 = arg(5);
    Visit scheduled{valid1, arg(6), arg(7), kb1, cls1};
    Value parity = arg(8), other = sub(c32(1), parity);
    Value m[2] = {arg(9), arg(10)}, l[2] = {arg(11), arg(12)};
    SmallVector<Acc> s = tilesAt(body->getArguments(), kS, nS);
    SmallVector<Acc> o = tilesAt(body->getArguments(), kO, nO);

    Visit third = after(scheduled);
    prefetchTile(third.valid, third.kb, parity, false);
    prefetchTile(valid1, kb1, other, true);
    NVVM::CpAsyncWaitGroupOp::create(b, loc, 2);
    asyncProxyFence();
    NVVM::Barrier0Op::create(b, loc);
    auto rope = scf::IfOp::create(b, loc, valid1, false);
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(rope.thenBlock());
      rotateKeys(kb1, other);
    }
    // Without a next tile the descriptors read this tile's K (landed, fenced) and the
    // result is dropped: the wgmma stays unconditional and warpgroup-uniform.
    SmallVector<Acc> sNext = wgmmaScores(sel(valid1, other, parity), /*wait=*/false);

    Value kvLo = mul(kb, c64(bn));
    s = scoreTile(s, kvLo, cls);
    Weights w = weigh(s, m, l);
    rescale(o, w);
    guardNonFiniteValues(o, s, parity, tileIsMasked(kvLo, cls));
    SmallVector<std::array<Value, 4>> pFrag = pFragments(s);
    wgmmaPv(o, pFrag, parity, /*wait=*/false);
    wgmmaWait({&sNext, &o}, &pFrag);
    // Every warpgroup is done with K(j+1) and V(j) before the next tile's copies.
    NVVM::Barrier0Op::create(b, loc);
    SmallVector<Value> yield{valid1, kb1, cls1, third.valid, third.kb, third.cls, third.a,
                             third.b, other, w.m[0], w.m[1], w.l[0], w.l[1]};
    appendTiles(yield, sNext);
    appendTiles(yield, o);
    scf::YieldOp::create(b, loc, yield);
  }
  b.setInsertionPointAfter(loop);
  SmallVector<Acc> o = tilesAt(loop.getResults(), kO, nO);
  finish(o, loop.getResult(9), loop.getResult(10), loop.getResult(11), loop.getResult(12));
}

//===----------------------------------------------------------------------===//
// Non-finite values under masked pairs
//===----------------------------------------------------------------------===//

void KernelEmitter::forEachValueChunk(Value stage, function_ref<void(Value, Value)> f) {
  Value vOff = add(c32(offV), mul(stage, c32(vStageBytes)));
  int64_t chunksPerRow = dv / 8, chunks = bn * chunksPerRow;
  for (int64_t i = 0; i * threads < chunks; ++i) {
    Value c = add(tid, c32(i * threads));
    // Past the last chunk (small tiles): the address is clamped, `valid` is false.
    Value valid = (i + 1) * threads <= chunks ? Value() : cmp(P::ult, c, c32(chunks));
    if (valid)
      c = sel(valid, c, c32(chunks - 1));
    Value row = divu(c, c32(chunksPerRow));
    Value col = mul(remu(c, c32(chunksPerRow)), c32(8));
    f(smemAt(tileOffset(vOff, vTile, row, col)), valid);
  }
}

Value KernelEmitter::nonFiniteHalves(Value word) {
  // All exponent bits set: Inf or NaN (bf16: 0x7f80, fp16: 0x7c00 in each half).
  int64_t e = eltType.isBF16() ? 0x7f80 : 0x7c00;
  Value lo = cmp(P::eq, andi(word, c32(e)), c32(e));
  Value hi = cmp(P::eq, andi(word, c32(e << 16)), c32(e << 16));
  return ori(sel(lo, c32(0xffff), c32(0)), sel(hi, c32(int64_t(0xffff0000)), c32(0)));
}

void KernelEmitter::guardNonFiniteValues(SmallVector<Acc> &o, ArrayRef<Acc> p, Value stage,
                                         Value masked) {
  Type i32 = b.getI32Type(), i64 = b.getI64Type(), f32 = b.getF32Type();
  auto v4 = VectorType::get({4}, i32);
  // 1. Does the V tile hold a non-finite value? (masked tiles only; CTA-uniform, by a
  // barrier that ORs every thread's finding).
  auto scan = scf::IfOp::create(b, loc, TypeRange{b.getI1Type()}, masked, true);
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(scan.thenBlock());
    Value any = c32(0);
    forEachValueChunk(stage, [&](Value ptr, Value valid) {
      Value chunk = LLVM::LoadOp::create(b, loc, v4, ptr, /*alignment=*/16);
      Value nf = c32(0);
      for (int64_t w = 0; w < 4; ++w)
        nf = ori(nf, nonFiniteHalves(LLVM::ExtractElementOp::create(b, loc, chunk, c32(w))));
      any = ori(any, valid ? sel(valid, nf, c32(0)) : nf);
    });
    Value found = NVVM::BarrierOp::create(b, loc, i32, Value(), Value(),
                                          NVVM::BarrierReductionAttr::get(
                                              b.getContext(), NVVM::BarrierReduction::OR),
                                          any)
                      .getRes();
    scf::YieldOp::create(b, loc, ValueRange{cmp(P::ne, found, c32(0))});
    b.setInsertionPointToStart(scan.elseBlock());
    scf::YieldOp::create(b, loc, ValueRange{cbool(false)});
  }
  Value found = scan.getResult(0);

  // 2. Rare: fix up O, then zero the non-finite elements for the tensor cores.
  SmallVector<Type> oTypes(o.size() * 4, f32);
  auto fix = scf::IfOp::create(b, loc, oTypes, found, true);
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(fix.thenBlock());
    // Row masks of P != 0 (rows g and g + 8 of this warp, key j of the tile): the
    // ballot of (nb, e) has bit 4 g' + t' for column 8 nb + 2 t' + e of row g'.
    int64_t words = (bn + 63) / 64;
    SmallVector<Value> rowMask[2];
    for (int half = 0; half < 2; ++half)
      rowMask[half].assign(size_t(words), c64(0));
    Value shift = mul(gq, c32(4));
    for (int64_t nb = 0; nb < bn / 8; ++nb)
      for (int e = 0; e < 2; ++e)
        for (int half = 0; half < 2; ++half) {
          Value nonzero = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::UNE,
                                                p[size_t(nb)][size_t(2 * half + e)], cf(0));
          Value ballot = NVVM::VoteSyncOp::create(b, loc, i32, c32(-1), nonzero,
                                                  NVVM::VoteSyncKind::ballot);
          Value nib = andi(arith::ShRUIOp::create(b, loc, ballot, shift), c32(0xf));
          Value nib64 = arith::ExtUIOp::create(b, loc, i64, nib);
          int64_t col = 8 * nb + e;
          Value &m = rowMask[half][size_t(col / 64)];
          for (int t = 0; t < 4; ++t) {
            Value bit = andi(arith::ShRUIOp::create(b, loc, nib64, c64(t)), c64(1));
            m = ori(m, arith::ShLIOp::create(b, loc, bit, c64(col % 64 + 2 * t)));
          }
        }
    // O[i, c] += v[j, c] for every key j with P[i, j] != 0 and v[j, c] non-finite (P > 0,
    // so P v is v's infinity or NaN; the finite part comes from the matmul).
    SmallVector<Value> init;
    for (Acc &x : o)
      init.append(x.begin(), x.end());
    auto loop = scf::ForOp::create(b, loc, c32(0), c32(bn), c32(1), init);
    {
      OpBuilder::InsertionGuard lg(b);
      b.setInsertionPointToStart(loop.getBody());
      Value j = loop.getInductionVar();
      Value j64 = arith::ExtUIOp::create(b, loc, i64, j);
      Value bit[2];
      for (int half = 0; half < 2; ++half) {
        Value word = rowMask[half][0];
        for (int64_t w = 1; w < words; ++w)
          word = sel(cmp(P::uge, j64, c64(64 * w)), rowMask[half][size_t(w)], word);
        Value sh = arith::RemUIOp::create(b, loc, j64, c64(64));
        bit[half] = cmp(P::ne, andi(arith::ShRUIOp::create(b, loc, word, sh), c64(1)), c64(0));
      }
      Value vOff = add(c32(offV), mul(stage, c32(vStageBytes)));
      SmallVector<Value> next(loop.getRegionIterArgs().begin(), loop.getRegionIterArgs().end());
      for (int64_t jv = 0; jv < int64_t(o.size()); ++jv) {
        Value col = add(c32(8 * jv), mul(tq, c32(2)));
        Value pair = LLVM::LoadOp::create(b, loc, i32, smemAt(tileOffset(vOff, vTile, j, col)), 4);
        Value nf = nonFiniteHalves(pair);
        for (int e = 0; e < 2; ++e) {
          Value isNf = cmp(P::ne, andi(nf, c32(e ? int64_t(0xffff0000) : 0xffff)), c32(0));
          Value bits16 = e ? arith::ShRUIOp::create(b, loc, pair, c32(16)).getResult() : pair;
          Value half16 = arith::TruncIOp::create(b, loc, b.getI16Type(), bits16);
          Value v = arith::ExtFOp::create(
              b, loc, f32, LLVM::BitcastOp::create(b, loc, eltType, half16).getResult());
          for (int half = 0; half < 2; ++half) {
            Value &acc = next[size_t(4 * jv + 2 * half + e)];
            acc = sel(andi(bit[half], isNf), addf(acc, v), acc);
          }
        }
      }
      scf::YieldOp::create(b, loc, next);
    }
    // Every warp has read V before it is changed.
    NVVM::Barrier0Op::create(b, loc);
    forEachValueChunk(stage, [&](Value ptr, Value valid) {
      OpBuilder::InsertionGuard cg(b);
      if (valid)
        b.setInsertionPointToStart(scf::IfOp::create(b, loc, valid, false).thenBlock());
      Value chunk = LLVM::LoadOp::create(b, loc, v4, ptr, /*alignment=*/16);
      for (int64_t w = 0; w < 4; ++w) {
        Value word = LLVM::ExtractElementOp::create(b, loc, chunk, c32(w));
        Value keep = arith::XOrIOp::create(b, loc, nonFiniteHalves(word), c32(-1));
        chunk = LLVM::InsertElementOp::create(b, loc, chunk, andi(word, keep), c32(w));
      }
      LLVM::StoreOp::create(b, loc, chunk, ptr, /*alignment=*/16);
    });
    asyncProxyFence();
    NVVM::Barrier0Op::create(b, loc);
    scf::YieldOp::create(b, loc, loop.getResults());
    b.setInsertionPointToStart(fix.elseBlock());
    scf::YieldOp::create(b, loc, init);
  }
  for (size_t i = 0; i < o.size(); ++i)
    for (int e = 0; e < 4; ++e)
      o[i][size_t(e)] = fix.getResult(unsigned(4 * i + e));
}

/// O += P V on mma.sync: ldmatrix.trans of V rows (k) by columns (n) gives B.
void KernelEmitter::mmaPv(SmallVector<Acc> &o, ArrayRef<std::array<Value, 4>> pFrag, Value stage) {
  Value mat = divu(lane, c32(8));
  Value keyInStep = add(mul(remu(mat, c32(2)), c32(8)), remu(lane, c32(8)));
  Value colInPair = mul(divu(mat, c32(2)), c32(8));
  Value vOff = add(c32(offV), mul(stage, c32(vStageBytes)));
  for (int64_t jv = 0; jv < int64_t(o.size()); jv += 2)
    for (int64_t kk = 0; kk < bn / 16; ++kk) {
      Value row = add(keyInStep, c32(16 * kk));
      Value col = add(colInPair, c32(8 * jv));
      auto frag = ldmatrixX4(smemAt(add(vOff, mul(add(mul(row, c32(vStride)), col), c32(2)))), true);
      o[jv] = mma(pFrag[kk], frag[0], frag[1], o[jv]);
      o[jv + 1] = mma(pFrag[kk], frag[2], frag[3], o[jv + 1]);
    }
}

void KernelEmitter::emitMainLoop(SmallVector<std::array<Value, 4>> &qFrag) {
  Value negInf = cf(-std::numeric_limits<double>::infinity());
  Visit first = schedule->first();
  prefetch(first.valid, first.kb, c32(0));

  // Loop state: (valid, a, b, kb, cls, stage, m0, m1, l0, l1, O...).
  SmallVector<Value> init{first.valid, first.a, first.b, first.kb, first.cls, c32(0),
                          negInf, negInf, cf(0), cf(0)};
  int64_t nO = dv / 8;
  for (int64_t i = 0; i < nO * 4; ++i)
    init.push_back(cf(0));
  Block *after;
  scf::WhileOp loop = whileValid(init, after);
  {
    Value a = after->getArgument(1), bs = after->getArgument(2), kb = after->getArgument(3),
          cls = after->getArgument(4), stage = after->getArgument(5);
    Value m[2] = {after->getArgument(6), after->getArgument(7)};
    Value l[2] = {after->getArgument(8), after->getArgument(9)};
    SmallVector<Acc> o = tilesAt(after->getArguments(), 10, nO);

    // Issue the next visited tile's loads into the other buffer, then wait for this
    // tile's K (its group is the oldest of four in flight).
    Visit next = schedule->next({Value(), a, bs, kb, cls});
    Value other = sub(c32(1), stage);
    prefetch(next.valid, next.kb, other);
    NVVM::CpAsyncWaitGroupOp::create(b, loc, 3);
    asyncProxyFence();
    NVVM::Barrier0Op::create(b, loc);
    Value kvLo = mul(kb, c64(bn));
    rotateKeys(kb, stage);
    SmallVector<Acc> s = wg ? wgmmaScores(stage) : computeScores(qFrag, stage);
    s = scoreTile(s, kvLo, cls);

    Weights w = weigh(s, m, l);
    rescale(o, w);
    Value newM[2] = {w.m[0], w.m[1]}, newL[2] = {w.l[0], w.l[1]};

    // P (registers) times V (shared): the A fragment of k-step kk is two
    // accumulator tiles; ldmatrix.trans of V rows (k) by columns (n) gives B.
    NVVM::CpAsyncWaitGroupOp::create(b, loc, 2);
    asyncProxyFence();
    NVVM::Barrier0Op::create(b, loc);
    guardNonFiniteValues(o, s, stage, tileIsMasked(kvLo, cls));
    SmallVector<std::array<Value, 4>> pFrag = pFragments(s);
    if (wg)
      wgmmaPv(o, pFrag, stage);
    else
      mmaPv(o, pFrag, stage);
    // Every warp is done with this buffer before the next iteration refills it.
    NVVM::Barrier0Op::create(b, loc);
    SmallVector<Value> yield{next.valid, next.a, next.b, next.kb, next.cls, other,
                             newM[0], newM[1], newL[0], newL[1]};
    appendTiles(yield, o);
    scf::YieldOp::create(b, loc, yield);
  }
  b.setInsertionPointAfter(loop);
  SmallVector<Acc> o = tilesAt(loop.getResults(), 10, nO);
  finish(o, loop.getResult(6), loop.getResult(7), loop.getResult(8), loop.getResult(9));
}

void KernelEmitter::finish(SmallVector<Acc> &o, Value m0, Value m1, Value l0, Value l1) {
  // Outstanding (empty) groups are drained before shared memory is reused.
  NVVM::CpAsyncWaitGroupOp::create(b, loc, 0);
  NVVM::Barrier0Op::create(b, loc);
  // One split writes the outputs; several write partials for attn_combine.
  auto single = scf::IfOp::create(b, loc, cmp(P::eq, numSplits, c64(1)), true);
  OpBuilder::InsertionGuard g(b);
  b.setInsertionPointToStart(single.thenBlock());
  storeOutputs(o, m0, m1, l0, l1);
  b.setInsertionPointToStart(single.elseBlock());
  storePartials(o, m0, m1, l0, l1);
}

//===----------------------------------------------------------------------===//
// Outputs
//===----------------------------------------------------------------------===//

void KernelEmitter::storeOutputs(SmallVector<Acc> &o, Value m0, Value m1, Value l0, Value l1) {
  bool softmax = plan.normalizer == Normalizer::softmax;
  Value m[2] = {m0, m1}, l[2] = {l0, l1}, inv[2];
  Value rowBase = add(mul(warp, c32(16)), gq);
  for (int half = 0; half < 2; ++half) {
    if (!softmax) {
      inv[half] = cf(1);
      continue;
    }
    l[half] = quadSum(l[half]);
    Value zero = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, l[half], cf(0));
    inv[half] = sel(zero, cf(0), arith::DivFOp::create(b, loc, cf(1), l[half]));
  }
  // O / l as 16-bit pairs into shared memory (the Q area), row-major, stride qStride.
  for (int64_t j = 0; j < int64_t(o.size()); ++j)
    for (int half = 0; half < 2; ++half) {
      Value r = half ? add(rowBase, c32(8)) : rowBase;
      Value c = add(c32(8 * j), mul(tq, c32(2)));
      Value packed = pack(mulf(o[j][2 * half], inv[half]), mulf(o[j][2 * half + 1], inv[half]));
      Value off = mul(add(mul(r, c32(qStride)), c), c32(2));
      LLVM::StoreOp::create(b, loc, packed, smemAt(off));
    }
  NVVM::Barrier0Op::create(b, loc);
  // Coalesced 16-byte stores of whole rows.
  int64_t chunksPerRow = dv / 8, chunks = bm * chunksPerRow;
  Value oBase = elementPtr(oPtr, eltType, oBatchBase);
  auto v4 = VectorType::get({4}, b.getI32Type());
  for (int64_t i = 0; i * threads < chunks; ++i) {
    Value c = add(tid, c32(i * threads));
    Value row = divu(c, c32(chunksPerRow));
    Value col = mul(remu(c, c32(chunksPerRow)), c32(8));
    Value inside = andi(cmp(P::ult, c, c32(chunks)), cmp(P::slt, ext64(row), qRows));
    auto guard = scf::IfOp::create(b, loc, inside, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(guard.thenBlock());
    Value src = smemAt(mul(add(mul(row, c32(qStride)), col), c32(2)));
    Value data = LLVM::LoadOp::create(b, loc, v4, src, 16);
    Value rowOffset = add(mul(rowHead(row), oStrides[1]), mul(rowQuery(row), oStrides[2]));
    Value dst = elementPtr(oBase, eltType, add(rowOffset, ext64(col)));
    LLVM::StoreOp::create(b, loc, data, dst, 16);
  }
  if (!softmax || !plan.lse)
    return;
  // lse = (m + log2 l) ln 2, -inf for rows with no allowed key; the quad's first lane.
  Value nullPtr = LLVM::ZeroOp::create(b, loc, ptrType());
  Value hasLse = LLVM::ICmpOp::create(b, loc, LLVM::ICmpPredicate::ne, lsePtr, nullPtr);
  Value first = andi(hasLse, cmp(P::eq, tq, c32(0)));
  for (int half = 0; half < 2; ++half) {
    Value row = half ? add(rowBase, c32(8)) : rowBase;
    Value inside = andi(first, cmp(P::slt, ext64(row), qRows));
    auto guard = scf::IfOp::create(b, loc, inside, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(guard.thenBlock());
    // m is in units where p = exp2(c (s - m)): lse = (c m + log2 l) ln 2.
    Value logL = math::Log2Op::create(b, loc, l[half]);
    Value lse = mulf(addf(mulf(m[half], cf(exp2Factor())), logL), cf(0.69314718055994531));
    Value zero = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, l[half], cf(0));
    lse = sel(zero, cf(-std::numeric_limits<double>::infinity()), lse);
    LLVM::StoreOp::create(b, loc, lse, elementPtr(lsePtr, b.getF32Type(), lseIndex(row)));
  }
}

void KernelEmitter::storePartials(SmallVector<Acc> &o, Value m0, Value m1, Value l0, Value l1) {
  bool softmax = plan.normalizer == Normalizer::softmax;
  Value m[2] = {m0, m1}, l[2] = {l0, l1};
  Value rowBase = add(mul(warp, c32(16)), gq);
  Type f32 = b.getF32Type();
  auto v2 = VectorType::get({2}, f32);
  for (int half = 0; half < 2; ++half) {
    Value row = half ? add(rowBase, c32(8)) : rowBase;
    // Shuffles first: every lane takes part.
    Value sum = softmax ? quadSum(l[half]) : cf(1);
    Value zero = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, sum, cf(0));
    Value inv = softmax ? sel(zero, cf(0), arith::DivFOp::create(b, loc, cf(1), sum)) : cf(1);
    auto guard = scf::IfOp::create(b, loc, cmp(P::slt, ext64(row), qRows), false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(guard.thenBlock());
    // Partials are [split, B, Hq, Sq] rows of dv floats.
    Value index = add(mul(add(mul(add(mul(split, batch), bIdx), c64(plan.headsQ)), rowHead(row)),
                          seqQParam),
                      rowQuery(row));
    for (int64_t j = 0; j < int64_t(o.size()); ++j) {
      Value col = ext64(add(c32(8 * j), mul(tq, c32(2))));
      Value pair = LLVM::UndefOp::create(b, loc, v2);
      pair = LLVM::InsertElementOp::create(b, loc, pair, mulf(o[j][2 * half], inv), c32(0));
      pair = LLVM::InsertElementOp::create(b, loc, pair, mulf(o[j][2 * half + 1], inv), c32(1));
      Value dst = elementPtr(oPartial, f32, add(mul(index, c64(dv)), col));
      LLVM::StoreOp::create(b, loc, pair, dst, 8);
    }
    if (!softmax)
      continue;
    auto first = scf::IfOp::create(b, loc, cmp(P::eq, tq, c32(0)), false);
    b.setInsertionPointToStart(first.thenBlock());
    Value logL = math::Log2Op::create(b, loc, sum);
    Value lse = mulf(addf(mulf(m[half], cf(exp2Factor())), logL), cf(0.69314718055994531));
    lse = sel(zero, cf(-std::numeric_limits<double>::infinity()), lse);
    LLVM::StoreOp::create(b, loc, lse, elementPtr(lsePartial, f32, index));
  }
}

void KernelEmitter::buildSchedule() {
  KvScheduleSource src;
  // Lists are per head: a packed CTA walks the ranges instead (the same blocks).
  if (!packed && plan.listInput) {
    src.list = tensors.lookup(plan.inputs[*plan.listInput]);
    src.listRows = plan.listRows;
  }
  src.ranges = &plan.ranges();
  src.tileClass = &plan.tileClass();
  src.batch = bIdx;
  src.heads = ctaHeads();
  src.qLo = qLo;
  src.qHi = qHi;
  src.qOffset = qOffset;
  src.kvOffset = kvOffset;
  src.seqQ = seqQ;
  src.seqKv = seqKv;
  src.split = split;
  src.numSplits = numSplits;
  src.blockN = bn;
  src.captured = tensors;
  schedule = std::make_unique<KvSchedule>(b, loc, std::move(src));
}

//===----------------------------------------------------------------------===//
// The kernel
//===----------------------------------------------------------------------===//

void KernelEmitter::emit(gpu::GPUModuleOp module, GpuKernelInfo &info) {
  MLIRContext *ctx = b.getContext();
  Type i64 = b.getI64Type();
  info.params.clear();
  SmallVector<Type> argTypes;
  auto param = [&](const std::string &name, bool pointer) {
    info.params.push_back({name, pointer ? "ptr" : "i64"});
    argTypes.push_back(pointer ? ptrType() : i64);
  };
  for (const char *n : {"q", "k", "v", "o", "lse"})
    param(n, true);
  SmallVector<std::string> names;
  for (const std::string &n : plan.inputNames)
    names.push_back(n);
  for (const std::string &n : names)
    param("input:" + n, true);
  for (const char *n : {"batch", "seq_q", "seq_kv", "q_offset", "kv_offset"})
    param(n, false);
  for (const char *t : {"q", "k", "v", "o"})
    for (const char *s : {"b", "h", "s"})
      param(std::string(t) + "_stride_" + s, false);
  for (auto [i, in] : llvm::enumerate(plan.inputs))
    for (int64_t dIdx = 0; dIdx < cast<ShapedType>(in.getType()).getRank(); ++dIdx)
      param("input:" + names[i] + ":dim" + std::to_string(dIdx), false);
  param("num_splits", false);
  param("scratch:o_partial", true);
  param("scratch:lse_partial", true);
  if (perSequence) {
    // docs/bundle-and-abi.md, "Storage": the sequence buffers, then the buffers' rows
    // (q: total_q ragged, Sq padded; k: total_kv ragged, Skv padded, pages x
    // page_size paged) and the page geometry.
    param(raggedQ() ? "cu_seqlens_q" : "q_lens", true);
    if (paged())
      param("page_table", true);
    param(plan.kvStorage == Storage::ragged ? "cu_seqlens_kv" : "kv_lens", true);
    param("q_rows", false);
    param("kv_rows", false);
    if (paged())
      for (const char *n : {"page_size", "num_pages", "pages_per_seq", "page_table_stride"})
        param(n, false);
    param("q_offset_from_lengths", false);
  }

  b.setInsertionPointToEnd(module.getBody());
  auto smem = LLVM::GlobalOp::create(b, loc, LLVM::LLVMArrayType::get(b.getI8Type(), 0),
                                     /*isConstant=*/false, LLVM::Linkage::External, "attn_smem",
                                     Attribute(), /*alignment=*/wg ? 1024 : 16, /*addrSpace=*/3);
  (void)smem;
  declareRopeTables(module);
  b.setInsertionPointToEnd(module.getBody());
  info.symbol = "attn_kernel";
  auto func = gpu::GPUFuncOp::create(b, loc, info.symbol, b.getFunctionType(argTypes, {}));
  func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), UnitAttr::get(ctx));
  func->setAttr("nvvm.maxntid", b.getDenseI32ArrayAttr({int32_t(threads), 1, 1}));
  // One CTA per SM is enough: without this ptxas may cap registers for occupancy
  // and spill instead.
  func->setAttr("nvvm.minctasm", b.getI32IntegerAttr(1));
  Block *entry = &func.getBody().front();
  b.setInsertionPointToStart(entry);
  readParams(entry);

  tid = NVVM::ThreadIdXOp::create(b, loc, b.getI32Type());
  lane = remu(tid, c32(32));
  warp = divu(tid, c32(32));
  gq = divu(lane, c32(4));
  tq = remu(lane, c32(4));
  Value qb = ext64(NVVM::BlockIdXOp::create(b, loc, b.getI32Type()));
  Value head = ext64(NVVM::BlockIdYOp::create(b, loc, b.getI32Type()));
  // z = split * batch + b.
  Value z = ext64(NVVM::BlockIdZOp::create(b, loc, b.getI32Type()));
  bIdx = arith::RemUIOp::create(b, loc, z, batch);
  split = arith::DivUIOp::create(b, loc, z, batch);
  if (packed) {
    hkIdx = head;
  } else {
    hIdx = head;
    hkIdx = arith::DivSIOp::create(b, loc, hIdx, c64(group));
  }
  if (perSequence) {
    readSequence();
  } else {
    qRow0 = c64(0);
    qBatchBase = mul(bIdx, qStrides[0]);
    oBatchBase = mul(bIdx, oStrides[0]);
    kBatchBase = mul(bIdx, kStrides[0]);
    vBatchBase = mul(bIdx, vStrides[0]);
  }
  qLo = mul(qb, c64(qPerCta));
  // The grid covers the longest sequence: a shorter one's extra CTAs stop (the whole
  // CTA: the barriers below stay uniform).
  scf::IfOp active;
  if (perSequence) {
    active = scf::IfOp::create(b, loc, cmp(P::slt, qLo, seqQ), false);
    b.setInsertionPointToStart(active.thenBlock());
  }
  Value queries = mins(c64(qPerCta), sub(seqQ, qLo));
  qHi = add(qLo, queries);
  // Rows that exist: packed rows interleave the group's heads, query by query.
  qRows = packed ? mul(queries, c64(group)) : queries;
  smemBase = LLVM::AddressOfOp::create(b, loc, ptrType(3), "attn_smem");
  if (wg) {
    // Swizzled tiles need a 1024-byte-aligned base; the launch asks for 1 KiB more so
    // that the kernel aligns it itself rather than trust the driver's placement.
    Value addr = LLVM::PtrToIntOp::create(b, loc, b.getI32Type(), smemBase);
    Value pad = andi(sub(c32(0), addr), c32(1023));
    smemBase = smemAt(pad);
    smemAddress = add(addr, pad);
  }
  for (auto [i, in] : llvm::enumerate(plan.inputs)) {
    // A dim declared Sq or Skv holds the batch's longest length; its extent is the
    // sequence's own, so that a read past it is out of bounds (masked), as for the
    // sequence alone.
    SmallVector<Value> sizes(inputDims[i]);
    for (auto [r, kind] : llvm::enumerate(plan.inputSeqDims[i]))
      if (kind != KernelPlan::SeqDim::none)
        sizes[r] = mins(sizes[r], kind == KernelPlan::SeqDim::q ? seqQ : seqKv);
    Value mem = memrefFromPointer(inputPtrs[i], cast<ShapedType>(in.getType()), inputDims[i], sizes);
    tensors.map(in, mem);
    tensors.map(plan.inputViews[i], mem);
  }

  // Q: staged through shared memory (rotated there), then kept as A fragments.
  loadQTile();
  NVVM::CpAsyncCommitGroupOp::create(b, loc);
  NVVM::CpAsyncWaitGroupOp::create(b, loc, 0);
  asyncProxyFence();
  NVVM::Barrier0Op::create(b, loc);
  if (RopeAttr rope = plan.qRope) {
    rotateInShared(c32(0), qTile, bm, rope,
                   [&](Value row) { return add(rowQuery(row), qOffset); }, "attn_rope_q");
    asyncProxyFence();
    NVVM::Barrier0Op::create(b, loc);
  }
  // wgmma reads Q from shared memory on every tile; mma.sync keeps its fragments.
  SmallVector<std::array<Value, 4>> qFrag;
  if (!wg)
    qFrag = loadQFragments();

  // The key schedule.
  buildSchedule();
  // The pipelined loop keeps a second S tile live (block_n / 2 registers per thread):
  // wider tiles have no room for it and run the plain loop.
  if (cfg.pipelined())
    emitPipelinedLoop();
  else
    emitMainLoop(qFrag);
  if (active)
    b.setInsertionPointAfter(active);
  if (perSequence && !raggedQ())
    zeroPaddingRows();
  gpu::ReturnOp::create(b, loc);

  info.threads = threads;
  info.smemBytes = sharedBytes();
  info.gridX = "ceil_div(seq_q, " + std::to_string(qPerCta) + ")";
  info.gridY = packed ? "heads_kv" : "heads_q";
  info.gridZ = "batch * num_splits";
  info.queriesPerCta = qPerCta;
  info.perKvHead = packed;
}

/// One warp per output row (b, h, q): with softmax, lse = log sum_s exp(lse_s) and
/// o = sum_s exp(lse_s - lse) o_s (o_s normalised by its own l); a row no split saw
/// gets o = 0 and lse = -inf. Other normalisers are sums already: o = sum_s o_s.
void KernelEmitter::emitCombine(gpu::GPUModuleOp module, GpuKernelInfo &info) {
  MLIRContext *ctx = b.getContext();
  Type i64 = b.getI64Type(), f32 = b.getF32Type();
  bool softmax = plan.normalizer == Normalizer::softmax;
  constexpr int64_t kRowsPerCta = 4;
  SmallVector<Type> argTypes;
  info.combineParams.clear();
  auto param = [&](const std::string &name, bool pointer) {
    info.combineParams.push_back({name, pointer ? "ptr" : "i64"});
    argTypes.push_back(pointer ? ptrType() : i64);
  };
  for (const char *n : {"scratch:o_partial", "scratch:lse_partial", "o", "lse"})
    param(n, true);
  for (const char *n : {"batch", "seq_q", "num_splits", "o_stride_b", "o_stride_h", "o_stride_s"})
    param(n, false);
  // Per-sequence: rows past a sequence's length are skipped, ragged rows lie at the
  // sequence's row base.
  if (perSequence) {
    param(raggedQ() ? "cu_seqlens_q" : "q_lens", true);
    param("q_rows", false);
  }
  b.setInsertionPointToEnd(module.getBody());
  auto func = gpu::GPUFuncOp::create(b, loc, "attn_combine", b.getFunctionType(argTypes, {}));
  func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), UnitAttr::get(ctx));
  func->setAttr("nvvm.maxntid", b.getDenseI32ArrayAttr({int32_t(32 * kRowsPerCta), 1, 1}));
  Block *entry = &func.getBody().front();
  b.setInsertionPointToStart(entry);
  Value oPart = entry->getArgument(0), lsePart = entry->getArgument(1), out = entry->getArgument(2),
        lseOut = entry->getArgument(3), nBatch = entry->getArgument(4), nQ = entry->getArgument(5),
        splits = entry->getArgument(6), sB = entry->getArgument(7), sH = entry->getArgument(8),
        sS = entry->getArgument(9);
  Value seqPtr = perSequence ? entry->getArgument(10) : Value();
  Value rowsTotal = perSequence ? entry->getArgument(11) : Value();
  Value t = NVVM::ThreadIdXOp::create(b, loc, b.getI32Type());
  Value l = remu(t, c32(32)), w = divu(t, c32(32));
  Value cta = ext64(NVVM::BlockIdXOp::create(b, loc, b.getI32Type()));
  Value row = add(mul(cta, c64(kRowsPerCta)), ext64(w));
  Value rows = mul(mul(nBatch, c64(plan.headsQ)), nQ);
  auto guard = scf::IfOp::create(b, loc, cmp(P::slt, row, rows), false);
  b.setInsertionPointToStart(guard.thenBlock());
  Value q = arith::RemUIOp::create(b, loc, row, nQ);
  Value bh = arith::DivUIOp::create(b, loc, row, nQ);
  Value h = arith::RemUIOp::create(b, loc, bh, c64(plan.headsQ));
  Value bi = arith::DivUIOp::create(b, loc, bh, c64(plan.headsQ));
  // Where row q of the sequence is written: o at (b, h, q) padded or (row0 + q, h)
  // ragged; lse at the partial row padded, (row0 + q) Hq + h ragged.
  Value oElem = add(add(mul(bi, sB), mul(h, sH)), mul(q, sS));
  Value lseElem = row;
  if (perSequence) {
    Value len, row0 = c64(0);
    if (raggedQ()) {
      row0 = lengthAt(seqPtr, bi, rowsTotal, false);
      len = maxs(sub(lengthAt(seqPtr, add(bi, c64(1)), rowsTotal, false), row0), c64(0));
      oElem = add(mul(add(row0, q), sS), mul(h, sH));
      lseElem = add(mul(add(row0, q), c64(plan.headsQ)), h);
    } else {
      len = lengthAt(seqPtr, bi, rowsTotal, true);
    }
    auto inside = scf::IfOp::create(b, loc, cmp(P::slt, q, len), false);
    b.setInsertionPointToStart(inside.thenBlock());
  }
  Value zero = arith::ConstantIndexOp::create(b, loc, 0), one = arith::ConstantIndexOp::create(b, loc, 1);
  Value splitsIdx = arith::IndexCastOp::create(b, loc, b.getIndexType(), splits);
  auto partRow = [&](Value s) { return add(mul(ext64(arith::IndexCastOp::create(b, loc, b.getI32Type(), s)), rows), row); };
  auto lseOf = [&](Value s) { return LLVM::LoadOp::create(b, loc, f32, elementPtr(lsePart, f32, partRow(s))).getResult(); };
  const double log2e = 1.4426950408889634, ln2 = 0.69314718055994531;
  Value negInf = cf(-std::numeric_limits<double>::infinity());
  Value total, dead;
  if (softmax) {
    auto maxLoop = scf::ForOp::create(b, loc, zero, splitsIdx, one, ValueRange{negInf});
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(maxLoop.getBody());
      scf::YieldOp::create(b, loc, ValueRange{maxnum(maxLoop.getRegionIterArgs()[0], lseOf(maxLoop.getInductionVar()))});
    }
    Value m = maxLoop.getResult(0);
    dead = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, m, negInf);
    Value base = sel(dead, cf(0), m);
    auto sumLoop = scf::ForOp::create(b, loc, zero, splitsIdx, one, ValueRange{cf(0)});
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(sumLoop.getBody());
      Value e = exp2(mulf(subf(lseOf(sumLoop.getInductionVar()), base), cf(log2e)));
      scf::YieldOp::create(b, loc, ValueRange{addf(sumLoop.getRegionIterArgs()[0], e)});
    }
    total = addf(base, mulf(math::Log2Op::create(b, loc, sumLoop.getResult(0)), cf(ln2)));
    total = sel(dead, negInf, total);
  }
  Value oBase = elementPtr(out, eltType, oElem);
  for (int64_t c0 = 0; c0 < dv; c0 += 32) {
    Value col = add(ext64(l), c64(c0));
    OpBuilder::InsertionGuard g(b);
    if (dv - c0 < 32) {
      auto inside = scf::IfOp::create(b, loc, cmp(P::slt, col, c64(dv)), false);
      b.setInsertionPointToStart(inside.thenBlock());
    }
    auto acc = scf::ForOp::create(b, loc, zero, splitsIdx, one, ValueRange{cf(0)});
    {
      OpBuilder::InsertionGuard g2(b);
      b.setInsertionPointToStart(acc.getBody());
      Value s = acc.getInductionVar();
      Value x = LLVM::LoadOp::create(b, loc, f32, elementPtr(oPart, f32, add(mul(partRow(s), c64(dv)), col)));
      if (softmax) {
        // A split that saw no key has lse_s = -inf: weight 0 (and o_s = 0).
        Value wgt = exp2(mulf(subf(lseOf(s), sel(dead, cf(0), total)), cf(log2e)));
        x = mulf(sel(dead, cf(0), wgt), x);
      }
      scf::YieldOp::create(b, loc, ValueRange{addf(acc.getRegionIterArgs()[0], x)});
    }
    Value v = arith::TruncFOp::create(b, loc, eltType, acc.getResult(0));
    LLVM::StoreOp::create(b, loc, v, elementPtr(oBase, eltType, col));
  }
  if (softmax && plan.lse) {
    Value nullPtr = LLVM::ZeroOp::create(b, loc, ptrType());
    Value has = LLVM::ICmpOp::create(b, loc, LLVM::ICmpPredicate::ne, lseOut, nullPtr);
    auto store = scf::IfOp::create(b, loc, andi(has, cmp(P::eq, l, c32(0))), false);
    b.setInsertionPointToStart(store.thenBlock());
    LLVM::StoreOp::create(b, loc, total, elementPtr(lseOut, f32, lseElem));
  }
  b.setInsertionPointToEnd(entry);
  gpu::ReturnOp::create(b, loc);

  info.combineSymbol = "attn_combine";
  info.combineThreads = 32 * kRowsPerCta;
  info.combineGridX = "ceil_div(batch * heads_q * seq_q, " + std::to_string(kRowsPerCta) + ")";
  // f32 partials: o [splits, B, Hq, Sq, Dv] and lse [splits, B, Hq, Sq].
  info.scratch = {{"o_partial", "num_splits * batch * heads_q * seq_q * " + std::to_string(dv * 4)},
                  {"lse_partial", "num_splits * batch * heads_q * seq_q * 4"}};
}

} // namespace

LogicalResult emitNvidiaKernel(KernelPlan &plan, const GpuConfig &config, ModuleOp target,
                               GpuKernelInfo &info) {
  auto refuse = [&] {
    return plan.grid.emitError("this kernel cannot run as ") << config.name() << ": ";
  };
  if (failed(checkGpuConfig(plan, config, refuse)))
    return failure();
  if (config.blockM != plan.blockM || config.blockN != plan.blockN)
    return plan.grid.emitError("the tiled program's blocks (")
           << plan.blockM << "x" << plan.blockN << ") differ from the configuration's ("
           << config.blockM << "x" << config.blockN << ")";
  if (!plan.smem)
    return plan.grid.emitError(
        "the staged tiles have no #attn.shared places: run attn-gpu-plan-shared-memory first");
  MLIRContext *ctx = plan.kernel.getContext();
  ctx->loadDialect<gpu::GPUDialect, NVVM::NVVMDialect, LLVM::LLVMDialect, memref::MemRefDialect,
                   scf::SCFDialect, math::MathDialect>();
  target->setAttr(gpu::GPUDialect::getContainerModuleAttrName(), UnitAttr::get(ctx));
  OpBuilder b(ctx);
  b.setInsertionPointToEnd(target.getBody());
  auto module = gpu::GPUModuleOp::create(b, plan.loc(), "attn_kernels");
  KernelEmitter emitter(plan, config, b);
  emitter.emit(module, info);
  emitter.emitCombine(module, info);
  return success();
}

} // namespace attune
