//===- Reference.cpp - the float64 reference back end ---------------------===//
#include "codegen/reference/Reference.h"

#include "codegen/reference/RegionInterpreter.h"
#include "dialect/AttnOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <thread>

using namespace mlir;

namespace attune {

std::vector<double> ropeFrequencies(const RopeParams &p) {
  const double kPi = 3.14159265358979323846;
  int64_t r = p.rotaryDim;
  double theta = p.theta;
  if (p.scaling == RopeParams::Scaling::Ntk)
    theta *= std::pow(p.factor, double(r) / double(r - 2));
  std::vector<double> freqs;
  for (int64_t m = 0; m < r / 2; ++m) {
    double f = std::pow(theta, -2.0 * double(m) / double(r));
    if (p.scaling == RopeParams::Scaling::Linear) {
      f /= p.factor;
    } else if (p.scaling == RopeParams::Scaling::Yarn) {
      // NTK-by-parts: r = L / wavelength; ramp 0 below beta_slow (interpolate),
      // 1 above beta_fast (keep).
      double wavelength = 2.0 * kPi / f;
      double ratio = double(p.originalMaxPosition) / wavelength;
      double gamma = (ratio - p.betaSlow) / (p.betaFast - p.betaSlow);
      gamma = std::clamp(gamma, 0.0, 1.0);
      f = (1.0 - gamma) * f / p.factor + gamma * f;
    }
    freqs.push_back(f);
  }
  return freqs;
}

void applyRope(HostTensor &x, int64_t offset, const RopeParams &p) {
  int64_t B = x.shape[0], H = x.shape[1], S = x.shape[2], D = x.shape[3];
  int64_t half = p.rotaryDim / 2;
  std::vector<double> freqs = ropeFrequencies(p);
  double mscale = p.scaling == RopeParams::Scaling::Yarn ? p.mscale : 1.0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t s = 0; s < S; ++s) {
        double *row = x.data.data() + ((b * H + h) * S + s) * D;
        double pos = double(s + offset);
        for (int64_t m = 0; m < half; ++m) {
          int64_t i0 = p.interleaved ? 2 * m : m;
          int64_t i1 = p.interleaved ? 2 * m + 1 : m + half;
          double angle = pos * freqs[m];
          double c = std::cos(angle), sn = std::sin(angle);
          double a = row[i0], bb = row[i1];
          row[i0] = (a * c - bb * sn) * mscale;
          row[i1] = (a * sn + bb * c) * mscale;
        }
      }
}

static RopeParams ropeParams(attn::RopeOp op) {
  RopeParams p;
  p.theta = op.getTheta().convertToDouble();
  p.interleaved = op.getStyle() == attn::RopeStyle::interleaved;
  p.rotaryDim = op.getRotaryDim();
  switch (op.getScaling()) {
  case attn::RopeScaling::none:
    p.scaling = RopeParams::Scaling::None;
    break;
  case attn::RopeScaling::linear:
    p.scaling = RopeParams::Scaling::Linear;
    break;
  case attn::RopeScaling::ntk:
    p.scaling = RopeParams::Scaling::Ntk;
    break;
  case attn::RopeScaling::yarn:
    p.scaling = RopeParams::Scaling::Yarn;
    break;
  }
  p.factor = op.getFactor().convertToDouble();
  p.originalMaxPosition = op.getOriginalMaxPosition();
  p.betaFast = op.getBetaFast().convertToDouble();
  p.betaSlow = op.getBetaSlow().convertToDouble();
  p.mscale = op.getMscale().convertToDouble();
  return p;
}

namespace {

/// The per-row computation, shared by the worker threads.
struct RowEvaluator {
  attn::AttentionOp op;
  const BoundCall &call;
  const HostTensor &q, &k, &v;
  const RegionProgram &mask, &score;
  AttentionResult &result;
  double scale;
  attn::Normalizer normalizer;
  double sigmoidBeta;

