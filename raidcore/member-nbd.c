/* nbdkit-raid: NBD members through libnbd (contract: member.h).
 *
 * Theory
 * ------
 * One libnbd handle per member, driven with the aio API.  Submitters (the
 * threads in mio_run) issue commands on the handle themselves and then poke
 * the member's eventfd; the member's dispatcher thread is the only thread
 * that polls the socket and calls nbd_aio_notify_read/write.  The poke
 * makes it re-read nbd_aio_get_direction, which issuing a command can
 * change (a request that did not fit in the socket buffer needs POLLOUT).
 *
 * One mio becomes one or more wire commands (a request larger than the
 * server's maximum is split; iov elements are separate commands; a zero
 * without server support is a series of writes of the zero buffer).  Its
 * mio_cmd counts them in `outstanding`, set to the full count before the
 * first is issued, so it cannot complete early; every command ends in
 * cmd_finish exactly once, either from its completion callback or, when
 * libnbd refused to queue it, from the submitter.  The last one unlinks the
 * op from the member's in-flight list and hands it to mio_cmd_done; nothing
 * touches it afterwards.  Completion callbacks run with the handle lock
 * held, so they only take our locks and never call nbd_*.
 *
 * Every wait is bounded:
 *   - a lost connection: libnbd moves the handle to DEAD and completes every
 *     queued and in-flight command with an error (ENOTCONN) from inside the
 *     notify call that saw it; the dispatcher then marks the member failed
 *     (fail_err), so later submissions fail at once without touching libnbd.
 *   - a server that stops answering: the in-flight list is kept oldest
 *     first, and the dispatcher's poll timeout is the oldest op's deadline.
 *     When it passes, the member fails with ETIMEDOUT and the dispatcher
 *     shuts the socket down (shutdown(2) on our own dup of it, which stays
 *     valid even after libnbd closed its fd); the next notify sees the end
 *     of the stream, the handle dies, and the aborted commands report
 *     ETIMEDOUT (fail_err overrides libnbd's ENOTCONN).
 *
 * The handle and file descriptors are made in member_open, the thread in
 * member_start (threads do not survive nbdkit's daemonizing fork).  A fork
 * must not leave a dispatcher in the parent reading a socket that now
 * belongs to the child too (nbdkit's parent runs exit handlers while the
 * child starts serving), so the fork handlers park every dispatcher before
 * the fork; the parent restarts only those with ops in flight, everyone
 * else restarts lazily on the next mio_run or member_start.  For the same
 * reason closing a member never sends NBD_CMD_DISC: closing our copies of
 * the descriptors cannot disturb a child's use of the connection.
 */

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <libnbd.h>

#include "member-io.h"
#include "util.h"

#define NBD_DEFAULT_MAX_RW (UINT64_C(32) << 20)  /* unknown server maximum */
#define NBD_LIBNBD_MAX_RW  (UINT64_C(64) << 20)  /* libnbd's own limit */
#define NBD_MAX_ZERO       (UINT64_C(1) << 30)   /* fits the 32-bit length */

struct nbd_member {
  struct member m;
  struct nbd_handle *h;
  int sock;                     /* our dup of the handle's socket */
  int wakefd;                   /* eventfd: submitters poke the dispatcher */
  uint64_t max_rw;              /* largest read/write command */
  bool can_flush, can_zero;

  struct nbd_member *reg_next;  /* registry of open members (fork) */

  pthread_mutex_t lock;         /* guards the fields below */
  pthread_t thread;
  _Atomic unsigned started_gen; /* fork generation of the thread; 0 none */
  bool stopping;                /* member_close: the dispatcher must exit */
  bool parking;                 /* fork: the dispatcher must exit */
  bool parked;                  /* it was running when the fork began */
  int fail_err;                 /* 0 while usable, else every op's error */
  struct mio_cmd *head, *tail;  /* ops in flight, oldest first */
};

static inline struct nbd_member *
nbd_member (struct member *m)
{
  return (struct nbd_member *) m;
}

