//===- PatternFormulaTest.cpp - PATTERNS.md formulas vs the reference -------===//
//
// Every pattern of shared/PATTERNS.md (masks, combinators, score transforms, the
// expression language, normalisers, rotary embeddings) is written here a second
// time, independently of codegen/reference/, as a dense float64 model: a mask is a
// plain lambda over (b, h, i, j, P(i), K(j)), a score transform a lambda over the
// score, and softmax / sigmoid / relu and RoPE are computed here from their
// formulas. Each case builds a spec, imports it, runs attune::runReference on random
// inputs and compares o (and lse) element by element at ~1e-9.
//
// Seeds are fresh on every run (std::random_device); a failure prints the seed, and
// ATTUNE_TEST_SEED=<n> reproduces it.
//
//===----------------------------------------------------------------------===//
#include "codegen/Diagnostics.h"
#include "codegen/reference/Reference.h"
#include "specs/Importer.h"

#include "mlir/IR/MLIRContext.h"
#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using json = nlohmann::json;
using attune::HostTensor;

namespace {

//===----------------------------------------------------------------------===//
// Seeds and random numbers
//===----------------------------------------------------------------------===//

uint64_t baseSeed() {
  static const uint64_t seed = [] {
    if (const char *env = std::getenv("ATTUNE_TEST_SEED"))
      if (*env)
        return uint64_t(std::strtoull(env, nullptr, 0));
    std::random_device rd;
    return (uint64_t(rd()) << 32) ^ uint64_t(rd());
  }();
  return seed;
}

uint64_t fnv1a(const std::string &s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

class SeedEnvironment : public ::testing::Environment {
public:
  void SetUp() override {
    std::printf("[   SEED   ] ATTUNE_TEST_SEED=%llu\n",
                static_cast<unsigned long long>(baseSeed()));
  }
};
::testing::Environment *const kSeedEnvironment =
    ::testing::AddGlobalTestEnvironment(new SeedEnvironment);

uint64_t testSeed() {
  const auto *info = ::testing::UnitTest::GetInstance()->current_test_info();
  return baseSeed() ^ fnv1a(std::string(info->test_suite_name()) + "." + info->name());
}

std::string seedMessage() {
  return "seed: reproduce with ATTUNE_TEST_SEED=" + std::to_string(baseSeed()) +
         " (this test's stream " + std::to_string(testSeed()) + ")";
}

struct Rng {
  std::mt19937_64 g;
  explicit Rng(uint64_t seed) : g(seed) {}
  int64_t uni(int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(g);
  }
  double real(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(g); }
  /// A double that is exactly a float (so an f32 input holds it exactly).
  double f32(double lo, double hi) { return double(float(real(lo, hi))); }
  bool coin(double p = 0.5) { return std::bernoulli_distribution(p)(g); }
  template <class T> T pick(const std::vector<T> &v) {
    return v[size_t(uni(0, int64_t(v.size()) - 1))];
  }
};

#define SEEDED_RNG(rng)                                                                  \
  Rng rng(testSeed());                                                                   \
  SCOPED_TRACE(seedMessage())

//===----------------------------------------------------------------------===//
// Integer arithmetic with Python semantics
//===----------------------------------------------------------------------===//

int64_t floorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if (a % b != 0 && ((a < 0) != (b < 0)))
    --q;
  return q;
}
int64_t floorMod(int64_t a, int64_t b) {
  int64_t r = a % b;
  if (r != 0 && ((r < 0) != (b < 0)))
    r += b;
  return r;
}
/// Run-time division / modulo by zero yields 0 (PATTERNS.md, expression language).
int64_t divz(int64_t a, int64_t b) { return b == 0 ? 0 : floorDiv(a, b); }
int64_t modz(int64_t a, int64_t b) { return b == 0 ? 0 : floorMod(a, b); }

//===----------------------------------------------------------------------===//
// Host tensors
//===----------------------------------------------------------------------===//

HostTensor floatTensor(std::vector<int64_t> shape, Rng &rng, double lo = -1.0,
                       double hi = 1.0) {
  HostTensor t;
  t.shape = std::move(shape);
  t.isInt = false;
  int64_t n = 1;
  for (int64_t s : t.shape)
    n *= s;
  t.data.resize(size_t(n));
  for (double &x : t.data)
    x = rng.f32(lo, hi);
  return t;
}

HostTensor intTensor(std::vector<int64_t> shape, const std::function<int64_t()> &gen) {
  HostTensor t;
  t.shape = std::move(shape);
  t.isInt = true;
  int64_t n = 1;
  for (int64_t s : t.shape)
    n *= s;
  t.data.resize(size_t(n));
  for (double &x : t.data)
    x = double(gen());
  return t;
}

/// Reads t at idx; an index outside the tensor sets `oob` and reads nothing.
double at(const HostTensor &t, std::initializer_list<int64_t> idx, bool &oob) {
  if (idx.size() != t.shape.size()) {
    oob = true;
    return 0.0;
  }
  int64_t off = 0;
  size_t r = 0;
  for (int64_t x : idx) {
    if (x < 0 || x >= t.shape[r]) {
      oob = true;
      return 0.0;
    }
    off = off * t.shape[r] + x;
    ++r;
  }
  return t.data[size_t(off)];
}

//===----------------------------------------------------------------------===//
// The model: masks, score transforms, rope, normalisers
//===----------------------------------------------------------------------===//

struct Pos {
  int64_t b, h, i, j, P, K, Sq, Skv, Hq;
  int64_t d() const { return P - K; }
};
using MaskFn = std::function<bool(const Pos &, bool &oob)>;
using ScoreFn = std::function<double(double s, const Pos &, bool &oob)>;

// Masks, straight from the PATTERNS.md table.
MaskFn mCausal() {
  return [](const Pos &p, bool &) { return p.d() >= 0; };
}
MaskFn mWindow(int64_t left, int64_t right) {
  return [=](const Pos &p, bool &) {
    int64_t d = p.d();
    return (right == -1 || d >= -right) && (left == -1 || d <= left);
  };
}
MaskFn mDilatedWindow(int64_t left, int64_t right, int64_t r) {
  return [=](const Pos &p, bool &) {
    int64_t d = p.d();
    return (right == -1 || d >= -right) && (left == -1 || d <= left) && floorMod(d, r) == 0;
  };
}
MaskFn mSinks(int64_t count) {
  return [=](const Pos &p, bool &) { return p.K < count; };
}
MaskFn mGlobalCount(int64_t g) {
  return [=](const Pos &p, bool &) {
    return (p.K >= 0 && p.K < g) || (p.P >= 0 && p.P < g);
  };
}
MaskFn mGlobalList(std::vector<int64_t> tokens) {
  std::set<int64_t> set(tokens.begin(), tokens.end());
  return [=](const Pos &p, bool &) { return set.count(p.K) > 0 || set.count(p.P) > 0; };
}
MaskFn mPrefix(int64_t prefix) {
  return [=](const Pos &p, bool &) { return p.K < prefix || p.d() >= 0; };
}
MaskFn mPrefixTensor(HostTensor prefix) {
  return [=](const Pos &p, bool &oob) {
    int64_t n = int64_t(at(prefix, {p.b}, oob));
    return p.K < n || p.d() >= 0;
  };
}
MaskFn mDocument(HostTensor qIds, HostTensor kvIds) {
  return [=](const Pos &p, bool &oob) {
    double a = at(qIds, {p.b, p.i}, oob);
    double c = at(kvIds, {p.b, p.j}, oob);
    return a == c;
  };
}
MaskFn mBuckets(HostTensor qb, HostTensor kb) {
  return [=](const Pos &p, bool &oob) {
    double a = at(qb, {p.b, p.h, p.i}, oob);
    double c = at(kb, {p.b, p.h, p.j}, oob);
    return a == c;
  };
}
MaskFn mKeep(HostTensor keep) {
  return [=](const Pos &p, bool &oob) { return at(keep, {p.b, p.h, p.j}, oob) != 0.0; };
}
MaskFn mStrided(int64_t l) {
  return [=](const Pos &p, bool &) {
    int64_t d = p.d();
    return d >= 0 && (d < l || floorMod(d, l) == 0);
  };
}
MaskFn mFixed(int64_t l, int64_t c) {
  return [=](const Pos &p, bool &) {
    return p.d() >= 0 &&
           (floorDiv(p.K, l) == floorDiv(p.P, l) || floorMod(p.K, l) >= l - c);
  };
}
MaskFn mDilatedSegments(int64_t w, int64_t r, std::optional<int64_t> headOffset) {
  return [=](const Pos &p, bool &) {
    int64_t o = headOffset ? *headOffset : floorMod(p.h, r);
    return floorDiv(p.P, w) == floorDiv(p.K, w) && floorMod(p.P, r) == o &&
           floorMod(p.K, r) == o;
  };
}
MaskFn mShiftedGroups(int64_t g, std::optional<std::set<int64_t>> heads) {
  return [=](const Pos &p, bool &) {
    bool shifted = heads ? heads->count(p.h) > 0 : p.h >= p.Hq / 2;
    int64_t s = shifted ? g / 2 : 0;
    return floorDiv(p.P + s, g) == floorDiv(p.K + s, g);
  };
}
MaskFn mVerticalSlash(HostTensor cols, HostTensor diags) {
  return [=](const Pos &p, bool &) {
    bool in = false;
    for (int64_t n = 0; n < cols.shape[2]; ++n)
      in |= cols.data[size_t((p.b * cols.shape[1] + p.h) * cols.shape[2] + n)] == double(p.j);
    for (int64_t n = 0; n < diags.shape[2]; ++n)
      in |= diags.data[size_t((p.b * diags.shape[1] + p.h) * diags.shape[2] + n)] ==
            double(p.d());
    return in;
  };
}
MaskFn mBlockList(int64_t bm, int64_t bn, HostTensor blocks) {
  return [=](const Pos &p, bool &oob) {
    int64_t row = floorDiv(p.i, bm);
    int64_t col = floorDiv(p.j, bn);
    if (row >= blocks.shape[2]) {
      oob = true;
      return false;
    }
    bool in = false;
    for (int64_t n = 0; n < blocks.shape[3]; ++n)
      in |= blocks.data[size_t(((p.b * blocks.shape[1] + p.h) * blocks.shape[2] + row) *
                                   blocks.shape[3] +
                               n)] == double(col);
    return in;
  };
}
// Combinators evaluate every child: a read outside a tensor anywhere masks the pair.
MaskFn mAll(std::vector<MaskFn> ms) {
  return [=](const Pos &p, bool &oob) {
    bool r = true;
    for (const MaskFn &m : ms)
      r = m(p, oob) && r;
    return r;
  };
}
MaskFn mAny(std::vector<MaskFn> ms) {
  return [=](const Pos &p, bool &oob) {
    bool r = false;
    for (const MaskFn &m : ms)
      r = m(p, oob) || r;
    return r;
  };
}
MaskFn mNot(MaskFn m) {
  return [=](const Pos &p, bool &oob) { return !m(p, oob); };
}

// Spec JSON for masks.
json node(const std::string &key, json params = json::object()) {
  json j = json::object();
  j[key] = std::move(params);
  return j;
}
json jAll(std::vector<json> xs) { return node("all", json(xs)); }
json jAny(std::vector<json> xs) { return node("any", json(xs)); }

// ALiBi slopes, as ofirpress/attention_with_linear_biases computes them:
// start = 2^(-2^-(log2(n) - 3)), slopes = start * start^i.
std::vector<double> alibiSlopesModel(int64_t n) {
  auto pow2 = [](int64_t m) {
    double start = std::pow(2.0, -std::pow(2.0, -(std::log2(double(m)) - 3.0)));
    std::vector<double> s;
    for (int64_t i = 0; i < m; ++i)
      s.push_back(start * std::pow(start, double(i)));
    return s;
  };
  double l = std::log2(double(n));
  if (l == std::floor(l))
    return pow2(n);
  int64_t closest = int64_t(1) << int64_t(std::floor(l));
  std::vector<double> out = pow2(closest);
  std::vector<double> twice = alibiSlopesModel(2 * closest);
  for (size_t i = 0; i < twice.size() && int64_t(out.size()) < n; i += 2)
    out.push_back(twice[i]);
  return out;
}

// T5 buckets (mesh-tensorflow _relative_position_bucket, relative_position = K - P).
int64_t t5Bucket(int64_t relativePosition, bool bidirectional, int64_t numBuckets,
                 int64_t maxDistance) {
  int64_t ret = 0;
  int64_t n = -relativePosition;
  if (bidirectional) {
    numBuckets /= 2;
    if (n < 0)
      ret += numBuckets;
    n = n < 0 ? -n : n;
  } else {
    n = std::max<int64_t>(n, 0);
  }
  int64_t maxExact = numBuckets / 2;
  if (n < maxExact)
    return ret + n;
  double ratio = std::log(double(n) / double(maxExact)) /
                 std::log(double(maxDistance) / double(maxExact)) *
                 double(numBuckets - maxExact);
  int64_t large = maxExact + int64_t(ratio);
  large = std::min<int64_t>(large, numBuckets - 1);
  return ret + large;
}

struct RopeModel {
  double theta = 10000.0;
  bool interleaved = false;
  int64_t rotaryDim = 0; // 0: D
  enum Kind { None, Linear, Ntk, Yarn } kind = None;
  double factor = 1.0;
  int64_t original = 0;
  double betaFast = 32.0, betaSlow = 1.0;
  std::optional<double> mscale;

