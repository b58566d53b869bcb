/* nbdkit-raid: the write-intent bitmap (consistency policy "bitmap").
 *
 * THEORY.  One bit per region of consecutive stripe rows.  Invariant: a row
 * can be inconsistent (parity not matching data) only while its region's bit
 * is set on disk.  So after an unclean stop only regions whose bit is set
 * need a resync — that is the whole point of the bitmap, and it is cheaper
 * than the journal because a bit is written once per region, not once per
 * write.  It does not close the write hole: a member lost before the resync
 * finishes can rebuild wrong data in those regions.
 *
 * Keeping the invariant:
 *   - before the first member write to a region, its bit is set in memory and
 *     the bitmap page holding it is written with FUA to every member in use;
 *     only then do the writes start (bitmap_start_write returns).  Writers
 *     that find the bit being written wait on `changed`, woken by the page
 *     writer (bounded: one page write);
 *   - a bit is cleared only by the cleaner, for a region with no write in
 *     flight and none since the cleaner's previous pass, after a flush of
 *     every member made those writes durable, and only while every role's
 *     member is in sync (a dirty start while degraded needs every bit).
 * What an absent member missed is not this map's business: missed.h.
 * The durable setting of bits is the region map's (regmap.h); this file
 * decides when a bit may be cleared.
 *
 * On disk: each member holds the whole bitmap at the start of its
 * consistency area; region size derives from the geometry (at least 2 MiB
 * of each member, more when the area would otherwise be too small).  There
 * is no header: the bits' meaning comes from the superblock record, and any
 * pattern of bits is valid (a set bit costs a resync of its region, bits
 * past the last region are ignored).  What must be validated is the shape
 * (bitmap_check, the one place): at least one region, and every page the
 * bitmap reads or writes inside the consistency area — whatever cons_size
 * and the geometry of a crafted record say (no division by zero, no
 * product that wraps, no page write beyond the area).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array-int.h"
#include "bitmap.h"
#include "regmap.h"
#include "util.h"

#define BM_MIN_REGION (2u << 20)
#define BM_PAGE 4096u                     /* regmap's page: the least area */

struct bitmap {
  struct regmap *map;                     /* the bits, durable on members */
  pthread_mutex_t lock;                   /* guards the counters below */
  uint32_t *inflight;                     /* writes in flight per region */
  uint8_t *touched;                       /* written since the last clean pass */
};

bool
bitmap_enabled (const struct raid_array *a)
{
  return a->bm != NULL;
}

/* The bitmap's shape for layout L of record sb: its regions must number at
 * least one and their bits fit the consistency area, whatever the record
 * says (its fields are attacker-controlled; sb.c bounds cons_size, this is
 * the bitmap's own rule).  0, or -1 with the reason. */
static int
shape (const struct raid_sb *sb, const struct layout *L, uint64_t *rpr,
       uint64_t *nregions, char *err, size_t errlen)
{
  uint64_t rows = L->rows, maxbits;

  if (sb->cons_size < BM_PAGE || sb->cons_size > UINT64_MAX / 8 || rows == 0 ||
      L->g.chunk == 0) {
    snprintf (err, errlen, "write-intent bitmap: no room (consistency area of %"
              PRIu64 " bytes, %" PRIu64 " rows)", sb->cons_size, rows);
    return -1;
  }
  maxbits = sb->cons_size * 8;
  *rpr = raid_max_u64 (raid_max_u64 (1, BM_MIN_REGION / L->g.chunk),
                       rows / maxbits + (rows % maxbits != 0));
  *nregions = rows / *rpr + (rows % *rpr != 0);
  if (regmap_bytes (rows, *rpr) > sb->cons_size) {
    snprintf (err, errlen, "write-intent bitmap of %" PRIu64 " regions does not fit "
              "the consistency area (%" PRIu64 " bytes)", *nregions, sb->cons_size);
    return -1;
  }
  return 0;
}

int
bitmap_check (const struct raid_sb *sb, const struct layout *L, char *err, size_t errlen)
{
  uint64_t rpr, nregions;

  if (sb->consistency != SB_CONS_BITMAP || L->g.level < 4)
    return 0;
  return shape (sb, L, &rpr, &nregions, err, errlen);
}

int
bitmap_init (struct raid_array *a)
{
  struct bitmap *b;
  const struct layout *L = router_layout (&a->router, LAYOUT_CUR);
  uint64_t rpr, n;

  if (a->sb.consistency != SB_CONS_BITMAP || L->g.level < 4)
    return 0;
  if (shape (&a->sb, L, &rpr, &n, NULL, 0) < 0)
    return EINVAL;
  if (!(b = calloc (1, sizeof *b)))
    return ENOMEM;
  b->map = regmap_new (L->rows, rpr, a->sb.cons_offset);
  b->touched = calloc (n, 1);
  b->inflight = calloc (n, sizeof *b->inflight);
  if (!b->map || !b->touched || !b->inflight) {
    regmap_free (b->map); free (b->touched); free (b->inflight); free (b);
    return ENOMEM;
  }
  pthread_mutex_init (&b->lock, NULL);
  a->bm = b;
  return 0;
}

