// SPDX-License-Identifier: Apache-2.0
// AF_UNIX helpers: the listening sockets (shim socket, console socket),
// receiving the pty master that runc sends over the console socket
// (SCM_RIGHTS), the matching sender (tests, tooling), and SO_PEERCRED.

#include "common.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

namespace shim {

namespace {

constexpr size_t kMaxName = 4096;  // runc's pty name is far shorter
constexpr int kMaxFdsPerMsg = 16;  // room to detect (and close) extra fds

// Closes the fd when leaving the scope (also when an exception is thrown).
struct FdGuard {
  explicit FdGuard(int f) : fd(f) {}
  ~FdGuard() {
    if (fd >= 0) close(fd);
  }
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  int fd;
};

// A leading NUL selects the Linux abstract namespace; no other NUL allowed.
std::string ArgSocketPath(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsString()) ThrowType(info.Env(), "path must be a string");
  std::string s = info[i].As<Napi::String>().Utf8Value();
  if (s.empty() || s.find('\0', 1) != std::string::npos)
    ThrowType(info.Env(), "path must be non-empty and contain no NUL bytes");
  return s;
}

int64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Polls `fd` for POLLIN until `deadline` (CLOCK_MONOTONIC ms). Returns false
// on timeout; throws on poll errors. EINTR just recomputes the remaining time.
bool WaitReadable(Napi::Env env, int fd, int64_t deadline) {
  for (;;) {
    int64_t left = deadline - NowMs();
    if (left < 0) left = 0;
    struct pollfd p = {fd, POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(left));
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) ThrowErrno(env, errno, "poll");
  }
}

// listenUnix(path, backlog): number
Napi::Value ListenUnix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgSocketPath(info, 0);
  int backlog = ArgInt(info, 1, "backlog", 0, INT32_MAX);

  struct sockaddr_un addr;
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  bool abstract = path[0] == '\0';
  // Filesystem paths need room for the terminating NUL.
  if (path.size() > sizeof addr.sun_path - (abstract ? 0 : 1))
    ThrowErrno(env, ENAMETOOLONG, "bind", path.c_str());
  std::memcpy(addr.sun_path, path.data(), path.size());
  socklen_t len = static_cast<socklen_t>(
      offsetof(struct sockaddr_un, sun_path) + path.size() + (abstract ? 0 : 1));

  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowErrno(env, errno, "socket");
  const char* failed = nullptr;
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&addr), len) != 0) {
    failed = "bind";
  } else if (listen(fd, backlog) != 0) {
    failed = "listen";
  }
  if (failed != nullptr) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, failed, path.c_str());
  }
  return Napi::Number::New(env, fd);
}

// Receives one message that must carry exactly `want` fds (0: any number, at
// least one) in one SCM_RIGHTS.
Napi::Value RecvOneFd(Napi::Env env, int conn, int64_t deadline, size_t want = 1) {
  if (!WaitReadable(env, conn, deadline))
    ThrowErrno(env, ETIMEDOUT, "recvmsg", nullptr,
               "no message on the socket connection in time");

  char data[kMaxName];
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * kMaxFdsPerMsg)];
  } ctl;
  std::memset(&ctl, 0, sizeof ctl);
  struct iovec iov = {data, sizeof data};
  struct msghdr msg;
  std::memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctl.buf;
  msg.msg_controllen = sizeof ctl.buf;

  ssize_t n;
  do {
    n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) ThrowErrno(env, errno, "recvmsg");

  // Collect every fd received, whatever the message looks like, so that
  // none can leak when the message is rejected.
  std::vector<int> fds;
  int rightsMsgs = 0, otherMsgs = 0;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr;
       c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      rightsMsgs++;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const unsigned char* p = CMSG_DATA(c);
      for (size_t i = 0; i < count; i++) {
        int fd;
        std::memcpy(&fd, p + i * sizeof(int), sizeof fd);
        fds.push_back(fd);
      }
    } else {
      otherMsgs++;
    }
  }
  if (rightsMsgs != 1 || otherMsgs != 0 || fds.empty() || (want != 0 && fds.size() != want) ||
      (msg.msg_flags & MSG_CTRUNC) != 0) {
    for (int fd : fds) close(fd);
    std::string detail =
        "expected exactly one SCM_RIGHTS message carrying " + std::to_string(want) +
        " fd(s), got " +
        std::to_string(rightsMsgs) + " SCM_RIGHTS message(s) with " +
        std::to_string(fds.size()) + " fd(s)" +
        (otherMsgs != 0 ? ", and other control messages" : "") +
        ((msg.msg_flags & MSG_CTRUNC) != 0 ? " (control data truncated)" : "");
    ThrowErrno(env, EINVAL, "recvmsg", nullptr, detail.c_str());
  }

  // runc sends the bare name; tolerate a trailing NUL terminator.
  size_t len = static_cast<size_t>(n);
  while (len > 0 && data[len - 1] == '\0') len--;
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", Napi::Number::New(env, fds[0]));
  Napi::Array all = Napi::Array::New(env, fds.size());
  for (size_t i = 0; i < fds.size(); i++) all.Set(i, Napi::Number::New(env, fds[i]));
  out.Set("fds", all);
  out.Set("name", Napi::String::New(env, data, len));
  return out;
}

