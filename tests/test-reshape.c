/* nbdkit-raid: live reshape test (raidcore level).
 *
 * Every supported change (nbdkit-raid-plugin(1), Live reshape: member
 * count up and down, chunk, layout, raid4<->5, raid5<->6, raid0->5,
 * raid1<->5 with two members) runs on an in-memory array (members of
 * 24 MiB, data at 8 MiB: 4 MiB of head room) with a writer running while
 * data moves; afterwards the whole array is compared with the model, the
 * new geometry is checked, and the array is read again with a member
 * failed, which only works if every row's parity is right.  Also: freeze
 * then start continues from the recorded position; abort; reassembly of a
 * frozen reshape; and every refusal changes nothing (events unchanged).
 * With the exported size ending inside a row and an added member holding
 * old bytes, check finds no mismatch after the reshape and after a grow.
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
#include "sb.h"
#include "util.h"

#define MSIZE (24u << 20)
#define DOFF (8u << 20)

static char spare_paths[4][64];

static const char *
new_member (int i, uint64_t size)
{
  FILE *fp;

  snprintf (spare_paths[i], sizeof spare_paths[i], "/dev/shm/test-reshape-%d-%d",
            (int) getpid (), i);
  unlink (spare_paths[i]);
  fp = fopen (spare_paths[i], "w");
  if (!fp || ftruncate (fileno (fp), size) != 0) {
    perror (spare_paths[i]);
    exit (1);
  }
  fclose (fp);
  return spare_paths[i];
}

static void
cleanup_members (void)
{
  for (int i = 0; i < 4; i++)
    if (spare_paths[i][0])
      unlink (spare_paths[i]);
}

/* A writer running while the reshape moves data; it owns every 7th 4K
 * block so the model stays exact. */
struct wctx { struct fixture *f; int iters; int err; };

static void *
writer (void *p)
{
  struct wctx *w = p;
  struct fixture *f = w->f;
  uint8_t buf[4096 + 100];
  uint64_t nblk = f->size / 4096;
  uint64_t x = 88172645463325252ull;

  for (int i = 0; i < w->iters; i++) {
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    uint64_t b = (x % (nblk / 7)) * 7, off = b * 4096 + (i % 3) * 33;
    uint64_t len = i % 5 == 0 ? 4096 + 100 : 1000;
    if (off + len > f->size)
      continue;
    memset (buf, (int) (i * 13 + 1), len);
    if ((w->err = raid_array_pwrite (f->a, buf, len, off, 0)) != 0)
      return NULL;
    memcpy (f->model + off, buf, len);
    if (i % 4 == 0) {
      uint8_t rb[4096 + 100];
      if (raid_array_pread (f->a, rb, len, off) != 0 || memcmp (rb, buf, len) != 0) {
        w->err = EIO;
        return NULL;
      }
    }
  }
  return NULL;
}

static void
status_geom (struct fixture *f, int level, int layout, uint32_t chunk, int n,
             const char *what)
{
  struct raid_status st;

  raid_array_status (f->a, &st);
  CHECK (st.geom.level == level && st.geom.layout == layout &&
         st.geom.chunk == chunk && st.geom.raid_disks == n && !st.has_reshape &&
         st.sync_action == RAID_SYNC_IDLE,
         "%s: geometry raid%d %s chunk %u x%d, reshape %d, action %s", what,
         st.geom.level, raid_layout_name (st.geom.layout), st.geom.chunk,
         st.geom.raid_disks, st.has_reshape, raid_sync_action_name (st.sync_action));
}

