//===- rt_grid_expr.cpp - fuzz the manifest's grid and size expressions ----===//
//
// Input: the text of one expression (seeds: the grid and scratch expressions of
// bundle manifests). Expr::parse throws ExprError or gives an expression; eval then
// binds the size names to small, large and extreme values and must either return or
// throw ExprError (unbound name, division by zero, overflow): UBSan sees any signed
// overflow that slips through.
//
//===----------------------------------------------------------------------===//
#include "FuzzSupport.h"

#include "Expr.h"

#include <cstdint>
#include <limits>
#include <map>
#include <string>

using attune::rt::Expr;
using attune::rt::ExprError;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string text(reinterpret_cast<const char *>(data), size);
  Expr e;
  try {
    e = Expr::parse(text);
  } catch (const ExprError &) {
    return 0;
  }
  std::vector<std::string> names = e.names();
  const int64_t kValues[] = {0, 1, 3, 64, 4096, int64_t(1) << 31, int64_t(1) << 40,
                             std::numeric_limits<int64_t>::max(), -1};
  for (int64_t value : kValues) {
    std::map<std::string, int64_t> bound;
    for (const std::string &n : names)
      bound[n] = value;
    try {
      (void)e.eval(bound);
    } catch (const ExprError &) {
    }
  }
  // With one name left unbound, evaluation must say so rather than read garbage.
  if (!names.empty()) {
    std::map<std::string, int64_t> bound;
    for (size_t i = 1; i < names.size(); ++i)
      bound[names[i]] = 7;
    bool threw = false;
    try {
      (void)e.eval(bound);
    } catch (const ExprError &) {
      threw = true;
    }
    FUZZ_CHECK(threw, "'%s' evaluated with '%s' unbound", text.c_str(), names[0].c_str());
  }
  // The text is kept as given (messages quote it).
  FUZZ_CHECK(e.text() == text, "text() differs from the input");
  return 0;
}
