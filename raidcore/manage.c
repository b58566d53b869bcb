/* nbdkit-raid: management operations (status, fail, remove, add, resize)
 * and the automatic start of recovery.
 *
 * Every operation validates fully before changing anything; a refusal
 * returns an errno value with a message and leaves the state and the event
 * count untouched.  State changes happen under sb_lock and are durable
 * (array_commit) before the operation returns.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array-int.h"
#include "journal.h"
#include "util.h"

/* ---- status ---- */

static void
geom_status (struct raid_geom_status *gs, int level, int layout, uint32_t chunk,
             int raid_disks)
{
  gs->level = level; gs->layout = layout; gs->chunk = chunk; gs->raid_disks = raid_disks;
}

void
raid_array_status (struct raid_array *a, struct raid_status *st)
{
  struct sync_ctl *s = &a->sync;

  memset (st, 0, sizeof *st);
  pthread_mutex_lock (&a->sb_lock);
  memcpy (st->uuid, a->sb.array_uuid, RAID_UUID_LEN);
  geom_status (&st->geom, a->cur.g.level, a->cur.g.layout, a->cur.g.chunk,
               a->cur.g.raid_disks);
  st->data_disks = a->cur.g.data_disks;
  st->size = a->size;
  st->health = raid_array_health (a);
  st->events = a->sb.events;
  st->consistency = a->sb.consistency;
  for (int t = 0; t < (int) a->sb.nmembers; t++) {
    const struct sb_member_entry *e = &a->sb.members[t];
    struct raid_member_status *ms;
    if (e->state == SB_MEMBER_EMPTY)
      continue;
    ms = &st->members[st->nmembers++];
    ms->role = e->role;
    ms->state = atomic_load (&a->mem[t].state);
    ms->errors = atomic_load (&a->mem[t].errors);
    ms->data_offset = e->data_offset;
    snprintf (ms->spec, sizeof ms->spec, "%s", a->mem[t].m ? member_spec (a->mem[t].m) : "");
  }
  pthread_mutex_unlock (&a->sb_lock);

  reshape_status (a, st);
  pthread_mutex_lock (&s->lock);
  st->sync_action = s->action == RAID_SYNC_IDLE ? RAID_SYNC_IDLE
    : s->frozen ? RAID_SYNC_FROZEN : s->action;
  st->mismatch_count = s->mismatch;
  st->speed_min = s->speed_min;
  st->speed_max = s->speed_max;
  if (s->action != RAID_SYNC_IDLE) {
    st->has_progress = true;
    st->progress.action = s->action;
    st->progress.done = s->pos;
    st->progress.total = s->total;
    st->progress.rate = s->frozen ? 0 : s->rate;
    st->progress.eta_seconds = st->progress.rate
      ? (int64_t) ((s->total - s->pos) / st->progress.rate) : -1;
  }
  pthread_mutex_unlock (&s->lock);
}

/* ---- naming members ---- */

/* Table slot named by a role number or a spec; -1 with a message. */
static int
find_member (struct raid_array *a, const char *name, char *err, size_t errlen)
{
  char *end;
  long role = strtol (name, &end, 10);

  if (*name >= '0' && *name <= '9' && *end == '\0') {   /* a role number */
    for (int t = 0; t < (int) a->sb.nmembers; t++)
      if (a->sb.members[t].state != SB_MEMBER_EMPTY && a->sb.members[t].role == role &&
          a->sb.members[t].state != SB_MEMBER_FAULTY)
        return t;
    for (int t = 0; t < (int) a->sb.nmembers; t++)
      if (a->sb.members[t].state != SB_MEMBER_EMPTY && a->sb.members[t].role == role)
        return t;
    snprintf (err, errlen, "no member has role %s", name);
    return -1;
  }
  for (int t = 0; t < (int) a->sb.nmembers; t++) {
    char *rp;
    bool same;
    if (!a->mem[t].m)
      continue;
    rp = realpath (name, NULL);
    same = strcmp (member_spec (a->mem[t].m), name) == 0 ||
      (rp && strcmp (member_spec (a->mem[t].m), rp) == 0);
    free (rp);
    if (same)
      return t;
  }
  snprintf (err, errlen, "%s is not a member of this array", name);
  return -1;
}

int
array_find_member (struct raid_array *a, const char *name, char *err, size_t errlen)
{
  return find_member (a, name, err, errlen);
}

static int
tolerance (const struct raid_array *a)
{
  return a->cur.g.level == 0 ? 0 : a->cur.g.parity_disks;
}

/* ---- fail / remove ---- */

