/* nbdkit-raid: live reshape — another member count, chunk, layout or level
 * while clients keep reading and writing.
 *
 * THEORY
 *
 * Two layouts.  While a reshape record exists the array has the old layout
 * (a->cur, lock space 0) and the new one (a->next, lock space 1), each with
 * its own data offset per member.  Array bytes are moved in order; the
 * boundary separates them: moving forward, [0, boundary) is in the new
 * layout and the rest in the old; moving backward, [boundary, size) is new.
 * The position (bytes moved) is durable in every member's superblock.
 *
 * Explicit sequencing.  `reshape` (prepare) validates everything, then
 * writes the complete record (old and new geometry, new data offsets, new
 * members with their roles, state frozen, position 0) to every member and
 * returns; nothing moves.  The sync action is RESHAPE, frozen.  `start`
 * unfreezes it (after checking every member the new layout needs is
 * usable); `freeze` stops it after the current window, durably.  The worker
 * therefore never sees a half-configured array: everything it uses was
 * durable before `start` could be accepted.
 *
 * Out of place, no backup file.  The new data offset is lower than the old
 * one (forward) or higher (backward) by `gap` bytes of head or tail room.
 * Invariant: old-layout data is never overwritten before a durable
 * checkpoint covers its new copy.  A step copies one window of array bytes
 * [lo, hi): forward, lo is the durable position, and the window is cut so
 * that the new layout's member bytes for [0, hi) end at or below where the
 * old layout's not-yet-copied data (array offsets >= lo) starts on every
 * member; backward, symmetrically from the top.  After the copy every member
 * is flushed and the new position committed; only then does the boundary
 * move and the next window begin.
 *
 * Crash anywhere.  The record and position on disk describe a state in
 * which all old data at or beyond the position is intact (nothing above the
 * durable position was overwritten) and all data below it is durable in
 * the new layout (flushed before the position was committed).  Restarting
 * recopies the interrupted window from the old layout — idempotent.
 * Client writes below the boundary go to the new layout through the
 * ordinary write path (journaled as layout 1); above it, to the old one.
 *
 * Clients never wait on progress.  A request touching the window being
 * copied waits for that window only (bounded by one window's I/O); the
 * copy waits only for requests already in flight on the window.  A frozen
 * reshape has no window, so no request ever waits on it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array-int.h"
#include "bitmap.h"
#include "journal.h"
#include "util.h"

#define WIN_MAX (16u << 20)                /* array bytes per step */
#define GAP_PREFERRED (4u << 20)           /* room a reshape takes when it can */
#define META_END (4u << 20)                /* create.h RAID_META_END */

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

/* ---------------------------------------------------------------------
 * The foreground side: split requests at the boundary, wait only for the
 * window.
 */
struct rreq {
  uint64_t lo, hi;
  struct rreq *next;
};

static bool
overlaps (uint64_t a0, uint64_t a1, uint64_t b0, uint64_t b1)
{
  return a0 < b1 && b0 < a1;
}

int
reshape_io (struct raid_array *a, int op, void *buf, uint64_t count, uint64_t off,
            unsigned flags)
{
  struct rreq node = { off, off + count, NULL }, **pp;
  uint64_t B, cut;
  const struct layout *lower, *upper;
  int err = 0;

  pthread_mutex_lock (&a->rlock);
  while (overlaps (node.lo, node.hi, a->win_lo, a->win_hi))
    pthread_cond_wait (&a->rcond, &a->rlock);   /* woken when the window moves */
  node.next = a->active;
  a->active = &node;
  B = a->boundary;
  pthread_mutex_unlock (&a->rlock);

  lower = a->rdir == SB_DIR_FORWARD ? &a->next : &a->cur;
  upper = a->rdir == SB_DIR_FORWARD ? &a->cur : &a->next;
  cut = raid_max_u64 (off, raid_min_u64 (off + count, B));
  if (cut > off)
    err = array_span_io (a, lower, op, buf, cut - off, off, flags);
  if (!err && off + count > cut)
    err = array_span_io (a, upper, op, (uint8_t *) buf + (buf ? cut - off : 0),
                         off + count - cut, cut, flags);

  pthread_mutex_lock (&a->rlock);
  for (pp = &a->active; *pp != &node; pp = &(*pp)->next)
    ;
  *pp = node.next;
  pthread_cond_broadcast (&a->rcond);
  pthread_mutex_unlock (&a->rlock);
  return err;
}