/* Prepare, start with a concurrent writer, wait, verify. */
static void
reshape_case (const char *what, int level, int layout, int n, uint32_t chunk,
              struct raid_reshape_req req, int to_level, int to_layout,
              uint32_t to_chunk, int to_n, bool grows)
{
  struct fixture f;
  struct raid_status plan, st;
  struct wctx w;
  pthread_t th;
  uint64_t old_size;
  char err[512];
  int r;

  rng_state = 1000 + level * 100 + n;
  make_array_ex (&f, level, layout, n, chunk, MSIZE, DOFF);
  CHECK (raid_array_start (f.a) == 0, "start");
  workload (&f, 120);
  old_size = f.size;

  r = raid_array_reshape (f.a, &req, &plan, err, sizeof err);
  CHECK (r == 0, "%s: prepare: %s", what, err);
  if (r) {
    free_array (&f);
    return;
  }
  CHECK (plan.has_reshape && !plan.reshape.running && plan.reshape.position == 0 &&
         plan.sync_action == RAID_SYNC_FROZEN && plan.reshape.to.level == to_level &&
         plan.reshape.to.raid_disks == to_n,
         "%s: plan: reshape %d running %d pos %" PRIu64 " action %s to raid%d x%d", what,
         plan.has_reshape, plan.reshape.running, plan.reshape.position,
         raid_sync_action_name (plan.sync_action), plan.reshape.to.level,
         plan.reshape.to.raid_disks);
  /* Prepared means frozen: nothing moves, I/O works. */
  workload (&f, 30);
  raid_array_status (f.a, &st);
  CHECK (st.reshape.position == 0, "%s: moved while frozen", what);
  verify_contents (&f, what);

  w = (struct wctx) { &f, 3000, 0 };
  pthread_create (&th, NULL, writer, &w);
  CHECK (raid_array_start_action (f.a, err, sizeof err) == 0, "%s: start: %s", what, err);
  pthread_join (th, NULL);
  CHECK (w.err == 0, "%s: writer during reshape: %s", what, strerror (w.err));
  raid_array_wait (f.a, 120);
  status_geom (&f, to_level, to_layout, to_chunk, to_n, what);
  raid_array_status (f.a, &st);
  CHECK (grows ? st.size > old_size : st.size == old_size,
         "%s: size %" PRIu64 " (was %" PRIu64 ")", what, st.size, old_size);
  if (st.size > old_size) {
    uint8_t *z = malloc (st.size - old_size);
    CHECK (raid_array_pread (f.a, z, st.size - old_size, old_size) == 0, "read new space");
    for (uint64_t i = 0; i < st.size - old_size; i++)
      if (z[i]) {
        CHECK (0, "%s: new capacity not zero at %" PRIu64, what, old_size + i);
        break;
      }
    free (z);
    f.size = old_size;                     /* the model covers the old size */
  }
  verify_contents (&f, what);
  workload (&f, 60);
  verify_contents (&f, what);
  if (to_level >= 4) {
    /* Lose a member of the old set: every row must still decode. */
    f.dev[1].fail_reads = f.dev[1].fail_writes = 1;
    verify_contents (&f, what);
  }
  free_array (&f);
  cleanup_members ();
}

static struct raid_reshape_req
req_of (int level, int layout, uint32_t chunk, int raid_devices, int nadd, ...)
{
  static const char *adds[4];
  struct raid_reshape_req r = { level, layout, chunk, raid_devices, nadd, adds };
  for (int i = 0; i < nadd; i++)
    adds[i] = new_member (i, MSIZE);
  return r;
}

/* Freeze right after start; I/O across the boundary must not block; start
 * again continues from the recorded position. */
static void
freeze_case (void)
{
  struct fixture f;
  struct raid_status st;
  struct raid_reshape_req req;
  uint64_t pos;
  char err[256];

  rng_state = 31337;
  make_array_ex (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 4, 16384, MSIZE, DOFF);
  CHECK (raid_array_start (f.a) == 0, "start");
  workload (&f, 100);
  req = req_of (-1, -1, 4096, 0, 0);       /* chunk 16K -> 4K: many windows */
  CHECK (raid_array_reshape (f.a, &req, NULL, err, sizeof err) == 0, "prepare: %s", err);
  CHECK (raid_array_start_action (f.a, err, sizeof err) == 0, "start: %s", err);
  CHECK (raid_array_freeze (f.a, err, sizeof err) == 0, "freeze: %s", err);
  raid_array_wait (f.a, 10);
  raid_array_status (f.a, &st);
  pos = st.reshape.position;
  CHECK (st.sync_action == RAID_SYNC_FROZEN && st.has_reshape && !st.reshape.running,
         "after freeze: %s", raid_sync_action_name (st.sync_action));
  /* Writes and reads all over, including across the boundary. */
  workload (&f, 200);
  verify_contents (&f, "frozen");
  raid_array_status (f.a, &st);
  CHECK (st.reshape.position == pos, "position moved while frozen");
  CHECK (raid_array_abort (f.a, err, sizeof err) == (pos ? EBUSY : 0) || pos == 0,
         "abort after data moved must be refused");
  if (pos == 0) {
    /* Nothing moved yet: prepare again for the rest of the test. */
    CHECK (raid_array_reshape (f.a, &req, NULL, err, sizeof err) == 0, "prepare: %s", err);
  }
  CHECK (raid_array_start_action (f.a, err, sizeof err) == 0, "start again: %s", err);
  raid_array_wait (f.a, 120);
  status_geom (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 4096, 4, "freeze case");
  verify_contents (&f, "after freeze/start");
  free_array (&f);
}

