/* nbdkit-raid fuzz target: write-hole journal replay of records an
 * attacker wrote (both CRCs valid), at assembly of a dirty array.
 *
 * Input: byte 0 picks the scenario (bit 0: a raid6 reshape in progress,
 * so records may name the target layout; else raid5), byte 1 options
 * (bit 0: wipe the logs the crash left first, so only crafted records
 * remain; bit 1: assemble with force).  Then records until the input ends:
 *   u8 member, u16 position (512-byte sectors into the log area), u8 layout
 *   id, u8 nblocks (mod 40), u8 nranges (mod 8), u8 flags:
 *     bit 0  block offsets are relative to the role's data offset (of the
 *            record's layout, as the scenario's record says)
 *     bit 1  payload_len is a u32 read here, not the blocks' sum
 *     bit 2  seq is a u64 read here (else journal_seq + record index)
 *     bit 3  header_len is a u32 read here
 *   then nblocks x {u32 role, u16 len, u64 offset}, nranges x {u64 row,
 *   u64 rows}, and the payload bytes (zero-padded); epoch and array uuid
 *   are the array's; the record is cut at the end of the area.
 * Properties: replay never crashes, leaks or hangs; it writes only ring
 * records and inside the consistency area and the data areas of either
 * layout (image.h's oracle, armed with scenario_areas); records the
 * product writes pass its readers' rules.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "image.h"
#include "util.h"

#define MAX_RECORDS 32
#define JHDR_FIXED 80u

static void
put_le (uint8_t *p, uint64_t v, int width)
{
  for (int i = 0; i < width; i++)
    p[i] = v >> (8 * i);
}

/* The data offset of `role` in layout id as the record says. */
static uint64_t
role_base (const struct raid_sb *sb, uint32_t id, int32_t role)
{
  for (uint32_t t = 0; t < sb->nmembers; t++)
    if (sb->members[t].state != SB_MEMBER_EMPTY && sb->members[t].role == role)
      return id == 1 ? sb->members[t].new_data_offset : sb->members[t].data_offset;
  return sb->members[0].data_offset;
}

static void
one_record (struct fuzz_in *in, const struct scenario *sc, struct img **ims, int index)
{
  const struct raid_sb *sb = &sc->sb;
  struct img *im = ims[fuzz_u8 (in) % sc->n];
  uint64_t pos = (uint64_t) fuzz_u16 (in) * 512 % sb->cons_size;
  uint32_t id = fuzz_u8 (in), nb = fuzz_u8 (in) % 40, nr = fuzz_u8 (in) % 8;
  uint8_t flags = fuzz_u8 (in);
  uint32_t hlen = (JHDR_FIXED + 16 * (nb + nr) + 511) / 512 * 512, plen = 0;
  uint64_t seq = sb->journal_seq + index, room = sb->cons_size - pos, len;
  uint8_t *rec;

  if (flags & 2)
    plen = fuzz_u32 (in);
  if (flags & 4)
    seq = fuzz_u64 (in);
  if (flags & 8)
    hlen = fuzz_u32 (in);
  if (!(rec = calloc (1, room)))
    abort ();
  memcpy (rec, "NRJREC01", 8);
  memcpy (rec + 16, sb->array_uuid, RAID_UUID_LEN);
  put_le (rec + 32, sb->journal_epoch, 8);
  put_le (rec + 40, seq, 8);
  put_le (rec + 48, nb, 4);
  put_le (rec + 52, nr, 4);
  put_le (rec + 64, id, 4);
  {
    uint8_t *e = rec + JHDR_FIXED;
    uint64_t sum = 0;
    for (uint32_t i = 0; i < nb; i++, e += 16) {
      int32_t role = (int32_t) fuzz_u32 (in);
      uint32_t blen = fuzz_u16 (in);
      uint64_t off = fuzz_u64 (in);
      if (flags & 1)
        off += role_base (sb, id, role);
      if ((uint64_t) (e - rec) + 16 <= room) {
        put_le (e, (uint32_t) role, 4);
        put_le (e + 4, blen, 4);
        put_le (e + 8, off, 8);
      }
      sum += blen;
    }
    for (uint32_t i = 0; i < nr; i++, e += 16) {
      uint64_t row = fuzz_u64 (in), rows = fuzz_u64 (in);
      if ((uint64_t) (e - rec) + 16 <= room) {
        put_le (e, row, 8);
        put_le (e + 8, rows, 8);
      }
    }
    if (!(flags & 2))
      plen = (uint32_t) sum;
  }
  put_le (rec + 56, hlen, 4);
  put_le (rec + 60, plen, 4);
  if (hlen < room) {
    uint64_t k = raid_min_u64 (plen, room - hlen);
    fuzz_bytes (in, rec + hlen, k);
    put_le (rec + 12, raid_crc32c (rec + hlen, k), 4);
  }
  put_le (rec + 8, raid_crc32c (rec, raid_min_u64 (hlen, room)), 4);
  len = raid_min_u64 (room, (uint64_t) hlen + (plen + 511ull) / 512 * 512);
  img_write (im, rec, len, sb->cons_offset + pos);
  free (rec);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct fuzz_in in = { data, size };
  const struct scenario *sc =
    scenario_get (fuzz_u8 (&in) & 1 ? SC_RAID6_RESHAPE : SC_RAID5_JOURNAL);
  uint8_t opts = fuzz_u8 (&in);
  struct img *ims[RAID_MAX_MEMBERS];
  struct img_area areas[2 * RAID_MAX_MEMBERS + 1];
  int nareas = scenario_areas (sc, areas, 2 * RAID_MAX_MEMBERS + 1);
  char err[512];

  for (int i = 0; i < sc->n; i++) {
    ims[i] = img_clone (sc->im[i]);
    if (opts & 1)
      img_write (ims[i], NULL, sc->sb.cons_size, sc->sb.cons_offset);
  }
  for (int k = 0; k < MAX_RECORDS && in.n > 0; k++)
    one_record (&in, sc, ims, k);
  img_oracle (true, areas, nareas);
  fuzz_assemble_and_use (ims, sc->n, opts & 2, err, sizeof err);
  img_oracle (false, NULL, 0);
  for (int i = 0; i < sc->n; i++)
    img_free (ims[i]);
  return 0;
}

void
fuzz_fini (void)
{
  scenario_free_all ();
  mio_shutdown ();
}
