/* nbdkit-raid: parallel member I/O and what every backend shares
 * (contract: member.h; backend interface: member-io.h).
 *
 * Theory
 * ------
 * mio_run turns one array of member operations into one *batch*, which
 * lives on the caller's stack.  The batch counts in `pending` everything
 * that may still touch it: every asynchronous (NBD) op until its backend
 * calls mio_cmd_done, every file op until it has been performed, and every
 * pool thread attached to the batch.  The caller sleeps on the batch's
 * condition variable until pending is 0, and whoever drops it to 0 (the
 * last completion, or the last pool thread leaving) signals.  From then on
 * no other thread holds a pointer into the batch, so returning (popping the
 * stack frame that holds it) is safe.
 *
 * File ops that cannot wait on the device (reads the page cache serves at
 * once, found with RWF_NOWAIT, and plain buffered writes, which only copy
 * into the page cache) are done by the calling thread first: waking a pool
 * thread costs more than such an op, and parallelism buys nothing for a
 * memory copy.  The others (uncached reads, FUA writes, flushes, zeroing)
 * are marked MIO_PENDING and spread over threads.  They are not handed out
 * one by one: the batch is put on the pool's queue with `tickets`, how many
 * helpers it wants (one per pending file op beyond the first, at most the
 * pool size).  A pool thread takes a ticket, attaches (pending++), and then
 * claims ops through the batch's atomic cursor exactly as the calling
 * thread does, so each op is performed by exactly one thread.  This costs
 * no allocation per op, and it cannot stall: the calling thread claims ops
 * too, so a batch completes even when every pool thread is busy elsewhere
 * or none could be started (or they vanished in a fork).  A thread can
 * attach only while the batch is queued, and the caller dequeues it (under
 * the pool lock) before it waits; so once pending has reached 0 after the
 * dequeue, nothing can reach the batch.
 *
 * NBD ops are submitted first, on their member's handle, from the calling
 * thread (libnbd serializes calls on the handle lock), so the network works
 * while the local ops run; the member's dispatcher thread runs the poll
 * loop, completes them and bounds how long they take (member-nbd.c).
 * Custom ops then run in the calling thread in array order.
 *
 * A second phase runs only when an NBD member lacks native FUA: its writes
 * went out without the flag, and once the whole batch is done that member
 * gets a flush whose result becomes the op's result.
 */

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "member-io.h"
#include "util.h"

/* ---- process-wide state ---- */

_Atomic unsigned member_fork_gen = 1;
static _Atomic uint64_t io_timeout_ns = UINT64_C(30) * 1000000000;

void
member_set_io_timeout (unsigned seconds)
{
  atomic_store (&io_timeout_ns, (uint64_t) seconds * 1000000000);
}

uint64_t
member_io_timeout_ns (void)
{
  return atomic_load (&io_timeout_ns);
}

static const void *zeroes;
static pthread_once_t zeroes_once = PTHREAD_ONCE_INIT;

