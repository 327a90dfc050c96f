// SPDX-License-Identifier: Apache-2.0
// Thin wrappers over single syscalls: prctl, pipes, pidfds, mount/umount,
// fd flags, eventfd and the terminal window size. All of them are quick
// (they run on the JS thread) and every fd they create is O_CLOEXEC.

#include "common.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <system_error>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef UMOUNT_NOFOLLOW
#define UMOUNT_NOFOLLOW 8
#endif

namespace shim {

namespace {

constexpr int64_t kMaxSafe = 9007199254740991LL;  // 2^53 - 1

// prctl(option, arg2?, arg3?, arg4?, arg5?): number
// Only for options whose arguments are plain integers: a JS number can never
// be a valid pointer, so options that take a pointer fail with EFAULT at best.
Napi::Value Prctl(const Napi::CallbackInfo& info) {
  int option = ArgInt(info, 0, "option", 0, INT32_MAX);
  unsigned long a[4];
  for (size_t i = 0; i < 4; i++) {
    a[i] = static_cast<unsigned long>(
        ArgInt64(info, i + 1, "arg", -kMaxSafe, kMaxSafe, 0, true));
  }
  int r = prctl(option, a[0], a[1], a[2], a[3]);
  if (r < 0) ThrowErrno(info.Env(), errno, "prctl");
  return Napi::Number::New(info.Env(), r);
}

// pipe(): [readFd, writeFd], both O_CLOEXEC and blocking.
Napi::Value Pipe(const Napi::CallbackInfo& info) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) ThrowErrno(info.Env(), errno, "pipe2");
  Napi::Array out = Napi::Array::New(info.Env(), 2);
  out.Set(0u, Napi::Number::New(info.Env(), p[0]));
  out.Set(1u, Napi::Number::New(info.Env(), p[1]));
  return out;
}

// pidfdOpen(pid): number -- pidfd_open always sets O_CLOEXEC.
Napi::Value PidfdOpen(const Napi::CallbackInfo& info) {
  int pid = ArgInt(info, 0, "pid", 1, INT32_MAX);
  long fd = syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) ThrowErrno(info.Env(), errno, "pidfd_open");
  return Napi::Number::New(info.Env(), static_cast<double>(fd));
}

// pidfdSendSignal(pidfd, signal): void
Napi::Value PidfdSendSignal(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0, "pidfd");
  int sig = ArgInt(info, 1, "signal", 0, _NSIG - 1);
  if (syscall(SYS_pidfd_send_signal, fd, sig, nullptr, 0) != 0)
    ThrowErrno(info.Env(), errno, "pidfd_send_signal");
  return info.Env().Undefined();
}

struct MountArgs {
  std::string source, target, fstype, data;
  bool noSource = false, noFstype = false, noData = false;
  unsigned long flags = 0;

  int Do() const {
    return mount(noSource ? nullptr : source.c_str(), target.c_str(),
                 noFstype ? nullptr : fstype.c_str(), flags,
                 noData ? nullptr : data.c_str());
  }
};

MountArgs ReadMountArgs(const Napi::CallbackInfo& info, size_t first) {
  MountArgs m;
  m.source = ArgString(info, first, "source", true, &m.noSource);
  m.target = ArgString(info, first + 1, "target");
  m.fstype = ArgString(info, first + 2, "fstype", true, &m.noFstype);
  m.flags = static_cast<unsigned long>(
      ArgInt64(info, first + 3, "flags", 0, kMaxSafe, 0, false));
  m.data = ArgString(info, first + 4, "data", true, &m.noData);
  return m;
}

// mount(source|null, target, fstype|null, flags, data|null): void
Napi::Value Mount(const Napi::CallbackInfo& info) {
  MountArgs m = ReadMountArgs(info, 0);
  if (m.Do() != 0) ThrowErrno(info.Env(), errno, "mount", m.target.c_str());
  return info.Env().Undefined();
}

