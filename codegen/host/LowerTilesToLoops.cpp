//===- LowerTilesToLoops.cpp - L2 tile ops -> scalar loops (L3cpu) ---------===//
#include "codegen/host/HostPasses.h"

#include "codegen/TensorReads.h"
#include "dialect/AttnOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Analysis/SliceAnalysis.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cmath>
#include <functional>
#include <limits>

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNLOWERTILESTOLOOPS
#include "codegen/host/HostPasses.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;
using P = arith::CmpIPredicate;
using attune::Emit;

namespace {

int64_t dimOf(Value v, unsigned d) { return cast<MemRefType>(v.getType()).getDimSize(d); }

/// acc + x in a dot product's reduction, reassociable (and contractable into an fma):
/// LLVM vectorises a float reduction only when it may reorder the sum. The order is
/// fixed at compile time, so results stay bitwise reproducible run to run.
Value addReduction(OpBuilder &b, Location loc, Value acc, Value x) {
  return arith::AddFOp::create(b, loc, acc, x,
                               arith::FastMathFlags::reassoc | arith::FastMathFlags::contract);
}

//===----------------------------------------------------------------------===//
// Grid and tile buffers
//===----------------------------------------------------------------------===//

void lowerGrid(GridOp grid) {
  OpBuilder b(grid);
  Emit e{b, grid.getLoc()};
  Block &body = grid.getBody().front();
  SmallVector<Value> ivs;
  Value sizes[3] = {grid.getBatch(), grid.getHeads(), grid.getQBlocks()};
  for (Value size : sizes) {
    auto f = scf::ForOp::create(b, grid.getLoc(), e.idx(0), size, e.idx(1));
    ivs.push_back(f.getInductionVar());
    b.setInsertionPointToStart(f.getBody());
  }
  body.getTerminator()->erase();
  Block *inner = b.getInsertionBlock();
  inner->getOperations().splice(Block::iterator(inner->getTerminator()), body.getOperations());
  for (auto [arg, iv] : llvm::zip(body.getArguments(), ivs))
    arg.replaceAllUsesWith(iv);
  grid.erase();
}

/// The number of work items of `grid`: batch * heads * q_blocks.
Value gridItems(OpBuilder &b, Location loc, Value batch, Value heads, Value blocks) {
  return arith::MulIOp::create(b, loc, arith::MulIOp::create(b, loc, batch, heads), blocks);
}

/// `grid` as one loop over the flat items [begin, end) of the function's range,
/// of which this grid holds [base, base + items): item f is (b, h, qb) with qb
/// fastest, the order of lowerGrid's nest. Returns base + items for the next grid.
Value lowerGridRange(GridOp grid, Value begin, Value end, Value base) {
  OpBuilder b(grid);
  Location loc = grid.getLoc();
  Emit e{b, loc};
  Value items = gridItems(b, loc, grid.getBatch(), grid.getHeads(), grid.getQBlocks());
  auto clamp = [&](Value x) {
    Value rel = arith::SubIOp::create(b, loc, x, base);
    return arith::MinSIOp::create(b, loc, arith::MaxSIOp::create(b, loc, rel, e.idx(0)), items)
        .getResult();
  };
  Value lo = clamp(begin), hi = clamp(end);
  auto f = scf::ForOp::create(b, loc, lo, hi, e.idx(1));
  b.setInsertionPointToStart(f.getBody());
  Value iv = f.getInductionVar();
  Value qb = arith::RemUIOp::create(b, loc, iv, grid.getQBlocks());
  Value rest = arith::DivUIOp::create(b, loc, iv, grid.getQBlocks());
  Value h = arith::RemUIOp::create(b, loc, rest, grid.getHeads());
  Value bat = arith::DivUIOp::create(b, loc, rest, grid.getHeads());
  Block &body = grid.getBody().front();
  body.getTerminator()->erase();
  Block *inner = b.getInsertionBlock();
  inner->getOperations().splice(Block::iterator(inner->getTerminator()), body.getOperations());
  for (auto [arg, v] : llvm::zip(body.getArguments(), ValueRange{bat, h, qb}))
    arg.replaceAllUsesWith(v);
  b.setInsertionPointAfter(f);
  Value next = arith::AddIOp::create(b, loc, base, items);
  grid.erase();
  return next;
}

/// For a kernel function with grids: `<name>_grid_items(args, upto) -> index`, the
/// number of work items of its first `upto` grids, computed from the ops the grid sizes depend on
/// (memref.dim and arithmetic on the arguments: pure, checked).
LogicalResult buildGridItems(func::FuncOp func, ArrayRef<GridOp> grids) {
  OpBuilder b(func);
  Location loc = func.getLoc();
  SmallVector<Type> argTypes(func.getArgumentTypes());
  argTypes.push_back(b.getIndexType());
  auto type = FunctionType::get(func.getContext(), argTypes, {b.getIndexType()});
  auto items = func::FuncOp::create(b, loc, (func.getName() + "_grid_items").str(), type);
  // The C wrapper that the kernel has (HostJit asks for it), so that the runtime
  // calls both the same way.
  if (Attribute c = func->getAttr("llvm.emit_c_interface"))
    items->setAttr("llvm.emit_c_interface", c);
  Block *entry = items.addEntryBlock();
  b.setInsertionPointToStart(entry);
  IRMapping map;
  for (auto [from, to] : llvm::zip(func.getArguments(), entry->getArguments()))
    map.map(from, to);
  // What the sizes depend on, in the function's order (a backward slice is
  // topologically sorted).
  SetVector<Operation *> slice;
  BackwardSliceOptions options;
  options.omitBlockArguments = true;
  for (GridOp g : grids)
    for (Value v : {g.getBatch(), g.getHeads(), g.getQBlocks()})
      if (Operation *def = v.getDefiningOp()) {
        (void)getBackwardSlice(def, &slice, options);
        slice.insert(def);
      }
  SmallVector<Operation *> ordered(slice.begin(), slice.end());
  llvm::sort(ordered, [](Operation *x, Operation *y) { return x->isBeforeInBlock(y); });
  for (Operation *op : ordered) {
    if (op->getBlock() != &func.getBody().front() || !isPure(op))
      return op->emitError("attn-lower-tiles-to-loops: a grid size depends on an op that is "
                           "not pure at the function's top level");
    b.clone(*op, map);
  }
  Emit e{b, loc};
  Value upto = entry->getArguments().back();
  Value total = e.idx(0);
  for (auto [k, grid] : llvm::enumerate(grids)) {
    GridOp g = grid;
    Value n = gridItems(b, loc, map.lookupOrDefault(g.getBatch()),
                        map.lookupOrDefault(g.getHeads()), map.lookupOrDefault(g.getQBlocks()));
    Value counted = e.cmpi(P::sgt, upto, e.idx(int64_t(k)));
    total = arith::AddIOp::create(b, loc, total, e.select(counted, n, e.idx(0)));
  }
  func::ReturnOp::create(b, loc, total);
  return success();
}

/// grid-range: every grid of `func` over one flat range [begin, end) of its items,
/// taken as two new index arguments.
LogicalResult lowerGridsAsRange(func::FuncOp func) {
  SmallVector<GridOp> grids;
  for (Operation &op : func.getBody().front())
    if (auto g = dyn_cast<GridOp>(op))
      grids.push_back(g);
  if (grids.empty())
    return success();
  if (failed(buildGridItems(func, grids)))
    return failure();
  Type index = IndexType::get(func.getContext());
  unsigned n = func.getNumArguments();
  if (failed(func.insertArguments({n, n}, {index, index}, {DictionaryAttr(), DictionaryAttr()},
                                  {func.getLoc(), func.getLoc()})))
    return func.emitError("attn-lower-tiles-to-loops: cannot add the range arguments");
  // The grids whose items accumulate into a tensor gradient: the caller runs each
  // of those in one thread, in order (HostLaunch.h).
  SmallVector<int64_t> serial;
  for (auto [k, grid] : llvm::enumerate(grids))
    if (GridOp(grid)->walk([](AccumulateGradOp) { return WalkResult::interrupt(); }).wasInterrupted())
      serial.push_back(int64_t(k));
  OpBuilder attrs(func);
  func->setAttr("attn.grid_count", attrs.getI64IntegerAttr(int64_t(grids.size())));
  func->setAttr("attn.serial_grids", attrs.getDenseI64ArrayAttr(serial));
  Value begin = func.getArgument(n), end = func.getArgument(n + 1);
  OpBuilder b(grids.front());
  Value base = arith::ConstantIndexOp::create(b, func.getLoc(), 0);
  for (GridOp g : grids)
    base = lowerGridRange(g, begin, end, base);
  return success();
}

/// Static tile buffers go to the entry block: allocas inside loops grow the stack.
void hoistAllocas(func::FuncOp func) {
  Block &entry = func.getBody().front();
  SmallVector<memref::AllocaOp> allocas;
  func.walk([&](memref::AllocaOp a) {
    if (a->getBlock() != &entry && a.getType().hasStaticShape() && a.getOperands().empty())
      allocas.push_back(a);
  });
  for (auto a : allocas)
    a->moveBefore(&entry, entry.begin());
}

//===----------------------------------------------------------------------===//
// Tile ops
//===----------------------------------------------------------------------===//

void lowerFill(FillTileOp op) {
  OpBuilder b(op);
  Emit e{b, op.getLoc()};
  auto type = cast<MemRefType>(op.getTile().getType());
  Value v = arith::ConstantOp::create(b, op.getLoc(), op.getValueAttr());
  if (type.getRank() == 1) {
    e.loop(e.idx(0), e.idx(type.getDimSize(0)), [&](Value i) { e.store(v, op.getTile(), {i}); });
  } else {
    e.loop(e.idx(0), e.idx(type.getDimSize(0)), [&](Value i) {
      e.loop(e.idx(0), e.idx(type.getDimSize(1)), [&](Value j) { e.store(v, op.getTile(), {i, j}); });
    });
  }
  op.erase();
}

/// Rotates row r of a tile at position row + offset by RoPE, or by its transpose
/// (the rotation a gradient goes back through).
void rotateTileRow(Emit &e, Value tile, Value r, Value row64, Value offset, RopeAttr rope,
                   bool transpose) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  // Angles in double: positions can be large and f32 angles lose whole radians.
  SmallVector<double> freqs = rope.getFrequencies();
  int64_t half = rope.getRotaryDim() / 2;
  bool interleaved = rope.getStyle() == RopeStyle::interleaved;
  double mscale = rope.getScaling() == RopeScaling::yarn ? rope.getMscale().getValueAsDouble() : 1.0;
  Value pos = arith::SIToFPOp::create(b, loc, b.getF64Type(),
                                      arith::AddIOp::create(b, loc, row64, offset));
  for (int64_t m = 0; m < half; ++m) {
    Value i0 = e.idx(interleaved ? 2 * m : m), i1 = e.idx(interleaved ? 2 * m + 1 : m + half);
    Value angle = e.mulf(pos, e.f64(freqs[m]));
    Value c = arith::TruncFOp::create(b, loc, b.getF32Type(), math::CosOp::create(b, loc, angle));
    Value s = arith::TruncFOp::create(b, loc, b.getF32Type(), math::SinOp::create(b, loc, angle));
    if (transpose)
      s = arith::NegFOp::create(b, loc, s);
    Value x0 = e.load(tile, {r, i0}), x1 = e.load(tile, {r, i1});
    Value y0 = arith::SubFOp::create(b, loc, e.mulf(x0, c), e.mulf(x1, s));
    Value y1 = e.addf(e.mulf(x0, s), e.mulf(x1, c));
    if (mscale != 1.0) {
      y0 = e.mulf(y0, e.f32(mscale));
      y1 = e.mulf(y1, e.f32(mscale));
    }
    e.store(y0, tile, {r, i0});
    e.store(y1, tile, {r, i1});
  }
}

