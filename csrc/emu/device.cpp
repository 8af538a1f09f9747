// The emulated CUDA device as a torch device (test-only module ssd_fast._C_emu): torch's
// PrivateUse1 backend, named "emu" by tests/emu_device.py. Its memory is host memory, filled
// with 0xFF bytes when allocated (a NaN in every float format), so that a kernel relying on
// zeroed memory fails. ssd_fast's ops dispatch to the kernels that csrc/ops/cuda/*.cu register
// for SSD_FAST_CUDA_KEY (PrivateUse1 here); every other aten op runs torch's CPU kernel on the
// same memory (emu_fallback). Copies from the device to the host and .item() are counted: on a
// GPU they synchronise the host.
#include <Python.h>

#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <ATen/native/Resize.h>
#include <ATen/ops/_reshape_alias_native.h>
#include <ATen/ops/as_strided_native.h>
#include <ATen/ops/view_native.h>
#include <c10/core/Allocator.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>

#include "emu/emu.h"

namespace ssd_emu {
namespace {

constexpr c10::DeviceType kEmu = c10::DeviceType::PrivateUse1;
const c10::Device kDevice(kEmu, 0);

// ---- memory --------------------------------------------------------------------------------------

std::mutex g_alloc_mutex;
std::map<uintptr_t, size_t> g_live;  // address -> bytes of every live device allocation
size_t g_live_bytes = 0, g_peak_bytes = 0;

void free_device(void* p) {
  if (p == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(g_alloc_mutex);
    auto it = g_live.find(reinterpret_cast<uintptr_t>(p));
    g_live_bytes -= it->second;
    g_live.erase(it);
  }
  std::free(p);
}

struct EmuAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    void* p = n ? std::malloc(n) : nullptr;
    TORCH_CHECK(n == 0 || p != nullptr, "emulated CUDA: out of memory allocating ", n, " bytes");
    if (p) {
      std::memset(p, 0xFF, n);
      std::lock_guard<std::mutex> lock(g_alloc_mutex);
      g_live[reinterpret_cast<uintptr_t>(p)] = n;
      g_live_bytes += n;
      g_peak_bytes = std::max(g_peak_bytes, g_live_bytes);
    }
    return {p, p, &free_device, kDevice};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &free_device; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    std::memcpy(dest, src, count);
  }
};

EmuAllocator g_allocator;
REGISTER_ALLOCATOR(kEmu, &g_allocator);

// Inside an allocation: "byte k of an N-byte device allocation"; outside: where the nearest
// allocations end and begin (an access one element past an output names that output).
std::string describe_address(uintptr_t p) {
  std::lock_guard<std::mutex> lock(g_alloc_mutex);
  auto above = g_live.upper_bound(p);
  auto sized = [](size_t bytes) { return "a " + std::to_string(bytes) + "-byte device allocation"; };
  if (above != g_live.begin()) {
    auto it = std::prev(above);
    if (p < it->first + it->second) {
      return "byte " + std::to_string(p - it->first) + " of " + sized(it->second);
    }
  }
  std::string s = "outside every device allocation";
  const uintptr_t kNear = 1 << 16;  // farther away, the neighbours say nothing useful
  std::string near;
  if (above != g_live.begin()) {
    auto it = std::prev(above);
    const uintptr_t end = it->first + it->second;
    if (p - end < kNear) near = std::to_string(p - end) + " bytes past the end of " + sized(it->second);
  }
  if (above != g_live.end() && above->first - p < kNear) {
    near += (near.empty() ? "" : ", ") + std::to_string(above->first - p) + " bytes before " +
            sized(above->second);
  }
  return near.empty() ? s : s + ": " + near;
}

bool find_allocation(uintptr_t p, uintptr_t* lo, uintptr_t* hi) {
  std::lock_guard<std::mutex> lock(g_alloc_mutex);
  auto it = g_live.upper_bound(p);
  if (it == g_live.begin()) return false;
  --it;
  if (p >= it->first + it->second) return false;
  *lo = it->first;
  *hi = it->first + it->second;
  return true;
}

// ---- device, guard and hooks -------------------------------------------------------------------

void check_index(c10::DeviceIndex i) {
  TORCH_CHECK(i == 0 || i == -1, "emulated CUDA: there is one emu device (emu:0), got emu:", int(i));
}

