/* nbdkit-raid: the write gather (raidcore/gather.h), through the array API
 * on the fixture's in-memory members, whose operation counters show what
 * reached them.
 *
 *   1. A stream of small writes in order makes whole rows: no member is read
 *      (no read-modify-write), RAID5 and RAID6, aligned and unaligned pieces.
 *   2. A held write is read back at once (G1), is on no member before a
 *      flush and on the members after it (G3).
 *   3. Order (G2): a FUA write over part of held bytes lands after them; a
 *      whole-row write over held bytes supersedes them; a zero over held
 *      bytes reads back as zeros, before and after the flush.
 *   4. A held write whose drain fails beyond redundancy fails the next
 *      flush (G3).
 *   5. The ager writes held bytes without a flush, within a bound (G4).
 *   6. A clean close writes held bytes (G4).
 *   7. Writers on eight threads (streams, FUA, zeroes, random pieces, each
 *      reading its own writes back) with a flusher and the ager running;
 *      then the model and every row's parity.
 *   8. The fixture's random workload with member failures, levels 4, 5, 6.
 *   9. The writers of 7 while a reshape doubles the chunk (the rows, and so
 *      the units, change under held bytes: G5); then every byte, also
 *      with a member's reads failing (parity right in the new layout).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fixture.h"
#include "util.h"

#define CHUNK 65536u

static unsigned long
member_reads (const struct fixture *f)
{
  unsigned long n = 0;
  for (int i = 0; i < f->n; i++)
    n += __atomic_load_n (&f->dev[i].nreads, __ATOMIC_RELAXED);
  return n;
}

static unsigned long
member_writes (const struct fixture *f)
{
  unsigned long n = 0;
  for (int i = 0; i < f->n; i++)
    n += __atomic_load_n (&f->dev[i].nwrites, __ATOMIC_RELAXED);
  return n;
}

static void
fill (uint8_t *b, uint64_t len, uint64_t seed)
{
  for (uint64_t i = 0; i < len; i++)
    b[i] = (uint8_t) (seed * 131 + i * 7 + (i >> 9));
}

static void
write_model (struct fixture *f, const uint8_t *b, uint64_t len, uint64_t off,
             unsigned flags, const char *what)
{
  int r = raid_array_pwrite (f->a, b, len, off, flags);
  CHECK (r == 0, "%s: pwrite %" PRIu64 "+%" PRIu64 ": %s", what, off, len, strerror (r));
  memcpy (f->model + off, b, len);
}

static void
check_range (struct fixture *f, uint64_t off, uint64_t len, const char *what)
{
  uint8_t *b = malloc (len);
  int r = raid_array_pread (f->a, b, len, off);
  CHECK (r == 0 && memcmp (b, f->model + off, len) == 0,
         "%s: read %" PRIu64 "+%" PRIu64 " differs from what was written (r=%d)",
         what, off, len, r);
  free (b);
}

static void
flush_and_verify (struct fixture *f, const char *what)
{
  int r = raid_array_flush (f->a);
  CHECK (r == 0, "%s: flush: %s", what, strerror (r));
  verify_contents (f, what);
  CHECK (verify_parity (f, 0) == 0, "%s: parity mismatch on the members", what);
}

/* 1 */
static void
test_stream (int level, int n)
{
  struct fixture f;
  uint64_t W = (uint64_t) CHUNK * (n - (level == 6 ? 2 : 1));
  uint8_t *b = malloc (3 * W);
  unsigned long r0;
  char what[64];

  snprintf (what, sizeof what, "stream raid%d n=%d", level, n);
  make_array (&f, level, RAID_LAYOUT_LEFT_SYMMETRIC, n, CHUNK);
  r0 = member_reads (&f);                        /* the superblocks' */
  fill (b, 3 * W, 1);
  for (uint64_t off = 0; off < 2 * W; off += 4096)                 /* 4K pieces */
    write_model (&f, b + off, 4096, W + off, 0, what);
  for (uint64_t off = 0, len; off < W; off += len) {                /* odd pieces */
    len = raid_min_u64 (1000 + off % 3000, W - off);
    write_model (&f, b + 2 * W + off, len, 3 * W + off, 0, what);
  }
  CHECK (member_reads (&f) == r0, "%s: %lu member reads: rows were not gathered",
         what, member_reads (&f) - r0);
  CHECK (member_writes (&f) > 0, "%s: complete rows were not written at once", what);
  check_range (&f, W, 3 * W, what);
  flush_and_verify (&f, what);
  free_array (&f);
  free (b);
}

