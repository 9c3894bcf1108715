//===- ArgsTest.cpp - argument checking and parameter packing -------------===//
//
// Every rejection path, with fake device pointers: checking never touches them.
//
#include "Args.h"
#include "TestUtil.h"

#include <gtest/gtest.h>

#include <cstring>

using namespace attune::rt;
using namespace attune::rt::test;

namespace {

Manifest testManifest() { return parseManifest(Json::parse(testManifestText())); }

std::string checkError(const Manifest &m, const attn_call &call) {
  try {
    checkCall(m, call, "attn_launch");
    return "";
  } catch (const ArgError &e) {
    return e.what();
  }
}

class Args : public ::testing::Test {
protected:
  Manifest m = testManifest();
  TestCall t;
  std::string error() {
    t.sync();
    return checkError(m, t.call);
  }
};

} // namespace

TEST_F(Args, AValidCallBindsItsSizes) {
  CheckedCall c = checkCall(m, t.call, "attn_launch");
  EXPECT_EQ(c.batch, 2);
  EXPECT_EQ(c.seqQ, 100);
  EXPECT_EQ(c.seqKv, 300);
  EXPECT_EQ(c.headsQ, 8);
  EXPECT_EQ(c.headsKv, 2);
  EXPECT_EQ(c.qOffset, 200); // bottom_right: seq_kv - seq_q
  EXPECT_EQ(c.kvOffset, 0);
  EXPECT_EQ(c.names.at("Nv"), 5);
  EXPECT_EQ(c.names.at("head_dim_v"), 128);
  EXPECT_FALSE(c.empty);
  ASSERT_EQ(c.inputs.size(), 3u);
  EXPECT_EQ(c.inputs[2].shape[0], 5);
}

TEST_F(Args, InputsMayComeInAnyOrder) {
  std::swap(t.names[0], t.names[2]);
  std::swap(t.inputs[0], t.inputs[2]);
  t.sync();
  CheckedCall c = checkCall(m, t.call, "attn_launch");
  EXPECT_EQ(c.inputs[0].dtype, ATTN_I32); // manifest order: doc, idx, val
  EXPECT_EQ(c.inputs[2].dtype, ATTN_F32);
}

TEST_F(Args, Offsets) {
  t.call.has_q_offset = 1;
  t.call.q_offset = -5;
  t.call.has_kv_offset = 1;
  t.call.kv_offset = 1000;
  CheckedCall c = checkCall(m, t.call, "attn_launch");
  EXPECT_EQ(c.qOffset, -5);
  EXPECT_EQ(c.kvOffset, 1000);

  TestCall plain;
  m.align = "top_left";
  EXPECT_EQ(checkCall(m, plain.call, "x").qOffset, 0);
  m.qOffset = 42; // the spec's compile-time default wins over the alignment rule
  m.kvOffset = 7;
  EXPECT_EQ(checkCall(m, plain.call, "x").qOffset, 42);
  EXPECT_EQ(checkCall(m, plain.call, "x").kvOffset, 7);
}

TEST_F(Args, StridedInputsWithAContiguousLastDimAreAccepted) {
  // q as a slice [:, :, ::2, :] of a [2, 8, 200, 256] tensor, padded rows.
  t.call.q = tensor(t.call.q.data, ATTN_BF16, {2, 8, 100, 128}, {8 * 200 * 256, 200 * 256, 512, 1});
  // k and v heads-last layout [B, S, H, D] viewed as [B, H, S, D].
  t.call.k = tensor(t.call.k.data, ATTN_BF16, {2, 2, 300, 128}, {300 * 2 * 128, 128, 256, 1});
  EXPECT_EQ(error(), "");
  // Broadcast (stride 0) inputs are fine: they are only read.
  t.call.v = tensor(t.call.v.data, ATTN_BF16, {2, 2, 300, 128}, {0, 0, 128, 1});
  EXPECT_EQ(error(), "");
}

