//===- Bundle.cpp - a loaded kernel bundle: selection, launch, tuning -----===//
#include "Bundle.h"

#include "HalfFloat.h"
#include "Sequences.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <set>

namespace attune::rt {

using namespace cu;

//===----------------------------------------------------------------------===//
// Variant selection (pure)
//===----------------------------------------------------------------------===//

std::vector<int> compatibleVariants(const Manifest &m, int major, int minor) {
  std::vector<int> out;
  for (size_t i = 0; i < m.variants.size(); ++i)
    if (archRunsOn(m.variants[i], major, minor))
      out.push_back(int(i));
  return out;
}

static std::string ccText(int major, int minor) {
  return std::to_string(major) + "." + std::to_string(minor);
}

int selectVariant(const Manifest &m, int major, int minor, const std::string &forced,
                  const std::string &tuned, const char *fn) {
  auto fail = [&](const std::string &msg) -> int { throw ArgError(std::string(fn) + ": " + msg); };
  if (!forced.empty()) {
    int i = m.findVariant(forced);
    if (i < 0) {
      std::string names;
      for (const Variant &v : m.variants)
        names += (names.empty() ? "" : ", ") + v.name;
      return fail("unknown variant '" + forced + "' (the bundle has: " + names + ")");
    }
    if (!archRunsOn(m.variants[size_t(i)], major, minor))
      return fail("variant '" + forced + "' is for " + m.variants[size_t(i)].arch +
                  " and does not run on a device of compute capability " + ccText(major, minor));
    return i;
  }
  if (!tuned.empty()) {
    int i = m.findVariant(tuned);
    if (i >= 0 && archRunsOn(m.variants[size_t(i)], major, minor))
      return i;
  }
  std::vector<int> ok = compatibleVariants(m, major, minor);
  if (ok.empty()) {
    std::set<std::string> archs;
    for (const Variant &v : m.variants)
      archs.insert(v.arch);
    std::string list;
    for (const std::string &a : archs)
      list += (list.empty() ? "" : ", ") + a;
    return fail("no variant of this bundle runs on a device of compute capability " +
                ccText(major, minor) + " (the bundle has " + list +
                "); recompile it with --arch sm_" + std::to_string(major) +
                std::to_string(minor) + " or an older architecture");
  }
  // The default of the newest architecture that runs here: sm_90a's default beats
  // sm_80's on an H100; at the same capability the arch-specific one wins.
  int best = -1;
  for (int i : ok) {
    const Variant &v = m.variants[size_t(i)];
    if (!v.isDefault)
      continue;
    if (best < 0)
      best = i;
    const Variant &b = m.variants[size_t(best)];
    if (std::make_pair(v.archCapability, v.archExact) > std::make_pair(b.archCapability, b.archExact))
      best = i;
  }
  return best >= 0 ? best : ok.front();
}

std::string checkTunedVariant(const Manifest &m, const std::string &dir, const std::string &key,
                              const std::string &tuned, const std::string &dbPath) {
  if (tuned.empty() || m.findVariant(tuned) >= 0)
    return tuned;
  std::fprintf(stderr,
               "attune: warning: the tuning database %s chose variant '%s' for \"%s\", which "
               "the bundle %s does not have; ignoring it (the default variant runs; tune again "
               "to replace the entry)\n",
               dbPath.c_str(), tuned.c_str(), key.c_str(), dir.c_str());
  return "";
}

bool prefersCubin(const Variant &v, int major, int minor) {
  return v.cubin && v.archCapability == major * 10 + minor;
}

//===----------------------------------------------------------------------===//
// Bundle
//===----------------------------------------------------------------------===//

namespace {

Json infoJsonOf(const std::string &dir, const Manifest &m) {
  Json j = Json::object();
  j.set("dir", dir);
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
  Json outputs = Json::array();
  outputs.push_back("o");
  if (m.hasLse)
    outputs.push_back("lse");
  j.set("outputs", outputs);
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
    e.set("threads", v.threads);
    e.set("smem_bytes", v.smemBytes);
    Json grid = Json::object();
    grid.set("x", v.grid[0].text());
    grid.set("y", v.grid[1].text());
    grid.set("z", v.grid[2].text());
    e.set("grid", grid);
    e.set("kernel", v.kernel);
    e.set("ptx", v.ptx);
    e.set("cubin", v.cubin ? Json(*v.cubin) : Json());
    if (v.ptxas) {
      Json p = Json::object();
      p.set("registers", v.ptxas->registers);
      p.set("spill_stores", v.ptxas->spillStores);
      p.set("spill_loads", v.ptxas->spillLoads);
      p.set("smem_static", v.ptxas->smemStatic);
      e.set("ptxas", p);
    } else {
      e.set("ptxas", Json());
    }
    variants.push_back(e);
  }
  j.set("variants", variants);
  Json host = Json::array();
  for (const HostVariant &h : m.hostVariants) {
    Json e = Json::object();
    e.set("name", h.name);
    e.set("library", h.library);
    e.set("config", h.config);
    e.set("default", h.isDefault);
    e.set("cpu", h.cpu);
    e.set("backward", h.backward.has_value());
    e.set("backward_error", h.backwardError.empty() ? Json() : Json(h.backwardError));
    e.set("lse", h.forward.lse);
    host.push_back(e);
  }
  j.set("host", host);
  return j;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string mib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / (1024.0 * 1024.0));
  return buf;
}

} // namespace


