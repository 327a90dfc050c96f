// SPDX-License-Identifier: Apache-2.0
// The fd watcher: one epoll thread for eventfds (cgroup v1 OOM notification).
//
// For every readiness event on a watched fd it consumes the eventfd counter
// (read of 8 bytes) and writes the fd's u32 token (little-endian) to a pipe
// whose read end belongs to the JS side.
//
// Thread safety: registrations live in a map guarded by a mutex, and the
// thread handles events (read + re-arm) while holding it. unwatchFd() removes
// the registration under the same mutex, so once it returns the thread never
// touches that fd again, and the caller may close it even if the fd number is
// reused right away. Each registration is EPOLLONESHOT and re-armed after its
// event is handled: level-triggered semantics, but a fd stuck in
// EPOLLHUP/EPOLLERR is reported once and then left disarmed instead of
// spinning the thread. Token writes happen outside the lock, so a slow reader
// can never block watchFd()/unwatchFd().

#include "common.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <system_error>
#include <unordered_map>

namespace shim {

namespace {

constexpr int kMaxEvents = 32;  // 32 tokens = 128 bytes < PIPE_BUF: atomic

struct Registration {
  int fd;
  uint32_t token;
};

struct WatcherState {
  std::mutex mu;
  bool started = false;
  int epfd = -1;
  int readFd = -1;
  int writeFd = -1;
  uint64_t nextId = 1;
  std::unordered_map<uint64_t, Registration> byId;  // epoll data -> reg
  std::unordered_map<int, uint64_t> byFd;
};

// Never freed: the thread may still run while static destructors execute.
WatcherState& State() {
  static WatcherState* s = new WatcherState();
  return *s;
}

int Arm(int epfd, int op, int fd, uint64_t id) {
  struct epoll_event ev;
  std::memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN | EPOLLONESHOT;  // HUP/ERR are always reported
  ev.data.u64 = id;
  return epoll_ctl(epfd, op, fd, &ev);
}

void WatchLoop(WatcherState* s) {
  struct epoll_event evs[kMaxEvents];
  for (;;) {
    int n = epoll_wait(s->epfd, evs, kMaxEvents, -1);
    if (n < 0) {
      if (errno != EINTR) usleep(100 * 1000);  // unexpected; don't spin
      continue;
    }
    uint8_t out[kMaxEvents * 4];
    size_t outLen = 0;
    {
      std::lock_guard<std::mutex> lk(s->mu);
      for (int i = 0; i < n; i++) {
        auto it = s->byId.find(evs[i].data.u64);
        if (it == s->byId.end()) continue;  // unwatched meanwhile
        const Registration& r = it->second;
        if (evs[i].events & EPOLLIN) {
          // Never block while holding the lock, even if someone else
          // drained the counter first.
          struct pollfd p = {r.fd, POLLIN, 0};
          uint64_t counter;
          if (poll(&p, 1, 0) == 1 && (p.revents & POLLIN)) {
            ssize_t ignored = read(r.fd, &counter, sizeof counter);
            (void)ignored;
          }
        }
        for (int b = 0; b < 4; b++) out[outLen++] = static_cast<uint8_t>(r.token >> (8 * b));
        if ((evs[i].events & (EPOLLHUP | EPOLLERR)) == 0)
          Arm(s->epfd, EPOLL_CTL_MOD, r.fd, it->first);
      }
    }
    if (outLen == 0) continue;
    ssize_t w;
    do {
      w = write(s->writeFd, out, outLen);
    } while (w < 0 && errno == EINTR);
    // EPIPE (reader closed): tokens are dropped.
  }
}

// startFdWatcher(): number -- idempotent; returns the token pipe's read end.
Napi::Value StartFdWatcher(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  WatcherState& s = State();
  std::lock_guard<std::mutex> lk(s.mu);
  if (s.started) return Napi::Number::New(env, s.readFd);

  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) ThrowErrno(env, errno, "epoll_create1");
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) {
    int err = errno;
    close(ep);
    ThrowErrno(env, err, "pipe2");
  }
  s.epfd = ep;
  s.readFd = p[0];
  s.writeFd = p[1];
  try {
    StartThreadSignalsBlocked([ptr = &s] { WatchLoop(ptr); }).detach();
  } catch (const std::system_error& e) {
    close(ep);
    close(p[0]);
    close(p[1]);
    s.epfd = s.readFd = s.writeFd = -1;
    ThrowErrno(env, e.code().value(), "pthread_create");
  }
  s.started = true;
  return Napi::Number::New(env, s.readFd);
}

// watchFd(fd, token): void
Napi::Value WatchFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  uint32_t token =
      static_cast<uint32_t>(ArgInt64(info, 1, "token", 0, UINT32_MAX, 0, false));
  WatcherState& s = State();
  std::lock_guard<std::mutex> lk(s.mu);
  if (!s.started) {
    throw Napi::Error::New(env, "watchFd: startFdWatcher() must be called first");
  }
  auto old = s.byFd.find(fd);
  if (old != s.byFd.end()) {
    // Stale entry: the fd was closed without unwatchFd() and the number has
    // been reused (epoll dropped the old file by itself), or it is a
    // re-registration of the same fd. Either way replace it.
    epoll_ctl(s.epfd, EPOLL_CTL_DEL, fd, nullptr);
    s.byId.erase(old->second);
    s.byFd.erase(old);
  }
  uint64_t id = s.nextId++;
  if (Arm(s.epfd, EPOLL_CTL_ADD, fd, id) != 0)
    ThrowErrno(env, errno, "epoll_ctl");
  s.byId.emplace(id, Registration{fd, token});
  s.byFd.emplace(fd, id);
  return env.Undefined();
}

// unwatchFd(fd): boolean -- true if the fd was being watched.
Napi::Value UnwatchFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  WatcherState& s = State();
  std::lock_guard<std::mutex> lk(s.mu);
  auto it = s.byFd.find(fd);
  if (it == s.byFd.end()) return Napi::Boolean::New(env, false);
  // Errors (ENOENT/EBADF: the fd was already closed) change nothing here.
  epoll_ctl(s.epfd, EPOLL_CTL_DEL, fd, nullptr);
  s.byId.erase(it->second);
  s.byFd.erase(it);
  return Napi::Boolean::New(env, true);
}

}  // namespace

void InitFdWatch(Napi::Env env, Napi::Object exports) {
  exports.Set("startFdWatcher",
              Napi::Function::New(env, StartFdWatcher, "startFdWatcher"));
  exports.Set("watchFd", Napi::Function::New(env, WatchFd, "watchFd"));
  exports.Set("unwatchFd", Napi::Function::New(env, UnwatchFd, "unwatchFd"));
}

}  // namespace shim
