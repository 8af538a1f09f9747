// The emulated CUDA device's runtime (see emu.h): fibers, the block scheduler, and the checks.
//
// Checks, each seen to fire by tests/emu/test_emulator.py on a deliberately broken kernel of
// csrc/emu/broken_kernels.cu:
//   launch      the hardware's limits: <= 1024 threads per block (x, y <= 1024, z <= 64) and
//               <= the kernel's __launch_bounds__, grid x < 2^31, y and z <= 65535, no zero
//               dimension; dynamic shared memory above 48 KiB only after cudaFuncSetAttribute
//               raised the kernel's limit, never above 227 KiB (H100/H200), static shared memory
//               <= 48 KiB;
//   barriers    every live thread of the block waits at the same __syncthreads (or at the same
//               __syncthreads_and); a thread that exited while others wait is an error;
//   warps       __shfl_down_sync / __ballot_sync: the mask names the caller, no lane past the
//               end of a partial warp, and every lane it names reaches the same call;
//   races       every launch runs twice, threads and blocks in ascending then in reversed order,
//               with different poison patterns in shared memory; the bytes the two runs write to
//               global memory must be equal. The first run's writes are logged and undone before
//               the second. In the tracked build (below), a shared-memory access that conflicts
//               with another thread's access since the last barrier (read after write, write
//               after read or write; atomics conflict only with plain accesses) is an error;
//   poison      shared memory is filled with 0xFF bytes (NaN in every float format) in the first
//               run, with the 32-bit word 0x7FF7A5A5 (NaN as float and as double) in the second;
//               device allocations are filled with 0xFF (device.cpp);
//   bounds      tracked build: redzones around every shared variable and after the dynamic
//               shared memory; ASan build: every shared variable and the dynamic shared memory of
//               each block is its own heap block of exactly its size.
//   global race tracked build: every global write is logged with its writer (block, thread, and
//               the block's barrier epoch) and whether it was an atomic. Two writes of the same
//               byte in one launch race unless both are atomics, or both come from one block and
//               a __syncthreads separates them, or both come from one thread. Blocks are never
//               ordered (no kernel of ssd_fast synchronises its grid), nor are the lanes of a
//               warp. Threads that store the same value to the same byte race too: the kernels
//               never need to, and the rule stays simple. Checked on the first schedule's log.
//   global bounds  tracked build: every global access (read or write) of a kernel must lie in
//               one live device allocation (device.cpp's table), else the access fails before
//               it happens; the kernel's parameters and the emulator's own thread views are
//               exempt. Reads are checked in the first schedule (the second reads the same).
//
// Two builds (build.py): the tracked build compiles the kernels with -fsanitize=thread but links
// none of ThreadSanitizer's runtime: every load and store of a kernel becomes a call to the
// __tsan_* functions at the end of this file (which is not instrumented), and those see the
// shared-memory accesses and the global-memory writes. The ASan build (-fsanitize=address
// everywhere) has no such calls, runs one schedule (SSD_EMU_SCHEDULE=ascending or reversed) and
// leaves the bounds to AddressSanitizer.
//
// Fibers, not threads: a block's threads run on the calling OS thread and switch only at
// barriers and warp operations. Measured on the 2-core CI machine (2026-12-03): match_priors
// (bipartite, 2 images x 300 GTs, 256 threads per block: block-wide arg-max reductions) makes
// 23.7M switches in 2.4 s, 0.10 us per switch with the kernel's own work and the instrumentation
// included; 256 OS threads meeting at std::barrier cost 8 us per thread and barrier, 80x more.
#include "emu/emu.h"

#include <link.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

// SSD_EMU_TRACKED_BUILD: the kernels are compiled with -fsanitize=thread (build.py). This file
// never is: it is the code those calls reach.
#if !defined(SSD_EMU_TRACKED_BUILD)
#define SSD_EMU_TRACKED_BUILD 0
#endif

namespace ssd_emu {

__thread const ThreadView* tls_view __attribute__((tls_model("initial-exec"))) = nullptr;

namespace {

constexpr int kWarpSize = 32;
constexpr int kMaxThreads = 1024;
constexpr size_t kStackBytes = 256 * 1024;  // per fiber (virtual; the kernels use a few KiB)
constexpr size_t kGuardBytes = 4096;
constexpr size_t kRedzone = 16;
// The tracked build's arena of one block: a margin | static shared variables (48 KiB at most)
// and their redzones | the dynamic shared memory | a margin. Margins and redzones are out of
// bounds; an access further away than a margin counts as a global one (the ASan build's job).
constexpr size_t kArenaMargin = 4096;
constexpr size_t kStaticArena = 96 * 1024;

struct Launch;
// The launch whose kernel code is running on this OS thread (instrumentation is live), else null.
__thread Launch* tls_track __attribute__((tls_model("initial-exec"))) = nullptr;

// Instrumentation off while the emulator's own code runs, called from kernel code (it may call
// library functions whose only copy in the module is an instrumented one).
struct Untracked {
  Launch* saved;
  Untracked() : saved(tls_track) { tls_track = nullptr; }
  ~Untracked() { tls_track = saved; }
};

std::string where(const Site& s) {
  const char* slash = std::strrchr(s.file, '/');
  return std::string(slash ? slash + 1 : s.file) + ":" + std::to_string(s.line);
}

std::string xyz(uint3 v) {
  return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}

std::string dims(dim3 v) { return xyz({v.x, v.y, v.z}); }

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

// ---- fibers -----------------------------------------------------------------------------------

#if defined(__x86_64__)
// ssd_emu_switch(save, load): saves the callee-saved registers (and the SSE / x87 control words)
// on the current stack, stores the stack pointer in *save and resumes the context at `load`.
extern "C" void ssd_emu_switch(void** save, void* load);
extern "C" void ssd_emu_fiber_entry();
asm(R"(
  .text
  .p2align 4
  .globl ssd_emu_switch
  .hidden ssd_emu_switch
  .type ssd_emu_switch, @function
ssd_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size ssd_emu_switch, .-ssd_emu_switch

  .p2align 4
  .globl ssd_emu_fiber_entry
  .hidden ssd_emu_fiber_entry
  .type ssd_emu_fiber_entry, @function
ssd_emu_fiber_entry:
  movq %r12, %rdi
  call ssd_emu_fiber_main
  ud2
  .size ssd_emu_fiber_entry, .-ssd_emu_fiber_entry
)");
#else
#error "the emulated CUDA device switches fibers with x86-64 assembly (runtime.cpp)"
#endif

// One mapping for every fiber stack, each with a guard page below it: the instrumentation
// tells stack accesses from global memory by this range.
struct StackPool {
  char* lo = nullptr;
  size_t bytes = 0;
  std::vector<char*> free_list;

