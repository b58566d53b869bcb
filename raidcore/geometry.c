/* nbdkit-raid: RAID geometry (contract: geometry.h).
 *
 * Theory
 * ------
 * Every md placement handled here (raid_disks n, data_disks k) is described
 * per row by three numbers:
 *
 *   pd     the role of P (-1 for raid0/raid1),
 *   qd     the role of Q (-1 unless raid6),
 *   start  the role where data index 0 sits,
 *
 * and one rule: data indices 0..k-1 occupy the roles met walking upwards
 * from `start`, wrapping from n-1 to 0, skipping pd and qd.  md's formulas in
 * raid5_compute_sector all reduce to this:
 *
 *   - "asymmetric", parity-first, parity-last, raid4, raid0: data fills the
 *     non-parity roles in ascending order, so start = 0 (md's "dd_idx++" or
 *     "dd_idx += 2" past the parity roles is exactly the skip);
 *   - "symmetric": data starts just after the parity block and wraps, so
 *     start = pd + 1 (for raid6 that role is Q, which the walk skips, giving
 *     md's pd + 2);
 *   - the raid6 "-6" variants are the raid5 layout on the first n-1 roles
 *     with Q pinned to role n-1; the raid5 formula's "mod (n-1)" wrap is the
 *     same as a "mod n" wrap that skips role n-1.
 *
 * P rotates with period m, where m = n for raid5 and the raid6 rotating
 * layouts and m = n-1 for the "-6" variants: "left" layouts put P at
 * m-1 - row%m (descending), "right" layouts at row%m (ascending).  Rotating
 * raid6 layouts put Q right after P: qd = (pd+1) % n.
 *
 * Q syndrome order (raid6 only): md walks the roles from
 * d0 = (qd == n-1 ? 0 : qd+1) = (qd+1) % n, wrapping, skipping P and Q, and
 * the j-th data role met gets slot j.  That is the same cyclic walk as the
 * data-index walk, only starting at d0 instead of `start`; so the slot of a
 * data index is the data index rotated by the index of the first data role
 * at or after d0.  For the symmetric layouts d0 == start and slot == index;
 * for the others (e.g. left-asymmetric, D D P Q D) they differ.
 *
 * Cost: raid_geom_row does one 64-bit modulo and two O(n) loops without
 * division; it allocates nothing and keeps no state, so it is safe to call
 * from any thread on the I/O path.
 *
 * DDF layouts (md 8, 9, 10) are not supported and are refused by
 * raid_geom_init.
 */

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "geometry.h"

static const struct {
  int layout;
  const char *name;
} layout_names[] = {
  { RAID_LAYOUT_LEFT_ASYMMETRIC, "left-asymmetric" },
  { RAID_LAYOUT_RIGHT_ASYMMETRIC, "right-asymmetric" },
  { RAID_LAYOUT_LEFT_SYMMETRIC, "left-symmetric" },
  { RAID_LAYOUT_RIGHT_SYMMETRIC, "right-symmetric" },
  { RAID_LAYOUT_PARITY_0, "parity-first" },
  { RAID_LAYOUT_PARITY_N, "parity-last" },
  { RAID_LAYOUT_LEFT_ASYMMETRIC_6, "left-asymmetric-6" },
  { RAID_LAYOUT_RIGHT_ASYMMETRIC_6, "right-asymmetric-6" },
  { RAID_LAYOUT_LEFT_SYMMETRIC_6, "left-symmetric-6" },
  { RAID_LAYOUT_RIGHT_SYMMETRIC_6, "right-symmetric-6" },
  { RAID_LAYOUT_PARITY_0_6, "parity-first-6" },
  { RAID_LAYOUT_NONE, "none" },
};

#define NR_LAYOUT_NAMES (sizeof layout_names / sizeof layout_names[0])

const char *
raid_layout_name (int layout)
{
  for (size_t i = 0; i < NR_LAYOUT_NAMES; i++)
    if (layout_names[i].layout == layout)
      return layout_names[i].name;
  return NULL;
}

int
raid_layout_parse (const char *name)
{
  if (name == NULL)
    return -1;
  for (size_t i = 0; i < NR_LAYOUT_NAMES; i++)
    if (strcmp (layout_names[i].name, name) == 0)
      return layout_names[i].layout;
  return -1;
}

/* The raid5 layouts; raid6 accepts these and their "-6" variants. */
static bool
is_raid5_layout (int layout)
{
  return layout >= RAID_LAYOUT_LEFT_ASYMMETRIC &&
         layout <= RAID_LAYOUT_PARITY_N;
}

static bool
is_6_variant (int layout)
{
  return layout >= RAID_LAYOUT_LEFT_ASYMMETRIC_6 &&
         layout <= RAID_LAYOUT_PARITY_0_6;
}

bool
raid_layout_valid_for_level (int level, int layout)
{
  switch (level) {
  case 0: case 1: return layout == RAID_LAYOUT_NONE;
  case 4: return layout == RAID_LAYOUT_PARITY_N;
  case 5: return is_raid5_layout (layout);
  case 6: return is_raid5_layout (layout) || is_6_variant (layout);
  default: return false;
  }
}

int
raid_layout_default (int level)
{
  switch (level) {
  case 0: case 1: return RAID_LAYOUT_NONE;
  case 4: return RAID_LAYOUT_PARITY_N;
  case 5: case 6: return RAID_LAYOUT_LEFT_SYMMETRIC;
  default: return -1;
  }
}

static int
min_members (int level)
{
  switch (level) {
  case 4: return 3;
  case 6: return 4;
  default: return 2;                 /* 0, 1, 5 */
  }
}

