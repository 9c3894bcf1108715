//===- LowerTilesToLoops.cpp - L2 tile ops -> scalar loops (L3cpu) ---------===//
#include "codegen/host/HostPasses.h"

#include "dialect/AttnOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
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

namespace {

/// Emission helpers at one insertion point.
struct Emit {
  OpBuilder &b;
  Location loc;

  Value idx(int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); }
  Value i64(int64_t v) { return arith::ConstantIntOp::create(b, loc, v, 64); }
  Value i1(bool v) { return arith::ConstantIntOp::create(b, loc, v ? 1 : 0, 1); }
  Value f32(double v) {
    return arith::ConstantFloatOp::create(b, loc, b.getF32Type(), APFloat(static_cast<float>(v)));
  }
  Value f64(double v) {
    return arith::ConstantFloatOp::create(b, loc, b.getF64Type(), APFloat(v));
  }
  Value toIndex(Value v) {
    return v.getType().isIndex() ? v : arith::IndexCastOp::create(b, loc, b.getIndexType(), v);
  }
  Value toI64(Value v) {
    return v.getType().isInteger(64) ? v : arith::IndexCastOp::create(b, loc, b.getI64Type(), v);
  }
  Value load(Value mem, ValueRange idxs) { return memref::LoadOp::create(b, loc, mem, idxs); }
  void store(Value v, Value mem, ValueRange idxs) { memref::StoreOp::create(b, loc, v, mem, idxs); }
  Value cmpi(P p, Value x, Value y) { return arith::CmpIOp::create(b, loc, p, x, y); }
  Value andi(Value x, Value y) { return arith::AndIOp::create(b, loc, x, y); }
  Value ori(Value x, Value y) { return arith::OrIOp::create(b, loc, x, y); }
  Value select(Value c, Value x, Value y) { return arith::SelectOp::create(b, loc, c, x, y); }
  Value addf(Value x, Value y) { return arith::AddFOp::create(b, loc, x, y); }
  Value mulf(Value x, Value y) { return arith::MulFOp::create(b, loc, x, y); }
  Value dimI64(Value mem, int64_t d) { return toI64(memref::DimOp::create(b, loc, mem, d)); }

  /// for iv in [lo, hi): body(iv)
  void loop(Value lo, Value hi, function_ref<void(Value)> body) {
    auto f = scf::ForOp::create(b, loc, toIndex(lo), toIndex(hi), idx(1));
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(f.getBody());
    body(f.getInductionVar());
  }
  /// A loop carrying values: returns the final ones.
  SmallVector<Value> loop(Value lo, Value hi, ValueRange init,
                          function_ref<SmallVector<Value>(Value, ValueRange)> body) {
    auto f = scf::ForOp::create(b, loc, toIndex(lo), toIndex(hi), idx(1), init);
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(f.getBody());
      SmallVector<Value> next = body(f.getInductionVar(), f.getRegionIterArgs());
      scf::YieldOp::create(b, loc, next);
    }
    return SmallVector<Value>(f.getResults());
  }
  /// if (cond) then() else zero-like: returns then's single value or `otherwise`.
  Value ifElse(Value cond, Type type, function_ref<Value()> then, Value otherwise) {
    auto op = scf::IfOp::create(b, loc, TypeRange{type}, cond, /*withElse=*/true);
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(op.thenBlock());
      scf::YieldOp::create(b, loc, ValueRange{then()});
      b.setInsertionPointToStart(op.elseBlock());
      scf::YieldOp::create(b, loc, ValueRange{otherwise});
    }
    return op.getResult(0);
  }
  Value toF32(Value v) {
    if (v.getType().isF32())
      return v;
    return arith::ExtFOp::create(b, loc, b.getF32Type(), v);
  }
  Value fromF32(Value v, Type t) {
    if (t.isF32())
      return v;
    return arith::TruncFOp::create(b, loc, t, v);
  }
};

int64_t dimOf(Value v, unsigned d) { return cast<MemRefType>(v.getType()).getDimSize(d); }

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

