//===- KvSchedule.cpp - the key-block schedule, one implementation --------===//
#include "passes/KvSchedule.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

using namespace mlir;
using namespace mlir::attn;
using P = arith::CmpIPredicate;

namespace {
/// Small arithmetic helpers at one location.
struct Emit {
  OpBuilder &b;
  Location loc;
  Value c64(int64_t v) { return arith::ConstantIntOp::create(b, loc, v, 64); }
  Value c32(int64_t v) { return arith::ConstantIntOp::create(b, loc, v, 32); }
  Value cbool(bool v) { return arith::ConstantIntOp::create(b, loc, v ? 1 : 0, 1); }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, loc, x, y); }
  Value sub(Value x, Value y) { return arith::SubIOp::create(b, loc, x, y); }
  Value mul(Value x, Value y) { return arith::MulIOp::create(b, loc, x, y); }
  Value mins(Value x, Value y) { return arith::MinSIOp::create(b, loc, x, y); }
  Value maxs(Value x, Value y) { return arith::MaxSIOp::create(b, loc, x, y); }
  Value cmp(P p, Value x, Value y) { return arith::CmpIOp::create(b, loc, p, x, y); }
  Value andi(Value x, Value y) { return arith::AndIOp::create(b, loc, x, y); }
  Value ori(Value x, Value y) { return arith::OrIOp::create(b, loc, x, y); }
  Value noti(Value x) { return arith::XOrIOp::create(b, loc, x, cbool(true)); }
  Value sel(Value c, Value x, Value y) { return arith::SelectOp::create(b, loc, c, x, y); }
  Value ext64(Value v) { return arith::ExtSIOp::create(b, loc, b.getI64Type(), v); }
  Value index(Value v) { return arith::IndexCastOp::create(b, loc, b.getIndexType(), v); }
  Value i64(Value v) { return arith::IndexCastOp::create(b, loc, b.getI64Type(), v); }
  Value floorDiv(Value x, int64_t d) { return arith::FloorDivSIOp::create(b, loc, x, c64(d)); }
  Value ceilDiv(Value x, int64_t d) { return arith::CeilDivSIOp::create(b, loc, x, c64(d)); }
};
} // namespace

KvScheduleSource KvScheduleSource::of(ForKvBlocksOp op) {
  KvScheduleSource s;
  s.ranges = &op.getRanges();
  s.tileClass = &op.getTileClass();
  s.batch = op.getBatch();
  s.heads.assign(op.getHeads().begin(), op.getHeads().end());
  s.qLo = op.getQLo();
  s.qHi = op.getQHi();
  s.qOffset = op.getQOffset();
  s.kvOffset = op.getKvOffset();
  s.seqQ = op.getSeqQ();
  s.seqKv = op.getSeqKv();
  s.list = op.getList();
  s.listRows = op.getListRows() ? static_cast<int64_t>(*op.getListRows()) : 0;
  s.split = op.getSplit();
  s.numSplits = op.getNumSplits();
  s.blockN = static_cast<int64_t>(op.getBlockN());
  return s;
}

namespace {
/// While alive, gives every op inserted through `b` (the inlined kv_ranges and
/// tile_class regions included) the schedule's location, so that a profile (the
/// simulator's op counts, ATTUNE_SIM_OP_COUNTS) tells the schedule's code from the
/// tiles'. Locations carry no semantics.
struct TagInserted : OpBuilder::Listener {
  OpBuilder &b;
  Location loc;
  OpBuilder::Listener *prev;
  TagInserted(OpBuilder &b, Location loc) : b(b), loc(loc), prev(b.getListener()) {
    b.setListener(this);
  }
  ~TagInserted() override { b.setListener(prev); }
  void notifyOperationInserted(Operation *op, OpBuilder::InsertPoint previous) override {
    op->setLoc(loc);
    if (prev)
      prev->notifyOperationInserted(op, previous);
  }
};
} // namespace

Location mlir::attn::kvScheduleLoc(Location loc) {
  return NameLoc::get(StringAttr::get(loc.getContext(), kKvScheduleLocName), loc);
}