  /// Angular frequency of pair m after scaling.
  std::vector<double> freqs(int64_t R) const {
    double base = theta;
    if (kind == Ntk)
      base = theta * std::pow(factor, double(R) / double(R - 2));
    std::vector<double> f;
    for (int64_t m = 0; m < R / 2; ++m) {
      double t = std::pow(base, -2.0 * double(m) / double(R));
      if (kind == Linear)
        t = t / factor;
      if (kind == Yarn) {
        double lambda = 2.0 * 3.14159265358979323846 / t;
        double r = double(original) / lambda;
        double gamma = std::clamp((r - betaSlow) / (betaFast - betaSlow), 0.0, 1.0);
        t = (1.0 - gamma) * t / factor + gamma * t;
      }
      f.push_back(t);
    }
    return f;
  }
  double attentionScale() const {
    if (kind != Yarn)
      return 1.0;
    if (mscale)
      return *mscale;
    return factor > 1.0 ? 0.1 * std::log(factor) + 1.0 : 1.0;
  }
  void apply(double *x, int64_t D, double pos) const {
    int64_t R = rotaryDim ? rotaryDim : D;
    std::vector<double> f = freqs(R);
    double ms = attentionScale();
    for (int64_t m = 0; m < R / 2; ++m) {
      int64_t ia = interleaved ? 2 * m : m;
      int64_t ib = interleaved ? 2 * m + 1 : m + R / 2;
      double angle = pos * f[size_t(m)];
      double c = std::cos(angle), s = std::sin(angle);
      double a = x[ia], b = x[ib];
      x[ia] = (a * c - b * s) * ms;
      x[ib] = (a * s + b * c) * ms;
    }
  }
};

enum class Norm { Softmax, Sigmoid, Relu };

struct Model {
  MaskFn mask; // empty: every pair allowed
  std::vector<ScoreFn> scores;
  Norm norm = Norm::Softmax;
  std::optional<double> beta;
  std::optional<RopeModel> rope;
};

//===----------------------------------------------------------------------===//
// The harness
//===----------------------------------------------------------------------===//

struct Dims {
  int64_t B = 1, Hq = 2, Hkv = 2, Sq = 17, Skv = 17, D = 16, Dv = 16;
  std::string str() const {
    std::ostringstream os;
    os << "B=" << B << " Hq=" << Hq << " Hkv=" << Hkv << " Sq=" << Sq << " Skv=" << Skv
       << " D=" << D << " Dv=" << Dv;
    return os.str();
  }
};

struct Case {
  json spec = json::object();
  Dims d;
  std::map<std::string, HostTensor> inputs;
  std::optional<int64_t> qOffArg, kvOffArg;
  double tol = 1e-9;
};

struct Stats {
  int64_t cases = 0, rows = 0, emptyRows = 0, pairs = 0, allowed = 0;
  void add(const Stats &o) {
    cases += o.cases;
    rows += o.rows;
    emptyRows += o.emptyRows;
    pairs += o.pairs;
    allowed += o.allowed;
  }
};

bool maskSaysTopLeft(const json &m) {
  if (!m.is_object() || m.size() != 1)
    return false;
  auto it = m.begin();
  if (it.key() == "causal")
    return it.value().is_object() && it.value().value("align", "") == "top_left";
  if ((it.key() == "all" || it.key() == "any") && it.value().is_array()) {
    for (const json &c : it.value())
      if (maskSaysTopLeft(c))
        return true;
    return false;
  }
  if (it.key() == "not")
    return maskSaysTopLeft(it.value());
  return false;
}

/// The positions' offsets as PATTERNS.md defines them: run-time value, else the
/// spec's, else Skv - Sq (bottom_right) or 0 (top_left); kv_offset defaults to 0.
void resolveOffsets(const Case &c, int64_t &qOff, int64_t &kvOff) {
  const json &s = c.spec;
  bool topLeft = (s.contains("align") && s["align"] == "top_left") ||
                 (s.contains("mask") && maskSaysTopLeft(s["mask"]));
  if (c.qOffArg)
    qOff = *c.qOffArg;
  else if (s.contains("q_offset"))
    qOff = s["q_offset"].get<int64_t>();
  else
    qOff = topLeft ? 0 : c.d.Skv - c.d.Sq;
  if (c.kvOffArg)
    kvOff = *c.kvOffArg;
  else if (s.contains("kv_offset"))
    kvOff = s["kv_offset"].get<int64_t>();
  else
    kvOff = 0;
}

bool wantsLse(const json &spec) {
  if (!spec.contains("outputs"))
    return false;
  for (const json &o : spec["outputs"])
    if (o == "lse")
      return true;
  return false;
}

Stats runCase(Case c, const Model &m, Rng &rng) {
  Stats st;
  const Dims &d = c.d;
  c.spec["heads_q"] = d.Hq;
  c.spec["heads_kv"] = d.Hkv;
  c.spec["head_dim"] = d.D;
  c.spec["head_dim_v"] = d.Dv;
  if (!c.spec.contains("dtype"))
    c.spec["dtype"] = "f32";
  int64_t qOff = 0, kvOff = 0;
  resolveOffsets(c, qOff, kvOff);
  std::ostringstream where;
  where << d.str() << " q_offset=" << qOff << " kv_offset=" << kvOff
        << (c.qOffArg ? " (run-time q_offset)" : "")
        << (c.kvOffArg ? " (run-time kv_offset)" : "") << "\nspec: " << c.spec.dump();
  SCOPED_TRACE(where.str());

  mlir::MLIRContext ctx;
  attune::SpecInfo info;
  attune::SpecError err;
  auto module = attune::importSpec(ctx, c.spec, info, err);
  if (!module) {
    ADD_FAILURE() << "import failed: " << err.str();
    return st;
  }
  attune::AttentionArgs args;
  args.q = floatTensor({d.B, d.Hq, d.Sq, d.D}, rng);
  args.k = floatTensor({d.B, d.Hkv, d.Skv, d.D}, rng);
  args.v = floatTensor({d.B, d.Hkv, d.Skv, d.Dv}, rng);
  args.inputs = c.inputs;
  args.qOffset = c.qOffArg;
  args.kvOffset = c.kvOffArg;
  attune::DiagnosticCollector diags(module->getContext());
  mlir::FailureOr<attune::AttentionResult> ran = attune::runReference(*module, args);
  if (mlir::failed(ran)) {
    ADD_FAILURE() << "runReference failed: " << diags.text();
    return st;
  }
  attune::AttentionResult &res = *ran;

  // --- the model, dense, in double ---
  double scale = c.spec.contains("scale") ? c.spec["scale"].get<double>()
                                          : 1.0 / std::sqrt(double(d.D));
  bool lse = wantsLse(c.spec);
  std::vector<double> q = args.q.data, k = args.k.data;
  if (m.rope) {
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t h = 0; h < d.Hq; ++h)
        for (int64_t i = 0; i < d.Sq; ++i)
          m.rope->apply(&q[size_t(((b * d.Hq + h) * d.Sq + i) * d.D)], d.D, double(i + qOff));
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t h = 0; h < d.Hkv; ++h)
        for (int64_t j = 0; j < d.Skv; ++j)
          m.rope->apply(&k[size_t(((b * d.Hkv + h) * d.Skv + j) * d.D)], d.D,
                        double(j + kvOff));
  }
  const std::vector<double> &v = args.v.data;

  // Shapes and NaN first.
  std::vector<int64_t> oShape{d.B, d.Hq, d.Sq, d.Dv}, lShape{d.B, d.Hq, d.Sq};
  if (res.o.shape != oShape || res.o.data.size() != size_t(d.B * d.Hq * d.Sq * d.Dv)) {
    ADD_FAILURE() << "o has shape " << res.o.shapeString();
    return st;
  }
  if (lse && (res.lse.shape != lShape || res.lse.data.size() != size_t(d.B * d.Hq * d.Sq))) {
    ADD_FAILURE() << "lse has shape " << res.lse.shapeString();
    return st;
  }
  int64_t nans = 0;
  for (double x : res.o.data)
    nans += std::isnan(x);
  for (double x : res.lse.data)
    nans += std::isnan(x);
  EXPECT_EQ(nans, 0) << "NaN in the reference's output";

  int reported = 0;
  auto report = [&](const std::string &msg) {
    if (reported++ < 6)
      ADD_FAILURE() << msg;
  };
  int64_t mismatches = 0;
  auto close = [&](double a, double e) {
    if (std::isnan(a) || std::isnan(e))
      return false;
    if (std::isinf(e))
      return a == e;
    return std::fabs(a - e) <= c.tol * (1.0 + std::fabs(e));
  };

  int64_t group = d.Hq / d.Hkv;
  std::vector<double> sc(size_t(d.Skv));
  std::vector<char> ok(size_t(d.Skv));
  std::vector<double> o(size_t(d.Dv));
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t h = 0; h < d.Hq; ++h) {
      int64_t kh = h / group;
      for (int64_t i = 0; i < d.Sq; ++i) {
        const double *qi = &q[size_t(((b * d.Hq + h) * d.Sq + i) * d.D)];
        int64_t allowed = 0;
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < d.Skv; ++j) {
          Pos p{b, h, i, j, i + qOff, j + kvOff, d.Sq, d.Skv, d.Hq};
          bool oob = false;
          bool a = m.mask ? m.mask(p, oob) : true;
          a = a && !oob;
          ok[size_t(j)] = a;
          if (!a)
            continue;
          ++allowed;
          const double *kj = &k[size_t(((b * d.Hkv + kh) * d.Skv + j) * d.D)];
          double s = 0.0;
          for (int64_t x = 0; x < d.D; ++x)
            s += qi[x] * kj[x];
          s *= scale;
          for (const ScoreFn &f : m.scores) {
            bool sOob = false;
            double t = f(s, p, sOob);
            if (!sOob)
              s = t;
          }
          sc[size_t(j)] = s;
          mx = std::max(mx, s);
        }
        st.rows++;
        st.pairs += d.Skv;
        st.allowed += allowed;
        std::fill(o.begin(), o.end(), 0.0);
        double rowLse = -std::numeric_limits<double>::infinity();
        if (allowed > 0) {
          if (m.norm == Norm::Softmax) {
            double sum = 0.0;
            for (int64_t j = 0; j < d.Skv; ++j)
              if (ok[size_t(j)])
                sum += std::exp(sc[size_t(j)] - mx);
            rowLse = mx + std::log(sum);
          }
          for (int64_t j = 0; j < d.Skv; ++j) {
            if (!ok[size_t(j)])
              continue;
            double w;
            double s = sc[size_t(j)];
            if (m.norm == Norm::Softmax) {
              w = std::exp(s - rowLse);
            } else if (m.norm == Norm::Sigmoid) {
              double beta = m.beta ? *m.beta : -std::log(double(d.Skv));
              w = 1.0 / (1.0 + std::exp(-(s + beta)));
            } else {
              w = std::max(s, 0.0) / double(d.Skv);
            }
            const double *vj = &v[size_t(((b * d.Hkv + kh) * d.Skv + j) * d.Dv)];
            for (int64_t x = 0; x < d.Dv; ++x)
              o[size_t(x)] += w * vj[x];
          }
        } else {
          st.emptyRows++;
        }
        size_t row = size_t((b * d.Hq + h) * d.Sq + i);
        for (int64_t x = 0; x < d.Dv; ++x) {
          double got = res.o.data[row * size_t(d.Dv) + size_t(x)];
          bool good = allowed > 0 ? close(got, o[size_t(x)]) : got == 0.0;
          if (!good) {
            ++mismatches;
            std::ostringstream os;
            os.precision(17);
            os << "o[" << b << "," << h << "," << i << "," << x << "] = " << got
               << ", expected " << o[size_t(x)] << " (row has " << allowed
               << " allowed keys, P(i)=" << i + qOff << ")";
            report(os.str());
          }
        }
        if (lse) {
          double got = res.lse.data[row];
          bool good = allowed > 0 ? close(got, rowLse)
                                  : (std::isinf(got) && got < 0);
          if (!good) {
            ++mismatches;
            std::ostringstream os;
            os.precision(17);
            os << "lse[" << b << "," << h << "," << i << "] = " << got << ", expected "
               << rowLse << " (row has " << allowed << " allowed keys, P(i)=" << i + qOff
               << ")";
            report(os.str());
          }
        }
      }
    }
  }
  EXPECT_EQ(mismatches, 0) << "elements differing from the model";
  st.cases = 1;
  return st;
}