/// Per-pair frequencies of a fused rotary embedding (same rule as attn.rope).
SmallVector<double> ropeFrequencies(RopeAttr r) {
  const double kPi = 3.14159265358979323846;
  int64_t dim = r.getRotaryDim();
  double theta = r.getTheta().getValueAsDouble(), factor = r.getFactor().getValueAsDouble();
  if (r.getScaling() == RopeScaling::ntk)
    theta *= std::pow(factor, double(dim) / double(dim - 2));
  SmallVector<double> freqs;
  for (int64_t m = 0; m < dim / 2; ++m) {
    double f = std::pow(theta, -2.0 * double(m) / double(dim));
    if (r.getScaling() == RopeScaling::linear) {
      f /= factor;
    } else if (r.getScaling() == RopeScaling::yarn) {
      double ratio = double(r.getOriginalMaxPosition()) / (2.0 * kPi / f);
      double lo = r.getBetaSlow().getValueAsDouble(), hi = r.getBetaFast().getValueAsDouble();
      double gamma = std::clamp((ratio - lo) / (hi - lo), 0.0, 1.0);
      f = (1.0 - gamma) * f / factor + gamma * f;
    }
    freqs.push_back(f);
  }
  return freqs;
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
    e.loop(e.idx(0), e.idx(width), [&](Value d) {
      Value x = e.ifElse(inside, b.getF32Type(), [&] {
        return e.toF32(e.load(src, {op.getBatch(), op.getHead(), row, d}));
      }, e.f32(0.0));
      e.store(x, tile, {r, d});
    });
    if (RopeAttr rope = op.getRopeAttr()) {
      // Angles in double: positions can be large and f32 angles lose whole radians.
      SmallVector<double> freqs = ropeFrequencies(rope);
      int64_t half = rope.getRotaryDim() / 2;
      bool interleaved = rope.getStyle() == RopeStyle::interleaved;
      double mscale = rope.getScaling() == RopeScaling::yarn ? rope.getMscale().getValueAsDouble() : 1.0;
      Value pos = arith::SIToFPOp::create(
          b, op.getLoc(), b.getF64Type(),
          arith::AddIOp::create(b, op.getLoc(), e.toI64(row), op.getPositionOffset()));
      for (int64_t m = 0; m < half; ++m) {
        Value i0 = e.idx(interleaved ? 2 * m : m), i1 = e.idx(interleaved ? 2 * m + 1 : m + half);
        Value angle = e.mulf(pos, e.f64(freqs[m]));
        Value c = arith::TruncFOp::create(b, op.getLoc(), b.getF32Type(),
                                          math::CosOp::create(b, op.getLoc(), angle));
        Value s = arith::TruncFOp::create(b, op.getLoc(), b.getF32Type(),
                                          math::SinOp::create(b, op.getLoc(), angle));
        Value x0 = e.load(tile, {r, i0}), x1 = e.load(tile, {r, i1});
        Value y0 = arith::SubFOp::create(b, op.getLoc(), e.mulf(x0, c), e.mulf(x1, s));
        Value y1 = e.addf(e.mulf(x0, s), e.mulf(x1, c));
        if (mscale != 1.0) {
          y0 = e.mulf(y0, e.f32(mscale));
          y1 = e.mulf(y1, e.f32(mscale));
        }
        e.store(y0, tile, {r, i0});
        e.store(y1, tile, {r, i1});
      }
    }
  });
  op.erase();
}

void lowerQk(QkTileOp op) {
  OpBuilder b(op);
  Emit e{b, op.getLoc()};
  Value scale = e.f32(op.getScale().convertToDouble());
  e.loop(e.idx(0), e.idx(dimOf(op.getS(), 0)), [&](Value r) {
    e.loop(e.idx(0), e.idx(dimOf(op.getS(), 1)), [&](Value c) {
      Value dot = e.loop(e.idx(0), e.idx(dimOf(op.getQ(), 1)), {e.f32(0.0)},
                         [&](Value d, ValueRange acc) -> SmallVector<Value> {
                           Value p = e.mulf(e.load(op.getQ(), {r, d}), e.load(op.getK(), {c, d}));
                           return {e.addf(acc[0], p)};
                         })[0];
      e.store(e.mulf(dot, scale), op.getS(), {r, c});
    });
  });
  op.erase();
}

