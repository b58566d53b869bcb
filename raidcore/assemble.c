/* nbdkit-raid: assembling an array from its members, starting and closing
 * it.  The assembly rules are stated in array.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "array-int.h"
#include "missed.h"
#include "bitmap.h"
#include "consistency.h"
#include "journal.h"
#include "reshape.h"
#include "stripe.h"
#include "sync.h"
#include "util.h"

struct candidate {
  struct member *m;
  struct raid_sb sb;
  bool valid;
  bool used;
};

static void
close_all (struct candidate *c, int n)
{
  for (int i = 0; i < n; i++)
    if (c[i].m && !c[i].used)
      member_close (c[i].m);
}

/* Read every member's newest record; pick the newest overall. */
static int
read_candidates (struct candidate *c, int n, int *best, char *err, size_t errlen)
{
  char e[256], e2[200];

  *best = -1;
  for (int i = 0; i < n; i++) {
    int r = sb_read_newest (c[i].m, &c[i].sb, e, sizeof e);
    if (r == EPROTONOSUPPORT || (r == 0 && sb_ro_compat_unknown (&c[i].sb))) {
      /* A newer format: refuse rather than fall back to older state. */
      snprintf (err, errlen, "%s: %s", member_spec (c[i].m),
                r ? e : "unknown read-only-compatible features: "
                "this build cannot write to it");
      return -1;
    }
    if (r != 0) {
      raid_log (RAID_LOG_WARN, "%s: %s: treated as missing",
                member_spec (c[i].m), r == ENOENT ? "no valid superblock" : e);
      continue;
    }
    c[i].valid = true;
    if (*best < 0 || c[i].sb.events > c[*best].sb.events)
      *best = i;
  }
  if (*best < 0) {
    snprintf (err, errlen, "no member holds a valid nbdkit-raid superblock");
    return -1;
  }
  for (int i = 0; i < n; i++) {
    char u1[RAID_UUID_STRLEN], u2[RAID_UUID_STRLEN];
    if (!c[i].valid ||
        !memcmp (c[i].sb.array_uuid, c[*best].sb.array_uuid, RAID_UUID_LEN))
      continue;
    raid_uuid_format (c[i].sb.array_uuid, u1);
    raid_uuid_format (c[*best].sb.array_uuid, u2);
    snprintf (err, errlen, "%s belongs to array %s, not to array %s",
              member_spec (c[i].m), u1, u2);
    return -1;
  }
  for (int i = 0; i < n; i++) {             /* what one record cannot know */
    const struct sb_member_entry *ent = c[i].valid
      ? sb_find_member (&c[*best].sb, c[i].sb.member_uuid) : NULL;
    if (identity_check_description (c[*best].sb.array_uuid, c[i].m, err, errlen) < 0)
      return -1;
    if (ent && sb_check_member_size (&c[*best].sb, ent, member_size (c[i].m), e2,
                                   sizeof e2) < 0) {
      if (ent->state == SB_MEMBER_MISSING) {  /* away: it is not taken back */
        raid_log (RAID_LOG_WARN, "%s: too small for the role it left (%s): not used",
                  member_spec (c[i].m), e2);
        c[i].valid = false;
        continue;
      }
      snprintf (err, errlen, "%s: member is smaller than the array's record says: "
                "%s", member_spec (c[i].m), e2);
      return -1;
    }
  }
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n; j++)
      if (c[i].valid && c[j].valid &&
          !memcmp (c[i].sb.member_uuid, c[j].sb.member_uuid, RAID_UUID_LEN)) {
        snprintf (err, errlen, "%s and %s are the same member",
                  member_spec (c[i].m), member_spec (c[j].m));
        return -1;
      }
  return 0;
}

/* Runtime state of table entry t given the candidate that carries it (NULL:
 * not given, or unreadable).  A member the record calls missing, or whose
 * own record is older than the array's, is stale: it is opened and rejoins
 * (is resynced) instead of being trusted. */
static int
entry_state (const struct raid_sb *newest, const struct sb_member_entry *e,
             const struct candidate *c)
{
  bool current;

  if (e->state == SB_MEMBER_EMPTY)
    return STATE_EMPTY;
  if (e->state == SB_MEMBER_FAULTY)
    return RAID_MEMBER_FAULTY;
  if (!c)
    return RAID_MEMBER_MISSING;
  current = c->sb.events == newest->events ||
    (c->sb.events + 1 == newest->events && e->state == SB_MEMBER_IN_SYNC);
  if (!current || e->state == SB_MEMBER_MISSING)
    return e->role >= 0 ? RAID_MEMBER_STALE : RAID_MEMBER_SPARE;
  switch (e->state) {
  case SB_MEMBER_IN_SYNC: return RAID_MEMBER_IN_SYNC;
  case SB_MEMBER_SPARE: return RAID_MEMBER_SPARE;
  case SB_MEMBER_REBUILDING: return RAID_MEMBER_REBUILDING;
  default: return RAID_MEMBER_STALE;
  }
}

