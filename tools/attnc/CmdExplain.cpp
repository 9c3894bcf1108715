//===- CmdExplain.cpp - attnc explain -------------------------------------===//
#include "tools/attnc/Driver.h"

#include "codegen/Arguments.h"
#include "codegen/Diagnostics.h"
#include "codegen/reference/BlockMap.h"
#include "codegen/reference/RegionInterpreter.h"
#include "dialect/AttnOps.h"
#include "passes/Passes.h"
#include "tools/attnc/Png.h"

#include "mlir/Pass/PassManager.h"
#include "llvm/Support/Format.h"
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

/// Fraction of (i, j) pairs the mask allows, for the given batch and head.
static double density(mlir::attn::AttentionOp op, const std::vector<const HostTensor *> &inputs,
                      const BlockMapQuery &q) {
  DiagnosticCollector quiet(op.getContext()); // the density is optional: no message
  auto maskOr = RegionProgram::compile(op.getMask(), op);
  if (mlir::failed(maskOr))
    return -1.0;
  RegionProgram *mask = maskOr->get();
  std::vector<Slot> scratch(mask->numSlots() + 1);
  Slot args[8], out;
  args[0].i = q.batch;
  args[1].i = q.head;
  args[6].i = q.seqQ;
  args[7].i = q.seqKv;
  int64_t allowed = 0;
  for (int64_t i = 0; i < q.seqQ; ++i) {
    args[2].i = i;
    args[4].i = i + q.qOffset;
    for (int64_t j = 0; j < q.seqKv; ++j) {
      args[3].i = j;
      args[5].i = j + q.kvOffset;
      mask->run(args, inputs, scratch, &out);
      allowed += out.i != 0;
    }
  }
  return double(allowed) / double(q.seqQ * q.seqKv);
}

static void printMap(const BlockMap &map, llvm::raw_ostream &os) {
  if (map.kvBlocks > 160 || map.qBlocks > 200) {
    os << "  (map of " << map.qBlocks << " x " << map.kvBlocks
       << " tiles is too large to print; use --png)\n";
    return;
  }
  os << "  rows: query blocks, columns: key blocks\n";
  os << "  '#' FULL (no mask code)  '+' PARTIAL (mask evaluated)  'x' classified EMPTY "
        "(skipped before loading)  '.' never visited\n";
  for (int64_t qb = 0; qb < map.qBlocks; ++qb) {
    os << "  ";
    for (int64_t kb = 0; kb < map.kvBlocks; ++kb) {
      char c = map.at(qb, kb);
      os << (c == 'F' ? '#' : c == 'P' ? '+' : c == 'e' ? 'x' : '.');
    }
    os << "\n";
  }
}