/* 2 */
static void
test_held_read (void)
{
  struct fixture f;
  uint8_t b[4096];
  unsigned long w0;

  make_array (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 5, CHUNK);
  fill (b, sizeof b, 2);
  w0 = member_writes (&f);
  write_model (&f, b, sizeof b, 5 * CHUNK * 4, 0, "held");   /* a row's start */
  CHECK (member_writes (&f) == w0, "held: a lone partial row was written at once");
  check_range (&f, 5 * CHUNK * 4 - 512, 8192, "held: read back before the flush");
  CHECK (raid_array_flush (f.a) == 0, "held: flush");
  CHECK (member_writes (&f) > w0, "held: the flush wrote nothing");
  flush_and_verify (&f, "held: after the flush");
  free_array (&f);
}

/* 3 */
static void
test_order (void)
{
  struct fixture f;
  uint64_t W = 4ull * CHUNK, u = 2 * W;
  uint8_t *b = malloc (W);

  make_array (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 5, CHUNK);
  fill (b, 4096, 3);
  write_model (&f, b, 4096, u, 0, "order");                    /* held */
  fill (b, 2048, 4);
  write_model (&f, b, 2048, u, RAID_IO_FUA, "order: FUA over held");
  check_range (&f, u, 8192, "order: FUA over part of held bytes");
  fill (b, 4096, 5);
  write_model (&f, b, 4096, u + W, 0, "order");                /* held */
  fill (b, W, 6);
  write_model (&f, b, W, u + W, 0, "order: a whole row over held");
  check_range (&f, u + W, W, "order: a whole row supersedes held bytes");
  fill (b, 8192, 7);
  write_model (&f, b, 8192, u + 2 * W, 0, "order");            /* held */
  CHECK (raid_array_zero (f.a, 4096, u + 2 * W + 2048, 0, false) == 0, "order: zero");
  memset (f.model + u + 2 * W + 2048, 0, 4096);
  check_range (&f, u + 2 * W, 8192, "order: zero over held bytes");
  flush_and_verify (&f, "order: after the flush");
  free_array (&f);
  free (b);
}

/* 4 */
static void
test_drain_error (void)
{
  struct fixture f;
  uint8_t b[4096];
  int r;

  make_array (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 5, CHUNK);
  fill (b, sizeof b, 8);
  CHECK (raid_array_pwrite (f.a, b, sizeof b, 0, 0) == 0, "drain error: held write");
  f.dev[0].fail_writes = f.dev[4].fail_writes = 1;     /* data and parity of row 0 */
  r = raid_array_flush (f.a);
  CHECK (r != 0, "drain error: the flush succeeded though the held write was lost");
  f.dev[0].fail_writes = f.dev[4].fail_writes = 0;
  free_array (&f);
}

/* 5 */
static void
test_ager (void)
{
  struct fixture f;
  uint8_t b[4096];
  unsigned long w0;
  int waited = 0;

  make_array (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 5, CHUNK);
  CHECK (raid_array_start (f.a) == 0, "ager: start");
  fill (b, sizeof b, 9);
  w0 = member_writes (&f);
  write_model (&f, b, sizeof b, 0, 0, "ager");
  while (member_writes (&f) == w0 && waited < 2000) {      /* 20 ms expected */
    usleep (10000);
    waited += 10;
  }
  CHECK (member_writes (&f) > w0, "ager: a held write was not written in 2 s");
  CHECK (memcmp (f.dev[0].data + f.data_offset, b, sizeof b) == 0,
         "ager: member 0 does not hold the write");
  free_array (&f);
}

