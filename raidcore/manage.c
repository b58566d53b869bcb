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
#include "manage.h"
#include "missed.h"
#include "bitmap.h"
#include "consistency.h"
#include "reshape.h"
#include "signature.h"
#include "stripe.h"
#include "sync.h"
#include "util.h"

#define MGMT_BEGIN(a) pthread_mutex_lock (&(a)->mgmt_lock)
#define MGMT_END(a) pthread_mutex_unlock (&(a)->mgmt_lock)

/* A read-only array changes nothing: every state-changing request is
 * refused with EROFS before it looks at anything. */
#define REFUSE_READONLY(a, err, errlen) do {                            \
    if ((a)->readonly) {                                                \
      snprintf ((err), (errlen), "the array is served read-only");      \
      return EROFS;                                                     \
    }                                                                   \
  } while (0)

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

  if ((t = state_find_listed (a, name, err, errlen)) < 0)
    return ENODEV;
  st = atomic_load (&a->mem[t].state);
  if (st == RAID_MEMBER_FAULTY) {
    snprintf (err, errlen, "%s is already %s", name, raid_member_state_name (st));
    return EINVAL;
  }
  nbad = unusable_roles (a);
  if (st == RAID_MEMBER_IN_SYNC && a->sb.members[t].role >= 0 &&   /* missing and
                                           stale ones are unusable already */
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

  REFUSE_READONLY (a, err, errlen);

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

/* The member `remove` names: as `fail` finds it, except that a member in
 * use yields to an absent one listed with exactly that spec (a member
 * wiped and added back, rebuilt into its role, leaves the entry it had,
 * which only remove can take out); a hint cut to its tail is no proof. */
static int
may_remove (struct raid_array *a, const char *name, int *tp, char *err, size_t errlen)
{
  int t, u, st;

  if ((t = state_find_listed (a, name, err, errlen)) < 0)
    return ENODEV;
  if (state_member_in_use (a, t) && atomic_load (&a->mem[t].state) != RAID_MEMBER_SPARE &&
      (u = state_find_absent (a, name, true)) >= 0)
    t = u;
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

  REFUSE_READONLY (a, err, errlen);

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

/* What `add` finds on a member it opened. */
enum found {
  FOUND_BLANK,                   /* no record of this array: a new spare */
  FOUND_OURS_BACK,               /* an absent member of a role: it rejoins */
  FOUND_OURS_MOVED,              /* the same, while its old spec's connection
                                    is still kept (an NBD member away): it
                                    rejoins under the new spec */
  FOUND_OURS_GONE,               /* ours, no longer in the table: a new spare */
  FOUND_REFUSED,
};

/* Read m's newest record and decide: blank (or ours but no longer in the
 * table: a member removed or replaced earlier) joins as a new spare; ours
 * and absent from its role rejoins (*tp its slot), also when the member
 * it was is still open under another spec, missing (an NBD export that
 * moved to another address: the member is who its record says, not
 * where it was) — when its record is no newer than the array's
 * (state_record_names, as for a member back at its address) and it is
 * large enough for its entry; anything else is refused with a message.
 * State lock held. */
/* Whether m, whose record own names member t of this array, may take t
 * back (see classify); else false with a message.  State lock held. */
static bool
may_take_back (struct raid_array *a, struct member *m, int t, const struct raid_sb *own,
               const char *spec, char *err, size_t errlen)
{
  char why[256];

  if (!state_record_names (a, t, own, why, sizeof why) ||
      sb_check_member_size (&a->sb, &a->sb.members[t], member_size (m), why,
                            sizeof why) < 0) {
    snprintf (err, errlen, "%s: %s: refused", spec, why);
    return false;
  }
  return true;
}

static enum found
classify (struct raid_array *a, struct member *m, const char *spec, int *tp,
          struct raid_sb *own, char *err, size_t errlen)
{
  char e[256], u[RAID_UUID_STRLEN];
  int r = sb_read_newest (m, own, e, sizeof e);

  *tp = -1;
  if (r == ENOENT)
    return FOUND_BLANK;
  if (r != 0) {
    snprintf (err, errlen, "%s: %s", spec, r == EPROTONOSUPPORT ? e : raid_strerror (r));
    return FOUND_REFUSED;
  }
  raid_uuid_format (own->array_uuid, u);
  if (memcmp (own->array_uuid, a->sb.array_uuid, RAID_UUID_LEN) != 0) {
    snprintf (err, errlen, "%s already belongs to array %s (not this one)", spec, u);
    return FOUND_REFUSED;
  }
  for (int t = 0; t < (int) a->sb.nmembers; t++) {
    int st = atomic_load (&a->mem[t].state);
    if (st == STATE_EMPTY ||
        memcmp (a->sb.members[t].uuid, own->member_uuid, RAID_UUID_LEN) != 0)
      continue;
    *tp = t;
    if ((st == RAID_MEMBER_MISSING || st == RAID_MEMBER_STALE) && !a->mem[t].m &&
        a->sb.members[t].role >= 0)
      return may_take_back (a, m, t, own, spec, err, errlen) ? FOUND_OURS_BACK
                                                              : FOUND_REFUSED;
    if (st == RAID_MEMBER_MISSING && a->mem[t].m && a->sb.members[t].role >= 0)
      return may_take_back (a, m, t, own, spec, err, errlen) ? FOUND_OURS_MOVED
                                                              : FOUND_REFUSED;
    snprintf (err, errlen, "%s is already a member of this array (%s%s)", spec,
              raid_member_state_name (st), st == RAID_MEMBER_FAULTY ||
              (st == RAID_MEMBER_MISSING && a->sb.members[t].role < 0)
              ? ": remove it first, then add it again" : "");
    return FOUND_REFUSED;
  }
  return FOUND_OURS_GONE;
}

/* A new member (blank, or a former member of this array: either may have
 * been put to another use since): large enough; holding no foreign
 * signature, unless force (signature.h: the probe reads it, before
 * anything is written; with force the signatures' magic bytes are
 * erased); its ring wiped (no earlier record may resurface).  ours: it
 * carries this array's superblock (signature_refuse).  No lock but
 * management's. */
static int
init_new_member (struct raid_array *a, struct member *m, const char *spec,
                 bool force, bool ours, char *err, size_t errlen)
{
  uint64_t need = layout_data_offset (cur_layout (a)) + a->sb.component_size;
  struct raid_create_sigs sigs = { .what = "" };
  int r;

  if (member_size (m) < need) {
    snprintf (err, errlen, "%s is too small (%" PRIu64 " bytes, needs at least %" PRIu64 ")",
              spec, member_size (m), need);
    return ENOSPC;
  }
  if ((r = signature_refuse (m, spec, force, ours, &sigs, err, errlen)) != 0 ||
      (r = signature_erase (m, spec, &sigs, err, errlen)) != 0)
    return r;
  if ((r = sb_wipe_ring (m)) != 0)
    snprintf (err, errlen, "%s: cannot write its superblock: %s", spec, raid_strerror (r));
  return r;
}

/* Install a new spare, or give a returning member back its slot (state
 * lock held).  0 or an errno. */
static int
join (struct raid_array *a, struct member *m, enum found f, int t,
      const struct raid_sb *own, char *err, size_t errlen)
{
  uint64_t off = layout_data_offset (cur_layout (a));

  if (f == FOUND_OURS_MOVED) {
    if (atomic_load (&a->mem[t].state) != RAID_MEMBER_MISSING || !a->mem[t].m) {
      snprintf (err, errlen, "%s: its member came back meanwhile", member_spec (m));
      return EBUSY;
    }
    member_retire (a, a->mem[t].m);        /* kept open: the watcher may be
                                              trying it, I/O may hold it */
    f = FOUND_OURS_BACK;
  }
  if (f == FOUND_OURS_BACK) {
    a->mem[t].m = m;
    missed_judge_member (a, t, own);
    sb_set_spec_hint (&a->sb.members[t], member_spec (m));
    if (atomic_load (&a->mem[t].state) == RAID_MEMBER_MISSING)
      member_transition (a, t, RAID_MEMBER_STALE, a->sb.members[t].role, "it is back");
    return 0;                              /* the worker resyncs it */
  }
  if ((t = member_free_slot (a)) < 0) {
    snprintf (err, errlen, "the member table is full (%d entries)", SB_MAX_MEMBERS);
    return ENOSPC;
  }
  member_install (a, t, m, RAID_MEMBER_SPARE, -1, off, off);
  return 0;
}

/* The member spec names for `add` (member_open_joining), unless it is in
 * the table already.  NULL with *rp and a message. */
static struct member *
add_open (struct raid_array *a, const char *spec, bool *retired, int *rp,
          char *err, size_t errlen)
{
  struct member *m;
  char e[512];
  bool in;
  int t;

  pthread_mutex_lock (&a->state_lock);
  in = (t = state_find_member (a, spec, e, sizeof e)) >= 0 && a->mem[t].m;
  pthread_mutex_unlock (&a->state_lock);
  if (in) {
    snprintf (err, errlen, "%s is already a member of this array", spec);
    *rp = EEXIST;
    return NULL;
  }
  if (!(m = member_open_joining (a, spec, retired, err, errlen)))
    *rp = errno;
  return m;
}

/* A member that moved (FOUND_OURS_MOVED): the server at its old address
 * may be alive (stalled on its storage, or cut off by a proxy or a route)
 * and still hold writes for it that it would apply later, over regions
 * the rejoin has rewritten since, when both addresses reach the same
 * storage.  Nothing the array sees tells that server gone from one that
 * is only cut off, so only force (the operator says that server is
 * stopped) takes a member that moved.  0 or EBUSY with a message.
 * Management lock held. */
static int
old_address_fenced (struct raid_array *a, int t, const char *spec, bool force,
                    char *err, size_t errlen)
{
  struct member *old;

  if (force)
    return 0;
  pthread_mutex_lock (&a->state_lock);
  old = a->mem[t].m;
  pthread_mutex_unlock (&a->state_lock);
  snprintf (err, errlen, "%s is member %s, which moved: the server at its old address "
            "may still hold writes for it that it would apply later; make sure that "
            "server is stopped, then add it with force", spec,
            old ? member_spec (old) : "?");
  return EBUSY;
}

/* Classify, initialise and join (no lock but management's); rejoin_only:
 * only an absent member of this array may join; force: a new one may hold
 * a foreign signature, a moved one may leave its old server unfenced.
 * *taken: m belongs to the array now (also when the commit failed: then
 * no member could be written and the array has failed). */
static int
add_join (struct raid_array *a, struct member *m, const char *spec,
          struct raid_sb *own, bool rejoin_only, bool force, bool *taken,
          char *err, size_t errlen)
{
  enum found f;
  int t, r;

  if ((r = identity_check_member (a, raid_array_size (a), m, err, errlen)) != 0)
    return r;                              /* the array itself */
  pthread_mutex_lock (&a->state_lock);
  f = classify (a, m, spec, &t, own, err, errlen);
  pthread_mutex_unlock (&a->state_lock);
  if (f == FOUND_REFUSED)
    return EBUSY;
  if (rejoin_only && f != FOUND_OURS_BACK && f != FOUND_OURS_MOVED) {
    snprintf (err, errlen, "%s is not an absent member of this array: not used", spec);
    return ENODEV;
  }
  if (f == FOUND_OURS_MOVED && (r = old_address_fenced (a, t, spec, force, err, errlen)))
    return r;
  if ((f == FOUND_BLANK || f == FOUND_OURS_GONE) &&
      (r = init_new_member (a, m, spec, force, f == FOUND_OURS_GONE, err, errlen)) != 0)
    return r;
  if ((r = member_start (m)) != 0) {
    snprintf (err, errlen, "%s: cannot start its I/O", spec);
    return r;
  }
  pthread_mutex_lock (&a->state_lock);
  /* Nothing else joins meanwhile (management lock): the slot is free. */
  if ((r = join (a, m, f, t, own, err, errlen)) == 0) {
    *taken = true;
    if ((r = state_commit (a)) != 0)
      snprintf (err, errlen, "cannot record the member: %s", raid_strerror (r));
  }
  pthread_mutex_unlock (&a->state_lock);
  return r;
}

static int
add_spec (struct raid_array *a, const char *spec, bool rejoin_only, bool force,
          char *err, size_t errlen)
{
  struct raid_sb *own;
  struct member *m;
  bool retired = false, taken = false;
  int r;

  REFUSE_READONLY (a, err, errlen);
  own = malloc (sizeof *own);
  r = own ? 0 : ENOMEM;

  MGMT_BEGIN (a);
  if (r == 0 && (m = add_open (a, spec, &retired, &r, err, errlen)) != NULL &&
      (r = add_join (a, m, spec, own, rejoin_only, force, &taken, err, errlen)) != 0 &&
      !taken)
    member_close_joining (a, m, retired);
  free (own);
  if (r == 0)
    sync_next_job (a);                     /* recovery onto it, or its rejoin */
  MGMT_END (a);
  return r;
}

int
raid_array_add (struct raid_array *a, const char *spec, bool force, char *err,
                size_t errlen)
{
  return add_spec (a, spec, false, force, err, errlen);
}

int
manage_rejoin_spec (struct raid_array *a, const char *spec, char *err, size_t errlen)
{
  return add_spec (a, spec, true, false, err, errlen);
}

int
manage_member_back (struct raid_array *a, int t, struct member *m,
                    const struct raid_sb *own)
{
  int r = ESTALE;

  MGMT_BEGIN (a);
  pthread_mutex_lock (&a->state_lock);
  if (atomic_load (&a->mem[t].state) == RAID_MEMBER_MISSING && a->mem[t].m == m) {
    missed_judge_member (a, t, own);
    r = member_transition (a, t, RAID_MEMBER_STALE, a->sb.members[t].role,
                           "it is back (reconnected)");
  }
  pthread_mutex_unlock (&a->state_lock);
  if (r == 0)
    sync_next_job (a);                     /* its rejoin */
  MGMT_END (a);
  return r;
}

int
manage_write_off (struct raid_array *a, int t, uint64_t away_ns)
{
  char why[96];
  int r = ESTALE;

  MGMT_BEGIN (a);
  pthread_mutex_lock (&a->state_lock);
  if (atomic_load (&a->mem[t].state) == RAID_MEMBER_MISSING && a->mem[t].away_ns == away_ns) {
    snprintf (why, sizeof why, "away longer than the member timeout (%" PRIu64 " s)",
              a->member_timeout_ns / 1000000000u);
    if ((r = member_transition (a, t, RAID_MEMBER_FAULTY, a->sb.members[t].role, why)) == 0)
      state_commit (a);
  }
  pthread_mutex_unlock (&a->state_lock);
  if (r == 0)
    sync_next_job (a);                     /* a spare takes over */
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
    if (s >= 0 && !state_spare_usable (a, s)) {
      snprintf (err, errlen, "%s is a spare whose connection is lost: wait until it "
                "is back", with);
      return -1;
    }
    return s;
  }
  for (int s = 0; s < (int) a->sb.nmembers; s++)
    if (state_spare_usable (a, s))
      return s;
  snprintf (err, errlen, "no spare to replace onto: add one first");
  return -1;
}

static int
replace_locked (struct raid_array *a, const char *member, const char *with,
                char *err, size_t errlen)
{
  int t, s;

  if (router_two (&a->router)) {
    snprintf (err, errlen, "a reshape is in progress");
    return EBUSY;
  }
  if (a->sync.state != SYNC_IDLE) {
    snprintf (err, errlen, "%s is in progress: wait for it or abort it first",
              raid_sync_action_name (a->sync.job.ops->action));
    return EBUSY;
  }
  for (int r = 0; r < (int) a->sb.nmembers; r++)
    if (atomic_load (&a->mem[r].state) == RAID_MEMBER_REBUILDING) {
      snprintf (err, errlen, "%s is being rebuilt: wait for it", a->mem[r].m ?
                member_spec (a->mem[r].m) : a->sb.members[r].spec_hint);
      return EBUSY;                        /* one cursor: one rebuild at a time */
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
  return sync_begin_replace (a, t, s, err, errlen);
}

int
raid_array_replace (struct raid_array *a, const char *member, const char *with,
                    char *err, size_t errlen)
{
  int r;

  REFUSE_READONLY (a, err, errlen);

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

  REFUSE_READONLY (a, err, errlen);

  MGMT_BEGIN (a);
  pthread_mutex_lock (&a->state_lock);
  if (cur_layout (a)->g.level == 0 || router_two (&a->router)) {
    snprintf (err, errlen, router_two (&a->router) ? "a reshape is in progress"
              : "raid0 has no redundancy to check");
    r = router_two (&a->router) ? EBUSY : EINVAL;
  }
  else if (raid_array_health (a) != RAID_HEALTH_OPTIMAL) {
    snprintf (err, errlen, "array is %s: nothing to compare its data with",
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

  REFUSE_READONLY (a, err, errlen);      /* no background work to pace */
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

/* Bytes the geometry exports over component bytes per member. */
static uint64_t
capacity (const struct layout *L, uint64_t comp)
{
  return L->g.level == 1 ? comp : comp / L->g.chunk * L->g.stripe_width;
}

/* The component size the role members' sizes allow now (state lock held;
 * members that grew are measured again). */
static uint64_t
component_now (struct raid_array *a)
{
  const struct layout *L = cur_layout (a);
  uint64_t comp = UINT64_MAX;

  for (int r = 0; r < L->g.raid_disks; r++) {
    struct member *m = state_role_member (a, L, r);
    if (m)
      comp = raid_min_u64 (comp, member_refresh_size (m) - L->data_offset[r]);
  }
  comp = comp == UINT64_MAX ? a->sb.component_size : raid_round_down (comp, L->g.chunk);
  return raid_max_u64 (comp, a->sb.component_size);
}

/* Validate a resize (state lock held): *size resolved ("max"), *comp the
 * component size it needs.  0 or an errno with a message. */
static int
may_resize (struct raid_array *a, uint64_t *size, bool force, uint64_t *comp,
            char *err, size_t errlen)
{
  const struct layout *L = cur_layout (a);
  uint64_t old = atomic_load (&a->size), cap;

  if (router_two (&a->router)) {
    snprintf (err, errlen, "a reshape is in progress: resize before or after it");
    return EBUSY;
  }
  *comp = a->sb.component_size;
  if (*size == RAID_RESIZE_MAX || *size > capacity (L, *comp))
    *comp = component_now (a);
  cap = capacity (L, *comp);
  if (*size == RAID_RESIZE_MAX)
    *size = cap;
  if (*size == 0 || *size > cap) {
    snprintf (err, errlen, "size %" PRIu64 " is outside 1..%" PRIu64 " (what the "
              "members hold in this geometry; enlarge the members, then resize to "
              "max)", *size, cap);
    return *size == 0 ? EINVAL : ENOSPC;
  }
  if (*size < old && !force) {
    snprintf (err, errlen, "shrinking from %" PRIu64 " to %" PRIu64 " bytes cuts off "
              "the last %" PRIu64 " bytes of the array: give force to do it", old,
              *size, old - *size);
    return EINVAL;
  }
  if (*comp > a->sb.component_size && a->sync.state != SYNC_IDLE) {
    snprintf (err, errlen, "%s is in progress: the members' new room can be used "
              "when it ends", raid_sync_action_name (a->sync.job.ops->action));
    return EBUSY;
  }
  return 0;
}

/* The members grew: the current layout has more rows (nothing runs, a claim
 * over everything: the bitmap is sized by the rows).  The bitmap's regions
 * change size with it, so no absent member can rejoin by delta after this. */
static int
grow_component (struct raid_array *a, uint64_t comp)
{
  int r;

  router_claim (&a->router, 0, ROUTER_ALL);
  if (bitmap_enabled (a))
    bitmap_clean (a, true);
  pthread_mutex_lock (&a->state_lock);
  a->sb.component_size = comp;
  router_set_rows (&a->router, comp / cur_layout (a)->g.chunk);
  for (int t = 0; t < (int) a->sb.nmembers; t++)
    a->mem[t].delta = false;
  bitmap_fini (a);
  r = bitmap_init (a);
  if (r == 0)
    r = missed_reinit (a);
  if (r == 0)
    r = state_commit (a);
  pthread_mutex_unlock (&a->state_lock);
  router_release (&a->router);
  return r;
}

/* Rows past the old size may hold anything with parity that does not
 * match: zero them, to the end of the new last row (stripe.h), durably,
 * before exporting them.  Nobody addresses them yet; the claim keeps
 * tickets out all the same. */
static int
zero_new_space (struct raid_array *a, uint64_t old, uint64_t size)
{
  int r;

  /* Nothing held past the end may come back: the shrink discarded it, but
   * a write that passed the size check just before the shrink may have
   * been gathered just after. */
  gather_discard (&a->gather, old);
  router_claim (&a->router, old, ROUTER_ALL);
  r = stripe_zero_to_row_end (a, cur_layout (a), old, size);
  router_release (&a->router);
  return r ? r : cons_checkpoint (a, NULL, NULL);   /* durable, no older log */
}

int
raid_array_resize (struct raid_array *a, uint64_t size, bool force,
                   char *err, size_t errlen)
{
  uint64_t old = atomic_load (&a->size), comp;
  int r;

  REFUSE_READONLY (a, err, errlen);

  MGMT_BEGIN (a);
  pthread_mutex_lock (&a->state_lock);
  r = may_resize (a, &size, force, &comp, err, errlen);
  pthread_mutex_unlock (&a->state_lock);
  if (r == 0 && size == old && comp == a->sb.component_size) {
    MGMT_END (a);                          /* already so: nothing to record */
    return 0;
  }
  if (r == 0 && comp > a->sb.component_size && (r = grow_component (a, comp)) != 0)
    snprintf (err, errlen, "cannot record the members' new size: %s", raid_strerror (r));
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
    if (r == 0 && size < old)
      gather_discard (&a->gather, size);   /* the shrink cut held bytes off */
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

  REFUSE_READONLY (a, err, errlen);

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

  REFUSE_READONLY (a, err, errlen);

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

  REFUSE_READONLY (a, err, errlen);

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

  REFUSE_READONLY (a, err, errlen);

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

/* Nothing runs, the worker has looked at the latest change (so no owed
 * job is about to begin), and no recovery waits for an away member's
 * grace to end; or a job is frozen and the worker has looked at it since
 * (so it stays frozen until a request) (state lock held). */
static bool
settled (struct raid_array *a)
{
  struct sync_ctl *s = &a->sync;

  return s->stop || !s->started ||
    (s->state == SYNC_FROZEN && s->seen_gen == a->state_gen) ||
    (s->state == SYNC_IDLE && s->seen_gen == a->state_gen && !sync_recovery_due (a));
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
