//===- CmdTune.cpp - attnc tune: the runtime's tuner in a child process ---===//
//
//   attnc tune SPEC --seq-q N [--seq-kv N] [--batch N] [--backend gpu|gpu-sim]
//              [--bundle DIR] [--arch A] [--configs LIST] [--repeats N] [--seed N]
//              [--q-offset N] [--kv-offset N] [--input NAME=FILE.npy] [--force]
//
// See Tune.h for the protocol between this process and its child.
//
//===----------------------------------------------------------------------===//
#include "tools/attnc/Driver.h"
#include "tools/attnc/Tune.h"

#include "codegen/bundle/SimDevice.h"

#include "TuningDb.h"

#include "llvm/Support/raw_ostream.h"
#include <nlohmann/json.hpp>

#include <cstring>
#include <random>
#include <sys/wait.h>
#include <unistd.h>

namespace attune::attnc {

namespace {

/// Tabs and newlines would break the line protocol.
std::string oneLine(std::string s) {
  for (char &c : s)
    if (c == '\t' || c == '\n' || c == '\r')
      c = ' ';
  return s;
}

std::vector<std::string> split(const std::string &s, char sep) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at <= s.size()) {
    size_t next = s.find(sep, at);
    if (next == std::string::npos)
      next = s.size();
    out.push_back(s.substr(at, next - at));
    at = next + 1;
  }
  return out;
}

std::string join(const std::vector<std::string> &items) {
  std::string out;
  for (const std::string &s : items)
    out += (out.empty() ? "" : ",") + s;
  return out;
}

/// What the children reported, merged.
struct Session {
  std::string bundleDir, key, defaultVariant, device, tuned, error;
  std::vector<std::string> candidates;
  std::vector<rt::TuneResult> results;
  bool haveCandidates = false;

  bool judged(const std::string &name) const {
    for (const rt::TuneResult &r : results)
      if (r.variant == name)
        return true;
    return false;
  }
  std::vector<std::string> remaining() const {
    std::vector<std::string> out;
    for (const std::string &c : candidates)
      if (!judged(c))
        out.push_back(c);
    return out;
  }
};

/// How a child ended, in words.
std::string describeStatus(int status) {
  if (WIFSIGNALED(status))
    return "died of signal " + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  if (WIFEXITED(status))
    return "exited with status " + std::to_string(WEXITSTATUS(status));
  return "ended abnormally";
}

/// Runs `body` in a child with the pipe as its channel; merges its lines into `s`.
/// Returns whether the child reported "end".
template <typename Body>
bool runChild(Session &s, const std::vector<std::string> &only, Body body) {
  int fds[2];
  if (pipe(fds) != 0)
    throw Failure{std::string("cannot create a pipe for the tuning process: ") +
                  std::strerror(errno)};
  llvm::outs().flush();
  llvm::errs().flush();
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid < 0)
    throw Failure{std::string("cannot start the tuning process: ") + std::strerror(errno)};
  if (pid == 0) {
    close(fds[0]);
    FILE *out = fdopen(fds[1], "w");
    TuneChannel channel(out);
    int code = 0;
    try {
      body(only, channel);
      channel.line("end", "");
    } catch (const Failure &f) {
      channel.line("error", f.message);
      code = f.code;
    } catch (const std::exception &e) {
      channel.line("error", e.what());
      code = 1;
    }
    std::fflush(out);
    llvm::errs().flush();
    _exit(code);
  }
  close(fds[1]);
  FILE *in = fdopen(fds[0], "r");
  std::string started;
  bool ended = false;
  char *buf = nullptr;
  size_t cap = 0;
  ssize_t n;
  while ((n = getline(&buf, &cap, in)) > 0) {
    std::string line(buf, size_t(n));
    if (!line.empty() && line.back() == '\n')
      line.pop_back();
    size_t tab = line.find('\t');
    std::string tag = line.substr(0, tab), text = tab == std::string::npos ? "" : line.substr(tab + 1);
    if (tag == "bundle")
      s.bundleDir = text;
    else if (tag == "key")
      s.key = text;
    else if (tag == "default")
      s.defaultVariant = text;
    else if (tag == "device")
      s.device = text;
    else if (tag == "candidates" && !s.haveCandidates) {
      s.candidates = split(text, ',');
      s.haveCandidates = true;
    } else if (tag == "tuned")
      s.tuned = text;
    else if (tag == "error")
      s.error = text;
    else if (tag == "start")
      started = text;
    else if (tag == "result") {
      std::vector<std::string> f = split(text, '\t');
      if (f.size() >= 4 && !s.judged(f[0])) {
        rt::TuneResult r;
        r.variant = f[0];
        for (auto st : {rt::TuneResult::Timed, rt::TuneResult::Rejected,
                        rt::TuneResult::Disagrees, rt::TuneResult::Faulted})
          if (f[1] == rt::tuneStatusName(st))
            r.status = st;
        r.ms = std::strtod(f[2].c_str(), nullptr);
        r.why = f[3];
        s.results.push_back(r);
      }
      started.clear();
    } else if (tag == "end")
      ended = true;
  }
  std::free(buf);
  std::fclose(in);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (ended && WIFEXITED(status) && WEXITSTATUS(status) == 0)
    return true;
  std::string how = describeStatus(status);
  // An error before any variant ran (no driver, a bad bundle) or while the default ran
  // ends tuning; an error or death while a candidate ran is that candidate's fault
  // (on CUDA the context is then unusable: the rest need a new process).
  if (started.empty())
    throw Failure{!s.error.empty() ? s.error
                                   : "the tuning process " + how + " before it ran a variant"};
  if (started == s.defaultVariant)
    throw Failure{!s.error.empty()
                      ? s.error
                      : "the default variant " + started + " faulted (its tuning process " + how +
                            "): it is the reference the candidates are checked against, so "
                            "nothing can be tuned"};
  rt::TuneResult r;
  r.variant = started;
  r.status = rt::TuneResult::Faulted;
  r.why = "its tuning process " + how;
  if (!s.error.empty()) {
    std::string prefix = "attn_tune: variant " + started + " ";
    r.why = s.error.compare(0, prefix.size(), prefix) == 0 ? s.error.substr(prefix.size())
                                                            : s.error;
    s.error.clear();
  }
  s.results.push_back(r);
  llvm::errs() << "attnc tune: variant " << started << " faulted: " << r.why
               << "; continuing with the others in a new process\n";
  return false;
}

