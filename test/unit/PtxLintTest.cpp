//===- PtxLintTest.cpp - the wgmma register lint on hand-written and real PTX ===//
#include "codegen/bundle/BundleWriter.h"
#include "codegen/nvidia/NvidiaPipeline.h"
#include "codegen/Diagnostics.h"
#include "codegen/nvidia/PtxLint.h"
#include "specs/Importer.h"

#include "mlir/IR/MLIRContext.h"
#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include <regex>
#include <sstream>

using namespace attune;

namespace {

/// A kernel around `body`: the wgmma and its registers as LLVM writes them.
std::string kernel(const std::string &body) {
  return R"(.version 8.0
.target sm_90a
.address_size 64
.extern .shared .align 1024 .b8 attn_smem[];
.visible .entry k(
	.param .u64 k_param_0
)
.reqntid 128, 1, 1
{
	.reg .pred 	%p<4>;
	.reg .b32 	%r<64>;
	.reg .b64 	%rd<8>;
)" + body + "\n\tret;\n}\n";
}

// One m64n8k16 with A from registers {%r10..%r13}, D {%r1..%r4}.
const char *kWgmma = R"(	// begin inline asm
	{
	.reg .pred p;
	setp.ne.b32 p, %r20, 0;
	wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%r1, %r2, %r3, %r4}, {%r10, %r11, %r12, %r13}, %rd1, p, 1, 1, 1;
	}
	// end inline asm
)";

std::string joined(const std::vector<std::string> &v) {
  std::string s;
  for (const std::string &x : v)
    s += x + "\n";
  return s;
}

TEST(PtxLint, CleanSequencePasses) {
  std::string body = std::string("\tmov.b32 %r10, 0;\n\tmov.b32 %r1, 0;\n\twgmma.fence.sync.aligned;\n") +
                     kWgmma + "\twgmma.commit_group.sync.aligned;\n\twgmma.wait_group.sync.aligned 0;\n"
                     "\tadd.f32 %r30, %r1, %r2;\n\tmov.b32 %r10, %r30;\n";
  EXPECT_EQ(joined(lintWgmmaRegisters(kernel(body))), "");
}

TEST(PtxLint, AccumulatorReadBeforeWaitFails) {
  // Mutation: the read of %r2 moved above the wait.
  std::string body = std::string("\twgmma.fence.sync.aligned;\n") + kWgmma +
                     "\twgmma.commit_group.sync.aligned;\n\tadd.f32 %r30, %r1, %r2;\n"
                     "\twgmma.wait_group.sync.aligned 0;\n";
  std::string out = joined(lintWgmmaRegisters(kernel(body)));
  EXPECT_NE(out.find("function 'k'"), std::string::npos) << out;
  EXPECT_NE(out.find("%r1, an accumulator of the wgmma.mma_async at line"), std::string::npos) << out;
  EXPECT_NE(out.find("before the wgmma.wait_group that retires it"), std::string::npos) << out;
}

TEST(PtxLint, ARegisterWrittenAfterFenceFails) {
  // Mutation: P written after wgmma.fence (LLVM sinking a cvt/pack past it).
  std::string body = std::string("\twgmma.fence.sync.aligned;\n\tmov.b32 %r12, 7;\n") + kWgmma +
                     "\twgmma.commit_group.sync.aligned;\n\twgmma.wait_group.sync.aligned 0;\n";
  std::string out = joined(lintWgmmaRegisters(kernel(body)));
  EXPECT_NE(out.find("A register %r12 is accessed at line"), std::string::npos) << out;
  EXPECT_NE(out.find("after the last wgmma.fence"), std::string::npos) << out;
}

TEST(PtxLint, ARegisterOverwrittenInFlightFails) {
  std::string body = std::string("\twgmma.fence.sync.aligned;\n") + kWgmma +
                     "\twgmma.commit_group.sync.aligned;\n\tmov.b32 %r11, 0;\n"
                     "\twgmma.wait_group.sync.aligned 0;\n";
  std::string out = joined(lintWgmmaRegisters(kernel(body)));
  EXPECT_NE(out.find("%r11, an A register"), std::string::npos) << out;
}

TEST(PtxLint, MissingFenceFails) {
  std::string body = std::string(kWgmma) + "\twgmma.commit_group.sync.aligned;\n"
                     "\twgmma.wait_group.sync.aligned 0;\n";
  std::string out = joined(lintWgmmaRegisters(kernel(body)));
  EXPECT_NE(out.find("no wgmma.fence before it"), std::string::npos) << out;
}

