/* nbdkit-raid: member backends and parallel member I/O.
 *
 * A member is where one role's bytes live: a regular file, a block device, or
 * an NBD export reached through libnbd.  Tests add their own backends (the
 * crash-simulation harness records writes and flushes) through
 * member_new_custom().
 *
 * All member I/O of one request goes through mio_run(): the caller describes
 * every member operation of one phase (e.g. "read old data and parity", then
 * "write data and parity") as an array of struct mio, and mio_run issues them
 * all concurrently and returns when every one has completed.  Nothing waits
 * on a member longer than that member's own I/O takes; there is no retry
 * loop in this layer.
 *
 * How concurrency is achieved:
 *   - NBD members: libnbd aio commands on the member's handle, issued by the
 *     calling thread; one dispatcher thread per NBD member runs the poll loop
 *     and completes commands; the submitter sleeps on the batch's condition
 *     variable, woken by the completion callback of its last command.
 *     Requests larger than the server's maximum (32 MiB when it names none)
 *     are split; FUA and zeroing are emulated (flush after the write, writes
 *     of zeroes) when the server lacks them.  Every operation is bounded:
 *     see member_set_io_timeout.
 *   - File/block members: the calling thread first does the ops that
 *     cannot wait on the device (reads the page cache serves at once, per
 *     RWF_NOWAIT, and plain buffered writes); then it and up to
 *     MIO_POOL_THREADS threads of a small shared pool (created on first
 *     use) claim the remaining ones (uncached reads, FUA writes, flushes,
 *     zeroing) one at a time, so they run concurrently; the calling thread
 *     always takes part, so no batch waits for a free pool thread.  A batch
 *     with a single file op never leaves the calling thread.  No allocation
 *     per op: the batch lives on the caller's stack.
 *   - Custom (test) backends: executed synchronously in the calling thread,
 *     in array order, which makes crash-point enumeration deterministic.
 *     Each iov element is one pread/pwrite call; a NULL zero callback
 *     becomes pwrite calls of at most 1 MiB of zeroes.
 *
 * Errors: each mio gets its own err (0 or an errno value).  A short read or
 * write is an error (EIO); reads past the member's end are EIO too, and so
 * are writes and zeroes past it (a member is never extended).  A write or
 * zero on a member opened readonly is EROFS; a malformed mio (NULL member,
 * unknown op, iovcnt outside 1..IOV_MAX, len != iov total) is EINVAL.
 * len == 0 is a successful no-op for READ, WRITE and ZERO.
 */
#ifndef RAIDCORE_MEMBER_H
#define RAIDCORE_MEMBER_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>
#include <sys/uio.h>

struct member;

enum mio_op {
  MIO_READ,
  MIO_WRITE,
  MIO_FLUSH,       /* make all completed writes to this member durable */
  MIO_ZERO,        /* range must read back as zeroes (may punch holes) */
};

#define MIO_FUA 1u   /* write/zero is durable on completion */

struct mio {
  struct member *m;
  enum mio_op op;
  uint32_t flags;            /* MIO_FUA */
  uint64_t off;              /* member byte offset (absolute, not data-relative) */
  uint64_t len;              /* bytes (TRIM/ZERO; for READ/WRITE must equal the iov total) */
  struct iovec *iov;         /* READ/WRITE: buffers, any alignment */
  int iovcnt;                /* 1..IOV_MAX */
  int err;                   /* out: 0 or errno */
};

/* Open a member from its spec: a path (file or block device; opened O_RDWR |
 * O_CLOEXEC) or an NBD URI (nbd://, nbds://, nbd+unix://, nbds+unix://).
 * Returns NULL with errno set and a message "<spec>: <step>: <cause>" in err
 * (e.g. "nbd://x: connect: Connection refused", "/a/b: open: No such file
 * or directory", "/dev/null: not a regular file or block device: Invalid
 * argument", "nbd://x: export is read-only: Read-only file system").
 * `access` says how the member is held while it is open (below).  A file
 * or block device held exclusively or shared cannot be held exclusively by
 * anyone else meanwhile, in this process too: such an open fails with EBUSY
 * ("/m0: in use (locked by another server or program)").  A file is held
 * by an OFD lock on its whole length (a write lock exclusively, a read
 * lock shared), a block device by O_EXCL (both ways: the kernel has no
 * shared claim).  An NBD export cannot be locked (the superblock's owner
 * record stands in, state.h).  Connecting to an NBD server is bounded by
 * the I/O timeout (ETIMEDOUT).  The size is fixed at open: st_size,
 * BLKGETSIZE64, or the export size. */
