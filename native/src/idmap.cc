// SPDX-License-Identifier: Apache-2.0
// ID-mapped mounts, for rootfs mounts that carry `uidmap=`/`gidmap=` options (containerd 2.x
// snapshotters add them for user-namespaced containers; containerd v2.3.4
// core/mount/mount_linux.go mounts them the same way): a user namespace holding the mapping,
// then a detached clone of the mount tree given that namespace's id-mapping and attached at the
// target (open_tree, mount_setattr(MOUNT_ATTR_IDMAP), move_mount).
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include "common.h"

namespace shim {
namespace {

// From <linux/mount.h>; declared here so the glibc and kernel headers never meet.
constexpr unsigned kOpenTreeClone = 1;             // OPEN_TREE_CLONE
constexpr unsigned kMoveMountFEmptyPath = 0x4;     // MOVE_MOUNT_F_EMPTY_PATH
constexpr uint64_t kMountAttrIdmap = 0x00100000;   // MOUNT_ATTR_IDMAP
struct MountAttr {
  uint64_t attr_set;
  uint64_t attr_clr;
  uint64_t propagation;
  uint64_t userns_fd;
};

bool WriteFile(const std::string& path, const std::string& text) {
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n = write(fd, text.data(), text.size());
  int err = errno;
  close(fd);
  errno = err;
  return n == static_cast<ssize_t>(text.size());
}

// usernsFd(uidMap, gidMap): fd of a new user namespace with these maps (the kernel's
// "inside outside count" lines). A child created in the namespace holds it open until the
// maps are written and the namespace file is opened; it then exits and is waited for (or
// reaped by the reaper thread, whichever comes first).
Napi::Value UsernsFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string uidMap = ArgString(info, 0, "uidMap");
  std::string gidMap = ArgString(info, 1, "gidMap");
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) ThrowErrno(env, errno, "pipe2");
  // A raw clone with no CLONE_VM is a fork into a new user namespace: the child only makes
  // async-signal-safe calls (read, _exit) on its copy of this thread.
  long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, nullptr, nullptr, nullptr, 0);
  if (pid < 0) {
    int err = errno;
    close(p[0]);
    close(p[1]);
    ThrowErrno(env, err, "clone");
  }
  if (pid == 0) {
    char c;
    close(p[1]);
    while (read(p[0], &c, 1) < 0 && errno == EINTR) {
    }
    _exit(0);
  }
  close(p[0]);
  std::string proc = "/proc/" + std::to_string(pid);
  int err = 0;
  const char* failed = nullptr;
  int nsfd = -1;
  if (!WriteFile(proc + "/uid_map", uidMap)) {
    err = errno, failed = "write uid_map";
  } else if (!WriteFile(proc + "/gid_map", gidMap)) {
    err = errno, failed = "write gid_map";
  } else if ((nsfd = open((proc + "/ns/user").c_str(), O_RDONLY | O_CLOEXEC)) < 0) {
    err = errno, failed = "open user namespace";
  }
  close(p[1]);  // the child exits
  while (waitpid(static_cast<pid_t>(pid), nullptr, __WALL) < 0 && errno == EINTR) {
  }
  if (failed != nullptr) ThrowErrno(env, err, failed);
  return Napi::Number::New(env, nsfd);
}

// idmapMount(source, target, usernsFd): attach an id-mapped clone of the mount tree at
// `source` onto `target`.
Napi::Value IdmapMount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string source = ArgString(info, 0, "source");
  std::string target = ArgString(info, 1, "target");
  int usernsFd = ArgInt(info, 2, "usernsFd", 0, INT32_MAX);
  int tree = static_cast<int>(syscall(SYS_open_tree, AT_FDCWD, source.c_str(), kOpenTreeClone | O_CLOEXEC));
  if (tree < 0) ThrowErrno(env, errno, "open_tree", source.c_str());
  MountAttr attr{};
  attr.attr_set = kMountAttrIdmap;
  attr.userns_fd = static_cast<uint64_t>(usernsFd);
  if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof attr) != 0) {
    int err = errno;
    close(tree);
    ThrowErrno(env, err, "mount_setattr", source.c_str());
  }
  if (syscall(SYS_move_mount, tree, "", AT_FDCWD, target.c_str(), kMoveMountFEmptyPath) != 0) {
    int err = errno;
    close(tree);
    ThrowErrno(env, err, "move_mount", target.c_str());
  }
  close(tree);
  return env.Undefined();
}

}  // namespace

void InitIdmap(Napi::Env env, Napi::Object exports) {
  exports.Set("usernsFd", Napi::Function::New(env, UsernsFd, "usernsFd"));
  exports.Set("idmapMount", Napi::Function::New(env, IdmapMount, "idmapMount"));
}

}  // namespace shim
