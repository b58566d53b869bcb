/* nbdkit-raid: crash consistency — every member write is a crash point.
 *
 * THEORY
 *
 * An array is created with raid_create on tmpfs files; the images become the
 * base of simulated members (crashsim.h: durable image + pending writes,
 * power lost right after the N-th member write).  A scripted, seeded
 * workload runs on the assembled array: writes (sub-sector, 4 KiB, unaligned,
 * across chunks, full stripes), zeroes, flushes, FUA writes, and in some
 * workloads the failure of a member part-way through (all its I/O fails;
 * it stays dead at the reassembly), and ends with raid_array_close.  It is
 * run once without a crash to count its member writes (T) and record their
 * trace, then once for every N in 1..T with the power lost after write N
 * (assembly, every op and the close are covered).  The trace proves that
 * write N is the same write in every run.  An op during which the power
 * was lost counts as not completed.
 *
 * For every N and every crash mode (lose-all, keep-all, random subset,
 * random subset with a torn write; members independent) the post-crash
 * images are reassembled, in shuffled member order, over fresh simulated
 * members, and checked:
 *   1. assembly succeeds and the array serves reads (within redundancy);
 *   2. durability: every sector holds its last durable version or a later
 *      one.  A write is durable once it completed and then a flush
 *      succeeded, or it was FUA and completed, both before the crash;
 *   3. atomicity outside writes: a sector no non-durable write touched
 *      holds exactly its last durable version;
 *   4. redundancy after the crash (the write hole): with the journal
 *      policy, 2 and 3 hold as well when any one member (raid4/5) or any
 *      two (raid6) are left out of the reassembly, or when the array was
 *      already degraded by a member failure; with bitmap/resync, after the
 *      array's own resync every row's parity verifies.  Reported as "4"
 *      for a sector outside every non-durable write or holding durable
 *      data (the write hole proper), as "4w" for a sector inside a
 *      non-durable write that holds neither its old nor a new version
 *      (the journal policy allows it, the per-sector rule does not: see
 *      below);
 *   5. with the journal policy, after reassembly (and close) every row's
 *      parity verifies on the member images, with no resync.
 * A resync (bitmap/resync policies, and raid1 under any policy) must also
 * leave every touched row reading exactly as it did before it ran
 * (reported as 4).  raid1 workloads (three mirrors) are checked like the
 * bitmap/resync ones: after the array's own resync the mirrors of every
 * touched row agree (4); and since mirrors have no write hole, any one or
 * two members may be left out of their reassembly, whatever the policy.
 * The model keeps, per 512-byte array sector, the content after the last
 * durable write and the content after every later write (the write in
 * progress at the crash included); a sector passes when it equals one of
 * them.  Array sectors map to whole member sectors (data_offset and chunks
 * are multiples of 4 KiB), so a torn member write cannot split one.  When
 * a write becomes durable, its sectors' whole content does (bytes of an
 * earlier non-durable sub-sector write included): the engine writes whole
 * 4 KiB columns, as a disk with 512-byte sectors writes whole sectors.
 *
 * Rows checked: every stripe row of which some member page differs from
 * the created image in any layer (workload, crash, reassembly, recovery).
 * Every other row is bit-identical on every member to the freshly created
 * array, whose content is all zeroes with valid parity, which is what the
 * model expects there: checking it would only re-test the geometry.
 *
 * Counting: a failure is one (crash image set, invariant) pair; the first
 * one of each invariant per workload is described exactly (N, mode, what
 * each member kept, members left out, sector, acceptable versions, got).
 * Any invariant failure, or a failed harness check (a self-test, an op
 * failing without a crash, a run that is not deterministic), exits 1 —
 * except "4w", which is counted and its first case described, but does
 * not fail the run: the journal policy promises only that a crash changes
 * no block OUTSIDE the writes in flight (nbdkit-raid-plugin(1), Crash
 * consistency).  Inside a torn full-row write (the whole row is inside
 * that write) a member lost afterwards may rebuild bytes that are neither
 * old nor new; closing that too would mean journaling the data of every
 * full-row write, doubling the bytes of sequential writes.
 * The journal policy's man page states this limit.
 *
 * RESHAPE (--reshape; make check runs it as test-crash-reshape.sh).  The
 * same model and crash points, over workloads that write, prepare a
 * reshape (members a reshape adds are blank simulated disks, named to
 * raid_array_reshape through the member open hook), write to the frozen
 * reshape, let it move one window at a time (raid_test_hooks: a few rows
 * per step and a pause after each, so the workload's own writes land on
 * both sides of the boundary in a deterministic order: every member write
 * of the copy, the flushes and the checkpoint commits is a crash point),
 * write again, finish it and write to the new geometry.  Cases: grow,
 * chunk, layout, 5->6, 6->5, 4->5, 1->5 and 5->1 of two members (a raid1
 * layout's mirrors are resynced after a dirty start, and the scrub
 * compares them), shrink (after resize), a member failing
 * mid-reshape, a reshape of a degraded array, and grow with the bitmap and
 * resync policies.  Each post-crash image set (with any one member left
 * out, journal policy) is reassembled and checked: the data as the crash
 * left it (2, 3, 4); then the reshape resumes (or is started if it was
 * frozen; a reshape that cannot start at position 0, because a member it
 * adds lost its record, is aborted) and must finish with the planned
 * geometry (or the old one when the crash came before prepare completed,
 * or after the abort), with every sector checked again; with every member
 * present, the array's own scrub must find no parity mismatch (5 for the
 * journal policy, 4 for the others, whose owed resync must run after the
 * reshape).  Any one member may be left out (the new layout of 6->5
 * tolerates one loss, so raid6 cases leave out one too).
 *
 * Options: --modes=abcd (crash modes), --no-removal, --only=SUBSTRING
 * (workload names), --point=N (one crash point, to reproduce a report),
 * --quick or SANITIZERS=yes (every 8th crash point: sanitizer builds),
 * --rotate-modes (crash point N in one mode only, cycling, so every point
 * is still covered: make check's reshape run), --reshape (the reshape
 * workloads instead of the others), --long[=SECONDS] or CRASH_LONG=1
 * (random workloads for CRASH_LONG_SECONDS, default 180, seeded by the
 * clock or CRASH_LONG_SEED; not part of make check), --verbose.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "array.h"
#include "create.h"
#include "crashsim.h"
#include "geometry.h"
#include "member.h"
#include "parity.h"
#include "sb.h"
#include "util.h"

static int checks, failures;        /* harness checks (not invariants) */
static bool verbose;
static uint64_t only_point;         /* --point=N: that crash point only */
static uint64_t point_stride = 1;   /* --quick: every 8th crash point */
static bool rotate_modes;           /* --rotate-modes: crash point N in one
                                       mode only, the (N mod 4)-th enabled */

#define CHECK(cond, ...) do {                                          \
    checks++;                                                           \
    if (!(cond)) {                                                      \
      failures++;                                                       \
      fprintf (stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);            \
      fprintf (stderr, __VA_ARGS__);                                    \
      fprintf (stderr, "\n");                                           \
      if (failures > 20) exit (1);                                      \
    }                                                                   \
  } while (0)

#define MEMBER_SIZE (6u << 20)
#define DATA_OFFSET (4u << 20)
#define SECTOR 512u
#define MAX_OPS 64
#define NINV 7                      /* invariants 1..5, and 4w */
#define INV_4W 6                    /* 4, sector inside a non-durable write */
#define TRACE_CAP 65536

/* ------------------------------------------------------------------ */
/* Workloads. */

enum op_kind { OP_WRITE, OP_ZERO, OP_FLUSH, OP_FAIL,
               OP_RESHAPE,          /* prepare the workload's reshape (frozen) */
               OP_STEP,             /* start it; one window moves (test hook) */
               OP_RESIZE };         /* resize the array to op.len bytes */

struct op {
  enum op_kind kind;
  uint64_t off, len;
  unsigned flags;                   /* RAID_IO_FUA */
  int member;                       /* OP_FAIL */
};

struct workload {
  char name[96];
  int level, layout, n;
  uint32_t chunk;
  int consistency;                  /* enum sb_consistency */
  uint64_t seed;
  int failed;                       /* member an OP_FAIL kills, -1 none */
  /* Reshape workloads (nadd members are added; 0 with no reshape op). */
  bool reshape;
  int nadd;
  int r_level, r_layout, r_raid_devices;   /* -1/-1/0: unchanged */
  uint32_t r_chunk;                        /* 0: unchanged */
  uint64_t member_size, data_offset;       /* 0: MEMBER_SIZE, DATA_OFFSET */
  int nops;
  struct op ops[MAX_OPS];
};

/* Per-workload results. */
struct tally {
  uint64_t points, images;
  uint64_t fail[NINV];
  char first[NINV][4096];
};

/* Everything one workload's checks need. */
struct ctx {
  struct workload wl;
  struct raid_geom g;
  uint64_t size, rows;              /* array bytes, rows of the data area */
  uint64_t msize, doff;             /* member size, data offset at create */
  uint64_t size_end;                /* array bytes after the crash-free run */
  struct cs_image *base[RAID_MAX_MEMBERS];
  uint64_t total;                   /* member writes of the crash-free run */
  int prepare_op;                   /* index of OP_RESHAPE, or -1 */
  uint64_t *ref_trace;
  unsigned modes;                   /* bit per enum cs_mode */
  bool no_removal;
  struct tally t;
};

static const char *
op_name (enum op_kind k)
{
  switch (k) {
  case OP_WRITE: return "pwrite";
  case OP_ZERO: return "zero";
  case OP_FLUSH: return "flush";
  case OP_FAIL: return "fail-member";
  case OP_RESHAPE: return "reshape-prepare";
  case OP_STEP: return "reshape-step";
  case OP_RESIZE: return "resize";
  }
  return "?";
}

static void
describe_op (const struct workload *wl, int k, char *buf, size_t len)
{
  const struct op *o;

  if (k < 0) {
    snprintf (buf, len, "assembly");
    return;
  }
  if (k >= wl->nops) {
    snprintf (buf, len, "close");
    return;
  }
  o = &wl->ops[k];
  if (o->kind == OP_WRITE || o->kind == OP_ZERO)
    snprintf (buf, len, "op %d %s %" PRIu64 "+%" PRIu64 "%s", k,
              op_name (o->kind), o->off, o->len,
              o->flags & RAID_IO_FUA ? " fua" : "");
  else if (o->kind == OP_FAIL)
    snprintf (buf, len, "op %d fail-member %d", k, o->member);
  else if (o->kind == OP_RESIZE)
    snprintf (buf, len, "op %d resize %" PRIu64, k, o->len);
  else
    snprintf (buf, len, "op %d %s", k, op_name (o->kind));
}

static void
add_op (struct workload *wl, enum op_kind kind, uint64_t off, uint64_t len,
        unsigned flags)
{
  if (wl->nops < MAX_OPS)
    wl->ops[wl->nops++] = (struct op) { kind, off, len, flags, -1 };
}

static void
add_fail (struct workload *wl, int member)
{
  add_op (wl, OP_FAIL, 0, 0, 0);
  wl->ops[wl->nops - 1].member = member;
  wl->failed = member;
}

/* Simulated disks of a workload: the members, then those a reshape adds. */
static int
ndisks (const struct workload *wl)
{
  return wl->n + wl->nadd;
}

static int
data_disks (int level, int n)
{
  return level == 1 ? 1 : level == 6 ? n - 2 : n - 1;
}

static uint64_t
stripe_width (const struct workload *wl)
{
  return (uint64_t) wl->chunk * data_disks (wl->level, wl->n);
}

/* Rows the scripted workloads write in: a few dozen, so a crash image set
 * is checked in about a millisecond. */
#define SPAN_ROWS 24

/* Sub-sector, 4 KiB aligned and unaligned, chunk-crossing and sector
 * writes, a flush every fourth op; the last ones stay unflushed. */
