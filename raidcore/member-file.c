/* nbdkit-raid: file and block-device members (contract: member.h).
 *
 * What stays true:
 *   - A member never changes size through us.  mio_run refuses ranges past
 *     member_size (EIO); zeroing keeps the size (FALLOC_FL_KEEP_SIZE);
 *     nothing truncates.
 *   - When run() returns, the op is complete or failed.  A short transfer
 *     is continued from where it stopped (EINTR is retried); end of file
 *     inside the range is EIO, never a short success.
 *   - Durability: a FUA write uses pwritev2(RWF_DSYNC), so every part that
 *     completed is durable; if the kernel refuses the flag, the write is
 *     followed by fdatasync.  A FUA zero is followed by fdatasync.  Flush is
 *     fdatasync.
 *   - Zeroing reads back as zeroes whatever path it takes: hole punching,
 *     then FALLOC_FL_ZERO_RANGE (regular files), BLKZEROOUT (block devices),
 *     and finally writing zeroes from the shared zero buffer.  A mechanism
 *     the kernel refused as unsupported is not tried again on that member
 *     (atomic flags), so a filesystem without holes costs one failed call,
 *     not one per op.
 *   - No allocation on the I/O path; run() may execute in any thread.
 *     try_run() runs in the calling thread and only does what cannot wait
 *     on the device (see member-int.h).
 */

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/uio.h>
#include <linux/falloc.h>
#include <linux/fs.h>

#include "member-io.h"
#include "util.h"

struct file_member {
  struct member m;
  int fd;
  bool is_blk;
  dev_t dev;                    /* what it is (member_is_storage): the */
  ino_t ino;                    /* file's st_dev and st_ino, or the
                                   device's st_rdev and 0, at open */
  bool sync_free;               /* tmpfs/ramfs: a sync never waits on a device */
  _Atomic bool no_dsync;        /* kernel refused RWF_DSYNC */
  _Atomic bool no_punch;        /* ... FALLOC_FL_PUNCH_HOLE */
  _Atomic bool no_zero_range;   /* ... FALLOC_FL_ZERO_RANGE */
  _Atomic bool no_blkzeroout;   /* ... BLKZEROOUT */
  _Atomic bool no_nowait_read;  /* ... RWF_NOWAIT on reads */
  _Atomic bool no_nowait_write; /* ... RWF_NOWAIT on writes */
};

#define UNSUPPORTED (-2)        /* "try the next mechanism" */
#define XFER_WINDOW 64

/* Describe the part of iov after its first `skip` bytes in win (at most
 * XFER_WINDOW entries; the transfer loop comes back for the rest). */
static int
iov_window (const struct iovec *iov, int iovcnt, uint64_t skip,
            struct iovec *win)
{
  int i = 0, k = 0;

  while (i < iovcnt && skip >= iov[i].iov_len) {
    skip -= iov[i].iov_len;
    i++;
  }
  for (; i < iovcnt && k < XFER_WINDOW; i++, skip = 0) {
    win[k].iov_base = (char *) iov[i].iov_base + skip;
    win[k].iov_len = iov[i].iov_len - skip;
    k++;
  }
  return k;
}

/* Move len bytes between iov and the file at off.  Returns 0 or errno. */
static int
file_xfer (struct file_member *f, bool write, const struct iovec *iov,
           int iovcnt, uint64_t off, uint64_t len, int wflags)
{
  struct iovec win[XFER_WINDOW];
  const struct iovec *v = iov;
  int cnt = iovcnt;
  uint64_t done = 0;

  while (done < len) {
    ssize_t r = write ? pwritev2 (f->fd, v, cnt, off + done, wflags)
                      : preadv (f->fd, v, cnt, off + done);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return errno;
    }
    if (r == 0)
      return EIO;               /* end of file inside the range */
    done += r;
    if (done < len) {
      cnt = iov_window (iov, iovcnt, done, win);
      v = win;
    }
  }
  return 0;
}

static int
file_sync (struct file_member *f)
{
  return fdatasync (f->fd) == 0 ? 0 : errno;
}

static int
file_write (struct file_member *f, const struct iovec *iov, int iovcnt,
            uint64_t off, uint64_t len, bool fua)
{
  int r;

  if (fua && !atomic_load (&f->no_dsync)) {
    r = file_xfer (f, true, iov, iovcnt, off, len, RWF_DSYNC);
    if (r != EOPNOTSUPP && r != ENOSYS)
      return r;
    atomic_store (&f->no_dsync, true);
  }
  r = file_xfer (f, true, iov, iovcnt, off, len, 0);
  if (r == 0 && fua)
    r = file_sync (f);
  return r;
}

