/* nbdkit-raid: the write-hole journal (consistency policy "journal").
 *
 * THE PROBLEM.  A stripe write updates several members.  If the machine
 * stops part-way (or a member's volatile cache loses unflushed writes), the
 * row's parity no longer matches its data.  Nothing is wrong yet, but when a
 * member is lost afterwards, its blocks are rebuilt from that mismatched
 * parity — including blocks the interrupted write never touched: a crash
 * would have corrupted data outside the write.  That is the RAID write hole.
 *
 * THE JOURNAL.  Before the in-place writes of a group of rows, the engine
 * appends records describing them:
 *   - for partial rows: the complete new contents of every block it is about
 *     to write (data and parity of the affected columns), with each block's
 *     role and member offset;
 *   - for full rows (every data block of the row rewritten) only the row
 *     range ("intent"): such a row lies entirely inside the write, so any
 *     torn state is allowed, but its parity must be made consistent again.
 *     Only when a replay could read every block of the row (stripe.c,
 *     intent_ok): no role without a member, and no role being rebuilt at
 *     or past the rebuild cursor the last record holds (after a crash the
 *     rebuild goes on from there, whatever the cursor in memory had
 *     passed).  A block a replay cannot read exists only through parity,
 *     which nothing can recompute after a torn write, and it would read as
 *     neither its old nor its new bytes.  Such a row is logged with its
 *     contents, like a partial one.  An intent logs no block, so a
 *     partial write of its row computes parity from blocks that may still
 *     sit in a member's volatile cache: a FUA one flushes every member
 *     first while such an intent is unflushed (consistency.c,
 *     cons_fua_sources), or its durable parity could rebuild its own
 *     blocks wrongly after a crash and a member loss.
 * The record is written, with FUA, to the members PLACEMENT names, and
 * only when every copy is durable do the in-place writes start.
 *
 * PLACEMENT.  Replay needs, for each row, every record written to it since
 * the last checkpoint, in order, whenever the row still has parity to be
 * made consistent; a record the loss of its member takes away must be one
 * that loss made unnecessary.  So payload records are cut by parity roles
 * (one record holds rows whose P, and Q, roles are the same), and:
 *   - when every parity role of those rows is held by an in-sync member,
 *     the copies go exactly there: one copy on the P member (raid4/5), two
 *     on P and Q (raid6).  Losing the P member of a raid5 row loses that
 *     row's parity with its records: while it is gone no block of the row
 *     is rebuilt from parity, and each data block holds its own bytes, old
 *     or new only where a write was in flight.  A raid6 row keeps the copy
 *     on its other parity member, and losing both leaves no parity at all.
 *     When that member comes back, its parity of such a row may match
 *     neither version, and its records are the only ones that say so
 *     (REJOIN).
 *     One log write per partial write, on a member that takes a write
 *     anyway, is what makes this policy cheap;
 *   - otherwise, and for intents: nparity + 1 in-sync members from a
 *     row-dependent role, so one copy survives any loss the level
 *     tolerates.  "Otherwise" is: a parity role whose member is away,
 *     failed or being rebuilt, or was not in sync at the last checkpoint
 *     (stable_slots), or any member left a role since then.  A row's
 *     placement must not move from these copies to its parity member
 *     within an epoch: losing that member afterwards would take the
 *     row's later records and leave its earlier ones, and replaying
 *     those alone would put older bytes over newer (flushed) ones.  It
 *     moves only at a checkpoint, which makes every earlier record
 *     obsolete.
 *   - a replace hands a role to another member that keeps its parity: the
 *     records on the member it retires would vanish while the parity stays,
 *     so the switch is a checkpoint (sync.c, replace_finish/replace_stop).
 * The records of one group (up to JSET: its intents, and its payload cut
 * by parity roles; at most JOURNAL_MAX_RECORD of payload in all, so that
 * a set always fits an empty log) are reserved, numbered and committed
 * together, so a write across rows with different parity members still
 * waits for one round of log writes.
 *
 * JOINS.  A record written while role X's member was in use carries X's
 * block as it was then.  Once X's member has left (failed, away), writes
 * stop updating X; if a member then takes X again (a spare's recovery, a
 * rejoin) and the array crashes after it caught up, replaying that older
 * record would put X's stale block on the new holder, where nothing
 * repairs it again.  So once any member has left a role, the next member
 * to take one waits for a checkpoint (journal_join_due: state.c counts
 * the members that leave a role in a->roles_left; sync.c runs it):
 * every earlier record is then obsolete, and records written since carry
 * no block for a role without a member — except a replaced role whose
 * member failed while the copy went on (stripe.c writes it to the replace
 * target alone): its blocks are in the record, but replay never puts them
 * anywhere (no replace is resumed: the target is a spare at a start, the
 * failed member has no role), and the target takes the role only after a
 * checkpoint (replace_stop).  A member that rejoins having missed nothing
 * needs no checkpoint: a record of a row it did not miss carries its block
 * as it still is.
 *
 * REPLAY (at assembly of an array whose superblock says dirty).  Every valid
 * record of the current epoch with seq >= journal_seq, found on any member,
 * is applied in sequence order: payload blocks are written back in place
 * on every member in use — a member being rebuilt included, in every row:
 * below its recovery offset it holds the row and nothing rebuilds it again
 * (a member rejoining by delta holds rows above it too) —
 * except blocks of rows that an intent of a LATER write covers (that
 * full-row write's data was not logged; older bytes must not replace it,
 * which would lose it even if it had been flushed).  "Later write": every
 * record names the first seq of its write (field first), and an intent
 * supersedes only payload numbered below that.  A write is logged in
 * several records, possibly in several rounds, and one row can hold a
 * full and a partial segment of it: its own intent must never supersede
 * its own payload, whatever their order; two writes that share a row do
 * not overlap in time (the row's stripe lock), so their numbers do not
 * interleave.  Then every row named by an
 * intent gets its parity recomputed from the data on the members — the
 * full-row write may be torn or partly lost from a volatile cache, and a
 * later partial write may have computed its parity from it.  A full row
 * lies entirely inside its write, so whatever its data now holds is
 * allowed; what matters is that parity matches it.  Afterwards every
 * row touched since the last checkpoint holds, for each logged write, either
 * its complete new state or (if its record never became durable and so none
 * of its in-place writes started) its complete old state; and rows are
 * consistent, so losing a member afterwards rebuilds correct data.  Applying
 * records in order also repairs writes whose in-place copies were lost from
 * a volatile cache, because a later record's payload was computed from the
 * in-memory state that included them, and their own records come first.
 *
 * OWED RESYNC.  A replay writes payload blocks to the members in use only.
 * A block of a role whose member is away is marked, its row in that
 * member's map (missed.h): the member may hold an older version of it.
 * Its other blocks need no mark: no write since the last checkpoint
 * changed them (every such write has a record, which would carry them,
 * and the checkpoint flushed every member), and the parity the replay
 * writes around them was computed with them.
 * A row named by an intent and holding a role whose member is away (not
 * given at this start, or gone since the write) cannot have its parity
 * recomputed: the data of that role is on no member in use.  Such a row
 * is not marked: the away member's block of it is its own bytes, old or
 * new like every block of the torn write, while the row's parity may
 * match neither; rebuilding that block from parity when the member comes
 * back would replace the right bytes by ones no write ever held.  The
 * checkpoint that ends the replay records instead a resync from the first
 * such row (resync_offset), which runs once every role has its member
 * again: the member back, its delta done (or its role recovered onto a
 * spare), the parity is recomputed from the data.  The rows the resync
 * covers read, meanwhile, what they read before it: the away member's
 * blocks through the torn parity, which may be neither version (the row
 * lies inside the torn write), and a member lost before the resync ends
 * is rebuilt from that parity in those rows (inside the write as well).
 * A map marks regions of several rows: a region that holds such a row
 * and a row the member lacks (a record carries its block there, or a
 * write while it is away) is rebuilt whole, that row included.
 *
 * REJOIN.  A member absent from a start that replays holds records on its
 * own log that the replay never read: for raid5 (and raid6 without its
 * other parity member) the only records of partial rows whose parity it
 * holds, and those rows may be torn.  Its map (missed.h, invariant O)
 * says so, and before it counts in sync again (a delta, or back as it is)
 * its log, as its own newest record left it, is read (journal_parity_rows)
 * and every row where a record carries its block as the row's parity gets
 * that parity recomputed from the data, onto the member (or its row
 * marked, for the delta to do it; a member taken back as it is with force
 * has the owed resync lowered to it instead).  Its data blocks need
 * nothing: a record that carries one has copies on other members (its
 * parity members), which the replay read, marking them then (OWED
 * RESYNC); and recomputing parity is right whatever each data block
 * holds.  A member whose log the replay cannot read (twice) is treated
 * the same way when gone away (its map named); otherwise it is failed
 * (unread_logs), or, when the array cannot do without it, the start
 * stops with nothing replayed and nobody failed (force=true skips its
 * records, warned, and owes a resync of everything): never is it kept in
 * use with its records silently skipped.  A member that left
 * while serving needs none of this: the rows it may lack (written since
 * the last flush every member completed) were marked when it left
 * (missed.h).
 *
 * WHICH WRITES.  consistency.c decides, per layout: every write of a layout
 * with parity, in either layout of a reshape (a raid0 -> raid5 takeover's
 * target is journaled from its first write).  A record names the layout it
 * was written for (0 current, 1 reshape target), and replay applies it to
 * that layout.  Every reshape step empties the log in the same commit that
 * records the new position, so no record of a moved window survives it.
 *
 * GROUP COMMIT.  A record's copies are appended at log positions reserved
 * in order under the journal lock; the writes themselves are shared.  Each
 * copy joins its member's queue (sorted by position, under the queue's own
 * lock).  A writer whose copy is queued on a member with fewer batches in
 * flight than its limit (jq_limit) takes every queued copy of that member (a
 * batch, bounded by JQ_IOV vectors and JQ_ENTRIES copies) and writes it,
 * each run of contiguous copies as one FUA write; when the batch is done
 * it marks every copy in it done (or failed) and wakes the writers waiting
 * on that member.  A writer waits on one member at a time and, woken,
 * looks at all its copies again (a member that can take a batch meanwhile
 * is taken over then).  Two batches in flight keep a fast member as busy
 * as writers issuing their own copies would; a slow (far) member, whose
 * log writes lately took longer than JQ_SLOW_NS on average, gets one, so
 * that every copy arriving during it shares the next write: a member
 * that serves one request at a time spends its time on fewer of them
 * (the limit is a matter of speed only: any value keeps what follows
 * true).  Every
 * writer waits until its own copies are done, so a record is still
 * durable on every copy before its in-place writes start: batching changes
 * how many member writes carry the records, not what is on the log or
 * when a write may proceed.  A failed batch write is reported once (its
 * member goes faulty) and fails every copy in it: each of their writers
 * redoes its group, as with a failed copy of its own.  Nobody waits while
 * holding a batch or a lock, and a batch is bounded by member I/O, so
 * every wait is bounded by one batch write.
 *
 * CHECKPOINT.  Each member's log area is a linear append region reset at
 * every checkpoint: the gate (a writer-preferring rwlock) is taken
 * exclusively — new writes wait, in-flight writes finish — all members are
 * flushed (every in-place write is now durable), and a superblock record
 * with a new epoch and journal_seq = next seq makes all earlier records
 * obsolete.  A checkpoint runs when a member's log is full, at a clean
 * shutdown, at the state changes that need one (a reshape's steps and end,
 * a replace's switch, a member taking a role after one left: JOINS, a
 * resize), and after a client's flush (REPLAY BOUND).  The wait is bounded
 * by the in-flight writes' own I/O.
 *
 * REPLAY BOUND.  A replay reads back every row an intent names since the
 * last checkpoint, from every member, before the array serves; a log of
 * intents alone can name far more of the array than it holds (one small
 * record per full-row write of any size).  So a client's flush also
 * checkpoints once the intents name JOURNAL_REPLAY_BOUND of each member
 * (intent_bytes, reset by every checkpoint; decided again with the gate
 * held exclusively, so flushes that arrive together checkpoint once): with
 * clients that flush, a crash costs the next start at most that, plus what
 * was written since the last flush.  The price, once per that many bytes
 * of whole rows of each member: the journaled writes wait while the
 * members are flushed and the superblock is written.
 *
 * RECORD FORMAT (little-endian; records start on 512-byte boundaries of the
 * member's consistency area; scanning tries every boundary, so a torn record
 * cannot hide later ones):
 *   0   8  magic "NRJREC01"
 *   8   4  CRC32C of the header (header_len bytes, this field as 0)
 *   12  4  CRC32C of the payload
 *   16 16  array uuid
 *   32  8  epoch
 *   40  8  seq
 *   48  4  nblocks       52  4  nranges
 *   56  4  header_len    60  4  payload_len
 *   64  4  layout id
 *   68  8  first: 1 + the seq of the first record of the same write (0 in
 *          records of older versions: the record's own seq counts)
 *   76  4  reserved
 *   80     nblocks x {u32 role, u32 len, u64 member offset}   (16 bytes)
 *          nranges x {u64 first row, u64 rows}                 (16 bytes)
 *   header_len (multiple of 512), then the payload: the blocks in order.
 *
 * VALIDATION.  Members may be someone else's NBD exports or handed-over
 * images, and both CRCs are ones anyone can compute: every field of a
 * record is attacker-controlled.  check_record, the one place a record is
 * judged, replays a record only when every field obeys these rules, else
 * treats it like a torn one: skipped, and (replay) logged with the member,
 * the offset and the rule it breaks.
 *   J1  magic, array uuid and epoch are this array's current log; seq >=
 *       the record's journal_seq (older ones were checkpointed), and seq <=
 *       SB_COUNTER_MAX (sequence numbers never wrap).
 *   J2  nblocks <= JOURNAL_MAX_BLOCKS, nranges <= JOURNAL_MAX_RANGES,
 *       header_len is exactly what they need, and header and payload
 *       (payload_len rounded up to a sector) lie inside the log area; both
 *       CRCs match.
 *   J3  layout id is 0 (current) or 1 (reshape target, only while a
 *       reshape record exists); every field below is checked against that
 *       layout.
 *   J4  each block: 0 <= role < raid_disks of that layout; 0 < len, and
 *       the blocks' lengths add up to exactly payload_len (no block reads
 *       past the record); its member offset and length lie inside that
 *       role's data area of that layout, [data_offset, data_offset + rows *
 *       chunk): replay writes only where the array's data lives, never on
 *       a superblock, the log, head or tail room.  (A role with no member
 *       is never written; its offset cannot be placed.)
 *   J5  each intent: rows > 0 and [row, row + rows) inside the layout's
 *       rows — the target's too, whose rows are those holding the array
 *       (sb_layout_rows), and the record's geometry itself was validated
 *       against the members' real sizes at assembly.
 *   J6  first is 0, or at most seq + 1 (a write's first record comes
 *       before its others).
 * Replay then costs at most what a log this size can hold: intents are
 * merged into disjoint row runs (each row resynced once, at most the
 * layout's rows), and whether a block is superseded is one binary search.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "array-int.h"
#include "missed.h"
#include "journal.h"
#include "util.h"

#define JMAGIC "NRJREC01"
#define JSECTOR 512u
#define JHDR_FIXED 80u
#define JHDR_MAX (JHDR_FIXED + 16u * (JOURNAL_MAX_BLOCKS + JOURNAL_MAX_RANGES))
#define JCOPIES_MAX 3               /* copies of one record: nparity + 1 */
#define JSET 4                      /* records of one group appended together */
#define JBATCH_MAX 3                /* batches one writer takes at a time */
#define JQ_IOV 2048                 /* vectors of one member's batch */
#define JQ_ENTRIES 128              /* copies in one member's batch */
#define JQ_INFLIGHT 2               /* batches of a fast member in flight */
#define JQ_SLOW_NS 250000           /* a member whose log write took longer
                                       has one batch in flight */
