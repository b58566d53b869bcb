/* nbdkit-raid: maps of missed regions (theory in missed.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "array-int.h"
#include "missed.h"
#include "regmap.h"
#include "util.h"

#define MISSED_MIN_REGION (256u << 10)     /* member bytes per bit, at least */

struct missed {
  uint64_t rows, rpr;                      /* of the current layout */
  struct regmap *map[SB_MISSED_SLOTS];     /* allocated for every slot */
  _Atomic bool active[SB_MISSED_SLOTS];    /* marks go to it */
  bool init[SB_MISSED_SLOTS];              /* begun, not yet recorded */
  struct sb_missed_slot pending[SB_MISSED_SLOTS];   /* what settle records */
  uint32_t unreplayed;                     /* begun slots settle records in
                                              missed_unreplayed (O) */
  _Atomic int nactive;
  _Atomic uint64_t gen;                    /* counts begins */
  _Atomic uint64_t *stamp;                 /* per region: last write's stamp */
  _Atomic uint64_t wseq, flushed;          /* stamps given; covered by a flush */
  uint64_t whole_on;                       /* slots in use when every recorded
                                              map was last written whole (the
                                              watcher's; 0 at start) */
  struct missed *older;                    /* replaced by a new geometry:
                                              freed at fini (a thread may
                                              still hold a pointer) */
};

static uint64_t
slot_bytes (const struct raid_array *a)
{
  return a->sb.missed_size / SB_MISSED_SLOTS;
}

static uint64_t
slot_offset (const struct raid_array *a, int i)
{
  return a->sb.missed_offset + (uint64_t) i * slot_bytes (a);
}

/* The slot holding member t's map (begun or recorded), or -1. */
static int
slot_of (struct raid_array *a, int t)
{
  struct missed *ms = a->ms;

  for (int i = 0; ms && i < SB_MISSED_SLOTS; i++) {
    const struct sb_missed_slot *s = ms->init[i] ? &ms->pending[i] : &a->sb.missed[i];
    if ((ms->init[i] || s->state == SB_MISSED_RECORDING) &&
        memcmp (s->uuid, a->sb.members[t].uuid, RAID_UUID_LEN) == 0)
      return i;
  }
  return -1;
}

static void
activate (struct missed *ms, int i, bool on)
{
  if (atomic_exchange (&ms->active[i], on) != on)
    atomic_fetch_add (&ms->nactive, on ? 1 : -1);
}

static void
free_maps (struct missed *ms)
{
  while (ms) {
    struct missed *older = ms->older;
    for (int i = 0; i < SB_MISSED_SLOTS; i++)
      regmap_free (ms->map[i]);
    free ((void *) ms->stamp);
    free (ms);
    ms = older;
  }
}

/* Empty maps for the current layout's rows. */
static struct missed *
new_maps (struct raid_array *a)
{
  const struct layout *L = router_layout (&a->router, LAYOUT_CUR);
  uint64_t bits = slot_bytes (a) * 8, rows = L->rows;
  struct missed *ms = calloc (1, sizeof *ms);

  if (!ms)
    return NULL;
  ms->rows = rows;
  ms->rpr = raid_max_u64 (raid_max_u64 (1, MISSED_MIN_REGION / L->g.chunk),
                          (rows + bits - 1) / bits);
  ms->stamp = calloc (rows / ms->rpr + 1, sizeof *ms->stamp);
  for (int i = 0; i < SB_MISSED_SLOTS && ms->stamp; i++)
    if (!(ms->map[i] = regmap_new (rows, ms->rpr, slot_offset (a, i))))
      break;
  if (!ms->stamp || !ms->map[SB_MISSED_SLOTS - 1]) {
    free_maps (ms);
    return NULL;
  }
  return ms;
}

