/* nbdkit-raid: live reshape — another member count, chunk, layout or level
 * while clients keep reading and writing.
 *
 * THEORY
 *
 * Two layouts.  While a reshape record exists the router (router.h) holds
 * the current layout and the target, each with its own data offset per
 * member, and routes every array byte to one of them: moving forward,
 * [0, boundary) is in the target and the rest in the current layout; moving
 * backward, [boundary, size) is in the target.  The position (bytes moved)
 * is durable in every member's superblock, and the boundary follows it.
 *
 * Explicit sequencing.  `reshape` (prepare, reshape_prepare) validates
 * everything, then — holding a router claim over the whole array and the
 * state lock, so that status and every request see all of it or none —
 * writes the complete record (old and new geometry, new data offsets, new
 * members with their roles, state frozen, position 0) to every member,
 * routes to both layouts (the boundary at the start: no byte's answer
 * changes) and begins the reshape job frozen.  Nothing moves.  `start`
 * records the state running (after checking that every member the target
 * needs is usable) and unfreezes the job; `freeze` stops it after the
 * current window, durably.  The worker therefore never sees a half-
 * configured array: everything it uses was durable before `start` could be
 * accepted.
 *
 * Out of place, no backup file.  The new data offset is lower than the old
 * one (forward) or higher (backward) by `gap` bytes of head or tail room.
 * Invariant: old-layout data is never overwritten before a durable
 * checkpoint covers its new copy.  A step (reshape_step) copies one window
 * of array bytes [lo, hi): forward, lo is the durable position, and the
 * window is cut so that the new layout's member bytes for [0, hi) end at or
 * below where the old layout's not-yet-copied data (array offsets >= lo)
 * starts on every member; backward, symmetrically from the top.  The step:
 *   1. router_claim(window): requests on the window wait, and every request
 *      in flight on it — including one that entered before the reshape was
 *      prepared — completes first;
 *   2. copy: read the window from the current layout, write it to the
 *      target (raw: a crash redoes the window); in parts, each part's
 *      write overlapping the next part's read (copy_window);
 *   3. checkpoint: flush every member and commit the new position, in one
 *      record that also empties the write-hole journal (a logged write of
 *      the window must never be replayed into the old layout afterwards);
 *   4. move the boundary to the window's far end; release the claim.
 *
 * Finish (reshape_finish, once every byte moved).  First the target is
 * zeroed past the exported size: its grown capacity, and always the rest of
 * the row holding the last exported byte, whose other columns the copy did
 * not write and whose parity must match them all the same (check covers
 * that row whole).  No client can address these bytes, so no claim of
 * client bytes is needed: a claim beyond the exported size keeps tickets
 * out of them.  Then, holding a claim over everything (every request
 * drains; requests that arrive wait and are routed afresh afterwards):
 * checkpoint with the new geometry in the same record,
 * make the target the current layout, recreate the bitmap for it, release.
 * The claim is held for one flush and one commit, never for data movement.
 *
 * Crash anywhere.  The record and position on disk describe a state in
 * which all old data at or beyond the position is intact (nothing above the
 * durable position was overwritten) and all data below it is durable in
 * the target (flushed before the position was committed).  Restarting
 * recopies the interrupted window from the old layout — idempotent.
 * Client writes below the boundary go to the target through the ordinary
 * write path, under the target's write-hole policy (consistency.h);
 * above it, to the current layout under its own.
 *
 * Failures.  A member lost within redundancy: the reshape continues
 * degraded.  A step that fails (beyond redundancy, a member that cannot be
 * written) freezes the job with the error in status; the record says
 * frozen; nothing spins.
 *
 * Clients never wait on progress.  A request touching the window being
 * copied waits for that window only (bounded by one window's I/O and one
 * checkpoint); a frozen reshape has no window, so no request ever waits on
 * it.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array-int.h"
#include "missed.h"
#include "bitmap.h"
#include "consistency.h"
#include "create.h"
#include "reshape.h"
#include "job.h"
#include "signature.h"
#include "stripe.h"
#include "util.h"

#define WIN_MAX (16u << 20)                /* array bytes per step */
#define GAP_PREFERRED (4u << 20)           /* room a reshape takes when it can */
#define META_END RAID_META_END

/* ---------------------------------------------------------------------
 * Geometry arithmetic (no I/O).
 */
struct plan {
  struct raid_geom g0, g1;
  int dir;                                 /* enum sb_direction */
  uint64_t gap;                            /* |new_off - old_off| */
  uint64_t total;                          /* bytes to move */
  uint64_t comp1, cap1;                    /* new component size / capacity */
  uint64_t win;                            /* array bytes per step wanted (0:
                                              WIN_MAX); at least one new row */
};

static uint64_t
width (const struct raid_geom *g)
{
  return g->stripe_width;
}

/* Largest hi (forward) for durable position lo; 0 when none fits. */
static uint64_t
fwd_max_hi (const struct plan *p, uint64_t lo)
{
  uint64_t room = p->gap + lo / width (&p->g0) * p->g0.chunk;
  return room / p->g1.chunk * width (&p->g1);
}

/* Smallest lo (backward) for durable position hi. */
static uint64_t
bwd_min_lo (const struct plan *p, uint64_t hi)
{
  uint64_t need = raid_round_up (hi, width (&p->g0)) / width (&p->g0) * p->g0.chunk;
  if (need <= p->gap)
    return 0;
  return raid_round_up (need - p->gap, p->g1.chunk) / p->g1.chunk * width (&p->g1);
}

/* The next window from durable position (bytes moved) `done`. */
static bool
next_window (const struct plan *p, uint64_t done, uint64_t *lo, uint64_t *hi)
{
  uint64_t W1 = width (&p->g1);
  uint64_t win = raid_max_u64 (W1, p->win ? raid_min_u64 (p->win, WIN_MAX) : WIN_MAX);

  if (p->dir == SB_DIR_FORWARD) {
    *lo = done;
    *hi = raid_min_u64 (raid_min_u64 (p->total, raid_round_down (*lo + win, W1)),
                        fwd_max_hi (p, *lo));
    if (*hi <= *lo && *lo + W1 >= p->total && fwd_max_hi (p, *lo) >= *lo + W1)
      *hi = p->total;                      /* the last, partial row */
  }
  else {
    uint64_t top = p->total - done;
    uint64_t want = top > win ? raid_round_up (top - win, W1) : 0;
    *hi = top;
    *lo = raid_max_u64 (want, bwd_min_lo (p, top));
    if (*lo >= *hi && top <= W1 && bwd_min_lo (p, top) == 0)
      *lo = 0;
  }
  return *hi > *lo;
}

