/* nbdkit-raid: a Promela model of the layout router (raidcore/router.h,
 * router.c) and of the live reshape around it, checked exhaustively by spin.
 * tests/test-router-model.sh runs every configuration named below; by hand:
 *
 *   spin -a [-DOPTION...] router.pml && gcc -O2 -DSAFETY -o pan pan.c &&
 *   ./pan -m100000            (liveness: -DLIVENESS, no -DSAFETY, ./pan -a)
 *   spin -t [-DOPTION...] router.pml     replays a trail, narrated
 *
 * Options: N (positions, 3), WIN (positions per window, 1), OPS and OPS1
 * (requests of client 0 and 1, 2 and OPS), MGMT (a second claimer), CRASH
 * (a power loss anywhere), LIVENESS (the LTL formula `live`, with or
 * without MGMT), and the defects below.
 *
 * WHAT IS MODELLED, AND WHERE IT IS IN THE CODE
 *
 * An array of N positions, two geometries that each store every position
 * (GEOM_OLD, the layout before the reshape, and GEOM_NEW, its target), the
 * router, two clients, the reshape worker, optionally another management
 * claimer and a power loss.
 *
 *   model                      code
 *   ------------------------   ---------------------------------------------
 *   lay[LAYOUT_CUR],           R->L[LAYOUT_CUR], R->L[LAYOUT_NEXT]: which
 *     lay[LAYOUT_NEXT]           geometry each slot holds
 *   two, boundary              R->two, R->boundary (R->dir: forward)
 *   claimed, claim_lo/hi       R->claimed, R->claim_lo, R->claim_hi
 *   waiters                    R->waiters: requests in W1 (the turnstile)
 *   claimer_waits              R->claimer_waits
 *   reg[c], t_lo[c], t_hi[c]   client c's struct ticket, in R->inflight
 *   t_cut, t_lower, t_upper    the ticket's answer (route()): positions below
 *                                t_cut in t_lower's geometry, the rest in
 *                                t_upper's (t->p[0], t->p[1])
 *   moved_w, drained_w         R->moved, R->drained: the threads waiting on
 *                                each, one bit per thread (ID_*)
 *   atomic { ... }             a critical section under R->lock
 *   cond_wait()                pthread_cond_wait: joins the waiters and drops
 *                                the lock in one step, blocks until woken,
 *                                retakes the lock; the caller re-tests its
 *                                condition in the code's while loop
 *   router_enter, _leave,      the functions of the same name, line for line
 *     _claim, _release,          (bookkeeping of the inflight list aside)
 *     _begin_reshape,
 *     _move_boundary,
 *     _finish_reshape
 *   vol[g*N+p]                 position p's member bytes in geometry g, as
 *                                reads see them
 *   dur[g*N+p]                 the same bytes as last flushed (CRASH)
 *   rec_dur, pos_dur, new_dur  the superblock journal: the reshape record
 *                                exists (sb reshape_state), its position,
 *                                the new geometry is committed (finished)
 *   running                    the record's state is running (`start`)
 *   client()                   the plugin's pread/pwrite/flush callbacks:
 *                                raid_array_pread/pwrite = router_enter,
 *                                stripe_read/write on the answer's layouts,
 *                                router_leave, reply; raid_array_flush
 *   reshape(), worker()        manage.c's prepare (`reshape` request) and
 *                                `start`, reshape.c's worker: reshape_step
 *                                per window, then reshape_finish
 *   mgmt()                     management under a claim over everything that
 *                                changes no byte's answer (router_bind_role)
 *   power(), recover()         a power loss; the next start (reshape_assemble
 *                                rebuilds the router from the superblock,
 *                                `start`, the worker resumes)
 *
 * Client c writes only positions [OWN_LO(c), OWN_HI(c)) (any sub-range, so
 * a two-position write can straddle the boundary and get a two-piece
 * answer); anyone reads any position.  A write to p writes issued[p] + 1
 * (issued[p] is the value of p's latest write issued; only p's owner
 * changes it, before entering the router), so the values of a position are
 * ordered by issue, and "the last acknowledged write" of p is acked[p]: the
 * value of its owner's latest write that was replied to.  No two writes to
 * one position are ever concurrent.  GEOM_NEW starts as GARBAGE, a value no
 * one writes.
 *
 * PROPERTIES (each an assert, so spin gives the trail that breaks it)
 *
 *   (a) LOST_WRITE: no acknowledged write is lost.  When every process has
 *       ended, every position read through the router's final answer holds
 *       acked[p], and the reshape is complete (one layout, GEOM_NEW).
 *       CRASH: after a power loss, the restart and the rest of the reshape,
 *       every position holds a value between dacked[p] (the latest
 *       acknowledged write that a flush or checkpoint then covered) and
 *       issued[p]: an acknowledged but unflushed write may be there or not.
 *   (b) READ_OK: a read of p returns a value that was written (<=
 *       issued[p]: never GARBAGE) and is not older than acked[p] was when
 *       the read was issued (a write acknowledged before the read).
 *   (c) No deadlock: spin's invalid end states (every process must end;
 *       none may be left blocked in a wait).  No request and no claimer
 *       waits forever: -DLIVENESS checks the LTL formula `live` (every
 *       request that is issued is answered; every claim the worker, and
 *       MGMT's, asks for is granted) for acceptance cycles, without
 *       fairness: a thread blocked forever with no one left to wake it is
 *       already a counterexample.  So the turnstile cannot starve a
 *       claimer (W2 waits for the waiters, and the last one wakes it).
 *       Bounded waiting, W1_BOUNDED: a request waits out at most ONE claim
 *       (W1_CLAIMS = 1, whatever its range, the window size, the second
 *       claimer or the power loss), never a run of them.
 *
 * WHICH INVARIANTS OF router.h THE MODEL CHECKS, AND HOW
 *
 *   R1  ANSWER_STABLE: router_move_boundary and router_finish_reshape
 *       assert that no request holding an answer (answered[c]: set where
 *       route() runs, cleared in router_leave) overlaps the bytes whose
 *       answer they change.  (a) and (b) check its consequence end to end.
 *   R2  ONE_CLAIM: a ghost count of granted claims is at most 1.  "Requests
 *       overlapping the claim wait, the others proceed" is W1's loop
 *       condition, which is the code's.  The turnstile ("a new claim is
 *       granted only after every request that waited out the previous one
 *       has registered") is the code's: router_enter counts itself in
 *       waiters before W1 and out after it, broadcasting moved when the
 *       count reaches 0; W2 waits while claimed || waiters > 0.  Its
 *       consequence, "a request waits out at most one claim", is
 *       W1_BOUNDED.
 *   R3  each change function asserts the claim it needs, as router.c does
 *       (claimed; covering the boundary's move; everything for finish).
 *   W1, W2, W3  are the code's while loops with the code's wake-ups
 *       (router_release broadcasts moved, ending W1 and W2; the last
 *       request out of W1 broadcasts moved, ending W2; router_leave
 *       signals drained only when a claimer waits and the ticket overlaps
 *       its claim, ending W3).  A missing wake-up is an invalid end state
 *       and violates `live`: the mutants DEFECT_NO_DRAIN_SIGNAL (W3) and
 *       DEFECT_NO_WAITERS_WAKE (W2: a claimer starved by the turnstile)
 *       show the checks catch one.  W1's bound is W1_BOUNDED: the ghost w1
 *       counts a request's passes through W1's loop, and spin checks that
 *       it is at most 1 in every run, so a woken request always finds its
 *       claim gone (no other claim can be granted before it registers).
 *       The bound is tight (any request that meets a claim waits once),
 *       and it is the turnstile's: without it (DEFECT_NO_TURNSTILE, the
 *       old code) the worker re-claims before the woken request gets the
 *       lock, and the request waits out two claims or more (the old bound
 *       was prepare's, finish's, MGMT's and every window its range
 *       overlaps).
 *
 * DEFECTIVE VARIANTS (spin must reject each; the test requires that the
 * failed assertion is a data property, (a) or (b), unless said otherwise
 * below, and prints the trail;
 * -DNO_ANSWER_CHECK turns R1's assertion off so that the trail runs on
 * until data is lost.  OLD and NEW are GEOM_OLD and GEOM_NEW.)
 *
 *   -DDEFECT_STALE_ROUTE: router_enter computes the answer before waiting
 *       out the claims overlapping it (the old code decided the layout,
 *       then waited for the window or for the finish, and resumed on a
 *       layout that no longer held the bytes).  The test's trail (OPS=1,
 *       the depth-first search's first), the finish case:
 *         worker  prepare; windows [0,1), [1,2); claims [2,3), copies
 *                 OLD[2] = 0 to NEW, checkpoint 3
 *         c1      write [2,3): answer "OLD" (the boundary is still 2),
 *                 then waits (W1) for the window's claim, no ticket yet
 *         worker  boundary 3; release; the finish's claim waits (W2) for
 *                 c1, which waited out the window (the turnstile)
 *         c1      registers, with its stale answer
 *         worker  claims everything, waits (W3) for c1's ticket
 *         c1      writes OLD[2] = 1 on its stale answer; acknowledged
 *         worker  finishes: CUR is NEW; release
 *         end     NEW[2] = 0, acknowledged 1: LOST_WRITE fails
 *       The turnstile does not help: the claim it waited out already
 *       moved its bytes.  The shortest trail (pan -i, OPS=2) is the first
 *       window's case: the worker prepares, claims [0,1), copies OLD[0] =
 *       0, checkpoint 1; c0's write [0,1) gets "OLD" and waits (W1) for
 *       that claim; the boundary moves to 1, release; c0 writes OLD[0] =
 *       1, is acknowledged, reads [0,1) from NEW: 0 (READ_OK fails).
 *
 *   -DDEFECT_UNREGISTERED: a request that enters while no reshape exists
 *       (!two) takes no ticket (the old code's array_io went straight to
 *       array_span_io on a->cur when !a->reshaping), so neither prepare's
 *       claim nor any window's waits for it.  The test's trail (OPS=1):
 *         worker  prepare: commits the record (nothing claimed yet)
 *         c1      write [2,3) enters: no reshape, so answer "OLD", and no
 *                 ticket
 *         worker  claims everything: nothing to wait for; begin_reshape;
 *                 windows [0,1), [1,2), [2,3) (copies OLD[2] = 0 to NEW:
 *                 nothing to wait for); finish: CUR is NEW
 *         c1      writes OLD[2] = 1, which no longer holds position 2;
 *                 acknowledged
 *         end     NEW[2] = 0, acknowledged 1: LOST_WRITE fails
 *       Shortest (pan -i, OPS=2): c0's write [0,1) enters between the
 *       record's commit and prepare's claim; the worker prepares, copies
 *       the first window [0,1) and moves the boundary; c0 writes OLD[0] =
 *       1, is acknowledged, and its read of [0,1) from NEW gets 0.
 *
 *   -DDEFECT_NO_DRAIN_SIGNAL: router_leave never signals drained.  The
 *       worker's finish claim waits (W3) for c1's write, which leaves
 *       without waking it; the worker sleeps on, and c0's write waits (W1)
 *       for that claim forever: an invalid end state, and with -DLIVENESS
 *       an acceptance cycle of `live`.
 *
 *   -DDEFECT_COMMIT_BEFORE_FLUSH (with CRASH): the checkpoint commits the
 *       position before the flush.  A power loss between the two keeps the
 *       new position but not NEW's copy of the window: after the restart
 *       the worker starts after that window, and finishes with NEW[2] =
 *       GARBAGE: LOST_WRITE fails.  It shows the CRASH run sees a lost
 *       write across a power loss.
 *
 *   -DDEFECT_NO_TURNSTILE: router_claim ignores waiters (W2 waits only
 *       while claimed: the code before the turnstile).  No data is lost,
 *       but W1_BOUNDED fails.  The test's trail (OPS=1):
 *         worker  prepare; windows [0,1), [1,2); claims [2,3), copies
 *                 OLD[2] = 0 to NEW, checkpoint 3, boundary 3
 *         c1      write [2,3) waits (W1) for the window's claim [2,3)
 *         worker  release (wakes c1); claims everything for the finish
 *                 before c1 gets the lock; finish: CUR is NEW
 *         c1      wakes, finds the finish's claim over [2,3) and waits
 *                 (W1) again: w1 = 2, W1_BOUNDED fails
 *       Shortest (pan -i, OPS=2): c0's read [0,1) waits out prepare's
 *       claim, and the worker claims the window [0,1) before c0 gets the
 *       lock.  Without the turnstile the run of claims a request can wait
 *       out is bounded only by the claims that can cover it.
 *
 *   -DDEFECT_NO_WAITERS_WAKE: the last request out of W1 does not
 *       broadcast moved, so a claimer that the turnstile held back in W2
 *       is never woken: the turnstile starves it.  The test's trail
 *       (-DLIVENESS, OPS=1): c1's write [2,3) waits (W1) for the last
 *       window's claim; the worker releases it and asks for the finish's
 *       claim, which waits (W2) for c1; c1 registers without waking it,
 *       writes and is acknowledged, c0's write too, and the worker sleeps
 *       in W2 forever (in_claim stays true): an acceptance cycle of
 *       `live`.  It shows the liveness run catches a claimer starved by
 *       the turnstile, which the correct model passes.
 *
 * WHAT IS ABSTRACTED AWAY, AND WHY THAT IS SOUND
 *
 *   - Bytes, stripes, parity, stripe locks, the write-hole journal: a
 *     position is one cell per geometry, written in one step.  Those are
 *     the stripe engine's and journal's properties (test-stripe,
 *     test-crash); the router decides only which layout holds a byte, and
 *     a request loses with the router only what one of its cells loses.
 *     Two-position writes exercise the two-piece answer.
 *   - The geometries are disjoint storage.  Out of place, the new layout
 *     reuses the old one's area below the checkpoint; that the copy never
 *     overwrites old data no checkpoint covers yet is reshape.c's window
 *     cut (checked by test-crash --reshape), not a router property.
 *   - Each critical section under R->lock is one atomic step: sound, since
 *     router state is only touched under the lock, except lay[] read by the
 *     claim holder (router_layout), which no change can alter meanwhile.
 *     A request's issue shares a step with its router_enter, its reply
 *     with its router_leave, and a read's member I/O with its leave.  Each
 *     keeps one real timing (issued right before entering, replied right
 *     after leaving); the timings dropped only make the checks weaker (an
 *     earlier issue or a later reply lowers acked[], hence a read's floor
 *     and dacked[]), or only delay a claimer (a ticket held longer), which
 *     can do nothing meanwhile.  Member I/O of different cells, the copy's
 *     read and write, flushes and superblock commits are separate steps.
 *   - Forward only: backward is the mirror image (route() swaps lower and
 *     upper).  Zero and trim are writes, block status a read; rebuild,
 *     scrub and replace batches take tickets like the clients here.
 *     `freeze` and abort are not modelled.
 *   - A flush (client or checkpoint) covers every member in one step; a
 *     superblock commit is atomic and durable (the sb journal's property,
 *     test-sb).  A power loss keeps, for each cell, either its flushed or
 *     its latest value.  After it the clients are gone and the restart
 *     runs alone, as one step: the worker's code from the durable position
 *     (concurrency with clients at every boundary is what the crash-free
 *     runs check).  One power loss per run; the reads are checked without
 *     CRASH (with it the clients write and flush).
 */