_Static_assert (JOURNAL_MAX_BLOCKS + 2 <= JQ_IOV, "a batch holds any one copy");
_Static_assert (SB_MAX_MEMBERS <= 64, "stable_slots has a bit per member slot");
_Static_assert (JSET * (JHDR_MAX + JSECTOR) + JOURNAL_MAX_RECORD + JSECTOR <=
                2 * JOURNAL_MAX_RECORD, "a set fits the smallest log (journal_usable)");

/* A record copy in its member's queue (struct jqueue).  Lives on the stack
 * of its writer, who waits until done; its iov is the writer's scratch. */
struct jq_entry {
  struct jq_entry *next;
  uint64_t pos, len;                /* in the member's log area */
  const struct iovec *iov;
  int iovcnt;
  int err;                          /* once done: 0 or the write's errno */
  bool done;
};

/* A batch one writer took from one member's queue. */
struct jbatch {
  int slot;
  struct jq_entry *list;            /* by log position */
};

struct jblock {
  int role;
  uint32_t len;
  uint64_t off;                     /* absolute member offset */
  const void *data;
};

struct jrange {
  uint64_t row, rows;
};

struct jrecord {
  int layout_id;
  bool payload;                     /* payload blocks (else intents only) */
  int pd, qd;                       /* payload: its rows' parity roles (-1) */
  uint64_t first_row;               /* spreads nparity + 1 copies */
  uint64_t plen;                    /* payload bytes so far */
  int nblocks, nranges;
  struct jblock blocks[JOURNAL_MAX_BLOCKS];
  struct jrange ranges[JOURNAL_MAX_RANGES];
};

