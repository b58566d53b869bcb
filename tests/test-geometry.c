/* nbdkit-raid: geometry test.
 *
 * raid_geom_row is compared with an independent reference built the way md
 * itself computes placement: ref_chunk() maps one array chunk number to
 * (data role, P role, Q role) with md's per-layout formulas as written in
 * raid5_compute_sector (data index incremented past parity, or rotated
 * modulo the device count), and ref_slots() replays md's syndrome-source
 * walk (start at raid6_d0, visit every device once, P and Q take the last
 * two positions, the others count up).  The comparison covers every valid
 * level/layout, every member count from the level's minimum to 16, at least
 * four full rotation periods and rows near 2^40 and 2^64.
 *
 * The reference itself is anchored by a table of placements written out by
 * hand from md's documented layouts (including the raid6 rows where the Q
 * slot differs from the data index).  Then raid_geom_init's refusals and
 * derived fields, the layout name functions and raid_geom_locate.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "geometry.h"

static int checks, failures;

#define CHECK(cond, ...) do {                                          \
    checks++;                                                           \
    if (!(cond)) {                                                      \
      failures++;                                                       \
      fprintf (stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);            \
      fprintf (stderr, __VA_ARGS__);                                    \
      fprintf (stderr, "\n");                                           \
      if (failures > 50) exit (1);                                      \
    }                                                                   \
  } while (0)

/* ---- the reference: md's per-chunk placement ---- */

struct ref_place {
  int dd;                       /* role holding the chunk */
  int pd, qd;                   /* -1 when absent */
};

/* Placement of array chunk `chunkno` for levels 0, 4, 5, 6 on n devices. */
static struct ref_place
ref_chunk (int level, int layout, int n, uint64_t chunkno)
{
  int parity = level == 0 ? 0 : level == 6 ? 2 : 1;
  int data_disks = n - parity;
  uint64_t stripe = chunkno / data_disks;
  int dd = (int) (chunkno % data_disks);
  int pd = -1, qd = -1;

  if (level == 0)
    return (struct ref_place) { dd, -1, -1 };
  if (level == 4)
    return (struct ref_place) { dd, data_disks, -1 };

  if (level == 5) {
    switch (layout) {
    case RAID_LAYOUT_LEFT_ASYMMETRIC:
      pd = data_disks - (int) (stripe % n);
      if (dd >= pd) dd++;
      break;
    case RAID_LAYOUT_RIGHT_ASYMMETRIC:
      pd = (int) (stripe % n);
      if (dd >= pd) dd++;
      break;
    case RAID_LAYOUT_LEFT_SYMMETRIC:
      pd = data_disks - (int) (stripe % n);
      dd = (pd + 1 + dd) % n;
      break;
    case RAID_LAYOUT_RIGHT_SYMMETRIC:
      pd = (int) (stripe % n);
      dd = (pd + 1 + dd) % n;
      break;
    case RAID_LAYOUT_PARITY_0:
      pd = 0;
      dd++;
      break;
    case RAID_LAYOUT_PARITY_N:
      pd = data_disks;
      break;
    default:
      abort ();
    }
    return (struct ref_place) { dd, pd, -1 };
  }

  /* level 6 */
  switch (layout) {
  case RAID_LAYOUT_LEFT_ASYMMETRIC:
  case RAID_LAYOUT_RIGHT_ASYMMETRIC:
    if (layout == RAID_LAYOUT_LEFT_ASYMMETRIC)
      pd = n - 1 - (int) (stripe % n);
    else
      pd = (int) (stripe % n);
    qd = pd + 1;
    if (pd == n - 1) {          /* Q D D D P */
      dd++;
      qd = 0;
    }
    else if (dd >= pd)          /* D D P Q D */
      dd += 2;
    break;
  case RAID_LAYOUT_LEFT_SYMMETRIC:
    pd = n - 1 - (int) (stripe % n);
    qd = (pd + 1) % n;
    dd = (pd + 2 + dd) % n;
    break;
  case RAID_LAYOUT_RIGHT_SYMMETRIC:
    pd = (int) (stripe % n);
    qd = (pd + 1) % n;
    dd = (pd + 2 + dd) % n;
    break;
  case RAID_LAYOUT_PARITY_0:
    pd = 0;
    qd = 1;
    dd += 2;
    break;
  case RAID_LAYOUT_PARITY_N:
    pd = data_disks;
    qd = data_disks + 1;
    break;
  case RAID_LAYOUT_LEFT_ASYMMETRIC_6:
    pd = data_disks - (int) (stripe % (n - 1));
    if (dd >= pd) dd++;
    qd = n - 1;
    break;
  case RAID_LAYOUT_RIGHT_ASYMMETRIC_6:
    pd = (int) (stripe % (n - 1));
    if (dd >= pd) dd++;
    qd = n - 1;
    break;
  case RAID_LAYOUT_LEFT_SYMMETRIC_6:
    pd = data_disks - (int) (stripe % (n - 1));
    dd = (pd + 1 + dd) % (n - 1);
    qd = n - 1;
    break;
  case RAID_LAYOUT_RIGHT_SYMMETRIC_6:
    pd = (int) (stripe % (n - 1));
    dd = (pd + 1 + dd) % (n - 1);
    qd = n - 1;
    break;
  case RAID_LAYOUT_PARITY_0_6:
    pd = 0;
    dd++;
    qd = n - 1;
    break;
  default:
    abort ();
  }
  return (struct ref_place) { dd, pd, qd };
}