static void
gen_small (struct workload *wl, uint64_t rng, int nwrites)
{
  uint64_t span = SPAN_ROWS * stripe_width (wl), c = wl->chunk;

  for (int i = 0; i < nwrites; i++) {
    uint64_t off, len;

    switch (i % 5) {
    case 0:                        /* sub-sector */
      len = 1 + cs_rand (&rng) % 300;
      off = cs_rand (&rng) % (span - len);
      break;
    case 1:                        /* 4 KiB aligned */
      len = 4096;
      off = cs_rand (&rng) % (span / 4096 - 1) * 4096;
      break;
    case 2:                        /* 4 KiB unaligned */
      len = 4096;
      off = cs_rand (&rng) % (span / 4096 - 2) * 4096 + 1 + cs_rand (&rng) % 4000;
      break;
    case 3: {                      /* across a chunk boundary */
      uint64_t k = 1 + cs_rand (&rng) % (span / c - 2);
      off = k * c - 1 - cs_rand (&rng) % 2000;
      len = k * c - off + 1 + cs_rand (&rng) % 2000;
      break;
    }
    default:                       /* whole sectors */
      len = SECTOR * (1 + cs_rand (&rng) % 3);
      off = cs_rand (&rng) % (span / SECTOR - 4) * SECTOR;
      break;
    }
    add_op (wl, OP_WRITE, off, len, 0);
    if (i % 4 == 3)
      add_op (wl, OP_FLUSH, 0, 0, 0);
  }
}

/* Whole rows: written, rewritten, FUA, zeroed; first, partial writes to
 * the same rows, so a recovery that brings back a partial write a later
 * full-row write superseded is caught.  Last, a FUA write into part of a
 * row whose whole-row write is not flushed: its parity is made from that
 * write's blocks, so FUA must make them durable too, or the FUA write's
 * own blocks rebuild wrongly when a member is lost after the crash. */
static void
gen_full (struct workload *wl, uint64_t rng)
{
  uint64_t W = stripe_width (wl);

  add_op (wl, OP_WRITE, 1 * W + 100, 1000, 0);
  add_op (wl, OP_WRITE, 3 * W + W / 2, 700, 0);
  add_op (wl, OP_FLUSH, 0, 0, 0);
  add_op (wl, OP_WRITE, 1 * W, W, 0);
  add_op (wl, OP_WRITE, 2 * W, 2 * W, 0);
  add_op (wl, OP_FLUSH, 0, 0, 0);
  add_op (wl, OP_WRITE, 1 * W, W, RAID_IO_FUA);
  add_op (wl, OP_ZERO, 3 * W, W, 0);
  add_op (wl, OP_WRITE, 2 * W, W, 0);
  add_op (wl, OP_FLUSH, 0, 0, 0);
  add_op (wl, OP_WRITE, 5 * W, 2 * W, 0);
  add_op (wl, OP_WRITE, 1 * W, W, 0);
  add_op (wl, OP_WRITE, 8 * W, W, 0);
  add_op (wl, OP_WRITE, 8 * W + 100, 700, RAID_IO_FUA);
  add_op (wl, OP_WRITE, 8 * W + W - 600, 300, RAID_IO_FUA);
  add_op (wl, OP_WRITE, 10 * W + 50, 300, 0);
  /* The same after a whole-row zero, and after a write whose columns from
   * 4K on cover the row (logged as an intent as well). */
  add_op (wl, OP_WRITE, 12 * W, W, 0);
  add_op (wl, OP_FLUSH, 0, 0, 0);
  add_op (wl, OP_ZERO, 12 * W, W, 0);
  add_op (wl, OP_WRITE, 12 * W + 100, 700, RAID_IO_FUA);
  add_op (wl, OP_WRITE, 14 * W + 4096, W - 4096, 0);
  add_op (wl, OP_WRITE, 14 * W + wl->chunk + 4196, 300, RAID_IO_FUA);
  add_op (wl, OP_WRITE, 16 * W + 50, 300, 0);
}

/* A random mix of writes of any size up to two rows (some FUA), zeroes
 * and flushes. */
static void
gen_mixed (struct workload *wl, uint64_t rng, int nops)
{
  uint64_t W = stripe_width (wl), span = SPAN_ROWS * W;

  for (int i = 0; i < nops; i++) {
    uint64_t r = cs_rand (&rng) % 10;
    uint64_t len = 1 + cs_rand (&rng) % (2 * W);
    uint64_t off = cs_rand (&rng) % (span - len);

    if (cs_rand (&rng) % 3 == 0)
      off = raid_round_down (off, wl->chunk);
    if (r < 6)
      add_op (wl, OP_WRITE, off, len, cs_rand (&rng) % 5 == 0 ? RAID_IO_FUA : 0);
    else if (r < 8) {
      if (cs_rand (&rng) % 2)
        off = raid_round_down (off, W), len = W;
      add_op (wl, OP_ZERO, off, len, 0);
    }
    else if (wl->nops > 0 && wl->ops[wl->nops - 1].kind != OP_FLUSH)
      add_op (wl, OP_FLUSH, 0, 0, 0);
    else
      add_op (wl, OP_WRITE, off, len, 0);
  }
}

/* Mixed, with member `victim` failing after the first ops. */
static void
gen_failure (struct workload *wl, uint64_t rng, int victim, int nbefore,
             int nafter)
{
  gen_mixed (wl, rng, nbefore);
  add_fail (wl, victim);
  gen_mixed (wl, cs_seed (rng, 7, 0, 0), nafter);
}

/* Reshape workloads: members of 256 KiB of data after 256 KiB of head
 * room, so a reshape is a few dozen rows and a few hundred crash points. */
#define RESHAPE_DOFF ((4u << 20) + (256u << 10))
#define RESHAPE_MSIZE (RESHAPE_DOFF + (256u << 10))

/* Random writes (some FUA), zeroes and flushes inside [0, span). */
static void
gen_rw (struct workload *wl, uint64_t *rng, int nops, uint64_t span)
{
  for (int i = 0; i < nops; i++) {
    uint64_t r = cs_rand (rng) % 8;
    uint64_t len = 1 + cs_rand (rng) % (r < 4 ? 4096 : 3 * wl->chunk);
    uint64_t off = cs_rand (rng) % (span - len);

    if (r == 7 && wl->nops > 0 && wl->ops[wl->nops - 1].kind != OP_FLUSH)
      add_op (wl, OP_FLUSH, 0, 0, 0);
    else if (r == 6)
      add_op (wl, OP_ZERO, off, len, 0);
    else
      add_op (wl, OP_WRITE, off, len, cs_rand (rng) % 6 == 0 ? RAID_IO_FUA : 0);
  }
}

/* What a reshape case does to the size first (struct rcase). */
enum rsize {
  RS_SAME,
  RS_SHRINK,          /* to half, in whole rows of the new geometry */
  RS_TAIL,            /* to 4K short of a row of the new geometry, every
                         byte written first: the reshape ends in a partial
                         row whose other columns hold old bytes */
  RS_TAILGROW,        /* that, then grown by one row of the old geometry:
                         the resize zeroes a row holding exported bytes */
};

/* Writes; (a member failure;) prepare; writes to the frozen reshape;
 * three steps each followed by writes on both sides of the boundary (a
 * member failure after the second when fail_mid >= 0); the rest of the
 * reshape; writes to the new geometry, the last ones unflushed.  With
 * resize_to != 0 the array is resized first, as rs says. */
static void
gen_reshape (struct workload *wl, uint64_t rng, int fail_before, int fail_mid,
             uint64_t resize_to, enum rsize rs)
{
  uint64_t span = (uint64_t) (RESHAPE_MSIZE - RESHAPE_DOFF) / wl->chunk
    * stripe_width (wl);
  bool tail = rs == RS_TAIL || rs == RS_TAILGROW;

  wl->reshape = true;
  wl->member_size = RESHAPE_MSIZE;
  wl->data_offset = RESHAPE_DOFF;
  for (uint64_t o = 0, e = resize_to + (rs == RS_TAILGROW ? 8192 : 0); tail && o < e;
       o += 65536)
    add_op (wl, OP_WRITE, o, raid_min_u64 (65536, e - o), 0);
  gen_rw (wl, &rng, 4, tail ? resize_to : span);
  add_op (wl, OP_FLUSH, 0, 0, 0);
  if (fail_before >= 0)
    add_fail (wl, fail_before);
  if (resize_to) {
    add_op (wl, OP_RESIZE, 0, resize_to, 0);
    if (rs == RS_TAILGROW) {
      add_op (wl, OP_FLUSH, 0, 0, 0);
      add_op (wl, OP_RESIZE, 0, resize_to + stripe_width (wl), 0);
    }
    span = resize_to;
  }
  add_op (wl, OP_RESHAPE, 0, 0, 0);
  gen_rw (wl, &rng, 2, span);
  for (int i = 0; i < 3; i++) {
    add_op (wl, OP_STEP, 0, 1, 0);
    gen_rw (wl, &rng, 3, span);
    if (i == 1 && fail_mid >= 0)
      add_fail (wl, fail_mid);
  }
  add_op (wl, OP_STEP, 0, 0, 0);
  gen_rw (wl, &rng, 3, span);
}

/* ------------------------------------------------------------------ */
/* The model of the array's content (per 512-byte sector). */

struct ver {
  uint32_t wid;                     /* write id (1..), 0: initial zeroes */
  uint8_t data[SECTOR];
};

struct sect {
  uint32_t n, cap;
  struct ver *v;                    /* versions after the durable one,
                                       oldest first */
};

struct wrec {                       /* write id -> what wrote it */
  int op;
  uint64_t off, len;
};

struct model {
  uint64_t size, nsect;
  uint8_t *cur;                     /* content after every issued write */
  uint8_t *dur;                     /* per sector: last durable version */
  uint32_t *dur_wid;
  struct sect *s;
  uint64_t *dirty;                  /* sectors with later versions */
  size_t ndirty, capdirty;
  struct wrec *w;                   /* indexed by write id */
  uint32_t nw, capw;
};

static void *
xcalloc (size_t n, size_t size)
{
  void *p = calloc (n ? n : 1, size ? size : 1);

  if (!p) {
    perror ("calloc");
    exit (1);
  }
  return p;
}

static void *
xrealloc (void *p, size_t size)
{
  p = realloc (p, size);
  if (!p) {
    perror ("realloc");
    exit (1);
  }
  return p;
}

/* Zeroed memory whose untouched pages cost nothing (a model is built for
 * every crash point but touches a few rows). */
