/* nbdkit-raid: assembling an array and keeping its state.
 *
 * The assembly rules are stated in array.h.  State invariants kept here:
 *   - a->sb is the newest durable state; it changes only under sb_lock and
 *     only through array_commit(), which appends the new record (events + 1)
 *     to every member still in use and returns once that is durable.  The
 *     caller's I/O that depends on the change (e.g. the retry of a write
 *     after a member failed) runs only after the commit returned.
 *   - a member's runtime state moves only forward while the array runs:
 *     in_sync -> faulty.  A faulty, missing or stale member is never read or
 *     written again, and never receives a journal record (so it can never
 *     look current at the next assembly).
 *   - health is recomputed from the runtime states after every change.
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

uint32_t
array_bad_roles (struct raid_array *a, const struct layout *L,
                 uint32_t *rb_mask, uint64_t *rb_row)
{
  uint32_t bad = 0, rb = 0;

  if (rb_row)
    *rb_row = atomic_load (&a->rb_row);
  for (int r = 0; r < L->g.raid_disks; r++) {
    int s = __atomic_load_n (&L->slot[r], __ATOMIC_ACQUIRE);
    int st = s < 0 || !a->mem[s].m ? RAID_MEMBER_MISSING
      : atomic_load (&a->mem[s].state);
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

static int
tolerance (const struct raid_geom *g)
{
  return g->level == 0 ? 0 : g->parity_disks;
}

void
array_update_health (struct raid_array *a)
{
  int nbad = __builtin_popcount (array_bad_roles (a, &a->cur, NULL, NULL));
  enum raid_health h = nbad == 0 ? RAID_HEALTH_OPTIMAL
    : nbad <= tolerance (&a->cur.g) ? RAID_HEALTH_DEGRADED : RAID_HEALTH_FAILED;

  if (atomic_load (&a->reshaping) && h != RAID_HEALTH_FAILED) {
    /* While reshaping, the new layout must be servable too, once it holds
     * data; before that the array serves from the old one, degraded, and
     * start is refused until the members come back (or abort). */
    int nbad1 = __builtin_popcount (array_bad_roles (a, &a->next, NULL, NULL));
    if (nbad1 > tolerance (&a->next.g))
      h = array_next_holds_data (a) ? RAID_HEALTH_FAILED : RAID_HEALTH_DEGRADED;
    else if (nbad1 && h == RAID_HEALTH_OPTIMAL)
      h = RAID_HEALTH_DEGRADED;
    nbad = raid_max_u64 (nbad, nbad1);
  }

  if ((int) h != atomic_exchange (&a->health, (int) h))
    raid_log (h == RAID_HEALTH_OPTIMAL ? RAID_LOG_INFO : RAID_LOG_ERROR,
              "array is now %s (%d of %d members unusable)",
              raid_health_name (h), nbad, a->cur.g.raid_disks);
}

/* Members that receive journal records: every member still in use. */
bool
array_member_in_use (struct raid_array *a, int t)
{
  int st = atomic_load (&a->mem[t].state);
  return a->mem[t].m &&
    (st == RAID_MEMBER_IN_SYNC || st == RAID_MEMBER_SPARE ||
     st == RAID_MEMBER_REBUILDING);
}

static void
mark_faulty_locked (struct raid_array *a, int t)
{
  atomic_store (&a->mem[t].state, RAID_MEMBER_FAULTY);
  a->sb.members[t].state = SB_MEMBER_FAULTY;
}

/* Append a->sb (events + 1) to every member in use; caller holds sb_lock.
 * A member whose append fails is marked faulty and the commit is redone
 * without it (at most once per member).  Returns 0, or EIO when no member
 * could be written. */
