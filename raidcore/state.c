/* nbdkit-raid: the array's state (theory in state.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "array-int.h"
#include "util.h"

/* ---- names ---- */

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

enum raid_health
raid_array_health (struct raid_array *a)
{
  return atomic_load (&a->health);
}

/* ---- member states ---- */

/* Allowed edges: allowed[from][to] (runtime states; STATE_EMPTY is index
 * 6). */
#define NSTATES 7

/* ---- the hooks of the missed-region maps (state.h) ---- */

static void hook_away (struct raid_array *a, int t) { if (a->hooks) a->hooks->away (a, t); }
static void hook_done (struct raid_array *a, int t) { if (a->hooks) a->hooks->done (a, t); }
static void
hook_write_lost (struct raid_array *a, int t, uint64_t off)
{
  if (a->hooks)
    a->hooks->write_lost (a, t, off);
}
static uint64_t hook_stamp (struct raid_array *a) { return a->hooks ? a->hooks->stamp (a) : 0; }
static void
hook_flushed (struct raid_array *a, uint64_t stamp)
{
  if (a->hooks)
    a->hooks->flushed (a, stamp);
}

static int
idx (int s)
{
  return s == STATE_EMPTY ? 6 : s;
}

static const bool allowed[NSTATES][NSTATES] = {
  /*                 in_sync faulty missing spare rebuild stale empty */
  [RAID_MEMBER_IN_SYNC]    = { 0, 1, 1, 1, 0, 0, 0 },   /* -> missing: away */
  [RAID_MEMBER_FAULTY]     = { 0, 0, 0, 0, 0, 0, 1 },
  [RAID_MEMBER_MISSING]    = { 0, 1, 0, 1, 0, 1, 1 },   /* -> stale: it is back;
                                                         -> faulty: away too long;
                                                         -> spare: its role is gone */
  [RAID_MEMBER_SPARE]      = { 1, 1, 0, 0, 1, 0, 1 },
  [RAID_MEMBER_REBUILDING] = { 1, 1, 1, 1, 1, 0, 0 },   /* -> rebuilding: a
                                                         replace target takes the role */
  [RAID_MEMBER_STALE]      = { 0, 1, 1, 1, 1, 0, 1 },   /* -> rebuilding: rejoins;
                                                         -> spare: its role is gone */
  [6]                      = { 1, 0, 0, 1, 0, 0, 0 },
};

static const char *
state_name (int s)
{
  return s == STATE_EMPTY ? "empty" : raid_member_state_name (s);
}

static uint32_t
sb_state_of (int to, int role)
{
  switch (to) {
  case RAID_MEMBER_IN_SYNC: return SB_MEMBER_IN_SYNC;
  case RAID_MEMBER_FAULTY: return SB_MEMBER_FAULTY;
  case RAID_MEMBER_SPARE: return SB_MEMBER_SPARE;
  case RAID_MEMBER_REBUILDING:      /* a replace target is recorded as a spare */
    return role < 0 ? SB_MEMBER_SPARE : SB_MEMBER_REBUILDING;
  case RAID_MEMBER_MISSING:
  case RAID_MEMBER_STALE:           /* back, not resynced: still not written */
    return role < 0 ? SB_MEMBER_SPARE : SB_MEMBER_MISSING;
  default: return SB_MEMBER_EMPTY;
  }
}

static void
changed (struct raid_array *a)
{
  a->state_gen++;
  pthread_cond_broadcast (&a->changed);
}

void
state_changed (struct raid_array *a)
{
  changed (a);
}

bool
state_away_in_grace (struct raid_array *a, int t)
{
  return atomic_load (&a->mem[t].state) == RAID_MEMBER_MISSING &&
    a->sb.members[t].role >= 0 && a->mem[t].away_ns && a->member_timeout_ns &&
    raid_now_mono_ns () - a->mem[t].away_ns < a->member_timeout_ns;
}