static int __attribute__ ((format (printf, 3, 4)))
geom_error (char *err, size_t errlen, const char *fmt, ...)
{
  va_list ap;

  if (err != NULL && errlen > 0) {
    va_start (ap, fmt);
    vsnprintf (err, errlen, fmt, ap);
    va_end (ap);
  }
  return -1;
}

static int
check_chunk (uint32_t chunk, char *err, size_t errlen)
{
  if (chunk == 0 || (chunk & (chunk - 1)) != 0)
    return geom_error (err, errlen, "chunk %" PRIu32 " is not a power of two",
                       chunk);
  if (chunk < RAID_CHUNK_MIN)
    return geom_error (err, errlen,
                       "chunk %" PRIu32 " is smaller than the minimum 4K",
                       chunk);
  if (chunk > RAID_CHUNK_MAX)
    return geom_error (err, errlen,
                       "chunk %" PRIu32 " is larger than the maximum 64M",
                       chunk);
  return 0;
}

static int
check_layout (int level, int layout, char *err, size_t errlen)
{
  const char *name = raid_layout_name (layout);

  if (raid_layout_valid_for_level (level, layout))
    return 0;
  if (name == NULL)
    return geom_error (err, errlen, "layout %d is unknown (DDF layouts are "
                       "not supported)", layout);
  return geom_error (err, errlen, "layout %s does not exist for raid%d",
                     name, level);
}

int
raid_geom_init (struct raid_geom *g, int level, int layout,
                uint32_t chunk, int raid_disks, char *err, size_t errlen)
{
  if (level != 0 && level != 1 && level != 4 && level != 5 && level != 6)
    return geom_error (err, errlen,
                       "raid level %d is not supported (0, 1, 4, 5 or 6)",
                       level);
  if (raid_disks < min_members (level))
    return geom_error (err, errlen, "raid%d needs at least %d members, not %d",
                       level, min_members (level), raid_disks);
  if (raid_disks > RAID_MAX_MEMBERS)
    return geom_error (err, errlen, "raid%d: %d members, at most %d supported",
                       level, raid_disks, RAID_MAX_MEMBERS);
  if (check_layout (level, layout, err, errlen) == -1 ||
      check_chunk (chunk, err, errlen) == -1)
    return -1;

  g->level = level;
  g->layout = layout;
  g->chunk = chunk;
  g->raid_disks = raid_disks;
  switch (level) {
  case 0: g->parity_disks = 0; break;
  case 1: g->parity_disks = raid_disks - 1; break;
  case 6: g->parity_disks = 2; break;
  default: g->parity_disks = 1; break;
  }
  g->data_disks = raid_disks - g->parity_disks;
  g->stripe_width = (uint64_t) chunk * g->data_disks;
  return 0;
}

/* P and Q roles of a row and the role of data index 0 (see Theory). */
static void
row_parity (const struct raid_geom *g, uint64_t row,
            int *pd, int *qd, int *start)
{
  const int n = g->raid_disks;
  const int k = g->data_disks;
  const bool six = is_6_variant (g->layout);
  const int m = six ? n - 1 : n;   /* P rotation period */
  const int base = six ? g->layout - RAID_LAYOUT_LEFT_ASYMMETRIC_6 : g->layout;

  *pd = *qd = -1;
  *start = 0;
  if (g->level == 0 || g->level == 1)
    return;
  if (g->level == 4) {
    *pd = k;
    return;
  }

  switch (base) {
  case RAID_LAYOUT_LEFT_ASYMMETRIC:
  case RAID_LAYOUT_LEFT_SYMMETRIC:
    *pd = m - 1 - (int) (row % (unsigned) m);
    break;
  case RAID_LAYOUT_RIGHT_ASYMMETRIC:
  case RAID_LAYOUT_RIGHT_SYMMETRIC:
    *pd = (int) (row % (unsigned) m);
    break;
  case RAID_LAYOUT_PARITY_0:
    *pd = 0;
    break;
  case RAID_LAYOUT_PARITY_N:
    *pd = k;
    break;
  default:
    assert (!"layout not validated by raid_geom_init");
  }

  if (g->level == 6) {
    if (six)
      *qd = n - 1;
    else
      *qd = *pd + 1 == n ? 0 : *pd + 1;
  }

  if (base == RAID_LAYOUT_LEFT_SYMMETRIC || base == RAID_LAYOUT_RIGHT_SYMMETRIC)
    *start = *pd + 1 == n ? 0 : *pd + 1;
}

void
raid_geom_row (const struct raid_geom *g, uint64_t row, struct raid_row *r)
{
  const int n = g->raid_disks;
  const int k = g->data_disks;
  int start, role, i, first;

  row_parity (g, row, &r->pd, &r->qd, &start);

  /* Data indices along the cyclic walk from `start`, skipping P and Q.  On
   * raid1 this gives data[0] = role 0; the other roles are mirrors. */
  for (role = 0; role < n; role++)
    r->role_data[role] = -1;
  role = start;
  for (i = 0; i < k; role = role + 1 == n ? 0 : role + 1) {
    if (role == r->pd || role == r->qd)
      continue;
    r->data[i] = role;
    r->role_data[role] = i;
    i++;
  }

  if (g->level != 6) {
    for (i = 0; i < k; i++)
      r->slot[i] = i;
    return;
  }

  /* md's syndrome walk starts at d0 = (qd+1) % n; the first data role met
   * from there gets slot 0 and the rest follow the same cycle. */
  role = r->qd + 1 == n ? 0 : r->qd + 1;
  while (r->role_data[role] < 0)
    role = role + 1 == n ? 0 : role + 1;
  first = r->role_data[role];
  for (i = 0; i < k; i++)
    r->slot[i] = i >= first ? i - first : i - first + k;
}