Bundle::Bundle(const std::string &dir) : Bundle(loadManifest(dir), dir, makeCudaDevice()) {}

Bundle::Bundle(Manifest m, std::string dir, std::unique_ptr<Device> device)
    : dir_(std::move(dir)), m_(std::move(m)), device_(std::move(device)) {
  // Strip trailing slashes so messages and the info JSON show a clean path.
  while (dir_.size() > 1 && dir_.back() == '/')
    dir_.pop_back();
  info_ = infoJsonOf(dir_, m_).dump();
}

Bundle::~Bundle() = default;

std::string Bundle::key(const DeviceInfo &dev, const CheckedCall &c) const {
  return tuningKey(dev.name, dev.smCount, m_.specHash, shapeBucket(c.batch, c.seqQ, c.seqKv));
}

std::string Bundle::tunedName(const DeviceInfo &dev, const CheckedCall &c) {
  std::string k = key(dev, c);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tuned_.find(k);
    if (it != tuned_.end())
      return it->second;
  }
  std::string name;
  try {
    TuningDb db = TuningDb::atDefaultLocation();
    if (auto entry = db.lookup(k))
      name = checkTunedVariant(m_, dir_, k, entry->variant, db.path());
  } catch (const CacheError &) {
    // No cache directory or an unreadable one: nothing is tuned.
  }
  std::lock_guard<std::mutex> lock(mu_);
  tuned_[k] = name;
  return name;
}

std::string Bundle::resourceProblem(const Variant &v, const DeviceInfo &dev,
                                    const unsigned grid[3]) const {
  int64_t smem = v.smemBytes + (v.ptxas ? v.ptxas->smemStatic : 0);
  if (smem > dev.maxSmemOptin)
    return "needs " + std::to_string(smem) + " bytes of shared memory per block; " + dev.name +
           " allows " + std::to_string(dev.maxSmemOptin);
  if (v.threads > dev.maxThreadsPerBlock)
    return "needs " + std::to_string(v.threads) + " threads per block; " + dev.name + " allows " +
           std::to_string(dev.maxThreadsPerBlock);
  const char *axes[] = {"x", "y", "z"};
  for (int a = 0; a < 3; ++a)
    if (int64_t(grid[a]) > dev.maxGrid[a])
      return std::string("grid.") + axes[a] + " = " + std::to_string(grid[a]) + " exceeds " +
             dev.name + "'s limit of " + std::to_string(dev.maxGrid[a]);
  return "";
}

namespace {
/// Key blocks of the call for variant `v` (its config's block_n), for the split heuristic.
int64_t kvBlocksOf(const Variant &v, const CheckedCall &c) {
  const Json *bn = v.config.find("block_n");
  int64_t n = bn && bn->isInteger() ? bn->asInt() : 0;
  return n > 0 ? (c.seqKv + n - 1) / n : 0;
}
} // namespace

int64_t Bundle::splitsFor(const Variant &v, const DeviceInfo &dev, const CheckedCall &c,
                          int64_t requestedSplits, const char *fn) const {
  if (!v.splitKv)
    return 1;
  unsigned grid[3];
  evalGrid(v, c, fn, grid); // c binds num_splits = 1: the unsplit grid
  return chooseSplits(requestedSplits, int64_t(grid[0]) * grid[1] * grid[2], dev.smCount,
                      kvBlocksOf(v, c));
}

