/* nbdkit-raid: unit test of the member backends and mio_run (member.h).
 *
 * What it proves:
 *   - file members: FUA/plain/multi-iov writes read back; flush; zero reads
 *     back as zeroes and keeps the file size; reads, writes and zeroes past
 *     the end are EIO and never extend the file; a file that shrank under
 *     us gives EIO, not a short success; readonly members refuse writes;
 *     open errors name the spec, the step and the cause.
 *   - mio_run: malformed ops fail alone with EINVAL, the return value is
 *     the first error in array order; hundreds of random batches over four
 *     file members (and four threads running batches at once) match a
 *     shadow copy byte for byte; the pool restarts after mio_shutdown.
 *   - custom members: calls happen in array order, one per iov element,
 *     with the FUA flag passed on; a missing zero callback becomes writes
 *     of zeroes; errors stay with their op; close reaches the backend.
 *   - NBD members against real nbdkit servers: read/write/zero/flush,
 *     requests split to the server's advertised maximum (which rejects
 *     larger ones) and to 32 MiB otherwise, FUA and zero emulated with flush
 *     and writes when the server lacks them (checked in the server's log);
 *     a server error fails that op only and the member keeps working;
 *     three members each behind a 300 ms delay complete one batch in well
 *     under two delays; a member whose server dies (idle or mid-request)
 *     fails its op within seconds while the others succeed, and keeps
 *     failing fast; a stuck request, and a server that accepts but never
 *     completes the handshake, fail with ETIMEDOUT after the configured
 *     timeout; a member used before fork() works in the child, and the
 *     parent's dispatcher does not steal the child's replies.
 */

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "member.h"

/* ---- checks ---- */

static _Atomic unsigned checks, failures;

static void
fail_at (const char *file, int line, const char *fmt, ...)
{
  va_list ap;

  fprintf (stderr, "%s:%d: FAIL: ", file, line);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fputc ('\n', stderr);
  failures++;
}

