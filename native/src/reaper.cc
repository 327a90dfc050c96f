// SPDX-License-Identifier: Apache-2.0
// The reaper: one native thread that owns all child reaping for the process.
//
// It blocks in waitid(P_ALL, WEXITED), so it collects every child: the ones
// spawned through spawn() and the orphans re-parented to us as a subreaper.
// Each exit becomes a fixed 24-byte little-endian record written to a pipe:
//   u32 pid | i32 status | i64 seconds | u32 nanoseconds | u32 reserved (0)
// status = exit code, or 128 + signal number when killed/dumped; the time is
// CLOCK_REALTIME taken right after the reap.
//
// Records are written with blocking write()s: a full pipe stalls reaping
// (zombies wait) rather than losing an exit. A record (24 bytes) is far below
// PIPE_BUF so every write is atomic and the reader never sees a torn record.
//
// Nothing else in the process may wait for children (no child_process, no
// SIGCHLD = SIG_IGN), or exits would be stolen from the reaper.

#include "common.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <system_error>

namespace shim {

namespace {

constexpr size_t kRecordSize = 24;
// Safety net: children can appear without spawn() (orphans re-parented to a
// subreaper), so never sleep longer than this while we have no children.
constexpr auto kIdleRecheck = std::chrono::milliseconds(250);

struct ReaperState {
  std::mutex mu;
  std::condition_variable cv;
  uint64_t generation = 0;  // bumped after every successful fork
  std::atomic<bool> started{false};
  int readFd = -1;
  int writeFd = -1;
};

// Never freed: the thread may still run while static destructors execute.
ReaperState& State() {
  static ReaperState* s = new ReaperState();
  return *s;
}

void PutLE(uint8_t* p, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

void WriteRecord(int fd, const siginfo_t& si) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int32_t status = si.si_code == CLD_EXITED ? si.si_status : 128 + si.si_status;

  uint8_t rec[kRecordSize];
  PutLE(rec + 0, static_cast<uint32_t>(si.si_pid), 4);
  PutLE(rec + 4, static_cast<uint32_t>(status), 4);
  PutLE(rec + 8, static_cast<uint64_t>(ts.tv_sec), 8);
  PutLE(rec + 16, static_cast<uint32_t>(ts.tv_nsec), 4);
  PutLE(rec + 20, 0, 4);

  for (;;) {
    ssize_t n = write(fd, rec, sizeof rec);
    if (n >= 0 || errno != EINTR) break;
    // EPIPE (reader closed the pipe; SIGPIPE is ignored by Node): the record
    // is dropped but we keep reaping so that no zombies accumulate.
  }
}

void ReaperLoop(ReaperState* s) {
  for (;;) {
    uint64_t seen;
    {
      std::lock_guard<std::mutex> lk(s->mu);
      seen = s->generation;
    }
    siginfo_t si;
    std::memset(&si, 0, sizeof si);
    if (waitid(P_ALL, 0, &si, WEXITED) == 0) {
      if (si.si_pid != 0) WriteRecord(s->writeFd, si);
      continue;
    }
    if (errno == EINTR) continue;
    // ECHILD: no children right now. Sleep until spawn() forks one (the
    // generation check closes the race with a fork that happened between
    // waitid() returning and us taking the lock) or the safety-net timeout.
    // Any other error is unexpected; the timed wait keeps us from spinning.
    std::unique_lock<std::mutex> lk(s->mu);
    s->cv.wait_for(lk, kIdleRecheck, [&] { return s->generation != seen; });
  }
}

// startReaper(): number -- idempotent; returns the read end of the pipe.
Napi::Value StartReaper(const Napi::CallbackInfo& info) {
  ReaperState& s = State();
  if (s.started.load()) return Napi::Number::New(info.Env(), s.readFd);

  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) ThrowErrno(info.Env(), errno, "pipe2");
  s.readFd = p[0];
  s.writeFd = p[1];
  try {
    StartThreadSignalsBlocked([ptr = &s] { ReaperLoop(ptr); }).detach();
  } catch (const std::system_error& e) {
    close(p[0]);
    close(p[1]);
    s.readFd = s.writeFd = -1;
    ThrowErrno(info.Env(), e.code().value(), "pthread_create");
  }
  s.started.store(true);
  return Napi::Number::New(info.Env(), s.readFd);
}

}  // namespace

bool ReaperRunning() { return State().started.load(); }

void ReaperNotifyChildCreated() {
  ReaperState& s = State();
  {
    std::lock_guard<std::mutex> lk(s.mu);
    s.generation++;
  }
  s.cv.notify_one();
}

void InitReaper(Napi::Env env, Napi::Object exports) {
  exports.Set("startReaper", Napi::Function::New(env, StartReaper, "startReaper"));
  exports.Set("EXIT_RECORD_SIZE",
              Napi::Number::New(env, static_cast<double>(kRecordSize)));
}

}  // namespace shim
