//===- BlockMap.cpp - which tiles a kernel visits, and their classes ------===//
#include "codegen/reference/BlockMap.h"

#include "codegen/Arguments.h"
#include "codegen/reference/RegionInterpreter.h"
#include "dialect/AttnOps.h"

#include <algorithm>

namespace attune {

int64_t BlockMap::count(char c) const { return std::count(tiles.begin(), tiles.end(), c); }

static int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

mlir::FailureOr<BlockMap> computeBlockMap(mlir::attn::AttentionOp op,
                                          const std::vector<const HostTensor *> &inputs,
                                          const BlockMapQuery &qy) {
  if (!op.hasBlockAnalysis())
    return op.emitError("the attention has no block analysis (run attn-analyze-blocks)");
  auto rangesOr = RegionProgram::compile(op.getKvRanges(), op);
  if (mlir::failed(rangesOr))
    return mlir::failure();
  auto classesOr = RegionProgram::compile(op.getTileClass(), op);
  if (mlir::failed(classesOr))
    return mlir::failure();
  RegionProgram *ranges = rangesOr->get(), *classes = classesOr->get();
  BlockMap map;
  map.qBlocks = ceilDiv(qy.seqQ, qy.blockM);
  map.kvBlocks = ceilDiv(qy.seqKv, qy.blockN);
  map.tiles.assign(static_cast<size_t>(map.qBlocks * map.kvBlocks), ' ');
  std::vector<Slot> scratch(std::max(ranges->numSlots(), classes->numSlots()) + 1);
  std::vector<Slot> bounds(ranges->numResults());

  auto classify = [&](int64_t qLo, int64_t qHi, int64_t kb) {
    int64_t kvLo = kb * qy.blockN, kvHi = std::min(kvLo + qy.blockN, qy.seqKv);
    Slot args[10];
    int64_t values[10] = {qy.batch, qy.head, qLo, qHi, kvLo, kvHi,
                          qy.qOffset, qy.kvOffset, qy.seqQ, qy.seqKv};
    for (int i = 0; i < 10; ++i)
      args[i].i = values[i];
    Slot cls;
    classes->run(args, inputs, scratch, &cls);
    return cls.i == mlir::attn::kEmpty ? 'e' : cls.i == mlir::attn::kFull ? 'F' : 'P';
  };

  auto listBlock = op.getKvListBlock();
  map.listMode = op.getKvListInput() && listBlock && listBlock->size() == 2 &&
                 (*listBlock)[0] % qy.blockM == 0 && (*listBlock)[1] == qy.blockN;
  for (int64_t qb = 0; qb < map.qBlocks; ++qb) {
    int64_t qLo = qb * qy.blockM, qHi = std::min(qLo + qy.blockM, qy.seqQ);
    if (map.listMode) {
      // As attn-tile: the listed key blocks of this query block's list row.
      const HostTensor &list = *inputs[*op.getKvListInput()];
      int64_t row = qLo / (*listBlock)[0];
      if (qy.batch >= list.shape[0] || qy.head >= list.shape[1] || row >= list.shape[2])
        continue;
      int64_t k = list.shape[3];
      const double *entries = list.data.data() + ((qy.batch * list.shape[1] + qy.head) * list.shape[2] + row) * k;
      for (int64_t t = 0; t < k; ++t) {
        int64_t e = int64_t(entries[t]);
        if (e < 0 || e >= map.kvBlocks || map.tiles[qb * map.kvBlocks + e] != ' ')
          continue;
        map.tiles[qb * map.kvBlocks + e] = classify(qLo, qHi, e);
      }
      continue;
    }
    Slot args[8];
    int64_t values[8] = {qy.batch, qy.head, qLo, qHi, qy.qOffset, qy.kvOffset, qy.seqQ, qy.seqKv};
    for (int i = 0; i < 8; ++i)
      args[i].i = values[i];
    ranges->run(args, inputs, scratch, bounds.data());
    for (size_t r = 0; r + 1 < bounds.size(); r += 2) {
      int64_t lo = bounds[r].i, hi = bounds[r + 1].i;
      if (hi <= lo)
        continue;
      for (int64_t kb = lo / qy.blockN; kb < ceilDiv(hi, qy.blockN); ++kb)
        if (map.tiles[qb * map.kvBlocks + kb] == ' ')
          map.tiles[qb * map.kvBlocks + kb] = classify(qLo, qHi, kb);
    }
  }
  return map;
}

} // namespace attune
