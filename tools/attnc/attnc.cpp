//===- attnc.cpp - the Attune compiler driver -----------------------------===//
//
//   attnc explain SPEC      the IR and what the mask and score mean
//   attnc run SPEC ...      run a spec on .npy inputs with a back end
//   attnc compile SPEC ...  a kernel bundle (PTX, cubins, manifest)
//   attnc tune SPEC ...     autotune the spec's bundle on this machine's GPU (or gpu-sim)
//   attnc hash SPEC         the spec hash bundles and caches are keyed by
//
//===----------------------------------------------------------------------===//
#include "tools/attnc/Driver.h"

#include "llvm/Support/raw_ostream.h"

#include <cstring>
#include <exception>

#ifndef ATTUNE_VERSION_STRING
#define ATTUNE_VERSION_STRING "0.2.0"
#endif

using namespace attune::attnc;

static const char *kUsage = R"(usage: attnc <command> [options]

commands:
  explain SPEC [--seq-q N --seq-kv N]
      print the spec's attn IR and a summary of its mask and score
  import SPEC [-o OUT.mlir] [--dtype bf16|fp16|f32]
      print the spec as attn L1 IR
  run SPEC --backend reference|cpu|gpu-sim|gpu --q Q.npy --k K.npy --v V.npy --out O.npy
          [--input NAME=FILE.npy ...] [--q-offset N] [--kv-offset N] [--lse LSE.npy]
          [--block-m N --block-n N [--pack-gqa] [--wgmma] [--num-splits N]] [--timing]
          [--layout bhsd|bshd] [--pad N]   (gpu-sim)
          [--bundle DIR | --arch A --configs BMxBN,...] [--variant NAME]   (gpu)
      run SPEC on float32 .npy tensors (int32 for integer inputs): `reference` is
      the float64 oracle, `cpu` the tiled program JIT-compiled for this machine,
      `gpu-sim` the NVIDIA kernel run by a functional SIMT simulator (no GPU needed),
      `gpu` the kernel bundle on this machine's GPU through the runtime (the bundle
      comes from the cache, compiled for the GPU on first use, or from --bundle;
      q, k, v are stored in the spec's dtype, o is read back as float32);
      for gpu-sim, --layout bshd stores q, k, v and o sequence-major ([B, S, H, D]
      memory, as a transposed torch tensor: non-contiguous strides) and --pad N adds
      N elements after every row, head and batch (odd strides; the kernels need
      16-byte aligned rows, so N % 8 != 0 is refused by the simulator as on the GPU)
  compile SPEC (-o DIR | --cache [-o DIR]) [--arch sm_80,sm_90a] [--configs 64x64,64x64g,...]
          [--no-ptxas]
      compile SPEC to a kernel bundle: manifest.json, PTX per variant, and cubins
      with ptxas's register/spill report when ptxas is available; with --cache the
      bundle lives in the user's cache ($ATTUNE_CACHE_DIR, $XDG_CACHE_HOME/attune or
      ~/.cache/attune) and a second call for the same spec compiles nothing;
      a config is BMxBN (query rows x keys per tile), with a trailing g for one CTA
      per kv head holding the rows of all its query heads (GQA packing) and w for
      sm_90a's wgmma (block_m 64 or 128; sm_90a only, dropped for other archs);
      `default` in the list stands for the default configs (default,128x64w)
  compile SPEC --emit gpu-ir|ptx [--arch A] [--configs BMxBN]
      print the first variant's kernel IR (before LLVM) or PTX
  tune SPEC --seq-q N [--seq-kv N] [--batch N] [--input NAME=FILE.npy ...]
          [--bundle DIR | --arch A --configs BMxBN,...] [--repeats N] [--force]
          [--backend gpu|gpu-sim] [--seed N]
      run the default variant of the spec's bundle on random q, k, v of that shape
      (extra inputs from files), then every other variant, in a child process; keep
      those whose output agrees with the default's and time them, show the table
      (with why each other variant was dropped), and store the fastest in the
      tuning database (later launches in that shape bucket use it); an existing
      choice is kept unless --force. gpu-sim tunes the simulator's kernels
  hash SPEC
      print the spec hash (sha256 of its canonical JSON)

SPEC is a JSON spec (specs/attn-spec.schema.json) or attn IR (.mlir).
)";

int main(int argc, char **argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    llvm::outs() << kUsage;
    return argc < 2 ? 2 : 0;
  }
  std::string cmd = argv[1];
  if (cmd == "--version" || cmd == "version") {
    llvm::outs() << "attnc " ATTUNE_VERSION_STRING "\n";
    return 0;
  }
  try {
    if (cmd == "explain")
      return cmdExplain(argc, argv);
    if (cmd == "import")
      return cmdImport(argc, argv);
    if (cmd == "run")
      return cmdRun(argc, argv);
    if (cmd == "compile")
      return cmdCompile(argc, argv);
    if (cmd == "tune")
      return cmdTune(argc, argv);
    if (cmd == "hash")
      return cmdHash(argc, argv);
    throw Failure{"unknown command '" + cmd +
                      "' (expected explain, import, run, compile, tune or hash)", 2};
  } catch (const Failure &f) {
    llvm::errs() << "attnc " << cmd << ": error: " << f.message << "\n";
    return f.code;
  } catch (const std::exception &e) {
    llvm::errs() << "attnc " << cmd << ": error: " << e.what() << "\n";
    return 1;
  }
}