void lowerLoad(LoadTileOp op) {
  OpBuilder b(op);
  Emit e{b, op.getLoc()};
  Value src = op.getSource(), tile = op.getTile();
  Type elt = cast<MemRefType>(src.getType()).getElementType();
  int64_t rows = dimOf(tile, 0), width = dimOf(tile, 1);
  e.loop(e.idx(0), e.idx(rows), [&](Value r) {
    Value inside = e.cmpi(P::ult, r, op.getValidRows());
    Value row = arith::AddIOp::create(b, op.getLoc(), op.getRow(), r);
    if (Value table = op.getPageTable()) {
      // Paged: the row's page id from the table (read only for rows inside, whose
      // page index the caller bounds by the table's width), and the row of the
      // cache it names; an id outside [0, pages) reads zeros.
      Location loc = op.getLoc();
      Value ps = op.getPageSize();
      Value slot = arith::RemUIOp::create(b, loc, row, ps);
      Value pageIndex = arith::DivUIOp::create(b, loc, row, ps);
      Value readable = e.andi(inside, e.cmpi(P::ult, pageIndex,
                                             memref::DimOp::create(b, loc, table, 1)));
      Value page = e.ifElse(readable, b.getIndexType(), [&] {
        return e.toIndex(e.load(table, {op.getPageRow(), pageIndex}));
      }, e.idx(-1));
      Value pages = arith::DivUIOp::create(b, loc, memref::DimOp::create(b, loc, src, 2), ps);
      // ult against the page count also refuses negative ids (huge as unsigned).
      inside = e.andi(readable, e.cmpi(P::ult, page, pages));
      row = arith::AddIOp::create(b, loc, arith::MulIOp::create(b, loc, page, ps), slot);
    }
    e.loop(e.idx(0), e.idx(width), [&](Value d) {
      Value x = e.ifElse(inside, b.getF32Type(), [&] {
        return e.toF32(e.load(src, {op.getBatch(), op.getHead(), row, d}));
      }, e.f32(0.0));
      e.store(x, tile, {r, d});
    });
    if (RopeAttr rope = op.getRopeAttr())
      rotateTileRow(e, tile, r, e.toI64(arith::AddIOp::create(b, op.getLoc(), op.getRow(), r)),
                    op.getPositionOffset(), rope, /*transpose=*/false);
  });
  op.erase();
}

