/* nbdkit-raid: stripe engine test.
 *
 * Arrays of every level and several layouts are created with raid_create on
 * tmpfs files, loaded into memory, and assembled over in-memory custom
 * members whose failures are injected deterministically.  A seeded random
 * workload of writes (aligned, unaligned, sub-sector, multi-row), zeroes and
 * reads runs against a byte model of the array; after every phase the whole
 * array is read back and compared with the model, and the parity of every
 * row is checked directly on the member buffers.  Then members fail (reads,
 * writes, or both) and the same checks run degraded; beyond redundancy I/O
 * must fail with EIO.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fixture.h"
#include "array.h"
#include "array-int.h"
#include "stripe.h"
#include "create.h"
#include "geometry.h"
#include "member.h"
#include "parity.h"
#include "rowcache.h"
#include "sb.h"
#include "state.h"
#include "util.h"


static int
tolerance (const struct fixture *f)
{
  return f->level == 0 ? 0 : f->level == 1 ? f->n - 1 : f->level == 6 ? 2 : 1;
}

static void
run_case (int level, int layout, int n, uint32_t chunk)
{
  struct fixture f;
  char when[128];

  rng_state = 0x9e3779b97f4a7c15ull ^ (level * 1000 + layout * 10 + n) ^ chunk;
  make_array (&f, level, layout, n, chunk);
  snprintf (when, sizeof when, "raid%d %s n=%d chunk=%u", level,
            raid_layout_name (layout), n, chunk);

  workload (&f, 300);
  verify_contents (&f, when);
  CHECK (verify_parity (&f, 0) == 0, "%s: parity mismatch after workload", when);
  CHECK (raid_array_health (f.a) == RAID_HEALTH_OPTIMAL, "%s: not optimal", when);

  /* Fail members one by one, within redundancy: first by reads and writes
   * failing at run time, then a dead member. */
  for (int k = 0; k < tolerance (&f) && k < 2; k++) {
    int victim = (k * 3 + 1) % n;
    f.dev[victim].fail_reads = f.dev[victim].fail_writes = 1;
    workload (&f, 150);
    verify_contents (&f, when);
    CHECK (raid_array_health (f.a) == RAID_HEALTH_DEGRADED,
           "%s: health %s after %d failures", when,
           raid_health_name (raid_array_health (f.a)), k + 1);
  }

  /* Beyond redundancy: EIO, no hang.  Read errors are only counted while a
   * member stays below the read-error limit (and a block that cannot be
   * rebuilt is not rewritten), so it takes a run of failing requests until
   * the members are faulty: bounded by the limit. */
  if (level != 1) {
    uint8_t buf[4096];
    for (int i = 0; i < n; i++)
      f.dev[i].fail_reads = f.dev[i].fail_writes = (i % 2 == 0) || i < 3;
    for (int i = 0; i < 50 && raid_array_health (f.a) != RAID_HEALTH_FAILED; i++) {
      raid_array_pread (f.a, buf, sizeof buf, i * f.chunk % f.size);
      raid_array_pwrite (f.a, buf, sizeof buf, 0, 0);
    }
    int r = raid_array_pread (f.a, buf, sizeof buf, f.size / 2);
    CHECK (r == EIO, "%s: read beyond redundancy returned %d", when, r);
    r = raid_array_pwrite (f.a, buf, sizeof buf, 0, 0);
    CHECK (r == EIO, "%s: write beyond redundancy returned %d", when, r);
    CHECK (raid_array_health (f.a) == RAID_HEALTH_FAILED, "%s: not failed", when);
  }
  free_array (&f);
}

/* A degraded read reads every surviving block of a row once: reading the
 * whole array with one member failed takes exactly each survivor's data
 * area on raid5 (the blocks the reconstruction needs are the request's
 * own), at most that on raid6 (Q is not read where P is there), and the
 * contents are right; then the same for a read that starts and ends
 * inside chunks (those rows are read once too, over the columns needed). */