static void
bind_members (struct raid_array *a, struct candidate *c, int n)
{
  for (int t = 0; t < (int) a->sb.nmembers; t++) {
    struct sb_member_entry *e = &a->sb.members[t];
    struct candidate *found = NULL;
    int st;

    for (int i = 0; i < n; i++)
      if (c[i].valid && !c[i].used &&
          !memcmp (c[i].sb.member_uuid, e->uuid, RAID_UUID_LEN))
        found = &c[i];
    st = entry_state (&a->sb, e, found);
    if (found && st != RAID_MEMBER_FAULTY) {
      member_assemble (a, t, st, found->m);
      a->mem[t].seen = found->sb.events;
      found->used = true;
    }
    else
      member_assemble (a, t, st, NULL);
    if (st == RAID_MEMBER_STALE)
      raid_log (RAID_LOG_WARN, "role %d: member %s is stale (it was away): it "
                "rejoins and is resynced", e->role, member_spec (found->m));
    else if (st == RAID_MEMBER_MISSING && e->role >= 0)
      raid_log (RAID_LOG_WARN, "role %d: member %s is missing", e->role,
                e->spec_hint[0] ? e->spec_hint : "(unknown)");
  }
  for (int i = 0; i < n; i++)
    if (c[i].valid && !c[i].used)
      raid_log (RAID_LOG_WARN, "%s: not an active member of this array: not used",
                member_spec (c[i].m));
}

/* Locks, conditions and defaults of a new array object. */
static void
init_array (struct raid_array *a, bool gather)
{
  pthread_condattr_t ca;

  pthread_mutex_init (&a->state_lock, NULL);
  pthread_mutex_init (&a->mgmt_lock, NULL);
  pthread_condattr_init (&ca);
  pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
  pthread_cond_init (&a->changed, &ca);
  pthread_condattr_destroy (&ca);
  stripe_lock_init (&a->locks);
  job_init (a);
  atomic_store (&a->rb_row, 0);
  a->can_fua = true;
  gather_init (&a->gather, gather, array_gathered_write, a);
  rowcache_init (&a->rowcache);
}

static void
destroy_array (struct raid_array *a, bool router_ok)
{
  gather_fini (&a->gather);
  rowcache_fini (&a->rowcache);
  stripe_lock_destroy (&a->locks);
  if (router_ok)
    router_destroy (&a->router);
  pthread_mutex_destroy (&a->state_lock);
  pthread_mutex_destroy (&a->mgmt_lock);
  pthread_cond_destroy (&a->changed);
  free (a);
}

/* Journal replay's intents: make the rows consistent again. */
static int
resync_rows (struct raid_array *a, const struct layout *L, uint64_t row, uint64_t rows)
{
  uint64_t ignored = 0;
  return stripe_check_rows (a, L, row, rows, true, &ignored);
}

/* Whether no more roles are lost than the current layout tolerates. */
static bool
enough_usable (struct raid_array *a)
{
  const struct layout *cur = router_layout (&a->router, LAYOUT_CUR);

  return __builtin_popcount (state_bad_roles (a, cur, NULL, NULL)) <=
    layout_tolerance (cur);
}

/* Fail when more roles are lost than the current layout tolerates; hint
 * (may be empty) ends the message. */
static int
check_usable (struct raid_array *a, const char *u, const char *hint, char *err,
              size_t errlen)
{
  const struct layout *cur = router_layout (&a->router, LAYOUT_CUR);
  int nbad = __builtin_popcount (state_bad_roles (a, cur, NULL, NULL));

  if (enough_usable (a))
    return 0;
  snprintf (err, errlen,
            "array %s cannot start: %d of %d members usable, raid%d needs at least %d%s",
            u, cur->g.raid_disks - nbad, cur->g.raid_disks, cur->g.level,
            cur->g.raid_disks - layout_tolerance (cur), hint);
  return -1;
}