#ifndef N
#define N 3                     /* positions of the array */
#endif
#ifndef WIN
#define WIN 1                   /* positions per reshape window */
#endif
#ifndef OPS
#define OPS 2                   /* requests of client 0 */
#endif
#ifndef OPS1
#define OPS1 OPS                /* requests of client 1 */
#endif
#define NCLIENT 2
#define ALL 255                 /* ROUTER_ALL */
#define GARBAGE 15              /* GEOM_NEW's contents before the copy */

#define GEOM_OLD 0
#define GEOM_NEW 1
#define LAYOUT_CUR 0
#define LAYOUT_NEXT 1

/* Thread ids (clients are 0 and 1): one bit each in moved_w, drained_w;
 * trails name them c0, c1, t2 (the worker) and t3 (mgmt). */
#define ID_WORKER 2
#define ID_MGMT 3

/* Client 0 writes all positions but the last, client 1 the last one. */
#define OWN_LO(c) ((c) == 0 -> 0 : N - 1)
#define OWN_HI(c) ((c) == 0 -> N - 1 : N)

#define OVERLAPS(a0, a1, b0, b1) ((a0) < (b1) && (b0) < (a1))
#define MIN(a, b) ((a) < (b) -> (a) : (b))
#define MAX(a, b) ((a) > (b) -> (a) : (b))