/* Per-thread scratch of a journaled write: the records being built (a
 * set appended together), their headers and vectors (every copy of a
 * record shares them); too large for a stack. */
struct jscratch {
  struct jrecord rec[JSET];
  struct iovec iov[JSET][JOURNAL_MAX_BLOCKS + 2];
  uint8_t *hdr[JSET];               /* JHDR_MAX rounded up to a sector */
  uint64_t first;                   /* 1 + seq of this write's first record,
                                       0 before it is numbered */
  /* Batches this writer writes for others too (GROUP COMMIT). */
  struct iovec biov[JBATCH_MAX][JQ_IOV];
  struct mio bmio[JBATCH_MAX * JQ_ENTRIES];
};

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void
scratch_free (void *p)
{
  struct jscratch *js = p;
  for (int i = 0; i < JSET; i++)
    free (js->hdr[i]);
  free (js);
}

static void
scratch_key_init (void)
{
  pthread_key_create (&scratch_key, scratch_free);
}

static struct jscratch *
scratch (void)
{
  struct jscratch *js;

  pthread_once (&scratch_once, scratch_key_init);
  if ((js = pthread_getspecific (scratch_key)) != NULL)
    return js;
  if (!(js = calloc (1, sizeof *js)))
    return NULL;
  for (int i = 0; i < JSET; i++)
    if (!(js->hdr[i] = raid_alloc_aligned (raid_round_up (JHDR_MAX, JSECTOR)))) {
      scratch_free (js);
      return NULL;
    }
  pthread_setspecific (scratch_key, js);
  return js;
}

static uint32_t get32 (const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t) p[3] << 24; }
static uint64_t get64 (const uint8_t *p) { return get32 (p) | (uint64_t) get32 (p + 4) << 32; }
static void put32 (uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = v >> (8 * i); }
static void put64 (uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = v >> (8 * i); }

bool
journal_usable (const struct raid_array *a)
{
  return a->sb.consistency == SB_CONS_JOURNAL &&
    a->sb.cons_size >= 2 * JOURNAL_MAX_RECORD;
}

/* At a checkpoint (gate held exclusively, state lock held), or at the
 * start, when no record of the current epoch exists or replay checkpoints
 * before any write: the members in sync now may hold their rows' records
 * until the next (PLACEMENT), and no departure is pending (JOINS). */
static void
checkpoint_placement (struct raid_array *a)
{
  uint64_t stable = 0;

  for (int t = 0; t < (int) a->sb.nmembers; t++)
    if (a->mem[t].m && atomic_load (&a->mem[t].state) == RAID_MEMBER_IN_SYNC)
      stable |= UINT64_C (1) << t;
  a->jn.stable_slots = stable;
  a->jn.roles_left_seen = atomic_load (&a->roles_left);
}

