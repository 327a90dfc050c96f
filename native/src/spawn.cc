// SPDX-License-Identifier: Apache-2.0
// spawn(): start a child process without libuv (whose SIGCHLD handling would
// race the reaper thread).
//
// Implementation: clone(CLONE_VM | CLONE_VFORK) on a private stack, the way
// posix_spawn does it. The child shares our memory until it execs, so it
// cannot corrupt anything as long as it only
//   * reads the argument block prepared before the clone (no allocation),
//   * makes raw, async-signal-safe syscalls,
//   * writes its failure (stage + errno) into that block, then _exit(127)s.
// CLONE_VFORK suspends the calling thread until the child has exec'd or
// exited, so when clone() returns the failure report (if any) is complete.
// This replaces the classic CLOEXEC error pipe of the fork() approach and
// avoids copying the page tables of a large Node heap on every spawn.
//
// All signals are blocked around the clone so that no Node/libuv signal
// handler can run in the child while it shares our memory; the child resets
// every disposition to SIG_DFL (Node ignores SIGPIPE, children must not
// inherit that) before unblocking.

#include "common.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

#ifndef SYS_close_range
#define SYS_close_range 436
#endif

namespace shim {

namespace {

constexpr size_t kChildStackSize = 256 * 1024;
constexpr size_t kMaxFds = 4096;
constexpr const char* kDefaultPath =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

enum Stage : int {
  kStageNone = 0,
  kStageSetsid,
  kStageSetpgid,
  kStagePdeathsig,
  kStageDevNull,
  kStageDup,
  kStageDup2,
  kStageCloseFds,
  kStageChdir,
  kStageExec,
};

const char* StageSyscall(int stage) {
  switch (stage) {
    case kStageSetsid: return "setsid";
    case kStageSetpgid: return "setpgid";
    case kStagePdeathsig: return "prctl";
    case kStageDevNull: return "open";
    case kStageDup: return "dup";
    case kStageDup2: return "dup2";
    case kStageCloseFds: return "close_range";
    case kStageChdir: return "chdir";
    default: return "execve";
  }
}

// Everything the child needs, prepared before clone(). The child only reads
// it, except for `tmp` (scratch) and the failure report.
struct ChildArgs {
  const char* file;
  size_t fileLen;
  bool searchPath;     // file has no '/'
  const char* path;    // PATH value used for the search
  char* const* argv;
  char* const* envp;
  const char* cwd;     // nullptr: inherit
  const int* fds;      // child fd i := fds[i]; -1 -> /dev/null
  int* tmp;            // scratch, nfds entries
  int nfds;
  bool setsid;
  bool setpgid;
  int pdeathsig;
  pid_t parentPid;
  // Failure report, written by the child before _exit(127).
  volatile int failStage;
  volatile int failErrno;
  volatile int failIndex;
};

// Raw rt_sigprocmask: unlike pthread_sigmask it also blocks glibc's internal
// signals (SIGCANCEL/SIGSETXID), whose handlers must not run in the child.
int RawSigmask(int how, const sigset_t* set, sigset_t* old) {
  return static_cast<int>(syscall(SYS_rt_sigprocmask, how, set, old, _NSIG / 8));
}

[[noreturn]] void ChildFail(ChildArgs* a, int stage, int err, int index = -1) {
  a->failIndex = index;
  a->failErrno = err;
  a->failStage = stage;
  _exit(127);
}

// Fallback for kernels without close_range(): close every fd >= lowfd found
// in /proc/self/fd, using getdents64 on a stack buffer (no opendir/malloc).
bool CloseFromProc(int lowfd) {
  int dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return false;
  alignas(8) char buf[4096];
  for (;;) {
    long n = syscall(SYS_getdents64, dfd, buf, sizeof buf);
    if (n <= 0) break;
    for (long off = 0; off < n;) {
      auto* d = reinterpret_cast<struct dirent64*>(buf + off);
      off += d->d_reclen;
      int fd = 0;
      bool numeric = d->d_name[0] != '\0';
      for (const char* c = d->d_name; *c; c++) {
        if (*c < '0' || *c > '9') { numeric = false; break; }
        fd = fd * 10 + (*c - '0');
      }
      if (numeric && fd >= lowfd && fd != dfd) close(fd);
    }
  }
  close(dfd);
  return true;
}

int ChildMain(void* arg) {
  auto* a = static_cast<ChildArgs*>(arg);

  // Signals are all blocked (inherited from the parent thread): reset every
  // disposition before anything can be delivered.
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < _NSIG; sig++) {
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, nullptr);
  }

  if (a->setsid) {
    if (setsid() < 0) ChildFail(a, kStageSetsid, errno);
  } else if (a->setpgid) {
    if (setpgid(0, 0) < 0) ChildFail(a, kStageSetpgid, errno);
  }

  if (a->pdeathsig != 0) {
    if (prctl(PR_SET_PDEATHSIG, a->pdeathsig, 0, 0, 0) < 0)
      ChildFail(a, kStagePdeathsig, errno);
    // The parent may have died before the prctl took effect.
    if (getppid() != a->parentPid) _exit(127);
  }

