/* nbdkit-raid: the write gather (theory in gather.h). */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gather.h"
#include "util.h"

#define MAX_TRIES 64          /* a put that keeps losing its slot, or waiting
                                 in a full table, writes through */

int
gather_init (struct gather *G, bool on, gather_write_fn write, void *opaque)
{
  pthread_condattr_t ca;

  memset (G, 0, sizeof *G);
  G->on = on;
  G->write = write;
  G->opaque = opaque;
  pthread_mutex_init (&G->lock, NULL);
  pthread_cond_init (&G->freed, NULL);
  pthread_condattr_init (&ca);
  pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
  pthread_cond_init (&G->tick, &ca);
  pthread_condattr_destroy (&ca);
  return 0;
}

void
gather_fini (struct gather *G)
{
  for (int i = 0; i < GATHER_SLOTS; i++)
    free (G->slot[i].buf);
  pthread_mutex_destroy (&G->lock);
  pthread_cond_destroy (&G->freed);
  pthread_cond_destroy (&G->tick);
}

/* ---- the age (G4) ---- */

uint64_t
gather_age_ns (const struct gather *G)
{
  uint64_t age = 2 * atomic_load (&G->write_ns);

  return raid_min_u64 (raid_max_u64 (age, GATHER_AGE_MIN_NS), GATHER_AGE_MAX_NS);
}

/* The array write a drain or a bypassing write makes, timed (only when
 * the gather is on: nothing ages otherwise).  Concurrent updates may lose
 * one another's sample: the average stays one. */
static int
timed_write (struct gather *G, const uint8_t *buf, uint64_t len, uint64_t off,
             unsigned flags)
{
  uint64_t t0, avg;
  int err;

  if (!G->on)
    return G->write (G->opaque, buf, len, off, flags);
  t0 = raid_now_mono_ns ();
  err = G->write (G->opaque, buf, len, off, flags);

  avg = atomic_load (&G->write_ns);
  atomic_store (&G->write_ns, avg - avg / 8 + (raid_now_mono_ns () - t0) / 8);
  return err;
}

/* ---- slots (G->lock held) ---- */

/* The one place a slot changes state. */
static void
slot_set (struct gather *G, struct gslot *s, enum gslot_state to)
{
  if (s->state == GS_FREE && to != GS_FREE)
    atomic_fetch_add (&G->nlive, 1);
  if (s->state != GS_FREE && to == GS_FREE) {
    atomic_fetch_sub (&G->nlive, 1);
    s->nseg = 0;
  }
  if ((s->state == GS_DRAINING && to != GS_DRAINING) ||
      (s->state != GS_FREE && to == GS_FREE))    /* W1's wake-up */
    pthread_cond_broadcast (&G->freed);
  if (to == GS_FILLING && s->state == GS_FREE)
    s->gen++;
  s->state = to;
}

static bool
segs_overlap (const struct gslot *s, uint64_t lo, uint64_t hi)
{
  for (int i = 0; i < s->nseg; i++)
    if (s->seg[i].lo < hi && lo < s->seg[i].hi)
      return true;
  return false;
}

static bool
segs_inside (const struct gslot *s, uint64_t lo, uint64_t hi)
{
  for (int i = 0; i < s->nseg; i++)
    if (s->seg[i].lo < lo || s->seg[i].hi > hi)
      return false;
  return true;
}

/* Add [lo, hi) to the slot's segments; false (nothing changed) when that
 * would need more than GATHER_SEGS. */
static bool
segs_add (struct gslot *s, uint64_t lo, uint64_t hi)
{
  struct gseg out[GATHER_SEGS + 1];
  int n = 0, i = 0;

  while (i < s->nseg && s->seg[i].hi < lo)          /* wholly before */
    out[n++] = s->seg[i++];
  while (i < s->nseg && s->seg[i].lo <= hi) {       /* touching: merge */
    lo = raid_min_u64 (lo, s->seg[i].lo);
    hi = raid_max_u64 (hi, s->seg[i].hi);
    i++;
  }
  out[n++] = (struct gseg) { lo, hi };
  while (i < s->nseg)
    out[n++] = s->seg[i++];
  if (n > GATHER_SEGS)
    return false;
  memcpy (s->seg, out, n * sizeof out[0]);
  s->nseg = n;
  return true;
}

static struct gslot *
find_unit (struct gather *G, uint64_t off, uint64_t len)
{
  for (int i = 0; i < GATHER_SLOTS; i++) {
    struct gslot *s = &G->slot[i];
    if (s->state != GS_FREE && s->off == off && s->len == len)
      return s;
  }
  return NULL;
}