int
missed_reinit (struct raid_array *a)
{
  struct missed *ms;

  if (!a->ms)
    return 0;
  missed_end_all (a);
  if (!(ms = new_maps (a)))
    return ENOMEM;                         /* the old maps stay, all ended */
  ms->older = a->ms;
  a->ms = ms;
  return 0;
}

int
missed_init (struct raid_array *a)
{
  struct missed *ms;

  if (!a->sb.missed_size || a->readonly)
    return 0;
  if (!(ms = new_maps (a)))
    return ENOMEM;
  a->ms = ms;
  a->hooks = &missed_hooks;                /* state.c calls us from now on */
  for (int i = 0; i < SB_MISSED_SLOTS; i++) {
    struct sb_missed_slot *s = &a->sb.missed[i];
    if (s->state != SB_MISSED_RECORDING)
      continue;
    if (s->rows_per_region != ms->rpr || router_two (&a->router)) {
      raid_log (RAID_LOG_WARN, "a map of missed regions no longer fits the "
                "geometry: its member will be rebuilt in full");
      memset (s, 0, sizeof *s);
      a->sb.missed_unreplayed &= ~(1u << i);
      continue;
    }
    for (int t = 0; t < (int) a->sb.nmembers; t++)
      if (state_member_in_use (a, t))
        regmap_load (a, ms->map[i], t);    /* the union: marks too much at worst */
    activate (ms, i, true);
  }
  return 0;
}

void
missed_fini (struct raid_array *a)
{
  a->hooks = NULL;
  if (a->ms)
    free_maps (a->ms);
  a->ms = NULL;
}

/* Mark in map i, in memory, the regions written since the last flush every
 * member completed: the away member acknowledged them, may not hold them. */
static void
mark_unflushed (struct missed *ms, int i)
{
  uint64_t flushed = atomic_load (&ms->flushed), n = regmap_nregions (ms->map[i]);

  for (uint64_t r = 0; r < n; r++)
    if (atomic_load (&ms->stamp[r]) > flushed)
      regmap_set (ms->map[i], r);
}

void
missed_begin (struct raid_array *a, int t)
{
  struct missed *ms = a->ms;
  int i;

  if (!ms || slot_of (a, t) >= 0)
    return;
  if (a->mem[t].m && a->mem[t].seen < a->mem[t].joined) {
    /* It came back into use (a rejoin, a rebuild) but never received the
     * record that says so: the one it holds shows it as it was before it
     * first left, and nothing marks what it missed in between. */
    raid_log (RAID_LOG_WARN, "member %s is away before it received the record that "
              "put it back in use: it will be rebuilt in full when it is back",
              a->sb.members[t].spec_hint);
    return;
  }
  if (router_two (&a->router)) {
    raid_log (RAID_LOG_WARN, "member %s is away during a reshape: it will be "
              "rebuilt in full when it is back", a->sb.members[t].spec_hint);
    return;
  }
  for (i = 0; i < SB_MISSED_SLOTS; i++)
    if (!ms->init[i] && a->sb.missed[i].state == SB_MISSED_FREE)
      break;
  if (i == SB_MISSED_SLOTS) {
    raid_log (RAID_LOG_WARN, "member %s is away and every map of missed regions "
              "is taken: it will be rebuilt in full when it is back",
              a->sb.members[t].spec_hint);
    return;
  }
  memcpy (ms->pending[i].uuid, a->sb.members[t].uuid, RAID_UUID_LEN);
  ms->pending[i].state = SB_MISSED_RECORDING;
  ms->pending[i].rows_per_region = (uint32_t) ms->rpr;
  /* The last record it received: the one it holds if it is open, else
   * (absent at this start) the newest, which it must hold to qualify. */
  ms->pending[i].since = a->mem[t].m ? a->mem[t].seen : a->sb.events;
  regmap_zero (ms->map[i]);
  mark_unflushed (ms, i);
  ms->init[i] = true;
  activate (ms, i, true);
  atomic_fetch_add (&ms->gen, 1);
}