/* A frozen reshape survives close + reassembly and stays frozen. */
static void
restart_case (void)
{
  struct fixture f;
  struct raid_status st;
  struct raid_reshape_req req;
  struct member *ms[8];
  char err[256];
  uint64_t pos;

  rng_state = 4711;
  make_array_ex (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 4, 16384, MSIZE, DOFF);
  CHECK (raid_array_start (f.a) == 0, "start");
  workload (&f, 100);
  req = req_of (-1, -1, 0, 0, 1);
  CHECK (raid_array_reshape (f.a, &req, NULL, err, sizeof err) == 0, "prepare: %s", err);
  CHECK (raid_array_start_action (f.a, err, sizeof err) == 0, "start: %s", err);
  CHECK (raid_array_freeze (f.a, err, sizeof err) == 0, "freeze: %s", err);
  raid_array_wait (f.a, 10);
  raid_array_status (f.a, &st);
  pos = st.reshape.position;
  raid_array_close (f.a);

  for (int i = 0; i < 4; i++)
    ms[i] = member_new_custom ("mem", MSIZE, &md_ops, &f.dev[i]);
  ms[4] = member_open (spare_paths[0], MEMBER_READ_WRITE, err, sizeof err);
  CHECK (ms[4] != NULL, "reopen added member: %s", err);
  CHECK (raid_array_assemble (ms, 5, &(struct raid_assemble_opts) { 0 }, &f.a,
                              err, sizeof err) == 0, "reassemble: %s", err);
  CHECK (raid_array_start (f.a) == 0, "start");
  raid_array_status (f.a, &st);
  CHECK (st.has_reshape && !st.reshape.running && st.reshape.position == pos &&
         st.sync_action == RAID_SYNC_FROZEN,
         "after restart: reshape %d running %d pos %" PRIu64 " (was %" PRIu64 ") %s",
         st.has_reshape, st.reshape.running, st.reshape.position, pos,
         raid_sync_action_name (st.sync_action));
  verify_contents (&f, "restarted frozen");
  CHECK (raid_array_start_action (f.a, err, sizeof err) == 0, "start: %s", err);
  raid_array_wait (f.a, 120);
  status_geom (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 16384, 5, "restart case");
  f.size = raid_array_size (f.a) < f.size ? raid_array_size (f.a) : f.size;
  verify_contents (&f, "restart case done");
  free_array (&f);
  cleanup_members ();
}