/* A stale member (back from being away) whose map of missed regions says
 * it missed nothing: with force, it is in sync again before the array
 * counts its usable members (an outage of a member that a degraded array
 * needed failed the array, then a restart).  Only with force: the maps
 * loaded are the union of the copies on the members present, and a member
 * that came into use after a map began holds only the pages marked since;
 * when only such members are present the union may miss a mark (while
 * serving, the map in memory is whole: sync.c needs no force).  Without
 * force, a start that lacks members says that force takes it back.  State
 * lock not needed: nothing runs yet; committed with the start's record. */
static void
take_back_unmissed (struct raid_array *a, bool force, char *hint, size_t hintlen)
{
  for (int t = 0; t < (int) a->sb.nmembers && !enough_usable (a); t++) {
    int role = a->sb.members[t].role;
    if (atomic_load (&a->mem[t].state) != RAID_MEMBER_STALE || role < 0 ||
        !missed_nothing (a, t))
      continue;
    if (!force) {
      snprintf (hint, hintlen, "; %s (role %d) is stale, and its map of missed "
                "regions marks nothing: force=true takes it back as it is",
                member_spec (a->mem[t].m), role);
      continue;
    }
    missed_owe_log (a, t, journal_parity_rows);
    member_back_as_is (a, t, "back as it is: it missed no write while it was away");
  }
}

/* Whether stale member t may be taken back as it is when forced: it may
 * rejoin by a delta (its map covers what it missed since it left) and it
 * was whole when it left (not in the middle of its own rebuild: rows it
 * never received are not "older data", they are none). */
static bool
forcible (struct raid_array *a, int t)
{
  return atomic_load (&a->mem[t].state) == RAID_MEMBER_STALE &&
    a->sb.members[t].role >= 0 && a->mem[t].delta && missed_has_map (a, t) &&
    a->mem[t].whole;
}

/* When the stale members with a role left the array: the highest
 * `since` among them (the events of the last record each received), or 0
 * when one has no map (when it left is not known). */
static uint64_t
last_left (struct raid_array *a)
{
  uint64_t last = 0;

  for (int t = 0; t < (int) a->sb.nmembers; t++) {
    if (atomic_load (&a->mem[t].state) != RAID_MEMBER_STALE || a->sb.members[t].role < 0)
      continue;
    if (!missed_has_map (a, t))
      return 0;
    last = raid_max_u64 (last, missed_since (a, t));
  }
  return last;
}

/* A forcible stale member among those that left last (since == last,
 * from last_left before any was taken back), the one whose map marks the
 * fewest regions; or -1.  Such a member received every record until the
 * array failed: a write acknowledged and flushed before that is on it (a
 * region its map marks holds only writes in flight or not flushed when
 * the array failed).  One that left earlier missed acknowledged, flushed
 * writes in the regions its map marks: never taken as it is.  As mdadm
 * --assemble --force picks by event count. */
static int
freshest_stale (struct raid_array *a, uint64_t last)
{
  int best = -1;

  for (int t = 0; last && t < (int) a->sb.nmembers; t++)
    if (forcible (a, t) && missed_since (a, t) == last &&
        (best < 0 || missed_count (a, t) < missed_count (a, best)))
      best = t;
  return best;
}

/* When even the members that missed nothing are not enough (the outage
 * that failed the array also cost its last member a write in flight, or
 * writes not yet flushed when it left, which its map marks): with force,
 * as mdadm --assemble --force does, the stale members that left last
 * (freshest_stale) are taken back as they are, until the array can
 * start.  The last to leave missed only what was in flight or not flushed
 * when the array failed, so its marked regions may hold older data than
 * was written there, but only of writes never acknowledged or not
 * flushed: logged with their count.  Without force, the hint says so. */
static void
take_back_missed (struct raid_array *a, bool force, char *hint, size_t hintlen)
{
  uint64_t last = last_left (a);
  int t;

  while (!enough_usable (a) && (t = freshest_stale (a, last)) >= 0) {
    int role = a->sb.members[t].role;
    uint64_t n = missed_count (a, t);
    if (!force) {
      size_t l = strlen (hint);
      snprintf (hint + l, hintlen - l, "; %s (role %d) is stale, its map marks %" PRIu64
                " regions it may have missed: force=true takes it back as it is (the "
                "data there may be older than last written)", member_spec (a->mem[t].m),
                role, n);
      return;
    }
    raid_log (RAID_LOG_WARN, "%s (role %d): taken back as it is with force=true (it "
              "left last), though its map marks %" PRIu64 " regions it may have missed: "
              "the data there may be older than last written (writes in flight or not "
              "flushed when the array failed)", member_spec (a->mem[t].m), role, n);
    missed_owe_log (a, t, journal_parity_rows);
    member_back_as_is (a, t, "back as it is, forced");
  }
}

