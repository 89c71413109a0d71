// hwsim-runner: the small program that runs an hwsim artifact where Python is not available (an ARM
// board, or qemu-aarch64 on the build machine). It loads the Relax VM library with the TVM runtime,
// runs `main` on .npy inputs, writes the outputs as OUT_DIR/out<i>.npy and prints per-run times as
// JSON. Built by codegen/cross.py against the target's libtvm_runtime.so, which ships beside it.
//
//   hwsim-runner MODEL.so OUT_DIR [--repeat N] INPUT.npy...    (threads: TVM_NUM_THREADS)
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <cstdlib>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>
#include <algorithm>

using tvm::ffi::Any;
using tvm::ffi::Function;
using tvm::ffi::Module;
using tvm::ffi::Tensor;

struct CPUAlloc {  // 64-byte aligned host memory, as TVM kernels expect
  void AllocData(DLTensor* t) { t->data = std::aligned_alloc(64, (tvm::ffi::GetDataSize(*t) + 63) / 64 * 64); }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

static DLDataType parse_descr(const std::string& d) {
  if (d.size() < 3 || (d[0] != '<' && d[0] != '|')) throw std::runtime_error("unsupported npy descr " + d);
  int bits = std::stoi(d.substr(2)) * 8;
  uint8_t code = d[1] == 'f' ? kDLFloat : d[1] == 'i' ? kDLInt : d[1] == 'u' ? kDLUInt : d[1] == 'b' ? kDLBool : 255;
  if (code == 255) throw std::runtime_error("unsupported npy descr " + d);
  return DLDataType{code, static_cast<uint8_t>(bits), 1};
}

static Tensor read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  char magic[8];
  f.read(magic, 8);
  if (std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error(path + ": not an .npy file");
  uint32_t hlen = 0;
  if (magic[6] == 1) { uint16_t h; f.read(reinterpret_cast<char*>(&h), 2); hlen = h; }
  else f.read(reinterpret_cast<char*>(&hlen), 4);
  std::string header(hlen, ' ');
  f.read(&header[0], hlen);
  auto field = [&](const std::string& key) {
    size_t p = header.find("'" + key + "'");
    if (p == std::string::npos) throw std::runtime_error(path + ": npy header lacks " + key);
    return header.substr(header.find(':', p) + 1);
  };
  std::string descr = field("descr");
  descr = descr.substr(descr.find('\'') + 1);
  descr = descr.substr(0, descr.find('\''));
  if (field("fortran_order").find("True") < field("fortran_order").find(',')) throw std::runtime_error(path + ": fortran order");
  std::string s = field("shape");
  s = s.substr(s.find('(') + 1, s.find(')') - s.find('(') - 1);
  std::vector<int64_t> shape;
  std::stringstream ss(s);
  std::string tok;
  while (std::getline(ss, tok, ',')) if (tok.find_first_not_of(' ') != std::string::npos) shape.push_back(std::stoll(tok));
  Tensor t = Tensor::FromNDAlloc(CPUAlloc(), tvm::ffi::Shape(shape), parse_descr(descr), DLDevice{kDLCPU, 0});
  size_t n = tvm::ffi::GetDataSize(*t.GetDLTensorPtr());
  f.read(static_cast<char*>(t.data_ptr()), n);
  if (static_cast<size_t>(f.gcount()) != n) throw std::runtime_error(path + ": truncated data");
  return t;
}

static void write_npy(const std::string& path, const Tensor& t) {
  const DLTensor* d = t.GetDLTensorPtr();
  char kind = d->dtype.code == kDLFloat ? 'f' : d->dtype.code == kDLInt ? 'i' : d->dtype.code == kDLUInt ? 'u' : 'b';
  std::string shape;
  for (int i = 0; i < d->ndim; ++i) shape += std::to_string(d->shape[i]) + (d->ndim == 1 ? "," : i + 1 < d->ndim ? ", " : "");
  std::string header = "{'descr': '<" + std::string(1, kind) + std::to_string(d->dtype.bits / 8) +
                       "', 'fortran_order': False, 'shape': (" + shape + "), }";
  while ((10 + header.size() + 1) % 64) header += ' ';
  header += '\n';
  size_t n = tvm::ffi::GetDataSize(*d);
  std::string tmp = path + ".tmp";
  std::ofstream f(tmp, std::ios::binary);
  uint16_t hlen = static_cast<uint16_t>(header.size());
  f.write("\x93NUMPY\x01\x00", 8);
  f.write(reinterpret_cast<const char*>(&hlen), 2);
  f << header;
  f.write(static_cast<const char*>(d->data) + d->byte_offset, n);
  f.close();
  if (!f || std::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error("cannot write " + path);
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL.so OUT_DIR [--repeat N] INPUT.npy...\n", argv[0]);
    return 2;
  }
  try {
    std::string lib = argv[1], out_dir = argv[2];
    int repeat = 0;
    std::vector<std::string> inputs;
    for (int i = 3; i < argc; ++i) {
      if (std::string(argv[i]) == "--repeat" && i + 1 < argc) repeat = std::atoi(argv[++i]);
      else inputs.push_back(argv[i]);
    }
    Module mod = Module::LoadFromFile(lib);
    Module vm = mod->GetFunction("vm_load_executable").value()().cast<Module>();
    vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, 2);  // pooled allocator
    Function main_fn = vm->GetFunction("main").value();
    std::vector<Any> args;
    for (auto& p : inputs) args.push_back(read_npy(p));
    std::vector<tvm::ffi::AnyView> views(args.begin(), args.end());
    Any result;
    auto call = [&]() { main_fn.CallPacked(views.data(), static_cast<int32_t>(views.size()), &result); };
    call();
    std::vector<Tensor> outs;
    if (auto t = result.try_cast<Tensor>()) outs.push_back(*t);
    else for (const Any& o : result.cast<tvm::ffi::Array<Any>>()) outs.push_back(o.cast<Tensor>());
    for (size_t i = 0; i < outs.size(); ++i) write_npy(out_dir + "/out" + std::to_string(i) + ".npy", outs[i]);
    std::vector<double> ms;
    for (int r = 0; r < repeat; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      call();
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::printf("{\"outputs\": %zu, \"times_ms\": [", outs.size());
    for (size_t i = 0; i < ms.size(); ++i) std::printf("%s%.4f", i ? ", " : "", ms[i]);
    std::printf("]}\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
