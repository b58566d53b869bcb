/* nbdkit-raid: management requests — one path for every state change.
 *
 * THEORY
 *
 * What it owns.  The management lock (a->mgmt_lock) and the requests of
 * array.h's management section: fail, remove, add, replace, check, repair,
 * resize, set, reshape (prepare), start, freeze, abort, wait.
 *
 * One path.  Every request that changes state holds the management lock
 * from its first check to its last commit, and so does the sync worker when
 * it picks or ends a job (sync.h).  Requests from any number of control
 * connections therefore run one after another: each is validated against
 * the state left by the previous one, two conflicting requests never both
 * succeed (the later one finds the state changed and is refused with
 * EBUSY), and no request can observe another half done.  Inside a request
 * the order is always
 *     management lock  >  router claim (if it changes where bytes live)
 *     >  state lock: validate (again, if slow work ran in between), change,
 *        commit
 * so that status, which reads under the state lock, sees all of a change or
 * none of it.  Slow preparations (opening an NBD member, wiping its ring)
 * run with only the management lock held; what they validated is validated
 * again under the state lock before the commit, because a member can fail
 * at any time (the I/O path records faults under the state lock without the
 * management lock: it must never wait for a management request).
 *
 * Refusals.  A refused request returns an errno value with a message and
 * changes nothing: not the state, not the event count.  A request never
 * leaves a half-applied state: its changes are made, and committed, in one
 * state-lock section.
 *
 * Waits.  A request waits for the management lock (bounded by the request
 * before it), for a router claim (bounded by the requests in flight), for
 * the worker's current batch (freeze), and for its own member I/O.  `wait`
 * and `status` take only the state lock.
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
#include "sync.h"
#include "util.h"

#define MGMT_BEGIN(a) pthread_mutex_lock (&(a)->mgmt_lock)
#define MGMT_END(a) pthread_mutex_unlock (&(a)->mgmt_lock)

static const struct layout *
cur_layout (struct raid_array *a)
{
  return router_layout (&a->router, LAYOUT_CUR);
}

/* Roles of the layouts holding data that have no usable member, at most
 * (the worse of the two layouts). */
static int
unusable_roles (struct raid_array *a)
{
  int n = __builtin_popcount (state_bad_roles (a, cur_layout (a), NULL, NULL));

  if (state_next_holds_data (a))
    n = raid_max_u64 (n, __builtin_popcount (
          state_bad_roles (a, router_layout (&a->router, LAYOUT_NEXT), NULL, NULL)));
  return n;
}

/* ---- fail ---- */

static int
fail_locked (struct raid_array *a, const char *name, char *err, size_t errlen)
{
  int t, st, nbad;

  if ((t = state_find_member (a, name, err, errlen)) < 0)
    return ENODEV;
  st = atomic_load (&a->mem[t].state);
  if (st == RAID_MEMBER_FAULTY || st == RAID_MEMBER_MISSING || st == RAID_MEMBER_STALE) {
    snprintf (err, errlen, "%s is already %s", name, raid_member_state_name (st));
    return EINVAL;
  }
  nbad = unusable_roles (a);
  if (st == RAID_MEMBER_IN_SYNC && a->sb.members[t].role >= 0 &&
      nbad + 1 > layout_tolerance (cur_layout (a))) {
    snprintf (err, errlen, "failing %s would fail the array: raid%d tolerates %d "
              "unusable member(s) and %d already are", name, cur_layout (a)->g.level,
              layout_tolerance (cur_layout (a)), nbad);
    return EBUSY;
  }
  member_transition (a, t, RAID_MEMBER_FAULTY, a->sb.members[t].role, "failed by request");
  state_commit (a);
  return 0;
}

int
raid_array_fail (struct raid_array *a, const char *name, char *err, size_t errlen)
{
  int r;

  MGMT_BEGIN (a);
  pthread_mutex_lock (&a->state_lock);
  r = fail_locked (a, name, err, errlen);
  pthread_mutex_unlock (&a->state_lock);
  if (r == 0)
    sync_next_job (a);                     /* a spare takes over at once */
  MGMT_END (a);
  return r;
}

/* ---- remove ---- */