void lowerQk(QkTileOp op) {
  OpBuilder b(op);
  Location loc = op.getLoc();
  Emit e{b, loc};
  int64_t rows = dimOf(op.getS(), 0), cols = dimOf(op.getS(), 1), depth = dimOf(op.getQ(), 1);
  // S = scale * Q K^T with the key dimension innermost: K is copied transposed (BN x D
  // per tile, against BM x BN x D multiply-adds), so that each row of S is a sum of
  // scaled unit-stride rows of K^T, which vectorises without reordering a reduction.
  auto ktType = MemRefType::get({depth, cols}, b.getF32Type());
  Value kt;
  {
    OpBuilder::InsertionGuard guard(b);
    auto func = op->getParentOfType<func::FuncOp>();
    b.setInsertionPointToStart(&func.getBody().front());
    kt = memref::AllocaOp::create(b, loc, ktType);
  }
  e.loop(e.idx(0), e.idx(cols), [&](Value c) {
    e.loop(e.idx(0), e.idx(depth), [&](Value d) { e.store(e.load(op.getK(), {c, d}), kt, {d, c}); });
  });
  Value scale = e.f32(op.getScale().convertToDouble());
  e.loop(e.idx(0), op.getRows() ? op.getRows() : e.idx(rows), [&](Value r) {
    e.loop(e.idx(0), e.idx(cols), [&](Value c) { e.store(e.f32(0.0), op.getS(), {r, c}); });
    e.loop(e.idx(0), e.idx(depth), [&](Value d) {
      Value qrd = e.load(op.getQ(), {r, d});
      e.loop(e.idx(0), e.idx(cols), [&](Value c) {
        Value term = arith::MulFOp::create(b, loc, qrd, e.load(kt, {d, c}), arith::FastMathFlags::contract);
        Value sum = arith::AddFOp::create(b, loc, e.load(op.getS(), {r, c}), term,
                                          arith::FastMathFlags::contract);
        e.store(sum, op.getS(), {r, c});
      });
    });
    e.loop(e.idx(0), e.idx(cols), [&](Value c) {
      e.store(e.mulf(e.load(op.getS(), {r, c}), scale), op.getS(), {r, c});
    });
  });
  op.erase();
}

