//===- Arguments.cpp - host tensors, .npy files, binding to an op ---------===//
#include "codegen/Arguments.h"

#include "dialect/AttnOps.h"

#include "Sequences.h"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cmath>
#include <cstring>
#include <fstream>
#include <optional>

namespace attune {

int64_t HostTensor::numel() const {
  int64_t n = 0;
  // Saturates, so that an impossible shape fails to allocate instead of wrapping.
  return checkedNumel(shape, INT64_MAX, n) ? n : INT64_MAX;
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

/// The header dict of a .npy file: {'descr': '<f4', 'fortran_order': False,
/// 'shape': (2, 3), } and nothing else, parsed strictly (numpy writes exactly this
/// Python literal; anything else is a damaged or foreign file). Errors say where.
class NpyHeaderParser {
public:
  explicit NpyHeaderParser(const std::string &text) : text_(text) {}

  std::string descr;
  std::optional<bool> fortranOrder;
  std::optional<std::vector<int64_t>> shape;

  /// "" on success, else what is wrong.
  std::string parse() {
    skipSpace();
    if (!accept('{'))
      return fail("expected '{' (the header is not a Python dict)");
    bool haveDescr = false;
    while (true) {
      skipSpace();
      if (accept('}'))
        break;
      std::string key;
      size_t keyPos = pos_;
      if (!string(key))
        return error_.empty() ? fail("expected a quoted key or '}'") : error_;
      skipSpace();
      if (!accept(':'))
        return fail("expected ':' after '" + key + "'");
      skipSpace();
      if (key == "descr") {
        if (haveDescr)
          return failAt(keyPos, "'descr' given twice");
        if (!string(descr))
          return error_.empty() ? fail("expected a quoted dtype after 'descr'") : error_;
        haveDescr = true;
      } else if (key == "fortran_order") {
        if (fortranOrder)
          return failAt(keyPos, "'fortran_order' given twice");
        if (word("True"))
          fortranOrder = true;
        else if (word("False"))
          fortranOrder = false;
        else
          return fail("expected True or False after 'fortran_order'");
      } else if (key == "shape") {
        if (shape)
          return failAt(keyPos, "'shape' given twice");
        std::vector<int64_t> dims;
        if (!tuple(dims))
          return error_;
        shape = std::move(dims);
      } else {
        return failAt(keyPos, "unexpected key '" + key +
                                  "' (a .npy header has only 'descr', 'fortran_order' "
                                  "and 'shape')");
      }
      skipSpace();
      if (accept(','))
        continue;
      skipSpace();
      if (accept('}'))
        break;
      return fail("expected ',' or '}'");
    }
    skipSpace();
    if (pos_ != text_.size())
      return fail("unexpected text after the header dict");
    if (!haveDescr)
      return "the header has no 'descr' (dtype)";
    if (!fortranOrder)
      return "the header has no 'fortran_order'";
    if (!shape)
      return "the header has no 'shape'";
    return "";
  }

private:
  // A dimension this large is never a real tensor; it keeps the parse overflow-free.
  static constexpr int64_t kMaxDim = int64_t(1) << 48;
  static constexpr size_t kMaxRank = 32; // numpy's own limit (NPY_MAXDIMS)

  std::string fail(const std::string &message) { return failAt(pos_, message); }
  std::string failAt(size_t pos, const std::string &message) {
    error_ = "bad .npy header at character " + std::to_string(pos + 1) + ": " + message;
    return error_;
  }

  void skipSpace() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r'))
      ++pos_;
  }
  bool accept(char c) {
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool word(const char *w) {
    size_t n = std::strlen(w);
    if (text_.compare(pos_, n, w) != 0)
      return false;
    pos_ += n;
    return true;
  }
  /// A '...' or "..." string without escapes (dtype strings and keys have none).
  bool string(std::string &out) {
    if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"'))
      return false;
    char quote = text_[pos_++];
    size_t end = text_.find(quote, pos_);
    if (end == std::string::npos) {
      fail("unterminated string");
      return false;
    }
    out = text_.substr(pos_, end - pos_);
    if (out.find('\\') != std::string::npos) {
      fail("unexpected escape in a string");
      return false;
    }
    pos_ = end + 1;
    return true;
  }
  /// (), (n,), (n, m), ... of non-negative integers (a trailing L as Python 2 wrote).
  bool tuple(std::vector<int64_t> &dims) {
    if (!accept('(')) {
      fail("expected a tuple of sizes after 'shape'");
      return false;
    }
    while (true) {
      skipSpace();
      if (accept(')'))
        return true;
      size_t start = pos_;
      if (accept('-')) {
        failAt(start, "negative size in the shape");
        return false;
      }
      if (pos_ >= text_.size() || !std::isdigit(static_cast<unsigned char>(text_[pos_]))) {
        fail("expected a non-negative integer size in the shape");
        return false;
      }
      int64_t v = 0;
      while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]))) {
        v = v * 10 + (text_[pos_++] - '0');
        if (v > kMaxDim) {
          failAt(start, "size " + text_.substr(start, 20) + "... in the shape is too large");
          return false;
        }
      }
      accept('L');
      if (dims.size() == kMaxRank) {
        failAt(start, "more than " + std::to_string(kMaxRank) + " dimensions");
        return false;
      }
      dims.push_back(v);
      skipSpace();
      if (accept(','))
        continue;
      skipSpace();
      if (accept(')'))
        return true;
      fail("expected ',' or ')' in the shape");
      return false;
    }
  }

  const std::string &text_;
  size_t pos_ = 0;
  std::string error_;
};