static void
run_degraded_read_once (int level, int layout, int n)
{
  struct fixture f;
  uint64_t area, rows;
  uint8_t *buf;
  char err[256];

  rng_state = 777 + level;
  make_array (&f, level, layout, n, 65536);
  workload (&f, 100);
  CHECK (raid_array_fail (f.a, "1", err, sizeof err) == 0, "fail: %s", err);
  buf = malloc (f.size);
  rows = f.size / (65536ull * (n - (level == 6 ? 2 : 1)));
  area = rows * 65536;
  for (int i = 0; i < n; i++)
    f.dev[i].rbytes = 0;
  CHECK (raid_array_pread (f.a, buf, f.size, 0) == 0 && memcmp (buf, f.model, f.size) == 0,
         "raid%d degraded read: data", level);
  for (int i = 0; i < n; i++)
    CHECK (i == 1 || (level == 5 ? f.dev[i].rbytes == area : f.dev[i].rbytes <= area),
           "raid%d degraded read: member %d read %llu bytes for a data area of %llu",
           level, i, f.dev[i].rbytes, (unsigned long long) area);
  for (int i = 0; i < n; i++)
    f.dev[i].rbytes = 0;
  CHECK (raid_array_pread (f.a, buf, f.size - 2 * 5000, 5000) == 0 &&
         memcmp (buf, f.model + 5000, f.size - 2 * 5000) == 0,
         "raid%d degraded unaligned read: data", level);
  for (int i = 0; i < n; i++)
    CHECK (i == 1 || f.dev[i].rbytes <= area, "raid%d degraded unaligned read: member %d "
           "read %llu bytes, more than its data area %llu", level, i, f.dev[i].rbytes,
           (unsigned long long) area);
  free (buf);
  free_array (&f);
}

/* A degraded stream in requests that end inside rows (1 MiB on rows of
 * k x 64K, k not a power of two) reads every surviving block once too:
 * the request that continues a row takes it from the row cache instead
 * of reading again what its predecessor read (rowcache.h).  Then a write
 * between the two requests of a row: the second one reads it back (the
 * cache is not used across a write). */
static void
run_degraded_stream (int level, int layout, int n)
{
  const uint64_t req = 1u << 20, W = 65536ull * (n - (level == 6 ? 2 : 1));
  struct fixture f;
  uint64_t area;
  uint8_t *buf, pat[4096];
  char err[256];

  rng_state = 4242 + level;
  make_array (&f, level, layout, n, 65536);
  workload (&f, 100);
  CHECK (raid_array_fail (f.a, "1", err, sizeof err) == 0, "fail: %s", err);
  buf = malloc (f.size);
  area = f.size / W * 65536;
  for (int i = 0; i < n; i++)
    f.dev[i].rbytes = 0;
  for (uint64_t off = 0; off < f.size; off += req) {
    uint64_t len = raid_min_u64 (req, f.size - off);
    CHECK (raid_array_pread (f.a, buf + off, len, off) == 0, "raid%d stream read at %" PRIu64,
           level, off);
  }
  CHECK (memcmp (buf, f.model, f.size) == 0, "raid%d degraded stream: data", level);
  /* The first request is no stream yet: its last row is read again by
   * the second, one chunk of a member at most; every other row once. */
  for (int i = 0; i < n; i++)
    CHECK (i == 1 || ((level == 6 || f.dev[i].rbytes >= area) &&
                      f.dev[i].rbytes <= area + 65536),
           "raid%d degraded stream: member %d read %llu bytes for a data area of %llu",
           level, i, f.dev[i].rbytes, (unsigned long long) area);

  /* [W/2, 3W/2), then [3W/2, 5W/2): a stream's continuation, which keeps
   * row 2 (member 1 holds data there); a write into row 2's second half;
   * then [5W/2, 7W/2), which continues the stream into row 2, must read
   * that write. */
  memset (pat, 0xd7, sizeof pat);
  CHECK (raid_array_pread (f.a, buf, W, W / 2) == 0 &&
         raid_array_pread (f.a, buf, W, W + W / 2) == 0, "raid%d: reads before", level);
  CHECK (raid_array_pwrite (f.a, pat, sizeof pat, 2 * W + W / 2 + 8192, 0) == 0,
         "raid%d: write between", level);
  memcpy (f.model + 2 * W + W / 2 + 8192, pat, sizeof pat);
  CHECK (raid_array_pread (f.a, buf, W, 2 * W + W / 2) == 0 &&
         memcmp (buf, f.model + 2 * W + W / 2, W) == 0,
         "raid%d degraded stream: a write between two requests of a row is read back",
         level);
  free (buf);
  free_array (&f);
}

/* A stream's continuation that reads a degraded row whole for the row
 * cache meets a read error in a block it does not need, with no
 * redundancy left: the request still succeeds (its redo reads only what
 * it needs), where excluding that member would leave two blocks of its
 * rows missing.  Row r: member 1 (failed) and member 0 hold data, and the
 * row's last data block is on neither; the request is that block and all
 * of row r + 1, after a read that ends where it begins. */
