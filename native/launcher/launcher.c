// SPDX-License-Identifier: Apache-2.0
/*
 * shim-launcher: the first process containerd runs for `start` and `delete`.
 *
 * Booting Node costs tens of milliseconds, paid on containerd's critical path twice per
 * container. When a standby shim daemon for this containerd and this build is up, the launcher
 * hands it the job instead (argv, cwd and its stdin/stdout/stderr over SCM_RIGHTS) and exits
 * with the job's status. When no standby takes the job, it starts a fresh one for this job alone
 * (a forked `node main.js -standby <post> -job-fd 3`, the job sent over a socketpair): a `start`
 * makes it the daemon, so the container costs one Node boot instead of two (a `start` process
 * and a separate daemon), and after a `delete` it stays on as a pool standby if a post is free.
 * Everything else (-v, other actions, SHIM_STANDBY=0, any failure before the job is owned)
 * execs Node with the shim as before. The TypeScript side holds all the policy.
 *
 * Usage (from bin/containerd-shim-runc-v2): shim-launcher <main.js> [shim args...]
 * Protocol: one message {"kind":"job","argv":[...],"cwd":"...","ppid":N,"sent":<epoch ms>,"argv0":"..."}
 * with fds 0,1,2 (argv0: the binary containerd ran, SHIM_ARGV0, which the daemon shows as its own
 * in ps; src/shim/identity.ts);
 * the standby answers 'A' once it owns the job, then one byte: the exit status.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#define ACCEPT_TIMEOUT_MS 3000
/* A fresh Node process must boot before it owns the job; under load that takes a while. */
#define DIRECT_ACCEPT_TIMEOUT_MS 20000
#define MAX_MSG 4000
#define POOL_SIZE 2
/*
 * Bytes of argument range a booted standby gets (empty arguments after its flags), so that as a
 * daemon it can rewrite its command line to the Go shim's (src/shim/identity.ts). TITLE_ROOM in
 * src/shim/pool.ts says how it is sized; keep both equal.
 */
#define TITLE_ROOM 1024

static void exec_node(int argc, char **argv) {
  /* argv[1] is main.js, argv[2..] the shim's arguments. */
  const char *node = getenv("SHIM_NODE");
  if (!node || !*node) node = "node";
  char **args = calloc((size_t)argc + 3, sizeof *args);
  if (!args) _exit(1);
  int n = 0;
  args[n++] = (char *)node;
  args[n++] = "--no-warnings";
  for (int i = 1; i < argc; i++) args[n++] = argv[i];
  args[n] = NULL;
  execvp(node, args);
  fprintf(stderr, "io.containerd.runc.v2: exec %s: %s", node, strerror(errno));
  _exit(1);
}

/* Go flag syntax: returns the action (first non-flag argument) and the -address value. */
static const char *parse(int argc, char **argv, const char **address, int *version) {
  static const char *with_value[] = {"namespace", "id", "address", "publish-binary", "bundle", "socket", "standby", "job-fd", NULL};
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-' || a[1] == '\0') return a;
    if (strcmp(a, "--") == 0) return i + 1 < argc ? argv[i + 1] : "";
    const char *name = a + (a[1] == '-' ? 2 : 1);
    const char *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    int takes = 0;
    for (int k = 0; with_value[k]; k++)
      if (strlen(with_value[k]) == len && strncmp(with_value[k], name, len) == 0) takes = 1;
    if (len == 1 && name[0] == 'v') *version = 1;
    if (!takes) continue;
    const char *value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : "");
    if (len == 7 && strncmp(name, "address", 7) == 0) *address = value;
  }
  return "";
}

/* FNV-1a 64: the same key the TypeScript side computes (src/shim/pool.ts). */
static uint64_t fnv(uint64_t h, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 0x100000001b3ULL; }
  return h;
}

static int standby_path(const char *main_js, const char *address, char *out, size_t outlen) {
  char real[PATH_MAX];
  struct stat st;
  if (!realpath(main_js, real) || stat(real, &st) != 0) return -1;
  const char *ttrpc = getenv("TTRPC_ADDRESS");
  if (!ttrpc) ttrpc = "";
  char mtime[32];
  long long ms = (long long)st.st_mtim.tv_sec * 1000LL + st.st_mtim.tv_nsec / 1000000L;
  snprintf(mtime, sizeof mtime, "%lld", ms);
  const char zero = '\0';
  uint64_t h = 0xcbf29ce484222325ULL;
  h = fnv(h, address, strlen(address)); h = fnv(h, &zero, 1);
  h = fnv(h, ttrpc, strlen(ttrpc));     h = fnv(h, &zero, 1);
  h = fnv(h, real, strlen(real));       h = fnv(h, &zero, 1);
  h = fnv(h, mtime, strlen(mtime));
  return snprintf(out, outlen, "/run/containerd/s/standby-%016llx", (unsigned long long)h) < (int)outlen ? 0 : -1;
}

