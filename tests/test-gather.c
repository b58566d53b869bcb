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
 *  Then the gather alone, over a memory "array" whose writes can be held
 *  at a gate or fail on cue:
 *  10. A write that replaces held bytes is in flight: a read returns the
 *      held bytes or the new ones, never the older ones, and a flush does
 *      not return before the new bytes are on the array (G1, G2, G3).
 *  11. Settles that overlap a slot being drained and each other all end
 *      (W1: nobody waits while holding a slot).
 *  12. Drain errors: EIO loses the bytes and fails every later flush;
 *      another error keeps them held, fails that flush, and a later flush
 *      writes them (G3).
 *  13. Streams of small writes, block status and FUA writes across rows on
 *      a started array: no request waits forever (a watchdog).
 *  14. A shrink and a grow after a held write past the new end: the new
 *      space reads as zeros (G5).
 *  15. A write with partial rows at both ends puts both pieces before its
 *      whole rows reach the array, so the next write of a stream completes
 *      the row it ends in while those are still being written.
 *  16. The age follows the time array writes take.
 *  17. A full table waits for a slot being drained, not drains a filling one.
 *  18. A write whose first piece completes a row places its second before
 *      that row is written; when its second piece completes a row too,
 *      the rows are written in that order; in a full table it writes its
 *      row rather than wait on it; its row's EIO fails it.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fixture.h"
#include "gather.h"
#include "util.h"

#define CHUNK 65536u

/* Operations the members received, all of them. */
static unsigned long
member_ops (const struct fixture *f, bool writes)
{
  unsigned long n = 0;
  for (int i = 0; i < f->n; i++)
    n += __atomic_load_n (writes ? &f->dev[i].nwrites : &f->dev[i].nreads,
                          __ATOMIC_RELAXED);
  return n;
}
#define member_reads(f) member_ops ((f), false)
#define member_writes(f) member_ops ((f), true)

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

/* ---- the gather alone ---- */
#define MUNIT 65536u
static uint8_t mdisk[(GATHER_SLOTS + 2) * MUNIT];
static pthread_mutex_t mlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t mcond = PTHREAD_COND_INITIALIZER;
static bool gate_fua, gate_open;             /* FUA writes wait at the gate */
static int64_t gate_off = -1;                /* ... and writes at this offset */
static int mfail;                            /* nonzero: every write fails so */
static unsigned mdelay_ms;                   /* every write takes this long */
static int nblocked;
static uint64_t last_off, last_len;          /* the last write that landed */

static int
mwrite (void *opaque, const uint8_t *buf, uint64_t len, uint64_t off, unsigned flags)
{
  pthread_mutex_lock (&mlock);
  if ((gate_fua && flags) || (int64_t) off == gate_off) {
    nblocked++;
    pthread_cond_broadcast (&mcond);
    while (!gate_open)
      pthread_cond_wait (&mcond, &mlock);
  }
  pthread_mutex_unlock (&mlock);
  if (mdelay_ms)
    usleep (mdelay_ms * 1000);
  if (mfail)
    return mfail;
  memcpy (mdisk + off, buf, len);
  last_off = off;
  last_len = len;
  return 0;
}

static void
mreset (struct gather *G)
{
  memset (mdisk, 'O', sizeof mdisk);
  gate_fua = gate_open = false;
  gate_off = -1;
  mfail = nblocked = 0;
  mdelay_ms = 0;
  last_off = last_len = 0;
  gather_init (G, true, mwrite, NULL);
}

static bool
wait_blocked (int n)
{
  struct timespec ts;
  bool ok = true;
  clock_gettime (CLOCK_REALTIME, &ts);
  ts.tv_sec += 5;
  pthread_mutex_lock (&mlock);
  while (nblocked < n && ok)
    ok = pthread_cond_timedwait (&mcond, &mlock, &ts) == 0;
  pthread_mutex_unlock (&mlock);
  return nblocked >= n;
}