/* A slot other than the unit (off, len) whose bytes overlap [lo, hi): one
 * from before the stripe width changed. */
static struct gslot *
find_foreign (struct gather *G, uint64_t off, uint64_t len, uint64_t lo, uint64_t hi)
{
  for (int i = 0; i < GATHER_SLOTS; i++) {
    struct gslot *s = &G->slot[i];
    if (s->state != GS_FREE && (s->off != off || s->len != len) &&
        s->off < hi && lo < s->off + s->len)
      return s;
  }
  return NULL;
}

static bool
recently_completed (const struct gather *G, uint64_t end)
{
  for (unsigned i = 0; i < GATHER_RECENT; i++)
    if (G->recent[i] == end && end)
      return true;
  return false;
}

/* Is the partial piece [off, end) of unit u0 part of a stream: does it
 * start or end the unit (the first piece of a row, the rest of a row a
 * larger write began), or follow a unit that holds bytes or was just
 * completed? */
static bool
want_gather (struct gather *G, uint64_t u0, uint64_t unit, uint64_t off, uint64_t end)
{
  return off == u0 || end == u0 + unit ||
    (u0 >= unit && (find_unit (G, u0 - unit, unit) || recently_completed (G, u0)));
}

static struct gslot *
slot_new (struct gather *G, uint64_t off, uint64_t len)
{
  if ((uint64_t) atomic_load (&G->nlive) >= raid_max_u64 (GATHER_BYTES_MAX / len, 2))
    return NULL;                                         /* the memory bound */
  for (int i = 0; i < GATHER_SLOTS; i++) {
    struct gslot *s = &G->slot[i];
    if (s->state != GS_FREE)
      continue;
    if (s->cap < len) {
      uint8_t *b = malloc (len);
      if (!b)
        return NULL;
      free (s->buf);
      s->buf = b;
      s->cap = len;
    }
    s->off = off;
    s->len = len;
    s->born_ns = raid_now_mono_ns ();
    s->nseg = 0;
    slot_set (G, s, GS_FILLING);
    return s;
  }
  return NULL;
}

static struct gslot *
oldest_filling (struct gather *G)
{
  struct gslot *o = NULL;
  for (int i = 0; i < GATHER_SLOTS; i++)
    if (G->slot[i].state == GS_FILLING && (!o || G->slot[i].born_ns < o->born_ns))
      o = &G->slot[i];
  return o;
}

static bool
any_draining (struct gather *G)
{
  for (int i = 0; i < GATHER_SLOTS; i++)
    if (G->slot[i].state == GS_DRAINING)
      return true;
  return false;
}

/* ---- drains (called without the lock, on a slot this thread set
 * DRAINING) ---- */

/* Write the slot's segments.  Written: FREE.  EIO (the array cannot store
 * them: it failed): FREE, and lost is set for good (G3).  Any other error
 * (ENOMEM): the slot is FILLING again, its bytes still held and tried
 * again (by the ager, or the next flush). */
static int
drain (struct gather *G, struct gslot *s)
{
  int err = 0;

  for (int i = 0; i < s->nseg && !err; i++)
    err = timed_write (G, s->buf + (s->seg[i].lo - s->off),
                       s->seg[i].hi - s->seg[i].lo, s->seg[i].lo, 0);
  pthread_mutex_lock (&G->lock);
  if (err && err != EIO) {
    s->born_ns = raid_now_mono_ns ();
    slot_set (G, s, GS_FILLING);
  }
  else {
    G->lost |= err == EIO;
    slot_set (G, s, GS_FREE);
  }
  pthread_mutex_unlock (&G->lock);
  return err;
}

static int
drain_list (struct gather *G, struct gslot **list, int n)
{
  int err = 0;
  for (int i = 0; i < n; i++) {
    int e = drain (G, list[i]);
    if (e && !err)
      err = e;
  }
  return err;
}

/* Wait (W1) until none of the slots that hold bytes in [lo, hi) now is
 * being drained.  Only those: slots filled later hold writes concurrent
 * with the caller's request, which need no order, and a stream that keeps
 * draining rows in the range would otherwise keep the caller waiting.  A
 * caller waits here before it takes any slot, never while it holds one:
 * so no two threads can each wait for the other's slot. */