/// Random head layout and head dims; (Hq, Hkv) covers MHA, GQA and MQA.
Dims randomDims(Rng &rng, int64_t sq, int64_t skv) {
  static const std::vector<std::pair<int64_t, int64_t>> heads = {
      {1, 1}, {2, 2}, {2, 1}, {6, 2}, {4, 1}, {3, 3}, {6, 6}};
  Dims d;
  auto hh = rng.pick(heads);
  d.Hq = hh.first;
  d.Hkv = hh.second;
  d.B = rng.uni(1, 2);
  d.D = rng.pick(std::vector<int64_t>{1, 4, 8, 16, 7});
  d.Dv = rng.coin() ? d.D : rng.pick(std::vector<int64_t>{1, 3, 5, 12});
  d.Sq = sq;
  d.Skv = skv;
  return d;
}

using Setup = std::function<Model(Case &, Rng &)>;

struct SweepOptions {
  std::vector<std::pair<int64_t, int64_t>> seqs = {
      {1, 1}, {1, 17}, {17, 1}, {17, 17}, {17, 127}, {127, 17}, {127, 127},
      {0, 0}, {0, 0}, {0, 0}};
  bool offsets = true; // vary how positions are given
  bool lse = true;     // ask for lse sometimes
};

/// Runs `setup` over lengths (odd, Sq < Skv and Sq > Skv, one random pair marked
/// {0, 0}), random head layouts and random ways of giving the offsets.
Stats sweep(Rng &rng, const Setup &setup, SweepOptions opt = {}) {
  Stats total;
  for (size_t n = 0; n < opt.seqs.size(); ++n) {
    auto [sq, skv] = opt.seqs[n];
    if (sq == 0)
      sq = rng.uni(2, 70), skv = rng.uni(2, 70);
    Case c;
    c.d = randomDims(rng, sq, skv);
    if (opt.lse && rng.coin(0.7))
      c.spec["outputs"] = {"o", "lse"};
    int mode = (n == 0 || !opt.offsets) ? 0 : int(rng.uni(0, 7));
    switch (mode) {
    case 1: // top_left alignment
      c.spec["align"] = "top_left";
      break;
    case 2: // both offsets in the spec, negative allowed
      c.spec["q_offset"] = rng.uni(-40, 40);
      c.spec["kv_offset"] = rng.uni(-40, 40);
      break;
    case 3: // both offsets at run time
      c.qOffArg = rng.uni(-40, 40);
      c.kvOffArg = rng.uni(-40, 40);
      break;
    case 4: // kv_offset only; q_offset stays at its default
      c.kvOffArg = rng.uni(-20, 20);
      break;
    case 5: // q_offset only, in the spec
      c.spec["q_offset"] = rng.uni(-30, 30);
      break;
    case 6: // kv_offset only, in the spec
      c.spec["kv_offset"] = rng.uni(-30, 30);
      break;
    default:
      break;
    }
    Model m = setup(c, rng);
    total.add(runCase(std::move(c), m, rng));
  }
  return total;
}

/// Runs one case with default everything but the given sizes.
Stats single(Rng &rng, Dims d, const Setup &setup) {
  Case c;
  c.d = d;
  Model m = setup(c, rng);
  return runCase(std::move(c), m, rng);
}

json decl(const std::string &dtype, json shape) {
  return json{{"dtype", dtype}, {"shape", std::move(shape)}};
}

//===----------------------------------------------------------------------===//
// ALiBi slopes API
//===----------------------------------------------------------------------===//

TEST(AlibiSlopes, DefaultSlopesMatchTheReferenceRule) {
  for (int64_t n = 1; n <= 16; ++n) {
    SCOPED_TRACE("heads = " + std::to_string(n));
    std::vector<double> got = attune::alibiDefaultSlopes(n);
    std::vector<double> want = alibiSlopesModel(n);
    ASSERT_EQ(got.size(), size_t(n));
    ASSERT_EQ(want.size(), size_t(n));
    for (int64_t h = 0; h < n; ++h)
      EXPECT_NEAR(got[size_t(h)], want[size_t(h)], 1e-14 * want[size_t(h)])
          << "slope of head " << h;
  }
  // Spot values from the paper's code: 6 heads = the 4-head slopes then 2^-1, 2^-3.
  std::vector<double> six = attune::alibiDefaultSlopes(6);
  ASSERT_EQ(six.size(), 6u);
  const double expect6[] = {0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125};
  for (int h = 0; h < 6; ++h)
    EXPECT_DOUBLE_EQ(six[size_t(h)], expect6[h]);
}

//===----------------------------------------------------------------------===//
// Masks
//===----------------------------------------------------------------------===//

TEST(Masks, Full) {
  SEEDED_RNG(rng);
  Stats st = sweep(rng, [](Case &c, Rng &r) {
    if (r.coin())
      c.spec["mask"] = node("full");
    return Model{};
  });
  EXPECT_EQ(st.allowed, st.pairs);
}

TEST(Masks, Causal) {
  SEEDED_RNG(rng);
  Stats st = sweep(rng, [](Case &c, Rng &) {
    c.spec["mask"] = node("causal");
    Model m;
    m.mask = mCausal();
    return m;
  });
  EXPECT_GT(st.allowed, 0);
}

