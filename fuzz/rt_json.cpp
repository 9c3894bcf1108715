//===- rt_json.cpp - fuzz the runtime's JSON reader and writers ------------===//
//
// Input: any text (seeds: manifests, tuning databases, specs). Json::parse either
// throws JsonError or gives a document; anything else thrown is a finding.
// Invariants on a parsed document: dump(), pretty() and canonical() each parse back to
// an equal document, and canonical() is the same text whichever of them it came from.
//
//===----------------------------------------------------------------------===//
#include "FuzzSupport.h"

#include "Json.h"

#include <cstdint>
#include <string>

using attune::rt::Json;
using attune::rt::JsonError;

static Json reparse(const std::string &text, const char *what, const std::string &input) {
  try {
    return Json::parse(text, /*rejectDuplicateKeys=*/false);
  } catch (const JsonError &e) {
    FUZZ_CHECK(false, "%s of a parsed document does not parse (%s)\ninput: %s\n%s: %s", what,
               e.what(), input.c_str(), what, text.c_str());
  }
  return Json();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string text(reinterpret_cast<const char *>(data), size);
  Json doc;
  try {
    doc = Json::parse(text, /*rejectDuplicateKeys=*/size % 2 == 0);
  } catch (const JsonError &) {
    return 0;
  }
  std::string canonical = doc.canonical();
  for (auto [what, out] : {std::pair<const char *, std::string>{"dump()", doc.dump()},
                           {"pretty()", doc.pretty()},
                           {"canonical()", canonical}}) {
    Json back = reparse(out, what, text);
    FUZZ_CHECK(back == doc, "%s does not read back equal\ninput: %s\n%s: %s", what,
               text.c_str(), what, out.c_str());
    FUZZ_CHECK(back.canonical() == canonical,
               "canonical() changes through %s\ninput: %s\nfirst: %s\nthen: %s", what,
               text.c_str(), canonical.c_str(), back.canonical().c_str());
  }
  return 0;
}