static void
wait_overlap_drained (struct gather *G, uint64_t lo, uint64_t hi)
{
  uint64_t gen[GATHER_SLOTS];
  bool rec[GATHER_SLOTS], busy;

  for (int i = 0; i < GATHER_SLOTS; i++) {
    rec[i] = G->slot[i].state != GS_FREE && segs_overlap (&G->slot[i], lo, hi);
    gen[i] = G->slot[i].gen;
  }
  do {
    busy = false;
    for (int i = 0; i < GATHER_SLOTS && !busy; i++)
      busy = rec[i] && G->slot[i].gen == gen[i] && G->slot[i].state == GS_DRAINING;
    if (busy)
      pthread_cond_wait (&G->freed, &G->lock);
  } while (busy);
}

/* ---- writes ---- */

int
gather_settle (struct gather *G, uint64_t lo, uint64_t hi, struct gather_hold *h)
{
  struct gslot *mine[GATHER_SLOTS];
  int n = 0;

  if (h)
    h->n = 0;
  if (!G->on || atomic_load (&G->nlive) == 0)
    return 0;
  pthread_mutex_lock (&G->lock);
  wait_overlap_drained (G, lo, hi);
  for (int i = 0; i < GATHER_SLOTS; i++) {
    struct gslot *s = &G->slot[i];
    if (s->state != GS_FILLING || !segs_overlap (s, lo, hi))
      continue;
    slot_set (G, s, GS_DRAINING);
    if (h && segs_inside (s, lo, hi))
      h->s[h->n++] = s;                  /* replaced: held until the write lands */
    else
      mine[n++] = s;                     /* older bytes around it: written first */
  }
  pthread_mutex_unlock (&G->lock);
  return drain_list (G, mine, n);
}

void
gather_release (struct gather *G, struct gather_hold *h, int err)
{
  if (h->n == 0)
    return;
  if (err) {                             /* not replaced after all */
    drain_list (G, h->s, h->n);
    return;
  }
  pthread_mutex_lock (&G->lock);
  for (int i = 0; i < h->n; i++)
    slot_set (G, h->s[i], GS_FREE);
  pthread_mutex_unlock (&G->lock);
}

void
gather_discard (struct gather *G, uint64_t from)
{
  if (!G->on || atomic_load (&G->nlive) == 0)
    return;
  pthread_mutex_lock (&G->lock);
  wait_overlap_drained (G, from, UINT64_MAX);
  for (int i = 0; i < GATHER_SLOTS; i++) {
    struct gslot *s = &G->slot[i];
    int n = 0;
    if (s->state != GS_FILLING)
      continue;
    for (int j = 0; j < s->nseg; j++)
      if (s->seg[j].lo < from) {
        s->seg[n] = s->seg[j];
        s->seg[n].hi = raid_min_u64 (s->seg[n].hi, from);
        n++;
      }
    s->nseg = n;
    if (n == 0)
      slot_set (G, s, GS_FREE);
  }
  pthread_mutex_unlock (&G->lock);
}

static int
through (struct gather *G, const uint8_t *buf, uint64_t len, uint64_t off,
         unsigned flags)
{
  struct gather_hold h;
  int err = gather_settle (G, off, off + len, &h);

  if (!err)
    err = timed_write (G, buf, len, off, flags);
  gather_release (G, &h, err);
  return err;
}

/* A unit a write's piece completed, DRAINING, not written yet (G4): the
 * write drains it once its other piece is placed.  err: EIO when a drain
 * of it lost bytes (G3; any other failure leaves them held). */
struct pending {
  struct gslot *s;
  int err;
};

static void
pending_drain (struct gather *G, struct pending *p)
{
  if (p->s && drain (G, p->s) == EIO)
    p->err = EIO;
  p->s = NULL;
}

/* A piece inside one unit [u0, u0 + unit).  A piece that completes its
 * unit leaves it in *p when *p is empty; when *p holds one already, both
 * are drained, that one first.  Before any wait, drain of a slot or
 * write-through, the unit in *p is drained: nobody waits holding it. */
static int
put (struct gather *G, const uint8_t *buf, uint64_t len, uint64_t off, uint64_t unit,
     struct pending *p)
{
  uint64_t u0 = raid_round_down (off, unit);
  struct gslot *s, *d;
  int tries = 0;

