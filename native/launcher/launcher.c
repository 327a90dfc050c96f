// SPDX-License-Identifier: Apache-2.0
/*
 * shim-launcher: the first process containerd runs for `start` and `delete`.
 *
 * Booting Node costs tens of milliseconds, paid on containerd's critical path twice per
 * container. When a standby shim process of this pool is up, the launcher offers it the job
 * (argv, cwd and its stdin/stdout/stderr over SCM_RIGHTS) and exits with the job's status.
 * When no standby takes the job, it boots one for this job alone (a forked
 * `node main.js -standby <post> -job-fd 3`, the job offered over a
 * socketpair): a `start` makes it the daemon, so the container costs one Node boot instead of
 * two, and after a `delete` it stays on as a pool standby if a post is free. Everything else
 * (-v, other actions, SHIM_STANDBY=0, a job no standby took) execs Node with the shim as before.
 *
 * The conversation is the hand-over protocol of docs/standby-protocol.md: OFFER, ACCEPT, COMMIT,
 * RUNNING, STATUS. A job is run at most once: the launcher commits only after an ACCEPT, never
 * offers a job again once it read RUNNING, and runs it itself only when no standby said RUNNING.
 * The pool key and the constants are the TypeScript side's (src/pool/key.ts, constants.ts via
 * the generated gen/pool_constants.h).
 *
 * Usage (from bin/containerd-shim-runc-v2): shim-launcher <main.js> [shim args...]
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
#include <sys/wait.h>
#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include "gen/pool_constants.h"

extern char **environ;

static void exec_node(int argc, char **argv) {
  /* argv[1] is main.js, argv[2..] the shim's arguments. */
  const char *node = getenv("SHIM_NODE");
  if (!node || !*node) node = "node";
  char **args = calloc((size_t)argc + 3, sizeof *args);
  if (!args) _exit(1);
  int n = 0;
  args[n++] = (char *)node;
  args[n++] = POOL_NODE_FLAG;
  for (int i = 1; i < argc; i++) args[n++] = argv[i];
  args[n] = NULL;
  execvp(node, args);
  fprintf(stderr, "io.containerd.runc.v2: exec %s: %s", node, strerror(errno));
  _exit(1);
}

/* Go flag syntax: returns the action (first non-flag argument); sets *version for -v. */
static const char *parse(int argc, char **argv, int *version) {
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
    if (len == 7 && strncmp(name, "version", 7) == 0) *version = 1;
    if (takes && !eq) i++; /* its value */
  }
  return "";
}

/* Fault injection for the protocol's tests (src/pool/faults.ts): SHIM_FAULT_SENDER=<step>:kill|stall:<ms>. */
static void fault(const char *step) {
  const char *spec = getenv("SHIM_FAULT_SENDER");
  size_t n = strlen(step);
  if (!spec || strncmp(spec, step, n) != 0 || spec[n] != ':') return;
  const char *what = spec + n + 1;
  if (strcmp(what, "kill") == 0) raise(SIGKILL);
  if (strncmp(what, "stall:", 6) == 0) {
    long ms = atol(what + 6);
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
  }
}

/* FNV-1a 64 over bytes, as fnv1a64 in src/pool/key.ts. */
static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) { h ^= s[i]; h *= 0x100000001b3ULL; }
  return h;
}

static uint64_t fnv_part(uint64_t h, const char *s) {
  return fnv(h, s, strlen(s) + 1); /* each part NUL-terminated */
}