TEST(Masks, CausalAlignments) {
  SEEDED_RNG(rng);
  for (auto [sq, skv] : std::vector<std::pair<int64_t, int64_t>>{{17, 127}, {127, 17}, {1, 17}}) {
    for (int form = 0; form < 4; ++form) {
      Case c;
      c.d = randomDims(rng, sq, skv);
      c.spec["outputs"] = {"o", "lse"};
      if (form == 0)
        c.spec["mask"] = node("causal");
      else if (form == 1)
        c.spec["mask"] = node("causal", {{"align", "bottom_right"}});
      else if (form == 2)
        c.spec["mask"] = node("causal", {{"align", "top_left"}});
      else
        c.spec["align"] = "top_left", c.spec["mask"] = node("causal");
      int64_t qOff, kvOff;
      resolveOffsets(c, qOff, kvOff);
      EXPECT_EQ(qOff, form >= 2 ? 0 : skv - sq);
      Model m;
      m.mask = mCausal();
      Stats st = runCase(c, m, rng);
      // Bottom-right with Sq > Skv leaves the first Sq - Skv rows without keys.
      if (form < 2 && sq > skv)
        EXPECT_EQ(st.emptyRows, (sq - skv) * c.d.B * c.d.Hq);
      if (form >= 2 && sq > skv)
        EXPECT_EQ(st.emptyRows, 0);
    }
  }
}

TEST(Masks, FullyMaskedRowsGiveZeroAndMinusInf) {
  SEEDED_RNG(rng);
  // Causal, bottom-right, Sq = 127 > Skv = 17: 110 rows per head have no key; and a
  // window that excludes everything for some rows.
  Dims d;
  d.B = 2, d.Hq = 6, d.Hkv = 2, d.Sq = 127, d.Skv = 17, d.D = 16, d.Dv = 5;
  Stats st = single(rng, d, [](Case &c, Rng &) {
    c.spec["mask"] = node("causal");
    c.spec["outputs"] = {"o", "lse"};
    Model m;
    m.mask = mCausal();
    return m;
  });
  EXPECT_EQ(st.emptyRows, 2 * 6 * 110);
  d.Sq = 17, d.Skv = 127;
  st = single(rng, d, [](Case &c, Rng &) {
    c.spec["mask"] = node("sliding_window", {{"left", 3}, {"right", 0}});
    c.spec["q_offset"] = 130; // rows past the keys: nothing within 3 positions back
    c.spec["outputs"] = {"o", "lse"};
    Model m;
    m.mask = mWindow(3, 0);
    return m;
  });
  EXPECT_GT(st.emptyRows, 0);
}

TEST(Masks, SlidingWindow) {
  SEEDED_RNG(rng);
  Stats st = sweep(rng, [](Case &c, Rng &r) {
    int64_t left = r.coin(0.15) ? -1 : r.uni(0, 40);
    json params = {{"left", left}};
    int64_t right = 0;
    int rm = int(r.uni(0, 3));
    if (rm == 1)
      right = -1;
    else if (rm == 2)
      right = r.uni(0, 12);
    if (rm != 0 || r.coin())
      params["right"] = right; // right absent: defaults to 0
    c.spec["mask"] = node("sliding_window", params);
    Model m;
    m.mask = mWindow(left, right);
    return m;
  });
  EXPECT_GT(st.allowed, 0);
}

TEST(Masks, DilatedWindow) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    int64_t left = r.coin(0.15) ? -1 : r.uni(0, 40);
    int64_t right = r.coin(0.2) ? -1 : r.uni(0, 12);
    int64_t dil = r.uni(1, 5);
    json params = {{"left", left}, {"dilation", dil}};
    if (right != 0 || r.coin())
      params["right"] = right;
    c.spec["mask"] = node("dilated_window", params);
    Model m;
    m.mask = mDilatedWindow(left, right, dil);
    return m;
  });
}

TEST(Masks, Sinks) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    int64_t count = r.uni(0, 20);
    c.spec["mask"] = node("sinks", {{"count", count}});
    Model m;
    m.mask = mSinks(count);
    return m;
  });
}

TEST(Masks, GlobalTokensCount) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    int64_t g = r.uni(0, 12);
    c.spec["mask"] = node("global_tokens", {{"count", g}});
    Model m;
    m.mask = mGlobalCount(g);
    return m;
  });
}

TEST(Masks, GlobalTokensList) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    std::vector<int64_t> tokens;
    int64_t n = r.uni(1, 7);
    for (int64_t t = 0; t < n; ++t)
      tokens.push_back(r.uni(-10, c.d.Skv + 10));
    if (r.coin())
      tokens.push_back(tokens.front()); // a duplicate
    c.spec["mask"] = node("global_tokens", {{"tokens", tokens}});
    Model m;
    m.mask = mGlobalList(tokens);
    return m;
  });
}

TEST(Masks, PrefixLmInt) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    int64_t p = r.uni(0, c.d.Skv + 5);
    c.spec["mask"] = node("prefix_lm", {{"prefix", p}});
    Model m;
    m.mask = mPrefix(p);
    return m;
  });
}

TEST(Masks, PrefixLmTensor) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    c.spec["inputs"] = {{"plen", decl("i32", {"B"})}};
    int64_t skv = c.d.Skv;
    c.inputs["plen"] = intTensor({c.d.B}, [&] { return r.uni(0, skv + 3); });
    c.spec["mask"] = node("prefix_lm", {{"prefix", "plen"}});
    Model m;
    m.mask = mPrefixTensor(c.inputs["plen"]);
    return m;
  });
}

/// Packed-sequence ids: runs of equal ids, or random small ids.
HostTensor docIds(Rng &r, int64_t B, int64_t S) {
  bool runs = r.coin(0.7);
  HostTensor t;
  t.shape = {B, S};
  t.isInt = true;
  for (int64_t b = 0; b < B; ++b) {
    int64_t id = 0;
    for (int64_t s = 0; s < S; ++s) {
      if (runs) {
        if (r.uni(0, 9) == 0)
          ++id;
        t.data.push_back(double(id));
      } else {
        t.data.push_back(double(r.uni(0, 3)));
      }
    }
  }
  return t;
}

TEST(Masks, Document) {
  SEEDED_RNG(rng);
  Stats st = sweep(rng, [](Case &c, Rng &r) {
    Model m;
    int form = int(r.uni(0, 2));
    if (form == 0) { // one tensor for both sides, [B, S] with S = max(Sq, Skv)
      int64_t s = std::max(c.d.Sq, c.d.Skv);
      c.spec["inputs"] = {{"doc", decl("i32", {"B", "S"})}};
      c.inputs["doc"] = docIds(r, c.d.B, s);
      c.spec["mask"] = node("document", r.coin() ? json{{"q_ids", "doc"}}
                                                 : json{{"q_ids", "doc"}, {"kv_ids", "doc"}});
      m.mask = mDocument(c.inputs["doc"], c.inputs["doc"]);
    } else if (form == 1) { // separate tensors [B, Sq] and [B, Skv]
      c.spec["inputs"] = {{"qd", decl("i32", {"B", "Sq"})}, {"kd", decl("i32", {"B", "Skv"})}};
      c.inputs["qd"] = docIds(r, c.d.B, c.d.Sq);
      c.inputs["kd"] = docIds(r, c.d.B, c.d.Skv);
      c.spec["mask"] = node("document", {{"q_ids", "qd"}, {"kv_ids", "kd"}});
      m.mask = mDocument(c.inputs["qd"], c.inputs["kd"]);
    } else { // a shared tensor shorter than the keys: reads past it mask the pair
      int64_t s = std::max<int64_t>(1, std::max(c.d.Sq, c.d.Skv) - r.uni(0, 9));
      c.spec["inputs"] = {{"doc", decl("i32", {"B", "N"})}};
      c.inputs["doc"] = docIds(r, c.d.B, s);
      c.spec["mask"] = node("document", {{"q_ids", "doc"}, {"kv_ids", "doc"}});
      m.mask = mDocument(c.inputs["doc"], c.inputs["doc"]);
    }
    return m;
  });
  EXPECT_GT(st.allowed, 0);
}

TEST(Masks, Buckets) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    int64_t nb = r.uni(1, 6);
    c.spec["inputs"] = {{"qb", decl("i32", {"B", "Hq", "Sq"})},
                        {"kb", decl("i32", {"B", "Hq", "Skv"})}};
    c.inputs["qb"] = intTensor({c.d.B, c.d.Hq, c.d.Sq}, [&] { return r.uni(0, nb - 1); });
    c.inputs["kb"] = intTensor({c.d.B, c.d.Hq, c.d.Skv}, [&] { return r.uni(0, nb - 1); });
    c.spec["mask"] = node("buckets", {{"q_buckets", "qb"}, {"kv_buckets", "kb"}});
    Model m;
    m.mask = mBuckets(c.inputs["qb"], c.inputs["kb"]);
    return m;
  });
}

TEST(Masks, Keep) {
  SEEDED_RNG(rng);
  Stats st = sweep(rng, [](Case &c, Rng &r) {
    c.spec["inputs"] = {{"keep", decl("i32", {"B", "Hq", "Skv"})}};
    double p = r.real(0.0, 1.0);
    c.inputs["keep"] = intTensor({c.d.B, c.d.Hq, c.d.Skv}, [&]() -> int64_t {
      if (!r.coin(p))
        return 0;
      return r.pick(std::vector<int64_t>{1, 1, 7, -3, -1});
    });
    // Drop every key of one head: its rows are fully masked.
    if (r.coin()) {
      int64_t h = r.uni(0, c.d.Hq - 1);
      for (int64_t j = 0; j < c.d.Skv; ++j)
        c.inputs["keep"].data[size_t(h * c.d.Skv + j)] = 0;
    }
    c.spec["mask"] = node("keep", {{"kv_keep", "keep"}});
    Model m;
    m.mask = mKeep(c.inputs["keep"]);
    return m;
  });
  EXPECT_GT(st.emptyRows, 0);
}

TEST(Masks, Strided) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    int64_t l = r.uni(1, 9);
    c.spec["mask"] = node("strided", {{"stride", l}});
    Model m;
    m.mask = mStrided(l);
    return m;
  });
}

TEST(Masks, Fixed) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    int64_t l = r.uni(1, 12);
    int64_t s = r.uni(0, l);
    c.spec["mask"] = node("fixed", {{"stride", l}, {"summary", s}});
    Model m;
    m.mask = mFixed(l, s);
    return m;
  });
}

TEST(Masks, DilatedSegments) {
  SEEDED_RNG(rng);
  Stats st = sweep(rng, [](Case &c, Rng &r) {
    int64_t w = r.uni(1, 20);
    int64_t dil = r.uni(1, 4);
    json params = {{"segment", w}, {"dilation", dil}};
    std::optional<int64_t> off;
    if (r.coin(0.4)) {
      off = r.uni(0, dil - 1);
      params["head_offset"] = *off;
    }
    c.spec["mask"] = node("dilated_segments", params);
    Model m;
    m.mask = mDilatedSegments(w, dil, off);
    return m;
  });
  EXPECT_GT(st.allowed, 0);
}

