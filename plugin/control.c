/* nbdkit-raid: the control-socket server.
 *
 * The protocol is one JSON object per line each way
 * (nbdkit-raid-control(7)), defined in protocol/protocol.h; this file reads
 * lines from the socket, has the protocol module check them, turns checked
 * requests into calls of raidcore's management functions (array.h), and
 * their results into reply lines.
 *
 * THREADS.  One accept thread and one thread per connection, at most
 * CONTROL_MAX_CLIENTS of them.  A connection thread reads its client's
 * lines and handles them one after another: the request runs in that
 * thread, so a slow request (a `wait`, or a `fail`/`add`/`reshape` that
 * appends to every member's superblock journal) delays only the
 * connection that sent it; every other client, and the NBD data path,
 * carry on.  Requests of different connections may run concurrently:
 * raidcore's management functions are safe to call from any thread and
 * serialize what must be serialized themselves.
 *
 * OWNERSHIP.  The connection table belongs to the accept thread while it
 * runs (it fills slots and reaps finished ones), and to control_stop after
 * it has joined the accept thread; no lock is needed.  A connection's
 * buffer, tokener and socket belong to its thread.  The only shared state
 * is `stop` (atomic) and the stop pipe.
 *
 * WAITS.  Every blocking point, who ends it, and its bound:
 *   W1 accept thread, poll (listen socket, stop pipe): a new connection, or
 *      control_stop writing the stop pipe.  After an accept error caused by
 *      a resource limit (EMFILE, ENOMEM...) it polls the stop pipe alone
 *      for ACCEPT_BACKOFF_MS, so it cannot spin.
 *   W2 connection thread, poll (client socket, stop pipe): client data or
 *      hang-up, or control_stop.
 *   W3 writing a reply: poll (POLLOUT), at most CONTROL_WRITE_TIMEOUT_MS
 *      in all; a client that does not read is disconnected.
 *   W4 a `wait` request: raid_array_wait in slices of at most
 *      CONTROL_WAIT_SLICE_MS; between slices it stops early on control_stop
 *      or when the client hung up; in all at most the request's timeout
 *      (<= PROTO_MAX_WAIT_S), or unbounded in time without a timeout but
 *      then ended by any of those two events.
 *   W5 any other raidcore call: bounded by raidcore's contract (its own
 *      member I/O, itself bounded by member timeouts).
 *   W6 control_stop: joins the accept thread (ends W1 at once) and the
 *      connection threads (end W2 at once, W3/W4 within their slice, W5 as
 *      raidcore returns).
 * The stop pipe is written once and never read, so it stays readable and
 * every later poll on it returns at once.
 *
 * REFUSALS.  A request is checked completely by proto_parse_line (no NUL
 * in a field name) and proto_decode (op, every field's type and range, no
 * unknown field) before raidcore is called, so a refused request changes
 * nothing; raidcore's own refusals promise the same.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "array.h"
#include "control.h"
#include "protocol.h"
#include "status-json.h"
#include "util.h"

#define ACCEPT_BACKOFF_MS 100
#define LISTEN_BACKLOG 64

struct conn {
  int fd;
  pthread_t thread;
  atomic_bool done;               /* the thread has finished: join it */
  uid_t uid;
  pid_t pid;
  json_tokener *tok;
  char *buf;                      /* CONTROL_BUF bytes */
  size_t len;                     /* bytes in buf */
};

static struct {
  int listen_fd;                  /* -1: not bound */
  char *path;                     /* as bound, for the final unlink */
  dev_t dev;                      /* identity of the socket file we made */
  ino_t ino;
  int stop_rd, stop_wr;           /* the stop pipe, -1 when not started */
  atomic_bool stop;
  bool running;                   /* the accept thread exists */
  pthread_t accept_thread;
  struct raid_array *a;
  struct conn *conns[CONTROL_MAX_CLIENTS];
} ctl = { .listen_fd = -1, .stop_rd = -1, .stop_wr = -1 };

/* ------------------------------------------------------------------ */
/* Writing replies */

