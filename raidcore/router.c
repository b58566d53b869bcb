/* nbdkit-raid: the layout router (theory in router.h). */
#include <assert.h>

#include "router.h"
#include "util.h"

void
router_init (struct router *R, const struct layout *cur)
{
  pthread_mutex_init (&R->lock, NULL);
  pthread_cond_init (&R->moved, NULL);
  pthread_cond_init (&R->drained, NULL);
  R->L[LAYOUT_CUR] = *cur;
  R->L[LAYOUT_CUR].id = LAYOUT_CUR;
  R->two = false;
  R->boundary = 0;
  R->claimed = R->claimer_waits = false;
  R->waiters = 0;
  R->inflight = NULL;
}

void
router_destroy (struct router *R)
{
  assert (R->inflight == NULL && !R->claimed);
  pthread_mutex_destroy (&R->lock);
  pthread_cond_destroy (&R->moved);
  pthread_cond_destroy (&R->drained);
}

static bool
overlaps (uint64_t a0, uint64_t a1, uint64_t b0, uint64_t b1)
{
  return a0 < b1 && b0 < a1;
}

static bool
claim_overlaps (const struct router *R, uint64_t lo, uint64_t hi)
{
  return R->claimed && overlaps (lo, hi, R->claim_lo, R->claim_hi);
}

/* The answer for [lo, hi) (R->lock held). */
static void
route (const struct router *R, struct ticket *t)
{
  const struct layout *lower, *upper;
  uint64_t cut;

  t->n = 0;
  if (!R->two) {
    t->p[t->n++] = (struct route_piece) { &R->L[LAYOUT_CUR], t->lo, t->hi - t->lo };
    return;
  }
  lower = &R->L[R->dir == SB_DIR_FORWARD ? LAYOUT_NEXT : LAYOUT_CUR];
  upper = &R->L[R->dir == SB_DIR_FORWARD ? LAYOUT_CUR : LAYOUT_NEXT];
  cut = raid_max_u64 (t->lo, raid_min_u64 (t->hi, R->boundary));
  if (cut > t->lo)
    t->p[t->n++] = (struct route_piece) { lower, t->lo, cut - t->lo };
  if (t->hi > cut)
    t->p[t->n++] = (struct route_piece) { upper, cut, t->hi - cut };
}

void
router_enter (struct router *R, uint64_t off, uint64_t len, struct ticket *t)
{
  t->lo = off;
  t->hi = off + len;
  pthread_mutex_lock (&R->lock);
  if (claim_overlaps (R, t->lo, t->hi)) {
    R->waiters++;                      /* the next claim waits for us (W2) */
    while (claim_overlaps (R, t->lo, t->hi))
      pthread_cond_wait (&R->moved, &R->lock);         /* W1 */
    if (--R->waiters == 0)
      pthread_cond_broadcast (&R->moved);              /* ends W2 */
  }
  t->prev = NULL;
  t->next = R->inflight;
  if (R->inflight)
    R->inflight->prev = t;
  R->inflight = t;
  route (R, t);                                        /* R1: after the wait */
  pthread_mutex_unlock (&R->lock);
}

void
router_leave (struct router *R, struct ticket *t)
{
  pthread_mutex_lock (&R->lock);
  if (t->prev)
    t->prev->next = t->next;
  else
    R->inflight = t->next;
  if (t->next)
    t->next->prev = t->prev;
  if (R->claimer_waits && claim_overlaps (R, t->lo, t->hi))
    pthread_cond_signal (&R->drained);                 /* ends W3 */
  pthread_mutex_unlock (&R->lock);
}

static bool
busy (const struct router *R)
{
  for (const struct ticket *t = R->inflight; t; t = t->next)
    if (overlaps (t->lo, t->hi, R->claim_lo, R->claim_hi))
      return true;
  return false;
}