// mountInDir(dir, source, target, fstype, flags, data): void
// Runs the mount on a short-lived thread that has its own cwd (CLONE_FS
// unshared), so relative paths in the arguments (e.g. overlay lowerdir=)
// resolve against `dir` while the process cwd stays untouched.
Napi::Value MountInDir(const Napi::CallbackInfo& info) {
  std::string dir = ArgString(info, 0, "dir");
  MountArgs m = ReadMountArgs(info, 1);
  int err = 0;
  const char* failed = nullptr;
  try {
    StartThreadSignalsBlocked([&] {
      if (unshare(CLONE_FS) != 0) {
        err = errno, failed = "unshare";
      } else if (chdir(dir.c_str()) != 0) {
        err = errno, failed = "chdir";
      } else if (m.Do() != 0) {
        err = errno, failed = "mount";
      }
    }).join();
  } catch (const std::system_error& e) {
    ThrowErrno(info.Env(), e.code().value(), "pthread_create");
  }
  if (failed != nullptr) {
    bool atMount = std::string(failed) == "mount";
    const char* path = atMount ? m.target.c_str() : dir.c_str();
    ThrowErrno(info.Env(), err, failed, path);
  }
  return info.Env().Undefined();
}

// umount2(target, flags): void
Napi::Value Umount2(const Napi::CallbackInfo& info) {
  std::string target = ArgString(info, 0, "target");
  int flags = ArgInt(info, 1, "flags", 0, INT32_MAX);
  if (umount2(target.c_str(), flags) != 0)
    ThrowErrno(info.Env(), errno, "umount2", target.c_str());
  return info.Env().Undefined();
}

void SetFdFlag(const Napi::CallbackInfo& info, int getCmd, int setCmd,
               int bit) {
  int fd = ArgFd(info, 0, "fd");
  bool on = ArgBool(info, 1, "on");
  int flags = fcntl(fd, getCmd);
  if (flags < 0) ThrowErrno(info.Env(), errno, "fcntl");
  int want = on ? (flags | bit) : (flags & ~bit);
  if (want != flags && fcntl(fd, setCmd, want) < 0)
    ThrowErrno(info.Env(), errno, "fcntl");
}

// setNonBlocking(fd, on): void
Napi::Value SetNonBlocking(const Napi::CallbackInfo& info) {
  SetFdFlag(info, F_GETFL, F_SETFL, O_NONBLOCK);
  return info.Env().Undefined();
}

// setCloexec(fd, on): void
Napi::Value SetCloexec(const Napi::CallbackInfo& info) {
  SetFdFlag(info, F_GETFD, F_SETFD, FD_CLOEXEC);
  return info.Env().Undefined();
}

// dup(fd): number -- a close-on-exec duplicate (F_DUPFD_CLOEXEC).
Napi::Value Dup(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0, "fd");
  int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (nfd < 0) ThrowErrno(info.Env(), errno, "fcntl");
  return Napi::Number::New(info.Env(), nfd);
}

// dup2(oldFd, newFd): void -- e.g. the log fifo onto fd 2, so that what the
// runtime itself prints on a fatal error reaches containerd's log. newFd keeps
// no close-on-exec flag only for 0..2 (the standard streams); dup3 otherwise.
Napi::Value Dup2(const Napi::CallbackInfo& info) {
  int oldFd = ArgFd(info, 0, "oldFd");
  int newFd = ArgFd(info, 1, "newFd");
  int r;
  do {
    r = newFd <= 2 ? dup2(oldFd, newFd) : dup3(oldFd, newFd, O_CLOEXEC);
  } while (r < 0 && errno == EINTR);
  if (r < 0) ThrowErrno(info.Env(), errno, "dup2");
  return info.Env().Undefined();
}

// eventfd(initval, flags): number
Napi::Value Eventfd(const Napi::CallbackInfo& info) {
  unsigned initval = static_cast<unsigned>(
      ArgInt64(info, 0, "initval", 0, UINT32_MAX, 0, false));
  int flags = ArgInt(info, 1, "flags", 0, INT32_MAX);
  int fd = eventfd(initval, flags);
  if (fd < 0) ThrowErrno(info.Env(), errno, "eventfd");
  return Napi::Number::New(info.Env(), fd);
}

// setWinsize(fd, rows, cols): void
Napi::Value SetWinsize(const Napi::CallbackInfo& info) {
  struct winsize ws = {};
  int fd = ArgFd(info, 0, "fd");
  ws.ws_row = static_cast<unsigned short>(ArgInt(info, 1, "rows", 0, 65535));
  ws.ws_col = static_cast<unsigned short>(ArgInt(info, 2, "cols", 0, 65535));
  if (ioctl(fd, TIOCSWINSZ, &ws) != 0) ThrowErrno(info.Env(), errno, "ioctl");
  return info.Env().Undefined();
}

