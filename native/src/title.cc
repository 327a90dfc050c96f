// SPDX-License-Identifier: Apache-2.0
// The process's own title: what /proc/<pid>/cmdline and /proc/<pid>/comm show, and so what
// ps, pgrep -f, systemd-cgls and monitoring agents see.
//
// /proc/<pid>/cmdline is read straight from the process's memory, the range [arg_start, arg_end)
// where execve(2) placed the argument strings (proc(5): /proc/pid/stat fields 48 and 49; the
// kernel's get_mm_cmdline in fs/proc/base.c). libuv copied argv out of that range at start-up
// (uv_setup_args), so Node's process.argv does not depend on it: the range is ours to rewrite.
// Moving its bounds needs prctl(PR_SET_MM) and CAP_SYS_RESOURCE (prctl(2)); rewriting its
// content needs nothing, but the new title must fit in the room execve gave it. So whoever
// spawns a process that will rename itself gives it room (empty arguments, see
// src/shim/pool.ts), and the rest of the range is zero-filled: procps (ps, pgrep) drops
// trailing NULs. When the bounds can be moved, arg_end is also pulled in to the title's end, so
// that a raw read of /proc/<pid>/cmdline shows exactly the title and no padding.

#include "common.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace shim {

namespace {

// The end of the argument range as execve left it, once we have moved arg_end: later calls
// must still know how much room there is (/proc/self/stat then reports the moved end).
unsigned long g_original_arg_end = 0;

// Room is a few KiB at most in practice; anything bigger is not an argument range we made.
constexpr unsigned long kMaxRoom = 1UL << 21;

// Reads arg_start and arg_end (proc(5): /proc/pid/stat fields 48 and 49). The comm field (2)
// may hold spaces and parentheses, so fields are counted from the last ')'.
bool ReadArgRange(unsigned long* start, unsigned long* end, int* err) {
  int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
  if (fd < 0) { *err = errno; return false; }
  char buf[4096];
  size_t len = 0;
  for (;;) {
    ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) { *err = errno; close(fd); return false; }
    if (n == 0) break;
    len += static_cast<size_t>(n);
    if (len == sizeof buf - 1) break;
  }
  close(fd);
  buf[len] = '\0';
  char* p = strrchr(buf, ')');
  if (p == nullptr) { *err = EPROTO; return false; }
  p++;
  // After ") " comes field 3 (state); field 48 is the 46th from there.
  unsigned long values[2] = {0, 0};
  for (int field = 3; field <= 49; field++) {
    while (*p == ' ') p++;
    if (*p == '\0') { *err = EPROTO; return false; }
    char* next = nullptr;
    if (field >= 48) {
      errno = 0;
      values[field - 48] = strtoul(p, &next, 10);
      if (errno != 0 || next == p) { *err = EPROTO; return false; }
      p = next;
    } else {
      while (*p != ' ' && *p != '\0') p++;
    }
  }
  *start = values[0];
  *end = values[1];
  return true;
}

// setProcessTitle(args: string[], name: string):
//   { room, written, exact, named }
// Overwrites this process's argument range with `args` (NUL-terminated strings, in order), and
// zero-fills the rest. A title longer than the room is cut short, always ending in a NUL; it
// never writes past arg_end. Then pulls arg_end in to the title's end when the kernel lets us
// (exact: true), and sets the calling thread's name (the process's comm when called from the
// main thread; the kernel keeps 15 bytes) with PR_SET_NAME.
//   room     bytes in the argument range
//   written  bytes of the title written (NULs included), <= room
//   exact    whether /proc/self/cmdline now ends where the title ends
//   named    whether PR_SET_NAME succeeded
Napi::Value SetProcessTitle(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) ThrowType(env, "args must be an array of strings");
  Napi::Array arr = info[0].As<Napi::Array>();
  std::vector<std::string> args;
  args.reserve(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++)
    args.push_back(ValueToPathString(env, arr.Get(i), "args[" + std::to_string(i) + "]"));
  std::string name = ArgString(info, 1, "name");

  unsigned long start = 0, end = 0;
  int err = 0;
  if (!ReadArgRange(&start, &end, &err)) ThrowErrno(env, err, "read", "/proc/self/stat");
  if (g_original_arg_end > end) end = g_original_arg_end;
  if (start == 0 || end <= start || end - start > kMaxRoom)
    ThrowErrno(env, ERANGE, "setProcessTitle", nullptr, "no usable argument range");
  const size_t room = end - start;

  // The title, cut to fit: at most room - 1 bytes, then a NUL.
  std::string title;
  for (const std::string& a : args) {
    title.append(a);
    title.push_back('\0');
  }
  if (title.size() > room) {
    title.resize(room);
    title[room - 1] = '\0';
  }
  char* area = reinterpret_cast<char*>(start);
  memcpy(area, title.data(), title.size());
  memset(area + title.size(), 0, room - title.size());

  bool exact = title.size() == room;
  if (!exact && title.size() > 0) {
    // Needs CAP_SYS_RESOURCE (prctl(2), PR_SET_MM); without it the zero-filled tail stays.
    if (prctl(PR_SET_MM, PR_SET_MM_ARG_END, start + title.size(), 0, 0) == 0) {
      if (g_original_arg_end == 0) g_original_arg_end = end;
      exact = true;
    }
  } else if (exact && g_original_arg_end != 0) {
    // The title fills the original room again: give the range back its execve end.
    exact = prctl(PR_SET_MM, PR_SET_MM_ARG_END, end, 0, 0) == 0;
  }

  bool named = name.empty() ||
               prctl(PR_SET_NAME, reinterpret_cast<unsigned long>(name.c_str()), 0, 0, 0) == 0;

  Napi::Object out = Napi::Object::New(env);
  out.Set("room", Napi::Number::New(env, static_cast<double>(room)));
  out.Set("written", Napi::Number::New(env, static_cast<double>(title.size())));
  out.Set("exact", Napi::Boolean::New(env, exact));
  out.Set("named", Napi::Boolean::New(env, named));
  return out;
}

}  // namespace

void InitTitle(Napi::Env env, Napi::Object exports) {
  exports.Set("setProcessTitle",
              Napi::Function::New(env, SetProcessTitle, "setProcessTitle"));
}

}  // namespace shim
