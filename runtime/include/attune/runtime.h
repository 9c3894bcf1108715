/*===- attune/runtime.h - the Attune runtime's C API ----------------------===*
 *
 * Loads kernel bundles written by `attnc compile`, checks a call's tensors against
 * the bundle, and launches (or autotunes) its kernels through the CUDA driver, which
 * is loaded at run time (libcuda.so.1; no link-time CUDA dependency). The contract is
 * docs/bundle-and-abi.md; sections 1-5 of it are cited below as [ABI n].
 *
 * Conventions
 *   - Functions returning int return 0 on success and non-zero on failure; the message
 *     is then available from attn_last_error() (thread-local, valid until the next
 *     failing call on the same thread).
 *   - Tensor shapes and strides are in elements. Layouts [ABI 2]: q [B, Hq, Sq, D],
 *     k [B, Hkv, Skv, D], v [B, Hkv, Skv, Dv], o [B, Hq, Sq, Dv] (q's dtype),
 *     lse [B, Hq, Sq] float32 contiguous. The last dimension must have stride 1; other
 *     strides are passed to the kernel. Extra inputs must be contiguous row-major.
 *   - Arguments are checked completely before anything touches the device.
 *   - Strings returned as `const char *` are owned by the runtime (by the bundle, or
 *     thread-local storage where stated).
 *
 * The functions of [ABI 3]:
 *   attn_bundle_load, attn_bundle_free, attn_launch, attn_tune, attn_last_error
 * Additions (this file documents them where they are declared):
 *   attn_version, attn_check, attn_select_variant, attn_tuned_variant,
 *   attn_bundle_num_variants, attn_bundle_variant_name, attn_bundle_info_json,
 *   attn_device_info, attn_spec_hash, attn_canonical_json, attn_bundle_cache_key,
 *   attn_cache_root, attn_backward, attn_bundle_num_host_variants,
 *   attn_bundle_host_variant_name
 *===----------------------------------------------------------------------===*/
#ifndef ATTUNE_RUNTIME_H
#define ATTUNE_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define ATTN_API __declspec(dllexport)
#else
#define ATTN_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct attn_bundle attn_bundle;

typedef enum { ATTN_BF16 = 0, ATTN_FP16 = 1, ATTN_F32 = 2, ATTN_I32 = 3 } attn_dtype;

typedef struct {
  void *data;         /* device pointer of the first element */
  int32_t dtype;      /* an attn_dtype; a plain int so that a bad code is an error, not UB */
  int32_t ndim;       /* 0..8 */
  int64_t shape[8];
  int64_t strides[8]; /* in elements */
} attn_tensor;

/* Where a call's tensors live and what runs them. */
typedef enum { ATTN_DEVICE_CUDA = 0, ATTN_DEVICE_HOST = 1 } attn_device;