static void
run_degraded_stream_error (int level, int n)
{
  const uint32_t chunk = 65536;
  int k = n - (level == 6 ? 2 : 1);
  uint64_t W = (uint64_t) k * chunk, r, off;
  struct raid_geom g;
  struct raid_row rr;
  struct fixture f;
  uint8_t *buf;
  char err[256];
  int e;

  rng_state = 99 + level;
  make_array (&f, level, RAID_LAYOUT_LEFT_SYMMETRIC, n, chunk);
  workload (&f, 100);
  CHECK (raid_array_fail (f.a, "1", err, sizeof err) == 0, "fail: %s", err);
  if (level == 6)
    CHECK (raid_array_fail (f.a, "2", err, sizeof err) == 0, "fail: %s", err);
  CHECK (raid_geom_init (&g, level, RAID_LAYOUT_LEFT_SYMMETRIC, chunk, n, err,
                         sizeof err) == 0, "geom: %s", err);
  for (r = 2; r < 100; r++) {
    int last;
    raid_geom_row (&g, r, &rr);
    last = rr.data[k - 1];
    if (rr.role_data[1] >= 0 && rr.role_data[0] >= 0 && last > (level == 6 ? 2 : 1))
      break;
  }
  off = r * W + (uint64_t) (k - 1) * chunk;
  buf = malloc (W + chunk);
  CHECK (raid_array_pread (f.a, buf, W, off - W) == 0, "raid%d: the read before", level);
  f.dev[0].bad_lo = f.data_offset + r * chunk;
  f.dev[0].bad_hi = f.data_offset + (r + 1) * chunk;
  /* More passes than the read errors a member may have (each one still
   * continues the read before: ROWCACHE_RECENT ends are kept): a fill's
   * error must not count against member 0 (nothing repairs a block that
   * no request needs), else it goes faulty and the array fails. */
  for (int p = 0; p < STATE_MAX_READ_ERRORS + 2; p++) {
    e = raid_array_pread (f.a, buf, W + chunk, off);
    CHECK (e == 0 && memcmp (buf, f.model + off, W + chunk) == 0,
           "raid%d degraded stream, pass %d: a read error in a block the request does "
           "not need (row %" PRIu64 ", member 0): %s", level, p, r, strerror (e));
    if (e)
      break;
  }
  CHECK (raid_array_health (f.a) == RAID_HEALTH_DEGRADED,
         "raid%d degraded stream: health %s after reads that never need member 0's bad block",
         level, raid_health_name (raid_array_health (f.a)));
  f.dev[0].bad_lo = f.dev[0].bad_hi = 0;
  free (buf);
  free_array (&f);
}

/* A read error below the limit is repaired: the block is rebuilt from the
 * others and rewritten, the member stays in sync. */
static void
run_read_repair (void)
{
  struct fixture f;
  uint8_t *buf;

  rng_state = 12345;
  make_array (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 4, 65536);
  workload (&f, 100);
  buf = malloc (f.size);
  /* Corrupt nothing, just fail reads once on member 2: a read error. */
  f.dev[2].fail_reads = 1;
  f.dev[2].fail_writes = 0;
  int r = raid_array_pread (f.a, buf, 65536 * 3, 0);
  f.dev[2].fail_reads = 0;
  CHECK (r == 0 && memcmp (buf, f.model, 65536 * 3) == 0, "read repair: data");
  CHECK (raid_array_health (f.a) == RAID_HEALTH_OPTIMAL, "read repair: health %s",
         raid_health_name (raid_array_health (f.a)));
  CHECK (verify_parity (&f, 0) == 0, "read repair: parity");
  free (buf);
  free_array (&f);
}

/* Concurrent writers on interleaved ranges within the same rows. */
struct thr { struct fixture *f; int id, nthreads; };

static void *
writer (void *p)
{
  struct thr *t = p;
  struct fixture *f = t->f;
  uint64_t blk = 1024, nblk = f->size / blk;
  uint8_t buf[1024];

  for (int iter = 0; iter < 4; iter++)
    for (uint64_t b = t->id; b < nblk; b += t->nthreads) {
      memset (buf, (int) (b * 31 + iter + t->id), sizeof buf);
      if (raid_array_pwrite (f->a, buf, blk, b * blk, 0) != 0)
        return (void *) 1;
    }
  return NULL;
}

static void
run_concurrency (int level, int layout, int n)
{
  struct fixture f;
  pthread_t th[6];
  struct thr t[6];

  make_array (&f, level, layout, n, 4096);
  for (int i = 0; i < 6; i++) {
    t[i] = (struct thr) { &f, i, 6 };
    pthread_create (&th[i], NULL, writer, &t[i]);
  }
  for (int i = 0; i < 6; i++) {
    void *r;
    pthread_join (th[i], &r);
    CHECK (r == NULL, "concurrent writer %d failed", i);
  }
  for (uint64_t b = 0; b < f.size / 1024; b++)
    memset (f.model + b * 1024, (int) (b * 31 + 3 + b % 6), 1024);
  verify_contents (&f, "concurrency");
  CHECK (verify_parity (&f, 0) == 0, "concurrency: raid%d parity", level);
  free_array (&f);
}