/* ---- struct router ---- */
byte lay[2];
bool two;
byte boundary;
bool claimed;
byte waiters;                   /* requests waiting in W1 */
byte claim_lo, claim_hi;
bool claimer_waits;
byte moved_w, drained_w;
bool reg[NCLIENT];
byte t_lo[NCLIENT], t_hi[NCLIENT];
byte t_cut[NCLIENT], t_lower[NCLIENT], t_upper[NCLIENT];

/* ---- members and superblock ---- */
byte vol[2 * N];
bool rec_dur;
byte pos_dur;
bool new_dur;
bool running;
#ifdef CRASH
byte dur[2 * N];
byte dacked[N];
bool crashed;                   /* the power is off: every thread stops */
bool crashed_once;
#endif

/* ---- ghosts: read only by the properties ---- */
byte issued[N];
byte acked[N];
bool answered[NCLIENT];         /* client c holds an answer (R1) */
bool in_req[NCLIENT];           /* client c has a request outstanding */
bool in_claim;                  /* the worker is in router_claim */
bool in_mclaim;                 /* mgmt is in router_claim */
byte holders;                   /* claims granted and not released */
byte scratch;                   /* a loop index, 0 outside atomic steps */

#define BUSY \
  ((reg[0] && OVERLAPS (t_lo[0], t_hi[0], claim_lo, claim_hi)) || \
   (reg[1] && OVERLAPS (t_lo[1], t_hi[1], claim_lo, claim_hi)))