/* Walk every window of the plan; false when the reshape would get stuck. */
static bool
plan_feasible (const struct plan *p)
{
  uint64_t done = 0, lo, hi;

  while (done < p->total) {
    if (!next_window (p, done, &lo, &hi))
      return false;
    done += hi - lo;
  }
  return true;
}

/* Default layout for a level change (md's takeover conventions). */
static int
target_layout (int from_level, int from_layout, int to_level)
{
  if (to_level == from_level)
    return from_layout;
  if (to_level == 6 && from_level == 5)
    switch (from_layout) {
    case RAID_LAYOUT_LEFT_ASYMMETRIC: return RAID_LAYOUT_LEFT_ASYMMETRIC_6;
    case RAID_LAYOUT_RIGHT_ASYMMETRIC: return RAID_LAYOUT_RIGHT_ASYMMETRIC_6;
    case RAID_LAYOUT_LEFT_SYMMETRIC: return RAID_LAYOUT_LEFT_SYMMETRIC_6;
    case RAID_LAYOUT_RIGHT_SYMMETRIC: return RAID_LAYOUT_RIGHT_SYMMETRIC_6;
    case RAID_LAYOUT_PARITY_0: return RAID_LAYOUT_PARITY_0_6;
    default: return RAID_LAYOUT_PARITY_N;
    }
  if (to_level == 5 && from_level == 6)
    switch (from_layout) {
    case RAID_LAYOUT_LEFT_ASYMMETRIC_6: return RAID_LAYOUT_LEFT_ASYMMETRIC;
    case RAID_LAYOUT_RIGHT_ASYMMETRIC_6: return RAID_LAYOUT_RIGHT_ASYMMETRIC;
    case RAID_LAYOUT_RIGHT_SYMMETRIC_6: return RAID_LAYOUT_RIGHT_SYMMETRIC;
    case RAID_LAYOUT_PARITY_0_6: return RAID_LAYOUT_PARITY_0;
    case RAID_LAYOUT_PARITY_N: return RAID_LAYOUT_PARITY_N;
    default: return RAID_LAYOUT_LEFT_SYMMETRIC;
    }
  if (to_level == 4 || (to_level == 5 && (from_level == 0 || from_level == 4)))
    return RAID_LAYOUT_PARITY_N;
  return raid_layout_default (to_level);
}

static int
layout_tol (const struct raid_geom *g)
{
  return g->level == 0 ? 0 : g->parity_disks;
}

/* Members of the old layout: usable size and offsets.  The sizes are the
 * members' sizes now, not when they were opened: a member that has grown
 * since (an extended file, a larger block device) gives a reshape tail room
 * at once, without a resize to max first (which would fill that room with
 * array capacity and leave none for the reshape).  A role that holds no
 * member (its failed member removed) has no offset: one that takes it
 * later gets the layout's (sync.c, begin_recovery). */
static void
old_extent (struct raid_array *a, uint64_t *min_size, uint64_t *min_off, uint64_t *max_off)
{
  *min_size = UINT64_MAX; *min_off = UINT64_MAX; *max_off = 0;
  const struct layout *cur = router_layout (&a->router, LAYOUT_CUR);

  for (int r = 0; r < cur->g.raid_disks; r++) {
    struct member *m = state_role_member (a, cur, r);
    if (m)
      *min_size = raid_min_u64 (*min_size, member_refresh_size (m));
    if (cur->slot[r] < 0)
      continue;
    *min_off = raid_min_u64 (*min_off, cur->data_offset[r]);
    *max_off = raid_max_u64 (*max_off, cur->data_offset[r]);
  }
  if (*min_off > *max_off)
    *min_off = *max_off = layout_data_offset (cur);   /* no role holds one */
}

/* The room a reshape can use on the members (old_extent, and the added
 * members' sizes). */
struct room {
  uint64_t min_size, min_off, max_off;
  uint64_t head, tail;                     /* before the data / after the new
                                              layout's extent at max_off */
  uint64_t need;                           /* the least gap: one chunk of each */
};

static void
measure_room (struct raid_array *a, const struct plan *p, uint64_t new_member_min,
              struct room *rm)
{
  uint64_t used1;

  old_extent (a, &rm->min_size, &rm->min_off, &rm->max_off);
  rm->min_size = raid_min_u64 (rm->min_size, new_member_min);
  rm->need = (uint64_t) p->g0.chunk + p->g1.chunk;
  rm->head = rm->min_off > META_END ? rm->min_off - META_END : 0;
  used1 = raid_round_up (p->total, width (&p->g1)) / width (&p->g1) * p->g1.chunk;
  rm->tail = rm->min_size > rm->max_off + used1 ? rm->min_size - rm->max_off - used1 : 0;
}

/* With direction and gap set: the new layout's component size and
 * capacity on these members; true when it holds the array. */
static bool
fits (struct plan *p, const struct room *rm)
{
  uint64_t off1 = p->dir == SB_DIR_FORWARD ? rm->min_off - p->gap : rm->max_off + p->gap;

  p->comp1 = rm->min_size > off1 ? raid_round_down (rm->min_size - off1, p->g1.chunk) : 0;
  p->cap1 = p->g1.level == 1 ? p->comp1 : p->comp1 / p->g1.chunk * width (&p->g1);
  return p->cap1 >= p->total;
}

/* The least gap in [lo, hi] with which direction dir never gets stuck
 * (plan_feasible; more room only helps), or 0. */
static uint64_t
feasible_gap (struct plan *p, int dir, uint64_t lo, uint64_t hi)
{
  uint64_t mid;

  p->dir = dir;
  p->gap = hi;
  if (hi < lo || !plan_feasible (p))
    return 0;
  while (hi - lo > 4096) {
    p->gap = mid = raid_round_down (lo + (hi - lo) / 2, 4096);
    if (plan_feasible (p))
      hi = mid;
    else
      lo = mid;
  }
  p->gap = hi;
  return hi;
}

/* Direction dir with the room it has: an eighth of the room (at most
 * GAP_PREFERRED), or the least gap that works, when the new layout then
 * holds the array.  True with p filled. */
static bool
try_direction (struct plan *p, const struct room *rm, int dir)
{
  uint64_t room = raid_round_down (dir == SB_DIR_FORWARD ? rm->head : rm->tail, 4096);
  uint64_t g = feasible_gap (p, dir, rm->need, room), want;

  if (!g)
    return false;
  /* An eighth of the room, so that the room never runs out however many
   * reshapes follow (each takes a fraction of what is left); at most
   * GAP_PREFERRED (larger gaps only make the first windows larger). */
  want = raid_max_u64 (g, raid_round_down (raid_min_u64 (room / 8, GAP_PREFERRED), 4096));
  p->gap = want;
  if (fits (p, rm))
    return true;
  p->gap = g;
  return fits (p, rm);
}