  pthread_mutex_lock (&G->lock);
  for (;;) {
    if (++tries > MAX_TRIES)
      break;
    if ((d = find_foreign (G, u0, unit, off, off + len)) != NULL) {
      if (d->state == GS_FILLING)
        goto drain_it;
      goto wait;
    }
    s = find_unit (G, u0, unit);
    if (s && s->state == GS_DRAINING)
      goto wait;
    if (!s && !want_gather (G, u0, unit, off, off + len))
      break;
    if (!s && (s = slot_new (G, u0, unit)) == NULL) {
      if (any_draining (G))                  /* full (or no memory): G4 */
        goto wait;
      if ((d = oldest_filling (G)) != NULL)
        goto drain_it;                                   /* full: make room */
      break;                                             /* ENOMEM: no gather */
    }
    if (!segs_add (s, off, off + len)) {
      d = s;
      goto drain_it;
    }
    memcpy (s->buf + (off - u0), buf, len);
    if (s->nseg == 1 && s->seg[0].lo == u0 && s->seg[0].hi == u0 + unit) {
      G->recent[G->nrecent++ % GATHER_RECENT] = u0 + unit;
      slot_set (G, s, GS_DRAINING);                      /* complete: a row */
      pthread_mutex_unlock (&G->lock);
      if (!p->s) {
        p->s = s;
        return 0;
      }
      pending_drain (G, p);                 /* rows in the order completed */
      return drain (G, s) == EIO ? EIO : 0;   /* else its bytes stay held (G3) */
    }
    pthread_mutex_unlock (&G->lock);
    return 0;

  wait:
    if (p->s)
      goto flush_pending;
    pthread_cond_wait (&G->freed, &G->lock);             /* W1 */
    continue;

  drain_it:                              /* another write's bytes: make room */
    if (p->s)
      goto flush_pending;
    slot_set (G, d, GS_DRAINING);
    pthread_mutex_unlock (&G->lock);
    if (drain (G, d) != 0)
      return through (G, buf, len, off, 0);  /* its failure is not this write's */
    pthread_mutex_lock (&G->lock);
    continue;

  flush_pending:
    pthread_mutex_unlock (&G->lock);
    pending_drain (G, p);
    pthread_mutex_lock (&G->lock);
  }
  pthread_mutex_unlock (&G->lock);
  pending_drain (G, p);
  return through (G, buf, len, off, 0);
}

int
gather_write (struct gather *G, const uint8_t *buf, uint64_t len, uint64_t off,
              uint64_t unit, unsigned flags)
{
  uint64_t end = off + len, lo, hi;
  struct pending p = { NULL, 0 };
  int err = 0;

  if (!G->on || flags || unit == 0 || unit > GATHER_UNIT_MAX || len == 0)
    return through (G, buf, len, off, flags);
  lo = raid_round_up (off, unit);                        /* first whole unit */
  hi = raid_round_down (end, unit);                      /* end of the last */
  if (lo >= hi) {                                        /* within two units */
    uint64_t cut = lo > off && lo < end ? lo : end;
    err = put (G, buf, cut - off, off, unit, &p);
    if (!err && cut < end)
      err = put (G, buf + (cut - off), end - cut, cut, unit, &p);
    pending_drain (G, &p);
    return err ? err : p.err;
  }
  if (off < lo)                             /* the partial ends first (gather.h) */
    err = put (G, buf, lo - off, off, unit, &p);
  if (!err && hi < end)
    err = put (G, buf + (hi - off), end - hi, hi, unit, &p);
  pending_drain (G, &p);
  if (!err)
    err = p.err;
  if (!err)
    err = through (G, buf + (lo - off), hi - lo, lo, 0);
  return err;
}

int
gather_drain_all (struct gather *G)
{
  struct gslot *mine[GATHER_SLOTS];
  uint64_t gen[GATHER_SLOTS];
  bool held[GATHER_SLOTS];
  int err = 0;

  if (!G->on)
    return 0;
  pthread_mutex_lock (&G->lock);
  for (int i = 0; i < GATHER_SLOTS; i++) {
    held[i] = G->slot[i].state != GS_FREE;
    gen[i] = G->slot[i].gen;
  }
  while (!err) {                           /* each slot that held bytes then */
    bool pending = false;
    int n = 0;
    for (int i = 0; i < GATHER_SLOTS; i++) {
      struct gslot *s = &G->slot[i];
      if (!held[i] || s->gen != gen[i] || s->state == GS_FREE)
        continue;
      if (s->state == GS_FILLING) {
        slot_set (G, s, GS_DRAINING);
        mine[n++] = s;
      }
      else
        pending = true;                    /* another thread is writing it */
    }
    if (n) {
      pthread_mutex_unlock (&G->lock);
      err = drain_list (G, mine, n);
      pthread_mutex_lock (&G->lock);
    }
    else if (pending)
      pthread_cond_wait (&G->freed, &G->lock);  /* W1, holding nothing */
    else
      break;
  }
  if (!err && G->lost)
    err = EIO;
  pthread_mutex_unlock (&G->lock);
  return err;
}