void Bundle::launchVariant(int i, const DeviceInfo &dev, const CheckedCall &c, void *stream,
                           const char *fn, int64_t requestedSplits) {
  const Variant &v = m_.variants[size_t(i)];
  std::string what = std::string(fn) + ": variant " + v.name;
  if (requestedSplits < 0)
    throw ArgError(std::string(fn) + ": num_splits = " + std::to_string(requestedSplits) +
                   ": expected 0 (the runtime's choice), 1 (no split) or more");
  if (!v.splitKv && requestedSplits > 1)
    throw ArgError(what + " cannot split the keys (num_splits = " +
                   std::to_string(requestedSplits) + "): its bundle has no split_kv");
  int64_t splits = splitsFor(v, dev, c, requestedSplits, fn);
  // c binds num_splits = 1; only a split launch pays for a copy that rebinds it.
  CheckedCall rebound;
  if (splits > 1) {
    rebound = c;
    rebound.names["num_splits"] = splits;
  }
  const CheckedCall &call = splits > 1 ? rebound : c;
  Launch main;
  main.variant = i;
  evalGrid(v, call, fn, main.grid);
  std::string problem = resourceProblem(v, dev, main.grid);
  if (!problem.empty())
    throw CudaError(what + ": " + problem);
  device_->prepare(m_, dir_, i, dev);
  main.threads = v.threads;
  main.smemBytes = v.smemBytes;
  main.stream = stream;
  main.params = &v.params;
  main.what = what;
  if (splits == 1) {
    main.slots = packParams(v.params, "variant " + v.name, call, {}, fn, &main.bytes);
    device_->launch(m_, main);
    return;
  }
  // Split-KV: scratch from the stream-ordered pool, freed in stream order after the
  // combine, so concurrent streams never share it.
  const SplitKv &split = *v.splitKv;
  Launch combine;
  combine.variant = i;
  combine.combine = true;
  evalGrid(split.grid, "variant " + v.name + "'s combine kernel", call, fn, combine.grid);
  combine.threads = split.threads;
  combine.stream = stream;
  combine.params = &split.params;
  combine.what = what + " (combine)";
  std::vector<uint64_t> scratch, scratchBytes;
  auto release = [&] {
    for (uint64_t p : scratch)
      device_->freeScratch(p, stream);
  };
  try {
    for (size_t k = 0; k < split.scratchBytes.size(); ++k) {
      int64_t bytes = split.scratchBytes[k].eval(call.names);
      scratch.push_back(device_->allocScratch(
          size_t(std::max<int64_t>(bytes, 1)), stream,
          what + ": scratch '" + split.scratchNames[k] + "' (" + std::to_string(bytes) +
              " bytes for " + std::to_string(splits) + " splits)"));
      scratchBytes.push_back(uint64_t(std::max<int64_t>(bytes, 0)));
    }
    main.slots =
        packParams(v.params, "variant " + v.name, call, scratch, fn, &main.bytes, scratchBytes);
    device_->launch(m_, main);
    combine.slots = packParams(split.params, "variant " + v.name + "'s combine kernel", call,
                               scratch, fn, &combine.bytes, scratchBytes);
    device_->launch(m_, combine);
  } catch (...) {
    release();
    throw;
  }
  release();
}

namespace {
int64_t configInt(const Variant &v, const char *key) {
  const Json *x = v.config.find(key);
  return x && x->isInteger() ? x->asInt() : 0;
}
bool packsGqa(const Variant &v) {
  const Json *x = v.config.find("pack_gqa");
  return x && x->isBool() && x->asBool();
}
} // namespace

int decodeVariant(const Manifest &m, int chosen, const CheckedCall &c) {
  const Variant &d = m.variants[size_t(chosen)];
  int64_t group = c.headsKv > 0 ? c.headsQ / c.headsKv : 1;
  int64_t queries = c.perSequence ? c.maxSeqQ : c.seqQ;
  if (group < 2 || packsGqa(d) || queries < 1 || queries * group > configInt(d, "block_m"))
    return chosen;
  int other = -1;
  for (size_t i = 0; i < m.variants.size(); ++i) {
    const Variant &v = m.variants[i];
    if (v.arch != d.arch || !packsGqa(v) || configInt(v, "block_m") < queries * group)
      continue;
    if (configInt(v, "block_m") == configInt(d, "block_m") &&
        configInt(v, "block_n") == configInt(d, "block_n"))
      return int(i);
    if (other < 0)
      other = int(i);
  }
  return other >= 0 ? other : chosen;
}

