/* nbdkit-raid: the superblock journal (contract and placement: sb.h).
 *
 * Theory
 * ------
 * Each member starts with a ring of SB_RING_SLOTS slots.  A slot holds one
 * complete, self-describing record; nothing in a record refers to another
 * slot, so any single slot is enough to know the array.  An update never
 * edits a record: it appends the new state with events = previous + 1 to slot
 * events % SB_RING_SLOTS, which is never the slot of the newest record.  The
 * newest record therefore survives anything that can happen to the slot
 * being written (a torn write, a crash before the flush, a write that lands
 * garbage), and the reader's rule "the intact record with the highest events
 * wins" yields either the old or the new state, never a mix.
 *
 * Telling intact from damaged rests on the CRC32C, which covers the whole
 * slot (not only the bytes the format uses) with the CRC field taken as zero:
 * a torn slot mixes two writes and fails it, and CRC32C detects every error
 * burst up to 32 bits, so any single damaged byte is caught.  The magic only
 * classifies a slot as "ours" (counted corrupt when it then fails) or
 * "empty" (never written, or foreign data).
 *
 * Durability and order: sb_append_all flushes each member, writes its slot,
 * and flushes it again; it acknowledges only when all of that completed.
 * The leading flush orders every earlier write to the member before the
 * record, so a durable record never describes data a crash could still lose.
 *
 * Evolution of the format:
 *   - Bytes 0..63 (magic, CRC, version, record length, events, feature
 *     words) keep their place and meaning in every future version, so any
 *     build can tell a record of a newer format from a damaged one and knows
 *     how new it is.  Such a record is refused, and sb_read_newest refuses
 *     the member when it is newer than every record this build can read:
 *     falling back to an older record would resurrect a stale state.
 *   - Reserved bytes are written as zero and ignored on read.  A later
 *     version may put fields there behind a feature bit: compat (an older
 *     build may ignore the field and drops the bit when it writes, since
 *     it cannot carry the field), ro_compat (an older build may only read),
 *     incompat (an older build must refuse the record).
 *   - The record length tells how many bytes of the slot the writer's format
 *     defines; it only grows (2560 <= length <= SB_SLOT_SIZE in v1).
 *
 * Two intact records with the same events can only come from a writer
 * breaking the append rule (or a misdirected write).  Identical copies are
 * harmless; differing ones are ambiguous, so the first in slot order is kept
 * and the other is counted corrupt.
 *
 * Validation rules
 * ----------------
 * A member may be an NBD export on someone else's machine or an image file
 * someone handed over, and the CRC is one anyone can compute: every field of
 * a record is attacker-controlled.  So a record is used only when every
 * field obeys the rules below (sb_validate, applied by sb_decode); a record
 * that breaks one is treated exactly like a torn one: skipped, counted
 * corrupt, its reason kept for `nbdraid examine` ("slot 5: reshape_position
 * 9000 beyond array_size 8192").  The rules are what every writer of the
 * format guarantees (sb_append_all checks each record it writes and logs an
 * internal error when one breaks them), and together they bound every
 * offset, size and count that later code derives from a record, with no
 * arithmetic overflow:
 *
 *   V1  events, journal_epoch, journal_seq <= SB_COUNTER_MAX: counting on
 *       from them never wraps.
 *   V2  level, layout (one that exists for the level), chunk (a power of
 *       two 4K..64M), raid_disks (the level's minimum..32): raid_geom_init.
 *       nmembers <= 32.
 *   V3  component_size is a positive multiple of the chunk; the capacity
 *       (component_size / chunk rows of stripe width) is computed without
 *       overflow and array_size <= capacity.  member_size and every data
 *       area end <= SB_MEMBER_SIZE_MAX (INT64_MAX: off_t's and NBD's
 *       limit), so member offset + length never overflows.
 *   V4  The consistency area: cons_offset >= SB_RING_SIZE, 4096 <= cons_size
 *       <= SB_CONS_SIZE_MAX, both multiples of 4096, and it ends at or
 *       before every data offset of the member table (V8): the metadata
 *       area, ring and consistency area, never overlaps a data area.
 *       The maps of missed regions (missed_size not 0) likewise: 4096-
 *       aligned after the ring, a multiple of SB_MISSED_SLOTS pages, ending
 *       at or before every data offset; a slot is free or recording, and a
 *       recording one has rows_per_region > 0; missed_unreplayed names
 *       recording slots only.
 *   V5  consistency, reshape_state, reshape_direction and sync_action are
 *       known values; flags has only known bits.
 *   V6  Checkpoints: resync_offset is UINT64_MAX (in sync) or <= the
 *       capacity; a rebuilding member's recovery_offset <= component_size.
 *       sync_position is not bounded: a resumed scrub starts at
 *       min(position, its total) (sync_begin), so any value is safe, and a
 *       shrinking reshape may legitimately leave it beyond the new end.
 *   V7  A reshape (reshape_state not none): the target geometry obeys V2;
 *       reshape_position <= array_size; the target's rows are the rows that
 *       hold max(array_size, new_array_size) in the target geometry
 *       (sb_layout_rows), so nothing a record says reaches beyond them; and
 *       every member with a role moves its data the way the direction says
 *       (new_data_offset <= data_offset forward, >= backward).
 *   V8  The member table: every used entry (state not empty) has a known
 *       state (on disk, missing only with SB_FEAT_INCOMPAT_MISSING, which
 *       sb_encode sets) and a role in -1..31; in_sync and rebuilding entries have a
 *       role below raid_disks (or new_raid_devices during a reshape), and no
 *       two of them share a role (faulty entries may keep the role of the
 *       member that replaced them); only a spare has a replaces field other
 *       than 0, and that field is a role below raid_disks, plus 1; no two
 *       used entries share a uuid;
 *       data_offset and new_data_offset are multiples of 4096 at or after
 *       the end of the consistency area, and the data areas they start end
 *       at or before SB_MEMBER_SIZE_MAX — except a spare's: they are set
 *       when it takes a role (recovery, replace, reshape) and never read
 *       before, and writers before layout_data_offset recorded 0 there
 *       when role 0 had no member.
 *   V9  The record's own member (member_uuid) has a used entry, and when it
 *       holds a role of a layout (in_sync or rebuilding), member_size holds
 *       that layout's data area at its offset.
 * Entries at or beyond nmembers, empty entries and reserved bytes are never
 * read, so they are not checked.
 *
 * What one record cannot know is checked where it is known: at assembly,
 * sb_check_member_size holds each member's real size against the data
 * areas the array's newest record gives it (a member that shrank, or lies
 * about its size, is refused naming the field).  The write-hole journal
 * (journal.c) and the bitmap (bitmap.c) validate their own records against
 * the layouts these fields describe.
 *
 * Record layout, format version 1 (all integers little-endian; offsets are
 * bytes from the start of the slot; "reserved" bytes are written as 0)
 *
 *   offset  size  field
 *   ------  ----  ------------------------------------------------------
 *        0     8  magic "NBDRAID\x01"
 *        8     4  CRC32C of all SB_SLOT_SIZE bytes, these 4 taken as 0
 *       12     4  format version (1)
 *       16     4  record length (v1 writes 2560; readers accept 2560..4096)
 *       20     4  reserved
 *       24     8  events
 *       32     8  feature_compat (SB_FEAT_COMPAT_WHOLE_MAPS carries no
 *                 field: it says the writer keeps missed.h's invariant W,
 *                 and an older build drops it when it writes)
 *       40     8  feature_ro_compat
 *       48     8  feature_incompat
 *       56     8  reserved
 *      ---        (bytes 0..63 are the same in every format version)
 *       64    16  array uuid
 *       80    16  member uuid (the member this record is on)
 *       96     8  ctime_ns
 *      104     8  utime_ns
 *      112     4  level
 *      116     4  layout
 *      120     4  chunk (bytes)
 *      124     4  raid_disks
 *      128     8  component_size
 *      136     8  array_size
 *      144     8  member_size
 *      152     8  cons_offset
 *      160     8  cons_size
 *      168     4  consistency
 *      172     4  flags
 *      176     8  resync_offset
 *      184     4  reshape_state
 *      188     4  reshape_direction
 *      192     8  reshape_position
 *      200     4  new_level
 *      204     4  new_layout
 *      208     4  new_chunk
 *      212     4  new_raid_devices
 *      216     8  new_array_size
 *      224     4  nmembers (0..32)
 *      228     4  sync_action (enum sb_sync_action: interrupted check/repair)
 *      232     8  sync_position (array bytes of that action done)
 *      240     8  mismatch_count (4 KiB parity columns found wrong)
 *      248     8  journal_epoch (records of other epochs are ignored)
 *      256     8  journal_seq (records below it are checkpointed)
 *      264    64  owner host name (compat SB_FEAT_COMPAT_OWNER)
 *      328     4  owner pid (0: nobody holds the array open)
 *      332     4  reserved
 *      336     8  owner start time (realtime ns)
 *      344     8  missed_offset (ro_compat SB_FEAT_RO_COMPAT_MISSED)
 *      352     8  missed_size (0: no maps; the bit is set exactly when not 0)
 *      360   128  4 missed-region slots of 32 bytes, slot i at 360 + 32 i:
 *                 member uuid (16), state (4: 0 free, 1 recording),
 *                 rows per region (4), since: events of the record that
 *                 began it (8)
 *      488     4  missed_unreplayed: bit i set when slot i's member was
 *                 absent from a start that replayed the write-hole log
 *                 (compat SB_FEAT_COMPAT_UNREPLAYED, set exactly when not
 *                 0; reserved without it); only bits of recording slots
 *      492    20  reserved (array-wide fields of later versions)
 *      512  2048  member table: 32 entries of 64 bytes, entry i at 512 + 64 i;
 *                 entries >= nmembers are written as 0 and ignored
 *     2560  1536  member spec hints: 32 of 48 bytes, NUL-ended, entry i at
 *                 2560 + 48 i (compat SB_FEAT_COMPAT_SPEC_HINTS; record
 *                 length 4096); reserved without the bit
 *
 *   member table entry (64 bytes)
 *        0    16  member uuid
 *       16     4  role (int32, two's complement; -1 = spare)
 *       20     4  state (enum sb_member_state)
 *       24     8  data_offset
 *       32     8  new_data_offset
 *       40     8  recovery_offset
 *       48     4  errors
 *       52     4  replaces: role + 1 of the member a spare is being made
 *                 a copy of, else 0 (compat SB_FEAT_COMPAT_REPLACE, set
 *                 exactly when some entry holds one; reserved without it)
 *       56     8  reserved
 *   member state 5 (missing) appears only in records with the incompat bit
 *   SB_FEAT_INCOMPAT_MISSING, set exactly when some entry holds it: arrays
 *   without an absent member stay readable by builds that predate it.
 */

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "member.h"
#include "sb.h"