/* md's syndrome walk for one raid6 row: slot_of_role[r] is the Q exponent
 * of the data block on role r; P and Q get data_disks and data_disks+1. */
static void
ref_slots (int n, int pd, int qd, int slot_of_role[])
{
  int d0 = qd == n - 1 ? 0 : qd + 1;
  int count = 0;
  int i = d0;

  do {
    if (i == pd)
      slot_of_role[i] = n - 2;
    else if (i == qd)
      slot_of_role[i] = n - 1;
    else
      slot_of_role[i] = count++;
    i = i + 1 < n ? i + 1 : 0;
  } while (i != d0);
}

/* ---- comparing one row ---- */

static int
parity_count (int level, int n)
{
  return level == 0 ? 0 : level == 1 ? n - 1 : level == 6 ? 2 : 1;
}

/* Every role is exactly one of: a data index, P, Q, or (raid1) a mirror. */
static void
check_row_partition (const struct raid_geom *g, uint64_t row,
                     const struct raid_row *r)
{
  int seen[RAID_MAX_MEMBERS] = { 0 };
  int n = g->raid_disks;
  bool ok = true;

  for (int i = 0; i < g->data_disks; i++) {
    if (r->data[i] < 0 || r->data[i] >= n) {
      ok = false;
      continue;
    }
    seen[r->data[i]]++;
    ok &= r->role_data[r->data[i]] == i;
  }
  if (r->pd >= 0 && r->pd < n) seen[r->pd]++; else ok &= r->pd == -1;
  if (r->qd >= 0 && r->qd < n) seen[r->qd]++; else ok &= r->qd == -1;
  for (int role = 0; role < n; role++) {
    if (g->level == 1 && role > 0)
      seen[role]++;             /* a mirror */
    ok &= seen[role] == 1;
    if (seen[role] == 1 && (role == r->pd || role == r->qd ||
                            (g->level == 1 && role > 0)))
      ok &= r->role_data[role] == -1;
  }
  CHECK (ok, "raid%d %s n=%d row %" PRIu64 ": roles are not a partition",
         g->level, raid_layout_name (g->layout), n, row);
}

static void
compare_row (const struct raid_geom *g, uint64_t row)
{
  const int n = g->raid_disks, k = g->data_disks;
  const char *name = raid_layout_name (g->layout);
  struct raid_row r;
  int want_pd = -1, want_qd = -1;

  memset (&r, 0x5a, sizeof r);
  raid_geom_row (g, row, &r);
  check_row_partition (g, row, &r);

  if (g->level == 1) {
    CHECK (r.pd == -1 && r.qd == -1 && r.data[0] == 0 &&
           r.role_data[0] == 0,
           "raid1 n=%d row %" PRIu64 ": pd %d qd %d data[0] %d",
           n, row, r.pd, r.qd, r.data[0]);
    return;
  }

  for (int i = 0; i < k; i++) {
    struct ref_place p = ref_chunk (g->level, g->layout, n,
                                    row * (uint64_t) k + (uint64_t) i);
    CHECK (r.data[i] == p.dd,
           "raid%d %s n=%d row %" PRIu64 ": data[%d] = %d, md says %d",
           g->level, name, n, row, i, r.data[i], p.dd);
    CHECK (r.role_data[p.dd] == i,
           "raid%d %s n=%d row %" PRIu64 ": role_data[%d] = %d, want %d",
           g->level, name, n, row, p.dd, r.role_data[p.dd], i);
    want_pd = p.pd;
    want_qd = p.qd;
  }
  CHECK (r.pd == want_pd && r.qd == want_qd,
         "raid%d %s n=%d row %" PRIu64 ": pd %d qd %d, md says %d %d",
         g->level, name, n, row, r.pd, r.qd, want_pd, want_qd);

  if (g->level == 6 && r.pd == want_pd && r.qd == want_qd) {
    int slot_of_role[RAID_MAX_MEMBERS];
    ref_slots (n, want_pd, want_qd, slot_of_role);
    for (int i = 0; i < k; i++)
      CHECK (r.slot[i] == slot_of_role[r.data[i]],
             "raid6 %s n=%d row %" PRIu64 ": slot[%d] = %d, md says %d",
             name, n, row, i, r.slot[i], slot_of_role[r.data[i]]);
  }
}

