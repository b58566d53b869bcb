/* nbdkit-raid: NBD members through libnbd (contract: member.h).
 *
 * Theory
 * ------
 * One connection at a time per member (struct nbd_conn: a libnbd handle,
 * our dup of its socket, what the export can do), driven with the aio API.
 * conn_open is the one place that makes and configures a handle, for
 * member_open and member_reconnect alike.  Submitters (the threads in
 * mio_run) issue commands on the handle themselves and then ring the
 * member's doorbell (an eventfd) when the dispatcher must look again; the
 * member's dispatcher thread is the only thread that polls an installed
 * connection's socket and calls nbd_aio_notify_read/write.  A connection
 * ready for commands wants to read (its direction is READ, idle or not),
 * so the dispatcher always polls it for POLLIN and needs no ring to see a
 * reply.  Issuing a command changes what it must poll for only when the
 * request did not fit in the socket buffer: the direction then includes
 * WRITE, and only then does the submitter ring, which makes the
 * dispatcher re-read the direction and poll for POLLOUT too.  (A ring per
 * command, as before, cost an eventfd write and a dispatcher wake-up for
 * every member request: a tenth of the array server's CPU in a stream of
 * small writes.)  The oldest op's deadline needs no ring either: a
 * dispatcher with nothing in flight still wakes every IDLE_LOOK_NS, one
 * second, so an op issued meanwhile, whose deadline is a whole timeout
 * (whole seconds) after it, is seen by then and timed out at its
 * deadline (nbd_dispatch) — also when the timeout was off (0) while the
 * dispatcher went idle and was turned on since.  The submitter reads the
 * direction while its op is still in flight (its hold, one count of
 * `outstanding`), so the connection cannot be retired under it.
 * A handshake is polled by the thread making the connection, before
 * anyone else sees it.
 *
 * One mio becomes one or more wire commands (a request larger than the
 * server's maximum is split; a vectored write is gathered into one buffer
 * first, the op's bounce, freed when it completes, so that it goes out as
 * one command and not one per iov element, which a far member pays a round
 * for each; the iov elements of a read are separate commands; a zero
 * without server support is a series of writes of the zero buffer).  Its
 * mio_cmd counts them in `outstanding`, set to the full count before the
 * first is issued, so it cannot complete early; every command ends in
 * cmd_finish exactly once, either from its completion callback or, when
 * libnbd refused to queue it, from the submitter.  The last one unlinks the
 * op from the member's in-flight list and hands it to mio_cmd_done; nothing
 * touches it afterwards.  Completion callbacks run with the handle lock
 * held, so they only take our locks and never call nbd_*.
 *
 * Every wait is bounded, and a member whose connection fails is *down*
 * (fail_err != 0): later submissions fail at once without touching libnbd.
 *   - a lost connection: libnbd moves the handle to DEAD and ends every
 *     queued and in-flight command with ENOTCONN from inside the call that
 *     saw it (a notify, or a submitter's issue).  cmd_finish takes ENOTCONN
 *     as that abort (no NBD server can send it) and marks the member down
 *     before it completes the op; a submitter whose issue is refused on a
 *     dead handle does the same; and the dispatcher, seeing the dead
 *     handle, marks it down if nobody did (a member idle when its server
 *     died).  So an op that fails because of its connection completes on a
 *     member already down, and member_is_down tells that from a request
 *     the server failed.
 *   - a server that stops answering: the in-flight list is kept oldest
 *     first, and the dispatcher's poll timeout is the oldest op's deadline.
 *     When it passes, the member goes down with ETIMEDOUT and the
 *     dispatcher cuts the connection (raid_sock_abort on our own dup of the
 *     socket, which stays valid even after libnbd closed its fd: a TCP
 *     connection is reset and its unsent requests dropped, so none of
 *     them reaches the server after a lost link comes back); the next notify
 *     sees the end of the stream, the handle dies, and the aborted
 *     commands report ETIMEDOUT (fail_err overrides libnbd's ENOTCONN).
 *
 * Who may touch a connection, and when (nm->conn itself only under
 * nm->lock):
 *   - a submitter copies nm->conn under the lock when it registers its op,
 *     which it may only do while the member is up, and uses the copy only
 *     while that op is in flight (unfinished commands keep it listed);
 *   - a dispatcher copies nm->conn when it starts and serves that one
 *     connection until it exits; it is started only for an installed
 *     connection;
 *   - member_reconnect replaces it.  Only while the member is down (so
 *     nobody registers), only once the in-flight list is empty (so no
 *     submitter holds a copy, and every op of the old connection has
 *     completed), and only once the old dispatcher has been joined.
 *     started_gen keeps saying "running" between that join and the lock
 *     section that detaches the old connection, so no submitter starts a
 *     dispatcher on it in between.  The old handle is then closed with
 *     nothing in flight: no callback of it can still come.  The member has
 *     no connection while the new one is made, lock-free, so submitters
 *     keep failing at once; one lock section installs it, starts its
 *     dispatcher and clears fail_err, and only that makes the member up.
 *
 * One reconnect at a time per member (`reconnecting`; a second gets EBUSY).
 * A dispatcher has exactly one joiner at a time: member_close, the fork
 * prepare handler and a reconnect.  Close and fork set closing / forking,
 * ring the doorbell, broadcast, and wait for `reconnecting` to clear; a
 * reconnect checks those flags at each step (its wait for the old ops, every
 * poll of its handshake, which also listens to the doorbell since no
 * dispatcher runs then, and the install) and returns ECANCELED; and it does
 * not begin while either flag is set.  Its last touch of the member is
 * clearing `reconnecting`, so a close waiting for that may free it.
 *
 * The first connection and the doorbell are made in member_open, the
 * thread in member_start (threads do not survive nbdkit's daemonizing
 * fork).  A fork must not leave a dispatcher in the parent reading a
 * socket that now belongs to the child too (nbdkit's parent runs exit
 * handlers while the child starts serving), so the fork handlers cut
 * reconnects short, park every dispatcher and hold every member lock
 * across the fork; the parent restarts the dispatchers of members with ops
 * in flight, everyone else restarts lazily on the next mio_run or
 * member_start.  For the same reason closing a connection never sends
 * NBD_CMD_DISC: closing our copies of the descriptors cannot disturb a
 * child's use of the connection.
 */