int
member_transition (struct raid_array *a, int t, int to, int role, const char *why)
{
  int from = atomic_load (&a->mem[t].state);
  struct sb_member_entry *e = &a->sb.members[t];

  if (!allowed[idx (from)][idx (to)]) {
    raid_log (RAID_LOG_ERROR, "internal: member slot %d: %s -> %s refused (%s)", t,
              raid_member_state_name (from), raid_member_state_name (to), why);
    return EINVAL;
  }
  raid_log (to == RAID_MEMBER_FAULTY ? RAID_LOG_ERROR : RAID_LOG_INFO,
            "member %s: %s -> %s (%s)", a->mem[t].m ? member_spec (a->mem[t].m) : "-",
            state_name (from), state_name (to), why);
  if ((from == RAID_MEMBER_IN_SYNC || from == RAID_MEMBER_REBUILDING) && e->role >= 0 &&
      to != RAID_MEMBER_IN_SYNC && to != RAID_MEMBER_REBUILDING)
    a->roles_left++;                       /* its role's blocks stop being written */
  if ((to == RAID_MEMBER_IN_SYNC || to == RAID_MEMBER_REBUILDING) &&
      ((from != RAID_MEMBER_IN_SYNC && from != RAID_MEMBER_REBUILDING) || e->role != role))
    a->mem[t].joined = a->sb.events + 1;   /* the next record puts it in use */
  atomic_store (&a->mem[t].state, to);
  if (to != RAID_MEMBER_REBUILDING)
    a->mem[t].rejoining = false;           /* begin_rejoin sets it */
  if (to == RAID_MEMBER_MISSING)
    a->mem[t].away_ns = raid_now_mono_ns ();
  else if (to != RAID_MEMBER_STALE)
    a->mem[t].away_ns = 0;
  if (to == RAID_MEMBER_FAULTY || to == RAID_MEMBER_IN_SYNC || to == STATE_EMPTY ||
      to == RAID_MEMBER_SPARE)
    hook_done (a, t);                      /* written off, or nothing missed */
  if (to == STATE_EMPTY) {
    memset (e, 0, sizeof *e);
    e->role = -1;
    e->state = SB_MEMBER_EMPTY;
  }
  else {
    e->role = role;
    e->state = sb_state_of (to, role);
    if (to != RAID_MEMBER_REBUILDING)
      e->recovery_offset = 0;
  }
  state_update_health (a);
  changed (a);
  return 0;
}

void
member_detach (struct raid_array *a, int t)
{
  int st = atomic_load (&a->mem[t].state);

  if (st == RAID_MEMBER_FAULTY || st == RAID_MEMBER_MISSING || st == RAID_MEMBER_STALE) {
    a->sb.members[t].role = -1;
    hook_done (a, t);                      /* its map was for the role it left */
  }
}

void
member_assemble (struct raid_array *a, int t, int st, struct member *m)
{
  a->mem[t].m = m;
  atomic_store (&a->mem[t].state, st);
  atomic_store (&a->mem[t].errors, a->sb.members[t].errors);
  if (m)
    sb_set_spec_hint (&a->sb.members[t], member_spec (m));
}

/* Record roles lost since the last record before serving anything: a
 * member recorded in sync (or rebuilding) that is absent, or too old to
 * trust, is recorded missing, so that it can never look current again, and
 * rejoins (is resynced) when it is back. */
int
state_record_lost (struct raid_array *a)
{
  bool changed = false;
  int r = 0;

  pthread_mutex_lock (&a->state_lock);
  for (int t = 0; t < (int) a->sb.nmembers; t++) {
    int st = atomic_load (&a->mem[t].state);
    uint32_t was = a->sb.members[t].state;
    if ((was == SB_MEMBER_IN_SYNC || was == SB_MEMBER_REBUILDING) &&
        (st == RAID_MEMBER_MISSING || st == RAID_MEMBER_STALE)) {
      a->sb.members[t].state = SB_MEMBER_MISSING;   /* not written off: it
                                                       rejoins when back */
      changed = true;
    }
    if (st == RAID_MEMBER_MISSING && a->sb.members[t].role >= 0) {
      a->mem[t].away_ns = raid_now_mono_ns ();
      if (!(a->sb.flags & SB_FLAG_DIRTY))
        hook_away (a, t);                  /* what it misses from now on */
    }
  }
  if (changed)
    r = state_commit (a);
  pthread_mutex_unlock (&a->state_lock);
  return r;
}