/* Refusals change nothing, not even the event count. */
static void
refusal_case (void)
{
  struct fixture f;
  struct raid_status st0, st;
  struct raid_reshape_req req;
  char err[512];
  int r;

  make_array_ex (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 4, 65536, MSIZE, DOFF);
  CHECK (raid_array_start (f.a) == 0, "start");
  raid_array_status (f.a, &st0);
#define REFUSED(expect, what) do {                                        \
    r = raid_array_reshape (f.a, &req, NULL, err, sizeof err);            \
    raid_array_status (f.a, &st);                                          \
    CHECK (r == (expect) && st.events == st0.events && !st.has_reshape,    \
           "%s: got %d (%s), events %" PRIu64 " -> %" PRIu64, what, r, err, \
           st0.events, st.events);                                         \
  } while (0)
  req = req_of (-1, -1, 0, 0, 0);
  REFUSED (EINVAL, "same geometry");
  req = req_of (-1, -1, 0, 5, 0);
  REFUSED (EINVAL, "grow without add");
  req = req_of (-1, -1, 3000, 0, 0);
  REFUSED (EINVAL, "bad chunk");
  req = req_of (-1, RAID_LAYOUT_LEFT_SYMMETRIC_6, 0, 0, 0);
  REFUSED (EINVAL, "layout of another level");
  req = req_of (-1, -1, 0, 3, 0);
  REFUSED (ENOSPC, "shrink without resize");
  CHECK (strstr (err, "resize") != NULL, "shrink message names resize: %s", err);
  req = req_of (-1, -1, 0, 0, 1);
  new_member (0, 1 << 20);                 /* too small */
  REFUSED (ENOSPC, "new member too small");
  CHECK (raid_array_start_action (f.a, err, sizeof err) == EINVAL, "start with nothing prepared");
  req = req_of (-1, -1, 0, 0, 1);
  CHECK (raid_array_check (f.a, false, err, sizeof err) == 0, "check: %s", err);
  r = raid_array_reshape (f.a, &req, NULL, err, sizeof err);
  CHECK (r == EBUSY || r == 0, "reshape during check: %d", r);
  if (r == 0)
    raid_array_abort (f.a, err, sizeof err);
  raid_array_wait (f.a, 30);
  free_array (&f);
  cleanup_members ();

  /* No head room at all: data at 4 MiB. */
  make_array_ex (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 4, 65536, MSIZE, 4u << 20);
  raid_array_status (f.a, &st0);
  req = req_of (-1, -1, 0, 0, 1);
  REFUSED (ENOSPC, "no head room");
  CHECK (strstr (err, "room") != NULL, "ENOSPC message names the room: %s", err);
  free_array (&f);
  cleanup_members ();
}

/* Shrink 5 -> 4 members: refused until resized; then runs backward and
 * the member it no longer uses becomes a spare. */
static void
shrink_case (void)
{
  struct fixture f;
  struct raid_status st;
  struct raid_reshape_req req = { -1, -1, 0, 4, 0, NULL };
  struct wctx w;
  pthread_t th;
  char err[512], *p;
  uint64_t cap;

  rng_state = 99;
  make_array_ex (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 5, 65536, MSIZE, DOFF);
  CHECK (raid_array_start (f.a) == 0, "start");
  workload (&f, 100);
  CHECK (raid_array_reshape (f.a, &req, NULL, err, sizeof err) == ENOSPC, "shrink before resize");
  p = strstr (err, "at most ");
  cap = p ? strtoull (p + 8, NULL, 10) : 0;
  CHECK (cap > 0 && cap < f.size, "capacity in the message: %s", err);
  CHECK (raid_array_resize (f.a, cap, true, err, sizeof err) == 0, "resize: %s", err);
  f.size = cap;
  CHECK (raid_array_reshape (f.a, &req, &st, err, sizeof err) == 0, "prepare: %s", err);
  CHECK (st.reshape.direction == SB_DIR_BACKWARD, "shrink runs backward");
  w = (struct wctx) { &f, 2000, 0 };
  pthread_create (&th, NULL, writer, &w);
  CHECK (raid_array_start_action (f.a, err, sizeof err) == 0, "start: %s", err);
  pthread_join (th, NULL);
  CHECK (w.err == 0, "writer during shrink: %s", strerror (w.err));
  raid_array_wait (f.a, 120);
  status_geom (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 65536, 4, "shrink");
  raid_array_status (f.a, &st);
  CHECK (st.size == cap, "size after shrink %" PRIu64, st.size);
  for (int i = 0; i < st.nmembers; i++)
    if (st.members[i].role < 0)
      CHECK (st.members[i].state == RAID_MEMBER_SPARE, "removed member is a spare");
  verify_contents (&f, "after shrink");
  f.dev[0].fail_reads = f.dev[0].fail_writes = 1;
  verify_contents (&f, "after shrink, degraded");
  free_array (&f);
}

/* Prepared, not started, aborted: back to the old geometry; the added
 * member is a spare. */
static void
abort_case (void)
{
  struct fixture f;
  struct raid_status st;
  struct raid_reshape_req req;
  char err[256];

  make_array_ex (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 4, 65536, MSIZE, DOFF);
  CHECK (raid_array_start (f.a) == 0, "start");
  workload (&f, 50);
  req = req_of (-1, -1, 0, 0, 1);
  CHECK (raid_array_reshape (f.a, &req, NULL, err, sizeof err) == 0, "prepare: %s", err);
  CHECK (raid_array_reshape (f.a, &req, NULL, err, sizeof err) == EBUSY, "second prepare");
  CHECK (raid_array_abort (f.a, err, sizeof err) == 0, "abort: %s", err);
  status_geom (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 65536, 4, "abort");
  raid_array_status (f.a, &st);
  CHECK (st.nmembers == 5 && st.members[4].state == RAID_MEMBER_SPARE,
         "added member after abort: %s", raid_member_state_name (st.members[4].state));
  verify_contents (&f, "after abort");
  free_array (&f);
  cleanup_members ();
}

