//===- expr_parser.cpp - fuzz the spec's expression language ---------------===//
//
// Input: the text of an `{"expr": ...}` (seeds: every expression in specs/examples and
// test/lit/specs). Parse, type-check against the names of a score region (b, h, q, kv,
// q_idx, kv_idx, seq_q, seq_kv, s), two parameters and two tensors, as the importer
// does; on success emit arith/math ops into a function and verify it.
// Invariants: print() gives text that parses and checks to the same printed tree, and
// the emitted ops verify.
//
//===----------------------------------------------------------------------===//
#include "FuzzSupport.h"

#include "dialect/AttnOps.h"
#include "specs/Expr.h"
#include "specs/ExprEmitter.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Verifier.h"

#include <cstdint>
#include <map>
#include <string>

using namespace attune::expr;

namespace {

const char *const kVariables[] = {"b", "h", "q", "kv", "q_idx", "kv_idx", "seq_q", "seq_kv"};

std::optional<NameInfo> resolve(const std::string &n) {
  static const std::map<std::string, NameInfo> names = [] {
    std::map<std::string, NameInfo> m;
    for (const char *v : kVariables)
      m[v] = NameInfo{};
    NameInfo s;
    s.type = Type::Float;
    m["s"] = s;
    NameInfo w;
    w.kind = NameInfo::Kind::Param;
    w.intValue = 4;
    m["w"] = w;
    NameInfo slope;
    slope.kind = NameInfo::Kind::Param;
    slope.type = Type::Float;
    slope.floatValue = 0.5;
    m["slope"] = slope;
    NameInfo doc;
    doc.kind = NameInfo::Kind::Tensor;
    doc.dims = {-1, -1};
    m["doc"] = doc;
    NameInfo tab;
    tab.kind = NameInfo::Kind::Tensor;
    tab.type = Type::Float;
    tab.dims = {32, 8};
    m["tab"] = tab;
    return m;
  }();
  auto it = names.find(n);
  if (it == names.end())
    return std::nullopt;
  return it->second;
}

void emitAndVerify(const Node &tree) {
  using namespace mlir;
  static MLIRContext *context = [] {
    auto *c = new MLIRContext(MLIRContext::Threading::DISABLED);
    c->loadDialect<attn::AttnDialect, func::FuncDialect, arith::ArithDialect,
                   math::MathDialect>();
    return c;
  }();
  std::string diagnostics;
  ScopedDiagnosticHandler handler(context, [&](Diagnostic &d) {
    diagnostics += d.str() + "\n";
    return success();
  });
  OpBuilder b(context);
  Location loc = b.getUnknownLoc();
  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  b.setInsertionPointToEnd(module->getBody());
  SmallVector<mlir::Type> args(8, b.getI64Type());
  args.push_back(b.getF32Type());
  args.push_back(RankedTensorType::get({ShapedType::kDynamic, ShapedType::kDynamic},
                                       b.getI32Type()));
  args.push_back(RankedTensorType::get({32, 8}, b.getF32Type()));
  auto fn = func::FuncOp::create(b, loc, "f", b.getFunctionType(args, {}));
  Block *body = fn.addEntryBlock();
  b.setInsertionPointToEnd(body);

  EmitEnv env;
  env.resolve = resolve;
  env.variable = [&](const std::string &n) -> Value {
    for (unsigned i = 0; i < 8; ++i)
      if (n == kVariables[i])
        return body->getArgument(i);
    FUZZ_CHECK(n == "s", "the emitter asked for variable '%s'", n.c_str());
    return body->getArgument(8);
  };
  env.tensor = [&](const std::string &n) -> Value {
    FUZZ_CHECK(n == "doc" || n == "tab", "the emitter asked for tensor '%s'", n.c_str());
    return body->getArgument(n == "doc" ? 9 : 10);
  };
  SmallVector<Value> inBounds;
  env.inBounds = &inBounds;
  Value v = emit(b, loc, tree, env);
  FUZZ_CHECK(v, "emit returned no value for %s", print(tree).c_str());
  func::ReturnOp::create(b, loc);
  FUZZ_CHECK(succeeded(verify(*module)), "emitted ops do not verify for %s:\n%s",
             print(tree).c_str(), diagnostics.c_str());
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string source(reinterpret_cast<const char *>(data), size);
  Error error;
  std::unique_ptr<Node> tree = parse(source, error);
  if (!tree) {
    FUZZ_CHECK(!error.message.empty(), "parse failed without a message");
    return 0;
  }
  (void)constantInt(*tree, resolve);
  if (!check(*tree, resolve, error)) {
    FUZZ_CHECK(!error.message.empty(), "check failed without a message");
    return 0;
  }

  std::string printed = print(*tree);
  Error again;
  std::unique_ptr<Node> reparsed = parse(printed, again);
  FUZZ_CHECK(reparsed, "print() of '%s' gives '%s', which does not parse: %s",
             source.c_str(), printed.c_str(), again.message.c_str());
  FUZZ_CHECK(check(*reparsed, resolve, again),
             "print() of '%s' gives '%s', which does not check: %s", source.c_str(),
             printed.c_str(), again.message.c_str());
  FUZZ_CHECK(print(*reparsed) == printed, "print() is not stable: '%s' -> '%s' -> '%s'",
             source.c_str(), printed.c_str(), print(*reparsed).c_str());
  FUZZ_CHECK(reparsed->type == tree->type, "reparsing '%s' changes its type",
             printed.c_str());

  emitAndVerify(*tree);
  return 0;
}