static int
may_remove (struct raid_array *a, const char *name, int *tp, char *err, size_t errlen)
{
  int t, st;

  if ((t = state_find_member (a, name, err, errlen)) < 0)
    return ENODEV;
  st = atomic_load (&a->mem[t].state);
  if (st != RAID_MEMBER_FAULTY && st != RAID_MEMBER_SPARE &&
      st != RAID_MEMBER_MISSING && st != RAID_MEMBER_STALE) {
    snprintf (err, errlen, "%s is %s: only faulty or spare members can be removed "
              "(fail it first)", name, raid_member_state_name (st));
    return EBUSY;
  }
  *tp = t;
  return 0;
}

int
raid_array_remove (struct raid_array *a, const char *name, char *err, size_t errlen)
{
  int t, r;

  MGMT_BEGIN (a);
  router_claim (&a->router, 0, ROUTER_ALL);      /* it may hold a role */
  pthread_mutex_lock (&a->state_lock);
  if ((r = may_remove (a, name, &t, err, errlen)) == 0) {
    for (int id = LAYOUT_CUR; id <= (router_two (&a->router) ? LAYOUT_NEXT : LAYOUT_CUR); id++)
      for (int role = 0; role < router_layout (&a->router, id)->g.raid_disks; role++)
        if (router_layout (&a->router, id)->slot[role] == t)
          router_bind_role (&a->router, id, role, -1, 0);
    member_uninstall (a, t);
    state_commit (a);
  }
  pthread_mutex_unlock (&a->state_lock);
  router_release (&a->router);
  MGMT_END (a);
  return r;
}

/* ---- add ---- */

/* Check a new member before it joins: large enough, not in any array. */
static int
vet_new_member (struct raid_array *a, struct member *m, const char *spec,
                char *err, size_t errlen)
{
  uint64_t need = layout_data_offset (cur_layout (a)) + a->sb.component_size;
  struct raid_sb sb;
  char e[256], u[RAID_UUID_STRLEN];
  int r;

  if (member_size (m) < need) {
    snprintf (err, errlen, "%s is too small (%" PRIu64 " bytes, needs at least %" PRIu64 ")",
              spec, member_size (m), need);
    return ENOSPC;
  }
  r = sb_read_newest (m, &sb, e, sizeof e);
  if (r == 0) {
    raid_uuid_format (sb.array_uuid, u);
    snprintf (err, errlen, "%s already belongs to array %s%s", spec, u,
              memcmp (sb.array_uuid, a->sb.array_uuid, RAID_UUID_LEN) == 0
              ? " (this one)" : "");
    return EBUSY;
  }
  if (r != ENOENT) {
    snprintf (err, errlen, "%s: %s", spec, r == EPROTONOSUPPORT ? e : raid_strerror (r));
    return r == EPROTONOSUPPORT ? EBUSY : EIO;
  }
  return 0;
}

/* Open, vet and initialise a new member (no lock but management's). */
static struct member *
open_new_member (struct raid_array *a, const char *spec, int *rp, char *err, size_t errlen)
{
  struct member *m;
  char e[512];
  int r;

  if (!(m = member_open (spec, false, e, sizeof e))) {
    *rp = errno ? errno : ENOENT;
    snprintf (err, errlen, "%s", e);
    return NULL;
  }
  if ((r = identity_check_member (a, m, err, errlen)) == 0 &&
      (r = vet_new_member (a, m, spec, err, errlen)) == 0 &&
      (r = sb_wipe_ring (m)) != 0)
    snprintf (err, errlen, "%s: cannot write its superblock: %s", spec, raid_strerror (r));
  if (r == 0 && (r = member_start (m)) != 0)
    snprintf (err, errlen, "%s: cannot start its I/O", spec);
  if (r) {
    member_close (m);
    *rp = r;
    return NULL;
  }
  return m;
}