/* Choose direction and gap; fill p.  The direction follows the room: the
 * natural one first (forward when the data disks grow, backward when they
 * shrink, else the side with more room), then the other, each taking an
 * eighth of its room (or what it takes).  So successive reshapes keep
 * working: each takes a fraction of what is left, and when one side is
 * used up the other serves (an array smaller than its members has tail
 * room a grow can use backward).  0, or ENOSPC with a message saying what
 * would do: a smaller size, more room (and how much), or naming a too
 * small added member (small_spec). */
static int
choose_plan (struct raid_array *a, struct plan *p, uint64_t new_member_min,
             const char *small_spec, char *err, size_t errlen)
{
  int d0 = p->g0.data_disks, d1 = p->g1.data_disks, dirs[2];
  uint64_t gmin[2], cap = 0;
  struct room rm, big;

  p->total = atomic_load (&a->size);
  measure_room (a, p, new_member_min, &rm);
  dirs[0] = d1 > d0 ? SB_DIR_FORWARD : d1 < d0 ? SB_DIR_BACKWARD
    : rm.head >= rm.tail ? SB_DIR_FORWARD : SB_DIR_BACKWARD;
  dirs[1] = !dirs[0];
  for (int k = 0; k < 2; k++)
    if (try_direction (p, &rm, dirs[k]))
      return 0;
  big = rm;
  old_extent (a, &big.min_size, &big.min_off, &big.max_off);
  if (small_spec && big.min_size > rm.min_size) {
    snprintf (err, errlen, "%s is too small: it holds %" PRIu64 " bytes, the members "
              "of the array %" PRIu64, small_spec, rm.min_size, big.min_size);
    return ENOSPC;
  }
  for (int k = 0; k < 2; k++) {
    /* Head room does not depend on the size; tail room is what the new
     * layout leaves, so a smaller size makes more of it. */
    int dir = dirs[k];
    gmin[dir] = feasible_gap (p, dir, rm.need, rm.min_size);
    if (gmin[dir] && (dir == SB_DIR_BACKWARD || gmin[dir] <= rm.head) && !fits (p, &rm))
      cap = raid_max_u64 (cap, p->cap1);   /* the size is the trouble */
  }
  if (cap && d1 < d0) {                   /* a shrink: the size must go first */
    snprintf (err, errlen, "the new geometry holds %" PRIu64 " bytes on these members "
              "but the array exports %" PRIu64 ": resize it to at most %" PRIu64
              " first (a shrink: resize with force, the bytes beyond are cut off), "
              "or use larger members", cap, p->total, cap);
    return ENOSPC;
  }
  /* The way out must work as said: members that grow by what the backward
   * direction lacks give it that tail room (old_extent measures them anew);
   * a resize to max before the reshape would turn the room into capacity,
   * so it comes after. */
  snprintf (err, errlen, "not enough room to reshape out of place: moving forward "
            "needs %" PRIu64 " bytes of head room per member (the members have %"
            PRIu64 "), moving backward %" PRIu64 " bytes of tail room (they have %"
            PRIu64 ")", gmin[SB_DIR_FORWARD], rm.head, gmin[SB_DIR_BACKWARD], rm.tail);
  if (gmin[SB_DIR_BACKWARD] > rm.tail) {
    size_t n = strlen (err);
    snprintf (err + n, errlen - n, "; make every member at least %" PRIu64 " bytes "
              "larger and prepare the reshape again (resize to max after it to use "
              "the rest)", gmin[SB_DIR_BACKWARD] - rm.tail);
  }
  {
    size_t n = strlen (err);
    snprintf (err + n, errlen - n, ", or create the array with a larger --data-offset");
  }
  if (cap) {
    size_t n = strlen (err);
    snprintf (err + n, errlen - n, " (or resize the array to at most %" PRIu64 ")", cap);
  }
  return ENOSPC;
}

/* Whether sb, read from a member to add, refuses it: a record of another
 * array, or of a member this array still lists.  A former member of this
 * array (removed, or left behind by a replace) holds nothing the array
 * needs and joins as new, as `add` takes it.  State lock held. */
static bool
holds_a_member (struct raid_array *a, const struct raid_sb *sb, const char *spec,
                char *err, size_t errlen)
{
  char u[RAID_UUID_STRLEN];

  if (memcmp (sb->array_uuid, a->sb.array_uuid, RAID_UUID_LEN) == 0 &&
      state_slot_of_uuid (a, sb->member_uuid) < 0)
    return false;
  raid_uuid_format (sb->array_uuid, u);
  snprintf (err, errlen, "%s already holds a superblock (array %s)", spec, u);
  return true;
}

/* Open and vet the members to add; on failure give back what was opened
 * (member_close_joining: retired[i] says it was a removed member of this
 * array, still open).  A spare of this array may be named: it is used as
 * it is (reuse[i] = its table slot, ms[i] = NULL).  A new member holding a
 * foreign signature is refused unless req->force (signature.h; sigs[i]:
 * what was found, for init_added to erase).  Reads only. */
