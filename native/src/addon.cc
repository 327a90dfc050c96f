// SPDX-License-Identifier: Apache-2.0
// Module entry point and the helpers shared by every part of the addon.
//
// The addon keeps process-wide state (the reaper and fd-watcher threads), so
// it must only be loaded by the main JS thread (the TypeScript loader checks
// this). Process-lifetime objects are heap allocated and never freed: helper
// threads may still be running while static destructors execute at exit.

#include "common.h"

#include <string.h>

#include <cerrno>
#include <cmath>
#include <limits>

namespace shim {

namespace {

const char* ErrnoName(int err) {
#if defined(__GLIBC__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  const char* name = strerrorname_np(err);
  if (name != nullptr) return name;
#endif
  return "UNKNOWN";
}

const char* ErrnoText(int err) {
#if defined(__GLIBC__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  const char* text = strerrordesc_np(err);  // untranslated, thread-safe
  if (text != nullptr) return text;
#endif
  return "Unknown error";
}

}  // namespace

Napi::Error MakeErrnoError(Napi::Env env, int err, const char* syscall,
                           const char* path, const char* detail) {
  std::string msg = std::string(syscall) + ": " + ErrnoName(err) + " (" +
                    ErrnoText(err) + ")";
  if (path != nullptr) msg += std::string(" '") + path + "'";
  if (detail != nullptr) msg += std::string(": ") + detail;
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, ErrnoName(err)));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  if (path != nullptr) e.Set("path", Napi::String::New(env, path));
  return e;
}

void ThrowErrno(Napi::Env env, int err, const char* syscall, const char* path,
                const char* detail) {
  throw MakeErrnoError(env, err, syscall, path, detail);
}

void ThrowType(Napi::Env env, const std::string& msg) {
  throw Napi::TypeError::New(env, msg);
}

int64_t IntFromValue(Napi::Env env, const Napi::Value& v, const std::string& name,
                     int64_t min, int64_t max) {
  if (!v.IsNumber()) ThrowType(env, name + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::trunc(d) != d ||
      d < static_cast<double>(min) || d > static_cast<double>(max)) {
    ThrowType(env, name + " must be an integer in [" + std::to_string(min) +
                       ", " + std::to_string(max) + "], got " +
                       v.ToString().Utf8Value());
  }
  return static_cast<int64_t>(d);
}

int64_t ArgInt64(const Napi::CallbackInfo& info, size_t i, const char* name,
                 int64_t min, int64_t max, int64_t dflt, bool optional) {
  Napi::Value v = info[i];
  if (optional && (v.IsUndefined() || v.IsNull())) return dflt;
  return IntFromValue(info.Env(), v, name, min, max);
}

int32_t ArgInt(const Napi::CallbackInfo& info, size_t i, const char* name,
               int64_t min, int64_t max) {
  return static_cast<int32_t>(ArgInt64(info, i, name, min, max, 0, false));
}

int32_t ArgFd(const Napi::CallbackInfo& info, size_t i, const char* name) {
  return ArgInt(info, i, name, 0, std::numeric_limits<int32_t>::max());
}

bool ArgBool(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsBoolean())
    ThrowType(info.Env(), std::string(name) + " must be a boolean");
  return info[i].As<Napi::Boolean>().Value();
}

std::string ValueToPathString(Napi::Env env, const Napi::Value& v,
                              const std::string& what) {
  if (!v.IsString()) ThrowType(env, what + " must be a string");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos)
    ThrowType(env, what + " must not contain NUL bytes");
  return s;
}

std::string ArgString(const Napi::CallbackInfo& info, size_t i,
                      const char* name, bool allowNull, bool* isNull) {
  Napi::Value v = info[i];
  if (allowNull && (v.IsNull() || v.IsUndefined())) {
    if (isNull != nullptr) *isNull = true;
    return std::string();
  }
  if (isNull != nullptr) *isNull = false;
  return ValueToPathString(info.Env(), v, name);
}

}  // namespace shim

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  shim::InitReaper(env, exports);
  shim::InitSpawn(env, exports);
  shim::InitSys(env, exports);
  shim::InitUnix(env, exports);
  shim::InitFdWatch(env, exports);
  shim::InitTitle(env, exports);
  shim::InitIdmap(env, exports);
  shim::InitLoop(env, exports);
  return exports;
}

NODE_API_MODULE(shim_native, InitModule)