typedef struct {
  attn_tensor q, k, v, o;
  attn_tensor lse;    /* lse.data == NULL: no lse wanted */
  int32_t num_inputs; /* extra tensors of the bundle's "inputs", by name, any order */
  const char *const *input_names;
  const attn_tensor *inputs;
  int32_t has_q_offset;
  int64_t q_offset;   /* used when has_q_offset; else the default of [ABI 2] */
  int32_t has_kv_offset;
  int64_t kv_offset;
  void *stream;       /* CUstream; NULL = the default stream */
  const char *variant; /* NULL: the tuned choice (none with $ATTUNE_TUNE=0), else the
                          default; a name forces one */
  int32_t num_splits;  /* split-KV: 0 = the runtime's choice (split when the grid would
                          leave SMs idle: decoding, short chunks), 1 = never, N = N */
  int32_t device;      /* an attn_device. ATTN_DEVICE_CUDA: device pointers, a GPU variant
                          runs. ATTN_DEVICE_HOST: host pointers, the bundle's host variant
                          (attnc compile --arch host) runs on this machine's CPU,
                          synchronously; q, k, v, o may then be f32 or the bundle's
                          dtype (all four alike; the kernels compute in f32), lse may be
                          asked for with softmax even when the spec's outputs lack it,
                          `variant` names a host variant, stream and num_splits are
                          ignored, and no tuning happens. */
  int32_t num_threads; /* host: threads (0 = $ATTUNE_NUM_THREADS, else the cores) */
  /* Per-sequence arguments (docs/bundle-and-abi.md "Storage"): int32 tensors in the
     call's memory (device memory for a GPU call), data == NULL when absent.
     cu_seqlens_q [B + 1] with ragged q [total_q, Hq, D] (o [total_q, Hq, Dv], lse
     [total_q, Hq]); cu_seqlens_kv [B + 1] with ragged k/v [total_kv, Hkv, D];
     page_table [B, max_pages] and kv_lens [B] with a paged cache k/v [pages,
     page_size, Hkv, D]; q_lens / kv_lens [B] with padded buffers (right-padded
     batches: rows past q_lens[b] get o = 0, lse = -inf). The storage itself is the
     spec's ("storage"). Every sequence is an attention of its own lengths,
     bottom-right aligned per sequence unless an offset is given. A host call's
     arrays are all checked. A GPU call's are device memory: the host copies and
     checks the lengths only when the grid needs them (ragged q without max_seqlen_q,
     ragged or paged kv without max_seqlen_kv: a synchronisation, which a CUDA graph
     cannot capture), never the page table unless validating; the kernels clamp
     every length to its buffer and mask a page outside the cache (never read). */
  attn_tensor cu_seqlens_q, cu_seqlens_kv, page_table, kv_lens, q_lens;
  int32_t validate; /* 1: the host checks every sequence argument of a GPU call too
                       (downloading them first), page ids included; the error names
                       the array, the batch index and the value. */
  int64_t max_seqlen_q, max_seqlen_kv; /* bounds on every sequence's q / kv length
                       (0: not given), as flash_attn_varlen's max_seqlen: with them a
                       GPU call reads nothing from the sequence arrays (the grid
                       covers max_seqlen_q rows per sequence; rows of a longer one
                       past it are not computed). Checked wherever the lengths are
                       read. */
} attn_call;

/* The backward of a call (the host variant's backward kernel; GPU backward kernels
 * are not built yet): given the forward's arguments and outputs and dO (and dlse),
 * the gradients. fwd.o and fwd.lse are the forward's outputs, read; fwd.lse is
 * required for softmax. Gradients of float extra inputs are computed for the names
 * in grad_names (f32, contiguous, the input's shape); the others are not returned.
 * dq, dk, dv are q's, k's and v's shapes in q's dtype. Deterministic: the same
 * arguments give bitwise the same gradients for every thread count. */
typedef struct {
  attn_call fwd;
  attn_tensor dout;    /* dO: o's shape and dtype */
  attn_tensor dlse;    /* dlse [B, Hq, Sq] f32; dlse.data == NULL: zero */
  attn_tensor dq, dk, dv;
  int32_t num_grads;
  const char *const *grad_names;
  const attn_tensor *grads;
} attn_backward_call;

ATTN_API int attn_backward(attn_bundle *bundle, const attn_backward_call *call);

/* Loads and validates <dir>/manifest.json ([ABI 1]); the PTX/cubin files are read
 * when a variant is first used. 0 on success (*out set), else *out = NULL. */
ATTN_API int attn_bundle_load(const char *dir, attn_bundle **out);
ATTN_API void attn_bundle_free(attn_bundle *bundle);

/* Checks the call, picks a variant (forced, tuned, or default for the device) and
 * launches it on call->stream. Asynchronous like any kernel launch. A call with no
 * work (B, Hq or Sq zero) launches nothing and succeeds. */
ATTN_API int attn_launch(attn_bundle *bundle, const attn_call *call);

/* Tunes on the call's arguments under the rule of docs/bundle-and-abi.md section 4a:
 * the device's default variant runs first and its o (and lse) is the reference; every
 * other variant that can run on this device runs on the same inputs and is kept only
 * when its outputs agree with the reference (bf16 tolerance; NaN never passes). The
 * agreeing ones are timed (warm-up runs, then the median of `repeats` timed runs,
 * default 20 when repeats <= 0, on rotating copies of q/k/v), the fastest is stored in
 * the tuning database ([ABI 4]) and in the bundle, and finally runs on the caller's
 * arguments, so o (and lse) hold its result. Variants that fail to load, exceed the
 * device's resources, fail to launch or disagree are skipped, with the reason recorded
 * ("rejected" in the database). A variant that faults while running makes the CUDA
 * context unusable: the call fails naming it (`attnc tune` isolates candidates in a
 * child process instead). `verbose`: progress and a table on stderr. Synchronises the
 * context. $ATTUNE_TUNE=0 does not stop an explicit attn_tune, but makes attn_launch
 * and attn_select_variant ignore the tuning database. */