static int
open_added (struct raid_array *a, const struct raid_reshape_req *req,
            struct member **ms, bool *retired, int *reuse,
            struct raid_create_sigs *sigs, uint64_t *min_size, const char **small,
            char *err, size_t errlen)
{
  char e[512];

  *min_size = UINT64_MAX;
  *small = NULL;
  for (int i = 0; i < req->nadd; i++) {
    struct raid_sb sb;
    int rs, r = 0, t = state_find_member (a, req->add[i], e, sizeof e);
    bool ours = false;                     /* it carries this array's record */
    int twice = -1;
    for (int j = 0; j < i; j++)           /* by the same name, or another name
                                              of the same spare */
      if (strcmp (req->add[i], req->add[j]) == 0 || (t >= 0 && reuse[j] == t))
        twice = j;
    reuse[i] = -1;
    if (twice >= 0 && strcmp (req->add[i], req->add[twice]) == 0) {
      snprintf (err, errlen, "%s is named twice", req->add[i]);
      r = EINVAL;
    }
    else if (twice >= 0) {
      snprintf (err, errlen, "%s is named twice (as %s and %s)",
                member_spec (a->mem[t].m), req->add[twice], req->add[i]);
      r = EINVAL;
    }
    else if (t >= 0 && state_spare_usable (a, t)) {
      reuse[i] = t;
      if (member_size (a->mem[t].m) < *min_size)
        *min_size = member_size (a->mem[t].m), *small = req->add[i];
      continue;
    }
    else if (t >= 0 && atomic_load (&a->mem[t].state) == RAID_MEMBER_SPARE) {
      snprintf (err, errlen, "%s is a spare whose connection is lost: wait until it "
                "is back", req->add[i]);
      r = EBUSY;
    }
    else if (t >= 0) {
      snprintf (err, errlen, "%s is already an active member", req->add[i]);
      r = EBUSY;
    }
    if (!r && !(ms[i] = member_open_joining (a, req->add[i], &retired[i], e, sizeof e))) {
      r = errno;
      snprintf (err, errlen, "%s", e);
    }
    else if (!r && (r = identity_check_member (a, raid_array_size (a), ms[i], e, sizeof e)) != 0)
      snprintf (err, errlen, "%s", e);
    else if (!r && (rs = sb_read_newest (ms[i], &sb, e, sizeof e)) != ENOENT) {
      if (rs != 0) {
        snprintf (err, errlen, "%s: %s", req->add[i], e);
        r = EBUSY;
      }
      pthread_mutex_lock (&a->state_lock);
      if (!r && holds_a_member (a, &sb, req->add[i], err, errlen))
        r = EBUSY;
      pthread_mutex_unlock (&a->state_lock);
      ours = rs == 0 && memcmp (sb.array_uuid, a->sb.array_uuid, RAID_UUID_LEN) == 0;
    }
    if (!r)                                /* a former member may have been reused */
      r = signature_refuse (ms[i], req->add[i], req->force, ours, &sigs[i], err, errlen);
    if (r) {
      for (int j = 0; j <= i; j++) {
        member_close_joining (a, ms[j], retired[j]);
        ms[j] = NULL;
      }
      return r;
    }
    if (member_size (ms[i]) < *min_size)
      *min_size = member_size (ms[i]), *small = req->add[i];
  }
  return 0;
}

static int
validate_request (struct raid_array *a, const struct raid_reshape_req *req,
                  struct plan *p, char *err, size_t errlen)
{
  const struct layout *cur = router_layout (&a->router, LAYOUT_CUR);
  int level = req->level >= 0 ? req->level : cur->g.level;
  int layout = req->layout >= 0 ? req->layout
    : target_layout (cur->g.level, cur->g.layout, level);
  uint32_t chunk = req->chunk ? req->chunk : cur->g.chunk;
  int n0 = cur->g.raid_disks;
  int n1 = req->raid_devices ? req->raid_devices : n0 + req->nadd;
  int nbad;

  if (level == cur->g.level && layout == cur->g.layout && chunk == cur->g.chunk &&
      n1 == n0) {
    snprintf (err, errlen, "the requested geometry is the current one");
    return EINVAL;
  }
  if (n1 > n0 && req->nadd != n1 - n0) {
    snprintf (err, errlen, "raid_devices %d needs %d new member(s) in add, got %d",
              n1, n1 - n0, req->nadd);
    return EINVAL;
  }
  if (n1 <= n0 && req->nadd) {
    snprintf (err, errlen, "add is only for growing (raid_devices %d <= %d)", n1, n0);
    return EINVAL;
  }
  if (cur->g.level == 1 && !(level == 5 && n0 == 2 && n1 == 2)) {
    snprintf (err, errlen, "raid1 can only become a 2-member raid5 (its members, "
              "chunk and layout do not change otherwise; add a spare instead)");
    return EINVAL;
  }
  if (level == 1 && !(cur->g.level == 5 && n0 == 2 && n1 == 2)) {
    snprintf (err, errlen, "only a 2-member raid5 can become raid1");
    return EINVAL;
  }
  if (level == 0 && cur->g.level != 0) {
    snprintf (err, errlen, "reshape to raid0 would lose all redundancy");
    return EINVAL;
  }
  p->g0 = cur->g;
  if (raid_geom_init (&p->g1, level, layout, chunk, n1, err, errlen) < 0)
    return EINVAL;
  nbad = __builtin_popcount (state_bad_roles (a, cur, NULL, NULL));
  if (nbad && layout_tol (&p->g1) < layout_tol (&p->g0)) {
    snprintf (err, errlen, "the array is degraded: a reshape must keep at least its "
              "redundancy (raid%d tolerates %d, the target %d)", p->g0.level,
              layout_tol (&p->g0), layout_tol (&p->g1));
    return EBUSY;
  }
  if (nbad > layout_tol (&p->g1) || (nbad && n1 < n0)) {
    snprintf (err, errlen, "the array is degraded (%d unusable): the target could "
              "not keep its data", nbad);
    return EBUSY;
  }
  return 0;
}

/* ---------------------------------------------------------------------
 * The record and the plan it implies.
 */

/* The plan of the recorded reshape (state lock held, or the worker, which
 * alone changes the position). */
static void
plan_from_sb (struct raid_array *a, struct plan *p)
{
  const struct layout *cur = router_layout (&a->router, LAYOUT_CUR);

  p->g0 = cur->g;
  p->g1 = router_layout (&a->router, LAYOUT_NEXT)->g;
  p->dir = a->sb.reshape_direction;
  p->total = a->sb.array_size;
  /* Smaller steps under a low speed limit, so that progress is smooth
   * and the pause after each step short. */
  p->win = a->test.reshape_window ? a->test.reshape_window : a->sync.step_bytes;
  p->gap = UINT64_MAX;
  for (int t = 0; t < (int) a->sb.nmembers; t++) {
    const struct sb_member_entry *e = &a->sb.members[t];
    if (e->role < 0 || e->role >= cur->g.raid_disks || e->state == SB_MEMBER_EMPTY ||
        e->state == SB_MEMBER_SPARE)
      continue;
    p->gap = raid_min_u64 (p->gap, e->new_data_offset > e->data_offset
                           ? e->new_data_offset - e->data_offset
                           : e->data_offset - e->new_data_offset);
  }
}

/* Route to both layouts as the record says (state lock held, and a claim
 * or no request yet). */
static int
route_record (struct raid_array *a, char *err, size_t errlen)
{
  struct layout next;
  uint64_t end = a->sb.array_size;

  if (layout_from_sb (&a->sb, LAYOUT_NEXT, &next, err, errlen) < 0)
    return -1;
  router_begin_reshape (&a->router, &next, a->sb.reshape_direction, end);
  if (a->sb.reshape_position)
    router_move_boundary (&a->router, a->sb.reshape_direction == SB_DIR_FORWARD
                          ? a->sb.reshape_position : end - a->sb.reshape_position);
  state_update_health (a);
  return 0;
}