static void *
big_alloc (size_t size)
{
  void *p = mmap (NULL, size, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

  if (p == MAP_FAILED) {
    perror ("mmap");
    exit (1);
  }
  return p;
}

static void
model_init (struct model *m, uint64_t size)
{
  memset (m, 0, sizeof *m);
  m->size = size;
  m->nsect = size / SECTOR;
  m->cur = big_alloc (size);
  m->dur = big_alloc (size);
  m->dur_wid = big_alloc (m->nsect * sizeof *m->dur_wid);
  m->s = big_alloc (m->nsect * sizeof *m->s);
  m->capw = 64;
  m->w = xcalloc (m->capw, sizeof *m->w);
  m->nw = 1;                        /* write id 0 is the initial content */
}

static void
model_free (struct model *m)
{
  for (uint64_t i = 0; i < m->nsect; i++)
    free (m->s[i].v);
  munmap (m->s, m->nsect * sizeof *m->s);
  munmap (m->cur, m->size);
  munmap (m->dur, m->size);
  munmap (m->dur_wid, m->nsect * sizeof *m->dur_wid);
  free (m->dirty);
  free (m->w);
}

/* Content of write wid at array offset pos: differs between writes and
 * between positions, so versions are told apart. */
static uint8_t
pattern_byte (uint32_t wid, uint64_t pos)
{
  uint64_t x = (pos + 1) * 0x9e3779b97f4a7c15ull;

  x ^= (uint64_t) wid * 0xd6e8feb86659fd93ull;
  x ^= x >> 32;
  x *= 0xd6e8feb86659fd93ull;
  x ^= x >> 29;
  return (uint8_t) (x >> 56);
}

/* Record a write (data NULL: zeroes) issued by op k; returns its id. */
static uint32_t
model_issue (struct model *m, int k, const uint8_t *data, uint64_t len,
             uint64_t off)
{
  uint32_t wid = m->nw++;

  if (wid >= m->capw) {
    m->capw *= 2;
    m->w = xrealloc (m->w, m->capw * sizeof *m->w);
  }
  m->w[wid] = (struct wrec) { k, off, len };
  if (data)
    memcpy (m->cur + off, data, len);
  else
    memset (m->cur + off, 0, len);
  for (uint64_t s = off / SECTOR; len && s <= (off + len - 1) / SECTOR; s++) {
    struct sect *st = &m->s[s];
    if (st->n == 0) {
      if (m->ndirty == m->capdirty) {
        m->capdirty = m->capdirty ? 2 * m->capdirty : 256;
        m->dirty = xrealloc (m->dirty, m->capdirty * sizeof *m->dirty);
      }
      m->dirty[m->ndirty++] = s;
    }
    if (st->n == st->cap) {
      st->cap = st->cap ? 2 * st->cap : 2;
      st->v = xrealloc (st->v, st->cap * sizeof *st->v);
    }
    st->v[st->n].wid = wid;
    memcpy (st->v[st->n].data, m->cur + s * SECTOR, SECTOR);
    st->n++;
  }
  return wid;
}

/* Write wid completed with FUA: it is the durable version of its sectors
 * (an older version cannot come back: a device never writes stale data over
 * a durable FUA write). */
static void
model_durable_one (struct model *m, uint32_t wid)
{
  uint64_t off = m->w[wid].off, len = m->w[wid].len;

  for (uint64_t s = off / SECTOR; len && s <= (off + len - 1) / SECTOR; s++) {
    struct sect *st = &m->s[s];
    uint32_t j;

    for (j = 0; j < st->n && st->v[j].wid != wid; j++)
      ;
    if (j == st->n)
      continue;
    memcpy (m->dur + s * SECTOR, st->v[j].data, SECTOR);
    m->dur_wid[s] = wid;
    memmove (st->v, st->v + j + 1, (st->n - j - 1) * sizeof *st->v);
    st->n -= j + 1;
  }
}

/* A flush succeeded: every completed write is durable. */
static void
model_flush (struct model *m)
{
  for (size_t i = 0; i < m->ndirty; i++) {
    struct sect *st = &m->s[m->dirty[i]];
    if (st->n == 0)
      continue;
    memcpy (m->dur + m->dirty[i] * SECTOR, st->v[st->n - 1].data, SECTOR);
    m->dur_wid[m->dirty[i]] = st->v[st->n - 1].wid;
    st->n = 0;
  }
  m->ndirty = 0;
}

/* 0 when sector s holds an acceptable version; else the invariant it
 * breaks: 2 (some later write touched it) or 3 (none did). */
static int
model_check_sector (const struct model *m, uint64_t s, const uint8_t *got)
{
  const struct sect *st = &m->s[s];

  if (memcmp (got, m->dur + s * SECTOR, SECTOR) == 0)
    return 0;
  for (uint32_t j = 0; j < st->n; j++)
    if (memcmp (got, st->v[j].data, SECTOR) == 0)
      return 0;
  return st->n ? 2 : 3;
}

/* ------------------------------------------------------------------ */
/* Creating the base images. */

static void
make_base (struct ctx *c)
{
  const struct workload *wl = &c->wl;
  static int serial;
  char path[RAID_MAX_MEMBERS][96], err[512];
  const char *specs[RAID_MAX_MEMBERS];
  uint8_t uuid[RAID_UUID_LEN];
  const char *dir = access ("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  struct raid_create_opts o = {
    .level = wl->level, .layout = wl->layout, .chunk = wl->chunk,
    .size = c->msize, .consistency = wl->consistency,
    .data_offset = c->doff, .nmembers = wl->n, .members = specs,
  };
  uint8_t *buf = malloc (c->msize);

  serial++;
  for (int i = 0; i < wl->n; i++) {
    snprintf (path[i], sizeof path[i], "%s/test-crash-%d-%d-%d", dir,
              (int) getpid (), serial, i);
    unlink (path[i]);
    specs[i] = path[i];
  }
  if (raid_create (&o, uuid, err, sizeof err) < 0) {
    fprintf (stderr, "test-crash: raid_create (%s): %s\n", wl->name, err);
    exit (1);
  }
  for (int i = 0; i < wl->n; i++) {
    FILE *fp = fopen (path[i], "rb");
    if (!buf || !fp || fread (buf, 1, c->msize, fp) != c->msize) {
      perror (path[i]);
      exit (1);
    }
    fclose (fp);
    unlink (path[i]);
    c->base[i] = cs_image_new (buf, c->msize);
  }
  for (int i = wl->n; i < ndisks (wl); i++)
    c->base[i] = cs_image_new (NULL, c->msize);   /* blank: a reshape adds it */
  free (buf);
}

/* ------------------------------------------------------------------ */
/* Running the workload, possibly up to a crash. */

struct run {
  struct cs_world *w;
  struct cs_disk *d[RAID_MAX_MEMBERS];
  struct model m;
  bool crashed;
  int crash_op;                     /* op in progress at the crash (-1 assembly,
                                       nops: close) */
  int dead;                         /* member failed before the crash, or -1 */
  uint64_t writes;
  uint64_t size_end;                /* array size at the end (no crash) */
};

/* The run whose disks a reshape's "crashsim-add:I" specs name (the open
 * hook below; runs are sequential). */
static struct run *hook_run;

static struct member *
open_hook (const char *spec)
{
  int i;

  if (!hook_run || sscanf (spec, "crashsim-add:%d", &i) != 1 ||
      i < 0 || i >= RAID_MAX_MEMBERS || !hook_run->d[i])
    return NULL;
  return cs_disk_member (hook_run->d[i], spec);
}

/* Test hooks for reshape workloads: a few rows per step, a pause after
 * each, so that the workload's own I/O interleaves deterministically. */
static void
set_reshape_hooks (const struct ctx *c, struct raid_array *a)
{
  struct raid_test_hooks h = {
    .reshape_window = 6 * c->g.stripe_width, .reshape_pause = true,
  };
  raid_array_set_test_hooks (a, &h);
}

static const struct raid_assemble_opts assemble_opts = { .force = false };

static struct raid_array *
assemble_disks (struct cs_disk *const *d, const int *order, int n,
                char *err, size_t errlen)
{
  struct member *ms[RAID_MAX_MEMBERS];
  struct raid_array *a = NULL;

  for (int k = 0; k < n; k++) {
    char name[32];
    snprintf (name, sizeof name, "crash-m%d", order[k]);
    ms[k] = cs_disk_member (d[order[k]], name);
  }
  if (raid_array_assemble (ms, n, &assemble_opts, &a, err, errlen) < 0)
    return NULL;
  return a;
}

/* The target geometry prepare planned (check_reshape compares with it). */
static struct raid_geom_status reshape_target;

static int
do_reshape_prepare (const struct ctx *c, struct raid_array *a)
{
  const struct workload *wl = &c->wl;
  char spec[RAID_MAX_MEMBERS][32], e[512];
  const char *add[RAID_MAX_MEMBERS];
  struct raid_status *plan = malloc (sizeof *plan);
  struct raid_reshape_req req = {
    .level = wl->r_level, .layout = wl->r_layout, .chunk = wl->r_chunk,
    .raid_devices = wl->r_raid_devices, .nadd = wl->nadd, .add = add,
  };
  int err;

  for (int i = 0; i < wl->nadd; i++) {
    snprintf (spec[i], sizeof spec[i], "crashsim-add:%d", wl->n + i);
    add[i] = spec[i];
  }
  err = raid_array_reshape (a, &req, plan, e, sizeof e);
  if (err == 0)
    reshape_target = plan->reshape.to;       /* the same in every run */
  if (err && verbose)
    fprintf (stderr, "%s: reshape: %s\n", wl->name, e);
  free (plan);
  return err;
}

static bool
reshape_pending (struct raid_array *a)
{
  struct raid_status *st = malloc (sizeof *st);
  bool r;

  raid_array_status (a, st);
  r = st->has_reshape;
  free (st);
  return r;
}

/* Let the reshape move `steps` windows (0: until it ends). */
static int
do_reshape_steps (struct raid_array *a, uint64_t steps)
{
  char e[512];

  for (uint64_t i = 0; (steps == 0 || i < steps) && reshape_pending (a); i++) {
    int err = raid_array_start_action (a, e, sizeof e);
    if (err) {
      if (verbose)
        fprintf (stderr, "start: %s\n", e);
      return err;
    }
    raid_array_wait (a, 60);
    if (raid_array_health (a) == RAID_HEALTH_FAILED)
      return EIO;
  }
  return 0;
}

/* Run op k.  Returns false when the run must stop (crash or error). */
static bool
do_op (const struct ctx *c, struct raid_array *a, struct run *r, int k,
       uint8_t *buf)
{
  const struct op *o = &c->wl.ops[k];
  uint32_t wid = 0;
  int err = 0;

  switch (o->kind) {
  case OP_FAIL:
    cs_disk_set_failed (r->d[o->member], true);
    r->dead = o->member;
    return true;
  case OP_FLUSH:
    err = raid_array_flush (a);
    break;
  case OP_WRITE:
    for (uint64_t i = 0; i < o->len; i++)
      buf[i] = pattern_byte (r->m.nw, o->off + i);
    wid = model_issue (&r->m, k, buf, o->len, o->off);
    err = raid_array_pwrite (a, buf, o->len, o->off, o->flags);
    break;
  case OP_ZERO:
    wid = model_issue (&r->m, k, NULL, o->len, o->off);
    err = raid_array_zero (a, o->len, o->off, o->flags, false);
    break;
  case OP_RESHAPE:
    err = do_reshape_prepare (c, a);
    break;
  case OP_STEP:
    err = do_reshape_steps (a, o->len);
    break;
  case OP_RESIZE: {
    char e[256];
    uint64_t cur = raid_array_size (a);
    if (o->len > cur)
      wid = model_issue (&r->m, k, NULL, o->len - cur, cur);
    err = raid_array_resize (a, o->len, true, e, sizeof e);
    if (!err && o->len > cur && !cs_world_crashed (r->w))
      model_durable_one (&r->m, wid);
    break;
  }
  }
  if (cs_world_crashed (r->w)) {
    /* Completed after the crash, if at all: it counts for nothing. */
    r->crashed = true;
    r->crash_op = k;
    return false;
  }
  CHECK (err == 0, "%s: op %d (%s) failed without a crash: %s", c->wl.name, k,
         op_name (o->kind), strerror (err));
  if (err)
    return false;
  if (o->kind == OP_FLUSH)
    model_flush (&r->m);
  else if (o->flags & RAID_IO_FUA)
    model_durable_one (&r->m, wid);
  return true;
}

static void
run_workload (const struct ctx *c, uint64_t arm, uint64_t *trace, size_t cap,
              struct run *r)
{
  const struct workload *wl = &c->wl;
  int order[RAID_MAX_MEMBERS];
  struct raid_array *a;
  uint8_t *buf = malloc (2 * stripe_width (wl) + 65536);
  char err[512];

  memset (r, 0, sizeof *r);
  r->dead = -1;
  r->w = cs_world_new ();
  cs_world_arm (r->w, arm);
  cs_world_set_trace_log (r->w, trace, cap);
  model_init (&r->m, c->size);
  for (int i = 0; i < ndisks (wl); i++) {
    r->d[i] = cs_disk_new (r->w, c->base[i], i);
    order[i] = i;
  }
  hook_run = r;
  a = assemble_disks (r->d, order, wl->n, err, sizeof err);
  if (cs_world_crashed (r->w)) {
    r->crashed = true;
    r->crash_op = -1;
  }
  else {
    CHECK (a != NULL, "%s: assembly before any crash failed: %s", wl->name, err);
    bool started = true;
    if (a && wl->reshape) {
      /* The start records the serving process: a crash point too. */
      set_reshape_hooks (c, a);
      started = raid_array_start (a) == 0;
      if (!started && cs_world_crashed (r->w)) {
        r->crashed = true;
        r->crash_op = -1;
      }
      else
        CHECK (started, "%s: raid_array_start", wl->name);
    }
    for (int k = 0; a && started && k < wl->nops && do_op (c, a, r, k, buf); k++)
      ;
    if (a)
      r->size_end = raid_array_size (a);
  }
  raid_array_close (a);
  hook_run = NULL;
  if (!r->crashed && cs_world_crashed (r->w)) {
    r->crashed = true;
    r->crash_op = wl->nops;
  }
  r->writes = cs_world_writes (r->w);
  cs_world_set_trace_log (r->w, NULL, 0);
  free (buf);
}

static void
run_free (struct run *r, int n)
{
  for (int i = 0; i < RAID_MAX_MEMBERS && i < n; i++)
    cs_disk_free (r->d[i]);
  cs_world_free (r->w);
  model_free (&r->m);
}

/* ------------------------------------------------------------------ */
/* Reporting. */

/* Where a check ran: enough to reproduce it by hand. */
struct where {
  uint64_t N;
  enum cs_mode mode;
  uint32_t removed;
  const int *order;
  int norder;
  char (*desc)[256];
  const struct run *r;
  const char *phase;
};

static void
appendf (char *buf, size_t len, const char *fmt, ...)
  __attribute__ ((format (printf, 3, 4)));

static void
appendf (char *buf, size_t len, const char *fmt, ...)
{
  size_t used = strlen (buf);
  va_list ap;

  if (used + 1 >= len)
    return;
  va_start (ap, fmt);
  vsnprintf (buf + used, len - used, fmt, ap);
  va_end (ap);
}

static void
describe_where (const struct ctx *c, const struct where *wh, char *buf,
                size_t len)
{
  struct cs_write_info li;
  char op[128];

  cs_world_last_write (wh->r->w, &li);
  describe_op (&c->wl, wh->r->crash_op, op, sizeof op);
  appendf (buf, len, "crash after member write %" PRIu64 "/%" PRIu64
           " (member %d +%" PRIu64 " len %" PRIu64 "%s%s) during %s; mode %s\n",
           wh->N, c->total, li.disk_id, li.off, li.len, li.fua ? " fua" : "",
           li.zero ? " zero" : "", op, cs_mode_name (wh->mode));
  for (int i = 0; i < ndisks (&c->wl); i++)
    appendf (buf, len, "      member %d image: %s\n", i, wh->desc[i]);
  appendf (buf, len, "    reassembled in order");
  for (int k = 0; k < wh->norder; k++)
    appendf (buf, len, " %d", wh->order[k]);
  if (wh->removed) {
    appendf (buf, len, ", left out:");
    for (int i = 0; i < ndisks (&c->wl); i++)
      if (wh->removed & (1u << i))
        appendf (buf, len, " %d", i);
  }
  if (wh->r->dead >= 0)
    appendf (buf, len, ", member %d dead (failed before the crash)", wh->r->dead);
  appendf (buf, len, "; phase: %s\n", wh->phase);
}

static const char *const inv_label[NINV] = { "", "1", "2", "3", "4", "5", "4w" };
static const char *const inv_name[NINV] = {
  "", "assembly/serving", "durability", "atomicity outside writes",
  "redundancy after crash: the write hole, a sector outside every "
  "non-durable write or durable data lost",
  "parity after journal recovery",
  "redundancy after crash: a sector inside a non-durable write holds "
  "neither its old nor a new version",
};

/* Count a failure of invariant inv; describe it if it is the first. */
static void
report (struct ctx *c, int inv, const struct where *wh, const char *fmt, ...)
  __attribute__ ((format (printf, 4, 5)));

static void
report (struct ctx *c, int inv, const struct where *wh, const char *fmt, ...)
{
  char detail[2048];
  va_list ap;

  c->t.fail[inv]++;
  if (c->t.fail[inv] > 1 && !verbose)
    return;
  va_start (ap, fmt);
  vsnprintf (detail, sizeof detail, fmt, ap);
  va_end (ap);
  if (c->t.fail[inv] == 1) {
    char *b = c->t.first[inv];
    size_t len = sizeof c->t.first[inv];
    b[0] = '\0';
    appendf (b, len, "  first failure of invariant %s (%s):\n    ",
             inv_label[inv], inv_name[inv]);
    describe_where (c, wh, b, len);
    appendf (b, len, "    %s\n", detail);
  }
  if (verbose)
    fprintf (stderr, "%s: invariant %s: N=%" PRIu64 " %s removed=0x%x: %s\n",
             c->wl.name, inv_label[inv], wh->N, cs_mode_name (wh->mode),
             wh->removed, detail);
}

static void
hex8 (char *buf, size_t len, const uint8_t *p)
{
  snprintf (buf, len, "%02x%02x%02x%02x%02x%02x%02x%02x",
            p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]);
}