struct NpyDtype {
  const char *descr;
  const char *name;
  char kind; // 'f' or 'i'
  int size;
};
// Little-endian only ('|' is what some writers put for "byte order not applicable").
const NpyDtype kNpyDtypes[] = {
    {"<f4", "float32", 'f', 4}, {"|f4", "float32", 'f', 4}, {"<f8", "float64", 'f', 8},
    {"<i4", "int32", 'i', 4},   {"<i8", "int64", 'i', 8},
};

} // namespace

bool checkedNumel(const std::vector<int64_t> &shape, int64_t limit, int64_t &n) {
  n = 1;
  for (int64_t d : shape)
    if (d < 0 || __builtin_mul_overflow(n, d, &n))
      return false;
  return n <= limit;
}

bool readNpy(const std::string &path, HostTensor &out, std::string &error) {
  auto fail = [&](const std::string &message) {
    error = path + ": " + message;
    return false;
  };
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return fail("cannot open file");
  in.seekg(0, std::ios::end);
  std::streamoff fileSize = in.tellg();
  in.seekg(0, std::ios::beg);
  if (fileSize < 0)
    return fail("cannot determine the file size (not a regular file?)");
  char magic[8];
  if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0)
    return fail("not a .npy file (bad magic)");
  int major = static_cast<unsigned char>(magic[6]), minor = static_cast<unsigned char>(magic[7]);
  uint64_t headerLen = 0;
  int lenBytes = major == 1 ? 2 : 4;
  if (major < 1 || major > 3 || minor != 0)
    return fail("unsupported .npy version " + std::to_string(major) + "." + std::to_string(minor) +
                " (this reader knows 1.0, 2.0 and 3.0)");
  unsigned char b[4] = {0, 0, 0, 0};
  if (!in.read(reinterpret_cast<char *>(b), lenBytes))
    return fail("truncated header (the file ends inside the header length)");
  headerLen = uint64_t(b[0]) | (uint64_t(b[1]) << 8) | (uint64_t(b[2]) << 16) |
              (uint64_t(b[3]) << 24);
  uint64_t dataOffset = 8 + uint64_t(lenBytes) + headerLen;
  if (dataOffset > uint64_t(fileSize))
    return fail("truncated header (the header length says " + std::to_string(headerLen) +
                " bytes, the file holds " + std::to_string(uint64_t(fileSize) - 8 - lenBytes) +
                " after the preamble)");
  // numpy's own headers are a few hundred bytes; this bounds the allocation.
  if (headerLen > (uint64_t(1) << 20))
    return fail("header of " + std::to_string(headerLen) + " bytes is too large (at most 1 MiB)");
  std::string header(size_t(headerLen), '\0');
  if (!in.read(header.data(), std::streamsize(headerLen)))
    return fail("truncated header");
  if (header.find('\0') != std::string::npos)
    return fail("bad .npy header: it holds a NUL byte");

  NpyHeaderParser parser(header);
  std::string why = parser.parse();
  if (!why.empty())
    return fail(why);
  const NpyDtype *dtype = nullptr;
  for (const NpyDtype &d : kNpyDtypes)
    if (parser.descr == d.descr)
      dtype = &d;
  if (!dtype) {
    std::string hint;
    if (!parser.descr.empty() && parser.descr[0] == '>')
      hint = "; big-endian data: save with .astype(x.dtype.newbyteorder('<'))";
    return fail("unsupported dtype '" + parser.descr +
                "' (float32 or float64 for q, k, v and float inputs; int32 or int64 for "
                "integer inputs" + hint + ")");
  }
  if (*parser.fortranOrder)
    return fail("Fortran-ordered arrays are not supported (save a C-contiguous array)");

  HostTensor t;
  t.shape = *parser.shape;
  t.isInt = dtype->kind == 'i';
  t.npyDtype = dtype->name;
  int64_t n = 0;
  if (!checkedNumel(t.shape, INT64_MAX, n))
    return fail("shape " + t.shapeString() + ": the element count overflows 64 bits");
  if (n > kMaxHostElements)
    return fail("shape " + t.shapeString() + " has " + std::to_string(n) +
                " elements, more than the " + std::to_string(kMaxHostElements) +
                " a tensor may have here");
  uint64_t need = uint64_t(n) * uint64_t(dtype->size);
  uint64_t have = uint64_t(fileSize) - dataOffset;
  if (have != need)
    return fail(std::string(have < need ? "file is shorter than" : "file is longer than") +
                " its header says: shape " + t.shapeString() + " of " + dtype->name +
                " needs " + std::to_string(need) + " bytes of data, the file holds " +
                std::to_string(have));
  try {
    t.data.resize(size_t(n));
  } catch (const std::bad_alloc &) {
    return fail("out of memory for " + std::to_string(n) + " elements (shape " +
                t.shapeString() + ")");
  }
  // Converted in chunks, so that the raw bytes never need a second full-size buffer.
  std::vector<char> raw(size_t(1) << 20);
  int64_t perChunk = int64_t(raw.size()) / dtype->size;
  for (int64_t start = 0; start < n; start += perChunk) {
    int64_t count = std::min(perChunk, n - start);
    if (!in.read(raw.data(), std::streamsize(count * dtype->size)))
      return fail("read failed after " + std::to_string(start) + " of " + std::to_string(n) +
                  " elements");
    for (int64_t i = 0; i < count; ++i) {
      const char *p = raw.data() + i * dtype->size;
      double &dst = t.data[size_t(start + i)];
      if (dtype->kind == 'f' && dtype->size == 4) {
        float v;
        std::memcpy(&v, p, 4);
        dst = v;
      } else if (dtype->kind == 'f') {
        std::memcpy(&dst, p, 8);
      } else if (dtype->size == 4) {
        int32_t v;
        std::memcpy(&v, p, 4);
        dst = v;
      } else {
        int64_t v;
        std::memcpy(&v, p, 8);
        if (v < INT32_MIN || v > INT32_MAX)
          return fail("int64 value " + std::to_string(v) + " at element " +
                      std::to_string(start + i) + " does not fit in int32");
        dst = double(v);
      }
    }
  }
  out = std::move(t);
  return true;
}

