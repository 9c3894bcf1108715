//===- Sequences.cpp - the per-sequence arguments of a call ---------------===//
#include "Sequences.h"

#include <algorithm>
#include <tuple>

namespace attune::rt {

namespace {

std::string shapeString(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

struct Planner {
  const std::string &qStorage, &kvStorage;
  const std::vector<int64_t> &qShape, &kShape;
  const SequenceArrays &seq;
  SequencePlan &plan;
  std::string error;

  bool fail(std::string message) {
    error = std::move(message);
    return false;
  }

  bool takes(const IntArray &a, const char *name, bool ok, const std::string &why) {
    return !a.present || ok || fail(std::string(name) + ": " + why);
  }

  bool int32s(const IntArray &a, const char *name, size_t rank) {
    if (!a.present)
      return true;
    if (!a.isInt)
      return fail(std::string(name) + ": must be int32, got " +
                  (a.dtype.empty() ? std::string("floats") : a.dtype));
    if (a.shape.size() != rank)
      return fail(std::string(name) + ": must have rank " + std::to_string(rank) + ", got " +
                  shapeString(a.shape));
    return true;
  }

  bool rank(const char *name, const std::vector<int64_t> &shape, size_t r, const char *dims) {
    if (shape.size() != r)
      return fail(std::string(name) + ": expected " + dims + " (" + (name[0] == 'q' ? qStorage : kvStorage) +
                  " storage), got " + shapeString(shape));
    return true;
  }

  bool cuCheck(const IntArray &cu, const char *name, int64_t total, const char *buffer) {
    if (cu.shape[0] < 1)
      return fail(std::string(name) + ": needs B + 1 >= 1 entries, got " + shapeString(cu.shape));
    if (cu.at(0) != 0)
      return fail(std::string(name) + "[0] must be 0, got " + std::to_string(cu.at(0)));
    for (int64_t i = 1; i < cu.shape[0]; ++i)
      if (cu.at(i) < cu.at(i - 1))
        return fail(std::string(name) + " must be non-decreasing: " + name + "[" +
                    std::to_string(i) + "] = " + std::to_string(cu.at(i)) + " < " + name + "[" +
                    std::to_string(i - 1) + "] = " + std::to_string(cu.at(i - 1)));
    int64_t last = cu.at(cu.shape[0] - 1);
    if (last != total)
      return fail(std::string(name) + "[" + std::to_string(cu.shape[0] - 1) + "] = " +
                  std::to_string(last) + " must be the buffer's length " + std::to_string(total) +
                  " (" + buffer + " dimension 0)");
    return true;
  }

  bool lensCheck(const IntArray &lens, const char *name, int64_t most, const std::string &what) {
    for (int64_t i = 0; i < lens.shape[0]; ++i)
      if (lens.at(i) < 0 || lens.at(i) > most)
        return fail(std::string(name) + "[" + std::to_string(i) + "] = " +
                    std::to_string(lens.at(i)) + " is outside [0, " + std::to_string(most) +
                    "] (" + what + ")");
    return true;
  }

  bool run() {
    bool qRagged = qStorage == "ragged";
    const std::string &kv = kvStorage;
    std::string qWhy = "the spec's q storage is " + qStorage;
    std::string kvWhy = "the spec's kv storage is " + kv;
    if (!takes(seq.cuSeqlensQ, "cu_seqlens_q", qRagged,
               qWhy + " (declare \"storage\": {\"q\": \"ragged\"} for [total_q, Hq, D] q)") ||
        !takes(seq.qLens, "q_lens", !qRagged, qWhy + ": its lengths are cu_seqlens_q's") ||
        !takes(seq.cuSeqlensKv, "cu_seqlens_kv", kv == "ragged",
               kvWhy + " (declare \"storage\": {\"kv\": \"ragged\"} for [total_kv, Hkv, D] k/v)") ||
        !takes(seq.pageTable, "page_table", kv == "paged",
               kvWhy + " (declare \"storage\": {\"kv\": \"paged\"} for a paged cache)") ||
        !takes(seq.kvLens, "kv_lens", kv != "ragged", kvWhy + ": its lengths are cu_seqlens_kv's"))
      return false;
    if (!int32s(seq.cuSeqlensQ, "cu_seqlens_q", 1) || !int32s(seq.cuSeqlensKv, "cu_seqlens_kv", 1) ||
        !int32s(seq.pageTable, "page_table", 2) || !int32s(seq.kvLens, "kv_lens", 1) ||
        !int32s(seq.qLens, "q_lens", 1))
      return false;
    if (qRagged && !seq.cuSeqlensQ.present)
      return fail("cu_seqlens_q is missing: the spec's q storage is ragged (q [total_q, Hq, D])");
    if (kv == "ragged" && !seq.cuSeqlensKv.present)
      return fail("cu_seqlens_kv is missing: the spec's kv storage is ragged (k/v [total_kv, Hkv, D])");
    if (kv == "paged" && (!seq.pageTable.present || !seq.kvLens.present))
      return fail(std::string(seq.pageTable.present ? "kv_lens" : "page_table") +
                  " is missing: the spec's kv storage is paged (page_table [B, max_pages] and "
                  "kv_lens [B])");
    if (!rank("q", qShape, qRagged ? 3 : 4, qRagged ? "[total_q, Hq, D]" : "[B, Hq, Sq, D]") ||
        !rank("k", kShape, kv == "ragged" ? 3 : 4,
              kv == "ragged" ? "[total_kv, Hkv, D]"
              : kv == "paged" ? "[pages, page_size, Hkv, D]" : "[B, Hkv, Skv, D]"))
      return false;

    // The batch, from cu_seqlens_q or q, and everything else agreeing.
    int64_t batch;
    std::string batchFrom;
    if (qRagged) {
      if (seq.cuSeqlensQ.shape[0] < 1)
        return fail("cu_seqlens_q: needs B + 1 >= 1 entries, got " + shapeString(seq.cuSeqlensQ.shape));
      batch = seq.cuSeqlensQ.shape[0] - 1;
      batchFrom = "cu_seqlens_q " + shapeString(seq.cuSeqlensQ.shape);
    } else {
      batch = qShape[0];
      batchFrom = "q " + shapeString(qShape);
    }
    auto agree = [&](int64_t b, const std::string &from) {
      return b == batch || fail(from + " gives a batch of " + std::to_string(b) + " sequences, but " +
                                batchFrom + " gives " + std::to_string(batch));
    };
    if (kv == "padded" && !agree(kShape[0], "k " + shapeString(kShape)))
      return false;
    if (kv == "ragged") {
      if (seq.cuSeqlensKv.shape[0] < 1)
        return fail("cu_seqlens_kv: needs B + 1 >= 1 entries, got " + shapeString(seq.cuSeqlensKv.shape));
      if (!agree(seq.cuSeqlensKv.shape[0] - 1, "cu_seqlens_kv " + shapeString(seq.cuSeqlensKv.shape)))
        return false;
    }
    if (kv == "paged") {
      plan.numPages = kShape[0];
      plan.pageSize = kShape[1];
      if (plan.pageSize < 1)
        return fail("k: page_size (dimension 1) must be at least 1, got " + shapeString(kShape));
      if (!agree(seq.pageTable.shape[0], "page_table " + shapeString(seq.pageTable.shape)))
        return false;
    }
    for (auto [a, name] : {std::pair{&seq.qLens, "q_lens"}, std::pair{&seq.kvLens, "kv_lens"}})
      if (a->present && !agree(a->shape[0], std::string(name) + " " + shapeString(a->shape)))
        return false;

    if (seq.maxSeqlenQ < 0 || seq.maxSeqlenKv < 0)
      return fail(std::string(seq.maxSeqlenQ < 0 ? "max_seqlen_q" : "max_seqlen_kv") +
                  " must not be negative (0: not given), got " +
                  std::to_string(std::min(seq.maxSeqlenQ, seq.maxSeqlenKv)));
    if (!seq.lengthsVisible)
      return blind(batch);

    if (qRagged && !cuCheck(seq.cuSeqlensQ, "cu_seqlens_q", qShape[0], "q's"))
      return false;
    if (kv == "ragged" && !cuCheck(seq.cuSeqlensKv, "cu_seqlens_kv", kShape[0], "k's"))
      return false;
    if (seq.qLens.present && !lensCheck(seq.qLens, "q_lens", qShape[2], "q's Sq"))
      return false;
    if (kv == "padded" && seq.kvLens.present && !lensCheck(seq.kvLens, "kv_lens", kShape[2], "k's Skv"))
      return false;
    if (kv == "paged") {
      int64_t width = seq.pageTable.shape[1];
      if (!lensCheck(seq.kvLens, "kv_lens", width * plan.pageSize,
                     "the " + std::to_string(width) + " pages of " + std::to_string(plan.pageSize) +
                         " a page_table row holds"))
        return false;
      // Every page a sequence uses must be in the cache; entries past its length are
      // not read (serving engines pad rows with anything, -1 included). A table whose
      // values the caller cannot see (device memory, no validation asked) is not
      // checked: the kernels mask the rows of a page outside the cache.
      for (int64_t b = 0; seq.pageTable.at && b < batch; ++b) {
        int64_t used = (seq.kvLens.at(b) + plan.pageSize - 1) / plan.pageSize;
        for (int64_t p = 0; p < used; ++p) {
          int64_t id = seq.pageTable.at(b * width + p);
          if (id < 0 || id >= plan.numPages)
            return fail("page_table[" + std::to_string(b) + ", " + std::to_string(p) + "] = " +
                        std::to_string(id) + " is not a page of the cache (pages 0.." +
                        std::to_string(plan.numPages - 1) + "), and sequence " + std::to_string(b) +
                        " uses it (kv_lens[" + std::to_string(b) + "] = " +
                        std::to_string(seq.kvLens.at(b)) + ")");
        }
      }
    }

    plan.batch = batch;
    plan.sequences.assign(size_t(batch), SequenceRows{});
    for (int64_t b = 0; b < batch; ++b) {
      SequenceRows &s = plan.sequences[size_t(b)];
      if (qRagged) {
        s.qRow0 = seq.cuSeqlensQ.at(b);
        s.qLen = seq.cuSeqlensQ.at(b + 1) - s.qRow0;
      } else {
        s.qLen = seq.qLens.present ? seq.qLens.at(b) : qShape[2];
      }
      if (kv == "ragged") {
        s.kvRow0 = seq.cuSeqlensKv.at(b);
        s.kvLen = seq.cuSeqlensKv.at(b + 1) - s.kvRow0;
      } else {
        s.kvLen = seq.kvLens.present ? seq.kvLens.at(b) : kShape[2];
      }
      plan.maxSeqQ = std::max(plan.maxSeqQ, s.qLen);
      plan.maxSeqKv = std::max(plan.maxSeqKv, s.kvLen);
    }
    for (auto [given, actual, name, what] :
         {std::tuple{seq.maxSeqlenQ, plan.maxSeqQ, "max_seqlen_q", "q"},
          std::tuple{seq.maxSeqlenKv, plan.maxSeqKv, "max_seqlen_kv", "kv"}})
      if (given > 0 && actual > given) {
        int64_t b = 0;
        for (; b < batch; ++b)
          if ((what[0] == 'q' ? plan.sequences[size_t(b)].qLen : plan.sequences[size_t(b)].kvLen) > given)
            break;
        return fail(std::string(name) + " = " + std::to_string(given) + " is less than sequence " +
                    std::to_string(b) + "'s " + what + " length " + std::to_string(actual));
      }
    plan.seqQ = qRagged ? plan.maxSeqQ : qShape[2];
    plan.seqKv = kv == "padded" ? kShape[2] : plan.maxSeqKv;
    return true;
  }

  /// The plan of a call whose lengths are not read: Sq / Skv of ragged and paged
  /// buffers from the caller's max_seqlen bounds, clamped to what the buffers hold.
  bool blind(int64_t batch) {
    bool qRagged = qStorage == "ragged";
    const std::string &kv = kvStorage;
    if ((qRagged && seq.maxSeqlenQ <= 0) || (kv != "padded" && seq.maxSeqlenKv <= 0))
      return fail(std::string(qRagged && seq.maxSeqlenQ <= 0 ? "max_seqlen_q" : "max_seqlen_kv") +
                  " is needed when the lengths are not read (" + qStorage + " q, " + kv + " kv)");
    int64_t kvRows = kv == "ragged" ? kShape[0]
                     : kv == "paged" ? seq.pageTable.shape[1] * plan.pageSize
                                     : kShape[2];
    plan.batch = batch;
    plan.seqQ = plan.maxSeqQ = qRagged ? std::min(seq.maxSeqlenQ, qShape[0]) : qShape[2];
    plan.seqKv = plan.maxSeqKv = kv == "padded" ? kShape[2] : std::min(seq.maxSeqlenKv, kvRows);
    return true;
  }
};

} // namespace

SequenceReads sequenceReads(const std::string &qStorage, const std::string &kvStorage,
                            bool onDevice, bool validate, int64_t maxSeqlenQ,
                            int64_t maxSeqlenKv) {
  SequenceReads r;
  if (!onDevice || validate)
    return r;
  r.pageIds = false;
  r.lengths = (qStorage == "ragged" && maxSeqlenQ <= 0) ||
              (kvStorage != "padded" && maxSeqlenKv <= 0);
  return r;
}

std::string planSequences(const std::string &qStorage, const std::string &kvStorage,
                          const std::vector<int64_t> &qShape, const std::vector<int64_t> &kShape,
                          const SequenceArrays &seq, SequencePlan &plan) {
  plan = SequencePlan{};
  Planner p{qStorage, kvStorage, qShape, kShape, seq, plan, {}};
  return p.run() ? std::string() : p.error;
}

} // namespace attune::rt