int Bundle::choose(const attn_call &call, const CheckedCall &c, const DeviceInfo &dev,
                   const char *fn) {
  std::string forced = call.variant ? call.variant : "";
  // ATTUNE_TUNE=0: no tuned choice is trusted, the default runs.
  std::string tuned = forced.empty() && !tuningDisabled() ? tunedName(dev, c) : "";
  int i = selectVariant(m_, dev.major, dev.minor, forced, tuned, fn);
  // Untuned decoding: every query head of a CTA's kv head in one CTA reads K/V once
  // instead of once per query head (docs/bundle-and-abi.md, "Choosing a variant").
  bool isTuned = !tuned.empty() && m_.findVariant(tuned) == i;
  return forced.empty() && !isTuned ? decodeVariant(m_, i, c) : i;
}

namespace {
void checkDevice(const attn_call &call, const char *fn) {
  if (call.device != ATTN_DEVICE_CUDA && call.device != ATTN_DEVICE_HOST)
    throw ArgError(std::string(fn) + ": device is " + std::to_string(call.device) +
                   "; expected ATTN_DEVICE_CUDA (0) or ATTN_DEVICE_HOST (1)");
  if (call.device == ATTN_DEVICE_HOST && call.num_threads < 0)
    throw ArgError(std::string(fn) + ": num_threads is " + std::to_string(call.num_threads) +
                   "; expected 0 (the default) or a positive count");
}
} // namespace

CheckedCall Bundle::check(const attn_call &call, const char *fn) const {
  checkDevice(call, fn);
  CheckOptions options;
  if (call.device == ATTN_DEVICE_HOST) {
    options.host = true;
    int v = selectHostVariant(m_, call.variant, fn);
    options.lseAvailable = m_.hostVariants[size_t(v)].forward.lse;
    return checkCall(m_, call, fn, options);
  }
  // A GPU call's sequence arguments (cu_seqlens, page_table, lengths) are device
  // memory: the host checks copies of what rt::sequenceReads says it reads (the
  // lengths, B or B + 1 integers per array, when the grid needs them; the page table
  // when validating), downloaded synchronously before anything is launched.
  const attn_tensor *given[] = {&call.cu_seqlens_q, &call.cu_seqlens_kv, &call.page_table,
                                &call.kv_lens, &call.q_lens};
  bool any = false;
  for (const attn_tensor *t : given)
    any |= t->data != nullptr;
  SequenceReads reads = sequenceReads(m_.qStorage, m_.kvStorage, true, call.validate != 0,
                                      call.max_seqlen_q, call.max_seqlen_kv);
  if (!any || !device_ || device_->hostAddressable() || (!reads.lengths && !reads.pageIds))
    return checkCall(m_, call, fn, options);
  std::vector<std::vector<char>> copies(5);
  attn_tensor views[5];
  for (int i = 0; i < 5; ++i) {
    views[i] = *given[i];
    if (!given[i]->data || given[i]->dtype != ATTN_I32 || !(i == 2 ? reads.pageIds : reads.lengths))
      continue; // the checker names what is wrong with it, or does not read it
    uint64_t bytes = 0;
    if (!checkedSpanBytes(*given[i], bytes) || bytes > (uint64_t(1) << 30))
      continue;
    copies[size_t(i)].resize(std::max<uint64_t>(bytes, 4));
    if (bytes)
      device_->download(copies[size_t(i)].data(), reinterpret_cast<uintptr_t>(given[i]->data),
                        bytes);
    views[i].data = copies[size_t(i)].data();
  }
  options.sequenceCopies = views;
  return checkCall(m_, call, fn, options);
}

void Bundle::launchHost(const attn_call &call) {
  const char *fn = "attn_launch";
  CheckedCall c = check(call, fn);
  if (c.empty)
    return;
  int v = selectHostVariant(m_, call.variant, fn);
  runHostForward(m_.hostVariants[size_t(v)], host_.get(m_, dir_, v, fn), c, call.num_threads);
}