/// The value a mask or score region yields for `args` (dialect/AttnOps.h).
Value inlineRegion(OpBuilder &b, Region &region, ValueRange args) {
  return attn::inlineRegion(b, region, args, IRMapping())[0];
}

void lowerScore(ScoreTileOp op) {
  OpBuilder b(op);
  Emit e{b, op.getLoc()};
  Value negInf = e.f32(-std::numeric_limits<double>::infinity());
  e.loop(e.idx(0), op.getRows() ? op.getRows() : e.idx(dimOf(op.getS(), 0)), [&](Value r) {
    Value i = arith::AddIOp::create(b, op.getLoc(), op.getQLo(), e.toI64(r));
    Value qPos = arith::AddIOp::create(b, op.getLoc(), i, op.getQOffset());
    e.loop(e.idx(0), e.idx(dimOf(op.getS(), 1)), [&](Value c) {
      Value j = arith::AddIOp::create(b, op.getLoc(), op.getKvLo(), e.toI64(c));
      Value kvPos = arith::AddIOp::create(b, op.getLoc(), j, op.getKvOffset());
      SmallVector<Value> coords{op.getB(), op.getH(), i, j, qPos, kvPos, op.getSeqQ(), op.getSeqKv()};
      Value s = e.load(op.getS(), {r, c});
      SmallVector<Value> scoreArgs{s};
      scoreArgs.append(coords);
      Value scored = inlineRegion(b, op.getScore(), scoreArgs);
      if (op.getMasked()) {
        Value inside = e.andi(e.cmpi(P::slt, j, op.getSeqKv()), e.cmpi(P::slt, i, op.getSeqQ()));
        Value allowed = e.andi(inside, inlineRegion(b, op.getMask(), coords));
        scored = e.select(allowed, scored, negInf);
      }
      e.store(scored, op.getS(), {r, c});
    });
  });
  op.erase();
}