/* Rebuild onto a spare while a writer runs; prove the rebuilt member by
 * failing another one and reading everything back. */
static void *
rebuild_writer (void *p)
{
  struct fixture *f = p;
  uint8_t buf[8192];

  for (int i = 0; i < 400; i++) {
    uint64_t off = (rnd () % (f->size / 4096 - 2)) * 4096 + (i % 3) * 100;
    memset (buf, i, sizeof buf);
    if (raid_array_pwrite (f->a, buf, sizeof buf, off, 0) != 0)
      return (void *) 1;
    memcpy (f->model + off, buf, sizeof buf);
  }
  return NULL;
}

static void
run_rebuild (int level, int layout, int n)
{
  struct fixture f;
  struct raid_status st;
  char err[256], spare[64];
  uint64_t min = 0, max = 4u << 20;
  pthread_t th;
  void *r;
  FILE *fp;

  rng_state = 777 + level;
  make_array (&f, level, layout, n, 16384);
  CHECK (raid_array_start (f.a) == 0, "start");
  workload (&f, 100);
  CHECK (raid_array_fail (f.a, "1", err, sizeof err) == 0, "fail role 1: %s", err);
  if (level == 6)
    CHECK (raid_array_fail (f.a, "3", err, sizeof err) == 0, "fail role 3: %s", err);
  if (level != 1)
    CHECK (raid_array_fail (f.a, "0", err, sizeof err) == EBUSY,
           "fail beyond redundancy not refused");
  workload (&f, 50);
  raid_array_set_speed (f.a, &min, &max, err, sizeof err);

  snprintf (spare, sizeof spare, "/dev/shm/test-stripe-spare-%d", (int) getpid ());
  unlink (spare);
  fp = fopen (spare, "w");
  CHECK (fp && ftruncate (fileno (fp), f.member_size) == 0, "spare file");
  fclose (fp);
  CHECK (raid_array_add (f.a, spare, false, err, sizeof err) == 0, "add spare: %s", err);
  CHECK (raid_array_add (f.a, spare, false, err, sizeof err) == EEXIST, "add twice: %s", err);
  raid_array_status (f.a, &st);
  CHECK (st.sync_action == RAID_SYNC_RECOVER || level == 1, "recovery not started: %s",
         raid_sync_action_name (st.sync_action));
  pthread_create (&th, NULL, rebuild_writer, &f);
  pthread_join (th, &r);
  CHECK (r == NULL, "writer during rebuild failed");
  max = 0;
  raid_array_set_speed (f.a, NULL, &max, err, sizeof err);
  raid_array_wait (f.a, 60);
  raid_array_status (f.a, &st);
  if (level == 6 && st.health == RAID_HEALTH_DEGRADED) {
    /* Second spare for the second failed role. */
    char spare2[80];
    snprintf (spare2, sizeof spare2, "%s-2", spare);
    fp = fopen (spare2, "w");
    CHECK (fp && ftruncate (fileno (fp), f.member_size) == 0, "spare file");
    fclose (fp);
    CHECK (raid_array_add (f.a, spare2, false, err, sizeof err) == 0, "add spare 2: %s", err);
    raid_array_wait (f.a, 60);
    raid_array_status (f.a, &st);
    unlink (spare2);
  }
  CHECK (st.health == RAID_HEALTH_OPTIMAL && st.sync_action == RAID_SYNC_IDLE,
         "after rebuild: %s %s", raid_health_name (st.health),
         raid_sync_action_name (st.sync_action));
  verify_contents (&f, "after rebuild");
  /* Now lose other members: data must come from the rebuilt ones. */
  f.dev[0].fail_reads = f.dev[0].fail_writes = 1;
  if (level == 6)
    f.dev[2].fail_reads = f.dev[2].fail_writes = 1;
  verify_contents (&f, "rebuilt member carries the data");
  unlink (spare);
  free_array (&f);
}

/* Replace a working member onto a spare while a writer runs; then the old
 * member is retired and the spare carries the role's data.  With
 * source_fails, the member being replaced dies half-way: the replace turns
 * into a recovery onto the same spare. */
