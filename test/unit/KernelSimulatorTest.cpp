//===- KernelSimulatorTest.cpp - the simulator's checks on broken kernels --===//
//
// A small attention kernel runs clean on the simulator and matches a float64
// reference; then each check is shown to fire on a deliberately broken kernel or
// launch: a cp.async wait that retires too little, a buffer refilled while others
// read it, an out-of-bounds or misaligned access, an operand fence before the wgmma
// wait, copies left in flight at the end; and PTX's approximate transcendentals.
//
//===----------------------------------------------------------------------===//
#include "runtime/src/HalfFloat.h"
#include "codegen/Diagnostics.h"
#include "codegen/nvidia/KernelSimulator.h"
#include "codegen/nvidia/PtxMath.h"
#include "codegen/nvidia/NvidiaPipeline.h"
#include "specs/Importer.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <random>

using namespace attune;
using namespace mlir;

namespace {

constexpr int64_t kB = 1, kH = 2, kS = 70, kD = 64;

struct Launch {
  MLIRContext ctx;
  OwningOpRef<ModuleOp> l1, kernel;
  GpuKernelInfo info;
  std::vector<uint16_t> q, k, v, o;
  std::vector<float> lse, qf, kf, vf;
  std::map<std::string, SimArg> named;

  explicit Launch(bool wgmma, int64_t blockN = 64) {
    nlohmann::json spec = nlohmann::json::parse(
        R"({"name": "t", "heads_q": 2, "head_dim": 64, "outputs": ["o", "lse"]})");
    SpecInfo si;
    SpecError err;
    l1 = importSpec(ctx, spec, si, err);
    EXPECT_TRUE(l1) << err.message;
    GpuConfig c;
    c.blockM = 64;
    c.blockN = blockN;
    c.wgmma = wgmma;
    c.arch = wgmma ? "sm_90a" : "sm_80";
    DiagnosticCollector diags(l1->getContext());
    FailureOr<KernelModule> built = buildKernelModule(*l1, c);
    EXPECT_TRUE(succeeded(built)) << diags.text();
    if (succeeded(built)) {
      kernel = std::move(built->module);
      info = built->info;
    }
    std::mt19937 gen(7);
    std::normal_distribution<float> dist;
    auto fill = [&](std::vector<uint16_t> &h, std::vector<float> &f) {
      h.resize(size_t(kB * kH * kS * kD));
      f.resize(h.size());
      for (size_t i = 0; i < h.size(); ++i) {
        h[i] = half::toBf16(dist(gen));
        f[i] = half::fromBf16(h[i]);
      }
    };
    fill(q, qf);
    fill(k, kf);
    fill(v, vf);
    o.assign(q.size(), 0x7fc0);
    lse.assign(size_t(kB * kH * kS), NAN);
    auto ptr = [](void *p, size_t bytes, const char *name) {
      SimArg a;
      a.pointer = true;
      a.ptr = p;
      a.bytes = int64_t(bytes);
      a.name = name;
      return a;
    };
    auto val = [](int64_t x) {
      SimArg a;
      a.value = x;
      return a;
    };
    named["q"] = ptr(q.data(), 2 * q.size(), "q");
    named["k"] = ptr(k.data(), 2 * k.size(), "k");
    named["v"] = ptr(v.data(), 2 * v.size(), "v");
    named["o"] = ptr(o.data(), 2 * o.size(), "o");
    named["lse"] = ptr(lse.data(), 4 * lse.size(), "lse");
    named["batch"] = val(kB);
    named["seq_q"] = val(kS);
    named["seq_kv"] = val(kS);
    named["q_offset"] = val(0);
    named["kv_offset"] = val(0);
    named["num_splits"] = val(1);
    named["scratch:o_partial"] = ptr(nullptr, 0, "scratch:o_partial");
    named["scratch:lse_partial"] = ptr(nullptr, 0, "scratch:lse_partial");
    // Every NVIDIA kernel is per-sequence: null lengths mean whole buffers.
    named["q_lens"] = ptr(nullptr, 0, "q_lens");
    named["kv_lens"] = ptr(nullptr, 0, "kv_lens");
    named["q_rows"] = val(kS);
    named["kv_rows"] = val(kS);
    named["q_offset_from_lengths"] = val(0);
    for (const char *t : {"q", "k", "v", "o"}) {
      named[std::string(t) + "_stride_b"] = val(kH * kS * kD);
      named[std::string(t) + "_stride_h"] = val(kS * kD);
      named[std::string(t) + "_stride_s"] = val(kD);
    }
  }