/* Describe array sector s: where it lives, what was acceptable, what came. */
static void
describe_sector (const struct ctx *c, const struct model *m, uint64_t s,
                 const uint8_t *got, char *buf, size_t len)
{
  uint64_t off = s * SECTOR, row;
  uint32_t in_chunk;
  int di;
  struct raid_row rr;
  char h[20];
  const struct sect *st = &m->s[s];
  size_t same = 0;

  raid_geom_locate (&c->g, off, &row, &di, &in_chunk);
  raid_geom_row (&c->g, row, &rr);
  buf[0] = '\0';
  appendf (buf, len, "array sector %" PRIu64 " (offset %" PRIu64 ", row %" PRIu64
           ", data index %d on member %d at member offset %" PRIu64 "; P on %d",
           s, off, row, di, rr.data[di],
           (uint64_t) DATA_OFFSET + row * c->g.chunk + in_chunk, rr.pd);
  if (rr.qd >= 0)
    appendf (buf, len, ", Q on %d", rr.qd);
  appendf (buf, len, "):\n      expected one of: durable = ");
  hex8 (h, sizeof h, m->dur + off);
  if (m->dur_wid[s])
    appendf (buf, len, "write #%u (op %d) [%s...]", m->dur_wid[s],
             m->w[m->dur_wid[s]].op, h);
  else
    appendf (buf, len, "initial [%s...]", h);
  for (uint32_t j = 0; j < st->n; j++) {
    hex8 (h, sizeof h, st->v[j].data);
    appendf (buf, len, ", write #%u (op %d, not durable) [%s...]", st->v[j].wid,
             m->w[st->v[j].wid].op, h);
  }
  hex8 (h, sizeof h, got);
  for (size_t i = 0; i < SECTOR; i++)
    same += got[i] == m->dur[off + i];
  appendf (buf, len, "\n      got [%s...]: equals none; %zu of 512 bytes "
           "equal the durable version", h, same);
  for (size_t i = 0; i < SECTOR; i++) {
    bool ok = got[i] == m->dur[off + i];
    for (uint32_t j = 0; j < st->n && !ok; j++)
      ok = got[i] == st->v[j].data[i];
    if (!ok) {
      appendf (buf, len, "; byte %zu matches no version", i);
      break;
    }
    if (i == SECTOR - 1)
      appendf (buf, len, "; every byte matches some version "
               "(versions mixed in one sector)");
  }
}

/* ------------------------------------------------------------------ */
/* Checks on a reassembled array. */

/* Rows of which some member page may differ from the created image. */
static void
touched_rows (const struct ctx *c, struct cs_disk *const *d,
              struct cs_image *const *img, uint8_t *rowmask)
{
  for (uint64_t row = 0; row < c->rows; row++) {
    uint64_t p0 = (DATA_OFFSET + row * c->g.chunk) / CS_PAGE;
    uint64_t p1 = (DATA_OFFSET + (row + 1) * c->g.chunk - 1) / CS_PAGE;

    rowmask[row] = 0;
    for (int i = 0; i < c->wl.n && !rowmask[row]; i++)
      for (uint64_t p = p0; p <= p1 && !rowmask[row]; p++)
        rowmask[row] = d[i] ? cs_disk_page_written (d[i], p)
          : cs_image_page_written (img[i], p);
  }
}

/* Check nsec sectors read into buf, array sectors from sec0, against the
 * model.  A bad sector counts as invariant 2 or 3 when inv is 0, as 4 or
 * 4w (the sector had non-durable versions) when inv is 4; the first of
 * each kind (seen[]) is described.  Returns false on a failure. */
static bool
check_sectors (struct ctx *c, const struct model *m, const uint8_t *buf,
               uint64_t sec0, uint64_t nsec, int inv, bool *seen,
               const struct where *wh)
{
  bool ok = true;

  for (uint64_t s = 0; s < nsec; s++) {
    uint64_t sec = sec0 + s;
    int bad = model_check_sector (m, sec, buf + s * SECTOR), k;
    char d[2048];

    if (!bad)
      continue;
    ok = false;
    k = inv == 4 && bad == 2 ? INV_4W : inv ? inv : bad;
    if (seen[k])
      continue;
    seen[k] = true;
    if (c->wl.reshape)                /* two geometries: no member location */
      snprintf (d, sizeof d, "array sector %" PRIu64 " (offset %" PRIu64
                ") holds none of its acceptable versions (durable: write #%u)",
                sec, sec * SECTOR, m->dur_wid[sec]);
    else
      describe_sector (c, m, sec, buf + s * SECTOR, d, sizeof d);
    report (c, k, wh, "%s", d);
  }
  return ok;
}

/* Read every touched row and check every sector against the model.  A
 * bad sector counts as invariant 2 or 3 when inv is 0, as 4 or 4w (the
 * sector had non-durable versions) when inv is 4; each kind is reported at
 * most once per call (the first such sector).  Returns false on a failure. */
static bool
check_data (struct ctx *c, struct raid_array *a, const struct model *m,
            const uint8_t *rowmask, int inv, const struct where *wh)
{
  uint64_t W = c->g.stripe_width;
  uint8_t *buf = malloc (W);
  bool seen[NINV] = { false }, ok = true;

  for (uint64_t row = 0; row < c->rows; row++) {
    int e;
    if (!rowmask[row])
      continue;
    e = raid_array_pread (a, buf, W, row * W);
    if (e) {
      report (c, 1, wh, "read of row %" PRIu64 " (array offset %" PRIu64
              ") failed: %s", row, row * W, strerror (e));
      ok = false;
      break;
    }
    ok &= check_sectors (c, m, buf, row * W / SECTOR, W / SECTOR, inv, seen, wh);
  }
  free (buf);
  return ok;
}

/* Level 1: every mirror of the column equals member 0's. */
static bool
mirrors_agree (const struct raid_geom *g, const uint8_t *blk, uint32_t col)
{
  for (int r = 1; r < g->raid_disks; r++)
    if (memcmp (blk, blk + (size_t) r * col, col) != 0)
      return false;
  return true;
}

/* Parity (level 1: the mirrors) of every touched row, on the member
 * images (member i has role i: raid_create gave it).  Returns false on a
 * mismatch, reported as inv. */
static bool
check_parity (struct ctx *c, struct cs_disk *const *d, const uint8_t *rowmask,
              int inv, const struct where *wh)
{
  const struct raid_geom *g = &c->g;
  uint32_t col = 4096;
  uint8_t *blk = malloc ((size_t) g->raid_disks * col);
  bool ok = true;

  for (uint64_t row = 0; row < c->rows && ok; row++) {
    struct raid_row rr;
    if (!rowmask[row])
      continue;
    raid_geom_row (g, row, &rr);
    for (uint32_t x = 0; x < g->chunk && ok; x += col) {
      void *b[RAID_MAX_MEMBERS + 2];
      uint64_t moff = DATA_OFFSET + row * g->chunk + x;
      for (int r = 0; r < g->raid_disks; r++)
        cs_disk_peek (d[r], blk + (size_t) r * col, col, moff);
      if (g->level == 1) {
        if (!mirrors_agree (g, blk, col)) {
          report (c, inv, wh, "row %" PRIu64 ", member offset %" PRIu64 " +%u: "
                  "the mirrors differ", row, moff, col);
          ok = false;
        }
        continue;
      }
      for (int i = 0; i < g->data_disks; i++)
        b[g->level == 6 ? rr.slot[i] : i] = blk + (size_t) rr.data[i] * col;
      b[g->data_disks] = blk + (size_t) rr.pd * col;
      if (g->level == 6)
        b[g->data_disks + 1] = blk + (size_t) rr.qd * col;
      if (parity_check (g->data_disks, g->parity_disks, col, b) != 1) {
        char q[32] = "";
        if (rr.qd >= 0)
          snprintf (q, sizeof q, ", Q on member %d", rr.qd);
        report (c, inv, wh, "row %" PRIu64 " (array offset %" PRIu64 "), member "
                "offset %" PRIu64 " +%u: parity does not match the data "
                "(P on member %d%s)", row, row * g->stripe_width, moff, col,
                rr.pd, q);
        ok = false;
      }
    }
  }
  free (blk);
  return ok;
}

/* The touched rows as the array reads them (rows x stripe width bytes,
 * the rest zero); NULL when a read fails. */
static uint8_t *
read_touched (struct ctx *c, struct raid_array *a, const uint8_t *rowmask)
{
  uint64_t W = c->g.stripe_width;
  uint8_t *buf = calloc (c->rows, W);

  for (uint64_t row = 0; buf && row < c->rows; row++)
    if (rowmask[row] && raid_array_pread (a, buf + row * W, W, row * W) != 0) {
      free (buf);
      return NULL;
    }
  return buf;
}

/* A resync makes the copies of each row agree (parity, or the mirrors)
 * without changing a byte a read returns: what a client read before it
 * stays what it reads.  Returns false, reported as invariant 4, when a
 * touched row reads differently from `before`. */
