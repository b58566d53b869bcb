/* nbdkit-raid: durable region maps (theory in regmap.h). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "array-int.h"
#include "regmap.h"
#include "util.h"

#define PAGE 4096u

enum { R_CLEAN = 0, R_SETTING = 1, R_SET = 2 };

struct regmap {
  pthread_mutex_t lock;                   /* guards bits and state */
  pthread_cond_t changed;                 /* a page write finished */
  pthread_mutex_t io_lock;                /* serializes page writes */
  uint64_t rpr, nregions, off;
  uint8_t *bits;                          /* the image page writes write */
  uint8_t *state;                         /* R_* per region */
  uint8_t *written;                       /* the image the last page writes
                                             left on written_to (io_lock) */
  struct member *written_to[SB_MAX_MEMBERS]; /* the members that took them */
  int nwritten_to;
};

uint64_t
regmap_bytes (uint64_t rows, uint64_t rpr)
{
  return raid_round_up (((rows + rpr - 1) / rpr + 7) / 8, PAGE);
}

struct regmap *
regmap_new (uint64_t rows, uint64_t rpr, uint64_t off)
{
  struct regmap *m = calloc (1, sizeof *m);

  if (!m)
    return NULL;
  m->rpr = rpr;
  m->nregions = (rows + rpr - 1) / rpr;
  m->off = off;
  m->bits = raid_alloc_aligned (regmap_bytes (rows, rpr));
  m->state = calloc (m->nregions ? m->nregions : 1, 1);
  m->written = calloc (regmap_bytes (rows, rpr), 1);
  if (!m->bits || !m->state || !m->written) {
    free (m->bits);
    free (m->state);
    free (m->written);
    free (m);
    return NULL;
  }
  memset (m->bits, 0, regmap_bytes (rows, rpr));
  pthread_mutex_init (&m->lock, NULL);
  pthread_mutex_init (&m->io_lock, NULL);
  pthread_cond_init (&m->changed, NULL);
  return m;
}

void
regmap_free (struct regmap *m)
{
  if (!m)
    return;
  pthread_mutex_destroy (&m->lock);
  pthread_mutex_destroy (&m->io_lock);
  pthread_cond_destroy (&m->changed);
  free (m->bits);
  free (m->state);
  free (m->written);
  free (m);
}

/* Bytes of the map's image (bits, written, a member's copy). */
static uint64_t
image_bytes (const struct regmap *m)
{
  return raid_round_up ((m->nregions + 7) / 8, PAGE);
}

uint64_t
regmap_rows_per_region (const struct regmap *m)
{
  return m->rpr;
}

uint64_t
regmap_nregions (const struct regmap *m)
{
  return m->nregions;
}

static void
set_bit (struct regmap *m, uint64_t r, int state)
{
  m->state[r] = state;
  m->bits[r / 8] |= 1u << (r % 8);
}

/* Whether regions [r0, r1) are set in m->written and every member in use
 * took the writes that left it (io_lock held). */
static bool
written_covers (struct raid_array *a, const struct regmap *m, uint64_t r0,
                uint64_t r1)
{
  bool all = true;

  for (uint64_t r = r0; r < r1; r++)
    if (!(m->written[r / 8] & (1u << (r % 8))))
      return false;
  pthread_mutex_lock (&a->state_lock);
  for (int t = 0; t < (int) a->sb.nmembers && all; t++)
    if (state_member_in_use (a, t)) {
      bool took = false;
      for (int i = 0; i < m->nwritten_to && !took; i++)
        took = m->written_to[i] == a->mem[t].m;
      all = took;
    }
  pthread_mutex_unlock (&a->state_lock);
  return all;
}

/* After a page write of [p0, p1) to the n members of mios (io_lock held):
 * `written` keeps only pages that one set of members took. */
static void
written_note (struct regmap *m, const struct mio *mios, size_t n, uint64_t p0,
              const uint8_t *snap, uint64_t len, int err)
{
  bool same = (int) n == m->nwritten_to;

  for (size_t i = 0; i < n && same; i++)
    same = m->written_to[i] == mios[i].m;
  if (!same) {                            /* other members: start afresh */
    memset (m->written, 0, image_bytes (m));
    for (size_t i = 0; i < n; i++)
      m->written_to[i] = mios[i].m;
    m->nwritten_to = (int) n;
  }
  if (err)                                /* nobody relies on these pages */
    memset (m->written + p0 * PAGE, 0, len);
  else
    memcpy (m->written + p0 * PAGE, snap, len);
}

/* Write pages [p0, p1) of the in-memory image to every member in use,
 * unless regions [r0, r1) (none when r0 == r1) are set in the image a
 * page write already left there (SHARED in regmap.h). */
