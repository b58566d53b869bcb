/* nbdkit-raid: the array's I/O entry points and block status.
 *
 * Every client request is one ticket of the router (router.h): it enters
 * with its byte range, runs the stripe engine on each piece of the answer
 * (one layout, or two split at a reshape's boundary), and leaves.  Nothing
 * here decides where a byte lives.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array-int.h"
#include "consistency.h"
#include "stripe.h"
#include "util.h"

uint64_t raid_array_size (const struct raid_array *a) { return atomic_load (&a->size); }
bool raid_array_can_fua (const struct raid_array *a) { return a->can_fua; }

uint64_t
raid_array_stripe_width (const struct raid_array *a)
{
  return router_layout (&a->router, LAYOUT_CUR)->g.stripe_width;
}

void
raid_array_get_sb (struct raid_array *a, struct raid_sb *out)
{
  pthread_mutex_lock (&a->state_lock);
  *out = a->sb;
  pthread_mutex_unlock (&a->state_lock);
}

void
raid_array_set_test_hooks (struct raid_array *a, const struct raid_test_hooks *h)
{
  a->test = *h;
}

/* ---------------------------------------------------------------------
 * I/O.
 */

enum array_op { OP_READ, OP_WRITE, OP_ZERO };

static int
check_range (struct raid_array *a, uint64_t count, uint64_t off)
{
  uint64_t size = atomic_load (&a->size);

  if (off > size || count > size - off)
    return EINVAL;
  if (state_failed (a))
    return EIO;
  return 0;
}

static int
piece_io (struct raid_array *a, const struct route_piece *p, enum array_op op,
          uint8_t *buf, unsigned flags)
{
  switch (op) {
  case OP_READ: return stripe_read (a, p->L, buf, p->len, p->off);
  case OP_WRITE: return stripe_write (a, p->L, buf, p->len, p->off, flags);
  case OP_ZERO: break;
  }
  return stripe_zero (a, p->L, p->len, p->off, flags);
}

/* A request on the whole array: one ticket, each piece on its layout. */
static int
array_io (struct raid_array *a, enum array_op op, void *buf, uint64_t count,
          uint64_t off, unsigned flags)
{
  struct ticket t;
  int err = 0;

  if (count == 0)
    return 0;
  router_enter (&a->router, off, count, &t);
  for (int i = 0; i < t.n && !err; i++)
    err = piece_io (a, &t.p[i], op, buf ? (uint8_t *) buf + (t.p[i].off - off) : NULL,
                    flags);
  router_leave (&a->router, &t);
  return err;
}

int
raid_array_pread (struct raid_array *a, void *buf, uint64_t count, uint64_t off)
{
  struct gather_snap snap;
  int err = check_range (a, count, off);

  identity_note_read (&a->probe, off, count);   /* is this read our own? */
  atomic_store_explicit (&a->fg_ns, raid_now_mono_ns (), memory_order_relaxed);
  if (err || (err = gather_snap_take (&a->gather, off, off + count, &snap)) != 0)
    return err;
  err = array_io (a, OP_READ, buf, count, off, 0);  /* G1: after the snapshot */
  if (!err)
    gather_snap_apply (&snap, buf, off, count);
  gather_snap_free (&snap);
  return err;
}

int
array_gathered_write (void *opaque, const uint8_t *buf, uint64_t len,
                      uint64_t off, unsigned flags)
{
  struct raid_array *a = opaque;
  uint64_t size = atomic_load (&a->size);
  int err;

  if (off >= size)
    return 0;
  len = raid_min_u64 (len, size - off);
  if (state_failed (a))
    return EIO;
  if ((err = state_mark_dirty (a)) != 0)
    return err;
  return array_io (a, OP_WRITE, (void *) buf, len, off, flags);
}

/* The unit the gather joins writes into: a row of the current layout, when
 * a partial row costs a read-modify-write (levels with parity). */
static uint64_t
gather_unit (struct raid_array *a)
{
  const struct layout *L = router_layout (&a->router, LAYOUT_CUR);
  return L->g.level >= 4 ? L->g.stripe_width : 0;
}

/* Through the gather (gather.h): held, or written now. */
int
raid_array_pwrite (struct raid_array *a, const void *buf, uint64_t count,
                   uint64_t off, unsigned flags)
{
  int err = check_range (a, count, off);
  atomic_store_explicit (&a->fg_ns, raid_now_mono_ns (), memory_order_relaxed);
  if (err || count == 0)
    return err;
  return gather_write (&a->gather, buf, count, off, gather_unit (a), flags);
}

int
raid_array_zero (struct raid_array *a, uint64_t count, uint64_t off,
                 unsigned flags, bool fast)
{
  uint64_t W = raid_array_stripe_width (a);
  struct gather_hold held;
  int err = check_range (a, count, off);

  if (err)
    return err;
  if (fast && (off % W || (off + count) % W ||
               (router_layout (&a->router, LAYOUT_CUR)->g.level >= 4 &&
                raid_array_health (a) != RAID_HEALTH_OPTIMAL)))
    return ENOTSUP;                        /* partial rows, and degraded rows
                                              (stripe.c, zero_rows), are
                                              written with zeroes */
  if (count == 0)
    return 0;
  if ((err = gather_settle (&a->gather, off, off + count, &held)) == 0 &&
      (err = state_mark_dirty (a)) == 0)
    err = array_io (a, OP_ZERO, NULL, count, off, flags);
  gather_release (&a->gather, &held, err);   /* G2: replaced once zeroed */
  return err;
}

int
raid_array_flush (struct raid_array *a)
{
  int held, err;

  if (a->readonly)
    return 0;                              /* nothing was written */
  held = gather_drain_all (&a->gather);    /* G3 */
  err = cons_client_flush (a);
  return held ? held : err;
}

/* Block status of one piece of an answer, in row runs of its layout. */
static int
piece_extents (struct raid_array *a, const struct route_piece *p,
               raid_extent_fn cb, void *opaque)
{
  const struct layout *L = p->L;
  uint64_t W = L->g.stripe_width, off = p->off, end = p->off + p->len;
  int err;

  while (off < end) {
    uint64_t row = off / W, rows_left = (end - 1) / W - row + 1;
    bool zero;
    uint64_t n = stripe_extent_rows (a, L, row, raid_min_u64 (rows_left, L->rows - row),
                                     &zero);
    uint64_t next = raid_min_u64 (end, (row + n) * W);
    if ((err = cb (opaque, off, next - off, zero)) != 0)
      return err;
    off = next;
  }
  return 0;
}

int
raid_array_extents (struct raid_array *a, uint64_t count, uint64_t off,
                    raid_extent_fn cb, void *opaque)
{
  struct ticket t;
  int err = check_range (a, count, off);

  if (err)
    return err == EIO ? cb (opaque, off, count, false) : err;
  if (count == 0)
    return 0;
  if ((err = gather_settle (&a->gather, off, off + count, NULL)) != 0)
    return err;                            /* G4: held bytes are data */
  router_enter (&a->router, off, count, &t);
  for (int i = 0; i < t.n && !err; i++)
    err = piece_extents (a, &t.p[i], cb, opaque);
  router_leave (&a->router, &t);
  return err;
}