int
member_free_slot (struct raid_array *a)
{
  for (int t = 0; t < (int) a->sb.nmembers; t++)
    if (atomic_load (&a->mem[t].state) == STATE_EMPTY && !a->mem[t].m)
      return t;
  return a->sb.nmembers < SB_MAX_MEMBERS ? (int) a->sb.nmembers : -1;
}

void
member_install (struct raid_array *a, int t, struct member *m, int to, int role,
                uint64_t data_offset, uint64_t new_data_offset)
{
  struct sb_member_entry *e = &a->sb.members[t];

  if (t == (int) a->sb.nmembers) {
    a->sb.nmembers++;
    atomic_store (&a->mem[t].state, STATE_EMPTY);
  }
  memset (e, 0, sizeof *e);
  raid_uuid_generate (e->uuid);
  e->data_offset = data_offset;
  e->new_data_offset = new_data_offset;
  sb_set_spec_hint (e, member_spec (m));
  a->mem[t].m = m;
  a->mem[t].unverified = false;
  atomic_store (&a->mem[t].errors, 0);
  member_transition (a, t, to, role, "added");
}

struct member *
member_uninstall (struct raid_array *a, int t)
{
  struct member *m = a->mem[t].m;

  if (member_transition (a, t, STATE_EMPTY, -1, "removed") != 0)
    return NULL;
  a->mem[t].m = NULL;
  if (m)
    member_retire (a, m);
  return m;
}

void
member_retire (struct raid_array *a, struct member *m)
{
  if (a->nretired < (int) (sizeof a->retired / sizeof a->retired[0]))
    a->retired[a->nretired++] = m;       /* closed at array close */
  else                                   /* kept open, never closed: */
    raid_log (RAID_LOG_WARN, "%s: too many members let go of are kept open (%d); "
              "this one stays open, and cannot be added again, until the server "
              "stops", member_spec (m), a->nretired);
}

/* Whether m's spec is name as given, or rp (name resolved, or NULL). */
static bool
spec_is (const struct member *m, const char *name, const char *rp)
{
  return strcmp (member_spec (m), name) == 0 || (rp && strcmp (member_spec (m), rp) == 0);
}

/* A file or block device is taken back only when the path reaches the
 * storage it opened (by any name: a hard link, another device node), so
 * never one deleted or replaced since at that path; an NBD member is
 * found by its spec, as given or resolved. */
struct member *
member_unretire (struct raid_array *a, const char *spec)
{
  char *rp = realpath (spec, NULL);
  struct stat st;
  bool have_st = stat (spec, &st) == 0;
  int found = -1;

  for (int i = 0; i < a->nretired && found < 0; i++) {
    const struct member *m = a->retired[i];
    if (member_has_storage (m) ? have_st && member_is_storage (m, &st)
        : spec_is (m, spec, rp))
      found = i;
  }
  free (rp);
  if (found < 0)
    return NULL;
  struct member *m = a->retired[found];
  a->retired[found] = a->retired[--a->nretired];
  return m;
}

/* A removed member found under another name (a hard link) is used under
 * its own spec, which it is listed by and signatures are looked for at:
 * only while that spec still reaches its storage (no lock held: a path
 * lookup). */
static bool
still_named (struct member *m, const char *spec)
{
  char *rp = realpath (spec, NULL);
  bool same = spec_is (m, spec, rp);
  struct stat st;

  free (rp);
  return same || !member_has_storage (m) ||
    (stat (member_spec (m), &st) == 0 && member_is_storage (m, &st));
}

struct member *
member_open_joining (struct raid_array *a, const char *spec, bool *retired,
                     char *err, size_t errlen)
{
  struct member *m;
  int r;

  pthread_mutex_lock (&a->state_lock);
  m = member_unretire (a, spec);
  pthread_mutex_unlock (&a->state_lock);
  if (m && !still_named (m, spec)) {
    snprintf (err, errlen, "%s is member %s, removed earlier: this server keeps it "
              "open until it stops, and that name no longer reaches it; restart the "
              "server, then add it", spec, member_spec (m));
    pthread_mutex_lock (&a->state_lock);
    member_retire (a, m);                  /* back where it was */
    pthread_mutex_unlock (&a->state_lock);
    errno = EBUSY;
    return NULL;
  }
  if ((*retired = m != NULL)) {
    if (!member_is_down (m) || (r = member_reconnect (m, err, errlen)) == 0)
      return m;
    pthread_mutex_lock (&a->state_lock);   /* its connection died: no new one */
    member_retire (a, m);
    pthread_mutex_unlock (&a->state_lock);
    errno = r;
    return NULL;
  }
  if (!(m = member_open (spec, MEMBER_READ_WRITE, err, errlen)) && !errno)
    errno = ENOENT;
  return m;
}