/* 6 */
static void
test_close (void)
{
  struct fixture f;
  uint8_t b[4096];

  make_array (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 5, CHUNK);
  fill (b, sizeof b, 10);
  write_model (&f, b, sizeof b, 0, 0, "close");
  raid_array_close (f.a);
  f.a = NULL;
  /* left-symmetric: row 0's first data chunk is on member 0 */
  CHECK (memcmp (f.dev[0].data + f.data_offset, b, sizeof b) == 0,
         "close: a held write was not written by the clean close");
  free_array (&f);
}

/* 7 */
#define NWRITERS 8
struct writer {
  struct fixture *f;
  int id;
  uint64_t lo, hi;
  uint64_t seed;
};
static atomic_bool writers_done;

static uint64_t
wrnd (struct writer *w)
{
  w->seed ^= w->seed << 13;
  w->seed ^= w->seed >> 7;
  w->seed ^= w->seed << 17;
  return w->seed;
}

static void *
writer_run (void *arg)
{
  struct writer *w = arg;
  struct fixture *f = w->f;
  uint8_t *b = malloc (300000), *r = malloc (300000);
  uint64_t pos = w->lo;

  for (int i = 0; i < 1500; i++) {
    uint64_t kind = wrnd (w) % 20, len, off;
    int e;
    if (kind < 12) {                                   /* the stream */
      len = 1 + wrnd (w) % (kind < 4 ? 4096 : 20000);
      if (pos + len > w->hi)
        pos = w->lo;
      off = pos;
      pos += len;
    }
    else {                                             /* anywhere in its range */
      len = 1 + wrnd (w) % (kind == 19 ? 290000 : 9000);
      len = raid_min_u64 (len, w->hi - w->lo);
      off = w->lo + wrnd (w) % (w->hi - w->lo - len + 1);
    }
    if (kind == 18) {
      e = raid_array_zero (f->a, len, off, 0, false);
      memset (f->model + off, 0, len);
    }
    else {
      fill (b, len, wrnd (w));
      e = raid_array_pwrite (f->a, b, len, off, kind == 17 ? RAID_IO_FUA : 0);
      memcpy (f->model + off, b, len);
    }
    CHECK (e == 0, "writers: %d: op %" PRIu64 "+%" PRIu64 ": %s", w->id, off, len,
           strerror (e));
    if (wrnd (w) % 3 == 0) {                           /* read its own write back */
      e = raid_array_pread (f->a, r, len, off);
      CHECK (e == 0 && memcmp (r, f->model + off, len) == 0,
             "writers: %d: read %" PRIu64 "+%" PRIu64 " misses its own write (e=%d)",
             w->id, off, len, e);
    }
  }
  free (b);
  free (r);
  return NULL;
}

static void *
flusher_run (void *arg)
{
  struct fixture *f = arg;
  while (!atomic_load (&writers_done)) {
    CHECK (raid_array_flush (f->a) == 0, "writers: flush failed");
    usleep (3000);
  }
  return NULL;
}

