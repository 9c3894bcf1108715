//===- PtxLint.cpp - wgmma register discipline checked in the PTX ---------===//
#include "codegen/nvidia/PtxLint.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <map>
#include <set>

namespace attune {

namespace {

struct Stmt {
  int line = 0;
  std::string text;  // the instruction without its guard, or the label's name
  bool label = false;
  bool guarded = false; // @%p / @!%p
  std::string opcode;   // "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16", "bra", ...
  std::string operands;
};

struct Function {
  std::string name;
  std::vector<Stmt> body;
};

bool identChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$'; }

/// Functions and their statements: comments stripped, labels split off, scope braces
/// dropped, directives (.reg, .local, ...) left out.
std::vector<Function> parseFunctions(const std::string &ptx) {
  std::vector<Function> out;
  std::string pending; // text of the statement being read
  int pendingLine = 0, line = 1, depth = 0;
  Function *fn = nullptr;
  auto flush = [&] {
    size_t b = pending.find_first_not_of(" \t\r\n");
    std::string t = b == std::string::npos ? "" : pending.substr(b);
    pending.clear();
    if (!fn || t.empty())
      return;
    while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back())))
      t.pop_back();
    Stmt s;
    s.line = pendingLine;
    if (t[0] == '@') {
      s.guarded = true;
      size_t sp = t.find_first_of(" \t");
      t = sp == std::string::npos ? "" : t.substr(t.find_first_not_of(" \t", sp));
    }
    if (t.empty() || t[0] == '.')
      return;
    size_t sp = t.find_first_of(" \t\r\n");
    s.opcode = t.substr(0, sp);
    s.operands = sp == std::string::npos ? "" : t.substr(sp);
    s.text = t;
    fn->body.push_back(s);
  };
  for (size_t i = 0; i < ptx.size(); ++i) {
    char c = ptx[i];
    if (c == '/' && i + 1 < ptx.size() && ptx[i + 1] == '/') {
      while (i < ptx.size() && ptx[i] != '\n')
        ++i;
      --i;
      continue;
    }
    if (c == '\n')
      ++line;
    bool empty = pending.find_first_not_of(" \t\r\n") == std::string::npos;
    if (empty && !std::isspace(static_cast<unsigned char>(c)))
      pendingLine = line;
    if (depth == 0) {
      if (c == ';') {
        pending.clear();
      } else if (c == '{') {
        // A function body: the header names it after .entry / .func (and after a
        // parenthesised return list).
        size_t entry = pending.rfind(".entry"), func = pending.rfind(".func");
        if (entry == std::string::npos && func == std::string::npos) {
          pending.clear();
          continue;
        }
        size_t at = entry == std::string::npos ? func
                    : func == std::string::npos ? entry
                                                : std::max(entry, func);
        std::string header = pending.substr(at);
        size_t p = header.find_first_of(" \t\n");
        while (p < header.size() && (std::isspace(static_cast<unsigned char>(header[p])) || header[p] == '(')) {
          if (header[p] == '(') { // return parameters
            size_t close = header.find(')', p);
            p = close == std::string::npos ? header.size() : close + 1;
          } else {
            ++p;
          }
        }
        size_t e = p;
        while (e < header.size() && identChar(header[e]))
          ++e;
        out.push_back({header.substr(p, e - p), {}});
        fn = &out.back();
        depth = 1;
        pending.clear();
      } else {
        pending += c;
      }
      continue;
    }
    if ((c == '{' || c == '}') && empty) {
      depth += c == '{' ? 1 : -1;
      if (depth == 0)
        fn = nullptr;
      continue;
    }
    if (c == ';') {
      flush();
      continue;
    }
    if (c == ':' && !empty && (i + 1 >= ptx.size() || ptx[i + 1] != ':')) {
      // A label when all that precedes is one identifier.
      size_t b = pending.find_first_not_of(" \t\r\n");
      std::string t = pending.substr(b);
      if (!t.empty() && std::all_of(t.begin(), t.end(), identChar) &&
          (i == 0 || ptx[i - 1] != ':')) {
        Stmt s;
        s.line = pendingLine;
        s.label = true;
        s.text = t;
        fn->body.push_back(s);
        pending.clear();
        continue;
      }
    }
    pending += c;
  }
  return out;
}

