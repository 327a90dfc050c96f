// SPDX-License-Identifier: Apache-2.0
// Loop devices, for rootfs mounts with the `loop` option (a file-backed filesystem image; the
// blockfile and erofs snapshotters hand those out). As containerd's mount code does (v2.3.4
// core/mount/losetup_linux.go): take a free device from /dev/loop-control, bind the file with
// autoclear (the device goes away with the last mount), retry when another process raced us
// to the same device.
#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "common.h"

namespace shim {
namespace {

constexpr int kAttempts = 100;

// Older kernels (< 5.8) have no LOOP_CONFIGURE: bind, then set the flags.
int SetFdAndStatus(int dev, int file, const loop_info64& info) {
  if (ioctl(dev, LOOP_SET_FD, file) != 0) return -1;
  if (ioctl(dev, LOOP_SET_STATUS64, &info) != 0) {
    int err = errno;
    ioctl(dev, LOOP_CLR_FD, 0);
    errno = err;
    return -1;
  }
  return 0;
}

// loopAttach(file, readOnly, directIo): {fd, device}. The caller mounts `device` and then closes
// `fd`; with autoclear the device is released when the mount goes.
Napi::Value LoopAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string file = ArgString(info, 0, "file");
  bool readOnly = info.Length() > 1 && info[1].ToBoolean().Value();
  bool direct = info.Length() > 2 && info[2].ToBoolean().Value();
  int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl < 0) ThrowErrno(env, errno, "open", "/dev/loop-control");
  int mode = readOnly ? O_RDONLY : O_RDWR;
  int backing = open(file.c_str(), mode | O_CLOEXEC | (direct ? O_DIRECT : 0));
  if (backing < 0) {
    int err = errno;
    close(ctl);
    ThrowErrno(env, err, "open", file.c_str());
  }
  loop_config cfg{};
  cfg.fd = static_cast<__u32>(backing);
  cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR | (readOnly ? LO_FLAGS_READ_ONLY : 0) | (direct ? LO_FLAGS_DIRECT_IO : 0);
  strncpy(reinterpret_cast<char*>(cfg.info.lo_file_name), file.c_str(), LO_NAME_SIZE - 1);
  int err = 0;
  const char* failed = nullptr;
  for (int attempt = 0; attempt < kAttempts; attempt++) {
    int n = ioctl(ctl, LOOP_CTL_GET_FREE);
    if (n < 0) {
      err = errno, failed = "LOOP_CTL_GET_FREE";
      break;
    }
    std::string device = "/dev/loop" + std::to_string(n);
    int dev = open(device.c_str(), mode | O_CLOEXEC);
    if (dev < 0) {
      if (errno == ENOENT) continue;  // not created yet, or removed meanwhile
      err = errno, failed = "open loop device";
      break;
    }
    int r = ioctl(dev, LOOP_CONFIGURE, &cfg);
    if (r != 0 && (errno == EINVAL || errno == ENOTTY)) r = SetFdAndStatus(dev, backing, cfg.info);
    if (r == 0) {
      close(backing);
      close(ctl);
      Napi::Object out = Napi::Object::New(env);
      out.Set("fd", Napi::Number::New(env, dev));
      out.Set("device", Napi::String::New(env, device));
      return out;
    }
    int e = errno;
    close(dev);
    if (e != EBUSY) {
      err = e, failed = "LOOP_CONFIGURE";
      break;
    }
    // EBUSY: another process took this device between GET_FREE and our ioctl.
  }
  close(backing);
  close(ctl);
  if (failed == nullptr) err = EBUSY, failed = "LOOP_CONFIGURE";
  ThrowErrno(env, err, failed, file.c_str());
}

}  // namespace

void InitLoop(Napi::Env env, Napi::Object exports) {
  exports.Set("loopAttach", Napi::Function::New(env, LoopAttach, "loopAttach"));
}

}  // namespace shim