void lowerSoftmax(SoftmaxTileOp op) {
  OpBuilder b(op);
  Location loc = op.getLoc();
  Emit e{b, loc};
  Value negInf = e.f32(-std::numeric_limits<double>::infinity());
  auto exp = [&](Value x) -> Value {
    return op.getBase2() ? Value(math::Exp2Op::create(b, loc, x)) : Value(math::ExpOp::create(b, loc, x));
  };
  int64_t cols = dimOf(op.getS(), 1);
  e.loop(e.idx(0), op.getRows() ? op.getRows() : e.idx(dimOf(op.getS(), 0)), [&](Value r) {
    Value rowMax = e.loop(e.idx(0), e.idx(cols), {negInf}, [&](Value c, ValueRange acc) -> SmallVector<Value> {
      return {arith::MaximumFOp::create(b, loc, acc[0], e.load(op.getS(), {r, c}))};
    })[0];
    Value mOld = e.load(op.getM(), {r});
    Value mNew = arith::MaximumFOp::create(b, loc, mOld, rowMax);
    // A row with no finite score keeps m = -inf; its weights are exp(-inf) = 0.
    Value dead = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, mNew, negInf);
    Value base = e.select(dead, e.f32(0.0), mNew);
    Value alpha = e.select(dead, e.f32(1.0), exp(arith::SubFOp::create(b, loc, mOld, base)));
    Value sum = e.loop(e.idx(0), e.idx(cols), {e.f32(0.0)}, [&](Value c, ValueRange acc) -> SmallVector<Value> {
      Value p = exp(arith::SubFOp::create(b, loc, e.load(op.getS(), {r, c}), base));
      e.store(p, op.getS(), {r, c});
      return {addReduction(b, e.loc, acc[0], p)};
    })[0];
    e.store(e.addf(e.mulf(e.load(op.getL(), {r}), alpha), sum), op.getL(), {r});
    e.store(mNew, op.getM(), {r});
    e.store(alpha, op.getAlpha(), {r});
  });
  op.erase();
}

void lowerWeights(WeightsTileOp op) {
  OpBuilder b(op);
  Location loc = op.getLoc();
  Emit e{b, loc};
  Value n = arith::SIToFPOp::create(b, loc, b.getF32Type(), op.getSeqKv());
  bool sigmoid = op.getNormalizer() == Normalizer::sigmoid;
  Value beta = op.getBeta() ? e.f32(op.getBeta()->convertToDouble())
                            : Value(arith::NegFOp::create(b, loc, math::LogOp::create(b, loc, n)));
  e.loop(e.idx(0), e.idx(dimOf(op.getS(), 0)), [&](Value r) {
    e.loop(e.idx(0), e.idx(dimOf(op.getS(), 1)), [&](Value c) {
      Value s = e.load(op.getS(), {r, c});
      Value w;
      if (sigmoid) {
        Value z = arith::NegFOp::create(b, loc, e.addf(s, beta));
        w = arith::DivFOp::create(b, loc, e.f32(1.0), e.addf(e.f32(1.0), math::ExpOp::create(b, loc, z)));
      } else {
        w = arith::DivFOp::create(b, loc, arith::MaximumFOp::create(b, loc, s, e.f32(0.0)), n);
      }
      e.store(w, op.getS(), {r, c});
    });
  });
  op.erase();
}

void lowerPv(PvTileOp op) {
  OpBuilder b(op);
  Location loc = op.getLoc();
  Emit e{b, loc};
  // acc[r, :] = alpha[r] * acc[r, :] + sum_c p[r, c] * v[c, :], with the value dimension
  // innermost: unit-stride rows of v and acc that vectorise without reordering a sum.
  Value cols = e.idx(dimOf(op.getAcc(), 1));
  e.loop(e.idx(0), op.getRows() ? op.getRows() : e.idx(dimOf(op.getAcc(), 0)), [&](Value r) {
    if (op.getAlpha()) {
      Value alpha = e.load(op.getAlpha(), {r});
      e.loop(e.idx(0), cols, [&](Value d) {
        e.store(e.mulf(e.load(op.getAcc(), {r, d}), alpha), op.getAcc(), {r, d});
      });
    }
    e.loop(e.idx(0), e.idx(dimOf(op.getP(), 1)), [&](Value c) {
      // A pair of weight 0 (masked) contributes nothing, even where v is NaN or
      // infinite (0 * NaN would be NaN).
      Value p = e.load(op.getP(), {r, c});
      Value nonzero = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::UNE, p, e.f32(0.0));
      auto ifNonzero = scf::IfOp::create(b, loc, nonzero, /*withElseRegion=*/false);
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(ifNonzero.thenBlock());
      e.loop(e.idx(0), cols, [&](Value d) {
        Value term = arith::MulFOp::create(b, loc, p, e.load(op.getV(), {c, d}),
                                           arith::FastMathFlags::contract);
        Value sum = arith::AddFOp::create(b, loc, e.load(op.getAcc(), {r, d}), term,
                                          arith::FastMathFlags::contract);
        e.store(sum, op.getAcc(), {r, d});
      });
    });
  });
  op.erase();
}