/* Whether the variable `entry` (NAME=value, or NAME) is named in the comma-separated `list`. */
static int listed(const char *entry, const char *list) {
  const char *eq = strchr(entry, '=');
  size_t len = eq ? (size_t)(eq - entry) : strlen(entry);
  while (*list) {
    const char *comma = strchr(list, ',');
    size_t l = comma ? (size_t)(comma - list) : strlen(list);
    if (l == len && strncmp(list, entry, len) == 0) return 1;
    if (!comma) break;
    list = comma + 1;
  }
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Whether the variable `entry` keys no pool: KEY_ENV_IGNORED, or a job's own (JOB_ENV). */
static int ignored(const char *entry) {
  return listed(entry, POOL_KEY_ENV_IGNORED) || listed(entry, POOL_JOB_ENV);
}

/* The pool's base path, as poolBase in src/pool/key.ts. */
static int pool_base(const char *main_js, char *out, size_t outlen) {
  char real[PATH_MAX], num[64];
  struct stat st;
  uint64_t h = 0xcbf29ce484222325ULL;
  h = fnv_part(h, "shim-pool-v3");
  snprintf(num, sizeof num, "%u", (unsigned)geteuid()); h = fnv_part(h, num);
  snprintf(num, sizeof num, "%u", (unsigned)getegid()); h = fnv_part(h, num);
  if (realpath(main_js, real) && stat(real, &st) == 0) {
    h = fnv_part(h, real);
    snprintf(num, sizeof num, "%lld", (long long)st.st_mtim.tv_sec * 1000LL + st.st_mtim.tv_nsec / 1000000L);
    h = fnv_part(h, num);
    snprintf(num, sizeof num, "%lld", (long long)st.st_size);
    h = fnv_part(h, num);
  } else {
    h = fnv_part(h, "");
  }
  h = fnv_part(h, POOL_NODE_FLAG); /* Node's flags (only this one), then an empty part */
  h = fnv_part(h, "");
  size_t n = 0;
  for (char **e = environ; *e; e++) n++;
  char **env = calloc(n + 1, sizeof *env);
  if (!env) return -1;
  size_t k = 0;
  for (char **e = environ; *e; e++)
    if (strchr(*e, '=') && !ignored(*e)) env[k++] = *e;
  qsort(env, k, sizeof *env, cmp_str);
  for (size_t i = 0; i < k; i++) h = fnv_part(h, env[i]);
  free(env);
  return snprintf(out, outlen, "%s/standby-%016llx", POOL_POST_DIR, (unsigned long long)h) < (int)outlen ? 0 : -1;
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

/* One byte from fd within timeout_ms (-1: no limit, poll's clock is monotonic); -1 on EOF/timeout/error. */
static int read_byte(int fd, int timeout_ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int r;
  do { r = poll(&p, 1, timeout_ms); } while (r < 0 && errno == EINTR);
  if (r <= 0) return -1;
  unsigned char b;
  ssize_t n;
  do { n = read(fd, &b, 1); } while (n < 0 && errno == EINTR);
  return n == 1 ? b : -1;
}

static int write_byte(int fd, int b) {
  unsigned char c = (unsigned char)b;
  ssize_t n;
  do { n = send(fd, &c, 1, MSG_NOSIGNAL); } while (n < 0 && errno == EINTR);
  return n == 1 ? 0 : -1;
}

/* The offer: the job message with our stdin/stdout/stderr. */
static int send_offer(int sock, const char *msg, size_t len) {
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

/*
 * A `start` whose runner died after RUNNING may have bound the shim socket and written ./address
 * (cwd is the bundle): remove that socket if nobody listens on it, as the `start` itself does
 * when it fails. Only a shim socket's name (64 hex digits, src/shim/address.ts) is touched.
 */
static void remove_dead_socket(void) {
  char addr[sizeof ((struct sockaddr_un *)0)->sun_path + 16];
  int fd = open("address", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ssize_t n = read(fd, addr, sizeof addr - 1);
  close(fd);
  if (n <= 0) return;
  addr[n] = '\0';
  const char *path = strncmp(addr, "unix://", 7) == 0 ? addr + 7 : addr;
  const char *name = strrchr(path, '/');
  name = name ? name + 1 : path;
  if (strlen(name) != 64 || strspn(name, "0123456789abcdef") != 64) return;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path) return;
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return;
  int r = connect(sock, (struct sockaddr *)&sa, sizeof sa);
  int err = errno;
  close(sock);
  if (r != 0 && err == ECONNREFUSED) unlink(path);
}

/*
 * The sender's side of one conversation. Returns the job's status, or -1 when the job did not
 * run there (no ACCEPT in time, REFUSE, or a close before RUNNING): then it may go elsewhere.
 */
static int converse(int sock, const char *msg, size_t len, int accept_timeout_ms, const char *action) {
  fault("connect");
  if (send_offer(sock, msg, len) != 0) return -1;
  fault("offer");
  if (read_byte(sock, accept_timeout_ms) != POOL_MSG_ACCEPT) return -1;
  fault("accept");
  if (write_byte(sock, POOL_MSG_COMMIT) != 0) return -1;
  fault("commit");
  /* Committed: the standby answers RUNNING or closes without having run anything. */
  if (read_byte(sock, -1) != POOL_MSG_RUNNING) return -1;
  fault("running");
  int status = read_byte(sock, -1);
  if (status < 0) {
    fprintf(stderr, "io.containerd.runc.v2: the standby shim died during %s", action);
    if (strcmp(action, "start") == 0) remove_dead_socket();
    return 1;
  }
  return status;
}

/* The Node a standby runs (SHIM_NODE, or node on PATH), resolved; 0 when unknown. */
static int node_exe(char *out) {
  const char *node = getenv("SHIM_NODE");
  if (!node || !*node) node = "node";
  if (strchr(node, '/')) return realpath(node, out) ? 1 : 0;
  const char *path = getenv("PATH");
  if (!path) path = "/usr/local/bin:/usr/bin:/bin";
  char cand[PATH_MAX];
  while (*path) {
    const char *colon = strchr(path, ':');
    size_t l = colon ? (size_t)(colon - path) : strlen(path);
    if (l > 0 && (size_t)snprintf(cand, sizeof cand, "%.*s/%s", (int)l, path, node) < sizeof cand &&
        access(cand, X_OK) == 0 && realpath(cand, out))
      return 1;
    if (!colon) break;
    path = colon + 1;
  }
  return 0;
}

/*
 * A standby must be ours: our uid and gid (SO_PEERCRED) and, where /proc tells, the Node we
 * would run. The post's 0600 mode in a 0700 directory is the first fence; this is the second.
 */
static int peer_ok(int sock) {
  struct ucred cred;
  socklen_t l = sizeof cred;
  if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &l) != 0) return 0;
  if (cred.uid != geteuid() || cred.gid != getegid()) return 0;
  char want[PATH_MAX], link[64], exe[PATH_MAX];
  if (!node_exe(want)) return 1;
  snprintf(link, sizeof link, "/proc/%d/exe", (int)cred.pid);
  ssize_t n = readlink(link, exe, sizeof exe - 1);
  if (n < 0) return 1; /* gone, or another pid namespace: uid and gid stand */
  exe[n] = '\0';
  return strcmp(exe, want) == 0;
}

/*
 * Opt-in shared daemons (src/pool/shared.ts): on with SHIM_SHARED=1, never with SCHED_CORE (a
 * core-scheduling cookie is one pod's).
 */
static int shared_enabled(void) {
  const char *on = getenv("SHIM_SHARED"), *sc = getenv("SCHED_CORE");
  return on && strcmp(on, "1") == 0 && !(sc && *sc);
}

/*
 * The post of the shared daemons of this pool and containerd's JOB_ENV, as sharedPostOf in
 * src/pool/key.ts: FNV-1a 64 over the pool's base and each NAME=value (unset: empty), each part
 * NUL-terminated, as `<dir of base>/shared-<16 hex>`; its slots are `<post>-<i>`.
 */
static int shared_post(const char *base, char *out, size_t outlen) {
  uint64_t h = 0xcbf29ce484222325ULL;
  h = fnv_part(h, base);
  for (const char *list = POOL_JOB_ENV; *list;) {
    const char *comma = strchr(list, ',');
    size_t l = comma ? (size_t)(comma - list) : strlen(list);
    char name[64], part[PATH_MAX + 64];
    if (l >= sizeof name) return -1;
    memcpy(name, list, l);
    name[l] = '\0';
    const char *v = getenv(name);
    if ((size_t)snprintf(part, sizeof part, "%s=%s", name, v ? v : "") >= sizeof part) return -1;
    h = fnv_part(h, part);
    if (!comma) break;
    list = comma + 1;
  }
  const char *slash = strrchr(base, '/');
  int dirlen = slash ? (int)(slash - base) : 0;
  if ((size_t)snprintf(out, outlen, "%.*s/shared-%016llx", dirlen, base, (unsigned long long)h) >= outlen) return -1;
  return 0;
}

/* Offer the job on the unix socket `path`: its status, or -1 when nobody there ran it. */
static int offer_at(const char *path, const char *msg, size_t len, const char *action) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path) >= sizeof sa.sun_path) return -1;
  int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return -1;
  if (connect(sock, (struct sockaddr *)&sa, sizeof sa) != 0 || !peer_ok(sock)) { close(sock); return -1; }
  int status = converse(sock, msg, len, POOL_ACCEPT_TIMEOUT_MS, action);
  close(sock);
  return status;
}