static const int all_layouts[] = {
  RAID_LAYOUT_LEFT_ASYMMETRIC, RAID_LAYOUT_RIGHT_ASYMMETRIC,
  RAID_LAYOUT_LEFT_SYMMETRIC, RAID_LAYOUT_RIGHT_SYMMETRIC,
  RAID_LAYOUT_PARITY_0, RAID_LAYOUT_PARITY_N,
  RAID_LAYOUT_LEFT_ASYMMETRIC_6, RAID_LAYOUT_RIGHT_ASYMMETRIC_6,
  RAID_LAYOUT_LEFT_SYMMETRIC_6, RAID_LAYOUT_RIGHT_SYMMETRIC_6,
  RAID_LAYOUT_PARITY_0_6, RAID_LAYOUT_NONE,
};
#define NR_LAYOUTS ((int) (sizeof all_layouts / sizeof all_layouts[0]))

static const int levels[] = { 0, 1, 4, 5, 6 };
static const int min_n[] = { 2, 2, 3, 2, 4 };

static void
test_against_reference (void)
{
  int combos = 0;

  for (int li = 0; li < 5; li++)
    for (int lo = 0; lo < NR_LAYOUTS; lo++) {
      int level = levels[li], layout = all_layouts[lo];
      if (!raid_layout_valid_for_level (level, layout))
        continue;
      for (int n = min_n[li]; n <= 16; n++) {
        struct raid_geom g;
        char err[128] = "";
        int rc = raid_geom_init (&g, level, layout, 65536, n, err, sizeof err);
        CHECK (rc == 0, "raid%d %s n=%d refused: %s",
               level, raid_layout_name (layout), n, err);
        if (rc != 0)
          continue;
        combos++;
        /* Periods are n or n-1: 4n rows cover at least four of them. */
        for (uint64_t row = 0; row < 4 * (uint64_t) n + 3; row++)
          compare_row (&g, row);
        for (uint64_t j = 0; j < 2 * (uint64_t) n; j++) {
          compare_row (&g, (UINT64_C(1) << 40) + j);
          /* The highest rows whose chunk numbers fit in 64 bits. */
          compare_row (&g, UINT64_MAX / (uint64_t) g.data_disks - 1 - j);
        }
      }
    }
  /* raid0 15 + raid1 15 + raid4 14 + raid5 6*15 + raid6 11*13 */
  CHECK (combos == 15 + 15 + 14 + 90 + 143, "combos tested %d", combos);
}

/* ---- hand-written md placements (anchor the reference) ---- */

struct known_row {
  int level, layout, n;
  uint64_t row;
  int pd, qd;
  int data[6];
  int slot[6];                  /* raid6 only */
};

#define LS RAID_LAYOUT_LEFT_SYMMETRIC
#define LA RAID_LAYOUT_LEFT_ASYMMETRIC
#define RS RAID_LAYOUT_RIGHT_SYMMETRIC
#define RA RAID_LAYOUT_RIGHT_ASYMMETRIC
#define P0 RAID_LAYOUT_PARITY_0
#define PN RAID_LAYOUT_PARITY_N