TEST_F(Args, RanksAndDtypes) {
  t.call.q.ndim = 3;
  EXPECT_EQ(error(), "attn_launch: q: expected a tensor of 4 dimensions [B, Hq, Sq, D], got 3");
  t.call.q.ndim = 4;
  t.call.k = attn_tensor{};
  EXPECT_EQ(error(), "attn_launch: k: expected a tensor of 4 dimensions [B, Hkv, Skv, D], got 0 (missing)");
  t = TestCall();
  t.call.v.dtype = ATTN_FP16;
  EXPECT_EQ(error(), "attn_launch: v: expected dtype bf16 (the bundle's), got fp16");
  t.call.v.dtype = attn_dtype(9);
  EXPECT_EQ(error(), "attn_launch: v: unknown dtype code 9");
  t.call.v.dtype = ATTN_BF16;
  t.call.o.dtype = ATTN_F32;
  EXPECT_EQ(error(), "attn_launch: o: expected dtype bf16 (the bundle's), got f32");
}

TEST_F(Args, Shapes) {
  t.call.q.shape[1] = 4;
  EXPECT_EQ(error(), "attn_launch: q: expected shape [2, 8, 100, 128] (B, Hq, Sq, D), got [2, 4, 100, 128]");
  t.call.q.shape[1] = 8;
  t.call.k.shape[3] = 64;
  EXPECT_EQ(error(), "attn_launch: k: expected shape [2, 2, 300, 128] (B, Hkv, Skv, D), got [2, 2, 300, 64]");
  t.call.k.shape[3] = 128;
  t.call.k.shape[0] = 3;
  EXPECT_EQ(error(), "attn_launch: k: expected shape [2, 2, 300, 128] (B, Hkv, Skv, D), got [3, 2, 300, 128]");
  t.call.k.shape[0] = 2;
  t.call.v.shape[2] = 299;
  EXPECT_EQ(error(), "attn_launch: v: expected shape [2, 2, 300, 128] (B, Hkv, Skv, Dv), got [2, 2, 299, 128]");
  t.call.v.shape[2] = 300;
  t.call.o.shape[2] = 99;
  EXPECT_EQ(error(), "attn_launch: o: expected shape [2, 8, 100, 128] (B, Hq, Sq, Dv), got [2, 8, 99, 128]");
  t.call.o.shape[2] = 100;
  t.call.q.shape[2] = -1;
  EXPECT_EQ(error(), "attn_launch: q: negative size in shape [2, 8, -1, 128]");
}

TEST_F(Args, Strides) {
  t.call.q.strides[3] = 2;
  EXPECT_EQ(error(), "attn_launch: q: the last dimension must be contiguous (stride 1), got strides "
                     "[102400, 12800, 128, 2]");
  t.call.q.strides[3] = 1;
  t.call.k.strides[2] = -128;
  EXPECT_EQ(error(), "attn_launch: k: negative strides are not supported, got strides [76800, 38400, -128, 1]");
  t.call.k.strides[2] = 128;
  t.call.o.strides[1] = 0;
  EXPECT_EQ(error(), "attn_launch: o: an output cannot have a zero stride (dimension 1), got strides "
                     "[102400, 0, 128, 1]");
}

TEST_F(Args, NullDataPointers) {
  t.call.q.data = nullptr;
  EXPECT_EQ(error(), "attn_launch: q: data pointer is NULL");
  t = TestCall();
  t.inputs[1].data = nullptr;
  EXPECT_EQ(error(), "attn_launch: input idx: data pointer is NULL");
}

TEST_F(Args, Lse) {
  t.call.lse.dtype = ATTN_BF16;
  EXPECT_EQ(error(), "attn_launch: lse: expected dtype f32, got bf16");
  t.call.lse.dtype = ATTN_F32;
  t.call.lse.shape[2] = 101;
  EXPECT_EQ(error(), "attn_launch: lse: expected shape [2, 8, 100] (B, Hq, Sq), got [2, 8, 101]");
  t.call.lse = tensor(t.call.lse.data, ATTN_F32, {2, 8, 100}, {800, 1, 8});
  EXPECT_EQ(error(), "attn_launch: lse: expected a contiguous tensor (strides [800, 100, 1]), got "
                     "strides [800, 1, 8]");
  t.call.lse.ndim = 4;
  EXPECT_EQ(error(), "attn_launch: lse: expected a tensor of 3 dimensions [B, Hq, Sq], got 4");
  // No lse wanted: anything else in the descriptor is ignored.
  t.call.lse.data = nullptr;
  EXPECT_EQ(error(), "");
  // A bundle without lse refuses one.
  m.hasLse = false;
  t = TestCall();
  EXPECT_EQ(error(), "attn_launch: lse: this bundle does not compute lse (its outputs are [o]); pass none");
}