/* ---- reads ---- */

int
gather_snap_take (struct gather *G, uint64_t lo, uint64_t hi, struct gather_snap *s)
{
  uint64_t bytes = 0;
  int n = 0;
  uint8_t *p;

  s->n = 0;
  s->piece = NULL;
  if (!G->on || atomic_load (&G->nlive) == 0)
    return 0;
  pthread_mutex_lock (&G->lock);
  for (int i = 0; i < GATHER_SLOTS; i++)
    for (int j = 0; G->slot[i].state != GS_FREE && j < G->slot[i].nseg; j++) {
      const struct gseg *g = &G->slot[i].seg[j];
      if (g->lo < hi && lo < g->hi) {
        n++;
        bytes += raid_min_u64 (g->hi, hi) - raid_max_u64 (g->lo, lo);
      }
    }
  if (n == 0) {
    pthread_mutex_unlock (&G->lock);
    return 0;
  }
  s->piece = malloc (n * sizeof s->piece[0] + bytes);
  if (!s->piece) {
    pthread_mutex_unlock (&G->lock);
    return ENOMEM;
  }
  p = (uint8_t *) (s->piece + n);
  for (int i = 0; i < GATHER_SLOTS; i++)
    for (int j = 0; G->slot[i].state != GS_FREE && j < G->slot[i].nseg; j++) {
      const struct gslot *sl = &G->slot[i];
      const struct gseg *g = &sl->seg[j];
      uint64_t a = raid_max_u64 (g->lo, lo), b = raid_min_u64 (g->hi, hi);
      if (a >= b)
        continue;
      s->piece[s->n].off = a;
      s->piece[s->n].len = b - a;
      s->piece[s->n].data = p;
      memcpy (p, sl->buf + (a - sl->off), b - a);
      p += b - a;
      s->n++;
    }
  pthread_mutex_unlock (&G->lock);
  return 0;
}

void
gather_snap_apply (const struct gather_snap *s, uint8_t *buf, uint64_t lo,
                   uint64_t len)
{
  for (int i = 0; i < s->n; i++) {
    assert (s->piece[i].off >= lo && s->piece[i].off + s->piece[i].len <= lo + len);
    memcpy (buf + (s->piece[i].off - lo), s->piece[i].data, s->piece[i].len);
  }
}

void
gather_snap_free (struct gather_snap *s)
{
  free (s->piece);
  s->piece = NULL;
  s->n = 0;
}

/* ---- the ager (G4) ---- */

static void *
ager (void *arg)
{
  struct gather *G = arg;
  struct gslot *mine[GATHER_SLOTS];

  pthread_mutex_lock (&G->lock);
  while (!G->stop) {
    struct timespec ts;
    uint64_t now, age;
    int n = 0;

    clock_gettime (CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += GATHER_AGE_MIN_NS / 2;
    ts.tv_sec += ts.tv_nsec / 1000000000;
    ts.tv_nsec %= 1000000000;
    pthread_cond_timedwait (&G->tick, &G->lock, &ts);    /* W2 */
    now = raid_now_mono_ns ();
    age = gather_age_ns (G);
    for (int i = 0; i < GATHER_SLOTS; i++) {
      struct gslot *s = &G->slot[i];
      if (s->state == GS_FILLING && now - s->born_ns >= age) {
        slot_set (G, s, GS_DRAINING);
        mine[n++] = s;
      }
    }
    if (n) {
      pthread_mutex_unlock (&G->lock);
      drain_list (G, mine, n);
      pthread_mutex_lock (&G->lock);
    }
  }
  pthread_mutex_unlock (&G->lock);
  return NULL;
}

int
gather_start (struct gather *G)
{
  int r;

  if (!G->on)
    return 0;
  G->stop = false;
  if ((r = pthread_create (&G->ager, NULL, ager, G)) != 0)
    return r;
  G->ager_running = true;
  return 0;
}

void
gather_stop (struct gather *G)
{
  if (!G->ager_running)
    return;
  pthread_mutex_lock (&G->lock);
  G->stop = true;
  pthread_cond_signal (&G->tick);
  pthread_mutex_unlock (&G->lock);
  pthread_join (G->ager, NULL);
  G->ager_running = false;
}