static const struct known_row known[] = {
  /* raid5 left-symmetric, 4 disks: parity walks down, data follows it. */
  { 5, LS, 4, 0, 3, -1, { 0, 1, 2 } },
  { 5, LS, 4, 1, 2, -1, { 3, 0, 1 } },
  { 5, LS, 4, 2, 1, -1, { 2, 3, 0 } },
  { 5, LS, 4, 3, 0, -1, { 1, 2, 3 } },
  { 5, LS, 4, 4, 3, -1, { 0, 1, 2 } },
  /* raid5 left-asymmetric, 4 disks: parity walks down, data ascending. */
  { 5, LA, 4, 0, 3, -1, { 0, 1, 2 } },
  { 5, LA, 4, 1, 2, -1, { 0, 1, 3 } },
  { 5, LA, 4, 2, 1, -1, { 0, 2, 3 } },
  { 5, LA, 4, 3, 0, -1, { 1, 2, 3 } },
  /* raid5 right-symmetric, 4 disks: parity walks up, data follows it. */
  { 5, RS, 4, 0, 0, -1, { 1, 2, 3 } },
  { 5, RS, 4, 1, 1, -1, { 2, 3, 0 } },
  { 5, RS, 4, 2, 2, -1, { 3, 0, 1 } },
  { 5, RS, 4, 3, 3, -1, { 0, 1, 2 } },
  /* raid5 right-asymmetric, 4 disks. */
  { 5, RA, 4, 0, 0, -1, { 1, 2, 3 } },
  { 5, RA, 4, 1, 1, -1, { 0, 2, 3 } },
  { 5, RA, 4, 5, 1, -1, { 0, 2, 3 } },
  /* raid5 parity-first / parity-last, raid4, raid5 on 2 disks, raid0. */
  { 5, P0, 4, 7, 0, -1, { 1, 2, 3 } },
  { 5, PN, 4, 7, 3, -1, { 0, 1, 2 } },
  { 4, PN, 4, 9, 3, -1, { 0, 1, 2 } },
  { 5, LS, 2, 0, 1, -1, { 0 } },
  { 5, LS, 2, 1, 0, -1, { 1 } },
  { 0, RAID_LAYOUT_NONE, 3, 11, -1, -1, { 0, 1, 2 } },
  /* raid6 left-symmetric, 5 disks: P down, Q after it, data after Q;
   * slots equal data indices. */
  { 6, LS, 5, 0, 4, 0, { 1, 2, 3 }, { 0, 1, 2 } },
  { 6, LS, 5, 1, 3, 4, { 0, 1, 2 }, { 0, 1, 2 } },
  { 6, LS, 5, 2, 2, 3, { 4, 0, 1 }, { 0, 1, 2 } },
  { 6, LS, 5, 3, 1, 2, { 3, 4, 0 }, { 0, 1, 2 } },
  { 6, LS, 5, 4, 0, 1, { 2, 3, 4 }, { 0, 1, 2 } },
  /* raid6 left-asymmetric, 5 disks: data ascending, the syndrome walk
   * starts after Q, so rows 2 and 3 have slots != data index. */
  { 6, LA, 5, 0, 4, 0, { 1, 2, 3 }, { 0, 1, 2 } },
  { 6, LA, 5, 1, 3, 4, { 0, 1, 2 }, { 0, 1, 2 } },
  { 6, LA, 5, 2, 2, 3, { 0, 1, 4 }, { 1, 2, 0 } },
  { 6, LA, 5, 3, 1, 2, { 0, 3, 4 }, { 2, 0, 1 } },
  { 6, LA, 5, 4, 0, 1, { 2, 3, 4 }, { 0, 1, 2 } },
  /* raid6 right-asymmetric, 5 disks. */
  { 6, RA, 5, 1, 1, 2, { 0, 3, 4 }, { 2, 0, 1 } },
  { 6, RA, 5, 4, 4, 0, { 1, 2, 3 }, { 0, 1, 2 } },
  /* raid6 parity-first / parity-last, 5 disks. */
  { 6, P0, 5, 3, 0, 1, { 2, 3, 4 }, { 0, 1, 2 } },
  { 6, PN, 5, 3, 3, 4, { 0, 1, 2 }, { 0, 1, 2 } },
  /* raid6 left-symmetric-6, 5 disks: raid5 left-symmetric on roles 0..3,
   * Q on role 4; the syndrome walk starts at role 0. */
  { 6, RAID_LAYOUT_LEFT_SYMMETRIC_6, 5, 0, 3, 4, { 0, 1, 2 }, { 0, 1, 2 } },
  { 6, RAID_LAYOUT_LEFT_SYMMETRIC_6, 5, 1, 2, 4, { 3, 0, 1 }, { 2, 0, 1 } },
  { 6, RAID_LAYOUT_LEFT_SYMMETRIC_6, 5, 2, 1, 4, { 2, 3, 0 }, { 1, 2, 0 } },
  { 6, RAID_LAYOUT_LEFT_SYMMETRIC_6, 5, 3, 0, 4, { 1, 2, 3 }, { 0, 1, 2 } },
  { 6, RAID_LAYOUT_LEFT_SYMMETRIC_6, 5, 4, 3, 4, { 0, 1, 2 }, { 0, 1, 2 } },
  /* raid6 right-asymmetric-6 and parity-first-6, 5 disks. */
  { 6, RAID_LAYOUT_RIGHT_ASYMMETRIC_6, 5, 1, 1, 4, { 0, 2, 3 }, { 0, 1, 2 } },
  { 6, RAID_LAYOUT_PARITY_0_6, 5, 2, 0, 4, { 1, 2, 3 }, { 0, 1, 2 } },
};