/* pthread_cond_wait (&cv, &R->lock), inside an atomic step: the step ends
 * at the blocking test (the lock is free) and resumes, holding the lock,
 * once a signal or broadcast removed this thread's bit. */
inline cond_wait (cv, id)
{
  cv = cv | (1 << id);
  (cv & (1 << id)) == 0
}

/* pthread_cond_signal: wake any one waiter. */
inline cond_signal (cv)
{
  if
  :: cv & 1 -> cv = cv ^ 1
  :: cv & 2 -> cv = cv ^ 2
  :: cv & 4 -> cv = cv ^ 4
  :: cv & 8 -> cv = cv ^ 8
  :: cv == 0 -> skip
  fi
}

/* route(): the answer for [t_lo[c], t_hi[c]), forward. */
inline route (c)
{
  if
  :: !two ->
     t_cut[c] = t_lo[c];
     t_upper[c] = lay[LAYOUT_CUR]
  :: else ->
     t_lower[c] = lay[LAYOUT_NEXT];
     t_upper[c] = lay[LAYOUT_CUR];
     t_cut[c] = MAX (t_lo[c], MIN (t_hi[c], boundary))
  fi;
  answered[c] = true;
  if
  :: t_cut[c] == t_lo[c] ->
     printf ("c%d answer: [%d,%d) in G%d\n", c, t_lo[c], t_hi[c], t_upper[c])
  :: t_cut[c] == t_hi[c] ->
     printf ("c%d answer: [%d,%d) in G%d\n", c, t_lo[c], t_hi[c], t_lower[c])
  :: else ->
     printf ("c%d answer: [%d,%d) in G%d, [%d,%d) in G%d\n", c, t_lo[c],
             t_cut[c], t_lower[c], t_cut[c], t_hi[c], t_upper[c])
  fi
}