  void init() {
    if (lo) return;
    bytes = kMaxThreads * (kStackBytes + kGuardBytes);
    void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m == MAP_FAILED) throw std::runtime_error("emulated CUDA: cannot map the fiber stacks");
    lo = static_cast<char*>(m);
    for (int i = kMaxThreads - 1; i >= 0; --i) {
      char* s = lo + i * (kStackBytes + kGuardBytes);
      mprotect(s, kGuardBytes, PROT_NONE);
      free_list.push_back(s + kGuardBytes);
    }
  }
  char* take() {
    char* s = free_list.back();
    free_list.pop_back();
    return s;
  }
  void give(char* s) {
#if defined(__SANITIZE_ADDRESS__)
    __asan_unpoison_memory_region(s, kStackBytes);  // frames of abandoned fibers
#endif
    free_list.push_back(s);
  }
};

StackPool g_stacks;
std::mutex g_mutex;  // one emulated launch at a time
Stats g_stats{};
unsigned g_checks = kAllChecks;
bool on(Check c) { return (g_checks & c) != 0; }
uint32_t g_phase = 0;  // a new value per block and per barrier release (the race epochs)

std::unordered_map<std::string, int>& bounds_table() {
  static std::unordered_map<std::string, int> t;
  return t;
}
std::unordered_map<std::string, uint64_t>& launch_counts() {  // by the kernel's base name
  static std::unordered_map<std::string, uint64_t> t;
  return t;
}
std::unordered_map<const void*, int>& smem_attr() {
  static std::unordered_map<const void*, int> t;
  return t;
}

// ---- a launch -----------------------------------------------------------------------------------

enum class Op : uint8_t { kNone, kSync, kSyncAnd, kShfl, kBallot };
enum class State : uint8_t { kFresh, kRunnable, kWaiting, kDone, kFailed };

const char* op_name(Op op) {
  switch (op) {
    case Op::kSync: return "__syncthreads";
    case Op::kSyncAnd: return "__syncthreads_and";
    case Op::kShfl: return "__shfl_down_sync";
    case Op::kBallot: return "__ballot_sync";
    default: return "?";
  }
}
bool is_warp_op(Op op) { return op == Op::kShfl || op == Op::kBallot; }
bool same_site(const Site& a, const Site& b) {
  return a.line == b.line && (a.file == b.file || std::strcmp(a.file, b.file) == 0);
}

struct Thread {
  ThreadView view;
  int linear = 0, warp = 0, lane = 0;
  State state = State::kFresh;
  Op op = Op::kNone;
  Site site{"", 0};
  unsigned mask = 0, delta = 0;
  uint64_t value = 0, result = 0;
  void* sp = nullptr;
  char* stack = nullptr;
};

// One shared-memory access for the race detector: who touched a byte last, and in which phase.
struct ShadowByte {
  uint32_t write_phase, read_phase;
  uint16_t writer, reader;  // linear thread ids; kMany: several
  uint8_t atomic, redzone;
};
constexpr uint16_t kMany = 0xFFFF;

struct SharedVar {
  const void* key;
  size_t offset, bytes;
  const char* name;
  char* heap;  // ASan build: its own allocation
};

// A logged write to global memory: `len` bytes at `addr`, their old contents at old[off], and
// who wrote them: the block (linear index), its thread (linear) and the block's barrier epoch.
struct WriteRun {
  uintptr_t addr;
  size_t len, off;
  uint64_t block;
  uint32_t epoch;
  uint16_t thread;
  uint8_t atomic;
};

// An address range [lo, hi) that kernel code may access (a device allocation, the parameters).
struct Range {
  uintptr_t lo, hi;
};
constexpr int kRangeCache = 16;

bool within(const Range& r, uintptr_t p, size_t n) { return p - r.lo < r.hi - r.lo && n <= r.hi - p; }

// The loaded image of this module: kernel code reads its constants (the source_location of
// every barrier call, tables).
Range module_image() {
  struct Find {
    uintptr_t self;
    Range image;
  } find{reinterpret_cast<uintptr_t>(&module_image), {0, 0}};
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        Find& f = *static_cast<Find*>(data);
        Range r{~uintptr_t(0), 0};
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& ph = info->dlpi_phdr[i];
          if (ph.p_type != PT_LOAD) continue;
          r.lo = std::min<uintptr_t>(r.lo, info->dlpi_addr + ph.p_vaddr);
          r.hi = std::max<uintptr_t>(r.hi, info->dlpi_addr + ph.p_vaddr + ph.p_memsz);
        }
        if (f.self - r.lo >= r.hi - r.lo) return 0;
        f.image = r;
        return 1;
      },
      &find);
  return find.image;
}
Range g_module{0, 0};  // set by the first launch

struct Launch {
  KernelRef kernel;
  dim3 grid, block;
  size_t smem = 0;
  size_t smem_limit = kDefaultSmemLimit;  // static + dynamic: 48 KiB, or 227 KiB once raised
  void (*run)(void*) = nullptr;
  void* closure = nullptr;
  int schedule = 0;  // 0: ascending, 1: reversed
  bool tracked = false;

  std::vector<Thread> threads;
  Thread* current = nullptr;
  void* sched_sp = nullptr;
  std::string error;
  uint3 block_idx{0, 0, 0};
  uint64_t block_linear = 0;
  uint32_t epoch = 0;  // barriers the current block has passed

  // global bounds: the ranges met so far (device allocations), and what else kernel code reads
  Range ranges[kRangeCache];
  int nranges = 0, next_range = 0;
  Range params{0, 0}, views{0, 0}, tls{0, 0};

  // shared memory
  std::vector<SharedVar> vars;
  size_t static_used = 0;   // tracked build: the arena offset where the next variable may go
  size_t static_bytes = 0;  // static shared memory as the kernel declares it
  char* arena = nullptr;  // tracked build: [static variables | dynamic], with redzones
  size_t arena_bytes = 0, dyn_offset = 0;
  std::vector<ShadowByte> shadow;
  char* dyn_heap = nullptr;  // ASan build

  // global writes of the current schedule
  std::vector<WriteRun> writes;
  std::vector<uint8_t> old_bytes;

  int nthreads() const { return static_cast<int>(block.x * block.y * block.z); }
  int warp_lanes(int warp) const { return std::min(kWarpSize, nthreads() - warp * kWarpSize); }

  std::string who(const Thread& t) const {
    return "thread " + xyz(t.view.thread_idx) + " of block " + xyz(block_idx);
  }
  std::string prefix() const {
    return std::string("emulated CUDA: kernel ") + kernel.name + ": ";
  }
  uint8_t poison_byte(size_t i) const {
    static const uint8_t b[4] = {0xA5, 0xA5, 0xF7, 0x7F};  // 0x7FF7A5A5, little endian
    if (!on(kCheckPoison)) return 0;
    return schedule == 0 ? 0xFF : b[i & 3];
  }
  void poison(char* p, size_t n, size_t base) const {
    for (size_t i = 0; i < n; ++i) p[i] = static_cast<char>(poison_byte(base + i));
  }

  void log_write(uintptr_t addr, size_t n, bool atomic) {
    const uint16_t t = static_cast<uint16_t>(current->linear);
    if (!writes.empty()) {
      WriteRun& b = writes.back();
      if (b.addr + b.len == addr && b.thread == t && b.epoch == epoch && b.block == block_linear &&
          b.atomic == atomic) {
        b.len += n;
        const uint8_t* p = reinterpret_cast<const uint8_t*>(addr);
        old_bytes.insert(old_bytes.end(), p, p + n);
        return;
      }
    }
    writes.push_back({addr, n, old_bytes.size(), block_linear, epoch, t, atomic});
    const uint8_t* p = reinterpret_cast<const uint8_t*>(addr);
    old_bytes.insert(old_bytes.end(), p, p + n);
  }
  void undo_writes() {
    for (auto it = writes.rbegin(); it != writes.rend(); ++it) {
      std::memcpy(reinterpret_cast<void*>(it->addr), old_bytes.data() + it->off, it->len);
    }
  }
};

Launch* g_launch = nullptr;  // the launch being executed (under g_mutex)

[[noreturn]] void fail_in_fiber(const std::string& msg);