/* Claim [lo, hi) for the copy: new requests on it wait; wait for those in
 * flight on it (bounded by their I/O). */
static void
window_claim (struct raid_array *a, uint64_t lo, uint64_t hi)
{
  bool busy;

  pthread_mutex_lock (&a->rlock);
  a->win_lo = lo;
  a->win_hi = hi;
  do {
    busy = false;
    for (struct rreq *r = a->active; r; r = r->next)
      busy |= overlaps (r->lo, r->hi, lo, hi);
    if (busy)
      pthread_cond_wait (&a->rcond, &a->rlock);   /* woken by request completion */
  } while (busy);
  pthread_mutex_unlock (&a->rlock);
}

static void
window_release (struct raid_array *a, bool moved, uint64_t new_boundary)
{
  pthread_mutex_lock (&a->rlock);
  if (moved)
    a->boundary = new_boundary;
  a->win_lo = a->win_hi = 0;
  pthread_cond_broadcast (&a->rcond);
  pthread_mutex_unlock (&a->rlock);
}

/* ---------------------------------------------------------------------
 * Layout construction.
 */


static void
plan_from_sb (const struct raid_array *a, struct plan *p)
{
  p->g0 = a->cur.g;
  p->g1 = a->next.g;
  p->dir = a->sb.reshape_direction;
  p->total = a->sb.array_size;
  /* Smaller steps under a low speed limit, so that progress is smooth
   * and the pause after each step short (sync thread only). */
  p->win = a->test.reshape_window ? a->test.reshape_window : a->sync.step_bytes;
  p->gap = UINT64_MAX;
  for (int t = 0; t < (int) a->sb.nmembers; t++) {
    const struct sb_member_entry *e = &a->sb.members[t];
    if (e->role < 0 || e->role >= a->cur.g.raid_disks || e->state == SB_MEMBER_EMPTY ||
        e->state == SB_MEMBER_SPARE)
      continue;
    p->gap = raid_min_u64 (p->gap, e->new_data_offset > e->data_offset
                           ? e->new_data_offset - e->data_offset
                           : e->data_offset - e->new_data_offset);
  }
}

int
reshape_assemble (struct raid_array *a, char *err, size_t errlen)
{
  pthread_mutex_init (&a->rlock, NULL);
  pthread_cond_init (&a->rcond, NULL);
  if (a->sb.reshape_state == SB_RESHAPE_NONE)
    return 0;
  if (array_layout_from_sb (a, &a->next, 1, err, errlen) < 0)
    return -1;
  a->rdir = a->sb.reshape_direction;
  a->boundary = a->rdir == SB_DIR_FORWARD ? a->sb.reshape_position
    : a->sb.array_size - a->sb.reshape_position;
  atomic_store (&a->reshaping, true);
  return 0;
}

/* ---------------------------------------------------------------------
 * Prepare.
 */

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
tolerance_of (const struct raid_geom *g)
{
  return g->level == 0 ? 0 : g->parity_disks;
}

/* Members of the old layout: usable size and offsets. */
static void
old_extent (struct raid_array *a, uint64_t *min_size, uint64_t *min_off, uint64_t *max_off)
{
  *min_size = UINT64_MAX; *min_off = UINT64_MAX; *max_off = 0;
  for (int r = 0; r < a->cur.g.raid_disks; r++) {
    struct member *m = layout_member (a, &a->cur, r);
    if (m)
      *min_size = raid_min_u64 (*min_size, member_size (m));
    *min_off = raid_min_u64 (*min_off, a->cur.data_offset[r]);
    *max_off = raid_max_u64 (*max_off, a->cur.data_offset[r]);
  }
}