static void writeMapPng(const BlockMap &map, const std::string &path) {
  int scale = int(std::max<int64_t>(1, std::min<int64_t>(16, 1024 / std::max<int64_t>(map.kvBlocks, 1))));
  int w = int(map.kvBlocks) * scale, h = int(map.qBlocks) * scale;
  if (w <= 0 || h <= 0 || w > 16384 || h > 16384)
    throw Failure{"--png: map of " + std::to_string(map.qBlocks) + " x " +
                  std::to_string(map.kvBlocks) + " tiles cannot be drawn"};
  std::vector<uint8_t> rgb(size_t(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      char c = map.at(y / scale, x / scale);
      uint8_t px[3] = {255, 255, 255};
      if (c == 'F') { px[0] = 31; px[1] = 78; px[2] = 160; }
      else if (c == 'P') { px[0] = 240; px[1] = 150; px[2] = 40; }
      else if (c == 'e') { px[0] = 215; px[1] = 215; px[2] = 215; }
      bool edge = scale >= 4 && (x % scale == scale - 1 || y % scale == scale - 1);
      for (int k = 0; k < 3; ++k)
        rgb[(size_t(y) * w + x) * 3 + k] = edge ? uint8_t(px[k] * 0.85) : px[k];
    }
  std::string error;
  if (!writePng(path, w, h, rgb, error))
    throw Failure{error};
}

int cmdExplain(int argc, char **argv) {
  Options opts(argc, argv, 2,
               {"seq-q", "seq-kv", "block-m", "block-n", "q-offset", "kv-offset", "batch-index",
                "head", "png"},
               {"show-analysis"}, {"input"});
  if (opts.positional.size() != 1)
    throw Failure{"explain takes one SPEC", 2};
  const int64_t kLimit = int64_t(1) << 40;
  auto seqQ = opts.getInt("seq-q", 1, int64_t(1) << 31);
  auto seqKv = opts.getInt("seq-kv", 1, int64_t(1) << 31);
  BlockMapQuery query;
  query.blockM = opts.getInt("block-m", 1, 1024).value_or(64);
  query.blockN = opts.getInt("block-n", 1, 1024).value_or(64);
  query.batch = opts.getInt("batch-index", 0, kLimit).value_or(0);
  query.head = opts.getInt("head", 0, kLimit).value_or(0);
  auto qOffset = opts.getInt("q-offset", -kLimit, kLimit);
  auto kvOffset = opts.getInt("kv-offset", -kLimit, kLimit);
  if ((seqQ.has_value() != seqKv.has_value()) || (opts.get("png") && !seqQ))
    throw Failure{"the block map needs both --seq-q and --seq-kv", 2};

  mlir::MLIRContext context;
  LoadedSpec spec = loadSpec(context, opts.positional[0]);
  printSummary(spec, llvm::outs());
  llvm::outs() << "\nattn IR:\n";
  spec.module->print(llvm::outs());
  llvm::outs() << "\n";
  if (!seqQ)
    return 0;

  // The block analysis, as attn-tile will see it.
  mlir::OwningOpRef<mlir::ModuleOp> analyzed = mlir::cast<mlir::ModuleOp>(spec.module->clone());
  mlir::PassManager pm(&context);
  mlir::attn::buildAnalysisPipeline(pm);
  if (mlir::failed(pm.run(*analyzed)))
    throw Failure{"block analysis failed"};
  mlir::attn::AttentionOp op;
  analyzed->walk([&](mlir::attn::AttentionOp a) { op = a; });
  if (query.head >= op.getHeadsQ())
    throw Failure{"--head must be below heads_q = " + std::to_string(op.getHeadsQ()), 2};
  query.seqQ = *seqQ;
  query.seqKv = *seqKv;
  query.kvOffset = kvOffset.value_or(op.getDefaultKvOffset().value_or(0));
  query.qOffset = qOffset.value_or(op.getDefaultQOffset().value_or(
      op.getAlign() == mlir::attn::Align::top_left ? 0 : query.seqKv - query.seqQ));

  std::map<std::string, HostTensor> files;
  for (const std::string &binding : opts.all("input")) {
    auto eq = binding.find('=');
    if (eq == std::string::npos)
      throw Failure{"--input needs NAME=FILE.npy, got '" + binding + "'", 2};
    HostTensor t;
    std::string error;
    if (!readNpy(binding.substr(eq + 1), t, error))
      throw Failure{error};
    files[binding.substr(0, eq)] = std::move(t);
  }
  std::vector<const HostTensor *> inputs;
  bool needsData = false;
  for (mlir::Region *r : {&op.getKvRanges(), &op.getTileClass()})
    r->walk([&](mlir::Operation *inner) {
      for (mlir::Value v : inner->getOperands())
        needsData |= mlir::isa<mlir::RankedTensorType>(v.getType());
    });
  for (mlir::Attribute a : op.getInputNames()) {
    std::string name = mlir::cast<mlir::StringAttr>(a).getValue().str();
    auto it = files.find(name);
    if (it == files.end()) {
      if (needsData)
        throw Failure{"the block map of this mask depends on input '" + name +
                      "'; pass --input " + name + "=FILE.npy"};
      static HostTensor empty;
      inputs.push_back(&empty);
      continue;
    }
    inputs.push_back(&it->second);
  }

  DiagnosticCollector diags(op.getContext());
  mlir::FailureOr<BlockMap> mapOr = computeBlockMap(op, inputs, query);
  if (mlir::failed(mapOr))
    throw Failure{diags.message("the block map failed")};
  BlockMap &map = *mapOr;
  if (opts.flag("show-analysis")) {
    llvm::outs() << "block analysis:\n";
    op->print(llvm::outs());
    llvm::outs() << "\n\n";
  }
  int64_t total = map.qBlocks * map.kvBlocks;
  int64_t full = map.count('F'), partial = map.count('P'), skipped = map.count('e');
  llvm::outs() << "block map: Sq=" << query.seqQ << " Skv=" << query.seqKv << " tile "
               << query.blockM << "x" << query.blockN << ", q_offset=" << query.qOffset
               << " kv_offset=" << query.kvOffset << ", b=" << query.batch
               << " h=" << query.head << (map.listMode ? " (iterating the block list)" : "")
               << "\n";
  printMap(map, llvm::outs());
  llvm::outs() << llvm::format("  tiles: %lld of %lld computed (%.1f%% of the dense work): "
                               "%lld FULL, %lld PARTIAL; %lld visited and skipped as EMPTY\n",
                               (long long)(full + partial), (long long)total,
                               100.0 * double(full + partial) / double(std::max<int64_t>(total, 1)),
                               (long long)full, (long long)partial, (long long)skipped);
  if (query.seqQ * query.seqKv <= 20'000'000) {
    double d = density(op, inputs, query);
    if (d >= 0)
      llvm::outs() << llvm::format("  pairs the mask allows: %.1f%%\n", 100.0 * d);
  }
  if (auto png = opts.get("png")) {
    writeMapPng(map, *png);
    llvm::outs() << "  picture: " << *png << "\n";
  }
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