  void row(int64_t b, int64_t h, int64_t i, std::vector<Slot> &scratch,
           std::vector<double> &scores, std::vector<char> &allowed) const {
    int64_t Skv = call.seqKv, D = call.headDim, Dv = call.headDimV;
    int64_t hk = h / (call.headsQ / call.headsKv);
    const double *qi = q.data.data() + ((b * call.headsQ + h) * call.seqQ + i) * D;
    Slot args[9];
    args[1].i = b;
    args[2].i = h;
    args[3].i = i;
    args[5].i = i + call.qOffset;
    args[7].i = call.seqQ;
    args[8].i = Skv;
    Slot out;
    double rowMax = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < Skv; ++j) {
      args[4].i = j;
      args[6].i = j + call.kvOffset;
      mask.run(args + 1, call.inputs, scratch, &out);
      allowed[j] = out.i != 0;
      if (!allowed[j])
        continue;
      const double *kj = k.data.data() + ((b * call.headsKv + hk) * Skv + j) * D;
      double dot = 0.0;
      for (int64_t d = 0; d < D; ++d)
        dot += qi[d] * kj[d];
      args[0].f = dot * scale;
      score.run(args, call.inputs, scratch, &out);
      scores[j] = out.f;
      // A NaN score of an allowed pair makes the row NaN (std::max would drop it and
      // could call a row of NaN scores fully masked).
      rowMax = std::isnan(out.f) || std::isnan(rowMax) ? out.f + rowMax : std::max(rowMax, out.f);
    }
    // Weights over allowed keys.
    double lse = -std::numeric_limits<double>::infinity();
    if (normalizer == attn::Normalizer::softmax) {
      if (rowMax == -std::numeric_limits<double>::infinity()) {
        std::fill(allowed.begin(), allowed.end(), 0); // no finite score: masked row
      } else {
        double sum = 0.0;
        for (int64_t j = 0; j < Skv; ++j)
          if (allowed[j])
            sum += std::exp(scores[j] - rowMax);
        lse = rowMax + std::log(sum);
        for (int64_t j = 0; j < Skv; ++j)
          if (allowed[j])
            scores[j] = std::exp(scores[j] - lse);
      }
    } else {
      double beta = std::isnan(sigmoidBeta) ? -std::log(double(Skv)) : sigmoidBeta;
      for (int64_t j = 0; j < Skv; ++j) {
        if (!allowed[j])
          continue;
        scores[j] = normalizer == attn::Normalizer::sigmoid
                        ? 1.0 / (1.0 + std::exp(-(scores[j] + beta)))
                        : std::max(scores[j], 0.0) / double(Skv);
      }
    }
    double *o = result.o.data.data() + ((b * call.headsQ + h) * call.seqQ + i) * Dv;
    for (int64_t j = 0; j < Skv; ++j) {
      if (!allowed[j])
        continue;
      const double *vj = v.data.data() + ((b * call.headsKv + hk) * Skv + j) * Dv;
      for (int64_t d = 0; d < Dv; ++d)
        o[d] += scores[j] * vj[d];
    }
    if (!result.lse.data.empty())
      result.lse.data[(b * call.headsQ + h) * call.seqQ + i] = lse;
  }
};

} // namespace

FailureOr<AttentionResult> runReference(ModuleOp module, const AttentionArgs &args,
                                        int threads) {
  func::FuncOp func;
  for (auto f : module.getOps<func::FuncOp>()) {
    if (func)
      return f.emitError("the reference runs modules of exactly one function");
    func = f;
  }
  if (!func || func.getBody().empty())
    return module.emitError("the module holds no function with a body");
  attn::AttentionOp op;
  func.walk([&](attn::AttentionOp a) { op = a; });
  if (!op)
    return func.emitError("the function holds no attn.attention");
  BoundCall call;
  std::string error;
  // Errors about the caller's arrays, not the IR: reported without a location.
  if (!bindArguments(op, args, call, error))
    return emitError(UnknownLoc::get(module.getContext()), error);

  // q and k, possibly through attn.rope ops in the function body.
  HostTensor q = args.q, k = args.k;
  auto applyChain = [&](Value operand, HostTensor &t, int64_t offset) -> LogicalResult {
    SmallVector<attn::RopeOp> chain;
    while (auto rope = operand.getDefiningOp<attn::RopeOp>()) {
      chain.push_back(rope);
      operand = rope.getInput();
    }
    if (!isa<BlockArgument>(operand))
      return op.emitError("the reference needs q and k as function arguments, possibly "
                          "through attn.rope");
    for (auto it = chain.rbegin(); it != chain.rend(); ++it)
      applyRope(t, offset, ropeParams(*it));
    return success();
  };
  if (failed(applyChain(op.getQ(), q, call.qOffset)) ||
      failed(applyChain(op.getK(), k, call.kvOffset)))
    return failure();

  auto maskOr = RegionProgram::compile(op.getMask(), op);
  if (failed(maskOr))
    return failure();
  auto scoreOr = RegionProgram::compile(op.getScore(), op);
  if (failed(scoreOr))
    return failure();
  RegionProgram *mask = maskOr->get(), *score = scoreOr->get();

  AttentionResult result;
  result.o = HostTensor::zeros({call.batch, call.headsQ, call.seqQ, call.headDimV});
  result.lse = op.getLse() ? HostTensor::zeros({call.batch, call.headsQ, call.seqQ})
                           : HostTensor();
  RowEvaluator eval{op,     call,   q,
                    k,      args.v, *mask,
                    *score, result, op.getScale().convertToDouble(),
                    op.getNormalizer(),
                    op.getSigmoidBeta() ? op.getSigmoidBeta()->convertToDouble() : NAN};

  int64_t rows = call.batch * call.headsQ * call.seqQ;
  unsigned n = threads > 0 ? unsigned(threads)
                           : std::max(1u, std::min(8u, std::thread::hardware_concurrency()));
  n = unsigned(std::min<int64_t>(n, std::max<int64_t>(rows, 1)));
  auto worker = [&](unsigned t) {
    std::vector<Slot> scratch(std::max(mask->numSlots(), score->numSlots()) + 1);
    std::vector<double> scores(static_cast<size_t>(call.seqKv));
    std::vector<char> allowed(static_cast<size_t>(call.seqKv));
    for (int64_t r = t; r < rows; r += n) {
      int64_t i = r % call.seqQ, bh = r / call.seqQ;
      eval.row(bh / call.headsQ, bh % call.headsQ, i, scratch, scores, allowed);
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < n; ++t)
    pool.emplace_back(worker, t);
  worker(0);
  for (auto &th : pool)
    th.join();
  return result;
}

} // namespace attune