void switch_to_fiber(Launch& L, Thread& t) {
#if defined(__SANITIZE_ADDRESS__)
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, t.stack, kStackBytes);
  ssd_emu_switch(&L.sched_sp, t.sp);
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
  ssd_emu_switch(&L.sched_sp, t.sp);
#endif
  ++g_stats.fiber_switches;
}

// The main thread's stack, for the fibers' switches back (ASan only).
#if defined(__SANITIZE_ADDRESS__)
const void* g_main_bottom = nullptr;
size_t g_main_size = 0;
#endif

void switch_to_scheduler(Launch& L, Thread& t, bool dying) {
#if defined(__SANITIZE_ADDRESS__)
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(dying ? nullptr : &fake, g_main_bottom, g_main_size);
  ssd_emu_switch(&t.sp, L.sched_sp);
  __sanitizer_finish_switch_fiber(fake, &g_main_bottom, &g_main_size);
#else
  (void)dying;
  ssd_emu_switch(&t.sp, L.sched_sp);
#endif
}

// Suspends the calling CUDA thread until the scheduler resumes it.
void wait_here(Launch& L, Thread& me) {
  switch_to_scheduler(L, me, false);
}

[[noreturn]] void fail_in_fiber(const std::string& msg) {
  Launch& L = *g_launch;
  if (L.error.empty()) L.error = L.prefix() + msg;
  Thread& me = *L.current;
  me.state = State::kFailed;
  switch_to_scheduler(L, me, true);
  __builtin_unreachable();
}

}  // namespace

extern "C" __attribute__((used, visibility("hidden"))) void ssd_emu_fiber_main(
    void* thread) {
  Thread* t = static_cast<Thread*>(thread);
  Launch& L = *g_launch;
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(nullptr, &g_main_bottom, &g_main_size);
#endif
  tls_track = L.tracked ? &L : nullptr;
  try {
    L.run(L.closure);
  } catch (const std::exception& e) {  // no unwinding past a fiber's first frame
    tls_track = nullptr;
    fail_in_fiber(std::string("an exception left the kernel: ") + e.what());
  }
  tls_track = nullptr;
  t->state = State::kDone;
  switch_to_scheduler(L, *t, true);
  __builtin_unreachable();
}

namespace {

void start_fiber(Thread& t) {
  t.stack = g_stacks.take();
  // Initial frame, popped by ssd_emu_switch: control words, r15..rbp (r12 = the thread), then
  // the return address ssd_emu_fiber_entry, entered with rsp = 0 mod 16 so that its call
  // enters ssd_emu_fiber_main with the ABI's alignment.
  uint64_t* top = reinterpret_cast<uint64_t*>(t.stack + kStackBytes);
  uint64_t* sp = top - 8;
  uint32_t csr[2];
  asm volatile("stmxcsr %0" : "=m"(csr[0]));
  asm volatile("fnstcw %0" : "=m"(csr[1]));
  std::memcpy(&sp[0], csr, 8);
  sp[1] = 0;                                   // r15
  sp[2] = 0;                                   // r14
  sp[3] = 0;                                   // r13
  sp[4] = reinterpret_cast<uint64_t>(&t);      // r12
  sp[5] = 0;                                   // rbx
  sp[6] = 0;                                   // rbp
  sp[7] = reinterpret_cast<uint64_t>(&ssd_emu_fiber_entry);
  t.sp = sp;
}

void resume(Launch& L, Thread& t) {
  if (t.state == State::kFresh && g_stacks.free_list.empty()) {  // launch checks switched off
    L.error = L.prefix() + "more than " + std::to_string(kMaxThreads) + " threads of a block alive";
    return;
  }
  if (t.state == State::kFresh) start_fiber(t);
  t.state = State::kRunnable;
  L.current = &t;
  tls_view = &t.view;
  switch_to_fiber(L, t);
  L.current = nullptr;
  if (t.state == State::kDone) {
    g_stacks.give(t.stack);
    t.stack = nullptr;
  }
}

std::string describe_state(const Launch& L, const Thread& t) {
  (void)L;
  switch (t.state) {
    case State::kDone: return "has exited";
    case State::kWaiting: return "waits at " + std::string(op_name(t.op)) + " (" + where(t.site) + ")";
    default: return "has not arrived";
  }
}

// The lanes of a warp that exist and have not exited.
unsigned live_lanes(const Launch& L, int warp) {
  unsigned m = 0;
  for (int l = 0; l < L.warp_lanes(warp); ++l) {
    if (L.threads[warp * kWarpSize + l].state != State::kDone) m |= 1u << l;
  }
  return m;
}

// Every lane of `mask` in `warp` has reached the same warp operation: each gets its result.
void complete_warp_op(Launch& L, int warp, unsigned mask) {
  Thread* base = &L.threads[warp * kWarpSize];
  const int lanes = L.warp_lanes(warp);
  unsigned ballot = 0;
  for (int l = 0; l < lanes; ++l) {
    if (((mask >> l) & 1) && base[l].value) ballot |= 1u << l;
  }
  for (int l = 0; l < lanes; ++l) {
    if (!((mask >> l) & 1)) continue;
    Thread& o = base[l];
    if (o.op == Op::kBallot) {
      o.result = ballot;
    } else {
      const unsigned src = l + o.delta;  // outside the warp: the lane's own value
      o.result = src >= unsigned(kWarpSize) ? o.value
                 : ((mask >> src) & 1)      ? base[src].value
                                            : ~uint64_t(0);  // an inactive source: undefined
    }
    o.op = Op::kNone;
    o.state = State::kRunnable;
  }
}

// Every thread is blocked or done: release the block barrier, or report the divergence.
void release_block(Launch& L) {
  auto at_barrier = [](const Thread& t) { return t.state == State::kWaiting && !is_warp_op(t.op); };
  uint64_t all = 1;
  for (const Thread& t : L.threads) {
    if (at_barrier(t)) all &= t.value != 0;
  }
  ++g_phase;
  ++L.epoch;
  for (Thread& t : L.threads) {
    if (!at_barrier(t)) continue;
    t.result = all;
    t.op = Op::kNone;
    t.state = State::kRunnable;
  }
}

void resolve_block(Launch& L) {
  const Thread* first = nullptr;
  int done = 0;
  const Thread* exited = nullptr;
  for (const Thread& t : L.threads) {
    if (t.state == State::kDone) {
      ++done;
      exited = &t;
      continue;
    }
    if (is_warp_op(t.op) && !on(kCheckWarp)) {  // without the lanes that are not there
      unsigned there = 0;
      const Thread* base = &L.threads[t.warp * kWarpSize];
      for (int l = 0; l < L.warp_lanes(t.warp); ++l) {
        const Thread& o = base[l];
        if (o.state == State::kWaiting && o.op == t.op && same_site(o.site, t.site)) there |= 1u << l;
      }
      complete_warp_op(L, t.warp, t.mask & there);
      return;
    }
    if (is_warp_op(t.op)) {  // its warp operation lacks a lane, which is stuck elsewhere
      const Thread* base = &L.threads[t.warp * kWarpSize];
      for (int l = 0; l < L.warp_lanes(t.warp); ++l) {
        const Thread& o = base[l];
        if (((t.mask >> l) & 1) && !(o.state == State::kWaiting && o.op == t.op && same_site(o.site, t.site))) {
          L.error = L.prefix() + "warp divergence: " + L.who(t) + " waits at " + op_name(t.op) +
                    " (" + where(t.site) + ", mask " + hex(t.mask) + ") but lane " +
                    std::to_string(l) + " of its warp " + describe_state(L, o);
          return;
        }
      }
    }
    if (!first) first = &t;
  }
  if (!first) return;  // all done
  if (!on(kCheckBarrier)) return release_block(L);
  for (const Thread& t : L.threads) {
    if (t.state == State::kDone) continue;
    if (t.op != first->op || !same_site(t.site, first->site)) {
      L.error = L.prefix() + "barrier divergence: " + L.who(*first) + " waits at " +
                op_name(first->op) + " (" + where(first->site) + ") but " + L.who(t) + " waits at " +
                op_name(t.op) + " (" + where(t.site) + ")";
      return;
    }
  }
  if (done > 0) {
    L.error = L.prefix() + "barrier divergence: " + L.who(*first) + " waits at " +
              op_name(first->op) + " (" + where(first->site) + ") but " + L.who(*exited) +
              " has exited (" + std::to_string(done) + " of " + std::to_string(L.nthreads()) +
              " threads have)";
    return;
  }
  release_block(L);
}

void reset_shared(Launch& L) {
  ++g_phase;
#if SSD_EMU_TRACKED_BUILD
  // The previous block's static variables become redzone until allocated again.
  for (size_t i = kArenaMargin; i < L.static_used; ++i) L.shadow[i].redzone = 1;
  L.poison(L.arena + L.dyn_offset, L.smem, 0);
  L.static_used = kArenaMargin;
#else
  for (SharedVar& v : L.vars) std::free(v.heap);
  std::free(L.dyn_heap);
  L.dyn_heap = static_cast<char*>(std::malloc(L.smem));  // exactly its size (ASan: overruns caught)
  L.poison(L.dyn_heap, L.smem, 0);
  L.static_used = 0;
#endif
  L.vars.clear();
  L.static_bytes = 0;
}

void run_block(Launch& L, uint3 bidx) {
  const int n = L.nthreads();
  L.block_idx = bidx;
  L.threads.assign(n, Thread{});
  for (int i = 0; i < n; ++i) {
    Thread& t = L.threads[i];
    t.linear = i;
    t.warp = i / kWarpSize;
    t.lane = i % kWarpSize;
    t.view.thread_idx = {i % L.block.x, (i / L.block.x) % L.block.y, i / (L.block.x * L.block.y)};
    t.view.block_idx = bidx;
    t.view.block_dim = L.block;
    t.view.grid_dim = L.grid;
  }
  reset_shared(L);
  L.epoch = 0;
  L.views = {reinterpret_cast<uintptr_t>(L.threads.data()),
             reinterpret_cast<uintptr_t>(L.threads.data() + n)};
  g_stats.threads += n;
  for (;;) {
    bool ran = false;
    for (int k = 0; k < n; ++k) {
      Thread& t = L.threads[L.schedule == 0 ? k : n - 1 - k];
      if (t.state != State::kFresh && t.state != State::kRunnable) continue;
      resume(L, t);
      ran = true;
      if (!L.error.empty()) return;
    }
    if (ran) continue;
    bool all_done = true;
    for (const Thread& t : L.threads) all_done &= t.state == State::kDone;
    if (all_done) return;
    resolve_block(L);
    if (!L.error.empty()) return;
  }
}

void abandon_fibers(Launch& L) {
  for (Thread& t : L.threads) {
    if (t.stack) g_stacks.give(t.stack);
    t.stack = nullptr;
  }
}

void run_grid(Launch& L) {
  ++g_stats.schedule_runs;
  const uint64_t nb = uint64_t(L.grid.x) * L.grid.y * L.grid.z;
  for (uint64_t k = 0; k < nb; ++k) {
    const uint64_t b = L.schedule == 0 ? k : nb - 1 - k;
    const uint3 bidx{static_cast<unsigned>(b % L.grid.x),
                     static_cast<unsigned>((b / L.grid.x) % L.grid.y),
                     static_cast<unsigned>(b / (uint64_t(L.grid.x) * L.grid.y))};
    L.block_linear = b;
    run_block(L, bidx);
    if (!L.error.empty()) {
      abandon_fibers(L);
      return;
    }
  }
}

// ---- the two schedules' global writes ---------------------------------------------------------

struct Span {
  uintptr_t lo, hi;
};

std::vector<Span> written_spans(const std::vector<WriteRun>& runs) {
  std::vector<Span> s;
  s.reserve(runs.size());
  for (const WriteRun& r : runs) s.push_back({r.addr, r.addr + r.len});
  std::sort(s.begin(), s.end(), [](const Span& a, const Span& b) { return a.lo < b.lo; });
  std::vector<Span> merged;
  for (const Span& x : s) {
    if (!merged.empty() && x.lo <= merged.back().hi) merged.back().hi = std::max(merged.back().hi, x.hi);
    else merged.push_back(x);
  }
  return merged;
}

std::vector<uint8_t> snapshot(const std::vector<Span>& spans) {
  std::vector<uint8_t> out;
  for (const Span& s : spans) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(s.lo);
    out.insert(out.end(), p, p + (s.hi - s.lo));
  }
  return out;
}

