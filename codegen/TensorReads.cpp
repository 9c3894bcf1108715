//===- TensorReads.cpp - lowering of reads of extra tensors ---------------===//
#include "codegen/TensorReads.h"

#include "dialect/AttnOps.h"

#include "llvm/ADT/TypeSwitch.h"

#include <limits>

using namespace mlir;
using namespace mlir::attn;
using P = arith::CmpIPredicate;

namespace attune {
namespace {


/// Whether every index is inside `mem`.
Value insideAll(Emit &e, Value mem, ValueRange indices) {
  Value ok = e.i1(true);
  for (auto [d, i] : llvm::enumerate(indices))
    ok = e.andi(ok, e.andi(e.cmpi(P::sge, i, e.i64(0)), e.cmpi(P::slt, i, e.dimI64(mem, d))));
  return ok;
}

Value loadAsI64OrF32(Emit &e, Value mem, ValueRange indices) {
  SmallVector<Value> idxs;
  for (Value i : indices)
    idxs.push_back(e.toIndex(i));
  Value v = e.load(mem, idxs);
  if (v.getType().isInteger(32))
    return arith::ExtSIOp::create(e.b, e.loc, e.b.getI64Type(), v);
  return v;
}

void lowerLookup(LookupOp op) {
  OpBuilder b(op);
  Emit e{b, op.getLoc()};
  Value ok = insideAll(e, op.getTensor(), op.getIndices());
  Type t = op.getValue().getType();
  Value zero = t.isF32() ? e.f32(0.0) : e.i64(0);
  Value v = e.ifElse(ok, t, [&] { return loadAsI64OrF32(e, op.getTensor(), op.getIndices()); }, zero);
  op.getValue().replaceAllUsesWith(v);
  op.getInBounds().replaceAllUsesWith(ok);
  op.erase();
}

void lowerContains(ContainsOp op) {
  OpBuilder b(op);
  Emit e{b, op.getLoc()};
  Value mem = op.getTensor();
  Value ok = insideAll(e, mem, op.getIndices());
  int64_t last = cast<MemRefType>(mem.getType()).getRank() - 1;
  Value found = e.ifElse(ok, b.getI1Type(), [&] {
    return e.loop(e.i64(0), e.dimI64(mem, last), {e.i1(false)}, [&](Value k, ValueRange acc) -> SmallVector<Value> {
      SmallVector<Value> idx(op.getIndices());
      idx.push_back(e.toI64(k));
      return {e.ori(acc[0], e.cmpi(P::eq, loadAsI64OrF32(e, mem, idx), op.getValue()))};
    })[0];
  }, e.i1(false));
  op.getFound().replaceAllUsesWith(found);
  op.erase();
}

void lowerSize(SizeOp op) {
  OpBuilder b(op);
  Emit e{b, op.getLoc()};
  op.getSize().replaceAllUsesWith(e.dimI64(op.getTensor(), static_cast<int64_t>(op.getDim())));
  op.erase();
}

void lowerConstantTable(ConstantTableOp op) {
  OpBuilder b(op);
  Emit e{b, op.getLoc()};
  Value v = e.f32(0.0);
  for (auto [i, x] : llvm::enumerate(op.getValues()))
    v = e.select(e.cmpi(P::eq, op.getIndex(), e.i64(i)), e.f32(x), v);
  op.getResult().replaceAllUsesWith(v);
  op.erase();
}

/// Box clipped to the tensor in dims [0, n): per-dim [lo, hi] and flags.
struct Clipped {
  SmallVector<Value> lo, hi;
  Value any, all;
};

Clipped clip(Emit &e, Value mem, ValueRange lo, ValueRange hi) {
  Clipped c{{}, {}, e.i1(true), e.i1(true)};
  for (size_t d = 0; d < lo.size(); ++d) {
    Value last = arith::SubIOp::create(e.b, e.loc, e.dimI64(mem, d), e.i64(1));
    Value l = arith::MaxSIOp::create(e.b, e.loc, lo[d], e.i64(0));
    Value h = arith::MinSIOp::create(e.b, e.loc, hi[d], last);
    c.lo.push_back(l);
    c.hi.push_back(h);
    c.any = e.andi(c.any, e.cmpi(P::sle, l, h));
    c.all = e.andi(c.all, e.andi(e.cmpi(P::sge, lo[d], e.i64(0)), e.cmpi(P::sle, hi[d], last)));
  }
  return c;
}

/// Nested loops over the clipped box; `body` gets the indices and the carried values.
/// Along `endPointsDim` (a dimension the tensor is sorted along, for min/max) only
/// the box's two end points are visited.
SmallVector<Value> boxLoops(Emit &e, const Clipped &box, size_t d, SmallVector<Value> &indices,
                            ValueRange init,
                            function_ref<SmallVector<Value>(ValueRange, ValueRange)> body,
                            int64_t endPointsDim = -1) {
  if (d == box.lo.size())
    return body(indices, init);
  Value lo = box.lo[d];
  if (static_cast<int64_t>(d) == endPointsDim) {
    // Iterations {0: lo, 1: hi}, none when the clipped dimension is empty.
    Value count = e.select(e.cmpi(P::sle, lo, box.hi[d]), e.i64(2), e.i64(0));
    return e.loop(e.i64(0), count, init, [&](Value iv, ValueRange acc) -> SmallVector<Value> {
      indices.push_back(e.select(e.cmpi(P::eq, e.toI64(iv), e.i64(0)), lo, box.hi[d]));
      SmallVector<Value> r = boxLoops(e, box, d + 1, indices, acc, body, endPointsDim);
      indices.pop_back();
      return r;
    });
  }
  Value hiExcl = arith::AddIOp::create(e.b, e.loc, box.hi[d], e.i64(1));
  // An empty dimension runs no iterations.
  hiExcl = arith::MaxSIOp::create(e.b, e.loc, hiExcl, lo);
  return e.loop(lo, hiExcl, init, [&](Value iv, ValueRange acc) -> SmallVector<Value> {
    indices.push_back(e.toI64(iv));
    SmallVector<Value> r = boxLoops(e, box, d + 1, indices, acc, body, endPointsDim);
    indices.pop_back();
    return r;
  });
}

void lowerBoxSummary(BoxSummaryOp op) {
  OpBuilder b(op);
  Emit e{b, op.getLoc()};
  Clipped box = clip(e, op.getTensor(), op.getLo(), op.getHi());
  SmallVector<Value> indices;
  SmallVector<Value> init{e.i64(std::numeric_limits<int64_t>::max()), e.i64(std::numeric_limits<int64_t>::min())};
  int64_t sortedDim = op.getSortedDim() ? static_cast<int64_t>(*op.getSortedDim()) : -1;
  // The usual box of a sorted input, one row of it (every other dimension a single
  // index, b say): its min and max are the clipped box's two end elements, read
  // without loops.
  bool row = sortedDim >= 0;
  for (size_t d = 0; d < box.lo.size(); ++d)
    row = row && (static_cast<int64_t>(d) == sortedDim || op.getLo()[d] == op.getHi()[d]);
  if (row) {
    Type i64 = b.getI64Type();
    auto read = scf::IfOp::create(b, op.getLoc(), TypeRange{i64, i64}, box.any, true);
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(read.thenBlock());
      SmallVector<Value> first(box.lo), last(box.lo);
      last[sortedDim] = box.hi[sortedDim];
      Value x = loadAsI64OrF32(e, op.getTensor(), first);
      Value y = loadAsI64OrF32(e, op.getTensor(), last);
      // Non-decreasing: x <= y; min/max keep the summary a bound whatever the data.
      scf::YieldOp::create(b, op.getLoc(), ValueRange{arith::MinSIOp::create(b, op.getLoc(), x, y),
                                                      arith::MaxSIOp::create(b, op.getLoc(), x, y)});
      b.setInsertionPointToStart(read.elseBlock());
      scf::YieldOp::create(b, op.getLoc(), ValueRange{e.i64(0), e.i64(0)});
    }
    op.getMin().replaceAllUsesWith(read.getResult(0));
    op.getMax().replaceAllUsesWith(read.getResult(1));
    op.getAnyInside().replaceAllUsesWith(box.any);
    op.getAllInside().replaceAllUsesWith(box.all);
    op.erase();
    return;
  }
  SmallVector<Value> r = boxLoops(e, box, 0, indices, init, [&](ValueRange idx, ValueRange acc) -> SmallVector<Value> {
    Value x = loadAsI64OrF32(e, op.getTensor(), idx);
    return {arith::MinSIOp::create(b, op.getLoc(), acc[0], x), arith::MaxSIOp::create(b, op.getLoc(), acc[1], x)};
  }, sortedDim);
  op.getMin().replaceAllUsesWith(e.select(box.any, r[0], e.i64(0)));
  op.getMax().replaceAllUsesWith(e.select(box.any, r[1], e.i64(0)));
  op.getAnyInside().replaceAllUsesWith(box.any);
  op.getAllInside().replaceAllUsesWith(box.all);
  op.erase();
}

void lowerBoxContains(BoxContainsOp op) {
  OpBuilder b(op);
  Emit e{b, op.getLoc()};
  Value mem = op.getTensor();
  Clipped box = clip(e, mem, op.getLo(), op.getHi());
  int64_t last = cast<MemRefType>(mem.getType()).getRank() - 1;
  Value single = e.cmpi(P::eq, op.getValueLo(), op.getValueHi());
  SmallVector<Value> indices;
  // (any row holds a value in range, every row holds value_lo)
  SmallVector<Value> r = boxLoops(e, box, 0, indices, {e.i1(false), e.i1(true)},
                                  [&](ValueRange idx, ValueRange acc) -> SmallVector<Value> {
    SmallVector<Value> row = e.loop(e.i64(0), e.dimI64(mem, last), {e.i1(false), e.i1(false)},
                                    [&](Value k, ValueRange f) -> SmallVector<Value> {
      SmallVector<Value> full(idx);
      full.push_back(e.toI64(k));
      Value x = loadAsI64OrF32(e, mem, full);
      Value inRange = e.andi(e.cmpi(P::sge, x, op.getValueLo()), e.cmpi(P::sle, x, op.getValueHi()));
      return {e.ori(f[0], inRange), e.ori(f[1], e.cmpi(P::eq, x, op.getValueLo()))};
    });
    return {e.ori(acc[0], row[0]), e.andi(acc[1], row[1])};
  });
  op.getAny().replaceAllUsesWith(r[0]);
  op.getAll().replaceAllUsesWith(e.andi(e.andi(single, box.all), e.andi(box.any, r[1])));
  op.erase();
}

/// The number of positions p in [0, size) along `dim` with t[.., p, ..] < x
/// (`inclusive`: <= x), by binary search: t is non-decreasing along dim.
Value countBelow(Emit &e, Value mem, ValueRange indices, int64_t dim, Value size, Value x,
                 bool inclusive) {
  OpBuilder &b = e.b;
  Type i64 = b.getI64Type();
  auto loop = scf::WhileOp::create(b, e.loc, TypeRange{i64, i64}, ValueRange{e.i64(0), size});
  {
    OpBuilder::InsertionGuard g(b);
    Block *before = b.createBlock(&loop.getBefore(), {}, {i64, i64}, {e.loc, e.loc});
    Value lo = before->getArgument(0), hi = before->getArgument(1);
    scf::ConditionOp::create(b, e.loc, e.cmpi(P::slt, lo, hi), ValueRange{lo, hi});
    Block *after = b.createBlock(&loop.getAfter(), {}, {i64, i64}, {e.loc, e.loc});
    lo = after->getArgument(0);
    hi = after->getArgument(1);
    // hi - lo > 0 here: a logical shift halves it (the simulator models shrui).
    Value half = arith::ShRUIOp::create(b, e.loc, arith::SubIOp::create(b, e.loc, hi, lo), e.i64(1));
    Value mid = arith::AddIOp::create(b, e.loc, lo, half);
    SmallVector<Value> at(indices);
    at[dim] = mid;
    Value v = loadAsI64OrF32(e, mem, at);
    Value below = e.cmpi(inclusive ? P::sle : P::slt, v, x);
    Value next = arith::AddIOp::create(b, e.loc, mid, e.i64(1));
    scf::YieldOp::create(b, e.loc, ValueRange{e.select(below, next, lo), e.select(below, hi, mid)});
  }
  return loop.getResult(0);
}

void lowerSearchSorted(SearchSortedOp op) {
  OpBuilder b(op);
  Emit e{b, op.getLoc()};
  Value mem = op.getTensor();
  int64_t dim = static_cast<int64_t>(op.getDim());
  Value size = e.dimI64(mem, dim);
  // The other indices inside the tensor; otherwise every position (sound).
  Value ok = e.i1(true);
  for (auto [d, i] : llvm::enumerate(op.getIndices()))
    if (static_cast<int64_t>(d) != dim)
      ok = e.andi(ok, e.andi(e.cmpi(P::sge, i, e.i64(0)), e.cmpi(P::slt, i, e.dimI64(mem, d))));
  SmallVector<Value> indices(op.getIndices());
  // Only the searches whose result is used (a one-sided atom needs one).
  auto search = [&](Value result, Value x, bool inclusive, Value otherwise) {
    if (result.use_empty())
      return;
    Value r = e.ifElse(ok, b.getI64Type(), [&] {
      return countBelow(e, mem, indices, dim, size, x, inclusive);
    }, otherwise);
    result.replaceAllUsesWith(r);
  };
  search(op.getFirst(), op.getValueLo(), /*inclusive=*/false, e.i64(0));
  search(op.getEnd(), op.getValueHi(), /*inclusive=*/true, size);
  op.erase();
}

} // namespace

void lowerTensorReads(Operation *root) {
  SmallVector<Operation *> ops;
  root->walk([&](Operation *op) {
    if (isa<LookupOp, ContainsOp, SizeOp, ConstantTableOp, BoxSummaryOp, BoxContainsOp,
            SearchSortedOp>(op))
      ops.push_back(op);
  });
  for (Operation *op : ops)
    llvm::TypeSwitch<Operation *>(op)
        .Case([](LookupOp o) { lowerLookup(o); })
        .Case([](ContainsOp o) { lowerContains(o); })
        .Case([](SizeOp o) { lowerSize(o); })
        .Case([](ConstantTableOp o) { lowerConstantTable(o); })
        .Case([](BoxSummaryOp o) { lowerBoxSummary(o); })
        .Case([](BoxContainsOp o) { lowerBoxContains(o); })
        .Case([](SearchSortedOp o) { lowerSearchSorted(o); });
}

} // namespace attune