static void
gate_release (void)
{
  pthread_mutex_lock (&mlock);
  gate_open = true;
  pthread_cond_broadcast (&mcond);
  pthread_mutex_unlock (&mlock);
}

static uint8_t
mread (struct gather *G, uint64_t off)
{
  struct gather_snap sn;
  uint8_t b;
  gather_snap_take (G, off, off + 1, &sn);
  b = mdisk[off];
  gather_snap_apply (&sn, &b, off, 1);
  gather_snap_free (&sn);
  return b;
}

/* Join with a bound: false if the thread did not end in 5 s. */
static bool
join_within (pthread_t t)
{
  struct timespec ts;
  clock_gettime (CLOCK_REALTIME, &ts);
  ts.tv_sec += 5;
  return pthread_timedjoin_np (t, NULL, &ts) == 0;
}

static struct gather MG;
static uint8_t Cbuf[4096];
static atomic_int flushed;

static void *fua_run (void *x) { gather_write (&MG, Cbuf, 4096, 0, MUNIT, 1); return NULL; }
static void *flush_run (void *x) { gather_drain_all (&MG); atomic_store (&flushed, 1); return NULL; }

/* 10 */
static void
test_replaced_in_flight (void)
{
  uint8_t A[4096];
  pthread_t fw, fl;

  mreset (&MG);
  memset (A, 'A', sizeof A);
  memset (Cbuf, 'C', sizeof Cbuf);
  CHECK (gather_write (&MG, A, 4096, 0, MUNIT, 0) == 0 && mdisk[0] == 'O',
         "replaced: A was not held");
  gate_fua = true;
  pthread_create (&fw, NULL, fua_run, NULL);        /* C over A, held at the gate */
  CHECK (wait_blocked (1), "replaced: C never reached the array");
  CHECK (mread (&MG, 0) == 'A' || mread (&MG, 0) == 'C',
         "replaced: a read while C is in flight returned '%c' (A or C)", mread (&MG, 0));
  atomic_store (&flushed, 0);
  pthread_create (&fl, NULL, flush_run, NULL);
  usleep (100000);
  CHECK (!atomic_load (&flushed),
         "replaced: a flush returned while neither A nor C was on the array");
  gate_release ();
  if (!join_within (fw) || !join_within (fl)) {
    CHECK (0, "replaced: C or the flush never ended");
    test_summary ("test-gather");
    _exit (1);
  }
  CHECK (mdisk[0] == 'C' && mread (&MG, 0) == 'C', "replaced: '%c' on the array, not C",
         mdisk[0]);
  gather_fini (&MG);
}

static void *settle_all (void *x) { gather_settle (&MG, 0, 3 * MUNIT, NULL); return NULL; }
static void *settle_two (void *x) { gather_settle (&MG, 0, 2 * MUNIT, NULL); return NULL; }
static void *settle_last (void *x) { gather_settle (&MG, 2 * MUNIT, 3 * MUNIT, NULL); return NULL; }

/* 11 (on its own thread: the main thread's write must not hang either) */
static void *
settles_scenario (void *arg)
{
  uint8_t B[4096];
  pthread_t t4, t2, t1;

  mreset (&MG);
  memset (B, 'B', sizeof B);
  for (int u = 0; u < 3; u++)                       /* three held units */
    gather_write (&MG, B, 4096, u * MUNIT, MUNIT, 0);
  gate_off = 2 * MUNIT;
  pthread_create (&t4, NULL, settle_last, NULL);    /* drains unit 2: held at the gate */
  CHECK (wait_blocked (1), "settles: the drain of unit 2 never started");
  pthread_create (&t2, NULL, settle_all, NULL);     /* overlaps the slot being drained */
  usleep (20000);
  gather_write (&MG, B, 4096, 0, MUNIT, 0);
  pthread_create (&t1, NULL, settle_two, NULL);
  usleep (20000);
  gate_release ();
  if (!join_within (t4) || !join_within (t2) || !join_within (t1)) {
    CHECK (0, "settles: a settle never ended (two waiting for each other's slot)");
    test_summary ("test-gather");
    _exit (1);                                        /* threads are stuck */
  }
  CHECK (atomic_load (&MG.nlive) == 0, "settles: %d slots left", atomic_load (&MG.nlive));
  CHECK (mdisk[0] == 'B' && mdisk[MUNIT] == 'B' && mdisk[2 * MUNIT] == 'B',
         "settles: a held write did not reach the array");
  gather_fini (&MG);
  return NULL;
}