static int
ms_until (const struct timespec *deadline)
{
  struct timespec now;
  int64_t ms;

  clock_gettime (CLOCK_MONOTONIC, &now);
  ms = (deadline->tv_sec - now.tv_sec) * 1000 +
    (deadline->tv_nsec - now.tv_nsec) / 1000000;
  return ms < 0 ? 0 : ms > INT32_MAX ? INT32_MAX : (int) ms;
}

/* Write all of buf, bounded by CONTROL_WRITE_TIMEOUT_MS in all (W3).
 * Returns 0, or -1 when the client is gone or did not read in time. */
static int
write_all (int fd, const char *buf, size_t len)
{
  struct timespec deadline;

  clock_gettime (CLOCK_MONOTONIC, &deadline);
  deadline.tv_sec += CONTROL_WRITE_TIMEOUT_MS / 1000;
  while (len > 0) {
    ssize_t n = send (fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      buf += n;
      len -= n;
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      return -1;
    if (n < 0 && errno == EAGAIN) {
      struct pollfd p = { .fd = fd, .events = POLLOUT };
      int ms = ms_until (&deadline);
      if (ms == 0 || poll (&p, 1, ms) == 0)
        return -1;              /* the client does not read: give up */
    }
  }
  return 0;
}

/* Send reply as one line and release it.  Returns 0 or -1 (see write_all). */
static int
send_reply (int fd, json_object *reply)
{
  const char *s;
  char *line;
  size_t len;
  int r = -1;

  if (reply == NULL)
    return -1;
  s = json_object_to_json_string_ext (reply, JSON_C_TO_STRING_PLAIN |
                                      JSON_C_TO_STRING_NOSLASHESCAPE);
  if (s != NULL && (line = malloc ((len = strlen (s)) + 1)) != NULL) {
    memcpy (line, s, len);
    line[len] = '\n';
    r = write_all (fd, line, len + 1);
    free (line);
  }
  json_object_put (reply);
  return r;
}

/* A new reply object: {"id": id, "ok": ok}.  id is borrowed (may be NULL
 * for a JSON null).  NULL when out of memory. */
static json_object *
new_reply (json_object *id, bool ok)
{
  json_object *r = json_object_new_object ();

  if (r == NULL)
    return NULL;
  if (json_object_object_add (r, "id", json_object_get (id)) != 0 ||
      json_object_object_add (r, "ok", json_object_new_boolean (ok)) != 0) {
    json_object_put (r);
    return NULL;
  }
  return r;
}

static json_object *
error_reply (json_object *id, int err, const char *msg)
{
  json_object *r = new_reply (id, false);

  if (r != NULL &&
      (json_object_object_add (r, "error",
                               json_object_new_string (proto_errno_name (err))) != 0 ||
       json_object_object_add (r, "message", json_object_new_string (msg)) != 0)) {
    json_object_put (r);
    return NULL;
  }
  return r;
}

/* Reply with an error to a connection that is about to be closed. */
static void
refuse (int fd, int err, const char *msg)
{
  send_reply (fd, error_reply (NULL, err, msg));
}

/* ------------------------------------------------------------------ */
/* Ops.  proto_decode has checked every argument against the op table
 * (protocol.h) before any of these runs; what is left is what only raidcore
 * can judge.  Each returns 0 (reply filled) or an errno value (message in
 * q->err). */

struct req {
  struct conn *c;
  enum proto_op op;
  const struct proto_args *args;
  char *err;                      /* PROTO_ERRLEN bytes */
  bool hung_up;                   /* out: the client left; send no reply */
};

static int
add_status (json_object *reply, const struct raid_status *st, struct req *q)
{
  if (raid_status_json_fill (reply, st) == -1) {
    snprintf (q->err, PROTO_ERRLEN, "out of memory encoding the status");
    return ENOMEM;
  }
  return 0;
}

static int
op_status (struct req *q, json_object *reply)
{
  struct raid_status *st = malloc (sizeof *st);
  int r;

  if (st == NULL)
    return ENOMEM;
  raid_array_status (ctl.a, st);
  r = add_status (reply, st, q);
  free (st);
  return r;
}

/* Hung up: POLLHUP means both directions are closed, unlike a client that
 * only shut down its writing side and still reads replies. */
static bool
client_gone (int fd)
{
  struct pollfd p = { .fd = fd, .events = 0 };

  return poll (&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR));
}