/* Members that came into use (a spare added, one back) hold only the map
 * pages marked since: write every recorded map whole once more, so each
 * member in use holds all of it (a start reads the union of the members
 * present).  0 or an errno (tried again at the next settle). */
static int
settle_joined (struct raid_array *a)
{
  struct missed *ms = a->ms;
  uint64_t inuse = 0;
  bool any = false;
  int err = 0;

  if (!ms)
    return 0;
  pthread_mutex_lock (&a->state_lock);
  for (int t = 0; t < (int) a->sb.nmembers; t++)
    if (state_member_in_use (a, t))
      inuse |= UINT64_C(1) << t;
  for (int i = 0; i < SB_MISSED_SLOTS; i++)
    any |= a->sb.missed[i].state == SB_MISSED_RECORDING && !ms->init[i];
  pthread_mutex_unlock (&a->state_lock);
  ms->whole_on &= inuse;                   /* one that left lacks what follows */
  if (!any || !(inuse & ~ms->whole_on))
    return 0;
  for (int i = 0; i < SB_MISSED_SLOTS && !err; i++)
    if (atomic_load (&ms->active[i]))
      err = regmap_sync (a, ms->map[i], 0, UINT64_MAX);
  if (!err)
    ms->whole_on = inuse;
  return err;
}

int
missed_settle (struct raid_array *a)
{
  struct missed *ms = a->ms;
  int err = 0;

  for (int i = 0; ms && i < SB_MISSED_SLOTS; i++) {
    bool todo;
    pthread_mutex_lock (&a->state_lock);
    todo = ms->init[i];
    pthread_mutex_unlock (&a->state_lock);
    if (!todo)
      continue;
    if ((err = regmap_sync (a, ms->map[i], 0, UINT64_MAX)) != 0)
      continue;                            /* a member failed: try again */
    pthread_mutex_lock (&a->state_lock);
    if (ms->init[i]) {                     /* not ended meanwhile */
      a->sb.missed[i] = ms->pending[i];
      if (ms->unreplayed & (1u << i))
        a->sb.missed_unreplayed |= 1u << i;
      ms->unreplayed &= ~(1u << i);
      ms->init[i] = false;
      err = state_commit (a);
    }
    pthread_mutex_unlock (&a->state_lock);
  }
  return err ? err : settle_joined (a);
}

int
missed_begin_absent (struct raid_array *a)
{
  if (!a->ms)
    return 0;
  pthread_mutex_lock (&a->state_lock);
  for (int t = 0; t < (int) a->sb.nmembers; t++) {
    uint32_t was = a->sb.members[t].state;
    int i;
    if (!a->mem[t].m && a->sb.members[t].role >= 0 &&
        atomic_load (&a->mem[t].state) == RAID_MEMBER_MISSING &&
        (was == SB_MEMBER_IN_SYNC || was == SB_MEMBER_REBUILDING)) {
      missed_begin (a, t);
      if ((i = slot_of (a, t)) >= 0 && a->ms->init[i])
        missed_log_unread (a, t);          /* O: the replay reads no log of it */
    }
  }
  pthread_mutex_unlock (&a->state_lock);
  return missed_settle (a);
}

void
missed_log_unread (struct raid_array *a, int t)
{
  int i = a->ms ? slot_of (a, t) : -1;

  if (i >= 0 && a->ms->init[i])
    a->ms->unreplayed |= 1u << i;
  else if (i >= 0)
    a->sb.missed_unreplayed |= 1u << i;
}

static void
end_slot (struct raid_array *a, int i)
{
  memset (&a->sb.missed[i], 0, sizeof a->sb.missed[i]);
  a->sb.missed_unreplayed &= ~(1u << i);
  a->ms->unreplayed &= ~(1u << i);
  a->ms->init[i] = false;
  activate (a->ms, i, false);
}

void
missed_end (struct raid_array *a, int t)
{
  int i = slot_of (a, t);

  if (i >= 0)
    end_slot (a, i);
}