#define CHECK(cond)                                                     \
  do {                                                                  \
    checks++;                                                           \
    if (!(cond))                                                        \
      fail_at (__FILE__, __LINE__, "%s", #cond);                        \
  } while (0)

#define CHECK_EQ(a, b)                                                  \
  do {                                                                  \
    long long a_ = (long long) (a), b_ = (long long) (b);               \
    checks++;                                                           \
    if (a_ != b_)                                                       \
      fail_at (__FILE__, __LINE__, "%s == %s: %lld != %lld",            \
               #a, #b, a_, b_);                                         \
  } while (0)

#define CHECK_ERR(a, e)                                                 \
  do {                                                                  \
    int a_ = (a), e_ = (e);                                             \
    checks++;                                                           \
    if (a_ != e_)                                                       \
      fail_at (__FILE__, __LINE__, "%s: got %d (%s), want %d (%s)",     \
               #a, a_, strerror (a_), e_, strerror (e_));               \
  } while (0)

#define CHECK_MEM(a, b, n)                                              \
  do {                                                                  \
    checks++;                                                           \
    if (memcmp ((a), (b), (n)) != 0)                                    \
      fail_at (__FILE__, __LINE__, "memcmp (%s, %s, %s) != 0",          \
               #a, #b, #n);                                             \
  } while (0)

/* ---- helpers ---- */

static char tmpdir[] = "/tmp/test-member.XXXXXX";

static uint64_t
rnd (uint64_t *s)
{
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static void
fill (void *buf, size_t len, uint64_t seed)
{
  uint8_t *p = buf;
  uint64_t s = seed | 1;

  for (size_t i = 0; i < len; i++)
    p[i] = rnd (&s) >> 24;
}

static bool
all_zero (const void *buf, size_t len)
{
  const uint8_t *p = buf;

  for (size_t i = 0; i < len; i++)
    if (p[i])
      return false;
  return true;
}

static double
now_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void
sleep_ms (unsigned ms)
{
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

  while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
    ;
}

static void
tmppath (char *out, size_t len, const char *name)
{
  snprintf (out, len, "%s/%s", tmpdir, name);
}

static void
make_file (const char *path, off_t size)
{
  int fd = open (path, O_RDWR | O_CREAT | O_TRUNC, 0600);

  if (fd == -1 || ftruncate (fd, size) == -1) {
    perror (path);
    exit (1);
  }
  close (fd);
}

static off_t
file_size_of (const char *path)
{
  struct stat st;

  return stat (path, &st) == 0 ? st.st_size : -1;
}

static struct mio
rw (struct member *m, enum mio_op op, struct iovec *iov, int iovcnt,
    uint64_t off, uint32_t flags)
{
  uint64_t len = 0;

  for (int i = 0; i < iovcnt; i++)
    len += iov[i].iov_len;
  return (struct mio) { .m = m, .op = op, .flags = flags, .off = off,
                        .len = len, .iov = iov, .iovcnt = iovcnt };
}

static int
run1 (struct mio io)
{
  return mio_run (&io, 1);
}

static int
zero1 (struct member *m, uint64_t off, uint64_t len, uint32_t flags)
{
  return run1 ((struct mio) { .m = m, .op = MIO_ZERO, .flags = flags,
                              .off = off, .len = len });
}

/* ---- file members ---- */

static void
test_file_errors (void)
{
  char path[PATH_MAX], err[512], want[PATH_MAX + 64];
  struct member *m;

  tmppath (path, sizeof path, "does-not-exist");
  errno = 0;
  m = member_open (path, MEMBER_READ_WRITE, err, sizeof err);
  CHECK (m == NULL);
  CHECK_ERR (errno, ENOENT);
  snprintf (want, sizeof want, "%s: open: %s", path, strerror (ENOENT));
  if (strcmp (err, want) != 0)
    fail_at (__FILE__, __LINE__, "message '%s', want '%s'", err, want);
  checks++;

  m = member_open ("/dev/null", MEMBER_READ_WRITE, err, sizeof err);
  CHECK (m == NULL);
  CHECK_ERR (errno, EINVAL);
  CHECK (strstr (err, "/dev/null: not a regular file or block device") == err);

  m = member_open ("", MEMBER_READ_WRITE, err, sizeof err);
  CHECK (m == NULL);
  CHECK_ERR (errno, EINVAL);
}

/* How a file member is held (member.h): exclusively for reading and
 * writing, shared by read-only servers, not at all by a peek. */
static void
test_file_holding (void)
{
  char path[PATH_MAX], err[512];
  struct member *rw, *sh1, *sh2, *pk;

  tmppath (path, sizeof path, "holding");
  make_file (path, 1 << 20);
  rw = member_open (path, MEMBER_READ_WRITE, err, sizeof err);
  CHECK (rw != NULL);
  errno = 0;
  CHECK (member_open (path, MEMBER_READ_SHARED, err, sizeof err) == NULL);
  CHECK_ERR (errno, EBUSY);
  CHECK (strstr (err, "in use (locked by another server or program)") != NULL);
  pk = member_open (path, MEMBER_PEEK, err, sizeof err);
  CHECK (pk != NULL);
  member_close (pk);
  member_close (rw);

  sh1 = member_open (path, MEMBER_READ_SHARED, err, sizeof err);
  sh2 = member_open (path, MEMBER_READ_SHARED, err, sizeof err);
  CHECK (sh1 != NULL && sh2 != NULL);
  errno = 0;
  CHECK (member_open (path, MEMBER_READ_WRITE, err, sizeof err) == NULL);
  CHECK_ERR (errno, EBUSY);
  member_close (sh1);
  errno = 0;
  CHECK (member_open (path, MEMBER_READ_WRITE, err, sizeof err) == NULL);
  CHECK_ERR (errno, EBUSY);                  /* the other reader still holds it */
  member_close (sh2);
  rw = member_open (path, MEMBER_READ_WRITE, err, sizeof err);
  CHECK (rw != NULL);
  if (rw)
    member_close (rw);
  unlink (path);
}

static void
test_file_basic (void)
{
  const size_t SZ = 4 << 20;
  char path[PATH_MAX], err[512];
  struct member *m, *ro;
  uint8_t *a = malloc (1 << 20), *b = malloc (1 << 20);
  struct iovec iov[3];

  tmppath (path, sizeof path, "basic");
  make_file (path, SZ);
  m = member_open (path, MEMBER_READ_WRITE, err, sizeof err);
  CHECK (m != NULL);
  if (m == NULL) {
    fprintf (stderr, "%s\n", err);
    exit (1);
  }
  CHECK_EQ (member_size (m), SZ);
  CHECK (!member_is_nbd (m));
  CHECK (member_can_fua (m));
  CHECK (strcmp (member_spec (m), path) == 0);
  CHECK_ERR (member_start (m), 0);

  /* FUA write at an unaligned offset, read back */
  fill (a, 65536, 1);
  CHECK_ERR (member_pwrite (m, a, 65536, 12345, true), 0);
  memset (b, 0, 65536);
  CHECK_ERR (member_pread (m, b, 65536, 12345), 0);
  CHECK_MEM (a, b, 65536);

  /* multi-iov write, read back with another split */
  fill (a, 6003, 2);
  iov[0] = (struct iovec) { a, 1000 };
  iov[1] = (struct iovec) { a + 1000, 5000 };
  iov[2] = (struct iovec) { a + 6000, 3 };
  CHECK_ERR (run1 (rw (m, MIO_WRITE, iov, 3, 100000, 0)), 0);
  memset (b, 0, 6003);
  iov[0] = (struct iovec) { b, 4001 };
  iov[1] = (struct iovec) { b + 4001, 2002 };
  CHECK_ERR (run1 (rw (m, MIO_READ, iov, 2, 100000, 0)), 0);
  CHECK_MEM (a, b, 6003);
  CHECK_ERR (member_flush (m), 0);

  /* zero in the middle of written data: zeroes inside, data around it */
  fill (a, 1 << 20, 3);
  CHECK_ERR (member_pwrite (m, a, 1 << 20, 1 << 20, false), 0);
  CHECK_ERR (zero1 (m, (1 << 20) + 100, 500000, MIO_FUA), 0);
  CHECK_ERR (member_pread (m, b, 1 << 20, 1 << 20), 0);
  CHECK_MEM (a, b, 100);
  CHECK (all_zero (b + 100, 500000));
  CHECK_MEM (a + 500100, b + 500100, (1 << 20) - 500100);
  CHECK_EQ (file_size_of (path), SZ);

  /* zero up to the very end keeps the size */
  CHECK_ERR (member_pwrite (m, a, 8192, SZ - 8192, false), 0);
  CHECK_ERR (zero1 (m, SZ - 5000, 5000, 0), 0);
  CHECK_ERR (member_pread (m, b, 8192, SZ - 8192), 0);
  CHECK_MEM (a, b, 8192 - 5000);
  CHECK (all_zero (b + 8192 - 5000, 5000));
  CHECK_EQ (file_size_of (path), SZ);

  /* past the end: EIO, and the file does not grow */
  CHECK_ERR (member_pread (m, b, 4096, SZ - 100), EIO);
  CHECK_ERR (member_pread (m, b, 1, SZ), EIO);
  CHECK_ERR (member_pwrite (m, a, 4096, SZ - 100, false), EIO);
  CHECK_ERR (member_pwrite (m, a, 1, UINT64_MAX, false), EIO);
  CHECK_ERR (zero1 (m, SZ - 100, 4096, 0), EIO);
  CHECK_EQ (file_size_of (path), SZ);
  CHECK_ERR (member_pread (m, b, 100, SZ - 100), 0);
  CHECK_ERR (member_pread (m, b, 0, SZ), 0);      /* empty: no-op */

  /* malformed ops */
  iov[0] = (struct iovec) { b, 10 };
  CHECK_ERR (run1 ((struct mio) { .m = m, .op = MIO_READ, .len = 11,
                                  .iov = iov, .iovcnt = 1 }), EINVAL);
  CHECK_ERR (run1 ((struct mio) { .m = m, .op = MIO_READ, .len = 10,
                                  .iov = iov, .iovcnt = 0 }), EINVAL);
  CHECK_ERR (run1 ((struct mio) { .m = NULL, .op = MIO_FLUSH }), EINVAL);
  CHECK_ERR (run1 ((struct mio) { .m = m, .op = (enum mio_op) 42 }), EINVAL);

  /* readonly */
  ro = member_open (path, MEMBER_PEEK, err, sizeof err);
  CHECK (ro != NULL);
  CHECK_ERR (member_pread (ro, b, 65536, 12345), 0);
  fill (a, 65536, 1);
  CHECK_MEM (a, b, 65536);
  CHECK_ERR (member_pwrite (ro, a, 10, 0, false), EROFS);
  CHECK_ERR (zero1 (ro, 0, 10, 0), EROFS);
  CHECK_ERR (member_flush (ro), 0);
  member_close (ro);

  /* the file shrinks under us: a read over the new end is EIO */
  CHECK (truncate (path, 2 << 20) == 0);
  CHECK_ERR (member_pread (m, b, 8192, (2 << 20) - 100), EIO);
  iov[0] = (struct iovec) { b, 50 };
  iov[1] = (struct iovec) { b + 50, 8000 };
  CHECK_ERR (run1 (rw (m, MIO_READ, iov, 2, (2 << 20) - 100, 0)), EIO);
  CHECK_ERR (member_pread (m, b, 100, (2 << 20) - 100), 0);
  member_close (m);
  free (a);
  free (b);
}

/* ---- random batches over file members against a shadow copy ---- */

#define NFILES 4
#define FILE_SZ (8 << 20)
#define SLOT (64 << 10)
#define NSLOTS (FILE_SZ / SLOT)
#define MAXOPS 24

static struct member *fm[NFILES];
static uint8_t *shadow[NFILES];

struct stress {
  unsigned slot_base, nslots, batches;
  uint64_t seed;
};

static void *
stress_run (void *arg)
{
  struct stress *st = arg;
  uint64_t s = st->seed;
  uint8_t *buf = malloc ((size_t) MAXOPS * SLOT);
  struct mio ios[MAXOPS];
  struct iovec iov[MAXOPS][3];

  for (unsigned it = 0; it < st->batches; it++) {
    unsigned n = 1 + rnd (&s) % MAXOPS, used[MAXOPS];
    int r;

    for (unsigned i = 0; i < n; i++) {
      unsigned f, slot, key, kind = rnd (&s) % 20;
      uint64_t soff, len, off;
      uint8_t *p = buf + (size_t) i * SLOT;
      bool dup;

      do {                      /* a distinct (member, slot) per op */
        f = rnd (&s) % NFILES;
        slot = st->slot_base + rnd (&s) % st->nslots;
        key = f * NSLOTS + slot;
        dup = false;
        for (unsigned j = 0; j < i; j++)
          dup |= used[j] == key;
      } while (dup);
      used[i] = key;
      soff = rnd (&s) % (SLOT - 1);
      len = 1 + rnd (&s) % (SLOT - soff);
      off = (uint64_t) slot * SLOT + soff;
      if (kind < 2) {
        ios[i] = (struct mio) { .m = fm[f], .op = MIO_FLUSH };
        continue;
      }
      if (kind < 5) {
        ios[i] = (struct mio) { .m = fm[f], .op = MIO_ZERO, .off = off,
                                .len = len, .flags = kind == 4 ? MIO_FUA : 0 };
        continue;
      }
      {
        uint64_t c1 = rnd (&s) % (len + 1), c2 = c1 + rnd (&s) % (len - c1 + 1);
        iov[i][0] = (struct iovec) { p, c1 };
        iov[i][1] = (struct iovec) { p + c1, c2 - c1 };
        iov[i][2] = (struct iovec) { p + c2, len - c2 };
      }
      if (kind < 12) {
        fill (p, len, rnd (&s));
        ios[i] = rw (fm[f], MIO_WRITE, iov[i], 3, off, kind == 11 ? MIO_FUA : 0);
      }
      else {
        memset (p, 0xee, len);
        ios[i] = rw (fm[f], MIO_READ, iov[i], 3, off, 0);
      }
    }

    r = mio_run (ios, n);
    CHECK_ERR (r, 0);
    for (unsigned i = 0; i < n; i++) {
      struct mio *io = &ios[i];
      unsigned f = 0;
      uint8_t *p = buf + (size_t) i * SLOT;

      while (fm[f] != io->m)
        f++;
      CHECK_ERR (io->err, 0);
      switch (io->op) {
      case MIO_READ:
        CHECK_MEM (p, shadow[f] + io->off, io->len);
        break;
      case MIO_WRITE:
        memcpy (shadow[f] + io->off, p, io->len);
        break;
      case MIO_ZERO:
        memset (shadow[f] + io->off, 0, io->len);
        break;
      case MIO_FLUSH:
        break;
      }
    }
  }
  free (buf);
  return NULL;
}

/* The files, read through a separate descriptor, equal the shadow. */
static void
check_files_against_shadow (void)
{
  uint8_t *b = malloc (FILE_SZ);

  for (int f = 0; f < NFILES; f++) {
    int fd = open (member_spec (fm[f]), O_RDONLY);
    CHECK (fd >= 0);
    CHECK_EQ (pread (fd, b, FILE_SZ, 0), FILE_SZ);
    CHECK_MEM (b, shadow[f], FILE_SZ);
    close (fd);
    CHECK_EQ (file_size_of (member_spec (fm[f])), FILE_SZ);
  }
  free (b);
}

static void
test_file_batches (void)
{
  char path[PATH_MAX], err[512];
  struct stress one = { 0, NSLOTS, 400, 0x1234567 };
  struct stress par[4];
  pthread_t th[4];

  for (int f = 0; f < NFILES; f++) {
    char name[32];
    snprintf (name, sizeof name, "batch%d", f);
    tmppath (path, sizeof path, name);
    make_file (path, FILE_SZ);
    fm[f] = member_open (path, MEMBER_READ_WRITE, err, sizeof err);
    CHECK (fm[f] != NULL);
    shadow[f] = calloc (1, FILE_SZ);
  }

  /* one batch of 64 writes across the 4 members, then 64 reads */
  {
    struct mio ios[64];
    struct iovec iov[64];
    uint8_t *w = malloc (64 * 65536), *r = malloc (64 * 65536);

    for (int i = 0; i < 64; i++) {
      uint64_t off = (uint64_t) (i / 4) * 262144 + i * 7;
      fill (w + i * 65536, 65536, 100 + i);
      iov[i] = (struct iovec) { w + i * 65536, 65536 };
      ios[i] = rw (fm[i % 4], MIO_WRITE, &iov[i], 1, off, i % 3 == 0 ? MIO_FUA : 0);
      memcpy (shadow[i % 4] + off, w + i * 65536, 65536);
    }
    CHECK_ERR (mio_run (ios, 64), 0);
    for (int i = 0; i < 64; i++) {
      CHECK_ERR (ios[i].err, 0);
      iov[i] = (struct iovec) { r + i * 65536, 65536 };
      ios[i].op = MIO_READ;
    }
    CHECK_ERR (mio_run (ios, 64), 0);
    CHECK_MEM (w, r, 64 * 65536);
    free (w);
    free (r);
  }

  /* errors stay with their op; the return value is the first in order */
  {
    uint8_t b[4][512];
    struct iovec iov[4] = { { b[0], 512 }, { b[1], 512 }, { b[2], 512 }, { b[3], 512 } };
    struct mio ios[6] = {
      rw (fm[0], MIO_READ, &iov[0], 1, 0, 0),
      rw (fm[1], MIO_READ, &iov[1], 1, FILE_SZ - 10, 0),   /* EIO */
      { .m = fm[2], .op = MIO_FLUSH },
      { .m = NULL, .op = MIO_READ },                       /* EINVAL */
      rw (fm[3], MIO_READ, &iov[3], 1, 4096, 0),
      rw (fm[2], MIO_READ, &iov[2], 1, 0, 0),
    };
    CHECK_ERR (mio_run (ios, 6), EIO);
    CHECK_ERR (ios[0].err, 0);
    CHECK_ERR (ios[1].err, EIO);
    CHECK_ERR (ios[2].err, 0);
    CHECK_ERR (ios[3].err, EINVAL);
    CHECK_ERR (ios[4].err, 0);
    CHECK_ERR (ios[5].err, 0);
    CHECK_MEM (b[3], shadow[3] + 4096, 512);
  }

  stress_run (&one);
  check_files_against_shadow ();

  /* four callers at once, each on its own slots of every member */
  for (int t = 0; t < 4; t++) {
    par[t] = (struct stress) { t * (NSLOTS / 4), NSLOTS / 4, 150, 777 + t };
    pthread_create (&th[t], NULL, stress_run, &par[t]);
  }
  for (int t = 0; t < 4; t++)
    pthread_join (th[t], NULL);
  check_files_against_shadow ();

  /* evicted from the page cache: reads go to the pool, still correct */
  {
    struct mio ios[64];
    struct iovec iov[64];
    uint8_t *r = malloc (64 * 65536);

    for (int f = 0; f < NFILES; f++) {
      int fd = open (member_spec (fm[f]), O_RDONLY);
      CHECK (fd >= 0 && fdatasync (fd) == 0);
      CHECK (posix_fadvise (fd, 0, 0, POSIX_FADV_DONTNEED) == 0);
      close (fd);
    }
    for (int i = 0; i < 64; i++) {
      iov[i] = (struct iovec) { r + i * 65536, 65536 };
      ios[i] = rw (fm[i % 4], MIO_READ, &iov[i], 1, (uint64_t) i * 65536 + 3, 0);
    }
    CHECK_ERR (mio_run (ios, 64), 0);
    for (int i = 0; i < 64; i++)
      CHECK_MEM (r + i * 65536, shadow[i % 4] + (uint64_t) i * 65536 + 3, 65536);
    free (r);
  }

  /* the pool can be shut down (twice) and comes back on demand */
  mio_shutdown ();
  mio_shutdown ();
  one.batches = 50;
  one.seed = 99;
  stress_run (&one);
  check_files_against_shadow ();

  for (int f = 0; f < NFILES; f++) {
    member_close (fm[f]);
    free (shadow[f]);
  }
}

/* ---- custom members ---- */

enum call { C_READ, C_WRITE, C_FLUSH, C_ZERO };

struct call_rec {
  int member;
  enum call call;
  uint64_t off, len;
  bool fua;
};

static struct call_rec calls[256];
static int ncalls;

struct cpriv {
  int id;
  uint8_t *data;
  uint64_t fail_off;          /* pread at this offset fails with EIO */
  bool closed;
};

static void
record (struct cpriv *p, enum call c, uint64_t off, uint64_t len, bool fua)
{
  if (ncalls < 256)
    calls[ncalls++] = (struct call_rec) { p->id, c, off, len, fua };
}

static int
c_pread (void *priv, void *buf, size_t len, uint64_t off)
{
  struct cpriv *p = priv;

  record (p, C_READ, off, len, false);
  if (off == p->fail_off)
    return EIO;
  memcpy (buf, p->data + off, len);
  return 0;
}

static int
c_pwrite (void *priv, const void *buf, size_t len, uint64_t off, bool fua)
{
  struct cpriv *p = priv;

  record (p, C_WRITE, off, len, fua);
  memcpy (p->data + off, buf, len);
  return 0;
}

static int
c_flush (void *priv)
{
  record (priv, C_FLUSH, 0, 0, false);
  return 0;
}

static int
c_zero (void *priv, size_t len, uint64_t off, bool fua)
{
  struct cpriv *p = priv;

  record (p, C_ZERO, off, len, fua);
  memset (p->data + off, 0, len);
  return 0;
}

static void
c_close (void *priv)
{
  ((struct cpriv *) priv)->closed = true;
}

#define CHECK_CALL(i, mem, c, o, l, f)                                  \
  do {                                                                  \
    CHECK_EQ (calls[i].member, mem);                                    \
    CHECK_EQ (calls[i].call, c);                                        \
    CHECK_EQ (calls[i].off, o);                                         \
    CHECK_EQ (calls[i].len, l);                                         \
    CHECK_EQ (calls[i].fua, f);                                         \
  } while (0)

static void
test_custom (void)
{
  const uint64_t SZ = 4 << 20;
  struct member_custom_ops ops = { c_pread, c_pwrite, c_flush, NULL, c_close };
  struct member_custom_ops zops = { c_pread, c_pwrite, c_flush, c_zero, NULL };
  struct cpriv p0 = { 0, calloc (1, SZ), UINT64_MAX, false };
  struct cpriv p1 = { 1, calloc (1, SZ), 4096, false };
  struct member *m0 = member_new_custom ("c0", SZ, &ops, &p0);
  struct member *m1 = member_new_custom (NULL, SZ, &zops, &p1);
  uint8_t a[3000], b[3000], c[100];
  struct iovec wv[2] = { { a, 1000 }, { a + 1000, 2000 } };
  struct iovec rv[1] = { { b, 3000 } };
  struct iovec cv[1] = { { c, 100 } };

  CHECK (m0 != NULL && m1 != NULL);
  CHECK (member_new_custom ("x", SZ, NULL, NULL) == NULL);
  CHECK (strcmp (member_spec (m0), "c0") == 0);
  CHECK (strcmp (member_spec (m1), "custom") == 0);
  CHECK_EQ (member_size (m0), SZ);
  CHECK (!member_is_nbd (m0));
  CHECK (member_can_fua (m0));

  fill (a, sizeof a, 5);
  memset (p0.data + (1 << 20), 0xaa, 3 << 20);
  {
    struct mio ios[6] = {
      rw (m1, MIO_WRITE, wv, 2, 8192, MIO_FUA),
      rw (m0, MIO_WRITE, wv, 2, 100, MIO_FUA),
      { .m = m0, .op = MIO_ZERO, .off = 1 << 20, .len = (5 << 20) / 2, .flags = MIO_FUA },
      { .m = m1, .op = MIO_ZERO, .off = 0, .len = 4096 },
      { .m = m0, .op = MIO_FLUSH },
      rw (m1, MIO_READ, cv, 1, 4096, 0),                  /* injected EIO */
    };

    ncalls = 0;
    CHECK_ERR (mio_run (ios, 6), EIO);
    CHECK_ERR (ios[0].err, 0);
    CHECK_ERR (ios[4].err, 0);
    CHECK_ERR (ios[5].err, EIO);
    CHECK_EQ (ncalls, 10);
    CHECK_CALL (0, 1, C_WRITE, 8192, 1000, true);
    CHECK_CALL (1, 1, C_WRITE, 9192, 2000, true);
    CHECK_CALL (2, 0, C_WRITE, 100, 1000, true);
    CHECK_CALL (3, 0, C_WRITE, 1100, 2000, true);
    CHECK_CALL (4, 0, C_WRITE, 1 << 20, 1 << 20, true);   /* zero -> writes */
    CHECK_CALL (5, 0, C_WRITE, 2 << 20, 1 << 20, true);
    CHECK_CALL (6, 0, C_WRITE, 3 << 20, 1 << 19, true);
    CHECK_CALL (7, 1, C_ZERO, 0, 4096, false);
    CHECK_CALL (8, 0, C_FLUSH, 0, 0, false);
    CHECK_CALL (9, 1, C_READ, 4096, 100, false);
  }
  CHECK (all_zero (p0.data + (1 << 20), (5 << 20) / 2));
  CHECK_EQ (p0.data[(1 << 20) + (5 << 20) / 2], 0xaa);
  CHECK_ERR (run1 (rw (m0, MIO_READ, rv, 1, 100, 0)), 0);
  CHECK_MEM (a, b, 3000);
  CHECK_ERR (member_pread (m1, b, 3000, 8192), 0);
  CHECK_MEM (a, b, 3000);
  CHECK_ERR (member_pread (m1, b, 3000, SZ - 1), EIO);

  member_close (m0);
  member_close (m1);
  CHECK (p0.closed);
  CHECK (!p1.closed);
  free (p0.data);
  free (p1.data);
}

/* ---- nbdkit servers ---- */

struct server {
  pid_t pid;
  char sock[PATH_MAX];
  char pidfile[PATH_MAX];
  char logfile[PATH_MAX];
  char uri[PATH_MAX + 32];
};

static const char *nbdkit;
static struct server servers[32];
static int nservers;

static const char *
find_nbdkit (void)
{
  static char buf[PATH_MAX];
  const char *env = getenv ("NBDKIT");
  const char *path = getenv ("PATH");

  if (env && access (env, X_OK) == 0)
    return env;
  if (access ("/usr/sbin/nbdkit", X_OK) == 0)
    return "/usr/sbin/nbdkit";
  while (path && *path) {
    size_t n = strcspn (path, ":");
    snprintf (buf, sizeof buf, "%.*s/nbdkit", (int) n, path);
    if (access (buf, X_OK) == 0)
      return buf;
    path += n + (path[n] == ':');
  }
  return NULL;
}

/* nbdkit -U SOCK -P PIDFILE -f ARGS... for s; returns once it accepts
 * clients (nbdkit writes the pidfile when it is ready). */
static void
server_spawn (struct server *s, const char *const *args)
{
  const char *pidfile = s->pidfile, *logfile = s->logfile;
  const char *argv[32];
  int k = 0;

  argv[k++] = nbdkit;
  argv[k++] = "-U";
  argv[k++] = s->sock;
  argv[k++] = "-P";
  argv[k++] = pidfile;
  argv[k++] = "-f";
  argv[k++] = "--exit-with-parent";     /* even if this test crashes */
  while (*args && k < 31)
    argv[k++] = *args++;
  argv[k] = NULL;

  s->pid = fork ();
  if (s->pid == -1) {
    perror ("fork");
    exit (1);
  }
  if (s->pid == 0) {
    int fd = open (logfile, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0) {
      dup2 (fd, 1);
      dup2 (fd, 2);
    }
    execv (nbdkit, (char **) argv);
    _exit (127);
  }

  for (int i = 0; i < 1000; i++) {     /* the pidfile appears when ready */
    int status;
    if (file_size_of (pidfile) > 0)
      return;
    if (waitpid (s->pid, &status, WNOHANG) == s->pid) {
      fprintf (stderr, "nbdkit exited early, see %s\n", logfile);
      s->pid = 0;
      exit (1);
    }
    sleep_ms (10);
  }
  fprintf (stderr, "nbdkit did not start, see %s\n", logfile);
  exit (1);
}

static struct server *
server_start (const char *const *args)
{
  struct server *s = &servers[nservers++];

  snprintf (s->sock, sizeof s->sock, "%s/nbd%d.sock", tmpdir, nservers - 1);
  snprintf (s->pidfile, sizeof s->pidfile, "%s/nbd%d.pid", tmpdir, nservers - 1);
  snprintf (s->logfile, sizeof s->logfile, "%s/nbd%d.stderr", tmpdir, nservers - 1);
  snprintf (s->uri, sizeof s->uri, "nbd+unix:///?socket=%s/nbd%d.sock",
            tmpdir, nservers - 1);
  server_spawn (s, args);
  return s;
}

static void
server_kill (struct server *s)
{
  if (s->pid > 0) {
    kill (s->pid, SIGKILL);
    waitpid (s->pid, NULL, 0);
    s->pid = 0;
  }
}

/* A new server on the same socket (so the same URI): a member that lost
 * its server finds this one when it reconnects. */
static void
server_restart (struct server *s, const char *const *args)
{
  server_kill (s);
  unlink (s->sock);          /* nbdkit killed leaves it behind */
  unlink (s->pidfile);
  server_spawn (s, args);
}

static struct member *
nbd_open (struct server *s)
{
  char err[512];
  struct member *m = member_open (s->uri, MEMBER_READ_WRITE, err, sizeof err);

  if (m == NULL) {
    fprintf (stderr, "member_open: %s\n", err);
    exit (1);
  }
  return m;
}

static void
test_nbd_basic (void)
{
  static const char *const args[] = { "memory", "64M", NULL };
  struct server *s = server_start (args);
  struct member *m = nbd_open (s);
  const size_t BIG = 40 << 20;
  uint8_t *a = malloc (BIG), *b = malloc (BIG);
  struct iovec iov[3];

  CHECK (member_is_nbd (m));
  CHECK_EQ (member_size (m), 64 << 20);
  CHECK (strcmp (member_spec (m), s->uri) == 0);
  CHECK_ERR (member_start (m), 0);
  CHECK_ERR (member_start (m), 0);

  fill (a, 65536, 11);
  CHECK_ERR (member_pwrite (m, a, 65536, 777, true), 0);
  CHECK_ERR (member_pread (m, b, 65536, 777), 0);
  CHECK_MEM (a, b, 65536);

  fill (a, 9000, 12);
  iov[0] = (struct iovec) { a, 1 };
  iov[1] = (struct iovec) { a + 1, 8000 };
  iov[2] = (struct iovec) { a + 8001, 999 };
  CHECK_ERR (run1 (rw (m, MIO_WRITE, iov, 3, 3 << 20, 0)), 0);
  iov[0] = (struct iovec) { b, 4500 };
  iov[1] = (struct iovec) { b + 4500, 4500 };
  CHECK_ERR (run1 (rw (m, MIO_READ, iov, 2, 3 << 20, 0)), 0);
  CHECK_MEM (a, b, 9000);
  CHECK_ERR (member_flush (m), 0);

  /* larger than libnbd's 32 MiB default: must be split */
  fill (a, BIG, 13);
  CHECK_ERR (member_pwrite (m, a, BIG, 5, false), 0);
  memset (b, 0, BIG);
  CHECK_ERR (member_pread (m, b, BIG, 5), 0);
  CHECK_MEM (a, b, BIG);

  /* zero inside the written data */
  CHECK_ERR (zero1 (m, 1000, 3 << 20, MIO_FUA), 0);
  CHECK_ERR (member_pread (m, b, 5 << 20, 5), 0);
  CHECK_MEM (a, b, 995);
  CHECK (all_zero (b + 995, 3 << 20));
  CHECK_MEM (a + 995 + (3 << 20), b + 995 + (3 << 20), (2 << 20) - 995);

  CHECK_ERR (member_pread (m, b, 4096, (64 << 20) - 100), EIO);
  CHECK_ERR (member_pwrite (m, a, 4096, (64 << 20) - 100, false), EIO);

  /* a batch of 32 writes then 32 reads on one handle */
  {
    struct mio ios[32];
    struct iovec v[32];

    fill (a, 32 * 65536, 14);
    for (int i = 0; i < 32; i++) {
      v[i] = (struct iovec) { a + i * 65536, 65536 };
      ios[i] = rw (m, MIO_WRITE, &v[i], 1, (uint64_t) i * 100000, i & 1 ? MIO_FUA : 0);
    }
    CHECK_ERR (mio_run (ios, 32), 0);
    for (int i = 0; i < 32; i++) {
      v[i] = (struct iovec) { b + i * 65536, 65536 };
      ios[i].op = MIO_READ;
    }
    CHECK_ERR (mio_run (ios, 32), 0);
    CHECK_MEM (a, b, 32 * 65536);
  }

  member_close (m);
  server_kill (s);
  free (a);
  free (b);
}

/* The server refuses requests over 64K; we must split to its maximum. */
static void
test_nbd_max_block (void)
{
  static const char *const args[] = {
    "--filter=blocksize-policy", "memory", "16M",
    "blocksize-maximum=64K", "blocksize-error-policy=error", NULL
  };
  struct server *s = server_start (args);
  struct member *m = nbd_open (s);
  size_t len = (1 << 20) + 3;
  uint8_t *a = malloc (len), *b = malloc (len);

  fill (a, len, 21);
  CHECK_ERR (member_pwrite (m, a, len, 7, true), 0);
  CHECK_ERR (member_pread (m, b, len, 7), 0);
  CHECK_MEM (a, b, len);
  CHECK_ERR (zero1 (m, 7, len, 0), 0);
  CHECK_ERR (member_pread (m, b, len, 7), 0);
  CHECK (all_zero (b, len));
  member_close (m);
  server_kill (s);
  free (a);
  free (b);
}

/* Count lines of the log filter's output containing every given word. */
static int
log_count (const char *path, const char *w1, const char *w2)
{
  char line[1024];
  FILE *fp = fopen (path, "r");
  int n = 0;

  if (fp == NULL)
    return -1;
  while (fgets (line, sizeof line, fp))
    if (strstr (line, w1) && (w2 == NULL || strstr (line, w2)))
      n++;
  fclose (fp);
  return n;
}

/* A vectored write goes out as one command (a far member pays a round per
 * command), and still splits at the server's maximum; reads of it match. */
static void
test_nbd_vectored_write (void)
{
  char logfile[PATH_MAX], logarg[PATH_MAX + 16];
  const char *args[] = {
    "--filter=log", "--filter=blocksize-policy", "memory", "16M", logarg,
    "blocksize-maximum=64K", "blocksize-error-policy=error", NULL
  };
  struct server *s;
  struct member *m;
  uint8_t *a = malloc (200000), *b = malloc (200000);
  struct iovec iov[3];

  tmppath (logfile, sizeof logfile, "vec.log");
  snprintf (logarg, sizeof logarg, "logfile=%s", logfile);
  s = server_start (args);
  m = nbd_open (s);
  fill (a, 200000, 41);
  iov[0] = (struct iovec) { a, 512 };
  iov[1] = (struct iovec) { a + 512, 4096 };
  iov[2] = (struct iovec) { a + 4608, 3584 };
  CHECK_ERR (run1 (rw (m, MIO_WRITE, iov, 3, 1 << 20, MIO_FUA)), 0);
  iov[0] = (struct iovec) { a + 8192, 100000 };
  iov[1] = (struct iovec) { a + 108192, 91808 };
  CHECK_ERR (run1 (rw (m, MIO_WRITE, iov, 2, 2 << 20, 0)), 0);
  CHECK_ERR (member_pread (m, b, 8192, 1 << 20), 0);
  CHECK_MEM (a, b, 8192);
  CHECK_ERR (member_pread (m, b, 191808, 2 << 20), 0);
  CHECK_MEM (a + 8192, b, 191808);
  member_close (m);
  server_kill (s);
  CHECK_EQ (log_count (logfile, " Write ", "count=0x2000 "), 1);   /* 3 iovs, 8K */
  CHECK_EQ (log_count (logfile, " Write ", "count=0x10000 "), 2);  /* 187.3K: 64K, */
  CHECK_EQ (log_count (logfile, " Write ", "count=0xed40 "), 1);   /* 64K, 59.3K */
  free (a);
  free (b);
}

/* No FUA and no zero on the server: flush after the writes, zero by writing. */
static void
test_nbd_emulation (void)
{
  char logfile[PATH_MAX], logarg[PATH_MAX + 16];
  const char *args[] = {
    "--filter=log", "--filter=fua", "--filter=nozero", "memory", "16M",
    logarg, NULL
  };
  struct server *s;
  struct member *m;
  uint8_t a[8192], *b = malloc (3 << 20);

  tmppath (logfile, sizeof logfile, "emul.log");
  snprintf (logarg, sizeof logarg, "logfile=%s", logfile);
  s = server_start (args);
  m = nbd_open (s);
  CHECK (!member_can_fua (m));

  fill (a, sizeof a, 31);
  CHECK_ERR (member_pwrite (m, a, sizeof a, 0, true), 0);
  CHECK_ERR (member_pread (m, b, sizeof a, 0), 0);
  CHECK_MEM (a, b, sizeof a);
  memset (b, 0x55, 3 << 20);
  CHECK_ERR (member_pwrite (m, b, 3 << 20, 100, false), 0);
  CHECK_ERR (zero1 (m, 100, 3 << 20, MIO_FUA), 0);
  memset (b, 0x55, 3 << 20);
  CHECK_ERR (member_pread (m, b, 3 << 20, 100), 0);
  CHECK (all_zero (b, 3 << 20));
  member_close (m);
  server_kill (s);

  CHECK_EQ (log_count (logfile, " Write ", "fua=1"), 0);
  CHECK_EQ (log_count (logfile, " Zero ", NULL), 0);
  CHECK_EQ (log_count (logfile, " Flush ", NULL), 2);   /* one per FUA op */
  CHECK_EQ (log_count (logfile, " Write ", "count=0x100000 "), 3); /* zero */
  free (b);
}

/* The fastest of 3 runs of n member I/Os over the 3 members m[] (n 3:
 * a read each; n 6: a write and a read each), in ms. */
static double
nbd_parallel_ms (struct member **m, struct mio *ios, struct iovec *iov, int n)
{
  double best = 1e9;

  for (int run = 0; run < 3; run++) {
    double t0, ms;
    for (int i = 0; i < n; i++)
      ios[i] = rw (m[i % 3], n == 6 && i < 3 ? MIO_WRITE : MIO_READ, &iov[i], 1,
                   (uint64_t) i * 8192, 0);
    t0 = now_ms ();
    CHECK_ERR (mio_run (ios, n), 0);
    ms = now_ms () - t0;
    best = ms < best ? ms : best;
  }
  return best;
}

static void
test_nbd_parallel (void)
{
  static const char *const args[] = {
    "--filter=delay", "memory", "16M", "rdelay=300ms", "wdelay=300ms", NULL
  };
  struct server *s[3];
  struct member *m[3];
  uint8_t buf[6][4096];
  struct iovec iov[6];
  struct mio ios[6];
  double ms;

  for (int i = 0; i < 3; i++) {
    s[i] = server_start (args);
    m[i] = nbd_open (s[i]);
  }
  for (int i = 0; i < 6; i++)
    iov[i] = (struct iovec) { buf[i], 4096 };

  /* Elapsed time shows the parallelism: one read per member takes one
   * delay (300 ms), two per member in flight together on each handle one
   * too, where serialized they take two or more.  A stall of the whole
   * machine only ever adds time, so each is timed 3 times and the fastest
   * counts. */
  ms = nbd_parallel_ms (m, ios, iov, 3);
  fprintf (stderr, "3 NBD reads behind 300 ms delays: %.0f ms (fastest of 3)\n", ms);
  CHECK (ms >= 290);
  CHECK (ms < 600);
  ms = nbd_parallel_ms (m, ios, iov, 6);
  fprintf (stderr, "6 NBD reads/writes on 3 members behind 300 ms delays: %.0f ms "
           "(fastest of 3)\n", ms);
  CHECK (ms < 600);

  for (int i = 0; i < 3; i++) {
    member_close (m[i]);
    server_kill (s[i]);
  }
}

/* A write too large for the socket buffer, issued while another op holds
 * the dispatcher in a poll for the reply (a read the server delays 4 s),
 * goes out at once: the submitter rings the doorbell for its unsent
 * bytes, and the dispatcher polls for POLLOUT.  Without the ring the write
 * would wait for the read's reply.  The write starts 1.5 s after the read,
 * when the dispatcher's idle look (1 s) has passed and it waits for that
 * reply alone. */
struct slow_read {
  struct member *m;
  uint8_t buf[4096];
  int err;
};

static void *
slow_read_run (void *arg)
{
  struct slow_read *r = arg;

  r->err = member_pread (r->m, r->buf, sizeof r->buf, 0);
  return NULL;
}

static void
test_nbd_unsent_write (void)
{
  static const char *const args[] = {
    "--filter=delay", "memory", "64M", "rdelay=4", NULL
  };
  struct server *s = server_start (args);
  struct member *m = nbd_open (s);
  const size_t BIG = 16 << 20;
  uint8_t *a = malloc (BIG);
  struct slow_read r = { .m = m };
  pthread_t th;
  double t0, ms;

  fill (a, BIG, 21);
  CHECK_ERR (member_pwrite (m, a, 4096, 0, false), 0);    /* not delayed */
  CHECK (pthread_create (&th, NULL, slow_read_run, &r) == 0);
  usleep (1500 * 1000);           /* the read in flight, its reply 2.5 s off */
  t0 = now_ms ();
  CHECK_ERR (member_pwrite (m, a, BIG, 1 << 20, false), 0);
  ms = now_ms () - t0;
  fprintf (stderr, "16 MiB write beside a delayed read: %.0f ms\n", ms);
  CHECK (ms < 1500);
  CHECK (pthread_join (th, NULL) == 0);
  CHECK_ERR (r.err, 0);
  member_close (m);
  server_kill (s);
  free (a);
}

/* A server error fails that op only; the member keeps working. */
static void
test_nbd_server_error (void)
{
  char inject[PATH_MAX], filearg[PATH_MAX + 32];
  const char *args[] = {
    "--filter=error", "memory", "16M", "error=ENOSPC", "error-pwrite-rate=100%",
    filearg, NULL
  };
  struct server *s;
  struct member *m;
  uint8_t a[4096], b[4096];
  int fd;

  tmppath (inject, sizeof inject, "inject");
  snprintf (filearg, sizeof filearg, "error-pwrite-file=%s", inject);
  s = server_start (args);
  m = nbd_open (s);
  fill (a, sizeof a, 51);
  CHECK_ERR (member_pwrite (m, a, sizeof a, 0, false), 0);
  fd = open (inject, O_WRONLY | O_CREAT, 0600);
  close (fd);
  CHECK_ERR (member_pwrite (m, b, sizeof b, 0, false), ENOSPC);
  CHECK_ERR (member_pread (m, b, sizeof b, 0), 0);
  CHECK_MEM (a, b, sizeof a);
  unlink (inject);
  fill (a, sizeof a, 52);
  CHECK_ERR (member_pwrite (m, a, sizeof a, 0, true), 0);
  CHECK_ERR (member_pread (m, b, sizeof b, 0), 0);
  CHECK_MEM (a, b, sizeof a);
  member_close (m);
  server_kill (s);
}

struct killer {
  struct server *s;
  unsigned after_ms;
};

static void *
kill_later (void *arg)
{
  struct killer *k = arg;

  sleep_ms (k->after_ms);
  kill (k->s->pid, SIGKILL);
  return NULL;
}

static void
test_nbd_death (void)
{
  static const char *const mem[] = { "memory", "16M", NULL };
  static const char *const slow[] = {
    "--filter=delay", "memory", "16M", "rdelay=10", NULL
  };
  struct server *s[3], *sd;
  struct member *m[3], *md;
  uint8_t buf[3][4096];
  struct iovec iov[3];
  struct mio ios[3];
  double t0, ms;

  memset (buf, 0, sizeof buf);
  for (int i = 0; i < 3; i++) {
    s[i] = server_start (mem);
    m[i] = nbd_open (s[i]);
    iov[i] = (struct iovec) { buf[i], 4096 };
    CHECK_ERR (member_pwrite (m[i], buf[i], 4096, 0, false), 0);
  }

  /* an idle member's server dies */
  server_kill (s[2]);
  for (int i = 0; i < 3; i++)
    ios[i] = rw (m[i], MIO_READ, &iov[i], 1, 0, 0);
  t0 = now_ms ();
  CHECK (mio_run (ios, 3) != 0);
  ms = now_ms () - t0;
  CHECK_ERR (ios[0].err, 0);
  CHECK_ERR (ios[1].err, 0);
  CHECK (ios[2].err != 0);
  CHECK (ms < 3000);
  t0 = now_ms ();
  CHECK (member_pread (m[2], buf[2], 4096, 0) != 0);   /* and stays failed */
  CHECK (member_flush (m[2]) != 0);
  CHECK (now_ms () - t0 < 100);
  CHECK_ERR (member_pread (m[0], buf[0], 4096, 0), 0);

  /* a server dies while our request is in flight */
  sd = server_start (slow);
  md = nbd_open (sd);
  {
    struct killer k = { sd, 300 };
    pthread_t th;

    ios[0] = rw (md, MIO_READ, &iov[0], 1, 0, 0);
    ios[1] = rw (m[1], MIO_READ, &iov[1], 1, 0, 0);
    pthread_create (&th, NULL, kill_later, &k);
    t0 = now_ms ();
    CHECK (mio_run (ios, 2) != 0);
    ms = now_ms () - t0;
    pthread_join (th, NULL);
    CHECK (ios[0].err != 0);
    CHECK_ERR (ios[1].err, 0);
    CHECK (ms >= 250);
    CHECK (ms < 3000);
    fprintf (stderr, "in-flight request on a killed server failed after %.0f ms: %s\n",
             ms, strerror (ios[0].err));
  }
  server_kill (sd);
  member_close (md);

  for (int i = 0; i < 3; i++) {
    member_close (m[i]);
    server_kill (s[i]);
  }
}

static void
test_nbd_timeout (void)
{
  static const char *const slow[] = {
    "--filter=delay", "memory", "16M", "rdelay=10", NULL
  };
  struct server *s = server_start (slow);
  struct member *m = nbd_open (s);
  uint8_t buf[4096];
  double t0, ms;

  member_set_io_timeout (1);
  CHECK_ERR (member_pwrite (m, buf, 4096, 0, false), 0);   /* not delayed */
  t0 = now_ms ();
  CHECK_ERR (member_pread (m, buf, 4096, 0), ETIMEDOUT);
  ms = now_ms () - t0;
  CHECK (ms >= 900);
  CHECK (ms < 3000);
  t0 = now_ms ();
  CHECK_ERR (member_pwrite (m, buf, 4096, 0, false), ETIMEDOUT);
  CHECK (now_ms () - t0 < 100);
  member_set_io_timeout (30);
  member_close (m);
  server_kill (s);
}

/* A timeout turned on while the member's dispatcher sleeps idle with none
 * (0) bounds the next op: the dispatcher looks at it within its idle look
 * (1 s), which needs no doorbell.  The read is delayed 8 s. */
static void
test_nbd_timeout_enabled (void)
{
  static const char *const slow[] = {
    "--filter=delay", "memory", "16M", "rdelay=8", NULL
  };
  struct server *s = server_start (slow);
  struct member *m;
  uint8_t buf[4096] = { 0 };
  double t0, ms;

  member_set_io_timeout (0);
  m = nbd_open (s);
  CHECK_ERR (member_pwrite (m, buf, 4096, 0, false), 0);   /* not delayed */
  usleep (200 * 1000);            /* the dispatcher sleeps, idle */
  member_set_io_timeout (1);
  t0 = now_ms ();
  CHECK_ERR (member_pread (m, buf, 4096, 0), ETIMEDOUT);
  ms = now_ms () - t0;
  fprintf (stderr, "read after the timeout was turned on failed after %.0f ms\n", ms);
  CHECK (ms >= 900);
  CHECK (ms < 4000);
  member_set_io_timeout (30);
  member_close (m);
  server_kill (s);
}

/* A member used before fork() works in the child (its dispatcher and the
 * pool start again there), and the parent's parked dispatcher does not
 * read the child's replies off the shared connection. */
static int
fork_child (struct member *m, struct member *f, const uint8_t *pat)
{
  uint8_t b[4][4096];
  struct iovec iov[4];
  struct mio ios[4];
  int bad = 0;

  member_set_io_timeout (2);
  for (int i = 0; i < 200; i++) {
    bad |= member_pread (m, b[0], 4096, (i % 16) * 4096) != 0;
    bad |= memcmp (b[0], pat + (i % 16) * 4096, 4096) != 0;
  }
  for (int i = 0; i < 4; i++) {
    iov[i] = (struct iovec) { b[i], 4096 };
    ios[i] = rw (i < 2 ? f : m, MIO_READ, &iov[i], 1, i * 4096, 0);
  }
  bad |= mio_run (ios, 4) != 0;
  for (int i = 0; i < 4; i++)
    bad |= memcmp (b[i], pat + i * 4096, 4096) != 0;
  return bad;
}

static void
test_nbd_fork (void)
{
  static const char *const args[] = { "memory", "16M", NULL };
  struct server *s = server_start (args);
  struct member *m = nbd_open (s), *f;
  char path[PATH_MAX], err[512];
  uint8_t pat[65536], b[65536];
  struct iovec iov[2] = { { b, 32768 }, { b + 32768, 32768 } };
  struct mio ios[2];
  int status = -1;
  pid_t pid;

  tmppath (path, sizeof path, "fork");
  make_file (path, 1 << 20);
  f = member_open (path, MEMBER_READ_WRITE, err, sizeof err);
  CHECK (f != NULL);
  fill (pat, sizeof pat, 41);
  ios[0] = rw (m, MIO_WRITE, &iov[0], 1, 0, 0);       /* starts both the */
  ios[1] = rw (f, MIO_WRITE, &iov[1], 1, 32768, 0);   /* dispatcher and */
  memcpy (b, pat, 65536);                             /* the pool */
  CHECK_ERR (mio_run (ios, 2), 0);
  CHECK_ERR (member_pwrite (m, pat + 32768, 32768, 32768, false), 0);
  CHECK_ERR (member_pwrite (f, pat, 32768, 0, false), 0);

  pid = fork ();
  if (pid == 0)
    _exit (fork_child (m, f, pat));
  CHECK (pid > 0);
  CHECK (waitpid (pid, &status, 0) == pid);
  CHECK (WIFEXITED (status) && WEXITSTATUS (status) == 0);

  memset (b, 0, sizeof b);
  CHECK_ERR (member_pread (m, b, 65536, 0), 0);
  CHECK_MEM (b, pat, 65536);
  member_close (m);
  member_close (f);
  server_kill (s);
}

static void
test_nbd_open_errors (void)
{
  static const char *const ro[] = { "-r", "memory", "1M", NULL };
  char err[512], uri[PATH_MAX + 64], want[PATH_MAX + 128];
  struct server *s;
  struct member *m;
  uint8_t buf[512];

  snprintf (uri, sizeof uri, "nbd+unix:///?socket=%s/no-such.sock", tmpdir);
  errno = 0;
  m = member_open (uri, MEMBER_READ_WRITE, err, sizeof err);
  CHECK (m == NULL);
  CHECK (errno != 0);
  snprintf (want, sizeof want, "%s: connect: ", uri);
  if (strncmp (err, want, strlen (want)) != 0)
    fail_at (__FILE__, __LINE__, "message '%s', want '%s...'", err, want);
  checks++;

  /* a server that accepts but never speaks: bounded by the I/O timeout */
  {
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    double t0;

    snprintf (sa.sun_path, sizeof sa.sun_path, "%s/mute.sock", tmpdir);
    snprintf (uri, sizeof uri, "nbd+unix:///?socket=%s", sa.sun_path);
    CHECK (bind (fd, (struct sockaddr *) &sa, sizeof sa) == 0);
    CHECK (listen (fd, 4) == 0);
    member_set_io_timeout (1);
    t0 = now_ms ();
    m = member_open (uri, MEMBER_READ_WRITE, err, sizeof err);
    CHECK (m == NULL);
    CHECK_ERR (errno, ETIMEDOUT);
    CHECK (now_ms () - t0 >= 900 && now_ms () - t0 < 3000);
    snprintf (want, sizeof want, "%s: connect: %s", uri, strerror (ETIMEDOUT));
    if (strcmp (err, want) != 0)
      fail_at (__FILE__, __LINE__, "message '%s', want '%s'", err, want);
    checks++;
    member_set_io_timeout (30);
    close (fd);
  }

  s = server_start (ro);
  m = member_open (s->uri, MEMBER_READ_WRITE, err, sizeof err);
  CHECK (m == NULL);
  CHECK_ERR (errno, EROFS);
  CHECK (strstr (err, "export is read-only") != NULL);
  m = member_open (s->uri, MEMBER_PEEK, err, sizeof err);
  CHECK (m != NULL);
  if (m) {
    CHECK_ERR (member_pread (m, buf, sizeof buf, 0), 0);
    CHECK_ERR (member_pwrite (m, buf, sizeof buf, 0, false), EROFS);
    member_close (m);
  }
  server_kill (s);
}

/* ---- reconnect ---- */

#define CHECK_PREFIX(msg, want)                                         \
  do {                                                                  \
    checks++;                                                           \
    if (strncmp ((msg), (want), strlen (want)) != 0)                    \
      fail_at (__FILE__, __LINE__, "message '%s', want '%s...'",        \
               (msg), (want));                                          \
  } while (0)

/* "<uri>: reconnect: " + rest, for CHECK_PREFIX. */
static const char *
rc_msg (char *buf, size_t len, const struct member *m, const char *rest)
{
  snprintf (buf, len, "%s: reconnect: %s", member_spec (m), rest);
  return buf;
}

/* Arguments of an nbdkit file plugin server on path. */
struct file_args {
  char arg[PATH_MAX + 8];
  const char *argv[3];
};

static const char *const *
file_server_args (struct file_args *fa, const char *path)
{
  snprintf (fa->arg, sizeof fa->arg, "file=%s", path);
  fa->argv[0] = "file";
  fa->argv[1] = fa->arg;
  fa->argv[2] = NULL;
  return fa->argv;
}

/* Files and custom members are never down and cannot reconnect. */
static void
test_reconnect_unsupported (void)
{
  const uint64_t SZ = 1 << 20;
  struct member_custom_ops ops = { c_pread, c_pwrite, c_flush, NULL, NULL };
  struct cpriv p = { 0, calloc (1, SZ), UINT64_MAX, false };
  char path[PATH_MAX], err[512] = "", want[PATH_MAX + 64];
  struct member *f, *c;

  tmppath (path, sizeof path, "rc-file");
  make_file (path, SZ);
  f = member_open (path, MEMBER_READ_WRITE, err, sizeof err);
  c = member_new_custom ("rc-custom", SZ, &ops, &p);
  CHECK (f != NULL && c != NULL);
  if (f == NULL || c == NULL)
    return;
  CHECK (!member_is_down (f));
  CHECK (!member_is_down (c));
  CHECK_ERR (member_reconnect (f, err, sizeof err), ENOTSUP);
  CHECK_PREFIX (err, rc_msg (want, sizeof want, f, strerror (ENOTSUP)));
  CHECK_ERR (member_reconnect (c, err, sizeof err), ENOTSUP);
  CHECK_PREFIX (err, rc_msg (want, sizeof want, c, strerror (ENOTSUP)));
  CHECK_ERR (member_pread (f, err, 64, 0), 0);
  member_close (f);
  member_close (c);
  free (p.data);
}

/* The member's server is killed: ops fail at once and the member is down;
 * reconnecting fails while nothing listens (ECONNREFUSED: the socket file
 * is left behind; ENOENT once it is gone), and succeeds against a new
 * server on the same socket serving the same file: what was written
 * before reads back, new writes work. */
static void
test_nbd_reconnect_restart (void)
{
  const size_t N = 65536;
  struct file_args fa;
  const char *const *args;
  char path[PATH_MAX], err[512] = "", want[PATH_MAX + 128];
  uint8_t *a = malloc (N), *b = malloc (N);
  struct server *s;
  struct member *m;
  double t0;

  tmppath (path, sizeof path, "rc-restart.img");
  make_file (path, 16 << 20);
  args = file_server_args (&fa, path);
  s = server_start (args);
  m = nbd_open (s);

  CHECK (!member_is_down (m));
  t0 = now_ms ();
  CHECK_ERR (member_reconnect (m, err, sizeof err), 0);   /* up: nothing to do */
  CHECK (now_ms () - t0 < 100);
  fill (a, N, 61);
  CHECK_ERR (member_pwrite (m, a, N, 1 << 20, true), 0);

  server_kill (s);
  t0 = now_ms ();
  CHECK (member_pread (m, b, N, 1 << 20) != 0);
  CHECK (now_ms () - t0 < 1000);
  CHECK (member_is_down (m));          /* already when the op returned */
  t0 = now_ms ();
  CHECK (member_pwrite (m, a, 4096, 0, false) != 0);
  CHECK (member_flush (m) != 0);
  CHECK (now_ms () - t0 < 100);

  CHECK_ERR (member_reconnect (m, err, sizeof err), ECONNREFUSED);
  CHECK_PREFIX (err, rc_msg (want, sizeof want, m, "connect: "));
  CHECK (member_is_down (m));
  unlink (s->sock);
  CHECK_ERR (member_reconnect (m, err, sizeof err), ENOENT);
  CHECK_PREFIX (err, rc_msg (want, sizeof want, m, "connect: "));
  CHECK (member_is_down (m));
  CHECK (member_pread (m, b, 4096, 0) != 0);

  server_restart (s, args);
  CHECK (member_is_down (m));          /* nothing reconnects by itself */
  CHECK_ERR (member_reconnect (m, err, sizeof err), 0);
  CHECK (!member_is_down (m));
  memset (b, 0, N);
  CHECK_ERR (member_pread (m, b, N, 1 << 20), 0);
  CHECK_MEM (a, b, N);
  fill (a, N, 62);
  CHECK_ERR (member_pwrite (m, a, N, 3 << 20, false), 0);
  CHECK_ERR (member_flush (m), 0);
  memset (b, 0, N);
  CHECK_ERR (member_pread (m, b, N, 3 << 20), 0);
  CHECK_MEM (a, b, N);
  CHECK_ERR (member_reconnect (m, err, sizeof err), 0);
  member_close (m);
  server_kill (s);
  free (a);
  free (b);
}

/* A server that stops answering (SIGSTOP): the op fails with ETIMEDOUT
 * after the timeout and the member is down; a reconnect to the stopped
 * server (the kernel accepts, nobody shakes hands) fails with ETIMEDOUT
 * after the timeout too; once the server runs again (SIGCONT), reconnect
 * succeeds and the data is there. */
static void
test_nbd_reconnect_stopped (void)
{
  static const char *const args[] = { "memory", "16M", NULL };
  struct server *s = server_start (args);
  struct member *m = nbd_open (s);
  char err[512] = "", want[PATH_MAX + 128];
  uint8_t a[8192], b[8192];
  double t0, ms;
  int status;

  member_set_io_timeout (1);
  fill (a, sizeof a, 71);
  CHECK_ERR (member_pwrite (m, a, sizeof a, 4096, false), 0);
  kill (s->pid, SIGSTOP);
  CHECK (waitpid (s->pid, &status, WUNTRACED) == s->pid && WIFSTOPPED (status));
  t0 = now_ms ();
  CHECK_ERR (member_pread (m, b, sizeof b, 4096), ETIMEDOUT);
  ms = now_ms () - t0;
  fprintf (stderr, "read from a stopped server failed after %.0f ms\n", ms);
  CHECK (ms >= 900 && ms < 3000);
  CHECK (member_is_down (m));

  t0 = now_ms ();
  CHECK_ERR (member_reconnect (m, err, sizeof err), ETIMEDOUT);
  ms = now_ms () - t0;
  CHECK (ms >= 900 && ms < 3000);
  CHECK_PREFIX (err, rc_msg (want, sizeof want, m, "connect: "));
  CHECK (member_is_down (m));

  kill (s->pid, SIGCONT);
  CHECK_ERR (member_reconnect (m, err, sizeof err), 0);
  CHECK (!member_is_down (m));
  memset (b, 0, sizeof b);
  CHECK_ERR (member_pread (m, b, sizeof b, 4096), 0);
  CHECK_MEM (a, b, sizeof a);
  fill (a, sizeof a, 72);
  CHECK_ERR (member_pwrite (m, a, sizeof a, 0, true), 0);
  CHECK_ERR (member_pread (m, b, sizeof b, 0), 0);
  CHECK_MEM (a, b, sizeof a);
  member_set_io_timeout (30);
  member_close (m);
  server_kill (s);
}

/* A smaller export is refused and the member stays down; a larger one is
 * taken, the member keeps its size. */
static void
test_nbd_reconnect_smaller (void)
{
  struct file_args fa;
  char path[PATH_MAX], small[PATH_MAX], big[PATH_MAX], err[512] = "";
  char want[PATH_MAX + 128];
  uint8_t a[4096], b[4096];
  struct server *s;
  struct member *m;
  double t0;

  tmppath (path, sizeof path, "rc-16M.img");
  tmppath (small, sizeof small, "rc-8M.img");
  tmppath (big, sizeof big, "rc-32M.img");
  make_file (path, 16 << 20);
  make_file (small, 8 << 20);
  make_file (big, 32 << 20);
  s = server_start (file_server_args (&fa, path));
  m = nbd_open (s);
  CHECK_EQ (member_size (m), 16 << 20);
  fill (a, sizeof a, 81);
  CHECK_ERR (member_pwrite (m, a, sizeof a, 0, false), 0);

  server_kill (s);
  CHECK (member_pread (m, b, sizeof b, 0) != 0);
  CHECK (member_is_down (m));
  server_restart (s, file_server_args (&fa, small));
  CHECK_ERR (member_reconnect (m, err, sizeof err), EIO);
  snprintf (want, sizeof want,
            "%s: reconnect: export is 8388608 bytes, smaller than the member "
            "(16777216 bytes): %s", member_spec (m), strerror (EIO));
  if (strcmp (err, want) != 0)
    fail_at (__FILE__, __LINE__, "message '%s', want '%s'", err, want);
  checks++;
  CHECK (member_is_down (m));
  t0 = now_ms ();
  CHECK (member_pread (m, b, sizeof b, 0) != 0);
  CHECK (now_ms () - t0 < 100);
  CHECK_EQ (member_size (m), 16 << 20);

  server_restart (s, file_server_args (&fa, big));
  CHECK_ERR (member_reconnect (m, err, sizeof err), 0);
  CHECK_EQ (member_size (m), 16 << 20);
  CHECK_ERR (member_pwrite (m, a, sizeof a, (16 << 20) - 4096, false), 0);
  CHECK_ERR (member_pread (m, b, sizeof b, (16 << 20) - 4096), 0);
  CHECK_MEM (a, b, sizeof a);
  CHECK_ERR (member_pread (m, b, sizeof b, 16 << 20), EIO);   /* still 16M */

  server_restart (s, file_server_args (&fa, path));
  CHECK (member_pread (m, b, sizeof b, 0) != 0);
  CHECK_ERR (member_reconnect (m, err, sizeof err), 0);
  CHECK_ERR (member_pread (m, b, sizeof b, 0), 0);
  CHECK_MEM (a, b, sizeof a);
  member_close (m);
  server_kill (s);
}

/* ---- reconnect under load ---- */

#define CONC_WORKERS 4
#define CONC_RECONNECTORS 2
#define CONC_ROUNDS 6
#define CONC_BLOCK 4096

struct conc {
  struct member *m;
  _Atomic bool stop_workers, stop_reconnectors;
  _Atomic unsigned ok, failed, bad;
  _Atomic unsigned rc_ok, rc_busy, rc_other, rc_bad;
};

struct conc_worker {
  struct conc *cc;
  unsigned id;
  uint64_t ok_seq, try_seq;    /* last acknowledged / attempted write */
  uint64_t rnd;
  pthread_t th;
};

/* Worker id's block after its write number seq (0: never written, zero). */
static void
conc_pattern (uint8_t *blk, unsigned id, uint64_t seq)
{
  memset (blk, 0, CONC_BLOCK);
  if (seq == 0)
    return;
  memcpy (blk, &seq, sizeof seq);
  fill (blk + 8, CONC_BLOCK - 8, ((uint64_t) id << 40) ^ seq);
}

/* A successful read must show a write the worker attempted since its last
 * acknowledged one (a write cut off by the kill may have landed or not). */
static bool
conc_check (struct conc_worker *w, const uint8_t *blk)
{
  uint8_t want[CONC_BLOCK];
  uint64_t seq;

  memcpy (&seq, blk, sizeof seq);
  if (seq < w->ok_seq || seq > w->try_seq)
    return false;
  conc_pattern (want, w->id, seq);
  return memcmp (want, blk, CONC_BLOCK) == 0;
}

static void
conc_count (struct conc_worker *w, int r)
{
  if (r == 0)
    w->cc->ok++;
  else if (r > 0)
    w->cc->failed++;
  else {
    fprintf (stderr, "worker %u: op returned %d\n", w->id, r);
    w->cc->bad++;
  }
}

/* Write, read back, sometimes flush or a two-op batch, until told to stop.
 * Every op either succeeds or fails with an errno; data read is checked. */
static int
conc_step (struct conc_worker *w)
{
  struct member *m = w->cc->m;
  uint64_t off = (uint64_t) w->id * 65536;
  uint8_t blk[CONC_BLOCK], rd[CONC_BLOCK];
  int r;

  switch (rnd (&w->rnd) % 4) {
  case 0:
  case 1:
    conc_pattern (blk, w->id, ++w->try_seq);
    r = member_pwrite (m, blk, CONC_BLOCK, off, rnd (&w->rnd) & 1);
    if (r == 0)
      w->ok_seq = w->try_seq;
    return r;
  case 2:
    r = member_pread (m, rd, CONC_BLOCK, off);
    if (r == 0 && !conc_check (w, rd)) {
      fprintf (stderr, "worker %u: read back a block it never wrote\n", w->id);
      w->cc->bad++;
    }
    return r;
  default: {
    struct iovec v[2] = { { rd, CONC_BLOCK }, { blk, CONC_BLOCK } };
    struct mio ios[3] = {
      rw (m, MIO_READ, &v[0], 1, off, 0),
      rw (m, MIO_READ, &v[1], 1, off + 32768, 0),   /* never written */
      { .m = m, .op = MIO_FLUSH },
    };

    r = mio_run (ios, 3);
    for (int i = 0; i < 3; i++)
      if (ios[i].err < 0)
        w->cc->bad++;
    if (ios[0].err == 0 && !conc_check (w, rd)) {
      fprintf (stderr, "worker %u: batch read back a block it never wrote\n", w->id);
      w->cc->bad++;
    }
    if (ios[1].err == 0 && !all_zero (blk, CONC_BLOCK))
      w->cc->bad++;
    return r;
  }
  }
}

static void *
conc_worker_run (void *arg)
{
  struct conc_worker *w = arg;

  while (!w->cc->stop_workers)
    conc_count (w, conc_step (w));
  return NULL;
}

static void *
conc_reconnector_run (void *arg)
{
  struct conc *cc = arg;
  char err[512] = "", want[PATH_MAX + 64];

  snprintf (want, sizeof want, "%s: reconnect: ", member_spec (cc->m));
  while (!cc->stop_reconnectors) {
    bool down = member_is_down (cc->m);
    int r = member_reconnect (cc->m, err, sizeof err);

    if (r == 0)
      cc->rc_ok += down;
    else if (r == EBUSY)
      cc->rc_busy++;
    else if (r > 0)
      cc->rc_other++;
    if (r < 0 || (r && strncmp (err, want, strlen (want)) != 0)) {
      fprintf (stderr, "reconnect returned %d: %s\n", r, err);
      cc->rc_bad++;
    }
    sleep_ms (1);                      /* pacing, not synchronisation */
  }
  return NULL;
}

/* Wait (bounded) until *counter has passed target; false on timeout. */
static bool
conc_wait (_Atomic unsigned *counter, unsigned target)
{
  double t0 = now_ms ();

  while (*counter < target)
    if (now_ms () - t0 > 15000)
      return false;
    else
      sleep_ms (1);
  return true;
}

/* Workers hammer one member while its server is killed and restarted
 * (each restart forks here, which also cuts reconnects short) and two
 * threads reconnect it over and over: nothing hangs or crashes, every op
 * succeeds or fails with an errno, reads only ever show data written, and
 * after the last reconnect every op succeeds. */
static void
test_nbd_reconnect_load (void)
{
  struct file_args fa;
  const char *const *args;
  char path[PATH_MAX], err[512] = "";
  struct conc cc = { .m = NULL };
  struct conc_worker w[CONC_WORKERS];
  pthread_t rt[CONC_RECONNECTORS];
  struct server *s;
  bool progress = true;

  tmppath (path, sizeof path, "rc-load.img");
  make_file (path, 16 << 20);
  args = file_server_args (&fa, path);
  s = server_start (args);
  cc.m = nbd_open (s);
  member_set_io_timeout (2);

  for (unsigned i = 0; i < CONC_WORKERS; i++) {
    w[i] = (struct conc_worker) { .cc = &cc, .id = i, .rnd = 1000 + i };
    pthread_create (&w[i].th, NULL, conc_worker_run, &w[i]);
  }
  for (int i = 0; i < CONC_RECONNECTORS; i++)
    pthread_create (&rt[i], NULL, conc_reconnector_run, &cc);

  for (int round = 0; round < CONC_ROUNDS && progress; round++) {
    progress = conc_wait (&cc.ok, cc.ok + 50);      /* up and busy */
    server_kill (s);                                /* ops in flight */
    progress = progress && conc_wait (&cc.failed, cc.failed + 1);
    server_restart (s, args);
  }
  progress = progress && conc_wait (&cc.ok, cc.ok + 50);
  CHECK (progress);

  cc.stop_workers = true;
  for (unsigned i = 0; i < CONC_WORKERS; i++)
    pthread_join (w[i].th, NULL);
  cc.stop_reconnectors = true;
  for (int i = 0; i < CONC_RECONNECTORS; i++)
    pthread_join (rt[i], NULL);
  fprintf (stderr, "reconnect under load: %u ops ok, %u failed; reconnects: "
           "%u ok, %u busy, %u failed\n", cc.ok, cc.failed, cc.rc_ok,
           cc.rc_busy, cc.rc_other);

  CHECK_EQ (cc.bad, 0);
  CHECK_EQ (cc.rc_bad, 0);
  CHECK (cc.failed > 0);
  CHECK (cc.rc_ok >= CONC_ROUNDS);

  /* the server is up: after a final reconnect every op succeeds */
  CHECK_ERR (member_reconnect (cc.m, err, sizeof err), 0);
  CHECK (!member_is_down (cc.m));
  for (unsigned i = 0; i < CONC_WORKERS; i++)
    for (int k = 0; k < 20; k++)
      CHECK_ERR (conc_step (&w[i]), 0);
  CHECK_EQ (cc.bad, 0);
  member_set_io_timeout (30);
  member_close (cc.m);
  server_kill (s);
}

/* ---- reconnect against close, fork and a second reconnect ---- */

/* A listener on path that never answers: accept() in the test tells it a
 * reconnect is in its handshake, deterministically. */
static int
mute_listen (const char *path)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

  snprintf (sa.sun_path, sizeof sa.sun_path, "%s", path);
  unlink (path);
  if (fd == -1 || bind (fd, (struct sockaddr *) &sa, sizeof sa) == -1
      || listen (fd, 4) == -1) {
    perror ("mute listener");
    exit (1);
  }
  return fd;
}

/* The next connection to the listener, or -1 after 5 s. */
static int
mute_accept (int lfd)
{
  struct pollfd pfd = { .fd = lfd, .events = POLLIN };

  if (poll (&pfd, 1, 5000) != 1)
    return -1;
  return accept4 (lfd, NULL, NULL, SOCK_CLOEXEC);
}

struct rc_thread {
  struct member *m;
  pthread_t th;
  int r;
  char err[512];
};

static void *
rc_thread_run (void *arg)
{
  struct rc_thread *t = arg;

  t->r = member_reconnect (t->m, t->err, sizeof t->err);
  return NULL;
}

/* Kill s and fail one op on m, so m is down. */
static void
make_down (struct server *s, struct member *m)
{
  uint8_t b[512];

  server_kill (s);
  CHECK (member_pread (m, b, sizeof b, 0) != 0);
  CHECK (member_is_down (m));
}

/* With the I/O timeout at 30 s, a reconnect stuck in its handshake:
 *   - a second reconnect returns EBUSY at once, ops fail at once;
 *   - fork() does not wait for it: it returns ECANCELED, the member is
 *     down in parent and child, and a later reconnect works;
 *   - member_close does not wait for it either: it returns ECANCELED. */
static void
test_nbd_reconnect_races (void)
{
  static const char *const args[] = { "memory", "16M", NULL };
  struct server *s = server_start (args);
  struct member *m = nbd_open (s);
  struct rc_thread t = { .m = m };
  char err[512] = "", want[PATH_MAX + 128];
  uint8_t b[512];
  int lfd, cfd, status = -1;
  double t0, ms;
  pid_t pid;

  CHECK_ERR (member_pwrite (m, b, sizeof b, 0, false), 0);
  make_down (s, m);
  lfd = mute_listen (s->sock);

  pthread_create (&t.th, NULL, rc_thread_run, &t);
  cfd = mute_accept (lfd);
  CHECK (cfd >= 0);
  t0 = now_ms ();
  CHECK_ERR (member_reconnect (m, err, sizeof err), EBUSY);
  CHECK_PREFIX (err, rc_msg (want, sizeof want, m, "another reconnect is under way"));
  CHECK (member_pread (m, b, sizeof b, 0) != 0);
  CHECK (member_is_down (m));
  CHECK (now_ms () - t0 < 2000);         /* not the 30 s I/O timeout */

  t0 = now_ms ();
  pid = fork ();
  if (pid == 0)
    _exit (member_is_down (m) ? 0 : 1);
  ms = now_ms () - t0;
  pthread_join (t.th, NULL);
  fprintf (stderr, "fork during a reconnect returned after %.0f ms\n", ms);
  CHECK (ms < 3000);                     /* not the 30 s I/O timeout */
  CHECK_ERR (t.r, ECANCELED);
  CHECK_PREFIX (t.err, rc_msg (want, sizeof want, m, "connect: "));
  CHECK (pid > 0 && waitpid (pid, &status, 0) == pid);
  CHECK (WIFEXITED (status) && WEXITSTATUS (status) == 0);
  CHECK (member_is_down (m));
  close (cfd);

  /* member_reconnect_within: a listener that never answers holds the
   * attempt for the given bound, not the I/O timeout (30 s here). */
  t0 = now_ms ();
  CHECK_ERR (member_reconnect_within (m, 300 * UINT64_C(1000000), err, sizeof err), ETIMEDOUT);
  ms = now_ms () - t0;
  fprintf (stderr, "a bounded reconnect to a mute listener returned after %.0f ms\n", ms);
  CHECK (ms >= 250 && ms < 5000);
  CHECK_PREFIX (err, rc_msg (want, sizeof want, m, "connect: "));
  CHECK (member_is_down (m));
  close (lfd);

  server_restart (s, args);
  CHECK_ERR (member_reconnect (m, err, sizeof err), 0);
  CHECK_ERR (member_pwrite (m, b, sizeof b, 0, false), 0);

  make_down (s, m);
  lfd = mute_listen (s->sock);
  pthread_create (&t.th, NULL, rc_thread_run, &t);
  cfd = mute_accept (lfd);
  CHECK (cfd >= 0);
  t0 = now_ms ();
  member_close (m);
  ms = now_ms () - t0;
  pthread_join (t.th, NULL);
  fprintf (stderr, "close during a reconnect returned after %.0f ms\n", ms);
  CHECK (ms < 3000);                     /* not the 30 s I/O timeout */
  CHECK_ERR (t.r, ECANCELED);
  close (cfd);
  close (lfd);
}

/* ---- main ---- */

static int
rm_entry (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  remove (path);
  return 0;
}

static void
cleanup (void)
{
  for (int i = 0; i < nservers; i++)
    server_kill (&servers[i]);
  nftw (tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int
main (void)
{
  if (mkdtemp (tmpdir) == NULL) {
    perror ("mkdtemp");
    return 1;
  }
  atexit (cleanup);

  test_file_errors ();
  test_file_holding ();
  test_file_basic ();
  test_file_batches ();
  test_custom ();
  test_reconnect_unsupported ();

  nbdkit = find_nbdkit ();
  if (nbdkit) {
    test_nbd_basic ();
    test_nbd_max_block ();
    test_nbd_vectored_write ();
    test_nbd_emulation ();
    test_nbd_parallel ();
    test_nbd_unsent_write ();
    test_nbd_server_error ();
    test_nbd_death ();
    test_nbd_timeout ();
    test_nbd_timeout_enabled ();
    test_nbd_fork ();
    test_nbd_open_errors ();
    test_nbd_reconnect_restart ();
    test_nbd_reconnect_stopped ();
    test_nbd_reconnect_smaller ();
    test_nbd_reconnect_load ();
    test_nbd_reconnect_races ();
  }
  mio_shutdown ();

  if (failures) {
    fprintf (stderr, "test-member: %u of %u checks failed\n", failures, checks);
    return 1;
  }
  if (nbdkit == NULL) {
    printf ("test-member: %u checks passed; SKIP NBD parts: nbdkit not found\n",
            checks);
    return 77;
  }
  printf ("test-member: %u checks passed\n", checks);
  return 0;
}