void Bundle::backward(const attn_backward_call &call) {
  const char *fn = "attn_backward";
  checkDevice(call.fwd, fn);
  if (call.fwd.device != ATTN_DEVICE_HOST)
    throw ArgError(std::string(fn) + ": GPU backward kernels are not built yet; run the "
                   "backward on the host (fwd.device = ATTN_DEVICE_HOST, a bundle with "
                   "--arch host)");
  int v = selectHostVariant(m_, call.fwd.variant, fn);
  const HostVariant &host = m_.hostVariants[size_t(v)];
  CheckedBackward b = checkBackward(m_, call, fn);
  if (b.fwd.perSequence)
    throw ArgError(std::string(fn) + ": the backward over ragged or paged storage or "
                   "per-sequence lengths is not built yet (padded batches only)");
  if (host.backward && host.backward->lse && !b.fwd.lse.data)
    throw ArgError(std::string(fn) + ": lse: the softmax backward needs the forward's lse "
                   "(fwd.lse, [B, Hq, Sq] f32)");
  runHostBackward(host, host_.get(m_, dir_, v, fn), b, call.fwd.num_threads, fn);
}

void Bundle::launch(const attn_call &call) {
  const char *fn = "attn_launch";
  if (call.device == ATTN_DEVICE_HOST)
    return launchHost(call);
  CheckedCall c = check(call, fn);
  if (c.empty)
    return;
  const DeviceInfo &dev = device_->open(c);
  device_->checkMemory(m_, c, dev, fn);
  launchVariant(choose(call, c, dev, fn), dev, c, call.stream, fn, call.num_splits);
}

std::string Bundle::selected(const attn_call &call) {
  const char *fn = "attn_select_variant";
  CheckedCall c = check(call, fn);
  if (call.device == ATTN_DEVICE_HOST)
    return m_.hostVariants[size_t(selectHostVariant(m_, call.variant, fn))].name;
  const DeviceInfo &dev = device_->open(c);
  return m_.variants[size_t(choose(call, c, dev, fn))].name;
}

std::optional<std::string> Bundle::tunedChoice(const attn_call &call) {
  if (call.device == ATTN_DEVICE_HOST)
    throw ArgError(std::string("attn_tuned_variant") + ": host variants are not tuned (run one with `variant`)");
  CheckedCall c = check(call, "attn_tuned_variant");
  const DeviceInfo &dev = device_->open(c);
  std::string name = tunedName(dev, c);
  if (name.empty())
    return std::nullopt;
  return name;
}

std::string Bundle::tuningKeyOf(const attn_call &call) {
  if (call.device == ATTN_DEVICE_HOST)
    throw ArgError(std::string("attn_tune") + ": host variants are not tuned (run one with `variant`)");
  CheckedCall c = check(call, "attn_tune");
  return key(device_->open(c), c);
}

//===----------------------------------------------------------------------===//
// Tuning
//===----------------------------------------------------------------------===//