static bool
check_reads_unchanged (struct ctx *c, struct raid_array *a, const uint8_t *rowmask,
                       const uint8_t *before, const struct where *wh)
{
  uint64_t W = c->g.stripe_width;
  uint8_t *now = read_touched (c, a, rowmask);
  bool ok = before && now;

  for (uint64_t row = 0; ok && row < c->rows; row++)
    if (rowmask[row] && memcmp (before + row * W, now + row * W, W) != 0) {
      report (c, 4, wh, "row %" PRIu64 " (array offset %" PRIu64 ") reads "
              "differently after the array's resync than before it", row, row * W);
      ok = false;
    }
  if (!before || !now)
    report (c, 1, wh, "a read of the touched rows failed");
  free (now);
  return ok;
}

static void
shuffle (int *v, int n, uint64_t *rng)
{
  for (int i = n - 1; i > 0; i--) {
    int j = (int) (cs_rand (rng) % (uint64_t) (i + 1)), t = v[i];
    v[i] = v[j];
    v[j] = t;
  }
}

/* Reassemble the images minus `removed` on fresh simulated disks of w
 * (d[], the member that died before the crash failing), in shuffled order
 * (order[], wh->norder).  NULL, reported as invariant 1, when assembly is
 * refused. */
static struct raid_array *
reassemble (struct ctx *c, const struct run *r, struct cs_image *const *img,
            uint32_t removed, uint64_t *rng, struct cs_world *w,
            struct cs_disk **d, int *order, struct where *wh)
{
  struct raid_array *a;
  char err[512];
  int n = 0;

  for (int i = 0; i < ndisks (&c->wl); i++) {
    if (removed & (1u << i))
      continue;
    d[i] = cs_disk_new (w, img[i], i);
    cs_disk_set_failed (d[i], i == r->dead);
    order[n++] = i;
  }
  shuffle (order, n, rng);
  wh->norder = n;
  c->t.images++;
  a = assemble_disks (d, order, n, err, sizeof err);
  if (a == NULL)
    report (c, 1, wh, "assembly refused: %s", err);
  return a;
}

/* Reassemble the images minus `removed` and check every invariant. */
static void
check_images (struct ctx *c, const struct run *r, struct cs_image *const *img,
              char (*desc)[256], enum cs_mode mode, uint32_t removed,
              uint64_t N, uint64_t *rng)
{
  const struct workload *wl = &c->wl;
  struct cs_world *w = cs_world_new ();
  struct cs_disk *d[RAID_MAX_MEMBERS] = { 0 };
  int order[RAID_MAX_MEMBERS];
  uint8_t *rowmask = malloc (c->rows);
  bool degraded = removed || r->dead >= 0;
  struct raid_array *a;
  char err[512];
  struct where wh = { N, mode, removed, order, 0, desc, r, "assembly" };

  a = reassemble (c, r, img, removed, rng, w, d, order, &wh);
  if (a == NULL)
    goto out;
  touched_rows (c, d, img, rowmask);
  wh.phase = "read after reassembly";
  check_data (c, a, &r->m, rowmask, degraded ? 4 : 0, &wh);
  if (!degraded && wl->consistency == SB_CONS_JOURNAL && wl->level != 1) {
    raid_array_close (a);
    a = NULL;
    touched_rows (c, d, img, rowmask);
    wh.phase = "member images after reassembly and close";
    check_parity (c, d, rowmask, 5, &wh);
  }
  else if (!degraded) {
    uint64_t zero = 0;
    uint8_t *before = read_touched (c, a, rowmask);
    raid_array_set_speed (a, &zero, &zero, err, sizeof err);
    struct raid_status *st = malloc (sizeof *st);
    CHECK (raid_array_start (a) == 0, "%s: raid_array_start failed", wl->name);
    raid_array_wait (a, 30);
    raid_array_status (a, st);
    if (st->sync_action != RAID_SYNC_IDLE)
      report (c, 4, &wh, "the array's %s did not finish within 30 s",
              raid_sync_action_name (st->sync_action));
    free (st);
    wh.phase = "read after the array's resync";
    check_data (c, a, &r->m, rowmask, 0, &wh);
    check_reads_unchanged (c, a, rowmask, before, &wh);
    free (before);
    raid_array_close (a);
    a = NULL;
    touched_rows (c, d, img, rowmask);
    wh.phase = "member images after the array's resync and close";
    check_parity (c, d, rowmask, 4, &wh);
  }
  raid_array_close (a);
 out:
  for (int i = 0; i < wl->n; i++)
    cs_disk_free (d[i]);
  cs_world_free (w);
  free (rowmask);
}

/* Reshape workloads: read the whole array (the reshape moved every row)
 * and check every sector; inv as in check_data.  Returns false on a
 * failure. */
static bool
check_all (struct ctx *c, struct raid_array *a, const struct model *m, int inv,
           const struct where *wh)
{
  uint64_t size = raid_min_u64 (raid_array_size (a), m->size), piece = 65536;
  uint8_t *buf = malloc (piece);
  bool seen[NINV] = { false }, ok = true;

  for (uint64_t off = 0; off < size && ok; off += piece) {
    uint64_t len = raid_min_u64 (piece, size - off);
    int e = raid_array_pread (a, buf, len, off);
    if (e) {
      report (c, 1, wh, "read of array offset %" PRIu64 " +%" PRIu64 " failed: %s",
              off, len, strerror (e));
      ok = false;
      break;
    }
    ok &= check_sectors (c, m, buf, off / SECTOR, len / SECTOR, inv, seen, wh);
  }
  free (buf);
  return ok;
}

/* Whether the array's geometry is the one prepare planned (target) or
 * the one it was created with. */
static int
geometry_is (const struct raid_status *st, const struct workload *wl, bool target)
{
  struct raid_geom_status g = { wl->level, wl->layout, wl->chunk, wl->n };

  if (target)
    g = reshape_target;
  return st->geom.level == g.level && st->geom.raid_disks == g.raid_disks &&
    st->geom.chunk == g.chunk && st->geom.layout == g.layout;
}

/* Reassemble a crashed reshape minus `removed`, check the data, let the
 * reshape resume (or start it if it was frozen) and finish, check the
 * geometry and the data again, and with every member present let the
 * array scrub itself: no parity mismatch anywhere. */
static void
check_reshape (struct ctx *c, const struct run *r, struct cs_image *const *img,
               char (*desc)[256], enum cs_mode mode, uint32_t removed,
               uint64_t N, uint64_t *rng)
{
  const struct workload *wl = &c->wl;
  struct cs_world *w = cs_world_new ();
  struct cs_disk *d[RAID_MAX_MEMBERS] = { 0 };
  struct raid_status *st = malloc (sizeof *st);
  int order[RAID_MAX_MEMBERS], inv;
  bool degraded = removed || r->dead >= 0;
  struct raid_array *a;
  char err[512];
  struct where wh = { N, mode, removed, order, 0, desc, r, "assembly" };
  uint64_t zero = 0;
  bool aborted = false;

  a = reassemble (c, r, img, removed, rng, w, d, order, &wh);
  if (a == NULL)
    goto out;
  inv = degraded && wl->consistency == SB_CONS_JOURNAL ? 4 : 0;
  wh.phase = "read after reassembly (reshape where the crash left it)";
  if (wl->consistency == SB_CONS_JOURNAL || !degraded)
    check_all (c, a, &r->m, inv, &wh);
  raid_array_set_speed (a, &zero, &zero, err, sizeof err);
  if (raid_array_start (a) != 0) {
    report (c, 1, &wh, "raid_array_start failed");
    goto out;
  }
  for (int i = 0; i < 8; i++) {     /* resume, or start if frozen; then the */
    raid_array_wait (a, 30);         /* resync or recovery that may follow */
    raid_array_status (a, st);
    if (st->sync_action == RAID_SYNC_IDLE && !st->has_reshape)
      break;
    if (st->sync_action == RAID_SYNC_FROZEN && st->reshape.position == 0 &&
        raid_array_start_action (a, err, sizeof err) == ENODEV)
      break;                         /* cannot start: aborted below */
    if (st->sync_action == RAID_SYNC_FROZEN)
      raid_array_start_action (a, err, sizeof err);
  }
  raid_array_status (a, st);
  if (st->has_reshape && st->sync_action == RAID_SYNC_FROZEN &&
      st->reshape.position == 0) {
    /* Start refused (a member the reshape adds lost its record, or was
     * left out): nothing moved, so abort gives back the old geometry. */
    wh.phase = "abort of a reshape that cannot start";
    if (raid_array_abort (a, err, sizeof err) != 0)
      report (c, 1, &wh, "abort at position 0 refused: %s", err);
    aborted = true;
    raid_array_wait (a, 30);         /* a resync the array owes */
    raid_array_status (a, st);
  }
  wh.phase = "after the resumed reshape";
  if (st->has_reshape || st->sync_action != RAID_SYNC_IDLE)
    report (c, 1, &wh, "reshape not finished after restart: sync_action %s, "
            "reshape %s, health %s", raid_sync_action_name (st->sync_action),
            st->has_reshape ? "pending" : "none", raid_health_name (st->health));
  else if (!(geometry_is (st, wl, true) && !aborted) &&
           !(geometry_is (st, wl, false) &&
             (r->crash_op <= c->prepare_op || aborted)))
    report (c, 1, &wh, "geometry after restart: raid%d %s chunk %u, %d members",
            st->geom.level, raid_layout_name (st->geom.layout), st->geom.chunk,
            st->geom.raid_disks);
  if (wl->consistency == SB_CONS_JOURNAL || !degraded)
    check_all (c, a, &r->m, inv, &wh);
  if (!degraded && st->health == RAID_HEALTH_OPTIMAL) {
    wh.phase = "the array's own parity check (scrub) after the reshape";
    if (raid_array_check (a, false, err, sizeof err) != 0)
      report (c, 5, &wh, "check refused: %s", err);
    else {
      raid_array_wait (a, 30);
      raid_array_status (a, st);
      if (st->sync_action != RAID_SYNC_IDLE || st->mismatch_count != 0)
        report (c, wl->consistency == SB_CONS_JOURNAL ? 5 : 4, &wh,
                "scrub: %s, %" PRIu64 " parity mismatches",
                raid_sync_action_name (st->sync_action), st->mismatch_count);
    }
  }
 out:
  raid_array_close (a);
  for (int i = 0; i < ndisks (wl); i++)
    cs_disk_free (d[i]);
  cs_world_free (w);
  free (st);
}

/* Member sets to leave out of the reassembly. */
static int
removal_sets (const struct ctx *c, const struct run *r, uint32_t *sets)
{
  const struct workload *wl = &c->wl;
  int k = 0, tol = wl->level == 6 || (wl->level == 1 && wl->n > 2) ? 2 : 1;

  if (wl->reshape && wl->r_level >= 0 && wl->r_level != 6)
    tol = 1;                        /* the new layout tolerates one loss */

  sets[k++] = 0;
  /* Mirrors have no write hole: any member may be left out of them,
   * whatever the policy. */
  if (c->no_removal ||
      (wl->consistency != SB_CONS_JOURNAL && !(wl->level == 1 && !wl->reshape)))
    return k;
  if (r->dead >= 0)
    tol--;                          /* already degraded */
  for (int i = 0; i < ndisks (wl); i++) {
    if (i == r->dead)
      continue;
    if (tol == 1)
      sets[k++] = 1u << i;
    for (int j = i + 1; tol == 2 && j < ndisks (wl); j++)
      sets[k++] = 1u << i | 1u << j;
  }
  return k;
}

/* ------------------------------------------------------------------ */
/* One workload: every crash point, every mode, every removal. */

static void
ctx_init (struct ctx *c, const struct workload *wl, unsigned modes,
          bool no_removal)
{
  char err[256];

  memset (c, 0, sizeof *c);
  c->wl = *wl;
  c->modes = modes;
  c->no_removal = no_removal;
  if (raid_geom_init (&c->g, wl->level, wl->layout, wl->chunk, wl->n, err,
                      sizeof err) < 0) {
    fprintf (stderr, "test-crash: %s: %s\n", wl->name, err);
    exit (1);
  }
  c->msize = wl->member_size ? wl->member_size : MEMBER_SIZE;
  c->doff = wl->data_offset ? wl->data_offset : DATA_OFFSET;
  c->rows = (c->msize - c->doff) / wl->chunk;
  c->size = c->rows * c->g.stripe_width;
  make_base (c);
  c->prepare_op = -1;
  for (int k = 0; k < wl->nops; k++)
    if (wl->ops[k].kind == OP_RESHAPE && c->prepare_op < 0)
      c->prepare_op = k;
}

static void
ctx_free (struct ctx *c)
{
  for (int i = 0; i < ndisks (&c->wl); i++)
    cs_image_unref (c->base[i]);
  free (c->ref_trace);
}