TEST(PtxLint, WaitGroupRetiresOnlyOlderGroups) {
  // Two groups; wait_group 1 retires the first only: reading its D is fine, the
  // second's (%r40..) is not.
  std::string second = std::regex_replace(std::string(kWgmma), std::regex(R"(\{%r1, %r2, %r3, %r4\})"),
                                          "{%r40, %r41, %r42, %r43}");
  std::string body = std::string("\twgmma.fence.sync.aligned;\n") + kWgmma +
                     "\twgmma.commit_group.sync.aligned;\n" + second +
                     "\twgmma.commit_group.sync.aligned;\n\twgmma.wait_group.sync.aligned 1;\n"
                     "\tmov.b32 %r30, %r1;\n\tmov.b32 %r31, %r41;\n\twgmma.wait_group.sync.aligned 0;\n";
  std::vector<std::string> issues = lintWgmmaRegisters(kernel(body));
  ASSERT_EQ(issues.size(), 1u) << joined(issues);
  EXPECT_NE(issues[0].find("%r41"), std::string::npos) << issues[0];
}

TEST(PtxLint, PathThroughLoopIsChecked) {
  // The wait sits on the exit path only: around the back edge %r3 is read in flight.
  std::string body = std::string("$L__BB0_1:\n\tadd.f32 %r30, %r3, %r30;\n\twgmma.fence.sync.aligned;\n") +
                     kWgmma + "\twgmma.commit_group.sync.aligned;\n\t@%p1 bra $L__BB0_1;\n"
                     "\twgmma.wait_group.sync.aligned 0;\n";
  std::string out = joined(lintWgmmaRegisters(kernel(body)));
  EXPECT_NE(out.find("%r3, an accumulator"), std::string::npos) << out;
}

TEST(PtxLint, ReturnInFlightFails) {
  std::string body = std::string("\twgmma.fence.sync.aligned;\n") + kWgmma +
                     "\twgmma.commit_group.sync.aligned;\n";
  std::string out = joined(lintWgmmaRegisters(kernel(body)));
  EXPECT_NE(out.find("returns with the wgmma.mma_async"), std::string::npos) << out;
}

TEST(PtxLint, NoWgmmaIsClean) {
  EXPECT_TRUE(lintWgmmaRegisters(kernel("\tmov.b32 %r1, 0;\n")).empty());
}

/// The PTX of a small spec on wgmma, as attnc compiles it.
std::string compiled(const std::string &config, int64_t blockN) {
  mlir::MLIRContext ctx;
  nlohmann::json spec = nlohmann::json::parse(
      R"({"name": "t", "heads_q": 2, "head_dim": 64, "mask": {"causal": {}}})");
  SpecInfo info;
  SpecError err;
  auto module = importSpec(ctx, spec, info, err);
  EXPECT_TRUE(module) << err.message;
  GpuConfig c;
  c.blockM = 64;
  c.blockN = blockN;
  c.wgmma = true;
  c.arch = "sm_90a";
  DiagnosticCollector diags(module->getContext());
  mlir::FailureOr<PtxResult> r = compileToPtx(*module, c);
  EXPECT_TRUE(mlir::succeeded(r)) << config << ": " << diags.text();
  return mlir::succeeded(r) ? r->ptx : std::string();
}

/// Moves the first line holding `what` down past the next `count` instruction lines,
/// or (count < 0) just below the next line holding `anchor`.
std::string moveDown(const std::string &ptx, const std::string &what, int count,
                     const std::string &anchor = "") {
  std::vector<std::string> lines;
  std::stringstream ss(ptx);
  for (std::string l; std::getline(ss, l);)
    lines.push_back(l);
  for (size_t i = 0; i < lines.size(); ++i)
    if (lines[i].find(what) != std::string::npos) {
      std::string moved = lines[i];
      lines.erase(lines.begin() + long(i));
      size_t j = i;
      if (count < 0) {
        while (j < lines.size() && lines[j].find(anchor) == std::string::npos)
          ++j;
        ++j;
      }
      for (int n = 0; n < count && j < lines.size(); ++j)
        if (lines[j].find(';') != std::string::npos && lines[j].find("//") == std::string::npos)
          ++n;
      lines.insert(lines.begin() + long(j), moved);
      break;
    }
  std::string out;
  for (const std::string &l : lines)
    out += l + "\n";
  return out;
}