struct EmuGuard final : c10::impl::DeviceGuardImplInterface {
  c10::DeviceType type() const override { return kEmu; }
  c10::Device exchangeDevice(c10::Device d) const override {
    check_index(d.index());
    return kDevice;
  }
  c10::Device getDevice() const override { return kDevice; }
  void setDevice(c10::Device d) const override { check_index(d.index()); }
  void uncheckedSetDevice(c10::Device) const noexcept override {}
  c10::Stream getStream(c10::Device d) const noexcept override {
    return c10::Stream(c10::Stream::DEFAULT, d);
  }
  c10::Stream exchangeStream(c10::Stream) const noexcept override {
    return c10::Stream(c10::Stream::DEFAULT, kDevice);
  }
  c10::DeviceIndex deviceCount() const noexcept override { return 1; }
  // Every launch has completed when it returns: events are always reached.
  void record(void**, const c10::Stream&, const c10::DeviceIndex, const c10::EventFlag) const override {}
  void block(void*, const c10::Stream&) const override {}
  bool queryEvent(void*) const override { return true; }
  void destroyEvent(void*, const c10::DeviceIndex) const noexcept override {}
};
C10_REGISTER_GUARD_IMPL(PrivateUse1, EmuGuard);

struct EmuHooks final : at::PrivateUse1HooksInterface {
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return true; }
  const at::Generator& getDefaultGenerator(c10::DeviceIndex) const override {
    return at::detail::getDefaultCPUGenerator();  // random ops run on the CPU (emu_fallback)
  }
  at::Device getDeviceFromPtr(void*) const override { return kDevice; }
  bool hasPrimaryContext(c10::DeviceIndex) const override { return true; }
  void resizePrivateUse1Bytes(const c10::Storage& storage, size_t newsize) const override {
    at::native::resize_bytes_cpu(storage.unsafeGetStorageImpl(), newsize);
  }
};

// ---- what would synchronise a GPU with the host -----------------------------------------------

std::atomic<uint64_t> g_device_to_host{0}, g_item_calls{0}, g_syncing_ops{0};
thread_local int tls_fallback_depth = 0;  // inside emu_fallback: device-side work

bool is_emu(const at::Tensor& t) { return t.defined() && t.device().type() == kEmu; }

// A CPU storage over the very memory of an emu storage (not owned), one per emu storage met,
// so that the CPU kernels see which arguments share memory, and a result that lies in an
// argument's memory (a view, of any dtype) can be given back as a view of the emu storage.
class StorageAliases {
 public:
  c10::Storage cpu_of(const c10::Storage& emu) {
    for (const auto& [e, c] : pairs_) {
      if (e.unsafeGetStorageImpl() == emu.unsafeGetStorageImpl()) return c;
    }
    c10::Storage cpu(c10::Storage::use_byte_size_t(), emu.nbytes(),
                     c10::DataPtr(emu.mutable_data(), c10::Device(at::kCPU)), nullptr, false);
    pairs_.emplace_back(emu, cpu);
    return cpu;
  }
  const c10::Storage* emu_of(const c10::Storage& cpu) const {
    for (const auto& [e, c] : pairs_) {
      if (c.unsafeGetStorageImpl() == cpu.unsafeGetStorageImpl()) return &e;
    }
    return nullptr;
  }

 private:
  std::vector<std::pair<c10::Storage, c10::Storage>> pairs_;  // (emu, CPU)
};

// t (sizes, strides, offset, dtype, conjugate and negative bits) on a storage of the other device.
at::Tensor view_on(const at::Tensor& t, const c10::Storage& storage, c10::DispatchKey key) {
  at::Tensor v = at::detail::make_tensor<c10::TensorImpl>(c10::Storage(storage),
                                                          c10::DispatchKeySet(key), t.dtype());
  v.unsafeGetTensorImpl()->set_sizes_and_strides(t.sizes(), t.strides(), t.storage_offset());
  v._set_conj(t.is_conj());
  v._set_neg(t.is_neg());
  return v;
}

// A CPU tensor over the very memory of an emu tensor.
at::Tensor cpu_alias(const at::Tensor& t, StorageAliases& aliases) {
  if (!is_emu(t)) return t;
  return view_on(t, aliases.cpu_of(t.storage()), c10::DispatchKey::CPU);
}

at::Tensor cpu_alias(const at::Tensor& t) {
  StorageAliases aliases;
  return cpu_alias(t, aliases);
}

// The ops that read a device value back on CUDA, run by emu_fallback: counted as host
// synchronisations (their output's size depends on the data, or they return a host value).
// Boolean-mask indexing reaches here as its nonzero.
bool synchronises(const c10::OperatorHandle& op) {
  static const std::set<std::string> kOps = {
      "aten::nonzero", "aten::masked_select", "aten::_unique", "aten::_unique2",
      "aten::unique_dim", "aten::unique_consecutive", "aten::unique_dim_consecutive",
      "aten::equal", "aten::is_nonzero", "aten::bincount", "aten::repeat_interleave"};
  return kOps.count(op.schema().name()) != 0;
}