std::vector<Span> span_union(const std::vector<Span>& a, const std::vector<Span>& b) {
  std::vector<WriteRun> runs;
  for (const Span& s : a) runs.push_back({s.lo, s.hi - s.lo, 0});
  for (const Span& s : b) runs.push_back({s.lo, s.hi - s.lo, 0});
  return written_spans(runs);
}

std::string (*g_describe_address)(uintptr_t) = nullptr;
bool (*g_find_allocation)(uintptr_t, uintptr_t*, uintptr_t*) = nullptr;

std::string described(uintptr_t p) {
  return hex(p) + (g_describe_address ? " (" + g_describe_address(p) + ")" : std::string());
}

// ---- global races: two writes of one byte that nothing orders ---------------------------------

uint3 unlinear(uint64_t i, dim3 d) {
  return {static_cast<unsigned>(i % d.x), static_cast<unsigned>((i / d.x) % d.y),
          static_cast<unsigned>(i / (uint64_t(d.x) * d.y))};
}

std::string writer_of(const Launch& L, const WriteRun& w) {
  return "thread " + xyz(unlinear(w.thread, L.block)) + " of block " + xyz(unlinear(w.block, L.grid));
}

bool unordered(const WriteRun& a, const WriteRun& b) {
  if (a.atomic && b.atomic) return false;
  if (a.block != b.block) return true;
  return a.thread != b.thread && a.epoch == b.epoch;
}

