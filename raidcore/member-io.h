/* nbdkit-raid: member internals shared by member.c and the backends.
 *
 * A member is a `struct member` header embedded at the start of a
 * backend's own struct (file_member, nbd_member, custom_member) plus a
 * backend vtable.  Backends come in two kinds, and mio_run treats them
 * differently:
 *
 *   - synchronous (file, custom): `run` performs one mio to completion in
 *     the calling thread and returns its errno.  mio_run first lets the
 *     calling thread do the file ops that cannot block (`try_run`), then
 *     spreads the rest over the calling thread and the shared pool; custom
 *     ops always run in the calling thread, in array order.
 *   - asynchronous (NBD): `submit` starts one mio and returns at once; the
 *     backend later calls mio_cmd_done() exactly once for it, from any
 *     thread, without holding any lock that mio_cmd_done's caller might wait
 *     on.  The submitter sleeps on its batch until then.
 *
 * Lock order, outermost first: libnbd handle lock (held around completion
 * callbacks) -> backend member lock -> batch lock.  The pool lock is taken
 * before a batch lock, never after it.  Only the NBD fork handler holds
 * more than one member lock: every NBD member's, under the registry lock,
 * and it takes no other lock of ours while it holds them.
 */
#ifndef RAIDCORE_MEMBER_INT_H
#define RAIDCORE_MEMBER_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "member.h"

enum member_kind {
  MEMBER_FILE,      /* synchronous, may run on the pool */
  MEMBER_CUSTOM,    /* synchronous, calling thread, array order */
  MEMBER_NBD,       /* asynchronous: submit + mio_cmd_done */
};

struct mio_cmd;

struct member_backend {
  enum member_kind kind;
  /* Start background machinery; idempotent; NULL when there is none. */
  int (*start) (struct member *m);
  /* Optional: the member's size now (it may have grown); 0 or errno. */
  int (*size_now) (struct member *m, uint64_t *size);
  /* Synchronous kinds: perform io (already validated), return 0 or errno. */
  int (*run) (struct member *m, struct mio *io);
  /* File kind, optional: perform io only if that cannot wait on the device
   * (a read the page cache serves now, a plain buffered write); return 0 or
   * errno when done, MIO_WOULDBLOCK to leave it to run (on the pool).  A
   * partial attempt is harmless: run redoes the whole op. */
  int (*try_run) (struct member *m, struct mio *io);
  /* Asynchronous kind: start c (op c->op on c->io); complete it later with
   * mio_cmd_done.  May set c->need_flush to ask mio_run for a second phase
   * flushing this member (FUA emulation) once every op of the batch is
   * done; that flush comes back through submit with c->op == MIO_FLUSH. */
  void (*submit) (struct member *m, struct mio_cmd *c);
  /* Release everything; no I/O is in flight. */
  void (*close) (struct member *m);
  /* Optional: is the range at off a hole (reads as zeroes)?  Sets *hole and
   * *run, the length from off (<= len) for which that answer holds. */
  int (*extent) (struct member *m, uint64_t off, uint64_t len, bool *hole,
                 uint64_t *run);
  /* Optional (NBD): member_is_down and member_reconnect (member.h).
   * Without them a member is never down and cannot reconnect. */
  bool (*is_down) (const struct member *m);
  int (*reconnect) (struct member *m, uint64_t connect_ns, char *err, size_t errlen);
  /* Optional: drop clean cached copies of [off, off + len), so that the
   * next read of it reaches the device. */
  void (*uncache) (struct member *m, uint64_t off, uint64_t len);
};

#define MIO_WOULDBLOCK (-1)    /* never an errno value */

struct member {
  const struct member_backend *be;
  char *spec;                  /* as given; owned */
  uint64_t size;               /* bytes */
  bool can_fua;                /* native FUA */
  bool readonly;
  char *description;           /* NBD export description, or NULL; owned */
};

struct mio_batch;              /* private to member.c */

/* One asynchronous member operation in flight.  member.c owns io, batch,
 * op and need_flush; the backend owns the rest while the op is in flight. */
struct mio_cmd {
  struct mio *io;
  struct mio_batch *batch;
  enum mio_op op;              /* what to do now (phase 2: MIO_FLUSH) */
  bool need_flush;             /* set by submit: FUA must be emulated */
  /* backend-private */
  struct mio_cmd *prev, *next; /* the member's in-flight list */
  uint64_t deadline_ns;        /* monotonic; UINT64_MAX: none */
  unsigned outstanding;        /* wire commands not yet completed */
  int err;                     /* first error of those commands */
  void *bounce;                /* a vectored write gathered (NBD) */
};

/* Complete c with err (0 or errno).  Called exactly once per submit. */
void mio_cmd_done (struct mio_cmd *c, int err);

/* A shared, read-only buffer of MEMBER_ZERO_BUF_SIZE zero bytes (anonymous
 * PROT_READ pages: costs no memory, and a stray write faults): the source
 * of "write zeroes" fallbacks, which chunk to its size.  NULL only when
 * even a fallback allocation failed (callers then fail with ENOMEM). */
#define MEMBER_ZERO_BUF_SIZE (1024 * 1024)
const void *member_zeroes (void);

/* Incremented in the child after every fork(): a thread started under an
 * older generation does not exist in this process.  member.c registers
 * the fork handlers before the first member is opened; they call the
 * engine's (mio_atfork_child) and the NBD backend's. */
extern _Atomic unsigned member_fork_gen;
void mio_atfork_child (void);
void member_nbd_atfork_prepare (void);
void member_nbd_atfork_parent (void);
void member_nbd_atfork_child (void);

/* Per-operation bound for NBD members, nanoseconds (0: none). */
uint64_t member_io_timeout_ns (void);

/* Write "<spec>: <what>: <strerror(errnum)>" into err. */
void member_err (char *err, size_t errlen, const char *spec,
                 const char *what, int errnum);

/* Fill the common header; takes a copy of spec.  Returns 0 or ENOMEM. */
int member_init (struct member *m, const struct member_backend *be,
                 const char *spec, uint64_t size, bool can_fua, bool readonly);
void member_fini (struct member *m);

/* Backend constructors: NULL with errno set and a message in err. */
struct member *member_file_open (const char *spec, enum member_access access,
                                 char *err, size_t errlen);
struct member *member_nbd_open (const char *spec, bool readonly,
                                char *err, size_t errlen);

/* True when spec names an NBD URI. */
bool member_spec_is_nbd (const char *spec);

#endif