KvSchedule::KvSchedule(OpBuilder &b, Location loc, KvScheduleSource source)
    : b(b), loc(kvScheduleLoc(loc)), src(std::move(source)) {
  TagInserted tag(b, this->loc);
  Emit e{b, loc};
  int64_t bn = src.blockN;
  Value total;
  if (src.list) {
    auto dim = [&](int64_t d) { return e.i64(memref::DimOp::create(b, loc, src.list, d)); };
    listRow = e.floorDiv(src.qLo, src.listRows);
    Value rowOk = e.andi(e.andi(e.cmp(P::slt, src.batch, dim(0)), e.cmp(P::slt, src.heads[0], dim(1))),
                         e.cmp(P::slt, listRow, dim(2)));
    listEntries = e.sel(rowOk, dim(3), e.c64(0));
    kvBlocks = e.ceilDiv(src.seqKv, bn);
    total = listEntries;
  } else {
    // The intervals of every head one after another: a block in several is visited
    // once (advance skips blocks an earlier interval covered). When the ranges do not
    // depend on the head, the first head's stand for all.
    SmallVector<Value> heads = src.heads;
    if (src.ranges->front().getArgument(1).use_empty())
      heads.resize(1);
    SmallVector<Value> bounds;
    for (Value h : heads)
      llvm::append_range(bounds, inlineRegion(b, *src.ranges,
                                              {src.batch, h, src.qLo, src.qHi, src.qOffset,
                                               src.kvOffset, src.seqQ, src.seqKv},
                                              src.captured));
    rangeStart = {e.c64(0)};
    for (size_t r = 0; r + 1 < bounds.size(); r += 2) {
      // Keys outside [0, seq_kv) do not exist: clamp before counting blocks.
      Value lo = e.maxs(bounds[r], e.c64(0)), hi = e.mins(bounds[r + 1], src.seqKv);
      Value blo = e.floorDiv(lo, bn);
      Value bhi = e.sel(e.cmp(P::sle, hi, lo), blo, e.maxs(e.ceilDiv(hi, bn), blo));
      blockLo.push_back(blo);
      blockHi.push_back(bhi);
      rangeStart.push_back(e.add(rangeStart.back(), e.sub(bhi, blo)));
    }
    // blockLo[R]: where "interval R" (past the last) starts; never visited.
    blockLo.push_back(e.c64(0));
    total = rangeStart.back();
  }
  hoistClassPrefix();
  // This split's share: positions [begin, splitEnd) of the schedule.
  Value begin = e.c64(0);
  splitEnd = total;
  if (src.split) {
    Value chunk = arith::CeilDivSIOp::create(b, loc, total, src.numSplits);
    begin = e.mul(src.split, chunk);
    splitEnd = e.mins(total, e.add(begin, chunk));
  }
  if (src.list) {
    startA = begin;
    startB = e.c64(0);
    listEntries = splitEnd;
    return;
  }
  // The interval holding position `begin`: the first r with begin < rangeStart[r + 1].
  int64_t ranges = int64_t(blockHi.size());
  startA = e.c64(ranges);
  startB = e.c64(0);
  for (int64_t r = ranges - 1; r >= 0; --r) {
    Value here = e.cmp(P::slt, begin, rangeStart[size_t(r + 1)]);
    startA = e.sel(here, e.c64(r), startA);
    startB = e.sel(here, e.add(blockLo[size_t(r)], e.sub(begin, rangeStart[size_t(r)])), startB);
  }
}

Value KvSchedule::rangeBound(ArrayRef<Value> values, Value r) {
  Emit e{b, loc};
  Value out = values.back();
  for (int64_t i = int64_t(values.size()) - 2; i >= 0; --i)
    out = e.sel(e.cmp(P::eq, r, e.c64(i)), values[size_t(i)], out);
  return out;
}

void KvSchedule::hoistClassPrefix() {
  Block &block = src.tileClass->front();
  // Ops that depend on kv_lo / kv_hi (arguments 4, 5), in block order; an op with
  // regions stays per tile whatever it reads.
  for (Operation &op : block.without_terminator()) {
    bool perTile = op.getNumRegions() > 0;
    for (Value v : op.getOperands()) {
      if (auto arg = dyn_cast<BlockArgument>(v))
        perTile |= arg.getOwner() == &block && (arg.getArgNumber() == 4 || arg.getArgNumber() == 5);
      else if (Operation *def = v.getDefiningOp())
        perTile |= classPerTile.contains(def);
    }
    if (perTile)
      classPerTile.insert(&op);
  }
  SmallVector<Value> heads = src.heads;
  if (block.getArgument(1).use_empty())
    heads.resize(1);
  for (Value h : heads) {
    IRMapping m = src.captured;
    cloneConstantsUsedIn(*src.tileClass, b, m);
    Value args[] = {src.batch, h, src.qLo, src.qHi, Value(), Value(), src.qOffset,
                    src.kvOffset, src.seqQ, src.seqKv};
    for (auto [arg, v] : llvm::zip(block.getArguments(), args))
      if (v)
        m.map(arg, v);
    for (Operation &op : block.without_terminator())
      if (!classPerTile.contains(&op))
        b.clone(op, m);
    classPrefix.push_back(std::move(m));
  }
}