void
router_claim (struct router *R, uint64_t lo, uint64_t hi)
{
  pthread_mutex_lock (&R->lock);
  while (R->claimed || R->waiters)
    pthread_cond_wait (&R->moved, &R->lock);           /* W2 */
  R->claimed = true;                                   /* R2: new overlapping
                                                          requests wait */
  R->claim_lo = lo;
  R->claim_hi = hi;
  while (busy (R)) {
    R->claimer_waits = true;
    pthread_cond_wait (&R->drained, &R->lock);         /* W3 */
  }
  R->claimer_waits = false;
  pthread_mutex_unlock (&R->lock);
}

void
router_release (struct router *R)
{
  pthread_mutex_lock (&R->lock);
  assert (R->claimed);
  R->claimed = false;
  R->claim_lo = R->claim_hi = 0;
  pthread_cond_broadcast (&R->moved);                  /* ends W1, W2 */
  pthread_mutex_unlock (&R->lock);
}

/* ---- changes (a claim and the state lock are held by the caller) ---- */

void
router_begin_reshape (struct router *R, const struct layout *next, int dir,
                      uint64_t end)
{
  pthread_mutex_lock (&R->lock);
  assert (R->claimed && !R->two);
  R->L[LAYOUT_NEXT] = *next;
  R->L[LAYOUT_NEXT].id = LAYOUT_NEXT;
  R->dir = dir;
  R->boundary = dir == SB_DIR_FORWARD ? 0 : end;
  R->two = true;
  pthread_mutex_unlock (&R->lock);
}

void
router_move_boundary (struct router *R, uint64_t b)
{
  pthread_mutex_lock (&R->lock);
  assert (R->claimed && R->two &&
          R->claim_lo <= raid_min_u64 (b, R->boundary) &&
          R->claim_hi >= raid_max_u64 (b, R->boundary));
  R->boundary = b;
  pthread_mutex_unlock (&R->lock);
}

void
router_finish_reshape (struct router *R, uint64_t rows)
{
  pthread_mutex_lock (&R->lock);
  assert (R->claimed && R->claim_lo == 0 && R->claim_hi == ROUTER_ALL && R->two);
  R->L[LAYOUT_CUR] = R->L[LAYOUT_NEXT];
  R->L[LAYOUT_CUR].id = LAYOUT_CUR;
  R->L[LAYOUT_CUR].rows = rows;
  R->two = false;
  R->boundary = 0;
  pthread_mutex_unlock (&R->lock);
}

void
router_end_reshape (struct router *R)
{
  pthread_mutex_lock (&R->lock);
  assert (R->claimed && R->claim_lo == 0 && R->claim_hi == ROUTER_ALL);
  R->two = false;
  R->boundary = 0;
  pthread_mutex_unlock (&R->lock);
}

void
router_bind_role (struct router *R, int id, int role, int slot, uint64_t off)
{
  pthread_mutex_lock (&R->lock);
  assert (R->claimed && R->claim_lo == 0 && R->claim_hi == ROUTER_ALL);
  R->L[id].slot[role] = slot;
  R->L[id].data_offset[role] = off;
  pthread_mutex_unlock (&R->lock);
}

void
router_set_rows (struct router *R, uint64_t rows)
{
  pthread_mutex_lock (&R->lock);
  assert (R->claimed && R->claim_lo == 0 && R->claim_hi == ROUTER_ALL && !R->two);
  R->L[LAYOUT_CUR].rows = rows;
  pthread_mutex_unlock (&R->lock);
}

void
router_set_mirror (struct router *R, int role, int slot)
{
  pthread_mutex_lock (&R->lock);
  assert (R->claimed && R->claim_lo == 0 && R->claim_hi == ROUTER_ALL);
  R->L[LAYOUT_CUR].mirror_role = slot < 0 ? -1 : role;
  R->L[LAYOUT_CUR].mirror_slot = slot;
  pthread_mutex_unlock (&R->lock);
}

/* ---- reading ---- */

const struct layout *
router_layout (const struct router *R, int id)
{
  return &R->L[id];
}

bool
router_two (const struct router *R)
{
  return R->two;
}

uint64_t
router_boundary (const struct router *R)
{
  return R->boundary;
}