void
member_close_joining (struct raid_array *a, struct member *m, bool retired)
{
  if (!m)
    return;
  if (!retired)
    member_close (m);
  else {
    pthread_mutex_lock (&a->state_lock);
    member_retire (a, m);                  /* back where it was */
    pthread_mutex_unlock (&a->state_lock);
  }
}

void
member_back_as_is (struct raid_array *a, int t, const char *why)
{
  int role = a->sb.members[t].role;

  member_transition (a, t, RAID_MEMBER_REBUILDING, role, "it is back");
  member_transition (a, t, RAID_MEMBER_IN_SYNC, role, why);
}

bool
state_record_names (struct raid_array *a, int t, const struct raid_sb *own,
                    char *why, size_t len)
{
  char u[RAID_UUID_STRLEN];

  raid_uuid_format (own->array_uuid, u);
  if (memcmp (own->array_uuid, a->sb.array_uuid, RAID_UUID_LEN) != 0)
    snprintf (why, len, "it holds array %s, not this one", u);
  else if (memcmp (own->member_uuid, a->sb.members[t].uuid, RAID_UUID_LEN) != 0)
    snprintf (why, len, "it is another member of this array");
  else if (own->events > a->sb.events)
    snprintf (why, len, "its record (event %" PRIu64 ") is newer than the array's (%"
              PRIu64 "): it was used by another server since", own->events, a->sb.events);
  else
    return true;
  return false;
}

int
state_slot_of_uuid (struct raid_array *a, const uint8_t *member_uuid)
{
  for (int t = 0; t < (int) a->sb.nmembers; t++)
    if (atomic_load (&a->mem[t].state) != STATE_EMPTY &&
        memcmp (a->sb.members[t].uuid, member_uuid, RAID_UUID_LEN) == 0)
      return t;
  return -1;
}

bool
state_spare_usable (struct raid_array *a, int t)
{
  return a->mem[t].m && atomic_load (&a->mem[t].state) == RAID_MEMBER_SPARE &&
    !a->mem[t].unverified && !member_is_down (a->mem[t].m);
}

bool
state_member_in_use (struct raid_array *a, int t)
{
  int st = atomic_load (&a->mem[t].state);
  return a->mem[t].m &&
    (st == RAID_MEMBER_IN_SYNC || st == RAID_MEMBER_REBUILDING ||
     state_spare_usable (a, t));
}

/* ---- naming members ---- */

/* The member a path or URI names: its spec as given or resolved, else the
 * file or block device the path reaches (a hard link, another device
 * node: member_is_storage compares with what each member opened, so no
 * member's own path is looked up here).  The name is resolved once. */
static int
find_by_name (struct raid_array *a, const char *name, char *err, size_t errlen)
{
  char *rp = realpath (name, NULL);
  struct stat st;
  bool have_st = stat (name, &st) == 0;
  int found = -1;

  for (int t = 0; t < (int) a->sb.nmembers && found < 0; t++)
    if (a->mem[t].m && spec_is (a->mem[t].m, name, rp))
      found = t;
  for (int t = 0; t < (int) a->sb.nmembers && found < 0 && have_st; t++)
    if (a->mem[t].m && member_is_storage (a->mem[t].m, &st))
      found = t;
  free (rp);
  if (found < 0)
    snprintf (err, errlen, "%s is not a member of this array", name);
  return found;
}

int
state_find_member (struct raid_array *a, const char *name, char *err, size_t errlen)
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
  return find_by_name (a, name, err, errlen);
}

/* Whether a member's spec hint (its spec, or "..." and the spec's tail when
 * it was too long: sb_set_spec_hint) names `name`: the hint as status lists
 * it, or the full spec. */
