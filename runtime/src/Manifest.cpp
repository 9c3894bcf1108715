//===- Manifest.cpp - manifest.json of a kernel bundle --------------------===//
#include "Manifest.h"

#include "Sha256.h"

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <sys/stat.h>

namespace attune::rt {

std::optional<DType> parseDType(const std::string &s) {
  if (s == "bf16")
    return DType::BF16;
  if (s == "fp16")
    return DType::FP16;
  if (s == "f32")
    return DType::F32;
  if (s == "i32")
    return DType::I32;
  return std::nullopt;
}

const char *dtypeName(DType t) {
  switch (t) {
  case DType::BF16:
    return "bf16";
  case DType::FP16:
    return "fp16";
  case DType::F32:
    return "f32";
  case DType::I32:
    return "i32";
  }
  return "?";
}

size_t dtypeSize(DType t) { return t == DType::BF16 || t == DType::FP16 ? 2 : 4; }

const char *paramTypeName(ParamType t) {
  switch (t) {
  case ParamType::Ptr:
    return "ptr";
  case ParamType::I64:
    return "i64";
  case ParamType::I32:
    return "i32";
  case ParamType::F32:
    return "f32";
  }
  return "?";
}

bool isKnownShapeSymbol(const std::string &s) {
  return s == "B" || s == "Hq" || s == "Hkv" || s == "Sq" || s == "Skv" || s == "D" || s == "Dv";
}

bool parseArch(const std::string &arch, int &capability, bool &exact) {
  if (arch.size() < 5 || arch.compare(0, 3, "sm_") != 0)
    return false;
  size_t i = 3;
  int value = 0;
  while (i < arch.size() && std::isdigit(static_cast<unsigned char>(arch[i])) && value < 10000)
    value = value * 10 + (arch[i++] - '0');
  if (i == 3 || value < 10)
    return false;
  exact = false;
  if (i < arch.size()) {
    // sm_90a / sm_100a: arch-specific features, that capability only. (sm_100f
    // "family" targets also stay on their own capability in this runtime.)
    if (i + 1 != arch.size() || (arch[i] != 'a' && arch[i] != 'f'))
      return false;
    exact = true;
  }
  capability = value;
  return true;
}

bool archRunsOn(const Variant &v, int major, int minor) {
  int cc = major * 10 + minor;
  // Plain PTX for sm_XY is JIT-compiled by the driver for any later capability.
  return v.archExact ? cc == v.archCapability : cc >= v.archCapability;
}

std::string Variant::configSummary() const {
  std::string out;
  for (const JsonMember &m : config.members()) {
    if (!out.empty())
      out += ' ';
    out += m.key + "=" + (m.value.isString() ? m.value.asString() : m.value.dump());
  }
  return out;
}

std::vector<std::string> Manifest::freeSymbols() const {
  std::vector<std::string> out;
  for (const InputDecl &in : inputs)
    for (const Dim &d : in.shape)
      if (d.isSymbol() && !isKnownShapeSymbol(d.symbol)) {
        bool seen = false;
        for (const std::string &s : out)
          seen |= s == d.symbol;
        if (!seen)
          out.push_back(d.symbol);
      }
  return out;
}

int Manifest::findInput(const std::string &name) const {
  for (size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i].name == name)
      return int(i);
  return -1;
}

int Manifest::findVariant(const std::string &name) const {
  for (size_t i = 0; i < variants.size(); ++i)
    if (variants[i].name == name)
      return int(i);
  return -1;
}

int Manifest::findHostVariant(const std::string &name) const {
  for (size_t i = 0; i < hostVariants.size(); ++i)
    if (hostVariants[i].name == name)
      return int(i);
  return -1;
}

namespace {

/// Typed access to members with errors naming the JSON pointer of the key.
class Reader {
public:
  explicit Reader(std::string where) : where_(std::move(where)) {}

  [[noreturn]] void fail(const std::string &path, const std::string &message) const {
    throw ManifestError(where_ + ": " + (path.empty() ? "/" : path) + ": " + message);
  }

  const Json &member(const Json &obj, const std::string &path, const std::string &key) const {
    const Json *v = obj.find(key);
    if (!v)
      fail(path + "/" + key, "missing");
    return *v;
  }

  const Json &object(const Json &obj, const std::string &path, const std::string &key) const {
    const Json &v = member(obj, path, key);
    if (!v.isObject())
      fail(path + "/" + key, "expected an object");
    return v;
  }

  const Json &array(const Json &obj, const std::string &path, const std::string &key) const {
    const Json &v = member(obj, path, key);
    if (!v.isArray())
      fail(path + "/" + key, "expected an array");
    return v;
  }