TEST(PtxLint, EmittedKernelsAreCleanAndMutationsAreCaught) {
  for (int64_t bn : {64, 128}) { // pipelined and plain key loops
    std::string ptx = compiled("64x" + std::to_string(bn) + "w", bn);
    ASSERT_NE(ptx.find("wgmma.mma_async"), std::string::npos);
    EXPECT_EQ(joined(lintWgmmaRegisters(ptx)), "") << "block_n " << bn;
    // Mutation: each wait that directly follows a commit_group moved above it: the
    // wait retires nothing of the group still open, whose results are then read.
    std::string early = std::regex_replace(
        ptx, std::regex(R"((wgmma\.commit_group\.sync\.aligned;)(\s*)(wgmma\.wait_group\.sync\.aligned\s+0;))"),
        "$3$2$1");
    ASSERT_NE(early, ptx);
    std::string out = joined(lintWgmmaRegisters(early));
    EXPECT_NE(out.find("before the wgmma.wait_group that retires it"), std::string::npos)
        << "block_n " << bn << ": " << out;
    // Mutation: the waits dropped: results read (and the kernel ends) in flight.
    std::string none = std::regex_replace(ptx, std::regex(R"(wgmma\.wait_group\.sync\.aligned\s+0;)"), "");
    ASSERT_NE(none, ptx);
    out = joined(lintWgmmaRegisters(none));
    EXPECT_NE(out.find("before the wgmma.wait_group that retires it"), std::string::npos)
        << "block_n " << bn << ": " << out;
    // Mutation: the first wgmma.fence moved below the first wgmma after it: that
    // wgmma's accumulators were written after the last fence (or never fenced).
    std::string unfenced = moveDown(ptx, "wgmma.fence.sync.aligned", -1, "wgmma.mma_async");
    out = joined(lintWgmmaRegisters(unfenced));
    EXPECT_TRUE(out.find("no wgmma.fence before it") != std::string::npos ||
                out.find("after the last wgmma.fence") != std::string::npos)
        << "block_n " << bn << ": " << out;
  }
}

TEST(PtxLint, SerializingMutationIsLintedAndPtxasWarnsOfIt) {
  // Mutation: a mov into an accumulator of the second wgmma of a group, after the
  // wgmma.fence. The lint names it; ptxas serializes the wgmmas and says so, and
  // runPtxas records the warning (what the bundle manifest's ptxas_warnings hold).
  std::string ptx = compiled("64x64w", 64);
  std::vector<std::string> lines;
  std::stringstream ss(ptx);
  for (std::string l; std::getline(ss, l);)
    lines.push_back(l);
  int seen = 0;
  for (size_t i = 0; i < lines.size(); ++i)
    if (lines[i].find("wgmma.mma_async") != std::string::npos && ++seen == 2) {
      std::smatch m;
      ASSERT_TRUE(std::regex_search(lines[i], m, std::regex(R"(\{(%r\d+))")));
      size_t j = i;
      while (lines[j].find("// begin inline asm") == std::string::npos)
        --j;
      lines.insert(lines.begin() + long(j), "\tmov.b32 " + m[1].str() + ", 0;");
      break;
    }
  std::string mutated;
  for (const std::string &l : lines)
    mutated += l + "\n";
  std::string out = joined(lintWgmmaRegisters(mutated));
  EXPECT_NE(out.find("is accessed at line"), std::string::npos) << out;
  EXPECT_NE(out.find("after the last wgmma.fence"), std::string::npos) << out;

  std::string ptxas = findPtxas();
  if (ptxas.empty())
    GTEST_SKIP() << "ptxas not found: the warning half of this test needs it";
  PtxasReport clean, serialized;
  std::string error;
  ASSERT_TRUE(runPtxas(ptxas, ptx, "sm_90a", "", "attn_kernel", clean, error)) << error;
  for (const std::string &w : clean.warnings)
    EXPECT_EQ(w.find("serialized"), std::string::npos) << w;
  ASSERT_TRUE(runPtxas(ptxas, mutated, "sm_90a", "", "attn_kernel", serialized, error)) << error;
  std::string all;
  for (const std::string &w : serialized.warnings)
    all += w + "\n";
  EXPECT_NE(all.find("wgmma.mma_async instructions are serialized"), std::string::npos) << all;
}

} // namespace
