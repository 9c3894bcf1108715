//===- SpecHash.cpp - the content hash bundles and caches are keyed by ----===//
//
// No canonical writer or SHA-256 of its own: a second one would have to print every
// double exactly as the runtime does, and nlohmann's dump() does not (Grisu2 is not
// always the shortest or the nearest of the shortest digits).
//
//===----------------------------------------------------------------------===//
#include "specs/SpecHash.h"

#include "Json.h"
#include "Sha256.h"

#include <nlohmann/json.hpp>

#include <stdexcept>

namespace attune {

namespace {

rt::Json toRuntime(const nlohmann::json &j, int depth) {
  using T = nlohmann::json::value_t;
  switch (j.type()) {
  case T::null:
  case T::discarded:
    return rt::Json(nullptr);
  case T::boolean:
    return rt::Json(j.get<bool>());
  case T::number_integer:
    return rt::Json(j.get<int64_t>());
  case T::number_unsigned:
    return rt::Json(j.get<uint64_t>());
  case T::number_float:
    return rt::Json(j.get<double>());
  case T::string:
    return rt::Json(j.get<std::string>());
  case T::binary:
    throw std::invalid_argument("a spec holds no binary values");
  case T::array:
  case T::object:
    break;
  }
  if (depth >= rt::kMaxJsonDepth)
    throw std::invalid_argument("the spec nests arrays and objects deeper than " +
                                std::to_string(rt::kMaxJsonDepth) + " levels");
  if (j.is_array()) {
    rt::Json out = rt::Json::array();
    for (const nlohmann::json &item : j)
      out.push_back(toRuntime(item, depth + 1));
    return out;
  }
  rt::Json out = rt::Json::object();
  for (auto it = j.begin(); it != j.end(); ++it) // nlohmann's keys are unique
    out.append(it.key(), toRuntime(it.value(), depth + 1));
  return out;
}

} // namespace

std::string specHash(const nlohmann::json &spec) {
  return rt::sha256Hex(toRuntime(spec, 0).canonical());
}

} // namespace attune