/* Enough members to start, stale ones that missed nothing taken back with
 * force when needed (take_back_unmissed), then, with force, those that
 * missed the least (take_back_missed); else -1 with a message. */
static int
start_usable (struct raid_array *a, const char *u, bool force, char *err, size_t errlen)
{
  char hint[400] = "";

  if (!enough_usable (a))
    take_back_unmissed (a, force, hint, sizeof hint);
  if (!enough_usable (a) && !*hint)
    take_back_missed (a, force, hint, sizeof hint);
  return check_usable (a, u, hint, err, errlen);
}

/* One member is rebuilding at a time: the cursor (a->rb_row, set by
 * start_layouts) is the first one's recovery offset.  A record of an
 * earlier build may show two (a rejoin begun while another rebuild was
 * under way): the first goes on, the others rejoin in full after it
 * (their rows past the cursor they shared cannot be trusted: no delta,
 * their maps end).  After missed_init. */
static void
one_rebuilding (struct raid_array *a)
{
  int first = -1;

  for (int t = 0; t < (int) a->sb.nmembers; t++) {
    if (atomic_load (&a->mem[t].state) != RAID_MEMBER_REBUILDING)
      continue;
    if (first < 0) {
      first = t;
      continue;
    }
    raid_log (RAID_LOG_WARN, "member %s: recorded rebuilding beside %s: it is "
              "rebuilt in full after it", member_spec (a->mem[t].m),
              member_spec (a->mem[first].m));
    member_assemble (a, t, a->sb.members[t].role >= 0 ? RAID_MEMBER_STALE
                     : RAID_MEMBER_SPARE, a->mem[t].m);
    missed_end (a, t);
  }
}

/* The layouts from the record. */
static int
start_layouts (struct raid_array *a, char *err, size_t errlen)
{
  struct layout cur;

  if (layout_from_sb (&a->sb, LAYOUT_CUR, &cur, err, errlen) < 0)
    return -1;
  router_init (&a->router, &cur);
  for (int t = 0; t < (int) a->sb.nmembers; t++)
    if (atomic_load (&a->mem[t].state) == RAID_MEMBER_REBUILDING) {
      atomic_store (&a->rb_row, a->sb.members[t].recovery_offset / a->sb.chunk);
      atomic_store (&a->rb_logged, atomic_load (&a->rb_row));
      break;                               /* one_rebuilding: the first */
    }
  atomic_store (&a->size, a->sb.array_size);
  pthread_mutex_lock (&a->state_lock);
  state_update_health (a);
  pthread_mutex_unlock (&a->state_lock);
  return reshape_assemble (a, err, errlen);
}

int
raid_array_assemble (struct member **ms, int n, const struct raid_assemble_opts *o,
                     struct raid_array **out, char *err, size_t errlen)
{
  struct candidate *c = calloc (n, sizeof *c);
  struct raid_array *a = calloc (1, sizeof *a);
  char u[RAID_UUID_STRLEN];
  const char *why;
  bool router_ok = false;
  int best;