/// Clones a region's single block with its arguments bound; returns the yield.
Value inlineRegion(OpBuilder &b, Region &region, ValueRange args) {
  IRMapping mapping;
  Block &block = region.front();
  for (auto [arg, v] : llvm::zip(block.getArguments(), args))
    mapping.map(arg, v);
  for (Operation &inner : block.without_terminator())
    b.clone(inner, mapping);
  return mapping.lookupOrDefault(cast<YieldOp>(block.getTerminator()).getValues()[0]);
}

void lowerScore(ScoreTileOp op) {
  OpBuilder b(op);
  Emit e{b, op.getLoc()};
  Value negInf = e.f32(-std::numeric_limits<double>::infinity());
  e.loop(e.idx(0), e.idx(dimOf(op.getS(), 0)), [&](Value r) {
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
  e.loop(e.idx(0), e.idx(dimOf(op.getS(), 0)), [&](Value r) {
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
      return {e.addf(acc[0], p)};
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
  e.loop(e.idx(0), e.idx(dimOf(op.getAcc(), 0)), [&](Value r) {
    Value alpha = op.getAlpha() ? e.load(op.getAlpha(), {r}) : e.f32(1.0);
    e.loop(e.idx(0), e.idx(dimOf(op.getAcc(), 1)), [&](Value d) {
      Value sum = e.loop(e.idx(0), e.idx(dimOf(op.getP(), 1)), {e.f32(0.0)},
                         [&](Value c, ValueRange acc) -> SmallVector<Value> {
                           return {e.addf(acc[0], e.mulf(e.load(op.getP(), {r, c}), e.load(op.getV(), {c, d})))};
                         })[0];
      e.store(e.addf(e.mulf(e.load(op.getAcc(), {r, d}), alpha), sum), op.getAcc(), {r, d});
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
// Reads of extra tensors
//===----------------------------------------------------------------------===//

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
SmallVector<Value> boxLoops(Emit &e, const Clipped &box, size_t d, SmallVector<Value> &indices,
                            ValueRange init,
                            function_ref<SmallVector<Value>(ValueRange, ValueRange)> body) {
  if (d == box.lo.size())
    return body(indices, init);
  Value hiExcl = arith::AddIOp::create(e.b, e.loc, box.hi[d], e.i64(1));
  Value lo = box.lo[d];
  // An empty dimension runs no iterations.
  hiExcl = arith::MaxSIOp::create(e.b, e.loc, hiExcl, lo);
  return e.loop(lo, hiExcl, init, [&](Value iv, ValueRange acc) -> SmallVector<Value> {
    indices.push_back(e.toI64(iv));
    SmallVector<Value> r = boxLoops(e, box, d + 1, indices, acc, body);
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
  SmallVector<Value> r = boxLoops(e, box, 0, indices, init, [&](ValueRange idx, ValueRange acc) -> SmallVector<Value> {
    Value x = loadAsI64OrF32(e, op.getTensor(), idx);
    return {arith::MinSIOp::create(b, op.getLoc(), acc[0], x), arith::MaxSIOp::create(b, op.getLoc(), acc[1], x)};
  });
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

struct LowerTilesToLoopsPass
    : public mlir::attn::impl::AttnLowerTilesToLoopsBase<LowerTilesToLoopsPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    module.walk([](GridOp g) { lowerGrid(g); });
    module.walk([](func::FuncOp f) { hoistAllocas(f); });
    // Regions first (their bodies are inlined), then the ops they contained.
    SmallVector<ScoreTileOp> scores;
    module.walk([&](ScoreTileOp op) { scores.push_back(op); });
    for (auto op : scores)
      lowerScore(op);
    SmallVector<Operation *> ops;
    module.walk([&](Operation *op) {
      if (isa<FillTileOp, LoadTileOp, QkTileOp, SoftmaxTileOp, WeightsTileOp, PvTileOp,
              StoreTileOp, StoreLseOp, LookupOp, ContainsOp, SizeOp, ConstantTableOp,
              BoxSummaryOp, BoxContainsOp>(op))
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
          .Case([](LookupOp o) { lowerLookup(o); })
          .Case([](ContainsOp o) { lowerContains(o); })
          .Case([](SizeOp o) { lowerSize(o); })
          .Case([](ConstantTableOp o) { lowerConstantTable(o); })
          .Case([](BoxSummaryOp o) { lowerBoxSummary(o); })
          .Case([](BoxContainsOp o) { lowerBoxContains(o); });
    }
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