static void
run_replace (bool source_fails)
{
  struct fixture f;
  struct raid_status st;
  char err[256], spare[64];
  uint64_t max = 2u << 20;
  pthread_t th;
  void *r;
  FILE *fp;

  rng_state = source_fails ? 5150 : 5151;
  /* 20 MiB of data per member: several throttled batches of 4 MiB. */
  make_array_ex (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 4, 16384, 24u << 20, 4u << 20);
  CHECK (raid_array_start (f.a) == 0, "start");
  workload (&f, 100);
  snprintf (spare, sizeof spare, "/dev/shm/test-stripe-repl-%d", (int) getpid ());
  unlink (spare);
  fp = fopen (spare, "w");
  CHECK (fp && ftruncate (fileno (fp), f.member_size) == 0, "spare file");
  fclose (fp);
  CHECK (raid_array_replace (f.a, "1", NULL, err, sizeof err) == ENODEV,
         "replace without a spare: %s", err);
  CHECK (raid_array_add (f.a, spare, false, err, sizeof err) == 0, "add: %s", err);
  CHECK (raid_array_replace (f.a, spare, NULL, err, sizeof err) == EBUSY,
         "replacing a spare must be refused");
  raid_array_set_speed (f.a, &(uint64_t) { 0 }, &max, err, sizeof err);
  CHECK (raid_array_replace (f.a, "1", spare, err, sizeof err) == 0, "replace: %s", err);
  raid_array_status (f.a, &st);
  CHECK (st.sync_action == RAID_SYNC_RECOVER, "replace runs as recover: %s",
         raid_sync_action_name (st.sync_action));
  CHECK (st.health == RAID_HEALTH_OPTIMAL, "optimal while replacing");
  pthread_create (&th, NULL, rebuild_writer, &f);
  pthread_join (th, &r);
  if (source_fails) {
    raid_array_status (f.a, &st);
    CHECK (st.sync_action == RAID_SYNC_RECOVER && st.progress.done < st.progress.total,
           "replace still copying when its source fails (%" PRIu64 "/%" PRIu64 ")",
           st.progress.done, st.progress.total);
    f.dev[1].fail_reads = f.dev[1].fail_writes = 1;
    workload (&f, 20);                     /* writes that meet the dead source */
  }
  CHECK (r == NULL, "writer during replace failed");
  max = 0;
  raid_array_set_speed (f.a, NULL, &max, err, sizeof err);
  raid_array_wait (f.a, 60);
  raid_array_status (f.a, &st);
  CHECK (st.health == RAID_HEALTH_OPTIMAL && st.sync_action == RAID_SYNC_IDLE,
         "after replace: %s %s", raid_health_name (st.health),
         raid_sync_action_name (st.sync_action));
  for (int i = 0; i < st.nmembers; i++) {
    if (strcmp (st.members[i].spec, spare) == 0)
      CHECK (st.members[i].role == 1 && st.members[i].state == RAID_MEMBER_IN_SYNC,
             "spare took role 1: role %d %s", st.members[i].role,
             raid_member_state_name (st.members[i].state));
  }
  verify_contents (&f, "after replace");
  /* The old member is out of use: fail it and another old member's
   * neighbour... only one may go: lose member 0 and read all. */
  f.dev[1].fail_reads = f.dev[1].fail_writes = 1;
  f.dev[0].fail_reads = f.dev[0].fail_writes = 1;
  verify_contents (&f, "replacement carries role 1");
  unlink (spare);
  free_array (&f);
}

/* check counts exactly the planted parity mismatches; repair fixes them. */
static void
run_scrub (int level, int layout, int n)
{
  struct fixture f;
  struct raid_status st;
  struct raid_geom g;
  struct raid_row rr;
  char err[256];
  const uint64_t rows[] = { 0, 5, 6, 40 };

  rng_state = 4242;
  make_array (&f, level, layout, n, 16384);
  workload (&f, 200);
  raid_geom_init (&g, level, layout, 16384, n, err, sizeof err);
  /* Plant: one byte in P of rows 0, 5, 40; two columns of Q or P in row 6. */
  for (size_t i = 0; i < 4; i++) {
    raid_geom_row (&g, rows[i], &rr);
    uint8_t *p = f.dev[rr.pd].data + f.data_offset + rows[i] * 16384;
    p[100 + i] ^= 0x5a;
    if (rows[i] == 6)
      (level == 6 ? f.dev[rr.qd].data + f.data_offset + 6 * 16384 : p)[8192 + 7] ^= 1;
  }
  CHECK (raid_array_check (f.a, false, err, sizeof err) == 0, "check: %s", err);
  /* The sync thread is not started yet: the check is pending, not done. */
  CHECK (raid_array_check (f.a, false, err, sizeof err) == EBUSY, "second check not refused");
  CHECK (raid_array_start (f.a) == 0, "start");
  raid_array_wait (f.a, 60);
  raid_array_status (f.a, &st);
  CHECK (st.mismatch_count == 5, "check found %" PRIu64 " mismatches, planted 5",
         st.mismatch_count);
  CHECK (verify_parity (&f, 0) == 4, "check must not modify parity");
  CHECK (raid_array_check (f.a, true, err, sizeof err) == 0, "repair: %s", err);
  raid_array_wait (f.a, 60);
  raid_array_status (f.a, &st);
  CHECK (st.mismatch_count == 5, "repair found %" PRIu64, st.mismatch_count);
  CHECK (verify_parity (&f, 0) == 0, "parity after repair");
  verify_contents (&f, "after repair");
  CHECK (raid_array_check (f.a, false, err, sizeof err) == 0, "check 2: %s", err);
  raid_array_wait (f.a, 60);
  raid_array_status (f.a, &st);
  CHECK (st.mismatch_count == 0, "check after repair found %" PRIu64, st.mismatch_count);
  free_array (&f);
}