TEST_F(Args, ExtraInputsByName) {
  t.names.pop_back();
  t.inputs.pop_back();
  EXPECT_EQ(error(), "attn_launch: missing input 'val' (f32 [Nv, 4])");
  t = TestCall();
  t.names[1] = "index";
  EXPECT_EQ(error(), "attn_launch: unknown input 'index' (this bundle takes doc, idx, val)");
  t = TestCall();
  t.names[1] = "doc";
  EXPECT_EQ(error(), "attn_launch: input 'doc' is given twice");
  t = TestCall();
  t.names[2] = nullptr;
  EXPECT_EQ(error(), "attn_launch: input_names[2] is NULL");
  t = TestCall();
  t.call.num_inputs = 3;
  t.call.inputs = nullptr;
  EXPECT_EQ(checkError(m, t.call), "attn_launch: num_inputs is 3 but input_names or inputs is NULL");
  t.call.num_inputs = -1;
  EXPECT_EQ(checkError(m, t.call), "attn_launch: num_inputs is negative (-1)");
  t = TestCall();
  t.names.clear();
  t.inputs.clear();
  EXPECT_EQ(error(), "attn_launch: missing input 'doc' (i32 [B, Sq])");
}

TEST_F(Args, ExtraInputDtypesShapesAndLayout) {
  t.inputs[0].dtype = ATTN_F32;
  EXPECT_EQ(error(), "attn_launch: input doc: expected dtype i32, got f32");
  t = TestCall();
  t.inputs[0] = tensor(t.inputs[0].data, ATTN_I32, {2, 99});
  EXPECT_EQ(error(), "attn_launch: input doc: expected shape [2, 100] (B, Sq), got [2, 99]");
  t = TestCall();
  t.inputs[0] = tensor(t.inputs[0].data, ATTN_I32, {200});
  EXPECT_EQ(error(), "attn_launch: input doc: expected 2 dimensions [B, Sq], got 1");
  t = TestCall();
  t.inputs[0] = tensor(t.inputs[0].data, ATTN_I32, {2, 100}, {1, 2});
  EXPECT_EQ(error(), "attn_launch: input doc: expected a contiguous tensor (strides [100, 1]), got strides [1, 2]");
  t = TestCall();
  t.inputs[0] = tensor(t.inputs[0].data, ATTN_I32, {2, 100}, {128, 1}); // padded rows
  EXPECT_EQ(error(), "attn_launch: input doc: expected a contiguous tensor (strides [100, 1]), got strides [128, 1]");
}

TEST_F(Args, FreeSymbolsBindConsistently) {
  // Nv is bound by idx [Hq, Nv] = [8, 5]; val [Nv, 4] must then have 5 rows.
  t.inputs[2] = tensor(t.inputs[2].data, ATTN_F32, {6, 4});
  EXPECT_EQ(error(), "attn_launch: input val: expected shape [5, 4] (Nv, 4), got [6, 4]");
  t = TestCall();
  t.inputs[2] = tensor(t.inputs[2].data, ATTN_F32, {5, 3});
  EXPECT_EQ(error(), "attn_launch: input val: expected shape [5, 4] (Nv, 4), got [5, 3]");
  t = TestCall();
  t.inputs[1] = tensor(t.inputs[1].data, ATTN_I32, {4, 5});
  EXPECT_EQ(error(), "attn_launch: input idx: expected shape [8, 5] (Hq, Nv), got [4, 5]");
  t = TestCall();
  t.inputs[1] = tensor(t.inputs[1].data, ATTN_I32, {8, 0});
  EXPECT_EQ(error(), "attn_launch: input idx: size symbol Nv must be positive, got shape [8, 0]");
  // A consistent different Nv is fine.
  t = TestCall();
  t.inputs[1] = tensor(t.inputs[1].data, ATTN_I32, {8, 9});
  t.inputs[2] = tensor(t.inputs[2].data, ATTN_F32, {9, 4});
  t.sync();
  EXPECT_EQ(checkCall(m, t.call, "x").names.at("Nv"), 9);
}