#include <assert.h>
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
#include <inttypes.h>
#include <time.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <libnbd.h>

#include "member-io.h"
#include "util.h"

#define NBD_DEFAULT_MAX_RW (UINT64_C(32) << 20)  /* unknown server maximum */
#define NBD_LIBNBD_MAX_RW  (UINT64_C(64) << 20)  /* libnbd's own limit */
#define NBD_MAX_ZERO       (UINT64_C(1) << 30)   /* fits the 32-bit length */
#define IDLE_LOOK_NS       (UINT64_C(1000000000))  /* see the top */

/* One connection to the export, and what the export can do.  Made by
 * conn_open, ended by conn_close; copied by value (see the top for who may
 * hold a copy). */
struct nbd_conn {
  struct nbd_handle *h;         /* NULL: no connection */
  int sock;                     /* our dup of the handle's socket */
  uint64_t size;                /* export size at connect */
  uint64_t max_rw;              /* largest read/write command */
  bool can_flush, can_zero, can_fua;
};

struct nbd_member {
  struct member m;
  int wakefd;                   /* eventfd, the doorbell: see the top */

  struct nbd_member *reg_next;  /* registry of open members (fork) */

  pthread_mutex_t lock;         /* guards the fields below */
  pthread_cond_t cond;          /* broadcast when the in-flight list empties
                                   during a reconnect, when closing or
                                   forking is set, when reconnecting clears */
  struct nbd_conn conn;         /* h NULL: none (down, old one retired) */
  pthread_t thread;
  _Atomic unsigned started_gen; /* fork generation of the thread; 0 none */
  bool stop;                    /* the dispatcher must exit (its joiner) */
  bool reconnecting;            /* a member_reconnect is under way */
  bool closing;                 /* member_close has begun */
  bool forking;                 /* between the fork handlers */
  int fail_err;                 /* 0 while up, else every op's error */
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

/* Mark the member down with err unless it already is (lock held).
 * Returns whether this call did it: that caller logs why. */
static bool
mark_down_locked (struct nbd_member *nm, int err)
{
  if (nm->fail_err)
    return false;
  nm->fail_err = err;
  return true;
}

static void
log_down (struct nbd_member *nm, int err, const char *why)
{
  raid_log (RAID_LOG_ERROR, "%s: %s: %s", nm->m.spec, why, raid_strerror (err));
}

/* Hand c back (after its last wire command: nothing holds its bounce). */
static void
cmd_done (struct mio_cmd *c, int err)
{
  free (c->bounce);
  c->bounce = NULL;
  mio_cmd_done (c, err);
}

/* k wire commands of c ended with err.  The last one completes c.
 * libnbd ends a command with ENOTCONN only when it aborts it because the
 * handle died (no NBD server can send that errno), so that error marks the
 * member down first: the op then completes on a member already down. */
static void
cmd_finish (struct nbd_member *nm, struct mio_cmd *c, unsigned k, int err)
{
  bool done, lost = false;

  pthread_mutex_lock (&nm->lock);
  if (err == ENOTCONN)
    lost = mark_down_locked (nm, ENOTCONN);
  if (err && nm->fail_err)
    err = nm->fail_err;
  if (err && c->err == 0)
    c->err = err;
  c->outstanding -= k;
  done = c->outstanding == 0;
  if (done)
    inflight_unlink (nm, c);
  if (done && nm->head == NULL && nm->reconnecting)
    pthread_cond_broadcast (&nm->cond);       /* reconnect_retire waits */
  err = c->err;
  pthread_mutex_unlock (&nm->lock);
  if (lost)
    log_down (nm, ENOTCONN, "connection lost");
  if (done)
    cmd_done (c, err);
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

/* Queue one wire command on cn; 0 or errno (then libnbd will not call
 * back). */
static int
wire_issue (struct nbd_member *nm, const struct nbd_conn *cn,
            struct mio_cmd *c, enum wire w,
            void *buf, uint64_t n, uint64_t off, uint32_t flags)
{
  nbd_completion_callback cb = { .callback = nbd_cmd_cb, .user_data = c };
  int64_t cookie = -1;
  int e;

  switch (w) {
  case WIRE_READ:  cookie = nbd_aio_pread (cn->h, buf, n, off, cb, 0); break;
  case WIRE_WRITE: cookie = nbd_aio_pwrite (cn->h, buf, n, off, cb, flags); break;
  case WIRE_ZERO:  cookie = nbd_aio_zero (cn->h, n, off, cb, flags); break;
  case WIRE_FLUSH: cookie = nbd_aio_flush (cn->h, cb, 0); break;
  }
  if (cookie != -1)
    return 0;
  e = nbd_get_errno ();
  raid_log (RAID_LOG_DEBUG, "%s: %s", nm->m.spec, nbd_get_error ());
  if (nbd_aio_is_dead (cn->h) || nbd_aio_is_closed (cn->h)) {
    bool first;                     /* refused for want of a connection */

    pthread_mutex_lock (&nm->lock);
    first = mark_down_locked (nm, ENOTCONN);
    pthread_mutex_unlock (&nm->lock);
    if (first)
      log_down (nm, ENOTCONN, "connection lost");
    return ENOTCONN;
  }
  return e ? e : EIO;
}

/* How a walk goes: over which connection, and whether it only counts. */
struct walk {
  struct nbd_member *nm;
  const struct nbd_conn *cn;
  struct mio_cmd *c;
  bool issue;
};

/* Walk the wire commands covering [off, off + len) in pieces of at most
 * step bytes, counting them in *k and issuing them when `issue`.  The
 * buffer advances with the offset unless it is the fixed zero buffer. */
static bool
walk_range (const struct walk *wk, enum wire w, char *buf, bool buf_moves,
            uint64_t off, uint64_t len, uint64_t step, uint32_t flags,
            unsigned *k, int *err)
{
  while (len > 0) {
    uint64_t n = raid_min_u64 (len, step);

    if (wk->issue
        && (*err = wire_issue (wk->nm, wk->cn, wk->c, w, buf, n, off, flags)) != 0)
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
 * failed (the walk stops there).  Both walks see the same immutable mio
 * and the same connection, so the count is exactly the number of commands
 * issued on success. */
static unsigned
nbd_walk (const struct walk *wk, int *err)
{
  const struct nbd_conn *cn = wk->cn;
  const struct mio_cmd *c = wk->c;
  const struct mio *io = c->io;
  uint32_t fua = (io->flags & MIO_FUA) && cn->can_fua ? LIBNBD_CMD_FLAG_FUA : 0;
  uint64_t off = io->off;
  unsigned k = 0;
  char *z;

  *err = 0;
  switch (c->op) {
  case MIO_FLUSH:
    if (cn->can_flush
        && !(wk->issue
             && (*err = wire_issue (wk->nm, cn, wk->c, WIRE_FLUSH, NULL, 0, 0, 0))))
      k = 1;
    break;
  case MIO_WRITE:
    if (c->bounce) {
      walk_range (wk, WIRE_WRITE, c->bounce, true, off, io->len, cn->max_rw, fua,
                  &k, err);
      break;
    }
    /* fall through */
  case MIO_READ:
    for (int i = 0; i < io->iovcnt; i++) {
      if (!walk_range (wk, c->op == MIO_READ ? WIRE_READ : WIRE_WRITE,
                       io->iov[i].iov_base, true, off, io->iov[i].iov_len,
                       cn->max_rw, fua, &k, err))
        break;
      off += io->iov[i].iov_len;
    }
    break;
  case MIO_ZERO:
    if (cn->can_zero)
      walk_range (wk, WIRE_ZERO, NULL, false, off, io->len, NBD_MAX_ZERO, fua,
                  &k, err);
    else if ((z = (char *) member_zeroes ()) == NULL)
      *err = ENOMEM;
    else
      walk_range (wk, WIRE_WRITE, z, false, off, io->len,
                  raid_min_u64 (cn->max_rw, MEMBER_ZERO_BUF_SIZE), fua, &k, err);
    break;
  }
  return k;
}

/* A vectored write's bytes in one buffer, or NULL (not vectored, or no
 * memory: then each element goes out as its own command). */
static void *
gather (const struct mio_cmd *c)
{
  const struct mio *io = c->io;
  uint64_t total = 0;
  char *b, *p;

  if (c->op != MIO_WRITE || io->iovcnt < 2)
    return NULL;
  for (int i = 0; i < io->iovcnt; i++)
    total += io->iov[i].iov_len;
  if (total != io->len || !(b = p = malloc (total)))
    return NULL;
  for (int i = 0; i < io->iovcnt; i++) {
    memcpy (p, io->iov[i].iov_base, io->iov[i].iov_len);
    p += io->iov[i].iov_len;
  }
  return b;
}

static void
nbd_submit (struct member *m, struct mio_cmd *c)
{
  struct nbd_member *nm = nbd_member (m);
  uint64_t timeout = member_io_timeout_ns ();
  struct nbd_conn cn = { .h = NULL };
  struct walk wk = { .nm = nm, .cn = &cn, .c = c };
  unsigned n = 0, issued;
  int err;

  c->bounce = gather (c);
  pthread_mutex_lock (&nm->lock);
  err = nm->fail_err;
  if (err == 0) {
    assert (nm->conn.h != NULL);  /* up: a connection is installed */
    cn = nm->conn;                /* ours while c is in flight: see the top */
    if (c->op != MIO_FLUSH)
      c->need_flush = (c->io->flags & MIO_FUA) && !cn.can_fua && cn.can_flush
                      && (c->op == MIO_WRITE || c->op == MIO_ZERO);
    n = nbd_walk (&wk, &err);
  }
  if (err == 0 && n > 0) {
    c->outstanding = n + 1;       /* + the submitter's hold, released below */
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
    cmd_done (c, err);
    return;
  }

  wk.issue = true;
  issued = nbd_walk (&wk, &err);
  if (issued < n)
    cmd_finish (nm, c, n - issued, err ? err : EIO);
  if (issued < n                  /* refused: let the dispatcher look too */
      || nbd_aio_get_direction (cn.h) & LIBNBD_AIO_DIRECTION_WRITE)
    nbd_poke (nm);                /* unsent bytes: the dispatcher needs POLLOUT */
  cmd_finish (nm, c, 1, 0);       /* the hold: c may complete now */
}

/* ---- the dispatcher ---- */

/* Mark the member down (first cause wins) and cut the connection, so
 * libnbd ends every command it still holds at the next notify. */
static void
nbd_fail (struct nbd_member *nm, const struct nbd_conn *cn, int err,
          const char *why)
{
  bool first;

  pthread_mutex_lock (&nm->lock);
  first = mark_down_locked (nm, err);
  pthread_mutex_unlock (&nm->lock);
  if (first)
    log_down (nm, err, why);
  raid_sock_abort (cn->sock);   /* unsent requests must never land later */
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

/* poll events for a libnbd direction. */
static short
dir_events (unsigned dir)
{
  return ((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0)
         | ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0);
}

/* Let libnbd act on what poll saw on h's socket, re-reading the direction
 * first (a submitter may have changed it meanwhile).  Returns the notify
 * call's result (0 when there was nothing to do). */
static int
handle_notify (struct nbd_handle *h, short revents)
{
  unsigned dir = nbd_aio_get_direction (h);

  if ((dir & LIBNBD_AIO_DIRECTION_READ) && (revents & (POLLIN | POLLHUP | POLLERR)))
    return nbd_aio_notify_read (h);
  if ((dir & LIBNBD_AIO_DIRECTION_WRITE) && (revents & (POLLOUT | POLLHUP | POLLERR)))
    return nbd_aio_notify_write (h);
  return 0;
}

/* The handle is gone: every command has been ended by libnbd.  Sleep until
 * the joiner (member_close, a fork, a reconnect) says stop (woken by its
 * poke). */
static void
wait_for_stop (struct nbd_member *nm)
{
  struct pollfd pfd = { .fd = nm->wakefd, .events = POLLIN };

  for (;;) {
    bool stop;

    pthread_mutex_lock (&nm->lock);
    stop = nm->stop;
    pthread_mutex_unlock (&nm->lock);
    if (stop || (poll (&pfd, 1, -1) == -1 && errno != EINTR))
      return;
    drain_wakefd (nm);
  }
}

/* A notify can fail harmlessly when the state moved on between reading
 * the direction and notifying, so only a handle that actually died fails
 * the member. */
static void
nbd_notify (struct nbd_member *nm, const struct nbd_conn *cn, short revents)
{
  char msg[256];
  int e;

  if (handle_notify (cn->h, revents) == 0)
    return;
  e = nbd_get_errno ();
  snprintf (msg, sizeof msg, "%s", nbd_get_error ());   /* valid until the */
  raid_log (RAID_LOG_DEBUG, "%s: %s", nm->m.spec, msg);  /* next nbd_ call */
  if (nbd_aio_is_dead (cn->h) || nbd_aio_is_closed (cn->h))
    nbd_fail (nm, cn, e ? e : ENOTCONN, "connection lost");
}

/* Time out the oldest op when its deadline has passed. */
static void
nbd_check_deadline (struct nbd_member *nm, const struct nbd_conn *cn)
{
  bool expired;

  pthread_mutex_lock (&nm->lock);
  expired = nm->fail_err == 0 && nm->head
            && nm->head->deadline_ns <= raid_now_mono_ns ();
  pthread_mutex_unlock (&nm->lock);
  if (expired)
    nbd_fail (nm, cn, ETIMEDOUT, "I/O timed out, shutting the connection down");
}

static void *
nbd_dispatch (void *arg)
{
  struct nbd_member *nm = arg;
  struct nbd_conn cn;

  pthread_mutex_lock (&nm->lock);
  cn = nm->conn;                   /* ours until we exit: see the top */
  pthread_mutex_unlock (&nm->lock);

  for (;;) {
    struct pollfd pfd[2];
    uint64_t deadline, oldest;
    unsigned dir;
    bool stop, failed;

    pthread_mutex_lock (&nm->lock);
    stop = nm->stop;
    failed = nm->fail_err != 0;
    oldest = nm->head ? nm->head->deadline_ns : 0;   /* a deadline is never 0 */
    pthread_mutex_unlock (&nm->lock);
    deadline = failed ? UINT64_MAX
      : oldest ? oldest
      : raid_now_mono_ns () + IDLE_LOOK_NS;          /* the idle look (see the top) */
    if (stop)
      break;
    if (nbd_aio_is_dead (cn.h) || nbd_aio_is_closed (cn.h)) {
      nbd_fail (nm, &cn, ENOTCONN, "connection lost");
      wait_for_stop (nm);
      break;
    }

    dir = nbd_aio_get_direction (cn.h);
    pfd[0].fd = dir ? cn.sock : -1;
    pfd[0].events = dir_events (dir);
    pfd[1].fd = nm->wakefd;
    pfd[1].events = POLLIN;
    pfd[0].revents = pfd[1].revents = 0;
    if (poll (pfd, 2, ms_until (deadline)) == -1) {
      if (errno == EINTR)           /* (signals are blocked here) */
        continue;
      /* Cannot wait any more: end the connection and let the notify below
       * meet the end of the stream, which fails every command. */
      nbd_fail (nm, &cn, errno, "poll");
      pfd[0].revents = POLLHUP;
      pfd[1].revents = 0;
    }
    if (pfd[1].revents)
      drain_wakefd (nm);
    if (pfd[0].revents & POLLNVAL)   /* impossible: sock outlives us */
      nbd_fail (nm, &cn, EBADF, "poll");
    else if (pfd[0].revents)
      nbd_notify (nm, &cn, pfd[0].revents);
    nbd_check_deadline (nm, &cn);
  }
  return NULL;
}

/* Start the dispatcher of the installed connection unless it runs (lock
 * held).  None for a member without a connection (it is down: its ops
 * fail without one), nor while a fork is prepared (the parent handler
 * starts it).  0 or errno. */
static int
nbd_start_locked (struct nbd_member *nm)
{
  unsigned gen = atomic_load (&member_fork_gen);
  sigset_t all, old;
  int r;

  if (atomic_load (&nm->started_gen) == gen || nm->conn.h == NULL || nm->forking)
    return 0;
  sigfillset (&all);
  pthread_sigmask (SIG_BLOCK, &all, &old);   /* signals go elsewhere */
  r = pthread_create (&nm->thread, NULL, nbd_dispatch, nm);
  pthread_sigmask (SIG_SETMASK, &old, NULL);
  if (r == 0)
    atomic_store (&nm->started_gen, gen);
  else
    raid_log (RAID_LOG_ERROR, "%s: pthread_create: %s", nm->m.spec,
              raid_strerror (r));
  return r;
}

static int
nbd_start (struct member *m)
{
  struct nbd_member *nm = nbd_member (m);
  int r;

  if (atomic_load (&nm->started_gen) == atomic_load (&member_fork_gen))
    return 0;
  pthread_mutex_lock (&nm->lock);
  r = nbd_start_locked (nm);
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

/* Make the dispatcher exit and join it.  Its joiners (close, the fork
 * handler, a reconnect) never run at the same time for one member: close
 * and the fork handler first wait for any reconnect to end
 * (reconnect_cancel_locked), and a reconnect does not begin while either
 * is under way. */
static void
dispatcher_join (struct nbd_member *nm)
{
  pthread_mutex_lock (&nm->lock);
  nm->stop = true;
  pthread_mutex_unlock (&nm->lock);
  nbd_poke (nm);
  pthread_join (nm->thread, NULL);
  pthread_mutex_lock (&nm->lock);
  nm->stop = false;
  pthread_mutex_unlock (&nm->lock);
}

/* Cut a reconnect under way short and wait until it has returned (lock
 * held; the caller has set closing or forking, which the reconnect checks
 * at each step).  The doorbell wakes its handshake, the broadcast its wait
 * for the old connection's ops; it broadcasts when it clears reconnecting. */
static void
reconnect_cancel_locked (struct nbd_member *nm)
{
  if (!nm->reconnecting)
    return;
  nbd_poke (nm);
  pthread_cond_broadcast (&nm->cond);
  while (nm->reconnecting)
    pthread_cond_wait (&nm->cond, &nm->lock);
}

static void
nbd_sync_init (struct nbd_member *nm)
{
  pthread_condattr_t ca;

  pthread_mutex_init (&nm->lock, NULL);
  pthread_condattr_init (&ca);
  pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
  pthread_cond_init (&nm->cond, &ca);
  pthread_condattr_destroy (&ca);
}

/* Before fork: no dispatcher and no reconnect may run across it, and no
 * other thread may hold a member lock at the fork (the child would inherit
 * it held).  So: cut reconnects short, park the dispatchers, then take
 * every member lock and the registry lock and keep them until after the
 * fork; no member appears or vanishes meanwhile, and none reconnects
 * (forking refuses that with EBUSY in the window before its lock is
 * taken). */
void
member_nbd_atfork_prepare (void)
{
  pthread_mutex_lock (&registry_lock);
  for (struct nbd_member *nm = registry; nm; nm = nm->reg_next) {
    bool running;

    pthread_mutex_lock (&nm->lock);
    nm->forking = true;
    reconnect_cancel_locked (nm);
    running = dispatcher_running (nm);
    pthread_mutex_unlock (&nm->lock);
    if (running) {
      dispatcher_join (nm);
      atomic_store (&nm->started_gen, 0);
    }
  }
  for (struct nbd_member *nm = registry; nm; nm = nm->reg_next)
    pthread_mutex_lock (&nm->lock);
}

/* After fork, in the parent: ops in flight need their dispatcher back. */
void
member_nbd_atfork_parent (void)
{
  for (struct nbd_member *nm = registry; nm; nm = nm->reg_next) {
    nm->forking = false;
    if (nm->head != NULL)
      nbd_start_locked (nm);
    pthread_mutex_unlock (&nm->lock);
  }
  pthread_mutex_unlock (&registry_lock);
}

/* After fork, in the child: only this thread exists; the locks it holds
 * are made new.  Dispatchers start on first use. */
void
member_nbd_atfork_child (void)
{
  pthread_mutex_init (&registry_lock, NULL);
  for (struct nbd_member *nm = registry; nm; nm = nm->reg_next) {
    nm->forking = false;
    nbd_sync_init (nm);
  }
}

/* ---- connections ---- */

/* What a connect is for: its messages read "<spec>: <prefix><step>:
 * <cause>". */
struct conn_req {
  const char *spec;
  const char *prefix;           /* "" (open) or "reconnect: " */
  bool readonly;
  struct nbd_member *nm;        /* reconnect: whose close or fork may cut
                                   the connect short; NULL at open */
  uint64_t connect_ns;          /* bound of connect + handshake; 0: the
                                   I/O timeout */
};

static int
conn_err (const struct conn_req *rq, const char *step, int errnum,
          char *err, size_t errlen)
{
  char what[128];

  snprintf (what, sizeof what, "%s%s", rq->prefix, step);
  member_err (err, errlen, rq->spec, what, errnum);
  return errnum;
}

/* The same, from the failed libnbd call just made. */
static int
conn_nbd_err (const struct conn_req *rq, const char *step,
              char *err, size_t errlen)
{
  int e = nbd_get_errno ();

  if (e)
    return conn_err (rq, step, e, err, errlen);
  if (err && errlen)
    snprintf (err, errlen, "%s: %s%s: %s", rq->spec, rq->prefix, step,
              nbd_get_error ());
  return EIO;
}

/* Did member_close or a fork ask the reconnect of nm to give up?  Called
 * when the doorbell rang: empty it, then read the flags (they are set
 * before the bell rings, so a ring emptied here is never lost). */
static bool
reconnect_cancelled (struct nbd_member *nm)
{
  bool cancel;

  drain_wakefd (nm);
  pthread_mutex_lock (&nm->lock);
  cancel = nm->closing || nm->forking;
  pthread_mutex_unlock (&nm->lock);
  return cancel;
}

/* nbd_aio_connect_uri and the handshake, bounded like any member I/O: a
 * server that accepts but never completes the handshake must not hang the
 * caller.  A reconnect also listens to the member's doorbell: no
 * dispatcher runs then (see the top), so only a close or a fork rings it. */
static int
conn_handshake (struct nbd_handle *h, const struct conn_req *rq,
                char *err, size_t errlen)
{
  uint64_t t = rq->connect_ns ? rq->connect_ns : member_io_timeout_ns ();
  uint64_t deadline = t ? raid_now_mono_ns () + t : UINT64_MAX;

  if (nbd_aio_connect_uri (h, rq->spec) == -1)
    return conn_nbd_err (rq, "connect", err, errlen);
  while (nbd_aio_is_connecting (h) == 1) {
    struct pollfd pfd[2] = {
      { .fd = nbd_aio_get_fd (h), .events = dir_events (nbd_aio_get_direction (h)) },
      { .fd = rq->nm ? rq->nm->wakefd : -1, .events = POLLIN },
    };
    int r = poll (pfd, 2, ms_until (deadline));

    if (r == -1 && errno != EINTR)
      return conn_err (rq, "connect", errno, err, errlen);
    if (pfd[1].revents && reconnect_cancelled (rq->nm))
      return conn_err (rq, "connect", ECANCELED, err, errlen);
    if (pfd[0].revents & POLLNVAL)   /* impossible: libnbd owns the fd */
      return conn_err (rq, "connect", EBADF, err, errlen);
    if (r == 0 && raid_now_mono_ns () >= deadline)
      return conn_err (rq, "connect", ETIMEDOUT, err, errlen);
    if (pfd[0].revents && handle_notify (h, pfd[0].revents) == -1)
      return conn_nbd_err (rq, "connect", err, errlen);
  }
  if (nbd_aio_is_ready (h) != 1)
    return conn_err (rq, "connect", ECONNRESET, err, errlen);
  return 0;
}

/* End a connection (nothing may be in flight on it).  No NBD_CMD_DISC:
 * see the top.  Safe on one that was never made. */
static void
conn_close (struct nbd_conn *cn)
{
  if (cn->h)
    nbd_close (cn->h);
  if (cn->sock >= 0)
    close (cn->sock);
  *cn = (struct nbd_conn) { .h = NULL, .sock = -1 };
}

/* Connect and learn what the export can do: the one place that configures
 * a handle (member_open and member_reconnect both come here).  0, or an
 * errno with a message and *cn left without a connection. */
static int
conn_open (struct nbd_conn *cn, const struct conn_req *rq,
           char *err, size_t errlen)
{
  int64_t sz, max;
  int r = 0;

  *cn = (struct nbd_conn) { .h = nbd_create (), .sock = -1 };
  if (cn->h == NULL)
    return conn_nbd_err (rq, "nbd_create", err, errlen);
  nbd_set_pread_initialize (cn->h, false);   /* failed reads are errors */
  nbd_set_full_info (cn->h, true);           /* ask for the description */
  if ((r = conn_handshake (cn->h, rq, err, errlen)) != 0)
    goto fail;
  if ((sz = nbd_get_size (cn->h)) == -1) {
    r = conn_nbd_err (rq, "size", err, errlen);
    goto fail;
  }
  if (!rq->readonly && nbd_is_read_only (cn->h) == 1) {
    r = conn_err (rq, "export is read-only", EROFS, err, errlen);
    goto fail;
  }
  max = nbd_get_block_size (cn->h, LIBNBD_SIZE_MAXIMUM);
  cn->size = sz;
  cn->max_rw = max > 0 ? raid_min_u64 (max, NBD_LIBNBD_MAX_RW) : NBD_DEFAULT_MAX_RW;
  cn->can_flush = nbd_can_flush (cn->h) == 1;
  cn->can_zero = nbd_can_zero (cn->h) == 1;
  cn->can_fua = nbd_can_fua (cn->h) == 1;
  cn->sock = fcntl (nbd_aio_get_fd (cn->h), F_DUPFD_CLOEXEC, 0);
  if (cn->sock == -1) {
    r = conn_err (rq, "dup socket", errno, err, errlen);
    goto fail;
  }
  return 0;

 fail:
  conn_close (cn);
  return r;
}

/* ---- down and reconnect ---- */

static bool
nbd_is_down (const struct member *m)
{
  struct nbd_member *nm = nbd_member ((struct member *) m);  /* the lock */
  bool down;

  pthread_mutex_lock (&nm->lock);
  down = nm->fail_err != 0;
  pthread_mutex_unlock (&nm->lock);
  return down;
}

/* Retire the old connection of a down member: wait until every op
 * submitted on it has completed (woken by cmd_finish of the last one, or
 * by close or fork), join its dispatcher, close its handle.  Then the
 * member has no connection.  0 or errno (with a message). */
static int
reconnect_retire (struct nbd_member *nm, char *err, size_t errlen)
{
  uint64_t t = member_io_timeout_ns ();
  uint64_t deadline = t ? raid_now_mono_ns () + t : UINT64_MAX;
  struct nbd_conn old;
  int r = 0;

  pthread_mutex_lock (&nm->lock);
  while (nm->head && !nm->closing && !nm->forking && r == 0) {
    struct timespec ts = {
      .tv_sec = deadline / 1000000000, .tv_nsec = deadline % 1000000000,
    };

    if (deadline == UINT64_MAX)
      pthread_cond_wait (&nm->cond, &nm->lock);
    else
      r = pthread_cond_timedwait (&nm->cond, &nm->lock, &ts);
  }
  if (nm->closing || nm->forking || nm->head) {
    r = nm->head && !nm->closing && !nm->forking ? ETIMEDOUT : ECANCELED;
    member_err (err, errlen, nm->m.spec,
                r == ETIMEDOUT ? "reconnect: ops of the lost connection still in flight"
                               : "reconnect", r);
    pthread_mutex_unlock (&nm->lock);
    return r;
  }
  /* started_gen keeps saying "running" until the connection is detached
   * below, so nobody starts another dispatcher on it meanwhile. */
  if (dispatcher_running (nm)) {
    pthread_mutex_unlock (&nm->lock);
    dispatcher_join (nm);
    pthread_mutex_lock (&nm->lock);
  }
  atomic_store (&nm->started_gen, 0);
  old = nm->conn;
  nm->conn = (struct nbd_conn) { .h = NULL, .sock = -1 };
  pthread_mutex_unlock (&nm->lock);
  conn_close (&old);
  return 0;
}

/* The last step of a reconnect: install cn (when r is 0 and nobody asked
 * us to give up) with its dispatcher running, and leave.  Clearing
 * reconnecting is the last touch of nm: a waiting member_close may free it
 * from then on.  Returns r, or the errno that stopped the install. */
static int
reconnect_finish (struct nbd_member *nm, struct nbd_conn *cn, int r,
                  char *err, size_t errlen)
{
  pthread_mutex_lock (&nm->lock);
  if (r == 0 && (nm->closing || nm->forking)) {
    r = ECANCELED;
    member_err (err, errlen, nm->m.spec, "reconnect", r);
  }
  if (r == 0) {
    nm->conn = *cn;
    r = nbd_start_locked (nm);
    if (r == 0) {
      *cn = (struct nbd_conn) { .h = NULL, .sock = -1 };   /* installed */
      nm->fail_err = 0;
      raid_log (RAID_LOG_INFO, "%s: reconnected", nm->m.spec);
    }
    else {
      nm->conn = (struct nbd_conn) { .h = NULL, .sock = -1 };
      member_err (err, errlen, nm->m.spec, "reconnect: start dispatcher", r);
    }
  }
  nm->reconnecting = false;
  pthread_cond_broadcast (&nm->cond);
  pthread_mutex_unlock (&nm->lock);
  conn_close (cn);                   /* not installed: still ours */
  return r;
}

static int
nbd_reconnect (struct member *m, uint64_t connect_ns, char *err, size_t errlen)
{
  struct nbd_member *nm = nbd_member (m);
  struct conn_req rq = {
    .spec = m->spec, .prefix = "reconnect: ", .readonly = m->readonly, .nm = nm,
    .connect_ns = connect_ns,
  };
  struct nbd_conn cn = { .h = NULL, .sock = -1 };
  const char *busy;
  bool up;
  int r = 0;

  pthread_mutex_lock (&nm->lock);
  up = nm->fail_err == 0;
  busy = nm->closing ? "reconnect: member is being closed"  /* caller's bug */
         : nm->reconnecting ? "reconnect: another reconnect is under way"
         : nm->forking ? "reconnect: a fork is under way" : NULL;
  if (!up && busy) {
    r = nm->closing ? ECANCELED : EBUSY;
    member_err (err, errlen, m->spec, busy, r);
  }
  else if (!up)
    nm->reconnecting = true;
  pthread_mutex_unlock (&nm->lock);
  if (up || r)
    return r;

  r = reconnect_retire (nm, err, errlen);
  if (r == 0)
    r = conn_open (&cn, &rq, err, errlen);
  if (r == 0 && cn.size < m->size) {
    r = EIO;
    if (err && errlen)
      snprintf (err, errlen,
                "%s: reconnect: export is %" PRIu64 " bytes, smaller than the "
                "member (%" PRIu64 " bytes): %s",
                m->spec, cn.size, m->size, raid_strerror (r));
  }
  return reconnect_finish (nm, &cn, r, err, errlen);
}

/* ---- open / close ---- */

/* Close cuts a reconnect under way short first, so it is the only thread
 * left that touches nm. */
static void
nbd_close_member (struct member *m)
{
  struct nbd_member *nm = nbd_member (m);
  struct nbd_member **pp;

  pthread_mutex_lock (&nm->lock);
  nm->closing = true;
  reconnect_cancel_locked (nm);
  pthread_mutex_unlock (&nm->lock);

  pthread_mutex_lock (&registry_lock);
  for (pp = &registry; *pp != nm; pp = &(*pp)->reg_next)
    ;
  *pp = nm->reg_next;
  pthread_mutex_unlock (&registry_lock);

  if (dispatcher_running (nm))
    dispatcher_join (nm);
  conn_close (&nm->conn);
  close (nm->wakefd);
  pthread_cond_destroy (&nm->cond);
  pthread_mutex_destroy (&nm->lock);
  member_fini (m);
  free (nm);
}

static const struct member_backend nbd_backend = {
  .kind = MEMBER_NBD,
  .start = nbd_start,
  .submit = nbd_submit,
  .close = nbd_close_member,
  .is_down = nbd_is_down,
  .reconnect = nbd_reconnect,
};

struct member *
member_nbd_open (const char *spec, bool readonly, char *err, size_t errlen)
{
  struct conn_req rq = { .spec = spec, .prefix = "", .readonly = readonly };
  struct nbd_member *nm = calloc (1, sizeof *nm);
  int r;

  if (nm == NULL) {
    member_err (err, errlen, spec, "open", ENOMEM);
    errno = ENOMEM;
    return NULL;
  }
  nm->wakefd = -1;
  r = conn_open (&nm->conn, &rq, err, errlen);
  if (r == 0 && (nm->wakefd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK)) == -1) {
    r = errno;
    member_err (err, errlen, spec, "eventfd", r);
  }
  if (r == 0 && member_init (&nm->m, &nbd_backend, spec, nm->conn.size,
                             nm->conn.can_fua, readonly)) {
    r = ENOMEM;
    member_err (err, errlen, spec, "open", r);
  }
  if (r == 0)
    nm->m.description = nbd_get_export_description (nm->conn.h);   /* NULL: none */
  if (r) {
    conn_close (&nm->conn);
    if (nm->wakefd >= 0)
      close (nm->wakefd);
    free (nm);
    errno = r;
    return NULL;
  }
  nbd_sync_init (nm);
  pthread_mutex_lock (&registry_lock);
  nm->reg_next = registry;
  registry = nm;
  pthread_mutex_unlock (&registry_lock);
  return &nm->m;
}
