/* nbdkit-raid: the write gather — partial-row client writes held briefly in
 * memory and joined into whole rows before parity is computed.
 *
 * THEORY
 *
 * Why.  A write that covers part of a row costs a read-modify-write: the
 * old data and parity are read, the new parity computed, both written (and
 * with the journal, logged first); writes to one row are serialized by its
 * stripe lock.  A client that writes a stream in small requests (4 KiB at
 * queue depth 32, as a filesystem or a guest without merging does) sends
 * every request into the same one or two rows: they queue on the row lock
 * and each pays the whole cycle.  Joined into whole rows, the same bytes
 * need no read at all, one parity computation per row and no logged
 * payload.  Measured before this existed: 4 KiB sequential writes on RAID5
 * of 5 slow members ran at 3% of the 1 MiB rate.
 *
 * What it is.  A small table of slots (GATHER_SLOTS, fewer for large rows:
 * GATHER_BYTES_MAX of them in use at most).  A slot holds one
 * unit — one row of the layout that holds the bytes when the slot is made
 * (the array's stripe width), at most GATHER_UNIT_MAX — a buffer for it,
 * and the list of byte ranges of it that client writes have filled
 * (segments: sorted, disjoint, never adjacent, at most GATHER_SEGS).  A
 * slot is FREE, FILLING (writes may add bytes) or DRAINING (one thread is
 * writing its segments to the array; nobody changes it).  One transition
 * function (slot_set) makes every change of state; the table's lock is a
 * leaf mutex held for bookkeeping, copying and a slot buffer's first
 * allocation only, never across array I/O.
 *
 * The contract kept.  NBD lets a server acknowledge a write before it is
 * durable; durability is promised only after a FLUSH (or for FUA writes).
 * A gathered write is acknowledged once its bytes are in its slot.  So:
 *   G1  Every read sees every acknowledged write: a read copies the
 *       overlapping bytes of every non-FREE slot (a snapshot, under the
 *       lock) BEFORE it reads the array, then lays the snapshot over what
 *       it read.  A slot leaves the table only after its bytes, or the
 *       bytes of a later write that replaced them, are on the array; so
 *       each byte is in the snapshot or on the array by the time the array
 *       read starts.
 *   G2  Bytes reach the array in the order their writes were acknowledged:
 *       any write, zero or trim that bypasses the table (FUA, whole rows,
 *       the heuristic's no) first settles every slot it overlaps.  A
 *       FILLING slot it covers entirely is held (DRAINING, owned by that
 *       request, not written) until the request's own array write has
 *       landed, then freed — its bytes were replaced — or, if that write
 *       failed, drained after all; one it covers partly is drained before
 *       the request's write.  A settle first waits until none of the slots
 *       it overlapped when it began is being drained (slots filled since
 *       hold writes concurrent with its request), then takes the ones
 *       still filling in one step, so it never waits while it holds a
 *       slot.  A gathered write into a slot
 *       being drained waits for that drain, then goes into a new slot.
 *   G3  FLUSH drains every slot that held bytes when it was called (and
 *       waits for drains already running), then flushes the members.  A
 *       drain that fails with EIO (the array cannot store them: it failed)
 *       loses acknowledged writes, and every flush from then on fails with
 *       EIO; one that fails otherwise (ENOMEM) puts the slot back, its
 *       bytes still held and tried again, and fails the flush that made
 *       it.  A write whose completed row fails so fails with it, its
 *       bytes undefined, as a failed write's are (its other piece may be
 *       held already, and is written like any).  Multi-conn stays
 *       honest: the table is the array's, not a connection's.
 *   G4  Nothing is held long: a slot whose unit is complete is drained by
 *       the writer that completed it, as soon as that writer's other
 *       partial piece is placed, or before, when placing it would wait,
 *       drain a slot or write through (when it completes a row too, the
 *       rows are written in the order completed): a write that completes
 *       one row and begins the next puts the beginning before it writes
 *       the row (measured, RAID5 of 10 members at 20 MiB/s, 1M writes at
 *       QD32 over 256M: the beginning of a row waited about 400 ms behind
 *       the write of the row before, past the age, so the ager drained
 *       its end alone and both halves paid a read-modify-write, their
 *       payload logged; the logs filled, and checkpoints stalled the
 *       stream: 0.95 of the member limit, then 1.0).  A slot older than
 *       the age (gather_age_ns) is drained by the ager thread, which
 *       looks every GATHER_AGE_MIN_NS / 2 (so within the age plus that,
 *       plus the drains before it); a full table (or one whose new slot
 *       found no memory) makes the writer that needs a slot wait until a
 *       slot being drained, or held by a bypassing request, leaves that
 *       state (W1), or, when there is none, drain the oldest slot itself
 *       (after MAX_TRIES waits it writes through): a row still filling,
 *       drained early, costs both its parts a read-modify-write
 *       (measured: RAID5 of 10 members at 20 MiB/s, 1M writes at QD32,
 *       whose rows each wait about 160 ms for their members, reckoned
 *       from 32 MiB in flight: the table was full of rows being written,
 *       and draining the oldest filling one made the stream 0.78 of the
 *       member limit; waiting, 0.91-0.94); block status (extents)
 *       settles the slots it overlaps first (a gathered write in a hole
 *       must not be reported as a hole); a clean close drains all.  A
 *       kill -9 loses at most the unflushed writes of the last age, which
 *       the contract allows.
 *       The age is twice the time the array's writes take lately (a
 *       moving average of the writes this table makes or passes through),
 *       at least GATHER_AGE_MIN_NS, at most GATHER_AGE_MAX_NS.  A client
 *       that streams at queue depth n sends its next request when one of
 *       its earlier ones completes, so the request that completes a row
 *       may come up to about one write's time after the one that began
 *       it; a fixed age shorter than that drains the first half alone,
 *       and both halves then pay a read-modify-write, its payload logged
 *       (measured: RAID5 of 8 members at 75 MiB/s, 1M writes at QD32,
 *       which take about 60 ms: with a fixed 20 ms age one boundary row
 *       in eight, 0.75-0.94 of the member limit; following the writes,
 *       0.99).
 *   G5  Layout changes need nothing from here: a drain is an ordinary array
 *       write (router ticket, stripe locks, write-hole policy), routed when
 *       it runs.  A unit that no longer matches a row (a reshape changed
 *       the stripe width) is written as partial rows: slower, still right.
 *       A shrink discards held bytes past the new end (gather_discard), so
 *       that a later grow, which zeroes its new space, cannot bring them
 *       back.
 *
 * Which writes.  FUA writes go straight through (after settling).  A write
 * is cut at unit boundaries; whole units go straight through; a partial
 * piece is gathered when its unit already has a slot, or it starts the
 * unit, or the unit before it has a slot or was just completed (a stream
 * crossing into the next row, even when the requests arrive out of order);
 * any other partial piece (a random small write) goes straight through.
 * A write's partial pieces are put before its whole units are written: in
 * a stream of large requests that are not a multiple of a row, the row
 * one request ends in is the row the next one begins in, and the next one
 * puts its piece as soon as it starts.  Put after the whole units (which
 * wait for the members, at queue depth 32 many times the ager's age), the
 * ending piece would come too late: the ager would have drained the
 * beginning one alone, and both would pay a read-modify-write (measured:
 * RAID6 of 5 rate-limited members, 1M writes, 4% under the limit, the
 * record's payload on the log); for the same reason a row the first piece
 * completes is written after the second piece is placed (G4).  The pieces
 * are disjoint, the request holds between them at most the row its first
 * piece completed, which it writes before anything else it would wait
 * for or write (W1), and no other slot (its pieces sit in FILLING slots
 * anyone may drain; through() takes and releases its own holds), and it
 * is acknowledged only when all are done, so their order is free.
 *
 * Waits, their wake-ups and bounds.
 *   W1  A writer, a settle, a discard or a flush on a slot being drained
 *       by another thread (a writer needing a slot in a full table: on
 *       any slot being drained): woken by that drain's end (freed),
 *       bounded by its array writes (a slot held by a bypassing request:
 *       by that request's array write; a completed slot its writer has
 *       not begun to drain: by the placing of that writer's other piece,
 *       which drains it first if it would wait, drain a slot or write
 *       through).  Drains never wait on the table, and no thread waits
 *       while it holds a slot.
 *   W2  The ager sleeps GATHER_AGE_MIN_NS / 2 at a time (tick), woken
 *       early by gather_stop.
 */