namespace {

/// Element `off` (in elements) of a buffer of dtype `dtype`.
double elementAt(const uint8_t *base, int32_t dtype, uint64_t off) {
  if (dtype == ATTN_F32) {
    float f;
    std::memcpy(&f, base + off * 4, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, base + off * 2, 2);
  return dtype == ATTN_BF16 ? half::fromBf16(h) : half::fromF16(h);
}

/// Calls `each(index, offset)` for every element of `t` (offset in elements).
void forEachElement(const attn_tensor &t,
                    const std::function<bool(const int64_t *, uint64_t)> &each) {
  for (int d = 0; d < t.ndim; ++d)
    if (t.shape[d] <= 0)
      return;
  int64_t idx[8] = {0};
  while (true) {
    uint64_t off = 0;
    for (int d = 0; d < t.ndim; ++d)
      off += uint64_t(idx[d]) * uint64_t(t.strides[d]);
    if (!each(idx, off))
      return;
    int d = t.ndim - 1;
    for (; d >= 0; --d) {
      if (++idx[d] < t.shape[d])
        break;
      idx[d] = 0;
    }
    if (d < 0)
      return;
  }
}

std::string number(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", x);
  return buf;
}

} // namespace

std::string compareOutput(const char *name, const attn_tensor &t, const uint8_t *ref,
                          const uint8_t *got) {
  double scale = 0;
  forEachElement(t, [&](const int64_t *, uint64_t off) {
    double r = elementAt(ref, t.dtype, off);
    if (std::isfinite(r))
      scale = std::max(scale, std::fabs(r));
    return true;
  });
  std::string why;
  forEachElement(t, [&](const int64_t *idx, uint64_t off) {
    double r = elementAt(ref, t.dtype, off), g = elementAt(got, t.dtype, off);
    double tol = t.dtype == ATTN_F32 ? kTuneToleranceF32 * (std::fabs(r) + 1)
                                     : kTuneTolerance * (std::fabs(r) + scale);
    bool ok;
    if (std::isnan(r) || std::isnan(g))
      ok = false; // NaN never passes
    else if (std::isinf(r) || std::isinf(g))
      ok = r == g;
    else
      ok = std::fabs(g - r) <= tol;
    if (ok)
      return true;
    std::string where = std::string(name) + shapeText(idx, t.ndim);
    why = where + " = " + number(g) + " where the default variant gives " + number(r) +
          (std::isnan(r) ? " (NaN never passes)"
                         : std::isnan(g) ? " (NaN never passes)"
                                         : " (tolerance " + number(tol) + ")");
    return false;
  });
  return why;
}

const char *tuneStatusName(TuneResult::Status s) {
  switch (s) {
  case TuneResult::Timed:
    return "timed";
  case TuneResult::Rejected:
    return "rejected";
  case TuneResult::Disagrees:
    return "disagrees";
  case TuneResult::Faulted:
    return "faulted";
  }
  return "?";
}

int TuneReport::best() const {
  int best = -1;
  for (size_t i = 0; i < results.size(); ++i)
    if (results[i].status == TuneResult::Timed &&
        (best < 0 || results[i].ms < results[size_t(best)].ms))
      best = int(i);
  return best;
}

TuningEntry TuneReport::entry() const {
  TuningEntry e;
  for (const TuneResult &r : results) {
    if (r.status == TuneResult::Timed)
      e.candidates.push_back({r.variant, r.ms});
    else
      e.rejected.push_back({r.variant, std::string(tuneStatusName(r.status)) + ": " + r.why});
  }
  int b = best();
  if (b >= 0) {
    e.variant = results[size_t(b)].variant;
    e.timeMs = results[size_t(b)].ms;
  }
  e.when = isoTimeNow();
  return e;
}

std::string tuneTable(const TuneReport &report, const Manifest &m) {
  // The variant's name says its configuration (sm80_bm64_bn32_w4: block_m 64,
  // block_n 32, 4 warps).
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "attune: %-30s %-7s %10s\n", "variant", "arch", "median ms");
  out += line;
  int best = report.best();
  for (size_t i = 0; i < report.results.size(); ++i) {
    const TuneResult &r = report.results[i];
    int vi = m.findVariant(r.variant);
    std::string arch = vi >= 0 ? m.variants[size_t(vi)].arch : "?";
    std::string tail;
    if (r.status == TuneResult::Timed) {
      std::snprintf(line, sizeof line, "%10.4f", r.ms);
      tail = line;
      if (r.variant == report.defaultVariant)
        tail += "  (default: the reference)";
      if (int(i) == best)
        tail += "  <- fastest";
    } else {
      tail = std::string("   dropped, ") + tuneStatusName(r.status) + ": " + r.why;
    }
    std::snprintf(line, sizeof line, "attune: %-30s %-7s ", r.variant.c_str(), arch.c_str());
    out += line + tail + "\n";
  }
  return out;
}