TEST(Masks, ShiftedGroups) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    int64_t g = r.uni(1, 13);
    json params = {{"group", g}};
    std::optional<std::set<int64_t>> heads;
    int form = int(r.uni(0, 2));
    if (form == 1) {
      params["shifted_heads"] = "second_half";
    } else if (form == 2) {
      std::set<int64_t> hs;
      for (int64_t h = 0; h < c.d.Hq; ++h)
        if (r.coin())
          hs.insert(h);
      params["shifted_heads"] = std::vector<int64_t>(hs.begin(), hs.end());
      heads = hs;
    }
    c.spec["mask"] = node("shifted_groups", params);
    Model m;
    m.mask = mShiftedGroups(g, heads);
    return m;
  });
}

TEST(Masks, VerticalSlash) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    int64_t qOff, kvOff;
    resolveOffsets(c, qOff, kvOff);
    int64_t dMin = qOff - kvOff - (c.d.Skv - 1), dMax = qOff + c.d.Sq - 1 - kvOff;
    // Padding below -Skv and below every reachable d, so it never matches.
    int64_t pad = std::min(-c.d.Skv - 1, dMin - 1);
    int64_t nv = r.uni(1, 6), ns = r.uni(1, 6);
    c.spec["inputs"] = {{"cols", decl("i32", {"B", "Hq", "Nv"})},
                        {"diags", decl("i32", {"B", "Hq", "Ns"})}};
    int64_t skv = c.d.Skv;
    c.inputs["cols"] = intTensor({c.d.B, c.d.Hq, nv}, [&] {
      return r.coin(0.25) ? int64_t(-1) : r.uni(0, skv - 1);
    });
    c.inputs["diags"] = intTensor({c.d.B, c.d.Hq, ns}, [&] {
      return r.coin(0.25) ? pad : r.uni(dMin, dMax);
    });
    c.spec["mask"] = node("vertical_slash", {{"columns", "cols"}, {"diagonals", "diags"}});
    Model m;
    m.mask = mVerticalSlash(c.inputs["cols"], c.inputs["diags"]);
    return m;
  });
}

TEST(Masks, BlockList) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    int64_t bm = r.uni(1, 16), bn = r.uni(1, 16);
    int64_t rows = (c.d.Sq + bm - 1) / bm, cols = (c.d.Skv + bn - 1) / bn;
    int64_t kk = r.uni(1, 4);
    // Sometimes fewer block rows than ceil(Sq / BM): query rows past them read outside
    // the tensor and are fully masked.
    if (rows > 1 && r.coin(0.25))
      rows -= r.uni(1, rows - 1);
    c.spec["inputs"] = {{"blocks", decl("i32", {"B", "Hq", "R", "K"})}};
    c.inputs["blocks"] = intTensor({c.d.B, c.d.Hq, rows, kk}, [&] {
      return r.coin(0.2) ? int64_t(-1) : r.uni(0, cols - 1);
    });
    c.spec["mask"] = node("block_list", {{"block", {bm, bn}}, {"kv_blocks", "blocks"}});
    Model m;
    m.mask = mBlockList(bm, bn, c.inputs["blocks"]);
    return m;
  });
}

TEST(Masks, LongSequence1000) {
  SEEDED_RNG(rng);
  Dims d;
  d.B = 1, d.Hq = 2, d.Hkv = 2, d.Sq = 1000, d.Skv = 1000, d.D = 16, d.Dv = 16;
  Stats st = single(rng, d, [](Case &c, Rng &) {
    c.spec["mask"] = node("causal");
    c.spec["outputs"] = {"o", "lse"};
    Model m;
    m.mask = mCausal();
    return m;
  });
  EXPECT_EQ(st.allowed, 2 * 1000 * 1001 / 2);
  d.Sq = 1, d.Skv = 1000; // decoding against a long cache, Mistral window
  single(rng, d, [](Case &c, Rng &) {
    c.spec["mask"] = jAll({node("causal"), node("sliding_window", {{"left", 255}})});
    c.spec["outputs"] = {"o", "lse"};
    Model m;
    m.mask = mAll({mCausal(), mWindow(255, 0)});
    return m;
  });
}

//===----------------------------------------------------------------------===//
// Combinators and compositions
//===----------------------------------------------------------------------===//

TEST(Combinators, NotAllAny) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    Model m;
    int64_t w = r.uni(0, 9), l = r.uni(1, 6), s = r.uni(0, 5), g = r.uni(1, 4);
    switch (r.uni(0, 3)) {
    case 0:
      c.spec["mask"] = node("not", node("sliding_window", {{"left", w}, {"right", w}}));
      m.mask = mNot(mWindow(w, w));
      break;
    case 1:
      c.spec["mask"] = jAll({node("causal"), node("not", node("sinks", {{"count", s}}))});
      m.mask = mAll({mCausal(), mNot(mSinks(s))});
      break;
    case 2:
      c.spec["mask"] = jAny({node("strided", {{"stride", l}}), node("global_tokens", {{"count", g}}),
                             node("not", node("causal"))});
      m.mask = mAny({mStrided(l), mGlobalCount(g), mNot(mCausal())});
      break;
    default:
      c.spec["mask"] = node(
          "not", jAny({jAll({node("causal"), node("sliding_window", {{"left", w}})}),
                       node("not", node("dilated_window", {{"left", -1}, {"right", -1},
                                                           {"dilation", l}}))}));
      m.mask = mNot(mAny({mAll({mCausal(), mWindow(w, 0)}), mNot(mDilatedWindow(-1, -1, l))}));
      break;
    }
    return m;
  });
}

TEST(Combinators, OutOfBoundsReadMasksTheWholePair) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    // Tensors shorter than the sequences; every pair that reads past them is masked,
    // under `any` and `not` too.
    int64_t n = std::max<int64_t>(1, c.d.Skv - r.uni(1, 8));
    c.spec["inputs"] = {{"doc", decl("i32", {"B", "N"})},
                        {"keep", decl("i32", {"B", "Hq", "M"})}};
    c.inputs["doc"] = docIds(r, c.d.B, n);
    int64_t mm = std::max<int64_t>(1, c.d.Skv - r.uni(1, 8));
    c.inputs["keep"] = intTensor({c.d.B, c.d.Hq, mm}, [&] { return r.uni(0, 1); });
    Model m;
    if (r.coin()) {
      c.spec["mask"] = jAny({node("causal"), node("document", {{"q_ids", "doc"}})});
      m.mask = mAny({mCausal(), mDocument(c.inputs["doc"], c.inputs["doc"])});
    } else {
      c.spec["mask"] = jAny({node("sinks", {{"count", 3}}), node("not", node("keep", {{"kv_keep", "keep"}}))});
      m.mask = mAny({mSinks(3), mNot(mKeep(c.inputs["keep"]))});
    }
    return m;
  });
}

TEST(Compositions, Mistral) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    int64_t w = r.uni(0, 40);
    c.spec["mask"] = jAll({node("causal"), node("sliding_window", {{"left", w}, {"right", 0}})});
    Model m;
    m.mask = mAll({mCausal(), mWindow(w, 0)});
    return m;
  });
}

TEST(Compositions, StreamingLLM) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    int64_t s = r.uni(0, 6), w = r.uni(0, 30);
    c.spec["mask"] = jAll({node("causal"), jAny({node("sinks", {{"count", s}}),
                                                 node("sliding_window", {{"left", w}})})});
    Model m;
    m.mask = mAll({mCausal(), mAny({mSinks(s), mWindow(w, 0)})});
    return m;
  });
}

TEST(Compositions, BigBird) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    int64_t w = r.uni(0, 8), g = r.uni(0, 5);
    int64_t bm = r.uni(2, 16), bn = r.uni(2, 16);
    int64_t rows = (c.d.Sq + bm - 1) / bm, cols = (c.d.Skv + bn - 1) / bn;
    int64_t kk = r.uni(1, 3);
    c.spec["inputs"] = {{"blocks", decl("i32", {"B", "Hq", "R", "K"})}};
    c.inputs["blocks"] = intTensor({c.d.B, c.d.Hq, rows, kk}, [&] {
      return r.coin(0.2) ? int64_t(-1) : r.uni(0, cols - 1);
    });
    c.spec["mask"] = jAny({node("sliding_window", {{"left", w}, {"right", w}}),
                           node("global_tokens", {{"count", g}}),
                           node("block_list", {{"block", {bm, bn}}, {"kv_blocks", "blocks"}})});
    Model m;
    m.mask = mAny({mWindow(w, w), mGlobalCount(g), mBlockList(bm, bn, c.inputs["blocks"])});
    return m;
  });
}

TEST(Compositions, PackedCausal) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    int64_t s = std::max(c.d.Sq, c.d.Skv);
    c.spec["inputs"] = {{"doc", decl("i32", {"B", "S"})}};
    c.inputs["doc"] = docIds(r, c.d.B, s);
    c.spec["mask"] = jAll({node("causal"), node("document", {{"q_ids", "doc"}, {"kv_ids", "doc"}})});
    Model m;
    m.mask = mAll({mCausal(), mDocument(c.inputs["doc"], c.inputs["doc"])});
    return m;
  });
}

//===----------------------------------------------------------------------===//
// Mask expressions
//===----------------------------------------------------------------------===//

TEST(ExprMasks, FloorDivisionAndModuloOfNegatives) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    Model m;
    if (r.coin()) {
      c.spec["mask"] = node("expr", "(q - kv) // 5 % 2 == 0 && 3 * kv <= 2 * q + 7");
      m.mask = [](const Pos &p, bool &) {
        return floorMod(floorDiv(p.d(), 5), 2) == 0 && 3 * p.K <= 2 * p.P + 7;
      };
    } else {
      // || is loosest: A || B || (C && D); -7 // 2 == -4 and -7 % 2 == 1 (Python).
      c.spec["mask"] = node("expr", "(q - kv) % -3 == -1 || kv - q == -7 // 2 || "
                                    "q_idx // 4 == kv_idx // 4 && -7 % 2 == 1");
      m.mask = [](const Pos &p, bool &) {
        return floorMod(p.d(), -3) == -1 || p.K - p.P == -4 ||
               floorDiv(p.i, 4) == floorDiv(p.j, 4);
      };
    }
    return m;
  });
}

TEST(ExprMasks, RunTimeDivisionByZeroYieldsZero) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    Model m;
    if (r.coin()) {
      c.spec["mask"] = node("expr", "kv_idx // (q_idx - kv_idx) == 0");
      m.mask = [](const Pos &p, bool &) { return divz(p.j, p.i - p.j) == 0; };
    } else {
      c.spec["mask"] = node("expr", "(q + 1) % (kv - 2) == 0 || q < 0");
      m.mask = [](const Pos &p, bool &) { return modz(p.P + 1, p.K - 2) == 0 || p.P < 0; };
    }
    return m;
  });
}