/* stripe_parity_to recomputes a row's P or Q, as the array wrote it, onto
 * another member (a rejoining one: missed.h, O): every parity block of
 * the first rows, for the level and layout.  The data roles in Q order
 * matter for raid6 (Q exponents rotate with the row). */
static void
run_parity_to (int level, int layout, int n)
{
  struct fixture f;
  struct memdev scratch;
  struct member *dst;
  const struct layout *L;
  struct raid_row rr;
  int bad = 0;

  rng_state = 777;
  make_array (&f, level, layout, n, 16384);
  workload (&f, 200);
  scratch = (struct memdev) { .size = f.member_size, .data = calloc (1, f.member_size) };
  dst = member_new_custom ("scratch", scratch.size, &md_ops, &scratch);
  L = router_layout (&f.a->router, LAYOUT_CUR);
  CHECK (stripe_parity_to (f.a, L, 0, L->g.level == 6 ? -1 : 0, dst) == EINVAL ||
         L->g.level != 6, "a role that is no parity is refused");
  for (uint64_t row = 0; row < 3 * (uint64_t) n; row++) {
    raid_geom_row (&L->g, row, &rr);
    for (int p = 0; p < L->g.parity_disks; p++) {
      int role = p ? rr.qd : rr.pd;
      uint64_t off = f.data_offset + row * 16384;
      CHECK (stripe_parity_to (f.a, L, row, role, dst) == 0, "row %" PRIu64, row);
      bad += memcmp (scratch.data + off, f.dev[role].data + off, 16384) != 0;
    }
  }
  CHECK (bad == 0, "raid%d layout %d: %d parity blocks recomputed differ", level, layout, bad);
  member_close (dst);
  free (scratch.data);
  free_array (&f);
}

/* The row cache's buffers stay within ROWCACHE_BYTES when rows of two
 * sizes alternate (a reshape's two layouts). */
static void
run_rowcache_budget (void)
{
  static struct rowcache c;
  static uint8_t blk[4][1u << 20];
  uint8_t *b[4] = { blk[0], blk[1], blk[2], blk[3] };
  struct layout big = { .id = 0 }, small = { .id = 1 };
  uint64_t row = 0, peak = 0;

  big.g = (struct raid_geom) { .level = 5, .chunk = 1u << 20, .raid_disks = 5, .data_disks = 4 };
  small.g = (struct raid_geom) { .level = 5, .chunk = 64u << 10, .raid_disks = 5, .data_disks = 4 };
  rowcache_init (&c);
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 5; i++)
      rowcache_put (&c, &big, row++, rowcache_epoch (&c), b);
    for (int i = 0; i < 70; i++) {
      rowcache_put (&c, &small, row++, rowcache_epoch (&c), b);
      uint64_t sum = 0;
      for (int e = 0; e < ROWCACHE_ENTRIES; e++)
        sum += c.e[e].cap;
      peak = sum > peak ? sum : peak;
    }
  }
  CHECK (peak <= ROWCACHE_BYTES && c.bytes <= ROWCACHE_BYTES,
         "row cache: %" PRIu64 " bytes of buffers, budget %u", peak, ROWCACHE_BYTES);
  CHECK (rowcache_take (&c, &small, row - 1, 0, 4, blk[0]), "row cache: the last row kept");
  rowcache_fini (&c);
}

static unsigned long
flushes (struct fixture *f)
{
  unsigned long n = 0;
  for (int i = 0; i < f->n; i++)
    n += __atomic_load_n (&f->dev[i].nflushes, __ATOMIC_RELAXED);
  return n;
}