void
missed_end_all (struct raid_array *a)
{
  for (int i = 0; a->ms && i < SB_MISSED_SLOTS; i++)
    end_slot (a, i);
}

/* Mark rows [row, row + n) in every active map, durably. */
static int
mark_all (struct raid_array *a, uint64_t row, uint64_t n)
{
  struct missed *ms = a->ms;
  int err = 0;

  for (int i = 0; i < SB_MISSED_SLOTS; i++)
    if (atomic_load (&ms->active[i])) {
      int r = regmap_mark (a, ms->map[i], row, n);
      err = err ? err : r;
    }
  return err;
}

int
missed_start_write (struct raid_array *a, const struct layout *L, uint64_t row,
                    uint64_t n, uint64_t *token)
{
  struct missed *ms = a->ms;

  *token = ms ? atomic_load (&ms->gen) : 0;
  if (!ms || L->id != LAYOUT_CUR || atomic_load (&ms->nactive) == 0)
    return 0;
  return mark_all (a, row, n);
}

int
missed_end_write (struct raid_array *a, const struct layout *L, uint64_t row,
                  uint64_t n, uint64_t token)
{
  struct missed *ms = a->ms;
  uint64_t r1;

  if (!ms || L->id != LAYOUT_CUR || n == 0)
    return 0;
  r1 = raid_min_u64 ((row + n - 1) / ms->rpr + 1, ms->rows / ms->rpr + 1);
  for (uint64_t r = row / ms->rpr; r < r1; r++)
    atomic_store (&ms->stamp[r], atomic_fetch_add (&ms->wseq, 1) + 1);
  if (atomic_load (&ms->gen) == token)
    return 0;
  mark_all (a, row, n);        /* a member went away meanwhile: a failed page
                                  write left its member out of use, so the
                                  bits are durable on the members left */
  return 0;
}

void
missed_mark_member_off (struct raid_array *a, int t, uint64_t off)
{
  const struct layout *L = router_layout (&a->router, LAYOUT_CUR);
  uint64_t row = UINT64_MAX;
  int role, i = -1;

  if (!a->ms)
    return;
  pthread_mutex_lock (&a->state_lock);
  role = a->sb.members[t].role;
  if (role >= 0 && role < L->g.raid_disks && L->slot[role] == t &&
      off >= L->data_offset[role] && (i = slot_of (a, t)) >= 0)
    row = (off - L->data_offset[role]) / L->g.chunk;
  pthread_mutex_unlock (&a->state_lock);
  if (row != UINT64_MAX)                   /* a data write of its role */
    regmap_mark (a, a->ms->map[i], row, 1);
}

uint64_t
missed_stamp (struct raid_array *a)
{
  return a->ms ? atomic_load (&a->ms->wseq) : 0;
}

void
missed_flushed (struct raid_array *a, uint64_t stamp)
{
  struct missed *ms = a->ms;
  uint64_t cur;

  if (!ms)
    return;
  cur = atomic_load (&ms->flushed);
  while (cur < stamp && !atomic_compare_exchange_weak (&ms->flushed, &cur, stamp))
    ;
}

static bool
missed_judge (struct raid_array *a, int t, const struct raid_sb *own, uint64_t *from,
              bool *whole)
{
  const struct sb_member_entry *self, *e = &a->sb.members[t];
  int i = slot_of (a, t);

  *from = a->sb.component_size;
  *whole = false;
  if (i < 0 || a->ms->init[i] || !own)
    return false;
  self = sb_find_member ((struct raid_sb *) own, e->uuid);
  if (!self || (self->state != SB_MEMBER_IN_SYNC && self->state != SB_MEMBER_REBUILDING) ||
      self->role != e->role || self->data_offset != e->data_offset ||
      own->events < a->sb.missed[i].since || own->level != a->sb.level ||
      own->layout != a->sb.layout || own->chunk != a->sb.chunk ||
      own->raid_disks != a->sb.raid_disks || own->component_size != a->sb.component_size ||
      own->reshape_state != SB_RESHAPE_NONE || a->sb.reshape_state != SB_RESHAPE_NONE)
    return false;
  *whole = self->state == SB_MEMBER_IN_SYNC;
  if (self->state == SB_MEMBER_REBUILDING &&
      !((own->feature_compat & SB_FEAT_COMPAT_WHOLE_MAPS) &&
        own->events > a->sb.missed[i].since + 1))
    *from = self->recovery_offset;         /* being rebuilt when it left, not by
                                              a delta following this map (W) */
  return true;
}