TEST(ExprMasks, TensorLookupsOutsideTheTensorMaskThePair) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    Model m;
    if (r.coin()) {
      c.spec["inputs"] = {{"tab", decl("i32", {"B", 9})}};
      c.inputs["tab"] = intTensor({c.d.B, 9}, [&] { return r.uni(-1, 1); });
      c.spec["mask"] = node("expr", "tab[b, q - kv + 4] != 0 || kv_idx == 0");
      HostTensor tab = c.inputs["tab"];
      m.mask = [tab](const Pos &p, bool &oob) {
        double t = at(tab, {p.b, p.d() + 4}, oob);
        return t != 0.0 || p.j == 0;
      };
    } else {
      c.spec["inputs"] = {{"wt", decl("f32", {"Hq", 4})}};
      c.inputs["wt"] = floatTensor({c.d.Hq, 4}, r);
      c.spec["mask"] = node("expr", "wt[h, kv_idx % 5] > 0.0 && q >= kv");
      HostTensor wt = c.inputs["wt"];
      m.mask = [wt](const Pos &p, bool &oob) {
        double t = at(wt, {p.h, floorMod(p.j, 5)}, oob);
        return t > 0.0 && p.P >= p.K;
      };
    }
    return m;
  });
}

TEST(ExprMasks, VariablesParamsAndPrecedence) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    int64_t w = r.uni(0, 6);
    c.spec["params"] = {{"w", w}};
    // `!` binds looser than comparisons: `!kv > q` is `!(kv > q)`.
    c.spec["mask"] = node("expr", "(h + b) % 2 == 0 && abs(q - kv) <= w || "
                                  "!kv > q && kv_idx >= seq_kv - seq_q");
    Model m;
    m.mask = [w](const Pos &p, bool &) {
      return (floorMod(p.h + p.b, 2) == 0 && std::llabs(p.d()) <= w) ||
             (!(p.K > p.P) && p.j >= p.Skv - p.Sq);
    };
    return m;
  });
}

TEST(ExprMasks, FloatFunctionsAndSelect) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &) {
    c.spec["mask"] = node("expr", "sqrt(abs(q - kv)) < 2.5 || log2(kv_idx + 1) > 5.5 && "
                                  "select(h == 0, kv_idx, q_idx) % 3 == 0 || "
                                  "max(q - kv, 0) * 2 >= min(kv_idx, 7) + 40");
    Model m;
    m.mask = [](const Pos &p, bool &) {
      int64_t sel = p.h == 0 ? p.j : p.i;
      return std::sqrt(double(std::llabs(p.d()))) < 2.5 ||
             (std::log2(double(p.j + 1)) > 5.5 && floorMod(sel, 3) == 0) ||
             std::max<int64_t>(p.d(), 0) * 2 >= std::min<int64_t>(p.j, 7) + 40;
    };
    return m;
  });
}

//===----------------------------------------------------------------------===//
// Score transforms
//===----------------------------------------------------------------------===//

ScoreFn sSoftcap(double cap) {
  return [=](double s, const Pos &, bool &) { return cap * std::tanh(s / cap); };
}
ScoreFn sAlibi(std::vector<double> slopes) {
  return [=](double s, const Pos &p, bool &) {
    return s - slopes[size_t(p.h)] * double(p.d());
  };
}

/// A random mask that keeps most pairs, so scores matter on both sides of d = 0.
json maybeMask(Case &c, Rng &r, Model &m) {
  switch (r.uni(0, 2)) {
  case 0:
    c.spec["mask"] = node("causal");
    m.mask = mCausal();
    break;
  case 1: {
    int64_t w = r.uni(0, 30);
    c.spec["mask"] = node("sliding_window", {{"left", w}, {"right", w}});
    m.mask = mWindow(w, w);
    break;
  }
  default:
    break;
  }
  return c.spec.contains("mask") ? c.spec["mask"] : json();
}

TEST(Scores, Softcap) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    Model m;
    maybeMask(c, r, m);
    double cap = r.pick(std::vector<double>{0.25, 0.5, 1.0, 30.0});
    if (r.coin())
      c.spec["scale"] = 1.5; // scores large enough to saturate the cap
    c.spec["score"] = {node("softcap", {{"cap", cap}})};
    m.scores = {sSoftcap(cap)};
    return m;
  });
}

TEST(Scores, AlibiDefaultSlopes) {
  SEEDED_RNG(rng);
  for (int64_t hq : {1, 2, 3, 5, 6, 8, 12}) {
    SCOPED_TRACE("heads_q = " + std::to_string(hq));
    SweepOptions opt;
    opt.seqs = {{17, 17}, {1, 127}, {40, 23}};
    sweep(
        rng,
        [hq](Case &c, Rng &r) {
          c.d.Hq = hq;
          c.d.Hkv = hq % 2 == 0 && r.coin() ? 2 : 1;
          if (hq % c.d.Hkv)
            c.d.Hkv = 1;
          Model m;
          maybeMask(c, r, m);
          c.spec["score"] = {node("alibi")};
          m.scores = {sAlibi(alibiSlopesModel(hq))};
          return m;
        },
        opt);
  }
}

TEST(Scores, AlibiGivenSlopes) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    Model m;
    maybeMask(c, r, m);
    std::vector<double> slopes;
    for (int64_t h = 0; h < c.d.Hq; ++h)
      slopes.push_back(r.f32(-0.5, 0.5));
    c.spec["score"] = {node("alibi", {{"slopes", slopes}})};
    m.scores = {sAlibi(slopes)};
    return m;
  });
}

Model t5Setup(Case &c, Rng &r, bool bidirectional, bool defaults) {
  Model m;
  if (!bidirectional) {
    c.spec["mask"] = node("causal");
    m.mask = mCausal();
    if (r.coin()) { // also the half of the table a causal mask never reads
      c.spec.erase("mask");
      m.mask = nullptr;
    }
  }
  int64_t nb = defaults ? 32 : r.pick(std::vector<int64_t>{4, 5, 6, 7, 8, 10, 16});
  int64_t half = bidirectional ? nb / 2 : nb;
  int64_t maxExact = half / 2;
  int64_t md = defaults ? 128 : maxExact + r.uni(1, 40);
  json params = {{"table", "tab"}};
  if (!defaults || r.coin()) {
    params["num_buckets"] = nb;
    params["max_distance"] = md;
  }
  if (!bidirectional || r.coin())
    params["bidirectional"] = bidirectional;
  c.spec["inputs"] = {{"tab", decl("f32", {nb, "Hq"})}};
  c.inputs["tab"] = floatTensor({nb, c.d.Hq}, r, -2.0, 2.0);
  c.spec["score"] = {node("t5_bias", params)};
  HostTensor tab = c.inputs["tab"];
  int64_t hq = c.d.Hq;
  m.scores = {[=](double s, const Pos &p, bool &) {
    int64_t bucket = t5Bucket(p.K - p.P, bidirectional, nb, md);
    return s + tab.data[size_t(bucket * hq + p.h)];
  }};
  return m;
}

TEST(Scores, T5BiasBidirectional) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) { return t5Setup(c, r, true, false); });
}

TEST(Scores, T5BiasUnidirectional) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) { return t5Setup(c, r, false, false); });
}

TEST(Scores, T5BiasDefaultsLongDistances) {
  SEEDED_RNG(rng);
  SweepOptions opt;
  opt.seqs = {{64, 300}, {300, 64}, {17, 127}};
  sweep(rng, [](Case &c, Rng &r) { return t5Setup(c, r, r.coin(), true); }, opt);
}

TEST(Scores, T5BucketsAgainstKnownValues) {
  // Spot values of the mesh-tensorflow rule (32 buckets, max_distance 128).
  EXPECT_EQ(t5Bucket(0, true, 32, 128), 0);
  EXPECT_EQ(t5Bucket(-7, true, 32, 128), 7);
  EXPECT_EQ(t5Bucket(7, true, 32, 128), 16 + 7);
  EXPECT_EQ(t5Bucket(-8, true, 32, 128), 8);
  EXPECT_EQ(t5Bucket(-1000, true, 32, 128), 15);
  EXPECT_EQ(t5Bucket(1000, true, 32, 128), 31);
  EXPECT_EQ(t5Bucket(-20, true, 32, 128), 8 + int(std::log(20.0 / 8) / std::log(16.0) * 8));
  EXPECT_EQ(t5Bucket(5, false, 32, 128), 0);
  EXPECT_EQ(t5Bucket(-20, false, 32, 128), 16 + int(std::log(20.0 / 16) / std::log(8.0) * 16));
}

TEST(Scores, Fire) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    Model m;
    if (r.coin(0.7)) {
      c.spec["mask"] = node("causal");
      m.mask = mCausal();
    }
    int64_t hid = r.uni(1, 8);
    double cc = r.pick(std::vector<double>{1.0, 0.5, 3.0});
    double L = r.pick(std::vector<double>{1.0, 8.0, 64.0, 20.5});
    c.spec["inputs"] = {{"w1", decl("f32", {"Hid"})},
                        {"b1", decl("f32", {"Hid"})},
                        {"w2", decl("f32", {"Hq", "Hid"})},
                        {"b2", decl("f32", {"Hq"})}};
    c.inputs["w1"] = floatTensor({hid}, r, -3, 3);
    c.inputs["b1"] = floatTensor({hid}, r, -1, 1);
    c.inputs["w2"] = floatTensor({c.d.Hq, hid}, r, -2, 2);
    c.inputs["b2"] = floatTensor({c.d.Hq}, r, -1, 1);
    c.spec["score"] = {node("fire", {{"w1", "w1"}, {"b1", "b1"}, {"w2", "w2"}, {"b2", "b2"},
                                     {"c", cc}, {"L", L}})};
    HostTensor w1 = c.inputs["w1"], b1 = c.inputs["b1"], w2 = c.inputs["w2"],
               b2 = c.inputs["b2"];
    m.scores = {[=](double s, const Pos &p, bool &) {
      auto psi = [&](double x) { return std::log(cc * x + 1.0); };
      double x = psi(double(std::max<int64_t>(p.d(), 0))) / psi(std::max(L, double(p.P)));
      double f = b2.data[size_t(p.h)];
      for (int64_t k = 0; k < hid; ++k)
        f += w2.data[size_t(p.h * hid + k)] *
             std::max(0.0, w1.data[size_t(k)] * x + b1.data[size_t(k)]);
      return s + f;
    }};
    return m;
  });
}