/* A new member that holds old bytes, as a device reused from elsewhere
 * does: nothing may count on it reading as zeros. */
static const char *
new_used_member (int i, uint64_t size)
{
  const char *path = new_member (i, size);
  uint8_t buf[65536];
  FILE *fp = fopen (path, "r+");

  for (uint64_t off = 0; fp && off < size; off += sizeof buf) {
    for (size_t k = 0; k < sizeof buf; k++)
      buf[k] = (uint8_t) (rnd () | 1);
    fwrite (buf, 1, sizeof buf, fp);
  }
  if (!fp || fclose (fp) != 0) {
    perror (path);
    exit (1);
  }
  return path;
}

/* The exported size ends inside a row of the target (a resize to a size
 * that is not a whole number of rows), and the added member holds old
 * bytes.  check covers every row that holds exported bytes, the partial
 * last row whole: after the reshape it must find no mismatch, so the
 * reshape must leave that row's tail consistent too. */
static void
tail_case (const char *what, int level, int layout, int n, uint32_t chunk,
           struct raid_reshape_req req)
{
  struct fixture f;
  struct raid_status st;
  char err[512];
  uint64_t size;

  rng_state = 2024 + level * 10 + n;
  make_array_ex (&f, level, layout, n, chunk, MSIZE, DOFF);
  CHECK (raid_array_start (f.a) == 0, "%s: start", what);
  for (uint64_t i = 0; i < f.size; i++)    /* old bytes everywhere the target's tail may lie */
    f.model[i] = (uint8_t) rnd ();
  CHECK (raid_array_pwrite (f.a, f.model, f.size, 0, 0) == 0, "%s: fill", what);
  /* 12K into a row of the target when its row width divides the old one
   * (every case but the grow, whose reshape zeroes past the size anyway):
   * less than a chunk, so most columns of that row hold no exported byte. */
  size = f.size - 2 * (uint64_t) chunk * (n - (level == 6 ? 2 : 1)) + 3 * 4096;
  CHECK (raid_array_resize (f.a, size, true, err, sizeof err) == 0, "%s: resize: %s", what, err);
  f.size = size;
  workload (&f, 80);
  for (int i = 0; i < req.nadd; i++)
    new_used_member (i, MSIZE);            /* the path req_of named */
  CHECK (raid_array_reshape (f.a, &req, NULL, err, sizeof err) == 0, "%s: prepare: %s", what, err);
  CHECK (raid_array_start_action (f.a, err, sizeof err) == 0, "%s: start: %s", what, err);
  raid_array_wait (f.a, 120);
  raid_array_status (f.a, &st);
  CHECK (!st.has_reshape && st.size >= size, "%s: reshape done %d, size %" PRIu64, what,
         !st.has_reshape, st.size);
  CHECK (raid_array_check (f.a, false, err, sizeof err) == 0, "%s: check: %s", what, err);
  raid_array_wait (f.a, 120);
  raid_array_status (f.a, &st);
  CHECK (st.sync_action == RAID_SYNC_IDLE && st.mismatch_count == 0,
         "%s: check after the reshape: %s, %" PRIu64 " mismatches", what,
         raid_sync_action_name (st.sync_action), st.mismatch_count);
  verify_contents (&f, what);
  if (st.size > size)                      /* the reshape grew it to all there is */
    goto out;
  /* Grow by one row: the new size ends 12K into a row the reshape did not
   * write (rows past the exported ones hold old bytes); resize must leave
   * that row consistent whole as well. */
  size = st.size + (uint64_t) st.geom.chunk * (st.geom.raid_disks - (st.geom.level == 6 ? 2 : 1));
  CHECK (raid_array_resize (f.a, size, false, err, sizeof err) == 0, "%s: grow: %s", what, err);
  CHECK (raid_array_check (f.a, false, err, sizeof err) == 0, "%s: check: %s", what, err);
  raid_array_wait (f.a, 120);
  raid_array_status (f.a, &st);
  CHECK (st.size == size && st.sync_action == RAID_SYNC_IDLE && st.mismatch_count == 0,
         "%s: check after growing to %" PRIu64 ": size %" PRIu64 ", %s, %" PRIu64
         " mismatches", what, size, st.size, raid_sync_action_name (st.sync_action),
         st.mismatch_count);
 out:
  free_array (&f);
  cleanup_members ();
}

