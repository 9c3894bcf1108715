//===- ExpandPatterns.td - named patterns as rewrite rules -*- tablegen -*-===//
//
// The declarative half of attn-expand-patterns: the named patterns whose
// definition (PATTERNS.md) is one expression of their operands and attributes.
// Patterns that need computation (T5 thresholds, FIRE's loop, windows with
// optional sides, floor modulo, token sets) are C++ in ExpandPatterns.cpp.
//
// Where the order in which the ops are created matters for comparing the output
// with the hand-written expansion these rules replace, the inner values are
// auxiliary results (`(Op:$name ...)` before the replacement), created first.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_EXPAND_PATTERNS_TD
#define ATTN_EXPAND_PATTERNS_TD

include "mlir/IR/PatternBase.td"
include "mlir/Dialect/Arith/IR/ArithOps.td"
include "mlir/Dialect/Math/IR/MathOps.td"
include "dialect/AttnOps.td"

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

// DRR must name every attribute of the ops it builds, the default ones too.
def NoOverflow : NativeCodeCall<
  "::mlir::arith::IntegerOverflowFlagsAttr::get($_builder.getContext(), "
  "::mlir::arith::IntegerOverflowFlags::none)">;
def NoFastMath : NativeCodeCall<
  "::mlir::arith::FastMathFlagsAttr::get($_builder.getContext(), "
  "::mlir::arith::FastMathFlags::none)">;

class CmpI<string predicate> : ConstantEnumCase<Arith_CmpIPredicateAttr, predicate>;
def I64Zero : ConstantAttr<I64Attr, "0">;
def I64One : ConstantAttr<I64Attr, "1">;
def F32One : ConstantAttr<F32Attr, "1.0">;
def ToF32 : NativeCodeCall<"$_builder.getF32Type()">;

// f32 constants computed from an f64 attribute, rounded to nearest as
// static_cast<float> does.
def F32Of : NativeCodeCall<
  "$_builder.getF32FloatAttr(static_cast<float>($0.getValueAsDouble()))">;
def F32Reciprocal : NativeCodeCall<
  "$_builder.getF32FloatAttr(static_cast<float>(1.0 / $0.getValueAsDouble()))">;
def F32ReciprocalLog : NativeCodeCall<
  "$_builder.getF32FloatAttr(static_cast<float>(1.0 / std::log($0.getValueAsDouble())))">;

//===----------------------------------------------------------------------===//
// Masks
//===----------------------------------------------------------------------===//

// causal: q - kv >= 0
def ExpandCausal : Pat<(Attn_CausalOp $q, $kv),
  (Arith_CmpIOp CmpI<"sge">, (Arith_SubIOp $q, $kv, (NoOverflow)),
                (Arith_ConstantOp I64Zero))>;

// sinks: kv < count
def ExpandSinks : Pat<(Attn_SinksOp $kv, $count),
  (Arith_CmpIOp CmpI<"slt">, $kv, (Arith_ConstantOp $count))>;

// prefix LM: kv < prefix or q - kv >= 0
def ExpandPrefixLm : Pat<(Attn_PrefixLmOp $q, $kv, $prefix),
  (Arith_OrIOp
    (Arith_CmpIOp CmpI<"slt">, $kv, $prefix),
    (Arith_CmpIOp CmpI<"sge">, (Arith_SubIOp $q, $kv, (NoOverflow)),
                  (Arith_ConstantOp I64Zero)))>;

//===----------------------------------------------------------------------===//
// Score transforms
//===----------------------------------------------------------------------===//

// softcap: cap * tanh(s * (1 / cap))
def ExpandSoftcap : Pattern<(Attn_SoftcapOp $s, $cap),
  [(Math_TanhOp:$t
      (Arith_MulFOp $s, (Arith_ConstantOp (F32Reciprocal $cap)), (NoFastMath)),
      (NoFastMath)),
   (Arith_MulFOp (Arith_ConstantOp (F32Of $cap)), $t, (NoFastMath))]>;

// ALiBi: s - slopes[h] * float(q - kv)
def ExpandAlibi : Pat<(Attn_AlibiOp $s, $h, $q, $kv, $slopes),
  (Arith_SubFOp $s,
    (Arith_MulFOp (Attn_ConstantTableOp $h, $slopes),
                  (Arith_SIToFPOp (Arith_SubIOp $q, $kv, (NoOverflow)),
                                  (returnType (ToF32))),
                  (NoFastMath)),
    (NoFastMath))>;

// KERPLE (log): s - r1[h] * log(1 + r2[h] * float(|q - kv|))
def ExpandKerpleLog : Pattern<(Attn_KerpleLogOp $s, $h, $q, $kv, $r1, $r2),
  [(Attn_ConstantTableOp:$slope1 $h, $r1),
   (Attn_ConstantTableOp:$slope2 $h, $r2),
   (Arith_SIToFPOp:$dist (Math_AbsIOp (Arith_SubIOp $q, $kv, (NoOverflow))),
                         (returnType (ToF32))),
   (Arith_SubFOp $s,
     (Arith_MulFOp $slope1,
       (Math_LogOp
         (Arith_AddFOp (Arith_ConstantOp F32One),
                       (Arith_MulFOp $slope2, $dist, (NoFastMath)), (NoFastMath)),
         (NoFastMath)),
       (NoFastMath)),
     (NoFastMath))]>;

// log-length scaling: s * max(log(float(max(q + 1, 1))) * (1 / log(base)), 1)
def ExpandLogLengthScale : Pat<(Attn_LogLengthScaleOp $s, $q, $base),
  (Arith_MulFOp $s,
    (Arith_MaximumFOp
      (Arith_MulFOp
        (Math_LogOp
          (Arith_SIToFPOp
            (Arith_MaxSIOp (Arith_AddIOp $q, (Arith_ConstantOp I64One), (NoOverflow)),
                           (Arith_ConstantOp I64One)),
            (returnType (ToF32))),
          (NoFastMath)),
        (Arith_ConstantOp (F32ReciprocalLog $base)), (NoFastMath)),
      (Arith_ConstantOp F32One), (NoFastMath)),
    (NoFastMath))>;

#endif // ATTN_EXPAND_PATTERNS_TD