int
array_commit (struct raid_array *a)
{
  for (int attempt = 0; attempt <= SB_MAX_MEMBERS; attempt++) {
    struct member *ms[SB_MAX_MEMBERS];
    struct raid_sb *sbs;
    int idx[SB_MAX_MEMBERS], res[SB_MAX_MEMBERS], n = 0, nfail = 0;

    a->sb.events++;
    a->sb.utime_ns = raid_now_realtime_ns ();
    for (int t = 0; t < (int) a->sb.nmembers; t++)
      if (array_member_in_use (a, t))
        idx[n] = t, ms[n++] = a->mem[t].m;
    if (n == 0)
      return EIO;
    sbs = malloc (n * sizeof *sbs);
    if (!sbs)
      return ENOMEM;
    for (int j = 0; j < n; j++) {
      sbs[j] = a->sb;
      memcpy (sbs[j].member_uuid, a->sb.members[idx[j]].uuid, RAID_UUID_LEN);
      sbs[j].member_size = member_size (ms[j]);
    }
    sb_append_all (ms, sbs, n, res);
    free (sbs);
    for (int j = 0; j < n; j++)
      if (res[j]) {
        raid_log (RAID_LOG_ERROR, "%s: superblock update failed: %s",
                  member_spec (ms[j]), raid_strerror (res[j]));
        mark_faulty_locked (a, idx[j]);
        nfail++;
      }
    array_update_health (a);
    if (nfail == 0)
      return 0;
  }
  return EIO;
}

bool
array_member_io_error (struct raid_array *a, struct member *m, int err,
                       bool is_write, uint64_t off)
{
  int t;

  for (t = 0; t < (int) a->sb.nmembers; t++)
    if (a->mem[t].m == m)
      break;
  if (t == (int) a->sb.nmembers)
    return false;

  raid_log (RAID_LOG_ERROR, "member %s: %s error at offset %" PRIu64 ": %s",
            member_spec (m), is_write ? "write" : "read", off, raid_strerror (err));
  if (!is_write &&
      atomic_fetch_add (&a->mem[t].errors, 1) + 1 <= ARRAY_MAX_READ_ERRORS)
    return false;

  pthread_mutex_lock (&a->sb_lock);
  if (atomic_load (&a->mem[t].state) != RAID_MEMBER_FAULTY) {
    raid_log (RAID_LOG_ERROR, "member %s marked faulty", member_spec (m));
    mark_faulty_locked (a, t);
    array_update_health (a);
    array_commit (a);
  }
  pthread_mutex_unlock (&a->sb_lock);
  sync_cancel_target (a, t);
  return true;
}

/* ------------------------------------------------------------------ */
/* Assembly. */

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
  char e[256];

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

/* Runtime state of table entry t given the candidate that carries it. */
static int
entry_state (const struct raid_sb *newest, const struct sb_member_entry *e,
             const struct candidate *c)
{
  bool current;

  if (!c)
    return e->state == SB_MEMBER_SPARE ? -1 : RAID_MEMBER_MISSING;
  if (e->state == SB_MEMBER_FAULTY)
    return RAID_MEMBER_FAULTY;
  current = c->sb.events == newest->events ||
    (c->sb.events + 1 == newest->events && e->state == SB_MEMBER_IN_SYNC);
  if (!current)
    return RAID_MEMBER_STALE;
  switch (e->state) {
  case SB_MEMBER_IN_SYNC: return RAID_MEMBER_IN_SYNC;
  case SB_MEMBER_SPARE: return RAID_MEMBER_SPARE;
  case SB_MEMBER_REBUILDING: return RAID_MEMBER_REBUILDING;
  default: return RAID_MEMBER_STALE;
  }
}

static int
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
    if (st < 0)
      continue;
    atomic_store (&a->mem[t].state, st);
    if (found && st != RAID_MEMBER_FAULTY && st != RAID_MEMBER_STALE) {
      a->mem[t].m = found->m;
      found->used = true;
    }
    if (st == RAID_MEMBER_STALE || st == RAID_MEMBER_MISSING)
      raid_log (RAID_LOG_WARN, "role %d: member %s", e->role,
                st == RAID_MEMBER_STALE ? "is stale (older event count): not used"
                : "is missing");
  }
  for (int i = 0; i < n; i++)
    if (c[i].valid && !c[i].used)
      raid_log (RAID_LOG_WARN, "%s: not an active member of this array: not used",
                member_spec (c[i].m));
  return 0;
}

