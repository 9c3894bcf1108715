//===- RegionInterpreter.cpp - run attn regions on the host ---------------===//
#include "codegen/reference/RegionInterpreter.h"

#include "codegen/Arguments.h"
#include "dialect/AttnOps.h"
#include "dialect/AttnSemantics.h"
#include "specs/Expr.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cmath>
#include <limits>

using namespace mlir;

namespace attune {

int64_t t5Bucket(int64_t d, bool bidirectional, int64_t numBuckets, int64_t maxDistance) {
  return mlir::attn::t5Bucket(d, bidirectional, numBuckets, maxDistance);
}

namespace {

enum class Code : uint8_t {
  Const, AddI, SubI, MulI, FloorDivI, CeilDivI, DivI, RemI, MinI, MaxI, AndI, OrI, XorI,
  CmpI, Select, IToF, FToI, Copy, AddF, SubF, MulF, DivF, NegF, MaxF, MinF, CmpF, Exp,
  Exp2, Log, Log2, Sqrt, Tanh, AbsF, AbsI, Floor, Ceil,
  Causal, SlidingWindow, DilatedWindow, Sinks, GlobalCount, GlobalList, PrefixLm,
  Strided, Fixed, DilatedSegments, ShiftedGroups,
  Softcap, Alibi, T5Bias, Fire, KerpleLog, LogLengthScale, Lookup, Contains,
  Size, ConstantTable, BoxSummary, BoxContains, SearchSorted
};

struct Instr {
  Code code;
  int pred = 0;
  uint32_t res = 0, res2 = 0, res3 = 0, res4 = 0;
  std::vector<uint32_t> in;
  int64_t p[4] = {0, 0, 0, 0};
  double f[2] = {0, 0};
  Slot constant{0};
  std::vector<double> list, list2;
  std::vector<int64_t> ints;
  int tensors[4] = {-1, -1, -1, -1};
};

inline int64_t wrapAdd(int64_t a, int64_t b) {
  return int64_t(uint64_t(a) + uint64_t(b));
}
inline int64_t wrapSub(int64_t a, int64_t b) {
  return int64_t(uint64_t(a) - uint64_t(b));
}
inline int64_t wrapMul(int64_t a, int64_t b) {
  return int64_t(uint64_t(a) * uint64_t(b));
}

bool cmpI(int pred, int64_t a, int64_t b) {
  uint64_t ua = uint64_t(a), ub = uint64_t(b);
  switch (static_cast<arith::CmpIPredicate>(pred)) {
  case arith::CmpIPredicate::eq: return a == b;
  case arith::CmpIPredicate::ne: return a != b;
  case arith::CmpIPredicate::slt: return a < b;
  case arith::CmpIPredicate::sle: return a <= b;
  case arith::CmpIPredicate::sgt: return a > b;
  case arith::CmpIPredicate::sge: return a >= b;
  case arith::CmpIPredicate::ult: return ua < ub;
  case arith::CmpIPredicate::ule: return ua <= ub;
  case arith::CmpIPredicate::ugt: return ua > ub;
  case arith::CmpIPredicate::uge: return ua >= ub;
  }
  return false;
}

bool cmpF(int pred, double a, double b) {
  bool unordered = std::isnan(a) || std::isnan(b);
  using P = arith::CmpFPredicate;
  switch (static_cast<P>(pred)) {
  case P::AlwaysFalse: return false;
  case P::OEQ: return !unordered && a == b;
  case P::OGT: return !unordered && a > b;
  case P::OGE: return !unordered && a >= b;
  case P::OLT: return !unordered && a < b;
  case P::OLE: return !unordered && a <= b;
  case P::ONE: return !unordered && a != b;
  case P::ORD: return !unordered;
  case P::UEQ: return unordered || a == b;
  case P::UGT: return unordered || a > b;
  case P::UGE: return unordered || a >= b;
  case P::ULT: return unordered || a < b;
  case P::ULE: return unordered || a <= b;
  case P::UNE: return unordered || a != b;
  case P::UNO: return unordered;
  case P::AlwaysTrue: return true;
  }
  return false;
}

/// Reads t[idx...]; false when an index is outside the tensor.
bool element(const HostTensor &t, const int64_t *idx, size_t n, double &out) {
  if (n != t.shape.size())
    return false;
  int64_t flat = 0;
  for (size_t i = 0; i < n; ++i) {
    if (idx[i] < 0 || idx[i] >= t.shape[i])
      return false;
    flat = flat * t.shape[i] + idx[i];
  }
  out = t.data[static_cast<size_t>(flat)];
  return true;
}

} // namespace

struct RegionProgram::Impl {
  unsigned numArgs = 0, numSlots = 0;
  std::vector<Instr> code;
  std::vector<uint32_t> results;
};

RegionProgram::RegionProgram(std::unique_ptr<Impl> i) : impl(std::move(i)) {}
RegionProgram::~RegionProgram() = default;
unsigned RegionProgram::numArgs() const { return impl->numArgs; }
unsigned RegionProgram::numResults() const { return impl->results.size(); }
unsigned RegionProgram::numSlots() const { return impl->numSlots; }

FailureOr<std::unique_ptr<RegionProgram>> RegionProgram::compile(Region &region,
                                                                 attn::AttentionOp attention) {
  auto impl = std::make_unique<Impl>();
  if (region.empty() || !region.hasOneBlock())
    return attention.emitError("the reference evaluates regions of exactly one block");
  Block &block = region.front();
  llvm::DenseMap<Value, uint32_t> slots;
  auto slotOf = [&](Value v) {
    auto [it, inserted] = slots.try_emplace(v, impl->numSlots);
    if (inserted)
      ++impl->numSlots;
    return it->second;
  };
  for (BlockArgument arg : block.getArguments())
    slotOf(arg);
  impl->numArgs = block.getNumArguments();

  auto tensorIndex = [&](Value t) { return attention.getInputIndex(t); };
  // Constants defined above the region (hoisted there by canonicalization).
  Operation *usesValueFromAbove = nullptr;
  region.walk([&](Operation *inner) {
    for (Value operand : inner->getOperands()) {
      Operation *def = operand.getDefiningOp();
      if (isa<RankedTensorType>(operand.getType()) || slots.count(operand))
        continue;
      bool above = def ? !region.isAncestor(def->getParentRegion())
                       : !region.isAncestor(operand.getParentRegion());
      if (!above)
        continue;
      auto c = def ? dyn_cast<arith::ConstantOp>(def) : arith::ConstantOp();
      if (!c) {
        usesValueFromAbove = inner;
        continue;
      }
      Instr in;
      in.code = Code::Const;
      in.res = slotOf(operand);
      if (auto ia = dyn_cast<IntegerAttr>(c.getValue()))
        in.constant.i = ia.getType().isInteger(1) ? int64_t(ia.getValue().getZExtValue())
                                                  : ia.getValue().getSExtValue();
      else if (auto fa = dyn_cast<FloatAttr>(c.getValue()))
        in.constant.f = fa.getValueAsDouble();
      impl->code.push_back(std::move(in));
    }
  });
  if (usesValueFromAbove)
    return usesValueFromAbove->emitError(
        "the reference evaluates regions that use no value from outside them but constants");
  for (Operation &op : block.getOperations()) {
    if (auto yield = dyn_cast<attn::YieldOp>(op)) {
      for (Value v : yield.getValues())
        impl->results.push_back(slotOf(v));
      continue;
    }
    Instr in;
    for (Value operand : op.getOperands())
      if (!isa<RankedTensorType>(operand.getType()))
        in.in.push_back(slotOf(operand));
    if (op.getNumResults() >= 1)
      in.res = slotOf(op.getResult(0));
    if (op.getNumResults() >= 2)
      in.res2 = slotOf(op.getResult(1));
    if (op.getNumResults() >= 3)
      in.res3 = slotOf(op.getResult(2));
    if (op.getNumResults() >= 4)
      in.res4 = slotOf(op.getResult(3));
    bool known = true;
    llvm::TypeSwitch<Operation *>(&op)
        .Case([&](arith::ConstantOp c) {
          in.code = Code::Const;
          if (auto ia = dyn_cast<IntegerAttr>(c.getValue()))
            in.constant.i = ia.getType().isInteger(1) ? int64_t(ia.getValue().getZExtValue())
                                                      : ia.getValue().getSExtValue();
          else if (auto fa = dyn_cast<FloatAttr>(c.getValue()))
            in.constant.f = fa.getValueAsDouble();
          else
            known = false;
        })
        .Case([&](arith::AddIOp) { in.code = Code::AddI; })
        .Case([&](arith::SubIOp) { in.code = Code::SubI; })
        .Case([&](arith::MulIOp) { in.code = Code::MulI; })
        .Case([&](arith::FloorDivSIOp) { in.code = Code::FloorDivI; })
        .Case([&](arith::CeilDivSIOp) { in.code = Code::CeilDivI; })
        .Case([&](arith::DivSIOp) { in.code = Code::DivI; })
        .Case([&](arith::RemSIOp) { in.code = Code::RemI; })
        .Case([&](arith::MinSIOp) { in.code = Code::MinI; })
        .Case([&](arith::MaxSIOp) { in.code = Code::MaxI; })
        .Case([&](arith::AndIOp) { in.code = Code::AndI; })
        .Case([&](arith::OrIOp) { in.code = Code::OrI; })
        .Case([&](arith::XOrIOp) { in.code = Code::XorI; })
        .Case([&](arith::CmpIOp c) {
          in.code = Code::CmpI;
          in.pred = static_cast<int>(c.getPredicate());
        })
        .Case([&](arith::SelectOp) { in.code = Code::Select; })
        .Case([&](arith::SIToFPOp) { in.code = Code::IToF; })
        .Case([&](arith::FPToSIOp) { in.code = Code::FToI; })
        .Case([&](arith::ExtSIOp) { in.code = Code::Copy; })
        .Case([&](arith::ExtUIOp e) {
          // i1 values are held as 0/1 already.
          in.code = Code::Copy;
          known = e.getIn().getType().isInteger(1);
        })
        .Case([&](arith::TruncIOp t) {
          in.code = Code::Copy;
          known = t.getType().getIntOrFloatBitWidth() >= 32;
        })
        .Case([&](arith::ExtFOp) { in.code = Code::Copy; })
        .Case([&](arith::TruncFOp) { in.code = Code::Copy; })
        .Case([&](arith::IndexCastOp) { in.code = Code::Copy; })
        .Case([&](arith::AddFOp) { in.code = Code::AddF; })
        .Case([&](arith::SubFOp) { in.code = Code::SubF; })
        .Case([&](arith::MulFOp) { in.code = Code::MulF; })
        .Case([&](arith::DivFOp) { in.code = Code::DivF; })
        .Case([&](arith::NegFOp) { in.code = Code::NegF; })
        .Case([&](arith::MaximumFOp) { in.code = Code::MaxF; })
        .Case([&](arith::MinimumFOp) { in.code = Code::MinF; })
        .Case([&](arith::MaxNumFOp) { in.code = Code::MaxF; })
        .Case([&](arith::MinNumFOp) { in.code = Code::MinF; })
        .Case([&](arith::CmpFOp c) {
          in.code = Code::CmpF;
          in.pred = static_cast<int>(c.getPredicate());
        })
        .Case([&](math::ExpOp) { in.code = Code::Exp; })
        .Case([&](math::Exp2Op) { in.code = Code::Exp2; })
        .Case([&](math::LogOp) { in.code = Code::Log; })
        .Case([&](math::Log2Op) { in.code = Code::Log2; })
        .Case([&](math::SqrtOp) { in.code = Code::Sqrt; })
        .Case([&](math::TanhOp) { in.code = Code::Tanh; })
        .Case([&](math::AbsFOp) { in.code = Code::AbsF; })
        .Case([&](math::AbsIOp) { in.code = Code::AbsI; })
        .Case([&](math::FloorOp) { in.code = Code::Floor; })
        .Case([&](math::CeilOp) { in.code = Code::Ceil; })
        .Case([&](attn::CausalOp) { in.code = Code::Causal; })
        .Case([&](attn::SlidingWindowOp w) {
          in.code = Code::SlidingWindow;
          in.p[0] = w.getLeft();
          in.p[1] = w.getRight();
        })
        .Case([&](attn::DilatedWindowOp w) {
          in.code = Code::DilatedWindow;
          in.p[0] = w.getLeft();
          in.p[1] = w.getRight();
          in.p[2] = w.getDilation();
        })
        .Case([&](attn::SinksOp s) {
          in.code = Code::Sinks;
          in.p[0] = s.getCount();
        })
        .Case([&](attn::GlobalTokensOp g) {
          if (g.getCount()) {
            in.code = Code::GlobalCount;
            in.p[0] = *g.getCount();
          } else {
            in.code = Code::GlobalList;
            auto t = *g.getTokens();
            in.ints.assign(t.begin(), t.end());
            std::sort(in.ints.begin(), in.ints.end());
          }
        })
        .Case([&](attn::PrefixLmOp) { in.code = Code::PrefixLm; })
        .Case([&](attn::StridedOp s) {
          in.code = Code::Strided;
          in.p[0] = s.getStride();
        })
        .Case([&](attn::FixedOp f) {
          in.code = Code::Fixed;
          in.p[0] = f.getStride();
          in.p[1] = f.getSummary();
        })
        .Case([&](attn::DilatedSegmentsOp d) {
          in.code = Code::DilatedSegments;
          in.p[0] = d.getSegment();
          in.p[1] = d.getDilation();
          in.p[2] = d.getHeadOffset() ? *d.getHeadOffset() : -1;
        })
        .Case([&](attn::ShiftedGroupsOp s) {
          in.code = Code::ShiftedGroups;
          in.p[0] = s.getGroup();
          in.ints.assign(s.getShiftedHeads().begin(), s.getShiftedHeads().end());
        })
        .Case([&](attn::SoftcapOp s) {
          in.code = Code::Softcap;
          in.f[0] = s.getCap().convertToDouble();
        })
        .Case([&](attn::AlibiOp a) {
          in.code = Code::Alibi;
          in.list.assign(a.getSlopes().begin(), a.getSlopes().end());
        })
        .Case([&](attn::T5BiasOp t) {
          in.code = Code::T5Bias;
          in.p[0] = t.getNumBuckets();
          in.p[1] = t.getMaxDistance();
          in.p[2] = t.getBidirectional();
          in.tensors[0] = tensorIndex(t.getTable());
        })
        .Case([&](attn::FireOp f) {
          in.code = Code::Fire;
          in.f[0] = f.getC().convertToDouble();
          in.f[1] = f.getL().convertToDouble();
          in.tensors[0] = tensorIndex(f.getW1());
          in.tensors[1] = tensorIndex(f.getB1());
          in.tensors[2] = tensorIndex(f.getW2());
          in.tensors[3] = tensorIndex(f.getB2());
        })
        .Case([&](attn::KerpleLogOp k) {
          in.code = Code::KerpleLog;
          in.list.assign(k.getR1().begin(), k.getR1().end());
          in.list2.assign(k.getR2().begin(), k.getR2().end());
        })
        .Case([&](attn::LogLengthScaleOp l) {
          in.code = Code::LogLengthScale;
          in.f[0] = l.getBase().convertToDouble();
        })
        .Case([&](attn::LookupOp l) {
          in.code = Code::Lookup;
          in.tensors[0] = tensorIndex(l.getTensor());
        })
        .Case([&](attn::ContainsOp c) {
          in.code = Code::Contains;
          in.tensors[0] = tensorIndex(c.getTensor());
        })
        .Case([&](attn::SizeOp o) {
          in.code = Code::Size;
          in.tensors[0] = tensorIndex(o.getTensor());
          in.p[0] = static_cast<int64_t>(o.getDim());
        })
        .Case([&](attn::ConstantTableOp o) {
          in.code = Code::ConstantTable;
          in.list.assign(o.getValues().begin(), o.getValues().end());
        })
        .Case([&](attn::BoxSummaryOp o) {
          in.code = Code::BoxSummary;
          in.tensors[0] = tensorIndex(o.getTensor());
          in.p[0] = o.getSortedDim() ? int64_t(*o.getSortedDim()) : -1;
        })
        .Case([&](attn::SearchSortedOp o) {
          in.code = Code::SearchSorted;
          in.tensors[0] = tensorIndex(o.getTensor());
          in.p[0] = int64_t(o.getDim());
        })
        .Case([&](attn::BoxContainsOp o) {
          in.code = Code::BoxContains;
          in.tensors[0] = tensorIndex(o.getTensor());
        })
        .Default([&](Operation *) { known = false; });
    if (!known)
      return op.emitError("the reference cannot evaluate '") << op.getName() << "'";
    impl->code.push_back(std::move(in));
  }
  return {std::unique_ptr<RegionProgram>(new RegionProgram(std::move(impl)))};
}

void RegionProgram::run(const Slot *args, const std::vector<const HostTensor *> &tensors,
                        std::vector<Slot> &r, Slot *results) const {
  for (unsigned i = 0; i < impl->numArgs; ++i)
    r[i] = args[i];
  for (const Instr &in : impl->code) {
    auto I = [&](size_t k) { return r[in.in[k]].i; };
    auto F = [&](size_t k) { return r[in.in[k]].f; };
    Slot &out = r[in.res];
    switch (in.code) {
    case Code::Const: out = in.constant; break;
    case Code::AddI: out.i = wrapAdd(I(0), I(1)); break;
    case Code::SubI: out.i = wrapSub(I(0), I(1)); break;
    case Code::MulI: out.i = wrapMul(I(0), I(1)); break;
    case Code::FloorDivI: out.i = expr::floorDiv(I(0), I(1)); break;
    case Code::CeilDivI:
      out.i = I(1) == 0 ? 0 : -expr::floorDiv(wrapSub(0, I(0)), I(1));
      break;
    case Code::DivI:
      out.i = (I(1) == 0 || I(1) == -1) ? wrapMul(I(0), I(1) == -1 ? -1 : 0) : I(0) / I(1);
      break;
    case Code::RemI: out.i = (I(1) == 0 || I(1) == -1) ? 0 : I(0) % I(1); break;
    case Code::MinI: out.i = std::min(I(0), I(1)); break;
    case Code::MaxI: out.i = std::max(I(0), I(1)); break;
    case Code::AndI: out.i = I(0) & I(1); break;
    case Code::OrI: out.i = I(0) | I(1); break;
    case Code::XorI: out.i = I(0) ^ I(1); break;
    case Code::CmpI: out.i = cmpI(in.pred, I(0), I(1)); break;
    case Code::Select: out = I(0) ? r[in.in[1]] : r[in.in[2]]; break;
    case Code::IToF: out.f = double(I(0)); break;
    case Code::FToI: {
      double v = F(0);
      out.i = std::isfinite(v) && std::fabs(v) < 9.2e18 ? int64_t(v) : 0;
      break;
    }
    case Code::Copy: out = r[in.in[0]]; break;
    case Code::AddF: out.f = F(0) + F(1); break;
    case Code::SubF: out.f = F(0) - F(1); break;
    case Code::MulF: out.f = F(0) * F(1); break;
    case Code::DivF: out.f = F(0) / F(1); break;
    case Code::NegF: out.f = -F(0); break;
    case Code::MaxF:
      out.f = (std::isnan(F(0)) || std::isnan(F(1))) ? NAN : std::max(F(0), F(1));
      break;
    case Code::MinF:
      out.f = (std::isnan(F(0)) || std::isnan(F(1))) ? NAN : std::min(F(0), F(1));
      break;
    case Code::CmpF: out.i = cmpF(in.pred, F(0), F(1)); break;
    case Code::Exp: out.f = std::exp(F(0)); break;
    case Code::Exp2: out.f = std::exp2(F(0)); break;
    case Code::Log: out.f = std::log(F(0)); break;
    case Code::Log2: out.f = std::log2(F(0)); break;
    case Code::Sqrt: out.f = std::sqrt(F(0)); break;
    case Code::Tanh: out.f = std::tanh(F(0)); break;
    case Code::AbsF: out.f = std::fabs(F(0)); break;
    case Code::AbsI: out.i = I(0) < 0 ? wrapSub(0, I(0)) : I(0); break;
    case Code::Floor: out.f = std::floor(F(0)); break;
    case Code::Ceil: out.f = std::ceil(F(0)); break;

    // Named masks; operands are (q, kv) positions unless noted.
    case Code::Causal: out.i = I(0) - I(1) >= 0; break;
    case Code::SlidingWindow:
    case Code::DilatedWindow: {
      int64_t d = I(0) - I(1);
      bool ok = (in.p[0] < 0 || d <= in.p[0]) && (in.p[1] < 0 || d >= -in.p[1]);
      if (in.code == Code::DilatedWindow)
        ok = ok && expr::floorMod(d, in.p[2]) == 0;
      out.i = ok;
      break;
    }
    case Code::Sinks: out.i = I(0) < in.p[0]; break;
    case Code::GlobalCount:
      out.i = (I(0) >= 0 && I(0) < in.p[0]) || (I(1) >= 0 && I(1) < in.p[0]);
      break;
    case Code::GlobalList:
      out.i = std::binary_search(in.ints.begin(), in.ints.end(), I(0)) ||
              std::binary_search(in.ints.begin(), in.ints.end(), I(1));
      break;
    case Code::PrefixLm: out.i = I(1) < I(2) || I(0) - I(1) >= 0; break;
    case Code::Strided: {
      int64_t d = I(0) - I(1), l = in.p[0];
      out.i = d >= 0 && (d < l || expr::floorMod(d, l) == 0);
      break;
    }
    case Code::Fixed: {
      int64_t q = I(0), kv = I(1), l = in.p[0], c = in.p[1];
      out.i = q - kv >= 0 && (expr::floorDiv(kv, l) == expr::floorDiv(q, l) ||
                              expr::floorMod(kv, l) >= l - c);
      break;
    }
    case Code::DilatedSegments: { // (h, q, kv)
      int64_t h = I(0), q = I(1), kv = I(2), w = in.p[0], dil = in.p[1];
      int64_t o = in.p[2] >= 0 ? in.p[2] : expr::floorMod(h, dil);
      out.i = expr::floorDiv(q, w) == expr::floorDiv(kv, w) && expr::floorMod(q, dil) == o &&
              expr::floorMod(kv, dil) == o;
      break;
    }
    case Code::ShiftedGroups: { // (h, q, kv)
      int64_t g = in.p[0];
      bool shifted = std::find(in.ints.begin(), in.ints.end(), I(0)) != in.ints.end();
      int64_t s = shifted ? g / 2 : 0;
      out.i = expr::floorDiv(I(1) + s, g) == expr::floorDiv(I(2) + s, g);
      break;
    }

    // Named score transforms; operand 0 is s.
    case Code::Softcap: out.f = in.f[0] * std::tanh(F(0) / in.f[0]); break;
    case Code::Alibi: { // (s, h, q, kv)
      int64_t h = I(1);
      double m = (h >= 0 && h < int64_t(in.list.size())) ? in.list[h] : 0.0;
      out.f = F(0) - m * double(I(2) - I(3));
      break;
    }
    case Code::T5Bias: { // (s, h, q, kv)
      int64_t bucket = t5Bucket(I(2) - I(3), in.p[2] != 0, in.p[0], in.p[1]);
      int64_t idx[2] = {bucket, I(1)};
      double bias;
      out.f = element(*tensors[in.tensors[0]], idx, 2, bias) ? F(0) + bias : F(0);
      break;
    }
    case Code::Fire: { // (s, h, q, kv)
      int64_t h = I(1), q = I(2), d = std::max<int64_t>(I(2) - I(3), 0);
      double c = in.f[0], L = in.f[1];
      auto psi = [c](double x) { return std::log(c * x + 1.0); };
      double x = psi(double(d)) / psi(std::max(L, double(q)));
      const HostTensor &w1 = *tensors[in.tensors[0]], &b1 = *tensors[in.tensors[1]],
                       &w2 = *tensors[in.tensors[2]], &b2 = *tensors[in.tensors[3]];
      int64_t hidden = w1.shape[0];
      double acc = 0.0, v;
      bool ok = true;
      for (int64_t k = 0; k < hidden && ok; ++k) {
        double a, bb, ww;
        int64_t kk[1] = {k}, hk[2] = {h, k};
        ok = element(w1, kk, 1, a) && element(b1, kk, 1, bb) && element(w2, hk, 2, ww);
        if (ok)
          acc += ww * std::max(0.0, a * x + bb);
      }
      int64_t hh[1] = {h};
      ok = ok && element(b2, hh, 1, v);
      out.f = ok ? F(0) + acc + v : F(0);
      break;
    }
    case Code::KerpleLog: { // (s, h, q, kv)
      int64_t h = I(1);
      bool ok = h >= 0 && h < int64_t(in.list.size());
      double dist = std::fabs(double(I(2) - I(3)));
      out.f = ok ? F(0) - in.list[h] * std::log(1.0 + in.list2[h] * dist) : F(0);
      break;
    }
    case Code::LogLengthScale: { // (s, q)
      double pos = double(std::max<int64_t>(I(1) + 1, 1));
      out.f = F(0) * std::max(1.0, std::log(pos) / std::log(in.f[0]));
      break;
    }
    case Code::Lookup: {
      int64_t idx[8];
      size_t n = std::min<size_t>(in.in.size(), 8);
      for (size_t k = 0; k < n; ++k)
        idx[k] = I(k);
      double v = 0.0;
      bool ok = element(*tensors[in.tensors[0]], idx, n, v);
      r[in.res2].i = ok;
      const HostTensor &t = *tensors[in.tensors[0]];
      if (t.isInt)
        out.i = ok ? int64_t(v) : 0;
      else
        out.f = ok ? v : 0.0;
      break;
    }
    case Code::Size: {
      const HostTensor &t = *tensors[in.tensors[0]];
      out.i = in.p[0] < int64_t(t.shape.size()) ? t.shape[in.p[0]] : 0;
      break;
    }
    case Code::ConstantTable: {
      int64_t i = I(0);
      out.f = (i >= 0 && i < int64_t(in.list.size())) ? in.list[i] : 0.0;
      break;
    }
    case Code::BoxSummary: // lo..., hi... -> min, max, any_inside, all_inside
    case Code::BoxContains: { // lo..., hi..., value_lo, value_hi -> any, all
      const HostTensor &t = *tensors[in.tensors[0]];
      bool contains = in.code == Code::BoxContains;
      size_t n = contains ? (in.in.size() - 2) / 2 : in.in.size() / 2;
      std::vector<int64_t> lo(n), hi(n), cur(n);
      bool any = true, all = true;
      for (size_t d = 0; d < n; ++d) {
        int64_t size = t.shape[d];
        all = all && I(d) >= 0 && I(n + d) < size;
        lo[d] = std::max<int64_t>(I(d), 0);
        hi[d] = std::min<int64_t>(I(n + d), size - 1);
        any = any && lo[d] <= hi[d];
      }
      int64_t vlo = contains ? I(2 * n) : 0, vhi = contains ? I(2 * n + 1) : 0;
      int64_t mn = INT64_MAX, mx = INT64_MIN;
      bool found = false, every = true;
      int64_t last = contains ? t.shape.back() : 1;
      if (any) {
        cur = lo;
        while (true) {
          int64_t flat = 0;
          for (size_t d = 0; d < n; ++d)
            flat = flat * t.shape[d] + cur[d];
          if (contains) {
            bool rowHas = false;
            for (int64_t e = 0; e < last; ++e) {
              int64_t x = int64_t(t.data[flat * last + e]);
              found = found || (x >= vlo && x <= vhi);
              rowHas = rowHas || x == vlo;
            }
            every = every && rowHas;
          } else {
            int64_t x = int64_t(t.data[flat]);
            mn = std::min(mn, x);
            mx = std::max(mx, x);
          }
          size_t d = n;
          while (d > 0 && cur[d - 1] == hi[d - 1]) {
            cur[d - 1] = lo[d - 1];
            --d;
          }
          if (d == 0)
            break;
          // Along a sorted dimension the summary reads the two end points only.
          if (!contains && int64_t(d - 1) == in.p[0])
            cur[d - 1] = hi[d - 1];
          else
            ++cur[d - 1];
        }
      }
      if (contains) {
        r[in.res].i = found;
        r[in.res2].i = vlo == vhi && all && any && every;
      } else {
        r[in.res].i = any ? mn : 0;
        r[in.res2].i = any ? mx : 0;
        r[in.res3].i = any;
        r[in.res4].i = all;
      }
      break;
    }
    case Code::SearchSorted: { // (indices..., value_lo, value_hi) -> first, end
      const HostTensor &t = *tensors[in.tensors[0]];
      size_t n = in.in.size() - 2;
      int64_t dim = in.p[0], size = t.shape[dim];
      bool inside = true;
      for (size_t d = 0; d < n; ++d)
        inside &= int64_t(d) == dim || (I(d) >= 0 && I(d) < t.shape[d]);
      // The same binary search as the lowering (codegen/TensorReads.cpp): positions
      // along dim with value < x (or <= x); every position when outside.
      auto countBelow = [&](int64_t x, bool inclusive) {
        int64_t lo = 0, hi = size;
        while (lo < hi) {
          int64_t mid = lo + ((hi - lo) >> 1), flat = 0;
          for (size_t d = 0; d < n; ++d)
            flat = flat * t.shape[d] + (int64_t(d) == dim ? mid : I(d));
          int64_t v = int64_t(t.data[flat]);
          if (inclusive ? v <= x : v < x)
            lo = mid + 1;
          else
            hi = mid;
        }
        return lo;
      };
      r[in.res].i = inside ? countBelow(I(n), false) : 0;
      r[in.res2].i = inside ? countBelow(I(n + 1), true) : size;
      break;
    }
    case Code::Contains: { // (value, indices...)
      const HostTensor &t = *tensors[in.tensors[0]];
      int64_t value = I(0);
      size_t prefix = in.in.size() - 1;
      bool found = false;
      if (prefix + 1 == t.shape.size()) {
        int64_t flat = 0;
        bool inside = true;
        for (size_t k = 0; k < prefix; ++k) {
          int64_t ix = I(k + 1);
          inside &= ix >= 0 && ix < t.shape[k];
          flat = flat * t.shape[k] + ix;
        }
        if (inside) {
          int64_t last = t.shape.back();
          const double *row = t.data.data() + flat * last;
          for (int64_t e = 0; e < last && !found; ++e)
            found = int64_t(row[e]) == value;
        }
      }
      out.i = found;
      break;
    }
    }
  }
  for (size_t i = 0; i < impl->results.size(); ++i)
    results[i] = r[impl->results[i]];
}


namespace {
/// Adds `g` to t's gradient at idx (t's shape); false when idx is outside it.
bool addElement(HostTensor *grad, const int64_t *idx, size_t n, double g) {
  if (!grad || n != grad->shape.size())
    return false;
  int64_t flat = 0;
  for (size_t i = 0; i < n; ++i) {
    if (idx[i] < 0 || idx[i] >= grad->shape[i])
      return false;
    flat = flat * grad->shape[i] + idx[i];
  }
  grad->data[static_cast<size_t>(flat)] += g;
  return true;
}
} // namespace

// Reverse mode over the instruction list. Slots are single-assignment (one per SSA
// value), so the forward values are all still in `r` when the sweep runs backwards.
// The derivatives of the named transforms are written here from PATTERNS.md's
// formulas, independently of the compiler's attn-differentiate-score pass (which sees
// them expanded into arith/math).
double RegionProgram::runGrad(const Slot *args, const std::vector<const HostTensor *> &tensors,
                              std::vector<Slot> &r, std::vector<double> &adj, double seed,
                              unsigned wrt, const std::vector<HostTensor *> &grads) const {
  std::vector<Slot> results(impl->results.size());
  run(args, tensors, r, results.data());
  adj.assign(impl->numSlots, 0.0);
  if (impl->results.empty())
    return 0.0;
  adj[impl->results[0]] = seed;
  auto gradOf = [&](int t) -> HostTensor * {
    return t >= 0 && size_t(t) < grads.size() ? grads[t] : nullptr;
  };
  for (auto it = impl->code.rbegin(); it != impl->code.rend(); ++it) {
    const Instr &in = *it;
    double a = adj[in.res];
    if (a == 0.0)
      continue;
    auto I = [&](size_t k) { return r[in.in[k]].i; };
    auto F = [&](size_t k) { return r[in.in[k]].f; };
    auto add = [&](size_t k, double g) { adj[in.in[k]] += g; };
    double out = r[in.res].f;
    switch (in.code) {
    case Code::Copy: add(0, a); break;
    case Code::AddF: add(0, a); add(1, a); break;
    case Code::SubF: add(0, a); add(1, -a); break;
    case Code::MulF: add(0, a * F(1)); add(1, a * F(0)); break;
    case Code::DivF: add(0, a / F(1)); add(1, -a * F(0) / (F(1) * F(1))); break;
    case Code::NegF: add(0, -a); break;
    case Code::MaxF: add(F(0) >= F(1) ? 0 : 1, a); break;
    case Code::MinF: add(F(0) <= F(1) ? 0 : 1, a); break;
    case Code::Select: add(I(0) ? 1 : 2, a); break;
    case Code::Exp: add(0, a * out); break;
    case Code::Exp2: add(0, a * out * std::log(2.0)); break;
    case Code::Log: add(0, a / F(0)); break;
    case Code::Log2: add(0, a / (F(0) * std::log(2.0))); break;
    case Code::Sqrt: add(0, a / (2.0 * out)); break;
    case Code::Tanh: add(0, a * (1.0 - out * out)); break;
    case Code::AbsF: add(0, F(0) < 0 ? -a : (F(0) > 0 ? a : 0.0)); break;
    case Code::Softcap: {
      double t = std::tanh(F(0) / in.f[0]);
      add(0, a * (1.0 - t * t));
      break;
    }
    case Code::Alibi:
    case Code::KerpleLog: add(0, a); break;
    case Code::LogLengthScale: {
      double pos = double(std::max<int64_t>(I(1) + 1, 1));
      add(0, a * std::max(1.0, std::log(pos) / std::log(in.f[0])));
      break;
    }
    case Code::T5Bias: {
      add(0, a);
      int64_t bucket = t5Bucket(I(2) - I(3), in.p[2] != 0, in.p[0], in.p[1]);
      int64_t idx[2] = {bucket, I(1)};
      addElement(gradOf(in.tensors[0]), idx, 2, a);
      break;
    }
    case Code::Fire: {
      add(0, a);
      // out = s + sum_k w2[h,k] relu(w1[k] x + b1[k]) + b2[h], only where every read
      // is in bounds (else out = s).
      int64_t h = I(1), q = I(2), d = std::max<int64_t>(I(2) - I(3), 0);
      double c = in.f[0], L = in.f[1];
      auto psi = [c](double x) { return std::log(c * x + 1.0); };
      double x = psi(double(d)) / psi(std::max(L, double(q)));
      const HostTensor &w1 = *tensors[in.tensors[0]], &b1 = *tensors[in.tensors[1]],
                       &w2 = *tensors[in.tensors[2]], &b2 = *tensors[in.tensors[3]];
      int64_t hidden = w1.shape[0], hh[1] = {h};
      double unused;
      bool ok = element(b2, hh, 1, unused);
      for (int64_t k = 0; k < hidden && ok; ++k) {
        double w, bb, ww;
        int64_t kk[1] = {k}, hk[2] = {h, k};
        ok = element(w1, kk, 1, w) && element(b1, kk, 1, bb) && element(w2, hk, 2, ww);
      }
      if (!ok)
        break;
      addElement(gradOf(in.tensors[3]), hh, 1, a);
      for (int64_t k = 0; k < hidden; ++k) {
        double w, bb, ww;
        int64_t kk[1] = {k}, hk[2] = {h, k};
        element(w1, kk, 1, w);
        element(b1, kk, 1, bb);
        element(w2, hk, 2, ww);
        double pre = w * x + bb;
        if (pre <= 0.0)
          continue;
        addElement(gradOf(in.tensors[2]), hk, 2, a * pre);
        addElement(gradOf(in.tensors[0]), kk, 1, a * ww * x);
        addElement(gradOf(in.tensors[1]), kk, 1, a * ww);
      }
      break;
    }
    case Code::Lookup: {
      const HostTensor &t = *tensors[in.tensors[0]];
      if (t.isInt || !r[in.res2].i)
        break;
      int64_t idx[8];
      size_t n = std::min<size_t>(in.in.size(), 8);
      for (size_t k = 0; k < n; ++k)
        idx[k] = I(k);
      addElement(gradOf(in.tensors[0]), idx, n, a);
      break;
    }
    default:
      // Integer and boolean values, constants, and the piecewise-constant float ops
      // (floor, ceil, comparisons, conversions to integers) pass nothing back.
      break;
    }
  }
  return wrt < impl->numArgs ? adj[wrt] : 0.0;
}

} // namespace attune