// The writes of the launch (L.writes, in the order they happened), sorted by address: within
// every group of overlapping writes, each write is checked against those that overlap it, a
// thread's repeated writes of the same bytes in one epoch counted once. The first racing pair
// found fails the launch.
void check_global_races(Launch& L) {
  const std::vector<WriteRun>& w = L.writes;
  if (w.size() < 2) return;
  std::vector<uint32_t> order(w.size());
  std::iota(order.begin(), order.end(), 0u);
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t a, uint32_t b) { return w[a].addr < w[b].addr; });
  auto key = [&](uint32_t i) {
    const WriteRun& r = w[i];
    return std::make_tuple(r.addr, r.len, r.block, r.thread, r.epoch, r.atomic);
  };
  std::vector<uint32_t> group;
  for (size_t i = 0; i < order.size();) {
    uintptr_t hi = w[order[i]].addr + w[order[i]].len;
    size_t j = i + 1;
    for (; j < order.size() && w[order[j]].addr < hi; ++j) {
      hi = std::max<uintptr_t>(hi, w[order[j]].addr + w[order[j]].len);
    }
    if (j - i > 1) {
      group.assign(order.begin() + i, order.begin() + j);
      std::sort(group.begin(), group.end(), [&](uint32_t a, uint32_t b) {
        return std::make_pair(key(a), a) < std::make_pair(key(b), b);
      });
      group.erase(std::unique(group.begin(), group.end(),
                              [&](uint32_t a, uint32_t b) { return key(a) == key(b); }),
                  group.end());
      for (size_t x = 0; x < group.size(); ++x) {
        const uintptr_t x_end = w[group[x]].addr + w[group[x]].len;
        // (sorted by address: the writes that overlap x follow it, up to the first one past it)
        for (size_t y = x + 1; y < group.size() && w[group[y]].addr < x_end; ++y) {
          const WriteRun& a = w[std::min(group[x], group[y])];  // a happened first
          const WriteRun& b = w[std::max(group[x], group[y])];
          const uintptr_t lo = std::max(a.addr, b.addr);
          if (!unordered(a, b)) continue;
          L.error = L.prefix() + "global-memory race (" +
                    (a.atomic || b.atomic ? "an atomic and a plain write" : "write after write") +
                    "): " + writer_of(L, b) + (b.atomic ? " atomically updates " : " writes ") +
                    described(lo) + ", which " + writer_of(L, a) +
                    (a.atomic ? " updated atomically" : " wrote") + " in the same launch" +
                    (a.block != b.block ? " (blocks are not ordered)"
                                        : " with no barrier between them");
          return;
        }
      }
    }
    i = j;
  }
}

void run_both_schedules(Launch& L) {
  L.schedule = 0;
  L.writes.clear();
  L.old_bytes.clear();
  run_grid(L);
  if (!L.error.empty()) return;
  if (on(kCheckGlobalRace)) check_global_races(L);
  if (!L.error.empty()) return;
  const std::vector<Span> wa = written_spans(L.writes);
  const std::vector<uint8_t> final_a = snapshot(wa);
  L.undo_writes();

  L.schedule = 1;
  L.writes.clear();
  L.old_bytes.clear();
  run_grid(L);
  if (!L.error.empty()) return;
  const std::vector<Span> all = span_union(wa, written_spans(L.writes));
  const std::vector<uint8_t> final_b = snapshot(all);
  L.undo_writes();
  const std::vector<uint8_t> original = snapshot(all);
  // Memory ends as the second run left it; the first run must have left the same bytes.
  size_t off = 0, ia = 0, off_a = 0;  // wa[ia]: the first span of the first run not below p
  for (const Span& s : all) {
    std::memcpy(reinterpret_cast<void*>(s.lo), final_b.data() + off, s.hi - s.lo);
    for (uintptr_t p = s.lo; p < s.hi; ++p, ++off) {
      for (; ia < wa.size() && wa[ia].hi <= p; ++ia) off_a += wa[ia].hi - wa[ia].lo;
      const bool in_a = ia < wa.size() && p >= wa[ia].lo;
      const uint8_t expected = in_a ? final_a[off_a + (p - wa[ia].lo)] : original[off];
      if (expected == final_b[off]) continue;
      L.error = L.prefix() + "its two schedules (threads and blocks in ascending, then in reversed "
                "order) wrote different bytes at " + described(p) + ": " +
                hex(expected) + " then " + hex(final_b[off]) +
                " (a race, or a read of uninitialised shared memory)";
      return;
    }
  }
}

void check_config(const Launch& L) {
  const std::string pre = std::string("CUDA error: ");
  auto bad = [&](const std::string& what, const std::string& why) {
    throw std::runtime_error(pre + what + " (emulated launch of " + L.kernel.name + ": " + why + ")");
  };
  const dim3 g = L.grid, b = L.block;
  if (g.x == 0 || g.y == 0 || g.z == 0 || b.x == 0 || b.y == 0 || b.z == 0) {
    bad("invalid configuration argument", "grid " + dims(g) + ", block " + dims(b) + " has a zero dimension");
  }
  if (b.x > 1024 || b.y > 1024 || b.z > 64 || uint64_t(b.x) * b.y * b.z > 1024) {
    bad("invalid configuration argument", "block " + dims(b) + ": at most 1024 threads, x, y <= 1024, z <= 64");
  }
  if (g.x > 2147483647u || g.y > 65535 || g.z > 65535) {
    bad("invalid configuration argument", "grid " + dims(g) + ": x < 2^31, y and z <= 65535");
  }
  const std::string base = kernel_base_name(L.kernel.name);
  const auto it = bounds_table().find(base);
  if (it == bounds_table().end()) {
    bad("invalid device function", "it declares no __launch_bounds__; every kernel of ssd_fast does, and "
        "the emulator checks launches against it");
  }
  if (uint64_t(b.x) * b.y * b.z > static_cast<uint64_t>(it->second)) {
    bad("too many resources requested for launch", "block " + dims(b) + " has " +
        std::to_string(uint64_t(b.x) * b.y * b.z) + " threads, more than its __launch_bounds__(" +
        std::to_string(it->second) + ")");
  }
  const auto attr = smem_attr().find(L.kernel.id);
  const size_t limit = attr == smem_attr().end() ? kDefaultSmemLimit : std::max(attr->second, kDefaultSmemLimit);
  if (L.smem > limit) {
    bad("invalid argument", std::to_string(L.smem) + " bytes of dynamic shared memory, more than the " +
        std::to_string(limit) + " allowed" +
        (L.smem <= size_t(kMaxDynamicSmemOptin)
             ? " (raise the kernel's cudaFuncAttributeMaxDynamicSharedMemorySize first)"
             : " (227 KiB at most on an H100/H200)"));
  }
}

}  // namespace

std::string kernel_base_name(const std::string& name) {
  std::string s = name.substr(0, name.find('<'));
  const size_t colon = s.rfind("::");
  return colon == std::string::npos ? s : s.substr(colon + 2);
}

std::string kernel_name_from(const char* pretty) {
  // "... [with auto K = ssd_fast::{anonymous}::mining_kernel<float, float>]"
  std::string s(pretty);
  const size_t at = s.find("K = ");
  if (at == std::string::npos) return s;
  size_t end = s.find_first_of(";]", at);
  s = s.substr(at + 4, end - at - 4);
  for (const char* ns : {"ssd_fast::{anonymous}::", "ssd_fast::", "{anonymous}::"}) {
    for (size_t p; (p = s.find(ns)) != std::string::npos;) s.erase(p, std::strlen(ns));
  }
  return s;
}

void register_launch_bounds(const char* kernel, int bound) {
  auto [it, inserted] = bounds_table().emplace(kernel, bound);
  if (!inserted && it->second != bound) {
    std::fprintf(stderr, "emulated CUDA: two kernels named %s with different __launch_bounds__\n", kernel);
    std::abort();
  }
}

void set_address_describer(std::string (*describe)(uintptr_t)) { g_describe_address = describe; }

void set_allocation_finder(bool (*find)(uintptr_t, uintptr_t*, uintptr_t*)) {
  g_find_allocation = find;
}

void set_checks(unsigned mask) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_checks = mask & kAllChecks;
}

unsigned checks() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_checks;
}