static void
nbd_poke (struct nbd_member *nm)
{
  uint64_t one = 1;
  ssize_t r = write (nm->wakefd, &one, sizeof one);

  (void) r;          /* EAGAIN: the counter is already non-zero */
}

/* ---- completion ---- */

static void
inflight_unlink (struct nbd_member *nm, struct mio_cmd *c)
{
  if (c->prev)
    c->prev->next = c->next;
  else
    nm->head = c->next;
  if (c->next)
    c->next->prev = c->prev;
  else
    nm->tail = c->prev;
}

/* k wire commands of c ended with err.  The last one completes c. */
static void
cmd_finish (struct nbd_member *nm, struct mio_cmd *c, unsigned k, int err)
{
  bool done;

  pthread_mutex_lock (&nm->lock);
  if (err && nm->fail_err)
    err = nm->fail_err;
  if (err && c->err == 0)
    c->err = err;
  c->outstanding -= k;
  done = c->outstanding == 0;
  if (done)
    inflight_unlink (nm, c);
  err = c->err;
  pthread_mutex_unlock (&nm->lock);
  if (done)
    mio_cmd_done (c, err);
}

/* libnbd completion callback: record and retire (return 1), nothing else. */
static int
nbd_cmd_cb (void *user_data, int *error)
{
  struct mio_cmd *c = user_data;

  cmd_finish (nbd_member (c->io->m), c, 1, *error);
  return 1;
}

/* ---- issuing ---- */

enum wire { WIRE_READ, WIRE_WRITE, WIRE_ZERO, WIRE_FLUSH };

/* Queue one wire command; 0 or errno (then libnbd will not call back). */
static int
wire_issue (struct nbd_member *nm, struct mio_cmd *c, enum wire w,
            void *buf, uint64_t n, uint64_t off, uint32_t flags)
{
  nbd_completion_callback cb = { .callback = nbd_cmd_cb, .user_data = c };
  int64_t cookie = -1;
  int e;

  switch (w) {
  case WIRE_READ:  cookie = nbd_aio_pread (nm->h, buf, n, off, cb, 0); break;
  case WIRE_WRITE: cookie = nbd_aio_pwrite (nm->h, buf, n, off, cb, flags); break;
  case WIRE_ZERO:  cookie = nbd_aio_zero (nm->h, n, off, cb, flags); break;
  case WIRE_FLUSH: cookie = nbd_aio_flush (nm->h, cb, 0); break;
  }
  if (cookie != -1)
    return 0;
  e = nbd_get_errno ();
  raid_log (RAID_LOG_DEBUG, "%s: %s", nm->m.spec, nbd_get_error ());
  return e ? e : EIO;
}

/* Walk the wire commands covering [off, off + len) in pieces of at most
 * step bytes, counting them in *k and issuing them when `issue`.  The
 * buffer advances with the offset unless it is the fixed zero buffer. */
static bool
walk_range (struct nbd_member *nm, struct mio_cmd *c, bool issue, enum wire w,
            char *buf, bool buf_moves, uint64_t off, uint64_t len,
            uint64_t step, uint32_t flags, unsigned *k, int *err)
{
  while (len > 0) {
    uint64_t n = raid_min_u64 (len, step);

    if (issue && (*err = wire_issue (nm, c, w, buf, n, off, flags)) != 0)
      return false;
    ++*k;
    off += n;
    len -= n;
    if (buf_moves)
      buf += n;
  }
  return true;
}

/* The wire commands of c in order: counted (issue false) or issued.
 * Returns how many were counted / issued; *err is set when issuing one
 * failed (the walk stops there).  Both walks see the same immutable mio,
 * so the count is exactly the number of commands issued on success. */
