// SPDX-License-Identifier: Apache-2.0
// Shared helpers for the shim_native addon: errno -> JS error conversion,
// argument checking, and starting helper threads with signals blocked.
#pragma once

#include <napi.h>
#include <pthread.h>
#include <signal.h>

#include <cstdint>
#include <string>
#include <thread>

namespace shim {

// Throws (as a C++ exception that node-addon-api turns into a JS exception) an
// Error shaped like Node's system errors:
//   message  "<syscall>: <CODE> (<strerror>)[ '<path>'][: <detail>]"
//   code     errno name, e.g. "EBUSY"
//   errno    negative errno number (Node/libuv convention, e.g. -16)
//   syscall  "<syscall>"
//   path     only when given
[[noreturn]] void ThrowErrno(Napi::Env env, int err, const char* syscall,
                             const char* path = nullptr,
                             const char* detail = nullptr);

// Builds the same error without throwing it (used when extra properties must
// be attached before throwing).
Napi::Error MakeErrnoError(Napi::Env env, int err, const char* syscall,
                           const char* path = nullptr,
                           const char* detail = nullptr);

[[noreturn]] void ThrowType(Napi::Env env, const std::string& msg);

// Argument readers: validate the JS type and range, throw TypeError otherwise.
int64_t IntFromValue(Napi::Env env, const Napi::Value& v, const std::string& name,
                     int64_t min, int64_t max);
int32_t ArgInt(const Napi::CallbackInfo& info, size_t i, const char* name,
               int64_t min, int64_t max);
int64_t ArgInt64(const Napi::CallbackInfo& info, size_t i, const char* name,
                 int64_t min, int64_t max, int64_t dflt, bool optional);
int32_t ArgFd(const Napi::CallbackInfo& info, size_t i, const char* name);
bool ArgBool(const Napi::CallbackInfo& info, size_t i, const char* name);
// Strings must not contain NUL bytes (they would be silently truncated by
// the kernel). allowNull: null/undefined -> *isNull = true.
std::string ArgString(const Napi::CallbackInfo& info, size_t i,
                      const char* name, bool allowNull = false,
                      bool* isNull = nullptr);
std::string ValueToPathString(Napi::Env env, const Napi::Value& v,
                              const std::string& what);

// Starts a detached or joinable std::thread whose signal mask blocks every
// signal, so that process-directed signals (SIGCHLD, SIGTERM, ...) are always
// handled by Node's own threads and our blocking syscalls are not
// interrupted.
template <typename F>
std::thread StartThreadSignalsBlocked(F&& fn) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  std::thread t(std::forward<F>(fn));
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return t;
}

// Module parts; each adds its exports to `exports`.
void InitReaper(Napi::Env env, Napi::Object exports);
void InitSpawn(Napi::Env env, Napi::Object exports);
void InitSys(Napi::Env env, Napi::Object exports);
void InitUnix(Napi::Env env, Napi::Object exports);
void InitFdWatch(Napi::Env env, Napi::Object exports);
void InitTitle(Napi::Env env, Napi::Object exports);
void InitIdmap(Napi::Env env, Napi::Object exports);
void InitLoop(Napi::Env env, Napi::Object exports);

// Implemented in reaper.cc, used by spawn.cc.
bool ReaperRunning();
void ReaperNotifyChildCreated();

}  // namespace shim