void set_max_dynamic_smem(const KernelRef& kernel, int bytes) {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (bytes < 0 || bytes > kMaxDynamicSmemOptin) {
      throw std::runtime_error("CUDA error: invalid argument (emulated cudaFuncSetAttribute(" +
                               std::string(kernel.name) + ", cudaFuncAttributeMaxDynamicSharedMemorySize, " +
                               std::to_string(bytes) + "): 227 KiB at most on an H100/H200)");
    }
    smem_attr()[kernel.id] = bytes;
  }
  // The attribute is shared by every host thread: let another one run before this one goes on
  // to its launch, as a GPU's host threads may (so that a race on the attribute shows).
  std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void launch(const KernelRef& kernel, dim3 grid, dim3 block, size_t smem, void (*run)(void*),
            void* closure, size_t closure_bytes) {
  std::lock_guard<std::mutex> lock(g_mutex);
  Launch L;
  L.kernel = kernel;
  L.grid = grid;
  L.block = block;
  L.smem = smem;
  L.run = run;
  L.closure = closure;
  L.params = {reinterpret_cast<uintptr_t>(closure), reinterpret_cast<uintptr_t>(closure) + closure_bytes};
  L.tls = {reinterpret_cast<uintptr_t>(&tls_view), reinterpret_cast<uintptr_t>(&tls_view + 1)};
  if (g_module.hi == 0) g_module = module_image();
  if (on(kCheckLaunch)) check_config(L);
  if (smem_attr().count(kernel.id) != 0 || smem > size_t(kDefaultSmemLimit)) {
    L.smem_limit = kMaxDynamicSmemOptin;
  }
  g_stacks.init();
  ++g_stats.launches;
  ++launch_counts()[kernel_base_name(kernel.name)];
#if SSD_EMU_TRACKED_BUILD
  L.tracked = true;
  L.dyn_offset = kArenaMargin + kStaticArena;
  L.arena_bytes = L.dyn_offset + (smem + 15) / 16 * 16 + kArenaMargin;
  std::vector<char> arena(L.arena_bytes);
  L.arena = arena.data();
  L.shadow.assign(L.arena_bytes, ShadowByte{0, 0, 0, 0, 0, 1});
  for (size_t i = 0; i < smem; ++i) L.shadow[L.dyn_offset + i].redzone = 0;
#endif
  g_launch = &L;
  struct Reset {
    ~Reset() {
      g_launch = nullptr;
      tls_view = nullptr;
    }
  } reset;
#if SSD_EMU_TRACKED_BUILD
  if (on(kCheckSchedules)) {
    run_both_schedules(L);
  } else {
    run_grid(L);
    if (L.error.empty() && on(kCheckGlobalRace)) check_global_races(L);
  }
#else
  const char* env = std::getenv("SSD_EMU_SCHEDULE");
  L.schedule = env && std::strcmp(env, "reversed") == 0 ? 1 : 0;
  run_grid(L);
  for (SharedVar& v : L.vars) std::free(v.heap);
  std::free(L.dyn_heap);
#endif
  if (!L.error.empty()) throw std::runtime_error(L.error);
}

Stats stats() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_stats;
}

std::vector<std::pair<std::string, uint64_t>> kernel_launches() {
  std::lock_guard<std::mutex> lock(g_mutex);
  std::vector<std::pair<std::string, uint64_t>> out;
  for (const auto& [name, bound] : bounds_table()) out.emplace_back(name, launch_counts()[name]);
  std::sort(out.begin(), out.end());
  return out;
}

// ---- called from kernel code --------------------------------------------------------------------

void device_assert_failed(const char* condition, Site site) {
  Untracked u;
  fail_in_fiber(std::string("device-side assertion `") + condition + "` failed (" + where(site) +
                ") in " + g_launch->who(*g_launch->current) +
                ": on a GPU this is a sticky error that ends the CUDA context (every later CUDA "
                "call of the process fails)");
}

void syncthreads(Site site) {
  Untracked u;
  Launch& L = *g_launch;
  Thread& me = *L.current;
  me.op = Op::kSync;
  me.site = site;
  me.value = 1;
  me.state = State::kWaiting;
  wait_here(L, me);
}

int syncthreads_and(int predicate, Site site) {
  Untracked u;
  Launch& L = *g_launch;
  Thread& me = *L.current;
  me.op = Op::kSyncAnd;
  me.site = site;
  me.value = predicate != 0;
  me.state = State::kWaiting;
  wait_here(L, me);
  return static_cast<int>(me.result);
}

namespace {

// A warp operation: waits until every lane named by the mask has reached the same call, then
// every one of them gets its result.
uint64_t warp_op(Op op, unsigned mask, uint64_t value, unsigned delta, Site site) {
  Launch& L = *g_launch;
  Thread& me = *L.current;
  const int lanes = L.warp_lanes(me.warp);
  if (!on(kCheckWarp)) mask &= live_lanes(L, me.warp);  // what a GPU might do instead
  if (!((mask >> me.lane) & 1)) {
    fail_in_fiber(L.who(me) + " calls " + op_name(op) + " (" + where(site) + ") with mask " +
                  hex(mask) + ", which does not name its own lane " + std::to_string(me.lane));
  }
  if (lanes < kWarpSize && (mask >> lanes) != 0) {
    fail_in_fiber(L.who(me) + " calls " + op_name(op) + " (" + where(site) + ") with mask " +
                  hex(mask) + " in a partial warp of " + std::to_string(lanes) +
                  " threads: lanes " + std::to_string(lanes) + "-31 do not exist");
  }
  me.op = op;
  me.site = site;
  me.mask = mask;
  me.value = value;
  me.delta = delta;
  me.state = State::kWaiting;
  Thread* base = &L.threads[me.warp * kWarpSize];
  bool complete = true;
  for (int l = 0; l < lanes; ++l) {
    if (!((mask >> l) & 1)) continue;
    const Thread& o = base[l];
    if (o.state == State::kDone) {
      fail_in_fiber(L.who(me) + " calls " + op_name(op) + " (" + where(site) + ") with mask " +
                    hex(mask) + " but lane " + std::to_string(l) + " has exited");
    }
    if (o.state != State::kWaiting || !is_warp_op(o.op)) {
      complete = false;
      continue;
    }
    if (o.op != op || !same_site(o.site, site) || o.mask != mask) {
      fail_in_fiber("warp divergence: " + L.who(me) + " calls " + op_name(op) + " (" + where(site) +
                    ", mask " + hex(mask) + ") but lane " + std::to_string(l) + " calls " + op_name(o.op) +
                    " (" + where(o.site) + ", mask " + hex(o.mask) + ")");
    }
  }
  if (complete) {
    complete_warp_op(L, me.warp, mask);
    return me.result;
  }
  wait_here(L, me);
  return me.result;
}

}  // namespace

uint64_t shfl_down_bits(unsigned mask, uint64_t bits, unsigned delta, Site site) {
  Untracked u;
  return warp_op(Op::kShfl, mask, bits, delta, site);
}

unsigned ballot(unsigned mask, int predicate, Site site) {
  Untracked u;
  return static_cast<unsigned>(warp_op(Op::kBallot, mask, predicate != 0, 0, site));
}

namespace {
char* var_ptr(Launch& L, const SharedVar& v) {
#if SSD_EMU_TRACKED_BUILD
  return L.arena + v.offset;
#else
  (void)L;
  return v.heap;
#endif
}
}  // namespace