static unsigned
nbd_walk (struct nbd_member *nm, struct mio_cmd *c, bool issue, int *err)
{
  const struct mio *io = c->io;
  uint32_t fua = (io->flags & MIO_FUA) && nm->m.can_fua ? LIBNBD_CMD_FLAG_FUA : 0;
  uint64_t off = io->off;
  unsigned k = 0;
  char *z;

  *err = 0;
  switch (c->op) {
  case MIO_FLUSH:
    if (nm->can_flush
        && !(issue && (*err = wire_issue (nm, c, WIRE_FLUSH, NULL, 0, 0, 0))))
      k = 1;
    break;
  case MIO_READ:
  case MIO_WRITE:
    for (int i = 0; i < io->iovcnt; i++) {
      if (!walk_range (nm, c, issue, c->op == MIO_READ ? WIRE_READ : WIRE_WRITE,
                       io->iov[i].iov_base, true, off, io->iov[i].iov_len,
                       nm->max_rw, fua, &k, err))
        break;
      off += io->iov[i].iov_len;
    }
    break;
  case MIO_ZERO:
    if (nm->can_zero)
      walk_range (nm, c, issue, WIRE_ZERO, NULL, false, off, io->len,
                  NBD_MAX_ZERO, fua, &k, err);
    else if ((z = (char *) member_zeroes ()) == NULL)
      *err = ENOMEM;
    else
      walk_range (nm, c, issue, WIRE_WRITE, z, false, off, io->len,
                  raid_min_u64 (nm->max_rw, MEMBER_ZERO_BUF_SIZE), fua, &k, err);
    break;
  }
  return k;
}

static void
nbd_submit (struct member *m, struct mio_cmd *c)
{
  struct nbd_member *nm = nbd_member (m);
  uint64_t timeout = member_io_timeout_ns ();
  unsigned n, issued;
  int err;

  if (c->op != MIO_FLUSH)
    c->need_flush = (c->io->flags & MIO_FUA) && !m->can_fua && nm->can_flush
                    && (c->op == MIO_WRITE || c->op == MIO_ZERO);
  n = nbd_walk (nm, c, false, &err);

  pthread_mutex_lock (&nm->lock);
  if (nm->fail_err)
    err = nm->fail_err;
  if (err == 0 && n > 0) {
    c->outstanding = n;
    c->err = 0;
    c->deadline_ns = timeout ? raid_now_mono_ns () + timeout : UINT64_MAX;
    c->next = NULL;
    c->prev = nm->tail;
    if (nm->tail)
      nm->tail->next = c;
    else
      nm->head = c;
    nm->tail = c;
  }
  pthread_mutex_unlock (&nm->lock);
  if (err || n == 0) {              /* failed member, or nothing to send */
    mio_cmd_done (c, err);
    return;
  }

  issued = nbd_walk (nm, c, true, &err);
  if (issued < n)
    cmd_finish (nm, c, n - issued, err ? err : EIO);
  nbd_poke (nm);
}

/* ---- the dispatcher ---- */

/* Mark the member failed (first cause wins) and cut the connection, so
 * libnbd ends every command it still holds at the next notify. */
static void
nbd_fail (struct nbd_member *nm, int err, const char *why)
{
  bool first;

  pthread_mutex_lock (&nm->lock);
  first = nm->fail_err == 0;
  if (first)
    nm->fail_err = err;
  pthread_mutex_unlock (&nm->lock);
  if (first)
    raid_log (RAID_LOG_ERROR, "%s: %s: %s", nm->m.spec, why, raid_strerror (err));
  shutdown (nm->sock, SHUT_RDWR);
}

/* Milliseconds until deadline (poll's timeout), -1 for none. */
static int
ms_until (uint64_t deadline)
{
  uint64_t now = raid_now_mono_ns (), ms;

  if (deadline == UINT64_MAX)
    return -1;
  if (deadline <= now)
    return 0;
  ms = (deadline - now + 999999) / 1000000;
  return ms > INT_MAX ? INT_MAX : (int) ms;
}

static void
drain_wakefd (struct nbd_member *nm)
{
  uint64_t v;
  ssize_t r = read (nm->wakefd, &v, sizeof v);

  (void) r;
}

/* The handle is gone: every command has been ended by libnbd.  Sleep until
 * member_close or a fork says stop (woken by their poke). */
static void
wait_for_stop (struct nbd_member *nm)
{
  struct pollfd pfd = { .fd = nm->wakefd, .events = POLLIN };

  for (;;) {
    bool stop;

    pthread_mutex_lock (&nm->lock);
    stop = nm->stopping || nm->parking;
    pthread_mutex_unlock (&nm->lock);
    if (stop || (poll (&pfd, 1, -1) == -1 && errno != EINTR))
      return;
    drain_wakefd (nm);
  }
}