  if (!c || !a) {
    snprintf (err, errlen, "out of memory");
    goto fail;
  }
  for (int i = 0; i < n; i++)
    c[i].m = ms[i];
  if (read_candidates (c, n, &best, err, errlen) < 0 ||
      sb_check_owner (&c[best].sb, member_spec (c[best].m), o->force, err, errlen))
    goto fail;
  a->sb = c[best].sb;
  raid_uuid_format (a->sb.array_uuid, u);
  init_array (a, o->gather && !o->readonly);
  job_note_replace (a);                    /* before any commit (job.h) */
  a->readonly = o->readonly;
  a->member_timeout_ns = (uint64_t) o->member_timeout * 1000000000u;
  bind_members (a, c, n);
  a->autostart = !o->no_autostart;
  if (start_layouts (a, err, errlen) < 0) {
    router_ok = router_layout (&a->router, LAYOUT_CUR)->g.raid_disks > 0;
    goto fail_bound;
  }
  router_ok = true;
  if (o->readonly && (why = cons_readonly_refusal (a)) != NULL) {
    snprintf (err, errlen, "array %s was not shut down cleanly and needs %s before "
              "it can be served: start it read-write once", u, why);
    goto fail_bound;
  }
  if (missed_init (a) != 0) {
    snprintf (err, errlen, "array %s: out of memory for the maps of missed regions", u);
    goto fail_bound;
  }
  one_rebuilding (a);
  missed_whole_start (a);
  for (int i = 0; i < n; i++)              /* back: may each rejoin by a delta? */
    for (int t = 0; t < (int) a->sb.nmembers; t++)
      if (c[i].used && a->mem[t].m == c[i].m &&
          atomic_load (&a->mem[t].state) == RAID_MEMBER_STALE)
        missed_judge_member (a, t, &c[i].sb);
  if (start_usable (a, u, o->force, err, errlen) < 0) {
    missed_fini (a);
    goto fail_bound;
  }
  if (cons_start (a, o->force, resync_rows, err, errlen) < 0)
    goto fail_cons;
  if (state_record_lost (a) != 0 || missed_settle (a) != 0) {
    snprintf (err, errlen, "array %s: cannot record the missing members", u);
    goto fail_cons;
  }
  raid_log (RAID_LOG_INFO, "array %s: raid%d %s chunk %u, %d members, %s",
            u, (int) a->sb.level, raid_layout_name (a->sb.layout), a->sb.chunk,
            (int) a->sb.raid_disks, raid_health_name (atomic_load (&a->health)));
  for (int i = 0; i < n; i++)              /* members we do not use */
    if (c[i].m && !c[i].used)
      member_close (c[i].m);
  free (c);
  *out = a;
  return 0;

 fail_cons:
  cons_stop (a);
  missed_fini (a);
 fail_bound:
  for (int i = 0; i < n; i++)
    c[i].used = false;
  close_all (c, n);
  destroy_array (a, router_ok);
  free (c);
  return -1;

 fail:
  if (c)
    close_all (c, n);
  else
    for (int i = 0; i < n; i++)
      member_close (ms[i]);
  free (c);
  free (a);
  return -1;
}

int
raid_array_start (struct raid_array *a)
{
  for (int t = 0; t < (int) a->sb.nmembers; t++)
    if (a->mem[t].m && member_start (a->mem[t].m) != 0)
      return -1;
  if (a->readonly)
    return 0;                              /* no background work, no record */
  if (state_set_owner (a, true) != 0)      /* after nbdkit's fork: our pid */
    return -1;
  pthread_mutex_lock (&a->mgmt_lock);
  sync_next_job (a);                       /* resume what the record owes */
  pthread_mutex_unlock (&a->mgmt_lock);
  return sync_thread_start (a) != 0 || away_start (a) != 0 ||
    gather_start (&a->gather) != 0 ? -1 : 0;
}

void
raid_array_close (struct raid_array *a)
{
  bool failed;

  if (!a)
    return;
  gather_stop (&a->gather);
  for (int i = 0, e = -1; e != 0; i++)       /* G4: held writes reach the array */
    if ((e = gather_drain_all (&a->gather)) != 0 && (e == EIO || i == 2)) {
      raid_log (RAID_LOG_ERROR, "writes held for gathering could not be written: %s",
                raid_strerror (e));
      break;
    }
  sync_thread_stop (a);
  away_stop (a);
  failed = atomic_load (&a->health) == RAID_HEALTH_FAILED || a->readonly;
  if (!failed)
    cons_checkpoint (a, NULL, NULL);       /* durable; the journal emptied */
  if (!a->readonly)
    state_flush_all (a);
  if (bitmap_enabled (a) && !a->readonly && a->sb.resync_offset == UINT64_MAX)
    bitmap_clean (a, true);              /* only when optimal */
  pthread_mutex_lock (&a->state_lock);
  if (((a->sb.flags & SB_FLAG_DIRTY) || a->sb.owner_pid) && !failed) {
    a->sb.flags &= ~SB_FLAG_DIRTY;          /* everything is durable: clean */
    a->sb.owner_pid = 0;                    /* and nobody holds it open */
    memset (a->sb.owner_host, 0, sizeof a->sb.owner_host);
    a->sb.owner_start_ns = 0;
    state_commit (a);
  }
  pthread_mutex_unlock (&a->state_lock);
  for (int t = 0; t < (int) a->sb.nmembers; t++)
    member_close (a->mem[t].m);
  for (int i = 0; i < a->nretired; i++)
    member_close (a->retired[i]);
  cons_stop (a);
  missed_fini (a);
  away_fini (a);
  destroy_array (a, true);
}