#ifndef RAIDCORE_GATHER_H
#define RAIDCORE_GATHER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define GATHER_SLOTS 32
#define GATHER_SEGS 16
#define GATHER_UNIT_MAX (4u << 20)
#define GATHER_BYTES_MAX (16u << 20)       /* slots in use x unit, at most */
#define GATHER_AGE_MIN_NS (20 * 1000000ull)
#define GATHER_AGE_MAX_NS (200 * 1000000ull)
#define GATHER_RECENT 4

enum gslot_state { GS_FREE, GS_FILLING, GS_DRAINING };

struct gseg { uint64_t lo, hi; };          /* array bytes [lo, hi) */

struct gslot {
  enum gslot_state state;
  uint64_t gen;                            /* counts the slot's uses */
  uint64_t off, len;                       /* the unit */
  uint64_t born_ns;
  int nseg;
  struct gseg seg[GATHER_SEGS];
  uint8_t *buf;                            /* byte off of the unit at buf[0] */
  uint64_t cap;
};

/* The array write a drain or a bypassing write makes: 0 or errno. */
typedef int (*gather_write_fn) (void *opaque, const uint8_t *buf, uint64_t len,
                                uint64_t off, unsigned flags);

struct gather {
  bool on;
  gather_write_fn write;
  void *opaque;
  pthread_mutex_t lock;
  pthread_cond_t freed;                    /* a slot left DRAINING (W1) */
  pthread_cond_t tick;                     /* the ager's sleep (W2) */
  _Atomic int nlive;                       /* slots not FREE */
  _Atomic uint64_t write_ns;               /* how long its array writes take
                                              (moving average; G4) */
  struct gslot slot[GATHER_SLOTS];
  uint64_t recent[GATHER_RECENT];          /* ends of units completed lately */
  unsigned nrecent;
  bool lost;                               /* a drain failed with EIO (G3) */
  pthread_t ager;
  bool ager_running, stop;
};