// ---- the aten ops the device needs natively ---------------------------------------------------

at::Tensor empty_memory_format(at::IntArrayRef size, std::optional<at::ScalarType> dtype,
                               std::optional<at::Layout>, std::optional<at::Device> device,
                               std::optional<bool>, std::optional<at::MemoryFormat> memory_format) {
  if (device) check_index(device->index());
  return at::detail::empty_generic(size, &g_allocator, c10::DispatchKeySet(c10::DispatchKey::PrivateUse1),
                                   c10::dtype_or_default(dtype), memory_format);
}

at::Tensor empty_strided(at::IntArrayRef size, at::IntArrayRef stride,
                         std::optional<at::ScalarType> dtype, std::optional<at::Layout>,
                         std::optional<at::Device> device, std::optional<bool>) {
  if (device) check_index(device->index());
  return at::detail::empty_strided_generic(size, stride, &g_allocator,
                                           c10::DispatchKeySet(c10::DispatchKey::PrivateUse1),
                                           c10::dtype_or_default(dtype));
}

const at::Tensor& resize_(const at::Tensor& self, at::IntArrayRef size,
                          std::optional<at::MemoryFormat> memory_format) {
  at::native::resize_impl_cpu_(self.unsafeGetTensorImpl(), size, std::nullopt);
  if (memory_format) self.unsafeGetTensorImpl()->empty_tensor_restride(*memory_format);
  return self;
}

at::Tensor& copy_(at::Tensor& self, const at::Tensor& src, bool non_blocking) {
  if (tls_fallback_depth == 0 && is_emu(src) && !is_emu(self) && !non_blocking) ++g_device_to_host;
  StorageAliases aliases;
  cpu_alias(self, aliases).copy_(cpu_alias(src, aliases), non_blocking);
  return self;
}

at::Tensor copy_from(const at::Tensor& self, const at::Tensor& dst, bool non_blocking) {
  at::Tensor d = dst;
  copy_(d, self, non_blocking);
  return dst;
}

at::Tensor copy_from_and_resize(const at::Tensor& self, const at::Tensor& dst) {
  if (is_emu(dst)) resize_(dst, self.sizes(), std::nullopt);
  else dst.resize_(self.sizes());
  return copy_from(self, dst, false);
}

at::Scalar local_scalar_dense(const at::Tensor& self) {
  if (tls_fallback_depth == 0) ++g_item_calls;
  return at::_local_scalar_dense(cpu_alias(self));
}