static void
test_settles (void)
{
  struct timespec ts;
  pthread_t t;

  pthread_create (&t, NULL, settles_scenario, NULL);
  clock_gettime (CLOCK_REALTIME, &ts);
  ts.tv_sec += 20;
  if (pthread_timedjoin_np (t, NULL, &ts) != 0) {
    CHECK (0, "settles: a write or settle never ended (two waiting for each other's slot)");
    test_summary ("test-gather");
    _exit (1);
  }
}

/* 12 */
static void
test_drain_errors (void)
{
  uint8_t B[4096];

  mreset (&MG);
  memset (B, 'B', sizeof B);
  gather_write (&MG, B, 4096, 0, MUNIT, 0);
  mfail = ENOMEM;
  CHECK (gather_drain_all (&MG) == ENOMEM, "errors: a failed drain was not reported");
  CHECK (mread (&MG, 0) == 'B', "errors: the bytes of a drain that failed with ENOMEM "
         "were dropped");
  mfail = 0;
  CHECK (gather_drain_all (&MG) == 0 && mdisk[0] == 'B',
         "errors: the next flush did not write the kept bytes");
  gather_write (&MG, B, 4096, MUNIT, MUNIT, 0);
  mfail = EIO;
  CHECK (gather_drain_all (&MG) == EIO, "errors: EIO was not reported");
  mfail = 0;
  CHECK (gather_drain_all (&MG) == EIO && gather_drain_all (&MG) == EIO,
         "errors: a later flush succeeded after acknowledged bytes were lost");
  gather_fini (&MG);
}

/* 13 */
static atomic_bool hstop;
static atomic_ulong hops;
static int ext_cb (void *o, uint64_t off, uint64_t len, bool z) { return 0; }

static void *
hammer (void *arg)
{
  struct writer *w = arg;
  struct fixture *f = w->f;
  uint64_t W = raid_array_stripe_width (f->a), rows = f->size / W;
  uint8_t *b = calloc (1, W);

  while (!atomic_load (&hstop)) {
    uint64_t row = wrnd (w) % (rows - 4);
    switch (w->id % 4) {
    case 0: case 1:                                   /* a stream through 3 rows */
      for (uint64_t o = 0; o < 3 * W && !atomic_load (&hstop); o += 4096, hops++)
        raid_array_pwrite (f->a, b, 4096, row * W + o, 0);
      break;
    case 2:                                           /* block status over 3 rows */
      raid_array_extents (f->a, 3 * W, row * W + 512, ext_cb, NULL);
      hops++;
      break;
    case 3:                                           /* FUA across two rows */
      raid_array_pwrite (f->a, b, W, row * W + W / 2, RAID_IO_FUA);
      hops++;
      break;
    }
  }
  free (b);
  return NULL;
}

static void
test_hammer (void)
{
  struct fixture f;
  struct writer w[NWRITERS];
  pthread_t th[NWRITERS];
  unsigned long last = 0;
  bool stuck = false;

  make_array (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 5, 16384);
  CHECK (raid_array_start (f.a) == 0, "hammer: start");
  atomic_store (&hstop, false);
  for (int i = 0; i < NWRITERS; i++) {
    w[i] = (struct writer) { &f, i, 0, 0, 0x9E3779B97F4A7C15ull * (i + 7) };
    pthread_create (&th[i], NULL, hammer, &w[i]);
  }
  for (int t = 0; t < 30 && !stuck; t++) {           /* 3 s, progress every 0.1 s */
    usleep (100000);
    stuck = atomic_load (&hops) == last;
    for (int i = 0; i < 50 && stuck; i++) {           /* 5 s without progress: a hang */
      usleep (100000);
      stuck = atomic_load (&hops) == last;
    }
    last = atomic_load (&hops);
  }
  if (stuck) {
    CHECK (0, "hammer: no request completed for 5 s: a deadlock");
    test_summary ("test-gather");
    _exit (1);                                        /* threads are stuck: no cleanup */
  }
  atomic_store (&hstop, true);
  for (int i = 0; i < NWRITERS; i++)
    pthread_join (th[i], NULL);
  CHECK (raid_array_flush (f.a) == 0, "hammer: flush");
  CHECK (verify_parity (&f, 0) == 0, "hammer: parity mismatch on the members");
  free_array (&f);
}