/* errno of a failed zeroing call -> UNSUPPORTED (remembered in *never when
 * the kernel lacks the mechanism) or the error to report. */
static int
zero_failed (int e, _Atomic bool *never)
{
  switch (e) {
  case EOPNOTSUPP: case ENOSYS: case ENOTTY:
    atomic_store (never, true);
    return UNSUPPORTED;
  case EINVAL:                  /* e.g. unaligned for this device */
    return UNSUPPORTED;
  default:
    return e;
  }
}

static int
try_fallocate (struct file_member *f, int mode, uint64_t off, uint64_t len,
               _Atomic bool *never)
{
  if (atomic_load (never))
    return UNSUPPORTED;
  while (fallocate (f->fd, mode, off, len) == -1)
    if (errno != EINTR)
      return zero_failed (errno, never);
  return 0;
}

static int
try_blkzeroout (struct file_member *f, uint64_t off, uint64_t len)
{
  uint64_t range[2] = { off, len };

  if (atomic_load (&f->no_blkzeroout) || ((off | len) & 511) != 0)
    return UNSUPPORTED;
  while (ioctl (f->fd, BLKZEROOUT, range) == -1)
    if (errno != EINTR)
      return zero_failed (errno, &f->no_blkzeroout);
  return 0;
}

static int
write_zeroes (struct file_member *f, uint64_t off, uint64_t len)
{
  const void *z = member_zeroes ();

  if (z == NULL)
    return ENOMEM;
  while (len > 0) {
    uint64_t n = raid_min_u64 (len, MEMBER_ZERO_BUF_SIZE);
    struct iovec iov = { (void *) z, n };
    int r = file_xfer (f, true, &iov, 1, off, n, 0);
    if (r)
      return r;
    off += n;
    len -= n;
  }
  return 0;
}

static int
file_zero (struct file_member *f, uint64_t off, uint64_t len, bool fua)
{
  int r;

  if (f->is_blk)
    r = try_blkzeroout (f, off, len);
  else {
    r = try_fallocate (f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                       off, len, &f->no_punch);
    if (r == UNSUPPORTED)
      r = try_fallocate (f, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                         off, len, &f->no_zero_range);
  }
  if (r == UNSUPPORTED)
    r = write_zeroes (f, off, len);
  if (r == 0 && fua)
    r = file_sync (f);
  return r;
}

/* One RWF_NOWAIT attempt at the whole op: 0 or errno when done,
 * MIO_WOULDBLOCK when it would wait (or came out short), UNSUPPORTED when
 * the kernel refuses the flag for this file. */
static int
file_nowait (struct file_member *f, bool write, const struct mio *io,
             _Atomic bool *never)
{
  ssize_t r;

  if (atomic_load (never))
    return UNSUPPORTED;
  r = write ? pwritev2 (f->fd, io->iov, io->iovcnt, io->off, RWF_NOWAIT)
            : preadv2 (f->fd, io->iov, io->iovcnt, io->off, RWF_NOWAIT);
  if (r >= 0)
    return (uint64_t) r == io->len ? 0 : MIO_WOULDBLOCK;
  switch (errno) {
  case EAGAIN: case EINTR:
    return MIO_WOULDBLOCK;
  case EOPNOTSUPP: case ENOSYS:
    atomic_store (never, true);
    return UNSUPPORTED;
  default:
    return errno;
  }
}

/* What the calling thread does before the pool is involved: reads the page
 * cache can serve at once (every read of a tmpfs or ramfs file: RWF_NOWAIT
 * is not supported there, and such a read is a memory copy that never
 * waits on a device), and plain buffered writes (without RWF_NOWAIT
 * support they are done anyway: they copy into the page cache and only
 * block under writeback throttling, which parallelism would not avoid). */
static int file_run (struct member *m, struct mio *io);