/* W4: wait in slices until settled, timed out, stopping, or hung up. */
static int
op_wait (struct req *q, json_object *reply)
{
  bool bounded = proto_has (q->args, PROTO_ARG_TIMEOUT);
  double t = bounded ? q->args->timeout : 0;
  struct raid_status *st;
  struct timespec deadline;
  bool settled;
  int r;

  if ((st = malloc (sizeof *st)) == NULL)
    return ENOMEM;
  clock_gettime (CLOCK_MONOTONIC, &deadline);
  deadline.tv_sec += (time_t) t;
  deadline.tv_nsec += (long) ((t - (double) (time_t) t) * 1e9);
  if (deadline.tv_nsec >= 1000000000) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000;
  }
  for (;;) {
    int ms;

    if (raid_array_wait (ctl.a, 0) || atomic_load (&ctl.stop))
      break;
    if (client_gone (q->c->fd)) {
      free (st);
      q->hung_up = true;        /* nobody to reply to */
      return 0;
    }
    ms = bounded ? ms_until (&deadline) : CONTROL_WAIT_SLICE_MS;
    if (ms == 0)
      break;
    raid_array_wait (ctl.a, (ms < CONTROL_WAIT_SLICE_MS ? ms
                             : CONTROL_WAIT_SLICE_MS) / 1000.0);
  }
  settled = raid_array_wait (ctl.a, 0);
  raid_array_status (ctl.a, st);
  r = add_status (reply, st, q);
  free (st);
  if (r == 0)   /* idle is not settled while owed work is about to begin */
    json_object_object_add (reply, "settled", json_object_new_boolean (settled));
  return r;
}

static int
op_reshape (struct req *q, json_object *reply)
{
  const struct proto_args *a = q->args;
  struct raid_reshape_req rq = {
    .level = proto_has (a, PROTO_ARG_LEVEL) ? a->level : -1,
    .layout = proto_has (a, PROTO_ARG_LAYOUT) ? a->layout_id : -1,
    .chunk = proto_has (a, PROTO_ARG_CHUNK) ? (uint32_t) a->chunk : 0,
    .raid_devices = proto_has (a, PROTO_ARG_RAID_DEVICES) ? a->raid_devices : 0,
    .nadd = a->nadd,
    .add = a->add,
    .force = a->force,
  };
  struct raid_status *plan;
  int r;

  if ((plan = calloc (1, sizeof *plan)) == NULL)
    return ENOMEM;
  r = raid_array_reshape (ctl.a, &rq, plan, q->err, PROTO_ERRLEN);
  if (r == 0)
    r = add_status (reply, plan, q);
  free (plan);
  return r;
}

static int
op_action (struct req *q, json_object *reply)
{
  switch (q->op) {
  case PROTO_OP_START: return raid_array_start_action (ctl.a, q->err, PROTO_ERRLEN);
  case PROTO_OP_FREEZE: return raid_array_freeze (ctl.a, q->err, PROTO_ERRLEN);
  case PROTO_OP_ABORT: return raid_array_abort (ctl.a, q->err, PROTO_ERRLEN);
  case PROTO_OP_CHECK: return raid_array_check (ctl.a, false, q->err, PROTO_ERRLEN);
  case PROTO_OP_REPAIR: return raid_array_check (ctl.a, true, q->err, PROTO_ERRLEN);
  default: abort ();            /* handlers[] sends no other op here */
  }
}

/* fail, remove, add, replace.  raidcore takes a member as a spec or as a
 * role number in decimal. */