static bool
hint_names (const char *hint, const char *name)
{
  size_t hl = strlen (hint), nl = strlen (name);

  if (strcmp (hint, name) == 0)
    return true;
  return hl > 3 && strncmp (hint, "...", 3) == 0 && nl >= hl - 3 &&
    strcmp (name + nl - (hl - 3), hint + 3) == 0;
}

int
state_find_absent (struct raid_array *a, const char *name, bool whole)
{
  for (int s = 0; s < (int) a->sb.nmembers; s++)
    if (!a->mem[s].m && a->sb.members[s].state != SB_MEMBER_EMPTY &&
        (whole ? strcmp (a->sb.members[s].spec_hint, name) == 0 &&
         strncmp (name, "...", 3) != 0 : hint_names (a->sb.members[s].spec_hint, name)))
      return s;
  return -1;
}

int
state_find_listed (struct raid_array *a, const char *name, char *err, size_t errlen)
{
  int t = state_find_member (a, name, err, errlen);

  return t >= 0 ? t : state_find_absent (a, name, false);
}

/* ---- roles and health ---- */

struct member *
state_role_member (struct raid_array *a, const struct layout *L, int role)
{
  int s = L->slot[role];
  return s < 0 ? NULL : a->mem[s].m;
}

uint32_t
state_bad_roles (struct raid_array *a, const struct layout *L,
                 uint32_t *rb_mask, uint64_t *rb_row)
{
  uint32_t bad = 0, rb = 0;

  if (rb_row)
    *rb_row = atomic_load (&a->rb_row);
  for (int r = 0; r < L->g.raid_disks; r++) {
    int s = L->slot[r];
    int st = s < 0 || !a->mem[s].m ? RAID_MEMBER_MISSING : atomic_load (&a->mem[s].state);
    if (st == RAID_MEMBER_REBUILDING)
      rb |= 1u << r;
    else if (st != RAID_MEMBER_IN_SYNC)
      bad |= 1u << r;
  }
  if (rb_mask)
    *rb_mask = rb;
  else
    bad |= rb;
  return bad;
}

bool
state_next_holds_data (struct raid_array *a)
{
  return router_two (&a->router) && a->sb.reshape_position > 0;
}

void
state_update_health (struct raid_array *a)
{
  const struct layout *cur = router_layout (&a->router, LAYOUT_CUR);
  int nbad = __builtin_popcount (state_bad_roles (a, cur, NULL, NULL));
  enum raid_health h = nbad == 0 ? RAID_HEALTH_OPTIMAL
    : nbad <= layout_tolerance (cur) ? RAID_HEALTH_DEGRADED : RAID_HEALTH_FAILED;

  if (router_two (&a->router) && h != RAID_HEALTH_FAILED) {
    /* The target must be servable too once it holds data; before that the
     * array serves from the current layout alone. */
    const struct layout *next = router_layout (&a->router, LAYOUT_NEXT);
    int nbad1 = __builtin_popcount (state_bad_roles (a, next, NULL, NULL));
    if (nbad1 > layout_tolerance (next))
      h = state_next_holds_data (a) ? RAID_HEALTH_FAILED : RAID_HEALTH_DEGRADED;
    else if (nbad1 && h == RAID_HEALTH_OPTIMAL)
      h = RAID_HEALTH_DEGRADED;
    nbad = raid_max_u64 (nbad, nbad1);
  }
  if ((int) h != atomic_exchange (&a->health, (int) h)) {
    raid_log (h == RAID_HEALTH_OPTIMAL ? RAID_LOG_INFO : RAID_LOG_ERROR,
              "array is now %s (%d of %d members unusable)",
              raid_health_name (h), nbad, cur->g.raid_disks);
    changed (a);
  }
}

bool
state_failed (struct raid_array *a)
{
  bool failed;

  if (atomic_load (&a->health) != RAID_HEALTH_FAILED)
    return false;
  pthread_mutex_lock (&a->state_lock);     /* a change in progress ends first */
  failed = atomic_load (&a->health) == RAID_HEALTH_FAILED;
  pthread_mutex_unlock (&a->state_lock);
  return failed;
}

/* ---- commits ---- */

/* Whether err from member m means its connection is lost (it may come
 * back), not that its storage failed. */
