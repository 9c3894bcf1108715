//===- Arguments.cpp - host tensors, .npy files, binding to an op ---------===//
#include "codegen/Arguments.h"

#include "dialect/AttnOps.h"

#include <cstring>
#include <fstream>
#include <sstream>

namespace attune {

int64_t HostTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

HostTensor HostTensor::zeros(std::vector<int64_t> shape, bool isInt) {
  HostTensor t;
  t.shape = std::move(shape);
  t.isInt = isInt;
  t.data.assign(static_cast<size_t>(t.numel()), 0.0);
  return t;
}

std::string HostTensor::shapeString() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

//===----------------------------------------------------------------------===//
// .npy
//===----------------------------------------------------------------------===//

namespace {

/// Value of `key` in the header dict, e.g. "'<f4'" for 'descr'.
std::string headerField(const std::string &header, const std::string &key) {
  auto pos = header.find("'" + key + "'");
  if (pos == std::string::npos)
    return "";
  pos = header.find(':', pos);
  if (pos == std::string::npos)
    return "";
  ++pos;
  while (pos < header.size() && header[pos] == ' ')
    ++pos;
  if (pos < header.size() && header[pos] == '(') {
    auto end = header.find(')', pos);
    return end == std::string::npos ? "" : header.substr(pos, end - pos + 1);
  }
  auto end = header.find_first_of(",}", pos);
  return end == std::string::npos ? "" : header.substr(pos, end - pos);
}

bool parseShape(const std::string &field, std::vector<int64_t> &shape) {
  if (field.size() < 2 || field.front() != '(' || field.back() != ')')
    return false;
  std::string inner = field.substr(1, field.size() - 2);
  std::stringstream ss(inner);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t a = item.find_first_not_of(" \t");
    if (a == std::string::npos)
      continue;
    size_t b = item.find_last_not_of(" \tL");
    std::string num = item.substr(a, b - a + 1);
    if (num.empty() || num.find_first_not_of("0123456789") != std::string::npos ||
        num.size() > 12)
      return false;
    shape.push_back(std::stoll(num));
  }
  return true;
}

} // namespace

bool readNpy(const std::string &path, HostTensor &out, std::string &error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = path + ": cannot open file";
    return false;
  }
  char magic[8];
  if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) {
    error = path + ": not a .npy file (bad magic)";
    return false;
  }
  uint32_t headerLen = 0;
  if (magic[6] == 1) {
    unsigned char b[2];
    if (!in.read(reinterpret_cast<char *>(b), 2)) {
      error = path + ": truncated header";
      return false;
    }
    headerLen = b[0] | (b[1] << 8);
  } else if (magic[6] == 2 || magic[6] == 3) {
    unsigned char b[4];
    if (!in.read(reinterpret_cast<char *>(b), 4)) {
      error = path + ": truncated header";
      return false;
    }
    headerLen = b[0] | (b[1] << 8) | (b[2] << 16) | (uint32_t(b[3]) << 24);
  } else {
    error = path + ": unsupported .npy version " + std::to_string(int(magic[6]));
    return false;
  }
  if (headerLen > (1u << 20)) {
    error = path + ": header too large";
    return false;
  }
  std::string header(headerLen, '\0');
  if (!in.read(header.data(), headerLen)) {
    error = path + ": truncated header";
    return false;
  }
  std::string descr = headerField(header, "descr");
  std::string fortran = headerField(header, "fortran_order");
  std::vector<int64_t> shape;
  if (!parseShape(headerField(header, "shape"), shape)) {
    error = path + ": cannot read the shape in the header";
    return false;
  }
  if (fortran.find("True") != std::string::npos) {
    error = path + ": Fortran-ordered arrays are not supported (save a C-contiguous array)";
    return false;
  }
  int size = 0;
  char kind = 0;
  if (descr == "'<f4'" || descr == "'|f4'")
    kind = 'f', size = 4;
  else if (descr == "'<f8'")
    kind = 'f', size = 8;
  else if (descr == "'<i4'")
    kind = 'i', size = 4;
  else if (descr == "'<i8'")
    kind = 'i', size = 8;
  else {
    error = path + ": unsupported dtype " + descr +
            " (use float32 for q/k/v and float inputs, int32 for integer inputs)";
    return false;
  }
  HostTensor t;
  t.shape = shape;
  t.isInt = kind == 'i';
  int64_t n = t.numel();
  if (n < 0 || n > (int64_t(1) << 34)) {
    error = path + ": array too large";
    return false;
  }
  std::vector<char> raw(static_cast<size_t>(n) * size);
  if (!in.read(raw.data(), static_cast<std::streamsize>(raw.size()))) {
    error = path + ": file is shorter than its shape " + t.shapeString() + " says";
    return false;
  }
  t.data.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const char *p = raw.data() + i * size;
    if (kind == 'f' && size == 4) {
      float v;
      std::memcpy(&v, p, 4);
      t.data[i] = v;
    } else if (kind == 'f') {
      std::memcpy(&t.data[i], p, 8);
    } else if (size == 4) {
      int32_t v;
      std::memcpy(&v, p, 4);
      t.data[i] = v;
    } else {
      int64_t v;
      std::memcpy(&v, p, 8);
      if (v < INT32_MIN || v > INT32_MAX) {
        error = path + ": int64 value " + std::to_string(v) + " does not fit in int32";
        return false;
      }
      t.data[i] = double(v);
    }
  }
  out = std::move(t);
  return true;
}