  // Install the fd map in two passes so that sources may overlap targets:
  // first move every source above the target range (CLOEXEC copies), then
  // dup2 them into place (dup2 clears CLOEXEC on the target).
  const int n = a->nfds;
  int devnull = -1;
  for (int i = 0; i < n; i++) {
    int src = a->fds[i];
    if (src < 0) {
      if (devnull < 0) {
        int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (fd < 0) ChildFail(a, kStageDevNull, errno, i);
        devnull = fd >= n ? fd : fcntl(fd, F_DUPFD_CLOEXEC, n);
        if (devnull < 0) ChildFail(a, kStageDup, errno, i);
        if (fd != devnull) close(fd);
      }
      a->tmp[i] = devnull;
    } else {
      a->tmp[i] = fcntl(src, F_DUPFD_CLOEXEC, n);
      if (a->tmp[i] < 0) ChildFail(a, kStageDup, errno, i);
    }
  }
  for (int i = 0; i < n; i++) {
    if (dup2(a->tmp[i], i) < 0) ChildFail(a, kStageDup2, errno, i);
  }
  // Close everything else (the scratch copies included).
  if (syscall(SYS_close_range, static_cast<unsigned>(n), ~0U, 0) != 0) {
    if (!CloseFromProc(n)) ChildFail(a, kStageCloseFds, errno);
  }

  if (a->cwd != nullptr && chdir(a->cwd) < 0) ChildFail(a, kStageChdir, errno);

  sigset_t none;
  sigemptyset(&none);
  RawSigmask(SIG_SETMASK, &none, nullptr);

  if (!a->searchPath) {
    execve(a->file, a->argv, a->envp);
    ChildFail(a, kStageExec, errno);
  }

  // PATH search (execvpe semantics, minus the ENOEXEC -> /bin/sh retry).
  char buf[PATH_MAX];
  bool sawEacces = false;
  for (const char* p = a->path;;) {
    const char* end = p;
    while (*end != '\0' && *end != ':') end++;
    size_t dlen = static_cast<size_t>(end - p);
    if (dlen + 1 + a->fileLen < sizeof buf) {
      char* w = buf;
      if (dlen > 0) {  // an empty element means the current directory
        std::memcpy(w, p, dlen);
        w += dlen;
        *w++ = '/';
      }
      std::memcpy(w, a->file, a->fileLen + 1);
      execve(buf, a->argv, a->envp);
      switch (errno) {
        case EACCES:
          sawEacces = true;
          break;
        case ENOENT: case ENOTDIR: case ESTALE: case ENODEV:
        case ETIMEDOUT: case ELOOP: case ENAMETOOLONG:
          break;  // try the next directory
        default:
          ChildFail(a, kStageExec, errno);
      }
    }
    if (*end == '\0') break;
    p = end + 1;
  }
  ChildFail(a, kStageExec, sawEacces ? EACCES : ENOENT);
}

std::vector<std::string> StringArray(Napi::Env env, Napi::Value v,
                                     const char* name) {
  if (!v.IsArray()) ThrowType(env, std::string(name) + " must be an array of strings");
  auto arr = v.As<Napi::Array>();
  std::vector<std::string> out;
  out.reserve(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    out.push_back(ValueToPathString(
        env, arr.Get(i), std::string(name) + "[" + std::to_string(i) + "]"));
  }
  return out;
}

std::vector<char*> CPointers(std::vector<std::string>& strs) {
  std::vector<char*> out;
  out.reserve(strs.size() + 1);
  for (auto& s : strs) out.push_back(&s[0]);
  out.push_back(nullptr);
  return out;
}