/* slot_of under the state lock, for callers that do not hold it. */
static int
slot_of_unlocked (struct raid_array *a, int t)
{
  int i;

  pthread_mutex_lock (&a->state_lock);
  i = slot_of (a, t);
  pthread_mutex_unlock (&a->state_lock);
  return i;
}

int
missed_mark_role_row (struct raid_array *a, int role, uint64_t row)
{
  const struct layout *L = router_layout (&a->router, LAYOUT_CUR);
  int i;

  if (!a->ms || role < 0 || role >= L->g.raid_disks || L->slot[role] < 0 ||
      (i = slot_of_unlocked (a, L->slot[role])) < 0)
    return 0;
  return regmap_mark (a, a->ms->map[i], row, 1) == ENOMEM ? ENOMEM : 0;
}

bool
missed_row_marked (struct raid_array *a, int t, uint64_t row)
{
  int i = slot_of_unlocked (a, t);
  return i >= 0 && regmap_row_marked (a->ms->map[i], row);
}

uint64_t
missed_rows_per_region (struct raid_array *a, int t)
{
  (void) t;
  return a->ms ? a->ms->rpr : 1;
}

uint64_t
missed_count (struct raid_array *a, int t)
{
  int i = slot_of (a, t);                  /* state lock held (status) */
  return i >= 0 ? regmap_count (a->ms->map[i]) : 0;
}

uint64_t
missed_rows_needed (struct raid_array *a, int t, uint64_t start_row,
                    uint64_t from_row)
{
  int i = slot_of (a, t);
  uint64_t rows = a->ms ? a->ms->rows : 0, rpr = a->ms ? a->ms->rpr : 1, n = 0;

  from_row = raid_min_u64 (from_row, rows);
  start_row = raid_min_u64 (start_row, rows);
  if (i >= 0 && start_row < from_row) {
    /* the regions wholly in [start, from) in one look (the worker asks
     * before every batch, with the state lock held), the two ends apart */
    uint64_t r0 = start_row / rpr, r1 = (from_row - 1) / rpr;   /* first, last */
    if (r0 == r1)
      n = regmap_region_marked (a->ms->map[i], r0) ? from_row - start_row : 0;
    else {
      n = regmap_count_marked (a->ms->map[i], r0 + 1, r1) * rpr;
      if (regmap_region_marked (a->ms->map[i], r0))
        n += (r0 + 1) * rpr - start_row;
      if (regmap_region_marked (a->ms->map[i], r1))
        n += from_row - r1 * rpr;
    }
  }
  return n + (rows - raid_max_u64 (from_row, start_row));
}

bool
missed_has_map (struct raid_array *a, int t)
{
  return slot_of (a, t) >= 0;
}

uint64_t
missed_since (struct raid_array *a, int t)
{
  int i = slot_of (a, t);

  return i < 0 ? 0 : a->ms->init[i] ? a->ms->pending[i].since : a->sb.missed[i].since;
}

bool
missed_nothing (struct raid_array *a, int t)
{
  const struct layout *cur = router_layout (&a->router, LAYOUT_CUR);

  return a->mem[t].delta && missed_has_map (a, t) &&
    missed_rows_needed (a, t, 0, a->mem[t].delta_from / cur->g.chunk) == 0;
}