static int
op_member (struct req *q, json_object *reply)
{
  const struct proto_member *m = &q->args->member;
  const char *with = proto_has (q->args, PROTO_ARG_WITH) ? q->args->with : NULL;
  char role[16];
  const char *member = m->spec;

  if (m->role >= 0) {
    snprintf (role, sizeof role, "%d", m->role);
    member = role;
  }
  switch (q->op) {
  case PROTO_OP_FAIL: return raid_array_fail (ctl.a, member, q->err, PROTO_ERRLEN);
  case PROTO_OP_REMOVE: return raid_array_remove (ctl.a, member, q->err, PROTO_ERRLEN);
  case PROTO_OP_ADD:
    return raid_array_add (ctl.a, member, q->args->force, q->err, PROTO_ERRLEN);
  case PROTO_OP_REPLACE:
    return raid_array_replace (ctl.a, member, with, q->err, PROTO_ERRLEN);
  default: abort ();            /* handlers[] sends no other op here */
  }
}

static int
op_resize (struct req *q, json_object *reply)
{
  uint64_t size = q->args->size == PROTO_SIZE_MAX ? RAID_RESIZE_MAX : q->args->size;
  int r = raid_array_resize (ctl.a, size, q->args->force, q->err, PROTO_ERRLEN);

  if (r == 0 && proto_json_add (reply, "size", proto_json_uint (raid_array_size (ctl.a))) == -1)
    return ENOMEM;
  return r;
}

static int
op_set (struct req *q, json_object *reply)
{
  const struct proto_args *a = q->args;

  return raid_array_set_speed (ctl.a,
                               proto_has (a, PROTO_ARG_SPEED_MIN) ? &a->speed_min : NULL,
                               proto_has (a, PROTO_ARG_SPEED_MAX) ? &a->speed_max : NULL,
                               q->err, PROTO_ERRLEN);
}

/* The server's half of the op table: what runs each op. */
static const struct handler {
  int (*fn) (struct req *q, json_object *reply);
  bool quiet;                   /* polled often: log at debug level only */
} handlers[PROTO_NOPS] = {
  [PROTO_OP_STATUS] = { op_status, true },
  [PROTO_OP_WAIT] = { op_wait, true },
  [PROTO_OP_RESHAPE] = { op_reshape, false },
  [PROTO_OP_START] = { op_action, false },
  [PROTO_OP_FREEZE] = { op_action, false },
  [PROTO_OP_ABORT] = { op_action, false },
  [PROTO_OP_CHECK] = { op_action, false },
  [PROTO_OP_REPAIR] = { op_action, false },
  [PROTO_OP_FAIL] = { op_member, false },
  [PROTO_OP_REMOVE] = { op_member, false },
  [PROTO_OP_ADD] = { op_member, false },
  [PROTO_OP_REPLACE] = { op_member, false },
  [PROTO_OP_RESIZE] = { op_resize, false },
  [PROTO_OP_SET] = { op_set, false },
};

/* ------------------------------------------------------------------ */
/* One request line */

/* Check and run a parsed request object; returns the reply (NULL: none,
 * the client is gone or memory ran out). */
static json_object *
run_request (struct conn *c, json_object *obj)
{
  char err[PROTO_ERRLEN] = "";
  struct proto_request rq;
  struct req q = { .c = c, .args = &rq.args, .err = err };
  json_object *id = NULL, *reply = NULL;
  int r;

  json_object_object_get_ex (obj, "id", &id);
  r = proto_decode (obj, &rq, err, sizeof err);
  if (rq.op == PROTO_OP_NONE)
    return error_reply (id, r, err);
  q.op = rq.op;
  if (r == 0) {
    assert (handlers[rq.op].fn != NULL);
    if ((reply = new_reply (id, true)) == NULL)
      return NULL;
    r = handlers[rq.op].fn (&q, reply);
    if (r < 0)
      r = EIO;                  /* raidcore promised an errno value */
  }
  raid_log (handlers[rq.op].quiet && r == 0 ? RAID_LOG_DEBUG : RAID_LOG_INFO,
            "control: uid %u pid %d: %s: %s%s%s", (unsigned) c->uid,
            (int) c->pid, proto_op_name (rq.op), q.hung_up ? "client hung up"
            : r ? proto_errno_name (r) : "ok", r ? ": " : "", r ? err : "");
  if (q.hung_up || r != 0)
    json_object_put (reply);
  if (q.hung_up)
    return NULL;
  if (r != 0) {
    if (err[0] == '\0')
      snprintf (err, sizeof err, "%s", raid_strerror (r));
    return error_reply (id, r, err);
  }
  return reply;
}