/* Flushes of one FUA write of 4K into row `row` (a part of it). */
static unsigned long
fua_flushes (struct fixture *f, uint64_t row, int i)
{
  uint64_t W = (uint64_t) f->chunk * (f->n - 1), off = row * W + 8192;
  uint8_t buf[4096];
  unsigned long n = flushes (f);

  memset (buf, 0x40 + i, sizeof buf);
  CHECK (raid_array_pwrite (f->a, buf, sizeof buf, off, RAID_IO_FUA) == 0, "FUA write %d", i);
  memcpy (f->model + off, buf, sizeof buf);
  return flushes (f) - n;
}

/* A FUA write into part of a row flushes every member first when a
 * whole-row write (logged as an intent only) has completed since the last
 * flush: its parity comes from such blocks (consistency.c); not
 * otherwise. */
static void
run_fua_sources (void)
{
  struct fixture f;
  uint64_t W;
  unsigned long base, dep, after_flush;
  uint8_t *row;

  make_array (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 4, 65536);
  CHECK (raid_array_start (f.a) == 0, "FUA sources: start");
  W = (uint64_t) f.chunk * 3;
  row = malloc (W);
  fua_flushes (&f, 0, 0);                  /* the array is dirty from here */
  base = fua_flushes (&f, 0, 1);           /* no whole-row write yet */
  memset (row, 0x77, W);
  CHECK (raid_array_pwrite (f.a, row, W, 2 * W, 0) == 0, "whole-row write");
  memcpy (f.model + 2 * W, row, W);
  dep = fua_flushes (&f, 2, 2);
  CHECK (dep >= base + (unsigned long) f.n, "FUA after a whole-row write: %lu flushes, "
         "%lu without one", dep, base);
  CHECK (fua_flushes (&f, 2, 3) == base, "FUA again: no flush needed");
  CHECK (raid_array_pwrite (f.a, row, W, 4 * W, 0) == 0, "whole-row write");
  memcpy (f.model + 4 * W, row, W);
  CHECK (raid_array_flush (f.a) == 0, "flush");
  after_flush = fua_flushes (&f, 4, 4);
  CHECK (after_flush == base, "FUA after a client flush: %lu flushes, %lu without one",
         after_flush, base);
  CHECK (verify_parity (&f, 0) == 0, "FUA sources: parity");
  verify_contents (&f, "FUA sources");
  free (row);
  free_array (&f);
}

/* REPLAY BOUND (journal.c): a client's flush checkpoints once the intents
 * since the last checkpoint name JOURNAL_REPLAY_BOUND of each member, and
 * not before; a checkpoint starts the count again. */
static void
run_replay_bound (void)
{
  struct fixture f;
  const uint64_t MiB = 1 << 20, per_member = 2 * MiB;   /* of 4 MiB written */
  uint64_t epoch0, want = JOURNAL_REPLAY_BOUND, off = 0;
  uint8_t *buf = malloc (4 * MiB);

  make_array_ex (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 3, 65536, 40 * MiB, 8 * MiB);
  CHECK (raid_array_start (f.a) == 0, "replay bound: start");
  epoch0 = f.a->sb.journal_epoch;
  for (; (off / 4 / MiB + 1) * per_member < want; off += 4 * MiB) {
    memset (buf, (int) (off / MiB) + 1, 4 * MiB);
    CHECK (raid_array_pwrite (f.a, buf, 4 * MiB, off, 0) == 0, "whole rows at %" PRIu64, off);
    memcpy (f.model + off, buf, 4 * MiB);
  }
  CHECK (off > 0, "the bound (%llu) holds a 4 MiB write", JOURNAL_REPLAY_BOUND);
  CHECK (atomic_load (&f.a->jn.intent_bytes) == off / 2,
         "intents name %" PRIu64 " of each member, not %" PRIu64,
         (uint64_t) atomic_load (&f.a->jn.intent_bytes), off / 2);
  CHECK (raid_array_flush (f.a) == 0, "flush under the bound");
  CHECK (f.a->sb.journal_epoch == epoch0, "no checkpoint under the bound: epoch %" PRIu64
         " -> %" PRIu64, epoch0, f.a->sb.journal_epoch);
  memset (buf, 0x5a, 4 * MiB);
  CHECK (raid_array_pwrite (f.a, buf, 4 * MiB, off, 0) == 0, "whole rows to the bound");
  memcpy (f.model + off, buf, 4 * MiB);
  CHECK (f.a->sb.journal_epoch == epoch0, "no checkpoint by a write alone");
  CHECK (raid_array_flush (f.a) == 0, "flush at the bound");
  CHECK (f.a->sb.journal_epoch == epoch0 + 1, "a checkpoint at the flush: epoch %" PRIu64
         " -> %" PRIu64, epoch0, f.a->sb.journal_epoch);
  CHECK (atomic_load (&f.a->jn.intent_bytes) == 0, "the count starts again");
  CHECK (raid_array_pwrite (f.a, buf, 65536, 0, 0) == 0, "a partial row");
  memcpy (f.model, buf, 65536);
  CHECK (raid_array_pwrite (f.a, buf, 4 * MiB, 4 * MiB, 0) == 0, "whole rows again");
  memcpy (f.model + 4 * MiB, buf, 4 * MiB);
  CHECK (atomic_load (&f.a->jn.intent_bytes) == per_member,
         "counted again from the checkpoint: %" PRIu64,
         (uint64_t) atomic_load (&f.a->jn.intent_bytes));
  CHECK (raid_array_flush (f.a) == 0 && f.a->sb.journal_epoch == epoch0 + 1,
         "no checkpoint at a flush under the bound again");
  CHECK (verify_parity (&f, 0) == 0, "replay bound: parity");
  verify_contents (&f, "replay bound");
  free (buf);
  free_array (&f);
}