void
missed_judge_member (struct raid_array *a, int t, const struct raid_sb *own)
{
  struct array_member *mt = &a->mem[t];

  mt->delta = missed_judge (a, t, own, &mt->delta_from, &mt->whole);
  mt->log_due = mt->delta && own->consistency == SB_CONS_JOURNAL &&   /* O */
    (a->sb.missed_unreplayed & (1u << slot_of (a, t)));
  mt->log_epoch = own ? own->journal_epoch : 0;
  mt->log_seq = own ? own->journal_seq : 0;
  if (mt->log_due &&
      (own->cons_offset != a->sb.cons_offset || own->cons_size != a->sb.cons_size))
    mt->delta = mt->log_due = false;       /* its log is not where the array's
                                              is: not read, a full rejoin */
}

bool
missed_widen_due (struct raid_array *a, int t)
{
  int i = slot_of (a, t);

  return i >= 0 && !a->ms->init[i] && atomic_load (&a->mem[t].state) == RAID_MEMBER_STALE &&
    a->mem[t].delta && (a->mem[t].log_due || a->mem[t].delta_from < a->sb.component_size);
}

/* One member's O and W, taken under the state lock (missed_widen,
 * missed_owe_log). */
struct widen {
  struct raid_array *a;
  struct missed *ms;
  int i, role;
  struct member *m;
  bool log;                                /* its log is read (O) */
  uint64_t from, epoch, seq, cons_offset, cons_size;
  bool owe_all;                            /* every row left to the owed
                                              resync (missed_owe_log) */
  missed_fix_fn fix;                       /* else recomputed onto it */
  bool fixed;                              /* some were: flush it */
  uint64_t owe;                            /* rows from here left to it */
  struct layout L;                         /* the current layout */
};

static bool
widen_take (struct raid_array *a, int t, struct widen *w)
{
  if (t >= (int) a->sb.nmembers || !missed_widen_due (a, t))
    return false;
  *w = (struct widen) {
    .a = a, .ms = a->ms, .i = slot_of (a, t), .role = a->sb.members[t].role,
    .m = a->mem[t].m, .log = a->mem[t].log_due, .from = a->mem[t].delta_from,
    .epoch = a->mem[t].log_epoch, .seq = a->mem[t].log_seq,
    .cons_offset = a->sb.cons_offset, .cons_size = a->sb.cons_size,
    .owe = UINT64_MAX, .L = *router_layout (&a->router, LAYOUT_CUR),
  };
  return true;
}

/* Whether member t is still as w took it (not judged again meanwhile). */
static bool
widen_same (struct raid_array *a, int t, const struct widen *w)
{
  return a->ms == w->ms && slot_of (a, t) == w->i && missed_widen_due (a, t) &&
    a->mem[t].m == w->m && a->mem[t].log_due == w->log && a->mem[t].delta_from == w->from &&
    a->mem[t].log_epoch == w->epoch && a->mem[t].log_seq == w->seq;
}

/* O: a row where the member's own log holds a record of its parity: that
 * parity recomputed from the row's data onto the member, row by row (a
 * mark would make its delta rebuild the whole region, the member's data
 * blocks in it included, and in a row of a torn full-row write whose
 * resync is owed, journal.c OWED RESYNC, that block would be rebuilt from
 * the torn parity); marked when it cannot be (data of the row on a member
 * not in sync, a read failed).  Any write of the row since the member
 * left marked it (invariant M), so one racing this is redone by the
 * delta.  For a member taken back as it is: left to the owed resync. */
static int
mark_row (void *arg, uint64_t row)
{
  struct widen *w = arg;

  if (w->owe_all) {
    w->owe = raid_min_u64 (w->owe, row);
    return 0;
  }
  if (w->fix (w->a, &w->L, row, w->role, w->m) == 0) {
    w->fixed = true;
    return 0;
  }
  return regmap_mark (w->a, w->ms->map[w->i], row, 1);
}