// acceptRecvFd(listenFd, timeoutMs): {fd, name}
Napi::Value AcceptRecvFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int lfd = ArgFd(info, 0, "listenFd");
  int timeoutMs = ArgInt(info, 1, "timeoutMs", 0, INT32_MAX);
  const int64_t deadline = NowMs() + timeoutMs;

  int conn = -1;
  while (conn < 0) {
    if (!WaitReadable(env, lfd, deadline))
      ThrowErrno(env, ETIMEDOUT, "accept", nullptr,
                 "no connection on the console socket in time");
    conn = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
        errno != EINTR && errno != ECONNABORTED)
      ThrowErrno(env, errno, "accept4");
  }

  FdGuard connGuard(conn);  // the connection is closed on every path
  return RecvOneFd(env, conn, deadline);
}

// recvFd(connFd, timeoutMs, count = 1): {fd, fds, name} -- one message with
// exactly `count` fds (0: any number) on an already accepted connection (left open).
Napi::Value RecvFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int conn = ArgFd(info, 0, "connFd");
  int timeoutMs = ArgInt(info, 1, "timeoutMs", 0, INT32_MAX);
  int count = info.Length() > 2 ? ArgInt(info, 2, "count", 0, kMaxFdsPerMsg - 1) : 1;
  return RecvOneFd(env, conn, NowMs() + timeoutMs, static_cast<size_t>(count));
}

// sendFd(sockFd, fd, name): void -- the sender side of the console protocol.
Napi::Value SendFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock = ArgFd(info, 0, "sockFd");
  int fd = ArgFd(info, 1, "fd");
  std::string name = ArgString(info, 2, "name");
  // A stream socket carries ancillary data only along with at least one
  // byte of payload.
  if (name.empty()) name.push_back('\0');

  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int))];
  } ctl;
  std::memset(&ctl, 0, sizeof ctl);
  struct iovec iov = {&name[0], name.size()};
  struct msghdr msg;
  std::memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctl.buf;
  msg.msg_controllen = sizeof ctl.buf;
  struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);

  ssize_t n;
  do {
    n = sendmsg(sock, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) ThrowErrno(env, errno, "sendmsg");
  return env.Undefined();
}

// peerCred(fd): {pid, uid, gid}
Napi::Value PeerCred(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
    ThrowErrno(env, errno, "getsockopt");
  Napi::Object out = Napi::Object::New(env);
  out.Set("pid", Napi::Number::New(env, cred.pid));
  out.Set("uid", Napi::Number::New(env, cred.uid));
  out.Set("gid", Napi::Number::New(env, cred.gid));
  return out;
}

}  // namespace

void InitUnix(Napi::Env env, Napi::Object exports) {
  exports.Set("listenUnix", Napi::Function::New(env, ListenUnix, "listenUnix"));
  exports.Set("acceptRecvFd",
              Napi::Function::New(env, AcceptRecvFd, "acceptRecvFd"));
  exports.Set("recvFd", Napi::Function::New(env, RecvFd, "recvFd"));
  exports.Set("sendFd", Napi::Function::New(env, SendFd, "sendFd"));
  exports.Set("peerCred", Napi::Function::New(env, PeerCred, "peerCred"));
}

}  // namespace shim