/// The registers an operand text names (%r12, %rd3, %p1; not %tid.x and the like).
std::vector<std::string> registersIn(const std::string &text) {
  std::vector<std::string> regs;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%')
      continue;
    size_t e = i + 1;
    while (e < text.size() && identChar(text[e]))
      ++e;
    if (e > i + 1 && (e >= text.size() || text[e] != '.'))
      regs.push_back(text.substr(i, e - i));
    i = e - 1;
  }
  return regs;
}

struct Wgmma {
  std::vector<std::string> d, a; // destination and A registers (a empty: descriptor A)
};

/// D: the first {...}; A: the second operand when it is a {...} list.
Wgmma parseWgmma(const std::string &operands) {
  Wgmma w;
  size_t open = operands.find('{'), close = operands.find('}');
  if (open == std::string::npos || close == std::string::npos)
    return w;
  w.d = registersIn(operands.substr(open, close - open));
  size_t comma = operands.find(',', close);
  size_t next = comma == std::string::npos ? std::string::npos : operands.find_first_not_of(" \t\r\n", comma + 1);
  if (next != std::string::npos && operands[next] == '{') {
    size_t end = operands.find('}', next);
    w.a = registersIn(operands.substr(next, end - next));
  }
  return w;
}

bool startsWith(const std::string &s, const char *p) { return s.rfind(p, 0) == 0; }

constexpr int kCommitCap = 8;

struct InFlight {
  int commits = 0; // commit_groups since the issue (0: its group is still open)
  int line = 0;    // the wgmma's
  bool accumulator = false;
};

struct State {
  bool reached = false;
  bool unfenced = true;             // some path has no wgmma.fence since the entry
  std::map<std::string, int> dirty; // accessed since the last wgmma.fence -> line
  std::map<std::string, InFlight> inflight;

  bool join(const State &o) {
    if (!o.reached)
      return false;
    if (!reached) {
      *this = o;
      return true;
    }
    bool changed = false;
    if (o.unfenced && !unfenced)
      unfenced = changed = true;
    for (const auto &[r, l] : o.dirty)
      if (dirty.emplace(r, l).second)
        changed = true;
    for (const auto &[r, f] : o.inflight) {
      auto [it, fresh] = inflight.emplace(r, f);
      if (fresh) {
        changed = true;
      } else if (f.commits < it->second.commits) {
        it->second = f;
        changed = true;
      }
    }
    return changed;
  }
};

class Linter {
public:
  Linter(const Function &f, std::vector<std::string> &issues, size_t limit)
      : f(f), issues(issues), limit(limit) {}

  void run() {
    const auto &body = f.body;
    size_t n = body.size();
    std::map<std::string, size_t> labels;
    for (size_t i = 0; i < n; ++i)
      if (body[i].label)
        labels[body[i].text] = i;
    bool anyWgmma = std::any_of(body.begin(), body.end(),
                                [](const Stmt &s) { return startsWith(s.opcode, "wgmma."); });
    if (!anyWgmma)
      return;
    // Successors of each statement.
    std::vector<std::vector<size_t>> succ(n);
    for (size_t i = 0; i < n; ++i) {
      const Stmt &s = body[i];
      bool jump = startsWith(s.opcode, "bra");
      bool stop = s.opcode == "ret" || s.opcode == "exit" || s.opcode == "trap";
      if (jump) {
        std::string t = s.operands;
        size_t b = t.find_first_not_of(" \t\r\n");
        std::string target = b == std::string::npos ? "" : t.substr(b);
        auto it = labels.find(target);
        if (it != labels.end())
          succ[i].push_back(it->second);
        else
          report(s, "branch to an unknown label '" + target + "'");
      }
      if (i + 1 < n && (s.guarded || (!jump && !stop)))
        succ[i].push_back(i + 1);
    }
    std::vector<State> in(n);
    if (n == 0)
      return;
    in[0].reached = true;
    std::vector<size_t> work{0};
    std::vector<char> queued(n, 0);
    queued[0] = 1;
    while (!work.empty()) {
      size_t i = work.back();
      work.pop_back();
      queued[i] = 0;
      State out = in[i];
      transfer(body[i], out, /*report=*/false);
      for (size_t s : succ[i])
        if (in[s].join(out) && !queued[s]) {
          queued[s] = 1;
          work.push_back(s);
        }
    }
    // Reported once, from the fixpoint.
    for (size_t i = 0; i < n && issues.size() < limit; ++i)
      if (in[i].reached) {
        State s = in[i];
        transfer(body[i], s, /*report=*/true);
      }
  }

private:
  void report(const Stmt &s, const std::string &what) {
    if (issues.size() < limit)
      issues.push_back("function '" + f.name + "', line " + std::to_string(s.line) + ": " + what +
                       " (" + s.text.substr(0, 120) + ")");
  }