/* Appends s to buf as a JSON string. Returns -1 when it doesn't fit. */
static int json_str(char *buf, size_t cap, size_t *len, const char *s) {
  char tmp[8];
  if (*len + 1 >= cap) return -1;
  buf[(*len)++] = '"';
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    const char *piece = NULL;
    if (c == '"') piece = "\\\""; else if (c == '\\') piece = "\\\\";
    else if (c < 0x20) { snprintf(tmp, sizeof tmp, "\\u%04x", c); piece = tmp; }
    if (piece) {
      size_t pl = strlen(piece);
      if (*len + pl >= cap) return -1;
      memcpy(buf + *len, piece, pl); *len += pl;
    } else {
      if (*len + 1 >= cap) return -1;
      buf[(*len)++] = (char)c;
    }
  }
  if (*len + 1 >= cap) return -1;
  buf[(*len)++] = '"';
  return 0;
}

static int append(char *buf, size_t cap, size_t *len, const char *s) {
  size_t l = strlen(s);
  if (*len + l >= cap) return -1;
  memcpy(buf + *len, s, l); *len += l;
  return 0;
}

static int read_byte(int fd, int timeout_ms, unsigned char *out) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int r;
  do { r = poll(&p, 1, timeout_ms); } while (r < 0 && errno == EINTR);
  if (r <= 0) return -1;
  ssize_t n;
  do { n = read(fd, out, 1); } while (n < 0 && errno == EINTR);
  return n == 1 ? 0 : -1;
}

/* Sends the job message with our stdin/stdout/stderr. */
static int send_job(int sock, const char *msg, size_t len) {
  int fds[3] = {0, 1, 2};
  union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof fds)]; } ctl;
  memset(&ctl, 0, sizeof ctl);
  struct iovec iov = {.iov_base = (void *)msg, .iov_len = len};
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
  struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof fds);
  memcpy(CMSG_DATA(c), fds, sizeof fds);
  ssize_t sent;
  do { sent = sendmsg(sock, &mh, MSG_NOSIGNAL); } while (sent < 0 && errno == EINTR);
  return sent == (ssize_t)len ? 0 : -1;
}

/* The job's status once the standby owns it (it answered 'A'); -1 when it never took it. */
static int await_status(int sock, int accept_timeout_ms, const char *action) {
  unsigned char b;
  if (read_byte(sock, accept_timeout_ms, &b) != 0 || b != 'A') return -1;
  if (read_byte(sock, -1, &b) != 0) {
    fprintf(stderr, "io.containerd.runc.v2: the standby shim died during %s", action);
    return 1;
  }
  return b;
}

/*
 * No standby took the job: boot one for it. The child gets /dev/null for 0-2 (it must not hold
 * containerd's pipes once the job is done), the socketpair as fd 3, its own process group like
 * every shim daemon, GOMAXPROCS=4 like the reference's daemon, and one malloc arena. Returns the job's status, or
 * -1 when the child never took the job (it is killed first, so the job runs at most once).
 */