/* Two reshapes in one run, the second with target rows (20 MiB) wider
 * than the first one's copy buffer needed (a window is at least one row):
 * the worker's buffer must grow, and the data come through intact. */
static void
wide_rows_case (void)
{
  struct fixture f;
  struct raid_reshape_req req;
  char err[256];

  make_array_ex (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 6, 65536, 48u << 20, 16u << 20);
  CHECK (raid_array_start (f.a) == 0, "start");
  workload (&f, 60);
  req = req_of (-1, RAID_LAYOUT_RIGHT_ASYMMETRIC, 0, 0, 0);
  CHECK (raid_array_reshape (f.a, &req, NULL, err, sizeof err) == 0, "wide rows: "
         "prepare the layout change: %s", err);
  CHECK (raid_array_start_action (f.a, err, sizeof err) == 0, "wide rows: start: %s", err);
  raid_array_wait (f.a, 120);
  status_geom (&f, 5, RAID_LAYOUT_RIGHT_ASYMMETRIC, 65536, 6, "wide rows: first reshape");
  req = req_of (-1, -1, 4u << 20, 0, 0);
  CHECK (raid_array_reshape (f.a, &req, NULL, err, sizeof err) == 0, "wide rows: "
         "prepare chunk 4M: %s", err);
  CHECK (raid_array_start_action (f.a, err, sizeof err) == 0, "wide rows: start: %s", err);
  raid_array_wait (f.a, 120);
  status_geom (&f, 5, RAID_LAYOUT_RIGHT_ASYMMETRIC, 4u << 20, 6, "wide rows: chunk 4M");
  verify_contents (&f, "wide rows");
  f.dev[2].fail_reads = f.dev[2].fail_writes = 1;
  verify_contents (&f, "wide rows, member 2 failed");
  free_array (&f);
}

/* A degraded array whose failed member was removed (its role holds no
 * member) reshapes like one whose failed member is still listed: the
 * empty role has no offset of its own (a member that takes it gets the
 * layout's), so it is no room the members lack.  Then a spare recovers
 * the role, and every row decodes without another member. */
static void
empty_role_case (void)
{
  struct fixture f;
  struct raid_reshape_req req = req_of (-1, -1, 16384, 0, 0);
  char err[512];

  rng_state = 4242;
  make_array_ex (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 5, 65536, MSIZE, DOFF);
  CHECK (raid_array_start (f.a) == 0, "start");
  workload (&f, 100);
  CHECK (raid_array_fail (f.a, "2", err, sizeof err) == 0, "fail: %s", err);
  CHECK (raid_array_remove (f.a, "2", err, sizeof err) == 0, "remove: %s", err);
  CHECK (raid_array_reshape (f.a, &req, NULL, err, sizeof err) == 0,
         "prepare with an empty role: %s", err);
  CHECK (raid_array_start_action (f.a, err, sizeof err) == 0, "start: %s", err);
  workload (&f, 60);
  raid_array_wait (f.a, 120);
  status_geom (&f, 5, RAID_LAYOUT_LEFT_SYMMETRIC, 16384, 5, "empty role");
  verify_contents (&f, "reshaped with an empty role");
  CHECK (raid_array_add (f.a, new_member (1, MSIZE), false, err, sizeof err) == 0,
         "add a spare: %s", err);
  raid_array_wait (f.a, 120);
  CHECK (raid_array_health (f.a) == RAID_HEALTH_OPTIMAL, "the role recovered");
  f.dev[0].fail_reads = f.dev[0].fail_writes = 1;
  verify_contents (&f, "empty role recovered, another member lost");
  free_array (&f);
  cleanup_members ();
}