bool writeNpy(const std::string &path, const HostTensor &t, std::string &error) {
  std::string shape = "(";
  for (size_t i = 0; i < t.shape.size(); ++i)
    shape += std::to_string(t.shape[i]) + (t.shape.size() == 1 || i + 1 < t.shape.size() ? "," : "");
  shape += ")";
  std::string header = "{'descr': '" + std::string(t.isInt ? "<i4" : "<f4") +
                       "', 'fortran_order': False, 'shape': " + shape + ", }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  if (!out) {
    error = path + ": cannot write file";
    return false;
  }
  out.write("\x93NUMPY\x01\x00", 8);
  uint16_t len = static_cast<uint16_t>(header.size());
  char lenBytes[2] = {char(len & 0xff), char(len >> 8)};
  out.write(lenBytes, 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  for (double v : t.data) {
    if (t.isInt) {
      int32_t x = static_cast<int32_t>(v);
      out.write(reinterpret_cast<const char *>(&x), 4);
    } else {
      float x = static_cast<float>(v);
      out.write(reinterpret_cast<const char *>(&x), 4);
    }
  }
  if (!out) {
    error = path + ": write failed";
    return false;
  }
  return true;
}

//===----------------------------------------------------------------------===//
// Binding
//===----------------------------------------------------------------------===//

namespace {

/// Binds symbols to sizes, and explains mismatches.
class ShapeChecker {
public:
  std::map<std::string, int64_t> symbols;
  std::string error;

  /// `expected` names each dim: a symbol, or a number as text.
  bool check(const std::string &arg, const HostTensor &t,
             const std::vector<std::string> &expected) {
    if (t.shape.size() != expected.size())
      return fail(arg, t, expected, "rank " + std::to_string(expected.size()));
    for (size_t i = 0; i < expected.size(); ++i) {
      const std::string &e = expected[i];
      int64_t actual = t.shape[i];
      if (!e.empty() && (std::isdigit(static_cast<unsigned char>(e[0])))) {
        if (std::stoll(e) != actual)
          return fail(arg, t, expected, "dimension " + std::to_string(i) + " = " + e);
        continue;
      }
      auto [it, inserted] = symbols.emplace(e, actual);
      if (!inserted && it->second != actual)
        return fail(arg, t, expected,
                    "dimension " + std::to_string(i) + " = " + e + " = " +
                        std::to_string(it->second) + " (bound earlier)");
    }
    return true;
  }

private:
  bool fail(const std::string &arg, const HostTensor &t,
            const std::vector<std::string> &expected, const std::string &why) {
    std::string e = "[";
    for (size_t i = 0; i < expected.size(); ++i) {
      e += i ? ", " : "";
      auto it = symbols.find(expected[i]);
      e += expected[i];
      if (it != symbols.end() && !std::isdigit(static_cast<unsigned char>(expected[i][0])))
        e += "=" + std::to_string(it->second);
    }
    e += "]";
    error = arg + ": expected " + e + ", got " + t.shapeString() + " (" + why + ")";
    return false;
  }
};

} // namespace