TEST_F(Args, Alignment) {
  t.call.k.data = static_cast<char *>(t.call.k.data) + 8;
  std::string e = error();
  EXPECT_NE(e.find("attn_launch: k: data pointer 0x"), std::string::npos) << e;
  EXPECT_NE(e.find("is not 16-byte aligned, which this bundle's kernels need"), std::string::npos) << e;
  t = TestCall();
  t.call.q = tensor(t.call.q.data, ATTN_BF16, {2, 8, 100, 128}, {8 * 100 * 132, 100 * 132, 132, 1});
  EXPECT_EQ(error(), "attn_launch: q: stride 132 of dimension 2 (264 bytes) is not a multiple of 16 "
                     "bytes, which this bundle's kernels need");
  m.alignment = 0; // a bundle that does not ask for it
  EXPECT_EQ(error(), "");
}

TEST_F(Args, EmptyProblems) {
  for (int dim : {0, 2}) {
    TestCall e;
    e.call.q.shape[dim] = 0;
    e.call.o.shape[dim] = 0;
    e.call.lse.shape[dim] = 0;
    e.call.k.shape[0] = e.call.v.shape[0] = dim == 0 ? 0 : 2;
    e.inputs[0].shape[dim == 0 ? 0 : 1] = 0;
    e.sync();
    EXPECT_TRUE(checkCall(m, e.call, "x").empty) << checkError(m, e.call);
  }
  // No keys at all is still work: rows with no allowed key give o = 0, lse = -inf.
  TestCall e;
  e.call.k.shape[2] = e.call.v.shape[2] = 0;
  e.sync();
  CheckedCall c = checkCall(m, e.call, "x");
  EXPECT_FALSE(c.empty);
  EXPECT_EQ(c.qOffset, -100);
}

TEST_F(Args, SpansThatOverflowAreRefused) {
  // B = 2^50: the element count of q wraps 64 bits; refused before anything multiplies.
  int64_t B = int64_t(1) << 50;
  for (attn_tensor *x : {&t.call.q, &t.call.o})
    *x = tensor(x->data, ATTN_BF16, {B, 8, 100, 128}, {8 * 100 * 128, 100 * 128, 128, 1});
  for (attn_tensor *x : {&t.call.k, &t.call.v})
    *x = tensor(x->data, ATTN_BF16, {B, 2, 300, 128}, {2 * 300 * 128, 300 * 128, 128, 1});
  t.call.lse = tensor(t.call.lse.data, ATTN_F32, {B, 8, 100}, {800, 100, 1});
  t.inputs[0] = tensor(t.inputs[0].data, ATTN_I32, {B, 100}, {100, 1});
  EXPECT_EQ(error(), "attn_launch: q: shape [1125899906842624, 8, 100, 128] with strides "
                     "[102400, 12800, 128, 1] spans more than 2^62 bytes");
  // A NULL pointer with such a shape is not "empty".
  t.call.q.data = nullptr;
  EXPECT_EQ(error(), "attn_launch: q: data pointer is NULL");
  uint64_t bytes = 0;
  EXPECT_FALSE(checkedSpanBytes(t.call.k, bytes));
  EXPECT_EQ(spanBytes(t.call.k), UINT64_MAX);
  // Huge strides on an input.
  TestCall u;
  u.inputs[2] = tensor(u.inputs[2].data, ATTN_F32, {5, 4}, {INT64_MAX / 2, 1});
  u.sync();
  EXPECT_EQ(checkError(m, u.call), "attn_launch: input val: shape [5, 4] with strides "
                                   "[4611686018427387903, 1] spans more than 2^62 bytes");
}