void
bitmap_fini (struct raid_array *a)
{
  struct bitmap *b = a->bm;

  if (!b)
    return;
  pthread_mutex_destroy (&b->lock);
  regmap_free (b->map);
  free (b->touched); free (b->inflight);
  free (b);
  a->bm = NULL;
}

/* Load the union of the bits of every member in use that can be read
 * (regmap.h: a bit is set on the members in use when it was set; one that
 * came into use since, a spare added, lacks it, and may be the first in
 * the table).  A member whose map is stale sets too many bits: a resync
 * of more regions, never of fewer.  Returns the number of set regions, or
 * -1 when no member could be read. */
int64_t
bitmap_load (struct raid_array *a)
{
  bool any = false;

  for (int t = 0; t < (int) a->sb.nmembers; t++)
    if (state_member_in_use (a, t) && regmap_load (a, a->bm->map, t) == 0)
      any = true;
  return any ? (int64_t) regmap_count (a->bm->map) : -1;
}

static void
region_range (const struct bitmap *b, uint64_t row, uint64_t nrows,
              uint64_t *r0, uint64_t *r1)
{
  uint64_t rpr = regmap_rows_per_region (b->map);

  *r0 = row / rpr;
  *r1 = raid_min_u64 ((row + nrows - 1) / rpr + 1, regmap_nregions (b->map));
}

int
bitmap_start_write (struct raid_array *a, uint64_t row, uint64_t nrows)
{
  struct bitmap *b = a->bm;
  uint64_t r0, r1;
  int err;

  region_range (b, row, nrows, &r0, &r1);
  pthread_mutex_lock (&b->lock);         /* the cleaner skips these now */
  for (uint64_t r = r0; r < r1; r++) {
    b->inflight[r]++;
    b->touched[r] = 1;
  }
  pthread_mutex_unlock (&b->lock);
  if ((err = regmap_mark (a, b->map, row, nrows)) != 0)
    bitmap_end_write (a, row, nrows);
  return err;
}

void
bitmap_end_write (struct raid_array *a, uint64_t row, uint64_t nrows)
{
  struct bitmap *b = a->bm;
  uint64_t r0, r1;

  region_range (b, row, nrows, &r0, &r1);
  pthread_mutex_lock (&b->lock);
  for (uint64_t r = r0; r < r1; r++)
    b->inflight[r]--;
  pthread_mutex_unlock (&b->lock);
}

bool
bitmap_row_dirty (struct raid_array *a, uint64_t row)
{
  return regmap_row_marked (a->bm->map, row);
}

uint64_t
bitmap_rows_per_region (const struct raid_array *a)
{
  return regmap_rows_per_region (a->bm->map);
}

int
bitmap_clean (struct raid_array *a, bool all)
{
  struct bitmap *b = a->bm;
  struct mio mios[SB_MAX_MEMBERS];
  uint64_t lo = UINT64_MAX, hi = 0, n = regmap_nregions (b->map);
  size_t k = 0;
  bool skip;

  /* Never while a resync is owed: the set bits are what it must visit; and
   * never while a role's member is not in sync (conservative: a dirty start
   * while degraded needs the bits). */
  pthread_mutex_lock (&a->state_lock);
  skip = a->sb.resync_offset != UINT64_MAX ||
    raid_array_health (a) != RAID_HEALTH_OPTIMAL;
  pthread_mutex_unlock (&a->state_lock);
  if (skip)
    return 0;

  /* Candidates: idle regions not written since the previous pass (or every
   * idle region when closing). */
  pthread_mutex_lock (&b->lock);
  for (uint64_t r = 0; r < n; r++) {
    if (regmap_region_marked (b->map, r) && b->inflight[r] == 0 && (all || !b->touched[r]))
      lo = raid_min_u64 (lo, r), hi = r + 1;
    b->touched[r] = 0;
  }
  pthread_mutex_unlock (&b->lock);
  if (lo == UINT64_MAX)
    return 0;

  for (int t = 0; t < (int) a->sb.nmembers; t++)
    if (state_member_in_use (a, t))
      mios[k++] = (struct mio) { .m = a->mem[t].m, .op = MIO_FLUSH };
  if (mio_run (mios, k) != 0)
    return EIO;                           /* keep the bits: nothing is durable */

  /* Clear under the lock that orders against bitmap_start_write: a region
   * a writer entered since is in flight or touched, and keeps its bit. */
  pthread_mutex_lock (&b->lock);
  for (uint64_t r = lo; r < hi; r++)
    if (b->inflight[r] == 0 && !b->touched[r])
      regmap_clear (b->map, r);
  pthread_mutex_unlock (&b->lock);
  return regmap_sync (a, b->map, lo, hi);
}