/* The geometry of position p in client c's answer. */
#define PIECE(c, p) ((p) < t_cut[c] -> t_lower[c] : t_upper[c])

/* W1_BOUNDED: the most claims a request can wait out in W1, whatever its
 * range, the windows, the claimers and the power loss: one (R2's
 * turnstile).  The ghost w1 counts the passes through W1's loop, so a
 * request woken while a claim still overlaps it (a second claim, or a
 * wake-up that did not end its wait) counts twice.  Spurious wake-ups,
 * which pthread allows and which only repeat the loop's test for the same
 * claim, are not modelled. */
#define W1_CLAIMS 1

/* w1: the caller's count of its W1 waits (a ghost). */
inline router_enter (c, lo, hi)
{
  atomic {
    t_lo[c] = lo;
    t_hi[c] = hi;
#ifdef DEFECT_STALE_ROUTE
    route (c);                  /* the defect: decided before the wait */
#endif
    if
    :: claimed && OVERLAPS (t_lo[c], t_hi[c], claim_lo, claim_hi) ->
       waiters++;               /* the next claim waits for us (W2) */
       do
       :: claimed && OVERLAPS (t_lo[c], t_hi[c], claim_lo, claim_hi) ->
          printf ("c%d waits (W1) for claim [%d,%d)\n", c, claim_lo, claim_hi);
          w1++;
          cond_wait (moved_w, c)                           /* W1 */
       :: else -> break
       od;
       waiters--;
#ifndef DEFECT_NO_WAITERS_WAKE
       if
       :: waiters == 0 -> moved_w = 0                      /* ends W2 */
       :: else
       fi
#endif
    :: else
    fi;
    assert (w1 <= W1_CLAIMS);                              /* W1_BOUNDED */
    w1 = 0;
#ifdef DEFECT_UNREGISTERED
    reg[c] = two;               /* the defect: no ticket without a reshape */
#else
    reg[c] = true;
#endif
#ifndef DEFECT_STALE_ROUTE
    route (c);                  /* R1: after the wait */
#endif
  }
}