void
journal_init (struct raid_array *a)
{
  pthread_rwlockattr_t attr;

  pthread_rwlockattr_init (&attr);
  pthread_rwlockattr_setkind_np (&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init (&a->jn.gate, &attr);
  pthread_rwlockattr_destroy (&attr);
  pthread_mutex_init (&a->jn.lock, NULL);
  atomic_store (&a->jn.seq_next, a->sb.journal_seq);
  memset (a->jn.head, 0, sizeof a->jn.head);
  checkpoint_placement (a);
  for (int t = 0; t < SB_MAX_MEMBERS; t++) {
    a->jn.q[t].head = NULL;
    a->jn.q[t].busy = 0;
    a->jn.q[t].lat_ns = 0;
    pthread_mutex_init (&a->jn.q[t].lock, NULL);
    pthread_cond_init (&a->jn.q[t].written, NULL);
  }
}

void
journal_fini (struct raid_array *a)
{
  pthread_rwlock_destroy (&a->jn.gate);
  for (int t = 0; t < SB_MAX_MEMBERS; t++) {
    pthread_cond_destroy (&a->jn.q[t].written);
    pthread_mutex_destroy (&a->jn.q[t].lock);
  }
  pthread_mutex_destroy (&a->jn.lock);
}

static uint32_t
header_len (int nblocks, int nranges)
{
  return raid_round_up (JHDR_FIXED + 16u * (nblocks + nranges), JSECTOR);
}

static uint64_t
record_size (int nblocks, int nranges, uint64_t payload)
{
  return header_len (nblocks, nranges) + raid_round_up (payload, JSECTOR);
}

/* Encode the header for `r` into hdr (header_len bytes, zeroed by caller). */
static void
encode_header (const struct raid_array *a, const struct jrecord *r, uint64_t seq,
               uint64_t first, uint8_t *hdr, uint32_t hlen, uint32_t plen, uint32_t pcrc)
{
  uint8_t *e = hdr + JHDR_FIXED;

  memcpy (hdr, JMAGIC, 8);
  put32 (hdr + 12, pcrc);
  memcpy (hdr + 16, a->sb.array_uuid, RAID_UUID_LEN);
  put64 (hdr + 32, a->sb.journal_epoch);
  put64 (hdr + 40, seq);
  put32 (hdr + 48, r->nblocks);
  put32 (hdr + 52, r->nranges);
  put32 (hdr + 56, hlen);
  put32 (hdr + 60, plen);
  put32 (hdr + 64, r->layout_id);
  put64 (hdr + 68, first);
  for (int i = 0; i < r->nblocks; i++, e += 16) {
    put32 (e, r->blocks[i].role);
    put32 (e + 4, r->blocks[i].len);
    put64 (e + 8, r->blocks[i].off);
  }
  for (int i = 0; i < r->nranges; i++, e += 16) {
    put64 (e, r->ranges[i].row);
    put64 (e + 8, r->ranges[i].rows);
  }
  put32 (hdr + 8, raid_crc32c (hdr, hlen));
}

static bool
role_placed (const struct raid_array *a, const struct layout *L, uint32_t bad, int role)
{
  int s = L->slot[role];

  return s >= 0 && !(bad & (1u << role)) && (a->jn.stable_slots >> s & 1);
}

/* Whether a payload record's copies go on its rows' parity members: each
 * parity role held by a member in sync now and at the last checkpoint,
 * and no member left a role since (PLACEMENT). */
static bool
parity_placed (struct raid_array *a, const struct layout *L, uint32_t bad, int pd, int qd)
{
  return pd >= 0 && a->jn.roles_left_seen == atomic_load (&a->roles_left) &&
    role_placed (a, L, bad, pd) && (qd < 0 || role_placed (a, L, bad, qd));
}

/* Choose the members that hold r's copies (PLACEMENT): its rows' parity
 * members, or nparity+1 in-sync members from a row-dependent role. */
static int
pick_copies (struct raid_array *a, const struct layout *L, const struct jrecord *r,
             int *slots)
{
  int want = (L->g.level == 1 ? 1 : L->g.parity_disks) + 1, n = 0;
  uint32_t bad = state_bad_roles (a, L, NULL, NULL);

  if (r->payload && parity_placed (a, L, bad, r->pd, r->qd)) {
    slots[n++] = L->slot[r->pd];
    if (r->qd >= 0)
      slots[n++] = L->slot[r->qd];
    return n;
  }
  for (int i = 0; i < L->g.raid_disks && n < want; i++) {
    int role = (int) ((r->first_row + i) % L->g.raid_disks);
    int s = L->slot[role];
    if (!(bad & (1u << role)) && s >= 0)
      slots[n++] = s;
  }
  return n;
}

/* Reserve len[c] bytes in the log of slots[c] for each of n copies (a slot
 * may appear more than once); false when a log is full. */
static bool
reserve (struct raid_array *a, const int *slots, const uint64_t *len, int n,
         uint64_t *pos)
{
  uint64_t need[SB_MAX_MEMBERS] = { 0 };
  bool ok = true;

  pthread_mutex_lock (&a->jn.lock);
  for (int c = 0; c < n; c++)
    if (a->jn.head[slots[c]] + (need[slots[c]] += len[c]) > a->sb.cons_size)
      ok = false;
  for (int c = 0; ok && c < n; c++) {
    pos[c] = a->jn.head[slots[c]];
    a->jn.head[slots[c]] += len[c];
  }
  pthread_mutex_unlock (&a->jn.lock);
  return ok;
}

/* ---- group commit (the theory at the top) ---- */

static void
jq_insert (struct jqueue *q, struct jq_entry *e)
{
  struct jq_entry **pp = &q->head;

  while (*pp && (*pp)->pos < e->pos)
    pp = &(*pp)->next;
  e->next = *pp;
  *pp = e;
}

/* Take a batch from q (lock held): its first copies within the bounds. */
static struct jq_entry *
jq_take (struct jqueue *q)
{
  struct jq_entry *list = q->head, *last = NULL, *e = list;
  int iovs = 0, n = 0;

  while (e && n < JQ_ENTRIES && iovs + e->iovcnt <= JQ_IOV) {   /* the first fits */
    iovs += e->iovcnt;
    n++;
    last = e;
    e = e->next;
  }
  last->next = NULL;
  q->head = e;
  q->busy++;
  return list;
}

/* Queue b's copies into mios: each run of contiguous copies (within
 * IOV_MAX vectors) is one FUA write.  Returns the number of mios. */
static int
batch_mios (struct raid_array *a, const struct jbatch *b, struct iovec *biov,
            struct mio *mios)
{
  struct mio *cur = NULL;
  int n = 0, niov = 0;

  for (const struct jq_entry *e = b->list; e; e = e->next) {
    if (!cur || cur->off + cur->len != a->sb.cons_offset + e->pos ||
        cur->iovcnt + e->iovcnt > IOV_MAX) {
      cur = &mios[n++];
      *cur = (struct mio) {
        .m = a->mem[b->slot].m, .op = MIO_WRITE, .flags = MIO_FUA,
        .off = a->sb.cons_offset + e->pos, .iov = &biov[niov],
      };
    }
    memcpy (&biov[niov], e->iov, e->iovcnt * sizeof *e->iov);
    niov += e->iovcnt;
    cur->iovcnt += e->iovcnt;
    cur->len += e->len;
  }
  return n;
}

/* Write the batches (no lock held); a failed write is reported and its
 * errno recorded in every copy it carried. */
static void
write_batches (struct raid_array *a, struct jscratch *js, struct jbatch *b, int nb)
{
  struct mio *mios = js->bmio;
  int first[JBATCH_MAX + 1], n = 0;

  for (int i = 0; i < nb; i++) {
    first[i] = n;
    n += batch_mios (a, &b[i], js->biov[i], &mios[n]);
  }
  first[nb] = n;
  if (mio_run (mios, n) == 0)
    return;
  for (int i = 0; i < nb; i++)
    for (int k = first[i]; k < first[i + 1]; k++) {
      if (mios[k].err == 0)
        continue;
      state_member_error (a, mios[k].m, mios[k].err, true, mios[k].off);
      for (struct jq_entry *e = b[i].list; e; e = e->next)
        if (a->sb.cons_offset + e->pos >= mios[k].off &&
            a->sb.cons_offset + e->pos < mios[k].off + mios[k].len)
          e->err = mios[k].err;
    }
}

/* How many batches q may have in flight (lock held): a slow (far) member
 * gets one, so that the copies arriving meanwhile share its next write;
 * a fast one two, so that its writers need not wait for each other.  Slow
 * means its log writes took longer than JQ_SLOW_NS lately (lat_ns, a
 * moving average of the batch writes it took part in). */
static int
jq_limit (const struct jqueue *q)
{
  return q->lat_ns > JQ_SLOW_NS ? 1 : JQ_INFLIGHT;
}

/* Make the n copies ent[] (on slots[]) durable, sharing the member writes
 * with other writers' copies.  Each queue has its own lock; no two are
 * held at once; a writer takes at most JBATCH_MAX batches at a time.  0,
 * or EAGAIN when a copy failed (its member was reported). */
static int
commit_copies (struct raid_array *a, struct jscratch *js, const int *slots,
               struct jq_entry *ent, int n)
{
  int err = 0;

  for (int c = 0; c < n; c++) {
    struct jqueue *q = &a->jn.q[slots[c]];
    pthread_mutex_lock (&q->lock);
    jq_insert (q, &ent[c]);
    pthread_mutex_unlock (&q->lock);
  }
  for (;;) {
    struct jbatch b[JBATCH_MAX];
    int nb = 0, wait = -1;
    for (int c = 0; c < n; c++) {
      struct jqueue *q = &a->jn.q[slots[c]];
      pthread_mutex_lock (&q->lock);
      if (!ent[c].done && nb < JBATCH_MAX && q->head && q->busy < jq_limit (q))
        b[nb++] = (struct jbatch) { slots[c], jq_take (q) };
      else if (!ent[c].done && wait < 0)
        wait = c;
      pthread_mutex_unlock (&q->lock);
    }
    if (nb == 0 && wait < 0)
      break;                               /* all done */
    if (nb == 0) {
      struct jqueue *q = &a->jn.q[slots[wait]];
      pthread_mutex_lock (&q->lock);
      while (!ent[wait].done && (q->busy >= jq_limit (q) || !q->head))
        pthread_cond_wait (&q->written, &q->lock);   /* a batch ends */
      pthread_mutex_unlock (&q->lock);
      continue;
    }
    uint64_t t0 = raid_now_mono_ns (), ns;
    write_batches (a, js, b, nb);
    ns = raid_now_mono_ns () - t0;
    for (int i = 0; i < nb; i++) {
      struct jqueue *q = &a->jn.q[b[i].slot];
      pthread_mutex_lock (&q->lock);
      for (struct jq_entry *e = b[i].list; e; e = e->next)
        e->done = true;
      q->busy--;
      q->lat_ns = (7 * q->lat_ns + ns) / 8;   /* smoothed: one preempted write
                                                 does not make it slow */
      pthread_cond_broadcast (&q->written);
      pthread_mutex_unlock (&q->lock);
    }
  }
  for (int c = 0; c < n; c++)
    if (ent[c].err)
      err = EAGAIN;
  return err;
}

/* Encode record i of the set with sequence number seq, and the vectors
 * every copy of it writes; returns their count. */
static int
encode_record (struct raid_array *a, struct jscratch *js, int i, uint64_t seq)
{
  const struct jrecord *r = &js->rec[i];
  uint32_t hlen = header_len (r->nblocks, r->nranges), plen = (uint32_t) r->plen;
  uint32_t pcrc = ~0u;
  static const uint8_t pad[JSECTOR];
  struct iovec *iov = js->iov[i];
  int k = 0;

  for (int b = 0; b < r->nblocks; b++)
    pcrc = raid_crc32c_update (pcrc, r->blocks[b].data, r->blocks[b].len);
  memset (js->hdr[i], 0, hlen);
  if (js->first == 0)
    js->first = seq + 1;                   /* this write's first record */
  encode_header (a, r, seq, js->first, js->hdr[i], hlen, plen, ~pcrc);
  iov[k++] = (struct iovec) { js->hdr[i], hlen };
  for (int b = 0; b < r->nblocks; b++)
    iov[k++] = (struct iovec) { (void *) r->blocks[b].data, r->blocks[b].len };
  if (raid_round_up (plen, JSECTOR) != plen)
    iov[k++] = (struct iovec) { (void *) pad, raid_round_up (plen, JSECTOR) - plen };
  return k;
}

/* Append the set's nrec records durably, each with its own sequence number
 * and copies (PLACEMENT), all committed together.  On success returns 0
 * with the journal gate held shared: the caller does the in-place writes,
 * then unlocks the gate.  EAGAIN: a copy failed (the member was reported);
 * nothing is held.  May run a checkpoint when a log is full. */
static int
append_set (struct raid_array *a, const struct layout *L, struct jscratch *js, int nrec)
{
  int slots[JSET * JCOPIES_MAX], first[JSET + 1], n;
  uint64_t pos[JSET * JCOPIES_MAX], len[JSET * JCOPIES_MAX];
  struct jq_entry ent[JSET * JCOPIES_MAX];
  int err;

  for (;;) {
    pthread_rwlock_rdlock (&a->jn.gate);          /* released by the caller */
    n = 0;
    for (int i = 0; i < nrec; i++) {
      const struct jrecord *r = &js->rec[i];
      int k = pick_copies (a, L, r, &slots[n]);
      if (k == 0) {
        pthread_rwlock_unlock (&a->jn.gate);
        return EIO;
      }
      first[i] = n;
      for (int c = n; c < n + k; c++)
        len[c] = record_size (r->nblocks, r->nranges, r->plen);
      n += k;
    }
    first[nrec] = n;
    if (reserve (a, slots, len, n, pos))
      break;
    pthread_rwlock_unlock (&a->jn.gate);
    if ((err = journal_checkpoint (a, NULL, NULL)) != 0)
      return err;
  }
  for (int i = 0; i < nrec; i++) {
    int k = encode_record (a, js, i, atomic_fetch_add (&a->jn.seq_next, 1));
    for (int c = first[i]; c < first[i + 1]; c++)
      ent[c] = (struct jq_entry) { .pos = pos[c], .len = len[c], .iov = js->iov[i],
                                   .iovcnt = k };
  }
  if (commit_copies (a, js, slots, ent, n) != 0) {
    pthread_rwlock_unlock (&a->jn.gate);
    return EAGAIN;
  }
  return 0;
}

/* The record of the set that unit u belongs in (PLACEMENT: intents in
 * one, payload by its row's parity roles), begun when there is none yet;
 * NULL when the set is full. */
static struct jrecord *
set_record (struct jscratch *js, int *nrec, const struct layout *L,
            const struct write_unit *u)
{
  struct jrecord *r;
  int pd = -1, qd = -1;

  if (!u->full && L->g.level >= 4) {
    struct raid_row R;
    raid_geom_row (&L->g, u->row, &R);
    pd = R.pd;
    qd = R.qd;
  }
  for (int i = 0; i < *nrec; i++) {
    r = &js->rec[i];
    if (r->payload == !u->full && r->pd == pd && r->qd == qd)
      return r;
  }
  if (*nrec == JSET)
    return NULL;
  r = &js->rec[(*nrec)++];
  r->layout_id = L->id;
  r->payload = !u->full;
  r->pd = pd;
  r->qd = qd;
  r->first_row = u->row;
  r->plen = 0;
  r->nblocks = r->nranges = 0;
  return r;
}

/* The payload bytes unit u adds to a record (0 for a full one). */
static uint64_t
unit_bytes (const struct write_batch *g, const struct write_unit *u)
{
  uint64_t plen = 0;

  for (size_t j = u->first; !u->full && j < u->end; j++)
    plen += g->pieces[j].len;
  return plen;
}

/* Add unit u (plen payload bytes: unit_bytes) to rec: a full unit as an
 * intent range (merged with the previous one), a partial one as its
 * payload blocks.  False when it does not fit (a record begun for it
 * always does). */
static bool
add_unit (struct jrecord *rec, const struct write_batch *g, const struct write_unit *u,
          uint64_t plen)
{
  size_t np = u->end - u->first;

  if (u->full) {
    struct jrange *last = rec->nranges ? &rec->ranges[rec->nranges - 1] : NULL;
    if (last && last->row + last->rows > u->row)
      return true;                       /* same rows, another column slice */
    if (last && last->row + last->rows == u->row) {
      last->rows += u->rows;
      return true;
    }
    if (rec->nranges == JOURNAL_MAX_RANGES)
      return false;
    rec->ranges[rec->nranges++] = (struct jrange) { u->row, u->rows };
    return true;
  }
  if (rec->nblocks &&
      (rec->plen + plen > JOURNAL_MAX_RECORD || rec->nblocks + np > JOURNAL_MAX_BLOCKS))
    return false;
  for (size_t j = u->first; j < u->end; j++) {
    const struct piece *p = &g->pieces[j];
    rec->blocks[rec->nblocks++] = (struct jblock) { p->role, (uint32_t) p->len, p->off, p->ptr };
  }
  rec->plen += plen;
  return true;
}

/* REPLAY BOUND: what the set's intents name of each member. */
static void
count_intents (struct raid_array *a, const struct layout *L,
               const struct jscratch *js, int nrec)
{
  uint64_t rows = 0;

  for (int i = 0; i < nrec; i++)
    for (int k = 0; !js->rec[i].payload && k < js->rec[i].nranges; k++)
      rows += js->rec[i].ranges[k].rows;
  if (rows)
    atomic_fetch_add (&a->jn.intent_bytes, rows * L->g.chunk);
}

static bool
replay_long (struct raid_array *a)
{
  return atomic_load (&a->jn.intent_bytes) >= JOURNAL_REPLAY_BOUND;
}

int
journal_write (struct raid_array *a, const struct layout *L,
               const struct write_batch *g, write_issue_fn issue, void *ctx,
               uint32_t *failed)
{
  struct jscratch *js = scratch ();
  size_t u0 = 0;

  *failed = 0;
  if (!js)
    return ENOMEM;
  js->first = 0;
  while (u0 < g->nunits) {
    size_t u1 = u0;
    uint64_t set_bytes = 0;
    int nrec = 0, err;

    while (u1 < g->nunits) {
      const struct write_unit *u = &g->units[u1];
      uint64_t ub = unit_bytes (g, u);
      struct jrecord *rec;
      if (u1 > u0 && set_bytes + ub > JOURNAL_MAX_RECORD)
        break;                             /* the set fits an empty log */
      if (!(rec = set_record (js, &nrec, L, u)) || !add_unit (rec, g, u, ub))
        break;
      set_bytes += ub;
      u1++;
    }
    if ((err = append_set (a, L, js, nrec)) == EAGAIN) {
      *failed = 1;                         /* a log copy failed: redo */
      return 0;
    }
    if (err)
      return err;
    count_intents (a, L, js, nrec);        /* the gate held: no checkpoint
                                              between the append and this */
    err = issue (ctx, g->units[u0].first, g->units[u1 - 1].end, failed);
    pthread_rwlock_unlock (&a->jn.gate);
    if (err || *failed)
      return err;
    u0 = u1;
  }
  return 0;
}

bool
journal_join_due (struct raid_array *a)
{
  return a->jn.roles_left_seen != atomic_load (&a->roles_left);
}

/* The checkpoint itself (CHECKPOINT), the gate held exclusively. */
static int
checkpoint_locked (struct raid_array *a,
                   void (*update) (struct raid_array *a, void *arg), void *arg)
{
  int err;

  state_flush_all (a);
  pthread_mutex_lock (&a->state_lock);
  a->sb.journal_epoch++;
  a->sb.journal_seq = atomic_load (&a->jn.seq_next);
  if (update)
    update (a, arg);
  err = state_commit (a);
  if (err == 0)                            /* every record is obsolete now */
    checkpoint_placement (a);
  pthread_mutex_unlock (&a->state_lock);
  if (err == 0) {
    pthread_mutex_lock (&a->jn.lock);
    memset (a->jn.head, 0, sizeof a->jn.head);
    pthread_mutex_unlock (&a->jn.lock);
    atomic_store (&a->jn.intent_bytes, 0);
  }
  return err;
}

int
journal_checkpoint (struct raid_array *a,
                    void (*update) (struct raid_array *a, void *arg), void *arg)
{
  int err;

  pthread_rwlock_wrlock (&a->jn.gate);       /* waits for in-flight writes */
  err = checkpoint_locked (a, update, arg);
  pthread_rwlock_unlock (&a->jn.gate);
  return err;
}

int
journal_bound_replay (struct raid_array *a)
{
  int err = 0;

  if (!replay_long (a))
    return 0;
  pthread_rwlock_wrlock (&a->jn.gate);       /* waits for in-flight writes */
  if (replay_long (a))                       /* not done by another flush */
    err = checkpoint_locked (a, NULL, NULL);
  pthread_rwlock_unlock (&a->jn.gate);
  return err;
}

/* ------------------------------------------------------------------ */
/* Validation: every field of a record (the rules at the top). */

/* Why the record at p (avail bytes of the area from there) is not one to
 * replay.  Returns its length when it is valid.  Otherwise 0 with *kind:
 * JR_NONE (no record of this array's current log starts here: not our
 * magic, another array or epoch, or checkpointed), JR_TORN (a checksum or
 * a length that the checksum could not vouch for), JR_INVALID (intact, but
 * a field breaks a rule); why names it for the last two. */
enum jr_kind { JR_VALID, JR_NONE, JR_TORN, JR_INVALID };

static uint64_t
check_record (const struct journal_view *v, uint8_t *p, uint64_t avail,
              enum jr_kind *kind, char *why, size_t whylen)
{
  uint32_t hlen, plen, crc, nb, nr, id;
  uint64_t need, sum = 0;
  const struct layout *L;
  const uint8_t *e;

  *kind = JR_NONE;
  if (avail < JSECTOR || memcmp (p, JMAGIC, 8) != 0 ||
      memcmp (p + 16, v->uuid, RAID_UUID_LEN) != 0 ||
      get64 (p + 32) != v->epoch || get64 (p + 40) < v->seq)
    return 0;
  *kind = JR_TORN;
  nb = get32 (p + 48); nr = get32 (p + 52); hlen = get32 (p + 56); plen = get32 (p + 60);
  if (nb > JOURNAL_MAX_BLOCKS || nr > JOURNAL_MAX_RANGES ||
      hlen != header_len (nb, nr) || hlen > avail) {
    snprintf (why, whylen, "header length %" PRIu32 " for %" PRIu32 " blocks and %"
              PRIu32 " ranges", hlen, nb, nr);
    return 0;
  }
  crc = get32 (p + 8);
  put32 (p + 8, 0);
  if (raid_crc32c (p, hlen) != crc) {
    put32 (p + 8, crc);
    snprintf (why, whylen, "header checksum mismatch");
    return 0;
  }
  put32 (p + 8, crc);
  need = hlen + raid_round_up ((uint64_t) plen, JSECTOR);
  if (need > avail) {
    snprintf (why, whylen, "payload_len %" PRIu32 " runs past the log area", plen);
    return 0;
  }
  if (raid_crc32c (p + hlen, plen) != get32 (p + 12)) {
    snprintf (why, whylen, "payload checksum mismatch");
    return 0;
  }

  *kind = JR_INVALID;
  id = get32 (p + 64);
  if (get64 (p + 68) > get64 (p + 40) + 1) {
    snprintf (why, whylen, "first %" PRIu64 " after its own seq %" PRIu64, get64 (p + 68),
              get64 (p + 40));
    return 0;
  }
  if (get64 (p + 40) > SB_COUNTER_MAX) {
    snprintf (why, whylen, "seq %" PRIu64 " beyond %" PRIu64, get64 (p + 40),
              SB_COUNTER_MAX);
    return 0;
  }
  if (id > LAYOUT_NEXT || v->L[id] == NULL) {
    snprintf (why, whylen, "layout %" PRIu32 " does not exist%s", id,
              id == LAYOUT_NEXT ? " (no reshape)" : "");
    return 0;
  }
  L = v->L[id];
  e = p + JHDR_FIXED;
  for (uint32_t i = 0; i < nb; i++, e += 16) {
    int32_t role = (int32_t) get32 (e);
    uint32_t len = get32 (e + 4);
    uint64_t off = get64 (e + 8), area = L->rows * L->g.chunk, rel;

    if (role < 0 || role >= L->g.raid_disks) {
      snprintf (why, whylen, "block %" PRIu32 ": role %" PRId32 " outside 0..%d of "
                "layout %" PRIu32, i, role, L->g.raid_disks - 1, id);
      return 0;
    }
    if (len == 0 || len > plen - sum) {
      snprintf (why, whylen, "block %" PRIu32 ": length %" PRIu32 " beyond the "
                "payload (%" PRIu32 " bytes, %" PRIu64 " used)", i, len, plen, sum);
      return 0;
    }
    sum += len;
    rel = off - L->data_offset[role];
    if (L->slot[role] >= 0 &&
        (off < L->data_offset[role] || rel > area || len > area - rel)) {
      snprintf (why, whylen, "block %" PRIu32 ": %" PRIu32 " bytes at offset %"
                PRIu64 " outside the data area of role %" PRId32 " [%" PRIu64 ", %"
                PRIu64 ")", i, len, off, role, L->data_offset[role],
                L->data_offset[role] + area);
      return 0;
    }
  }
  if (sum != plen) {
    snprintf (why, whylen, "blocks hold %" PRIu64 " bytes, payload_len says %"
              PRIu32, sum, plen);
    return 0;
  }
  for (uint32_t i = 0; i < nr; i++, e += 16) {
    uint64_t row = get64 (e), rows = get64 (e + 8);
    if (rows == 0 || row >= L->rows || rows > L->rows - row) {
      snprintf (why, whylen, "intent %" PRIu32 ": rows [%" PRIu64 ", +%" PRIu64
                ") outside the %" PRIu64 " rows of layout %" PRIu32, i, row, rows,
                L->rows, id);
      return 0;
    }
  }
  *kind = JR_VALID;
  return need;
}

void
journal_view_init (struct journal_view *v, const struct raid_sb *sb,
                   const struct layout *cur, const struct layout *next)
{
  v->uuid = sb->array_uuid;
  v->epoch = sb->journal_epoch;
  v->seq = sb->journal_seq;
  v->L[LAYOUT_CUR] = cur;
  v->L[LAYOUT_NEXT] = next;
}

int
journal_scan (const struct journal_view *v, uint8_t *area, uint64_t size,
              journal_record_fn fn, void *arg)
{
  int r = 0;

  for (uint64_t pos = 0; pos + JSECTOR <= size && r == 0;) {
    enum jr_kind kind;
    char why[200] = "";
    uint64_t len = check_record (v, area + pos, size - pos, &kind, why, sizeof why);

    if (kind != JR_NONE)
      r = fn (arg, pos, kind == JR_VALID ? area + pos : NULL,
              kind == JR_TORN ? "torn" : kind == JR_INVALID ? "invalid" : NULL, why);
    pos += len ? len : JSECTOR;
  }
  return r;
}

/* REJOIN: the rows of a member's own records where it holds the parity. */
struct parity_rows {
  const struct layout *L;
  int role;
  int (*fn) (void *arg, uint64_t row);
  void *arg;
};

static int
parity_found (void *arg, uint64_t pos, uint8_t *rec, const char *kind, const char *why)
{
  const struct parity_rows *pr = arg;
  const struct layout *L = pr->L;
  uint32_t nb;
  const uint8_t *e;
  int r = 0;

  (void) pos; (void) kind; (void) why;
  if (!rec)
    return 0;                              /* torn or invalid: never replayed
                                              either, no in-place write of it
                                              began */
  nb = get32 (rec + 48);
  e = rec + JHDR_FIXED;
  for (uint32_t i = 0; i < nb && r == 0; i++, e += 16) {
    uint64_t off = get64 (e + 8), row;
    struct raid_row rw;

    if ((int) get32 (e) != pr->role || off < L->data_offset[pr->role])
      continue;
    row = (off - L->data_offset[pr->role]) / L->g.chunk;
    raid_geom_row (&L->g, row, &rw);
    if (rw.pd == pr->role || rw.qd == pr->role)
      r = pr->fn (pr->arg, row);
  }
  return r;
}

int
journal_parity_rows (struct member *m, const uint8_t *uuid, uint64_t epoch,
                     uint64_t seq, const struct layout *L, uint64_t off,
                     uint64_t size, int role, int (*fn) (void *arg, uint64_t row),
                     void *arg)
{
  struct journal_view v = { .uuid = uuid, .epoch = epoch, .seq = seq, .L = { L, NULL } };
  struct parity_rows pr = { .L = L, .role = role, .fn = fn, .arg = arg };
  uint8_t *buf = raid_alloc_aligned (size);
  int r = buf ? member_pread (m, buf, size, off) : ENOMEM;

  if (r == 0)
    r = journal_scan (&v, buf, size, parity_found, &pr);
  free (buf);
  return r;
}

/* ------------------------------------------------------------------ */
/* Replay. */

struct found {
  uint64_t seq;
  uint8_t *rec;                            /* header + payload (in the area buffer) */
};

static int
cmp_found (const void *x, const void *y)
{
  const struct found *a = x, *b = y;
  return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* Intent row ranges of all records, to decide which payload blocks are
 * superseded and which rows need their parity recomputed. */
struct intent {
  uint64_t seq, row, rows;          /* seq: payload numbered below it is
                                       superseded (intent_first) */
};

/* One layout's intents, as disjoint segments [edge[k], edge[k+1]) each
 * with the highest seq covering it plus one (0: not covered).  Building it
 * is O(n log n) and a lookup O(log n), so no log, however crafted, makes
 * replay quadratic; and the rows to resync are the covered segments,
 * merged: at most the layout's rows, whatever the intents overlap. */
struct cover {
  uint64_t *edge, *top;
  size_t m;                                /* edges; m - 1 segments */
};

static int
cmp_u64 (const void *x, const void *y)
{
  uint64_t a = *(const uint64_t *) x, b = *(const uint64_t *) y;
  return a < b ? -1 : a > b;
}

static int
cmp_seq_desc (const void *x, const void *y)
{
  const struct intent *a = x, *b = y;
  return a->seq > b->seq ? -1 : a->seq < b->seq;
}

/* First k with edge[k] >= v. */
static size_t
lower_edge (const struct cover *c, uint64_t v)
{
  size_t lo = 0, hi = c->m;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (c->edge[mid] < v)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* Next segment at or after k not painted yet (path-halving). */
static size_t
next_free (size_t *nx, size_t k)
{
  while (nx[k] != k) {
    nx[k] = nx[nx[k]];
    k = nx[k];
  }
  return k;
}

/* Build c from in[0..n) (sorted here by seq, highest first, so each
 * segment is painted once, by the newest intent covering it). */
static int
cover_build (struct cover *c, struct intent *in, size_t n)
{
  size_t *nx = NULL, m = 0;

  memset (c, 0, sizeof *c);
  if (n == 0)
    return 0;
  if (!(c->edge = malloc (2 * n * sizeof *c->edge)))
    return ENOMEM;
  for (size_t i = 0; i < n; i++) {
    c->edge[m++] = in[i].row;
    c->edge[m++] = in[i].row + in[i].rows;
  }
  qsort (c->edge, m, sizeof *c->edge, cmp_u64);
  c->m = 0;
  for (size_t i = 0; i < m; i++)
    if (c->m == 0 || c->edge[c->m - 1] != c->edge[i])
      c->edge[c->m++] = c->edge[i];
  if (!(c->top = calloc (c->m, sizeof *c->top)) || !(nx = malloc (c->m * sizeof *nx))) {
    free (nx);
    return ENOMEM;
  }
  for (size_t k = 0; k < c->m; k++)
    nx[k] = k;
  qsort (in, n, sizeof *in, cmp_seq_desc);
  for (size_t i = 0; i < n; i++) {
    size_t end = lower_edge (c, in[i].row + in[i].rows);
    for (size_t k = next_free (nx, lower_edge (c, in[i].row)); k < end;
         k = next_free (nx, k + 1)) {
      c->top[k] = in[i].seq + 1;
      nx[k] = k + 1;
    }
  }
  free (nx);
  return 0;
}

static void
cover_free (struct cover *c)
{
  free (c->edge);
  free (c->top);
}

/* Does an intent newer than seq cover `row`? */
static bool
superseded (const struct cover *c, uint64_t seq, uint64_t row)
{
  size_t k = lower_edge (c, row + 1);      /* first edge > row */

  return k > 0 && k < c->m && c->top[k - 1] > seq + 1;
}

/* Write a record's payload blocks back in place, except blocks of rows
 * that a later full-row write (intent) rewrote: its data was not logged,
 * and the older bytes must not replace it.  A member being rebuilt gets
 * its blocks too, in every row, as the stripe engine writes it: below its
 * recovery offset it holds the row and nothing will rebuild it again.  A
 * block of a role whose member is away is marked in that member's map
 * (OWED RESYNC).  The record passed check_record: every block of a role
 * with a member slot lies inside its data area.  0 or ENOMEM. */
static int
apply_payload (struct raid_array *a, const struct journal_view *v, uint8_t *p,
               const struct cover *cv)
{
  int id = (int) get32 (p + 64);
  const struct layout *L = v->L[id];
  uint32_t nb = get32 (p + 48), hlen = get32 (p + 56);
  uint8_t *e = p + JHDR_FIXED, *data = p + hlen;
  uint64_t seq = get64 (p + 40);
  uint32_t rebuilding, bad = state_bad_roles (a, L, &rebuilding, NULL);
  int err = 0;

  for (uint32_t i = 0; i < nb && !err; i++, e += 16) {
    int role = (int) get32 (e);
    uint32_t len = get32 (e + 4);
    uint64_t off = get64 (e + 8);
    struct member *m = state_role_member (a, L, role);
    uint64_t row = L->slot[role] >= 0 ? (off - L->data_offset[role]) / L->g.chunk : 0;
    int werr;

    if (L->slot[role] < 0 || superseded (&cv[id], seq, row))
      ;                                    /* nowhere to put it, or rewritten
                                              by a later full-row write */
    else if (!m || (bad & (1u << role))) { /* its member is away: it lacks
                                              this block (OWED RESYNC) */
      if (L->id == LAYOUT_CUR)
        err = missed_mark_role_row (a, role, row);
    }
    else if ((werr = member_pwrite (m, data, len, off, false)) != 0)
      state_member_error (a, m, werr, true, off);   /* its own error: a member
                                                     that went away is missing */
    data += len;
  }
  return err;
}

/* Payload numbered below this is superseded by the record's intents: the
 * first seq of its write (REPLAY), or its own seq in an older record. */
static uint64_t
intent_first (const uint8_t *p)
{
  uint64_t first = get64 (p + 68);

  return first ? first - 1 : get64 (p + 40);
}

static int
collect_intents (uint8_t *p, struct intent **in, size_t *nin, size_t *cap)
{
  uint32_t nb = get32 (p + 48), nr = get32 (p + 52);
  uint8_t *e = p + JHDR_FIXED + 16 * nb;

  for (uint32_t i = 0; i < nr; i++, e += 16) {
    if (*nin == *cap) {
      struct intent *n2;
      *cap = *cap ? *cap * 2 : 64;
      if (!(n2 = realloc (*in, *cap * sizeof **in)))
        return ENOMEM;
      *in = n2;
    }
    (*in)[(*nin)++] = (struct intent) { intent_first (p), get64 (e), get64 (e + 8) };
  }
  return 0;
}

/* Rows a full-row write touched: their data may be torn or partly lost from
 * a volatile cache, and later partial writes computed parity from it; the
 * only consistent state is parity recomputed from what is on the members.
 * Done after every payload is back in place, once per covered row.  A row
 * of the current layout with a role that has no member in use cannot be
 * made consistent now (OWED RESYNC): *owe receives the first such row. */
static int
resync_intents (struct raid_array *a, const struct journal_view *v,
                journal_resync_fn resync, const struct cover *cv, uint64_t *owe)
{
  int err = 0;

  for (int id = LAYOUT_CUR; id <= LAYOUT_NEXT && !err; id++) {
    const struct cover *c = &cv[id];
    uint32_t rb;                           /* a role being rebuilt holds the
                                              rows intents name (intent_ok) */
    uint64_t rb_row;
    bool whole = id != LAYOUT_CUR || state_bad_roles (a, v->L[id], &rb, &rb_row) == 0;
    for (size_t k = 0; k + 1 < c->m && !err;) {
      size_t j = k;
      if (c->top[k] == 0) {
        k++;
        continue;
      }
      while (j + 1 < c->m && c->top[j] != 0)
        j++;                               /* [edge[k], edge[j]) covered */
      if (!whole)
        *owe = raid_min_u64 (*owe, c->edge[k]);
      err = resync (a, v->L[id], c->edge[k], c->edge[j] - c->edge[k]);
      k = j;
    }
  }
  return err;
}

/* The checkpoint after a replay records the resync it owes (OWED RESYNC),
 * from the first data byte of row *arg of the current layout. */
static void
record_owed (struct raid_array *a, void *arg)
{
  uint64_t row = *(const uint64_t *) arg;

  if (row != UINT64_MAX)
    a->sb.resync_offset = raid_min_u64 (a->sb.resync_offset,
                                        row * router_layout (&a->router,
                                                             LAYOUT_CUR)->g.stripe_width);
}

/* Replay's scan of one member's log: keep the valid records, report the
 * rejected ones (a few by name, the rest counted). */
struct replay_scan {
  struct raid_array *a;
  struct member *m;
  struct found *f;
  size_t nf, capf;
  int nrejected;
};

static int
replay_found (void *arg, uint64_t pos, uint8_t *rec, const char *kind, const char *why)
{
  struct replay_scan *rs = arg;

  if (rec == NULL) {
    if (strcmp (kind, "invalid") == 0 && rs->nrejected++ < 4)
      raid_log (RAID_LOG_WARN, "%s: write-hole log record at offset %" PRIu64
                " rejected (not replayed): %s", member_spec (rs->m),
                rs->a->sb.cons_offset + pos, why);
    return 0;
  }
  if (rs->nf == rs->capf) {
    struct found *f2;
    rs->capf = rs->capf ? rs->capf * 2 : 64;
    if (!(f2 = realloc (rs->f, rs->capf * sizeof *f2)))
      return ENOMEM;
    rs->f = f2;
  }
  rs->f[rs->nf++] = (struct found) { get64 (rec + 40), rec };
  return 0;
}

/* The members in `unread` (a bit per table slot) could not have their
 * logs read (twice, each error reported): the replay must not go on as if
 * their records did not exist (they may be the only ones of the partial
 * rows whose parity each holds, PLACEMENT).  One gone away (its
 * connection lost) is missing with a map that says its log was not
 * replayed (missed.h, O).  The others are failed, to be rebuilt in full,
 * unless the array cannot do without them all: then the start stops,
 * having failed none of them, or, with force, their records are skipped
 * and a resync of everything is owed (warned).  0, or EIO with err set. */
static int
unread_logs (struct raid_array *a, uint64_t unread, bool force, char *err, size_t errlen)
{
  const struct layout *L = router_layout (&a->router, LAYOUT_CUR);
  uint32_t bad, need = 0;
  char names[256] = "";
  int r = 0;

  if (!unread)
    return 0;
  pthread_mutex_lock (&a->state_lock);
  bad = state_bad_roles (a, L, NULL, NULL);
  for (int t = 0; t < (int) a->sb.nmembers; t++) {
    int role = a->sb.members[t].role;
    size_t l = strlen (names);
    if (!(unread & (UINT64_C(1) << t)))
      continue;
    if (!state_member_in_use (a, t)) {
      missed_log_unread (a, t);
      continue;
    }
    if (role >= 0 && role < L->g.raid_disks)
      need |= 1u << role;
    snprintf (names + l, sizeof names - l, "%s%s", l ? ", " : "", member_spec (a->mem[t].m));
  }
  if (need && __builtin_popcount (bad | need) > layout_tolerance (L)) {
    if (!force) {
      snprintf (err, errlen, "cannot read the write-hole log of %s, and the array cannot do "
                "without it: nothing was replayed (force=true starts it without those "
                "records: rows they name may hold parity that matches neither version of "
                "their data until the resync that is then owed)", names);
      r = EIO;
    }
    else {
      raid_log (RAID_LOG_WARN, "the write-hole log of %s cannot be read: force=true, its "
                "records are skipped, and the whole array is resynced once it is optimal",
                names);
      a->sb.resync_offset = 0;
    }
  }
  else if (need) {
    for (int t = 0; t < (int) a->sb.nmembers; t++)
      if ((unread & (UINT64_C(1) << t)) && state_member_in_use (a, t))
        member_transition (a, t, RAID_MEMBER_FAULTY, a->sb.members[t].role,
                           "its write-hole log cannot be read");
    state_commit (a);
  }
  pthread_mutex_unlock (&a->state_lock);
  return r;
}

int
journal_replay (struct raid_array *a, journal_resync_fn resync, bool force, int *napplied,
                char *err, size_t errlen)
{
  uint64_t size = a->sb.cons_size;
  uint8_t *bufs[SB_MAX_MEMBERS] = { NULL };
  struct replay_scan rs = { .a = a };
  struct journal_view v;
  struct intent *in[2] = { NULL, NULL };
  struct cover cv[2];
  size_t nin[2] = { 0, 0 }, capin[2] = { 0, 0 };
  uint64_t owe = UINT64_MAX, unread = 0;
  int r = 0;

  *napplied = 0;
  memset (cv, 0, sizeof cv);
  journal_view_init (&v, &a->sb, router_layout (&a->router, LAYOUT_CUR),
                     router_two (&a->router) ? router_layout (&a->router, LAYOUT_NEXT)
                     : NULL);
  for (int t = 0; t < (int) a->sb.nmembers; t++) {
    if (!state_member_in_use (a, t))
      continue;
    int e;

    if (!(bufs[t] = raid_alloc_aligned (size))) {   /* its records would be skipped */
      snprintf (err, errlen, "out of memory for the write-hole log");
      r = ENOMEM;
      goto out;
    }
    if ((e = member_pread (a->mem[t].m, bufs[t], size, a->sb.cons_offset)) != 0 &&
        (e = member_pread (a->mem[t].m, bufs[t], size, a->sb.cons_offset)) != 0) {
      raid_log (RAID_LOG_WARN, "%s: cannot read its journal: %s", member_spec (a->mem[t].m),
                raid_strerror (e));
      free (bufs[t]);
      bufs[t] = NULL;
      state_member_error (a, a->mem[t].m, e, false, a->sb.cons_offset);
      unread |= UINT64_C(1) << t;
      continue;
    }
    rs.m = a->mem[t].m;
    rs.nrejected = 0;
    if ((r = journal_scan (&v, bufs[t], size, replay_found, &rs)) != 0) {
      snprintf (err, errlen, "out of memory");
      goto out;
    }
    if (rs.nrejected > 4)
      raid_log (RAID_LOG_WARN, "%s: %d more write-hole log records rejected",
                member_spec (rs.m), rs.nrejected - 4);
  }
  if ((r = unread_logs (a, unread, force, err, errlen)) != 0)
    goto out;
  if (rs.nf)
    qsort (rs.f, rs.nf, sizeof *rs.f, cmp_found);
  for (size_t i = 0; i < rs.nf; i++) {     /* pass 1: every intent, per layout */
    int id = (int) get32 (rs.f[i].rec + 64);
    if ((i == 0 || rs.f[i].seq != rs.f[i - 1].seq) &&
        (r = collect_intents (rs.f[i].rec, &in[id], &nin[id], &capin[id])) != 0) {
      snprintf (err, errlen, "out of memory");
      goto out;
    }
  }
  for (int id = LAYOUT_CUR; id <= LAYOUT_NEXT; id++)
    if ((r = cover_build (&cv[id], in[id], nin[id])) != 0) {
      snprintf (err, errlen, "out of memory");
      goto out;
    }
  for (size_t i = 0; i < rs.nf; i++) {     /* pass 2: payloads, in order */
    if (i > 0 && rs.f[i].seq == rs.f[i - 1].seq)
      continue;                            /* another copy */
    if ((r = apply_payload (a, &v, rs.f[i].rec, cv)) != 0) {
      snprintf (err, errlen, "out of memory");
      goto out;
    }
    (*napplied)++;
    atomic_store (&a->jn.seq_next, raid_max_u64 (atomic_load (&a->jn.seq_next),
                                                 rs.f[i].seq + 1));
  }
  if ((r = resync_intents (a, &v, resync, cv, &owe)) != 0) {   /* pass 3: full-row writes */
    snprintf (err, errlen, "journal replay could not resync rows: %s", raid_strerror (r));
    goto out;
  }
  if (owe != UINT64_MAX)
    raid_log (RAID_LOG_WARN, "journal replay: rows from %" PRIu64 " on written whole when "
              "the array stopped have a role without its member: their parity is made "
              "consistent by a resync once the array is optimal again", owe);
  r = journal_checkpoint (a, record_owed, &owe);   /* flush, new epoch: log cleared */
  if (r)
    snprintf (err, errlen, "journal checkpoint after replay failed: %s", raid_strerror (r));
 out:
  for (int t = 0; t < SB_MAX_MEMBERS; t++)
    free (bufs[t]);
  for (int id = LAYOUT_CUR; id <= LAYOUT_NEXT; id++) {
    cover_free (&cv[id]);
    free (in[id]);
  }
  free (rs.f);
  return r;
}