/* Build layout `id` from the superblock: 0 the current geometry (data at
 * data_offset), 1 the reshape target (data at new_data_offset).  Roles the
 * other layout alone uses are skipped; when two entries claim a role, the
 * one that is not faulty wins. */
int
array_layout_from_sb (struct raid_array *a, struct layout *L, int id,
                      char *err, size_t errlen)
{
  const struct raid_sb *sb = &a->sb;
  bool reshaping = sb->reshape_state != SB_RESHAPE_NONE;
  int other_n = id == 0 ? (int) sb->new_raid_devices : (int) sb->raid_disks;

  if (id == 0 ? raid_geom_init (&L->g, sb->level, sb->layout, sb->chunk,
                                sb->raid_disks, err, errlen) < 0
      : raid_geom_init (&L->g, sb->new_level, sb->new_layout, sb->new_chunk,
                        sb->new_raid_devices, err, errlen) < 0)
    return -1;
  L->id = id;
  L->rows = id == 0 ? sb->component_size / sb->chunk : UINT64_MAX;
  for (int r = 0; r < RAID_MAX_MEMBERS; r++)
    L->slot[r] = -1;
  for (int t = 0; t < (int) sb->nmembers; t++) {
    const struct sb_member_entry *e = &sb->members[t];
    if (e->role < 0 || e->state == SB_MEMBER_EMPTY || e->state == SB_MEMBER_SPARE)
      continue;
    if (e->role >= L->g.raid_disks && reshaping && e->role < other_n)
      continue;                           /* a member only the other layout uses */
    if (e->role >= L->g.raid_disks ||
        (L->slot[e->role] >= 0 && e->state != SB_MEMBER_FAULTY &&
         sb->members[L->slot[e->role]].state != SB_MEMBER_FAULTY)) {
      snprintf (err, errlen, "superblock member table is inconsistent (role %d)", e->role);
      return -1;
    }
    if (L->slot[e->role] >= 0 && e->state == SB_MEMBER_FAULTY)
      continue;
    L->slot[e->role] = t;
    L->data_offset[e->role] = id == 0 ? e->data_offset : e->new_data_offset;
  }
  return 0;
}

/* Whether a layout that holds data lacks a member: the old one always, the
 * new one once a reshape moved data into it. */
static bool
data_degraded (struct raid_array *a)
{
  return array_bad_roles (a, &a->cur, NULL, NULL) != 0 ||
    (array_next_holds_data (a) && array_bad_roles (a, &a->next, NULL, NULL) != 0);
}

/* After an unclean stop: replay the journal, or schedule a resync, or refuse
 * a degraded start that would expose the write hole. */
static int
start_consistency (struct raid_array *a, const struct raid_assemble_opts *o,
                   const char *u, char *err, size_t errlen)
{
  bool was_dirty = a->sb.flags & SB_FLAG_DIRTY;
  char e[256];
  int n, r;

  journal_init (a);
  a->journaled = journal_enabled (a);
  if (bitmap_init (a) != 0) {
    snprintf (err, errlen, "out of memory for the bitmap");
    return -1;
  }
  atomic_store (&a->dirty, was_dirty);
  if (!was_dirty || a->cur.g.level < 4)
    return 0;
  if (bitmap_enabled (a) && bitmap_load (a) < 0) {
    snprintf (err, errlen, "array %s: cannot read the write-intent bitmap", u);
    return -1;
  }
  if (a->journaled) {
    if ((r = journal_replay (a, &n, e, sizeof e)) != 0) {
      snprintf (err, errlen, "array %s: %s", u, e);
      return -1;
    }
    raid_log (RAID_LOG_WARN, "array %s was not shut down cleanly: "
              "replayed %d journal records", u, n);
    return 0;
  }
  if (data_degraded (a) && !o->force) {
    snprintf (err, errlen, "array %s was not shut down cleanly and is degraded: "
              "stripes being written at the crash may rebuild wrong data (the "
              "write hole; its consistency policy is %s, not journal); start "
              "with force=true to accept that", u,
              sb_consistency_name (a->sb.consistency));
    return -1;
  }
  pthread_mutex_lock (&a->sb_lock);
  if (a->sb.resync_offset == UINT64_MAX) {
    a->sb.resync_offset = 0;             /* resync everything, from the start */
    r = array_commit (a);
  }
  else
    r = 0;
  pthread_mutex_unlock (&a->sb_lock);
  raid_log (RAID_LOG_WARN, "array %s was not shut down cleanly: resyncing %s", u,
            bitmap_enabled (a) ? "the regions its bitmap marks" : "everything");
  return r ? -1 : 0;
}

