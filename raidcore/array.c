/* nbdkit-raid: the array's I/O entry points, block status and status.
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
#include "reshape.h"
#include "stripe.h"
#include "util.h"

const char *
raid_health_name (enum raid_health h)
{
  switch (h) {
  case RAID_HEALTH_OPTIMAL: return "optimal";
  case RAID_HEALTH_DEGRADED: return "degraded";
  case RAID_HEALTH_FAILED: return "failed";
  }
  return "unknown";
}

const char *
raid_member_state_name (enum raid_member_state s)
{
  switch (s) {
  case RAID_MEMBER_IN_SYNC: return "in_sync";
  case RAID_MEMBER_FAULTY: return "faulty";
  case RAID_MEMBER_MISSING: return "missing";
  case RAID_MEMBER_SPARE: return "spare";
  case RAID_MEMBER_REBUILDING: return "rebuilding";
  case RAID_MEMBER_STALE: return "stale";
  }
  return "unknown";
}

uint64_t raid_array_size (const struct raid_array *a) { return atomic_load (&a->size); }
bool raid_array_can_fua (const struct raid_array *a) { return a->can_fua; }

uint64_t
raid_array_stripe_width (const struct raid_array *a)
{
  return router_layout (&a->router, LAYOUT_CUR)->g.stripe_width;
}

enum raid_health
raid_array_health (struct raid_array *a)
{
  return atomic_load (&a->health);
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
  if (atomic_load (&a->health) == RAID_HEALTH_FAILED)
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
  int err = check_range (a, count, off);
  atomic_store_explicit (&a->fg_ns, raid_now_mono_ns (), memory_order_relaxed);
  return err ? err : array_io (a, OP_READ, buf, count, off, 0);
}

int
raid_array_pwrite (struct raid_array *a, const void *buf, uint64_t count,
                   uint64_t off, unsigned flags)
{
  int err = check_range (a, count, off);
  atomic_store_explicit (&a->fg_ns, raid_now_mono_ns (), memory_order_relaxed);
  if (!err && count)
    err = state_mark_dirty (a);
  return err ? err : array_io (a, OP_WRITE, (void *) buf, count, off, flags);
}

int
raid_array_zero (struct raid_array *a, uint64_t count, uint64_t off,
                 unsigned flags, bool fast)
{
  uint64_t W = raid_array_stripe_width (a);
  int err = check_range (a, count, off);

  if (err)
    return err;
  if (fast && (off % W || (off + count) % W))
    return ENOTSUP;
  if (count && (err = state_mark_dirty (a)) != 0)
    return err;
  return array_io (a, OP_ZERO, NULL, count, off, flags);
}

int
raid_array_flush (struct raid_array *a)
{
  return cons_flush_all (a);
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
  router_enter (&a->router, off, count, &t);
  for (int i = 0; i < t.n && !err; i++)
    err = piece_extents (a, &t.p[i], cb, opaque);
  router_leave (&a->router, &t);
  return err;
}

/* ---------------------------------------------------------------------
 * Status: one snapshot under the state lock, so every field agrees with
 * every other (the job, the reshape record, the members, health).
 */

static void
members_status (struct raid_array *a, struct raid_status *st)
{
  const struct layout *L = router_layout (&a->router, LAYOUT_CUR);
  int order[SB_MAX_MEMBERS], n = 0;

  /* By role, spares last; a replace target shows the role it takes. */
  for (int pass = 0; pass < 2; pass++)
    for (int t = 0; t < (int) a->sb.nmembers; t++) {
      int st_t = atomic_load (&a->mem[t].state);
      bool spare = a->sb.members[t].role < 0 && !(t == L->mirror_slot);
      if (st_t != STATE_EMPTY && spare == (pass == 1))
        order[n++] = t;
    }
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n; j++) {
      int ri = a->sb.members[order[i]].role, rj = a->sb.members[order[j]].role;
      ri = order[i] == L->mirror_slot ? L->mirror_role : ri;
      rj = order[j] == L->mirror_slot ? L->mirror_role : rj;
      if (ri >= 0 && rj >= 0 && rj < ri) {
        int x = order[i]; order[i] = order[j]; order[j] = x;
      }
    }
  for (int i = 0; i < n; i++) {
    int t = order[i];
    struct raid_member_status *ms = &st->members[st->nmembers++];
    ms->role = t == L->mirror_slot ? L->mirror_role : a->sb.members[t].role;
    ms->state = atomic_load (&a->mem[t].state);
    ms->errors = atomic_load (&a->mem[t].errors);
    ms->data_offset = a->sb.members[t].data_offset;
    snprintf (ms->spec, sizeof ms->spec, "%s", a->mem[t].m ? member_spec (a->mem[t].m) : "");
  }
}

static void
job_status (struct raid_array *a, struct raid_status *st)
{
  struct sync_ctl *s = &a->sync;

  st->sync_action = sync_status_action (a);
  st->mismatch_count = s->state != SYNC_IDLE ? s->job.mismatch : a->sb.mismatch_count;
  st->speed_min = s->speed_min;
  st->speed_max = s->speed_max;
  if (s->state == SYNC_IDLE)
    return;
  st->has_progress = true;
  st->progress.action = s->job.ops->action;
  st->progress.done = s->job.pos;
  st->progress.total = s->job.total;
  st->progress.rate = s->state == SYNC_FROZEN ? 0 : s->rate;
  st->progress.eta_seconds = st->progress.rate
    ? (int64_t) ((s->job.total - s->job.pos) / st->progress.rate) : -1;
  snprintf (st->progress.error, sizeof st->progress.error, "%s", s->error);
}

void
raid_array_status (struct raid_array *a, struct raid_status *st)
{
  const struct layout *L;

  memset (st, 0, sizeof *st);
  pthread_mutex_lock (&a->state_lock);
  L = router_layout (&a->router, LAYOUT_CUR);
  memcpy (st->uuid, a->sb.array_uuid, RAID_UUID_LEN);
  st->geom = (struct raid_geom_status) { L->g.level, L->g.layout, L->g.chunk,
                                         L->g.raid_disks };
  st->data_disks = L->g.data_disks;
  st->size = atomic_load (&a->size);
  st->health = raid_array_health (a);
  st->events = a->sb.events;
  st->consistency = a->sb.consistency;
  members_status (a, st);
  job_status (a, st);
  reshape_status (a, st);
  pthread_mutex_unlock (&a->state_lock);
}
