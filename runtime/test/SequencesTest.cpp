//===- SequencesTest.cpp - what a call's host side reads of its sequence arrays ===//
#include "Sequences.h"

#include <gtest/gtest.h>

using namespace attune::rt;

namespace {

IntArray array(std::vector<int64_t> values, std::vector<int64_t> shape, bool visible = true) {
  IntArray a;
  a.present = true;
  a.shape = std::move(shape);
  if (visible) {
    auto data = std::make_shared<std::vector<int64_t>>(std::move(values));
    a.at = [data](int64_t i) { return (*data)[size_t(i)]; };
  }
  return a;
}

} // namespace

TEST(Sequences, WhatTheHostReads) {
  // Host calls read everything; so does validation.
  for (bool validate : {false, true}) {
    SequenceReads r = sequenceReads("ragged", "paged", false, validate, 0, 0);
    EXPECT_TRUE(r.lengths && r.pageIds);
  }
  SequenceReads v = sequenceReads("ragged", "paged", true, true, 8, 8);
  EXPECT_TRUE(v.lengths && v.pageIds);
  // A GPU call reads the lengths only when the grid needs them, never the page ids.
  struct Case {
    const char *q, *kv;
    int64_t maxQ, maxKv;
    bool lengths;
  } cases[] = {{"ragged", "paged", 0, 0, true},    {"ragged", "paged", 8, 0, true},
               {"ragged", "paged", 0, 8, true},    {"ragged", "paged", 8, 8, false},
               {"ragged", "ragged", 8, 8, false},  {"ragged", "padded", 8, 0, false},
               {"padded", "paged", 0, 8, false},   {"padded", "padded", 0, 0, false},
               {"padded", "ragged", 8, 0, true}};
  for (const Case &c : cases) {
    SequenceReads r = sequenceReads(c.q, c.kv, true, false, c.maxQ, c.maxKv);
    EXPECT_EQ(r.lengths, c.lengths) << c.q << "/" << c.kv << " " << c.maxQ << " " << c.maxKv;
    EXPECT_FALSE(r.pageIds);
  }
}

TEST(Sequences, UnreadLengthsArePlannedFromTheBoundsClampedToTheBuffers) {
  SequenceArrays seq;
  seq.cuSeqlensQ = array({}, {4}, false); // B = 3
  seq.pageTable = array({}, {3, 5}, false);
  seq.kvLens = array({}, {3}, false);
  seq.lengthsVisible = false;
  seq.maxSeqlenQ = 7;
  seq.maxSeqlenKv = 1000; // more than the 5 pages of 16 a table row holds
  SequencePlan plan;
  ASSERT_EQ(planSequences("ragged", "paged", {20, 4, 64}, {9, 16, 2, 64}, seq, plan), "");
  EXPECT_EQ(plan.batch, 3);
  EXPECT_EQ(plan.seqQ, 7);
  EXPECT_EQ(plan.seqKv, 80);
  EXPECT_EQ(plan.pageSize, 16);
  EXPECT_EQ(plan.numPages, 9);
  EXPECT_TRUE(plan.sequences.empty());
  seq.maxSeqlenQ = 50; // more than q's 20 rows
  ASSERT_EQ(planSequences("ragged", "paged", {20, 4, 64}, {9, 16, 2, 64}, seq, plan), "");
  EXPECT_EQ(plan.seqQ, 20);
  // Shapes are still checked; a missing bound is named.
  EXPECT_NE(planSequences("ragged", "paged", {20, 4, 64}, {9, 16, 2}, seq, plan).find("k: expected"),
            std::string::npos);
  seq.maxSeqlenKv = 0;
  EXPECT_EQ(planSequences("ragged", "paged", {20, 4, 64}, {9, 16, 2, 64}, seq, plan),
            "max_seqlen_kv is needed when the lengths are not read (ragged q, paged kv)");
}

TEST(Sequences, BoundsAreCheckedWhereTheLengthsAreRead) {
  SequenceArrays seq;
  seq.cuSeqlensQ = array({0, 3, 10}, {3});
  seq.cuSeqlensKv = array({0, 5, 12}, {3});
  SequencePlan plan;
  seq.maxSeqlenQ = 7;
  seq.maxSeqlenKv = 7;
  EXPECT_EQ(planSequences("ragged", "ragged", {10, 2, 16}, {12, 2, 16}, seq, plan), "");
  EXPECT_EQ(plan.seqQ, 7);
  seq.maxSeqlenQ = 6;
  EXPECT_EQ(planSequences("ragged", "ragged", {10, 2, 16}, {12, 2, 16}, seq, plan),
            "max_seqlen_q = 6 is less than sequence 1's q length 7");
  seq.maxSeqlenQ = 0;
  seq.maxSeqlenKv = 4;
  EXPECT_EQ(planSequences("ragged", "ragged", {10, 2, 16}, {12, 2, 16}, seq, plan),
            "max_seqlen_kv = 4 is less than sequence 0's kv length 7");
  seq.maxSeqlenKv = -1;
  EXPECT_EQ(planSequences("ragged", "ragged", {10, 2, 16}, {12, 2, 16}, seq, plan),
            "max_seqlen_kv must not be negative (0: not given), got -1");
}