/* Let libnbd act on what poll saw, re-reading the direction first: a
 * submitter may have changed it meanwhile.  A notify can still fail
 * harmlessly when the state moved on between the two calls, so only a
 * handle that actually died fails the member. */
static void
nbd_notify (struct nbd_member *nm, short revents)
{
  unsigned dir = nbd_aio_get_direction (nm->h);
  char msg[256];
  int r = 0, e;

  if ((dir & LIBNBD_AIO_DIRECTION_READ) && (revents & (POLLIN | POLLHUP | POLLERR)))
    r = nbd_aio_notify_read (nm->h);
  else if ((dir & LIBNBD_AIO_DIRECTION_WRITE) && (revents & (POLLOUT | POLLHUP | POLLERR)))
    r = nbd_aio_notify_write (nm->h);
  if (r == 0)
    return;
  e = nbd_get_errno ();
  snprintf (msg, sizeof msg, "%s", nbd_get_error ());   /* valid until the */
  raid_log (RAID_LOG_DEBUG, "%s: %s", nm->m.spec, msg);  /* next nbd_ call */
  if (nbd_aio_is_dead (nm->h) || nbd_aio_is_closed (nm->h))
    nbd_fail (nm, e ? e : ENOTCONN, "connection lost");
}

/* Time out the oldest op when its deadline has passed. */
static void
nbd_check_deadline (struct nbd_member *nm)
{
  bool expired;

  pthread_mutex_lock (&nm->lock);
  expired = nm->fail_err == 0 && nm->head
            && nm->head->deadline_ns <= raid_now_mono_ns ();
  pthread_mutex_unlock (&nm->lock);
  if (expired)
    nbd_fail (nm, ETIMEDOUT, "I/O timed out, shutting the connection down");
}

static void *
nbd_dispatch (void *arg)
{
  struct nbd_member *nm = arg;

  for (;;) {
    struct pollfd pfd[2];
    uint64_t deadline;
    unsigned dir;
    bool stop, failed;

    pthread_mutex_lock (&nm->lock);
    stop = nm->stopping || nm->parking;
    failed = nm->fail_err != 0;
    deadline = nm->head && !failed ? nm->head->deadline_ns : UINT64_MAX;
    pthread_mutex_unlock (&nm->lock);
    if (stop)
      break;
    if (nbd_aio_is_dead (nm->h) || nbd_aio_is_closed (nm->h)) {
      nbd_fail (nm, ENOTCONN, "connection lost");
      wait_for_stop (nm);
      break;
    }

    dir = nbd_aio_get_direction (nm->h);
    pfd[0].fd = dir ? nm->sock : -1;
    pfd[0].events = ((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0)
                    | ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0);
    pfd[1].fd = nm->wakefd;
    pfd[1].events = POLLIN;
    pfd[0].revents = pfd[1].revents = 0;
    if (poll (pfd, 2, ms_until (deadline)) == -1) {
      if (errno == EINTR)           /* (signals are blocked here) */
        continue;
      /* Cannot wait any more: end the connection and let the notify below
       * meet the end of the stream, which fails every command. */
      nbd_fail (nm, errno, "poll");
      pfd[0].revents = POLLHUP;
      pfd[1].revents = 0;
    }
    if (pfd[1].revents)
      drain_wakefd (nm);
    if (pfd[0].revents & POLLNVAL)   /* impossible: sock outlives us */
      nbd_fail (nm, EBADF, "poll");
    else if (pfd[0].revents)
      nbd_notify (nm, pfd[0].revents);
    nbd_check_deadline (nm);
  }
  return NULL;
}