bool bindArguments(mlir::attn::AttentionOp op, const AttentionArgs &args,
                   BoundCall &call, std::string &error) {
  ShapeChecker shapes;
  int64_t hq = op.getHeadsQ(), hkv = op.getHeadsKv(), d = op.getHeadDim(),
          dv = op.getHeadDimV();
  shapes.symbols = {{"Hq", hq}, {"Hkv", hkv}, {"D", d}, {"Dv", dv}};
  auto isFloat = [&](const char *name, const HostTensor &t) {
    if (t.isInt) {
      error = std::string(name) + ": must be a float tensor, got integers";
      return false;
    }
    return true;
  };
  if (!isFloat("q", args.q) || !isFloat("k", args.k) || !isFloat("v", args.v))
    return false;
  if (!shapes.check("q", args.q, {"B", "Hq", "Sq", "D"}) ||
      !shapes.check("k", args.k, {"B", "Hkv", "Skv", "D"}) ||
      !shapes.check("v", args.v, {"B", "Hkv", "Skv", "Dv"})) {
    error = shapes.error;
    return false;
  }
  call.batch = shapes.symbols["B"];
  call.seqQ = shapes.symbols["Sq"];
  call.seqKv = shapes.symbols["Skv"];
  call.headsQ = hq;
  call.headsKv = hkv;
  call.headDim = d;
  call.headDimV = dv;

  call.inputs.clear();
  auto names = op.getInputNames();
  auto dims = op.getInputDims();
  for (size_t i = 0; i < names.size(); ++i) {
    std::string name = llvm::cast<mlir::StringAttr>(names[i]).getValue().str();
    auto it = args.inputs.find(name);
    if (it == args.inputs.end()) {
      error = "input '" + name + "' is missing (pass --input " + name + "=FILE.npy)";
      return false;
    }
    auto type = llvm::cast<mlir::RankedTensorType>(op.getInputs()[i].getType());
    bool wantInt = type.getElementType().isInteger(32) || type.getElementType().isInteger(64);
    if (it->second.isInt != wantInt) {
      error = "input '" + name + "': must be " + (wantInt ? "int32" : "float32") +
              ", got " + (it->second.isInt ? "integers" : "floats");
      return false;
    }
    std::vector<std::string> expected;
    for (int64_t r = 0; r < type.getRank(); ++r) {
      mlir::Attribute a = dims.empty() ? mlir::Attribute() : llvm::cast<mlir::ArrayAttr>(dims[i])[r];
      if (auto s = llvm::dyn_cast_or_null<mlir::StringAttr>(a))
        expected.push_back(s.getValue().str());
      else if (!type.isDynamicDim(r))
        expected.push_back(std::to_string(type.getDimSize(r)));
      else
        expected.push_back(name + "#" + std::to_string(r));
    }
    if (!shapes.check("input '" + name + "'", it->second, expected)) {
      error = shapes.error;
      return false;
    }
    call.inputs.push_back(&it->second);
  }
  for (const auto &[name, t] : args.inputs) {
    bool known = false;
    for (auto n : names)
      known |= llvm::cast<mlir::StringAttr>(n).getValue() == name;
    if (!known) {
      error = "input '" + name + "' is not declared by the spec";
      return false;
    }
  }

  if (args.kvOffset)
    call.kvOffset = *args.kvOffset;
  else
    call.kvOffset = op.getDefaultKvOffset().value_or(0);
  if (args.qOffset)
    call.qOffset = *args.qOffset;
  else if (auto q = op.getDefaultQOffset())
    call.qOffset = *q;
  else
    call.qOffset = op.getAlign() == mlir::attn::Align::top_left ? 0 : call.seqKv - call.seqQ;
  return true;
}

} // namespace attune