/* Handle one line (without its '\n').  Returns 0, or -1 when the
 * connection must be closed (the client is gone). */
static int
handle_line (struct conn *c, const char *line, size_t len)
{
  char err[PROTO_ERRLEN];
  json_object *obj, *reply;
  int r;

  if (proto_blank (line, len))
    return 0;
  r = proto_parse_line (c->tok, line, len, &obj, err, sizeof err);
  if (r != 0)                   /* EPROTO, or EINVAL: no id can be read */
    return send_reply (c->fd, error_reply (NULL, r, err));
  reply = run_request (c, obj);
  json_object_put (obj);
  return reply ? send_reply (c->fd, reply) : -1;
}

/* Whether the len bytes at p (a line without its '\n', or the start of
 * one) are more than a line may hold: a carriage return at their end may
 * be the line end's first byte and does not count. */
static bool
over_limit (const char *p, size_t len)
{
  return (len > 0 && p[len - 1] == '\r' ? len - 1 : len) > CONTROL_MAX_LINE;
}

/* EPROTO for a line over the limit; returns -1: close the connection. */
static int
refuse_long (struct conn *c)
{
  char msg[128];

  snprintf (msg, sizeof msg, "request line longer than %u bytes", CONTROL_MAX_LINE);
  refuse (c->fd, EPROTO, msg);
  return -1;
}

/* Handle every complete line in c->buf, keep the rest.  Returns 0, or -1
 * to close the connection. */
static int
handle_lines (struct conn *c)
{
  size_t start = 0;
  char *nl;

  while ((nl = memchr (c->buf + start, '\n', c->len - start)) != NULL) {
    size_t end = nl - c->buf;
    if (over_limit (c->buf + start, end - start))
      return refuse_long (c);
    if (handle_line (c, c->buf + start, end - start) == -1)
      return -1;
    start = end + 1;
  }
  memmove (c->buf, c->buf + start, c->len - start);
  c->len -= start;
  return over_limit (c->buf, c->len) ? refuse_long (c) : 0;
}

/* ------------------------------------------------------------------ */
/* Connection threads */

static void *
conn_thread (void *arg)
{
  struct conn *c = arg;

  while (!atomic_load (&ctl.stop)) {
    struct pollfd p[2] = {
      { .fd = c->fd, .events = POLLIN },
      { .fd = ctl.stop_rd, .events = POLLIN },
    };
    ssize_t n;

    if (poll (p, 2, -1) == -1 && errno != EINTR)   /* W2 */
      break;
    if (p[1].revents)
      break;
    if (!p[0].revents)
      continue;
    n = recv (c->fd, c->buf + c->len, CONTROL_BUF - c->len, 0);
    if (n == 0) {
      /* End of input: a last line without '\n' still counts. */
      if (c->len > 0)
        handle_line (c, c->buf, c->len);
      break;
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR)
        continue;
      break;
    }
    c->len += n;
    if (handle_lines (c) == -1)
      break;
  }
  shutdown (c->fd, SHUT_RDWR);
  atomic_store (&c->done, true);
  return NULL;
}

static void
conn_free (struct conn *c)
{
  if (c == NULL)
    return;
  if (c->fd >= 0)
    close (c->fd);
  if (c->tok)
    json_tokener_free (c->tok);
  free (c->buf);
  free (c);
}

/* Join and free finished connections (accept thread, or control_stop). */
static void
reap (bool all)
{
  for (int i = 0; i < CONTROL_MAX_CLIENTS; i++) {
    struct conn *c = ctl.conns[i];
    if (c && (all || atomic_load (&c->done))) {
      pthread_join (c->thread, NULL);
      conn_free (c);
      ctl.conns[i] = NULL;
    }
  }
}