void lowerStore(StoreTileOp op) {
  OpBuilder b(op);
  Location loc = op.getLoc();
  Emit e{b, loc};
  Type elt = cast<MemRefType>(op.getDest().getType()).getElementType();
  e.loop(e.idx(0), op.getValidRows(), [&](Value r) {
    Value inv = e.f32(1.0);
    if (op.getL()) {
      Value l = e.load(op.getL(), {r});
      Value zero = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, l, e.f32(0.0));
      inv = e.select(zero, e.f32(0.0), arith::DivFOp::create(b, loc, e.f32(1.0), l));
    }
    Value row = arith::AddIOp::create(b, loc, op.getRow(), r);
    e.loop(e.idx(0), e.idx(dimOf(op.getAcc(), 1)), [&](Value d) {
      Value v = e.mulf(e.load(op.getAcc(), {r, d}), inv);
      e.store(e.fromF32(v, elt), op.getDest(), {op.getBatch(), op.getHead(), row, d});
    });
  });
  op.erase();
}

void lowerStoreLse(StoreLseOp op) {
  OpBuilder b(op);
  Location loc = op.getLoc();
  Emit e{b, loc};
  e.loop(e.idx(0), op.getValidRows(), [&](Value r) {
    Value l = e.load(op.getL(), {r}), m = e.load(op.getM(), {r});
    Value zero = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, l, e.f32(0.0));
    Value lse = op.getBase2()
                    ? e.mulf(e.addf(m, math::Log2Op::create(b, loc, l)), e.f32(0.69314718055994531))
                    : e.addf(m, math::LogOp::create(b, loc, l));
    lse = e.select(zero, e.f32(-std::numeric_limits<double>::infinity()), lse);
    Value row = arith::AddIOp::create(b, loc, op.getRow(), r);
    e.store(lse, op.getDest(), {op.getBatch(), op.getHead(), row});
  });
  op.erase();
}

//===----------------------------------------------------------------------===//
// Backward tile ops
//===----------------------------------------------------------------------===//

void lowerLoadRows(LoadRowsOp op) {
  OpBuilder b(op);
  Emit e{b, op.getLoc()};
  e.loop(e.idx(0), e.idx(dimOf(op.getTile(), 0)), [&](Value r) {
    Value inside = e.cmpi(P::ult, r, op.getValidRows());
    Value row = arith::AddIOp::create(b, op.getLoc(), op.getRow(), r);
    Value x = e.ifElse(inside, b.getF32Type(), [&] {
      return e.toF32(e.load(op.getSource(), {op.getBatch(), op.getHead(), row}));
    }, e.f32(0.0));
    e.store(x, op.getTile(), {r});
  });
  op.erase();
}

void lowerRowDot(RowDotTileOp op) {
  OpBuilder b(op);
  Emit e{b, op.getLoc()};
  e.loop(e.idx(0), e.idx(dimOf(op.getA(), 0)), [&](Value r) {
    Value dot = e.loop(e.idx(0), e.idx(dimOf(op.getA(), 1)), {e.f32(0.0)},
                       [&](Value c, ValueRange acc) -> SmallVector<Value> {
                         return {addReduction(b, e.loc, acc[0], e.mulf(e.load(op.getA(), {r, c}),
                                                       e.load(op.getB(), {r, c})))};
                       })[0];
    e.store(dot, op.getD(), {r});
  });
  op.erase();
}