static void
test_known (void)
{
  for (size_t t = 0; t < sizeof known / sizeof known[0]; t++) {
    const struct known_row *kr = &known[t];
    struct raid_geom g;
    struct raid_row r;
    char err[128] = "";

    CHECK (raid_geom_init (&g, kr->level, kr->layout, 4096, kr->n,
                           err, sizeof err) == 0, "known[%zu]: %s", t, err);
    raid_geom_row (&g, kr->row, &r);
    CHECK (r.pd == kr->pd && r.qd == kr->qd,
           "known[%zu] raid%d %s n=%d row %" PRIu64 ": pd %d qd %d, want %d %d",
           t, kr->level, raid_layout_name (kr->layout), kr->n, kr->row,
           r.pd, r.qd, kr->pd, kr->qd);
    for (int i = 0; i < g.data_disks; i++) {
      struct ref_place p = ref_chunk (kr->level, kr->layout, kr->n,
                                      kr->row * (uint64_t) g.data_disks + i);
      CHECK (r.data[i] == kr->data[i],
             "known[%zu]: data[%d] = %d, want %d", t, i, r.data[i],
             kr->data[i]);
      /* The reference must agree with the hand table too. */
      CHECK (p.dd == kr->data[i] && p.pd == kr->pd && p.qd == kr->qd,
             "known[%zu]: reference gives dd %d pd %d qd %d", t,
             p.dd, p.pd, p.qd);
      if (kr->level == 6) {
        int slot_of_role[RAID_MAX_MEMBERS];
        ref_slots (kr->n, kr->pd, kr->qd, slot_of_role);
        CHECK (r.slot[i] == kr->slot[i],
               "known[%zu]: slot[%d] = %d, want %d", t, i, r.slot[i],
               kr->slot[i]);
        CHECK (slot_of_role[kr->data[i]] == kr->slot[i],
               "known[%zu]: reference slot of role %d = %d, want %d", t,
               kr->data[i], slot_of_role[kr->data[i]], kr->slot[i]);
      }
    }
  }
}

/* raid1: one data index on role 0, the rest mirrors, no parity. */
static void
test_raid1 (void)
{
  struct raid_geom g;
  struct raid_row r;
  char err[128];

  CHECK (raid_geom_init (&g, 1, RAID_LAYOUT_NONE, 65536, 3, err, sizeof err) == 0,
         "raid1: %s", err);
  CHECK (g.data_disks == 1 && g.parity_disks == 2 && g.stripe_width == 65536,
         "raid1 derived: data %d parity %d width %" PRIu64,
         g.data_disks, g.parity_disks, g.stripe_width);
  raid_geom_row (&g, 12345, &r);
  CHECK (r.pd == -1 && r.qd == -1 && r.data[0] == 0 && r.role_data[0] == 0 &&
         r.role_data[1] == -1 && r.role_data[2] == -1,
         "raid1 row: pd %d qd %d data[0] %d role_data %d %d %d", r.pd, r.qd,
         r.data[0], r.role_data[0], r.role_data[1], r.role_data[2]);
}

/* ---- raid_geom_init ---- */

