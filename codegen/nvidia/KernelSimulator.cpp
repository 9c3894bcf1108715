//===- KernelSimulator.cpp - run the emitted GPU kernel on the CPU --------===//
#include "codegen/nvidia/KernelSimulator.h"
#include "codegen/nvidia/PtxMath.h"

#include "runtime/src/HalfFloat.h"
#include "codegen/nvidia/NvidiaPipeline.h"
#include "dialect/AttnOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <deque>
#include <map>

using namespace mlir;

namespace attune {

namespace {

//===----------------------------------------------------------------------===//
// Scalars
//===----------------------------------------------------------------------===//

uint64_t fbits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float bitsf(uint64_t b) {
  uint32_t u = uint32_t(b);
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint64_t dbits(double d) {
  uint64_t u;
  std::memcpy(&u, &d, 8);
  return u;
}
double bitsd(uint64_t b) {
  double d;
  std::memcpy(&d, &b, 8);
  return d;
}

using half::fromBf16;
using half::fromF16;
using half::toBf16;
using half::toF16;

int64_t wrap(int64_t v, unsigned width) {
  if (width >= 64)
    return v;
  if (width == 1)
    return v & 1;
  uint64_t mask = (uint64_t(1) << width) - 1;
  uint64_t u = uint64_t(v) & mask;
  if (u >> (width - 1))
    u |= ~mask;
  return int64_t(u);
}

unsigned widthOf(Type t) {
  if (t.isIndex())
    return 64;
  if (auto i = dyn_cast<IntegerType>(t))
    return i.getWidth();
  return 64;
}

/// Scalar element -> float, for float-like types.
float toFloat(Type t, uint64_t b) {
  if (t.isF32())
    return bitsf(b);
  if (t.isBF16())
    return fromBf16(uint16_t(b));
  if (t.isF16())
    return fromF16(uint16_t(b));
  return float(bitsd(b));
}
uint64_t fromFloat(Type t, float f) {
  if (t.isF32())
    return fbits(f);
  if (t.isBF16())
    return toBf16(f);
  if (t.isF16())
    return toF16(f);
  return dbits(double(f));
}

unsigned fieldsOf(Type t) {
  if (auto v = dyn_cast<VectorType>(t))
    return unsigned(v.getNumElements());
  if (auto s = dyn_cast<LLVM::LLVMStructType>(t)) {
    unsigned n = 0;
    for (Type e : s.getBody())
      n += fieldsOf(e);
    return n;
  }
  if (auto a = dyn_cast<LLVM::LLVMArrayType>(t))
    return unsigned(a.getNumElements()) * fieldsOf(a.getElementType());
  if (auto m = dyn_cast<MemRefType>(t))
    return unsigned(3 + 2 * m.getRank());
  return 1;
}

/// Field offset and type of an extract/insertvalue position.
std::pair<unsigned, Type> fieldAt(Type t, ArrayRef<int64_t> pos) {
  unsigned off = 0;
  for (int64_t p : pos) {
    if (auto s = dyn_cast<LLVM::LLVMStructType>(t)) {
      for (int64_t i = 0; i < p; ++i)
        off += fieldsOf(s.getBody()[i]);
      t = s.getBody()[p];
    } else if (auto a = dyn_cast<LLVM::LLVMArrayType>(t)) {
      off += unsigned(p) * fieldsOf(a.getElementType());
      t = a.getElementType();
    }
  }
  return {off, t};
}

unsigned byteSize(Type t);
/// The element size of a scalar or vector type (for messages).
unsigned eltBytesOf(Type t) {
  if (auto v = dyn_cast<VectorType>(t))
    return byteSize(v.getElementType());
  return byteSize(t);
}
/// The alignment LLVM assumes of an access with no explicit one: the type's size
/// (NVPTX aligns scalars and vectors of 2, 4, 8, 16 bytes to their size).
unsigned naturalAlign(Type t);

unsigned byteSize(Type t) {
  if (auto v = dyn_cast<VectorType>(t))
    return unsigned(v.getNumElements()) * byteSize(v.getElementType());
  if (isa<LLVM::LLVMPointerType>(t) || t.isIndex())
    return 8;
  if (auto a = dyn_cast<LLVM::LLVMArrayType>(t))
    return unsigned(a.getNumElements()) * byteSize(a.getElementType());
  unsigned bits = t.getIntOrFloatBitWidth();
  return bits < 8 ? 1 : bits / 8;
}

unsigned naturalAlign(Type t) {
  unsigned n = byteSize(t);
  return (n & (n - 1)) == 0 ? n : eltBytesOf(t);
}

bool isShared(Type t) {
  auto p = dyn_cast<LLVM::LLVMPointerType>(t);
  return p && p.getAddressSpace() == 3;
}


//===----------------------------------------------------------------------===//
// The simulator
//===----------------------------------------------------------------------===//

struct Col {
  unsigned f = 1;
  std::vector<uint64_t> d;
  uint64_t &at(int lane, unsigned k = 0) { return d[size_t(lane) * f + k]; }
  uint64_t at(int lane, unsigned k = 0) const { return d[size_t(lane) * f + k]; }
};

using Mask = std::vector<char>;

struct Failure {
  std::string message;
};

struct CopyOp {
  uint64_t dst;
  const uint8_t *src;
  unsigned bytes, srcBytes;
};

/// Where the dynamic shared memory starts in the simulated shared window: 16-byte
/// aligned and no more, the least the driver promises, so that a kernel relying on
/// more alignment than it establishes itself fails here.
constexpr uint64_t kSmemStart = 48;

/// What the simulator reads from a wgmma inline-PTX call: the instruction's shape and
/// which asm operand ($i) is which.
struct WgmmaForm {
  int64_t n = 0;
  bool f16 = false;
  bool aRegs = false;
  bool transB = false;
  int aDesc = -1, bDesc = -1, scale = -1; // operand indices
  int a[4] = {-1, -1, -1, -1};
  std::vector<int> tied; // per output: the operand index of its tied input
};

/// Executed-op counts for profiles (ATTUNE_SIM_OP_COUNTS): every op the CTA steps
/// through (once for all its threads, as a GPU issues one instruction per warp; not
/// constants and index casts, which are no instructions), and
/// those of the key schedule (located at passes/KvSchedule.h's kKvScheduleLocName).
struct OpCounts {
  bool enabled = false;
  int64_t all = 0, schedule = 0, ctas = 0;
  llvm::DenseMap<Operation *, bool> isSchedule;
  bool scheduleOp(Operation *op) {
    auto [it, added] = isSchedule.try_emplace(op, false);
    if (added) {
      bool tagged = false;
      op->getLoc()->walk([&](Location l) {
        if (auto n = dyn_cast<NameLoc>(l); n && n.getName() == "attn.kv_schedule")
          tagged = true;
        return WalkResult::advance();
      });
      it->second = tagged;
    }
    return it->second;
  }
};
OpCounts opCounts;

class Simulator {
public:
  Simulator(ModuleOp module, int threads, int64_t smemBytes, std::array<int64_t, 3> ctaid)
      : module(module), threads(threads), smem(size_t(smemBytes) + kSmemStart, 0xcd),
        writer(smem.size(), -1), writeEpoch(smem.size(), -1), reader(smem.size(), -1),
        readEpoch(smem.size(), -1), writeFence(smem.size(), 0), fences(threads, 0),
        asyncReadGroup(smem.size(), -1), copyIssuer(smem.size(), -1),
        ctaid(ctaid), pending(threads), groups(threads) {}

  void run(gpu::GPUFuncOp func, const std::vector<SimArg> &args) {
    Block &entry = func.getBody().front();
    for (auto [i, arg] : llvm::enumerate(entry.getArguments())) {
      Col c = make(arg.getType());
      for (int l = 0; l < threads; ++l)
        c.at(l) = args[i].pointer ? uint64_t(reinterpret_cast<uintptr_t>(args[i].ptr))
                                  : uint64_t(args[i].value);
      vals[arg] = std::move(c);
      if (!args[i].pointer)
        continue;
      if (args[i].bytes < 0) {
        allSized = allSized && args[i].ptr == nullptr;
        regionCache[arg] = kUnchecked;
        continue;
      }
      regionCache[arg] = int(regions.size());
      regions.push_back({uint64_t(reinterpret_cast<uintptr_t>(args[i].ptr)), args[i].bytes,
                         args[i].name.empty() ? "argument " + std::to_string(i) : args[i].name});
    }
    Mask all(threads, 1);
    runBlock(entry, all);
    // Copies still in flight when the CTA ends would land in freed shared memory.
    for (int l = 0; l < threads; ++l)
      if (!pending[size_t(l)].empty() || !groups[size_t(l)].empty())
        throw Failure{"simulator: thread " + std::to_string(l) +
                      " ends the kernel with cp.async copies in flight (no "
                      "cp.async.wait_group 0 after its last copies)"};
  }

private:
  Col make(Type t) {
    Col c;
    c.f = fieldsOf(t);
    c.d.assign(size_t(threads) * c.f, 0);
    return c;
  }
  Col &get(Value v) {
    auto it = vals.find(v);
    if (it == vals.end())
      throw Failure{"simulator: a value is used before it is defined"};
    return it->second;
  }
  static bool any(const Mask &m) {
    for (char c : m)
      if (c)
        return true;
    return false;
  }

  // Memory.
  void checkShared(uint64_t off, unsigned n, int lane, bool write) {
    if (off < kSmemStart || off + n > smem.size())
      throw Failure{"simulator: shared memory access out of bounds at " +
                    std::to_string(int64_t(off) - int64_t(kSmemStart))};
    for (unsigned k = 0; k < n; ++k) {
      size_t a = off + k;
      if (copyIssuer[a] >= 0)
        throw Failure{"simulator: shared-memory race: " + what() + (lane == threads ? " (the async proxy)" : " by thread " + std::to_string(lane)) +
                      (write ? " writes" : " reads") + " shared byte " + std::to_string(a - kSmemStart) +
                      " while the cp.async that thread " + std::to_string(copyIssuer[a]) +
                      " issued into it is in flight (no cp.async.wait_group has landed it)"};
      if (writeEpoch[a] == epoch && writer[a] != lane && writer[a] >= 0)
        throw Failure{"simulator: shared-memory race (thread " + std::to_string(lane) +
                      (write ? " writes" : " reads") + " byte " + std::to_string(a) +
                      " written by thread " + std::to_string(writer[a]) + " since the last barrier)"};
      if (write && readEpoch[a] == epoch && reader[a] != lane && reader[a] != -1)
        throw Failure{"simulator: shared-memory race (thread " + std::to_string(lane) +
                      " overwrites byte " + std::to_string(a) + " read by thread " +
                      std::to_string(reader[a]) + " since the last barrier)"};
      if (write) {
        writer[a] = lane;
        writeEpoch[a] = epoch;
        writeFence[a] = fences[size_t(lane)];
        if (asyncReadGroup[a] >= retiredGroups)
          throw Failure{"simulator: thread " + std::to_string(lane) + " overwrites shared byte " +
                        std::to_string(a - kSmemStart) +
                        " that a wgmma still in flight reads (no wgmma.wait_group retired it)"};
      } else {
        reader[a] = readEpoch[a] == epoch && reader[a] != lane ? -2 : lane;
        readEpoch[a] = epoch;
      }
    }
  }
  /// `address` is the op's pointer operand (its provenance names the tensor);
  /// `align` the alignment the access needs, `eltBytes` the element size for messages.
  void loadBytes(Value address, uint64_t addr, void *out, unsigned n, int lane, unsigned align,
                 unsigned eltBytes) {
    checkAlign(addr, align, lane);
    if (isShared(address.getType())) {
      checkShared(addr, n, lane, false);
      std::memcpy(out, smem.data() + addr, n);
    } else {
      if (addr == 0)
        throw Failure{"simulator: load through a null pointer"};
      checkGlobal(address, addr, n, lane, false, eltBytes);
      std::memcpy(out, reinterpret_cast<const void *>(uintptr_t(addr)), n);
    }
  }
  void storeBytes(Value address, uint64_t addr, const void *in, unsigned n, int lane,
                  unsigned align, unsigned eltBytes) {
    checkAlign(addr, align, lane);
    if (isShared(address.getType())) {
      checkShared(addr, n, lane, true);
      std::memcpy(smem.data() + addr, in, n);
    } else {
      if (addr == 0)
        throw Failure{"simulator: store through a null pointer"};
      checkGlobal(address, addr, n, lane, true, eltBytes);
      std::memcpy(reinterpret_cast<void *>(uintptr_t(addr)), in, n);
    }
  }
  std::string what() const {
    return current ? current->getName().getStringRef().str() : std::string("an access");
  }
  /// PTX faults on a misaligned access; LLVM may also widen an access to the alignment
  /// an op promises. Shared addresses are offsets in the window (its base is aligned).
  void checkAlign(uint64_t addr, unsigned align, int lane) {
    if (align > 1 && addr % align)
      throw Failure{"simulator: " + what() + " by thread " + std::to_string(lane) +
                    " at a misaligned address (" + std::to_string(addr % align) +
                    " bytes past a multiple of " + std::to_string(align) + ")"};
  }
  /// The tensor an address derives from: GEPs and address-space casts back to a kernel
  /// argument or a global. kUnchecked: an argument of unknown size; kUnknown: no
  /// single root (then the access must lie inside some tensor).
  static constexpr int kUnchecked = -1, kUnknown = -2;
  int regionOf(Value v) {
    auto it = regionCache.find(v);
    if (it != regionCache.end())
      return it->second;
    int r = kUnknown;
    if (auto g = v.getDefiningOp<LLVM::GEPOp>())
      r = regionOf(g.getBase());
    else if (auto c = v.getDefiningOp<LLVM::AddrSpaceCastOp>())
      r = regionOf(c.getArg());
    return regionCache[v] = r;
  }
  /// Every global access stays inside the tensor its address derives from.
  void checkGlobal(Value address, uint64_t addr, uint64_t n, int lane, bool write,
                   unsigned eltBytes) {
    int r = regionOf(address);
    if (r == kUnchecked)
      return;
    auto inside = [&](const Region &g) { return addr >= g.base && addr + n <= g.base + uint64_t(g.bytes); };
    if (r == kUnknown) {
      if (!allSized)
        return;
      for (const Region &g : regions)
        if (inside(g))
          return;
      throw Failure{"simulator: " + what() + " by thread " + std::to_string(lane) +
                    (write ? " writes " : " reads ") + std::to_string(n) +
                    " bytes of global memory outside every tensor"};
    }
    const Region &g = regions[size_t(r)];
    if (inside(g))
      return;
    // Indices in the tensor's elements: the type the address was computed in.
    // (Byte offsets, i8 GEPs, are added to a pointer in the tensor's elements.)
    for (Value a = address; a;) {
      if (auto cast = a.getDefiningOp<LLVM::AddrSpaceCastOp>()) {
        a = cast.getArg();
      } else if (auto gep = a.getDefiningOp<LLVM::GEPOp>()) {
        eltBytes = byteSize(gep.getElemType());
        if (eltBytes > 1)
          break;
        a = gep.getBase();
      } else {
        break;
      }
    }
    int64_t off = int64_t(addr - g.base), e = std::max(1u, eltBytes);
    int64_t index = off >= 0 ? off / e : -((-off + e - 1) / e);
    throw Failure{"simulator: out-of-bounds " + std::string(write ? "write" : "read") + " by " +
                  what() + " (thread " + std::to_string(lane) + " of CTA (" +
                  std::to_string(ctaid[0]) + ", " + std::to_string(ctaid[1]) + ", " +
                  std::to_string(ctaid[2]) + ")): element " + std::to_string(index) +
                  " (bytes " + std::to_string(off) + ".." + std::to_string(off + int64_t(n)) +
                  ") of tensor '" + g.name + "', which holds " + std::to_string(g.bytes / e) +
                  " elements (" + std::to_string(g.bytes) + " bytes)"};
  }
  /// Scalar or vector of type t from bytes.
  void decode(Type t, const uint8_t *bytes, Col &c, int lane) {
    Type elt = t;
    unsigned n = 1;
    if (auto v = dyn_cast<VectorType>(t)) {
      elt = v.getElementType();
      n = unsigned(v.getNumElements());
    }
    unsigned sz = byteSize(elt);
    for (unsigned k = 0; k < n; ++k) {
      uint64_t raw = 0;
      std::memcpy(&raw, bytes + k * sz, sz);
      if (auto i = dyn_cast<IntegerType>(elt))
        raw = uint64_t(wrap(int64_t(raw), i.getWidth()));
      c.at(lane, k) = raw;
    }
  }
  void encode(Type t, const Col &c, int lane, uint8_t *bytes) {
    Type elt = t;
    unsigned n = 1;
    if (auto v = dyn_cast<VectorType>(t)) {
      elt = v.getElementType();
      n = unsigned(v.getNumElements());
    }
    unsigned sz = byteSize(elt);
    for (unsigned k = 0; k < n; ++k) {
      uint64_t raw = c.at(lane, k);
      std::memcpy(bytes + k * sz, &raw, sz);
    }
  }

  // cp.async groups.
  void landGroups(int lane, size_t keep) {
    auto &q = groups[lane];
    while (q.size() > keep) {
      for (const CopyOp &c : q.front()) {
        uint8_t buf[16] = {0};
        std::memcpy(buf, c.src, c.srcBytes);
        for (unsigned k = 0; k < c.bytes; ++k)
          copyIssuer[c.dst + k] = -1;
        checkShared(c.dst, c.bytes, lane, true);
        std::memcpy(smem.data() + c.dst, buf, c.bytes);
      }
      q.pop_front();
    }
  }

  SmallVector<Col> runRegion(Region &r, const Mask &mask, ArrayRef<Col> args) {
    Block &block = r.front();
    for (auto [a, c] : llvm::zip(block.getArguments(), args))
      vals[a] = c;
    return runBlock(block, mask);
  }

  /// Runs a block; returns the terminator's operands (yield/condition/return).
  SmallVector<Col> runBlock(Block &block, const Mask &mask) {
    for (Operation &op : block) {
      if (op.hasTrait<OpTrait::IsTerminator>()) {
        SmallVector<Col> out;
        for (Value v : op.getOperands())
          out.push_back(get(v));
        return out;
      }
      exec(op, mask);
    }
    return {};
  }

  void exec(Operation &op, const Mask &mask);
  void execScf(Operation &op, const Mask &mask);
  void execWarp(Operation &op, const Mask &mask);
  void execWarpgroup(Operation &op, const Mask &mask);
  void wgmma(LLVM::InlineAsmOp call, const Mask &mask);
  const WgmmaForm &wgmmaForm(LLVM::InlineAsmOp call);
  /// A 16-bit operand element that wgmma reads through the async proxy.
  uint16_t asyncRead(uint64_t addr);

  ModuleOp module;
  int threads;
  std::vector<uint8_t> smem;
  std::vector<int> writer, writeEpoch, reader, readEpoch;
  /// Per byte, its writer's fence.proxy.async count at the write; per thread, how many
  /// it has executed: wgmma may read a byte only once its writer has fenced since.
  std::vector<int64_t> writeFence, fences;
  /// Per byte, the commit group of the last wgmma that read it; groups below
  /// retiredGroups have been waited for.
  std::vector<int64_t> asyncReadGroup;
  /// Per byte, the thread whose cp.async into it is in flight (issued, not landed).
  std::vector<int> copyIssuer;
  struct Region {
    uint64_t base;
    int64_t bytes;
    std::string name;
  };
  std::vector<Region> regions;
  llvm::DenseMap<Value, int> regionCache;
  llvm::StringMap<int> globalRegions;
  bool allSized = true; // every non-null pointer argument has a size
  Operation *current = nullptr;
  int64_t retiredGroups = 0;
  int epoch = 0;
  // wgmma: fenced since the last commit; accumulators in flight until wait_group.
  bool wgmmaFenced = false;
  llvm::DenseMap<Value, int64_t> inflight; // value -> its commit group
  int64_t openGroup = 0;
  llvm::DenseMap<Operation *, WgmmaForm> forms;
  std::array<int64_t, 3> ctaid;
  std::vector<std::vector<CopyOp>> pending;
  std::vector<std::deque<std::vector<CopyOp>>> groups;
  llvm::DenseMap<Value, Col> vals;
  std::map<std::string, std::vector<uint8_t>> globals;
};

void Simulator::execScf(Operation &op, const Mask &mask) {
  if (auto ifOp = dyn_cast<scf::IfOp>(op)) {
    Col cond = get(ifOp.getCondition());
    Mask thenMask(threads, 0), elseMask(threads, 0);
    for (int l = 0; l < threads; ++l) {
      thenMask[l] = mask[l] && (cond.at(l) & 1);
      elseMask[l] = mask[l] && !(cond.at(l) & 1);
    }
    SmallVector<Col> results;
    for (Value r : ifOp.getResults())
      results.push_back(make(r.getType()));
    auto merge = [&](const SmallVector<Col> &ys, const Mask &m) {
      for (size_t i = 0; i < ys.size(); ++i)
        for (int l = 0; l < threads; ++l)
          if (m[l])
            for (unsigned k = 0; k < results[i].f; ++k)
              results[i].at(l, k) = ys[i].at(l, k);
    };
    if (any(thenMask))
      merge(runRegion(ifOp.getThenRegion(), thenMask, {}), thenMask);
    if (any(elseMask) && !ifOp.getElseRegion().empty())
      merge(runRegion(ifOp.getElseRegion(), elseMask, {}), elseMask);
    for (auto [r, c] : llvm::zip(ifOp.getResults(), results))
      vals[r] = std::move(c);
    return;
  }
  if (auto forOp = dyn_cast<scf::ForOp>(op)) {
    // Copies: running the body adds values and may move the map's storage.
    Col iv = get(forOp.getLowerBound());
    Col ub = get(forOp.getUpperBound());
    Col step = get(forOp.getStep());
    SmallVector<Col> iter;
    for (Value v : forOp.getInitArgs())
      iter.push_back(get(v));
    Mask active(threads, 0);
    for (int l = 0; l < threads; ++l)
      active[l] = mask[l] && int64_t(iv.at(l)) < int64_t(ub.at(l));
    while (any(active)) {
      SmallVector<Col> args{iv};
      args.append(iter.begin(), iter.end());
      SmallVector<Col> ys = runRegion(forOp.getRegion(), active, args);
      for (size_t i = 0; i < ys.size(); ++i)
        for (int l = 0; l < threads; ++l)
          if (active[l])
            for (unsigned k = 0; k < iter[i].f; ++k)
              iter[i].at(l, k) = ys[i].at(l, k);
      for (int l = 0; l < threads; ++l)
        if (active[l]) {
          iv.at(l) = uint64_t(int64_t(iv.at(l)) + int64_t(step.at(l)));
          active[l] = int64_t(iv.at(l)) < int64_t(ub.at(l));
        }
    }
    for (auto [r, c] : llvm::zip(forOp.getResults(), iter))
      vals[r] = c;
    return;
  }
  if (auto whileOp = dyn_cast<scf::WhileOp>(op)) {
    SmallVector<Col> args;
    for (Value v : whileOp.getInits())
      args.push_back(get(v));
    SmallVector<Col> results;
    for (Value r : whileOp.getResults())
      results.push_back(make(r.getType()));
    Mask active = mask;
    while (any(active)) {
      SmallVector<Col> fwd = runRegion(whileOp.getBefore(), active, args);
      // fwd[0] is the condition; the rest are forwarded.
      Mask cont(threads, 0);
      for (int l = 0; l < threads; ++l) {
        if (!active[l])
          continue;
        bool c = fwd[0].at(l) & 1;
        cont[l] = c;
        if (!c)
          for (size_t i = 0; i + 1 < fwd.size(); ++i)
            for (unsigned k = 0; k < results[i].f; ++k)
              results[i].at(l, k) = fwd[i + 1].at(l, k);
      }
      active = cont;
      if (!any(active))
        break;
      SmallVector<Col> afterArgs(fwd.begin() + 1, fwd.end());
      SmallVector<Col> ys = runRegion(whileOp.getAfter(), active, afterArgs);
      for (size_t i = 0; i < ys.size(); ++i)
        for (int l = 0; l < threads; ++l)
          if (active[l])
            for (unsigned k = 0; k < args[i].f; ++k)
              args[i].at(l, k) = ys[i].at(l, k);
    }
    for (auto [r, c] : llvm::zip(whileOp.getResults(), results))
      vals[r] = std::move(c);
    return;
  }
  throw Failure{"simulator: unsupported scf op " + op.getName().getStringRef().str()};
}

/// ldmatrix, mma.sync, shfl, vote: whole warps.
void Simulator::execWarp(Operation &op, const Mask &mask) {
  for (int w = 0; w < threads / 32; ++w) {
    int active = 0;
    for (int l = 0; l < 32; ++l)
      active += mask[w * 32 + l] ? 1 : 0;
    if (active != 0 && active != 32)
      throw Failure{"simulator: " + op.getName().getStringRef().str() +
                    " executed by part of a warp"};
  }
  if (auto ld = dyn_cast<NVVM::LdMatrixOp>(op)) {
    Col &ptr = get(ld.getPtr());
    Col out = make(ld.getType());
    int num = int(ld.getNum());
    bool trans = ld.getLayout() == NVVM::MMALayout::col;
    for (int w = 0; w < threads / 32; ++w) {
      if (!mask[w * 32])
        continue;
      // Matrix i, row r: 8 consecutive 16-bit values at the address from lane 8i + r.
      uint16_t m[4][8][8];
      for (int i = 0; i < num; ++i)
        for (int r = 0; r < 8; ++r) {
          int src = w * 32 + 8 * i + r;
          loadBytes(ld.getPtr(), ptr.at(src), m[i][r], 16, src, 16, 2);
        }
      for (int l = 0; l < 32; ++l)
        for (int i = 0; i < num; ++i) {
          int g = l / 4, t = l % 4;
          uint16_t lo = trans ? m[i][2 * t][g] : m[i][g][2 * t];
          uint16_t hi = trans ? m[i][2 * t + 1][g] : m[i][g][2 * t + 1];
          out.at(w * 32 + l, unsigned(i)) = uint64_t(int64_t(int32_t(uint32_t(lo) | (uint32_t(hi) << 16))));
        }
    }
    vals[ld.getResult()] = std::move(out);
    return;
  }
  if (auto mma = dyn_cast<NVVM::MmaOp>(op)) {
    auto a = mma.getOperandA(), bOps = mma.getOperandB(), c = mma.getOperandC();
    bool f16 = mma.getMultiplicandAPtxType() == NVVM::MMATypes::f16;
    Col out = make(mma.getType());
    // Two 16-bit values of fragment register `v` for lane l.
    auto halves = [&](Value v, int lane, float &x0, float &x1) {
      Col &col = get(v);
      uint32_t bits;
      if (isa<VectorType>(v.getType())) {
        bits = uint32_t(col.at(lane, 0) & 0xffff) | (uint32_t(col.at(lane, 1) & 0xffff) << 16);
      } else {
        bits = uint32_t(col.at(lane));
      }
      uint16_t lo = uint16_t(bits), hi = uint16_t(bits >> 16);
      x0 = f16 ? fromF16(lo) : fromBf16(lo);
      x1 = f16 ? fromF16(hi) : fromBf16(hi);
    };
    for (int w = 0; w < threads / 32; ++w) {
      if (!mask[w * 32])
        continue;
      float A[16][16], B[16][8], C[16][8];
      for (int l = 0; l < 32; ++l) {
        int g = l / 4, t = l % 4, ln = w * 32 + l;
        halves(a[0], ln, A[g][2 * t], A[g][2 * t + 1]);
        halves(a[1], ln, A[g + 8][2 * t], A[g + 8][2 * t + 1]);
        halves(a[2], ln, A[g][2 * t + 8], A[g][2 * t + 9]);
        halves(a[3], ln, A[g + 8][2 * t + 8], A[g + 8][2 * t + 9]);
        halves(bOps[0], ln, B[2 * t][g], B[2 * t + 1][g]);
        halves(bOps[1], ln, B[2 * t + 8][g], B[2 * t + 9][g]);
        C[g][2 * t] = bitsf(get(c[0]).at(ln));
        C[g][2 * t + 1] = bitsf(get(c[1]).at(ln));
        C[g + 8][2 * t] = bitsf(get(c[2]).at(ln));
        C[g + 8][2 * t + 1] = bitsf(get(c[3]).at(ln));
      }
      for (int l = 0; l < 32; ++l) {
        int g = l / 4, t = l % 4, ln = w * 32 + l;
        int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
        for (int e = 0; e < 4; ++e) {
          float acc = C[rows[e]][cols[e]];
          for (int k = 0; k < 16; ++k)
            acc += A[rows[e]][k] * B[k][cols[e]];
          out.at(ln, unsigned(e)) = fbits(acc);
        }
      }
    }
    vals[mma.getResult()] = std::move(out);
    return;
  }
  if (auto vote = dyn_cast<NVVM::VoteSyncOp>(op)) {
    if (vote.getKind() != NVVM::VoteSyncKind::ballot)
      throw Failure{"simulator: only vote.sync.ballot is modelled"};
    Col &pred = get(vote.getPred()), &members = get(vote.getMask());
    Col out = make(vote.getType());
    for (int w = 0; w < threads / 32; ++w) {
      if (!mask[w * 32])
        continue;
      uint32_t ballot = 0;
      for (int l = 0; l < 32; ++l) {
        if (uint32_t(members.at(w * 32 + l)) != 0xffffffffu)
          throw Failure{"simulator: vote.sync with a partial member mask"};
        if (pred.at(w * 32 + l) & 1)
          ballot |= 1u << l;
      }
      for (int l = 0; l < 32; ++l)
        out.at(w * 32 + l) = uint64_t(int64_t(int32_t(ballot)));
    }
    vals[vote.getResult()] = std::move(out);
    return;
  }
  if (auto shfl = dyn_cast<NVVM::ShflOp>(op)) {
    if (shfl.getKind() != NVVM::ShflKind::bfly)
      throw Failure{"simulator: only butterfly shuffles are modelled"};
    Col &val = get(shfl.getVal()), &off = get(shfl.getOffset());
    Col out = make(shfl.getType());
    for (int l = 0; l < threads; ++l)
      if (mask[l]) {
        int src = (l & ~31) | ((l & 31) ^ int(off.at(l)));
        out.at(l) = val.at(src);
      }
    vals[shfl.getResult()] = std::move(out);
    return;
  }
}

//===----------------------------------------------------------------------===//
// wgmma (sm_90a): warpgroups, descriptors, the async proxy
//===----------------------------------------------------------------------===//

namespace {
/// A cursor over the inline-PTX text of a wgmma call.
struct AsmText {
  StringRef rest;
  bool eat(StringRef s) {
    size_t at = rest.find(s);
    if (at == StringRef::npos)
      return false;
    rest = rest.drop_front(at + s.size());
    return true;
  }
  bool skip(StringRef s) {
    rest = rest.ltrim();
    if (!rest.starts_with(s))
      return false;
    rest = rest.drop_front(s.size());
    return true;
  }
  int64_t number() {
    rest = rest.ltrim();
    size_t n = 0;
    while (n < rest.size() && isdigit(static_cast<unsigned char>(rest[n])))
      ++n;
    int64_t v = -1;
    if (n)
      rest.take_front(n).getAsInteger(10, v);
    rest = rest.drop_front(n);
    return v;
  }
  int64_t operand() { return skip("$") ? number() : -1; }
};
} // namespace

const WgmmaForm &Simulator::wgmmaForm(LLVM::InlineAsmOp call) {
  auto it = forms.find(call);
  if (it != forms.end())
    return it->second;
  auto bad = [&](const std::string &why) {
    return Failure{"simulator: unmodelled inline PTX (" + why + "): " + call.getAsmString().str()};
  };
  WgmmaForm f;
  auto structType = dyn_cast<LLVM::LLVMStructType>(call.getRes() ? call.getRes().getType() : Type());
  int64_t outs = structType ? int64_t(structType.getBody().size()) : 0;
  AsmText t{call.getAsmString()};
  if (!t.eat("setp.ne.b32 p,"))
    throw bad("no scale-d predicate");
  int64_t scale = t.operand();
  if (!t.eat("wgmma.mma_async.sync.aligned.m64n"))
    throw bad("not a wgmma.mma_async");
  f.n = t.number();
  if (!t.skip("k16.f32."))
    throw bad("shape");
  if (t.skip("bf16.bf16"))
    f.f16 = false;
  else if (t.skip("f16.f16"))
    f.f16 = true;
  else
    throw bad("operand types");
  if (f.n <= 0 || f.n % 8 || f.n > 256 || outs != f.n / 2)
    throw bad("N and the accumulator count disagree");
  if (!t.skip("{"))
    throw bad("accumulator list");
  for (int64_t i = 0; i < outs; ++i)
    if ((i && !t.skip(",")) || t.operand() != i)
      throw bad("accumulators must be $0.. in order");
  if (!t.skip("}") || !t.skip(","))
    throw bad("accumulator list");
  f.aRegs = t.skip("{");
  if (f.aRegs) {
    for (int i = 0; i < 4; ++i) {
      if (i && !t.skip(","))
        throw bad("A registers");
      f.a[i] = int(t.operand() - outs);
    }
    if (!t.skip("}"))
      throw bad("A registers");
  } else {
    f.aDesc = int(t.operand() - outs);
  }
  if (!t.skip(","))
    throw bad("B descriptor");
  f.bDesc = int(t.operand() - outs);
  f.scale = int(scale - outs);
  if (!t.skip(",") || !t.skip("p") || !t.skip(",") || t.number() != 1 || !t.skip(",") ||
      t.number() != 1 || !t.skip(","))
    throw bad("only scale-d p and unit input scales are modelled");
  if (!f.aRegs && (t.number() != 0 || !t.skip(",")))
    throw bad("only a K-major A descriptor is modelled");
  int64_t transB = t.number();
  if (transB != 0 && transB != 1)
    throw bad("imm-trans-b");
  f.transB = transB == 1;
  // Tied inputs: the constraint of each operand, after the outputs'.
  SmallVector<StringRef> cons;
  call.getConstraints().split(cons, ',');
  f.tied.assign(size_t(outs), -1);
  for (size_t i = size_t(outs); i < cons.size(); ++i) {
    int64_t out;
    if (!cons[i].getAsInteger(10, out) && out >= 0 && out < outs)
      f.tied[size_t(out)] = int(i - size_t(outs));
  }
  int64_t operands = int64_t(call.getOperands().size());
  auto inRange = [&](int i) { return i >= 0 && i < operands; };
  if (!inRange(f.bDesc) || !inRange(f.scale) || (!f.aRegs && !inRange(f.aDesc)) ||
      (f.aRegs && !(inRange(f.a[0]) && inRange(f.a[1]) && inRange(f.a[2]) && inRange(f.a[3]))) ||
      llvm::is_contained(f.tied, -1))
    throw bad("operand numbering");
  return forms[call] = f;
}

uint16_t Simulator::asyncRead(uint64_t addr) {
  for (uint64_t a = addr; a < addr + 2; ++a) {
    if (a < kSmemStart || a >= smem.size())
      throw Failure{"simulator: wgmma reads shared memory out of bounds at " +
                    std::to_string(int64_t(a) - int64_t(kSmemStart))};
    int w = writer[a];
    if (w < 0)
      throw Failure{"simulator: wgmma reads shared byte " + std::to_string(a - kSmemStart) +
                    " that nothing wrote"};
    if (w < threads && fences[size_t(w)] <= writeFence[a])
      throw Failure{"simulator: wgmma reads shared byte " + std::to_string(a - kSmemStart) +
                    " written by thread " + std::to_string(w) +
                    " with no fence.proxy.async since (generic-proxy writes are not visible "
                    "to the async proxy without it)"};
  }
  // As a read by an agent that is no thread: a write since the barrier races with it.
  checkShared(addr, 2, threads, false);
  asyncReadGroup[addr] = asyncReadGroup[addr + 1] = openGroup;
  uint16_t v;
  std::memcpy(&v, smem.data() + addr, 2);
  return v;
}

void Simulator::execWarpgroup(Operation &op, const Mask &mask) {
  auto partial = [&] {
    return Failure{"simulator: " + op.getName().getStringRef().str() +
                   " needs whole warpgroups of 128 threads"};
  };
  if (threads % 128)
    throw partial();
  for (int g = 0; g * 128 < threads; ++g) {
    int active = 0;
    for (int l = 0; l < 128; ++l)
      active += mask[size_t(g * 128 + l)] ? 1 : 0;
    if (active != 0 && active != 128)
      throw partial();
  }
  llvm::TypeSwitch<Operation *>(&op)
      .Case([&](NVVM::FenceProxyOp f) {
        if (f.getKind() != NVVM::ProxyKind::async_shared)
          throw Failure{"simulator: only fence.proxy.async.shared::cta is modelled"};
        for (int l = 0; l < threads; ++l)
          if (mask[size_t(l)])
            ++fences[size_t(l)];
      })
      .Case([&](NVVM::WgmmaFenceAlignedOp) { wgmmaFenced = true; })
      .Case([&](NVVM::WgmmaGroupSyncAlignedOp) {
        ++openGroup;
        wgmmaFenced = false;
      })
      .Case([&](NVVM::WgmmaWaitGroupSyncOp w) {
        int64_t keep = int64_t(w.getGroup());
        SmallVector<Value> done;
        for (auto &[v, group] : inflight)
          if (group < openGroup - keep)
            done.push_back(v);
        for (Value v : done)
          inflight.erase(v);
        retiredGroups = std::max(retiredGroups, openGroup - keep);
      })
      .Case([&](LLVM::InlineAsmOp call) { wgmma(call, mask); });
}

/// The 128- and 64-byte swizzles: 16-byte chunks (address bits 4 and up) permuted by
/// XOR with address bits 7-9 (128 B) or 7-8 (64 B), the row within the atom.
static uint64_t swizzle(uint64_t logical, uint64_t rowBytes) {
  uint64_t rowBits = rowBytes == 128 ? 7 : 3;
  return logical ^ (((logical >> 7) & rowBits) << 4);
}

void Simulator::wgmma(LLVM::InlineAsmOp call, const Mask &mask) {
  const WgmmaForm &f = wgmmaForm(call);
  if (!wgmmaFenced)
    throw Failure{"simulator: wgmma.mma_async with no wgmma.fence since the last commit"};
  auto operand = [&](int i) -> Col & { return get(call.getOperands()[size_t(i)]); };
  Col out = make(call.getRes().getType());
  int64_t regs = f.n / 2;
  for (int g = 0; g * 128 < threads; ++g) {
    int base = g * 128;
    if (!mask[size_t(base)])
      continue;
    // Descriptors and scale-d are warpgroup-uniform.
    auto uniform = [&](int i, const char *what) {
      uint64_t v = operand(i).at(base);
      for (int l = 1; l < 128; ++l)
        if (operand(i).at(base + l) != v)
          throw Failure{std::string("simulator: wgmma ") + what + " differs across the warpgroup"};
      return v;
    };
    struct Desc {
      uint64_t start, lbo, sbo, rowBytes;
    };
    auto decodeDesc = [&](uint64_t desc, bool mnMajor) {
      uint64_t mode = desc >> 62;
      Desc d{(desc & 0x3fff) << 4, ((desc >> 16) & 0x3fff) << 4, ((desc >> 32) & 0x3fff) << 4,
             mode == 1 ? 128u : 64u};
      if ((mode != 1 && mode != 2) || ((desc >> 49) & 7) != 0)
        throw Failure{"simulator: only the 128- and 64-byte swizzles with base offset 0 are "
                      "modelled"};
      // Starts inside the first row of an 8-row atom (K-major steps of 32 bytes), or on
      // an atom (MN-major): the swizzle's row bits then come from the row alone.
      uint64_t atom = 8 * d.rowBytes;
      if (mnMajor ? (d.start % atom) != 0 : (d.start % atom) > d.rowBytes - 32)
        throw Failure{"simulator: wgmma descriptor start " + std::to_string(d.start) +
                      " is not where a " + std::to_string(d.rowBytes) +
                      "-byte-swizzled operand can start"};
      if (d.sbo % atom)
        throw Failure{"simulator: wgmma stride byte offset not a multiple of the " +
                      std::to_string(atom) + "-byte atom"};
      return d;
    };
    auto toF = [&](uint16_t h) { return f.f16 ? fromF16(h) : fromBf16(h); };
    auto kMajor = [&](const Desc &d, int64_t row, int64_t k) {
      uint64_t r = d.rowBytes;
      return asyncRead(swizzle(d.start + uint64_t(row % 8) * r + uint64_t(row / 8) * d.sbo +
                                   uint64_t(k) * 2, r));
    };
    auto mnMajor = [&](const Desc &d, int64_t k, int64_t n) {
      uint64_t r = d.rowBytes, cols = r / 2;
      return asyncRead(swizzle(d.start + (uint64_t(n) % cols) * 2 + (uint64_t(n) / cols) * d.lbo +
                                   uint64_t(k % 8) * r + uint64_t(k / 8) * d.sbo, r));
    };
    std::vector<float> A(64 * 16), B(16 * size_t(f.n));
    if (f.aRegs) {
      for (int l = 0; l < 128; ++l) {
        int w = l / 32, gq = (l % 32) / 4, tq = l % 4;
        for (int r = 0; r < 4; ++r) {
          uint32_t bits = uint32_t(operand(f.a[r]).at(base + l));
          int row = 16 * w + gq + 8 * (r % 2), col = 2 * tq + 8 * (r / 2);
          A[size_t(row * 16 + col)] = toF(uint16_t(bits));
          A[size_t(row * 16 + col + 1)] = toF(uint16_t(bits >> 16));
        }
      }
    } else {
      Desc a = decodeDesc(uniform(f.aDesc, "A descriptor"), false);
      for (int64_t m = 0; m < 64; ++m)
        for (int64_t k = 0; k < 16; ++k)
          A[size_t(m * 16 + k)] = toF(kMajor(a, m, k));
    }
    Desc bd = decodeDesc(uniform(f.bDesc, "B descriptor"), f.transB);
    for (int64_t k = 0; k < 16; ++k)
      for (int64_t n = 0; n < f.n; ++n)
        B[size_t(k * f.n + n)] = toF(f.transB ? mnMajor(bd, k, n) : kMajor(bd, n, k));
    bool accumulate = uniform(f.scale, "scale-d") != 0;
    for (int l = 0; l < 128; ++l) {
      int w = l / 32, gq = (l % 32) / 4, tq = l % 4;
      for (int64_t i = 0; i < regs; ++i) {
        int64_t e = i % 4, row = 16 * w + gq + 8 * (e / 2), col = 8 * (i / 4) + 2 * tq + (e % 2);
        float acc = accumulate ? bitsf(operand(f.tied[size_t(i)]).at(base + l)) : 0.0f;
        for (int64_t k = 0; k < 16; ++k)
          acc += A[size_t(row * 16 + k)] * B[size_t(k * f.n + col)];
        out.at(base + l, unsigned(i)) = fbits(acc);
      }
    }
  }
  vals[call.getRes()] = std::move(out);
  inflight[call.getRes()] = openGroup;
}

/// The empty inline asm of KernelEmitter::fenceOperands: one register in, the same out
/// ("=f,0" or "=r,0"), with side effects so that LLVM keeps it in place.
static bool isOperandFence(LLVM::InlineAsmOp call) {
  StringRef c = call.getConstraints();
  return call.getAsmString().trim().empty() && call.getHasSideEffects() &&
         call->getNumResults() == 1 && call->getNumOperands() == 1 &&
         (c == "=f,0" || c == "=r,0");
}

void Simulator::exec(Operation &op, const Mask &mask) {
  current = &op;
  // Constants and index casts are no instructions (immediates; index is i64).
  if (opCounts.enabled && !isa<arith::ConstantOp, arith::IndexCastOp>(op)) {
    ++opCounts.all;
    opCounts.schedule += opCounts.scheduleOp(&op);
  }
  if (isa<scf::IfOp, scf::ForOp, scf::WhileOp>(op))
    return execScf(op, mask);
  if (isa<NVVM::LdMatrixOp, NVVM::MmaOp, NVVM::ShflOp, NVVM::VoteSyncOp>(op))
    return execWarp(op, mask);
  auto call = dyn_cast<LLVM::InlineAsmOp>(op);
  if ((call && !isOperandFence(call)) ||
      isa<NVVM::FenceProxyOp, NVVM::WgmmaFenceAlignedOp, NVVM::WgmmaGroupSyncAlignedOp,
          NVVM::WgmmaWaitGroupSyncOp>(op))
    return execWarpgroup(op, mask);
  int64_t inflightGroup = -1;
  if (!inflight.empty()) {
    for (Value v : op.getOperands()) {
      auto it = inflight.find(v);
      if (it == inflight.end())
        continue;
      // Naming a field of the accumulators is no read (it stays in flight); anything
      // else is.
      if (!isa<LLVM::ExtractValueOp>(op))
        throw Failure{"simulator: " + op.getName().getStringRef().str() +
                      " reads a wgmma accumulator before wgmma.wait_group retires it"};
      inflightGroup = it->second;
    }
  }

  // Everything else is lane-wise.
  SmallVector<Col> outs;
  for (Value r : op.getResults())
    outs.push_back(make(r.getType()));
  Type resultType = op.getNumResults() ? op.getResult(0).getType() : Type();
  auto in = [&](unsigned i) -> Col & { return get(op.getOperand(i)); };

  auto intBinary = [&](auto fn) {
    unsigned w = widthOf(resultType);
    Col &x = in(0), &y = in(1);
    for (int l = 0; l < threads; ++l)
      if (mask[l])
        outs[0].at(l) = uint64_t(wrap(fn(int64_t(x.at(l)), int64_t(y.at(l)), w), w));
  };
  auto floatBinary = [&](auto fn) {
    Col &x = in(0), &y = in(1);
    for (int l = 0; l < threads; ++l)
      if (mask[l]) {
        if (resultType.isF64())
          outs[0].at(l) = dbits(fn(bitsd(x.at(l)), bitsd(y.at(l))));
        else
          outs[0].at(l) = fromFloat(resultType, fn(toFloat(resultType, x.at(l)),
                                                   toFloat(resultType, y.at(l))));
      }
  };
  auto floatUnary = [&](auto fn) {
    Col &x = in(0);
    for (int l = 0; l < threads; ++l)
      if (mask[l]) {
        if (resultType.isF64())
          outs[0].at(l) = dbits(fn(bitsd(x.at(l))));
        else
          outs[0].at(l) = fromFloat(resultType, float(fn(double(toFloat(resultType, x.at(l))))));
      }
  };
  // On the GPU, f32 transcendentals are PTX approximations: a kernel that still holds
  // one was not lowered (lowerMathToPtxApprox), and libm would hide what the device does.
  auto noF32Math = [&] {
    if (resultType.isF32())
      throw Failure{"simulator: f32 " + op.getName().getStringRef().str() +
                    " was not lowered to a PTX approximation (PtxMath.h)"};
  };
  auto umask = [](int64_t v, unsigned w) -> uint64_t {
    return w >= 64 ? uint64_t(v) : uint64_t(v) & ((uint64_t(1) << w) - 1);
  };

  bool handled = true;
  llvm::TypeSwitch<Operation *>(&op)
      .Case([&](arith::ConstantOp c) {
        uint64_t v = 0;
        if (auto ia = dyn_cast<IntegerAttr>(c.getValue()))
          v = ia.getType().isInteger(1) ? ia.getValue().getZExtValue()
                                        : uint64_t(ia.getValue().getSExtValue());
        else if (auto fa = dyn_cast<FloatAttr>(c.getValue()))
          v = fa.getType().isF64() ? dbits(fa.getValueAsDouble())
                                   : fromFloat(fa.getType(), float(fa.getValueAsDouble()));
        else
          throw Failure{"simulator: unsupported constant"};
        for (int l = 0; l < threads; ++l)
          outs[0].at(l) = v;
      })
      .Case([&](arith::AddIOp) { intBinary([](int64_t a, int64_t b, unsigned) { return int64_t(uint64_t(a) + uint64_t(b)); }); })
      .Case([&](arith::SubIOp) { intBinary([](int64_t a, int64_t b, unsigned) { return int64_t(uint64_t(a) - uint64_t(b)); }); })
      .Case([&](arith::MulIOp) { intBinary([](int64_t a, int64_t b, unsigned) { return int64_t(uint64_t(a) * uint64_t(b)); }); })
      .Case([&](arith::DivSIOp) { intBinary([](int64_t a, int64_t b, unsigned) { return b ? a / b : 0; }); })
      .Case([&](arith::RemSIOp) { intBinary([](int64_t a, int64_t b, unsigned) { return b ? a % b : 0; }); })
      .Case([&](arith::DivUIOp) {
        intBinary([&](int64_t a, int64_t b, unsigned w) {
          uint64_t ua = umask(a, w), ub = umask(b, w);
          return ub ? int64_t(ua / ub) : 0;
        });
      })
      .Case([&](arith::RemUIOp) {
        intBinary([&](int64_t a, int64_t b, unsigned w) {
          uint64_t ua = umask(a, w), ub = umask(b, w);
          return ub ? int64_t(ua % ub) : 0;
        });
      })
      .Case([&](arith::FloorDivSIOp) {
        intBinary([](int64_t a, int64_t b, unsigned) {
          if (!b)
            return int64_t(0);
          int64_t q = a / b, r = a % b;
          return (r != 0 && ((r < 0) != (b < 0))) ? q - 1 : q;
        });
      })
      .Case([&](arith::CeilDivSIOp) {
        intBinary([](int64_t a, int64_t b, unsigned) {
          if (!b)
            return int64_t(0);
          int64_t q = a / b, r = a % b;
          return (r != 0 && ((r < 0) == (b < 0))) ? q + 1 : q;
        });
      })
      .Case([&](arith::CeilDivUIOp) {
        intBinary([&](int64_t a, int64_t b, unsigned w) {
          uint64_t ua = umask(a, w), ub = umask(b, w);
          return ub ? int64_t((ua + ub - 1) / ub) : 0;
        });
      })
      .Case([&](arith::MinSIOp) { intBinary([](int64_t a, int64_t b, unsigned) { return std::min(a, b); }); })
      .Case([&](arith::MaxSIOp) { intBinary([](int64_t a, int64_t b, unsigned) { return std::max(a, b); }); })
      .Case([&](arith::MinUIOp) { intBinary([&](int64_t a, int64_t b, unsigned w) { return umask(a, w) < umask(b, w) ? a : b; }); })
      .Case([&](arith::MaxUIOp) { intBinary([&](int64_t a, int64_t b, unsigned w) { return umask(a, w) > umask(b, w) ? a : b; }); })
      .Case([&](arith::ShRUIOp) {
        intBinary([&](int64_t a, int64_t b, unsigned w) {
          return b >= int64_t(w) ? int64_t(0) : int64_t(umask(a, w) >> b);
        });
      })
      .Case([&](arith::ShLIOp) {
        intBinary([&](int64_t a, int64_t b, unsigned w) {
          return b >= int64_t(w) ? int64_t(0) : int64_t(uint64_t(a) << b);
        });
      })
      .Case([&](arith::AndIOp) { intBinary([](int64_t a, int64_t b, unsigned) { return a & b; }); })
      .Case([&](arith::OrIOp) { intBinary([](int64_t a, int64_t b, unsigned) { return a | b; }); })
      .Case([&](arith::XOrIOp) { intBinary([](int64_t a, int64_t b, unsigned) { return a ^ b; }); })
      .Case([&](arith::CmpIOp c) {
        unsigned w = widthOf(c.getLhs().getType());
        Col &x = in(0), &y = in(1);
        for (int l = 0; l < threads; ++l) {
          if (!mask[l])
            continue;
          int64_t a = int64_t(x.at(l)), b = int64_t(y.at(l));
          uint64_t ua = umask(a, w), ub = umask(b, w);
          bool r = false;
          switch (c.getPredicate()) {
          case arith::CmpIPredicate::eq: r = a == b; break;
          case arith::CmpIPredicate::ne: r = a != b; break;
          case arith::CmpIPredicate::slt: r = a < b; break;
          case arith::CmpIPredicate::sle: r = a <= b; break;
          case arith::CmpIPredicate::sgt: r = a > b; break;
          case arith::CmpIPredicate::sge: r = a >= b; break;
          case arith::CmpIPredicate::ult: r = ua < ub; break;
          case arith::CmpIPredicate::ule: r = ua <= ub; break;
          case arith::CmpIPredicate::ugt: r = ua > ub; break;
          case arith::CmpIPredicate::uge: r = ua >= ub; break;
          }
          outs[0].at(l) = r;
        }
      })
      .Case([&](arith::SelectOp s) {
        Col &c = in(0), &x = in(1), &y = in(2);
        for (int l = 0; l < threads; ++l)
          if (mask[l])
            for (unsigned k = 0; k < outs[0].f; ++k)
              outs[0].at(l, k) = (c.at(l) & 1) ? x.at(l, k) : y.at(l, k);
      })
      .Case([&](arith::ExtSIOp) {
        unsigned w = widthOf(op.getOperand(0).getType());
        for (int l = 0; l < threads; ++l)
          if (mask[l]) {
            int64_t v = int64_t(in(0).at(l));
            if (w == 1) // i1 is held as 0/1; sign extension makes true -1
              v = (v & 1) ? -1 : 0;
            outs[0].at(l) = uint64_t(wrap(v, widthOf(resultType)));
          }
      })
      .Case([&](arith::ExtUIOp) {
        unsigned w = widthOf(op.getOperand(0).getType());
        for (int l = 0; l < threads; ++l)
          if (mask[l])
            outs[0].at(l) = umask(int64_t(in(0).at(l)), w);
      })
      .Case([&](arith::TruncIOp) {
        for (int l = 0; l < threads; ++l)
          if (mask[l])
            outs[0].at(l) = uint64_t(wrap(int64_t(in(0).at(l)), widthOf(resultType)));
      })
      .Case([&](arith::IndexCastOp) {
        for (int l = 0; l < threads; ++l)
          if (mask[l])
            outs[0].at(l) = uint64_t(wrap(int64_t(in(0).at(l)), widthOf(resultType)));
      })
      .Case([&](arith::SIToFPOp) {
        for (int l = 0; l < threads; ++l)
          if (mask[l]) {
            int64_t v = int64_t(in(0).at(l));
            outs[0].at(l) = resultType.isF64() ? dbits(double(v)) : fromFloat(resultType, float(v));
          }
      })
      .Case([&](arith::FPToSIOp) {
        Type t = op.getOperand(0).getType();
        for (int l = 0; l < threads; ++l)
          if (mask[l]) {
            double v = t.isF64() ? bitsd(in(0).at(l)) : double(toFloat(t, in(0).at(l)));
            outs[0].at(l) = uint64_t(wrap(std::isfinite(v) ? int64_t(v) : 0, widthOf(resultType)));
          }
      })
      .Case([&](arith::ExtFOp) {
        Type t = op.getOperand(0).getType();
        for (int l = 0; l < threads; ++l)
          if (mask[l]) {
            double v = t.isF64() ? bitsd(in(0).at(l)) : double(toFloat(t, in(0).at(l)));
            outs[0].at(l) = resultType.isF64() ? dbits(v) : fromFloat(resultType, float(v));
          }
      })
      .Case([&](arith::TruncFOp) {
        Type t = op.getOperand(0).getType();
        for (int l = 0; l < threads; ++l)
          if (mask[l]) {
            double v = t.isF64() ? bitsd(in(0).at(l)) : double(toFloat(t, in(0).at(l)));
            // Two roundings (f64 -> f32 -> 16 bits) only where the source is f64.
            outs[0].at(l) = fromFloat(resultType, float(v));
          }
      })
      .Case([&](arith::AddFOp) { floatBinary([](auto a, auto b) { return a + b; }); })
      .Case([&](arith::SubFOp) { floatBinary([](auto a, auto b) { return a - b; }); })
      .Case([&](arith::MulFOp) { floatBinary([](auto a, auto b) { return a * b; }); })
      .Case([&](arith::DivFOp) { floatBinary([](auto a, auto b) { return a / b; }); })
      .Case([&](arith::MaximumFOp) {
        floatBinary([](auto a, auto b) { return (std::isnan(a) || std::isnan(b)) ? NAN : std::max(a, b); });
      })
      .Case([&](arith::MinimumFOp) {
        floatBinary([](auto a, auto b) { return (std::isnan(a) || std::isnan(b)) ? NAN : std::min(a, b); });
      })
      .Case([&](arith::NegFOp) { floatUnary([](double a) { return -a; }); })
      // maxnum/minnum (PTX max.f32/min.f32): a NaN operand yields the other one.
      .Case([&](arith::MaxNumFOp) {
        floatBinary([](auto a, auto b) { return std::isnan(a) ? b : std::isnan(b) ? a : std::max(a, b); });
      })
      .Case([&](arith::MinNumFOp) {
        floatBinary([](auto a, auto b) { return std::isnan(a) ? b : std::isnan(b) ? a : std::min(a, b); });
      })
      .Case([&](arith::CmpFOp c) {
        Type t = c.getLhs().getType();
        Col &x = in(0), &y = in(1);
        for (int l = 0; l < threads; ++l) {
          if (!mask[l])
            continue;
          double a = t.isF64() ? bitsd(x.at(l)) : toFloat(t, x.at(l));
          double b = t.isF64() ? bitsd(y.at(l)) : toFloat(t, y.at(l));
          bool uno = std::isnan(a) || std::isnan(b), r = false;
          using F = arith::CmpFPredicate;
          switch (c.getPredicate()) {
          case F::OEQ: r = !uno && a == b; break;
          case F::ONE: r = !uno && a != b; break;
          case F::OLT: r = !uno && a < b; break;
          case F::OLE: r = !uno && a <= b; break;
          case F::OGT: r = !uno && a > b; break;
          case F::OGE: r = !uno && a >= b; break;
          case F::UNE: r = uno || a != b; break;
          case F::UEQ: r = uno || a == b; break;
          case F::ULT: r = uno || a < b; break;
          case F::ULE: r = uno || a <= b; break;
          case F::UGT: r = uno || a > b; break;
          case F::UGE: r = uno || a >= b; break;
          case F::ORD: r = !uno; break;
          case F::UNO: r = uno; break;
          case F::AlwaysTrue: r = true; break;
          case F::AlwaysFalse: r = false; break;
          }
          outs[0].at(l) = r;
        }
      })
      .Case([&](math::FmaOp) {
        // One rounding, as fma.rn.f32: the f32 product is exact in double.
        Col &x = in(0), &y = in(1), &z = in(2);
        for (int l = 0; l < threads; ++l)
          if (mask[l]) {
            if (resultType.isF64()) {
              outs[0].at(l) = dbits(std::fma(bitsd(x.at(l)), bitsd(y.at(l)), bitsd(z.at(l))));
            } else {
              double r = std::fma(double(toFloat(resultType, x.at(l))),
                                  double(toFloat(resultType, y.at(l))),
                                  double(toFloat(resultType, z.at(l))));
              outs[0].at(l) = fromFloat(resultType, float(r));
            }
          }
      })
      // f32 ones were lowered to PTX approximations (below); other types as libm.
      .Case([&](math::ExpOp) { noF32Math(); floatUnary([](double a) { return std::exp(a); }); })
      .Case([&](math::Exp2Op) { noF32Math(); floatUnary([](double a) { return std::exp2(a); }); })
      .Case([&](math::LogOp) { noF32Math(); floatUnary([](double a) { return std::log(a); }); })
      .Case([&](math::Log2Op) { noF32Math(); floatUnary([](double a) { return std::log2(a); }); })
      .Case([&](math::TanhOp) { noF32Math(); floatUnary([](double a) { return std::tanh(a); }); })
      .Case([&](math::SinOp) { noF32Math(); floatUnary([](double a) { return std::sin(a); }); })
      .Case([&](math::CosOp) { noF32Math(); floatUnary([](double a) { return std::cos(a); }); })
      .Case([&](LLVM::CallIntrinsicOp call) {
        StringRef name = call.getIntrin();
        float (*f)(float) = name == ptx::kEx2   ? ptxmath::ex2
                            : name == ptx::kLg2 ? ptxmath::lg2
                            : name == ptx::kSin ? ptxmath::sin
                            : name == ptx::kCos ? ptxmath::cos
                                                : nullptr;
        if (!f)
          throw Failure{"simulator: unsupported intrinsic " + name.str()};
        Col &x = in(0);
        for (int l = 0; l < threads; ++l)
          if (mask[l])
            outs[0].at(l) = fbits(f(bitsf(x.at(l))));
      })
      .Case([&](math::FloorOp) { floatUnary([](double a) { return std::floor(a); }); })
      .Case([&](math::CeilOp) { floatUnary([](double a) { return std::ceil(a); }); })
      .Case([&](math::SqrtOp) { floatUnary([](double a) { return std::sqrt(a); }); })
      .Case([&](math::AbsFOp) { floatUnary([](double a) { return std::fabs(a); }); })
      .Case([&](math::AbsIOp) {
        for (int l = 0; l < threads; ++l)
          if (mask[l]) {
            int64_t v = int64_t(in(0).at(l));
            outs[0].at(l) = uint64_t(wrap(v < 0 ? int64_t(0 - uint64_t(v)) : v, widthOf(resultType)));
          }
      })
      .Case([&](NVVM::ThreadIdXOp) {
        for (int l = 0; l < threads; ++l)
          outs[0].at(l) = uint64_t(l);
      })
      .Case([&](NVVM::BlockIdXOp) {
        for (int l = 0; l < threads; ++l)
          outs[0].at(l) = uint64_t(ctaid[0]);
      })
      .Case([&](NVVM::BlockIdYOp) {
        for (int l = 0; l < threads; ++l)
          outs[0].at(l) = uint64_t(ctaid[1]);
      })
      .Case([&](NVVM::BlockIdZOp) {
        for (int l = 0; l < threads; ++l)
          outs[0].at(l) = uint64_t(ctaid[2]);
      })
      .Case([&](NVVM::Barrier0Op) {
        for (int l = 0; l < threads; ++l)
          if (!mask[l])
            throw Failure{"simulator: barrier reached by part of the CTA"};
        ++epoch;
      })
      .Case([&](NVVM::CpAsyncOp c) {
        unsigned size = c.getSize();
        for (int l = 0; l < threads; ++l)
          if (mask[l]) {
            unsigned srcBytes = c.getCpSize() ? unsigned(get(c.getCpSize()).at(l)) : size;
            if (srcBytes > size)
              throw Failure{"simulator: cp.async src-size " + std::to_string(srcBytes) +
                            " exceeds its cp-size " + std::to_string(size)};
            uint64_t dst = get(c.getDst()).at(l), src = get(c.getSrc()).at(l);
            // Both addresses aligned to cp-size; only the src-size bytes are read.
            checkAlign(dst, size, l);
            checkAlign(src, size, l);
            if (srcBytes > 0) {
              if (src == 0)
                throw Failure{"simulator: cp.async from a null pointer"};
              checkGlobal(c.getSrc(), src, srcBytes, l, false, 1);
            }
            // The copy writes its destination at some time before the wait that lands
            // it: from now on any access to those bytes is a race.
            if (dst >= kSmemStart && dst + size <= smem.size())
              for (unsigned k = 0; k < size; ++k)
                if (copyIssuer[dst + k] >= 0)
                  throw Failure{"simulator: shared-memory race: cp.async by thread " +
                                std::to_string(l) + " into shared byte " +
                                std::to_string(dst + k - kSmemStart) +
                                " while the cp.async that thread " +
                                std::to_string(copyIssuer[dst + k]) +
                                " issued into it is in flight"};
            checkShared(dst, size, l, true);
            for (unsigned k = 0; k < size; ++k)
              copyIssuer[dst + k] = l;
            pending[l].push_back({dst, reinterpret_cast<const uint8_t *>(uintptr_t(src)), size,
                                  srcBytes});
          }
      })
      .Case([&](NVVM::CpAsyncCommitGroupOp) {
        for (int l = 0; l < threads; ++l)
          if (mask[l]) {
            groups[l].push_back(std::move(pending[l]));
            pending[l].clear();
          }
      })
      .Case([&](NVVM::CpAsyncWaitGroupOp w) {
        for (int l = 0; l < threads; ++l)
          if (mask[l])
            landGroups(l, w.getN());
      })
      // An operand fence (empty asm, "=f,0"): the value unchanged. It reads its
      // operand, so one on an accumulator still in flight fails above.
      .Case([&](LLVM::InlineAsmOp) {
        for (int l = 0; l < threads; ++l)
          if (mask[l])
            outs[0].at(l) = in(0).at(l);
      })
      .Case([&](LLVM::UndefOp) {})
      .Case([&](LLVM::ZeroOp) {})
      .Case([&](LLVM::AddressOfOp a) {
        std::string name = a.getGlobalName().str();
        uint64_t addr = kSmemStart;
        if (name != "attn_smem") {
          auto global = module.lookupSymbol<LLVM::GlobalOp>(name);
          if (!global) {
            for (auto gm : module.getOps<gpu::GPUModuleOp>())
              if (!global)
                global = gm.lookupSymbol<LLVM::GlobalOp>(name);
          }
          if (!global)
            throw Failure{"simulator: unknown global @" + name};
          auto &bytes = globals[name];
          if (bytes.empty()) {
            auto dense = cast<DenseElementsAttr>(*global.getValue());
            for (double v : dense.getValues<double>()) {
              uint8_t tmp[8];
              std::memcpy(tmp, &v, 8);
              bytes.insert(bytes.end(), tmp, tmp + 8);
            }
          }
          addr = uint64_t(reinterpret_cast<uintptr_t>(bytes.data()));
          auto [it, fresh] = globalRegions.try_emplace(name, int(regions.size()));
          if (fresh)
            regions.push_back({addr, int64_t(bytes.size()), "@" + name});
          regionCache[a.getResult()] = it->second;
        }
        for (int l = 0; l < threads; ++l)
          outs[0].at(l) = addr;
      })
      .Case([&](LLVM::GEPOp g) {
        unsigned size = byteSize(g.getElemType());
        auto indices = g.getIndices();
        Col &base = get(g.getBase());
        SmallVector<Col *> dyn;
        for (Value v : g.getDynamicIndices())
          dyn.push_back(&get(v));
        for (int l = 0; l < threads; ++l) {
          if (!mask[l])
            continue;
          int64_t idx = 0;
          unsigned d = 0;
          for (auto i : indices) {
            if (auto v = llvm::dyn_cast_if_present<Value>(i))
              idx = int64_t(dyn[d++]->at(l));
            else
              idx = cast<IntegerAttr>(i).getInt();
          }
          outs[0].at(l) = base.at(l) + uint64_t(idx * int64_t(size));
        }
      })
      .Case([&](LLVM::PtrToIntOp) {
        for (int l = 0; l < threads; ++l)
          if (mask[l])
            outs[0].at(l) = uint64_t(wrap(int64_t(in(0).at(l)), widthOf(resultType)));
      })
      .Case([&](LLVM::AddrSpaceCastOp) {
        for (int l = 0; l < threads; ++l)
          if (mask[l])
            outs[0].at(l) = in(0).at(l);
      })
      .Case([&](LLVM::LoadOp ld) {
        unsigned n = byteSize(ld.getType());
        unsigned align = unsigned(ld.getAlignment().value_or(naturalAlign(ld.getType())));
        for (int l = 0; l < threads; ++l)
          if (mask[l]) {
            uint8_t buf[64];
            loadBytes(ld.getAddr(), in(0).at(l), buf, n, l, align, eltBytesOf(ld.getType()));
            decode(ld.getType(), buf, outs[0], l);
          }
      })
      .Case([&](LLVM::StoreOp st) {
        Type t = st.getValue().getType();
        unsigned n = byteSize(t);
        unsigned align = unsigned(st.getAlignment().value_or(naturalAlign(t)));
        for (int l = 0; l < threads; ++l)
          if (mask[l]) {
            uint8_t buf[64];
            encode(t, get(st.getValue()), l, buf);
            storeBytes(st.getAddr(), get(st.getAddr()).at(l), buf, n, l, align, eltBytesOf(t));
          }
      })
      .Case([&](LLVM::BitcastOp bc) {
        Type from = bc.getArg().getType(), to = bc.getType();
        for (int l = 0; l < threads; ++l)
          if (mask[l]) {
            uint8_t buf[16] = {0};
            encode(from, in(0), l, buf);
            decode(to, buf, outs[0], l);
          }
      })
      .Case([&](LLVM::ExtractElementOp ee) {
        for (int l = 0; l < threads; ++l)
          if (mask[l])
            outs[0].at(l) = get(ee.getVector()).at(l, unsigned(get(ee.getPosition()).at(l)));
      })
      .Case([&](NVVM::BarrierOp bar) {
        // bar.sync 0 over the whole CTA, optionally reducing a predicate (bar.red).
        if (bar.getBarrierId() || bar.getNumberOfThreads())
          throw Failure{"simulator: only the CTA-wide barrier 0 is modelled"};
        for (int l = 0; l < threads; ++l)
          if (!mask[l])
            throw Failure{"simulator: barrier reached by part of the CTA"};
        ++epoch;
        if (!bar.getReductionOp())
          return;
        Col &pred = get(bar.getReductionPredicate());
        int64_t count = 0;
        for (int l = 0; l < threads; ++l)
          count += uint32_t(pred.at(l)) != 0 ? 1 : 0;
        int64_t r = 0;
        switch (*bar.getReductionOp()) {
        case NVVM::BarrierReduction::OR:
          r = count > 0;
          break;
        case NVVM::BarrierReduction::AND:
          r = count == threads;
          break;
        case NVVM::BarrierReduction::POPC:
          r = count;
          break;
        }
        for (int l = 0; l < threads; ++l)
          outs[0].at(l) = uint64_t(r);
      })
      .Case([&](LLVM::InsertElementOp ie) {
        for (int l = 0; l < threads; ++l)
          if (mask[l]) {
            for (unsigned k = 0; k < outs[0].f; ++k)
              outs[0].at(l, k) = get(ie.getVector()).at(l, k);
            outs[0].at(l, unsigned(get(ie.getPosition()).at(l))) = get(ie.getValue()).at(l);
          }
      })
      .Case([&](LLVM::ExtractValueOp ev) {
        auto [off, t] = fieldAt(ev.getContainer().getType(), ev.getPosition());
        for (int l = 0; l < threads; ++l)
          if (mask[l])
            for (unsigned k = 0; k < outs[0].f; ++k)
              outs[0].at(l, k) = get(ev.getContainer()).at(l, off + k);
      })
      .Case([&](LLVM::InsertValueOp iv) {
        auto [off, t] = fieldAt(iv.getContainer().getType(), iv.getPosition());
        unsigned n = fieldsOf(t);
        for (int l = 0; l < threads; ++l)
          if (mask[l]) {
            for (unsigned k = 0; k < outs[0].f; ++k)
              outs[0].at(l, k) = get(iv.getContainer()).at(l, k);
            for (unsigned k = 0; k < n; ++k)
              outs[0].at(l, off + k) = get(iv.getValue()).at(l, k);
          }
      })
      .Case([&](LLVM::ICmpOp c) {
        for (int l = 0; l < threads; ++l)
          if (mask[l]) {
            bool eq = in(0).at(l) == in(1).at(l);
            outs[0].at(l) = c.getPredicate() == LLVM::ICmpPredicate::ne ? !eq : eq;
          }
      })
      .Case([&](UnrealizedConversionCastOp) {
        for (int l = 0; l < threads; ++l)
          if (mask[l])
            for (unsigned k = 0; k < outs[0].f; ++k)
              outs[0].at(l, k) = in(0).at(l, k);
      })
      .Case([&](memref::DimOp dim) {
        auto type = cast<MemRefType>(dim.getSource().getType());
        for (int l = 0; l < threads; ++l)
          if (mask[l]) {
            int64_t d = int64_t(get(dim.getIndex()).at(l));
            outs[0].at(l) = type.isDynamicDim(d) ? in(0).at(l, 3 + unsigned(d))
                                                 : uint64_t(type.getDimSize(d));
          }
      })
      .Case([&](memref::LoadOp ld) {
        auto type = cast<MemRefType>(ld.getMemRef().getType());
        int64_t rank = type.getRank();
        unsigned size = byteSize(type.getElementType());
        for (int l = 0; l < threads; ++l)
          if (mask[l]) {
            Col &desc = get(ld.getMemRef());
            int64_t offset = int64_t(desc.at(l, 2));
            uint64_t base = desc.at(l, 1);
            int r = kUnknown;
            for (size_t g = 0; g < regions.size() && r == kUnknown; ++g)
              if (regions[g].base == base)
                r = int(g);
            std::string tensor = r >= 0 ? "tensor '" + regions[size_t(r)].name + "'" : "a memref";
            for (int64_t i = 0; i < rank; ++i) {
              int64_t idx = int64_t(get(ld.getIndices()[i]).at(l)), dim = int64_t(desc.at(l, unsigned(3 + i)));
              if (idx < 0 || idx >= dim)
                throw Failure{"simulator: memref.load (thread " + std::to_string(l) +
                              ") index " + std::to_string(idx) + " of dimension " +
                              std::to_string(i) + " is outside " + tensor + " (size " +
                              std::to_string(dim) + ")"};
              offset += idx * int64_t(desc.at(l, unsigned(3 + rank + i)));
            }
            if (r >= 0 && (offset < 0 || uint64_t(offset + 1) * size > uint64_t(regions[size_t(r)].bytes)))
              throw Failure{"simulator: memref.load (thread " + std::to_string(l) + ") element " +
                            std::to_string(offset) + " is outside " + tensor + ", which holds " +
                            std::to_string(regions[size_t(r)].bytes / size) + " elements"};
            uint8_t buf[8];
            std::memcpy(buf, reinterpret_cast<const uint8_t *>(uintptr_t(base)) + offset * size, size);
            decode(type.getElementType(), buf, outs[0], l);
          }
      })
      .Default([&](Operation *) { handled = false; });
  if (!handled)
    throw Failure{"simulator: unsupported op " + op.getName().getStringRef().str()};
  for (auto [r, c] : llvm::zip(op.getResults(), outs))
    vals[r] = std::move(c);
  if (inflightGroup >= 0)
    inflight[op.getResult(0)] = inflightGroup;
}

} // namespace


bool simulateKernel(ModuleOp module, const std::string &symbol, std::array<int64_t, 3> grid,
                    int64_t threads, int64_t smemBytes, const std::vector<SimArg> &args,
                    std::string &error) {
  gpu::GPUFuncOp func;
  module.walk([&](gpu::GPUFuncOp f) {
    if (f.getName() == symbol)
      func = f;
  });
  if (!func) {
    error = "simulator: no kernel @" + symbol;
    return false;
  }
  if (func.getBody().front().getNumArguments() != args.size()) {
    error = "simulator: wrong number of kernel arguments";
    return false;
  }
  // Profiling (bench/schedule_share.py): ATTUNE_SIM_OP_COUNTS=FILE appends a line
  // "symbol ctas all schedule" per launch; ATTUNE_SIM_SAMPLE_X=k then simulates only
  // the CTAs with blockIdx.x % k == 0 (the other CTAs' outputs are left unwritten:
  // for counting only).
  const char *countsFile = std::getenv("ATTUNE_SIM_OP_COUNTS");
  int64_t sample = 1;
  if (const char *k = std::getenv("ATTUNE_SIM_SAMPLE_X"); k && countsFile)
    sample = std::max<int64_t>(1, std::atoll(k));
  opCounts = OpCounts();
  opCounts.enabled = countsFile != nullptr;
  try {
    for (int64_t z = 0; z < grid[2]; ++z)
      for (int64_t y = 0; y < grid[1]; ++y)
        for (int64_t x = 0; x < grid[0]; x += sample) {
          Simulator sim(module, int(threads), smemBytes, {x, y, z});
          sim.run(func, args);
          ++opCounts.ctas;
        }
  } catch (const Failure &f) {
    error = f.message;
    return false;
  }
  if (countsFile) {
    if (FILE *f = std::fopen(countsFile, "a")) {
      std::fprintf(f, "%s %lld %lld %lld\n", symbol.c_str(), (long long)opCounts.ctas,
                   (long long)opCounts.all, (long long)opCounts.schedule);
      std::fclose(f);
    }
  }
  return true;
}

} // namespace attune