int
main (void)
{
  static const struct { int level, layout, n; uint32_t chunk; } cases[] = {
    { 0, RAID_LAYOUT_NONE, 3, 16384 },
    { 1, RAID_LAYOUT_NONE, 3, 65536 },
    { 4, RAID_LAYOUT_PARITY_N, 4, 65536 },
    { 5, RAID_LAYOUT_LEFT_SYMMETRIC, 4, 65536 },
    { 5, RAID_LAYOUT_LEFT_SYMMETRIC, 5, 4096 },
    { 5, RAID_LAYOUT_RIGHT_ASYMMETRIC, 4, 16384 },
    { 5, RAID_LAYOUT_LEFT_ASYMMETRIC, 3, 8192 },
    { 5, RAID_LAYOUT_RIGHT_SYMMETRIC, 6, 4096 },
    { 5, RAID_LAYOUT_PARITY_0, 4, 32768 },
    { 5, RAID_LAYOUT_PARITY_N, 2, 8192 },
    { 6, RAID_LAYOUT_LEFT_SYMMETRIC, 5, 65536 },
    { 6, RAID_LAYOUT_LEFT_ASYMMETRIC, 6, 8192 },
    { 6, RAID_LAYOUT_RIGHT_SYMMETRIC, 4, 4096 },
    { 6, RAID_LAYOUT_PARITY_0, 5, 16384 },
    { 6, RAID_LAYOUT_LEFT_SYMMETRIC_6, 5, 8192 },
    { 6, RAID_LAYOUT_RIGHT_ASYMMETRIC_6, 6, 4096 },
    { 6, RAID_LAYOUT_PARITY_0_6, 5, 8192 },
  };

  raid_log_set_sink (NULL);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    run_case (cases[i].level, cases[i].layout, cases[i].n, cases[i].chunk);
  run_read_repair ();
  run_degraded_read_once (5, RAID_LAYOUT_LEFT_SYMMETRIC, 5);
  run_degraded_read_once (6, RAID_LAYOUT_LEFT_SYMMETRIC, 6);
  run_degraded_stream (5, RAID_LAYOUT_LEFT_SYMMETRIC, 6);
  run_degraded_stream (6, RAID_LAYOUT_LEFT_SYMMETRIC, 5);
  run_degraded_stream_error (5, 6);
  run_degraded_stream_error (6, 6);
  run_rowcache_budget ();
  run_fua_sources ();
  run_replay_bound ();
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    if (cases[i].level >= 4)
      run_parity_to (cases[i].level, cases[i].layout, cases[i].n);
  run_concurrency (5, RAID_LAYOUT_LEFT_SYMMETRIC, 4);
  run_concurrency (6, RAID_LAYOUT_LEFT_SYMMETRIC, 5);
  run_rebuild (5, RAID_LAYOUT_LEFT_SYMMETRIC, 4);
  run_rebuild (6, RAID_LAYOUT_LEFT_ASYMMETRIC, 5);
  run_rebuild (1, RAID_LAYOUT_NONE, 3);
  run_replace (false);
  run_replace (true);
  run_scrub (5, RAID_LAYOUT_RIGHT_SYMMETRIC, 4);
  run_scrub (6, RAID_LAYOUT_LEFT_SYMMETRIC, 5);
  return test_summary ("test-stripe");
}