/* 14 */
static void
test_shrink_grow (void)
{
  struct fixture f;
  uint8_t b[4096], r[4096];
  char err[256];
  uint64_t W, size;

  make_array (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 5, CHUNK);
  W = raid_array_stripe_width (f.a);
  size = f.size;
  memset (b, 0xAB, sizeof b);
  CHECK (raid_array_pwrite (f.a, b, sizeof b, size - W, 0) == 0, "shrink: held write");
  CHECK (raid_array_resize (f.a, size - W, true, err, sizeof err) == 0, "shrink: %s", err);
  CHECK (raid_array_resize (f.a, size, false, err, sizeof err) == 0, "grow: %s", err);
  for (int pass = 0; pass < 2; pass++) {
    memset (r, 1, sizeof r);
    CHECK (raid_array_pread (f.a, r, sizeof r, size - W) == 0 && r[0] == 0 &&
           memcmp (r, r + 1, sizeof r - 1) == 0,
           "shrink: bytes the shrink cut off came back (0x%02x)%s", r[0],
           pass ? " after a flush" : "");
    CHECK (raid_array_flush (f.a) == 0, "shrink: flush");
  }
  free_array (&f);
}

/* 15 */
static uint8_t Sbuf[2 * MUNIT];
static void *span_run (void *x) { gather_write (&MG, Sbuf, sizeof Sbuf, MUNIT / 2, MUNIT, 0); return NULL; }

static void
test_ends_first (void)
{
  uint8_t rest[MUNIT / 2];
  pthread_t t;

  mreset (&MG);
  memset (Sbuf, 'S', sizeof Sbuf);
  memset (rest, 'R', sizeof rest);
  gate_off = MUNIT;                          /* the whole row waits */
  pthread_create (&t, NULL, span_run, NULL);
  CHECK (wait_blocked (1), "ends first: the whole row never reached the array");
  CHECK (mread (&MG, 2 * MUNIT) == 'S' && mread (&MG, MUNIT / 2) == 'S',
         "ends first: while the whole row is written, the ending piece reads '%c', "
         "the beginning one '%c' (both S: held)", mread (&MG, 2 * MUNIT),
         mread (&MG, MUNIT / 2));
  CHECK (gather_write (&MG, rest, sizeof rest, 2 * MUNIT + MUNIT / 2, MUNIT, 0) == 0,
         "ends first: the next write");
  CHECK (last_off == 2 * MUNIT && last_len == MUNIT && mdisk[2 * MUNIT] == 'S' &&
         mdisk[3 * MUNIT - 1] == 'R',
         "ends first: the row both writes share was not written whole (last write "
         "%" PRIu64 "+%" PRIu64 ")", last_off, last_len);
  gate_release ();
  if (!join_within (t)) {
    CHECK (0, "ends first: the write never ended");
    test_summary ("test-gather");
    _exit (1);
  }
  CHECK (gather_drain_all (&MG) == 0 && mdisk[MUNIT / 2] == 'S' && mdisk[MUNIT] == 'S' &&
         mdisk[MUNIT - 1] == 'S' && mdisk[0] == 'O',
         "ends first: after a flush the array holds O|S|S|S R");
  gather_fini (&MG);
}

/* 16: the age follows the time array writes take (gather.h, G4): a row
 * begun while writes are slow is held for twice that, not drained at the
 * floor, and the age falls back to the floor once they are fast again. */