TEST_F(Args, ARunTimeZeroDivisorInTheGridNamesTheExpression) {
  Json doc = Json::parse(testManifestText());
  doc.find("variants")->operator[](0).find("grid")->set("x", "seq_q / (batch - 2)");
  Manifest bad = parseManifest(doc); // a divisor with names is accepted when read
  CheckedCall c = checkCall(bad, t.call, "attn_launch");
  unsigned grid[3];
  try {
    evalGrid(bad.variants[0], c, "attn_launch", grid);
    FAIL() << "expected an error";
  } catch (const ArgError &e) {
    EXPECT_EQ(std::string(e.what()), "attn_launch: variant sm80_bm64: grid.x: expression "
                                     "'seq_q / (batch - 2)': division by zero in /");
  }
}

TEST_F(Args, Grid) {
  CheckedCall c = checkCall(m, t.call, "attn_launch");
  unsigned grid[3];
  evalGrid(m.variants[0], c, "attn_launch", grid);
  EXPECT_EQ(grid[0], 2u); // ceil_div(100, 64)
  EXPECT_EQ(grid[1], 8u);
  EXPECT_EQ(grid[2], 2u);
  evalGrid(m.variants[1], c, "attn_launch", grid);
  EXPECT_EQ(grid[0], 1u);

  m.variants[0].grid[1] = Expr::parse("seq_q * 1000");
  try {
    evalGrid(m.variants[0], c, "attn_launch", grid);
    FAIL();
  } catch (const ArgError &e) {
    EXPECT_STREQ(e.what(), "attn_launch: variant sm80_bm64: grid.y = 'seq_q * 1000' = 100000 is "
                           "outside [1, 65535]");
  }
  m.variants[0].grid[1] = Expr::parse("seq_q / (batch - 2)");
  try {
    evalGrid(m.variants[0], c, "attn_launch", grid);
    FAIL();
  } catch (const ArgError &e) {
    EXPECT_STREQ(e.what(), "attn_launch: variant sm80_bm64: grid.y: expression 'seq_q / (batch - "
                           "2)': division by zero in /");
  }
}

TEST_F(Args, ParameterPacking) {
  t.call.has_kv_offset = 1;
  t.call.kv_offset = -3;
  t.sync();
  CheckedCall c = checkCall(m, t.call, "attn_launch");
  std::vector<uint64_t> slots = packParams(m.variants[0], c, "attn_launch");
  ASSERT_EQ(slots.size(), 29u);
  auto i64 = [&](size_t i) {
    int64_t v;
    std::memcpy(&v, &slots[i], 8);
    return v;
  };
  auto i32 = [&](size_t i) {
    int32_t v;
    std::memcpy(&v, &slots[i], 4);
    return v;
  };
  EXPECT_EQ(slots[0], reinterpret_cast<uintptr_t>(t.call.q.data));
  EXPECT_EQ(slots[3], reinterpret_cast<uintptr_t>(t.call.o.data));
  EXPECT_EQ(slots[4], reinterpret_cast<uintptr_t>(t.call.lse.data));
  EXPECT_EQ(slots[5], reinterpret_cast<uintptr_t>(t.inputs[0].data));
  EXPECT_EQ(slots[7], reinterpret_cast<uintptr_t>(t.inputs[2].data));
  EXPECT_EQ(i64(8), 2);     // batch
  EXPECT_EQ(i32(9), 100);   // seq_q (i32)
  EXPECT_EQ(i64(10), 300);  // seq_kv
  EXPECT_EQ(i32(11), 8);    // heads_q
  EXPECT_EQ(i32(12), 2);    // heads_kv
  EXPECT_EQ(i64(13), 200);  // q_offset
  EXPECT_EQ(i32(14), -3);   // kv_offset (i32, negative)
  EXPECT_EQ(i64(15), 8 * 100 * 128);
  EXPECT_EQ(i64(17), 128);
  EXPECT_EQ(i64(18), 2 * 300 * 128);
  EXPECT_EQ(i32(26), 128);  // o_stride_s
  EXPECT_EQ(i32(27), 5);    // input:idx:dim1
  EXPECT_EQ(i64(28), 5);    // input:val:dim0

  // No lse wanted: a null pointer.
  t.call.lse.data = nullptr;
  c = checkCall(m, t.call, "attn_launch");
  EXPECT_EQ(packParams(m.variants[0], c, "attn_launch")[4], 0u);
}