Value KvSchedule::classify(Value kb) {
  TagInserted tag(b, loc);
  Emit e{b, loc};
  Value kvLo = e.mul(kb, e.c64(src.blockN));
  Value kvHi = e.mins(e.add(kvLo, e.c64(src.blockN)), src.seqKv);
  Block &block = src.tileClass->front();
  Value first, same = e.cbool(true);
  for (IRMapping m : classPrefix) {
    m.map(block.getArgument(4), kvLo);
    m.map(block.getArgument(5), kvHi);
    for (Operation &op : block.without_terminator())
      if (classPerTile.contains(&op))
        b.clone(op, m);
    Value cls = m.lookupOrDefault(cast<YieldOp>(block.getTerminator()).getValues()[0]);
    if (!first)
      first = cls;
    else
      same = e.andi(same, e.cmp(P::eq, cls, first));
  }
  return classPrefix.size() == 1 ? first : e.sel(same, first, e.c32(kPartial));
}

KvSchedule::Visit KvSchedule::first() { return advance(startA, startB); }

KvSchedule::Visit KvSchedule::next(const Visit &v) {
  Emit e{b, loc};
  return src.list ? advance(e.add(v.a, e.c64(1)), v.b) : advance(v.a, e.add(v.b, e.c64(1)));
}

