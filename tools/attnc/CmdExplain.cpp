//===- CmdExplain.cpp - attnc explain -------------------------------------===//
#include "tools/attnc/Driver.h"

#include "dialect/AttnOps.h"

#include "llvm/Support/raw_ostream.h"

namespace attune::attnc {

static std::string dimString(const Dim &d) {
  if (auto *i = std::get_if<int64_t>(&d))
    return std::to_string(*i);
  return std::get<std::string>(d);
}

static void printSummary(const LoadedSpec &spec, llvm::raw_ostream &os) {
  const SpecInfo &info = spec.info;
  os << "spec " << info.name << "\n";
  os << "  shapes      q [B, " << info.headsQ << ", Sq, " << info.headDim << "], k [B, "
     << info.headsKv << ", Skv, " << info.headDim << "], v [B, " << info.headsKv
     << ", Skv, " << info.headDimV << "]";
  if (info.headsQ != info.headsKv)
    os << " (" << (info.headsKv == 1 ? "MQA" : "GQA") << ", "
       << info.headsQ / info.headsKv << " query heads per kv head)";
  os << "\n";
  if (!info.dtype.empty())
    os << "  dtype       " << info.dtype << "\n";
  os << "  scale       " << info.scale << "\n";
  os << "  positions   P(i) = i + q_offset, K(j) = j + kv_offset; default q_offset = ";
  if (info.qOffset)
    os << *info.qOffset;
  else
    os << (info.align == "top_left" ? "0 (top_left)" : "Skv - Sq (bottom_right)");
  os << ", kv_offset = " << (info.kvOffset ? *info.kvOffset : 0) << "\n";
  os << "  mask        " << info.maskSummary << "\n";
  os << "  score       " << info.scoreSummary << "\n";
  os << "  normalizer  " << info.normalizer << "\n";
  os << "  outputs     o" << (info.lse ? ", lse" : "") << "\n";
  if (spec.fromJson)
    os << "  rope        " << (info.rope ? "yes (attn.rope on q and k)" : "no") << "\n";
  for (const InputDecl &in : info.inputs) {
    os << "  input       " << in.name << ": " << in.dtype << " [";
    for (size_t i = 0; i < in.shape.size(); ++i)
      os << (i ? ", " : "") << dimString(in.shape[i]);
    os << "]\n";
  }
}

int cmdExplain(int argc, char **argv) {
  Options opts(argc, argv, 2, {}, {});
  if (opts.positional.size() != 1)
    throw Failure{"explain takes one SPEC", 2};
  mlir::MLIRContext context;
  LoadedSpec spec = loadSpec(context, opts.positional[0]);
  printSummary(spec, llvm::outs());
  llvm::outs() << "\nattn IR:\n";
  spec.module->print(llvm::outs());
  llvm::outs() << "\n";
  return 0;
}

int cmdImport(int argc, char **argv) {
  Options opts(argc, argv, 2, {"o", "dtype"}, {});
  if (opts.positional.size() != 1)
    throw Failure{"import takes one SPEC", 2};
  std::optional<std::string> dtype = opts.get("dtype");
  if (dtype && *dtype != "bf16" && *dtype != "fp16" && *dtype != "f32")
    throw Failure{"--dtype must be bf16, fp16 or f32, got '" + *dtype + "'", 2};
  mlir::MLIRContext context;
  LoadedSpec spec = loadSpec(context, opts.positional[0], dtype);
  std::string out = opts.get("o").value_or("-");
  std::error_code ec;
  llvm::raw_fd_ostream os(out, ec);
  if (ec)
    throw Failure{"cannot write '" + out + "': " + ec.message()};
  spec.module->print(os);
  os << "\n";
  return 0;
}

} // namespace attune::attnc