TEST(Scores, KerpleLog) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    Model m;
    maybeMask(c, r, m);
    std::vector<double> r1, r2;
    for (int64_t h = 0; h < c.d.Hq; ++h) {
      r1.push_back(r.f32(0.05, 2.0));
      r2.push_back(r.f32(0.05, 3.0));
    }
    c.spec["score"] = {node("kerple_log", {{"r1", r1}, {"r2", r2}})};
    m.scores = {[=](double s, const Pos &p, bool &) {
      return s - r1[size_t(p.h)] * std::log(1.0 + r2[size_t(p.h)] * double(std::llabs(p.d())));
    }};
    return m;
  });
}

TEST(Scores, LogLengthScale) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    Model m;
    maybeMask(c, r, m);
    double base = r.pick(std::vector<double>{2.0, 3.5, 16.0, 512.0});
    c.spec["score"] = {node("log_length_scale", {{"base", base}})};
    m.scores = {[=](double s, const Pos &p, bool &) {
      double n = std::max<double>(double(p.P + 1), 1.0);
      return s * std::max(1.0, std::log(n) / std::log(base));
    }};
    return m;
  });
}

TEST(Scores, BiasBroadcasting) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    Model m;
    maybeMask(c, r, m);
    const Dims &d = c.d;
    json shape;
    std::vector<int64_t> actual;
    switch (r.uni(0, 6)) {
    case 6:
      shape = {"B", "H", "Sq", "Skv"};
      actual = {d.B, d.Hq, d.Sq, d.Skv};
      break;
    case 0:
      shape = {"B", "Hq", "Sq", "Skv"};
      actual = {d.B, d.Hq, d.Sq, d.Skv};
      break;
    case 1:
      shape = {1, "Hq", "Sq", "Skv"};
      actual = {1, d.Hq, d.Sq, d.Skv};
      break;
    case 2:
      shape = {"Sq", "Skv"};
      actual = {d.Sq, d.Skv};
      break;
    case 3:
      shape = {"Skv"};
      actual = {d.Skv};
      break;
    case 4:
      shape = {d.Hq, 1, 1};
      actual = {d.Hq, 1, 1};
      break;
    default:
      shape = {"B", 1, 1, "Skv"};
      actual = {d.B, 1, 1, d.Skv};
      break;
    }
    c.spec["inputs"] = {{"bias", decl("f32", shape)}};
    c.inputs["bias"] = floatTensor(actual, r, -3.0, 3.0);
    c.spec["score"] = {node("bias", {{"tensor", "bias"}})};
    HostTensor t = c.inputs["bias"];
    m.scores = {[t](double s, const Pos &p, bool &) {
      int64_t full[4] = {p.b, p.h, p.i, p.j};
      size_t rank = t.shape.size();
      int64_t off = 0;
      for (size_t a = 0; a < rank; ++a) {
        int64_t idx = t.shape[a] == 1 ? 0 : full[4 - rank + a];
        off = off * t.shape[a] + idx;
      }
      return s + t.data[size_t(off)];
    }};
    return m;
  });
}

TEST(Scores, TransformsApplyInOrderAfterScaling) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    Model m;
    maybeMask(c, r, m);
    c.spec["scale"] = r.pick(std::vector<double>{0.75, 2.0, -1.0});
    std::vector<double> slopes;
    for (int64_t h = 0; h < c.d.Hq; ++h)
      slopes.push_back(r.f32(0.0, 0.4));
    json alibi = node("alibi", {{"slopes", slopes}});
    json cap = node("softcap", {{"cap", 0.75}});
    json lls = node("log_length_scale", {{"base", 4.0}});
    ScoreFn llsFn = [](double s, const Pos &p, bool &) {
      return s * std::max(1.0, std::log(std::max<double>(double(p.P + 1), 1.0)) / std::log(4.0));
    };
    if (r.coin()) {
      c.spec["score"] = {alibi, cap, lls};
      m.scores = {sAlibi(slopes), sSoftcap(0.75), llsFn};
    } else {
      c.spec["score"] = {lls, cap, alibi};
      m.scores = {llsFn, sSoftcap(0.75), sAlibi(slopes)};
    }
    return m;
  });
}

//===----------------------------------------------------------------------===//
// Score expressions
//===----------------------------------------------------------------------===//

TEST(ExprScores, IntegerArithmeticPromotedToFloat) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    Model m;
    maybeMask(c, r, m);
    if (r.coin()) {
      c.spec["score"] = {node("expr", "s * 0.5 + (q - kv) // 3 * 0.25")};
      m.scores = {[](double s, const Pos &p, bool &) {
        return s * 0.5 + double(floorDiv(p.d(), 3)) * 0.25;
      }};
    } else {
      // `/` is true division; select, min and max on either kind.
      c.spec["score"] = {node("expr", "select(q - kv > 4, s - 1.0, s + 0.25) + min(q_idx, 3) "
                                      "- max(kv_idx % 5, 2) / 4")};
      m.scores = {[](double s, const Pos &p, bool &) {
        double sel = p.d() > 4 ? s - 1.0 : s + 0.25;
        return sel + double(std::min<int64_t>(p.i, 3)) -
               double(std::max<int64_t>(floorMod(p.j, 5), 2)) / 4.0;
      }};
    }
    return m;
  });
}

TEST(ExprScores, VariablesAndParams) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    Model m;
    maybeMask(c, r, m);
    int64_t kk = r.uni(1, 5) * (r.coin() ? 1 : -1);
    c.spec["params"] = {{"alpha", 0.5}, {"k", kk}};
    c.spec["score"] = {node("expr", "s + alpha * ((q - kv) % k) + (b * 2 + h) * 0.125 - "
                                    "seq_q * 0.25 + seq_kv * 0.0625")};
    m.scores = {[kk](double s, const Pos &p, bool &) {
      return s + 0.5 * double(floorMod(p.d(), kk)) + double(p.b * 2 + p.h) * 0.125 -
             double(p.Sq) * 0.25 + double(p.Skv) * 0.0625;
    }};
    return m;
  });
}

TEST(ExprScores, RunTimeDivisionByZeroYieldsZero) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    Model m;
    maybeMask(c, r, m);
    c.spec["score"] = {node("expr", "s + (q_idx // (kv_idx - q_idx)) * 0.5 + "
                                    "(kv_idx % (q_idx - 1)) * 0.25")};
    m.scores = {[](double s, const Pos &p, bool &) {
      return s + double(divz(p.i, p.j - p.i)) * 0.5 + double(modz(p.j, p.i - 1)) * 0.25;
    }};
    return m;
  });
}

TEST(ExprScores, TensorLookupOutsideTheTensorLeavesTheScore) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    Model m;
    maybeMask(c, r, m);
    c.spec["inputs"] = {{"tabf", decl("f32", {"Hq", 8})}, {"ti", decl("i32", {"B", "Skv"})}};
    c.inputs["tabf"] = floatTensor({c.d.Hq, 8}, r, -2, 2);
    int64_t skv = c.d.Skv;
    c.inputs["ti"] = intTensor({c.d.B, skv}, [&] { return r.uni(-3, 3); });
    // First transform reads out of bounds for d outside [0, 8): s is left unchanged
    // there, and the following transforms still apply.
    c.spec["score"] = {node("expr", "s + tabf[h, q - kv]"),
                       node("expr", "s * 0.5 + ti[b, kv_idx] * 0.25 + ti[b, q_idx + 2] * 0.125"),
                       node("softcap", {{"cap", 2.0}})};
    HostTensor tabf = c.inputs["tabf"], ti = c.inputs["ti"];
    m.scores = {[tabf](double s, const Pos &p, bool &oob) {
                  return s + at(tabf, {p.h, p.d()}, oob);
                },
                [ti](double s, const Pos &p, bool &oob) {
                  double a = at(ti, {p.b, p.j}, oob);
                  double b = at(ti, {p.b, p.i + 2}, oob);
                  return s * 0.5 + a * 0.25 + b * 0.125;
                },
                sSoftcap(2.0)};
    return m;
  });
}

TEST(ExprScores, FloatFunctions) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    Model m;
    maybeMask(c, r, m);
    c.spec["score"] = {node("expr", "tanh(s) * 2.0 + exp(-abs(s)) - log(1.0 + abs(s)) + "
                                    "sigmoid(s) + floor(s * 4.0) / 8.0 + ceil(s) * 0.125 + "
                                    "sqrt(abs(s)) + log2(2.0 + s * s)")};
    m.scores = {[](double s, const Pos &, bool &) {
      return std::tanh(s) * 2.0 + std::exp(-std::fabs(s)) - std::log(1.0 + std::fabs(s)) +
             1.0 / (1.0 + std::exp(-s)) + std::floor(s * 4.0) / 8.0 + std::ceil(s) * 0.125 +
             std::sqrt(std::fabs(s)) + std::log2(2.0 + s * s);
    }};
    return m;
  });
}

TEST(ExprScores, InexactLiteralsAreF32) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    Model m;
    maybeMask(c, r, m);
    // 0.1 and 0.3 are f32 literals (PATTERNS.md: a literal with a point is a 32-bit
    // float): the model uses the f32 values, so 1e-9 still tells them from the
    // double ones (0.3f - 0.3 = 1.2e-8, times d).
    c.spec["score"] = {node("expr", "s * 0.1 + 0.3 * (q - kv)")};
    m.scores = {[](double s, const Pos &p, bool &) {
      return s * double(0.1f) + double(0.3f) * double(p.d());
    }};
    return m;
  });
}

//===----------------------------------------------------------------------===//
// Normalisers
//===----------------------------------------------------------------------===//

TEST(Normalizers, SoftmaxExplicit) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    Model m;
    maybeMask(c, r, m);
    c.spec["normalizer"] = r.coin() ? json("softmax") : node("softmax");
    return m;
  });
}

TEST(Normalizers, SigmoidDefaultBeta) {
  SEEDED_RNG(rng);
  SweepOptions opt;
  opt.lse = false;
  Stats st = sweep(
      rng,
      [](Case &c, Rng &r) {
        Model m;
        maybeMask(c, r, m);
        c.spec["normalizer"] = r.coin() ? json("sigmoid") : node("sigmoid");
        m.norm = Norm::Sigmoid;
        return m;
      },
      opt);
  EXPECT_GT(st.allowed, 0);
}