// getWinsize(fd): {rows, cols}
Napi::Value GetWinsize(const Napi::CallbackInfo& info) {
  struct winsize ws = {};
  int fd = ArgFd(info, 0, "fd");
  if (ioctl(fd, TIOCGWINSZ, &ws) != 0) ThrowErrno(info.Env(), errno, "ioctl");
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("rows", Napi::Number::New(info.Env(), ws.ws_row));
  o.Set("cols", Napi::Number::New(info.Env(), ws.ws_col));
  return o;
}

// fionread(fd): number of bytes waiting to be read (ioctl FIONREAD; on a pipe or fifo, what its
// reader has not taken yet)
Napi::Value Fionread(const Napi::CallbackInfo& info) {
  int n = 0;
  int fd = ArgFd(info, 0, "fd");
  if (ioctl(fd, FIONREAD, &n) != 0) ThrowErrno(info.Env(), errno, "ioctl");
  return Napi::Number::New(info.Env(), n);
}

}  // namespace

void InitSys(Napi::Env env, Napi::Object exports) {
  exports.Set("prctl", Napi::Function::New(env, Prctl, "prctl"));
  exports.Set("pipe", Napi::Function::New(env, Pipe, "pipe"));
  exports.Set("pidfdOpen", Napi::Function::New(env, PidfdOpen, "pidfdOpen"));
  exports.Set("pidfdSendSignal",
              Napi::Function::New(env, PidfdSendSignal, "pidfdSendSignal"));
  exports.Set("mount", Napi::Function::New(env, Mount, "mount"));
  exports.Set("mountInDir", Napi::Function::New(env, MountInDir, "mountInDir"));
  exports.Set("umount2", Napi::Function::New(env, Umount2, "umount2"));
  exports.Set("setNonBlocking",
              Napi::Function::New(env, SetNonBlocking, "setNonBlocking"));
  exports.Set("setCloexec", Napi::Function::New(env, SetCloexec, "setCloexec"));
  exports.Set("dup", Napi::Function::New(env, Dup, "dup"));
  exports.Set("dup2", Napi::Function::New(env, Dup2, "dup2"));
  exports.Set("eventfd", Napi::Function::New(env, Eventfd, "eventfd"));
  exports.Set("setWinsize", Napi::Function::New(env, SetWinsize, "setWinsize"));
  exports.Set("getWinsize", Napi::Function::New(env, GetWinsize, "getWinsize"));
  exports.Set("fionread", Napi::Function::New(env, Fionread, "fionread"));

  // The platform's values, so the TypeScript constants can be checked.
  Napi::Object c = Napi::Object::New(env);
  auto set = [&](const char* name, double v) {
    c.Set(name, Napi::Number::New(env, v));
  };
  set("PR_SET_PDEATHSIG", PR_SET_PDEATHSIG);
  set("PR_SET_CHILD_SUBREAPER", PR_SET_CHILD_SUBREAPER);
  set("MS_RDONLY", MS_RDONLY);
  set("MS_NOSUID", MS_NOSUID);
  set("MS_NODEV", MS_NODEV);
  set("MS_NOEXEC", MS_NOEXEC);
  set("MS_SYNCHRONOUS", MS_SYNCHRONOUS);
  set("MS_REMOUNT", MS_REMOUNT);
  set("MS_MANDLOCK", MS_MANDLOCK);
  set("MS_DIRSYNC", MS_DIRSYNC);
  set("MS_NOATIME", MS_NOATIME);
  set("MS_NODIRATIME", MS_NODIRATIME);
  set("MS_BIND", MS_BIND);
  set("MS_MOVE", MS_MOVE);
  set("MS_REC", MS_REC);
  set("MS_PRIVATE", MS_PRIVATE);
  set("MS_SLAVE", MS_SLAVE);
  set("MS_SHARED", MS_SHARED);
  set("MS_RELATIME", MS_RELATIME);
  set("MS_STRICTATIME", MS_STRICTATIME);
  set("MNT_FORCE", MNT_FORCE);
  set("MNT_DETACH", MNT_DETACH);
  set("MNT_EXPIRE", MNT_EXPIRE);
  set("UMOUNT_NOFOLLOW", UMOUNT_NOFOLLOW);
  set("EFD_CLOEXEC", EFD_CLOEXEC);
  set("EFD_NONBLOCK", EFD_NONBLOCK);
  set("EFD_SEMAPHORE", EFD_SEMAPHORE);
  exports.Set("constants", c);
}

}  // namespace shim
