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
 *     every member made those writes durable.
 * Page writes are serialized by io_lock and always write the current
 * in-memory page, so a later write never carries older bits.
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
#include "util.h"

#define BM_PAGE 4096u
#define BM_MIN_REGION (2u << 20)

enum { R_CLEAN = 0, R_SETTING = 1, R_SET = 2 };

struct bitmap {
  pthread_mutex_t lock;                   /* guards everything below */
  pthread_cond_t changed;                 /* a page write finished */
  pthread_mutex_t io_lock;                /* serializes page writes */
  uint64_t rows_per_region, nregions;
  uint8_t *bits;                          /* on-disk image, nregions bits */
  uint8_t *state;                         /* R_* per region */
  uint32_t *inflight;                     /* writes in flight per region */
  uint8_t *touched;                       /* written since the last clean pass */
};

bool
bitmap_enabled (const struct raid_array *a)
{
  return a->bm != NULL;
}

static uint64_t
bytes_of (uint64_t nregions)
{
  return raid_round_up ((nregions + 7) / 8, BM_PAGE);
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
  if (bytes_of (*nregions) > sb->cons_size) {
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
  uint64_t rpr, nregions;

  if (a->sb.consistency != SB_CONS_BITMAP || L->g.level < 4)
    return 0;
  if (shape (&a->sb, L, &rpr, &nregions, NULL, 0) < 0)
    return EINVAL;
  if (!(b = calloc (1, sizeof *b)))
    return ENOMEM;
  b->rows_per_region = rpr;
  b->nregions = nregions;
  b->bits = raid_alloc_aligned (bytes_of (b->nregions));
  b->state = calloc (b->nregions, 1);
  b->touched = calloc (b->nregions, 1);
  b->inflight = calloc (b->nregions, sizeof *b->inflight);
  if (!b->bits || !b->state || !b->touched || !b->inflight) {
    free (b->bits); free (b->state); free (b->touched); free (b->inflight); free (b);
    return ENOMEM;
  }
  memset (b->bits, 0, bytes_of (b->nregions));
  pthread_mutex_init (&b->lock, NULL);
  pthread_mutex_init (&b->io_lock, NULL);
  pthread_cond_init (&b->changed, NULL);
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
  pthread_mutex_destroy (&b->io_lock);
  pthread_cond_destroy (&b->changed);
  free (b->bits); free (b->state); free (b->touched); free (b->inflight);
  free (b);
  a->bm = NULL;
}

/* Load the bits from the first member in use that can be read; mark the
 * set ones R_SET.  Returns the number of set regions, or -1. */
int64_t
bitmap_load (struct raid_array *a)
{
  struct bitmap *b = a->bm;
  int64_t n = 0;

  for (int t = 0; t < (int) a->sb.nmembers; t++) {
    if (!state_member_in_use (a, t) ||
        member_pread (a->mem[t].m, b->bits, bytes_of (b->nregions), a->sb.cons_offset) != 0)
      continue;
    for (uint64_t r = 0; r < b->nregions; r++)
      if (b->bits[r / 8] & (1u << (r % 8))) {
        b->state[r] = R_SET;
        n++;
      }
    return n;
  }
  return -1;
}

/* Write the pages [p0, p1) of the in-memory bitmap to every member in use. */
static int
write_pages (struct raid_array *a, uint64_t p0, uint64_t p1)
{
  struct bitmap *b = a->bm;
  struct mio mios[SB_MAX_MEMBERS];
  struct iovec iov[SB_MAX_MEMBERS];
  uint8_t *snap;
  size_t n = 0;
  int err = 0;

  if (!(snap = raid_alloc_aligned ((p1 - p0) * BM_PAGE)))
    return ENOMEM;
  pthread_mutex_lock (&b->io_lock);
  pthread_mutex_lock (&b->lock);
  memcpy (snap, b->bits + p0 * BM_PAGE, (p1 - p0) * BM_PAGE);
  pthread_mutex_unlock (&b->lock);
  for (int t = 0; t < (int) a->sb.nmembers; t++)
    if (state_member_in_use (a, t)) {
      iov[n] = (struct iovec) { snap, (p1 - p0) * BM_PAGE };
      mios[n] = (struct mio) { .m = a->mem[t].m, .op = MIO_WRITE, .flags = MIO_FUA,
                               .off = a->sb.cons_offset + p0 * BM_PAGE,
                               .len = (p1 - p0) * BM_PAGE, .iov = &iov[n], .iovcnt = 1 };
      n++;
    }
  if (mio_run (mios, n) != 0)
    for (size_t i = 0; i < n; i++)
      if (mios[i].err) {
        state_member_error (a, mios[i].m, mios[i].err, true, mios[i].off);
        err = EAGAIN;
      }
  pthread_mutex_unlock (&b->io_lock);
  free (snap);
  return err;
}

int
bitmap_start_write (struct raid_array *a, uint64_t row, uint64_t nrows)
{
  struct bitmap *b = a->bm;
  uint64_t r0 = row / b->rows_per_region;
  uint64_t r1 = (row + nrows - 1) / b->rows_per_region + 1;
  bool mine = false, wait;
  int err = 0;

  pthread_mutex_lock (&b->lock);
  for (uint64_t r = r0; r < r1; r++) {
    b->inflight[r]++;
    b->touched[r] = 1;
    if (b->state[r] == R_CLEAN) {
      b->state[r] = R_SETTING;
      b->bits[r / 8] |= 1u << (r % 8);
      mine = true;
    }
  }
  pthread_mutex_unlock (&b->lock);

  if (mine)
    err = write_pages (a, r0 / 8 / BM_PAGE, (r1 - 1) / 8 / BM_PAGE + 1);

  pthread_mutex_lock (&b->lock);
  if (mine) {
    for (uint64_t r = r0; r < r1; r++)
      if (b->state[r] == R_SETTING)
        b->state[r] = R_SET;
    pthread_cond_broadcast (&b->changed);
  }
  do {                                    /* bits another writer is writing */
    wait = false;
    for (uint64_t r = r0; r < r1; r++)
      wait |= b->state[r] == R_SETTING;
    if (wait)
      pthread_cond_wait (&b->changed, &b->lock);   /* woken by its page write */
  } while (wait);
  if (err)
    for (uint64_t r = r0; r < r1; r++)
      b->inflight[r]--;
  pthread_mutex_unlock (&b->lock);
  return err;
}

void
bitmap_end_write (struct raid_array *a, uint64_t row, uint64_t nrows)
{
  struct bitmap *b = a->bm;
  uint64_t r0 = row / b->rows_per_region;
  uint64_t r1 = (row + nrows - 1) / b->rows_per_region + 1;

  pthread_mutex_lock (&b->lock);
  for (uint64_t r = r0; r < r1; r++)
    b->inflight[r]--;
  pthread_mutex_unlock (&b->lock);
}

bool
bitmap_row_dirty (struct raid_array *a, uint64_t row)
{
  struct bitmap *b = a->bm;
  bool dirty;

  pthread_mutex_lock (&b->lock);
  dirty = b->state[row / b->rows_per_region] != R_CLEAN;
  pthread_mutex_unlock (&b->lock);
  return dirty;
}

uint64_t
bitmap_rows_per_region (const struct raid_array *a)
{
  return a->bm->rows_per_region;
}

int
bitmap_clean (struct raid_array *a, bool all)
{
  struct bitmap *b = a->bm;
  struct mio mios[SB_MAX_MEMBERS];
  uint64_t lo = UINT64_MAX, hi = 0;
  size_t n = 0;

  /* Never while a resync is owed: the set bits are what it must visit. */
  pthread_mutex_lock (&a->state_lock);
  n = a->sb.resync_offset != UINT64_MAX;
  pthread_mutex_unlock (&a->state_lock);
  if (n)
    return 0;

  /* Candidates: idle regions not written since the previous pass (or every
   * idle region when closing). */
  pthread_mutex_lock (&b->lock);
  for (uint64_t r = 0; r < b->nregions; r++) {
    if (b->state[r] != R_SET)
      continue;
    if (b->inflight[r] == 0 && (all || !b->touched[r]))
      lo = raid_min_u64 (lo, r), hi = r + 1;
    b->touched[r] = 0;
  }
  pthread_mutex_unlock (&b->lock);
  if (lo == UINT64_MAX)
    return 0;

  for (int t = 0; t < (int) a->sb.nmembers; t++)
    if (state_member_in_use (a, t))
      mios[n++] = (struct mio) { .m = a->mem[t].m, .op = MIO_FLUSH };
  if (mio_run (mios, n) != 0)
    return EIO;                           /* keep the bits: nothing is durable */

  pthread_mutex_lock (&b->lock);
  for (uint64_t r = lo; r < hi; r++)
    if (b->state[r] == R_SET && b->inflight[r] == 0 && !b->touched[r]) {
      b->state[r] = R_CLEAN;
      b->bits[r / 8] &= ~(1u << (r % 8));
    }
  pthread_mutex_unlock (&b->lock);
  return write_pages (a, lo / 8 / BM_PAGE, (hi - 1) / 8 / BM_PAGE + 1);
}