int
reshape_assemble (struct raid_array *a, char *err, size_t errlen)
{
  int r;

  if (a->sb.reshape_state == SB_RESHAPE_NONE)
    return 0;
  router_claim (&a->router, 0, ROUTER_ALL);
  r = route_record (a, err, errlen);
  router_release (&a->router);
  return r;
}

/* ---------------------------------------------------------------------
 * Prepare.
 */

/* The members the request adds that are new to the array. */
static int
count_new (const int *reuse, int nadd)
{
  int n = 0;
  for (int i = 0; i < nadd; i++)
    n += reuse[i] < 0;
  return n;
}

static int
free_slots (struct raid_array *a)
{
  int n = SB_MAX_MEMBERS - (int) a->sb.nmembers;
  for (int t = 0; t < (int) a->sb.nmembers; t++)
    n += atomic_load (&a->mem[t].state) == STATE_EMPTY && !a->mem[t].m;
  return n;
}

/* Write the frozen record, the new members joining with their roles, and
 * route to both layouts (state lock and a claim over everything held).  A
 * failed commit means no member could be written: the array has failed,
 * and what it holds in memory no longer matters. */
static int
persist_prepare (struct raid_array *a, const struct plan *p, struct member **ms,
                 const int *reuse, int nadd, char *err, size_t errlen)
{
  const struct layout *cur = router_layout (&a->router, LAYOUT_CUR);
  uint64_t off0 = layout_data_offset (cur);
  uint64_t new_off = p->dir == SB_DIR_FORWARD ? off0 - p->gap : off0 + p->gap;
  int r;

  for (int t = 0; t < (int) a->sb.nmembers; t++) {
    struct sb_member_entry *e = &a->sb.members[t];
    if (e->state != SB_MEMBER_EMPTY && e->role >= 0)
      e->new_data_offset = p->dir == SB_DIR_FORWARD ? e->data_offset - p->gap
        : e->data_offset + p->gap;
  }
  for (int i = 0; i < nadd; i++) {
    int role = p->g0.raid_disks + i;
    if (reuse[i] >= 0) {                   /* a spare of this array */
      a->sb.members[reuse[i]].data_offset = new_off;
      a->sb.members[reuse[i]].new_data_offset = new_off;
      member_transition (a, reuse[i], RAID_MEMBER_IN_SYNC, role, "added by a reshape");
    }
    else
      member_install (a, member_free_slot (a), ms[i], RAID_MEMBER_IN_SYNC, role,
                      new_off, new_off);
  }
  a->sb.reshape_state = SB_RESHAPE_FROZEN;
  a->sb.reshape_direction = p->dir;
  a->sb.reshape_position = 0;
  a->sb.new_level = p->g1.level;
  a->sb.new_layout = p->g1.layout;
  a->sb.new_chunk = p->g1.chunk;
  a->sb.new_raid_devices = p->g1.raid_disks;
  a->sb.new_array_size = p->g1.data_disks > p->g0.data_disks ? p->cap1 : a->size;
  missed_end_all (a);          /* rows change meaning: an absent member is
                                  rebuilt in full when it is back */
  r = state_commit (a);
  if (route_record (a, err, errlen) < 0)
    abort ();                              /* validated by validate_request */
  if (r)
    snprintf (err, errlen, "cannot record the reshape: %s", raid_strerror (r));
  return r;
}

/* New members (not spares of this array) start with an empty ring, and
 * without the signatures force overrode. */
static int
init_added (struct member **ms, int n, const char *const *specs,
            const struct raid_create_sigs *sigs, char *err, size_t errlen)
{
  int r = 0;

  for (int i = 0; i < n && !r; i++) {
    if (!ms[i])
      continue;
    if ((r = signature_erase (ms[i], specs[i], &sigs[i], err, errlen)) != 0)
      break;
    if ((r = sb_wipe_ring (ms[i])) != 0)
      snprintf (err, errlen, "%s: cannot initialise it: %s", specs[i], raid_strerror (r));
    else if ((r = member_start (ms[i])) != 0)
      snprintf (err, errlen, "%s: cannot start its I/O", specs[i]);
  }
  return r;
}

/* The request as it will run: growing by more members than named uses the
 * array's spares, as mdadm --grow does (specs: storage for the names). */
static void
complete_request (struct raid_array *a, const struct raid_reshape_req *req,
                  struct raid_reshape_req *out, const char **specs)
{
  int n0 = router_layout (&a->router, LAYOUT_CUR)->g.raid_disks, n = 0;

  *out = *req;
  if (req->raid_devices <= n0 + req->nadd)
    return;
  for (int i = 0; i < req->nadd; i++)
    specs[n++] = req->add[i];
  for (int t = 0; t < (int) a->sb.nmembers && n < req->raid_devices - n0; t++)
    if (state_spare_usable (a, t))
      specs[n++] = member_spec (a->mem[t].m);
  out->add = specs;
  out->nadd = n;
}

/* Can a reshape be prepared now (state lock held)?  0 or an errno. */
static int
may_prepare (struct raid_array *a, char *err, size_t errlen)
{
  if (router_two (&a->router)) {
    snprintf (err, errlen, "a reshape is already prepared (use start, freeze, or abort)");
    return EBUSY;
  }
  if (a->sync.state != SYNC_IDLE) {
    snprintf (err, errlen, "%s is in progress: wait for it or abort it first",
              raid_sync_action_name (a->sync.job.ops->action));
    return EBUSY;
  }
  if (raid_array_health (a) == RAID_HEALTH_FAILED) {
    snprintf (err, errlen, "the array has failed");
    return EIO;
  }
  return 0;
}