// Every other op: torch's CPU kernel on CPU aliases of the emu tensors (no copies: in-place
// results land in the emu memory). A returned tensor in an argument's memory comes back as an
// emu view of that memory; a new one is copied to fresh emu memory. An out= argument the op
// must resize (an alias's storage cannot grow) is run again with a CPU copy, copied back.
void emu_fallback(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  struct Depth {
    Depth() { ++tls_fallback_depth; }
    ~Depth() { --tls_fallback_depth; }
  } depth;
  const auto& schema_args = op.schema().arguments();
  const size_t begin = stack->size() - schema_args.size();
  if (tls_fallback_depth == 1 && synchronises(op)) ++g_syncing_ops;
  const std::vector<c10::IValue> given(stack->begin() + begin, stack->end());
  StorageAliases storages;
  std::vector<std::pair<at::Tensor, at::Tensor>> args;  // (CPU alias or out= copy, emu tensor)
  std::vector<std::pair<at::Tensor, at::Tensor>> outs;  // out= arguments run on a copy
  std::vector<std::pair<at::Tensor, at::Tensor>> written;  // other mutable (CPU alias, emu)
  auto to_cpu = [&](const at::Tensor& t) {
    if (!is_emu(t)) return t;
    at::Tensor a = cpu_alias(t, storages);
    args.emplace_back(a, t);
    return a;
  };
  auto run = [&](bool copy_outs) {
    stack->resize(begin);
    for (size_t i = 0; i < given.size(); ++i) {
      c10::IValue v = given[i];
      const c10::AliasInfo* alias = schema_args[i].alias_info();
      if (copy_outs && v.isTensor() && is_emu(v.toTensor()) && alias && alias->isWrite() &&
          schema_args[i].kwarg_only()) {
        at::Tensor e = v.toTensor();
        at::Tensor c = cpu_alias(e, storages).clone();
        outs.emplace_back(c, e);
        args.emplace_back(c, e);
        v = c;
      } else if (v.isTensor()) {
        const at::Tensor e = v.toTensor();
        v = to_cpu(e);
        if (is_emu(e) && alias && alias->isWrite()) written.emplace_back(v.toTensor(), e);
      } else if (v.isTensorList()) {
        c10::List<at::Tensor> out;
        for (const at::Tensor& t : v.toTensorList()) out.push_back(to_cpu(t));
        v = out;
      } else if (v.isOptionalTensorList()) {
        c10::List<std::optional<at::Tensor>> out;
        for (const std::optional<at::Tensor>& t : v.toOptionalTensorList()) {
          out.push_back(t ? std::optional<at::Tensor>(to_cpu(*t)) : std::nullopt);
        }
        v = out;
      } else if (v.isDevice() && v.toDevice().type() == kEmu) {
        check_index(v.toDevice().index());
        v = c10::Device(at::kCPU);
      }
      stack->push_back(std::move(v));
    }
    op.redispatchBoxed(c10::DispatchKeySet(c10::DispatchKey::CPU), stack);
  };
  try {
    run(false);
  } catch (const c10::Error& e) {  // resize_output raises before the op writes anything
    if (std::string(e.what()).find("not resizable") == std::string::npos) throw;
    args.clear();
    written.clear();
    run(true);
  }
  // An op may change a mutable argument's sizes and strides (an out= argument that needs no more
  // memory is resized in place): the alias has them, the emu tensor gets them.
  for (const auto& [c, e] : written) {
    if (c.sizes() != e.sizes() || c.strides() != e.strides() ||
        c.storage_offset() != e.storage_offset()) {
      e.unsafeGetTensorImpl()->set_sizes_and_strides(c.sizes(), c.strides(), c.storage_offset());
    }
  }
  for (const auto& [c, e] : outs) {
    if (c.sizes() != e.sizes()) resize_(e, c.sizes(), std::nullopt);
    cpu_alias(e).copy_(c);
  }
  auto to_emu = [&](const at::Tensor& t) -> at::Tensor {
    if (!t.defined() || t.device().type() != at::kCPU) return t;
    for (const auto& [cpu, emu] : args) {
      if (t.unsafeGetTensorImpl() == cpu.unsafeGetTensorImpl()) return emu;
    }
    if (const c10::Storage* emu = storages.emu_of(t.storage())) {
      return view_on(t, *emu, c10::DispatchKey::PrivateUse1);
    }
    at::Tensor out = t.is_non_overlapping_and_dense()
                         ? empty_strided(t.sizes(), t.strides(), t.scalar_type(), {}, kDevice, {})
                         : empty_memory_format(t.sizes(), t.scalar_type(), {}, kDevice, {}, {});
    cpu_alias(out).copy_(t);
    return out;
  };
  for (size_t i = stack->size() - op.schema().returns().size(); i < stack->size(); ++i) {
    c10::IValue& v = (*stack)[i];
    if (v.isTensor()) {
      v = to_emu(v.toTensor());
    } else if (v.isTensorList()) {
      c10::List<at::Tensor> out;
      for (const at::Tensor& t : v.toTensorList()) out.push_back(to_emu(t));
      v = out;
    }
  }
}

TORCH_LIBRARY_IMPL(_, PrivateUse1, m) {
  m.fallback(torch::CppFunction::makeFromBoxedFunction<&emu_fallback>());
}

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("empty.memory_format", &empty_memory_format);
  m.impl("empty_strided", &empty_strided);
  m.impl("as_strided", &at::native::as_strided_tensorimpl);
  m.impl("view", &at::native::view);
  m.impl("_reshape_alias", &at::native::_reshape_alias);
  m.impl("resize_", &resize_);
  m.impl("copy_", &copy_);
  m.impl("_copy_from", &copy_from);
  m.impl("_copy_from_and_resize", &copy_from_and_resize);
  m.impl("_local_scalar_dense", &local_scalar_dense);
}

// ---- the Python module --------------------------------------------------------------------------

PyObject* py_counters(PyObject*, PyObject*) {
  const Stats s = stats();
  size_t live = 0, peak = 0;
  {
    std::lock_guard<std::mutex> lock(g_alloc_mutex);
    live = g_live_bytes;
    peak = g_peak_bytes;
  }
  return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K}", "live_bytes",
                       static_cast<unsigned long long>(live), "peak_bytes",
                       static_cast<unsigned long long>(peak), "device_to_host_copies",
                       static_cast<unsigned long long>(g_device_to_host.load()), "item_calls",
                       static_cast<unsigned long long>(g_item_calls.load()), "syncing_ops",
                       static_cast<unsigned long long>(g_syncing_ops.load()),
                       "launches", static_cast<unsigned long long>(s.launches), "threads",
                       static_cast<unsigned long long>(s.threads), "fiber_switches",
                       static_cast<unsigned long long>(s.fiber_switches), "schedule_runs",
                       static_cast<unsigned long long>(s.schedule_runs));
}