int
raid_array_add (struct raid_array *a, const char *spec, char *err, size_t errlen)
{
  struct member *m = NULL;
  char e[512];
  int t, r = 0;

  MGMT_BEGIN (a);
  pthread_mutex_lock (&a->state_lock);
  if (state_find_member (a, spec, e, sizeof e) >= 0) {
    snprintf (err, errlen, "%s is already a member of this array", spec);
    r = EEXIST;
  }
  pthread_mutex_unlock (&a->state_lock);
  if (r == 0 && (m = open_new_member (a, spec, &r, err, errlen)) != NULL) {
    pthread_mutex_lock (&a->state_lock);
    if ((t = member_free_slot (a)) < 0) {
      snprintf (err, errlen, "the member table is full (%d entries)", SB_MAX_MEMBERS);
      r = ENOSPC;
    }
    else {
      uint64_t off = layout_data_offset (cur_layout (a));
      member_install (a, t, m, RAID_MEMBER_SPARE, -1, off, off);
      m = NULL;
      if ((r = state_commit (a)) != 0)
        snprintf (err, errlen, "cannot record the new member: %s", raid_strerror (r));
    }
    pthread_mutex_unlock (&a->state_lock);
    member_close (m);
  }
  if (r == 0)
    sync_next_job (a);                     /* a degraded array recovers onto it */
  MGMT_END (a);
  return r;
}

/* ---- replace ---- */

/* The spare to replace onto: `with` (a spare of this array) or the first. */
static int
pick_spare (struct raid_array *a, const char *with, char *err, size_t errlen)
{
  if (with) {
    int s = state_find_member (a, with, err, errlen);
    if (s >= 0 && atomic_load (&a->mem[s].state) != RAID_MEMBER_SPARE) {
      snprintf (err, errlen, "%s is not a spare", with);
      return -1;
    }
    return s;
  }
  for (int s = 0; s < (int) a->sb.nmembers; s++)
    if (a->mem[s].m && atomic_load (&a->mem[s].state) == RAID_MEMBER_SPARE)
      return s;
  snprintf (err, errlen, "no spare to replace onto: add one first");
  return -1;
}

static int
replace_locked (struct raid_array *a, const char *member, const char *with,
                char *err, size_t errlen)
{
  int t, s, role;

  if (router_two (&a->router)) {
    snprintf (err, errlen, "a reshape is in progress");
    return EBUSY;
  }
  if (a->sync.state != SYNC_IDLE) {
    snprintf (err, errlen, "%s is in progress: wait for it or abort it first",
              raid_sync_action_name (a->sync.job.ops->action));
    return EBUSY;
  }
  if ((t = state_find_member (a, member, err, errlen)) < 0)
    return ENODEV;
  if (atomic_load (&a->mem[t].state) != RAID_MEMBER_IN_SYNC || a->sb.members[t].role < 0) {
    snprintf (err, errlen, "%s is %s: only a working member can be replaced", member,
              raid_member_state_name (atomic_load (&a->mem[t].state)));
    return EBUSY;
  }
  if ((s = pick_spare (a, with, err, errlen)) < 0)
    return ENODEV;
  role = a->sb.members[t].role;
  a->sb.members[s].data_offset = a->sb.members[s].new_data_offset =
    cur_layout (a)->data_offset[role];
  atomic_store (&a->rb_row, 0);
  member_transition (a, s, RAID_MEMBER_REBUILDING, -1, "replace target");
  router_set_mirror (&a->router, role, s);       /* from here every write reaches s */
  state_commit (a);
  raid_log (RAID_LOG_INFO, "replacing %s (role %d) with %s", member, role,
            member_spec (a->mem[s].m));
  return sync_begin (a, &(struct sync_job) { .ops = &sync_ops_replace, .target_slot = s,
                       .target_role = role, .source_slot = t }, 0, false, err, errlen);
}

int
raid_array_replace (struct raid_array *a, const char *member, const char *with,
                    char *err, size_t errlen)
{
  int r;

  MGMT_BEGIN (a);
  router_claim (&a->router, 0, ROUTER_ALL);      /* the mirror changes routing */
  pthread_mutex_lock (&a->state_lock);
  r = replace_locked (a, member, with, err, errlen);
  pthread_mutex_unlock (&a->state_lock);
  router_release (&a->router);
  MGMT_END (a);
  return r;
}

/* ---- check, repair, set ---- */

