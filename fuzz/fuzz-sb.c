/* nbdkit-raid fuzz target: the superblock record decoder and ring scan.
 *
 * Input: byte 0 is flags (bit 0: reseal every slot's CRC, so the decoder's
 * field rules are reached; bit 1: put the magic at the start of every
 * slot), then up to SB_RING_SLOTS slots of SB_SLOT_SIZE bytes (the last
 * one zero-padded) forming a member's ring.
 * Properties: nothing crashes; a record sb_decode accepts obeys
 * sb_validate, re-encodes to a record that decodes to the same fields,
 * and the helpers that derive sizes from it (sb_layout_rows,
 * sb_check_member_size) are defined on it; the ring scan lists valid
 * records newest first and agrees with sb_read_newest.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "member.h"
#include "sb.h"
#include "util.h"

static uint8_t ring_buf[SB_RING_SIZE];

static int
ring_pread (void *priv, void *buf, size_t len, uint64_t off)
{
  if (off > SB_RING_SIZE || len > SB_RING_SIZE - off)
    return EIO;
  memcpy (buf, ring_buf + off, len);
  return 0;
}

static int
ring_pwrite (void *priv, const void *buf, size_t len, uint64_t off, bool fua)
{
  return EROFS;
}

static int ring_flush (void *priv) { return 0; }

static const struct member_custom_ops ring_ops = {
  .pread = ring_pread, .pwrite = ring_pwrite, .flush = ring_flush,
};

static void
reseal (uint8_t *slot)
{
  memset (slot + 8, 0, 4);
  uint32_t crc = raid_crc32c (slot, SB_SLOT_SIZE);
  for (int i = 0; i < 4; i++)
    slot[8 + i] = crc >> (8 * i);
}

/* A decoded record: the properties every accepted record has. */
static void
check_record (const uint8_t *slot, const struct raid_sb *sb)
{
  static uint8_t again[SB_SLOT_SIZE];
  static struct raid_sb sb2, norm;
  char err[256];

  if (sb_validate (sb, err, sizeof err) != 0)
    fuzz_fail ("sb_decode accepted a record sb_validate refuses: %s", err);
  sb_encode (sb, again);
  if (sb_decode (again, &sb2, err, sizeof err) != 0)
    fuzz_fail ("a re-encoded record does not decode: %s", err);
  norm = *sb;
  /* What sb_encode derives rather than copies: the compat bits it always
   * writes (unknown ones dropped), the missed-maps ro_compat bit from
   * missed_size (no maps: nothing of them is written), the missing-member
   * incompat bit from the member table. */
  norm.feature_compat = (sb->feature_compat & SB_FEAT_COMPAT_KNOWN) |
    SB_FEAT_COMPAT_SPEC_HINTS | SB_FEAT_COMPAT_OWNER | SB_FEAT_COMPAT_WHOLE_MAPS;
  norm.feature_ro_compat &= ~(uint64_t) SB_FEAT_RO_COMPAT_MISSED;
  if (sb->missed_size)
    norm.feature_ro_compat |= SB_FEAT_RO_COMPAT_MISSED;
  else {
    norm.missed_offset = 0;
    memset (norm.missed, 0, sizeof norm.missed);
  }
  norm.feature_incompat &= ~(uint64_t) SB_FEAT_INCOMPAT_MISSING;
  for (uint32_t i = 0; i < sb->nmembers; i++)
    if (sb->members[i].state == SB_MEMBER_MISSING)
      norm.feature_incompat |= SB_FEAT_INCOMPAT_MISSING;
  if (memcmp (&norm, &sb2, sizeof norm) != 0)
    fuzz_fail ("decode(encode(record)) differs from the record");
  (void) slot;
  (void) sb_layout_rows (sb, false);
  (void) sb_layout_rows (sb, true);
  for (uint32_t i = 0; i < sb->nmembers; i++)
    (void) sb_check_member_size (sb, &sb->members[i], sb->member_size, err, sizeof err);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct fuzz_in in = { data, size };
  uint8_t flags = fuzz_u8 (&in);
  static struct raid_sb sb;
  static struct sb_ring ring;
  struct member *m;
  char err[256];
  size_t nslots = 0;

  memset (ring_buf, 0, sizeof ring_buf);
  while (in.n > 0 && nslots < SB_RING_SLOTS) {
    uint8_t *slot = ring_buf + nslots++ * SB_SLOT_SIZE;
    fuzz_bytes (&in, slot, SB_SLOT_SIZE);
    if (flags & 2)
      memcpy (slot, SB_MAGIC, 8);
    if (flags & 1)
      reseal (slot);
    if (sb_decode (slot, &sb, err, sizeof err) == 0)
      check_record (slot, &sb);
  }

  m = member_new_custom ("fuzz-ring", SB_RING_SIZE, &ring_ops, NULL);
  if (m == NULL)
    abort ();
  if (sb_ring_read (m, &ring) == 0) {
    int r;
    if (ring.nvalid < 0 || ring.nvalid > (int) SB_RING_SLOTS ||
        ring.nvalid + ring.ncorrupt + ring.nempty != (int) SB_RING_SLOTS)
      fuzz_fail ("ring counts %d valid %d corrupt %d empty", ring.nvalid,
                 ring.ncorrupt, ring.nempty);
    for (int i = 1; i < ring.nvalid; i++)
      if (ring.rec[i].events > ring.rec[i - 1].events)
        fuzz_fail ("ring records not newest first");
    r = sb_read_newest (m, &sb, err, sizeof err);
    if (r == 0 && (ring.nvalid == 0 || sb.events != ring.rec[0].events))
      fuzz_fail ("sb_read_newest disagrees with the ring scan");
    if (r == 0)
      check_record (NULL, &sb);
  }
  member_close (m);
  return 0;
}

void
fuzz_fini (void)
{
  mio_shutdown ();
}