static int
nbd_start (struct member *m)
{
  struct nbd_member *nm = nbd_member (m);
  unsigned gen = atomic_load (&member_fork_gen);
  sigset_t all, old;
  int r = 0;

  if (atomic_load (&nm->started_gen) == gen)
    return 0;
  pthread_mutex_lock (&nm->lock);
  if (atomic_load (&nm->started_gen) != gen) {
    sigfillset (&all);
    pthread_sigmask (SIG_BLOCK, &all, &old);   /* signals go elsewhere */
    r = pthread_create (&nm->thread, NULL, nbd_dispatch, nm);
    pthread_sigmask (SIG_SETMASK, &old, NULL);
    if (r == 0)
      atomic_store (&nm->started_gen, gen);
    else
      raid_log (RAID_LOG_ERROR, "%s: pthread_create: %s", m->spec, raid_strerror (r));
  }
  pthread_mutex_unlock (&nm->lock);
  return r;
}

/* ---- fork ---- */

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct nbd_member *registry;   /* every open NBD member */

static bool
dispatcher_running (struct nbd_member *nm)
{
  return atomic_load (&nm->started_gen) == atomic_load (&member_fork_gen);
}

/* Make the dispatcher exit (flag: stopping or parking) and join it. */
static void
dispatcher_join (struct nbd_member *nm, bool *flag)
{
  pthread_mutex_lock (&nm->lock);
  *flag = true;
  pthread_mutex_unlock (&nm->lock);
  nbd_poke (nm);
  pthread_join (nm->thread, NULL);
}

/* Before fork: no dispatcher may run across it.  The registry stays locked
 * until after the fork, so no member appears or vanishes meanwhile. */
void
member_nbd_atfork_prepare (void)
{
  pthread_mutex_lock (&registry_lock);
  for (struct nbd_member *nm = registry; nm; nm = nm->reg_next) {
    if (!dispatcher_running (nm))
      continue;
    dispatcher_join (nm, &nm->parking);
    pthread_mutex_lock (&nm->lock);
    nm->parking = false;
    nm->parked = true;
    atomic_store (&nm->started_gen, 0);
    pthread_mutex_unlock (&nm->lock);
  }
}

/* After fork, in the parent: ops in flight need their dispatcher back. */
void
member_nbd_atfork_parent (void)
{
  for (struct nbd_member *nm = registry; nm; nm = nm->reg_next) {
    bool busy;

    pthread_mutex_lock (&nm->lock);
    busy = nm->parked && nm->head != NULL;
    nm->parked = false;
    pthread_mutex_unlock (&nm->lock);
    if (busy)
      nbd_start (&nm->m);
  }
  pthread_mutex_unlock (&registry_lock);
}

/* After fork, in the child: dispatchers start on first use. */
void
member_nbd_atfork_child (void)
{
  pthread_mutex_init (&registry_lock, NULL);
  for (struct nbd_member *nm = registry; nm; nm = nm->reg_next)
    nm->parked = false;
}

/* ---- open / close ---- */

static void
nbd_close_member (struct member *m)
{
  struct nbd_member *nm = nbd_member (m);
  struct nbd_member **pp;

  pthread_mutex_lock (&registry_lock);
  for (pp = &registry; *pp != nm; pp = &(*pp)->reg_next)
    ;
  *pp = nm->reg_next;
  pthread_mutex_unlock (&registry_lock);

  if (dispatcher_running (nm))
    dispatcher_join (nm, &nm->stopping);
  nbd_close (nm->h);                 /* no NBD_CMD_DISC: see the top */
  close (nm->sock);
  close (nm->wakefd);
  pthread_mutex_destroy (&nm->lock);
  member_fini (m);
  free (nm);
}

static const struct member_backend nbd_backend = {
  .kind = MEMBER_NBD,
  .start = nbd_start,
  .submit = nbd_submit,
  .close = nbd_close_member,
};

/* "<spec>: <what>: <cause>" from the failed libnbd call just made. */
static int
nbd_open_error (const char *spec, const char *what, char *err, size_t errlen)
{
  int e = nbd_get_errno ();

  if (e)
    member_err (err, errlen, spec, what, e);
  else if (err && errlen)
    snprintf (err, errlen, "%s: %s: %s", spec, what, nbd_get_error ());
  return e ? e : EIO;
}

/* nbd_connect_uri, bounded like any member I/O: a server that accepts
 * but never completes the handshake must not hang the caller. */