/* Peer check: the server's own uid or root.  Returns 0, or -1 after
 * replying EACCES. */
static int
check_peer (int fd, uid_t *uid, pid_t *pid)
{
  struct ucred cred;
  socklen_t len = sizeof cred;
  char msg[160];

  if (getsockopt (fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1) {
    refuse (fd, EACCES, "cannot identify the peer (SO_PEERCRED)");
    return -1;
  }
  *uid = cred.uid;
  *pid = cred.pid;
  if (cred.uid == geteuid () || cred.uid == 0)
    return 0;
  snprintf (msg, sizeof msg, "uid %u may not use this control socket "
            "(only uid %u and root)", (unsigned) cred.uid, (unsigned) geteuid ());
  raid_log (RAID_LOG_WARN, "control: refused a connection from uid %u pid %d",
            (unsigned) cred.uid, (int) cred.pid);
  refuse (fd, EACCES, msg);
  return -1;
}

/* Take a new connection into the table and start its thread. */
static void
admit (int fd)
{
  struct conn *c;
  int slot = -1;
  uid_t uid;
  pid_t pid;

  if (check_peer (fd, &uid, &pid) == -1) {
    close (fd);
    return;
  }
  reap (false);
  for (int i = 0; i < CONTROL_MAX_CLIENTS && slot < 0; i++)
    if (ctl.conns[i] == NULL)
      slot = i;
  if (slot < 0) {
    refuse (fd, EAGAIN, "too many control connections; try again later");
    close (fd);
    return;
  }
  c = calloc (1, sizeof *c);
  if (c == NULL || (c->buf = malloc (CONTROL_BUF)) == NULL ||
      (c->tok = json_tokener_new ()) == NULL) {
    refuse (fd, ENOMEM, "out of memory");
    close (fd);
    conn_free (c);
    return;
  }
  json_tokener_set_flags (c->tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
  c->fd = fd;
  c->uid = uid;
  c->pid = pid;
  atomic_init (&c->done, false);
  if (pthread_create (&c->thread, NULL, conn_thread, c) != 0) {
    refuse (fd, EAGAIN, "cannot start a thread for this connection");
    conn_free (c);
    return;
  }
  ctl.conns[slot] = c;
}

static void *
accept_thread (void *arg)
{
  while (!atomic_load (&ctl.stop)) {
    struct pollfd p[2] = {
      { .fd = ctl.listen_fd, .events = POLLIN },
      { .fd = ctl.stop_rd, .events = POLLIN },
    };
    int fd;

    if (poll (p, 2, -1) == -1 && errno != EINTR)   /* W1 */
      break;
    if (p[1].revents)
      break;
    if (!p[0].revents)
      continue;
    fd = accept4 (ctl.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      admit (fd);
      continue;
    }
    if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
      continue;
    raid_log (RAID_LOG_ERROR, "control: accept: %s", raid_strerror (errno));
    reap (false);
    poll (&p[1], 1, ACCEPT_BACKOFF_MS);            /* W1, resource limits */
  }
  return NULL;
}

/* ------------------------------------------------------------------ */
/* Life cycle */

/* A socket file at path: remove it if stale, refuse if someone listens. */
static int
clear_stale (const char *path, const struct sockaddr_un *sa, char *err, size_t errlen)
{
  struct stat st;
  int fd, r, e;

  if (lstat (path, &st) == -1) {
    if (errno == ENOENT)
      return 0;
    snprintf (err, errlen, "control socket %s: %m", path);
    return -1;
  }
  if (!S_ISSOCK (st.st_mode)) {
    snprintf (err, errlen, "control socket %s: the path exists and is not a "
              "socket: not replacing it", path);
    return -1;
  }
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd == -1) {
    snprintf (err, errlen, "socket: %m");
    return -1;
  }
  r = connect (fd, (const struct sockaddr *) sa, sizeof *sa);
  e = errno;
  close (fd);
  if (r == 0 || e == EAGAIN) {
    snprintf (err, errlen, "control socket %s: another server is listening "
              "on it", path);
    return -1;
  }
  if (e != ECONNREFUSED) {
    snprintf (err, errlen, "control socket %s: %s", path, raid_strerror (e));
    return -1;
  }
  if (unlink (path) == -1 && errno != ENOENT) {
    snprintf (err, errlen, "control socket %s: removing the stale socket: %m", path);
    return -1;
  }
  raid_log (RAID_LOG_INFO, "control socket %s: removed a stale socket file", path);
  return 0;
}

int
control_bind (const char *path, char *err, size_t errlen)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  struct stat st;
  mode_t old;
  int fd, r;

  if (path == NULL || *path == '\0') {
    snprintf (err, errlen, "control socket: empty path");
    return -1;
  }
  if (ctl.listen_fd >= 0) {
    snprintf (err, errlen, "control socket already bound");
    return -1;
  }
  if (strlen (path) >= sizeof sa.sun_path) {
    snprintf (err, errlen, "control socket %s: path longer than %zu bytes",
              path, sizeof sa.sun_path - 1);
    return -1;
  }
  strcpy (sa.sun_path, path);
  if (clear_stale (path, &sa, err, errlen) == -1)
    return -1;
  if ((ctl.path = strdup (path)) == NULL) {
    snprintf (err, errlen, "strdup: %m");
    return -1;
  }
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd == -1) {
    snprintf (err, errlen, "socket: %m");
    goto fail;
  }
  /* Mode 0600 from the start: no window where others could connect. */
  old = umask (0177);
  r = bind (fd, (const struct sockaddr *) &sa, sizeof sa);
  umask (old);
  if (r == -1) {
    snprintf (err, errlen, "control socket %s: bind: %m", path);
    goto fail;
  }
  if (chmod (path, 0600) == -1 || stat (path, &st) == -1 ||
      listen (fd, LISTEN_BACKLOG) == -1) {
    snprintf (err, errlen, "control socket %s: %m", path);
    unlink (path);
    goto fail;
  }
  ctl.dev = st.st_dev;
  ctl.ino = st.st_ino;
  ctl.listen_fd = fd;
  return 0;

 fail:
  if (fd >= 0)
    close (fd);
  free (ctl.path);
  ctl.path = NULL;
  return -1;
}

