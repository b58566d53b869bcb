/* nbdkit-raid: the write-hole journal (see journal.c for the theory). */
#ifndef RAIDCORE_JOURNAL_H
#define RAIDCORE_JOURNAL_H

#include <stdbool.h>
#include <stdint.h>

struct raid_array;
struct layout;

#define JOURNAL_MAX_BLOCKS 512      /* payload blocks per record */
#define JOURNAL_MAX_RANGES 64       /* intent row ranges per record */
#define JOURNAL_MAX_RECORD (1u << 20) /* payload bytes per record */

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
  uint64_t first_row;               /* spreads the copies over members */
  int nblocks, nranges;
  const struct jblock *blocks;
  const struct jrange *ranges;
};

/* Whether writes of this array are journaled. */
bool journal_enabled (const struct raid_array *a);
void journal_init (struct raid_array *a);
void journal_fini (struct raid_array *a);

/* Bytes of the header buffer journal_append needs for a record. */
uint64_t journal_record_size (int nblocks, int nranges, uint64_t payload);
#define journal_header_max() (raid_round_up (80 + 16 * (JOURNAL_MAX_BLOCKS + JOURNAL_MAX_RANGES), 512))

/* Append r durably (FUA, nparity+1 copies).  On success returns 0 with the
 * journal gate held shared: the caller does the in-place writes, then
 * journal_end.  EAGAIN: a copy failed (the member was reported); nothing is
 * held; redo the group.  May run a checkpoint when a log is full. */
int journal_append (struct raid_array *a, const struct layout *L,
                    const struct jrecord *r, uint8_t *hdr_buf);
void journal_end (struct raid_array *a);

/* Flush every member and start a new epoch: every record becomes obsolete.
 * Waits for in-flight journaled writes to finish (bounded by their I/O). */
int journal_checkpoint (struct raid_array *a);
/* The same, and update(a, arg) changes a->sb (under sb_lock) before the
 * checkpoint's superblock commit, so that one durable record both empties
 * the log and carries the update (a reshape position: records of the
 * moved window must never be replayed into the old layout once the new
 * position is durable). */
int journal_checkpoint_with (struct raid_array *a,
                             void (*update) (struct raid_array *a, void *arg),
                             void *arg);

/* Apply every valid record after the last checkpoint, in order, then
 * checkpoint.  *napplied receives the number of records applied. */
int journal_replay (struct raid_array *a, int *napplied, char *err, size_t errlen);

#endif