static void
test_writers (int level)
{
  struct fixture f;
  struct writer w[NWRITERS];
  pthread_t th[NWRITERS], fl;
  char what[32];

  snprintf (what, sizeof what, "writers raid%d", level);
  make_array (&f, level, RAID_LAYOUT_LEFT_SYMMETRIC, 5, CHUNK);
  CHECK (raid_array_start (f.a) == 0, "%s: start", what);
  atomic_store (&writers_done, false);
  for (int i = 0; i < NWRITERS; i++) {
    /* regions that are not row-aligned: neighbours share rows */
    w[i] = (struct writer) { &f, i, f.size / NWRITERS * i + (i ? 777 : 0),
                             f.size / NWRITERS * (i + 1) + (i < NWRITERS - 1 ? 777 : 0),
                             0x9E3779B97F4A7C15ull * (i + 1) };
    pthread_create (&th[i], NULL, writer_run, &w[i]);
  }
  pthread_create (&fl, NULL, flusher_run, &f);
  for (int i = 0; i < NWRITERS; i++)
    pthread_join (th[i], NULL);
  atomic_store (&writers_done, true);
  pthread_join (fl, NULL);
  verify_contents (&f, what);                          /* through the held bytes */
  flush_and_verify (&f, what);
  free_array (&f);
}

/* 8 */
static void
test_workload (int level)
{
  struct fixture f;
  char what[32], err[256];

  snprintf (what, sizeof what, "workload raid%d", level);
  make_array (&f, level, level == 4 ? RAID_LAYOUT_PARITY_N : RAID_LAYOUT_LEFT_SYMMETRIC, 5,
              CHUNK);
  workload (&f, 300);
  verify_contents (&f, what);
  CHECK (raid_array_fail (f.a, "1", err, sizeof err) == 0, "%s: fail: %s", what, err);
  workload (&f, 200);
  verify_contents (&f, what);
  CHECK (raid_array_flush (f.a) == 0, "%s: flush", what);
  verify_contents (&f, what);
  free_array (&f);
}

/* 9 */
static void
test_reshape (void)
{
  struct fixture f;
  struct writer w[NWRITERS / 2];
  pthread_t th[NWRITERS / 2], fl;
  struct raid_reshape_req req = { .level = -1, .layout = -1, .chunk = 2 * CHUNK };
  struct raid_status st;
  char err[256];

  make_array_ex (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 5, CHUNK, 24u << 20, 8u << 20);
  CHECK (raid_array_start (f.a) == 0, "reshape: start");
  CHECK (raid_array_reshape (f.a, &req, NULL, err, sizeof err) == 0, "reshape: prepare: %s",
         err);
  atomic_store (&writers_done, false);
  for (int i = 0; i < NWRITERS / 2; i++) {
    w[i] = (struct writer) { &f, i, f.size / (NWRITERS / 2) * i,
                             f.size / (NWRITERS / 2) * (i + 1), 0xD1B54A32D192ED03ull * (i + 1) };
    pthread_create (&th[i], NULL, writer_run, &w[i]);
  }
  pthread_create (&fl, NULL, flusher_run, &f);
  CHECK (raid_array_start_action (f.a, err, sizeof err) == 0, "reshape: start: %s", err);
  for (int i = 0; i < NWRITERS / 2; i++)
    pthread_join (th[i], NULL);
  atomic_store (&writers_done, true);
  pthread_join (fl, NULL);
  CHECK (raid_array_wait (f.a, 120) == 1, "reshape: did not settle");
  raid_array_status (f.a, &st);
  CHECK (!st.has_reshape && st.geom.chunk == 2 * CHUNK,
         "reshape: chunk %u, reshape record %d", st.geom.chunk, st.has_reshape);
  verify_contents (&f, "reshape: after");
  CHECK (raid_array_flush (f.a) == 0, "reshape: flush");
  f.dev[1].fail_reads = 1;                   /* every row decodes without it */
  verify_contents (&f, "reshape: member 1 unreadable");
  f.dev[1].fail_reads = 0;
  free_array (&f);
}

int
main (void)
{
  fixture_opts.gather = true;
  test_stream (5, 5);
  test_stream (6, 5);
  test_stream (6, 6);
  test_held_read ();
  test_order ();
  test_drain_error ();
  test_ager ();
  test_close ();
  test_writers (5);
  test_writers (6);
  for (int level = 4; level <= 6; level++)
    test_workload (level);
  test_reshape ();
  return test_summary ("test-gather");
}