static int
file_try_run (struct member *m, struct mio *io)
{
  struct file_member *f = (struct file_member *) m;
  int r;

  switch (io->op) {
  case MIO_READ:
    r = file_nowait (f, false, io, &f->no_nowait_read);
    if (r == UNSUPPORTED && f->sync_free)  /* tmpfs: no RWF_NOWAIT, and its */
      return file_run (m, io);             /* reads are memory copies */
    return r == UNSUPPORTED ? MIO_WOULDBLOCK : r;
  case MIO_WRITE:
    if (io->flags & MIO_FUA)
      return f->sync_free ? file_run (m, io) : MIO_WOULDBLOCK;
    r = file_nowait (f, true, io, &f->no_nowait_write);
    if (r != UNSUPPORTED)
      return r;
    return file_xfer (f, true, io->iov, io->iovcnt, io->off, io->len, 0);
  case MIO_FLUSH:
    return f->sync_free ? file_run (m, io) : MIO_WOULDBLOCK;
  default:
    return MIO_WOULDBLOCK;
  }
}

static int
file_run (struct member *m, struct mio *io)
{
  struct file_member *f = (struct file_member *) m;
  bool fua = io->flags & MIO_FUA;

  switch (io->op) {
  case MIO_READ:
    return file_xfer (f, false, io->iov, io->iovcnt, io->off, io->len, 0);
  case MIO_WRITE:
    return file_write (f, io->iov, io->iovcnt, io->off, io->len, fua);
  case MIO_FLUSH:
    return file_sync (f);
  case MIO_ZERO:
    return file_zero (f, io->off, io->len, fua);
  }
  return EINVAL;
}

static void
file_close (struct member *m)
{
  struct file_member *f = (struct file_member *) m;

  close (f->fd);
  member_fini (m);
  free (f);
}

/* Holes of regular files, from SEEK_DATA / SEEK_HOLE. */
static int
file_extent (struct member *m, uint64_t off, uint64_t len, bool *hole,
             uint64_t *run)
{
  struct file_member *f = (struct file_member *) m;
  off_t d, h;

  if (f->is_blk)
    return 0;                   /* block devices: always data */
  d = lseek (f->fd, off, SEEK_DATA);
  if (d == -1 && errno == ENXIO) {
    *hole = true;               /* no data from off to the end */
    return 0;
  }
  if (d == -1)
    return 0;                   /* cannot tell: data */
  if ((uint64_t) d > off) {
    *hole = true;
    *run = raid_min_u64 (len, d - off);
    return 0;
  }
  h = lseek (f->fd, off, SEEK_HOLE);
  if (h > (off_t) off)
    *run = raid_min_u64 (len, h - off);
  return 0;
}

static int file_size (int fd, const char *spec, struct stat *st, uint64_t *size,
                      char *err, size_t errlen);

static int
file_size_now (struct member *m, uint64_t *size)
{
  struct stat st;
  return file_size (((struct file_member *) m)->fd, m->spec, &st, size, NULL, 0);
}

static void
file_uncache (struct member *m, uint64_t off, uint64_t len)
{
  struct file_member *f = (struct file_member *) m;

  posix_fadvise (f->fd, off, len, POSIX_FADV_DONTNEED);
}

static const struct member_backend file_backend = {
  .kind = MEMBER_FILE,
  .size_now = file_size_now,
  .run = file_run,
  .try_run = file_try_run,
  .close = file_close,
  .extent = file_extent,
  .uncache = file_uncache,
};

/* Size of the open file or block device, and its fstat in *st; 0 or
 * errno, message in err. */
static int
file_size (int fd, const char *spec, struct stat *st, uint64_t *size,
           char *err, size_t errlen)
{
  if (fstat (fd, st) == -1) {
    member_err (err, errlen, spec, "fstat", errno);
    return errno;
  }
  if (S_ISREG (st->st_mode)) {
    *size = st->st_size;
    return 0;
  }
  if (S_ISBLK (st->st_mode)) {
    if (ioctl (fd, BLKGETSIZE64, size) == 0)
      return 0;
    member_err (err, errlen, spec, "BLKGETSIZE64", errno);
    return errno;
  }
  member_err (err, errlen, spec, "not a regular file or block device", EINVAL);
  return EINVAL;
}

/* Hold the member as `access` says (member.h): a block device is reopened
 * with O_EXCL (the kernel refuses it while it is mounted or held by
 * another exclusive opener), a file gets an OFD lock on its whole length,
 * a write lock exclusively and a read lock shared (released when the last
 * descriptor of this open goes, so it survives nbdkit's fork and dies with
 * the process).  A filesystem without locks (ENOLCK) is let through.  0,
 * or EBUSY with a message. */