void lowerGradWeights(GradWeightsTileOp op) {
  OpBuilder b(op);
  Location loc = op.getLoc();
  Emit e{b, loc};
  Value negInf = e.f32(-std::numeric_limits<double>::infinity());
  Value zero = e.f32(0.0), one = e.f32(1.0);
  Value n = arith::SIToFPOp::create(b, loc, b.getF32Type(), op.getSeqKv());
  Normalizer norm = op.getNormalizer();
  Value beta;
  if (norm == Normalizer::sigmoid)
    beta = op.getBeta() ? e.f32(op.getBeta()->convertToDouble())
                        : Value(arith::NegFOp::create(b, loc, math::LogOp::create(b, loc, n)));
  auto oeq = [&](Value x, Value y) {
    return arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, x, y);
  };
  e.loop(e.idx(0), e.idx(dimOf(op.getS(), 0)), [&](Value r) {
    Value lse, delta, dlse;
    if (norm == Normalizer::softmax) {
      lse = e.load(op.getLse(), {r});
      delta = e.load(op.getDelta(), {r});
      dlse = op.getDlse() ? e.load(op.getDlse(), {r}) : zero;
    }
    e.loop(e.idx(0), e.idx(dimOf(op.getS(), 1)), [&](Value c) {
      Value s = e.load(op.getS(), {r, c}), dp = e.load(op.getDp(), {r, c});
      Value masked = oeq(s, negInf);
      Value p, ds;
      if (norm == Normalizer::softmax) {
        // A row with lse = -inf has no allowed key: weight 0, never exp(-inf + inf).
        Value dead = e.ori(masked, oeq(lse, negInf));
        p = e.select(dead, zero,
                     math::ExpOp::create(b, loc, arith::SubFOp::create(b, loc, s, lse)));
        ds = e.mulf(p, e.addf(arith::SubFOp::create(b, loc, dp, delta), dlse));
      } else if (norm == Normalizer::sigmoid) {
        Value z = arith::NegFOp::create(b, loc, e.addf(s, beta));
        p = e.select(masked, zero,
                     arith::DivFOp::create(b, loc, one,
                                           e.addf(one, math::ExpOp::create(b, loc, z))));
        ds = e.mulf(e.mulf(dp, p), arith::SubFOp::create(b, loc, one, p));
      } else {
        p = arith::DivFOp::create(b, loc, arith::MaximumFOp::create(b, loc, s, zero), n);
        Value active = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OGT, s, zero);
        ds = e.select(active, arith::DivFOp::create(b, loc, dp, n), zero);
      }
      ds = e.select(oeq(p, zero), zero, ds);
      e.store(p, op.getS(), {r, c});
      e.store(ds, op.getDp(), {r, c});
    });
  });
  op.erase();
}

void lowerScoreGrad(ScoreGradTileOp op) {
  OpBuilder b(op);
  Location loc = op.getLoc();
  Emit e{b, loc};
  Value zero = e.f32(0.0);
  Value scale = e.f32(op.getScale().convertToDouble());
  e.loop(e.idx(0), e.idx(dimOf(op.getDs(), 0)), [&](Value r) {
    Value i = arith::AddIOp::create(b, loc, op.getQLo(), e.toI64(r));
    Value qPos = arith::AddIOp::create(b, loc, i, op.getQOffset());
    e.loop(e.idx(0), e.idx(dimOf(op.getDs(), 1)), [&](Value c) {
      Value j = arith::AddIOp::create(b, loc, op.getKvLo(), e.toI64(c));
      Value kvPos = arith::AddIOp::create(b, loc, j, op.getKvOffset());
      SmallVector<Value> coords{op.getB(), op.getH(), i, j, qPos, kvPos, op.getSeqQ(), op.getSeqKv()};
      Value g = e.load(op.getDs(), {r, c});
      Value live = e.andi(e.cmpi(P::slt, j, op.getSeqKv()), e.cmpi(P::slt, i, op.getSeqQ()));
      live = e.andi(live, arith::CmpFOp::create(b, loc, arith::CmpFPredicate::UNE, g, zero));
      auto ifLive = scf::IfOp::create(b, loc, b.getF32Type(), live, /*withElseRegion=*/true);
      {
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPointToStart(ifLive.thenBlock());
        Value ds = zero;
        auto body = [&] {
          SmallVector<Value> args{g, e.load(op.getS(), {r, c})};
          args.append(coords);
          return e.mulf(inlineRegion(b, op.getScoreGrad(), args), scale);
        };
        if (op.getMasked()) {
          Value allowed = inlineRegion(b, op.getMask(), coords);
          ds = e.ifElse(allowed, b.getF32Type(), body, zero);
        } else {
          ds = body();
        }
        scf::YieldOp::create(b, loc, ds);
        b.setInsertionPointToStart(ifLive.elseBlock());
        scf::YieldOp::create(b, loc, zero);
      }
      e.store(ifLive.getResult(0), op.getDs(), {r, c});
    });
  });
  op.erase();
}

void lowerTn(TnTileOp op) {
  OpBuilder b(op);
  Location loc = op.getLoc();
  Emit e{b, loc};
  e.loop(e.idx(0), e.idx(dimOf(op.getAcc(), 0)), [&](Value c) {
    e.loop(e.idx(0), e.idx(dimOf(op.getAcc(), 1)), [&](Value d) {
      Value sum = e.loop(e.idx(0), e.idx(dimOf(op.getA(), 0)), {e.f32(0.0)},
                         [&](Value r, ValueRange acc) -> SmallVector<Value> {
                           Value a = e.load(op.getA(), {r, c});
                           Value isZero = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ,
                                                                a, e.f32(0.0));
                           Value term = e.select(isZero, e.f32(0.0), e.mulf(a, e.load(op.getB(), {r, d})));
                           return {addReduction(b, e.loc, acc[0], term)};
                         })[0];
      e.store(e.addf(e.load(op.getAcc(), {c, d}), sum), op.getAcc(), {c, d});
    });
  });
  op.erase();
}