void* block_shared(const void* key, size_t bytes, size_t align, const char* name) {
  Untracked u;
  Launch& L = *g_launch;
  if (align > 16) fail_in_fiber(std::string("shared variable ") + name + " needs an alignment above 16");
  for (const SharedVar& v : L.vars) {
    if (v.key == key) return var_ptr(L, v);
  }
  const size_t offset = (L.static_used + align - 1) / align * align;
  L.static_bytes = (L.static_bytes + align - 1) / align * align + bytes;
  if (L.static_bytes > size_t(kDefaultSmemLimit)) {
    fail_in_fiber("its static shared memory exceeds 48 KiB (" + std::string(name) + ": " +
                  std::to_string(bytes) + " bytes, " + std::to_string(L.static_bytes) +
                  " in all)");
  }
  if (L.static_bytes + L.smem > L.smem_limit) {
    fail_in_fiber("its static (" + std::to_string(L.static_bytes) + " bytes) and dynamic (" +
                  std::to_string(L.smem) + " bytes) shared memory exceed the block's " +
                  std::to_string(L.smem_limit) + (L.smem_limit == size_t(kDefaultSmemLimit)
                      ? " (48 KiB: raise the kernel's cudaFuncAttributeMaxDynamicSharedMemorySize)"
                      : " (227 KiB on an H100/H200)"));
  }
  if (SSD_EMU_TRACKED_BUILD && offset + bytes + kRedzone > kArenaMargin + kStaticArena) {
    fail_in_fiber("too many __shared__ variables for the emulator's arena");
  }
  SharedVar v{key, offset, bytes, name, nullptr};
#if SSD_EMU_TRACKED_BUILD
  for (size_t i = L.static_used; i < offset; ++i) L.shadow[i].redzone = 1;
  for (size_t i = offset; i < offset + bytes; ++i) L.shadow[i].redzone = 0;
  for (size_t i = offset + bytes; i < offset + bytes + kRedzone; ++i) L.shadow[i].redzone = 1;
  L.poison(L.arena + offset, bytes, 0);
  L.static_used = offset + bytes + kRedzone;
#else
  v.heap = static_cast<char*>(std::malloc(bytes));  // exactly its size (malloc aligns to 16)
  L.poison(v.heap, bytes, 0);
  L.static_used = offset + bytes;
#endif
  L.vars.push_back(v);
  return var_ptr(L, v);
}

unsigned char* dynamic_shared() {
  Untracked u;
  Launch& L = *g_launch;
#if SSD_EMU_TRACKED_BUILD
  return reinterpret_cast<unsigned char*>(L.arena + L.dyn_offset);
#else
  return reinterpret_cast<unsigned char*>(L.dyn_heap);
#endif
}

}  // namespace ssd_emu

// ---- instrumentation: shared-memory races and bounds, global-memory writes --------------------