int
array_mark_dirty (struct raid_array *a)
{
  int r = 0;

  if (atomic_load (&a->dirty))
    return 0;
  pthread_mutex_lock (&a->sb_lock);
  if (!(a->sb.flags & SB_FLAG_DIRTY)) {
    a->sb.flags |= SB_FLAG_DIRTY;
    r = array_commit (a);
  }
  if (r == 0)
    atomic_store (&a->dirty, true);
  pthread_mutex_unlock (&a->sb_lock);
  return r;
}

int
raid_array_assemble (struct member **ms, int n, const struct raid_assemble_opts *o,
                     struct raid_array **out, char *err, size_t errlen)
{
  struct candidate *c = calloc (n, sizeof *c);
  struct raid_array *a = calloc (1, sizeof *a);
  char u[RAID_UUID_STRLEN];
  bool changed = false;
  int best, nbad;

  if (!c || !a) {
    snprintf (err, errlen, "out of memory");
    goto fail;
  }
  for (int i = 0; i < n; i++)
    c[i].m = ms[i];
  if (read_candidates (c, n, &best, err, errlen) < 0)
    goto fail;
  a->sb = c[best].sb;
  pthread_mutex_init (&a->sb_lock, NULL);
  stripe_lock_init (&a->locks);
  if (array_layout_from_sb (a, &a->cur, 0, err, errlen) < 0 || bind_members (a, c, n) < 0)
    goto fail;

  nbad = __builtin_popcount (array_bad_roles (a, &a->cur, NULL, NULL));
  raid_uuid_format (a->sb.array_uuid, u);
  if (nbad > tolerance (&a->cur.g)) {
    snprintf (err, errlen,
              "array %s cannot start: %d of %d members usable, raid%d needs at least %d",
              u, a->cur.g.raid_disks - nbad, a->cur.g.raid_disks, a->cur.g.level,
              a->cur.g.raid_disks - tolerance (&a->cur.g));
    goto fail;
  }
  a->size = a->sb.array_size;
  a->can_fua = true;
  sync_init (a);
  atomic_store (&a->rb_row, 0);
  atomic_store (&a->repl_role, -1);
  for (int t = 0; t < (int) a->sb.nmembers; t++)
    if (atomic_load (&a->mem[t].state) == RAID_MEMBER_REBUILDING)
      atomic_store (&a->rb_row, a->sb.members[t].recovery_offset / a->sb.chunk);
  array_update_health (a);

  a->autostart = !o->no_autostart;
  if (reshape_assemble (a, err, errlen) < 0)
    goto fail;
  array_update_health (a);
  if (start_consistency (a, o, u, err, errlen) < 0)
    goto fail;