static void
expect_refused (int level, int layout, uint32_t chunk, int n,
                const char *want_substr, int line)
{
  struct raid_geom g;
  char err[128] = "";
  int rc = raid_geom_init (&g, level, layout, chunk, n, err, sizeof err);

  checks++;
  if (rc != -1 || strstr (err, want_substr) == NULL) {
    failures++;
    fprintf (stderr, "%s:%d: FAIL: raid%d layout %d chunk %" PRIu32
             " n=%d: rc %d, message \"%s\", want -1 and \"%s\"\n",
             __FILE__, line, level, layout, chunk, n, rc, err, want_substr);
  }
  /* A NULL error buffer must be accepted too. */
  CHECK (raid_geom_init (&g, level, layout, chunk, n, NULL, 0) == -1,
         "refusal with NULL err buffer");
}

#define REFUSED(level, layout, chunk, n, substr) \
  expect_refused (level, layout, chunk, n, substr, __LINE__)

static void
test_init (void)
{
  struct raid_geom g;
  char err[128];

  /* Too few members for each level, and the minimum accepted. */
  REFUSED (0, RAID_LAYOUT_NONE, 65536, 1, "raid0 needs at least 2 members");
  REFUSED (1, RAID_LAYOUT_NONE, 65536, 1, "raid1 needs at least 2 members");
  REFUSED (4, PN, 65536, 2, "raid4 needs at least 3 members");
  REFUSED (5, LS, 65536, 1, "raid5 needs at least 2 members");
  REFUSED (6, LS, 65536, 3, "raid6 needs at least 4 members");
  REFUSED (6, LS, 65536, 0, "raid6 needs at least 4 members");
  REFUSED (6, LS, 65536, -1, "raid6 needs at least 4 members");
  REFUSED (5, LS, 65536, RAID_MAX_MEMBERS + 1, "at most 32");
  for (int li = 0; li < 5; li++) {
    int level = levels[li];
    CHECK (raid_geom_init (&g, level, raid_layout_default (level), 65536,
                           min_n[li], err, sizeof err) == 0,
           "raid%d with %d members: %s", level, min_n[li], err);
    CHECK (raid_geom_init (&g, level, raid_layout_default (level), 65536,
                           RAID_MAX_MEMBERS, err, sizeof err) == 0,
           "raid%d with %d members: %s", level, RAID_MAX_MEMBERS, err);
  }

  /* Chunk sizes. */
  REFUSED (5, LS, 0, 4, "chunk 0 is not a power of two");
  REFUSED (5, LS, 3000, 4, "chunk 3000 is not a power of two");
  REFUSED (5, LS, 2048, 4, "chunk 2048 is smaller than the minimum 4K");
  REFUSED (5, LS, 128u << 20, 4, "chunk 134217728 is larger than the maximum 64M");
  REFUSED (1, RAID_LAYOUT_NONE, 3000, 2, "chunk 3000");
  REFUSED (6, LS, UINT32_MAX, 5, "not a power of two");
  CHECK (raid_geom_init (&g, 5, LS, RAID_CHUNK_MIN, 4, err, sizeof err) == 0,
         "chunk 4K: %s", err);
  CHECK (raid_geom_init (&g, 5, LS, RAID_CHUNK_MAX, 4, err, sizeof err) == 0,
         "chunk 64M: %s", err);

  /* Layouts that do not exist for the level, and bad levels. */
  REFUSED (5, RAID_LAYOUT_LEFT_SYMMETRIC_6, 65536, 4,
           "layout left-symmetric-6 does not exist for raid5");
  REFUSED (4, LS, 65536, 4, "layout left-symmetric does not exist for raid4");
  REFUSED (4, P0, 65536, 4, "layout parity-first does not exist for raid4");
  REFUSED (0, LS, 65536, 4, "layout left-symmetric does not exist for raid0");
  REFUSED (1, PN, 65536, 2, "layout parity-last does not exist for raid1");
  REFUSED (5, RAID_LAYOUT_NONE, 65536, 4, "layout none does not exist for raid5");
  REFUSED (6, RAID_LAYOUT_NONE, 65536, 5, "layout none does not exist for raid6");
  REFUSED (6, 8, 65536, 5, "layout 8 is unknown");      /* DDF */
  REFUSED (6, 9, 65536, 5, "layout 9 is unknown");
  REFUSED (6, 10, 65536, 5, "layout 10 is unknown");
  REFUSED (6, -1, 65536, 5, "layout -1 is unknown");
  REFUSED (3, LS, 65536, 4, "raid level 3 is not supported");
  REFUSED (10, RAID_LAYOUT_NONE, 65536, 4, "raid level 10 is not supported");
  REFUSED (-1, RAID_LAYOUT_NONE, 65536, 4, "raid level -1 is not supported");

  /* Derived fields. */
  CHECK (raid_geom_init (&g, 6, RAID_LAYOUT_RIGHT_SYMMETRIC_6, 16384, 7,
                         err, sizeof err) == 0, "raid6 7: %s", err);
  CHECK (g.level == 6 && g.layout == RAID_LAYOUT_RIGHT_SYMMETRIC_6 &&
         g.chunk == 16384 && g.raid_disks == 7 && g.data_disks == 5 &&
         g.parity_disks == 2 && g.stripe_width == 5 * 16384,
         "raid6 derived: data %d parity %d width %" PRIu64,
         g.data_disks, g.parity_disks, g.stripe_width);
  CHECK (raid_geom_init (&g, 0, RAID_LAYOUT_NONE, 4096, 3, err, sizeof err) == 0 &&
         g.data_disks == 3 && g.parity_disks == 0 && g.stripe_width == 12288,
         "raid0 derived: data %d parity %d width %" PRIu64,
         g.data_disks, g.parity_disks, g.stripe_width);
  CHECK (raid_geom_init (&g, 4, PN, 65536, 5, err, sizeof err) == 0 &&
         g.data_disks == 4 && g.parity_disks == 1 && g.stripe_width == 262144,
         "raid4 derived: data %d parity %d width %" PRIu64,
         g.data_disks, g.parity_disks, g.stripe_width);
  CHECK (raid_geom_init (&g, 5, LS, RAID_CHUNK_MAX, 32, err, sizeof err) == 0 &&
         g.data_disks == 31 && g.stripe_width == UINT64_C(31) * (64 << 20),
         "raid5 32 x 64M: width %" PRIu64, g.stripe_width);
  for (int li = 0; li < 5; li++)
    for (int n = min_n[li]; n <= RAID_MAX_MEMBERS; n++) {
      raid_geom_init (&g, levels[li], raid_layout_default (levels[li]),
                      8192, n, err, sizeof err);
      CHECK (g.parity_disks == parity_count (levels[li], n) &&
             g.data_disks == n - g.parity_disks,
             "raid%d n=%d: data %d parity %d", levels[li], n,
             g.data_disks, g.parity_disks);
    }
}