int
raid_array_fail (struct raid_array *a, const char *name, char *err, size_t errlen)
{
  int t, st, nbad;

  pthread_mutex_lock (&a->sb_lock);
  if ((t = find_member (a, name, err, errlen)) < 0) {
    pthread_mutex_unlock (&a->sb_lock);
    return ENODEV;
  }
  st = atomic_load (&a->mem[t].state);
  if (st == RAID_MEMBER_FAULTY || st == RAID_MEMBER_MISSING || st == RAID_MEMBER_STALE) {
    pthread_mutex_unlock (&a->sb_lock);
    snprintf (err, errlen, "%s is already %s", name, raid_member_state_name (st));
    return EINVAL;
  }
  nbad = __builtin_popcount (array_bad_roles (a, &a->cur, NULL, NULL));
  if (st == RAID_MEMBER_IN_SYNC && nbad + 1 > tolerance (a)) {
    pthread_mutex_unlock (&a->sb_lock);
    snprintf (err, errlen, "failing %s would fail the array: raid%d tolerates %d "
              "unusable member(s) and %d already are", name, a->cur.g.level,
              tolerance (a), nbad);
    return EBUSY;
  }
  raid_log (RAID_LOG_WARN, "member %s failed by request", name);
  atomic_store (&a->mem[t].state, RAID_MEMBER_FAULTY);
  a->sb.members[t].state = SB_MEMBER_FAULTY;
  array_update_health (a);
  array_commit (a);
  pthread_mutex_unlock (&a->sb_lock);
  sync_cancel_target (a, t);
  return 0;
}

int
raid_array_remove (struct raid_array *a, const char *name, char *err, size_t errlen)
{
  int t, st;

  pthread_mutex_lock (&a->sb_lock);
  if ((t = find_member (a, name, err, errlen)) < 0) {
    pthread_mutex_unlock (&a->sb_lock);
    return ENODEV;
  }
  st = atomic_load (&a->mem[t].state);
  if (st != RAID_MEMBER_FAULTY && st != RAID_MEMBER_SPARE &&
      st != RAID_MEMBER_MISSING && st != RAID_MEMBER_STALE) {
    pthread_mutex_unlock (&a->sb_lock);
    snprintf (err, errlen, "%s is %s: only faulty or spare members can be removed "
              "(fail it first)", name, raid_member_state_name (st));
    return EBUSY;
  }
  if (a->sb.members[t].role >= 0 && a->cur.slot[a->sb.members[t].role] == t)
    __atomic_store_n (&a->cur.slot[a->sb.members[t].role], -1, __ATOMIC_RELEASE);
  memset (&a->sb.members[t], 0, sizeof a->sb.members[t]);
  a->sb.members[t].role = -1;
  a->sb.members[t].state = SB_MEMBER_EMPTY;
  atomic_store (&a->mem[t].state, RAID_MEMBER_MISSING);
  /* In-flight requests may still hold the pointer: close at array close. */
  if (a->mem[t].m && a->nretired < (int) (sizeof a->retired / sizeof a->retired[0]))
    a->retired[a->nretired++] = a->mem[t].m;
  a->mem[t].m = NULL;
  array_commit (a);
  pthread_mutex_unlock (&a->sb_lock);
  return 0;
}

/* ---- add ---- */

/* A free table slot, or -1. */
static int
free_slot (struct raid_array *a)
{
  for (int t = 0; t < (int) a->sb.nmembers; t++)
    if (a->sb.members[t].state == SB_MEMBER_EMPTY && !a->mem[t].m)
      return t;
  return a->sb.nmembers < SB_MAX_MEMBERS ? (int) a->sb.nmembers : -1;
}