int
reshape_prepare (struct raid_array *a, const struct raid_reshape_req *in,
                 char *err, size_t errlen)
{
  struct member *ms[RAID_MAX_MEMBERS] = { NULL };
  bool retired[RAID_MAX_MEMBERS] = { false };
  const char *specs[RAID_MAX_MEMBERS];
  int reuse[RAID_MAX_MEMBERS];
  struct raid_create_sigs *sigs;
  struct raid_reshape_req req;
  struct plan p = { .win = a->test.reshape_window };
  const char *small = NULL;
  uint64_t add_min;
  int r;

  *err = '\0';
  if (in->nadd > RAID_MAX_MEMBERS -
      router_layout (&a->router, LAYOUT_CUR)->g.raid_disks) {
    snprintf (err, errlen, "too many members to add");
    return EINVAL;
  }
  if ((sigs = calloc (RAID_MAX_MEMBERS, sizeof *sigs)) == NULL)
    return ENOMEM;
  pthread_mutex_lock (&a->state_lock);
  complete_request (a, in, &req, specs);
  if ((r = may_prepare (a, err, errlen)) == 0)
    r = validate_request (a, &req, &p, err, errlen);
  pthread_mutex_unlock (&a->state_lock);
  if (r) {
    free (sigs);
    return r;
  }
  /* Slow: opening NBD members, probing new ones (no lock but
   * management's).  Nothing may begin a job meanwhile (the management lock
   * is held); members may still fail, so the checks that depend on them
   * are made again below, with the commit. */
  if ((r = open_added (a, &req, ms, retired, reuse, sigs, &add_min, &small,
                       err, errlen)) == 0 &&
      (r = choose_plan (a, &p, add_min, small, err, errlen)) == 0)
    r = init_added (ms, req.nadd, req.add, sigs, err, errlen);
  free (sigs);
  if (r == 0) {
    router_claim (&a->router, 0, ROUTER_ALL);
    pthread_mutex_lock (&a->state_lock);
    if ((r = may_prepare (a, err, errlen)) == 0 &&
        (r = validate_request (a, &req, &p, err, errlen)) == 0 &&
        count_new (reuse, req.nadd) > free_slots (a)) {
      snprintf (err, errlen, "the member table is full");
      r = ENOSPC;
    }
    for (int i = 0; r == 0 && i < req.nadd; i++)
      if (reuse[i] >= 0 && !state_spare_usable (a, reuse[i])) {
        snprintf (err, errlen, "%s: its connection was lost meanwhile", req.add[i]);
        r = EBUSY;                         /* (open_added checked it unlocked) */
      }
    if (r == 0) {
      /* From here the members belong to the array, even when the commit
       * fails (then no member could be written: the array has failed). */
      r = persist_prepare (a, &p, ms, reuse, req.nadd, err, errlen);
      sync_begin (a, &(struct sync_job) { .ops = &reshape_sync_ops, .target_slot = -1,
                  .target_role = -1, .source_slot = -1 }, 0, true, err, errlen);
      memset (ms, 0, sizeof ms);
    }
    pthread_mutex_unlock (&a->state_lock);
    router_release (&a->router);
  }
  for (int i = 0; i < req.nadd; i++)
    member_close_joining (a, ms[i], retired[i]);   /* not taken by the array */
  if (r)
    return r;
  raid_log (RAID_LOG_INFO, "reshape prepared: raid%d %s chunk %u x%d -> raid%d %s "
            "chunk %u x%d, moving %s (frozen)", p.g0.level, raid_layout_name (p.g0.layout),
            p.g0.chunk, p.g0.raid_disks, p.g1.level, raid_layout_name (p.g1.layout),
            p.g1.chunk, p.g1.raid_disks, p.dir == SB_DIR_FORWARD ? "forward" : "backward");
  return r;
}

/* ---------------------------------------------------------------------
 * Start, the steps and the finish.
 */

int
reshape_check_start (struct raid_array *a, char *err, size_t errlen)
{
  const struct layout *cur = router_layout (&a->router, LAYOUT_CUR);
  const struct layout *next = router_layout (&a->router, LAYOUT_NEXT);
  uint32_t bad1 = state_bad_roles (a, next, NULL, NULL);
  int nbad1 = __builtin_popcount (bad1);
  int nbad0 = __builtin_popcount (state_bad_roles (a, cur, NULL, NULL));
  uint32_t added = 0;

  if (raid_array_health (a) == RAID_HEALTH_FAILED) {
    snprintf (err, errlen, "the array has failed");
    return EIO;
  }
  if (nbad1 > layout_tolerance (next) || nbad0 > layout_tolerance (cur)) {
    snprintf (err, errlen, "members the reshape needs are missing or faulty "
              "(%d of the new layout, %d of the old)", nbad1, nbad0);
    return ENODEV;
  }
  /* Before any data moved, every member the reshape adds must be there
   * (else it would start with less redundancy than it was prepared for;
   * abort and prepare again instead).  Once data moved, a lost member
   * within redundancy does not stop it. */
  for (int r = cur->g.raid_disks; r < next->g.raid_disks; r++)
    added |= 1u << r;
  if (!state_next_holds_data (a) && (bad1 & added)) {
    snprintf (err, errlen, "a member this reshape adds is missing or faulty; "
              "abort the reshape and prepare it again");
    return ENODEV;
  }
  return 0;
}

void
reshape_record_state (struct raid_array *a, bool running)
{
  uint32_t want = running ? SB_RESHAPE_RUNNING : SB_RESHAPE_FROZEN;

  if (a->sb.reshape_state != SB_RESHAPE_NONE && a->sb.reshape_state != want) {
    a->sb.reshape_state = want;
    state_commit (a);
  }
}

static void
set_position (struct raid_array *a, void *arg)
{
  a->sb.reshape_position = *(uint64_t *) arg;
}

/* A window's copy is cut into this many parts: the target's writes of one
 * part run while the next part is read (copy_window). */
#define COPY_PARTS 8

/* The write of one part to the target, on a helper thread. */
struct part_write {
  pthread_t th;
  struct raid_array *a;
  const struct layout *next;
  const uint8_t *buf;
  uint64_t off, len;
  int err;
};

static void *
part_write_run (void *arg)
{
  struct part_write *w = arg;

  w->err = stripe_write (w->a, w->next, w->buf, w->len, w->off, RAID_IO_RAW);
  return NULL;
}

/* Copy the window [lo, hi) (a claim over it held; buf holds cap bytes).
 * The window goes in parts of whole target rows: while a helper thread
 * writes part i to the target, this thread reads part i+1 from the current
 * layout into the other half of buf.  The two never touch the same member
 * bytes: the window was cut so that the target's member bytes for [0, hi)
 * lie on the far side of every old-layout byte not yet copied (next_window),
 * and no client request reaches the window while the claim is held.  A
 * failed part stops the copy once the write in flight has ended; the step
 * is redone from the durable position. */