/// Random q/k/v of the manifest's sizes (normal, rounded to the dtype by SimCall).
AttentionArgs randomArgs(const rt::Manifest &m, const TuneRequest &req) {
  std::mt19937_64 rng(req.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto make = [&](std::vector<int64_t> shape) {
    HostTensor t = HostTensor::zeros(std::move(shape));
    for (double &x : t.data)
      x = normal(rng);
    return t;
  };
  AttentionArgs args;
  args.q = make({req.batch, m.headsQ, req.seqQ, m.headDim});
  args.k = make({req.batch, m.headsKv, req.seqKv, m.headDim});
  args.v = make({req.batch, m.headsKv, req.seqKv, m.headDimV});
  args.inputs = req.inputs;
  args.qOffset = req.qOffset;
  args.kvOffset = req.kvOffset;
  return args;
}

} // namespace

void TuneChannel::line(const std::string &tag, const std::string &text) {
  std::fprintf(out_, "%s\t%s\n", tag.c_str(), text.c_str());
  std::fflush(out_);
}

void TuneChannel::finished(const rt::TuneResult &r) {
  char ms[32];
  std::snprintf(ms, sizeof ms, "%.6f", r.ms);
  line("result", oneLine(r.variant) + "\t" + rt::tuneStatusName(r.status) + "\t" + ms + "\t" +
                     oneLine(r.why));
}

void tuneChildMeasure(rt::Bundle &bundle, const attn_call &call, const TuneRequest &req,
                      const std::vector<std::string> &only, TuneChannel &channel) {
  const rt::Manifest &m = bundle.manifest();
  rt::CheckedCall c = bundle.check(call, "attn_tune");
  const rt::cu::DeviceInfo &dev = bundle.device().open(c);
  channel.line("device", dev.name);
  if (!req.force)
    if (auto tuned = bundle.tunedChoice(call)) {
      channel.line("tuned", *tuned);
      return;
    }
  int reference = rt::selectVariant(m, dev.major, dev.minor, "", "", "attn_tune");
  std::vector<std::string> candidates{m.variants[size_t(reference)].name};
  for (int i : rt::compatibleVariants(m, dev.major, dev.minor))
    if (i != reference)
      candidates.push_back(m.variants[size_t(i)].name);
  channel.line("key", bundle.tuningKeyOf(call));
  channel.line("default", candidates.front());
  channel.line("candidates", join(candidates));
  bundle.measure(call, req.repeats, /*verbose=*/false, only, &channel);
}