  /* Record roles lost since the last record before serving anything. */
  for (int t = 0; t < (int) a->sb.nmembers; t++) {
    int st = atomic_load (&a->mem[t].state);
    if (a->sb.members[t].state == SB_MEMBER_IN_SYNC &&
        (st == RAID_MEMBER_MISSING || st == RAID_MEMBER_STALE)) {
      a->sb.members[t].state = SB_MEMBER_FAULTY;
      changed = true;
    }
  }
  pthread_mutex_lock (&a->sb_lock);
  if (changed && array_commit (a) != 0) {
    pthread_mutex_unlock (&a->sb_lock);
    snprintf (err, errlen, "array %s: cannot record the missing members", u);
    goto fail;
  }
  pthread_mutex_unlock (&a->sb_lock);
  raid_log (RAID_LOG_INFO, "array %s: raid%d %s chunk %u, %d members, %s",
            u, a->cur.g.level, raid_layout_name (a->cur.g.layout), a->cur.g.chunk,
            a->cur.g.raid_disks, raid_health_name (atomic_load (&a->health)));
  for (int i = 0; i < n; i++)              /* members we do not use */
    if (c[i].m && !c[i].used)
      member_close (c[i].m);
  free (c);
  *out = a;
  return 0;

 fail:
  if (c) {
    for (int i = 0; i < n; i++)
      c[i].used = false;
    close_all (c, n);
  }
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
  if (sync_thread_start (a) != 0)
    return -1;
  array_resume_actions (a);
  return 0;
}

void
raid_array_close (struct raid_array *a)
{
  if (!a)
    return;
  sync_thread_stop (a);
  if (a->journaled && atomic_load (&a->health) != RAID_HEALTH_FAILED)
    journal_checkpoint (a);
  raid_array_flush (a);
  if (bitmap_enabled (a) && atomic_load (&a->health) != RAID_HEALTH_FAILED &&
      a->sb.resync_offset == UINT64_MAX)
    bitmap_clean (a, true);
  pthread_mutex_lock (&a->sb_lock);
  if ((a->sb.flags & SB_FLAG_DIRTY) && atomic_load (&a->health) != RAID_HEALTH_FAILED) {
    a->sb.flags &= ~SB_FLAG_DIRTY;          /* everything is durable: clean */
    array_commit (a);
  }
  pthread_mutex_unlock (&a->sb_lock);
  for (int t = 0; t < (int) a->sb.nmembers; t++)
    if (a->mem[t].m)
      member_close (a->mem[t].m);
  for (int i = 0; i < a->nretired; i++)
    member_close (a->retired[i]);
  stripe_lock_destroy (&a->locks);
  journal_fini (a);
  bitmap_fini (a);
  pthread_mutex_destroy (&a->sb_lock);
  free (a);
}

/* ------------------------------------------------------------------ */
/* I/O entry points. */

uint64_t raid_array_size (const struct raid_array *a) { return a->size; }
uint64_t raid_array_stripe_width (const struct raid_array *a) { return a->cur.g.stripe_width; }
bool raid_array_can_fua (const struct raid_array *a) { return a->can_fua; }

enum raid_health
raid_array_health (struct raid_array *a)
{
  return atomic_load (&a->health);
}

void
raid_array_get_sb (struct raid_array *a, struct raid_sb *out)
{
  pthread_mutex_lock (&a->sb_lock);
  *out = a->sb;
  pthread_mutex_unlock (&a->sb_lock);
}

static int
check_range (struct raid_array *a, uint64_t count, uint64_t off)
{
  if (off > a->size || count > a->size - off)
    return EINVAL;
  if (atomic_load (&a->health) == RAID_HEALTH_FAILED)
    return EIO;
  return 0;
}

int
array_span_io (struct raid_array *a, const struct layout *L, int op, void *buf,
               uint64_t count, uint64_t off, unsigned flags)
{
  switch (op) {
  case ARRAY_OP_READ: return stripe_read (a, L, buf, count, off);
  case ARRAY_OP_WRITE: return stripe_write (a, L, buf, count, off, flags);
  default: return stripe_zero (a, L, count, off, flags);
  }
}

/* A request on the whole array: one layout, or split at a reshape. */
static int
array_io (struct raid_array *a, int op, void *buf, uint64_t count, uint64_t off,
          unsigned flags)
{
  if (count == 0)
    return 0;
  if (atomic_load (&a->reshaping))
    return reshape_io (a, op, buf, count, off, flags);
  return array_span_io (a, &a->cur, op, buf, count, off, flags);
}