inline router_leave (c)
{
  atomic {
    reg[c] = false;
    answered[c] = false;
#ifndef DEFECT_NO_DRAIN_SIGNAL
    if
    :: claimer_waits && claimed && OVERLAPS (t_lo[c], t_hi[c], claim_lo, claim_hi) ->
       cond_signal (drained_w)                             /* ends W3 */
    :: else
    fi;
#endif
    t_lo[c] = 0; t_hi[c] = 0; t_cut[c] = 0; t_lower[c] = 0; t_upper[c] = 0
  }
}

inline router_claim (id, lo, hi)
{
  atomic {
    do
#ifndef DEFECT_NO_TURNSTILE
    :: claimed || waiters > 0 ->
#else
    :: claimed ->               /* the defect: the waiters are ignored */
#endif
       if
       :: claimed ->
          printf ("t%d waits (W2) for claim [%d,%d)\n", id, claim_lo, claim_hi)
       :: else ->
          printf ("t%d waits (W2) for %d request(s) that waited (W1)\n", id,
                  waiters)
       fi;
       cond_wait (moved_w, id)                             /* W2 */
    :: else -> break
    od;
    claimed = true;
    claim_lo = lo;
    claim_hi = hi;
    do
    :: BUSY ->
       printf ("t%d waits (W3) for the tickets in [%d,%d)\n", id, lo, hi);
       claimer_waits = true;
       cond_wait (drained_w, id)                           /* W3 */
    :: else -> break
    od;
    claimer_waits = false;
    holders++;
    assert (holders == 1);                                 /* ONE_CLAIM: R2 */
    printf ("t%d claims [%d,%d)\n", id, lo, hi)
  }
}

inline router_release ()
{
  atomic {
    assert (claimed);
    claimed = false;
    claim_lo = 0;
    claim_hi = 0;
    holders--;
    moved_w = 0                                            /* broadcast */
  }
}

/* R1: no request holds an answer that changing [lo, hi) alters. */
#ifdef NO_ANSWER_CHECK
#define ANSWER_STABLE(lo, hi) skip
#else
#define ANSWER_STABLE(lo, hi) \
  assert (!(answered[0] && OVERLAPS (t_lo[0], t_hi[0], lo, hi)) && \
          !(answered[1] && OVERLAPS (t_lo[1], t_hi[1], lo, hi)))
#endif

inline router_begin_reshape ()
{
  atomic {
    assert (claimed && !two);                              /* R3 */
    lay[LAYOUT_NEXT] = GEOM_NEW;
    boundary = 0;
    two = true
  }
}

inline router_move_boundary (b)
{
  atomic {
    assert (claimed && two && claim_lo <= MIN (b, boundary) &&
            claim_hi >= MAX (b, boundary));                /* R3 */
    ANSWER_STABLE (boundary, b);
    boundary = b;
    printf ("boundary %d\n", b)
  }
}

inline router_finish_reshape ()
{
  atomic {
    assert (claimed && claim_lo == 0 && claim_hi == ALL && two);   /* R3 */
    ANSWER_STABLE (0, ALL);
    lay[LAYOUT_CUR] = lay[LAYOUT_NEXT];
    lay[LAYOUT_NEXT] = 0;
    two = false;
    boundary = 0;
    printf ("finish: CUR is G%d\n", lay[LAYOUT_CUR])
  }
}

/* raid_array_flush, or the checkpoint's flush: every member. */
inline flush ()
{
#ifdef CRASH
  atomic {
    scratch = 0;
    do
    :: scratch < 2 * N -> dur[scratch] = vol[scratch]; scratch++
    :: else -> break
    od;
    scratch = 0;
    do
    :: scratch < N -> dacked[scratch] = acked[scratch]; scratch++
    :: else -> break
    od;
    scratch = 0;
    printf ("flush\n")
  }
#else
  skip
#endif
}

/* Prepare, start, every reshape_step and reshape_finish.  resume: the
 * array was assembled after a power loss with the record at pos_dur (the
 * router already has both layouts): start and continue.  Uses the
 * caller's lo, hi, p, v. */