/* How old a slot may grow before the ager drains it (G4). */
uint64_t gather_age_ns (const struct gather *G);

/* on false: every call below passes straight to write (and reads see no
 * slot).  0 or ENOMEM. */
int gather_init (struct gather *G, bool on, gather_write_fn write, void *opaque);
/* Frees the table; bytes still held are lost (gather_stop and
 * gather_drain_all first). */
void gather_fini (struct gather *G);
int gather_start (struct gather *G);       /* the ager; 0 or errno */
void gather_stop (struct gather *G);

/* A client write of [off, off + len): gathered or written through as above;
 * unit is the row size now (0: never gather).  0 once it is held or
 * written, or errno. */
int gather_write (struct gather *G, const uint8_t *buf, uint64_t len, uint64_t off,
                  uint64_t unit, unsigned flags);
/* The slots a bypassing write replaces, held until it has landed (G2). */
struct gather_hold {
  int n;
  struct gslot *s[GATHER_SLOTS];
};
/* Before a zero or trim (h: the slots it replaces, for gather_release) or
 * block status (h NULL: every overlapping slot is written) of [lo, hi):
 * G2 / G4.  0 or the error of a drain it made; release h either way. */
int gather_settle (struct gather *G, uint64_t lo, uint64_t hi, struct gather_hold *h);
/* After the request's own array write: err 0 frees the held slots (their
 * bytes were replaced); otherwise they are drained now. */
void gather_release (struct gather *G, struct gather_hold *h, int err);
/* A shrink: held bytes at or past from are dropped (G5). */
void gather_discard (struct gather *G, uint64_t from);
/* Drain every slot that holds bytes now (G3's first half).  0, the error
 * of a drain it made, or EIO once a drain ever lost bytes. */
int gather_drain_all (struct gather *G);

/* A read's snapshot of held bytes over [lo, hi) (G1). */
struct gather_snap {
  int n;
  struct { uint64_t off, len; uint8_t *data; } *piece;
};
/* 0 or ENOMEM; free with gather_snap_free after gather_snap_apply. */
int gather_snap_take (struct gather *G, uint64_t lo, uint64_t hi,
                      struct gather_snap *s);
/* Lay the snapshot over buf, which holds array bytes from lo. */
void gather_snap_apply (const struct gather_snap *s, uint8_t *buf, uint64_t lo,
                        uint64_t len);
void gather_snap_free (struct gather_snap *s);

#endif