TEST_F(Args, I32ParametersMustFit) {
  const int64_t big = 3000000000LL;
  t.call.q = tensor(t.call.q.data, ATTN_BF16, {2, 8, big, 128});
  t.call.o = tensor(t.call.o.data, ATTN_BF16, {2, 8, big, 128});
  t.call.lse = tensor(t.call.lse.data, ATTN_F32, {2, 8, big});
  t.inputs[0] = tensor(t.inputs[0].data, ATTN_I32, {2, big});
  t.sync();
  CheckedCall c = checkCall(m, t.call, "attn_launch");
  try {
    packParams(m.variants[0], c, "attn_launch");
    FAIL();
  } catch (const ArgError &e) {
    EXPECT_STREQ(e.what(), "attn_launch: variant sm80_bm64: parameter seq_q (i32) = 3000000000 "
                           "does not fit in 32 bits");
  }
}

TEST_F(Args, ScratchAndNumSplitsParameters) {
  Param splits, scratch;
  splits.name = "num_splits";
  splits.source.kind = ParamSource::Size;
  scratch.name = "scratch:lse_partial";
  scratch.type = ParamType::Ptr;
  scratch.source.kind = ParamSource::Scratch;
  scratch.source.input = 1;
  CheckedCall c = checkCall(m, t.call, "attn_launch");
  // Checked but not launched: one split, no scratch (null).
  std::vector<uint64_t> slots = packParams({splits, scratch}, "variant x", c, {}, "attn_check");
  EXPECT_EQ(slots[0], 1u);
  EXPECT_EQ(slots[1], 0u);
  c.names["num_splits"] = 7;
  slots = packParams({splits, scratch}, "variant x", c, {0x1000, 0x2000}, "attn_launch");
  EXPECT_EQ(slots[0], 7u);
  EXPECT_EQ(slots[1], 0x2000u);
}

TEST(ArgsUtil, ChooseSplits) {
  // Asked for: as asked.
  EXPECT_EQ(chooseSplits(5, 1000, 132, 2), 5);
  EXPECT_EQ(chooseSplits(1, 8, 132, 1000), 1);
  // A grid that fills 80% of the SMs or more: no split.
  EXPECT_EQ(chooseSplits(0, 106, 132, 1000), 1);
  EXPECT_EQ(chooseSplits(0, 264, 132, 1000), 1);
  // Decoding, 8 CTAs on 132 SMs over 2048 key blocks: 17 splits fill the GPU.
  EXPECT_EQ(chooseSplits(0, 8, 132, 2048), 17);
  // ... but at least two key blocks per split, and at most 128 splits.
  EXPECT_EQ(chooseSplits(0, 8, 132, 9), 4);
  EXPECT_EQ(chooseSplits(0, 1, 132, 1000), 128);
  EXPECT_EQ(chooseSplits(0, 1, 132, 1), 1);
  // Nothing known: no split.
  EXPECT_EQ(chooseSplits(0, 8, 0, 100), 1);
  EXPECT_EQ(chooseSplits(0, 8, 132, 0), 1);
}

TEST(ArgsUtil, SpanBytes) {
  EXPECT_EQ(spanBytes(tensor(nullptr, ATTN_BF16, {2, 3, 4})), 48u);
  EXPECT_EQ(spanBytes(tensor(nullptr, ATTN_F32, {2, 3}, {10, 1})), (10u + 2 + 1) * 4);
  EXPECT_EQ(spanBytes(tensor(nullptr, ATTN_F32, {2, 0})), 0u);
  EXPECT_EQ(shapeText(tensor(nullptr, ATTN_F32, {2, 0, 7}).shape, 3), "[2, 0, 7]");
}