TEST(Normalizers, SigmoidGivenBeta) {
  SEEDED_RNG(rng);
  SweepOptions opt;
  opt.lse = false;
  sweep(
      rng,
      [](Case &c, Rng &r) {
        Model m;
        maybeMask(c, r, m);
        double beta = r.pick(std::vector<double>{-2.0, 0.0, 1.5, -7.25});
        c.spec["normalizer"] = node("sigmoid", {{"beta", beta}});
        m.norm = Norm::Sigmoid;
        m.beta = beta;
        return m;
      },
      opt);
}

TEST(Normalizers, Relu) {
  SEEDED_RNG(rng);
  SweepOptions opt;
  opt.lse = false;
  sweep(
      rng,
      [](Case &c, Rng &r) {
        Model m;
        maybeMask(c, r, m);
        c.spec["normalizer"] = r.coin() ? json("relu") : node("relu");
        if (r.coin())
          c.spec["score"] = {node("alibi")}, m.scores = {sAlibi(alibiSlopesModel(c.d.Hq))};
        m.norm = Norm::Relu;
        return m;
      },
      opt);
}

TEST(Normalizers, FullyMaskedRowsWithSigmoidAndRelu) {
  SEEDED_RNG(rng);
  for (Norm n : {Norm::Sigmoid, Norm::Relu}) {
    Dims d;
    d.B = 2, d.Hq = 4, d.Hkv = 1, d.Sq = 127, d.Skv = 17, d.D = 8, d.Dv = 12;
    Stats st = single(rng, d, [n](Case &c, Rng &) {
      c.spec["mask"] = node("causal");
      c.spec["normalizer"] = n == Norm::Sigmoid ? "sigmoid" : "relu";
      Model m;
      m.mask = mCausal();
      m.norm = n;
      return m;
    });
    EXPECT_EQ(st.emptyRows, 2 * 4 * 110);
  }
}

//===----------------------------------------------------------------------===//
// Rotary embeddings
//===----------------------------------------------------------------------===//

Model ropeSetup(Case &c, Rng &r, RopeModel rope, json ropeSpec) {
  Model m;
  maybeMask(c, r, m);
  c.spec["rope"] = ropeSpec;
  m.rope = rope;
  return m;
}

TEST(Rope, Half) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    c.d.D = r.pick(std::vector<int64_t>{2, 8, 16});
    RopeModel rp;
    json spec = json::object();
    if (r.coin())
      spec["style"] = "half";
    return ropeSetup(c, r, rp, spec);
  });
}

TEST(Rope, Interleaved) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    c.d.D = r.pick(std::vector<int64_t>{2, 8, 16});
    RopeModel rp;
    rp.interleaved = true;
    rp.theta = r.pick(std::vector<double>{10000.0, 500000.0, 7.5});
    json spec = {{"style", "interleaved"}, {"theta", rp.theta}};
    return ropeSetup(c, r, rp, spec);
  });
}

TEST(Rope, PartialRotaryDim) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    c.d.D = r.pick(std::vector<int64_t>{9, 16, 18});
    RopeModel rp;
    rp.interleaved = r.coin();
    rp.rotaryDim = 2 * r.uni(1, c.d.D / 2);
    json spec = {{"style", rp.interleaved ? "interleaved" : "half"}, {"rotary_dim", rp.rotaryDim}};
    return ropeSetup(c, r, rp, spec);
  });
}

TEST(Rope, LinearScaling) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    c.d.D = 16;
    RopeModel rp;
    rp.kind = RopeModel::Linear;
    rp.factor = r.pick(std::vector<double>{2.0, 4.0, 0.5, 3.0});
    rp.interleaved = r.coin();
    json spec = {{"style", rp.interleaved ? "interleaved" : "half"},
                 {"scaling", {{"linear", rp.factor}}}};
    return ropeSetup(c, r, rp, spec);
  });
}

TEST(Rope, NtkScaling) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    c.d.D = r.pick(std::vector<int64_t>{8, 16});
    RopeModel rp;
    rp.kind = RopeModel::Ntk;
    rp.factor = r.pick(std::vector<double>{2.0, 8.0, 1.5});
    json spec = {{"scaling", {{"ntk", rp.factor}}}};
    if (r.coin()) {
      rp.rotaryDim = 4;
      spec["rotary_dim"] = 4;
    }
    return ropeSetup(c, r, rp, spec);
  });
}

TEST(Rope, YarnScaling) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    c.d.D = r.pick(std::vector<int64_t>{16, 32});
    RopeModel rp;
    rp.kind = RopeModel::Yarn;
    rp.factor = r.pick(std::vector<double>{8.0, 4.0, 1.0, 0.5});
    rp.original = r.pick(std::vector<int64_t>{64, 256, 2048});
    rp.theta = r.pick(std::vector<double>{10000.0, 500000.0});
    rp.interleaved = r.coin();
    json yarn = {{"factor", rp.factor}, {"original_max_position", rp.original}};
    if (r.coin()) {
      rp.betaFast = r.pick(std::vector<double>{32.0, 16.0, 4.0});
      rp.betaSlow = r.pick(std::vector<double>{1.0, 2.0, 0.5});
      yarn["beta_fast"] = rp.betaFast;
      yarn["beta_slow"] = rp.betaSlow;
    }
    if (r.coin(0.3)) {
      rp.mscale = r.pick(std::vector<double>{1.0, 1.25, 0.75});
      yarn["mscale"] = *rp.mscale;
    }
    json spec = {{"theta", rp.theta},
                 {"style", rp.interleaved ? "interleaved" : "half"},
                 {"scaling", {{"yarn", yarn}}}};
    if (r.coin()) {
      rp.rotaryDim = c.d.D / 2;
      spec["rotary_dim"] = rp.rotaryDim;
    }
    // Positions far out, where the interpolated and extrapolated pairs differ.
    if (r.coin())
      c.qOffArg = r.uni(1000, 5000), c.kvOffArg = *c.qOffArg - r.uni(0, 200);
    return ropeSetup(c, r, rp, spec);
  });
}

TEST(Rope, WithScoresGqaAndOffsets) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    c.d.Hq = 6, c.d.Hkv = 2, c.d.D = 16, c.d.Dv = 5;
    RopeModel rp;
    rp.interleaved = r.coin();
    rp.rotaryDim = 12;
    Model m = ropeSetup(c, r, rp,
                        {{"style", rp.interleaved ? "interleaved" : "half"}, {"rotary_dim", 12}});
    c.spec["score"] = {node("softcap", {{"cap", 1.0}}), node("alibi")};
    m.scores = {sSoftcap(1.0), sAlibi(alibiSlopesModel(6))};
    return m;
  });
}

TEST(Rope, FrequenciesApi) {
  // attune::ropeFrequencies against the model's per-pair frequencies.
  for (int kind = 0; kind < 4; ++kind) {
    for (int64_t R : {4, 16, 64}) {
      RopeModel rp;
      attune::RopeParams params;
      params.rotaryDim = R;
      params.theta = rp.theta = 500000.0;
      rp.rotaryDim = R;
      if (kind == 1)
        rp.kind = RopeModel::Linear, params.scaling = attune::RopeParams::Scaling::Linear,
        rp.factor = params.factor = 4.0;
      if (kind == 2)
        rp.kind = RopeModel::Ntk, params.scaling = attune::RopeParams::Scaling::Ntk,
        rp.factor = params.factor = 8.0;
      if (kind == 3) {
        rp.kind = RopeModel::Yarn, params.scaling = attune::RopeParams::Scaling::Yarn;
        rp.factor = params.factor = 16.0;
        rp.original = params.originalMaxPosition = 4096;
      }
      SCOPED_TRACE("scaling " + std::to_string(kind) + ", rotary_dim " + std::to_string(R));
      std::vector<double> got = attune::ropeFrequencies(params);
      std::vector<double> want = rp.freqs(R);
      ASSERT_EQ(got.size(), want.size());
      for (size_t m = 0; m < want.size(); ++m)
        EXPECT_NEAR(got[m], want[m], 1e-12 * want[m]) << "pair " << m;
    }
  }
}

//===----------------------------------------------------------------------===//
// Numerics: far positions, large scores
//===----------------------------------------------------------------------===//

TEST(Numerics, PositionsBeyond32Bits) {
  SEEDED_RNG(rng);
  SweepOptions opt;
  opt.offsets = false;
  opt.seqs = {{17, 127}, {127, 17}, {33, 33}};
  sweep(
      rng,
      [](Case &c, Rng &r) {
        int64_t base = (int64_t(1) << 33) + r.uni(0, 1000);
        if (r.coin())
          c.spec["q_offset"] = base + r.uni(0, 150), c.spec["kv_offset"] = base;
        else
          c.qOffArg = base + r.uni(0, 150), c.kvOffArg = base;
        int64_t w = r.uni(0, 60), l = r.uni(1, 9), g = r.uni(2, 16);
        std::vector<double> slopes;
        std::vector<double> r1, r2;
        for (int64_t h = 0; h < c.d.Hq; ++h) {
          slopes.push_back(r.f32(0.0, 0.5));
          r1.push_back(r.f32(0.1, 1.0));
          r2.push_back(r.f32(0.1, 1.0));
        }
        c.spec["mask"] = jAny({jAll({node("causal"), node("sliding_window", {{"left", w}})}),
                               node("strided", {{"stride", l}}),
                               node("fixed", {{"stride", l + 3}, {"summary", 1}}),
                               node("shifted_groups", {{"group", g}})});
        c.spec["score"] = {node("alibi", {{"slopes", slopes}}),
                           node("kerple_log", {{"r1", r1}, {"r2", r2}}),
                           node("log_length_scale", {{"base", 512.0}})};
        Model m;
        m.mask = mAny({mAll({mCausal(), mWindow(w, 0)}), mStrided(l), mFixed(l + 3, 1),
                       mShiftedGroups(g, std::nullopt)});
        m.scores = {sAlibi(slopes),
                    [=](double s, const Pos &p, bool &) {
                      return s - r1[size_t(p.h)] *
                                     std::log(1.0 + r2[size_t(p.h)] * double(std::llabs(p.d())));
                    },
                    [](double s, const Pos &p, bool &) {
                      return s * std::max(1.0, std::log(std::max<double>(double(p.P + 1), 1.0)) /
                                                   std::log(512.0));
                    }};
        return m;
      },
      opt);
}

TEST(Numerics, LargeScoresDoNotOverflow) {
  SEEDED_RNG(rng);
  sweep(rng, [](Case &c, Rng &r) {
    Model m;
    maybeMask(c, r, m);
    c.d.D = 16;
    c.spec["scale"] = r.pick(std::vector<double>{60.0, -80.0, 200.0});
    c.spec["outputs"] = json::array({"o", "lse"});
    return m;
  });
}

} // namespace