/* The crash-free run: counts T and records the trace. */
static bool
reference_run (struct ctx *c)
{
  struct run r;

  c->ref_trace = xcalloc (TRACE_CAP, sizeof *c->ref_trace);
  run_workload (c, 0, c->ref_trace, TRACE_CAP, &r);
  c->total = r.writes;
  if (verbose)
    for (int k = 0; k < c->wl.nops; k++) {
      char op[128];
      describe_op (&c->wl, k, op, sizeof op);
      printf ("%s: %s\n", c->wl.name, op);
    }
  CHECK (!r.crashed, "%s: crashed without being armed", c->wl.name);
  CHECK (c->total > 0 && c->total <= TRACE_CAP, "%s: %" PRIu64 " member writes",
         c->wl.name, c->total);
  c->size_end = r.size_end;
  run_free (&r, ndisks (&c->wl));
  return !r.crashed && c->total > 0 && c->total <= TRACE_CAP;
}

/* The (N mod k)-th of the k enabled modes. */
static int
rotated_mode (unsigned modes, uint64_t N)
{
  int k = __builtin_popcount (modes), want = (int) (N % (uint64_t) k);

  for (int mode = 0; mode < CS_NMODES; mode++)
    if ((modes & (1u << mode)) && want-- == 0)
      return mode;
  return -1;
}

static void
crash_point (struct ctx *c, uint64_t N)
{
  const struct workload *wl = &c->wl;
  struct run r;
  uint32_t sets[1 + RAID_MAX_MEMBERS * RAID_MAX_MEMBERS];
  int nsets;

  run_workload (c, N, NULL, 0, &r);
  nsets = removal_sets (c, &r, sets);
  CHECK (r.crashed && r.writes == N, "%s: armed at %" PRIu64 ", crashed=%d after %"
         PRIu64 " writes", wl->name, N, r.crashed, r.writes);
  CHECK (cs_world_trace (r.w) == c->ref_trace[N - 1],
         "%s: write %" PRIu64 " differs from the crash-free run: the workload is "
         "not deterministic, crash points cannot be enumerated", wl->name, N);
  c->t.points++;
  for (int mode = 0; mode < CS_NMODES; mode++) {
    struct cs_image *img[RAID_MAX_MEMBERS];
    char desc[RAID_MAX_MEMBERS][256];
    uint64_t rng = cs_seed (wl->seed, N, mode, 1);

    if (!(c->modes & (1u << mode)))
      continue;
    if (rotate_modes && mode != rotated_mode (c->modes, N / point_stride))
      continue;
    for (int i = 0; i < ndisks (wl); i++)
      img[i] = cs_disk_crash_image (r.d[i], mode, &rng, desc[i], sizeof desc[i]);
    for (int k = 0; k < nsets; k++)
      if (wl->reshape)
        check_reshape (c, &r, img, desc, mode, sets[k], N, &rng);
      else
        check_images (c, &r, img, desc, mode, sets[k], N, &rng);
    for (int i = 0; i < ndisks (wl); i++)
      cs_image_unref (img[i]);
  }
  run_free (&r, ndisks (wl));
}

/* Returns the number of invariant failures. */
static uint64_t
run_case (const struct workload *wl, unsigned modes, bool no_removal)
{
  struct ctx *c = xcalloc (1, sizeof *c);
  uint64_t nfail = 0;
  double t0 = (double) raid_now_mono_ns ();
  bool ok;

  ctx_init (c, wl, modes, no_removal);
  ok = reference_run (c);
  c->size = raid_max_u64 (c->size, c->size_end);   /* a grow's new capacity */
  if (ok)
    for (uint64_t N = 1; N <= c->total; N++)
      if (only_point ? N == only_point
          : (N - 1) % point_stride == 0 || N == c->total)
        crash_point (c, N);
  for (int i = 1; i < NINV; i++)
    if (i != INV_4W)                     /* tolerated: see the top */
      nfail += c->t.fail[i];
  printf ("test-crash: %-44s %3" PRIu64 " crash points, %5" PRIu64
          " images checked, failures: inv1 %" PRIu64 " inv2 %" PRIu64 " inv3 %"
          PRIu64 " inv4 %" PRIu64 " inv4w %" PRIu64 " inv5 %" PRIu64 " (%.1f s)\n",
          wl->name, c->t.points, c->t.images, c->t.fail[1], c->t.fail[2],
          c->t.fail[3], c->t.fail[4], c->t.fail[INV_4W], c->t.fail[5],
          ((double) raid_now_mono_ns () - t0) / 1e9);
  for (int i = 1; i < NINV; i++)
    if (c->t.fail[i])
      printf ("%s", c->t.first[i]);
  fflush (stdout);
  ctx_free (c);
  free (c);
  return nfail;
}

/* ------------------------------------------------------------------ */
/* Self-tests: the simulator's semantics, and that the checker catches
 * planted damage. */

static void
fill (uint8_t *b, size_t n, uint8_t v)
{
  for (size_t i = 0; i < n; i++)
    b[i] = (uint8_t) (v + i * 7);
}

static bool
image_is (const struct cs_image *img, uint64_t off, const uint8_t *want, size_t n)
{
  uint8_t *got = malloc (n);
  bool r;

  cs_image_read (img, got, n, off);
  r = memcmp (got, want, n) == 0;
  free (got);
  return r;
}

static void
selftest_pending_durable (void)
{
  struct cs_world *w = cs_world_new ();
  struct cs_image *base = cs_image_new (NULL, 65536), *img;
  struct cs_disk *d = cs_disk_new (w, base, 7);
  uint8_t a[8192], b[8192], got[8192], zero[8192] = { 0 };
  uint64_t rng = 1;

  fill (a, sizeof a, 1);
  fill (b, sizeof b, 99);
  /* A write is pending: reads see it, the durable image does not. */
  CHECK (cs_disk_pwrite (d, a, 3000, 1000, false) == 0, "pwrite");
  CHECK (cs_disk_pread (d, got, 3000, 1000) == 0 && !memcmp (got, a, 3000),
         "read does not see the pending write");
  cs_disk_peek_durable (d, got, 3000, 1000);
  CHECK (!memcmp (got, zero, 3000), "pending write is durable before a flush");
  CHECK (cs_disk_npending (d) == 1, "npending %zu", cs_disk_npending (d));
  img = cs_disk_crash_image (d, CS_LOSE_ALL, &rng, NULL, 0);
  CHECK (image_is (img, 1000, zero, 3000), "lose-all kept a pending write");
  cs_image_unref (img);
  img = cs_disk_crash_image (d, CS_KEEP_ALL, &rng, NULL, 0);
  CHECK (image_is (img, 1000, a, 3000), "keep-all lost a pending write");
  /* The image is a snapshot: later writes and flushes do not reach it. */
  CHECK (cs_disk_flush (d) == 0, "flush");
  CHECK (cs_disk_pwrite (d, b, 4096, 0, false) == 0, "pwrite");
  CHECK (cs_disk_flush (d) == 0, "flush");
  CHECK (image_is (img, 1000, a, 3000), "crash image changed after the crash");
  cs_image_unref (img);
  /* Flushed: durable. */
  cs_disk_peek_durable (d, got, 4096, 0);
  CHECK (!memcmp (got, b, 4096), "flush did not make the write durable");
  CHECK (cs_disk_npending (d) == 0, "pending after flush");

  /* FUA is durable at once, and an older pending write never lands over it. */
  CHECK (cs_disk_pwrite (d, a, 8192, 8192, false) == 0, "pwrite");
  CHECK (cs_disk_pwrite (d, b, 512, 10240, true) == 0, "fua pwrite");
  cs_disk_peek_durable (d, got, 512, 10240);
  CHECK (!memcmp (got, b, 512), "FUA write not durable");
  cs_disk_peek (d, got, 8192, 8192);
  CHECK (!memcmp (got, a, 2048) && !memcmp (got + 2048, b, 512) &&
         !memcmp (got + 2560, a + 2560, 8192 - 2560), "volatile view after FUA");
  CHECK (cs_disk_npending (d) == 2, "older write not split around the FUA one: %zu",
         cs_disk_npending (d));
  img = cs_disk_crash_image (d, CS_KEEP_ALL, &rng, NULL, 0);
  CHECK (image_is (img, 8192, got, 8192), "keep-all: stale data over a FUA write");
  cs_image_unref (img);
  img = cs_disk_crash_image (d, CS_LOSE_ALL, &rng, NULL, 0);
  CHECK (image_is (img, 10240, b, 512) && image_is (img, 8192, zero, 2048),
         "lose-all: FUA write lost or pending kept");
  CHECK (cs_image_page_written (img, 2) && !cs_image_page_written (img, 5),
         "page_written");
  cs_image_unref (img);

  /* A failed disk fails everything and counts nothing. */
  {
    uint64_t n0 = cs_world_writes (w);
    cs_disk_set_failed (d, true);
    CHECK (cs_disk_pwrite (d, a, 512, 0, false) == EIO &&
           cs_disk_pread (d, got, 512, 0) == EIO && cs_disk_flush (d) == EIO,
           "failed disk did not fail");
    CHECK (cs_world_writes (w) == n0, "failed write counted");
    cs_disk_set_failed (d, false);
    CHECK (cs_disk_pwrite (d, a, 512, 65536 - 256, false) == EIO,
           "write past the end");
  }
  cs_disk_free (d);
  cs_image_unref (base);
  cs_world_free (w);
}

static void
selftest_crash_point (void)
{
  struct cs_world *w = cs_world_new ();
  struct cs_image *base = cs_image_new (NULL, 65536);
  struct cs_disk *d0 = cs_disk_new (w, base, 0), *d1 = cs_disk_new (w, base, 1);
  struct member *m = cs_disk_member (d1, "selftest");
  uint8_t a[4096], got[4096];
  uint64_t trace[8] = { 0 };
  struct cs_write_info li;

  fill (a, sizeof a, 5);
  cs_world_set_trace_log (w, trace, 8);
  cs_world_arm (w, 3);
  CHECK (cs_disk_pwrite (d0, a, 4096, 0, false) == 0, "write 1");
  CHECK (member_pwrite (m, a, 4096, 8192, false) == 0, "write 2 through the member");
  CHECK (member_flush (m) == 0, "flush before the crash");
  CHECK (!cs_world_crashed (w), "crashed early");
  CHECK (cs_disk_zero (d0, 1024, 4096, true) == 0, "write 3 completes");
  CHECK (cs_world_crashed (w), "not crashed after write 3");
  cs_world_last_write (w, &li);
  CHECK (li.disk_id == 0 && li.off == 4096 && li.len == 1024 && li.fua && li.zero,
         "last write %d +%" PRIu64 " %" PRIu64, li.disk_id, li.off, li.len);
  CHECK (cs_disk_pwrite (d1, a, 512, 0, false) == EIO, "write after the crash");
  CHECK (member_pread (m, got, 512, 0) == EIO, "read after the crash");
  CHECK (cs_disk_flush (d0) == EIO, "flush after the crash");
  CHECK (cs_world_writes (w) == 3, "writes %" PRIu64, cs_world_writes (w));
  CHECK (trace[0] && trace[1] && trace[2] && trace[3] == 0 &&
         trace[2] == cs_world_trace (w), "trace log");
  member_close (m);
  /* The same sequence gives the same trace; a different one does not. */
  {
    struct cs_world *w2 = cs_world_new ();
    struct cs_disk *e0 = cs_disk_new (w2, base, 0);
    struct cs_disk *e1 = cs_disk_new (w2, base, 1);
    cs_disk_pwrite (e0, got, 4096, 0, false);
    cs_disk_pwrite (e1, a, 4096, 8192, false);
    CHECK (cs_world_trace (w2) == trace[1], "trace depends on the data");
    cs_disk_pwrite (e1, a, 4096, 0, false);
    CHECK (cs_world_trace (w2) != trace[2], "trace blind to offsets");
    cs_disk_free (e0);
    cs_disk_free (e1);
    cs_world_free (w2);
  }
  cs_disk_free (d0);
  cs_disk_free (d1);
  cs_image_unref (base);
  cs_world_free (w);
}

/* Subsets and tearing: every sector is wholly old or wholly new; a prefix
 * tear applies a prefix; over many seeds every outcome shows up. */