TuneReport Bundle::measure(const attn_call &call, int repeats, bool verbose,
                           const std::vector<std::string> &only, TuneObserver *observer) {
  if (call.device == ATTN_DEVICE_HOST)
    throw ArgError(std::string("attn_tune") + ": host variants are not tuned (run one with `variant`)");
  const char *fn = "attn_tune";
  if (repeats <= 0)
    repeats = 20;
  CheckedCall c = check(call, fn);
  TuneReport report;
  if (c.empty)
    return report;
  Device &d = *device_;
  const DeviceInfo &dev = d.open(c);
  d.checkMemory(m_, c, dev, fn);
  void *stream = call.stream;
  std::vector<int> compatible = compatibleVariants(m_, dev.major, dev.minor);
  // Throws the explanation when nothing runs here.
  int reference = selectVariant(m_, dev.major, dev.minor, "", "", fn);
  const Variant &refVariant = m_.variants[size_t(reference)];
  report.key = key(dev, c);
  report.defaultVariant = refVariant.name;
  report.deviceName = dev.name;
  for (const std::string &name : only)
    if (m_.findVariant(name) < 0)
      throw ArgError(std::string(fn) + ": unknown variant '" + name + "'");
  // The default first: it is the reference.
  std::vector<int> candidates{reference};
  for (int i : compatible)
    if (i != reference)
      candidates.push_back(i);
  auto wanted = [&](int i) {
    return only.empty() ||
           std::find(only.begin(), only.end(), m_.variants[size_t(i)].name) != only.end();
  };

  // Rotating copies of q, k and v, so that each timed run reads inputs that the
  // previous runs did not leave in L2: enough copies to cycle through ~3x the L2 size,
  // at most 8 sets, and at most min(1 GiB, a quarter of free memory) extra.
  uint64_t setBytes = spanBytes(c.q) + spanBytes(c.k) + spanBytes(c.v);
  uint64_t target = 3 * uint64_t(dev.l2Bytes);
  int sets = setBytes == 0 ? 1 : int(std::min<uint64_t>(8, (target + setBytes - 1) / setBytes));
  sets = std::max(sets, 1);
  if (sets > 1) {
    uint64_t cap = std::min<uint64_t>(uint64_t(1) << 30, d.freeMemory() / 4);
    while (sets > 1 && uint64_t(sets - 1) * setBytes > cap)
      --sets;
  }
  struct Buffers {
    Device &d;
    std::vector<uint64_t> ptrs;
    ~Buffers() {
      for (uint64_t p : ptrs)
        d.free(p);
    }
  } buffers{d, {}};
  std::vector<CheckedCall> rotation(1, c);
  for (int s = 1; s < sets; ++s) {
    CheckedCall copy = c;
    for (attn_tensor *t : {&copy.q, &copy.k, &copy.v}) {
      uint64_t bytes = spanBytes(*t);
      if (!bytes)
        continue;
      uint64_t p = d.alloc(bytes);
      buffers.ptrs.push_back(p);
      d.copy(p, reinterpret_cast<uintptr_t>(t->data), bytes);
      t->data = reinterpret_cast<void *>(uintptr_t(p));
    }
    rotation.push_back(copy);
  }
  d.synchronizeAll();

  if (verbose) {
    std::fprintf(stderr,
                 "attune: tuning %s (spec %.12s) on %s (compute capability %d.%d, %d SMs), "
                 "key \"%s\"\n",
                 m_.specName.c_str(), m_.specHash.c_str(), dev.name.c_str(), dev.major, dev.minor,
                 dev.smCount, report.key.c_str());
    std::fprintf(stderr,
                 "attune:   %zu candidate variants, %d warm-up + %d timed runs each, %d rotating "
                 "set(s) of q/k/v (%s extra); each output is compared with the default "
                 "variant %s's\n",
                 candidates.size(), d.warmupRuns(), repeats, sets,
                 mib(double(sets - 1) * double(setBytes)).c_str(), refVariant.name.c_str());
  }

  // The outputs' bytes after a run: o, then lse when the call has it.
  uint64_t oBytes = spanBytes(c.o), lseBytes = c.lse.data ? spanBytes(c.lse) : 0;
  auto outputs = [&]() {
    std::vector<uint8_t> bytes(oBytes + lseBytes);
    if (oBytes)
      d.download(bytes.data(), reinterpret_cast<uintptr_t>(c.o.data), oBytes);
    if (lseBytes)
      d.download(bytes.data() + oBytes, reinterpret_cast<uintptr_t>(c.lse.data), lseBytes);
    return bytes;
  };
  std::vector<uint8_t> refOut;

  auto stripPrefix = [&](std::string why, const Variant &v) {
    if (why.compare(0, 11, "attn_tune: ") == 0)
      why = why.substr(11);
    std::string prefix = "variant " + v.name + ": ";
    if (why.compare(0, prefix.size(), prefix) == 0)
      why = why.substr(prefix.size());
    return why;
  };

  for (size_t n = 0; n < candidates.size(); ++n) {
    int i = candidates[n];
    const Variant &v = m_.variants[size_t(i)];
    bool isRef = i == reference;
    if (!isRef && !wanted(i))
      continue;
    if (observer)
      observer->started(v.name);
    if (verbose)
      std::fprintf(stderr, "attune:   [%zu/%zu] %-28s ", n + 1, candidates.size(), v.name.c_str());
    TuneResult result;
    result.variant = v.name;
    auto finish = [&](TuneResult::Status status, const std::string &why) {
      result.status = status;
      result.why = why;
      if (verbose)
        std::fprintf(stderr, "%s: %s\n", tuneStatusName(status), why.c_str());
      if (observer)
        observer->finished(result);
      report.results.push_back(result);
    };
    // The first warm-up run reads the caller's q, k and v and writes the outputs that
    // are compared.
    std::string why;
    try {
      for (int r = 0; r < d.warmupRuns(); ++r)
        launchVariant(i, dev, rotation[size_t(r) % rotation.size()], stream, fn, call.num_splits);
    } catch (const std::exception &e) {
      why = stripPrefix(e.what(), v);
    }
    if (!why.empty()) {
      if (isRef)
        throw CudaError(std::string(fn) + ": the default variant " + v.name + " cannot run on " +
                        dev.name + ": " + why +
                        " (it is the reference the candidates are checked against)");
      // Loading, resource and launch-configuration failures leave the context usable.
      finish(TuneResult::Rejected, why);
      continue;
    }
    std::string fault = d.synchronize(stream);
    if (!fault.empty()) {
      if (isRef || !d.survivesFaults())
        throw CudaError(std::string(fn) + ": " + (isRef ? "the default variant " : "variant ") +
                        v.name + " failed while running: " + stripPrefix(fault, v) +
                        (d.survivesFaults() ? "" : " (the context is no longer usable)"));
      finish(TuneResult::Faulted, stripPrefix(fault, v));
      continue;
    }
    std::vector<uint8_t> out = outputs();
    if (isRef) {
      refOut = std::move(out);
    } else {
      std::string differs = compareOutput("o", c.o, refOut.data(), out.data());
      if (differs.empty() && lseBytes)
        differs = compareOutput("lse", c.lse, refOut.data() + oBytes, out.data() + oBytes);
      if (!differs.empty()) {
        finish(TuneResult::Disagrees, differs);
        continue;
      }
    }
    if (isRef && !wanted(i))
      continue; // the reference only
    std::vector<double> ms;
    try {
      ms = d.time(stream, repeats, [&](int rep) {
        launchVariant(i, dev, rotation[size_t(rep + d.warmupRuns()) % rotation.size()], stream,
                      fn, call.num_splits);
      });
    } catch (const std::exception &e) {
      if (!d.survivesFaults())
        throw CudaError(std::string(fn) + ": variant " + v.name + " " + stripPrefix(e.what(), v));
      finish(TuneResult::Faulted, stripPrefix(e.what(), v));
      continue;
    }
    result.ms = median(ms);
    if (verbose)
      std::fprintf(stderr, "%.4f ms\n", result.ms);
    if (observer)
      observer->finished(result);
    report.results.push_back(result);
  }
  return report;
}