/* O: the member's own log, as its record left it, each row mark_row's. */
static int
own_log (struct widen *w, missed_log_fn parity_rows)
{
  return parity_rows (w->m, w->a->sb.array_uuid, w->epoch, w->seq, &w->L, w->cons_offset,
                      w->cons_size, w->role, mark_row, w);
}

void
missed_owe_log (struct raid_array *a, int t, missed_log_fn parity_rows)
{
  struct widen w;
  int err;

  if (!widen_take (a, t, &w) || !w.log)
    return;
  w.owe_all = true;
  err = own_log (&w, parity_rows);
  a->mem[t].log_due = false;
  if (err) {
    raid_log (RAID_LOG_WARN, "member %s: its own write-hole log cannot be read (%s): "
              "the whole array is resynced once it is optimal", a->sb.members[t].spec_hint,
              raid_strerror (err));
    w.owe = 0;
  }
  if (w.owe == UINT64_MAX)
    return;
  a->sb.resync_offset = raid_min_u64 (a->sb.resync_offset, w.owe * w.L.g.stripe_width);
  raid_log (RAID_LOG_WARN, "member %s: its own write-hole log names rows from %" PRIu64
            " on whose parity it holds: they are resynced once the array is optimal",
            a->sb.members[t].spec_hint, w.owe);
}

void
missed_widen (struct raid_array *a, missed_log_fn parity_rows, missed_fix_fn fix)
{
  for (int t = 0; t < SB_MAX_MEMBERS; t++) {
    struct widen w;
    uint64_t row;
    bool due;
    int err = 0;

    pthread_mutex_lock (&a->state_lock);
    due = widen_take (a, t, &w);
    pthread_mutex_unlock (&a->state_lock);
    if (!due)
      continue;
    w.fix = fix;
    if (w.log)                             /* O: its own records first */
      err = own_log (&w, parity_rows);
    if (!err && w.fixed)
      err = member_flush (w.m);            /* before the bit goes */
    row = w.from / w.L.g.chunk;
    if (!err && row < w.ms->rows)          /* W: every row from `from` */
      err = regmap_mark (a, w.ms->map[w.i], row, w.ms->rows - row);
    if (err == EAGAIN)
      continue;                            /* a map copy failed, reported: again */
    pthread_mutex_lock (&a->state_lock);
    if (widen_same (a, t, &w)) {
      if (err) {                           /* its log unreadable, or out of
                                              memory: a full rejoin */
        raid_log (RAID_LOG_WARN, "member %s: cannot mark the rows it missed (%s): it "
                  "rejoins by a full resync", a->sb.members[t].spec_hint,
                  raid_strerror (err));
        a->mem[t].delta = false;
      }
      else {
        a->mem[t].delta_from = a->sb.component_size;
        if (w.log)                         /* recomputed or marked, flushed:
                                              the rejoin's record says so */
          a->sb.missed_unreplayed &= ~(1u << w.i);
      }
      a->mem[t].log_due = false;
    }
    pthread_mutex_unlock (&a->state_lock);
  }
}

void
missed_whole_start (struct raid_array *a)
{
  bool whole = a->sb.feature_compat & SB_FEAT_COMPAT_WHOLE_MAPS;

  for (int t = 0; t < (int) a->sb.nmembers; t++) {
    if (slot_of (a, t) < 0)
      continue;
    if (a->sb.members[t].role < 0)         /* its role went on without it */
      missed_end (a, t);
    else if (!whole && atomic_load (&a->mem[t].state) == RAID_MEMBER_REBUILDING) {
      raid_log (RAID_LOG_INFO, "member %s: its rebuild goes on in full (recorded by an "
                "older build)", a->sb.members[t].spec_hint);
      missed_end (a, t);
    }
  }
}

const struct state_hooks missed_hooks = {
  .away = missed_begin, .done = missed_end, .write_lost = missed_mark_member_off,
  .stamp = missed_stamp, .flushed = missed_flushed,
};