bool OptBool(Napi::Env env, Napi::Object o, const char* key) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return false;
  if (!v.IsBoolean()) ThrowType(env, std::string(key) + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

// spawn(opts): number (pid)
Napi::Value Spawn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) ThrowType(env, "spawn options must be an object");
  Napi::Object o = info[0].As<Napi::Object>();

  std::string file = ValueToPathString(env, o.Get("file"), "file");
  std::vector<std::string> args = StringArray(env, o.Get("args"), "args");
  std::vector<std::string> envs = StringArray(env, o.Get("env"), "env");

  bool hasCwd = false;
  std::string cwd;
  Napi::Value cwdv = o.Get("cwd");
  if (!cwdv.IsUndefined() && !cwdv.IsNull()) {
    cwd = ValueToPathString(env, cwdv, "cwd");
    hasCwd = true;
  }

  Napi::Value fdsv = o.Get("fds");
  if (!fdsv.IsArray()) ThrowType(env, "fds must be an array of numbers");
  Napi::Array fdsArr = fdsv.As<Napi::Array>();
  if (fdsArr.Length() > kMaxFds) ThrowType(env, "fds has too many entries");
  std::vector<int> fds(fdsArr.Length());
  for (uint32_t i = 0; i < fdsArr.Length(); i++) {
    std::string what = "fds[" + std::to_string(i) + "]";
    fds[i] = static_cast<int>(
        IntFromValue(env, fdsArr.Get(i), what, -1, INT32_MAX));
  }

  int pdeathsig = 0;
  Napi::Value pdv = o.Get("pdeathsig");
  if (!pdv.IsUndefined() && !pdv.IsNull())
    pdeathsig =
        static_cast<int>(IntFromValue(env, pdv, "pdeathsig", 0, _NSIG - 1));

  if (file.empty()) ThrowErrno(env, ENOENT, "execve", "");

  // PATH for the search comes from the child's environment.
  const char* searchPath = kDefaultPath;
  for (const auto& e : envs) {
    if (e.compare(0, 5, "PATH=") == 0) {
      searchPath = e.c_str() + 5;
      break;
    }
  }

  std::vector<char*> argv = CPointers(args);
  std::vector<char*> envp = CPointers(envs);
  std::vector<int> tmp(fds.size());

  ChildArgs a{};
  a.file = file.c_str();
  a.fileLen = file.size();
  a.searchPath = file.find('/') == std::string::npos;
  a.path = searchPath;
  a.argv = argv.data();
  a.envp = envp.data();
  a.cwd = hasCwd ? cwd.c_str() : nullptr;
  a.fds = fds.data();
  a.tmp = tmp.data();
  a.nfds = static_cast<int>(fds.size());
  a.setsid = OptBool(env, o, "setsid");
  a.setpgid = OptBool(env, o, "setpgid");
  a.pdeathsig = pdeathsig;
  a.parentPid = getpid();
  a.failStage = kStageNone;
  a.failErrno = 0;
  a.failIndex = -1;

  // Private child stack with a guard page at the bottom.
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void* stack = mmap(nullptr, kChildStackSize, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) ThrowErrno(env, errno, "mmap");
  mprotect(stack, page, PROT_NONE);

  sigset_t all, old;
  sigfillset(&all);
  RawSigmask(SIG_SETMASK, &all, &old);
  pid_t pid = clone(ChildMain, static_cast<char*>(stack) + kChildStackSize,
                    CLONE_VM | CLONE_VFORK | SIGCHLD, &a);
  int cloneErr = errno;
  RawSigmask(SIG_SETMASK, &old, nullptr);
  munmap(stack, kChildStackSize);

  if (pid < 0) ThrowErrno(env, cloneErr, "clone");
  ReaperNotifyChildCreated();

  if (a.failStage == kStageNone) return Napi::Number::New(env, pid);

  // The child failed before exec and has _exit(127)ed. With the reaper
  // running its exit record will arrive like any other; otherwise collect the
  // zombie here.
  if (!ReaperRunning()) {
    while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  const char* path = nullptr;
  std::string detail;
  switch (a.failStage) {
    case kStageExec: path = file.c_str(); break;
    case kStageChdir: path = cwd.c_str(); break;
    case kStageDevNull: path = "/dev/null"; break;
    case kStageDup:
    case kStageDup2:
      if (a.failIndex < 0) break;
      detail = "child fd " + std::to_string(a.failIndex) + " := parent fd " +
               std::to_string(fds[a.failIndex]);
      break;
    default: break;
  }
  Napi::Error err = MakeErrnoError(env, a.failErrno, StageSyscall(a.failStage),
                                   path, detail.empty() ? nullptr : detail.c_str());
  err.Set("pid", Napi::Number::New(env, pid));
  throw err;
}

}  // namespace

// waitChild(pid, timeoutMs): number | null -- blocks until our child `pid`
// exits and reaps it: its status (exit code, or 128 + signal), or null after
// timeoutMs (the child is still running and still ours to wait for). Only for
// processes without the reaper thread, which owns every wait once it runs.
Napi::Value WaitChild(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber())
    throw Napi::TypeError::New(env, "waitChild(pid, timeoutMs)");
  if (ReaperRunning()) throw Napi::Error::New(env, "waitChild: the reaper owns waiting");
  pid_t pid = info[0].As<Napi::Number>().Int32Value();
  int64_t timeoutMs = info[1].As<Napi::Number>().Int64Value();
  long pidfd = syscall(SYS_pidfd_open, pid, 0);
  if (pidfd < 0) ThrowErrno(env, errno, "pidfd_open");
  struct pollfd p = {static_cast<int>(pidfd), POLLIN, 0};
  int r;
  do {
    r = poll(&p, 1, timeoutMs < 0 ? -1 : static_cast<int>(timeoutMs));
  } while (r < 0 && errno == EINTR);
  int pollErr = errno;
  close(static_cast<int>(pidfd));
  if (r < 0) ThrowErrno(env, pollErr, "poll");
  if (r == 0) return env.Null();
  siginfo_t si;
  std::memset(&si, 0, sizeof si);
  while (waitid(P_PID, static_cast<id_t>(pid), &si, WEXITED) != 0) {
    if (errno != EINTR) ThrowErrno(env, errno, "waitid");
  }
  int status = si.si_code == CLD_EXITED ? si.si_status : 128 + si.si_status;
  return Napi::Number::New(env, status);
}

void InitSpawn(Napi::Env env, Napi::Object exports) {
  exports.Set("spawn", Napi::Function::New(env, Spawn, "spawn"));
  exports.Set("waitChild", Napi::Function::New(env, WaitChild, "waitChild"));
}

}  // namespace shim