void lowerRopeGrad(RopeGradTileOp op) {
  OpBuilder b(op);
  Emit e{b, op.getLoc()};
  e.loop(e.idx(0), e.idx(dimOf(op.getTile(), 0)), [&](Value r) {
    Value row = arith::AddIOp::create(b, op.getLoc(), op.getRow(), r);
    rotateTileRow(e, op.getTile(), r, e.toI64(row), op.getPositionOffset(), op.getRope(),
                  /*transpose=*/true);
  });
  op.erase();
}

/// grad[indices] += value where every index is inside the buffer.
void lowerAccumulateGrad(AccumulateGradOp op) {
  OpBuilder b(op);
  Location loc = op.getLoc();
  Emit e{b, loc};
  Value target = op.getTarget();
  Value inside = e.i1(true);
  SmallVector<Value> idxs;
  for (auto [d, index] : llvm::enumerate(op.getIndices())) {
    Value size = e.dimI64(target, int64_t(d));
    inside = e.andi(inside, e.andi(e.cmpi(P::sge, index, e.i64(0)), e.cmpi(P::slt, index, size)));
    idxs.push_back(e.toIndex(index));
  }
  auto ifIn = scf::IfOp::create(b, loc, inside, /*withElseRegion=*/false);
  b.setInsertionPointToStart(ifIn.thenBlock());
  e.store(e.addf(e.load(target, idxs), op.getValue()), target, idxs);
  op.erase();
}

struct LowerTilesToLoopsPass
    : public mlir::attn::impl::AttnLowerTilesToLoopsBase<LowerTilesToLoopsPass> {
  using Base::Base;
  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (gridRange) {
      SmallVector<func::FuncOp> kernels;
      module.walk([&](func::FuncOp f) {
        if (f->hasAttr("attn.kernel"))
          kernels.push_back(f);
      });
      for (func::FuncOp f : kernels)
        if (failed(lowerGridsAsRange(f)))
          return signalPassFailure();
    }
    module.walk([](GridOp g) { lowerGrid(g); });
    module.walk([](func::FuncOp f) { hoistAllocas(f); });
    // Regions first (their bodies are inlined), then the ops they contained.
    SmallVector<ScoreTileOp> scores;
    module.walk([&](ScoreTileOp op) { scores.push_back(op); });
    for (auto op : scores)
      lowerScore(op);
    SmallVector<ScoreGradTileOp> grads;
    module.walk([&](ScoreGradTileOp op) { grads.push_back(op); });
    for (auto op : grads)
      lowerScoreGrad(op);
    SmallVector<Operation *> ops;
    module.walk([&](Operation *op) {
      if (isa<FillTileOp, LoadTileOp, QkTileOp, SoftmaxTileOp, WeightsTileOp, PvTileOp,
              StoreTileOp, StoreLseOp, LoadRowsOp, RowDotTileOp, GradWeightsTileOp, TnTileOp,
              RopeGradTileOp, AccumulateGradOp>(op))
        ops.push_back(op);
    });
    for (Operation *op : ops) {
      llvm::TypeSwitch<Operation *>(op)
          .Case([](FillTileOp o) { lowerFill(o); })
          .Case([](LoadTileOp o) { lowerLoad(o); })
          .Case([](QkTileOp o) { lowerQk(o); })
          .Case([](SoftmaxTileOp o) { lowerSoftmax(o); })
          .Case([](WeightsTileOp o) { lowerWeights(o); })
          .Case([](PvTileOp o) { lowerPv(o); })
          .Case([](StoreTileOp o) { lowerStore(o); })
          .Case([](StoreLseOp o) { lowerStoreLse(o); })
          .Case([](LoadRowsOp o) { lowerLoadRows(o); })
          .Case([](RowDotTileOp o) { lowerRowDot(o); })
          .Case([](GradWeightsTileOp o) { lowerGradWeights(o); })
          .Case([](TnTileOp o) { lowerTn(o); })
          .Case([](RopeGradTileOp o) { lowerRopeGrad(o); })
          .Case([](AccumulateGradOp o) { lowerAccumulateGrad(o); });
    }
    attune::lowerTensorReads(module);
    // Anything of attn left is a bug of this pass, not of the input.
    WalkResult left = module.walk([](Operation *op) {
      if (op->getDialect() && op->getDialect()->getNamespace() == "attn") {
        op->emitError("attn-lower-tiles-to-loops: op not lowered");
        return WalkResult::interrupt();
      }
      return WalkResult::advance();
    });
    if (left.wasInterrupted())
      signalPassFailure();
  }
};

} // namespace
