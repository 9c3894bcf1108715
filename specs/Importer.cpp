//===- Importer.cpp - JSON spec -> attn L1 IR -----------------------------===//
//
// Two steps: the top level (sizes, dtype, inputs, params, normaliser, rope,
// outputs) is read into SpecInfo; then the function and its attn.attention are
// built while the mask and score trees are read, each named pattern becoming its
// attn op (or lookups and arith for the data masks) and each "expr" its arith/math.
//
//===----------------------------------------------------------------------===//
#include "specs/Importer.h"

#include "Json.h" // the runtime's JSON reader (runtime/src)
#include "dialect/AttnOps.h"
#include "dialect/AttnSemantics.h"
#include "specs/Expr.h"
#include "specs/ExprEmitter.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Verifier.h"
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

using namespace mlir;
using json = nlohmann::json;

namespace attune {

//===----------------------------------------------------------------------===//
// Parsing JSON text
//===----------------------------------------------------------------------===//

namespace {
constexpr int64_t kMaxHeads = 4096;
constexpr int64_t kMaxHeadDim = 512;
constexpr int64_t kMaxPosition = int64_t(1) << 40; // positions, windows, counts
constexpr int64_t kMaxInputDim = int64_t(1) << 31;
// Elements of an input as far as its declared sizes go: the product of four dimensions
// of up to 2^31 would overflow every element or byte count computed from the type.
constexpr int64_t kMaxInputElements = int64_t(1) << 40;
// Masks nest at most as deep as a JSON document may (a tree handed to importSpec
// directly, not read from text, is held to the same limit).
constexpr int kMaxNesting = rt::kMaxJsonDepth;
constexpr size_t kMaxTokens = 65536;               // explicit token lists

std::string escapePointer(const std::string &key) {
  std::string out;
  for (char c : key) {
    if (c == '~')
      out += "~0";
    else if (c == '/')
      out += "~1";
    else
      out += c;
  }
  return out;
}

std::string child(const std::string &path, const std::string &key) {
  return path + "/" + escapePointer(key);
}
std::string child(const std::string &path, size_t index) {
  return path + "/" + std::to_string(index);
}

bool isIdentifier(const std::string &s) {
  if (s.empty() || s.size() > 64 ||
      !(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_'))
    return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_'))
      return false;
  return true;
}

const char *kindOf(const json &j) {
  switch (j.type()) {
  case json::value_t::null:
    return "null";
  case json::value_t::boolean:
    return "a boolean";
  case json::value_t::number_integer:
  case json::value_t::number_unsigned:
    return "an integer";
  case json::value_t::number_float:
    return "a number";
  case json::value_t::string:
    return "a string";
  case json::value_t::array:
    return "an array";
  case json::value_t::object:
    return "an object";
  default:
    return "a value";
  }
}

/// The runtime's value as nlohmann's: the same integers (int64, uint64) and doubles.
/// The reader bounds the depth (rt::kMaxJsonDepth), so the recursion is bounded too.
json fromRuntime(const rt::Json &j) {
  switch (j.kind()) {
  case rt::Json::Kind::Null:
    return nullptr;
  case rt::Json::Kind::Bool:
    return j.asBool();
  case rt::Json::Kind::Int:
    return j.asInt();
  case rt::Json::Kind::UInt:
    return j.asUInt();
  case rt::Json::Kind::Double:
    return j.asDouble();
  case rt::Json::Kind::String:
    return j.asString();
  case rt::Json::Kind::Array: {
    json out = json::array();
    for (const rt::Json &item : j.items())
      out.push_back(fromRuntime(item));
    return out;
  }
  case rt::Json::Kind::Object: {
    json out = json::object();
    for (const rt::JsonMember &m : j.members())
      out[m.key] = fromRuntime(m.value);
    return out;
  }
  }
  return nullptr;
}
} // namespace

bool parseSpecText(const std::string &text, json &out, SpecError &error) {
  // The runtime's reader, not nlohmann's: attnc and the runtime (attune-rt, the Python
  // package) must accept exactly the same documents and read the same numbers. It
  // refuses what nlohmann lets through: text after the document (nlohmann stops at a
  // NUL byte), duplicate keys, integers outside 64 bits (nlohmann reads them as
  // doubles), and nesting deeper than rt::kMaxJsonDepth.
  try {
    out = fromRuntime(rt::Json::parse(text, /*rejectDuplicateKeys=*/true));
  } catch (const rt::JsonError &e) {
    error = {"", std::string("not valid JSON: ") + e.what()};
    return false;
  }
  return true;
}

bool loadSpecFile(const std::string &path, json &out, SpecError &error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = {"", "cannot read spec file '" + path + "'"};
    return false;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  if (!parseSpecText(ss.str(), out, error)) {
    error.message = path + ": " + error.message;
    return false;
  }
  return true;
}

std::vector<double> alibiDefaultSlopes(int64_t heads) {
  auto powerOfTwoSlopes = [](int64_t n) {
    std::vector<double> s;
    for (int64_t h = 0; h < n; ++h)
      s.push_back(std::pow(2.0, -8.0 * double(h + 1) / double(n)));
    return s;
  };
  if (heads <= 0)
    return {};
  int64_t p = 1;
  while (p * 2 <= heads)
    p *= 2;
  std::vector<double> slopes = powerOfTwoSlopes(p);
  if (p == heads)
    return slopes;
  std::vector<double> extra = powerOfTwoSlopes(2 * p);
  for (size_t i = 0; i < extra.size() && int64_t(slopes.size()) < heads; i += 2)
    slopes.push_back(extra[i]);
  return slopes;
}

//===----------------------------------------------------------------------===//
// The importer
//===----------------------------------------------------------------------===//

namespace {

/// Thrown internally to unwind to importSpec with the first error; never escapes.
struct Abort {};

class Importer {
public:
  Importer(MLIRContext &ctx, const json &root, SpecInfo &info, SpecError &error,
           const ImportOptions &options)
      : ctx(ctx), root(root), info(info), error(error), options(options),
        builder(&ctx) {}

  OwningOpRef<ModuleOp> run() {
    try {
      readTopLevel();
      return build();
    } catch (const Abort &) {
      return nullptr;
    }
  }

private:
  //===--------------------------------------------------------------------===//
  // Typed access with JSON paths
  //===--------------------------------------------------------------------===//

  [[noreturn]] void fail(const std::string &path, const std::string &message) {
    if (error.message.empty())
      error = {path, message};
    throw Abort();
  }

  const json &object(const json &j, const std::string &path) {
    if (!j.is_object())
      fail(path, std::string("must be an object, got ") + kindOf(j));
    return j;
  }

  void checkKeys(const json &obj, const std::string &path,
                 std::initializer_list<const char *> allowed) {
    for (auto it = obj.begin(); it != obj.end(); ++it) {
      bool ok = false;
      for (const char *a : allowed)
        ok |= it.key() == a;
      if (!ok) {
        std::string list;
        for (const char *a : allowed)
          list += (list.empty() ? "" : ", ") + std::string(a);
        fail(child(path, it.key()), "unknown key '" + it.key() + "'" +
                                        (list.empty() ? std::string(" (this takes no parameters)")
                                                      : " (expected one of: " + list + ")"));
      }
    }
  }

  int64_t integer(const json &j, const std::string &path, int64_t lo, int64_t hi) {
    int64_t v;
    // is_number_unsigned first: nlohmann's is_number_integer() is true for uint64 as
    // well, and get<int64_t>() of one above INT64_MAX wraps to a negative number.
    if (j.is_number_unsigned() && j.get<uint64_t>() > uint64_t(INT64_MAX)) {
      fail(path, "must be at most " + std::to_string(hi) + ", got " + j.dump());
    } else if (j.is_number_integer()) {
      v = j.get<int64_t>();
    } else {
      fail(path, std::string("must be an integer, got ") + kindOf(j) +
                     (j.is_number() ? " (" + j.dump() + ")" : ""));
    }
    if (v < lo)
      fail(path, "must be >= " + std::to_string(lo) + ", got " + std::to_string(v));
    if (v > hi)
      fail(path, "must be at most " + std::to_string(hi) + ", got " + std::to_string(v));
    return v;
  }

  double number(const json &j, const std::string &path) {
    if (!j.is_number())
      fail(path, std::string("must be a number, got ") + kindOf(j));
    double v = j.get<double>();
    if (!std::isfinite(v))
      fail(path, "must be finite");
    return v;
  }

  double positive(const json &j, const std::string &path) {
    double v = number(j, path);
    if (!(v > 0.0))
      fail(path, "must be > 0, got " + j.dump());
    return v;
  }

  std::string string(const json &j, const std::string &path) {
    if (!j.is_string())
      fail(path, std::string("must be a string, got ") + kindOf(j));
    return j.get<std::string>();
  }

  std::string oneOf(const json &j, const std::string &path,
                    std::initializer_list<const char *> values) {
    std::string s = string(j, path);
    std::string list;
    for (const char *v : values) {
      if (s == v)
        return s;
      list += (list.empty() ? "'" : ", '") + std::string(v) + "'";
    }
    fail(path, "must be one of " + list + ", got '" + s + "'");
  }

  const json *find(const json &obj, const char *key) {
    auto it = obj.find(key);
    return it == obj.end() ? nullptr : &*it;
  }

  const json &require(const json &obj, const std::string &path, const char *key) {
    const json *j = find(obj, key);
    if (!j)
      fail(path, std::string("missing required key '") + key + "'");
    return *j;
  }

  int64_t intKey(const json &obj, const std::string &path, const char *key,
                 std::optional<int64_t> dflt, int64_t lo, int64_t hi) {
    const json *j = find(obj, key);
    if (!j) {
      if (!dflt)
        fail(path, std::string("missing required key '") + key + "'");
      return *dflt;
    }
    return integer(*j, child(path, key), lo, hi);
  }

  //===--------------------------------------------------------------------===//
  // Top level
  //===--------------------------------------------------------------------===//

  void readTopLevel() {
    object(root, "");
    checkKeys(root, "",
              {"$schema", "name", "description", "heads_q", "heads_kv", "head_dim",
               "head_dim_v", "dtype", "scale", "align", "q_offset", "kv_offset",
               "storage", "inputs", "params", "mask", "score", "normalizer", "rope", "outputs"});
    if (const json *s = find(root, "$schema"))
      string(*s, "/$schema");
    info.name = find(root, "name") ? string(root["name"], "/name") : "attention";
    if (info.name.empty() || info.name.size() > 128)
      fail("/name", "must be 1 to 128 characters");
    if (const json *d = find(root, "description"))
      string(*d, "/description");
    info.headsQ = intKey(root, "", "heads_q", std::nullopt, 1, kMaxHeads);
    info.headsKv = intKey(root, "", "heads_kv", info.headsQ, 1, kMaxHeads);
    if (info.headsQ % info.headsKv != 0)
      fail("/heads_kv", "heads_q (" + std::to_string(info.headsQ) +
                            ") must be a multiple of heads_kv (" +
                            std::to_string(info.headsKv) + ")");
    info.headDim = intKey(root, "", "head_dim", std::nullopt, 1, kMaxHeadDim);
    info.headDimV = intKey(root, "", "head_dim_v", info.headDim, 1, kMaxHeadDim);
    info.dtype = find(root, "dtype") ? oneOf(root["dtype"], "/dtype", {"bf16", "fp16", "f32"})
                                     : "bf16";
    info.scale = 1.0 / std::sqrt(double(info.headDim));
    if (const json *s = find(root, "scale"))
      info.scale = number(*s, "/scale");
    info.align = find(root, "align")
                     ? oneOf(root["align"], "/align", {"bottom_right", "top_left"})
                     : "";
    if (const json *o = find(root, "q_offset"))
      info.qOffset = integer(*o, "/q_offset", -kMaxPosition, kMaxPosition);
    if (const json *o = find(root, "kv_offset"))
      info.kvOffset = integer(*o, "/kv_offset", -kMaxPosition, kMaxPosition);
    readStorage();
    readInputs();
    readParams();
    readNormalizer();
    readOutputs();
    // `causal.align` may also set the alignment; found while reading the mask.
    if (const json *m = find(root, "mask"))
      scanAlign(*m, "/mask", 0);
    if (info.align.empty())
      info.align = "bottom_right";
  }

  void readInputs() {
    const json *inputs = find(root, "inputs");
    if (!inputs)
      return;
    object(*inputs, "/inputs");
    if (inputs->size() > 64)
      fail("/inputs", "at most 64 extra inputs");
    for (auto it = inputs->begin(); it != inputs->end(); ++it) {
      std::string path = child("/inputs", it.key());
      if (!isIdentifier(it.key()))
        fail(path, "input name '" + it.key() +
                       "' must be an identifier (letters, digits, _; at most 64)");
      if (isReservedName(it.key()))
        fail(path, "input name '" + it.key() + "' is reserved (a variable or function)");
      const json &decl = object(it.value(), path);
      checkKeys(decl, path, {"dtype", "shape", "sorted"});
      InputDecl d;
      d.name = it.key();
      d.dtype = oneOf(require(decl, path, "dtype"), child(path, "dtype"), {"i32", "f32"});
      const json &shape = require(decl, path, "shape");
      std::string spath = child(path, "shape");
      if (!shape.is_array() || shape.empty() || shape.size() > 4)
        fail(spath, "must be an array of 1 to 4 dimensions");
      for (size_t i = 0; i < shape.size(); ++i) {
        const json &dim = shape[i];
        if (dim.is_string()) {
          std::string sym = dim.get<std::string>();
          if (!isIdentifier(sym))
            fail(child(spath, i), "a dimension symbol must be an identifier, got '" +
                                      sym + "'");
          d.shape.push_back(sym);
        } else {
          d.shape.push_back(integer(dim, child(spath, i), 1, kMaxInputDim));
        }
      }
      // The sizes known now (numbers, and Hq, Hkv, D, Dv), multiplied without overflow:
      // each factor is at most 2^31 and the product so far at most 2^40.
      int64_t elements = 1;
      for (const Dim &dim : d.shape) {
        int64_t n = staticDim(dim);
        if (n == ShapedType::kDynamic)
          continue;
        if (elements > kMaxInputElements / n)
          fail(spath, "declares more than 2^40 elements (" + shapeText(d.shape) + ")");
        elements *= n;
      }
      if (const json *sorted = find(decl, "sorted"))
        d.sortedDim = readSorted(*sorted, child(path, "sorted"), d);
      info.inputs.push_back(std::move(d));
    }
  }

  /// "sorted": a promise that the ids are non-decreasing along the input's sequence
  /// dimension (packed documents), which block analysis turns into key ranges found
  /// by binary search. Returns that dimension, or -1 for false.
  int64_t readSorted(const json &v, const std::string &path, const InputDecl &d) {
    if (!v.is_boolean())
      fail(path, "must be a boolean");
    if (!v.get<bool>())
      return -1;
    if (d.dtype != "i32")
      fail(path, "only integer (i32) inputs can be sorted, '" + d.name + "' is " + d.dtype);
    int64_t dim = -1;
    for (size_t i = 0; i < d.shape.size(); ++i) {
      auto *sym = std::get_if<std::string>(&d.shape[i]);
      if (!sym || (*sym != "Sq" && *sym != "Skv"))
        continue;
      if (dim >= 0)
        fail(path, "'" + d.name + "' " + shapeText(d.shape) +
                       " has two sequence dimensions; sorted is along exactly one");
      dim = static_cast<int64_t>(i);
    }
    if (dim < 0)
      fail(path, "'" + d.name + "' " + shapeText(d.shape) +
                     " has no sequence dimension (Sq or Skv) to be sorted along");
    return dim;
  }

  static std::string dimText(const Dim &dim) {
    if (auto *n = std::get_if<int64_t>(&dim))
      return std::to_string(*n);
    return std::get<std::string>(dim);
  }

  static std::string shapeText(const std::vector<Dim> &shape) {
    std::string out = "[";
    for (size_t i = 0; i < shape.size(); ++i)
      out += (i ? ", " : "") + dimText(shape[i]);
    return out + "]";
  }

  bool isReservedName(const std::string &n) {
    static const std::set<std::string> kReserved = {
        "b",    "h",    "q",     "kv",   "q_idx", "kv_idx",  "seq_q",
        "seq_kv", "s",  "true",  "false", "min",  "max",     "abs",
        "select", "exp", "log",  "log2", "sqrt",  "tanh",    "sigmoid",
        "floor", "ceil", "where"};
    return kReserved.count(n) > 0;
  }

  void readParams() {
    const json *params = find(root, "params");
    if (!params)
      return;
    object(*params, "/params");
    for (auto it = params->begin(); it != params->end(); ++it) {
      std::string path = child("/params", it.key());
      if (!isIdentifier(it.key()))
        fail(path, "parameter name '" + it.key() + "' must be an identifier");
      if (isReservedName(it.key()))
        fail(path, "parameter name '" + it.key() + "' is reserved");
      for (const InputDecl &in : info.inputs)
        if (in.name == it.key())
          fail(path, "'" + it.key() + "' is already an input");
      expr::NameInfo n;
      n.kind = expr::NameInfo::Kind::Param;
      const json &v = it.value();
      if (v.is_boolean()) {
        n.type = expr::Type::Bool;
        n.intValue = v.get<bool>();
      } else if (v.is_number_integer()) {
        n.type = expr::Type::Int;
        n.intValue = integer(v, path, std::numeric_limits<int64_t>::min(),
                             std::numeric_limits<int64_t>::max());
      } else if (v.is_number()) {
        n.type = expr::Type::Float;
        n.floatValue = number(v, path);
      } else {
        fail(path, std::string("a parameter must be a number or a boolean, got ") +
                       kindOf(v));
      }
      params_[it.key()] = n;
    }
  }

  /// `"storage": {"q": ..., "kv": ...}`: how a call's buffers hold the batch. Every
  /// combination is a valid spec; the back ends that do not build one say so when
  /// compiling.
  void readStorage() {
    const json *st = find(root, "storage");
    if (!st)
      return;
    object(*st, "/storage");
    checkKeys(*st, "/storage", {"q", "kv"});
    if (const json *q = find(*st, "q"))
      info.qStorage = oneOf(*q, "/storage/q", {"padded", "ragged"});
    if (const json *kv = find(*st, "kv"))
      info.kvStorage = oneOf(*kv, "/storage/kv", {"padded", "ragged", "paged"});
  }

  void readNormalizer() {
    info.normalizer = "softmax";
    const json *n = find(root, "normalizer");
    if (!n)
      return;
    if (n->is_string()) {
      info.normalizer = oneOf(*n, "/normalizer", {"softmax", "sigmoid", "relu"});
      return;
    }
    object(*n, "/normalizer");
    if (n->size() != 1)
      fail("/normalizer", "must be a name or an object with one key (softmax, sigmoid, relu)");
    auto it = n->begin();
    std::string path = child("/normalizer", it.key());
    info.normalizer = it.key();
    const json &params = object(it.value(), path);
    if (it.key() == "sigmoid") {
      checkKeys(params, path, {"beta"});
      if (const json *beta = find(params, "beta"))
        sigmoidBeta = number(*beta, child(path, "beta"));
    } else if (it.key() == "softmax" || it.key() == "relu") {
      checkKeys(params, path, {});
    } else {
      fail(path, "unknown normalizer '" + it.key() + "' (expected softmax, sigmoid or relu)");
    }
  }

  void readOutputs() {
    const json *outs = find(root, "outputs");
    if (!outs)
      return;
    if (!outs->is_array() || outs->empty())
      fail("/outputs", "must be a non-empty array of \"o\" and \"lse\"");
    bool o = false;
    for (size_t i = 0; i < outs->size(); ++i) {
      std::string v = oneOf((*outs)[i], child("/outputs", i), {"o", "lse"});
      bool &flag = v == "o" ? o : info.lse;
      if (flag)
        fail(child("/outputs", i), "'" + v + "' is listed twice");
      flag = true;
    }
    if (!o)
      fail("/outputs", "must contain \"o\"");
    if (info.lse && info.normalizer != "softmax")
      fail("/outputs", "lse is only defined for the softmax normalizer, not " +
                           info.normalizer);
  }

  /// Finds `align` given inside causal masks; all alignments in a spec must agree.
  void scanAlign(const json &node, const std::string &path, int depth) {
    if (depth > kMaxNesting || !node.is_object() || node.size() != 1)
      return;
    auto it = node.begin();
    std::string p = child(path, it.key());
    if (it.key() == "causal" && it.value().is_object()) {
      if (const json *a = find(it.value(), "align")) {
        std::string align = oneOf(*a, child(p, "align"), {"bottom_right", "top_left"});
        if (!info.align.empty() && info.align != align)
          fail(child(p, "align"), "conflicts with the spec's alignment '" + info.align +
                                      "' (positions are shared by the whole spec)");
        info.align = align;
      }
    } else if ((it.key() == "all" || it.key() == "any") && it.value().is_array()) {
      for (size_t i = 0; i < it.value().size(); ++i)
        scanAlign(it.value()[i], child(p, i), depth + 1);
    } else if (it.key() == "not") {
      scanAlign(it.value(), p, depth + 1);
    }
  }

  //===--------------------------------------------------------------------===//
  // Building the function
  //===--------------------------------------------------------------------===//

  /// The op's storage attribute: absent for padded (today's behaviour).
  attn::StorageAttr storageAttr(const std::string &s) {
    if (s == "padded")
      return {};
    return attn::StorageAttr::get(&ctx, s == "ragged" ? attn::Storage::ragged
                                                      : attn::Storage::paged);
  }

  Type elementType() {
    std::string d = options.dtypeOverride.value_or(info.dtype);
    if (d == "bf16")
      return builder.getBF16Type();
    if (d == "fp16")
      return builder.getF16Type();
    return builder.getF32Type();
  }

  int64_t staticDim(const Dim &dim) {
    if (auto *i = std::get_if<int64_t>(&dim))
      return *i;
    const std::string &s = std::get<std::string>(dim);
    if (s == "Hq")
      return info.headsQ;
    if (s == "Hkv")
      return info.headsKv;
    if (s == "D")
      return info.headDim;
    if (s == "Dv")
      return info.headDimV;
    return ShapedType::kDynamic;
  }

  RankedTensorType inputType(const InputDecl &d) {
    SmallVector<int64_t> shape;
    for (const Dim &dim : d.shape)
      shape.push_back(staticDim(dim));
    Type elt = d.dtype == "i32" ? Type(builder.getI32Type()) : builder.getF32Type();
    return RankedTensorType::get(shape, elt);
  }

  /// The attention's sorted_dims: per input its sorted dimension or -1; absent when
  /// no input is sorted (the IR of unsorted specs is unchanged).
  DenseI64ArrayAttr sortedDims() {
    SmallVector<int64_t> dims;
    bool any = false;
    for (const InputDecl &d : info.inputs) {
      dims.push_back(d.sortedDim);
      any = any || d.sortedDim >= 0;
    }
    return any ? builder.getDenseI64ArrayAttr(dims) : DenseI64ArrayAttr();
  }

  std::string functionName() {
    std::string out;
    for (char c : info.name)
      out += (std::isalnum(static_cast<unsigned char>(c)) || c == '_') ? c : '_';
    if (out.empty() || std::isdigit(static_cast<unsigned char>(out[0])))
      out = "attn_" + out;
    return out;
  }

  OwningOpRef<ModuleOp> build() {
    Location loc = FileLineColLoc::get(&ctx, info.name, 1, 1);
    OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
    builder.setInsertionPointToEnd(module->getBody());

    Type elt = elementType();
    int64_t dyn = ShapedType::kDynamic;
    auto qType = RankedTensorType::get({dyn, info.headsQ, dyn, info.headDim}, elt);
    auto kType = RankedTensorType::get({dyn, info.headsKv, dyn, info.headDim}, elt);
    auto vType = RankedTensorType::get({dyn, info.headsKv, dyn, info.headDimV}, elt);
    auto oType = RankedTensorType::get({dyn, info.headsQ, dyn, info.headDimV}, elt);
    auto lseType = RankedTensorType::get({dyn, info.headsQ, dyn}, builder.getF32Type());

    SmallVector<Type> argTypes{qType, kType, vType};
    for (const InputDecl &d : info.inputs)
      argTypes.push_back(inputType(d));
    argTypes.push_back(builder.getI64Type());
    argTypes.push_back(builder.getI64Type());
    SmallVector<Type> resultTypes{oType};
    if (info.lse)
      resultTypes.push_back(lseType);

    info.functionName = functionName();
    auto func = func::FuncOp::create(builder, loc, info.functionName,
                                     builder.getFunctionType(argTypes, resultTypes));
    Block *entry = func.addEntryBlock();
    builder.setInsertionPointToEnd(entry);
    size_t n = info.inputs.size();
    Value q = entry->getArgument(0), k = entry->getArgument(1), v = entry->getArgument(2);
    Value qOffset = entry->getArgument(3 + n), kvOffset = entry->getArgument(4 + n);
    for (size_t i = 0; i < n; ++i)
      inputValues[info.inputs[i].name] = entry->getArgument(3 + i);

    if (const json *rope = find(root, "rope")) {
      info.rope = true;
      q = emitRope(*rope, q, qOffset, loc);
      k = emitRope(*rope, k, kvOffset, loc);
    }

    SmallVector<Attribute> names, dims;
    for (const InputDecl &d : info.inputs) {
      names.push_back(builder.getStringAttr(d.name));
      SmallVector<Attribute> ds;
      for (const Dim &dim : d.shape) {
        if (auto *i = std::get_if<int64_t>(&dim))
          ds.push_back(builder.getI64IntegerAttr(*i));
        else
          ds.push_back(builder.getStringAttr(std::get<std::string>(dim)));
      }
      dims.push_back(builder.getArrayAttr(ds));
    }
    SmallVector<Value> inputs;
    for (size_t i = 0; i < n; ++i)
      inputs.push_back(entry->getArgument(3 + i));

    attn::Normalizer normalizer = info.normalizer == "sigmoid" ? attn::Normalizer::sigmoid
                                  : info.normalizer == "relu"  ? attn::Normalizer::relu
                                                               : attn::Normalizer::softmax;
    auto op = attn::AttentionOp::create(
        builder, loc, resultTypes, q, k, v, inputs, qOffset, kvOffset,
        builder.getF64FloatAttr(info.scale),
        attn::NormalizerAttr::get(&ctx, normalizer),
        sigmoidBeta ? builder.getF64FloatAttr(*sigmoidBeta) : FloatAttr(),
        attn::AlignAttr::get(&ctx, info.align == "top_left" ? attn::Align::top_left
                                                            : attn::Align::bottom_right),
        info.qOffset ? builder.getI64IntegerAttr(*info.qOffset) : IntegerAttr(),
        info.kvOffset ? builder.getI64IntegerAttr(*info.kvOffset) : IntegerAttr(),
        builder.getArrayAttr(names), builder.getArrayAttr(dims),
        /*q_rope=*/attn::RopeAttr(), /*k_rope=*/attn::RopeAttr(),
        /*softmax_base2=*/UnitAttr(), /*kv_list_input=*/IntegerAttr(),
        /*kv_list_block=*/DenseI64ArrayAttr(),
        storageAttr(info.qStorage), storageAttr(info.kvStorage), sortedDims());
    attention = op;
    buildMask(op, loc);
    buildScore(op, loc);
    builder.setInsertionPointToEnd(entry);
    func::ReturnOp::create(builder, loc, op->getResults());

    if (failed(verify(*module))) {
      // A verifier failure here is an importer bug or a case the checks above
      // missed; report it rather than hand out invalid IR.
      fail("", "internal error: the generated IR does not verify");
    }
    return module;
  }

  Value emitRope(const json &rope, Value x, Value offset, Location loc) {
    const std::string path = "/rope";
    object(rope, path);
    checkKeys(rope, path, {"theta", "style", "rotary_dim", "scaling"});
    double theta = 10000.0;
    if (const json *t = find(rope, "theta")) {
      theta = number(*t, child(path, "theta"));
      if (!(theta > 1.0))
        fail(child(path, "theta"), "must be > 1, got " + t->dump());
    }
    std::string style = find(rope, "style")
                            ? oneOf(rope["style"], child(path, "style"), {"half", "interleaved"})
                            : "half";
    int64_t rotary = intKey(rope, path, "rotary_dim", info.headDim, 2, info.headDim);
    if (rotary % 2 != 0)
      fail(child(path, "rotary_dim"), "must be even, got " + std::to_string(rotary));
    attn::RopeScaling scaling = attn::RopeScaling::none;
    double factor = 1.0, betaFast = 32.0, betaSlow = 1.0, mscale = 1.0;
    int64_t original = 0;
    if (const json *s = find(rope, "scaling")) {
      std::string spath = child(path, "scaling");
      object(*s, spath);
      if (s->size() != 1)
        fail(spath, "must have exactly one key: linear, ntk or yarn");
      auto it = s->begin();
      std::string kpath = child(spath, it.key());
      if (it.key() == "linear") {
        scaling = attn::RopeScaling::linear;
        factor = positive(it.value(), kpath);
      } else if (it.key() == "ntk") {
        scaling = attn::RopeScaling::ntk;
        factor = positive(it.value(), kpath);
        if (rotary <= 2)
          fail(kpath, "ntk scaling needs rotary_dim > 2");
      } else if (it.key() == "yarn") {
        scaling = attn::RopeScaling::yarn;
        const json &y = object(it.value(), kpath);
        checkKeys(y, kpath,
                  {"factor", "original_max_position", "beta_fast", "beta_slow", "mscale"});
        factor = positive(require(y, kpath, "factor"), child(kpath, "factor"));
        original = intKey(y, kpath, "original_max_position", std::nullopt, 1, kMaxPosition);
        if (const json *bf = find(y, "beta_fast"))
          betaFast = number(*bf, child(kpath, "beta_fast"));
        if (const json *bs = find(y, "beta_slow"))
          betaSlow = number(*bs, child(kpath, "beta_slow"));
        if (!(betaFast > betaSlow))
          fail(kpath, "beta_fast must be greater than beta_slow");
        mscale = factor > 1.0 ? 0.1 * std::log(factor) + 1.0 : 1.0;
        if (const json *m = find(y, "mscale"))
          mscale = positive(*m, child(kpath, "mscale"));
      } else {
        fail(kpath, "unknown scaling '" + it.key() + "' (expected linear, ntk or yarn)");
      }
    }
    return attn::RopeOp::create(
        builder, loc, x, offset, builder.getF64FloatAttr(theta),
        attn::RopeStyleAttr::get(&ctx, style == "half" ? attn::RopeStyle::half
                                                       : attn::RopeStyle::interleaved),
        builder.getI64IntegerAttr(rotary), attn::RopeScalingAttr::get(&ctx, scaling),
        builder.getF64FloatAttr(factor), builder.getI64IntegerAttr(original),
        builder.getF64FloatAttr(betaFast), builder.getF64FloatAttr(betaSlow),
        builder.getF64FloatAttr(mscale));
  }

  //===--------------------------------------------------------------------===//
  // Regions
  //===--------------------------------------------------------------------===//

  /// The block arguments of a mask or score region, by name.
  struct RegionVars {
    Value s, b, h, qIdx, kvIdx, q, kv, seqQ, seqKv;
    Value get(const std::string &name) const {
      if (name == "s")
        return s;
      if (name == "b")
        return b;
      if (name == "h")
        return h;
      if (name == "q_idx")
        return qIdx;
      if (name == "kv_idx")
        return kvIdx;
      if (name == "q")
        return q;
      if (name == "kv")
        return kv;
      if (name == "seq_q")
        return seqQ;
      return seqKv;
    }
  };

  RegionVars makeRegionBlock(Region &region, bool withScore, Location loc) {
    Block *block = new Block();
    region.push_back(block);
    RegionVars vars;
    if (withScore)
      vars.s = block->addArgument(builder.getF32Type(), loc);
    Value *slots[] = {&vars.b, &vars.h, &vars.qIdx, &vars.kvIdx,
                      &vars.q, &vars.kv, &vars.seqQ, &vars.seqKv};
    for (Value *slot : slots)
      *slot = block->addArgument(builder.getI64Type(), loc);
    builder.setInsertionPointToEnd(block);
    return vars;
  }

  void buildMask(attn::AttentionOp op, Location loc) {
    RegionVars vars = makeRegionBlock(op.getMask(), /*withScore=*/false, loc);
    SmallVector<Value> inBounds;
    Value allowed;
    if (const json *m = find(root, "mask")) {
      allowed = emitMask(*m, "/mask", vars, inBounds, 0, info.maskSummary);
    } else {
      allowed = constBool(true);
      info.maskSummary = "full";
    }
    // A read outside a tensor anywhere in the mask masks the pair.
    for (Value ok : inBounds)
      allowed = arith::AndIOp::create(builder, loc, allowed, ok);
    attn::YieldOp::create(builder, loc, ValueRange{allowed});
  }

  void buildScore(attn::AttentionOp op, Location loc) {
    RegionVars vars = makeRegionBlock(op.getScore(), /*withScore=*/true, loc);
    Value s = vars.s;
    const json *score = find(root, "score");
    if (score) {
      if (!score->is_array())
        fail("/score", std::string("must be an array of score transforms, got ") +
                           kindOf(*score));
      if (score->size() > 64)
        fail("/score", "at most 64 score transforms");
      for (size_t i = 0; i < score->size(); ++i) {
        SmallVector<Value> inBounds;
        std::string summary;
        RegionVars current = vars;
        current.s = s;
        Value next = emitScore((*score)[i], child("/score", i), current, inBounds, summary);
        // A read outside a tensor leaves this transform's input unchanged.
        if (!inBounds.empty()) {
          Value ok = inBounds.front();
          for (size_t j = 1; j < inBounds.size(); ++j)
            ok = arith::AndIOp::create(builder, loc, ok, inBounds[j]);
          next = arith::SelectOp::create(builder, loc, ok, next, s);
        }
        s = next;
        info.scoreSummary += (info.scoreSummary.empty() ? "" : ", then ") + summary;
      }
    }
    if (info.scoreSummary.empty())
      info.scoreSummary = "identity";
    attn::YieldOp::create(builder, loc, ValueRange{s});
  }

  Value constBool(bool v) {
    return arith::ConstantIntOp::create(builder, builder.getUnknownLoc(), v ? 1 : 0, 1);
  }
  Value constI64(int64_t v) {
    return arith::ConstantIntOp::create(builder, builder.getUnknownLoc(), v, 64);
  }

  /// A named-pattern parameter that names a declared input; checks dtype and rank.
  Value tensorParam(const json &params, const std::string &path, const char *key,
                    const char *dtype, size_t rank, const char *shapeHint) {
    std::string p = child(path, key);
    std::string name = string(require(params, path, key), p);
    for (const InputDecl &d : info.inputs) {
      if (d.name != name)
        continue;
      if (d.dtype != dtype)
        fail(p, "input '" + name + "' must be " + dtype + ", is " + d.dtype);
      if (d.shape.size() != rank)
        fail(p, "input '" + name + "' must have rank " + std::to_string(rank) + " " +
                    shapeHint + ", has rank " + std::to_string(d.shape.size()));
      return inputValues.at(name);
    }
    std::string declared;
    for (const InputDecl &d : info.inputs)
      declared += (declared.empty() ? "" : ", ") + d.name;
    fail(p, "'" + name + "' is not a declared input" +
                (declared.empty() ? std::string(" (the spec declares no \"inputs\")")
                                  : " (declared: " + declared + ")"));
  }

  const InputDecl &declOf(Value tensor) {
    for (const InputDecl &d : info.inputs)
      if (inputValues.at(d.name) == tensor)
        return d;
    llvm_unreachable("tensor is not an input");
  }

  Value lookup(Value tensor, ArrayRef<Value> indices, SmallVectorImpl<Value> &inBounds) {
    Location loc = builder.getUnknownLoc();
    auto t = cast<RankedTensorType>(tensor.getType());
    Type result = t.getElementType().isF32() ? Type(builder.getF32Type()) : builder.getI64Type();
    auto op = attn::LookupOp::create(builder, loc, result, builder.getI1Type(), tensor,
                                     indices);
    inBounds.push_back(op.getInBounds());
    return op.getValue();
  }

  /// The single key of a mask or score node, with its path.
  std::pair<std::string, const json *> nodeKey(const json &node, const std::string &path,
                                               const char *what) {
    if (!node.is_object() || node.size() != 1)
      fail(path, std::string("a ") + what +
                     " is an object with exactly one key, the pattern's name (e.g. " +
                     (std::string(what) == "mask" ? "{\"causal\": {}}" : "{\"softcap\": {\"cap\": 30.0}}") +
                     "), got " + (node.is_object() ? std::to_string(node.size()) + " keys" : kindOf(node)));
    auto it = node.begin();
    return {it.key(), &it.value()};
  }

  static std::string fmt(double v) {
    std::ostringstream os;
    os.precision(6);
    os << v;
    return os.str();
  }

  Value emitMask(const json &node, const std::string &path, const RegionVars &vars,
                 SmallVectorImpl<Value> &inBounds, int depth, std::string &summary) {
    if (depth > kMaxNesting)
      fail(path, "masks nested deeper than " + std::to_string(kMaxNesting) + " levels");
    auto [key, value] = nodeKey(node, path, "mask");
    std::string p = child(path, key);
    Location loc = FileLineColLoc::get(&ctx, p, 1, 1);
    const json &v = *value;

    if (key == "all" || key == "any") {
      if (!v.is_array() || v.empty())
        fail(p, "must be a non-empty array of masks");
      Value acc;
      summary = key + "[";
      for (size_t i = 0; i < v.size(); ++i) {
        std::string sub;
        Value m = emitMask(v[i], child(p, i), vars, inBounds, depth + 1, sub);
        summary += (i ? ", " : "") + sub;
        acc = !acc ? m
                   : key == "all" ? Value(arith::AndIOp::create(builder, loc, acc, m))
                                  : Value(arith::OrIOp::create(builder, loc, acc, m));
      }
      summary += "]";
      return acc;
    }
    if (key == "not") {
      std::string sub;
      Value m = emitMask(v, p, vars, inBounds, depth + 1, sub);
      summary = "not[" + sub + "]";
      return arith::XOrIOp::create(builder, loc, m, constBool(true));
    }
    if (key == "expr") {
      std::string src = string(v, p);
      auto tree = parseChecked(src, p, /*score=*/false);
      if (tree->type != expr::Type::Bool)
        fail(p, "column " + std::to_string(tree->column) +
                    ": a mask expression must be boolean, this one is " +
                    (tree->type == expr::Type::Int ? "an integer" : "a float") +
                    " (compare it, e.g. q - kv < 8)");
      summary = "expr(" + expr::print(*tree) + ")";
      return emitExpr(*tree, vars, inBounds, loc);
    }

    const json &params = object(v, p);
    if (key == "full") {
      checkKeys(params, p, {});
      summary = "full";
      return constBool(true);
    }
    if (key == "causal") {
      checkKeys(params, p, {"align"});
      summary = "causal";
      return attn::CausalOp::create(builder, loc, vars.q, vars.kv);
    }
    if (key == "sliding_window" || key == "dilated_window") {
      bool dilated = key == "dilated_window";
      if (dilated)
        checkKeys(params, p, {"left", "right", "dilation"});
      else
        checkKeys(params, p, {"left", "right"});
      int64_t left = intKey(params, p, "left", std::nullopt, -1, kMaxPosition);
      int64_t right = intKey(params, p, "right", 0, -1, kMaxPosition);
      summary = key + "(left=" + std::to_string(left) + ", right=" + std::to_string(right);
      if (!dilated) {
        summary += ")";
        return attn::SlidingWindowOp::create(builder, loc, vars.q, vars.kv, left, right);
      }
      int64_t dilation = intKey(params, p, "dilation", std::nullopt, 1, kMaxPosition);
      summary += ", dilation=" + std::to_string(dilation) + ")";
      return attn::DilatedWindowOp::create(builder, loc, vars.q, vars.kv, left, right,
                                           dilation);
    }
    if (key == "sinks") {
      checkKeys(params, p, {"count"});
      int64_t count = intKey(params, p, "count", std::nullopt, 0, kMaxPosition);
      summary = "sinks(count=" + std::to_string(count) + ")";
      return attn::SinksOp::create(builder, loc, vars.kv, count);
    }
    if (key == "global_tokens") {
      checkKeys(params, p, {"count", "tokens"});
      const json *count = find(params, "count"), *tokens = find(params, "tokens");
      if ((count != nullptr) == (tokens != nullptr))
        fail(p, "needs exactly one of 'count' and 'tokens'");
      if (count) {
        int64_t c = integer(*count, child(p, "count"), 0, kMaxPosition);
        summary = "global_tokens(count=" + std::to_string(c) + ")";
        return attn::GlobalTokensOp::create(builder, loc, vars.q, vars.kv,
                                            builder.getI64IntegerAttr(c),
                                            DenseI64ArrayAttr());
      }
      std::string tp = child(p, "tokens");
      if (!tokens->is_array())
        fail(tp, "must be an array of positions");
      if (tokens->size() > kMaxTokens)
        fail(tp, "at most " + std::to_string(kMaxTokens) + " tokens");
      SmallVector<int64_t> list;
      for (size_t i = 0; i < tokens->size(); ++i)
        list.push_back(integer((*tokens)[i], child(tp, i), -kMaxPosition, kMaxPosition));
      summary = "global_tokens(" + std::to_string(list.size()) + " listed)";
      return attn::GlobalTokensOp::create(builder, loc, vars.q, vars.kv, IntegerAttr(),
                                          builder.getDenseI64ArrayAttr(list));
    }
    if (key == "prefix_lm") {
      checkKeys(params, p, {"prefix"});
      const json &prefix = require(params, p, "prefix");
      Value pv;
      if (prefix.is_string()) {
        Value t = tensorParam(params, p, "prefix", "i32", 1, "[B]");
        pv = lookup(t, {vars.b}, inBounds);
        summary = "prefix_lm(prefix=" + prefix.get<std::string>() + "[b])";
      } else {
        int64_t n = integer(prefix, child(p, "prefix"), 0, kMaxPosition);
        pv = constI64(n);
        summary = "prefix_lm(prefix=" + std::to_string(n) + ")";
      }
      return attn::PrefixLmOp::create(builder, loc, vars.q, vars.kv, pv);
    }
    if (key == "document") {
      checkKeys(params, p, {"q_ids", "kv_ids"});
      Value qIds = tensorParam(params, p, "q_ids", "i32", 2, "[B, S]");
      Value kvIds = find(params, "kv_ids") ? tensorParam(params, p, "kv_ids", "i32", 2, "[B, S]")
                                           : qIds;
      Value a = lookup(qIds, {vars.b, vars.qIdx}, inBounds);
      Value c = lookup(kvIds, {vars.b, vars.kvIdx}, inBounds);
      summary = "document(" + declOf(qIds).name + "[b, q_idx] == " + declOf(kvIds).name +
                "[b, kv_idx])";
      return arith::CmpIOp::create(builder, loc, arith::CmpIPredicate::eq, a, c);
    }
    if (key == "buckets") {
      checkKeys(params, p, {"q_buckets", "kv_buckets"});
      Value qb = tensorParam(params, p, "q_buckets", "i32", 3, "[B, Hq, Sq]");
      Value kb = tensorParam(params, p, "kv_buckets", "i32", 3, "[B, Hq, Skv]");
      Value a = lookup(qb, {vars.b, vars.h, vars.qIdx}, inBounds);
      Value c = lookup(kb, {vars.b, vars.h, vars.kvIdx}, inBounds);
      summary = "buckets(" + declOf(qb).name + " == " + declOf(kb).name + ")";
      return arith::CmpIOp::create(builder, loc, arith::CmpIPredicate::eq, a, c);
    }
    if (key == "keep") {
      checkKeys(params, p, {"kv_keep"});
      Value t = tensorParam(params, p, "kv_keep", "i32", 3, "[B, Hq, Skv]");
      Value a = lookup(t, {vars.b, vars.h, vars.kvIdx}, inBounds);
      summary = "keep(" + declOf(t).name + "[b, h, kv_idx] != 0)";
      return arith::CmpIOp::create(builder, loc, arith::CmpIPredicate::ne, a, constI64(0));
    }
    if (key == "strided") {
      checkKeys(params, p, {"stride"});
      int64_t stride = intKey(params, p, "stride", std::nullopt, 1, kMaxPosition);
      summary = "strided(stride=" + std::to_string(stride) + ")";
      return attn::StridedOp::create(builder, loc, vars.q, vars.kv, stride);
    }
    if (key == "fixed") {
      checkKeys(params, p, {"stride", "summary"});
      int64_t stride = intKey(params, p, "stride", std::nullopt, 1, kMaxPosition);
      int64_t sum = intKey(params, p, "summary", std::nullopt, 0, stride);
      summary = "fixed(stride=" + std::to_string(stride) + ", summary=" + std::to_string(sum) + ")";
      return attn::FixedOp::create(builder, loc, vars.q, vars.kv, stride, sum);
    }
    if (key == "dilated_segments") {
      checkKeys(params, p, {"segment", "dilation", "head_offset"});
      int64_t seg = intKey(params, p, "segment", std::nullopt, 1, kMaxPosition);
      int64_t dil = intKey(params, p, "dilation", std::nullopt, 1, kMaxPosition);
      IntegerAttr offset;
      std::string off = "h mod " + std::to_string(dil);
      if (const json *o = find(params, "head_offset")) {
        int64_t ov = integer(*o, child(p, "head_offset"), 0, dil - 1);
        offset = builder.getI64IntegerAttr(ov);
        off = std::to_string(ov);
      }
      summary = "dilated_segments(segment=" + std::to_string(seg) + ", dilation=" +
                std::to_string(dil) + ", offset=" + off + ")";
      return attn::DilatedSegmentsOp::create(builder, loc, vars.h, vars.q, vars.kv, seg, dil,
                                             offset);
    }
    if (key == "shifted_groups") {
      checkKeys(params, p, {"group", "shifted_heads"});
      int64_t group = intKey(params, p, "group", std::nullopt, 1, kMaxPosition);
      SmallVector<int64_t> heads;
      const json *sh = find(params, "shifted_heads");
      std::string sp = child(p, "shifted_heads");
      if (!sh || (sh->is_string() && oneOf(*sh, sp, {"second_half"}) == "second_half")) {
        for (int64_t h = info.headsQ / 2; h < info.headsQ; ++h)
          heads.push_back(h);
      } else if (sh->is_array()) {
        // Each head at most once, so at most heads_q entries: checked before anything
        // is allocated for them.
        if (int64_t(sh->size()) > info.headsQ)
          fail(sp, "lists " + std::to_string(sh->size()) + " heads but the spec has " +
                       std::to_string(info.headsQ) + " query heads");
        std::vector<bool> seen(size_t(info.headsQ), false);
        for (size_t i = 0; i < sh->size(); ++i) {
          int64_t h = integer((*sh)[i], child(sp, i), 0, info.headsQ - 1);
          if (seen[size_t(h)])
            fail(child(sp, i), "head " + std::to_string(h) + " is listed twice");
          seen[size_t(h)] = true;
          heads.push_back(h);
        }
      } else {
        fail(sp, "must be \"second_half\" or an array of head indices");
      }
      summary = "shifted_groups(group=" + std::to_string(group) + ", " +
                std::to_string(heads.size()) + " shifted heads)";
      return attn::ShiftedGroupsOp::create(builder, loc, vars.h, vars.q, vars.kv, group,
                                           heads);
    }
    if (key == "vertical_slash") {
      checkKeys(params, p, {"columns", "diagonals"});
      Value cols = tensorParam(params, p, "columns", "i32", 3, "[B, Hq, Nv]");
      Value diags = tensorParam(params, p, "diagonals", "i32", 3, "[B, Hq, Ns]");
      Value inCols = attn::ContainsOp::create(builder, loc, vars.kvIdx, cols,
                                              ValueRange{vars.b, vars.h});
      Value d = arith::SubIOp::create(builder, loc, vars.q, vars.kv);
      Value inDiags = attn::ContainsOp::create(builder, loc, d, diags,
                                               ValueRange{vars.b, vars.h});
      summary = "vertical_slash(kv_idx in " + declOf(cols).name + "[b, h] or q - kv in " +
                declOf(diags).name + "[b, h])";
      return arith::OrIOp::create(builder, loc, inCols, inDiags);
    }
    if (key == "block_list") {
      checkKeys(params, p, {"block", "kv_blocks"});
      const json &blk = require(params, p, "block");
      std::string bp = child(p, "block");
      if (!blk.is_array() || blk.size() != 2)
        fail(bp, "must be [BM, BN]");
      int64_t bm = integer(blk[0], child(bp, 0), 1, 1 << 16);
      int64_t bn = integer(blk[1], child(bp, 1), 1, 1 << 16);
      Value list = tensorParam(params, p, "kv_blocks", "i32", 4, "[B, Hq, ceil(Sq/BM), K]");
      Value qBlock = expr::emitFloorDiv(builder, loc, vars.qIdx, constI64(bm));
      Value kvBlock = expr::emitFloorDiv(builder, loc, vars.kvIdx, constI64(bn));
      summary = "block_list(block=[" + std::to_string(bm) + ", " + std::to_string(bn) +
                "], " + declOf(list).name + ")";
      return attn::ContainsOp::create(builder, loc, kvBlock, list,
                                      ValueRange{vars.b, vars.h, qBlock});
    }
    fail(p, "unknown mask '" + key +
                "' (expected full, causal, sliding_window, dilated_window, sinks, "
                "global_tokens, prefix_lm, document, buckets, keep, strided, fixed, "
                "dilated_segments, shifted_groups, vertical_slash, block_list, all, any, "
                "not or expr)");
  }

  Value emitScore(const json &node, const std::string &path, const RegionVars &vars,
                  SmallVectorImpl<Value> &inBounds, std::string &summary) {
    auto [key, value] = nodeKey(node, path, "score transform");
    std::string p = child(path, key);
    Location loc = FileLineColLoc::get(&ctx, p, 1, 1);
    const json &v = *value;
    if (key == "expr") {
      std::string src = string(v, p);
      auto tree = parseChecked(src, p, /*score=*/true);
      // PATTERNS.md: a score expression is a float. An integer one ("1", "q - kv") is
      // refused rather than converted: the score is a float, and a user who wrote an
      // integer most likely forgot `s` or a float literal.
      if (tree->type != expr::Type::Float)
        fail(p, "column " + std::to_string(tree->column) +
                    ": a score expression must be a float, this one is " +
                    (tree->type == expr::Type::Bool ? "a boolean"
                                                    : "an integer (mix in a float, e.g. "
                                                      "s + 0.5 * (q - kv), or write 1.0 "
                                                      "for 1)"));
      summary = "expr(" + expr::print(*tree) + ")";
      return expr::toFloat(builder, loc, emitExpr(*tree, vars, inBounds, loc));
    }
    const json &params = object(v, p);
    if (key == "softcap") {
      checkKeys(params, p, {"cap"});
      double cap = positive(require(params, p, "cap"), child(p, "cap"));
      summary = "softcap(cap=" + fmt(cap) + ")";
      return attn::SoftcapOp::create(builder, loc, vars.s, builder.getF64FloatAttr(cap));
    }
    if (key == "alibi") {
      checkKeys(params, p, {"slopes"});
      std::vector<double> slopes;
      if (const json *s = find(params, "slopes")) {
        std::string sp = child(p, "slopes");
        slopes = perHeadList(*s, sp, /*positive=*/false);
        summary = "alibi(given slopes)";
      } else {
        slopes = alibiDefaultSlopes(info.headsQ);
        summary = "alibi(default slopes for " + std::to_string(info.headsQ) + " heads)";
      }
      return attn::AlibiOp::create(builder, loc, vars.s, vars.h, vars.q, vars.kv, slopes);
    }
    if (key == "t5_bias") {
      checkKeys(params, p, {"table", "num_buckets", "max_distance", "bidirectional"});
      int64_t buckets = intKey(params, p, "num_buckets", 32, 2, mlir::attn::kMaxT5Buckets);
      int64_t maxDistance = intKey(params, p, "max_distance", 128, 1, kMaxPosition);
      bool bidirectional = true;
      if (const json *bd = find(params, "bidirectional")) {
        if (!bd->is_boolean())
          fail(child(p, "bidirectional"), std::string("must be a boolean, got ") + kindOf(*bd));
        bidirectional = bd->get<bool>();
      }
      if (bidirectional && buckets < 4)
        fail(child(p, "num_buckets"), "must be >= 4 when bidirectional");
      Value table = tensorParam(params, p, "table", "f32", 2, "[num_buckets, Hq]");
      checkStaticDim(table, 0, buckets, child(p, "table"), "num_buckets");
      checkStaticDim(table, 1, info.headsQ, child(p, "table"), "Hq");
      summary = "t5_bias(" + std::to_string(buckets) + " buckets, max_distance=" +
                std::to_string(maxDistance) + (bidirectional ? ", bidirectional)" : ")");
      return attn::T5BiasOp::create(builder, loc, vars.s, vars.h, vars.q, vars.kv, table,
                                    buckets, maxDistance, bidirectional);
    }
    if (key == "fire") {
      checkKeys(params, p, {"w1", "b1", "w2", "b2", "c", "L"});
      Value w1 = tensorParam(params, p, "w1", "f32", 1, "[Hid]");
      Value b1 = tensorParam(params, p, "b1", "f32", 1, "[Hid]");
      Value w2 = tensorParam(params, p, "w2", "f32", 2, "[Hq, Hid]");
      Value b2 = tensorParam(params, p, "b2", "f32", 1, "[Hq]");
      checkStaticDim(w2, 0, info.headsQ, child(p, "w2"), "Hq");
      checkStaticDim(b2, 0, info.headsQ, child(p, "b2"), "Hq");
      // One hidden size: w1[Hid], b1[Hid], w2[Hq, Hid] (the lowering loops over w1's
      // size and reads b1 and w2 at the same index).
      const Dim &hid = declOf(w1).shape[0];
      auto sameHidden = [&](Value t, size_t dim, const char *key) {
        const Dim &other = declOf(t).shape[dim];
        int64_t x = staticDim(hid), y = staticDim(other);
        bool same = x != ShapedType::kDynamic && y != ShapedType::kDynamic ? x == y
                                                                              : other == hid;
        if (!same)
          fail(child(p, key), "input '" + declOf(t).name + "' dimension " +
                                  std::to_string(dim) + " must be w1's hidden size (" + dimText(hid) + "), got " +
                                  dimText(other));
      };
      sameHidden(b1, 0, "b1");
      sameHidden(w2, 1, "w2");
      double c = positive(require(params, p, "c"), child(p, "c"));
      double l = positive(require(params, p, "L"), child(p, "L"));
      summary = "fire(c=" + fmt(c) + ", L=" + fmt(l) + ")";
      return attn::FireOp::create(builder, loc, vars.s, vars.h, vars.q, vars.kv, w1, b1, w2,
                                  b2, builder.getF64FloatAttr(c), builder.getF64FloatAttr(l));
    }
    if (key == "kerple_log") {
      checkKeys(params, p, {"r1", "r2"});
      auto r1 = perHeadList(require(params, p, "r1"), child(p, "r1"), true);
      auto r2 = perHeadList(require(params, p, "r2"), child(p, "r2"), true);
      summary = "kerple_log";
      return attn::KerpleLogOp::create(builder, loc, vars.s, vars.h, vars.q, vars.kv, r1, r2);
    }
    if (key == "log_length_scale") {
      checkKeys(params, p, {"base"});
      double base = number(require(params, p, "base"), child(p, "base"));
      if (!(base > 1.0))
        fail(child(p, "base"), "must be > 1, got " + fmt(base));
      summary = "log_length_scale(base=" + fmt(base) + ")";
      return attn::LogLengthScaleOp::create(builder, loc, vars.s, vars.q,
                                            builder.getF64FloatAttr(base));
    }
    if (key == "bias") {
      checkKeys(params, p, {"tensor"});
      std::string tp = child(p, "tensor");
      std::string name = string(require(params, p, "tensor"), tp);
      const InputDecl *decl = nullptr;
      for (const InputDecl &d : info.inputs)
        if (d.name == name)
          decl = &d;
      if (!decl)
        fail(tp, "'" + name + "' is not a declared input");
      if (decl->dtype != "f32")
        fail(tp, "input '" + name + "' must be f32, is " + decl->dtype);
      Value t = inputValues.at(name);
      SmallVector<Value> indices = biasIndices(*decl, tp, vars);
      Value bias = lookup(t, indices, inBounds);
      summary = "bias(" + name + ")";
      return arith::AddFOp::create(builder, loc, vars.s, bias);
    }
    fail(p, "unknown score transform '" + key +
                "' (expected softcap, alibi, t5_bias, fire, kerple_log, "
                "log_length_scale, bias or expr)");
  }

  /// Broadcasting of a bias tensor to [B, H, Sq, Skv], numpy style (right-aligned).
  SmallVector<Value> biasIndices(const InputDecl &decl, const std::string &path,
                                 const RegionVars &vars) {
    static const char *kAxes[] = {"B", "Hq", "Sq", "Skv"};
    Value axisValue[] = {vars.b, vars.h, vars.qIdx, vars.kvIdx};
    size_t rank = decl.shape.size();
    SmallVector<Value> indices;
    for (size_t i = 0; i < rank; ++i) {
      size_t axis = 4 - rank + i;
      const Dim &dim = decl.shape[i];
      if (auto *n = std::get_if<int64_t>(&dim)) {
        if (*n == 1) {
          indices.push_back(constI64(0));
          continue;
        }
        if (axis == 1 && *n == info.headsQ) {
          indices.push_back(axisValue[axis]);
          continue;
        }
        fail(path, "bias '" + decl.name + "' dimension " + std::to_string(i) +
                       " must be 1 or " + kAxes[axis] + " to broadcast to [B, Hq, Sq, Skv]");
      }
      const std::string &sym = std::get<std::string>(dim);
      if (sym != kAxes[axis] && !(axis == 1 && sym == "H"))
        fail(path, "bias '" + decl.name + "' dimension " + std::to_string(i) + " is '" +
                       sym + "' but must be 1 or " + kAxes[axis] +
                       " to broadcast to [B, Hq, Sq, Skv]");
      indices.push_back(axisValue[axis]);
    }
    return indices;
  }

  void checkStaticDim(Value tensor, int64_t dim, int64_t expected, const std::string &path,
                      const char *what) {
    const InputDecl &decl = declOf(tensor);
    const Dim &d = decl.shape[dim];
    int64_t actual = staticDim(d);
    bool symbolic = std::holds_alternative<std::string>(d);
    if (actual == ShapedType::kDynamic && symbolic)
      fail(path, "input '" + decl.name + "' dimension " + std::to_string(dim) +
                     " must be " + what + " (" + std::to_string(expected) + "), got '" +
                     std::get<std::string>(d) + "'");
    if (actual != expected)
      fail(path, "input '" + decl.name + "' dimension " + std::to_string(dim) +
                     " must be " + what + " (" + std::to_string(expected) + "), got " +
                     std::to_string(actual));
  }

  std::vector<double> perHeadList(const json &j, const std::string &path, bool positiveOnly) {
    if (!j.is_array())
      fail(path, std::string("must be an array of ") + std::to_string(info.headsQ) +
                     " numbers (one per query head), got " + kindOf(j));
    if (static_cast<int64_t>(j.size()) != info.headsQ)
      fail(path, "must have one value per query head (" + std::to_string(info.headsQ) +
                     "), got " + std::to_string(j.size()));
    std::vector<double> out;
    for (size_t i = 0; i < j.size(); ++i)
      out.push_back(positiveOnly ? positive(j[i], child(path, i)) : number(j[i], child(path, i)));
    return out;
  }

  //===--------------------------------------------------------------------===//
  // Expressions
  //===--------------------------------------------------------------------===//

  std::optional<expr::NameInfo> resolveName(const std::string &name, bool score) {
    static const std::set<std::string> kVars = {"b",      "h",     "q",     "kv",
                                                "q_idx",  "kv_idx", "seq_q", "seq_kv"};
    if (kVars.count(name))
      return expr::NameInfo{};
    if (name == "s") {
      if (!score)
        return std::nullopt;
      expr::NameInfo n;
      n.type = expr::Type::Float;
      return n;
    }
    if (auto it = params_.find(name); it != params_.end())
      return it->second;
    for (const InputDecl &d : info.inputs) {
      if (d.name != name)
        continue;
      expr::NameInfo n;
      n.kind = expr::NameInfo::Kind::Tensor;
      n.type = d.dtype == "f32" ? expr::Type::Float : expr::Type::Int;
      for (const Dim &dim : d.shape) {
        int64_t s = staticDim(dim);
        n.dims.push_back(s == ShapedType::kDynamic ? -1 : s);
      }
      return n;
    }
    return std::nullopt;
  }

  std::unique_ptr<expr::Node> parseChecked(const std::string &src, const std::string &path,
                                           bool score) {
    expr::Error err;
    auto tree = expr::parse(src, err);
    if (!tree)
      fail(path, "column " + std::to_string(err.column) + ": " + err.message);
    currentScore = score;
    expr::Resolver resolver = [this](const std::string &n) {
      auto r = resolveName(n, currentScore);
      return r;
    };
    if (!expr::check(*tree, resolver, err)) {
      std::string msg = err.message;
      if (!score && msg == "unknown name 's'")
        msg += " (the score 's' exists only in score expressions)";
      fail(path, "column " + std::to_string(err.column) + ": " + msg);
    }
    return tree;
  }

  Value emitExpr(const expr::Node &tree, const RegionVars &vars,
                 SmallVectorImpl<Value> &inBounds, Location loc) {
    expr::EmitEnv env;
    bool score = static_cast<bool>(vars.s);
    env.resolve = [this, score](const std::string &n) { return resolveName(n, score); };
    env.variable = [&vars](const std::string &n) { return vars.get(n); };
    env.tensor = [this](const std::string &n) { return inputValues.at(n); };
    env.inBounds = &inBounds;
    return expr::emit(builder, loc, tree, env);
  }

  MLIRContext &ctx;
  const json &root;
  SpecInfo &info;
  SpecError &error;
  const ImportOptions &options;
  OpBuilder builder;
  std::map<std::string, expr::NameInfo> params_;
  std::map<std::string, Value> inputValues;
  std::optional<double> sigmoidBeta;
  attn::AttentionOp attention;
  bool currentScore = false;
};

} // namespace

OwningOpRef<ModuleOp> importSpec(MLIRContext &context, const json &spec, SpecInfo &info,
                                 SpecError &error, const ImportOptions &options) {
  context.loadDialect<attn::AttnDialect, func::FuncDialect, arith::ArithDialect,
                      math::MathDialect, tensor::TensorDialect, scf::SCFDialect>();
  info = SpecInfo();
  error = SpecError();
  // The verifier's own diagnostics would go to stderr; the importer reports its error.
  ScopedDiagnosticHandler silence(&context, [](Diagnostic &) { return success(); });
  return Importer(context, spec, info, error, options).run();
}

} // namespace attune