static bool
is_away_error (struct raid_array *a, struct member *m, int err)
{
  if (!member_is_nbd (m) || a->member_timeout_ns == 0)
    return false;
  switch (err) {
  case ENOTCONN: case ETIMEDOUT: case ECONNRESET: case ECONNABORTED:
  case ECONNREFUSED: case EPIPE: case ESHUTDOWN: case EHOSTUNREACH:
  case ENETUNREACH: case ENETDOWN:
    return true;
  }
  return false;
}

/* Member t failed with err (state lock held; the caller commits): away
 * (missing, a map of what it misses begun) when its connection is lost,
 * else faulty.  A member not in use is left alone.  True when it went
 * away. */
static bool
member_lost (struct raid_array *a, int t, int err, const char *why)
{
  int st = atomic_load (&a->mem[t].state);
  char buf[160];

  if (st == RAID_MEMBER_FAULTY || st == RAID_MEMBER_MISSING || st == RAID_MEMBER_STALE)
    return false;
  if (a->mem[t].m && st != RAID_MEMBER_SPARE && a->sb.members[t].role >= 0 &&
      is_away_error (a, a->mem[t].m, err)) {
    snprintf (buf, sizeof buf, "%s: %s: away, reconnecting", why, raid_strerror (err));
    member_transition (a, t, RAID_MEMBER_MISSING, a->sb.members[t].role, buf);
    hook_away (a, t);
    return true;
  }
  if (a->mem[t].m && a->sb.members[t].role < 0 && is_away_error (a, a->mem[t].m, err)) {
    /* A spare, or a replace's target (rebuilding without a role), holds no
     * data of the array: its lost connection does not write it off.  It is
     * a spare that is down: not in use, not chosen, until the away watcher
     * has it back and checked (away.c pass: the one place that marks it
     * unverified).  A replace onto it stops. */
    snprintf (buf, sizeof buf, "%s: %s: its connection is lost; a spare again once it "
              "is back", why, raid_strerror (err));
    if (st == RAID_MEMBER_REBUILDING)
      member_transition (a, t, RAID_MEMBER_SPARE, -1, buf);
    else
      raid_log (RAID_LOG_WARN, "member %s: spare: %s", member_spec (a->mem[t].m), buf);
    changed (a);
    return false;
  }
  member_transition (a, t, RAID_MEMBER_FAULTY, a->sb.members[t].role, why);
  return false;
}

/* The record just written holds the rebuild cursor the rebuilding member's
 * recovery offset says (none: no rebuild). */
static void
logged_cursor (struct raid_array *a)
{
  uint64_t row = UINT64_MAX;

  for (int t = 0; t < (int) a->sb.nmembers; t++)
    if (atomic_load (&a->mem[t].state) == RAID_MEMBER_REBUILDING && a->sb.members[t].role >= 0)
      row = a->sb.members[t].recovery_offset / a->sb.chunk;
  atomic_store (&a->rb_logged, row);
}

uint64_t
state_rb_logged (struct raid_array *a)
{
  return raid_min_u64 (atomic_load (&a->rb_row), atomic_load (&a->rb_logged));
}

int
state_commit (struct raid_array *a)
{
  if (a->readonly)
    return 0;                              /* served read-only: in memory only */
  for (int attempt = 0; attempt <= SB_MAX_MEMBERS; attempt++) {
    struct member *ms[SB_MAX_MEMBERS];
    struct raid_sb *sbs;
    int idx[SB_MAX_MEMBERS], res[SB_MAX_MEMBERS], n = 0, nfail = 0;
    uint64_t stamp;

    a->sb.events++;
    a->sb.utime_ns = raid_now_realtime_ns ();
    job_record_replace (a);
    for (int t = 0; t < (int) a->sb.nmembers; t++)
      if (state_member_in_use (a, t))
        idx[n] = t, ms[n++] = a->mem[t].m;
    if (n == 0)
      return EIO;
    if (!(sbs = malloc (n * sizeof *sbs)))
      return ENOMEM;
    for (int j = 0; j < n; j++) {
      sbs[j] = a->sb;
      memcpy (sbs[j].member_uuid, a->sb.members[idx[j]].uuid, RAID_UUID_LEN);
      sbs[j].member_size = member_size (ms[j]);
    }
    stamp = hook_stamp (a);                /* writes done before the flush */
    sb_append_all (ms, sbs, n, res);       /* flushes every member in use */
    free (sbs);
    for (int j = 0; j < n; j++)
      if (res[j]) {
        snprintf (a->last_fault, sizeof a->last_fault, "member %s: superblock update "
                  "failed: %s", member_spec (ms[j]), raid_strerror (res[j]));
        raid_log (RAID_LOG_ERROR, "%s", a->last_fault);
        member_lost (a, idx[j], res[j], "superblock update failed");
        nfail++;
      }
      else
        a->mem[idx[j]].seen = a->sb.events;
    if (nfail == 0) {
      logged_cursor (a);
      hook_flushed (a, stamp);             /* durable on every member */
      return 0;
    }
  }
  return EIO;
}