/* Offsets of the v1 layout (the table above). */
enum {
  OFF_MAGIC = 0, OFF_CRC = 8, OFF_VERSION = 12, OFF_LEN = 16,
  OFF_EVENTS = 24, OFF_COMPAT = 32, OFF_RO_COMPAT = 40, OFF_INCOMPAT = 48,
  OFF_ARRAY_UUID = 64, OFF_MEMBER_UUID = 80, OFF_CTIME = 96, OFF_UTIME = 104,
  OFF_LEVEL = 112, OFF_LAYOUT = 116, OFF_CHUNK = 120, OFF_RAID_DISKS = 124,
  OFF_COMPONENT_SIZE = 128, OFF_ARRAY_SIZE = 136, OFF_MEMBER_SIZE = 144,
  OFF_CONS_OFFSET = 152, OFF_CONS_SIZE = 160, OFF_CONSISTENCY = 168,
  OFF_FLAGS = 172, OFF_RESYNC = 176,
  OFF_RESHAPE_STATE = 184, OFF_RESHAPE_DIR = 188, OFF_RESHAPE_POS = 192,
  OFF_NEW_LEVEL = 200, OFF_NEW_LAYOUT = 204, OFF_NEW_CHUNK = 208,
  OFF_NEW_RAID_DEVICES = 212, OFF_NEW_ARRAY_SIZE = 216,
  OFF_NMEMBERS = 224, OFF_SYNC_ACTION = 228, OFF_SYNC_POS = 232,
  OFF_MISMATCH = 240, OFF_JOURNAL_EPOCH = 248, OFF_JOURNAL_SEQ = 256,
  OFF_OWNER_HOST = 264, OFF_OWNER_PID = 328, OFF_OWNER_START = 336,
  OFF_MISSED_OFFSET = 344, OFF_MISSED_SIZE = 352, OFF_MISSED = 360, MISSED_SIZE = 32,
  OFF_MISSED_UNREPLAYED = 488,
  OFF_TABLE = 512, ENTRY_SIZE = 64,
  V1_LEN = OFF_TABLE + SB_MAX_MEMBERS * ENTRY_SIZE,   /* 2560 */
  OFF_HINTS = V1_LEN, HINT_SIZE = SB_SPEC_HINT,
  V1_EXT_LEN = OFF_HINTS + SB_MAX_MEMBERS * HINT_SIZE, /* 4096 */

  /* within a member table entry */
  E_UUID = 0, E_ROLE = 16, E_STATE = 20, E_DATA_OFFSET = 24,
  E_NEW_DATA_OFFSET = 32, E_RECOVERY_OFFSET = 40, E_ERRORS = 48, E_REPLACES = 52,
};

_Static_assert (V1_LEN == 2560, "v1 record length is part of the format");
_Static_assert (V1_EXT_LEN <= SB_SLOT_SIZE, "record must fit a slot");
_Static_assert (sizeof SB_MAGIC - 1 == 8, "magic is 8 bytes");

/* Little-endian field access. */
static void
put_le32 (uint8_t *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t) (v >> (8 * i));
}

static void
put_le64 (uint8_t *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t) (v >> (8 * i));
}