  std::string string(const Json &obj, const std::string &path, const std::string &key) const {
    const Json &v = member(obj, path, key);
    if (!v.isString())
      fail(path + "/" + key, "expected a string");
    return v.asString();
  }

  bool boolean(const Json &obj, const std::string &path, const std::string &key) const {
    const Json &v = member(obj, path, key);
    if (!v.isBool())
      fail(path + "/" + key, "expected true or false");
    return v.asBool();
  }

  int64_t integer(const Json &v, const std::string &path, int64_t min) const {
    if (!v.isInteger() || v.kind() == Json::Kind::UInt)
      fail(path, "expected an integer");
    if (v.asInt() < min)
      fail(path, "expected an integer >= " + std::to_string(min) + ", got " +
                     std::to_string(v.asInt()));
    return v.asInt();
  }

  int64_t integer(const Json &obj, const std::string &path, const std::string &key,
                  int64_t min) const {
    return integer(member(obj, path, key), path + "/" + key, min);
  }

  /// A key that may be absent or null.
  std::optional<int64_t> optionalInteger(const Json &obj, const std::string &path,
                                         const std::string &key) const {
    const Json *v = obj.find(key);
    if (!v || v->isNull())
      return std::nullopt;
    return integer(*v, path + "/" + key, INT64_MIN);
  }

private:
  std::string where_;
};

bool isIdentifier(const std::string &s) {
  if (s.empty() || !(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_'))
    return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_'))
      return false;
  return true;
}

/// A file name inside the bundle directory: no directories, no way out of it.
bool isPlainFileName(const std::string &s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
         s.find('\0') == std::string::npos;
}

// Shared memory sizes are passed to the driver as 32-bit values; the sum of the
// dynamic and static sizes must not overflow either.
constexpr int64_t kMaxSmemBytes = (int64_t(1) << 31) - 1;
// The spec schema's limits (specs/attn-spec.schema.json): a manifest beyond them was
// not written by the compiler, and products of these sizes stay far from overflow.
constexpr int64_t kMaxHeads = 4096, kMaxHeadDim = 512;

std::vector<InputDecl> readInputs(const Reader &r, const Json &doc) {
  std::vector<InputDecl> inputs;
  const Json &list = r.array(doc, "", "inputs");
  for (size_t i = 0; i < list.size(); ++i) {
    std::string path = "/inputs/" + std::to_string(i);
    const Json &in = list[i];
    if (!in.isObject())
      r.fail(path, "expected an object");
    InputDecl decl;
    decl.name = r.string(in, path, "name");
    if (!isIdentifier(decl.name))
      r.fail(path + "/name", "expected an identifier, got '" + decl.name + "'");
    for (const InputDecl &prev : inputs)
      if (prev.name == decl.name)
        r.fail(path + "/name", "duplicate input '" + decl.name + "'");
    std::string dt = r.string(in, path, "dtype");
    auto dtype = parseDType(dt);
    if (!dtype)
      r.fail(path + "/dtype", "expected \"i32\", \"f32\", \"bf16\" or \"fp16\", got \"" + dt + "\"");
    decl.dtype = *dtype;
    const Json &shape = r.array(in, path, "shape");
    if (shape.size() == 0 || shape.size() > 8)
      r.fail(path + "/shape", "expected 1 to 8 dimensions, got " + std::to_string(shape.size()));
    for (size_t d = 0; d < shape.size(); ++d) {
      std::string dpath = path + "/shape/" + std::to_string(d);
      Dim dim;
      if (shape[d].isString()) {
        dim.symbol = shape[d].asString();
        if (!isIdentifier(dim.symbol))
          r.fail(dpath, "expected a size symbol (an identifier), got '" + dim.symbol + "'");
      } else if (shape[d].isInteger()) {
        dim.size = r.integer(shape[d], dpath, 1);
      } else {
        r.fail(dpath, "expected a positive integer or a size symbol");
      }
      decl.shape.push_back(dim);
    }
    inputs.push_back(std::move(decl));
  }
  return inputs;
}

/// Resolves a parameter name to where its value comes from; "" when valid, else why not.
std::string resolveParam(const Manifest &m, Param &p, const std::vector<std::string> &scratch) {
  static const char *tensors[] = {"q", "k", "v", "o", "lse"};
  for (int t = 0; t < 5; ++t)
    if (p.name == tensors[t]) {
      p.source.kind = ParamSource::TensorPtr;
      p.source.tensor = t;
      return p.type == ParamType::Ptr ? "" : "a tensor parameter must have type ptr";
    }
  auto scalarType = [&]() -> std::string {
    return p.type == ParamType::I64 || p.type == ParamType::I32
               ? ""
               : "an integer parameter must have type i64 or i32";
  };
  for (const char *s : {"batch", "seq_q", "seq_kv", "heads_q", "heads_kv", "num_splits"})
    if (p.name == s) {
      p.source.kind = ParamSource::Size;
      return scalarType();
    }
  // Per-sequence kernels (docs/bundle-and-abi.md, "Storage").
  static const char *sequenceTensors[] = {"cu_seqlens_q", "cu_seqlens_kv", "page_table",
                                          "kv_lens", "q_lens"};
  for (int t = 0; t < 5; ++t)
    if (p.name == sequenceTensors[t]) {
      p.source.kind = ParamSource::SequencePtr;
      p.source.tensor = t;
      return p.type == ParamType::Ptr ? "" : "a tensor parameter must have type ptr";
    }
  for (const char *s : {"q_rows", "kv_rows", "page_size", "num_pages", "pages_per_seq",
                        "page_table_stride", "q_offset_from_lengths"})
    if (p.name == s) {
      p.source.kind = ParamSource::Size;
      return scalarType();
    }
  if (p.name == "q_offset" || p.name == "kv_offset") {
    p.source.kind = ParamSource::Offset;
    return scalarType();
  }
  static const char *strided[] = {"q", "k", "v", "o"};
  static const char *dims[] = {"b", "h", "s"};
  for (int t = 0; t < 4; ++t)
    for (int d = 0; d < 3; ++d)
      if (p.name == std::string(strided[t]) + "_stride_" + dims[d]) {
        p.source.kind = ParamSource::Stride;
        p.source.tensor = t;
        p.source.dim = d;
        return scalarType();
      }
  if (p.name.compare(0, 6, "input:") == 0) {
    std::string rest = p.name.substr(6);
    size_t colon = rest.find(':');
    std::string input = rest.substr(0, colon);
    int index = m.findInput(input);
    if (index < 0)
      return "names no declared input '" + input + "'";
    p.source.input = index;
    if (colon == std::string::npos) {
      p.source.kind = ParamSource::InputPtr;
      return p.type == ParamType::Ptr ? "" : "a tensor parameter must have type ptr";
    }
    std::string dim = rest.substr(colon + 1);
    if (dim.size() < 4 || dim.compare(0, 3, "dim") != 0 ||
        dim.find_first_not_of("0123456789", 3) != std::string::npos)
      return "expected input:<name>:dim<k>";
    // Inputs have at most 8 dimensions: longer digit strings are out of range (and
    // would overflow an int).
    if (dim.size() > 5)
      return "input '" + input + "' has " + std::to_string(m.inputs[size_t(index)].shape.size()) +
             " dimensions";
    int k = std::stoi(dim.substr(3));
    if (k >= int(m.inputs[size_t(index)].shape.size()))
      return "input '" + input + "' has " + std::to_string(m.inputs[size_t(index)].shape.size()) +
             " dimensions";
    p.source.kind = ParamSource::InputDim;
    p.source.dim = k;
    return scalarType();
  }
  if (p.name.compare(0, 8, "scratch:") == 0) {
    std::string name = p.name.substr(8);
    for (size_t i = 0; i < scratch.size(); ++i)
      if (scratch[i] == name) {
        p.source.kind = ParamSource::Scratch;
        p.source.input = int(i);
        return p.type == ParamType::Ptr ? "" : "a scratch buffer parameter must have type ptr";
      }
    return scratch.empty() ? "the variant declares no scratch buffers (split_kv.scratch)"
                           : "names no scratch buffer of split_kv.scratch";
  }
  return "unknown parameter (docs/bundle-and-abi.md section 2 lists the names)";
}

/// An integer expression over the grid names at `path`.
Expr readExpr(const Reader &r, const std::string &text, const std::string &path,
              const std::vector<std::string> &gridNames) {
  Expr e;
  try {
    e = Expr::parse(text);
  } catch (const ExprError &err) {
    r.fail(path, err.what());
  }
  for (const std::string &name : e.names()) {
    bool known = false;
    for (const std::string &g : gridNames)
      known |= g == name;
    if (!known) {
      std::string list;
      for (const std::string &g : gridNames)
        list += (list.empty() ? "" : ", ") + g;
      r.fail(path, "expression '" + text + "' uses unknown name '" + name + "' (known: " + list + ")");
    }
  }
  return e;
}

void readGrid(const Reader &r, const Json &v, const std::string &path,
              const std::vector<std::string> &gridNames, Expr grid[3]) {
  const Json &g = r.object(v, path, "grid");
  const char *axes[] = {"x", "y", "z"};
  for (int a = 0; a < 3; ++a)
    grid[a] = readExpr(r, r.string(g, path + "/grid", axes[a]), path + "/grid/" + axes[a], gridNames);
}

std::vector<Param> readParams(const Reader &r, const Manifest &m, const Json &v,
                              const std::string &path, const std::vector<std::string> &scratch) {
  const Json &params = r.array(v, path, "params");
  std::vector<Param> out;
  std::set<std::string> seen;
  for (size_t i = 0; i < params.size(); ++i) {
    std::string ppath = path + "/params/" + std::to_string(i);
    if (!params[i].isObject())
      r.fail(ppath, "expected an object");
    Param p;
    p.name = r.string(params[i], ppath, "name");
    std::string type = r.string(params[i], ppath, "type");
    if (type == "ptr")
      p.type = ParamType::Ptr;
    else if (type == "i64")
      p.type = ParamType::I64;
    else if (type == "i32")
      p.type = ParamType::I32;
    else if (type == "f32")
      p.type = ParamType::F32;
    else
      r.fail(ppath + "/type", "expected \"ptr\", \"i64\", \"i32\" or \"f32\", got \"" + type + "\"");
    if (!seen.insert(p.name).second)
      r.fail(ppath + "/name", "duplicate parameter '" + p.name + "'");
    std::string why = resolveParam(m, p, scratch);
    if (!why.empty())
      r.fail(ppath, "parameter '" + p.name + "' (" + type + "): " + why);
    out.push_back(p);
  }
  return out;
}

/// A kernel's entry symbol and block size at `path`.
void readLaunch(const Reader &r, const Json &v, const std::string &path, const char *what,
                std::string &kernel, int64_t &threads) {
  kernel = r.string(v, path, "kernel");
  if (kernel.empty())
    r.fail(path + "/kernel", std::string("expected the ") + what + "'s entry symbol, got \"\"");
  threads = r.integer(v, path, "threads", 1);
  if (threads > 1024)
    r.fail(path + "/threads", "expected at most 1024 threads, got " + std::to_string(threads));
}

SplitKv readSplitKv(const Reader &r, const Manifest &m, const Json &v, const std::string &path,
                    const std::vector<std::string> &gridNames) {
  if (!v.isObject())
    r.fail(path, "expected an object");
  SplitKv out;
  const Json &scratch = r.object(v, path, "scratch");
  for (const JsonMember &member : scratch.members()) {
    const std::string &name = member.key;
    const Json &bytes = member.value;
    std::string spath = path + "/scratch/" + name;
    if (!bytes.isString())
      r.fail(spath, "expected a byte-size expression");
    out.scratchNames.push_back(name);
    out.scratchBytes.push_back(readExpr(r, bytes.asString(), spath, gridNames));
  }
  const Json &combine = r.object(v, path, "combine");
  std::string cpath = path + "/combine";
  readLaunch(r, combine, cpath, "combine kernel", out.kernel, out.threads);
  readGrid(r, combine, cpath, gridNames, out.grid);
  out.params = readParams(r, m, combine, cpath, out.scratchNames);
  return out;
}

Variant readVariant(const Reader &r, const Manifest &m, const Json &v, const std::string &path,
                    const std::vector<std::string> &gridNames) {
  if (!v.isObject())
    r.fail(path, "expected an object");
  Variant out;
  out.name = r.string(v, path, "name");
  if (!isPlainFileName(out.name))
    r.fail(path + "/name", "expected a plain name, got '" + out.name + "'");
  out.arch = r.string(v, path, "arch");
  if (!parseArch(out.arch, out.archCapability, out.archExact))
    r.fail(path + "/arch", "expected an architecture like \"sm_80\" or \"sm_90a\", got \"" +
                               out.arch + "\"");
  out.config = r.object(v, path, "config");
  out.isDefault = r.boolean(v, path, "default");
  out.ptx = r.string(v, path, "ptx");
  if (!isPlainFileName(out.ptx))
    r.fail(path + "/ptx", "expected a file name inside the bundle, got '" + out.ptx + "'");
  if (const Json *cubin = v.find("cubin"); cubin && !cubin->isNull()) {
    if (!cubin->isString())
      r.fail(path + "/cubin", "expected a string");
    if (!isPlainFileName(cubin->asString()))
      r.fail(path + "/cubin", "expected a file name inside the bundle, got '" +
                                  cubin->asString() + "'");
    out.cubin = cubin->asString();
  }
  readLaunch(r, v, path, "kernel", out.kernel, out.threads);
  out.smemBytes = r.integer(v, path, "smem_bytes", 0);
  if (out.smemBytes > kMaxSmemBytes)
    r.fail(path + "/smem_bytes", "expected at most " + std::to_string(kMaxSmemBytes) +
                                     " bytes, got " + std::to_string(out.smemBytes));

  readGrid(r, v, path, gridNames, out.grid);
  if (const Json *split = v.find("split_kv"); split && !split->isNull())
    out.splitKv = readSplitKv(r, m, *split, path + "/split_kv", gridNames);
  out.params = readParams(r, m, v, path, out.splitKv ? out.splitKv->scratchNames
                                                     : std::vector<std::string>{});

  if (const Json *secs = v.find("compile_seconds"); secs && !secs->isNull()) {
    if (!secs->isNumber())
      r.fail(path + "/compile_seconds", "expected a number");
    out.compileSeconds = secs->asDouble();
  }
  if (const Json *ptxas = v.find("ptxas"); ptxas && !ptxas->isNull()) {
    std::string ppath = path + "/ptxas";
    if (!ptxas->isObject())
      r.fail(ppath, "expected an object");
    PtxasReport rep;
    rep.registers = r.integer(*ptxas, ppath, "registers", 0);
    rep.spillStores = r.integer(*ptxas, ppath, "spill_stores", 0);
    rep.spillLoads = r.integer(*ptxas, ppath, "spill_loads", 0);
    if (ptxas->contains("smem_static"))
      rep.smemStatic = r.integer(*ptxas, ppath, "smem_static", 0);
    if (ptxas->contains("stack_frame"))
      rep.stackFrame = r.integer(*ptxas, ppath, "stack_frame", 0);
    if (rep.smemStatic > kMaxSmemBytes)
      r.fail(ppath + "/smem_static", "expected at most " + std::to_string(kMaxSmemBytes) +
                                         " bytes, got " + std::to_string(rep.smemStatic));
    out.ptxas = rep;
  }
  if (const Json *warnings = v.find("ptxas_warnings"); warnings && !warnings->isNull()) {
    std::string wpath = path + "/ptxas_warnings";
    if (!warnings->isArray())
      r.fail(wpath, "expected an array of strings");
    for (size_t i = 0; i < warnings->size(); ++i) {
      if (!(*warnings)[i].isString())
        r.fail(wpath + "/" + std::to_string(i), "expected a string");
      out.ptxasWarnings.push_back((*warnings)[i].asString());
    }
  }
  return out;
}

HostKernelDecl readHostKernel(const Reader &r, const Json &v, const std::string &path) {
  HostKernelDecl k;
  k.entry = r.string(v, path, "entry");
  k.items = r.string(v, path, "items");
  if (!isIdentifier(k.entry))
    r.fail(path + "/entry", "expected a symbol name, got '" + k.entry + "'");
  if (!isIdentifier(k.items))
    r.fail(path + "/items", "expected a symbol name, got '" + k.items + "'");
  const Json &serial = r.array(v, path, "serial_grids");
  for (size_t i = 0; i < serial.size(); ++i)
    k.serialGrids.push_back(r.integer(serial[i], path + "/serial_grids/" + std::to_string(i), 0));
  k.lse = r.boolean(v, path, "lse");
  if (v.contains("sequences"))
    k.sequences = r.boolean(v, path, "sequences");
  return k;
}

HostVariant readHostVariant(const Reader &r, const Json &v, const std::string &path) {
  if (!v.isObject())
    r.fail(path, "expected an object");
  HostVariant h;
  h.name = r.string(v, path, "name");
  if (!isPlainFileName(h.name))
    r.fail(path + "/name", "expected a plain name, got '" + h.name + "'");
  h.library = r.string(v, path, "library");
  if (!isPlainFileName(h.library))
    r.fail(path + "/library", "expected a file name inside the bundle, got '" + h.library + "'");
  h.config = r.object(v, path, "config");
  for (const char *key : {"block_m", "block_n"})
    r.integer(h.config, path + "/config", key, 1);
  h.isDefault = r.boolean(v, path, "default");
  h.cpu = r.string(v, path, "cpu");
  h.features = r.string(v, path, "features");
  h.forward = readHostKernel(r, r.object(v, path, "forward"), path + "/forward");
  if (const Json *b = v.find("backward"); b && !b->isNull()) {
    if (!b->isObject())
      r.fail(path + "/backward", "expected an object or null");
    h.backward = readHostKernel(r, *b, path + "/backward");
  }
  if (const Json *e = v.find("backward_error"); e && !e->isNull()) {
    if (!e->isString())
      r.fail(path + "/backward_error", "expected a string");
    h.backwardError = e->asString();
  }
  if (const Json *c = v.find("compile_seconds"); c && c->isNumber())
    h.compileSeconds = c->asDouble();
  return h;
}

} // namespace

Manifest parseManifest(const Json &doc, const std::string &where) {
  Reader r(where);
  if (!doc.isObject())
    r.fail("", "expected a JSON object");
  Manifest m;
  m.format = r.string(doc, "", "format");
  if (m.format != "attune-bundle/1")
    r.fail("/format", "unsupported bundle format \"" + m.format +
                          "\" (this runtime reads \"attune-bundle/1\")");
  m.compilerVersion = r.string(doc, "", "compiler_version");
  m.specName = r.string(doc, "", "spec_name");
  m.specHash = r.string(doc, "", "spec_hash");
  if (m.specHash.size() != 64 || m.specHash.find_first_not_of("0123456789abcdef") != std::string::npos)
    r.fail("/spec_hash", "expected 64 lower-case hex characters");
  m.spec = r.object(doc, "", "spec");
  // The hash is the bundle's identity (cache and tuning keys): it must be the spec's.
  std::string actual = specHashOf(m.spec);
  if (actual != m.specHash)
    r.fail("/spec_hash", "\"" + m.specHash + "\" is not the hash of /spec (its canonical JSON " +
                             "hashes to \"" + actual + "\"): the manifest was edited, or " +
                             "written by a compiler whose spec hash differs from this runtime's");
  auto bounded = [&](const char *key, int64_t max) {
    int64_t v = r.integer(doc, "", key, 1);
    if (v > max)
      r.fail(std::string("/") + key,
             "expected at most " + std::to_string(max) + ", got " + std::to_string(v));
    return v;
  };
  m.headsQ = bounded("heads_q", kMaxHeads);
  m.headsKv = bounded("heads_kv", kMaxHeads);
  if (m.headsQ % m.headsKv != 0)
    r.fail("/heads_kv", "heads_q (" + std::to_string(m.headsQ) + ") is not a multiple of heads_kv (" +
                            std::to_string(m.headsKv) + ")");
  m.headDim = bounded("head_dim", kMaxHeadDim);
  m.headDimV = bounded("head_dim_v", kMaxHeadDim);
  std::string dt = r.string(doc, "", "dtype");
  auto dtype = parseDType(dt);
  if (!dtype || *dtype == DType::I32)
    r.fail("/dtype", "expected \"bf16\", \"fp16\" or \"f32\", got \"" + dt + "\"");
  m.dtype = *dtype;
  m.align = r.string(doc, "", "align");
  if (m.align != "bottom_right" && m.align != "top_left")
    r.fail("/align", "expected \"bottom_right\" or \"top_left\", got \"" + m.align + "\"");
  m.qOffset = r.optionalInteger(doc, "", "q_offset");
  m.kvOffset = r.optionalInteger(doc, "", "kv_offset");
  if (doc.contains("storage")) {
    const Json &st = r.object(doc, "", "storage");
    m.qStorage = r.string(st, "/storage", "q");
    m.kvStorage = r.string(st, "/storage", "kv");
    if (m.qStorage != "padded" && m.qStorage != "ragged")
      r.fail("/storage/q", "expected \"padded\" or \"ragged\", got \"" + m.qStorage + "\"");
    if (m.kvStorage != "padded" && m.kvStorage != "ragged" && m.kvStorage != "paged")
      r.fail("/storage/kv", "expected \"padded\", \"ragged\" or \"paged\", got \"" +
                                m.kvStorage + "\"");
  }

  const Json &outputs = r.array(doc, "", "outputs");
  bool hasO = false;
  for (size_t i = 0; i < outputs.size(); ++i) {
    std::string path = "/outputs/" + std::to_string(i);
    if (!outputs[i].isString())
      r.fail(path, "expected a string");
    const std::string &o = outputs[i].asString();
    if (o == "o")
      hasO = true;
    else if (o == "lse")
      m.hasLse = true;
    else
      r.fail(path, "unknown output \"" + o + "\" (expected \"o\" or \"lse\")");
  }
  if (!hasO)
    r.fail("/outputs", "expected \"o\" among the outputs");

  if (doc.contains("alignment")) {
    m.alignment = r.integer(doc, "", "alignment", 1);
    if (m.alignment & (m.alignment - 1))
      r.fail("/alignment", "expected a power of two, got " + std::to_string(m.alignment));
  }

  m.inputs = readInputs(r, doc);

  std::vector<std::string> gridNames = {"batch",    "seq_q",    "seq_kv",     "heads_q",
                                        "heads_kv", "head_dim", "head_dim_v", "num_splits"};
  for (const std::string &s : m.freeSymbols())
    gridNames.push_back(s);

  if (const Json *host = doc.find("host"); host && !host->isNull()) {
    if (!host->isArray())
      r.fail("/host", "expected an array");
    bool hasDefault = false;
    for (size_t i = 0; i < host->size(); ++i) {
      std::string path = "/host/" + std::to_string(i);
      HostVariant h = readHostVariant(r, (*host)[i], path);
      for (const HostVariant &prev : m.hostVariants)
        if (prev.name == h.name)
          r.fail(path + "/name", "duplicate host variant name '" + h.name + "'");
      if (h.isDefault && hasDefault)
        r.fail(path + "/default", "a second default host variant");
      hasDefault |= h.isDefault;
      m.hostVariants.push_back(std::move(h));
    }
    if (!m.hostVariants.empty() && !hasDefault)
      r.fail("/host", "no default host variant (one must have \"default\": true)");
  }

  const Json &variants = r.array(doc, "", "variants");
  if (variants.size() == 0 && m.hostVariants.empty())
    r.fail("/variants", "the bundle has no variants");
  for (size_t i = 0; i < variants.size(); ++i) {
    std::string path = "/variants/" + std::to_string(i);
    Variant v = readVariant(r, m, variants[i], path, gridNames);
    for (const Variant &prev : m.variants) {
      if (prev.name == v.name)
        r.fail(path + "/name", "duplicate variant name '" + v.name + "'");
      if (prev.isDefault && v.isDefault && prev.arch == v.arch)
        r.fail(path + "/default", "a second default variant for " + v.arch + " (the first is '" +
                                      prev.name + "')");
    }
    m.variants.push_back(std::move(v));
  }
  // selectVariant falls back to an architecture's default: every architecture the
  // bundle has must name one.
  for (size_t i = 0; i < m.variants.size(); ++i) {
    const std::string &arch = m.variants[i].arch;
    bool first = true, hasDefault = false;
    for (size_t j = 0; j < m.variants.size(); ++j) {
      if (m.variants[j].arch != arch)
        continue;
      first &= j >= i;
      hasDefault |= m.variants[j].isDefault;
    }
    if (first && !hasDefault)
      r.fail("/variants", "no default variant for " + arch + " (one variant of each "
                          "architecture must have \"default\": true; '" + m.variants[i].name +
                          "' is the first of " + arch + ")");
  }
  return m;
}

namespace {

Json gridJson(const Expr grid[3]) {
  Json g = Json::object();
  g.set("x", grid[0].text());
  g.set("y", grid[1].text());
  g.set("z", grid[2].text());
  return g;
}

Json paramsJson(const std::vector<Param> &params) {
  Json out = Json::array();
  for (const Param &p : params) {
    Json e = Json::object();
    e.set("name", p.name);
    e.set("type", paramTypeName(p.type));
    out.push_back(e);
  }
  return out;
}

} // namespace

Json manifestJson(const Manifest &m) {
  Json j = Json::object();
  j.set("format", m.format);
  j.set("compiler_version", m.compilerVersion);
  j.set("spec_name", m.specName);
  j.set("spec_hash", m.specHash);
  j.set("spec", m.spec);
  j.set("heads_q", m.headsQ);
  j.set("heads_kv", m.headsKv);
  j.set("head_dim", m.headDim);
  j.set("head_dim_v", m.headDimV);
  j.set("dtype", dtypeName(m.dtype));
  j.set("align", m.align);
  j.set("q_offset", m.qOffset ? Json(*m.qOffset) : Json());
  j.set("kv_offset", m.kvOffset ? Json(*m.kvOffset) : Json());
  if (m.qStorage != "padded" || m.kvStorage != "padded") {
    Json st = Json::object();
    st.set("q", m.qStorage);
    st.set("kv", m.kvStorage);
    j.set("storage", st);
  }
  Json outputs = Json::array();
  outputs.push_back("o");
  if (m.hasLse)
    outputs.push_back("lse");
  j.set("outputs", outputs);
  if (m.alignment)
    j.set("alignment", m.alignment);
  Json inputs = Json::array();
  for (const InputDecl &in : m.inputs) {
    Json shape = Json::array();
    for (const Dim &d : in.shape)
      shape.push_back(d.isSymbol() ? Json(d.symbol) : Json(d.size));
    Json e = Json::object();
    e.set("name", in.name);
    e.set("dtype", dtypeName(in.dtype));
    e.set("shape", shape);
    inputs.push_back(e);
  }
  j.set("inputs", inputs);
  Json variants = Json::array();
  for (const Variant &v : m.variants) {
    Json e = Json::object();
    e.set("name", v.name);
    e.set("arch", v.arch);
    e.set("config", v.config);
    e.set("default", v.isDefault);
    e.set("ptx", v.ptx);
    if (v.cubin)
      e.set("cubin", *v.cubin);
    e.set("kernel", v.kernel);
    e.set("threads", v.threads);
    e.set("smem_bytes", v.smemBytes);
    e.set("grid", gridJson(v.grid));
    e.set("params", paramsJson(v.params));
    if (v.splitKv) {
      const SplitKv &s = *v.splitKv;
      Json scratch = Json::object();
      for (size_t k = 0; k < s.scratchNames.size(); ++k)
        scratch.set(s.scratchNames[k], s.scratchBytes[k].text());
      Json combine = Json::object();
      combine.set("kernel", s.kernel);
      combine.set("threads", s.threads);
      combine.set("grid", gridJson(s.grid));
      combine.set("params", paramsJson(s.params));
      Json split = Json::object();
      split.set("scratch", scratch);
      split.set("combine", combine);
      e.set("split_kv", split);
    }
    if (v.compileSeconds)
      e.set("compile_seconds", *v.compileSeconds);
    if (v.ptxas) {
      Json p = Json::object();
      p.set("registers", v.ptxas->registers);
      p.set("spill_stores", v.ptxas->spillStores);
      p.set("spill_loads", v.ptxas->spillLoads);
      p.set("stack_frame", v.ptxas->stackFrame);
      p.set("smem_static", v.ptxas->smemStatic);
      e.set("ptxas", p);
      Json warnings = Json::array();
      for (const std::string &w : v.ptxasWarnings)
        warnings.push_back(Json(w));
      e.set("ptxas_warnings", warnings);
    }
    variants.push_back(e);
  }
  j.set("variants", variants);
  if (!m.hostVariants.empty()) {
    auto kernel = [](const HostKernelDecl &k) {
      Json e = Json::object();
      e.set("entry", k.entry);
      e.set("items", k.items);
      Json serial = Json::array();
      for (int64_t g : k.serialGrids)
        serial.push_back(Json(g));
      e.set("serial_grids", serial);
      e.set("lse", k.lse);
      if (k.sequences)
        e.set("sequences", true);
      return e;
    };
    Json host = Json::array();
    for (const HostVariant &h : m.hostVariants) {
      Json e = Json::object();
      e.set("name", h.name);
      e.set("library", h.library);
      e.set("config", h.config);
      e.set("default", h.isDefault);
      e.set("cpu", h.cpu);
      e.set("features", h.features);
      e.set("forward", kernel(h.forward));
      e.set("backward", h.backward ? kernel(*h.backward) : Json());
      if (!h.backwardError.empty())
        e.set("backward_error", h.backwardError);
      if (h.compileSeconds)
        e.set("compile_seconds", *h.compileSeconds);
      host.push_back(e);
    }
    j.set("host", host);
  }
  return j;
}

std::string specHashOf(const Json &spec) { return sha256Hex(spec.canonical()); }

Manifest loadManifest(const std::string &dir) {
  std::string path = dir + "/manifest.json";
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    throw ManifestError(path + ": cannot read (is '" + dir + "' a kernel bundle directory?)");
  if (!S_ISREG(st.st_mode))
    throw ManifestError(path + ": not a regular file");
  // Real manifests are tens of kilobytes; the bound keeps a damaged or hostile file
  // from being read whole into memory.
  if (uint64_t(st.st_size) > kMaxManifestBytes)
    throw ManifestError(path + ": " + std::to_string(uint64_t(st.st_size)) +
                        " bytes is too large for a manifest (at most " +
                        std::to_string(kMaxManifestBytes) + ")");
  std::ifstream f(path, std::ios::binary);
  if (!f)
    throw ManifestError(path + ": cannot read (is '" + dir + "' a kernel bundle directory?)");
  std::stringstream ss;
  ss << f.rdbuf();
  Json doc;
  try {
    doc = Json::parse(ss.str());
  } catch (const JsonError &e) {
    throw ManifestError(path + ": " + e.what());
  }
  Manifest m = parseManifest(doc, path);
  // Every file a variant names is there now, not at its first launch.
  for (size_t i = 0; i < m.variants.size(); ++i) {
    const Variant &v = m.variants[i];
    auto present = [&](const std::string &file, const char *key) {
      std::string full = dir + "/" + file;
      struct stat fs;
      if (::stat(full.c_str(), &fs) != 0)
        throw ManifestError(path + ": /variants/" + std::to_string(i) + "/" + key +
                            ": variant '" + v.name + "': " + full + ": " + std::strerror(errno));
      if (!S_ISREG(fs.st_mode))
        throw ManifestError(path + ": /variants/" + std::to_string(i) + "/" + key +
                            ": variant '" + v.name + "': " + full + " is not a regular file");
    };
    present(v.ptx, "ptx");
    if (v.cubin)
      present(*v.cubin, "cubin");
  }
  for (size_t i = 0; i < m.hostVariants.size(); ++i) {
    const HostVariant &h = m.hostVariants[i];
    std::string full = dir + "/" + h.library;
    struct stat fs;
    if (::stat(full.c_str(), &fs) != 0 || !S_ISREG(fs.st_mode))
      throw ManifestError(path + ": /host/" + std::to_string(i) + "/library: host variant '" +
                          h.name + "': " + full + ": " +
                          (::stat(full.c_str(), &fs) != 0 ? std::strerror(errno)
                                                           : "not a regular file"));
  }
  return m;
}

} // namespace attune::rt