int
control_start_thread (struct raid_array *a)
{
  int p[2];

  if (ctl.listen_fd < 0 || ctl.running)
    return 0;
  if (pipe2 (p, O_CLOEXEC | O_NONBLOCK) == -1) {
    raid_log (RAID_LOG_ERROR, "control: pipe: %s", raid_strerror (errno));
    return -1;
  }
  ctl.stop_rd = p[0];
  ctl.stop_wr = p[1];
  ctl.a = a;
  atomic_store (&ctl.stop, false);
  if (pthread_create (&ctl.accept_thread, NULL, accept_thread, NULL) != 0) {
    raid_log (RAID_LOG_ERROR, "control: cannot start the accept thread");
    close (p[0]);
    close (p[1]);
    ctl.stop_rd = ctl.stop_wr = -1;
    return -1;
  }
  ctl.running = true;
  return 0;
}

void
control_stop (void)
{
  struct stat st;

  atomic_store (&ctl.stop, true);
  if (ctl.running) {
    ssize_t r = write (ctl.stop_wr, "x", 1);   /* wakes W1 and W2 */
    (void) r;
    pthread_join (ctl.accept_thread, NULL);
    ctl.running = false;
  }
  reap (true);
  if (ctl.stop_rd >= 0) {
    close (ctl.stop_rd);
    close (ctl.stop_wr);
    ctl.stop_rd = ctl.stop_wr = -1;
  }
  if (ctl.listen_fd >= 0) {
    close (ctl.listen_fd);
    ctl.listen_fd = -1;
    /* Unlink only our own socket, not one a newer server made since. */
    if (ctl.path && stat (ctl.path, &st) == 0 &&
        st.st_dev == ctl.dev && st.st_ino == ctl.ino)
      unlink (ctl.path);
  }
  free (ctl.path);
  ctl.path = NULL;
  ctl.a = NULL;
}