int
raid_array_check (struct raid_array *a, bool repair, char *err, size_t errlen)
{
  int r;

  MGMT_BEGIN (a);
  pthread_mutex_lock (&a->state_lock);
  if (cur_layout (a)->g.level < 4 || router_two (&a->router)) {
    snprintf (err, errlen, router_two (&a->router) ? "a reshape is in progress"
              : "raid%d has no parity to check", cur_layout (a)->g.level);
    r = router_two (&a->router) ? EBUSY : EINVAL;
  }
  else if (raid_array_health (a) != RAID_HEALTH_OPTIMAL) {
    snprintf (err, errlen, "array is %s: nothing to compare parity with",
              raid_health_name (raid_array_health (a)));
    r = EBUSY;
  }
  else
    r = sync_begin (a, &(struct sync_job) {
                      .ops = repair ? &sync_ops_repair : &sync_ops_check,
                      .target_slot = -1, .target_role = -1, .source_slot = -1 },
                    0, false, err, errlen);
  pthread_mutex_unlock (&a->state_lock);
  MGMT_END (a);
  return r;
}

int
raid_array_set_speed (struct raid_array *a, const uint64_t *min, const uint64_t *max,
                      char *err, size_t errlen)
{
  struct sync_ctl *s = &a->sync;
  uint64_t nmin, nmax;
  int r = 0;

  pthread_mutex_lock (&a->state_lock);
  nmin = min ? *min : s->speed_min;
  nmax = max ? *max : s->speed_max;
  if (!min && nmax && nmin > nmax)
    nmin = nmax;                         /* a lower limit alone lowers the floor */
  if (nmax && nmin > nmax) {
    snprintf (err, errlen, "speed_min (%" PRIu64 ") is above speed_max (%" PRIu64 ")",
              nmin, nmax);
    r = EINVAL;
  }
  else {
    s->speed_min = nmin;
    s->speed_max = nmax;
    pthread_cond_broadcast (&a->changed);   /* cuts a throttle pause short */
  }
  pthread_mutex_unlock (&a->state_lock);
  return r;
}

/* ---- resize ---- */

static int
may_resize (struct raid_array *a, uint64_t size, char *err, size_t errlen)
{
  const struct layout *L = cur_layout (a);
  uint64_t cap = L->g.level == 1 ? a->sb.component_size
    : a->sb.component_size / L->g.chunk * L->g.stripe_width;

  if (router_two (&a->router)) {
    snprintf (err, errlen, "a reshape is in progress: resize before or after it");
    return EBUSY;
  }
  if (size == 0 || size > cap) {
    snprintf (err, errlen, "size %" PRIu64 " is outside 1..%" PRIu64
              " (what the members hold in this geometry)", size, cap);
    return size == 0 ? EINVAL : ENOSPC;
  }
  return 0;
}

/* Rows past the old size may hold anything (bytes a shrink cut off, or a
 * reshape left behind) with parity that does not match: zero them,
 * durably, before exporting them.  Nobody addresses them yet; the claim
 * keeps tickets out all the same. */
static int
zero_new_space (struct raid_array *a, uint64_t old, uint64_t size)
{
  int r;

  router_claim (&a->router, old, ROUTER_ALL);
  r = stripe_zero (a, cur_layout (a), size - old, old, RAID_IO_RAW);
  router_release (&a->router);
  return r ? r : cons_checkpoint (a, NULL, NULL);   /* durable, no older log */
}

int
raid_array_resize (struct raid_array *a, uint64_t size, char *err, size_t errlen)
{
  uint64_t old = atomic_load (&a->size);
  int r;

  MGMT_BEGIN (a);
  pthread_mutex_lock (&a->state_lock);
  r = may_resize (a, size, err, errlen);
  pthread_mutex_unlock (&a->state_lock);
  if (r == 0 && size > old && (r = zero_new_space (a, old, size)) != 0)
    snprintf (err, errlen, "cannot zero the new space: %s", raid_strerror (r));
  if (r == 0) {
    pthread_mutex_lock (&a->state_lock);
    a->sb.array_size = size;
    if ((r = state_commit (a)) == 0)
      atomic_store (&a->size, size);
    else
      snprintf (err, errlen, "cannot record the new size: %s", raid_strerror (r));
    pthread_mutex_unlock (&a->state_lock);
  }
  MGMT_END (a);
  return r;
}

/* ---- reshape, start, freeze, abort, wait ---- */

int
raid_array_reshape (struct raid_array *a, const struct raid_reshape_req *req,
                    struct raid_status *plan, char *err, size_t errlen)
{
  int r;

  MGMT_BEGIN (a);
  r = reshape_prepare (a, req, err, errlen);
  MGMT_END (a);
  if (r == 0 && plan)
    raid_array_status (a, plan);
  return r;
}