static int
copy_window (struct raid_array *a, uint64_t lo, uint64_t hi, uint8_t *buf, uint64_t cap)
{
  const struct layout *cur = router_layout (&a->router, LAYOUT_CUR);
  const struct layout *next = router_layout (&a->router, LAYOUT_NEXT);
  uint64_t part = raid_round_up ((hi - lo + COPY_PARTS - 1) / COPY_PARTS,
                                 next->g.stripe_width);
  struct part_write w = { .a = a, .next = next };
  bool writing = false;
  int err = 0;

  if (2 * part > cap)
    part = hi - lo;                        /* one part: no overlap */
  for (uint64_t off = lo, i = 0; off < hi && !err; off += w.len, i++) {
    uint8_t *b = buf + (i % 2) * part;
    uint64_t len = raid_min_u64 (part, hi - off);
    err = stripe_read (a, cur, b, len, off);
    if (writing) {
      pthread_join (w.th, NULL);
      writing = false;
      err = err ? err : w.err;
    }
    w.buf = b; w.off = off; w.len = len; w.err = 0;
    if (!err && off + len < hi && pthread_create (&w.th, NULL, part_write_run, &w) == 0)
      writing = true;
    else if (!err)                         /* the last part, or no thread */
      err = stripe_write (a, next, b, len, off, RAID_IO_RAW);
  }
  if (writing) {
    pthread_join (w.th, NULL);
    err = err ? err : w.err;
  }
  return err;
}

/* One window from the durable position *done (the worker; *buf is its
 * copy buffer, replaced here when it is smaller than this reshape's
 * windows need: a later reshape may have wider rows). */
static int
reshape_step (struct raid_array *a, uint64_t *done, struct sync_scratch *buf)
{
  struct plan p;
  uint64_t lo, hi, pos, need;
  int err;

  pthread_mutex_lock (&a->state_lock);
  plan_from_sb (a, &p);
  pthread_mutex_unlock (&a->state_lock);
  if (!next_window (&p, *done, &lo, &hi))
    return ENOSPC;                         /* impossible after prepare's walk */
  need = WIN_MAX + width (&p.g1);          /* windows are at most max(W1, WIN_MAX) */
  if (buf->cap < need) {
    free (buf->p);
    buf->cap = (buf->p = raid_alloc_aligned (need)) ? need : 0;
    if (!buf->p)
      return ENOMEM;
  }

  router_claim (&a->router, lo, hi);
  pos = *done + (hi - lo);
  if ((err = copy_window (a, lo, hi, buf->p, buf->cap)) == 0)
    err = cons_checkpoint (a, set_position, &pos);
  if (err == 0 && raid_array_health (a) == RAID_HEALTH_FAILED)
    err = EIO;
  if (err == 0) {
    pthread_mutex_lock (&a->state_lock);
    router_move_boundary (&a->router, p.dir == SB_DIR_FORWARD ? hi : lo);
    state_update_health (a);
    pthread_mutex_unlock (&a->state_lock);
    *done = pos;
  }
  router_release (&a->router);
  return err;
}

/* The record of the finished reshape (state lock held). */
static void
switch_record (struct raid_array *a)
{
  const struct layout *next = router_layout (&a->router, LAYOUT_NEXT);
  uint64_t min = UINT64_MAX;

  for (int t = 0; t < (int) a->sb.nmembers; t++) {
    struct sb_member_entry *e = &a->sb.members[t];
    if (e->state == SB_MEMBER_EMPTY)
      continue;
    e->data_offset = e->new_data_offset;
    a->mem[t].delta = false;               /* a member away now misses all */
  }
  for (int r = 0; r < next->g.raid_disks; r++) {
    struct member *m = state_role_member (a, next, r);
    if (m)
      min = raid_min_u64 (min, member_size (m) - next->data_offset[r]);
  }
  a->sb.level = a->sb.new_level;
  a->sb.layout = a->sb.new_layout;
  a->sb.chunk = a->sb.new_chunk;
  a->sb.raid_disks = a->sb.new_raid_devices;
  a->sb.array_size = raid_max_u64 (a->sb.new_array_size, a->sb.array_size);
  a->sb.component_size = raid_round_down (min, next->g.chunk);
  a->sb.reshape_state = SB_RESHAPE_NONE;
  a->sb.reshape_position = 0;
  if (a->sb.resync_offset != UINT64_MAX) {
    /* An unclean stop during the reshape: rows written then in the new
     * layout may be inconsistent (bitmap and resync policies).  Resync
     * all of the new layout, whatever the bitmap says. */
    a->sb.resync_offset = 0;
    a->sb.flags |= SB_FLAG_RESYNC_ALL;
  }
}

/* Members with a role the new layout (current now) does not have leave it:
 * only now, so that no health computed in between counts their roles of
 * the old layout as lost (state lock held). */
static void
leave_unused_roles (struct raid_array *a)
{
  const struct layout *cur = router_layout (&a->router, LAYOUT_CUR);

  for (int t = 0; t < (int) a->sb.nmembers; t++) {
    int st = atomic_load (&a->mem[t].state);
    if (a->sb.members[t].state == SB_MEMBER_EMPTY || a->sb.members[t].role < cur->g.raid_disks)
      continue;
    if (st == RAID_MEMBER_IN_SYNC || st == RAID_MEMBER_REBUILDING)
      member_transition (a, t, RAID_MEMBER_SPARE, -1, "no longer used by the reshape");
    else
      member_detach (a, t);                /* absent or failed: holds no role */
  }
}

/* Switch to the new layout: record, router, size, bitmap geometry and the
 * job's end, in one state-lock section (the claim over everything held),
 * so no status or request sees one half.  The record is committed right
 * after; all data already sits in the new layout, so the switch stands
 * even if that commit fails (a restart finds the reshape at its end and
 * finishes it again). */
static void
switch_layouts (struct raid_array *a, void *arg)
{
  *(bool *) arg = true;
  switch_record (a);
  router_finish_reshape (&a->router, a->sb.component_size / a->sb.chunk);
  leave_unused_roles (a);
  atomic_store (&a->size, a->sb.array_size);
  bitmap_fini (a);
  bitmap_init (a);
  missed_reinit (a);
  state_update_health (a);
  sync_transition (a, SYNC_EV_DONE, NULL, "complete");
}

/* Zero the target past the exported size: its grown capacity, and in any
 * case the rest of the row holding the last exported byte, which the copy
 * wrote only in part (stripe.h).  Nobody can address these bytes yet; the
 * claim keeps tickets out of them all the same. */
static int
zero_beyond (struct raid_array *a)
{
  uint64_t size = atomic_load (&a->size);
  int err;

  router_claim (&a->router, size, ROUTER_ALL);
  err = stripe_zero_to_row_end (a, router_layout (&a->router, LAYOUT_NEXT), size,
                                raid_max_u64 (a->sb.new_array_size, size));
  router_release (&a->router);
  return err;
}

/* All data moved: zero past the exported size, then switch layouts with
 * no request in flight (management lock held). */