static int
write_pages (struct raid_array *a, struct regmap *m, uint64_t p0, uint64_t p1,
             uint64_t r0, uint64_t r1)
{
  struct mio mios[SB_MAX_MEMBERS];
  struct iovec iov[SB_MAX_MEMBERS];
  uint64_t len = (p1 - p0) * PAGE;
  uint8_t *snap;
  size_t n = 0;
  int err = 0;

  if (!(snap = raid_alloc_aligned (len)))
    return ENOMEM;
  pthread_mutex_lock (&m->io_lock);
  if (r0 < r1 && written_covers (a, m, r0, r1)) {
    pthread_mutex_unlock (&m->io_lock);
    free (snap);
    return 0;
  }
  pthread_mutex_lock (&m->lock);
  memcpy (snap, m->bits + p0 * PAGE, len);
  pthread_mutex_unlock (&m->lock);
  pthread_mutex_lock (&a->state_lock);
  for (int t = 0; t < (int) a->sb.nmembers; t++)
    if (state_member_in_use (a, t)) {
      iov[n] = (struct iovec) { snap, len };
      mios[n] = (struct mio) { .m = a->mem[t].m, .op = MIO_WRITE, .flags = MIO_FUA,
                               .off = m->off + p0 * PAGE, .len = len,
                               .iov = &iov[n], .iovcnt = 1 };
      n++;
    }
  pthread_mutex_unlock (&a->state_lock);
  if (mio_run (mios, n) != 0)
    for (size_t i = 0; i < n; i++)
      if (mios[i].err) {
        state_member_error (a, mios[i].m, mios[i].err, true, mios[i].off);
        err = EAGAIN;
      }
  written_note (m, mios, n, p0, snap, len, err);
  pthread_mutex_unlock (&m->io_lock);
  free (snap);
  return err;
}

int
regmap_mark (struct raid_array *a, struct regmap *m, uint64_t row, uint64_t n)
{
  uint64_t r0 = row / m->rpr, r1;
  bool mine = false, wait;
  int err = 0;

  if (n == 0 || r0 >= m->nregions)
    return 0;
  r1 = raid_min_u64 ((row + n - 1) / m->rpr + 1, m->nregions);
  pthread_mutex_lock (&m->lock);
  for (uint64_t r = r0; r < r1; r++)
    if (m->state[r] == R_CLEAN) {
      set_bit (m, r, R_SETTING);
      mine = true;
    }
  pthread_mutex_unlock (&m->lock);

  if (mine)
    err = write_pages (a, m, r0 / 8 / PAGE, (r1 - 1) / 8 / PAGE + 1, r0, r1);

  pthread_mutex_lock (&m->lock);
  if (mine) {
    for (uint64_t r = r0; r < r1; r++)
      if (m->state[r] == R_SETTING)
        m->state[r] = R_SET;
    pthread_cond_broadcast (&m->changed);
  }
  do {                                    /* bits another thread is writing */
    wait = false;
    for (uint64_t r = r0; r < r1; r++)
      wait |= m->state[r] == R_SETTING;
    if (wait)
      pthread_cond_wait (&m->changed, &m->lock);   /* woken by its page write */
  } while (wait);
  pthread_mutex_unlock (&m->lock);
  return err;
}

void
regmap_set (struct regmap *m, uint64_t r)
{
  pthread_mutex_lock (&m->lock);
  if (r < m->nregions && m->state[r] == R_CLEAN)
    set_bit (m, r, R_SET);
  pthread_mutex_unlock (&m->lock);
}

void
regmap_zero (struct regmap *m)
{
  pthread_mutex_lock (&m->lock);
  memset (m->bits, 0, image_bytes (m));
  memset (m->state, R_CLEAN, m->nregions);
  pthread_cond_broadcast (&m->changed);
  pthread_mutex_unlock (&m->lock);
}

bool
regmap_region_marked (struct regmap *m, uint64_t r)
{
  bool marked;

  pthread_mutex_lock (&m->lock);
  marked = r < m->nregions && m->state[r] != R_CLEAN;
  pthread_mutex_unlock (&m->lock);
  return marked;
}

uint64_t
regmap_count_marked (struct regmap *m, uint64_t r0, uint64_t r1)
{
  uint64_t n = 0;

  pthread_mutex_lock (&m->lock);
  for (uint64_t r = r0; r < raid_min_u64 (r1, m->nregions); r++)
    n += m->state[r] != R_CLEAN;
  pthread_mutex_unlock (&m->lock);
  return n;
}

bool
regmap_row_marked (struct regmap *m, uint64_t row)
{
  return regmap_region_marked (m, row / m->rpr);
}

uint64_t
regmap_count (struct regmap *m)
{
  uint64_t n = 0;

  pthread_mutex_lock (&m->lock);
  for (uint64_t r = 0; r < m->nregions; r++)
    n += m->state[r] != R_CLEAN;
  pthread_mutex_unlock (&m->lock);
  return n;
}

bool
regmap_clear (struct regmap *m, uint64_t r)
{
  bool cleared;

  pthread_mutex_lock (&m->lock);
  cleared = r < m->nregions && m->state[r] == R_SET;
  if (cleared) {
    m->state[r] = R_CLEAN;
    m->bits[r / 8] &= ~(1u << (r % 8));
  }
  pthread_mutex_unlock (&m->lock);
  return cleared;
}

int
regmap_sync (struct raid_array *a, struct regmap *m, uint64_t r0, uint64_t r1)
{
  r1 = raid_min_u64 (r1, m->nregions);
  if (m->nregions == 0 || r0 >= r1)
    return 0;
  return write_pages (a, m, r0 / 8 / PAGE, (r1 - 1) / 8 / PAGE + 1, 0, 0);
}

int
regmap_load (struct raid_array *a, struct regmap *m, int t)
{
  uint64_t len = image_bytes (m);
  uint8_t *buf = raid_alloc_aligned (len ? len : PAGE);
  int err;

  if (!buf)
    return ENOMEM;
  if ((err = member_pread (a->mem[t].m, buf, len, m->off)) == 0) {
    pthread_mutex_lock (&m->lock);
    for (uint64_t r = 0; r < m->nregions; r++)
      if ((buf[r / 8] & (1u << (r % 8))) && m->state[r] == R_CLEAN)
        set_bit (m, r, R_SET);
    pthread_mutex_unlock (&m->lock);
  }
  free (buf);
  return err;
}