static void
selftest_modes (void)
{
  struct cs_image *base = cs_image_new (NULL, 65536);
  int seen_none = 0, seen_all = 0, seen_mixed = 0, seen_torn = 0;

  for (uint64_t seed = 1; seed <= 200; seed++) {
    struct cs_world *w = cs_world_new ();
    struct cs_disk *d = cs_disk_new (w, base, 0);
    uint8_t a[4096], got[SECTOR];
    uint64_t rng = cs_seed (seed, 0, 0, 0);
    enum cs_mode mode = seed % 2 ? CS_SUBSET : CS_SUBSET_TORN;
    struct cs_image *img;
    char desc[256];
    int napplied = 0, nwrites = 6;

    fill (a, sizeof a, (uint8_t) seed);
    for (int i = 0; i < nwrites; i++)   /* six disjoint 4 KiB writes */
      cs_disk_pwrite (d, a, 4096, (uint64_t) i * 8192, false);
    img = cs_disk_crash_image (d, mode, &rng, desc, sizeof desc);
    for (int i = 0; i < nwrites; i++) {
      int nnew = 0;
      for (int s = 0; s < 8; s++) {
        uint64_t off = (uint64_t) i * 8192 + s * SECTOR;
        bool is_new, is_old = true;
        cs_image_read (img, got, SECTOR, off);
        is_new = !memcmp (got, a + s * SECTOR, SECTOR);
        for (size_t k = 0; k < SECTOR; k++)
          is_old &= got[k] == 0;
        CHECK (is_new || is_old, "seed %" PRIu64 ": sector torn inside", seed);
        nnew += is_new;
      }
      if (nnew > 0 && nnew < 8)
        seen_torn++;
      CHECK (mode == CS_SUBSET_TORN || nnew == 0 || nnew == 8,
             "seed %" PRIu64 ": write %d torn without tearing (%s)", seed, i, desc);
      napplied += nnew == 8;
    }
    if (strstr (desc, "prefix")) {
      /* Find the torn write and check its new sectors form a prefix. */
      for (int i = 0; i < nwrites; i++) {
        int s, first_old = 8;
        for (s = 0; s < 8; s++) {
          cs_image_read (img, got, SECTOR, (uint64_t) i * 8192 + s * SECTOR);
          if (memcmp (got, a + s * SECTOR, SECTOR) && first_old == 8)
            first_old = s;
          else if (!memcmp (got, a + s * SECTOR, SECTOR) && first_old < 8)
            CHECK (0, "seed %" PRIu64 ": prefix tear left a gap (%s)", seed, desc);
        }
      }
    }
    seen_none += napplied == 0;
    seen_all += napplied == nwrites;
    seen_mixed += napplied > 0 && napplied < nwrites;
    cs_image_unref (img);
    cs_disk_free (d);
    cs_world_free (w);
  }
  CHECK (seen_mixed > 50 && seen_torn > 20 && seen_none + seen_all > 0,
         "subset modes lack variety: none %d all %d mixed %d torn %d",
         seen_none, seen_all, seen_mixed, seen_torn);
  cs_image_unref (base);
}

/* The checker is not vacuous: damage planted in a clean, crash-free array
 * is reported as the right invariant. */
static void
selftest_checker (void)
{
  struct workload wl = {
    .name = "checker self-test", .level = 5, .layout = RAID_LAYOUT_LEFT_SYMMETRIC,
    .n = 4, .chunk = 4096, .consistency = SB_CONS_JOURNAL, .seed = 11,
    .failed = -1,
  };
  struct ctx *c = xcalloc (1, sizeof *c);
  struct run r;
  struct cs_image *img[RAID_MAX_MEMBERS], *bad[RAID_MAX_MEMBERS];
  char desc[RAID_MAX_MEMBERS][256];
  uint64_t rng = 5, sec;
  struct raid_row rr;
  uint64_t row;
  uint32_t in_chunk;
  int di;

  gen_full (&wl, 1);
  ctx_init (c, &wl, 1u << CS_KEEP_ALL, false);
  run_workload (c, 0, NULL, 0, &r);
  c->total = r.writes;
  CHECK (!r.crashed, "checker self-test: crash");
  for (sec = 0; sec < r.m.nsect && r.m.dur_wid[sec] == 0; sec++)
    ;
  CHECK (sec < r.m.nsect, "checker self-test: nothing durable");
  cs_world_crash_now (r.w);
  for (int i = 0; i < wl.n; i++) {
    img[i] = cs_disk_crash_image (r.d[i], CS_KEEP_ALL, &rng, desc[i],
                                  sizeof desc[i]);
    bad[i] = cs_image_ref (img[i]);
  }
  raid_geom_locate (&c->g, sec * SECTOR, &row, &di, &in_chunk);
  raid_geom_row (&c->g, row, &rr);

  /* Intact: no failure at all. */
  check_images (c, &r, img, desc, CS_KEEP_ALL, 0, r.writes, &rng);
  check_images (c, &r, img, desc, CS_KEEP_ALL, 1u << rr.pd, r.writes, &rng);
  CHECK (c->t.fail[1] + c->t.fail[2] + c->t.fail[3] + c->t.fail[4] + c->t.fail[5] +
         c->t.fail[INV_4W] == 0,
         "checker self-test: clean array reported as failing:\n%s%s%s%s%s%s",
         c->t.first[1], c->t.first[2], c->t.first[3], c->t.first[4], c->t.first[5],
         c->t.first[INV_4W]);

  /* One flipped data byte: a durable write lost (invariant 2 or 3). */
  {
    struct cs_world *w = cs_world_new ();
    struct cs_disk *d = cs_disk_new (w, img[rr.data[di]], 0);
    uint8_t x;
    uint64_t moff = DATA_OFFSET + row * c->g.chunk + in_chunk + 17;
    cs_disk_peek (d, &x, 1, moff);
    x ^= 0x40;
    cs_disk_pwrite (d, &x, 1, moff, true);
    cs_world_crash_now (w);
    cs_image_unref (bad[rr.data[di]]);
    bad[rr.data[di]] = cs_disk_crash_image (d, CS_LOSE_ALL, &rng, NULL, 0);
    cs_disk_free (d);
    cs_world_free (w);
  }
  memset (&c->t, 0, sizeof c->t);
  check_images (c, &r, bad, desc, CS_KEEP_ALL, 0, r.writes, &rng);
  CHECK (c->t.fail[2] + c->t.fail[3] == 1 && c->t.fail[5] == 1,
         "checker self-test: flipped data byte: inv2 %" PRIu64 " inv3 %" PRIu64
         " inv5 %" PRIu64, c->t.fail[2], c->t.fail[3], c->t.fail[5]);
  cs_image_unref (bad[rr.data[di]]);
  bad[rr.data[di]] = cs_image_ref (img[rr.data[di]]);

  /* One flipped parity byte: invisible to reads, caught on the images
   * (invariant 5), and as lost data once a data member is left out. */
  {
    struct cs_world *w = cs_world_new ();
    struct cs_disk *d = cs_disk_new (w, img[rr.pd], 0);
    uint8_t x;
    uint64_t moff = DATA_OFFSET + row * c->g.chunk + in_chunk + 17;
    cs_disk_peek (d, &x, 1, moff);
    x ^= 0x40;
    cs_disk_pwrite (d, &x, 1, moff, true);
    cs_world_crash_now (w);
    cs_image_unref (bad[rr.pd]);
    bad[rr.pd] = cs_disk_crash_image (d, CS_LOSE_ALL, &rng, NULL, 0);
    cs_disk_free (d);
    cs_world_free (w);
  }
  memset (&c->t, 0, sizeof c->t);
  check_images (c, &r, bad, desc, CS_KEEP_ALL, 0, r.writes, &rng);
  CHECK (c->t.fail[2] + c->t.fail[3] == 0 && c->t.fail[5] == 1,
         "checker self-test: flipped parity byte: inv2/3 %" PRIu64 " inv5 %" PRIu64,
         c->t.fail[2] + c->t.fail[3], c->t.fail[5]);
  check_images (c, &r, bad, desc, CS_KEEP_ALL, 1u << rr.data[di], r.writes, &rng);
  CHECK (c->t.fail[4] + c->t.fail[INV_4W] == 1,
         "checker self-test: parity damage not seen degraded");
  if (verbose)
    printf ("checker self-test, expected failures:\n%s%s%s", c->t.first[4],
            c->t.first[INV_4W], c->t.first[5]);

  for (int i = 0; i < wl.n; i++) {
    cs_image_unref (img[i]);
    cs_image_unref (bad[i]);
  }
  run_free (&r, wl.n);
  ctx_free (c);
  free (c);
}

/* ------------------------------------------------------------------ */
/* The scripted workloads (make check) and the long random run. */

/* Op counts are sized so that make check stays under a minute on one CPU:
 * a crash image set costs 1-2 ms (the journal scan at assembly reads every
 * member's consistency area), and raid6 checks 11 member sets per image. */
struct geomcase {
  int level, layout, n;
  uint32_t chunk;
  int small, mixed, fail_before, fail_after;
};

static const struct geomcase geoms[] = {
  { 5, RAID_LAYOUT_LEFT_SYMMETRIC, 4, 4096, 10, 9, 3, 6 },
  { 6, RAID_LAYOUT_LEFT_SYMMETRIC, 5, 8192, 6, 5, 2, 4 },
  { 4, RAID_LAYOUT_PARITY_N, 3, 16384, 12, 12, 4, 6 },
  { 1, RAID_LAYOUT_NONE, 3, 8192, 10, 9, 3, 6 },
};

static void
wl_init (struct workload *wl, const struct geomcase *gc, int consistency,
         const char *what, uint64_t seed)
{
  char sz[16];

  memset (wl, 0, sizeof *wl);
  wl->level = gc->level;
  wl->layout = gc->layout;
  wl->n = gc->n;
  wl->chunk = gc->chunk;
  wl->consistency = consistency;
  wl->seed = seed;
  wl->failed = -1;
  wl->r_level = wl->r_layout = -1;
  raid_fmt_size (gc->chunk, sz, sizeof sz);
  snprintf (wl->name, sizeof wl->name, "raid%d %s n=%d chunk=%s %s %s",
            gc->level, raid_layout_name (gc->layout), gc->n, sz,
            sb_consistency_name (consistency), what);
}

static bool
selected (const char *name, const char *only)
{
  return !only || strstr (name, only);
}

static uint64_t
run_scripted (unsigned modes, bool no_removal, const char *only)
{
  uint64_t nfail = 0;

  for (size_t gi = 0; gi < sizeof geoms / sizeof geoms[0]; gi++) {
    const struct geomcase *gc = &geoms[gi];
    struct workload wl;
    uint64_t seed = 1000 + gi;

    wl_init (&wl, gc, SB_CONS_JOURNAL, "small-writes", seed);
    gen_small (&wl, cs_seed (seed, 1, 0, 0), gc->small);
    if (selected (wl.name, only))
      nfail += run_case (&wl, modes, no_removal);
    wl_init (&wl, gc, SB_CONS_JOURNAL, "full-stripe", seed);
    gen_full (&wl, cs_seed (seed, 2, 0, 0));
    if (selected (wl.name, only))
      nfail += run_case (&wl, modes, no_removal);
    wl_init (&wl, gc, SB_CONS_JOURNAL, "mixed", seed);
    gen_mixed (&wl, cs_seed (seed, 3, 0, 0), gc->mixed);
    if (selected (wl.name, only))
      nfail += run_case (&wl, modes, no_removal);
    wl_init (&wl, gc, SB_CONS_JOURNAL, "member-failure", seed);
    gen_failure (&wl, cs_seed (seed, 4, 0, 0), (int) (gi + 1) % gc->n,
                 gc->fail_before, gc->fail_after);
    if (selected (wl.name, only))
      nfail += run_case (&wl, modes, no_removal);
  }
  for (int cons = SB_CONS_BITMAP; cons <= SB_CONS_RESYNC; cons++) {
    struct workload wl;
    wl_init (&wl, &geoms[0], cons, "mixed", 2000 + cons);
    gen_mixed (&wl, cs_seed (2000 + cons, 3, 0, 0), 10);
    if (selected (wl.name, only))
      nfail += run_case (&wl, modes, no_removal);
  }
  return nfail;
}

/* Reshapes (make check: test-crash --reshape): every kind of change that
 * moves data (grow, shrink, chunk, layout, raid4->5, raid5<->6), forward
 * and backward, with each policy, degraded, and with a member failing
 * mid-reshape. */
struct rcase {
  const char *what;
  int level, layout, n;
  int cons;
  int r_level, r_layout, r_raid_devices, nadd;
  uint32_t r_chunk;
  int fail_before, fail_mid;
  enum rsize size;
};