static void
zeroes_init (void)
{
  void *p = mmap (NULL, MEMBER_ZERO_BUF_SIZE, PROT_READ,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

  zeroes = p != MAP_FAILED ? p : calloc (1, MEMBER_ZERO_BUF_SIZE);
}

const void *
member_zeroes (void)
{
  pthread_once (&zeroes_once, zeroes_init);
  return zeroes;
}

/* ---- the shared pool (state; the threads are further down) ---- */

struct mio_batch {
  pthread_mutex_t lock;
  pthread_cond_t idle;         /* pending reached 0: signalled by whoever
                                  dropped it there */
  unsigned pending;            /* ops and helpers still running (lock) */
  struct mio *ios;
  size_t n;
  _Atomic size_t cursor;       /* next index to claim */
  /* guarded by pool.lock */
  struct mio_batch *qnext;
  unsigned tickets;            /* helpers still wanted */
  bool queued;
};

static struct {
  pthread_mutex_t lock;
  pthread_cond_t work;         /* a batch was queued, or stop: signalled by
                                  pool_enqueue and mio_shutdown */
  struct mio_batch *head, *tail;
  pthread_t thread[MIO_POOL_THREADS];
  unsigned nthreads;
  bool started, stopping;
} pool = {
  .lock = PTHREAD_MUTEX_INITIALIZER,
  .work = PTHREAD_COND_INITIALIZER,
};

/* In the child of a fork only the forking thread exists: forget the pool
 * (its threads are gone) and let the next batch start a new one.  Called
 * by member.c's fork handler. */
void
mio_atfork_child (void)
{
  atomic_fetch_add (&member_fork_gen, 1);
  pthread_mutex_init (&pool.lock, NULL);
  pthread_cond_init (&pool.work, NULL);
  pool.head = pool.tail = NULL;
  pool.nthreads = 0;
  pool.started = pool.stopping = false;
}

/* ---- common member plumbing ---- */

void
member_err (char *err, size_t errlen, const char *spec, const char *what,
            int errnum)
{
  if (err && errlen)
    snprintf (err, errlen, "%s: %s: %s", spec, what, raid_strerror (errnum));
}

int
member_init (struct member *m, const struct member_backend *be,
             const char *spec, uint64_t size, bool can_fua, bool readonly)
{
  m->be = be;
  m->spec = strdup (spec);
  m->size = size;
  m->can_fua = can_fua;
  m->readonly = readonly;
  return m->spec ? 0 : ENOMEM;
}

void
member_fini (struct member *m)
{
  free (m->spec);
  free (m->description);
  m->spec = m->description = NULL;
}

const char *
member_description (const struct member *m)
{
  return m->description;
}

void
member_close (struct member *m)
{
  if (m)
    m->be->close (m);
}

int
member_start (struct member *m)
{
  return m->be->start ? m->be->start (m) : 0;
}

const char *
member_spec (const struct member *m)
{
  return m->spec;
}

uint64_t
member_size (const struct member *m)
{
  return m->size;
}

uint64_t
member_refresh_size (struct member *m)
{
  uint64_t size;

  if (m->be->size_now && m->be->size_now (m, &size) == 0 && size > m->size)
    m->size = size;
  return m->size;
}

bool
member_can_fua (const struct member *m)
{
  return m->can_fua;
}

bool
member_is_nbd (const struct member *m)
{
  return m->be->kind == MEMBER_NBD;
}

bool
member_is_down (const struct member *m)
{
  return m->be->is_down ? m->be->is_down (m) : false;
}

int
member_reconnect (struct member *m, char *err, size_t errlen)
{
  return member_reconnect_within (m, 0, err, errlen);
}

int
member_reconnect_within (struct member *m, uint64_t connect_ns, char *err, size_t errlen)
{
  if (m->be->reconnect == NULL) {
    member_err (err, errlen, m->spec, "reconnect", ENOTSUP);
    return ENOTSUP;
  }
  return m->be->reconnect (m, connect_ns, err, errlen);
}

/* ---- validation and routing ---- */

/* 0 when io is well formed and within the member, else its errno. */
static int
mio_check (const struct mio *io)
{
  const struct member *m = io->m;
  uint64_t total = 0;

  if (m == NULL)
    return EINVAL;
  switch (io->op) {
  case MIO_FLUSH:
    return 0;
  case MIO_READ:
  case MIO_WRITE:
    if (io->iov == NULL || io->iovcnt < 1 || io->iovcnt > IOV_MAX)
      return EINVAL;
    for (int i = 0; i < io->iovcnt; i++) {
      if (io->iov[i].iov_len > UINT64_MAX - total)
        return EINVAL;
      total += io->iov[i].iov_len;
    }
    if (total != io->len)
      return EINVAL;
    break;
  case MIO_ZERO:
    break;
  default:
    return EINVAL;
  }
  if (io->op != MIO_READ && m->readonly)
    return EROFS;
  if (io->off > m->size || io->len > m->size - io->off)
    return EIO;
  return 0;
}

enum mio_route {
  ROUTE_NONE,       /* already complete (invalid, or nothing to do) */
  ROUTE_POOL,       /* file: any thread of the batch */
  ROUTE_INLINE,     /* custom: the calling thread, in order */
  ROUTE_ASYNC,      /* NBD: submit, completion via mio_cmd_done */
};

/* Meaningful only for an op already checked (err holds mio_check's). */
static enum mio_route
mio_route (const struct mio *io)
{
  if (io->m == NULL || io->err != 0)
    return ROUTE_NONE;
  if (io->op != MIO_FLUSH && io->len == 0)
    return ROUTE_NONE;
  switch (io->m->be->kind) {
  case MEMBER_FILE:   return ROUTE_POOL;
  case MEMBER_CUSTOM: return ROUTE_INLINE;
  case MEMBER_NBD:    return ROUTE_ASYNC;
  }
  return ROUTE_NONE;
}

/* True when io is a pending op of a `kind` member.  Reads io->err only for
 * that kind, so a thread may ask about ops of other kinds while their
 * completions are writing err. */
static bool
mio_is (const struct mio *io, enum member_kind kind)
{
  return io->m != NULL && io->m->be->kind == kind && mio_route (io) != ROUTE_NONE;
}

/* err of a file op left for the threads of the batch (never an errno). */
#define MIO_PENDING INT_MIN

/* A file op still to be claimed.  As with mio_is, err is read only for
 * file ops, which only their claimer writes. */
static bool
mio_is_pending_file (const struct mio *io)
{
  return io->m != NULL && io->m->be->kind == MEMBER_FILE && io->err == MIO_PENDING;
}

/* ---- batches ---- */

static void
batch_release (struct mio_batch *b, unsigned k)
{
  if (k == 0)
    return;
  pthread_mutex_lock (&b->lock);
  b->pending -= k;
  if (b->pending == 0)
    pthread_cond_signal (&b->idle);
  pthread_mutex_unlock (&b->lock);
}

void
mio_cmd_done (struct mio_cmd *c, int err)
{
  struct mio_batch *b = c->batch;

  pthread_mutex_lock (&b->lock);
  if (err && c->io->err == 0)
    c->io->err = err;
  b->pending--;
  if (b->pending == 0)
    pthread_cond_signal (&b->idle);
  pthread_mutex_unlock (&b->lock);
}

/* Claim and perform file ops until none is left; returns how many this
 * thread performed (the caller releases them in one go). */
static unsigned
batch_claim_run (struct mio_batch *b)
{
  unsigned done = 0;
  size_t i;

  while ((i = atomic_fetch_add (&b->cursor, 1)) < b->n) {
    struct mio *io = &b->ios[i];

    if (!mio_is_pending_file (io))
      continue;
    io->err = io->m->be->run (io->m, io);
    done++;
  }
  return done;
}

static void
batch_wait (struct mio_batch *b)
{
  pthread_mutex_lock (&b->lock);
  while (b->pending > 0)
    pthread_cond_wait (&b->idle, &b->lock);
  pthread_mutex_unlock (&b->lock);
}

/* ---- the pool threads ---- */

static void *
pool_thread (void *arg)
{
  pthread_mutex_lock (&pool.lock);
  for (;;) {
    struct mio_batch *b;

    while (!pool.stopping && pool.head == NULL)
      pthread_cond_wait (&pool.work, &pool.lock);
    if (pool.stopping)
      break;
    b = pool.head;
    if (--b->tickets == 0) {
      pool.head = b->qnext;
      if (pool.head == NULL)
        pool.tail = NULL;
      b->queued = false;
    }
    pthread_mutex_lock (&b->lock);     /* attach: b cannot finish now */
    b->pending++;
    pthread_mutex_unlock (&b->lock);
    pthread_mutex_unlock (&pool.lock);

    batch_release (b, batch_claim_run (b) + 1);   /* + 1: detach */

    pthread_mutex_lock (&pool.lock);
  }
  pthread_mutex_unlock (&pool.lock);
  return NULL;
}

/* Start the threads (pool.lock held).  Fewer threads, or none, only cost
 * parallelism: callers perform whatever no helper claims. */
static void
pool_start_locked (void)
{
  sigset_t all, old;

  if (pool.started)
    return;
  pool.started = true;            /* fork handlers: registered by member.c
                                     before any file member existed */
  sigfillset (&all);
  pthread_sigmask (SIG_BLOCK, &all, &old);   /* signals go elsewhere */
  for (pool.nthreads = 0; pool.nthreads < MIO_POOL_THREADS; pool.nthreads++) {
    int r = pthread_create (&pool.thread[pool.nthreads], NULL, pool_thread, NULL);
    if (r) {
      raid_log (RAID_LOG_WARN, "member I/O pool: pthread_create: %s",
                raid_strerror (r));
      break;
    }
  }
  pthread_sigmask (SIG_SETMASK, &old, NULL);
}

static void
pool_enqueue (struct mio_batch *b, unsigned tickets)
{
  pthread_mutex_lock (&pool.lock);
  pool_start_locked ();
  if (tickets > pool.nthreads)
    tickets = pool.nthreads;
  if (tickets > 0 && !pool.stopping) {
    b->tickets = tickets;
    b->queued = true;
    b->qnext = NULL;
    if (pool.tail)
      pool.tail->qnext = b;
    else
      pool.head = b;
    pool.tail = b;
    for (unsigned t = 0; t < tickets; t++)
      pthread_cond_signal (&pool.work);
  }
  pthread_mutex_unlock (&pool.lock);
}

/* Withdraw b's unused tickets: after this no helper can attach. */
static void
pool_dequeue (struct mio_batch *b)
{
  pthread_mutex_lock (&pool.lock);
  if (b->queued) {
    struct mio_batch **pp = &pool.head, *prev = NULL;

    while (*pp != b) {
      prev = *pp;
      pp = &(*pp)->qnext;
    }
    *pp = b->qnext;
    if (pool.tail == b)
      pool.tail = prev;
    b->queued = false;
  }
  pthread_mutex_unlock (&pool.lock);
}

void
mio_shutdown (void)
{
  pthread_t thread[MIO_POOL_THREADS];
  unsigned n;

  pthread_mutex_lock (&pool.lock);
  if (!pool.started || pool.stopping) {
    pthread_mutex_unlock (&pool.lock);
    return;
  }
  pool.stopping = true;
  pthread_cond_broadcast (&pool.work);
  n = pool.nthreads;
  memcpy (thread, pool.thread, sizeof thread);
  pthread_mutex_unlock (&pool.lock);

  for (unsigned i = 0; i < n; i++)
    pthread_join (thread[i], NULL);

  pthread_mutex_lock (&pool.lock);
  pool.nthreads = 0;
  pool.started = pool.stopping = false;
  pthread_mutex_unlock (&pool.lock);
}

/* ---- mio_run ---- */

#define LOCAL_CMDS 16

/* Submit every async op (phase 1: its own op; phase 2: the FUA flushes). */
static void
submit_async (struct mio_batch *b, struct mio_cmd *cmds, size_t ncmds)
{
  for (size_t k = 0; k < ncmds; k++) {
    struct mio_cmd *c = &cmds[k];
    struct member *m = c->io->m;
    int r = member_start (m);

    c->batch = b;
    if (r)
      mio_cmd_done (c, r);
    else
      m->be->submit (m, c);
  }
}

/* Phase 2: flush the members whose FUA writes were emulated.  Returns how
 * many flushes were sent (0: nothing to wait for). */
static size_t
prepare_fua_flushes (struct mio_cmd *cmds, size_t nasync)
{
  size_t k = 0;

  for (size_t i = 0; i < nasync; i++)
    if (cmds[i].need_flush && cmds[i].io->err == 0) {
      cmds[k] = (struct mio_cmd) { .io = cmds[i].io, .op = MIO_FLUSH };
      k++;
    }
  return k;
}

static int
first_error (const struct mio *ios, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (ios[i].err)
      return ios[i].err;
  return 0;
}

/* The calling thread does the file ops that cannot block; the others are
 * marked MIO_PENDING.  Returns how many are pending. */
static size_t
file_ops_inline (struct mio *ios, size_t n)
{
  size_t pending = 0;

  for (size_t i = 0; i < n; i++) {
    struct mio *io = &ios[i];
    int r = MIO_WOULDBLOCK;

    if (!mio_is (io, MEMBER_FILE))
      continue;
    if (io->m->be->try_run)
      r = io->m->be->try_run (io->m, io);
    if (r == MIO_WOULDBLOCK) {
      io->err = MIO_PENDING;
      pending++;
    }
    else
      io->err = r;
  }
  return pending;
}

/* One mio_cmd per async op, in *cmds (local when they fit).  Returns how
 * many; when memory is short those ops fail with ENOMEM and 0 is returned. */
static size_t
async_prepare (struct mio *ios, size_t n, size_t nasync,
               struct mio_cmd *local, struct mio_cmd **cmds)
{
  size_t k = 0;

  *cmds = local;
  if (nasync > LOCAL_CMDS && (*cmds = calloc (nasync, sizeof **cmds)) == NULL) {
    *cmds = local;
    for (size_t i = 0; i < n; i++)
      if (mio_route (&ios[i]) == ROUTE_ASYNC)
        ios[i].err = ENOMEM;
    return 0;
  }
  for (size_t i = 0; i < n; i++)
    if (mio_route (&ios[i]) == ROUTE_ASYNC)
      (*cmds)[k++] = (struct mio_cmd) { .io = &ios[i], .op = ios[i].op };
  return k;
}

/* The general path: a batch on this stack frame. */
static void
mio_run_batch (struct mio *ios, size_t n, size_t nasync)
{
  struct mio_cmd local[LOCAL_CMDS], *cmds;
  struct mio_batch b = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .idle = PTHREAD_COND_INITIALIZER,
    .ios = ios, .n = n,
  };
  size_t nfile, k;

  nasync = async_prepare (ios, n, nasync, local, &cmds);
  b.pending = nasync;
  submit_async (&b, cmds, nasync);        /* the network works meanwhile */
  for (size_t i = 0; i < n; i++)
    if (mio_is (&ios[i], MEMBER_CUSTOM))
      ios[i].err = ios[i].m->be->run (ios[i].m, &ios[i]);
  nfile = file_ops_inline (ios, n);
  pthread_mutex_lock (&b.lock);
  b.pending += nfile;
  pthread_mutex_unlock (&b.lock);
  if (nfile > 1)
    pool_enqueue (&b, raid_min_u64 (nfile - 1, MIO_POOL_THREADS));
  batch_release (&b, batch_claim_run (&b));
  if (nfile > 1)
    pool_dequeue (&b);
  batch_wait (&b);

  if (nasync > 0 && (k = prepare_fua_flushes (cmds, nasync)) > 0) {
    b.pending = k;          /* no other thread can see b between phases */
    submit_async (&b, cmds, k);
    batch_wait (&b);
  }

  if (cmds != local)
    free (cmds);
  pthread_cond_destroy (&b.idle);
  pthread_mutex_destroy (&b.lock);
}