/* Choose direction and gap; fill p.  0, or an errno with a message. */
static int
choose_plan (struct raid_array *a, struct plan *p, uint64_t new_member_min,
             char *err, size_t errlen)
{
  uint64_t min_size, min_off, max_off, head, tail, need, used1;
  int d0 = p->g0.data_disks, d1 = p->g1.data_disks;

  old_extent (a, &min_size, &min_off, &max_off);
  min_size = raid_min_u64 (min_size, new_member_min);
  p->total = a->size;
  need = (uint64_t) p->g0.chunk + p->g1.chunk;
  head = min_off > META_END ? min_off - META_END : 0;
  used1 = raid_round_up (p->total, width (&p->g1)) / width (&p->g1) * p->g1.chunk;
  tail = min_size > max_off + used1 ? min_size - max_off - used1 : 0;

  p->dir = d1 > d0 ? SB_DIR_FORWARD : d1 < d0 ? SB_DIR_BACKWARD
    : head >= need ? SB_DIR_FORWARD : SB_DIR_BACKWARD;
  if (p->dir == SB_DIR_BACKWARD) {
    /* Does the data fit the new geometry at all (above the smallest gap)? */
    uint64_t c = min_size > max_off + need
      ? raid_round_down (min_size - max_off - need, p->g1.chunk) : 0;
    uint64_t cap = p->g1.level == 1 ? c : c / p->g1.chunk * width (&p->g1);
    if (cap < p->total) {
      snprintf (err, errlen, "the new geometry holds %" PRIu64 " bytes but the array "
                "exports %" PRIu64 ": resize it to at most %" PRIu64 " first",
                cap, p->total, cap);
      return ENOSPC;
    }
  }
  {
    uint64_t room = p->dir == SB_DIR_FORWARD ? head : tail;
    p->gap = raid_round_down (raid_min_u64 (room, raid_max_u64 (need, GAP_PREFERRED)), 4096);
    if (p->gap < need || !plan_feasible (p)) {
      snprintf (err, errlen, "not enough room to reshape out of place: it needs at least "
                "%" PRIu64 " bytes of %s room per member, the members have %" PRIu64
                " (create the array with a larger --data-offset, or use larger members)",
                need, p->dir == SB_DIR_FORWARD ? "head" : "tail", room);
      return ENOSPC;
    }
  }
  /* Capacity of the new layout on these members. */
  {
    uint64_t off1 = p->dir == SB_DIR_FORWARD ? min_off - p->gap : max_off + p->gap;
    p->comp1 = min_size > off1 ? raid_round_down (min_size - off1, p->g1.chunk) : 0;
    p->cap1 = p->g1.level == 1 ? p->comp1 : p->comp1 / p->g1.chunk * width (&p->g1);
  }
  if (p->cap1 < p->total) {
    snprintf (err, errlen, "the new geometry holds %" PRIu64 " bytes but the array "
              "exports %" PRIu64 ": resize it to at most %" PRIu64 " first",
              p->cap1, p->total, p->cap1);
    return ENOSPC;
  }
  return 0;
}

/* Open and vet the members to add; on failure close what was opened.  A
 * spare of this array may be named: it is used as it is (reuse[i] = its
 * table slot, ms[i] = NULL). */
static int
open_added (struct raid_array *a, const struct raid_reshape_req *req,
            struct member **ms, int *reuse, uint64_t *min_size, char *err, size_t errlen)
{
  char e[512];

  *min_size = UINT64_MAX;
  for (int i = 0; i < req->nadd; i++) {
    struct raid_sb sb;
    int r = 0, t = array_find_member (a, req->add[i], e, sizeof e);
    reuse[i] = -1;
    if (t >= 0 && atomic_load (&a->mem[t].state) == RAID_MEMBER_SPARE) {
      reuse[i] = t;
      *min_size = raid_min_u64 (*min_size, member_size (a->mem[t].m));
      continue;
    }
    if (t >= 0) {
      snprintf (err, errlen, "%s is already an active member", req->add[i]);
      r = EBUSY;
    }
    for (int j = 0; j < i; j++)
      if (strcmp (req->add[i], req->add[j]) == 0) {
        snprintf (err, errlen, "%s is named twice", req->add[i]);
        r = EINVAL;
      }
    if (!r && !(ms[i] = member_open (req->add[i], false, e, sizeof e))) {
      r = errno ? errno : ENOENT;
      snprintf (err, errlen, "%s", e);
    }
    else if (!r && sb_read_newest (ms[i], &sb, e, sizeof e) != ENOENT) {
      char u[RAID_UUID_STRLEN];
      raid_uuid_format (sb.array_uuid, u);
      snprintf (err, errlen, "%s already holds a superblock (array %s)", req->add[i], u);
      r = EBUSY;
    }
    if (r) {
      for (int j = 0; j <= i; j++)
        if (ms[j])
          member_close (ms[j]);
      return r;
    }
    *min_size = raid_min_u64 (*min_size, member_size (ms[i]));
  }
  return 0;
}