  void transfer(const Stmt &s, State &st, bool rep) {
    if (s.label)
      return;
    const std::string &op = s.opcode;
    if (startsWith(op, "wgmma.fence")) {
      st.dirty.clear();
      st.unfenced = false;
      return;
    }
    if (startsWith(op, "wgmma.commit_group")) {
      for (auto &[r, fl] : st.inflight)
        fl.commits = std::min(fl.commits + 1, kCommitCap);
      return;
    }
    if (startsWith(op, "wgmma.wait_group")) {
      int keep = std::atoi(s.operands.c_str());
      for (auto it = st.inflight.begin(); it != st.inflight.end();)
        it = it->second.commits > keep ? st.inflight.erase(it) : std::next(it);
      return;
    }
    if (startsWith(op, "wgmma.mma_async")) {
      Wgmma w = parseWgmma(s.operands);
      if (rep) {
        if (w.d.empty())
          report(s, "cannot read this wgmma.mma_async's destination registers");
        if (st.unfenced)
          report(s, "wgmma.mma_async with no wgmma.fence before it on some path");
        auto check = [&](const std::string &r, bool acc) {
          auto d = st.dirty.find(r);
          if (d != st.dirty.end())
            report(s, std::string(acc ? "accumulator " : "A register ") + r +
                          " is accessed at line " + std::to_string(d->second) +
                          ", after the last wgmma.fence");
          auto fl = st.inflight.find(r);
          // Chaining accumulators, or two reads of one A register, is allowed.
          if (fl != st.inflight.end() && fl->second.accumulator != acc)
            report(s, std::string(acc ? "accumulator " : "A register ") + r + " is the " +
                            (fl->second.accumulator ? "accumulator" : "A register") +
                            " of the wgmma.mma_async at line " + std::to_string(fl->second.line) +
                            ", still in flight");
        };
        for (const std::string &r : w.d)
          check(r, true);
        for (const std::string &r : w.a)
          check(r, false);
      }
      for (const std::string &r : w.d)
        st.inflight[r] = {0, s.line, true};
      for (const std::string &r : w.a) {
        auto it = st.inflight.find(r);
        if (it == st.inflight.end() || !it->second.accumulator)
          st.inflight[r] = {0, s.line, false};
      }
      return;
    }
    if (op == "ret" || op == "exit") {
      if (rep && !st.inflight.empty())
        report(s, "returns with the wgmma.mma_async at line " +
                      std::to_string(st.inflight.begin()->second.line) +
                      " in flight (no wgmma.wait_group retired it)");
      return;
    }
    for (const std::string &r : registersIn(s.operands)) {
      if (rep) {
        auto fl = st.inflight.find(r);
        if (fl != st.inflight.end())
          report(s, r + ", " + (fl->second.accumulator ? "an accumulator" : "an A register") +
                        " of the wgmma.mma_async at line " + std::to_string(fl->second.line) +
                        ", is accessed before the wgmma.wait_group that retires it");
      }
      st.dirty.emplace(r, s.line);
    }
  }

  const Function &f;
  std::vector<std::string> &issues;
  size_t limit;
};

} // namespace

std::vector<std::string> lintWgmmaRegisters(const std::string &ptx, size_t limit) {
  std::vector<std::string> issues;
  for (const Function &f : parseFunctions(ptx)) {
    if (issues.size() >= limit)
      break;
    Linter(f, issues, limit).run();
  }
  return issues;
}

} // namespace attune