/// From candidate cursor (a0, b0), the next block to visit.
KvSchedule::Visit KvSchedule::advance(Value a0, Value b0) {
  TagInserted tag(b, loc);
  Emit e{b, loc};
  Type i64 = b.getI64Type(), i32 = b.getI32Type(), i1 = b.getI1Type();
  auto loop = scf::WhileOp::create(b, loc, TypeRange{i64, i64, i64, i32, i1}, ValueRange{a0, b0});
  Block *before = b.createBlock(&loop.getBefore(), {}, {i64, i64}, {loc, loc});
  {
    Value a = before->getArgument(0), kbState = before->getArgument(1);
    Value exhausted, inRange, kb;
    auto entryAt = [&](Value pos) {
      return e.ext64(memref::LoadOp::create(
          b, loc, src.list,
          ValueRange{e.index(src.batch), e.index(src.heads[0]), e.index(listRow), e.index(pos)}));
    };
    if (src.list) {
      exhausted = e.cmp(P::sge, a, listEntries);
      inRange = e.noti(exhausted);
      // The entry at a (0 when exhausted: never used).
      auto read = scf::IfOp::create(b, loc, TypeRange{i64}, inRange, true);
      {
        OpBuilder::InsertionGuard g(b);
        b.setInsertionPointToStart(read.thenBlock());
        scf::YieldOp::create(b, loc, ValueRange{entryAt(a)});
        b.setInsertionPointToStart(read.elseBlock());
        scf::YieldOp::create(b, loc, ValueRange{e.c64(0)});
      }
      kb = read.getResult(0);
      inRange = e.andi(inRange, e.andi(e.cmp(P::sge, kb, e.c64(0)), e.cmp(P::slt, kb, kvBlocks)));
    } else {
      exhausted = e.cmp(P::sge, a, e.c64(int64_t(blockHi.size())));
      kb = kbState;
      // The split's share ends at position splitEnd of the intervals end to end.
      Value position = e.add(rangeBound(rangeStart, a), e.sub(kb, rangeBound(blockLo, a)));
      exhausted = e.ori(exhausted, e.cmp(P::sge, position, splitEnd));
      inRange = e.andi(e.noti(exhausted), e.cmp(P::slt, kb, rangeBound(blockHi, a)));
    }
    // The class of the candidate, unless it is out of range or was visited before.
    auto check = scf::IfOp::create(b, loc, TypeRange{i32}, inRange, true);
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(check.thenBlock());
      Value seen = e.cbool(false);
      if (src.list) {
        auto dup = scf::ForOp::create(b, loc, arith::ConstantIndexOp::create(b, loc, 0),
                                      e.index(a), arith::ConstantIndexOp::create(b, loc, 1),
                                      ValueRange{e.cbool(false)});
        {
          OpBuilder::InsertionGuard g2(b);
          b.setInsertionPointToStart(dup.getBody());
          Value same = e.cmp(P::eq, entryAt(e.i64(dup.getInductionVar())), kb);
          scf::YieldOp::create(b, loc, ValueRange{e.ori(dup.getRegionIterArgs()[0], same)});
        }
        seen = dup.getResult(0);
      } else {
        // Covered by an earlier interval r' < a.
        for (size_t r = 0; r < blockHi.size(); ++r) {
          Value earlier = e.cmp(P::slt, e.c64(int64_t(r)), a);
          Value inside = e.andi(e.cmp(P::sge, kb, blockLo[r]), e.cmp(P::slt, kb, blockHi[r]));
          seen = e.ori(seen, e.andi(earlier, inside));
        }
      }
      auto cls = scf::IfOp::create(b, loc, TypeRange{i32}, e.noti(seen), true);
      {
        OpBuilder::InsertionGuard g2(b);
        b.setInsertionPointToStart(cls.thenBlock());
        scf::YieldOp::create(b, loc, ValueRange{classify(kb)});
        b.setInsertionPointToStart(cls.elseBlock());
        scf::YieldOp::create(b, loc, ValueRange{e.c32(kEmpty)});
      }
      scf::YieldOp::create(b, loc, ValueRange{cls.getResult(0)});
      b.setInsertionPointToStart(check.elseBlock());
      scf::YieldOp::create(b, loc, ValueRange{e.c32(kEmpty)});
    }
    Value cls = check.getResult(0);
    Value hit = e.andi(inRange, e.cmp(P::ne, cls, e.c32(kEmpty)));
    Value stop = e.ori(exhausted, hit);
    scf::ConditionOp::create(b, loc, e.noti(stop), ValueRange{a, kbState, kb, cls, hit});
  }
  Block *after = b.createBlock(&loop.getAfter(), {}, {i64, i64, i64, i32, i1},
                               {loc, loc, loc, loc, loc});
  {
    Value a = after->getArgument(0), kbState = after->getArgument(1);
    if (src.list) {
      scf::YieldOp::create(b, loc, ValueRange{e.add(a, e.c64(1)), kbState});
    } else {
      Value next = e.add(kbState, e.c64(1));
      Value stay = e.cmp(P::slt, next, rangeBound(blockHi, a));
      Value nextRange = e.add(a, e.c64(1));
      Value nextStart = rangeBound(blockLo, nextRange);
      scf::YieldOp::create(b, loc, ValueRange{e.sel(stay, a, nextRange), e.sel(stay, next, nextStart)});
    }
  }
  b.setInsertionPointAfter(loop);
  return {loop.getResult(4), loop.getResult(0), loop.getResult(1), loop.getResult(2),
          loop.getResult(3)};
}

void KvSchedule::lowerToLoop(ForKvBlocksOp op) {
  OpBuilder b(op);
  Location loc = op.getLoc();
  KvSchedule schedule(b, loc, KvScheduleSource::of(op));
  Visit v = schedule.first();
  Type i64 = b.getI64Type(), i32 = b.getI32Type(), i1 = b.getI1Type();
  auto loop = scf::WhileOp::create(b, loc, TypeRange{i1, i64, i64, i64, i32},
                                   ValueRange{v.valid, v.a, v.b, v.kb, v.cls});
  Block *before = b.createBlock(&loop.getBefore(), {}, {i1, i64, i64, i64, i32},
                                SmallVector<Location>(5, loc));
  scf::ConditionOp::create(b, loc, before->getArgument(0), before->getArguments());
  Block *after = b.createBlock(&loop.getAfter(), {}, {i1, i64, i64, i64, i32},
                               SmallVector<Location>(5, loc));
  // The body, then the next visited block.
  Block &body = op.getBody().front();
  IRMapping mapping;
  mapping.map(body.getArgument(0), after->getArgument(3));
  mapping.map(body.getArgument(1), after->getArgument(4));
  for (Operation &inner : body.without_terminator())
    b.clone(inner, mapping);
  Visit here{after->getArgument(0), after->getArgument(1), after->getArgument(2),
             after->getArgument(3), after->getArgument(4)};
  Visit n = schedule.next(here);
  scf::YieldOp::create(b, loc, ValueRange{n.valid, n.a, n.b, n.kb, n.cls});
  op.erase();
}
