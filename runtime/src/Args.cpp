//===- Args.cpp - checking a call's arguments and packing kernel parameters ===//
#include "Args.h"
#include "Sequences.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <limits>

namespace attune::rt {

std::string shapeText(const int64_t *shape, int ndim) {
  std::string out = "[";
  for (int i = 0; i < ndim; ++i)
    out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

bool checkedSpanBytes(const attn_tensor &t, uint64_t &bytes) {
  bytes = 0;
  uint64_t last = 0;
  for (int i = 0; i < t.ndim && i < 8; ++i) {
    if (t.shape[i] <= 0)
      return true;
    uint64_t step = 0;
    if (__builtin_mul_overflow(uint64_t(t.shape[i] - 1),
                               uint64_t(t.strides[i] < 0 ? 0 : t.strides[i]), &step) ||
        __builtin_add_overflow(last, step, &last))
      return false;
  }
  uint64_t esize = (t.dtype == ATTN_BF16 || t.dtype == ATTN_FP16) ? 2 : 4;
  // Device pointers are 64-bit but no allocation reaches 2^62 bytes: beyond that the
  // sizes are garbage.
  return !__builtin_add_overflow(last, uint64_t(1), &last) &&
         !__builtin_mul_overflow(last, esize, &bytes) && bytes <= (uint64_t(1) << 62);
}

uint64_t spanBytes(const attn_tensor &t) {
  uint64_t bytes = 0;
  return checkedSpanBytes(t, bytes) ? bytes : UINT64_MAX;
}

namespace {

const char *apiDtypeName(attn_dtype d) {
  switch (d) {
  case ATTN_BF16:
    return "bf16";
  case ATTN_FP16:
    return "fp16";
  case ATTN_F32:
    return "f32";
  case ATTN_I32:
    return "i32";
  }
  return "?";
}

attn_dtype toApi(DType d) {
  switch (d) {
  case DType::BF16:
    return ATTN_BF16;
  case DType::FP16:
    return ATTN_FP16;
  case DType::F32:
    return ATTN_F32;
  case DType::I32:
    return ATTN_I32;
  }
  return ATTN_I32;
}

} // namespace

const char *dtypeCodeName(int32_t code) {
  return code >= ATTN_BF16 && code <= ATTN_I32 ? apiDtypeName(attn_dtype(code)) : "?";
}

namespace {

/// Whether `t` has any element (no zero or negative size), without multiplying.
bool hasElements(const attn_tensor &t) {
  for (int i = 0; i < t.ndim && i < 8; ++i)
    if (t.shape[i] <= 0)
      return false;
  return true;
}

class Checker {
public:
  Checker(const Manifest &m, const attn_call &call, const char *fn, const CheckOptions &options)
      : m_(m), call_(call), fn_(fn), options_(options) {}

  CheckedCall run() {
    CheckedCall c;
    c.q = call_.q, c.k = call_.k, c.v = call_.v, c.o = call_.o, c.lse = call_.lse;
    for (const attn_tensor *t : {&call_.cu_seqlens_q, &call_.cu_seqlens_kv, &call_.page_table,
                                 &call_.kv_lens, &call_.q_lens})
      c.perSequence |= t->data != nullptr || t->ndim != 0;
    c.perSequence |= m_.qStorage != "padded" || m_.kvStorage != "padded";
    if (c.perSequence)
      return runPerSequence(c);
    basics("q", c.q, "[B, Hq, Sq, D]");
    basics("k", c.k, "[B, Hkv, Skv, D]");
    basics("v", c.v, "[B, Hkv, Skv, Dv]");
    basics("o", c.o, "[B, Hq, Sq, Dv]");
    if (options_.host)
      for (auto [name, t] : {std::pair{"k", &c.k}, {"v", &c.v}, {"o", &c.o}})
        if (t->dtype != c.q.dtype)
          fail(std::string(name) + ": expected q's dtype " + apiDtypeName(attn_dtype(c.q.dtype)) +
               ", got " + apiDtypeName(attn_dtype(t->dtype)));

    // q gives B and Sq, k gives Skv; heads and head dims come from the bundle.
    c.batch = c.q.shape[0];
    c.seqQ = c.q.shape[2];
    c.seqKv = c.k.shape[2];
    c.headsQ = m_.headsQ, c.headsKv = m_.headsKv, c.headDim = m_.headDim, c.headDimV = m_.headDimV;
    int64_t B = c.batch, Sq = c.seqQ, Skv = c.seqKv;
    shape("q", c.q, {B, c.headsQ, Sq, c.headDim}, "(B, Hq, Sq, D)");
    shape("k", c.k, {B, c.headsKv, Skv, c.headDim}, "(B, Hkv, Skv, D)");
    shape("v", c.v, {B, c.headsKv, Skv, c.headDimV}, "(B, Hkv, Skv, Dv)");
    shape("o", c.o, {B, c.headsQ, Sq, c.headDimV}, "(B, Hq, Sq, Dv)");
    stridesAndSpans(c);
    lse(c);
    for (auto [t, tensor] : {std::pair{0, &c.q}, {1, &c.k}, {2, &c.v}, {3, &c.o}})
      for (int d = 0; d < 3; ++d)
        c.strides[t][d] = tensor->strides[d];

    symbols_ = {{"B", B}, {"Hq", c.headsQ}, {"Hkv", c.headsKv}, {"Sq", Sq},
                {"Skv", Skv}, {"D", c.headDim}, {"Dv", c.headDimV}};
    inputs(c);

    if (m_.alignment > 0 && !options_.host) {
      aligned("q", c.q);
      aligned("k", c.k);
      aligned("v", c.v);
      aligned("o", c.o);
    }

    c.qOffset = call_.has_q_offset  ? call_.q_offset
                : m_.qOffset        ? *m_.qOffset
                : m_.align == "bottom_right" ? Skv - Sq
                                             : 0;
    c.kvOffset = call_.has_kv_offset ? call_.kv_offset : m_.kvOffset ? *m_.kvOffset : 0;

    c.names = {{"batch", B},           {"seq_q", Sq},           {"seq_kv", Skv},
               {"heads_q", c.headsQ},  {"heads_kv", c.headsKv}, {"head_dim", c.headDim},
               {"head_dim_v", c.headDimV}, {"num_splits", 1}, // a launch may split
               // The per-sequence parameters of the GPU kernels: whole buffers.
               {"q_rows", Sq}, {"kv_rows", Skv}, {"q_offset_from_lengths", 0}};
    for (const std::string &s : m_.freeSymbols())
      c.names[s] = symbols_.at(s);
    c.empty = B == 0 || c.headsQ == 0 || Sq == 0;
    return c;
  }

private:
  [[noreturn]] void fail(const std::string &message) const {
    throw ArgError(std::string(fn_) + ": " + message);
  }

  /// q, k, v, o: strides the kernels can read (o not aliasing itself), spans in range.
  void stridesAndSpans(const CheckedCall &c) const {
    strides("q", c.q, false);
    strides("k", c.k, false);
    strides("v", c.v, false);
    strides("o", c.o, true);
    for (auto [name, t] : {std::pair{"q", &c.q}, {"k", &c.k}, {"v", &c.v}, {"o", &c.o}})
      span(name, *t);
  }

  /// An int32 sequence argument in host memory, read through its strides.
  IntArray intArray(const char *name, const attn_tensor &t) const {
    IntArray a;
    if (!t.data && t.ndim == 0)
      return a;
    a.present = true;
    if (t.ndim < 1 || t.ndim > 2)
      fail(std::string(name) + ": must have rank " + (std::string(name) == "page_table" ? "2" : "1") +
           ", got " + std::to_string(t.ndim));
    dtypeKnown(name, t);
    a.isInt = t.dtype == ATTN_I32;
    a.dtype = apiDtypeName(attn_dtype(t.dtype));
    a.shape.assign(t.shape, t.shape + t.ndim);
    for (int i = 0; i < t.ndim; ++i)
      if (t.shape[i] < 0 || t.strides[i] < 0)
        fail(std::string(name) + ": negative size or stride");
    dataPresent(name, t);
    span(name, t);
    const attn_tensor *p = &t;
    a.at = [p](int64_t i) {
      int64_t off = p->ndim == 1 ? i * p->strides[0]
                                 : (i / p->shape[1]) * p->strides[0] + (i % p->shape[1]) * p->strides[1];
      return int64_t(static_cast<const int32_t *>(p->data)[off]);
    };
    return a;
  }

  /// Ragged and paged storage, per-sequence lengths: host calls only so far. The
  /// sequences are planned (and their arguments checked) by rt::planSequences, the
  /// compiler's own check.
  CheckedCall runPerSequence(CheckedCall &c) {
    c.qStorage = m_.qStorage;
    c.kvStorage = m_.kvStorage;
    bool qRagged = c.qStorage == "ragged";
    const std::string &kv = c.kvStorage;
    int qRank = qRagged ? 3 : 4, kRank = kv == "ragged" ? 3 : 4;
    const char *qLayout = qRagged ? "[total_q, Hq, D]" : "[B, Hq, Sq, D]";
    const char *kLayout = kv == "ragged"  ? "[total_kv, Hkv, D]"
                          : kv == "paged" ? "[pages, page_size, Hkv, D]"
                                          : "[B, Hkv, Skv, D]";
    basics("q", c.q, qLayout, qRank);
    basics("k", c.k, kLayout, kRank);
    basics("v", c.v, kLayout, kRank);
    basics("o", c.o, qRagged ? "[total_q, Hq, Dv]" : "[B, Hq, Sq, Dv]", qRank);
    for (auto [name, t] : {std::pair{"k", &c.k}, {"v", &c.v}, {"o", &c.o}})
      if (t->dtype != c.q.dtype)
        fail(std::string(name) + ": expected q's dtype " + apiDtypeName(attn_dtype(c.q.dtype)) +
             ", got " + apiDtypeName(attn_dtype(t->dtype)));
    // A GPU call's sequence arguments are device memory: the checks read host copies.
    const attn_tensor *given[] = {&call_.cu_seqlens_q, &call_.cu_seqlens_kv, &call_.page_table,
                                  &call_.kv_lens, &call_.q_lens};
    const attn_tensor *readable[5];
    for (int i = 0; i < 5; ++i)
      readable[i] = options_.sequenceCopies ? &options_.sequenceCopies[i] : given[i];
    SequenceArrays arrays{intArray("cu_seqlens_q", *readable[0]),
                          intArray("cu_seqlens_kv", *readable[1]),
                          intArray("page_table", *readable[2]), intArray("kv_lens", *readable[3]),
                          intArray("q_lens", *readable[4])};
    // A GPU call's arrays are device memory: the host reads (copies of) what
    // rt::sequenceReads says; the kernels clamp lengths to the buffers and mask a
    // page outside the cache (docs/bundle-and-abi.md, "Storage").
    arrays.maxSeqlenQ = call_.max_seqlen_q;
    arrays.maxSeqlenKv = call_.max_seqlen_kv;
    SequenceReads reads = sequenceReads(c.qStorage, c.kvStorage, !options_.host, call_.validate != 0,
                                        call_.max_seqlen_q, call_.max_seqlen_kv);
    if (!reads.pageIds)
      arrays.pageTable.at = nullptr;
    if (!reads.lengths) {
      arrays.lengthsVisible = false;
      for (IntArray *a : {&arrays.cuSeqlensQ, &arrays.cuSeqlensKv, &arrays.kvLens, &arrays.qLens})
        a->at = nullptr;
    }
    if (!options_.host) {
      // The kernels read the arrays as int32 rows with unit element stride.
      const char *names[] = {"cu_seqlens_q", "cu_seqlens_kv", "page_table", "kv_lens", "q_lens"};
      for (int i = 0; i < 5; ++i) {
        const attn_tensor &t = *given[i];
        if (!t.data || t.ndim < 1)
          continue;
        if (t.shape[t.ndim - 1] > 1 && t.strides[t.ndim - 1] != 1)
          fail(std::string(names[i]) + ": the GPU kernels read it with unit stride along its "
               "last dimension, got stride " + std::to_string(t.strides[t.ndim - 1]) +
               " (pass a contiguous tensor)");
      }
    }
    SequencePlan plan;
    std::string error = planSequences(c.qStorage, c.kvStorage,
                                      std::vector<int64_t>(c.q.shape, c.q.shape + qRank),
                                      std::vector<int64_t>(c.k.shape, c.k.shape + kRank), arrays, plan);
    if (!error.empty())
      fail(error);
    c.cuSeqlensQ = call_.cu_seqlens_q, c.cuSeqlensKv = call_.cu_seqlens_kv;
    c.pageTable = call_.page_table, c.kvLens = call_.kv_lens, c.qLens = call_.q_lens;
    c.batch = plan.batch;
    c.seqQ = plan.seqQ;
    c.seqKv = plan.seqKv;
    c.maxSeqQ = plan.maxSeqQ;
    c.headsQ = m_.headsQ, c.headsKv = m_.headsKv, c.headDim = m_.headDim, c.headDimV = m_.headDimV;
    auto want = [&](const char *name, const attn_tensor &t, std::vector<int64_t> dims,
                    const char *symbols) {
      for (size_t i = 0; i < dims.size(); ++i)
        if (t.shape[i] != dims[i])
          fail(std::string(name) + ": expected shape " + shapeText(dims.data(), int(dims.size())) +
               " " + symbols + ", got " + shapeText(t.shape, t.ndim));
    };
    int64_t B = c.batch;
    if (qRagged)
      want("q", c.q, {c.q.shape[0], c.headsQ, c.headDim}, "(total_q, Hq, D)");
    else
      want("q", c.q, {B, c.headsQ, c.q.shape[2], c.headDim}, "(B, Hq, Sq, D)");
    std::vector<int64_t> kd(c.k.shape, c.k.shape + kRank);
    kd[kv == "paged" ? 2 : 1] = c.headsKv; // [pages, page_size, Hkv, D] or [., Hkv, ...]
    kd.back() = c.headDim;
    want("k", c.k, kd, kLayout);
    kd.back() = c.headDimV;
    want("v", c.v, kd, kLayout);
    std::vector<int64_t> od(c.q.shape, c.q.shape + qRank);
    od.back() = c.headDimV;
    want("o", c.o, od, qRagged ? "(total_q, Hq, Dv)" : "(B, Hq, Sq, Dv)");
    stridesAndSpans(c);
    // The kernels' (b, h, s) strides of each buffer's rows (Args.h).
    for (auto [t, tensor] : {std::pair{0, &c.q}, {1, &c.k}, {2, &c.v}, {3, &c.o}}) {
      const std::string &storage = t == 0 || t == 3 ? c.qStorage : c.kvStorage;
      const int64_t *st = tensor->strides;
      if (storage == "ragged")
        c.strides[t][0] = 0, c.strides[t][1] = st[1], c.strides[t][2] = st[0];
      else if (storage == "paged")
        c.strides[t][0] = st[0], c.strides[t][1] = st[2], c.strides[t][2] = st[1];
      else
        c.strides[t][0] = st[0], c.strides[t][1] = st[1], c.strides[t][2] = st[2];
    }
    if (c.lse.data) {
      if (!m_.hasLse && !options_.lseAvailable)
        fail("lse: this bundle does not compute lse (its outputs are [o]); pass none");
      std::vector<int64_t> ld(c.q.shape, c.q.shape + qRank - 1);
      if (c.lse.ndim != qRank - 1)
        fail(std::string("lse: expected a tensor of ") + std::to_string(qRank - 1) + " dimensions " +
             (qRagged ? "[total_q, Hq]" : "[B, Hq, Sq]") + ", got " + std::to_string(c.lse.ndim));
      if (c.lse.dtype != ATTN_F32)
        fail(std::string("lse: expected dtype f32, got ") + apiDtypeName(attn_dtype(c.lse.dtype)));
      want("lse", c.lse, ld, qRagged ? "(total_q, Hq)" : "(B, Hq, Sq)");
      span("lse", c.lse);
      contiguous("lse", c.lse);
    }
    symbols_ = {{"B", B}, {"Hq", c.headsQ}, {"Hkv", c.headsKv}, {"Sq", c.seqQ},
                {"Skv", c.seqKv}, {"D", c.headDim}, {"Dv", c.headDimV}};
    inputs(c);
    c.kvOffset = call_.has_kv_offset ? call_.kv_offset : m_.kvOffset ? *m_.kvOffset : 0;
    c.qOffsetFromLengths = !call_.has_q_offset && !m_.qOffset && m_.align == "bottom_right";
    c.qOffset = call_.has_q_offset ? call_.q_offset : m_.qOffset ? *m_.qOffset : 0;
    c.names = {{"batch", B},           {"seq_q", c.seqQ},       {"seq_kv", c.seqKv},
               {"heads_q", c.headsQ},  {"heads_kv", c.headsKv}, {"head_dim", c.headDim},
               {"head_dim_v", c.headDimV}, {"num_splits", 1}};
    // The GPU kernels' per-sequence parameters (docs/bundle-and-abi.md, "Storage").
    c.names["q_rows"] = qRagged ? c.q.shape[0] : c.q.shape[2];
    c.names["kv_rows"] = kv == "ragged" ? c.k.shape[0]
                         : kv == "paged" ? c.k.shape[0] * c.k.shape[1]
                                         : c.k.shape[2];
    c.names["q_offset_from_lengths"] = c.qOffsetFromLengths ? 1 : 0;
    if (kv == "paged") {
      c.names["page_size"] = c.k.shape[1];
      c.names["num_pages"] = c.k.shape[0];
      c.names["pages_per_seq"] = call_.page_table.ndim == 2 ? call_.page_table.shape[1] : 0;
      c.names["page_table_stride"] = call_.page_table.ndim == 2 ? call_.page_table.strides[0] : 0;
    }
    for (const std::string &s : m_.freeSymbols())
      c.names[s] = symbols_.at(s);
    // A padded q buffer's rows past every length still get o = 0 (and lse = -inf):
    // the call is empty only when the buffer has no rows.
    c.empty = B == 0 || c.headsQ == 0 || (qRagged ? c.maxSeqQ : c.seqQ) == 0;
    return c;
  }

  void dtypeKnown(const std::string &name, const attn_tensor &t) const {
    if (t.dtype < ATTN_BF16 || t.dtype > ATTN_I32)
      fail(name + ": unknown dtype code " + std::to_string(int(t.dtype)));
  }

  void dataPresent(const std::string &name, const attn_tensor &t) const {
    if (!t.data && hasElements(t))
      fail(name + ": data pointer is NULL");
  }

  /// The bytes the tensor spans must be a number: huge sizes or strides would wrap
  /// the address arithmetic of the kernels and of the checks on the device.
  void span(const std::string &name, const attn_tensor &t) const {
    uint64_t bytes = 0;
    if (!checkedSpanBytes(t, bytes))
      fail(name + ": shape " + shapeText(t.shape, t.ndim) + " with strides " +
           shapeText(t.strides, t.ndim) + " spans more than 2^62 bytes");
  }

  /// Rank, dtype, non-negative sizes and a data pointer.
  void basics(const std::string &name, const attn_tensor &t, const char *layout,
              int rank = 4) const {
    if (t.ndim != rank)
      fail(name + ": expected a tensor of " + std::to_string(rank) + " dimensions " + layout +
           ", got " + std::to_string(t.ndim) + (t.ndim == 0 && !t.data ? " (missing)" : ""));
    dtypeKnown(name, t);
    attn_dtype want = toApi(m_.dtype);
    if (options_.host && t.dtype != want && t.dtype != ATTN_F32)
      fail(name + ": expected dtype " + apiDtypeName(want) + " (the bundle's) or f32 (host "
           "kernels compute in f32), got " + apiDtypeName(attn_dtype(t.dtype)));
    if (!options_.host && t.dtype != want)
      fail(name + ": expected dtype " + apiDtypeName(want) + " (the bundle's), got " +
           apiDtypeName(attn_dtype(t.dtype)));
    for (int i = 0; i < rank; ++i)
      if (t.shape[i] < 0)
        fail(name + ": negative size in shape " + shapeText(t.shape, rank));
    dataPresent(name, t);
  }

  void shape(const std::string &name, const attn_tensor &t, std::initializer_list<int64_t> want,
             const char *symbols) const {
    int64_t expected[4];
    int i = 0;
    bool same = true;
    for (int64_t w : want) {
      expected[i] = w;
      same &= t.shape[i] == w;
      ++i;
    }
    if (!same)
      fail(name + ": expected shape " + shapeText(expected, 4) + " " + symbols + ", got " +
           shapeText(t.shape, 4));
  }

  /// The last dimension must be contiguous; strides must not be negative; the output
  /// must not alias itself (no zero stride over a dimension of size > 1).
  void strides(const std::string &name, const attn_tensor &t, bool output) const {
    if (t.shape[t.ndim - 1] > 1 && t.strides[t.ndim - 1] != 1)
      fail(name + ": the last dimension must be contiguous (stride 1), got strides " +
           shapeText(t.strides, t.ndim));
    for (int i = 0; i < t.ndim; ++i) {
      if (t.strides[i] < 0)
        fail(name + ": negative strides are not supported, got strides " +
             shapeText(t.strides, t.ndim));
      if (output && t.shape[i] > 1 && t.strides[i] == 0)
        fail(name + ": an output cannot have a zero stride (dimension " + std::to_string(i) +
             "), got strides " + shapeText(t.strides, t.ndim));
    }
  }

  /// Row-major contiguous, ignoring dimensions of size 1; an empty tensor is
  /// contiguous (both as PyTorch's is_contiguous()).
  void contiguous(const std::string &name, const attn_tensor &t) const {
    for (int i = 0; i < t.ndim; ++i)
      if (t.shape[i] == 0)
        return;
    int64_t expect = 1;
    int64_t want[8];
    bool ok = true;
    for (int i = t.ndim - 1; i >= 0; --i) {
      want[i] = expect;
      if (t.shape[i] != 1 && t.strides[i] != expect)
        ok = false;
      if (__builtin_mul_overflow(expect, t.shape[i], &expect))
        expect = INT64_MAX; // no stride can match it; span() names the real problem
    }
    if (!ok)
      fail(name + ": expected a contiguous tensor (strides " + shapeText(want, t.ndim) +
           "), got strides " + shapeText(t.strides, t.ndim));
  }

  void lse(const CheckedCall &c) const {
    const attn_tensor &t = c.lse;
    if (!t.data)
      return;
    if (!m_.hasLse && !options_.lseAvailable)
      fail("lse: this bundle does not compute lse (its outputs are [o]); pass none");
    if (t.ndim != 3)
      fail("lse: expected a tensor of 3 dimensions [B, Hq, Sq], got " + std::to_string(t.ndim));
    dtypeKnown("lse", t);
    if (t.dtype != ATTN_F32)
      fail(std::string("lse: expected dtype f32, got ") + apiDtypeName(attn_dtype(t.dtype)));
    int64_t want[3] = {c.batch, c.headsQ, c.seqQ};
    if (t.shape[0] != want[0] || t.shape[1] != want[1] || t.shape[2] != want[2])
      fail("lse: expected shape " + shapeText(want, 3) + " (B, Hq, Sq), got " +
           shapeText(t.shape, 3));
    span("lse", t);
    contiguous("lse", t);
  }

  void inputs(CheckedCall &c) {
    if (call_.num_inputs < 0)
      fail("num_inputs is negative (" + std::to_string(call_.num_inputs) + ")");
    if (call_.num_inputs > 0 && (!call_.input_names || !call_.inputs))
      fail("num_inputs is " + std::to_string(call_.num_inputs) +
           " but input_names or inputs is NULL");
    std::vector<int> given(m_.inputs.size(), -1);
    for (int i = 0; i < call_.num_inputs; ++i) {
      const char *n = call_.input_names[i];
      if (!n)
        fail("input_names[" + std::to_string(i) + "] is NULL");
      int index = m_.findInput(n);
      if (index < 0)
        fail("unknown input '" + std::string(n) + "' (this bundle takes " + declaredList() + ")");
      if (given[size_t(index)] >= 0)
        fail("input '" + std::string(n) + "' is given twice");
      given[size_t(index)] = i;
    }
    for (size_t d = 0; d < m_.inputs.size(); ++d) {
      const InputDecl &decl = m_.inputs[d];
      if (given[d] < 0)
        fail("missing input '" + decl.name + "' (" + dtypeName(decl.dtype) + " " +
             declShape(decl) + ")");
      const attn_tensor &t = call_.inputs[given[d]];
      input(decl, t);
      c.inputs.push_back(t);
    }
  }

  std::string declaredList() const {
    if (m_.inputs.empty())
      return "no extra inputs";
    std::string out;
    for (const InputDecl &d : m_.inputs)
      out += (out.empty() ? "" : ", ") + d.name;
    return out;
  }

  static std::string declShape(const InputDecl &d) {
    std::string out = "[";
    for (size_t i = 0; i < d.shape.size(); ++i)
      out += (i ? ", " : "") + (d.shape[i].isSymbol() ? d.shape[i].symbol
                                                       : std::to_string(d.shape[i].size));
    return out + "]";
  }

  void input(const InputDecl &decl, const attn_tensor &t) {
    std::string name = "input " + decl.name;
    int rank = int(decl.shape.size());
    if (t.ndim != rank)
      fail(name + ": expected " + std::to_string(rank) + " dimensions " + declShape(decl) +
           ", got " + std::to_string(t.ndim));
    dtypeKnown(name, t);
    attn_dtype want = toApi(decl.dtype);
    if (t.dtype != want)
      fail(name + ": expected dtype " + apiDtypeName(want) + ", got " + apiDtypeName(attn_dtype(t.dtype)));
    // Bind free symbols on first use; every other occurrence must agree.
    int64_t expected[8];
    bool same = true;
    for (int i = 0; i < rank; ++i) {
      const Dim &d = decl.shape[size_t(i)];
      if (!d.isSymbol()) {
        expected[i] = d.size;
      } else {
        auto it = symbols_.find(d.symbol);
        if (it == symbols_.end()) {
          // A call with no work (B or Sq zero) may have empty inputs: a block list of
          // zero query blocks. Otherwise a free symbol sizes a grid and must be positive.
          bool noWork = symbols_.at("B") == 0 || symbols_.at("Sq") == 0;
          if (t.shape[i] < 0 || (t.shape[i] == 0 && !noWork))
            fail(name + ": size symbol " + d.symbol + " must be positive, got shape " +
                 shapeText(t.shape, t.ndim));
          it = symbols_.emplace(d.symbol, t.shape[i]).first;
        }
        expected[i] = it->second;
      }
      same &= expected[i] == t.shape[i];
    }
    if (!same) {
      std::string symbols = "(";
      for (int i = 0; i < rank; ++i) {
        const Dim &d = decl.shape[size_t(i)];
        symbols += (i ? ", " : "") + (d.isSymbol() ? d.symbol : std::to_string(d.size));
      }
      fail(name + ": expected shape " + shapeText(expected, rank) + " " + symbols + "), got " +
           shapeText(t.shape, t.ndim));
    }
    span(name, t);
    contiguous(name, t);
    dataPresent(name, t);
  }

  void aligned(const std::string &name, const attn_tensor &t) const {
    uint64_t a = uint64_t(m_.alignment);
    size_t esize = (t.dtype == ATTN_BF16 || t.dtype == ATTN_FP16) ? 2 : 4;
    if (reinterpret_cast<uintptr_t>(t.data) % a != 0) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%p", t.data);
      fail(name + ": data pointer " + buf + " is not " + std::to_string(a) +
           "-byte aligned, which this bundle's kernels need");
    }
    for (int i = 0; i < t.ndim - 1; ++i)
      if (t.shape[i] > 1 && (uint64_t(t.strides[i]) * esize) % a != 0)
        fail(name + ": stride " + std::to_string(t.strides[i]) + " of dimension " +
             std::to_string(i) + " (" + std::to_string(uint64_t(t.strides[i]) * esize) +
             " bytes) is not a multiple of " + std::to_string(a) +
             " bytes, which this bundle's kernels need");
  }

  const Manifest &m_;
  const attn_call &call_;
  const char *fn_;
  CheckOptions options_;
  std::map<std::string, int64_t> symbols_;
};

} // namespace

CheckedCall checkCall(const Manifest &m, const attn_call &call, const char *fn,
                      const CheckOptions &options) {
  return Checker(m, call, fn, options).run();
}

void evalGrid(const Expr expr[3], const std::string &what, const CheckedCall &c, const char *fn,
              unsigned grid[3]) {
  const char *axes[] = {"x", "y", "z"};
  for (int a = 0; a < 3; ++a) {
    int64_t value;
    try {
      value = expr[a].eval(c.names);
    } catch (const ExprError &e) {
      throw ArgError(std::string(fn) + ": " + what + ": grid." + axes[a] + ": " + e.what());
    }
    int64_t max = a == 0 ? int64_t(std::numeric_limits<int32_t>::max()) : 65535;
    if (value < 1 || value > max)
      throw ArgError(std::string(fn) + ": " + what + ": grid." + axes[a] + " = '" +
                     expr[a].text() + "' = " + std::to_string(value) +
                     " is outside [1, " + std::to_string(max) + "]");
    grid[a] = unsigned(value);
  }
}

void evalGrid(const Variant &v, const CheckedCall &c, const char *fn, unsigned grid[3]) {
  evalGrid(v.grid, "variant " + v.name, c, fn, grid);
}

int64_t chooseSplits(int64_t requested, int64_t ctas, int64_t smCount, int64_t kvBlocks) {
  if (requested >= 1)
    return requested;
  // A grid of 80% of the SMs or more gains little from splitting and pays the combine.
  if (ctas <= 0 || smCount <= 0 || ctas * 5 >= smCount * 4)
    return 1;
  int64_t splits = (smCount + ctas - 1) / ctas;
  splits = std::min({splits, std::max<int64_t>(1, kvBlocks / 2), int64_t(128)});
  return std::max<int64_t>(1, splits);
}

std::vector<uint64_t> packParams(const Variant &v, const CheckedCall &c, const char *fn) {
  return packParams(v.params, "variant " + v.name, c, {}, fn);
}

std::vector<uint64_t> packParams(const std::vector<Param> &params, const std::string &what,
                                 const CheckedCall &c, const std::vector<uint64_t> &scratch,
                                 const char *fn, std::vector<uint64_t> *extents,
                                 const std::vector<uint64_t> &scratchBytes) {
  std::vector<uint64_t> slots;
  if (extents)
    extents->clear();
  const attn_tensor *tensors[] = {&c.q, &c.k, &c.v, &c.o, &c.lse};
  for (const Param &p : params) {
    uint64_t slot = 0;
    if (p.type == ParamType::Ptr) {
      if (p.source.kind == ParamSource::Scratch) {
        size_t k = size_t(p.source.input);
        slot = k < scratch.size() ? scratch[k] : 0;
        slots.push_back(slot);
        if (extents)
          extents->push_back(slot && k < scratchBytes.size() ? scratchBytes[k] : 0);
        continue;
      }
      const attn_tensor *sequences[] = {&c.cuSeqlensQ, &c.cuSeqlensKv, &c.pageTable, &c.kvLens,
                                        &c.qLens};
      const attn_tensor &t = p.source.kind == ParamSource::TensorPtr ? *tensors[p.source.tensor]
                             : p.source.kind == ParamSource::SequencePtr
                                 ? *sequences[p.source.tensor]
                                 : c.inputs[size_t(p.source.input)];
      slot = reinterpret_cast<uintptr_t>(t.data);
      if (extents)
        extents->push_back(t.data ? spanBytes(t) : 0);
    } else {
      if (extents)
        extents->push_back(0);
      int64_t value = 0;
      switch (p.source.kind) {
      case ParamSource::Size:
      case ParamSource::Offset:
        if (p.name == "q_offset") {
          value = c.qOffset;
        } else if (p.name == "kv_offset") {
          value = c.kvOffset;
        } else {
          auto it = c.names.find(p.name);
          if (it == c.names.end())
            throw ArgError(std::string(fn) + ": " + what + ": parameter " + p.name +
                           " has no value for this call (a paged-cache parameter of a "
                           "bundle whose storage is not paged?)");
          value = it->second;
        }
        break;
      case ParamSource::Stride:
        value = c.strides[p.source.tensor][p.source.dim];
        break;
      case ParamSource::InputDim:
        value = c.inputs[size_t(p.source.input)].shape[p.source.dim];
        break;
      default:
        throw ArgError(std::string(fn) + ": internal error: parameter '" + p.name +
                       "' has no value");
      }
      if (p.type == ParamType::I32) {
        if (value < std::numeric_limits<int32_t>::min() || value > std::numeric_limits<int32_t>::max())
          throw ArgError(std::string(fn) + ": " + what + ": parameter " + p.name +
                         " (i32) = " + std::to_string(value) + " does not fit in 32 bits");
        int32_t narrow = int32_t(value);
        std::memcpy(&slot, &narrow, sizeof narrow);
      } else {
        std::memcpy(&slot, &value, sizeof value);
      }
    }
    slots.push_back(slot);
  }
  return slots;
}

attn_tensor contiguousTensor(void *data, int32_t dtype, const std::vector<int64_t> &shape) {
  attn_tensor t{};
  t.data = data;
  t.dtype = dtype;
  t.ndim = int32_t(shape.size());
  int64_t stride = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    t.shape[d] = shape[size_t(d)];
    t.strides[d] = stride;
    stride *= std::max<int64_t>(shape[size_t(d)], 1);
  }
  return t;
}

} // namespace attune::rt