int
main (void)
{
  raid_log_set_sink (NULL);
  reshape_case ("raid5 4->5", 5, RAID_LAYOUT_LEFT_SYMMETRIC, 4, 65536,
                req_of (-1, -1, 0, 0, 1), 5, RAID_LAYOUT_LEFT_SYMMETRIC, 65536, 5, true);
  reshape_case ("raid5 chunk 64K->16K", 5, RAID_LAYOUT_LEFT_SYMMETRIC, 4, 65536,
                req_of (-1, -1, 16384, 0, 0), 5, RAID_LAYOUT_LEFT_SYMMETRIC, 16384, 4, false);
  reshape_case ("raid5 layout ls->ra", 5, RAID_LAYOUT_LEFT_SYMMETRIC, 4, 16384,
                req_of (-1, RAID_LAYOUT_RIGHT_ASYMMETRIC, 0, 0, 0), 5,
                RAID_LAYOUT_RIGHT_ASYMMETRIC, 16384, 4, false);
  reshape_case ("raid5->6", 5, RAID_LAYOUT_LEFT_SYMMETRIC, 4, 65536,
                req_of (6, -1, 0, 0, 1), 6, RAID_LAYOUT_LEFT_SYMMETRIC_6, 65536, 5, false);
  reshape_case ("raid5->6 left-symmetric", 5, RAID_LAYOUT_LEFT_SYMMETRIC, 4, 65536,
                req_of (6, RAID_LAYOUT_LEFT_SYMMETRIC, 0, 0, 1), 6,
                RAID_LAYOUT_LEFT_SYMMETRIC, 65536, 5, false);
  reshape_case ("raid6->5", 6, RAID_LAYOUT_LEFT_SYMMETRIC, 5, 65536,
                req_of (5, -1, 0, 4, 0), 5, RAID_LAYOUT_LEFT_SYMMETRIC, 65536, 4, false);
  reshape_case ("raid4->5", 4, RAID_LAYOUT_PARITY_N, 4, 65536,
                req_of (5, -1, 0, 0, 0), 5, RAID_LAYOUT_PARITY_N, 65536, 4, false);
  reshape_case ("raid5->4", 5, RAID_LAYOUT_PARITY_N, 4, 65536,
                req_of (4, -1, 0, 0, 0), 4, RAID_LAYOUT_PARITY_N, 65536, 4, false);
  reshape_case ("raid0->5", 0, RAID_LAYOUT_NONE, 3, 65536,
                req_of (5, -1, 0, 0, 1), 5, RAID_LAYOUT_PARITY_N, 65536, 4, false);
  reshape_case ("raid1->5", 1, RAID_LAYOUT_NONE, 2, 65536,
                req_of (5, -1, 0, 0, 0), 5, RAID_LAYOUT_LEFT_SYMMETRIC, 65536, 2, false);
  reshape_case ("raid5->1", 5, RAID_LAYOUT_LEFT_SYMMETRIC, 2, 65536,
                req_of (1, -1, 0, 0, 0), 1, RAID_LAYOUT_NONE, 65536, 2, false);
  reshape_case ("raid6 5->6", 6, RAID_LAYOUT_LEFT_SYMMETRIC, 5, 16384,
                req_of (-1, -1, 0, 0, 1), 6, RAID_LAYOUT_LEFT_SYMMETRIC, 16384, 6, true);
  tail_case ("tail: raid5->6 adding a used member", 5, RAID_LAYOUT_LEFT_SYMMETRIC, 3, 65536,
             req_of (6, -1, 0, 0, 1));
  tail_case ("tail: raid6 chunk 64K->16K", 6, RAID_LAYOUT_LEFT_SYMMETRIC, 5, 65536,
             req_of (-1, -1, 16384, 0, 0));
  tail_case ("tail: raid6 layout ls->ra", 6, RAID_LAYOUT_LEFT_SYMMETRIC, 5, 65536,
             req_of (-1, RAID_LAYOUT_RIGHT_ASYMMETRIC, 0, 0, 0));
  tail_case ("tail: raid5 4->5 adding a used member", 5, RAID_LAYOUT_LEFT_SYMMETRIC, 4, 65536,
             req_of (-1, -1, 0, 0, 1));
  shrink_case ();
  empty_role_case ();
  freeze_case ();
  restart_case ();
  abort_case ();
  wide_rows_case ();
  refusal_case ();
  cleanup_members ();
  return test_summary ("test-reshape");
}