ATTN_API int attn_tune(attn_bundle *bundle, const attn_call *call, int repeats, int verbose);

/* The message of the last failure on this thread ("" if none). */
ATTN_API const char *attn_last_error(void);

/* ---- additions ------------------------------------------------------------- */

/* The runtime's version, the project version ("0.2.0"); the same number the compiler
 * writes as "compiler_version" when built from the same tree. */
ATTN_API const char *attn_version(void);

/* Only the argument checks of attn_launch (no device access): 0 if the call is
 * acceptable for this bundle, else non-zero with a message naming the argument. */
ATTN_API int attn_check(attn_bundle *bundle, const attn_call *call);

/* The name of the variant attn_launch would run for `call` on the current device
 * (creating/retaining a context as attn_launch would), into buf[n]. */
ATTN_API int attn_select_variant(attn_bundle *bundle, const attn_call *call, char *buf, size_t n);

/* Whether the tuning database has an entry for this call's key on the current device:
 * 1 (and its variant name into buf[n] when buf is not NULL), 0 if not, -1 on error. */
ATTN_API int attn_tuned_variant(attn_bundle *bundle, const attn_call *call, char *buf, size_t n);

/* Variants in manifest order; the name is owned by the bundle (NULL when i is out of
 * range). */
ATTN_API int attn_bundle_num_variants(const attn_bundle *bundle);
ATTN_API const char *attn_bundle_variant_name(const attn_bundle *bundle, int i);
/* The same for the host variants (manifest "host"). */
ATTN_API int attn_bundle_num_host_variants(const attn_bundle *bundle);
ATTN_API const char *attn_bundle_host_variant_name(const attn_bundle *bundle, int i);

/* A JSON summary of the manifest, owned by the bundle:
 * {"dir", "format", "compiler_version", "spec_name", "spec_hash", "spec", "heads_q", "heads_kv",
 *  "head_dim", "head_dim_v", "dtype", "align", "q_offset", "kv_offset", "outputs",
 *  "alignment", "inputs": [{"name", "dtype", "shape"}],
 *  "variants": [{"name", "arch", "config", "default", "threads", "smem_bytes",
 *                "grid": {"x", "y", "z"}, "kernel", "ptx", "cubin", "ptxas"}],
 *  "host": [{"name", "library", "config", "default", "cpu", "backward", "backward_error",
 *            "lse"}]} */
ATTN_API const char *attn_bundle_info_json(const attn_bundle *bundle);

/* JSON about device `ordinal` into buf[n]: {"ordinal", "name", "compute_capability":
 * "9.0", "sm_count", "total_memory", "max_shared_memory_per_block_optin", "l2_bytes",
 * "driver_version"}. Fails with "no CUDA driver: libcuda.so.1 could not be loaded: ..."
 * where there is no driver. */
ATTN_API int attn_device_info(int ordinal, char *buf, size_t n);

/* The spec hash of [ABI 5]: sha256 of the canonical JSON text of `json_text`, as 64
 * lower-case hex characters and a NUL into out. Rejects malformed JSON and duplicate
 * keys (as the compiler's spec reader does). */
ATTN_API int attn_spec_hash(const char *json_text, char out[65]);

/* The canonical JSON text of `json_text` ([ABI 5]); NULL on error. Thread-local,
 * valid until the next call on this thread. */
ATTN_API const char *attn_canonical_json(const char *json_text);

/* The bundle-cache key of [ABI 4], as `attnc compile --cache` computes it, into out
 * (64 hex + NUL): sha256 of the text
 *   <spec_hash> "\n" <compiler_version> "\n" <archs> "\n" <configs>
 * with <archs> = `archs` split on ',' (empty items dropped), sorted by bytes, joined
 * with ','; <configs> = the --configs text exactly as passed to attnc ("64x64,128x64"),
 * or "default" when `configs` is NULL. No trailing newline. */
ATTN_API int attn_bundle_cache_key(const char *spec_hash, const char *compiler_version,
                                   const char *archs, const char *configs, char out[65]);

/* The cache root of [ABI 4] ($ATTUNE_CACHE_DIR, $XDG_CACHE_HOME/attune or
 * $HOME/.cache/attune) into buf[n]. */
ATTN_API int attn_cache_root(char *buf, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* ATTUNE_RUNTIME_H */