static int
start_locked (struct raid_array *a, char *err, size_t errlen)
{
  struct sync_ctl *s = &a->sync;
  int r;

  if (s->state != SYNC_FROZEN) {
    snprintf (err, errlen, s->state == SYNC_IDLE
              ? "nothing is prepared or frozen to start" : "already running");
    return s->state == SYNC_IDLE ? EINVAL : EBUSY;
  }
  if (s->job.ops->may_start && (r = s->job.ops->may_start (a, &s->job, err, errlen)))
    return r;
  return sync_transition (a, SYNC_EV_START, NULL, "started by request");
}

int
raid_array_start_action (struct raid_array *a, char *err, size_t errlen)
{
  int r;

  MGMT_BEGIN (a);
  pthread_mutex_lock (&a->state_lock);
  r = start_locked (a, err, errlen);
  pthread_mutex_unlock (&a->state_lock);
  MGMT_END (a);
  return r;
}

int
raid_array_freeze (struct raid_array *a, char *err, size_t errlen)
{
  struct sync_ctl *s = &a->sync;
  int r = 0;

  MGMT_BEGIN (a);
  pthread_mutex_lock (&a->state_lock);
  if (s->state == SYNC_IDLE) {
    snprintf (err, errlen, "no action is running");
    r = EINVAL;
  }
  else {
    if (s->state == SYNC_RUNNING)
      sync_transition (a, SYNC_EV_FREEZE, NULL, "frozen by request");
    sync_wait_batch (a);                   /* the worker leaves its batch */
    if (s->state == SYNC_FROZEN)
      s->job.ops->checkpoint (a, &s->job); /* the position is durable */
  }
  pthread_mutex_unlock (&a->state_lock);
  MGMT_END (a);
  return r;
}

int
raid_array_abort (struct raid_array *a, char *err, size_t errlen)
{
  struct sync_ctl *s = &a->sync;
  struct sync_job j;
  int r = 0;

  MGMT_BEGIN (a);
  pthread_mutex_lock (&a->state_lock);
  j = s->job;
  if (s->state == SYNC_IDLE) {
    snprintf (err, errlen, "nothing to abort");
    r = EINVAL;
  }
  else if (j.ops == &reshape_sync_ops && s->state != SYNC_FROZEN) {
    snprintf (err, errlen, "the reshape is running: freeze it first");
    r = EBUSY;
  }
  else if (j.ops != &reshape_sync_ops && !j.ops->abortable) {
    snprintf (err, errlen, "%s cannot be aborted (freeze it instead)",
              raid_sync_action_name (j.ops->action));
    r = EBUSY;
  }
  else if (j.ops != &reshape_sync_ops) {
    sync_transition (a, SYNC_EV_ABORT, NULL, "aborted by request");
    sync_wait_batch (a);
  }
  pthread_mutex_unlock (&a->state_lock);
  if (r == 0 && j.ops == &reshape_sync_ops)
    r = reshape_abort (a, err, errlen);
  else if (r == 0 && j.ops->stop)
    j.ops->stop (a, &j);
  if (r == 0)
    sync_next_job (a);                     /* what the array owes next */
  MGMT_END (a);
  return r;
}

/* Nothing runs, and the worker has looked at the latest change (so no
 * owed job is about to begin); or a job is frozen (state lock held). */
static bool
settled (struct raid_array *a)
{
  struct sync_ctl *s = &a->sync;

  return s->stop || !s->started || s->state == SYNC_FROZEN ||
    (s->state == SYNC_IDLE && s->seen_gen == a->state_gen);
}

int
raid_array_wait (struct raid_array *a, double timeout_s)
{
  uint64_t deadline = raid_now_mono_ns () + (uint64_t) (timeout_s * 1e9);
  int r;

  pthread_mutex_lock (&a->state_lock);
  while (!settled (a)) {
    uint64_t now = raid_now_mono_ns ();
    struct timespec ts;
    if (now >= deadline)
      break;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (deadline - now) / 1000000000;
    ts.tv_nsec += (deadline - now) % 1000000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait (&a->changed, &a->state_lock, &ts);   /* any change */
  }
  r = settled (a);
  pthread_mutex_unlock (&a->state_lock);
  return r;
}