int
state_mark_dirty (struct raid_array *a)
{
  int r = 0;

  if (atomic_load (&a->dirty))
    return 0;
  pthread_mutex_lock (&a->state_lock);
  if (!(a->sb.flags & SB_FLAG_DIRTY)) {
    a->sb.flags |= SB_FLAG_DIRTY;
    r = state_commit (a);
  }
  if (r == 0)
    atomic_store (&a->dirty, true);
  pthread_mutex_unlock (&a->state_lock);
  return r;
}

int
state_flush_all (struct raid_array *a)
{
  struct mio mios[SB_MAX_MEMBERS];
  size_t n = 0;

  uint64_t stamp = hook_stamp (a);

  for (int t = 0; t < (int) a->sb.nmembers; t++)
    if (state_member_in_use (a, t))
      mios[n++] = (struct mio) { .m = a->mem[t].m, .op = MIO_FLUSH };
  if (mio_run (mios, n) != 0)
    for (size_t i = 0; i < n; i++)
      if (mios[i].err)
        state_member_error (a, mios[i].m, mios[i].err, true, 0);
  if (state_failed (a))
    return EIO;
  hook_flushed (a, stamp);     /* a member that failed it is out of use, its
                                  map took what it may lack */
  return 0;
}

/* ---- faults ---- */

bool
state_member_error (struct raid_array *a, struct member *m, int err,
                    bool is_write, uint64_t off)
{
  int t, before, now;

  for (t = 0; t < (int) a->sb.nmembers; t++)
    if (a->mem[t].m == m)
      break;
  if (t == (int) a->sb.nmembers)
    return false;

  pthread_mutex_lock (&a->state_lock);
  snprintf (a->last_fault, sizeof a->last_fault, "member %s: %s error at offset %"
            PRIu64 ": %s", member_spec (m), is_write ? "write" : "read", off,
            raid_strerror (err));
  raid_log (RAID_LOG_ERROR, "%s", a->last_fault);
  before = atomic_load (&a->mem[t].state);
  if (!state_member_in_use (a, t))
    ;                                      /* already out of use */
  else if (is_away_error (a, m, err))
    member_lost (a, t, err, is_write ? "write error" : "read error");
  else if (is_write || atomic_fetch_add (&a->mem[t].errors, 1) + 1 > STATE_MAX_READ_ERRORS)
    member_lost (a, t, err, is_write ? "write error" : "too many read errors");
  now = atomic_load (&a->mem[t].state);
  if (now != before)
    state_commit (a);
  pthread_mutex_unlock (&a->state_lock);
  if (now == RAID_MEMBER_MISSING && is_write)
    hook_write_lost (a, t, off);           /* the write it did not take */
  return now == RAID_MEMBER_FAULTY || now == RAID_MEMBER_MISSING;
}

void
state_last_fault (struct raid_array *a, char *buf, size_t len)
{
  snprintf (buf, len, "%s", a->last_fault);
}

/* ---- ownership: who holds the array open (checked by sb_check_owner) ---- */

int
state_set_owner (struct raid_array *a, bool held)
{
  int r;

  pthread_mutex_lock (&a->state_lock);
  memset (a->sb.owner_host, 0, sizeof a->sb.owner_host);
  if (held)
    gethostname (a->sb.owner_host, sizeof a->sb.owner_host - 1);
  a->sb.owner_pid = held ? (uint32_t) getpid () : 0;
  a->sb.owner_start_ns = held ? raid_now_realtime_ns () : 0;
  r = state_commit (a);
  pthread_mutex_unlock (&a->state_lock);
  return r;
}