enum member_access {
  MEMBER_READ_WRITE,    /* a server, create, add: read and write, exclusively */
  MEMBER_READ_SHARED,   /* a read-only server: read only, held shared */
  MEMBER_PEEK,          /* read only, not held (nbdraid examine, naming a
                           member's holder) */
};
struct member *member_open (const char *spec, enum member_access access,
                            char *err, size_t errlen);

/* Custom backend (tests).  Each function is synchronous, returns 0 or an
 * errno value.  priv is passed back. */
struct member_custom_ops {
  int (*pread) (void *priv, void *buf, size_t len, uint64_t off);
  int (*pwrite) (void *priv, const void *buf, size_t len, uint64_t off, bool fua);
  int (*flush) (void *priv);
  int (*zero) (void *priv, size_t len, uint64_t off, bool fua);   /* may be NULL: pwrite of zeroes */
  void (*close) (void *priv);                                     /* may be NULL */
};
struct member *member_new_custom (const char *name, uint64_t size,
                                  const struct member_custom_ops *ops, void *priv);

/* Test hook: when set, member_open first offers every spec to fn, which
 * returns a member (typically a custom one) or NULL to let member_open
 * open the spec as usual.  Lets a test name its simulated devices in
 * requests that take specs (reshape add).  Process-wide; set it before
 * any array exists; NULL removes it. */
typedef struct member *(*member_open_hook_fn) (const char *spec);
void member_set_open_hook (member_open_hook_fn fn);

/* Release the member (NULL is a no-op).  No I/O on it may be in flight. */
void member_close (struct member *m);

const char *member_spec (const struct member *m);    /* as given to member_open */
uint64_t member_size (const struct member *m);       /* bytes */
/* Read the member's size again (a file or device that was enlarged; an
 * NBD export keeps the size it had at member_open) and keep it: it only
 * grows.  Returns the size. */
uint64_t member_refresh_size (struct member *m);
/* Native FUA (an NBD member: of the connection made by member_open; FUA
 * is emulated on a later connection whose server lacks it). */
bool member_can_fua (const struct member *m);
bool member_is_nbd (const struct member *m);
/* Whether m is the file or block device that st (a stat of some path)
 * describes: the file m opened (another hard link to it) or the same
 * device (another node of it), as found when m was opened; no I/O.  False
 * for NBD and custom members. */
struct stat;
bool member_is_storage (const struct member *m, const struct stat *st);
/* Whether m is a file or block device: member_is_storage can match it. */
bool member_has_storage (const struct member *m);
/* The export description an NBD member's server sent (nbdkit-raid's own
 * export names its array there: identity.h), or NULL (none, or not NBD). */
const char *member_description (const struct member *m);

/* Run n member operations concurrently; return when all have completed.
 * Returns 0 when every op succeeded, otherwise the errno of the first
 * failed op (in array order); each ios[i].err is set either way. */
int mio_run (struct mio *ios, size_t n);

/* Allocation status at off: *hole says whether [off, off + *run) reads as
 * zeroes because nothing is stored there; *run <= len.  Members that cannot
 * tell (NBD, custom) report data for the whole len.  Returns 0 or errno. */
int member_extent (struct member *m, uint64_t off, uint64_t len, bool *hole,
                   uint64_t *run);

/* Drop clean cached copies of [off, off + len) held on this side (the
 * page cache of a file or block device member), so that the next read of
 * the range reaches the device; a no-op for other backends.  Used by the
 * identity probe (identity.h). */
void member_uncache (struct member *m, uint64_t off, uint64_t len);

/* Synchronous helpers built on mio_run (single op). */
int member_pread (struct member *m, void *buf, size_t len, uint64_t off);
int member_pwrite (struct member *m, const void *buf, size_t len, uint64_t off, bool fua);
int member_flush (struct member *m);

/* Tear down the shared I/O pool (at plugin unload / program exit).  Safe to
 * call when it was never started; the next mio_run starts it again. */
void mio_shutdown (void);

/* Number of shared I/O threads serving file/block members. */
#define MIO_POOL_THREADS 8