#define LS RAID_LAYOUT_LEFT_SYMMETRIC
#define J SB_CONS_JOURNAL
static const struct rcase rcases[] = {
  { "grow 4->5",           5, LS, 4, J, -1, -1, 0, 1, 0, -1, -1, RS_SAME },
  { "chunk 8K->16K",       5, LS, 4, J, -1, -1, 0, 0, 16384, -1, -1, RS_SAME },
  { "layout ls->ra",       5, LS, 4, J, -1, RAID_LAYOUT_RIGHT_ASYMMETRIC, 0, 0, 0,
    -1, -1, RS_SAME },
  { "level 5->6 add 1",    5, LS, 3, J, 6, -1, 0, 1, 0, -1, -1, RS_SAME },
  { "level 6->5",          6, LS, 5, J, 5, -1, 0, 0, 0, -1, -1, RS_SAME },
  { "level 4->5",          4, RAID_LAYOUT_PARITY_N, 3, J, 5, -1, 0, 0, 0, -1, -1, RS_SAME },
  { "level 1->5",          1, RAID_LAYOUT_NONE, 2, J, 5, -1, 0, 0, 0, -1, -1, RS_SAME },
  { "level 5->1",          5, LS, 2, J, 1, -1, 0, 0, 0, -1, -1, RS_SAME },
  { "shrink 5->4",         5, LS, 5, J, -1, -1, 4, 0, 0, -1, -1, RS_SHRINK },
  { "grow 4->5 member 2 fails mid-reshape", 5, LS, 4, J, -1, -1, 0, 1, 0, -1, 2, RS_SAME },
  { "grow 4->5 of a degraded array (member 1 failed)",
                           5, LS, 4, J, -1, -1, 0, 1, 0, 1, -1, RS_SAME },
  { "grow 4->5",           5, LS, 4, SB_CONS_BITMAP, -1, -1, 0, 1, 0, -1, -1, RS_SAME },
  { "grow 4->5",           5, LS, 4, SB_CONS_RESYNC, -1, -1, 0, 1, 0, -1, -1, RS_SAME },
  { "grow 4->5, the size 4K short of a row",
                           5, LS, 4, J, -1, -1, 0, 1, 0, -1, -1, RS_TAIL },
  { "chunk 8K->16K, the size 4K short of a row",
                           5, LS, 5, J, -1, -1, 0, 0, 16384, -1, -1, RS_TAIL },
  { "layout ls->ra after a grow to 4K short of a row",
                           5, LS, 5, J, -1, RAID_LAYOUT_RIGHT_ASYMMETRIC, 0, 0, 0, -1, -1,
    RS_TAILGROW },
  { "layout ls->ra after a grow to 4K short of a row",
                           5, LS, 5, SB_CONS_BITMAP, -1, RAID_LAYOUT_RIGHT_ASYMMETRIC, 0, 0,
    0, -1, -1, RS_TAILGROW },
};
#undef LS
#undef J

/* The reshape checker is not vacuous: after a crash-free grow, a model
 * that expects one durable byte to differ is reported (invariant 2 or 3),
 * and the intact one is not. */
static void
selftest_reshape_checker (void)
{
  struct geomcase gc = { 5, RAID_LAYOUT_LEFT_SYMMETRIC, 4, 8192, 0, 0, 0, 0 };
  struct workload wl;
  struct ctx *c = xcalloc (1, sizeof *c);
  struct cs_image *img[RAID_MAX_MEMBERS];
  char desc[RAID_MAX_MEMBERS][256];
  uint64_t rng = 9, sec;
  struct run r;

  wl_init (&wl, &gc, SB_CONS_JOURNAL, "reshape checker self-test", 17);
  wl.nadd = 1;
  gen_reshape (&wl, cs_seed (17, 5, 0, 0), -1, -1, 0, RS_SAME);
  ctx_init (c, &wl, 1u << CS_KEEP_ALL, true);
  CHECK (reference_run (c), "reshape self-test: reference run");
  c->size = raid_max_u64 (c->size, c->size_end);
  run_workload (c, 0, NULL, 0, &r);
  c->total = r.writes;
  cs_world_crash_now (r.w);
  for (int i = 0; i < ndisks (&wl); i++)
    img[i] = cs_disk_crash_image (r.d[i], CS_KEEP_ALL, &rng, desc[i], sizeof desc[i]);
  check_reshape (c, &r, img, desc, CS_KEEP_ALL, 0, r.writes, &rng);
  CHECK (c->t.fail[1] + c->t.fail[2] + c->t.fail[3] + c->t.fail[4] + c->t.fail[5] == 0,
         "reshape self-test: intact array reported:\n%s%s%s%s%s", c->t.first[1],
         c->t.first[2], c->t.first[3], c->t.first[4], c->t.first[5]);
  for (sec = 0; sec < r.m.nsect && r.m.dur_wid[sec] == 0; sec++)
    ;
  CHECK (sec < r.m.nsect, "reshape self-test: nothing durable");
  if (sec < r.m.nsect) {
    r.m.dur[sec * SECTOR + 7] ^= 0x20;     /* the model now expects other data */
    memset (&c->t, 0, sizeof c->t);
    check_reshape (c, &r, img, desc, CS_KEEP_ALL, 0, r.writes, &rng);
    CHECK (c->t.fail[2] + c->t.fail[3] >= 1,
           "reshape self-test: a changed durable byte went unreported");
  }
  for (int i = 0; i < ndisks (&wl); i++)
    cs_image_unref (img[i]);
  run_free (&r, ndisks (&wl));
  ctx_free (c);
  free (c);
}

static uint64_t
run_reshapes (unsigned modes, bool no_removal, const char *only)
{
  uint64_t nfail = 0;

  for (size_t i = 0; i < sizeof rcases / sizeof rcases[0]; i++) {
    const struct rcase *rc = &rcases[i];
    struct geomcase gc = { rc->level, rc->layout, rc->n, 8192, 0, 0, 0, 0 };
    struct workload wl;
    char what[96];
    uint64_t resize_to = 0;

    snprintf (what, sizeof what, "reshape %s", rc->what);
    wl_init (&wl, &gc, rc->cons, what, 3000 + i);
    wl.r_level = rc->r_level;
    wl.r_layout = rc->r_layout;
    wl.r_raid_devices = rc->r_raid_devices;
    wl.r_chunk = rc->r_chunk;
    wl.nadd = rc->nadd;
    if (rc->size != RS_SAME) {
      /* Half the array, in whole rows of the new geometry (4K short of one
       * for the tail cases: raid5 targets there). */
      uint64_t w1 = (uint64_t) (rc->r_chunk ? rc->r_chunk : gc.chunk)
        * data_disks (rc->r_level >= 0 ? rc->r_level : rc->level,
                      rc->r_raid_devices ? rc->r_raid_devices : rc->n + rc->nadd);
      uint64_t size = (uint64_t) (RESHAPE_MSIZE - RESHAPE_DOFF) / gc.chunk
        * stripe_width (&wl);
      resize_to = raid_round_down (size / 2, w1) - (rc->size == RS_SHRINK ? 0 : 4096);
    }
    gen_reshape (&wl, cs_seed (3000 + i, 5, 0, 0), rc->fail_before, rc->fail_mid,
                 resize_to, rc->size);
    if (selected (wl.name, only))
      nfail += run_case (&wl, modes, no_removal);
  }
  return nfail;
}

/* Random workloads until the time budget is spent. */
static uint64_t
run_long (unsigned modes, bool no_removal, double seconds)
{
  const char *env = getenv ("CRASH_LONG_SEED");
  uint64_t nfail = 0, rng = env ? strtoull (env, NULL, 10)
    : cs_seed ((uint64_t) time (NULL), getpid (), 0, 0);
  uint64_t t_end = raid_now_mono_ns () + (uint64_t) (seconds * 1e9);
  int count = 0;

  printf ("test-crash: long run for %.0f s (CRASH_LONG_SEED=%" PRIu64
          " repeats it)\n", seconds, rng);
  while (raid_now_mono_ns () < t_end) {
    struct geomcase gc = geoms[cs_rand (&rng) % 3];
    struct workload wl;
    int cons = SB_CONS_JOURNAL;
    uint64_t seed = cs_rand (&rng);
    char what[64];

    if (cs_rand (&rng) % 5 == 0)
      cons = SB_CONS_BITMAP + (int) (cs_rand (&rng) % 2);
    gc.chunk = 4096u << (cs_rand (&rng) % 3);
    if (gc.level == 5 && cs_rand (&rng) % 2) {
      gc.layout = (int) (cs_rand (&rng) % 4);
      gc.n = 3 + (int) (cs_rand (&rng) % 3);
    }
    snprintf (what, sizeof what, "random seed=%" PRIu64, seed);
    wl_init (&wl, &gc, cons, what, seed);
    if (cons == SB_CONS_JOURNAL && cs_rand (&rng) % 4 == 0)
      gen_failure (&wl, seed, (int) (cs_rand (&rng) % gc.n),
                   1 + (int) (cs_rand (&rng) % 8), 1 + (int) (cs_rand (&rng) % 10));
    else if (cs_rand (&rng) % 3 == 0)
      gen_small (&wl, seed, 4 + (int) (cs_rand (&rng) % 12));
    else
      gen_mixed (&wl, seed, 6 + (int) (cs_rand (&rng) % 14));
    nfail += run_case (&wl, modes, no_removal);
    count++;
  }
  printf ("test-crash: long run: %d random workloads\n", count);
  return nfail;
}

static void
quiet_log (enum raid_log_level lvl, const char *msg)
{
  if (verbose && lvl <= RAID_LOG_WARN)
    fprintf (stderr, "raidcore: %s\n", msg);
}

int
main (int argc, char **argv)
{
  unsigned modes = (1u << CS_NMODES) - 1;
  const char *env_long = getenv ("CRASH_LONG");
  const char *env_secs = getenv ("CRASH_LONG_SECONDS");
  bool no_removal = false, lng = env_long && *env_long && *env_long != '0';
  bool reshapes = false;
  double seconds = env_secs ? atof (env_secs) : 180;
  const char *only = NULL;
  uint64_t nfail;

  /* Under the sanitizers (make check with --enable-sanitizers) a check is
   * 5-10 times slower: take every 8th crash point (and the last). */
  if (getenv ("SANITIZERS") && strcmp (getenv ("SANITIZERS"), "yes") == 0)
    point_stride = 8;
  for (int i = 1; i < argc; i++) {
    if (strncmp (argv[i], "--modes=", 8) == 0) {
      modes = 0;
      for (const char *p = argv[i] + 8; *p; p++)
        if (*p >= 'a' && *p < 'a' + CS_NMODES)
          modes |= 1u << (*p - 'a');
    }
    else if (strcmp (argv[i], "--no-removal") == 0)
      no_removal = true;
    else if (strcmp (argv[i], "--reshape") == 0)
      reshapes = true;
    else if (strcmp (argv[i], "--rotate-modes") == 0)
      rotate_modes = true;
    else if (strncmp (argv[i], "--only=", 7) == 0)
      only = argv[i] + 7;
    else if (strcmp (argv[i], "--long") == 0)
      lng = true;
    else if (strncmp (argv[i], "--long=", 7) == 0)
      lng = true, seconds = atof (argv[i] + 7);
    else if (strcmp (argv[i], "--verbose") == 0)
      verbose = true;
    else if (strcmp (argv[i], "--quick") == 0)
      point_stride = 8;
    else if (strncmp (argv[i], "--point=", 8) == 0)
      only_point = strtoull (argv[i] + 8, NULL, 10);
    else {
      fprintf (stderr, "usage: test-crash [--reshape] [--rotate-modes] [--modes=abcd] [--no-removal] "
               "[--only=SUBSTRING] [--point=N] [--quick] [--long[=SECONDS]] "
               "[--verbose]\n");
      return 2;
    }
  }
  raid_log_set_sink (quiet_log);
  member_set_open_hook (open_hook);
  selftest_pending_durable ();
  selftest_crash_point ();
  selftest_modes ();
  selftest_checker ();
  printf ("test-crash: crashsim and checker self-tests: %d checks, %d failed\n",
          checks, failures);
  fflush (stdout);
  if (reshapes)
    selftest_reshape_checker ();
  nfail = lng ? run_long (modes, no_removal, seconds)
    : reshapes ? run_reshapes (modes, no_removal, only)
    : run_scripted (modes, no_removal, only);
  mio_shutdown ();
  if (failures || nfail) {
    fprintf (stderr, "test-crash: %d of %d harness checks failed, %" PRIu64
             " invariant failures\n", failures, checks, nfail);
    return 1;
  }
  printf ("test-crash: %d checks passed, no invariant failure\n", checks);
  return 0;
}