static int
reshape_finish (struct raid_array *a, const struct sync_job *j)
{
  bool switched = false;
  char e[64];
  int err;

  (void) j;
  if ((err = zero_beyond (a)) != 0)
    return err;
  router_claim (&a->router, 0, ROUTER_ALL);        /* drains every request */
  if (bitmap_enabled (a))
    bitmap_clean (a, true);
  err = cons_checkpoint (a, switch_layouts, &switched);
  router_release (&a->router);
  if (!switched)
    return err;                            /* members not flushed: fails */
  if (err)
    raid_log (RAID_LOG_ERROR, "reshape complete, but its record could not be "
              "written: %s (the next start finishes it again)", raid_strerror (err));
  raid_log (RAID_LOG_INFO, "reshape complete: raid%d %s chunk %u, %d members, %s",
              (int) a->sb.level, raid_layout_name (a->sb.layout), a->sb.chunk,
              (int) a->sb.raid_disks, raid_fmt_size (a->sb.array_size, e, sizeof e));
  return 0;
}

/* ---------------------------------------------------------------------
 * Abort.
 */

/* Take back the prepared record (state lock held). */
static void
revert_record (struct raid_array *a)
{
  const struct layout *cur = router_layout (&a->router, LAYOUT_CUR);

  for (int t = 0; t < (int) a->sb.nmembers; t++) {
    struct sb_member_entry *e = &a->sb.members[t];
    int st = atomic_load (&a->mem[t].state);
    if (st == STATE_EMPTY)
      continue;
    if (e->role >= cur->g.raid_disks && !a->mem[t].m)
      member_uninstall (a, t);             /* added, but gone (lost its record) */
    else if (e->role >= cur->g.raid_disks) {
      /* The members it added: spares again, also one that was lost or is
       * back (it holds nothing of the array); one that is away is a spare
       * that is down (unverified until the away watcher has it back). */
      e->data_offset = e->new_data_offset = layout_data_offset (cur);
      if (st == RAID_MEMBER_FAULTY)
        member_detach (a, t);
      else {
        a->mem[t].unverified = st == RAID_MEMBER_MISSING;
        member_transition (a, t, RAID_MEMBER_SPARE, -1, "the reshape was aborted");
      }
    }
    else
      e->new_data_offset = e->data_offset;
  }
  a->sb.reshape_state = SB_RESHAPE_NONE;
}

int
reshape_abort (struct raid_array *a, char *err, size_t errlen)
{
  int r;

  router_claim (&a->router, 0, ROUTER_ALL);
  pthread_mutex_lock (&a->state_lock);
  if (a->sb.reshape_position != 0) {
    snprintf (err, errlen, "data has already moved (%" PRIu64 " bytes): "
              "a reshape can only be frozen now", a->sb.reshape_position);
    r = EBUSY;
  }
  else {
    router_end_reshape (&a->router);       /* first: the target's roles stop counting */
    revert_record (a);
    r = state_commit (a);
    sync_transition (a, SYNC_EV_ABORT, NULL, "aborted by request");
    state_update_health (a);
    if (r)
      snprintf (err, errlen, "cannot record the abort: %s", raid_strerror (r));
  }
  pthread_mutex_unlock (&a->state_lock);
  router_release (&a->router);
  return r;
}

/* ---------------------------------------------------------------------
 * Status and the job's ops.
 */

void
reshape_status (struct raid_array *a, struct raid_status *st)
{
  const struct layout *cur = router_layout (&a->router, LAYOUT_CUR);

  st->has_reshape = a->sb.reshape_state != SB_RESHAPE_NONE;
  if (!st->has_reshape)
    return;
  st->reshape.running = a->sync.state == SYNC_RUNNING &&
    a->sync.job.ops == &reshape_sync_ops;
  st->reshape.position = a->sb.reshape_position;
  st->reshape.total = a->sb.array_size;
  st->reshape.direction = a->sb.reshape_direction;
  st->reshape.boundary = a->sb.reshape_direction == SB_DIR_FORWARD
    ? a->sb.reshape_position : a->sb.array_size - a->sb.reshape_position;
  st->reshape.from = (struct raid_geom_status) { cur->g.level, cur->g.layout,
    cur->g.chunk, cur->g.raid_disks };
  st->reshape.to = (struct raid_geom_status) { (int) a->sb.new_level,
    (int) a->sb.new_layout, a->sb.new_chunk, (int) a->sb.new_raid_devices };
  snprintf (st->reshape.error, sizeof st->reshape.error, "%s", a->sync.error);
  if (st->has_progress && st->progress.action == RAID_SYNC_RESHAPE) {
    /* One figure: a step records its position before the worker counts
     * the batch done, so the job's count may lag it by a window. */
    st->progress.done = st->reshape.position;
    st->progress.eta_seconds = st->progress.rate
      ? (int64_t) ((st->progress.total - raid_min_u64 (st->progress.total,
                                                       st->progress.done)) /
                   st->progress.rate) : -1;
  }
}

static uint64_t
ops_total (struct raid_array *a, const struct sync_job *j)
{
  (void) j;
  return a->sb.array_size;
}

static enum sync_check
ops_check (struct raid_array *a, const struct sync_job *j, char *err, size_t errlen)
{
  (void) j;
  if (raid_array_health (a) != RAID_HEALTH_FAILED)
    return SYNC_GO;
  snprintf (err, errlen, "the array has failed");
  return SYNC_STOP_FAIL;
}

static int
ops_batch (struct raid_array *a, const struct sync_job *j, uint64_t *pos,
           uint64_t *mismatch, struct sync_scratch *scratch)
{
  (void) mismatch;
  return *pos >= j->total ? 0 : reshape_step (a, pos, scratch);
}

/* Every step is its own checkpoint; what is left to record is whether the
 * job runs (a freeze, a failure). */
static void
ops_checkpoint (struct raid_array *a, const struct sync_job *j)
{
  (void) j;
  reshape_record_state (a, a->sync.state == SYNC_RUNNING);
}

static int
ops_may_start (struct raid_array *a, const struct sync_job *j, char *err, size_t errlen)
{
  int r;

  (void) j;
  if ((r = reshape_check_start (a, err, errlen)) == 0)
    reshape_record_state (a, true);        /* durable before data moves */
  return r;
}

const struct sync_ops reshape_sync_ops = {
  .action = RAID_SYNC_RESHAPE,
  .abortable = false,                      /* reshape_abort, only before data moved */
  .total = ops_total,
  .check = ops_check,
  .batch = ops_batch,
  .checkpoint = ops_checkpoint,
  .may_start = ops_may_start,
  .finish = reshape_finish,
};