static int
nbd_connect_bounded (struct nbd_handle *h, const char *spec,
                     char *err, size_t errlen)
{
  uint64_t t = member_io_timeout_ns ();
  uint64_t deadline = t ? raid_now_mono_ns () + t : UINT64_MAX;

  if (nbd_aio_connect_uri (h, spec) == -1)
    return nbd_open_error (spec, "connect", err, errlen);
  while (nbd_aio_is_connecting (h) == 1) {
    int r = nbd_poll (h, ms_until (deadline));

    if (r == -1)
      return nbd_open_error (spec, "connect", err, errlen);
    if (r == 0 && raid_now_mono_ns () >= deadline) {
      member_err (err, errlen, spec, "connect", ETIMEDOUT);
      return ETIMEDOUT;
    }
  }
  if (nbd_aio_is_ready (h) != 1) {
    member_err (err, errlen, spec, "connect", ECONNRESET);
    return ECONNRESET;
  }
  return 0;
}

/* Connect and learn what the export can do; 0 or errno. */
static int
nbd_connect_member (struct nbd_member *nm, const char *spec, bool readonly,
                    uint64_t *size, char *err, size_t errlen)
{
  int64_t sz, max;
  int r;

  nm->h = nbd_create ();
  if (nm->h == NULL)
    return nbd_open_error (spec, "nbd_create", err, errlen);
  nbd_set_pread_initialize (nm->h, false);   /* failed reads are errors */
  nbd_set_full_info (nm->h, true);          /* ask for the description */
  if ((r = nbd_connect_bounded (nm->h, spec, err, errlen)) != 0)
    return r;
  if ((sz = nbd_get_size (nm->h)) == -1)
    return nbd_open_error (spec, "size", err, errlen);
  if (!readonly && nbd_is_read_only (nm->h) == 1) {
    member_err (err, errlen, spec, "export is read-only", EROFS);
    return EROFS;
  }
  max = nbd_get_block_size (nm->h, LIBNBD_SIZE_MAXIMUM);
  nm->max_rw = max > 0 ? raid_min_u64 (max, NBD_LIBNBD_MAX_RW) : NBD_DEFAULT_MAX_RW;
  nm->can_flush = nbd_can_flush (nm->h) == 1;
  nm->can_zero = nbd_can_zero (nm->h) == 1;
  nm->sock = fcntl (nbd_aio_get_fd (nm->h), F_DUPFD_CLOEXEC, 0);
  if (nm->sock == -1) {
    member_err (err, errlen, spec, "dup socket", errno);
    return errno;
  }
  *size = sz;
  return 0;
}

struct member *
member_nbd_open (const char *spec, bool readonly, char *err, size_t errlen)
{
  struct nbd_member *nm = calloc (1, sizeof *nm);
  uint64_t size = 0;
  int r;

  if (nm == NULL) {
    member_err (err, errlen, spec, "open", ENOMEM);
    errno = ENOMEM;
    return NULL;
  }
  nm->sock = nm->wakefd = -1;
  r = nbd_connect_member (nm, spec, readonly, &size, err, errlen);
  if (r == 0 && (nm->wakefd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK)) == -1) {
    r = errno;
    member_err (err, errlen, spec, "eventfd", r);
  }
  if (r == 0 && member_init (&nm->m, &nbd_backend, spec, size,
                             nbd_can_fua (nm->h) == 1, readonly)) {
    r = ENOMEM;
    member_err (err, errlen, spec, "open", r);
  }
  if (r == 0)
    nm->m.description = nbd_get_export_description (nm->h);   /* NULL: none */
  if (r) {
    if (nm->h)
      nbd_close (nm->h);
    if (nm->sock >= 0)
      close (nm->sock);
    if (nm->wakefd >= 0)
      close (nm->wakefd);
    free (nm);
    errno = r;
    return NULL;
  }
  pthread_mutex_init (&nm->lock, NULL);
  pthread_mutex_lock (&registry_lock);
  nm->reg_next = registry;
  registry = nm;
  pthread_mutex_unlock (&registry_lock);
  return &nm->m;
}