/* Start the member's background machinery (the dispatcher thread of an NBD
 * member; nothing for other backends).  Returns 0 or an errno value.
 * Idempotent and thread-safe; mio_run calls it lazily, so calling it is
 * only needed to fail early (nbdkit: in .after_fork).
 *
 * fork(): member_open creates the connection and file descriptors, which
 * survive a fork; threads do not.  Fork handlers stop every dispatcher
 * before a fork, so the parent cannot read replies meant for the child off
 * the shared connection; afterwards the dispatchers (and the pool) start
 * again on next use, in the parent and in the child.  So members opened
 * and used in nbdkit's get_ready keep working in the daemonized child.
 * Closing a member never sends NBD_CMD_DISC, so a parent closing its copy
 * does not disturb the child.  A member_reconnect under way is cut short
 * rather than waited for (see there).  Do not fork while member I/O is in
 * flight. */
int member_start (struct member *m);

/* Bound on every NBD member operation, in seconds (default 30; 0 disables).
 * When an operation of an NBD member has not completed within the bound,
 * that member's connection is shut down: the operation and every other
 * in-flight or later operation of that member fail with ETIMEDOUT.  A lost
 * connection fails them the same way (promptly, with the transport's error,
 * e.g. ENOTCONN).  Either way the member is then down (member_is_down)
 * until member_reconnect brings it up.  Applies to operations submitted
 * after the call, and to the connect and handshake of member_open and
 * member_reconnect.  File and custom members are not bounded here (the
 * kernel or the test owns them). */
void member_set_io_timeout (unsigned seconds);

/* Whether the member's connection is down: a lost connection or an op past
 * its deadline failed it, and every op now fails at once (with that error).
 * An op that fails because of its connection completes only after the
 * member is down, so a caller that sees an op fail can ask this to tell a
 * lost connection from a failed request.  A connection that dies while
 * nothing is in flight is noticed by the member's dispatcher (running once
 * the member has been used) or by the next op.
 * Always false for files, block devices and custom members. */
bool member_is_down (const struct member *m);

/* Connect a member that is down again, to the same URI (its spec), with a
 * new handle configured exactly as member_open configures one (TLS for
 * nbds://, the same options); connect + handshake bounded by the I/O
 * timeout.  Returns 0 when it is up: ops submitted afterwards use the new
 * connection.  Every op submitted on the old connection has completed
 * (those it cut off, with an error) before the new one is used: reconnect
 * first waits for them, which is prompt once the connection is down (and
 * bounded by the I/O timeout anyway).  The member keeps the size it had;
 * the export may have grown (the extra bytes stay unused) but not shrunk.
 *
 * Otherwise returns an errno with a message "<spec>: reconnect: <cause>",
 * and the member stays down (its ops keep failing with their old error):
 *   - what member_open would fail with, as "<spec>: reconnect: connect:
 *     Connection refused" (ECONNREFUSED, ENOENT, ETIMEDOUT, ...), or EROFS
 *     when the export became read-only under a writable member;
 *   - EIO: the export is smaller than the member ("<spec>: reconnect:
 *     export is N bytes, smaller than the member (M bytes): ...");
 *   - EBUSY: another reconnect of this member is under way, or a fork is
 *     being prepared; this call did nothing (ask again later);
 *   - ECANCELED: member_close or fork() cut it short.
 * Returns 0 at once when the member is not down; ENOTSUP (and a message)
 * for files, block devices and custom members.
 *
 * Threads: safe while other threads submit ops to the member (they keep
 * failing at once until it is up: a reconnect holds no lock they need
 * while it connects or waits).  member_close may be called while a
 * reconnect runs in another thread: close cuts it short and waits for it to
 * return (promptly: only a DNS lookup in the connect is not interruptible);
 * a reconnect must not be started once close may have begun.  A fork()
 * likewise cuts a reconnect under way short (it returns ECANCELED in the
 * parent; the child has no such thread) instead of waiting for it; the
 * member is then down in both processes and either may reconnect it. */
int member_reconnect (struct member *m, char *err, size_t errlen);
/* The same, with the connect and handshake bounded by connect_ns instead
 * (0: the I/O timeout): a caller with its own deadline (the watcher of
 * members that come and go) does not let one attempt at an address that
 * swallows packets outlast it.  Waiting for the old connection's ops keeps
 * the I/O timeout bound. */
int member_reconnect_within (struct member *m, uint64_t connect_ns,
                             char *err, size_t errlen);

#endif