static int run_direct(int argc, char **argv, const char *base, const char *msg, size_t len, const char *action) {
  (void)argc;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return -1;
  char post[sizeof ((struct sockaddr_un *)0)->sun_path];
  snprintf(post, sizeof post, "%s-0", base);
  const char *node = getenv("SHIM_NODE");
  if (!node || !*node) node = "node";
  const char *fixed[] = {node, "--no-warnings", argv[1], "-standby", post, "-job-fd", "3"};
  const size_t nfixed = sizeof fixed / sizeof fixed[0];
  /* Each empty argument is one NUL byte of room; the shim's flag parser stops at the first. */
  size_t used = 0;
  for (size_t i = 0; i < nfixed; i++) used += strlen(fixed[i]) + 1;
  size_t pad = used < TITLE_ROOM ? TITLE_ROOM - used : 0;
  char **args = calloc(nfixed + pad + 1, sizeof *args);
  if (!args) { close(sv[0]); close(sv[1]); return -1; }
  for (size_t i = 0; i < nfixed; i++) args[i] = (char *)fixed[i];
  for (size_t i = 0; i < pad; i++) args[nfixed + i] = "";
  pid_t pid = fork();
  if (pid < 0) { free(args); close(sv[0]); close(sv[1]); return -1; }
  if (pid == 0) {
    setpgid(0, 0);
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0) _exit(127);
    /* dup2 onto itself keeps O_CLOEXEC: clear it by hand then. */
    if (sv[1] == 3 ? fcntl(3, F_SETFD, 0) < 0 : dup2(sv[1], 3) < 0) _exit(127);
    if (syscall(SYS_close_range, 4U, ~0U, 0) != 0) {
      for (int fd = 4; fd < 1024; fd++) close(fd);
    }
    setenv("GOMAXPROCS", "4", 1);
    /* As daemonEnv() in src/shim/pool.ts: one malloc arena unless containerd chose. */
    if (!getenv("MALLOC_ARENA_MAX")) {
      setenv("MALLOC_ARENA_MAX", "1", 1);
      setenv("SHIM_SET_MALLOC_ARENA_MAX", "1", 1);
    }
    execvp(node, args);
    _exit(127);
  }
  free(args);
  close(sv[1]);
  int status = send_job(sv[0], msg, len) == 0 ? await_status(sv[0], DIRECT_ACCEPT_TIMEOUT_MS, action) : -1;
  if (status < 0) kill(pid, SIGKILL);
  close(sv[0]);
  return status;
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: shim-launcher <main.js> [args...]\n"); return 2; }
  const char *address = "";
  int version = 0;
  const char *action = parse(argc, argv, &address, &version);
  if (version || (strcmp(action, "start") != 0 && strcmp(action, "delete") != 0) ||
      (getenv("SHIM_STANDBY") && strcmp(getenv("SHIM_STANDBY"), "0") == 0))
    exec_node(argc, argv);

  char base[sizeof ((struct sockaddr_un *)0)->sun_path - 4];
  if (standby_path(argv[1], address, base, sizeof base) != 0) exec_node(argc, argv);

  char cwd[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd)) exec_node(argc, argv);
  char msg[MAX_MSG];
  size_t len = 0;
  char num[32];
  int ok = append(msg, sizeof msg, &len, "{\"kind\":\"job\",\"argv\":[") == 0;
  for (int i = 2; ok && i < argc; i++) {
    if (i > 2) ok = append(msg, sizeof msg, &len, ",") == 0;
    ok = ok && json_str(msg, sizeof msg, &len, argv[i]) == 0;
  }
  snprintf(num, sizeof num, "%d", (int)getppid());
  /* When the job was sent: a standby refuses one older than a second, wherever it queued. */
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  char sent[32];
  snprintf(sent, sizeof sent, "%lld", (long long)now.tv_sec * 1000LL + now.tv_nsec / 1000000L);
  ok = ok && append(msg, sizeof msg, &len, "],\"cwd\":") == 0 && json_str(msg, sizeof msg, &len, cwd) == 0 &&
       append(msg, sizeof msg, &len, ",\"ppid\":") == 0 && append(msg, sizeof msg, &len, num) == 0 &&
       append(msg, sizeof msg, &len, ",\"sent\":") == 0 && append(msg, sizeof msg, &len, sent) == 0;
  const char *argv0 = getenv("SHIM_ARGV0");
  if (ok && argv0 && *argv0)
    ok = append(msg, sizeof msg, &len, ",\"argv0\":") == 0 && json_str(msg, sizeof msg, &len, argv0) == 0;
  ok = ok && append(msg, sizeof msg, &len, "}") == 0;
  if (!ok) exec_node(argc, argv);

  /*
   * The pool's posts, in order (POOL_SIZE in src/shim/pool.ts). A standby that does not answer
   * 'A' did not take the job (busy adopting, retiring; it refuses any job older than a second,
   * so one we gave up on never runs later): try the next one.
   */
  for (int i = 0; i < POOL_SIZE; i++) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s-%d", base, i);
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0) break;
    if (connect(sock, (struct sockaddr *)&sa, sizeof sa) != 0) { close(sock); continue; }
    int status = send_job(sock, msg, len) == 0 ? await_status(sock, ACCEPT_TIMEOUT_MS, action) : -1;
    close(sock);
    if (status >= 0) return status;
  }
  int status = run_direct(argc, argv, base, msg, len, action);
  if (status >= 0) return status;
  exec_node(argc, argv);
}