PyObject* py_set_checks(PyObject*, PyObject* arg) {
  const unsigned long mask = PyLong_AsUnsignedLong(arg);
  if (PyErr_Occurred()) return nullptr;
  set_checks(static_cast<unsigned>(mask));
  Py_RETURN_NONE;
}

PyObject* py_checks(PyObject*, PyObject*) { return PyLong_FromUnsignedLong(checks()); }

PyObject* py_kernels(PyObject*, PyObject*) {
  PyObject* d = PyDict_New();
  if (d == nullptr) return nullptr;
  for (const auto& [name, count] : kernel_launches()) {
    PyObject* n = PyLong_FromUnsignedLongLong(count);
    if (n == nullptr || PyDict_SetItemString(d, name.c_str(), n) < 0) {
      Py_XDECREF(n);
      Py_DECREF(d);
      return nullptr;
    }
    Py_DECREF(n);
  }
  return d;
}

PyObject* py_reset_peak_bytes(PyObject*, PyObject*) {
  std::lock_guard<std::mutex> lock(g_alloc_mutex);
  g_peak_bytes = g_live_bytes;
  Py_RETURN_NONE;
}

PyMethodDef g_methods[] = {
    {"kernels", py_kernels, METH_NOARGS,
     "Every kernel the module holds (by name, template arguments aside) and how many times it "
     "was launched."},
    {"reset_peak_bytes", py_reset_peak_bytes, METH_NOARGS,
     "Start peak_bytes (the most device memory live at once) over from what is live now."},
    {"set_checks", py_set_checks, METH_O,
     "set_checks(mask): the checks of the emulated device that are on (CHECKS: name -> bit)."},
    {"checks", py_checks, METH_NOARGS, "The checks that are on (a mask of CHECKS' bits)."},
    {"counters", py_counters, METH_NOARGS,
     "What the emulated device did since the module was loaded: live_bytes and peak_bytes of "
     "device memory; device_to_host_copies, item_calls and syncing_ops (nonzero, boolean "
     "indexing, unique...: what synchronises a GPU with the host); launches, threads, "
     "fiber_switches, schedule_runs."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace
}  // namespace ssd_emu

#define SSD_EMU_STR2(x) #x
#define SSD_EMU_STR(x) SSD_EMU_STR2(x)
#define SSD_EMU_INIT2(name) PyInit_##name
#define SSD_EMU_INIT(name) SSD_EMU_INIT2(name)

extern "C" PyObject* SSD_EMU_INIT(SSD_EMU_MODULE)(void) {
  static PyModuleDef def = {PyModuleDef_HEAD_INIT, SSD_EMU_STR(SSD_EMU_MODULE),
                            "ssd_fast's emulated CUDA device (tests only)", -1,
                            ssd_emu::g_methods};
  at::RegisterPrivateUse1HooksInterface(new ssd_emu::EmuHooks());
  ssd_emu::set_address_describer(&ssd_emu::describe_address);
  ssd_emu::set_allocation_finder(&ssd_emu::find_allocation);
  PyObject* m = PyModule_Create(&def);
  if (m == nullptr) return nullptr;
  PyObject* names = Py_BuildValue(
      "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "launch", ssd_emu::kCheckLaunch, "barrier",
      ssd_emu::kCheckBarrier, "warp", ssd_emu::kCheckWarp, "race", ssd_emu::kCheckRace,
      "schedules", ssd_emu::kCheckSchedules, "poison", ssd_emu::kCheckPoison, "bounds",
      ssd_emu::kCheckBounds, "global_race", ssd_emu::kCheckGlobalRace, "global_bounds",
      ssd_emu::kCheckGlobalBounds);
  if (names == nullptr || PyModule_AddObject(m, "CHECKS", names) < 0) {
    Py_XDECREF(names);
    Py_DECREF(m);
    return nullptr;
  }
#if defined(__SANITIZE_ADDRESS__)
  PyModule_AddStringConstant(m, "BUILD", "asan");
#else
  PyModule_AddStringConstant(m, "BUILD", "tracked");
#endif
  return m;
}