inline reshape (resume)
{
  if
  :: !resume ->
     /* prepare: the record (frozen, position 0) is durable first */
     atomic { rec_dur = true; pos_dur = 0; printf ("prepare: record\n") };
     in_claim = true;
     router_claim (ID_WORKER, 0, ALL);
     in_claim = false;
     router_begin_reshape ();
     router_release ()
  :: else
  fi;
  running = true;               /* start: no routing change */
  do
  :: pos_dur < N ->             /* reshape_step: the window [lo, hi) */
     assert (running);
     lo = pos_dur;
     hi = MIN (lo + WIN, N);
     in_claim = true;
     router_claim (ID_WORKER, lo, hi);
     in_claim = false;
     p = lo;
     do                         /* copy: read CUR, write NEXT */
     :: p < hi ->
        v = vol[lay[LAYOUT_CUR] * N + p];
        atomic {
          vol[lay[LAYOUT_NEXT] * N + p] = v;
          printf ("copy G%d[%d] = %d to G%d\n", lay[LAYOUT_CUR], p, v,
                  lay[LAYOUT_NEXT]);
          v = 0; p++
        }
     :: else -> break
     od;
#ifndef DEFECT_COMMIT_BEFORE_FLUSH
     flush ();                  /* the checkpoint: flush, then commit */
     atomic { pos_dur = hi; printf ("checkpoint %d\n", hi) };
#else
     atomic { pos_dur = hi; printf ("checkpoint %d\n", hi) };
     flush ();
#endif
     router_move_boundary (hi);
     router_release ();
     p = 0; lo = 0; hi = 0
  :: else -> break
  od;
  /* reshape_finish */
  in_claim = true;
  router_claim (ID_WORKER, 0, ALL);
  in_claim = false;
  new_dur = true;               /* the new geometry, durable */
  router_finish_reshape ();
  router_release ();
  running = false
}

#ifdef CRASH
#define CRASHABLE unless { crashed }
#else
#define CRASHABLE
#endif

/* OPS requests: a write of a range the client owns, or a read of one
 * position (CRASH: a write or a flush). */
proctype client (byte c)
{
  byte k, lo, hi, p, v, w1;
  byte floor;                   /* read: acked[lo] when it was issued */

  {
    do
    :: k < (c == 0 -> OPS : OPS1) ->
       k++;
       if
       :: /* pwrite [lo, hi) */
          atomic {
            lo = OWN_LO (c);
            do :: lo < OWN_HI (c) - 1 -> lo++ :: break od;
            hi = lo + 1;
            do :: hi < OWN_HI (c) -> hi++ :: break od;
            in_req[c] = true;
            p = lo;
            do
            :: p < hi -> issued[p]++; p++
            :: else -> break
            od;
            printf ("c%d write [%d,%d)\n", c, lo, hi);
            router_enter (c, lo, hi)
          }
          p = lo;
          do                    /* stripe_write, each piece */
          :: p < hi ->
             atomic {
               vol[PIECE (c, p) * N + p] = issued[p];
               printf ("c%d G%d[%d] = %d\n", c, PIECE (c, p), p, issued[p]);
               p++
             }
          :: else -> break
          od;
          atomic {
            router_leave (c);
            p = lo;
            do                  /* the reply */
            :: p < hi -> acked[p] = issued[p]; p++
            :: else -> break
            od;
            printf ("c%d write [%d,%d) acknowledged\n", c, lo, hi);
            p = 0; lo = 0; hi = 0;
            in_req[c] = false
          }
#ifndef CRASH
       :: /* pread [lo, lo + 1) */
          atomic {
            lo = 0;
            do :: lo < N - 1 -> lo++ :: break od;
            hi = lo + 1;
            in_req[c] = true;
            floor = acked[lo];
            printf ("c%d read [%d,%d)\n", c, lo, hi);
            router_enter (c, lo, hi)
          }
          atomic {              /* stripe_read */
            v = vol[PIECE (c, lo) * N + lo];
            printf ("c%d read G%d[%d] = %d, acknowledged before: %d\n",
                    c, PIECE (c, lo), lo, v, floor);
            assert (floor <= v && v <= issued[lo]);        /* READ_OK */
            floor = 0; v = 0;
            router_leave (c);
            lo = 0; hi = 0;
            in_req[c] = false
          }
#else
       :: flush ()
#endif
       fi
    :: else -> break
    od
  } CRASHABLE
}

proctype worker ()
{
  byte lo, hi, p, v;

  {
    reshape (false)
  } CRASHABLE
}

#ifdef MGMT
proctype mgmt ()
{
  {
    in_mclaim = true;
    router_claim (ID_MGMT, 0, ALL);
    in_mclaim = false;
    skip;                       /* router_bind_role: no answer changes */
    router_release ()
  } CRASHABLE
}
#endif