/* ---- layout names ---- */

static void
test_names (void)
{
  static const struct { int layout; const char *name; } names[] = {
    { 0, "left-asymmetric" }, { 1, "right-asymmetric" },
    { 2, "left-symmetric" }, { 3, "right-symmetric" },
    { 4, "parity-first" }, { 5, "parity-last" },
    { 16, "left-asymmetric-6" }, { 17, "right-asymmetric-6" },
    { 18, "left-symmetric-6" }, { 19, "right-symmetric-6" },
    { 20, "parity-first-6" }, { 255, "none" },
  };
  /* valid[level index][layout index], levels 0 1 4 5 6 */
  static const bool valid[5][12] = {
    { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 },
    { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 },
    { 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0 },
    { 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0 },
    { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0 },
  };

  for (int i = 0; i < 12; i++) {
    const char *s = raid_layout_name (names[i].layout);
    CHECK (s != NULL && strcmp (s, names[i].name) == 0,
           "name of %d: %s, want %s", names[i].layout, s ? s : "(null)",
           names[i].name);
    CHECK (raid_layout_parse (names[i].name) == names[i].layout,
           "parse %s: %d", names[i].name, raid_layout_parse (names[i].name));
    for (int li = 0; li < 5; li++)
      CHECK (raid_layout_valid_for_level (levels[li], names[i].layout) ==
             valid[li][i], "valid_for_level (%d, %s)", levels[li],
             names[i].name);
  }
  for (int l = -2; l < 300; l++) {
    bool known_layout = (l >= 0 && l <= 5) || (l >= 16 && l <= 20) || l == 255;
    CHECK ((raid_layout_name (l) != NULL) == known_layout,
           "name of layout %d: %s", l,
           raid_layout_name (l) ? raid_layout_name (l) : "(null)");
    CHECK (known_layout || (!raid_layout_valid_for_level (5, l) &&
                            !raid_layout_valid_for_level (6, l)),
           "layout %d valid", l);
  }
  CHECK (raid_layout_parse ("left_symmetric") == -1, "parse left_symmetric");
  CHECK (raid_layout_parse ("Left-Symmetric") == -1, "parse Left-Symmetric");
  CHECK (raid_layout_parse ("") == -1, "parse empty");
  CHECK (raid_layout_parse ("ddf-zero-restart") == -1, "parse ddf");
  CHECK (raid_layout_parse (NULL) == -1, "parse NULL");
  CHECK (!raid_layout_valid_for_level (3, RAID_LAYOUT_LEFT_SYMMETRIC) &&
         !raid_layout_valid_for_level (10, RAID_LAYOUT_NONE),
         "valid_for_level of levels 3/10");

  CHECK (raid_layout_default (5) == RAID_LAYOUT_LEFT_SYMMETRIC &&
         raid_layout_default (6) == RAID_LAYOUT_LEFT_SYMMETRIC &&
         raid_layout_default (4) == RAID_LAYOUT_PARITY_N &&
         raid_layout_default (0) == RAID_LAYOUT_NONE &&
         raid_layout_default (1) == RAID_LAYOUT_NONE,
         "defaults: %d %d %d %d %d", raid_layout_default (5),
         raid_layout_default (6), raid_layout_default (4),
         raid_layout_default (0), raid_layout_default (1));
}

