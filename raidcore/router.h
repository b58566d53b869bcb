/* nbdkit-raid: the layout router — which layout holds each array byte, and
 * the registry of every request in flight.
 *
 * THEORY
 *
 * What it owns.  The array's layouts (layout.h): the current one and, while
 * a reshape is prepared or running, the target; the reshape's direction and
 * boundary (forward: [0, boundary) is in the target, the rest in the
 * current layout; backward: [boundary, end) is in the target); the role ->
 * member bindings and the replace mirror inside each layout; and the
 * registry of tickets: one per request that reads or writes array bytes.
 * No other code decides where an array byte lives.  OpenZFS's raidz
 * expansion works the same way: every I/O asks one function whether its
 * offset is in the old or the new layout, and the expansion's state lives
 * in one struct.
 *
 * Who calls it.
 *   - Everything that reads or writes array bytes (client read, write,
 *     zero, trim, block status; rebuild, scrub and replace batches) brackets
 *     its work with router_enter / router_leave and uses only the layouts
 *     and offsets of the answer it got (struct ticket).  Such work never
 *     enters the router again before it leaves (no nesting).
 *   - A thread that changes an answer first takes a claim over every byte
 *     whose answer changes (router_claim / router_release): the reshape
 *     worker for each window it moves, and management (under the
 *     management lock) for prepare, finish, abort, binding a spare to a role
 *     and starting or ending a replace.  Changes are made only while holding
 *     such a claim, and also the array's state lock (state.h), so that
 *     readers holding the state lock (status, health) see either the old or
 *     the new layouts, never half of a change.  The claimer's own I/O on the
 *     claimed range uses the layouts directly (router_layout), without a
 *     ticket.
 *
 * Invariants (lock: R->lock, a leaf mutex held for bookkeeping only).
 *   R1  A ticket's answer is computed under R->lock after the request has
 *       waited out every claim overlapping it, and stays valid until
 *       router_leave: while a ticket is registered, no claim overlapping it
 *       can be granted (router_claim returns only when no registered ticket
 *       overlaps the claim).
 *   R2  While a claim is held, requests overlapping it wait in router_enter
 *       before registering; requests elsewhere proceed.  At most one claim
 *       exists at a time, and a new claim is granted only after every
 *       request that waited out the previous one has registered (a
 *       turnstile): a request waits out at most ONE claim, never a run of
 *       them (a large request under consecutive reshape windows, or a
 *       window followed by the finish).
 *   R3  An answer changes only under a claim covering every byte whose
 *       answer changes (and the state lock).
 * Together: every request runs entirely on the answer that was valid when it
 * entered, and no answer changes under a request — so no acknowledged write
 * can land in a layout that no longer holds its bytes (a write that entered
 * before a reshape was prepared is drained by the first window's claim; one
 * that waited out the finish computes its answer after the switch).  The
 * protocol is checked exhaustively by tests/router.pml (spin).
 *
 * Waits, their wake-ups and bounds.
 *   W1  router_enter on a claim overlapping its range: woken by
 *       router_release (R->moved); bounded by that one claimer's work (one
 *       reshape window's copy and checkpoint, or a flush and a superblock
 *       commit), since the next claim waits for it (W2).
 *   W2  router_claim on another claim, or on requests that waited out the
 *       previous claim and have not registered yet: woken by
 *       router_release and by the last such request (R->moved).
 *   W3  router_claim on tickets overlapping its range: woken by router_leave
 *       (R->drained); bounded by those requests' own member I/O.
 * A claimer must hold no row lock, no journal gate and not the state lock
 * while it waits (the requests it waits for may need them); a ticket holder
 * never waits for a claim.  So no cycle can form.
 */
#ifndef RAIDCORE_ROUTER_H
#define RAIDCORE_ROUTER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "layout.h"

#define ROUTER_ALL UINT64_MAX              /* claim [0, ROUTER_ALL): everything */

/* One request's answer: at most two pieces, in ascending array order. */
struct route_piece {
  const struct layout *L;
  uint64_t off, len;                       /* array bytes in that layout */
};

struct ticket {
  uint64_t lo, hi;                         /* the request's array range */
  int n;
  struct route_piece p[2];
  struct ticket *prev, *next;              /* the registry (R->lock) */
};

struct router {
  pthread_mutex_t lock;
  pthread_cond_t moved;                    /* a claim ended (W1, W2) */
  pthread_cond_t drained;                  /* a ticket left a claim (W3) */
  struct layout L[2];                      /* [LAYOUT_CUR], [LAYOUT_NEXT] */
  bool two;                                /* a reshape: L[LAYOUT_NEXT] used */
  int dir;                                 /* enum sb_direction */
  uint64_t boundary;                       /* where the target meets cur */
  bool claimed;                            /* a claim is held or pending */
  unsigned waiters;                        /* requests waiting in W1 */
  uint64_t claim_lo, claim_hi;
  bool claimer_waits;                      /* a claimer sleeps in W3 */
  struct ticket *inflight;                 /* registered tickets */
};

void router_init (struct router *R, const struct layout *cur);
void router_destroy (struct router *R);

/* Register a request over array bytes [off, off + len) and fill t with its
 * answer (W1).  Pair with router_leave once its I/O is done. */
void router_enter (struct router *R, uint64_t off, uint64_t len, struct ticket *t);
void router_leave (struct router *R, struct ticket *t);

/* Claim [lo, hi): returns once no other claim is held (W2) and no ticket
 * overlapping it is registered (W3).  The caller must hold no row lock, no
 * journal gate and not the array state lock. */
void router_claim (struct router *R, uint64_t lo, uint64_t hi);
void router_release (struct router *R);

/* ---- Changes: the caller holds a claim over every byte whose answer
 * changes, and the array's state lock. ---- */

/* A reshape is prepared: `next` becomes the target, moving in `dir`, with
 * the boundary at its start (forward 0, backward `end`): no byte's answer
 * changes yet, but tickets must see the target from now on. */
void router_begin_reshape (struct router *R, const struct layout *next, int dir,
                           uint64_t end);
/* The window between the boundary and b was copied and is durable: move the
 * boundary (the claim covers that window). */
void router_move_boundary (struct router *R, uint64_t b);
/* The reshape is complete: the target becomes the current layout (`rows`
 * rows), and the router has one layout again (a claim over everything). */
void router_finish_reshape (struct router *R, uint64_t rows);
/* The reshape was aborted before data moved: back to one layout. */
void router_end_reshape (struct router *R);
/* Role `role` of layout `id` is now held by slot (-1: none), data at off. */
void router_bind_role (struct router *R, int id, int role, int slot, uint64_t off);
/* The current layout has `rows` rows now (its members grew). */
void router_set_rows (struct router *R, uint64_t rows);
/* Writes to `role` of the current layout also go to `slot` (-1: stop). */
void router_set_mirror (struct router *R, int role, int slot);

/* ---- Reading outside a ticket: for a claim holder, or under the array's
 * state lock (changes take both). ---- */
const struct layout *router_layout (const struct router *R, int id);
bool router_two (const struct router *R);
uint64_t router_boundary (const struct router *R);

#endif