static void
test_age_follows (void)
{
  uint8_t B[4096];
  uint64_t age, t0, waited;
  bool held;

  mreset (&MG);
  CHECK (gather_start (&MG) == 0, "age: start the ager");
  CHECK (gather_age_ns (&MG) == GATHER_AGE_MIN_NS, "age: %" PRIu64 " ns before any write",
         gather_age_ns (&MG));
  memset (B, 'A', sizeof B);
  mdelay_ms = 150;
  for (int i = 0; i < 4; i++)                 /* FUA: written through, timed */
    gather_write (&MG, B, 4096, (4 + i) * MUNIT, MUNIT, 1);
  age = gather_age_ns (&MG);
  CHECK (age >= 100 * 1000000ull && age <= GATHER_AGE_MAX_NS,
         "age: %" PRIu64 " ns after four writes of 150 ms (expected 100-200 ms)", age);
  mdelay_ms = 0;
  t0 = raid_now_mono_ns ();
  gather_write (&MG, B, 4096, 0, MUNIT, 0);   /* begins a row: held */
  usleep (3 * GATHER_AGE_MIN_NS / 1000);      /* past the floor and its tick */
  pthread_mutex_lock (&mlock);
  held = mdisk[0] == 'O';
  pthread_mutex_unlock (&mlock);
  waited = raid_now_mono_ns () - t0;
  if (waited < 90 * 1000000ull)               /* else this thread was descheduled */
    CHECK (held, "age: a row was drained %" PRIu64 " ms after its first write, "
           "with writes taking 150 ms", waited / 1000000);
  for (int i = 0; i < 300 && mdisk[0] == 'O'; i++)
    usleep (1000);
  CHECK (mdisk[0] == 'A', "age: the held row was not drained within 300 ms");
  for (int i = 0; i < 40; i++)                /* fast writes again */
    gather_write (&MG, B, 4096, 4 * MUNIT, MUNIT, 1);
  CHECK (gather_age_ns (&MG) == GATHER_AGE_MIN_NS,
         "age: %" PRIu64 " ns after 40 fast writes (expected the floor)", gather_age_ns (&MG));
  gather_stop (&MG);
  gather_fini (&MG);
}

/* 17.  A full table whose slots include one being drained: a writer that
 * needs a new slot waits for that drain to end (G4) rather than draining
 * a row still filling, which would cost both its halves a read-modify-
 * write.  Unit 0's drain waits at the gate; units 1..31 hold 4K each; a
 * write that starts unit 32 comes; the gate opens.
 * Expected: unit 1 (the oldest filling) is never drained; unit 32's bytes
 * are held; a flush writes every unit. */
static uint8_t Fbuf[MUNIT];
static atomic_bool full_done;
static void *full_rest (void *x) { gather_write (&MG, Fbuf + 4096, MUNIT - 4096, 4096, MUNIT, 0); return NULL; }
static void *full_new (void *x)
{
  gather_write (&MG, Fbuf, 4096, GATHER_SLOTS * (uint64_t) MUNIT, MUNIT, 0);
  atomic_store (&full_done, true);
  return NULL;
}