/* ---- raid_geom_locate ---- */

static void
test_locate (void)
{
  static const struct {
    int level, layout, n;
    uint32_t chunk;
    uint64_t off;
    uint64_t row;
    int dindex;
    uint32_t in_chunk;
    int role;                   /* role of the data block in that row */
  } t[] = {
    { 5, LS, 4, 65536, 0, 0, 0, 0, 0 },
    { 5, LS, 4, 65536, 65535, 0, 0, 65535, 0 },
    { 5, LS, 4, 65536, 65536, 0, 1, 0, 1 },
    { 5, LS, 4, 65536, 3 * 65536 + 5, 1, 0, 5, 3 },
    { 5, LS, 4, 65536, 4 * 65536 + 100, 1, 1, 100, 0 },
    { 5, LS, 4, 65536, 11 * 65536 + 1, 3, 2, 1, 3 },
    { 6, LA, 5, 4096, 7 * 4096 + 9, 2, 1, 9, 1 },
    { 6, LA, 5, 4096, 8 * 4096, 2, 2, 0, 4 },
    /* 2^40 + 12345, 4K chunks, 3 data disks: chunk 2^28 + 3, row
     * 89478486 (= 1 mod 5: P on 3, Q on 4, data on 0 1 2). */
    { 6, LS, 5, 4096, (UINT64_C(1) << 40) + 12345, 89478486, 1, 57, 1 },
    { 0, RAID_LAYOUT_NONE, 3, 16384, 5 * 16384 + 7, 1, 2, 7, 2 },
    { 4, PN, 3, 8192, 3 * 8192 - 1, 1, 0, 8191, 0 },
  };

  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    struct raid_geom g;
    struct raid_row r;
    char err[128];
    uint64_t row;
    int di;
    uint32_t ic;

    CHECK (raid_geom_init (&g, t[i].level, t[i].layout, t[i].chunk, t[i].n,
                           err, sizeof err) == 0, "locate[%zu]: %s", i, err);
    raid_geom_locate (&g, t[i].off, &row, &di, &ic);
    CHECK (row == t[i].row && di == t[i].dindex && ic == t[i].in_chunk,
           "locate[%zu] off %" PRIu64 ": row %" PRIu64 " index %d in %" PRIu32
           ", want %" PRIu64 " %d %" PRIu32, i, t[i].off, row, di, ic,
           t[i].row, t[i].dindex, t[i].in_chunk);
    raid_geom_row (&g, row, &r);
    CHECK (r.data[di] == t[i].role, "locate[%zu]: role %d, want %d",
           i, r.data[di], t[i].role);
  }
}

int
main (void)
{
  test_known ();
  test_raid1 ();
  test_against_reference ();
  test_init ();
  test_names ();
  test_locate ();

  if (failures) {
    fprintf (stderr, "test-geometry: %d of %d checks failed\n",
             failures, checks);
    return 1;
  }
  printf ("test-geometry: %d checks passed\n", checks);
  return 0;
}