/*
 * No standby took the job: boot one for it. The child gets /dev/null for 0-2 (it must not hold
 * containerd's pipes once the job is done), the socketpair as fd 3, its own process group like
 * every shim daemon, GOMAXPROCS=4 like the reference's daemon, and one malloc arena. Returns
 * the job's status, or -1 when the child never took it (it is killed and waited for: no zombie).
 */
static int run_direct(char **argv, const char *base, const char *msg, size_t len, const char *action) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return -1;
  char post[sizeof ((struct sockaddr_un *)0)->sun_path];
  snprintf(post, sizeof post, "%s-0", base);
  const char *node = getenv("SHIM_NODE");
  if (!node || !*node) node = "node";
  const char *fixed[] = {node, POOL_NODE_FLAG, argv[1], "-standby", post, "-job-fd", "3"};
  const size_t nfixed = sizeof fixed / sizeof fixed[0];
  /* Each empty argument is one NUL byte of room; the shim's flag parser stops at the first. */
  size_t used = 0;
  for (size_t i = 0; i < nfixed; i++) used += strlen(fixed[i]) + 1;
  size_t pad = used < POOL_TITLE_ROOM ? POOL_TITLE_ROOM - used : 0;
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
    /* As daemonEnv() in src/pool/spawn.ts: one malloc arena unless containerd chose. */
    if (!getenv("MALLOC_ARENA_MAX")) {
      setenv("MALLOC_ARENA_MAX", "1", 1);
      setenv("SHIM_SET_MALLOC_ARENA_MAX", "1", 1);
    }
    execvp(node, args);
    _exit(127);
  }
  free(args);
  close(sv[1]);
  int status = converse(sv[0], msg, len, POOL_DIRECT_ACCEPT_TIMEOUT_MS, action);
  close(sv[0]);
  if (status < 0) {
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
  }
  return status;
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: shim-launcher <main.js> [args...]\n"); return 2; }
  int version = 0;
  const char *action = parse(argc, argv, &version);
  if (version || (strcmp(action, "start") != 0 && strcmp(action, "delete") != 0) ||
      (getenv("SHIM_STANDBY") && strcmp(getenv("SHIM_STANDBY"), "0") == 0))
    exec_node(argc, argv);

  char base[sizeof ((struct sockaddr_un *)0)->sun_path - 4];
  if (pool_base(argv[1], base, sizeof base) != 0) exec_node(argc, argv);

  char cwd[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd)) exec_node(argc, argv);
  char msg[POOL_MAX_OFFER];
  size_t len = 0;
  char num[32];
  int ok = append(msg, sizeof msg, &len, "{\"kind\":\"job\",\"argv\":[") == 0;
  for (int i = 2; ok && i < argc; i++) {
    if (i > 2) ok = append(msg, sizeof msg, &len, ",") == 0;
    ok = ok && json_str(msg, sizeof msg, &len, argv[i]) == 0;
  }
  snprintf(num, sizeof num, "%d", (int)getppid());
  ok = ok && append(msg, sizeof msg, &len, "],\"cwd\":") == 0 && json_str(msg, sizeof msg, &len, cwd) == 0 &&
       append(msg, sizeof msg, &len, ",\"ppid\":") == 0 && append(msg, sizeof msg, &len, num) == 0;
  /* The binary containerd ran (SHIM_ARGV0), which a daemon shows as its own (src/shim/identity.ts). */
  const char *argv0 = getenv("SHIM_ARGV0");
  if (ok && argv0 && *argv0)
    ok = append(msg, sizeof msg, &len, ",\"argv0\":") == 0 && json_str(msg, sizeof msg, &len, argv0) == 0;
  /* containerd's addresses and namespace (JOB_ENV): the job's, taken on by the standby. */
  ok = ok && append(msg, sizeof msg, &len, ",\"env\":{") == 0;
  int first = 1;
  for (char **e = environ; ok && *e; e++) {
    const char *eq = strchr(*e, '=');
    if (!eq || !listed(*e, POOL_JOB_ENV)) continue;
    char name[64];
    size_t nl = (size_t)(eq - *e);
    if (nl >= sizeof name) continue;
    memcpy(name, *e, nl); name[nl] = '\0';
    ok = (first || append(msg, sizeof msg, &len, ",") == 0) && json_str(msg, sizeof msg, &len, name) == 0 &&
         append(msg, sizeof msg, &len, ":") == 0 && json_str(msg, sizeof msg, &len, eq + 1) == 0;
    first = 0;
  }
  ok = ok && append(msg, sizeof msg, &len, "}}") == 0;
  if (!ok) exec_node(argc, argv);

  char post[sizeof ((struct sockaddr_un *)0)->sun_path];
  /* A `start` goes first to a shared daemon with room, which runs it in-process: no Node boots. */
  char shared[sizeof post - 4];
  if (strcmp(action, "start") == 0 && shared_enabled() && shared_post(base, shared, sizeof shared) == 0) {
    for (int i = 0; i < POOL_SHARED_SLOTS; i++) {
      snprintf(post, sizeof post, "%s-%d", shared, i);
      int status = offer_at(post, msg, len, action);
      if (status >= 0) return status;
    }
  }
  /* The pool's posts, in order: a standby that did not say RUNNING did not run the job. */
  for (int i = 0; i < POOL_POOL_SIZE; i++) {
    snprintf(post, sizeof post, "%s-%d", base, i);
    int status = offer_at(post, msg, len, action);
    if (status >= 0) return status;
  }
  int status = run_direct(argv, base, msg, len, action);
  if (status >= 0) return status;
  exec_node(argc, argv);
}