static void
test_full_waits (void)
{
  pthread_t rest, nw;

  mreset (&MG);
  memset (Fbuf, 'F', sizeof Fbuf);
  atomic_store (&full_done, false);
  gather_write (&MG, Fbuf, 4096, 0, MUNIT, 0);            /* unit 0 begins */
  gate_off = 0;
  pthread_create (&rest, NULL, full_rest, NULL);          /* completes it: drained */
  CHECK (wait_blocked (1), "full: unit 0's drain never reached the array");
  for (int u = 1; u < GATHER_SLOTS; u++)
    gather_write (&MG, Fbuf, 4096, u * (uint64_t) MUNIT, MUNIT, 0);
  CHECK (atomic_load (&MG.nlive) == GATHER_SLOTS, "full: %d slots in use, not %d",
         atomic_load (&MG.nlive), GATHER_SLOTS);
  pthread_create (&nw, NULL, full_new, NULL);
  usleep (100000);                       /* bounded: a drain of unit 1 happens now */
  CHECK (mdisk[MUNIT] == 'O' && !atomic_load (&full_done),
         "full: unit 1 drained ('%c' on the array) while unit 0's drain was running",
         mdisk[MUNIT]);
  gate_release ();
  if (!join_within (rest) || !join_within (nw)) {
    CHECK (0, "full: a write never ended");
    test_summary ("test-gather");
    _exit (1);
  }
  CHECK (mdisk[MUNIT] == 'O' && mdisk[0] == 'F' && mread (&MG, MUNIT) == 'F',
         "full: after unit 0's drain, unit 1 is '%c' on the array (held: O)", mdisk[MUNIT]);
  CHECK (mdisk[GATHER_SLOTS * MUNIT] == 'O' && mread (&MG, GATHER_SLOTS * MUNIT) == 'F',
         "full: unit %d's bytes are not held", GATHER_SLOTS);
  CHECK (gather_drain_all (&MG) == 0, "full: flush");
  for (int u = 0; u <= GATHER_SLOTS; u++)
    CHECK (mdisk[u * (uint64_t) MUNIT] == 'F', "full: unit %d not written by the flush", u);
  gather_fini (&MG);
}

/* 18.  A write whose first piece completes a row places its other piece
 * before it writes that row (G4): in a stream of large writes, the write
 * that completes one row begins the next, whose end the following write
 * brings.  Unit 1 holds its first half (A); unit 1's drain waits at the
 * gate; a write B spans the rest of unit 1 and the first half of unit 2.
 * Expected: while unit 1's drain waits, unit 2's first half is held
 * (reads B, 'O' on the array); on the old order it was placed only after
 * unit 1's write, where a slow array ages the next write's lone end out
 * and both halves pay a read-modify-write.  Then the same with unit 2's
 * second half held already (C): B completes both rows, and they are
 * written in that order, unit 1 first. */
static uint8_t Pbuf[MUNIT];
static void *pair_run (void *x)
{
  gather_write (&MG, Pbuf, MUNIT, MUNIT + MUNIT / 2, MUNIT, 0);
  return NULL;
}

static void
completer_case (bool second_held)
{
  uint8_t A[MUNIT / 2], C[MUNIT / 2];
  const char *what = second_held ? "completer (both rows)" : "completer";
  pthread_t t;

  mreset (&MG);
  memset (A, 'A', sizeof A);
  memset (C, 'C', sizeof C);
  memset (Pbuf, 'B', sizeof Pbuf);
  CHECK (gather_write (&MG, A, sizeof A, MUNIT, MUNIT, 0) == 0 && mdisk[MUNIT] == 'O',
         "%s: A was not held", what);
  if (second_held)
    CHECK (gather_write (&MG, C, sizeof C, 2 * MUNIT + MUNIT / 2, MUNIT, 0) == 0 &&
           mdisk[3 * MUNIT - 1] == 'O', "%s: C was not held", what);
  gate_off = MUNIT;                          /* unit 1's drain waits */
  pthread_create (&t, NULL, pair_run, NULL);
  CHECK (wait_blocked (1), "%s: unit 1's drain never reached the array", what);
  pthread_mutex_lock (&mlock);
  CHECK (mdisk[2 * MUNIT] == 'O' && mread (&MG, 2 * MUNIT) == 'B' &&
         atomic_load (&MG.nlive) == 2,
         "%s: while unit 1 is written, unit 2 reads '%c' ('%c' on the array, "
         "%d slots in use): its first half is not held", what,
         mread (&MG, 2 * MUNIT), mdisk[2 * MUNIT], atomic_load (&MG.nlive));
  pthread_mutex_unlock (&mlock);
  gate_release ();
  if (!join_within (t)) {
    CHECK (0, "%s: the write never ended", what);
    test_summary ("test-gather");
    _exit (1);
  }
  if (second_held)
    CHECK (mdisk[2 * MUNIT] == 'B' && mdisk[3 * MUNIT - 1] == 'C' &&
           last_off == 2 * MUNIT && last_len == MUNIT && atomic_load (&MG.nlive) == 0,
           "%s: unit 2 was not written whole after unit 1 (last write %" PRIu64
           "+%" PRIu64 ")", what, last_off, last_len);
  CHECK (gather_drain_all (&MG) == 0 && mdisk[MUNIT] == 'A' &&
         mdisk[MUNIT + MUNIT / 2] == 'B' && mdisk[2 * MUNIT] == 'B' &&
         mdisk[2 * MUNIT + MUNIT / 2] == (second_held ? 'C' : 'O'),
         "%s: after a flush the array holds %c|%c %c|%c", what, mdisk[MUNIT],
         mdisk[MUNIT + MUNIT / 2], mdisk[2 * MUNIT], mdisk[2 * MUNIT + MUNIT / 2]);
  gather_fini (&MG);
}