static int
hold (int *fd, const char *spec, bool is_blk, enum member_access access,
      char *err, size_t errlen)
{
  struct flock fl = { .l_type = access == MEMBER_READ_WRITE ? F_WRLCK : F_RDLCK,
                      .l_whence = SEEK_SET };
  int fd2;

  if (access == MEMBER_PEEK)
    return 0;
  if (is_blk) {
    fd2 = open (spec, (access == MEMBER_READ_WRITE ? O_RDWR : O_RDONLY) |
                O_CLOEXEC | O_EXCL);
    if (fd2 == -1) {
      member_err (err, errlen, spec, errno == EBUSY
                  ? "in use (mounted, or held by another program)" : "open", errno);
      return errno;
    }
    close (*fd);
    *fd = fd2;
    return 0;
  }
  if (fcntl (*fd, F_OFD_SETLK, &fl) == 0 || errno == ENOLCK || errno == EINVAL)
    return 0;
  if (errno == EAGAIN || errno == EACCES) {
    member_err (err, errlen, spec, "in use (locked by another server or program)", EBUSY);
    return EBUSY;
  }
  member_err (err, errlen, spec, "lock", errno);
  return errno;
}

/* Open a regular file or block device without ever blocking in open():
 * a FIFO opened for reading waits for a writer forever, and opening a
 * character device (a tty, a tape) can act on it.  So the type is checked
 * on the path first, and the open is non-blocking (the path may change in
 * between) and checked again on the descriptor; only then does the
 * descriptor become blocking for the member's I/O.  -1 with errno set and
 * *what naming the step that failed. */
static int
open_checked (const char *spec, int flags, const char **what)
{
  struct stat st;
  int fd, e;

  *what = "open";
  if (stat (spec, &st) == -1)
    return -1;
  *what = "not a regular file or block device";
  if (!S_ISREG (st.st_mode) && !S_ISBLK (st.st_mode)) {
    errno = EINVAL;
    return -1;
  }
  *what = "open";
  if ((fd = open (spec, flags | O_NONBLOCK | O_NOCTTY)) == -1)
    return -1;
  *what = "not a regular file or block device";
  if (fstat (fd, &st) == -1 || !(S_ISREG (st.st_mode) || S_ISBLK (st.st_mode)) ||
      fcntl (fd, F_SETFL, fcntl (fd, F_GETFL) & ~O_NONBLOCK) == -1) {
    e = S_ISREG (st.st_mode) || S_ISBLK (st.st_mode) ? errno : EINVAL;
    close (fd);
    errno = e;
    return -1;
  }
  return fd;
}

bool
member_has_storage (const struct member *m)
{
  return m->be == &file_backend;
}

bool
member_is_storage (const struct member *m, const struct stat *st)
{
  const struct file_member *f = (const struct file_member *) m;

  if (m->be != &file_backend)
    return false;
  if (f->is_blk)
    return S_ISBLK (st->st_mode) && st->st_rdev == f->dev;
  return S_ISREG (st->st_mode) && st->st_dev == f->dev && st->st_ino == f->ino;
}

struct member *
member_file_open (const char *spec, enum member_access access, char *err, size_t errlen)
{
  bool readonly = access != MEMBER_READ_WRITE;
  struct file_member *f;
  uint64_t size = 0;
  bool is_blk = false;
  struct stat st;
  const char *what;
  int fd, r;

  fd = open_checked (spec, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC, &what);
  if (fd == -1) {
    r = errno;
    member_err (err, errlen, spec, what, r);
    errno = r;
    return NULL;
  }
  r = file_size (fd, spec, &st, &size, err, errlen);
  is_blk = r == 0 && S_ISBLK (st.st_mode);
  if (r == 0)
    r = hold (&fd, spec, is_blk, access, err, errlen);
  f = r ? NULL : calloc (1, sizeof *f);
  if (r == 0 && (f == NULL || member_init (&f->m, &file_backend, spec, size,
                                           true, readonly))) {
    r = ENOMEM;
    member_err (err, errlen, spec, "open", r);
  }
  if (r) {
    free (f);
    close (fd);
    errno = r;
    return NULL;
  }
  f->fd = fd;
  f->is_blk = is_blk;
  f->dev = is_blk ? st.st_rdev : st.st_dev;
  f->ino = is_blk ? 0 : st.st_ino;
  {
    struct statfs sfs;
    f->sync_free = !is_blk && fstatfs (fd, &sfs) == 0 &&
      (sfs.f_type == 0x01021994 /* TMPFS_MAGIC */ ||
       sfs.f_type == 0x858458f6 /* RAMFS_MAGIC */);
  }
  return &f->m;
}
