//===- FuzzSupport.h - what the libFuzzer targets share ---------*- C++ -*-===//
//
// A target turns a bad input into a clean error and returns 0; anything else (a crash,
// a sanitizer report, an exception nobody documented, a broken invariant checked with
// FUZZ_CHECK) is a finding. FUZZ_CHECK aborts with a message so that libFuzzer saves
// the input as crash-<sha1> and prints its path.
//
//===----------------------------------------------------------------------===//
#ifndef ATTUNE_FUZZ_FUZZSUPPORT_H
#define ATTUNE_FUZZ_FUZZSUPPORT_H

#include <cstdio>
#include <cstdlib>
#include <string>

// Each target is one translation unit including this header, so this is defined once
// per executable. LLVM's BumpPtrAllocator poisons the slabs it takes when compiled with
// ASan, and unpoisons what it hands out: code inlined from LLVM's headers into our
// instrumented objects does both, the same allocator's code inside the uninstrumented
// libLLVM/libMLIR does neither, so memory MLIR allocated from a slab our code took reads
// as poisoned ("use-after-poison" in attribute and type storage). Without user
// poisoning, ASan still checks everything else.
extern "C" const char *__asan_default_options() { return "allow_user_poisoning=0"; }

#define FUZZ_CHECK(cond, ...)                                                           \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "fuzz invariant broken at %s:%d: %s\n", __FILE__, __LINE__,  \
                   #cond);                                                              \
      std::fprintf(stderr, __VA_ARGS__);                                                \
      std::fputc('\n', stderr);                                                         \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)

#endif