bool writeNpy(const std::string &path, const HostTensor &t, std::string &error) {
  int64_t n = 0;
  if (!checkedNumel(t.shape, INT64_MAX, n) || uint64_t(n) != t.data.size()) {
    error = path + ": internal error: a tensor of shape " + t.shapeString() + " holds " +
            std::to_string(t.data.size()) + " values";
    return false;
  }
  // A Python tuple literal: (), (n,), (n, m) -- numpy reads back exactly this shape,
  // zero sizes included.
  std::string shape = "(";
  for (size_t i = 0; i < t.shape.size(); ++i)
    shape += (i ? ", " : "") + std::to_string(t.shape[i]);
  shape += t.shape.size() == 1 ? ",)" : ")";
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

/// q, k, v and the sequence arguments of a per-sequence call: the sequences planned
/// and checked by rt::planSequences (the runtime's own checks), then the buffers'
/// heads and head dims by storage, and B, Sq, Skv bound to the batch and the longest
/// lengths for the inputs.
static bool bindSequences(const AttentionArgs &args, ShapeChecker &shapes, BoundCall &call,
                          std::string &error) {
  auto array = [](const std::optional<HostTensor> &t) {
    rt::IntArray a;
    if (!t)
      return a;
    a.present = true;
    a.isInt = t->isInt;
    a.dtype = t->npyDtype;
    a.shape = t->shape;
    const HostTensor *p = &*t;
    a.at = [p](int64_t i) { return int64_t(p->data[size_t(i)]); };
    return a;
  };
  rt::SequenceArrays arrays{array(args.seq.cuSeqlensQ), array(args.seq.cuSeqlensKv),
                            array(args.seq.pageTable), array(args.seq.kvLens),
                            array(args.seq.qLens)};
  arrays.maxSeqlenQ = args.seq.maxSeqlenQ;
  arrays.maxSeqlenKv = args.seq.maxSeqlenKv;
  rt::SequenceReads reads =
      rt::sequenceReads(call.qStorage, call.kvStorage, args.seq.onDevice, args.seq.validate,
                        args.seq.maxSeqlenQ, args.seq.maxSeqlenKv);
  if (!reads.pageIds)
    arrays.pageTable.at = nullptr;
  if (!reads.lengths) {
    arrays.lengthsVisible = false;
    for (rt::IntArray *a : {&arrays.cuSeqlensQ, &arrays.cuSeqlensKv, &arrays.kvLens, &arrays.qLens})
      a->at = nullptr;
  }
  rt::SequencePlan plan;
  error = rt::planSequences(call.qStorage, call.kvStorage, args.q.shape, args.k.shape, arrays, plan);
  if (!error.empty())
    return false;
  bool qRagged = call.qStorage == "ragged";
  const std::string &kv = call.kvStorage;
  std::map<std::string, int64_t> &sym = shapes.symbols;
  sym["B"] = plan.batch;
  auto check = [&](const char *name, const HostTensor &t, std::vector<std::string> dims) {
    if (!shapes.check(name, t, dims)) {
      error = shapes.error;
      return false;
    }
    return true;
  };
  if (!check("q", args.q, qRagged ? std::vector<std::string>{"total_q", "Hq", "D"}
                                   : std::vector<std::string>{"B", "Hq", "Sq", "D"}))
    return false;
  std::vector<std::string> kDims =
      kv == "ragged"  ? std::vector<std::string>{"total_kv", "Hkv", "D"}
      : kv == "paged" ? std::vector<std::string>{"pages", "page_size", "Hkv", "D"}
                      : std::vector<std::string>{"B", "Hkv", "Skv", "D"};
  std::vector<std::string> vDims = kDims;
  vDims.back() = "Dv";
  if (!check("k", args.k, kDims) || !check("v", args.v, vDims))
    return false;
  call.batch = plan.batch;
  call.pageSize = plan.pageSize;
  call.numPages = plan.numPages;
  call.sequences.clear();
  for (const rt::SequenceRows &r : plan.sequences)
    call.sequences.push_back({r.qLen, r.kvLen, r.qRow0, r.kvRow0, 0, 0});
  call.seqQ = plan.seqQ;
  call.seqKv = plan.seqKv;
  call.maxSeqQ = plan.maxSeqQ;
  sym["Sq"] = call.seqQ;
  sym["Skv"] = call.seqKv;
  return true;
}

bool bindArguments(mlir::attn::AttentionOp op, const AttentionArgs &args,
                   BoundCall &call, std::string &error) {
  ShapeChecker shapes;
  int64_t hq = op.getHeadsQ(), hkv = op.getHeadsKv(), d = op.getHeadDim(),
          dv = op.getHeadDimV();
  shapes.symbols = {{"Hq", hq}, {"Hkv", hkv}, {"D", d}, {"Dv", dv}};
  // Data and shape agree (a tensor not read by readNpy may be inconsistent), and no
  // tensor is larger than a host tensor may be.
  auto consistent = [&](const std::string &name, const HostTensor &t) {
    int64_t n = 0;
    if (!checkedNumel(t.shape, kMaxHostElements, n)) {
      error = name + ": shape " + t.shapeString() + " has more than " +
              std::to_string(kMaxHostElements) + " elements";
      return false;
    }
    if (uint64_t(n) != t.data.size()) {
      error = name + ": holds " + std::to_string(t.data.size()) + " values but its shape " +
              t.shapeString() + " has " + std::to_string(n) + " elements";
      return false;
    }
    return true;
  };
  auto typeName = [](const HostTensor &t) {
    return t.npyDtype.empty() ? std::string(t.isInt ? "integers" : "floats") : t.npyDtype;
  };
  auto isFloat = [&](const char *name, const HostTensor &t) {
    if (!consistent(name, t))
      return false;
    if (t.isInt) {
      error = std::string(name) + ": must be float32 (or float64), got " + typeName(t);
      return false;
    }
    return true;
  };
  if (!isFloat("q", args.q) || !isFloat("k", args.k) || !isFloat("v", args.v))
    return false;
  auto storageName = [](std::optional<mlir::attn::Storage> s) {
    return std::string(s ? mlir::attn::stringifyStorage(*s) : "padded");
  };
  call.qStorage = storageName(op.getQStorage());
  call.kvStorage = storageName(op.getKvStorage());
  if (args.logical)
    call.qStorage = call.kvStorage = "padded";
  call.perSequence = call.qStorage != "padded" || call.kvStorage != "padded" || args.seq.any();
  if (!call.perSequence) {
    if (!shapes.check("q", args.q, {"B", "Hq", "Sq", "D"}) ||
        !shapes.check("k", args.k, {"B", "Hkv", "Skv", "D"}) ||
        !shapes.check("v", args.v, {"B", "Hkv", "Skv", "Dv"})) {
      error = shapes.error;
      return false;
    }
    call.batch = shapes.symbols["B"];
    call.seqQ = shapes.symbols["Sq"];
    call.seqKv = shapes.symbols["Skv"];
    call.maxSeqQ = call.seqQ;
  } else if (!bindSequences(args, shapes, call, error)) {
    return false;
  }
  call.headsQ = hq;
  call.headsKv = hkv;
  call.headDim = d;
  call.headDimV = dv;
  // The outputs the back ends allocate: o [B, Hq, Sq, Dv] (lse is smaller).
  int64_t outElements = 0;
  if (!checkedNumel({call.batch, hq, call.seqQ, dv}, kMaxHostElements, outElements)) {
    error = "o: the output [B=" + std::to_string(call.batch) + ", Hq=" + std::to_string(hq) +
            ", Sq=" + std::to_string(call.seqQ) + ", Dv=" + std::to_string(dv) +
            "] would have more than " + std::to_string(kMaxHostElements) + " elements";
    return false;
  }

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
    if (!consistent("input '" + name + "'", it->second))
      return false;
    if (it->second.isInt != wantInt) {
      error = "input '" + name + "': must be " +
              (wantInt ? "int32 (or int64 with int32 values)" : "float32 (or float64)") +
              ", got " + typeName(it->second);
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
  call.oShape = call.qStorage == "ragged"
                    ? std::vector<int64_t>{args.q.shape[0], hq, dv}
                    : std::vector<int64_t>{call.batch, hq, call.seqQ, dv};
  call.lseShape = call.qStorage == "ragged" ? std::vector<int64_t>{args.q.shape[0], hq}
                                            : std::vector<int64_t>{call.batch, hq, call.seqQ};
  if (call.perSequence) {
    // Bottom-right alignment per sequence: each sequence's last query sits at its
    // last key, unless the caller or the spec gives the offset.
    call.qOffsetFromLengths = !args.qOffset && !op.getDefaultQOffset() &&
                              op.getAlign() == mlir::attn::Align::bottom_right;
    if (call.qOffsetFromLengths)
      call.qOffset = 0;
    for (SequenceView &s : call.sequences) {
      s.qOffset = call.qOffset + (call.qOffsetFromLengths ? s.kvLen - s.qLen : 0);
      s.kvOffset = call.kvOffset;
    }
  }
  return true;
}

AttentionArgs gatherSequence(mlir::attn::AttentionOp op, const AttentionArgs &args,
                             const BoundCall &call, int64_t b) {
  const SequenceView &s = call.sequences[size_t(b)];
  AttentionArgs out;
  out.logical = true;
  out.qOffset = s.qOffset;
  out.kvOffset = s.kvOffset;
  // Row r of sequence b in a buffer of `storage` (one of q's or k/v's).
  auto gather = [&](const HostTensor &t, const std::string &storage, int64_t heads,
                    int64_t len, int64_t row0, int64_t width) {
    HostTensor d = HostTensor::zeros({1, heads, len, width});
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t r = 0; r < len; ++r) {
        int64_t base;
        if (storage == "ragged") {
          base = ((row0 + r) * heads + h) * width;
        } else if (storage == "paged") {
          const HostTensor &pt = *args.seq.pageTable;
          int64_t page = int64_t(pt.data[size_t(b * pt.shape[1] + r / call.pageSize)]);
          base = ((page * call.pageSize + r % call.pageSize) * heads + h) * width;
        } else {
          base = ((b * heads + h) * t.shape[2] + r) * width;
        }
        for (int64_t x = 0; x < width; ++x)
          d.data[size_t((h * len + r) * width + x)] = t.data[size_t(base + x)];
      }
    return d;
  };
  out.q = gather(args.q, call.qStorage, call.headsQ, s.qLen, s.qRow0, call.headDim);
  out.k = gather(args.k, call.kvStorage, call.headsKv, s.kvLen, s.kvRow0, call.headDim);
  out.v = gather(args.v, call.kvStorage, call.headsKv, s.kvLen, s.kvRow0, call.headDimV);
  // Inputs: B -> b, Sq -> the first q_len, Skv -> the first kv_len; other dims whole.
  auto names = op.getInputNames();
  auto dims = op.getInputDims();
  for (size_t i = 0; i < names.size(); ++i) {
    const HostTensor &t = *call.inputs[i];
    std::vector<int64_t> lo(t.shape.size(), 0), size = t.shape;
    for (size_t r = 0; r < t.shape.size(); ++r) {
      mlir::Attribute a = dims.empty() ? mlir::Attribute() : llvm::cast<mlir::ArrayAttr>(dims[i])[r];
      auto sym = llvm::dyn_cast_or_null<mlir::StringAttr>(a);
      if (!sym)
        continue;
      if (sym.getValue() == "B")
        lo[r] = b, size[r] = 1;
      else if (sym.getValue() == "Sq")
        size[r] = s.qLen;
      else if (sym.getValue() == "Skv")
        size[r] = s.kvLen;
    }
    HostTensor d = HostTensor::zeros(size, t.isInt);
    d.npyDtype = t.npyDtype;
    int64_t n = d.numel();
    for (int64_t e = 0; e < n; ++e) {
      int64_t rest = e, src = 0, stride = 1;
      for (size_t r = t.shape.size(); r-- > 0;) {
        int64_t c = rest % size[r];
        rest /= size[r];
        src += (lo[r] + c) * stride;
        stride *= t.shape[r];
      }
      d.data[size_t(e)] = t.data[size_t(src)];
    }
    out.inputs[llvm::cast<mlir::StringAttr>(names[i]).str()] = std::move(d);
  }
  return out;
}

void scatterSequence(const BoundCall &call, int64_t b, const HostTensor &o,
                     const HostTensor *lse, HostTensor &outO, HostTensor *outLse) {
  const SequenceView &s = call.sequences[size_t(b)];
  bool ragged = call.qStorage == "ragged";
  int64_t hq = call.headsQ, dv = call.headDimV;
  for (int64_t h = 0; h < hq; ++h)
    for (int64_t r = 0; r < s.qLen; ++r) {
      int64_t row = ragged ? (s.qRow0 + r) * hq + h : (b * hq + h) * call.seqQ + r;
      for (int64_t x = 0; x < dv; ++x)
        outO.data[size_t(row * dv + x)] = o.data[size_t((h * s.qLen + r) * dv + x)];
      if (lse && outLse)
        outLse->data[size_t(row)] = lse->data[size_t(h * s.qLen + r)];
    }
}

void allocateOutputs(const BoundCall &call, bool lse, HostTensor &o, HostTensor &outLse) {
  o = HostTensor::zeros(call.oShape);
  if (lse) {
    outLse = HostTensor::zeros(call.lseShape);
    std::fill(outLse.data.begin(), outLse.data.end(), -HUGE_VAL);
  }
}

} // namespace attune
