//===- KernelAbi.cpp - a kernel's bundle ABI, in the IR and back ----------===//
#include "codegen/nvidia/KernelAbi.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Operation.h"

using namespace mlir;

namespace attune {

namespace {
ArrayAttr paramsAttr(Builder &b, const std::vector<KernelParam> &params) {
  SmallVector<Attribute> out;
  for (const KernelParam &p : params)
    out.push_back(b.getArrayAttr({b.getStringAttr(p.name), b.getStringAttr(p.type)}));
  return b.getArrayAttr(out);
}

LogicalResult readParams(Operation *op, ArrayAttr attr, std::vector<KernelParam> &out) {
  for (Attribute a : attr) {
    auto pair = dyn_cast<ArrayAttr>(a);
    if (!pair || pair.size() != 2 || !isa<StringAttr>(pair[0]) || !isa<StringAttr>(pair[1]))
      return op->emitError("attn.abi: a parameter must be [name, kind]");
    out.push_back({cast<StringAttr>(pair[0]).str(), cast<StringAttr>(pair[1]).str()});
  }
  return success();
}
} // namespace

DictionaryAttr kernelAbiAttr(const GpuKernelInfo &info, MLIRContext *ctx) {
  Builder b(ctx);
  SmallVector<NamedAttribute> fields{
      b.getNamedAttr("symbol", b.getStringAttr(info.symbol)),
      b.getNamedAttr("threads", b.getI64IntegerAttr(info.threads)),
      b.getNamedAttr("smem_bytes", b.getI64IntegerAttr(info.smemBytes)),
      b.getNamedAttr("params", paramsAttr(b, info.params)),
      b.getNamedAttr("grid", b.getStrArrayAttr({info.gridX, info.gridY, info.gridZ})),
      b.getNamedAttr("queries_per_cta", b.getI64IntegerAttr(info.queriesPerCta)),
      b.getNamedAttr("per_kv_head", b.getBoolAttr(info.perKvHead))};
  if (!info.combineSymbol.empty()) {
    SmallVector<Attribute> scratch;
    for (const auto &[name, bytes] : info.scratch)
      scratch.push_back(b.getStrArrayAttr({name, bytes}));
    fields.push_back(b.getNamedAttr(
        "combine", b.getDictionaryAttr({
                       b.getNamedAttr("symbol", b.getStringAttr(info.combineSymbol)),
                       b.getNamedAttr("threads", b.getI64IntegerAttr(info.combineThreads)),
                       b.getNamedAttr("params", paramsAttr(b, info.combineParams)),
                       b.getNamedAttr("grid_x", b.getStringAttr(info.combineGridX)),
                       b.getNamedAttr("scratch", b.getArrayAttr(scratch)),
                   })));
  }
  return b.getDictionaryAttr(fields);
}

FailureOr<GpuKernelInfo> readKernelAbi(Operation *op) {
  auto abi = op->getAttrOfType<DictionaryAttr>("attn.abi");
  if (!abi)
    return op->emitError("no attn.abi on the kernel module (run convert-attn-to-nvvm)");
  GpuKernelInfo info;
  auto str = [&](DictionaryAttr d, StringRef key, std::string &out) -> LogicalResult {
    auto s = d.getAs<StringAttr>(key);
    if (!s)
      return op->emitError("attn.abi: '") << key << "' must be a string";
    out = s.str();
    return success();
  };
  auto num = [&](DictionaryAttr d, StringRef key, int64_t &out) -> LogicalResult {
    auto i = d.getAs<IntegerAttr>(key);
    if (!i)
      return op->emitError("attn.abi: '") << key << "' must be an integer";
    out = i.getInt();
    return success();
  };
  auto params = abi.getAs<ArrayAttr>("params");
  auto grid = abi.getAs<ArrayAttr>("grid");
  auto perKvHead = abi.getAs<BoolAttr>("per_kv_head");
  if (failed(str(abi, "symbol", info.symbol)) || failed(num(abi, "threads", info.threads)) ||
      failed(num(abi, "smem_bytes", info.smemBytes)) ||
      failed(num(abi, "queries_per_cta", info.queriesPerCta)))
    return failure();
  if (!params || failed(readParams(op, params, info.params)))
    return op->emitError("attn.abi: 'params' must be a list of [name, kind]");
  if (!grid || grid.size() != 3 || !llvm::all_of(grid, [](Attribute a) { return isa<StringAttr>(a); }))
    return op->emitError("attn.abi: 'grid' must be three expressions");
  info.gridX = cast<StringAttr>(grid[0]).str();
  info.gridY = cast<StringAttr>(grid[1]).str();
  info.gridZ = cast<StringAttr>(grid[2]).str();
  if (!perKvHead)
    return op->emitError("attn.abi: 'per_kv_head' must be a bool");
  info.perKvHead = perKvHead.getValue();
  if (auto combine = abi.getAs<DictionaryAttr>("combine")) {
    auto cparams = combine.getAs<ArrayAttr>("params");
    auto scratch = combine.getAs<ArrayAttr>("scratch");
    if (failed(str(combine, "symbol", info.combineSymbol)) ||
        failed(num(combine, "threads", info.combineThreads)) ||
        failed(str(combine, "grid_x", info.combineGridX)) || !cparams ||
        failed(readParams(op, cparams, info.combineParams)) || !scratch)
      return op->emitError("attn.abi: a malformed 'combine'");
    for (Attribute a : scratch) {
      auto pair = dyn_cast<ArrayAttr>(a);
      if (!pair || pair.size() != 2 || !isa<StringAttr>(pair[0]) || !isa<StringAttr>(pair[1]))
        return op->emitError("attn.abi: a scratch buffer must be [name, bytes]");
      info.scratch.push_back({cast<StringAttr>(pair[0]).str(), cast<StringAttr>(pair[1]).str()});
    }
  }
  return info;
}

} // namespace attune