  /// "" when the kernel ran clean, else the simulator's error.
  std::string run() {
    std::vector<SimArg> args;
    for (const KernelParam &p : info.params) {
      auto it = named.find(p.name);
      if (it == named.end())
        return "no value for " + p.name;
      args.push_back(it->second);
    }
    std::string error;
    std::array<int64_t, 3> grid = {(kS + info.queriesPerCta - 1) / info.queriesPerCta, kH, kB};
    if (!simulateKernel(*kernel, info.symbol, grid, info.threads, info.smemBytes, args, error))
      return error;
    return "";
  }

  /// Largest error of o against softmax(q k^T / sqrt(d)) v in float64.
  double maxError() const {
    double worst = 0;
    for (int64_t h = 0; h < kH; ++h)
      for (int64_t i = 0; i < kS; ++i) {
        std::vector<double> p(kS);
        double m = -INFINITY, l = 0;
        for (int64_t j = 0; j < kS; ++j) {
          double s = 0;
          for (int64_t d = 0; d < kD; ++d)
            s += double(qf[size_t((h * kS + i) * kD + d)]) * kf[size_t((h * kS + j) * kD + d)];
          p[size_t(j)] = s / std::sqrt(double(kD));
          m = std::max(m, p[size_t(j)]);
        }
        for (double &x : p)
          l += (x = std::exp(x - m));
        for (int64_t d = 0; d < kD; ++d) {
          double ref = 0;
          for (int64_t j = 0; j < kS; ++j)
            ref += p[size_t(j)] / l * vf[size_t((h * kS + j) * kD + d)];
          double got = half::fromBf16(o[size_t((h * kS + i) * kD + d)]);
          worst = std::max(worst, std::isnan(got) ? INFINITY : std::fabs(got - ref));
        }
      }
    return worst;
  }

