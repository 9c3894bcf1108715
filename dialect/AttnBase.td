//===- AttnBase.td - the attn dialect and its enums --------*- tablegen -*-===//
//
// The `attn` dialect describes attention variants: what to compute (L1) and,
// after tiling, the FlashAttention program that computes it (L2).
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_BASE_TD
#define ATTN_BASE_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"
include "mlir/Interfaces/InferTypeOpInterface.td"

def Attn_Dialect : Dialect {
  let name = "attn";
  let cppNamespace = "::mlir::attn";
  let summary = "Attention variants (L1) and their tiled FlashAttention programs (L2)";
  let description = [{
    An `attn.attention` op holds the exact meaning of one attention variant: q, k, v,
    extra tensors, and two regions in the spirit of FlexAttention, `mask` and
    `score`. Named patterns (causal, sliding windows, ALiBi, ...) are ops inside those
    regions until `attn-expand-patterns` turns them into arith/math.
  }];
  let useDefaultAttributePrinterParser = 1;
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::math::MathDialect",
                           "::mlir::tensor::TensorDialect", "::mlir::scf::SCFDialect"];
}

class Attn_Op<string mnemonic, list<Trait> traits = []>
    : Op<Attn_Dialect, mnemonic, traits>;

// Ops whose single result always has the same type: builders need no result type.
class Attn_ResultIs<string typeExpr> : TraitList<[
  DeclareOpInterfaceMethods<InferTypeOpInterface>,
  NativeOpTrait<"InferTypeOpAdaptor", [], [{
    static ::llvm::LogicalResult inferReturnTypes(::mlir::MLIRContext *context,
        std::optional<::mlir::Location> location, Adaptor adaptor,
        ::llvm::SmallVectorImpl<::mlir::Type> &inferredReturnTypes);
  }], [{
    ::llvm::LogicalResult $cppClass::inferReturnTypes(::mlir::MLIRContext *context,
        std::optional<::mlir::Location>, Adaptor,
        ::llvm::SmallVectorImpl<::mlir::Type> &inferredReturnTypes) {
      inferredReturnTypes.push_back(}] # typeExpr # [{);
      return ::mlir::success();
    }
  }]>]>;

def Attn_Normalizer : I32EnumAttr<"Normalizer", "how scores become weights", [
    I32EnumAttrCase<"softmax", 0>, I32EnumAttrCase<"sigmoid", 1>,
    I32EnumAttrCase<"relu", 2>]> {
  let cppNamespace = "::mlir::attn";
  let genSpecializedAttr = 0;
}
def Attn_NormalizerAttr : EnumAttr<Attn_Dialect, Attn_Normalizer, "normalizer"> {
  let assemblyFormat = "`<` $value `>`";
}

def Attn_Align : I32EnumAttr<"Align", "default query position rule", [
    I32EnumAttrCase<"bottom_right", 0>, I32EnumAttrCase<"top_left", 1>]> {
  let cppNamespace = "::mlir::attn";
  let genSpecializedAttr = 0;
}
def Attn_AlignAttr : EnumAttr<Attn_Dialect, Attn_Align, "align"> {
  let assemblyFormat = "`<` $value `>`";
}

def Attn_Storage : I32EnumAttr<"Storage", "how a call's buffers hold q or k/v", [
    I32EnumAttrCase<"padded", 0>, I32EnumAttrCase<"ragged", 1>,
    I32EnumAttrCase<"paged", 2>]> {
  let cppNamespace = "::mlir::attn";
  let genSpecializedAttr = 0;
}
def Attn_StorageAttr : EnumAttr<Attn_Dialect, Attn_Storage, "storage"> {
  let assemblyFormat = "`<` $value `>`";
}

def Attn_RopeStyle : I32EnumAttr<"RopeStyle", "which feature pairs rotate", [
    I32EnumAttrCase<"half", 0>, I32EnumAttrCase<"interleaved", 1>]> {
  let cppNamespace = "::mlir::attn";
  let genSpecializedAttr = 0;
}
def Attn_RopeStyleAttr : EnumAttr<Attn_Dialect, Attn_RopeStyle, "rope_style"> {
  let assemblyFormat = "`<` $value `>`";
}

def Attn_RopeScaling : I32EnumAttr<"RopeScaling", "context-extension scaling of RoPE", [
    I32EnumAttrCase<"none", 0>, I32EnumAttrCase<"linear", 1>,
    I32EnumAttrCase<"ntk", 2>, I32EnumAttrCase<"yarn", 3>]> {
  let cppNamespace = "::mlir::attn";
  let genSpecializedAttr = 0;
}
def Attn_RopeScalingAttr : EnumAttr<Attn_Dialect, Attn_RopeScaling, "rope_scaling"> {
  let assemblyFormat = "`<` $value `>`";
}

class Attn_Attr<string name, string attrMnemonic, list<Trait> traits = []>
    : AttrDef<Attn_Dialect, name, traits> {
  let mnemonic = attrMnemonic;
}

def Attn_RopeAttr : Attn_Attr<"Rope", "rope"> {
  let summary = "a rotary embedding folded into the loads of q or k (see attn.rope)";
  let parameters = (ins "::mlir::FloatAttr":$theta, "::mlir::attn::RopeStyle":$style,
                        "int64_t":$rotary_dim, "::mlir::attn::RopeScaling":$scaling,
                        "::mlir::FloatAttr":$factor, "int64_t":$original_max_position,
                        "::mlir::FloatAttr":$beta_fast, "::mlir::FloatAttr":$beta_slow,
                        "::mlir::FloatAttr":$mscale);
  let assemblyFormat = "`<` struct(params) `>`";
  let extraClassDeclaration = [{
    /// The rotation frequency of each feature pair m in [0, rotary_dim / 2), after
    /// scaling, in double (attn.rope's definition, ropeFrequencies in
    /// AttnSemantics.h): what every back end rotates by.
    ::llvm::SmallVector<double> getFrequencies() const;
  }];
}

include "dialect/AttnGpuAttrs.td"

#endif // ATTN_BASE_TD