/* The same write when the table is full and the only slot being drained
 * is the row its first piece completed: it writes that row, then places
 * its second piece (waiting on its own row would never end), and the
 * oldest row still filling is not drained.  Then with every array write
 * failing: the write fails with EIO, and so does the flush. */
static void *pair_done_run (void *x)
{
  *(int *) x = gather_write (&MG, Pbuf, MUNIT, MUNIT / 2, MUNIT, 0);
  return NULL;
}

static void
completer_full (void)
{
  uint8_t A[MUNIT / 2];
  pthread_t t;
  int r = -1;

  mreset (&MG);
  memset (A, 'A', sizeof A);
  memset (Pbuf, 'B', sizeof Pbuf);
  gather_write (&MG, A, sizeof A, 0, MUNIT, 0);          /* unit 0 begins */
  for (int u = 2; u <= GATHER_SLOTS; u++)                /* 31 more: full */
    gather_write (&MG, A, 4096, u * (uint64_t) MUNIT, MUNIT, 0);
  CHECK (atomic_load (&MG.nlive) == GATHER_SLOTS, "completer (full): %d slots in use",
         atomic_load (&MG.nlive));
  pthread_create (&t, NULL, pair_done_run, &r);   /* completes 0, begins 1 */
  if (!join_within (t)) {
    CHECK (0, "completer (full): the write waited on its own row");
    test_summary ("test-gather");
    _exit (1);
  }
  CHECK (r == 0 && mdisk[0] == 'A' && mdisk[MUNIT / 2] == 'B' && mdisk[MUNIT] == 'O' &&
         mread (&MG, MUNIT) == 'B' && mdisk[2 * MUNIT] == 'O',
         "completer (full): r=%d, unit 0 '%c%c', unit 1 '%c' (held: O, reads B), "
         "unit 2 '%c' (held: O)", r, mdisk[0], mdisk[MUNIT / 2], mdisk[MUNIT],
         mdisk[2 * MUNIT]);
  CHECK (gather_drain_all (&MG) == 0 && mdisk[MUNIT] == 'B' && mdisk[2 * MUNIT] == 'A',
         "completer (full): a flush did not write units 1 and 2");
  gather_fini (&MG);

  mreset (&MG);
  gather_write (&MG, A, sizeof A, 0, MUNIT, 0);
  mfail = EIO;
  CHECK (gather_write (&MG, Pbuf, MUNIT, MUNIT / 2, MUNIT, 0) == EIO,
         "completer (EIO): a write whose completed row failed did not fail");
  CHECK (gather_drain_all (&MG) == EIO, "completer (EIO): the next flush did not fail");
  gather_fini (&MG);
}

static void
test_completer_places_rest (void)
{
  completer_case (false);
  completer_case (true);
  completer_full ();
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
  test_replaced_in_flight ();
  test_settles ();
  test_drain_errors ();
  test_hammer ();
  test_shrink_grow ();
  test_ends_first ();
  test_age_follows ();
  test_full_waits ();
  test_completer_places_rest ();
  return test_summary ("test-gather");
}