int
raid_array_pread (struct raid_array *a, void *buf, uint64_t count, uint64_t off)
{
  int err = check_range (a, count, off);
  atomic_store_explicit (&a->fg_ns, raid_now_mono_ns (), memory_order_relaxed);
  return err ? err : array_io (a, ARRAY_OP_READ, buf, count, off, 0);
}

int
raid_array_pwrite (struct raid_array *a, const void *buf, uint64_t count,
                   uint64_t off, unsigned flags)
{
  int err = check_range (a, count, off);
  atomic_store_explicit (&a->fg_ns, raid_now_mono_ns (), memory_order_relaxed);
  if (!err && count)
    err = array_mark_dirty (a);
  return err ? err : array_io (a, ARRAY_OP_WRITE, (void *) buf, count, off, flags);
}

int
raid_array_zero (struct raid_array *a, uint64_t count, uint64_t off,
                 unsigned flags, bool fast)
{
  uint64_t W = a->cur.g.stripe_width;
  int err = check_range (a, count, off);

  if (err)
    return err;
  if (fast && (off % W || (off + count) % W))
    return ENOTSUP;
  if (count && (err = array_mark_dirty (a)) != 0)
    return err;
  return array_io (a, ARRAY_OP_ZERO, NULL, count, off, flags);
}

int
raid_array_flush (struct raid_array *a)
{
  struct mio mios[SB_MAX_MEMBERS];
  size_t n = 0;

  for (int t = 0; t < (int) a->sb.nmembers; t++)
    if (array_member_in_use (a, t))
      mios[n++] = (struct mio) { .m = a->mem[t].m, .op = MIO_FLUSH };
  if (mio_run (mios, n) == 0)
    return atomic_load (&a->health) == RAID_HEALTH_FAILED ? EIO : 0;
  for (size_t i = 0; i < n; i++)
    if (mios[i].err)
      array_member_io_error (a, mios[i].m, mios[i].err, true, 0);
  return atomic_load (&a->health) == RAID_HEALTH_FAILED ? EIO : 0;
}

/* Rows from `row` on (at most max) whose answer is the same: all members in
 * use hold a hole (zero), or some member holds data. */
static uint64_t
row_run (struct raid_array *a, uint64_t row, uint64_t max, bool *zero)
{
  const struct layout *L = &a->cur;
  uint64_t chunk = L->g.chunk, hole_rows = max, data_rows = 0;
  uint32_t bad = array_bad_roles (a, L, NULL, NULL);

  *zero = true;
  for (int r = 0; r < L->g.raid_disks; r++) {
    struct member *m = layout_member (a, L, r);
    uint64_t run;
    bool hole;
    if (!m || (bad & (1u << r)))
      continue;
    if (member_extent (m, L->data_offset[r] + row * chunk, max * chunk, &hole, &run) != 0)
      hole = false, run = chunk;
    if (hole && run >= chunk)
      hole_rows = raid_min_u64 (hole_rows, run / chunk);
    else {                            /* data, or a hole ending inside the row */
      *zero = false;
      data_rows = raid_max_u64 (data_rows, raid_round_up (run, chunk) / chunk);
    }
  }
  return raid_max_u64 (1, *zero ? hole_rows : data_rows);
}

int
raid_array_extents (struct raid_array *a, uint64_t count, uint64_t off,
                    raid_extent_fn cb, void *opaque)
{
  uint64_t W = a->cur.g.stripe_width, end;
  int err = check_range (a, count, off);

  if (err)
    return err == EIO ? cb (opaque, off, count, false) : err;
  end = off + count;
  while (off < end) {
    uint64_t row = off / W, rows_left = (end - 1) / W - row + 1;
    bool zero;
    uint64_t n = row_run (a, row, raid_min_u64 (rows_left, a->cur.rows - row), &zero);
    uint64_t next = raid_min_u64 (end, (row + n) * W);
    if ((err = cb (opaque, off, next - off, zero)) != 0)
      return err;
    off = next;
  }
  return 0;
}