#ifdef CRASH
/* A power loss at any moment before every thread ended, or none. */
proctype power ()
{
  if
  :: atomic { _nr_pr > 2 -> crashed = true; crashed_once = true;
              printf ("power loss\n") }
  :: _nr_pr == 2
  fi
}

/* The next start: each cell keeps its flushed or its latest value; the
 * router is rebuilt from the superblock; the volatile state is gone. */
inline recover ()
{
  scratch = 0;
  do
  :: scratch < 2 * N ->
     if
     :: vol[scratch] != dur[scratch] -> vol[scratch] = dur[scratch]
     :: skip                    /* the unflushed write reached the disk */
     fi;
     dur[scratch] = vol[scratch];
     scratch++
  :: else -> break
  od;
  scratch = 0;
  do                            /* owed from now on: what a flush covered */
  :: scratch < N -> acked[scratch] = dacked[scratch]; scratch++
  :: else -> break
  od;
  scratch = 0;
  do
  :: scratch < NCLIENT ->
     reg[scratch] = false; answered[scratch] = false; in_req[scratch] = false;
     t_lo[scratch] = 0; t_hi[scratch] = 0; t_cut[scratch] = 0;
     t_lower[scratch] = 0; t_upper[scratch] = 0;
     scratch++
  :: else -> break
  od;
  scratch = 0;
  claimed = false; waiters = 0; claim_lo = 0; claim_hi = 0;
  claimer_waits = false;
  moved_w = 0; drained_w = 0; holders = 0; in_claim = false; in_mclaim = false;
  running = false;
  if
  :: new_dur ->
     lay[LAYOUT_CUR] = GEOM_NEW; lay[LAYOUT_NEXT] = 0;
     two = false; boundary = 0
  :: !new_dur && rec_dur ->
     lay[LAYOUT_CUR] = GEOM_OLD; lay[LAYOUT_NEXT] = GEOM_NEW;
     two = true; boundary = pos_dur
  :: else ->
     lay[LAYOUT_CUR] = GEOM_OLD; lay[LAYOUT_NEXT] = 0;
     two = false; boundary = 0
  fi;
  crashed = false;
  printf ("restart: record %d, position %d, finished %d\n",
          rec_dur, pos_dur, new_dur)
}
#endif

#ifdef LIVENESS
ltl live {
  [] ((in_req[0] -> <> !in_req[0]) &&
      (in_req[1] -> <> !in_req[1]) &&
      (in_claim -> <> !in_claim) &&
      (in_mclaim -> <> !in_mclaim))
}
#endif

init
{
  byte lo, hi, p, g, v;

  atomic {
    lay[LAYOUT_CUR] = GEOM_OLD;
    p = 0;
    do
    :: p < N ->
       vol[GEOM_NEW * N + p] = GARBAGE;
#ifdef CRASH
       dur[GEOM_NEW * N + p] = GARBAGE;
#endif
       p++
    :: else -> break
    od;
    p = 0
  }
  atomic {
#ifdef CRASH
    run power ();               /* first: spin removes processes in LIFO */
#endif
    run client (0);
    run client (1);
#ifdef MGMT
    run mgmt ();
#endif
    run worker ()
  }
  _nr_pr == 1;
#ifdef CRASH
  if
  :: crashed_once ->
     atomic {                   /* alone now: one step */
       recover ();
       if
       :: rec_dur && !new_dur -> reshape (true)
       :: else
       fi
     }
  :: else
  fi;
#endif
  /* (a): every position, read through the final answer */
  p = 0;
  do
  :: p < N ->
     atomic {
       g = (two && p < boundary -> lay[LAYOUT_NEXT] : lay[LAYOUT_CUR]);
       v = vol[g * N + p];
       printf ("final G%d[%d] = %d, acknowledged %d\n", g, p, v, acked[p]);
#ifdef CRASH
       if
       :: crashed_once ->
          assert (dacked[p] <= v && v <= issued[p])        /* LOST_WRITE */
       :: else ->
          assert (v == acked[p])                           /* LOST_WRITE */
       fi;
#else
       assert (v == acked[p]);                             /* LOST_WRITE */
#endif
       p++
     }
  :: else -> break
  od;
#ifdef CRASH
  assert (!rec_dur || (!two && lay[LAYOUT_CUR] == GEOM_NEW))
#else
  assert (!two && lay[LAYOUT_CUR] == GEOM_NEW)
#endif
}
