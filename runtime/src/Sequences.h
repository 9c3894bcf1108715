//===- Sequences.h - the per-sequence arguments of a call -*- C++ -*-===//
//
// One home for what a per-sequence call means and how its arguments are checked
// (ragged or paged storage, right-padded batches with lengths): the runtime's C API
// and the compiler's host back ends (codegen/Arguments) both plan a call here, so
// that they accept and refuse the same calls with the same messages.
//
// Storage (the spec's "storage"): q is "padded" [B, Hq, Sq, D] (optional q_lens [B])
// or "ragged" [total_q, Hq, D] with cu_seqlens_q [B + 1]; k and v are "padded"
// [B, Hkv, Skv, D] (optional kv_lens [B]), "ragged" [total_kv, Hkv, D] with
// cu_seqlens_kv [B + 1], or "paged" [pages, page_size, Hkv, D] with page_table
// [B, max_pages] and kv_lens [B]. Sequence b is then rows [cu[b], cu[b + 1]) of a
// ragged buffer, and key j of a paged one slot j mod page_size of page
// page_table[b, j / page_size].
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_RUNTIME_SEQUENCES_H
#define ATTUNE_RUNTIME_SEQUENCES_H

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace attune::rt {

/// An integer array of a call, read through `at` (a flat row-major index).
struct IntArray {
  bool present = false;
  bool isInt = true;      // false: the caller passed floats (refused)
  std::string dtype;      // for messages ("float32", ...)
  std::vector<int64_t> shape;
  /// Empty when the values cannot be read (a GPU call's page_table without
  /// validation): only its shape is checked.
  std::function<int64_t(int64_t)> at;
};

struct SequenceArrays {
  IntArray cuSeqlensQ, cuSeqlensKv, pageTable, kvLens, qLens;
  /// The caller's bounds on every sequence's lengths (0: none given): checked when
  /// the lengths are read; when they are not (`lengthsVisible` false), the plan's
  /// Sq / Skv of ragged and paged buffers (clamped to the buffers).
  int64_t maxSeqlenQ = 0, maxSeqlenKv = 0;
  /// false: no value of any array is read (a GPU call whose max_seqlen bounds size
  /// the grid): only shapes are checked, and the kernels clamp what they read.
  bool lengthsVisible = true;
  bool any() const {
    return cuSeqlensQ.present || cuSeqlensKv.present || pageTable.present || kvLens.present ||
           qLens.present;
  }
};

/// One sequence: its lengths and where its rows start in a ragged buffer (0 else).
struct SequenceRows {
  int64_t qLen = 0, kvLen = 0, qRow0 = 0, kvRow0 = 0;
};

struct SequencePlan {
  int64_t batch = 0;
  /// The inputs' Sq and Skv: a padded buffer's length, else the longest sequence's.
  int64_t seqQ = 0, seqKv = 0;
  int64_t maxSeqQ = 0, maxSeqKv = 0;
  int64_t pageSize = 0, numPages = 0;
  std::vector<SequenceRows> sequences;
};

/// What the host reads of a call's sequence arrays. A host call reads everything. A
/// GPU call's arrays are device memory (a read is a synchronous copy): it reads the
/// lengths (cu_seqlens, kv_lens, q_lens) only when the grid needs them, i.e. for
/// ragged q without max_seqlen_q or ragged/paged kv without max_seqlen_kv, and the
/// page table only when validating; validating reads everything.
struct SequenceReads {
  bool lengths = true, pageIds = true;
};
SequenceReads sequenceReads(const std::string &qStorage, const std::string &kvStorage,
                            bool onDevice, bool validate, int64_t maxSeqlenQ,
                            int64_t maxSeqlenKv);

/// Checks the sequence arguments of a call against its storage and its q / k buffer
/// shapes (whose ranks must fit the storage; heads and head dims are the caller's to
/// check) and plans it. Returns "" or the error, naming the argument: cu_seqlens that
/// do not start at 0, decrease or do not end at the buffer's length; lengths outside
/// the buffers; kv_lens beyond the pages a page_table row holds; a page id a sequence
/// uses outside the cache; an argument the storage does not take, or one it needs.
std::string planSequences(const std::string &qStorage, const std::string &kvStorage,
                          const std::vector<int64_t> &qShape, const std::vector<int64_t> &kShape,
                          const SequenceArrays &seq, SequencePlan &plan);

} // namespace attune::rt

#endif