static int
validate_request (struct raid_array *a, const struct raid_reshape_req *req,
                  struct plan *p, char *err, size_t errlen)
{
  int level = req->level >= 0 ? req->level : a->cur.g.level;
  int layout = req->layout >= 0 ? req->layout
    : target_layout (a->cur.g.level, a->cur.g.layout, level);
  uint32_t chunk = req->chunk ? req->chunk : a->cur.g.chunk;
  int n0 = a->cur.g.raid_disks;
  int n1 = req->raid_devices ? req->raid_devices : n0 + req->nadd;
  int nbad;

  if (level == a->cur.g.level && layout == a->cur.g.layout && chunk == a->cur.g.chunk &&
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
  if (a->cur.g.level == 1 && !(level == 1 || (level == 5 && n0 == 2 && n1 == 2))) {
    snprintf (err, errlen, "raid1 can only become a 2-member raid5");
    return EINVAL;
  }
  if (level == 1 && !(a->cur.g.level == 5 && n0 == 2 && n1 == 2)) {
    snprintf (err, errlen, "only a 2-member raid5 can become raid1");
    return EINVAL;
  }
  if (level == 0 && a->cur.g.level != 0) {
    snprintf (err, errlen, "reshape to raid0 would lose all redundancy");
    return EINVAL;
  }
  p->g0 = a->cur.g;
  if (raid_geom_init (&p->g1, level, layout, chunk, n1, err, errlen) < 0)
    return EINVAL;
  nbad = __builtin_popcount (array_bad_roles (a, &a->cur, NULL, NULL));
  if (nbad && tolerance_of (&p->g1) < tolerance_of (&p->g0)) {
    snprintf (err, errlen, "the array is degraded: a reshape must keep at least its "
              "redundancy (raid%d tolerates %d, the target %d)", p->g0.level,
              tolerance_of (&p->g0), tolerance_of (&p->g1));
    return EBUSY;
  }
  if (nbad > tolerance_of (&p->g1) || (nbad && n1 < n0)) {
    snprintf (err, errlen, "the array is degraded (%d unusable): the target could "
              "not keep its data", nbad);
    return EBUSY;
  }
  return 0;
}

/* The record could not be written to any member (the array has failed):
 * take back what persist_prepare changed in memory, keeping the event
 * count (it never goes back) and the faulty marks the commit made, so
 * that the caller can close the members it opened. */
static void
unprepare (struct raid_array *a, const struct raid_sb *saved)
{
  struct raid_sb now = a->sb;

  a->sb = *saved;
  a->sb.events = now.events;
  a->sb.utime_ns = now.utime_ns;
  for (int t = 0; t < (int) now.nmembers; t++) {
    bool faulty = atomic_load (&a->mem[t].state) == RAID_MEMBER_FAULTY;
    if (t >= (int) saved->nmembers || saved->members[t].state == SB_MEMBER_EMPTY) {
      if (now.members[t].state != SB_MEMBER_EMPTY && a->mem[t].m) {
        a->mem[t].m = NULL;              /* a new member: the caller closes it */
        atomic_store (&a->mem[t].state, RAID_MEMBER_MISSING);
      }
      continue;
    }
    if (faulty)
      a->sb.members[t].state = SB_MEMBER_FAULTY;
    else if (saved->members[t].state == SB_MEMBER_SPARE)
      atomic_store (&a->mem[t].state, RAID_MEMBER_SPARE);
  }
  array_update_health (a);
}

/* Persist the frozen record; the new members join with their roles. */
static int
persist_prepare (struct raid_array *a, const struct plan *p, struct member **ms,
                 const int *reuse, int nadd, char *err, size_t errlen)
{
  struct raid_sb *saved = malloc (sizeof *saved);
  int r;

  if (!saved) {
    snprintf (err, errlen, "out of memory");
    return ENOMEM;
  }
  pthread_mutex_lock (&a->sb_lock);
  *saved = a->sb;
  for (int i = 0; i < nadd; i++) {
    int t = reuse[i];
    if (t >= 0) {                          /* a spare of this array */
      a->sb.members[t].role = p->g0.raid_disks + i;
      a->sb.members[t].state = SB_MEMBER_IN_SYNC;
      atomic_store (&a->mem[t].state, RAID_MEMBER_IN_SYNC);
      continue;
    }
    for (int u = 0; u < (int) a->sb.nmembers && t < 0; u++)
      if (a->sb.members[u].state == SB_MEMBER_EMPTY && !a->mem[u].m)
        t = u;
    if (t < 0 && a->sb.nmembers < SB_MAX_MEMBERS)
      t = a->sb.nmembers++;
    if (t < 0) {
      unprepare (a, saved);
      pthread_mutex_unlock (&a->sb_lock);
      free (saved);
      snprintf (err, errlen, "the member table is full");
      return ENOSPC;
    }
    memset (&a->sb.members[t], 0, sizeof a->sb.members[t]);
    raid_uuid_generate (a->sb.members[t].uuid);
    a->sb.members[t].role = p->g0.raid_disks + i;
    a->sb.members[t].state = SB_MEMBER_IN_SYNC;
    a->mem[t].m = ms[i];
    atomic_store (&a->mem[t].errors, 0);
    atomic_store (&a->mem[t].state, RAID_MEMBER_IN_SYNC);
  }
  for (int t = 0; t < (int) a->sb.nmembers; t++) {
    struct sb_member_entry *e = &a->sb.members[t];
    if (e->state == SB_MEMBER_EMPTY)
      continue;
    if (e->role >= p->g0.raid_disks)       /* a new member: only the new layout */
      e->data_offset = e->new_data_offset = p->dir == SB_DIR_FORWARD
        ? a->cur.data_offset[0] - p->gap : a->cur.data_offset[0] + p->gap;
    else
      e->new_data_offset = p->dir == SB_DIR_FORWARD ? e->data_offset - p->gap
        : e->data_offset + p->gap;
  }
  a->sb.reshape_state = SB_RESHAPE_FROZEN;
  a->sb.reshape_direction = p->dir;
  a->sb.reshape_position = 0;
  a->sb.new_level = p->g1.level;
  a->sb.new_layout = p->g1.layout;
  a->sb.new_chunk = p->g1.chunk;
  a->sb.new_raid_devices = p->g1.raid_disks;
  a->sb.new_array_size = p->g1.data_disks > p->g0.data_disks ? p->cap1 : a->size;
  r = array_commit (a);
  if (r)
    unprepare (a, saved);
  else if (array_layout_from_sb (a, &a->next, 1, err, errlen) < 0)
    abort ();                              /* validated by validate_request */
  else {
    a->rdir = p->dir;
    a->boundary = p->dir == SB_DIR_FORWARD ? 0 : a->size;
    atomic_store (&a->reshaping, true);
  }
  pthread_mutex_unlock (&a->sb_lock);
  free (saved);
  if (r && !*err)
    snprintf (err, errlen, "cannot record the reshape: %s", raid_strerror (r));
  return r;
}

/* New members (not spares of this array) start with an empty ring. */
static int
wipe_added (struct member **ms, int n)
{
  int r = 0;
  for (int i = 0; i < n && !r; i++)
    if (ms[i])
      r = array_wipe_ring (ms[i]);
  return r;
}

int
raid_array_reshape (struct raid_array *a, const struct raid_reshape_req *req,
                    struct raid_status *plan, char *err, size_t errlen)
{
  struct member *ms[RAID_MAX_MEMBERS] = { NULL };
  int reuse[RAID_MAX_MEMBERS];
  struct plan p = { .win = a->test.reshape_window };
  uint64_t add_min;
  int r;