int
mio_run (struct mio *ios, size_t n)
{
  size_t nasync = 0;

  for (size_t i = 0; i < n; i++) {
    ios[i].err = mio_check (&ios[i]);
    nasync += mio_route (&ios[i]) == ROUTE_ASYNC;
  }

  /* Fast path: a lone synchronous op never leaves this thread. */
  if (n == 1 && nasync == 0) {
    if (mio_route (&ios[0]) != ROUTE_NONE)
      ios[0].err = ios[0].m->be->run (ios[0].m, &ios[0]);
    return ios[0].err;
  }
  if (n > 0)
    mio_run_batch (ios, n, nasync);
  return first_error (ios, n);
}

/* ---- synchronous helpers ---- */

int
member_pread (struct member *m, void *buf, size_t len, uint64_t off)
{
  struct iovec iov = { buf, len };
  struct mio io = {
    .m = m, .op = MIO_READ, .off = off, .len = len, .iov = &iov, .iovcnt = 1,
  };

  return mio_run (&io, 1);
}

int
member_pwrite (struct member *m, const void *buf, size_t len, uint64_t off,
               bool fua)
{
  struct iovec iov = { (void *) buf, len };
  struct mio io = {
    .m = m, .op = MIO_WRITE, .flags = fua ? MIO_FUA : 0,
    .off = off, .len = len, .iov = &iov, .iovcnt = 1,
  };

  return mio_run (&io, 1);
}

int
member_flush (struct member *m)
{
  struct mio io = { .m = m, .op = MIO_FLUSH };

  return mio_run (&io, 1);
}

void
member_uncache (struct member *m, uint64_t off, uint64_t len)
{
  if (m->be->uncache)
    m->be->uncache (m, off, len);
}

int
member_extent (struct member *m, uint64_t off, uint64_t len, bool *hole,
               uint64_t *run)
{
  *hole = false;
  *run = len;
  if (len == 0 || !m->be->extent)
    return 0;
  return m->be->extent (m, off, len, hole, run);
}