namespace ssd_emu {
namespace {

enum class Access { kRead, kWrite, kAtomic };

std::string shared_what(const Launch& L, size_t off) {
  if (off >= L.dyn_offset) return "dynamic shared memory, byte " + std::to_string(off - L.dyn_offset);
  for (const SharedVar& v : L.vars) {
    if (off >= v.offset && off < v.offset + v.bytes) {
      return std::string("__shared__ ") + v.name + ", byte " + std::to_string(off - v.offset);
    }
  }
  return "static shared memory, offset " + std::to_string(off);
}

const char* kind_name(Access a) {
  return a == Access::kRead ? "reads" : a == Access::kWrite ? "writes" : "atomically updates";
}

void shared_access(Launch& L, size_t off, size_t n, Access kind) {
  const Thread& me = *L.current;
  const uint16_t t = static_cast<uint16_t>(me.linear);
  const uint32_t phase = g_phase;
  ShadowByte* sh = L.shadow.data() + off;
  if (kind == Access::kRead) {  // the common case, without branches: no conflict, note the read
    bool clean = true;
    for (size_t i = 0; i < n; ++i) clean &= !sh[i].redzone & ((sh[i].write_phase != phase) | (sh[i].writer == t));
    if (clean) {
      for (size_t i = 0; i < n; ++i) {
        sh[i].reader = sh[i].read_phase == phase && sh[i].reader != t ? kMany : t;
        sh[i].read_phase = phase;
      }
      return;
    }
  }
  for (size_t i = off; i < off + n; ++i) {
    ShadowByte& s = L.shadow[i];
    if (s.redzone && on(kCheckBounds)) {
      fail_in_fiber("out-of-bounds shared-memory access: " + L.who(me) + " " + kind_name(kind) + " " +
                    std::to_string(n) + (n == 1 ? " byte" : " bytes") +
                    (i >= L.dyn_offset && i < L.dyn_offset + L.smem + kArenaMargin
                         ? " at byte " + std::to_string(off - L.dyn_offset) + " of the " +
                               std::to_string(L.smem) + " bytes of dynamic shared memory"
                         : i < kArenaMargin ? " before the block's shared memory"
                                            : " outside every __shared__ variable"));
    }
    const bool written = s.write_phase == phase && s.writer != t;
    const bool read = s.read_phase == phase && s.reader != t;
    const char* hazard = nullptr;
    if (kind == Access::kRead && written) hazard = "read after write";
    if (kind == Access::kWrite && written) hazard = "write after write";
    if (kind == Access::kWrite && !written && read) hazard = "write after read";
    if (kind == Access::kAtomic && ((written && !s.atomic) || read)) hazard = "atomic after a plain access";
    if (hazard && on(kCheckRace)) {
      const uint16_t other = written ? s.writer : s.reader;
      const std::string by = other == kMany ? "several other threads"
                                            : L.who(L.threads[other]);
      fail_in_fiber(std::string("shared-memory race (") + hazard + "): " + L.who(me) + " " +
                    kind_name(kind) + " " + shared_what(L, i) + ", which " + by + " " +
                    (written ? "wrote" : "read") + " since the last barrier");
    }
    if (kind == Access::kRead) {
      if (s.read_phase == phase) {
        if (s.reader != t) s.reader = kMany;
      } else {
        s.read_phase = phase;
        s.reader = t;
      }
    } else if (kind == Access::kAtomic && s.write_phase == phase) {
      if (s.atomic && s.writer != t) s.writer = kMany;  // (after its own plain write: stays plain)
    } else {
      s.write_phase = phase;
      s.writer = t;
      s.atomic = kind == Access::kAtomic;
    }
  }
}


// Whether [p, p + n) lies in a device allocation the launch has met (the last one first).
bool in_known_allocation(Launch& L, uintptr_t p, size_t n) {
  if (L.nranges > 0 && within(L.ranges[L.next_range], p, n)) return true;
  for (int i = 0; i < L.nranges; ++i) {
    if (within(L.ranges[i], p, n)) {
      L.next_range = i;
      return true;
    }
  }
  return false;
}

// Global bounds: [p, p + n) must lie in one live device allocation (then remembered), else the
// access fails before it happens.
void check_global_access(Launch& L, uintptr_t p, size_t n, Access kind) {
  uintptr_t lo = 0, hi = 0;
  const bool inside = g_find_allocation != nullptr && g_find_allocation(p, &lo, &hi);
  if (inside && n <= hi - p) {
    const int slot = L.nranges < kRangeCache ? L.nranges++ : (L.next_range + 1) % kRangeCache;
    L.ranges[slot] = {lo, hi};
    L.next_range = slot;
    return;
  }
  if (g_find_allocation == nullptr) return;
  fail_in_fiber("out-of-bounds global-memory access: " + L.who(*L.current) + " " + kind_name(kind) +
                " " + std::to_string(n) + (n == 1 ? " byte at " : " bytes at ") + described(p) +
                (inside ? ", past the end of the allocation" : ""));
}

void on_access(void* addr, size_t n, Access kind) {
  Launch* L = tls_track;
  if (__builtin_expect(L == nullptr, 1)) return;
  const uintptr_t p = reinterpret_cast<uintptr_t>(addr);
  const uintptr_t arena = reinterpret_cast<uintptr_t>(L->arena);
  if (p - arena < L->arena_bytes) {
    if (L->schedule == 0) {  // the hazards do not depend on the order: checked once
      tls_track = nullptr;  // the bookkeeping below is the emulator's own
      shared_access(*L, p - arena, std::min<size_t>(n, L->arena_bytes - (p - arena)), kind);
      tls_track = L;
    }
    return;
  }
  if (p - reinterpret_cast<uintptr_t>(g_stacks.lo) < g_stacks.bytes) return;  // its own stack
  if (kind == Access::kRead) {  // global reads: their bounds, once (the second schedule's are the same)
    if (L->schedule != 0 || !on(kCheckGlobalBounds) || within(L->views, p, n) ||
        within(L->params, p, n) || in_known_allocation(*L, p, n) || within(g_module, p, n) ||
        within(L->tls, p, n)) {
      return;
    }
    tls_track = nullptr;
    check_global_access(*L, p, n, kind);
    tls_track = L;
    return;
  }
  tls_track = nullptr;
  if (on(kCheckGlobalBounds) && !in_known_allocation(*L, p, n)) check_global_access(*L, p, n, kind);
  L->log_write(p, n, kind == Access::kAtomic);
  tls_track = L;
}

}  // namespace

void note_atomic(void* p, size_t bytes) {
#if SSD_EMU_TRACKED_BUILD
  on_access(p, bytes, Access::kAtomic);  // nothing outside kernel code
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace ssd_emu

#if SSD_EMU_TRACKED_BUILD
// The functions that -fsanitize=thread calls (ThreadSanitizer's ABI), implemented here instead
// of by its runtime: loads and stores reach on_access; atomics (torch's reference counts, in the
// instrumented launchers) stay real atomics; the rest does nothing.
using ssd_emu::Access;
using ssd_emu::on_access;
#define SSD_EMU_HOOK extern "C" __attribute__((visibility("hidden")))
#define SSD_EMU_RW(n)                                                                     \
  SSD_EMU_HOOK void __tsan_read##n(void* a) { on_access(a, n, Access::kRead); }           \
  SSD_EMU_HOOK void __tsan_write##n(void* a) { on_access(a, n, Access::kWrite); }         \
  SSD_EMU_HOOK void __tsan_unaligned_read##n(void* a) { on_access(a, n, Access::kRead); } \
  SSD_EMU_HOOK void __tsan_unaligned_write##n(void* a) { on_access(a, n, Access::kWrite); } \
  SSD_EMU_HOOK void __tsan_volatile_read##n(void* a) { on_access(a, n, Access::kRead); }  \
  SSD_EMU_HOOK void __tsan_volatile_write##n(void* a) { on_access(a, n, Access::kWrite); }
SSD_EMU_RW(1)
SSD_EMU_RW(2)
SSD_EMU_RW(4)
SSD_EMU_RW(8)
SSD_EMU_RW(16)
SSD_EMU_HOOK void __tsan_read_range(void* a, unsigned long n) { on_access(a, n, Access::kRead); }
// Clang's names for the memory builtins (GCC's kernels are built without loop-to-memset
// rewriting, build.py, so that no such call escapes the hooks).
SSD_EMU_HOOK void* __tsan_memcpy(void* d, const void* s, unsigned long n) {
  on_access(const_cast<void*>(s), n, Access::kRead);
  on_access(d, n, Access::kWrite);
  return std::memcpy(d, s, n);
}
SSD_EMU_HOOK void* __tsan_memmove(void* d, const void* s, unsigned long n) {
  on_access(const_cast<void*>(s), n, Access::kRead);
  on_access(d, n, Access::kWrite);
  return std::memmove(d, s, n);
}
SSD_EMU_HOOK void* __tsan_memset(void* d, int c, unsigned long n) {
  on_access(d, n, Access::kWrite);
  return std::memset(d, c, n);
}
SSD_EMU_HOOK void __tsan_write_range(void* a, unsigned long n) { on_access(a, n, Access::kWrite); }
SSD_EMU_HOOK void __tsan_init() {}
SSD_EMU_HOOK void __tsan_func_entry(void*) {}
SSD_EMU_HOOK void __tsan_func_exit() {}
SSD_EMU_HOOK void __tsan_vptr_update(void**, void*) {}
SSD_EMU_HOOK void __tsan_vptr_read(void**) {}
SSD_EMU_HOOK void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
SSD_EMU_HOOK void __tsan_atomic_signal_fence(int) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
#define SSD_EMU_ATOMIC(bits, T)                                                                   \
  SSD_EMU_HOOK T __tsan_atomic##bits##_load(const volatile T* a, int) {                          \
    return __atomic_load_n(a, __ATOMIC_SEQ_CST);                                                  \
  }                                                                                               \
  SSD_EMU_HOOK void __tsan_atomic##bits##_store(volatile T* a, T v, int) {                        \
    __atomic_store_n(a, v, __ATOMIC_SEQ_CST);                                                     \
  }                                                                                               \
  SSD_EMU_HOOK T __tsan_atomic##bits##_exchange(volatile T* a, T v, int) {                        \
    return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST);                                           \
  }                                                                                               \
  SSD_EMU_HOOK T __tsan_atomic##bits##_fetch_add(volatile T* a, T v, int) {                       \
    return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST);                                            \
  }                                                                                               \
  SSD_EMU_HOOK T __tsan_atomic##bits##_fetch_sub(volatile T* a, T v, int) {                       \
    return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST);                                            \
  }                                                                                               \
  SSD_EMU_HOOK T __tsan_atomic##bits##_fetch_and(volatile T* a, T v, int) {                       \
    return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST);                                            \
  }                                                                                               \
  SSD_EMU_HOOK T __tsan_atomic##bits##_fetch_or(volatile T* a, T v, int) {                        \
    return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST);                                             \
  }                                                                                               \
  SSD_EMU_HOOK T __tsan_atomic##bits##_fetch_xor(volatile T* a, T v, int) {                       \
    return __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST);                                            \
  }                                                                                               \
  SSD_EMU_HOOK T __tsan_atomic##bits##_fetch_nand(volatile T* a, T v, int) {                      \
    return __atomic_fetch_nand(a, v, __ATOMIC_SEQ_CST);                                           \
  }                                                                                               \
  SSD_EMU_HOOK int __tsan_atomic##bits##_compare_exchange_strong(volatile T* a, T* c, T v, int,  \
                                                                 int) {                           \
    return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);      \
  }                                                                                               \
  SSD_EMU_HOOK int __tsan_atomic##bits##_compare_exchange_weak(volatile T* a, T* c, T v, int,    \
                                                               int) {                             \
    return __atomic_compare_exchange_n(a, c, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);       \
  }                                                                                               \
  SSD_EMU_HOOK T __tsan_atomic##bits##_compare_exchange_val(volatile T* a, T c, T v, int, int) { \
    __atomic_compare_exchange_n(a, &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);            \
    return c;                                                                                     \
  }
SSD_EMU_ATOMIC(8, char)
SSD_EMU_ATOMIC(16, short)
SSD_EMU_ATOMIC(32, int)
SSD_EMU_ATOMIC(64, long)
#endif