static uint32_t
get_le32 (const uint8_t *p)
{
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

static uint64_t
get_le64 (const uint8_t *p)
{
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

/* CRC of a slot with its CRC field taken as zero.  raid_crc32c is one-shot,
 * so it runs over a copy with the field cleared (4 KiB of stack). */
static uint32_t
slot_crc (const uint8_t *p)
{
  uint8_t copy[SB_SLOT_SIZE];

  memcpy (copy, p, SB_SLOT_SIZE);
  put_le32 (copy + OFF_CRC, 0);
  return raid_crc32c (copy, SB_SLOT_SIZE);
}

static void
encode_entry (uint8_t *p, const struct sb_member_entry *e)
{
  memcpy (p + E_UUID, e->uuid, RAID_UUID_LEN);
  put_le32 (p + E_ROLE, (uint32_t) e->role);
  put_le32 (p + E_STATE, e->state);
  put_le64 (p + E_DATA_OFFSET, e->data_offset);
  put_le64 (p + E_NEW_DATA_OFFSET, e->new_data_offset);
  put_le64 (p + E_RECOVERY_OFFSET, e->recovery_offset);
  put_le32 (p + E_ERRORS, e->errors);
  put_le32 (p + E_REPLACES, e->replaces);
}

void
sb_encode (const struct raid_sb *sb, void *buf)
{
  uint8_t *p = buf;

  uint64_t incompat = sb->feature_incompat & ~(uint64_t) SB_FEAT_INCOMPAT_MISSING;
  uint64_t compat = (sb->feature_compat & SB_FEAT_COMPAT_KNOWN &
                     ~(uint64_t) (SB_FEAT_COMPAT_REPLACE | SB_FEAT_COMPAT_UNREPLAYED)) |
    SB_FEAT_COMPAT_SPEC_HINTS | SB_FEAT_COMPAT_OWNER | SB_FEAT_COMPAT_WHOLE_MAPS |
    (sb->missed_size && sb->missed_unreplayed ? SB_FEAT_COMPAT_UNREPLAYED : 0);

  assert (sb->nmembers <= SB_MAX_MEMBERS);
  for (uint32_t i = 0; i < sb->nmembers; i++) {
    if (sb->members[i].state == SB_MEMBER_MISSING)
      incompat |= SB_FEAT_INCOMPAT_MISSING;
    if (sb->members[i].replaces)
      compat |= SB_FEAT_COMPAT_REPLACE;
  }
  memset (p, 0, SB_SLOT_SIZE);
  memcpy (p + OFF_MAGIC, SB_MAGIC, 8);
  put_le32 (p + OFF_VERSION, SB_VERSION);
  put_le32 (p + OFF_LEN, V1_EXT_LEN);
  put_le64 (p + OFF_EVENTS, sb->events);
  put_le64 (p + OFF_COMPAT, compat);
  put_le64 (p + OFF_RO_COMPAT, (sb->feature_ro_compat & ~(uint64_t) SB_FEAT_RO_COMPAT_MISSED) |
            (sb->missed_size ? SB_FEAT_RO_COMPAT_MISSED : 0));
  put_le64 (p + OFF_INCOMPAT, incompat);

  memcpy (p + OFF_ARRAY_UUID, sb->array_uuid, RAID_UUID_LEN);
  memcpy (p + OFF_MEMBER_UUID, sb->member_uuid, RAID_UUID_LEN);
  put_le64 (p + OFF_CTIME, sb->ctime_ns);
  put_le64 (p + OFF_UTIME, sb->utime_ns);

  put_le32 (p + OFF_LEVEL, sb->level);
  put_le32 (p + OFF_LAYOUT, sb->layout);
  put_le32 (p + OFF_CHUNK, sb->chunk);
  put_le32 (p + OFF_RAID_DISKS, sb->raid_disks);
  put_le64 (p + OFF_COMPONENT_SIZE, sb->component_size);
  put_le64 (p + OFF_ARRAY_SIZE, sb->array_size);
  put_le64 (p + OFF_MEMBER_SIZE, sb->member_size);
  put_le64 (p + OFF_CONS_OFFSET, sb->cons_offset);
  put_le64 (p + OFF_CONS_SIZE, sb->cons_size);
  put_le32 (p + OFF_CONSISTENCY, sb->consistency);
  put_le32 (p + OFF_FLAGS, sb->flags);
  put_le64 (p + OFF_RESYNC, sb->resync_offset);

  put_le32 (p + OFF_RESHAPE_STATE, sb->reshape_state);
  put_le32 (p + OFF_RESHAPE_DIR, sb->reshape_direction);
  put_le64 (p + OFF_RESHAPE_POS, sb->reshape_position);
  put_le32 (p + OFF_NEW_LEVEL, sb->new_level);
  put_le32 (p + OFF_NEW_LAYOUT, sb->new_layout);
  put_le32 (p + OFF_NEW_CHUNK, sb->new_chunk);
  put_le32 (p + OFF_NEW_RAID_DEVICES, sb->new_raid_devices);
  put_le64 (p + OFF_NEW_ARRAY_SIZE, sb->new_array_size);

  put_le32 (p + OFF_NMEMBERS, sb->nmembers);
  put_le32 (p + OFF_SYNC_ACTION, sb->sync_action);
  put_le64 (p + OFF_SYNC_POS, sb->sync_position);
  put_le64 (p + OFF_MISMATCH, sb->mismatch_count);
  put_le64 (p + OFF_JOURNAL_EPOCH, sb->journal_epoch);
  put_le64 (p + OFF_JOURNAL_SEQ, sb->journal_seq);
  memcpy (p + OFF_OWNER_HOST, sb->owner_host, strnlen (sb->owner_host, SB_OWNER_HOST - 1));
  put_le32 (p + OFF_OWNER_PID, sb->owner_pid);
  put_le64 (p + OFF_OWNER_START, sb->owner_start_ns);
  if (sb->missed_size) {
    put_le64 (p + OFF_MISSED_OFFSET, sb->missed_offset);
    put_le64 (p + OFF_MISSED_SIZE, sb->missed_size);
    for (int i = 0; i < SB_MISSED_SLOTS; i++) {
      uint8_t *q = p + OFF_MISSED + i * MISSED_SIZE;
      memcpy (q, sb->missed[i].uuid, RAID_UUID_LEN);
      put_le32 (q + 16, sb->missed[i].state);
      put_le32 (q + 20, sb->missed[i].rows_per_region);
      put_le64 (q + 24, sb->missed[i].since);
    }
    put_le32 (p + OFF_MISSED_UNREPLAYED, sb->missed_unreplayed);
  }
  for (uint32_t i = 0; i < sb->nmembers; i++) {
    encode_entry (p + OFF_TABLE + i * ENTRY_SIZE, &sb->members[i]);
    memcpy (p + OFF_HINTS + i * HINT_SIZE, sb->members[i].spec_hint,
            strnlen (sb->members[i].spec_hint, HINT_SIZE - 1));
  }

  put_le32 (p + OFF_CRC, slot_crc (p));
}

/* ---- decoding ---- */

static void __attribute__ ((format (printf, 3, 4)))
set_err (char *err, size_t errlen, const char *fmt, ...)
{
  va_list ap;

  if (err == NULL || errlen == 0)
    return;
  va_start (ap, fmt);
  vsnprintf (err, errlen, fmt, ap);
  va_end (ap);
}

/* "0x10, 0x400" for the set bits of v. */
static void
fmt_bits (uint64_t v, char *out, size_t len)
{
  size_t used = 0;

  out[0] = '\0';
  for (int b = 0; b < 64 && used < len; b++)
    if (v & (UINT64_C(1) << b)) {
      int n = snprintf (out + used, len - used, "%s0x%" PRIx64,
                        used ? ", " : "", UINT64_C(1) << b);
      if (n < 0)
        break;
      used += (size_t) n;
    }
}

/* How a slot classifies. */
enum slot_kind {
  SLOT_EMPTY,      /* not our magic */
  SLOT_CORRUPT,    /* our magic, fails a check */
  SLOT_NEWER,      /* intact, but from a format this build cannot use */
  SLOT_VALID,
};

static void
decode_entry (const uint8_t *p, uint64_t compat, struct sb_member_entry *e)
{
  memcpy (e->uuid, p + E_UUID, RAID_UUID_LEN);
  e->role = (int32_t) get_le32 (p + E_ROLE);
  e->state = get_le32 (p + E_STATE);
  e->data_offset = get_le64 (p + E_DATA_OFFSET);
  e->new_data_offset = get_le64 (p + E_NEW_DATA_OFFSET);
  e->recovery_offset = get_le64 (p + E_RECOVERY_OFFSET);
  e->errors = get_le32 (p + E_ERRORS);
  e->replaces = compat & SB_FEAT_COMPAT_REPLACE ? get_le32 (p + E_REPLACES) : 0;
}

/* A NUL-ended string of at most size - 1 bytes from p. */
static void
get_str (const uint8_t *p, size_t size, char *out)
{
  memcpy (out, p, size - 1);
  out[size - 1] = '\0';
}

/* The v1 body: everything after the frozen prefix (len: the record length). */
static void
decode_body (const uint8_t *p, uint32_t len, struct raid_sb *sb)
{
  memcpy (sb->array_uuid, p + OFF_ARRAY_UUID, RAID_UUID_LEN);
  memcpy (sb->member_uuid, p + OFF_MEMBER_UUID, RAID_UUID_LEN);
  sb->ctime_ns = get_le64 (p + OFF_CTIME);
  sb->utime_ns = get_le64 (p + OFF_UTIME);

  sb->level = get_le32 (p + OFF_LEVEL);
  sb->layout = get_le32 (p + OFF_LAYOUT);
  sb->chunk = get_le32 (p + OFF_CHUNK);
  sb->raid_disks = get_le32 (p + OFF_RAID_DISKS);
  sb->component_size = get_le64 (p + OFF_COMPONENT_SIZE);
  sb->array_size = get_le64 (p + OFF_ARRAY_SIZE);
  sb->member_size = get_le64 (p + OFF_MEMBER_SIZE);
  sb->cons_offset = get_le64 (p + OFF_CONS_OFFSET);
  sb->cons_size = get_le64 (p + OFF_CONS_SIZE);
  sb->consistency = get_le32 (p + OFF_CONSISTENCY);
  sb->flags = get_le32 (p + OFF_FLAGS);
  sb->resync_offset = get_le64 (p + OFF_RESYNC);

  sb->reshape_state = get_le32 (p + OFF_RESHAPE_STATE);
  sb->reshape_direction = get_le32 (p + OFF_RESHAPE_DIR);
  sb->reshape_position = get_le64 (p + OFF_RESHAPE_POS);
  sb->new_level = get_le32 (p + OFF_NEW_LEVEL);
  sb->new_layout = get_le32 (p + OFF_NEW_LAYOUT);
  sb->new_chunk = get_le32 (p + OFF_NEW_CHUNK);
  sb->new_raid_devices = get_le32 (p + OFF_NEW_RAID_DEVICES);
  sb->new_array_size = get_le64 (p + OFF_NEW_ARRAY_SIZE);

  sb->nmembers = get_le32 (p + OFF_NMEMBERS);
  sb->sync_action = get_le32 (p + OFF_SYNC_ACTION);
  sb->sync_position = get_le64 (p + OFF_SYNC_POS);
  sb->mismatch_count = get_le64 (p + OFF_MISMATCH);
  sb->journal_epoch = get_le64 (p + OFF_JOURNAL_EPOCH);
  sb->journal_seq = get_le64 (p + OFF_JOURNAL_SEQ);
  for (uint32_t i = 0; i < sb->nmembers && i < SB_MAX_MEMBERS; i++)
    decode_entry (p + OFF_TABLE + i * ENTRY_SIZE, sb->feature_compat, &sb->members[i]);
  if (sb->feature_compat & SB_FEAT_COMPAT_OWNER) {
    get_str (p + OFF_OWNER_HOST, SB_OWNER_HOST, sb->owner_host);
    sb->owner_pid = get_le32 (p + OFF_OWNER_PID);
    sb->owner_start_ns = get_le64 (p + OFF_OWNER_START);
  }
  if (sb->feature_ro_compat & SB_FEAT_RO_COMPAT_MISSED) {
    sb->missed_offset = get_le64 (p + OFF_MISSED_OFFSET);
    sb->missed_size = get_le64 (p + OFF_MISSED_SIZE);
    for (int i = 0; i < SB_MISSED_SLOTS; i++) {
      const uint8_t *q = p + OFF_MISSED + i * MISSED_SIZE;
      memcpy (sb->missed[i].uuid, q, RAID_UUID_LEN);
      sb->missed[i].state = get_le32 (q + 16);
      sb->missed[i].rows_per_region = get_le32 (q + 20);
      sb->missed[i].since = get_le64 (q + 24);
    }
    if (sb->feature_compat & SB_FEAT_COMPAT_UNREPLAYED)
      sb->missed_unreplayed = get_le32 (p + OFF_MISSED_UNREPLAYED);
  }
  if ((sb->feature_compat & SB_FEAT_COMPAT_SPEC_HINTS) && len >= V1_EXT_LEN)
    for (uint32_t i = 0; i < sb->nmembers && i < SB_MAX_MEMBERS; i++)
      get_str (p + OFF_HINTS + i * HINT_SIZE, HINT_SIZE, sb->members[i].spec_hint);
}

/* ---- validation (the rules V1..V9 at the top) ---- */

#define SB_FLAGS_KNOWN (SB_FLAG_DIRTY | SB_FLAG_RESYNC_ALL)

/* The geometry of the current layout (next false) or of the target. */
static int
record_geom (const struct raid_sb *sb, bool next, struct raid_geom *g,
             char *err, size_t errlen)
{
  return next
    ? raid_geom_init (g, (int) sb->new_level, (int) sb->new_layout, sb->new_chunk,
                      (int) sb->new_raid_devices, err, errlen)
    : raid_geom_init (g, (int) sb->level, (int) sb->layout, sb->chunk,
                      (int) sb->raid_disks, err, errlen);
}

uint64_t
sb_layout_rows (const struct raid_sb *sb, bool next)
{
  struct raid_geom g;
  uint64_t bytes;

  if (record_geom (sb, next, &g, NULL, 0) < 0)
    return 0;
  if (!next)
    return sb->component_size / g.chunk;
  bytes = raid_max_u64 (sb->array_size, sb->new_array_size);
  return bytes / g.stripe_width + (bytes % g.stripe_width != 0);
}

/* Bytes of each member's data area in a layout: rows * chunk, or false when
 * that is beyond SB_MEMBER_SIZE_MAX. */
static bool
area_bytes (const struct raid_sb *sb, bool next, uint64_t *bytes)
{
  uint64_t rows = sb_layout_rows (sb, next);
  uint32_t chunk = next ? sb->new_chunk : sb->chunk;

  return !__builtin_mul_overflow (rows, (uint64_t) chunk, bytes) &&
    *bytes <= SB_MEMBER_SIZE_MAX;
}

/* An area [off, off + len) that ends at or before SB_MEMBER_SIZE_MAX. */
static bool
area_fits (uint64_t off, uint64_t len, uint64_t limit)
{
  return off <= limit && len <= limit - off;
}

/* Whether entry e holds a role of a layout (its data is used there). */
static bool
entry_active (const struct sb_member_entry *e)
{
  return e->role >= 0 &&
    (e->state == SB_MEMBER_IN_SYNC || e->state == SB_MEMBER_REBUILDING);
}

/* V1..V7: the array-wide fields. */
static bool
array_ok (const struct raid_sb *sb, char *err, size_t errlen)
{
  struct raid_geom g, g1;
  uint64_t rows, cap, area;
  char why[128];

  if (sb->events > SB_COUNTER_MAX || sb->journal_epoch > SB_COUNTER_MAX ||
      sb->journal_seq > SB_COUNTER_MAX) {
    set_err (err, errlen, "events %" PRIu64 " / journal_epoch %" PRIu64
             " / journal_seq %" PRIu64 " beyond %" PRIu64, sb->events,
             sb->journal_epoch, sb->journal_seq, SB_COUNTER_MAX);
    return false;
  }
  if (record_geom (sb, false, &g, why, sizeof why) < 0) {
    set_err (err, errlen, "geometry: %s", why);
    return false;
  }
  rows = sb->component_size / g.chunk;
  if (sb->component_size == 0 || sb->component_size % g.chunk != 0 ||
      !area_bytes (sb, false, &area)) {
    set_err (err, errlen, "component_size %" PRIu64 " is not a positive multiple "
             "of the chunk %" PRIu32 " below 2^63", sb->component_size, g.chunk);
    return false;
  }
  if (__builtin_mul_overflow (rows, g.stripe_width, &cap) || sb->array_size > cap) {
    set_err (err, errlen, "array_size %" PRIu64 " exceeds what component_size %"
             PRIu64 " holds in this geometry", sb->array_size, sb->component_size);
    return false;
  }
  if (sb->member_size > SB_MEMBER_SIZE_MAX) {
    set_err (err, errlen, "member_size %" PRIu64 " beyond 2^63", sb->member_size);
    return false;
  }
  if (sb->cons_offset < SB_RING_SIZE || sb->cons_offset % SB_ALIGN ||
      sb->cons_size < SB_ALIGN || sb->cons_size > SB_CONS_SIZE_MAX ||
      sb->cons_size % SB_ALIGN || sb->cons_offset > SB_MEMBER_SIZE_MAX) {
    set_err (err, errlen, "consistency area at %" PRIu64 " of %" PRIu64 " bytes: "
             "not 4K-aligned after the ring, or larger than %u", sb->cons_offset,
             sb->cons_size, SB_CONS_SIZE_MAX);
    return false;
  }
  if (sb->consistency < SB_CONS_JOURNAL || sb->consistency > SB_CONS_RESYNC ||
      (sb->flags & ~SB_FLAGS_KNOWN) || sb->sync_action > SB_SYNC_REPAIR ||
      sb->reshape_state > SB_RESHAPE_RUNNING || sb->reshape_direction > SB_DIR_BACKWARD) {
    set_err (err, errlen, "unknown value: consistency %" PRIu32 ", flags 0x%" PRIx32
             ", sync_action %" PRIu32 ", reshape_state %" PRIu32 ", reshape_direction %"
             PRIu32, sb->consistency, sb->flags, sb->sync_action, sb->reshape_state,
             sb->reshape_direction);
    return false;
  }
  if (sb->missed_size &&
      (sb->missed_size % (SB_MISSED_SLOTS * 4096u) != 0 || sb->missed_offset % 4096u != 0 ||
       sb->missed_offset < SB_RING_SIZE || sb->missed_offset > SB_MEMBER_SIZE_MAX ||
       sb->missed_size > SB_MEMBER_SIZE_MAX - sb->missed_offset)) {
    set_err (err, errlen, "bad missed-region area %" PRIu64 "+%" PRIu64,
             sb->missed_offset, sb->missed_size);
    return false;
  }
  for (int i = 0; i < SB_MISSED_SLOTS; i++)
    if (sb->missed[i].state > SB_MISSED_RECORDING ||
        (sb->missed[i].state == SB_MISSED_RECORDING &&
         (sb->missed[i].rows_per_region == 0 || !sb->missed_size))) {
      set_err (err, errlen, "bad missed-region slot %d", i);
      return false;
    }
  for (int i = 0; i < 32; i++)
    if ((sb->missed_unreplayed & (1u << i)) &&
        (i >= SB_MISSED_SLOTS || sb->missed[i].state != SB_MISSED_RECORDING)) {
      set_err (err, errlen, "missed_unreplayed 0x%" PRIx32 " names slot %d, which is "
               "not recording", sb->missed_unreplayed, i);
      return false;
    }
  if (sb->resync_offset != UINT64_MAX && sb->resync_offset > cap) {
    set_err (err, errlen, "resync_offset %" PRIu64 " beyond the capacity %" PRIu64,
             sb->resync_offset, cap);
    return false;
  }
  if (sb->reshape_state == SB_RESHAPE_NONE)
    return true;
  if (record_geom (sb, true, &g1, why, sizeof why) < 0) {
    set_err (err, errlen, "reshape target geometry: %s", why);
    return false;
  }
  if (sb->reshape_position > sb->array_size) {
    set_err (err, errlen, "reshape_position %" PRIu64 " beyond array_size %" PRIu64,
             sb->reshape_position, sb->array_size);
    return false;
  }
  if (!area_bytes (sb, true, &area)) {
    set_err (err, errlen, "new_array_size %" PRIu64 " needs a target data area "
             "beyond 2^63", sb->new_array_size);
    return false;
  }
  return true;
}

/* V8: one used entry i (the array-wide fields are valid). */
static bool
entry_ok (const struct raid_sb *sb, uint32_t i, char *err, size_t errlen)
{
  const struct sb_member_entry *e = &sb->members[i];
  bool reshaping = sb->reshape_state != SB_RESHAPE_NONE;
  uint64_t meta_end = raid_max_u64 (sb->cons_offset + sb->cons_size,
                                   sb->missed_offset + sb->missed_size);
  uint64_t area, area1 = 0;
  uint32_t nroles = reshaping ? raid_max_u64 (sb->raid_disks, sb->new_raid_devices)
    : sb->raid_disks;

  area_bytes (sb, false, &area);
  if (reshaping)
    area_bytes (sb, true, &area1);
  if (e->state > SB_MEMBER_MISSING) {
    set_err (err, errlen, "member %" PRIu32 ": bad state %" PRIu32, i, e->state);
    return false;
  }
  if (e->role < -1 || e->role >= (int32_t) SB_MAX_MEMBERS ||
      (entry_active (e) && (uint32_t) e->role >= nroles)) {
    set_err (err, errlen, "member %" PRIu32 ": bad role %" PRId32 " for state %s",
             i, e->role, sb_member_state_name (e->state));
    return false;
  }
  if (e->state != SB_MEMBER_SPARE &&
      (e->data_offset % SB_ALIGN || e->data_offset < meta_end ||
       !area_fits (e->data_offset, area, SB_MEMBER_SIZE_MAX) ||
       e->new_data_offset % SB_ALIGN || e->new_data_offset < meta_end ||
       !area_fits (e->new_data_offset, area1, SB_MEMBER_SIZE_MAX))) {
    set_err (err, errlen, "member %" PRIu32 ": data_offset %" PRIu64 " / "
             "new_data_offset %" PRIu64 " not 4K-aligned after the consistency "
             "area (%" PRIu64 "), or its data area ends beyond 2^63", i,
             e->data_offset, e->new_data_offset, meta_end);
    return false;
  }
  if (reshaping && e->role >= 0 && (uint32_t) e->role < sb->raid_disks &&
      (sb->reshape_direction == SB_DIR_FORWARD
       ? e->new_data_offset > e->data_offset : e->new_data_offset < e->data_offset)) {
    set_err (err, errlen, "member %" PRIu32 ": new_data_offset %" PRIu64 " moves "
             "against the reshape direction (data_offset %" PRIu64 ")", i,
             e->new_data_offset, e->data_offset);
    return false;
  }
  if (e->replaces && (e->state != SB_MEMBER_SPARE || e->replaces > sb->raid_disks)) {
    set_err (err, errlen, "member %" PRIu32 ": replaces %" PRIu32 " (a role + 1) in a "
             "%s entry, with %" PRIu32 " roles", i, e->replaces,
             sb_member_state_name (e->state), sb->raid_disks);
    return false;
  }
  if (e->state == SB_MEMBER_REBUILDING && e->recovery_offset > sb->component_size) {
    set_err (err, errlen, "member %" PRIu32 ": recovery_offset %" PRIu64
             " beyond component_size %" PRIu64, i, e->recovery_offset,
             sb->component_size);
    return false;
  }
  for (uint32_t j = 0; j < i; j++) {
    const struct sb_member_entry *o = &sb->members[j];
    if (o->state == SB_MEMBER_EMPTY)
      continue;
    if (memcmp (o->uuid, e->uuid, RAID_UUID_LEN) == 0) {
      set_err (err, errlen, "members %" PRIu32 " and %" PRIu32 " have the same uuid",
               j, i);
      return false;
    }
    if (entry_active (e) && entry_active (o) && o->role == e->role) {
      set_err (err, errlen, "members %" PRIu32 " and %" PRIu32 " both hold role %"
               PRId32, j, i, e->role);
      return false;
    }
  }
  return true;
}

int
sb_check_member_size (const struct raid_sb *sb, const struct sb_member_entry *e,
                      uint64_t size, char *err, size_t errlen)
{
  uint64_t area, area1;

  if (!entry_active (e) && !(e->role >= 0 && e->state == SB_MEMBER_MISSING))
    return 0;                          /* a role, in use or to be taken back */
  if ((uint32_t) e->role < sb->raid_disks && area_bytes (sb, false, &area) &&
      !area_fits (e->data_offset, area, size)) {
    set_err (err, errlen, "%" PRIu64 " bytes hold no data area at data_offset %"
             PRIu64 " of component_size %" PRIu64, size, e->data_offset, area);
    return -1;
  }
  if (sb->reshape_state != SB_RESHAPE_NONE && (uint32_t) e->role < sb->new_raid_devices &&
      area_bytes (sb, true, &area1) && !area_fits (e->new_data_offset, area1, size)) {
    set_err (err, errlen, "%" PRIu64 " bytes hold no reshape target data area at "
             "new_data_offset %" PRIu64 " of %" PRIu64 " bytes (new_array_size %"
             PRIu64 ")", size, e->new_data_offset, area1, sb->new_array_size);
    return -1;
  }
  return 0;
}

int
sb_validate (const struct raid_sb *sb, char *err, size_t errlen)
{
  const struct sb_member_entry *self = NULL;
  char why[192];

  if (sb->nmembers > SB_MAX_MEMBERS) {
    set_err (err, errlen, "bad member count %" PRIu32, sb->nmembers);
    return -1;
  }
  if (sb->raid_disks > SB_MAX_MEMBERS || sb->new_raid_devices > SB_MAX_MEMBERS) {
    set_err (err, errlen, "bad raid_disks %" PRIu32 " / new_raid_devices %" PRIu32,
             sb->raid_disks, sb->new_raid_devices);
    return -1;
  }
  if (!array_ok (sb, err, errlen))
    return -1;
  for (uint32_t i = 0; i < sb->nmembers; i++) {
    const struct sb_member_entry *e = &sb->members[i];
    if (e->state == SB_MEMBER_EMPTY)
      continue;
    if (!entry_ok (sb, i, err, errlen))
      return -1;
    if (memcmp (e->uuid, sb->member_uuid, RAID_UUID_LEN) == 0)
      self = e;
  }
  if (self == NULL) {
    set_err (err, errlen, "member_uuid is not in the member table");
    return -1;
  }
  if (sb_check_member_size (sb, self, sb->member_size, why, sizeof why) < 0) {
    set_err (err, errlen, "member_size: %s", why);
    return -1;
  }
  return 0;
}

/* Classify and decode one slot.  sb->events and the feature words are set
 * for SLOT_NEWER and SLOT_VALID; the whole record only for SLOT_VALID. */
static enum slot_kind
check_slot (const uint8_t *p, struct raid_sb *sb, char *err, size_t errlen)
{
  uint32_t stored, crc, len;
  uint64_t unknown;
  char bits[96];

  memset (sb, 0, sizeof *sb);
  if (memcmp (p + OFF_MAGIC, SB_MAGIC, 8) != 0) {
    set_err (err, errlen, "no superblock");
    return SLOT_EMPTY;
  }
  stored = get_le32 (p + OFF_CRC);
  crc = slot_crc (p);
  if (stored != crc) {
    set_err (err, errlen, "checksum mismatch (stored 0x%08" PRIx32
             ", computed 0x%08" PRIx32 ")", stored, crc);
    return SLOT_CORRUPT;
  }

  /* The frozen prefix: meaningful whatever the version. */
  sb->version = get_le32 (p + OFF_VERSION);
  sb->events = get_le64 (p + OFF_EVENTS);
  sb->feature_compat = get_le64 (p + OFF_COMPAT);
  sb->feature_ro_compat = get_le64 (p + OFF_RO_COMPAT);
  sb->feature_incompat = get_le64 (p + OFF_INCOMPAT);
  len = get_le32 (p + OFF_LEN);

  if (sb->version != SB_VERSION) {
    set_err (err, errlen, "unsupported format version %" PRIu32, sb->version);
    return sb->version > SB_VERSION ? SLOT_NEWER : SLOT_CORRUPT;
  }
  if (len < V1_LEN || len > SB_SLOT_SIZE) {
    set_err (err, errlen, "bad record length %" PRIu32, len);
    return SLOT_CORRUPT;
  }
  unknown = sb->feature_incompat & ~(uint64_t) SB_FEAT_INCOMPAT_KNOWN;
  if (unknown) {
    fmt_bits (unknown, bits, sizeof bits);
    set_err (err, errlen, "incompatible feature %s (needs a newer nbdkit-raid)",
             bits);
    return SLOT_NEWER;
  }

  decode_body (p, len, sb);
  if (sb_validate (sb, err, errlen) < 0)
    return SLOT_CORRUPT;
  for (uint32_t i = 0; i < sb->nmembers; i++)
    if (sb->members[i].state == SB_MEMBER_MISSING &&
        !(sb->feature_incompat & SB_FEAT_INCOMPAT_MISSING)) {
      set_err (err, errlen, "member %" PRIu32 ": state missing without its feature bit", i);
      return SLOT_CORRUPT;            /* V8: sb_encode sets the bit */
    }
  return SLOT_VALID;
}

/* err: "" or the note about unknown ro_compat bits. */
static void
note_ro_compat (const struct raid_sb *sb, char *err, size_t errlen)
{
  uint64_t unknown = sb_ro_compat_unknown (sb);
  char bits[96];

  if (unknown == 0) {
    set_err (err, errlen, "%s", "");
    return;
  }
  fmt_bits (unknown, bits, sizeof bits);
  set_err (err, errlen, "read-only compatible feature %s unknown: read-only "
           "use only (writing needs a newer nbdkit-raid)", bits);
}

int
sb_decode (const void *buf, struct raid_sb *sb, char *err, size_t errlen)
{
  if (check_slot (buf, sb, err, errlen) != SLOT_VALID)
    return -1;
  note_ro_compat (sb, err, errlen);
  return 0;
}

/* ---- the ring ---- */

/* Classify every slot of the ring image buf into ring (which is reset).
 * tmp has room for SB_RING_SLOTS records.  newer_why receives the reason for
 * the newest SLOT_NEWER record (unchanged when there is none). */
static void
ring_scan (const uint8_t *buf, struct raid_sb *tmp, struct sb_ring *ring,
           char *newer_why, size_t newer_len)
{
  unsigned slot_of[SB_RING_SLOTS];
  int order[SB_RING_SLOTS];
  int nv = 0;

  memset (ring, 0, sizeof *ring);
  for (unsigned s = 0; s < SB_RING_SLOTS; s++) {
    const uint8_t *p = buf + (size_t) s * SB_SLOT_SIZE;
    char why[200];
    enum slot_kind kind = check_slot (p, &tmp[nv], why, sizeof why);

    if (kind == SLOT_VALID) {
      /* Same events as an earlier slot: keep identical copies, reject a
       * differing one (the first in slot order wins). */
      for (int j = 0; j < nv; j++)
        if (tmp[j].events == tmp[nv].events &&
            memcmp (buf + (size_t) slot_of[j] * SB_SLOT_SIZE, p,
                    SB_SLOT_SIZE) != 0) {
          snprintf (why, sizeof why,
                    "events %" PRIu64 " also in slot %u with other content",
                    tmp[nv].events, slot_of[j]);
          kind = SLOT_CORRUPT;
          break;
        }
    }
    switch (kind) {
    case SLOT_VALID:
      slot_of[nv++] = s;
      break;
    case SLOT_EMPTY:
      ring->nempty++;
      break;
    case SLOT_NEWER:
      if (ring->nincompat == 0 || tmp[nv].events > ring->incompat_events) {
        ring->incompat_events = tmp[nv].events;
        set_err (newer_why, newer_len, "%s", why);
      }
      ring->nincompat++;       /* a refused record also counts as corrupt */
      /* fall through */
    case SLOT_CORRUPT:
      if (ring->ncorrupt++ == 0)
        snprintf (ring->first_error, sizeof ring->first_error,
                  "slot %u: %s", s, why);
      break;
    }
  }
  if (ring->ncorrupt == 0 && nv == 0)
    snprintf (ring->first_error, sizeof ring->first_error, "no superblock");

  /* Newest first; insertion sort keeps slot order among equal events. */
  for (int i = 0; i < nv; i++) {
    int j = i;
    while (j > 0 && tmp[order[j - 1]].events < tmp[i].events) {
      order[j] = order[j - 1];
      j--;
    }
    order[j] = i;
  }
  for (int i = 0; i < nv; i++)
    ring->rec[i] = tmp[order[i]];
  ring->nvalid = nv;
}

/* sb_ring_read, also reporting why the newest refused record was refused. */
static int
ring_read (struct member *m, struct sb_ring *ring,
           char *newer_why, size_t newer_len)
{
  uint8_t *buf = raid_alloc_aligned (SB_RING_SIZE);
  struct raid_sb *tmp = malloc (SB_RING_SLOTS * sizeof *tmp);
  int r = ENOMEM;

  if (buf && tmp) {
    r = member_pread (m, buf, SB_RING_SIZE, 0);
    if (r == 0)
      ring_scan (buf, tmp, ring, newer_why, newer_len);
  }
  free (tmp);
  free (buf);
  return r;
}

int
sb_ring_read (struct member *m, struct sb_ring *ring)
{
  return ring_read (m, ring, NULL, 0);
}

int
sb_read_newest (struct member *m, struct raid_sb *sb, char *err, size_t errlen)
{
  struct sb_ring *ring = malloc (sizeof *ring);
  char newer_why[128] = "";
  int r;

  if (ring == NULL) {
    set_err (err, errlen, "out of memory");
    return ENOMEM;
  }
  r = ring_read (m, ring, newer_why, sizeof newer_why);
  if (r != 0)
    set_err (err, errlen, "cannot read the superblock journal: %s",
             raid_strerror (r));
  else if (ring->nincompat > 0 &&
           (ring->nvalid == 0 || ring->incompat_events > ring->rec[0].events)) {
    set_err (err, errlen, "%s", newer_why);
    r = EPROTONOSUPPORT;
  }
  else if (ring->nvalid == 0) {
    if (ring->ncorrupt == 0)
      set_err (err, errlen, "no superblock");
    else
      set_err (err, errlen, "no valid superblock record (%d corrupt, %d empty; "
               "first: %s)", ring->ncorrupt, ring->nempty, ring->first_error);
    r = ENOENT;
  }
  else {
    *sb = ring->rec[0];
    note_ro_compat (sb, err, errlen);
  }
  free (ring);
  return r;
}

/* ---- appending ---- */

/* Run one phase of an append: op (MIO_FLUSH, or MIO_WRITE of member i's
 * encoded record iov[i] to the slot its events select) on every member i
 * whose err[i] is still 0, all in one parallel batch; store the results in
 * err.  A member that failed an earlier phase takes no further part. */
static void
append_phase (enum mio_op op, struct member *const *ms,
              const struct raid_sb *sbs, struct iovec *iov, size_t n,
              int *err, struct mio *ios, size_t *who)
{
  size_t k = 0;

  for (size_t i = 0; i < n; i++) {
    if (err[i] != 0)
      continue;
    if (op == MIO_FLUSH)
      ios[k] = (struct mio) { .m = ms[i], .op = MIO_FLUSH };
    else
      ios[k] = (struct mio) {
        .m = ms[i], .op = MIO_WRITE,
        .off = (sbs[i].events % SB_RING_SLOTS) * (uint64_t) SB_SLOT_SIZE,
        .len = SB_SLOT_SIZE, .iov = &iov[i], .iovcnt = 1,
      };
    who[k++] = i;
  }
  if (k > 0)
    mio_run (ios, k);
  for (size_t j = 0; j < k; j++)
    err[who[j]] = ios[j].err;
}

/* A record this build writes must pass its own readers' rules, or a
 * restart would skip it and fall back to an older state.  Breaking them is
 * a bug of the writer: say so loudly (and stop, when the test suite asks
 * for it with RAIDCORE_STRICT_RECORDS=1), but still write the record: the
 * state change it carries is being acknowledged. */
static void
check_written (struct member *m, const struct raid_sb *sb)
{
  char why[200];
  const char *strict;

  if (sb_validate (sb, why, sizeof why) == 0)
    return;
  raid_log (RAID_LOG_ERROR, "internal: the superblock record written to %s "
            "breaks a validation rule, a restart would skip it: %s",
            member_spec (m), why);
  strict = getenv ("RAIDCORE_STRICT_RECORDS");
  if (strict && strcmp (strict, "1") == 0)
    abort ();
}

/* Flush, write, flush.  The first flush makes every write that completed
 * before the call durable before the record can be: a record (a reshape
 * checkpoint, a clean state) never describes data a crash could still lose.
 * The second makes the record durable.  FUA is not used for the slot write:
 * it would save one round trip on NBD members but give up nothing else, and
 * one path for every backend is one path to test. */
int
sb_append_all (struct member *const *ms, const struct raid_sb *sbs,
               size_t n, int *results)
{
  uint8_t *bufs;
  struct iovec *iov;
  struct mio *ios;
  size_t *who;
  int *err;
  int first = 0;

  if (n == 0)
    return 0;
  bufs = raid_alloc_aligned (n * SB_SLOT_SIZE);
  iov = calloc (n, sizeof *iov);
  ios = calloc (n, sizeof *ios);
  who = calloc (n, sizeof *who);
  err = calloc (n, sizeof *err);
  if (!bufs || !iov || !ios || !who || !err) {
    for (size_t i = 0; results && i < n; i++)
      results[i] = ENOMEM;
    first = ENOMEM;
    goto out;
  }

  for (size_t i = 0; i < n; i++) {
    check_written (ms[i], &sbs[i]);
    sb_encode (&sbs[i], bufs + i * SB_SLOT_SIZE);
    iov[i] = (struct iovec) { bufs + i * SB_SLOT_SIZE, SB_SLOT_SIZE };
  }
  append_phase (MIO_FLUSH, ms, sbs, iov, n, err, ios, who);
  append_phase (MIO_WRITE, ms, sbs, iov, n, err, ios, who);
  append_phase (MIO_FLUSH, ms, sbs, iov, n, err, ios, who);

  for (size_t i = 0; i < n; i++) {
    if (results)
      results[i] = err[i];
    if (first == 0)
      first = err[i];
  }
 out:
  free (err);
  free (who);
  free (ios);
  free (iov);
  free (bufs);
  return first;
}

/* ---- member table and names ---- */

struct sb_member_entry *
sb_find_member (struct raid_sb *sb, const uint8_t uuid[RAID_UUID_LEN])
{
  for (uint32_t i = 0; i < sb->nmembers && i < SB_MAX_MEMBERS; i++)
    if (sb->members[i].state != SB_MEMBER_EMPTY &&
        memcmp (sb->members[i].uuid, uuid, RAID_UUID_LEN) == 0)
      return &sb->members[i];
  return NULL;
}

struct sb_member_entry *
sb_find_role (struct raid_sb *sb, int role)
{
  struct sb_member_entry *faulty = NULL;

  for (uint32_t i = 0; i < sb->nmembers && i < SB_MAX_MEMBERS; i++) {
    struct sb_member_entry *e = &sb->members[i];
    if (e->state == SB_MEMBER_EMPTY || e->role != role)
      continue;
    if (e->state != SB_MEMBER_FAULTY)
      return e;
    if (faulty == NULL)
      faulty = e;
  }
  return faulty;
}

const char *
sb_member_state_name (uint32_t state)
{
  switch (state) {
  case SB_MEMBER_EMPTY: return "empty";
  case SB_MEMBER_IN_SYNC: return "in_sync";
  case SB_MEMBER_FAULTY: return "faulty";
  case SB_MEMBER_SPARE: return "spare";
  case SB_MEMBER_REBUILDING: return "rebuilding";
  case SB_MEMBER_MISSING: return "missing";
  default: return "unknown";
  }
}

static const char *const consistency_names[] = {
  [SB_CONS_JOURNAL] = "journal",
  [SB_CONS_BITMAP] = "bitmap",
  [SB_CONS_RESYNC] = "resync",
};
#define NR_CONSISTENCY (sizeof consistency_names / sizeof consistency_names[0])

const char *
sb_consistency_name (uint32_t c)
{
  if (c < NR_CONSISTENCY && consistency_names[c])
    return consistency_names[c];
  return "unknown";
}

int
sb_consistency_parse (const char *name)
{
  for (size_t c = 0; name && c < NR_CONSISTENCY; c++)
    if (consistency_names[c] && strcmp (name, consistency_names[c]) == 0)
      return (int) c;
  return -1;
}

const char *
sb_reshape_state_name (uint32_t s)
{
  switch (s) {
  case SB_RESHAPE_NONE: return "none";
  case SB_RESHAPE_FROZEN: return "frozen";
  case SB_RESHAPE_RUNNING: return "running";
  default: return "unknown";
  }
}

/* Wipe the superblock ring so no earlier record can resurface. */
int
sb_wipe_ring (struct member *m)
{
  static const uint8_t zero[SB_SLOT_SIZE];
  struct mio mios[SB_RING_SLOTS];
  struct iovec iov[SB_RING_SLOTS];

  for (unsigned i = 0; i < SB_RING_SLOTS; i++) {
    iov[i] = (struct iovec) { (void *) zero, SB_SLOT_SIZE };
    mios[i] = (struct mio) { .m = m, .op = MIO_WRITE, .off = (uint64_t) i * SB_SLOT_SIZE,
                             .len = SB_SLOT_SIZE, .iov = &iov[i], .iovcnt = 1 };
  }
  return mio_run (mios, SB_RING_SLOTS);
}

void
sb_set_spec_hint (struct sb_member_entry *e, const char *spec)
{
  size_t n = strlen (spec);

  if (n < SB_SPEC_HINT)
    memcpy (e->spec_hint, spec, n + 1);
  else
    snprintf (e->spec_hint, SB_SPEC_HINT, "...%s", spec + n - (SB_SPEC_HINT - 4));
}

/* When process pid started, in ns since the epoch, from /proc (its start
 * in clock ticks since boot, and the boot time in seconds: about a second
 * coarse).  0 when it cannot be read. */
static uint64_t
process_start_ns (pid_t pid, char *state)
{
  char path[64], buf[1024], *p;
  unsigned long long ticks = 0, btime = 0;
  FILE *fp;
  size_t n;

  snprintf (path, sizeof path, "/proc/%d/stat", (int) pid);
  if ((fp = fopen (path, "re")) == NULL)
    return 0;
  n = fread (buf, 1, sizeof buf - 1, fp);
  fclose (fp);
  buf[n] = '\0';
  /* "pid (comm) S ..." where comm may hold spaces and parentheses: the
   * state follows the last ')', the start time is field 22. */
  if ((p = strrchr (buf, ')')) == NULL ||
      sscanf (p + 1, " %c %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s "
              "%*s %*s %*s %*s %*s %*s %llu", state, &ticks) != 2)
    return 0;
  if ((fp = fopen ("/proc/stat", "re")) == NULL)
    return 0;
  while (fgets (buf, sizeof buf, fp))
    if (sscanf (buf, "btime %llu", &btime) == 1)
      break;
  fclose (fp);
  if (btime == 0 || sysconf (_SC_CLK_TCK) <= 0)
    return 0;
  return btime * UINT64_C(1000000000) +
    ticks * (UINT64_C(1000000000) / (uint64_t) sysconf (_SC_CLK_TCK));
}

/* Whether the server the record names (on this host) still runs. */
static bool
owner_alive (const struct raid_sb *sb)
{
  const uint64_t slack = UINT64_C(2000000000);     /* btime's second, ticks */
  pid_t pid = (pid_t) sb->owner_pid;
  char state = '?';
  uint64_t started;

  if (kill (pid, 0) == -1 && errno != EPERM)
    return false;
  started = process_start_ns (pid, &state);
  if (state == 'Z' || state == 'X')
    return false;                          /* killed, not yet reaped */
  if (started == 0 || sb->owner_start_ns == 0)
    return true;                           /* cannot tell: assume it runs */
  return started <= sb->owner_start_ns + slack;
}

int
sb_check_owner (const struct raid_sb *sb, const char *spec, bool force,
                char *err, size_t errlen)
{
  char host[SB_OWNER_HOST] = "";

  if (sb->owner_pid == 0 || sb->owner_pid == (uint32_t) getpid ())
    return 0;
  gethostname (host, sizeof host - 1);
  if (strcmp (sb->owner_host, host) == 0) {
    if (!owner_alive (sb))
      return 0;                            /* it crashed: the record is stale */
    snprintf (err, errlen, "%s is in use by another server of this array "
              "(pid %" PRIu32 " on this host)", spec, sb->owner_pid);
    return EBUSY;
  }
  if (force)
    return 0;
  snprintf (err, errlen, "%s: its superblock says the array is open on host %s "
            "(pid %" PRIu32 "); if that server is gone (it crashed), start with "
            "force=true", spec, sb->owner_host, sb->owner_pid);
  return EBUSY;
}

void
sb_name_holder (const char *spec, char *err, size_t errlen)
{
  char e[256];
  struct member *m = member_open (spec, MEMBER_PEEK, e, sizeof e);
  struct raid_sb *sb = m ? malloc (sizeof *sb) : NULL;
  size_t n = strnlen (err, errlen);

  if (sb && sb_read_newest (m, sb, e, sizeof e) == 0 && sb->owner_pid && n < errlen)
    snprintf (err + n, errlen - n, "; its superblock says it is held by pid %" PRIu32
              " on host %s", sb->owner_pid, sb->owner_host[0] ? sb->owner_host : "?");
  free (sb);
  if (m)
    member_close (m);
}