  template <typename OpT> SmallVector<OpT> all() {
    SmallVector<OpT> ops;
    kernel->walk([&](OpT op) { ops.push_back(op); });
    return ops;
  }
};

bool contains(const std::string &s, const std::string &what) { return s.find(what) != std::string::npos; }

TEST(KernelSimulator, CleanKernelsMatchTheReference) {
  for (bool wgmma : {false, true})
    for (int64_t bn : {64, 128}) {
      Launch l(wgmma, bn);
      EXPECT_EQ(l.run(), "") << "wgmma " << wgmma << " block_n " << bn;
      EXPECT_LT(l.maxError(), 2e-2) << "wgmma " << wgmma << " block_n " << bn;
    }
}

TEST(KernelSimulator, CpAsyncWaitRetiringTooLittleIsARace) {
  // Mutation: each cp.async.wait_group keeps one more group in flight (waits for less).
  Launch l(false);
  for (NVVM::CpAsyncWaitGroupOp w : l.all<NVVM::CpAsyncWaitGroupOp>())
    w.setN(w.getN() + 1);
  std::string error = l.run();
  EXPECT_TRUE(contains(error, "shared-memory race")) << error;
  EXPECT_TRUE(contains(error, "in flight (no cp.async.wait_group has landed it)")) << error;
  EXPECT_TRUE(contains(error, "nvvm.ldmatrix")) << error; // the op that read too early
}

TEST(KernelSimulator, CpAsyncWaitMovedPastTheBarrierIsARace) {
  // Mutation: the first wait (Q) moved after the barrier that follows it: other
  // threads read bytes it lands with no barrier between.
  Launch l(false);
  NVVM::CpAsyncWaitGroupOp w = l.all<NVVM::CpAsyncWaitGroupOp>().front();
  Operation *barrier = w->getNextNode();
  while (barrier && !isa<NVVM::Barrier0Op>(barrier))
    barrier = barrier->getNextNode();
  ASSERT_TRUE(barrier);
  w->moveAfter(barrier);
  std::string error = l.run();
  EXPECT_TRUE(contains(error, "race")) << error;
}

TEST(KernelSimulator, RefillWhileOthersReadIsARace) {
  // Mutation: the barrier at the end of the key loop ("every warp is done with this
  // buffer before the next iteration refills it") removed. The refill's cp.async is
  // issued in the epoch of the other warps' reads: a race at the issue, though the
  // copy would land (at the next wait) only after a barrier. (16-key tiles: five.)
  Launch l(false, 16);
  Operation *last = nullptr;
  for (scf::WhileOp loop : l.all<scf::WhileOp>())
    for (Operation &op : loop.getAfter().front())
      if (isa<NVVM::Barrier0Op>(op))
        last = &op;
  ASSERT_TRUE(last);
  last->erase();
  std::string error = l.run();
  EXPECT_TRUE(contains(error, "shared-memory race")) << "[" << error << "]";
  EXPECT_TRUE(contains(error, "overwrites byte")) << error;
}

TEST(KernelSimulator, OutOfBoundsReadNamesTheTensor) {
  // Broken launch: k declared one row shorter than the kernel reads.
  Launch l(false);
  l.named["k"].bytes -= 2 * kD;
  std::string error = l.run();
  EXPECT_TRUE(contains(error, "out-of-bounds read by nvvm.cp.async.shared.global")) << error;
  EXPECT_TRUE(contains(error, "element 8896 (bytes 17792..17808) of tensor 'k', which holds 8896 elements")) << error;
}

TEST(KernelSimulator, OutOfBoundsStoreNamesTheTensorAndIndex) {
  // Mutation: the 16-byte O stores 4096 elements further on.
  Launch l(false);
  int moved = 0;
  for (LLVM::StoreOp st : l.all<LLVM::StoreOp>()) {
    auto type = dyn_cast<LLVM::LLVMPointerType>(st.getAddr().getType());
    if (!type || type.getAddressSpace() != 0 || !isa<VectorType>(st.getValue().getType()))
      continue;
    OpBuilder b(st);
    Value far = LLVM::GEPOp::create(b, st.getLoc(), st.getAddr().getType(), b.getI16Type(),
                                    st.getAddr(), ArrayRef<LLVM::GEPArg>{4096});
    st.getAddrMutable().assign(far);
    ++moved;
  }
  ASSERT_GT(moved, 0);
  std::string error = l.run();
  EXPECT_TRUE(contains(error, "out-of-bounds write by llvm.store")) << error;
  EXPECT_TRUE(contains(error, "of tensor 'o', which holds 8960 elements")) << error;
  EXPECT_TRUE(contains(error, "element ")) << error;
}

TEST(KernelSimulator, MisalignedTensorIsRefused) {
  // Broken launch: q two bytes past an aligned address (cp.async needs 16).
  Launch l(false);
  std::vector<uint16_t> shifted(l.q.size() + 8);
  std::memcpy(shifted.data() + 1, l.q.data(), 2 * l.q.size());
  l.named["q"].ptr = shifted.data() + 1;
  std::string error = l.run();
  EXPECT_TRUE(contains(error, "misaligned address (2 bytes past a multiple of 16)")) << error;
}

TEST(KernelSimulator, CopiesInFlightAtTheEndFail) {
  // Mutation: the last cp.async.wait_group (the drain before the epilogue) removed
  // and, in its place, one more copy group issued and committed.
  Launch l(false);
  NVVM::CpAsyncWaitGroupOp last = l.all<NVVM::CpAsyncWaitGroupOp>().back();
  NVVM::CpAsyncOp copy = l.all<NVVM::CpAsyncOp>().front();
  OpBuilder b(last);
  Operation *clone = b.clone(*copy);
  (void)clone;
  NVVM::CpAsyncCommitGroupOp::create(b, last.getLoc());
  last.erase();
  std::string error = l.run();
  EXPECT_TRUE(contains(error, "cp.async copies in flight") || contains(error, "race")) << error;
}

TEST(KernelSimulator, OperandFenceBeforeTheWgmmaWaitFails) {
  // Mutation: the first wgmma.wait_group moved below the first operand fence after it
  // (the fence reads the accumulator while the wgmma may still write it).
  Launch l(true);
  NVVM::WgmmaWaitGroupSyncOp w = l.all<NVVM::WgmmaWaitGroupSyncOp>().front();
  Operation *fence = w->getNextNode();
  ASSERT_TRUE(fence && isa<LLVM::InlineAsmOp>(fence));
  EXPECT_EQ(cast<LLVM::InlineAsmOp>(fence).getAsmString(), "");
  w->moveAfter(fence);
  std::string error = l.run();
  EXPECT_TRUE(contains(error, "llvm.inline_asm reads a wgmma accumulator before wgmma.wait_group")) << error;
}

TEST(KernelSimulator, WgmmaOperandsAreFencedOnBothSides) {
  // Every wgmma.fence is preceded, and every wgmma.wait_group followed, by operand
  // fences (or, for S = Q K^T, by nothing to fence: its first wgmma does not accumulate).
  Launch l(true);
  int waits = 0;
  for (NVVM::WgmmaWaitGroupSyncOp w : l.all<NVVM::WgmmaWaitGroupSyncOp>()) {
    auto next = dyn_cast_or_null<LLVM::InlineAsmOp>(w->getNextNode());
    EXPECT_TRUE(next && next.getAsmString().empty() && next.getHasSideEffects());
    ++waits;
  }
  EXPECT_GT(waits, 0);
  // Before the wgmma.fence of O += P V: O and P fenced (S = Q K^T's first wgmma does
  // not read its accumulators and its A is a descriptor: nothing to fence there).
  int fenced = 0;
  for (NVVM::WgmmaFenceAlignedOp f : l.all<NVVM::WgmmaFenceAlignedOp>()) {
    auto prev = dyn_cast_or_null<LLVM::InlineAsmOp>(f->getPrevNode());
    fenced += prev && prev.getAsmString().empty() && prev.getConstraints() == "=r,0";
  }
  EXPECT_GT(fenced, 0);
}

float bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint32_t bitsOf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

TEST(PtxMath, SpecialValuesAndFlushToZero) {
  float sub = bits(0x00000010), negSub = bits(0x80000010);
  // ex2: -inf -> +0, +-0 and subnormals -> 1, +inf -> +inf, results below 2^-126 -> 0.
  EXPECT_EQ(bitsOf(ptxmath::ex2(-INFINITY)), 0u);
  EXPECT_EQ(ptxmath::ex2(0.0f), 1.0f);
  EXPECT_EQ(ptxmath::ex2(-0.0f), 1.0f);
  EXPECT_EQ(ptxmath::ex2(sub), 1.0f);
  EXPECT_EQ(ptxmath::ex2(negSub), 1.0f);
  EXPECT_EQ(ptxmath::ex2(INFINITY), INFINITY);
  EXPECT_TRUE(std::isnan(ptxmath::ex2(NAN)));
  EXPECT_EQ(ptxmath::ex2(-130.0f), 0.0f); // 2^-130 is subnormal: flushed
  EXPECT_NE(std::exp2(-130.0f), 0.0f);    // where libm keeps it
  // lg2: +-0 and subnormals -> -inf, negatives (and -inf) -> NaN, +inf -> +inf.
  EXPECT_EQ(ptxmath::lg2(0.0f), -INFINITY);
  EXPECT_EQ(ptxmath::lg2(-0.0f), -INFINITY);
  EXPECT_EQ(ptxmath::lg2(sub), -INFINITY); // libm: about -145
  EXPECT_EQ(ptxmath::lg2(negSub), -INFINITY);
  EXPECT_TRUE(std::isnan(ptxmath::lg2(-1.0f)));
  EXPECT_TRUE(std::isnan(ptxmath::lg2(-INFINITY)));
  EXPECT_EQ(ptxmath::lg2(INFINITY), INFINITY);
  // sin/cos: +-inf -> NaN, zeros and subnormals -> +-0 / 1.
  EXPECT_TRUE(std::isnan(ptxmath::sin(INFINITY)));
  EXPECT_TRUE(std::isnan(ptxmath::cos(-INFINITY)));
  EXPECT_EQ(bitsOf(ptxmath::sin(-0.0f)), 0x80000000u);
  EXPECT_EQ(bitsOf(ptxmath::sin(negSub)), 0x80000000u);
  EXPECT_EQ(ptxmath::cos(sub), 1.0f);
  // (exp, log and tanh are built from these by the lowering, PtxMath.h: the kernels
  // that use them, softcap's tanh for one, run through the simulator end to end.)
}

TEST(PtxMath, ErrorsStayWithinTheDocumentedBounds) {
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> u(-20.0f, 20.0f);
  for (int i = 0; i < 2000; ++i) {
    float x = u(gen);
    double e = std::exp2(double(x));
    EXPECT_LE(std::fabs(ptxmath::ex2(x) - e), e * 0x1p-21) << x;
    float p = std::fabs(x) + 1e-3f;
    EXPECT_LE(std::fabs(ptxmath::lg2(p) - std::log2(double(p))), 0x1p-21 * std::max(1.0, std::fabs(std::log2(double(p))))) << p;
    EXPECT_LE(std::fabs(ptxmath::sin(x) - std::sin(double(x))), 1e-5) << x;
    EXPECT_LE(std::fabs(ptxmath::cos(x) - std::cos(double(x))), 1e-5) << x;
  }
  // The modelled error is not zero: a kernel needing exact values would notice.
  EXPECT_NE(ptxmath::ex2(0.5f), float(std::exp2(0.5)));
  // Large arguments: reduced in f32 turns, as on the device, so accuracy falls off.
  EXPECT_GT(std::fabs(ptxmath::sin(1e6f) - std::sin(1e6)), 1e-3);
}

} // namespace