int cmdTune(int argc, char **argv) {
  Options opts(argc, argv, 2,
               {"seq-q", "seq-kv", "batch", "bundle", "arch", "configs", "repeats", "q-offset",
                "kv-offset", "seed", "backend"},
               {"force"}, {"input"});
  if (opts.positional.size() != 1)
    throw Failure{"tune takes one SPEC", 2};
  std::string backend = opts.get("backend").value_or("gpu");
  if (backend != "gpu" && backend != "gpu-sim")
    throw Failure{"tune: unknown backend '" + backend + "' (available: gpu, gpu-sim)", 2};
  const int64_t kMaxSeq = int64_t(1) << 24;
  TuneRequest req;
  std::optional<int64_t> seqQ = opts.getInt("seq-q", 1, kMaxSeq);
  if (!seqQ)
    throw Failure{"tune needs --seq-q N (and optionally --seq-kv N, --batch N)", 2};
  req.seqQ = *seqQ;
  req.seqKv = opts.getInt("seq-kv", 1, kMaxSeq).value_or(*seqQ);
  req.batch = opts.getInt("batch", 1, 65535).value_or(1);
  req.repeats = int(opts.getInt("repeats", 1, 1000).value_or(20));
  req.seed = uint64_t(opts.getInt("seed", 0, INT64_MAX).value_or(0));
  req.inputs = readInputs(opts);
  const int64_t kLimit = int64_t(1) << 40;
  req.qOffset = opts.getInt("q-offset", -kLimit, kLimit);
  req.kvOffset = opts.getInt("kv-offset", -kLimit, kLimit);
  req.force = opts.flag("force");
  const std::string specPath = opts.positional[0];

  Session session;
  rt::Manifest manifest;
  // gpu-sim: the kernels are built here, before any fork (MLIR only, no driver), and
  // each child inherits them.
  mlir::MLIRContext context;
  context.disableMultithreading(); // no thread pool across fork()
  std::unique_ptr<rt::Bundle> simBundle;
  if (backend == "gpu-sim") {
    if (opts.get("bundle"))
      throw Failure{"--bundle is for --backend gpu (gpu-sim builds its kernels from SPEC)", 2};
    LoadedSpec spec = loadSpec(context, specPath);
    nlohmann::json json;
    if (spec.fromJson) {
      SpecError err;
      if (!loadSpecFile(specPath, json, err))
        throw Failure{err.message};
    }
    CompileRequest creq = CompileRequest::fromOptions(opts, specPath, "sm_80");
    std::string error;
    simBundle = buildSimBundle(*spec.module, spec.fromJson ? &json : nullptr, spec.info,
                               bundleConfigs(creq, spec.info), req.inputs, error);
    if (!simBundle)
      throw Failure{error};
    manifest = simBundle->manifest();
  }
  auto body = [&](const std::vector<std::string> &only, TuneChannel &channel) {
    if (simBundle) {
      SimCall sim(simBundle->manifest(), randomArgs(simBundle->manifest(), req),
                  simBundle->manifest().hasLse);
      tuneChildMeasure(*simBundle, sim.call(), req, only, channel);
    } else {
      tuneChildGpu(opts, specPath, req, only, channel);
    }
  };
  std::vector<std::string> only;
  while (!runChild(session, only, body)) {
    only = session.remaining();
    if (only.empty())
      break;
  }
  if (!session.tuned.empty()) {
    llvm::outs() << "already tuned for " << session.device << ": " << session.tuned
                 << " (--force tunes again)\n";
    return 0;
  }
  if (!simBundle)
    manifest = rt::loadManifest(session.bundleDir);

  // The table in the order run, the default first.
  rt::TuneReport report;
  report.key = session.key;
  report.defaultVariant = session.defaultVariant;
  report.deviceName = session.device;
  for (const std::string &name : session.candidates)
    for (const rt::TuneResult &r : session.results)
      if (r.variant == name)
        report.results.push_back(r);
  llvm::errs() << "attnc tune: " << manifest.specName << " on " << session.device << ", key \""
               << session.key << "\"; every candidate's output compared with the default variant "
               << session.defaultVariant << "'s\n";
  llvm::errs() << rt::tuneTable(report, manifest);
  int best = report.best();
  if (best < 0)
    throw Failure{"no variant could be timed on " + session.device + " (see the table above)"};
  rt::TuningEntry entry = report.entry();
  try {
    rt::TuningDb db = rt::TuningDb::atDefaultLocation();
    db.store(session.key, entry);
    llvm::errs() << "attnc tune: stored " << entry.variant << " for \"" << session.key << "\" in "
                 << db.path() << "\n";
  } catch (const rt::CacheError &e) {
    throw Failure{std::string("could not store the tuning result: ") + e.what()};
  }
  llvm::outs() << "tuned for " << session.device << ": " << entry.variant << "\n";
  return 0;
}

} // namespace attune::attnc