  *err = '\0';
  if (atomic_load (&a->reshaping)) {
    snprintf (err, errlen, "a reshape is already prepared (use start, freeze, or abort)");
    return EBUSY;
  }
  if (a->sync.action != RAID_SYNC_IDLE) {
    snprintf (err, errlen, "%s is in progress: wait for it or abort it first",
              raid_sync_action_name (a->sync.action));
    return EBUSY;
  }
  if (raid_array_health (a) == RAID_HEALTH_FAILED) {
    snprintf (err, errlen, "the array has failed");
    return EIO;
  }
  if (req->nadd > RAID_MAX_MEMBERS - a->cur.g.raid_disks) {
    snprintf (err, errlen, "too many members to add");
    return EINVAL;
  }
  /* Growing by more members than named: use the array's spares, as mdadm
   * --grow does. */
  if (req->raid_devices > a->cur.g.raid_disks + req->nadd) {
    static __thread const char *specs[RAID_MAX_MEMBERS];
    static __thread struct raid_reshape_req grown;
    int n = 0;
    for (int i = 0; i < req->nadd; i++)
      specs[n++] = req->add[i];
    for (int t = 0; t < (int) a->sb.nmembers &&
           n < req->raid_devices - a->cur.g.raid_disks; t++)
      if (a->mem[t].m && atomic_load (&a->mem[t].state) == RAID_MEMBER_SPARE)
        specs[n++] = member_spec (a->mem[t].m);
    grown = *req;
    grown.add = specs;
    grown.nadd = n;
    req = &grown;
  }
  if ((r = validate_request (a, req, &p, err, errlen)) != 0)
    return r;
  if ((r = open_added (a, req, ms, reuse, &add_min, err, errlen)) != 0)
    return r;
  if ((r = choose_plan (a, &p, add_min, err, errlen)) == 0 &&
      (r = wipe_added (ms, req->nadd)) != 0)
    snprintf (err, errlen, "cannot initialise the new members: %s", raid_strerror (r));
  for (int i = 0; r == 0 && i < req->nadd; i++)
    if (ms[i] && (r = member_start (ms[i])) != 0)
      snprintf (err, errlen, "%s: cannot start its I/O", req->add[i]);
  if (r == 0)
    r = persist_prepare (a, &p, ms, reuse, req->nadd, err, errlen);
  if (r) {
    for (int i = 0; i < req->nadd; i++)
      if (ms[i])
        member_close (ms[i]);
    return r;
  }
  raid_log (RAID_LOG_INFO, "reshape prepared: raid%d %s chunk %u x%d -> raid%d %s "
            "chunk %u x%d, moving %s (frozen)", p.g0.level, raid_layout_name (p.g0.layout),
            p.g0.chunk, p.g0.raid_disks, p.g1.level, raid_layout_name (p.g1.layout),
            p.g1.chunk, p.g1.raid_disks, p.dir == SB_DIR_FORWARD ? "forward" : "backward");
  r = sync_begin (a, RAID_SYNC_RESHAPE, -1, -1, 0, true, err, errlen);
  if (plan)
    raid_array_status (a, plan);
  return r;
}

/* ---------------------------------------------------------------------
 * The worker side (called by sync.c).
 */

/* Can the new layout be written and the old one read? */
int
reshape_check_start (struct raid_array *a, char *err, size_t errlen)
{
  uint32_t bad1 = array_bad_roles (a, &a->next, NULL, NULL);
  int nbad1 = __builtin_popcount (bad1);
  int nbad0 = __builtin_popcount (array_bad_roles (a, &a->cur, NULL, NULL));
  uint32_t added = 0;

  if (nbad1 > tolerance_of (&a->next.g) || nbad0 > tolerance_of (&a->cur.g)) {
    snprintf (err, errlen, "members the reshape needs are missing or faulty "
              "(%d of the new layout, %d of the old)", nbad1, nbad0);
    return ENODEV;
  }
  /* Before any data moved, every member the reshape adds must be there
   * (else it would start with less redundancy than it was prepared for;
   * abort and prepare again instead).  Once data moved, a lost member
   * within redundancy does not stop it. */
  for (int r = a->cur.g.raid_disks; r < a->next.g.raid_disks; r++)
    added |= 1u << r;
  if (!array_next_holds_data (a) && (bad1 & added)) {
    snprintf (err, errlen, "a member this reshape adds is missing or faulty; "
              "abort the reshape and prepare it again");
    return ENODEV;
  }
  return 0;
}

void
reshape_set_state (struct raid_array *a, bool running)
{
  pthread_mutex_lock (&a->sb_lock);
  if (a->sb.reshape_state != SB_RESHAPE_NONE &&
      a->sb.reshape_state != (running ? SB_RESHAPE_RUNNING : SB_RESHAPE_FROZEN)) {
    a->sb.reshape_state = running ? SB_RESHAPE_RUNNING : SB_RESHAPE_FROZEN;
    array_commit (a);
  }
  pthread_mutex_unlock (&a->sb_lock);
}

static int
flush_all (struct raid_array *a)
{
  struct mio mios[SB_MAX_MEMBERS];
  size_t n = 0;

  for (int t = 0; t < (int) a->sb.nmembers; t++)
    if (array_member_in_use (a, t))
      mios[n++] = (struct mio) { .m = a->mem[t].m, .op = MIO_FLUSH };
  if (mio_run (mios, n) == 0)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (mios[i].err)
      array_member_io_error (a, mios[i].m, mios[i].err, true, 0);
  return atomic_load (&a->health) == RAID_HEALTH_FAILED ? EIO : 0;
}

static void
set_position (struct raid_array *a, void *arg)
{
  a->sb.reshape_position = *(uint64_t *) arg;
}

int
reshape_step (struct raid_array *a, uint64_t *done, uint8_t **bufp)
{
  struct plan p;
  uint64_t lo, hi, pos;
  int err;

  plan_from_sb (a, &p);
  if (!next_window (&p, *done, &lo, &hi))
    return ENOSPC;                         /* impossible after prepare's walk */
  if (!*bufp && !(*bufp = raid_alloc_aligned (WIN_MAX + width (&p.g1))))
    return ENOMEM;

  window_claim (a, lo, hi);
  err = stripe_read (a, &a->cur, *bufp, hi - lo, lo);
  if (!err)
    err = stripe_write (a, &a->next, *bufp, hi - lo, lo, RAID_IO_RAW);
  pos = *done + (hi - lo);
  if (!err && a->journaled) {
    /* Logged writes of the window's rows in the old layout must never be
     * replayed once the new position is durable: their member bytes may
     * now belong to the new layout.  One commit empties the log and
     * records the position (after a flush of everything, in-flight
     * writes included). */
    err = journal_checkpoint_with (a, set_position, &pos);
    if (!err && atomic_load (&a->health) == RAID_HEALTH_FAILED)
      err = EIO;
  }
  else if (!err && !(err = flush_all (a))) {
    pthread_mutex_lock (&a->sb_lock);
    set_position (a, &pos);
    err = array_commit (a);
    pthread_mutex_unlock (&a->sb_lock);
  }
  if (!err)
    *done += hi - lo;
  window_release (a, err == 0, p.dir == SB_DIR_FORWARD ? hi : lo);
  return err;
}

/* All data moved: zero the new capacity, then switch layouts with no
 * request in flight. */
int
reshape_finish (struct raid_array *a)
{
  uint64_t size = a->size, newsize;
  char e[256];
  int err = 0;

  newsize = a->sb.new_array_size;
  window_claim (a, 0, UINT64_MAX);         /* drains every request */
  if (newsize > size)
    err = stripe_zero (a, &a->next, newsize - size, size, RAID_IO_RAW);
  if (!err && a->journaled)
    err = journal_checkpoint (a);
  if (!err)
    err = flush_all (a);
  if (!err && bitmap_enabled (a))
    bitmap_clean (a, true);
  if (err) {
    window_release (a, false, 0);
    return err;
  }
  pthread_mutex_lock (&a->sb_lock);
  for (int t = 0; t < (int) a->sb.nmembers; t++) {
    struct sb_member_entry *e2 = &a->sb.members[t];
    if (e2->state == SB_MEMBER_EMPTY)
      continue;
    e2->data_offset = e2->new_data_offset;
    if (e2->role >= a->next.g.raid_disks && e2->state != SB_MEMBER_FAULTY) {
      e2->role = -1;                       /* no longer used: a spare */
      e2->state = SB_MEMBER_SPARE;
      atomic_store (&a->mem[t].state, RAID_MEMBER_SPARE);
    }
  }
  a->sb.level = a->sb.new_level;
  a->sb.layout = a->sb.new_layout;
  a->sb.chunk = a->sb.new_chunk;
  a->sb.raid_disks = a->sb.new_raid_devices;
  a->sb.array_size = raid_max_u64 (newsize, size);
  {
    /* Component size of the new layout on the members. */
    uint64_t min = UINT64_MAX;
    for (int r = 0; r < a->next.g.raid_disks; r++) {
      struct member *m = layout_member (a, &a->next, r);
      if (m)
        min = raid_min_u64 (min, member_size (m) - a->next.data_offset[r]);
    }
    a->sb.component_size = raid_round_down (min, a->next.g.chunk);
  }
  a->sb.reshape_state = SB_RESHAPE_NONE;
  a->sb.reshape_position = 0;
  if (a->sb.resync_offset != UINT64_MAX) {
    /* An unclean stop during the reshape: rows written then in the new
     * layout may be inconsistent (bitmap and resync policies).  Resync
     * all of the new layout, whatever the bitmap says. */
    a->sb.resync_offset = 0;
    a->sb.flags |= SB_FLAG_RESYNC_ALL;
  }
  err = array_commit (a);
  if (err == 0) {
    a->cur = a->next;
    a->cur.id = 0;
    a->cur.rows = a->sb.component_size / a->cur.g.chunk;
    a->size = a->sb.array_size;
    atomic_store (&a->reshaping, false);
    a->journaled = journal_enabled (a);
    bitmap_fini (a);
    bitmap_init (a);
  }
  pthread_mutex_unlock (&a->sb_lock);
  array_update_health (a);
  window_release (a, false, 0);
  if (err == 0)
    raid_log (RAID_LOG_INFO, "reshape complete: raid%d %s chunk %u, %d members, %s",
              a->cur.g.level, raid_layout_name (a->cur.g.layout), a->cur.g.chunk,
              a->cur.g.raid_disks, raid_fmt_size (a->size, e, sizeof e));
  return err;
}

/* Abort a prepared reshape that has not moved data. */
int
reshape_abort (struct raid_array *a, char *err, size_t errlen)
{
  int r;

  pthread_mutex_lock (&a->sb_lock);
  if (a->sb.reshape_position != 0) {
    pthread_mutex_unlock (&a->sb_lock);
    snprintf (err, errlen, "data has already moved (%" PRIu64 " bytes): "
              "a reshape can only be frozen now", a->sb.reshape_position);
    return EBUSY;
  }
  for (int t = 0; t < (int) a->sb.nmembers; t++) {
    struct sb_member_entry *e = &a->sb.members[t];
    if (e->state == SB_MEMBER_EMPTY)
      continue;
    if (e->role >= a->cur.g.raid_disks && !a->mem[t].m) {
      memset (e, 0, sizeof *e);            /* added, but gone (lost its record) */
      e->state = SB_MEMBER_EMPTY;
      e->role = -1;
      atomic_store (&a->mem[t].state, RAID_MEMBER_MISSING);
    }
    else if (e->role >= a->cur.g.raid_disks) {
      e->role = -1;                        /* the members it added become spares */
      e->state = SB_MEMBER_SPARE;
      e->data_offset = e->new_data_offset = a->cur.data_offset[0];
      atomic_store (&a->mem[t].state, RAID_MEMBER_SPARE);
    }
    else
      e->new_data_offset = e->data_offset;
  }
  a->sb.reshape_state = SB_RESHAPE_NONE;
  atomic_store (&a->reshaping, false);     /* before the commit's health update */
  r = array_commit (a);
  if (r)
    atomic_store (&a->reshaping, true);
  pthread_mutex_unlock (&a->sb_lock);
  array_update_health (a);
  if (r)
    snprintf (err, errlen, "cannot record the abort: %s", raid_strerror (r));
  return r;
}

void
raid_array_set_test_hooks (struct raid_array *a, const struct raid_test_hooks *h)
{
  a->test = *h;
}

void
reshape_status (struct raid_array *a, struct raid_status *st)
{
  pthread_mutex_lock (&a->sb_lock);
  st->has_reshape = a->sb.reshape_state != SB_RESHAPE_NONE;
  if (st->has_reshape) {
    st->reshape.running = a->sb.reshape_state == SB_RESHAPE_RUNNING;
    st->reshape.position = a->sb.reshape_position;
    st->reshape.total = a->sb.array_size;
    st->reshape.direction = a->sb.reshape_direction;
    st->reshape.boundary = a->sb.reshape_direction == SB_DIR_FORWARD
      ? a->sb.reshape_position : a->sb.array_size - a->sb.reshape_position;
    st->reshape.from = (struct raid_geom_status) { a->cur.g.level, a->cur.g.layout,
      a->cur.g.chunk, a->cur.g.raid_disks };
    st->reshape.to = (struct raid_geom_status) { (int) a->sb.new_level,
      (int) a->sb.new_layout, a->sb.new_chunk, (int) a->sb.new_raid_devices };
  }
  pthread_mutex_unlock (&a->sb_lock);
}