/* Check a new member before it joins: large enough, not in any array. */
static int
vet_new_member (struct raid_array *a, struct member *m, const char *spec,
                char *err, size_t errlen)
{
  uint64_t need = a->sb.members[a->cur.slot[0] >= 0 ? a->cur.slot[0] : 0].data_offset
    + a->sb.component_size;
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

/* Wipe the superblock ring so no earlier record can resurface. */
int
array_wipe_ring (struct member *m)
{
  static const uint8_t zero[SB_SLOT_SIZE];
  struct mio mios[SB_RING_SLOTS];
  struct iovec iov[SB_RING_SLOTS];

  for (unsigned i = 0; i < SB_RING_SLOTS; i++) {
    iov[i] = (struct iovec) { (void *) zero, SB_SLOT_SIZE };
    mios[i] = (struct mio) { .m = m, .op = MIO_WRITE, .off = (uint64_t) i * SB_SLOT_SIZE,
                             .len = SB_SLOT_SIZE, .iov = &iov[i], .iovcnt = 1 };
  }
  return mio_run (mios, SB_RING_SLOTS);
}

/* A role with no usable member (to recover onto), or -1. */
static int
role_to_recover (struct raid_array *a)
{
  uint32_t bad = array_bad_roles (a, &a->cur, NULL, NULL);
  for (int r = 0; r < a->cur.g.raid_disks; r++) {
    int s = a->cur.slot[r];
    if ((bad & (1u << r)) &&
        (s < 0 || atomic_load (&a->mem[s].state) != RAID_MEMBER_REBUILDING))
      return r;
  }
  return -1;
}

int
raid_array_add (struct raid_array *a, const char *spec, char *err, size_t errlen)
{
  struct member *m;
  char e[512];
  int t, r, role;

  if (find_member (a, spec, e, sizeof e) >= 0) {
    snprintf (err, errlen, "%s is already a member of this array", spec);
    return EEXIST;
  }
  if (!(m = member_open (spec, false, e, sizeof e))) {
    r = errno ? errno : ENOENT;
    snprintf (err, errlen, "%s", e);
    return r;
  }
  if ((r = vet_new_member (a, m, spec, err, errlen)) != 0 ||
      (r = member_start (m)) != 0) {
    member_close (m);
    if (r > 0 && !*err)
      snprintf (err, errlen, "%s: %s", spec, raid_strerror (r));
    return r > 0 ? r : EIO;
  }
  if ((r = array_wipe_ring (m)) != 0) {
    snprintf (err, errlen, "%s: cannot write its superblock: %s", spec, raid_strerror (r));
    member_close (m);
    return r;
  }

  pthread_mutex_lock (&a->sb_lock);
  if ((t = free_slot (a)) < 0) {
    pthread_mutex_unlock (&a->sb_lock);
    member_close (m);
    snprintf (err, errlen, "the member table is full (%d entries)", SB_MAX_MEMBERS);
    return ENOSPC;
  }
  memset (&a->sb.members[t], 0, sizeof a->sb.members[t]);
  raid_uuid_generate (a->sb.members[t].uuid);
  a->sb.members[t].role = -1;
  a->sb.members[t].state = SB_MEMBER_SPARE;
  a->sb.members[t].data_offset = a->sb.members[a->cur.slot[0] >= 0 ? a->cur.slot[0] : 0].data_offset;
  a->sb.members[t].new_data_offset = a->sb.members[t].data_offset;
  if (t == (int) a->sb.nmembers)
    a->sb.nmembers++;
  a->mem[t].m = m;
  atomic_store (&a->mem[t].errors, 0);
  atomic_store (&a->mem[t].state, RAID_MEMBER_SPARE);
  r = array_commit (a);
  role = role_to_recover (a);
  pthread_mutex_unlock (&a->sb_lock);
  if (r != 0) {
    snprintf (err, errlen, "cannot record the new member: %s", raid_strerror (r));
    return r;
  }
  raid_log (RAID_LOG_INFO, "%s added as a spare", spec);
  if (role >= 0 && atomic_load (&a->health) != RAID_HEALTH_FAILED &&
      array_start_recovery (a, t, role, e, sizeof e) != 0)
    raid_log (RAID_LOG_WARN, "recovery onto %s not started: %s", spec, e);
  return 0;
}

/* Make spare `t` the member of `role`, state rebuilding from row 0, and
 * start the recovery action.  The role was bad (faulty/missing), so no I/O
 * used it; after the switch it is bad in every row at or above the cursor
 * (0), so the order of the stores below keeps every reader consistent. */
int
array_start_recovery (struct raid_array *a, int t, int role, char *err, size_t errlen)
{
  int old, r;

  pthread_mutex_lock (&a->sb_lock);
  old = a->cur.slot[role];
  if (old >= 0) {
    a->sb.members[old].role = -1;           /* stays faulty, detached */
  }
  a->sb.members[t].role = role;
  a->sb.members[t].state = SB_MEMBER_REBUILDING;
  a->sb.members[t].recovery_offset = 0;
  atomic_store (&a->rb_row, 0);
  atomic_store (&a->mem[t].state, RAID_MEMBER_REBUILDING);
  __atomic_store_n (&a->cur.slot[role], t, __ATOMIC_RELEASE);
  a->cur.data_offset[role] = a->sb.members[t].data_offset;
  r = array_commit (a);
  pthread_mutex_unlock (&a->sb_lock);
  if (r != 0) {
    snprintf (err, errlen, "cannot record the recovery: %s", raid_strerror (r));
    return r;
  }
  raid_log (RAID_LOG_INFO, "recovery of role %d onto %s started", role,
            member_spec (a->mem[t].m));
  return sync_begin (a, RAID_SYNC_RECOVER, t, role, 0, false, err, errlen);
}

/* At start: resume a recovery or a scrub from its checkpoint, or begin
 * recovery onto a spare when degraded. */
int
array_resume_actions (struct raid_array *a)
{
  char e[256];

  if (atomic_load (&a->reshaping)) {
    bool run = a->sb.reshape_state == SB_RESHAPE_RUNNING && a->autostart &&
      reshape_check_start (a, e, sizeof e) == 0;
    int r = sync_begin (a, RAID_SYNC_RESHAPE, -1, -1, a->sb.reshape_position, !run,
                        e, sizeof e);
    if (r == 0 && !run)
      reshape_set_state (a, false);
    raid_log (RAID_LOG_INFO, "reshape %s at %" PRIu64 " of %" PRIu64 " bytes",
              run ? "resumed" : "frozen", a->sb.reshape_position, a->sb.array_size);
    return r;
  }
  for (int t = 0; t < (int) a->sb.nmembers; t++)
    if (atomic_load (&a->mem[t].state) == RAID_MEMBER_REBUILDING)
      return sync_begin (a, RAID_SYNC_RECOVER, t, a->sb.members[t].role,
                         atomic_load (&a->rb_row) * a->cur.g.chunk, false, e, sizeof e);
  if (a->sb.resync_offset != UINT64_MAX && a->cur.g.level >= 4 &&
      raid_array_health (a) == RAID_HEALTH_OPTIMAL)
    return sync_begin (a, RAID_SYNC_RESYNC, -1, -1, a->sb.resync_offset, false, e, sizeof e);
  if (a->sb.sync_action != SB_SYNC_NONE && raid_array_health (a) == RAID_HEALTH_OPTIMAL) {
    a->sync.mismatch = a->sb.mismatch_count;
    return sync_begin (a, a->sb.sync_action == SB_SYNC_REPAIR ? RAID_SYNC_REPAIR
                       : RAID_SYNC_CHECK, -1, -1, a->sb.sync_position, false, e, sizeof e);
  }
  if (raid_array_health (a) == RAID_HEALTH_DEGRADED) {
    int role = role_to_recover (a);
    for (int t = 0; t < (int) a->sb.nmembers && role >= 0; t++)
      if (atomic_load (&a->mem[t].state) == RAID_MEMBER_SPARE)
        return array_start_recovery (a, t, role, e, sizeof e);
  }
  return 0;
}

/* ---- replace, resize, reshape ---- */

/* Pick the spare to replace onto: `with` (a spare of this array) or the
 * first spare.  -1 with a message. */
static int
pick_spare (struct raid_array *a, const char *with, char *err, size_t errlen)
{
  if (with) {
    int s = find_member (a, with, err, errlen);
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

/* Replace: copy a working member onto a spare while both receive every
 * write; then the spare takes the role and the old member is retired
 * (faulty).  Begins frozen, is configured, then unfrozen, so the copy can
 * never run half set up.  Not resumed after a restart (it starts over). */
int
raid_array_replace (struct raid_array *a, const char *member, const char *with,
                    char *err, size_t errlen)
{
  int t, s, role, r;

  if (atomic_load (&a->reshaping)) {
    snprintf (err, errlen, "a reshape is in progress");
    return EBUSY;
  }
  pthread_mutex_lock (&a->sb_lock);
  t = find_member (a, member, err, errlen);
  if (t >= 0 && (atomic_load (&a->mem[t].state) != RAID_MEMBER_IN_SYNC ||
                 a->sb.members[t].role < 0)) {
    snprintf (err, errlen, "%s is %s: only a working member can be replaced", member,
              raid_member_state_name (atomic_load (&a->mem[t].state)));
    pthread_mutex_unlock (&a->sb_lock);
    return EBUSY;
  }
  s = t >= 0 ? pick_spare (a, with, err, errlen) : -1;
  pthread_mutex_unlock (&a->sb_lock);
  if (t < 0 || s < 0)
    return ENODEV;
  role = a->sb.members[t].role;
  if ((r = sync_begin (a, RAID_SYNC_RECOVER, s, role, 0, true, err, errlen)) != 0)
    return r;
  a->repl_slot = s;
  atomic_store (&a->rb_row, 0);
  atomic_store (&a->repl_role, role);    /* from here every write reaches s */
  pthread_mutex_lock (&a->sync.lock);
  a->sync.replace = true;
  a->sync.frozen = false;
  pthread_cond_broadcast (&a->sync.changed);
  pthread_mutex_unlock (&a->sync.lock);
  raid_log (RAID_LOG_INFO, "replacing %s (role %d) with %s", member, role,
            member_spec (a->mem[s].m));
  return 0;
}

/* Make the replacement the member of its role (rebuilding from `row`, or
 * in sync when row is UINT64_MAX) and retire the old member.  The role's
 * slot switches before writes stop being duplicated, so no write misses
 * the new member.  Caller holds sb_lock. */
static void
replace_switch (struct raid_array *a, uint64_t row)
{
  int role = atomic_load (&a->repl_role), s = a->repl_slot, t = a->cur.slot[role];

  if (t >= 0) {
    a->sb.members[t].role = -1;
    if (a->sb.members[t].state != SB_MEMBER_FAULTY)
      a->sb.members[t].state = SB_MEMBER_FAULTY;     /* retired */
    atomic_store (&a->mem[t].state, RAID_MEMBER_FAULTY);
  }
  a->sb.members[s].role = role;
  a->sb.members[s].state = row == UINT64_MAX ? SB_MEMBER_IN_SYNC : SB_MEMBER_REBUILDING;
  a->sb.members[s].recovery_offset = row == UINT64_MAX ? 0 : row * a->cur.g.chunk;
  atomic_store (&a->mem[s].state, row == UINT64_MAX ? RAID_MEMBER_IN_SYNC
                : RAID_MEMBER_REBUILDING);
  a->cur.data_offset[role] = a->sb.members[s].data_offset;
  __atomic_store_n (&a->cur.slot[role], s, __ATOMIC_RELEASE);
  atomic_store (&a->repl_role, -1);
  array_update_health (a);
  array_commit (a);
}

void
replace_finish (struct raid_array *a)
{
  pthread_mutex_lock (&a->sb_lock);
  if (atomic_load (&a->repl_role) >= 0) {
    raid_log (RAID_LOG_INFO, "replace complete: %s took role %d",
              member_spec (a->mem[a->repl_slot].m), atomic_load (&a->repl_role));
    replace_switch (a, UINT64_MAX);
  }
  pthread_mutex_unlock (&a->sb_lock);
}

void
replace_cancel (struct raid_array *a, bool source_failed)
{
  struct sync_ctl *sc = &a->sync;
  int role = atomic_load (&a->repl_role);

  if (role < 0)
    return;
  if (!source_failed) {                  /* the target failed: just stop */
    atomic_store (&a->repl_role, -1);
    return;
  }
  /* The member being replaced failed: the copy so far is good, so the
   * replace becomes a recovery onto the same member from the cursor. */
  pthread_mutex_lock (&a->sb_lock);
  replace_switch (a, atomic_load (&a->rb_row));
  pthread_mutex_unlock (&a->sb_lock);
  pthread_mutex_lock (&sc->lock);
  sc->replace = false;
  sc->pos = atomic_load (&a->rb_row) * a->cur.g.chunk;
  pthread_cond_broadcast (&sc->changed);
  pthread_mutex_unlock (&sc->lock);
  raid_log (RAID_LOG_WARN, "the replaced member failed: recovering role %d instead", role);
}

int
raid_array_resize (struct raid_array *a, uint64_t size, char *err, size_t errlen)
{
  uint64_t cap = a->cur.g.level == 1 ? a->sb.component_size
    : a->sb.component_size / a->cur.g.chunk * a->cur.g.stripe_width;
  int r;

  if (atomic_load (&a->reshaping)) {
    snprintf (err, errlen, "a reshape is in progress: resize before or after it");
    return EBUSY;
  }
  if (size == 0 || size > cap) {
    snprintf (err, errlen, "size %" PRIu64 " is outside 1..%" PRIu64
              " (what the members hold in this geometry)", size, cap);
    return size == 0 ? EINVAL : ENOSPC;
  }
  if (size > a->size) {
    /* Rows past the old size may hold anything (bytes a shrink cut off, or
     * a reshape left behind) with parity that does not match: zero them,
     * durably, before exporting them. */
    r = stripe_zero (a, &a->cur, size - a->size, a->size, RAID_IO_RAW);
    if (r == 0)                 /* durable, and no older logged write there */
      r = a->journaled ? journal_checkpoint (a) : raid_array_flush (a);
    if (r) {
      snprintf (err, errlen, "cannot zero the new space: %s", raid_strerror (r));
      return r;
    }
  }
  pthread_mutex_lock (&a->sb_lock);
  a->sb.array_size = size;
  r = array_commit (a);
  if (r == 0)
    a->size = size;
  pthread_mutex_unlock (&a->sb_lock);
  if (r)
    snprintf (err, errlen, "cannot record the new size: %s", raid_strerror (r));
  return r;
}

