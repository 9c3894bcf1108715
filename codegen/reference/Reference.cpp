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

/// Rotates (or, with `transpose`, applies the transposed rotation to) every row of a
/// [B, H, S, D] tensor at positions row + offset.
static void rotateRows(HostTensor &x, int64_t offset, const RopeParams &p, bool transpose) {
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
          double c = std::cos(angle), sn = transpose ? -std::sin(angle) : std::sin(angle);
          double a = row[i0], bb = row[i1];
          row[i0] = (a * c - bb * sn) * mscale;
          row[i1] = (a * sn + bb * c) * mscale;
        }
      }
}

void applyRope(HostTensor &x, int64_t offset, const RopeParams &p) {
  rotateRows(x, offset, p, /*transpose=*/false);
}

void applyRopeTranspose(HostTensor &g, int64_t offset, const RopeParams &p) {
  rotateRows(g, offset, p, /*transpose=*/true);
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

  /// The weights p_ij of row (b, h, i) over every key j into `scores` (0 where not
  /// allowed; `allowed` cleared on a row with no finite score), the scaled dot
  /// products s(i, j) into `raw` when given; returns lse (-inf for sigmoid and relu).
  double weights(int64_t b, int64_t h, int64_t i, std::vector<Slot> &scratch,
                 std::vector<double> &scores, std::vector<char> &allowed,
                 std::vector<double> *raw) const {
    int64_t Skv = call.seqKv, D = call.headDim;
    int64_t hk = h / (call.headsQ / call.headsKv);
    const double *qi = q.data.data() + ((b * call.headsQ + h) * call.seqQ + i) * D;
    Slot args[9];
    rowArgs(args, b, h, i);
    Slot out;
    double rowMax = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < Skv; ++j) {
      args[4].i = j;
      args[6].i = j + call.kvOffset;
      mask.run(args + 1, call.inputs, scratch, &out);
      allowed[j] = out.i != 0;
      scores[j] = 0.0;
      if (!allowed[j])
        continue;
      const double *kj = k.data.data() + ((b * call.headsKv + hk) * Skv + j) * D;
      double dot = 0.0;
      for (int64_t d = 0; d < D; ++d)
        dot += qi[d] * kj[d];
      args[0].f = dot * scale;
      if (raw)
        (*raw)[j] = args[0].f;
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
        std::fill(scores.begin(), scores.end(), 0.0);
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
    return lse;
  }

  /// The region arguments (s, b, h, q_idx, kv_idx, q, kv, seq_q, seq_kv) of row i.
  void rowArgs(Slot *args, int64_t b, int64_t h, int64_t i) const {
    args[1].i = b;
    args[2].i = h;
    args[3].i = i;
    args[5].i = i + call.qOffset;
    args[7].i = call.seqQ;
    args[8].i = call.seqKv;
  }

  void row(int64_t b, int64_t h, int64_t i, std::vector<Slot> &scratch,
           std::vector<double> &scores, std::vector<char> &allowed) const {
    int64_t Skv = call.seqKv, Dv = call.headDimV;
    int64_t hk = h / (call.headsQ / call.headsKv);
    double lse = weights(b, h, i, scratch, scores, allowed, nullptr);
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

namespace {

/// What forward and backward share: the op, the bound call, q and k after RoPE, the
/// region programs, and the RoPE chains (outermost first) for the backward.
struct Prepared {
  attn::AttentionOp op;
  BoundCall call;
  HostTensor q, k;
  std::unique_ptr<RegionProgram> mask, score;
  SmallVector<RopeParams> qChain, kChain;
};

FailureOr<Prepared> prepare(ModuleOp module, const AttentionArgs &args) {
  Prepared p;
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
  p.op = op;
  std::string error;
  // Errors about the caller's arrays, not the IR: reported without a location.
  if (!bindArguments(op, args, p.call, error))
    return emitError(UnknownLoc::get(module.getContext()), error);
  // A per-sequence call runs sequence by sequence (runReference); nothing here reads
  // its buffers.
  if (p.call.perSequence)
    return p;

  // q and k, possibly through attn.rope ops in the function body.
  p.q = args.q;
  p.k = args.k;
  auto applyChain = [&](Value operand, HostTensor &t, int64_t offset,
                        SmallVector<RopeParams> &chain) -> LogicalResult {
    while (auto rope = operand.getDefiningOp<attn::RopeOp>()) {
      chain.push_back(ropeParams(rope));
      operand = rope.getInput();
    }
    if (!isa<BlockArgument>(operand))
      return op.emitError("the reference needs q and k as function arguments, possibly "
                          "through attn.rope");
    for (auto it = chain.rbegin(); it != chain.rend(); ++it)
      applyRope(t, offset, *it);
    return success();
  };
  if (failed(applyChain(op.getQ(), p.q, p.call.qOffset, p.qChain)) ||
      failed(applyChain(op.getK(), p.k, p.call.kvOffset, p.kChain)))
    return failure();

  auto maskOr = RegionProgram::compile(op.getMask(), op);
  if (failed(maskOr))
    return failure();
  auto scoreOr = RegionProgram::compile(op.getScore(), op);
  if (failed(scoreOr))
    return failure();
  p.mask = std::move(*maskOr);
  p.score = std::move(*scoreOr);
  return p;
}

unsigned workerCount(int threads, int64_t items) {
  unsigned n = threads > 0 ? unsigned(threads)
                           : std::max(1u, std::min(8u, std::thread::hardware_concurrency()));
  return unsigned(std::min<int64_t>(n, std::max<int64_t>(items, 1)));
}

template <typename Fn> void runWorkers(unsigned n, Fn worker) {
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < n; ++t)
    pool.emplace_back(worker, t);
  worker(0);
  for (auto &th : pool)
    th.join();
}

} // namespace

FailureOr<AttentionResult> runReference(ModuleOp module, const AttentionArgs &args,
                                        int threads) {
  FailureOr<Prepared> prepared = prepare(module, args);
  if (failed(prepared))
    return failure();
  Prepared &p = *prepared;
  const BoundCall &call = p.call;
  attn::AttentionOp op = p.op;
  AttentionResult result;
  if (call.perSequence) {
    // Ragged and paged storage, per-sequence lengths: by definition (PATTERNS.md),
    // each sequence gathered into dense tensors of its own lengths and run alone.
    allocateOutputs(call, static_cast<bool>(op.getLse()), result.o, result.lse);
    for (int64_t b = 0; b < call.batch; ++b) {
      if (call.sequences[size_t(b)].qLen == 0)
        continue;
      FailureOr<AttentionResult> one = runReference(module, gatherSequence(op, args, call, b),
                                                    threads);
      if (failed(one))
        return failure();
      scatterSequence(call, b, one->o, op.getLse() ? &one->lse : nullptr, result.o,
                      op.getLse() ? &result.lse : nullptr);
    }
    return result;
  }
  result.o = HostTensor::zeros({call.batch, call.headsQ, call.seqQ, call.headDimV});
  result.lse = op.getLse() ? HostTensor::zeros({call.batch, call.headsQ, call.seqQ})
                           : HostTensor();
  RowEvaluator eval{op,        call,   p.q,
                    p.k,       args.v, *p.mask,
                    *p.score,  result, op.getScale().convertToDouble(),
                    op.getNormalizer(),
                    op.getSigmoidBeta() ? op.getSigmoidBeta()->convertToDouble() : NAN};

  int64_t rows = call.batch * call.headsQ * call.seqQ;
  unsigned n = workerCount(threads, rows);
  runWorkers(n, [&](unsigned t) {
    std::vector<Slot> scratch(std::max(p.mask->numSlots(), p.score->numSlots()) + 1);
    std::vector<double> scores(static_cast<size_t>(call.seqKv));
    std::vector<char> allowed(static_cast<size_t>(call.seqKv));
    for (int64_t r = t; r < rows; r += n) {
      int64_t i = r % call.seqQ, bh = r / call.seqQ;
      eval.row(bh / call.headsQ, bh % call.headsQ, i, scratch, scores, allowed);
    }
  });
  return result;
}

FailureOr<AttentionGradients> runReferenceBackward(ModuleOp module, const AttentionArgs &args,
                                                   const HostTensor &dO, const HostTensor *dlse,
                                                   int threads) {
  FailureOr<Prepared> prepared = prepare(module, args);
  if (failed(prepared))
    return failure();
  Prepared &p = *prepared;
  const BoundCall &call = p.call;
  attn::AttentionOp op = p.op;
  Location unknown = UnknownLoc::get(module.getContext());
  if (call.perSequence)
    return emitError(unknown, "the backward over ragged or paged storage or per-sequence "
                              "lengths is not built yet (padded batches only)");
  std::vector<int64_t> oShape{call.batch, call.headsQ, call.seqQ, call.headDimV};
  std::vector<int64_t> lseShape{call.batch, call.headsQ, call.seqQ};
  auto shapeOf = [](const std::vector<int64_t> &s) {
    HostTensor t;
    t.shape = s;
    return t.shapeString();
  };
  if (dO.isInt || dO.shape != oShape)
    return emitError(unknown, "dO: expected a float tensor of o's shape ")
           << shapeOf(oShape) << ", got " << dO.shapeString() << (dO.isInt ? " (integer)" : "");
  if (dlse) {
    if (op.getNormalizer() != attn::Normalizer::softmax)
      return emitError(unknown, "dlse: the spec's normaliser has no lse (only softmax does)");
    if (dlse->isInt || dlse->shape != lseShape)
      return emitError(unknown, "dlse: expected a float tensor of lse's shape ")
             << shapeOf(lseShape) << ", got " << dlse->shapeString();
  }

  AttentionGradients grads;
  grads.dq = HostTensor::zeros(p.q.shape);
  grads.dk = HostTensor::zeros(p.k.shape);
  grads.dv = HostTensor::zeros(args.v.shape);
  // Float inputs get a gradient (zero where the score never reads them).
  std::vector<int> floatInputs;
  auto names = op.getInputNames();
  for (size_t n = 0; n < call.inputs.size(); ++n)
    if (!call.inputs[n]->isInt)
      floatInputs.push_back(int(n));

  AttentionResult unused;
  RowEvaluator eval{op,        call,   p.q,
                    p.k,       args.v, *p.mask,
                    *p.score,  unused, op.getScale().convertToDouble(),
                    op.getNormalizer(),
                    op.getSigmoidBeta() ? op.getSigmoidBeta()->convertToDouble() : NAN};
  double scale = eval.scale;
  int64_t group = call.headsQ / call.headsKv;
  int64_t D = call.headDim, Dv = call.headDimV, Skv = call.seqKv, Sq = call.seqQ;

  // Work items are (b, kv head): each owns its rows of dk and dv and the dq rows of
  // its query heads; tensor gradients are per worker, summed in worker order.
  int64_t items = call.batch * call.headsKv;
  unsigned n = workerCount(threads, items);
  std::vector<std::vector<HostTensor>> partial(n);
  runWorkers(n, [&](unsigned t) {
    std::vector<HostTensor> &mine = partial[t];
    std::vector<HostTensor *> sinks(call.inputs.size(), nullptr);
    mine.reserve(floatInputs.size());
    for (int in : floatInputs) {
      mine.push_back(HostTensor::zeros(call.inputs[in]->shape));
      sinks[in] = &mine.back();
    }
    std::vector<Slot> scratch(std::max(p.mask->numSlots(), p.score->numSlots()) + 1);
    size_t cols = static_cast<size_t>(Skv);
    std::vector<double> adjoint, weights(cols), raw(cols), dp(cols);
    std::vector<char> allowed(cols);
    for (int64_t item = t; item < items; item += n) {
      int64_t b = item / call.headsKv, hk = item % call.headsKv;
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h)
        for (int64_t i = 0; i < Sq; ++i) {
          eval.weights(b, h, i, scratch, weights, allowed, &raw);
          int64_t rowIdx = (b * call.headsQ + h) * Sq + i;
          const double *doRow = dO.data.data() + rowIdx * Dv;
          const double *qi = p.q.data.data() + rowIdx * D;
          double *dqi = grads.dq.data.data() + rowIdx * D;
          double rowD = 0.0;
          for (int64_t j = 0; j < Skv; ++j) {
            dp[j] = 0.0;
            if (!allowed[j])
              continue;
            const double *vj = args.v.data.data() + ((b * call.headsKv + hk) * Skv + j) * Dv;
            for (int64_t d = 0; d < Dv; ++d)
              dp[j] += doRow[d] * vj[d];
            rowD += weights[j] * dp[j];
          }
          double g = dlse ? dlse->data[size_t(rowIdx)] : 0.0;
          Slot regionArgs[9];
          eval.rowArgs(regionArgs, b, h, i);
          for (int64_t j = 0; j < Skv; ++j) {
            if (!allowed[j])
              continue;
            double w = weights[j];
            size_t kvRow = size_t((b * call.headsKv + hk) * Skv + j);
            double *dvj = grads.dv.data.data() + kvRow * Dv;
            for (int64_t d = 0; d < Dv; ++d)
              dvj[d] += w * doRow[d];
            // dL/ds' for the score s' the normaliser saw.
            double dsPrime;
            switch (eval.normalizer) {
            case attn::Normalizer::softmax: dsPrime = w * (dp[j] - rowD + g); break;
            case attn::Normalizer::sigmoid: dsPrime = dp[j] * w * (1.0 - w); break;
            default: dsPrime = w > 0.0 ? dp[j] / double(Skv) : 0.0; break;
            }
            if (dsPrime == 0.0)
              continue;
            regionArgs[0].f = raw[j];
            regionArgs[4].i = j;
            regionArgs[6].i = j + call.kvOffset;
            double ds = p.score->runGrad(regionArgs, call.inputs, scratch, adjoint, dsPrime, 0,
                                         sinks) *
                        scale;
            const double *kj = p.k.data.data() + kvRow * D;
            double *dkj = grads.dk.data.data() + kvRow * D;
            for (int64_t d = 0; d < D; ++d) {
              dqi[d] += ds * kj[d];
              dkj[d] += ds * qi[d];
            }
          }
        }
    }
  });
  // RoPE: the gradients reach the unrotated q and k (the chain's transposes, the
  // outermost rotation first).
  for (const RopeParams &r : p.qChain)
    applyRopeTranspose(grads.dq, call.qOffset, r);
  for (const RopeParams &r : p.kChain)
    applyRopeTranspose(grads.dk, call.kvOffset, r);
  for (size_t f = 0; f < floatInputs.size(); ++f) {
    HostTensor sum = HostTensor::zeros(call.inputs[floatInputs[f]]->shape);
    for (unsigned t = 0; t < n; ++t)
      if (f < partial[t].size())
        for (size_t e = 0; e < sum.data.size(); ++e)
          sum.data[e] += partial[t][f].data[e];
    grads.dinputs[cast<StringAttr>(names[floatInputs[f]]).str()] = std::move(sum);
  }
  return grads;
}

} // namespace attune