void Bundle::storeTuned(const std::string &key, const TuningEntry &entry, bool verbose) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    tuned_[key] = entry.variant;
  }
  try {
    TuningDb db = TuningDb::atDefaultLocation();
    db.store(key, entry);
    if (verbose)
      std::fprintf(stderr, "attune: stored %s for \"%s\" in %s\n", entry.variant.c_str(),
                   key.c_str(), db.path().c_str());
  } catch (const CacheError &e) {
    // The choice is still used by this process; only persistence failed.
    std::fprintf(stderr, "attune: warning: could not store the tuning result: %s\n", e.what());
  }
}

void Bundle::tune(const attn_call &call, int repeats, bool verbose) {
  const char *fn = "attn_tune";
  CheckedCall c = check(call, fn);
  if (c.empty)
    return;
  TuneReport report = measure(call, repeats, verbose);
  int best = report.best();
  if (best < 0) {
    std::string why;
    for (const TuneResult &r : report.results)
      why += "\n  " + r.variant + ": " + r.why;
    throw CudaError(std::string(fn) + ": no variant of " + m_.specName + " could run on " +
                    report.deviceName + ":" + why);
  }
  if (verbose)
    std::fputs(tuneTable(report, m_).c_str(), stderr);
  TuningEntry entry = report.entry();
  storeTuned(report.key, entry, verbose);
  // Leave the winner's result in the caller's outputs.
  const DeviceInfo &dev = device_->open(c);
  launchVariant(m_.findVariant(entry.variant), dev, c, call.stream, fn, call.num_splits);
}

} // namespace attune::rt
